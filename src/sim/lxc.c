/* lxc: containers and resource pools, the parts of the world that
 * inventories read: containers (listed, inspected; they take VMIDs) and
 * pools (user.cfg: which guests a pool holds). Both come from the fleet file
 * ("containers", "pools"); pools also from POST /pools, and members from the
 * `pool` parameter of clone and create. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/perm.h"
#include "sim/sim.h"
#include "sim/vmops.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024LL * 1024)
#define GiB (1024LL * MiB)

struct sim_ct *sim_ct_find(struct sim *s, struct sim_node *n, int vmid)
{
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next)
        if (ct->vmid == vmid && (!n || ct->node == n))
            return ct;
    return NULL;
}

static void ct_free(struct sim_ct *ct)
{
    json_decref(ct->conf);
    json_decref(ct->pending);
    json_decref(ct->pending_delete);
    json_decref(ct->snaps);
    free(ct);
}

void sim_cts_clear(struct sim *s)
{
    while (s->cts) {
        struct sim_ct *ct = s->cts;
        s->cts = ct->next;
        ct_free(ct);
    }
    s->dirty = true;
}

void sim_cts_free(struct sim *s)
{
    sim_cts_clear(s);
    json_decref(s->pools);
    s->pools = NULL;
}

struct sim_ct *sim_ct_new(struct sim *s, struct sim_node *n, int vmid)
{
    struct sim_ct *ct = xcalloc(1, sizeof *ct);
    ct->vmid = vmid;
    ct->node = n;
    ct->conf = json_object();
    ct->pending = json_object();
    ct->pending_delete = json_array();
    ct->next = s->cts;
    s->cts = ct;
    s->dirty = true;
    return ct;
}

/* destroy_config, and remove_vm_access: out of its pool */
void sim_ct_unlink(struct sim *s, struct sim_ct *ct)
{
    for (struct sim_ct **pp = &s->cts; *pp; pp = &(*pp)->next)
        if (*pp == ct) {
            *pp = ct->next;
            break;
        }
    if (sim_pool_of(s, ct->vmid))
        sim_pool_add_vm(s, NULL, ct->vmid);
    ct_free(ct);
    s->dirty = true;
    pthread_cond_broadcast(&s->cv); /* a request waiting for its flock finds it gone */
}

char *sim_ct_digest(const struct sim_ct *ct)
{
    struct sim_vm as_file = {.conf = ct->conf,
                             .pending = ct->pending,
                             .pending_delete = ct->pending_delete,
                             .snaps = ct->snaps};
    return sim_vm_digest(&as_file);
}

const char *sim_ct_lock(const struct sim_ct *ct)
{
    return json_string_value(json_object_get(ct->conf, "lock"));
}

/* PVE::LXC::Config->config_file_lock */
const char *sim_ct_lockfile(int vmid, char out[96])
{
    snprintf(out, 96, "/run/lock/lxc/pve-config-%d.lock", vmid);
    return out;
}

bool sim_ct_flock_try(struct sim_ct *ct)
{
    if (ct->fl.exclusive)
        return false;
    ct->fl.exclusive = true;
    return true;
}

void sim_ct_flock_release(struct sim *s, struct sim_ct *ct)
{
    ct->fl.exclusive = false;
    pthread_cond_broadcast(&s->cv);
}

struct sim_ct *sim_ct_flock_wait(struct sim *s, struct sim_ct *ct, double timeout)
{
    struct timespec deadline = deadline_in_ms(sim_real_ms(s, timeout));
    int vmid = ct->vmid;
    struct sim_node *node = ct->node;
    for (;;) {
        ct = sim_ct_find(s, node, vmid); /* it may be destroyed while we wait */
        if (!ct)
            return NULL;
        if (sim_ct_flock_try(ct))
            return ct;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) {
            ct = sim_ct_find(s, node, vmid);
            return ct && sim_ct_flock_try(ct) ? ct : NULL;
        }
    }
}

/* ---- mount points and their volumes ---------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **sim_ct_sorted(json_t *j)
{
    size_t n = json_is_object(j) ? json_object_size(j) : json_array_size(j), i = 0, a;
    const char **names = xcalloc(n + 1, sizeof *names);
    const char *k;
    json_t *v;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v) names[i++] = k;
    } else {
        json_array_foreach(j, a, v) if (json_is_string(v)) names[i++] = json_string_value(v);
    }
    qsort(names, i, sizeof *names, cmp_name);
    return names;
}

/* The volume ID of a mount point's value ("local-lvm:vm-100-disk-1" of
 * "local-lvm:vm-100-disk-1,mp=/srv,size=8G"), as a new string; NULL for a
 * bind or device mount, whose "volume" is a path (parse_volume's type). */
