/* h_cluster: /cluster/resources, /cluster/nextid, /cluster/status and the HA
 * resource list. In standalone mode every host is its own one-node world. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"
#include "sim/sjson.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *sim_node_entry(struct sim *s, struct sim_node *n, bool with_fp, double now);
json_t *sim_storage_entry(struct sim *s, struct sim_node *n, struct sim_storage *st, bool frac);

static bool visible(struct sim_call *c, struct sim_node *n)
{
    return !c->s->o.standalone || n == c->node;
}

/* ---- /cluster/resources -------------------------------------------------
 * One writer per resource type, straight into the answer's text (with
 * 100,000 VMs a jansson tree per request cost seconds and fragmented the
 * heap). The fields are PVE's (PVE::API2Tools::extract_vm_stats and
 * friends); new ones go into the writer of their type. */

static const char *vm_status(const struct sim_vm *v, bool running)
{
    if (v->node->state == NODE_OFFLINE)
        return "unknown";
    return running ? "running" : "stopped";
}

/* A VM's stats as pvestatd reported them: live, or with --pvestatd-cycle
 * its last report (rrd.c) */
struct vm_stats {
    bool running, template;
    int cpus;
    int64_t maxmem, maxdisk, mem, uptime;
    const char *name;
    size_t name_len;
};

/* false: no report has seen the VM yet (status "unknown", no stats) */
static bool vm_stats(struct sim *s, struct sim_vm *v, const struct sim_vm_derived *d, double now,
                     struct vm_stats *st)
{
    if (s->o.pvestatd_cycle > 0) {
        const struct sim_rrd_vm *r = sim_rrd_vm(s, v);
        if (!r)
            return false;
        *st = (struct vm_stats){r->running, r->template, r->cpus, r->maxmem,  r->maxdisk,
                                r->mem,     r->uptime,   r->name, r->name_len};
        return true;
    }
    bool running = v->power != VM_STOPPED;
    *st = (struct vm_stats){running,
                            d->template,
                            d->cpus,
                            d->maxmem,
                            d->maxdisk,
                            running ? d->maxmem / 3 : 0,
                            running && now > v->started ? (int64_t)(now - v->started) : 0,
                            d->name,
                            d->name_len};
    return true;
}

/* Pool.Audit on the pool, for its name on a guest's entry (always when
 * the caller is unrestricted) */
static bool pool_shown(struct sim_call *c, const char *pool)
{
    if (call_unrestricted(c))
        return true;
    char path[160];
    snprintf(path, sizeof path, "/pool/%s", pool);
    return call_can(c, path, "Pool.Audit");
}

