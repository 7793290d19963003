/* create: the all-or-nothing creation of one VM, as a durable state machine.
 *
 *   queued/place -> clone -> wait_clone -> configure -> resize -> start
 *     -> verify -> done
 *   any failure after the clone request -> cleanup -> place (next node)
 *   no node left -> failed (reasons per node, nothing left, VMID released)
 *
 * The step (and the node) is written before the Proxmox call it leads to,
 * the UPID right after it comes back. A job resumed after a crash looks at
 * Proxmox before acting: a clone that may have been requested is found by
 * its marker (the description "proxd job <id>") or by its task, so one
 * request never makes two VMs. */
#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/create_net.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)
#define CLONE_DEADLINE_MS (3600 * 1000L)
#define STEP_DEADLINE_MS (600 * 1000L)
/* A call that fails transiently (a 500, a lock timeout) is made again this
 * many times in all, 250 ms, 500 ms, 1 s apart, before the attempt gives
 * up; a network failure is not (libpve retried it already: the node does
 * not answer, and the creation should fail over now). */
#define TRIES 4
#define UNLOCK_WAIT_MS (30 * 1000L) /* cleanup's wait for a VM's lock to go */
#define CLONE_STOP_MS (60 * 1000L)  /* a stopped clone's wait for its worker's end */
#define PLACE_DB_WAIT_MS 1000L      /* a placement's pause while the store does not answer */

struct ctx {
    struct core *k;
    struct job_rec *j;
    pve_client *pc;
    const struct cfg_node *cn;
    char os[32], name[64], owner[64];
    int cores;
    int64_t memory_mb, disk_gb;
    const char *ssh_keys; /* borrowed from j->request */
    bool resumed;         /* the job was claimed mid-way: look before acting */
    bool clone_lost;      /* this attempt's clone request went out and its answer was lost */
    bool clone_twice;     /* this attempt sent its clone request a second time (the first's
                             answer lost, or sent before a crash) and the second started a
                             clone: the first may still be served, whatever this one does */
    /* the boot disk as the post-clone config read showed it, so that the
     * resize step needs no second read (a Proxmox call saved per creation) */
    bool have_disk;
    bool growing; /* a resize was sent and its result not seen yet */
    char disk[16];
    int64_t disk_size;
    char digest[48];      /* that read's config digest, for the configure write ("": none) */
    bool keep_vmid;       /* failing: the VMID is held by a leftover or is foreign */
    int npools;           /* the pools the VM has addresses from (the request's "ippools") */
    char cancel_step[32]; /* where the machine first saw a cancel ("": not yet) */
    bool db_out;          /* the last placement found no node but the store did not answer
                             for some: it waits for the store rather than fail the job */
    int db_waits;         /* placements in a row that waited so */
    char pools[CFG_OS_POOLS][32];
};

static bool transient(const struct pve_error *e)
{
    return e->cls == PVE_E_OTHER || e->cls == PVE_E_LOCK;
}

static void backoff(int attempt)
{
    sleep_ms(250L << (attempt < 3 ? attempt : 2));
}

/* A call of a step failed transiently (a 500, a lock's timeout): send it
 * again, TRIES in all, with backoff, before the attempt is given up. A
 * single 500 at the configure write sent the creation to its cleanup: the
 * VM made so far destroyed and cloned again on another node. Only calls
 * that are the same when made twice (a config with the same values, a
 * resize to an absolute size, a start, a read). */
static bool ride_out(struct ctx *c, int *tries, int rc, const struct pve_error *e)
{
    if (!rc || !transient(e) || ++*tries >= TRIES || core_stopping(c->k))
        return false;
    log_info("job", "job=%s vmid=%d node=%s %s; again", c->j->id, c->j->vmid, c->j->node,
             e->message);
    backoff(*tries - 1);
    return true;
}

static void marker(const struct ctx *c, char *out, size_t len)
{
    snprintf(out, len, "proxd job %s", c->j->id);
}

/* Add {"node", "error"} to the job's attempts. The error's text may end
 * inside a character (Proxmox's message cut to PVE_MSG_MAX, or here): not
 * UTF-8, json_pack refuses it, and a dropped attempt let placement take the
 * node again and again. Its stray bytes become '?'. */
static void attempt(struct ctx *c, const char *node, const char *error)
{
    char text[PVE_MSG_MAX + 128];
    snprintf(text, sizeof text, "%s", error);
    jsonw_utf8_scrub(text, strlen(text));
    /* (a node's name is the configuration's: a DNS name, ASCII) */
    json_array_append_new(c->j->attempts, json_pack("{s:s,s:s,s:I}", "node", node, "error", text,
                                                    "at", (json_int_t)wall_ms()));
}

static bool tried(struct ctx *c, const char *node)
{
    size_t i;
    json_t *a;
    json_array_foreach(c->j->attempts, i, a)
    {
        const char *n = json_string_value(json_object_get(a, "node"));
        if (n && strcmp(n, node) == 0)
            return true;
    }
    return false;
}

static bool cancel_recorded(struct ctx *c)
{
    return job_cancel_read(c->k, c->j);
}

/* Wait for a task (pve_task_wait's schedule over the whole wait); -1 when
 * the core is stopping (the job resumes later). A status read that fails
 * transiently is made again (TRIES in a row). *ended (may be NULL) tells
 * whether the task was seen to end: when not, it may still be running.
 * With `cancellable`, -3 when the job is cancelled: the wait is registered
 * with the job's id, so a cancel recorded in this process ends it at once
 * (core_waiters_cancel), and a cancel recorded before it was registered is
 * read from the store right after (none falls between the two). */
static int wait_task(struct ctx *c, const char *upid, long deadline_ms, bool cancellable,
                     bool *ended, struct pve_error *err)
{
    int64_t end = mono_ms() + deadline_ms;
    int fails = 0, rc;
    struct core_waiter w;
    core_waiter_begin(c->k, &w, upid, cancellable ? c->j->id : NULL);
    if (ended)
        *ended = false;
    if (cancellable && cancel_recorded(c)) {
        rc = -3;
        goto out;
    }
    for (;;) {
        struct pve_task t = {0};
        long left = (long)(end - mono_ms());
        struct pve_wait_opts o = core_wait_opts(c->k, &w, left > 0 ? left : 1);
        rc = pve_task_wait_opts(c->pc, upid, &o, &t, err);
        if (rc == 0 || t.exitstatus[0]) { /* it ended, well or not */
            if (ended)
                *ended = true;
            goto out;
        }
        if (core_stopping(c->k)) {
            rc = -1;
            goto out;
        }
        if (core_waiter_cancelled(&w)) {
            rc = -3;
            goto out;
        }
        if (rc == PVE_E_TIMEOUT || !transient(err) || ++fails >= TRIES || mono_ms() >= end)
            goto out;
        /* its status could not be read: again, a few times */
        log_warn("job", "job=%s task %s: status not read (%s); again", c->j->id, upid,
                 err->message);
        backoff(fails - 1);
    }
out:
    core_waiter_end(c->k, &w);
    return rc;
}

/* ---- placement ------------------------------------------------------------ */

/* Disk the clone takes on the node's storage: the request, or the
 * template's boot disk when that is larger (a clone is never shrunk), and
 * the cloud-init drive the clone gets beside it. */
static int64_t disk_need(struct ctx *c, const struct cfg_node *cn)
{
    int64_t need = c->disk_gb * GiB;
    struct fleet_vm t;
    if (fleet_vm_find(c->k->fl, cn->name, config_template(cn, c->os), &t) == 0 && t.maxdisk > need)
        need = t.maxdisk;
    return need + CORE_CLOUDINIT_BYTES;
}

/* Could `node` take this VM at all (template, health)? Fills *v, or why
 * (*db: because the store did not answer). */
static bool usable(struct ctx *c, const struct cfg_node *cn, struct node_view *v, char *why,
                   size_t len, bool *db)
{
    if (!config_template(cn, c->os)) {
        snprintf(why, len, "no %s template", c->os);
        return false;
    }
    struct node_cordon nc;
    if (core_node_cordon_get(c->k, cn->name, &nc) != 0) { /* unknown is not "no" */
        snprintf(why, len, "whether it is cordoned cannot be read now");
        *db = true;
        return false;
    }
    if (nc.cordoned) {
        snprintf(why, len, "cordoned by %.60s", nc.by);
        return false;
    }
    if (fleet_node_view(c->k->fl, cn->name, v)) {
        snprintf(why, len, "not known to the fleet");
        return false;
    }
    if (!v->up) {
        snprintf(why, len, "down: %.200s", v->last_error[0] ? v->last_error : "not reachable");
        return false;
    }
    return true;
}

