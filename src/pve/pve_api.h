/* pve_api: typed calls for everything proxd asks of Proxmox VE, on top of
 * pve_call (pve.h). Results come back as C structs with the fields proxd
 * uses; lists are arrays the caller frees with free(). Every function
 * returns 0 or an enum pve_class and fills the optional *err.
 *
 * Encoding is done here: node names, UPIDs and sizes go into paths and
 * bodies correctly encoded, SSH keys get PVE's extra percent-encoding, and
 * IDs that PVE sends as strings or numbers are accepted in both forms.
 * Thread-safety: as pve.h (any thread, concurrently). */
#ifndef PVE_PVE_API_H
#define PVE_PVE_API_H

#include "pve/pve.h"

#define PVE_UPID_MAX 256

/* ---- version, nodes, storage, cluster ---------------------------------- */

struct pve_version {
    char version[32]; /* "9.1.3", "8.4.2", "7.4-3" */
    char release[16]; /* "9.1" */
    char repoid[32];
    int major, minor;
};
int pve_get_version(pve_client *c, struct pve_version *out, struct pve_error *err);

/* The node's clock (GET /nodes/{node}/time): unix seconds. */
int pve_node_time(pve_client *c, const char *node, int64_t *now, struct pve_error *err);

/* What the credentials proxd calls with may do on ACL path `path` ("/vms/9000",
 * "/storage/local-lvm"): GET /access/permissions?path=. PVE computes it (roles,
 * inheritance, a token's privilege separation, pools), so no ACL logic is
 * copied here. *out: the privileges held there, sorted by name, at most
 * PVE_PRIVS_MAX (caller frees; NULL with *n 0 when none). path: at most
 * PVE_ACL_PATH_MAX bytes (ours: PVE's schema sets none), else PVE_E_INVALID. */
#define PVE_PRIVS_MAX 256
#define PVE_ACL_PATH_MAX 255
struct pve_priv {
    char name[48];  /* "VM.Clone" */
    bool propagate; /* held on the path's descendants too */
};
int pve_permissions(pve_client *c, const char *path, struct pve_priv **out, size_t *n,
                    struct pve_error *err);

struct pve_node {
    char name[64];
    bool online;
    int maxcpu;
    double cpu; /* 0..1 */
    int64_t maxmem, mem, maxdisk, disk, uptime;
};
int pve_nodes(pve_client *c, struct pve_node **out, size_t *n, struct pve_error *err);

struct pve_node_status {
    int cpus;
    double cpu;
    int64_t mem_total, mem_used, mem_free, uptime;
    char pveversion[96];
};
int pve_node_status(pve_client *c, const char *node, struct pve_node_status *out,
                    struct pve_error *err);

struct pve_storage {
    char storage[64];
    char type[32];
    char content[128];
    bool shared, enabled, active;
    int64_t total, used, avail;
};
/* content: a filter such as "images", or NULL. */
int pve_storage_list(pve_client *c, const char *node, const char *content, struct pve_storage **out,
                     size_t *n, struct pve_error *err);
int pve_storage_status(pve_client *c, const char *node, const char *storage,
                       struct pve_storage *out, struct pve_error *err);
/* The size in bytes of volume `volid` (on `storage`, of VM `vmid`) as the
 * storage lists it (GET .../storage/{storage}/content?vmid=): for a drive
 * whose config line has no size=. PVE_E_NOTFOUND when it is not listed (or
 * listed without a size), PVE_E_INVALID when volid is not on storage. */
int pve_volume_size(pve_client *c, const char *node, const char *storage, int vmid,
                    const char *volid, int64_t *size, struct pve_error *err);

/* PVE_RES_VM: a qemu VM; PVE_RES_CT: a container (lxc), with its vmid,
 * node, name and status as a VM's: never a VM proxd manages, but its VMID
 * is taken as a VM's is (one space per cluster or standalone host). */
