/* h_qemu: VM list, create, clone, config (GET, PUT sync, POST async),
 * pending, resize and destroy — the synchronous checks with PVE's texts
 * (pve-api.md §6), and the VM operations the task engine completes. */
#include "common/sshkey.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/guestnet.h"
#include "sim/netconf.h"
#include "sim/qemu_ops.h"
#include "sim/sim.h"
#include "sim/sjson.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_LOCK_TIMEOUT 10.0
#define CREATE_LOCK_TIMEOUT 5.0

/* Parameters that steer a request but are not config options. */
static const char *const control_params[] = {
    "node",       "vmid",    "digest",       "skiplock",
    "delete",     "revert",  "force",        "background_delay",
    "storage",    "start",   "archive",      "pool",
    "unique",     "bwlimit", "live-restore", "import-working-storage",
    "ha-managed", NULL};

static bool is_control(const char *k)
{
    for (int i = 0; control_params[i]; i++)
        if (strcmp(control_params[i], k) == 0)
            return true;
    return false;
}

/* Options stored as JSON numbers in GET config (integer and boolean types). */
static bool int_option(const char *k)
{
    static const char *const ints[] = {"cores",  "sockets",   "vcpus",      "balloon",   "cpuunits",
                                       "shares", "onboot",    "protection", "template",  "numa",
                                       "tablet", "kvm",       "acpi",       "localtime", "freeze",
                                       "reboot", "autostart", NULL};
    for (int i = 0; ints[i]; i++)
        if (strcmp(ints[i], k) == 0)
            return true;
    return false;
}

/* Options that a running VM takes only at its next start (default hotplug
 * is network,disk,usb: CPU and memory changes stay pending). */
static bool needs_restart(const char *k)
{
    static const char *const cold[] = {"cores",   "sockets", "vcpus",  "memory", "cpu", "numa",
                                       "machine", "bios",    "ostype", "scsihw", NULL};
    for (int i = 0; cold[i]; i++)
        if (strcmp(cold[i], k) == 0)
            return true;
    return false;
}

static json_t *conf_value(struct sim *s, const char *k, json_t *v)
{
    if (json_is_boolean(v))
        return json_integer(json_is_true(v));
    const char *sv = json_string_value(v);
    if (int_option(k)) {
        int64_t n = 0;
        if (json_is_integer(v))
            return json_integer(json_integer_value(v));
        return json_integer(sv && parse_i64(sv, &n) ? n : 0);
    }
    if (strcmp(k, "memory") == 0 && s->o.pve_version < 8) {
        int64_t n = json_is_integer(v) ? json_integer_value(v) : atoll(sv ? sv : "0");
        return json_integer(n);
    }
    if (json_is_integer(v))
        return json_sprintf("%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return json_sprintf("%g", json_real_value(v));
    return json_string(sv ? sv : "");
}

char *qemu_noconf_msg(struct sim_node *n, int vmid)
{
    return xasprintf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", n->name,
                     vmid);
}

static struct sim_vm *load_vm(struct sim_call *c)
{
    int vmid = (int)call_int(c, "vmid", 0);
    struct sim_vm *vm = sim_vm_find(c->s, c->node, vmid);
    if (!vm) {
        char *m = qemu_noconf_msg(c->node, vmid);
        call_fail(c, 500, "%s", m);
        free(m);
    }
    return vm;
}

static const char *vm_lock(struct sim_vm *vm)
{
    return json_string_value(json_object_get(vm->conf, "lock"));
}

/* The UPID of a new task, as the call's result. */
static struct sim_task *start_task(struct sim_call *c, const char *type, int vmid,
                                   enum task_kind kind)
{
    char id[16];
    snprintf(id, sizeof id, "%d", vmid);
    struct sim_task *t = sim_task_new(c->s, c->node, type, id, call_owner(c), kind);
    t->vmid = vmid;
    t->args = json_deep_copy(c->params);
    if (json_object_get(c->params, "skiplock") && call_bool(c, "skiplock", false))
        json_object_set_new(t->args, "_skiplock", json_true());
    if (c->task_fault_exit)
        t->fault_exit = xstrdup(c->task_fault_exit);
    c->data = json_string(t->upid);
    return t;
}

/* ---- list and status entries ---------------------------------------- */

/* One VM of GET /nodes/{node}/qemu (PVE::QemuServer::vmstatus): written as
 * JSON text, from the derived values (no config parsing per answer). now:
 * sim_now(), read once per answer. */
