/* state: the simulated fleet — nodes, storages, VMs and their configs, file
 * locks — and its JSON form for /_sim/state and --state-dir. */
#include "sim/sim.h"
#include "sim/guestnet.h"
#include "sim/perm.h"
#include "sim/vmops.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "common/jsonw.h"
#include "sim/sjson.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

double sim_rrd_now(const struct sim *s)
{
    if (s->o.pvestatd_cycle > 0)
        return s->rrd.t;
    return floor(sim_now(s) / SIM_RRD_STEP) * SIM_RRD_STEP;
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

/* ---- VMID index ---------------------------------------------------- */

static size_t vm_bucket(const struct sim *s, int vmid)
{
    return ((uint32_t)vmid * 2654435761u) & (s->vm_index_cap - 1);
}

static void index_grow(struct sim *s)
{
    size_t cap = s->vm_index_cap ? s->vm_index_cap * 2 : 1024;
    free(s->vm_index);
    s->vm_index = xcalloc(cap, sizeof *s->vm_index);
    s->vm_index_cap = cap;
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        size_t b = vm_bucket(s, v->vmid);
        v->hnext = s->vm_index[b];
        s->vm_index[b] = v;
    }
}

struct sim_vm *sim_vm_find(struct sim *s, struct sim_node *n, int vmid)
{
    if (!s->vm_index_cap)
        return NULL;
    for (struct sim_vm *v = s->vm_index[vm_bucket(s, vmid)]; v; v = v->hnext)
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
    if (s->vms)
        s->vms->prev = v;
    s->vms = v;
    s->nvms++;
    if (s->nvms > s->vm_index_cap) {
        index_grow(s); /* links v too */
    } else {
        size_t b = vm_bucket(s, vmid);
        v->hnext = s->vm_index[b];
        s->vm_index[b] = v;
    }
    s->dirty = true;
    s->gen++;
    sim_history_made(s, v);
    return v;
}

void sim_vm_unlink(struct sim *s, struct sim_vm *vm)
{
    if (vm->prev)
        vm->prev->next = vm->next;
    else if (s->vms == vm)
        s->vms = vm->next;
    else
        return; /* not linked */
    sim_history_gone(s, vm);
    if (vm->next)
        vm->next->prev = vm->prev;
    for (struct sim_vm **pp = &s->vm_index[vm_bucket(s, vm->vmid)]; *pp; pp = &(*pp)->hnext)
        if (*pp == vm) {
            *pp = vm->hnext;
            break;
        }
    s->nvms--;
    free(vm->d.text);
    json_decref(vm->conf);
    json_decref(vm->pending);
    json_decref(vm->pending_delete);
    json_decref(vm->snaps);
    json_decref(vm->origin);
    guestnet_free(vm);
    free(vm);
    s->dirty = true;
    s->gen++;
}

/* The config as PVE writes it to /etc/pve: "key: value" lines, the
 * description as leading '#' comment lines. */
/* The [PENDING] section qemu-server's write_vm_config writes after the
 * main one when changes wait for a reboot: its values, then "delete:" with
 * the keys to remove. Part of the file, so a pending change moves the
 * digest (a write carrying the digest of before it is refused). */
static void pending_text(const struct sim_vm *vm, struct buf *b)
{
    size_t nd = json_array_size(vm->pending_delete);
    if (!json_object_size(vm->pending) && !nd)
        return;
    buf_printf(b, "\n[PENDING]\n");
    const char *k;
    json_t *v;
    json_object_foreach(vm->pending, k, v)
    {
        if (json_is_string(v))
            buf_printf(b, "%s: %s\n", k, json_string_value(v));
        else if (json_is_integer(v))
            buf_printf(b, "%s: %lld\n", k, (long long)json_integer_value(v));
    }
    for (size_t i = 0; i < nd; i++)
        buf_printf(b, "%s%s",
                   i ? "," : "delete: ", json_string_value(json_array_get(vm->pending_delete, i)));
    if (nd)
        buf_printf(b, "\n");
}

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
    pending_text(vm, b);
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

static bool in_array(json_t *a, const char *k)
{
    size_t i;
    json_t *d;
    json_array_foreach(a, i, d) if (strcmp(json_string_value(d), k) == 0) return true;
    return false;
}

json_t *sim_pending_array(json_t *conf, json_t *pending, json_t *pending_delete, const char *digest)
{
    json_t *r = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v)
    {
        json_t *e = json_pack("{s:s,s:O}", "key", k, "value", v);
        json_t *p = json_object_get(pending, k);
        if (p)
            json_object_set(e, "pending", p);
        if (in_array(pending_delete, k))
            json_object_set_new(e, "delete", json_integer(1));
        json_array_append_new(r, e);
    }
    /* load_config's digest is one of the config's keys */
    json_array_append_new(r, json_pack("{s:s,s:s}", "key", "digest", "value", digest));
    json_object_foreach(pending, k, v)
    {
        if (!json_object_get(conf, k))
            json_array_append_new(r, json_pack("{s:s,s:O}", "key", k, "pending", v));
    }
    size_t i;
    json_t *d;
    json_array_foreach(pending_delete, i, d)
    {
        const char *dk = json_string_value(d);
        if (!json_object_get(conf, dk))
            json_array_append_new(r, json_pack("{s:s,s:i}", "key", dk, "delete", 1));
    }
    return r;
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
    const char *p = drive ? strstr(drive, "size=") : NULL; /* a container being made has none */
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

