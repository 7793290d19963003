/* core: proxd's domain — requests become durable jobs that a pool of
 * workers runs against the fleet, with VMIDs allocated atomically in the
 * store, capacity checked and reserved per node, and every step written to
 * the store before the Proxmox call it leads to, so that a proxd killed at
 * any moment resumes or rolls back every job at restart. No HTTP or SQL here.
 *
 * Threads: core_* functions may be called from any thread (the API server's
 * handlers call core_create and friends; they never wait on Proxmox: they
 * only validate, reserve and enqueue). */
#ifndef CORE_CORE_H
#define CORE_CORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/fleet.h"
#include "core/validate.h"
#include "store/store.h"

struct core;

enum core_err {
    CORE_OK = 0,
    CORE_E_INVALID = 1,  /* bad input; field names which */
    CORE_E_NOTFOUND = 2, /* no such VM or job */
    CORE_E_CONFLICT = 3, /* not possible in the VM's current state */
    CORE_E_FULL = 4,     /* no VMID left, or quota exhausted */
    CORE_E_INTERNAL = 5, /* the store failed */
    /* not now, maybe in a moment: the VM's node is down (node names it),
     * or proxd has just started and has not read the inventory yet */
    CORE_E_UNAVAILABLE = 6,
};

struct core_error {
    enum core_err code;
    char field[48];
    char pool[32]; /* CORE_E_FULL with field "ippools": the exhausted pool */
    char message[512];
    char node[64]; /* CORE_E_UNAVAILABLE: the node that is down, or "" */
};

/* Borrowed: cfg, st and fl must outlive the core. instance: a name unique
 * among proxd instances sharing the store (hostname:pid is fine). */
struct core *core_new(const struct proxd_config *cfg, store *st, struct fleet *fl,
                      const char *instance);
/* Start the workers, the lease keeper and the inventory refresher. */
int core_start(struct core *k);
/* The store did not answer before this core started (proxd waited for its
 * database): the leases that ran out meanwhile are left to their holders
 * for a while, as after an outage the core sees itself (see
 * CLAIM_SETTLE_MS in core.c). Before core_start. */
void core_db_was_out(struct core *k);
/* Stop taking jobs and wait for running steps to reach a checkpoint (a
 * task wait ends at once; a step in a Proxmox call waits for its answer,
 * up to the call's timeout and retries); whatever is left is resumed by
 * the next start. A caller that cannot wait that long calls core_abandon
 * from another thread and ends the process without returning here. */
void core_stop(struct core *k);
/* Give up the leases of the jobs this core still runs, so that the next
 * proxd or another instance resumes them at once, as after a crash: for a
 * process about to exit while core_stop still waits. Any thread. */
void core_abandon(struct core *k);
void core_free(struct core *k);

/* Validate, allocate a VMID, record the VM as "creating" and queue its job
 * (record, job and first event in one store transaction). Fills job_id and
 * *vmid. CORE_E_UNAVAILABLE until the inventory has been read once after
 * start (the VMID must not be one Proxmox already has). */
int core_create(struct core *k, const struct vm_request *r, char job_id[40], int *vmid,
                struct core_error *err);

/* What core_create checks of the request itself before it touches the
 * store: the fields (validate_request) and that some node with the OS's
 * template reaches its address pools. CORE_E_INVALID or CORE_E_CONFLICT
 * naming the field, else CORE_OK. Quota, capacity, VMIDs and addresses are
 * decided only when the creation is submitted. Reads nothing but the
 * configuration (a batch validates every request with it before submitting
 * any). */
int core_create_check(struct core *k, const struct vm_request *r, struct core_error *err);

/* An idempotent creation: `key` under `scope` (who asked) is stored with
 * the new job, atomically, as {"fingerprint", "job", "vmid"}. When the key
 * was used before (by this or any proxd sharing the database), nothing is
 * created, CORE_E_CONFLICT is returned with field "Idempotency-Key", and
 * *first gets the first request's stored answer (new reference). */
struct core_idem {
    const char *scope, *key, *fingerprint;
};
int core_create_idem(struct core *k, const struct vm_request *r, const struct core_idem *idem,
                     char job_id[40], int *vmid, json_t **first, struct core_error *err);

/* ---- VM operations (each a durable job, like creation) ----------------
 * `owner`: the caller's identity; NULL for an administrator. A VM of another
 * owner is CORE_E_NOTFOUND, exactly as a missing one. Requests that make no
 * sense in the VM's recorded state (resume a running VM, reboot a stopped
 * one, anything on a VM that is not enabled) are CORE_E_CONFLICT at once,
 * without a job. A VM whose node is down (where the inventory last saw it,
 * else its record's node) is CORE_E_UNAVAILABLE with err->node set: the
 * request is refused, not queued, until the node answers again. */
enum vm_action {
    ACT_START = 0,
    ACT_SHUTDOWN,
    ACT_STOP,
    ACT_PAUSE,
    ACT_RESUME,
    ACT_REBOOT,
};
const char *vm_action_name(enum vm_action a); /* "start", ... */
int vm_action_parse(const char *s);           /* -1 when unknown */

