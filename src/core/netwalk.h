/* netwalk: the config walk (docs/design/ippool.md section 5) and the guest
 * agent's confirmation of a VM's address (section 4, "Verify").
 *
 * /cluster/resources carries no configs, so a thread of its own reads every
 * VM's config on the nodes where some pool is reachable, once per
 * reconcile_interval, at most [proxd] config_reads per second per world
 * (VMs new to the inventory first). Of each config it parses every ipconfigN
 * (ippool_ipconfig_parse) and net0 (ippool_net_mac). Containers (lxc, never
 * proxd's) on those nodes are read at the same rate: the static ip=/ip6= of
 * their netN are foreign addresses like a foreign VM's.
 *  - the pool addresses found are published per pool in the fleet
 *    (fleet_pool_addrs), at once for each VM read and whole after each walk;
 *  - on VMs that are not proxd's they are marked foreign in the store (never
 *    handed out) and forgotten once unseen for two intervals; one that proxd
 *    has used (or reserved) for another VM is a conflict: logged, listed
 *    (core_ippool_conflicts), counted; never fixed automatically;
 *  - on proxd's VMs with a network, net0's MAC, bridge and tag and
 *    ipconfig0 are compared with what proxd recorded: a difference is drift,
 *    logged and shown (core_net_drift), and with network_drift = restore
 *    proxd's values are written back against the digest it read; with
 *    adopt the config's addresses become the record's when each is one a
 *    pool hands out (as configured; run-time ranges are not looked at) and
 *    free (store_addr_adopt, one transaction), else the drift stays.
 * The walk never runs on the HTTP server's threads nor in a creation: the
 * API reads what the last walk left, under a lock held for copies only.
 *
 * Confirmation: a running VM of proxd's with a network whose config enables
 * the agent, and whose address was never confirmed, is polled
 * (agent/network-get-interfaces) every 2 s for at most 60 s on a second
 * thread until the NIC with the recorded MAC shows the recorded addresses;
 * what it showed is recorded (store_vm_net_seen). "QEMU guest agent is not
 * running" is "not yet"; a VM is never failed for any of it. Jobs ask for it
 * after a start (core_net_confirm); the walk asks for VMs nobody asked for.
 *
 * Internal to src/core (core.h has the public calls). Thread-safe. */
#ifndef CORE_NETWALK_H
#define CORE_NETWALK_H

#include <stdbool.h>
#include <stdint.h>

struct core;
struct netwalk;

struct netwalk *netwalk_new(struct core *k);
void netwalk_free(struct netwalk *w); /* after netwalk_stop */
/* The walk's and the confirmer's threads (nothing when no pool is
 * configured); stop after k->stopping is set (core_stop). */
int netwalk_start(struct netwalk *w);
void netwalk_stop(struct netwalk *w);

/* The pacing of config reads: at most per_s reads start in any second
 * (they are spread evenly, no burst). netwalk_pace returns how many ms to
 * wait before a read may start at now_ms; 0 means go, and the read is
 * booked. Pure: the unit test drives it with its own clock. */
struct netwalk_pacer {
    int64_t next_us; /* when the next read may start, in µs of the caller's clock */
    int per_s;
};
int64_t netwalk_pace(struct netwalk_pacer *p, int64_t now_ms);

#endif
