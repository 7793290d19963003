/* reconcile: keep the database true to Proxmox.
 *
 * At start and every reconcile_interval, with a freshly refreshed inventory:
 *  - VMs moved by HA (or by hand) get their new node;
 *  - power states, cores, memory and disk sizes changed outside proxd are
 *    taken over; changes recorded pending that a stop or start outside
 *    proxd applied are cleared (pending_applied), and those a failed
 *    update's late write left pending are taken (pending_late);
 *  - VMs deleted outside proxd are marked "lost" (only when the world that
 *    held them answered this round: an unreachable node is not a deletion);
 *    one gone within LATE_MS of its delete's failure, "deleted" (the
 *    destroy was served late);
 *  - records stuck in "creating" or "deleting" with no job left to finish
 *    them are driven to a final state;
 *  - half-made VMs of proxd's own creations are removed: the leftovers a
 *    creation recorded when it could not remove them itself (the node did
 *    not answer, kept failing, or the clone could not be seen to end), and
 *    any VM without a record whose creation marker ("proxd job <id>") names
 *    a creation job proxd knows;
 *  - VMs that carry proxd's tag (or a marker) but have no record and no
 *    known creation are reported as orphans, and deleted only when
 *    delete_orphans is set.
 *  - a leftover whose node is no longer in the configuration is reported
 *    every pass and, once the node has been missing for leftover_grace (the
 *    first pass that saw it missing is remembered in the database), its
 *    VMID is released: proxd cannot remove a VM on a node it does not
 *    manage, and Proxmox itself refuses a clone onto a VMID still in use.
 *  - a foreign VMID (a VM not proxd's had it: a creation met "already
 *    exists", or a leftover's VMID held someone else's VM) that no world
 *    shows any more, as a VM or a container, is given back, quarantined
 *    like any release; only when
 *    every configured world's inventory was read, in reads that began after
 *    the mark (give_back_foreign).
 * Removals (and the reads that decide them) do not run on the keeper
 * thread, which also refreshes the inventory: the pass hands them to the
 * cleaner, a thread of their own, so a hung or slow delete holds up nothing
 * else. core_reconcile (proxd reconcile, tests) does them in the pass.
 * Jobs whose runner died are not handled here: their expired lease makes
 * the workers claim and resume them. VMs without proxd's tag or marker are
 * never touched. Every repair is logged. */
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)
/* A removal's task that takes longer is given up and tried again later. */
#define DESTROY_STOP_MS 15000
#define DESTROY_DELETE_MS 15000
/* Removals waiting for the cleaner; more wait for a later pass. */
#define CLEAN_MAX 256

static int cmp_vmid(const void *a, const void *b)
{
    int x = ((const struct fleet_vm *)a)->vmid, y = ((const struct fleet_vm *)b)->vmid;
    return (x > y) - (x < y);
}

/* In the inventory sorted by VMID (one binary search per record: a pass
 * over 10,000 records must not compare them with 10,000 VMs each). */
/* The VM of VMID `vmid` (vms sorted by VMID) that a record on `node` may
 * be: the one on that node, else one on another node of its world (a
 * cluster: moved by HA or by hand). A VMID is a world's own: another
 * world's VM of it (a standalone host's, made by hand, or the copy of a
 * clone served late) is another VM. An empty node: any. */
static const struct fleet_vm *find_vm(struct core *k, const struct fleet_vm *vms, size_t n,
                                      int vmid, const char *node)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vms[mid].vmid < vmid)
            lo = mid + 1;
        else
            hi = mid;
    }
    const struct fleet_vm *near = NULL;
    for (; lo < n && vms[lo].vmid == vmid; lo++) {
        if (vms[lo].tmpl)
            continue;
        if (!node[0] || strcmp(vms[lo].node, node) == 0)
            return &vms[lo];
        if (!near && fleet_same_world(k->fl, vms[lo].node, node))
            near = &vms[lo];
    }
    return near;
}

static const char *power_of(const char *status)
{
    return strcmp(status, "running") == 0 ? "running" : "stopped";
}

/* Is a job still going to finish this record? 1 yes, 0 no (none, gone, or
 * ended), -1 when it cannot be read now: a database error is not "no job"
 * (a creation's record taken for abandoned during a blip was set failed and
 * its VMID released under the running creation), so the caller leaves the
 * record for the next pass. (A job that finished after we read the record
 * has changed it: save_if_unchanged then skips the repair.) kind: the
 * record's last job's; *ended: when it finished (unix ms, 0). */
static int job_alive(struct core *k, const char *job, char kind[16], int64_t *ended, bool *failed)
{
    struct job_brief j;
    struct store_error se = {0};
    kind[0] = '\0';
    *ended = 0;
    *failed = false;
    if (!job[0])
        return 0;
    int rc = store_job_brief(k->st, job, &j, &se);
    if (rc == STORE_E_NOTFOUND)
        return 0;
    if (rc) {
        log_warn("reconcile", "job %s cannot be read (%s): its record is looked at next pass", job,
                 se.message);
        return -1;
    }
    snprintf(kind, 16, "%s", j.kind);
    *ended = j.finished_at;
    *failed = j.state == JOB_FAILED;
    return j.state == JOB_QUEUED || j.state == JOB_RUNNING;
}

/* How long a call's late effect is looked for: after a power job the
 * VM's own status is read (a pause, or resume, whose answer was lost may
 * be served late, after the jobs that followed it: core/test_faults_random
 * seed 11, a pause served after a resume and a reboot left the record
 * "running" on a paused VM); after an update that failed, its pending
 * changes (pending_late); after a delete that failed, a VM gone is
 * deleted, not lost. */
#define LATE_MS (10 * 60 * 1000)

static bool recent_power_job(const char *kind, int64_t ended)
{
    static const char *const power[] = {"start", "shutdown", "stop", "pause", "resume", "reboot"};
    for (size_t i = 0; i < sizeof power / sizeof *power; i++)
        if (strcmp(kind, power[i]) == 0)
            return ended > 0 && wall_ms() - ended < LATE_MS;
    return false;
}

/* The inventory says "running" for a paused VM too: only the VM's own
 * status (qmpstatus) tells. It is read for the records where a pause is in
 * question (recorded paused, last touched by a pause or resume job, or by
 * any power job in the last LATE_MS), not for every running VM. */
