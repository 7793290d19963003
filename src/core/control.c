/* control: everything done to a VM after its creation — power actions,
 * resource updates, disk growth, deletion — as durable jobs, plus quotas.
 *
 * Requests are checked against the record at once (ownership, state, power,
 * limits, quota, capacity) and refused without a job when they make no
 * sense; the job then locates the VM (the inventory, refreshed when the VM
 * is not where the record says: HA may have moved it), calls Proxmox, waits
 * for the task and writes the result to the record. Steps and UPIDs are
 * checkpointed like creation, so a restart resumes each job exactly once. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/control_int.h"
#include "pve/pve_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)
#define STEP_DEADLINE_MS (600 * 1000L)

static const char *const action_names[] = {"start", "shutdown", "stop",
                                           "pause", "resume",   "reboot"};

const char *vm_action_name(enum vm_action a)
{
    return (unsigned)a < sizeof action_names / sizeof *action_names ? action_names[a] : "?";
}

int vm_action_parse(const char *s)
{
    for (size_t i = 0; s && i < sizeof action_names / sizeof *action_names; i++)
        if (strcmp(s, action_names[i]) == 0)
            return (int)i;
    return -1;
}

int core_fail(struct core_error *err, enum core_err code, const char *field, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        err->node[0] = '\0';
        snprintf(err->field, sizeof err->field, "%s", field ? field : "");
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- quotas ------------------------------------------------------------ */

int core_quota_use(struct core *k, const char *owner, struct quota_use *used,
                   struct core_error *err)
{
    memset(used, 0, sizeof *used);
    struct vm_filter f = {.owner = owner, .state = -1, .limit = 1000};
    for (;;) {
        struct vm_rec *v = NULL;
        size_t n = 0;
        struct store_error se;
        if (store_vm_list(k->st, &f, &v, &n, &se))
            return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
        for (size_t i = 0; i < n; i++) {
            if (v[i].state == VMS_CREATING || v[i].state == VMS_ENABLED ||
                v[i].state == VMS_DELETING) {
                used->vms++;
                used->cores += v[i].cores;
                used->memory_mb += v[i].memory_mb;
                used->disk_gb += v[i].disk_gb;
            }
            f.after_id = v[i].id;
            vm_rec_release(&v[i]);
        }
        free(v);
        if (n == 0)
            break;
    }
    struct store_error se;
    if (store_addr_owner_count(k->st, owner, &used->addresses, &se))
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    return CORE_OK;
}

/* Would adding the deltas to what the owner uses (u) pass quota q? */
int core_quota_judge(const struct cfg_quota *q, const char *owner, const struct quota_use *u,
                     int dvms, int dcores, int64_t dmem, int64_t ddisk, struct core_error *err)
{
    if (q->vms > 0 && u->vms + dvms > q->vms)
        return core_fail(err, CORE_E_FULL, "quota",
                         "VM quota of '%s' reached: %d of %d VMs in use, %d left", owner, u->vms,
                         q->vms, q->vms - u->vms);
    if (q->cores > 0 && u->cores + dcores > q->cores)
        return core_fail(err, CORE_E_FULL, "cores",
                         "core quota of '%s': %d of %d cores in use, %d left", owner, u->cores,
                         q->cores, q->cores - u->cores);
    if (q->memory_mb > 0 && u->memory_mb + dmem > q->memory_mb)
        return core_fail(err, CORE_E_FULL, "memory_mb",
                         "memory quota of '%s': %lld of %lld MiB in use, %lld MiB left", owner,
                         (long long)u->memory_mb, (long long)q->memory_mb,
                         (long long)(q->memory_mb - u->memory_mb));
    if (q->disk_gb > 0 && u->disk_gb + ddisk > q->disk_gb)
        return core_fail(err, CORE_E_FULL, "disk_gb",
                         "disk quota of '%s': %lld of %lld GiB in use, %lld GiB left", owner,
                         (long long)u->disk_gb, (long long)q->disk_gb,
                         (long long)(q->disk_gb - u->disk_gb));
    return CORE_OK;
}

/* Would adding the deltas pass the owner's quota? */
int core_quota_check(struct core *k, const char *owner, int dvms, int dcores, int64_t dmem,
                     int64_t ddisk, struct core_error *err)
{
    const struct cfg_quota *q = config_quota(k->cfg, owner);
    if (!q)
        return CORE_OK;
    struct quota_use u;
    int rc = core_quota_use(k, owner, &u, err);
    return rc ? rc : core_quota_judge(q, owner, &u, dvms, dcores, dmem, ddisk, err);
}

/* ---- requests ------------------------------------------------------------ */

/* The caller's live record of vmid (core_int.h). */
int core_vm_load_owned(struct core *k, int vmid, const char *owner, bool node_up, struct vm_rec *v,
                       struct core_error *err)
{
    struct store_error se;
    int rc = store_vm_get(k->st, vmid, v, &se);
    if (rc == STORE_E_NOTFOUND || (rc == 0 && owner && strcmp(owner, v->owner) != 0)) {
        if (rc == 0)
            vm_rec_release(v);
        return core_fail(err, CORE_E_NOTFOUND, "vmid", "no VM %d", vmid);
    }
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    if (v->state != VMS_ENABLED) {
        enum vm_state st = v->state;
        vm_rec_release(v);
        return core_fail(err, CORE_E_CONFLICT, "vmid", "VM %d is %s", vmid, vm_state_name(st));
    }
    if (node_up && core_node_check(k, vmid, v->node, err)) { /* refused now, not failed later */
        vm_rec_release(v);
        return CORE_E_UNAVAILABLE;
    }
    return CORE_OK;
}

/* Queue a job on v (`request` is stolen; job_id is filled): the job and its
 * first event in one store transaction, and with `d`, the owner's quota
 * checked in it too (the earlier check gives the message; this one holds
 * against concurrent requests). A delete moves the record from enabled to
 * deleting in that transaction: of two concurrent deletes one gets a job.
 * The request names the record (its id) the job is for, so that a job never
 * acts on a later record of the same VMID. */
int core_enqueue(struct core *k, struct vm_rec *v, const char *kind, json_t *request,
                 char job_id[40], const struct quota_delta *d, struct core_error *err)
{
    json_object_set_new(request, "record", json_integer(v->id));
    struct job_rec j = {
        .state = JOB_QUEUED, .vmid = v->vmid, .request = request, .attempts = json_array()};
    bool del = strcmp(kind, "delete") == 0;
    core_uuid(job_id);
    snprintf(j.id, sizeof j.id, "%s", job_id);
    snprintf(j.kind, sizeof j.kind, "%s", kind);
    snprintf(j.owner, sizeof j.owner, "%s", v->owner);
    snprintf(j.step, sizeof j.step, "queued");
    snprintf(j.node, sizeof j.node, "%s", v->node);
    const struct cfg_quota *q = d ? config_quota(k->cfg, v->owner) : NULL;
    struct store_usage lim = {0}, used;
    if (q)
        lim = (struct store_usage){q->vms, q->cores, q->memory_mb, q->disk_gb, q->addresses};
    struct store_error se;
    int rc = del ? store_job_submit_move(k->st, &j, kind, v->id, VMS_ENABLED, VMS_DELETING, &se)
                 : store_job_submit(k->st, &j, kind, q ? &lim : NULL, &used, &se);
    job_rec_release(&j);
    if (rc == STORE_E_CONFLICT && del)
        return core_fail(err, CORE_E_CONFLICT, "vmid", "VM %d is being deleted already", v->vmid);
    if (rc == STORE_E_FULL && q) {
        struct quota_use u = {used.vms, used.cores, used.memory_mb, used.disk_gb, used.addresses};
        if (core_quota_judge(q, v->owner, &u, 0, d->cores, d->memory_mb, d->disk_gb, err))
            return CORE_E_FULL;
        return core_fail(err, CORE_E_FULL, "quota",
                         "the quota of '%s' is taken by changes under way", v->owner);
    }
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    log_info("job", "job=%s kind=%s vmid=%d node=%s queued", job_id, kind, v->vmid, v->node);
    core_wake(k);
    return CORE_OK;
}

