/* create_net: a new VM's pools, addresses and MAC (create_net.h). */
#include "core/create_net.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "core/fleet.h"
#include "core/ippool_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The inventory's view of a pool (design section 5: the config walk,
 * fleet_pool_taken()): the addresses seen in VM configs on the pool's
 * nodes, proxd's or not, sorted, so that a pick skips them without a retry
 * through the store (and skips one put on a VM since the walk marked the
 * foreign ones). */
static size_t inventory_addrs(struct core *k, const struct cfg_ippool *p, struct ippool_addr **out)
{
    size_t n = 0;
    fleet_pool_taken(k->fl, p->name, out, &n);
    return n;
}

static int cmp_addr(const void *a, const void *b)
{
    return ippool_addr_cmp(a, b);
}

/* The store's allocated keys merged with the inventory's addresses, then
 * ippool_pick from the cursor. */
static int pick(void *ctx, const char *const *alloc, size_t n, const char *cursor,
                char out[STORE_ADDR_KEY])
{
    const struct cnet_pick *p = ctx;
    struct ippool_addr *taken = xcalloc(n + p->ninv + 1, sizeof *taken);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (ippool_addr_from_key(alloc[i], &taken[m]) == IPPOOL_OK)
            m++;
    for (size_t i = 0; i < p->ninv; i++)
        taken[m++] = p->inv[i];
    if (p->ninv)
        qsort(taken, m, sizeof *taken, cmp_addr);
    struct ippool_addr cur, got;
    bool has_cur = cursor && *cursor && ippool_addr_from_key(cursor, &cur) == IPPOOL_OK;
    enum ippool_err r = ippool_pick(p->plan, taken, m, has_cur ? &cur : NULL, &got);
    free(taken);
    if (r == IPPOOL_EEXHAUSTED)
        return STORE_E_FULL;
    if (r != IPPOOL_OK)
        return STORE_E_INVALID;
    ippool_addr_key(&got, out);
    return STORE_OK;
}

/* The pool's plan with the ranges added at run time (read now, every
 * creation: an admin's POST .../ranges counts at once in every proxd; the
 * table is small), built as the API builds it (ippool_plan.h). Unread, the
 * run-time reservations are unknown: the creation is refused rather than
 * risk handing one out. */
static int plan_now(struct core *k, const struct cfg_ippool *cp, struct ippool *out,
                    struct core_error *err)
{
    struct store_addr_range *rs = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_addr_range_list(k->st, cp->name, &rs, &n, &se))
        return core_fail(err, CORE_E_INTERNAL, NULL, "pool %s: reading its run-time ranges: %s",
                         cp->name, se.message);
    struct ippool_errinfo e;
    enum ippool_plan_state s = ippool_plan_build(cp, rs, n, out, &e, NULL);
    free(rs);
    if (s == IPPOOL_PLAN_NORANGES)
        log_warn("ippool",
                 "pool=%s run-time hand-out ranges not applied (%s: %s): the "
                 "configured ones and every reservation are",
                 cp->name, e.field, e.msg);
    else if (s == IPPOOL_PLAN_CLOSED)
        log_error("ippool",
                  "pool=%s run-time reservations cannot be applied (%s: %s): the pool "
                  "hands out no address until they are fixed",
                  cp->name, e.field, e.msg);
    return CORE_OK;
}

void cnet_new_mac(struct cnet *n)
{
    struct ippool_mac m;
    ippool_mac_random(&m);
    ippool_mac_format(&m, n->net.mac);
}