static const char *running_or_paused(struct core *k, const struct vm_rec *v,
                                     const struct fleet_vm *fv, const char *last_kind,
                                     bool power_recent)
{
    if (strcmp(v->power, "paused") != 0 && strcmp(last_kind, "pause") != 0 &&
        strcmp(last_kind, "resume") != 0 && !power_recent)
        return NULL;
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_vm_status st;
    struct pve_error e;
    /* not on a node that is down: the keeper would wait out its timeout */
    if (!pc || !fleet_node_up(k->fl, fv->node) || pve_vm_status(pc, fv->node, fv->vmid, &st, &e) ||
        strcmp(st.status, "running"))
        return NULL;
    return strcmp(st.qmpstatus, "paused") == 0 ? "paused" : "running";
}

/* The VM's pending changes (*p owned by the caller: free), read only on
 * a node that is up (else the keeper would wait out its timeout): true
 * when read. */
static bool read_pending(struct core *k, const struct fleet_vm *fv, struct pve_pending **p,
                         size_t *n)
{
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_error e;
    *p = NULL;
    *n = 0;
    return pc && fleet_node_up(k->fl, fv->node) &&
           pve_vm_pending(pc, fv->node, fv->vmid, p, n, &e) == 0;
}

/* Changes recorded pending that Proxmox may have applied since: the
 * inventory says the VM is stopped (a stop through the API, the GUI's or
 * an operator's, applies them: PVE's vm_stop_cleanup; a shutdown from
 * inside or a crash does not), or shows the sizes the record says while
 * it runs (a start outside proxd applied them: the inventory's are the
 * config's current values, the old ones while the change is pending).
 * Proxmox's own list says: true when it was read and holds none. Read
 * only then, not for every VM with a change waiting for its reboot. */
static bool pending_applied(struct core *k, const struct vm_rec *v, const struct fleet_vm *fv)
{
    if (!v->pending)
        return false;
    bool stopped = strcmp(fv->status, "stopped") == 0;
    bool sizes = fv->maxcpu == v->cores && fv->maxmem / MiB == v->memory_mb;
    if (!stopped && !(strcmp(fv->status, "running") == 0 && sizes))
        return false;
    struct pve_pending *p;
    size_t n;
    if (!read_pending(k, fv, &p, &n))
        return false;
    free(p);
    return n == 0;
}

/* An update that failed may have changed the VM all the same: a write of
 * it served after the job had given up on it (its answer lost, or sent by
 * a run of the job that was killed). On a running VM the change waits in
 * Proxmox's pending list, which the inventory does not show (its sizes
 * are the current ones). Read for a running VM an update of which failed
 * in the last LATE_MS (late_updates): what Proxmox holds
 * pending, when it is not what the record says, is taken (cores and
 * memory as the values the VM gets at its next start). True when the
 * record changed. */
static bool pending_late(struct core *k, struct vm_rec *v, const struct fleet_vm *fv,
                         bool late_update)
{
    if (!late_update || strcmp(fv->status, "running") != 0)
        return false;
    struct pve_pending *p;
    size_t n;
    if (!read_pending(k, fv, &p, &n) || n == 0) {
        free(p);
        return false;
    }
    json_t *o = core_pending_json(p, n);
    int cores = 0;
    int64_t mem = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p[i].del && strcmp(p[i].key, "cores") == 0)
            cores = atoi(p[i].pending);
        if (!p[i].del && strcmp(p[i].key, "memory") == 0)
            mem = pve_memory_mib(p[i].pending);
    }
    free(p);
    if (v->pending && json_equal(o, v->pending)) {
        json_decref(o);
        return false;
    }
    log_info("reconcile",
             "vmid=%d node=%s holds pending changes its record lacks (a write of the failed "
             "update served late): taken",
             v->vmid, v->node);
    json_decref(v->pending);
    v->pending = o;
    if (cores > 0)
        v->cores = cores;
    if (mem > 0)
        v->memory_mb = mem;
    return true;
}

/* Write a repaired record only if nobody changed it since we read it: jobs
 * run concurrently with the reconciler and their writes win. The check is
 * in the write (store_vm_update_if), so it holds against a DELETE or a job
 * of another proxd sharing the database too. */
static bool save_if_unchanged(struct core *k, struct vm_rec *v, int64_t read_at,
                              enum vm_state read_state)
{
    struct store_error se;
    int rc = store_vm_update_if(k->st, v, read_state, read_at, &se);
    if (rc == STORE_E_CONFLICT || rc == STORE_E_NOTFOUND)
        log_debug("reconcile", "vmid=%d changed meanwhile (%s); repair skipped this round", v->vmid,
                  se.message);
    else if (rc)
        log_error("reconcile", "vmid=%d repair not saved: %s", v->vmid, se.message);
    return rc == 0;
}

/* stats: the inventory's status, cores, memory and disk may be judged (they
 * cannot predate the record's last change, see stats_lag); else only
 * the node, which the inventory has live, is. */
static void take_over(struct core *k, struct vm_rec *v, const struct fleet_vm *fv,
                      const char *last_kind, bool power_recent, bool late_update, bool stats,
                      struct reconcile_report *rep)
{
    int64_t read_at = v->updated_at;
    enum vm_state read_state = v->state;
    bool changed = false;
    if (strcmp(fv->node, v->node) != 0) {
        log_info("reconcile", "vmid=%d moved from %s to %s outside proxd", v->vmid, v->node,
                 fv->node);
        snprintf(v->node, sizeof v->node, "%s", fv->node);
        rep->moved++;
        changed = true;
    }
    if (!stats) {
        if (changed)
            save_if_unchanged(k, v, read_at, read_state);
        return;
    }
    /* a pause is not visible in the inventory: the VM's status tells, when
     * it can be read (else "paused" is kept while it runs). A VM pvestatd has
     * not reported yet is listed "unknown", without maxcpu, maxmem or maxdisk
     * (0 here): nothing is taken from it. */
    const char *p = power_of(fv->status);
    const char *rp =
        strcmp(p, "running") == 0 ? running_or_paused(k, v, fv, last_kind, power_recent) : NULL;
    if (rp)
        p = rp;
    bool paused_ok = !rp && strcmp(v->power, "paused") == 0 && strcmp(p, "running") == 0;
    if (strcmp(fv->status, "unknown") != 0 && strcmp(p, v->power) != 0 && !paused_ok) {
        log_info("reconcile", "vmid=%d node=%s power %s -> %s (changed outside proxd)", v->vmid,
                 v->node, v->power, p);
        snprintf(v->power, sizeof v->power, "%s", p);
        rep->power++;
        changed = true;
    }
    if (pending_late(k, v, fv, late_update)) {
        rep->resized++;
        changed = true;
    } else if (pending_applied(k, v, fv)) {
        log_info("reconcile", "vmid=%d node=%s its pending changes were applied outside proxd",
                 v->vmid, v->node);
        json_decref(v->pending);
        v->pending = NULL;
        changed = true;
    }
    int64_t mem = fv->maxmem / MiB, disk = fv->maxdisk / GiB;
    /* a disk shrinks only back to a snapshot's size (a rollback in the GUI,
     * or one whose answer was lost and that the server ran after a later
     * resize): taken when even its size rounded up is below the record's,
     * so that a template's disk not whole in GiB is not taken for shrunk */
    int64_t disk_up = (fv->maxdisk + GiB - 1) / GiB;
    bool shrunk = fv->maxdisk > 0 && disk_up < v->disk_gb;
    bool sized = (fv->maxcpu > 0 && fv->maxcpu != v->cores && !v->pending) ||
                 (mem > 0 && mem != v->memory_mb && !v->pending) || (disk > v->disk_gb) || shrunk;
    if (sized) {
        log_info("reconcile",
                 "vmid=%d node=%s resources changed outside proxd: %d cores, %lld MiB, %lld GiB",
                 v->vmid, v->node, fv->maxcpu, (long long)mem, (long long)disk);
        if (!v->pending) {
            v->cores = fv->maxcpu > 0 ? fv->maxcpu : v->cores;
            v->memory_mb = mem > 0 ? mem : v->memory_mb;
        }
        if (disk > v->disk_gb)
            v->disk_gb = disk;
        else if (shrunk)
            v->disk_gb = disk_up;
        rep->resized++;
        changed = true;
    }
    if (changed)
        save_if_unchanged(k, v, read_at, read_state);
}

