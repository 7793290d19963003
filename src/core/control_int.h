/* control_int: what control.c (jobs on an existing VM) lends to the other
 * VM jobs that run the same way (migrate.c): the job's context and the
 * steps every such job takes — find the VM, wait for a task, write the
 * record, end the job. Internal to src/core/; the functions are called on
 * the worker thread that runs the job. */
#ifndef CORE_CONTROL_INT_H
#define CORE_CONTROL_INT_H

#include "core/core_int.h"
#include "pve/pve_api.h"

struct cctx {
    struct core *k;
    struct job_rec *j;
    struct vm_rec v; /* the job's record, as last read or written */
    pve_client *pc;  /* the client of the VM's node (ctl_locate sets it) */
};

/* Wait for a task (a failed poll is polled again); -1 when the core stops. */
int ctl_wait_task(struct cctx *c, const char *upid, struct pve_error *e);
/* A cancel asked (job_cancel_asked): the job fails "cancelled by ...:
 * what" (a move's reserved room released), and true. Called right after
 * the checkpoint that leads to a Proxmox call, before the call: a call
 * already sent finishes instead. */
bool ctl_cancelled(struct cctx *c, const char *what);
/* End the job (failed / done) with a message, checkpointed with its event. */
void ctl_job_fail(struct cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ctl_job_done(struct cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write c->v, over the state just read (a DELETE meanwhile is kept). */
void ctl_save_vm(struct cctx *c);
/* Reads retried while transient, on c->v.node. */
int ctl_read_status(struct cctx *c, struct pve_vm_status *st, struct pve_error *e);
int ctl_read_config(struct cctx *c, struct pve_vm_config *cfg, struct pve_error *e);
/* Find the VM where the record says, else where the refreshed inventory
 * sees it; a VM found elsewhere has its record's node (and the job's)
 * follow it. 0, PVE_E_NOTFOUND when it is on no node, or another error. */
int ctl_locate(struct cctx *c, struct pve_vm_status *st, struct pve_error *e);
/* Wait until the VM has no lock (a rollback lock no rollback task holds,
 * which PVE keeps after a failed rollback, fails the job at once); false
 * when the job ended meanwhile. */
bool ctl_wait_unlocked(struct cctx *c);

/* Run a claimed migrate job (migrate.c). */
void migrate_run(struct cctx *c);

#endif
