/* store_addr: IP addresses of pools (store.h "IP addresses",
 * docs/design/ippool.md sections 2-3), the single source of truth that
 * keeps two VMs from ever sharing an address.
 *
 * The store deals in address keys (text whose order is the address order)
 * and never decides which address is next: the core's pick callback does,
 * from the pool's allocated keys that the store reads under the pool's lock
 * (db_lock DB_LOCK_ADDR; SQLite's write lock serialises anyway). The
 * primary key on the address is what makes a double hand-out impossible
 * even where no lock is shared (two overlapping pools, foreign marks): an
 * insert that finds the address taken changes nothing, and the pick is
 * asked again with that address counted.
 * Lock order inside a creation: VMID, then the pools by name, then the
 * owner's quota.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <stdlib.h>

/* A pool's allocated keys: every row of the pool except quarantines that
 * have run out (those are free and are taken over in place). */
static const char SQL_ADDR_ALLOCATED[] =
    "SELECT addr FROM addr_alloc WHERE pool = ?1"
    " AND NOT (state = 'quarantine' AND until <= ?2) ORDER BY addr";
static const char SQL_ADDR_CURSOR[] = "SELECT addr FROM addr_cursor WHERE pool = ?1";
static const char SQL_ADDR_CURSOR_SET[] = "INSERT INTO addr_cursor (pool, addr) VALUES (?1, ?2)"
                                          " ON CONFLICT (pool) DO UPDATE SET addr = excluded.addr";
static const char SQL_ADDR_TAKE[] =
    "INSERT INTO addr_alloc (addr, pool, state, job, vm_id, vmid, until, note, updated_at)"
    " VALUES (?1, ?2, 'reserved', ?3, 0, 0, 0, '', ?4)"
    " ON CONFLICT (addr) DO UPDATE SET pool = excluded.pool, state = 'reserved',"
    "   job = excluded.job, vm_id = 0, vmid = 0, until = 0, note = '',"
    "   updated_at = excluded.updated_at"
    " WHERE addr_alloc.state = 'quarantine' AND addr_alloc.until <= ?4";
static const char SQL_ADDR_BIND[] =
    "UPDATE addr_alloc SET state = 'used', vm_id = ?2, vmid = ?3, updated_at = ?4"
    " WHERE job = ?1 AND state = 'reserved'";

/* A pick that keeps choosing taken addresses (rows of other pools or
 * foreign ones inside this pool's range) gives up after this many. */
#define PICK_TRIES 4096

bool store_addr_key_ok(const char *k)
{
    if (!k || (k[0] != '4' && k[0] != '6') || strlen(k) != STORE_ADDR_KEY - 1)
        return false;
    for (size_t i = 1; i < STORE_ADDR_KEY - 1; i++)
        if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
            return false;
    return true;
}

static int addr_fail(struct store_error *err, enum store_err code, const char *field,
                     const char *pool, const char *fmt, const char *arg)
{
    int rc = store_fail(err, code, fmt, arg);
    if (err) {
        snprintf(err->field, sizeof err->field, "%s", field);
        snprintf(err->pool, sizeof err->pool, "%s", pool);
    }
    return rc;
}

int store_addr_check_reqs(const struct store_addr_req *reqs, size_t n, struct store_error *err)
{
    STORE_CHECK(reqs || n == 0, "address requests are NULL");
    /* one address per family and NIC; the reservation sorts them on the stack */
    STORE_CHECK(n <= STORE_ADDR_MAX_REQS, "%zu addresses requested, at most %d", n,
                STORE_ADDR_MAX_REQS);
    for (size_t i = 0; i < n; i++) {
        const struct store_addr_req *r = &reqs[i];
        STORE_CHECK(r->pool && *r->pool && strlen(r->pool) < 64,
                    "address request %zu: pool name empty or longer than 63", i);
        STORE_CHECK(r->want || r->pick, "address request for pool %s: neither want nor pick",
                    r->pool);
        STORE_CHECK(!r->want || store_addr_key_ok(r->want),
                    "address request for pool %s: '%.40s' is not an address key", r->pool, r->want);
    }
    return STORE_OK;
}

/* The pool's allocated keys, ascending, as a NULL-free array of strings
 * (*keys and each string owned: keys_free). */
