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

#define RESIZE_TIME 0.5 /* lvresize, then e2fsck and resize2fs */

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

static struct sim_ct *load_ct(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_ct *ct = sim_ct_find(c->s, c->node, vmid);
    if (!ct)
        call_fail(c, 500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", c->node->name,
                  vmid);
    return ct;
}

static struct sim_task *ct_task(struct sim_call *c, int vmid, const char *type, enum task_kind kind)
{
    char id[16];
    snprintf(id, sizeof id, "%d", vmid);
    struct sim_task *t = sim_task_new(c->s, c->node, type, id, call_owner(c), kind);
    t->vmid = vmid;
    t->args = json_deep_copy(c->params);
    if (c->task_fault_exit)
        t->fault_exit = xstrdup(c->task_fault_exit);
    c->data = json_string(t->upid);
    return t;
}

static void h_resize(struct sim_call *c)
{
    struct sim_ct *ct = load_ct(c);
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
    ct_task(c, ct->vmid, "resize", TK_VZRESIZE);
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

const struct sim_route sim_routes_lxcvol[] = {
    {"PUT", "/nodes/{node}/lxc/{vmid}/resize", h_resize},
    {NULL, NULL, NULL},
};
