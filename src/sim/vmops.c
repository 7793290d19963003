/* vmops: the snapshot model and the tasks qmsnapshot, qmdelsnapshot,
 * qmrollback (and the containers' vzsnapshot, vzdelsnapshot, vzrollback,
 * the same AbstractConfig code with pve-container's hooks) and qmtemplate,
 * in the steps of pve-guest-common's AbstractConfig (snapshot_create,
 * snapshot_delete, snapshot_rollback) and qemu-server's template worker,
 * with their texts. Migration steps are in h_migrate.c; this file
 * dispatches to them. */
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

json_t **vmops_guest_conf(struct vmops_guest g)
{
    return g.vm ? &g.vm->conf : &g.ct->conf;
}

json_t **vmops_guest_snaps(struct vmops_guest g)
{
    return g.vm ? &g.vm->snaps : &g.ct->snaps;
}

json_t *vmops_guest_snap(struct vmops_guest g, const char *name)
{
    json_t *snaps = *vmops_guest_snaps(g);
    return snaps && name ? json_object_get(snaps, name) : NULL;
}

static struct sim_node *guest_node(struct vmops_guest g)
{
    return g.vm ? g.vm->node : g.ct->node;
}

static bool guest_running(struct vmops_guest g)
{
    return g.vm ? g.vm->power != VM_STOPPED : g.ct->running;
}

/* guest_type: the word of check_lock's "... is locked (...)" */
static const char *guest_type(struct vmops_guest g)
{
    return g.vm ? "VM" : "CT";
}

/* A key of the config that holds a volume (unusedN included). */
static bool guest_volume_key(bool ct, const char *k)
{
    return ct ? sim_ct_volume_key(k) : vmops_is_volume_key(k);
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

static bool conf_has_volid(json_t *conf, const char *volid, bool ct)
{
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        if (guest_volume_key(ct, k) && json_is_string(v) && volid_eq(json_string_value(v), volid))
            return true;
    }
    return false;
}

static bool on_storage(const char *drive, const char *storage)
{
    size_t n = strlen(storage);
    return strncmp(drive, storage, n) == 0 && drive[n] == ':';
}

