/* snapshot_cache: what this instance knows of each VM's snapshots (the
 * lists its jobs read, CACHE_MAX VMs, the least recently read go first),
 * the module's counters, the per-owner creation locks and the sync pass's
 * cursor. One mutex guards it all; it is made on first use. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/snapshot_int.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX 4096 /* VMs whose lists are kept (the least recent go) */
#define OWNER_STRIPES 64

struct centry {
    int vmid;
    int64_t at; /* unix ms of the read */
    struct snap_info *s;
    size_t n;
};

struct snapcache {
    pthread_mutex_t mu;
    struct centry e[CACHE_MAX];
    size_t n;
    int64_t cursor; /* sync: the last record id read */
    bool primed;    /* sync: the first reconcile pass after start went by */
    struct snap_stats stats;
    pthread_mutex_t owners[OWNER_STRIPES]; /* count-and-create per owner */
};

static struct snapcache *snap_cache(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    if (!k->snaps) {
        struct snapcache *c = xcalloc(1, sizeof *c);
        pthread_mutex_init(&c->mu, NULL);
        for (int i = 0; i < OWNER_STRIPES; i++)
            pthread_mutex_init(&c->owners[i], NULL);
        k->snaps = c;
    }
    struct snapcache *c = k->snaps;
    pthread_mutex_unlock(&k->mu);
    return c;
}

void snap_cache_free(struct core *k)
{
    struct snapcache *c = k->snaps;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->e[i].s);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < OWNER_STRIPES; i++)
        pthread_mutex_destroy(&c->owners[i]);
    free(c);
    k->snaps = NULL;
}

static struct centry *cfind(struct snapcache *c, int vmid)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].vmid == vmid)
            return &c->e[i];
    return NULL;
}

/* A copy of the cached list (*s NULL and false when none). */
bool snap_cache_get(struct core *k, int vmid, struct snap_info **s, size_t *n, int64_t *at)
{
    struct snapcache *c = snap_cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    *s = NULL;
    *n = 0;
    if (e) {
        *s = xcalloc(e->n + 1, sizeof **s);
        memcpy(*s, e->s, e->n * sizeof **s);
        *n = e->n;
        *at = e->at;
    }
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

static bool is_own(const char *own, const char *name)
{
    return own && strcmp(own, name) == 0;
}

void snap_cache_put(struct core *k, int vmid, const struct snap_info *s, size_t n, const char *own)
{
    struct snapcache *c = snap_cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    if (e) {
        for (size_t i = 0; i < e->n; i++) {
            if (is_own(own, e->s[i].name))
                continue;
            bool still = false;
            for (size_t j = 0; j < n && !still; j++)
                still = strcmp(e->s[i].name, s[j].name) == 0;
            if (!still) {
                c->stats.removed_outside++;
                log_warn("snapshot", "vmid=%d snapshot '%s' was removed outside proxd", vmid,
                         e->s[i].name);
            }
        }
        for (size_t j = 0; j < n; j++) {
            if (is_own(own, s[j].name))
                continue;
            bool known = false;
            for (size_t i = 0; i < e->n && !known; i++)
                known = strcmp(e->s[i].name, s[j].name) == 0;
            if (!known) {
                c->stats.added_outside++;
                log_warn("snapshot", "vmid=%d snapshot '%s' was made outside proxd", vmid,
                         s[j].name);
            }
        }
    }
    if (!e) {
        if (c->n == CACHE_MAX) { /* the least recently read goes */
            size_t old = 0;
            for (size_t i = 1; i < c->n; i++)
                if (c->e[i].at < c->e[old].at)
                    old = i;
            free(c->e[old].s);
            c->e[old] = c->e[--c->n];
        }
        e = &c->e[c->n++];
        e->vmid = vmid;
        e->s = NULL;
    }
    free(e->s);
    e->s = xcalloc(n + 1, sizeof *s);
    memcpy(e->s, s, n * sizeof *s);
    e->n = n;
    e->at = wall_ms();
    pthread_mutex_unlock(&c->mu);
}

void snap_cache_drop(struct core *k, int vmid)
{
    struct snapcache *c = snap_cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    if (e) {
        free(e->s);
        *e = c->e[--c->n];
    }
    pthread_mutex_unlock(&c->mu);
}

void core_snap_stats(struct core *k, struct snap_stats *out)
{
    struct snapcache *c = snap_cache(k);
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

void snap_count(struct core *k, enum snap_stat which)
{
    struct snapcache *c = snap_cache(k);
    pthread_mutex_lock(&c->mu);
    switch (which) {
    case SNAP_ST_LIMIT:
        c->stats.limit_refusals++;
        break;
    case SNAP_ST_RETENTION:
        c->stats.retention++;
        break;
    case SNAP_ST_SYNCED:
        c->stats.synced++;
        break;
    }
    pthread_mutex_unlock(&c->mu);
}

pthread_mutex_t *snap_owner_lock(struct core *k, const char *owner)
{
    unsigned h = 5381;
    for (const char *p = owner; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return &snap_cache(k)->owners[h % OWNER_STRIPES];
}

bool snap_sync_cursor(struct core *k, int64_t *after)
{
    struct snapcache *sc = snap_cache(k);
    pthread_mutex_lock(&sc->mu);
    *after = sc->cursor;
    bool primed = sc->primed;
    sc->primed = true;
    pthread_mutex_unlock(&sc->mu);
    return primed;
}

void snap_sync_advance(struct core *k, int64_t last)
{
    struct snapcache *sc = snap_cache(k);
    pthread_mutex_lock(&sc->mu);
    sc->cursor = last;
    pthread_mutex_unlock(&sc->mu);
}
