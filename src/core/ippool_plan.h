/* ippool_plan: a pool's plan as it stands — the configured one with the
 * ranges added at run time (POST /v1/ippools/{name}/ranges) merged in. The
 * one builder for the allocator (create_net.c), the API's view of a pool
 * (api/ippool_view.c) and the check of a range before it is added
 * (api/routes_ippool.c), so that what the API shows and accepts is what
 * the allocator hands out.
 *
 * A run-time range that cannot count (a pool left with nothing to hand
 * out, more ranges than IPPOOL_MAX_RANGES or IPPOOL_MAX_RESERVED) never
 * frees a reserved address: the hand-out ranges go first, and when the
 * reservations themselves cannot be applied the pool hands out nothing. */
#ifndef CORE_IPPOOL_PLAN_H
#define CORE_IPPOOL_PLAN_H

#include <stddef.h>

#include "core/config.h"
#include "core/ippool.h"
#include "store/store.h"

enum ippool_plan_state {
    IPPOOL_PLAN_OK = 0,   /* every run-time range counts */
    IPPOOL_PLAN_NORANGES, /* the run-time reservations count, not the added ranges */
    IPPOOL_PLAN_CLOSED,   /* the reservations do not fit: nothing is handed out */
};

/* Pool p's plan with the run-time ranges rs[0..n) merged (a pool without
 * configured ranges hands out its whole CIDR: run-time "ranges" add
 * nothing there; a run-time range is clipped to the CIDR, one outside it
 * counts for nothing). out is prepared in every state (CLOSED: no
 * segment, size 0); when the state is not IPPOOL_PLAN_OK, e and *code
 * (code may be NULL) say why: IPPOOL_ETOOMANY for a cap (field "ranges"
 * or "reserved"), else ippool_prepare's error (IPPOOL_EEMPTY: nothing
 * left to hand out). */
enum ippool_plan_state ippool_plan_build(const struct cfg_ippool *p,
                                         const struct store_addr_range *rs, size_t n,
                                         struct ippool *out, struct ippool_errinfo *e,
                                         enum ippool_err *code);

#endif
