/* state: the simulated fleet — nodes, storages, VMs and their configs, file
 * locks — and its JSON form for /_sim/state and --state-dir. */
#include "sim/sim.h"
#include "sim/vmops.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double sim_now(const struct sim *s)
{
    return (real_now() - s->t_origin) / s->o.time_scale;
}

long sim_real_ms(const struct sim *s, double pve_seconds)
{
    double ms = pve_seconds * s->o.time_scale * 1000.0;
    return ms < 0 ? 0 : (long)ceil(ms);
}

double sim_rand(struct sim *s)
{
    /* xorshift64*: fast, good enough for fault rates and MACs */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return (double)((x * 2685821657736338717ULL) >> 11) / (double)(1ULL << 53);
}

struct sim_node *sim_node_find(struct sim *s, const char *name)
{
    for (int i = 0; i < s->nnodes; i++)
        if (strcmp(s->nodes[i].name, name) == 0)
            return &s->nodes[i];
    return NULL;
}

struct sim_vm *sim_vm_find(struct sim *s, struct sim_node *n, int vmid)
{
    for (struct sim_vm *v = s->vms; v; v = v->next)
        if (v->vmid == vmid && !v->gone && (!n || v->node == n))
            return v;
    return NULL;
}

bool sim_vmid_used(struct sim *s, struct sim_node *n, int vmid)
{
    struct sim_node *space = s->o.standalone ? n : NULL;
    return sim_vm_find(s, space, vmid) != NULL || sim_ct_find(s, space, vmid) != NULL;
}

struct sim_vm *sim_vm_new(struct sim *s, struct sim_node *n, int vmid)
{
    struct sim_vm *v = xcalloc(1, sizeof *v);
    v->vmid = vmid;
    v->node = n;
    v->conf = json_object();
    v->pending = json_object();
    v->pending_delete = json_array();
    v->acpi = true;
    v->next = s->vms;
    s->vms = v;
    s->dirty = true;
    return v;
}

void sim_vm_unlink(struct sim *s, struct sim_vm *vm)
{
    for (struct sim_vm **pp = &s->vms; *pp; pp = &(*pp)->next) {
        if (*pp == vm) {
            *pp = vm->next;
            json_decref(vm->conf);
            json_decref(vm->pending);
            json_decref(vm->pending_delete);
            json_decref(vm->snaps);
            free(vm);
            s->dirty = true;
            return;
        }
    }
}

/* The config as PVE writes it to /etc/pve: "key: value" lines, the
 * description as leading '#' comment lines. */
static void conf_text(const struct sim_vm *vm, struct buf *b)
{
    const char *desc = json_string_value(json_object_get(vm->conf, "description"));
    if (desc) {
        for (const char *p = desc; *p;) {
            size_t n = strcspn(p, "\n");
            buf_printf(b, "#%.*s\n", (int)n, p);
            p += n;
            if (*p)
                p++;
        }
    }
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(vm->conf, tmp, k, v)
    {
        if (strcmp(k, "description") == 0)
            continue;
        if (json_is_string(v))
            buf_printf(b, "%s: %s\n", k, json_string_value(v));
        else if (json_is_integer(v))
            buf_printf(b, "%s: %lld\n", k, (long long)json_integer_value(v));
    }
    vmops_snap_text(vm, b); /* the snapshot sections */
}

char *sim_vm_digest(const struct sim_vm *vm)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    conf_text(vm, &b);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(buf_str(&b), b.len, md, &mdlen, EVP_sha1(), NULL);
    buf_release(&b);
    return hex_encode(md, mdlen);
}

bool sim_parse_size(const char *s, int64_t *bytes)
{
    if (!s || !*s)
        return false;
    if (*s == '+')
        s++;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isdigit((unsigned char)*s))
        return false;
    double mul = 1;
    switch (*end) {
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'M':
        mul = (double)MiB;
        end++;
        break;
    case 'G':
        mul = (double)GiB;
        end++;
        break;
    case 'T':
        mul = (double)GiB * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end || v * mul > 9.0e18)
        return false;
    *bytes = (int64_t)(v * mul);
    return true;
}

