/* h_lxcmigrate: a container's migration inside the cluster — the checks of
 * pve-container's migrate_vm (API2/LXC.pm) and the vzmigrate worker in the
 * steps of PVE::LXC::Migrate under AbstractMigrate: prepare (the lock, the
 * running state, every mount point's storage here and on the target, the
 * shutdown of restart mode), phase1 (the migrate lock, the volume scan,
 * the copy of local volumes, the config to the target), final_cleanup (the
 * lock off, the container started on the target in restart mode). The
 * whole migration holds the config flock (lock_vm). Texts and log lines
 * are PVE's; offline and restart mode only, as PVE has no live migration
 * of containers. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/vmops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORK_DELAY 0.05
#define LOCK_TIMEOUT 10.0 /* lock_config */
#define SSH_REFUSED 3.0   /* ssh to a node that is down */
#define SHUTDOWN_TIME 2.0 /* the container's init halting (lxctask.c) */
#define SETUP_TIME 1.0    /* ssh, volume activation, config move */

enum { L_FORK = 0, L_LOCK, L_SHUTDOWN, L_COPY };

static struct sim_storage *storage_of(struct sim_node *n, const char *vol)
{
    char *sid = sim_disk_storage(vol);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    return st;
}

/* ---- the request ------------------------------------------------------------ */

/* $check_storage_access_migrate for the map's target storages. */
static char *map_storages_refused(struct sim *s, json_t *map, struct sim_node *target)
{
    json_t *all = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(map, "entries"), k, v) json_array_append(all, v);
    if (json_object_get(map, "default"))
        json_array_append(all, json_object_get(map, "default"));
    char *err = NULL;
    size_t i;
    json_array_foreach(all, i, v)
    {
        const char *sid = json_string_value(v);
        if (err || !sid)
            continue;
        err = sim_mig_storage_unavailable(s, sid, target);
        struct sim_storage *st = err ? NULL : sim_storage_find(target, sid);
        if (st && !strstr(st->content, "rootdir"))
            err = xasprintf("storage '%s' does not support CT rootdirs", sid);
    }
    json_decref(all);
    return err;
}

static void h_migrate(struct sim_call *c)
{
    struct sim *s = c->s;
    struct sim_node *target = sim_mig_target(c);
    if (!target)
        return;
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    if (ct->running && !call_bool(c, "online", false) && !call_bool(c, "restart", false)) {
        call_fail(c, 500, "can't migrate running container without --online or --restart");
        return;
    }
    const char *ts = call_str(c, "target-storage");
    if (ts && *ts) {
        char *err = NULL;
        json_t *map = sim_parse_idmap(ts, &err);
        if (!map) {
            call_param_fail(c, "target-storage", "failed to parse storage map: %s", err);
            free(err);
            return;
        }
        err = map_storages_refused(s, map, target);
        json_decref(map);
        if (err) {
            call_fail(c, 500, "%s", err);
            free(err);
            return;
        }
    }
    lxc_call_task(c, ct->vmid, "vzmigrate", TK_VZMIGRATE);
}

const struct sim_route sim_routes_lxcmigrate[] = {
    {"POST", "/nodes/{node}/lxc/{vmid}/migrate", h_migrate},
    {NULL, NULL, NULL},
};

/* ---- the vzmigrate task ------------------------------------------------------ */

static json_t *task_map(struct sim_task *t)
{
    const char *ts = sim_task_arg(t, "target-storage");
    char *err = NULL;
    json_t *m = ts && *ts ? sim_parse_idmap(ts, &err) : NULL;
    free(err);
    return m;
}

static void release(struct sim *s, struct sim_task *t)
{
    struct sim_ct *ct = sim_ct_find(s, NULL, t->vmid);
    if (ct && t->locked_dst)
        sim_ct_flock_release(s, ct);
    t->locked_dst = false;
}

/* "migration aborted (duration 00:00:03): <err>"; the task's status is
 * "migration aborted". t->bytes_done holds the migration's start. */
static void aborted(struct sim *s, struct sim_task *t, const char *err)
{
    int d = (int)(sim_now(s) - t->bytes_done);
    sim_mig_log(t, true, "migration aborted (duration %02d:%02d:%02d): %s", d / 3600, d / 60 % 60,
                d % 60, err);
    release(s, t);
    s->dirty = true;
    sim_task_finish(s, t, "migration aborted");
}

