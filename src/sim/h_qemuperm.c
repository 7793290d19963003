/* h_qemuperm: the privilege checks qemu-server's API makes per config
 * option (API2/Qemu.pm): which privilege each option written or deleted
 * needs ($check_vm_modify_config_perm), the storages and volumes a drive
 * names ($check_storage_access, PVE::Storage::check_volume_access), the
 * bridges a network device uses (check_bridge_access and guest-common's
 * check_vnet_access: SDN.Use), and those the update worker makes on the
 * values it replaces (drives, serial, usb, hostpci, tags, old bridges).
 *
 * Every check passes in open mode (perm.h); root@pam (not its tokens)
 * skips those qemu-server skips for it. With s->mu held. */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct qperr {
    int status; /* 403: a permission exception; 500: a plain die */
    char *msg;
};

static bool deny(struct qperr *e, int status, char *msg)
{
    free(e->msg);
    e->status = status;
    e->msg = msg;
    return false;
}

/* RPCEnvironment check (every privilege) or check_any (one of them) */
static bool check(struct sim_call *c, const char *path, const char *const *privs, bool any,
                  bool noerr, struct qperr *e)
{
    for (int i = 0; privs[i]; i++) {
        bool has = call_can(c, path, privs[i]);
        if (any && has)
            return true;
        if (!any && !has)
            return noerr ? false
                         : deny(e, 403,
                                xasprintf("Permission check failed (%s, %s)", path, privs[i]));
    }
    if (!any || noerr)
        return !any;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_printf(&b, "Permission check failed (%s, ", path);
    for (int i = 0; privs[i]; i++)
        buf_printf(&b, "%s%s", i ? "|" : "", privs[i]);
    buf_addc(&b, ')');
    return deny(e, 403, buf_take(&b));
}

static bool check1(struct sim_call *c, const char *path, const char *priv, struct qperr *e)
{
    const char *privs[] = {priv, NULL};
    return check(c, path, privs, false, false, e);
}

/* check_vm_perm: on the pool (when given, never fatal), else on the VM */
static bool vm_perm(struct sim_call *c, int vmid, const char *pool, const char *const *privs,
                    bool any, struct qperr *e)
{
    if (pool) {
        char *pp = xasprintf("/pool/%s", pool);
        bool ok = check(c, pp, privs, any, true, e);
        free(pp);
        if (ok)
            return true;
    }
    char path[32];
    snprintf(path, sizeof path, "/vms/%d", vmid);
    return check(c, path, privs, any, false, e);
}

static bool vm_perm1(struct sim_call *c, int vmid, const char *pool, const char *priv,
                     struct qperr *e)
{
    const char *privs[] = {priv, NULL};
    return vm_perm(c, vmid, pool, privs, false, e);
}

/* Does k match prefix followed by a number (up to max)? */
static bool indexed(const char *k, const char *prefix, int max)
{
    size_t pl = strlen(prefix);
    if (strncmp(k, prefix, pl) != 0 || !k[pl] || strspn(k + pl, "0123456789") != strlen(k + pl))
        return false;
    return max < 0 || (strlen(k + pl) <= 3 && atoi(k + pl) <= max);
}

/* PVE::QemuServer::Drive::is_valid_drivename */
static bool drivename(const char *k)
{
    return indexed(k, "ide", 3) || indexed(k, "sata", 5) || indexed(k, "scsi", 30) ||
           indexed(k, "virtio", 15) || strcmp(k, "efidisk0") == 0 || strcmp(k, "tpmstate0") == 0;
}

/* A property string's value of key (or with key "file", its first part
 * without a name): a new string, NULL when absent. */
static char *prop_get(const char *val, const char *key)
{
    bool first = true;
    size_t kl = strlen(key);
    for (const char *q = val; q && *q; first = false) {
        size_t l = strcspn(q, ",");
        const char *eq = memchr(q, '=', l);
        if (!eq && first && strcmp(key, "file") == 0)
            return xstrndup(q, l);
        if (eq && (size_t)(eq - q) == kl && strncmp(q, key, kl) == 0)
            return xstrndup(eq + 1, l - kl - 1);
        q += l;
        if (*q)
            q++;
    }
    return NULL;
}

