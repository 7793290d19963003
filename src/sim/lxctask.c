/* lxctask: the workers of the container tasks (pve-container): vzcreate,
 * vzstart, vzstop, vzshutdown, vzreboot and vzdestroy. Each forks, takes
 * the container's config flock (lock_config: 10 s, then "can't lock file
 * ... - got timeout"), checks the config under it as PVE's worker does
 * (the `lock` property: "CT is locked (...)"), works for a realistic time
 * and writes the result. The requests' synchronous checks are in h_lxc.c.
 * Everything here runs with s->mu held. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORK_DELAY 0.05
#define LOCK_TIMEOUT 10.0
#define START_TIME 1.0    /* lxc-start until the container's init runs */
#define STOP_TIME 0.5     /* lxc-stop --kill */
#define SHUTDOWN_TIME 2.0 /* the container's init halting in order */
#define EXTRACT_TIME 3.0  /* unpacking the template into the rootfs */
#define DESTROY_TIME 0.5
#define CHECKPOINT_TIME 1.5 /* CRIU dumping or restoring the processes */

#define MiB_D 1048576.0

enum { PH_FORK = 0, PH_LOCK, PH_WORK, PH_WORK2 };

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static struct sim_ct *task_ct(struct sim *s, struct sim_task *t)
{
    return sim_ct_find(s, t->node, t->vmid);
}

/* End the task, giving the flock back first (the worker exits). */
void lxc_task_finish(struct sim *s, struct sim_task *t, const char *status)
{
    struct sim_ct *ct = task_ct(s, t);
    if (ct && t->locked_dst)
        sim_ct_flock_release(s, ct);
    t->locked_dst = false;
    sim_task_finish(s, t, status);
}

static void finish(struct sim *s, struct sim_task *t, const char *status)
{
    lxc_task_finish(s, t, status);
}

static void fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    finish(s, t, msg);
}

/* Success, or the injected fault's exit status. */
static void ok(struct sim *s, struct sim_task *t)
{
    finish(s, t, t->fault_exit ? t->fault_exit : "OK");
}

/* A request parameter kept in t->args (strings from forms, numbers and
 * booleans from JSON bodies). */
static double arg_num(struct sim_task *t, const char *name, double dflt)
{
    json_t *v = json_object_get(t->args, name);
    int64_t n;
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_string(v) && parse_i64(json_string_value(v), &n))
        return (double)n;
    return dflt;
}

int lxc_task_phases(struct sim *s, struct sim_task *t, double now)
{
    if (t->phase == PH_FORK) {
        if (now - t->t0 < FORK_DELAY)
            return 0;
        t->phase = PH_LOCK;
        t->deadline = now + LOCK_TIMEOUT;
    }
    struct sim_ct *ct = task_ct(s, t);
    if (t->phase != PH_LOCK && ct)
        return 2;
    if (!ct) {
        fail(s, t, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", t->node->name,
             t->vmid);
        return 0;
    }
    if (!sim_ct_flock_try(ct)) {
        if (json_array_size(t->log) == 0)
            sim_task_log(t, "trying to acquire lock...");
        if (now >= t->deadline) {
            char lf[96];
            fail(s, t, "can't lock file '%s' - got timeout", sim_ct_lockfile(t->vmid, lf));
        }
        return 0;
    }
    t->locked_dst = true;
    t->phase = PH_WORK;
    t->t0 = now;
    return 1;
}

/* check_lock, which the start and stop workers skip for skiplock and for
 * the `mounted` lock. True when the task was failed. */
static bool locked(struct sim *s, struct sim_task *t, struct sim_ct *ct, bool skippable)
{
    const char *lk = sim_ct_lock(ct);
    if (!lk || (skippable && (arg_num(t, "skiplock", 0) || strcmp(lk, "mounted") == 0)))
        return false;
    fail(s, t, "CT is locked (%s)", lk);
    return true;
}

static void power_on(struct sim *s, struct sim_ct *ct, double now)
{
    sim_ct_apply_pending(s, ct); /* vm_start applies pending changes */
    ct->running = true;
    ct->checkpointed = false; /* a fresh start: the dump is not restored */
    ct->started = now;
    s->dirty = true;
}