static char *mp_volid(const char *v)
{
    return v && v[0] != '/' ? xstrndup(v, strcspn(v, ",")) : NULL;
}

/* is_volume_in_use($conf, $volid, 1, 1): a mount point of the config, of
 * its pending values or of a snapshot names the volume. */
static bool ct_volume_in_use(const struct sim_ct *ct, const char *volid)
{
    if (vmops_conf_uses_volume(true, ct->conf, volid) ||
        vmops_conf_uses_volume(true, ct->pending, volid))
        return true;
    const char *name;
    json_t *snap;
    json_object_foreach(ct->snaps, name, snap)
    {
        if (vmops_conf_uses_volume(true, snap, volid))
            return true;
    }
    return false;
}

/* A mount point's volume leaving it stays as unusedN (add_unused_volume),
 * its size kept for the storage. PVE's is_volume_in_use check before that
 * is handed the whole mpN value, which no volume ID equals: it never
 * holds, and write_pct_config drops the unusedN again when another mount
 * point still uses the volume (sim_ct_drop_reattached). */
static void detach_volume(struct sim *s, struct sim_ct *ct, const char *k)
{
    const char *v = json_string_value(json_object_get(ct->conf, k));
    char *volid = str_starts(k, "mp") ? mp_volid(v) : NULL;
    if (!volid)
        return;
    vmops_keep_volume_size(s, v);
    vmops_add_unused(ct->conf, volid);
    free(volid);
}

void sim_ct_delete_key(struct sim *s, struct sim_ct *ct, const char *k)
{
    if (str_starts(k, "unused")) {
        /* delete_mountpoint_volume: vdisk_free, the storage holds it no more */
        char *volid = mp_volid(json_string_value(json_object_get(ct->conf, k)));
        if (volid && s->vol_sizes && !ct_volume_in_use(ct, volid))
            json_object_del(s->vol_sizes, volid);
        free(volid);
    } else {
        detach_volume(s, ct, k);
    }
    json_object_del(ct->conf, k);
}

void sim_ct_set_key(struct sim *s, struct sim_ct *ct, const char *k, json_t *val)
{
    detach_volume(s, ct, k); /* apply_pending_mountpoint's `if (defined($old))` */
    json_object_set_new(ct->conf, k, val);
}

void sim_ct_drop_reattached(struct sim_ct *ct)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(ct->conf, tmp, k, v)
    {
        if (str_starts(k, "unused") && json_is_string(v) &&
            vmops_conf_uses_volume(true, ct->conf, json_string_value(v)))
            json_object_del(ct->conf, k);
    }
}

/* vmconfig_apply_pending: the deletions, then the new values, each in
 * sorted order (which decides the unusedN a detached volume takes); the
 * config written (write_pct_config). */
void sim_ct_apply_pending(struct sim *s, struct sim_ct *ct)
{
    const char **del = sim_ct_sorted(ct->pending_delete);
    for (size_t i = 0; del[i]; i++)
        sim_ct_delete_key(s, ct, del[i]);
    free(del);
    json_array_clear(ct->pending_delete);
    const char **set = sim_ct_sorted(ct->pending);
    for (size_t i = 0; set[i]; i++)
        sim_ct_set_key(s, ct, set[i], json_incref(json_object_get(ct->pending, set[i])));
    free(set);
    json_object_clear(ct->pending);
    sim_ct_drop_reattached(ct);
    s->dirty = true;
}

static const char *spec_str(json_t *spec, const char *key, const char *dflt)
{
    const char *v = json_string_value(json_object_get(spec, key));
    return v ? v : dflt;
}

/* A property value of the fleet file that goes into a property string as it
 * is (net0's ip, a storage id): a string, 1..64 characters, no ',' '=' or
 * control character (which would make it another property). */
static bool spec_word(json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (*s == ',' || *s == '=' || (unsigned char)*s < 0x20)
            return false;
    return true;
}

