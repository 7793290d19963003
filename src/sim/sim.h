/* sim: pvesim's world — the simulated fleet, its VMs, tasks and locks — and
 * the internal contract between the simulator's files.
 *
 * One mutex (sim->mu) guards the whole world. Handlers run with it held,
 * except while they wait for a file lock (sim_flock_wait releases it through
 * the condition variable). The engine thread (engine.c) advances running
 * tasks on a short tick; every request also advances the world first, so what
 * a client sees never lags the clock.
 *
 * Time: every duration in here is in "PVE seconds", what a real node would
 * take. --time-scale F turns one PVE second into F real seconds, so tests run
 * a 20 GB full clone, a 10 s lock timeout or a 60 s shutdown timeout quickly
 * while keeping their proportions. sim_now() returns PVE seconds since start.
 *
 * This header is internal to src/sim/. */
#ifndef SIM_SIM_H
#define SIM_SIM_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/buf.h"
#include "sim/httpd.h"
#include "sim/schema.h"

#define SIM_MAX_NODES 128 /* a 100-node fleet fits (issue 16) */
#define SIM_MAX_STORAGES 8
#define SIM_MAX_TEMPLATES 16
#define SIM_MAX_TOKENS 16
#define SIM_MAX_ACL_OPTS 64 /* --acl, --role, --group, --token-privsep options each */
/* A node's finished tasks are listed from its task archive: PVE appends
 * "UPID ENDTIME STATUS" lines to /var/log/pve/tasks/index and renames it to
 * index.1 once it passes 50,000 bytes (about 500 to 1,000 tasks); the task
 * list reads index and index.1 (pve-common RESTEnvironment active_workers,
 * pve-manager API2/Tasks.pm). pvesim keeps the same two files' worth. */
#define SIM_TASK_INDEX_MAX 50000
/* /cluster/resources answers kept: all types, type=vm, node, storage */
#define SIM_RES_VARIANTS 4

struct sim;
struct sim_call;
struct sim_late;

enum node_state { NODE_ONLINE = 0, NODE_OFFLINE = 1, NODE_BLACKHOLE = 2 };

struct sim_storage {
    char id[64];
    char type[16];    /* lvmthin, dir, ... */
    char content[64]; /* "images,rootdir" */
    int shared;
    int64_t total;     /* bytes */
    int64_t base_used; /* bytes used by things other than our VM disks */
};

struct sim_template {
    char os[32];
    int vmid;
    int64_t disk; /* bytes of scsi0 */
    int64_t memory_mb;
    int cores;
};

struct sim_node {
    char name[64];
    int idx; /* 0-based position in the fleet */
    enum node_state state;
    int cpus;
    int64_t mem_total;     /* bytes */
    int64_t mem_base_used; /* host's own use, bytes */
    double bandwidth;      /* storage copy bandwidth, bytes per PVE second */
    struct sim_storage st[SIM_MAX_STORAGES];
    int nst;
    int listener; /* httpd listener id, -1 if none */
    struct {      /* state.c: sim_node_agg's cache */
        uint64_t gen;
        int64_t mem_used;                  /* host + running (or starting) VMs, bytes */
        int busy_cpus;                     /* vCPUs of running VMs, CPUs of running containers */
        int64_t st_used[SIM_MAX_STORAGES]; /* a shared storage's: the whole pool's */
        bool pooled[SIM_MAX_STORAGES];
    } agg;
    int port;
    int pid_next;   /* next worker pid for UPIDs */
    int arch_gen;   /* engine.c: tasks archived into "index" carry this; older: index.1, gone */
    int arch_bytes; /* engine.c: bytes in the current "index" */
    double boot;    /* sim_now() when it last came online */
    /* seconds this node's clock is ahead of the host's (behind when
     * negative): its tasks' start and end times and GET .../time (a node
     * whose NTP is broken; set with POST /_sim/nodes/{name}) */
    int64_t clock_offset;
};

enum vm_power { VM_STOPPED = 0, VM_RUNNING = 1, VM_PAUSED = 2 };

/* What the list answers need from a VM's config, derived once per world
 * generation (sim_vm_derive) instead of parsed again for every VM of every
 * answer. The strings are borrowed from the config: valid until the world
 * changes (the generation moves on). */
struct sim_vm_derived {
    uint64_t gen;            /* s->gen when derived; 0: never */
    int64_t maxmem, maxdisk; /* bytes */
    int cpus;
    bool template;
    /* name (or "VM <vmid>"), lock and tags as JSON string literals, quotes
     * included, in `text` (owned, freed with the VM): writing them is a
     * copy, not a walk through the config's memory. lock/tags: NULL when
     * absent. */
    char *text;
    const char *name, *lock, *tags;
    unsigned short name_len, lock_len, tags_len;
    int64_t st_used[SIM_MAX_STORAGES]; /* bytes of its disks on each storage of its node */
};

/* The per-VM file lock (/var/lock/qemu-server/lock-<vmid>.conf): a holder
 * count for shared holders and a flag for an exclusive one. */
struct sim_flock {
    int shared;
    bool exclusive;
};

/* history.c: a VM's sizes as the inventory tells them (maxcpu, maxmem, maxdisk: its
 * boot disk), and the cores and memory its pending list holds (0: none) */
struct sim_hist_sizes {
    int cores, pending_cores;
    int64_t memory_mib, pending_memory_mib;
    int64_t disk; /* bytes */
};