static void res_qemu(struct buf *b, struct sim_call *c, struct sim_vm *v, double now)
{
    struct sim *s = c->s;
    const struct sim_vm_derived *d = sim_vm_derive(s, v);
    struct vm_stats st;
    bool seen = vm_stats(s, v, d, now, &st);
    const char *node = v->node->name;
    const char *ha = v->ha_state[0] ? v->ha_state : "started";
    size_t worst = 512 + JSONW_STR_MAX(strlen(node)) + (seen ? st.name_len : 0) + d->lock_len +
                   d->tags_len + JSONW_STR_MAX(sizeof v->ha_state);
    char *p0 = sj_reserve(b, worst), *p = p0;
    p = SJ_LIT(p, "{\"id\":\"qemu/");
    p = jsonw_put_int(p, v->vmid);
    p = SJ_LIT(p, "\",\"type\":\"qemu\",\"node\":");
    p = jsonw_put_str(p, node, strlen(node));
    p = SJ_LIT(p, ",\"vmid\":");
    p = jsonw_put_int(p, v->vmid);
    if (!seen) { /* extract_vm_stats without an RRD entry: the live fields only */
        p = SJ_LIT(p, ",\"status\":\"unknown\"");
    } else {
        const char *status = vm_status(v, st.running);
        p = SJ_LIT(p, ",\"name\":");
        p = sj_put_mem(p, st.name, st.name_len);
        p = SJ_LIT(p, ",\"status\":");
        p = jsonw_put_str(p, status, strlen(status));
        p = SJ_LIT(p, ",\"maxcpu\":");
        p = jsonw_put_int(p, st.cpus);
        p = SJ_LIT(p, ",\"maxmem\":");
        p = jsonw_put_int(p, st.maxmem);
        p = SJ_LIT(p, ",\"maxdisk\":");
        p = jsonw_put_int(p, st.maxdisk);
        p = SJ_LIT(p, ",\"disk\":0,\"mem\":");
        p = jsonw_put_int(p, st.mem);
        if (st.running) {
            p = SJ_LIT(p, ",\"cpu\":0.02,\"uptime\":");
            p = jsonw_put_int(p, st.uptime);
            p = SJ_LIT(p, ",\"netin\":123456,\"netout\":65432");
        } else {
            p = SJ_LIT(p, ",\"cpu\":0.0,\"uptime\":0,\"netin\":0,\"netout\":0");
        }
        p = SJ_LIT(p, ",\"diskread\":0,\"diskwrite\":0");
        p = st.template ? SJ_LIT(p, ",\"template\":1") : SJ_LIT(p, ",\"template\":0");
    }
    if (d->lock) {
        p = SJ_LIT(p, ",\"lock\":");
        p = sj_put_mem(p, d->lock, d->lock_len);
    }
    if (d->tags) {
        p = SJ_LIT(p, ",\"tags\":");
        p = sj_put_mem(p, d->tags, d->tags_len);
    }
    if (v->ha) {
        p = SJ_LIT(p, ",\"hastate\":");
        p = jsonw_put_str(p, ha, strlen(ha));
    }
    if (seen && s->o.pve_version >= 9) { /* the host's view of its memory; = mem here */
        p = SJ_LIT(p, ",\"memhost\":");
        p = jsonw_put_int(p, st.mem);
    }
    sj_commit(b, p0, p);
    const char *pool = json_object_size(s->pools) ? sim_pool_of(s, v->vmid) : NULL;
    if (pool && pool_shown(c, pool)) {
        sj_lit(b, ",\"pool\":");
        sj_str(b, pool);
    }
    buf_addc(b, '}');
}

/* audit: Sys.Audit on /nodes/<node>; without it the entry has no stats
 * (extract_node_stats' exclude_stats) */
static void res_node(struct buf *b, struct sim *s, struct sim_node *n, double now, bool audit)
{
    json_t *e = sim_node_entry(s, n, false, now);
    static const char *const stats[] = {"uptime", "cpu",    "mem",    "disk",
                                        "maxcpu", "maxmem", "maxdisk"};
    for (size_t i = 0; !audit && i < sizeof stats / sizeof *stats; i++)
        json_object_del(e, stats[i]);
    json_object_set_new(e, "cgroup-mode", json_integer(2));
    sj_json(b, e);
    json_decref(e);
}

static void res_storage(struct buf *b, struct sim *s, struct sim_node *n, struct sim_storage *st)
{
    json_t *se = sim_storage_entry(s, n, st, false);
    const struct sim_rrd_node *r = sim_rrd_node(s, n); /* pvestatd's last report */
    if (r) {
        json_object_set_new(se, "total", json_integer(r->st_total[st - n->st]));
        json_object_set_new(se, "used", json_integer(r->st_used[st - n->st]));
    }
    json_t *e = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:O,s:O}", "id", "", "storage", st->id,
                          "node", n->name, "type", "storage", "plugintype", st->type, "status",
                          n->state == NODE_OFFLINE ? "unknown" : "available", "shared", st->shared,
                          "content", st->content, "maxdisk", json_object_get(se, "total"), "disk",
                          json_object_get(se, "used"));
    json_object_set_new(e, "id", json_sprintf("storage/%s/%s", n->name, st->id));
    json_decref(se);
    sj_json(b, e);
    json_decref(e);
}

/* The whole answer is kept (s->res_cache) and sent again as long as nothing
 * in it can differ: the same world generation, the same RRD sample time
 * (the uptimes are as of pvestatd's last report, as on a real node), the
 * same `type` and, standalone, the same node's view. Building the 2.7 MB of
 * 10,000 VMs cost more than encrypting and sending them. True: c->answer
 * is set; false: build it, and finish() keeps it. */