/* The network and volume members of containers[i] (the rest is checked by add_container). */
static int check_spec(struct sim_node *n, json_t *spec, size_t i, const char *path, char **err)
{
    static const char *const words[] = {"bridge", "ip", "gw", "ip6", "gw6", "storage"};
    for (size_t k = 0; k < sizeof words / sizeof *words; k++) {
        json_t *v = json_object_get(spec, words[k]);
        if (v && !spec_word(v)) {
            *err = xasprintf("%s: containers[%zu].%s: a string of 1 to 64 characters, no ',' "
                             "or '='",
                             path, i, words[k]);
            return -1;
        }
    }
    json_t *tag = json_object_get(spec, "tag");
    if (tag &&
        (!json_is_integer(tag) || json_integer_value(tag) < 1 || json_integer_value(tag) > 4094)) {
        *err = xasprintf("%s: containers[%zu].tag: 1..4094", path, i);
        return -1;
    }
    const char *st = spec_str(spec, "storage", NULL);
    if (st && !sim_storage_find(n, st)) {
        *err = xasprintf("%s: containers[%zu].storage: node %s has no storage '%s'", path, i,
                         n->name, st);
        return -1;
    }
    json_t *mps = json_object_get(spec, "mps"), *mp;
    size_t j;
    if (mps && (!json_is_array(mps) || json_array_size(mps) > 256)) { /* mp0..mp255 */
        *err = xasprintf("%s: containers[%zu].mps: an array of at most 256", path, i);
        return -1;
    }
    json_array_foreach(mps, j, mp)
    {
        json_t *sz = json_object_get(mp, "disk_gb"), *ms = json_object_get(mp, "storage");
        if (!json_is_number(sz) || json_number_value(sz) < 1 || json_number_value(sz) > 1048576 ||
            (ms && (!spec_word(ms) || !sim_storage_find(n, json_string_value(ms))))) {
            *err = xasprintf("%s: containers[%zu].mps[%zu]: disk_gb 1..1048576 on a storage "
                             "of the node",
                             path, i, j);
            return -1;
        }
    }
    return 0;
}

/* The config pct writes for a container made from a Debian template. */
static void ct_default_conf(struct sim *s, struct sim_ct *ct, json_t *spec)
{
    const char *host = json_string_value(json_object_get(spec, "hostname"));
    json_t *mem = json_object_get(spec, "memory_mb"), *cores = json_object_get(spec, "cores");
    json_t *disk = json_object_get(spec, "disk_gb");
    char mac[18], buf[256];
    sim_new_mac(s, mac);
    json_t *c = ct->conf;
    json_object_set_new(c, "arch", json_string("amd64"));
    json_object_set_new(c, "cores", json_integer(cores ? json_integer_value(cores) : 1));
    json_object_set_new(c, "features", json_string("nesting=1"));
    if (host)
        json_object_set_new(c, "hostname", json_string(host));
    json_object_set_new(c, "memory", json_integer(mem ? json_integer_value(mem) : 512));
    /* pct's order: name first, then the other keys sorted (net[n] of the schema) */
    struct buf n0 = BUF_INIT(BUF_UNLIMITED);
    buf_printf(&n0, "name=eth0,bridge=%s", spec_str(spec, "bridge", "vmbr0"));
    if (json_object_get(spec, "gw"))
        buf_printf(&n0, ",gw=%s", spec_str(spec, "gw", ""));
    if (json_object_get(spec, "gw6"))
        buf_printf(&n0, ",gw6=%s", spec_str(spec, "gw6", ""));
    buf_printf(&n0, ",hwaddr=%s,ip=%s", mac, spec_str(spec, "ip", "dhcp"));
    if (json_object_get(spec, "ip6"))
        buf_printf(&n0, ",ip6=%s", spec_str(spec, "ip6", ""));
    if (json_object_get(spec, "tag"))
        buf_printf(&n0, ",tag=%lld", (long long)json_integer_value(json_object_get(spec, "tag")));
    buf_printf(&n0, ",type=veth");
    json_object_set_new(c, "net0", json_stringn(n0.data, n0.len));
    buf_release(&n0);
    json_object_set_new(c, "ostype", json_string("debian"));
    snprintf(buf, sizeof buf, "%s:vm-%d-disk-0,size=%lldG", spec_str(spec, "storage", "local-lvm"),
             ct->vmid, disk ? (long long)json_number_value(disk) : 8LL);
    json_object_set_new(c, "rootfs", json_string(buf));
    /* mount points: volumes of their own (vm-<vmid>-disk-<n>), as `pct set -mpN STORAGE:SIZE`
     * allocates them */
    size_t i;
    json_t *mp;
    json_array_foreach(json_object_get(spec, "mps"), i, mp)
    {
        char key[32];
        snprintf(key, sizeof key, "mp%zu", i);
        snprintf(buf, sizeof buf, "%s:vm-%d-disk-%zu,mp=/mnt/mp%zu,size=%lldG",
                 spec_str(mp, "storage", "local-lvm"), ct->vmid, i + 1, i,
                 (long long)json_number_value(json_object_get(mp, "disk_gb")));
        json_object_set_new(c, key, json_string(buf));
    }
    json_object_set_new(c, "swap", json_integer(512));
    json_object_set_new(c, "unprivileged", json_integer(1));
    json_t *tags = json_object_get(spec, "tags");
    if (json_is_string(tags))
        json_object_set(c, "tags", tags);
}

