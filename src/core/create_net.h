/* create_net: the network identity of a new VM (docs/design/ippool.md
 * section 4): its pools' plans as they stand now (the configured ranges
 * and those added at run time), one store_addr_req per pool whose pick
 * runs ippool_pick under the pool's lock, a random MAC, and the vm_net row
 * that the creation's store transaction writes. Internal to src/core/.
 *
 * Ownership: a cnet is the caller's (on the stack is fine, it is a few
 * KiB); cnet_release frees what cnet_prepare allocated. Not shared
 * between threads. */
#ifndef CORE_CREATE_NET_H
#define CORE_CREATE_NET_H

#include "core/core_int.h"
#include "core/validate.h"

/* What one pool's pick sees besides the store's keys. */
struct cnet_pick {
    const struct ippool *plan;
    const struct ippool_addr *inv;
    size_t ninv;
};

struct cnet {
    int n; /* pools; 0: the VM gets no managed address */
    const struct cfg_ippool *pool[CFG_OS_POOLS];
    struct ippool plan[CFG_OS_POOLS];      /* configured + run-time ranges */
    struct ippool_addr *inv[CFG_OS_POOLS]; /* addresses the inventory sees in the pool (sorted) */
    size_t ninv[CFG_OS_POOLS];
    char want[CFG_OS_POOLS][IPPOOL_KEYLEN]; /* "" or the asked address's key */
    struct cnet_pick pick[CFG_OS_POOLS];
    struct store_addr_req req[CFG_OS_POOLS];
    struct store_net net; /* mac, bridge, vlan, nameserver, searchdomain */
};

/* The request's pools (validated), their plans read now, the asked
 * addresses checked against them (CORE_E_INVALID naming "addresses.POOL"),
 * the requests and a fresh MAC. CORE_OK with n == 0 when there is no pool. */
int cnet_prepare(struct core *k, const struct vm_request *r, struct cnet *n,
                 struct core_error *err);
/* Another MAC (the last one was a live record's). */
void cnet_new_mac(struct cnet *n);
/* store_submit.net_fill: ipconfig0 from the reserved addresses. */
void cnet_fill(void *ctx, const struct store_addr_req *reqs, size_t nreqs, struct store_net *net);
void cnet_release(struct cnet *n);

/* Whether every pool in names[0..n) is reachable on node cn; when not,
 * why ("pool lan is not reachable on sv3"). Unknown pools are not. */
bool cnet_reachable(const struct proxd_config *c, const char (*names)[32], int n,
                    const struct cfg_node *cn, char *why, size_t len);

/* The quarantine times of released addresses: each pool's, and
 * [proxd] quarantine for pools no longer configured; q has room for
 * CFG_MAX_POOLS + 1 entries (names borrowed from c). */
size_t cnet_quarantine(const struct proxd_config *c, struct store_addr_quarantine *q);

#endif
