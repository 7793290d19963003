/* h_lxc: the container endpoints (pve-container API2/LXC.pm,
 * API2/LXC/Status.pm, API2/LXC/Config.pm): list, status/current, config
 * (GET, PUT), and the lifecycle — create, start, stop, shutdown, reboot,
 * destroy — with PVE's synchronous checks here and the work in tasks
 * (lxctask.c). Snapshots and the template conversion share the VMs' code
 * (h_snapshot.c, vmops.c). Containers come from the fleet file (lxc.c) or
 * from POST /nodes/{node}/lxc. */
#include "common/sshkey.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_LOCK_TIMEOUT 10.0 /* lock_config */

struct sim_ct *lxc_load_ct(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_ct *ct = sim_ct_find(c->s, c->node, vmid);
    if (!ct)
        call_fail(c, 500, "Configuration file 'nodes/%s/lxc/%d.conf' does not exist", c->node->name,
                  vmid);
    return ct;
}

struct sim_task *lxc_call_task(struct sim_call *c, int vmid, const char *type, enum task_kind kind)
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

static void h_list(struct sim_call *c)
{
    c->data = json_array();
    for (struct sim_ct *ct = c->s->cts; ct; ct = ct->next)
        if (ct->node == c->node && call_can_vm(c, ct->vmid, "VM.Audit"))
            json_array_append_new(c->data, sim_ct_list_entry(c->s, ct));
}

static void h_current(struct sim_call *c)
{
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    c->data = sim_ct_list_entry(c->s, ct);
    json_object_set_new(c->data, "ha", json_pack("{s:i}", "managed", 0));
}

/* GET config: the pending values in place unless `current` (as for VMs);
 * with `snapshot`, that snapshot's section and the file's digest
 * (load_snapshot_config). */
static void h_config(struct sim_call *c)
{
    const char *snap = call_str(c, "snapshot");
    if (snap && *snap && call_bool(c, "current", false)) {
        const char *why = "cannot use 'snapshot' parameter with 'current'";
        call_param_fail(c, "snapshot", "%s", why);
        json_object_set_new(c->errors, "current", json_string(why));
        return;
    }
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    char *dg = sim_ct_digest(ct);
    if (snap && *snap) {
        json_t *sc = ct->snaps ? json_object_get(ct->snaps, snap) : NULL;
        if (sc) {
            c->data = json_deep_copy(sc);
            json_object_set_new(c->data, "digest", json_string(dg));
        } else {
            call_fail(c, 500, "snapshot '%s' does not exist", snap);
        }
        free(dg);
        return;
    }
    c->data = json_deep_copy(ct->conf);
    if (!call_bool(c, "current", false)) {
        json_object_update(c->data, ct->pending);
        size_t i;
        json_t *d;
        json_array_foreach(ct->pending_delete, i, d) json_object_del(c->data, json_string_value(d));
    }
    json_object_set_new(c->data, "digest", json_string(dg));
    free(dg);
}

/* GET pending (vm_pending), as for VMs. */
static void h_pending(struct sim_call *c)
{
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    char *dg = sim_ct_digest(ct);
    c->data = sim_pending_array(ct->conf, ct->pending, ct->pending_delete, dg);
    free(dg);
}

/* ---- config values -------------------------------------------------------- */

/* The schema of option k in this method's parameters (net0: "net[n]"). */
static json_t *option_schema(struct sim_call *c, const char *k)
{
    json_t *props = json_object_get(schema_method_parameters(c->m), "properties");
    json_t *p = json_object_get(props, k);
    size_t l = strlen(k);
    while (!p && l > 0 && isdigit((unsigned char)k[l - 1]))
        l--;
    if (p || l == 0 || l == strlen(k))
        return p;
    char fam[64];
    snprintf(fam, sizeof fam, "%.*s[n]", (int)l, k);
    return json_object_get(props, fam);
}

