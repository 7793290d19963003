/* h_snapshot: the snapshot API of a VM (list, create, delete, rollback,
 * snapshot config) and the conversion to a template, with the checks that
 * qemu-server's API makes before forking its worker (the rest fail inside
 * the task: vmops.c). */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_TIMEOUT 10.0

static void h_list(struct sim_call *c)
{
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return;
    c->data = json_array();
    const char *name;
    json_t *snap;
    if (vm->snaps) {
        json_object_foreach(vm->snaps, name, snap)
        {
            json_t *st = json_object_get(snap, "snaptime");
            const char *desc = json_string_value(json_object_get(snap, "description"));
            json_t *e = json_pack("{s:s,s:I,s:i,s:s}", "name", name, "snaptime",
                                  (json_int_t)(json_is_integer(st) ? json_integer_value(st) : 0),
                                  "vmstate", json_object_get(snap, "vmstate") ? 1 : 0,
                                  "description", desc ? desc : "");
            json_t *p = json_object_get(snap, "parent");
            if (json_is_string(p))
                json_object_set(e, "parent", p);
            json_t *ss = json_object_get(snap, "snapstate");
            if (json_is_string(ss))
                json_object_set(e, "snapstate", ss);
            json_array_append_new(c->data, e);
        }
    }
    char *dg = sim_vm_digest(vm);
    json_t *cur = json_pack("{s:s,s:s,s:i,s:s}", "name", "current", "digest", dg, "running",
                            vm->power != VM_STOPPED ? 1 : 0, "description", "You are here!");
    free(dg);
    json_t *p = json_object_get(vm->conf, "parent");
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

static void h_create(struct sim_call *c)
{
    const char *name = call_str(c, "snapname");
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
    vmops_task(c, "qmdelsnapshot", (int)call_int(c, "vmid", 0), TK_DELSNAPSHOT);
}

static void h_rollback(struct sim_call *c)
{
    vmops_task(c, "qmrollback", (int)call_int(c, "vmid", 0), TK_ROLLBACK);
}

static json_t *snap_or_fail(struct sim_call *c, struct sim_vm *vm)
{
    const char *name = call_str(c, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    if (!snap)
        call_fail(c, 500, "snapshot '%s' does not exist", name);
    return snap;
}

static void h_config_get(struct sim_call *c)
{
    struct sim_vm *vm = vmops_load(c);
    json_t *snap = vm ? snap_or_fail(c, vm) : NULL;
    if (snap)
        c->data = json_deep_copy(snap);
}

static void h_config_put(struct sim_call *c)
{
    const char *desc = call_str(c, "description");
    int vmid = (int)call_int(c, "vmid", 0);
    if (!desc) {
        c->data = json_null();
        return;
    }
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return;
    if (!sim_flock_wait(c->s, vm, true, LOCK_TIMEOUT)) {
        char lf[96];
        call_fail(c, 500, "can't lock file '%s' - got timeout", sim_lockfile(vmid, lf));
        return;
    }
    vm = sim_vm_find(c->s, c->node, vmid);
    const char *lk = json_string_value(json_object_get(vm->conf, "lock"));
    json_t *snap;
    if (lk) {
        call_fail(c, 500, "VM is locked (%s)", lk);
    } else if ((snap = snap_or_fail(c, vm))) {
        json_object_set_new(snap, "description", json_string(desc));
        c->s->dirty = true;
        c->data = json_null();
    }
    sim_flock_release(c->s, vm, true);
}

static void h_template(struct sim_call *c)
{
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return;
    char *why = vmops_template_refusal(vm, call_str(c, "disk"));
    if (why) {
        call_fail(c, 500, "%s", why);
        free(why);
        return;
    }
    vmops_task(c, "qmtemplate", vm->vmid, TK_TEMPLATE);
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
    {NULL, NULL, NULL},
};