/* Reserve room for this VM on `node` if it fits: the check against what
 * every other in-flight creation (of any proxd sharing the database) holds
 * and the reservation are one store transaction. Fills why when not (*db:
 * because the store did not answer). */
static bool reserve_on(struct ctx *c, const struct cfg_node *cn, char *why, size_t len, bool *db)
{
    struct node_view v;
    const struct proxd_config *cfg = c->k->cfg;
    *db = false;
    if (!usable(c, cn, &v, why, len, db))
        return false;
    /* on a shared storage the room is the pool's, and so is the count of
     * what other creations (through any of its nodes) hold */
    struct cap_room room = {.mem = v.mem_total - v.mem_used - cfg->memory_margin_mb * MiB,
                            .disk = v.st_avail - cfg->disk_margin_gb * GiB,
                            .seen_since = v.seen_since,
                            .pool = v.pool};
    struct store_error se;
    int rc = store_reserve_capacity(c->k->st, c->j->id, cn->name, c->memory_mb * MiB,
                                    disk_need(c, cn), &room, &se);
    const char *detail = strchr(se.message, ':');
    bool disk_full = rc == STORE_E_FULL && strncmp(se.message, "not enough disk", 15) == 0;
    if (disk_full && detail && v.pool[0])
        snprintf(why, len, "not enough space on shared storage %s of cluster %s%.180s", cn->storage,
                 cn->cluster, detail);
    else if (disk_full && detail)
        snprintf(why, len, "not enough space on %s%.200s", cn->storage, detail);
    else if (rc)
        snprintf(why, len, "%.250s", se.message);
    *db = rc == STORE_E_DB;
    return rc == 0;
}

/* Bytes a clone copies on the node: the template's disk (the request's
 * size when the template is not in the inventory yet); none for a linked
 * clone (a thin volume on the template's: placement then goes by free
 * memory among nodes with no copy queued). */
static int64_t copy_bytes(struct ctx *c, const struct cfg_node *cn)
{
    if (config_clone_linked(c->k->cfg, c->os))
        return 0;
    struct fleet_vm t;
    if (fleet_vm_find(c->k->fl, cn->name, config_template(cn, c->os), &t) == 0 && t.maxdisk > 0)
        return t.maxdisk;
    return c->disk_gb * GiB;
}

/* Candidate nodes in placement order: the configuration's (ordered), or
 * by when a clone there would finish (spread; see place.h). */
static int order(struct ctx *c, int *idx)
{
    const struct proxd_config *cfg = c->k->cfg;
    int n = cfg->nnodes;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    if (cfg->placement != PLACE_SPREAD)
        return n;
    struct place_cand cand[CFG_MAX_NODES];
    for (int i = 0; i < n; i++) {
        struct node_view v;
        int64_t rmem = 0, rdisk = 0;
        fleet_node_view(c->k->fl, cfg->nodes[i].name, &v);
        store_reserved_on(c->k->st, cfg->nodes[i].name, NULL, NULL, v.seen_since, &rmem, &rdisk,
                          NULL);
        cand[i] = (struct place_cand){.node = i,
                                      .bytes = copy_bytes(c, &cfg->nodes[i]),
                                      .free_mem = v.mem_total - v.mem_used - rmem};
    }
    place_order(c->k->pl, cand, n);
    for (int i = 0; i < n; i++)
        idx[i] = cand[i].node;
    return n;
}

/* The first node in placement order that takes the VM, its room
 * reserved; the others tried are added to the attempts with why not. A
 * node the store could not answer for (its cordon, its reservation) is
 * added only when another node is chosen: when none is, c->db_out is set
 * and nothing of those is kept, so that the placement can wait for the
 * store and ask again. Failed for them, a creation placed during a
 * database outage failed at once, every node "cordon cannot be read". */
static const struct cfg_node *pick_node(struct ctx *c)
{
    int idx[CFG_MAX_NODES];
    int n = order(c, idx);
    char why[256];
    struct unread {
        const char *node;
        char why[256];
    } *unread = xcalloc((size_t)n + 1, sizeof *unread);
    int nunread = 0;
    const struct cfg_node *chosen = NULL;
    for (int i = 0; i < n && !chosen; i++) {
        const struct cfg_node *cn = &c->k->cfg->nodes[idx[i]];
        bool db = false;
        if (tried(c, cn->name))
            continue;
        /* the VM's addresses are on its pools' networks: only where they
         * all reach (so a failover keeps the addresses) */
        if (!cnet_reachable(c->k->cfg, c->pools, c->npools, cn, why, sizeof why) ||
            !reserve_on(c, cn, why, sizeof why, &db)) {
            if (!db) {
                attempt(c, cn->name, why);
                continue;
            }
            unread[nunread].node = cn->name;
            snprintf(unread[nunread++].why, sizeof unread->why, "%s", why);
            continue;
        }
        chosen = cn;
    }
    c->db_out = !chosen && nunread > 0;
    for (int i = 0; i < nunread && !c->db_out; i++)
        attempt(c, unread[i].node, unread[i].why);
    free(unread);
    return chosen;
}

/* ---- outcomes ----------------------------------------------------------------- */

static void end_failed(struct ctx *c);

/* The job ends under j->vmid: a VMID a move reserved before a kill and that
 * the resumed job never took (move_vmid) goes back, not one a leftover
 * still holds (the reconciler's). Before the final checkpoint: a kill in
 * between, and the resumed job does it again. */
static void release_others(struct ctx *c)
{
    int n = 0;
    struct store_error se;
    if (store_vmid_release_others(c->k->st, c->j->id, c->j->vmid, c->k->cfg->quarantine_s * 1000,
                                  &n, &se) != 0)
        log_warn("job", "job=%s vmid=%d its other reserved VMIDs are not released: %s", c->j->id,
                 c->j->vmid, se.message);
    else if (n)
        log_warn("job", "job=%s vmid=%d %d other VMID%s reserved to the job released", c->j->id,
                 c->j->vmid, n, n == 1 ? "" : "s");
}

static void finish_failed(struct ctx *c)
{
    struct buf b = BUF_INIT(1000);
    size_t i;
    json_t *a;
    json_array_foreach(c->j->attempts, i, a)
    {
        buf_printf(&b, "%s%s: %s", i ? "; " : "", json_string_value(json_object_get(a, "node")),
                   json_string_value(json_object_get(a, "error")));
    }
    if (b.len == 0)
        buf_adds(&b, "no node is configured for this OS");
    snprintf(c->j->error, sizeof c->j->error, "no node could create the VM: %s", buf_str(&b));
    buf_release(&b);
    end_failed(c);
}

/* The job fails with c->j->error: its room, record and VMID go back. */
static void end_failed(struct ctx *c)
{
    struct core *k = c->k;
    store_release_capacity(k->st, c->j->id, NULL);
    /* the record is failed before its VMID is given back: with quarantine 0
     * the next creation may take the VMID at once, and must not find a
     * live record under it (a kill in between: the resumed job does both) */
    struct vm_rec v;
    if (store_vm_get(k->st, c->j->vmid, &v, NULL) == 0) {
        v.state = VMS_FAILED;
        snprintf(v.error, sizeof v.error, "%s", c->j->error);
        snprintf(v.node, sizeof v.node, "%s", "");
        store_vm_update(k->st, &v, NULL);
        vm_rec_release(&v);
    }
    if (!c->keep_vmid)
        store_vmid_release(k->st, c->j->vmid, k->cfg->quarantine_s * 1000, NULL);
    release_others(c);
    c->j->state = JOB_FAILED;
    c->j->finished_at = wall_ms();
    c->j->node[0] = '\0';
    job_checkpoint(k, c->j, "failed", 100, "%s", c->j->error);
}

/* A cancel ends the creation: nothing of it is left on any node (or what
 * is, is the reconciler's, recorded as a leftover that keeps the VMID). */
static void end_cancelled(struct ctx *c, const char *what)
{
    job_cancel_error(c->j, c->cancel_step, c->j->error, sizeof c->j->error, what);
    end_failed(c);
}