/* A parameter's text (form values are strings, JSON bodies may carry numbers). */
static char *value_text(json_t *v)
{
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return xasprintf("%g", json_real_value(v));
    if (json_is_boolean(v))
        return xstrdup(json_is_true(v) ? "1" : "0");
    return xstrdup("");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* netN as pct writes it: a hwaddr made up when missing, type=veth, `name`
 * first and the other keys sorted (print_lxc_network). */
static json_t *net_value(struct sim *s, const char *v)
{
    json_t *kv = json_object();
    char *dup = xstrdup(v), *save = NULL;
    for (char *p = strtok_r(dup, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        if (eq) {
            *eq = '\0';
            json_object_set_new(kv, p, json_string(eq + 1));
        }
    }
    free(dup);
    if (!json_object_get(kv, "hwaddr")) {
        char mac[18];
        sim_new_mac(s, mac);
        json_object_set_new(kv, "hwaddr", json_string(mac));
    }
    if (!json_object_get(kv, "type"))
        json_object_set_new(kv, "type", json_string("veth"));
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    const char *name = json_string_value(json_object_get(kv, "name"));
    if (name)
        buf_printf(&b, "name=%s", name);
    json_object_del(kv, "name");
    const char **keys = xcalloc(json_object_size(kv) + 1, sizeof *keys);
    size_t n = 0;
    const char *k;
    json_t *val;
    json_object_foreach(kv, k, val) keys[n++] = k;
    qsort(keys, n, sizeof *keys, cmp_str);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s=%s", b.len ? "," : "", keys[i],
                   json_string_value(json_object_get(kv, keys[i])));
    free(keys);
    json_decref(kv);
    json_t *r = json_string(buf_str(&b));
    buf_release(&b);
    return r;
}

/* A config value as GET config gives it back: integers and booleans as
 * numbers, the rest as strings. */
static json_t *conf_value(struct sim_call *c, const char *k, json_t *v)
{
    const char *type = json_string_value(json_object_get(option_schema(c, k), "type"));
    char *text = value_text(v);
    json_t *r;
    int64_t n = 0;
    if (type && (strcmp(type, "integer") == 0 || strcmp(type, "boolean") == 0))
        r = json_integer(parse_i64(text, &n) ? n : 0);
    else if (type && strcmp(type, "number") == 0)
        r = json_real(strtod(text, NULL));
    else if (str_starts(k, "net") && isdigit((unsigned char)k[3]))
        r = net_value(c->s, text);
    else
        r = json_string(text);
    free(text);
    return r;
}

/* ---- create --------------------------------------------------------------- */

/* Parameters of create that are not config options. */
static bool create_control(const char *k)
{
    static const char *const ctl[] = {"node",
                                      "vmid",
                                      "ostemplate",
                                      "password",
                                      "storage",
                                      "force",
                                      "restore",
                                      "unique",
                                      "pool",
                                      "ignore-unpack-errors",
                                      "ssh-public-keys",
                                      "bwlimit",
                                      "start",
                                      "ha-managed",
                                      "unprivileged",
                                      NULL};
    for (int i = 0; ctl[i]; i++)
        if (strcmp(ctl[i], k) == 0)
            return true;
    return false;
}

static bool mp_key(const char *k)
{
    return strcmp(k, "rootfs") == 0 ||
           (str_starts(k, "mp") && k[2] && strspn(k + 2, "0123456789") == strlen(k + 2));
}

bool lxc_vmid_unused(struct sim_call *c, int vmid)
{
    struct sim_node *space = c->s->o.standalone ? c->node : NULL;
    struct sim_vm *vm = sim_vm_find(c->s, space, vmid);
    struct sim_ct *ct = vm ? NULL : sim_ct_find(c->s, space, vmid);
    if (!vm && !ct)
        return true;
    call_fail(c, 500, "%s %d already exists on node '%s'", vm ? "VM" : "CT", vmid,
              vm ? vm->node->name : ct->node->name);
    return false;
}

/* The storage a container volume goes on: enabled here, with rootdir content. */
static bool rootdir_storage_ok(struct sim_call *c, const char *sid)
{
    struct sim_storage *st = sim_storage_find(c->node, sid);
    if (!st) {
        call_fail(c, 500, "storage '%s' does not exist", sid);
        return false;
    }
    if (!strstr(st->content, "rootdir")) {
        call_param_fail(c, "storage", "storage '%s' does not support container directories", sid);
        return false;
    }
    return true;
}

/* check_volume_access for the ostemplate (its content type), before the
 * worker looks for the file itself. */
static bool ostemplate_ok(struct sim_call *c, const char *tpl)
{
    const char *colon = strchr(tpl, ':');
    if (!colon) { /* a path: root only */
        if (!c->is_root)
            call_fail(c, 500, "Only root can pass arbitrary filesystem paths.");
        return c->is_root;
    }
    char sid[64];
    snprintf(sid, sizeof sid, "%.*s", (int)(colon - tpl), tpl);
    if (!sim_storage_find(c->node, sid)) {
        call_fail(c, 500, "storage '%s' does not exist", sid);
        return false;
    }
    const char *vtype = str_starts(colon + 1, "vztmpl/")   ? "vztmpl"
                        : str_starts(colon + 1, "iso/")    ? "iso"
                        : str_starts(colon + 1, "backup/") ? "backup"
                                                           : "images";
    if (strcmp(vtype, "vztmpl") != 0) {
        call_fail(c, 500, "unable to use volume %s - content type needs to be 'vztmpl'", tpl);
        return false;
    }
    return true;
}

static bool sshkeys_ok(struct sim_call *c)
{
    const char *keys = call_str(c, "ssh-public-keys");
    if (!keys || sshkeys_valid(keys, NULL))
        return true;
    call_fail(c, 500, "SSH public key validation error");
    return false;
}

/* A size alone, as pve-container's create tells one: /^\d+(\.\d+)?$/ over
 * the whole value ("8,size=..." is not: it names a volume "8"). */
static bool bare_size(const char *t)
{
    size_t n = strspn(t, "0123456789");
    if (n == 0)
        return false;
    if (t[n] == '.') {
        size_t f = strspn(t + n + 1, "0123456789");
        if (f == 0)
            return false;
        n += 1 + f;
    }
    return t[n] == '\0';
}

/* rootfs and mpN: "local-lvm:8" or "8" (on `storage`) allocate a volume of
 * that many GiB; each volume's storage is checked. Into *mps. */
static bool create_volumes(struct sim_call *c, const char *storage, json_t *mps)
{
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        if (!mp_key(k))
            continue;
        char *text = value_text(v);
        /* "volume=" is the format's default key: PVE prints it bare */
        const char *t = strncmp(text, "volume=", 7) == 0 ? text + 7 : text;
        json_object_set_new(mps, k,
                            bare_size(t) ? json_sprintf("%s:%s", storage, t) : json_string(t));
        free(text);
    }
    if (json_object_size(mps) && !json_object_get(mps, "rootfs")) {
        call_fail(c, 500, "mount points configured, but 'rootfs' not set - aborting");
        return false;
    }
    json_object_foreach(mps, k, v)
    {
        const char *vol = json_string_value(v);
        if (vol[0] == '/') { /* a bind or device mount */
            if (!c->is_root) {
                call_fail(c, 500, "Only root can pass arbitrary filesystem paths.");
                return false;
            }
            continue;
        }
        int vl = (int)strcspn(vol, ",");
        int sl = (int)strcspn(vol, ":");
        if (sl >= vl) { /* PVE::Storage::parse_volume_id */
            call_fail(c, 500, "unable to parse volume ID '%.*s'", vl, vol);
            return false;
        }
        char sid[64];
        snprintf(sid, sizeof sid, "%.*s", sl, vol);
        if (!rootdir_storage_ok(c, sid))
            return false;
    }
    return json_object_get(mps, "rootfs") || rootdir_storage_ok(c, storage);
}

