/* store_addr_keep: what happens to addresses after their reservation
 * (store.h "IP addresses"): release to quarantine, the crash-recovery
 * sweep, foreign addresses seen by the inventory, admins' holds, and the
 * reads for listings and counts. Each public function is one transaction;
 * lists are the caller's to free. None of these writes needs a pool lock:
 * they never choose an address, and each write is conditional on the
 * state it replaces, so a concurrent reservation either sees the row or
 * finds the primary key taken.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <stdlib.h>

/* A reservation whose job is not in the database yet (store_addr_reserve
 * before the job's insert) is left alone by the sweep for this long. */
#define SWEEP_GRACE_MS (10 * 60 * 1000)

#define ADDR_COLS "addr, pool, state, job, vm_id, vmid, until, note, updated_at"

/* a leftover of the creation (a half-made VM that may carry the address
 * in its config) keeps the address until store_leftover_done */
static const char SQL_REL_VM_ROWS[] =
    "SELECT a.addr, a.pool FROM addr_alloc a WHERE a.vm_id = ?1 AND a.state IN ('used', 'reserved')"
    " AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.job = a.job AND a.job <> '')";
/* a leftover's creation: what no live record uses, once no leftover of it
 * remains */
static const char SQL_REL_LEFT_ROWS[] =
    "SELECT a.addr, a.pool FROM addr_alloc a WHERE a.job = ?1 AND a.state IN ('used', 'reserved')"
    " AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = a.vm_id AND v.state IN {LIVE})"
    " AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.job = a.job)";
static const char SQL_REL_JOB_ROWS[] = "SELECT addr, pool FROM addr_alloc"
                                       " WHERE job = ?1 AND state = 'reserved'";
/* reserved and never bound, by a job that is finished, or that is missing
 * and older than the grace, and no leftover of that job is recorded */
static const char SQL_SWEEP_RESERVED[] =
    "SELECT a.addr, a.pool FROM addr_alloc a WHERE a.state = 'reserved' AND a.vm_id = 0"
    " AND (EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job AND j.state NOT IN {ACTIVE})"
    "   OR (a.updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job)))"
    " AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.job = a.job)";
/* used by a record that is gone (or missing), and no leftover of its VMID */
static const char SQL_SWEEP_USED[] =
    "SELECT a.addr, a.pool FROM addr_alloc a WHERE a.state = 'used'"
    " AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = a.vm_id AND v.state IN {LIVE})"
    " AND NOT EXISTS (SELECT 1 FROM leftovers l WHERE l.vmid = a.vmid"
    "   OR (l.job = a.job AND a.job <> ''))";
static const char SQL_SWEEP_NET[] =
    "UPDATE vm_net SET live = 0 WHERE live = 1"
    " AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.id = vm_net.vm_id AND v.state IN {LIVE})";
static const char SQL_REL_QUARANTINE[] =
    "UPDATE addr_alloc SET state = 'quarantine', job = '', vm_id = 0, until = ?2,"
    " updated_at = ?3 WHERE addr = ?1 AND state IN ('used', 'reserved')";
static const char SQL_REL_FREE[] =
    "DELETE FROM addr_alloc WHERE addr = ?1 AND state IN ('used', 'reserved')";
static const char SQL_REL_NET[] = "UPDATE vm_net SET live = 0 WHERE vm_id = ?1";

struct addr_pool {
    char addr[STORE_ADDR_KEY];
    char pool[64];
};

static int row_addr_pool(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct addr_pool *a = elem;
    DB_COL_FIELD(st, 0, a->addr);
    DB_COL_FIELD(st, 1, a->pool);
    return STORE_OK;
}

static int64_t quarantine_of(const struct store_addr_quarantine *q, size_t nq, const char *pool)
{
    int64_t other = 0;
    for (size_t i = 0; i < nq; i++) {
        if (!q[i].pool)
            other = q[i].ms;
        else if (strcmp(q[i].pool, pool) == 0)
            return q[i].ms;
    }
    return other;
}

