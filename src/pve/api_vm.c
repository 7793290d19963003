/* api_vm: VM list, clone (with recognition of a clone whose answer was
 * lost), create, config, pending, resize, status, power actions, delete. */
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/api_json.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int invalid(struct pve_error *err, const char *fmt, const char *arg)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = PVE_E_INVALID;
        snprintf(err->message, sizeof err->message, fmt, arg ? arg : "");
    }
    return PVE_E_INVALID;
}

/* "/nodes/<node>/qemu/<vmid><suffix>": the node is encoded, the suffix is
 * a literal path tail such as "/status/start". */
static int vm_path(char *out, size_t len, const char *node, int vmid, const char *suffix)
{
    if (pve_path(out, len, "/nodes/%s/qemu/%d", node, vmid))
        return -1;
    size_t l = strlen(out), sl = suffix ? strlen(suffix) : 0;
    if (l + sl >= len)
        return -1;
    memcpy(out + l, suffix ? suffix : "", sl + 1);
    return 0;
}

/* A call whose result is a UPID string. */
static int upid_call(pve_client *c, const char *method, const char *path, json_t *params,
                     unsigned flags, char upid[PVE_UPID_MAX], struct pve_error *err)
{
    json_t *d = NULL;
    int rc = pve_call_ex(c, method, path, params, flags, &d, err);
    if (rc)
        return rc;
    upid[0] = '\0';
    if (json_is_string(d))
        snprintf(upid, PVE_UPID_MAX, "%s", json_string_value(d));
    json_decref(d);
    return 0;
}

/* What the task a request starts is known by on its node's task list: its
 * type, or types in order of preference, and its ID, the VMID unless `id`
 * is set (a disk reassignment's "<vmid>-<disk>><target vmid>-<target
 * disk>"). An HA-managed VM's migration, start or stop is a hamigrate,
 * hastart or hastop task that only asks the HA manager, whose LRM runs the
 * qmigrate, qmstart or qmstop after it: the ha* type comes first, the
 * request's own task. */
struct task_key {
    const char *types[3]; /* NULL-terminated */
    int vmid;
    const char *id; /* NULL: the VMID */
};

/* The earliest start time (the node's clock, unix seconds) that a task started at or after
 * `since_ms` (this host's clock, unix ms) can carry on `node`. The node's clock is read for it (one
 * GET, when a lost answer's lookup has a candidate on a list the node answered): a node whose clock
 * is off still has its tasks found, and a task of the same token started two seconds or more before
 * the call is not taken for its own (with 5 s of slack on this host's clock it was: a destroy
 * served late, its answer read by nobody, was the answer of the next destroy of a new VM of that
 * VMID, and the delete failed "still exists after its destroy task"). The estimate is low by up to
 * a second (the node tells whole seconds), never high. When the node's clock cannot be read: this
 * host's, less 5 s. */
static int64_t node_since(pve_client *c, const char *node, int64_t since_ms)
{
    struct pve_error e;
    int64_t node_now = 0;
    if (pve_node_time(c, node, &node_now, &e))
        return since_ms / 1000 - 5;
    int64_t at = since_ms + node_now * 1000 - wall_ms();
    return at >= 0 ? at / 1000 : -((999 - at) / 1000);
}

/* The newest task of `k`'s first type that has one on `node`, started at
 * or after `since_ms` (this host's clock, unix ms; node_since) by this
 * client's user or token; its UPID. The list is asked for each type,
 * and for the VMID when that is the ID: PVE's vmid filter compares the
 * whole ID, which leaves out a disk reassignment's. The user tells ours
 * from another's started within the slack (an operator's start in the
 * GUI, the HA manager's follow-up task as root@pam): adopted, a stop
 * would count as done that nobody sent, or a config write as the other's. */
static bool find_task(pve_client *c, const char *node, const struct task_key *k, int64_t since_ms,
                      char upid[PVE_UPID_MAX])
{
    char vid[16], who[160];
    bool timed = false; /* the node's clock is read once a list has a candidate */
    int64_t since = 0;
    snprintf(vid, sizeof vid, "%d", k->vmid);
    const char *id = k->id ? k->id : vid;
    pve_client_who(c, who, sizeof who);
    int64_t best = -1;
    for (size_t t = 0; t < sizeof k->types / sizeof *k->types && k->types[t] && best < 0; t++) {
        struct pve_task *tasks = NULL;
        size_t n = 0;
        struct pve_error e;
        if (pve_task_list(c, node, k->id ? 0 : k->vmid, k->types[t], 10, &tasks, &n, &e))
            continue; /* the next type's list may still tell */
        for (size_t i = 0; i < n; i++) {
            if (strcmp(tasks[i].type, k->types[t]) != 0 || strcmp(tasks[i].id, id) != 0 ||
                strcmp(tasks[i].user, who) != 0 || tasks[i].starttime <= best)
                continue;
            if (!timed) { /* after a list that answered: a hung node was not asked twice */
                since = node_since(c, node, since_ms);
                timed = true;
            }
            if (tasks[i].starttime >= since && !pve_client_task_known(c, tasks[i].upid)) {
                best = tasks[i].starttime;
                snprintf(upid, PVE_UPID_MAX, "%s", tasks[i].upid);
            }
        }
        free(tasks);
    }
    if (best >= 0)
        pve_client_task_seen(c, upid);
    return best >= 0;
}

/* A request that starts a task, sent once (PVE_CALL_ONCE). When its answer
 * is lost after it went out (PVE_E_NETWORK, maybe_sent), the task it would
 * have started (`k`, since the call) is looked for: found, it is the
 * answer. Asked again instead, a start fails "already running", a destroy
 * "does not exist", a migration "VM is locked", a disk reassignment "disk
 * does not exist", while the first one's task does the work. */