char *sim_fmt_size(int64_t b)
{
    static const char units[] = "KMGT";
    int u = -1;
    int64_t v = b;
    while (u < 3 && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    if (u < 0)
        return xasprintf("%lld", (long long)v);
    return xasprintf("%lld%c", (long long)v, units[u]);
}

int64_t sim_disk_size(const char *drive)
{
    const char *p = strstr(drive, "size=");
    if (!p)
        return 0;
    char tmp[32];
    size_t n = strcspn(p + 5, ",");
    if (n >= sizeof tmp)
        return 0;
    memcpy(tmp, p + 5, n);
    tmp[n] = '\0';
    int64_t v = 0;
    return sim_parse_size(tmp, &v) ? v : 0;
}

char *sim_disk_storage(const char *drive)
{
    size_t n = strcspn(drive, ":,");
    if (drive[n] != ':')
        return NULL;
    return xstrndup(drive, n);
}

static bool is_disk_key(const char *k)
{
    static const char *const pfx[] = {"scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"};
    for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++) {
        size_t l = strlen(pfx[i]);
        if (strncmp(k, pfx[i], l) == 0 && isdigit((unsigned char)k[l]))
            return true;
    }
    return false;
}

const char *sim_vm_bootdisk(const struct sim_vm *vm)
{
    const char *boot = json_string_value(json_object_get(vm->conf, "boot"));
    if (boot && str_starts(boot, "order=")) {
        static __thread char key[32];
        size_t n = strcspn(boot + 6, ";,");
        if (n < sizeof key) {
            memcpy(key, boot + 6, n);
            key[n] = '\0';
            if (json_object_get(vm->conf, key))
                return key;
        }
    }
    const char *cands[] = {"scsi0", "virtio0", "sata0", "ide0"};
    for (size_t i = 0; i < 4; i++)
        if (json_object_get(vm->conf, cands[i]))
            return cands[i];
    return NULL;
}

int64_t sim_storage_used(struct sim *s, struct sim_node *n, const char *storage)
{
    struct sim_storage *st = sim_storage_find(n, storage);
    int64_t used = st ? st->base_used : 0;
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->node != n || v->gone)
            continue;
        const char *k;
        json_t *val;
        json_object_foreach(v->conf, k, val)
        {
            if (!is_disk_key(k) || !json_is_string(val))
                continue;
            char *sid = sim_disk_storage(json_string_value(val));
            if (sid && strcmp(sid, storage) == 0)
                used += sim_disk_size(json_string_value(val));
            free(sid);
        }
        used += vmops_snap_storage(v, storage);
    }
    return used;
}

struct sim_storage *sim_storage_find(struct sim_node *n, const char *id)
{
    for (int i = 0; i < n->nst; i++)
        if (strcmp(n->st[i].id, id) == 0)
            return &n->st[i];
    return NULL;
}

int64_t sim_vm_maxmem(const struct sim_vm *vm)
{
    json_t *m = json_object_get(vm->conf, "memory");
    int64_t mb = 512;
    if (json_is_integer(m))
        mb = json_integer_value(m);
    else if (json_is_string(m)) {
        const char *p = json_string_value(m);
        if (str_starts(p, "current="))
            p += 8;
        mb = atoll(p);
    }
    return mb * MiB;
}

int sim_vm_cpus(const struct sim_vm *vm)
{
    json_t *c = json_object_get(vm->conf, "cores"), *so = json_object_get(vm->conf, "sockets");
    int cores = json_is_integer(c) ? (int)json_integer_value(c) : 1;
    int sockets = json_is_integer(so) ? (int)json_integer_value(so) : 1;
    return cores * sockets;
}

int64_t sim_node_mem_used(struct sim *s, struct sim_node *n)
{
    int64_t used = n->mem_base_used;
    for (struct sim_vm *v = s->vms; v; v = v->next)
        if (v->node == n && !v->gone && (v->power != VM_STOPPED || v->starting))
            used += sim_vm_maxmem(v);
    return used;
}

void sim_new_mac(struct sim *s, char out[18])
{
    uint32_t r = (uint32_t)(sim_rand(s) * 16777216.0);
    snprintf(out, 18, "BC:24:11:%02X:%02X:%02X", (r >> 16) & 255, (r >> 8) & 255, r & 255);
}

/* ---- file locks ---------------------------------------------------- */

const char *sim_lockfile(int vmid, char out[96])
{
    snprintf(out, 96, "/var/lock/qemu-server/lock-%d.conf", vmid);
    return out;
}