enum pve_res_type { PVE_RES_OTHER = 0, PVE_RES_VM, PVE_RES_NODE, PVE_RES_STORAGE, PVE_RES_CT };

struct pve_resource {
    enum pve_res_type type;
    char id[96]; /* "qemu/100", "node/sv1", "storage/sv1/local-lvm" */
    char node[64];
    int vmid; /* VMs and containers */
    char name[128];
    char status[16]; /* VMs: running|stopped|unknown; nodes: online|offline */
    bool tmpl;
    int maxcpu;
    int64_t maxmem, mem, maxdisk, disk, uptime;
    char lock[32];
    char tags[256];
    char hastate[32];
    char storage[64]; /* storages */
    bool shared;
};
/* type: "vm" (VMs and containers, as PVE lists them), "node", "storage" or
 * NULL for all. Strings longer than the fields are cut. */
int pve_cluster_resources(pve_client *c, const char *type, struct pve_resource **out, size_t *n,
                          struct pve_error *err);
/* The same resources, one at a time: the answer is read as a stream of
 * parse events (yajl), never as one JSON tree (for 10,000 VMs ~20 MB), and
 * fn gets each as a record valid during the call. A non-zero return from fn
 * stops the walk and the call fails (PVE_E_OTHER). fn may have seen
 * resources of an answer that turns out malformed further on: when the call
 * fails, discard what fn gathered. */
typedef int (*pve_resource_fn)(const struct pve_resource *r, void *ud);
int pve_cluster_resources_each(pve_client *c, const char *type, pve_resource_fn fn, void *ud,
                               struct pve_error *err);
/* The same with call flags (PVE_CALL_NORETRY for the inventory). */
int pve_cluster_resources_each_ex(pve_client *c, const char *type, unsigned flags,
                                  pve_resource_fn fn, void *ud, struct pve_error *err);

#define PVE_MAX_MEMBERS 64
struct pve_member {
    char name[64];
    int nodeid;
    bool online, local;
    char ip[64];
};
struct pve_cluster_status {
    bool is_cluster; /* false: a standalone host */
    char name[64];
    bool quorate;
    int nmembers;
    struct pve_member members[PVE_MAX_MEMBERS];
};
int pve_cluster_status(pve_client *c, struct pve_cluster_status *out, struct pve_error *err);

/* want == 0: the lowest free ID; else check `want` (PVE_E_EXISTS if used).
 * PVE sends the ID as a string; both forms are accepted. */
int pve_nextid(pve_client *c, int want, int *out, struct pve_error *err);

/* ---- VMs -------------------------------------------------------------- */

struct pve_vm {
    int vmid;
    char name[128];
    char status[16];
    bool tmpl;
    int cpus;
    int64_t maxmem, mem, maxdisk, uptime;
    char lock[32];
    char tags[256];
};
int pve_vm_list(pve_client *c, const char *node, struct pve_vm **out, size_t *n,
                struct pve_error *err);

struct pve_clone {
    int newid;
    const char *name; /* a DNS label */
    const char *description;
    const char *target;  /* node, NULL: same node */
    const char *storage; /* full clones only */
    const char *pool;
    const char *format;
    int full; /* -1: PVE's default (linked for templates), 0: linked, 1: full */
};
/* Start a clone; *upid receives the task. If the answer was lost after the
 * request was sent, the clone task is looked for on the node (a qmclone of
 * `vmid` whose log says "with ID <newid>") and adopted, so a retry never
 * makes a second VM; an "already exists" for newid that turns out to be this
 * very clone is recognised the same way. When the task is not found, the
 * request is sent again: its success sets err->earlier_pending (the first
 * request may still be served later, and make the VM anew once this clone's
 * VM is gone). */
int pve_vm_clone(pve_client *c, const char *node, int vmid, const struct pve_clone *opts,
                 char upid[PVE_UPID_MAX], struct pve_error *err);