static int once_task_call(pve_client *c, const char *method, const char *path, json_t *params,
                          const char *node, const struct task_key *k, char upid[PVE_UPID_MAX],
                          struct pve_error *err)
{
    struct pve_error local;
    if (!err)
        err = &local;
    int64_t t0 = wall_ms();
    int rc = upid_call(c, method, path, params, PVE_CALL_ONCE, upid, err);
    if (rc == PVE_E_NETWORK && err->maybe_sent && find_task(c, node, k, t0, upid)) {
        memset(err, 0, sizeof *err);
        rc = 0;
    }
    return rc;
}

int pve_once_call(pve_client *c, const char *method, const char *path, json_t *params,
                  const char *node, const char *type, int vmid, char upid[PVE_UPID_MAX],
                  struct pve_error *err)
{
    struct task_key k = {.types = {type}, .vmid = vmid};
    return once_task_call(c, method, path, params, node, &k, upid, err);
}

bool pve_task_of(pve_client *c, const char *node, const char *type, int vmid, int64_t since_ms,
                 char upid[PVE_UPID_MAX])
{
    struct task_key k = {.types = {type}, .vmid = vmid};
    return find_task(c, node, &k, since_ms, upid);
}

int pve_vm_list(pve_client *c, const char *node, struct pve_vm **out, size_t *n,
                struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/qemu", node))
        return invalid(err, "bad node name", NULL);
    json_t *a = NULL, *e;
    size_t i;
    int rc = pve_call(c, "GET", path, NULL, &a, err);
    if (rc)
        return rc;
    if (!json_is_array(a)) {
        json_decref(a);
        return invalid(err, "unexpected result for %s", path);
    }
    struct pve_vm *v = xcalloc(json_array_size(a) + 1, sizeof *v);
    json_array_foreach(a, i, e)
    {
        v[i].vmid = (int)pj_int(e, "vmid", 0);
        pj_str(v[i].name, sizeof v[i].name, e, "name");
        pj_str(v[i].status, sizeof v[i].status, e, "status");
        v[i].tmpl = pj_bool(e, "template");
        v[i].cpus = (int)pj_int(e, "cpus", 0);
        v[i].maxmem = pj_int(e, "maxmem", 0);
        v[i].mem = pj_int(e, "mem", 0);
        v[i].maxdisk = pj_int(e, "maxdisk", 0);
        v[i].uptime = pj_int(e, "uptime", 0);
        pj_str(v[i].lock, sizeof v[i].lock, e, "lock");
        pj_str(v[i].tags, sizeof v[i].tags, e, "tags");
    }
    *n = json_array_size(a);
    *out = v;
    json_decref(a);
    return 0;
}

/* ---- clone ---------------------------------------------------------------- */

/* A just-started task may have written no line yet (its worker forks, then
 * logs "creating a clone of VM <vmid> with ID <newid>"): a lookup right
 * after a lost answer read an empty log, took its own clone for another
 * and asked again, and the second clone's task failed "config file already
 * exists" against the first's VM (the creation then moved to another VMID,
 * leaving that VM behind). So the log of a candidate still running is read
 * again, LOG_WAIT_MS apart, until it names a VMID, for LOG_WAIT_TRIES. */
#define LOG_WAIT_MS 100
#define LOG_WAIT_TRIES 30

/* What the first lines of a clone task's log say of the VM it makes: 1 it
 * is newid (`want`: "with ID <newid>"), -1 another, 0 nothing yet, -2 the
 * log could not be read. */
static int clone_log_names(pve_client *c, const char *upid, const char *want)
{
    json_t *lines = NULL, *l;
    struct pve_error e;
    size_t j;
    int said = 0;
    if (pve_task_log(c, upid, 0, 3, &lines, &e))
        return -2;
    json_array_foreach(lines, j, l)
    {
        const char *s = json_string_value(l), *at = s ? strstr(s, " with ID ") : NULL;
        if (!at)
            continue;
        const char *p = strstr(s, want);
        if (p && (p[strlen(want)] == '\0' || !isdigit((unsigned char)p[strlen(want)]))) {
            said = 1;
            break;
        }
        said = -1;
    }
    json_decref(lines);
    return said;
}

/* Look on `node` for a qmclone task of `vmid` started at or after `since`
 * by this client's user or token whose log names `newid`: the clone we
 * asked for when its answer was lost. */
bool pve_find_clone_task(pve_client *c, const char *node, int vmid, int newid, int64_t since,
                         char upid[PVE_UPID_MAX])
{
    struct pve_task *tasks = NULL;
    size_t n = 0;
    struct pve_error e;
    bool found = false;
    if (pve_task_list(c, node, vmid, "qmclone", 20, &tasks, &n, &e))
        return false;
    if (n) /* after a list that answered: a hung node is not asked twice */
        since = node_since(c, node, since * 1000);
    char want[64], who[160];
    snprintf(want, sizeof want, " with ID %d", newid);
    pve_client_who(c, who, sizeof who);
    for (size_t i = 0; i < n && !found; i++) {
        if (tasks[i].starttime < since || strcmp(tasks[i].user, who) != 0)
            continue;
        int said = clone_log_names(c, tasks[i].upid, want);
        for (int t = 0; said == 0 && tasks[i].running && t < LOG_WAIT_TRIES; t++) {
            sleep_ms(LOG_WAIT_MS);
            said = clone_log_names(c, tasks[i].upid, want);
        }
        if (said == 1) {
            snprintf(upid, PVE_UPID_MAX, "%s", tasks[i].upid);
            found = true;
        }
    }
    free(tasks);
    return found;
}

