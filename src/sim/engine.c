/* engine: tasks (UPIDs, logs, exit statuses) and the clock that moves them.
 *
 * A task is a small state machine stepped by sim_advance(), which runs on
 * every request and on the engine thread's 5 ms tick. Phases mirror what the
 * real worker does: fork, take file locks (with PVE's timeouts: 1 s for
 * clone and create workers, 10 s for the rest), do the work for a realistic
 * time, write the result, release the locks. Full clones share the node's
 * storage bandwidth among the clones running on it. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/qemu_ops.h"
#include "sim/sim.h"
#include "sim/vmops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FORK_DELAY 0.05   /* PVE seconds between the POST's answer and the worker */
#define LOCK_TIMEOUT 10.0 /* lock_config */
#define CLONE_LOCK_TIMEOUT 1.0

enum { PH_FORK = 0, PH_LOCK, PH_WORK, PH_WORK2, PH_DONE };

/* ---- UPID index: status and log polls find their task among a fleet's
 * archives (100 nodes keep up to about 2,000 tasks each) without a walk */

static size_t task_bucket(const struct sim *s, const char *upid)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)upid; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 32)) & (s->task_index_cap - 1);
}

static void task_index_grow(struct sim *s)
{
    size_t cap = s->task_index_cap ? s->task_index_cap * 2 : 1024;
    free(s->task_index);
    s->task_index = xcalloc(cap, sizeof *s->task_index);
    s->task_index_cap = cap;
    for (struct sim_task *t = s->tasks; t; t = t->next) {
        size_t b = task_bucket(s, t->upid);
        t->hnext = s->task_index[b];
        s->task_index[b] = t;
    }
}

/* t is linked first in s->tasks already */
static void task_index_add(struct sim *s, struct sim_task *t)
{
    if (++s->ntasks > s->task_index_cap) {
        task_index_grow(s); /* links t too */
        return;
    }
    size_t b = task_bucket(s, t->upid);
    t->hnext = s->task_index[b];
    s->task_index[b] = t;
}

static void task_index_del(struct sim *s, struct sim_task *t)
{
    for (struct sim_task **pp = &s->task_index[task_bucket(s, t->upid)]; *pp; pp = &(*pp)->hnext)
        if (*pp == t) {
            *pp = t->hnext;
            s->ntasks--;
            return;
        }
}

void sim_tasks_clear(struct sim *s)
{
    while (s->tasks) {
        struct sim_task *t = s->tasks;
        s->tasks = t->next;
        sim_task_free(t);
    }
    free(s->task_index);
    s->task_index = NULL;
    s->task_index_cap = 0;
    s->ntasks = 0;
    s->ntasks_running = 0;
}

const char *sim_task_arg(const struct sim_task *t, const char *k)
{
    return json_string_value(json_object_get(t->args, k));
}

bool sim_task_arg_true(const struct sim_task *t, const char *k)
{
    json_t *v = json_object_get(t->args, k);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    return json_is_string(v) && strcmp(json_string_value(v), "1") == 0;
}

struct sim_task *sim_task_new(struct sim *s, struct sim_node *n, const char *type, const char *id,
                              const char *user, enum task_kind kind)
{
    struct sim_task *t = xcalloc(1, sizeof *t);
    t->node = n;
    snprintf(t->type, sizeof t->type, "%s", type);
    snprintf(t->id, sizeof t->id, "%s", id);
    snprintf(t->user, sizeof t->user, "%s", user);
    t->pid = n->pid_next++;
    t->pstart = (unsigned)(0x100000 + (unsigned)(sim_now(s) * 100));
    t->starttime = wall_s() + n->clock_offset;
    t->running = true;
    t->log = json_array();
    t->kind = kind;
    t->t0 = sim_now(s);
    snprintf(t->upid, sizeof t->upid, "UPID:%s:%08X:%08X:%08llX:%s:%s:%s:", n->name, t->pid,
             t->pstart, (unsigned long long)t->starttime, type, id, user);
    t->next = s->tasks;
    s->tasks = t;
    task_index_add(s, t);
    s->ntasks_running++;
    s->ntasks_started++;
    s->dirty = true;
    pthread_cond_broadcast(&s->started_cv);
    return t;
}

void sim_task_log(struct sim_task *t, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (json_array_size(t->log) < 10000)
        json_array_append_new(t->log, json_string(line));
}