static bool res_cached(struct sim_call *c, const char *type, double now)
{
    static const char *const variants[SIM_RES_VARIANTS] = {"", "vm", "node", "storage"};
    struct sim *s = c->s;
    int k = -1;
    for (int i = 0; i < SIM_RES_VARIANTS; i++)
        if (strcmp(type ? type : "", variants[i]) == 0)
            k = i;
    if (k < 0 || s->changing || !call_unrestricted(c)) /* a restricted view: its own */
        return false;
    struct sim_res_cache *rc = &s->res_cache[k];
    int node = s->o.standalone && c->node ? c->node->idx : -1;
    if (rc->body && rc->gen == s->gen && rc->rrd_t == now && rc->node == node) {
        c->answer = sim_blob_ref(rc->body);
        return true;
    }
    sim_blob_release(rc->body);
    *rc = (struct sim_res_cache){.gen = s->gen, .rrd_t = now, .node = node, .body = NULL};
    c->keep_answer = &rc->body;
    return false;
}

static void h_resources(struct sim_call *c)
{
    struct sim *s = c->s;
    const char *type = call_str(c, "type");
    bool vms = !type || strcmp(type, "vm") == 0, nodes = !type || strcmp(type, "node") == 0,
         storages = !type || strcmp(type, "storage") == 0;
    double now = sim_rrd_now(s);
    if (res_cached(c, type, now))
        return;
    struct buf *b = &c->raw;
    bool first = true;
    c->raw_set = true;
    /* about 330 bytes a VM: one allocation instead of a dozen doublings */
    buf_space(b, vms ? s->nvms * 340 + 4096 : 4096);
    buf_addc(b, '[');
#define SEP() (first ? (void)(first = false) : (void)buf_addc(b, ','))
    bool all = call_unrestricted(c);
    if (vms)
        for (struct sim_vm *v = s->vms; v; v = v->next)
            if (!v->gone && visible(c, v->node) && (all || call_can_vm(c, v->vmid, "VM.Audit"))) {
                SEP();
                res_qemu(b, c, v, now);
            }
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!visible(c, n))
            continue;
        if (nodes) {
            char path[96];
            snprintf(path, sizeof path, "/nodes/%s", n->name);
            SEP();
            res_node(b, s, n, now, all || call_can(c, path, "Sys.Audit"));
        }
        for (int j = 0; storages && j < n->nst; j++) {
            char path[96];
            snprintf(path, sizeof path, "/storage/%s", n->st[j].id);
            if (!all && !call_can(c, path, "Datastore.Audit"))
                continue;
            SEP();
            res_storage(b, s, n, &n->st[j]);
        }
    }
    /* containers and pools (h_inventory.c), written after ours */
    c->data = json_array();
    sim_resources_extra(c, type);
    size_t i;
    json_t *e;
    json_array_foreach(c->data, i, e)
    {
        SEP();
        sj_json(b, e);
    }
    json_decref(c->data);
    c->data = NULL;
#undef SEP
    buf_addc(b, ']');
}

static void h_nextid(struct sim_call *c)
{
    struct sim *s = c->s;
    struct sim_node *space = s->o.standalone ? c->node : NULL;
    if (json_object_get(c->params, "vmid")) {
        int64_t id = call_int(c, "vmid", 0);
        if (sim_vmid_used(s, space ? space : c->node, (int)id)) {
            call_param_fail(c, "vmid", "VM %lld already exists", (long long)id);
            return;
        }
        c->data = json_sprintf("%lld", (long long)id);
        return;
    }
    for (int id = 100; id < 1000000; id++) {
        if (!sim_vmid_used(s, c->node, id)) {
            c->data = json_sprintf("%d", id);
            return;
        }
    }
    call_fail(c, 500, "unable to get any free VMID in range [100, 1000000]");
}

