/* vmops: the snapshot model and the tasks qmsnapshot, qmdelsnapshot,
 * qmrollback and qmtemplate, in the steps of pve-guest-common's
 * AbstractConfig (snapshot_create, snapshot_delete, snapshot_rollback) and
 * qemu-server's template worker, with their texts. Migration steps are in
 * h_migrate.c; this file dispatches to them. */
#include "sim/vmops.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORK_DELAY 0.05
#define LOCK_TIMEOUT 10.0 /* lock_config */
#define MiB (1024LL * 1024)

enum { P_FORK = 0, P_PREP, P_WORK, P_COMMIT };

/* ---- model ------------------------------------------------------------ */

bool vmops_is_volume_key(const char *k)
{
    static const char *const pfx[] = {"scsi",    "virtio",   "sata",  "ide",
                                      "efidisk", "tpmstate", "unused"};
    for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++) {
        size_t l = strlen(pfx[i]);
        if (strncmp(k, pfx[i], l) == 0 && isdigit((unsigned char)k[l]))
            return true;
    }
    return false;
}

bool vmops_is_cdrom(const char *drive)
{
    return strstr(drive, "media=cdrom") != NULL || strncmp(drive, "none", 4) == 0 ||
           strncmp(drive, "cdrom", 5) == 0;
}

json_t *vmops_snap_find(const struct sim_vm *vm, const char *name)
{
    return vm->snaps && name ? json_object_get(vm->snaps, name) : NULL;
}

bool vmops_drive_can_snapshot(struct sim_node *n, const char *drive)
{
    char *sid = sim_disk_storage(drive);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    if (!st)
        return false;
    if (!strcmp(st->type, "lvmthin") || !strcmp(st->type, "zfspool") || !strcmp(st->type, "rbd") ||
        !strcmp(st->type, "btrfs"))
        return true;
    /* file storages: only qcow2 images have internal snapshots */
    size_t vl = strcspn(drive, ",");
    return vl > 6 && strncmp(drive + vl - 6, ".qcow2", 6) == 0;
}

/* Bytes of a RAM state volume: twice the memory plus 500 MiB of device
 * state (QemuConfig::__snapshot_save_vmstate). */
static int64_t vmstate_size(json_t *conf)
{
    struct sim_vm tmp = {.conf = conf};
    return 2 * sim_vm_maxmem(&tmp) + 500 * MiB;
}

static bool volid_eq(const char *a, const char *b)
{
    size_t la = strcspn(a, ","), lb = strcspn(b, ",");
    return la == lb && strncmp(a, b, la) == 0;
}

static bool conf_has_volid(json_t *conf, const char *volid)
{
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        if (vmops_is_volume_key(k) && json_is_string(v) && volid_eq(json_string_value(v), volid))
            return true;
    }
    return false;
}

static bool on_storage(const char *drive, const char *storage)
{
    size_t n = strlen(storage);
    return strncmp(drive, storage, n) == 0 && drive[n] == ':';
}

int64_t vmops_snap_storage(const struct sim_vm *vm, const char *storage)
{
    if (!vm->snaps)
        return 0;
    int64_t used = 0;
    json_t *seen = json_object();
    const char *name;
    json_t *snap;
    json_object_foreach(vm->snaps, name, snap)
    {
        const char *vs = json_string_value(json_object_get(snap, "vmstate"));
        if (vs && on_storage(vs, storage))
            used += vmstate_size(snap);
        const char *k;
        json_t *v;
        json_object_foreach(snap, k, v)
        {
            const char *d = json_string_value(v);
            if (!d || !vmops_is_volume_key(k) || !on_storage(d, storage) || vmops_is_cdrom(d) ||
                conf_has_volid(vm->conf, d))
                continue;
            char *key = xstrndup(d, strcspn(d, ","));
            if (!json_object_get(seen, key)) {
                json_object_set_new(seen, key, json_true());
                used += sim_disk_size(d);
            }
            free(key);
        }
    }
    json_decref(seen);
    return used;
}