/* Which actions make sense from a recorded power state. */
static const char *action_refusal(enum vm_action a, const char *power, bool force)
{
    bool running = strcmp(power, "running") == 0, paused = strcmp(power, "paused") == 0,
         stopped = strcmp(power, "stopped") == 0;
    switch (a) {
    case ACT_START:
        return running ? "already running" : paused ? "paused: resume it instead" : NULL;
    case ACT_SHUTDOWN:
        /* Proxmox refuses it ("VM is paused - cannot shutdown") unless forced */
        return stopped            ? "already stopped"
               : paused && !force ? "paused: resume it first, or force the shutdown"
                                  : NULL;
    case ACT_STOP:
        return stopped ? "already stopped" : NULL;
    case ACT_PAUSE:
        return running ? NULL : "not running";
    case ACT_RESUME:
        return paused ? NULL : running ? "not paused" : "not running";
    case ACT_REBOOT:
        return running ? NULL : paused ? "paused: resume it first" : "not running";
    }
    return "unknown action";
}

int core_vm_action(struct core *k, int vmid, const char *owner, enum vm_action a,
                   const struct action_opts *o, char job_id[40], struct core_error *err)
{
    if ((unsigned)a > ACT_REBOOT)
        return core_fail(err, CORE_E_INVALID, "action", "unknown action");
    if (o && (o->timeout_s < 0 || o->timeout_s > 3600))
        return core_fail(err, CORE_E_INVALID, "timeout", "must be between 0 and 3600 seconds");
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, true, &v, err);
    if (rc)
        return rc;
    const char *why = action_refusal(a, v.power, o && o->force);
    if (why) {
        rc = core_fail(err, CORE_E_CONFLICT, "action", "cannot %s VM %d: %s", vm_action_name(a),
                       vmid, why);
    } else {
        json_t *req = json_pack("{s:s,s:i,s:b}", "action", vm_action_name(a), "timeout",
                                o ? o->timeout_s : 0, "force", o && o->force);
        rc = core_enqueue(k, &v, vm_action_name(a), req, job_id, NULL, err);
    }
    vm_rec_release(&v);
    return rc;
}

int core_vm_update(struct core *k, int vmid, const char *owner, int cores, int64_t memory_mb,
                   char job_id[40], struct core_error *err)
{
    char msg[256];
    if (cores == 0 && memory_mb == 0)
        return core_fail(err, CORE_E_INVALID, "cores", "give cores and/or memory_mb");
    if (cores && !validate_cores(k->cfg, cores, msg, sizeof msg))
        return core_fail(err, CORE_E_INVALID, "cores", "%s", msg);
    if (memory_mb && !validate_memory(k->cfg, memory_mb, msg, sizeof msg))
        return core_fail(err, CORE_E_INVALID, "memory_mb", "%s", msg);
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, true, &v, err);
    if (rc)
        return rc;
    rc = core_quota_check(k, v.owner, 0, cores ? cores - v.cores : 0,
                          memory_mb ? memory_mb - v.memory_mb : 0, 0, err);
    if (!rc) {
        json_t *req = json_object();
        if (cores)
            json_object_set_new(req, "cores", json_integer(cores));
        if (memory_mb)
            json_object_set_new(req, "memory_mb", json_integer(memory_mb));
        struct quota_delta d = {cores ? cores - v.cores : 0,
                                memory_mb ? memory_mb - v.memory_mb : 0, 0};
        rc = core_enqueue(k, &v, "update", req, job_id, &d, err);
    }
    vm_rec_release(&v);
    return rc;
}

int core_vm_resize(struct core *k, int vmid, const char *owner, int64_t disk_gb, char job_id[40],
                   struct core_error *err)
{
    char msg[256];
    if (!validate_disk(k->cfg, disk_gb, msg, sizeof msg))
        return core_fail(err, CORE_E_INVALID, "disk_gb", "%s", msg);
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, true, &v, err);
    if (rc)
        return rc;
    if (disk_gb <= v.disk_gb) {
        rc = core_fail(err, CORE_E_INVALID, "disk_gb",
                       "must be larger than the current %lld GiB: disks only grow",
                       (long long)v.disk_gb);
        goto out;
    }
    if ((rc = core_quota_check(k, v.owner, 0, 0, 0, disk_gb - v.disk_gb, err)))
        goto out;
    /* room on the node's VM storage, checked before any call */
    struct node_view nv;
    const struct cfg_node *cn = config_node(k->cfg, v.node);
    if (cn && fleet_node_view(k->fl, v.node, &nv) == 0 && nv.known) {
        int64_t rmem = 0, rdisk = 0;
        /* shared storage: what creations on any of its nodes hold */
        store_reserved_on(k->st, v.node, nv.pool, NULL, nv.seen_since, &rmem, &rdisk, NULL);
        int64_t avail = nv.st_avail - rdisk - k->cfg->disk_margin_gb * GiB;
        int64_t need = (disk_gb - v.disk_gb) * GiB;
        if (need > avail) {
            rc = core_fail(
                err, CORE_E_FULL, "disk_gb",
                "not enough space on %s%s of %s: %lld GiB free, %lld GiB more needed",
                nv.pool[0] ? "shared storage " : "", cn->storage, nv.pool[0] ? cn->cluster : v.node,
                (long long)(avail > 0 ? avail / GiB : 0), (long long)(disk_gb - v.disk_gb));
            goto out;
        }
    }
    struct quota_delta d = {0, 0, disk_gb - v.disk_gb};
    rc = core_enqueue(k, &v, "resize", json_pack("{s:I}", "disk_gb", (json_int_t)disk_gb), job_id,
                      &d, err);
out:
    vm_rec_release(&v);
    return rc;
}

int core_vm_delete(struct core *k, int vmid, const char *owner, char job_id[40],
                   struct core_error *err)
{
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, true, &v, err);
    if (rc)
        return rc;
    /* the record says "deleting" (and which job) in the transaction that
     * queues the job: before a worker can see it, and once (a job saving
     * its result meanwhile writes only over the state it read: save_vm) */
    rc = core_enqueue(k, &v, "delete", json_object(), job_id, NULL, err);
    vm_rec_release(&v);
    return rc;
}

/* ---- running the jobs ----------------------------------------------------------- */

#define READ_TRIES 5
static bool transient(int rc);
static void read_pause(struct cctx *c, int n);
static json_t *pending_of(struct cctx *c, struct pve_error *e);

/* The record's pending changes become p (taken; an empty object or NULL:
 * none). */
static void pending_take(struct cctx *c, json_t *p)
{
    json_decref(c->v.pending);
    c->v.pending = json_object_size(p) ? p : NULL;
    if (!c->v.pending)
        json_decref(p);
}

/* Wait for a task, up to deadline_ms. A failed poll of its status (no exit
 * status came back) is not the task's failure: it is polled again, up to
 * READ_TRIES times in a row. -1 when the core is stopping. */
static int wait_task_for(struct cctx *c, const char *upid, long deadline_ms, struct pve_error *e)
{
    int64_t end = mono_ms() + deadline_ms;
    int rc;
    struct core_waiter w;
    core_waiter_begin(c->k, &w, upid, NULL);
    for (int bad_polls = 0;;) {
        struct pve_task t;
        memset(&t, 0, sizeof t);
        int64_t left = end - mono_ms();
        struct pve_wait_opts o = core_wait_opts(c->k, &w, left > 1 ? (long)left : 1);
        rc = pve_task_wait_opts(c->pc, upid, &o, &t, e);
        if (rc == PVE_E_TIMEOUT && core_stopping(c->k)) {
            rc = -1;
            goto out;
        }
        bool poll_failed = rc && rc != PVE_E_TIMEOUT && !t.exitstatus[0] && transient(rc);
        if (!poll_failed || ++bad_polls >= READ_TRIES || mono_ms() >= end)
            goto out;
        log_warn("job", "job=%s task %s: status read failed (%s), polling again", c->j->id, upid,
                 e->message);
        read_pause(c, bad_polls);
        if (core_stopping(c->k)) {
            rc = -1;
            goto out;
        }
    }
out:
    core_waiter_end(c->k, &w);
    return rc;
}

int ctl_wait_task(struct cctx *c, const char *upid, struct pve_error *e)
{
    return wait_task_for(c, upid, STEP_DEADLINE_MS, e);
}

/* How long a power action's task may take: a shutdown (or a reboot's)
 * waits for the guest up to the request's timeout (3600 s at most), then
 * fails or is forced; given up at the step's usual deadline, the job failed
 * while qmshutdown still held the VM's lock. The usual deadline comes on
 * top, for the lock, the forced stop and a reboot's start. */
