/* config: proxd's configuration, one INI file (docs/proxd.conf.example is
 * the fully commented reference). Parsing is table-driven: every key has a
 * type, a default, bounds and a validator in one table (config.c), which
 * also drives `proxd --check-config FILE` and the example.
 *
 * Errors name the file, line, section and key: "proxd.conf:12: [node sv1]
 * storage: must not be empty". Unknown sections and keys are errors, so
 * typos do not pass silently.
 *
 * Ownership: config_load returns a struct the caller frees with
 * config_free. Read-only after loading; safe to share between threads. */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ippool.h"

#define CFG_MAX_NODES 64
#define CFG_MAX_OS 32
#define CFG_MAX_HOSTS 8
#define CFG_MAX_OWNERS 64
#define CFG_MAX_POOLS 32
#define CFG_OS_POOLS 2 /* an OS names at most one IPv4 and one IPv6 pool */
#define CFG_POOL_DNS 4 /* nameservers per pool */
#define CFG_MAX_WEBHOOKS 16

enum placement { PLACE_ORDERED = 0, PLACE_SPREAD = 1 };

struct cfg_os {
    char name[32];          /* section "[os ubuntu]" */
    int range_lo, range_hi; /* vmid_range = 1000-1999 */
    /* ippools = v4pool, v6pool: the pools a VM of this OS gets an address
     * from when the request names none; indices into proxd_config.pools */
    int pools[CFG_OS_POOLS];
    int npools;
    char pools_raw[80]; /* as written, resolved after the whole file is read */
    char clone[8];      /* clone = full | linked: how creations copy the template */
};

struct cfg_template {
    char os[32];
    int vmid;
};

struct cfg_node {
    char name[64];                  /* section "[node sv1]": the PVE node name */
    char hosts[CFG_MAX_HOSTS][128]; /* host = 127.0.0.1:8006[, 10.0.0.2:8006] */
    int nhosts;
    char cluster[64]; /* cluster = name: nodes with the same cluster share one
                         API endpoint set and one VMID space; "" = standalone */
    char storage[64]; /* storage = local-lvm: where VM disks land */
    struct cfg_template templates[CFG_MAX_OS]; /* template.ubuntu = 9000 */
    int ntemplates;
    int max_clones; /* concurrent clones on this node (default: [limits] clones_per_node) */
    char state[16]; /* state = active | cordoned: a cordoned node takes no new VMs */
};

struct cfg_quota {
    char owner[64]; /* section "[quota alice]" or "[quota default]" */
    int vms, cores;
    int64_t memory_mb, disk_gb; /* 0: unlimited */
    int addresses;              /* IP addresses of pools, 0: unlimited */
};

/* [ippool NAME]: an address pool (docs/proxd.conf.example, docs/design/ippool.md). */
struct cfg_ippool {
    char name[32];
    struct ippool plan; /* cidr, gateway, ranges, reserved; prepared */
    struct ippool_addr dns[CFG_POOL_DNS];
    int ndns;
    char searchdomain[256]; /* "" = none */
    char bridge[16];        /* the Linux bridge net0 goes on (IFNAMSIZ) */
    int vlan;               /* 802.1Q tag on net0, 0 = untagged */
    int64_t quarantine_s;   /* released addresses rest this long (default: [proxd] quarantine) */
    bool on_node[CFG_MAX_NODES]; /* reachable on nodes[i]: from nodes = and clusters =, or all */
    char nodes_raw[512];         /* as written, resolved after the whole file is read */
    char clusters_raw[256];
};

/* [webhook NAME]: where events are posted (core/webhook.h) */
struct cfg_webhook {
    char name[32];
    char url[512];     /* http:// or https:// */
    char secret[256];  /* signs each delivery (Proxd-Signature) */
    char events[512];  /* "vm.created, vm.*" or "*" (default) */
    int64_t max_age_s; /* an event still undelivered after this is dropped; default 86400 */
    int timeout_s;     /* one delivery attempt; default 10 */
    int retry_max_s;   /* the longest pause between attempts (from 0.5 s, doubling); default 60 */
};

