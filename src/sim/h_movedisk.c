/* h_movedisk: POST /nodes/{node}/qemu/{vmid}/move_disk with target-vmid,
 * qemu-server's disk reassignment (PVE >= 7.2): a volume of one VM becomes
 * a volume of another VM of the same node, renamed vm-<target>-disk-N, in a
 * qmmove task holding both VMs' config locks. The checks are made before
 * the fork and again under the locks, with qemu-server's texts. Moving a
 * disk to another storage is not simulated (501).
 *
 * Also the volume origins (vm->origin): which template OS each volume was
 * cloned from, so that a test can tell what a VM's disk holds. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/sim.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORK_DELAY 0.05
#define LOCK_TIMEOUT 10.0 /* lock_config */
#define MOVE_SECONDS 0.3  /* the rename itself */

enum { P_FORK = 0, P_WORK, P_COMMIT };

/* ---- origins -------------------------------------------------------------- */

void vmops_origin_clone(struct sim *s, const struct sim_vm *src, const char *src_drive,
                        struct sim_vm *dst, const char *dst_drive)
{
    char sv[128], dv[128];
    (void)s;
    vmops_vol_name(src_drive, sv, sizeof sv);
    vmops_vol_name(dst_drive, dv, sizeof dv);
    const char *os = src->origin ? json_string_value(json_object_get(src->origin, sv)) : NULL;
    if (!os)
        return;
    if (!dst->origin)
        dst->origin = json_object();
    json_object_set_new(dst->origin, dv, json_string(os));
}

/* ---- checks ------------------------------------------------------------------ */

static const char *lock_of(const struct sim_vm *vm)
{
    return json_string_value(json_object_get(vm->conf, "lock"));
}

static bool is_template(const struct sim_vm *vm)
{
    json_t *v = json_object_get(vm->conf, "template");
    return json_is_true(v) || json_integer_value(v) != 0;
}

static bool digest_differs(const struct sim_vm *vm, const char *digest)
{
    if (!digest || !*digest)
        return false;
    char *cur = sim_vm_digest(vm);
    bool differs = strcmp(cur, digest) != 0;
    free(cur);
    return differs;
}

/* load_and_check_reassign_configs: why the reassignment cannot be made, or
 * NULL (caller frees). */
static char *refusal(struct sim *s, struct sim_node *n, int vmid, int target, const char *disk,
                     const char *tdisk, const char *digest, const char *tdigest)
{
    struct sim_vm *src = sim_vm_find(s, s->o.standalone ? n : NULL, vmid);
    struct sim_vm *dst = sim_vm_find(s, s->o.standalone ? n : NULL, target);
    if (!src)
        return xasprintf("could not find VM %d", vmid);
    if (!dst)
        return xasprintf("could not find target VM %d", target);
    if (src->node != dst->node)
        return xasprintf("Both VMs need to be on the same node (%s != %s)", src->node->name,
                         dst->node->name);
    if (lock_of(src))
        return xasprintf("VM is locked (%s)", lock_of(src));
    if (lock_of(dst))
        return xasprintf("VM is locked (%s)", lock_of(dst));
    if (is_template(src) || is_template(dst))
        return xstrdup("Can't move disks from or to template VMs");
    if (digest_differs(src, digest))
        return xasprintf("VM %d: detected modified configuration - file changed by other user? "
                         "Try again.",
                         vmid);
    if (digest_differs(dst, tdigest))
        return xasprintf("VM %d: detected modified configuration - file changed by other user? "
                         "Try again.",
                         target);
    const char *d = json_string_value(json_object_get(src->conf, disk));
    if (!d)
        return xasprintf("Disk '%s' for VM '%d' does not exist", disk, vmid);
    if (json_object_get(dst->conf, tdisk))
        return xasprintf("Target disk key '%s' is already in use for VM '%d'", tdisk, target);
    if (vmops_is_cdrom(d))
        return xstrdup("CD drive contents can't be moved to another VM");
    if (!strchr(d, ':'))
        return xasprintf("Volume '%.*s' not managed by PVE", (int)strcspn(d, ","), d);
    char vn[128];
    vmops_vol_name(d, vn, sizeof vn);
    if (vmops_vol_in_snapshot(src, vn))
        return xstrdup("Can't move disk used by a snapshot to another VM");
    if (src->power != VM_STOPPED && strncmp(disk, "unused", 6) != 0)
        return xstrdup(
            "Cannot move disk to another VM while the source VM is running - detach first");
    return NULL;
}