static long power_deadline_ms(const struct cctx *c, enum vm_action a)
{
    json_int_t t = json_integer_value(json_object_get(c->j->request, "timeout"));
    if ((a != ACT_SHUTDOWN && a != ACT_REBOOT) || t <= 0)
        return STEP_DEADLINE_MS;
    return (long)t * 1000 + STEP_DEADLINE_MS;
}

void ctl_job_fail(struct cctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->j->error, sizeof c->j->error, fmt, ap);
    va_end(ap);
    /* A delete that failed before the destroy went through leaves the VM as
     * it was: the record says "enabled" again before the job says "failed",
     * so whoever sees the failure and reads the VM finds it enabled. Only
     * the record this delete marked (another delete's is not ours). */
    if (strcmp(c->j->kind, "delete") == 0 && c->v.state == VMS_DELETING &&
        strcmp(c->v.job, c->j->id) == 0) {
        c->v.state = VMS_ENABLED;
        ctl_save_vm(c);
        log_warn("job", "job=%s vmid=%d delete failed, the VM stays: %s", c->j->id, c->v.vmid,
                 c->j->error);
    }
    c->j->state = JOB_FAILED;
    c->j->finished_at = wall_ms();
    job_checkpoint(c->k, c->j, "failed", 100, "%s", c->j->error);
}

bool ctl_cancelled(struct cctx *c, const char *what)
{
    if (!job_cancel_asked(c->j))
        return false;
    char error[sizeof c->j->error];
    job_cancel_error(c->j, NULL, error, sizeof error, what);
    store_release_capacity(c->k->st, c->j->id, NULL); /* a move's, if any */
    ctl_job_fail(c, "%s", error);
    return true;
}

void ctl_job_done(struct cctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->j->state = JOB_DONE;
    c->j->finished_at = wall_ms();
    job_checkpoint(c->k, c->j, "done", 100, "%s", msg);
}

/* Tries of save_vm's read and conditional write: each lost try means
 * another writer moved the record's state in between (a DELETE in
 * another process); it cannot move it again and again. */
#define SAVE_TRIES 5

void ctl_save_vm(struct cctx *c)
{
    struct store_error se;
    int rc = 0;
    /* the record names the job that last acted on it (the reconciler looks
     * at it: a pause or resume makes it read the VM's run state) */
    snprintf(c->v.job, sizeof c->v.job, "%s", c->j->id);
    if (strcmp(c->j->kind, "delete") == 0) {
        rc = store_vm_update(c->k->st, &c->v, &se);
        goto out;
    }
    /* only a delete changes the record's state: any other job keeps the one
     * stored now (a DELETE may have marked it deleting, naming its job,
     * since this job read it). The write applies only while the state is
     * the one just read, so a DELETE from any proxd sharing the database
     * that lands between the read and the write makes it read again. */
    enum vm_state mine = c->v.state;
    for (int tries = 1;; tries++) {
        struct vm_rec now;
        if ((rc = store_vm_get_id(c->k->st, c->v.id, &now, &se)))
            break;
        enum vm_state read = now.state;
        c->v.state = mine; /* decided again from each read */
        snprintf(c->v.job, sizeof c->v.job, "%s", c->j->id);
        if (now.state != VMS_ENABLED) {
            c->v.state = now.state;
            snprintf(c->v.job, sizeof c->v.job, "%s", now.job);
        }
        vm_rec_release(&now);
        rc = store_vm_update_if(c->k->st, &c->v, read, 0, &se);
        if (rc != STORE_E_CONFLICT || tries == SAVE_TRIES)
            break;
        log_info("job", "job=%s vmid=%d record changed while saving it (%s): again", c->j->id,
                 c->v.vmid, se.message);
    }
out:
    if (rc)
        log_error("job", "job=%s vmid=%d cannot update the record: %s", c->j->id, c->v.vmid,
                  se.message);
}

/* May an error pass if the call is made again? (A 500, a lock timeout, a
 * network error or no answer may; "no such VM", a refused parameter, a
 * permission or TLS error will not.) */
static bool transient(int rc)
{
    return rc == PVE_E_LOCK || rc == PVE_E_NETWORK || rc == PVE_E_OTHER || rc == PVE_E_TIMEOUT;
}

/* The pause before try n + 1 (n = 1, 2, ...) of a read: 250 ms, 750 ms,
 * 2 s, then 4 s; 7 s in all before the fifth. A node off the network for
 * 3 s (a switch, corosync) and a 500 met as it came back failed a drain's
 * move "cannot find VM" when they were 250 ms doubling to 2 s, 3.75 s in
 * all (the fault test, seed 18302). */
static void read_pause(struct cctx *c, int n)
{
    static const long pauses[] = {250, 750, 2000, 4000};
    long ms = pauses[n < 4 ? n - 1 : 3];
    store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
    sleep_ms(ms);
}

/* Reads change nothing, so one that fails transiently is made again, up to
 * READ_TRIES times (7 s of pauses beside the calls): a single failed
 * read must not decide a job's outcome. */

int ctl_read_status(struct cctx *c, struct pve_vm_status *st, struct pve_error *e)
{
    int rc = 0;
    for (int n = 1; n <= READ_TRIES; n++) {
        if (n > 1)
            read_pause(c, n - 1);
        if (!transient(rc = pve_vm_status(c->pc, c->v.node, c->v.vmid, st, e)) ||
            core_stopping(c->k))
            break;
    }
    return rc;
}

int ctl_read_config(struct cctx *c, struct pve_vm_config *cfg, struct pve_error *e)
{
    int rc = 0;
    for (int n = 1; n <= READ_TRIES; n++) {
        if (n > 1)
            read_pause(c, n - 1);
        if (!transient(rc = pve_vm_config_get(c->pc, c->v.node, c->v.vmid, false, cfg, e)) ||
            core_stopping(c->k))
            break;
    }
    return rc;
}

/* One look for the VM (ctl_locate). *stale: it is not where the record
 * says and the inventory could not be read afresh (the last one read may
 * be older than a migration): PVE_E_NETWORK, worth another look. */
static int locate_once(struct cctx *c, struct pve_vm_status *st, struct pve_error *e, bool *stale)
{
    struct core *k = c->k;
    *stale = false;
    for (int round = 0; round < 2; round++) {
        c->pc = c->v.node[0] ? fleet_client(k->fl, c->v.node) : NULL;
        if (c->pc) {
            int rc = ctl_read_status(c, st, e);
            if (rc != PVE_E_NOTFOUND)
                return rc;
        }
        if (round == 1) {
            if (!c->pc) { /* seen on a node of its cluster that proxd does not manage */
                snprintf(e->message, sizeof e->message,
                         "VM %d is on node %s, which is not in proxd's configuration", c->v.vmid,
                         c->v.node);
                e->cls = PVE_E_NOTFOUND;
            }
            break;
        }
        int64_t t0 = wall_ms();
        fleet_refresh(k->fl, true);
        char node[64];
        bool found = fleet_vm_node(k->fl, c->v.vmid, c->v.node, node) == 0;
        /* absent from an inventory its world did not answer now, or still
         * on the node it is not on in that one: not gone, only not seen
         * yet (a migration the last inventory read is older than) */
        if ((!found || strcmp(node, c->v.node) == 0) && c->v.node[0] &&
            config_node(k->cfg, c->v.node) && !fleet_node_fresh(k->fl, c->v.node, t0)) {
            snprintf(e->message, sizeof e->message,
                     "VM %d is not on %s and the inventory of its nodes cannot be read now",
                     c->v.vmid, c->v.node);
            e->cls = PVE_E_NETWORK;
            *stale = true;
            return PVE_E_NETWORK;
        }
        if (!found) {
            snprintf(e->message, sizeof e->message, "VM %d is on no node", c->v.vmid);
            e->cls = PVE_E_NOTFOUND;
            return PVE_E_NOTFOUND;
        }
        if (strcmp(node, c->v.node) != 0) {
            log_info("job", "job=%s vmid=%d found on %s (was %s): moved behind our back", c->j->id,
                     c->v.vmid, node, c->v.node);
            snprintf(c->v.node, sizeof c->v.node, "%s", node);
            snprintf(c->j->node, sizeof c->j->node, "%s", node);
            ctl_save_vm(c);
        }
    }
    return PVE_E_NOTFOUND;
}

