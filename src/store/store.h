/* store: proxd's persistence, behind one interface with two backends
 * (SQLite by default, PostgreSQL when several proxd instances share the
 * work). Nothing outside src/store/ includes sqlite3.h or libpq-fe.h.
 *
 * What is stored:
 *  - VM records (one per request; kept after deletion for audit),
 *  - jobs (durable state machines: kind, step, node, UPID, attempts), with a
 *    lease so that exactly one proxd instance runs a job at a time,
 *  - job events (the steps a job went through, for progress streams),
 *  - VMID allocations (reserved / used / foreign / quarantined), the single
 *    source of truth that keeps two creations from ever sharing an ID,
 *  - IP addresses of pools (reserved / used / quarantined / foreign / held)
 *    and each VM's network identity (MAC, bridge, ipconfig0),
 *  - capacity reservations of in-flight creations per node,
 *  - API tokens (hashes only) and idempotency keys,
 *  - the event log (every change, written with it), node health, and the
 *    webhooks' cursors with their leases.
 *
 * Threads: a `store` handle is shared by all threads; each thread gets its
 * own database connection internally (SQLite: a connection per thread, WAL,
 * BEGIN IMMEDIATE for every writing transaction, busy retries; PostgreSQL: a
 * connection per thread). Every function is one transaction.
 *
 * Errors: 0 (STORE_OK) or an enum store_err; details in the optional
 * struct store_error. Strings in records are bounded copies. */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store store;

enum store_err {
    STORE_OK = 0,
    STORE_E_NOTFOUND = 1,
    STORE_E_CONFLICT = 2, /* unique key taken, lease held by another, state changed */
    STORE_E_FULL = 3,     /* no free VMID in the ranges given */
    STORE_E_DB = 4,       /* the database failed (I/O, corruption, connection) */
    STORE_E_INVALID = 5,  /* bad arguments or URL */
};

struct store_error {
    enum store_err code;
    char message[512];
    /* For address operations: what the error is about ("ippool": the pool
     * in `pool` is exhausted; "address": the wanted address is taken;
     * "mac": the MAC is taken), else "". */
    char field[16];
    char pool[64];
};

const char *store_strerror(enum store_err e);

/* url: "sqlite:/path/to/proxd.db" or "postgresql://user@host/db" (also
 * "postgres://"). Creates the schema or migrates it (versioned migrations).
 * SQLite needs a file on a local filesystem ("sqlite:///abs/path" works too;
 * ":memory:" is refused: each thread has its own connection). A handle must
 * not be used across fork(): the child opens its own (the old one answers
 * STORE_E_INVALID there). */
store *store_open(const char *url, struct store_error *err);
/* Closes every thread's connection: call it when no other thread uses the
 * handle any more. */
void store_close(store *s);
/* A statement as this store's backend runs it (its {TOKENS} expanded,
 * parameters renamed); the caller frees it. For tests and diagnostics. */
char *store_sql_text(store *s, const char *sql);

/* Patience, for the calling thread from now on (a job worker's, while it
 * runs a job). An operation that finds the database out of reach
 * (STORE_E_DB: no connection, the transaction cannot begin, or a lock held
 * past the retries' budget) calls wait(ctx, tries, err) (tries: 0, 1, ...
 * for this operation; err: the failure) and runs again when it returns
 * true, after it waited as it chose, instead of returning the error: a
 * job's writes are made once the database answers, not dropped in an
 * outage (many are fire-and-forget). wait returns false to give up (a
 * stopping daemon): the error is returned. Returned at once as before: a
 * statement's own error (corrupt data, I/O) and a failed COMMIT (its
 * outcome may be unknown). wait NULL: no patience, the default. wait must
 * not call the store. Any thread; it applies to every store handle. */
typedef bool (*store_wait_fn)(void *ctx, int tries, const struct store_error *err);
void store_thread_patience(store_wait_fn wait, void *ctx);

/* ---- VM records -------------------------------------------------------- */

enum vm_state {
    VMS_CREATING = 0,
    VMS_ENABLED,
    VMS_FAILED,
    VMS_DELETING,
    VMS_DELETED,
    VMS_LOST, /* deleted outside proxd */
};
const char *vm_state_name(enum vm_state s);
int vm_state_parse(const char *s); /* -1 when unknown */

struct vm_rec {
    int64_t id; /* record id */
    int vmid;
    char os[32];
    char name[64];
    char owner[64];
    char node[64]; /* "" until placed */
    enum vm_state state;
    char power[16]; /* running, stopped, paused, unknown */
    int cores;
    int64_t memory_mb;
    int64_t disk_gb;
    char job[40];                   /* the job that last acted on it */
    char error[1024];               /* why it failed */
    json_t *pending;                /* pending changes (object) or NULL; owned by the record */
    int64_t created_at, updated_at; /* unix ms */
};
void vm_rec_release(struct vm_rec *r);

/* Insert a record; r->id is set, and r->created_at (when 0) and
 * r->updated_at. STORE_E_CONFLICT when the VMID has a live record. */
int store_vm_insert(store *s, struct vm_rec *r, struct store_error *err);
/* store_vm_insert, and in the same transaction the used addresses and the
 * vm_net row of record `adopt_from` (0: none) move to the new record (a
 * creation that goes on under another VMID keeps its network identity). */
int store_vm_insert_adopt(store *s, struct vm_rec *r, int64_t adopt_from, struct store_error *err);
/* What an owner's live VMs (creating, enabled, deleting) hold. */
struct store_usage {
    int vms, cores;
    int64_t memory_mb, disk_gb;
    int addresses; /* used or reserved by the live records */
};

/* A new creation, submitted all or nothing in one transaction: the VM
 * record (vm->id set as by store_vm_insert), its job, the job's first event
 * `event`, and optionally:
 *  - idem: the idempotency answer stored under (owner, key). When that key
 *    is taken already nothing is written, STORE_E_CONFLICT is returned and
 *    `first` gets the stored answer (new reference): of concurrent requests
 *    with one key, in any number of processes sharing the database, exactly
 *    one makes a job;
 *  - quota: limits on the owner's live VMs (0: unlimited), checked with the
 *    new VM counted, inside the transaction. When the VM would exceed one,
 *    nothing is written, STORE_E_FULL is returned and `used` says what the
 *    owner's live VMs held (without the new one). */
struct store_idem {
    const char *owner, *key;
    json_t *answer; /* borrowed */
};
struct job_rec;
struct vmid_range;
struct store_addr_req;
struct store_net;
struct store_submit {
    struct vm_rec *vm;
    struct job_rec *job;
    const char *event;
    const struct store_idem *idem;
    const struct store_usage *quota;
    /* Optional (all zero: the VMID is vm->vmid, as it was chosen before;
     * nothing of an address is written). With nranges > 0, the VMID is
     * reserved inside the transaction as store_vmid_reserve does (for the
     * job, `taken` sorted) and written to vm->vmid and job->vmid (and to
     * the member "vmid" of the idempotency answer when it is an object). With
     * naddrs > 0, each address is reserved (store_addr_reserve's rules,
     * pools locked in name order) and bound to the new record as `used`;
     * `net` (required then) is the record's vm_net row: a MAC of a live
     * record already is STORE_E_CONFLICT with field "mac" (draw another).
     * Any failure writes nothing. */
    const struct vmid_range *ranges;
    size_t nranges;
    const int *taken_vmids;
    size_t ntaken;
    struct store_addr_req *addrs;
    size_t naddrs;
    const struct store_net *net;
    /* Optional: called inside the transaction once every address is
     * reserved (reqs[i].got set), before the vm_net row is written, with a
     * copy of *net to complete (ipconfig0 names the addresses). Like pick,
     * it may run again (a retried transaction) and must not call the store. */
    void (*net_fill)(void *ctx, const struct store_addr_req *reqs, size_t n, struct store_net *net);
    void *net_ctx;
    json_t *first;           /* out (STORE_E_CONFLICT by the key): owned by the caller */
    struct store_usage used; /* out (STORE_E_FULL) */
};
int store_create_submit(store *s, struct store_submit *sub, struct store_error *err);