void sim_vm_list_write(struct buf *b, struct sim *s, struct sim_vm *v, double now)
{
    const struct sim_vm_derived *d = sim_vm_derive(s, v);
    bool running = v->power != VM_STOPPED;
    int cpus = d->cpus > v->node->cpus ? v->node->cpus : d->cpus;
    char *p0 = sj_reserve(b, 512 + d->name_len + d->lock_len + d->tags_len), *p = p0;
    p = SJ_LIT(p, "{\"vmid\":");
    p = jsonw_put_int(p, v->vmid);
    p = running ? SJ_LIT(p, ",\"status\":\"running\",\"name\":")
                : SJ_LIT(p, ",\"status\":\"stopped\",\"name\":");
    p = sj_put_mem(p, d->name, d->name_len);
    p = SJ_LIT(p, ",\"cpus\":");
    p = jsonw_put_int(p, cpus);
    p = SJ_LIT(p, ",\"maxmem\":");
    p = jsonw_put_int(p, d->maxmem);
    p = SJ_LIT(p, ",\"maxdisk\":");
    p = jsonw_put_int(p, d->maxdisk);
    p = SJ_LIT(p, ",\"disk\":0,\"mem\":");
    p = jsonw_put_int(p, running ? d->maxmem / 3 : 0);
    if (running) {
        p = SJ_LIT(p, ",\"cpu\":0.02,\"uptime\":");
        p = jsonw_put_int(p, (int64_t)(now - v->started));
        p = SJ_LIT(p, ",\"netin\":123456,\"netout\":65432,\"pid\":");
        p = jsonw_put_int(p, 100000 + v->vmid);
    } else {
        p = SJ_LIT(p, ",\"cpu\":0.0,\"uptime\":0,\"netin\":0,\"netout\":0");
    }
    if (d->template)
        p = SJ_LIT(p, ",\"template\":1");
    if (d->lock) {
        p = SJ_LIT(p, ",\"lock\":");
        p = sj_put_mem(p, d->lock, d->lock_len);
    }
    if (d->tags) {
        p = SJ_LIT(p, ",\"tags\":");
        p = sj_put_mem(p, d->tags, d->tags_len);
    }
    if (s->o.pve_version < 8)
        p = SJ_LIT(p, ",\"diskread\":0,\"diskwrite\":0");
    if (s->o.pve_version >= 9) { /* the host's view of its memory; = mem here */
        p = SJ_LIT(p, ",\"memhost\":");
        p = jsonw_put_int(p, running ? d->maxmem / 3 : 0);
    }
    *p++ = '}';
    sj_commit(b, p0, p);
}

/* The same entry as a jansson object (status/current builds on it). */
json_t *sim_vm_list_entry(struct sim *s, struct sim_vm *v);
json_t *sim_vm_list_entry(struct sim *s, struct sim_vm *v)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    sim_vm_list_write(&b, s, v, sim_now(s));
    json_t *e = json_loadb(b.data, b.len, 0, NULL);
    buf_release(&b);
    return e;
}

/* PVE 9's vmstatus: the cgroup's pressure stall averages of a running VM
 * (not in /cluster/resources, which reads the RRD). */
void sim_vm_pressure(struct sim *s, struct sim_vm *v, json_t *e);
void sim_vm_pressure(struct sim *s, struct sim_vm *v, json_t *e)
{
    if (s->o.pve_version < 9 || v->power == VM_STOPPED)
        return;
    static const char *const keys[] = {"pressurecpusome",    "pressurecpufull",
                                       "pressureiosome",     "pressureiofull",
                                       "pressurememorysome", "pressurememoryfull"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        json_object_set_new(e, keys[i], json_real(i % 2 ? 0.0 : 0.12));
}

static void h_list(struct sim_call *c)
{
    struct sim *s = c->s;
    double now = sim_now(s);
    bool first = true;
    c->raw_set = true;
    buf_addc(&c->raw, '[');
    bool all = call_unrestricted(c);
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone || v->node != c->node || (!all && !call_can_vm(c, v->vmid, "VM.Audit")))
            continue;
        if (!first)
            buf_addc(&c->raw, ',');
        first = false;
        sim_vm_list_write(&c->raw, s, v, now);
        if (s->o.pve_version >= 9 && v->power != VM_STOPPED) { /* sim_vm_pressure's fields */
            buf_truncate(&c->raw, c->raw.len - 1);
            sj_lit(&c->raw, ",\"pressurecpusome\":0.12,\"pressurecpufull\":0.0,"
                            "\"pressureiosome\":0.12,\"pressureiofull\":0.0,"
                            "\"pressurememorysome\":0.12,\"pressurememoryfull\":0.0}");
        }
    }
    buf_addc(&c->raw, ']');
}

/* ---- ssh keys ---------------------------------------------------------- */

/* sshkeys arrive URL-encoded (the schema checked the charset); decode once
 * more and validate every non-empty line. */
static bool check_sshkeys(struct sim_call *c)
{
    const char *enc = call_str(c, "sshkeys");
    if (!enc)
        return true;
    char *keys = pct_decode(enc, strlen(enc), false, NULL);
    bool ok = sshkeys_valid(keys, NULL); /* what ssh-keygen -l accepts, line by line */
    free(keys);
    if (!ok)
        call_fail(c, 500, "SSH public key validation error");
    return ok;
}

/* ---- config ------------------------------------------------------------ */

/* Is `k` a config option of this method's schema (indexed families too)? */
static bool known_option(struct sim_call *c, const char *k)
{
    json_t *props = json_object_get(schema_method_parameters(c->m), "properties");
    if (json_object_get(props, k))
        return !is_control(k);
    size_t l = strlen(k);
    while (l > 0 && isdigit((unsigned char)k[l - 1]))
        l--;
    if (l == strlen(k) || l == 0)
        return false;
    char fam[64];
    snprintf(fam, sizeof fam, "%.*s[n]", (int)l, k);
    return json_object_get(props, fam) != NULL;
}

/* Split a pve-configid-list (',' ';' or spaces). */
static json_t *split_list(const char *s)
{
    json_t *a = json_array();
    while (s && *s) {
        size_t n = strcspn(s, ",; \t");
        if (n)
            json_array_append_new(a, json_stringn(s, n));
        s += n;
        if (*s)
            s++;
    }
    return a;
}

static int count_options(struct sim_call *c)
{
    int n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(c->params, k, v) n += !is_control(k);
    return n;
}