bool sim_flock_try(struct sim_vm *vm, bool exclusive)
{
    if (vm->fl.exclusive || (exclusive && vm->fl.shared > 0))
        return false;
    if (exclusive)
        vm->fl.exclusive = true;
    else
        vm->fl.shared++;
    return true;
}

bool sim_flock_wait(struct sim *s, struct sim_vm *vm, bool exclusive, double timeout)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    long ms = sim_real_ms(s, timeout);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int vmid = vm->vmid;
    struct sim_node *node = vm->node;
    for (;;) {
        /* the VM may have been destroyed while we waited */
        vm = sim_vm_find(s, node, vmid);
        if (!vm)
            return false;
        if (sim_flock_try(vm, exclusive))
            return true;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) {
            vm = sim_vm_find(s, node, vmid);
            return vm && sim_flock_try(vm, exclusive);
        }
    }
}

void sim_flock_release(struct sim *s, struct sim_vm *vm, bool exclusive)
{
    if (exclusive)
        vm->fl.exclusive = false;
    else if (vm->fl.shared > 0)
        vm->fl.shared--;
    pthread_cond_broadcast(&s->cv);
}

/* ---- fleet --------------------------------------------------------- */

static void default_storages(struct sim_node *n)
{
    n->nst = 2;
    struct sim_storage *l = &n->st[0], *lv = &n->st[1];
    snprintf(l->id, sizeof l->id, "local");
    snprintf(l->type, sizeof l->type, "dir");
    snprintf(l->content, sizeof l->content, "iso,vztmpl,backup");
    l->total = 100 * GiB;
    l->base_used = 12 * GiB;
    snprintf(lv->id, sizeof lv->id, "local-lvm");
    snprintf(lv->type, sizeof lv->type, "lvmthin");
    snprintf(lv->content, sizeof lv->content, "images,rootdir");
    lv->total = 1024 * GiB;
    lv->base_used = 0;
}

static void node_defaults(struct sim_node *n, const char *name, int idx)
{
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    n->idx = idx;
    n->cpus = 16;
    n->mem_total = 64 * GiB;
    n->mem_base_used = 2 * GiB;
    n->bandwidth = 500.0 * MiB;
    n->listener = -1;
    n->pid_next = 0x1000 + idx * 0x10000;
    n->boot = -86400; /* the fleet has been up for a day when pvesim starts */
    default_storages(n);
}

static void default_templates(struct sim *s)
{
    static const struct sim_template d[] = {
        {"ubuntu", 0, 10 * GiB, 2048, 2},
        {"debian", 1, 10 * GiB, 2048, 2},
        {"centos", 2, 16 * GiB, 2048, 2},
        {"windows", 3, 40 * GiB, 4096, 2},
    };
    s->ntpl = 4;
    memcpy(s->tpl, d, sizeof d);
}

/* Template VMIDs: 8000 + 10*node index + template index, so that every node
 * of a cluster has its own copy (templates on local storage cannot be cloned
 * across nodes) and no template falls into the usual OS ranges. */
static int tpl_vmid(const struct sim_node *n, int ti)
{
    return 8000 + 10 * n->idx + ti;
}