/* The mount points prepare() walks (foreach_volume_full, unused included):
 * PVE's text of the first it refuses, or NULL. */
static char *prepare_mountpoints(struct sim *s, struct sim_task *t, struct sim_ct *ct,
                                 struct sim_node *target)
{
    json_t *map = task_map(t);
    char *err = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(ct->conf, k, v)
    {
        const char *vol = json_string_value(v);
        if (err || !vol || !sim_ct_volume_key(k))
            continue;
        if (vol[0] == '/') { /* bind or device: only when marked shared */
            if (!strstr(vol, ",shared=1"))
                err = xasprintf("cannot migrate local %s mount point '%s'",
                                str_starts(vol, "/dev/") ? "device" : "bind", k);
            continue;
        }
        char *sid = sim_disk_storage(vol);
        struct sim_storage *st = sid ? sim_storage_find(ct->node, sid) : NULL;
        if (!st)
            err = sim_mig_storage_unavailable(s, sid ? sid : "", ct->node);
        else if (!strstr(st->content, "rootdir"))
            err = xasprintf("content type 'rootdir' is not available on storage '%s'", sid);
        const char *tsid = st && st->shared ? sid : sim_map_id(map, sid);
        if (!err)
            err = sim_mig_storage_unavailable(s, tsid, target);
        struct sim_storage *tst = err ? NULL : sim_storage_find(target, tsid);
        if (tst && !strstr(tst->content, "rootdir"))
            err = xasprintf("%.*s: content type 'rootdir' is not available on storage '%s'",
                            (int)strcspn(vol, ","), vol, tsid);
        free(sid);
    }
    json_decref(map);
    return err;
}

/* prepare(), with the flock held: false when the task ended. */
static bool prepare(struct sim *s, struct sim_task *t, struct sim_ct *ct, struct sim_node *target)
{
    char *err = NULL;
    const char *lk = sim_ct_lock(ct);
    if (lk)
        err = xasprintf("CT is locked (%s)", lk);
    else if (ct->running && sim_task_arg_true(t, "online"))
        err = xstrdup("lxc live migration is currently not implemented");
    else
        err = prepare_mountpoints(s, t, ct, target);
    if (err) {
        aborted(s, t, err);
        free(err);
        return false;
    }
    return true;
}

struct scan {
    struct sim_task *t;
    struct sim_ct *ct;
    json_t *local;  /* {"volid": "config"|"snapshot"} */
    json_t *errors; /* {"volid": "why"} */
};

/* $test_volid for a volume of the config (snap NULL) or of a snapshot. */
static void test_volume(struct scan *sc, const char *k, const char *vol, const char *snap)
{
    if (vol[0] == '/') {
        if (!snap)
            sim_mig_log(sc->t, false, "ignoring shared '%s' mount point '%s' ('%.*s')",
                        str_starts(vol, "/dev/") ? "device" : "bind", k, (int)strcspn(vol, ","),
                        vol);
        return;
    }
    char *volid = xstrndup(vol, strcspn(vol, ","));
    struct sim_storage *st = storage_of(sc->ct->node, vol);
    if (st && st->shared) {
        if (!snap)
            sim_mig_log(sc->t, false, "volume '%s' is on shared storage '%s'", volid, st->id);
    } else {
        if (!json_object_get(sc->local, volid) || !snap)
            json_object_set_new(sc->local, volid, json_string(snap ? "snapshot" : "config"));
        /* only zfspool and btrfs carry snapshots along */
        if (snap && !json_object_get(sc->errors, volid) &&
            !(st && (!strcmp(st->type, "zfspool") || !strcmp(st->type, "btrfs"))))
            json_object_set_new(sc->errors, volid, json_string("non-migratable snapshot exists"));
    }
    free(volid);
}

/* phase1's scan: snapshots' volumes first, then the current ones. False
 * (the task ended) when a volume cannot go. */