/* The synchronous checks shared by PUT and POST config, in PVE's order. */
static struct sim_vm *config_checks(struct sim_call *c)
{
    if (!check_sshkeys(c))
        return NULL;
    json_t *del = split_list(call_str(c, "delete"));
    size_t i;
    json_t *d;
    struct sim_vm *vm = NULL;
    if (count_options(c) == 0 && json_array_size(del) == 0 && !call_str(c, "revert")) {
        call_fail(c, 500, "no options specified");
        goto out;
    }
    json_array_foreach(del, i, d)
    {
        const char *k = json_string_value(d);
        if (strcmp(k, "cdrom") != 0 && !known_option(c, k) && strcmp(k, "lock") != 0) {
            call_param_fail(c, "delete", "unknown option '%s'", k);
            goto out;
        }
        if (json_object_get(c->params, k)) {
            call_param_fail(c, "delete", "you can't use '-%s' and -delete %s' at the same time", k,
                            k);
            goto out;
        }
    }
    /* the per-option privileges, the drives' storages, the bridges */
    if (!qemu_perm_update(c, (int)call_int(c, "vmid", 0), del))
        goto out;
    if (!(vm = load_vm(c)))
        goto out;
    const char *digest = call_str(c, "digest");
    if (digest) {
        char *cur = sim_vm_digest(vm);
        bool same = strcmp(cur, digest) == 0;
        free(cur);
        if (!same) {
            call_fail(c, 500, "checksum %s (file change by other user?)",
                      c->s->o.pve_version >= 8 ? "mismatch" : "missmatch");
            vm = NULL;
            goto out;
        }
    }
    if (vm_lock(vm) && !call_bool(c, "skiplock", false)) {
        call_fail(c, 500, "VM is locked (%s)", vm_lock(vm));
        vm = NULL;
        goto out;
    }
    json_t *balloon = json_object_get(c->params, "balloon");
    if (balloon) {
        json_t *bv = conf_value(c->s, "balloon", balloon);
        int64_t mem_mb = sim_vm_maxmem(vm) / (1024 * 1024);
        json_t *m = json_object_get(c->params, "memory");
        if (m) {
            json_t *mv = conf_value(c->s, "memory", m);
            const char *ms = json_string_value(mv);
            mem_mb = json_is_integer(mv) ? json_integer_value(mv)
                                         : atoll(str_starts(ms, "current=") ? ms + 8 : ms);
            json_decref(mv);
        }
        if (json_integer_value(bv) > mem_mb) {
            call_fail(c, 500, "balloon value too large (must be smaller than assigned memory)");
            vm = NULL;
        }
        json_decref(bv);
    }
out:
    json_decref(del);
    return vm;
}

/* netN as qemu-server stores it (netconf.c): "virtio,bridge=vmbr0" or
 * "bridge=vmbr0,model=virtio" -> "virtio=<mac>,bridge=vmbr0"; new_mac (a
 * clone) replaces the MAC it names. */
static json_t *net_value(struct sim *s, const char *net, bool new_mac)
{
    char *canon = netconf_canonical(s, net, new_mac);
    json_t *v = json_string(canon ? canon : net);
    free(canon);
    return v;
}

int qemu_free_disk_index(const struct sim_vm *vm)
{
    for (int i = 0;; i++) {
        char probe[64];
        snprintf(probe, sizeof probe, "vm-%d-disk-%d", vm->vmid, i);
        bool used = vmops_vol_in_snapshot(vm, probe);
        const char *k;
        json_t *v;
        json_object_foreach(vm->conf, k, v) used |=
            json_is_string(v) && strstr(json_string_value(v), probe) != NULL;
        if (!used)
            return i;
    }
}

/* An existing volume attached: its size as its storage has it
 * (create_disks: volume_size_info), known for the volumes pvesim saw
 * detached; else the drive as given. */
static json_t *attach_volume(struct sim *s, const char *spec)
{
    size_t vl = strcspn(spec, ",");
    char vol[160];
    json_t *sz = NULL;
    if (!strstr(spec, "size=") && vl < sizeof vol && s->vol_sizes) {
        snprintf(vol, sizeof vol, "%.*s", (int)vl, spec);
        sz = json_object_get(s->vol_sizes, vol);
    }
    if (!sz)
        return json_string(spec);
    char *fs = sim_fmt_size(json_integer_value(sz));
    json_t *v = json_sprintf("%s,size=%s", spec, fs);
    free(fs);
    return v;
}

static bool is_disk(const char *k);

/* Is `vol` ("local-lvm:vm-100-disk-1") a volume of its storage as `node`
 * sees it: a drive or unusedN of a VM or container there (anywhere, when
 * the storage is shared), a snapshot's, or one pvesim saw detached? */
static bool volume_exists(struct sim *s, struct sim_node *node, const char *vol)
{
    size_t vl = strlen(vol);
    char *sid = sim_disk_storage(vol);
    struct sim_storage *st = sid ? sim_storage_find(node, sid) : NULL;
    free(sid);
    if (!st)
        return false; /* PVE: "storage '...' does not exist" before this */
    if (s->vol_sizes && json_object_get(s->vol_sizes, vol))
        return true;
    char vn[128];
    vmops_vol_name(vol, vn, sizeof vn);
    for (struct sim_vm *v = s->vms; v; v = v->next) {
        if (v->gone || (!st->shared && v->node != node))
            continue;
        const char *k;
        json_t *val;
        json_object_foreach(v->conf, k, val)
        {
            const char *d = json_string_value(val);
            if (d && vmops_is_volume_key(k) && strcspn(d, ",") == vl && strncmp(d, vol, vl) == 0)
                return true;
        }
        if (vmops_vol_in_snapshot(v, vn))
            return true;
    }
    for (struct sim_ct *ct = s->cts; ct; ct = ct->next) {
        if (!st->shared && ct->node != node)
            continue;
        const char *k;
        json_t *val;
        json_object_foreach(ct->conf, k, val)
        {
            const char *d = json_string_value(val);
            if (d && (str_starts(k, "rootfs") || str_starts(k, "mp") || str_starts(k, "unused")) &&
                strcspn(d, ",") == vl && strncmp(d, vol, vl) == 0)
                return true;
        }
    }
    return false;
}

