/* h_migrate: migration of a VM inside the cluster — the preconditions
 * (GET .../migrate), the request's checks (qemu-server API2/Qemu.pm
 * migrate_vm), the hamigrate path for HA-managed VMs, and the qmigrate task
 * in the phases of QemuMigrate.pm: prepare (locks, local devices, target
 * storages, ssh to the target), volume scan, copy of local disks and, when
 * online, of the memory over the link, then the config moves to the target.
 * Texts and log lines are PVE's. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FORK_DELAY 0.05
#define LOCK_TIMEOUT 10.0
#define SSH_REFUSED 3.0     /* ssh to a node that is down: no route to host */
#define SSH_BLACKHOLE 130.0 /* ssh to a node that drops everything: TCP gives up */
#define SETUP_TIME 1.5      /* tunnel, target start, cleanup besides the copying */

enum { M_FORK = 0, M_LOCK, M_CONNECT, M_COPY };

/* ---- storage maps (PVE::JSONSchema::parse_idmap) ------------------------- */

static bool storage_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 2 || !islower((unsigned char)id[0]) || !isalnum((unsigned char)id[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)id[i]) && !isdigit((unsigned char)id[i]) &&
            !strchr("-_.", id[i]))
            return false;
    return true;
}

/* Parse "src:dst,..." / "dst" / "1" into {"identity":true, "default":..,
 * "entries":{..}}; NULL with *err on a bad map. */
json_t *sim_parse_idmap(const char *spec, char **err)
{
    json_t *map = json_object(), *entries = json_object();
    json_object_set_new(map, "entries", entries);
    for (const char *p = spec; *p;) {
        size_t n = strcspn(p, ",; \t");
        char *e = xstrndup(p, n);
        p += n;
        while (*p && strchr(",; \t", *p))
            p++;
        if (!*e) {
            free(e);
            continue;
        }
        char *colon = strchr(e, ':');
        const char *bad = NULL;
        if (strcmp(e, "1") == 0) {
            json_object_set_new(map, "identity", json_true());
        } else if (colon && colon != e && colon[1] && !strchr(colon + 1, ':')) {
            *colon = '\0';
            bad = !storage_id_ok(e) ? e : !storage_id_ok(colon + 1) ? colon + 1 : NULL;
            if (!bad && json_object_get(entries, e))
                *err = xasprintf("duplicate mapping for source '%s'", e);
            else if (!bad)
                json_object_set_new(entries, e, json_string(colon + 1));
            *colon = ':';
        } else if (!storage_id_ok(e)) {
            bad = e;
        } else if (json_object_get(map, "default")) {
            *err = xstrdup("default target ID can only be provided once");
        } else {
            json_object_set_new(map, "default", json_string(e));
        }
        if (bad)
            *err = xasprintf("entry '%s' contains invalid ID - storage ID '%s' contains illegal "
                             "characters",
                             e, bad);
        free(e);
        if (*err) {
            json_decref(map);
            return NULL;
        }
    }
    if (json_object_get(map, "identity") &&
        (json_object_get(map, "default") || json_object_size(entries))) {
        *err = xstrdup("identity mapping cannot be combined with other mappings");
        json_decref(map);
        return NULL;
    }
    return map;
}

/* map_id: the target storage of `sid` under the map (NULL map: itself). */
const char *sim_map_id(json_t *map, const char *sid)
{
    if (!map || json_object_get(map, "identity"))
        return sid;
    const char *e = json_string_value(json_object_get(json_object_get(map, "entries"), sid));
    if (e)
        return e;
    const char *d = json_string_value(json_object_get(map, "default"));
    return d ? d : sid;
}

/* ---- storages -------------------------------------------------------------- */

static struct sim_storage *storage_anywhere(struct sim *s, const char *sid)
{
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_storage *st = sim_storage_find(&s->nodes[i], sid);
        if (st)
            return st;
    }
    return NULL;
}

char *sim_mig_storage_unavailable(struct sim *s, const char *sid, struct sim_node *n)
{
    if (!storage_anywhere(s, sid))
        return xasprintf("storage '%s' does not exist", sid);
    if (n && !sim_storage_find(n, sid))
        return xasprintf("storage '%s' is not available on node '%s'", sid, n->name);
    return NULL;
}

static bool storage_shared(struct sim_node *n, const char *drive)
{
    char *sid = sim_disk_storage(drive);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    return st && st->shared;
}

