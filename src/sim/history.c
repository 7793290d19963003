/* The VMs' power, node and size history (GET /_sim/history): when each
 * VM was made, changed power, moved, changed sizes and went, by the host's
 * wall clock; every entry has the VM's sizes then. A test checks what a
 * client said of a VM (proxd's "changed outside proxd") against what was
 * true then. The newest SIM_HISTORY_MAX entries are kept in a ring,
 * allocated at the first one. Everything under s->mu. */
#include <jansson.h>
#include <stdlib.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

/* As sim_vm_derive tells them to the inventory (without its cache: the
 * world may be changing) */
static void sizes_of(const struct sim_vm *vm, struct sim_hist_sizes *z)
{
    z->cores = sim_vm_cpus(vm);
    z->memory_mib = sim_vm_maxmem(vm) / (1024 * 1024);
    z->disk = sim_vm_maxdisk(vm);
    z->pending_cores = (int)sim_json_int(json_object_get(vm->pending, "cores"), 0);
    z->pending_memory_mib = sim_memory_mib(json_object_get(vm->pending, "memory"), 0);
}

static bool sizes_equal(const struct sim_hist_sizes *a, const struct sim_hist_sizes *b)
{
    return a->cores == b->cores && a->pending_cores == b->pending_cores &&
           a->memory_mib == b->memory_mib && a->pending_memory_mib == b->pending_memory_mib &&
           a->disk == b->disk;
}

/* An entry for vm; z: its sizes when the caller read them, else NULL */
static void record_sized(struct sim *s, struct sim_vm *vm, int power,
                         const struct sim_hist_sizes *z)
{
    struct sim_history *h = &s->history;
    if (h->off)
        return;
    if (!h->ring)
        h->ring = xcalloc(SIM_HISTORY_MAX, sizeof *h->ring);
    struct sim_hist_entry *e = &h->ring[(h->first + h->n) % SIM_HISTORY_MAX];
    if (h->n == SIM_HISTORY_MAX) { /* full: the oldest goes */
        h->first = (h->first + 1) % SIM_HISTORY_MAX;
        h->dropped++;
    } else {
        h->n++;
    }
    e->ms = wall_ms();
    e->uid = vm->uid;
    e->vmid = vm->vmid;
    e->node = (short)(vm->node - s->nodes);
    e->power = (signed char)power;
    if (z)
        e->z = *z;
    else
        sizes_of(vm, &e->z);
    vm->hist_z = e->z;
}

static void record(struct sim *s, struct sim_vm *vm, int power)
{
    record_sized(s, vm, power, NULL);
}

void sim_history_made(struct sim *s, struct sim_vm *vm)
{
    vm->uid = ++s->history.uids;
    record(s, vm, vm->power);
}

void sim_history_gone(struct sim *s, struct sim_vm *vm)
{
    record(s, vm, -1);
}

void sim_history_moved(struct sim *s, struct sim_vm *vm)
{
    record(s, vm, vm->power);
}

void sim_vm_set_power(struct sim *s, struct sim_vm *vm, enum vm_power p)
{
    if (vm->power == p)
        return;
    vm->power = p;
    record(s, vm, p);
}

void sim_history_sizes(struct sim *s, struct sim_vm *vm)
{
    if (!vm || vm->gone)
        return;
    struct sim_hist_sizes z;
    sizes_of(vm, &z);
    if (!sizes_equal(&z, &vm->hist_z))
        record_sized(s, vm, vm->power, &z);
}

void sim_history_sizes_of(struct sim *s, struct sim_node *n, int vmid)
{
    /* a cluster's VMIDs are one space (a clone may land on another node);
     * each standalone host has its own */
    if (vmid > 0)
        sim_history_sizes(s, sim_vm_find(s, s->o.standalone ? n : NULL, vmid));
}

void sim_history_sizes_params(struct sim *s, struct sim_node *n, json_t *params)
{
    const char *keys[] = {"vmid", "newid"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(params, keys[i]);
        sim_history_sizes_of(s, n, (int)sim_json_int(v, 0));
    }
}

void sim_history_sizes_all(struct sim *s)
{
    for (struct sim_vm *v = s->vms; v; v = v->next)
        sim_history_sizes(s, v);
}

json_t *sim_history_json(const struct sim *s)
{
    const struct sim_history *h = &s->history;
    json_t *a = json_array();
    for (size_t i = 0; i < h->n; i++) {
        const struct sim_hist_entry *e = &h->ring[(h->first + i) % SIM_HISTORY_MAX];
        json_array_append_new(
            a, json_pack("[I,I,i,s,s,i,I,I,i,I]", (json_int_t)e->ms, (json_int_t)e->uid, e->vmid,
                         s->nodes[e->node].name,
                         e->power < 0 ? "gone" : sim_power_name((enum vm_power)e->power),
                         e->z.cores, (json_int_t)e->z.memory_mib, (json_int_t)e->z.disk,
                         e->z.pending_cores, (json_int_t)e->z.pending_memory_mib));
    }
    return json_pack("{s:o,s:I}", "history", a, "dropped", (json_int_t)h->dropped);
}

void sim_history_free(struct sim *s)
{
    free(s->history.ring);
    s->history.ring = NULL;
    s->history.n = s->history.first = 0;
    s->history.off = true;
}