int64_t sim_volume_size(struct sim *s, const char *drive)
{
    int64_t n = drive ? sim_disk_size(drive) : 0;
    char vol[160];
    size_t vl = drive ? strcspn(drive, ",") : 0;
    if (n || !vl || vl >= sizeof vol || !s->vol_sizes)
        return n;
    snprintf(vol, sizeof vol, "%.*s", (int)vl, drive);
    return json_integer_value(json_object_get(s->vol_sizes, vol));
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
    if (st) {
        sim_node_agg(s);
        return sim_bytes_add(st->base_used, n->agg.st_used[st - n->st]);
    }
    /* not one of the node's storages: what its VMs' disks name anyway */
    int64_t used = 0;
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
                used = sim_bytes_add(used, sim_disk_size(json_string_value(val)));
            free(sid);
        }
        used = sim_bytes_add(used, vmops_snap_storage(v->conf, v->snaps, storage, false));
    }
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next) {
        if (ct->node != n)
            continue;
        const char *k;
        json_t *val;
        json_object_foreach(ct->conf, k, val)
        {
            if (!sim_ct_volume_key(k) || !json_is_string(val))
                continue;
            char *sid = sim_disk_storage(json_string_value(val));
            if (sid && strcmp(sid, storage) == 0)
                used = sim_bytes_add(used, sim_disk_size(json_string_value(val)));
            free(sid);
        }
        used = sim_bytes_add(used, vmops_snap_storage(ct->conf, ct->snaps, storage, true));
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

int64_t sim_json_int(json_t *v, int64_t dflt)
{
    if (json_is_integer(v))
        return json_integer_value(v);
    return json_is_string(v) ? atoll(json_string_value(v)) : dflt;
}

int64_t sim_memory_mib(json_t *m, int64_t dflt)
{
    const char *p = json_string_value(m);
    if (p && str_starts(p, "current="))
        return atoll(p + 8);
    return sim_json_int(m, dflt);
}

int64_t sim_vm_maxmem(const struct sim_vm *vm)
{
    return sim_memory_mib(json_object_get(vm->conf, "memory"), 512) * MiB;
}

int64_t sim_vm_maxdisk(const struct sim_vm *vm)
{
    const char *boot = sim_vm_bootdisk(vm);
    return boot ? sim_disk_size(json_string_value(json_object_get(vm->conf, boot))) : 0;
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
    sim_node_agg(s);
    return n->agg.mem_used;
}

/* ---- derived values and the world generation ------------------------- */

void sim_world_begin(struct sim *s)
{
    s->gen++;
    s->changing++;
}

void sim_world_end(struct sim *s)
{
    if (s->changing > 0)
        s->changing--;
    s->gen++;
}

void sim_world_touch(struct sim *s)
{
    s->gen++;
}

/* The node's storage a drive value ("local-lvm:vm-100-disk-0,size=32G")
 * lives on: its index in n->st, or -1. */
static int drive_storage(const struct sim_node *n, const char *drive)
{
    size_t l = strcspn(drive, ":,");
    if (drive[l] != ':')
        return -1;
    for (int i = 0; i < n->nst; i++)
        if (strlen(n->st[i].id) == l && memcmp(n->st[i].id, drive, l) == 0)
            return i;
    return -1;
}

/* The string members of d as JSON literals (see struct sim_vm_derived). A
 * value too long for the lengths' type is cut (never in practice: PVE
 * bounds names to 128 characters and tags to a few hundred). */
static void derive_text(struct sim_vm *vm, struct sim_vm_derived *d)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    const char *name = json_string_value(json_object_get(vm->conf, "name"));
    const char *lock = json_string_value(json_object_get(vm->conf, "lock"));
    const char *tags = json_string_value(json_object_get(vm->conf, "tags"));
    size_t at[4];
    at[0] = 0;
    if (name) {
        jsonw_str(&b, name, strnlen(name, 4096));
    } else {
        char nm[32];
        snprintf(nm, sizeof nm, "VM %d", vm->vmid);
        sj_str(&b, nm);
    }
    at[1] = b.len;
    if (lock)
        jsonw_str(&b, lock, strnlen(lock, 4096));
    at[2] = b.len;
    if (tags)
        jsonw_str(&b, tags, strnlen(tags, 8192));
    at[3] = b.len;
    free(d->text);
    d->text = buf_take(&b);
    d->name = d->text;
    d->name_len = (unsigned short)(at[1] - at[0]);
    d->lock = lock ? d->text + at[1] : NULL;
    d->lock_len = (unsigned short)(at[2] - at[1]);
    d->tags = tags ? d->text + at[2] : NULL;
    d->tags_len = (unsigned short)(at[3] - at[2]);
}