static json_t *clone_params(const struct pve_clone *o)
{
    json_t *p = json_pack("{s:i}", "newid", o->newid);
    if (o->name)
        json_object_set_new(p, "name", json_string(o->name));
    if (o->description)
        json_object_set_new(p, "description", json_string(o->description));
    if (o->target)
        json_object_set_new(p, "target", json_string(o->target));
    if (o->storage)
        json_object_set_new(p, "storage", json_string(o->storage));
    if (o->pool)
        json_object_set_new(p, "pool", json_string(o->pool));
    if (o->format)
        json_object_set_new(p, "format", json_string(o->format));
    if (o->full >= 0)
        json_object_set_new(p, "full", json_integer(o->full ? 1 : 0));
    return p;
}

int pve_vm_clone(pve_client *c, const char *node, int vmid, const struct pve_clone *opts,
                 char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    struct pve_error local;
    if (!err)
        err = &local;
    err->earlier_pending = false;
    if (opts->newid < 100)
        return invalid(err, "newid: a VM ID of at least 100 is required", NULL);
    if (vm_path(path, sizeof path, node, vmid, "/clone"))
        return invalid(err, "bad node name", NULL);
    json_t *params = clone_params(opts);
    int64_t t0 = wall_s();
    /* a node that is down behind the cluster's entry fails at once: the caller
     * fails over to another node rather than waiting out retries */
    int rc = upid_call(c, "POST", path, params, PVE_CALL_ONCE | PVE_CALL_FAILFAST, upid, err);
    if (rc == PVE_E_NETWORK && err->maybe_sent) {
        /* the request may have started a clone: adopt it rather than clone twice */
        if (pve_find_clone_task(c, node, vmid, opts->newid, t0, upid)) {
            rc = 0;
            goto out;
        }
        rc = upid_call(c, "POST", path, params, PVE_CALL_ONCE, upid, err);
        /* the first request may still be served (a busy node's queue): its
         * VM may appear later, when the second was refused, and also when
         * the second started a clone (refused then if this VM still stands,
         * but made if it is gone: the attempt failed and was cleaned up) */
        bool second_started = rc == 0;
        if (rc == PVE_E_EXISTS && pve_find_clone_task(c, node, vmid, opts->newid, t0, upid))
            rc = 0; /* the first one's, found after all: nothing else to come */
        if (rc)
            err->maybe_sent = true;
        err->earlier_pending = second_started;
    }
out:
    json_decref(params);
    if (rc == 0 && err)
        err->cls = PVE_OK;
    return rc;
}

int pve_vm_create(pve_client *c, const char *node, int vmid, json_t *options,
                  char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/qemu", node))
        return invalid(err, "bad node name", NULL);
    json_t *params = options ? json_deep_copy(options) : json_object();
    json_object_set_new(params, "vmid", json_integer(vmid));
    struct task_key k = {.types = {"qmcreate"}, .vmid = vmid};
    int rc = once_task_call(c, "POST", path, params, node, &k, upid, err);
    json_decref(params);
    return rc;
}

/* ---- config ---------------------------------------------------------------- */

/* A size's unit as PVE reads it: K M G T powers of 1024, none bytes. */
static double unit_mul(char u)
{
    switch (u) {
    case 'K':
        return 1024.0;
    case 'M':
        return 1048576.0;
    case 'G':
        return 1073741824.0;
    case 'T':
        return 1099511627776.0;
    default:
        return 1;
    }
}

/* The size= option of a drive in bytes (0 when absent or not a size),
 * bounded: a figure past 1 EiB is no size. */
static int64_t drive_size(const char *drive)
{
    const char *sz = drive ? strstr(drive, ",size=") : NULL;
    if (!sz)
        return 0;
    char *end;
    double v = strtod(sz + 6, &end);
    double bytes = v * unit_mul(*end);
    return bytes > 0 && bytes < 1152921504606846976.0 ? (int64_t)bytes : 0;
}

/* "local-lvm:vm-100-disk-0,size=32G" -> volume, storage, size in bytes */
static void parse_drive(const char *drive, struct pve_vm_config *out)
{
    size_t vl = strcspn(drive, ",");
    snprintf(out->bootdisk_volume, sizeof out->bootdisk_volume, "%.*s", (int)vl, drive);
    size_t sl = strcspn(drive, ":,");
    if (drive[sl] == ':')
        snprintf(out->bootdisk_storage, sizeof out->bootdisk_storage, "%.*s", (int)sl, drive);
    out->bootdisk_size = drive_size(drive);
}

/* A disk key of a VM config: scsiN, virtioN, sataN, ideN, efidisk0,
 * tpmstate0, unusedN. */
static bool volume_key(const char *k)
{
    static const char *const pfx[] = {"scsi",    "virtio",   "sata",  "ide",
                                      "efidisk", "tpmstate", "unused"};
    for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++) {
        size_t l = strlen(pfx[i]);
        if (strncmp(k, pfx[i], l) != 0 || !k[l])
            continue;
        size_t d = strspn(k + l, "0123456789");
        return d > 0 && d <= 3 && !k[l + d];
    }
    return false;
}

