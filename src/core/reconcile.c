/* reconcile: keep the database true to Proxmox.
 *
 * At start and every reconcile_interval, with a freshly refreshed inventory:
 *  - VMs moved by HA (or by hand) get their new node;
 *  - power states, cores, memory and disk sizes changed outside proxd are
 *    taken over;
 *  - VMs deleted outside proxd are marked "lost" (only when the world that
 *    held them answered this round: an unreachable node is not a deletion);
 *  - records stuck in "creating" or "deleting" with no job left to finish
 *    them are driven to a final state;
 *  - VMs that carry proxd's tag (or its creation marker) but have no record
 *    are reported as orphans, and deleted only when delete_orphans is set.
 * Jobs whose runner died are not handled here: their expired lease makes
 * the workers claim and resume them. VMs without proxd's tag or marker are
 * never touched. Every repair is logged. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)

static int cmp_vmid(const void *a, const void *b)
{
    int x = ((const struct fleet_vm *)a)->vmid, y = ((const struct fleet_vm *)b)->vmid;
    return (x > y) - (x < y);
}

/* In the inventory sorted by VMID (one binary search per record: a pass
 * over 10,000 records must not compare them with 10,000 VMs each). */
static const struct fleet_vm *find_vm(const struct fleet_vm *vms, size_t n, int vmid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vms[mid].vmid < vmid)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n && vms[lo].vmid == vmid; lo++)
        if (!vms[lo].tmpl)
            return &vms[lo];
    return NULL;
}

static const char *power_of(const char *status)
{
    return strcmp(status, "running") == 0 ? "running" : "stopped";
}

/* A job is still going to finish this record. (One that finished after we
 * read the record has changed it: save_if_unchanged then skips the repair.) */
static bool job_alive(struct core *k, const char *job, char kind[16])
{
    struct job_rec j;
    kind[0] = '\0';
    if (!job[0] || store_job_get(k->st, job, &j, NULL))
        return false;
    bool alive = j.state == JOB_QUEUED || j.state == JOB_RUNNING;
    snprintf(kind, 16, "%s", j.kind);
    job_rec_release(&j);
    return alive;
}

/* The inventory says "running" for a paused VM too: only the VM's own
 * status (qmpstatus) tells. It is read for the records where a pause is in
 * question (recorded paused, or last touched by a pause or resume job),
 * not for every running VM. */
static const char *running_or_paused(struct core *k, const struct vm_rec *v,
                                     const struct fleet_vm *fv, const char *last_kind)
{
    if (strcmp(v->power, "paused") != 0 && strcmp(last_kind, "pause") != 0 &&
        strcmp(last_kind, "resume") != 0)
        return NULL;
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_vm_status st;
    struct pve_error e;
    if (!pc || pve_vm_status(pc, fv->node, fv->vmid, &st, &e) || strcmp(st.status, "running"))
        return NULL;
    return strcmp(st.qmpstatus, "paused") == 0 ? "paused" : "running";
}

/* Write a repaired record only if nobody changed it since we read it: jobs
 * run concurrently with the reconciler and their writes win. */
static bool save_if_unchanged(struct core *k, struct vm_rec *v, int64_t read_at,
                              enum vm_state read_state)
{
    struct vm_rec now;
    if (store_vm_get_id(k->st, v->id, &now, NULL))
        return false;
    bool same = now.updated_at == read_at && now.state == read_state;
    vm_rec_release(&now);
    if (!same) {
        log_debug("reconcile", "vmid=%d changed meanwhile; repair skipped this round", v->vmid);
        return false;
    }
    return store_vm_update(k->st, v, NULL) == 0;
}

static void take_over(struct core *k, struct vm_rec *v, const struct fleet_vm *fv,
                      const char *last_kind, struct reconcile_report *rep)
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
    /* a pause is not visible in the inventory: the VM's status tells, when
     * it can be read (else "paused" is kept while it runs) */
    const char *p = power_of(fv->status);
    const char *rp = strcmp(p, "running") == 0 ? running_or_paused(k, v, fv, last_kind) : NULL;
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
    int64_t mem = fv->maxmem / MiB, disk = fv->maxdisk / GiB;
    bool sized = (fv->maxcpu > 0 && fv->maxcpu != v->cores && !v->pending) ||
                 (mem > 0 && mem != v->memory_mb && !v->pending) || (disk > v->disk_gb);
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
        rep->resized++;
        changed = true;
    }
    if (changed)
        save_if_unchanged(k, v, read_at, read_state);
}