static int add_container(struct sim *s, json_t *spec, size_t i, const char *path, char **err)
{
    int vmid = (int)json_integer_value(json_object_get(spec, "vmid"));
    const char *node = json_string_value(json_object_get(spec, "node"));
    struct sim_node *n = node ? sim_node_find(s, node) : &s->nodes[0];
    const char *host = json_string_value(json_object_get(spec, "hostname"));
    const char *status = json_string_value(json_object_get(spec, "status"));
    if (vmid < 100 || vmid > 999999999) {
        *err = xasprintf("%s: containers[%zu].vmid must be 100..999999999", path, i);
        return -1;
    }
    if (!n) {
        *err = xasprintf("%s: containers[%zu].node: no such node '%s'", path, i, node);
        return -1;
    }
    if (host && (strlen(host) > 63 || !*host)) {
        *err = xasprintf("%s: containers[%zu].hostname: 1 to 63 characters", path, i);
        return -1;
    }
    if (status && strcmp(status, "running") && strcmp(status, "stopped")) {
        *err = xasprintf("%s: containers[%zu].status: running or stopped", path, i);
        return -1;
    }
    if (check_spec(n, spec, i, path, err))
        return -1;
    if (sim_vmid_used(s, n, vmid)) {
        *err = xasprintf("%s: containers[%zu].vmid %d is taken", path, i, vmid);
        return -1;
    }
    struct sim_ct *ct = sim_ct_new(s, n, vmid);
    ct->running = status && strcmp(status, "running") == 0;
    ct->started = 0;
    ct_default_conf(s, ct, spec);
    const char *pool = json_string_value(json_object_get(spec, "pool"));
    if (pool) {
        if (!sim_pool_exists(s, pool)) {
            *err = xasprintf("%s: containers[%zu].pool: no pool '%s'", path, i, pool);
            return -1;
        }
        sim_pool_add_vm(s, pool, vmid);
    }
    return 0;
}

int sim_fleet_extras(struct sim *s, json_t *fleet, const char *path, char **err)
{
    json_t *pools = json_object_get(fleet, "pools"), *cts = json_object_get(fleet, "containers");
    size_t i;
    json_t *j;
    if (pools && !json_is_array(pools)) {
        *err = xasprintf("%s: 'pools' must be an array", path);
        return -1;
    }
    json_array_foreach(pools, i, j)
    {
        const char *id = json_string_value(json_object_get(j, "poolid"));
        const char *comment = json_string_value(json_object_get(j, "comment"));
        if (!id || !*id || strlen(id) > 64 || json_object_get(s->pools, id)) {
            *err = xasprintf("%s: pools[%zu].poolid missing, too long or repeated", path, i);
            return -1;
        }
        json_t *p = json_pack("{s:[]}", "vms");
        if (comment)
            json_object_set_new(p, "comment", json_string(comment));
        json_object_set_new(s->pools, id, p);
    }
    if (cts && (!json_is_array(cts) || json_array_size(cts) > 100000)) {
        *err = xasprintf("%s: 'containers' must be an array (at most 100000)", path);
        return -1;
    }
    json_array_foreach(cts, i, j)
    {
        if (add_container(s, j, i, path, err))
            return -1;
    }
    return 0;
}

/* ---- pools ---------------------------------------------------------------- */

const char *sim_pool_of(struct sim *s, int vmid)
{
    return perm_pool_of(s->pools, vmid);
}

bool sim_pool_exists(struct sim *s, const char *pool)
{
    return json_object_get(s->pools, pool) != NULL;
}

void sim_pool_add_vm(struct sim *s, const char *pool, int vmid)
{
    const char *old = sim_pool_of(s, vmid);
    if (old) {
        json_t *vms = json_object_get(json_object_get(s->pools, old), "vms");
        size_t i;
        json_t *v;
        json_array_foreach(vms, i, v)
        {
            if (json_integer_value(v) == vmid) {
                json_array_remove(vms, i);
                break;
            }
        }
    }
    json_t *p = pool ? json_object_get(s->pools, pool) : NULL;
    if (p)
        json_array_append_new(json_object_get(p, "vms"), json_integer(vmid));
    s->dirty = true;
}

/* ---- list entries ------------------------------------------------------- */

/* A config value in MiB (memory, swap) in bytes, dflt MiB when unset; held
 * at SIM_BYTES_MAX (PVE's schema sets no maximum). */