static void keys_free(char **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

static int allocated_in(db_conn *c, const char *pool, int64_t now, char ***keys, size_t *n,
                        struct store_error *err)
{
    db_stmt *st = NULL;
    size_t cap = 0;
    *keys = NULL;
    *n = 0;
    int rc = db_prepare(c, SQL_ADDR_ALLOCATED, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, pool);
    db_bind_i64(st, 2, now);
    for (bool row = true; rc == STORE_OK;) {
        rc = db_step(st, &row, err, "reading the pool's addresses");
        if (rc || !row)
            break;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *keys = xrealloc(*keys, cap * sizeof **keys);
        }
        const char *k = db_col_text(st, 0);
        (*keys)[(*n)++] = xstrdup(k ? k : "");
    }
    db_done(st);
    return rc;
}

/* Insert `key` in the sorted array (a taken address the pick did not know). */
static void keys_insert(char ***keys, size_t *n, const char *key)
{
    size_t at = 0;
    while (at < *n && strcmp((*keys)[at], key) < 0)
        at++;
    *keys = xrealloc(*keys, (*n + 1) * sizeof **keys);
    memmove(*keys + at + 1, *keys + at, (*n - at) * sizeof **keys);
    (*keys)[at] = xstrdup(key);
    (*n)++;
}

static int cursor_in(db_conn *c, const char *pool, char out[STORE_ADDR_KEY],
                     struct store_error *err)
{
    db_stmt *st = NULL;
    out[0] = '\0';
    int rc = db_prepare(c, SQL_ADDR_CURSOR, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, pool);
    bool row = false;
    rc = db_step(st, &row, err, "reading the pool's cursor");
    if (rc == STORE_OK && row)
        db_col_copy(st, 0, out, STORE_ADDR_KEY);
    db_done(st);
    return rc;
}

/* Insert the reservation; *taken when the address is someone's already. */
static int take_in(db_conn *c, const char *key, const char *pool, const char *job, int64_t now,
                   bool *taken, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_ADDR_TAKE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, key);
    db_bind_text(st, 2, pool);
    db_bind_text(st, 3, job);
    db_bind_i64(st, 4, now);
    rc = db_run(st, err, "reserving an address");
    *taken = rc == STORE_OK && db_changes(st) != 1;
    db_done(st);
    return rc;
}

static int set_cursor_in(db_conn *c, const char *pool, const char *key, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_ADDR_CURSOR_SET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, pool);
    db_bind_text(st, 2, key);
    rc = db_run(st, err, "moving the pool's cursor");
    db_done(st);
    return rc;
}

static int full(struct store_error *err, const char *pool)
{
    return addr_fail(err, STORE_E_FULL, "ippool", pool, "no free address in pool %s", pool);
}

/* One request, its pool locked: the wanted address, or the pick's. */
static int reserve_one(db_conn *c, const char *job, struct store_addr_req *r, int64_t now,
                       struct store_error *err)
{
    bool taken = false;
    r->got[0] = '\0';
    if (r->want) {
        int rc = take_in(c, r->want, r->pool, job, now, &taken, err);
        if (rc == STORE_OK && taken)
            return addr_fail(err, STORE_E_CONFLICT, "address", r->pool, "address %s is taken",
                             r->want);
        if (rc == STORE_OK)
            snprintf(r->got, sizeof r->got, "%s", r->want);
        return rc;
    }
    char **keys = NULL, cursor[STORE_ADDR_KEY];
    size_t n = 0;
    int rc = allocated_in(c, r->pool, now, &keys, &n, err);
    if (rc == STORE_OK)
        rc = cursor_in(c, r->pool, cursor, err);
    for (int tries = 0; rc == STORE_OK; tries++) {
        char out[STORE_ADDR_KEY] = "";
        int prc = r->pick(r->ctx, (const char *const *)keys, n, cursor, out);
        if (prc == STORE_E_FULL || (prc == STORE_OK && tries >= PICK_TRIES)) {
            rc = full(err, r->pool);
            break;
        }
        if (prc != STORE_OK || !store_addr_key_ok(out)) {
            rc = store_fail(err, STORE_E_INVALID, "pool %s: the pick failed (%d, '%.40s')", r->pool,
                            prc, out);
            break;
        }
        if ((rc = take_in(c, out, r->pool, job, now, &taken, err)))
            break;
        if (!taken) {
            snprintf(r->got, sizeof r->got, "%s", out);
            rc = set_cursor_in(c, r->pool, out, err);
            break;
        }
        keys_insert(&keys, &n, out); /* another pool's, or foreign: ask again */
    }
    keys_free(keys, n);
    return rc;
}