/* The task's line goes into its node's "index"; past SIM_TASK_INDEX_MAX
 * bytes that file becomes index.1 and the old index.1 drops out. */
static void archive(struct sim_task *t)
{
    struct sim_node *n = t->node;
    t->arch_gen = n->arch_gen;
    n->arch_bytes += (int)(strlen(t->upid) + 10 + strlen(t->exitstatus) + 1);
    if (n->arch_bytes > SIM_TASK_INDEX_MAX) {
        n->arch_gen++;
        n->arch_bytes = 0;
    }
}

bool sim_task_archived(const struct sim_task *t)
{
    return !t->running && t->arch_gen >= t->node->arch_gen - 1;
}

void sim_task_finish(struct sim *s, struct sim_task *t, const char *exitstatus)
{
    if (!t->running)
        return;
    t->running = false;
    t->endtime = wall_s() + t->node->clock_offset;
    if (strcmp(exitstatus, "OK") == 0)
        sim_task_log(t, "TASK OK");
    else if (str_starts(exitstatus, "WARNINGS"))
        sim_task_log(t, "TASK %s", exitstatus);
    else
        sim_task_log(t, "TASK ERROR: %s", exitstatus);
    t->exitstatus = xstrdup(exitstatus);
    s->ntasks_running--;
    archive(t);
    s->dirty = true;
    pthread_cond_broadcast(&s->cv);
    log_debug("sim", "task %s ended: %s", t->upid, exitstatus);
}

void sim_task_free(struct sim_task *t)
{
    json_decref(t->log);
    json_decref(t->args);
    free(t->exitstatus);
    free(t->fault_exit);
    free(t);
}

struct sim_task *sim_task_find(struct sim *s, const char *upid)
{
    if (!s->task_index_cap)
        return NULL;
    for (struct sim_task *t = s->task_index[task_bucket(s, upid)]; t; t = t->hnext)
        if (strcmp(t->upid, upid) == 0)
            return t;
    return NULL;
}

/* Fail with a formatted message; with `unlock`, the VM's flock is given
 * back first (see unlock_vm). */
static void unlock_vm(struct sim *s, struct sim_task *t);
static void task_vfail(struct sim *s, struct sim_task *t, bool unlock, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (unlock)
        unlock_vm(s, t);
    sim_task_finish(s, t, msg);
}

static void task_fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void task_fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    task_vfail(s, t, false, fmt, ap);
    va_end(ap);
}

static struct sim_vm *task_vm(struct sim *s, struct sim_task *t)
{
    return sim_vm_find(s, t->node, t->vmid);
}

static void unlock_vm(struct sim *s, struct sim_task *t)
{
    struct sim_vm *vm = task_vm(s, t);
    if (vm && t->locked_dst) {
        sim_flock_release(s, vm, true);
        t->locked_dst = false;
    }
}

static const char *conf_lock(struct sim_vm *vm)
{
    return json_string_value(json_object_get(vm->conf, "lock"));
}

/* A VM task that ends in failure gives its VM's flock back first. */
static void vm_fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void vm_fail(struct sim *s, struct sim_task *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    task_vfail(s, t, true, fmt, ap);
    va_end(ap);
}

/* A config lock (backup, migrate...) refuses the task, as qm does: "VM is
 * locked (backup)". `skiplock` lets root pass it where the API offers it;
 * the "suspended" lock (hibernated VM) is no obstacle where allowed.
 * True when the task was failed. */
static bool refused_by_lock(struct sim *s, struct sim_task *t, struct sim_vm *vm,
                            bool honour_skiplock, bool suspended_ok)
{
    const char *lk = conf_lock(vm);
    if (!lk || (suspended_ok && strcmp(lk, "suspended") == 0) ||
        (honour_skiplock && json_is_true(json_object_get(t->args, "_skiplock"))))
        return false;
    vm_fail(s, t, "VM is locked (%s)", lk);
    return true;
}

/* Take the VM's exclusive flock, waiting up to LOCK_TIMEOUT from when the
 * phase began. Returns 1 when taken, 0 to keep waiting, -1 when failed. */