static void power_off(struct sim *s, struct sim_ct *ct)
{
    ct->running = false;
    s->dirty = true;
}

/* ---- start, stop ------------------------------------------------------- */

static void step_start(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) {
        if (json_integer_value(json_object_get(ct->conf, "template")))
            fail(s, t, "you can't start a CT if it's a template");
        else if (locked(s, t, ct, true))
            return;
        else if (ct->running)
            fail(s, t, "CT %d already running", ct->vmid);
        t->dur = START_TIME;
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (!t->fault_exit)
        power_on(s, ct, now);
    ok(s, t);
}

static void step_stop(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) {
        if (locked(s, t, ct, true))
            return;
        if (!ct->running) /* vm_stop: nothing to do */
            ok(s, t);
        t->dur = STOP_TIME;
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (!t->fault_exit)
        power_off(s, ct);
    ok(s, t);
}

/* ---- shutdown and reboot ------------------------------------------------- *
 * vm_stop($vmid, 0, $timeout, $forceStop): `lxc-stop --timeout T` (with
 * --nokill unless forced). The container halts in SHUTDOWN_TIME; a timeout
 * shorter than that kills it when forced (reboot always forces), else
 * lxc-stop gives up after T, the worker polls T+5 s more and dies with
 * "container did not stop", the container still running. */

static bool halts_in_time(struct sim_task *t)
{
    return arg_num(t, "timeout", 60) >= SHUTDOWN_TIME;
}

static bool forced(struct sim_task *t)
{
    return t->kind == TK_VZREBOOT || arg_num(t, "forceStop", 0) != 0;
}

static void shutdown_checks(struct sim *s, struct sim_task *t, struct sim_ct *ct)
{
    if (t->kind == TK_VZSHUTDOWN && locked(s, t, ct, false))
        return; /* vm_reboot does not look at the lock */
    if (!ct->running) {
        ok(s, t);
        return;
    }
    t->dur = halts_in_time(t) ? SHUTDOWN_TIME : arg_num(t, "timeout", 60);
}

static void step_shutdown(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) {
        shutdown_checks(s, t, ct);
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (t->phase == PH_WORK && !halts_in_time(t) && !forced(t)) {
        int to = (int)arg_num(t, "timeout", 60);
        sim_task_log(t, "command 'lxc-stop -n %d --nokill --timeout %d' failed: exit code 1",
                     ct->vmid, to);
        t->phase = PH_WORK2;
        t->t0 = now;
        t->dur = to + 5;
        return;
    }
    if (t->phase == PH_WORK2 && t->kind == TK_VZSHUTDOWN) {
        fail(s, t, "container did not stop");
        return;
    }
    if (t->phase == PH_WORK2) { /* reboot: started again */
        if (!t->fault_exit)
            power_on(s, ct, now);
        ok(s, t);
        return;
    }
    if (!t->fault_exit)
        power_off(s, ct);
    if (t->kind == TK_VZREBOOT && !t->fault_exit) {
        t->phase = PH_WORK2;
        t->t0 = now;
        t->dur = START_TIME;
        return;
    }
    ok(s, t);
}

/* ---- suspend, resume -------------------------------------------------------- *
 * `lxc-checkpoint -s` dumps the container's processes to /var/lib/vz/dump
 * and stops it; `lxc-checkpoint -r` restores them. Either fails, as
 * run_command reports it, when there is nothing to dump or restore. */

static void checkpoint_failed(struct sim *s, struct sim_task *t, const char *how)
{
    fail(s, t, "command 'lxc-checkpoint -n %d %s -D /var/lib/vz/dump' failed: exit code 1", t->vmid,
         how);
}

static void step_suspend(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) { /* under lock_config: check_lock, then the checkpoint */
        if (locked(s, t, ct, false))
            return;
        if (!ct->running)
            checkpoint_failed(s, t, "-s");
        t->dur = CHECKPOINT_TIME;
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (!t->fault_exit) {
        power_off(s, ct);
        ct->checkpointed = true;
    }
    ok(s, t);
}

/* The resume worker takes no lock and reads no config: only the restore
 * can fail. */