struct sim_vm {
    int vmid;
    uint64_t uid;                 /* history.c: this VM among all that had its VMID */
    struct sim_hist_sizes hist_z; /* history.c: its sizes as last recorded */
    struct sim_node *node;
    json_t *conf;           /* the config as GET config returns it (without digest) */
    json_t *pending;        /* pending values (object), may be empty */
    json_t *pending_delete; /* array of keys */
    enum vm_power power;
    double started; /* sim_now() at start */
    bool ha;
    /* "started", "stopped" (what the HA manager was last asked), or a state
     * it does not act in: "freeze" (requests wait, ha_request, until the
     * ctl API lifts it), "error" (requests fail), "ignored" (not managed) */
    char ha_state[16];
    /* "started"/"stopped", or "migrate <node>", asked while frozen, or "" */
    char ha_request[80];
    bool acpi;     /* the guest answers ACPI shutdown (default true) */
    bool starting; /* a start task has claimed its memory */
    struct sim_flock fl;
    bool gone;     /* destroyed; unlinked at the next sweep */
    json_t *snaps; /* snapshots (vmops.c): {"<name>": {config..., snaptime, ...}}, NULL if none */
    json_t *boot_net; /* guestnet.c: the ipconfigN the guest booted with, NULL if unchanged */
    /* h_movedisk.c: the OS each volume was cloned from, {"vm-100-disk-0":
     * "ubuntu"} (a test's way to tell an installed OS; not PVE's), or NULL */
    json_t *origin;
    double boot_net_at; /* ... valid for the boot that started then */
    struct sim_vm *next;
    struct sim_vm *prev;     /* state.c: O(1) unlink */
    struct sim_vm *hnext;    /* state.c: the VMID index's chain */
    struct sim_vm_derived d; /* state.c: sim_vm_derive's cache */
};

/* A container (pve-container): from the fleet file or made with POST
 * /nodes/{node}/lxc, started, stopped, configured and destroyed by tasks
 * (lxctask.c). Containers share the VMID space with VMs. */
struct sim_ct {
    int vmid;
    struct sim_node *node;
    json_t *conf; /* as GET .../lxc/{vmid}/config returns it, without digest */
    /* changes a running container takes at its next start (values), and
     * keys it drops then (array); both may be empty, never NULL */
    json_t *pending, *pending_delete;
    bool running;
    double started;      /* sim_now() at start */
    struct sim_flock fl; /* /run/lock/lxc/pve-config-<vmid>.lock */
    json_t *snaps;       /* snapshots, as a VM's (vmops.h), NULL if none */
    bool checkpointed;   /* suspended: lxc-checkpoint dumped it, resume restores it */
    struct sim_ct *next;
};

enum task_kind {
    TK_GENERIC = 0, /* ends after `dur` */
    TK_CLONE,
    TK_CREATE,
    TK_START,
    TK_STOP,
    TK_SHUTDOWN,
    TK_REBOOT,
    TK_SUSPEND,
    TK_RESUME,
    TK_RESET,
    TK_DESTROY,
    TK_CONFIG,
    TK_RESIZE,
    TK_HASTART,
    TK_HASTOP,
    /* vmops.c */
    TK_SNAPSHOT,
    TK_DELSNAPSHOT,
    TK_ROLLBACK,
    TK_TEMPLATE,
    TK_MIGRATE,
    TK_HAMIGRATE,
    TK_MOVEDISK, /* h_movedisk.c: qmmove reassigning a disk to another VM */
    /* lxctask.c: containers */
    TK_VZCREATE,
    TK_VZSTART,
    TK_VZSTOP,
    TK_VZSHUTDOWN,
    TK_VZREBOOT,
    TK_VZDESTROY,
    /* vmops.c: the snapshot and template workers shared with VMs */
    TK_VZSNAPSHOT,
    TK_VZDELSNAPSHOT,
    TK_VZROLLBACK,
    TK_VZTEMPLATE,
    /* h_lxcvol.c: resize, clone */
    TK_VZRESIZE,
    TK_VZCLONE,
    /* lxctask.c: status/suspend, status/resume */
    TK_VZSUSPEND,
    TK_VZRESUME,
    /* h_lxcmigrate.c */
    TK_VZMIGRATE,
};

struct sim_task {
    char upid[160];
    struct sim_node *node;
    char type[24];
    char id[48];
    char user[128];
    int pid;
    unsigned pstart;
    int64_t starttime; /* wall clock, unix seconds */
    int64_t endtime;
    bool running;
    char *exitstatus; /* set when stopped */
    int arch_gen;     /* the node's arch_gen when it stopped (see SIM_TASK_INDEX_MAX) */
    json_t *log;      /* array of strings */
    /* engine state */
    enum task_kind kind;
    int phase;
    double t0;       /* sim_now() at start */
    double deadline; /* phase deadline (lock waits, shutdown timeout) */
    double dur;
    int vmid;  /* subject VM */
    int newid; /* clone target */
    bool locked_src, locked_dst;
    double bytes_total, bytes_done;
    json_t *args;     /* the request's parameters */
    char *fault_exit; /* injected exit status, if a fault rule said so */
    bool fault_keep;  /* the failing task's cleanup fails too: its half-made work stays */
    struct sim_task *next;
    struct sim_task *hnext; /* engine.c: next in its UPID hash bucket */
};

struct sim_token {
    char tokenid[128]; /* user@realm!name */
    char secret[64];
};

struct sim_fault {
    int id;
    char method[8]; /* "" = any */
    char *pattern;  /* PCRE2 on the decoded path without /api2/json */
    void *re;       /* compiled pattern */
    char node[64];  /* "" = any */
    char kind[16];  /* lock_timeout, error, 595, 596, served_596, delay, task_error, hang,
                       drop, late, late_hang */
    int status;
    char *message;
    long delay_ms;
    double rate;   /* 0..1, probability per matching call */
    int remaining; /* -1 unlimited */
    int hits;
    bool cleanup_fails; /* task_error: the failed task's own cleanup fails too */
    struct sim_fault *next;
};

