/* snapshot_job: the snapshot jobs (snap-create, snap-delete, snap-rollback,
 * snap-list; snap-sync is snapshot_sync.c's) against Proxmox: a job
 * recognises its own snapshot by the marker in its description, removes
 * what a failed creation left half-made, and retries Proxmox's lock and
 * transient errors by class with backoff. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/snapshot_int.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEP_DEADLINE_MS 600000L
#define CALL_TRIES 8 /* lock and transient errors of a call */

/* ---- running the jobs ----------------------------------------------------------- */

bool snap_kind(const char *kind)
{
    return strncmp(kind, "snap-", 5) == 0;
}

void snap_end(struct sctx *c, bool ok, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->j->state = ok ? JOB_DONE : JOB_FAILED;
    c->j->finished_at = wall_ms();
    if (!ok)
        snprintf(c->j->error, sizeof c->j->error, "%s", msg);
    job_checkpoint(c->k, c->j, ok ? "done" : "failed", 100, "%s", msg);
}

/* A cancel asked, seen at the checkpoint before the first call: the job
 * fails, nothing sent. A later try's call may follow one whose answer was
 * lost: that one goes on, as a failure would not stop it either. */
static bool cancelled(struct sctx *c, int t)
{
    if (t != 1 || !job_cancel_asked(c->j))
        return false;
    char why[sizeof c->j->error];
    job_cancel_error(c->j, NULL, why, sizeof why, "nothing was sent to Proxmox");
    snap_end(c, false, "%s", why);
    return true;
}

/* May the call succeed if made again? (as control jobs judge it) */
static bool transient(int rc)
{
    return rc == PVE_E_LOCK || rc == PVE_E_NETWORK || rc == PVE_E_OTHER || rc == PVE_E_TIMEOUT;
}

/* The pause before try n+1: 250 ms doubling to 4 s; the lease is renewed. */
static void pause_n(struct sctx *c, int n)
{
    store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
    sleep_ms(250L << (n < 5 ? n - 1 : 4));
}

/* The VM's node client: where the record says, else where the (refreshed)
 * inventory sees the VM. */
static int find_vm(struct sctx *c, struct pve_error *e)
{
    for (int round = 0; round < 2; round++) {
        c->pc = c->v.node[0] ? fleet_client(c->k->fl, c->v.node) : NULL;
        if (c->pc) {
            struct pve_vm_status st;
            int rc = 0;
            for (int n = 1; n <= 5; n++) {
                rc = pve_vm_status(c->pc, c->v.node, c->v.vmid, &st, e);
                if (!transient(rc) || core_stopping(c->k))
                    break;
                pause_n(c, n);
            }
            if (rc != PVE_E_NOTFOUND)
                return rc;
        }
        if (round == 1)
            break;
        fleet_refresh(c->k->fl, true);
        char node[64];
        if (fleet_vm_node(c->k->fl, c->v.vmid, c->v.node, node) != 0)
            break;
        snprintf(c->v.node, sizeof c->v.node, "%s", node);
        snprintf(c->j->node, sizeof c->j->node, "%s", node);
    }
    snprintf(e->message, sizeof e->message, "VM %d is on no node", c->v.vmid);
    e->cls = PVE_E_NOTFOUND;
    return PVE_E_NOTFOUND;
}

/* The snapshot list (retried reads), cached; *s (free()) of *n. */
static int list(struct sctx *c, struct snap_info **s, size_t *n, struct pve_error *e)
{
    struct pve_snapshot *p = NULL;
    size_t pn = 0;
    int rc = 0;
    *s = NULL;
    *n = 0;
    for (int t = 1; t <= 5; t++) {
        rc = pve_snap_list(c->pc, c->v.node, c->v.vmid, &p, &pn, e);
        if (!transient(rc) || core_stopping(c->k))
            break;
        pause_n(c, t);
    }
    if (rc)
        return rc;
    *s = xcalloc(pn + 1, sizeof **s);
    for (size_t i = 0; i < pn; i++)
        snap_from_pve(&p[i], &(*s)[i]);
    *n = pn;
    free(p);
    /* the job's own snapshot (create, delete, rollback) is no drift */
    snap_cache_put(c->k, c->v.vmid, *s, *n,
                   json_string_value(json_object_get(c->j->request, "name")));
    return 0;
}