/* The first existing volume a disk parameter attaches that is not there
 * (create_disks: volume_size_info finds no size, "volume ... does not
 * exist"), as a new string; NULL when every one is. Allocations
 * ("<storage>:<GiB>"), "none", host paths and CD-ROM media are not
 * looked up. */
static char *missing_volume(struct sim *s, struct sim_vm *vm, json_t *params)
{
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !is_disk(k) || strstr(d, "media=cdrom"))
            continue;
        size_t vl = strcspn(d, ","), sl = strcspn(d, ":,");
        if (d[sl] != ':' || sl == 0 || vl >= 160)
            continue;
        const char *name = d + sl + 1;
        size_t nl = vl - sl - 1;
        if (nl == 0 || strspn(name, "0123456789.") == nl || strncmp(name, "cloudinit", nl) == 0)
            continue; /* a new volume of that many GiB, or a new cloud-init drive */
        char vol[160];
        snprintf(vol, sizeof vol, "%.*s", (int)vl, d);
        if (!volume_exists(s, vm->node, vol))
            return xstrdup(vol);
    }
    return NULL;
}

static json_t *alloc_disk(struct sim *s, struct sim_vm *vm, const char *k, const char *spec)
{
    /* "<storage>:<GiB>[,opts]" allocates a new volume */
    const char *colon = strchr(spec, ':');
    if (!colon)
        return json_string(spec);
    const char *num = colon + 1;
    size_t nl = strcspn(num, ",");
    int64_t gib;
    char tmp[32];
    if (nl == 0 || nl >= sizeof tmp)
        return attach_volume(s, spec);
    memcpy(tmp, num, nl);
    tmp[nl] = '\0';
    if (!parse_i64(tmp, &gib) || gib <= 0)
        return attach_volume(s, spec);
    int idx = qemu_free_disk_index(vm);
    (void)k;
    return json_sprintf("%.*s:vm-%d-disk-%d,size=%lldG%s", (int)(colon - spec), spec, vm->vmid, idx,
                        (long long)gib, num[nl] ? num + nl : "");
}

static bool is_disk(const char *k)
{
    return (str_starts(k, "scsi") && isdigit((unsigned char)k[4])) ||
           (str_starts(k, "virtio") && isdigit((unsigned char)k[6])) ||
           (str_starts(k, "sata") && isdigit((unsigned char)k[4])) ||
           (str_starts(k, "ide") && isdigit((unsigned char)k[3]));
}

/* A disk deleted from the config of a stopped VM is detached: its volume
 * stays as the first free unusedN (vmconfig_register_unused_drive); a
 * cloud-init drive or CD-ROM goes; an unusedN goes with its volume
 * (try_deallocate_drive). */
static void delete_key(struct sim *s, struct sim_vm *vm, const char *key)
{
    const char *d = json_string_value(json_object_get(vm->conf, key));
    char vn[128];
    if (d && is_disk(key)) /* update_vm_api: "remove from bootorder if necessary" */
        vmops_boot_drop(vm, key);
    if (d && is_disk(key) && !strstr(d, "media=cdrom") && !strstr(d, "cloudinit")) {
        char uk[24];
        for (int i = 0;; i++) {
            snprintf(uk, sizeof uk, "unused%d", i);
            if (!json_object_get(vm->conf, uk))
                break;
        }
        vmops_keep_volume_size(s, d); /* the storage keeps its size */
        json_object_set_new(vm->conf, uk, json_sprintf("%.*s", (int)strcspn(d, ","), d));
    } else if (d && str_starts(key, "unused")) {
        vmops_vol_name(d, vn, sizeof vn);
        if (!vmops_vol_in_snapshot(vm, vn)) { /* the volume goes */
            if (vm->origin)
                json_object_del(vm->origin, vn);
            if (s->vol_sizes)
                json_object_del(s->vol_sizes, d);
        }
    }
    json_object_del(vm->conf, key);
}

/* write_vm_config: "remove 'unusedX' settings if we re-add a volume". */
static void drop_reattached(struct sim_vm *vm)
{
    const char *k, *k2;
    json_t *v, *v2;
    void *tmp;
    json_object_foreach_safe(vm->conf, tmp, k, v)
    {
        const char *u = json_string_value(v);
        if (!u || !str_starts(k, "unused"))
            continue;
        size_t ul = strcspn(u, ",");
        bool used = false;
        json_object_foreach(vm->conf, k2, v2)
        {
            const char *d = json_string_value(v2);
            used |= d && is_disk(k2) && strcspn(d, ",") == ul && strncmp(d, u, ul) == 0;
        }
        if (used)
            json_object_del(vm->conf, k);
    }
}