static void h_create(struct sim_call *c)
{
    struct sim *s = c->s;
    int vmid = (int)call_int(c, "vmid", 0);
    if (call_bool(c, "restore", false)) {
        call_fail(c, 501, "pvesim does not simulate restoring a container from a backup");
        return;
    }
    if (!lxc_vmid_unused(c, vmid) || !sshkeys_ok(c))
        return;
    const char *pool = call_str(c, "pool");
    if (pool && !sim_pool_exists(s, pool)) { /* check_pool_exist: a raise_perm_exc */
        call_fail(c, 403, "Permission check failed (pool '%s' does not exist)", pool);
        return;
    }
    /* check_vm_perm, then the storages of the volumes it makes */
    static const char *const mps_keys[] = {"rootfs", "mp", NULL};
    if (!call_vm_allocate(c, vmid, pool) ||
        (call_str(c, "storage") &&
         !call_storage_space(c, call_str(c, "storage"), strlen(call_str(c, "storage")))) ||
        !call_storage_new_volumes(c, mps_keys))
        return;
    const char *storage = call_str(c, "storage") ? call_str(c, "storage") : "local";
    json_t *mps = json_object();
    if (!ostemplate_ok(c, call_str(c, "ostemplate")) || !create_volumes(c, storage, mps)) {
        json_decref(mps);
        return;
    }
    json_t *conf = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        if (!create_control(k) && !mp_key(k) && !str_starts(k, "unused"))
            json_object_set_new(conf, k, conf_value(c, k, v));
    }
    if (call_bool(c, "unprivileged", true))
        json_object_set_new(conf, "unprivileged", json_integer(1));
    /* create_and_lock_config: the config holds the create lock until the
     * worker writes the real one */
    struct sim_ct *ct = sim_ct_new(s, c->node, vmid);
    json_object_set_new(ct->conf, "lock", json_string("create"));
    struct sim_task *t = lxc_call_task(c, vmid, "vzcreate", TK_VZCREATE);
    json_object_set_new(t->args, "_conf", conf);
    json_object_set_new(t->args, "_mps", mps);
    json_object_set_new(t->args, "_storage", json_string(storage));
}