int pve_vm_config_volumes(const struct pve_vm_config *cfg, struct pve_volume **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const char *k;
    json_t *v;
    size_t cap = 0;
    json_object_foreach(cfg ? cfg->raw : NULL, k, v)
    {
        const char *d = json_string_value(v);
        if (!d || !volume_key(k))
            continue;
        size_t vl = strcspn(d, ","), sl = strcspn(d, ":,");
        /* "none", a host device or path, a CD-ROM drive's ISO or none: no
         * volume of a storage that a migration moves (a cloud-init drive,
         * media=cdrom too, is one) */
        if (d[sl] != ':' || sl == 0 || sl >= sizeof((*out)->storage) || vl >= sizeof((*out)->volid))
            continue;
        char volid[sizeof((*out)->volid)];
        snprintf(volid, sizeof volid, "%.*s", (int)vl, d);
        bool cdrom = strstr(d, ",media=cdrom") != NULL;
        if (cdrom && !strstr(volid, "cloudinit"))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xrealloc(*out, cap * sizeof **out);
        }
        struct pve_volume *o = &(*out)[(*n)++];
        memset(o, 0, sizeof *o);
        snprintf(o->key, sizeof o->key, "%s", k);
        snprintf(o->volid, sizeof o->volid, "%s", volid);
        snprintf(o->storage, sizeof o->storage, "%.*s", (int)sl, d);
        o->size = drive_size(d);
        o->cloudinit = cdrom;
    }
    return 0;
}

static void find_bootdisk(json_t *conf, struct pve_vm_config *out)
{
    const char *boot = json_string_value(json_object_get(conf, "boot"));
    char key[32] = "";
    if (boot && str_starts(boot, "order="))
        snprintf(key, sizeof key, "%.*s", (int)strcspn(boot + 6, ";,"), boot + 6);
    else if (json_is_string(json_object_get(conf, "bootdisk")))
        snprintf(key, sizeof key, "%s", json_string_value(json_object_get(conf, "bootdisk")));
    static const char *const cands[] = {"scsi0", "virtio0", "sata0", "ide0"};
    for (size_t i = 0; !json_is_string(json_object_get(conf, key)) && i < 4; i++)
        snprintf(key, sizeof key, "%s", cands[i]);
    const char *drive = json_string_value(json_object_get(conf, key));
    if (!drive)
        return;
    snprintf(out->bootdisk, sizeof out->bootdisk, "%.15s", key);
    parse_drive(drive, out);
}

int pve_vm_config_get(pve_client *c, const char *node, int vmid, bool current,
                      struct pve_vm_config *out, struct pve_error *err)
{
    char path[256];
    memset(out, 0, sizeof *out);
    if (vm_path(path, sizeof path, node, vmid, "/config"))
        return invalid(err, "bad node name", NULL);
    json_t *params = current ? json_pack("{s:i}", "current", 1) : NULL;
    json_t *d = NULL;
    int rc = pve_call(c, "GET", path, params, &d, err);
    json_decref(params);
    if (rc)
        return rc;
    if (!json_is_object(d)) {
        json_decref(d);
        return invalid(err, "unexpected result for %s", path);
    }
    out->cores = (int)pj_int(d, "cores", 1);
    out->sockets = (int)pj_int(d, "sockets", 1);
    /* memory: an integer before PVE 8.1, "[current=]<MiB>" since */
    const char *ms = json_string_value(json_object_get(d, "memory"));
    out->memory_mb =
        ms && str_starts(ms, "current=") ? pve_memory_mib(ms) : pj_int(d, "memory", 512);
    pj_str(out->name, sizeof out->name, d, "name");
    pj_str(out->lock, sizeof out->lock, d, "lock");
    pj_str(out->tags, sizeof out->tags, d, "tags");
    pj_str(out->description, sizeof out->description, d, "description");
    pj_str(out->digest, sizeof out->digest, d, "digest");
    pj_str(out->ciuser, sizeof out->ciuser, d, "ciuser");
    pj_str(out->ipconfig0, sizeof out->ipconfig0, d, "ipconfig0");
    out->tmpl = pj_bool(d, "template");
    find_bootdisk(d, out);
    out->raw = d;
    return 0;
}

int pve_ct_config_get(pve_client *c, const char *node, int vmid, json_t **out,
                      struct pve_error *err)
{
    char path[256];
    *out = NULL;
    if (pve_path(path, sizeof path, "/nodes/%s/lxc/%d/config", node, vmid))
        return invalid(err, "bad node name", NULL);
    json_t *d = NULL;
    int rc = pve_call(c, "GET", path, NULL, &d, err);
    if (rc)
        return rc;
    if (!json_is_object(d)) {
        json_decref(d);
        return invalid(err, "unexpected result for %s", path);
    }
    *out = d;
    return 0;
}

void pve_vm_config_release(struct pve_vm_config *cfg)
{
    json_decref(cfg->raw);
    cfg->raw = NULL;
}

static json_t *config_params(const struct pve_config_set *s)
{
    json_t *p = json_object();
    if (s->cores > 0)
        json_object_set_new(p, "cores", json_integer(s->cores));
    if (s->sockets > 0)
        json_object_set_new(p, "sockets", json_integer(s->sockets));
    if (s->memory_mb > 0)
        json_object_set_new(p, "memory", json_integer(s->memory_mb));
    if (s->name)
        json_object_set_new(p, "name", json_string(s->name));
    if (s->sshkeys) {
        char *enc = pve_sshkeys_encode(s->sshkeys);
        json_object_set_new(p, "sshkeys", json_string(enc));
        free(enc);
    }
    if (s->ciuser)
        json_object_set_new(p, "ciuser", json_string(s->ciuser));
    if (s->ipconfig0)
        json_object_set_new(p, "ipconfig0", json_string(s->ipconfig0));
    if (s->net0)
        json_object_set_new(p, "net0", json_string(s->net0));
    if (s->nameserver)
        json_object_set_new(p, "nameserver", json_string(s->nameserver));
    if (s->searchdomain)
        json_object_set_new(p, "searchdomain", json_string(s->searchdomain));
    if (s->tags)
        json_object_set_new(p, "tags", json_string(s->tags));
    if (s->description)
        json_object_set_new(p, "description", json_string(s->description));
    if (s->delete_keys)
        json_object_set_new(p, "delete", json_string(s->delete_keys));
    if (s->digest)
        json_object_set_new(p, "digest", json_string(s->digest));
    if (s->cipassword)
        json_object_set_new(p, "cipassword", json_string(s->cipassword));
    if (s->key && s->value)
        json_object_set_new(p, s->key, json_string(s->value));
    if (s->skiplock)
        json_object_set_new(p, "skiplock", json_integer(1));
    return p;
}