void vmops_snap_text(const struct sim_vm *vm, struct buf *b)
{
    if (!vm->snaps)
        return;
    const char *name;
    json_t *snap;
    json_object_foreach(vm->snaps, name, snap)
    {
        buf_printf(b, "\n[%s]\n", name);
        const char *k;
        json_t *v;
        json_object_foreach(snap, k, v)
        {
            if (json_is_string(v))
                buf_printf(b, "%s: %s\n", k, json_string_value(v));
            else if (json_is_integer(v))
                buf_printf(b, "%s: %lld\n", k, (long long)json_integer_value(v));
        }
    }
}

/* ---- tasks: common ------------------------------------------------------ */

struct sim_vm *vmops_load(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_vm *vm = sim_vm_find(c->s, c->node, vmid);
    if (!vm) {
        char *m = qemu_noconf_msg(c->node, vmid);
        call_fail(c, 500, "%s", m);
        free(m);
    }
    return vm;
}

struct sim_task *vmops_task(struct sim_call *c, const char *type, int vmid, enum task_kind kind)
{
    char id[16];
    snprintf(id, sizeof id, "%d", vmid);
    struct sim_task *t = sim_task_new(c->s, c->node, type, id, call_owner(c), kind);
    t->vmid = vmid;
    t->args = json_deep_copy(c->params);
    if (c->task_fault_exit) {
        t->fault_exit = xstrdup(c->task_fault_exit);
        t->fault_keep = c->task_fault_keep;
    }
    c->data = json_string(t->upid);
    return t;
}

static const char *lock_of(struct sim_vm *vm)
{
    return json_string_value(json_object_get(vm->conf, "lock"));
}

static const char *arg_str(struct sim_task *t, const char *k)
{
    return json_string_value(json_object_get(t->args, k));
}

static bool arg_true(struct sim_task *t, const char *k)
{
    json_t *v = json_object_get(t->args, k);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    return json_is_string(v) && strcmp(json_string_value(v), "1") == 0;
}

static bool is_template(struct sim_vm *vm)
{
    json_t *v = json_object_get(vm->conf, "template");
    return json_is_true(v) || json_integer_value(v) != 0;
}

/* Run `fn` under the VM's flock, the way lock_config does: wait up to 10 s
 * from the phase's start. Returns 1 when it ran, 0 to keep waiting, -1 when
 * the task ended (lock timeout, VM gone). */
static int under_flock(struct sim *s, struct sim_task *t, double now,
                       void (*fn)(struct sim *, struct sim_task *, struct sim_vm *, double))
{
    struct sim_vm *vm = sim_vm_find(s, t->node, t->vmid);
    if (!vm) {
        char *m = qemu_noconf_msg(t->node, t->vmid);
        sim_task_finish(s, t, m);
        free(m);
        return -1;
    }
    if (t->deadline == 0)
        t->deadline = now + LOCK_TIMEOUT;
    if (!sim_flock_try(vm, true)) {
        if (now < t->deadline)
            return 0;
        char lf[96], msg[160];
        snprintf(msg, sizeof msg, "can't lock file '%s' - got timeout", sim_lockfile(t->vmid, lf));
        sim_task_finish(s, t, msg);
        return -1;
    }
    t->deadline = 0;
    fn(s, t, vm, now);
    sim_flock_release(s, vm, true);
    s->dirty = true;
    return t->running ? 1 : -1;
}

static bool forked(struct sim_task *t, double now)
{
    if (t->phase != P_FORK)
        return true;
    if (now - t->t0 < FORK_DELAY)
        return false;
    t->phase = P_PREP;
    return true;
}

/* The storage's LVM volume group for log lines ("pve" as on a default
 * install). */
static bool is_lvmthin(struct sim_node *n, const char *drive)
{
    char *sid = sim_disk_storage(drive);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    return st && strcmp(st->type, "lvmthin") == 0;
}

/* The volume name of a drive without storage and base ("vm-100-disk-0"). */
void vmops_vol_name(const char *drive, char *out, size_t n)
{
    const char *p = strchr(drive, ':');
    p = p ? p + 1 : drive;
    const char *slash = memchr(p, '/', strcspn(p, ","));
    if (slash)
        p = slash + 1;
    snprintf(out, n, "%.*s", (int)strcspn(p, ","), p);
}