/* Every volume of the config's drives (not snapshots), as foreach_volume. */
static char *check_storage_availability(struct sim *s, struct sim_vm *vm, struct sim_node *target)
{
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !vmops_is_volume_key(k) || strncmp(k, "unused", 6) == 0)
            continue;
        char *sid = sim_disk_storage(d);
        if (!sid)
            continue;
        char *err = sim_mig_storage_unavailable(s, sid, NULL);
        if (!err)
            err = sim_mig_storage_unavailable(s, sid, target);
        struct sim_storage *st = storage_anywhere(s, sid);
        if (!err && st && !strstr(st->content, "images"))
            err = xasprintf("%.*s: content type 'images' is not available on storage '%s'",
                            (int)strcspn(d, ","), d, sid);
        free(sid);
        if (err)
            return err;
    }
    return NULL;
}

/* check_storage_access_migrate for one target storage. */
/* $check_storage_access_migrate: enabled on the target, Datastore.AllocateSpace
 * (*status 403), images content */
static char *check_target_storage(struct sim_call *c, const char *sid, struct sim_node *target,
                                  int *status)
{
    struct sim *s = c->s;
    char *err = sim_mig_storage_unavailable(s, sid, target);
    if (err)
        return err;
    char path[96];
    snprintf(path, sizeof path, "/storage/%.64s", sid);
    if (!call_can(c, path, "Datastore.AllocateSpace")) {
        *status = 403;
        return xasprintf("Permission check failed (%s, Datastore.AllocateSpace)", path);
    }
    if (!strstr(sim_storage_find(target, sid)->content, "images"))
        return xasprintf("storage '%s' does not support vm images", sid);
    return NULL;
}

/* Local devices that block a migration (check_local_resources). */
static void local_resources(struct sim_vm *vm, json_t *out)
{
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *sv = json_string_value(v);
        size_t l = strcspn(k, "0123456789");
        if (l == strlen(k) || !isdigit((unsigned char)k[l]))
            continue;
        bool fam = (l == 3 && !strncmp(k, "usb", 3)) || (l == 7 && !strncmp(k, "hostpci", 7)) ||
                   (l == 6 && !strncmp(k, "serial", 6)) || (l == 8 && !strncmp(k, "parallel", 8)) ||
                   (l == 8 && !strncmp(k, "virtiofs", 8));
        if (!fam || (l == 6 && sv && strcmp(sv, "socket") == 0) ||
            (l == 3 && sv && strstr(sv, "host=spice")))
            continue;
        json_array_append_new(out, json_string(k));
    }
}

/* ---- GET .../migrate ------------------------------------------------------- */

static void h_precondition(struct sim_call *c)
{
    struct sim *s = c->s;
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return;
    const char *lk = json_string_value(json_object_get(vm->conf, "lock"));
    if (lk) {
        call_fail(c, 500, "VM is locked (%s)", lk);
        return;
    }
    json_t *allowed = json_array(), *not_allowed = json_object(), *disks = json_array();
    json_t *locres = json_array();
    local_resources(vm, locres);
    for (int i = 0; i < s->nnodes && !s->o.standalone; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n == c->node)
            continue;
        json_t *miss = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(vm->conf, k, v)
        {
            const char *d = json_string_value(v);
            char *sid = d && vmops_is_volume_key(k) ? sim_disk_storage(d) : NULL;
            bool dup = false;
            size_t j;
            json_t *m;
            json_array_foreach(miss, j, m) dup |= sid && strcmp(json_string_value(m), sid) == 0;
            if (sid && !dup && !sim_storage_find(n, sid))
                json_array_append_new(miss, json_string(sid));
            free(sid);
        }
        if (json_array_size(miss))
            json_object_set_new(not_allowed, n->name,
                                json_pack("{s:o}", "unavailable_storages", miss));
        else {
            json_decref(miss);
            json_array_append_new(allowed, json_string(n->name));
        }
    }
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !vmops_is_volume_key(k) || storage_shared(vm->node, d) ||
            strncmp(d, "none", 4) == 0 || !strchr(d, ':'))
            continue;
        json_t *e = json_pack("{s:s%,s:I,s:s,s:i}", "volid", d, strcspn(d, ","), "size",
                              (json_int_t)sim_disk_size(d), "drivename", k, "is_attached", 1);
        json_object_set_new(e, "cdrom", json_integer(vmops_is_cdrom(d)));
        json_object_set_new(e, "is_unused", json_integer(strncmp(k, "unused", 6) == 0));
        if (strstr(d, "-cloudinit"))
            json_object_set_new(e, "is_cloudinit", json_integer(1));
        json_array_append_new(disks, e);
    }
    c->data =
        json_pack("{s:i,s:o,s:o,s:o,s:o,s:[],s:{}}", "running", vm->power != VM_STOPPED ? 1 : 0,
                  "allowed_nodes", allowed, "not_allowed_nodes", not_allowed, "local_disks", disks,
                  "local_resources", locres, "mapped-resources", "mapped-resource-info");
    if (s->o.pve_version >= 9)
        json_object_set_new(c->data, "has-dbus-vmstate", json_integer(1));
    if (vm->ha && s->o.pve_version >= 9)
        json_object_set_new(c->data, "dependent-ha-resources", json_array());
}