struct sim_opts {
    char *listen;
    char *nodes_csv;
    char *fleet_file;
    char *password;
    char *tokens[SIM_MAX_TOKENS];
    int ntokens;
    /* access control (perm.h): --acl, --role, --group, --token-privsep */
    char *acls[SIM_MAX_ACL_OPTS], *roles[SIM_MAX_ACL_OPTS], *groups[SIM_MAX_ACL_OPTS],
        *privsep[SIM_MAX_ACL_OPTS];
    int nacls, nroles, ngroups, nprivsep;
    bool standalone;
    int pve_version; /* 7, 8 or 9 */
    double time_scale;
    double auth_delay; /* real seconds */
    int ticket_lifetime;
    char *state_dir;
    char *schema_path;
    char *tls_cert, *tls_key;
    char *ticket_key; /* --ticket-key FILE, or NULL: a key made at start */
    bool check_returns;
    bool seeded; /* --seed given: the random numbers repeat from run to run */
    unsigned long long seed;
    /* --pvestatd-cycle S: the stats of /cluster/resources and GET /nodes are
     * as of pvestatd's last report, every S PVE seconds (rrd.c); 0: live */
    double pvestatd_cycle;
};

/* rrd.c: what pvestatd last reported of a VM, as the RRD cache in pmxcfs
 * holds it (keyed by VMID, and by host when standalone) */
struct sim_rrd_vm {
    int vmid;
    int world; /* the standalone host's node index; -1 in a cluster */
    double t;  /* the cycle that last reported it */
    bool running, template;
    int cpus;
    int64_t maxmem, maxdisk, mem, uptime;
    char *name; /* JSON string literal, quotes included */
    size_t name_len;
    struct sim_rrd_vm *next;
};

/* ... and of a node and its storages */
struct sim_rrd_node {
    int cpus, busy_cpus;
    int64_t mem_total, mem_used, uptime;
    int64_t st_total[SIM_MAX_STORAGES], st_used[SIM_MAX_STORAGES];
};

/* history.c: the VMs' power, node and size changes, newest SIM_HISTORY_MAX */
#define SIM_HISTORY_MAX 65536
struct sim_hist_entry {
    int64_t ms; /* wall clock */
    uint64_t uid;
    int vmid;
    short node;        /* index into s->nodes */
    signed char power; /* enum vm_power from then on; -1: the VM went */
    struct sim_hist_sizes z;
};
struct sim_history {
    struct sim_hist_entry *ring; /* NULL until the first entry */
    size_t first, n;
    uint64_t dropped, uids;
    bool off; /* the world is being freed */
};

struct sim {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast whenever a lock is released or a task ends */
    /* broadcast whenever a task starts (GET /_sim/tasks?wait_ms waits on it);
     * not cv: the file-lock waiters need not wake for every start */
    pthread_cond_t started_cv;
    /* sim_node_apply: one listener switch at a time, the node's state read
     * under it (taken before mu, never while holding it) */
    pthread_mutex_t apply_mu;
    struct sim_opts o;
    schema *sch;
    httpd *http;
    char *cert_pem, *key_pem, *fingerprint;
    struct auth *auth;
    /* perm.h: roles and ACLs, one world for a cluster, one per standalone
     * host (each its own /etc/pve/user.cfg); made from the flags again by
     * /_sim/reset; in the state file once the API changed them */
    struct sim_perm *perm;
    struct sim_node nodes[SIM_MAX_NODES];
    int nnodes;
    struct sim_template tpl[SIM_MAX_TEMPLATES];
    int ntpl;
    int gw_listener;               /* cluster mode: the --listen entry point */
    void *lctx[SIM_MAX_NODES + 1]; /* listener contexts (api.c), freed at exit */
    int nlctx;
    struct sim_vm *vms;
    struct sim_ct *cts; /* containers (lxc.c) */
    json_t *pools;      /* {"poolid": {"comment": s?, "vms": [vmid...]}} (lxc.c) */
    /* h_qemu.c: {"storage:volume": bytes} of the volumes detached to an
     * unusedN (whose line names the volume only): they take their room on
     * the storage still (state.c), and PVE reads a volume's size from its
     * storage when it is attached again; ctl.c: of a drive whose size= a
     * change behind PVE's back dropped (the storage keeps the volume's
     * size). Not in the state file */
    json_t *vol_sizes;
    struct sim_vm **vm_index; /* state.c: VMID hash, chains through hnext */
    size_t vm_index_cap;      /* buckets, a power of two */
    size_t nvms;              /* VMs linked in s->vms */
    /* World generation: moves on whenever the world may change (a write
     * request, a control call, a running task's step, a state load); caches
     * of derived values (sim_vm_derive, sim_node_agg) are valid for one
     * generation. While `changing` is set (inside a write), nothing is
     * cached: a handler that changes a VM and then asks for a node's
     * totals sees its own change. */
    uint64_t gen;
    int changing;
    /* h_cluster.c: whole /cluster/resources answers, one per `type` variant,
     * kept while the generation and the RRD sample time (sim_rrd_now) stay
     * (with s->mu held) */
    struct sim_res_cache {
        uint64_t gen;
        double rrd_t;
        int node;              /* the node whose view it is (standalone), else -1 */
        struct sim_blob *body; /* the whole answer, envelope included; NULL: none */
    } res_cache[SIM_RES_VARIANTS];
    /* rrd.c: the last pvestatd cycle's report (with --pvestatd-cycle) */
    struct {
        int64_t cycle; /* the number of the last cycle taken; -1: take one at the next advance */
        double t;      /* its time, cycle * --pvestatd-cycle */
        struct sim_rrd_vm **tab; /* hash of VM entries, chains through next */
        size_t cap, n;           /* buckets (a power of two), entries */
        struct sim_rrd_node nodes[SIM_MAX_NODES];
    } rrd;
    struct sim_task *tasks;       /* newest first */
    struct sim_task **task_index; /* engine.c: UPID hash, chains through hnext */
    size_t task_index_cap;        /* buckets, a power of two */
    size_t ntasks;                /* tasks linked in s->tasks */
    int ntasks_running;           /* engine.c: tasks in s->tasks still running */
    uint64_t ntasks_started;      /* engine.c: tasks started since the start */
    struct sim_fault *faults;
    int fault_next;
    /* api.c: calls under a `late` fault, each with a thread of its own
     * that serves it when due (or ends unserved, cancelled); nlate counts
     * them until their threads are done with the world */
    struct sim_late *late;
    int nlate;
    /* answers a `delay` holds back go at once when this moves (POST
     * /_sim/late); read without s->mu */
    atomic_uint delay_gen;
    json_t *calls;      /* {"GET /nodes/{node}/qemu": n, ...} */
    json_t *node_calls; /* {"sv1": n, ...} */
    json_t *violations; /* results that failed --check-returns (bounded) */
    json_t *big_checks; /* api.c: {"GET /cluster/resources": n} big streamed answers seen */
    json_t *rejections; /* requests refused by the schema or unknown paths (bounded) */
    double t_origin;    /* real monotonic seconds at start */
    double last_adv;    /* sim_now() of the last sim_advance */
    uint64_t rng;
    bool dirty;
    bool stopping;
    pthread_t engine;
    int64_t vm_seq; /* for MAC addresses, UUIDs */
    struct sim_history history;
};