/* Is the absence of a stuck record's VM from the inventory read at t0 news
 * of its absence, rather than of a world that did not answer (an empty
 * inventory at start-up, a stale one)? As for "lost": only when the node it
 * would be on was refreshed this pass. A creation's record names its node
 * only once done: its job's node then, and when that is not known either
 * (or is no longer configured), every managed node must have answered. */
static bool absence_known(struct core *k, const struct vm_rec *v, int64_t t0)
{
    char node[64];
    snprintf(node, sizeof node, "%s", v->node);
    struct job_rec j;
    if (!node[0] && v->job[0] && store_job_get(k->st, v->job, &j, NULL) == 0) {
        snprintf(node, sizeof node, "%s", j.node);
        job_rec_release(&j);
    }
    if (node[0] && config_node(k->cfg, node))
        return fleet_node_fresh(k->fl, node, t0);
    for (int i = 0; i < k->cfg->nnodes; i++)
        if (!fleet_node_fresh(k->fl, k->cfg->nodes[i].name, t0))
            return false;
    return true;
}

/* Updates that failed in the last LATE_MS (the newest LATE_UPDATES
 * of them): a write of one may land late, after the jobs that followed it
 * (a start: the random fault test, seed 15610), so the record's last job
 * need not be the update. */
#define LATE_UPDATES 200

struct late_update {
    int vmid;
    int64_t created_at; /* the job's: a VMID's earlier VM's update is not this one's */
};

static int cmp_late(const void *a, const void *b)
{
    int x = ((const struct late_update *)a)->vmid, y = ((const struct late_update *)b)->vmid;
    return (x > y) - (x < y);
}

static struct late_update *late_updates(struct core *k, size_t *n)
{
    struct job_filter f = {.kind = "update", .state = JOB_FAILED, .limit = LATE_UPDATES};
    struct job_rec *js = NULL;
    size_t m = 0;
    struct store_error se;
    *n = 0;
    if (store_job_list(k->st, &f, &js, &m, NULL, &se)) {
        log_warn("reconcile", "cannot list the updates that failed: %s", se.message);
        return NULL;
    }
    struct late_update *u = xcalloc(m + 1, sizeof *u);
    int64_t since = wall_ms() - LATE_MS;
    for (size_t i = 0; i < m; i++) {
        if (js[i].finished_at > since)
            u[(*n)++] = (struct late_update){js[i].vmid, js[i].created_at};
        job_rec_release(&js[i]);
    }
    free(js);
    qsort(u, *n, sizeof *u, cmp_late);
    return u;
}

/* Did an update of this record's VM fail lately (late_updates)? */
static bool update_failed_lately(const struct vm_rec *v, const struct late_update *u, size_t n)
{
    struct late_update key = {v->vmid, 0};
    const struct late_update *hit = n ? bsearch(&key, u, n, sizeof *u, cmp_late) : NULL;
    if (!hit)
        return false;
    /* bsearch finds one of the VMID's: any made for this record will do */
    while (hit > u && hit[-1].vmid == v->vmid)
        hit--;
    for (; hit < u + n && hit->vmid == v->vmid; hit++)
        if (hit->created_at >= v->created_at)
            return true;
    return false;
}

/* May the inventory's lack of record v's VM be taken for its absence?
 * /cluster/resources lists only the VMs the credentials may audit
 * (VM.Audit on /vms/<id>, a pool's, an inherited role's): a token that lacks
 * it, or an ACL that hides one VM, makes VMs look deleted, and a record
 * judged by that would be marked lost (a customer's live VM) or deleted
 * (a VM left behind). So the VM's own status is read on its node first:
 * "does not exist" is gone; a 403 is hidden (counted; the first of a pass
 * said); the VM there, or any other failure: not gone, next pass. One read
 * per VM that looks gone (a deletion outside proxd is rare); after
 * HIDDEN_READS refusals in a pass the rest are taken as hidden unread (a
 * token without VM.Audit hides every VM: a pass must not read them all). */
#define HIDDEN_READS 20
static bool gone_for_sure(struct core *k, const struct vm_rec *v, const char *node,
                          struct reconcile_report *rep)
{
    pve_client *pc = node[0] ? fleet_client(k->fl, node) : NULL;
    if (!pc)
        return true; /* not a node of the fleet's: its world's absence is all there is */
    if (rep->hidden >= HIDDEN_READS) {
        rep->hidden++;
        return false;
    }
    struct pve_vm_status st;
    struct pve_error e = {0};
    int rc = pve_vm_status(pc, node, v->vmid, &st, &e);
    if (rc == PVE_E_NOTFOUND)
        return true;
    char buf[PVE_MSG_MAX + 64];
    if (rc == PVE_E_PERMISSION) {
        if (rep->hidden++ == 0)
            log_warn("reconcile",
                     "vmid=%d node=%s is not in the inventory and Proxmox refuses proxd a look at "
                     "it (%s): not judged gone; do proxd's credentials lack VM.Audit? (GET "
                     "/v1/nodes, privileges)",
                     v->vmid, node, pve_strerror(&e, buf, sizeof buf));
        else
            log_debug("reconcile", "vmid=%d node=%s hidden from proxd too", v->vmid, node);
    } else if (rc == 0) {
        log_warn("reconcile", "vmid=%d node=%s is not in the inventory but is there (%s): not gone",
                 v->vmid, node, st.status);
    } else {
        log_info("reconcile",
                 "vmid=%d node=%s is not in the inventory; its status read failed (%s): next pass",
                 v->vmid, node, pve_strerror(&e, buf, sizeof buf));
    }
    return false;
}

