/* migrate: one VM moved off a node to another node of its cluster, as a
 * durable job (kind "migrate", queued by a node drain: drain.c) in the VM's
 * own queue, so that no other job of the VM, and no second move, runs
 * beside it.
 *
 * The target is chosen like a creation's node: up, not cordoned, in the
 * same cluster, with room, the room reserved in the store under this job
 * (store_reserve_capacity with the node's room: no over-commit, whatever
 * other proxd share the database), most free memory first; each node passed
 * over is in the job's attempts with why. What is reserved on the target
 * follows the VM's own disks (its config's volumes, vmdisks.c), not the
 * storage the source is configured with: a volume on a storage the source
 * marks shared stays where it is and reserves nothing; every other one
 * (local) is copied to the target's configured storage and reserved there
 * (against the pool when that storage is shared). Running (and paused) VMs
 * migrate online, stopped ones offline; with local disks, with-local-disks
 * and targetstorage (the target's storage) are asked, as PVE needs for a
 * running VM's local disks (an offline migration copies them anyway, to
 * targetstorage); an HA-managed VM's migration is asked of the HA manager
 * by PVE itself (a hamigrate task), and the job waits until the VM shows up
 * on the target: [proxd] ha_wait for the HA manager to act (its LRM's
 * qmigrate task on the source), then for as long as that task runs, up to
 * a migration's own deadline (wait_ha_move).
 *
 * Steps are checkpointed before each call: "migrate" with the target in the
 * job's node, then the UPID. A job resumed after a crash waits on its UPID;
 * one whose call may or may not have been sent waits for the VM's lock to
 * clear and reads where the VM is before anything else, so a migration is
 * never started twice at once. The record's node follows through
 * ctl_locate (the path every VM job takes when a VM is not where its record
 * says). After a move the reservation is settled (store_settle_capacity):
 * it keeps counting until an inventory that shows the VM on the target. */
#include "common/log.h"
#include "common/util.h"
#include "core/control_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)
#define STEP_DEADLINE_MS (600 * 1000L)
#define LOCK_WAIT_MS (600 * 1000L)

static const char *req_str(struct cctx *c, const char *key)
{
    const char *s = json_string_value(json_object_get(c->j->request, key));
    return s ? s : "";
}

static void attempt(struct cctx *c, const char *node, const char *why)
{
    if (!c->j->attempts)
        c->j->attempts = json_array();
    json_array_append_new(c->j->attempts, json_pack("{s:s,s:s,s:I}", "node", node, "error", why,
                                                    "at", (json_int_t)wall_ms()));
}

static void give_up(struct cctx *c, const char *fmt, const char *a, const char *b);

/* Where the VM's disks are (read from its config and the source's
 * storages): 0, or -1 with the job failed. */
static int placement(struct cctx *c, const char *from, struct disk_placement *dp)
{
    struct pve_vm_config cfg;
    struct pve_error e = {0};
    int rc = ctl_read_config(c, &cfg, &e);
    if (rc == 0) {
        rc = core_disk_placement(c->pc, from, c->v.vmid, &cfg, dp, &e);
        pve_vm_config_release(&cfg);
    }
    if (rc && !core_stopping(c->k))
        give_up(c, "VM %d stays: where its disks are cannot be read on %s: %s", from, e.message);
    return rc ? -1 : 0;
}

/* "20.0 GiB of local disks to local-lvm, 10.0 GiB stay on shared storage" */
static void placement_text(const struct disk_placement *dp, const char *to, char *out, size_t len)
{
    int n = 0;
    out[0] = '\0';
    if (dp->nlocal)
        n = snprintf(out, len, "%.1f GiB of local disks to %s", (double)dp->local / GiB, to);
    if (dp->nshared && n >= 0 && (size_t)n < len)
        snprintf(out + n, len - (size_t)n, "%s%.1f GiB stay on shared storage", n ? ", " : "",
                 (double)dp->shared / GiB);
    if (!out[0])
        snprintf(out, len, "no disks");
}

/* Reserve room for the VM on `cn` if it can take it: its memory, and the
 * bytes of its local disks (those on shared storages stay); why when not. */
