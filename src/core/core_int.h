/* core_int: what the core's files share (core.c runs jobs, create.c is the
 * creation state machine). Internal to src/core/. */
#ifndef CORE_CORE_INT_H
#define CORE_CORE_INT_H

#include <pthread.h>
#include <stdbool.h>

#include "core/core.h"
#include "core/place.h"
#include "pve/pve.h"
#include "pve/pve_api.h"

#define CORE_MAX_WORKERS 64
/* A call whose answer was lost (a power action, a rollback) is looked for
 * this many more times, a pause apart, before it is asked again: a request
 * queued on a busy node is served late */
#define LATE_LOOKS 2

struct store_error;
/* A job's store write failed with rc: when the database is out of reach
 * (STORE_E_DB) and the core is not stopping, pause (100 ms growing to 2 s,
 * as a checkpoint does; logged on the first try and every 30th) and say
 * to write again. A write a job's outcome depends on (its record, what it
 * gives back) waits so for the database rather than be lost: written
 * once, a reinstall's record and the release of its temporary VMID were
 * dropped during an outage while the job ended done. */
bool core_db_again(struct core *k, int rc, const struct store_error *se, int *tries,
                   const char *job, const char *what);
/* A VM's power as a record tells it, from its status: "paused" (status
 * running, qmpstatus paused: PVE's status alone says "running" for a
 * paused VM), "running" or "stopped". */
const char *core_power_of(const struct pve_vm_status *st);
/* Proxmox's pending list as a record keeps it: {"cores": "4", "memory":
 * "4096", "net1": null (a deletion)}; new, the caller's. */
json_t *core_pending_json(const struct pve_pending *p, size_t n);
/* A job's lease ([proxd] job_lease, in ms): a runner renews it every third
 * of it; a dead runner's jobs are claimed by another instance once it ran
 * out. */
#define LEASE_MS(k) ((int64_t)(k)->cfg->job_lease_s * 1000)
/* What a job says of a VM a failed rollback left locked (its VMID for %d):
 * snapshot jobs and the waits for a VM's lock (ctl_wait_unlocked) */
#define UNLOCK_HINT                                                                                \
    "Proxmox keeps the VM locked (rollback) after a failed rollback: an operator must unlock it "  \
    "(qm unlock %d) before anything else is done to it"
/* A cloud-init drive's bytes on its storage (PVE makes it 4 MiB,
 * Cloudinit.pm): a clone of a template copies the template's, on the clone's
 * storage, so a creation and a reinstall's temporary VM reserve it beside
 * the disk (a template without one is reserved for it all the same). */
#define CORE_CLOUDINIT_BYTES (4LL * 1024 * 1024)

