/* store_vmid: VMID allocation (store.h "VMID allocation"), the single
 * source of truth that keeps two creations from ever sharing an ID. A
 * reservation reads before it writes, so it runs under the VMID lock
 * (db_lock; SQLite's write lock serialises it anyway): reservations of
 * every process run one at a time and each sees what the previous took.
 * Each public function is one transaction.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/buf.h"
#include "common/util.h"

#include <stdlib.h>
#include <string.h>

/* The allocated IDs of a range, ascending: every row except quarantines
 * that have run out (those count as free and are taken over in place). */
static const char SQL_VMID_ALLOCATED[] =
    "SELECT vmid FROM vmid_alloc WHERE vmid BETWEEN ?1 AND ?2"
    " AND NOT (state = 'quarantine' AND until <= ?3) ORDER BY vmid";
static const char SQL_VMID_TAKE[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
    " VALUES (?1, 'reserved', ?2, 0, ?3)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'reserved', job = excluded.job, until = 0,"
    "   updated_at = excluded.updated_at"
    " WHERE vmid_alloc.state = 'quarantine' AND vmid_alloc.until <= ?3";

struct reserve_ctx {
    const struct vmid_range *ranges;
    size_t nranges;
    const int *taken;
    size_t ntaken;
    const char *job;
    int *vmid;
};

static bool in_sorted(const int *a, size_t n, int v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else if (a[mid] > v)
            hi = mid;
        else
            return true;
    }
    return false;
}

/* Merge-walk the range against its allocated IDs (one query, ascending):
 * the first ID that is neither allocated nor in `taken`, or 0. */
static int first_free(db_conn *c, const struct reserve_ctx *r, const struct vmid_range *rg,
                      int64_t now, int *found_id, struct store_error *err)
{
    db_stmt *st = NULL;
    int cand = rg->lo;
    *found_id = 0;
    int rc = db_prepare(c, SQL_VMID_ALLOCATED, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, rg->lo);
    db_bind_i64(st, 2, rg->hi);
    db_bind_i64(st, 3, now);
    while (*found_id == 0) {
        bool row = false;
        rc = db_step(st, &row, err, "reading VMID allocations");
        if (rc)
            break;
        int next_used = row ? (int)db_col_i64(st, 0) : rg->hi + 1;
        for (; cand < next_used && *found_id == 0; cand++)
            if (!in_sorted(r->taken, r->ntaken, cand))
                *found_id = cand;
        if (!row)
            break;
        cand = next_used + 1;
    }
    db_done(st);
    return rc;
}

static int no_free_vmid(const struct reserve_ctx *r, struct store_error *err)
{
    struct buf msg = BUF_INIT(sizeof err->message);
    buf_adds(&msg, "no free VMID in ");
    for (size_t i = 0; i < r->nranges; i++)
        buf_printf(&msg, "%s%d-%d", i ? ", " : "", r->ranges[i].lo, r->ranges[i].hi);
    int rc = store_fail(err, STORE_E_FULL, "%s", buf_str(&msg));
    buf_release(&msg);
    return rc;
}

int store_vmid_reserve_in(db_conn *c, const struct vmid_range *ranges, size_t nranges,
                          const int *taken, size_t ntaken, const char *job, int *vmid,
                          struct store_error *err)
{
    struct reserve_ctx r = {ranges, nranges, taken, ntaken, job, vmid};
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int id = 0;
    int rc = db_lock(c, DB_LOCK_VMID, "vmid", err);
    for (size_t i = 0; rc == STORE_OK && i < r.nranges && id == 0; i++)
        rc = first_free(c, &r, &r.ranges[i], now, &id, err);
    if (rc)
        return rc;
    if (id == 0)
        return no_free_vmid(&r, err);
    if ((rc = db_prepare(c, SQL_VMID_TAKE, &st, err)))
        return rc;
    db_bind_i64(st, 1, id);
    db_bind_text(st, 2, r.job);
    db_bind_i64(st, 3, now);
    rc = db_run(st, err, "reserving VMID");
    if (rc == STORE_OK && db_changes(st) != 1)
        /* marked foreign meanwhile (that write takes no lock): look again */
        rc = db_fail(err, DB_C_RETRY, "VMID %d was allocated while reserving it", id);
    if (rc == STORE_OK)
        *r.vmid = id;
    db_done(st);
    return rc;
}