static void step_resume(struct sim *s, struct sim_task *t, double now)
{
    if (t->phase == PH_FORK) {
        if (now - t->t0 < FORK_DELAY)
            return;
        t->phase = PH_WORK;
        t->t0 = now;
        t->dur = CHECKPOINT_TIME;
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    struct sim_ct *ct = task_ct(s, t);
    if (!ct || ct->running || !ct->checkpointed) {
        checkpoint_failed(s, t, "-r --foreground");
        return;
    }
    if (!t->fault_exit) {
        ct->running = true;
        ct->started = now;
        ct->checkpointed = false;
        s->dirty = true;
    }
    ok(s, t);
}

/* ---- destroy -------------------------------------------------------------- */

/* What the storage layer prints for a freed volume (LVM's words). */
static void log_volumes(struct sim_task *t, struct sim_ct *ct, const char *what)
{
    const char *k;
    json_t *v;
    json_object_foreach(ct->conf, k, v)
    {
        const char *vol = json_string_value(v);
        if (!sim_ct_volume_key(k) || !vol || vol[0] == '/')
            continue;
        char *sid = sim_disk_storage(vol);
        struct sim_storage *st = sid ? sim_storage_find(ct->node, sid) : NULL;
        const char *name = strchr(vol, ':');
        if (st && str_starts(st->type, "lvm") && name)
            sim_task_log(t, "  Logical volume \"%.*s\" %s.", (int)strcspn(name + 1, ","), name + 1,
                         what);
        free(sid);
    }
}

/* destroy_lxc_container frees every volume, unusedN included: their sizes
 * go from s->vol_sizes (as qemu_destroy's). */
static void forget_volume_sizes(struct sim *s, struct sim_ct *ct)
{
    const char *k;
    json_t *v;
    json_object_foreach(ct->conf, k, v)
    {
        const char *vol = json_string_value(v);
        char *volid = s->vol_sizes && sim_ct_volume_key(k) && vol && vol[0] != '/'
                          ? xstrndup(vol, strcspn(vol, ","))
                          : NULL;
        if (volid)
            json_object_del(s->vol_sizes, volid);
        free(volid);
    }
}

static void step_destroy(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) {
        if (json_integer_value(json_object_get(ct->conf, "protection"))) {
            fail(s, t, "can't remove CT %d - protection mode enabled", ct->vmid);
        } else if (!locked(s, t, ct, false)) {
            if (ct->running && !arg_num(t, "force", 0)) {
                fail(s, t, "unable to destroy CT %d - container is running", ct->vmid);
                return;
            }
            if (ct->running) {
                sim_task_log(t, "forced to stop CT %d before destroying!", ct->vmid);
                power_off(s, ct);
            }
            json_object_set_new(ct->conf, "lock", json_string("destroyed"));
            t->dur = DESTROY_TIME;
        }
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (t->fault_exit) {
        ok(s, t); /* the config keeps its `destroyed` lock, as a failed destroy leaves it */
        return;
    }
    log_volumes(t, ct, "successfully removed");
    forget_volume_sizes(s, ct);
    if (arg_num(t, "purge", 0))
        sim_task_log(t, "purging CT %d from related configurations..", ct->vmid);
    t->locked_dst = false;
    sim_ct_unlink(s, ct);
    sim_task_finish(s, t, "OK");
}

/* ---- create ----------------------------------------------------------------- */

/* $NEW_DISK_RE, /^([^:\s]+):(\d+(\.\d+)?)$/, on the volume part of a mount
 * point (up to its first ','): the length of the storage id, or 0. */
static size_t new_disk(const char *vol)
{
    size_t sl = strcspn(vol, ": \t\n,"), vl = strcspn(vol, ",");
    if (!sl || vol[sl] != ':')
        return 0;
    const char *p = vol + sl + 1;
    size_t d = strspn(p, "0123456789");
    if (d && p[d] == '.' && strspn(p + d + 1, "0123456789"))
        d += 1 + strspn(p + d + 1, "0123456789");
    return d && sl + 1 + d == vl ? sl : 0;
}

/* The mount point's options after the new volume, as print_ct_mountpoint
 * writes them: keys sorted, size= the allocated one (a size= given is
 * replaced). */
char *lxc_mp_options(const char *opts, const char *size)
{
    json_t *kv = json_array();
    char *dup = xstrdup(opts), *save = NULL;
    for (char *p = strtok_r(dup, ",", &save); p; p = strtok_r(NULL, ",", &save))
        if (!str_starts(p, "size="))
            json_array_append_new(kv, json_string(p));
    json_array_append_new(kv, json_sprintf("size=%s", size));
    size_t n = json_array_size(kv);
    const char **keys = xcalloc(n, sizeof *keys);
    for (size_t i = 0; i < n; i++)
        keys[i] = json_string_value(json_array_get(kv, i));
    qsort(keys, n, sizeof *keys, cmp_str);
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, ",%s", keys[i]);
    char *r = buf_take(&b);
    free(keys);
    free(dup);
    json_decref(kv);
    return r;
}

