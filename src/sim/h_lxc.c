/* h_lxc: the container endpoints inventories call (pve-container
 * API2/LXC.pm and LXC/Status.pm): list, status/current, config and the
 * snapshot list. Containers come from the fleet file (lxc.c). */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PVE::LXC::Config->load_config on the answering node. */
static struct sim_ct *load_ct(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_ct *ct = sim_ct_find(c->s, c->node, vmid);
    if (!ct)
        call_fail(c, 500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", c->node->name,
                  vmid);
    return ct;
}

static void h_list(struct sim_call *c)
{
    c->data = json_array();
    for (struct sim_ct *ct = c->s->cts; ct; ct = ct->next)
        if (ct->node == c->node)
            json_array_append_new(c->data, sim_ct_list_entry(c->s, ct));
}

static void h_current(struct sim_call *c)
{
    struct sim_ct *ct = load_ct(c);
    if (!ct)
        return;
    c->data = sim_ct_list_entry(c->s, ct);
    json_object_set_new(c->data, "ha", json_pack("{s:i}", "managed", 0));
}

static void h_config(struct sim_call *c)
{
    struct sim_ct *ct = load_ct(c);
    if (!ct)
        return;
    const char *snap = call_str(c, "snapshot");
    if (snap) {
        call_fail(c, 500, "snapshot '%s' does not exist", snap);
        return;
    }
    /* the digest is the SHA-1 of the config file, as for VMs */
    struct sim_vm as_file = {
        .conf = ct->conf, .pending = json_object(), .pending_delete = json_array()};
    char *dg = sim_vm_digest(&as_file);
    json_decref(as_file.pending);
    json_decref(as_file.pending_delete);
    c->data = json_deep_copy(ct->conf);
    json_object_set_new(c->data, "digest", json_string(dg));
    free(dg);
}

/* No snapshots yet: the list holds the "current" pseudo-entry only. */
static void h_snapshots(struct sim_call *c)
{
    if (!load_ct(c))
        return;
    c->data = json_pack("[{s:s,s:s}]", "name", "current", "description", "You are here!");
}

const struct sim_route sim_routes_lxc[] = {
    {"GET", "/nodes/{node}/lxc", h_list},
    {"GET", "/nodes/{node}/lxc/{vmid}/status/current", h_current},
    {"GET", "/nodes/{node}/lxc/{vmid}/config", h_config},
    {"GET", "/nodes/{node}/lxc/{vmid}/snapshot", h_snapshots},
    {NULL, NULL, NULL},
};