int qemu_apply_config(struct sim *s, struct sim_vm *vm, json_t *params, char **err)
{
    char *missing = err ? missing_volume(s, vm, params) : NULL;
    if (missing) { /* update_vm_api dies in create_disks: nothing of the call written */
        *err = xasprintf("volume %s does not exist", missing);
        free(missing);
        return -1;
    }
    guestnet_keep(vm); /* the guest keeps its booted network until the next start */
    bool running = vm->power != VM_STOPPED;
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v)
    {
        if (is_control(k) || k[0] == '_')
            continue;
        json_t *val = conf_value(s, k, v);
        const char *sv = json_string_value(val);
        if (sv && str_starts(k, "net") && isdigit((unsigned char)k[3])) {
            json_t *m = net_value(s, sv, false);
            json_decref(val);
            val = m;
        } else if (sv && is_disk(k)) {
            json_t *d = alloc_disk(s, vm, k, sv);
            json_decref(val);
            val = d;
        }
        if (running && needs_restart(k)) {
            json_object_set_new(vm->pending, k, val);
        } else {
            json_object_set_new(vm->conf, k, val);
            json_object_del(vm->pending, k);
        }
    }
    json_t *del = split_list(json_string_value(json_object_get(params, "delete")));
    size_t i;
    json_t *d;
    json_array_foreach(del, i, d)
    {
        const char *key = json_string_value(d);
        if (strcmp(key, "cdrom") == 0)
            key = "ide2";
        if (running && needs_restart(key))
            json_array_append_new(vm->pending_delete, json_string(key));
        else
            delete_key(s, vm, key);
    }
    json_decref(del);
    drop_reattached(vm);
    s->dirty = true;
    (void)err;
    return 0;
}

void qemu_apply_pending(struct sim_vm *vm)
{
    json_object_update(vm->conf, vm->pending);
    json_object_clear(vm->pending);
    size_t i;
    json_t *d;
    json_array_foreach(vm->pending_delete, i, d) json_object_del(vm->conf, json_string_value(d));
    json_array_clear(vm->pending_delete);
}

/* qemu-server never gives a cloud-init password back: vm_config masks one
 * that is set (a true value), vm_pending one that is defined, and its
 * pending value with a trailing blank ('********** ', as in
 * PVE/API2/Qemu.pm). */
static void mask_password(json_t *o, const char *key, bool defined, const char *mask)
{
    json_t *v = json_object_get(o, key);
    if (!v || (!defined && (json_is_null(v) || (json_is_string(v) && !json_string_length(v)) ||
                            (json_is_string(v) && strcmp(json_string_value(v), "0") == 0))))
        return;
    json_object_set_new(o, key, json_string(mask));
}

static void h_config_get(struct sim_call *c)
{
    struct sim_vm *vm = load_vm(c);
    if (!vm)
        return;
    const char *snapname = call_str(c, "snapshot");
    if (snapname && call_bool(c, "current", false)) {
        call_param_fail(c, "snapshot", "cannot use 'snapshot' parameter with 'current'");
        call_param_fail(c, "current", "cannot use 'snapshot' parameter with 'current'");
        return;
    }
    if (snapname) { /* load_snapshot_config: the section and the file's digest */
        json_t *snap = vmops_snap_find(vm, snapname);
        if (!snap) {
            call_fail(c, 500, "snapshot '%s' does not exist", snapname);
            return;
        }
        c->data = json_deep_copy(snap);
        char *sdg = sim_vm_digest(vm);
        json_object_set_new(c->data, "digest", json_string(sdg));
        free(sdg);
        mask_password(c->data, "cipassword", false, "**********");
        return;
    }
    c->data = json_deep_copy(vm->conf);
    if (!call_bool(c, "current", false)) {
        json_object_update(c->data, vm->pending);
        size_t i;
        json_t *d;
        json_array_foreach(vm->pending_delete, i, d) json_object_del(c->data, json_string_value(d));
    }
    char *dg = sim_vm_digest(vm);
    json_object_set_new(c->data, "digest", json_string(dg));
    free(dg);
    mask_password(c->data, "cipassword", false, "**********");
}

static void h_pending(struct sim_call *c)
{
    struct sim_vm *vm = load_vm(c);
    if (!vm)
        return;
    char *dg = sim_vm_digest(vm);
    c->data = sim_pending_array(vm->conf, vm->pending, vm->pending_delete, dg);
    free(dg);
    size_t i;
    json_t *e;
    json_array_foreach(c->data, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "key")), "cipassword") == 0) {
            mask_password(e, "value", true, "**********");
            mask_password(e, "pending", true, "********** ");
        }
    }
}

static void h_config_put(struct sim_call *c)
{
    struct sim_vm *vm = config_checks(c);
    if (!vm)
        return;
    if (!sim_flock_wait(c->s, vm, true, CONFIG_LOCK_TIMEOUT)) {
        char lf[96];
        call_fail(c, 500, "can't lock file '%s' - got timeout", sim_lockfile(vm->vmid, lf));
        return;
    }
    vm = sim_vm_find(c->s, c->node, vm->vmid);
    char *err = NULL;
    json_t *del = split_list(call_str(c, "delete"));
    char *denied = qemu_perm_update_worker(c, vm, del);
    json_decref(del);
    if (denied)
        call_fail(c, str_starts(denied, "Permission check failed") ? 403 : 500, "%s", denied);
    else if (qemu_apply_config(c->s, vm, c->params, &err))
        call_fail(c, 500, "%s", err);
    else
        c->data = json_null();
    free(denied);
    free(err);
    sim_flock_release(c->s, vm, true);
}

static void h_config_post(struct sim_call *c)
{
    struct sim_vm *vm = config_checks(c);
    if (!vm)
        return;
    json_t *del = split_list(call_str(c, "delete"));
    char *denied = qemu_perm_update_worker(c, vm, del);
    json_decref(del);
    struct sim_task *t = start_task(c, "qmconfig", vm->vmid, TK_CONFIG);
    if (denied) { /* the worker dies with it, nothing written */
        free(t->fault_exit);
        t->fault_exit = denied;
    }
}

/* ---- resize ------------------------------------------------------------- */