static bool drive_cdrom(const char *val)
{
    char *m = prop_get(val, "media");
    bool cd = m && strcmp(m, "cdrom") == 0;
    free(m);
    return cd;
}

/* drive_is_cloudinit: a volume named vm-<vmid>-cloudinit (or "cloudinit") */
static bool drive_cloudinit(const char *file)
{
    const char *colon = file ? strchr(file, ':') : NULL;
    const char *name = colon ? colon + 1 : file;
    if (!name)
        return false;
    const char *slash = strrchr(name, '/');
    if (slash)
        name = slash + 1;
    return strcmp(name, "cloudinit") == 0 ||
           (str_starts(name, "vm-") && strstr(name, "-cloudinit") != NULL);
}

/* ---- $check_vm_modify_config_perm ------------------------------------------ */

enum cls { C_NONE, C_CPU, C_MEM, C_HW, C_GEN, C_POWER, C_DISK, C_CI };
enum { V7 = 1, V8 = 2, V9 = 4, VALL = 7 };

static const struct optcls {
    const char *name;
    enum cls cls;
    int rel;
} optcls[] = {
    {"cores", C_CPU, VALL},         {"cpu", C_CPU, VALL},
    {"runningcpu", C_CPU, V8 | V9}, {"cpulimit", C_CPU, VALL},
    {"cpuunits", C_CPU, VALL},      {"numa", C_CPU, VALL},
    {"smp", C_CPU, VALL},           {"sockets", C_CPU, VALL},
    {"vcpus", C_CPU, VALL},         {"memory", C_MEM, VALL},
    {"balloon", C_MEM, VALL},       {"shares", C_MEM, VALL},
    {"allow-ksm", C_MEM, V9},       {"acpi", C_HW, VALL},
    {"hotplug", C_HW, VALL},        {"kvm", C_HW, VALL},
    {"machine", C_HW, VALL},        {"runningmachine", C_HW, V8 | V9},
    {"scsihw", C_HW, VALL},         {"smbios1", C_HW, VALL},
    {"tablet", C_HW, VALL},         {"vga", C_HW, VALL},
    {"watchdog", C_HW, VALL},       {"audio0", C_HW, VALL},
    {"rng0", C_HW, V8 | V9},        {"agent", C_GEN, VALL},
    {"autostart", C_GEN, VALL},     {"bios", C_GEN, VALL},
    {"description", C_GEN, VALL},   {"keyboard", C_GEN, VALL},
    {"localtime", C_GEN, VALL},     {"migrate_downtime", C_GEN, VALL},
    {"migrate_speed", C_GEN, VALL}, {"name", C_GEN, VALL},
    {"onboot", C_GEN, VALL},        {"ostype", C_GEN, VALL},
    {"protection", C_GEN, VALL},    {"reboot", C_GEN, VALL},
    {"startdate", C_GEN, VALL},     {"startup", C_GEN, VALL},
    {"tdf", C_GEN, VALL},           {"template", C_GEN, VALL},
    {"freeze", C_POWER, VALL},      {"boot", C_DISK, VALL},
    {"bootdisk", C_DISK, VALL},     {"vmstatestorage", C_DISK, VALL},
    {"cicustom", C_CI, VALL},       {"cipassword", C_CI, VALL},
    {"citype", C_CI, VALL},         {"ciuser", C_CI, VALL},
    {"ciupgrade", C_CI, V8 | V9},   {"nameserver", C_CI, VALL},
    {"searchdomain", C_CI, VALL},   {"sshkeys", C_CI, VALL},
};

static int rel_of(const struct sim_call *c)
{
    int v = c->s->o.pve_version;
    return v >= 9 ? V9 : v == 8 ? V8 : V7;
}

static enum cls class_of(const struct sim_call *c, const char *k)
{
    for (size_t i = 0; i < sizeof optcls / sizeof *optcls; i++)
        if (strcmp(optcls[i].name, k) == 0)
            return optcls[i].rel & rel_of(c) ? optcls[i].cls : C_NONE;
    return C_NONE;
}