/* ---- a config write whose answer was lost ---------------------------------- */

/* How many times a write is sent in all when answers keep being lost. */
#define LOST_SENDS 3

/* A value as text, a new string: a string as it is, a number in decimal, a
 * boolean 1/0. */
static char *value_text(json_t *v)
{
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    if (json_is_boolean(v))
        return xstrdup(json_is_true(v) ? "1" : "0");
    return xstrdup("");
}

/* Blank end of a text cut (PVE stores a description as comment lines and
 * may give it back with a final newline). */
static void rtrim(char *s)
{
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1]))
        s[--l] = '\0';
}

/* %XX decoded in place (sshkeys: stored and given back URL-encoded). */
static void url_decode(char *s)
{
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (p[0] == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], '\0'};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Is `item` (separated by `seps`) one of `list`'s? */
static bool list_has(const char *list, const char *seps, const char *item, size_t il)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, seps);
        if (n == il && strncmp(p, item, il) == 0)
            return true;
        p += n + (p[n] != '\0');
    }
    return false;
}

/* Every item of `want` is one of `have`'s (separated by `seps`). */
static bool items_within(const char *want, const char *have, const char *seps)
{
    for (const char *p = want; *p;) {
        size_t n = strcspn(p, seps);
        if (n && !list_has(have, seps, p, n))
            return false;
        p += n + (p[n] != '\0');
    }
    return true;
}

/* A netN value in one spelling: "<model>=<mac>" as "model=<model>" and
 * "macaddr=<MAC in capitals>" (qemu-server prints "virtio=BC:24:..."
 * whatever it was given). */
static void net_canon(const char *v, char *out, size_t len)
{
    static const char *const models[] = {"e1000",   "e1000e", "virtio",   "rtl8139",
                                         "vmxnet3", "i82551", "ne2k_pci", "pcnet"};
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = v; *p && o < len;) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        size_t kl = eq ? (size_t)(eq - p) : n;
        bool model = false;
        for (size_t i = 0; i < sizeof models / sizeof *models && !model; i++)
            model = strlen(models[i]) == kl && strncmp(p, models[i], kl) == 0;
        if (model) {
            o += (size_t)snprintf(out + o, len - o, "%smodel=%.*s", o ? "," : "", (int)kl, p);
            if (eq && o < len)
                o += (size_t)snprintf(out + o, len - o, ",macaddr=%.*s", (int)(n - kl - 1), eq + 1);
        } else if (n) {
            o += (size_t)snprintf(out + o, len - o, "%s%.*s", o ? "," : "", (int)n, p);
        }
        p += n + (p[n] == ',');
    }
    char *m = strstr(out, "macaddr=");
    for (m = m ? m + 8 : NULL; m && *m && *m != ','; m++)
        *m = (char)toupper((unsigned char)*m);
}

/* Does the config value `have` of `key` hold the value `want` a write
 * asked for, as Proxmox stores it: a property string (netN, ipconfigN, a
 * disk) with what was asked among its options (a generated MAC, a disk's
 * size= added), tags in any order (sorted on write), memory as a number
 * or "current=<MiB>", a description up to its final blanks, sshkeys
 * decoded. */
static bool value_held(const char *key, json_t *want, json_t *have)
{
    if (!have)
        return false;
    char *w = value_text(want), *h = value_text(have);
    bool held;
    if (strcmp(key, "memory") == 0) {
        held = strcmp(str_starts(w, "current=") ? w + 8 : w,
                      str_starts(h, "current=") ? h + 8 : h) == 0;
    } else if (strcmp(key, "tags") == 0) {
        held = items_within(w, h, ";, ") && items_within(h, w, ";, ");
    } else if (strcmp(key, "description") == 0) {
        rtrim(w);
        rtrim(h);
        held = strcmp(w, h) == 0;
    } else if (strcmp(key, "sshkeys") == 0) {
        url_decode(w);
        url_decode(h);
        rtrim(w);
        rtrim(h);
        held = strcmp(w, h) == 0;
    } else if (str_starts(key, "net") && isdigit((unsigned char)key[3])) {
        /* the canonical spelling is at most ",model=" and ",macaddr=" longer */
        size_t lw = strlen(w) + 32, lh = strlen(h) + 32;
        char *cw = xmalloc(lw), *ch = xmalloc(lh);
        net_canon(w, cw, lw);
        net_canon(h, ch, lh);
        held = items_within(cw, ch, ",");
        free(cw);
        free(ch);
    } else if (str_starts(key, "ipconfig") || volume_key(key)) {
        held = items_within(w, h, ",");
    } else {
        held = strcmp(w, h) == 0;
    }
    free(w);
    free(h);
    return held;
}

/* The parameters of a write that are no config value. */
static bool control_param(const char *k)
{
    return strcmp(k, "digest") == 0 || strcmp(k, "skiplock") == 0 || strcmp(k, "delete") == 0 ||
           strcmp(k, "background_delay") == 0;
}

/* After a config write's answer was lost: does the VM's config (pending
 * values in) hold what the write asked, each value set and each deleted
 * key gone? A cipassword cannot be told (Proxmox gives it back masked):
 * it is not looked at. A write with a digest counts as applied only when
 * the config's digest moved (the digest unchanged, nothing was written: a
 * write that only sets values the config already had is sent again, and
 * its digest still matches). A write without one counts when at least one
 * value or deletion could be looked at. 0 with *held, or the read's
 * error. */