static void derive(struct sim *s, struct sim_vm *vm, struct sim_vm_derived *d)
{
    json_t *c = vm->conf;
    d->maxmem = sim_vm_maxmem(vm);
    d->cpus = sim_vm_cpus(vm);
    d->maxdisk = sim_vm_maxdisk(vm);
    json_t *t = json_object_get(c, "template");
    d->template = json_is_true(t) || json_integer_value(t) != 0 ||
                  (json_is_string(t) && strcmp(json_string_value(t), "1") == 0);
    derive_text(vm, d);
    memset(d->st_used, 0, sizeof d->st_used);
    const char *k;
    json_t *val;
    json_object_foreach(c, k, val)
    {
        bool unused = str_starts(k, "unused");
        if (!(is_disk_key(k) || unused) || !json_is_string(val))
            continue;
        int i = drive_storage(vm->node, json_string_value(val));
        if (i < 0)
            continue;
        if (!unused) /* a drive without size= takes its volume's room all the same */
            d->st_used[i] =
                sim_bytes_add(d->st_used[i], sim_volume_size(s, json_string_value(val)));
        else if (s->vol_sizes) /* a detached volume keeps its room (h_qemu.c) */
            d->st_used[i] = sim_bytes_add(
                d->st_used[i],
                json_integer_value(json_object_get(s->vol_sizes, json_string_value(val))));
    }
    if (vm->snaps) /* snapshot volumes take room too */
        for (int i = 0; i < vm->node->nst; i++)
            d->st_used[i] = sim_bytes_add(
                d->st_used[i], vmops_snap_storage(vm->conf, vm->snaps, vm->node->st[i].id, false));
}

const struct sim_vm_derived *sim_vm_derive(struct sim *s, struct sim_vm *vm)
{
    if (vm->d.gen == s->gen && !s->changing)
        return &vm->d;
    derive(s, vm, &vm->d);
    vm->d.gen = s->changing ? 0 : s->gen;
    return &vm->d;
}

/* A storage a cluster marks shared (Ceph, NFS) is one pool: each node that
 * has it sees the disks of every node's VMs on it, as on a real cluster.
 * (A standalone host shares it with no node pvesim knows.) */
static void pool_shared(struct sim *s)
{
    if (s->o.standalone)
        return;
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        for (int j = 0; j < n->nst; j++) {
            if (!n->st[j].shared || n->agg.pooled[j])
                continue;
            int64_t sum = 0;
            for (int m = i; m < s->nnodes; m++) {
                struct sim_storage *st = sim_storage_find(&s->nodes[m], n->st[j].id);
                if (st && st->shared)
                    sum = sim_bytes_add(sum, s->nodes[m].agg.st_used[st - s->nodes[m].st]);
            }
            for (int m = i; m < s->nnodes; m++) {
                struct sim_storage *st = sim_storage_find(&s->nodes[m], n->st[j].id);
                if (st && st->shared) {
                    s->nodes[m].agg.st_used[st - s->nodes[m].st] = sum;
                    s->nodes[m].agg.pooled[st - s->nodes[m].st] = true;
                }
            }
        }
    }
}

void sim_node_agg(struct sim *s)
{
    if (s->nnodes && s->nodes[0].agg.gen == s->gen && !s->changing)
        return;
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        memset(&n->agg, 0, sizeof n->agg);
        n->agg.mem_used = n->mem_base_used;
    }
    /* the node's figures are the host's: its containers' memory and volumes count as a VM's */
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next) {
        struct sim_node *n = ct->node;
        n->agg.mem_used = sim_bytes_add(n->agg.mem_used, sim_ct_mem(ct));
        n->agg.busy_cpus += sim_ct_busy_cpus(ct);
        const char *k;
        json_t *val;
        json_object_foreach(ct->conf, k, val)
        {
            int i = sim_ct_volume_key(k) && json_is_string(val)
                        ? drive_storage(n, json_string_value(val))
                        : -1;
            if (i >= 0)
                n->agg.st_used[i] =
                    sim_bytes_add(n->agg.st_used[i], sim_volume_size(s, json_string_value(val)));
        }
        if (ct->snaps) /* volumes only its snapshots still hold */
            for (int i = 0; i < n->nst; i++)
                n->agg.st_used[i] = sim_bytes_add(
                    n->agg.st_used[i], vmops_snap_storage(ct->conf, ct->snaps, n->st[i].id, true));
    }
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone)
            continue;
        const struct sim_vm_derived *d = sim_vm_derive(s, v);
        struct sim_node *n = v->node;
        if (v->power != VM_STOPPED || v->starting)
            n->agg.mem_used = sim_bytes_add(n->agg.mem_used, d->maxmem);
        if (v->power == VM_RUNNING)
            n->agg.busy_cpus += d->cpus;
        for (int i = 0; i < n->nst; i++)
            n->agg.st_used[i] = sim_bytes_add(n->agg.st_used[i], d->st_used[i]);
    }
    pool_shared(s);
    uint64_t g = s->changing ? 0 : s->gen;
    for (int i = 0; i < s->nnodes; i++)
        s->nodes[i].agg.gen = g;
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
    struct timespec deadline = deadline_in_ms(sim_real_ms(s, timeout));
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
    snprintf(buf, sizeof buf, "base-%d-disk-0", vmid);
    v->origin = json_pack("{s:s}", buf, t->os); /* what its clones install */
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
    sim_history_sizes_all(s);
    return 0;
}