/* Find the VM: where the record says, else where the (refreshed) inventory
 * sees it. Returns 0, PVE_E_NOTFOUND when it is gone, or another error. A
 * VM not where the record says while the inventory cannot be read is
 * looked for again, as a read is (READ_TRIES): a migration's end met by a
 * failed inventory read failed the job "on no node" (the fault test, seed
 * 14007: a drain's move, then an update of the VM). */
int ctl_locate(struct cctx *c, struct pve_vm_status *st, struct pve_error *e)
{
    int rc = 0;
    bool stale = false;
    for (int n = 1; n <= READ_TRIES; n++) {
        if (n > 1)
            read_pause(c, n - 1);
        rc = locate_once(c, st, e, &stale);
        if (!stale || core_stopping(c->k))
            break;
    }
    return rc;
}

/* Has the action reached its goal? (resumed jobs and drift) */
static bool reached(enum vm_action a, const char *power, bool started_reboot)
{
    switch (a) {
    case ACT_START:
    case ACT_RESUME:
        return strcmp(power, "running") == 0;
    case ACT_SHUTDOWN:
    case ACT_STOP:
        return strcmp(power, "stopped") == 0;
    case ACT_PAUSE:
        return strcmp(power, "paused") == 0;
    case ACT_REBOOT:
        return started_reboot && strcmp(power, "running") == 0;
    }
    return false;
}

/* settle's answers besides 0 and locate's errors */
#define SETTLE_STOPPING (-1) /* proxd stops: the job is resumed, and settles again */
#define SETTLE_LATE (-2)     /* the HA manager did not bring the VM there in time */

/* How long settle waits for the HA manager: [proxd] ha_wait, and for a
 * shutdown its timeout on top (the LRM shuts the guest down with it; PVE's
 * default is 60 s). */
static long settle_ms(const struct cctx *c, enum vm_action a)
{
    long ms = (long)c->k->cfg->ha_wait_s * 1000;
    if (a == ACT_SHUTDOWN) {
        json_int_t t = json_integer_value(json_object_get(c->j->request, "timeout"));
        ms += (t > 0 ? (long)t : 60) * 1000;
    }
    return ms;
}

/* An HA-managed VM's start or stop is a hastart/hastop task that only asks
 * the HA manager; the VM starts or stops in a task of its own a moment later
 * (or never, when the HA manager does not act: the resource frozen, its LRM
 * dead, no CRM master). Locate the VM and, while it is HA-managed and not
 * there yet, wait for it, up to settle_ms. 0 with *st filled when it is
 * there (or not HA-managed), SETTLE_LATE with *st filled when the time ran
 * out, SETTLE_STOPPING when proxd stops meanwhile, or locate's error. */
static int settle(struct cctx *c, enum vm_action a, struct pve_vm_status *st, struct pve_error *e)
{
    int64_t end = mono_ms() + settle_ms(c, a);
    for (long pause = 50;; pause = pause < 1000 ? pause * 2 : 1000) {
        int rc = ctl_locate(c, st, e);
        if (rc || !st->ha_managed || reached(a, core_power_of(st), true))
            return rc;
        if (core_stopping(c->k))
            return SETTLE_STOPPING;
        if (mono_ms() > end)
            return SETTLE_LATE;
        store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
        sleep_ms(pause);
    }
}

/* Why settle gave up, for the job's error: the VM's power as Proxmox says
 * it (also written to the record by the caller) and its HA state. */
static void settle_late_msg(const struct cctx *c, enum vm_action a, const struct pve_vm_status *st,
                            char *buf, size_t len)
{
    static const char *const verbs[] = {"start", "shut down", "stop", "pause", "resume", "reboot"};
    snprintf(buf, len,
             "VM %d is still %s %ld s after the HA manager was asked to %s it (HA state '%s'); "
             "see ha-manager status",
             c->v.vmid, core_power_of(st), settle_ms(c, a) / 1000, verbs[a],
             st->ha_state[0] ? st->ha_state : "?");
}

static enum pve_power pve_action(enum vm_action a)
{
    static const enum pve_power map[] = {PVE_POWER_START,   PVE_POWER_SHUTDOWN, PVE_POWER_STOP,
                                         PVE_POWER_SUSPEND, PVE_POWER_RESUME,   PVE_POWER_REBOOT};
    return map[a];
}

/* A reboot interrupted after its call step was written: did the VM boot
 * since? Its uptime must be shorter than the time since the call (2 s of
 * slack for the clocks). Else the call never reached Proxmox, or its task
 * has not brought the VM down yet: the reboot is asked (again), since a
 * second reboot is harmless and a missing one leaves pending changes out. */
static bool rebooted_since_call(struct cctx *c, const struct pve_vm_status *st)
{
    struct job_event *ev = NULL;
    size_t n = 0;
    int64_t call_ts = 0;
    if (store_job_events(c->k->st, c->j->id, 0, &ev, &n, NULL) == 0)
        for (size_t i = 0; i < n; i++)
            if (strcmp(ev[i].step, "call") == 0)
                call_ts = ev[i].ts;
    free(ev);
    if (!call_ts || strcmp(st->status, "running") != 0)
        return false;
    return st->uptime * 1000 <= wall_ms() - call_ts + 2000;
}

/* The power an action leaves the VM in once its task ended well. */
static const char *goal_of(enum vm_action a)
{
    return a == ACT_PAUSE ? "paused" : a == ACT_SHUTDOWN || a == ACT_STOP ? "stopped" : "running";
}

/* Make the power call; a call that fails transiently (nothing done: a 500,
 * a timeout) is made again, up to READ_TRIES times, unless the VM reached
 * the goal meanwhile (*reached_now). */
static int power_call(struct cctx *c, enum vm_action a, const struct pve_power_opts *po,
                      bool *reached_now, struct pve_error *e)
{
    *reached_now = false;
    int rc = 0;
    int64_t since = wall_ms() / 1000;
    bool lost = false; /* a call whose answer was lost may be served late */
    int quiet = 0;     /* looks left before it is asked again */
    for (int n = 1; n <= READ_TRIES; n++) {
        if (quiet > 0) {
            quiet--;
        } else {
            rc = pve_vm_power(c->pc, c->v.node, c->v.vmid, pve_action(a), po, c->j->upid, e);
            if (!rc || !transient(rc) || n == READ_TRIES || core_stopping(c->k))
                return rc;
            if (e->maybe_sent && !lost)
                quiet = LATE_LOOKS;
            lost = lost || e->maybe_sent;
        }
        struct pve_error e2 = {0};
        struct pve_vm_status st;
        read_pause(c, n);
        /* served since pve_vm_power looked (a request a busy node queued):
         * its task is the answer. Asked again, a second shutdown waited on
         * the first's lock and failed, a reboot ran twice */
        if (lost &&
            pve_vm_power_task(c->pc, c->v.node, c->v.vmid, pve_action(a), since, c->j->upid)) {
            memset(e, 0, sizeof *e);
            return 0;
        }
        if (a != ACT_REBOOT && ctl_read_status(c, &st, &e2) == 0 &&
            reached(a, core_power_of(&st), false)) {
            *reached_now = true;
            snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
            return 0;
        }
        if (!quiet)
            log_warn("job", "job=%s vmid=%d %s call failed (%s), trying again", c->j->id, c->v.vmid,
                     vm_action_name(a), e->message);
    }
    return rc;
}

/* A VM that a stop or shutdown through the API ended has its pending
 * changes applied (PVE's vm_stop_cleanup); one that stopped by itself (a
 * shutdown from inside, a crash) keeps them. The record's pending changes
 * are read again from Proxmox when its stop leaves the VM stopped: kept
 * from the update, they said "applies at the next reboot" of a change
 * made, and kept the reconciler from taking the VM's sizes. Unread, they
 * stay (the next start clears them). */
static void pending_if_stopped(struct cctx *c, const struct pve_vm_status *st)
{
    if (!c->v.pending || strcmp(st->status, "stopped") != 0)
        return;
    struct pve_error e = {0};
    json_t *p = pending_of(c, &e);
    if (!p) {
        log_warn("job", "job=%s vmid=%d pending changes not read after the stop: %s", c->j->id,
                 c->v.vmid, e.message);
        return;
    }
    pending_take(c, p);
}

/* The record follows the VM's status after a power job: its power, and
 * its pending changes when the job left it stopped; saved. */
