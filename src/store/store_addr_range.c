/* store_addr_range: address ranges of pools added at run time (store.h
 * "IP addresses"; POST /v1/ippools/{name}/ranges), which the core merges
 * with the configured ones when it builds a pool's plan. The store checks
 * only the shape (keys, first <= last, one family); whether a range lies
 * in the pool's CIDR is the core's (ippool.h). Each public function is one
 * transaction; the list is the caller's to free.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

static const char SQL_RANGE_ADD[] =
    "INSERT INTO addr_range (pool, kind, first, last, created_by, created_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6){RETURNING_ID}";
static const char SQL_RANGE_DEL[] = "DELETE FROM addr_range WHERE pool = ?1 AND id = ?2";
static const char SQL_RANGE_LIST[] =
    "SELECT id, pool, kind, first, last, created_by, created_at FROM addr_range"
    " WHERE pool = ?1 ORDER BY id";
static const char SQL_RANGE_LIST_ALL[] =
    "SELECT id, pool, kind, first, last, created_by, created_at FROM addr_range ORDER BY id";

struct range_ctx {
    struct store_addr_range *r;
    const char *pool;
    int64_t id;
    store_range_check_fn check;
    void *check_ctx;
};

static int row_range(db_stmt *st, void *elem, struct store_error *err);

/* The pool's ranges as they are, under its address lock, to check. */
static int range_check(db_conn *c, struct range_ctx *k, struct store_error *err)
{
    int rc = db_lock(c, DB_LOCK_ADDR, k->r->pool, err);
    if (rc)
        return rc;
    db_stmt *st = NULL;
    if ((rc = db_prepare(c, SQL_RANGE_LIST, &st, err)))
        return rc;
    db_bind_text(st, 1, k->r->pool);
    void *v = NULL;
    size_t n = 0;
    rc = db_collect(st, &v, &n, sizeof(struct store_addr_range), row_range, err,
                    "listing address ranges");
    db_done(st);
    if (rc == STORE_OK)
        rc = k->check(k->check_ctx, v, n, k->r, err);
    free(v);
    return rc;
}

static int range_add_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct range_ctx *k = ctx;
    struct store_addr_range *r = k->r;
    db_stmt *st = NULL;
    int rc = k->check ? range_check(c, k, err) : STORE_OK;
    if (rc)
        return rc;
    rc = db_prepare(c, SQL_RANGE_ADD, &st, err);
    if (rc)
        return rc;
    int64_t now = wall_ms();
    DB_BIND_FIELD(st, 1, r->pool);
    DB_BIND_FIELD(st, 2, r->kind);
    DB_BIND_FIELD(st, 3, r->first);
    DB_BIND_FIELD(st, 4, r->last);
    DB_BIND_FIELD(st, 5, r->created_by);
    db_bind_i64(st, 6, now);
    rc = db_run(st, err, "adding an address range");
    if (rc == STORE_OK) {
        r->id = db_last_id(st);
        r->created_at = now;
    }
    db_done(st);
    return rc;
}

int store_addr_range_add(store *s, struct store_addr_range *r, struct store_error *err)
{
    return store_addr_range_add_checked(s, r, NULL, NULL, err);
}

int store_addr_range_add_checked(store *s, struct store_addr_range *r, store_range_check_fn check,
                                 void *ctx, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && r, "store_addr_range_add: NULL argument");
    STORE_CHECK(FIELD_LEN(r->pool) > 0 && FIELD_LEN(r->pool) < sizeof r->pool, "pool name empty");
    STORE_CHECK(strcmp(r->kind, "ranges") == 0 || strcmp(r->kind, "reserved") == 0,
                "range kind '%.16s' is neither 'ranges' nor 'reserved'", r->kind);
    STORE_CHECK(store_addr_key_ok(r->first), "first: not an address key");
    STORE_CHECK(store_addr_key_ok(r->last), "last: not an address key");
    STORE_CHECK(r->first[0] == r->last[0], "first and last are of different families");
    STORE_CHECK(strcmp(r->first, r->last) <= 0, "first is after last");
    STORE_CHECK(FIELD_LEN(r->created_by) < sizeof r->created_by, "created_by is not terminated");
    struct range_ctx k = {r, NULL, 0, check, ctx};
    return db_tx(s->db, DB_WRITE, range_add_fn, &k, err);
}

static int range_del_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct range_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_RANGE_DEL, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->pool);
    db_bind_i64(st, 2, k->id);
    rc = db_run(st, err, "removing an address range");
    if (rc == STORE_OK && db_changes(st) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "pool %s has no run-time range %lld", k->pool,
                        (long long)k->id);
    db_done(st);
    return rc;
}

int store_addr_range_del(store *s, const char *pool, int64_t id, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && pool && *pool, "store_addr_range_del: NULL or empty argument");
    struct range_ctx k = {NULL, pool, id, NULL, NULL};
    return db_tx(s->db, DB_WRITE, range_del_fn, &k, err);
}

static void bind_pool_name(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

static int row_range(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct store_addr_range *r = elem;
    r->id = db_col_i64(st, 0);
    DB_COL_FIELD(st, 1, r->pool);
    DB_COL_FIELD(st, 2, r->kind);
    DB_COL_FIELD(st, 3, r->first);
    DB_COL_FIELD(st, 4, r->last);
    DB_COL_FIELD(st, 5, r->created_by);
    r->created_at = db_col_i64(st, 6);
    return STORE_OK;
}

int store_addr_range_list(store *s, const char *pool, struct store_addr_range **out, size_t *n,
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_addr_range_list: NULL argument");
    *out = NULL;
    *n = 0;
    struct store_read r = {pool ? SQL_RANGE_LIST : SQL_RANGE_LIST_ALL,
                           "listing address ranges",
                           pool ? bind_pool_name : NULL,
                           pool,
                           sizeof **out,
                           row_range};
    return store_read_all(s, &r, (void **)out, n, err);
}
