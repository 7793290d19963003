/* qemu_ops: VM operations shared by the synchronous handlers (h_qemu.c,
 * h_power.c) and the task engine (engine.c). All run with s->mu held.
 * Functions returning int give 0 on success, or -1 with *err set to the PVE
 * error text (caller frees). */
#ifndef SIM_QEMU_OPS_H
#define SIM_QEMU_OPS_H

#include "sim/sim.h"

/* Apply a config update (already checked synchronously): values, `delete`,
 * pending rules for a running VM. */
int qemu_apply_config(struct sim *s, struct sim_vm *vm, json_t *params, char **err);
/* Resize disk to size (PVE syntax, '+' relative). */
int qemu_apply_resize(struct sim *s, struct sim_vm *vm, const char *disk, const char *size,
                      char **err);
/* Move pending values into the config (at start/reboot). */
void qemu_apply_pending(struct sim_vm *vm);
/* "Configuration file 'nodes/<node>/qemu-server/<vmid>.conf' does not exist" */
char *qemu_noconf_msg(struct sim_node *n, int vmid);
/* find_free_diskname: the first N of vm-<vmid>-disk-N that no drive of the
 * VM (unused ones and snapshots included) names. */
int qemu_free_disk_index(const struct sim_vm *vm);
/* Free disks and forget the VM (destroy). */
void qemu_destroy(struct sim *s, struct sim_vm *vm);
/* Copy the source VM's config into the clone target's (new MACs, name...). */
void qemu_clone_conf(struct sim *s, struct sim_vm *src, struct sim_vm *dst, json_t *args,
                     const char *target_storage, bool full);

#endif