static int config_holds(pve_client *c, const char *node, int vmid, json_t *params, bool *held,
                        struct pve_error *err)
{
    struct pve_vm_config cfg;
    *held = false;
    int rc = pve_vm_config_get(c, node, vmid, false, &cfg, err);
    if (rc)
        return rc;
    bool all = true;
    size_t looked = 0;
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v)
    {
        if (control_param(k) || strcmp(k, "cipassword") == 0)
            continue;
        looked++;
        all = all && value_held(k, v, json_object_get(cfg.raw, k));
    }
    const char *del = json_string_value(json_object_get(params, "delete"));
    for (const char *p = del ? del : ""; *p;) {
        size_t n = strcspn(p, ",; ");
        if (n) {
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)n, p);
            looked++;
            all = all && !json_object_get(cfg.raw, strcmp(key, "cdrom") == 0 ? "ide2" : key);
        }
        p += n + (p[n] != '\0');
    }
    const char *digest = json_string_value(json_object_get(params, "digest"));
    *held = all && (digest ? strcmp(digest, cfg.digest) != 0 : looked > 0);
    pve_vm_config_release(&cfg);
    return 0;
}

/* What Proxmox holds now tells whether a write whose answer was lost is
 * done: 0 with *done, nonzero when it cannot tell. */
typedef int (*write_judge_fn)(pve_client *c, void *ud, bool *done);

/* A write sent once each time (PVE_CALL_ONCE), LOST_SENDS times at most.
 * Its answer lost after it went out (PVE_E_NETWORK, maybe_sent), the task
 * `k` started since the call is its answer (with upid); else `judge`
 * tells: done, the write is (*upid ""); not, it is sent again. A write
 * sent again that fails is judged too: a first one still under way when
 * Proxmox was read may have got there first. Sent again by the retry
 * policy instead, a config write with a digest failed "checksum mismatch
 * (file change by other user?)" against its own first run, a POST started
 * a second task, a relative resize grew the disk twice. The error is the
 * last call's when the judge cannot tell. upid: NULL for a write whose
 * answer is no UPID (a PUT of the config). */
static int judged_write(pve_client *c, const char *method, const char *path, json_t *params,
                        const char *node, const struct task_key *k, write_judge_fn judge, void *ud,
                        char upid[PVE_UPID_MAX], struct pve_error *err)
{
    struct pve_error local;
    if (!err)
        err = &local;
    int rc = 0;
    for (int n = 1; n <= LOST_SENDS; n++) {
        int64_t t0 = wall_ms();
        rc = upid ? upid_call(c, method, path, params, PVE_CALL_ONCE, upid, err)
                  : pve_call_ex(c, method, path, params, PVE_CALL_ONCE, NULL, err);
        bool lost = rc == PVE_E_NETWORK && err->maybe_sent;
        if (rc == 0 || (!lost && n == 1))
            break;
        if (lost && upid && find_task(c, node, k, t0, upid)) {
            rc = 0;
            break;
        }
        bool done = false;
        if (judge(c, ud, &done) || (!done && !lost))
            break;
        if (done) {
            if (upid)
                upid[0] = '\0';
            rc = 0;
            break;
        }
    }
    if (rc == 0 && err->cls != PVE_OK) /* a failure answered by what Proxmox holds */
        memset(err, 0, sizeof *err);
    return rc;
}

struct config_judge {
    const char *node;
    int vmid;
    json_t *params;
};

static int config_judged(pve_client *c, void *ud, bool *done)
{
    struct config_judge *j = ud;
    struct pve_error re;
    return config_holds(c, j->node, j->vmid, j->params, done, &re);
}

/* A config write (PUT; POST when upid is given, its task qmconfig). */
static int config_write(pve_client *c, const char *node, int vmid, const char *path, json_t *params,
                        char upid[PVE_UPID_MAX], struct pve_error *err)
{
    struct config_judge j = {node, vmid, params};
    struct task_key k = {.types = {"qmconfig"}, .vmid = vmid};
    return judged_write(c, upid ? "POST" : "PUT", path, params, node, &k, config_judged, &j, upid,
                        err);
}

int pve_vm_config_set(pve_client *c, const char *node, int vmid, const struct pve_config_set *s,
                      struct pve_error *err)
{
    char path[256];
    if (vm_path(path, sizeof path, node, vmid, "/config"))
        return invalid(err, "bad node name", NULL);
    json_t *params = config_params(s);
    int rc = config_write(c, node, vmid, path, params, NULL, err);
    json_decref(params);
    return rc;
}

int pve_vm_config_set_async(pve_client *c, const char *node, int vmid,
                            const struct pve_config_set *s, char upid[PVE_UPID_MAX],
                            struct pve_error *err)
{
    char path[256];
    if (vm_path(path, sizeof path, node, vmid, "/config"))
        return invalid(err, "bad node name", NULL);
    json_t *params = config_params(s);
    int rc = config_write(c, node, vmid, path, params, upid, err);
    json_decref(params);
    return rc;
}

int64_t pve_memory_mib(const char *value)
{
    return atoll(str_starts(value, "current=") ? value + 8 : value);
}