/* Update every mutable field of the record with r->id (all but vmid and
 * created_at). STORE_E_CONFLICT when it would make a second live record of
 * the VMID, STORE_E_NOTFOUND when there is no such id. Once
 * store_addr_policy was called, a write that moves the record to a gone
 * state (failed, deleted, lost) releases its addresses (to quarantine,
 * per-pool times) and marks its vm_net row not live in the same
 * transaction, except addresses a leftover of their creation still holds
 * (store_leftover_done releases those). */
int store_vm_update(store *s, const struct vm_rec *r, struct store_error *err);
/* store_vm_update, only while the stored record is still in state
 * `expected` and, when read_at is not 0, its updated_at is still read_at
 * (the value the caller read): the check and the write are one statement,
 * so no other writer, in this process or in another proxd sharing the
 * database, can land between them (a DELETE's move to "deleting" is not
 * written over). Otherwise nothing is written and STORE_E_CONFLICT says
 * what the record holds; STORE_E_NOTFOUND when there is no such id. The
 * caller reads again and decides again (a compare-and-swap). */
int store_vm_update_if(store *s, const struct vm_rec *r, enum vm_state expected, int64_t read_at,
                       struct store_error *err);
/* store_vm_update_if (read_at 0) and the event ev (its type and job set)
 * in one transaction, ev after the events of the record's own change:
 * both commit or neither. ev is left out when the log already holds an
 * event of its type for its job from `since` (unix ms) on, so a job that
 * writes its outcome again after a crash logs it once (vm.reinstalled). */
struct store_event;
int store_vm_update_logged(store *s, const struct vm_rec *r, enum vm_state expected,
                           struct store_event *ev, int64_t since, struct store_error *err);
/* The live record of a VMID (not deleted/failed), or STORE_E_NOTFOUND. */
int store_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err);
int store_vm_get_id(store *s, int64_t id, struct vm_rec *out, struct store_error *err);

struct vm_filter {
    const char *owner, *node, *os; /* NULL: any */
    int state;                     /* -1: any; a given state wins over include_gone */
    bool include_gone;             /* deleted, failed and lost records too */
    int64_t after_id;              /* pagination: records with id > after_id */
    int limit;                     /* 0: 100; at most 1000 */
};
/* Records ordered by id. *out is an array of *n records; free each with
 * vm_rec_release, then free(*out). */
int store_vm_list(store *s, const struct vm_filter *f, struct vm_rec **out, size_t *n,
                  struct store_error *err);
/* The records store_vm_list would return, handed to fn one at a time
 * without copying them into an array (for pages that are encoded as they
 * are read). The record is valid only during the call: its storage is reused
 * for the next, and its `pending` released. fn returns 0 to go on, anything
 * else to stop early (the scan still answers STORE_OK). fn must not call
 * the store. When the backend has to run the read again (SQLite busy), it
 * first calls fn with r == NULL: forget every record seen so far. Every
 * filter is served by an index (owner, node, os, state) together with the
 * `after_id` cursor. */
typedef int (*store_vm_fn)(void *ctx, const struct vm_rec *r);
int store_vm_scan(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                  struct store_error *err);

/* ---- jobs --------------------------------------------------------------- */

enum job_state { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE, JOB_FAILED };
const char *job_state_name(enum job_state s);

struct job_rec {
    char id[40];   /* UUID */
    char kind[16]; /* create, start, stop, shutdown, pause, resume, reboot, update, resize, delete,
                      reinstall, snap-... */
    enum job_state state;
    int vmid;
    char owner[64];
    char step[32];    /* the step reached (written before each Proxmox call) */
    char node[64];    /* the node the job is working on */
    char upid[256];   /* the task it started, if any */
    int progress;     /* percent */
    json_t *request;  /* the request (owned) */
    json_t *attempts; /* [{"node":..,"error":..}] (owned) */
    char error[1024];
    char lease_owner[64];
    int64_t lease_until; /* unix ms */
    int64_t created_at, updated_at, finished_at;
    /* store_job_cancel: when a cancel was asked (unix ms, 0: never) and by
     * whom; written by it only (updates and checkpoints leave them, and
     * read them back into the record) */
    int64_t cancel_at;
    char cancel_by[64];
};
void job_rec_release(struct job_rec *j);

/* j->vmid 0: the job is not (yet) tied to a VM and is not serialised with
 * others. An empty j->id gets a new UUID; created_at 0 becomes now. */
int store_job_insert(store *s, struct job_rec *j, struct store_error *err);
/* Write step, node, upid, progress, attempts, state, error (all fields),
 * and vmid; kind, owner, request and created_at are not rewritten. A
 * terminal state sets finished_at (now, unless given). With j->lease_owner
 * set, the write applies only while that owner holds the job, else
 * STORE_E_CONFLICT (a runner that lost its lease cannot overwrite). */
int store_job_update(store *s, struct job_rec *j, struct store_error *err);
int store_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err);
/* A job's state, kind and finished_at (0 while unfinished), without its
 * request and attempts: STORE_E_NOTFOUND when there is no such job. */
struct job_brief {
    enum job_state state;
    char kind[16];
    int64_t finished_at;
    int vmid; /* the VM it is tied to (a creation that ended done: the VM it made) */
};
int store_job_brief(store *s, const char *id, struct job_brief *out, struct store_error *err);
/* store_job_update and, when `event` is not NULL or empty, an event line
 * (j->step, j->progress, event) in one transaction: a job's state and the
 * event that tells it (its terminal "done" or "failed" above all) are
 * written together or not at all. */
int store_job_checkpoint(store *s, struct job_rec *j, const char *event, struct store_error *err);

/* Cancel job `id` (store_job_cancel.c), in one transaction:
 *  - queued (no runner took it yet): it ends failed at once with
 *    c->error, and what its submission held goes back: a creation's VM
 *    record fails (its addresses go back as any gone record's) and its
 *    reserved VMID is released (c->vmid_quarantine_ms, as a failed
 *    creation's); a delete's record is enabled again. *outcome
 *    STORE_CANCEL_ENDED;
 *  - running: the request is recorded (cancel_at, cancel_by); its runner,
 *    in whichever instance, reads it at its next checkpoint, and the jobs
 *    watch of every process is told (store_jobs_watch), so that the
 *    runner's process can tell its waits at once (store_job_cancels_held).
 *    STORE_CANCEL_ASKED;
 *  - asked before (whatever its state now): nothing changes,
 *    STORE_CANCEL_AGAIN;
 *  - running, with c->queued_only: nothing changes, STORE_CANCEL_RUNS
 *    (a cancelled drain's moves: those a worker took finish).
 * A new request is a job event line and a `job.cancelled` event (data:
 * kind, step, by, ended). *out (may be NULL; release it) gets the job as
 * it is after. STORE_E_NOTFOUND: no such job; STORE_E_CONFLICT: it had
 * finished (done or failed) without a cancel, the message saying which. */
enum store_cancel {
    STORE_CANCEL_ENDED = 1,
    STORE_CANCEL_ASKED,
    STORE_CANCEL_AGAIN,
    STORE_CANCEL_RUNS
};
struct job_cancel_req {
    const char *by;             /* who asks (the token's owner) */
    const char *error;          /* the error a queued job ends with */
    int64_t vmid_quarantine_ms; /* a queued creation's VMID */
    bool queued_only;           /* a running job is left alone (STORE_CANCEL_RUNS) */
    const char *why; /* may be NULL: why, in the job's line ("cancel requested by WHO (why)",
                        a queued job's "...before it started: why") and the event's data.reason */
};
int store_job_cancel(store *s, const char *id, const struct job_cancel_req *c, struct job_rec *out,
                     enum store_cancel *outcome, struct store_error *err);