const struct snap_info *snap_lookup(const struct snap_info *s, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return &s[i];
    return NULL;
}

/* A lock that waiting does not clear: Proxmox leaves "rollback" on a VM
 * whose rollback failed, until an operator unlocks it. */
static bool stuck_lock(const struct pve_error *e)
{
    return strstr(e->message, "VM is locked (rollback)") != NULL;
}

/* Is the job's task (j->upid) still running? */
static bool task_running(struct sctx *c)
{
    struct pve_task t;
    struct pve_error e;
    return c->j->upid[0] && pve_task_status(c->pc, c->j->upid, &t, &e) == 0 && t.running;
}

/* The newest running task of `type` of the VM, started by proxd's user
 * since the job was created and not one another call was answered with
 * (pve_client_task_known): the job's own, whose UPID it never got. */
static bool find_own_task(struct sctx *c, const char *type, char upid[PVE_UPID_MAX])
{
    struct pve_task *t = NULL;
    size_t n = 0;
    struct pve_error e;
    char who[160], vid[16];
    if (pve_task_list(c->pc, c->v.node, c->v.vmid, type, 20, &t, &n, &e))
        return false;
    pve_client_who(c->pc, who, sizeof who);
    snprintf(vid, sizeof vid, "%d", c->v.vmid);
    int64_t best = -1;
    for (size_t i = 0; i < n; i++)
        if (t[i].running && strcmp(t[i].type, type) == 0 && strcmp(t[i].id, vid) == 0 &&
            strcmp(t[i].user, who) == 0 && t[i].starttime >= c->j->created_at / 1000 - 5 &&
            t[i].starttime > best && !pve_client_task_known(c->pc, t[i].upid)) {
            best = t[i].starttime;
            snprintf(upid, PVE_UPID_MAX, "%s", t[i].upid);
        }
    free(t);
    if (best >= 0)
        pve_client_task_seen(c->pc, upid);
    return best >= 0;
}

/* The list shows the job's snapshot half-made and no task of the job is
 * known to run: the call's answer was lost (the call served) or proxd was
 * killed before it wrote the UPID down, or the task failed and left it.
 * While the VM holds `lock` (which such a task holds until it ends) the
 * task still runs: taken for a failed one's leftover, the snapshot being
 * made would be removed by force under it. That task is adopted when
 * found (written down: a job resumed later waits for it too), else the
 * lock is waited out. True when the caller should list again; false when
 * the VM is not so locked (the half-made snapshot is a failed task's), the
 * wait timed out, or the core stops. */
static bool await_unknown_task(struct sctx *c, const char *type, const char *lock)
{
    struct pve_error e = {0};
    int64_t end = mono_ms() + STEP_DEADLINE_MS;
    bool looked = false, waited = false;
    for (long pause = 100;; pause = pause < 2000 ? pause * 2 : 2000) {
        struct pve_vm_config cfg;
        int rc = pve_vm_config_get(c->pc, c->v.node, c->v.vmid, true, &cfg, &e);
        if (rc && !transient(rc))
            return false;
        if (rc == 0) {
            bool held = strcmp(cfg.lock, lock) == 0;
            pve_vm_config_release(&cfg);
            if (!held)
                return waited;
            if (!looked) {
                looked = true;
                char upid[PVE_UPID_MAX];
                if (find_own_task(c, type, upid)) {
                    snprintf(c->j->upid, sizeof c->j->upid, "%s", upid);
                    job_checkpoint(c->k, c->j, "wait", 50,
                                   "task %s (found: its call's answer "
                                   "was lost)",
                                   upid);
                    return true;
                }
            }
        }
        if (core_stopping(c->k) || mono_ms() > end)
            return false;
        waited = true;
        store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
        sleep_ms(pause);
    }
}

/* Start a task with `call` (retrying transient call errors is the
 * caller's loop) and wait for it: 0, -1 when stopping, or the error (a
 * task's own failure has e->upid set). */
static int run_task(struct sctx *c, int rc, struct pve_error *e)
{
    if (rc)
        return rc;
    job_checkpoint(c->k, c->j, "wait", 50, "task %s", c->j->upid);
    return core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, e);
}

/* Remove a snapshot the job left half-made (forced); best effort, the
 * caller lists again. */