static void make_template(struct sim *s, struct sim_node *n, int ti)
{
    const struct sim_template *t = &s->tpl[ti];
    int vmid = t->vmid >= 100 ? t->vmid : tpl_vmid(n, ti);
    struct sim_vm *v = sim_vm_new(s, n, vmid);
    char mac[18], buf[256];
    sim_new_mac(s, mac);
    json_t *c = v->conf;
    /* names unique across the fleet: name-based clients (Packer, Terraform,
     * Ansible) take the first match, and a per-node copy named alike would
     * have them clone across nodes from local storage */
    if (t->vmid >= 100)
        snprintf(buf, sizeof buf, "tpl-%s", t->os);
    else
        snprintf(buf, sizeof buf, "tpl-%s-%s", t->os, n->name);
    json_object_set_new(c, "name", json_string(buf));
    json_object_set_new(c, "cores", json_integer(t->cores));
    json_object_set_new(c, "sockets", json_integer(1));
    if (s->o.pve_version >= 8) {
        snprintf(buf, sizeof buf, "%lld", (long long)t->memory_mb);
        json_object_set_new(c, "memory", json_string(buf));
    } else {
        json_object_set_new(c, "memory", json_integer(t->memory_mb));
    }
    /* the disks go on the node's first storage for images (local-lvm by default) */
    const char *sid = "local-lvm";
    for (int j = 0; j < n->nst; j++)
        if (strstr(n->st[j].content, "images")) {
            sid = n->st[j].id;
            break;
        }
    char *sz = sim_fmt_size(t->disk);
    snprintf(buf, sizeof buf, "%s:base-%d-disk-0,size=%s", sid, vmid, sz);
    free(sz);
    json_object_set_new(c, "scsi0", json_string(buf));
    json_object_set_new(c, "scsihw", json_string("virtio-scsi-pci"));
    snprintf(buf, sizeof buf, "%s:vm-%d-cloudinit,media=cdrom,size=4M", sid, vmid);
    json_object_set_new(c, "ide2", json_string(buf));
    snprintf(buf, sizeof buf, "virtio=%s,bridge=vmbr0", mac);
    json_object_set_new(c, "net0", json_string(buf));
    json_object_set_new(c, "boot", json_string("order=scsi0"));
    json_object_set_new(c, "ostype", json_string(strcmp(t->os, "windows") ? "l26" : "win11"));
    json_object_set_new(c, "agent", json_string("1"));
    json_object_set_new(c, "ipconfig0", json_string("ip=dhcp"));
    snprintf(buf, sizeof buf, "uuid=%08x-0000-4000-8000-%012d", (unsigned)vmid, vmid);
    json_object_set_new(c, "smbios1", json_string(buf));
    json_object_set_new(c, "template", json_integer(1));
}

