/* h_snapshot: the snapshot API of a VM or a container (list, create,
 * delete, rollback, snapshot config) and the conversion to a template,
 * with the checks that qemu-server's and pve-container's APIs
 * (API2/Qemu.pm, API2/LXC/Snapshot.pm, API2/LXC.pm) make before forking
 * their workers (the rest fail inside the task: vmops.c). Both APIs run
 * pve-guest-common's AbstractConfig; they differ in the reserved names,
 * the task types, RAM state (VMs only) and what they check before the
 * fork. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_TIMEOUT 10.0

/* Is the call on a container's path (/nodes/{node}/lxc/...)? */
static bool ct_call(const struct sim_call *c)
{
    const char *p = c->path;
    if (strncmp(p, "/nodes/", 7) != 0)
        return false;
    p = strchr(p + 7, '/');
    return p && strncmp(p, "/lxc/", 5) == 0;
}

/* load_config of the VM or container the call names, or the call fails
 * with "Configuration file ... does not exist". */
static struct vmops_guest load_guest(struct sim_call *c)
{
    struct vmops_guest g = {0};
    if (!ct_call(c)) {
        g.vm = vmops_load(c);
        return g;
    }
    int vmid = (int)call_int(c, "vmid", 0);
    g.ct = sim_ct_find(c->s, c->node, vmid);
    if (!g.ct)
        call_fail(c, 500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", c->node->name,
                  vmid);
    return g;
}

static bool found(struct vmops_guest g)
{
    return g.vm || g.ct;
}

/* The list: one entry per snapshot (qemu-server's with `vmstate`), then
 * "current" with the config's digest. */
static void h_list(struct sim_call *c)
{
    struct vmops_guest g = load_guest(c);
    if (!found(g))
        return;
    c->data = json_array();
    const char *name;
    json_t *snap, *snaps = *vmops_guest_snaps(g);
    if (snaps) {
        json_object_foreach(snaps, name, snap)
        {
            json_t *st = json_object_get(snap, "snaptime");
            const char *desc = json_string_value(json_object_get(snap, "description"));
            json_t *e = json_pack("{s:s,s:I,s:s}", "name", name, "snaptime",
                                  (json_int_t)(json_is_integer(st) ? json_integer_value(st) : 0),
                                  "description", desc ? desc : "");
            if (g.vm)
                json_object_set_new(e, "vmstate",
                                    json_integer(json_object_get(snap, "vmstate") ? 1 : 0));
            json_t *p = json_object_get(snap, "parent");
            if (json_is_string(p))
                json_object_set(e, "parent", p);
            json_t *ss = json_object_get(snap, "snapstate");
            if (json_is_string(ss))
                json_object_set(e, "snapstate", ss);
            json_array_append_new(c->data, e);
        }
    }
    char *dg = g.vm ? sim_vm_digest(g.vm) : sim_ct_digest(g.ct);
    bool running = g.vm ? g.vm->power != VM_STOPPED : g.ct->running;
    json_t *cur = json_pack("{s:s,s:s,s:i,s:s}", "name", "current", "digest", dg, "running",
                            running ? 1 : 0, "description", "You are here!");
    free(dg);
    json_t *p = json_object_get(*vmops_guest_conf(g), "parent");
    if (json_is_string(p))
        json_object_set(cur, "parent", p);
    json_array_append_new(c->data, cur);
}

/* check_non_migratable_resources for a snapshot with RAM. */
static bool ram_blockers(struct sim_call *c, struct sim_vm *vm)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    if (json_object_get(vm->conf, "amd-sev"))
        buf_adds(&b, "amd-sev");
    if (json_object_get(vm->conf, "intel-tdx"))
        buf_printf(&b, "%sintel-tdx", b.len ? ", " : "");
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        if (strncmp(k, "virtiofs", 8) == 0 && isdigit((unsigned char)k[8])) {
            buf_printf(&b, "%svirtiofs", b.len ? ", " : "");
            break;
        }
    }
    bool blocked = b.len > 0;
    if (blocked)
        call_fail(c, 500, "Cannot live-migrate, snapshot (with RAM), or hibernate a VM with: %s",
                  buf_str(&b));
    buf_release(&b);
    return blocked;
}

/* pve-container forks vzsnapshot without loading the config: a missing
 * container fails the task. Its reserved names are 'current' and 'vzdump'
 * (the backup's snapshot). */
static void ct_create(struct sim_call *c)
{
    const char *name = call_str(c, "snapname");
    if (strcmp(name, "current") == 0 || strcmp(name, "vzdump") == 0) {
        call_fail(c, 500, "unable to use snapshot name '%s' (reserved name)", name);
        return;
    }
    vmops_task(c, "vzsnapshot", (int)call_int(c, "vmid", 0), TK_VZSNAPSHOT);
}

static void h_create(struct sim_call *c)
{
    const char *name = call_str(c, "snapname");
    if (ct_call(c)) {
        ct_create(c);
        return;
    }
    if (strcmp(name, "current") == 0) {
        call_fail(c, 500, "unable to use snapshot name 'current' (reserved name)");
        return;
    }
    if (strcasecmp(name, "pending") == 0) {
        call_fail(c, 500, "unable to use snapshot name 'pending' (reserved name)");
        return;
    }
    struct sim_vm *vm = vmops_load(c);
    if (!vm || (call_bool(c, "vmstate", false) && ram_blockers(c, vm)))
        return;
    vmops_task(c, "qmsnapshot", vm->vmid, TK_SNAPSHOT);
}