static void finish_done(struct ctx *c)
{
    struct core *k = c->k;
    /* the VM's room stays held until the inventory shows the VM */
    store_settle_capacity(k->st, c->j->id, NULL);
    store_vmid_mark_used(k->st, c->j->vmid, NULL);
    struct vm_rec v;
    if (store_vm_get(k->st, c->j->vmid, &v, NULL) == 0) {
        v.state = VMS_ENABLED;
        snprintf(v.node, sizeof v.node, "%s", c->j->node);
        snprintf(v.power, sizeof v.power, "running");
        v.error[0] = '\0';
        store_vm_update(k->st, &v, NULL);
        /* the agent's confirmation follows on its own thread: the job is
         * done when the VM runs, not after the guest's boot */
        core_net_confirm(k, v.id);
        vm_rec_release(&v);
    }
    fleet_vm_added(k->fl, c->j->vmid, c->j->node);
    release_others(c);
    c->j->state = JOB_DONE;
    c->j->finished_at = wall_ms();
    job_checkpoint(k, c->j, "done", 100, "VM %d runs on %s", c->j->vmid, c->j->node);
}

/* The request goes on under a new VMID (the old one is foreign, or held by
 * a leftover): a new record, the old one closed with `record_error`, and
 * the job moved to `step` with no task. When no VMID is left the job fails,
 * keeping the old VMID out of circulation.
 *
 * Its writes are several transactions (the reservation, the new record
 * with the addresses, the old record closed, the job's checkpoint), and it
 * is made to run again after a kill between any two of them, with the job
 * still at the old VMID: the VMID the job already holds besides its own is
 * taken again (store_vmid_reserved_other), not another one (it stayed
 * reserved to the job for good), and a live record of it made by this job
 * is kept, not made a second time (its insert failed the job, or, the old
 * record closed, the request went on with no record). A resumed job goes
 * through here at once (resume_move), before anything else is done under
 * the old VMID. */
static bool move_vmid(struct ctx *c, const char *step, const char *record_error, const char *event)
{
    struct core *k = c->k;
    int old = c->j->vmid;
    int vmid = 0;
    struct store_error se;
    int rc = store_vmid_reserved_other(k->st, c->j->id, old, &vmid, &se);
    if (rc == STORE_OK) {
        log_info("job", "job=%s vmid=%d VMID %d reserved to the job before: the move takes it",
                 c->j->id, old, vmid);
    } else if (rc == STORE_E_NOTFOUND) {
        const struct cfg_os *os = config_os(k->cfg, c->os);
        struct vmid_range ranges[2] = {{os->range_lo, os->range_hi},
                                       {k->cfg->fallback_lo, k->cfg->fallback_hi}};
        size_t ntaken;
        int *taken = fleet_taken_vmids(k->fl, &ntaken);
        rc = store_vmid_reserve(k->st, ranges, k->cfg->fallback_lo ? 2 : 1, taken, ntaken, c->j->id,
                                &vmid, &se);
        free(taken);
    }
    if (rc) {
        attempt(c, c->j->node, se.message);
        c->keep_vmid = true;
        finish_failed(c);
        return false;
    }
    /* store_vm_update never changes a record's VMID: the request goes on
     * under a new record, and the old one is closed */
    struct vm_rec v, nv;
    bool have_old = store_vm_get(k->st, old, &v, NULL) == 0;
    bool have_new = false;
    if (store_vm_get(k->st, vmid, &nv, NULL) == 0) {
        /* made by this move before a kill (the old one may still be live) */
        have_new = strcmp(nv.job, c->j->id) == 0;
        vm_rec_release(&nv);
    }
    if (have_old && !have_new) {
        nv = v;
        nv.id = 0;
        nv.vmid = vmid;
        nv.pending = NULL;
        /* its addresses and network go with the request, in the insert's
         * transaction */
        if (store_vm_insert_adopt(k->st, &nv, v.id, &se) != 0) {
            vm_rec_release(&v);
            store_vmid_release(k->st, vmid, 0, NULL);
            attempt(c, c->j->node, se.message);
            c->keep_vmid = true;
            finish_failed(c);
            return false;
        }
    }
    if (have_old) {
        v.state = VMS_FAILED;
        snprintf(v.error, sizeof v.error, "%s; the request went on as %d", record_error, vmid);
        store_vm_update(k->st, &v, NULL);
        vm_rec_release(&v);
    }
    c->j->vmid = vmid;
    c->j->upid[0] = '\0';
    job_checkpoint(k, c->j, step, -1, "%s; using %d", event, vmid);
    return true;
}

/* Resumed with its VMID already given up: the job gave it up (leave() named
 * it in a leftover of the job, or reallocate() marked it foreign) and was
 * killed before, or in the middle of, the move to another (move_vmid). The
 * move is made to its end first, before anything is done under the old
 * VMID:
 *  - cut after the new VMID's reservation (the job holds one besides its
 *    own): carried on under the old VMID, the job left the other reserved
 *    for good, or a record of it, creating, with the request's addresses;
 *  - cut before it (its VMID named by a leftover of the job): a resumed
 *    cleanup that now removed the VM went on under the same VMID while the
 *    leftover still named it, and the reconciler, done with that leftover,
 *    gave the VMID back (quarantined) under the live VM's creation, or,
 *    resumed on the leftover's node past the clone, destroyed the VM the
 *    job had made there as the leftover;
 *  - cut before it (its VMID marked foreign): a resumed clone found the
 *    foreign VM gone and cloned onto a VMID the allocation table says is
 *    not proxd's (no job holds it, the VM's VMID never marked used).
 * A cancel ends the job instead, the leftover keeping its VMID (as leave()
 * does). 0: go on at j->step; -1: the job ended. */
static int resume_move(struct ctx *c)
{
    struct core *k = c->k;
    int old = c->j->vmid, other = 0;
    struct store_error se;
    /* (not readable now: go on; the job's end gives a reserved one back) */
    bool cut = store_vmid_reserved_other(k->st, c->j->id, old, &other, &se) == 0;
    struct leftover *l = NULL;
    size_t n = 0;
    bool named = false, foreign = false;
    char where[sizeof l->node] = "";
    if (store_leftover_list(k->st, &l, &n, &se) == 0) {
        for (size_t i = 0; i < n && !named; i++)
            if ((named = l[i].vmid == old && strcmp(l[i].job, c->j->id) == 0))
                snprintf(where, sizeof where, "%s", l[i].node);
    } else if (!cut) {
        log_warn("job", "job=%s vmid=%d leftovers not readable at resume (%s): going on", c->j->id,
                 old, se.message);
    }
    free(l);
    char state[16];
    if (!cut && !named)
        foreign = store_vmid_state(k->st, old, state, NULL) == 0 && strcmp(state, "foreign") == 0;
    if (!cut && !named && !foreign)
        return 0;
    /* where the move goes: after a leftover (leave), or from a cleanup, to
     * placement (the attempt's room went back, or to the leftover); after a
     * foreign VMID found by the clone or its wait (reallocate), to the
     * clone on the same node */
    bool left = named || !c->pc ||
                (strcmp(c->j->step, "clone") != 0 && strcmp(c->j->step, "wait_clone") != 0);
    char rec[128], ev[256];
    snprintf(rec, sizeof rec, "VMID %d was given up before a restart", old);
    if (cut)
        snprintf(ev, sizeof ev, "resumed in the middle of the move from VMID %d to %d", old, other);
    else
        snprintf(ev, sizeof ev, "resumed after VMID %d was given up (%s), before the move", old,
                 named ? "a partial VM left for the reconciler" : "it exists outside proxd");
    log_warn("job", "job=%s vmid=%d %s", c->j->id, old, ev);
    if (named && job_cancel_asked(c->j)) { /* the request goes no further */
        snprintf(rec, sizeof rec, "a partial VM %d on %s is left for the reconciler to remove", old,
                 where);
        c->keep_vmid = true;
        end_cancelled(c, rec);
        return -1;
    }
    if (!move_vmid(c, left ? "place" : "clone", rec, ev))
        return -1;
    c->resumed = false; /* nothing was asked under the new VMID */
    return 0;
}

/* The VMID is taken on Proxmox by something that is not ours: never use it
 * again while it exists, take another one, and carry on. */