/* ---- POST .../migrate -------------------------------------------------------- */

static bool root_only(struct sim_call *c)
{
    static const char *const opts[] = {"force", "migration_type", "migration_network"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(c->params, opts[i]);
        bool set = i == 0 ? call_bool(c, opts[i], false) : v != NULL;
        if (set && !c->is_root) {
            call_param_fail(c, opts[i], "Only root may use this option.");
            return false;
        }
    }
    return true;
}

static bool storage_checks(struct sim_call *c, struct sim_vm *vm, struct sim_node *target)
{
    const char *ts = call_str(c, "targetstorage");
    char *err = NULL;
    int status = 500;
    if (ts) {
        json_t *map = sim_parse_idmap(ts, &err);
        if (!map) {
            call_param_fail(c, "targetstorage", "failed to parse storage map: %s", err);
            free(err);
            return false;
        }
        /* a mapping other than the identity moves the disks */
        if (!json_object_get(map, "identity") && !call_can_vm(c, vm->vmid, "VM.Config.Disk")) {
            status = 403;
            err = xasprintf("Permission check failed (/vms/%d, VM.Config.Disk)", vm->vmid);
        }
        const char *src;
        json_t *dst;
        json_object_foreach(json_object_get(map, "entries"), src, dst)
        {
            if (!err)
                err = check_target_storage(c, json_string_value(dst), target, &status);
        }
        const char *def = json_string_value(json_object_get(map, "default"));
        if (!err && def)
            err = check_target_storage(c, def, target, &status);
        if (!err && json_object_get(map, "identity"))
            err = check_storage_availability(c->s, vm, target);
        json_decref(map);
    } else {
        err = check_storage_availability(c->s, vm, target);
    }
    if (err) {
        call_fail(c, status, "%s", err);
        free(err);
        return false;
    }
    return true;
}

struct sim_node *sim_mig_target(struct sim_call *c)
{
    const char *tname = call_str(c, "target");
    if (strcmp(tname, c->node->name) == 0) {
        call_param_fail(c, "target", "target is local node.");
        return NULL;
    }
    struct sim_node *target = c->s->o.standalone ? NULL : sim_node_find(c->s, tname);
    if (!target) /* PVE::Cluster::check_node_exists */
        call_fail(c, 500, "no such cluster node '%s'", tname);
    return target;
}

static void h_migrate(struct sim_call *c)
{
    struct sim_node *target = sim_mig_target(c);
    if (!target)
        return;
    if (!root_only(c))
        return;
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return;
    const char *lk = json_string_value(json_object_get(vm->conf, "lock"));
    if (lk) {
        call_fail(c, 500, "VM is locked (%s)", lk);
        return;
    }
    bool running = vm->power != VM_STOPPED;
    if (running && !call_bool(c, "online", false)) {
        call_fail(c, 500, "can't migrate running VM without --online");
        return;
    }
    if (!storage_checks(c, vm, target))
        return;
    /* HA-managed VMs: the request only asks the HA manager (ha-manager migrate) */
    bool ha = sim_vm_ha_managed(vm); /* not a resource in state "ignored" */
    vmops_task(c, ha ? "hamigrate" : "qmigrate", vm->vmid, ha ? TK_HAMIGRATE : TK_MIGRATE);
}