struct rel_ctx {
    const char *sql; /* one of the row selections above */
    const char *job;
    int64_t vm_id, grace_before;
    const struct store_addr_quarantine *q;
    size_t nq;
    size_t released;
};

/* Each row to quarantine (its pool's time), or freed when that is 0. */
static int release_rows(db_conn *c, struct rel_ctx *k, const struct addr_pool *rows, size_t n,
                        int64_t now, struct store_error *err)
{
    int rc = STORE_OK;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        int64_t ms = quarantine_of(k->q, k->nq, rows[i].pool);
        db_stmt *st = NULL;
        if ((rc = db_prepare(c, ms > 0 ? SQL_REL_QUARANTINE : SQL_REL_FREE, &st, err)))
            break;
        db_bind_text(st, 1, rows[i].addr);
        if (ms > 0) {
            db_bind_i64(st, 2, now + ms);
            db_bind_i64(st, 3, now);
        }
        rc = db_run(st, err, "releasing an address");
        k->released += rc == STORE_OK ? (size_t)db_changes(st) : 0;
        db_done(st);
    }
    return rc;
}

static int release_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct rel_ctx *k = ctx;
    struct addr_pool *rows = NULL;
    size_t n = 0;
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    k->released = 0;
    int rc = db_prepare(c, k->sql, &st, err);
    if (rc)
        return rc;
    if (k->sql == SQL_REL_VM_ROWS)
        db_bind_i64(st, 1, k->vm_id);
    else if (k->sql == SQL_REL_JOB_ROWS || k->sql == SQL_REL_LEFT_ROWS)
        db_bind_text(st, 1, k->job);
    else if (k->sql == SQL_SWEEP_RESERVED)
        db_bind_i64(st, 1, k->grace_before);
    rc = db_collect(st, (void **)&rows, &n, sizeof *rows, row_addr_pool, err,
                    "reading addresses to release");
    db_done(st);
    if (rc == STORE_OK)
        rc = release_rows(c, k, rows, n, now, err);
    free(rows);
    const char *net = k->sql == SQL_REL_VM_ROWS  ? SQL_REL_NET
                      : k->sql == SQL_SWEEP_USED ? SQL_SWEEP_NET
                                                 : NULL;
    if (rc || !net || (rc = db_prepare(c, net, &st, err)))
        return rc;
    if (net == SQL_REL_NET)
        db_bind_i64(st, 1, k->vm_id);
    rc = db_run(st, err, "releasing the VM's network");
    db_done(st);
    return rc;
}

static int release(store *s, struct rel_ctx *k, size_t *n, struct store_error *err)
{
    if (n)
        *n = 0;
    STORE_CHECK(k->q || k->nq == 0, "quarantine list is NULL");
    for (size_t i = 0; i < k->nq; i++)
        STORE_CHECK(k->q[i].ms >= 0, "quarantine of %lld ms is negative", (long long)k->q[i].ms);
    int rc = db_tx(s->db, DB_WRITE, release_fn, k, err);
    if (rc == STORE_OK && n)
        *n = k->released;
    return rc;
}

int store_addr_release_vm_in(db_conn *c, int64_t vm_id, const struct store_addr_quarantine *q,
                             size_t nq, size_t *n, struct store_error *err)
{
    struct rel_ctx k = {.sql = SQL_REL_VM_ROWS, .vm_id = vm_id, .q = q, .nq = nq};
    int rc = release_fn(c, &k, err);
    if (n)
        *n = rc == STORE_OK ? k.released : 0;
    return rc;
}

int store_addr_release_left_in(db_conn *c, const char *job, const struct store_addr_quarantine *q,
                               size_t nq, struct store_error *err)
{
    struct rel_ctx k = {.sql = SQL_REL_LEFT_ROWS, .job = job, .q = q, .nq = nq};
    return release_fn(c, &k, err);
}

