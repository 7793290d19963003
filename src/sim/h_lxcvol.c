/* h_lxcvol: a container's volumes — resize (PUT .../lxc/{vmid}/resize) and
 * clone (POST .../lxc/{vmid}/clone) as pve-container's API2/LXC.pm does
 * them: its checks before the fork here, the workers (`resize`,
 * `vzclone`) stepped by lxctask.c. With s->mu held, as every handler. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESIZE_TIME 0.5          /* lvresize, then e2fsck and resize2fs */
#define CONFIG_LOCK_TIMEOUT 10.0 /* lock_config */

#define GiB_D (1024.0 * 1024 * 1024)

static const char *ct_arg(json_t *args, const char *k)
{
    return json_string_value(json_object_get(args, k));
}

/* ---- resize ----------------------------------------------------------------- */

/* parse_size: "10G", "512M", "1.5T", bytes without a unit; the schema's
 * pattern (\+?\d+(\.\d+)?[KMGT]?) let only such a value through. */
static int64_t size_bytes(const char *v)
{
    char *end;
    double n = strtod(v, &end);
    double mul = *end == 'K'   ? 1024.0
                 : *end == 'M' ? 1048576.0
                 : *end == 'G' ? GiB_D
                 : *end == 'T' ? GiB_D * 1024
                               : 1.0;
    double b = n * mul;
    return b >= (double)SIM_BYTES_MAX ? SIM_BYTES_MAX : (int64_t)b;
}

/* resize_vm's load_and_check, before the fork and again in the worker under
 * the flock: NULL and the new size, or PVE's text (caller frees; *errors:
 * the property errors of "format error", when it is that). */
static char *resize_check(struct sim *s, struct sim_ct *ct, json_t *args, int64_t *newsize,
                          json_t **errors)
{
    const char *lk = sim_ct_lock(ct);
    if (lk)
        return xasprintf("CT is locked (%s)", lk);
    const char *digest = ct_arg(args, "digest");
    if (digest && *digest) { /* assert_if_modified */
        char *cur = sim_ct_digest(ct);
        bool same = strcmp(cur, digest) == 0;
        free(cur);
        if (!same)
            return xstrdup("detected modified configuration - file changed by other user? Try "
                           "again.");
    }
    const char *disk = ct_arg(args, "disk");
    const char *vol = json_string_value(json_object_get(ct->conf, disk));
    if (!vol) { /* parse_volume of nothing: the format's required keys missing */
        if (errors) {
            *errors = json_pack("{s:s}", "volume", "property is missing and it is not optional");
            if (strcmp(disk, "rootfs") != 0)
                json_object_set_new(*errors, "mp",
                                    json_string("property is missing and it is not optional"));
        }
        return xstrdup("format error");
    }
    size_t vl = strcspn(vol, ",");
    if (!memchr(vol, ':', vl)) /* a bind or device mount: PVE::Storage::parse_volname */
        return xasprintf("unable to parse volume ID '%.*s'", (int)vl, vol);
    const char *size = ct_arg(args, "size");
    int64_t cur = sim_volume_size(s, vol); /* volume_size_info */
    int64_t req = size_bytes(size[0] == '+' ? size + 1 : size);
    int64_t want = size[0] == '+' ? sim_bytes_add(cur, req) : req;
    if (want < cur)
        return xstrdup("unable to shrink disk size");
    if (want == cur)
        return xstrdup("disk is already at specified size");
    *newsize = want;
    return NULL;
}

static void h_resize(struct sim_call *c)
{
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    int64_t newsize;
    json_t *errors = NULL;
    char *why = resize_check(c->s, ct, c->params, &newsize, &errors);
    if (why) {
        call_fail(c, 500, "%s", why);
        if (errors) {
            json_decref(c->errors);
            c->errors = errors;
        }
        free(why);
        return;
    }
    lxc_call_task(c, ct->vmid, "resize", TK_VZRESIZE);
}

/* lvresize's lines for a volume on LVM ("pve" as on a default install). */
static void log_lvresize(struct sim_task *t, struct sim_ct *ct, const char *vol, int64_t from,
                         int64_t to)
{
    char *sid = sim_disk_storage(vol);
    struct sim_storage *st = sid ? sim_storage_find(ct->node, sid) : NULL;
    free(sid);
    if (!st || !str_starts(st->type, "lvm"))
        return;
    const char *name = strchr(vol, ':') + 1;
    int nl = (int)strcspn(name, ",");
    sim_task_log(t,
                 "  Size of logical volume pve/%.*s changed from %.2f GiB (%lld extents) to "
                 "%.2f GiB (%lld extents).",
                 nl, name, (double)from / GiB_D, (long long)(from >> 22), (double)to / GiB_D,
                 (long long)(to >> 22));
    sim_task_log(t, "  Logical volume pve/%.*s successfully resized.", nl, name);
}