/* ---- JSON state ---------------------------------------------------- */

const char *sim_power_name(enum vm_power p)
{
    return p == VM_RUNNING ? "running" : p == VM_PAUSED ? "paused" : "stopped";
}

static const char *node_state_name(enum node_state st)
{
    return st == NODE_ONLINE ? "online" : st == NODE_OFFLINE ? "offline" : "blackhole";
}

/* One VM of the state file. */
static void state_vm(struct buf *b, const struct sim_vm *v)
{
    sj_lit(b, "{\"vmid\":");
    sj_int(b, v->vmid);
    sj_lit(b, ",\"node\":");
    sj_str(b, v->node->name);
    sj_lit(b, ",\"power\":");
    sj_str(b, sim_power_name(v->power));
    sj_lit(b, ",\"conf\":");
    sj_json(b, v->conf);
    sj_lit(b, ",\"pending\":");
    sj_json(b, v->pending);
    sj_lit(b, ",\"pending_delete\":");
    sj_json(b, v->pending_delete);
    sj_lit(b, v->ha ? ",\"ha\":true,\"ha_state\":" : ",\"ha\":false,\"ha_state\":");
    sj_str(b, v->ha_state);
    if (v->ha_request[0]) {
        sj_lit(b, ",\"ha_request\":");
        sj_str(b, v->ha_request);
    }
    sj_lit(b, v->acpi ? ",\"acpi\":true,\"flock_shared\":" : ",\"acpi\":false,\"flock_shared\":");
    sj_int(b, v->fl.shared);
    sj_lit(b, ",\"flock_exclusive\":");
    sj_int(b, v->fl.exclusive);
    if (v->snaps && json_object_size(v->snaps)) {
        sj_lit(b, ",\"snapshots\":");
        sj_json(b, v->snaps);
    }
    if (v->origin && json_object_size(v->origin)) {
        sj_lit(b, ",\"origin\":");
        sj_json(b, v->origin);
    }
    buf_addc(b, '}');
}

/* One container of the state file: as a VM's record, its `running` for
 * `power` (a container is never paused). */
static void state_ct(struct buf *b, const struct sim_ct *ct)
{
    sj_lit(b, "{\"vmid\":");
    sj_int(b, ct->vmid);
    sj_lit(b, ",\"node\":");
    sj_str(b, ct->node->name);
    sj_lit(b, ",\"power\":");
    sj_str(b, ct->running ? "running" : "stopped");
    sj_lit(b, ",\"conf\":");
    sj_json(b, ct->conf);
    sj_lit(b, ",\"pending\":");
    sj_json(b, ct->pending);
    sj_lit(b, ",\"pending_delete\":");
    sj_json(b, ct->pending_delete);
    sj_lit(b, ",\"flock_exclusive\":");
    sj_int(b, ct->fl.exclusive);
    if (ct->checkpointed)
        sj_lit(b, ",\"checkpointed\":true");
    if (ct->snaps && json_object_size(ct->snaps)) {
        sj_lit(b, ",\"snapshots\":");
        sj_json(b, ct->snaps);
    }
    buf_addc(b, '}');
}

static void state_task(struct buf *b, const struct sim_task *t)
{
    sj_lit(b, "{\"upid\":");
    sj_str(b, t->upid);
    sj_lit(b, ",\"node\":");
    sj_str(b, t->node->name);
    sj_lit(b, ",\"type\":");
    sj_str(b, t->type);
    sj_lit(b, ",\"id\":");
    sj_str(b, t->id);
    sj_lit(b, ",\"user\":");
    sj_str(b, t->user);
    sj_lit(b, ",\"starttime\":");
    sj_int(b, t->starttime);
    sj_lit(b, t->running ? ",\"running\":true,\"log\":" : ",\"running\":false,\"log\":");
    sj_json(b, t->log);
    if (t->exitstatus) {
        sj_lit(b, ",\"exitstatus\":");
        sj_str(b, t->exitstatus);
        sj_lit(b, ",\"endtime\":");
        sj_int(b, t->endtime);
    }
    buf_addc(b, '}');
}

