/* routes_snap: a VM's snapshots.
 *   GET    /v1/vms/{vmid}/snapshots[?refresh=1|?job=ID]
 *   POST   /v1/vms/{vmid}/snapshots {name, description?, vmstate?}
 *   DELETE /v1/vms/{vmid}/snapshots/{name}
 *   POST   /v1/vms/{vmid}/snapshots/{name}/rollback
 * Changes are jobs (202 with the job). A list is answered from what this
 * proxd knows (200), or, when it knows nothing or is asked to refresh, by a
 * snap-list job (202): its answer is then GET ...?job=ID. Another owner's
 * VM is a 404 on every route, before the body is even looked at. */
#include "api/api_int.h"
#include "common/util.h"
#include "core/snapshot.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *acting_owner(const struct req *rq)
{
    return rq->who.admin ? NULL : rq->who.owner;
}

static void no_vm(struct resp *rs, const char *vmid)
{
    resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "no VM %s", vmid);
}

/* {vmid}, and for users a VM they own (anything else: 404). */
static int snap_vmid(struct req *rq, struct resp *rs, int *vmid)
{
    if (!path_vmid_parse(rq->params[0], vmid)) {
        no_vm(rs, rq->params[0]);
        return -1;
    }
    if (rq->who.admin)
        return 0;
    struct vm_rec r;
    struct store_error se;
    int rc = store_vm_get(rq->api->st, *vmid, &r, &se);
    if (rc && rc != STORE_E_NOTFOUND) {
        resp_store_error(rs, &se);
        return -1;
    }
    bool mine = rc == STORE_OK && strcmp(r.owner, rq->who.owner) == 0;
    if (rc == STORE_OK)
        vm_rec_release(&r);
    if (!mine) {
        no_vm(rs, rq->params[0]);
        return -1;
    }
    return 0;
}

static void op_error(struct req *rq, struct resp *rs, const struct core_error *ce)
{
    if (ce->code == CORE_E_NOTFOUND && strcmp(ce->field, "vmid") == 0)
        no_vm(rs, rq->params[0]);
    else
        resp_core_error(rs, ce);
}

static void accepted(struct resp *rs, int vmid, const char *kind, const char *name, const char *job)
{
    snprintf(rs->location, sizeof rs->location, "/v1/jobs/%s", job);
    json_t *o =
        json_pack("{s:i,s:s,s:s,s:s}", "vmid", vmid, "job", job, "kind", kind, "state", "queued");
    if (name)
        json_object_set_new(o, "snapshot", json_string(name));
    resp_json(rs, HTTP_ACCEPTED, o);
}

static json_t *list_json(int vmid, const struct snap_info *s, size_t n, int64_t as_of)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        /* snap_text: an entry is never left out for its text */
        json_t *o =
            json_pack("{s:o,s:o,s:o,s:b,s:b}", "name", snap_text(s[i].name), "description",
                      snap_text(s[i].description), "created_at", json_time(s[i].snaptime * 1000),
                      "vmstate", s[i].vmstate, "proxd", s[i].proxd);
        json_object_set_new(o, "parent", s[i].parent[0] ? snap_text(s[i].parent) : json_null());
        json_object_set_new(o, "state", snap_text(s[i].state[0] ? s[i].state : "complete"));
        json_array_append_new(a, o);
    }
    return json_pack("{s:i,s:o,s:o}", "vmid", vmid, "snapshots", a, "as_of", json_time(as_of));
}