static int lock_vm(struct sim *s, struct sim_task *t, double now, double timeout)
{
    struct sim_vm *vm = task_vm(s, t);
    if (!vm) {
        char *m = qemu_noconf_msg(t->node, t->vmid);
        sim_task_finish(s, t, m);
        free(m);
        return -1;
    }
    if (t->deadline == 0) {
        t->deadline = now + timeout;
    }
    if (sim_flock_try(vm, true)) {
        t->locked_dst = true;
        t->deadline = 0;
        return 1;
    }
    if (t->phase == PH_LOCK && json_array_size(t->log) == 0)
        sim_task_log(t, "trying to acquire lock...");
    if (now >= t->deadline) {
        char lf[96];
        task_fail(s, t, "can't lock file '%s' - got timeout", sim_lockfile(t->vmid, lf));
        return -1;
    }
    return 0;
}

/* End a task: the injected fault's exit status wins over success. */
static void task_ok(struct sim *s, struct sim_task *t)
{
    unlock_vm(s, t);
    sim_task_finish(s, t, t->fault_exit ? t->fault_exit : "OK");
}

/* ---- clone ------------------------------------------------------------ */

static void clone_cleanup(struct sim *s, struct sim_task *t)
{
    struct sim_vm *src = task_vm(s, t);
    struct sim_vm *dst = sim_vm_find(s, t->node, t->newid);
    if (src && t->locked_src)
        sim_flock_release(s, src, src->power != VM_STOPPED);
    t->locked_src = false;
    if (dst && t->locked_dst) {
        sim_flock_release(s, dst, true);
        t->locked_dst = false;
    }
}

static bool clone_fail_and_remove(struct sim *s, struct sim_task *t, const char *msg)
{
    struct sim_vm *dst = sim_vm_find(s, t->node, t->newid);
    clone_cleanup(s, t);
    if (dst && t->phase >= PH_WORK)
        sim_vm_unlink(s, dst);
    task_fail(s, t, "clone failed: %s", msg);
    return true;
}

static void clone_locks(struct sim *s, struct sim_task *t, double now)
{
    struct sim_vm *src = task_vm(s, t);
    char lf[96];
    if (!src) {
        task_fail(s, t, "unable to find configuration file for VM %d on node '%s'", t->vmid,
                  t->node->name);
        return;
    }
    if (t->deadline == 0)
        t->deadline = now + CLONE_LOCK_TIMEOUT;
    if (!t->locked_src)
        t->locked_src = sim_flock_try(src, src->power != VM_STOPPED);
    if (!t->locked_src) {
        if (now >= t->deadline)
            task_fail(s, t, "can't lock file '%s' - got timeout", sim_lockfile(t->vmid, lf));
        return;
    }
    /* the new VM's config may only be created if the ID is still free */
    if (sim_vmid_used(s, t->node, t->newid)) {
        struct sim_vm *other = sim_vm_find(s, s->o.standalone ? t->node : NULL, t->newid);
        clone_cleanup(s, t);
        if (other && other->node == t->node)
            task_fail(s, t, "unable to create VM %d: config file already exists", t->newid);
        else
            task_fail(s, t,
                      "close (rename) atomic file "
                      "'/etc/pve/nodes/%s/qemu-server/%d.conf' failed: File exists",
                      t->node->name, t->newid);
        return;
    }
    struct sim_vm *dst = sim_vm_new(s, t->node, t->newid);
    dst->fl.exclusive = true;
    t->locked_dst = true;
    json_object_set_new(dst->conf, "lock", json_string("clone"));
    const char *drive = json_string_value(json_object_get(src->conf, "scsi0"));
    drive = drive ? drive : "";
    sim_task_log(t, "create %s clone of drive scsi0 (%.*s)",
                 json_is_true(json_object_get(t->args, "_full")) ? "full" : "linked",
                 (int)strcspn(drive, ","), drive);
    t->phase = PH_WORK;
    t->deadline = 0;
}