/* Find the qmclone task of `vmid` on `node`, started at or after `since`
 * (unix seconds on this host's clock; the node's clock is read to compare
 * it with the tasks' start times, which are the node's), whose log says it clones to `newid`; copy
 * its UPID. A candidate still running whose log names no VMID yet (its worker has not written its
 * first line) is read again, 100 ms apart, for up to 3 s. */
bool pve_find_clone_task(pve_client *c, const char *node, int vmid, int newid, int64_t since,
                         char upid[PVE_UPID_MAX]);

/* Create a VM from options (borrowed JSON object of config options). Sent
 * once; a lost answer is its qmcreate task when one is found. */
int pve_vm_create(pve_client *c, const char *node, int vmid, json_t *options,
                  char upid[PVE_UPID_MAX], struct pve_error *err);

struct pve_vm_config {
    int cores, sockets;
    int64_t memory_mb;
    char name[128];
    char lock[32];
    char tags[256];
    char description[512];
    char digest[48];
    char ciuser[64];
    char ipconfig0[256];
    bool tmpl;
    char bootdisk[16];         /* "scsi0" unless boot order says otherwise */
    char bootdisk_volume[256]; /* "local-lvm:vm-100-disk-0" */
    char bootdisk_storage[64]; /* "local-lvm" */
    int64_t bootdisk_size;     /* bytes */
    json_t *raw;               /* the whole config; owned, release with
                                  pve_vm_config_release */
};
/* current: without pending values. */
int pve_vm_config_get(pve_client *c, const char *node, int vmid, bool current,
                      struct pve_vm_config *out, struct pve_error *err);
void pve_vm_config_release(struct pve_vm_config *cfg);
/* A container's config (GET /nodes/{node}/lxc/{vmid}/config) as Proxmox
 * returns it: netN are "name=eth0,bridge=vmbr0,hwaddr=...,ip=10.0.0.5/24,
 * ip6=...,type=veth". *out is the caller's (json_decref). */
int pve_ct_config_get(pve_client *c, const char *node, int vmid, json_t **out,
                      struct pve_error *err);

/* A volume of a VM's config on a storage: "scsi1" = "ceph:vm-100-disk-1,size=20G". */
struct pve_volume {
    char key[16];     /* "scsi1", "efidisk0", "unused0", ... */
    char volid[256];  /* "ceph:vm-100-disk-1" */
    char storage[64]; /* "ceph" */
    int64_t size;     /* bytes, from size=; 0 when the config gives none */
    bool cloudinit;   /* a cloud-init drive (media=cdrom, generated) */
};
/* The volumes of cfg's disks (scsiN, virtioN, sataN, ideN, efidisk0,
 * tpmstate0, unusedN) that sit on a storage: not "none", not a host device
 * or path, not a CD-ROM drive's ISO (a cloud-init drive is kept: it is a
 * volume a migration copies). *out is the caller's to free (NULL when *n
 * is 0). Always 0. */
int pve_vm_config_volumes(const struct pve_vm_config *cfg, struct pve_volume **out, size_t *n);