static void check_record(struct core *k, struct vm_rec *v, const struct fleet_vm *vms, size_t n,
                         int64_t t0, const struct late_update *lu, size_t nlu,
                         struct reconcile_report *rep)
{
    const struct fleet_vm *fv = find_vm(k, vms, n, v->vmid, v->node);
    char last_kind[16];
    int64_t last_ended;
    bool last_failed;
    int alive = job_alive(k, v->job, last_kind, &last_ended, &last_failed);
    if (alive < 0)
        return;
    bool busy = alive == 1;
    int64_t read_at = v->updated_at;
    enum vm_state read_state = v->state;
    if (v->state == VMS_CREATING || v->state == VMS_DELETING) {
        if (busy)
            return;
        /* nobody will finish it: decide from what Proxmox shows, once it
         * shows it (released, the VMID of a live VM went to another) */
        if (!fv && !absence_known(k, v, t0)) {
            log_info("reconcile",
                     "vmid=%d stuck in %s with no job: its node did not answer, next pass", v->vmid,
                     vm_state_name(v->state));
            return;
        }
        if (!fv && !gone_for_sure(k, v, v->node, rep))
            return;
        enum vm_state to = v->state == VMS_CREATING ? (fv ? VMS_ENABLED : VMS_FAILED)
                                                    : (fv ? VMS_ENABLED : VMS_DELETED);
        if (to == VMS_FAILED)
            snprintf(v->error, sizeof v->error, "its creation job ended without a result");
        v->state = to;
        if (fv)
            snprintf(v->node, sizeof v->node, "%s", fv->node);
        if (!save_if_unchanged(k, v, read_at, read_state))
            return; /* changed meanwhile, or not saved: said by save_if_unchanged */
        log_warn("reconcile", "vmid=%d stuck in %s with no job: now %s", v->vmid,
                 vm_state_name(read_state), vm_state_name(to));
        if (to == VMS_DELETED || to == VMS_FAILED)
            store_vmid_release(k->st, v->vmid, k->cfg->quarantine_s * 1000, NULL);
        rep->stuck++;
        return;
    }
    if (v->state != VMS_ENABLED || busy)
        return;
    /* the inventory was read at t0: a record changed since is newer than what
     * it says (a creation that just finished, a job's update); next round */
    if (v->updated_at >= t0)
        return;
    if (fv) {
        /* from an inventory its node answered this pass: a world whose read
         * failed keeps its last one, older than what jobs wrote since (a
         * stop taken back to "running") */
        if (!fleet_node_fresh(k->fl, fv->node, t0))
            return;
        /* how much older than the read a VM's stats may be ([proxd]
         * stats_lag): /cluster/resources serves a VM's status, cores,
         * memory and disk from the RRD cache that each node's pvestatd
         * fills about every 10 s (spread by pmxcfs), while the VM list, and
         * so its node, is live. A record a job changed less than this
         * before the read may be newer than the stats it would be judged by
         * (a stop taken back to "running", a memory change undone): its
         * stats wait for a later pass */
        bool stats = v->updated_at < t0 - (int64_t)k->cfg->stats_lag_s * 1000;
        if (!stats)
            log_debug("reconcile",
                      "vmid=%d changed %lld ms before the inventory read: its stats may be older, "
                      "next pass",
                      v->vmid, (long long)(t0 - v->updated_at));
        bool late_update = update_failed_lately(v, lu, nlu);
        take_over(k, v, fv, last_kind, recent_power_job(last_kind, last_ended), late_update, stats,
                  rep);
        return;
    }
    if (!fleet_node_fresh(k->fl, v->node, t0))
        return; /* its node did not answer: not a deletion */
    if (!gone_for_sure(k, v, v->node, rep))
        return;
    if (last_failed && strcmp(last_kind, "delete") == 0 && wall_ms() - last_ended < LATE_MS) {
        /* the destroy of a delete that failed, served after the job's
         * looks (its answer lost): proxd's own deletion, not a loss */
        log_warn("reconcile",
                 "vmid=%d node=%s is gone after its delete failed (its destroy served late): "
                 "marked deleted",
                 v->vmid, v->node);
        v->state = VMS_DELETED;
        snprintf(v->power, sizeof v->power, "stopped");
    } else {
        log_warn("reconcile", "vmid=%d node=%s is gone: deleted outside proxd, marked lost",
                 v->vmid, v->node);
        v->state = VMS_LOST;
        snprintf(v->power, sizeof v->power, "unknown");
    }
    if (!save_if_unchanged(k, v, read_at, read_state))
        return;
    store_vmid_release(k->st, v->vmid, k->cfg->quarantine_s * 1000, NULL);
    if (v->state == VMS_LOST)
        rep->lost++;
    else
        rep->stuck++;
}

#define MARKER "proxd job "

/* The creation job named by a VM's marker ("proxd job <id>" in its
 * description), or "" when it has none. */
static void marker_job(const char *description, char job[40])
{
    const char *m = strstr(description, MARKER);
    job[0] = '\0';
    if (m)
        snprintf(job, 40, "%.*s", (int)strcspn(m + strlen(MARKER), " \n\r\t"), m + strlen(MARKER));
}

/* What the job a VM's marker names made of VM `vmid`. */
enum made {
    MADE_UNKNOWN,  /* no such job here, or not one that makes VMs: an orphan */
    MADE_PARTIAL,  /* a creation's attempt, a reinstall's temporary VM: ours to remove */
    MADE_RUNNING,  /* a reinstall's temporary VM while it works: not to be touched */
    MADE_FINISHED, /* the VM a creation (or reinstall) that ended done made: a
                      customer's VM whose record is gone (lost: deleted outside
                      proxd, then restored or moved back), never a partial one */
    MADE_ERROR     /* the job could not be read: decide on a later pass */
};

static enum made made_by(struct core *k, const char *job, int vmid)
{
    struct job_brief j;
    struct store_error se;
    if (!job[0])
        return MADE_UNKNOWN;
    int rc = store_job_brief(k->st, job, &j, &se);
    if (rc)
        return rc == STORE_E_NOTFOUND ? MADE_UNKNOWN : MADE_ERROR;
    bool create = strcmp(j.kind, "create") == 0;
    if (strcmp(j.kind, "reinstall") == 0) {
        if (j.state == JOB_QUEUED || j.state == JOB_RUNNING)
            return MADE_RUNNING;
        create = true;
    }
    if (!create)
        return MADE_UNKNOWN;
    return j.state == JOB_DONE && j.vmid == vmid ? MADE_FINISHED : MADE_PARTIAL;
}

