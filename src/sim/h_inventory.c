/* h_inventory: the read-mostly endpoints inventories and reporting tools
 * call: the storage configuration (storage.cfg, API2/Storage/Config.pm),
 * a storage's volumes (Storage/Content.pm), pools (manager API2/Pool.pm),
 * the HA manager's status (API2/HA/Status.pm), a node's disks and network
 * interfaces; plus what /cluster/resources adds for containers and pools. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GiB (1024LL * 1024 * 1024)

json_t *sim_vm_list_entry(struct sim *s, struct sim_vm *v);

/* storage.cfg's digest: the file does not change in the simulator */
#define STORAGE_CFG_DIGEST "e3b5a2c1d4f6078912ab34cd56ef7890a1b2c3d4"

static bool visible(struct sim_call *c, struct sim_node *n)
{
    return !c->s->o.standalone || n == c->node;
}

/* ---- storage configuration ------------------------------------------------ */

/* One storage.cfg section: the storage as the first visible node has it,
 * with `nodes` when not every node has it. */
static json_t *storage_cfg_entry(struct sim_call *c, const char *id)
{
    struct sim *s = c->s;
    struct sim_storage *first = NULL;
    struct buf nodes = BUF_INIT(BUF_UNLIMITED);
    int have = 0, all = 0;
    for (int i = 0; i < s->nnodes; i++) {
        if (!visible(c, &s->nodes[i]))
            continue;
        all++;
        struct sim_storage *st = sim_storage_find(&s->nodes[i], id);
        if (!st)
            continue;
        first = first ? first : st;
        buf_printf(&nodes, "%s%s", have++ ? "," : "", s->nodes[i].name);
    }
    json_t *e = NULL;
    if (first) {
        e = json_pack("{s:s,s:s,s:s,s:s}", "storage", id, "type", first->type, "content",
                      first->content, "digest", STORAGE_CFG_DIGEST);
        if (strcmp(first->type, "dir") == 0) {
            json_object_set_new(e, "prune-backups", json_string("keep-all=1"));
            json_object_set_new(
                e, "path", json_string(strcmp(id, "local") == 0 ? "/var/lib/vz" : "/mnt/data"));
        } else if (strcmp(first->type, "lvmthin") == 0) {
            json_object_set_new(e, "vgname", json_string("pve"));
            json_object_set_new(e, "thinpool", json_string("data"));
        } else if (strcmp(first->type, "nfs") == 0) {
            json_object_set_new(e, "server", json_string("10.0.0.5"));
            json_object_set_new(e, "export", json_sprintf("/export/%s", id));
            json_object_set_new(e, "path", json_sprintf("/mnt/pve/%s", id));
        }
        if (first->shared && strcmp(first->type, "nfs") != 0)
            json_object_set_new(e, "shared", json_integer(1));
        if (have < all)
            json_object_set_new(e, "nodes", json_string(buf_str(&nodes)));
    }
    buf_release(&nodes);
    return e;
}

/* Every storage id once, in the order the nodes list them. */
static json_t *storage_ids(struct sim_call *c)
{
    json_t *ids = json_object();
    for (int i = 0; i < c->s->nnodes; i++)
        if (visible(c, &c->s->nodes[i]))
            for (int j = 0; j < c->s->nodes[i].nst; j++)
                json_object_set_new(ids, c->s->nodes[i].st[j].id, json_true());
    return ids;
}

static void h_storage_index(struct sim_call *c)
{
    const char *type = call_str(c, "type");
    json_t *ids = storage_ids(c);
    const char *id;
    json_t *v;
    c->data = json_array();
    json_object_foreach(ids, id, v)
    {
        json_t *e = call_storage_visible(c, id) ? storage_cfg_entry(c, id) : NULL;
        if (e && (!type || strcmp(type, json_string_value(json_object_get(e, "type"))) == 0))
            json_array_append_new(c->data, e);
        else
            json_decref(e);
    }
    json_decref(ids);
}

static void h_storage_read(struct sim_call *c)
{
    const char *id = call_str(c, "storage");
    c->data = storage_cfg_entry(c, id);
    if (!c->data)
        call_fail(c, 500, "storage '%s' does not exist", id);
}

/* ---- a storage's volumes ---------------------------------------------------- */

static bool is_disk_key(const char *k)
{
    static const char *const fam[] = {"scsi",     "virtio", "sata",   "ide", "efidisk",
                                      "tpmstate", "unused", "rootfs", "mp"};
    for (size_t i = 0; i < sizeof fam / sizeof *fam; i++) {
        size_t n = strlen(fam[i]);
        if (strncmp(k, fam[i], n) == 0 &&
            (k[n] == '\0' ? strcmp(k, "rootfs") == 0 : (k[n] >= '0' && k[n] <= '9')))
            return true;
    }
    return false;
}