static bool modify_perm(struct sim_call *c, int vmid, const char *pool, const char *k,
                        struct qperr *e)
{
    int rel = rel_of(c);
    /* checked elsewhere, by value */
    if (drivename(k) || strcmp(k, "cdrom") == 0 || strcmp(k, "tags") == 0 ||
        indexed(k, "unused", -1) || indexed(k, "serial", -1) || indexed(k, "usb", -1) ||
        (rel != V7 && (indexed(k, "hostpci", -1) || indexed(k, "virtiofs", -1))))
        return true;
    enum cls cl = class_of(c, k);
    static const char *const ci_net[] = {"VM.Config.Cloudinit", "VM.Config.Network", NULL};
    static const char *const disk_power[] = {"VM.Config.Disk", "VM.PowerMgmt", NULL};
    if (cl == C_CPU || indexed(k, "numa", -1))
        return vm_perm1(c, vmid, pool, "VM.Config.CPU", e);
    if (cl == C_MEM)
        return vm_perm1(c, vmid, pool, "VM.Config.Memory", e);
    if (cl == C_HW)
        return vm_perm1(c, vmid, pool, "VM.Config.HWType", e);
    if (cl == C_GEN) {
        if (!vm_perm1(c, vmid, pool, "VM.Config.Options", e))
            return false;
        return strcmp(k, "startup") != 0 || check1(c, "/", "Sys.Modify", e);
    }
    if (cl == C_POWER)
        return vm_perm1(c, vmid, pool, "VM.PowerMgmt", e);
    if (cl == C_DISK)
        return vm_perm1(c, vmid, pool, "VM.Config.Disk", e);
    if (indexed(k, "net", -1) || (rel == V9 && strcmp(k, "running-nets-host-mtu") == 0) ||
        (rel == V7 && indexed(k, "ipconfig", -1)))
        return vm_perm1(c, vmid, pool, "VM.Config.Network", e);
    if (cl == C_CI || indexed(k, "ipconfig", -1))
        return vm_perm(c, vmid, pool, ci_net, true, e);
    if (strcmp(k, "vmstate") == 0)
        return vm_perm(c, vmid, pool, disk_power, false, e);
    return deny(e, 500, xasprintf("only root can set '%s' config", k));
}

/* Parameters the create and update handlers take out before the check */
static bool not_an_option(const char *k)
{
    static const char *const skip[] = {"node",
                                       "vmid",
                                       "digest",
                                       "background_delay",
                                       "skip_cloud_init",
                                       "import-working-storage",
                                       "skiplock",
                                       "delete",
                                       "revert",
                                       "force",
                                       "archive",
                                       "bwlimit",
                                       "pool",
                                       "start",
                                       "ha-managed",
                                       "storage",
                                       "unique",
                                       "live-restore",
                                       NULL};
    if (k[0] == '_')
        return true;
    for (int i = 0; skip[i]; i++)
        if (strcmp(skip[i], k) == 0)
            return true;
    return false;
}

static bool modify_perm_params(struct sim_call *c, int vmid, const char *pool, struct qperr *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        if (!not_an_option(k) && !modify_perm(c, vmid, pool, k, e))
            return false;
    }
    return true;
}

/* ---- storages and volumes ---------------------------------------------------- */

/* parse_volname, as far as check_volume_access needs it: the content
 * type and the owning VM (0: none) */
static const char *volume_type(const char *volname, int *owner)
{
    *owner = 0;
    static const char *const dirs[] = {"iso/", "vztmpl/", "import/", "snippets/", NULL};
    for (int i = 0; dirs[i]; i++)
        if (str_starts(volname, dirs[i])) {
            static const char *const types[] = {"iso", "vztmpl", "import", "snippets"};
            return types[i];
        }
    if (str_starts(volname, "backup/")) {
        const char *q = strstr(volname, "vzdump-");
        if (q) {
            q += 7;
            q += strcspn(q, "-");
            if (*q == '-')
                *owner = atoi(q + 1);
        }
        return "backup";
    }
    const char *slash = strrchr(volname, '/');
    const char *name = slash ? slash + 1 : volname;
    static const char *const pre[] = {"vm-", "base-", "subvol-", "basevol-", NULL};
    for (int i = 0; pre[i]; i++)
        if (str_starts(name, pre[i])) {
            *owner = atoi(name + strlen(pre[i]));
            return i >= 2 ? "rootdir" : "images";
        }
    return "images";
}