/* create_disks: "local-lvm:8" becomes vm-<vmid>-disk-<n> of 8 GiB (rootfs
 * first; int(GiB * 1024) MiB, as PVE's size_kb), a volume or path named as
 * such stays. False, with *why, for a size beyond SIM_BYTES_MAX (PVE's
 * storage layer refuses it in its own words). */
static bool create_disks(struct sim_task *t, json_t *conf, char **why)
{
    json_t *mps = json_object_get(t->args, "_mps");
    int idx = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *k;
        json_t *v;
        json_object_foreach(mps, k, v)
        {
            if ((strcmp(k, "rootfs") == 0) != (pass == 0))
                continue;
            const char *vol = json_string_value(v);
            size_t sl = new_disk(vol);
            if (!sl) {
                json_object_set(conf, k, v);
                continue;
            }
            double mib = floor(strtod(vol + sl + 1, NULL) * 1024.0);
            if (mib * MiB_D > (double)SIM_BYTES_MAX) {
                *why = xasprintf("unable to create CT %d - %s: size %s GiB is too large", t->vmid,
                                 k, vol + sl + 1);
                return false;
            }
            char sid[64];
            snprintf(sid, sizeof sid, "%.*s", (int)sl, vol);
            struct sim_storage *st = sim_storage_find(t->node, sid);
            char *size = sim_fmt_size((int64_t)mib * (int64_t)MiB_D);
            char *opts = lxc_mp_options(vol + strcspn(vol, ","), size);
            if (st && strcmp(st->type, "dir") == 0)
                json_object_set_new(
                    conf, k,
                    json_sprintf("%s:%d/vm-%d-disk-%d.raw%s", sid, t->vmid, t->vmid, idx, opts));
            else
                json_object_set_new(conf, k,
                                    json_sprintf("%s:vm-%d-disk-%d%s", sid, t->vmid, idx, opts));
            if (st && str_starts(st->type, "lvm"))
                sim_task_log(t, "  Logical volume \"vm-%d-disk-%d\" created.", t->vmid, idx);
            idx++;
            free(size);
            free(opts);
        }
    }
    return true;
}

/* The template archive: pvesim's nodes hold one, on `local` (what the
 * storage's content listing shows). */
static bool template_exists(struct sim_node *n, const char *volid)
{
    struct sim_storage *st = sim_storage_find(n, "local");
    return st && strstr(st->content, "vztmpl") && strcmp(volid, SIM_CT_TEMPLATE) == 0;
}

static void create_fail(struct sim *s, struct sim_task *t, struct sim_ct *ct, const char *why)
{
    t->locked_dst = false;
    if (ct)
        sim_ct_unlink(s, ct); /* destroy_disks, destroy_config */
    sim_task_finish(s, t, why);
}

static void create_work(struct sim *s, struct sim_task *t, struct sim_ct *ct)
{
    json_t *conf = json_deep_copy(json_object_get(t->args, "_conf"));
    char *why = NULL;
    bool made = create_disks(t, conf, &why);
    json_object_set_new(t->args, "_conf", conf);
    if (!made) {
        create_fail(s, t, ct, why);
        free(why);
        return;
    }
    const char *tpl = json_string_value(json_object_get(t->args, "ostemplate"));
    if (!template_exists(t->node, tpl)) {
        char *m = xasprintf("unable to create CT %d - can't find file '%s'", t->vmid, tpl);
        create_fail(s, t, ct, m);
        free(m);
        return;
    }
    sim_task_log(t, "extracting archive '/var/lib/vz/template/cache/%s'", strchr(tpl, '/') + 1);
    t->dur = EXTRACT_TIME;
}