/* A config change; zero/NULL fields are not sent. */
struct pve_config_set {
    int cores, sockets;
    int64_t memory_mb;
    const char *name;
    const char *sshkeys; /* raw OpenSSH public keys, one per line; encoded here */
    const char *ciuser;
    const char *ipconfig0;
    const char *net0;
    const char *nameserver;   /* cloud-init DNS: addresses separated by blanks */
    const char *searchdomain; /* cloud-init DNS search domains */
    const char *tags;
    const char *description;
    const char *delete_keys; /* "a,b" */
    const char *digest;
    const char *cipassword; /* cloud-init password (PVE stores it hashed) */
    /* one more option sent as it is, e.g. "scsi0" = "local-lvm:vm-100-disk-1"
     * (attaches an existing volume; an unusedN naming it goes), or an
     * sshkeys value as GET config returned it (already encoded) */
    const char *key, *value;
    bool skiplock;
};
/* Config writes are sent once each time (PVE_CALL_ONCE). When the answer
 * is lost after the request went out (PVE_E_NETWORK, maybe_sent), the
 * config is read back (pending values in) and the write counts as done
 * when it holds every value asked (as Proxmox stores it: netN with what
 * was asked among its options, tags in any order, ...) and lacks every
 * key deleted, and, for a write with a digest, its digest moved (a
 * cipassword cannot be told: Proxmox gives it back masked). Else it is
 * sent again (up to 3 sends in all), and Proxmox does it or says why not:
 * a write with a stale digest fails "checksum mismatch (file change by
 * other user?)" ("missmatch" before qemu-server 8.2.5); a resend that
 * fails (the first one, still under way when the config was read, got
 * there first) is done all the same when the config holds the write.
 * Asked again blindly instead, a write with a digest failed so against
 * its own first run. A read that fails leaves the lost answer's error
 * (maybe_sent): the caller judges.
 * Synchronous (PUT). */
int pve_vm_config_set(pve_client *c, const char *node, int vmid, const struct pve_config_set *s,
                      struct pve_error *err);
/* Asynchronous (POST): *upid receives the qmconfig task. A lost answer is
 * the qmconfig task of the VM started since the call when one is found;
 * else as pve_vm_config_set, and a write found done in the config has no
 * task: *upid is "". */
int pve_vm_config_set_async(pve_client *c, const char *node, int vmid,
                            const struct pve_config_set *s, char upid[PVE_UPID_MAX],
                            struct pve_error *err);

/* Reassign a disk to another VM on the same node (move_disk with
 * target-vmid, PVE >= 7.2): the volume is renamed vm-<target>-disk-N and
 * set as target_disk on the target VM; both VMs' configs are locked while
 * the qmmove task runs. The source VM must be stopped unless disk is an
 * unusedN. *upid receives the task. Sent once (PVE_CALL_ONCE): a lost
 * answer is its qmmove task when one is found (started since the call; its
 * ID "<vmid>-<disk>><target_vmid>-<target_disk>"). */
int pve_vm_move_disk(pve_client *c, const char *node, int vmid, const char *disk, int target_vmid,
                     const char *target_disk, char upid[PVE_UPID_MAX], struct pve_error *err);

/* MiB from a config's memory value as PVE writes it: "2048", or
 * "[current=]2048" since PVE 8.1. */
int64_t pve_memory_mib(const char *value);

struct pve_pending {
    char key[64];
    char value[256];   /* current value, "" if none */
    char pending[256]; /* pending value, "" if none */
    bool has_pending;
    bool del; /* pending deletion */
};
/* Options with pending changes only (has_pending or del). */
int pve_vm_pending(pve_client *c, const char *node, int vmid, struct pve_pending **out, size_t *n,
                   struct pve_error *err);

/* Grow a disk: size "50G" (absolute) or "+10G" (relative), units K M G T,
 * none = bytes. On PVE >= 8 *upid receives the resize task; on PVE 7 the
 * resize is done when this returns and *upid is "". A relative size is
 * asked as the absolute size in bytes it comes to from the disk's size=,
 * read first (a config read): "+10G" sent again, or served after its
 * timeout when Proxmox waited for the config's lock, grew the disk twice;
 * a disk grown meanwhile by another hand past that size makes Proxmox
 * refuse ("shrinking disks is not supported") rather than grow it again.
 * A disk without size= is asked "+10G" as it is. Sent once each time (PVE_CALL_ONCE): a lost
 * answer (PVE_E_NETWORK, maybe_sent) is the VM's resize task started since
 * the call when one is found (PVE >= 8); else the disk's size= read back
 * decides: at least the size asked (a storage may round up), the resize is
 * done (*upid ""); less, it is sent again (up to 3 sends in all). A resend
 * that fails is done all the same when the disk has the size. A "+N" on a
 * disk without size= whose answer is lost is the caller's to judge (the
 * error, maybe_sent). */