bool vmops_vol_in_snapshot(const struct sim_vm *vm, const char *volname)
{
    const char *sn, *k;
    json_t *snap, *v;
    char vn[128];
    if (!vm->snaps)
        return false;
    json_object_foreach(vm->snaps, sn, snap)
    {
        json_object_foreach(snap, k, v)
        {
            if (!vmops_is_volume_key(k) || !json_is_string(v))
                continue;
            vmops_vol_name(json_string_value(v), vn, sizeof vn);
            if (strcmp(vn, volname) == 0)
                return true;
        }
    }
    return false;
}

/* Every disk (not CD-ROM) of a config: calls fn(key, drive). */
static int each_disk(json_t *conf, void (*fn)(void *, const char *, const char *), void *ctx)
{
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !vmops_is_volume_key(k) || strncmp(k, "unused", 6) == 0 || vmops_is_cdrom(d))
            continue;
        if (fn)
            fn(ctx, k, d);
        n++;
    }
    return n;
}

/* ---- qmsnapshot ------------------------------------------------------------ */

/* Keys a snapshot does not copy from the config (__snapshot_copy_config). */
static bool snap_meta_key(const char *k)
{
    static const char *const skip[] = {"snapstate", "snaptime",    "vmstate", "lock",
                                       "digest",    "description", NULL};
    for (int i = 0; skip[i]; i++)
        if (strcmp(k, skip[i]) == 0)
            return true;
    return strncmp(k, "unused", 6) == 0 && isdigit((unsigned char)k[6]);
}

struct snaplog {
    struct sim_task *t;
    struct sim_node *n;
    const char *snap;
    const char *what; /* "create", "delete", "rollback" */
};

static void log_disk(void *ctx, const char *k, const char *d)
{
    struct snaplog *l = ctx;
    char vn[128];
    vmops_vol_name(d, vn, sizeof vn);
    bool thin = is_lvmthin(l->n, d);
    if (strcmp(l->what, "create") == 0) {
        sim_task_log(l->t, "snapshotting 'drive-%s' (%.*s)", k, (int)strcspn(d, ","), d);
        if (thin)
            sim_task_log(l->t, "  Logical volume \"snap_%s_%s\" created.", vn, l->snap);
    } else if (strcmp(l->what, "delete") == 0 && thin) {
        sim_task_log(l->t, "  Logical volume \"snap_%s_%s\" successfully removed.", vn, l->snap);
    } else if (strcmp(l->what, "rollback") == 0 && thin) {
        sim_task_log(l->t, "  Logical volume \"%s\" successfully removed.", vn);
        sim_task_log(l->t, "  Logical volume \"%s\" created.", vn);
    }
}

static bool all_can_snapshot(struct sim_vm *vm)
{
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        if (d && vmops_is_volume_key(k) && strncmp(k, "unused", 6) != 0 && !vmops_is_cdrom(d) &&
            !vmops_drive_can_snapshot(vm->node, d))
            return false;
    }
    return true;
}

/* find_vmstate_storage: vmstatestorage, else a storage the VM's disks use
 * (shared first, file-based preferred), else "local". */
static void vmstate_storage(struct sim_vm *vm, char *out, size_t n)
{
    const char *vs = json_string_value(json_object_get(vm->conf, "vmstatestorage"));
    if (vs) {
        snprintf(out, n, "%s", vs);
        return;
    }
    struct sim_storage *shared = NULL, *local = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !vmops_is_volume_key(k))
            continue;
        char *sid = sim_disk_storage(d);
        struct sim_storage *st = sid ? sim_storage_find(vm->node, sid) : NULL;
        free(sid);
        if (!st)
            continue;
        struct sim_storage **dst = st->shared ? &shared : &local;
        if (!*dst || strcmp(st->type, "dir") == 0)
            *dst = st;
    }
    struct sim_storage *t = shared ? shared : local;
    snprintf(out, n, "%s", t ? t->id : "local");
}