void lxc_step_resize(struct sim *s, struct sim_task *t, double now)
{
    int g = lxc_task_phases(s, t, now);
    struct sim_ct *ct = sim_ct_find(s, t->node, t->vmid);
    int64_t newsize = 0;
    if (g == 1) {
        char *why = resize_check(s, ct, t->args, &newsize, NULL);
        if (why)
            lxc_task_finish(s, t, why);
        free(why);
        t->dur = RESIZE_TIME;
        return;
    }
    if (g == 0 || now - t->t0 < t->dur)
        return;
    if (t->fault_exit) {
        lxc_task_finish(s, t, t->fault_exit);
        return;
    }
    const char *disk = ct_arg(t->args, "disk");
    char *why = resize_check(s, ct, t->args, &newsize, NULL);
    if (why) { /* the new size again: the flock kept the config as it was checked */
        lxc_task_finish(s, t, why);
        free(why);
        return;
    }
    const char *vol = json_string_value(json_object_get(ct->conf, disk));
    log_lvresize(t, ct, vol, sim_volume_size(s, vol), newsize);
    char *size = sim_fmt_size(newsize);
    size_t vl = strcspn(vol, ",");
    char *opts = lxc_mp_options(vol + vl, size);
    json_object_set_new(ct->conf, disk, json_sprintf("%.*s%s", (int)vl, vol, opts));
    free(opts);
    free(size);
    s->dirty = true;
    lxc_task_finish(s, t, "OK");
}

/* ---- clone ------------------------------------------------------------------ */

#define CLONE_FORK 0.05
#define LINK_TIME 0.3 /* a linked clone's volume: a thin snapshot */

/* classify_mountpoint: a path under /dev is a device, another path a bind
 * mount, the rest a storage volume. */
static const char *mp_type(const char *vol)
{
    if (str_starts(vol, "/dev/"))
        return "device";
    return vol[0] == '/' ? "bind" : "volume";
}

static struct sim_storage *vol_storage(struct sim_node *n, const char *vol)
{
    char *sid = sim_disk_storage(vol);
    struct sim_storage *st = sid ? sim_storage_find(n, sid) : NULL;
    free(sid);
    return st;
}

/* volume_has_feature('clone', ..., {valid_target_formats => [raw, subvol]}):
 * thin storages clone a base volume or a snapshot; a directory would make a
 * qcow2 image, which a container cannot use; thick LVM cannot. */
static bool can_link(struct sim_node *n, const char *vol, bool from_snap)
{
    struct sim_storage *st = vol_storage(n, vol);
    if (!st ||
        (strcmp(st->type, "lvmthin") && strcmp(st->type, "zfspool") && strcmp(st->type, "rbd")))
        return false;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(vol, ","), vol);
    const char *slash = strrchr(name, '/'), *colon = strchr(name, ':');
    const char *base = slash ? slash + 1 : colon ? colon + 1 : name;
    return from_snap || str_starts(base, "base-");
}

/* netN with a new hwaddr ("always change MAC! address"). */
static json_t *new_mac(struct sim *s, const char *net)
{
    char mac[18];
    sim_new_mac(s, mac);
    const char *p = strstr(net, "hwaddr=");
    if (!p)
        return json_string(net);
    size_t vl = strcspn(p + 7, ",");
    return json_sprintf("%.*shwaddr=%s%s", (int)(p - net), net, mac, p + 7 + vl);
}

struct clone_plan {
    struct sim_call *c;
    struct sim_ct *src;
    json_t *from; /* the source's config or snapshot */
    json_t *conf; /* the new config (newconf) */
    json_t *mps;  /* {"rootfs": "volume string", ...} to clone */
    bool full, shared;
    const char *storage, *snapname;
};

/* One key of the source's config, as the API's loop takes it; false with
 * the call failed. */