static void follow_status(struct cctx *c, const struct pve_vm_status *st)
{
    snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(st));
    pending_if_stopped(c, st);
    ctl_save_vm(c);
}

static void run_power(struct cctx *c, enum vm_action a)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    int rc;
    json_t *r = c->j->request;
    if (strcmp(c->j->step, "wait") == 0 && c->j->upid[0]) {
        /* resumed after a restart: the task runs on the node the job called */
        char node[64]; /* a copy: ctl_locate below may move the job's node */
        snprintf(node, sizeof node, "%s", c->j->node[0] ? c->j->node : c->v.node);
        c->pc = fleet_client(c->k->fl, node);
        if (!c->pc) {
            /* the node left the configuration (or this instance was given
             * another node list): its task cannot be followed from here,
             * and the VM, wherever it is now, cannot be trusted to be
             * where the action left it. The record's power is read again
             * if the VM can be found on a node proxd manages. */
            if (ctl_locate(c, &st, &e) == 0) {
                snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
                ctl_save_vm(c);
            }
            ctl_job_fail(c,
                         "%s of VM %d: its task %s runs on node %s, which is not in proxd's "
                         "configuration: its outcome cannot be followed",
                         vm_action_name(a), c->v.vmid, c->j->upid, node);
            return;
        }
        rc = wait_task_for(c, c->j->upid, power_deadline_ms(c, a), &e);
        if (rc == -1)
            return;
        goto done;
    }
    if ((rc = ctl_locate(c, &st, &e))) {
        ctl_job_fail(c, "cannot find VM %d: %s", c->v.vmid, e.message);
        return;
    }
    /* a step interrupted after its call may already have done the work */
    bool resumed = strcmp(c->j->step, "call") == 0;
    if (reached(a, core_power_of(&st), resumed && a == ACT_REBOOT && rebooted_since_call(c, &st)) ||
        (resumed && a != ACT_REBOOT && reached(a, core_power_of(&st), false))) {
        follow_status(c, &st);
        ctl_job_done(c, "VM %d is %s", c->v.vmid, c->v.power);
        return;
    }
    struct pve_power_opts po = {.timeout = (int)json_integer_value(json_object_get(r, "timeout")),
                                .force_stop = json_is_true(json_object_get(r, "force"))};
    /* The record that let the action in may be behind the VM (a failed
     * delete stopped it, someone used the GUI): an action Proxmox refuses
     * from the VM's real state (a reboot of a stopped VM: "VM not
     * running", a 500) fails now, the record put right, rather than being
     * asked again as if the refusal were a passing fault. Only a resumed
     * reboot may be looking at its own call's work half done (the VM
     * stopped between the task's shutdown and its start): it asks again;
     * no other call leaves the VM where its own action is refused. A VM
     * hibernated (suspended to disk: stopped, locked "suspended") is
     * resumed by Proxmox, so it is left to Proxmox. */
    const char *why = (resumed && a == ACT_REBOOT) || strcmp(st.lock, "suspended") == 0
                          ? NULL
                          : action_refusal(a, core_power_of(&st), po.force_stop);
    if (why) {
        snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
        ctl_save_vm(c);
        ctl_job_fail(c, "cannot %s VM %d: it is %s on Proxmox (%s)", vm_action_name(a), c->v.vmid,
                     c->v.power, why);
        return;
    }
    job_checkpoint(c->k, c->j, "call", 20, "%s VM %d on %s", vm_action_name(a), c->v.vmid,
                   c->v.node);
    if (ctl_cancelled(c, "nothing was sent to Proxmox"))
        return;
    bool already = false;
    rc = power_call(c, a, &po, &already, &e);
    if (rc) {
        ctl_job_fail(c, "%s failed: %s", vm_action_name(a), e.message);
        return;
    }
    if (already) {
        ctl_save_vm(c);
        ctl_job_done(c, "VM %d is %s", c->v.vmid, c->v.power);
        return;
    }
    job_checkpoint(c->k, c->j, "wait", 50, "task %s", c->j->upid);
    rc = wait_task_for(c, c->j->upid, power_deadline_ms(c, a), &e);
    if (rc == -1)
        return;
done:
    if (rc) {
        ctl_job_fail(c, "%s failed: %s", vm_action_name(a), e.message);
        /* the record follows what Proxmox says, whatever happened */
        if (ctl_locate(c, &st, &e) == 0)
            follow_status(c, &st);
        return;
    }
    if (a == ACT_REBOOT || a == ACT_START) {
        pending_take(c, NULL); /* pending changes apply at (re)start */
    }
    rc = settle(c, a, &st, &e);
    if (rc == SETTLE_STOPPING || (rc > 0 && core_stopping(c->k)))
        return; /* resumed at its wait: the task ended, the VM is looked at again */
    if (rc == SETTLE_LATE) {
        /* the request task ended well, but the HA manager did not act on
         * it: not done. The record says what Proxmox says */
        char late[sizeof c->j->error];
        settle_late_msg(c, a, &st, late, sizeof late);
        snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
        ctl_save_vm(c);
        ctl_job_fail(c, "%s", late);
        return;
    }
    if (rc == 0) {
        follow_status(c, &st);
        ctl_job_done(c, "VM %d is %s", c->v.vmid, c->v.power);
        if (a == ACT_START || a == ACT_REBOOT) /* off this job: it is done */
            core_net_confirm(c->k, c->v.id);
        return;
    }
    /* the task ended well but the VM cannot be read now: it is where the
     * task left it (the reconciler checks it on its next pass) */
    snprintf(c->v.power, sizeof c->v.power, "%s", goal_of(a));
    ctl_save_vm(c);
    ctl_job_done(c, "VM %d is %s (task ended well; its status could not be read: %s)", c->v.vmid,
                 c->v.power, e.message);
}

/* Pending changes as {"cores": 4, "memory": "4096"} from Proxmox. */
static json_t *pending_of(struct cctx *c, struct pve_error *e)
{
    struct pve_pending *p = NULL;
    size_t n = 0;
    for (int k = 1;; k++) {
        int rc = pve_vm_pending(c->pc, c->v.node, c->v.vmid, &p, &n, e);
        if (!rc)
            break;
        if (!transient(rc) || k == READ_TRIES || core_stopping(c->k))
            return NULL;
        read_pause(c, k);
    }
    json_t *o = core_pending_json(p, n);
    free(p);
    return o;
}

/* The update's config write carries the digest of the config it was read
 * with. Served late (its answer lost, the write sent again meanwhile), a
 * write without one landed after the VM's next update and undid it (the
 * record said 3 cores, Proxmox 2); with the digest of its time, Proxmox
 * refuses it. One refused for its digest (an operator's edit in between,
 * or a late write of ours) is read and sent again. */
static int update_config(struct cctx *c, const struct pve_config_set *want, struct pve_error *e)
{
    int rc = 0;
    for (int n = 1; n <= READ_TRIES; n++) {
        struct pve_vm_config cfg;
        if ((rc = ctl_read_config(c, &cfg, e)) != 0)
            return rc;
        char digest[48];
        snprintf(digest, sizeof digest, "%s", cfg.digest);
        pve_vm_config_release(&cfg);
        struct pve_config_set s = *want;
        s.digest = digest;
        rc = pve_vm_config_set(c->pc, c->v.node, c->v.vmid, &s, e);
        if (rc == 0 || !pve_error_stale_digest(e) || core_stopping(c->k))
            return rc;
        log_info("job", "job=%s vmid=%d the config changed meanwhile (%s): read again", c->j->id,
                 c->v.vmid, e->message);
    }
    return rc;
}

/* A write of the update failed: the VM may hold its change all the same,
 * written by an earlier run of the job (its answer lost to a kill, or
 * served after that run gave up), and then the change is made. True when
 * the config, pending values counted, has the cores and memory asked. */
static bool update_in_place(struct cctx *c, int cores, int64_t mem)
{
    struct pve_vm_config cfg;
    struct pve_error e;
    if (core_stopping(c->k) || ctl_read_config(c, &cfg, &e))
        return false;
    bool held = (!cores || cfg.cores == cores) && (!mem || cfg.memory_mb == mem);
    pve_vm_config_release(&cfg);
    return held;
}