struct core {
    const struct proxd_config *cfg;
    store *st;
    struct fleet *fl;
    char instance[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* new work (core_wake: one worker at a time), or stop */
    pthread_cond_t slot_cv; /* a clone slot freed, or stop */
    pthread_cond_t stop_cv; /* stop: core_nap's sleeps */
    pthread_cond_t note_cv; /* the fleet's notes (fleet_set_notify), or stop */
    unsigned notes;         /* under mu: FLEET_NOTE_* not yet taken by a watcher */
    bool stopping;
    int wake[2];    /* a pipe written at stop: task waits sleep on wake[0] */
    bool watcher;   /* an idle worker watches the store (watch_wait; the others wait) */
    int watch_wake; /* eventfd: core_wake tells the watcher (it waits in poll) */
    int idle;       /* under mu: idle workers waiting on cv (not the watcher) */
    /* The store's jobs watch has one user at a time: the watcher, or while
     * every worker runs a job the leaser (for cancels recorded elsewhere). */
    bool leaser_watch;          /* under mu: the leaser holds the watch */
    bool db_failing;            /* under mu: the last claim or lease renewal met a store error */
    int64_t claim_expired_from; /* under mu: wall ms from which leases that ran out are
                                   claimed again (0: always); set at the start and when the
                                   store answers after failing */
    bool watch_want;            /* under mu: a worker going idle asked the leaser for it */
    int leaser_wake;            /* eventfd: hold (the last idle worker took a job), a worker
                                   that wants the watch, or stop wake the leaser */
    uint64_t wakes;             /* core_wake calls: a worker whose look missed one looks again */
    pthread_t workers[CORE_MAX_WORKERS];
    int nworkers;              /* workers core_start makes (read by jobs: set before any starts) */
    int workers_up;            /* of them made: the ones core_stop joins */
    pthread_t keeper;          /* refreshes the inventory, reconciles */
    pthread_t leaser;          /* renews the leases of held jobs */
    bool keeper_up, leaser_up; /* made: only a made thread is joined */
    bool started;
    char held[CORE_MAX_WORKERS][40];   /* jobs this instance runs (the leaser renews while any) */
    bool told[CORE_MAX_WORKERS];       /* under mu: held[i]'s cancel was told to its waits */
    int clones[CFG_MAX_NODES];         /* clones running per node (index in cfg->nodes) */
    uint64_t failovers[CFG_MAX_NODES]; /* under mu: creations that left the node failed */
    place *pl;                         /* expected clone finish times (own lock) */
    pthread_t cleaner;                 /* removals the reconciler hands over (reconcile.c) */
    bool cleaner_started;
    pthread_cond_t ccv;    /* a removal queued, or stop */
    struct clean_item *cq; /* under mu: queued removals, the first one under way */
    int ncq;
    struct snapcache *snaps; /* snapshot_cache.c: what proxd knows of snapshots */
    /* released addresses' quarantine per pool (create_net.c), also given
     * to the store (store_addr_policy) at core_new */
    struct store_addr_quarantine addrq[CFG_MAX_POOLS + 1];
    size_t naddrq;
    struct netwalk *nw;          /* netwalk.c: the config walk and agent confirmation */
    struct access *access;       /* access.c: the credentials' privileges per node */
    struct guestwatch *gw;       /* guestwatch.c: is the guest up after a start */
    struct evkeeper *evk;        /* events.c: node health edges, retention */
    struct core_waiter *waiters; /* under mu: task waits to wake when their node fails or
                                    their job is cancelled */
    struct webhooks *wh;         /* webhook.c: delivery threads and their counters */
};

/* store_addr_sweep with the core's quarantine times, logged: at start-up
 * and once per reconcile pass. */
void core_addr_sweep(struct core *k);
/* Is `owner` (a lease holder's name, host:pid) an earlier proxd of this
 * host that is gone: same host, another name, and no process of its pid?
 * (A pid reused since by another process counts as alive: its lease is
 * then waited out.) */
bool core_instance_gone(const struct core *k, const char *owner);

/* A removal the reconciler hands to the cleaner thread. */
struct clean_item {
    bool leftover; /* a recorded leftover (l), else a VM without a record (fv) */
    bool copy;     /* fv: another world's VM of a recorded VMID */
    struct leftover l;
    struct fleet_vm fv;
};

/* One reconcile pass; with removals_now the removals are made in the pass
 * (core_reconcile), else handed to the cleaner thread (the keeper). */
int reconcile_pass(struct core *k, struct reconcile_report *rep, bool removals_now);
int reconcile_cleaner_start(struct core *k);
void reconcile_cleaner_stop(struct core *k); /* after k->stopping is set */

/* A task wait's registration (core.c): while registered, the wait is told
 * (its descriptor turns readable) when the fleet sees the task's node go
 * down, and looks at the task at once; the look's network failure is then
 * the wait's, and the job fails over without sleeping to its next look
 * (a clone's may be up to a minute away). A wait registered with its job's
 * id is also told when a cancel of that job is recorded, in this process
 * (core_waiters_cancel) or in another (the watcher's or the leaser's look,
 * core.c tell_cancels): it ends at once, interrupted, with `cancel` set,
 * and its job decides what the cancel means for the task (a creation stops
 * its clone). While the fleet holds the task's node down, each look is
 * short (pve_wait_opts.held_down: the probe's timeout, no retry, one in
 * flight cut off): a node that does not answer it fails the wait at once.
 * Begin and end on the waiting thread; fd -1 (no eventfd): the wait is
 * not told (its looks are still short on a node held down). */
struct core_waiter {
    int fd;      /* -1: not told by fd (core_waiter_begin_job: by k->stop_cv) */
    bool linked; /* on k->waiters */
    bool told;   /* under k->mu: woken for this down spell */
    bool cancel; /* under k->mu: its job's cancel was recorded meanwhile */
    char node[64];
    char job[40]; /* "": not told of cancels */
    struct core *k;
    struct core_waiter *next;
};
/* `job` NULL: the wait is not told of its job's cancel (a control action
 * whose call was sent finishes; a cleanup's waits are not cut short). */
void core_waiter_begin(struct core *k, struct core_waiter *w, const char *upid, const char *job);
/* A wait on no task, only on its job's cancel (a drain between its looks
 * at its moves): core_nap_job sleeps in it. Not told of node failures. */
void core_waiter_begin_job(struct core *k, struct core_waiter *w, const char *job);
/* Sleep up to ms, woken by a stop or by the cancel of w's job (w begun
 * with core_waiter_begin_job; a cancel told before the nap ends it at
 * once); true when the core stops. */
bool core_nap_job(struct core *k, struct core_waiter *w, long ms);
void core_waiter_end(struct core *k, struct core_waiter *w);
/* Was the waiter told of its job's cancel? */
bool core_waiter_cancelled(struct core_waiter *w);
/* A cancel of running job `id` was recorded (core_job_cancel): its waits
 * registered with the id end at once, and the job, when this process runs
 * it, counts as told (the look for cancels recorded elsewhere passes it
 * over). Any thread. */
void core_waiters_cancel(struct core *k, const char *id);

/* Options for waiting on a task: stop ends the wait at once, a registered
 * waiter (may be NULL) looks when its node fails and ends when its job is
 * cancelled (core.c). */
struct pve_wait_opts core_wait_opts(struct core *k, struct core_waiter *w, long deadline_ms);

/* A creation leaves `node` after a failure there (for the metrics). */
void core_note_failover(struct core *k, const char *node);

/* A cancel was asked (store_job_cancel) and the job has not ended: the
 * record's cancel fields, as the claim or the last checkpoint read them.
 * Runners look at it where stopping is safe (cancel.c). */
bool job_cancel_asked(const struct job_rec *j);
/* The same after reading j's cancel fields from the store when none is
 * known yet (one recorded since the last checkpoint read them). */
bool job_cancel_read(struct core *k, struct job_rec *j);
/* The error a cancelled job ends with: "cancelled by WHO at step STEP"
 * (`step`, or the job's when NULL or empty: where the cancel was seen)
 * and, when `what` is not empty, ": what". */
void job_cancel_error(const struct job_rec *j, const char *step, char *out, size_t len,
                      const char *what);

/* Write the job (step, node, upid, progress...) and an event line; reads
 * back the job's cancel fields. */
void job_checkpoint(struct core *k, struct job_rec *j, const char *step, int progress,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A clone of this job's found on Proxmox (its answer lost, or sent before a
 * crash): the job goes to wait_clone with the event `what`. Through its
 * task when it still copies (`cloning`) and the task of template `tpl` to
 * `newid` on `node` is found (j->upid: its failure told as the clone's, its
 * end seen at once); else through the VM's config lock (j->upid empty). */
void job_adopt_clone(struct core *k, pve_client *pc, struct job_rec *j, const char *node, int tpl,
                     int newid, bool cloning, const char *what);

/* Run one claimed create job until it is done, failed, or the core stops
 * (then it returns with the job still running, to be resumed). */
void create_run(struct core *k, struct job_rec *j);

/* Run a claimed node drain (drain.c). */
void drain_run(struct core *k, struct job_rec *j);
/* Why a drain is cancelled when its node's cordon is lifted (cordon.c),
 * in its cancel's line and reason, and in its error (drain.c). */
#define DRAIN_UNCORDONED "the node was uncordoned"

/* Run a claimed job of any other kind (control.c; migrate.c). */
void control_run(struct core *k, struct job_rec *j);

/* Would the deltas pass the owner's quota ([quota] sections)? CORE_E_FULL
 * with a message saying what is left. */
int core_quota_judge(const struct cfg_quota *q, const char *owner, const struct quota_use *u,
                     int dvms, int dcores, int64_t dmem, int64_t ddisk, struct core_error *err);
int core_quota_check(struct core *k, const char *owner, int dvms, int dcores, int64_t dmem,
                     int64_t ddisk, struct core_error *err);

/* Where a VM's disks are (vmdisks.c): of its volumes (cfg's disks, a
 * cloud-init drive included, see pve_vm_config_volumes), those on storages
 * that `node` marks shared stay where they are when the VM migrates; the
 * others (local) are copied to the target's storage. Bytes and counts; a
 * volume's bytes are its size=, else what its storage's content listing on
 * `node` says for VM vmid. A volume on a storage the node does not list
 * counts as local. 0, or the error of reading the node's storages or a
 * volume's size (then *e names the volume: it must not count as 0). */
struct disk_placement {
    int64_t local, shared;
    int nlocal, nshared;
    /* the first local volume that is a linked clone's (STORAGE:base-T-disk-N/...):
     * Proxmox does not migrate it ("" when none) */
    char linked[256];
};
int core_disk_placement(pve_client *pc, const char *node, int vmid, const struct pve_vm_config *cfg,
                        struct disk_placement *out, struct pve_error *e);
/* The boot disk's bytes: size=, else its storage's listing (as above); 0
 * when the VM has no boot disk. 0, or the error of the listing. */
int core_boot_size(pve_client *pc, const char *node, int vmid, const struct pve_vm_config *cfg,
                   int64_t *size, struct pve_error *e);

/* Does a PVE tag list ("a;b,c d") contain `tag`? */
bool core_has_tag(const char *tags, const char *tag);
/* The caller's enabled record of vmid into *v (released by the caller on
 * success): another owner's VM is CORE_E_NOTFOUND, a record not enabled
 * CORE_E_CONFLICT; with node_up, a VM on a node known down is refused now
 * (CORE_E_UNAVAILABLE) rather than failed later by its job. */
int core_vm_load_owned(struct core *k, int vmid, const char *owner, bool node_up, struct vm_rec *v,
                       struct core_error *err);

/* Work was queued: wake one idle worker (it wakes the next when it finds
 * a job). Any thread, no lock held. */
void core_wake(struct core *k);
/* Sleep up to ms, woken only by a stop; true when the core stops. */
bool core_nap(struct core *k, long ms);
/* Sleep until mono ms `until`, a stop, or one of the fleet's `notes`
 * (taken: cleared); true when the core stops. One waiter per note kind:
 * the keeper takes FLEET_NOTE_WANTED and FLEET_NOTE_DOWN, the events keeper
 * FLEET_NOTE_HEALTH. */
bool core_nap_until(struct core *k, int64_t until, unsigned notes);
/* Is the core stopping? Any thread. */
bool core_stopping(struct core *k);

/* The events keeper and the webhook threads (events.c, webhook.c):
 * started by core_start, stopped by core_stop (after k->stopping). */
int events_start(struct core *k);
void events_stop(struct core *k);
int webhooks_start(struct core *k);
void webhooks_stop(struct core *k);
void webhooks_free(struct core *k);

/* Fill err (may be NULL) with code, the field it names and a message (no
 * node);
 * returns code. */
int core_fail(struct core_error *err, enum core_err code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* What a job would add to its owner's use (update, resize, the temporary
 * disk of a reinstall). */
struct quota_delta {
    int cores;
    int64_t memory_mb, disk_gb;
};
/* Queue a job of `kind` on the record v (`request` is stolen; job_id is
 * filled): the job and its first event in one store transaction, with d the
 * owner's quota checked inside it too (control.c). */
int core_enqueue(struct core *k, struct vm_rec *v, const char *kind, json_t *request,
                 char job_id[40], const struct quota_delta *d, struct core_error *err);

/* Run a claimed reinstall job (reinstall.c). */
void reinstall_run(struct core *k, struct job_rec *j);

/* A random (version 4) UUID. */
void core_uuid(char out[40]);

/* Wait for a Proxmox task (pve_task_wait's schedule over the whole wait,
 * however long) until deadline_ms; -1 when the core is stopping (the job
 * resumes later), else pve_task_wait's result. Leases are renewed by the
 * leaser thread meanwhile. */
int core_wait_task(struct core *k, pve_client *pc, const char *upid, long deadline_ms,
                   struct pve_error *err);
/* The same for a task of job j that its cancel may cut short: -3 when a
 * cancel of j is recorded (before the wait: read from the store once the
 * wait is registered, so none falls between; during it: told in this
 * process by core_waiters_cancel), with j's cancel fields read. The task
 * itself runs on: the caller decides (stop it, wait for it). */
int core_wait_task_job(struct core *k, pve_client *pc, const char *upid, struct job_rec *j,
                       long deadline_ms, struct pve_error *err);

/* Per-node clone slots (limit: the node's max_clones or clones_per_node). */
bool clone_slot_take(struct core *k, const char *node, const char *job);
void clone_slot_give(struct core *k, const char *node, const char *job);

#endif