static void remove_half(struct sctx *c, const char *name)
{
    struct pve_error e = {0};
    job_checkpoint(c->k, c->j, "cleanup", 70, "removing the half-made snapshot '%s'", name);
    for (int t = 1; t <= CALL_TRIES && !core_stopping(c->k); t++) {
        c->j->upid[0] = '\0';
        int rc = run_task(
            c, pve_snap_delete(c->pc, c->v.node, c->v.vmid, name, true, c->j->upid, &e), &e);
        if (rc == 0 || rc == -1 || rc == PVE_E_NOTFOUND || !transient(rc))
            return;
        pause_n(c, t);
    }
}

/* The owner's snapshots on other VMs, read from Proxmox where the cache
 * has no fresh list or one older than the VM's last snapshot job (which
 * may have run in another instance); -1 when it cannot be known. */
static int owner_total(struct sctx *c)
{
    int unknown = 0, *ids = NULL;
    size_t nids = 0;
    struct job_ended *ended = NULL;
    size_t nended = 0;
    if (store_job_ended_by_vm(c->k->st, c->v.owner, "snap-%", &ended, &nended, NULL))
        return -1;
    int total = snap_owner_count(c->k, c->v.owner, c->v.vmid, OWNER_FRESH_MS, ended, nended,
                                 &unknown, &ids, &nids);
    free(ended);
    for (size_t i = 0; total >= 0 && i < nids; i++) {
        /* the other VM's reads in a job of their own: find_vm notes where
         * it finds that VM in its job's node (and list() the job's own
         * snapshot name), which are the creating job's, checkpointed
         * with it */
        struct job_rec oj = *c->j;
        oj.request = NULL;
        oj.attempts = NULL;
        struct sctx o = {.k = c->k, .j = &oj};
        struct pve_error e = {0};
        struct snap_info *s = NULL;
        size_t n = 0;
        int rc = store_vm_get(c->k->st, ids[i], &o.v, NULL);
        if (rc == STORE_E_NOTFOUND)
            continue; /* gone meanwhile */
        if (rc) {     /* not read: its snapshots cannot be counted as none */
            total = -1;
            break;
        }
        if (find_vm(&o, &e) == 0 && list(&o, &s, &n, &e) == 0)
            total += (int)n;
        else if (e.cls != PVE_E_NOTFOUND)
            total = -1;
        free(s);
        vm_rec_release(&o.v);
    }
    log_debug("snapshot", "vmid=%d owner=%s: %d snapshots on its other VMs (%zu lists read)",
              c->v.vmid, c->v.owner, total, nids);
    free(ids);
    return total;
}

/* The limits, against Proxmox's lists: NULL, or why the creation may not be. */
static const char *over_limit(struct sctx *c, size_t have, char *why, size_t len)
{
    const struct proxd_config *cfg = c->k->cfg;
    if (cfg->snap_max_per_vm > 0 && (int)have >= cfg->snap_max_per_vm) {
        snprintf(why, len, "snapshot limit reached: VM %d holds %zu snapshots, max_per_vm is %d",
                 c->v.vmid, have, cfg->snap_max_per_vm);
        return why;
    }
    if (cfg->snap_max_per_owner > 0) {
        int others = owner_total(c);
        if (others < 0) {
            snprintf(why, len,
                     "snapshot limit of '%s' cannot be checked: a node or the database does "
                     "not answer",
                     c->v.owner);
            return why;
        }
        if (others + (int)have >= cfg->snap_max_per_owner) {
            snprintf(why, len,
                     "snapshot limit reached: the VMs of '%s' hold %d snapshots, max_per_owner "
                     "is %d",
                     c->v.owner, others + (int)have, cfg->snap_max_per_owner);
            return why;
        }
    }
    return NULL;
}

