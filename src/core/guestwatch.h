/* guestwatch: is the guest up after a job started its VM? (store.h "guest
 * checks")
 *
 * A creation, start, reboot or reinstall that is done has started its VM,
 * which says nothing of its guest: a hosting platform tells its customer
 * "your server is ready" when the guest has booted. One thread asks the
 * VM's QEMU guest agent (agent/ping) from the job's end, every 2 s and
 * less often as the wait grows (below), for
 * [proxd] guest_wait seconds, and writes the job's outcome with its event:
 * vm.guest_ready when the agent answered, vm.guest_silent when it did not
 * within guest_wait, has none configured, may not be asked, or the VM
 * stopped (the reason in data.reason). The outcome is in the store, so a
 * proxd killed half-way, or another instance, goes on with the checks
 * left, and a job has one such event (store_guest_close). A VM the job did
 * not leave running (a reinstall of a stopped VM), or whose record is
 * gone, is skipped without an event, and so is every job while guest_wait
 * is 0. A paused VM, a node down, a failed call are "not yet"; a node whose
 * ping got no answer or was slow is not asked again in that round (its
 * other guests wait for the next, the other nodes' are asked); a check
 * this process never asked (one a restart found past its wait) is asked
 * once before it is told silent. Every instance asks the pending checks
 * (the oldest GUESTWATCH_BATCH) after the fleet's first read. Internal to
 * src/core; start and stop from the core's thread. */
#ifndef CORE_GUESTWATCH_H
#define CORE_GUESTWATCH_H

struct core;
struct guestwatch;

/* A pending guest's agent is asked 2 s after the last ask, plus a quarter
 * of the time since the job's end, at most 10 s apart: a guest that boots
 * in 15 s is asked 6 times, not 9, one that takes minutes every 10 s, and
 * its answer is told at most 2 s and a quarter of its boot time late
 * (issue 17's rule for task polls: back off across the whole wait) */
#define GUESTWATCH_EVERY_MS 2000
#define GUESTWATCH_EVERY_MAX_MS 10000
/* The store's pending list is read every GUESTWATCH_LOOK_MS while checks
 * are pending, else every GUESTWATCH_IDLE_MS (another instance's jobs) and
 * when a job of this process that may start a VM ends (guestwatch_poke). */
#define GUESTWATCH_LOOK_MS 1000
#define GUESTWATCH_IDLE_MS 30000
#define GUESTWATCH_BATCH 256 /* checks looked at per round (the oldest) */

struct guestwatch *guestwatch_new(struct core *k);
void guestwatch_free(struct guestwatch *w);
int guestwatch_start(struct guestwatch *w);
void guestwatch_stop(struct guestwatch *w); /* after k->stopping */
/* A job that may have started a VM ended: look now (any thread). */
void guestwatch_poke(struct guestwatch *w);

#endif
