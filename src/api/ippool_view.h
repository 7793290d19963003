/* ippool_view: a pool as the API and /metrics show it — the configured plan
 * merged with the ranges added at run time, and its figures from the store.
 * Internal to src/api/. Reads the store; never waits on Proxmox. */
#ifndef API_IPPOOL_VIEW_H
#define API_IPPOOL_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "store/store.h"

struct ippool_figures {
    struct store_addr_counts c;
    int64_t foreign;     /* foreign addresses seen in the pool's CIDR */
    uint64_t size, free; /* of the merged plan, saturated */
};

/* The pool's plan with its run-time ranges merged in (out is prepared);
 * 0, or -1 with se filled when the store does not answer. */
int ippool_view_plan(store *st, const struct cfg_ippool *p, struct ippool *out,
                     struct store_error *se);
int ippool_view_figures(store *st, const struct cfg_ippool *p, struct ippool_figures *out,
                        struct store_error *se);

/* The key just before key ("" before a family's first address): a
 * store_addr_list `after` that starts at key itself. */
void ippool_view_key_before(const char *key, char out[IPPOOL_KEYLEN]);

#endif