static void snapshot_prepare(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    const char *name = arg_str(t, "snapname");
    if (is_template(vm)) {
        sim_task_finish(s, t, "you can't take a snapshot if it's a template");
        return;
    }
    if (lock_of(vm)) {
        char msg[96];
        snprintf(msg, sizeof msg, "VM is locked (%s)", lock_of(vm));
        sim_task_finish(s, t, msg);
        return;
    }
    if (vmops_snap_find(vm, name)) {
        char msg[128];
        snprintf(msg, sizeof msg, "snapshot name '%s' already used", name);
        sim_task_finish(s, t, msg);
        return;
    }
    if (!all_can_snapshot(vm)) {
        sim_task_finish(s, t, "snapshot feature is not available");
        return;
    }
    json_object_set_new(vm->conf, "lock", json_string("snapshot"));
    if (!vm->snaps)
        vm->snaps = json_object();
    json_t *snap = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        if (!snap_meta_key(k))
            json_object_set(snap, k, v);
    }
    json_object_set_new(snap, "snapstate", json_string("prepare"));
    json_object_set_new(snap, "snaptime", json_integer(wall_s()));
    const char *desc = arg_str(t, "description");
    if (desc && *desc)
        json_object_set_new(snap, "description", json_string(desc));
    bool running = vm->power != VM_STOPPED;
    double ram = 0;
    if (running && arg_true(t, "vmstate")) {
        char sid[64];
        vmstate_storage(vm, sid, sizeof sid);
        json_object_set_new(snap, "vmstate",
                            json_sprintf("%s:vm-%d-state-%s", sid, vm->vmid, name));
        json_object_set_new(snap, "runningmachine", json_string("pc-i440fx-9.0+pve0"));
        json_object_set_new(snap, "runningcpu",
                            json_string("kvm64,enforce,+kvm_pv_eoi,+kvm_pv_unhalt,+lahf_lm,+sep"));
        sim_task_log(t, "saving VM state and RAM using storage '%s'", sid);
        ram = (double)sim_vm_maxmem(vm) / 2; /* what a guest typically has dirtied */
    }
    json_object_set_new(vm->snaps, name, snap);
    struct snaplog l = {t, vm->node, name, "create"};
    int ndisks = each_disk(vm->conf, NULL, NULL);
    t->bytes_total = ram;
    t->dur = 0.3 + 0.2 * ndisks + ram / vm->node->bandwidth;
    t->t0 = now;
    t->phase = P_WORK;
    if (ram > 0)
        sim_task_log(t, "completed saving the VM state in %ds, saved %.2f GiB",
                     (int)(ram / vm->node->bandwidth) + 1, ram / (1024.0 * MiB));
    each_disk(vm->conf, log_disk, &l);
}