int store_addr_reserve_in(db_conn *c, const char *job, struct store_addr_req *reqs, size_t n,
                          struct store_error *err)
{
    /* pools in name order, so two reservations never wait on each other
     * in a cycle; n is one or two (v4, v6) */
    size_t order[n ? n : 1];
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        for (; j > 0 && strcmp(reqs[order[j - 1]].pool, reqs[i].pool) > 0; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    int64_t now = wall_ms();
    int rc = STORE_OK;
    for (size_t k = 0; rc == STORE_OK && k < n; k++) {
        struct store_addr_req *r = &reqs[order[k]];
        if (k == 0 || strcmp(reqs[order[k - 1]].pool, r->pool) != 0)
            rc = db_lock(c, DB_LOCK_ADDR, r->pool, err);
        if (rc == STORE_OK)
            rc = reserve_one(c, job, r, now, err);
    }
    return rc;
}

int store_addr_bind_in(db_conn *c, const char *job, int64_t vm_id, int vmid, int64_t *bound,
                       struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_ADDR_BIND, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, job);
    db_bind_i64(st, 2, vm_id);
    db_bind_i64(st, 3, vmid);
    db_bind_i64(st, 4, wall_ms());
    rc = db_run(st, err, "binding addresses to the VM record");
    *bound = rc == STORE_OK ? db_changes(st) : 0;
    db_done(st);
    return rc;
}

struct reserve_ctx {
    const char *job;
    struct store_addr_req *reqs;
    size_t n;
    int64_t vm_id;
    int vmid;
};

static int reserve_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct reserve_ctx *k = ctx;
    return store_addr_reserve_in(c, k->job, k->reqs, k->n, err);
}

int store_addr_reserve(store *s, const char *job, struct store_addr_req *reqs, size_t n,
                       struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job, "store_addr_reserve: NULL or empty argument");
    STORE_CHECK(n > 0, "no address requested");
    int rc = store_addr_check_reqs(reqs, n, err);
    if (rc)
        return rc;
    struct reserve_ctx k = {job, reqs, n, 0, 0};
    return db_tx(s->db, DB_WRITE, reserve_fn, &k, err);
}

static int bind_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct reserve_ctx *k = ctx;
    int64_t bound = 0;
    int rc = store_addr_bind_in(c, k->job, k->vm_id, k->vmid, &bound, err);
    if (rc == STORE_OK && bound == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "job %s holds no reserved address", k->job);
    return rc;
}

int store_addr_bind_job(store *s, const char *job, int64_t vm_id, int vmid, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && *job, "store_addr_bind_job: NULL or empty argument");
    STORE_CHECK(vm_id > 0, "VM record id %lld is invalid", (long long)vm_id);
    struct reserve_ctx k = {job, NULL, 0, vm_id, vmid};
    return db_tx(s->db, DB_WRITE, bind_fn, &k, err);
}

/* ---- a record's network identity ----------------------------------------------- */

static const char SQL_NET_INSERT[] =
    "INSERT INTO vm_net (vm_id, mac, bridge, vlan, ipconfig0, nameserver, searchdomain, live)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)";
static const char SQL_NET_GET[] = "SELECT mac, bridge, vlan, ipconfig0, nameserver, searchdomain,"
                                  " seen_at FROM vm_net WHERE vm_id = ?1";

int store_vm_net_insert_in(db_conn *c, int64_t vm_id, const struct store_net *net,
                           struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_NET_INSERT, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, vm_id);
    DB_BIND_FIELD(st, 2, net->mac);
    DB_BIND_FIELD(st, 3, net->bridge);
    db_bind_i64(st, 4, net->vlan);
    DB_BIND_FIELD(st, 5, net->ipconfig0);
    DB_BIND_FIELD(st, 6, net->nameserver);
    DB_BIND_FIELD(st, 7, net->searchdomain);
    rc = db_run(st, err, "recording the VM's network");
    db_done(st);
    if (rc == STORE_E_CONFLICT && err) /* the only unique key left is the MAC */
        snprintf(err->field, sizeof err->field, "mac");
    return rc;
}