static void create_steps(struct sctx *c)
{
    json_t *r = c->j->request;
    const char *name = json_string_value(json_object_get(r, "name"));
    const char *udesc = json_string_value(json_object_get(r, "description"));
    bool vmstate = json_is_true(json_object_get(r, "vmstate"));
    char desc[SNAP_DESC_MAX + 80];
    snprintf(desc, sizeof desc, "%s%s" MARK "%s", udesc && *udesc ? udesc : "",
             udesc && *udesc ? "\n" : "", c->j->id);
    bool resumed = strcmp(c->j->step, "queued") != 0;
    bool ending = false; /* failed, once the list shows the half-made snapshot gone */
    struct pve_error e = {0}, last = {0};
    for (int t = 1;; t++) {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            snap_end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *mine = snap_lookup(s, n, name);
        bool ours = mine && strcmp(mine->job, c->j->id) == 0;
        if (mine && !ours && !resumed && t == 1) {
            free(s);
            snap_end(c, false, "VM %d has a snapshot '%s' already", c->v.vmid, name);
            return;
        }
        if (mine && ours && mine->state[0] == '\0') {
            free(s);
            snap_end(c, true, "snapshot '%s' of VM %d made%s", name, c->v.vmid,
                     vmstate ? " with its RAM" : "");
            return;
        }
        if (mine && ours) { /* half-made: still being made, or left by a failed task */
            free(s);
            if (task_running(c)) {
                int rc = core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e);
                if (rc == -1)
                    return;
            } else if (ending) {
                /* removed with every try remove_half has, and still there:
                 * nothing else removes it, so the job says so */
                snap_end(c, false,
                         "snapshot '%s' failed: %s; the half-made snapshot could not be removed: "
                         "`qm delsnapshot %d %s --force` on %s",
                         name, last.message[0] ? last.message : "its task failed", c->v.vmid, name,
                         c->v.node);
                return;
            } else {
                if (await_unknown_task(c, "qmsnapshot", "snapshot"))
                    continue;
                if (core_stopping(c->k))
                    return;
                remove_half(c, name);
                if (core_stopping(c->k))
                    return;
                /* the list, read again, tells whether the removal went */
                ending = t > CALL_TRIES || (last.upid[0] && last.cls != PVE_E_LOCK);
            }
            continue;
        }
        if (ending) {
            free(s);
            snap_end(c, false, "snapshot '%s' failed: %s (the half-made snapshot is removed)", name,
                     last.message[0] ? last.message : "its task failed");
            return;
        }
        if (mine && !ours) { /* a resumed job whose name was taken meanwhile */
            free(s);
            snap_end(c, false, "VM %d has a snapshot '%s' that proxd's job did not make", c->v.vmid,
                     name);
            return;
        }
        if (t > CALL_TRIES || (last.upid[0] && last.cls != PVE_E_LOCK)) {
            free(s);
            snap_end(c, false, "snapshot '%s' failed: %s", name, last.message);
            return;
        }
        if (t == 1) {
            char why[256];
            if (over_limit(c, n, why, sizeof why)) {
                free(s);
                snap_count(c->k, SNAP_ST_LIMIT);
                snap_end(c, false, "%s", why);
                return;
            }
        }
        free(s);
        if (t > 1)
            pause_n(c, t - 1);
        if (core_stopping(c->k))
            return;
        job_checkpoint(c->k, c->j, "call", 20, "snapshot '%s' of VM %d on %s%s", name, c->v.vmid,
                       c->v.node, vmstate ? " with RAM" : "");
        if (cancelled(c, t))
            return;
        c->j->upid[0] = '\0';
        memset(&e, 0, sizeof e);
        int rc = run_task(
            c, pve_snap_create(c->pc, c->v.node, c->v.vmid, name, desc, vmstate, c->j->upid, &e),
            &e);
        if (rc == -1)
            return;
        if (rc && stuck_lock(&e)) {
            snap_end(c, false, "snapshot '%s' failed: %s; " UNLOCK_HINT, name, e.message,
                     c->v.vmid);
            return;
        }
        if (rc && !transient(rc) && !e.upid[0]) {
            snap_end(c, false, "snapshot '%s' refused: %s", name, e.message);
            return;
        }
        last = e;
        if (rc)
            log_warn("job", "job=%s vmid=%d snapshot '%s': %s (%s), the list decides", c->j->id,
                     c->v.vmid, name, e.message, pve_class_name(rc));
        /* the list, read at the top, says what the call did */
    }
}

static void create_run_locked(struct sctx *c)
{
    pthread_mutex_t *mu =
        c->k->cfg->snap_max_per_owner > 0 ? snap_owner_lock(c->k, c->v.owner) : NULL;
    if (mu) /* count and make one at a time per owner (in this instance) */
        pthread_mutex_lock(mu);
    create_steps(c);
    if (mu)
        pthread_mutex_unlock(mu);
}