int pve_vm_pending(pve_client *c, const char *node, int vmid, struct pve_pending **out, size_t *n,
                   struct pve_error *err)
{
    char path[256];
    if (vm_path(path, sizeof path, node, vmid, "/pending"))
        return invalid(err, "bad node name", NULL);
    json_t *a = NULL, *e;
    size_t i, k = 0;
    int rc = pve_call(c, "GET", path, NULL, &a, err);
    if (rc)
        return rc;
    struct pve_pending *v = xcalloc(json_array_size(a) + 1, sizeof *v);
    json_array_foreach(a, i, e)
    {
        bool has = json_object_get(e, "pending") != NULL;
        bool del = pj_int(e, "delete", 0) != 0;
        if (!has && !del)
            continue;
        pj_str(v[k].key, sizeof v[k].key, e, "key");
        pj_str(v[k].value, sizeof v[k].value, e, "value");
        pj_str(v[k].pending, sizeof v[k].pending, e, "pending");
        v[k].has_pending = has;
        v[k].del = del;
        k++;
    }
    *n = k;
    *out = v;
    json_decref(a);
    return 0;
}

/* ---- resize ---------------------------------------------------------------- */

/* PVE's pattern: \+?\d+(\.\d+)?[KMGT]? */
static bool size_ok(const char *s)
{
    if (*s == '+')
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    while (isdigit((unsigned char)*s))
        s++;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return false;
        while (isdigit((unsigned char)*s))
            s++;
    }
    if (*s && strchr("KMGT", *s))
        s++;
    return *s == '\0';
}

/* A size as resize_vm reads it (size_ok's): whole bytes, truncated. */
static int64_t size_bytes(const char *s)
{
    char *end;
    double v = strtod(s + (*s == '+'), &end);
    return (int64_t)(v * unit_mul(*end));
}

/* The size= of `disk` in the VM's config, bytes (0: none given). */
static int disk_size_of(pve_client *c, const char *node, int vmid, const char *disk, int64_t *size,
                        struct pve_error *err)
{
    struct pve_vm_config cfg;
    int rc = pve_vm_config_get(c, node, vmid, false, &cfg, err);
    if (rc)
        return rc;
    *size = drive_size(json_string_value(json_object_get(cfg.raw, disk)));
    pve_vm_config_release(&cfg);
    return 0;
}

struct resize_judge {
    const char *node;
    int vmid;
    const char *disk;
    int64_t target; /* bytes; < 0: not known (a relative size on an unsized disk) */
};

/* Done when the disk has at least the size asked: a storage may round it
 * up (LVM: to its extents). */
static int resize_judged(pve_client *c, void *ud, bool *done)
{
    struct resize_judge *j = ud;
    struct pve_error re;
    int64_t now = 0;
    if (j->target < 0 || disk_size_of(c, j->node, j->vmid, j->disk, &now, &re))
        return -1;
    *done = now >= j->target;
    return 0;
}

int pve_vm_resize(pve_client *c, const char *node, int vmid, const char *disk, const char *size,
                  char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    struct pve_error local;
    if (!err)
        err = &local;
    if (!size || !size_ok(size))
        return invalid(err, "size: '%s' is not a size such as 50G or +10G", size);
    if (!disk || !*disk)
        return invalid(err, "disk: a drive name such as scsi0 is required", NULL);
    if (vm_path(path, sizeof path, node, vmid, "/resize"))
        return invalid(err, "bad node name", NULL);
    /* the size the disk is to have. A relative one is asked as that, from
     * the size it has: "+10G" sent again, or landing after its timeout
     * when Proxmox waited for the config's lock, grew the disk twice */
    int64_t target = size_bytes(size), have = 0;
    char asked[32];
    if (size[0] == '+') {
        int rc = disk_size_of(c, node, vmid, disk, &have, err);
        if (rc)
            return rc;
        target = have > 0 ? have + target : -1; /* -1: not known, asked as it is */
        snprintf(asked, sizeof asked, "%lld", (long long)target);
        if (target > 0)
            size = asked;
    }
    json_t *params = json_pack("{s:s,s:s}", "disk", disk, "size", size);
    /* PVE >= 8: the resize task; PVE 7 resizes in the request: the disk */
    struct task_key k = {.types = {"resize"}, .vmid = vmid};
    struct resize_judge j = {node, vmid, disk, target};
    int rc = judged_write(c, "PUT", path, params, node, &k, resize_judged, &j, upid, err);
    json_decref(params);
    return rc;
}

int pve_vm_move_disk(pve_client *c, const char *node, int vmid, const char *disk, int target_vmid,
                     const char *target_disk, char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    if (!disk || !*disk || !target_disk || !*target_disk)
        return invalid(err, "disk: a drive name such as scsi0 is required", NULL);
    if (target_vmid < 100 || target_vmid == vmid)
        return invalid(err, "target-vmid: another VM's ID is required", NULL);
    if (vm_path(path, sizeof path, node, vmid, "/move_disk"))
        return invalid(err, "bad node name", NULL);
    /* qemu-server names the qmmove task after both VMs and disks */
    char id[128];
    snprintf(id, sizeof id, "%d-%s>%d-%s", vmid, disk, target_vmid, target_disk);
    struct task_key k = {.types = {"qmmove"}, .vmid = vmid, .id = id};
    json_t *params = json_pack("{s:s,s:i,s:s}", "disk", disk, "target-vmid", target_vmid,
                               "target-disk", target_disk);
    int rc = once_task_call(c, "POST", path, params, node, &k, upid, err);
    json_decref(params);
    return rc;
}

/* ---- status and power ------------------------------------------------------- */