static bool plan_key(struct clone_plan *p, const char *k, json_t *v)
{
    struct sim_call *c = p->c;
    const char *val = json_string_value(v);
    if (str_starts(k, "unused"))
        return true;
    if (strcmp(k, "rootfs") == 0 || (str_starts(k, "mp") && sim_ct_volume_key(k))) {
        const char *type = mp_type(val ? val : "");
        if (strcmp(type, "volume") != 0) {
            call_fail(c, 500, "unable to clone mountpoint '%s' (type %s)", k, type);
            return false;
        }
        struct sim_storage *st =
            p->storage ? sim_storage_find(c->node, p->storage) : vol_storage(c->node, val);
        if (!st || !st->shared)
            p->shared = false;
        if (p->full && p->src->running && !p->snapname) {
            call_fail(c, 500, "Full clone of a running container is only possible from a snapshot");
            return false;
        }
        if (!p->full && !can_link(c->node, val, p->snapname != NULL)) {
            call_fail(c, 500, "Linked clone feature for '%.*s' is not available",
                      (int)strcspn(val, ","), val);
            return false;
        }
        json_object_set(p->mps, k, v);
        return true;
    }
    if (str_starts(k, "net") && k[3] && strspn(k + 3, "0123456789") == strlen(k + 3) && val)
        json_object_set_new(p->conf, k, new_mac(c->s, val));
    else
        json_object_set(p->conf, k, v);
    return true;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The part of clone_vm between the locks and the fork: the new config
 * (without its volumes, which the worker adds). False with the call failed. */
static bool plan_clone(struct clone_plan *p)
{
    struct sim_call *c = p->c;
    json_t *fullp = json_object_get(c->params, "full");
    bool template = json_integer_value(json_object_get(p->src->conf, "template")) != 0;
    p->full = fullp ? call_bool(c, "full", false) : !template;
    if (p->storage && !p->full) {
        call_fail(c, 500, "parameter 'storage' not allowed for linked clones");
        return false;
    }
    p->from = p->src->conf;
    if (p->snapname) {
        p->from = p->src->snaps ? json_object_get(p->src->snaps, p->snapname) : NULL;
        if (!p->from) {
            call_fail(c, 500, "snapshot '%s' does not exist", p->snapname);
            return false;
        }
    }
    size_t n = json_object_size(p->from), i = 0;
    const char **keys = xcalloc(n + 1, sizeof *keys);
    const char *k;
    json_t *v;
    json_object_foreach(p->from, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, cmp_key); /* for my $opt (sort keys %$src_conf) */
    bool ok = true;
    for (i = 0; i < n && ok; i++)
        ok = plan_key(p, keys[i], json_object_get(p->from, keys[i]));
    free(keys);
    if (!ok)
        return false;
    const char *target = call_str(c, "target");
    if (target && !p->shared) {
        call_fail(c, 500, "can't clone CT to node '%s' (CT uses local storage)", target);
        return false;
    }
    /* the snapshot's own keys and the template flag stay behind */
    static const char *const drop[] = {"parent", "snaptime", "snapstate", "template"};
    for (i = 0; i < sizeof drop / sizeof *drop; i++)
        json_object_del(p->conf, drop[i]);
    json_object_set_new(p->conf, "lock", json_string("create"));
    if (call_str(c, "hostname") && *call_str(c, "hostname"))
        json_object_set_new(p->conf, "hostname", json_string(call_str(c, "hostname")));
    if (call_str(c, "description") && *call_str(c, "description"))
        json_object_set_new(p->conf, "description", json_string(call_str(c, "description")));
    return true;
}

/* The checks before the locks: pool, target node, storage. */
static bool clone_args_ok(struct sim_call *c, const char **target)
{
    const char *pool = call_str(c, "pool");
    if (pool && !sim_pool_exists(c->s, pool)) { /* check_pool_exist */
        call_fail(c, 403, "Permission check failed (pool '%s' does not exist)", pool);
        return false;
    }
    *target = call_str(c, "target");
    if (*target && (strcmp(*target, c->node->name) == 0 || strcmp(*target, "localhost") == 0))
        *target = NULL;
    struct sim_node *tn = *target ? sim_node_find(c->s, *target) : NULL;
    if (*target && !tn) {
        call_fail(c, 500, "no such cluster node '%s'", *target);
        return false;
    }
    const char *storage = call_str(c, "storage");
    if (!storage)
        return true;
    if (!call_storage_space(c, storage, strlen(storage)))
        return false;
    struct sim_storage *st = sim_storage_find(c->node, storage);
    if (!st || (tn && !sim_storage_find(tn, storage))) { /* storage_check_enabled */
        call_fail(c, 500, "storage '%s' does not exist", storage);
        return false;
    }
    if (tn && !st->shared) {
        call_fail(c, 500, "can't clone to non-shared storage '%s'", storage);
        return false;
    }
    return true;
}

/* set_lock($vmid, 'disk'): under the flock, check_lock, then the lock. */
static struct sim_ct *lock_source(struct sim_call *c)
{
    struct sim_ct *src = sim_ct_find(c->s, c->node, (int)call_int(c, "vmid", 0));
    if (!src) {
        call_fail(c, 500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", c->node->name,
                  (int)call_int(c, "vmid", 0));
        return NULL;
    }
    int vmid = src->vmid;
    if (!(src = sim_ct_flock_wait(c->s, src, CONFIG_LOCK_TIMEOUT))) {
        char lf[96];
        call_fail(c, 500, "can't lock file '%s' - got timeout", sim_ct_lockfile(vmid, lf));
        return NULL;
    }
    const char *lk = sim_ct_lock(src);
    if (lk)
        call_fail(c, 500, "CT is locked (%s)", lk);
    else
        json_object_set_new(src->conf, "lock", json_string("disk"));
    sim_ct_flock_release(c->s, src);
    return lk ? NULL : src;
}

static void h_clone(struct sim_call *c)
{
    struct sim *s = c->s;
    int newid = (int)call_int(c, "newid", 0);
    const char *target;
    if (!clone_args_ok(c, &target))
        return;
    struct sim_ct *src = lock_source(c);
    if (!src)
        return;
    if (!lxc_vmid_unused(c, newid)) { /* create_and_lock_config($newid) */
        json_object_del(src->conf, "lock");
        return;
    }
    struct sim_ct *dst = sim_ct_new(s, c->node, newid);
    json_object_set_new(dst->conf, "lock", json_string("create"));
    struct clone_plan p = {.c = c,
                           .src = src,
                           .conf = json_object(),
                           .mps = json_object(),
                           .shared = true,
                           .storage = call_str(c, "storage"),
                           .snapname = call_str(c, "snapname")};
    if (!plan_clone(&p)) { /* remove_lock, destroy_config */
        json_object_del(src->conf, "lock");
        sim_ct_unlink(s, dst);
        json_decref(p.conf);
        json_decref(p.mps);
        return;
    }
    json_object_clear(dst->conf);
    json_object_update(dst->conf, p.conf);
    json_decref(p.conf);
    struct sim_task *t = lxc_call_task(c, src->vmid, "vzclone", TK_VZCLONE);
    t->newid = newid;
    json_object_set_new(t->args, "_mps", p.mps);
    json_object_set_new(t->args, "_full", json_boolean(p.full));
    if (target)
        json_object_set_new(t->args, "_target", json_string(target));
}

/* The new volume of a mount point: a full clone's on the target storage
 * (vdisk_alloc, vm-<newid>-disk-<n>), a linked clone's on the source's
 * (vdisk_clone: lvmthin names it alone, zfs and rbd under its base). */
static json_t *new_volume(struct sim_task *t, const char *vol, int idx, bool full)
{
    size_t vl = strcspn(vol, ",");
    const char *opts = vol + vl;
    char *sid = sim_disk_storage(vol);
    const char *storage = json_string_value(json_object_get(t->args, "storage"));
    const char *tsid = full && storage ? storage : sid;
    struct sim_storage *st = sim_storage_find(t->node, tsid);
    json_t *r;
    if (full && st && strcmp(st->type, "dir") == 0)
        r = json_sprintf("%s:%d/vm-%d-disk-%d.raw%s", tsid, t->newid, t->newid, idx, opts);
    else if (full || (st && strcmp(st->type, "lvmthin") == 0))
        r = json_sprintf("%s:vm-%d-disk-%d%s", tsid, t->newid, idx, opts);
    else
        r = json_sprintf("%.*s/vm-%d-disk-%d%s", (int)vl, vol, t->newid, idx, opts);
    if (st && str_starts(st->type, "lvm"))
        sim_task_log(t, "  Logical volume \"vm-%d-disk-%d\" created.", t->newid, idx);
    free(sid);
    return r;
}

/* The source's 'disk' lock goes in any case (remove_lock). */
static void unlock_source(struct sim *s, struct sim_task *t)
{
    struct sim_ct *src = sim_ct_find(s, t->node, t->vmid);
    const char *lk = src ? sim_ct_lock(src) : NULL;
    if (lk && strcmp(lk, "disk") == 0)
        json_object_del(src->conf, "lock");
}

/* A clone that failed: the new container and its volumes go
 * ("clone failed: ..."). */
static void clone_fail(struct sim *s, struct sim_task *t, const char *why)
{
    unlock_source(s, t);
    struct sim_ct *dst = sim_ct_find(s, t->node, t->newid);
    if (dst)
        sim_ct_unlink(s, dst);
    char msg[512];
    snprintf(msg, sizeof msg, "clone failed: %s", why);
    sim_task_finish(s, t, msg);
}

/* The mount points to clone, rootfs first (PVE walks a hash, in no set
 * order; create numbers rootfs first, and so does pvesim here). */
static void each_mp(struct sim_task *t, void (*fn)(void *, const char *, const char *), void *ctx)
{
    json_t *mps = json_object_get(t->args, "_mps");
    const char *root = json_string_value(json_object_get(mps, "rootfs"));
    if (root)
        fn(ctx, "rootfs", root);
    const char *k;
    json_t *v;
    json_object_foreach(mps, k, v)
    {
        if (strcmp(k, "rootfs") != 0)
            fn(ctx, k, json_string_value(v));
    }
}

struct clone_walk {
    struct sim *s;
    struct sim_task *t;
    struct sim_ct *dst;
    bool full;
    int idx;
    double bytes;
};

static void log_mp(void *ctx, const char *k, const char *vol)
{
    struct clone_walk *w = ctx;
    int vl = (int)strcspn(vol, ",");
    if (w->full)
        sim_task_log(w->t, "create full clone of mountpoint %s (%.*s)", k, vl, vol);
    else
        sim_task_log(w->t, "create linked clone of mount point %s (%.*s)", k, vl, vol);
    w->bytes += (double)sim_volume_size(w->s, vol);
}

static void place_mp(void *ctx, const char *k, const char *vol)
{
    struct clone_walk *w = ctx;
    json_object_set_new(w->dst->conf, k, new_volume(w->t, vol, w->idx++, w->full));
}

/* copy_volume's rate: the node's storage bandwidth, or `bwlimit` (KiB/s)
 * when lower (get_bandwidth_limit gives the call's own limit). */
static double clone_bw(struct sim_task *t)
{
    json_t *v = json_object_get(t->args, "bwlimit");
    double lim = json_is_number(v)   ? json_number_value(v)
                 : json_is_string(v) ? atof(json_string_value(v))
                                     : 0;
    return lim > 0 && lim * 1024 < t->node->bandwidth ? lim * 1024 : t->node->bandwidth;
}

static void clone_start(struct sim *s, struct sim_task *t, double now)
{
    sim_task_log(t, "creating a clone of container %d with ID %d", t->vmid, t->newid);
    bool full = json_is_true(json_object_get(t->args, "_full"));
    struct clone_walk w = {.s = s, .t = t, .full = full};
    each_mp(t, log_mp, &w);
    double bytes = w.bytes;
    t->bytes_total = full ? bytes : 0;
    t->dur = full ? 1.0 + bytes / clone_bw(t) : LINK_TIME;
    t->phase = 1;
    t->t0 = now;
}

static void clone_done(struct sim *s, struct sim_task *t)
{
    struct sim_ct *dst = sim_ct_find(s, t->node, t->newid);
    if (!dst) {
        unlock_source(s, t);
        sim_task_finish(s, t, "clone failed: Lost 'create' config lock, aborting.");
        return;
    }
    struct clone_walk w = {
        .s = s, .t = t, .dst = dst, .full = json_is_true(json_object_get(t->args, "_full"))};
    each_mp(t, place_mp, &w);
    const char *pool = json_string_value(json_object_get(t->args, "pool"));
    if (pool)
        sim_pool_add_vm(s, pool, t->newid);
    unlock_source(s, t);
    json_object_del(dst->conf, "lock");
    const char *target = json_string_value(json_object_get(t->args, "_target"));
    struct sim_node *tn = target ? sim_node_find(s, target) : NULL;
    if (tn) /* move_config_to_node */
        dst->node = tn;
    s->dirty = true;
    sim_task_finish(s, t, "OK");
}

void lxc_step_clone(struct sim *s, struct sim_task *t, double now)
{
    if (t->phase == 0) {
        if (now - t->t0 >= CLONE_FORK)
            clone_start(s, t, now);
        return;
    }
    double el = now - t->t0;
    t->bytes_done = t->dur > 0 && el < t->dur ? t->bytes_total * el / t->dur : t->bytes_total;
    if (el < t->dur)
        return;
    if (t->fault_exit) {
        clone_fail(s, t, t->fault_exit);
        return;
    }
    clone_done(s, t);
}

/* SIGTERM: the worker's handler dies "interrupted by signal" and cleans up. */
void lxc_clone_stop(struct sim *s, struct sim_task *t)
{
    clone_fail(s, t, "interrupted by signal");
}

const struct sim_route sim_routes_lxcvol[] = {
    {"PUT", "/nodes/{node}/lxc/{vmid}/resize", h_resize},
    {"POST", "/nodes/{node}/lxc/{vmid}/clone", h_clone},
    {NULL, NULL, NULL},
};