static void clone_start_copy(struct sim *s, struct sim_task *t, double now)
{
    struct sim_vm *src = task_vm(s, t);
    struct sim_vm *dst = sim_vm_find(s, t->node, t->newid);
    if (!src || !dst) {
        clone_fail_and_remove(s, t, "source VM vanished");
        return;
    }
    bool full = json_is_true(json_object_get(t->args, "_full"));
    const char *storage = json_string_value(json_object_get(t->args, "storage"));
    qemu_clone_conf(s, src, dst, t->args, storage, full);
    json_object_set_new(dst->conf, "lock", json_string("clone"));
    /* space check on the target storage(s) */
    char *sid = sim_disk_storage(json_string_value(json_object_get(dst->conf, "scsi0")));
    struct sim_storage *st = sid ? sim_storage_find(t->node, sid) : NULL;
    int64_t disk = sim_disk_size(json_string_value(json_object_get(src->conf, "scsi0")));
    if (st && full && sim_storage_used(s, t->node, st->id) > st->total) {
        int64_t free_ext = (st->total - (sim_storage_used(s, t->node, st->id) - disk)) / (4 << 20);
        char msg[512];
        snprintf(msg, sizeof msg,
                 "lvcreate 'pve/vm-%d-disk-0' error:   Volume group \"pve\" has insufficient "
                 "free space (%lld extents): %lld required.",
                 t->newid, (long long)(free_ext < 0 ? 0 : free_ext), (long long)(disk / (4 << 20)));
        free(sid);
        clone_fail_and_remove(s, t, msg);
        return;
    }
    free(sid);
    t->bytes_total = full ? (double)disk : 0;
    t->bytes_done = 0;
    t->dur = full ? 0.5 : 1.0; /* setup time besides the copy */
    t->t0 = now;
    t->phase = PH_WORK2;
}

/* add_vm_to_pool, the last step of a successful clone or create. */
static void join_pool(struct sim *s, struct sim_task *t, int vmid)
{
    const char *pool = json_string_value(json_object_get(t->args, "pool"));
    if (pool)
        sim_pool_add_vm(s, pool, vmid);
}

static void clone_progress(struct sim *s, struct sim_task *t, double now, double share)
{
    if (t->bytes_done < t->bytes_total) {
        double before = t->bytes_done;
        t->bytes_done += share;
        if (t->bytes_done > t->bytes_total)
            t->bytes_done = t->bytes_total;
        /* qemu-img convert -p prints every 1% */
        int p0 = (int)(before * 100 / t->bytes_total),
            p1 = (int)(t->bytes_done * 100 / t->bytes_total);
        if (p1 > p0)
            sim_task_log(t, "transferred %.1f GiB of %.1f GiB (%d.00%%)",
                         t->bytes_done / 1073741824.0, t->bytes_total / 1073741824.0, p1);
        return;
    }
    if (now < t->t0 + t->dur)
        return;
    struct sim_vm *dst = sim_vm_find(s, t->node, t->newid);
    if (t->fault_exit) {
        sim_task_log(t, "%s", t->fault_exit);
        struct sim_vm *d = dst;
        clone_cleanup(s, t);
        if (d)
            sim_vm_unlink(s, d);
        sim_task_finish(s, t, t->fault_exit);
        return;
    }
    if (dst)
        json_object_del(dst->conf, "lock");
    clone_cleanup(s, t);
    join_pool(s, t, t->newid);
    sim_task_finish(s, t, "OK");
}

void sim_task_stop(struct sim *s, struct sim_task *t)
{
    if (!t->running)
        return;
    sim_task_log(t, "received interrupt");
    if (t->kind >= TK_VZCREATE) {
        lxc_task_stop(s, t);
        return;
    }
    if (t->kind == TK_CLONE) {
        clone_fail_and_remove(s, t, "received interrupt");
        return;
    }
    /* PVE's worker dies on the signal ("received interrupt") and its
     * flock goes with it; a lock it wrote into the config (snapshot,
     * migrate) stays, as on PVE, until `qm unlock` */
    unlock_vm(s, t);
    sim_task_finish(s, t, "received interrupt");
}

static void step_clone(struct sim *s, struct sim_task *t, double now, double share)
{
    switch (t->phase) {
    case PH_FORK:
        if (now - t->t0 >= FORK_DELAY) {
            sim_task_log(t, "creating a clone of VM %d with ID %d", t->vmid, t->newid);
            t->phase = PH_LOCK;
        }
        break;
    case PH_LOCK:
        clone_locks(s, t, now);
        break;
    case PH_WORK:
        clone_start_copy(s, t, now);
        break;
    case PH_WORK2:
        clone_progress(s, t, now, share);
        break;
    }
}

/* ---- power and the rest ----------------------------------------------- */