static bool in_our_ranges(struct core *k, int vmid)
{
    const struct proxd_config *c = k->cfg;
    for (int i = 0; i < c->nos; i++)
        if (vmid >= c->os[i].range_lo && vmid <= c->os[i].range_hi)
            return true;
    return c->fallback_lo && vmid >= c->fallback_lo && vmid <= c->fallback_hi;
}

/* Stop (if it runs) and destroy a VM of ours with purge. 0 when it is gone. */
static int destroy(struct core *k, const char *node, int vmid, struct pve_error *e)
{
    pve_client *pc = fleet_client(k->fl, node);
    char upid[PVE_UPID_MAX] = "";
    struct pve_vm_status st;
    if (!pc) {
        snprintf(e->message, sizeof e->message, "node %s is not configured", node);
        return -1;
    }
    int rc = pve_vm_status(pc, node, vmid, &st, e);
    if (rc == 0 && strcmp(st.status, "stopped") != 0) {
        rc = pve_vm_power(pc, node, vmid, PVE_POWER_STOP, NULL, upid, e);
        if (rc == 0)
            rc = core_wait_task(k, pc, upid, DESTROY_STOP_MS, e);
    }
    if (rc == 0) {
        struct pve_delete_opts d = {.purge = true, .destroy_unreferenced = true};
        rc = pve_vm_delete(pc, node, vmid, &d, upid, e);
        if (rc == 0)
            rc = core_wait_task(k, pc, upid, DESTROY_DELETE_MS, e);
    }
    if (rc == PVE_E_NOTFOUND)
        rc = 0;
    if (rc == 0)
        fleet_vm_removed(k->fl, vmid, node);
    return rc;
}

/* Is a clone to `vmid` of the job's template still running on the node?
 * A job that cannot be read now (a database error, not "no such job") may
 * be: the leftover waits for the next pass rather than being taken for
 * never made, its VMID released while its clone may still come. */
static bool clone_running(struct core *k, const struct leftover *l)
{
    struct job_rec j;
    struct store_error se = {0};
    int rc = store_job_get(k->st, l->job, &j, &se);
    if (rc == STORE_E_NOTFOUND)
        return false;
    if (rc) {
        log_warn("reconcile",
                 "vmid=%d node=%s job %s of the leftover cannot be read (%s): next pass", l->vmid,
                 l->node, l->job, se.message);
        return true;
    }
    const struct cfg_node *cn = config_node(k->cfg, l->node);
    const char *os = json_string_value(json_object_get(j.request, "os"));
    int tpl = cn && os ? config_template(cn, os) : 0;
    char upid[PVE_UPID_MAX];
    struct pve_task t;
    struct pve_error e;
    bool running = tpl &&
                   pve_find_clone_task(fleet_client(k->fl, l->node), l->node, tpl, l->vmid,
                                       j.created_at / 1000, upid) &&
                   (pve_task_status(fleet_client(k->fl, l->node), upid, &t, &e) != 0 || t.running);
    job_rec_release(&j);
    return running;
}

/* Is the leftover stale: did its creation go on under its VMID on its node
 * after all? So when the VMID has a live record (creating or enabled) on
 * the leftover's node (a creation's record without a node yet: its job's)
 * that the leftover's job made: the record's last job, or the creation
 * whose VMID (the job's) is the record's. Its VM is then that record's, a
 * customer's or one a creation works on, never to be removed, and its VMID
 * the record's, never to be released. Not while that job runs: it settles
 * the leftover itself. 1 stale, 0 not, -1 when the database cannot tell
 * now or the job runs (next pass). */
static int stale_unknown(const struct leftover *l, const char *what, const char *why)
{
    log_warn("reconcile", "vmid=%d node=%s leftover of job %s: %s cannot be read (%s): next pass",
             l->vmid, l->node, l->job, what, why);
    return -1;
}

static int leftover_stale(struct core *k, const struct leftover *l)
{
    struct vm_rec v;
    struct store_error se;
    int rc = store_vm_get(k->st, l->vmid, &v, &se);
    if (rc == STORE_E_NOTFOUND)
        return 0;
    if (rc)
        return stale_unknown(l, "its VMID's record", se.message);
    bool live = v.state == VMS_CREATING || v.state == VMS_ENABLED;
    char node[64], job[40];
    snprintf(node, sizeof node, "%s", v.node);
    snprintf(job, sizeof job, "%s", v.job);
    vm_rec_release(&v);
    if (!live)
        return 0;
    if (!node[0] && job[0]) {
        struct job_rec j;
        if ((rc = store_job_get(k->st, job, &j, &se)) == 0) {
            snprintf(node, sizeof node, "%s", j.node);
            job_rec_release(&j);
        } else if (rc != STORE_E_NOTFOUND) {
            return stale_unknown(l, "its record's job", se.message);
        }
    }
    if (strcmp(node, l->node) != 0)
        return 0;
    struct job_brief b;
    rc = store_job_brief(k->st, l->job, &b, &se);
    if (rc && rc != STORE_E_NOTFOUND)
        return stale_unknown(l, "its job", se.message);
    bool made =
        strcmp(job, l->job) == 0 || (rc == 0 && strcmp(b.kind, "create") == 0 && b.vmid == l->vmid);
    if (made && rc == 0 && (b.state == JOB_QUEUED || b.state == JOB_RUNNING)) {
        /* the job has not ended: it may still be at the cleanup that left
         * the leftover (a runner killed before its move off the VMID, the
         * job resumed after this pass), or go on under the VMID. Either
         * way the job settles it; the leftover waits for its end */
        log_debug("reconcile", "vmid=%d node=%s leftover of job %s: the job runs, next pass",
                  l->vmid, l->node, l->job);
        return -1;
    }
    return made;
}

/* One leftover: removed, proven never made, stale, or left for the next
 * pass. */