/* Claim one job that is queued, or running with an expired lease (its runner
 * died), for `owner` until now+lease_ms; oldest first. Jobs for a VMID that
 * another unfinished job holds (with a live lease) are skipped, so operations
 * on one VM are serialised. STORE_E_NOTFOUND when there is none. */
int store_job_claim(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                    struct store_error *err);
/* store_job_claim, taking a running job whose lease ran out only when it
 * ran out before `expired_before` (unix ms; 0: none such, queued jobs
 * only): after a database outage, leases that lapsed during it are their
 * holders' to renew, not proof that they died. Nor are those a claim
 * finds when its write began more than a second after the call (it
 * waited for the database, as their holders did): then only queued jobs
 * and leases given up (store_job_expire_owner) are taken. store_job_claim
 * is this with now. */
int store_job_claim_at(store *s, const char *owner, int64_t lease_ms, int64_t expired_before,
                       struct job_rec *out, struct store_error *err);
/* Extend the lease; STORE_E_CONFLICT if another owner took the job. */
int store_job_renew(store *s, const char *id, const char *owner, int64_t lease_ms,
                    struct store_error *err);
/* Extend, in one transaction, every lease `owner` holds on a running job
 * (the leaser's one write per round, however many jobs it runs); *n (may
 * be NULL) gets how many. The owner check is in the statement: a job that
 * another owner took over is not renewed, nor a finished one, nor one
 * whose lease was given up by store_job_expire_owner. A lease that ran out
 * but that no one took over yet is renewed (like store_job_renew): so the
 * caller must hold, under `owner`, only jobs it is running, and give up
 * those of an earlier process that had its name (store_job_expire_owner
 * before its first renewal). No jobs held: STORE_OK with *n = 0. */
int store_job_renew_owner(store *s, const char *owner, int64_t lease_ms, int *n,
                          struct store_error *err);
/* The earliest lease end (wall ms) still to come of a running job leased
 * to another owner than `owner`, 0 when there is none: when an idle worker
 * should look again for a job whose runner died. (A lease that ended is
 * claimable now, or held behind another job, which ends or whose lease
 * ends: that one is counted.) */
int store_job_next_lease_end(store *s, const char *owner, int64_t *at, struct store_error *err);
/* Jobs queued elsewhere: an fd that turns readable (POLLIN) after any
 * process committed a queued job or freed a dead runner's (submissions,
 * store_job_expire_owner, a cancel that ended a queued job) or recorded
 * a cancel of a running job (store_job_cancel: its runner, whichever
 * process it is, reads it with store_job_cancels_held), this
 * process's own commits included; -1 when this store cannot tell (look on
 * a timer then). Call store_jobs_watch_drain once it turned readable,
 * before looking: what was told before the drain is seen by the look. A
 * commit's word may reach the watch some time after the commit returned
 * (PostgreSQL: the watch's session gets the NOTIFY from its own backend,
 * later), even after a drain that followed the commit: a wake-up may so
 * come for a commit that an earlier look already saw, and its look finds
 * nothing new (the watch says that a look is due, not what changed). The
 * fd belongs to the store (store_close closes it); it may change after a
 * drain (a broken watch is made again): ask for it before each wait. One
 * thread at a time (the daemon's watcher). */
int store_jobs_watch(store *s);
void store_jobs_watch_drain(store *s);
/* The distinct owners of running jobs' leases (at most max). */
int store_job_lease_owners(store *s, char (*owners)[64], size_t max, size_t *n,
                           struct store_error *err);
/* The jobs leased to `owner` that still run and whose cancel is recorded
 * (store_job_cancel's STORE_CANCEL_ASKED: cancel_at set), at most max of
 * them (in id order), their ids in ids[0..*n). A runner's process learns
 * this way, when its jobs watch tells it (store_jobs_watch: a cancel of a
 * running job is told, from any process) or on its timer, of cancels
 * recorded by another instance or process, which could not tell its
 * waits itself. One read over the unfinished jobs' index; nothing held or
 * cancelled, or max 0: STORE_OK with *n = 0. A cancel of a job whose lease
 * another owner took over is that owner's, not listed here. */
int store_job_cancels_held(store *s, const char *owner, char (*ids)[40], size_t max, size_t *n,
                           struct store_error *err);
/* Expire the leases held by `owner` (a runner known to be dead), so that
 * the jobs are claimed again at once instead of after the lease. */
int store_job_expire_owner(store *s, const char *owner, struct store_error *err);
struct job_filter {
    const char *owner, *kind; /* NULL: any */
    int state;                /* -1: any */
    int vmid;                 /* 0: any */
    int64_t before;           /* pagination: jobs submitted before this cursor; 0: the newest */
    int limit;                /* 0: 100; at most 1000 */
};
/* Jobs newest first (submission order). *out is an array of *n jobs; free
 * each with job_rec_release, then free(*out). *next (may be NULL) is the
 * cursor for the page after this one, 0 when this page is not full. */
int store_job_list(store *s, const struct job_filter *f, struct job_rec **out, size_t *n,
                   int64_t *next, struct store_error *err);
struct job_ended {
    int vmid;
    int64_t at; /* unix ms */
};
/* For each VMID of the owner: when its last job of a kind matching `like`
 * (an SQL LIKE pattern, "snap-%") ended, done or failed. *out is the
 * caller's to free. */
int store_job_ended_by_vm(store *s, const char *owner, const char *like, struct job_ended **out,
                          size_t *n, struct store_error *err);
/* Unfinished jobs (queued or running) count, per kind if kind != NULL. */
int store_job_count_active(store *s, const char *kind, int *n, struct store_error *err);

struct job_event {
    int64_t seq;
    int64_t ts; /* unix ms */
    char step[32];
    int progress;
    char message[512];
};
int store_job_event_add(store *s, const char *job, const char *step, int progress,
                        const char *message, struct store_error *err);
/* Events with seq > after, oldest first; free(*out). */
int store_job_events(store *s, const char *job, int64_t after, struct job_event **out, size_t *n,
                     struct store_error *err);

/* ---- VMID allocation ------------------------------------------------------ */

struct vmid_range {
    int lo, hi; /* inclusive */
};

/* Atomically reserve the first VMID in the ranges (tried in order) that is
 * not allocated (reserved, used, foreign, or quarantined until after now)
 * and not in `taken` (IDs Proxmox reports; sorted ascending, may be NULL),
 * for `job`. STORE_E_FULL when none is free. */
int store_vmid_reserve(store *s, const struct vmid_range *ranges, size_t nranges, const int *taken,
                       size_t ntaken, const char *job, int *vmid, struct store_error *err);
/* The VMID still reserved (not yet used) under job, in *vmid: a step that
 * reserved one and was killed before it wrote the number down finds it
 * again. STORE_E_NOTFOUND (and *vmid 0) when the job holds none. */
int store_vmid_reserved_by(store *s, const char *job, int *vmid, struct store_error *err);
/* A creation that goes on under a new VMID (core/create.c move_vmid)
 * reserves it, records it, closes the old record and writes the new VMID
 * into its job: several transactions, and a kill may fall between them. The
 * job's VMID then still is the old one (`except`), and the new one is held
 * reserved by the job besides. This finds it, so that the move made again
 * takes it instead of reserving yet another (a VMID leaked for good): the
 * lowest VMID reserved under job other than `except` that no leftover names
 * (a leftover's VMID stays reserved to the job that left it until the
 * reconciler is done with it, store_leftover_done). STORE_E_NOTFOUND (and
 * *vmid 0) when there is none. */
