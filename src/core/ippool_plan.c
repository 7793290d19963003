/* ippool_plan: see ippool_plan.h. */
#include "core/ippool_plan.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* rs's range clipped to the pool's CIDR; false when nothing of it is in
 * the CIDR (a CIDR changed in the configuration since it was added) or it
 * is not an address range at all. */
static bool clipped(const struct ippool *plan, const struct store_addr_range *rs,
                    struct ippool_range *out)
{
    struct ippool_range whole;
    ippool_net_bounds(&plan->net, &whole);
    if (ippool_addr_from_key(rs->first, &out->lo) || ippool_addr_from_key(rs->last, &out->hi) ||
        out->lo.family != whole.lo.family || out->hi.family != whole.lo.family ||
        ippool_addr_cmp(&out->lo, &out->hi) > 0 || ippool_addr_cmp(&out->hi, &whole.lo) < 0 ||
        ippool_addr_cmp(&out->lo, &whole.hi) > 0)
        return false;
    if (ippool_addr_cmp(&out->lo, &whole.lo) < 0)
        out->lo = whole.lo;
    if (ippool_addr_cmp(&out->hi, &whole.hi) > 0)
        out->hi = whole.hi;
    return true;
}

/* The configured plan plus the run-time reservations and, when
 * with_ranges, the run-time hand-out ranges; IPPOOL_OK or why not. */
static enum ippool_err merge(const struct cfg_ippool *p, const struct store_addr_range *rs,
                             size_t n, bool with_ranges, struct ippool *out,
                             struct ippool_errinfo *e)
{
    *out = p->plan;
    for (size_t i = 0; i < n; i++) {
        struct ippool_range r;
        if (!clipped(&p->plan, &rs[i], &r))
            continue;
        if (strcmp(rs[i].kind, "reserved") == 0) {
            if (out->nreserved == IPPOOL_MAX_RESERVED) {
                snprintf(e->field, sizeof e->field, "reserved");
                snprintf(e->msg, sizeof e->msg, "more than %d reserved ranges in all",
                         IPPOOL_MAX_RESERVED);
                return IPPOOL_ETOOMANY;
            }
            out->reserved[out->nreserved++] = r;
        } else if (with_ranges && p->plan.nranges > 0) {
            if (out->nranges == IPPOOL_MAX_RANGES) {
                snprintf(e->field, sizeof e->field, "ranges");
                snprintf(e->msg, sizeof e->msg, "more than %d hand-out ranges in all",
                         IPPOOL_MAX_RANGES);
                return IPPOOL_ETOOMANY;
            }
            out->ranges[out->nranges++] = r;
        }
    }
    return ippool_prepare(out, e);
}

enum ippool_plan_state ippool_plan_build(const struct cfg_ippool *p,
                                         const struct store_addr_range *rs, size_t n,
                                         struct ippool *out, struct ippool_errinfo *e,
                                         enum ippool_err *code)
{
    enum ippool_err unused;
    if (!code)
        code = &unused;
    memset(e, 0, sizeof *e);
    if ((*code = merge(p, rs, n, true, out, e)) == IPPOOL_OK)
        return IPPOOL_PLAN_OK;
    /* The added ranges only add addresses: without them the pool is
     * smaller, never wrong. The reservations must stay whatever else
     * fails, or a reserved address would be handed out. */
    struct ippool_errinfo e2 = {0};
    enum ippool_err c2 = merge(p, rs, n, false, out, &e2);
    if (c2 == IPPOOL_OK)
        return IPPOOL_PLAN_NORANGES;
    *e = e2;
    *code = c2;
    *out = p->plan;
    out->nsegs = 0;
    out->size = 0;
    return IPPOOL_PLAN_CLOSED;
}