static bool scan_volumes(struct sim *s, struct sim_task *t, struct sim_ct *ct, double *bytes)
{
    struct scan sc = {t, ct, json_object(), json_object()};
    double copy = 0;
    const char *sn, *k;
    json_t *snap, *v;
    if (ct->snaps)
        json_object_foreach(ct->snaps, sn, snap) json_object_foreach(snap, k, v)
        {
            if (sim_ct_volume_key(k) && !str_starts(k, "unused") && json_is_string(v))
                test_volume(&sc, k, json_string_value(v), sn);
        }
    json_object_foreach(ct->conf, k, v)
    {
        if (sim_ct_volume_key(k) && json_is_string(v)) {
            test_volume(&sc, k, json_string_value(v), NULL);
            if (json_string_value(v)[0] != '/' && !str_starts(k, "unused")) {
                struct sim_storage *st = storage_of(ct->node, json_string_value(v));
                if (!st || !st->shared)
                    copy += (double)sim_volume_size(s, json_string_value(v));
            }
        }
    }
    json_object_foreach(sc.local, k, v)
    {
        bool in_snap = strcmp(json_string_value(v), "snapshot") == 0;
        sim_mig_log(t, false, "found local volume '%s' (%s)", k,
                    in_snap ? "referenced by snapshot(s)" : "in current VM config");
    }
    json_object_foreach(sc.errors, k, v)
        sim_mig_log(t, false, "WARN: can't migrate local volume '%s': %s", k, json_string_value(v));
    bool ok = json_object_size(sc.errors) == 0;
    json_decref(sc.local);
    json_decref(sc.errors);
    *bytes = copy;
    return ok;
}

/* phase1's error path: phase1_cleanup, final_cleanup (the lock off; a
 * container shut down for the move starts again here), then the abort. */
static void phase1_failed(struct sim *s, struct sim_task *t, struct sim_ct *ct, const char *err)
{
    sim_mig_log(t, true, "%s", err);
    sim_mig_log(t, false, "aborting phase 1 - cleanup resources");
    sim_mig_log(t, false, "start final cleanup");
    json_object_del(ct->conf, "lock");
    if (sim_task_arg_true(t, "_was_running")) {
        sim_mig_log(t, false, "start container on source node");
        ct->running = true;
        ct->started = sim_now(s);
    }
    aborted(s, t, err);
}

static double copy_bw(struct sim_task *t, struct sim_node *a, struct sim_node *b)
{
    double bw = a->bandwidth < b->bandwidth ? a->bandwidth : b->bandwidth;
    json_t *v = json_object_get(t->args, "bwlimit");
    double lim = json_is_number(v)   ? json_number_value(v)
                 : json_is_string(v) ? atof(json_string_value(v))
                                     : 0;
    return lim > 0 && lim * 1024 < bw ? lim * 1024 : bw;
}

static void phase1(struct sim *s, struct sim_task *t, struct sim_ct *ct, struct sim_node *target,
                   double now)
{
    sim_mig_log(t, false, "starting migration of CT %d to node '%s' (10.10.10.%d)", ct->vmid,
                target->name, target->idx + 1);
    json_object_set_new(ct->conf, "lock", json_string("migrate"));
    double bytes = 0;
    if (!scan_volumes(s, t, ct, &bytes)) {
        phase1_failed(s, t, ct, "can't migrate CT - check log");
        return;
    }
    t->bytes_total = bytes;
    t->dur = SETUP_TIME + bytes / copy_bw(t, ct->node, target);
    t->t0 = now;
    t->phase = L_COPY;
}

/* The copies are done: the volumes' new names, phase3 (the source's copies
 * go), the config on the target, final_cleanup. */
