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
};

struct core_error {
    enum core_err code;
    char field[32];
    char message[512];
};

/* Borrowed: cfg, st and fl must outlive the core. instance: a name unique
 * among proxd instances sharing the store (hostname:pid is fine). */
struct core *core_new(const struct proxd_config *cfg, store *st, struct fleet *fl,
                      const char *instance);
/* Start the workers, the lease keeper and the inventory refresher. */
int core_start(struct core *k);
/* Stop taking jobs; wait up to grace_ms for running steps to reach a
 * checkpoint; whatever is still running is resumed by the next start. */
void core_stop(struct core *k, long grace_ms);
void core_free(struct core *k);

/* Validate, allocate a VMID, record the VM as "creating" and queue its job.
 * Fills job_id and *vmid. */
int core_create(struct core *k, const struct vm_request *r, char job_id[40], int *vmid,
                struct core_error *err);

/* Wait until the job is finished or timeout_ms passes (tests, CLI). Returns
 * 0 when finished; *state receives its state. */
int core_wait_job(struct core *k, const char *job_id, long timeout_ms, enum job_state *state);

#endif
