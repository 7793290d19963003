/* h_nodes: /version, /access/ticket, /nodes, node status and storage. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/auth.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)

/* What each release shipped by default: PVE 9.1 kernel 6.17 and QEMU 10.1,
 * 8.4 kernel 6.8 and QEMU 9.2, 7.4 kernel 5.15 and QEMU 7.2. */
const struct sim_release *sim_release(const struct sim *s)
{
    static const struct sim_release r9 = {"9.1.3",
                                          "9.1",
                                          "a3c1f9e5d2b80c47",
                                          "6.17.2-1-pve",
                                          "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)",
                                          "10.1.2",
                                          "pc-i440fx-10.1+pve0"};
    static const struct sim_release r8 = {"8.4.2",
                                          "8.4",
                                          "a3c1f9e5d2b80c47",
                                          "6.8.12-9-pve",
                                          "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)",
                                          "9.2.0",
                                          "pc-i440fx-9.2+pve1"};
    static const struct sim_release r7 = {"7.4-3",
                                          "7.4",
                                          "9002ab8a",
                                          "5.15.102-1-pve",
                                          "#1 SMP PVE 5.15.102-1 (2023-03-14T13:48Z)",
                                          "7.2.0",
                                          "pc-i440fx-7.2+pve0"};
    return s->o.pve_version >= 9 ? &r9 : s->o.pve_version == 8 ? &r8 : &r7;
}

static void h_version(struct sim_call *c)
{
    const struct sim_release *r = sim_release(c->s);
    c->data = json_pack("{s:s,s:s,s:s,s:s}", "version", r->version, "release", r->release, "repoid",
                        r->repoid, "console", "html5");
}

/* A node's own version (proxied to it; no console field: pve-manager's
 * Nodes.pm answers version_info() only). */
static void h_node_version(struct sim_call *c)
{
    const struct sim_release *r = sim_release(c->s);
    c->data = json_pack("{s:s,s:s,s:s}", "version", r->version, "release", r->release, "repoid",
                        r->repoid);
}

/* The node's clock (nodes/Time.pm): UTC, so localtime is the same. */
static void h_node_time(struct sim_call *c)
{
    json_int_t now = (json_int_t)(wall_s() + c->node->clock_offset);
    c->data = json_pack("{s:I,s:I,s:s}", "time", now, "localtime", now, "timezone", "UTC");
}

static void h_ticket_get(struct sim_call *c)
{
    c->data = json_null();
}

static void h_ticket_post(struct sim_call *c)
{
    char *user = NULL, *ticket = NULL, *csrf = NULL;
    const char *pw = call_str(c, "password");
    if (auth_login(c->s->auth, call_str(c, "username"), call_str(c, "realm"), pw ? pw : "", &user,
                   &ticket, &csrf) != 0) {
        call_fail(c, 401, "authentication failure");
        return;
    }
    json_t *cap = json_pack(
        "{s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i},s:{s:i,s:i},"
        "s:{s:i,s:i,s:i},s:{s:i,s:i,s:i},s:{s:i,s:i},s:{},s:{}}",
        "vms", "VM.Allocate", 1, "VM.Clone", 1, "VM.Audit", 1, "VM.PowerMgmt", 1, "VM.Config.CPU",
        1, "VM.Config.Memory", 1, "VM.Config.Disk", 1, "VM.Config.Options", 1,
        "VM.Config.Cloudinit", 1, "VM.Config.Network", 1, "access", "User.Modify", 1,
        "Permissions.Modify", 1, "storage", "Datastore.Allocate", 1, "Datastore.AllocateSpace", 1,
        "Datastore.Audit", 1, "nodes", "Sys.Audit", 1, "Sys.Modify", 1, "Sys.PowerMgmt", 1, "dc",
        "Sys.Audit", 1, "SDN.Audit", 1, "sdn", "mapping");
    c->data = json_pack("{s:s,s:s,s:s,s:o}", "username", user, "ticket", ticket,
                        "CSRFPreventionToken", csrf, "cap", cap);
    if (!c->s->o.standalone)
        json_object_set_new(c->data, "clustername", json_string("pvesim"));
    free(user);
    free(ticket);
    free(csrf);
}

/* Nodes a request can see: all in a cluster, only itself when standalone. */
static bool visible(struct sim_call *c, struct sim_node *n)
{
    return !c->s->o.standalone || n == c->node;
}

static double cpu_load(int busy, int cpus)
{
    double f = 0.01 + 0.05 * busy / (cpus ? cpus : 1);
    return f > 1 ? 1 : f;
}