/* The name of an access-control world in the state file: "cluster", or the
 * standalone host's node name (an index would move with --nodes). */
static const char *world_name(struct sim *s, int w)
{
    return s->o.standalone ? s->nodes[w].name : "cluster";
}

/* "access": the worlds whose ACL or roles the API changed (perm.h), each
 * {"world", "roles", "acl"}; left out when there is none, so that a state
 * file without it means "as the flags say" (and older files read as that). */
static void state_access(struct sim *s, struct buf *b)
{
    json_t *a = json_array();
    for (int w = 0; w < perm_nworlds(s->perm); w++) {
        json_t *ws = perm_world_state(s->perm, w);
        if (!ws)
            continue;
        json_object_set_new(ws, "world", json_string(world_name(s, w)));
        json_array_append_new(a, ws);
    }
    if (json_array_size(a)) {
        sj_lit(b, ",\n\"access\":");
        sj_json(b, a);
    }
    json_decref(a);
}

/* Hand what b holds to f once it is big (f NULL: keep it all in b). */
static void state_flush(struct buf *b, FILE *f, size_t above)
{
    if (f && b->len > above) {
        fwrite(b->data, 1, b->len, f);
        buf_reset(b);
    }
}

void sim_state_write(struct sim *s, struct buf *b, FILE *f)
{
    sj_lit(b, "{\"mode\":");
    sj_str(b, s->o.standalone ? "standalone" : "cluster");
    sj_lit(b, ",\"pve_version\":");
    sj_int(b, s->o.pve_version);
    sj_lit(b, ",\"time_scale\":");
    sj_real(b, s->o.time_scale);
    sj_lit(b, ",\"nodes\":[");
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        sj_lit(b, i ? ",\n{\"name\":" : "\n{\"name\":");
        sj_str(b, n->name);
        sj_lit(b, ",\"state\":");
        sj_str(b, node_state_name(n->state));
        sj_lit(b, ",\"cpus\":");
        sj_int(b, n->cpus);
        sj_lit(b, ",\"mem_total\":");
        sj_int(b, n->mem_total);
        sj_lit(b, ",\"mem_used\":");
        sj_int(b, sim_node_mem_used(s, n));
        sj_lit(b, ",\"bandwidth\":");
        sj_real(b, n->bandwidth);
        sj_lit(b, ",\"port\":");
        sj_int(b, n->port);
        sj_lit(b, ",\"storages\":[");
        for (int j = 0; j < n->nst; j++) {
            struct sim_storage *st = &n->st[j];
            sj_lit(b, j ? ",{\"id\":" : "{\"id\":");
            sj_str(b, st->id);
            sj_lit(b, ",\"type\":");
            sj_str(b, st->type);
            sj_lit(b, ",\"content\":");
            sj_str(b, st->content);
            sj_lit(b, ",\"total\":");
            sj_int(b, st->total);
            sj_lit(b, ",\"base_used\":");
            sj_int(b, st->base_used);
            sj_lit(b, ",\"used\":");
            sj_int(b, sim_storage_used(s, n, st->id));
            buf_addc(b, '}');
        }
        sj_lit(b, "]}");
    }
    sj_lit(b, "],\n\"vms\":[");
    bool first = true;
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone)
            continue;
        sj_lit(b, first ? "\n" : ",\n");
        first = false;
        state_vm(b, v);
        state_flush(b, f, 1 << 20);
    }
    sj_lit(b, "],\n\"containers\":[");
    first = true;
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next) {
        sj_lit(b, first ? "\n" : ",\n");
        first = false;
        state_ct(b, ct);
        state_flush(b, f, 1 << 20);
    }
    sj_lit(b, "],\n\"pools\":");
    sj_json(b, s->pools);
    state_access(s, b);
    sj_lit(b, ",\n\"tasks\":[");
    int kept = 0;
    for (struct sim_task *t = s->tasks; t && kept < 2000; t = t->next, kept++) {
        sj_lit(b, kept ? ",\n" : "\n");
        state_task(b, t);
        state_flush(b, f, 1 << 20);
    }
    sj_lit(b, "]}\n");
    state_flush(b, f, 0);
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
    char *tmp = xasprintf("%s.tmp", path);
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    int rc = -1;
    FILE *f = fopen(tmp, "w");
    if (f) {
        sim_state_write(s, &b, f);
        rc = ferror(f) ? -1 : 0;
        if (fclose(f) != 0)
            rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc)
        log_error("sim", "cannot save state to %s: %s", path, strerror(errno));
    buf_release(&b);
    free(tmp);
    return rc;
}

/* Restore node states, VMs and containers (tasks that were running are not resumed: a
 * restarted node has lost its workers, and their VMs keep their last state). */