void store_addr_policy(store *s, const struct store_addr_quarantine *q, size_t nq)
{
    for (size_t i = 0; i < s->nq; i++)
        free((char *)s->q[i].pool);
    free(s->q);
    s->q = nq ? xcalloc(nq, sizeof *s->q) : NULL;
    s->nq = nq;
    for (size_t i = 0; i < nq; i++)
        s->q[i] = (struct store_addr_quarantine){q[i].pool ? xstrdup(q[i].pool) : NULL,
                                                 q[i].ms > 0 ? q[i].ms : 0};
    s->has_policy = true;
}

int store_addr_release_vm(store *s, int64_t vm_id, const struct store_addr_quarantine *q, size_t nq,
                          size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && vm_id > 0, "store_addr_release_vm: NULL store or bad record id");
    struct rel_ctx k = {.sql = SQL_REL_VM_ROWS, .vm_id = vm_id, .q = q, .nq = nq};
    return release(s, &k, n, err);
}

int store_addr_release_job(store *s, const char *job, const struct store_addr_quarantine *q,
                           size_t nq, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job, "store_addr_release_job: NULL or empty argument");
    struct rel_ctx k = {.sql = SQL_REL_JOB_ROWS, .job = job, .q = q, .nq = nq};
    return release(s, &k, n, err);
}

int store_addr_sweep(store *s, const struct store_addr_quarantine *q, size_t nq, size_t *n,
                     struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_addr_sweep: NULL store");
    size_t total = 0, one = 0;
    struct rel_ctx k = {
        .sql = SQL_SWEEP_RESERVED, .grace_before = wall_ms() - SWEEP_GRACE_MS, .q = q, .nq = nq};
    int rc = release(s, &k, &one, err);
    total += one;
    if (rc == STORE_OK) {
        k.sql = SQL_SWEEP_USED;
        rc = release(s, &k, &one, err);
        total += one;
    }
    if (n)
        *n = total;
    return rc;
}

/* ---- foreign addresses and holds ------------------------------------------------- */

static const char SQL_FOREIGN[] =
    "INSERT INTO addr_alloc (addr, pool, state, job, vm_id, vmid, until, note, updated_at)"
    " VALUES (?1, '', 'foreign', '', 0, 0, 0, ?2, ?3)"
    " ON CONFLICT (addr) DO UPDATE SET pool = '', state = 'foreign', job = '', vm_id = 0,"
    "   vmid = 0, until = 0, note = excluded.note, updated_at = excluded.updated_at"
    " WHERE addr_alloc.state IN ('foreign', 'quarantine')";
static const char SQL_FOREIGN_FORGET[] =
    "DELETE FROM addr_alloc WHERE state = 'foreign' AND updated_at < ?1";
static const char SQL_ADDR_ROW[] = "SELECT " ADDR_COLS " FROM addr_alloc WHERE addr = ?1";
static const char SQL_HOLD[] =
    "INSERT INTO addr_alloc (addr, pool, state, job, vm_id, vmid, until, note, updated_at)"
    " VALUES (?1, ?2, 'held', '', 0, 0, 0, ?3, ?4)"
    " ON CONFLICT (addr) DO UPDATE SET pool = excluded.pool, state = 'held', job = '',"
    "   vm_id = 0, vmid = 0, until = 0, note = excluded.note, updated_at = excluded.updated_at"
    " WHERE addr_alloc.state IN ('held', 'foreign', 'quarantine')";
static const char SQL_UNHOLD[] =
    "DELETE FROM addr_alloc WHERE addr = ?1 AND pool = ?2 AND state = 'held'";

static int row_addr(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct store_addr *a = elem;
    DB_COL_FIELD(st, 0, a->addr);
    DB_COL_FIELD(st, 1, a->pool);
    DB_COL_FIELD(st, 2, a->state);
    DB_COL_FIELD(st, 3, a->job);
    a->vm_id = db_col_i64(st, 4);
    a->vmid = (int)db_col_i64(st, 5);
    a->until = db_col_i64(st, 6);
    DB_COL_FIELD(st, 7, a->note);
    a->updated_at = db_col_i64(st, 8);
    return STORE_OK;
}

struct foreign_ctx {
    const char *const *keys;
    size_t n;
    const char *where;
    struct store_addr *conf;
    size_t nconf;
};

