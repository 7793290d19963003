/* The VMs' power and node history (GET /_sim/history): when each VM was
 * made, changed power, moved and went, by the host's wall clock. A test
 * checks what a client said of a VM (proxd's "changed outside proxd")
 * against what was true then. The newest SIM_HISTORY_MAX entries are kept
 * in a ring, allocated at the first one. Everything under s->mu. */
#include <jansson.h>
#include <stdlib.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

static void record(struct sim *s, const struct sim_vm *vm, int power)
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
}

void sim_history_made(struct sim *s, struct sim_vm *vm)
{
    vm->uid = ++s->history.uids;
    record(s, vm, vm->power);
}

void sim_history_gone(struct sim *s, const struct sim_vm *vm)
{
    record(s, vm, -1);
}

void sim_history_moved(struct sim *s, const struct sim_vm *vm)
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

json_t *sim_history_json(const struct sim *s)
{
    const struct sim_history *h = &s->history;
    json_t *a = json_array();
    for (size_t i = 0; i < h->n; i++) {
        const struct sim_hist_entry *e = &h->ring[(h->first + i) % SIM_HISTORY_MAX];
        json_array_append_new(
            a, json_pack("[I,I,i,s,s]", (json_int_t)e->ms, (json_int_t)e->uid, e->vmid,
                         s->nodes[e->node].name,
                         e->power < 0 ? "gone" : sim_power_name((enum vm_power)e->power)));
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
