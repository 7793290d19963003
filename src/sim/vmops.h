/* vmops: snapshots, template conversion and migration of VMs — the model
 * shared by their handlers (h_snapshot.c, h_migrate.c, h_agent.c), the task
 * steps the engine calls for their task kinds, and the hooks state.c uses to
 * count snapshot volumes and write snapshot sections into the config text.
 *
 * Snapshots live in vm->snaps, an object keyed by name whose values are the
 * snapshot sections of a PVE config: a copy of the config at that time (with
 * its own `parent`), `snaptime`, `description`, `vmstate` (the RAM state
 * volume) and `snapstate` while a task works on it. The VM's config holds
 * `parent`, the snapshot it was taken after or rolled back to.
 *
 * Everything here runs with s->mu held. Errors are PVE's texts. */
#ifndef SIM_VMOPS_H
#define SIM_VMOPS_H

#include "sim/sim.h"

/* Step a TK_SNAPSHOT, TK_DELSNAPSHOT, TK_ROLLBACK, TK_TEMPLATE, TK_MIGRATE,
 * TK_HAMIGRATE task, or a container's TK_VZSNAPSHOT, TK_VZDELSNAPSHOT,
 * TK_VZROLLBACK, TK_VZTEMPLATE (engine.c calls it). */
void vmops_step(struct sim *s, struct sim_task *t, double now);
/* The qmigrate and hamigrate steps (h_migrate.c). */
void vmops_step_migrate(struct sim *s, struct sim_task *t, double now);

/* h_migrate.c, for a container's migration too (h_lxcmigrate.c):
 * AbstractMigrate's log line ("<local time> [ERROR: ]message"); a storage
 * map ("src:dst,...", "dst", "1": PVE::JSONSchema::parse_idmap) as
 * {"identity", "default", "entries"}, NULL with *err; the storage a map
 * sends sid to (map_id; a NULL map: sid). */
void sim_mig_log(struct sim_task *t, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
json_t *sim_parse_idmap(const char *spec, char **err);
const char *sim_map_id(json_t *map, const char *sid);
/* The migration's `target` parameter as qemu-server's and pve-container's
 * migrate_vm both check it: not the answering node (400), a node of the
 * cluster (500 "no such cluster node"; none when standalone). NULL with the
 * call failed. */
struct sim_node *sim_mig_target(struct sim_call *c);
/* storage_check_enabled(sid, node), for a storage a migration reads or
 * writes: PVE's text when sid is on no node ("does not exist") or not on
 * `n` (a NULL n: any node will do), else NULL. Caller frees. */
char *sim_mig_storage_unavailable(struct sim *s, const char *sid, struct sim_node *n);

/* The qmmove step of a disk reassignment (h_movedisk.c). */
void vmops_step_movedisk(struct sim *s, struct sim_task *t, double now);
/* The volume name of a drive without storage and base ("vm-100-disk-0"). */
void vmops_vol_name(const char *drive, char *out, size_t n);
/* Take `disk` out of the VM's boot order ("order=scsi0;net0" ->
 * "order=net0", print_bootorder); true when it was in it. */
bool vmops_boot_drop(struct sim_vm *vm, const char *disk);
/* Is a volume of the VM referenced by one of its snapshots? */
bool vmops_vol_in_snapshot(const struct sim_vm *vm, const char *volname);
/* add_unused_volume (AbstractConfig): volid (its part before any ',') as
 * unusedN at the lowest free N of 0..255, unless an unusedN holds it already. */
void vmops_add_unused(json_t *conf, const char *volid);
/* Does a volume of conf as foreach_volume walks it (a VM's disks but
 * CD-ROMs, a container's rootfs and mpN but bind mounts and devices;
 * unusedN not) name volid? conf may be a snapshot or the pending values. */
bool vmops_conf_uses_volume(bool ct, json_t *conf, const char *volid);
/* A drive detached from its guest: its volume keeps the size= of the drive
 * on its storage (s->vol_sizes), for an unusedN line that names the volume
 * only. */
void vmops_keep_volume_size(struct sim *s, const char *drive);
/* Record in dst->origin that dst's drive came from src's drive (a clone):
 * src's own origin of that volume, or the OS of the template src is. */
void vmops_origin_clone(struct sim *s, const struct sim_vm *src, const char *src_drive,
                        struct sim_vm *dst, const char *dst_drive);

/* The guest a snapshot works on, as pve-guest-common's AbstractConfig sees
 * its $class: a VM (qemu-server, guest_type "VM") or a container
 * (pve-container, "CT"). Exactly one of the two is set. */
struct vmops_guest {
    struct sim_vm *vm;
    struct sim_ct *ct;
};
json_t **vmops_guest_conf(struct vmops_guest g);
json_t **vmops_guest_snaps(struct vmops_guest g); /* *: NULL until the first snapshot */
/* The snapshot `name` of the guest (borrowed) or NULL. */
json_t *vmops_guest_snap(struct vmops_guest g, const char *name);

/* The snapshot sections of the VM's config file ("[name]\nkey: value..."),
 * appended to `b` (for the config digest). */
void vmops_snap_text(const struct sim_vm *vm, struct buf *b);
/* Bytes a guest's snapshots hold on `storage` beyond its current volumes
 * (conf): RAM state volumes, and volumes that only snapshots still
 * reference. ct: a container's config (rootfs, mpN) rather than a VM's. */
int64_t vmops_snap_storage(json_t *conf, json_t *snaps, const char *storage, bool ct);
/* The snapshot `name` (borrowed) or NULL. */
json_t *vmops_snap_find(const struct sim_vm *vm, const char *name);
/* Does the storage of `drive` offer snapshots (lvmthin, zfspool, rbd, qcow2
 * files)? */
bool vmops_drive_can_snapshot(struct sim_node *n, const char *drive);
/* Config keys that hold volumes (scsi0, virtio1, ide2, efidisk0, unused0...). */
bool vmops_is_volume_key(const char *k);
/* Is the drive a CD-ROM (media=cdrom, including cloud-init drives)? */
bool vmops_is_cdrom(const char *drive);

/* Why the VM cannot become a template (the template API's load_and_check),
 * or NULL. Caller frees. */
char *vmops_template_refusal(struct vmops_guest g, const char *disk);

/* A new task for the call's node and VM, its UPID as the call's result
 * (the request's parameters copied to t->args). */
struct sim_task *vmops_task(struct sim_call *c, const char *type, int vmid, enum task_kind kind);
/* Load the VM named by the call's vmid or fail the call with PVE's
 * "Configuration file ... does not exist". */
struct sim_vm *vmops_load(struct sim_call *c);

#endif