static bool reallocate(struct ctx *c, const char *why)
{
    char rec[128], ev[700];
    store_vmid_mark_foreign(c->k->st, c->j->vmid, NULL);
    fleet_vm_added(c->k->fl, c->j->vmid, c->j->node);
    snprintf(rec, sizeof rec, "VMID %d exists outside proxd", c->j->vmid);
    snprintf(ev, sizeof ev, "VMID %d exists outside proxd (%.500s)", c->j->vmid, why);
    return move_vmid(c, "clone", rec, ev);
}

/* ---- looking at Proxmox ------------------------------------------------------ */

enum probe { PROBE_NONE, PROBE_OURS, PROBE_FOREIGN, PROBE_ERROR };

static enum probe probe_again(struct ctx *c, struct pve_vm_config *cfg, struct pve_error *e);

/* Is there a VM with our VMID on the node, and is it ours? */
static enum probe probe_vm(struct ctx *c, struct pve_vm_config *cfg, struct pve_error *err)
{
    int rc = pve_vm_config_get(c->pc, c->j->node, c->j->vmid, false, cfg, err);
    if (rc == PVE_E_NOTFOUND)
        return PROBE_NONE;
    if (rc)
        return PROBE_ERROR;
    char m[96];
    marker(c, m, sizeof m);
    /* a clone's config only has `lock: clone` at first; it is ours if our
     * clone task for it is running, which the caller checks */
    if (strstr(cfg->description, m))
        return PROBE_OURS;
    if (strcmp(cfg->lock, "clone") == 0 && !cfg->name[0])
        return PROBE_OURS;
    return PROBE_FOREIGN;
}

/* Our VM (its clone's answer lost, or sent before a crash): wait_clone
 * waits for it (job_adopt_clone). Not counted as a copy by placement: its
 * start is not known, and a rate learnt from a late start would be too
 * high. Releases cfg. */
static void adopt_clone(struct ctx *c, struct pve_vm_config *cfg, const char *what)
{
    bool cloning = strcmp(cfg->lock, "clone") == 0;
    pve_vm_config_release(cfg);
    job_adopt_clone(c->k, c->pc, c->j, c->j->node, config_template(c->cn, c->os), c->j->vmid,
                    cloning, what);
}

/* A linked clone's disk lands on its template's storage, whatever the
 * node's `storage`, where placement counted its room: said when they
 * differ, so that an operator sets the node's storage to the template's. */
static void linked_storage_check(struct ctx *c, const char *volume)
{
    size_t n = strcspn(volume, ":");
    if (!config_clone_linked(c->k->cfg, c->os) || !volume[n] ||
        (strlen(c->cn->storage) == n && strncmp(volume, c->cn->storage, n) == 0))
        return;
    log_warn("job",
             "job=%s vmid=%d node=%s: the linked clone's disk %s is on storage %.*s, not the "
             "node's storage %s, where its room was counted: set [node %s] storage to the "
             "template's",
             c->j->id, c->j->vmid, c->j->node, volume, (int)n, volume, c->cn->storage, c->cn->name);
}

/* Wait until the VM's config lock is gone (other clients see a clone's lock
 * outlive its task on busy nodes); remember the boot disk on the way. A
 * read that fails transiently is made again (TRIES in a row). */
static int wait_unlocked(struct ctx *c, long deadline_ms, struct pve_error *err)
{
    int64_t end = mono_ms() + deadline_ms;
    long pause = 50;
    int fails = 0;
    for (;;) {
        struct pve_vm_config cfg;
        int rc = pve_vm_config_get(c->pc, c->j->node, c->j->vmid, false, &cfg, err);
        if (rc && transient(err) && ++fails < TRIES && !core_stopping(c->k)) {
            backoff(fails - 1);
            continue;
        }
        if (rc)
            return rc;
        fails = 0;
        bool locked = cfg.lock[0] != '\0';
        char cfg_lock[32];
        snprintf(cfg_lock, sizeof cfg_lock, "%s", cfg.lock);
        c->have_disk = !locked;
        if (!locked)
            linked_storage_check(c, cfg.bootdisk_volume);
        snprintf(c->disk, sizeof c->disk, "%s", cfg.bootdisk[0] ? cfg.bootdisk : "scsi0");
        snprintf(c->digest, sizeof c->digest, "%s", locked ? "" : cfg.digest);
        c->disk_size = cfg.bootdisk_size;
        pve_vm_config_release(&cfg);
        if (!locked)
            return 0;
        if (mono_ms() > end || core_stopping(c->k)) {
            /* a deadline passed, not a lock timeout to try again at once */
            snprintf(err->message, sizeof err->message, "VM is still locked (%s)", cfg_lock);
            err->cls = PVE_E_TIMEOUT;
            return PVE_E_TIMEOUT;
        }
        sleep_ms(pause);
        pause = pause < 1000 ? pause * 2 : 1000;
    }
}

/* ---- steps ------------------------------------------------------------------- */

static int step_clone(struct ctx *c)
{
    struct pve_error e = {0};
    bool resent = false; /* resumed with nothing seen: a request before the crash may come */
    char m[96];
    marker(c, m, sizeof m);
    if (c->resumed) {
        /* the clone may have been requested before a crash: look first */
        struct pve_vm_config cfg;
        enum probe p = probe_vm(c, &cfg, &e);
        if (p == PROBE_OURS) {
            adopt_clone(c, &cfg, "found the clone from before");
            return 0;
        }
        if (p == PROBE_OURS || p == PROBE_FOREIGN)
            pve_vm_config_release(&cfg);
        if (p == PROBE_FOREIGN)
            return reallocate(c, "found at resume") ? 1 : -2;
        /* no config yet: the clone's worker may not have taken its locks */
        if (p == PROBE_NONE &&
            pve_find_clone_task(c->pc, c->j->node, config_template(c->cn, c->os), c->j->vmid,
                                c->j->created_at / 1000, c->j->upid)) {
            job_checkpoint(c->k, c->j, "wait_clone", 20, "found the clone task from before (%s)",
                           c->j->upid);
            return 0;
        }
        c->resumed = false;
        resent = true;
    }
    /* [os] clone = linked: a thin copy on the template's own storage (no
     * storage parameter: PVE refuses one for linked clones), seconds instead
     * of a full copy's minutes */
    bool linked = config_clone_linked(c->k->cfg, c->os);
    struct pve_clone opts = {.newid = c->j->vmid,
                             .name = c->name,
                             .description = m,
                             .storage = linked ? NULL : c->cn->storage,
                             .full = linked ? 0 : 1};
    int tpl = config_template(c->cn, c->os);
    c->clone_lost = false;
    c->clone_twice = false;
    c->have_disk = false; /* a new clone: an earlier attempt's end was not its */
    c->growing = false;
    int rc = pve_vm_clone(c->pc, c->j->node, tpl, &opts, c->j->upid, &e);
    if (rc == PVE_E_EXISTS) {
        struct pve_vm_config cfg;
        struct pve_error e2;
        enum probe p = probe_again(c, &cfg, &e2);
        if (p == PROBE_OURS) {
            adopt_clone(c, &cfg, "the clone exists already");
            return 0;
        }
        if (p == PROBE_ERROR) {
            /* whose it is is not known: the cleanup looks again and, still
             * unread, leaves it to the reconciler, which removes it if it is
             * ours and sets the VMID aside if not. Taken for a stranger's at
             * once, our own clone (one whose answer was lost) stayed until
             * the reconciler's sweep, and the VMID was set aside meanwhile */
            attempt(c, c->j->node, e2.message);
            return -1;
        }
        if (p != PROBE_NONE)
            pve_vm_config_release(&cfg);
        return reallocate(c, e.message) ? 1 : -2;
    }
    if (rc) {
        if (rc == PVE_E_NETWORK)
            fleet_node_failed(c->k->fl, c->j->node, e.message);
        attempt(c, c->j->node, e.message);
        c->clone_lost = e.maybe_sent || resent;
        return c->clone_lost ? -1 : -2; /* -1: a VM may exist, clean up */
    }
    c->clone_twice = e.earlier_pending || resent;
    if (!linked) /* a linked clone moves no data: no sample of the node's bandwidth */
        place_copy_begin(c->k->pl, c->j->id, mono_ms());
    job_checkpoint(c->k, c->j, "wait_clone", 20, "cloning template %d (%s%s)%s", tpl,
                   linked ? "linked, " : "", c->j->upid,
                   c->clone_twice ? ", a request sent again (the one before may still be served)"
                                  : "");
    return 0;
}

