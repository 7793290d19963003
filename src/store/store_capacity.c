/* store_capacity: capacity reservations and clone slots (store.h). A
 * reservation or a slot that must fit is a decision that reads before it
 * writes: it runs under the node's lock, and the pool's when its disk is on
 * a shared storage (db_lock; SQLite's write lock serialises it anyway), and
 * the fit itself is the policy of store.c
 * (store_room_check, store_slots_check). Each public function is one
 * transaction.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

/* One reservation per job; reserving again moves it (the job retries on
 * another node) and makes it in-flight again. */
static const char SQL_CAP_RESERVE[] =
    "INSERT INTO capacity (job, node, mem, disk, created_at, pool)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, mem = excluded.mem,"
    "   disk = excluded.disk, pool = excluded.pool, settled_at = NULL";
static const char SQL_CAP_RELEASE[] = "DELETE FROM capacity WHERE job = ?1";
static const char SQL_CAP_SETTLE[] = "UPDATE capacity SET settled_at = ?2 WHERE job = ?1";
static const char SQL_CAP_PRUNE[] = "DELETE FROM capacity WHERE settled_at < ?1";
/* In-flight reservations count while their job is unfinished (a runner
 * that died before releasing must not hold capacity forever); settled ones
 * count until the caller's inventory has caught up with them. A leftover's
 * (store_leftover_add) counts like a settled one, or while it is recorded
 * when pending, whichever job asks (its own next attempt too). Memory is
 * the node's (?1); disk is the node's own storage's (?4 NULL) or the shared
 * pool ?4's, whichever node reserved it. */
static const char SQL_CAP_SUM[] =
    "SELECT coalesce(sum(CASE WHEN node = ?1 THEN mem ELSE 0 END), 0),"
    "  coalesce(sum(CASE WHEN pool = CAST(?4 AS TEXT)"
    "    OR (CAST(?4 AS TEXT) IS NULL AND node = ?1 AND pool IS NULL) THEN disk ELSE 0 END), 0)"
    " FROM (SELECT node, pool, mem, disk FROM capacity"
    "   WHERE (node = ?1 OR pool = CAST(?4 AS TEXT))"
    "   AND (CAST(?2 AS TEXT) IS NULL OR job <> CAST(?2 AS TEXT))"
    "   AND ((settled_at IS NULL AND job IN (SELECT id FROM jobs WHERE state IN {ACTIVE}))"
    "     OR settled_at >= ?3)"
    "  UNION ALL SELECT node, pool, mem, disk FROM leftovers"
    "   WHERE (node = ?1 OR pool = CAST(?4 AS TEXT)) AND (pending <> 0 OR held_at >= ?3)) held";

#define SETTLED_KEEP_MS (3600 * 1000LL)

struct cap_ctx {
    const char *job, *node, *pool;
    int64_t mem, disk;
    const struct cap_room *room;
    int64_t since;
};

static int cap_sum_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CAP_SUM, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->node);
    db_bind_text(st, 2, k->job);
    db_bind_i64(st, 3, k->since);
    db_bind_text(st, 4, k->pool);
    bool row = false;
    rc = db_step(st, &row, err, "summing capacity");
    k->mem = row ? db_col_i64(st, 0) : 0;
    k->disk = row ? db_col_i64(st, 1) : 0;
    db_done(st);
    return rc;
}

/* One statement with the job id as ?1 and, when `at` is not 0, a time as ?2. */
static int job_stmt(db_conn *c, const char *sql, const char *job, int64_t at,
                    struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, sql, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, job);
    if (at)
        db_bind_i64(st, 2, at);
    rc = db_run(st, err, "updating a reservation");
    db_done(st);
    return rc;
}

static int cap_reserve_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = STORE_OK;
    if (k->room) { /* under the node's (and pool's) lock: does it fit beside what others hold? */
        struct cap_ctx held = {k->job, k->node, k->pool, 0, 0, NULL, k->room->seen_since};
        /* always node then pool: a pool's key has a '/', no node's has */
        if ((rc = db_lock(c, DB_LOCK_CAPACITY, k->node, err)) ||
            (k->pool && (rc = db_lock(c, DB_LOCK_CAPACITY, k->pool, err))) ||
            (rc = cap_sum_fn(c, &held, err)) ||
            (rc = store_room_check(k->room, held.mem, held.disk, k->mem, k->disk, err)))
            return rc;
    }
    if ((rc = db_prepare(c, SQL_CAP_RESERVE, &st, err)))
        return rc;
    db_bind_text(st, 1, k->job);
    db_bind_text(st, 2, k->node);
    db_bind_i64(st, 3, k->mem);
    db_bind_i64(st, 4, k->disk);
    db_bind_i64(st, 5, wall_ms());
    db_bind_text(st, 6, k->pool);
    rc = db_run(st, err, "reserving capacity");
    db_done(st);
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s to reserve capacity for", k->job);
    return rc;
}