static int load_fleet_file(struct sim *s, const char *path, char **err)
{
    json_error_t je;
    json_t *f = json_load_file(path, 0, &je);
    if (!f) {
        *err = xasprintf("%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    int rc = -1;
    json_t *nodes = json_object_get(f, "nodes"), *tpls = json_object_get(f, "templates");
    size_t i;
    json_t *jn;
    if (!json_is_array(nodes) || json_array_size(nodes) == 0 ||
        json_array_size(nodes) > SIM_MAX_NODES) {
        *err = xasprintf("%s: 'nodes' must be a non-empty array (at most %d)", path, SIM_MAX_NODES);
        goto out;
    }
    json_array_foreach(nodes, i, jn)
    {
        const char *name = json_string_value(json_object_get(jn, "name"));
        if (!name || !*name || strlen(name) > 60) {
            *err = xasprintf("%s: nodes[%zu].name missing or too long", path, i);
            goto out;
        }
        struct sim_node *n = &s->nodes[s->nnodes];
        node_defaults(n, name, s->nnodes);
        s->nnodes++;
        json_t *v;
        if ((v = json_object_get(jn, "cpus")))
            n->cpus = (int)json_integer_value(v);
        if ((v = json_object_get(jn, "memory_gb")))
            n->mem_total = (int64_t)(json_number_value(v) * GiB);
        if ((v = json_object_get(jn, "bandwidth_mb")))
            n->bandwidth = json_number_value(v) * MiB;
        json_t *sts = json_object_get(jn, "storages");
        if (json_is_array(sts)) {
            n->nst = 0;
            size_t j;
            json_t *js;
            json_array_foreach(sts, j, js)
            {
                if (n->nst >= SIM_MAX_STORAGES)
                    break;
                struct sim_storage *st = &n->st[n->nst++];
                memset(st, 0, sizeof *st);
                const char *id = json_string_value(json_object_get(js, "id"));
                const char *type = json_string_value(json_object_get(js, "type"));
                const char *content = json_string_value(json_object_get(js, "content"));
                snprintf(st->id, sizeof st->id, "%s", id ? id : "local-lvm");
                snprintf(st->type, sizeof st->type, "%s", type ? type : "lvmthin");
                snprintf(st->content, sizeof st->content, "%s",
                         content ? content : "images,rootdir");
                st->total = (int64_t)(json_number_value(json_object_get(js, "total_gb")) * GiB);
                st->base_used = (int64_t)(json_number_value(json_object_get(js, "used_gb")) * GiB);
                st->shared = json_is_true(json_object_get(js, "shared"));
            }
        }
    }
    if (json_is_array(tpls)) {
        s->ntpl = 0;
        json_t *jt;
        json_array_foreach(tpls, i, jt)
        {
            if (s->ntpl >= SIM_MAX_TEMPLATES)
                break;
            struct sim_template *t = &s->tpl[s->ntpl++];
            const char *os = json_string_value(json_object_get(jt, "os"));
            snprintf(t->os, sizeof t->os, "%s", os ? os : "linux");
            t->vmid = (int)json_integer_value(json_object_get(jt, "vmid"));
            json_t *d = json_object_get(jt, "disk_gb");
            t->disk = d ? (int64_t)(json_number_value(d) * GiB) : 10 * GiB;
            json_t *m = json_object_get(jt, "memory_mb");
            t->memory_mb = m ? json_integer_value(m) : 2048;
            json_t *c = json_object_get(jt, "cores");
            t->cores = c ? (int)json_integer_value(c) : 2;
        }
    }
    rc = sim_fleet_extras(s, f, path, err);
out:
    json_decref(f);
    return rc;
}

int sim_build_fleet(struct sim *s, char **err)
{
    default_templates(s);
    if (s->o.fleet_file) {
        if (load_fleet_file(s, s->o.fleet_file, err))
            return -1;
    } else {
        char *csv = xstrdup(s->o.nodes_csv ? s->o.nodes_csv : "sv1,sv2,sv3,sv4,sv5");
        char *save = NULL;
        for (char *t = strtok_r(csv, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (s->nnodes >= SIM_MAX_NODES || strlen(t) > 60 || !*t) {
                *err = xasprintf("--nodes: too many nodes or a bad name '%s'", t);
                free(csv);
                return -1;
            }
            node_defaults(&s->nodes[s->nnodes], t, s->nnodes);
            s->nnodes++;
        }
        free(csv);
    }
    for (int i = 0; i < s->nnodes; i++)
        for (int j = i + 1; j < s->nnodes; j++)
            if (strcmp(s->nodes[i].name, s->nodes[j].name) == 0) {
                *err = xasprintf("node '%s' is listed twice", s->nodes[i].name);
                return -1;
            }
    for (int i = 0; i < s->nnodes; i++)
        for (int t = 0; t < s->ntpl; t++) {
            /* an explicit template VMID in a cluster exists once, on the first node */
            if (s->tpl[t].vmid >= 100 && !s->o.standalone && i > 0)
                continue;
            make_template(s, &s->nodes[i], t);
        }
    return 0;
}

/* ---- JSON state ---------------------------------------------------- */

static const char *power_name(enum vm_power p)
{
    return p == VM_RUNNING ? "running" : p == VM_PAUSED ? "paused" : "stopped";
}

static const char *node_state_name(enum node_state st)
{
    return st == NODE_ONLINE ? "online" : st == NODE_OFFLINE ? "offline" : "blackhole";
}

json_t *sim_state_json(struct sim *s)
{
    json_t *root = json_object(), *nodes = json_array(), *vms = json_array();
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        json_t *sts = json_array();
        for (int j = 0; j < n->nst; j++) {
            struct sim_storage *st = &n->st[j];
            json_array_append_new(sts, json_pack("{s:s,s:s,s:s,s:I,s:I,s:I}", "id", st->id, "type",
                                                 st->type, "content", st->content, "total",
                                                 (json_int_t)st->total, "base_used",
                                                 (json_int_t)st->base_used, "used",
                                                 (json_int_t)sim_storage_used(s, n, st->id)));
        }
        json_array_append_new(nodes, json_pack("{s:s,s:s,s:i,s:I,s:I,s:f,s:i,s:o}", "name", n->name,
                                               "state", node_state_name(n->state), "cpus", n->cpus,
                                               "mem_total", (json_int_t)n->mem_total, "mem_used",
                                               (json_int_t)sim_node_mem_used(s, n), "bandwidth",
                                               n->bandwidth, "port", n->port, "storages", sts));
    }
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone)
            continue;
        json_array_append_new(
            vms, json_pack("{s:i,s:s,s:s,s:O,s:O,s:O,s:b,s:s,s:b,s:i,s:i}", "vmid", v->vmid, "node",
                           v->node->name, "power", power_name(v->power), "conf", v->conf, "pending",
                           v->pending, "pending_delete", v->pending_delete, "ha", v->ha, "ha_state",
                           v->ha_state, "acpi", v->acpi, "flock_shared", v->fl.shared,
                           "flock_exclusive", (int)v->fl.exclusive));
        if (v->snaps && json_object_size(v->snaps))
            json_object_set(json_array_get(vms, json_array_size(vms) - 1), "snapshots", v->snaps);
    }
    json_t *tasks = json_array();
    int kept = 0;
    for (struct sim_task *t = s->tasks; t && kept < 2000; t = t->next, kept++) {
        json_t *jt =
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:b,s:O}", "upid", t->upid, "node", t->node->name,
                      "type", t->type, "id", t->id, "user", t->user, "starttime",
                      (json_int_t)t->starttime, "running", t->running, "log", t->log);
        if (t->exitstatus) {
            json_object_set_new(jt, "exitstatus", json_string(t->exitstatus));
            json_object_set_new(jt, "endtime", json_integer(t->endtime));
        }
        json_array_append_new(tasks, jt);
    }
    json_object_set_new(root, "mode", json_string(s->o.standalone ? "standalone" : "cluster"));
    json_object_set_new(root, "pve_version", json_integer(s->o.pve_version));
    json_object_set_new(root, "time_scale", json_real(s->o.time_scale));
    json_object_set_new(root, "nodes", nodes);
    json_object_set_new(root, "vms", vms);
    json_object_set_new(root, "tasks", tasks);
    return root;
}