struct action_opts {
    int timeout_s; /* shutdown: how long the guest may take (0: 60) */
    bool force;    /* shutdown: stop hard when the timeout passes */
};

int core_vm_action(struct core *k, int vmid, const char *owner, enum vm_action a,
                   const struct action_opts *o, char job_id[40], struct core_error *err);
/* Change cores and/or memory (0: unchanged). */
int core_vm_update(struct core *k, int vmid, const char *owner, int cores, int64_t memory_mb,
                   char job_id[40], struct core_error *err);
/* Grow the boot disk to disk_gb (never shrink: CORE_E_INVALID). */
int core_vm_resize(struct core *k, int vmid, const char *owner, int64_t disk_gb, char job_id[40],
                   struct core_error *err);
int core_vm_delete(struct core *k, int vmid, const char *owner, char job_id[40],
                   struct core_error *err);

/* Reinstall the VM with another OS, all or nothing (reinstall.c, docs/
 * design/reinstall.md): the VMID, name, owner, MAC, addresses and sizes
 * stay; the boot disk is replaced by a fresh clone of the OS's template.
 * ssh_keys (newline-separated OpenSSH keys) and password (cloud-init) may
 * be NULL. CORE_E_INVALID naming "os", "ssh_keys" or "password". */
struct reinstall_request {
    const char *os;
    const char *ssh_keys;
    const char *password;
};
int core_vm_reinstall(struct core *k, int vmid, const char *owner,
                      const struct reinstall_request *r, char job_id[40], struct core_error *err);

/* Is `node` (where VM vmid is, per the inventory or else the record) down
 * as far as the inventory knows? CORE_E_UNAVAILABLE with err filled, or
 * CORE_OK (also while the inventory is not read yet, and for a node proxd
 * does not manage: the job finds out). */
int core_node_check(struct core *k, int vmid, const char *node, struct core_error *err);

/* ---- node maintenance (cordon.c, drain.c) -------------------------------
 * A cordoned node takes no new creations (placement skips it, saying so in
 * the creation's attempts); its VMs keep running and stay controllable.
 * A cordon comes from a configuration ([node] state = cordoned, written to
 * the store by core_cordons_sync) or from the API, and is read from the
 * store ("cordon:<node>") alone, so that every proxd on one database
 * honours every cordon alike. Thread-safe (the store's). */
struct node_cordon {
    bool cordoned;
    bool by_config;     /* state = cordoned: the API cannot lift it */
    char by[64];        /* who cordoned it: the API caller, or "configuration" */
    int64_t at;         /* unix ms */
    char configs[1024]; /* by_config: the configurations holding it ("host:/path, ...") */
};
/* CORE_E_NOTFOUND for a node not configured; CORE_E_INTERNAL when the
 * store fails (out then says "not cordoned"). */
int core_node_cordon_get(struct core *k, const char *node, struct node_cordon *out);
/* Write this instance's configuration's cordons to the store (core_start
 * does, before any placement): its name ("host:/absolute/path.conf") joins
 * the cordon of every node its configuration cordons, and leaves those of
 * the nodes it no longer does; a cordon no configuration names any more is
 * lifted (or is the API's cordon it replaced again). CORE_E_INTERNAL when
 * the store fails. */
int core_cordons_sync(struct core *k, struct core_error *err);
/* Lift a configuration's cordon of node whichever configurations hold it
 * (proxd uncordon: for a configuration retired for good), `by` in its
 * event; an instance whose configuration still cordons the node cordons it
 * again when it starts. CORE_E_NOTFOUND when no configuration cordons it.
 * drain (may be NULL): the node's drain it cancelled, as core_node_cordon
 * says. */
int core_node_cordon_release(struct core *k, const char *node, const char *by, char drain[40],
                             struct core_error *err);
/* Cordon (on) or uncordon a node; idempotent. Uncordoning a node a
 * configuration cordons is CORE_E_CONFLICT, naming the configurations.
 * Whatever lifts a node's cordon (this, core_node_cordon_release,
 * core_cordons_sync) cancels the node's unfinished drain in the same
 * store transaction, `by` the one who lifts it: a queued one ends at once;
 * a running one stops at once in this process (at its next look, 250 ms,
 * in another), cancels its moves no worker took yet, lets those under way
 * finish and fails saying the node was uncordoned. drain (may be NULL)
 * gets the id of the drain cancelled ("" none). */
int core_node_cordon(struct core *k, const char *node, bool on, const char *by, char drain[40],
                     struct core_error *err);
/* Queue a drain of the node (a job, kind "drain", owner `by`): it cordons
 * the node and moves its VMs, [limits] drain_parallel at a time, to other
 * nodes of its cluster with room (each move a "migrate" job of its own, in
 * the VM's queue); the job's attempts list every VM with what became of it
 * (moved / stayed and why). A standalone node is only cordoned. A drain of
 * the node under way: CORE_E_CONFLICT with its job in job_id. */