int store_reserve_capacity(store *s, const char *job, const char *node, int64_t mem_bytes,
                           int64_t disk_bytes, const struct cap_room *room, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job && node && *node,
                "store_reserve_capacity: NULL or empty argument");
    STORE_CHECK(mem_bytes >= 0 && disk_bytes >= 0, "negative capacity reservation");
    const char *pool = room && room->pool && *room->pool ? room->pool : NULL;
    struct cap_ctx k = {job, node, pool, mem_bytes, disk_bytes, room, 0};
    return db_tx(s->db, DB_WRITE, cap_reserve_fn, &k, err);
}

static int cap_settle_fn(db_conn *c, void *ctx, struct store_error *err)
{
    int64_t now = wall_ms();
    int rc = job_stmt(c, SQL_CAP_SETTLE, ctx, now, err);
    db_stmt *st = NULL;
    if (rc == STORE_OK && (rc = db_prepare(c, SQL_CAP_PRUNE, &st, err)) == STORE_OK) {
        db_bind_i64(st, 1, now - SETTLED_KEEP_MS);
        rc = db_run(st, err, "pruning settled reservations");
        db_done(st);
    }
    return rc;
}

int store_settle_capacity(store *s, const char *job, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job, "store_settle_capacity: NULL argument");
    return db_tx(s->db, DB_WRITE, cap_settle_fn, (void *)job, err);
}

/* Releasing nothing is not an error: failure paths release unconditionally. */
static int cap_release_fn(db_conn *c, void *ctx, struct store_error *err)
{
    return job_stmt(c, SQL_CAP_RELEASE, ctx, 0, err);
}

int store_release_capacity(store *s, const char *job, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job, "store_release_capacity: NULL argument");
    return db_tx(s->db, DB_WRITE, cap_release_fn, (void *)job, err);
}

int store_reserved_on(store *s, const char *node, const char *pool, const char *except_job,
                      int64_t seen_since, int64_t *mem, int64_t *disk, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && node && mem && disk, "store_reserved_on: NULL argument");
    *mem = *disk = 0;
    struct cap_ctx k = {except_job, node, pool && *pool ? pool : NULL, 0, 0, NULL, seen_since};
    int rc = db_tx(s->db, DB_READ, cap_sum_fn, &k, err);
    if (rc == STORE_OK) {
        *mem = k.mem;
        *disk = k.disk;
    }
    return rc;
}

/* ---- clone slots ------------------------------------------------------------ */

/* Slots of jobs that are not running under a live lease (their runner died,
 * or they ended without giving the slot back) are not counted. */
static const char SQL_SLOT_COUNT[] =
    "SELECT count(*) FROM clone_slots s JOIN jobs j ON j.id = s.job"
    " WHERE s.node = ?1 AND s.job <> ?2 AND j.state = 'running' AND j.lease_until >= ?3";
static const char SQL_SLOT_TAKE[] =
    "INSERT INTO clone_slots (job, node, taken_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, taken_at = excluded.taken_at";
static const char SQL_SLOT_GIVE[] = "DELETE FROM clone_slots WHERE job = ?1";

struct slot_ctx {
    const char *job, *node;
    int limit;
};

static int slot_take_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct slot_ctx *k = ctx;
    db_stmt *st = NULL;
    int64_t now = wall_ms(), held = 0;
    int rc = db_lock(c, DB_LOCK_SLOTS, k->node, err);
    if (rc || (rc = db_prepare(c, SQL_SLOT_COUNT, &st, err)))
        return rc;
    db_bind_text(st, 1, k->node);
    db_bind_text(st, 2, k->job);
    db_bind_i64(st, 3, now);
    bool row = false;
    rc = db_step(st, &row, err, "counting clone slots");
    held = row ? db_col_i64(st, 0) : 0;
    db_done(st);
    if (rc || (rc = store_slots_check(held, k->limit, k->node, err)) ||
        (rc = db_prepare(c, SQL_SLOT_TAKE, &st, err)))
        return rc;
    db_bind_text(st, 1, k->job);
    db_bind_text(st, 2, k->node);
    db_bind_i64(st, 3, now);
    rc = db_run(st, err, "taking a clone slot");
    db_done(st);
    return rc;
}

int store_clone_slot_take(store *s, const char *job, const char *node, int limit,
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job && node && *node, "store_clone_slot_take: NULL or empty argument");
    STORE_CHECK(limit > 0, "clone slot limit %d must be positive", limit);
    struct slot_ctx k = {job, node, limit};
    return db_tx(s->db, DB_WRITE, slot_take_fn, &k, err);
}

static int slot_give_fn(db_conn *c, void *ctx, struct store_error *err)
{
    return job_stmt(c, SQL_SLOT_GIVE, ctx, 0, err);
}

/* Giving back a slot the job does not hold is not an error. */
int store_clone_slot_give(store *s, const char *job, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job, "store_clone_slot_give: NULL argument");
    return db_tx(s->db, DB_WRITE, slot_give_fn, (void *)job, err);
}