/* PVE::Storage::check_volume_access */
static bool volume_access(struct sim_call *c, int vmid, const char *volid, struct qperr *e)
{
    const char *colon = strchr(volid, ':');
    if (!colon || volid[0] == '/') {
        if (c->is_root)
            return true;
        return deny(e, 500,
                    xasprintf("Only root can pass arbitrary filesystem paths. at "
                              "/usr/share/perl5/PVE/Storage.pm line %d.",
                              c->s->o.pve_version >= 9 ? 651 : 581));
    }
    char *sid = xstrndup(volid, (size_t)(colon - volid));
    char *path = xasprintf("/storage/%s", sid);
    free(sid);
    bool ok = true;
    if (call_can(c, path, "Datastore.Allocate"))
        goto out;
    int owner;
    const char *type = volume_type(colon + 1, &owner);
    static const char *const read[] = {"Datastore.AllocateSpace", "Datastore.Audit", NULL};
    if (!strcmp(type, "iso") || !strcmp(type, "vztmpl") || !strcmp(type, "import")) {
        ok = check(c, path, read, true, false, e);
    } else if (owner && owner == vmid) {
        /* the owner */
    } else if (!strcmp(type, "backup") && owner) {
        char vp[32];
        snprintf(vp, sizeof vp, "/vms/%d", owner);
        ok = check1(c, path, "Datastore.AllocateSpace", e) && check1(c, vp, "VM.Backup", e);
    } else if (owner) {
        char vp[32];
        snprintf(vp, sizeof vp, "/vms/%d", owner);
        ok = check1(c, path, "Datastore.Audit", e) && check1(c, vp, "VM.Config.Disk", e);
    } else {
        ok = deny(e, 500, xasprintf("missing privileges to access %s", volid));
    }
out:
    free(path);
    return ok;
}

/* NEW_DISK_RE: [STORAGE:]SIZE; the storage in *sid (may be empty) */
static bool new_disk(const char *file, char **sid)
{
    const char *colon = strchr(file, ':');
    const char *size = colon ? colon + 1 : file;
    size_t sl = strlen(size);
    if (sl == 0 || strspn(size, "0123456789.") != sl || !isdigit((unsigned char)size[0]))
        return false;
    *sid = colon ? xstrndup(file, (size_t)(colon - file)) : xstrdup("");
    return true;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The parameters' keys, sorted (Perl's `sort keys`): a new array of
 * borrowed strings, *n of them. */
static const char **sorted_keys(json_t *params, size_t *n)
{
    const char **keys = xmalloc((json_object_size(params) + 1) * sizeof *keys);
    const char *k;
    json_t *v;
    *n = 0;
    json_object_foreach(params, k, v) keys[(*n)++] = k;
    qsort(keys, *n, sizeof *keys, key_cmp);
    return keys;
}

/* $check_storage_access, import-from left out */
static bool storage_access(struct sim_call *c, int vmid, const char *defstore, struct qperr *e)
{
    size_t n;
    const char **keys = sorted_keys(c->params, &n);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const char *val = json_string_value(json_object_get(c->params, keys[i]));
        if (!val || !drivename(keys[i]))
            continue;
        char *file = prop_get(val, "file"), *sid = NULL;
        bool cd = drive_cdrom(val);
        const char *colon = file ? strchr(file, ':') : NULL;
        if (!file || !*file || !strcmp(file, "none") || !strcmp(file, "cloudinit") ||
            (colon && !strcmp(colon + 1, "cloudinit"))) {
            /* nothing to check */
        } else if (cd && !strcmp(file, "cdrom")) {
            ok = check1(c, "/", "Sys.Console", e);
        } else if (!cd && new_disk(file, &sid)) {
            const char *st = *sid ? sid : defstore;
            if (st) {
                char *path = xasprintf("/storage/%s", st);
                ok = check1(c, path, "Datastore.AllocateSpace", e);
                free(path);
            }
        } else {
            ok = volume_access(c, vmid, file, e);
        }
        free(sid);
        free(file);
    }
    for (size_t i = 0; i < n && ok; i++) {
        const char *val = json_string_value(json_object_get(c->params, keys[i]));
        if (!val || !indexed(keys[i], "unused", -1))
            continue;
        char *file = prop_get(val, "file");
        if (file && strchr(file, ':'))
            ok = volume_access(c, vmid, file, e);
        free(file);
    }
    free(keys);
    const char *vss = call_str(c, "vmstatestorage");
    if (ok && vss) {
        char *path = xasprintf("/storage/%s", vss);
        ok = check1(c, path, "Datastore.AllocateSpace", e);
        free(path);
    }
    return ok;
}