/* ---- power ---------------------------------------------------------------- */

static bool skiplock_ok(struct sim_call *c)
{
    if (!call_bool(c, "skiplock", false) || c->is_root)
        return true;
    call_param_fail(c, "skiplock", "Only root may use this option.");
    return false;
}

/* check_running: a container that does not exist is not running. */
static bool ct_running(struct sim_call *c)
{
    struct sim_ct *ct = sim_ct_find(c->s, c->node, (int)call_int(c, "vmid", 0));
    return ct && ct->running && ct->node->state != NODE_OFFLINE;
}

static void h_start(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (!skiplock_ok(c))
        return;
    if (ct_running(c)) {
        call_fail(c, 500, "CT %d already running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzstart", TK_VZSTART);
}

static void h_stop(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (!skiplock_ok(c))
        return;
    if (!ct_running(c)) {
        call_fail(c, 500, "CT %d not running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzstop", TK_VZSTOP);
}

static void h_shutdown(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (!ct_running(c)) {
        call_fail(c, 500, "CT %d not running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzshutdown", TK_VZSHUTDOWN);
}

static void h_reboot(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (!ct_running(c)) { /* PVE's words: "VM", not "CT" */
        call_fail(c, 500, "VM %d not running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzreboot", TK_VZREBOOT);
}

/* suspend and resume ("experimental" in PVE): lxc-checkpoint in a worker. */
static void h_suspend(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (!ct_running(c)) {
        call_fail(c, 500, "CT %d not running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzsuspend", TK_VZSUSPEND);
}

static void h_resume(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    if (ct_running(c)) {
        call_fail(c, 500, "CT %d already running", vmid);
        return;
    }
    lxc_call_task(c, vmid, "vzresume", TK_VZRESUME);
}

/* ---- destroy -------------------------------------------------------------- */

static void h_destroy(struct sim_call *c)
{
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    if (json_integer_value(json_object_get(ct->conf, "protection"))) {
        call_fail(c, 500, "can't remove CT %d - protection mode enabled", ct->vmid);
        return;
    }
    if (sim_ct_lock(ct)) {
        call_fail(c, 500, "CT is locked (%s)", sim_ct_lock(ct));
        return;
    }
    if (!call_bool(c, "force", false) && ct_running(c)) {
        call_fail(c, 500, "unable to destroy CT %d - container is running", ct->vmid);
        return;
    }
    lxc_call_task(c, ct->vmid, "vzdestroy", TK_VZDESTROY);
}

/* ---- config --------------------------------------------------------------- */

/* Options a running container takes at once (LXC_FASTPLUG_OPTIONS, and
 * what vmconfig_hotplug_pending changes live: memory, swap, CPU limits,
 * network); the rest waits for its next start. */
static bool hotplug(const char *k)
{
    static const char *const live[] = {
        "description", "onboot", "startup", "protection", "hostname", "hookscript", "cores",
        "tags",        "lock",   "memory",  "swap",       "cpulimit", "cpuunits",   NULL};
    for (int i = 0; live[i]; i++)
        if (strcmp(live[i], k) == 0)
            return true;
    return str_starts(k, "net") && isdigit((unsigned char)k[3]);
}

static json_t *split_list(const char *s)
{
    json_t *a = json_array();
    while (s && *s) {
        size_t n = strcspn(s, ",; \t\n");
        if (n)
            json_array_append_new(a, json_stringn(s, n));
        s += n;
        s += strspn(s, ",; \t\n");
    }
    return a;
}

static bool config_option(const char *k)
{
    return strcmp(k, "node") != 0 && strcmp(k, "vmid") != 0 && strcmp(k, "digest") != 0 &&
           strcmp(k, "delete") != 0 && strcmp(k, "revert") != 0;
}

/* update_pct_config's checks of `delete` and `revert`, and of values it refuses. */
static bool update_checks(struct sim_call *c, struct sim_ct *ct, json_t *del, json_t *rev)
{
    size_t i;
    json_t *d;
    json_array_foreach(rev, i, d)
    {
        const char *k = json_string_value(d);
        if (!option_schema(c, k) || !config_option(k)) {
            call_param_fail(c, "revert", "unknown option '%s'", k);
            return false;
        }
        if (json_object_get(c->params, k)) {
            call_param_fail(c, "revert", "you can't use '-%s' and '-revert %s' at the same time", k,
                            k);
            return false;
        }
    }
    json_array_foreach(del, i, d)
    {
        const char *k = json_string_value(d);
        if (!option_schema(c, k) || !config_option(k)) {
            call_param_fail(c, "delete", "unknown option '%s'", k);
            return false;
        }
        if (json_object_get(c->params, k)) {
            call_param_fail(c, "delete", "you can't use '-%s' and -delete %s' at the same time", k,
                            k);
            return false;
        }
        for (size_t j = 0; j < json_array_size(rev); j++)
            if (strcmp(json_string_value(json_array_get(rev, j)), k) == 0) {
                call_param_fail(c, "delete",
                                "you can't use '-delete %s' and '-revert %s' at the same time", k,
                                k);
                return false;
            }
    }
    json_array_foreach(del, i, d)
    {
        const char *k = json_string_value(d);
        if (!json_object_get(ct->conf, k) && !json_object_get(ct->pending, k))
            continue; /* "cannot delete '...' - not set in current configuration!" (a warning) */
        if (strcmp(k, "memory") == 0 || strcmp(k, "rootfs") == 0 || strcmp(k, "ostype") == 0) {
            call_fail(c, 500, "unable to delete required option '%s'", k);
            return false;
        }
        if (strcmp(k, "unprivileged") == 0) {
            call_fail(c, 500, "unable to delete read-only option: '%s'", k);
            return false;
        }
    }
    if (json_object_get(c->params, "unprivileged")) {
        call_fail(c, 500, "unable to modify read-only option: 'unprivileged'");
        return false;
    }
    return true;
}

static void drop_pending(struct sim_ct *ct, const char *k)
{
    json_object_del(ct->pending, k);
    size_t i;
    json_t *d;
    json_array_foreach(ct->pending_delete, i, d) if (strcmp(json_string_value(d), k) == 0)
    {
        json_array_remove(ct->pending_delete, i);
        break;
    }
}

/* Write the change: at once when stopped, the hotpluggable part at once
 * when running and the rest pending. Deletions, then new values, each in
 * sorted order as vmconfig_apply_pending takes them: a mount point's
 * volume leaving it becomes unusedN (sim_ct_delete_key, sim_ct_set_key),
 * an unusedN's deletion (hotplugged too) frees its volume. */
static void update_conf(struct sim_call *c, struct sim_ct *ct, json_t *del, json_t *rev)
{
    bool running = ct->running;
    size_t i;
    json_t *d;
    json_array_foreach(rev, i, d) drop_pending(ct, json_string_value(d));
    const char **names = sim_ct_sorted(del);
    for (i = 0; names[i]; i++) {
        const char *k = names[i];
        drop_pending(ct, k);
        if (!json_object_get(ct->conf, k))
            continue;
        if (!running || hotplug(k) || str_starts(k, "unused"))
            sim_ct_delete_key(c->s, ct, k);
        else
            json_array_append_new(ct->pending_delete, json_string(k));
    }
    free(names);
    names = sim_ct_sorted(c->params);
    for (i = 0; names[i]; i++) {
        const char *k = names[i];
        if (!config_option(k))
            continue;
        drop_pending(ct, k);
        json_t *val = conf_value(c, k, json_object_get(c->params, k));
        if (!running || hotplug(k))
            sim_ct_set_key(c->s, ct, k, val);
        else
            json_object_set_new(ct->pending, k, val);
    }
    free(names);
    sim_ct_drop_reattached(ct);
    c->s->dirty = true;
}

static void h_config_put(struct sim_call *c)
{
    size_t opts = 0;
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v) opts +=
        strcmp(k, "node") && strcmp(k, "vmid") && strcmp(k, "digest");
    if (!opts) {
        call_fail(c, 500, "no options specified");
        return;
    }
    struct sim_ct *ct = lxc_load_ct(c);
    if (!ct)
        return;
    if (!(ct = sim_ct_flock_wait(c->s, ct, CONFIG_LOCK_TIMEOUT))) {
        char lf[96];
        call_fail(c, 500, "can't lock file '%s' - got timeout",
                  sim_ct_lockfile((int)call_int(c, "vmid", 0), lf));
        return;
    }
    json_t *del = split_list(call_str(c, "delete")), *rev = split_list(call_str(c, "revert"));
    const char *digest = call_str(c, "digest");
    char *cur = sim_ct_digest(ct);
    if (sim_ct_lock(ct))
        call_fail(c, 500, "CT is locked (%s)", sim_ct_lock(ct));
    else if (digest && *digest && strcmp(cur, digest) != 0)
        call_fail(c, 500,
                  "detected modified configuration - file changed by other user? Try "
                  "again.");
    else if (update_checks(c, ct, del, rev)) {
        update_conf(c, ct, del, rev);
        c->data = json_null();
    }
    free(cur);
    json_decref(del);
    json_decref(rev);
    sim_ct_flock_release(c->s, ct);
}

const struct sim_route sim_routes_lxc[] = {
    {"GET", "/nodes/{node}/lxc", h_list},
    {"POST", "/nodes/{node}/lxc", h_create},
    {"DELETE", "/nodes/{node}/lxc/{vmid}", h_destroy},
    {"GET", "/nodes/{node}/lxc/{vmid}/status/current", h_current},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/start", h_start},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/stop", h_stop},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/shutdown", h_shutdown},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/reboot", h_reboot},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/suspend", h_suspend},
    {"POST", "/nodes/{node}/lxc/{vmid}/status/resume", h_resume},
    {"GET", "/nodes/{node}/lxc/{vmid}/config", h_config},
    {"PUT", "/nodes/{node}/lxc/{vmid}/config", h_config_put},
    {"GET", "/nodes/{node}/lxc/{vmid}/pending", h_pending},
    {NULL, NULL, NULL},
};