const struct sim_route sim_routes_migrate[] = {
    {"GET", "/nodes/{node}/qemu/{vmid}/migrate", h_precondition},
    {"POST", "/nodes/{node}/qemu/{vmid}/migrate", h_migrate},
    {NULL, NULL, NULL},
};

/* ---- the qmigrate task -------------------------------------------------------- */

/* Log lines of AbstractMigrate: "<local time> [ERROR: ]message". */
void sim_mig_log(struct sim_task *t, bool error, const char *fmt, ...)
{
    char msg[900], ts[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    sim_task_log(t, "%s %s%s", ts, error ? "ERROR: " : "", msg);
}

static struct sim_vm *mig_vm(struct sim *s, struct sim_task *t)
{
    return sim_vm_find(s, t->node, t->vmid);
}

static void release(struct sim *s, struct sim_task *t, struct sim_vm *vm)
{
    if (vm && t->locked_dst)
        sim_flock_release(s, vm, true);
    t->locked_dst = false;
}

/* "migration aborted (duration 00:00:03): <err>"; the task's status is
 * "migration aborted". With `cleanup`, phase 1 had set the migrate lock. */
static void abort_migration(struct sim *s, struct sim_task *t, bool cleanup, const char *err)
{
    struct sim_vm *vm = mig_vm(s, t);
    if (cleanup) {
        sim_mig_log(t, true, "%s", err);
        sim_mig_log(t, false, "aborting phase 1 - cleanup resources");
        if (vm)
            json_object_del(vm->conf, "lock");
    }
    int d = (int)(sim_now(s) - t->bytes_done);
    sim_mig_log(t, true, "migration aborted (duration %02d:%02d:%02d): %s", d / 3600, d / 60 % 60,
                d % 60, err);
    release(s, t, vm);
    s->dirty = true;
    sim_task_finish(s, t, "migration aborted");
}

static json_t *task_map(struct sim_task *t)
{
    const char *ts = sim_task_arg(t, "targetstorage");
    char *err = NULL;
    json_t *m = ts ? sim_parse_idmap(ts, &err) : NULL;
    free(err);
    return m;
}

/* prepare(): with the flock held. Returns false when the task ended. */
static bool prepare(struct sim *s, struct sim_task *t, struct sim_vm *vm, struct sim_node *target)
{
    const char *lk = json_string_value(json_object_get(vm->conf, "lock"));
    bool running = vm->power != VM_STOPPED;
    char *err = NULL;
    if (lk)
        err = xasprintf("VM is locked (%s)", lk);
    else if (running && !sim_task_arg_true(t, "online"))
        err = xstrdup("can't migrate running VM without --online");
    if (!err) {
        json_t *res = json_array();
        local_resources(vm, res);
        if (json_array_size(res)) {
            if (running || !sim_task_arg_true(t, "force")) {
                struct buf b = BUF_INIT(BUF_UNLIMITED);
                size_t i;
                json_t *r;
                json_array_foreach(res, i, r)
                    buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(r));
                err = xasprintf("can't migrate VM which uses local devices: %s", buf_str(&b));
                buf_release(&b);
            } else {
                sim_mig_log(t, false, "migrating VM which uses local devices");
            }
        }
        json_decref(res);
    }
    json_t *map = task_map(t);
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        char *sid = d && !err && vmops_is_volume_key(k) ? sim_disk_storage(d) : NULL;
        if (!sid)
            continue;
        const char *tsid = storage_shared(vm->node, d) ? sid : sim_map_id(map, sid);
        err = sim_mig_storage_unavailable(s, tsid, target);
        struct sim_storage *st = err ? NULL : sim_storage_find(target, tsid);
        if (st && !strstr(st->content, "images"))
            err = xasprintf("%.*s: content type 'images' is not available on storage '%s'",
                            (int)strcspn(d, ","), d, tsid);
        free(sid);
    }
    json_decref(map);
    if (err) {
        abort_migration(s, t, false, err);
        free(err);
        return false;
    }
    return true;
}

struct scan {
    struct sim *s;
    struct sim_task *t;
    struct sim_vm *vm;
    bool running, errors;
    double bytes; /* local disk bytes to copy */
    char *fatal;  /* an error after the per-volume checks */
};