/* Byte figures summed over a node's guests (memory in use, a storage's
 * used bytes) stop at SIM_BYTES_MAX: a container's memory has no maximum
 * in PVE's schema and a volume's size= none below int64, so a few of them
 * would overflow the sums; the ceiling leaves room for the callers' own
 * additions of bounded figures. a in [0, SIM_BYTES_MAX], b >= 0. */
#define SIM_BYTES_MAX (INT64_C(1) << 62)
static inline int64_t sim_bytes_add(int64_t a, int64_t b)
{
    return b > SIM_BYTES_MAX - a ? SIM_BYTES_MAX : a + b;
}

/* --- world (state.c) ------------------------------------------------ */
double sim_now(const struct sim *s);
/* pvestatd reports every SIM_RRD_STEP seconds (PVE time): the values a real
 * node reads from its RRD cache (uptime in /cluster/resources) are as of
 * its last report, the time this returns (<= sim_now). With
 * --pvestatd-cycle, the time of the last cycle rrd.c took. */
#define SIM_RRD_STEP 10.0
double sim_rrd_now(const struct sim *s);
/* Real milliseconds for `pve_seconds` at the current time scale. */
long sim_real_ms(const struct sim *s, double pve_seconds);
double sim_rand(struct sim *s); /* uniform [0,1) */
struct sim_node *sim_node_find(struct sim *s, const char *name);
/* The VM with this ID on node n (standalone) or anywhere (cluster, n NULL). */
struct sim_vm *sim_vm_find(struct sim *s, struct sim_node *n, int vmid);
/* Is vmid used in the VMID space that node n belongs to? */
bool sim_vmid_used(struct sim *s, struct sim_node *n, int vmid);
struct sim_vm *sim_vm_new(struct sim *s, struct sim_node *n, int vmid);
void sim_vm_unlink(struct sim *s, struct sim_vm *vm);
/* "running", "paused" or "stopped", as the state and PVE's status say */
const char *sim_power_name(enum vm_power p);
/* --- history (history.c), under s->mu --------------------------------- */
/* A VM's power changes only through this, so that the history has it */
void sim_vm_set_power(struct sim *s, struct sim_vm *vm, enum vm_power p);
void sim_history_made(struct sim *s, struct sim_vm *vm); /* gives it its uid */
void sim_history_gone(struct sim *s, struct sim_vm *vm);
void sim_history_moved(struct sim *s, struct sim_vm *vm); /* its node changed */
/* Sizes are not hooked where each config changes (dozens of places): they
 * are compared with the last recorded after every change that may touch
 * them, and recorded when they differ. After a write call (the VMs its
 * params name: vmid, newid), a task's step (its vmid, newid), a control
 * edit (the VM), a fleet built or loaded (every VM). */
void sim_history_sizes(struct sim *s, struct sim_vm *vm); /* vm may be NULL */
/* the VM of vmid (on n, a standalone host; a cluster's anywhere), if any */
void sim_history_sizes_of(struct sim *s, struct sim_node *n, int vmid);
void sim_history_sizes_params(struct sim *s, struct sim_node *n, json_t *params);
void sim_history_sizes_all(struct sim *s);
/* {"history": [[ms, uid, vmid, node, power or "gone", cores, memory MiB,
 * disk bytes, pending cores, pending memory MiB], ...] oldest first,
 * "dropped": entries the ring let go} (new reference) */
json_t *sim_history_json(const struct sim *s);
/* Frees the ring; nothing is recorded from then on (the world's end) */
void sim_history_free(struct sim *s);
/* Config digest: SHA-1 hex of the config as a PVE config file. */
char *sim_vm_digest(const struct sim_vm *vm);
/* GET .../pending's answer (config_with_pending_array, pve-guest-common
 * GuestHelpers.pm): per config key its value, pending value and `delete`
 * 1 when a pending delete names it; the digest as a key, as load_config
 * gives it; then the keys only pending, then the pending deletes of keys
 * the config lacks. */
json_t *sim_pending_array(json_t *conf, json_t *pending, json_t *pending_delete,
                          const char *digest);
/* Bytes of a disk config value "local-lvm:vm-100-disk-0,size=32G". */
int64_t sim_disk_size(const char *drive);
/* Bytes of the volume a drive names as its storage has it: size=, else
 * what pvesim knows of the volume (s->vol_sizes), else 0. */