int qemu_apply_resize(struct sim *s, struct sim_vm *vm, const char *disk, const char *size,
                      char **err)
{
    const char *drive = json_string_value(json_object_get(vm->conf, disk));
    if (!drive) {
        *err = xasprintf("disk '%s' does not exist", disk);
        return -1;
    }
    if (strstr(drive, "media=cdrom")) {
        *err = xstrdup("you can't resize a cdrom");
        return -1;
    }
    int64_t cur = sim_volume_size(s, drive), val; /* volume_size_info */
    if (!sim_parse_size(size, &val)) {
        *err = xasprintf("invalid size '%s'", size);
        return -1;
    }
    int64_t target = size[0] == '+' ? cur + val : val;
    if (target < cur) {
        *err = xstrdup("shrinking disks is not supported");
        return -1;
    }
    if (target == cur)
        return 0;
    char *sid = sim_disk_storage(drive);
    struct sim_storage *st = sid ? sim_storage_find(vm->node, sid) : NULL;
    free(sid);
    if (st) {
        int64_t avail = st->total - sim_storage_used(s, vm->node, st->id);
        if (target - cur > avail) {
            *err = xasprintf("lvextend 'pve/vm-%d-disk-0' error:   Insufficient free space: "
                             "%lld extents needed, but only %lld available",
                             vm->vmid, (long long)((target - cur) >> 22),
                             (long long)(avail > 0 ? avail >> 22 : 0));
            return -1;
        }
    }
    /* rewrite size= in the drive string */
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    const char *p = strstr(drive, "size=");
    char *fs = sim_fmt_size(target);
    if (p) {
        buf_add(&b, drive, (size_t)(p - drive));
        buf_printf(&b, "size=%s", fs);
        buf_adds(&b, p + 5 + strcspn(p + 5, ","));
    } else {
        buf_printf(&b, "%s,size=%s", drive, fs);
    }
    free(fs);
    json_object_set_new(vm->conf, disk, json_string(buf_str(&b)));
    buf_release(&b);
    s->dirty = true;
    return 0;
}

static void h_resize(struct sim_call *c)
{
    struct sim_vm *vm = load_vm(c);
    if (!vm)
        return;
    if (c->s->o.pve_version >= 8) {
        start_task(c, "resize", vm->vmid, TK_RESIZE);
        return;
    }
    /* PVE 7: everything in the request */
    const char *digest = call_str(c, "digest");
    if (digest) {
        char *cur = sim_vm_digest(vm);
        bool same = strcmp(cur, digest) == 0;
        free(cur);
        if (!same) {
            call_fail(c, 500, "checksum missmatch (file change by other user?)");
            return;
        }
    }
    if (!sim_flock_wait(c->s, vm, true, CONFIG_LOCK_TIMEOUT)) {
        char lf[96];
        call_fail(c, 500, "can't lock file '%s' - got timeout", sim_lockfile(vm->vmid, lf));
        return;
    }
    vm = sim_vm_find(c->s, c->node, (int)call_int(c, "vmid", 0));
    char *err = NULL;
    if (vm_lock(vm) && !call_bool(c, "skiplock", false))
        call_fail(c, 500, "VM is locked (%s)", vm_lock(vm));
    else if (qemu_apply_resize(c->s, vm, call_str(c, "disk"), call_str(c, "size"), &err))
        call_fail(c, 500, "%s", err);
    else
        c->data = json_null();
    free(err);
    sim_flock_release(c->s, vm, true);
}

/* ---- create -------------------------------------------------------------- */

/* check_pool_exist: a raise_perm_exc, before anything else is looked at. */
static bool pool_ok(struct sim_call *c)
{
    const char *pool = call_str(c, "pool");
    if (!pool || sim_pool_exists(c->s, pool))
        return true;
    call_fail(c, 403, "Permission check failed (pool '%s' does not exist)", pool);
    return false;
}

static void h_create(struct sim_call *c)
{
    if (!pool_ok(c))
        return;
    int vmid = (int)call_int(c, "vmid", 0);
    /* the default storage, check_vm_perm, then the drives' storages and
     * volumes, each option's privilege, the devices, the bridges */
    const char *storage = call_str(c, "storage");
    if ((storage && !call_storage_space(c, storage, strlen(storage))) ||
        !call_vm_allocate(c, vmid, call_str(c, "pool")) ||
        !qemu_perm_create(c, vmid, call_str(c, "pool"), storage) || !check_sshkeys(c))
        return;
    struct sim_node *space = c->s->o.standalone ? c->node : NULL;
    struct sim_vm *other = sim_vm_find(c->s, space, vmid);
    struct sim_ct *ct = other ? NULL : sim_ct_find(c->s, space, vmid);
    if (other || ct) { /* check_vmid_unused: a container's VMID is taken too */
        call_fail(c, 500, "unable to create VM %d - %s %d already exists on node '%s'", vmid,
                  other ? "VM" : "CT", vmid, other ? other->node->name : ct->node->name);
        return;
    }
    struct sim_vm *vm = sim_vm_new(c->s, c->node, vmid);
    vm->fl.exclusive = true;
    json_object_set_new(vm->conf, "lock", json_string("create"));
    struct sim_task *t = start_task(c, "qmcreate", vmid, TK_CREATE);
    char *denied = qemu_perm_create_worker(c, vmid);
    if (denied) { /* "unable to create VM <vmid> - ..." */
        free(t->fault_exit);
        t->fault_exit = denied;
    }
    /* the full config is written by the worker; prepare it now, keep it hidden */
    struct sim_vm tmp = *vm;
    tmp.conf = json_object();
    tmp.pending = json_object();
    tmp.pending_delete = json_array();
    tmp.power = VM_STOPPED;
    qemu_apply_config(c->s, &tmp, c->params, NULL);
    json_object_set_new(t->args, "_conf", tmp.conf);
    json_decref(tmp.pending);
    json_decref(tmp.pending_delete);
}

