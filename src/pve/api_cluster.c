/* api_cluster: version, nodes, node status, storage, cluster resources and
 * status, nextid, HA resources. */
#include "common/xalloc.h"
#include "pve/api_json.h"
#include "pve/pve_api.h"
#include "pve/pve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fail with PVE_E_OTHER when a result does not have the expected shape. */
static int bad_shape(struct pve_error *err, const char *what)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = PVE_E_OTHER;
        snprintf(err->message, sizeof err->message, "unexpected result for %s", what);
    }
    return PVE_E_OTHER;
}

static int invalid_arg(struct pve_error *err, const char *what)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = PVE_E_INVALID;
        snprintf(err->message, sizeof err->message, "%s", what);
    }
    return PVE_E_INVALID;
}

/* GET path and require an array; *arr is a new reference. */
static int get_array(pve_client *c, const char *path, json_t *params, json_t **arr,
                     struct pve_error *err)
{
    json_t *d = NULL;
    int rc = pve_call(c, "GET", path, params, &d, err);
    if (rc)
        return rc;
    if (!json_is_array(d)) {
        json_decref(d);
        return bad_shape(err, path);
    }
    *arr = d;
    return 0;
}

static int get_object(pve_client *c, const char *path, json_t *params, json_t **obj,
                      struct pve_error *err)
{
    json_t *d = NULL;
    int rc = pve_call(c, "GET", path, params, &d, err);
    if (rc)
        return rc;
    if (!json_is_object(d)) {
        json_decref(d);
        return bad_shape(err, path);
    }
    *obj = d;
    return 0;
}

int pve_node_time(pve_client *c, const char *node, int64_t *now, struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/time", node))
        return bad_shape(err, "node name");
    json_t *d;
    int rc = get_object(c, path, NULL, &d, err);
    if (rc)
        return rc;
    json_t *t = json_object_get(d, "time");
    if (json_is_integer(t))
        *now = json_integer_value(t);
    else
        rc = bad_shape(err, path);
    json_decref(d);
    return rc;
}

int pve_get_version(pve_client *c, struct pve_version *out, struct pve_error *err)
{
    json_t *d;
    int rc = get_object(c, "/version", NULL, &d, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    pj_str(out->version, sizeof out->version, d, "version");
    pj_str(out->release, sizeof out->release, d, "release");
    pj_str(out->repoid, sizeof out->repoid, d, "repoid");
    sscanf(out->release[0] ? out->release : out->version, "%d.%d", &out->major, &out->minor);
    json_decref(d);
    return 0;
}

static int priv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pve_priv *)a)->name, ((const struct pve_priv *)b)->name);
}

int pve_permissions(pve_client *c, const char *path, struct pve_priv **out, size_t *n,
                    struct pve_error *err)
{
    *out = NULL;
    *n = 0;
    if (!path || path[0] != '/' || strlen(path) > PVE_ACL_PATH_MAX)
        return bad_shape(err, "ACL path");
    json_t *d, *params = json_pack("{s:s}", "path", path);
    int rc = get_object(c, "/access/permissions", params, &d, err);
    json_decref(params);
    if (rc)
        return rc;
    /* {path: {priv: 0|1}}; {} when nothing is held there */
    json_t *privs = json_object_get(d, path);
    if (privs && !json_is_object(privs)) {
        json_decref(d);
        return bad_shape(err, "/access/permissions");
    }
    size_t cnt = privs ? json_object_size(privs) : 0;
    if (cnt > PVE_PRIVS_MAX)
        cnt = PVE_PRIVS_MAX;
    struct pve_priv *v = cnt ? xcalloc(cnt, sizeof *v) : NULL;
    size_t k = 0;
    const char *name;
    json_t *flag;
    json_object_foreach(privs, name, flag)
    {
        if (k == cnt)
            break;
        snprintf(v[k].name, sizeof v[k].name, "%s", name);
        v[k].propagate = json_is_true(flag) || (json_is_integer(flag) && json_integer_value(flag));
        k++;
    }
    if (k > 1)
        qsort(v, k, sizeof *v, priv_cmp);
    json_decref(d);
    *out = v;
    *n = k;
    return 0;
}

int pve_nodes(pve_client *c, struct pve_node **out, size_t *n, struct pve_error *err)
{
    json_t *a, *e;
    size_t i;
    int rc = get_array(c, "/nodes", NULL, &a, err);
    if (rc)
        return rc;
    struct pve_node *v = xcalloc(json_array_size(a) + 1, sizeof *v);
    json_array_foreach(a, i, e)
    {
        pj_str(v[i].name, sizeof v[i].name, e, "node");
        char st[16];
        pj_str(st, sizeof st, e, "status");
        v[i].online = strcmp(st, "online") == 0;
        v[i].maxcpu = (int)pj_int(e, "maxcpu", 0);
        v[i].cpu = pj_num(e, "cpu", 0);
        v[i].maxmem = pj_int(e, "maxmem", 0);
        v[i].mem = pj_int(e, "mem", 0);
        v[i].maxdisk = pj_int(e, "maxdisk", 0);
        v[i].disk = pj_int(e, "disk", 0);
        v[i].uptime = pj_int(e, "uptime", 0);
    }
    *n = json_array_size(a);
    *out = v;
    json_decref(a);
    return 0;
}