static void h_cmd_index(struct sim_call *c)
{
    c->data = json_pack("[{s:s},{s:s}]", "cmd", "rollback", "cmd", "config");
}

/* DELETE and rollback check nothing before the worker: a missing VM or
 * snapshot fails the task. */
static void h_delete(struct sim_call *c)
{
    bool ct = ct_call(c);
    vmops_task(c, ct ? "vzdelsnapshot" : "qmdelsnapshot", (int)call_int(c, "vmid", 0),
               ct ? TK_VZDELSNAPSHOT : TK_DELSNAPSHOT);
}

static void h_rollback(struct sim_call *c)
{
    bool ct = ct_call(c);
    vmops_task(c, ct ? "vzrollback" : "qmrollback", (int)call_int(c, "vmid", 0),
               ct ? TK_VZROLLBACK : TK_ROLLBACK);
}

static json_t *snap_or_fail(struct sim_call *c, struct vmops_guest g)
{
    const char *name = call_str(c, "snapname");
    json_t *snap = vmops_guest_snap(g, name);
    if (!snap)
        call_fail(c, 500, "snapshot '%s' does not exist", name);
    return snap;
}

static void h_config_get(struct sim_call *c)
{
    struct vmops_guest g = load_guest(c);
    json_t *snap = found(g) ? snap_or_fail(c, g) : NULL;
    if (snap)
        c->data = json_deep_copy(snap);
}

/* lock_config (10 s) on the guest, found again after the wait; the call
 * fails on a timeout or when the guest went meanwhile. */
static struct vmops_guest lock_guest(struct sim_call *c, struct vmops_guest g)
{
    int vmid = (int)call_int(c, "vmid", 0);
    char lf[96];
    if (g.ct) {
        g.ct = sim_ct_flock_wait(c->s, g.ct, LOCK_TIMEOUT);
        if (!g.ct)
            call_fail(c, 500, "can't lock file '%s' - got timeout", sim_ct_lockfile(vmid, lf));
        return g;
    }
    if (!sim_flock_wait(c->s, g.vm, true, LOCK_TIMEOUT)) {
        call_fail(c, 500, "can't lock file '%s' - got timeout", sim_lockfile(vmid, lf));
        g.vm = NULL;
        return g;
    }
    g.vm = sim_vm_find(c->s, c->node, vmid);
    if (!g.vm) { /* destroyed while we waited */
        char *m = qemu_noconf_msg(c->node, vmid);
        call_fail(c, 500, "%s", m);
        free(m);
    }
    return g;
}

static void unlock_guest(struct sim *s, struct vmops_guest g)
{
    if (g.ct)
        sim_ct_flock_release(s, g.ct);
    else
        sim_flock_release(s, g.vm, true);
}

static void h_config_put(struct sim_call *c)
{
    const char *desc = call_str(c, "description");
    if (!desc) {
        c->data = json_null();
        return;
    }
    struct vmops_guest g = load_guest(c);
    if (!found(g) || !found(g = lock_guest(c, g)))
        return;
    const char *lk = json_string_value(json_object_get(*vmops_guest_conf(g), "lock"));
    json_t *snap;
    if (lk) {
        call_fail(c, 500, "%s is locked (%s)", g.vm ? "VM" : "CT", lk);
    } else if ((snap = snap_or_fail(c, g))) {
        json_object_set_new(snap, "description", json_string(desc));
        c->s->dirty = true;
        c->data = json_null();
    }
    unlock_guest(c->s, g);
}

/* pve-container checks under lock_config, then forks vztemplate and
 * answers null (not the task's UPID). */
static void h_template(struct sim_call *c)
{
    struct vmops_guest g = load_guest(c);
    if (!found(g) || (g.ct && !found(g = lock_guest(c, g))))
        return;
    char *why = vmops_template_refusal(g, call_str(c, "disk"));
    if (why)
        call_fail(c, 500, "%s", why);
    else if (g.vm)
        vmops_task(c, "qmtemplate", g.vm->vmid, TK_TEMPLATE);
    else {
        vmops_task(c, "vztemplate", g.ct->vmid, TK_VZTEMPLATE);
        json_decref(c->data);
        c->data = json_null();
    }
    free(why);
    if (g.ct)
        unlock_guest(c->s, g);
}

const struct sim_route sim_routes_vmops[] = {
    {"GET", "/nodes/{node}/qemu/{vmid}/snapshot", h_list},
    {"POST", "/nodes/{node}/qemu/{vmid}/snapshot", h_create},
    {"GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", h_cmd_index},
    {"DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}", h_delete},
    {"POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback", h_rollback},
    {"GET", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", h_config_get},
    {"PUT", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", h_config_put},
    {"POST", "/nodes/{node}/qemu/{vmid}/template", h_template},
    {"GET", "/nodes/{node}/lxc/{vmid}/snapshot", h_list},
    {"POST", "/nodes/{node}/lxc/{vmid}/snapshot", h_create},
    {"GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}", h_cmd_index},
    {"DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}", h_delete},
    {"POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback", h_rollback},
    {"GET", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config", h_config_get},
    {"PUT", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/config", h_config_put},
    {"POST", "/nodes/{node}/lxc/{vmid}/template", h_template},
    {NULL, NULL, NULL},
};