int pve_vm_resize(pve_client *c, const char *node, int vmid, const char *disk, const char *size,
                  char upid[PVE_UPID_MAX], struct pve_error *err);

struct pve_vm_status {
    int vmid;
    char status[16];    /* running|stopped */
    char qmpstatus[16]; /* running|paused|stopped|... */
    char name[128];
    char lock[32];
    bool ha_managed;
    char ha_state[32];
    int cpus;
    int64_t maxmem, mem, maxdisk, uptime;
    bool tmpl;
    bool agent;
};
int pve_vm_status(pve_client *c, const char *node, int vmid, struct pve_vm_status *out,
                  struct pve_error *err);

enum pve_power {
    PVE_POWER_START = 0,
    PVE_POWER_STOP,
    PVE_POWER_SHUTDOWN,
    PVE_POWER_SUSPEND,
    PVE_POWER_RESUME,
    PVE_POWER_REBOOT,
    PVE_POWER_RESET,
};
const char *pve_power_name(enum pve_power p); /* "start", ... */

struct pve_power_opts {
    int timeout;     /* seconds; 0: PVE's default */
    bool force_stop; /* shutdown: stop hard when the timeout passes */
    bool skiplock;
};
/* Sent once (PVE_CALL_ONCE). When the answer is lost after the request went
 * out (PVE_E_NETWORK, maybe_sent), the action's task on the VM, started
 * since the call, is looked for: found, it is the answer (upid, 0). An
 * HA-managed VM's start is a hastart task, its stop and shutdown hastop
 * (they ask the HA manager, whose LRM starts or stops the VM after). */
int pve_vm_power(pve_client *c, const char *node, int vmid, enum pve_power action,
                 const struct pve_power_opts *opts, char upid[PVE_UPID_MAX], struct pve_error *err);
/* The action's task on the VM started by this client's user since `since`
 * (unix seconds on this host's clock, compared as pve_find_clone_task
 * does) and not adopted before, as pve_vm_power looks for it: a
 * request whose answer was lost and that was served after that look (a
 * busy node's queue), looked for again before the action is asked again.
 * True with its UPID; false when none is seen (or the list cannot be read). */
bool pve_vm_power_task(pve_client *c, const char *node, int vmid, enum pve_power action,
                       int64_t since, char upid[PVE_UPID_MAX]);

/* The guest agent's network interfaces
 * (GET .../agent/network-get-interfaces): one entry per NIC with its MAC
 * (lower case, as the agent reports it) and up to PVE_AGENT_ADDRS
 * addresses ("10.0.0.5", "2001:db8::5") with their prefixes. An answer over
 * PVE_AGENT_ANSWER_MAX bytes is refused (PVE_E_INVALID). Not retried: the
 * agent of a booting guest answers 500 "QEMU guest agent is not running"
 * (PVE_E_OTHER, pve_agent_not_running() true), which the caller polls. */
#define PVE_AGENT_ANSWER_MAX (256 * 1024)
#define PVE_AGENT_NICS 16
#define PVE_AGENT_ADDRS 8
struct pve_agent_nic {
    char name[32];
    char mac[18];
    int naddrs;
    struct {
        char ip[48];
        int prefix;
    } addrs[PVE_AGENT_ADDRS];
};
int pve_agent_interfaces(pve_client *c, const char *node, int vmid, struct pve_agent_nic *out,
                         int max, int *n, struct pve_error *err);
/* The error is the agent not answering yet (booting, disabled, paused). */
bool pve_agent_not_running(const struct pve_error *e);
/* POST .../agent/ping: 0 when the guest's agent answered; its errors as
 * pve_agent_interfaces' ("QEMU guest agent is not running" while the guest
 * boots, "No QEMU guest agent configured"). Not retried: the caller asks
 * again on its own schedule. */