int store_vmid_reserved_other(store *s, const char *job, int except, int *vmid,
                              struct store_error *err);
/* The job ends under VMID `keep`: every other VMID still reserved under it
 * (one a move reserved before a kill and that the resumed job did not take,
 * see store_vmid_reserved_other) goes back, quarantined for quarantine_ms
 * (0: free at once), except those a leftover names (store_leftover_done
 * gives them back). One transaction; *n (may be NULL) says how many went
 * back. None is not an error. */
int store_vmid_release_others(store *s, const char *job, int keep, int64_t quarantine_ms, int *n,
                              struct store_error *err);
/* The allocation state of vmid ("reserved", "used", "foreign",
 * "quarantine") in state; STORE_E_NOTFOUND when it is not allocated. */
int store_vmid_state(store *s, int vmid, char state[16], struct store_error *err);
/* The reserved ID now has a VM (idempotent). STORE_E_NOTFOUND when it is
 * not allocated, STORE_E_CONFLICT when foreign or quarantined. */
int store_vmid_mark_used(store *s, int vmid, struct store_error *err);
/* Proxmox says the ID exists but not because of us: never hand it out
 * while it does. Marked again, its time (vmid_foreign.marked_at) is now.
 * The reconciler gives it back once an inventory read begun after the mark
 * shows no VM of it (store_vmid_release_foreign). */
int store_vmid_mark_foreign(store *s, int vmid, struct store_error *err);
/* A foreign ID and when it was last marked (unix ms, the marking process's
 * clock). */
struct vmid_foreign {
    int vmid;
    int64_t marked_at;
};
/* Every foreign ID, ascending by VMID, in *out (the caller frees it; NULL
 * when *n is 0). None is not an error. */
int store_vmid_foreign_list(store *s, struct vmid_foreign **out, size_t *n,
                            struct store_error *err);
/* Give a foreign ID back, quarantined for quarantine_ms (0: free at once),
 * but only if it is still foreign and was last marked before
 * marked_before (unix ms: when the read that no longer shows its VM began).
 * and while nothing of proxd's names it: a queued or running job whose
 * VMID it is (a creation killed after it marked the ID, before it moved to
 * another: its resumed run reads the mark), a leftover, a live record.
 * The check and the write are one transaction, conditional on the rows, so
 * a mark written since (a creation that met the VM again, another process
 * sharing the database) or a change of state wins: STORE_E_CONFLICT then
 * (and when something names it), STORE_E_NOTFOUND when the ID is not
 * allocated, and nothing is written. */
int store_vmid_release_foreign(store *s, int vmid, int64_t marked_before, int64_t quarantine_ms,
                               struct store_error *err);
/* Give the ID back, quarantined for quarantine_ms (0: free at once).
 * STORE_E_NOTFOUND when it is not allocated. */
int store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err);
/* How many IDs of [lo, hi] are allocated (for range fill metrics). */
int store_vmid_count(store *s, int lo, int hi, int *n, struct store_error *err);
/* The same, and in *quarantined (NULL: not wanted) how many of those are
 * quarantined: given back by a VM or a failed creation, not yet free again.
 * They are allocated but no VM has them, which a listing says apart. */
int store_vmid_counts(store *s, int lo, int hi, int *n, int *quarantined, struct store_error *err);

/* ---- IP addresses (docs/design/ippool.md) -------------------------------- */

/* Addresses are keys (ippool_addr_key(): "4" or "6" and 32 hex digits, so
 * that text order is address order); the store never parses them. The
 * policy of pools (which addresses a pool hands out, which is next, how
 * many are free) is the core's (ippool.h): the store keeps who holds what
 * and makes every decision under the pool's lock, so that of any number of
 * concurrent reservations in any number of processes sharing the database,
 * no two ever hold one address.
 * States: reserved (by a creation's job, no record yet), used (bound to a
 * VM record), quarantine (released, until a time), foreign (seen in a VM
 * that is not proxd's: never handed out), held (an admin's: never handed
 * out). Expired quarantines count as free and are taken over in place. */
#define STORE_ADDR_KEY 34     /* a key and its NUL */
#define STORE_ADDR_MAX_REQS 8 /* addresses in one reservation */

struct store_addr_req {
    const char *pool;
    const char *want; /* a key, or NULL: ask pick */
    /* Called inside the transaction, under the pool's lock, with the
     * pool's allocated keys (ascending; expired quarantines left out, but
     * held and foreign ones of any pool in it counted too) and the pool's
     * cursor ("" if none); writes the chosen key to out, or returns
     * STORE_E_FULL. It may be called again (a retried transaction), must
     * not call the store, and its choice must not be in `alloc`. */
    int (*pick)(void *ctx, const char *const *alloc, size_t n, const char *cursor,
                char out[STORE_ADDR_KEY]);
    void *ctx;
    char got[STORE_ADDR_KEY]; /* out: the reserved key */
};

/* A VM record's network identity (vm_net). */
struct store_net {
    char mac[18]; /* "02:AB:CD:EF:01:23", upper case */
    char bridge[16];
    int vlan;
    char ipconfig0[256], nameserver[256], searchdomain[256];
    int64_t seen_at; /* out: last guest-agent confirmation, unix ms (0: never) */
};

/* Reserve one address per request for `job`, in one transaction (pools
 * locked in name order, so two creations asking for two pools never
 * deadlock); the cursor of each pool moves to what it got. STORE_E_FULL
 * (err->field "ippool", err->pool the pool) when a pool has nothing free;
 * STORE_E_CONFLICT (field "address") when `want` is held, used or reserved;
 * either way nothing is written. store_create_submit does the same inside
 * a creation's transaction. */
int store_addr_reserve(store *s, const char *job, struct store_addr_req *reqs, size_t n,
                       struct store_error *err);
/* The job's reserved addresses now belong to VM record vm_id (VMID vmid):
 * used. STORE_E_NOTFOUND when the job holds none. */
int store_addr_bind_job(store *s, const char *job, int64_t vm_id, int vmid,
                        struct store_error *err);

/* How long a pool's released addresses stay in quarantine. An entry with
 * pool NULL applies to the pools not listed; without one, their addresses
 * are free at once. */
struct store_addr_quarantine {
    const char *pool;
    int64_t ms;
};
/* The quarantine times that every release made by the store itself uses
 * (store_vm_update/_if to a gone state, store_leftover_done); the list is
 * copied. Call it before other threads use the handle (at start-up). */
void store_addr_policy(store *s, const struct store_addr_quarantine *q, size_t nq);
/* Release what a VM record holds (used) and mark its vm_net row not live;
 * what a job holds reserved (a creation that failed before its record).
 * Releasing nothing is not an error; *n (may be NULL) counts the rows. */
int store_addr_release_vm(store *s, int64_t vm_id, const struct store_addr_quarantine *q, size_t nq,
                          size_t *n, struct store_error *err);
int store_addr_release_job(store *s, const char *job, const struct store_addr_quarantine *q,
                           size_t nq, size_t *n, struct store_error *err);

/* One row of addr_alloc. */
struct store_addr {
    char addr[STORE_ADDR_KEY];
    char pool[64];
    char state[16];
    char job[40];
    int64_t vm_id;
    int vmid;
    int64_t until, updated_at; /* unix ms */
    char note[256];
};
/* The row of one address (a key), in *out. STORE_E_NOTFOUND when proxd
 * has none. */
int store_addr_get(store *s, const char *key, struct store_addr *out, struct store_error *err);
/* The inventory saw these addresses in configs of VMs that are not
 * proxd's (where: e.g. "vm 123 on sv1"): foreign, never handed out. An
 * address proxd has used, reserved or held is not overwritten: it is a
 * conflict, returned in *conflicts (*nconf rows; free(*conflicts)). */