static int reserve_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct reserve_ctx *r = ctx;
    return store_vmid_reserve_in(c, r->ranges, r->nranges, r->taken, r->ntaken, r->job, r->vmid,
                                 err);
}

int store_vmid_check_args(const struct vmid_range *ranges, size_t nranges, const int *taken,
                          size_t ntaken, struct store_error *err)
{
    STORE_CHECK(ranges || nranges == 0, "VMID ranges are NULL");
    STORE_CHECK(nranges > 0, "no VMID range given");
    STORE_CHECK(taken || ntaken == 0, "taken VMIDs are NULL");
    for (size_t i = 0; i < nranges; i++)
        STORE_CHECK(ranges[i].lo >= STORE_VMID_MIN && ranges[i].hi <= STORE_VMID_MAX &&
                        ranges[i].lo <= ranges[i].hi,
                    "VMID range %d-%d is invalid (must be within %d-%d, lo <= hi)", ranges[i].lo,
                    ranges[i].hi, STORE_VMID_MIN, STORE_VMID_MAX);
    /* `taken` is binary-searched; unsorted input would hand out an ID
     * Proxmox already uses. O(n) to check, so check. */
    for (size_t i = 1; i < ntaken; i++)
        STORE_CHECK(taken[i - 1] <= taken[i], "taken VMIDs are not sorted (%d before %d)",
                    taken[i - 1], taken[i]);
    return STORE_OK;
}

int store_vmid_reserve(store *s, const struct vmid_range *ranges, size_t nranges, const int *taken,
                       size_t ntaken, const char *job, int *vmid, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job && vmid, "store_vmid_reserve: NULL or empty argument");
    int rc = store_vmid_check_args(ranges, nranges, taken, ntaken, err);
    if (rc)
        return rc;
    *vmid = 0;
    struct reserve_ctx r = {ranges, nranges, taken, ntaken, job, vmid};
    return db_tx(s->db, DB_WRITE, reserve_fn, &r, err);
}

static const char SQL_VMID_OF_JOB[] = "SELECT vmid FROM vmid_alloc WHERE job = ?1"
                                      " AND state = 'reserved' ORDER BY vmid LIMIT 1";

static void bind_job(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

struct vmid_state_row {
    char state[16];
};

static int row_vmid(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    *(int *)elem = (int)db_col_i64(st, 0);
    return STORE_OK;
}

int store_vmid_reserved_by(store *s, const char *job, int *vmid, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job && vmid, "store_vmid_reserved_by: NULL or empty argument");
    int *rows = NULL;
    size_t n = 0;
    struct store_read r = {SQL_VMID_OF_JOB, "reading a job's VMID", bind_job, job, sizeof *rows,
                           row_vmid};
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    *vmid = rc == STORE_OK && n ? rows[0] : 0;
    if (rc == STORE_OK && !n)
        rc = store_fail(err, STORE_E_NOTFOUND, "job %.40s holds no reserved VMID", job);
    free(rows);
    return rc;
}

/* A creation that moves to a new VMID (create.c move_vmid) holds, between
 * the reservation and the job's checkpoint, a second reserved VMID: the
 * job's other than `except` (its VMID as the job row says), leaving out
 * those a leftover still names (kept for the reconciler). */
static const char SQL_VMID_OTHER_OF_JOB[] =
    "SELECT vmid FROM vmid_alloc WHERE job = ?1 AND state = 'reserved' AND vmid <> ?2"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE leftovers.vmid = vmid_alloc.vmid)"
    " ORDER BY vmid LIMIT 1";

struct job_except {
    const char *job;
    int except;
};

static void bind_job_except(db_stmt *st, const void *arg)
{
    const struct job_except *k = arg;
    db_bind_text(st, 1, k->job);
    db_bind_i64(st, 2, k->except);
}

int store_vmid_reserved_other(store *s, const char *job, int except, int *vmid,
                              struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job && vmid, "store_vmid_reserved_other: NULL or empty argument");
    int *rows = NULL;
    size_t n = 0;
    struct job_except k = {job, except};
    struct store_read r = {SQL_VMID_OTHER_OF_JOB, "reading a job's other VMID",
                           bind_job_except,       &k,
                           sizeof *rows,          row_vmid};
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    *vmid = rc == STORE_OK && n ? rows[0] : 0;
    if (rc == STORE_OK && !n)
        rc = store_fail(err, STORE_E_NOTFOUND, "job %.40s holds no other reserved VMID", job);
    free(rows);
    return rc;
}