/* A cancel during the clone: the clone task is stopped (qemu-server's
 * clone removes the disks and config it made when its worker is
 * interrupted) and its end awaited, then the cleanup removes whatever is
 * left and ends the job. Letting a copy of minutes end only to remove it
 * would hold the cancel as long. 0: go on at j->step (cleanup; wait_clone
 * again when no cancel is recorded after all), 2: stopping. */
static int stop_clone(struct ctx *c)
{
    struct pve_error e = {0};
    char upid[PVE_UPID_MAX];
    if (!cancel_recorded(c))
        return 0; /* told, but the store did not answer: wait again (it reads it first) */
    if (!c->cancel_step[0])
        snprintf(c->cancel_step, sizeof c->cancel_step, "wait_clone");
    snprintf(upid, sizeof upid, "%s", c->j->upid);
    if (pve_task_stop(c->pc, upid, &e) != 0) /* the wait below tells whether it ended */
        log_warn("job", "job=%s vmid=%d node=%s clone task %s not stopped: %s", c->j->id,
                 c->j->vmid, c->j->node, upid, e.message);
    bool ended = false;
    int rc = wait_task(c, upid, CLONE_STOP_MS, false, &ended, &e);
    if (rc == -1)
        return 2;
    place_copy_end(c->k->pl, c->j->id, false, mono_ms());
    /* a clone not seen to end is the cleanup's to judge (it may leave it
     * to the reconciler) */
    job_checkpoint(c->k, c->j, "cleanup", -1,
                   "cancel requested by %s: clone task %s, removing VM %d from %s", c->j->cancel_by,
                   rc == 0 ? "ended before its stop"
                   : ended ? "stopped"
                           : "not seen to stop",
                   c->j->vmid, c->j->node);
    return 0;
}

static int step_wait_clone(struct ctx *c)
{
    struct pve_error e = {0};
    if (c->j->upid[0]) {
        bool ended;
        int rc = wait_task(c, c->j->upid, CLONE_DEADLINE_MS, true, &ended, &e);
        if (rc == -1)
            return 2; /* stopping */
        if (rc == -3)
            return stop_clone(c);
        place_copy_end(c->k->pl, c->j->id, rc == 0, mono_ms());
        if (rc && !ended) {
            /* the clone may still run: cleanup will not take "no config"
             * for "nothing made" (its config appears only once it runs) */
            char m[PVE_MSG_MAX + 64];
            snprintf(m, sizeof m, "clone task not seen to end: %s", e.message);
            if (e.cls == PVE_E_NETWORK)
                fleet_node_failed(c->k->fl, c->j->node, e.message);
            attempt(c, c->j->node, m);
            return -1;
        }
        if (rc) {
            attempt(c, c->j->node, e.message);
            if (strstr(e.message, "already exists") || strstr(e.message, "File exists"))
                return reallocate(c, e.message) ? 1 : -2;
            return -1;
        }
    }
    int rc = wait_unlocked(c, STEP_DEADLINE_MS, &e);
    if (rc) {
        if (e.cls == PVE_E_NETWORK)
            fleet_node_failed(c->k->fl, c->j->node, e.message);
        attempt(c, c->j->node, e.message);
        return -1;
    }
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "configure", 60, "clone finished");
    return 0;
}

/* The network the creation recorded (vm_net), as PVE strings: 1 when the
 * VM has one, 0 when not, -1 when the store cannot say (e says why). */
static int load_net(struct ctx *c, struct store_net *net, struct buf *net0, struct pve_error *e)
{
    struct vm_rec v;
    struct store_error se;
    int rc = store_vm_get(c->k->st, c->j->vmid, &v, &se);
    if (rc == STORE_OK) {
        rc = store_vm_net_get(c->k->st, v.id, net, &se);
        vm_rec_release(&v);
    }
    if (rc == STORE_E_NOTFOUND && c->npools == 0)
        return 0;
    struct ippool_mac mac;
    if (rc == STORE_OK && ippool_mac_parse(net->mac, &mac) != IPPOOL_OK) {
        snprintf(se.message, sizeof se.message, "recorded MAC '%s' is invalid", net->mac);
        rc = STORE_E_INVALID;
    }
    if (rc) {
        snprintf(e->message, sizeof e->message, "the VM's network is not readable: %.400s",
                 se.message);
        e->cls = PVE_E_OTHER;
        return -1;
    }
    ippool_fmt_net(net0, &mac, net->bridge, net->vlan);
    return 1;
}

static int step_configure(struct ctx *c)
{
    struct pve_error e = {0};
    char m[96];
    marker(c, m, sizeof m);
    struct pve_config_set s = {.cores = c->cores,
                               .sockets = 1,
                               .memory_mb = c->memory_mb,
                               .name = c->name,
                               .sshkeys = c->ssh_keys,
                               .tags = c->k->cfg->tag,
                               .description = m};
    /* the recorded strings, sent again as they are after a resume: the
     * same call twice leaves the same config */
    struct store_net net;
    struct buf net0 = BUF_INIT(256);
    int has = load_net(c, &net, &net0, &e);
    if (has < 0) {
        buf_release(&net0);
        attempt(c, c->j->node, e.message);
        return -1;
    }
    if (has) {
        s.net0 = buf_str(&net0);
        s.ipconfig0 = net.ipconfig0;
        s.nameserver = net.nameserver[0] ? net.nameserver : NULL;
        s.searchdomain = net.searchdomain[0] ? net.searchdomain : NULL;
    }
    /* with the digest of the config the clone left (read just before; when
     * resumed here, read now): a copy of this write served late, after the
     * VM's first update, is refused instead of undoing it */
    if (!c->digest[0] && wait_unlocked(c, STEP_DEADLINE_MS, &e) != 0) {
        buf_release(&net0);
        attempt(c, c->j->node, e.message);
        return -1;
    }
    s.digest = c->digest[0] ? c->digest : NULL;
    int rc, tries = 0;
    do
        rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &s, &e);
    while (!(rc && s.digest && pve_error_stale_digest(&e)) && ride_out(c, &tries, rc, &e));
    if (rc && s.digest && pve_error_stale_digest(&e)) {
        /* changed since (by another client): read it again, once */
        log_info("job", "job=%s vmid=%d the config changed since the clone (%s): read again",
                 c->j->id, c->j->vmid, e.message);
        c->digest[0] = '\0';
        if (wait_unlocked(c, STEP_DEADLINE_MS, &e) == 0) {
            s.digest = c->digest[0] ? c->digest : NULL;
            rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &s, &e);
        }
    }
    buf_release(&net0);
    if (rc) {
        attempt(c, c->j->node, e.message);
        return -1;
    }
    job_checkpoint(c->k, c->j, "resize", 70, "configured %d cores, %lld MiB", c->cores,
                   (long long)c->memory_mb);
    return 0;
}

static int step_resize(struct ctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    int rc;
    if (!c->have_disk) { /* resumed here: read it */
        rc = pve_vm_config_get(c->pc, c->j->node, c->j->vmid, false, &cfg, &e);
        if (rc) {
            attempt(c, c->j->node, e.message);
            return -1;
        }
        snprintf(c->disk, sizeof c->disk, "%s", cfg.bootdisk[0] ? cfg.bootdisk : "scsi0");
        c->disk_size = cfg.bootdisk_size;
        pve_vm_config_release(&cfg);
    }
    int64_t want = c->disk_gb * GiB, have = c->disk_size;
    char disk[16];
    snprintf(disk, sizeof disk, "%s", c->disk);
    if (have > want) { /* the template is larger: the VM keeps it, and so does its record */
        struct vm_rec v;
        if (store_vm_get(c->k->st, c->j->vmid, &v, NULL) == 0) {
            v.disk_gb = (have + GiB - 1) / GiB;
            store_vm_update(c->k->st, &v, NULL);
            vm_rec_release(&v);
        }
    }
    if (want > have) { /* grow only: a template larger than the request stays */
        char size[32];
        snprintf(size, sizeof size, "%lldG", (long long)c->disk_gb);
        c->growing = true; /* until the size is seen: a resize may land after a failure */
        int tries = 0;
        do
            rc = pve_vm_resize(c->pc, c->j->node, c->j->vmid, disk, size, c->j->upid, &e);
        while (ride_out(c, &tries, rc, &e));
        if (!rc && c->j->upid[0]) {
            job_checkpoint(c->k, c->j, NULL, -1, "growing %s to %s (%s)", disk, size, c->j->upid);
            rc = wait_task(c, c->j->upid, STEP_DEADLINE_MS, false, NULL, &e);
            if (rc == -1)
                return 2;
        }
        if (!rc) {
            rc = pve_vm_config_get(c->pc, c->j->node, c->j->vmid, false, &cfg, &e);
            if (!rc && cfg.bootdisk_size < want) {
                snprintf(e.message, sizeof e.message, "%s is %lld bytes after the resize", disk,
                         (long long)cfg.bootdisk_size);
                rc = PVE_E_OTHER;
            }
            pve_vm_config_release(&cfg);
        }
        if (rc) {
            attempt(c, c->j->node, e.message);
            return -1;
        }
    }
    c->growing = false;
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "start", 80, "disk %s is %lld GiB", disk,
                   (long long)((want > have ? want : have) + GiB - 1) / GiB);
    return 0;
}