static void delete_steps(struct sctx *c)
{
    const char *name = json_string_value(json_object_get(c->j->request, "name"));
    bool resumed = strcmp(c->j->step, "queued") != 0, force = false;
    bool task_ok = false; /* this process's last delete task ended OK */
    struct pve_error e = {0}, last = {0};
    for (int t = 1;; t++) {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            if (task_ok) {
                /* PVE drops the snapshot's section from the config as the
                 * task's last act (snapshot_delete): one that ended OK took
                 * the snapshot away, and a read failing after it (a 401,
                 * final) does not undo that. It ended failed: the randomized
                 * fault test's seed 5172 (password, kills) found the snapshot
                 * of a done creation gone, removed by a 'failed' deletion */
                snap_cache_drop(c->k, c->v.vmid);
                snap_end(c, true,
                         "snapshot '%s' of VM %d deleted (its task ended OK; the list "
                         "could not be read after it: %s)",
                         name, c->v.vmid, e.message);
                return;
            }
            snap_end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *it = snap_lookup(s, n, name);
        bool half = it && it->state[0];
        /* a stray's removal (the sync's) is of the snapshot the failed job
         * made: one of that name made since by another is left alone */
        const char *made_by = json_string_value(json_object_get(c->j->request, "job"));
        bool another = it && made_by && strcmp(it->job, made_by) != 0;
        free(s);
        if (another) {
            snap_end(c, true, "snapshot '%s' of VM %d is no longer job %s's: left", name, c->v.vmid,
                     made_by);
            return;
        }
        if (!it) {
            /* retention's deletion wants the snapshot gone, whoever took it
             * away: a resumed sync queues its deletions again, and a
             * snapshot removed in the GUI meanwhile is gone all the same
             * (each ended failed, "no snapshot") */
            const char *why = json_string_value(json_object_get(c->j->request, "reason"));
            bool retention = why && (strcmp(why, "retention") == 0 || strcmp(why, "stray") == 0);
            if (t == 1 && !resumed && !retention)
                snap_end(c, false, "VM %d has no snapshot '%s'", c->v.vmid, name);
            else if (t == 1 && !resumed)
                snap_end(c, true, "snapshot '%s' of VM %d was gone already", name, c->v.vmid);
            else
                snap_end(c, true, "snapshot '%s' of VM %d deleted", name, c->v.vmid);
            return;
        }
        if (task_running(c)) {
            if (core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e) == -1)
                return;
            continue;
        }
        if (t > CALL_TRIES) {
            snap_end(c, false, "deleting snapshot '%s' failed: %s", name, last.message);
            return;
        }
        /* a task that failed for another reason than a lock: once more, forced */
        if (last.upid[0] && last.cls != PVE_E_LOCK) {
            if (force) {
                snap_end(c, false, "deleting snapshot '%s' failed: %s", name, last.message);
                return;
            }
            force = true;
        }
        force = force || half;
        if (t > 1)
            pause_n(c, t - 1);
        if (core_stopping(c->k))
            return;
        job_checkpoint(c->k, c->j, "call", 20, "delete snapshot '%s' of VM %d%s", name, c->v.vmid,
                       force ? " (forced)" : "");
        if (cancelled(c, t))
            return;
        c->j->upid[0] = '\0';
        memset(&e, 0, sizeof e);
        int rc = run_task(
            c, pve_snap_delete(c->pc, c->v.node, c->v.vmid, name, force, c->j->upid, &e), &e);
        if (rc == -1)
            return;
        if (rc && stuck_lock(&e)) {
            snap_end(c, false, "deleting snapshot '%s' failed: %s; " UNLOCK_HINT, name, e.message,
                     c->v.vmid);
            return;
        }
        if (rc && !transient(rc) && !e.upid[0] && rc != PVE_E_NOTFOUND) {
            snap_end(c, false, "deleting snapshot '%s' refused: %s", name, e.message);
            return;
        }
        task_ok = rc == 0;
        last = e;
    }
}

/* The record follows Proxmox after a rollback: power, cores, memory, disk
 * (a snapshot holds the config it was taken with); identity stays. */
