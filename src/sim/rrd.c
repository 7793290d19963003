/* rrd: pvestatd's reports, with --pvestatd-cycle S.
 *
 * On a real cluster the stats of GET /cluster/resources and GET /nodes come
 * from the RRD cache in pmxcfs, which each node's pvestatd fills about every
 * 10 s (PVE::API2Tools extract_vm_stats, extract_node_stats): a VM's status,
 * name, template flag, maxcpu, maxmem, maxdisk, mem, disk, uptime, a node's
 * cpu, mem, uptime and sizes, a storage's disk and maxdisk are as of the last
 * report, while the list of VMs (which exist, on which node) and their lock,
 * tags, pool and HA state are read live. A VM no report has seen yet (made
 * seconds ago) is listed as {id, vmid, node, type, status: "unknown"} and
 * those live fields only. pmxcfs keeps an entry until no report has
 * refreshed it for 5 minutes: a VMID destroyed and made again shows the old
 * VM's stats until the next report, and a migrated VM keeps its stats.
 *
 * Here every S PVE seconds (at multiples of S since start) the whole world is
 * reported at once, from sim_advance (on every request and the engine's
 * tick), before the request that finds a cycle due changes anything. Without
 * the option (S = 0) nothing is kept and the stats are live. */
#include "common/xalloc.h"
#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* pmxcfs drops an RRD entry no report refreshed for 5 minutes */
#define RRD_EXPIRE 300.0

static size_t bucket(const struct sim *s, int world, int vmid)
{
    return ((uint32_t)vmid * 2654435761u ^ (uint32_t)(world + 1) * 40503u) & (s->rrd.cap - 1);
}

static int world_of(const struct sim *s, const struct sim_vm *v)
{
    return s->o.standalone ? v->node->idx : -1;
}

static struct sim_rrd_vm *find(const struct sim *s, int world, int vmid)
{
    if (!s->rrd.cap)
        return NULL;
    for (struct sim_rrd_vm *e = s->rrd.tab[bucket(s, world, vmid)]; e; e = e->next)
        if (e->vmid == vmid && e->world == world)
            return e;
    return NULL;
}

static void grow(struct sim *s)
{
    size_t old = s->rrd.cap, cap = old ? old * 2 : 1024;
    struct sim_rrd_vm **tab = s->rrd.tab;
    s->rrd.tab = xcalloc(cap, sizeof *s->rrd.tab);
    s->rrd.cap = cap;
    for (size_t i = 0; i < old; i++)
        for (struct sim_rrd_vm *e = tab[i], *nx; e; e = nx) {
            nx = e->next;
            size_t b = bucket(s, e->world, e->vmid);
            e->next = s->rrd.tab[b];
            s->rrd.tab[b] = e;
        }
    free(tab);
}

static struct sim_rrd_vm *get(struct sim *s, int world, int vmid)
{
    struct sim_rrd_vm *e = find(s, world, vmid);
    if (e)
        return e;
    if (s->rrd.n >= s->rrd.cap)
        grow(s);
    e = xcalloc(1, sizeof *e);
    e->vmid = vmid;
    e->world = world;
    size_t b = bucket(s, world, vmid);
    e->next = s->rrd.tab[b];
    s->rrd.tab[b] = e;
    s->rrd.n++;
    return e;
}

static void report_vm(struct sim *s, struct sim_vm *v, double t)
{
    const struct sim_vm_derived *d = sim_vm_derive(s, v);
    struct sim_rrd_vm *e = get(s, world_of(s, v), v->vmid);
    e->t = t;
    e->running = v->power != VM_STOPPED;
    e->template = d->template;
    e->cpus = d->cpus;
    e->maxmem = d->maxmem;
    e->maxdisk = d->maxdisk;
    e->mem = e->running ? d->maxmem / 3 : 0;
    e->uptime = e->running && t > v->started ? (int64_t)(t - v->started) : 0;
    if (e->name_len != d->name_len || memcmp(e->name, d->name, d->name_len) != 0) {
        free(e->name);
        e->name = xmalloc(d->name_len ? d->name_len : 1);
        memcpy(e->name, d->name, d->name_len);
        e->name_len = d->name_len;
    }
}

static void report(struct sim *s, int64_t cycle)
{
    double t = (double)cycle * s->o.pvestatd_cycle;
    s->rrd.cycle = cycle;
    s->rrd.t = t;
    sim_node_agg(s);
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        struct sim_rrd_node *r = &s->rrd.nodes[i];
        r->cpus = n->cpus;
        r->busy_cpus = n->agg.busy_cpus;
        r->mem_total = n->mem_total;
        r->mem_used = sim_node_mem_used(s, n);
        r->uptime = t > n->boot ? (int64_t)(t - n->boot) : 0;
        for (int j = 0; j < n->nst; j++) {
            r->st_total[j] = n->st[j].total;
            r->st_used[j] = sim_storage_used(s, n, n->st[j].id);
        }
    }
    for (struct sim_vm *v = s->vms; v; v = v->next)
        if (!v->gone)
            report_vm(s, v, t);
    for (size_t i = 0; i < s->rrd.cap; i++)
        for (struct sim_rrd_vm **pp = &s->rrd.tab[i]; *pp;) {
            struct sim_rrd_vm *e = *pp;
            if (e->t >= t - RRD_EXPIRE) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            free(e->name);
            free(e);
            s->rrd.n--;
        }
}

void sim_rrd_advance(struct sim *s, double now)
{
    if (s->o.pvestatd_cycle <= 0)
        return;
    int64_t cycle = (int64_t)floor(now / s->o.pvestatd_cycle);
    if (cycle != s->rrd.cycle)
        report(s, cycle);
}

void sim_rrd_clear(struct sim *s)
{
    for (size_t i = 0; i < s->rrd.cap; i++)
        for (struct sim_rrd_vm *e = s->rrd.tab[i], *nx; e; e = nx) {
            nx = e->next;
            free(e->name);
            free(e);
        }
    free(s->rrd.tab);
    s->rrd.tab = NULL;
    s->rrd.cap = s->rrd.n = 0;
    s->rrd.cycle = -1;
}

const struct sim_rrd_vm *sim_rrd_vm(const struct sim *s, const struct sim_vm *v)
{
    return find(s, world_of(s, v), v->vmid);
}

const struct sim_rrd_node *sim_rrd_node(const struct sim *s, const struct sim_node *n)
{
    return s->o.pvestatd_cycle > 0 ? &s->rrd.nodes[n->idx] : NULL;
}