static double node_cpu(struct sim *s, struct sim_node *n)
{
    sim_node_agg(s);
    return cpu_load(n->agg.busy_cpus, n->cpus);
}

static long long uptime(struct sim *s, struct sim_node *n)
{
    return (long long)(sim_now(s) - n->boot);
}

/* now: the time the entry is as of (sim_now, or sim_rrd_now for
 * /cluster/resources). With --pvestatd-cycle, the stats are pvestatd's last
 * report (rrd.c) in both, as PVE's extract_node_stats reads them from the
 * RRD cache; the status (cluster membership) is live. */

json_t *sim_node_entry(struct sim *s, struct sim_node *n, bool with_fp, double now);
json_t *sim_node_entry(struct sim *s, struct sim_node *n, bool with_fp, double now)
{
    bool online = n->state != NODE_OFFLINE;
    const struct sim_rrd_node *r = sim_rrd_node(s, n);
    json_t *e = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:i,s:I,s:I}", "node", n->name, "id", "", "type", "node", "status",
        online ? "online" : "offline", "level", "", "maxcpu", r ? r->cpus : n->cpus, "maxmem",
        (json_int_t)(r ? r->mem_total : n->mem_total), "maxdisk", (json_int_t)(100 * GiB));
    json_object_set_new(e, "id", json_sprintf("node/%s", n->name));
    if (with_fp)
        json_object_set_new(e, "ssl_fingerprint", json_string(s->fingerprint));
    if (online) {
        json_object_set_new(e, "uptime",
                            json_integer(r               ? (json_int_t)r->uptime
                                         : now > n->boot ? (json_int_t)(now - n->boot)
                                                         : 0));
        json_object_set_new(e, "cpu",
                            json_real(r ? cpu_load(r->busy_cpus, r->cpus) : node_cpu(s, n)));
        json_object_set_new(e, "mem", json_integer(r ? r->mem_used : sim_node_mem_used(s, n)));
        json_object_set_new(e, "disk", json_integer(12 * GiB));
    }
    return e;
}

static void h_nodes(struct sim_call *c)
{
    c->data = json_array();
    for (int i = 0; i < c->s->nnodes; i++) {
        if (!visible(c, &c->s->nodes[i]))
            continue;
        json_t *e = sim_node_entry(c->s, &c->s->nodes[i], true, sim_now(c->s));
        char path[96];
        snprintf(path, sizeof path, "/nodes/%s", c->s->nodes[i].name);
        if (!call_can(c, path, "Sys.Audit")) { /* extract_node_stats' exclude_stats */
            static const char *const stats[] = {"uptime", "cpu",    "mem",    "disk",
                                                "maxcpu", "maxmem", "maxdisk"};
            for (size_t k = 0; k < sizeof stats / sizeof *stats; k++)
                json_object_del(e, stats[k]);
        }
        json_array_append_new(c->data, e);
    }
}

static void h_node_status(struct sim_call *c)
{
    struct sim *s = c->s;
    struct sim_node *n = c->node;
    int64_t used = sim_node_mem_used(s, n);
    const struct sim_release *rel = sim_release(s);
    c->data = json_pack(
        "{s:I,s:i,s:[s,s,s],s:s,s:f,s:f,"
        "s:{s:i,s:i,s:i,s:s,s:s,s:i,s:s,s:s,s:s,s:s},"
        "s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I},s:{s:I},s:{s:I,s:I,s:I,s:I},s:s}",
        "uptime", (json_int_t)uptime(s, n), "idle", 0, "loadavg", "0.12", "0.20", "0.18",
        "kversion", "", "cpu", node_cpu(s, n), "wait", 0.001, "cpuinfo", "cpus", n->cpus, "cores",
        n->cpus / 2 ? n->cpus / 2 : 1, "sockets", 1, "model", "AMD EPYC 7402P 24-Core Processor",
        "mhz", "2800.000", "user_hz", 100, "vendor", "AuthenticAMD", "family", "23", "flags",
        "fpu vme de pse tsc msr pae svm", "hvm", "1", "memory", "total", (json_int_t)n->mem_total,
        "used", (json_int_t)used, "free", (json_int_t)(n->mem_total - used), "available",
        (json_int_t)(n->mem_total - used), "swap", "total", (json_int_t)(8 * GiB), "used",
        (json_int_t)0, "free", (json_int_t)(8 * GiB), "ksm", "shared", (json_int_t)0, "rootfs",
        "total", (json_int_t)(100 * GiB), "used", (json_int_t)(12 * GiB), "avail",
        (json_int_t)(88 * GiB), "free", (json_int_t)(88 * GiB), "pveversion", "");
    json_object_set_new(c->data, "kversion", json_sprintf("Linux %s %s", rel->kernel, rel->kbuild));
    json_object_set_new(c->data, "pveversion",
                        json_sprintf("pve-manager/%s/%s", rel->version, rel->repoid));
    if (s->o.pve_version < 8)
        json_object_del(json_object_get(c->data, "memory"), "available");
    if (s->o.pve_version >= 8) {
        json_object_set_new(c->data, "current-kernel",
                            json_pack("{s:s,s:s,s:s,s:s}", "sysname", "Linux", "release",
                                      rel->kernel, "version", rel->kbuild, "machine", "x86_64"));
        json_object_set_new(c->data, "boot-info",
                            json_pack("{s:s,s:i}", "mode", "efi", "secureboot", 0));
    }
}