int pve_node_status(pve_client *c, const char *node, struct pve_node_status *out,
                    struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/status", node))
        return bad_shape(err, "node name");
    json_t *d;
    int rc = get_object(c, path, NULL, &d, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    json_t *mem = json_object_get(d, "memory"), *ci = json_object_get(d, "cpuinfo");
    out->cpus = (int)pj_int(ci, "cpus", 0);
    out->cpu = pj_num(d, "cpu", 0);
    out->mem_total = pj_int(mem, "total", 0);
    out->mem_used = pj_int(mem, "used", 0);
    out->mem_free = pj_int(mem, "free", out->mem_total - out->mem_used);
    out->uptime = pj_int(d, "uptime", 0);
    pj_str(out->pveversion, sizeof out->pveversion, d, "pveversion");
    json_decref(d);
    return 0;
}

static void storage_from(struct pve_storage *s, json_t *e)
{
    pj_str(s->storage, sizeof s->storage, e, "storage");
    pj_str(s->type, sizeof s->type, e, "type");
    pj_str(s->content, sizeof s->content, e, "content");
    s->shared = pj_bool(e, "shared");
    s->enabled = json_object_get(e, "enabled") ? pj_bool(e, "enabled") : true;
    s->active = json_object_get(e, "active") ? pj_bool(e, "active") : true;
    s->total = pj_int(e, "total", 0);
    s->used = pj_int(e, "used", 0);
    s->avail = pj_int(e, "avail", 0);
}

int pve_storage_list(pve_client *c, const char *node, const char *content, struct pve_storage **out,
                     size_t *n, struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/storage", node))
        return bad_shape(err, "node name");
    json_t *params = content ? json_pack("{s:s}", "content", content) : NULL;
    json_t *a, *e;
    size_t i;
    int rc = get_array(c, path, params, &a, err);
    json_decref(params);
    if (rc)
        return rc;
    struct pve_storage *v = xcalloc(json_array_size(a) + 1, sizeof *v);
    json_array_foreach(a, i, e) storage_from(&v[i], e);
    *n = json_array_size(a);
    *out = v;
    json_decref(a);
    return 0;
}

/* Does a listed volid name the volume a config's volid names? A linked
 * clone's "stor:base-8000-disk-0/vm-100-disk-0" lists as "stor:vm-100-disk-0"
 * on LVM-thin (the LV it is). */
static bool same_listed(const char *listed, const char *storage, const char *volid)
{
    if (strcmp(listed, volid) == 0)
        return true;
    size_t sl = strlen(storage);
    const char *name = volid + sl + 1, *slash = strrchr(name, '/');
    return strncmp(name, "base-", 5) == 0 && slash && strncmp(listed, storage, sl) == 0 &&
           listed[sl] == ':' && strcmp(listed + sl + 1, slash + 1) == 0;
}

int pve_volume_size(pve_client *c, const char *node, const char *storage, int vmid,
                    const char *volid, int64_t *size, struct pve_error *err)
{
    char path[384];
    *size = 0;
    size_t sl = strlen(storage);
    if (strncmp(volid, storage, sl) != 0 || volid[sl] != ':')
        return invalid_arg(err, "volume not on that storage");
    if (pve_path(path, sizeof path, "/nodes/%s/storage/%s/content", node, storage))
        return bad_shape(err, "node or storage name");
    json_t *params = json_pack("{s:i}", "vmid", vmid);
    json_t *a, *e;
    size_t i;
    int rc = get_array(c, path, params, &a, err);
    json_decref(params);
    if (rc)
        return rc;
    bool found = false;
    json_array_foreach(a, i, e)
    {
        const char *v = json_string_value(json_object_get(e, "volid"));
        json_int_t n = json_integer_value(json_object_get(e, "size"));
        if (v && n > 0 && same_listed(v, storage, volid)) {
            *size = (int64_t)n;
            found = true;
            break;
        }
    }
    json_decref(a);
    if (found)
        return 0;
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = PVE_E_NOTFOUND;
        snprintf(err->message, sizeof err->message, "volume %.200s is not listed by %.60s on %.60s",
                 volid, storage, node);
    }
    return PVE_E_NOTFOUND;
}