struct net_ctx {
    int64_t vm_id;
    struct store_net *out;
};

static int net_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct net_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_NET_GET, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vm_id);
    bool row = false;
    rc = db_step(st, &row, err, "reading the VM's network");
    if (rc == STORE_OK && !row)
        rc =
            store_fail(err, STORE_E_NOTFOUND, "VM record %lld has no network", (long long)k->vm_id);
    if (rc == STORE_OK) {
        DB_COL_FIELD(st, 0, k->out->mac);
        DB_COL_FIELD(st, 1, k->out->bridge);
        k->out->vlan = (int)db_col_i64(st, 2);
        DB_COL_FIELD(st, 3, k->out->ipconfig0);
        DB_COL_FIELD(st, 4, k->out->nameserver);
        DB_COL_FIELD(st, 5, k->out->searchdomain);
        k->out->seen_at = db_col_i64(st, 6);
    }
    db_done(st);
    return rc;
}

int store_vm_net_get(store *s, int64_t vm_id, struct store_net *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out, "store_vm_net_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct net_ctx k = {vm_id, out};
    return db_tx(s->db, DB_READ, net_get_fn, &k, err);
}

/* The ids go as one JSON array parameter ({IN_IDS_1}: the array's members
 * on SQLite, an array of them on PostgreSQL): one statement, prepared once,
 * whatever the page's size. */
static const char SQL_NET_IDS[] =
    "SELECT vm_id, mac, bridge, vlan, ipconfig0, nameserver, searchdomain, seen_at FROM vm_net"
    " WHERE vm_id{IN_IDS_1} ORDER BY vm_id";

static void bind_ids(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, buf_str(arg));
}

static int row_net(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct store_vm_net *o = elem;
    o->vm_id = db_col_i64(st, 0);
    DB_COL_FIELD(st, 1, o->net.mac);
    DB_COL_FIELD(st, 2, o->net.bridge);
    o->net.vlan = (int)db_col_i64(st, 3);
    DB_COL_FIELD(st, 4, o->net.ipconfig0);
    DB_COL_FIELD(st, 5, o->net.nameserver);
    DB_COL_FIELD(st, 6, o->net.searchdomain);
    o->net.seen_at = db_col_i64(st, 7);
    return STORE_OK;
}

int store_vm_net_ids(store *s, const int64_t *ids, size_t nids, struct store_vm_net **out,
                     size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n && (ids || nids == 0), "store_vm_net_ids: NULL argument");
    STORE_CHECK(nids <= STORE_NET_IDS_MAX, "store_vm_net_ids: %zu ids (at most %d)", nids,
                STORE_NET_IDS_MAX);
    *out = NULL;
    *n = 0;
    if (nids == 0)
        return STORE_OK;
    struct buf list = BUF_INIT(BUF_UNLIMITED);
    buf_addc(&list, '[');
    for (size_t i = 0; i < nids; i++)
        buf_printf(&list, "%s%lld", i ? "," : "", (long long)ids[i]);
    buf_addc(&list, ']');
    const struct store_read rd = {SQL_NET_IDS, "reading VM networks", bind_ids,
                                  &list,       sizeof **out,          row_net};
    int rc = store_read_all(s, &rd, (void **)out, n, err);
    buf_release(&list);
    return rc;
}

static const char SQL_VM_POOLS[] =
    "SELECT DISTINCT pool FROM addr_alloc WHERE vm_id = ?1 AND state = 'used' ORDER BY pool";

static void bind_vm_id(db_stmt *st, const void *arg)
{
    db_bind_i64(st, 1, *(const int64_t *)arg);
}

static int row_pool(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct store_pool_name *o = elem;
    DB_COL_FIELD(st, 0, o->name);
    return STORE_OK;
}

int store_addr_vm_pools(store *s, int64_t vm_id, struct store_pool_name **out, size_t *n,
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_addr_vm_pools: NULL argument");
    const struct store_read rd = {SQL_VM_POOLS, "reading a VM's pools", bind_vm_id,
                                  &vm_id,       sizeof **out,           row_pool};
    return store_read_all(s, &rd, (void **)out, n, err);
}