void h_snap_list(struct req *rq, struct resp *rs)
{
    static const char *const allowed[] = {"refresh", "job", NULL};
    int vmid;
    if (check_query(rq, rs, allowed) || snap_vmid(rq, rs, &vmid))
        return;
    bool fresh;
    if (query_flag(rq, rs, "refresh", &fresh))
        return;
    const char *job = query(rq, "job");
    struct snap_info *s = NULL;
    size_t n = 0;
    int64_t as_of = 0;
    struct core_error ce = {0};
    char id[40] = "";
    int rc;
    if (job) {
        size_t l = strlen(job);
        if (l == 0 || l >= 40 || strspn(job, "0123456789abcdefABCDEF-") != l) {
            resp_error(rs, HTTP_NOT_FOUND, "not_found", "job", "no snapshot list job %s", job);
            return;
        }
        rc = core_snap_list_job(rq->api->k, vmid, acting_owner(rq), job, &s, &n, &as_of, &ce);
        if (rc == CORE_E_CONFLICT) { /* still running: ask again */
            snprintf(id, sizeof id, "%s", job);
            rc = CORE_OK;
        } else if (rc == CORE_E_INVALID) { /* the job failed */
            resp_error(rs, HTTP_BAD_GATEWAY, "job_failed", "job", "%s", ce.message);
            return;
        }
    } else {
        rc = core_snap_list(rq->api->k, vmid, acting_owner(rq), fresh, &s, &n, &as_of, id, &ce);
    }
    if (rc) {
        op_error(rq, rs, &ce);
    } else if (id[0]) {
        snprintf(rs->location, sizeof rs->location, "/v1/vms/%d/snapshots?job=%s", vmid, id);
        resp_json(rs, HTTP_ACCEPTED,
                  json_pack("{s:i,s:s,s:s}", "vmid", vmid, "job", id, "kind", "snap-list"));
    } else {
        resp_json(rs, HTTP_OK, list_json(vmid, s, n, as_of));
    }
    free(s);
}

void h_snap_create(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || snap_vmid(rq, rs, &vmid))
        return;
    char name[64] = "", desc[SNAP_DESC_MAX + 2] = "";
    bool vmstate = false, has_name = false;
    const struct field f[] = {
        {"name", FT_STRING, name, sizeof name, &has_name},
        {"description", FT_STRING, desc, sizeof desc, NULL},
        {"vmstate", FT_BOOL, &vmstate, 0, NULL},
    };
    if (decode_body(rq, rs, f, 3, false, NULL))
        return;
    if (!has_name) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "name", "name: required");
        return;
    }
    struct snap_request r = {name, desc, vmstate};
    char job[40];
    struct core_error ce = {0};
    if (core_snap_create(rq->api->k, vmid, acting_owner(rq), &r, job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, "snap-create", name, job);
}

static void named(struct req *rq, struct resp *rs, bool rollback)
{
    int vmid;
    if (check_query(rq, rs, NULL) || snap_vmid(rq, rs, &vmid))
        return;
    if (decode_body(rq, rs, NULL, 0, true, NULL))
        return;
    const char *name = rq->params[1];
    char job[40];
    struct core_error ce = {0};
    int rc = rollback ? core_snap_rollback(rq->api->k, vmid, acting_owner(rq), name, job, &ce)
                      : core_snap_delete(rq->api->k, vmid, acting_owner(rq), name, job, &ce);
    if (rc)
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, rollback ? "snap-rollback" : "snap-delete", name, job);
}

void h_snap_delete(struct req *rq, struct resp *rs)
{
    named(rq, rs, false);
}

void h_snap_rollback(struct req *rq, struct resp *rs)
{
    named(rq, rs, true);
}

/* Snapshot counters for /metrics (metrics.c calls this). */
void snap_metrics(struct api *a, struct mtext *b)
{
    struct snap_stats s;
    core_snap_stats(a->k, &s);
    static const struct {
        const char *name, *help;
        size_t off;
    } c[] = {
        {"proxd_snapshots_outside_total{change=\"added\"}", NULL,
         offsetof(struct snap_stats, added_outside)},
        {"proxd_snapshots_outside_total{change=\"removed\"}", NULL,
         offsetof(struct snap_stats, removed_outside)},
        {"proxd_snapshot_retention_deletions_total",
         "Snapshot deletions queued by retention ([snapshots] keep, max_age).",
         offsetof(struct snap_stats, retention)},
        {"proxd_snapshot_syncs_total", "VM snapshot lists read by the reconciler's sync pass.",
         offsetof(struct snap_stats, synced)},
        {"proxd_snapshot_limit_refusals_total",
         "Snapshot creations refused by [snapshots] max_per_vm or max_per_owner.",
         offsetof(struct snap_stats, limit_refusals)},
    };
    mtext_printf(b, "# HELP proxd_snapshots_outside_total Snapshots made or removed outside proxd, "
                    "as the sync pass found them.\n# TYPE proxd_snapshots_outside_total counter\n");
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        if (c[i].help)
            mtext_printf(b, "# HELP %s %s\n# TYPE %s counter\n", c[i].name, c[i].help, c[i].name);
        mtext_printf(b, "%s %llu\n", c[i].name,
                     (unsigned long long)*(const uint64_t *)((const char *)&s + c[i].off));
    }
}