/* The row that kept a foreign mark out, appended to the conflicts. */
static int foreign_conflict(db_conn *c, struct foreign_ctx *k, const char *key,
                            struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_ADDR_ROW, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, key);
    bool row = false;
    rc = db_step(st, &row, err, "reading an address");
    if (rc == STORE_OK && row) {
        k->conf = xrealloc(k->conf, (k->nconf + 1) * sizeof *k->conf);
        memset(&k->conf[k->nconf], 0, sizeof *k->conf);
        rc = row_addr(st, &k->conf[k->nconf++], err);
    }
    db_done(st);
    return rc;
}

static int foreign_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct foreign_ctx *k = ctx;
    int64_t now = wall_ms();
    int rc = STORE_OK;
    free(k->conf); /* a retry runs this again */
    k->conf = NULL;
    k->nconf = 0;
    for (size_t i = 0; rc == STORE_OK && i < k->n; i++) {
        db_stmt *st = NULL;
        if ((rc = db_prepare(c, SQL_FOREIGN, &st, err)))
            break;
        db_bind_text(st, 1, k->keys[i]);
        db_bind_text(st, 2, k->where);
        db_bind_i64(st, 3, now);
        rc = db_run(st, err, "marking an address foreign");
        bool kept = rc == STORE_OK && db_changes(st) == 0;
        db_done(st);
        if (kept)
            rc = foreign_conflict(c, k, k->keys[i], err);
    }
    return rc;
}

int store_addr_mark_foreign(store *s, const char *const *keys, size_t n, const char *where,
                            struct store_addr **conflicts, size_t *nconf, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && (keys || n == 0) && where && conflicts && nconf,
                "store_addr_mark_foreign: NULL argument");
    *conflicts = NULL;
    *nconf = 0;
    for (size_t i = 0; i < n; i++)
        STORE_CHECK(store_addr_key_ok(keys[i]), "'%.40s' is not an address key",
                    keys[i] ? keys[i] : "");
    struct foreign_ctx k = {keys, n, where, NULL, 0};
    int rc = db_tx(s->db, DB_WRITE, foreign_fn, &k, err);
    if (rc == STORE_OK) {
        *conflicts = k.conf;
        *nconf = k.nconf;
    } else {
        free(k.conf);
    }
    return rc;
}

struct write_ctx {
    const char *sql, *pool, *key, *note;
    int64_t before;
    int64_t changes;
};

static int write_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct write_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, k->sql, &st, err);
    if (rc)
        return rc;
    if (k->sql == SQL_FOREIGN_FORGET) {
        db_bind_i64(st, 1, k->before);
    } else {
        db_bind_text(st, 1, k->key);
        db_bind_text(st, 2, k->pool);
        if (k->sql == SQL_HOLD) {
            db_bind_text(st, 3, k->note);
            db_bind_i64(st, 4, wall_ms());
        }
    }
    rc = db_run(st, err, "writing an address");
    k->changes = rc == STORE_OK ? db_changes(st) : 0;
    db_done(st);
    return rc;
}

int store_addr_forget_foreign(store *s, int64_t seen_before, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_addr_forget_foreign: NULL store");
    struct write_ctx k = {.sql = SQL_FOREIGN_FORGET, .before = seen_before};
    int rc = db_tx(s->db, DB_WRITE, write_fn, &k, err);
    if (n)
        *n = rc == STORE_OK ? (size_t)k.changes : 0;
    return rc;
}

static int hold_write(store *s, struct write_ctx *k, struct store_error *err)
{
    STORE_CHECK(s && k->pool && *k->pool && strlen(k->pool) < 64,
                "pool name empty or longer than 63");
    STORE_CHECK(store_addr_key_ok(k->key), "'%.40s' is not an address key", k->key ? k->key : "");
    int rc = db_tx(s->db, DB_WRITE, write_fn, k, err);
    if (rc || k->changes > 0)
        return rc;
    rc = store_fail(err, k->sql == SQL_HOLD ? STORE_E_CONFLICT : STORE_E_NOTFOUND,
                    k->sql == SQL_HOLD ? "address %s is in use" : "address %s is not held", k->key);
    if (err) {
        snprintf(err->field, sizeof err->field, "address");
        snprintf(err->pool, sizeof err->pool, "%s", k->pool);
    }
    return rc;
}

