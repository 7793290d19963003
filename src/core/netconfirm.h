/* netconfirm: the guest agent's confirmation of a VM's address (netwalk.h
 * says what and when). One thread polls every VM asked for, each every 2 s
 * for at most 60 s; internal to src/core. Thread-safe. */
#ifndef CORE_NETCONFIRM_H
#define CORE_NETCONFIRM_H

#include <stdbool.h>
#include <stdint.h>

struct core;
struct netconfirm;

#define NETCONFIRM_EVERY_MS 2000
#define NETCONFIRM_FOR_MS 60000
#define NETCONFIRM_MAX 1024 /* VMs polled at once; more wait for the next ask */

struct netconfirm *netconfirm_new(struct core *k);
void netconfirm_free(struct netconfirm *c);
int netconfirm_start(struct netconfirm *c);
void netconfirm_stop(struct netconfirm *c); /* after k->stopping */
/* Poll VM record vm_id from now on (nothing when it is polled already).
 * Without again, nothing either when it was polled to the end since this
 * process started and the agent never showed the address (the walk would
 * ask again and again); a job that (re)started the VM asks again. */
void netconfirm_ask(struct netconfirm *c, int64_t vm_id, bool again);

#endif