/* ---- clone --------------------------------------------------------------- */

static bool clone_checks(struct sim_call *c, struct sim_vm **src_out, bool *full_out)
{
    struct sim *s = c->s;
    int vmid = (int)call_int(c, "vmid", 0), newid = (int)call_int(c, "newid", 0);
    if (!pool_ok(c))
        return false;
    struct sim_vm *src = sim_vm_find(s, c->node, vmid);
    if (!src) {
        call_fail(c, 500, "unable to find configuration file for VM %d on node '%s'", vmid,
                  c->node->name);
        return false;
    }
    /* check_storage_access_clone: space on each disk's target storage */
    const char *tst = call_str(c, "storage");
    json_t *cfrom = call_str(c, "snapname") ? vmops_snap_find(src, call_str(c, "snapname")) : NULL;
    const char *dk;
    json_t *dv;
    json_object_foreach(cfrom ? cfrom : src->conf, dk, dv)
    {
        const char *sv = json_string_value(dv);
        if (!sv || !is_disk(dk) || strstr(sv, "media=cdrom") || strncmp(sv, "none", 4) == 0 ||
            !strchr(sv, ':') || (size_t)(strchr(sv, ':') - sv) > strcspn(sv, ","))
            continue;
        if (tst ? !call_storage_space(c, tst, strlen(tst))
                : !call_storage_space(c, sv, (size_t)(strchr(sv, ':') - sv)))
            return false;
    }
    const char *target = call_str(c, "target");
    if (target && !sim_node_find(s, target)) {
        call_fail(c, 500, "no such cluster node '%s'", target);
        return false;
    }
    const char *storage = call_str(c, "storage");
    if (storage) {
        struct sim_storage *st = sim_storage_find(c->node, storage);
        if (!st) {
            call_fail(c, 500, "storage '%s' does not exist", storage);
            return false;
        }
        if (!strstr(st->content, "images")) {
            call_param_fail(c, "storage", "storage '%s' does not support vm images", storage);
            return false;
        }
    }
    if (vm_lock(src)) {
        call_fail(c, 500, "VM is locked (%s)", vm_lock(src));
        return false;
    }
    const char *snapname = call_str(c, "snapname");
    json_t *from = snapname ? vmops_snap_find(src, snapname) : src->conf;
    if (!from) {
        call_fail(c, 500, "snapshot '%s' does not exist", snapname);
        return false;
    }
    bool is_tpl = json_integer_value(json_object_get(src->conf, "template")) != 0;
    bool full = call_bool(c, "full", !is_tpl);
    if (!full && storage) {
        call_fail(c, 500, "parameter 'storage' not allowed for linked clones");
        return false;
    }
    if (!full && call_str(c, "format")) {
        call_fail(c, 500, "parameter 'format' not allowed for linked clones");
        return false;
    }
    if (target && strcmp(target, c->node->name) != 0) {
        call_fail(c, 500, "can't clone VM to node '%s' (VM uses local storage)", target);
        return false;
    }
    const char *boot = sim_vm_bootdisk(src);
    const char *bdrive = json_string_value(json_object_get(from, boot ? boot : "scsi0"));
    /* linked clones need a base volume, or a snapshot on lvmthin/rbd/zfs */
    if (!full && !is_tpl &&
        !(snapname && bdrive && vmops_drive_can_snapshot(src->node, bdrive) &&
          !strstr(bdrive, ".qcow2"))) {
        call_fail(c, 500, "Linked clone feature is not supported for %s'%.*s' (%s)",
                  snapname ? "a snapshot of " : "", (int)strcspn(bdrive ? bdrive : "", ","),
                  bdrive ? bdrive : "", boot ? boot : "scsi0");
        return false;
    }
    if (sim_vm_find(s, c->node, newid)) {
        call_fail(c, 500, "unable to create VM %d: config file already exists", newid);
        return false;
    }
    *src_out = src;
    *full_out = full;
    return true;
}

static void h_clone(struct sim_call *c)
{
    struct sim_vm *src;
    bool full;
    if (!clone_checks(c, &src, &full))
        return;
    struct sim_task *t = start_task(c, "qmclone", src->vmid, TK_CLONE);
    t->newid = (int)call_int(c, "newid", 0);
    json_object_set_new(t->args, "_full", json_boolean(full));
}

/* Rename every volume of the source for the new VM. A full clone's target
 * storage takes every volume, the cloud-init drive too (clone_disk
 * allocates it anew on `$storage || $src_storeid`); a linked clone has no
 * target storage. */
static json_t *clone_drive(const char *drive, int newid, int idx, const char *storage, bool full,
                           bool cloudinit)
{
    const char *colon = strchr(drive, ':');
    const char *comma = strchr(drive, ',');
    const char *opts = comma ? comma : "";
    char *sid = colon ? xstrndup(drive, (size_t)(colon - drive)) : xstrdup("local-lvm");
    const char *st = storage ? storage : sid;
    json_t *r;
    if (cloudinit)
        r = json_sprintf("%s:vm-%d-cloudinit%s", st, newid, opts);
    else if (full)
        r = json_sprintf("%s:vm-%d-disk-%d%s", st, newid, idx, opts);
    else if (!colon || strncmp(colon + 1, "base-", 5) != 0) /* a thin snapshot's clone */
        r = json_sprintf("%s:vm-%d-disk-%d%s", sid, newid, idx, opts);
    else
        r = json_sprintf("%s:%.*s/vm-%d-disk-%d%s", sid,
                         (int)((comma ? comma : drive + strlen(drive)) - colon - 1), colon + 1,
                         newid, idx, opts);
    free(sid);
    return r;
}