int store_addr_mark_foreign(store *s, const char *const *keys, size_t n, const char *where,
                            struct store_addr **conflicts, size_t *nconf, struct store_error *err);
/* Forget foreign addresses not seen since seen_before (unix ms). */
int store_addr_forget_foreign(store *s, int64_t seen_before, size_t *n, struct store_error *err);
/* An admin's hold: never handed out. STORE_E_CONFLICT (field "address")
 * when the address is used or reserved; holding a foreign or quarantined
 * one takes it over; holding again updates the note. Unhold:
 * STORE_E_NOTFOUND when it is not held. */
int store_addr_hold(store *s, const char *pool, const char *key, const char *note,
                    struct store_error *err);
int store_addr_unhold(store *s, const char *pool, const char *key, struct store_error *err);

/* A pool's rows, by address, after `after` (a key, "" or NULL: from the
 * start), of one state (NULL: any; "quarantine" includes expired ones),
 * at most limit (0: 100; at most 1000). Foreign rows belong to pool "".
 * free(*out). */
int store_addr_list(store *s, const char *pool, const char *state, const char *after, int limit,
                    struct store_addr **out, size_t *n, struct store_error *err);
/* A pool's allocated keys as store_addr_req.pick sees them (ascending,
 * expired quarantines left out), for the core's ippool_free; free(*out). */
int store_addr_allocated(store *s, const char *pool, char (**out)[STORE_ADDR_KEY], size_t *n,
                         struct store_error *err);
/* Addresses (used or reserved) held by an owner's live records. */
int store_addr_owner_count(store *s, const char *owner, int *n, struct store_error *err);
struct store_addr_counts {
    int64_t reserved, used, quarantined, held; /* quarantined: until after now */
};
int store_addr_counts(store *s, const char *pool, struct store_addr_counts *out,
                      struct store_error *err);

/* Addresses of pool used or reserved by live records of owner. */
int store_addr_count_owner(store *s, const char *pool, const char *owner, int64_t *n,
                           struct store_error *err);

/* Ranges of a pool added at run time ("ranges": handed out too,
 * "reserved": never), merged by the core with the configured ones. The
 * store checks keys, first <= last and one family; the core checks that
 * the range lies in the pool's CIDR. add sets id and created_at; del:
 * STORE_E_NOTFOUND when the pool has no such range; list: pool NULL for
 * every pool, by id; free(*out). */
struct store_addr_range {
    int64_t id;
    char pool[64];
    char kind[16]; /* "ranges" or "reserved" */
    char first[STORE_ADDR_KEY], last[STORE_ADDR_KEY];
    char created_by[64];
    int64_t created_at; /* unix ms */
};
int store_addr_range_add(store *s, struct store_addr_range *r, struct store_error *err);
/* add, once check(ctx, the pool's ranges now, n, r, err) returns STORE_OK
 * (else its code, err filled by it): both in one transaction under the
 * pool's address lock, so two additions each fine alone cannot together
 * make a plan the core cannot build. */
typedef int (*store_range_check_fn)(void *ctx, const struct store_addr_range *have, size_t n,
                                    const struct store_addr_range *r, struct store_error *err);
int store_addr_range_add_checked(store *s, struct store_addr_range *r, store_range_check_fn check,
                                 void *ctx, struct store_error *err);
int store_addr_range_del(store *s, const char *pool, int64_t id, struct store_error *err);
int store_addr_range_list(store *s, const char *pool, struct store_addr_range **out, size_t *n,
                          struct store_error *err);

/* Crash recovery, at start-up and once per reconcile pass: an address
 * reserved by a job that is finished or gone and never bound, and an
 * address used by a VM record that is gone (deleted, failed, lost, or no
 * record) while no leftover of its VMID remains, are released as
 * store_addr_release_* does. *n (may be NULL) counts them. */
int store_addr_sweep(store *s, const struct store_addr_quarantine *q, size_t nq, size_t *n,
                     struct store_error *err);

/* [proxd] network_drift = adopt: VM record vm_id (VMID vmid) takes the
 * addresses reqs (each a pool and `want`, no pick) and the network `net`
 * (mac, bridge, vlan, ipconfig0; the agent's confirmation is cleared), in
 * one transaction: its used addresses not among them go to quarantine (q,
 * as store_addr_release_vm), those it has already stay, the others are
 * reserved and bound as a creation's wanted address is (STORE_E_CONFLICT,
 * field "address", when one is held, used, reserved, foreign or in
 * quarantine; field "mac" when the MAC is another live record's). Nothing
 * is written on any error. */
int store_addr_adopt(store *s, int64_t vm_id, int vmid, struct store_addr_req *reqs, size_t n,
                     const struct store_net *net, const struct store_addr_quarantine *q, size_t nq,
                     struct store_error *err);

/* The pools the addresses record vm_id uses come from (each once, by
 * name); none is not an error; free(*out). */
struct store_pool_name {
    char name[64];
};
int store_addr_vm_pools(store *s, int64_t vm_id, struct store_pool_name **out, size_t *n,
                        struct store_error *err);
/* A record's vm_net row (live or not); STORE_E_NOTFOUND when none. */
int store_vm_net_get(store *s, int64_t vm_id, struct store_net *out, struct store_error *err);
/* The vm_net rows of the records ids[0..nids) (any order, at most
 * STORE_NET_IDS_MAX: a page of records), by record id, in one query:
 * a record without one is left out; free(*out). STORE_E_INVALID for more
 * ids. */
#define STORE_NET_IDS_MAX 1000
struct store_vm_net {
    int64_t vm_id;
    struct store_net net;
};
int store_vm_net_ids(store *s, const int64_t *ids, size_t nids, struct store_vm_net **out,
                     size_t *n, struct store_error *err);
/* What the guest agent reported (any JSON, stored compact) and when (now);
 * read back as a new reference (NULL: never). STORE_E_NOTFOUND when the
 * record has no network. */
int store_vm_net_seen(store *s, int64_t vm_id, const json_t *seen, struct store_error *err);
int store_vm_net_seen_get(store *s, int64_t vm_id, json_t **seen, struct store_error *err);
/* A creation that goes on under a new record (another VMID, move_vmid):
 * its used addresses and its vm_net row go with it, VMID new_vmid.
 * (store_addr_rebind_in is the same inside store_vm_insert's transaction,
 * the next step; moving nothing is not an error.) */
int store_addr_rebind(store *s, int64_t old_vm_id, int64_t new_vm_id, int new_vmid,
                      struct store_error *err);

/* ---- capacity reservations --------------------------------------------- */

/* What the inventory says is free on a node, for a reservation that must
 * fit: bytes free after the safety margins but before any reservation, and
 * when the refresh that produced the figures began (unix ms). pool names
 * the shared storage (Ceph, NFS...) the node's disk room is in, as
 * "cluster/storage" (borrowed; NULL: the node's own storage): its disk
 * reservations are then counted across every node of the pool, memory stays
 * per node. */
struct cap_room {
    int64_t mem, disk;
    int64_t seen_since;
    const char *pool;
};

/* One reservation per job (reserving again moves it); the job must exist
 * (else STORE_E_NOTFOUND). With `room`, the check and the reservation are
 * one transaction: when the reservations counted by store_reserved_on()
 * (at room->seen_since) plus this one exceed the room, nothing is written
 * and STORE_E_FULL is returned with what is free in the message. Two
 * creations, in one process or in several sharing the database, can never
 * both take the last room on a node, nor on a shared pool from two of its
 * nodes. A need of 0 (memory or disk) is never refused. room == NULL
 * reserves unconditionally (per node). */
int store_reserve_capacity(store *s, const char *job, const char *node, int64_t mem_bytes,
                           int64_t disk_bytes, const struct cap_room *room,
                           struct store_error *err);
