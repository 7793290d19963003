/* fleet: the registry of Proxmox worlds and nodes, and proxd's live view of
 * them (the inventory).
 *
 * A world is what one pve_client talks to: a cluster (its members' hosts,
 * one VMID space, one cluster-wide /cluster/resources call) or a standalone
 * host. The inventory keeps, per node: reachable or not, memory, the VM
 * storage's space, and its VMs (VMID, power, tags); per world, the VMIDs
 * held by guests proxd does not manage: containers (lxc) on any node, VMs
 * on nodes it does not manage. Those are only VMIDs, taken like any VM's
 * (fleet_taken_vmids), never VMs: fleet_vms, fleet_vm_node, fleet_vm_find
 * and node_view.nvms leave them out (proxd never manages them), and
 * nothing needs their sizes (a node's memory and storage figures are the
 * host's: they count its containers already). The containers on managed
 * nodes are also kept with their node (fleet_cts) for the config walk. It is refreshed by
 * fleet_refresh() — one call per world, worlds in parallel — which the core
 * runs periodically and after operations.
 *
 * Health: a node that fails at the network level (refused, timed out,
 * 595/596) in any call through the world's client (libpve's failure hook)
 * is marked down at once and probed again with backoff (1 s doubling to
 * 60 s), so placement skips it immediately instead of waiting out another
 * timeout, and requests on its VMs are refused while it is down. A
 * connection the node closed without an answer after the request went out
 * (pve_error.closed) is not that: the node is probed at once in full on its
 * own thread (below) and marked down only if it does not answer that (with
 * no probe running, it is marked down as before).
 *
 * Active probe (fleet_probe_start): a node the cluster still reports online
 * may hang; an up node that gave no sign of life for a probe interval (no
 * successful answer to a call sent on it since: libpve's on_node_answer, or
 * the last probe) is asked for its version (a status probe: GET
 * /nodes/N/version, the node's smallest answer): one prober thread asks the
 * nodes due, one after another, with a 1 s timeout (PVE_CALL_GLANCE); one
 * that does not answer is asked again on a thread of its own with the
 * probe's timeout (twice the connect timeout, at most the operation
 * timeout), and one that fails that at the network level is marked down
 * at once, so a hung node is seen within the interval plus 1 s plus that
 * timeout, and holds up the others' probes by 1 s at most.
 *
 * Thread-safe: every function may be called from any thread. */
#ifndef CORE_FLEET_H
#define CORE_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "pve/pve.h"

struct fleet;

struct fleet *fleet_new(const struct proxd_config *cfg, char *err, size_t errlen);
void fleet_free(struct fleet *f);

/* The client for the world `node` belongs to (borrowed), or NULL. */
pve_client *fleet_client(struct fleet *f, const char *node);

/* Give every world's client the task registry r (pve.h; NULL: none). */
void fleet_set_task_registry(struct fleet *f, const struct pve_task_registry *r);

/* Refresh every world whose probe is due (all when force), in parallel;
 * returns when all have answered or failed. Each world is asked once (no
 * retry): one that does not answer within the connect timeout is marked
 * down at once with its nodes, and asked again after its backoff. One
 * that answers the read with an error (a 500) keeps its last inventory,
 * nodes up as they were, and is asked again after its backoff; it is down
 * at the third such answer in a row (at the first, before any good read).
 * Refused credentials (401, 403) or TLS trust count as no answer. */
void fleet_refresh(struct fleet *f, bool force);

/* When the next refresh is due (mono ms) for a keeper whose last one
 * began at mono ms last_ms: 5 s after it when anything read the inventory
 * for a decision (placement, the VMID choice, the API's views:
 * fleet_node_view and fleet_taken_vmids) once it was 5 s old (a younger
 * one serves a decision as a new read would) or at the end of a down world's
 * or node's backoff (not sooner than 5 s after it); 60 s after it in any
 * case (the reconciler's default interval: its pass, which reads the
 * inventory, is then an idle fleet's only read). An idle fleet is not asked
 * for its whole inventory every 5 s; one in use is as fresh as before.
 * Thread-safe. */
