/* drain: node maintenance — the drain job that empties a node (the
 * cordons it sets are cordon.c's).
 *
 * A drain is a job (kind "drain", VMID 0) that cordons the node and then
 * moves the VMs recorded on it, drain_parallel at a time, each by a
 * "migrate" job of its own (migrate.c) queued in that VM's queue. The
 * drain's attempts are its ledger: one entry per VM {vmid, name, record,
 * job, state: moving|moved|stayed, to, error}; an entry, with the id of its
 * migrate job, is checkpointed before that job is submitted, so a drain
 * resumed after a crash submits the job it may have missed under the same
 * id (a second submission of one id is refused by the store) and never a
 * second one. The drain ends when nothing is moving and no VM is left to
 * try; what stayed on the node (moves that failed, VMs being created or
 * deleted meanwhile) is listed with why. Cancelling it stops it: moves
 * under way finish, the moves it queued that no worker took yet are
 * cancelled (cancel_queued_moves), nothing more is started, and it fails
 * saying what it did; the node stays cordoned. Uncordoning the node
 * cancels its drain so (cordon.c, in the uncordon's transaction, `by` the
 * one who uncordons), and the drain says the node was uncordoned. A drain
 * that finds its node uncordoned without a cancel (submitted just after
 * an uncordon that found none to cancel) cancels itself the same way
 * before it moves anything. The wait between two looks is told of a
 * cancel recorded in this process (core_nap_job): a move is not claimed
 * by a worker in the 250 ms the drain would otherwise sleep. */
#include "common/log.h"
#include "common/util.h"
#include "core/core_int.h"
#include "core/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOOK_MS 250 /* how often a drain looks at its moves */

/* ---- the drain job ----------------------------------------------------------- */

int core_node_drain(struct core *k, const char *node, const char *by, char job_id[40],
                    struct core_error *err)
{
    const struct cfg_node *cn = config_node(k->cfg, node);
    if (!cn)
        return core_fail(err, CORE_E_NOTFOUND, "node", "no node %s", node);
    /* a drain under way: refused before the cordon (which would be no
     * change); the store decides again below, atomically */
    if (store_job_active_on(k->st, "drain", node, job_id, NULL) == 0)
        return core_fail(err, CORE_E_CONFLICT, "node", "a drain of %s is under way", node);
    /* cordoned now, not when a worker takes the job: creations stop at once */
    int rc = core_node_cordon(k, node, true, by, NULL, err);
    if (rc)
        return rc;
    struct job_rec j = {.state = JOB_QUEUED, .attempts = json_array()};
    core_uuid(job_id);
    snprintf(j.id, sizeof j.id, "%s", job_id);
    snprintf(j.kind, sizeof j.kind, "drain");
    snprintf(j.owner, sizeof j.owner, "%s", by && *by ? by : "?");
    snprintf(j.step, sizeof j.step, "queued");
    snprintf(j.node, sizeof j.node, "%s", node);
    j.request = json_pack("{s:s,s:b,s:i}", "node", node, "standalone", cn->cluster[0] == '\0',
                          "parallel", k->cfg->drain_parallel > 0 ? k->cfg->drain_parallel : 2);
    struct store_error se;
    char other[40] = "";
    /* one drain per node, whatever proxd share the database: the store
     * refuses a second unfinished one in the transaction that inserts it */
    rc = store_job_submit_sole(k->st, &j, "drain queued", other, &se);
    job_rec_release(&j);
    if (rc == STORE_E_CONFLICT && other[0]) {
        snprintf(job_id, 40, "%s", other);
        return core_fail(err, CORE_E_CONFLICT, "node", "a drain of %s is under way", node);
    }
    if (rc) {
        job_id[0] = '\0';
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    }
    log_info("job", "job=%s kind=drain node=%s queued by %s", job_id, node, by ? by : "?");
    core_wake(k);
    return CORE_OK;
}