/* The job's VM now exists on its node: its reservation stops belonging to
 * an in-flight creation but keeps counting, for callers that pass a
 * seen_since at or before now, until an inventory refresh that began after
 * now shows the VM (no process sees the room twice in between). Settled
 * reservations older than an hour are pruned. */
int store_settle_capacity(store *s, const char *job, struct store_error *err);
/* Releasing a job that holds nothing is not an error. */
int store_release_capacity(store *s, const char *job, struct store_error *err);
/* Sum of reservations on a node, excluding `except_job` (may be NULL):
 * those of in-flight creations, settled ones from `seen_since` (unix ms)
 * on, and those leftovers hold (store_leftover_add, any job's). Reservations of jobs that ended
 * otherwise are not counted. The memory is the node's; the disk is the node's own storage's (pool
 * NULL) or the shared pool's, from all its nodes (see struct cap_room). */
int store_reserved_on(store *s, const char *node, const char *pool, const char *except_job,
                      int64_t seen_since, int64_t *mem, int64_t *disk, struct store_error *err);

/* A job on an existing VM (an update, a resize...) and its first event
 * `event`, in one transaction. With `quota` (limits on j->owner's live
 * VMs, 0: unlimited), the owner's use is summed inside the transaction with
 * each VM counted at the larger of its record and what its queued or
 * running update/resize jobs ask (cores, memory_mb; disk_gb) or, for a
 * reinstall, its record plus the request's temp_disk_gb (the temporary
 * clone's disk), this job included: when that passes a limit the job raises, nothing is written,
 * STORE_E_FULL is returned and *used (may be NULL) gets the use without
 * this job. Concurrent changes of one owner, in any number of processes,
 * cannot pass the quota together. (store_create_submit counts queued
 * changes the same way.) */
int store_job_submit(store *s, struct job_rec *j, const char *event,
                     const struct store_usage *quota, struct store_usage *used,
                     struct store_error *err);

/* A job of which one at a time may be unfinished per node (a drain: kind
 * j->kind on node j->node) and its first event, in one transaction: when a
 * queued or running job of that kind on that node exists, nothing is
 * written, STORE_E_CONFLICT is returned and `other` (may be NULL) gets that
 * job's id. The decision runs under a lock on (kind, node) (SQLite: its
 * write lock): of concurrent submissions, in any number of processes on one
 * database, exactly one gets its job in while the others see it. */
int store_job_submit_sole(store *s, struct job_rec *j, const char *event, char other[40],
                          struct store_error *err);
/* The oldest unfinished (queued or running) job of kind on node, its id in
 * id; STORE_E_NOTFOUND when none. */
int store_job_active_on(store *s, const char *kind, const char *node, char id[40],
                        struct store_error *err);

/* A job that moves the VM record `vm_id` from state `from` to state `to`
 * (and names the job in the record), submitted with its first event in one
 * transaction: when the record is not in `from` any more, nothing is
 * written and STORE_E_CONFLICT says which state it is in. Of concurrent
 * submissions for one record (two DELETEs), in any number of processes,
 * exactly one gets its job. */
int store_job_submit_move(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                          enum vm_state from, enum vm_state to, struct store_error *err);

/* ---- clone slots ----------------------------------------------------------- */

/* A slot for `job` to run a clone on `node`, if fewer than `limit` jobs of
 * any proxd sharing the database hold one there (count and take are one
 * transaction); else STORE_E_FULL. Slots of jobs that are not running under
 * a live lease do not count, so a dead runner's slot frees itself when its
 * lease runs out. Taking again (same job) moves the slot. */
int store_clone_slot_take(store *s, const char *job, const char *node, int limit,
                          struct store_error *err);
/* Giving back a slot the job does not hold is not an error. */
int store_clone_slot_give(store *s, const char *job, struct store_error *err);

/* ---- leftovers -------------------------------------------------------------- */

/* A half-made VM that a creation could not remove at once (its node did not
 * answer, kept failing, or its clone task could not be seen to end): durable
 * work that the reconciler finishes. While it is recorded, the VMID stays
 * allocated (reserved to the creation's job), so no other creation takes it
 * before the VM is proven gone. */
struct leftover {
    int vmid;
    char node[64];
    char job[40];       /* the creation that made it */
    int64_t created_at; /* unix ms */
};
/* What a leftover does with its job's capacity reservation: the VM left
 * behind may hold its memory and disk while the inventory, read before it
 * was made, does not show it yet; released, its room went to the next
 * placement (on a shared pool: over the pool's size). */
enum store_left_room {
    STORE_LEFT_NO_ROOM = 0, /* the job's reservation is left as it is */
    /* moved to the leftover, counted as a settled reservation
     * (store_settle_capacity): the VM is made, a read of the inventory that
     * begins after now shows it */
    STORE_LEFT_MADE,
    /* moved to the leftover, counted until store_leftover_done: the VM may
     * still be made or grow (a clone request that may still be served, a
     * clone task that may still run), so a read after now may not show it */
    STORE_LEFT_PENDING,
};
/* Record one (again: the job is updated, and with a room other than
 * STORE_LEFT_NO_ROOM the room too). A room moves the job's reservation, if
 * it holds one, to the leftover in the same transaction; store_reserved_on
 * and a reservation's check count it, whichever job asks. */
int store_leftover_add(store *s, int vmid, const char *node, const char *job,
                       enum store_left_room room, struct store_error *err);
/* Every recorded leftover, oldest first; free(*out). */
int store_leftover_list(store *s, struct leftover **out, size_t *n, struct store_error *err);
/* The VM is gone (removed, or proven never made): forget it and, when no
 * other leftover has the VMID and its creation's job still holds it
 * reserved, release the VMID, quarantined for quarantine_ms. In the same
 * transaction, when no other leftover of the creation remains, the
 * addresses of that creation that no live record uses are released (the
 * times of store_addr_policy). Forgetting one that is not recorded is not
 * an error. */
int store_leftover_done(store *s, int vmid, const char *node, int64_t quarantine_ms,
                        struct store_error *err);
/* The leftover is stale (its creation went on under that VMID on that
 * node after all, and a live record of it holds the VMID): forget it as
 * store_leftover_done does, its addresses included, but leave the VMID as
 * it is (reserved or used by that record). Forgetting one that is not
 * recorded is not an error. */
int store_leftover_forget(store *s, int vmid, const char *node, struct store_error *err);

/* ---- small key-value and idempotency ---------------------------------------- */

/* Remember the answer to an idempotent request under key (per owner). When
 * the key exists already, STORE_E_CONFLICT and *existing gets the stored
 * answer (new reference). */
int store_idem_put(store *s, const char *owner, const char *key, json_t *answer, json_t **existing,
                   struct store_error *err);

/* Read the answer stored under key, or STORE_E_NOTFOUND (new reference). */
int store_idem_get(store *s, const char *owner, const char *key, json_t **answer,
                   struct store_error *err);

/* The tasks proxd's calls started, by UPID, known to every instance on the
 * database (store_task.c; pve.h, struct pve_task_registry): a lost
 * answer's lookup on a node's task list skips them, so that it does not
 * take another instance's task (or its own from before a restart) for the
 * one its call would have started. note: record upid (again: no change);
 * now and then it also forgets the rows older than STORE_TASK_KEEP_MS (a
 * lookup looks back seconds). noted: *noted tells whether upid is
 * recorded. Errors: STORE_E_INVALID for an empty or over-long UPID (PVE's
 * are under 256 bytes), else the database's. Any thread. */
#define STORE_TASK_KEEP_MS (3600 * 1000LL)
int store_task_note(store *s, const char *upid, struct store_error *err);
int store_task_noted(store *s, const char *upid, bool *noted, struct store_error *err);

