/* access: what proxd's Proxmox credentials may do, node by node, told
 * before a customer's creation meets a refusal.
 *
 * A token with privilege separation (PVE's default for new tokens) or a
 * role one privilege short makes every creation fail on every node with
 * "403 Permission check failed (/vms/9000, VM.Clone)", and a token without
 * VM.Audit sees no VMs at all in /cluster/resources. So a thread reads, for
 * every path proxd's work touches on each node (the node, its storage, each
 * template, the first VMID of each OS's range and of the fallback range, the
 * bridges of the address pools reaching it), what the credentials hold
 * there (GET
 * /access/permissions?path=P: PVE itself computes roles, inheritance,
 * privilege separation and pools), once after the fleet's first read and
 * then every [proxmox] privilege_check seconds (600; 0: never), and
 * compares it with what proxd needs (access_needs). What is missing is
 * logged when it changes and shown per node (core_node_access: GET
 * /v1/nodes, proxctl status, the metrics). A node whose check could not be
 * made (down, or the call refused) is checked again after 30 s; a job that
 * failed for a privilege (Proxmox's 403) asks for a check at once
 * (core_access_poke), 10 s after the last at the earliest.
 *
 * The first VMID of a range stands for the range: roles given on /vms, on
 * /pool/..., or on each VMID of the range read alike there; one given on
 * single VMIDs only is seen for the first. Nothing is refused on the
 * strength of a check: a creation still goes to a node with a privilege
 * missing (the refusal is then Proxmox's, and the next node is tried), as
 * the check may be minutes old.
 *
 * Internal to src/core; core.h has core_node_access. Thread-safe. */
#ifndef CORE_ACCESS_H
#define CORE_ACCESS_H

#include <stddef.h>

#include "core/config.h"

struct core;
struct access;

/* One privilege proxd's work needs on a path. */
struct access_need {
    char privs[96]; /* "VM.Clone", or "VM.Monitor|VM.GuestAgent.Audit": any one */
    char path[96];  /* "/vms/9000" */
    char what[96];  /* what fails without it: "creations of ubuntu" */
};

/* The needs of cfg->nodes[node], each (privs, path) once, at most max into
 * out (NULL with max 0: only counted); returns how many there are when out
 * had room for them all, else a bound (repeats past max are counted too).
 * Pure (tests). */
size_t access_needs(const struct proxd_config *cfg, int node, struct access_need *out, size_t max);

struct access *access_new(struct core *k);
void access_free(struct access *a); /* after access_stop */
/* The checking thread (none when privilege_check is 0); stop after
 * k->stopping is set (core_stop). */
int access_start(struct access *a);
void access_stop(struct access *a);
/* A job was refused for a privilege: check soon (any thread). */
void core_access_poke(struct core *k);

#endif