static void settle_leftover(struct core *k, const struct leftover *l, struct reconcile_report *rep)
{
    pve_client *pc = fleet_client(k->fl, l->node);
    if (!pc || !fleet_node_up(k->fl, l->node))
        return; /* its node is down (or gone from the configuration): later */
    int stale = leftover_stale(k, l);
    if (stale < 0)
        return;
    if (stale) {
        struct store_error se;
        log_warn("reconcile",
                 "vmid=%d node=%s leftover of job %s is stale: a live record of that VMID on that "
                 "node made by the job holds it (the creation went on under it after all); "
                 "forgotten, its VM not removed and its VMID kept",
                 l->vmid, l->node, l->job);
        if (store_leftover_forget(k->st, l->vmid, l->node, &se))
            log_error("reconcile", "vmid=%d node=%s stale leftover not forgotten: %s", l->vmid,
                      l->node, se.message);
        return;
    }
    struct pve_vm_config cfg;
    struct pve_error e;
    int64_t q = (int64_t)k->cfg->quarantine_s * 1000;
    int rc = pve_vm_config_get(pc, l->node, l->vmid, false, &cfg, &e);
    if (rc == PVE_E_NOTFOUND) {
        if (clone_running(k, l))
            return; /* its config has not appeared yet */
        log_info("reconcile", "vmid=%d node=%s leftover of job %s was never made", l->vmid, l->node,
                 l->job);
        store_leftover_done(k->st, l->vmid, l->node, q, NULL);
        return;
    }
    if (rc) {
        log_warn("reconcile", "vmid=%d node=%s leftover of job %s not checked: %s", l->vmid,
                 l->node, l->job, e.message);
        return;
    }
    char job[40];
    marker_job(cfg.description, job);
    bool ours = strcmp(job, l->job) == 0 || (strcmp(cfg.lock, "clone") == 0 && !cfg.name[0]);
    bool locked = cfg.lock[0] != '\0';
    pve_vm_config_release(&cfg);
    if (!ours) { /* something else has the VMID now: never hand it out */
        log_warn("reconcile", "vmid=%d node=%s is no longer job %s's VM: left alone", l->vmid,
                 l->node, l->job);
        store_leftover_done(k->st, l->vmid, l->node, q, NULL);
        store_vmid_mark_foreign(k->st, l->vmid, NULL);
        return;
    }
    if (locked)
        return; /* its clone (or another task) still runs: next pass */
    if (destroy(k, l->node, l->vmid, &e) != 0) {
        log_warn("reconcile", "vmid=%d node=%s partial VM of job %s not removed yet: %s", l->vmid,
                 l->node, l->job, e.message);
        return;
    }
    log_warn("reconcile", "vmid=%d node=%s partial VM of job %s removed", l->vmid, l->node, l->job);
    store_leftover_done(k->st, l->vmid, l->node, q, NULL);
    rep->partial_removed++;
}

/* ---- the cleaner: removals off the keeper thread ----------------------------- */

static void check_unrecorded(struct core *k, const struct fleet_vm *fv, bool copy,
                             struct reconcile_report *rep);

static bool clean_same(const struct clean_item *c, int vmid, const char *node)
{
    int v = c->leftover ? c->l.vmid : c->fv.vmid;
    return v == vmid && strcmp(c->leftover ? c->l.node : c->fv.node, node) == 0;
}

/* Is a removal of vmid on node queued for the cleaner or under way? */
static bool clean_busy(struct core *k, int vmid, const char *node)
{
    bool busy = false;
    pthread_mutex_lock(&k->mu);
    for (int i = 0; i < k->ncq && !busy; i++)
        busy = clean_same(&k->cq[i], vmid, node);
    pthread_mutex_unlock(&k->mu);
    return busy;
}

/* Hand one to the cleaner, once; when its queue is full, a later pass
 * finds the VM again. */
static void clean_post(struct core *k, const struct clean_item *it)
{
    int vmid = it->leftover ? it->l.vmid : it->fv.vmid;
    const char *node = it->leftover ? it->l.node : it->fv.node;
    if (clean_busy(k, vmid, node))
        return;
    pthread_mutex_lock(&k->mu);
    if (k->ncq < CLEAN_MAX && !k->stopping) {
        k->cq[k->ncq++] = *it;
        pthread_cond_broadcast(&k->ccv);
    }
    pthread_mutex_unlock(&k->mu);
}

static void *cleaner_main(void *arg)
{
    mem_thread_name("cleaner");
    struct core *k = arg;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->stopping && k->ncq == 0)
            pthread_cond_wait(&k->ccv, &k->mu);
        if (k->stopping)
            break;
        /* the item stays first in the queue while it runs (clean_busy) */
        struct clean_item it = k->cq[0];
        pthread_mutex_unlock(&k->mu);
        struct reconcile_report rep = {0};
        if (it.leftover)
            settle_leftover(k, &it.l, &rep);
        else
            check_unrecorded(k, &it.fv, it.copy, &rep);
        pthread_mutex_lock(&k->mu);
        memmove(k->cq, k->cq + 1, (size_t)(k->ncq - 1) * sizeof *k->cq);
        k->ncq--;
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

int reconcile_cleaner_start(struct core *k)
{
    k->cq = xcalloc(CLEAN_MAX, sizeof *k->cq);
    k->ncq = 0;
    if (mem_thread_start(&k->cleaner, cleaner_main, k) != 0)
        return -1;
    k->cleaner_started = true;
    return 0;
}

void reconcile_cleaner_stop(struct core *k)
{
    if (!k->cleaner_started)
        return;
    pthread_mutex_lock(&k->mu);
    pthread_cond_broadcast(&k->ccv); /* k->stopping is set */
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->cleaner, NULL);
    k->cleaner_started = false;
    free(k->cq);
    k->cq = NULL;
    k->ncq = 0;
}

/* The setting that keeps when a leftover's node was first seen missing. */
static void unmanaged_name(const struct leftover *l, char name[192])
{
    snprintf(name, 192, "leftover_unmanaged:%d:%s:%lld", l->vmid, l->node,
             (long long)l->created_at);
}

/* The leftover was released, or its node is configured again: its first
 * sighting goes (a node that leaves again starts a new grace). */
static void unmanaged_forget(struct core *k, const struct leftover *l)
{
    char name[192];
    struct store_error se;
    unmanaged_name(l, name);
    if (store_kv_delete(k->st, name, &se))
        log_warn("reconcile", "vmid=%d node=%s leftover's first sighting not removed: %s", l->vmid,
                 l->node, se.message);
}

/* A leftover on a node that is no longer in the configuration: proxd
 * cannot look at it or remove it. Reported every pass; once the node has
 * been missing for leftover_grace (counted from the first pass of any proxd
 * on this database that saw it missing, kept in the database until the
 * leftover is released or its node is configured again), the leftover is
 * forgotten and its VMID released (quarantined as usual).
 * Releasing cannot make two VMs share an ID: Proxmox refuses a clone onto
 * an ID its cluster still has, and proxd then marks it foreign. */