static void load_node(struct sim *s, json_t *jn)
{
    struct sim_node *n = sim_node_find(s, json_string_value(json_object_get(jn, "name")));
    const char *state = json_string_value(json_object_get(jn, "state"));
    if (!n || !state)
        return;
    n->state = strcmp(state, "offline") == 0     ? NODE_OFFLINE
               : strcmp(state, "blackhole") == 0 ? NODE_BLACKHOLE
                                                 : NODE_ONLINE;
}

/* A VM of the state file: what its JSON object says, taken out of it (the
 * object itself is freed where it was parsed, so that the parse's own
 * memory is reused there; see load_vms). */
struct vm_rec {
    int vmid;
    char node[64];
    enum vm_power power;
    bool ha, acpi;
    char ha_state[16], ha_request[80];
    json_t *conf, *pending, *pending_delete, *snaps, *origin; /* references, or NULL */
};

static void vm_rec_take(json_t *jv, struct vm_rec *r)
{
    memset(r, 0, sizeof *r);
    const char *node = json_string_value(json_object_get(jv, "node"));
    snprintf(r->node, sizeof r->node, "%s", node ? node : "");
    r->vmid = (int)json_integer_value(json_object_get(jv, "vmid"));
    r->power = power_parse(json_string_value(json_object_get(jv, "power")));
    r->ha = json_is_true(json_object_get(jv, "ha"));
    const char *hs = json_string_value(json_object_get(jv, "ha_state"));
    snprintf(r->ha_state, sizeof r->ha_state, "%s", hs ? hs : "");
    const char *hr = json_string_value(json_object_get(jv, "ha_request"));
    snprintf(r->ha_request, sizeof r->ha_request, "%s", hr ? hr : "");
    r->acpi = !json_is_false(json_object_get(jv, "acpi"));
    json_t *v;
    if (json_is_object(v = json_object_get(jv, "conf")))
        r->conf = json_incref(v);
    if (json_is_object(v = json_object_get(jv, "pending")) && json_object_size(v))
        r->pending = json_incref(v);
    if (json_is_array(v = json_object_get(jv, "pending_delete")) && json_array_size(v))
        r->pending_delete = json_incref(v);
    if (json_is_object(v = json_object_get(jv, "snapshots")) && json_object_size(v))
        r->snaps = json_incref(v);
    if (json_is_object(v = json_object_get(jv, "origin")) && json_object_size(v))
        r->origin = json_deep_copy(v);
}

static void vm_rec_drop(struct vm_rec *r)
{
    json_decref(r->conf);
    json_decref(r->pending);
    json_decref(r->pending_delete);
    json_decref(r->snaps);
    json_decref(r->origin);
    memset(r, 0, sizeof *r);
}

/* Make the VM (the record's references are used up). */
static void vm_rec_load(struct sim *s, struct vm_rec *r)
{
    struct sim_node *n = sim_node_find(s, r->node);
    if (!n || r->vmid < 100) {
        vm_rec_drop(r);
        return;
    }
    struct sim_vm *v = sim_vm_new(s, n, r->vmid);
    if (r->conf) { /* take the parsed config as it is */
        json_decref(v->conf);
        v->conf = r->conf;
    }
    if (r->pending)
        json_object_update(v->pending, r->pending);
    if (r->pending_delete)
        json_array_extend(v->pending_delete, r->pending_delete);
    json_decref(r->pending);
    json_decref(r->pending_delete);
    sim_vm_set_power(s, v, r->power);
    v->ha = r->ha;
    snprintf(v->ha_state, sizeof v->ha_state, "%s", r->ha_state);
    snprintf(v->ha_request, sizeof v->ha_request, "%s", r->ha_request);
    v->acpi = r->acpi;
    v->snaps = r->snaps;
    if (r->origin) { /* a restored template keeps what it installs */
        json_decref(v->origin);
        v->origin = r->origin;
    }
    v->started = sim_now(s);
    /* a config lock left by a task that died with the process stays, as on
     * a real node after a crash; clone placeholders are kept too */
    memset(r, 0, sizeof *r);
}

/* The state file's containers replace the fleet's (a destroyed one stays
 * gone, one made through the API comes back). As for VMs, the tasks that
 * ran are not resumed: the container keeps its last power state and any
 * `lock` a worker wrote (a create under way: `lock: create` and what it had
 * written, as a clone's placeholder VM is kept). A record naming no node of
 * the fleet, or a VMID already taken, is skipped. */