struct proxd_config {
    char path[512];
    /* [proxd] */
    char listen[128];   /* 127.0.0.1:8080 */
    char database[512]; /* sqlite:/var/lib/proxd/proxd.db | postgresql://... */
    enum placement placement;
    char log_format[8]; /* text | json */
    char log_level[8];
    char log_file[512]; /* "" = stderr; reopened on SIGHUP (log rotation) */
    int workers;        /* job worker threads; 0 (default): sized from the clone slots */
    int job_lease_s;    /* a job's lease: another instance takes a dead one's jobs after; 30 */
    int reconcile_interval_s; /* default 60 */
    int config_reads;         /* the config walk's VM config reads per second per world; 20 */
    int ha_wait_s; /* an HA-managed VM's start/stop: the wait for the HA manager to act; 120 */
    /* how much older than a read of /cluster/resources its stats may be
     * (pvestatd's cycle and pmxcfs's spread): settled reservations count
     * this much longer, the reconciler judges no record changed this long
     * before a read; 15 (0: a Proxmox, or pvesim, that serves them live) */
    int stats_lag_s;
    /* after a creation, start, reboot or reinstall, how long its guest agent
     * is asked before the guest is told silent (guestwatch.h); 300 (0: no
     * checks) */
    int guest_wait_s;
    char network_drift[8];    /* report | restore | adopt (a pool VM's net0/ipconfig0 changed) */
    int idle_timeout_s;       /* API connections idle this long are closed; default 60 */
    int header_timeout_s;     /* a request's line and headers must arrive within this; default 10 */
    int streams_per_owner;    /* event streams one owner may hold open at once; default 64 */
    bool delete_orphans;      /* reconciler deletes tagged VMs without a record */
    int64_t leftover_grace_s; /* a leftover on a node gone from the config is released after */
    char tag[32];             /* the tag that marks proxd's VMs, default "proxd" */
    int64_t quarantine_s;     /* released VMIDs rest this long, default 300 */
    int fallback_lo, fallback_hi; /* fallback_range = 9000-9999 */
    /* [proxmox] */
    char token[256];
    char user[128];
    char password[256];
    char password_file[512];
    bool verify_tls;
    char ca_file[512];
    char fingerprint[128];
    int connect_timeout_s; /* default 3 */
    int timeout_s;         /* default 30 */
    int probe_interval_s;  /* each up node is probed this often (0: never); default 10 */
    int privilege_check_s; /* the credentials' privileges are read this often (0: never);
                              default 600 (access.c) */
    int ticket_lifetime_s; /* with user/password: how long a ticket serves, default 7200 */
    int ticket_renew_s;    /* renew tickets this old; default 0: half the lifetime */
    bool json_bodies;
    /* [limits] */
    int cores_min, cores_max;
    int64_t memory_min_mb, memory_max_mb;
    int64_t disk_min_gb, disk_max_gb;
    int64_t memory_margin_mb; /* safety margins kept free on every node */
    int64_t disk_margin_gb;
    int clones_per_node; /* default 2 */
    int jobs_max;        /* global concurrent jobs, default 32 */
    int drain_parallel;  /* VMs a node drain moves at once, default 2 */
    int name_max;        /* longest VM name, default 63 */
    /* [os NAME], [node NAME], [quota OWNER] */
    struct cfg_os os[CFG_MAX_OS];
    int nos;
    struct cfg_node nodes[CFG_MAX_NODES];
    int nnodes;
    struct cfg_quota quotas[CFG_MAX_OWNERS];
    int nquotas;
    /* [ippool NAME] */
    struct cfg_ippool pools[CFG_MAX_POOLS];
    int npools;
    /* [snapshots] (0: unlimited / off) */
    int snap_max_per_vm;    /* snapshots one VM may hold */
    int snap_max_per_owner; /* snapshots one owner's VMs may hold together */
    int snap_keep;          /* retention: proxd-made snapshots kept per VM */
    int64_t snap_max_age_s; /* retention: proxd-made snapshots older than this go */
    int snap_sync_per_pass; /* VMs whose snapshots a reconcile pass reads; default 8 */
    /* [events] */
    int64_t events_keep_s; /* the event log keeps this long (0: for ever); default 7 days */
    int64_t jobs_keep_s;   /* finished jobs and idempotency answers: default 30 days, 0: ever */
    /* [webhook NAME] */
    struct cfg_webhook webhooks[CFG_MAX_WEBHOOKS];
    int nwebhooks;
};

/* Load and validate. On failure returns NULL and writes one message per
 * problem (each "file:line: [section] key: what is wrong") into err, which is
 * NUL-terminated and truncated to errlen. */
struct proxd_config *config_load(const char *path, char *err, size_t errlen);
/* The same with every message whole (up to 200 of them, each naming the
 * file: proxd's 8 KiB buffer cut a long report short): *errs is NULL on
 * success, else the messages, which the caller frees. */
struct proxd_config *config_load_all(const char *path, char **errs);
void config_free(struct proxd_config *c);

const struct cfg_os *config_os(const struct proxd_config *c, const char *name);
/* Does OS `os` clone its template linked ([os] clone = linked)? */
bool config_clone_linked(const struct proxd_config *c, const char *os);
const struct cfg_node *config_node(const struct proxd_config *c, const char *name);
/* The template VMID of `os` on `node`, or 0 when the node has none. */
int config_template(const struct cfg_node *n, const char *os);
/* The quota of `owner` (its own section, else [quota default], else NULL). */
const struct cfg_quota *config_quota(const struct proxd_config *c, const char *owner);
/* The pool `name`, or NULL. */
const struct cfg_ippool *config_ippool(const struct proxd_config *c, const char *name);
/* Whether pool p is reachable on node n (both from c). */
bool config_ippool_reachable(const struct proxd_config *c, const struct cfg_ippool *p,
                             const struct cfg_node *n);

#endif