struct drain {
    struct core *k;
    struct job_rec *j;
    const char *node;
    int parallel;
    bool stop;          /* the drain was cancelled (by hand, or the node uncordoned) */
    bool uncordoned;    /* the node was uncordoned when the drain saw its cancel */
    char stop_why[128]; /* why, for the VMs that stay */
    bool dirty;         /* the ledger changed: checkpoint it */
    bool listed;        /* no VM left to try on the node */
    bool standalone;    /* nothing to move to: every VM stays */
};

static const char *e_str(json_t *e, const char *key)
{
    const char *s = json_string_value(json_object_get(e, key));
    return s ? s : "";
}

static json_t *entry_of(struct drain *d, int vmid)
{
    size_t i;
    json_t *e;
    json_array_foreach(d->j->attempts, i, e)
    {
        if (json_integer_value(json_object_get(e, "vmid")) == vmid)
            return e;
    }
    return NULL;
}

static void set_state(struct drain *d, json_t *e, const char *state, const char *error)
{
    json_object_set_new(e, "state", json_string(state));
    if (error)
        json_object_set_new(e, "error", json_string(error));
    d->dirty = true;
}

/* Submit the entry's migrate job under its recorded id (again after a
 * crash: only when the store has no job of that id). */
static void submit_move(struct drain *d, json_t *e)
{
    struct job_rec cj = {.state = JOB_QUEUED,
                         .vmid = (int)json_integer_value(json_object_get(e, "vmid"))};
    snprintf(cj.id, sizeof cj.id, "%s", e_str(e, "job"));
    snprintf(cj.kind, sizeof cj.kind, "migrate");
    snprintf(cj.owner, sizeof cj.owner, "%s", e_str(e, "owner"));
    snprintf(cj.step, sizeof cj.step, "queued");
    snprintf(cj.node, sizeof cj.node, "%s", d->node);
    cj.request = json_pack("{s:O,s:s,s:s}", "record", json_object_get(e, "record"), "drain",
                           d->j->id, "from", d->node);
    cj.attempts = json_array();
    struct store_error se;
    char ev[96];
    snprintf(ev, sizeof ev, "move queued by drain %s", d->j->id);
    int rc = store_job_submit(d->k->st, &cj, ev, NULL, NULL, &se);
    job_rec_release(&cj);
    if (rc)
        log_warn("job", "job=%s vmid=%d move not queued yet: %s", d->j->id, cj.vmid, se.message);
    core_wake(d->k);
}

/* Look at the moves under way; how many still are. */
static int follow_moves(struct drain *d)
{
    int moving = 0;
    size_t i;
    json_t *e;
    json_array_foreach(d->j->attempts, i, e)
    {
        if (strcmp(e_str(e, "state"), "moving") != 0)
            continue;
        struct job_rec cj;
        int rc = store_job_get(d->k->st, e_str(e, "job"), &cj, NULL);
        if (rc == STORE_E_NOTFOUND) {
            if (d->stop) {
                set_state(d, e, "stayed", d->stop_why);
                continue;
            }
            submit_move(d, e); /* checkpointed, then the crash: submit it now */
            moving++;
            continue;
        }
        if (rc) {
            moving++;
            continue;
        }
        if (cj.state == JOB_DONE) {
            json_object_set_new(e, "to", json_string(cj.node));
            set_state(d, e, "moved", NULL);
        } else if (cj.state == JOB_FAILED) {
            set_state(d, e, "stayed", cj.error);
        } else {
            moving++;
        }
        job_rec_release(&cj);
    }
    return moving;
}

/* Start moves until `parallel` run or no VM on the node is left to try. */
static int start_moves(struct drain *d, int moving)
{
    struct vm_filter f = {.node = d->node, .state = VMS_ENABLED, .limit = 200};
    d->listed = false;
    while (moving < d->parallel) {
        struct vm_rec *v = NULL;
        size_t n = 0;
        if (store_vm_list(d->k->st, &f, &v, &n, NULL))
            return moving; /* the store failed: look again next time */
        for (size_t i = 0; i < n; i++) {
            f.after_id = v[i].id;
            if (moving < d->parallel && !entry_of(d, v[i].vmid)) {
                char id[40];
                core_uuid(id);
                json_array_append_new(d->j->attempts,
                                      json_pack("{s:i,s:s,s:s,s:I,s:s,s:s,s:s}", "vmid", v[i].vmid,
                                                "name", v[i].name, "owner", v[i].owner, "record",
                                                (json_int_t)v[i].id, "job", id, "state", "moving",
                                                "from", d->node));
                /* the ledger first: a crash after this submits the same id */
                job_checkpoint(d->k, d->j, NULL, -1, "moving VM %d (job %s)", v[i].vmid, id);
                submit_move(d, entry_of(d, v[i].vmid));
                moving++;
            }
            vm_rec_release(&v[i]);
        }
        free(v);
        if (n == 0) {
            d->listed = true;
            break;
        }
    }
    return moving;
}