int store_addr_hold(store *s, const char *pool, const char *key, const char *note,
                    struct store_error *err)
{
    store_err_clear(err);
    struct write_ctx k = {.sql = SQL_HOLD, .pool = pool, .key = key, .note = note ? note : ""};
    return hold_write(s, &k, err);
}

int store_addr_unhold(store *s, const char *pool, const char *key, struct store_error *err)
{
    store_err_clear(err);
    struct write_ctx k = {.sql = SQL_UNHOLD, .pool = pool, .key = key};
    return hold_write(s, &k, err);
}

/* ---- reads ---------------------------------------------------------------------- */

static const char SQL_LIST_ANY[] = "SELECT " ADDR_COLS " FROM addr_alloc"
                                   " WHERE pool = ?1 AND addr > ?2 ORDER BY addr LIMIT ?3";
static const char SQL_LIST_STATE[] =
    "SELECT " ADDR_COLS " FROM addr_alloc"
    " WHERE pool = ?1 AND addr > ?2 AND state = ?4 ORDER BY addr LIMIT ?3";
static const char SQL_ALLOCATED[] = "SELECT addr FROM addr_alloc WHERE pool = ?1"
                                    " AND NOT (state = 'quarantine' AND until <= ?2) ORDER BY addr";
static const char SQL_COUNTS[] = "SELECT state, count(*) FROM addr_alloc WHERE pool = ?1"
                                 " AND NOT (state = 'quarantine' AND until <= ?2) GROUP BY state";

struct list_args {
    const char *pool, *after, *state;
    int limit;
};

static void bind_list(db_stmt *st, const void *arg)
{
    const struct list_args *a = arg;
    db_bind_text(st, 1, a->pool);
    db_bind_text(st, 2, a->after);
    db_bind_i64(st, 3, a->limit);
    if (a->state)
        db_bind_text(st, 4, a->state);
}

int store_addr_list(store *s, const char *pool, const char *state, const char *after, int limit,
                    struct store_addr **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && pool && out && n, "store_addr_list: NULL argument");
    *out = NULL;
    *n = 0;
    static const char *const states[] = {"reserved", "used", "quarantine", "foreign", "held"};
    bool known = !state;
    for (size_t i = 0; !known && i < sizeof states / sizeof *states; i++)
        known = strcmp(state, states[i]) == 0;
    STORE_CHECK(known, "address state '%.20s' is unknown", state);
    STORE_CHECK(limit >= 0 && limit <= STORE_LIST_MAX, "limit %d is not within 0-%d", limit,
                STORE_LIST_MAX);
    struct list_args a = {pool, after ? after : "", state, limit ? limit : STORE_LIST_DEFAULT};
    struct store_read r = {state ? SQL_LIST_STATE : SQL_LIST_ANY,
                           "listing addresses",
                           bind_list,
                           &a,
                           sizeof **out,
                           row_addr};
    return store_read_all(s, &r, (void **)out, n, err);
}

static const char SQL_GET[] = "SELECT " ADDR_COLS " FROM addr_alloc WHERE addr = ?1";

static void bind_key(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

int store_addr_get(store *s, const char *key, struct store_addr *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && key && out, "store_addr_get: NULL argument");
    struct store_addr *rows = NULL;
    size_t n = 0;
    struct store_read r = {SQL_GET, "reading an address", bind_key, key, sizeof *rows, row_addr};
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    if (rc == STORE_OK && n == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "address %.40s has no row", key);
    if (rc == STORE_OK)
        *out = rows[0];
    free(rows);
    return rc;
}

struct pool_args {
    const char *pool;
    int64_t now;
};

static void bind_pool(db_stmt *st, const void *arg)
{
    const struct pool_args *a = arg;
    db_bind_text(st, 1, a->pool);
    db_bind_i64(st, 2, a->now);
}

