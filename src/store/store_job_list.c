/* store_job_list: jobs newest first, filtered (store.h "jobs"). One
 * statement serves every filter: an absent one compares as always true,
 * and the walk follows the seq index backwards, so a page costs about
 * its size plus the rows the filters skip. The job tables are bounded by
 * [jobs] keep (store_history.c).
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/xalloc.h"

static const char SQL_JOB_LIST[] =
    "SELECT " JOB_COLS ", seq FROM jobs WHERE seq < ?1 AND (?2 = '' OR owner = ?2)"
    " AND (?3 = '' OR state = ?3) AND (?4 = '' OR kind = ?4) AND (?5 = 0 OR vmid = ?5)"
    " ORDER BY seq DESC LIMIT ?6";

struct list_ctx {
    const struct job_filter *f;
    int limit;
    struct job_rec *v;
    size_t n;
    int64_t last_seq;
};

static void list_clear(struct list_ctx *l)
{
    for (size_t i = 0; i < l->n; i++)
        job_rec_release(&l->v[i]);
    l->n = 0;
}

static int list_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct list_ctx *l = ctx;
    const struct job_filter *f = l->f;
    list_clear(l); /* a retried attempt starts over */
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_LIST, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, f->before > 0 ? f->before : INT64_MAX);
    db_bind_text(st, 2, f->owner ? f->owner : "");
    db_bind_text(st, 3, f->state >= 0 ? job_state_name((enum job_state)f->state) : "");
    db_bind_text(st, 4, f->kind ? f->kind : "");
    db_bind_i64(st, 5, f->vmid);
    db_bind_i64(st, 6, l->limit);
    for (;;) {
        bool found = false;
        if ((rc = db_step(st, &found, err, "listing jobs")) || !found)
            break;
        if ((rc = store_job_row(st, &l->v[l->n], err))) {
            job_rec_release(&l->v[l->n]);
            break;
        }
        l->last_seq = db_col_i64(st, 19);
        l->n++;
    }
    db_done(st);
    return rc;
}

int store_job_list(store *s, const struct job_filter *f, struct job_rec **out, size_t *n,
                   int64_t *next, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && f && out && n, "store_job_list: NULL argument");
    STORE_CHECK(f->limit >= 0, "list limit %d is negative", f->limit);
    STORE_CHECK(f->state >= -1 && f->state <= JOB_FAILED, "job state %d unknown", f->state);
    *out = NULL;
    *n = 0;
    int limit = f->limit == 0 ? STORE_LIST_DEFAULT : f->limit;
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    struct list_ctx l = {.f = f, .limit = limit, .v = xcalloc((size_t)limit, sizeof *l.v)};
    int rc = db_tx(s->db, DB_READ, list_fn, &l, err);
    if (rc) {
        list_clear(&l);
        free(l.v);
        return rc;
    }
    if (next)
        *next = l.n == (size_t)limit ? l.last_seq : 0;
    *out = l.v;
    *n = l.n;
    return STORE_OK;
}

static const char SQL_JOB_ENDED[] =
    "SELECT vmid, max(finished_at) FROM jobs WHERE owner = ?1 AND kind LIKE ?2"
    " AND state IN ('done', 'failed') AND vmid <> 0 GROUP BY vmid";

struct ended_arg {
    const char *owner, *like;
};

static void bind_ended(db_stmt *st, const void *arg)
{
    const struct ended_arg *a = arg;
    db_bind_text(st, 1, a->owner);
    db_bind_text(st, 2, a->like);
}

static int ended_row(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct job_ended *e = elem;
    e->vmid = (int)db_col_i64(st, 0);
    e->at = db_col_i64(st, 1);
    return STORE_OK;
}

int store_job_ended_by_vm(store *s, const char *owner, const char *like, struct job_ended **out,
                          size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && like && out && n, "store_job_ended_by_vm: NULL argument");
    struct ended_arg a = {owner, like};
    struct store_read r = {SQL_JOB_ENDED, "reading when jobs ended", bind_ended, &a, sizeof **out,
                           ended_row};
    return store_read_all(s, &r, (void **)out, n, err);
}