static void check_record(struct core *k, struct vm_rec *v, const struct fleet_vm *vms, size_t n,
                         int64_t t0, struct reconcile_report *rep)
{
    const struct fleet_vm *fv = find_vm(vms, n, v->vmid);
    char last_kind[16];
    bool busy = job_alive(k, v->job, last_kind);
    int64_t read_at = v->updated_at;
    enum vm_state read_state = v->state;
    if (v->state == VMS_CREATING || v->state == VMS_DELETING) {
        if (busy)
            return;
        /* nobody will finish it: decide from what Proxmox shows */
        enum vm_state to = v->state == VMS_CREATING ? (fv ? VMS_ENABLED : VMS_FAILED)
                                                    : (fv ? VMS_ENABLED : VMS_DELETED);
        log_warn("reconcile", "vmid=%d stuck in %s with no job: now %s", v->vmid,
                 vm_state_name(v->state), vm_state_name(to));
        if (to == VMS_FAILED)
            snprintf(v->error, sizeof v->error, "its creation job ended without a result");
        v->state = to;
        if (fv)
            snprintf(v->node, sizeof v->node, "%s", fv->node);
        if (!save_if_unchanged(k, v, read_at, read_state))
            return;
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
        take_over(k, v, fv, last_kind, rep);
        return;
    }
    if (!fleet_node_fresh(k->fl, v->node, t0))
        return; /* its node did not answer: not a deletion */
    log_warn("reconcile", "vmid=%d node=%s is gone: deleted outside proxd, marked lost", v->vmid,
             v->node);
    v->state = VMS_LOST;
    snprintf(v->power, sizeof v->power, "unknown");
    if (!save_if_unchanged(k, v, read_at, read_state))
        return;
    store_vmid_release(k->st, v->vmid, k->cfg->quarantine_s * 1000, NULL);
    rep->lost++;
}

/* Is this VM one of ours (tag, or the creation marker of a clone that was
 * never configured)? Reads the config only for candidates. */
static bool is_ours(struct core *k, const struct fleet_vm *fv)
{
    if (core_has_tag(fv->tags, k->cfg->tag))
        return true;
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_vm_config cfg;
    struct pve_error e;
    if (!pc || pve_vm_config_get(pc, fv->node, fv->vmid, false, &cfg, &e))
        return false;
    bool ours = strncmp(cfg.description, "proxd job ", 10) == 0;
    pve_vm_config_release(&cfg);
    return ours;
}

static bool in_our_ranges(struct core *k, int vmid)
{
    const struct proxd_config *c = k->cfg;
    for (int i = 0; i < c->nos; i++)
        if (vmid >= c->os[i].range_lo && vmid <= c->os[i].range_hi)
            return true;
    return c->fallback_lo && vmid >= c->fallback_lo && vmid <= c->fallback_hi;
}

static void delete_orphan(struct core *k, const struct fleet_vm *fv)
{
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct pve_error e;
    char upid[PVE_UPID_MAX] = "";
    struct pve_task t;
    if (strcmp(fv->status, "running") == 0 &&
        pve_vm_power(pc, fv->node, fv->vmid, PVE_POWER_STOP, NULL, upid, &e) == 0)
        pve_task_wait(pc, upid, 120000, NULL, NULL, &t, &e);
    struct pve_delete_opts d = {.purge = true, .destroy_unreferenced = true};
    if (pve_vm_delete(pc, fv->node, fv->vmid, &d, upid, &e) == 0 &&
        pve_task_wait(pc, upid, 300000, NULL, NULL, &t, &e) == 0) {
        log_warn("reconcile", "vmid=%d node=%s orphan deleted (delete_orphans = yes)", fv->vmid,
                 fv->node);
        fleet_vm_removed(k->fl, fv->vmid);
    } else {
        log_error("reconcile", "vmid=%d node=%s orphan could not be deleted: %s", fv->vmid,
                  fv->node, e.message);
    }
}

static void check_orphans(struct core *k, const struct fleet_vm *vms, size_t n,
                          struct reconcile_report *rep)
{
    for (size_t i = 0; i < n; i++) {
        const struct fleet_vm *fv = &vms[i];
        if (fv->tmpl || !in_our_ranges(k, fv->vmid))
            continue;
        struct vm_rec v;
        if (store_vm_get(k->st, fv->vmid, &v, NULL) == 0) {
            vm_rec_release(&v);
            continue;
        }
        if (!is_ours(k, fv))
            continue;
        /* a creation may be about to record it; its job owns the VMID */
        if (strcmp(fv->lock, "clone") == 0)
            continue;
        rep->orphans++;
        log_warn("reconcile", "vmid=%d node=%s carries proxd's tag but has no record: orphan",
                 fv->vmid, fv->node);
        if (k->cfg->delete_orphans) {
            delete_orphan(k, fv);
            rep->orphans_deleted++;
        }
    }
}

int core_reconcile(struct core *k, struct reconcile_report *rep)
{
    memset(rep, 0, sizeof *rep);
    int64_t t0 = wall_ms();
    fleet_refresh(k->fl, true);
    struct fleet_vm *vms;
    size_t n;
    fleet_vms(k->fl, &vms, &n);
    qsort(vms, n, sizeof *vms, cmp_vmid);
    struct vm_filter f = {.state = -1, .limit = 500};
    for (;;) {
        struct vm_rec *recs = NULL;
        size_t m = 0;
        struct store_error se;
        if (store_vm_list(k->st, &f, &recs, &m, &se)) {
            log_error("reconcile", "cannot list records: %s", se.message);
            free(vms);
            return -1;
        }
        for (size_t i = 0; i < m; i++) {
            check_record(k, &recs[i], vms, n, t0, rep);
            f.after_id = recs[i].id;
            vm_rec_release(&recs[i]);
        }
        free(recs);
        if (m == 0)
            break;
    }
    check_orphans(k, vms, n, rep);
    free(vms);
    if (rep->moved || rep->power || rep->resized || rep->lost || rep->stuck || rep->orphans)
        log_info("reconcile",
                 "done: %d moved, %d power, %d resized, %d lost, %d stuck, %d orphans (%d "
                 "deleted)",
                 rep->moved, rep->power, rep->resized, rep->lost, rep->stuck, rep->orphans,
                 rep->orphans_deleted);
    return 0;
}
