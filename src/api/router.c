/* router: the route table, path matching, authentication.
 *
 * The table is the single list of what the server serves; api_route_at()
 * exports it so a test can hold docs/openapi.yaml to it. Patterns are
 * literal segments and "{name}" captures (at most API_PARAMS, in order). */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

struct route {
    struct api_route_info info;
    route_fn fn;
    bool auth; /* needs a bearer token */
    /* Answered on the HTTP server's loop thread (router_inline), without
     * the hand-off to a worker. Only for a handler that cannot wait: it
     * reads no store, calls no Proxmox, takes no lock held for long, since
     * every connection waits while it runs. No authenticated route
     * qualifies (the token check reads the store). /readyz and /metrics
     * read the store, so they are not. */
    bool loop;
};

static const struct route ROUTES[] = {
    {{"GET", "/healthz"}, h_healthz, false, true}, /* a constant answer */
    {{"GET", "/readyz"}, h_readyz, false, false},
    {{"GET", "/metrics"}, h_metrics, false, false},
    {{"POST", "/v1/vms"}, h_vms_create, true, false},
    {{"GET", "/v1/vms"}, h_vms_list, true, false},
    {{"GET", "/v1/vms/{vmid}"}, h_vm_get, true, false},
    {{"PATCH", "/v1/vms/{vmid}"}, h_vm_update, true, false},
    {{"DELETE", "/v1/vms/{vmid}"}, h_vm_delete, true, false},
    {{"POST", "/v1/vms/{vmid}/start"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/shutdown"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/stop"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/pause"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/resume"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/reboot"}, h_vm_action, true, false},
    {{"POST", "/v1/vms/{vmid}/resize"}, h_vm_resize, true, false},
    {{"POST", "/v1/vms/{vmid}/reinstall"}, h_vm_reinstall, true, false},
    {{"GET", "/v1/vms/{vmid}/snapshots"}, h_snap_list, true, false},
    {{"POST", "/v1/vms/{vmid}/snapshots"}, h_snap_create, true, false},
    {{"DELETE", "/v1/vms/{vmid}/snapshots/{name}"}, h_snap_delete, true, false},
    {{"POST", "/v1/vms/{vmid}/snapshots/{name}/rollback"}, h_snap_rollback, true, false},
    {{"GET", "/v1/jobs"}, h_jobs_list, true, false},
    {{"GET", "/v1/jobs/{id}"}, h_job_get, true, false},
    {{"GET", "/v1/jobs/{id}/events"}, h_job_events, true, false},
    {{"POST", "/v1/jobs/{id}/cancel"}, h_job_cancel, true, false},
    {{"GET", "/v1/events"}, h_events, true, false},
    {{"GET", "/v1/events/stream"}, h_events_stream, true, false},
    {{"GET", "/v1/webhooks"}, h_webhooks, true, false},
    {{"POST", "/v1/webhooks/{name}/seek"}, h_webhook_seek, true, false},
    {{"DELETE", "/v1/webhooks/{name}"}, h_webhook_forget, true, false},
    {{"GET", "/v1/nodes"}, h_nodes, true, false},
    {{"POST", "/v1/nodes/{node}/cordon"}, h_node_cordon, true, false},
    {{"POST", "/v1/nodes/{node}/uncordon"}, h_node_uncordon, true, false},
    {{"POST", "/v1/nodes/{node}/drain"}, h_node_drain, true, false},
    {{"GET", "/v1/os"}, h_os, true, false},
    {{"GET", "/v1/quota"}, h_quota, true, false},
    {{"GET", "/v1/ippools"}, h_ippools, true, false},
    {{"GET", "/v1/ippools/{name}"}, h_ippool_get, true, false},
    {{"GET", "/v1/ippools/{name}/addresses"}, h_ippool_addrs, true, false},
    {{"POST", "/v1/ippools/{name}/addresses"}, h_ippool_hold, true, false},
    {{"DELETE", "/v1/ippools/{name}/addresses/{address}"}, h_ippool_unhold, true, false},
    {{"POST", "/v1/ippools/{name}/ranges"}, h_ippool_range_add, true, false},
    {{"DELETE", "/v1/ippools/{name}/ranges/{id}"}, h_ippool_range_del, true, false},
};
#define NROUTES (sizeof ROUTES / sizeof ROUTES[0])

size_t api_route_count(void)
{
    return NROUTES;
}

const struct api_route_info *api_route_at(size_t i)
{
    return i < NROUTES ? &ROUTES[i].info : NULL;
}

/* Match path against pattern, capturing "{x}" segments into params. */
static bool match(const char *pat, const char *path, char params[API_PARAMS][64])
{
    int np = 0;
    while (*pat && *path) {
        if (*pat != '/' || *path != '/')
            return false;
        pat++, path++;
        size_t pl = strcspn(pat, "/"), sl = strcspn(path, "/");
        if (pat[0] == '{') {
            if (sl == 0 || sl >= 64 || np == API_PARAMS)
                return false;
            memcpy(params[np], path, sl);
            params[np++][sl] = '\0';
        } else if (pl != sl || memcmp(pat, path, pl) != 0) {
            return false;
        }
        pat += pl, path += sl;
    }
    return !*pat && !*path;
}

static void authenticate(struct req *rq, struct resp *rs, const struct route *r)
{
    const char *h = http_req_header(rq->hr, "Authorization");
    int rc = auth_check(rq->api->st, rq->api->key, h, &rq->who);
    if (rc == -2) {
        resp_error(rs, HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL,
                   "cannot check the token: the database is not answering");
        return;
    }
    if (rc) {
        resp_error(rs, HTTP_UNAUTHORIZED, "unauthorized", NULL,
                   h ? "the bearer token is not valid"
                     : "an Authorization: Bearer token is needed");
        return;
    }
    r->fn(rq, rs);
}

/* The route for method and path, with its captures in params; else NULL
 * and the methods path allows in allow (empty: no such path). */
static const struct route *lookup(const char *method, const char *path, char params[API_PARAMS][64],
                                  char *allow, size_t allowlen)
{
    size_t nallow = 0;
    allow[0] = '\0';
    /* HEAD is GET without the body (the server drops it) */
    const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
    for (size_t i = 0; i < NROUTES; i++) {
        if (!match(ROUTES[i].info.path, path, params))
            continue;
        if (strcmp(ROUTES[i].info.method, m) == 0) {
            allow[0] = '\0';
            return &ROUTES[i];
        }
        size_t l = strlen(allow);
        snprintf(allow + l, allowlen - l, "%s%s", nallow++ ? ", " : "", ROUTES[i].info.method);
    }
    return NULL;
}

bool router_inline(const char *method, const char *path)
{
    char params[API_PARAMS][64], allow[64];
    const struct route *r = lookup(method, path, params, allow, sizeof allow);
    return r ? r->loop : true; /* a 404 or 405 is made from the table alone */
}

void router_dispatch(struct req *rq, struct resp *rs)
{
    char params[API_PARAMS][64];
    const struct route *found = lookup(rq->method, rq->path, params, rs->allow, sizeof rs->allow);
    bool nallow = rs->allow[0] != '\0';
    if (found)
        memcpy(rq->params, params, sizeof params);
    if (found) {
        rs->allow[0] = '\0';
        if (found->auth)
            authenticate(rq, rs, found);
        else
            found->fn(rq, rs);
    } else if (nallow) {
        resp_error(rs, HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", NULL,
                   "%s is not allowed on %s (allowed: %s)", rq->method, rq->path, rs->allow);
    } else {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "no route %s", rq->path);
    }
}