int64_t sim_volume_size(struct sim *s, const char *drive);
char *sim_disk_storage(const char *drive); /* caller frees */
/* The boot disk key (scsi0 unless the config says otherwise) or NULL. */
const char *sim_vm_bootdisk(const struct sim_vm *vm);
int64_t sim_storage_used(struct sim *s, struct sim_node *n, const char *storage);
struct sim_storage *sim_storage_find(struct sim_node *n, const char *id);
int64_t sim_node_mem_used(struct sim *s, struct sim_node *n);
/* The VM's derived values (see struct sim_vm_derived), recomputed when the
 * generation moved on. With s->mu held. */
const struct sim_vm_derived *sim_vm_derive(struct sim *s, struct sim_vm *vm);
/* Node totals (memory and vCPUs in use, bytes per storage) for every node in
 * one pass over the VMs, cached for the generation. With s->mu held. */
void sim_node_agg(struct sim *s);
/* The world is about to change / has changed: see sim->gen. Pairs, with
 * s->mu held; sim_world_touch is both at once. */
void sim_world_begin(struct sim *s);
void sim_world_end(struct sim *s);
void sim_world_touch(struct sim *s);
int64_t sim_vm_maxmem(const struct sim_vm *vm); /* bytes */
/* A parameter or config value that is an integer or a string of one
 * (42, "42"); dflt when absent or of another type */
int64_t sim_json_int(json_t *v, int64_t dflt);
/* A memory value in MiB: as sim_json_int, or "current=2048" */
int64_t sim_memory_mib(json_t *m, int64_t dflt);
int64_t sim_vm_maxdisk(const struct sim_vm *vm); /* bytes: its boot disk's size= */
int sim_vm_cpus(const struct sim_vm *vm);
char *sim_fmt_size(int64_t bytes);                  /* "32G", "512M", ... caller frees */
bool sim_parse_size(const char *s, int64_t *bytes); /* "32G", "+10G"->10G, "1024" */
void sim_new_mac(struct sim *s, char out[18]);
/* Build the initial fleet from the options; 0 or -1 with *err. */
int sim_build_fleet(struct sim *s, char **err);
/* Full state as JSON text (for /_sim/state and --state-dir), written
 * record by record into b, one VM per line, never as one tree. With f, the
 * text goes on to f in pieces of about 1 MiB (b ends empty); without, it
 * all stays in b. With s->mu held. */
void sim_state_write(struct sim *s, struct buf *b, FILE *f);
int sim_state_load(struct sim *s, const char *path, char **err);
int sim_state_save(struct sim *s, const char *path);

/* --- pvestatd's reports (rrd.c) --------------------------------------- */
/* With --pvestatd-cycle: take a cycle's report when one is due (from
 * sim_advance, with s->mu held). */
void sim_rrd_advance(struct sim *s, double now);
/* Forget every report; the next advance takes one (a reset). */
void sim_rrd_clear(struct sim *s);
/* The last report of VM v, or NULL: no cycle has seen it yet. */
const struct sim_rrd_vm *sim_rrd_vm(const struct sim *s, const struct sim_vm *v);
/* The last report of node n, or NULL when the stats are live. */
const struct sim_rrd_node *sim_rrd_node(const struct sim *s, const struct sim_node *n);

/* --- containers and pools (lxc.c) ------------------------------------ */
/* The one container template a node holds, on its `local` storage. */
#define SIM_CT_TEMPLATE "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"

/* The container with this ID on node n (standalone) or anywhere (n NULL). */
struct sim_ct *sim_ct_find(struct sim *s, struct sim_node *n, int vmid);
/* The fleet file's "containers" and "pools"; 0 or -1 with *err. */
int sim_fleet_extras(struct sim *s, json_t *fleet, const char *path, char **err);
void sim_cts_free(struct sim *s); /* containers and pools */
/* Forget every container, pools untouched (a state file's replace them). */
void sim_cts_clear(struct sim *s);
/* Pool membership (user.cfg): the pool a guest is in, or NULL. */
const char *sim_pool_of(struct sim *s, int vmid);
bool sim_pool_exists(struct sim *s, const char *pool);
/* Add vmid to pool (leaving any other pool), as add_vm_to_pool; a NULL
 * pool only removes it (a destroyed guest). */
void sim_pool_add_vm(struct sim *s, const char *pool, int vmid);
/* A container's entry in GET /nodes/{node}/lxc. */
json_t *sim_ct_list_entry(struct sim *s, struct sim_ct *ct);
/* The memory a container uses on its host (its entry's `mem`): 0 when stopped. */
int64_t sim_ct_mem(const struct sim_ct *ct);
/* The CPUs a running container keeps busy on its node, as a running VM
 * its vCPUs (the node's `cpu`): its cores, cpulimit rounded up, or all the
 * host's when it has neither (it may use them all); 0 when stopped. */
int sim_ct_busy_cpus(const struct sim_ct *ct);
/* Is k a container config key naming a volume (rootfs, mpN, unusedN)? */
bool sim_ct_volume_key(const char *k);
/* A new container (empty config, stopped) linked into the world. */
struct sim_ct *sim_ct_new(struct sim *s, struct sim_node *n, int vmid);
/* Forget a container (destroyed, or a create that failed): out of its pool too. */
void sim_ct_unlink(struct sim *s, struct sim_ct *ct);
/* The config digest (SHA-1 of the config file, pending section included). */
char *sim_ct_digest(const struct sim_ct *ct);
/* Its `lock` property (create, backup, mounted...), or NULL. */
const char *sim_ct_lock(const struct sim_ct *ct);
/* "/run/lock/lxc/pve-config-<vmid>.lock" */
const char *sim_ct_lockfile(int vmid, char out[96]);
/* The container's flock (lock_config): taken at once or not. */
bool sim_ct_flock_try(struct sim_ct *ct);
void sim_ct_flock_release(struct sim *s, struct sim_ct *ct);
/* Wait up to `timeout` PVE seconds for it (with s->mu held, released while
 * waiting); the container, found again, or NULL (timeout or gone). */