/* ---- bridges: SDN.Use ----------------------------------------------------------- */

static int tag_cmp(const void *a, const void *b)
{
    char x[16], y[16];
    snprintf(x, sizeof x, "%d", *(const int *)a);
    snprintf(y, sizeof y, "%d", *(const int *)b);
    return strcmp(x, y); /* `sort keys`: as strings */
}

/* check_vnet_access for one netN value (zone localnetwork: pvesim has no
 * SDN vnets) */
static bool net_access(struct sim_call *c, const char *val, struct qperr *e)
{
    if (c->is_root || rel_of(c) == V7)
        return true;
    char *bridge = prop_get(val, "bridge"), *tag = prop_get(val, "tag");
    char *trunks = prop_get(val, "trunks");
    bool ok = true;
    if (!bridge)
        goto out;
    if (tag && atoi(tag) != 0) {
        char *p = xasprintf("/sdn/zones/localnetwork/%s/%s", bridge, tag);
        ok = check1(c, p, "SDN.Use", e);
        free(p);
    }
    if (ok && trunks && *trunks) { /* get_tags_from_trunk: "10;20-22" */
        int tags[4096], nt = 0;
        for (char *q = trunks; *q && nt < 4096;) {
            int a = atoi(q), b = a;
            q += strspn(q, "0123456789");
            if (*q == '-') {
                b = atoi(++q);
                q += strspn(q, "0123456789");
            }
            for (int t = a; t <= b && nt < 4096; t++) {
                bool seen = false;
                for (int i = 0; i < nt && !seen; i++)
                    seen = tags[i] == t;
                if (!seen)
                    tags[nt++] = t;
            }
            q += strspn(q, "; ");
            if (*q && !isdigit((unsigned char)*q))
                break;
        }
        qsort(tags, (size_t)nt, sizeof *tags, tag_cmp);
        for (int i = 0; i < nt && ok; i++) {
            char *p = xasprintf("/sdn/zones/localnetwork/%s/%d", bridge, tags[i]);
            ok = check1(c, p, "SDN.Use", e);
            free(p);
        }
    }
    if (ok && !(tag && atoi(tag) != 0) && !(trunks && *trunks)) {
        char *p = xasprintf("/sdn/zones/localnetwork/%s", bridge);
        ok = check1(c, p, "SDN.Use", e);
        free(p);
    }
out:
    free(bridge);
    free(tag);
    free(trunks);
    return ok;
}

/* check_bridge_access over the parameters' netN, sorted */
static bool bridge_access(struct sim_call *c, struct qperr *e)
{
    size_t n;
    const char **keys = sorted_keys(c->params, &n);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const char *val = json_string_value(json_object_get(c->params, keys[i]));
        if (val && indexed(keys[i], "net", -1))
            ok = net_access(c, val, e);
    }
    free(keys);
    return ok;
}

/* ---- value-dependent devices ---------------------------------------------------- */

/* check_usb_perm */
static bool usb_perm(struct sim_call *c, int vmid, const char *pool, const char *k, const char *val,
                     struct qperr *e)
{
    if (c->is_root)
        return true;
    if (!vm_perm1(c, vmid, pool, "VM.Config.HWType", e))
        return false;
    char *host = prop_get(val, "host"), *map = prop_get(val, "mapping");
    if (!host && !map && !strchr(val, '=')) /* the default key is host */
        host = prop_get(val, "file");
    bool ok = true;
    if (host) {
        if (strcasecmp(host, "spice") != 0)
            ok = deny(e, 500, xasprintf("only root can set '%s' config for real devices", k));
    } else if (map) {
        char *p = xasprintf("/mapping/usb/%s", map);
        ok = check1(c, p, "Mapping.Use", e);
        free(p);
    } else {
        ok = deny(e, 500, xstrdup("either 'host' or 'mapping' must be set."));
    }
    free(host);
    free(map);
    return ok;
}