static void run_update(struct cctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    json_t *r = c->j->request;
    int cores = (int)json_integer_value(json_object_get(r, "cores"));
    int64_t mem = json_integer_value(json_object_get(r, "memory_mb"));
    if (ctl_locate(c, &st, &e)) {
        ctl_job_fail(c, "cannot find VM %d: %s", c->v.vmid, e.message);
        return;
    }
    job_checkpoint(c->k, c->j, "call", 30, "set%s%s on VM %d", cores ? " cores" : "",
                   mem ? " memory" : "", c->v.vmid);
    if (ctl_cancelled(c, "nothing was sent to Proxmox"))
        return;
    struct pve_config_set s = {.cores = cores, .memory_mb = mem};
    if (update_config(c, &s, &e)) {
        if (!update_in_place(c, cores, mem)) {
            /* a write of it may still land (served late): the reconciler
             * looks for a while (reconcile.c, pending_late) */
            ctl_job_fail(c, "update failed: %s", e.message);
            return;
        }
        log_info("job",
                 "job=%s vmid=%d the write failed (%s), but the VM has the change (an "
                 "earlier write of the job was served)",
                 c->j->id, c->v.vmid, e.message);
    }
    json_t *pend = pending_of(c, &e);
    bool unread = pend == NULL;
    if (unread) {
        /* not known whether it applied live: taken for live, the record
         * said no change was pending, and the reconciler put the running
         * values (the old ones, if it is pending) back. Pending until the
         * next start or reboot applies it, whatever Proxmox says */
        pend = json_object();
        char n[32];
        if (cores) {
            snprintf(n, sizeof n, "%d", cores);
            json_object_set_new(pend, "cores", json_string(n));
        }
        if (mem) {
            snprintf(n, sizeof n, "%lld", (long long)mem);
            json_object_set_new(pend, "memory", json_string(n));
        }
    }
    if (cores)
        c->v.cores = cores;
    if (mem)
        c->v.memory_mb = mem;
    pending_take(c, pend);
    ctl_save_vm(c);
    if (unread)
        ctl_job_done(c,
                     "saved; whether it applied live could not be read (%s): recorded as pending "
                     "until the next reboot or stop",
                     e.message);
    else
        ctl_job_done(c, "%s",
                     c->v.pending ? "saved; applies at the next reboot or stop (pending)"
                                  : "applied live");
}

/* The boot disk's size in bytes (retried reads), or -1 with *e filled. */
static int64_t disk_size(struct cctx *c, struct pve_error *e)
{
    struct pve_vm_config cfg;
    if (ctl_read_config(c, &cfg, e))
        return -1;
    int64_t have = cfg.bootdisk_size;
    pve_vm_config_release(&cfg);
    return have;
}

/* Grow the disk to `size` (want GiB) and wait for the task. A call or task
 * poll that failed transiently may have grown the disk all the same (its
 * answer was lost): the size read decides, and the call, which asks for an
 * absolute size, is made again when it did not. 0, -1 when the core is
 * stopping, or the error. */
static int grow(struct cctx *c, const char *disk, const char *size, int64_t want,
                struct pve_error *e)
{
    int rc = 0;
    for (int n = 1; n <= READ_TRIES; n++) {
        c->j->upid[0] = '\0';
        rc = pve_vm_resize(c->pc, c->v.node, c->v.vmid, disk, size, c->j->upid, e);
        if (!rc && c->j->upid[0]) {
            job_checkpoint(c->k, c->j, "wait", 50, "task %s", c->j->upid);
            rc = ctl_wait_task(c, c->j->upid, e);
        }
        if (rc == 0 || rc == -1 || !transient(rc) || core_stopping(c->k))
            return rc;
        struct pve_error e2 = {0};
        if (disk_size(c, &e2) >= want * GiB)
            return 0;
        if (n < READ_TRIES) {
            log_warn("job", "job=%s vmid=%d resize failed (%s), trying again", c->j->id, c->v.vmid,
                     e->message);
            read_pause(c, n);
        }
    }
    return rc;
}

/* Room for a disk's growth by `bytes` on the storage of the VM's node,
 * reserved under the job in one store transaction with the check, as a
 * creation's: against the shared pool (every creation, reinstall and
 * resize through any of its nodes) when the storage is one, else the
 * node's. A disk on another storage than the node's configured one, or a
 * node the inventory does not know yet, is not checked here (Proxmox's
 * own refusal stands). 0, or -1 with the job failed. */
static int reserve_growth(struct cctx *c, const char *storage, int64_t bytes)
{
    const struct proxd_config *cfg = c->k->cfg;
    const struct cfg_node *cn = config_node(cfg, c->v.node);
    struct node_view nv;
    if (!cn || strcmp(storage, cn->storage) != 0 || fleet_node_view(c->k->fl, c->v.node, &nv) ||
        !nv.known)
        return 0;
    struct cap_room room = {.mem = INT64_MAX / 2,
                            .disk = nv.st_avail - cfg->disk_margin_gb * GiB,
                            .seen_since = nv.seen_since,
                            .pool = nv.pool};
    struct store_error se;
    if (store_reserve_capacity(c->k->st, c->j->id, c->v.node, 0, bytes, &room, &se) == 0)
        return 0;
    if (se.code == STORE_E_FULL)
        ctl_job_fail(c, "resize refused: not enough space on %s%s of %s (%s)",
                     nv.pool[0] ? "shared storage " : "", cn->storage,
                     nv.pool[0] ? cn->cluster : c->v.node, se.message);
    else
        ctl_job_fail(c, "resize failed: room for it cannot be reserved: %s", se.message);
    return -1;
}

static void resize_steps(struct cctx *c, bool *asked);

/* The growth's reservation ends with the job: settled when a resize was
 * asked of Proxmox (it keeps counting until an inventory shows the disk
 * grown, or not), released when none was; kept when the job is resumed
 * later (proxd stopping). */
static void run_resize(struct cctx *c)
{
    bool asked = strcmp(c->j->step, "wait") == 0 || strcmp(c->j->step, "call") == 0;
    resize_steps(c, &asked);
    if (c->j->state != JOB_FAILED)
        return; /* done (settled before) or to be resumed */
    if (asked)
        store_settle_capacity(c->k->st, c->j->id, NULL);
    else
        store_release_capacity(c->k->st, c->j->id, NULL);
}

static void resize_steps(struct cctx *c, bool *asked)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    int64_t want = json_integer_value(json_object_get(c->j->request, "disk_gb"));
    char task_error[sizeof e.message] = ""; /* a resumed wait's task that failed */
    if (strcmp(c->j->step, "wait") == 0 && c->j->upid[0]) {
        if (ctl_locate(c, &st, &e) == 0) {
            int rc = ctl_wait_task(c, c->j->upid, &e);
            if (rc == -1)
                return;
            /* a task that ended failed, not a wait cut short (its
             * deadline, status reads that kept failing) */
            struct pve_task t;
            struct pve_error e2 = {0};
            if (rc && pve_task_status(c->pc, c->j->upid, &t, &e2) == 0 && !t.running &&
                strcmp(t.exitstatus, "OK") != 0)
                snprintf(task_error, sizeof task_error, "%s", e.message);
        }
    } else {
        if (ctl_locate(c, &st, &e)) {
            ctl_job_fail(c, "cannot find VM %d: %s", c->v.vmid, e.message);
            return;
        }
        struct pve_vm_config cfg;
        if (ctl_read_config(c, &cfg, &e)) {
            ctl_job_fail(c, "resize failed: %s", e.message);
            return;
        }
        char disk[16], storage[64];
        snprintf(disk, sizeof disk, "%s", cfg.bootdisk[0] ? cfg.bootdisk : "scsi0");
        snprintf(storage, sizeof storage, "%s", cfg.bootdisk_storage);
        int64_t have = 0;
        int rc = core_boot_size(c->pc, c->v.node, c->v.vmid, &cfg, &have, &e);
        pve_vm_config_release(&cfg);
        if (rc) {
            ctl_job_fail(c, "resize failed: %s", e.message);
            return;
        }
        if (have < want * GiB) {
            if (reserve_growth(c, storage, want * GiB - have))
                return;
            char size[32];
            snprintf(size, sizeof size, "%lldG", (long long)want);
            job_checkpoint(c->k, c->j, "call", 30, "grow %s of VM %d to %s", disk, c->v.vmid, size);
            if (ctl_cancelled(c, "nothing was sent to Proxmox"))
                return;
            *asked = true;
            rc = grow(c, disk, size, want, &e);
            if (rc == -1)
                return;
            if (rc) {
                ctl_job_fail(c, "resize failed: %s", e.message);
                return;
            }
        }
    }
    /* the new size, verified from the config */
    struct pve_vm_config cfg;
    if (ctl_read_config(c, &cfg, &e)) {
        ctl_job_fail(c, "cannot verify the new size: %s", e.message);
        return;
    }
    int64_t now = cfg.bootdisk_size;
    pve_vm_config_release(&cfg);
    if (now < want * GiB) {
        if (task_error[0]) /* the task's own words say why */
            ctl_job_fail(c, "resize failed: %s (the disk is %lld GiB, %lld GiB asked)", task_error,
                         (long long)(now / GiB), (long long)want);
        else
            ctl_job_fail(c, "the disk is %lld GiB after the resize, %lld GiB asked",
                         (long long)(now / GiB), (long long)want);
        return;
    }
    c->v.disk_gb = now / GiB;
    ctl_save_vm(c);
    /* the growth counts until an inventory shows it, then the job is done */
    store_settle_capacity(c->k->st, c->j->id, NULL);
    ctl_job_done(c, "disk is %lld GiB", (long long)c->v.disk_gb);
}