static const char SQL_VMID_STATE_OF[] = "SELECT state FROM vmid_alloc WHERE vmid = ?1";

static void bind_vmid(db_stmt *st, const void *arg)
{
    db_bind_i64(st, 1, *(const int *)arg);
}

static int row_state(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    DB_COL_FIELD(st, 0, ((struct vmid_state_row *)elem)->state);
    return STORE_OK;
}

int store_vmid_state(store *s, int vmid, char state[16], struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && state, "store_vmid_state: NULL argument");
    struct vmid_state_row *rows = NULL;
    size_t n = 0;
    struct store_read r = {
        SQL_VMID_STATE_OF, "reading a VMID's state", bind_vmid, &vmid, sizeof *rows, row_state};
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    state[0] = '\0';
    if (rc == STORE_OK && n)
        snprintf(state, 16, "%s", rows[0].state);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", vmid);
    free(rows);
    return rc;
}

/* ---- marking and releasing ------------------------------------------------------ */

static const char SQL_VMID_STATE[] = "SELECT state FROM vmid_alloc WHERE vmid = ?1";
static const char SQL_VMID_USED[] = "UPDATE vmid_alloc SET state = 'used', until = 0,"
                                    " updated_at = ?2 WHERE vmid = ?1"
                                    " AND state IN ('reserved', 'used')";
static const char SQL_VMID_FOREIGN[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at) VALUES (?1, 'foreign', '', 0, ?2)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'foreign', job = '', until = 0,"
    "   updated_at = excluded.updated_at";
static const char SQL_VMID_FREE[] = "DELETE FROM vmid_alloc WHERE vmid = ?1";
static const char SQL_VMID_QUARANTINE[] = "UPDATE vmid_alloc SET state = 'quarantine', job = '',"
                                          " until = ?2, updated_at = ?3 WHERE vmid = ?1";

struct vmid_ctx {
    const char *sql; /* one of the SQL_VMID_* writes above */
    int vmid;
    int64_t quarantine_ms;
};

/* After mark_used matched nothing: missing, or in a state that is not ours. */
static int vmid_why_not(db_conn *c, int vmid, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VMID_STATE, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, vmid);
    bool found = false;
    rc = db_step(st, &found, err, "reading VMID state");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", vmid);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d is %s, not reserved", vmid,
                        db_col_text(st, 0));
    db_done(st);
    return rc;
}

static int vmid_write_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_ctx *v = ctx;
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = db_prepare(c, v->sql, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, v->vmid);
    if (v->sql == SQL_VMID_QUARANTINE) {
        db_bind_i64(st, 2, now + v->quarantine_ms);
        db_bind_i64(st, 3, now);
    } else if (v->sql != SQL_VMID_FREE) {
        db_bind_i64(st, 2, now);
    }
    rc = db_run(st, err, "writing VMID allocation");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (!none)
        return rc;
    if (v->sql == SQL_VMID_USED)
        return vmid_why_not(c, v->vmid, err);
    return store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", v->vmid);
}

static int vmid_write(store *s, const char *sql, int vmid, int64_t quarantine_ms,
                      struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_vmid: NULL store");
    STORE_CHECK(quarantine_ms >= 0, "quarantine of %lld ms is negative", (long long)quarantine_ms);
    STORE_CHECK(vmid >= STORE_VMID_MIN && vmid <= STORE_VMID_MAX, "VMID %d out of range", vmid);
    struct vmid_ctx v = {sql, vmid, quarantine_ms};
    return db_tx(s->db, DB_WRITE, vmid_write_fn, &v, err);
}

int store_vmid_mark_used(store *s, int vmid, struct store_error *err)
{
    return vmid_write(s, SQL_VMID_USED, vmid, 0, err);
}

int store_vmid_mark_foreign(store *s, int vmid, struct store_error *err)
{
    return vmid_write(s, SQL_VMID_FOREIGN, vmid, 0, err);
}

int store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    return vmid_write(s, quarantine_ms ? SQL_VMID_QUARANTINE : SQL_VMID_FREE, vmid, quarantine_ms,
                      err);
}

/* ---- foreign VMIDs given back ------------------------------------------------ */

static const char SQL_VMID_FOREIGN_LIST[] =
    "SELECT vmid, updated_at FROM vmid_alloc WHERE state = 'foreign' ORDER BY vmid";

static int row_foreign(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct vmid_foreign *f = elem;
    f->vmid = (int)db_col_i64(st, 0);
    f->marked_at = db_col_i64(st, 1);
    return STORE_OK;
}