/* Common shape: fork, lock (10 s), wait `dur`, then finish(). */
static int generic_phases(struct sim *s, struct sim_task *t, double now)
{
    if (t->phase == PH_FORK) {
        if (now - t->t0 < FORK_DELAY)
            return 0;
        t->phase = PH_LOCK;
    }
    if (t->phase == PH_LOCK) {
        int r = lock_vm(s, t, now, LOCK_TIMEOUT);
        if (r <= 0)
            return 0;
        t->phase = PH_WORK;
        t->t0 = now;
        return 1; /* just locked: the caller checks preconditions */
    }
    return 2; /* working */
}

/* A request parameter kept in t->args: form and query values are strings
 * ("60", "1"), JSON bodies may carry numbers and booleans. */
static double arg_num(struct sim_task *t, const char *name, double dflt)
{
    json_t *v = json_object_get(t->args, name);
    if (json_is_number(v))
        return json_number_value(v);
    int64_t n;
    if (json_is_string(v) && parse_i64(json_string_value(v), &n))
        return (double)n;
    return dflt;
}

static bool arg_bool(struct sim_task *t, const char *name)
{
    json_t *v = json_object_get(t->args, name);
    if (json_is_boolean(v))
        return json_is_true(v);
    return arg_num(t, name, 0) != 0;
}

static void step_start(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        json_t *tpl = json_object_get(vm->conf, "template");
        if (json_is_true(tpl) || json_integer_value(tpl)) {
            vm_fail(s, t, "you can't start a vm if it's a template");
        } else if (refused_by_lock(s, t, vm, false, true)) {
            return;
        } else if (vm->power != VM_STOPPED) {
            vm_fail(s, t, "VM %d already running", vm->vmid);
        } else if (sim_node_mem_used(s, vm->node) + sim_vm_maxmem(vm) > vm->node->mem_total) {
            sim_task_log(t, "kvm: cannot set up guest memory 'pc.ram': Cannot allocate memory");
            vm_fail(s, t, "start failed: QEMU exited with code 1");
        } else {
            t->dur = 1.5;
            vm->starting = true; /* its memory is taken from now on */
        }
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    vm->starting = false;
    if (!t->fault_exit) {
        qemu_apply_pending(vm);
        sim_vm_set_power(s, vm, VM_RUNNING);
        vm->started = now;
        s->dirty = true;
    }
    task_ok(s, t);
}

static void do_stop(struct sim *s, struct sim_vm *vm)
{
    sim_vm_set_power(s, vm, VM_STOPPED);
    qemu_apply_pending(vm);
    s->dirty = true;
}

static void step_stop(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        if (vm->power == VM_STOPPED)
            task_ok(s, t); /* already stopped: a no-op that succeeds */
        else if (!refused_by_lock(s, t, vm, true, false))
            t->dur = 0.8;
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    if (!t->fault_exit)
        do_stop(s, vm);
    task_ok(s, t);
}

/* Shutdown (and the first half of reboot): ACPI, wait for the guest up to
 * `timeout`, then either force a stop or fail. */
static void step_shutdown(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        if (vm->power == VM_STOPPED) {
            if (t->kind == TK_REBOOT)
                vm_fail(s, t, "VM %d not running", vm->vmid);
            else
                task_ok(s, t);
            return;
        }
        if (refused_by_lock(s, t, vm, true, false))
            return;
        double timeout = arg_num(t, "timeout", 60.0);
        t->deadline = now + timeout; /* the guest's time to power off */
        t->dur = vm->acpi ? 3.0 : 1e18;
        return;
    }
    if (t->phase == PH_WORK) {
        if (now - t->t0 >= t->dur) {
            do_stop(s, vm);
            if (t->kind == TK_REBOOT) {
                t->phase = PH_WORK2;
                t->t0 = now;
                return;
            }
            task_ok(s, t);
        } else if (now >= t->deadline) {
            if (arg_bool(t, "forceStop")) {
                sim_task_log(t, "VM still running - terminating now with SIGTERM");
                do_stop(s, vm);
                task_ok(s, t);
            } else {
                vm_fail(s, t, "VM quit/powerdown failed - got timeout");
            }
        }
        return;
    }
    /* reboot: start again, pending changes applied */
    if (now - t->t0 >= 1.5) {
        qemu_apply_pending(vm);
        sim_vm_set_power(s, vm, VM_RUNNING);
        vm->started = now;
        task_ok(s, t);
    }
}

