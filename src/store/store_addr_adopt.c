/* store_addr_adopt: a VM of proxd's takes over the addresses someone put
 * in its config ([proxd] network_drift = adopt; store.h). One transaction:
 * what it keeps stays, what it gives up goes to quarantine, what it takes
 * is reserved under the pools' locks exactly as a creation's wanted address
 * (so nothing another VM, a hold or a foreign VM has is ever taken), and its
 * vm_net row says the new values. Any refusal writes nothing. */
#include "store/store_int.h"

#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_VM_ROWS[] =
    "SELECT addr, pool FROM addr_alloc WHERE vm_id = ?1 AND state = 'used' ORDER BY addr";
static const char SQL_GIVE_UP[] =
    "UPDATE addr_alloc SET state = 'quarantine', vm_id = 0, job = '', until = ?3,"
    " updated_at = ?4 WHERE addr = ?1 AND vm_id = ?2 AND state = 'used'";
static const char SQL_NET_SET[] = "UPDATE vm_net SET mac = ?2, bridge = ?3, vlan = ?4,"
                                  " ipconfig0 = ?5, seen = NULL, seen_at = 0 WHERE vm_id = ?1";

struct adopt_ctx {
    int64_t vm_id;
    int vmid;
    struct store_addr_req *reqs;
    size_t n;
    const struct store_net *net;
    const struct store_addr_quarantine *q;
    size_t nq;
};

struct row {
    char addr[STORE_ADDR_KEY];
    char pool[64];
};

static int64_t q_of(const struct adopt_ctx *k, const char *pool)
{
    int64_t other = 0;
    for (size_t i = 0; i < k->nq; i++) {
        if (!k->q[i].pool)
            other = k->q[i].ms;
        else if (strcmp(k->q[i].pool, pool) == 0)
            return k->q[i].ms;
    }
    return other;
}

static int vm_rows(db_conn *c, int64_t vm_id, struct row *out, size_t max, size_t *n,
                   struct store_error *err)
{
    db_stmt *st = NULL;
    *n = 0;
    int rc = db_prepare(c, SQL_VM_ROWS, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, vm_id);
    bool row = false;
    while ((rc = db_step(st, &row, err, "reading the VM's addresses")) == STORE_OK && row)
        if (*n < max) {
            DB_COL_FIELD(st, 0, out[*n].addr);
            DB_COL_FIELD(st, 1, out[*n].pool);
            (*n)++;
        }
    db_done(st);
    return rc;
}

static int give_up(db_conn *c, const struct adopt_ctx *k, const struct row *r, int64_t now,
                   struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_GIVE_UP, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, r->addr);
    db_bind_i64(st, 2, k->vm_id);
    db_bind_i64(st, 3, now + q_of(k, r->pool));
    db_bind_i64(st, 4, now);
    rc = db_run(st, err, "releasing an address");
    db_done(st);
    return rc;
}

static int net_set(db_conn *c, const struct adopt_ctx *k, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_NET_SET, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vm_id);
    DB_BIND_FIELD(st, 2, k->net->mac);
    DB_BIND_FIELD(st, 3, k->net->bridge);
    db_bind_i64(st, 4, k->net->vlan);
    DB_BIND_FIELD(st, 5, k->net->ipconfig0);
    rc = db_run(st, err, "recording the VM's network");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (rc == STORE_E_CONFLICT && err) /* the MAC of another live record */
        snprintf(err->field, sizeof err->field, "mac");
    if (none)
        rc = store_fail(err, STORE_E_NOTFOUND, "record %lld has no network", (long long)k->vm_id);
    return rc;
}

static int adopt_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct adopt_ctx *k = ctx;
    struct row have[STORE_ADDR_MAX_REQS * 2];
    size_t nh = 0;
    int rc = vm_rows(c, k->vm_id, have, sizeof have / sizeof *have, &nh, err);
    int64_t now = wall_ms();
    /* what it gives up; what it keeps needs no reservation */
    struct store_addr_req take[STORE_ADDR_MAX_REQS];
    size_t nt = 0;
    for (size_t i = 0; rc == STORE_OK && i < nh; i++) {
        bool kept = false;
        for (size_t j = 0; j < k->n && !kept; j++)
            kept = strcmp(k->reqs[j].want, have[i].addr) == 0;
        if (!kept)
            rc = give_up(c, k, &have[i], now, err);
    }
    for (size_t j = 0; rc == STORE_OK && j < k->n; j++) {
        bool had = false;
        for (size_t i = 0; i < nh && !had; i++)
            had = strcmp(k->reqs[j].want, have[i].addr) == 0;
        if (!had)
            take[nt++] = k->reqs[j];
    }
    char job[48];
    snprintf(job, sizeof job, "adopt:%lld", (long long)k->vm_id);
    int64_t bound = 0;
    if (rc == STORE_OK && nt)
        rc = store_addr_reserve_in(c, job, take, nt, err);
    if (rc == STORE_OK && nt)
        rc = store_addr_bind_in(c, job, k->vm_id, k->vmid, &bound, err);
    if (rc == STORE_OK)
        rc = net_set(c, k, err);
    return rc;
}

int store_addr_adopt(store *s, int64_t vm_id, int vmid, struct store_addr_req *reqs, size_t n,
                     const struct store_net *net, const struct store_addr_quarantine *q, size_t nq,
                     struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && vm_id > 0 && net && (reqs || n == 0), "store_addr_adopt: bad argument");
    STORE_CHECK(n <= STORE_ADDR_MAX_REQS, "at most %d addresses", STORE_ADDR_MAX_REQS);
    for (size_t i = 0; i < n; i++)
        STORE_CHECK(reqs[i].pool && reqs[i].want && store_addr_key_ok(reqs[i].want),
                    "request %zu: a pool and a wanted key are needed", i);
    struct adopt_ctx k = {vm_id, vmid, reqs, n, net, q, nq};
    return db_tx(s->db, DB_WRITE, adopt_fn, &k, err);
}