json_t *sim_storage_entry(struct sim *s, struct sim_node *n, struct sim_storage *st, bool frac);
json_t *sim_storage_entry(struct sim *s, struct sim_node *n, struct sim_storage *st, bool frac)
{
    int64_t used = sim_storage_used(s, n, st->id);
    int64_t avail = st->total - used;
    if (avail < 0)
        avail = 0;
    json_t *e =
        json_pack("{s:s,s:s,s:i,s:i,s:i,s:I,s:I,s:I}", "type", st->type, "content", st->content,
                  "shared", st->shared, "enabled", 1, "active", 1, "total", (json_int_t)st->total,
                  "used", (json_int_t)used, "avail", (json_int_t)avail);
    if (frac && st->total > 0)
        json_object_set_new(e, "used_fraction", json_real((double)used / (double)st->total));
    return e;
}

static bool content_match(const char *have, const char *want)
{
    if (!want)
        return true;
    char *w = xstrdup(want), *save = NULL;
    bool ok = false;
    for (char *t = strtok_r(w, ",", &save); t && !ok; t = strtok_r(NULL, ",", &save)) {
        size_t l = strlen(t);
        for (const char *p = have; *p && !ok;) {
            size_t n = strcspn(p, ",");
            ok = n == l && strncmp(p, t, l) == 0;
            p += n;
            if (*p)
                p++;
        }
    }
    free(w);
    return ok;
}

static void h_storage_list(struct sim_call *c)
{
    struct sim_node *n = c->node;
    const char *only = call_str(c, "storage"), *content = call_str(c, "content");
    if (only && !sim_storage_find(n, only)) {
        call_param_fail(c, "storage", "No such storage.");
        return;
    }
    c->data = json_array();
    for (int i = 0; i < n->nst; i++) {
        struct sim_storage *st = &n->st[i];
        if ((only && strcmp(only, st->id) != 0) || !content_match(st->content, content))
            continue;
        if ((call_str(c, "target") && !st->shared) || !call_storage_visible(c, st->id))
            continue;
        json_t *e = sim_storage_entry(c->s, n, st, true);
        json_object_set_new(e, "storage", json_string(st->id));
        json_array_append_new(c->data, e);
    }
}

static void h_storage_status(struct sim_call *c)
{
    struct sim_storage *st = sim_storage_find(c->node, call_str(c, "storage"));
    if (!st) {
        call_param_fail(c, "storage", "No such storage.");
        return;
    }
    c->data = sim_storage_entry(c->s, c->node, st, false);
}

static void h_access_domains(struct sim_call *c)
{
    c->data = json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s}]", "realm", "pam", "type", "pam", "comment",
                        "Linux PAM standard authentication", "realm", "pve", "type", "pve",
                        "comment", "Proxmox VE authentication server");
}

const struct sim_route sim_routes_nodes[] = {
    {"GET", "/version", h_version},
    {"GET", "/access/ticket", h_ticket_get},
    {"POST", "/access/ticket", h_ticket_post},
    {"GET", "/access/domains", h_access_domains},
    {"GET", "/nodes", h_nodes},
    {"GET", "/nodes/{node}/status", h_node_status},
    {"GET", "/nodes/{node}/version", h_node_version},
    {"GET", "/nodes/{node}/time", h_node_time},
    {"GET", "/nodes/{node}/storage", h_storage_list},
    {"GET", "/nodes/{node}/storage/{storage}/status", h_storage_status},
    {NULL, NULL, NULL},
};