static bool in_snapshots(struct sim_vm *vm, const char *volid)
{
    const char *n;
    json_t *snap;
    if (!vm->snaps)
        return false;
    json_object_foreach(vm->snaps, n, snap)
    {
        const char *k;
        json_t *v;
        json_object_foreach(snap, k, v)
        {
            const char *d = json_string_value(v);
            size_t l = strcspn(volid, ",");
            if (d && vmops_is_volume_key(k) && strncmp(d, volid, l) == 0 && (d[l] == ',' || !d[l]))
                return true;
        }
    }
    return false;
}

/* Is this template's base volume used by a linked clone? (A linked
 * clone's own volume, base-T-disk-0/vm-N-disk-0, is no base: PVE's
 * parse_volname says so, and its migration fails as a clone's.) */
static bool base_in_use(struct sim *s, struct sim_vm *vm, const char *volid)
{
    const char *colon = strchr(volid, ':');
    if (!colon || strncmp(colon + 1, "base-", 5) != 0)
        return false;
    size_t l = strcspn(colon + 1, ",/");
    if (colon[1 + l] == '/')
        return false;
    for (struct sim_vm *o = s->vms; o; o = o->next) {
        if (o == vm || o->gone || o->node != vm->node)
            continue;
        const char *k;
        json_t *v;
        json_object_foreach(o->conf, k, v)
        {
            const char *d = json_string_value(v);
            const char *oc = d ? strchr(d, ':') : NULL;
            if (oc && vmops_is_volume_key(k) && strncmp(oc + 1, colon + 1, l) == 0 &&
                oc[1 + l] == '/')
                return true;
        }
    }
    return false;
}

static void scan_volume(struct scan *sc, const char *k, const char *d)
{
    struct sim_task *t = sc->t;
    int vl = (int)strcspn(d, ",");
    if (strncmp(d, "none", 4) == 0 || !strchr(d, ':') || storage_shared(sc->vm->node, d))
        return;
    bool cloudinit = strstr(d, "-cloudinit") != NULL;
    if (vmops_is_cdrom(d) && !cloudinit) {
        sim_mig_log(t, false, "can't migrate local disk '%.*s': local cdrom image", vl, d);
        sc->errors = true;
        return;
    }
    const char *why = NULL;
    bool snap = in_snapshots(sc->vm, d);
    if (snap && !cloudinit) {
        char *sid = sim_disk_storage(d);
        struct sim_storage *st = sid ? sim_storage_find(sc->vm->node, sid) : NULL;
        free(sid);
        size_t l = (size_t)vl;
        bool qcow2 = l > 6 && strncmp(d + l - 6, ".qcow2", 6) == 0;
        if (sc->running)
            why = "online storage migration not possible if non-replicated snapshot exists";
        else if (!(st && strcmp(st->type, "zfspool") == 0) && !qcow2)
            why = "non-migratable snapshot exists";
    }
    if (!why && base_in_use(sc->s, sc->vm, d))
        why = "referenced by linked clone(s)";
    if (!why && sc->running && !cloudinit && !sim_task_arg_true(t, "with-local-disks"))
        why = "can't live migrate attached local disks without with-local-disks option";
    if (why) {
        sim_mig_log(t, false, "can't migrate local disk '%.*s': %s", vl, d, why);
        sc->errors = true;
        return;
    }
    if (cloudinit)
        sim_mig_log(t, false, "found generated disk '%.*s' (in current VM config)", vl, d);
    else
        sim_mig_log(t, false, "found local disk '%.*s' (%s)", vl, d,
                    strncmp(k, "unused", 6) == 0 ? "unused" : "attached");
    sc->bytes += (double)sim_disk_size(d);
    /* a linked clone on local storage cannot leave its base */
    const char *colon = strchr(d, ':');
    const char *slash = memchr(colon + 1, '/', strcspn(colon + 1, ","));
    if (!sc->fatal && slash && strncmp(colon + 1, "base-", 5) == 0)
        sc->fatal = xasprintf("can't migrate '%.*s' as it's a clone of '%.*s' at "
                              "/usr/share/perl5/PVE/QemuMigrate.pm line 586.",
                              vl, d, (int)(slash - colon - 1), colon + 1);
}