/* VMs still recorded on the node that the drain did not try (being created
 * or deleted, or made after it looked), listed as stayed. */
static void list_leftovers(struct drain *d)
{
    struct vm_filter f = {.node = d->node, .state = -1, .limit = 200};
    for (;;) {
        struct vm_rec *v = NULL;
        size_t n = 0;
        if (store_vm_list(d->k->st, &f, &v, &n, NULL))
            return;
        for (size_t i = 0; i < n; i++) {
            f.after_id = v[i].id;
            enum vm_state s = v[i].state;
            if ((s == VMS_CREATING || s == VMS_ENABLED || s == VMS_DELETING) &&
                !entry_of(d, v[i].vmid)) {
                const char *why = d->standalone ? "standalone host: no other node to move it to"
                                  : d->stop     ? d->stop_why
                                  : s == VMS_ENABLED ? "it came after the drain looked"
                                                     : "it was being created or deleted";
                json_array_append_new(d->j->attempts,
                                      json_pack("{s:i,s:s,s:s,s:I,s:s,s:s,s:s}", "vmid", v[i].vmid,
                                                "name", v[i].name, "owner", v[i].owner, "record",
                                                (json_int_t)v[i].id, "state", "stayed", "from",
                                                d->node, "error", why));
            }
            vm_rec_release(&v[i]);
        }
        free(v);
        if (n == 0)
            return;
    }
}

static void count(struct drain *d, int *moved, int *stayed, int *all)
{
    size_t i;
    json_t *e;
    *moved = *stayed = 0;
    *all = (int)json_array_size(d->j->attempts);
    json_array_foreach(d->j->attempts, i, e)
    {
        *moved += strcmp(e_str(e, "state"), "moved") == 0;
        *stayed += strcmp(e_str(e, "state"), "stayed") == 0;
    }
}

static void drain_end(struct drain *d, const char *why)
{
    list_leftovers(d);
    int moved, stayed, all;
    count(d, &moved, &stayed, &all);
    d->j->finished_at = wall_ms();
    if (d->j->cancel_at) { /* a cancelled drain fails, saying what it did */
        char what[128], dropped[48] = "";
        int ncancelled = 0;
        size_t i;
        json_t *e;
        json_array_foreach(d->j->attempts, i, e)
        {
            ncancelled += json_is_true(json_object_get(e, "cancelled"));
        }
        if (ncancelled)
            snprintf(dropped, sizeof dropped, " (%d queued moves cancelled)", ncancelled);
        snprintf(what, sizeof what, "%s%d VMs moved, %d stayed%s%s",
                 d->uncordoned ? DRAIN_UNCORDONED "; " : "", moved, stayed, dropped,
                 d->uncordoned ? "" : "; the node stays cordoned");
        job_cancel_error(d->j, NULL, d->j->error, sizeof d->j->error, what);
        d->j->state = JOB_FAILED;
        job_checkpoint(d->k, d->j, "failed", 100, "%s", d->j->error);
        return;
    }
    d->j->state = JOB_DONE;
    job_checkpoint(d->k, d->j, "done", 100, "%s: %d VMs moved, %d stayed", why, moved, stayed);
}

/* A cancelled drain also cancels the moves it queued that no worker took
 * yet: whoever cancels a drain wants the node's emptying stopped, not a
 * string of migrations still to come (they could wait behind other jobs for
 * long). Moves a worker runs finish (a migration under way is not cut
 * short; cancelling one would only stop it at its next step). Each move
 * cancelled stays, listed with why; the drain's log names them. A resumed
 * drain does it again: moves ended already are not touched. */
