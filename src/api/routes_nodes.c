/* routes_nodes: node maintenance — POST /v1/nodes/{node}/cordon, /uncordon
 * and /drain (administrators only: 403 for users, 404 for a node not
 * configured). The drain is a job (202 with its id, like VM operations);
 * cordons answer at once with the node's cordon, an uncordon also with
 * the drain it cancelled (drain_cancelled: its job id, or null). */
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

json_t *cordon_json(struct api *a, const char *node)
{
    struct node_cordon nc;
    core_node_cordon_get(a->k, node, &nc);
    json_t *configs = json_array();
    for (char *p = nc.configs, *e; *p; p = e + (*e ? 2 : 0)) { /* "a, b" */
        if (!(e = strstr(p, ", ")))
            e = p + strlen(p);
        json_array_append_new(configs, json_stringn(p, (size_t)(e - p)));
    }
    if (!nc.cordoned)
        return json_pack("{s:b,s:n,s:n,s:n,s:o}", "cordoned", 0, "cordoned_by", "cordoned_at",
                         "cordon_source", "cordon_configurations", configs);
    return json_pack("{s:b,s:s,s:o,s:s,s:o}", "cordoned", 1, "cordoned_by", nc.by, "cordoned_at",
                     nc.at ? json_time(nc.at) : json_null(), "cordon_source",
                     nc.by_config ? "configuration" : "api", "cordon_configurations", configs);
}

/* Admins only (a user's request is refused before its arguments are
 * looked at, as the ippool routes do); the node must be configured. */
static int node_target(struct req *rq, struct resp *rs, const char **node)
{
    if (!rq->who.admin) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", NULL, "node maintenance is for administrators");
        return -1;
    }
    if (check_query(rq, rs, NULL) || decode_body(rq, rs, NULL, 0, true, NULL))
        return -1;
    *node = rq->params[0];
    if (!config_node(rq->api->cfg, *node)) {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "no node %s", *node);
        return -1;
    }
    return 0;
}

static void cordon(struct req *rq, struct resp *rs, bool on)
{
    const char *node;
    if (node_target(rq, rs, &node))
        return;
    struct core_error ce = {0};
    char drain[40] = "";
    if (core_node_cordon(rq->api->k, node, on, rq->who.owner, drain, &ce)) {
        resp_core_error(rs, &ce);
        return;
    }
    json_t *o = cordon_json(rq->api, node);
    json_object_set_new(o, "name", json_string(node));
    if (!on) /* the drain of the node this uncordon cancelled */
        json_object_set_new(o, "drain_cancelled", drain[0] ? json_string(drain) : json_null());
    resp_json(rs, HTTP_OK, o);
}

void h_node_cordon(struct req *rq, struct resp *rs)
{
    cordon(rq, rs, true);
}

void h_node_uncordon(struct req *rq, struct resp *rs)
{
    cordon(rq, rs, false);
}

void h_node_drain(struct req *rq, struct resp *rs)
{
    const char *node;
    if (node_target(rq, rs, &node))
        return;
    char job[40] = "";
    struct core_error ce = {0};
    int rc = core_node_drain(rq->api->k, node, rq->who.owner, job, &ce);
    if (rc == CORE_E_CONFLICT && job[0]) { /* the one under way: where to follow it */
        snprintf(rs->location, sizeof rs->location, "/v1/jobs/%s", job);
        resp_error(rs, HTTP_CONFLICT, "conflict", "node", "%s: job %s", ce.message, job);
        return;
    }
    if (rc) {
        resp_core_error(rs, &ce);
        return;
    }
    snprintf(rs->location, sizeof rs->location, "/v1/jobs/%s", job);
    resp_json(rs, HTTP_ACCEPTED,
              json_pack("{s:s,s:s,s:s,s:s}", "node", node, "job", job, "kind", "drain", "state",
                        "queued"));
}
