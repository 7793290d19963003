/* routes_misc: the fleet (/v1/nodes), the OS catalogue (/v1/os), quotas
 * (/v1/quota), and the probes (/healthz, /readyz). */
#include "api/api_int.h"

#include "common/log.h"
#include "core/validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024LL)
#define GIB (1024 * MIB)

/* {"checked_at", "missing": [{"privilege", "path", "for"}], "error"}: what
 * the last check of the Proxmox credentials found on the node (access.h). */
static json_t *access_json(struct api *a, const char *node)
{
    struct core_access ca;
    if (core_node_access(a->k, node, &ca))
        return json_null();
    json_t *miss = json_array();
    for (size_t i = 0; i < ca.nmissing; i++)
        json_array_append_new(miss,
                              json_pack("{s:s,s:s,s:s}", "privilege", ca.missing[i].privs, "path",
                                        ca.missing[i].path, "for", ca.missing[i].what));
    free(ca.missing);
    return json_pack("{s:o,s:o,s:o}", "checked_at", json_time(ca.checked_at), "missing", miss,
                     "error", ca.error[0] ? json_string(ca.error) : json_null());
}

static json_t *node_json(struct api *a, const struct cfg_node *cn, bool admin)
{
    struct node_view v;
    memset(&v, 0, sizeof v);
    fleet_node_view(a->fl, cn->name, &v);
    int64_t mem = 0, disk = 0;
    struct store_error se;
    store_reserved_on(a->st, cn->name, v.pool, NULL, v.seen_since, &mem, &disk, &se);
    json_t *o = json_pack("{s:s,s:s,s:b,s:b,s:i,s:i}", "name", cn->name, "cluster", cn->cluster,
                          "known", v.known, "up", v.up, "cpus", v.cpus, "vms", v.nvms);
    /* once the inventory was read, a node that is not up is down, seen
     * before or not (a host that never answered since start) */
    json_object_set_new(o, "health",
                        json_string(v.up                 ? "up"
                                    : fleet_ready(a->fl) ? "down"
                                                         : "unknown"));
    json_object_set_new(o, "memory_mb",
                        json_pack("{s:I,s:I,s:I}", "total", (json_int_t)(v.mem_total / MIB), "used",
                                  (json_int_t)(v.mem_used / MIB), "reserved",
                                  (json_int_t)(mem / MIB)));
    json_object_set_new(o, "disk_gb",
                        json_pack("{s:I,s:I,s:I,s:I}", "total", (json_int_t)(v.st_total / GIB),
                                  "used", (json_int_t)(v.st_used / GIB), "available",
                                  (json_int_t)(v.st_avail / GIB), "reserved",
                                  (json_int_t)(disk / GIB)));
    json_object_set_new(o, "storage", json_string(cn->storage));
    json_object_set_new(o, "storage_shared", json_boolean(v.pool[0] != '\0'));
    json_t *cj = cordon_json(a, cn->name);
    json_object_update(o, cj);
    json_decref(cj);
    json_object_set_new(o, "refreshed_at", json_time(v.refreshed_at));
    json_object_set_new(o, "last_error", v.last_error[0] ? json_string(v.last_error) : json_null());
    json_object_set_new(o, "probe_at", json_time(v.retry_at));
    if (admin)
        json_object_set_new(o, "privileges", access_json(a, cn->name));
    return o;
}

void h_nodes(struct req *rq, struct resp *rs)
{
    if (check_query(rq, rs, NULL))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < rq->api->cfg->nnodes; i++)
        json_array_append_new(arr, node_json(rq->api, &rq->api->cfg->nodes[i], rq->who.admin));
    resp_json(rs, HTTP_OK, json_pack("{s:o}", "nodes", arr));
}

/* "allocated" counts quarantined IDs too (they are not free), as it always
 * did; "quarantined" says how many of them no VM has, so that a listing
 * does not show a deleted VM's ID as in use. */
static json_t *range_json(store *st, int lo, int hi)
{
    int used = 0, quarantined = 0;
    struct store_error se;
    store_vmid_counts(st, lo, hi, &used, &quarantined, &se);
    int size = hi - lo + 1;
    return json_pack("{s:i,s:i,s:i,s:i,s:i,s:f}", "lo", lo, "hi", hi, "size", size, "allocated",
                     used, "quarantined", quarantined, "fill",
                     size > 0 ? (double)used / size : 0.0);
}