/* The config as the worker writes it at the end, with pct's defaults. */
static void create_done(struct sim *s, struct sim_task *t, struct sim_ct *ct, double now)
{
    json_t *conf = json_object_get(t->args, "_conf");
    sim_task_log(t, "Total bytes read: 521902080 (498MiB, 145MiB/s)");
    sim_task_log(t, "Detected container architecture: amd64");
    if (!json_object_get(conf, "arch"))
        json_object_set_new(conf, "arch", json_string("amd64"));
    if (!json_object_get(conf, "ostype"))
        json_object_set_new(conf, "ostype", json_string("debian"));
    if (!json_object_get(conf, "hostname"))
        json_object_set_new(conf, "hostname", json_sprintf("CT%d", t->vmid));
    if (!json_integer_value(json_object_get(conf, "memory")))
        json_object_set_new(conf, "memory", json_integer(512));
    if (!json_object_get(conf, "swap"))
        json_object_set_new(conf, "swap", json_integer(512));
    json_object_clear(ct->conf);
    json_object_update(ct->conf, conf);
    const char *pool = json_string_value(json_object_get(t->args, "pool"));
    if (pool)
        sim_pool_add_vm(s, pool, t->vmid);
    s->dirty = true;
    finish(s, t, "OK");
    if (arg_num(t, "start", 0)) /* vm_start, a vzstart task of its own */
        lxc_start_task(s, t->node, t->vmid, t->user, now);
}

struct sim_task *lxc_start_task(struct sim *s, struct sim_node *n, int vmid, const char *user,
                                double now)
{
    char id[16];
    snprintf(id, sizeof id, "%d", vmid);
    struct sim_task *st = sim_task_new(s, n, "vzstart", id, user, TK_VZSTART);
    st->vmid = vmid;
    st->args = json_object();
    st->t0 = now;
    return st;
}

static void step_create(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = task_ct(s, t);
    if (g == 1) {
        create_work(s, t, ct);
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (t->fault_exit) {
        char *m = xasprintf("unable to create CT %d - %s", t->vmid, t->fault_exit);
        create_fail(s, t, ct, m);
        free(m);
        return;
    }
    create_done(s, t, ct, now);
}

void lxc_task_step(struct sim *s, struct sim_task *t, double now)
{
    switch (t->kind) {
    case TK_VZCREATE:
        step_create(s, t, now);
        break;
    case TK_VZSTART:
        step_start(s, t, now);
        break;
    case TK_VZSTOP:
        step_stop(s, t, now);
        break;
    case TK_VZSHUTDOWN:
    case TK_VZREBOOT:
        step_shutdown(s, t, now);
        break;
    case TK_VZDESTROY:
        step_destroy(s, t, now);
        break;
    case TK_VZSUSPEND:
        step_suspend(s, t, now);
        break;
    case TK_VZRESUME:
        step_resume(s, t, now);
        break;
    case TK_VZMIGRATE:
        lxc_step_migrate(s, t, now);
        break;
    case TK_VZRESIZE:
        lxc_step_resize(s, t, now);
        break;
    case TK_VZCLONE:
        lxc_step_clone(s, t, now);
        break;
    default:
        break;
    }
}

/* The worker dies on SIGTERM; its flock goes with it. A create that dies
 * removes what it made (destroy_config_on_error). */
void lxc_task_stop(struct sim *s, struct sim_task *t)
{
    struct sim_ct *ct = task_ct(s, t);
    if (t->kind == TK_VZCLONE) {
        lxc_clone_stop(s, t);
        return;
    }
    if (t->kind == TK_VZMIGRATE) {
        lxc_migrate_stop(s, t);
        return;
    }
    if (t->kind == TK_VZCREATE && ct) {
        create_fail(s, t, ct, "received interrupt");
        return;
    }
    finish(s, t, "received interrupt");
}