void qemu_clone_conf(struct sim *s, struct sim_vm *src, struct sim_vm *dst, json_t *args,
                     const char *storage, bool full)
{
    json_object_clear(dst->conf);
    /* a clone of a snapshot copies the snapshot's config */
    json_t *from = vmops_snap_find(src, json_string_value(json_object_get(args, "snapname")));
    if (!from)
        from = src->conf;
    const char *k;
    json_t *v;
    int idx = 0;
    json_object_foreach(from, k, v)
    {
        if (str_starts(k, "unused")) /* their owner changes anyway */
            continue;
        if (strcmp(k, "template") == 0 || strcmp(k, "lock") == 0 || strcmp(k, "parent") == 0 ||
            strcmp(k, "runningmachine") == 0 || strcmp(k, "runningcpu") == 0 ||
            strcmp(k, "snaptime") == 0 || strcmp(k, "vmstate") == 0 || strcmp(k, "snapstate") == 0)
            continue; /* no snapshot related info */
        const char *sv = json_string_value(v);
        if (sv && is_disk(k) && strstr(sv, "cloudinit"))
            json_object_set_new(dst->conf, k, clone_drive(sv, dst->vmid, 0, storage, true, true));
        else if (sv && is_disk(k) && !strstr(sv, "media=cdrom")) {
            json_t *nd = clone_drive(sv, dst->vmid, idx++, storage, full, false);
            vmops_origin_clone(s, src, sv, dst, json_string_value(nd));
            json_object_set_new(dst->conf, k, nd);
        } else if (sv && str_starts(k, "net") && isdigit((unsigned char)k[3])) {
            json_object_set_new(dst->conf, k, net_value(s, sv, true));
        } else if (strcmp(k, "smbios1") == 0) {
            json_object_set_new(dst->conf, k,
                                json_sprintf("uuid=%08x-%04x-4%03x-8000-%012lld",
                                             (unsigned)(sim_rand(s) * 4e9),
                                             (unsigned)(sim_rand(s) * 65535),
                                             (unsigned)(sim_rand(s) * 4095), (long long)dst->vmid));
        } else {
            json_object_set(dst->conf, k, v);
        }
    }
    const char *name = json_string_value(json_object_get(args, "name"));
    if (name)
        json_object_set_new(dst->conf, "name", json_string(name));
    else {
        const char *sname = json_string_value(json_object_get(src->conf, "name"));
        if (sname)
            json_object_set_new(dst->conf, "name", json_sprintf("Copy-of-VM-%s", sname));
        else
            json_object_set_new(dst->conf, "name", json_sprintf("Copy-of-VM-%d", src->vmid));
    }
    const char *desc = json_string_value(json_object_get(args, "description"));
    if (desc)
        json_object_set_new(dst->conf, "description", json_string(desc));
}

/* ---- destroy -------------------------------------------------------------- */

void qemu_destroy(struct sim *s, struct sim_vm *vm)
{
    sim_pool_add_vm(s, NULL, vm->vmid); /* remove_vm_from_pool */
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v) /* its volumes go with it */
    {
        const char *d = json_string_value(v);
        char vol[160];
        if (d && s->vol_sizes && vmops_is_volume_key(k) && strcspn(d, ",") < sizeof vol) {
            snprintf(vol, sizeof vol, "%.*s", (int)strcspn(d, ","), d);
            json_object_del(s->vol_sizes, vol);
        }
    }
    vm->gone = true;
    pthread_cond_broadcast(&s->cv);
    sim_vm_unlink(s, vm);
}

static void h_destroy(struct sim_call *c)
{
    struct sim_vm *vm = load_vm(c);
    if (!vm)
        return;
    if (json_integer_value(json_object_get(vm->conf, "protection"))) {
        call_fail(c, 500, "can't remove VM %d - protection mode enabled", vm->vmid);
        return;
    }
    bool purge = call_bool(c, "purge", false);
    if (vm->ha && !purge) {
        call_fail(c, 500,
                  "unable to remove VM %d - used in HA resources and purge parameter not set.",
                  vm->vmid);
        return;
    }
    if (vm->power != VM_STOPPED) {
        call_fail(c, 500, "VM %d is running - destroy failed", vm->vmid);
        return;
    }
    if (purge && vm->ha) {
        vm->ha = false;
        vm->ha_state[0] = '\0';
    }
    start_task(c, "qmdestroy", vm->vmid, TK_DESTROY);
}

const struct sim_route sim_routes_qemu[] = {
    {"GET", "/nodes/{node}/qemu", h_list},
    {"POST", "/nodes/{node}/qemu", h_create},
    {"POST", "/nodes/{node}/qemu/{vmid}/clone", h_clone},
    {"GET", "/nodes/{node}/qemu/{vmid}/config", h_config_get},
    {"PUT", "/nodes/{node}/qemu/{vmid}/config", h_config_put},
    {"POST", "/nodes/{node}/qemu/{vmid}/config", h_config_post},
    {"GET", "/nodes/{node}/qemu/{vmid}/pending", h_pending},
    {"PUT", "/nodes/{node}/qemu/{vmid}/resize", h_resize},
    {"DELETE", "/nodes/{node}/qemu/{vmid}", h_destroy},
    {NULL, NULL, NULL},
};