static void cancel_queued_moves(struct drain *d)
{
    char error[192], why[192], vms[160] = "";
    snprintf(error, sizeof error, "cancelled by %.63s before it started (drain %s cancelled%s)",
             d->j->cancel_by, d->j->id, d->uncordoned ? ": " DRAIN_UNCORDONED : "");
    snprintf(why, sizeof why, "%.128s: its move was cancelled before it started", d->stop_why);
    struct job_cancel_req rq = {.by = d->j->cancel_by, .error = error, .queued_only = true};
    int n = 0, left = 0;
    size_t i, used = 0;
    json_t *e;
    json_array_foreach(d->j->attempts, i, e)
    {
        if (strcmp(e_str(e, "state"), "moving") != 0)
            continue;
        struct job_rec cj = {0};
        struct store_error se;
        enum store_cancel out = 0;
        int rc = store_job_cancel(d->k->st, e_str(e, "job"), &rq, &cj, &out, &se);
        if (rc == STORE_OK)
            job_rec_release(&cj);
        if (rc == STORE_OK && (out == STORE_CANCEL_ENDED || out == STORE_CANCEL_AGAIN)) {
            /* AGAIN: cancelled by an earlier run of this drain, or by hand;
             * follow_moves reads how it ended */
            if (out == STORE_CANCEL_ENDED) {
                json_object_set_new(e, "cancelled", json_true());
                set_state(d, e, "stayed", why);
                n++;
                int vmid = (int)json_integer_value(json_object_get(e, "vmid"));
                int w = snprintf(vms + used, sizeof vms - used, "%s%d", n > 1 ? ", " : "", vmid);
                if (w > 0 && (size_t)w < sizeof vms - used)
                    used += (size_t)w;
            }
        } else if (rc == STORE_OK || rc == STORE_E_CONFLICT) {
            left += rc == STORE_OK;          /* a worker runs it, or it ended: followed as before */
        } else if (rc != STORE_E_NOTFOUND) { /* not submitted: follow_moves lists it */
            log_warn("job", "job=%s move %s not cancelled: %s", d->j->id, e_str(e, "job"),
                     se.message);
        }
    }
    if (n)
        job_checkpoint(d->k, d->j, NULL, -1, "%d queued move(s) cancelled (VM %s): they stay on %s",
                       n, vms, d->node);
    if (n || left)
        log_info("job", "job=%s node=%s cancelled: %d queued move(s) cancelled, %d running finish",
                 d->j->id, d->node, n, left);
}

/* Has the drain been cancelled (store_job_cancel, from any instance)? Its
 * own record is read each look: a drain may write nothing for minutes
 * while its moves run. */
static bool drain_cancelled(struct drain *d)
{
    job_cancel_read(d->k, d->j);
    return d->j->cancel_at != 0;
}

/* The node is uncordoned and no cancel is recorded: the uncordon's
 * transaction found no drain to cancel (this one was submitted after it),
 * or it was lifted by a proxd that does not cancel. The drain cancels
 * itself, as the uncordon would have; who uncordoned is not known here. */
static bool cancel_self(struct drain *d)
{
    char error[192];
    snprintf(error, sizeof error, "cancelled by ? before it started: %s", DRAIN_UNCORDONED);
    struct job_cancel_req rq = {.by = "?", .error = error, .why = DRAIN_UNCORDONED};
    struct job_rec now = {0};
    enum store_cancel out = 0;
    struct store_error se;
    if (store_job_cancel(d->k->st, d->j->id, &rq, &now, &out, &se)) {
        log_warn("job", "job=%s node=%s uncordoned, the drain's cancel not recorded: %s", d->j->id,
                 d->node, se.message);
        return false; /* looked at again next time */
    }
    d->j->cancel_at = now.cancel_at;
    snprintf(d->j->cancel_by, sizeof d->j->cancel_by, "%s", now.cancel_by);
    job_rec_release(&now);
    return d->j->cancel_at != 0;
}

