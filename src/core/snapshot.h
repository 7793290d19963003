/* snapshot: a VM's snapshots as durable jobs over Proxmox's snapshot API
 * (snapshot.c), with per-owner limits, retention, and a bounded check of
 * snapshots made or removed behind proxd's back.
 *
 * Jobs (kinds): snap-create, snap-delete, snap-rollback and snap-list run
 * on one VM and are serialised with its other jobs (the store's per-VMID
 * claim); snap-sync (no VM) reads the snapshots of a bounded batch of VMs
 * per reconcile pass and queues snap-delete jobs for retention.
 *
 * What proxd knows of each VM's snapshots is a per-instance cache filled
 * by the jobs this instance runs: the API answers lists from it (the HTTP
 * server never waits on Proxmox) and queues a snap-list job when it has
 * nothing, or when asked to refresh; that job's answer is stored durably
 * (an idempotency record "snapshots:<job>" of the owner), so any instance
 * sharing the database can serve it.
 *
 * Limits ([snapshots] max_per_vm, max_per_owner) are checked at submission
 * against the cache (409 when it shows the limit reached) and enforced in
 * the create job against Proxmox's lists (the job fails with a "limit"
 * error); see docs/operator-guide.md for why.
 *
 * Thread-safety: every function may be called from any thread. */
#ifndef CORE_SNAPSHOT_H
#define CORE_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define SNAP_NAME_MAX 40
#define SNAP_DESC_MAX 512

struct snap_request {
    const char *name;        /* PVE's configid: [A-Za-z][A-Za-z0-9_-]+, 2..40 */
    const char *description; /* NULL or at most SNAP_DESC_MAX bytes, one line */
    bool vmstate;            /* include the RAM (a running VM resumes at rollback) */
};

/* A JSON string of s, never NULL: bytes that are not UTF-8 become '?'
 * (a list must not lose an entry to its text). */
json_t *snap_text(const char *s);

struct snap_info {
    char name[48];
    char description[SNAP_DESC_MAX + 1]; /* without proxd's marker */
    char parent[48];
    char state[16];   /* "" when complete, PVE's snapstate when half-made */
    int64_t snaptime; /* unix seconds */
    bool vmstate;
    bool proxd;   /* made by proxd (retention applies to these only) */
    char job[40]; /* the proxd job that made it, "" when not proxd's */
};

/* Is the name a valid snapshot name? false with the reason in why. */
bool snap_name_ok(const char *name, char *why, size_t whylen);

/* Queue a job (job_id filled). owner NULL: an administrator. Another
 * owner's VM is CORE_E_NOTFOUND. CORE_E_CONFLICT (field "snapshots") when
 * what proxd knows shows a limit reached, or the name is taken. */
int core_snap_create(struct core *k, int vmid, const char *owner, const struct snap_request *r,
                     char job_id[40], struct core_error *err);
/* CORE_E_NOTFOUND when what proxd knows says there is no such snapshot. */
int core_snap_delete(struct core *k, int vmid, const char *owner, const char *name, char job_id[40],
                     struct core_error *err);
int core_snap_rollback(struct core *k, int vmid, const char *owner, const char *name,
                       char job_id[40], struct core_error *err);

/* The VM's snapshots as this instance knows them: *out (free()) of *n and
 * *as_of (unix ms of the read). When nothing is known or `refresh`, a
 * snap-list job is queued instead: job_id is set and *out is NULL. */
int core_snap_list(struct core *k, int vmid, const char *owner, bool refresh,
                   struct snap_info **out, size_t *n, int64_t *as_of, char job_id[40],
                   struct core_error *err);
/* The answer of a finished snap-list job of the VM: CORE_OK with *out;
 * CORE_E_CONFLICT while the job runs (field "job"), CORE_E_NOTFOUND when
 * there is no such job for this VM and owner, CORE_E_INVALID when it
 * failed (its error in the message). */
int core_snap_list_job(struct core *k, int vmid, const char *owner, const char *job_id,
                       struct snap_info **out, size_t *n, int64_t *as_of, struct core_error *err);

/* Counters since start (metrics). */
struct snap_stats {
    uint64_t added_outside;   /* snapshots found that proxd did not make or know */
    uint64_t removed_outside; /* snapshots proxd knew that vanished */
    uint64_t retention;       /* snap-delete jobs queued by retention */
    uint64_t synced;          /* VMs whose snapshots the sync pass read */
    uint64_t limit_refusals;  /* creations refused for a limit (API or job) */
};
void core_snap_stats(struct core *k, struct snap_stats *out);

/* Retention: the snapshots of list s[n] that [snapshots] keep and max_age
 * remove, oldest first, into out (room for n): proxd's complete snapshots
 * beyond `keep` and those older than max_age at now_s (unix seconds), the
 * newest of proxd's always kept. Ties of snaptime (seconds) are ordered by
 * the parent chain. Pure (tests). */
size_t snap_retention(const struct proxd_config *cfg, const struct snap_info *s, size_t n,
                      int64_t now_s, const struct snap_info **out);

/* ---- internal to src/core ---- */
bool snap_kind(const char *kind);
void snap_run(struct core *k, struct job_rec *j);
/* Called by the reconciler at the end of a pass (keeper thread): queues a
 * snap-sync job for the next batch of VMs; store calls only. */
void snap_reconcile(struct core *k);
void snap_cache_free(struct core *k);

#endif
