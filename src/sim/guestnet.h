/* guestnet: the network the guest booted with. cloud-init applies ipconfigN
 * when the VM starts (qemu-server regenerates the cloud-init drive at
 * start), so a change made while the VM runs is in the config at once but
 * reaches the guest — and what its agent reports — only at the next boot.
 * Not thread-safe: called under the simulator's lock, as everything in
 * struct sim_vm. */
#ifndef SIM_GUESTNET_H
#define SIM_GUESTNET_H

#include "sim/sim.h"

/* Before a change to a running VM's config: remember its ipconfigN as the
 * guest has them, once per boot. */
void guestnet_keep(struct sim_vm *vm);
/* The ipconfigN the running guest booted with (NULL: none). */
const char *guestnet_ipconfig(const struct sim_vm *vm, int idx);
void guestnet_free(struct sim_vm *vm);

#endif