static int64_t conf_mib(const struct sim_ct *ct, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(ct->conf, key);
    int64_t mib = json_is_integer(v) ? json_integer_value(v) : dflt;
    if (mib < 0)
        mib = 0;
    return mib > SIM_BYTES_MAX / MiB ? SIM_BYTES_MAX : mib * MiB;
}

int64_t sim_ct_mem(const struct sim_ct *ct)
{
    bool on = ct->running && ct->node->state != NODE_OFFLINE;
    return on ? conf_mib(ct, "memory", 0) / 4 : 0;
}

bool sim_ct_volume_key(const char *k)
{
    size_t d = str_starts(k, "mp") ? 2 : str_starts(k, "unused") ? 6 : 0;
    return strcmp(k, "rootfs") == 0 || (d && k[d] && strspn(k + d, "0123456789") == strlen(k + d));
}

/* vmstatus' cpus: cores || cpulimit, else 0 (the host's). */
static double ct_cores(const struct sim_ct *ct)
{
    double cores = json_number_value(json_object_get(ct->conf, "cores"));
    if (cores <= 0)
        cores = json_number_value(json_object_get(ct->conf, "cpulimit"));
    return cores;
}

int sim_ct_busy_cpus(const struct sim_ct *ct)
{
    if (!ct->running || ct->node->state == NODE_OFFLINE)
        return 0;
    double cores = ct_cores(ct);
    return cores > 0 ? (int)ceil(cores) : ct->node->cpus;
}

/* pve-container's vmstatus: name is the hostname (or "CT<vmid>"), cpus the
 * cores (or the host's), sizes in bytes; PVE 9 adds pressure stall averages
 * for running containers. */
json_t *sim_ct_list_entry(struct sim *s, struct sim_ct *ct)
{
    const char *host = json_string_value(json_object_get(ct->conf, "hostname"));
    /* vmstatus' fallbacks, seen while a create has written nothing but
     * its lock: cores || cpulimit || the node's, memory || 512, a rootfs
     * without size (or none) 4 GiB */
    double cores = ct_cores(ct);
    int64_t maxmem = conf_mib(ct, "memory", 0);
    if (maxmem == 0)
        maxmem = 512 * MiB;
    int64_t maxswap = conf_mib(ct, "swap", 0);
    int64_t maxdisk = sim_disk_size(json_string_value(json_object_get(ct->conf, "rootfs")));
    if (maxdisk <= 0)
        maxdisk = 4 * GiB;
    bool on = ct->running && ct->node->state != NODE_OFFLINE;
    json_t *e =
        json_pack("{s:i,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I}", "vmid",
                  ct->vmid, "status", on ? "running" : "stopped", "type", "lxc", "name", "", "cpus",
                  cores > 0 ? (json_int_t)cores : (json_int_t)ct->node->cpus, "maxmem",
                  (json_int_t)maxmem, "maxswap", (json_int_t)maxswap, "maxdisk",
                  (json_int_t)maxdisk, "mem", (json_int_t)sim_ct_mem(ct), "swap", (json_int_t)0,
                  "cpu", on ? 0.01 : 0.0, "disk", (json_int_t)(on ? maxdisk / 5 : 0), "uptime",
                  (json_int_t)(on ? (long long)(sim_now(s) - ct->started) : 0), "netin",
                  (json_int_t)(on ? 4096 : 0), "netout", (json_int_t)(on ? 2048 : 0), "diskread",
                  (json_int_t)0);
    json_object_set_new(e, "diskwrite", json_integer(0));
    if (cores > 0 && cores != floor(cores)) /* a cpulimit of 1.5 */
        json_object_set_new(e, "cpus", json_real(cores));
    if (host)
        json_object_set_new(e, "name", json_string(host));
    else
        json_object_set_new(e, "name", json_sprintf("CT%d", ct->vmid));
    if (on)
        json_object_set_new(e, "pid", json_integer(200000 + ct->vmid));
    json_t *v;
    if ((v = json_object_get(ct->conf, "lock")))
        json_object_set(e, "lock", v);
    if ((v = json_object_get(ct->conf, "tags")))
        json_object_set(e, "tags", v);
    if (json_integer_value(json_object_get(ct->conf, "template")))
        json_object_set_new(e, "template", json_integer(1));
    if (s->o.pve_version >= 9 && on) {
        static const char *const keys[] = {"pressurecpusome",    "pressurecpufull",
                                           "pressureiosome",     "pressureiofull",
                                           "pressurememorysome", "pressurememoryfull"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            json_object_set_new(e, keys[i], json_real(0.0));
    }
    return e;
}