static void step_simple_power(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        const char *lk = conf_lock(vm);
        if (refused_by_lock(s, t, vm, true, true)) {
            return;
        } else if (vm->power == VM_STOPPED &&
                   !(t->kind == TK_RESUME && lk && strcmp(lk, "suspended") == 0)) {
            vm_fail(s, t, "VM %d not running", vm->vmid);
        } else {
            t->dur = vm->power == VM_STOPPED ? 1.5 : 0.3; /* from disk: a start */
        }
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    if (!t->fault_exit) {
        if (t->kind == TK_SUSPEND) {
            sim_vm_set_power(s, vm, VM_PAUSED);
        } else if (t->kind == TK_RESUME && vm->power == VM_STOPPED) {
            /* suspended to disk: resume starts it from the saved state */
            json_object_del(vm->conf, "lock");
            json_object_del(vm->conf, "vmstate");
            qemu_apply_pending(vm);
            sim_vm_set_power(s, vm, VM_RUNNING);
            vm->started = now;
        } else if (t->kind == TK_RESUME) {
            sim_vm_set_power(s, vm, VM_RUNNING);
        }
        s->dirty = true;
    }
    task_ok(s, t);
}

static void step_destroy(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        if (refused_by_lock(s, t, vm, true, true)) {
            return;
        } else if (vm->power != VM_STOPPED) {
            vm_fail(s, t, "VM %d is running - destroy failed", vm->vmid);
        } else {
            json_object_set_new(vm->conf, "lock", json_string("destroyed"));
            t->dur = 1.0;
        }
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    if (t->fault_exit) {
        json_object_del(vm->conf, "lock");
        task_ok(s, t);
        return;
    }
    sim_task_log(t, "Removing image: 100%% complete...done.");
    t->locked_dst = false;
    qemu_destroy(s, vm);
    sim_task_finish(s, t, "OK");
}

/* resize_vm's worker (PVE 8+), under the config lock: a stale `digest`
 * ("mismatch" since qemu-server 8.2.5), then the config lock unless skiplock. */
static bool resize_refused(struct sim *s, struct sim_task *t, struct sim_vm *vm)
{
    const char *digest = json_string_value(json_object_get(t->args, "digest"));
    if (digest && *digest) {
        char *cur = sim_vm_digest(vm);
        bool same = strcmp(cur, digest) == 0;
        free(cur);
        if (!same) {
            vm_fail(s, t, "checksum mismatch (file change by other user?)");
            return true;
        }
    }
    return refused_by_lock(s, t, vm, true, false);
}

static void step_config(struct sim *s, struct sim_task *t, double now)
{
    int g = generic_phases(s, t, now);
    if (g == 0)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (g == 1) {
        if (t->kind == TK_RESIZE && resize_refused(s, t, vm))
            return;
        t->dur = t->kind == TK_RESIZE ? 0.5 : 0.2;
        return;
    }
    if (now - t->t0 < t->dur)
        return;
    if (t->fault_exit) {
        task_ok(s, t);
        return;
    }
    char *err = NULL;
    int rc = t->kind == TK_RESIZE
                 ? qemu_apply_resize(s, vm, json_string_value(json_object_get(t->args, "disk")),
                                     json_string_value(json_object_get(t->args, "size")), &err)
                 : qemu_apply_config(s, vm, t->args, &err);
    unlock_vm(s, t);
    if (rc) {
        sim_task_finish(s, t, err);
        free(err);
        return;
    }
    task_ok(s, t);
}

static void step_create(struct sim *s, struct sim_task *t, double now)
{
    if (now - t->t0 < 0.8)
        return;
    struct sim_vm *vm = task_vm(s, t);
    if (!vm) {
        task_fail(s, t, "unable to create VM %d - config vanished", t->vmid);
        return;
    }
    if (t->fault_exit) {
        sim_vm_unlink(s, vm);
        task_fail(s, t, "unable to create VM %d - %s", t->vmid, t->fault_exit);
        return;
    }
    json_t *conf = json_object_get(t->args, "_conf");
    if (conf)
        json_object_update(vm->conf, conf);
    json_object_del(vm->conf, "lock");
    if (vm->fl.exclusive)
        sim_flock_release(s, vm, true);
    join_pool(s, t, t->vmid);
    sim_task_finish(s, t, "OK");
}