static void unmanaged_leftover(struct core *k, const struct leftover *l,
                               struct reconcile_report *rep)
{
    char name[192], now[32], first[32];
    struct store_error se;
    unmanaged_name(l, name);
    snprintf(now, sizeof now, "%lld", (long long)wall_ms());
    if (store_kv_setdefault(k->st, name, now, first, sizeof first, &se)) {
        log_error("reconcile", "vmid=%d node=%s leftover not checked: %s", l->vmid, l->node,
                  se.message);
        return;
    }
    rep->unmanaged++;
    int64_t missing = wall_ms() - atoll(first), grace = k->cfg->leftover_grace_s * 1000;
    if (missing < grace) {
        log_warn("reconcile",
                 "vmid=%d node=%s leftover of job %s: node %s is not in the configuration; its "
                 "VMID stays reserved for %lld s more (leftover_grace)",
                 l->vmid, l->node, l->job, l->node, (long long)((grace - missing) / 1000));
        return;
    }
    log_warn("reconcile",
             "vmid=%d node=%s leftover of job %s: node %s has not been in the configuration for "
             "%lld s: VMID released; if the VM is still there, remove it by hand",
             l->vmid, l->node, l->job, l->node, (long long)(missing / 1000));
    if (store_leftover_done(k->st, l->vmid, l->node, (int64_t)k->cfg->quarantine_s * 1000, &se)) {
        log_error("reconcile", "vmid=%d node=%s leftover not released: %s", l->vmid, l->node,
                  se.message);
        return;
    }
    unmanaged_forget(k, l);
    rep->unmanaged_released++;
}

static void check_leftovers(struct core *k, struct leftover *ls, size_t n, bool now,
                            struct reconcile_report *rep)
{
    for (size_t i = 0; i < n; i++) {
        if (!config_node(k->cfg, ls[i].node)) {
            unmanaged_leftover(k, &ls[i], rep);
            continue;
        }
        unmanaged_forget(k, &ls[i]); /* its node may be back */
        if (!fleet_node_up(k->fl, ls[i].node))
            continue; /* its node is down: later */
        if (now) {
            if (!clean_busy(k, ls[i].vmid, ls[i].node))
                settle_leftover(k, &ls[i], rep);
        } else {
            struct clean_item it = {.leftover = true, .l = ls[i]};
            clean_post(k, &it);
        }
    }
}

static bool is_leftover(const struct leftover *ls, size_t n, const struct fleet_vm *fv)
{
    for (size_t i = 0; i < n; i++)
        if (ls[i].vmid == fv->vmid && strcmp(ls[i].node, fv->node) == 0)
            return true;
    return false;
}

/* A VM without a record in our ranges: a half-made VM of one of our
 * creations (removed), a tagged orphan (reported; deleted with
 * delete_orphans), or not ours (left alone). A copy (another world's VM
 * of a recorded VMID, as a backup restored on another standalone host) is
 * never taken for a half-made VM, marker or not: an orphan at most. */
static void check_unrecorded(struct core *k, const struct fleet_vm *fv, bool copy,
                             struct reconcile_report *rep)
{
    bool tagged = core_has_tag(fv->tags, k->cfg->tag);
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_vm_config cfg;
    struct pve_error e;
    char job[40] = "";
    if (!pc || !fleet_node_up(k->fl, fv->node))
        return;
    int rc = pve_vm_config_get(pc, fv->node, fv->vmid, false, &cfg, &e);
    if (rc)
        return; /* gone meanwhile, or not readable now: next pass */
    marker_job(cfg.description, job);
    bool locked = cfg.lock[0] != '\0';
    pve_vm_config_release(&cfg);
    if (!tagged && !job[0])
        return;
    /* a creation may be about to record it; its job owns the VMID */
    if (locked)
        return;
    enum made made = copy ? MADE_UNKNOWN : made_by(k, job, fv->vmid);
    if (made == MADE_RUNNING || made == MADE_ERROR)
        return; /* a reinstall's temporary VM: its job removes it */
    if (made == MADE_FINISHED)
        log_warn("reconcile",
                 "vmid=%d node=%s is the VM job %s made, without a live record (marked lost "
                 "while it was out of sight): not a partial VM",
                 fv->vmid, fv->node, job);
    if (made == MADE_PARTIAL) {
        if (destroy(k, fv->node, fv->vmid, &e) == 0) {
            log_warn("reconcile", "vmid=%d node=%s partial VM of job %s removed", fv->vmid,
                     fv->node, job);
            rep->partial_removed++;
        } else {
            log_warn("reconcile", "vmid=%d node=%s partial VM of job %s not removed yet: %s",
                     fv->vmid, fv->node, job, e.message);
        }
        return;
    }
    rep->orphans++;
    log_warn("reconcile", "vmid=%d node=%s carries proxd's tag but has no record: orphan", fv->vmid,
             fv->node);
    if (!k->cfg->delete_orphans)
        return;
    if (destroy(k, fv->node, fv->vmid, &e) == 0) {
        log_warn("reconcile", "vmid=%d node=%s orphan deleted (delete_orphans = yes)", fv->vmid,
                 fv->node);
        rep->orphans_deleted++;
    } else {
        log_error("reconcile", "vmid=%d node=%s orphan could not be deleted: %s", fv->vmid,
                  fv->node, e.message);
    }
}

/* The live records the pass listed (VMID and node), sorted by VMID: the
 * orphan check looks a VM up here before it asks the store, which it then
 * does only for VMs the listing gave no record of (or another VM's): one
 * read per VM of the inventory each pass cost more than the rest of it. */
struct live {
    int vmid;
    char node[sizeof((struct vm_rec *)0)->node];
};

static int cmp_live(const void *a, const void *b)
{
    int x = ((const struct live *)a)->vmid, y = ((const struct live *)b)->vmid;
    return (x > y) - (x < y);
}

/* A listed live record of `vmid` (any, if a VMID came back between two
 * pages: a wrong pick only sends the VM to the store read). */
static const struct live *live_find(const struct live *lv, size_t n, int vmid)
{
    struct live key = {.vmid = vmid};
    return n ? bsearch(&key, lv, n, sizeof *lv, cmp_live) : NULL;
}