static int step_start(struct ctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    int rc = 0;
    /* only a resumed step may find the VM started already */
    if (c->resumed && !c->j->upid[0]) {
        rc = pve_vm_status(c->pc, c->j->node, c->j->vmid, &st, &e);
        if (!rc && strcmp(st.status, "running") == 0) {
            job_checkpoint(c->k, c->j, "verify", 90, "already running");
            return 0;
        }
        /* a start sent just before the crash: wait for it, do not send another */
        struct pve_task *tasks = NULL;
        size_t n = 0;
        if (!rc && pve_task_list(c->pc, c->j->node, c->j->vmid, "qmstart", 5, &tasks, &n, &e) == 0)
            for (size_t i = 0; i < n && !c->j->upid[0]; i++)
                if (tasks[i].starttime >= c->j->created_at / 1000 - 5)
                    snprintf(c->j->upid, sizeof c->j->upid, "%s", tasks[i].upid);
        free(tasks);
    }
    int tries = 0;
    if (!rc && !c->j->upid[0])
        do
            rc = pve_vm_power(c->pc, c->j->node, c->j->vmid, PVE_POWER_START, NULL, c->j->upid, &e);
        while (ride_out(c, &tries, rc, &e));
    if (!rc) {
        job_checkpoint(c->k, c->j, NULL, -1, "starting (%s)", c->j->upid);
        rc = wait_task(c, c->j->upid, STEP_DEADLINE_MS, false, NULL, &e);
        if (rc == -1)
            return 2;
    }
    if (rc) {
        attempt(c, c->j->node, e.message);
        return -1;
    }
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "verify", 90, "started");
    return 0;
}

static int step_verify(struct ctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_status st;
    int rc, tries = 0;
    do
        rc = pve_vm_status(c->pc, c->j->node, c->j->vmid, &st, &e);
    while (ride_out(c, &tries, rc, &e));
    if (!rc && strcmp(st.status, "running") != 0) {
        snprintf(e.message, sizeof e.message, "VM is %s after start", st.status);
        rc = PVE_E_OTHER;
    }
    if (rc) {
        attempt(c, c->j->node, e.message);
        return -1;
    }
    finish_done(c);
    return 0;
}

/* ---- cleanup ----------------------------------------------------------------- */

/* Did the clone this attempt sent end? Right after the request its VM's
 * config does not exist yet, so "no config" means "nothing made" only once
 * the clone task is seen to have ended (or was never sent). */
enum clone_seen { CLONE_ENDED, CLONE_RUNNING, CLONE_UNSEEN };

static enum clone_seen clone_seen(struct ctx *c, struct pve_error *e)
{
    char upid[PVE_UPID_MAX];
    struct pve_task t;
    snprintf(upid, sizeof upid, "%s", c->j->upid);
    if (!upid[0]) {
        /* a clone request whose answer was lost (or one before a crash) */
        if (!pve_find_clone_task(c->pc, c->j->node, config_template(c->cn, c->os), c->j->vmid,
                                 c->j->created_at / 1000, upid))
            return CLONE_ENDED;
    } else if (pve_upid_parse(upid, &t) != 0 || strcmp(t.type, "qmclone") != 0) {
        return CLONE_ENDED; /* the clone ended before a later step's task */
    }
    for (int i = 0; i < TRIES; i++) {
        if (i)
            backoff(i - 1);
        if (pve_task_status(c->pc, upid, &t, e) == 0)
            return t.running ? CLONE_RUNNING : CLONE_ENDED;
        if (!transient(e))
            break;
    }
    return CLONE_UNSEEN;
}

/* Is there a VM with our VMID on the node, and is it ours? Reads that fail
 * transiently are made again (TRIES). */
static enum probe probe_again(struct ctx *c, struct pve_vm_config *cfg, struct pve_error *e)
{
    for (int i = 0;; i++) {
        enum probe p = probe_vm(c, cfg, e);
        if (p != PROBE_ERROR || !transient(e) || i + 1 >= TRIES || core_stopping(c->k))
            return p;
        backoff(i);
    }
}

/* Stop and destroy our half-made VM (wait for its lock, destroy with
 * purge), each try after a transient failure starting over. 0 when gone. */
static int remove_ours(struct ctx *c, struct pve_error *e)
{
    const char *node = c->j->node;
    int vmid = c->j->vmid, rc = 0;
    for (int i = 0; i < TRIES; i++) {
        if (i)
            backoff(i - 1);
        struct pve_vm_status st;
        char upid[PVE_UPID_MAX] = "";
        rc = pve_vm_status(c->pc, node, vmid, &st, e);
        if (rc == 0 && strcmp(st.status, "stopped") != 0) {
            rc = pve_vm_power(c->pc, node, vmid, PVE_POWER_STOP, NULL, upid, e);
            if (rc == 0)
                rc = wait_task(c, upid, UNLOCK_WAIT_MS, false, NULL, e);
        }
        if (rc == 0)
            rc = wait_unlocked(c, UNLOCK_WAIT_MS, e);
        if (rc == 0) {
            struct pve_delete_opts d = {.purge = true, .destroy_unreferenced = true};
            rc = pve_vm_delete(c->pc, node, vmid, &d, upid, e);
            if (rc == 0)
                rc = wait_task(c, upid, STEP_DEADLINE_MS, false, NULL, e);
        }
        if (rc == 0 || rc == PVE_E_NOTFOUND)
            return 0;
        if (rc == -1) { /* stopping */
            snprintf(e->message, sizeof e->message, "proxd is stopping");
            e->cls = PVE_E_OTHER;
            return rc;
        }
        log_warn("job", "job=%s vmid=%d node=%s removing the partial VM failed: %s", c->j->id, vmid,
                 node, e->message);
        if (!transient(e) || core_stopping(c->k))
            break;
    }
    return rc;
}

/* What an attempt left on its node may be, for its room. */
enum left_what {
    LEFT_UNMADE, /* nothing yet: a clone request that may still be served */
    LEFT_MAKING, /* a clone or a resize that may still run (or a VM not looked at since) */
    LEFT_MADE,   /* a VM whose clone was seen to end, with no resize under way */
};

/* What this attempt made cannot be removed now (the node does not answer,
 * keeps failing, or its clone may still run): record it as a leftover, the
 * durable work that the reconciler finishes once the node answers, and let
 * the request go on under another VMID (this one stays reserved to the job
 * until the leftover is gone). Returns 3 (next node), or 0 with the job
 * failed when no VMID is left. */
