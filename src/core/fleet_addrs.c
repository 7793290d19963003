/* fleet_addrs: the addresses the config walk saw in VM configs, per pool
 * (fleet.h, "addresses in VM configs"). Its own lock: a pick reads it inside
 * a store transaction and must never wait on the inventory's refresh. */
#include "common/xalloc.h"
#include "core/fleet.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen_pool {
    char name[32];
    bool published;
    struct fleet_addr *a;
    size_t n, cap;
};

struct fleet_seen {
    pthread_mutex_t mu;
    struct seen_pool pools[CFG_MAX_POOLS];
    int npools;
};

struct fleet_seen *fleet_seen_new(void)
{
    struct fleet_seen *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

void fleet_seen_free(struct fleet_seen *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->npools; i++)
        free(s->pools[i].a);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int cmp_fa(const void *x, const void *y)
{
    const struct fleet_addr *a = x, *b = y;
    int c = ippool_addr_cmp(&a->addr, &b->addr);
    return c ? c : (a->vmid > b->vmid) - (a->vmid < b->vmid);
}

/* The pool's slot (made when create and room is left), or NULL; under mu. */
static struct seen_pool *slot(struct fleet_seen *s, const char *pool, bool create)
{
    for (int i = 0; i < s->npools; i++)
        if (strcmp(s->pools[i].name, pool) == 0)
            return &s->pools[i];
    if (!create || s->npools == CFG_MAX_POOLS)
        return NULL;
    struct seen_pool *p = &s->pools[s->npools++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", pool);
    return p;
}

static void grow(struct seen_pool *p, size_t need)
{
    if (need <= p->cap)
        return;
    p->cap = need > p->cap * 2 ? need : p->cap * 2;
    p->a = xrealloc(p->a, p->cap * sizeof *p->a);
}

void fleet_pool_addrs_set(struct fleet *f, const char *pool, const struct fleet_addr *a, size_t n)
{
    struct fleet_seen *s = fleet_seen_of(f);
    pthread_mutex_lock(&s->mu);
    struct seen_pool *p = slot(s, pool, true);
    if (p) {
        grow(p, n);
        if (n)
            memcpy(p->a, a, n * sizeof *a);
        p->n = n;
        if (n)
            qsort(p->a, p->n, sizeof *p->a, cmp_fa);
        p->published = true;
    }
    pthread_mutex_unlock(&s->mu);
}

void fleet_pool_addrs_add(struct fleet *f, const char *pool, const struct fleet_addr *a, size_t n)
{
    struct fleet_seen *s = fleet_seen_of(f);
    pthread_mutex_lock(&s->mu);
    struct seen_pool *p = slot(s, pool, true);
    for (size_t i = 0; p && i < n; i++) {
        /* insertion into the sorted list: a handful per VM read */
        size_t lo = 0, hi = p->n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_fa(&p->a[mid], &a[i]) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < p->n && cmp_fa(&p->a[lo], &a[i]) == 0) {
            p->a[lo] = a[i]; /* the same VM: its node may have changed */
            continue;
        }
        grow(p, p->n + 1);
        memmove(&p->a[lo + 1], &p->a[lo], (p->n - lo) * sizeof *p->a);
        p->a[lo] = a[i];
        p->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

int fleet_pool_addrs(struct fleet *f, const char *pool, struct fleet_addr **out, size_t *n)
{
    struct fleet_seen *s = fleet_seen_of(f);
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    struct seen_pool *p = slot(s, pool, false);
    int rc = p && p->published ? 0 : -1;
    if (p && p->n) {
        *out = xmalloc(p->n * sizeof **out);
        memcpy(*out, p->a, p->n * sizeof **out);
        *n = p->n;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int fleet_pool_taken(struct fleet *f, const char *pool, struct ippool_addr **out, size_t *n)
{
    struct fleet_addr *fa;
    size_t m;
    int rc = fleet_pool_addrs(f, pool, &fa, &m);
    *out = m ? xmalloc(m * sizeof **out) : NULL;
    for (size_t i = 0; i < m; i++)
        (*out)[i] = fa[i].addr;
    *n = m;
    free(fa);
    return rc;
}