struct sim_ct *sim_ct_flock_wait(struct sim *s, struct sim_ct *ct, double timeout);
/* Move pending values into the config (vmconfig_apply_pending, at start). */
void sim_ct_apply_pending(struct sim *s, struct sim_ct *ct);
/* A key out of the container's config as vmconfig_apply_pending deletes
 * it: a volume mount point's volume stays as unusedN; an unusedN's volume
 * goes (delete_mountpoint_volume) unless a mount point, pending value or
 * snapshot still uses it. Call sim_ct_drop_reattached once done. */
void sim_ct_delete_key(struct sim *s, struct sim_ct *ct, const char *k);
/* Set key k to val (stolen), as vmconfig_apply_pending does: an mpN's old
 * volume stays as unusedN (apply_pending_mountpoint). */
void sim_ct_set_key(struct sim *s, struct sim_ct *ct, const char *k, json_t *val);
/* write_pct_config: "remove 'unusedX' settings if the volume is still
 * used" by rootfs or a mount point. */
void sim_ct_drop_reattached(struct sim_ct *ct);
/* The keys of an object or the strings of an array, sorted as Perl's
 * `sort` (pve-container walks options so); NULL-ended, the strings
 * borrowed, the array to free. */
const char **sim_ct_sorted(json_t *j);
/* Step a container task (TK_VZ*), and interrupt one (DELETE .../tasks). */
void lxc_task_step(struct sim *s, struct sim_task *t, double now);
void lxc_task_stop(struct sim *s, struct sim_task *t);
/* A container worker's first steps (lxctask.c): fork, then lock_config
 * (10 s, "can't lock file ... - got timeout"). 0: not yet; 1: just locked
 * (the caller checks the config); 2: working. */
int lxc_task_phases(struct sim *s, struct sim_task *t, double now);
/* End a container task, giving back the flock its worker holds. */
void lxc_task_finish(struct sim *s, struct sim_task *t, const char *status);
/* A mount point's options after its volume (opts: ",k=v,..." or ""), as
 * print_ct_mountpoint writes them: keys sorted, size= this one. Caller frees. */
char *lxc_mp_options(const char *opts, const char *size);
/* h_lxc.c, for every container endpoint (h_lxc.c, h_lxcvol.c,
 * h_lxcmigrate.c): the {vmid} parameter's container on the answering node
 * (PVE::LXC::Config->load_config), or NULL with the call failed in PVE's
 * text (500 "Configuration file ... does not exist"). */
struct sim_ct *lxc_load_ct(struct sim_call *c);
/* A new task of `kind` for container `vmid` on the answering node, the
 * call's parameters as its arguments, the call's fault exit passed on, and
 * its UPID as the call's result. */
struct sim_task *lxc_call_task(struct sim_call *c, int vmid, const char *type, enum task_kind kind);
/* PVE::Cluster::check_vmid_unused for a new container (create, and clone's
 * create_and_lock_config): the VMID space is the cluster's (a standalone
 * host's own). False with the call failed in PVE's text when a VM or
 * container has it. */
bool lxc_vmid_unused(struct sim_call *c, int vmid);
/* h_lxcvol.c: the resize worker. */
void lxc_step_resize(struct sim *s, struct sim_task *t, double now);
/* ... the vzclone worker, and its end on SIGTERM. */
void lxc_step_clone(struct sim *s, struct sim_task *t, double now);
void lxc_clone_stop(struct sim *s, struct sim_task *t);
/* h_lxcmigrate.c: the vzmigrate worker, and its end on SIGTERM. */
void lxc_step_migrate(struct sim *s, struct sim_task *t, double now);
void lxc_migrate_stop(struct sim *s, struct sim_task *t);
/* A vzstart task for the container, as a worker that calls the start API
 * starts one (create's and rollback's `start`). */
struct sim_task *lxc_start_task(struct sim *s, struct sim_node *n, int vmid, const char *user,
                                double now);
/* /cluster/resources additions: lxc entries, `pool` on guests, pool entries. */
void sim_resources_extra(struct sim_call *c, const char *type);

/* --- file locks (state.c) -------------------------------------------- */
const char *sim_lockfile(int vmid, char out[96]);
/* Wait up to `timeout` PVE seconds for the flock; with s->mu held.
 * Returns true when taken. */
bool sim_flock_wait(struct sim *s, struct sim_vm *vm, bool exclusive, double timeout);
bool sim_flock_try(struct sim_vm *vm, bool exclusive);
void sim_flock_release(struct sim *s, struct sim_vm *vm, bool exclusive);

/* --- tasks (engine.c) ------------------------------------------------ */
struct sim_task *sim_task_new(struct sim *s, struct sim_node *n, const char *type, const char *id,
                              const char *user, enum task_kind kind);
void sim_task_log(struct sim_task *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A worker's argument as its handler kept it (t->args, the call's
 * parameters): the string, or NULL when absent or not a string. */
const char *sim_task_arg(const struct sim_task *t, const char *k);
/* A boolean argument read as PVE's API takes it (true, a nonzero integer or
 * "1", as call_bool); false when absent. */
bool sim_task_arg_true(const struct sim_task *t, const char *k);
/* Is the VM HA-managed as PVE's API sees it (PVE::HA::Config::vm_is_ha_managed:
 * a resource in state "ignored" is not)? */
bool sim_vm_ha_managed(const struct sim_vm *vm);
/* The HA manager acts on a request for vm: its state becomes "started" or
 * "stopped" and the node's LRM starts or stops it in a task of its own,
 * `delay` PVE seconds from now. */