/* phase1 up to the copy: lock, volume scan. False when the task ended. */
static bool phase1(struct sim *s, struct sim_task *t, struct sim_vm *vm, struct sim_node *target,
                   double now)
{
    sim_mig_log(t, false, "starting migration of VM %d to node '%s' (10.10.10.%d)", vm->vmid,
                target->name, target->idx + 1);
    json_object_set_new(vm->conf, "lock", json_string("migrate"));
    struct scan sc = {s, t, vm, vm->power != VM_STOPPED, false, 0, NULL};
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        if (vmops_is_volume_key(k) && json_is_string(v))
            scan_volume(&sc, k, json_string_value(v));
    }
    if (sc.errors || sc.fatal) {
        char *e = xasprintf("Problem found while scanning volumes - %s",
                            sc.errors ? "can't migrate VM - check log" : sc.fatal);
        abort_migration(s, t, true, e);
        free(e);
        free(sc.fatal);
        return false;
    }
    double mem = sc.running ? (double)sim_vm_maxmem(vm) / 2 : 0; /* dirtied RAM */
    t->bytes_total = sc.bytes + mem;
    t->dur = SETUP_TIME;
    t->t0 = now;
    json_object_set_new(t->args, "_mem", json_real(mem));
    if (sc.bytes > 0 && !sc.running)
        sim_mig_log(t, false, "copying local disk images");
    if (sc.running && sc.bytes > 0)
        sim_mig_log(t, false, "starting storage migration");
    return true;
}

static double link_bw(struct sim_node *a, struct sim_node *b)
{
    return a->bandwidth < b->bandwidth ? a->bandwidth : b->bandwidth;
}

/* The link, or the request's bwlimit (KiB/s) if lower. */
static double task_bw(struct sim_task *t, struct sim_node *a, struct sim_node *b)
{
    double bw = link_bw(a, b);
    json_t *v = json_object_get(t->args, "bwlimit");
    double lim = json_is_integer(v)  ? (double)json_integer_value(v)
                 : json_is_string(v) ? atof(json_string_value(v))
                                     : 0;
    return lim > 0 && lim * 1024 < bw ? lim * 1024 : bw;
}

/* Rename the moved volumes for the storage map. */
static void map_volumes(struct sim_task *t, struct sim_vm *vm)
{
    json_t *map = task_map(t);
    if (!map)
        return;
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        const char *d = json_string_value(v);
        char *sid = d && vmops_is_volume_key(k) ? sim_disk_storage(d) : NULL;
        if (sid && !storage_shared(vm->node, d) && strcmp(sim_map_id(map, sid), sid) != 0) {
            const char *nsid = sim_map_id(map, sid);
            sim_mig_log(t, false, "volume '%.*s' is '%s%.*s' on the target", (int)strcspn(d, ","),
                        d, nsid, (int)strcspn(d + strlen(sid), ","), d + strlen(sid));
            json_object_set_new(vm->conf, k, json_sprintf("%s%s", nsid, d + strlen(sid)));
        }
        free(sid);
    }
    json_decref(map);
}