static bool reserve_on(struct cctx *c, const struct cfg_node *cn, int64_t disk, char *why,
                       size_t len)
{
    const struct proxd_config *cfg = c->k->cfg;
    struct node_cordon nc;
    if (core_node_cordon_get(c->k, cn->name, &nc) != 0) { /* unknown is not "no" */
        snprintf(why, len, "whether it is cordoned cannot be read");
        return false;
    }
    if (nc.cordoned) {
        snprintf(why, len, "cordoned by %s", nc.by);
        return false;
    }
    struct node_view v;
    if (fleet_node_view(c->k->fl, cn->name, &v) || !v.up) {
        snprintf(why, len, "down: %.200s", v.last_error[0] ? v.last_error : "not reachable");
        return false;
    }
    struct cap_room room = {.mem = v.mem_total - v.mem_used - cfg->memory_margin_mb * MiB,
                            .disk = v.st_avail - cfg->disk_margin_gb * GiB,
                            .seen_since = v.seen_since,
                            .pool = v.pool};
    struct store_error se;
    int rc = store_reserve_capacity(c->k->st, c->j->id, cn->name, c->v.memory_mb * MiB, disk, &room,
                                    &se);
    if (rc)
        snprintf(why, len, "%.250s", se.message);
    return rc == 0;
}

struct cand {
    const struct cfg_node *cn;
    int64_t free_mem;
};

static int by_free_mem(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return x->free_mem < y->free_mem ? 1 : x->free_mem > y->free_mem ? -1 : 0;
}

/* The other nodes of the source's cluster, most free memory (after
 * reservations) first; the first that takes the reservation. */
static const struct cfg_node *pick_target(struct cctx *c, const struct cfg_node *src,
                                          const struct disk_placement *dp)
{
    const struct proxd_config *cfg = c->k->cfg;
    struct cand cands[CFG_MAX_NODES];
    int n = 0;
    for (int i = 0; i < cfg->nnodes; i++) {
        const struct cfg_node *cn = &cfg->nodes[i];
        if (cn == src || strcmp(cn->cluster, src->cluster) != 0)
            continue;
        struct node_view v;
        int64_t rmem = 0, rdisk = 0;
        memset(&v, 0, sizeof v);
        fleet_node_view(c->k->fl, cn->name, &v);
        store_reserved_on(c->k->st, cn->name, NULL, c->j->id, v.seen_since, &rmem, &rdisk, NULL);
        cands[n++] = (struct cand){cn, v.mem_total - v.mem_used - rmem};
    }
    qsort(cands, (size_t)n, sizeof *cands, by_free_mem);
    char why[300];
    for (int i = 0; i < n; i++) {
        if (reserve_on(c, cands[i].cn, dp->local, why, sizeof why))
            return cands[i].cn;
        attempt(c, cands[i].cn->name, why);
    }
    return NULL;
}

/* The nodes pick_target passed over and why, "sv2: ...; sv3: ...". */
static void passed_over(struct cctx *c, char *out, size_t len)
{
    size_t n = 0, i;
    json_t *a;
    out[0] = '\0';
    json_array_foreach(c->j->attempts, i, a)
    {
        int w = snprintf(out + n, len - n, "%s%s: %s", n ? "; " : "",
                         json_string_value(json_object_get(a, "node")),
                         json_string_value(json_object_get(a, "error")));
        if (w < 0 || (size_t)w >= len - n)
            break;
        n += (size_t)w;
    }
    if (!out[0])
        snprintf(out, len, "it has no other node");
}

/* The VM is off the source: its record names its node (ctl_locate moved
 * it) and power; the reservation counts on until the inventory shows it. */
static void finish_moved(struct cctx *c, const struct pve_vm_status *st, const char *from)
{
    snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(st));
    ctl_save_vm(c);
    store_settle_capacity(c->k->st, c->j->id, NULL);
    fleet_vm_added(c->k->fl, c->v.vmid, c->v.node);
    snprintf(c->j->node, sizeof c->j->node, "%s", c->v.node);
    /* vm.moved: logged by the store with the record write that changed its
     * node (ctl_locate's ctl_save_vm) */
    ctl_job_done(c, "VM %d moved from %s to %s (%s)", c->v.vmid, from, c->v.node, c->v.power);
}