static void load_ct(struct sim *s, json_t *jc)
{
    struct sim_node *n = sim_node_find(s, json_string_value(json_object_get(jc, "node")));
    json_int_t vmid = json_integer_value(json_object_get(jc, "vmid"));
    json_t *conf = json_object_get(jc, "conf"), *pend = json_object_get(jc, "pending");
    json_t *del = json_object_get(jc, "pending_delete");
    if (!n || vmid < 100 || vmid > 999999999 || !json_is_object(conf) ||
        sim_vmid_used(s, n, (int)vmid))
        return;
    struct sim_ct *ct = sim_ct_new(s, n, (int)vmid);
    json_object_update(ct->conf, conf);
    if (json_is_object(pend))
        json_object_update(ct->pending, pend);
    size_t i;
    json_t *d;
    json_array_foreach(del, i, d)
    {
        if (json_is_string(d))
            json_array_append(ct->pending_delete, d);
    }
    json_t *snaps = json_object_get(jc, "snapshots");
    if (json_is_object(snaps) && json_object_size(snaps))
        ct->snaps = json_deep_copy(snaps);
    const char *power = json_string_value(json_object_get(jc, "power"));
    ct->running = power && strcmp(power, "running") == 0;
    ct->checkpointed = !ct->running && json_is_true(json_object_get(jc, "checkpointed"));
    ct->started = sim_now(s);
}

static void load_cts(struct sim *s, json_t *cts)
{
    sim_cts_clear(s);
    size_t i;
    json_t *jc;
    json_array_foreach(cts, i, jc) load_ct(s, jc);
}

/* The pools (user.cfg) as saved: those made through the API, and who is in each. */
static void load_pools(struct sim *s, json_t *pools)
{
    json_decref(s->pools);
    s->pools = json_object();
    const char *id;
    json_t *p;
    json_object_foreach(pools, id, p)
    {
        json_t *vms = json_object_get(p, "vms"), *comment = json_object_get(p, "comment");
        if (!*id || strlen(id) > 64 || !json_is_array(vms))
            continue;
        json_t *np = json_pack("{s:[]}", "vms");
        if (json_is_string(comment))
            json_object_set(np, "comment", comment);
        size_t i;
        json_t *v;
        json_array_foreach(vms, i, v)
        {
            if (json_is_integer(v))
                json_array_append(json_object_get(np, "vms"), v);
        }
        json_object_set_new(s->pools, id, np);
    }
}

/* The saved access-control worlds over those the flags made: a world of the
 * file that this start has not (another mode, a host gone) is left out. */