/* A small named setting shared by every instance: when `name` has no value
 * yet, `value` becomes it; either way *out receives the value that holds
 * (so concurrent first starts agree on one, e.g. the API's token key). */
int store_kv_setdefault(store *s, const char *name, const char *value, char *out, size_t outlen,
                        struct store_error *err);
/* Forget the setting `name` (the next store_kv_setdefault sets it anew).
 * Deleting a name that has no value is not an error. */
int store_kv_delete(store *s, const char *name, struct store_error *err);
/* Settings written at run time (store_kv.c): set (insert or overwrite,
 * created_at now), get (STORE_E_NOTFOUND when unset), list those whose
 * name starts with prefix ("" for all), by name; free(*out). Names and
 * values longer than the fields below are STORE_E_INVALID. */
struct store_kv {
    char name[128];
    char value[2048];
    int64_t created_at; /* unix ms of the last set */
};
int store_kv_set(store *s, const char *name, const char *value, struct store_error *err);
int store_kv_get(store *s, const char *name, struct store_kv *out, struct store_error *err);
struct store_event;
/* Set (value) or delete (value NULL) the setting `name` and log ev, in one
 * transaction: the change and its event commit together (node cordons). */
int store_kv_write_logged(store *s, const char *name, const char *value, struct store_event *ev,
                          struct store_error *err);
int store_kv_list(store *s, const char *prefix, struct store_kv **out, size_t *n,
                  struct store_error *err);
/* Change the setting `name` into what decide makes of it, its event with
 * it, in one transaction under the setting's own lock: two processes
 * changing one setting at once each decide on the other's result (node
 * cordons, which the API and every instance's configuration change).
 * decide gets the setting (NULL: there is none) and returns false to leave
 * it, or true with *next (malloc'd, freed by the store; NULL deletes the
 * setting) and, when ev->type is set, the event to log (ev zeroed on entry,
 * released by the store). It may run more than once (a transaction tried
 * again): it keeps nothing of what it saw but its outputs. *changed (may be
 * NULL) says whether a change was written. */
typedef bool (*store_kv_decide_fn)(const struct store_kv *cur, void *ctx, char **next,
                                   struct store_event *ev);
int store_kv_change_logged(store *s, const char *name, store_kv_decide_fn decide, void *ctx,
                           bool *changed, struct store_error *err);
/* store_kv_change_logged, and when the change removes the setting, in the
 * same transaction the oldest unfinished job of kind `kind` on node `node`
 * (as store_job_active_on finds it, under the lock of its submissions: one
 * being submitted is waited for and seen) is cancelled with `req`, as
 * store_job_cancel would (a node's uncordon ends its drain). job gets its
 * id ("" when there was none, or the change removed nothing) and *outcome
 * what the cancel did there (0: none). A job that has finished meanwhile
 * is left alone. */
struct store_kv_cancel {
    const char *kind, *node;
    const struct job_cancel_req *req;
    char job[40];              /* out */
    enum store_cancel outcome; /* out */
};
int store_kv_change_cancel(store *s, const char *name, store_kv_decide_fn decide, void *ctx,
                           struct store_kv_cancel *cancel, bool *changed, struct store_error *err);

/* ---- API tokens ------------------------------------------------------------ */

/* Only a keyed hash of the secret is stored; the token itself is shown once. */
struct token_rec {
    char id[32]; /* the public part of the token, used to find the record */
    char owner[64];
    char role[16];      /* admin | user */
    char hash[129];     /* hex of the keyed hash */
    int64_t created_at; /* unix ms */
    bool revoked;
};
/* STORE_E_CONFLICT when the id exists; created_at 0 becomes now. */
int store_token_insert(store *s, const struct token_rec *t, struct store_error *err);
int store_token_get(store *s, const char *id, struct token_rec *out, struct store_error *err);
/* Every token, oldest first; free(*out). */
int store_token_list(store *s, struct token_rec **out, size_t *n, struct store_error *err);
/* STORE_E_NOTFOUND when there is no such token (revoking twice is fine). */
int store_token_revoke(store *s, const char *id, struct store_error *err);

/* ---- event log ---------------------------------------------------------------
 *
 * An append-only log of every state change proxd makes or observes, written
 * in the transaction of the change itself, so that a committed change has
 * its event exactly once and a change that did not commit has none:
 *  - VM records: store_vm_update / store_vm_update_if compare the stored
 *    record (read under a row lock) with the new one and log what changed:
 *    vm.created (creating -> enabled), vm.creation_failed (creating ->
 *    failed), vm.deleted, vm.lost, vm.moved (another node), vm.started /
 *    vm.stopped / vm.paused (power), vm.updated (cores, memory, name, os),
 *    vm.resized (disk). A write with read_at != 0 is the reconciler's repair
 *    of what it observed on Proxmox: its events carry "observed": true and
 *    a configuration change made outside proxd is vm.drift. Writing a
 *    record without a change logs nothing, so a job that repeats its last
 *    write after a crash does not log twice;
 *  - jobs: store_job_update / store_job_checkpoint moving a job to failed
 *    log job.failed;
 *  - nodes: store_node_health_set logs node.up / node.down on an edge;
 *  - a job's outcome with its record's change: store_vm_update_logged
 *    (vm.reinstalled);
 *  - anything else: store_event_append (node.cordoned...),
 *    or store_log_add_in inside an operation's own transaction.
 * Ids only grow and, for readers paging with `id > after`, never appear
 * out of commit order: SQLite serialises writers (and AUTOINCREMENT never
 * reuses an id after a prune); PostgreSQL takes each id from the sequence
 * under a transaction lock on the log, held to COMMIT, so an id is handed
 * out only after every smaller one has committed or rolled back. That lock
 * is taken by the last statement of a transaction that logs, and is held
 * for its commit only. Ids may have gaps (a rolled back transaction). */
#define STORE_EVENT_TYPE 32
struct store_event {
    int64_t id;
    int64_t ts; /* unix ms */
    char type[STORE_EVENT_TYPE];
    char owner[64];
    int vmid; /* 0: not about a VM */
    char node[64];
    char job[40];
    json_t *data; /* object (owned; NULL: {}) */
};
void store_event_release(struct store_event *e);

/* Append one event in its own transaction (e->id and e->ts set). */
int store_event_append(store *s, struct store_event *e, struct store_error *err);

struct event_filter {
    int64_t after;     /* events with id > after */
    int limit;         /* 0: 100; at most 1000 */
    const char *owner; /* NULL: every owner's */
    const char *type;  /* NULL: any; "vm.started", or a prefix "vm.*" */
};
/* Events by id; free each with store_event_release, then free(*out). */
int store_event_list(store *s, const struct event_filter *f, struct store_event **out, size_t *n,
                     struct store_error *err);
/* The largest event id (0: none). */
int store_event_last_id(store *s, int64_t *id, struct store_error *err);
/* Delete events older than before_ts (unix ms), in batches; *n (may be
 * NULL) counts them. */
int store_event_prune(store *s, int64_t before_ts, int64_t *n, struct store_error *err);

/* ---- history ------------------------------------------------------------- */

struct store_history_pruned {
    int64_t jobs; /* finished jobs removed, their progress events with them */
    int64_t idem; /* idempotency answers removed */
};
/* Remove the jobs that finished (done or failed) before before_ts (unix ms)
 * and are named by no leftover, and the idempotency answers stored before
 * it, in batches of a short transaction each. Queued and running jobs stay
 * whatever their age. */
int store_history_prune(store *s, int64_t before_ts, struct store_history_pruned *out,
                        struct store_error *err);

/* A node's health as this instance sees it. When it differs from what is
 * stored (every instance sharing the database writes the one row), the row
 * and a node.up / node.down event (data: {"reason": why}) are written
 * together and *changed (may be NULL) is true; a node first seen up is
 * recorded without an event. */
