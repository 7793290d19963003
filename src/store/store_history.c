/* store_history: removing what finished long ago (store.h "history"):
 * finished jobs, with their progress events (ON DELETE CASCADE), and the
 * idempotency answers that name them. Without it both tables grow with
 * every request for as long as proxd runs.
 *
 * A finished job still named by a leftover (a half-made VM the reconciler
 * has not removed yet) stays: the leftover's cleanup reports under it.
 * Queued and running jobs are never touched, however old.
 *
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#define HISTORY_BATCH 2000 /* rows per transaction: no lock held for long */

static const char SQL_JOB_PRUNE[] =
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs j WHERE state IN ('done', 'failed')"
    " AND finished_at < ?1 AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.job = j.id)"
    " LIMIT ?2)";
static const char SQL_IDEM_PRUNE[] =
    "DELETE FROM idem WHERE (owner, key) IN"
    " (SELECT owner, key FROM idem WHERE created_at < ?1 LIMIT ?2)";

struct prune_ctx {
    const char *sql, *what;
    int64_t before, n;
};

static int prune_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct prune_ctx *p = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, p->sql, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, p->before);
    db_bind_i64(st, 2, HISTORY_BATCH);
    rc = db_run(st, err, p->what);
    p->n = rc ? 0 : db_changes(st);
    db_done(st);
    return rc;
}

static int prune_all(store *s, const char *sql, const char *what, int64_t before, int64_t *n,
                     struct store_error *err)
{
    int rc;
    for (;;) {
        struct prune_ctx p = {sql, what, before, 0};
        if ((rc = db_tx(s->db, DB_WRITE, prune_fn, &p, err)))
            return rc;
        *n += p.n;
        if (p.n < HISTORY_BATCH)
            return STORE_OK;
    }
}

int store_history_prune(store *s, int64_t before_ts, struct store_history_pruned *out,
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out, "store_history_prune: NULL argument");
    *out = (struct store_history_pruned){0};
    int rc = prune_all(s, SQL_JOB_PRUNE, "pruning finished jobs", before_ts, &out->jobs, err);
    if (rc == STORE_OK)
        rc =
            prune_all(s, SQL_IDEM_PRUNE, "pruning idempotency answers", before_ts, &out->idem, err);
    return rc;
}