static void finish_migration(struct sim *s, struct sim_task *t, struct sim_vm *vm,
                             struct sim_node *target, double now)
{
    double mem = json_real_value(json_object_get(t->args, "_mem"));
    if (mem > 0) {
        sim_mig_log(t, false, "average migration speed: %.1f MiB/s - downtime 42 ms",
                    link_bw(vm->node, target) / (1024 * 1024));
        sim_mig_log(t, false, "migration status: completed");
    }
    if (t->fault_exit) { /* an injected failure: phase 1's cleanup, the rule's exit status */
        sim_mig_log(t, true, "%s", t->fault_exit);
        sim_mig_log(t, false, "aborting phase 1 - cleanup resources");
        json_object_del(vm->conf, "lock");
        release(s, t, vm);
        s->dirty = true;
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    map_volumes(t, vm);
    release(s, t, vm);
    json_object_del(vm->conf, "lock");
    vm->node = target; /* the config moves to the target node */
    sim_history_moved(s, vm);
    s->dirty = true;
    int d = (int)(now - t->bytes_done);
    sim_mig_log(t, false, "migration finished successfully (duration %02d:%02d:%02d)", d / 3600,
                d / 60 % 60, d % 60);
    sim_task_finish(s, t, "OK");
}

static void copy_progress(struct sim *s, struct sim_task *t, struct sim_vm *vm,
                          struct sim_node *target, double now)
{
    double bw = task_bw(t, vm->node, target);
    double total = t->bytes_total;
    double done = (now - t->t0) * bw;
    if (done > total)
        done = total;
    int p0 = total > 0 ? (int)(t->deadline * 10 / total) : 10,
        p1 = total > 0 ? (int)(done * 10 / total) : 10;
    if (p1 > p0 && p1 <= 10 && total > 0)
        sim_mig_log(t, false, "transferred %.1f GiB of %.1f GiB (%d.00%%)", done / 1073741824.0,
                    total / 1073741824.0, p1 * 10);
    t->deadline = done; /* bytes reported so far */
    if (done >= total && now - t->t0 >= total / bw + t->dur)
        finish_migration(s, t, vm, target, now);
}

void sim_ha_migrate(struct sim *s, struct sim_vm *vm, const char *target, double delay)
{
    struct sim_node *tn = sim_node_find(s, target);
    /* the CRM ignores a request to a node that is not online */
    if (!tn || tn->state != NODE_ONLINE || tn == vm->node)
        return;
    char id[16];
    snprintf(id, sizeof id, "%d", vm->vmid);
    struct sim_task *m = sim_task_new(s, vm->node, "qmigrate", id, "root@pam", TK_MIGRATE);
    m->vmid = vm->vmid;
    m->args = json_pack("{s:s,s:i}", "target", tn->name, "online", vm->power != VM_STOPPED ? 1 : 0);
    m->t0 = sim_now(s) + delay;
    s->dirty = true;
}

void vmops_step_migrate(struct sim *s, struct sim_task *t, double now)
{
    struct sim_node *target = sim_node_find(s, sim_task_arg(t, "target"));
    struct sim_vm *vm = mig_vm(s, t);
    if (t->kind == TK_HAMIGRATE) {
        if (now - t->t0 < 0.3)
            return;
        /* the worker runs `ha-manager migrate vm:N TARGET` (no log line of its own) */
        sim_task_log(t, "Requesting HA migration for VM %d to node %s", t->vmid,
                     sim_task_arg(t, "target"));
        if (vm && !t->fault_exit && vm->ha && strcmp(vm->ha_state, "error") == 0) {
            /* API2::HA::Resources::check_service_state refuses it */
            sim_task_log(t, "service 'vm:%d' in error state, must be disabled and fixed first",
                         vm->vmid);
            char *m = xasprintf("command 'ha-manager migrate vm:%d %s' failed: exit code 255",
                                vm->vmid, sim_task_arg(t, "target"));
            sim_task_finish(s, t, m);
            free(m);
            return;
        }
        sim_task_finish(s, t, t->fault_exit ? t->fault_exit : "OK");
        if (!vm || t->fault_exit || !target)
            return;
        if (vm->ha && strcmp(vm->ha_state, "freeze") == 0) {
            /* queued for the CRM, which keeps it until the freeze is lifted */
            snprintf(vm->ha_request, sizeof vm->ha_request, "migrate %s", target->name);
            s->dirty = true;
            return;
        }
        sim_ha_migrate(s, vm, target->name, 1.0);
        return;
    }
    switch (t->phase) {
    case M_FORK:
        if (now - t->t0 < FORK_DELAY)
            return;
        t->phase = M_LOCK;
        t->bytes_done = now; /* the migration's start, for its duration */
        t->deadline = now + LOCK_TIMEOUT;
        /* fall through */
    case M_LOCK:
        if (!vm) {
            char *m = qemu_noconf_msg(t->node, t->vmid);
            abort_migration(s, t, false, m);
            free(m);
            return;
        }
        if (!sim_flock_try(vm, true)) {
            if (now >= t->deadline) {
                char lf[96], msg[160];
                snprintf(msg, sizeof msg, "can't lock file '%s' - got timeout",
                         sim_lockfile(t->vmid, lf));
                abort_migration(s, t, false, msg);
            }
            return;
        }
        t->locked_dst = true;
        if (!prepare(s, t, vm, target))
            return;
        t->phase = M_CONNECT;
        t->deadline = now + (target->state == NODE_ONLINE    ? 0
                             : target->state == NODE_OFFLINE ? SSH_REFUSED
                                                             : SSH_BLACKHOLE);
        /* fall through */
    case M_CONNECT:
        if (now < t->deadline)
            return;
        if (target->state != NODE_ONLINE) {
            abort_migration(s, t, false, "Can't connect to destination address using public key");
            return;
        }
        if (!phase1(s, t, vm, target, now))
            return;
        t->phase = M_COPY;
        t->deadline = 0;
        return;
    case M_COPY:
        copy_progress(s, t, vm, target, now);
        return;
    }
}