int64_t fleet_refresh_next(struct fleet *f, int64_t last_ms);

/* What the fleet tells its owner, so that its watchers sleep until then
 * instead of looking on a beat. */
enum fleet_note {
    FLEET_NOTE_WANTED = 1, /* the first read for a decision since a refresh began */
    FLEET_NOTE_HEALTH = 2, /* a node turned up or down, or was known for the first time */
    FLEET_NOTE_DOWN = 4,   /* a node turned down: fleet_refresh_next may be sooner (its
                              re-probe at its backoff's end) */
};
/* fn is called on the thread that caused the note, with no lock of the
 * fleet held; set it before any thread uses the fleet. */
void fleet_set_notify(struct fleet *f, void (*fn)(void *ud, unsigned notes), void *ud);

/* Has every world been asked once (answered or failed) since fleet_new?
 * Before that the inventory is empty: placement and VMID choice wait. */
bool fleet_ready(struct fleet *f);

struct node_view {
    char name[64];
    bool known; /* has been seen at least once */
    bool up;    /* reachable and online, not in backoff */
    int cpus;
    int64_t mem_total, mem_used;
    int64_t st_total, st_used, st_avail; /* the node's VM storage */
    /* "cluster/storage" when the cluster marks that storage shared (Ceph,
     * NFS...): the figures are the pool's, the same on each of its nodes,
     * and disk reservations count per pool (store.h, struct cap_room);
     * "" for a node's own storage */
    char pool[136];
    int nvms;
    int64_t refreshed_at; /* unix ms */
    int64_t seen_since;   /* unix ms: how old these figures may be: when the refresh
                             behind them began, less pvestatd's lag (fleet.c) */
    char last_error[256];
    int64_t retry_at; /* unix ms: when a node held down for failing is probed
                         again (its backoff's end); 0 when it is not */
};
int fleet_node_view(struct fleet *f, const char *node, struct node_view *out);
/* The same without counting as a use of the inventory (fleet_refresh_next):
 * for watchers such as the node health events. */
int fleet_node_peek(struct fleet *f, const char *node, struct node_view *out);

/* Start the active probe (interval_ms <= 0: none); stop it (also done by
 * fleet_free; stopping waits for a probe under way, at most its timeout). */
int fleet_probe_start(struct fleet *f, int interval_ms);
void fleet_probe_stop(struct fleet *f);

/* Health reports from operations. */
void fleet_node_failed(struct fleet *f, const char *node, const char *why);
void fleet_node_ok(struct fleet *f, const char *node);
bool fleet_node_up(struct fleet *f, const char *node);
/* Does the fleet hold `node` down: it failed a call or a probe at the
 * network level (and has not answered since), or its world reports it
 * offline or does not answer? Not before the world was first asked, and
 * never for a node the fleet does not manage (unlike !fleet_node_up).
 * The core's task waits make their looks on such a node short
 * (pve_wait_opts.held_down). */
bool fleet_node_held_down(struct fleet *f, const char *node);

/* Was the world of `node` refreshed successfully at or after `since` (unix
 * ms)? Only then may its absence of a VM be trusted. */
bool fleet_node_fresh(struct fleet *f, const char *node, int64_t since);

/* Where the inventory last saw `vmid` in the world of `near` (a cluster:
 * VMIDs are its own; a standalone host: only itself; any world when near
 * is NULL or empty): 0 and node filled, or -1. Another world's VM of that
 * VMID is another VM. */
int fleet_vm_node(struct fleet *f, int vmid, const char *near, char node[64]);

/* Are nodes a and b (configured) in one world? */
bool fleet_same_world(struct fleet *f, const char *a, const char *b);
/* Is every configured node in the world of configured node `node` (one
 * VMID space for the whole fleet: a single cluster, or a single host)? */
bool fleet_one_world(struct fleet *f, const char *node);

struct fleet_vm {
    int vmid;
    char node[64];
    char status[16];
    char name[64];
    char tags[128];
    char lock[32];
    bool tmpl;
    int maxcpu;
    int64_t maxmem, maxdisk; /* bytes */
};
/* Every VM the inventory knows (all worlds; no container). Caller frees
 * *out. */