int store_vmid_foreign_list(store *s, struct vmid_foreign **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_vmid_foreign_list: NULL argument");
    *out = NULL;
    *n = 0;
    struct store_read r = {
        SQL_VMID_FOREIGN_LIST, "listing foreign VMIDs", NULL, NULL, sizeof **out, row_foreign};
    return store_read_all(s, &r, (void **)out, n, err);
}

/* Only while it is still foreign and was last marked before ?2 (a mark
 * written since, by any process on the database, is newer than the read
 * that did not show the VM), and while nothing of proxd's names it: a job
 * under way whose VMID it is (a creation killed after reallocate() marked
 * it, before it moved on: the mark tells its resumed run to move first), a
 * leftover, a live record. */
#define FOREIGN_FREE_IF                                                                            \
    " WHERE vmid = ?1 AND state = 'foreign' AND updated_at < ?2"                                   \
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.vmid = ?1"                                     \
    "   AND jobs.state IN ('queued', 'running'))"                                                  \
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE leftovers.vmid = ?1)"                          \
    " AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.vmid = ?1"                                       \
    "   AND vms.state IN ('creating', 'enabled', 'deleting'))"
static const char SQL_VMID_FREE_FOREIGN[] = "DELETE FROM vmid_alloc" FOREIGN_FREE_IF;
static const char SQL_VMID_QUARANTINE_FOREIGN[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = ?3, updated_at = "
    "?4" FOREIGN_FREE_IF;

/* The statements that give VMIDs back come in pairs: without a quarantine
 * (DELETE: free at once) and with one (UPDATE to 'quarantine' until ?3,
 * stamped ?4). Prepares the one quarantine_ms asks for, ?3 and ?4 bound;
 * the caller binds the rest. */
static int prepare_giveback(db_conn *c, int64_t quarantine_ms, const char *sql_free,
                            const char *sql_quarantine, db_stmt **st, struct store_error *err)
{
    int rc = db_prepare(c, quarantine_ms ? sql_quarantine : sql_free, st, err);
    if (rc == STORE_OK && quarantine_ms) {
        int64_t now = wall_ms();
        db_bind_i64(*st, 3, now + quarantine_ms);
        db_bind_i64(*st, 4, now);
    }
    return rc;
}

struct release_foreign_ctx {
    int vmid;
    int64_t marked_before, quarantine_ms;
};

static int release_foreign_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct release_foreign_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = prepare_giveback(c, k->quarantine_ms, SQL_VMID_FREE_FOREIGN,
                              SQL_VMID_QUARANTINE_FOREIGN, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vmid);
    db_bind_i64(st, 2, k->marked_before);
    rc = db_run(st, err, "giving back a foreign VMID");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (!none)
        return rc;
    /* why not: gone, no longer foreign, or marked again since */
    if ((rc = db_prepare(c, "SELECT state, updated_at FROM vmid_alloc WHERE vmid = ?1", &st, err)))
        return rc;
    db_bind_i64(st, 1, k->vmid);
    bool found = false;
    rc = db_step(st, &found, err, "reading VMID state");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", k->vmid);
    else if (rc == STORE_OK && strcmp(db_col_text(st, 0), "foreign") != 0)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d is %s, not foreign", k->vmid,
                        db_col_text(st, 0));
    else if (rc == STORE_OK && db_col_i64(st, 1) >= k->marked_before)
        rc = store_fail(err, STORE_E_CONFLICT,
                        "VMID %d was marked foreign at %lld, not before %lld (marked again)",
                        k->vmid, (long long)db_col_i64(st, 1), (long long)k->marked_before);
    else if (rc == STORE_OK)
        rc =
            store_fail(err, STORE_E_CONFLICT,
                       "VMID %d is named by a job under way, a leftover or a live record", k->vmid);
    db_done(st);
    return rc;
}

int store_vmid_release_foreign(store *s, int vmid, int64_t marked_before, int64_t quarantine_ms,
                               struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_vmid_release_foreign: NULL store");
    STORE_CHECK(quarantine_ms >= 0, "quarantine of %lld ms is negative", (long long)quarantine_ms);
    STORE_CHECK(vmid >= STORE_VMID_MIN && vmid <= STORE_VMID_MAX, "VMID %d out of range", vmid);
    struct release_foreign_ctx k = {vmid, marked_before, quarantine_ms};
    return db_tx(s->db, DB_WRITE, release_foreign_fn, &k, err);
}