static void give_up(struct cctx *c, const char *fmt, const char *a, const char *b)
{
    store_release_capacity(c->k->st, c->j->id, NULL);
    ctl_job_fail(c, fmt, c->v.vmid, a, b);
}

/* Where is the VM now? 1: still on `from` (st filled), 0: it left (the
 * job ended: moved), -1: the job ended otherwise or the core stops. */
static int where_now(struct cctx *c, const char *from, struct pve_vm_status *st)
{
    struct pve_error e = {0};
    int rc = ctl_locate(c, st, &e);
    if (rc == 0 && strcmp(c->v.node, from) != 0) {
        finish_moved(c, st, from);
        return 0;
    }
    if (rc == 0)
        return 1;
    if (core_stopping(c->k))
        return -1;
    store_release_capacity(c->k->st, c->j->id, NULL);
    if (rc == PVE_E_NOTFOUND)
        ctl_job_fail(c, "VM %d is on no node: %s", c->v.vmid, e.message);
    else
        ctl_job_fail(c, "cannot find VM %d: %s", c->v.vmid, e.message);
    return -1;
}

/* A migration of the VM may be under way (a call whose answer was lost,
 * or sent before a crash): it holds the VM's lock until it ends, and then
 * the VM is on the target. So: where is it, and is it locked, until it is
 * elsewhere (moved: 0), unlocked on the source (1: not moved, st filled),
 * or the job ends otherwise (-1). (Not ctl_wait_unlocked: a VM gone from
 * the source has moved, not vanished.) */
static int after_lock(struct cctx *c, const char *from, struct pve_vm_status *st)
{
    int64_t end = mono_ms() + LOCK_WAIT_MS;
    for (;;) {
        int w = where_now(c, from, st);
        if (w <= 0)
            return w;
        struct pve_vm_config cfg;
        struct pve_error e = {0};
        int rc = ctl_read_config(c, &cfg, &e);
        if (rc == 0) {
            bool locked = cfg.lock[0] != '\0';
            pve_vm_config_release(&cfg);
            if (!locked)
                return 1;
        }
        if (core_stopping(c->k))
            return -1;
        if (mono_ms() > end) {
            give_up(c, "VM %d stays: it is still locked on %s%s", from,
                    " after waiting for a migration under way");
            return -1;
        }
        core_nap(c->k, 500);
    }
}

/* How many times a migration is asked for while its answers are lost. */
#define MIGRATE_SENDS 3

/* Ask for the migration. A request whose answer is lost (a timeout, a
 * closed connection) with no task found may still be served: one queued
 * in a busy pvedaemon runs after its client looked. So after a pause the
 * VM is looked at (after_lock): moved, the job ends there; locked, it is
 * waited for; unlocked on the source, the request is sent again (a late
 * copy then finds the VM locked or gone and does nothing). A request sent
 * again that is refused for a lock, or because the VM is no longer on the
 * source, met such a copy's migration: looked at the same way. Returns 0
 * (upid filled), 1 when refused (e says why), -1 when the job ended or
 * the core stops (the job resumes at its step). */
static int send_migrate(struct cctx *c, const char *from, const char *target,
                        struct pve_migrate_opts *mo, char upid[PVE_UPID_MAX],
                        struct pve_vm_status *st, struct pve_error *e)
{
    for (int n = 1;; n++) {
        int rc = pve_vm_migrate(c->pc, from, c->v.vmid, target, mo, upid, e);
        if (rc == 0)
            return 0;
        bool lost = rc == PVE_E_NETWORK || rc == PVE_E_TIMEOUT;
        /* sent again: locked or gone from the source by an earlier copy */
        bool again = n > 1 && (rc == PVE_E_LOCK || rc == PVE_E_NOTFOUND);
        if (!lost && !again)
            return 1;
        if (core_stopping(c->k))
            return -1; /* resumed at its step: looked at first */
        core_nap(c->k, 500L << (n - 1));
        if (after_lock(c, from, st) <= 0)
            return -1;
        if (n == MIGRATE_SENDS)
            return 1;
        mo->online = strcmp(st->status, "running") == 0;
        log_warn("job", "job=%s vmid=%d migration to %s: %s; not under way, asking again", c->j->id,
                 c->v.vmid, target, e->message);
    }
}