static void finish(struct sim *s, struct sim_task *t, struct sim_ct *ct, struct sim_node *target,
                   double now)
{
    if (t->fault_exit) {
        phase1_failed(s, t, ct, t->fault_exit);
        return;
    }
    json_t *map = task_map(t);
    const char *k;
    json_t *v;
    json_object_foreach(ct->conf, k, v)
    {
        const char *vol = json_string_value(v);
        struct sim_storage *st =
            vol && sim_ct_volume_key(k) && vol[0] != '/' ? storage_of(ct->node, vol) : NULL;
        if (!st || st->shared)
            continue;
        const char *tsid = sim_map_id(map, st->id);
        const char *rest = strchr(vol, ':');
        json_t *nv = json_sprintf("%s%s", tsid, rest);
        sim_mig_log(t, false, "volume '%.*s' is '%.*s' on the target", (int)strcspn(vol, ","), vol,
                    (int)strcspn(json_string_value(nv), ","), json_string_value(nv));
        json_object_set_new(ct->conf, k, nv);
    }
    json_decref(map);
    release(s, t);
    ct->node = target; /* move_config_to_node */
    sim_mig_log(t, false, "start final cleanup");
    json_object_del(ct->conf, "lock");
    if (sim_task_arg_true(t, "_was_running")) {
        sim_mig_log(t, false, "start container on target node");
        ct->running = true;
        ct->started = now;
    }
    s->dirty = true;
    int d = (int)(now - t->bytes_done);
    sim_mig_log(t, false, "migration finished successfully (duration %02d:%02d:%02d)", d / 3600,
                d / 60 % 60, d % 60);
    sim_task_finish(s, t, "OK");
}

/* fork, then lock_vm (the config flock, 10 s), then prepare(). */
static void step_lock(struct sim *s, struct sim_task *t, struct sim_ct *ct, struct sim_node *target,
                      double now)
{
    if (!ct) {
        char m[160];
        snprintf(m, sizeof m, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist",
                 t->node->name, t->vmid);
        aborted(s, t, m);
        return;
    }
    if (!sim_ct_flock_try(ct)) {
        if (now >= t->deadline) {
            char lf[96], msg[160];
            snprintf(msg, sizeof msg, "can't lock file '%s' - got timeout",
                     sim_ct_lockfile(t->vmid, lf));
            aborted(s, t, msg);
        }
        return;
    }
    t->locked_dst = true;
    if (!prepare(s, t, ct, target))
        return;
    if (target->state != NODE_ONLINE) { /* ssh to the target */
        t->phase = L_SHUTDOWN;
        t->t0 = now;
        t->dur = SSH_REFUSED;
        return;
    }
    json_object_set_new(t->args, "_was_running", json_boolean(ct->running));
    t->phase = L_SHUTDOWN;
    t->t0 = now;
    t->dur = 0;
    if (ct->running) { /* restart mode: vm_stop($vmid, 0, $timeout) */
        sim_mig_log(t, false, "shutdown CT %d", ct->vmid);
        json_t *to = json_object_get(t->args, "timeout");
        double timeout = json_is_integer(to)  ? (double)json_integer_value(to)
                         : json_is_string(to) ? atof(json_string_value(to))
                                              : 180;
        t->dur = timeout < SHUTDOWN_TIME ? timeout : SHUTDOWN_TIME;
    }
}

void lxc_step_migrate(struct sim *s, struct sim_task *t, double now)
{
    struct sim_node *target = sim_node_find(s, sim_task_arg(t, "target"));
    struct sim_ct *ct = sim_ct_find(s, t->node, t->vmid);
    switch (t->phase) {
    case L_FORK:
        if (now - t->t0 < FORK_DELAY)
            return;
        t->phase = L_LOCK;
        t->bytes_done = now; /* the migration's start, for its duration */
        t->deadline = now + LOCK_TIMEOUT;
        /* fall through */
    case L_LOCK:
        step_lock(s, t, ct, target, now);
        return;
    case L_SHUTDOWN:
        if (now - t->t0 < t->dur)
            return;
        if (target->state != NODE_ONLINE) {
            aborted(s, t, "Can't connect to destination address using public key");
            return;
        }
        ct->running = false;
        phase1(s, t, ct, target, now);
        return;
    case L_COPY:
        if (now - t->t0 >= t->dur)
            finish(s, t, ct, target, now);
        return;
    }
}

/* SIGTERM: AbstractMigrate delays it ("received interrupt - delayed") until
 * the phase ends; pvesim ends the worker with phase 1's cleanup. */
void lxc_migrate_stop(struct sim *s, struct sim_task *t)
{
    struct sim_ct *ct = sim_ct_find(s, t->node, t->vmid);
    if (ct && t->phase == L_COPY) {
        phase1_failed(s, t, ct, "interrupted by signal");
        return;
    }
    if (t->locked_dst)
        aborted(s, t, "interrupted by signal");
    else
        sim_task_finish(s, t, "received interrupt");
}