static void h_status(struct sim_call *c)
{
    struct sim *s = c->s;
    c->data = json_array();
    if (s->o.standalone) {
        json_array_append_new(c->data,
                              json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:s}", "type", "node", "id",
                                        "", "name", c->node->name, "ip", "127.0.0.1", "local", 1,
                                        "nodeid", 0, "online", 1, "level", ""));
        json_object_set_new(json_array_get(c->data, 0), "id",
                            json_sprintf("node/%s", c->node->name));
        return;
    }
    int online = 0;
    for (int i = 0; i < s->nnodes; i++)
        online += s->nodes[i].state != NODE_OFFLINE;
    json_array_append_new(c->data,
                          json_pack("{s:s,s:s,s:s,s:i,s:i,s:i}", "type", "cluster", "id", "cluster",
                                    "name", "pvesim", "nodes", s->nnodes, "version", s->nnodes,
                                    "quorate", online * 2 > s->nnodes));
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        json_t *e = json_pack("{s:s,s:s,s:s,s:i,s:s,s:i,s:i,s:s}", "type", "node", "id", "", "name",
                              n->name, "nodeid", i + 1, "ip", "", "local", n == c->node, "online",
                              n->state != NODE_OFFLINE, "level", "");
        json_object_set_new(e, "id", json_sprintf("node/%s", n->name));
        json_object_set_new(e, "ip", json_sprintf("10.0.0.%d", i + 11));
        json_array_append_new(c->data, e);
    }
}

/* ---- HA resources ------------------------------------------------------- */

static struct sim_vm *ha_vm(struct sim_call *c, const char *sid)
{
    const char *p = sid;
    if (str_starts(p, "vm:"))
        p += 3;
    int64_t id;
    if (!parse_i64(p, &id))
        return NULL;
    struct sim_vm *v = sim_vm_find(c->s, c->s->o.standalone ? c->node : NULL, (int)id);
    return v && v->ha ? v : NULL;
}

static json_t *ha_entry(struct sim_vm *v)
{
    json_t *e = json_pack("{s:s,s:s,s:s,s:s}", "sid", "", "type", "vm", "state",
                          v->ha_state[0] ? v->ha_state : "started", "digest",
                          "2c7d6b1e9f0a3d4c5b6a7e8f9d0c1b2a3e4f5d6c");
    json_object_set_new(e, "sid", json_sprintf("vm:%d", v->vmid));
    return e;
}

static void h_ha_list(struct sim_call *c)
{
    c->data = json_array();
    for (struct sim_vm *v = c->s->vms; v; v = v->next)
        if (!v->gone && v->ha && visible(c, v->node))
            json_array_append_new(c->data, ha_entry(v));
}

static void h_ha_get(struct sim_call *c)
{
    struct sim_vm *v = ha_vm(c, call_str(c, "sid"));
    if (!v) {
        call_fail(c, 500, "no such resource '%s'", call_str(c, "sid"));
        return;
    }
    c->data = ha_entry(v);
}

static void h_ha_delete(struct sim_call *c)
{
    struct sim_vm *v = ha_vm(c, call_str(c, "sid"));
    if (!v) {
        call_fail(c, 500, "cannot delete service '%s', not HA managed!", call_str(c, "sid"));
        return;
    }
    v->ha = false;
    v->ha_state[0] = '\0';
    c->s->dirty = true;
    c->data = json_null();
}

static void h_ha_add(struct sim_call *c)
{
    const char *sid = call_str(c, "sid");
    const char *p = str_starts(sid, "vm:") ? sid + 3 : sid;
    int64_t id = 0;
    struct sim_vm *v = parse_i64(p, &id) ? sim_vm_find(c->s, NULL, (int)id) : NULL;
    if (!v) {
        call_fail(c, 500, "unable to find configuration file for VM %lld", (long long)id);
        return;
    }
    if (v->ha) {
        call_fail(c, 500, "resource ID 'vm:%d' already defined", v->vmid);
        return;
    }
    v->ha = true;
    const char *st = call_str(c, "state");
    snprintf(v->ha_state, sizeof v->ha_state, "%s", st ? st : "started");
    c->s->dirty = true;
    c->data = json_null();
}

const struct sim_route sim_routes_cluster[] = {
    {"GET", "/cluster/resources", h_resources},
    {"GET", "/cluster/nextid", h_nextid},
    {"GET", "/cluster/status", h_status},
    {"GET", "/cluster/ha/resources", h_ha_list},
    {"POST", "/cluster/ha/resources", h_ha_add},
    {"GET", "/cluster/ha/resources/{sid}", h_ha_get},
    {"DELETE", "/cluster/ha/resources/{sid}", h_ha_delete},
    {NULL, NULL, NULL},
};