/* ---- the handler -------------------------------------------------------------- */

static void h_move_disk(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0), target = (int)call_int(c, "target-vmid", 0);
    const char *storage = call_str(c, "storage"), *disk = call_str(c, "disk");
    const char *tdisk = call_str(c, "target-disk") ? call_str(c, "target-disk") : disk;
    if (target && storage) {
        const char *m = "either set 'storage' or 'target-vmid', but not both";
        call_param_fail(c, "target-vmid", "%s", m);
        call_param_fail(c, "storage", "%s", m);
        return;
    }
    if (!target && !storage) {
        const char *m = "both 'storage' and 'target-vmid' missing, either needs to be set";
        call_param_fail(c, "target-vmid", "%s", m);
        call_param_fail(c, "storage", "%s", m);
        return;
    }
    if (!target) {
        if (call_storage_space(c, storage, strlen(storage)))
            call_fail(c, 501, "pvesim: moving a disk to another storage is not simulated");
        return;
    }
    /* check_vm_perm on the target VM (the source's: the schema's check) */
    if (!c->is_root && !call_can_vm(c, target, "VM.Config.Disk")) {
        char path[32];
        snprintf(path, sizeof path, "/vms/%d", target);
        call_perm_fail(c, path, "VM.Config.Disk");
        return;
    }
    if (target == vmid) {
        call_param_fail(c, "target-vmid", "must be different than source VMID to reassign disk");
        return;
    }
    char *why = refusal(c->s, c->node, vmid, target, disk, tdisk, call_str(c, "digest"),
                        call_str(c, "target-digest"));
    if (why) {
        call_fail(c, 500, "%s", why);
        free(why);
        return;
    }
    /* Datastore.AllocateSpace on the storage of the volume reassigned */
    struct sim_vm *src = sim_vm_find(c->s, c->s->o.standalone ? c->node : NULL, vmid);
    char *sid = sim_disk_storage(json_string_value(json_object_get(src->conf, disk)));
    bool space = !sid || call_storage_space(c, sid, strlen(sid));
    free(sid);
    if (!space)
        return;
    char id[48];
    snprintf(id, sizeof id, "%d-%s>%d-%s", vmid, disk, target, tdisk);
    struct sim_task *t = sim_task_new(c->s, c->node, "qmmove", id, call_owner(c), TK_MOVEDISK);
    t->vmid = vmid;
    t->newid = target;
    t->args = json_deep_copy(c->params);
    json_object_set_new(t->args, "_tdisk", json_string(tdisk));
    if (c->task_fault_exit)
        t->fault_exit = xstrdup(c->task_fault_exit);
    c->data = json_string(t->upid);
}

const struct sim_route sim_routes_movedisk[] = {
    {"POST", "/nodes/{node}/qemu/{vmid}/move_disk", h_move_disk},
    {NULL, NULL, NULL},
};

/* ---- the task --------------------------------------------------------------------- */

bool vmops_boot_drop(struct sim_vm *vm, const char *disk)
{
    const char *boot = json_string_value(json_object_get(vm->conf, "boot"));
    const char *order = boot ? strstr(boot, "order=") : NULL;
    if (!order)
        return false;
    char *list = xstrndup(order + 6, strcspn(order + 6, ","));
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    bool found = false, first = true;
    char *save = NULL;
    buf_adds(&b, "order=");
    for (char *it = strtok_r(list, ";", &save); it; it = strtok_r(NULL, ";", &save)) {
        if (strcmp(it, disk) == 0) {
            found = true;
            continue;
        }
        buf_printf(&b, "%s%s", first ? "" : ";", it);
        first = false;
    }
    if (found)
        json_object_set_new(vm->conf, "boot", json_string(buf_str(&b)));
    buf_release(&b);
    free(list);
    return found;
}