/* The LRM's own migration of the VM: a qmigrate task on the source,
 * started at or after our hamigrate request. */
enum lrm_seen { LRM_NONE, LRM_RUNNING, LRM_ENDED, LRM_UNKNOWN };

static enum lrm_seen lrm_task(struct cctx *c, const char *from, int64_t since)
{
    struct pve_task *t = NULL;
    size_t n = 0;
    struct pve_error e = {0};
    enum lrm_seen seen = LRM_UNKNOWN;
    if (c->pc && pve_task_list(c->pc, from, c->v.vmid, "qmigrate", 20, &t, &n, &e) == 0) {
        seen = LRM_NONE;
        for (size_t i = 0; i < n; i++)
            if (t[i].starttime >= since)
                seen = t[i].running ? LRM_RUNNING : seen == LRM_RUNNING ? seen : LRM_ENDED;
    }
    free(t);
    return seen;
}

/* How wait_ha_move ended: the VM is to be looked for (on the target, or
 * the LRM's migration ended), the HA manager did not act within ha_wait,
 * or the LRM's migration still runs at the migration's deadline. */
enum ha_wait { HA_LOOK, HA_NOT_ACTING, HA_STILL_RUNNING, HA_STOPPING };

/* An HA migration's task only asks the HA manager; its LRM then runs the
 * migration on the source (a qmigrate task as root@pam). The HA manager is
 * given [proxd] ha_wait to act: to start that task or to have moved the VM.
 * While the task is seen running the wait goes on, up to the deadline of a
 * migration's own task (STEP_DEADLINE_MS from when it was first seen, as
 * ctl_wait_task waits for a qmigrate asked directly): a large guest's live
 * migration takes longer than any ha_wait. Ends when the inventory shows
 * the VM on the target or the task ended (HA_LOOK: where_now tells). */
static enum ha_wait wait_ha_move(struct cctx *c, const char *from, const char *target)
{
    struct pve_task ours;
    int64_t since = pve_upid_parse(c->j->upid, &ours) == 0 ? ours.starttime : 0;
    int64_t end = mono_ms() + (int64_t)c->k->cfg->ha_wait_s * 1000;
    bool running = false; /* the LRM's task was seen running */
    /* each look reads the world's inventory and the source's tasks: 300 ms
     * apart at first (a short migration's end is seen soon), doubling to
     * 2 s (a live migration of minutes is not read 400 times a minute) */
    long nap = 300;
    for (;;) {
        if (core_stopping(c->k))
            return HA_STOPPING;
        char node[64];
        fleet_refresh(c->k->fl, true);
        if (fleet_vm_node(c->k->fl, c->v.vmid, target, node) == 0 && strcmp(node, target) == 0)
            return HA_LOOK;
        enum lrm_seen seen = lrm_task(c, from, since);
        if (seen == LRM_ENDED) {
            fleet_refresh(c->k->fl, true); /* it may have moved just now: where_now tells */
            return HA_LOOK;
        }
        if (seen == LRM_RUNNING && !running) {
            running = true;
            end = mono_ms() + STEP_DEADLINE_MS;
            log_info("job", "job=%s vmid=%d the HA manager migrates it: qmigrate runs on %s",
                     c->j->id, c->v.vmid, from);
        }
        if (mono_ms() >= end)
            return running ? HA_STILL_RUNNING : HA_NOT_ACTING;
        core_nap(c->k, nap);
        nap = nap * 2 > 2000 ? 2000 : nap * 2;
    }
}