int fleet_vms(struct fleet *f, struct fleet_vm **out, size_t *n);
/* The containers (lxc) the inventory shows on nodes proxd manages (all
 * worlds): vmid, node, status (running|stopped) and tmpl only. Never VMs of
 * proxd's; the config walk reads their networks. Caller frees *out. */
int fleet_cts(struct fleet *f, struct fleet_vm **out, size_t *n);
/* Sorted VMIDs, each once, of every VM and container seen on any world,
 * those on a cluster's nodes proxd does not manage included (a cluster's
 * VMIDs are one namespace, a container's as a VM's): what a creation must
 * not be given, and what keeps a foreign VMID foreign. Caller frees. */
int *fleet_taken_vmids(struct fleet *f, size_t *n);
/* The same, and in *since (may be NULL), taken with it, when the reads of
 * the inventory they come from began (unix ms; the earliest of the
 * configured worlds' last reads): a VM created before then is in them.
 * 0 when some world's last read failed or none has answered yet (a
 * standalone host that does not answer: its VMs are unseen, not gone), so
 * the absence of a VMID proves nothing. */
int *fleet_taken_vmids_since(struct fleet *f, size_t *n, int64_t *since);

/* The VM (or template) `vmid` as the inventory last saw it in the world of
 * `node`: 0 and *out filled, or -1. */
int fleet_vm_find(struct fleet *f, const char *node, int vmid, struct fleet_vm *out);

/* Note a VM the core just made or removed, so the inventory is right before
 * the next refresh. (The memory and disk a new VM takes are counted by its
 * settled reservation in the store until a refresh shows them: see
 * store_settle_capacity() and node_view.seen_since.) */
void fleet_vm_added(struct fleet *f, int vmid, const char *node);
/* The VM `vmid` on `node` (NULL: on any) is gone. Standalone hosts each
 * have a VMID space of their own: a removal on one leaves another's VM of
 * the VMID, which a creation must still not be given. */
void fleet_vm_removed(struct fleet *f, int vmid, const char *node);

/* ---- addresses in VM configs (the config walk, core/netwalk.c) ----------
 *
 * Per pool, the addresses the config walk found in the ipconfigN of VMs on
 * the pool's nodes (proxd's or not), with the VM and its node: what an
 * address pick must skip besides the store's rows. Published whole after
 * each complete walk (fleet_pool_addrs_set) and grown in place for VMs read
 * since (fleet_pool_addrs_add), so an address put on a VM is skipped from
 * the read that saw it on. Pools are named; at most CFG_MAX_POOLS. */
struct fleet_addr {
    struct ippool_addr addr;
    int vmid;
    char node[64];
};
/* Replace pool's list (a[0..n), any order; copied and sorted). */
void fleet_pool_addrs_set(struct fleet *f, const char *pool, const struct fleet_addr *a, size_t n);
/* Add to pool's list (copied; kept sorted; an entry already there for the
 * same address and VMID is not added twice). */
void fleet_pool_addrs_add(struct fleet *f, const char *pool, const struct fleet_addr *a, size_t n);
/* A copy of pool's list sorted by address (ippool_addr_cmp; one address may
 * appear once per VM that has it), free(*out). 0, or -1 when no walk has
 * published the pool yet (*out NULL, *n 0): its VMs were not read. */
int fleet_pool_addrs(struct fleet *f, const char *pool, struct fleet_addr **out, size_t *n);
/* The same as bare sorted addresses, as ippool_pick takes them (the
 * pick callback merges them with the store's keys); free(*out). */
int fleet_pool_taken(struct fleet *f, const char *pool, struct ippool_addr **out, size_t *n);

/* Internal to fleet.c / fleet_addrs.c. */
struct fleet_seen;
struct fleet_seen *fleet_seen_new(void);
void fleet_seen_free(struct fleet_seen *s);
struct fleet_seen *fleet_seen_of(struct fleet *f);

#endif