/* HA: the request only asks the HA manager; the LRM runs the real task. */
bool sim_vm_ha_managed(const struct sim_vm *vm)
{
    return vm->ha && strcmp(vm->ha_state, "ignored") != 0;
}

void sim_ha_act(struct sim *s, struct sim_vm *vm, bool start, double delay)
{
    snprintf(vm->ha_state, sizeof vm->ha_state, "%s", start ? "started" : "stopped");
    vm->ha_request[0] = '\0';
    char id[16];
    snprintf(id, sizeof id, "%d", vm->vmid);
    struct sim_task *lrm = sim_task_new(s, vm->node, start ? "qmstart" : "qmstop", id, "root@pam",
                                        start ? TK_START : TK_STOP);
    lrm->vmid = vm->vmid;
    lrm->args = json_object();
    lrm->t0 = sim_now(s) + delay;
    s->dirty = true;
}

void sim_ha_resume(struct sim *s, struct sim_vm *vm)
{
    if (strncmp(vm->ha_request, "migrate ", 8) == 0) {
        char target[64];
        snprintf(target, sizeof target, "%s", vm->ha_request + 8);
        vm->ha_request[0] = '\0';
        sim_ha_migrate(s, vm, target, 0.5);
    } else if (vm->ha_request[0]) {
        sim_ha_act(s, vm, strcmp(vm->ha_request, "started") == 0, 0.5);
    }
}

/* A hastart/hastop task: qemu-server's worker runs `ha-manager set vm:N
 * --state started` or `ha-manager crm-command stop vm:N TIMEOUT`, which only
 * write the request for the CRM, and ends. A resource in state "error"
 * refuses it (API2::HA::Resources::check_service_state): the command fails
 * and so does the task. A frozen one (its LRM restarting, the HA stack
 * disarmed with freeze) takes it, and the CRM leaves it queued until the
 * freeze is lifted: the task ends OK and nothing happens meanwhile. */
static void step_ha(struct sim *s, struct sim_task *t, double now)
{
    if (now - t->t0 < 0.3)
        return;
    struct sim_vm *vm = task_vm(s, t);
    bool start = t->kind == TK_HASTART;
    sim_task_log(t, "Requesting HA %s for VM %d", start ? "start" : "stop", t->vmid);
    if (vm && !t->fault_exit && strcmp(vm->ha_state, "error") == 0) {
        sim_task_log(t, "service 'vm:%d' in error state, must be disabled and fixed first",
                     vm->vmid);
        const char *timeout = json_string_value(json_object_get(t->args, "_ha_timeout"));
        char *m = start ? xasprintf("command 'ha-manager set vm:%d --state started' failed: exit "
                                    "code 255",
                                    vm->vmid)
                        : xasprintf("command 'ha-manager crm-command stop vm:%d %s' failed: "
                                    "exit code 255",
                                    vm->vmid, timeout ? timeout : "0");
        sim_task_finish(s, t, m);
        free(m);
        return;
    }
    sim_task_finish(s, t, t->fault_exit ? t->fault_exit : "OK");
    if (!vm || t->fault_exit)
        return;
    if (strcmp(vm->ha_state, "freeze") == 0) {
        snprintf(vm->ha_request, sizeof vm->ha_request, "%s", start ? "started" : "stopped");
        s->dirty = true;
        return;
    }
    sim_ha_act(s, vm, start, 0.5);
}