int64_t vmops_snap_storage(json_t *conf, json_t *snaps, const char *storage, bool ct)
{
    if (!snaps)
        return 0;
    int64_t used = 0;
    json_t *seen = json_object();
    const char *name;
    json_t *snap;
    json_object_foreach(snaps, name, snap)
    {
        const char *vs = json_string_value(json_object_get(snap, "vmstate"));
        if (vs && on_storage(vs, storage))
            used += vmstate_size(snap);
        const char *k;
        json_t *v;
        json_object_foreach(snap, k, v)
        {
            const char *d = json_string_value(v);
            if (!d || !guest_volume_key(ct, k) || !on_storage(d, storage) || vmops_is_cdrom(d) ||
                conf_has_volid(conf, d, ct))
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

static const char *lock_of(struct vmops_guest g)
{
    return json_string_value(json_object_get(*vmops_guest_conf(g), "lock"));
}

static bool is_template(struct vmops_guest g)
{
    json_t *v = json_object_get(*vmops_guest_conf(g), "template");
    return json_is_true(v) || json_integer_value(v) != 0;
}

/* A container's snapshot tasks are the vz* kinds. */
static bool ct_task(const struct sim_task *t)
{
    return t->kind == TK_VZSNAPSHOT || t->kind == TK_VZDELSNAPSHOT || t->kind == TK_VZROLLBACK ||
           t->kind == TK_VZTEMPLATE;
}

/* The task's guest, or NULL members and the task failed with load_config's
 * "Configuration file ... does not exist". */
static struct vmops_guest task_guest(struct sim *s, struct sim_task *t)
{
    struct vmops_guest g = {0};
    if (ct_task(t))
        g.ct = sim_ct_find(s, t->node, t->vmid);
    else
        g.vm = sim_vm_find(s, t->node, t->vmid);
    if (g.vm || g.ct)
        return g;
    char *m = ct_task(t) ? xasprintf("Configuration file 'nodes/%s/lxc/%d.conf' does not exist",
                                     t->node->name, t->vmid)
                         : qemu_noconf_msg(t->node, t->vmid);
    sim_task_finish(s, t, m);
    free(m);
    return g;
}

static bool guest_flock_try(struct vmops_guest g)
{
    return g.vm ? sim_flock_try(g.vm, true) : sim_ct_flock_try(g.ct);
}

static void guest_flock_release(struct sim *s, struct vmops_guest g)
{
    if (g.vm)
        sim_flock_release(s, g.vm, true);
    else
        sim_ct_flock_release(s, g.ct);
}

typedef void (*guest_fn)(struct sim *, struct sim_task *, struct vmops_guest, double);

/* Run `fn` under the guest's flock, the way lock_config does: wait up to
 * 10 s from the phase's start. Returns 1 when it ran, 0 to keep waiting, -1
 * when the task ended (lock timeout, guest gone). */
static int under_flock(struct sim *s, struct sim_task *t, double now, guest_fn fn)
{
    struct vmops_guest g = task_guest(s, t);
    if (!g.vm && !g.ct)
        return -1;
    if (t->deadline == 0)
        t->deadline = now + LOCK_TIMEOUT;
    if (!guest_flock_try(g)) {
        if (now < t->deadline)
            return 0;
        char lf[96], msg[160];
        snprintf(msg, sizeof msg, "can't lock file '%s' - got timeout",
                 g.vm ? sim_lockfile(t->vmid, lf) : sim_ct_lockfile(t->vmid, lf));
        sim_task_finish(s, t, msg);
        return -1;
    }
    t->deadline = 0;
    fn(s, t, g, now);
    guest_flock_release(s, g);
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

/* Every volume of a config the snapshot code iterates (foreach_volume): a
 * VM's disks but CD-ROMs; a container's rootfs and mount points but bind
 * mounts and devices (their "volume" is a path). Calls fn(key, drive). */
static int each_disk(bool ct, json_t *conf, void (*fn)(void *, const char *, const char *),
                     void *ctx)
{
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !guest_volume_key(ct, k) || strncmp(k, "unused", 6) == 0 ||
            (ct ? d[0] == '/' : vmops_is_cdrom(d)))
            continue;
        if (fn)
            fn(ctx, k, d);
        n++;
    }
    return n;
}

/* ---- qmsnapshot, vzsnapshot ------------------------------------------------ */

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
    bool ct;
};

static void log_disk(void *ctx, const char *k, const char *d)
{
    struct snaplog *l = ctx;
    char vn[128];
    vmops_vol_name(d, vn, sizeof vn);
    bool thin = is_lvmthin(l->n, d);
    if (strcmp(l->what, "create") == 0) {
        if (!l->ct) /* qemu-server's own line; pve-container prints none */
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

/* has_feature('snapshot'): every volume's storage can snapshot it. A
 * container's bind mount or device is no volume of a storage: it has no
 * such feature (volume_has_feature answers undef for a path). */
static bool all_can_snapshot(struct vmops_guest g)
{
    const char *k;
    json_t *v;
    json_object_foreach(*vmops_guest_conf(g), k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !guest_volume_key(g.ct, k) || strncmp(k, "unused", 6) == 0)
            continue;
        if (g.ct ? d[0] == '/' || !vmops_drive_can_snapshot(g.ct->node, d)
                 : !vmops_is_cdrom(d) && !vmops_drive_can_snapshot(g.vm->node, d))
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

/* __snapshot_save_vmstate (qemu-server only): the RAM state volume; the
 * bytes to write. */
static double save_vmstate(struct sim_task *t, struct sim_vm *vm, json_t *snap, const char *name)
{
    char sid[64];
    vmstate_storage(vm, sid, sizeof sid);
    json_object_set_new(snap, "vmstate", json_sprintf("%s:vm-%d-state-%s", sid, vm->vmid, name));
    json_object_set_new(snap, "runningmachine", json_string("pc-i440fx-9.0+pve0"));
    json_object_set_new(snap, "runningcpu",
                        json_string("kvm64,enforce,+kvm_pv_eoi,+kvm_pv_unhalt,+lahf_lm,+sep"));
    sim_task_log(t, "saving VM state and RAM using storage '%s'", sid);
    return (double)sim_vm_maxmem(vm) / 2; /* what a guest typically has dirtied */
}

/* __snapshot_prepare: a snapshot that names the new one as its parent
 * loses that reference. */
static void drop_bogus_parents(struct sim_task *t, json_t *snaps, const char *name)
{
    const char *sn;
    json_t *snap;
    json_object_foreach(snaps, sn, snap)
    {
        const char *p = json_string_value(json_object_get(snap, "parent"));
        if (p && strcmp(p, name) == 0) {
            sim_task_log(t,
                         "deleting parent '%s' reference from '%s' to avoid bogus snapshot cycle.",
                         p, sn);
            json_object_del(snap, "parent");
        }
    }
}

static void snapshot_prepare(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    const char *name = sim_task_arg(t, "snapname");
    json_t *conf = *vmops_guest_conf(g), **snaps = vmops_guest_snaps(g);
    struct sim_node *node = guest_node(g);
    if (is_template(g)) {
        sim_task_finish(s, t, "you can't take a snapshot if it's a template");
        return;
    }
    char msg[160];
    if (lock_of(g)) {
        snprintf(msg, sizeof msg, "%s is locked (%s)", guest_type(g), lock_of(g));
        sim_task_finish(s, t, msg);
        return;
    }
    if (vmops_guest_snap(g, name)) {
        snprintf(msg, sizeof msg, "snapshot name '%s' already used", name);
        sim_task_finish(s, t, msg);
        return;
    }
    if (!all_can_snapshot(g)) {
        sim_task_finish(s, t, "snapshot feature is not available");
        return;
    }
    json_object_set_new(conf, "lock", json_string("snapshot"));
    if (!*snaps)
        *snaps = json_object();
    drop_bogus_parents(t, *snaps, name);
    json_t *snap = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        if (!snap_meta_key(k))
            json_object_set(snap, k, v);
    }
    json_object_set_new(snap, "snapstate", json_string("prepare"));
    json_object_set_new(snap, "snaptime", json_integer(wall_s()));
    const char *desc = sim_task_arg(t, "description");
    if (desc && *desc)
        json_object_set_new(snap, "description", json_string(desc));
    double ram = 0;
    if (g.vm && guest_running(g) && sim_task_arg_true(t, "vmstate"))
        ram = save_vmstate(t, g.vm, snap, name);
    json_object_set_new(*snaps, name, snap);
    struct snaplog l = {t, node, name, "create", g.ct != NULL};
    int ndisks = each_disk(g.ct, conf, NULL, NULL);
    t->bytes_total = ram;
    t->dur = 0.3 + 0.2 * ndisks + ram / node->bandwidth;
    t->t0 = now;
    t->phase = P_WORK;
    if (ram > 0)
        sim_task_log(t, "completed saving the VM state in %ds, saved %.2f GiB",
                     (int)(ram / node->bandwidth) + 1, ram / (1024.0 * MiB));
    each_disk(g.ct, conf, log_disk, &l);
}

/* The commit half of a snapshot, delete or rollback. PVE lets the config's
 * flock go while the disks work and reads the config again here, so it
 * checks again that the config holds the lock its prepare half set (`wrong`
 * is PVE's text for each) and that the snapshot is still there. False with
 * the task finished when not. */
static bool commit_check(struct sim *s, struct sim_task *t, struct vmops_guest g, const char *lock,
                         const char *wrong, const char *name, const json_t *snap)
{
    const char *lk = lock_of(g);
    if (!lk || strcmp(lk, lock) != 0) {
        sim_task_finish(s, t, wrong);
        return false;
    }
    if (!snap) {
        char msg[128];
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return false;
    }
    return true;
}

static void snapshot_commit(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    (void)now;
    const char *name = sim_task_arg(t, "snapname");
    json_t *conf = *vmops_guest_conf(g), *snap = vmops_guest_snap(g, name);
    if (t->fault_exit) {
        sim_task_log(t, "snapshot create failed: starting cleanup");
        /* PVE's cleanup is a forced delete, which can fail in turn: the
         * snapshot then stays, snapstate "prepare" (cleanup_fails) */
        if (snap && t->fault_keep)
            sim_task_log(t, "could not remove disk snapshot: cleanup failed");
        else if (snap)
            json_object_del(*vmops_guest_snaps(g), name);
        json_object_del(conf, "lock");
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    if (!commit_check(s, t, g, "snapshot", "missing snapshot lock", name, snap))
        return;
    json_object_del(snap, "snapstate");
    json_object_del(conf, "lock");
    json_object_set_new(conf, "parent", json_string(name));
    sim_task_finish(s, t, "OK");
}

/* ---- qmdelsnapshot, vzdelsnapshot -------------------------------------------- */

static void delete_prepare(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    const char *name = sim_task_arg(t, "snapname");
    json_t *conf = *vmops_guest_conf(g), *snap = vmops_guest_snap(g, name);
    char msg[128];
    if (!snap) {
        snprintf(msg, sizeof msg, "snapshot '%s' does not exist", name);
        sim_task_finish(s, t, msg);
        return;
    }
    if (lock_of(g)) {
        snprintf(msg, sizeof msg, "%s is locked (%s)", guest_type(g), lock_of(g));
        sim_task_finish(s, t, msg);
        return;
    }
    json_object_set_new(conf, "lock", json_string("snapshot-delete"));
    if (is_template(g)) { /* the lock stays, as it does in PVE */
        sim_task_finish(s, t, "you can't delete a snapshot if vm is a template");
        return;
    }
    json_object_set_new(snap, "snapstate", json_string("delete"));
    struct snaplog l = {t, guest_node(g), name, "delete", g.ct != NULL};
    int ndisks = each_disk(g.ct, snap, log_disk, &l);
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

static void delete_commit(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    (void)now;
    const char *name = sim_task_arg(t, "snapname");
    json_t *conf = *vmops_guest_conf(g), *snaps = *vmops_guest_snaps(g);
    json_t *snap = vmops_guest_snap(g, name);
    if (t->fault_exit) {
        if (snap)
            json_object_del(snap, "snapstate");
        json_object_del(conf, "lock");
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    if (!commit_check(s, t, g, "snapshot-delete",
                      "encountered invalid lock, expected 'snapshot-delete'", name, snap))
        return;
    json_t *np = json_incref(json_object_get(snap, "parent"));
    unlink_parent(conf, name, np);
    const char *k;
    json_t *v;
    json_object_foreach(snaps, k, v)
    {
        if (strcmp(k, name) != 0)
            unlink_parent(v, name, np);
    }
    json_decref(np);
    json_object_del(snaps, name);
    json_object_del(conf, "lock");
    sim_task_finish(s, t, "OK");
}

/* ---- qmrollback, vzrollback ---------------------------------------------------- */

/* __snapshot_rollback_vm_stop: qemu-server stops the VM (5 s timeout),
 * pve-container kills the container (vm_stop($vmid, 1)). */
static void rollback_stop(struct sim *s, struct vmops_guest g)
{
    if (g.vm && g.vm->power != VM_STOPPED) {
        sim_vm_set_power(s, g.vm, VM_STOPPED);
        qemu_apply_pending(g.vm);
    } else if (g.ct) {
        g.ct->running = false;
    }
}

static void rollback_prepare(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    const char *name = sim_task_arg(t, "snapname");
    json_t *snap = vmops_guest_snap(g, name);
    char msg[160];
    if (is_template(g)) {
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
    if (lock_of(g)) {
        snprintf(msg, sizeof msg, "%s is locked (%s)", guest_type(g), lock_of(g));
        sim_task_finish(s, t, msg);
        return;
    }
    rollback_stop(s, g);
    json_object_set_new(*vmops_guest_conf(g), "lock", json_string("rollback"));
    struct snaplog l = {t, guest_node(g), name, "rollback", g.ct != NULL};
    int ndisks = each_disk(g.ct, snap, log_disk, &l);
    t->dur = 0.5 + 0.3 * ndisks;
    t->t0 = now;
    t->phase = P_WORK;
}

struct unused_scan {
    json_t *snap;
    json_t *conf;
    bool ct;
    bool found;
    const char *volid;
};

static void match_volid(void *ctx, const char *k, const char *d)
{
    (void)k;
    struct unused_scan *u = ctx;
    u->found = u->found || volid_eq(d, u->volid);
}

void vmops_add_unused(json_t *conf, const char *volid)
{
    size_t vl = strcspn(volid, ",");
    int free_n = -1;
    for (int i = 255; i >= 0; i--) {
        char key[24];
        snprintf(key, sizeof key, "unused%d", i);
        const char *u = json_string_value(json_object_get(conf, key));
        if (u && volid_eq(u, volid))
            return;
        if (!u)
            free_n = i;
    }
    if (free_n >= 0) {
        char key[24];
        snprintf(key, sizeof key, "unused%d", free_n);
        json_object_set_new(conf, key, json_stringn(volid, vl));
    }
}

static void unused_if_not_in_snap(void *ctx, const char *k, const char *d)
{
    (void)k;
    struct unused_scan *u = ctx;
    struct unused_scan probe = {.volid = d};
    each_disk(u->ct, u->snap, match_volid, &probe);
    if (!probe.found)
        vmops_add_unused(u->conf, d);
}

bool vmops_conf_uses_volume(bool ct, json_t *conf, const char *volid)
{
    struct unused_scan u = {.volid = volid};
    each_disk(ct, conf, match_volid, &u);
    return u.found;
}

void vmops_keep_volume_size(struct sim *s, const char *drive)
{
    size_t vl = strcspn(drive, ",");
    char vol[160];
    if (sim_disk_size(drive) <= 0 || vl >= sizeof vol)
        return;
    snprintf(vol, sizeof vol, "%.*s", (int)vl, drive);
    if (!s->vol_sizes)
        s->vol_sizes = json_object();
    json_object_set_new(s->vol_sizes, vol, json_integer(sim_disk_size(drive)));
}

/* The new config: the snapshot's (__snapshot_apply_config), keeping the
 * description and unused volumes, the current volumes the snapshot does
 * not have among them (__snapshot_rollback_get_unused). */
static json_t *rollback_conf(struct vmops_guest g, json_t *snap, const char *name)
{
    json_t *old = *vmops_guest_conf(g);
    struct unused_scan u = {.snap = snap, .conf = old, .ct = g.ct != NULL};
    each_disk(g.ct, old, unused_if_not_in_snap, &u);
    json_t *conf = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(old, k, v)
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
    return conf;
}

static void rollback_commit(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    const char *name = sim_task_arg(t, "snapname");
    json_t *snap = vmops_guest_snap(g, name);
    if (!commit_check(s, t, g, "rollback", "got wrong lock", name, snap))
        return;
    if (t->fault_exit) { /* the lock stays, as after a failed rollback in PVE */
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    json_t *conf = rollback_conf(g, snap, name), **cur = vmops_guest_conf(g);
    json_decref(*cur);
    *cur = conf;
    json_object_clear(g.vm ? g.vm->pending : g.ct->pending);
    json_array_clear(g.vm ? g.vm->pending_delete : g.ct->pending_delete);
    if (g.vm && (json_object_get(snap, "vmstate") || sim_task_arg_true(t, "start"))) {
        sim_vm_set_power(s, g.vm, VM_RUNNING); /* from the saved RAM state, or started as asked */
        g.vm->started = now;
    }
    sim_task_finish(s, t, "OK");
    /* pve-container's rollback calls the start API: a vzstart task of its own */
    if (g.ct && sim_task_arg_true(t, "start"))
        lxc_start_task(s, g.ct->node, g.ct->vmid, t->user, now);
}

/* ---- qmtemplate -------------------------------------------------------------- */

char *vmops_template_refusal(struct vmops_guest g, const char *disk)
{
    const char *type = guest_type(g);
    json_t *snaps = *vmops_guest_snaps(g);
    if (lock_of(g))
        return xasprintf("%s is locked (%s)", type, lock_of(g));
    if (snaps && json_object_size(snaps) > 0)
        return xasprintf("unable to create template, because %s contains snapshots", type);
    if (is_template(g) && !disk)
        return xstrdup("you can't convert a template to a template");
    if (guest_running(g))
        return g.vm ? xstrdup("you can't convert a VM to template if VM is running")
                    : xstrdup("you can't convert a CT to template if the CT is running");
    return NULL;
}

/* volume_has_feature('template'): the storages whose plugin offers it for
 * a current volume (LVM's thick volumes have none; a container's bind
 * mount is no storage volume). */
static bool can_template(struct sim_node *n, const char *d)
{
    if (d[0] == '/')
        return false;
    char *sid = sim_disk_storage(d);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    return st && strcmp(st->type, "lvm") != 0;
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

/* pve-container's template_create: every mount point's storage must
 * offer the feature, checked before any volume is renamed. */
static bool ct_template_refused(struct sim *s, struct sim_task *t, struct sim_ct *ct)
{
    const char *k;
    json_t *v;
    json_object_foreach(ct->conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !sim_ct_volume_key(k) || strncmp(k, "unused", 6) == 0 ||
            can_template(ct->node, d))
            continue;
        char msg[512];
        snprintf(msg, sizeof msg, "Template feature is not available for '%.*s'",
                 (int)strcspn(d, ","), d);
        sim_task_finish(s, t, msg);
        return true;
    }
    return false;
}

static void template_step(struct sim *s, struct sim_task *t, struct vmops_guest g, double now)
{
    json_t *conf = *vmops_guest_conf(g);
    if (t->phase == P_PREP) {
        char *why = vmops_template_refusal(g, sim_task_arg(t, "disk"));
        if (why) {
            sim_task_finish(s, t, why);
            free(why);
            return;
        }
        t->dur = 0.3 + 0.3 * each_disk(g.ct, conf, NULL, NULL);
        t->t0 = now;
        t->phase = P_WORK;
        return;
    }
    if (t->fault_exit) {
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    if (g.ct && ct_template_refused(s, t, g.ct))
        return;
    const char *disk = sim_task_arg(t, "disk");
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(conf, tmp, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !guest_volume_key(g.ct, k) || strncmp(k, "unused", 6) == 0 ||
            (g.ct ? d[0] == '/' : vmops_is_cdrom(d)) || (disk && strcmp(disk, k) != 0))
            continue;
        json_object_set_new(conf, k, base_drive(t, guest_node(g), d));
    }
    json_object_set_new(conf, "template", json_integer(1));
    sim_task_finish(s, t, "OK");
}

/* ---- dispatch ------------------------------------------------------------------ */

static void two_phase(struct sim *s, struct sim_task *t, double now, guest_fn prep, guest_fn commit)
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
    case TK_VZSNAPSHOT:
        two_phase(s, t, now, snapshot_prepare, snapshot_commit);
        break;
    case TK_DELSNAPSHOT:
    case TK_VZDELSNAPSHOT:
        two_phase(s, t, now, delete_prepare, delete_commit);
        break;
    case TK_ROLLBACK:
    case TK_VZROLLBACK:
        two_phase(s, t, now, rollback_prepare, rollback_commit);
        break;
    case TK_TEMPLATE:
    case TK_VZTEMPLATE:
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