/* A volume of `conf` on storage `sid`: "local-lvm:base-8000-disk-0/vm-100-disk-0"
 * lists as the thin LV it is, "local-lvm:vm-100-disk-0". */
static void add_volumes(struct sim *s, json_t *out, json_t *conf, int vmid, const char *sid,
                        const char *want, bool ct)
{
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !is_disk_key(k) || (strstr(d, "media=cdrom") && !strstr(d, "cloudinit")))
            continue;
        char *st = sim_disk_storage(d);
        bool here = st && strcmp(st, sid) == 0;
        free(st);
        if (!here)
            continue;
        const char *name = d + strlen(sid) + 1;
        size_t len = strcspn(name, ",");
        const char *slash = memchr(name, '/', len);
        if (slash && strncmp(name, "base-", 5) == 0) {
            len -= (size_t)(slash + 1 - name);
            name = slash + 1;
        }
        const char *content = ct && strncmp(k, "rootfs", 6) == 0 ? "rootdir" : "images";
        if (want && !strstr(want, content))
            continue;
        int64_t size = sim_volume_size(s, d); /* the storage's figure, size= or not */
        json_t *e = json_pack("{s:s,s:s,s:s,s:I,s:i,s:I}", "volid", "", "content", content,
                              "format", "raw", "size", (json_int_t)(size ? size : 4 << 20), "vmid",
                              vmid, "ctime", (json_int_t)1764547200);
        json_object_set_new(e, "volid", json_sprintf("%s:%.*s", sid, (int)len, name));
        json_array_append_new(out, e);
    }
}

static void h_content(struct sim_call *c)
{
    struct sim *s = c->s;
    const char *sid = call_str(c, "storage"), *want = call_str(c, "content");
    struct sim_storage *st = sim_storage_find(c->node, sid);
    if (!st) {
        call_fail(c, 500, "storage '%s' does not exist", sid);
        return;
    }
    int only = json_object_get(c->params, "vmid") ? (int)call_int(c, "vmid", 0) : 0;
    c->data = json_array();
    for (struct sim_vm *v = s->vms; v; v = v->next)
        if (!v->gone && v->node == c->node && (!only || v->vmid == only))
            add_volumes(s, c->data, v->conf, v->vmid, sid, want, false);
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next)
        if (ct->node == c->node && (!only || ct->vmid == only))
            add_volumes(s, c->data, ct->conf, ct->vmid, sid, want, true);
    if (strstr(st->content, "vztmpl") && !only && (!want || strstr(want, "vztmpl")))
        json_array_append_new(c->data,
                              json_pack("{s:s,s:s,s:s,s:I,s:I}", "volid", SIM_CT_TEMPLATE,
                                        "content", "vztmpl", "format", "tzst", "size",
                                        (json_int_t)126023936, "ctime", (json_int_t)1727000000));
    if (strcmp(sid, "local") != 0) /* the template archive lives on `local` only */
        for (size_t i = json_array_size(c->data); i-- > 0;)
            if (strcmp(json_string_value(json_object_get(json_array_get(c->data, i), "content")),
                       "vztmpl") == 0)
                json_array_remove(c->data, i);
}

/* ---- pools ------------------------------------------------------------------ */