int pve_agent_ping(pve_client *c, const char *node, int vmid, struct pve_error *err);

struct pve_delete_opts {
    bool purge;                /* also from HA, replication, backup jobs */
    bool destroy_unreferenced; /* destroy-unreferenced-disks */
    bool skiplock;
};
/* DELETE the VM: its qmdestroy task's UPID. Sent once; a lost answer is its
 * task when one is found (started since the call). */
int pve_vm_delete(pve_client *c, const char *node, int vmid, const struct pve_delete_opts *opts,
                  char upid[PVE_UPID_MAX], struct pve_error *err);

/* POST /nodes/{node}/qemu/{vmid}/migrate: move the VM to `target` (a
 * member of the same cluster). online: live migration of a running VM
 * (PVE refuses a running VM without it); with_local_disks: copy local
 * disks too, to targetstorage when set (a storage ID, or a map
 * "src:dst,..."). An HA-managed VM gets a hamigrate task that only asks the
 * HA manager (the VM moves after it ends). Sent once (PVE_CALL_ONCE): a
 * lost answer is its hamigrate, else its qmigrate task when one is found
 * (started since the call), else the caller's to resolve (the VM's node or
 * its lock). */
struct pve_migrate_opts {
    bool online;
    bool with_local_disks;
    const char *targetstorage; /* NULL: the source's storage IDs */
};
int pve_vm_migrate(pve_client *c, const char *node, int vmid, const char *target,
                   const struct pve_migrate_opts *opts, char upid[PVE_UPID_MAX],
                   struct pve_error *err);

/* ---- HA ----------------------------------------------------------------- */

struct pve_ha_resource {
    char sid[32]; /* "vm:100" */
    int vmid;
    char state[32];
};
int pve_ha_list(pve_client *c, struct pve_ha_resource **out, size_t *n, struct pve_error *err);
int pve_ha_remove(pve_client *c, const char *sid, struct pve_error *err);

/* ---- snapshots (api_snap.c) ---------------------------------------------- */

#define PVE_SNAP_LIST_MAX 4096 /* a longer list is refused as malformed */
struct pve_snapshot {
    char name[48]; /* pve-configid, at most 40 */
    char description[1024];
    char parent[48];
    char snapstate[16]; /* "" when complete; "prepare"/"delete" when half-made */
    int64_t snaptime;   /* unix seconds */
    bool vmstate;       /* with RAM */
};
/* The snapshots (without PVE's "current" entry), in PVE's order. */
int pve_snap_list(pve_client *c, const char *node, int vmid, struct pve_snapshot **out, size_t *n,
                  struct pve_error *err);
/* qmsnapshot, qmdelsnapshot and qmrollback tasks: *upid receives the task.
 * Sent once: after a lost answer, the snapshot list tells what happened. */
int pve_snap_create(pve_client *c, const char *node, int vmid, const char *name,
                    const char *description, bool vmstate, char upid[PVE_UPID_MAX],
                    struct pve_error *err);
/* force: remove it from the config even when removing the disk snapshots
 * fails (a half-made snapshot). */
int pve_snap_delete(pve_client *c, const char *node, int vmid, const char *name, bool force,
                    char upid[PVE_UPID_MAX], struct pve_error *err);
/* Sent once (PVE_CALL_ONCE); a lost answer is answered by the qmrollback
 * task on the VM started since the call, when one is found. */
int pve_snap_rollback(pve_client *c, const char *node, int vmid, const char *name,
                      char upid[PVE_UPID_MAX], struct pve_error *err);
/* The qmrollback task on the VM started by this client's user since
 * `since` (unix seconds on this host's clock) and not adopted before: a
 * rollback whose answer was lost and that was served after
 * pve_snap_rollback looked, looked for again before it is sent again. */
bool pve_snap_rollback_task(pve_client *c, const char *node, int vmid, int64_t since,
                            char upid[PVE_UPID_MAX]);

#endif