void sim_ha_act(struct sim *s, struct sim_vm *vm, bool start, double delay);
/* The HA manager migrates vm to `target`: the source's LRM runs a qmigrate
 * task (online if the VM runs), `delay` PVE seconds from now; nothing when
 * the target is not online or is the VM's node (h_migrate.c). */
void sim_ha_migrate(struct sim *s, struct sim_vm *vm, const char *target, double delay);
/* A freeze lifted: the HA manager carries out the request it kept
 * (vm->ha_request: "started", "stopped" or "migrate <node>"). */
void sim_ha_resume(struct sim *s, struct sim_vm *vm);
void sim_task_finish(struct sim *s, struct sim_task *t, const char *exitstatus);
/* DELETE .../tasks/{upid}: the worker is interrupted (SIGTERM: "received
 * interrupt"). A clone's worker first removes the VM it was making, as
 * qemu-server's clone does when its copy dies, and gives back its locks;
 * other tasks end with PVE's "unexpected status". */
void sim_task_stop(struct sim *s, struct sim_task *t);
/* Is this finished task still in its node's task archive (index, index.1)? */
bool sim_task_archived(const struct sim_task *t);
/* The task with this UPID (a hash lookup), or NULL once it fell out of its
 * node's archive. With s->mu held. */
struct sim_task *sim_task_find(struct sim *s, const char *upid);
/* Forget every task (reset, exit). With s->mu held. */
void sim_tasks_clear(struct sim *s);
/* Free a task that is no longer linked in s->tasks. */
void sim_task_free(struct sim_task *t);
/* Advance every running task to now. With s->mu held. */
void sim_advance(struct sim *s);
int sim_engine_start(struct sim *s);
void sim_engine_stop(struct sim *s);

/* --- the PVE release pvesim poses as (h_nodes.c) ---------------------- */
struct sim_release {
    const char *version, *release, *repoid; /* GET /version */
    const char *kernel, *kbuild;            /* "6.17.2-1-pve", "#1 SMP PREEMPT_DYNAMIC ..." */
    const char *qemu, *machine;             /* running-qemu, running-machine */
};
const struct sim_release *sim_release(const struct sim *s);

/* --- request context (api.c) ----------------------------------------- */
struct sim_call {
    struct sim *s;
    const schema_method *m;
    const char *verb;
    const char *path;       /* decoded, without /api2/json */
    struct sim_node *node;  /* the node that answers (after proxying) */
    struct sim_node *local; /* the node whose endpoint was called (NULL: gateway) */
    json_t *params;         /* merged, verified parameters (borrowed) */
    const char *user;       /* authenticated user id, "root@pam" */
    const char *tokenid;    /* "root@pam!ci" for token auth, else NULL */
    bool is_root;           /* user is root@pam and not a token */
    char *task_fault_exit;  /* exit status for a task started by this call */
    bool task_fault_keep;   /* ... and what the task made half stays (cleanup_fails) */
    char *relay_fail;       /* served_596: the reason of the 596 that replaces the answer */
    /* result */
    json_t *data; /* owned */
    /* or: the data as JSON text, written by the handler (big lists are
     * streamed with jsonw instead of built as a tree); used when raw_set */
    struct buf raw; /* api.c seeds it with the envelope's head: append only */
    bool raw_set;
    size_t raw_end; /* api.c: where the data's text ends in raw */
    json_t *extra;  /* extra envelope members ("total"), owned, may be NULL */
    /* or: the whole answer (envelope included) as already built, a reference
     * owned by the call: sent as it is */
    struct sim_blob *answer;
    /* with raw_set: finish() keeps the whole answer here too (a reference;
     * whatever the slot held is released) for the next callers */
    struct sim_blob **keep_answer;
    int status; /* 0 = 200 */
    char *message;
    json_t *errors; /* owned */
};

typedef void (*sim_handler)(struct sim_call *c);

/* Fail the call: status and message (formatted; PVE messages end in "\n"
 * in the body's `message`; pass the text without the newline). */