/* check_hostpci_perm (romfile's parameter exception left out) */
static bool hostpci_perm(struct sim_call *c, int vmid, const char *pool, const char *k,
                         const char *val, struct qperr *e)
{
    if (c->is_root)
        return true;
    if (rel_of(c) == V7)
        return deny(e, 500, xasprintf("only root can set '%s' config", k));
    char *host = prop_get(val, "host"), *map = prop_get(val, "mapping");
    if (!host && !map && !strchr(val, '='))
        host = prop_get(val, "file");
    bool ok;
    if (host) {
        ok = deny(e, 500, xasprintf("only root can set '%s' config for non-mapped devices", k));
    } else if (map) {
        char *p = xasprintf("/mapping/pci/%s", map);
        ok = check1(c, p, "Mapping.Use", e) && vm_perm1(c, vmid, pool, "VM.Config.HWType", e);
        free(p);
    } else {
        ok = deny(e, 500, xstrdup("either 'host' or 'mapping' must be set."));
    }
    free(host);
    free(map);
    return ok;
}

/* $check_vm_create_serial_perm, check_vm_create_usb_perm,
 * check_vm_create_hostpci_perm */
static bool create_device_perms(struct sim_call *c, int vmid, const char *pool, struct qperr *e)
{
    if (c->is_root)
        return true;
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        const char *val = json_string_value(v);
        if (!val || !indexed(k, "serial", -1))
            continue;
        if (strcmp(val, "socket") == 0) {
            if (!vm_perm1(c, vmid, pool, "VM.Config.HWType", e))
                return false;
        } else {
            return deny(e, 500, xasprintf("only root can set '%s' config for real devices", k));
        }
    }
    json_object_foreach(c->params, k, v)
    {
        const char *val = json_string_value(v);
        if (val && indexed(k, "usb", -1) && !usb_perm(c, vmid, pool, k, val, e))
            return false;
    }
    json_object_foreach(c->params, k, v)
    {
        const char *val = json_string_value(v);
        if (val && indexed(k, "hostpci", -1) && rel_of(c) != V7 &&
            !hostpci_perm(c, vmid, pool, k, val, e))
            return false;
    }
    return true;
}

/* ---- the handlers' entry points -------------------------------------------------- */

static bool fail_call(struct sim_call *c, struct qperr *e)
{
    call_fail(c, e->status, "%s", e->msg);
    free(e->msg);
    return false;
}

bool qemu_perm_create(struct sim_call *c, int vmid, const char *pool, const char *storage)
{
    if (call_perm_open(c))
        return true;
    struct qperr e = {0};
    if (!storage_access(c, vmid, storage, &e))
        return fail_call(c, &e);
    if (c->is_root)
        return true;
    if (!modify_perm_params(c, vmid, pool, &e) || !create_device_perms(c, vmid, pool, &e) ||
        !bridge_access(c, &e))
        return fail_call(c, &e);
    return true;
}

char *qemu_perm_create_worker(struct sim_call *c, int vmid)
{
    if (call_perm_open(c))
        return NULL;
    struct qperr e = {0};
    /* assert_tag_permissions: VM.Config.Options on the VM (no pool); every
     * tag is free to users by the default user-tag-access */
    if (json_object_get(c->params, "tags") && !vm_perm1(c, vmid, NULL, "VM.Config.Options", &e))
        return e.msg;
    return NULL;
}

bool qemu_perm_update(struct sim_call *c, int vmid, json_t *del)
{
    if (call_perm_open(c))
        return true;
    struct qperr e = {0};
    if (!c->is_root) {
        size_t i;
        json_t *d;
        json_array_foreach(del, i, d)
        {
            const char *k = json_string_value(d);
            if (!modify_perm(c, vmid, NULL, strcmp(k, "cdrom") ? k : "ide2", &e))
                return fail_call(c, &e);
        }
        if (!modify_perm_params(c, vmid, NULL, &e))
            return fail_call(c, &e);
    }
    if (!storage_access(c, vmid, NULL, &e) || !bridge_access(c, &e))
        return fail_call(c, &e);
    return true;
}