static int row_key(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    db_col_copy(st, 0, elem, STORE_ADDR_KEY);
    return STORE_OK;
}

int store_addr_allocated(store *s, const char *pool, char (**out)[STORE_ADDR_KEY], size_t *n,
                         struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && pool && out && n, "store_addr_allocated: NULL argument");
    *out = NULL;
    *n = 0;
    struct pool_args a = {pool, wall_ms()};
    struct store_read r = {
        SQL_ALLOCATED, "reading the pool's addresses", bind_pool, &a, STORE_ADDR_KEY, row_key};
    return store_read_all(s, &r, (void **)out, n, err);
}

struct count_row {
    char state[16];
    int64_t n;
};

static int row_count(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct count_row *c = elem;
    DB_COL_FIELD(st, 0, c->state);
    c->n = db_col_i64(st, 1);
    return STORE_OK;
}

int store_addr_counts(store *s, const char *pool, struct store_addr_counts *out,
                      struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && pool && out, "store_addr_counts: NULL argument");
    memset(out, 0, sizeof *out);
    struct pool_args a = {pool, wall_ms()};
    struct store_read r = {SQL_COUNTS, "counting the pool's addresses", bind_pool,
                           &a,         sizeof(struct count_row),        row_count};
    struct count_row *rows = NULL;
    size_t n = 0;
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        int64_t *slot = strcmp(rows[i].state, "reserved") == 0     ? &out->reserved
                        : strcmp(rows[i].state, "used") == 0       ? &out->used
                        : strcmp(rows[i].state, "quarantine") == 0 ? &out->quarantined
                        : strcmp(rows[i].state, "held") == 0       ? &out->held
                                                                   : NULL;
        if (slot)
            *slot = rows[i].n;
    }
    free(rows);
    return rc;
}

static const char SQL_OWNER_ADDRS[] =
    "SELECT count(*) FROM addr_alloc a JOIN vms v ON v.id = a.vm_id"
    " WHERE v.owner = ?1 AND v.state IN {LIVE} AND a.state IN ('used', 'reserved')";

static void bind_owner(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

static int row_int(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    *(int *)elem = (int)db_col_i64(st, 0);
    return STORE_OK;
}

int store_addr_owner_count(store *s, const char *owner, int *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && n, "store_addr_owner_count: NULL argument");
    const struct store_read r = {
        SQL_OWNER_ADDRS, "counting an owner's addresses", bind_owner, owner, sizeof(int), row_int};
    int *out = NULL;
    size_t m = 0;
    int rc = store_read_all(s, &r, (void **)&out, &m, err);
    *n = rc == STORE_OK && m ? out[0] : 0;
    free(out);
    return rc;
}

/* ---- counts for the API's pool views ------------------------------------------ */

static const char SQL_COUNT_OWNER[] =
    "SELECT a.state, count(*) FROM addr_alloc a JOIN vms v ON v.id = a.vm_id"
    " WHERE a.pool = ?1 AND v.owner = ?2 AND v.state IN {LIVE} AND a.state IN ('used', 'reserved')"
    " GROUP BY a.state";

struct span_args {
    const char *a, *b;
};

static void bind_span(db_stmt *st, const void *arg)
{
    const struct span_args *x = arg;
    db_bind_text(st, 1, x->a);
    db_bind_text(st, 2, x->b);
}

static int count_read(store *s, const char *sql, const struct span_args *a, int64_t *out,
                      struct store_error *err)
{
    struct store_read r = {sql, "counting addresses",     bind_span,
                           a,   sizeof(struct count_row), row_count};
    struct count_row *rows = NULL;
    size_t n = 0;
    *out = 0;
    int rc = store_read_all(s, &r, (void **)&rows, &n, err);
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        *out += rows[i].n;
    free(rows);
    return rc;
}

int store_addr_count_owner(store *s, const char *pool, const char *owner, int64_t *n,
                           struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && pool && owner && n, "store_addr_count_owner: NULL argument");
    struct span_args a = {pool, owner};
    return count_read(s, SQL_COUNT_OWNER, &a, n, err);
}