void call_fail(struct sim_call *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 400 Parameter verification failed. with one error. */
void call_param_fail(struct sim_call *c, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Parameter accessors: NULL/default when absent. */
const char *call_str(struct sim_call *c, const char *name);
int64_t call_int(struct sim_call *c, const char *name, int64_t dflt);
bool call_bool(struct sim_call *c, const char *name, bool dflt);
/* The task-owner user string for UPIDs: user or full token id. */
const char *call_owner(struct sim_call *c);

/* Handler tables, one per file. Each entry: verb, schema path, function. */
struct sim_route {
    const char *verb;
    const char *path;
    sim_handler fn;
};
extern const struct sim_route sim_routes_nodes[];      /* h_nodes.c */
extern const struct sim_route sim_routes_cluster[];    /* h_cluster.c */
extern const struct sim_route sim_routes_qemu[];       /* h_qemu.c */
extern const struct sim_route sim_routes_power[];      /* h_power.c */
extern const struct sim_route sim_routes_tasks[];      /* h_tasks.c */
extern const struct sim_route sim_routes_vmops[];      /* h_snapshot.c: snapshots, template */
extern const struct sim_route sim_routes_migrate[];    /* h_migrate.c */
extern const struct sim_route sim_routes_agent[];      /* h_agent.c */
extern const struct sim_route sim_routes_lxc[];        /* h_lxc.c */
extern const struct sim_route sim_routes_inventory[];  /* h_inventory.c */
extern const struct sim_route sim_routes_movedisk[];   /* h_movedisk.c */
extern const struct sim_route sim_routes_lxcvol[];     /* h_lxcvol.c */
extern const struct sim_route sim_routes_lxcmigrate[]; /* h_lxcmigrate.c */
extern const struct sim_route sim_routes_access[];     /* h_access.c */

/* --- privileges (h_access.c over perm.h), with s->mu held -------------- */
/* The access-control world of node n: 0 in a cluster, the host's index
 * when standalone. */
int sim_perm_world(const struct sim *s, const struct sim_node *n);
/* Roles, groups and ACLs as the flags make them (--token, --token-privsep,
 * --role, --group, --acl): one world for a cluster, one per standalone host, each given them
 * all; at start and at /_sim/reset. NULL with *err (the caller frees). */
struct sim_perm *sim_perm_setup(const struct sim *s, char **err);
/* The call's world has no ACL entry: everyone may do everything. */
bool call_perm_open(const struct sim_call *c);
/* Does the caller hold priv on path (always in open mode)? */
bool call_can(struct sim_call *c, const char *path, const char *priv);
bool call_can_vm(struct sim_call *c, int vmid, const char *priv); /* on /vms/<vmid> */
/* Does the caller see everything: open mode, root@pam, or a root@pam
 * token without privilege separation (shared cached answers are theirs)? */
bool call_unrestricted(const struct sim_call *c);
/* Fail the call as RPCEnvironment's check does: 403 "Permission check
 * failed (path, privs)". */
void call_perm_fail(struct sim_call *c, const char *path, const char *privs);
/* check_vm_perm: VM.Allocate on /pool/<pool> (pool may be NULL) or else
 * on /vms/<vmid>; false with the call failed (403). */
bool call_vm_allocate(struct sim_call *c, int vmid, const char *pool);
/* Datastore.Audit or Datastore.AllocateSpace on /storage/<sid>: the
 * storage lists show it */
bool call_storage_visible(struct sim_call *c, const char *sid);
/* Datastore.AllocateSpace on /storage/<sid> (its first len bytes); false
 * with the call failed (403). */
bool call_storage_space(struct sim_call *c, const char *sid, size_t len);
/* ... for each new volume ("STORAGE:SIZE") a disk parameter asks for; the
 * disk keys: these prefixes followed by digits (or "rootfs", "efidisk0",
 * "tpmstate0" alone), the list NULL-ended. */
bool call_storage_new_volumes(struct sim_call *c, const char *const *keys_prefix);
/* qemu-server's per-option checks (h_qemuperm.c): true, or false with
 * the call failed (403, or 500 for "only root can set ..."). At create,
 * after VM.Allocate: the drives' storages and volumes, each option's
 * privilege (on the pool or the VM), serial/usb/hostpci by value, the
 * network devices' bridges (SDN.Use). */
bool qemu_perm_create(struct sim_call *c, int vmid, const char *pool, const char *storage);
/* ... the create worker's (tags): NULL, or the error its task ends with
 * (the caller frees) */
char *qemu_perm_create_worker(struct sim_call *c, int vmid);
/* A config change before its worker: the options deleted (del, an array
 * of keys) and written, the drives' storages and volumes, the bridges */
bool qemu_perm_update(struct sim_call *c, int vmid, json_t *del);
/* ... its worker's, on the values replaced or deleted (drives, serial,
 * usb, hostpci, tags, old bridges): NULL or the error (the caller frees) */
char *qemu_perm_update_worker(struct sim_call *c, struct sim_vm *vm, json_t *del);
/* The method's schema permissions for this call, on the parameters as
 * received (before verification): true, or false with *why (the 403's
 * reason; the caller frees). */
bool sim_perm_api_check(struct sim_call *c, json_t *params, char **why);

/* h_qemu.c: one VM of GET /nodes/{node}/qemu as JSON text into b (the
 * list and /cluster/resources stream their answers); now: sim_now(). */
void sim_vm_list_write(struct buf *b, struct sim *s, struct sim_vm *v, double now);

/* --- shared answers (blob.c) ---------------------------------------- *
 * An answer's text kept once and sent as it is by every response that
 * carries it (a cached /cluster/resources of 2.7 MB at 10,000 VMs):
 * immutable, reference counted, thread-safe. */
struct sim_blob;
/* A blob holding b's text (b is emptied), with one reference. */
struct sim_blob *sim_blob_take(struct buf *b);
struct sim_blob *sim_blob_ref(struct sim_blob *bl); /* another reference; NULL-safe */
void sim_blob_release(void *blob);                  /* drop one; NULL-safe */
const char *sim_blob_data(const struct sim_blob *bl);
size_t sim_blob_len(const struct sim_blob *bl);
/* Make bl r's body (r holds its own reference until it is freed). */
void sim_blob_send(struct sim_blob *bl, struct http_resp *r);

/* api.c: late calls (fault kind `late`). At most SIM_LATE_MAX wait at a
 * time; beyond, the fault acts as `drop`. */
#define SIM_LATE_MAX 64
#define SIM_LATE_DELAY_MS 1000 /* a `late` rule's delay_ms when it gives none */
/* The late calls not yet served never will be (a reset); with s->mu held. */
void sim_late_cancel(struct sim *s);
/* Cancel them and wait until every late call's thread is done (at exit,
 * once no request can come; before the engine stops: a call being served
 * may wait for a lock that a task gives back). Without s->mu. */
void sim_late_drain(struct sim *s);
/* Serve every late call still waiting now rather than when due (a test
 * that has seen what had to come first); how many. With s->mu held. */
int sim_late_release(struct sim *s);
/* Late calls received and not yet served, or being served (none: every
 * late call's effects are there); with s->mu held. */
int sim_late_pending(const struct sim *s);

/* api.c: the HTTP handler for every listener. */
void sim_http_handler(void *ctx, const struct http_req *req, struct http_resp *resp);
/* ctl.c: /_sim/ control API. */
void sim_ctl_handle(struct sim *s, const struct http_req *req, struct http_resp *resp);
/* Apply a node's state to its listener (standalone/offline/blackhole).
 * Without s->mu held: it waits for the listener's accept thread. */
void sim_node_apply(struct sim *s, struct sim_node *n);

#endif