int pve_vm_status(pve_client *c, const char *node, int vmid, struct pve_vm_status *out,
                  struct pve_error *err)
{
    char path[256];
    memset(out, 0, sizeof *out);
    if (vm_path(path, sizeof path, node, vmid, "/status/current"))
        return invalid(err, "bad node name", NULL);
    json_t *d = NULL;
    int rc = pve_call(c, "GET", path, NULL, &d, err);
    if (rc)
        return rc;
    out->vmid = (int)pj_int(d, "vmid", vmid);
    pj_str(out->status, sizeof out->status, d, "status");
    pj_str(out->qmpstatus, sizeof out->qmpstatus, d, "qmpstatus");
    if (!out->qmpstatus[0])
        snprintf(out->qmpstatus, sizeof out->qmpstatus, "%s", out->status);
    pj_str(out->name, sizeof out->name, d, "name");
    pj_str(out->lock, sizeof out->lock, d, "lock");
    json_t *ha = json_object_get(d, "ha");
    out->ha_managed = pj_bool(ha, "managed");
    pj_str(out->ha_state, sizeof out->ha_state, ha, "state");
    out->cpus = (int)pj_int(d, "cpus", 0);
    out->maxmem = pj_int(d, "maxmem", 0);
    out->mem = pj_int(d, "mem", 0);
    out->maxdisk = pj_int(d, "maxdisk", 0);
    out->uptime = pj_int(d, "uptime", 0);
    out->tmpl = pj_bool(d, "template");
    out->agent = pj_bool(d, "agent");
    json_decref(d);
    return 0;
}

const char *pve_power_name(enum pve_power p)
{
    static const char *const names[] = {"start",  "stop",   "shutdown", "suspend",
                                        "resume", "reboot", "reset"};
    return (unsigned)p < sizeof names / sizeof *names ? names[p] : "?";
}

/* The task types a power action's worker runs under (qemu-server: a pause
 * is "qmpause", a suspend to disk, which we never ask, "qmsuspend"; the
 * start of an HA-managed VM is "hastart", its stop and shutdown "hastop"). */
static void power_task_key(enum pve_power p, int vmid, struct task_key *k)
{
    static const char *const types[][2] = {
        {"hastart", "qmstart"}, {"hastop", "qmstop"}, {"hastop", "qmshutdown"}, {"qmpause", NULL},
        {"qmresume", NULL},     {"qmreboot", NULL},   {"qmreset", NULL}};
    memset(k, 0, sizeof *k);
    k->vmid = vmid;
    if ((unsigned)p < sizeof types / sizeof *types) {
        k->types[0] = types[p][0];
        k->types[1] = types[p][1];
    }
}

bool pve_vm_power_task(pve_client *c, const char *node, int vmid, enum pve_power action,
                       int64_t since, char upid[PVE_UPID_MAX])
{
    if ((unsigned)action > PVE_POWER_RESET)
        return false;
    struct task_key k;
    power_task_key(action, vmid, &k);
    return find_task(c, node, &k, since * 1000, upid);
}

int pve_vm_power(pve_client *c, const char *node, int vmid, enum pve_power action,
                 const struct pve_power_opts *opts, char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256], suffix[32];
    if ((unsigned)action > PVE_POWER_RESET)
        return invalid(err, "unknown power action", NULL);
    snprintf(suffix, sizeof suffix, "/status/%s", pve_power_name(action));
    if (vm_path(path, sizeof path, node, vmid, suffix))
        return invalid(err, "bad node name", NULL);
    json_t *params = json_object();
    bool timeout_ok = action == PVE_POWER_STOP || action == PVE_POWER_SHUTDOWN ||
                      action == PVE_POWER_REBOOT || action == PVE_POWER_START;
    if (opts && opts->timeout > 0 && timeout_ok)
        json_object_set_new(params, "timeout", json_integer(opts->timeout));
    if (opts && opts->force_stop && action == PVE_POWER_SHUTDOWN)
        json_object_set_new(params, "forceStop", json_integer(1));
    if (opts && opts->skiplock && action != PVE_POWER_REBOOT && action != PVE_POWER_SHUTDOWN)
        json_object_set_new(params, "skiplock", json_integer(1));
    /* power actions are idempotent in effect (a second start fails, a second
     * stop is a no-op), but a second task would confuse the caller's wait */
    struct task_key k;
    power_task_key(action, vmid, &k);
    int rc = once_task_call(c, "POST", path, params, node, &k, upid, err);
    json_decref(params);
    return rc;
}

int pve_vm_migrate(pve_client *c, const char *node, int vmid, const char *target,
                   const struct pve_migrate_opts *opts, char upid[PVE_UPID_MAX],
                   struct pve_error *err)
{
    char path[256];
    if (vm_path(path, sizeof path, node, vmid, "/migrate"))
        return invalid(err, "bad node name", NULL);
    if (!target || !*target)
        return invalid(err, "no target node%s", "");
    json_t *params = json_pack("{s:s}", "target", target);
    if (opts && opts->online)
        json_object_set_new(params, "online", json_integer(1));
    if (opts && opts->with_local_disks)
        json_object_set_new(params, "with-local-disks", json_integer(1));
    if (opts && opts->targetstorage && *opts->targetstorage)
        json_object_set_new(params, "targetstorage", json_string(opts->targetstorage));
    struct task_key k = {.types = {"hamigrate", "qmigrate"}, .vmid = vmid};
    int rc = once_task_call(c, "POST", path, params, node, &k, upid, err);
    json_decref(params);
    return rc;
}

int pve_vm_delete(pve_client *c, const char *node, int vmid, const struct pve_delete_opts *opts,
                  char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    if (vm_path(path, sizeof path, node, vmid, NULL))
        return invalid(err, "bad node name", NULL);
    json_t *params = json_object();
    if (opts && opts->purge)
        json_object_set_new(params, "purge", json_integer(1));
    if (opts && opts->destroy_unreferenced)
        json_object_set_new(params, "destroy-unreferenced-disks", json_integer(1));
    if (opts && opts->skiplock)
        json_object_set_new(params, "skiplock", json_integer(1));
    struct task_key k = {.types = {"qmdestroy"}, .vmid = vmid};
    int rc = once_task_call(c, "DELETE", path, params, node, &k, upid, err);
    json_decref(params);
    return rc;
}