static void mark_deleted(struct cctx *c, const char *how)
{
    c->v.state = VMS_DELETED;
    snprintf(c->v.power, sizeof c->v.power, "stopped");
    ctl_save_vm(c);
    store_vmid_release(c->k->st, c->v.vmid, c->k->cfg->quarantine_s * 1000, NULL);
    fleet_vm_removed(c->k->fl, c->v.vmid, c->v.node);
    ctl_job_done(c, "VM %d deleted%s", c->v.vmid, how);
}

/* Is a rollback of the job's VM running on its node? A failed rollback
 * leaves the VM locked (rollback) for good in PVE: only an operator's `qm
 * unlock` lifts it, so a lock no rollback task holds is not waited for.
 * When the list cannot be read: true (the caller waits, as before). */
static bool rollback_running(struct cctx *c)
{
    struct pve_task *t = NULL;
    struct pve_error e = {0};
    size_t n = 0;
    bool running = true;
    if (pve_task_list(c->pc, c->v.node, c->v.vmid, "qmrollback", 10, &t, &n, &e) == 0) {
        running = false;
        for (size_t i = 0; i < n; i++)
            running = running || t[i].running;
    }
    free(t);
    return running;
}

/* Locks (a backup, a migration) clear within minutes; wait for them, but
 * not for a rollback lock no rollback task holds (rollback_running): the
 * job fails at once, naming `qm unlock`. False when the job ended
 * meanwhile (failed, or the VM vanished and the job is done) or the core
 * is stopping. */
bool ctl_wait_unlocked(struct cctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    int64_t end = mono_ms() + STEP_DEADLINE_MS;
    bool stuck_seen = false;
    for (long pause = 100;; pause = pause < 2000 ? pause * 2 : 2000) {
        if (ctl_read_config(c, &cfg, &e)) {
            if (e.cls == PVE_E_NOTFOUND) {
                /* gone from its node: deleted, or migrated (a lock
                 * "migrate" waited for ends with its config on the target,
                 * where the VM goes on): only an inventory that shows it
                 * nowhere says deleted */
                struct pve_vm_status st;
                int rc = ctl_locate(c, &st, &e);
                if (rc == 0 && mono_ms() <= end)
                    continue; /* on its new node: its config there */
                if (rc == PVE_E_NOTFOUND) {
                    mark_deleted(c, " (it vanished meanwhile)");
                    return false;
                }
            }
            ctl_job_fail(c, "cannot read the config: %s", e.message);
            return false;
        }
        bool locked = cfg.lock[0] != '\0', rollback = strcmp(cfg.lock, "rollback") == 0;
        pve_vm_config_release(&cfg);
        if (!locked)
            return true;
        /* seen locked after the list showed no rollback running: the lock
         * is not a running rollback's (one that ended meanwhile unlocked) */
        if (rollback && stuck_seen) {
            ctl_job_fail(c, "VM %d is locked (rollback); " UNLOCK_HINT, c->v.vmid, c->v.vmid);
            return false;
        }
        if (rollback && !rollback_running(c)) {
            stuck_seen = true;
            continue; /* read the config again at once */
        }
        if (mono_ms() > end || core_stopping(c->k)) {
            if (!core_stopping(c->k))
                ctl_job_fail(c, "VM %d stays locked", c->v.vmid);
            return false;
        }
        sleep_ms(pause);
    }
}

/* The destroy call. One that fails transiently (a 500, a lock, its answer
 * lost with no task yet: served, or to be served later than the look for
 * its task) is looked at after a pause, as ctl_wait_unlocked looks: the VM
 * gone, the delete is done there; locked (a destroy under way holds its
 * lock until the VM is gone), waited for; still there and unlocked, the
 * destroy is made again, up to READ_TRIES times (a late copy served after
 * that finds no VM and does nothing). -1 when the job ended meanwhile or
 * the core stops (the delete resumes), else the call's result. */
static int destroy_call(struct cctx *c, const struct pve_delete_opts *d, char upid[PVE_UPID_MAX],
                        bool *lost, struct pve_error *e)
{
    for (int n = 1;; n++) {
        int rc = pve_vm_delete(c->pc, c->v.node, c->v.vmid, d, upid, e);
        if (rc && e->maybe_sent)
            *lost = true; /* it may yet be served (a busy node's queue) */
        if (!rc || !transient(rc))
            return rc;
        if (core_stopping(c->k))
            return -1;
        if (n == READ_TRIES)
            return rc;
        read_pause(c, n);
        if (!ctl_wait_unlocked(c))
            return -1;
        log_warn("job", "job=%s vmid=%d destroy call failed (%s), trying again", c->j->id,
                 c->v.vmid, e->message);
    }
}

/* Is the job's VMID in use in a cluster proxd manages (asked of each
 * world once: GET /cluster/nextid?vmid=N, "already exists")? The VM is not
 * on a managed node (ctl_locate looked), so such a use is on a node proxd
 * does not manage. A world that does not answer is not counted. The first
 * world's node that says so, in `world`. */
static bool vmid_used_unmanaged(struct cctx *c, char world[64])
{
    const struct proxd_config *cfg = c->k->cfg;
    for (int i = 0; i < cfg->nnodes; i++) {
        const char *n = cfg->nodes[i].name;
        bool asked = false;
        for (int j = 0; j < i && !asked; j++)
            asked = fleet_same_world(c->k->fl, n, cfg->nodes[j].name);
        pve_client *pc = asked ? NULL : fleet_client(c->k->fl, n);
        struct pve_error e;
        int free_id;
        if (pc && pve_nextid(pc, c->v.vmid, &free_id, &e) == PVE_E_EXISTS) {
            snprintf(world, 64, "%s", n);
            return true;
        }
    }
    return false;
}

/* Where the VM to delete is. Resumed after its destroy was sent (killed
 * in its call or wait): the VM may be gone already. A locate that cannot
 * tell now (the node's inventory not read) is asked again before the
 * delete fails: failed, the record went back to enabled, and the VM the
 * destroy removed was marked lost. */
static int delete_locate(struct cctx *c, struct pve_vm_status *st, struct pve_error *e)
{
    int rc = ctl_locate(c, st, e);
    for (int n = 1; transient(rc) && strcmp(c->j->step, "destroy") == 0 && n <= 2 * READ_TRIES &&
                    !core_stopping(c->k);
         n++) {
        read_pause(c, n);
        rc = ctl_locate(c, st, e);
    }
    return rc;
}