static bool take_over(struct sctx *c)
{
    bool locked = false;
    struct pve_vm_status st;
    struct pve_vm_config cfg;
    struct pve_error e = {0};
    bool have_st = false, have_cfg = false;
    for (int t = 1; t <= 5 && !(have_st && have_cfg); t++) {
        if (!have_st)
            have_st = pve_vm_status(c->pc, c->v.node, c->v.vmid, &st, &e) == 0;
        if (!have_cfg)
            have_cfg = pve_vm_config_get(c->pc, c->v.node, c->v.vmid, false, &cfg, &e) == 0;
        if (!(have_st && have_cfg) && t < 5)
            pause_n(c, t);
    }
    /* written only while the record is still enabled (store_vm_update_if):
     * a DELETE, of this proxd or another sharing the database, that lands
     * between the read and the write wins */
    struct vm_rec now;
    struct store_error se;
    if (store_vm_get_id(c->k->st, c->v.id, &now, NULL) == 0) {
        if (now.state == VMS_ENABLED) {
            if (have_st)
                snprintf(now.power, sizeof now.power, "%s", core_power_of(&st));
            else
                snprintf(now.power, sizeof now.power, "unknown");
            if (have_cfg) {
                if (cfg.cores > 0)
                    now.cores = cfg.cores;
                if (cfg.memory_mb > 0)
                    now.memory_mb = cfg.memory_mb;
                if (cfg.bootdisk_size > 0)
                    now.disk_gb = cfg.bootdisk_size / (1024LL * 1024 * 1024);
                json_decref(now.pending);
                now.pending = NULL;
            }
            snprintf(now.node, sizeof now.node, "%s", c->v.node);
            snprintf(now.job, sizeof now.job, "%s", c->j->id);
            int rc = store_vm_update_if(c->k->st, &now, VMS_ENABLED, 0, &se);
            if (rc == STORE_E_CONFLICT)
                log_info("job", "job=%s vmid=%d record left as it is: %s", c->j->id, c->v.vmid,
                         se.message);
            else if (rc)
                log_error("job", "job=%s vmid=%d cannot update the record: %s", c->j->id, c->v.vmid,
                          se.message);
            snprintf(c->v.power, sizeof c->v.power, "%s", now.power);
        }
        vm_rec_release(&now);
    }
    if (have_cfg) {
        locked = strcmp(cfg.lock, "rollback") == 0;
        pve_vm_config_release(&cfg);
    }
    return locked;
}

static void rollback_steps(struct sctx *c)
{
    const char *name = json_string_value(json_object_get(c->j->request, "name"));
    struct pve_error e = {0};
    int rc = 0;
    if (strcmp(c->j->step, "wait") == 0 && c->j->upid[0]) {
        rc = core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e);
        if (rc == -1)
            return;
    } else {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            snap_end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *it = snap_lookup(s, n, name);
        bool ok = it && !it->state[0];
        free(s);
        if (!ok) {
            snap_end(c, false, "VM %d has no complete snapshot '%s'", c->v.vmid, name);
            return;
        }
        /* lock errors and lost answers are retried; a lost answer is
         * looked for first, after each of the next LATE_LOOKS + 1 pauses
         * (a request a busy node queued is served late): sent again, a
         * first one served after the job ended rolled the VM back once
         * more, over what was done since */
        int64_t since = wall_ms() / 1000;
        int quiet = 0;
        /* resumed at the call: the run before may have sent it (its answer
         * lost, or the kill before it was read): looked for first, since
         * the job began */
        if (strcmp(c->j->step, "call") == 0) {
            e.maybe_sent = true;
            since = c->j->created_at / 1000;
        }
        for (int t = 1; t <= CALL_TRIES; t++) {
            if (t > 1)
                pause_n(c, t - 1);
            if (core_stopping(c->k))
                return;
            if (e.maybe_sent &&
                pve_snap_rollback_task(c->pc, c->v.node, c->v.vmid, since, c->j->upid)) {
                memset(&e, 0, sizeof e);
                rc = run_task(c, 0, &e);
                if (rc == -1)
                    return;
                break;
            }
            if (quiet > 0) {
                quiet--;
                continue;
            }
            job_checkpoint(c->k, c->j, "call", 20, "roll VM %d back to '%s'", c->v.vmid, name);
            if (cancelled(c, t))
                return;
            c->j->upid[0] = '\0';
            bool lost = e.maybe_sent;
            memset(&e, 0, sizeof e);
            rc = run_task(c, pve_snap_rollback(c->pc, c->v.node, c->v.vmid, name, c->j->upid, &e),
                          &e);
            if (rc == -1)
                return;
            if (!rc || !transient(rc) || (e.upid[0] && rc != PVE_E_LOCK) || stuck_lock(&e))
                break;
            if (e.maybe_sent && !lost)
                quiet = LATE_LOOKS;
            e.maybe_sent = e.maybe_sent || lost; /* still looked for */
        }
    }
    bool locked = take_over(c);
    if (rc && locked)
        snap_end(c, false, "rollback to '%s' failed: %s (VM %d is %s); " UNLOCK_HINT, name,
                 e.message, c->v.vmid, c->v.power, c->v.vmid);
    else if (rc)
        snap_end(c, false, "rollback to '%s' failed: %s (VM %d is %s)", name, e.message, c->v.vmid,
                 c->v.power);
    else
        snap_end(c, true, "VM %d rolled back to '%s'; it is %s", c->v.vmid, name, c->v.power);
}