/* extract_vm_stats: a guest's entry in /cluster/resources and pool members. */
static json_t *ct_resource(struct sim *s, struct sim_ct *ct)
{
    json_t *e = sim_ct_list_entry(s, ct);
    json_t *cpus = json_incref(json_object_get(e, "cpus"));
    static const char *const drop[] = {"cpus",
                                       "pid",
                                       "maxswap",
                                       "swap",
                                       "pressurecpusome",
                                       "pressurecpufull",
                                       "pressureiosome",
                                       "pressureiofull",
                                       "pressurememorysome",
                                       "pressurememoryfull"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
        json_object_del(e, drop[i]);
    json_object_set_new(e, "id", json_sprintf("lxc/%d", ct->vmid));
    json_object_set_new(e, "node", json_string(ct->node->name));
    json_object_set_new(e, "maxcpu", cpus);
    if (ct->node->state == NODE_OFFLINE)
        json_object_set_new(e, "status", json_string("unknown"));
    double rrd = sim_rrd_now(s); /* as of pvestatd's last report (h_resources) */
    if (json_integer_value(json_object_get(e, "uptime")))
        json_object_set_new(e, "uptime",
                            json_integer(rrd > ct->started ? (json_int_t)(rrd - ct->started) : 0));
    json_object_set_new(e, "template",
                        json_integer(json_integer_value(json_object_get(ct->conf, "template"))));
    if (s->o.pve_version >= 9)
        json_object_set(e, "memhost", json_object_get(e, "mem"));
    const char *pool = sim_pool_of(s, ct->vmid);
    if (pool)
        json_object_set_new(e, "pool", json_string(pool));
    return e;
}

static json_t *vm_member(struct sim *s, struct sim_vm *v)
{
    json_t *e = sim_vm_list_entry(s, v);
    json_t *cpus = json_incref(json_object_get(e, "cpus"));
    json_object_del(e, "cpus");
    json_object_del(e, "pid");
    json_object_set_new(e, "id", json_sprintf("qemu/%d", v->vmid));
    json_object_set_new(e, "node", json_string(v->node->name));
    json_object_set_new(e, "type", json_string("qemu"));
    json_object_set_new(e, "maxcpu", cpus);
    json_object_set_new(e, "template",
                        json_integer(json_integer_value(json_object_get(v->conf, "template"))));
    if (v->node->state == NODE_OFFLINE)
        json_object_set_new(e, "status", json_string("unknown"));
    if (s->o.pve_version >= 8) {
        json_object_set_new(e, "diskread", json_integer(0));
        json_object_set_new(e, "diskwrite", json_integer(0));
    }
    return e;
}

static json_t *pool_members(struct sim_call *c, json_t *pool, const char *type)
{
    json_t *out = json_array();
    size_t i;
    json_t *jid;
    json_array_foreach(json_object_get(pool, "vms"), i, jid)
    {
        int vmid = (int)json_integer_value(jid);
        struct sim_vm *v = sim_vm_find(c->s, c->s->o.standalone ? c->node : NULL, vmid);
        struct sim_ct *ct = v ? NULL : sim_ct_find(c->s, c->s->o.standalone ? c->node : NULL, vmid);
        if (v && !v->gone && (!type || strcmp(type, "qemu") == 0))
            json_array_append_new(out, vm_member(c->s, v));
        else if (ct && (!type || strcmp(type, "lxc") == 0))
            json_array_append_new(out, ct_resource(c->s, ct));
    }
    return out;
}

static json_t *pool_info(struct sim_call *c, const char *id, json_t *pool, const char *type)
{
    json_t *e = json_pack("{s:o}", "members", pool_members(c, pool, type));
    json_t *comment = json_object_get(pool, "comment");
    if (comment)
        json_object_set(e, "comment", comment);
    if (id)
        json_object_set_new(e, "poolid", json_string(id));
    return e;
}

static void h_pools(struct sim_call *c)
{
    const char *want = call_str(c, "poolid");
    c->data = json_array();
    if (want) {
        json_t *p = json_object_get(c->s->pools, want);
        if (!p) {
            call_fail(c, 500, "pool '%s' does not exist", want);
            return;
        }
        json_array_append_new(c->data, pool_info(c, want, p, call_str(c, "type")));
        return;
    }
    /* sorted, as `sort keys %{$usercfg->{pools}}` */
    const char **ids = xcalloc(json_object_size(c->s->pools) + 1, sizeof *ids);
    size_t n = 0;
    const char *id;
    json_t *p;
    json_object_foreach(c->s->pools, id, p) ids[n++] = id;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            const char *t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char path[160];
        snprintf(path, sizeof path, "/pool/%s", ids[i]);
        if (!call_can(c, path, "Pool.Audit")) /* the pools the caller may audit */
            continue;
        json_t *e = json_pack("{s:s}", "poolid", ids[i]);
        json_t *comment = json_object_get(json_object_get(c->s->pools, ids[i]), "comment");
        if (comment)
            json_object_set(e, "comment", comment);
        json_array_append_new(c->data, e);
    }
    free(ids);
}

static void h_pool_read(struct sim_call *c)
{
    const char *id = call_str(c, "poolid");
    json_t *p = json_object_get(c->s->pools, id);
    if (!p) {
        call_fail(c, 500, "pool '%s' does not exist", id);
        return;
    }
    c->data = pool_info(c, NULL, p, call_str(c, "type"));
}

