/* store_leftover: half-made VMs of creations, left for the reconciler
 * (store.h "leftovers"). While one is recorded its VMID stays reserved to
 * the creation's job, and the room the job had reserved may stay with it
 * (store_capacity.c counts it). Each public function is one transaction; the list is
 * the caller's to free.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

static const char SQL_LEFT_ADD[] =
    "INSERT INTO leftovers (vmid, node, job, created_at) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (vmid, node) DO UPDATE SET job = excluded.job";
/* the job's reservation, if any, becomes the leftover's (?4: now, ?5: pending) */
static const char SQL_LEFT_HOLD[] =
    "UPDATE leftovers SET mem = (SELECT mem FROM capacity WHERE job = ?3),"
    "  disk = (SELECT disk FROM capacity WHERE job = ?3),"
    "  pool = (SELECT pool FROM capacity WHERE job = ?3), held_at = ?4, pending = ?5"
    " WHERE vmid = ?1 AND node = ?2 AND EXISTS (SELECT 1 FROM capacity WHERE job = ?3)";
static const char SQL_LEFT_UNRESERVE[] = "DELETE FROM capacity WHERE job = ?1";
static const char SQL_LEFT_LIST[] =
    "SELECT vmid, node, job, created_at FROM leftovers ORDER BY created_at, vmid";
static const char SQL_LEFT_DEL[] =
    "DELETE FROM leftovers WHERE vmid = ?1 AND node = ?2 RETURNING job";
/* the VMID goes back only if its creation still holds it and no other
 * leftover has it (standalone hosts each have their own VMID space) */
static const char SQL_LEFT_RELEASE[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = ?2, updated_at = ?3"
    " WHERE vmid = ?1 AND state = 'reserved' AND job = ?4"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE vmid = ?1)";

struct left_ctx {
    const store *s;
    int vmid;
    const char *node, *job;
    int64_t quarantine_ms;
    enum store_left_room room;
    bool keep_vmid; /* store_leftover_forget: the VMID is not released */
};

/* The job's reservation moves to the leftover in one transaction: a
 * reservation's check (one statement, one snapshot) sees it in one place
 * or the other, never in neither. */
static int left_hold(db_conn *c, const struct left_ctx *k, int64_t now, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_LEFT_HOLD, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vmid);
    db_bind_text(st, 2, k->node);
    db_bind_text(st, 3, k->job);
    db_bind_i64(st, 4, now);
    db_bind_i64(st, 5, k->room == STORE_LEFT_PENDING);
    rc = db_run(st, err, "moving a reservation to a leftover");
    db_done(st);
    if (rc || (rc = db_prepare(c, SQL_LEFT_UNRESERVE, &st, err)))
        return rc;
    db_bind_text(st, 1, k->job);
    rc = db_run(st, err, "moving a reservation to a leftover");
    db_done(st);
    return rc;
}

static int left_add_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = db_prepare(c, SQL_LEFT_ADD, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vmid);
    db_bind_text(st, 2, k->node);
    db_bind_text(st, 3, k->job);
    db_bind_i64(st, 4, now);
    rc = db_run(st, err, "recording a leftover");
    db_done(st);
    if (rc == STORE_OK && k->room != STORE_LEFT_NO_ROOM)
        rc = left_hold(c, k, now, err);
    return rc;
}

int store_leftover_add(store *s, int vmid, const char *node, const char *job,
                       enum store_left_room room, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && node && *node && job, "store_leftover_add: NULL or empty argument");
    STORE_CHECK(vmid >= STORE_VMID_MIN && vmid <= STORE_VMID_MAX, "VMID %d out of range", vmid);
    STORE_CHECK(room >= STORE_LEFT_NO_ROOM && room <= STORE_LEFT_PENDING,
                "store_leftover_add: room %d unknown", (int)room);
    struct left_ctx k = {.vmid = vmid, .node = node, .job = job, .room = room};
    return db_tx(s->db, DB_WRITE, left_add_fn, &k, err);
}

static int row_to_leftover(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct leftover *l = elem;
    l->vmid = (int)db_col_i64(st, 0);
    DB_COL_FIELD(st, 1, l->node);
    DB_COL_FIELD(st, 2, l->job);
    l->created_at = db_col_i64(st, 3);
    return STORE_OK;
}

int store_leftover_list(store *s, struct leftover **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_leftover_list: NULL argument");
    const struct store_read r = {SQL_LEFT_LIST, "listing leftovers", NULL,
                                 NULL,          sizeof **out,        row_to_leftover};
    return store_read_all(s, &r, (void **)out, n, err);
}

static int left_done_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    db_stmt *st = NULL;
    char job[40] = "";
    bool found = false;
    int64_t now = wall_ms();
    int rc = db_prepare(c, SQL_LEFT_DEL, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vmid);
    db_bind_text(st, 2, k->node);
    rc = db_step(st, &found, err, "forgetting a leftover");
    if (rc == STORE_OK && found)
        DB_COL_FIELD(st, 0, job);
    db_done(st);
    if (rc || !found)
        return rc;
    if (!k->keep_vmid) {
        if ((rc = db_prepare(c, SQL_LEFT_RELEASE, &st, err)))
            return rc;
        db_bind_i64(st, 1, k->vmid);
        db_bind_i64(st, 2, now + k->quarantine_ms);
        db_bind_i64(st, 3, now);
        db_bind_text(st, 4, job);
        rc = db_run(st, err, "releasing a leftover's VMID");
        db_done(st);
    }
    if (rc == STORE_OK && k->s->has_policy && job[0])
        rc = store_addr_release_left_in(c, job, k->s->q, k->s->nq, err);
    return rc;
}

int store_leftover_done(store *s, int vmid, const char *node, int64_t quarantine_ms,
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && node && *node, "store_leftover_done: NULL or empty argument");
    STORE_CHECK(quarantine_ms >= 0, "negative quarantine");
    struct left_ctx k = {.s = s, .vmid = vmid, .node = node, .quarantine_ms = quarantine_ms};
    return db_tx(s->db, DB_WRITE, left_done_fn, &k, err);
}

int store_leftover_forget(store *s, int vmid, const char *node, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && node && *node, "store_leftover_forget: NULL or empty argument");
    struct left_ctx k = {.s = s, .vmid = vmid, .node = node, .keep_vmid = true};
    return db_tx(s->db, DB_WRITE, left_done_fn, &k, err);
}
