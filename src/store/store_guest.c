/* store_guest: the outcome of each guest check (store.h "guest checks").
 * The pending list is a read of the finished jobs by their end (the
 * jobs_finished index); an outcome is an INSERT that a second writer's
 * conflict turns into nothing, and the event is logged only by the
 * insert that took. Threads: any thread, on its own connection (db.h). */
#include "store/store_int.h"

#include "common/jsonw.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"waiting", "ready", "silent", "skipped"};

const char *guest_state_name(enum guest_state g)
{
    return (unsigned)g < sizeof state_names / sizeof *state_names ? state_names[g] : "?";
}

static enum guest_state state_of(const char *s)
{
    for (unsigned i = 1; i < sizeof state_names / sizeof *state_names; i++)
        if (s && strcmp(s, state_names[i]) == 0)
            return (enum guest_state)i;
    return GUEST_WAITING;
}

/* The kinds that leave their VM started when done: the SQL list and the
 * C one say the same. */
#define GUEST_KINDS "('create', 'start', 'reboot', 'reinstall')"
static const char *const guest_kinds[] = {"create", "start", "reboot", "reinstall"};

bool guest_kind(const char *kind)
{
    for (size_t i = 0; i < sizeof guest_kinds / sizeof *guest_kinds; i++)
        if (strcmp(kind, guest_kinds[i]) == 0)
            return true;
    return false;
}

static const char SQL_GUEST_PENDING[] =
    "SELECT j.id, j.kind, j.vmid, j.owner, j.finished_at FROM jobs j"
    " WHERE j.state = 'done' AND j.finished_at > ?1 AND j.kind IN " GUEST_KINDS
    " AND j.vmid <> 0 AND NOT EXISTS (SELECT 1 FROM guest_checks g WHERE g.job = j.id)"
    " ORDER BY j.finished_at LIMIT ?2";

struct pending_arg {
    int64_t since;
    size_t max;
};

static void bind_pending(db_stmt *st, const void *arg)
{
    const struct pending_arg *a = arg;
    db_bind_i64(st, 1, a->since);
    db_bind_i64(st, 2, (int64_t)a->max);
}

static int row_to_pending(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct guest_check *g = elem;
    DB_COL_FIELD(st, 0, g->job);
    DB_COL_FIELD(st, 1, g->kind);
    g->vmid = (int)db_col_i64(st, 2);
    DB_COL_FIELD(st, 3, g->owner);
    g->finished_at = db_col_i64(st, 4);
    return STORE_OK;
}

int store_guest_pending(store *s, int64_t since, size_t max, struct guest_check **out, size_t *n,
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n && max > 0, "store_guest_pending: bad argument");
    struct pending_arg a = {since, max};
    const struct store_read r = {SQL_GUEST_PENDING, "listing the guests to check",
                                 bind_pending,      &a,
                                 sizeof **out,      row_to_pending};
    return store_read_all(s, &r, (void **)out, n, err);
}

static const char SQL_GUEST_JOB[] = "SELECT 1 FROM jobs WHERE id = ?1";
static const char SQL_GUEST_ADD[] = "INSERT INTO guest_checks (job, state, at, detail)"
                                    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (job) DO NOTHING";

struct close_ctx {
    const char *job, *detail;
    enum guest_state state;
    struct store_event *ev;
};

static int close_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct close_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_GUEST_JOB, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->job);
    bool row = false;
    rc = db_step(st, &row, err, "reading a guest check's job");
    db_done(st);
    if (rc == STORE_OK && !row)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", k->job);
    if (rc || (rc = db_prepare(c, SQL_GUEST_ADD, &st, err)))
        return rc;
    char detail[256]; /* cut where no character is cut in half */
    size_t dl = jsonw_utf8_fit(k->detail, strlen(k->detail), sizeof detail - 1);
    memcpy(detail, k->detail, dl);
    detail[dl] = '\0';
    db_bind_text(st, 1, k->job);
    db_bind_text(st, 2, guest_state_name(k->state));
    db_bind_i64(st, 3, wall_ms());
    db_bind_text(st, 4, detail);
    rc = db_run(st, err, "writing a guest check");
    bool took = rc == STORE_OK && db_changes(st) == 1;
    db_done(st);
    if (rc == STORE_OK && !took)
        rc = store_fail(err, STORE_E_CONFLICT, "job %s has its guest check's outcome already",
                        k->job);
    if (rc == STORE_OK && k->ev)
        rc = store_log_add_in(c, k->ev, err);
    return rc;
}

int store_guest_close(store *s, const char *job, enum guest_state state, const char *detail,
                      struct store_event *ev, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && detail, "store_guest_close: NULL argument");
    STORE_CHECK(state == GUEST_READY || state == GUEST_SILENT || state == GUEST_SKIPPED,
                "guest check state %d is not an outcome", (int)state);
    STORE_CHECK(!ev || FIELD_LEN(ev->type) > 0, "event type is empty");
    struct close_ctx k = {job, detail, state, ev};
    return db_tx(s->db, DB_WRITE, close_fn, &k, err);
}

/* A row of SQL_GUEST_GET's or SQL_GUEST_LAST's columns (no outcome yet:
 * GUEST_WAITING). */
static void row_to_check(db_stmt *st, struct guest_check *out)
{
    row_to_pending(st, out, NULL);
    out->state = state_of(db_col_text(st, 5));
    out->at = db_col_i64(st, 6);
    DB_COL_FIELD(st, 7, out->detail);
}

static const char SQL_GUEST_GET[] =
    "SELECT j.id, j.kind, j.vmid, j.owner, j.finished_at, g.state, g.at, g.detail"
    " FROM guest_checks g JOIN jobs j ON j.id = g.job WHERE g.job = ?1";
static const char SQL_GUEST_LAST[] =
    "SELECT j.id, j.kind, j.vmid, j.owner, j.finished_at, g.state, g.at, g.detail"
    " FROM jobs j LEFT JOIN guest_checks g ON g.job = j.id"
    " WHERE j.vmid = ?1 AND j.state = 'done' AND j.kind IN " GUEST_KINDS
    " ORDER BY j.finished_at DESC LIMIT 1";

/* One check read: a job's outcome (job) or a VM's last start's (vmid). */
struct one_ctx {
    const char *job;
    int vmid;
    struct guest_check *out;
};

static int one_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct one_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, k->job ? SQL_GUEST_GET : SQL_GUEST_LAST, &st, err);
    if (rc)
        return rc;
    if (k->job)
        db_bind_text(st, 1, k->job);
    else
        db_bind_i64(st, 1, k->vmid);
    bool row = false;
    rc = db_step(st, &row, err, "reading a guest check");
    if (rc == STORE_OK && !row && k->job)
        rc = store_fail(err, STORE_E_NOTFOUND, "job %s has no guest check outcome", k->job);
    else if (rc == STORE_OK && !row)
        rc = store_fail(err, STORE_E_NOTFOUND, "VM %d has no done start", k->vmid);
    if (rc == STORE_OK)
        row_to_check(st, k->out);
    db_done(st);
    return rc;
}

int store_guest_get(store *s, const char *job, struct guest_check *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && out, "store_guest_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct one_ctx k = {job, 0, out};
    return db_tx(s->db, DB_READ, one_fn, &k, err);
}

int store_guest_last(store *s, int vmid, struct guest_check *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out, "store_guest_last: NULL argument");
    memset(out, 0, sizeof *out);
    struct one_ctx k = {NULL, vmid, out};
    return db_tx(s->db, DB_READ, one_fn, &k, err);
}