int cnet_prepare(struct core *k, const struct vm_request *r, struct cnet *n, struct core_error *err)
{
    memset(n, 0, sizeof *n);
    n->n = validate_pools(k->cfg, r, n->pool);
    for (int i = 0; i < n->n; i++) {
        const struct cfg_ippool *cp = n->pool[i];
        if (plan_now(k, cp, &n->plan[i], err))
            return err->code;
        n->ninv[i] = inventory_addrs(k, cp, &n->inv[i]);
        n->pick[i] = (struct cnet_pick){&n->plan[i], n->inv[i], n->ninv[i]};
        n->req[i] = (struct store_addr_req){.pool = cp->name, .pick = pick, .ctx = &n->pick[i]};
        for (int a = 0; a < r->naddrs; a++) {
            if (strcmp(r->addrs[a].pool, cp->name) != 0)
                continue;
            struct ippool_addr ad;
            if (ippool_addr_parse(r->addrs[a].address, &ad) != IPPOOL_OK ||
                !ippool_contains(&n->plan[i], &ad)) {
                err->code = CORE_E_INVALID;
                snprintf(err->field, sizeof err->field, "addresses.%s", cp->name);
                snprintf(err->message, sizeof err->message,
                         "%.47s is not an address pool %s hands out", r->addrs[a].address,
                         cp->name);
                return CORE_E_INVALID;
            }
            ippool_addr_key(&ad, n->want[i]);
            n->req[i].want = n->want[i];
        }
    }
    if (n->n == 0)
        return CORE_OK;
    cnet_new_mac(n);
    snprintf(n->net.bridge, sizeof n->net.bridge, "%s", n->pool[0]->bridge);
    n->net.vlan = n->pool[0]->vlan;
    /* DNS and search domain: the first pool that has them */
    for (int i = 0; i < n->n; i++) {
        if (!n->net.nameserver[0] && n->pool[i]->ndns) {
            struct buf b = BUF_INIT(256);
            ippool_fmt_nameserver(&b, n->pool[i]->dns, n->pool[i]->ndns);
            snprintf(n->net.nameserver, sizeof n->net.nameserver, "%s", buf_str(&b));
            buf_release(&b);
        }
        if (!n->net.searchdomain[0] && n->pool[i]->searchdomain[0])
            snprintf(n->net.searchdomain, sizeof n->net.searchdomain, "%s",
                     n->pool[i]->searchdomain);
    }
    return CORE_OK;
}

void cnet_fill(void *ctx, const struct store_addr_req *reqs, size_t nreqs, struct store_net *net)
{
    const struct cnet *n = ctx;
    struct ippool_lease v4 = {0}, v6 = {0};
    bool has4 = false, has6 = false;
    for (size_t i = 0; i < nreqs && (int)i < n->n; i++) {
        struct ippool_addr a;
        if (ippool_addr_from_key(reqs[i].got, &a) != IPPOOL_OK)
            continue;
        struct ippool_lease *l = a.family == 4 ? &v4 : &v6;
        *l = (struct ippool_lease){&n->plan[i], a};
        if (a.family == 4)
            has4 = true;
        else
            has6 = true;
    }
    struct buf b = BUF_INIT(256);
    ippool_fmt_ipconfig(&b, has4 ? &v4 : NULL, has6 ? &v6 : NULL);
    snprintf(net->ipconfig0, sizeof net->ipconfig0, "%s", buf_str(&b));
    buf_release(&b);
}

void cnet_release(struct cnet *n)
{
    for (int i = 0; i < CFG_OS_POOLS; i++) {
        free(n->inv[i]);
        n->inv[i] = NULL;
    }
}

bool cnet_reachable(const struct proxd_config *c, const char (*names)[32], int n,
                    const struct cfg_node *cn, char *why, size_t len)
{
    for (int i = 0; i < n; i++) {
        const struct cfg_ippool *p = config_ippool(c, names[i]);
        if (!p || !config_ippool_reachable(c, p, cn)) {
            snprintf(why, len, "pool %s is not reachable on %s", names[i], cn->name);
            return false;
        }
    }
    return true;
}

size_t cnet_quarantine(const struct proxd_config *c, struct store_addr_quarantine *q)
{
    size_t n = 0;
    for (int i = 0; i < c->npools; i++)
        q[n++] = (struct store_addr_quarantine){c->pools[i].name, c->pools[i].quarantine_s * 1000};
    q[n++] = (struct store_addr_quarantine){NULL, c->quarantine_s * 1000};
    return n;
}