int pve_storage_status(pve_client *c, const char *node, const char *storage,
                       struct pve_storage *out, struct pve_error *err)
{
    char path[384];
    if (pve_path(path, sizeof path, "/nodes/%s/storage/%s/status", node, storage))
        return bad_shape(err, "node or storage name");
    json_t *d;
    int rc = get_object(c, path, NULL, &d, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    storage_from(out, d);
    snprintf(out->storage, sizeof out->storage, "%s", storage);
    json_decref(d);
    return 0;
}

int pve_cluster_resources_each(pve_client *c, const char *type, pve_resource_fn fn, void *ud,
                               struct pve_error *err)
{
    return pve_cluster_resources_each_ex(c, type, 0, fn, ud, err);
}

int pve_cluster_resources_each_ex(pve_client *c, const char *type, unsigned flags,
                                  pve_resource_fn fn, void *ud, struct pve_error *err)
{
    json_t *params = type ? json_pack("{s:s}", "type", type) : NULL;
    struct buf raw;
    int rc =
        pve_call_raw(c, "GET", "/cluster/resources", params,
                     flags & (PVE_CALL_ONCE | PVE_CALL_FAILFAST | PVE_CALL_NORETRY), &raw, err);
    json_decref(params);
    if (rc == 0)
        rc = pve_resources_parse(raw.data, raw.len, fn, ud, err);
    buf_release(&raw);
    return rc;
}

struct collect {
    struct pve_resource *v;
    size_t n, cap;
};

static int collect_one(const struct pve_resource *r, void *ud)
{
    struct collect *k = ud;
    if (k->n + 1 >= k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->v = xrealloc(k->v, k->cap * sizeof *k->v);
    }
    k->v[k->n++] = *r;
    return 0;
}

int pve_cluster_resources(pve_client *c, const char *type, struct pve_resource **out, size_t *n,
                          struct pve_error *err)
{
    struct collect k = {0};
    int rc = pve_cluster_resources_each(c, type, collect_one, &k, err);
    if (rc) {
        free(k.v);
        return rc;
    }
    if (!k.v)
        k.v = xmalloc(sizeof *k.v);
    memset(&k.v[k.n], 0, sizeof *k.v); /* one zeroed record past the end, as before */
    *out = k.v;
    *n = k.n;
    return 0;
}

int pve_cluster_status(pve_client *c, struct pve_cluster_status *out, struct pve_error *err)
{
    json_t *a, *e;
    size_t i;
    int rc = get_array(c, "/cluster/status", NULL, &a, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    json_array_foreach(a, i, e)
    {
        char type[16];
        pj_str(type, sizeof type, e, "type");
        if (strcmp(type, "cluster") == 0) {
            out->is_cluster = true;
            pj_str(out->name, sizeof out->name, e, "name");
            out->quorate = pj_bool(e, "quorate");
        } else if (strcmp(type, "node") == 0 && out->nmembers < PVE_MAX_MEMBERS) {
            struct pve_member *m = &out->members[out->nmembers++];
            pj_str(m->name, sizeof m->name, e, "name");
            m->nodeid = (int)pj_int(e, "nodeid", 0);
            m->online = pj_bool(e, "online");
            m->local = pj_bool(e, "local");
            pj_str(m->ip, sizeof m->ip, e, "ip");
        }
    }
    if (!out->is_cluster)
        out->quorate = true; /* a standalone host is its own quorum */
    json_decref(a);
    return 0;
}

int pve_nextid(pve_client *c, int want, int *out, struct pve_error *err)
{
    json_t *params = want > 0 ? json_pack("{s:i}", "vmid", want) : NULL;
    json_t *d = NULL;
    int rc = pve_call(c, "GET", "/cluster/nextid", params, &d, err);
    json_decref(params);
    if (rc == PVE_E_INVALID && want > 0 && err && strstr(err->params, "already exists")) {
        err->cls = PVE_E_EXISTS;
        return PVE_E_EXISTS;
    }
    if (rc)
        return rc;
    json_t *wrap = json_pack("{s:o}", "id", d);
    int64_t id = pj_int(wrap, "id", -1);
    json_decref(wrap);
    if (id < 100)
        return bad_shape(err, "/cluster/nextid");
    *out = (int)id;
    return 0;
}

int pve_ha_list(pve_client *c, struct pve_ha_resource **out, size_t *n, struct pve_error *err)
{
    json_t *a, *e;
    size_t i;
    int rc = get_array(c, "/cluster/ha/resources", NULL, &a, err);
    if (rc)
        return rc;
    struct pve_ha_resource *v = xcalloc(json_array_size(a) + 1, sizeof *v);
    json_array_foreach(a, i, e)
    {
        pj_str(v[i].sid, sizeof v[i].sid, e, "sid");
        pj_str(v[i].state, sizeof v[i].state, e, "state");
        const char *colon = strchr(v[i].sid, ':');
        v[i].vmid = atoi(colon ? colon + 1 : v[i].sid);
    }
    *n = json_array_size(a);
    *out = v;
    json_decref(a);
    return 0;
}

int pve_ha_remove(pve_client *c, const char *sid, struct pve_error *err)
{
    char path[128];
    if (pve_path(path, sizeof path, "/cluster/ha/resources/%s", sid))
        return bad_shape(err, "HA resource id");
    return pve_call(c, "DELETE", path, NULL, NULL, err);
}