static void delete_steps(struct cctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    char upid[PVE_UPID_MAX] = "";
    int rc = delete_locate(c, &st, &e);
    if (rc == PVE_E_NOTFOUND && c->v.node[0] && !config_node(c->k->cfg, c->v.node)) {
        /* its node was taken out of the configuration (or the VM moved by
         * hand to a node proxd does not manage): if a cluster proxd manages
         * has the VMID in use on such a node, the VM is there, and
         * "deleted" would leave it running unbilled */
        char world[64];
        if (vmid_used_unmanaged(c, world)) {
            ctl_job_fail(c,
                         "VM %d's node %s is not in proxd's configuration, and VMID %d is in use "
                         "in the cluster of %s on a node proxd does not manage: proxd does not "
                         "delete it there (put the node back in the configuration, or move the "
                         "VM to a node proxd manages)",
                         c->v.vmid, c->v.node, c->v.vmid, world);
            return;
        }
        /* a node no longer configured whose world is not read: the VM was
         * not looked for there; its record goes, saying so */
        char how[200];
        snprintf(how, sizeof how,
                 " (its node %s is not in proxd's configuration: if the VM is still there, it is "
                 "for an operator to remove)",
                 c->v.node);
        mark_deleted(c, how);
        return;
    }
    if (rc == PVE_E_NOTFOUND) {
        mark_deleted(c, " (it was gone already)");
        return;
    }
    if (rc) {
        ctl_job_fail(c, "cannot reach VM %d: %s", c->v.vmid, e.message);
        return;
    }
    struct pve_vm_config cfg;
    rc = ctl_read_config(c, &cfg, &e);
    if (rc == PVE_E_NOTFOUND) {
        /* gone since it was found: a destroy sent before a crash and served
         * late (the delete then failed "does not exist", the record went
         * back to enabled), or a migration away: looked for once more */
        if ((rc = delete_locate(c, &st, &e)) == PVE_E_NOTFOUND) {
            mark_deleted(c, " (it was gone already)");
            return;
        }
        if (rc == 0)
            rc = ctl_read_config(c, &cfg, &e);
    }
    if (rc) {
        ctl_job_fail(c, "cannot read the config: %s", e.message);
        return;
    }
    bool ours = core_has_tag(cfg.tags, c->k->cfg->tag);
    pve_vm_config_release(&cfg);
    if (!ours) {
        ctl_job_fail(c, "VM %d does not carry the tag '%s': proxd does not delete it", c->v.vmid,
                     c->k->cfg->tag);
        return;
    }
    /* a locked VM (a backup of a running VM) cannot even be stopped */
    if (!ctl_wait_unlocked(c))
        return;
    if (strcmp(st.status, "stopped") != 0) {
        job_checkpoint(c->k, c->j, "stop", 20, "stopping VM %d", c->v.vmid);
        if (ctl_cancelled(c, "nothing was sent to Proxmox; the VM stays"))
            return;
        /* as a stop job's call: one that fails transiently (its answer
         * lost, the stop maybe served late) is looked at and made again */
        bool already = false;
        if ((rc = power_call(c, ACT_STOP, NULL, &already, &e)) ||
            (!already && (rc = ctl_wait_task(c, c->j->upid, &e)))) {
            c->j->upid[0] = '\0';
            if (rc == -1)
                return;
            ctl_job_fail(c, "cannot stop VM %d: %s", c->v.vmid, e.message);
            return;
        }
        c->j->upid[0] = '\0'; /* the stop's task, not the destroy's */
        /* HA-managed: the stop task only asked the HA manager */
        if ((rc = settle(c, ACT_STOP, &st, &e)) == SETTLE_STOPPING)
            return; /* resumed: the VM is looked at (and stopped) again */
        if (rc == SETTLE_LATE) {
            settle_late_msg(c, ACT_STOP, &st, e.message, sizeof e.message);
            snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
        } else if (rc == 0 && strcmp(st.status, "stopped") != 0) {
            snprintf(e.message, sizeof e.message, "it is still %s", st.status);
            snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&st));
        }
        if (rc || strcmp(st.status, "stopped") != 0) {
            if (rc == SETTLE_LATE || !core_stopping(c->k)) /* else resumed */
                ctl_job_fail(c, "cannot stop VM %d: %s", c->v.vmid, e.message);
            return;
        }
    }
    /* the record's next write says so: a failed destroy leaves the VM
     * enabled and stopped (ctl_job_fail), and a job asked of it then starts
     * from the truth; a destroy that goes through tells it in vm.deleted */
    snprintf(c->v.power, sizeof c->v.power, "stopped");
    if (!ctl_wait_unlocked(c))
        return;
    job_checkpoint(c->k, c->j, "destroy", 50, "destroying VM %d on %s", c->v.vmid, c->v.node);
    if (ctl_cancelled(c, "the destroy was not sent; the VM stays (stopped if it had to be)"))
        return;
    struct pve_delete_opts d = {.purge = true, .destroy_unreferenced = true};
    bool lost = false;
    rc = destroy_call(c, &d, upid, &lost, &e);
    if (!rc)
        rc = ctl_wait_task(c, upid, &e);
    if (rc == -1)
        return;
    /* confirm it is gone before the record says so; a destroy whose answer
     * or task status was lost may have gone through: the config decides.
     * One whose answer was lost may also be served late, after the calls
     * made since failed: looked for LATE_LOOKS more times before the
     * delete fails (it failed, the record enabled, and the late destroy
     * removed the VM a moment later: "lost") */
    struct pve_error e2 = {0};
    int gone = ctl_read_config(c, &cfg, &e2);
    for (int n = 1; gone == 0 && lost && rc && !core_stopping(c->k); n++) {
        /* one under way holds the lock "destroyed" until the VM is gone */
        bool destroying = strcmp(cfg.lock, "destroyed") == 0;
        if (n > LATE_LOOKS && !(destroying && n <= 60))
            break;
        pve_vm_config_release(&cfg);
        read_pause(c, n + 1);
        gone = ctl_read_config(c, &cfg, &e2);
    }
    if (gone == 0)
        pve_vm_config_release(&cfg);
    if (rc && rc != PVE_E_NOTFOUND && !((transient(rc) || lost) && gone == PVE_E_NOTFOUND)) {
        ctl_job_fail(c, "destroy failed: %s", e.message);
        return;
    }
    if (gone == 0) {
        ctl_job_fail(c, "VM %d still exists after its destroy task", c->v.vmid);
        return;
    }
    mark_deleted(c, "");
}

/* A delete that failed before the destroy went through makes the record
 * "enabled" again (job_fail), so the owner sees it and may retry. A delete
 * interrupted by a stop is resumed instead, and keeps "deleting". */
static void run_delete(struct cctx *c)
{
    delete_steps(c);
}

/* Is the live record of the job's VMID the one the job was queued for? A
 * VMID is given to a new VM once the old one is deleted (after the
 * quarantine): a job queued before must not act on the new one. The job
 * names its record; jobs from before that was written are checked by
 * owner and creation time. A delete also finds the record naming it. */
static bool same_record(struct cctx *c)
{
    json_t *rec = json_object_get(c->j->request, "record");
    if (json_is_integer(rec) && json_integer_value(rec) != c->v.id)
        return false;
    if (strcmp(c->j->owner, c->v.owner) != 0 || c->v.created_at > c->j->created_at)
        return false;
    if (strcmp(c->j->kind, "delete") == 0 && c->v.state == VMS_DELETING &&
        strcmp(c->v.job, c->j->id) != 0)
        return false;
    return true;
}

void control_run(struct core *k, struct job_rec *j)
{
    struct cctx c = {.k = k, .j = j};
    struct store_error se;
    /* the record: live, or being deleted */
    if (store_vm_get(k->st, j->vmid, &c.v, &se)) {
        c.j = j;
        ctl_job_fail(&c, "no record of VM %d", j->vmid);
        return;
    }
    if (!same_record(&c)) {
        ctl_job_fail(&c,
                     "the record of VM %d changed since the job was queued (it was deleted and "
                     "its VMID given to another VM): nothing done",
                     j->vmid);
        vm_rec_release(&c.v);
        return;
    }
    /* claimed but never started (its runner died before its first step):
     * nothing was sent yet. Any later step may have sent its call: that
     * one finishes, and the steps' own checks come next */
    if (strcmp(j->step, "queued") == 0 && ctl_cancelled(&c, "nothing was done")) {
        vm_rec_release(&c.v);
        return;
    }
    int a = vm_action_parse(j->kind);
    if (a >= 0)
        run_power(&c, (enum vm_action)a);
    else if (strcmp(j->kind, "update") == 0)
        run_update(&c);
    else if (strcmp(j->kind, "resize") == 0)
        run_resize(&c);
    else if (strcmp(j->kind, "delete") == 0)
        run_delete(&c);
    else if (strcmp(j->kind, "migrate") == 0)
        migrate_run(&c);
    else
        ctl_job_fail(&c, "unknown job kind '%s'", j->kind);
    vm_rec_release(&c.v);
}