/* $check_drive_perms of the update worker */
static bool drive_perms(struct sim_call *c, int vmid, const char *val, struct qperr *e)
{
    static const char *const ci[] = {"VM.Config.Cloudinit", "VM.Config.CDROM", NULL};
    char *file = prop_get(val, "file");
    bool ok;
    if (drive_cloudinit(file))
        ok = vm_perm(c, vmid, NULL, ci, false, e);
    else if (drive_cdrom(val))
        ok = vm_perm1(c, vmid, NULL, "VM.Config.CDROM", e);
    else
        ok = vm_perm1(c, vmid, NULL, "VM.Config.Disk", e);
    free(file);
    return ok;
}

static const char *conf_str(json_t *conf, const char *k)
{
    return json_string_value(json_object_get(conf, k));
}

/* The value a key holds (current or pending) as a string, "" for a
 * number, NULL when unset */
static const char *held(struct sim_vm *vm, const char *k)
{
    json_t *v = json_object_get(vm->conf, k);
    if (!v)
        v = json_object_get(vm->pending, k);
    return !v ? NULL : json_is_string(v) ? json_string_value(v) : "";
}

char *qemu_perm_update_worker(struct sim_call *c, struct sim_vm *vm, json_t *del)
{
    if (call_perm_open(c))
        return NULL;
    struct qperr e = {0};
    int vmid = vm->vmid;
    size_t i;
    json_t *d;
    json_array_foreach(del, i, d)
    {
        const char *k = json_string_value(d);
        if (!strcmp(k, "cdrom"))
            k = "ide2";
        const char *val = held(vm, k);
        if (!val)
            continue; /* "cannot delete '...' - not set in current configuration!" */
        bool ok = true;
        if (indexed(k, "unused", -1))
            ok = vm_perm1(c, vmid, NULL, "VM.Config.Disk", &e);
        else if (drivename(k))
            ok = drive_perms(c, vmid, val, &e);
        else if (indexed(k, "serial", -1)) {
            if (!strcmp(val, "socket"))
                ok = vm_perm1(c, vmid, NULL, "VM.Config.HWType", &e);
            else if (!c->is_root)
                ok = deny(&e, 500,
                          xasprintf("only root can delete '%s' config for real devices", k));
        } else if (indexed(k, "usb", -1))
            ok = usb_perm(c, vmid, NULL, k, val, &e);
        else if (indexed(k, "hostpci", -1) && rel_of(c) != V7)
            ok = hostpci_perm(c, vmid, NULL, k, val, &e);
        else if (!strcmp(k, "tags"))
            ok = vm_perm1(c, vmid, NULL, "VM.Config.Options", &e);
        else if (indexed(k, "net", -1) && *val)
            ok = net_access(c, val, &e);
        if (!ok)
            return e.msg;
    }
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v)
    {
        const char *val = json_string_value(v);
        if (not_an_option(k) || !val)
            continue;
        const char *pend = conf_str(vm->pending, k);
        if (pend && !strcmp(pend, val))
            continue; /* nothing changed */
        const char *old = conf_str(vm->conf, k);
        bool ok = true;
        if (drivename(k)) {
            ok = (!old || !*old || drive_perms(c, vmid, old, &e)) && drive_perms(c, vmid, val, &e);
        } else if (indexed(k, "serial", -1)) {
            if ((!old || !strcmp(old, "socket")) && !strcmp(val, "socket"))
                ok = vm_perm1(c, vmid, NULL, "VM.Config.HWType", &e);
            else if (!c->is_root)
                ok = deny(&e, 500,
                          xasprintf("only root can modify '%s' config for real devices", k));
        } else if (indexed(k, "usb", -1)) {
            ok = (!old || !*old || usb_perm(c, vmid, NULL, k, old, &e)) &&
                 usb_perm(c, vmid, NULL, k, val, &e);
        } else if (indexed(k, "hostpci", -1) && rel_of(c) != V7) {
            ok = (!old || !*old || hostpci_perm(c, vmid, NULL, k, old, &e)) &&
                 hostpci_perm(c, vmid, NULL, k, val, &e);
        } else if (!strcmp(k, "tags")) {
            ok = vm_perm1(c, vmid, NULL, "VM.Config.Options", &e);
        } else if (indexed(k, "net", -1) && old && *old) {
            ok = net_access(c, old, &e);
        }
        if (!ok)
            return e.msg;
    }
    return NULL;
}