void h_os(struct req *rq, struct resp *rs)
{
    if (check_query(rq, rs, NULL))
        return;
    const struct proxd_config *c = rq->api->cfg;
    json_t *arr = json_array();
    for (int i = 0; i < c->nos; i++) {
        json_t *nodes = json_array();
        for (int n = 0; n < c->nnodes; n++)
            if (config_template(&c->nodes[n], c->os[i].name))
                json_array_append_new(nodes, json_string(c->nodes[n].name));
        json_array_append_new(
            arr, json_pack("{s:s,s:o,s:o,s:s}", "name", c->os[i].name, "range",
                           range_json(rq->api->st, c->os[i].range_lo, c->os[i].range_hi), "nodes",
                           nodes, "clone", c->os[i].clone));
    }
    json_t *out = json_pack("{s:o}", "os", arr);
    if (c->fallback_lo)
        json_object_set_new(out, "fallback_range",
                            range_json(rq->api->st, c->fallback_lo, c->fallback_hi));
    else
        json_object_set_new(out, "fallback_range", json_null());
    resp_json(rs, HTTP_OK, out);
}

/* GET /v1/quota[?owner=]: the caller's quota (admins may name an owner). */
void h_quota(struct req *rq, struct resp *rs)
{
    static const char *const allowed[] = {"owner", NULL};
    if (check_query(rq, rs, allowed))
        return;
    const char *owner = query(rq, "owner");
    char why[160];
    if (owner && !validate_owner(owner, why, sizeof why)) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "owner", "owner: %s", why);
        return;
    }
    if (!owner)
        owner = rq->who.owner;
    if (!rq->who.admin && strcmp(owner, rq->who.owner) != 0) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", "owner",
                   "owner: a user sees its own quota only");
        return;
    }
    struct quota_use used = {0};
    struct core_error ce = {0};
    if (core_quota_use(rq->api->k, owner, &used, &ce)) {
        resp_core_error(rs, &ce);
        return;
    }
    const struct cfg_quota *q = config_quota(rq->api->cfg, owner);
    json_t *lim = q ? json_pack("{s:i,s:i,s:I,s:I,s:i}", "vms", q->vms, "cores", q->cores,
                                "memory_mb", (json_int_t)q->memory_mb, "disk_gb",
                                (json_int_t)q->disk_gb, "addresses", q->addresses)
                    : json_null();
    resp_json(rs, HTTP_OK,
              json_pack("{s:s,s:o,s:{s:i,s:i,s:I,s:I,s:i}}", "owner", owner, "limits", lim, "used",
                        "vms", used.vms, "cores", used.cores, "memory_mb",
                        (json_int_t)used.memory_mb, "disk_gb", (json_int_t)used.disk_gb,
                        "addresses", used.addresses));
}

void h_healthz(struct req *rq, struct resp *rs)
{
    resp_json(rs, HTTP_OK, json_pack("{s:s}", "status", "ok"));
}

/* Ready: the database answers and at least one node is up. */
void h_readyz(struct req *rq, struct resp *rs)
{
    int n = 0, up = 0;
    struct store_error se;
    bool db = store_job_count_active(rq->api->st, NULL, &n, &se) == STORE_OK;
    for (int i = 0; i < rq->api->cfg->nnodes; i++)
        up += fleet_node_up(rq->api->fl, rq->api->cfg->nodes[i].name);
    bool ok = db && up > 0;
    json_t *o = json_pack("{s:s,s:b,s:i,s:i}", "status", ok ? "ready" : "not_ready", "database", db,
                          "nodes_up", up, "nodes", rq->api->cfg->nnodes);
    /* unauthenticated: the store's message (the database server's host and
     * port, its user) is for the log */
    if (!db) {
        log_warn("api", "readyz: the database failed: %s", se.message);
        json_object_set_new(o, "database_error", json_string(API_DB_DOWN_TEXT));
    }
    resp_json(rs, ok ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE, o);
}