static int leave(struct ctx *c, enum left_what what_left, const char *what,
                 const struct pve_error *e)
{
    struct core *k = c->k;
    int old = c->j->vmid;
    struct store_error se;
    log_warn("job", "job=%s vmid=%d node=%s %s (%s): left for the reconciler to remove", c->j->id,
             old, c->j->node, what, e->message);
    if (e->cls == PVE_E_NETWORK)
        fleet_node_failed(k->fl, c->j->node, e->message);
    /* The VM left behind may hold its disk, which the inventory may not
     * show yet (read before the clone, and not again during a burst of
     * creations): the attempt's reservation goes with the leftover, and
     * counts until a read of the inventory that begins after now (made),
     * or until the leftover is done (a clone or a resize that may still be
     * served or run: a later read may not show all of it yet). Released
     * here, the next placement on a shared pool (this creation's next
     * attempt, or another's) took its room: 200 GiB held on a pool of 205
     * with a margin of 20. No read of the inventory here: the failover
     * does not wait for one. */
    enum store_left_room room = what_left == LEFT_MADE ? STORE_LEFT_MADE : STORE_LEFT_PENDING;
    if (store_leftover_add(k->st, old, c->j->node, c->j->id, room, &se) != 0) {
        /* never hand the VMID out again; the reconciler still finds the VM
         * by its creation marker */
        log_error("job", "job=%s vmid=%d leftover not recorded (%s): VMID set aside", c->j->id, old,
                  se.message);
        store_vmid_mark_foreign(k->st, old, NULL);
        store_release_capacity(k->st, c->j->id, NULL);
    }
    char rec[256], ev[PVE_MSG_MAX + 256];
    snprintf(rec, sizeof rec, "a partial VM %d on %s is left for the reconciler to remove", old,
             c->j->node);
    if (job_cancel_asked(c->j)) { /* the request goes no further: the leftover keeps the VMID */
        c->keep_vmid = true;
        end_cancelled(c, rec);
        return 0;
    }
    /* unmade: a clone that may still be served has made nothing to remove yet */
    snprintf(ev, sizeof ev, "VM %d on %s %s (%s: %.600s): left for the reconciler", old, c->j->node,
             what_left == LEFT_UNMADE ? "may still be made" : "could not be removed now", what,
             e->message);
    return move_vmid(c, "place", rec, ev) ? 3 : 0;
}

/* What the attempt left, as far as this run saw: made when the clone's end
 * was seen (its config read after it) and no resize sent may still grow the
 * disk (a resize's task runs on after its wait failed: left as made, the
 * next read of the inventory showed the template's size, the resize then
 * grew the disk on a shared pool the next placement had counted as free:
 * 160 GiB on a pool of 175 with a margin of 20). A run resumed past the
 * clone has read neither and holds the room longer. */
static enum left_what seen_made(const struct ctx *c)
{
    return c->have_disk && !c->growing ? LEFT_MADE : LEFT_MAKING;
}

/* Remove what this attempt left on the node. Returns 3 when the creation
 * may move on (nothing is left, or what is left is recorded), 2 when the
 * core stops (resume here), 0 when the job ended. */
static int step_cleanup(struct ctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    if (!fleet_node_up(c->k->fl, c->j->node)) {
        /* it just failed at the network level (or is known down): another
         * round of timeouts would only delay the failover */
        snprintf(e.message, sizeof e.message, "node %s is down", c->j->node);
        e.cls = PVE_E_OTHER;
        return leave(c, seen_made(c), "its node does not answer", &e);
    }
    enum probe p = probe_again(c, &cfg, &e);
    if (p == PROBE_OURS || p == PROBE_FOREIGN) {
        bool cloning = strcmp(cfg.lock, "clone") == 0;
        pve_vm_config_release(&cfg);
        if (p == PROBE_FOREIGN)
            return reallocate(c, "not ours") ? 3 : 0;
        if (cloning && clone_seen(c, &e) != CLONE_ENDED) {
            if (!e.message[0])
                snprintf(e.message, sizeof e.message, "its clone is still running");
            return leave(c, LEFT_MAKING, "the clone is still running", &e);
        }
        if (remove_ours(c, &e) != 0)
            return core_stopping(c->k) ? 2 : leave(c, seen_made(c), "removing it failed", &e);
        log_info("job", "job=%s vmid=%d node=%s partial VM removed", c->j->id, c->j->vmid,
                 c->j->node);
    } else if (p == PROBE_ERROR) {
        if (core_stopping(c->k))
            return 2;
        return leave(c, seen_made(c), "its config cannot be read", &e);
    } else { /* no config: proven nothing only if the clone is seen to have ended */
        enum clone_seen cs = clone_seen(c, &e);
        if (cs == CLONE_RUNNING) {
            snprintf(e.message, sizeof e.message, "clone task %.200s still running", c->j->upid);
            return leave(c, LEFT_MAKING, "the clone may still make it", &e);
        }
        if (cs == CLONE_UNSEEN)
            return leave(c, LEFT_MAKING, "the clone task cannot be seen", &e);
        /* no task, no VM: a request whose answer was lost may still be
         * served after this look (queued on a busy node) and make the VM
         * then. Left for the reconciler, whose pass finds it or not, and
         * the next attempt takes another VMID: on a standalone host the
         * late copy made a second VM of that VMID, taken for this one */
        if (cs == CLONE_ENDED && !c->j->upid[0] && c->clone_lost) {
            snprintf(e.message, sizeof e.message, "no clone task seen yet");
            return leave(c, LEFT_UNMADE, "its clone request may still be served", &e);
        }
    }
    /* Nothing left now, but the clone was asked for twice and the task
     * waited on was the second's: the first may still be served, and make
     * the VM now that nothing holds its VMID on this node. On a standalone
     * host the next attempt under the same VMID then had a second VM of it
     * here, which the reconciler took for another world's copy and kept. */
    if (c->clone_twice) {
        snprintf(e.message, sizeof e.message, "its clone was asked for twice");
        return leave(c, LEFT_UNMADE, "the first clone request may still be served", &e);
    }
    fleet_vm_removed(c->k->fl, c->j->vmid, c->j->node);
    store_release_capacity(c->k->st, c->j->id, NULL);
    return 3;
}

/* ---- the machine -------------------------------------------------------------- */

static bool load_request(struct ctx *c)
{
    json_t *r = c->j->request;
    const char *os = json_string_value(json_object_get(r, "os"));
    const char *name = json_string_value(json_object_get(r, "name"));
    const char *owner = json_string_value(json_object_get(r, "owner"));
    if (!os || !name || !owner)
        return false;
    snprintf(c->os, sizeof c->os, "%s", os);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->owner, sizeof c->owner, "%s", owner);
    c->cores = (int)json_integer_value(json_object_get(r, "cores"));
    c->memory_mb = json_integer_value(json_object_get(r, "memory_mb"));
    c->disk_gb = json_integer_value(json_object_get(r, "disk_gb"));
    c->ssh_keys = json_string_value(json_object_get(r, "ssh_keys"));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(r, "ippools"), i, p)
    {
        if (c->npools < CFG_OS_POOLS && json_string_value(p))
            snprintf(c->pools[c->npools++], sizeof c->pools[0], "%s", json_string_value(p));
    }
    return true;
}

static bool enter_node(struct ctx *c)
{
    c->cn = config_node(c->k->cfg, c->j->node);
    c->pc = c->cn ? fleet_client(c->k->fl, c->j->node) : NULL;
    return c->pc != NULL;
}

/* The store makes check-and-reserve atomic for every process sharing the
 * database; this lock only serialises this process's workers so that, with
 * spread placement, each orders the nodes after the previous reserved. */
static pthread_mutex_t place_mu = PTHREAD_MUTEX_INITIALIZER;

static bool place_job(struct ctx *c)
{
    pthread_mutex_lock(&place_mu);
    const struct cfg_node *cn = pick_node(c);
    if (cn) /* counted before the next worker orders the nodes */
        place_assign(c->k->pl, c->j->id, (int)(cn - c->k->cfg->nodes), copy_bytes(c, cn));
    pthread_mutex_unlock(&place_mu);
    if (!cn)
        return false;
    snprintf(c->j->node, sizeof c->j->node, "%s", cn->name);
    c->j->upid[0] = '\0';
    /* nothing was asked of this node yet, whatever was before a restart on
     * the last one: resumed, a clear refusal of the clone here was taken
     * for a request that may still be served (a leftover and a VMID spent
     * per failover) */
    c->resumed = false;
    enter_node(c);
    job_checkpoint(c->k, c->j, "clone", 10, "placed on %s", cn->name);
    return true;
}

/* A cancel seen at the top of the machine (the claim or the last
 * checkpoint read it). Before a clone was asked for, the job ends at once;
 * once one may have been, what the attempt made is removed first, by the
 * cleanup a failure takes (which ends the job instead of placing it
 * again). A clone under way is stopped by its wait (stop_clone), which
 * also ends at once when the cancel comes during it (in this process).
 * 1: the job ended; 0: go on at j->step. */