/* Has the drain been cancelled, or its node uncordoned (then it cancels
 * itself)? The first time: d->stop, and why. */
static void look_at_cancel(struct drain *d)
{
    struct node_cordon nc;
    bool cancelled = drain_cancelled(d);
    bool uncordoned = core_node_cordon_get(d->k, d->node, &nc) == 0 && !nc.cordoned;
    if (!cancelled && uncordoned)
        cancelled = cancel_self(d);
    if (!cancelled)
        return;
    d->stop = true;
    d->uncordoned = uncordoned;
    if (uncordoned)
        snprintf(d->stop_why, sizeof d->stop_why, "%s: the drain was cancelled by %.60s",
                 DRAIN_UNCORDONED, d->j->cancel_by);
    else
        snprintf(d->stop_why, sizeof d->stop_why, "the drain was cancelled by %.60s",
                 d->j->cancel_by);
    log_info("job", "job=%s node=%s cancelled by %s%s: the drain stops", d->j->id, d->node,
             d->j->cancel_by, uncordoned ? " (" DRAIN_UNCORDONED ")" : "");
    if (uncordoned)
        job_checkpoint(d->k, d->j, NULL, -1, "%s: the drain was cancelled by %s; it stops",
                       DRAIN_UNCORDONED, d->j->cancel_by);
    cancel_queued_moves(d);
}

void drain_run(struct core *k, struct job_rec *j)
{
    if (!j->attempts)
        j->attempts = json_array();
    struct drain d = {.k = k, .j = j};
    d.node = json_string_value(json_object_get(j->request, "node"));
    d.parallel = (int)json_integer_value(json_object_get(j->request, "parallel"));
    if (d.parallel <= 0)
        d.parallel = 2;
    const struct cfg_node *cn = d.node ? config_node(k->cfg, d.node) : NULL;
    if (!cn) {
        j->state = JOB_FAILED;
        snprintf(j->error, sizeof j->error, "node %s is not configured", d.node ? d.node : "?");
        job_checkpoint(k, j, "failed", 100, "%s", j->error);
        return;
    }
    if (k->nworkers < 2) { /* the moves need workers of their own */
        j->state = JOB_FAILED;
        snprintf(j->error, sizeof j->error, "a drain needs at least 2 workers ([proxd] workers)");
        job_checkpoint(k, j, "failed", 100, "%s", j->error);
        return;
    }
    /* core_node_drain cordoned the node with the job's submission: not
     * again here, or an uncordon before a worker took the job would be
     * undone */
    if (strcmp(j->step, "queued") == 0)
        job_checkpoint(k, j, "moving", 5, "node %s cordoned", d.node);
    if (!cn->cluster[0]) {
        d.standalone = true;
        drain_end(&d, "standalone host: no other node to move its VMs to, cordoned only");
        return;
    }
    /* a cancel recorded in this process (by hand, or the node's uncordon)
     * wakes the drain's nap at once: the fewer moves a worker claims
     * meanwhile, the fewer run on once it is cancelled */
    struct core_waiter w;
    core_waiter_begin_job(k, &w, j->id);
    for (;;) {
        if (!d.stop) {
            look_at_cancel(&d);
            if (d.stop)
                core_waiter_end(k, &w); /* told: later naps sleep their time */
        }
        int moving = follow_moves(&d);
        if (!d.stop)
            moving = start_moves(&d, moving);
        if (d.dirty) {
            int moved, stayed, all;
            count(&d, &moved, &stayed, &all);
            job_checkpoint(k, j, NULL, 5 + (all ? 90 * (moved + stayed) / all : 0),
                           "%d VMs moved, %d stayed, %d moving", moved, stayed, moving);
            d.dirty = false;
        }
        if (moving == 0 && (d.stop || d.listed)) {
            drain_end(&d, "drained");
            break;
        }
        if (d.stop ? core_nap(k, LOOK_MS) : core_nap_job(k, &w, LOOK_MS))
            break; /* stopping: resumed from the ledger */
    }
    core_waiter_end(k, &w);
}
