/* snapshot_int: what the snapshot module's files share (snapshot.c the
 * requests and conversions, snapshot_cache.c what this instance knows of
 * each VM's snapshots, snapshot_job.c the jobs, snapshot_sync.c the sync
 * pass and retention). Not for use outside src/core/snapshot*.c.
 *
 * Thread-safety: the cache functions lock the cache; everything else works
 * on the caller's own job context. */
#ifndef CORE_SNAPSHOT_INT_H
#define CORE_SNAPSHOT_INT_H

#include <pthread.h>

#include "core/core_int.h"
#include "core/snapshot.h"
#include "pve/pve_api.h"

#define MARK "proxd-snapshot job=" /* the marker line in proxd's snapshots' descriptions */
#define IDEM_PREFIX "snapshots:"   /* the idempotency records of list answers */
#define OWNER_FRESH_MS 60000       /* cached lists younger than this count for owner totals */

/* ---- the cache (snapshot_cache.c) ---- */

/* A copy of the cached list (*s NULL and false when none; the caller frees *s). */
bool snap_cache_get(struct core *k, int vmid, struct snap_info **s, size_t *n, int64_t *at);
/* Replace the cached list (copied). What differs from the previous list
 * is drift (a snapshot made or removed outside proxd, counted and logged),
 * except the snapshot named `own` (NULL: none): the reading job's own
 * change. Every reader counts it, not only the sync pass: a job that read
 * the list first would otherwise hide an outside change from the pass. */
void snap_cache_put(struct core *k, int vmid, const struct snap_info *s, size_t n, const char *own);
void snap_cache_drop(struct core *k, int vmid);

enum snap_stat { SNAP_ST_LIMIT, SNAP_ST_RETENTION, SNAP_ST_SYNCED };
void snap_count(struct core *k, enum snap_stat which);
/* The lock that makes an owner's creations count-and-create one at a time
 * in this instance (striped: owners may share one). */
pthread_mutex_t *snap_owner_lock(struct core *k, const char *owner);
/* The sync pass's cursor (the last record id read); false on the first
 * call after start (nothing known yet to compare with). */
bool snap_sync_cursor(struct core *k, int64_t *after);
void snap_sync_advance(struct core *k, int64_t last);

/* ---- conversions and requests (snapshot.c) ---- */

void snap_from_pve(const struct pve_snapshot *p, struct snap_info *s);
json_t *snap_info_json(const struct snap_info *s, size_t n);
/* Queue a job of `kind` on v (request stolen; job_id may be NULL). */
int snap_enqueue(struct core *k, const struct vm_rec *v, const char *kind, json_t *request,
                 char job_id[40], struct core_error *err);
/* Snapshots the owner's VMs hold as far as the cache shows (fresh lists
 * only when `fresh_ms` > 0, and only those read after the VM's last
 * snapshot job in `ended` ended: another instance's job changes Proxmox,
 * not this cache), except VM `except`; *unknown counts the VMs without
 * such a list. -1 when the store fails. */
int snap_owner_count(struct core *k, const char *owner, int except, int64_t fresh_ms,
                     const struct job_ended *ended, size_t nended, int *unknown, int **unknown_ids,
                     size_t *nunknown);
/* Instances' clocks may differ this much: a list read this close after a
 * job ended is not trusted to show that job's change. */
#define CLOCK_SKEW_MS 2000

/* ---- running the jobs (snapshot_job.c) ---- */

struct sctx {
    struct core *k;
    struct job_rec *j;
    struct vm_rec v;
    pve_client *pc;
};

/* End the job, done or failed, with its message. */
void snap_end(struct sctx *c, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const struct snap_info *snap_lookup(const struct snap_info *s, size_t n, const char *name);

/* ---- the sync pass (snapshot_sync.c) ---- */

/* A snap-sync job: read the batch's lists, count drift, queue retention. */
void snap_sync_steps(struct sctx *c);

#endif