static int on_cancel(struct ctx *c)
{
    const char *s = c->j->step;
    if (!c->cancel_step[0])
        snprintf(c->cancel_step, sizeof c->cancel_step, "%s", s);
    if (strcmp(s, "queued") == 0 || strcmp(s, "place") == 0 ||
        (strcmp(s, "clone") == 0 && !c->resumed)) {
        end_cancelled(c, "");
        return 1;
    }
    if (strcmp(s, "wait_clone") == 0 || strcmp(s, "cleanup") == 0 || strcmp(s, "done") == 0 ||
        strcmp(s, "failed") == 0)
        return 0;
    /* resumed at the clone: a request may have gone out before the crash */
    if (strcmp(s, "clone") == 0)
        c->clone_lost = true;
    job_checkpoint(c->k, c->j, "cleanup", -1, "cancel requested by %s: removing VM %d from %s",
                   c->j->cancel_by, c->j->vmid, c->j->node);
    return 0;
}

/* Resumed with its node no longer configured (removed, or another instance
 * with another node list): nothing can be looked at or removed there.
 * Before a clone was asked for, the creation is placed again. After, what
 * it may have made there (a half-made VM, running maybe) is recorded as a
 * leftover, as leave() does, and the request goes on under a new VMID:
 * placed again under the same one, the VM left there was abandoned with no
 * trace, and its VMID taken again elsewhere (a collision in a cluster, a
 * second VM of the VMID on another host). The reconciler reports the
 * leftover, and releases its VMID once the node has been gone for
 * leftover_grace. 0: go on at j->step; -1: the job ended. */
static int resume_unconfigured(struct ctx *c)
{
    const char *s = c->j->step;
    attempt(c, c->j->node, "node is no longer configured");
    if (strcmp(s, "queued") == 0 || strcmp(s, "place") == 0) {
        snprintf(c->j->step, sizeof c->j->step, "place");
        return 0;
    }
    struct pve_error e = {.cls = PVE_E_OTHER};
    snprintf(e.message, sizeof e.message, "node %s is not in proxd's configuration", c->j->node);
    /* at "clone" the request may not have been sent, or not served yet */
    enum left_what w = strcmp(s, "clone") == 0 ? LEFT_UNMADE : LEFT_MAKING;
    return leave(c, w, "its node is no longer configured", &e) == 3 ? 0 : -1;
}

void create_run(struct core *k, struct job_rec *j)
{
    struct ctx c = {.k = k, .j = j};
    if (!j->attempts)
        j->attempts = json_array();
    if (!load_request(&c)) {
        finish_failed(&c);
        return;
    }
    c.resumed = strcmp(j->step, "queued") != 0;
    /* a cleanup resumed without the clone's UPID may follow a clone request
     * whose answer was lost before the crash: what this run knew is gone,
     * so it is assumed (else a cleanup that sees no VM and no task yet let
     * the creation go on under the VMID the request may still make a VM
     * of: a second VM of it on another standalone host, a foreign VMID in
     * a cluster) */
    c.clone_lost = c.resumed && strcmp(j->step, "cleanup") == 0 && !j->upid[0];
    /* likewise, a run resumed at or past its clone request cannot know
     * whether that request was sent twice (its first answer lost; killed
     * before its wait_clone checkpoint, the clone it then finds and adopts
     * may be the second's, as a clone it finds past it): if the attempt
     * fails, its VMID stays with a leftover (clone_twice) rather than go
     * to a node of another VMID space (another standalone host, another
     * cluster), where the late first request, served here, made a second
     * VM of it. A crash and a failure in one attempt: the cost is a VMID
     * set aside until the reconciler's next pass. When every node shares
     * this one's VMID space (one cluster) the late request fails, or the
     * next attempt's clone does and takes another VMID (core/test_crash:
     * no leftover there). */
    c.clone_twice = c.resumed && j->node[0] && !fleet_one_world(k->fl, j->node) &&
                    (strcmp(j->step, "clone") == 0 || strcmp(j->step, "wait_clone") == 0 ||
                     strcmp(j->step, "configure") == 0 || strcmp(j->step, "resize") == 0 ||
                     strcmp(j->step, "start") == 0 || strcmp(j->step, "verify") == 0 ||
                     strcmp(j->step, "cleanup") == 0);
    if (j->node[0] && !enter_node(&c) && resume_unconfigured(&c) != 0)
        return;
    if (c.resumed && resume_move(&c) != 0)
        return;
    /* the clone slot this run holds, and on which node: a slot is for the
     * clone and its wait only, and always goes back to the node it came
     * from (a failover moves j->node before the next slot is taken) */
    bool slot = false;
    char slot_node[sizeof j->node] = "";
    while (!core_stopping(k)) {
        int rc = 0;
        if (job_cancel_asked(j) && on_cancel(&c))
            break;
        const char *s = j->step;
        if (slot && (strcmp(slot_node, j->node) != 0 ||
                     (strcmp(s, "clone") != 0 && strcmp(s, "wait_clone") != 0))) {
            clone_slot_give(k, slot_node, j->id);
            slot = false;
        }
        if (strcmp(s, "queued") == 0 || strcmp(s, "place") == 0) {
            if (place_job(&c)) {
                c.db_waits = 0;
                continue;
            }
            if (c.db_out) { /* as a checkpoint does: the store comes back */
                if (c.db_waits++ % 30 == 0)
                    log_warn("job",
                             "job=%s vmid=%d placement waits for the database: no node could be "
                             "judged (try %d)",
                             j->id, j->vmid, c.db_waits);
                core_nap(k, PLACE_DB_WAIT_MS); /* a stop ends it: resumed later */
                continue;
            }
            finish_failed(&c);
            break;
        }
        if ((strcmp(s, "clone") == 0 || strcmp(s, "wait_clone") == 0) && !slot) {
            if (!clone_slot_take(k, j->node, j->id))
                break;
            slot = true;
            snprintf(slot_node, sizeof slot_node, "%s", j->node);
        }
        if (strcmp(s, "clone") == 0)
            rc = step_clone(&c);
        else if (strcmp(s, "wait_clone") == 0)
            rc = step_wait_clone(&c);
        else if (strcmp(s, "configure") == 0)
            rc = step_configure(&c);
        else if (strcmp(s, "resize") == 0)
            rc = step_resize(&c);
        else if (strcmp(s, "start") == 0)
            rc = step_start(&c);
        else if (strcmp(s, "verify") == 0)
            rc = step_verify(&c);
        else if (strcmp(s, "cleanup") == 0)
            rc = step_cleanup(&c);
        else if (strcmp(s, "done") == 0 || strcmp(s, "failed") == 0)
            break;
        else
            rc = -1;
        if (slot && (strcmp(slot_node, j->node) != 0 ||
                     (strcmp(j->step, "clone") != 0 && strcmp(j->step, "wait_clone") != 0))) {
            clone_slot_give(k, slot_node, j->id);
            slot = false;
        }
        if (j->state == JOB_DONE || j->state == JOB_FAILED || rc == 2)
            break;
        if (rc == 3 && job_cancel_asked(j)) { /* cleaned up: the cancel ends it */
            end_cancelled(&c, "what the creation made is removed");
            break;
        }
        if (rc == 3) { /* cleaned up: next node */
            core_note_failover(k, j->node);
            log_warn("job", "job=%s vmid=%d node=%s failover: the creation moves on", j->id,
                     j->vmid, j->node);
            job_checkpoint(k, j, "place", 10, "attempt on %s abandoned", j->node);
            continue;
        }
        if (rc == -1) { /* something may be left on the node */
            if (slot) {
                clone_slot_give(k, slot_node, j->id);
                slot = false;
            }
            job_checkpoint(
                k, j, "cleanup", -1, "attempt on %s failed: %s", j->node,
                json_string_value(json_object_get(
                    json_array_get(j->attempts, json_array_size(j->attempts) - 1), "error")));
            continue;
        }
        if (rc == -2) { /* nothing was made on the node: its slot goes back first */
            if (slot) {
                clone_slot_give(k, slot_node, j->id);
                slot = false;
            }
            core_note_failover(k, j->node);
            log_warn("job", "job=%s vmid=%d node=%s failover: the creation moves on", j->id,
                     j->vmid, j->node);
            store_release_capacity(k->st, j->id, NULL);
            job_checkpoint(k, j, "place", 10, "attempt on %s failed", j->node);
            continue;
        }
        c.resumed = false;
    }
    if (slot)
        clone_slot_give(k, slot_node, j->id);
    place_forget(k->pl, j->id, mono_ms());
}