static void load_access(struct sim *s, json_t *a)
{
    size_t i;
    json_t *ws;
    json_array_foreach(a, i, ws)
    {
        const char *name = json_string_value(json_object_get(ws, "world"));
        int w = -1;
        if (name && !s->o.standalone && strcmp(name, "cluster") == 0)
            w = 0;
        else if (name && s->o.standalone && sim_node_find(s, name))
            w = sim_node_find(s, name)->idx;
        if (w < 0) {
            log_warn("sim", "state: access control of '%s' left out: no such %s", name ? name : "?",
                     s->o.standalone ? "host" : "cluster");
            continue;
        }
        perm_world_load(s->perm, w, ws);
    }
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* One JSON value at *p (jansson stops after it); NULL with *err on error. */
static json_t *load_one(const char **p, const char *base, const char *end, const char *path,
                        char **err)
{
    json_error_t je;
    json_t *v = json_loadb(*p, (size_t)(end - *p), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
    if (!v) {
        *err = xasprintf("%s: byte %ld: %s", path, (long)(*p - base) + je.position, je.text);
        return NULL;
    }
    *p += je.position;
    return v;
}

/* The whole file mapped read-only (never copied: 50 MB at 100,000 VMs);
 * NULL with errno. An empty file maps to a static "". Unmap with
 * unslurp(text, len). */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *p = NULL;
    if (fstat(fd, &st) == 0) {
        *len = (size_t)st.st_size;
        p = *len ? mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : (char *)"";
        if (p == MAP_FAILED)
            p = NULL;
    }
    int e = errno;
    close(fd);
    errno = e;
    return p;
}

static void unslurp(char *text, size_t len)
{
    if (len)
        munmap(text, len);
}

/* ---- the "vms" array, parsed on two threads -----------------------------
 * Parsing is most of a big start-up (100,000 VMs: 50 MB of JSON): a second
 * thread parses from a VM object near the middle of the array while this one
 * parses up to it. Its work is used only if this thread's own parse lands
 * exactly where it began (a value boundary): else (the match was inside a
 * VM) it is thrown away and the parse goes on here. */

struct vm_half {
    const char *from, *end; /* in: where to start; the text's end */
    const char *stop;       /* out: just after the array's ']' */
    struct vm_rec *v;       /* out: the VMs parsed, in order */
    size_t n, cap;
    bool ok;
};

/* Where a VM object starts near the middle of [p, end), just after a ','
 * and blanks; NULL when none is found within 1 MiB (or the text is small). */
static const char *vm_split(const char *p, const char *end)
{
    static const char head[] = "{\"vmid\":";
    if (end - p < (2 << 20))
        return NULL;
    const char *q = p + (end - p) / 2, *lim = q + (1 << 20);
    while ((q = memchr(q, '{', (size_t)(lim - q))) && end - q > (ptrdiff_t)sizeof head) {
        if (memcmp(q, head, sizeof head - 1) == 0) {
            const char *b = q;
            while (b > p && (b[-1] == ' ' || b[-1] == '\n' || b[-1] == '\r' || b[-1] == '\t'))
                b--;
            if (b > p && b[-1] == ',')
                return q;
        }
        q++;
    }
    return NULL;
}

static void *vm_half_main(void *arg)
{
    struct vm_half *h = arg;
    const char *p = h->from;
    json_error_t je;
    for (;;) {
        json_t *v =
            json_loadb(p, (size_t)(h->end - p), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
        if (!v)
            return NULL;
        if (h->n == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 1024;
            h->v = xrealloc(h->v, h->cap * sizeof *h->v);
        }
        vm_rec_take(v, &h->v[h->n++]);
        json_decref(v);
        p = skip_ws(p + je.position, h->end);
        if (p < h->end && *p == ',') {
            p = skip_ws(p + 1, h->end);
            continue;
        }
        if (p < h->end && *p == ']') {
            h->stop = p + 1;
            h->ok = true;
        }
        return NULL;
    }
}

static void vm_half_free(struct vm_half *h)
{
    for (size_t i = 0; i < h->n; i++)
        vm_rec_drop(&h->v[i]);
    free(h->v);
}

/* *p is at the array's '['; on success it ends just after its ']'. */
static int load_vms(struct sim *s, const char **pp, const char *text, const char *end,
                    const char *path, char **err)
{
    const char *p = skip_ws(*pp + 1, end);
    struct vm_half h = {.from = vm_split(p, end), .end = end};
    pthread_t th;
    bool running = h.from && pthread_create(&th, NULL, vm_half_main, &h) == 0;
    int rc = -1;
    while (p < end && *p != ']') {
        if (running && p >= h.from) {
            pthread_join(th, NULL);
            running = false;
            if (p == h.from && h.ok) { /* the other half, as parsed there */
                for (size_t i = 0; i < h.n; i++)
                    vm_rec_load(s, &h.v[i]);
                p = h.stop;
                rc = 0;
                goto out;
            }
        }
        json_t *jv = load_one(&p, text, end, path, err);
        if (!jv)
            goto out;
        struct vm_rec r;
        vm_rec_take(jv, &r);
        json_decref(jv);
        vm_rec_load(s, &r);
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    p++;
    rc = 0;
out:
    if (running)
        pthread_join(th, NULL);
    vm_half_free(&h);
    *pp = p;
    return rc;
}

/* The state file is read member by member and its "vms" array VM by VM, so
 * that a fleet of 100,000 VMs never exists as one jansson tree: the peak is
 * the file's text plus one VM. */
int sim_state_load(struct sim *s, const char *path, char **err)
{
    size_t len = 0;
    char *text = slurp(path, &len);
    if (!text) {
        *err = xasprintf("%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    const char *p = text, *end = text + len;
    while (s->vms)
        sim_vm_unlink(s, s->vms);
    p = skip_ws(p, end);
    if (p == end || *p != '{') {
        *err = xasprintf("%s: not a JSON object", path);
        goto out;
    }
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        json_t *k = load_one(&p, text, end, path, err);
        if (!k)
            goto out;
        bool vms = json_is_string(k) && strcmp(json_string_value(k), "vms") == 0;
        bool nodes = json_is_string(k) && strcmp(json_string_value(k), "nodes") == 0;
        bool cts = json_is_string(k) && strcmp(json_string_value(k), "containers") == 0;
        bool pools = json_is_string(k) && strcmp(json_string_value(k), "pools") == 0;
        bool access = json_is_string(k) && strcmp(json_string_value(k), "access") == 0;
        bool is_key = json_is_string(k);
        json_decref(k);
        p = skip_ws(p, end);
        if (!is_key || p == end || *p != ':') {
            *err =
                xasprintf("%s: byte %ld: expected a member name and ':'", path, (long)(p - text));
            goto out;
        }
        p = skip_ws(p + 1, end);
        if (vms && p < end && *p == '[') {
            if (load_vms(s, &p, text, end, path, err))
                goto out;
        } else {
            json_t *v = load_one(&p, text, end, path, err);
            if (!v)
                goto out;
            size_t i;
            json_t *jn;
            if (nodes)
                json_array_foreach(v, i, jn) load_node(s, jn);
            /* a state file from before containers were saved keeps the fleet's */
            if (cts && json_is_array(v))
                load_cts(s, v);
            if (pools && json_is_object(v))
                load_pools(s, v);
            /* a state file without it: the flags' ACL and roles hold */
            if (access && json_is_array(v))
                load_access(s, v);
            json_decref(v);
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    sim_world_touch(s);
    sim_history_sizes_all(s);
    rc = 0;
out:
    unslurp(text, len);
    return rc;
}