static const char SQL_NET_SEEN[] = "UPDATE vm_net SET seen = ?2, seen_at = ?3 WHERE vm_id = ?1";
static const char SQL_NET_SEEN_GET[] = "SELECT seen FROM vm_net WHERE vm_id = ?1";

struct seen_ctx {
    int64_t vm_id;
    const json_t *seen;
    json_t *out;
};

static int net_seen_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct seen_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_NET_SEEN, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vm_id);
    db_bind_json(st, 2, k->seen);
    db_bind_i64(st, 3, wall_ms());
    rc = db_run(st, err, "recording what the guest agent saw");
    if (rc == STORE_OK && db_changes(st) == 0)
        rc =
            store_fail(err, STORE_E_NOTFOUND, "VM record %lld has no network", (long long)k->vm_id);
    db_done(st);
    return rc;
}

int store_vm_net_seen(store *s, int64_t vm_id, const json_t *seen, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && seen, "store_vm_net_seen: NULL argument");
    struct seen_ctx k = {vm_id, seen, NULL};
    return db_tx(s->db, DB_WRITE, net_seen_fn, &k, err);
}

static int net_seen_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct seen_ctx *k = ctx;
    db_stmt *st = NULL;
    json_decref(k->out); /* a retry reads again */
    k->out = NULL;
    int rc = db_prepare(c, SQL_NET_SEEN_GET, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vm_id);
    bool row = false;
    rc = db_step(st, &row, err, "reading what the guest agent saw");
    if (rc == STORE_OK && !row)
        rc =
            store_fail(err, STORE_E_NOTFOUND, "VM record %lld has no network", (long long)k->vm_id);
    if (rc == STORE_OK)
        rc = db_col_json(st, 0, &k->out, "vm_net.seen", err);
    db_done(st);
    return rc;
}

int store_vm_net_seen_get(store *s, int64_t vm_id, json_t **seen, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && seen, "store_vm_net_seen_get: NULL argument");
    *seen = NULL;
    struct seen_ctx k = {vm_id, NULL, NULL};
    int rc = db_tx(s->db, DB_READ, net_seen_get_fn, &k, err);
    if (rc == STORE_OK)
        *seen = k.out;
    else
        json_decref(k.out);
    return rc;
}

/* ---- a request that goes on under another record ---------------------------------- */

static const char SQL_REBIND_ADDR[] = "UPDATE addr_alloc SET vm_id = ?2, vmid = ?3, updated_at = ?4"
                                      " WHERE vm_id = ?1 AND state = 'used'";
static const char SQL_REBIND_NET[] = "UPDATE vm_net SET vm_id = ?2 WHERE vm_id = ?1";

int store_addr_rebind_in(db_conn *c, int64_t old_vm_id, int64_t new_vm_id, int new_vmid,
                         struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_REBIND_ADDR, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, old_vm_id);
    db_bind_i64(st, 2, new_vm_id);
    db_bind_i64(st, 3, new_vmid);
    db_bind_i64(st, 4, wall_ms());
    rc = db_run(st, err, "moving addresses to the new record");
    db_done(st);
    if (rc || (rc = db_prepare(c, SQL_REBIND_NET, &st, err)))
        return rc;
    db_bind_i64(st, 1, old_vm_id);
    db_bind_i64(st, 2, new_vm_id);
    rc = db_run(st, err, "moving the network to the new record");
    db_done(st);
    return rc;
}

struct rebind_ctx {
    int64_t from, to;
    int vmid;
};

static int rebind_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct rebind_ctx *k = ctx;
    return store_addr_rebind_in(c, k->from, k->to, k->vmid, err);
}

int store_addr_rebind(store *s, int64_t old_vm_id, int64_t new_vm_id, int new_vmid,
                      struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && old_vm_id > 0 && new_vm_id > 0 && old_vm_id != new_vm_id,
                "store_addr_rebind: NULL store or bad record ids");
    STORE_CHECK(new_vmid >= STORE_VMID_MIN && new_vmid <= STORE_VMID_MAX, "VMID %d out of range",
                new_vmid);
    struct rebind_ctx k = {old_vm_id, new_vm_id, new_vmid};
    return db_tx(s->db, DB_WRITE, rebind_fn, &k, err);
}