static void h_pool_create(struct sim_call *c)
{
    const char *id = call_str(c, "poolid"), *comment = call_str(c, "comment");
    const char *slash = strrchr(id, '/');
    if (json_object_get(c->s->pools, id)) {
        call_fail(c, 500, "pool '%s' already exists", id);
        return;
    }
    if (slash) {
        char *parent = xstrndup(id, (size_t)(slash - id));
        bool ok = json_object_get(c->s->pools, parent) != NULL;
        if (!ok)
            call_fail(c, 500, "parent '%s' of pool '%s' does not exist", parent, id);
        free(parent);
        if (!ok)
            return;
    }
    char first = slash ? slash[1] : id[0];
    if (!((first >= 'a' && first <= 'z') || (first >= 'A' && first <= 'Z'))) {
        call_fail(c, 500, "pool name must start with a letter");
        return;
    }
    json_t *p = json_pack("{s:[]}", "vms");
    if (comment)
        json_object_set_new(p, "comment", json_string(comment));
    json_object_set_new(c->s->pools, id, p);
    c->s->dirty = true;
    c->data = json_null();
}

/* ---- /cluster/resources additions ------------------------------------------ */

/* Containers (with type "vm" or none), `pool` on every guest entry already
 * listed, and one entry per pool (no type filter only; Cluster.pm). */
static bool pool_audit(struct sim_call *c, const char *pool)
{
    char path[160];
    snprintf(path, sizeof path, "/pool/%s", pool);
    return call_can(c, path, "Pool.Audit");
}

void sim_resources_extra(struct sim_call *c, const char *type)
{
    struct sim *s = c->s;
    size_t i;
    json_t *e;
    json_array_foreach(c->data, i, e)
    {
        const char *pool = json_object_get(e, "vmid")
                               ? sim_pool_of(s, (int)json_integer_value(json_object_get(e, "vmid")))
                               : NULL;
        if (pool)
            json_object_set_new(e, "pool", json_string(pool));
    }
    if (!type || strcmp(type, "vm") == 0)
        for (struct sim_ct *ct = s->cts; ct; ct = ct->next)
            if (visible(c, ct->node) && call_can_vm(c, ct->vmid, "VM.Audit")) {
                json_t *ce = ct_resource(s, ct);
                const char *pool = json_string_value(json_object_get(ce, "pool"));
                if (pool && !pool_audit(c, pool))
                    json_object_del(ce, "pool");
                json_array_append_new(c->data, ce);
            }
    if (type)
        return;
    const char *id;
    json_t *p;
    json_object_foreach(s->pools, id, p)
    {
        if (!pool_audit(c, id))
            continue;
        json_t *pe = json_pack("{s:s,s:s,s:s}", "id", "", "type", "pool", "pool", id);
        json_object_set_new(pe, "id", json_sprintf("/pool/%s", id));
        json_array_append_new(c->data, pe);
    }
}

/* ---- HA manager status ------------------------------------------------------ */

static void h_ha_status(struct sim_call *c)
{
    struct sim *s = c->s;
    long now = (long)time(NULL);
    struct sim_node *master = NULL;
    int online = 0;
    for (int i = 0; i < s->nnodes; i++)
        if (visible(c, &s->nodes[i]) && s->nodes[i].state != NODE_OFFLINE) {
            online++;
            master = master ? master : &s->nodes[i];
        }
    master = master ? master : c->node;
    c->data = json_array();
    json_array_append_new(c->data, json_pack("{s:s,s:s,s:s,s:s,s:i}", "id", "quorum", "type",
                                             "quorum", "node", c->node->name, "status",
                                             online * 2 > s->nnodes ? "OK" : "No quorum on node",
                                             "quorate", online * 2 > s->nnodes));
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:I}", "id", "master", "type", "master", "node",
                          master->name, "status", "", "timestamp", (json_int_t)now);
    json_object_set_new(m, "status", json_sprintf("%s (active, %s)", master->name, "idle"));
    json_array_append_new(c->data, m);
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!visible(c, n))
            continue;
        bool active = false;
        for (struct sim_vm *v = s->vms; v && !active; v = v->next)
            active = !v->gone && v->ha && v->node == n;
        json_t *l = json_pack("{s:s,s:s,s:s,s:s,s:I}", "id", "", "type", "lrm", "node", n->name,
                              "status", "", "timestamp", (json_int_t)now);
        json_object_set_new(l, "id", json_sprintf("lrm:%s", n->name));
        json_object_set_new(
            l, "status",
            n->state == NODE_OFFLINE
                ? json_sprintf("%s (old timestamp - dead?, %ld)", n->name, now)
                : json_sprintf("%s (%s, %ld)", n->name, active ? "active" : "idle", now));
        json_array_append_new(c->data, l);
    }
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone || !v->ha || !visible(c, v->node))
            continue;
        const char *st = v->ha_state[0] ? v->ha_state : "started";
        json_t *e = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:i}", "id", "", "sid", "", "type",
                              "service", "node", v->node->name, "state", st, "status", "",
                              "crm_state", st, "max_restart", 1, "max_relocate", 1);
        json_object_set_new(e, "id", json_sprintf("service:vm:%d", v->vmid));
        json_object_set_new(e, "sid", json_sprintf("vm:%d", v->vmid));
        json_object_set_new(e, "status",
                            json_sprintf("vm:%d (%s, %s)", v->vmid, v->node->name, st));
        json_object_set_new(e, "request_state", json_string(st));
        if (s->o.pve_version >= 9)
            json_object_set_new(e, "failback", json_integer(1));
        json_array_append_new(c->data, e);
    }
}