int store_node_health_set(store *s, const char *node, bool up, const char *why, bool *changed,
                          struct store_error *err);

/* ---- webhook cursors -----------------------------------------------------------
 * One row per webhook: the last event it handled (delivered or dropped),
 * and a lease, so that of several proxd instances one delivers at a time. */
struct webhook_cursor {
    char name[64];
    int64_t after;
    char lease_owner[64];
    int64_t lease_until; /* unix ms */
    int64_t delivered, dropped;
    /* counts the seeks: a holder's cursor moves and failures name the one
     * it read, so that after a seek they fail and it reads the row anew */
    int64_t gen;
    /* when the last seek was (unix ms, 0: none): an event it put behind the
     * cursor again gets its max_age from then, not from its own time */
    int64_t seek_at;
};
/* Take or renew the lease on webhook `name` for owner until now+lease_ms.
 * A webhook seen for the first time starts after the last event logged
 * (its receiver gets what happens from then on). STORE_E_CONFLICT when
 * another owner holds a live lease. *out gets the row. */
int store_webhook_claim(store *s, const char *name, const char *owner, int64_t lease_ms,
                        struct webhook_cursor *out, struct store_error *err);
/* Move the cursor to `after` (never back), counting delivered/dropped, and
 * renew the lease, only while owner holds it and no seek came since the
 * row's `gen` it read (else STORE_E_CONFLICT). */
int store_webhook_advance(store *s, const char *name, const char *owner, int64_t gen, int64_t after,
                          int64_t lease_ms, int delivered, int dropped, struct store_error *err);
/* Give the lease up (at stop), so that another instance takes over now. */
int store_webhook_release(store *s, const char *name, const char *owner, struct store_error *err);
/* Record that a post of webhook `name` failed (why: UTF-8, under 256
 * bytes; at now), only while owner holds its lease and no seek came since
 * `gen` (else STORE_E_CONFLICT): what an operator asking any instance is
 * told (store_webhook_list). */
int store_webhook_failed(store *s, const char *name, const char *owner, int64_t gen,
                         const char *why, struct store_error *err);

/* Move webhook `name`'s cursor to `after` (back: the events after it are
 * posted again; forward: those up to it are passed over) and count a seek
 * (gen), so that its holder's next store write (a cursor move, a failure
 * told) fails and it reads the row anew. The lease stays the holder's: no
 * other instance starts posting while its post may be in flight.
 * STORE_E_NOTFOUND without such a cursor; STORE_E_INVALID (field "after")
 * when after is past the log's last event. *was gets the row as it was
 * (its cursor as this seek found it; its gen already counting the seek).
 * `by`: who asks, for the event. */
int store_webhook_seek(store *s, const char *name, int64_t after, const char *by,
                       struct webhook_cursor *was, struct store_error *err);
/* Forget webhook `name`'s cursor (a webhook no instance has any more),
 * unless an instance holds its lease (STORE_E_CONFLICT, *held gets the
 * row): configured again later, it starts at the log's end.
 * STORE_E_NOTFOUND without such a cursor. */
int store_webhook_forget(store *s, const char *name, const char *by, struct webhook_cursor *held,
                         struct store_error *err);
/* A seek and a forget are told in the event log in their own transaction
 * (owner "", data: "webhook", "by" (who asked); a seek's "from" and "to"):
 * who replayed a receiver's events, or passed over some, is on record. */
#define STORE_EV_WEBHOOK_MOVED "webhook.cursor_moved"
#define STORE_EV_WEBHOOK_FORGOTTEN "webhook.forgotten"
/* The row of webhook `name` (STORE_E_NOTFOUND without one). */
int store_webhook_get(store *s, const char *name, struct webhook_cursor *out,
                      struct store_error *err);

#define STORE_WEBHOOK_BEHIND_MAX 100000 /* events counted behind a cursor at most */
struct webhook_status {
    struct webhook_cursor c;
    char last_error[256];    /* the last failed post's reason, "" never */
    int64_t last_error_at;   /* unix ms, 0: never */
    int64_t last_dropped_at; /* when an event was last dropped (max_age), 0: never */
    int64_t updated_at;      /* the row's last change (claim, move, failure) */
    /* events logged after the cursor, of every type (counted up to
     * STORE_WEBHOOK_BEHIND_MAX), and the first one's time (0: none) */
    int64_t behind, oldest_ts;
};
/* Every webhook cursor, by name, with what waits behind it; one read.
 * free(*out). */
int store_webhook_list(store *s, struct webhook_status **out, size_t *n, struct store_error *err);
/* The events after `after`, in id order, at most STORE_WEBHOOK_BEHIND_MAX:
 * their id, time and type only (a webhook of some types counts those it
 * wants among them, as its poster matches them). One read; free(*out). */
struct event_head {
    int64_t id, ts;
    char type[STORE_EVENT_TYPE];
};
int store_event_heads_after(store *s, int64_t after, struct event_head **out, size_t *n,
                            struct store_error *err);

/* ---- guest checks ---------------------------------------------------------------
 * A creation, start, reboot or reinstall that is done has started its VM;
 * whether its guest came up is told by the QEMU guest agent
 * (core/guestwatch.c). Each such job gets one outcome, written once: of
 * several instances, or a proxd restarted half-way, the first write wins,
 * and its event is logged in the same transaction, so a job has one
 * vm.guest_ready or vm.guest_silent event, or none (skipped). */
enum guest_state { GUEST_WAITING = 0, GUEST_READY, GUEST_SILENT, GUEST_SKIPPED };
const char *guest_state_name(enum guest_state g);
/* Is a done job of this kind one that started its VM, and so checked? */
bool guest_kind(const char *kind);
struct guest_check {
    char job[40];
    char kind[16];
    int vmid;
    char owner[64];
    int64_t finished_at; /* the job's end (unix ms) */
    enum guest_state state;
    int64_t at; /* the outcome's time (0 while waiting) */
    char detail[256];
};
/* The done jobs of those kinds that ended after `since` (unix ms) and have
 * no outcome yet, the oldest first, at most max. free(*out). */
int store_guest_pending(store *s, int64_t since, size_t max, struct guest_check **out, size_t *n,
                        struct store_error *err);
/* Write job's outcome (READY, SILENT or SKIPPED; detail: UTF-8, cut to
 * 255 bytes) and, with ev (its type, owner, vmid, node, data), log ev in
 * the same transaction. STORE_E_CONFLICT when the job has an outcome
 * already (nothing written or logged); STORE_E_NOTFOUND without the job. */
int store_guest_close(store *s, const char *job, enum guest_state state, const char *detail,
                      struct store_event *ev, struct store_error *err);
/* The outcome of job: STORE_E_NOTFOUND when it has none (yet). */
int store_guest_get(store *s, const char *job, struct guest_check *out, struct store_error *err);
/* The check of VMID vmid's last done job of those kinds (state
 * GUEST_WAITING while it has no outcome): STORE_E_NOTFOUND when there is
 * none. One indexed read. */
int store_guest_last(store *s, int vmid, struct guest_check *out, struct store_error *err);

/* ---- statistics (metrics) ------------------------------------------------------ */

#define STORE_DURATION_BUCKETS 7
/* Upper bounds of the job duration buckets, in ms (the last is +Inf). */
extern const int64_t store_duration_bounds[STORE_DURATION_BUCKETS];

struct job_stat {
    char kind[16];
    enum job_state state;
    int64_t count;
    /* finished jobs only: created -> finished, in ms */
    int64_t duration_sum_ms;
    int64_t buckets[STORE_DURATION_BUCKETS]; /* cumulative, as Prometheus wants */
};
/* Job counts per (kind, state); free(*out). */
int store_job_stats(store *s, struct job_stat **out, size_t *n, struct store_error *err);

#endif
