/* ippool_view: see ippool_view.h. */
#include "api/ippool_view.h"

#include "common/xalloc.h"
#include "core/ippool_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ippool_view_key_before(const char *key, char out[IPPOOL_KEYLEN])
{
    snprintf(out, IPPOOL_KEYLEN, "%s", key);
    for (size_t i = strlen(out); i-- > 1;) {
        if (out[i] != '0') {
            out[i] = out[i] == 'a' ? '9' : (char)(out[i] - 1);
            return;
        }
        out[i] = 'f';
    }
    out[0] = '\0'; /* the family's first address: everything before it */
}

static int cmp_addr(const void *a, const void *b)
{
    return ippool_addr_cmp(a, b);
}

/* Append the foreign addresses in [lo, hi] to *t (n, cap). */
static int add_foreign(store *st, const char *lo, const char *hi, struct ippool_addr **t, size_t *n,
                       size_t *cap, int64_t *count, struct store_error *se)
{
    char after[IPPOOL_KEYLEN];
    ippool_view_key_before(lo, after);
    for (;;) {
        struct store_addr *rows = NULL;
        size_t m = 0;
        if (store_addr_list(st, "", "foreign", after, 1000, &rows, &m, se))
            return -1;
        bool past = false;
        for (size_t i = 0; i < m && !past; i++) {
            if ((past = strcmp(rows[i].addr, hi) > 0))
                break;
            if (*n == *cap) {
                *cap = *cap ? *cap * 2 : 64;
                *t = xrealloc(*t, *cap * sizeof **t);
            }
            if (ippool_addr_from_key(rows[i].addr, &(*t)[*n]) == IPPOOL_OK) {
                (*n)++;
                (*count)++;
            }
        }
        if (m)
            snprintf(after, sizeof after, "%s", rows[m - 1].addr);
        free(rows);
        if (past || m < 1000)
            return 0;
    }
}

int ippool_view_plan(store *st, const struct cfg_ippool *p, struct ippool *out,
                     struct store_error *se)
{
    struct store_addr_range *r = NULL;
    size_t n = 0;
    if (store_addr_range_list(st, p->name, &r, &n, se))
        return -1;
    /* the allocator's builder: the view shows what creations hand out */
    struct ippool_errinfo e;
    ippool_plan_build(p, r, n, out, &e, NULL);
    free(r);
    return 0;
}

int ippool_view_figures(store *st, const struct cfg_ippool *p, struct ippool_figures *out,
                        struct store_error *se)
{
    memset(out, 0, sizeof *out);
    struct ippool plan;
    if (ippool_view_plan(st, p, &plan, se) || store_addr_counts(st, p->name, &out->c, se))
        return -1;
    struct ippool_range b;
    ippool_net_bounds(&plan.net, &b);
    char lo[IPPOOL_KEYLEN], hi[IPPOOL_KEYLEN];
    ippool_addr_key(&b.lo, lo);
    ippool_addr_key(&b.hi, hi);
    char(*keys)[STORE_ADDR_KEY] = NULL;
    size_t n = 0;
    if (store_addr_allocated(st, p->name, &keys, &n, se))
        return -1;
    size_t cap = n ? n : 1, m = 0;
    struct ippool_addr *taken = xcalloc(cap, sizeof *taken);
    for (size_t i = 0; i < n; i++)
        if (ippool_addr_from_key(keys[i], &taken[m]) == IPPOOL_OK)
            m++;
    free(keys);
    int rc = add_foreign(st, lo, hi, &taken, &m, &cap, &out->foreign, se);
    if (rc == 0) {
        qsort(taken, m, sizeof *taken, cmp_addr);
        out->size = plan.size;
        out->free = ippool_free(&plan, taken, m);
    }
    free(taken);
    return rc;
}