int core_node_drain(struct core *k, const char *node, const char *by, char job_id[40],
                    struct core_error *err);

/* Quota left for an owner (for refusals and the API). */
struct quota_use {
    int vms, cores;
    int64_t memory_mb, disk_gb;
    int addresses; /* of IP pools, held by the live VMs */
};
int core_quota_use(struct core *k, const char *owner, struct quota_use *used,
                   struct core_error *err);

/* Creations that left each node (index in cfg->nodes) after a failure
 * there, since start (thread-safe). */
void core_failovers(struct core *k, uint64_t out[CFG_MAX_NODES]);

/* One reconciliation pass (see reconcile.c); the workers' keeper runs it at
 * start and every reconcile_interval. Counts what it repaired. */
struct reconcile_report {
    int moved;   /* VMs found on another node */
    int power;   /* power states taken over */
    int resized; /* cores, memory or disk taken over */
    int lost;    /* records whose VM was deleted outside proxd */
    int hidden;  /* records whose VM the inventory lacks but Proxmox refuses proxd a look at
                    (403: its credentials lack VM.Audit there): left alone, not judged gone */
    int stuck;   /* records driven out of a transient state, or marked deleted
                    when a failed delete's destroy was served late */
    int orphans; /* tagged VMs without a record and without a known creation */
    int orphans_deleted;
    int partial_removed;    /* half-made VMs of proxd's own creations removed */
    int unmanaged;          /* leftovers on nodes no longer in the configuration (reported) */
    int unmanaged_released; /* of which forgotten, their VMID released (leftover_grace) */
    int foreign_released;   /* foreign VMIDs no world shows any more, given back */
};
int core_reconcile(struct core *k, struct reconcile_report *rep);

/* ---- the Proxmox credentials' privileges (access.c) ---------------------- */

/* A privilege proxd's work needs on node `node` that its credentials lack
 * there. */
struct access_missing {
    char privs[96]; /* "VM.Clone", or "A|B": any one of them would do */
    char path[96];  /* "/vms/9000" */
    char what[96];  /* what fails without it: "creations of ubuntu (its template)" */
};
struct core_access {
    int64_t checked_at;             /* unix ms of the last whole read; 0: none yet */
    char error[256];                /* why the last read was not whole ("" when it was) */
    struct access_missing *missing; /* as of checked_at; caller frees */
    size_t nmissing;
};
/* What the last check found on configured node `node`: 0, or -1 when no
 * node has that name. */
int core_node_access(struct core *k, const char *node, struct core_access *out);

/* ---- addresses in VM configs (netwalk.c: the config walk, the agent) ---- */

/* One complete config walk now, unpaced, on the calling thread (tests and
 * `proxd reconcile`); 0, or -1 when some VM could not be read. */
int core_net_walk(struct core *k);
/* The drift the last walk found on VM record vm_id ("ipconfig0 is ...,
 * proxd set ..."): true and out filled (cut to len), else false. */
bool core_net_drift(struct core *k, int64_t vm_id, char *out, size_t len);
/* An address proxd holds for one VM (vmid, used or reserved) found in the
 * config of another VM that is not proxd's. */
struct core_ip_conflict {
    char pool[64];
    char address[46];
    int vmid;      /* proxd's VM that holds it (0: a creation's reservation) */
    int seen_vmid; /* the VM whose config has it */
    char seen_node[64];
    int64_t first_seen; /* unix ms */
};
/* The conflicts of the last walk in pool (NULL: every pool), at most max
 * copied into out; returns how many there are in all. */
size_t core_ippool_conflicts(struct core *k, const char *pool, struct core_ip_conflict *out,
                             size_t max);
/* Conflicts found in pool since start (each address and VM counted once). */
uint64_t core_ippool_conflicts_total(struct core *k, const char *pool);
/* Ask for the guest agent's confirmation of VM record vm_id's address (after
 * a start); nothing when it has no network or is confirmed already. */
void core_net_confirm(struct core *k, int64_t vm_id);

/* Cancel job `id` for `by` (the caller checked that it may see the job:
 * its owner, or an administrator). A queued job ends failed at once, with
 * what its submission held given back; a running one stops at its next
 * safe step, in whichever instance runs it, and cleans up as a failure
 * there would. *out (release it) gets the job as it is after, *outcome
 * what happened (store.h store_job_cancel). CORE_E_NOTFOUND: no such job;
 * CORE_E_CONFLICT: it finished without a cancel. */
int core_job_cancel(struct core *k, const char *id, const char *by, struct job_rec *out,
                    enum store_cancel *outcome, struct core_error *err);

/* Wait until the job is finished or timeout_ms passes (tests, CLI). Returns
 * 0 when finished; *state receives its state. */
int core_wait_job(struct core *k, const char *job_id, long timeout_ms, enum job_state *state);

#endif