static enum vm_power power_parse(const char *p)
{
    if (p && strcmp(p, "running") == 0)
        return VM_RUNNING;
    if (p && strcmp(p, "paused") == 0)
        return VM_PAUSED;
    return VM_STOPPED;
}

int sim_state_save(struct sim *s, const char *path)
{
    json_t *st = sim_state_json(s);
    char *tmp = xasprintf("%s.tmp", path);
    int rc = json_dump_file(st, tmp, JSON_INDENT(1));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc)
        log_error("sim", "cannot save state to %s: %s", path, strerror(errno));
    free(tmp);
    json_decref(st);
    return rc;
}

/* Restore node states and VMs (tasks that were running are not resumed: a
 * restarted node has lost its workers, and their VMs keep their last state). */
int sim_state_load(struct sim *s, const char *path, char **err)
{
    json_error_t je;
    json_t *st = json_load_file(path, 0, &je);
    if (!st) {
        *err = xasprintf("%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    while (s->vms)
        sim_vm_unlink(s, s->vms);
    size_t i;
    json_t *jn;
    json_array_foreach(json_object_get(st, "nodes"), i, jn)
    {
        struct sim_node *n = sim_node_find(s, json_string_value(json_object_get(jn, "name")));
        const char *state = json_string_value(json_object_get(jn, "state"));
        if (!n || !state)
            continue;
        n->state = strcmp(state, "offline") == 0     ? NODE_OFFLINE
                   : strcmp(state, "blackhole") == 0 ? NODE_BLACKHOLE
                                                     : NODE_ONLINE;
    }
    json_t *jv;
    json_array_foreach(json_object_get(st, "vms"), i, jv)
    {
        struct sim_node *n = sim_node_find(s, json_string_value(json_object_get(jv, "node")));
        int vmid = (int)json_integer_value(json_object_get(jv, "vmid"));
        if (!n || vmid < 100)
            continue;
        struct sim_vm *v = sim_vm_new(s, n, vmid);
        json_object_update(v->conf, json_object_get(jv, "conf"));
        json_t *p = json_object_get(jv, "pending");
        if (json_is_object(p))
            json_object_update(v->pending, p);
        json_t *pd = json_object_get(jv, "pending_delete");
        if (json_is_array(pd))
            json_array_extend(v->pending_delete, pd);
        v->power = power_parse(json_string_value(json_object_get(jv, "power")));
        v->ha = json_is_true(json_object_get(jv, "ha"));
        const char *hs = json_string_value(json_object_get(jv, "ha_state"));
        snprintf(v->ha_state, sizeof v->ha_state, "%s", hs ? hs : "");
        v->acpi = !json_is_false(json_object_get(jv, "acpi"));
        json_t *sn = json_object_get(jv, "snapshots");
        if (json_is_object(sn) && json_object_size(sn))
            v->snaps = json_deep_copy(sn);
        v->started = sim_now(s);
        /* a config lock left by a task that died with the process stays, as on
         * a real node after a crash; clone placeholders are kept too */
    }
    json_decref(st);
    return 0;
}