static void check_orphans(struct core *k, const struct fleet_vm *vms, size_t n,
                          const struct leftover *ls, size_t nls, const struct live *lv, size_t nlv,
                          bool now, struct reconcile_report *rep)
{
    for (size_t i = 0; i < n; i++) {
        const struct fleet_vm *fv = &vms[i];
        if (fv->tmpl || !in_our_ranges(k, fv->vmid) || is_leftover(ls, nls, fv))
            continue;
        const struct live *l = live_find(lv, nlv, fv->vmid);
        if (l && find_vm(k, vms, n, fv->vmid, l->node) == fv)
            continue; /* the listed record's own VM */
        struct vm_rec v;
        bool copy = false;
        if (store_vm_get(k->st, fv->vmid, &v, NULL) == 0) {
            /* the record's VM, or another world's VM of its VMID */
            copy = find_vm(k, vms, n, fv->vmid, v.node) != fv;
            vm_rec_release(&v);
            if (!copy)
                continue;
        }
        if (!fleet_node_up(k->fl, fv->node)) {
            continue;
        } else if (now) {
            if (!clean_busy(k, fv->vmid, fv->node))
                check_unrecorded(k, fv, copy, rep);
        } else {
            struct clean_item it = {.leftover = false, .copy = copy, .fv = *fv};
            clean_post(k, &it);
        }
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Foreign VMIDs (store_vmid_mark_foreign) whose VM no world shows any more
 * go back, quarantined like any release. Only when the judgement is safe:
 * every configured world's last inventory read succeeded (a world that does
 * not answer, a standalone host down, has its VMs unseen, not gone: then
 * nothing goes back this pass), in reads that began after the mark (a VMID
 * marked a moment ago may not be in an older read), and the VMID is still
 * foreign, not marked again since, when it is released: the store's write
 * is conditional on that (another proxd sharing the database may have
 * changed it). The VMIDs are those of every managed world, its nodes proxd
 * does not manage and its containers included (fleet_taken_vmids): a
 * container holds its VMID as a VM does, and giving that back only had a
 * creation meet it, fail its clone and mark it again. */
static void give_back_foreign(struct core *k, struct reconcile_report *rep)
{
    struct vmid_foreign *fl = NULL;
    size_t nf = 0;
    struct store_error se;
    if (store_vmid_foreign_list(k->st, &fl, &nf, &se)) {
        log_error("reconcile", "cannot list foreign VMIDs: %s", se.message);
        return;
    }
    if (nf == 0) {
        free(fl);
        return;
    }
    int64_t since = 0;
    size_t nt = 0;
    int *taken = fleet_taken_vmids_since(k->fl, &nt, &since);
    if (!since)
        log_debug("reconcile",
                  "%zu foreign VMIDs kept: not every world's inventory was read (a world did not "
                  "answer)",
                  nf);
    int64_t q = (int64_t)k->cfg->quarantine_s * 1000;
    for (size_t i = 0; since && i < nf; i++) {
        int vmid = fl[i].vmid;
        if (fl[i].marked_at >= since)
            continue; /* marked after the read began: it may not show the VM yet */
        if (nt && bsearch(&vmid, taken, nt, sizeof *taken, cmp_int))
            continue; /* still there */
        int rc = store_vmid_release_foreign(k->st, vmid, since, q, &se);
        if (rc == STORE_E_CONFLICT || rc == STORE_E_NOTFOUND) {
            log_debug("reconcile", "vmid=%d foreign VMID changed meanwhile (%s): kept", vmid,
                      se.message);
        } else if (rc) {
            log_error("reconcile", "vmid=%d foreign VMID not given back: %s", vmid, se.message);
        } else {
            log_info("reconcile",
                     "vmid=%d the VM not proxd's that held it is gone from every world: foreign "
                     "VMID given back (quarantined %lld s)",
                     vmid, (long long)k->cfg->quarantine_s);
            rep->foreign_released++;
        }
    }
    free(taken);
    free(fl);
}

int reconcile_pass(struct core *k, struct reconcile_report *rep, bool removals_now)
{
    memset(rep, 0, sizeof *rep);
    int64_t t0 = wall_ms();
    fleet_refresh(k->fl, true);
    struct fleet_vm *vms;
    size_t n;
    fleet_vms(k->fl, &vms, &n);
    qsort(vms, n, sizeof *vms, cmp_vmid);
    struct vm_filter f = {.state = -1, .limit = 500};
    size_t nlu;
    struct late_update *lu = late_updates(k, &nlu);
    struct live *lv = NULL;
    size_t nlv = 0, cap = 0;
    for (;;) {
        struct vm_rec *recs = NULL;
        size_t m = 0;
        struct store_error se;
        if (store_vm_list(k->st, &f, &recs, &m, &se)) {
            log_error("reconcile", "cannot list records: %s", se.message);
            free(lv);
            free(lu);
            free(vms);
            return -1;
        }
        for (size_t i = 0; i < m; i++) {
            enum vm_state st = recs[i].state; /* as listed: check_record may change it */
            if (st == VMS_CREATING || st == VMS_ENABLED || st == VMS_DELETING) {
                if (nlv == cap) {
                    cap = cap ? cap * 2 : 64;
                    lv = xrealloc(lv, cap * sizeof *lv);
                }
                lv[nlv].vmid = recs[i].vmid;
                snprintf(lv[nlv].node, sizeof lv[nlv].node, "%s", recs[i].node);
                nlv++;
            }
            check_record(k, &recs[i], vms, n, t0, lu, nlu, rep);
            f.after_id = recs[i].id;
            vm_rec_release(&recs[i]);
        }
        free(recs);
        if (m == 0)
            break;
    }
    /* leftovers first: they are listed before the orphan pass so that a VM
     * removed as a leftover is not looked at again as an orphan */
    struct leftover *ls = NULL;
    size_t nls = 0;
    struct store_error se;
    if (store_leftover_list(k->st, &ls, &nls, &se))
        log_error("reconcile", "cannot list leftovers: %s", se.message);
    check_leftovers(k, ls, nls, removals_now, rep);
    if (nlv) /* (qsort of NULL is undefined, even of nothing) */
        qsort(lv, nlv, sizeof *lv, cmp_live);
    check_orphans(k, vms, n, ls, nls, lv, nlv, removals_now, rep);
    free(lv);
    free(lu);
    free(ls);
    /* after the leftovers: a VMID one marks foreign now waits for a later read */
    give_back_foreign(k, rep);
    core_addr_sweep(k);
    free(vms);
    if (rep->moved || rep->power || rep->resized || rep->lost || rep->hidden || rep->stuck ||
        rep->orphans || rep->partial_removed || rep->unmanaged || rep->foreign_released)
        log_info("reconcile",
                 "done: %d moved, %d power, %d resized, %d lost, %d hidden from proxd, %d stuck, "
                 "%d partial VMs removed, %d orphans (%d deleted), %d leftovers on unconfigured "
                 "nodes (%d released), %d foreign VMIDs given back",
                 rep->moved, rep->power, rep->resized, rep->lost, rep->hidden, rep->stuck,
                 rep->partial_removed, rep->orphans, rep->orphans_deleted, rep->unmanaged,
                 rep->unmanaged_released, rep->foreign_released);
    return 0;
}

int core_reconcile(struct core *k, struct reconcile_report *rep)
{
    return reconcile_pass(k, rep, true);
}