static void snapshot_commit(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    (void)now;
    const char *name = arg_str(t, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    if (t->fault_exit) {
        sim_task_log(t, "snapshot create failed: starting cleanup");
        /* PVE's cleanup is a forced delete, which can fail in turn: the
         * snapshot then stays, snapstate "prepare" (cleanup_fails) */
        if (snap && t->fault_keep)
            sim_task_log(t, "could not remove disk snapshot: cleanup failed");
        else if (snap)
            json_object_del(vm->snaps, name);
        json_object_del(vm->conf, "lock");
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    const char *lk = lock_of(vm);
    if (!lk || strcmp(lk, "snapshot") != 0) {
        sim_task_finish(s, t, "missing snapshot lock");
        return;
    }
    if (!snap) {
        char msg[128];
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    json_object_del(snap, "snapstate");
    json_object_del(vm->conf, "lock");
    json_object_set_new(vm->conf, "parent", json_string(name));
    sim_task_finish(s, t, "OK");
}

/* ---- qmdelsnapshot -------------------------------------------------------- */

static void delete_prepare(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    const char *name = arg_str(t, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    char msg[128];
    if (!snap) {
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    if (lock_of(vm)) {
        snprintf(msg, sizeof msg, "VM is locked (%s)", lock_of(vm));
        sim_task_finish(s, t, msg);
        return;
    }
    json_object_set_new(vm->conf, "lock", json_string("snapshot-delete"));
    if (is_template(vm)) { /* the lock stays, as it does in PVE */
        sim_task_finish(s, t, "you can't delete a snapshot if vm is a template");
        return;
    }
    json_object_set_new(snap, "snapstate", json_string("delete"));
    struct snaplog l = {t, vm->node, name, "delete"};
    int ndisks = each_disk(snap, log_disk, &l);
    t->dur = 0.3 + 0.2 * ndisks + (json_object_get(snap, "vmstate") ? 0.2 : 0);
    t->t0 = now;
    t->phase = P_WORK;
}

/* Snapshots or the config whose parent is `name` take `name`'s parent. */
static void unlink_parent(json_t *conf, const char *name, json_t *new_parent)
{
    const char *p = json_string_value(json_object_get(conf, "parent"));
    if (!p || strcmp(p, name) != 0)
        return;
    if (new_parent)
        json_object_set(conf, "parent", new_parent);
    else
        json_object_del(conf, "parent");
}

static void delete_commit(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    (void)now;
    const char *name = arg_str(t, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    if (t->fault_exit) {
        if (snap)
            json_object_del(snap, "snapstate");
        json_object_del(vm->conf, "lock");
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    const char *lk = lock_of(vm);
    if (!lk || strcmp(lk, "snapshot-delete") != 0) {
        sim_task_finish(s, t, "encountered invalid lock, expected 'snapshot-delete'");
        return;
    }
    if (!snap) {
        char msg[128];
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    json_t *np = json_incref(json_object_get(snap, "parent"));
    unlink_parent(vm->conf, name, np);
    const char *k;
    json_t *v;
    json_object_foreach(vm->snaps, k, v)
    {
        if (strcmp(k, name) != 0)
            unlink_parent(v, name, np);
    }
    json_decref(np);
    json_object_del(vm->snaps, name);
    json_object_del(vm->conf, "lock");
    sim_task_finish(s, t, "OK");
}

/* ---- qmrollback ------------------------------------------------------------ */

static void rollback_prepare(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    const char *name = arg_str(t, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    char msg[160];
    if (is_template(vm)) {
        sim_task_finish(s, t, "you can't rollback if vm is a template");
        return;
    }
    if (!snap) {
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    const char *st = json_string_value(json_object_get(snap, "snapstate"));
    if (st) {
        snprintf(msg, sizeof msg, "unable to rollback to incomplete snapshot (snapstate = %s)", st);
        sim_task_finish(s, t, msg);
        return;
    }
    if (lock_of(vm)) {
        snprintf(msg, sizeof msg, "VM is locked (%s)", lock_of(vm));
        sim_task_finish(s, t, msg);
        return;
    }
    if (vm->power != VM_STOPPED) { /* vm_stop with a 5 s timeout */
        vm->power = VM_STOPPED;
        qemu_apply_pending(vm);
    }
    json_object_set_new(vm->conf, "lock", json_string("rollback"));
    struct snaplog l = {t, vm->node, name, "rollback"};
    int ndisks = each_disk(snap, log_disk, &l);
    t->dur = 0.5 + 0.3 * ndisks;
    t->t0 = now;
    t->phase = P_WORK;
}

static void rollback_commit(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    const char *name = arg_str(t, "snapname");
    json_t *snap = vmops_snap_find(vm, name);
    const char *lk = lock_of(vm);
    if (!lk || strcmp(lk, "rollback") != 0) {
        sim_task_finish(s, t, "got wrong lock");
        return;
    }
    if (!snap) {
        char msg[128];
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    if (t->fault_exit) { /* the lock stays, as after a failed rollback in PVE */
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    /* the new config: the snapshot's, keeping description and unused disks */
    json_t *conf = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        if (strcmp(k, "description") == 0 ||
            (strncmp(k, "unused", 6) == 0 && isdigit((unsigned char)k[6])))
            json_object_set(conf, k, v);
    }
    json_object_foreach(snap, k, v)
    {
        if (!snap_meta_key(k) && strcmp(k, "runningmachine") != 0 && strcmp(k, "runningcpu") != 0)
            json_object_set(conf, k, v);
    }
    json_object_set_new(conf, "parent", json_string(name));
    json_decref(vm->conf);
    vm->conf = conf;
    json_object_clear(vm->pending);
    json_array_clear(vm->pending_delete);
    if (json_object_get(snap, "vmstate") || arg_true(t, "start")) {
        vm->power = VM_RUNNING; /* from the saved RAM state, or started as asked */
        vm->started = now;
    }
    sim_task_finish(s, t, "OK");
}

/* ---- qmtemplate -------------------------------------------------------------- */

char *vmops_template_refusal(struct sim_vm *vm, const char *disk)
{
    if (lock_of(vm))
        return xasprintf("VM is locked (%s)", lock_of(vm));
    if (vm->snaps && json_object_size(vm->snaps) > 0)
        return xstrdup("unable to create template, because VM contains snapshots");
    if (is_template(vm) && !disk)
        return xstrdup("you can't convert a template to a template");
    if (vm->power != VM_STOPPED)
        return xstrdup("you can't convert a VM to template if VM is running");
    return NULL;
}

/* vdisk_create_base: "vm-<id>-disk-N" becomes "base-<id>-disk-N"; on
 * lvmthin a linked clone's "base-A-disk-0/vm-B-disk-0" becomes
 * "base-B-disk-0" (thin volumes do not keep their origin). */
static json_t *base_drive(struct sim_task *t, struct sim_node *n, const char *d)
{
    const char *colon = strchr(d, ':');
    if (!colon)
        return json_string(d);
    size_t vl = strcspn(colon + 1, ",");
    char *vol = xstrndup(colon + 1, vl);
    const char *slash = strrchr(vol, '/');
    const char *name = slash ? slash + 1 : vol;
    const char *vm = strstr(name, "vm-");
    json_t *r;
    if (!vm || strncmp(name, "base-", 5) == 0) {
        r = json_string(d);
    } else if (is_lvmthin(n, d)) {
        sim_task_log(t, "  Renamed \"%s\" to \"base-%s\" in volume group \"pve\"", name, vm + 3);
        sim_task_log(t, "  Logical volume pve/base-%s changed.", vm + 3);
        sim_task_log(t, "WARNING: Combining activation change with other commands is not advised.");
        r = json_sprintf("%.*sbase-%s%s", (int)(colon - d + 1), d, vm + 3, colon + 1 + vl);
    } else {
        r = json_sprintf("%.*s%.*sbase-%s%s", (int)(colon - d + 1), d, (int)(vm - vol), vol, vm + 3,
                         colon + 1 + vl);
    }
    free(vol);
    return r;
}

static void template_step(struct sim *s, struct sim_task *t, struct sim_vm *vm, double now)
{
    if (t->phase == P_PREP) {
        char *why = vmops_template_refusal(vm, arg_str(t, "disk"));
        if (why) {
            sim_task_finish(s, t, why);
            free(why);
            return;
        }
        t->dur = 0.3 + 0.3 * each_disk(vm->conf, NULL, NULL);
        t->t0 = now;
        t->phase = P_WORK;
        return;
    }
    if (t->fault_exit) {
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    json_object_set_new(vm->conf, "template", json_integer(1));
    const char *disk = arg_str(t, "disk");
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(vm->conf, tmp, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !vmops_is_volume_key(k) || strncmp(k, "unused", 6) == 0 || vmops_is_cdrom(d) ||
            (disk && strcmp(disk, k) != 0))
            continue;
        json_object_set_new(vm->conf, k, base_drive(t, vm->node, d));
    }
    sim_task_finish(s, t, "OK");
}

/* ---- dispatch ------------------------------------------------------------------ */

static void two_phase(struct sim *s, struct sim_task *t, double now,
                      void (*prep)(struct sim *, struct sim_task *, struct sim_vm *, double),
                      void (*commit)(struct sim *, struct sim_task *, struct sim_vm *, double))
{
    if (!forked(t, now))
        return;
    if (t->phase == P_PREP) {
        under_flock(s, t, now, prep);
        return;
    }
    if (t->phase == P_WORK) {
        if (now - t->t0 < t->dur)
            return;
        t->phase = P_COMMIT;
    }
    under_flock(s, t, now, commit);
}

void vmops_step(struct sim *s, struct sim_task *t, double now)
{
    switch (t->kind) {
    case TK_SNAPSHOT:
        two_phase(s, t, now, snapshot_prepare, snapshot_commit);
        break;
    case TK_DELSNAPSHOT:
        two_phase(s, t, now, delete_prepare, delete_commit);
        break;
    case TK_ROLLBACK:
        two_phase(s, t, now, rollback_prepare, rollback_commit);
        break;
    case TK_TEMPLATE:
        /* the whole worker runs under lock_config */
        if (!forked(t, now))
            return;
        if (t->phase == P_WORK && now - t->t0 < t->dur)
            return;
        under_flock(s, t, now, template_step);
        break;
    case TK_MIGRATE:
    case TK_HAMIGRATE:
        vmops_step_migrate(s, t, now);
        break;
    case TK_MOVEDISK:
        vmops_step_movedisk(s, t, now);
        break;
    default:
        break;
    }
}
