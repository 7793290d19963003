/* h_power: status/current and the power actions, with PVE's state rules:
 * what is refused synchronously (HTTP 500) and what fails inside the task
 * (pve-api.md §6, "Power actions"). HA-managed VMs get hastart/hastop tasks
 * that only ask the HA manager; the real start/stop follows in its own task
 * (engine.c step_ha). A resource in HA state "ignored" is not HA-managed for
 * these calls (PVE::HA::Config::vm_is_ha_managed), as in PVE. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *sim_vm_list_entry(struct sim *s, struct sim_vm *v);
void sim_vm_pressure(struct sim *s, struct sim_vm *v, json_t *e);

static struct sim_vm *vm_or_fail(struct sim_call *c, bool noconf_style)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_vm *vm = sim_vm_find(c->s, c->node, vmid);
    if (vm)
        return vm;
    if (noconf_style) {
        char *m = qemu_noconf_msg(c->node, vmid);
        call_fail(c, 500, "%s", m);
        free(m);
    } else {
        call_fail(c, 500, "unable to find configuration file for VM %d on node '%s'", vmid,
                  c->node->name);
    }
    return NULL;
}

static struct sim_task *task(struct sim_call *c, struct sim_vm *vm, const char *type,
                             enum task_kind kind)
{
    char id[16];
    snprintf(id, sizeof id, "%d", vm->vmid);
    struct sim_task *t = sim_task_new(c->s, c->node, type, id, call_owner(c), kind);
    t->vmid = vm->vmid;
    t->args = json_deep_copy(c->params);
    if (call_bool(c, "skiplock", false))
        json_object_set_new(t->args, "_skiplock", json_true());
    if (c->task_fault_exit)
        t->fault_exit = xstrdup(c->task_fault_exit);
    c->data = json_string(t->upid);
    return t;
}

static void h_current(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, true);
    if (!vm)
        return;
    c->data = sim_vm_list_entry(c->s, vm);
    sim_vm_pressure(c->s, vm, c->data);
    const char *qmp = vm->power == VM_RUNNING  ? "running"
                      : vm->power == VM_PAUSED ? "paused"
                                               : "stopped";
    json_object_set_new(c->data, "qmpstatus", json_string(qmp));
    if (sim_vm_ha_managed(vm)) {
        json_t *ha = json_pack("{s:i,s:s}", "managed", 1, "state",
                               vm->ha_state[0] ? vm->ha_state : "started");
        if (c->s->o.pve_version < 9)
            json_object_set_new(ha, "group", json_null());
        json_object_set_new(c->data, "ha", ha);
    } else {
        json_object_set_new(c->data, "ha", json_pack("{s:i}", "managed", 0));
    }
    const char *agent = json_string_value(json_object_get(vm->conf, "agent"));
    if (agent && (agent[0] == '1' || strstr(agent, "enabled=1")))
        json_object_set_new(c->data, "agent", json_integer(1));
    if (vm->power != VM_STOPPED) {
        json_object_set_new(c->data, "running-machine", json_string(sim_release(c->s)->machine));
        json_object_set_new(c->data, "running-qemu", json_string(sim_release(c->s)->qemu));
    }
}

static void h_start(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, true);
    if (!vm)
        return;
    if (sim_vm_ha_managed(vm))
        task(c, vm, "hastart", TK_HASTART);
    else
        task(c, vm, "qmstart", TK_START);
}

static void h_stop(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    if (sim_vm_ha_managed(vm) && json_object_get(c->params, "overrule-shutdown")) {
        call_param_fail(c, "overrule-shutdown", "Not applicable for HA resources.");
        return;
    }
    if (sim_vm_ha_managed(vm)) /* ha-manager crm-command stop vm:N 0: a hard stop */
        json_object_set_new(task(c, vm, "hastop", TK_HASTOP)->args, "_ha_timeout",
                            json_string("0"));
    else
        task(c, vm, "qmstop", TK_STOP);
}

static void h_shutdown(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    if (vm->power == VM_PAUSED && !call_bool(c, "forceStop", false)) {
        call_fail(c, 500, "VM is paused - cannot shutdown");
        return;
    }
    if (sim_vm_ha_managed(vm)) { /* ha-manager crm-command stop vm:N TIMEOUT (60 by default) */
        char to[24];
        snprintf(to, sizeof to, "%lld", (long long)call_int(c, "timeout", 60));
        json_object_set_new(task(c, vm, "hastop", TK_HASTOP)->args, "_ha_timeout", json_string(to));
    } else
        task(c, vm, "qmshutdown", vm->power == VM_PAUSED ? TK_STOP : TK_SHUTDOWN);
}

static void h_reboot(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    if (vm->power == VM_PAUSED) {
        call_fail(c, 500, "VM is paused - cannot shutdown");
        return;
    }
    if (vm->power == VM_STOPPED) {
        call_fail(c, 500, "VM %d not running", vm->vmid);
        return;
    }
    task(c, vm, "qmreboot", TK_REBOOT);
}

static void h_reset(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    if (vm->power == VM_STOPPED) {
        call_fail(c, 500, "VM %d not running", vm->vmid);
        return;
    }
    task(c, vm, "qmreset", TK_RESET);
}

static void h_suspend(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    if (vm->power == VM_STOPPED) {
        call_fail(c, 500, "VM %d not running", vm->vmid);
        return;
    }
    if (call_bool(c, "todisk", false) && sim_vm_ha_managed(vm)) {
        call_fail(c, 500, "Cannot suspend HA managed VM to disk");
        return;
    }
    task(c, vm, "qmpause", TK_SUSPEND);
}

static void h_resume(struct sim_call *c)
{
    struct sim_vm *vm = vm_or_fail(c, false);
    if (!vm)
        return;
    const char *lk = json_string_value(json_object_get(vm->conf, "lock"));
    if (vm->power == VM_STOPPED && !(lk && strcmp(lk, "suspended") == 0)) {
        call_fail(c, 500, "VM %d not running", vm->vmid);
        return;
    }
    if (json_integer_value(json_object_get(vm->conf, "template"))) {
        call_fail(c, 500, "VM %d is a template and cannot be resumed!", vm->vmid);
        return;
    }
    task(c, vm, "qmresume", TK_RESUME);
}

const struct sim_route sim_routes_power[] = {
    {"GET", "/nodes/{node}/qemu/{vmid}/status/current", h_current},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/start", h_start},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/stop", h_stop},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/shutdown", h_shutdown},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/reboot", h_reboot},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/reset", h_reset},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/suspend", h_suspend},
    {"POST", "/nodes/{node}/qemu/{vmid}/status/resume", h_resume},
    {NULL, NULL, NULL},
};