/* ---- a node's disks and network ------------------------------------------- */

static void h_disks(struct sim_call *c)
{
    struct sim_node *n = c->node;
    const char *type = call_str(c, "type");
    int64_t size = 0;
    for (int j = 0; j < n->nst; j++)
        if (!n->st[j].shared)
            size += n->st[j].total;
    size += 16 * GiB; /* EFI, boot and swap */
    c->data = json_array();
    if (type) /* the one disk is in use: neither unused nor a journal candidate */
        return;
    json_t *d = json_pack("{s:s,s:I,s:i,s:i,s:i,s:[],s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:s}",
                          "devpath", "/dev/nvme0n1", "size", (json_int_t)size, "gpt", 1, "mounted",
                          0, "osdid", -1, "osdid-list", "used", "LVM", "health", "PASSED", "model",
                          "SAMSUNG MZQL21T9HCJR-00A07", "serial", "", "vendor", "unknown", "wwn",
                          "", "type", "nvme", "wearout", 98, "rpm", 0, "by_id_link", "");
    json_object_set_new(d, "serial", json_sprintf("S64GNE0R%05d", 10000 + n->idx));
    json_object_set_new(d, "wwn", json_sprintf("eui.36344730%08x", 0x52a00000 + n->idx));
    json_object_set_new(d, "by_id_link",
                        json_sprintf("/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R%05d",
                                     10000 + n->idx));
    json_array_append_new(c->data, d);
}

/* /etc/network/interfaces of a node: vmbr0 on eno1 with the node's address
 * (the one /cluster/status names); the loopback is not listed. */
static void h_network(struct sim_call *c)
{
    struct sim_node *n = c->node;
    const char *type = call_str(c, "type");
    char addr[32], cidr[40];
    snprintf(addr, sizeof addr, "10.0.0.%d", n->idx + 11);
    snprintf(cidr, sizeof cidr, "%s/24", addr);
    json_t *br = json_pack(
        "{s:s,s:s,s:i,s:i,s:s,s:s,s:[s],s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i}", "iface", "vmbr0", "type",
        "bridge", "active", 1, "autostart", 1, "method", "static", "method6", "manual", "families",
        "inet", "address", addr, "netmask", "255.255.255.0", "cidr", cidr, "gateway", "10.0.0.1",
        "bridge_ports", "eno1", "bridge_stp", "off", "bridge_fd", "0", "priority", 4);
    json_t *eth = json_pack("{s:s,s:s,s:i,s:i,s:s,s:s,s:[s],s:i}", "iface", "eno1", "type", "eth",
                            "active", 1, "exists", 1, "method", "manual", "method6", "manual",
                            "families", "inet", "priority", 3);
    c->data = json_array();
    bool bridge = !type || strcmp(type, "bridge") == 0 || strcmp(type, "any_bridge") == 0 ||
                  strcmp(type, "any_local_bridge") == 0 || strcmp(type, "include_sdn") == 0;
    if (bridge)
        json_array_append(c->data, br);
    if (!type || strcmp(type, "eth") == 0)
        json_array_append(c->data, eth);
    json_decref(br);
    json_decref(eth);
}

const struct sim_route sim_routes_inventory[] = {
    {"GET", "/storage", h_storage_index},
    {"GET", "/storage/{storage}", h_storage_read},
    {"GET", "/nodes/{node}/storage/{storage}/content", h_content},
    {"GET", "/pools", h_pools},
    {"POST", "/pools", h_pool_create},
    {"GET", "/pools/{poolid}", h_pool_read},
    {"GET", "/cluster/ha/status/current", h_ha_status},
    {"GET", "/nodes/{node}/disks/list", h_disks},
    {"GET", "/nodes/{node}/network", h_network},
    {NULL, NULL, NULL},
};