static void reassign(struct sim *s, struct sim_task *t, struct sim_vm *src, struct sim_vm *dst)
{
    const char *disk = json_string_value(json_object_get(t->args, "disk"));
    const char *tdisk = json_string_value(json_object_get(t->args, "_tdisk"));
    const char *d = json_string_value(json_object_get(src->conf, disk));
    sim_task_log(t, "reassign disk '%s' from VM '%d' as '%s' to VM '%d'", disk, src->vmid, tdisk,
                 dst->vmid);
    char old[128], nv[64];
    vmops_vol_name(d, old, sizeof old);
    snprintf(nv, sizeof nv, "vm-%d-disk-%d", dst->vmid, qemu_free_disk_index(dst));
    char *sid = sim_disk_storage(d);
    struct sim_storage *st = sid ? sim_storage_find(src->node, sid) : NULL;
    if (st && strcmp(st->type, "lvmthin") == 0)
        sim_task_log(t, "  Renamed \"%s\" to \"%s\" in volume group \"pve\"", old, nv);
    const char *opts = strncmp(tdisk, "unused", 6) == 0 ? "" : d + strcspn(d, ",");
    json_t *nd = json_sprintf("%s:%s%s", sid ? sid : "local-lvm", nv, opts);
    free(sid);
    if (vmops_boot_drop(src, disk))
        sim_task_log(t, "removing disk '%s' from boot order config", disk);
    sim_task_log(t, "removing disk '%s' from VM '%d' config", disk, src->vmid);
    json_object_del(src->conf, disk);
    json_object_set_new(dst->conf, tdisk, nd);
    json_t *os = src->origin ? json_object_get(src->origin, old) : NULL;
    if (os) {
        if (!dst->origin)
            dst->origin = json_object();
        json_object_set(dst->origin, nv, os);
        json_object_del(src->origin, old);
    }
    s->dirty = true;
    s->gen++;
}

static void finish_locked(struct sim *s, struct sim_task *t, struct sim_vm *src, struct sim_vm *dst,
                          const char *exit)
{
    if (src)
        sim_flock_release(s, src, true);
    if (dst)
        sim_flock_release(s, dst, true);
    sim_task_finish(s, t, exit);
}

void vmops_step_movedisk(struct sim *s, struct sim_task *t, double now)
{
    if (t->phase == P_FORK) {
        if (now - t->t0 < FORK_DELAY)
            return;
        t->phase = P_WORK;
        t->deadline = now + LOCK_TIMEOUT;
    }
    struct sim_vm *src = sim_vm_find(s, t->node, t->vmid), *dst = sim_vm_find(s, t->node, t->newid);
    if (t->phase == P_WORK) {
        /* lock_config of the source, then of the target */
        if (!t->locked_src && src && sim_flock_try(src, true))
            t->locked_src = true;
        if (t->locked_src && !t->locked_dst && dst && sim_flock_try(dst, true))
            t->locked_dst = true;
        if (!t->locked_src || !t->locked_dst) {
            if (now < t->deadline && src && dst)
                return;
            char lf[96], msg[160];
            snprintf(msg, sizeof msg, "can't lock file '%s' - got timeout",
                     sim_lockfile(t->locked_src ? t->newid : t->vmid, lf));
            finish_locked(s, t, t->locked_src ? src : NULL, NULL, msg);
            return;
        }
        t->phase = P_COMMIT;
        t->t0 = now;
    }
    if (now - t->t0 < MOVE_SECONDS)
        return;
    if (t->fault_exit) {
        finish_locked(s, t, src, dst, t->fault_exit);
        return;
    }
    const char *disk = json_string_value(json_object_get(t->args, "disk"));
    const char *tdisk = json_string_value(json_object_get(t->args, "_tdisk"));
    char *why = refusal(s, t->node, t->vmid, t->newid, disk, tdisk,
                        json_string_value(json_object_get(t->args, "digest")),
                        json_string_value(json_object_get(t->args, "target-digest")));
    if (why) {
        finish_locked(s, t, src, dst, why);
        free(why);
        return;
    }
    reassign(s, t, src, dst);
    finish_locked(s, t, src, dst, "OK");
}