static void wait_and_finish(struct cctx *c, const char *from, bool ha)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    char target[64];
    snprintf(target, sizeof target, "%s", c->j->node);
    int rc = ctl_wait_task(c, c->j->upid, &e);
    if (rc == -1)
        return; /* stopping: resumed on the UPID */
    enum ha_wait hw = rc == 0 && ha ? wait_ha_move(c, from, target) : HA_LOOK;
    if (hw == HA_STOPPING || core_stopping(c->k))
        return;
    /* a task that failed may have met another migration of the VM (a late
     * copy of a request sent again took its lock first): followed to its
     * end; so is the HA manager's migration still running at its deadline */
    int w = rc || hw == HA_STILL_RUNNING ? after_lock(c, from, &st) : where_now(c, from, &st);
    if (w <= 0)
        return;
    char why[sizeof e.message];
    if (rc)
        snprintf(why, sizeof why, "%s", e.message);
    else if (hw == HA_NOT_ACTING) /* the request stays queued in the HA manager */
        snprintf(why, sizeof why,
                 "the HA manager did not act on it in %d s (HA state '%.32s'; no qmigrate task on "
                 "%.64s); see ha-manager status",
                 c->k->cfg->ha_wait_s, st.ha_state[0] ? st.ha_state : "?", from);
    else if (hw == HA_STILL_RUNNING)
        snprintf(why, sizeof why, "the HA manager's qmigrate task on %.64s still ran after %ld s",
                 from, STEP_DEADLINE_MS / 1000);
    else if (ha) /* the LRM's own migration: online, without local disks */
        snprintf(why, sizeof why,
                 "the HA manager's migration did not move it (its qmigrate task on %.64s says "
                 "why: local disks cannot move that way)",
                 from);
    else
        snprintf(why, sizeof why, "the task ended but the VM did not move");
    attempt(c, target, why);
    give_up(c, "VM %d stays: migration to %s failed: %s", target, why);
}

void migrate_run(struct cctx *c)
{
    struct core *k = c->k;
    struct job_rec *j = c->j;
    char from[64];
    snprintf(from, sizeof from, "%s", req_str(c, "from"));
    bool resumed = strcmp(j->step, "migrate") == 0;
    struct pve_vm_status st;
    if (resumed && j->upid[0]) {
        c->pc = fleet_client(k->fl, from);
        if (c->pc) {
            wait_and_finish(c, from, strstr(j->upid, ":hamigrate:") != NULL);
            return;
        }
    }
    int w = resumed ? after_lock(c, from, &st) : where_now(c, from, &st);
    if (w <= 0)
        return;
    const struct cfg_node *src = config_node(k->cfg, from);
    if (!src || !src->cluster[0]) {
        give_up(c, "VM %d stays: %s %s has no other node to move to",
                src ? "standalone host" : "unconfigured node", from);
        return;
    }
    struct disk_placement dp;
    if (placement(c, from, &dp))
        return;
    if (dp.linked[0]) { /* PVE refuses it at its scan, whatever the target */
        give_up(c,
                "VM %d stays: its disk %.200s is a linked clone on local storage of %s, which "
                "Proxmox does not migrate",
                dp.linked, from);
        return;
    }
    const struct cfg_node *tn = pick_target(c, src, &dp);
    if (!tn) {
        char why[700];
        passed_over(c, why, sizeof why);
        give_up(c, "VM %d stays: no node of cluster %s can take it: %s", src->cluster, why);
        return;
    }
    bool online = strcmp(st.status, "running") == 0;
    snprintf(j->node, sizeof j->node, "%s", tn->name);
    j->upid[0] = '\0';
    ctl_save_vm(c); /* the record names this job: the reconciler leaves it to us */
    char disks[160];
    placement_text(&dp, tn->storage, disks, sizeof disks);
    job_checkpoint(k, j, "migrate", 20, "moving VM %d from %s to %s (%s; %s)", c->v.vmid, from,
                   tn->name, online ? "online" : "offline", disks);
    /* local disks go to the target's storage; volumes on shared storages
     * stay where they are whatever is asked (PVE maps local ones only) */
    if (ctl_cancelled(c, "the VM stays, nothing was sent to Proxmox"))
        return;
    struct pve_migrate_opts mo = {.online = online,
                                  .with_local_disks = dp.nlocal > 0,
                                  .targetstorage = dp.nlocal > 0 ? tn->storage : NULL};
    char upid[PVE_UPID_MAX];
    struct pve_error e = {0};
    int rc = send_migrate(c, from, tn->name, &mo, upid, &st, &e);
    if (rc < 0)
        return;
    if (rc) {
        attempt(c, tn->name, e.message);
        give_up(c, "VM %d stays: migration to %s refused: %s", tn->name, e.message);
        return;
    }
    snprintf(j->upid, sizeof j->upid, "%s", upid);
    job_checkpoint(k, j, "migrate", 40, "task %s", upid);
    wait_and_finish(c, from, strstr(upid, ":hamigrate:") != NULL);
}