static void step(struct sim *s, struct sim_task *t, double now, double share)
{
    switch (t->kind) {
    case TK_CLONE:
        step_clone(s, t, now, share);
        break;
    case TK_CREATE:
        step_create(s, t, now);
        break;
    case TK_START:
        step_start(s, t, now);
        break;
    case TK_STOP:
        step_stop(s, t, now);
        break;
    case TK_SHUTDOWN:
    case TK_REBOOT:
        step_shutdown(s, t, now);
        break;
    case TK_SUSPEND:
    case TK_RESUME:
    case TK_RESET:
        step_simple_power(s, t, now);
        break;
    case TK_DESTROY:
        step_destroy(s, t, now);
        break;
    case TK_CONFIG:
    case TK_RESIZE:
        step_config(s, t, now);
        break;
    case TK_HASTART:
    case TK_HASTOP:
        step_ha(s, t, now);
        break;
    case TK_SNAPSHOT:
    case TK_DELSNAPSHOT:
    case TK_ROLLBACK:
    case TK_TEMPLATE:
    case TK_MIGRATE:
    case TK_HAMIGRATE:
    case TK_MOVEDISK:
    case TK_VZSNAPSHOT:
    case TK_VZDELSNAPSHOT:
    case TK_VZROLLBACK:
    case TK_VZTEMPLATE:
        vmops_step(s, t, now);
        break;
    case TK_VZCREATE:
    case TK_VZSTART:
    case TK_VZSTOP:
    case TK_VZSHUTDOWN:
    case TK_VZREBOOT:
    case TK_VZDESTROY:
    case TK_VZRESIZE:
    case TK_VZCLONE:
    case TK_VZSUSPEND:
    case TK_VZRESUME:
    case TK_VZMIGRATE:
        lxc_task_step(s, t, now);
        break;
    case TK_GENERIC:
        if (now - t->t0 >= t->dur)
            task_ok(s, t);
        break;
    }
}

/* Forget finished tasks that fell out of their node's archive (index.1
 * rotated away): their logs are gone too, as once pveupdate's daily
 * cleanup_tasks has removed the logs of tasks older than index.1. */
static void trim_tasks(struct sim *s)
{
    for (struct sim_task **pp = &s->tasks; *pp;) {
        struct sim_task *t = *pp;
        if (!t->running && !sim_task_archived(t)) {
            *pp = t->next;
            task_index_del(s, t);
            sim_task_free(t);
            continue;
        }
        pp = &t->next;
    }
}

void sim_advance(struct sim *s)
{
    double now = sim_now(s);
    double dt = now - s->last_adv;
    if (dt < 0)
        dt = 0;
    s->last_adv = now;
    static int tick;
    if (++tick % 256 == 0)
        trim_tasks(s);
    sim_rrd_advance(s, now);    /* a report due is of the world before this call's changes */
    if (s->ntasks_running <= 0) /* nothing to step: skip the walks over the archive */
        return;
    /* bandwidth share: full clones copying on each node */
    int copying[SIM_MAX_NODES] = {0};
    for (struct sim_task *t = s->tasks; t; t = t->next)
        if (t->running && t->kind == TK_CLONE && t->phase == PH_WORK2 &&
            t->bytes_done < t->bytes_total)
            copying[t->node->idx]++;
    bool stepping = false;
    for (struct sim_task *t = s->tasks; t; t = t->next) {
        if (!t->running || t->t0 > now)
            continue;
        if (!stepping) { /* a step may change VMs: no cached derived values meanwhile */
            sim_world_begin(s);
            stepping = true;
        }
        double share = copying[t->node->idx] ? t->node->bandwidth * dt / copying[t->node->idx] : 0;
        int phase = t->phase;
        step(s, t, now, share);
        if (t->phase != phase || !t->running) { /* tasks change VMs as a phase ends */
            sim_history_sizes_of(s, t->node, t->vmid);
            sim_history_sizes_of(s, t->node, t->newid);
        }
    }
    if (stepping)
        sim_world_end(s);
}

static void *engine_main(void *arg)
{
    struct sim *s = arg;
    int64_t last_save = mono_ms(), save_gap = 500;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        sim_advance(s);
        bool save = s->o.state_dir && s->dirty && mono_ms() - last_save > save_gap;
        if (save) {
            int64_t t0 = mono_ms();
            char *p = xasprintf("%s/state.json", s->o.state_dir);
            sim_state_save(s, p);
            free(p);
            s->dirty = false;
            last_save = mono_ms();
            /* a save holds the world's lock: with 100,000 VMs it takes a few
             * hundred ms, so space saves to keep it under 5 % of the time */
            save_gap = 20 * (last_save - t0);
            if (save_gap < 500)
                save_gap = 500;
        }
        pthread_mutex_unlock(&s->mu);
        sleep_ms(5);
    }
    return NULL;
}

int sim_engine_start(struct sim *s)
{
    s->last_adv = sim_now(s);
    return pthread_create(&s->engine, NULL, engine_main, s);
}

void sim_engine_stop(struct sim *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->engine, NULL);
}