/* Only while it is still reserved by `job`: a VMID a creation moved off
 * (a leftover holds it, or it was marked foreign) is not the job's. */
static const char SQL_VMID_FREE_JOB[] =
    "DELETE FROM vmid_alloc WHERE vmid = ?1 AND job = ?2 AND state = 'reserved'";
static const char SQL_VMID_QUARANTINE_JOB[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = ?3, updated_at = ?4"
    " WHERE vmid = ?1 AND job = ?2 AND state = 'reserved'";

int store_vmid_release_job_in(db_conn *c, int vmid, const char *job, int64_t quarantine_ms,
                              struct store_error *err)
{
    db_stmt *st = NULL;
    int rc =
        prepare_giveback(c, quarantine_ms, SQL_VMID_FREE_JOB, SQL_VMID_QUARANTINE_JOB, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, vmid);
    db_bind_text(st, 2, job);
    rc = db_run(st, err, "releasing the job's VMID");
    db_done(st);
    return rc;
}

/* The same for every VMID the job holds reserved but `keep`, except those
 * a leftover names (the reconciler's to give back: store_leftover_done). */
static const char SQL_VMID_FREE_OTHERS[] =
    "DELETE FROM vmid_alloc WHERE job = ?1 AND state = 'reserved' AND vmid <> ?2"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE leftovers.vmid = vmid_alloc.vmid)";
static const char SQL_VMID_QUARANTINE_OTHERS[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = ?3, updated_at = ?4"
    " WHERE job = ?1 AND state = 'reserved' AND vmid <> ?2"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE leftovers.vmid = vmid_alloc.vmid)";

struct release_others_ctx {
    const char *job;
    int keep;
    int64_t quarantine_ms;
    int *n;
};

static int release_others_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct release_others_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = prepare_giveback(c, k->quarantine_ms, SQL_VMID_FREE_OTHERS, SQL_VMID_QUARANTINE_OTHERS,
                              &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->job);
    db_bind_i64(st, 2, k->keep);
    rc = db_run(st, err, "releasing the job's other VMIDs");
    if (rc == STORE_OK && k->n)
        *k->n = (int)db_changes(st);
    db_done(st);
    return rc;
}

int store_vmid_release_others(store *s, const char *job, int keep, int64_t quarantine_ms, int *n,
                              struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job, "store_vmid_release_others: NULL or empty argument");
    STORE_CHECK(quarantine_ms >= 0, "quarantine of %lld ms is negative", (long long)quarantine_ms);
    if (n)
        *n = 0;
    struct release_others_ctx k = {job, keep, quarantine_ms, n};
    return db_tx(s->db, DB_WRITE, release_others_fn, &k, err);
}

/* The allocated IDs of a range, and of them those quarantined (given back,
 * not yet free again): expired quarantines are free, as SQL_VMID_ALLOCATED
 * says. */
static const char SQL_VMID_COUNT[] =
    "SELECT count(*), coalesce(sum(CASE WHEN state = 'quarantine' THEN 1 ELSE 0 END), 0)"
    " FROM vmid_alloc WHERE vmid BETWEEN ?1 AND ?2"
    " AND NOT (state = 'quarantine' AND until <= ?3)";

struct vmid_count_ctx {
    int lo, hi, *n, *quarantined;
};

static int vmid_count_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_count_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VMID_COUNT, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->lo);
    db_bind_i64(st, 2, k->hi);
    db_bind_i64(st, 3, wall_ms());
    bool row = false;
    rc = db_step(st, &row, err, "counting VMIDs");
    *k->n = row ? (int)db_col_i64(st, 0) : 0;
    if (k->quarantined)
        *k->quarantined = row ? (int)db_col_i64(st, 1) : 0;
    db_done(st);
    return rc;
}

int store_vmid_count(store *s, int lo, int hi, int *n, struct store_error *err)
{
    return store_vmid_counts(s, lo, hi, n, NULL, err);
}

int store_vmid_counts(store *s, int lo, int hi, int *n, int *quarantined, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && n, "store_vmid_count: NULL argument");
    STORE_CHECK(lo <= hi, "VMID range %d-%d is empty", lo, hi);
    *n = 0;
    if (quarantined)
        *quarantined = 0;
    struct vmid_count_ctx k = {lo, hi, n, quarantined};
    return db_tx(s->db, DB_READ, vmid_count_fn, &k, err);
}