static void list_steps(struct sctx *c)
{
    struct pve_error e = {0};
    struct snap_info *s = NULL;
    size_t n = 0;
    if (list(c, &s, &n, &e)) {
        snap_end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, IDEM_PREFIX "%s", c->j->id);
    json_t *a =
        json_pack("{s:o,s:I}", "snapshots", snap_info_json(s, n), "as_of", (json_int_t)wall_ms());
    json_t *old = NULL;
    int rc = store_idem_put(c->k->st, c->j->owner, key, a, &old, NULL);
    json_decref(old);
    json_decref(a);
    free(s);
    if (rc && rc != STORE_E_CONFLICT) /* CONFLICT: a resumed job stored it already */
        snap_end(c, false, "cannot store the list");
    else
        snap_end(c, true, "VM %d has %zu snapshots", c->v.vmid, n);
}

void snap_run(struct core *k, struct job_rec *j)
{
    struct sctx c = {.k = k, .j = j};
    struct pve_error e = {0};
    if (strcmp(j->kind, "snap-sync") == 0) {
        snap_sync_steps(&c);
        return;
    }
    json_t *rec = json_object_get(j->request, "record");
    struct store_error se;
    int rc = store_vm_get(k->st, j->vmid, &c.v, &se);
    if (rc && rc != STORE_E_NOTFOUND) {
        /* no answer, not "no record": its task may be running; the job
         * is claimed again once its lease runs out */
        log_warn("job", "job=%s vmid=%d the record cannot be read (%s): resumed later", j->id,
                 j->vmid, se.message);
        return;
    }
    if (rc) {
        snap_end(&c, false, "no record of VM %d", j->vmid);
        return;
    }
    if ((json_is_integer(rec) && json_integer_value(rec) != c.v.id) || c.v.state != VMS_ENABLED) {
        snap_end(&c, false, "VM %d is not the enabled VM the job was queued for: nothing done",
                 j->vmid);
        goto out;
    }
    if (find_vm(&c, &e)) {
        if (e.cls == PVE_E_NOTFOUND)
            snap_cache_drop(k, j->vmid);
        if (!core_stopping(k))
            snap_end(&c, false, "cannot find VM %d: %s", j->vmid, e.message);
        goto out;
    }
    if (strcmp(j->step, "queued") == 0 && job_cancel_asked(j)) {
        char why[sizeof j->error];
        job_cancel_error(j, NULL, why, sizeof why, "nothing was done");
        snap_end(&c, false, "%s", why);
    } else if (strcmp(j->kind, "snap-create") == 0)
        create_run_locked(&c);
    else if (strcmp(j->kind, "snap-delete") == 0)
        delete_steps(&c);
    else if (strcmp(j->kind, "snap-rollback") == 0)
        rollback_steps(&c);
    else if (strcmp(j->kind, "snap-list") == 0)
        list_steps(&c);
    else
        snap_end(&c, false, "unknown job kind '%s'", j->kind);
out:
    vm_rec_release(&c.v);
}
