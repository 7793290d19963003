/* reinstall: a VM's boot disk replaced by a fresh clone of another OS's
 * template, all or nothing, as a durable job (docs/design/reinstall.md).
 *
 *   queued (prepare) -> clone -> wait_clone -> configure -> resize
 *     -> stop [-> migrate] -> detach -> swap -> cloudinit -> start -> verify
 *     -> commit
 *   a failure up to resize -> abort (the temporary clone goes; the VM was
 *     never touched)
 *   a failure from stop on -> restore (the old disk back in its slot, the
 *     old cloud-init settings, the VM started if it ran) -> abort
 *
 * The Proxmox VMID stays: the new OS is cloned to a temporary VMID on the
 * VM's node, grown to the VM's disk size, and its disk is reassigned
 * (move_disk with target-vmid) into the VM's boot slot while the VM is
 * stopped; the old disk waits as an unusedN of the VM until the VM runs
 * the new one, then goes with the temporary VM. Everything else of the
 * VM's config (net0 and its MAC, ipconfig0, nameserver, searchdomain,
 * cores, memory, tags, name, HA, backups, firewall) is never written.
 *
 * When the VM's node has no room for the new disk, the temporary VM is
 * made on another node of the cluster (one its address pools reach, with
 * room for both disks) and the stopped VM migrates there before the swap
 * ("migrate"); from then on the job's node, and the record's, is that one.
 *
 * What the job decided (the temporary VMID, the old disk's slot and volume,
 * the old cloud-init values) is its attempts[0], written with the step
 * before the Proxmox call it leads to; a resumed step reads the VM's config
 * before acting, so that a kill -9 at any point ends, after the restart,
 * with the old or the new OS, never none and never two VMs. */
#include "common/log.h"
#include "common/sshkey.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/events.h"
#include "pve/pve_api.h"

#include <crypt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)
#define TRIES 4
#define STEP_MS (600 * 1000L)
#define CLONE_MS (3600 * 1000L)
#define CLONE_STOP_MS (60 * 1000L) /* a stopped clone's wait for its worker's end */
#define UNLOCK_MS (120 * 1000L)
/* how long restore and abort keep trying before the job fails, saying what
 * is left */
#define REPAIR_MS (600 * 1000L)
#define PASSWORD_MAX 128

struct rctx {
    struct core *k;
    struct job_rec *j;
    struct vm_rec v;
    pve_client *pc;
    const struct cfg_node *cn;
    json_t *st; /* attempts[0], the job's working state (borrowed) */
    bool resumed;
    bool have_rec; /* c->v is the VM's record as the job was queued for (record writes go there) */
    /* why the job may not go on to the new OS (the record, the OS or a
     * node changed since it was queued; empty: it may): it takes the way a
     * failure at its step takes (halt) */
    char halt[256];
};

/* ---- requests ----------------------------------------------------------------- */

static bool password_ok(const char *p, char *why, size_t len)
{
    size_t n = strlen(p);
    if (n < 8 || n > PASSWORD_MAX) {
        snprintf(why, len, "must be 8 to %d characters", PASSWORD_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
            snprintf(why, len, "must not hold control characters");
            return false;
        }
    return true;
}

/* SHA-512 crypt ("$6$..."), the form cloud-init and PVE take as it is. */
static int hash_password(const char *pw, char out[CRYPT_OUTPUT_SIZE])
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    if (!crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof salt))
        return -1;
    const char *h = crypt_r(pw, salt, &cd);
    if (!h || h[0] != '$')
        return -1;
    snprintf(out, CRYPT_OUTPUT_SIZE, "%s", h);
    return 0;
}

int core_vm_reinstall(struct core *k, int vmid, const char *owner,
                      const struct reinstall_request *r, char job_id[40], struct core_error *err)
{
    char msg[256], field[32];
    struct vm_request probe = {.cores = 0};
    snprintf(probe.os, sizeof probe.os, "%s", r->os ? r->os : "");
    if (!r->os || !config_os(k->cfg, r->os) || strlen(r->os) >= sizeof probe.os) {
        /* validate_request says which OSes there are */
        validate_request(k->cfg, &probe, field, sizeof field, msg, sizeof msg);
        return core_fail(err, CORE_E_INVALID, "os", "%s", msg);
    }
    if (r->ssh_keys) {
        int bad = 0;
        if (strlen(r->ssh_keys) > 16384)
            return core_fail(err, CORE_E_INVALID, "ssh_keys", "at most 16 KiB of keys");
        if (!sshkeys_valid(r->ssh_keys, &bad))
            return core_fail(err, CORE_E_INVALID, "ssh_keys",
                             "key %d is not an OpenSSH public key (\"<type> <base64> [comment]\")",
                             bad);
    }
    if (r->password && !password_ok(r->password, msg, sizeof msg))
        return core_fail(err, CORE_E_INVALID, "password", "%s", msg);
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, true, &v, err);
    if (rc)
        return rc;
    const struct cfg_node *cn = config_node(k->cfg, v.node);
    if (cn && !config_template(cn, r->os)) {
        rc = core_fail(err, CORE_E_INVALID, "os", "node %s of VM %d has no %s template", v.node,
                       vmid, r->os);
        goto out;
    }
    /* a cordoned node takes no new VM, and a reinstall makes one there */
    struct node_cordon nc;
    if (core_node_cordon_get(k, v.node, &nc) == CORE_E_INTERNAL) { /* unknown is not "no" */
        rc = core_fail(err, CORE_E_INTERNAL, "node",
                       "whether node %s of VM %d is cordoned cannot be read now", v.node, vmid);
        goto out;
    }
    if (nc.cordoned) {
        rc = core_fail(err, CORE_E_CONFLICT, "node",
                       "node %s of VM %d is cordoned (by %s): no reinstall there until it is "
                       "uncordoned",
                       v.node, vmid, nc.by);
        goto out;
    }
    /* the temporary clone's disk counts while it exists */
    if ((rc = core_quota_check(k, v.owner, 0, 0, 0, v.disk_gb, err)))
        goto out;
    json_t *req = json_pack("{s:s,s:I}", "os", r->os, "temp_disk_gb", (json_int_t)v.disk_gb);
    if (r->ssh_keys)
        json_object_set_new(req, "ssh_keys", json_string(r->ssh_keys));
    if (r->password) { /* only its hash is kept, here as in PVE (which takes a hash as is) */
        char hash[CRYPT_OUTPUT_SIZE];
        if (hash_password(r->password, hash)) {
            json_decref(req);
            rc = core_fail(err, CORE_E_INTERNAL, "password", "cannot hash the password");
            goto out;
        }
        json_object_set_new(req, "password", json_string(hash));
    }
    struct quota_delta d = {0, 0, v.disk_gb};
    rc = core_enqueue(k, &v, "reinstall", req, job_id, &d, err);
out:
    vm_rec_release(&v);
    return rc;
}

/* ---- the job's state ------------------------------------------------------------ */

static const char *st_str(struct rctx *c, const char *key)
{
    const char *s = json_string_value(json_object_get(c->st, key));
    return s ? s : "";
}

static int64_t st_int(struct rctx *c, const char *key)
{
    return json_integer_value(json_object_get(c->st, key));
}

static void st_set_str(struct rctx *c, const char *key, const char *val)
{
    json_object_set_new(c->st, key, json_string(val ? val : ""));
}

static void st_set_int(struct rctx *c, const char *key, int64_t val)
{
    json_object_set_new(c->st, key, json_integer(val));
}

static const char *req_str(struct rctx *c, const char *key)
{
    return json_string_value(json_object_get(c->j->request, key));
}

static int tmp_vmid(struct rctx *c)
{
    return (int)st_int(c, "tmp_vmid");
}

/* The temporary VM's node: the VM's own, or the other node prepare chose
 * when the VM's had no room ("tmp_node"; the VM goes there at "migrate",
 * after which the job's node is that one too). */
static const char *tmp_node(struct rctx *c)
{
    const char *n = json_string_value(json_object_get(c->st, "tmp_node"));
    return n && n[0] ? n : c->j->node;
}

/* Where a call about `vmid` goes: the VM's node or the temporary VM's. */
static const char *node_of(struct rctx *c, int vmid)
{
    return vmid == c->j->vmid ? c->j->node : tmp_node(c);
}

static bool transient(const struct pve_error *e)
{
    return e->cls == PVE_E_OTHER || e->cls == PVE_E_LOCK || e->cls == PVE_E_NETWORK ||
           e->cls == PVE_E_TIMEOUT;
}

static void pause_n(struct rctx *c, int n)
{
    store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
    sleep_ms(250L << (n < 4 ? n - 1 : 3)); /* 250 ms, 500 ms, 1 s, then 2 s */
}

/* May a failed call be made again (a 500, a lock, no answer: TRIES in all,
 * with pauses)? Callers look at Proxmox first when the call may have had
 * its effect. */
static bool again(struct rctx *c, int *n, const struct pve_error *e)
{
    if (!transient(e) || ++*n >= TRIES || core_stopping(c->k))
        return false;
    log_warn("job", "job=%s vmid=%d reinstall %s: %s; again", c->j->id, c->j->vmid, c->j->step,
             e->message);
    pause_n(c, *n);
    return true;
}

static void marker(struct rctx *c, char *out, size_t len)
{
    snprintf(out, len, "proxd job %s (reinstall of VM %d)", c->j->id, c->j->vmid);
}

/* Volume ids equal up to their options ("local-lvm:vm-100-disk-0,size=8G"). */
static bool same_volume(const char *a, const char *b)
{
    size_t la = strcspn(a, ","), lb = strcspn(b, ",");
    return la == lb && la > 0 && strncmp(a, b, la) == 0;
}

/* ---- the record ------------------------------------------------------------------ */

/* Write the record, with its event if any (as save_vm does: only over the
 * state just read, so a DELETE that landed meanwhile is not written over),
 * waiting for a database out of reach (core_db_again). false when it was
 * not written: the core stops meanwhile (the step runs again when the job
 * resumes), or it failed otherwise (logged). */
static bool save_rec_logged(struct rctx *c, struct store_event *ev)
{
    struct store_error se = {0};
    if (!c->have_rec) /* no record, or another VM's now: nothing of the job's to write */
        return true;
    snprintf(c->v.job, sizeof c->v.job, "%s", c->j->id);
    int waits = 0;
    for (int tries = 1; tries <= 5;) {
        struct vm_rec now;
        int rc = store_vm_get_id(c->k->st, c->v.id, &now, &se);
        if (rc && core_db_again(c->k, rc, &se, &waits, c->j->id, "read the VM's record"))
            continue;
        if (rc)
            break;
        enum vm_state read = now.state;
        c->v.state = now.state;
        if (now.state != VMS_ENABLED)
            snprintf(c->v.job, sizeof c->v.job, "%s", now.job);
        vm_rec_release(&now);
        rc = ev ? store_vm_update_logged(c->k->st, &c->v, read, ev, c->j->created_at, &se)
                : store_vm_update_if(c->k->st, &c->v, read, 0, &se);
        if (rc == 0)
            return true;
        if (core_db_again(c->k, rc, &se, &waits, c->j->id, "update the VM's record"))
            continue;
        if (rc != STORE_E_CONFLICT)
            break;
        tries++;
    }
    log_error("job", "job=%s vmid=%d cannot update the record: %s", c->j->id, c->v.vmid,
              se.message);
    return false;
}

static void save_rec(struct rctx *c)
{
    save_rec_logged(c, NULL);
}

/* ---- Proxmox, with reads made again when they fail transiently ---------------- */

static int read_config(struct rctx *c, int vmid, struct pve_vm_config *cfg, struct pve_error *e)
{
    int rc = 0;
    for (int n = 0; n < TRIES; n++) {
        if (n)
            pause_n(c, n);
        rc = pve_vm_config_get(c->pc, node_of(c, vmid), vmid, true, cfg, e);
        if (!rc || !transient(e) || core_stopping(c->k))
            break;
    }
    return rc;
}

static int read_status(struct rctx *c, int vmid, struct pve_vm_status *s, struct pve_error *e)
{
    int rc = 0;
    for (int n = 0; n < TRIES; n++) {
        if (n)
            pause_n(c, n);
        rc = pve_vm_status(c->pc, node_of(c, vmid), vmid, s, e);
        if (!rc || !transient(e) || core_stopping(c->k))
            break;
    }
    return rc;
}

/* Wait for a task: 0, -1 when the core stops (resume later), or its error. */
static int wait_task(struct rctx *c, const char *upid, long ms, struct pve_error *e)
{
    return core_wait_task(c->k, c->pc, upid, ms, e);
}

/* Wait until the VM's config has no lock. */
static int wait_unlocked(struct rctx *c, int vmid, struct pve_error *e)
{
    int64_t end = mono_ms() + UNLOCK_MS;
    for (long pause = 50;; pause = pause < 1000 ? pause * 2 : 1000) {
        struct pve_vm_config cfg;
        int rc = read_config(c, vmid, &cfg, e);
        if (rc)
            return rc;
        char lock[32];
        snprintf(lock, sizeof lock, "%s", cfg.lock);
        pve_vm_config_release(&cfg);
        if (!lock[0])
            return 0;
        if (mono_ms() > end || core_stopping(c->k)) {
            snprintf(e->message, sizeof e->message, "VM %d is still locked (%s)", vmid, lock);
            e->cls = PVE_E_TIMEOUT;
            return PVE_E_TIMEOUT;
        }
        store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS(c->k), NULL);
        sleep_ms(pause);
    }
}

/* Power a VM to `want` ("running" or "stopped") and wait; 0 when it is. */
static int power_once(struct rctx *c, int vmid, const char *want, struct pve_error *e)
{
    struct pve_vm_status s;
    int rc = read_status(c, vmid, &s, e);
    if (rc || strcmp(s.status, want) == 0)
        return rc;
    char upid[PVE_UPID_MAX] = "";
    bool start = strcmp(want, "running") == 0;
    rc = pve_vm_power(c->pc, node_of(c, vmid), vmid, start ? PVE_POWER_START : PVE_POWER_STOP, NULL,
                      upid, e);
    if (!rc)
        rc = wait_task(c, upid, STEP_MS, e);
    if (rc == -1)
        return rc;
    /* the task's answer may be lost while the VM got there: its status decides */
    struct pve_error e2 = {0};
    if (read_status(c, vmid, &s, &e2) == 0 && strcmp(s.status, want) == 0)
        return 0;
    if (!rc) {
        snprintf(e->message, sizeof e->message, "VM %d is %s after its %s task", vmid, s.status,
                 start ? "start" : "stop");
        e->cls = PVE_E_OTHER;
        rc = PVE_E_OTHER;
    }
    return rc;
}

/* power_once, made again while it fails transiently (it reads the status
 * first: a call that went through is not made twice). */
static int power_to(struct rctx *c, int vmid, const char *want, struct pve_error *e)
{
    int rc, n = 0;
    while ((rc = power_once(c, vmid, want, e)) && rc != -1 && again(c, &n, e))
        ;
    return rc;
}

/* ---- outcomes ------------------------------------------------------------------ */

/* A failure: note why (once: the first failure is the one to tell) and go
 * to `next` (abort before the old VM was touched, restore after). */
static int fail_to(struct rctx *c, const char *next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_to(struct rctx *c, const char *next, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!st_str(c, "error")[0])
        st_set_str(c, "error", msg);
    log_warn("job", "job=%s vmid=%d reinstall: %s at %s: %s", c->j->id, c->j->vmid, msg, c->j->step,
             next);
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, next, -1, "%s: %s", msg,
                   strcmp(next, "abort") == 0 ? "removing the temporary VM"
                                              : "putting the old disk back");
    return 0;
}

static void finish(struct rctx *c, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct rctx *c, bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ok) {
        char msg[1024];
        vsnprintf(msg, sizeof msg, fmt, ap);
        c->j->state = JOB_DONE;
        c->j->finished_at = wall_ms();
        job_checkpoint(c->k, c->j, "done", 100, "%s", msg);
    } else {
        vsnprintf(c->j->error, sizeof c->j->error, fmt, ap);
        c->j->state = JOB_FAILED;
        c->j->finished_at = wall_ms();
        job_checkpoint(c->k, c->j, "failed", 100, "%s", c->j->error);
    }
    va_end(ap);
}

/* What the temporary VM held goes back: the room on the node, the VMID.
 * After a move the room reserved on the new node is the VM's now: it
 * keeps counting until an inventory shows the VM there. */
static void release_tmp(struct rctx *c)
{
    struct store_error se = {0};
    int rc, waits = 0;
    do
        rc = st_int(c, "moved") ? store_settle_capacity(c->k->st, c->j->id, &se)
                                : store_release_capacity(c->k->st, c->j->id, &se);
    while (core_db_again(c->k, rc, &se, &waits, c->j->id, "give back the room"));
    if (!tmp_vmid(c))
        return;
    fleet_vm_removed(c->k->fl, tmp_vmid(c), tmp_node(c));
    /* a clone request that may still be served makes the temporary VM
     * later, after this job ended: released, its VMID went to another
     * creation (on another standalone host: a second VM of it, kept by
     * the reconciler as that one's copy). A leftover holds it until the
     * reconciler's pass, which removes the late VM (its marker names this
     * job) or finds none and releases the VMID. No room is held: the
     * request may never be served. */
    if (st_int(c, "tmp_twice")) {
        log_info("job", "job=%s vmid=%d temporary VMID %d on %s left for the reconciler: %s",
                 c->j->id, c->j->vmid, tmp_vmid(c), tmp_node(c),
                 "a clone request to it may still be served");
        do
            rc = store_leftover_add(c->k->st, tmp_vmid(c), tmp_node(c), c->j->id,
                                    STORE_LEFT_NO_ROOM, &se);
        while (core_db_again(c->k, rc, &se, &waits, c->j->id, "record the temporary VMID"));
        if (rc == 0)
            return;
        log_error("job", "job=%s vmid=%d leftover %d not recorded (%s): VMID set aside", c->j->id,
                  c->j->vmid, tmp_vmid(c), se.message);
        store_vmid_mark_foreign(c->k->st, tmp_vmid(c), NULL);
        return;
    }
    do
        rc = store_vmid_release(c->k->st, tmp_vmid(c), c->k->cfg->quarantine_s * 1000, &se);
    while (core_db_again(c->k, rc, &se, &waits, c->j->id, "release the temporary VMID"));
}

/* ---- prepare ------------------------------------------------------------------------ */

static int reserve_room(struct rctx *c, int64_t need, char *why, size_t len)
{
    struct node_view nv;
    const struct proxd_config *cfg = c->k->cfg;
    if (fleet_node_view(c->k->fl, c->cn->name, &nv) || !nv.up) {
        snprintf(why, len, "node %s is down", c->cn->name);
        return -1;
    }
    /* on a shared storage the room is the pool's (creations elsewhere count) */
    struct cap_room room = {.mem = INT64_MAX / 2,
                            .disk = nv.st_avail - cfg->disk_margin_gb * GiB,
                            .seen_since = nv.seen_since,
                            .pool = nv.pool};
    struct store_error se;
    if (store_reserve_capacity(c->k->st, c->j->id, c->cn->name, 0, need, &room, &se) == 0)
        return 0;
    snprintf(why, len, "no room on %s%s of %s for the new disk (%.300s)",
             nv.pool[0] ? "shared storage " : "", c->cn->storage, c->cn->name, se.message);
    return -1;
}

/* What of the VM's disks a migration would copy to another node's storage:
 * its volumes on storages its node does not share (vmdisks.c); those on a
 * shared pool stay. -1 when the storages or a volume's size cannot be
 * read: the VM then does not move (reserve_elsewhere), rather than move
 * with disks counted as less than they are. */
static int64_t moving_bytes(struct rctx *c, const struct pve_vm_config *cfg)
{
    struct disk_placement dp;
    struct pve_error e = {0};
    if (core_disk_placement(c->pc, c->cn->name, c->j->vmid, cfg, &dp, &e) == 0) {
        /* a linked clone on local storage cannot follow a temporary VM made
         * elsewhere: told before anything is stopped (reserve_elsewhere) */
        st_set_str(c, "old_linked", dp.linked);
        return dp.local;
    }
    log_warn("job", "job=%s vmid=%d its disks cannot be sized on %s (%s): it cannot move", c->j->id,
             c->j->vmid, c->cn->name, e.message);
    return -1;
}

static void add_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_why(char *why, size_t len, const char *fmt, ...)
{
    size_t l = strlen(why);
    if (l + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + l, len - l, fmt, ap);
    va_end(ap);
}

/* Why node cn cannot take the VM (NULL when it may): the OS's template,
 * every pool of the VM's addresses reachable there, not cordoned, up. */
static const char *unfit(struct rctx *c, const struct cfg_node *cn,
                         const struct store_pool_name *pools, size_t np, char *buf, size_t len)
{
    const struct proxd_config *cfg = c->k->cfg;
    if (!config_template(cn, req_str(c, "os")))
        return "no template of the OS";
    for (size_t i = 0; i < np; i++) {
        const struct cfg_ippool *p = config_ippool(cfg, pools[i].name);
        if (!p || !config_ippool_reachable(cfg, p, cn)) {
            snprintf(buf, len, "pool %s of the VM's address is not reachable there", pools[i].name);
            return buf;
        }
    }
    struct node_cordon nc;
    if (core_node_cordon_get(c->k, cn->name, &nc) != 0) /* unknown is not "no" */
        return "whether it is cordoned cannot be read";
    if (nc.cordoned) {
        snprintf(buf, len, "cordoned by %s", nc.by);
        return buf;
    }
    struct node_view nv;
    if (fleet_node_view(c->k->fl, cn->name, &nv) || !nv.up)
        return "down";
    return NULL;
}

/* The VM's node has no room: another node of its cluster that fits
 * (unfit) with room for the new disk, the VM's local disks (the VM moves
 * there with them; those on a shared pool stay where they are) and the
 * VM's memory, reserved under the job; tried in the order
 * their clones would finish (place_order). 0 with "tmp_node" and
 * "template" set; else -1 with why each node would not do added to why. */
static int reserve_elsewhere(struct rctx *c, char *why, size_t len)
{
    const struct proxd_config *cfg = c->k->cfg;
    if (!c->cn->cluster[0])
        return -1; /* a standalone host */
    struct store_pool_name *pools = NULL;
    size_t np = 0;
    struct store_error se;
    if (store_addr_vm_pools(c->k->st, c->v.id, &pools, &np, &se)) {
        add_why(why, len, "; the pools of its addresses cannot be read: %.200s", se.message);
        return -1;
    }
    struct place_cand cands[CFG_MAX_NODES];
    int n = 0;
    int64_t old = st_int(c, "old_local"), size = st_int(c, "old_size");
    if (old < 0) {
        free(pools);
        add_why(why, len,
                "; it cannot move to another node: the sizes of its disks cannot be "
                "read");
        return -1;
    }
    const char *linked = st_str(c, "old_linked");
    if (linked && linked[0]) {
        free(pools);
        add_why(why, len,
                "; it cannot move to another node: its disk %.200s is a linked clone on "
                "local storage, which Proxmox does not migrate",
                linked);
        return -1;
    }
    for (int i = 0; i < cfg->nnodes; i++) {
        const struct cfg_node *cn = &cfg->nodes[i];
        if (cn == c->cn || strcmp(cn->cluster, c->cn->cluster) != 0)
            continue;
        char buf[200];
        const char *no = unfit(c, cn, pools, np, buf, sizeof buf);
        if (no) {
            add_why(why, len, "; %s: %s", cn->name, no);
            continue;
        }
        struct node_view nv;
        struct fleet_vm t;
        /* the new disk (grown to the old one's size) and its cloud-init drive */
        int64_t bytes = size;
        fleet_node_view(c->k->fl, cn->name, &nv);
        if (fleet_vm_find(c->k->fl, cn->name, config_template(cn, req_str(c, "os")), &t) == 0 &&
            t.maxdisk > bytes)
            bytes = t.maxdisk;
        cands[n++] =
            (struct place_cand){i, bytes + CORE_CLOUDINIT_BYTES, nv.mem_total - nv.mem_used};
    }
    free(pools);
    place_order(c->k->pl, cands, n);
    for (int i = 0; i < n; i++) {
        const struct cfg_node *cn = &cfg->nodes[cands[i].node];
        struct node_view nv;
        if (fleet_node_view(c->k->fl, cn->name, &nv))
            continue;
        /* what the VM's own disks put there: its local ones, whatever the
         * storage its node is configured with (a volume on a shared pool
         * stays in it) */
        struct cap_room room = {.mem = nv.mem_total - nv.mem_used - cfg->memory_margin_mb * MiB,
                                .disk = nv.st_avail - cfg->disk_margin_gb * GiB,
                                .seen_since = nv.seen_since,
                                .pool = nv.pool};
        if (store_reserve_capacity(c->k->st, c->j->id, cn->name, c->v.memory_mb * MiB,
                                   cands[i].bytes + old, &room, &se) == 0) {
            st_set_str(c, "tmp_node", cn->name);
            st_set_int(c, "template", config_template(cn, req_str(c, "os")));
            return 0;
        }
        add_why(why, len, "; %s: no room for the new disk%s%s%s (%.200s)", cn->name,
                old ? " and the VM's local disks" : "", nv.pool[0] ? " on shared storage " : "",
                nv.pool[0] ? cn->storage : "", se.message);
    }
    return -1;
}

/* A prepare cut short by a crash may hold a temporary VMID reserved in the
 * store but not yet written into the job: it is the job's (release_tmp
 * gives it back, a prepare takes it). -1 when the store does not answer:
 * the caller resumes later rather than leave it reserved for good. */
static int held_vmid(struct rctx *c)
{
    int held = 0;
    struct store_error se;
    if (tmp_vmid(c))
        return 0;
    int rc = store_vmid_reserved_by(c->k->st, c->j->id, &held, &se);
    if (rc == STORE_E_NOTFOUND)
        return 0;
    if (rc) {
        log_warn("job", "job=%s vmid=%d reinstall: its VMIDs cannot be read (%s): resumed later",
                 c->j->id, c->j->vmid, se.message);
        return -1;
    }
    log_info("job", "job=%s temporary VMID %d found reserved to the job", c->j->id, held);
    st_set_int(c, "tmp_vmid", held);
    return 0;
}

static int take_vmid(struct rctx *c, char *why, size_t len)
{
    const struct cfg_os *os = config_os(c->k->cfg, req_str(c, "os"));
    struct vmid_range ranges[2] = {{os->range_lo, os->range_hi},
                                   {c->k->cfg->fallback_lo, c->k->cfg->fallback_hi}};
    size_t ntaken;
    int *taken = fleet_taken_vmids(c->k->fl, &ntaken);
    int vmid = 0;
    struct store_error se;
    /* one reserved before a kill was found by step_prepare (held_vmid) */
    int rc = store_vmid_reserve(c->k->st, ranges, c->k->cfg->fallback_lo ? 2 : 1, taken, ntaken,
                                c->j->id, &vmid, &se);
    free(taken);
    if (rc) {
        snprintf(why, len, "no VMID for the temporary VM: %.400s", se.message);
        return -1;
    }
    st_set_int(c, "tmp_vmid", vmid);
    return 0;
}

/* The unusedN volumes the VM had before (never removed by the job). */
static json_t *unused_of(json_t *raw)
{
    json_t *a = json_array();
    const char *key;
    json_t *val;
    json_object_foreach(raw, key, val)
    {
        if (strncmp(key, "unused", 6) == 0 && json_is_string(val))
            json_array_append(a, val);
    }
    return a;
}

static void step_prepare(struct rctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    struct pve_vm_status s;
    char why[512];
    /* a VMID reserved before a kill, not yet written into the job, is the
     * job's: every way out below gives it back (release_tmp), or it is
     * the one taken; unknown (the store failed): resumed later */
    if (held_vmid(c))
        return;
    int rc = read_status(c, c->j->vmid, &s, &e);
    if (rc == PVE_E_NOTFOUND) { /* moved behind our back (HA)? */
        char node[64];
        fleet_refresh(c->k->fl, true);
        if (fleet_vm_node(c->k->fl, c->j->vmid, c->j->node, node) == 0 &&
            config_node(c->k->cfg, node)) {
            snprintf(c->j->node, sizeof c->j->node, "%s", node);
            c->cn = config_node(c->k->cfg, node);
            c->pc = fleet_client(c->k->fl, node);
            rc = read_status(c, c->j->vmid, &s, &e);
        }
    }
    if (rc) {
        release_tmp(c); /* a prepare resumed after a crash may hold one */
        finish(c, false, "cannot find VM %d: %s; nothing was changed", c->j->vmid, e.message);
        return;
    }
    if ((rc = read_config(c, c->j->vmid, &cfg, &e))) {
        release_tmp(c); /* a prepare resumed after a crash may hold one */
        finish(c, false, "cannot read VM %d's config: %s; nothing was changed", c->j->vmid,
               e.message);
        return;
    }
    const char *os = req_str(c, "os");
    int tpl = config_template(c->cn, os);
    const char *refusal = NULL;
    if (cfg.lock[0])
        refusal = "it is locked";
    else if (json_object_get(cfg.raw, "parent"))
        refusal = "it has snapshots (they hold the old disk): delete them first";
    else if (!cfg.bootdisk_volume[0])
        refusal = "it has no boot disk";
    else if (!tpl)
        refusal = "its node has no template of this OS";
    else if (s.ha_managed) /* the HA manager would start it again while its disk is out */
        refusal = "it is HA-managed: remove it from HA for the reinstall";
    if (refusal) {
        release_tmp(c); /* a prepare resumed after a crash may hold one */
        finish(c, false, "VM %d cannot be reinstalled: %s; nothing was changed", c->j->vmid,
               refusal);
        pve_vm_config_release(&cfg);
        return;
    }
    int64_t boot_size = 0;
    if (core_boot_size(c->pc, c->cn->name, c->j->vmid, &cfg, &boot_size, &e)) {
        release_tmp(c); /* a prepare resumed after a crash may hold one */
        finish(c, false, "VM %d cannot be reinstalled now: %s; nothing was changed", c->j->vmid,
               e.message);
        pve_vm_config_release(&cfg);
        return;
    }
    /* the temporary VM's disk, grown to the old one's size, and its
     * cloud-init drive */
    struct fleet_vm t;
    int64_t need = boot_size;
    if (fleet_vm_find(c->k->fl, c->cn->name, tpl, &t) == 0 && t.maxdisk > need)
        need = t.maxdisk;
    need += CORE_CLOUDINIT_BYTES;
    int tmp = tmp_vmid(c);
    json_object_clear(c->st);
    if (tmp)
        st_set_int(c, "tmp_vmid", tmp);
    st_set_str(c, "node", c->cn->name);
    st_set_str(c, "error", "");
    st_set_int(c, "template", tpl);
    st_set_str(c, "boot_key", cfg.bootdisk[0] ? cfg.bootdisk : "scsi0");
    st_set_str(c, "old_volume", cfg.bootdisk_volume);
    /* the drive as configured (discard, iothread, cache...): a restore
     * attaches the old disk again with them */
    st_set_str(c, "old_drive", json_string_value(json_object_get(cfg.raw, st_str(c, "boot_key"))));
    st_set_int(c, "old_size", boot_size);
    st_set_int(c, "old_local", moving_bytes(c, &cfg));
    st_set_str(c, "old_os", c->v.os);
    st_set_int(c, "was_running", strcmp(s.status, "running") == 0);
    const char *keys = json_string_value(json_object_get(cfg.raw, "sshkeys"));
    json_object_set_new(c->st, "old_sshkeys", keys ? json_string(keys) : json_null());
    st_set_int(c, "had_password", json_object_get(cfg.raw, "cipassword") != NULL);
    const char *boot = json_string_value(json_object_get(cfg.raw, "boot"));
    st_set_str(c, "old_boot", boot);
    json_object_set_new(c->st, "old_unused", unused_of(cfg.raw));
    pve_vm_config_release(&cfg);
    /* the VMID is written down at once: a prepare resumed after a crash
     * takes the same one again rather than a second */
    if (!tmp_vmid(c)) {
        if (take_vmid(c, why, sizeof why)) {
            finish(c, false, "VM %d cannot be reinstalled now: %s; nothing was changed", c->j->vmid,
                   why);
            return;
        }
        job_checkpoint(c->k, c->j, NULL, -1, "temporary VMID %d", tmp_vmid(c));
    }
    /* on the VM's node, else on another that the VM then moves to */
    if (reserve_room(c, need, why, sizeof why) && reserve_elsewhere(c, why, sizeof why)) {
        release_tmp(c);
        store_release_capacity(c->k->st, c->j->id, NULL);
        finish(c, false, "VM %d cannot be reinstalled now: %s; nothing was changed", c->j->vmid,
               why);
        return;
    }
    save_rec(c); /* the record names this job: the reconciler leaves it alone meanwhile */
    job_checkpoint(c->k, c->j, "clone", 10, "cloning %s (template %d) to temporary VM %d on %s%s",
                   os, (int)st_int(c, "template"), tmp_vmid(c), tmp_node(c),
                   strcmp(tmp_node(c), c->j->node) ? " (the VM's node has no room: it moves there)"
                                                   : "");
}

/* ---- before the swap: the temporary VM ----------------------------------------------- */

enum probe { P_NONE, P_OURS, P_OTHER, P_ERROR };

/* *cloning (may be NULL): the VM is ours and its clone still copies. */
static enum probe probe_tmp(struct rctx *c, bool *cloning, struct pve_error *e)
{
    struct pve_vm_config cfg;
    if (cloning)
        *cloning = false;
    int rc = read_config(c, tmp_vmid(c), &cfg, e);
    if (rc == PVE_E_NOTFOUND)
        return P_NONE;
    if (rc)
        return P_ERROR;
    char m[96];
    snprintf(m, sizeof m, "proxd job %s", c->j->id);
    bool locked = strcmp(cfg.lock, "clone") == 0;
    bool ours = strstr(cfg.description, m) || (locked && !cfg.name[0]);
    if (cloning)
        *cloning = ours && locked;
    pve_vm_config_release(&cfg);
    return ours ? P_OURS : P_OTHER;
}

/* The temporary VM is ours (its clone's answer lost, or sent before a
 * crash): wait_clone waits for it (job_adopt_clone). */
static void adopt_clone(struct rctx *c, bool cloning, const char *what)
{
    job_adopt_clone(c->k, c->pc, c->j, tmp_node(c), (int)st_int(c, "template"), tmp_vmid(c),
                    cloning, what);
}

static void step_clone(struct rctx *c)
{
    struct pve_error e = {0};
    char m[128];
    marker(c, m, sizeof m);
    int tpl = (int)st_int(c, "template");
    /* resumed after a crash: whether the run before sent its request twice
     * is not known (tmp_twice is written with the next checkpoint). Where
     * every node shares the temporary node's VMID space a late request
     * fails against whatever holds the VMID by then */
    if (c->resumed && !fleet_one_world(c->k->fl, tmp_node(c)))
        st_set_int(c, "tmp_twice", 1);
    for (int n = 0;;) {
        if (c->resumed) {
            bool cloning;
            enum probe p = probe_tmp(c, &cloning, &e);
            if (p == P_OURS) {
                adopt_clone(c, cloning, "found the temporary VM from before");
                return;
            }
            if (p == P_NONE && pve_find_clone_task(c->pc, tmp_node(c), tpl, tmp_vmid(c),
                                                   c->j->created_at / 1000, c->j->upid)) {
                job_checkpoint(c->k, c->j, "wait_clone", 20,
                               "found the clone task from before (%s)", c->j->upid);
                return;
            }
            if (p == P_OTHER) {
                store_vmid_mark_foreign(c->k->st, tmp_vmid(c), NULL);
                st_set_int(c, "tmp_vmid", 0);
                fail_to(c, "abort", "the temporary VMID is taken outside proxd");
                return;
            }
        }
        char name[64];
        snprintf(name, sizeof name, "reinstall-%d", c->j->vmid);
        struct pve_clone o = {.newid = tmp_vmid(c),
                              .name = name,
                              .description = m,
                              .storage = config_node(c->k->cfg, tmp_node(c))->storage,
                              .full = 1};
        c->j->upid[0] = '\0';
        int rc = pve_vm_clone(c->pc, tmp_node(c), tpl, &o, c->j->upid, &e);
        /* a request that may still be served besides the one that counts */
        if (e.earlier_pending || (rc && e.maybe_sent))
            st_set_int(c, "tmp_twice", 1);
        if (rc == PVE_E_EXISTS) {
            /* ours when an earlier request of this step went through
             * unanswered and its task was not found (pve_vm_clone looks) */
            struct pve_error pe = {0};
            bool cloning;
            enum probe p = probe_tmp(c, &cloning, &pe);
            if (p == P_OURS) {
                adopt_clone(c, cloning, "the temporary VM exists already");
                return;
            }
            if (p == P_OTHER) {
                store_vmid_mark_foreign(c->k->st, tmp_vmid(c), NULL);
                st_set_int(c, "tmp_vmid", 0);
                fail_to(c, "abort", "the temporary VMID is taken outside proxd: %s", e.message);
                return;
            }
            if (p == P_NONE && ++n < TRIES && !core_stopping(c->k)) {
                c->resumed = true; /* gone since (its clone failed): ask again */
                continue;
            }
            if (p == P_ERROR)
                e = pe;
        } else if (!rc) {
            break;
        }
        if (!again(c, &n, &e)) {
            fail_to(c, "abort", "clone failed: %s", e.message);
            return;
        }
        c->resumed = true; /* the call may have gone through: look before the next */
    }
    job_checkpoint(c->k, c->j, "wait_clone", 20, "cloning template %d to VM %d (%s)", tpl,
                   tmp_vmid(c), c->j->upid);
}

/* A cancel during the clone: the clone task is stopped (qemu-server's
 * clone removes the disks and config it made when its worker is
 * interrupted) and its end awaited, then abort removes whatever is left of
 * the temporary VM. The old OS was not touched. Waiting out a copy of
 * minutes only to remove it would hold the cancel as long. */
static void stop_clone(struct rctx *c, const char *reason)
{
    struct pve_error e = {0};
    char upid[PVE_UPID_MAX], why[sizeof c->j->error];
    snprintf(upid, sizeof upid, "%s", c->j->upid);
    if (pve_task_stop(c->pc, upid, &e) != 0) /* the wait below tells whether it ended */
        log_warn("job", "job=%s vmid=%d reinstall: clone task %s not stopped: %s", c->j->id,
                 c->j->vmid, upid, e.message);
    if (wait_task(c, upid, CLONE_STOP_MS, &e) == -1)
        return; /* resumed later at wait_clone: the cancel is read again there */
    if (reason) /* not a cancel: a check that failed (halt) */
        snprintf(why, sizeof why, "%s; the clone task was stopped", reason);
    else
        job_cancel_error(c->j, "wait_clone", why, sizeof why, "the clone task was stopped");
    fail_to(c, "abort", "%s", why);
}

static void step_wait_clone(struct rctx *c)
{
    struct pve_error e = {0};
    if (c->j->upid[0]) {
        int rc = core_wait_task_job(c->k, c->pc, c->j->upid, c->j, CLONE_MS, &e);
        if (rc == -1)
            return;
        if (rc == -3) {
            stop_clone(c, NULL);
            return;
        }
        if (rc) {
            fail_to(c, "abort", "clone failed: %s", e.message);
            return;
        }
    }
    if (wait_unlocked(c, tmp_vmid(c), &e)) {
        if (!core_stopping(c->k))
            fail_to(c, "abort", "the temporary VM did not come: %s", e.message);
        return;
    }
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "configure", 40, "clone finished");
}

static void step_configure(struct rctx *c)
{
    struct pve_error e = {0};
    char m[128];
    marker(c, m, sizeof m);
    struct pve_config_set s = {.cores = c->v.cores, .memory_mb = c->v.memory_mb, .description = m};
    int rc, n = 0;
    while ((rc = pve_vm_config_set(c->pc, tmp_node(c), tmp_vmid(c), &s, &e)) && again(c, &n, &e))
        ;
    if (rc) {
        fail_to(c, "abort", "configuring the temporary VM failed: %s", e.message);
        return;
    }
    job_checkpoint(c->k, c->j, "resize", 50, "temporary VM %d configured", tmp_vmid(c));
}

static void step_resize(struct rctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    if (read_config(c, tmp_vmid(c), &cfg, &e)) {
        fail_to(c, "abort", "cannot read the temporary VM: %s", e.message);
        return;
    }
    char disk[16];
    snprintf(disk, sizeof disk, "%s", cfg.bootdisk[0] ? cfg.bootdisk : "scsi0");
    int64_t have = cfg.bootdisk_size, want = st_int(c, "old_size");
    pve_vm_config_release(&cfg);
    st_set_str(c, "tmp_key", disk);
    if (want > have) { /* grow only: a larger template disk stays larger */
        char size[32];
        snprintf(size, sizeof size, "%lldG", (long long)((want + GiB - 1) / GiB));
        int rc, n = 0;
        for (;;) { /* an absolute size: asking again is harmless */
            c->j->upid[0] = '\0';
            rc = pve_vm_resize(c->pc, tmp_node(c), tmp_vmid(c), disk, size, c->j->upid, &e);
            if (!rc && c->j->upid[0]) {
                job_checkpoint(c->k, c->j, NULL, -1, "growing %s of VM %d to %s (%s)", disk,
                               tmp_vmid(c), size, c->j->upid);
                rc = wait_task(c, c->j->upid, STEP_MS, &e);
                if (rc == -1)
                    return;
            }
            if (!rc || !again(c, &n, &e))
                break;
        }
        if (!rc && (rc = read_config(c, tmp_vmid(c), &cfg, &e)) == 0) {
            have = cfg.bootdisk_size;
            pve_vm_config_release(&cfg);
            if (have < want) {
                snprintf(e.message, sizeof e.message, "%s is %lld bytes after the resize", disk,
                         (long long)have);
                rc = PVE_E_OTHER;
            }
        }
        if (rc) {
            fail_to(c, "abort", "growing the new disk failed: %s", e.message);
            return;
        }
    }
    st_set_int(c, "new_size", have > want ? have : want);
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "stop", 60, "the new disk is %lld GiB; stopping VM %d",
                   (long long)((have > want ? have : want) / GiB), c->j->vmid);
}

/* ---- the swap -------------------------------------------------------------------------- */

static void step_stop(struct rctx *c)
{
    struct pve_error e = {0};
    int rc = power_to(c, c->j->vmid, "stopped", &e);
    if (rc == -1)
        return;
    if (rc) {
        /* nothing of the VM was changed yet: while it still runs (a backup's
         * lock refuses the stop, and every write of a restore too: it was
         * tried for 10 minutes, then "could not put the old disk back"),
         * the way out is the abort; stopped after all, the restore starts
         * it again */
        struct pve_vm_status s;
        struct pve_error re = {0};
        bool runs = read_status(c, c->j->vmid, &s, &re) != 0 || strcmp(s.status, "stopped") != 0;
        fail_to(c, runs ? "abort" : "restore", "stopping VM %d failed: %s", c->j->vmid, e.message);
        return;
    }
    if (strcmp(tmp_node(c), c->j->node) != 0)
        job_checkpoint(c->k, c->j, "migrate", 63, "VM %d stopped; moving it to %s", c->j->vmid,
                       tmp_node(c));
    else
        job_checkpoint(c->k, c->j, "detach", 65, "VM %d stopped", c->j->vmid);
}

/* ---- onto another node: the VM moves to the temporary VM ------------------------------ */

/* Where is the VM? 1: on `to`; 0: on `from`, unlocked, no migration task
 * of it running there; 2: a migration under way (the migrate lock, or a
 * qmigrate task of the VM still running, before it takes the lock); -2:
 * Proxmox did not say. */
static int where_vm(struct rctx *c, const char *from, const char *to, struct pve_error *e)
{
    struct pve_vm_status s;
    int rc = pve_vm_status(c->pc, to, c->j->vmid, &s, e);
    if (rc != PVE_E_NOTFOUND)
        return rc ? -2 : 1;
    struct pve_vm_config cfg;
    rc = pve_vm_config_get(c->pc, from, c->j->vmid, true, &cfg, e);
    if (rc == PVE_E_NOTFOUND) /* it may have arrived between the two reads */
        return pve_vm_status(c->pc, to, c->j->vmid, &s, e) == 0 ? 1 : -2;
    if (rc)
        return -2;
    bool locked = cfg.lock[0] != '\0';
    pve_vm_config_release(&cfg);
    if (locked)
        return 2;
    struct pve_task *t = NULL;
    size_t n = 0;
    if (pve_task_list(c->pc, from, c->j->vmid, "qmigrate", 20, &t, &n, e))
        return -2;
    bool running = false;
    for (size_t i = 0; i < n; i++)
        running |= t[i].running && t[i].starttime >= c->j->created_at / 1000 - 1;
    free(t);
    return running ? 2 : 0;
}

/* The VM arrived on `to`: the record's node follows (vm.moved, logged by
 * the store with that write), the job's node is that one from now on, and
 * the old volumes are known by their names there (a storage map may have
 * renamed them). 0, or -1 when its config cannot be read now. */
static int arrived(struct rctx *c, const char *from, const char *to)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    int rc = pve_vm_config_get(c->pc, to, c->j->vmid, true, &cfg, &e);
    if (rc)
        return -1;
    const char *v = json_string_value(json_object_get(cfg.raw, st_str(c, "boot_key")));
    if (v) {
        st_set_str(c, "old_volume", v);
        st_set_str(c, "old_drive", v);
    }
    json_object_set_new(c->st, "old_unused", unused_of(cfg.raw));
    pve_vm_config_release(&cfg);
    st_set_int(c, "moved", 1);
    st_set_str(c, "moved_from", from);
    snprintf(c->j->node, sizeof c->j->node, "%s", to);
    c->cn = config_node(c->k->cfg, to);
    snprintf(c->v.node, sizeof c->v.node, "%s", to);
    save_rec(c); /* its power stays as told (a reinstall's stop is no vm.stopped) */
    fleet_vm_added(c->k->fl, c->j->vmid, to);
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "detach", 68, "VM %d moved from %s to %s", c->j->vmid, from, to);
    return 0;
}

/* The VM, stopped, goes where the temporary VM is: an offline migration
 * with its local disks to that node's storage. Where the VM is decides
 * every turn, never the call's answer alone: a migration sent before a
 * crash, or whose answer was lost, holds the VM's lock (or runs as a task
 * before it takes it) and is waited for; one is started only when the VM
 * is on the source and nothing migrates it. A failure leaves the VM on
 * the source: the restore starts it there. */
static void step_migrate(struct rctx *c)
{
    char from[64], to[64], failed[600] = "";
    snprintf(from, sizeof from, "%s", c->j->node);
    snprintf(to, sizeof to, "%s", tmp_node(c));
    const struct cfg_node *tn = config_node(c->k->cfg, to);
    int64_t end = mono_ms() + CLONE_MS;
    struct pve_error e = {0};
    for (int n = 0, busy = 0, sent = 0;;) {
        if (c->j->upid[0]) {
            int rc = wait_task(c, c->j->upid, CLONE_MS, &e);
            if (rc == -1)
                return;
            if (rc)
                snprintf(failed, sizeof failed, "%.590s", e.message);
            c->j->upid[0] = '\0';
        }
        int w = where_vm(c, from, to, &e);
        if (w == 1) {
            if (arrived(c, from, to) == 0 || core_stopping(c->k))
                return;
            w = -2;
        }
        if (w == 0 && !failed[0] && sent >= TRIES)
            snprintf(failed, sizeof failed, "its migration tasks ended, the VM stayed");
        if (w == 0 && failed[0]) {
            fail_to(c, "restore", "moving VM %d to %s failed: %s", c->j->vmid, to, failed);
            return;
        }
        if (w != 0) { /* under way, or no answer: look again */
            if (core_stopping(c->k))
                return;
            if (mono_ms() > end) {
                fail_to(c, "restore", "VM %d did not move to %s: %s", c->j->vmid, to,
                        w == 2 ? "still migrating" : e.message);
                return;
            }
            pause_n(c, ++busy < 4 ? busy : 4);
            continue;
        }
        if (c->halt[0] || !tn) { /* no migration is started: the VM gets its old disk back */
            fail_to(c, "restore", "%s",
                    c->halt[0] ? c->halt : "the temporary VM's node is no longer configured");
            return;
        }
        char upid[PVE_UPID_MAX] = "";
        struct pve_migrate_opts mo = {
            .online = false, .with_local_disks = true, .targetstorage = tn->storage};
        sent++;
        int rc = pve_vm_migrate(c->pc, from, c->j->vmid, to, &mo, upid, &e);
        if (!rc) {
            snprintf(c->j->upid, sizeof c->j->upid, "%s", upid);
            job_checkpoint(c->k, c->j, NULL, -1, "moving VM %d from %s to %s (%s)", c->j->vmid,
                           from, to, upid);
            continue;
        }
        if (!again(c, &n, &e)) { /* refused: the VM stayed where it was */
            if (core_stopping(c->k))
                return; /* resumed here: where the VM is decides then */
            snprintf(failed, sizeof failed, "%.590s", e.message);
            if (!transient(&e)) {
                fail_to(c, "restore", "moving VM %d to %s was refused: %s", c->j->vmid, to, failed);
                return;
            }
        }
        /* it may have gone through: the next turn looks */
    }
}

/* What the VM's boot slot holds now: the old disk, nothing, or the new one. */
enum slot { S_OLD, S_EMPTY, S_NEW, S_ERROR };

static enum slot boot_slot(struct rctx *c, struct pve_vm_config *cfg, struct pve_error *e)
{
    if (read_config(c, c->j->vmid, cfg, e))
        return S_ERROR;
    const char *v = json_string_value(json_object_get(cfg->raw, st_str(c, "boot_key")));
    if (!v)
        return S_EMPTY;
    return same_volume(v, st_str(c, "old_volume")) ? S_OLD : S_NEW;
}

static void step_detach(struct rctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    enum slot s = boot_slot(c, &cfg, &e);
    if (s == S_ERROR) {
        fail_to(c, "restore", "cannot read VM %d: %s", c->j->vmid, e.message);
        return;
    }
    char digest[48];
    snprintf(digest, sizeof digest, "%s", cfg.digest);
    pve_vm_config_release(&cfg);
    if (s == S_OLD) {
        /* the old disk stays with the VM as an unusedN until the new one runs */
        struct pve_config_set set = {.delete_keys = st_str(c, "boot_key"), .digest = digest};
        int rc, n = 0;
        while ((rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &set, &e)) &&
               again(c, &n, &e)) {
            struct pve_error e2 = {0};
            enum slot now = boot_slot(c, &cfg, &e2); /* it may have gone through */
            if (now != S_ERROR) {
                snprintf(digest, sizeof digest, "%s", cfg.digest);
                pve_vm_config_release(&cfg);
            }
            if (now == S_EMPTY) {
                rc = 0;
                break;
            }
        }
        if (rc) {
            fail_to(c, "restore", "detaching the old disk failed: %s", e.message);
            return;
        }
    }
    job_checkpoint(c->k, c->j, s == S_NEW ? "cloudinit" : "swap", 70, "old disk %s detached",
                   st_str(c, "old_volume"));
}

static void step_swap(struct rctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    int rc = 0;
    if (c->j->upid[0]) { /* resumed while the move ran */
        rc = wait_task(c, c->j->upid, STEP_MS, &e);
        if (rc == -1)
            return;
    } else {
        enum slot s = boot_slot(c, &cfg, &e);
        if (s != S_ERROR)
            pve_vm_config_release(&cfg);
        if (s == S_ERROR) {
            fail_to(c, "restore", "cannot read VM %d: %s", c->j->vmid, e.message);
            return;
        }
        if (s == S_OLD) { /* never detached (a restore ran?): start over from there */
            job_checkpoint(c->k, c->j, "detach", -1, "the old disk is still attached");
            return;
        }
        for (int n = 0; s == S_EMPTY;) {
            rc = pve_vm_move_disk(c->pc, tmp_node(c), tmp_vmid(c), st_str(c, "tmp_key"), c->j->vmid,
                                  st_str(c, "boot_key"), c->j->upid, &e);
            if (!rc) {
                job_checkpoint(c->k, c->j, NULL, -1, "moving the new disk into VM %d as %s (%s)",
                               c->j->vmid, st_str(c, "boot_key"), c->j->upid);
                rc = wait_task(c, c->j->upid, STEP_MS, &e);
                if (rc == -1)
                    return;
                break;
            }
            if (!again(c, &n, &e))
                break;
            struct pve_error e2 = {0}; /* the call may have gone through: the slot tells */
            if ((s = boot_slot(c, &cfg, &e2)) != S_ERROR)
                pve_vm_config_release(&cfg);
        }
    }
    /* the slot decides (a move whose answer was lost may have gone through) */
    struct pve_error e2 = {0};
    enum slot s = boot_slot(c, &cfg, &e2);
    if (s != S_ERROR)
        pve_vm_config_release(&cfg);
    if (s != S_NEW) {
        fail_to(c, "restore", "moving the new disk into VM %d failed: %s", c->j->vmid,
                rc ? e.message : "its slot is empty after the move");
        return;
    }
    c->j->upid[0] = '\0';
    job_checkpoint(c->k, c->j, "cloudinit", 80, "VM %d has the new disk", c->j->vmid);
}

/* Whether a drive line's options (after its volume) have this key. */
static bool has_option(const char *line, const char *key, size_t klen)
{
    for (const char *p = strchr(line, ','); p; p = strchr(p + 1, ','))
        if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '=')
            return true;
    return false;
}

/* The new boot drive as the old one was configured: the new line's volume
 * and size, every option of the old line (discard, iothread, cache...), and
 * the new line's options the old one did not set. False when that is the
 * new line already (nothing to set) or it does not fit. */
static bool drive_as_before(const char *old_line, const char *new_line, char *out, size_t len)
{
    struct buf b = BUF_INIT(len - 1);
    int bad = 0;
    const char *nc = strchr(new_line, ','), *oc = strchr(old_line, ',');
    bad |= buf_add(&b, new_line, nc ? (size_t)(nc - new_line) : strlen(new_line));
    for (const char *p = oc; p; p = strchr(p + 1, ',')) {
        const char *end = strchr(p + 1, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (strncmp(p + 1, "size=", 5) != 0)
            bad |= buf_add(&b, p, n);
    }
    for (const char *p = nc; p; p = strchr(p + 1, ',')) {
        const char *end = strchr(p + 1, ','), *eq = strchr(p + 1, '=');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!eq || (end && eq > end) || strncmp(p + 1, "size=", 5) == 0 ||
            !has_option(old_line, p + 1, (size_t)(eq - p - 1)))
            bad |= buf_add(&b, p, n);
    }
    bool ok = !bad && strcmp(buf_str(&b), new_line) != 0;
    if (ok)
        snprintf(out, len, "%s", buf_str(&b));
    buf_release(&b);
    return ok;
}

/* The old boot drive's options on the new disk (jobs from before old_drive
 * was kept: the template's, as they were). */
static int keep_drive_options(struct rctx *c, struct pve_error *e)
{
    const char *old_line = st_str(c, "old_drive");
    struct pve_vm_config cfg;
    if (!old_line[0] || read_config(c, c->j->vmid, &cfg, e))
        return old_line[0] ? -1 : 0;
    const char *now = json_string_value(json_object_get(cfg.raw, st_str(c, "boot_key")));
    char line[1024];
    int rc = 0;
    if (now && drive_as_before(old_line, now, line, sizeof line)) {
        struct pve_config_set s = {
            .key = st_str(c, "boot_key"), .value = line, .digest = cfg.digest};
        rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &s, e);
    }
    pve_vm_config_release(&cfg);
    return rc;
}

static void step_cloudinit(struct rctx *c)
{
    struct pve_error e = {0};
    for (int rc, n = 0; (rc = keep_drive_options(c, &e)) != 0;)
        if (!again(c, &n, &e)) {
            fail_to(c, "restore", "setting the boot drive's options failed: %s", e.message);
            return;
        }
    const char *keys = req_str(c, "ssh_keys"), *pw = req_str(c, "password");
    const char *boot = st_str(c, "old_boot");
    struct pve_config_set s = {.sshkeys = keys, .cipassword = pw};
    if (boot[0]) { /* detaching took the disk out of the boot order */
        s.key = "boot";
        s.value = boot;
    }
    int rc = 0, n = 0;
    while ((keys || pw || boot[0]) &&
           (rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &s, &e)) && again(c, &n, &e))
        ;
    if (rc) {
        fail_to(c, "restore", "setting cloud-init failed: %s", e.message);
        return;
    }
    job_checkpoint(c->k, c->j, "start", 85, "cloud-init set; starting VM %d", c->j->vmid);
}

static void step_start(struct rctx *c)
{
    struct pve_error e = {0};
    int rc = power_to(c, c->j->vmid, "running", &e);
    if (rc == -1)
        return;
    if (rc) {
        fail_to(c, "restore", "starting VM %d with the new disk failed: %s", c->j->vmid, e.message);
        return;
    }
    job_checkpoint(c->k, c->j, "verify", 90, "started");
}

static void step_verify(struct rctx *c)
{
    struct pve_error e = {0};
    struct pve_vm_config cfg;
    struct pve_vm_status s;
    enum slot sl = boot_slot(c, &cfg, &e);
    if (sl != S_ERROR)
        pve_vm_config_release(&cfg);
    int rc = sl == S_ERROR ? -2 : read_status(c, c->j->vmid, &s, &e);
    if (rc || sl != S_NEW || strcmp(s.status, "running") != 0) {
        fail_to(c, "restore", "VM %d does not run the new disk: %s", c->j->vmid,
                rc            ? e.message
                : sl != S_NEW ? "not in its slot"
                              : s.status);
        return;
    }
    job_checkpoint(c->k, c->j, "commit", 95, "VM %d runs the new disk", c->j->vmid);
}

/* ---- removing what is no longer needed ---------------------------------------------- */

/* Is the unused volume one the VM had before the job? */
static bool was_unused(struct rctx *c, const char *vol)
{
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(c->st, "old_unused"), i, u)
    {
        if (same_volume(json_string_value(u), vol))
            return true;
    }
    return false;
}

/* Remove from the VM the unusedN volumes the job made: the old disk
 * (`old` true) or anything else of the job (the new disk after a restore).
 * 0 when none is left. */
static int drop_unused(struct rctx *c, bool old, struct pve_error *e)
{
    struct pve_vm_config cfg;
    int rc = read_config(c, c->j->vmid, &cfg, e);
    if (rc)
        return rc;
    char keys[256] = "";
    const char *key;
    json_t *val;
    json_object_foreach(cfg.raw, key, val)
    {
        const char *vol = json_string_value(val);
        if (strncmp(key, "unused", 6) != 0 || !vol || was_unused(c, vol))
            continue;
        if (same_volume(vol, st_str(c, "old_volume")) != old)
            continue;
        size_t l = strlen(keys);
        snprintf(keys + l, sizeof keys - l, "%s%s", l ? "," : "", key);
    }
    pve_vm_config_release(&cfg);
    if (!keys[0])
        return 0;
    struct pve_config_set s = {.delete_keys = keys};
    return pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &s, e);
}

/* Remove the temporary VM if it exists (waiting for its clone to end);
 * 0 when it is gone. */
static int remove_tmp(struct rctx *c, struct pve_error *e)
{
    if (!tmp_vmid(c))
        return 0;
    enum probe p = probe_tmp(c, NULL, e);
    if (p == P_ERROR)
        return -2;
    if (p == P_OTHER) { /* not ours: never touched, never handed out */
        store_vmid_mark_foreign(c->k->st, tmp_vmid(c), NULL);
        st_set_int(c, "tmp_vmid", 0);
        return 0;
    }
    if (p == P_NONE) {
        char upid[PVE_UPID_MAX];
        struct pve_task t;
        /* a clone sent before a crash may still make it */
        if (pve_find_clone_task(c->pc, tmp_node(c), (int)st_int(c, "template"), tmp_vmid(c),
                                c->j->created_at / 1000, upid) &&
            pve_task_status(c->pc, upid, &t, e) == 0 && t.running) {
            snprintf(e->message, sizeof e->message, "its clone task still runs");
            return -2;
        }
        return 0;
    }
    int rc = wait_unlocked(c, tmp_vmid(c), e);
    if (!rc)
        rc = power_to(c, tmp_vmid(c), "stopped", e);
    if (!rc) {
        char upid[PVE_UPID_MAX] = "";
        struct pve_delete_opts d = {.purge = true, .destroy_unreferenced = true};
        rc = pve_vm_delete(c->pc, tmp_node(c), tmp_vmid(c), &d, upid, e);
        if (!rc)
            rc = wait_task(c, upid, STEP_MS, e);
    }
    return rc == PVE_E_NOTFOUND ? 0 : rc;
}

/* Call fn until it succeeds, the core stops (-1) or REPAIR_MS pass. */
static int persist(struct rctx *c, int (*fn)(struct rctx *, struct pve_error *),
                   struct pve_error *e)
{
    int64_t end = mono_ms() + REPAIR_MS;
    for (int n = 0;; n++) {
        int rc = fn(c, e);
        if (rc == 0 || core_stopping(c->k))
            return rc == 0 ? 0 : -1;
        if (mono_ms() > end)
            return rc;
        log_warn("job", "job=%s vmid=%d reinstall %s: %s; again", c->j->id, c->j->vmid, c->j->step,
                 e->message);
        pause_n(c, n + 1 < 4 ? n + 1 : 4);
    }
}

static int drop_old(struct rctx *c, struct pve_error *e)
{
    return drop_unused(c, true, e);
}

static void step_commit(struct rctx *c)
{
    struct pve_error e = {0};
    char left[512] = "";
    int rc = persist(c, drop_old, &e);
    if (rc == -1 && core_stopping(c->k))
        return;
    if (rc)
        snprintf(left, sizeof left, "; the old disk is left as an unused disk of VM %d (%.300s)",
                 c->j->vmid, e.message);
    rc = persist(c, remove_tmp, &e);
    if (rc == -1 && core_stopping(c->k))
        return;
    if (rc) {
        /* the reconciler removes it: its marker names this job, which ends now */
        store_leftover_add(c->k->st, tmp_vmid(c), tmp_node(c), c->j->id, STORE_LEFT_PENDING, NULL);
        size_t l = strlen(left);
        snprintf(left + l, sizeof left - l, "; temporary VM %d left for the reconciler",
                 tmp_vmid(c));
        store_release_capacity(c->k->st, c->j->id, NULL);
    } else {
        release_tmp(c);
    }
    snprintf(c->v.os, sizeof c->v.os, "%s", req_str(c, "os"));
    int64_t gb = (st_int(c, "new_size") + GiB - 1) / GiB;
    if (gb > c->v.disk_gb)
        c->v.disk_gb = gb;
    snprintf(c->v.power, sizeof c->v.power, "running");
    /* its start (and the stop before, when it ran) applied the changes
     * an update left pending */
    json_decref(c->v.pending);
    c->v.pending = NULL;
    c->v.error[0] = '\0';
    /* the record's change and vm.reinstalled in one transaction (logged
     * once: a commit resumed after a crash writes the record again) */
    struct store_event ev = {.vmid = c->j->vmid};
    snprintf(ev.type, sizeof ev.type, "%s", EV_VM_REINSTALLED);
    snprintf(ev.owner, sizeof ev.owner, "%s", c->v.owner);
    snprintf(ev.node, sizeof ev.node, "%s", c->j->node);
    snprintf(ev.job, sizeof ev.job, "%s", c->j->id);
    ev.data = json_pack("{s:s,s:s,s:s}", "name", c->v.name, "os", req_str(c, "os"), "from",
                        st_str(c, "old_os"));
    bool saved = save_rec_logged(c, &ev);
    store_event_release(&ev);
    if (!saved && core_stopping(c->k))
        return; /* the commit runs again when the job resumes */
    finish(c, true, "VM %d runs %s (was %s)%s", c->j->vmid, req_str(c, "os"), st_str(c, "old_os"),
           left);
}

/* ---- after a failure -------------------------------------------------------------------- */

/* The old disk back in its slot, the old cloud-init values, the new disk
 * removed, the VM started if it ran. 0 when all is back. */
static int restore_once(struct rctx *c, struct pve_error *e)
{
    struct pve_vm_config cfg;
    enum slot s = boot_slot(c, &cfg, e);
    if (s == S_ERROR)
        return -2;
    pve_vm_config_release(&cfg);
    const char *key = st_str(c, "boot_key");
    int rc = 0;
    if (s == S_NEW) { /* out with the new disk (an unusedN until dropped) */
        if ((rc = power_to(c, c->j->vmid, "stopped", e)))
            return rc;
        struct pve_config_set d = {.delete_keys = key};
        if ((rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &d, e)))
            return rc;
    }
    if (s != S_OLD) { /* with its options (a job from before old_drive: its volume) */
        const char *drive = st_str(c, "old_drive");
        struct pve_config_set a = {.key = key, .value = drive[0] ? drive : st_str(c, "old_volume")};
        if ((rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &a, e)))
            return rc;
    }
    /* the cloud-init values as they were (a password PVE holds only hashed
     * cannot be written back: one the VM had stays as the request set it) */
    const char *old_keys = json_string_value(json_object_get(c->st, "old_sshkeys"));
    const char *boot = st_str(c, "old_boot");
    bool keys = req_str(c, "ssh_keys") != NULL;
    bool pw = req_str(c, "password") && !st_int(c, "had_password");
    char del[64] = "";
    if (keys && !old_keys)
        snprintf(del, sizeof del, "sshkeys");
    if (pw)
        snprintf(del + strlen(del), sizeof del - strlen(del), "%scipassword", del[0] ? "," : "");
    struct pve_config_set ci = {.delete_keys = del[0] ? del : NULL};
    if (keys && old_keys) {
        ci.key = "sshkeys";
        ci.value = old_keys;
    }
    if (boot[0]) {
        struct pve_config_set b = {.key = "boot", .value = boot};
        if ((rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &b, e)))
            return rc;
    }
    if ((ci.delete_keys || ci.key) &&
        (rc = pve_vm_config_set(c->pc, c->j->node, c->j->vmid, &ci, e)))
        return rc;
    if ((rc = drop_unused(c, false, e)))
        return rc;
    if (st_int(c, "was_running") && (rc = power_to(c, c->j->vmid, "running", e)))
        return rc;
    return 0;
}

static void step_restore(struct rctx *c)
{
    struct pve_error e = {0};
    int rc = persist(c, restore_once, &e);
    if (rc == -1 && core_stopping(c->k))
        return;
    if (rc) {
        /* the VM is left as it is: an operator must look (the message says what) */
        snprintf(c->v.error, sizeof c->v.error, "reinstall could not put the old disk back: %.900s",
                 e.message);
        save_rec(c);
        store_leftover_add(c->k->st, tmp_vmid(c), tmp_node(c), c->j->id, STORE_LEFT_PENDING, NULL);
        store_release_capacity(c->k->st, c->j->id, NULL);
        finish(c, false, "reinstall failed (%s) and VM %d could not be put back as it was: %s",
               st_str(c, "error"), c->j->vmid, e.message);
        return;
    }
    job_checkpoint(c->k, c->j, "abort", -1, "VM %d has its old disk back%s", c->j->vmid,
                   st_int(c, "was_running") ? " and runs" : "");
}

static void step_abort(struct rctx *c)
{
    struct pve_error e = {0};
    int rc = persist(c, remove_tmp, &e);
    if (rc == -1 && core_stopping(c->k))
        return;
    char left[256] = "";
    if (rc) {
        store_leftover_add(c->k->st, tmp_vmid(c), tmp_node(c), c->j->id, STORE_LEFT_PENDING, NULL);
        store_release_capacity(c->k->st, c->j->id, NULL);
        snprintf(left, sizeof left, "; temporary VM %d left for the reconciler", tmp_vmid(c));
    } else {
        release_tmp(c);
    }
    struct pve_vm_status s;
    if (read_status(c, c->j->vmid, &s, &e) == 0) {
        /* a paused VM's status is "running" (its qmpstatus says paused) */
        snprintf(c->v.power, sizeof c->v.power, "%s", core_power_of(&s));
        save_rec(c);
    }
    char where[160] = "";
    if (st_int(c, "moved"))
        snprintf(where, sizeof where, " (on %s now: it had moved there from %s for the reinstall)",
                 c->j->node, st_str(c, "moved_from"));
    finish(c, false, "reinstall failed: %s; VM %d keeps %s as before%s%s", st_str(c, "error"),
           c->j->vmid, st_str(c, "old_os"), where, left);
}

/* ---- the machine ------------------------------------------------------------------------ */

/* The way out of a step that may not go on (a cancel, a check that
 * failed): "abort" before the VM is touched, "restore" from the stop on;
 * NULL for queued (nothing made yet), for wait_clone (its clone is stopped
 * first: stop_clone) and for commit, restore and abort (the outcome is
 * decided: they run their course). */
static const char *way_out(const char *step)
{
    static const char *const before_stop[] = {"clone", "configure", "resize"};
    static const char *const after_stop[] = {"stop",      "migrate", "detach", "swap",
                                             "cloudinit", "start",   "verify"};
    for (size_t i = 0; i < sizeof before_stop / sizeof *before_stop; i++)
        if (strcmp(step, before_stop[i]) == 0)
            return "abort";
    for (size_t i = 0; i < sizeof after_stop / sizeof *after_stop; i++)
        if (strcmp(step, after_stop[i]) == 0)
            return "restore";
    return NULL;
}

/* A cancel seen at the top of the machine takes the way a failure at the
 * same step takes (way_out). A clone under way is stopped
 * (step_wait_clone: a cancel recorded in this process cuts its wait short;
 * stop_clone). Before any step nothing was made. */
static void on_cancel(struct rctx *c)
{
    char why[sizeof c->j->error];
    if (strcmp(c->j->step, "queued") == 0) {
        if (held_vmid(c))
            return;
        release_tmp(c);
        job_cancel_error(c->j, NULL, why, sizeof why, "nothing was done");
        finish(c, false, "%s", why);
        return;
    }
    job_cancel_error(c->j, NULL, why, sizeof why, NULL);
    if (strcmp(c->j->step, "migrate") == 0) {
        /* a migration may be under way (sent before a kill): where the VM
         * is decides, as for a halt. step_migrate waits for it and starts
         * none: the VM stays and the restore follows, or it arrives and
         * the cancel is seen again at the next step, on its new node. Sent
         * to the restore at once, the restore looked for the VM on the
         * node it had left ("does not exist", again and again) */
        snprintf(c->halt, sizeof c->halt, "%.200s", why);
        return;
    }
    const char *next = way_out(c->j->step);
    if (next)
        fail_to(c, next, "%s", why);
}

/* The job may not go on to the new OS (c->halt): the way a failure at its
 * step takes (the restore needs neither the OS's entry nor the record). A
 * clone under way is stopped, as for a cancel; a migration under way is
 * waited for by step_migrate, which starts none (the restore then finds
 * the VM where it is). */
static void halt(struct rctx *c)
{
    const char *s = c->j->step;
    if (strcmp(s, "queued") == 0) {
        if (held_vmid(c))
            return;
        release_tmp(c);
        finish(c, false, "%s: nothing was done", c->halt);
        return;
    }
    if (strcmp(s, "wait_clone") == 0) { /* a copy of minutes, only to be removed: stopped */
        if (c->j->upid[0])
            stop_clone(c, c->halt);
        else
            fail_to(c, "abort", "%s", c->halt);
        return;
    }
    const char *next = way_out(s);
    if (next && strcmp(s, "migrate") != 0)
        fail_to(c, next, "%s", c->halt);
}

/* No configured node reaches the VM or the temporary VM: nothing can be
 * looked at or put back. The job ends saying what may be left; the
 * temporary VM is a leftover (the reconciler removes it, or releases its
 * VMID once its node has been out of the configuration long enough). */
static void unreachable(struct rctx *c)
{
    const char *s = c->j->step, *out = way_out(s);
    bool touched = (out && strcmp(out, "restore") == 0) || strcmp(s, "restore") == 0;
    char left[512] = "";
    if (touched)
        snprintf(left, sizeof left,
                 "VM %d may be left stopped, its old disk %s out of its slot %s (an unused disk "
                 "of the VM)",
                 c->j->vmid, st_str(c, "old_volume"), st_str(c, "boot_key"));
    else if (strcmp(s, "commit") == 0)
        snprintf(left, sizeof left, "VM %d runs the new disk; its old disk %s may be left unused",
                 c->j->vmid, st_str(c, "old_volume"));
    else
        snprintf(left, sizeof left, "VM %d has its old disk", c->j->vmid);
    if (tmp_vmid(c)) {
        store_leftover_add(c->k->st, tmp_vmid(c), tmp_node(c), c->j->id, STORE_LEFT_PENDING, NULL);
        size_t l = strlen(left);
        snprintf(left + l, sizeof left - l, "; temporary VM %d on %s left for the reconciler",
                 tmp_vmid(c), tmp_node(c));
    }
    store_release_capacity(c->k->st, c->j->id, NULL);
    if (touched) { /* an operator must look (the message says what) */
        snprintf(c->v.error, sizeof c->v.error, "reinstall stopped at %s: %.300s; %.600s", s,
                 c->halt, left);
        save_rec(c);
    }
    finish(c, false, "reinstall stopped at %s: %s; %s", s, c->halt, left);
}

/* Whether the job may go on as it was queued: the VM's live record (the
 * same one), its owner, the OS and the nodes still configured; c->halt
 * says why not. -1 when the record cannot be read (the database failed:
 * no answer, not "no record"): resumed later. */
static int check_run(struct rctx *c)
{
    struct core *k = c->k;
    struct job_rec *j = c->j;
    struct store_error se;
    int rc = store_vm_get(k->st, j->vmid, &c->v, &se);
    if (rc && rc != STORE_E_NOTFOUND) {
        log_warn("job", "job=%s vmid=%d reinstall: the record cannot be read (%s): resumed later",
                 j->id, j->vmid, se.message);
        return -1;
    }
    c->have_rec = rc == 0;
    json_t *rec = json_object_get(j->request, "record");
    const char *os = req_str(c, "os");
    if (!c->have_rec)
        snprintf(c->halt, sizeof c->halt, "no record of VM %d", j->vmid);
    else if (json_is_integer(rec) && json_integer_value(rec) != c->v.id) {
        c->have_rec = false; /* another VM's record now */
        snprintf(c->halt, sizeof c->halt, "the record of VM %d changed since the job was queued",
                 j->vmid);
    } else if (strcmp(j->owner, c->v.owner) != 0)
        snprintf(c->halt, sizeof c->halt, "VM %d changed owner since the job was queued", j->vmid);
    else if (!os || !config_os(k->cfg, os))
        snprintf(c->halt, sizeof c->halt, "OS %s is no longer configured", os ? os : "?");
    if (!j->node[0] && c->have_rec)
        snprintf(j->node, sizeof j->node, "%s", c->v.node);
    c->cn = config_node(k->cfg, j->node);
    c->pc = c->cn ? fleet_client(k->fl, j->node) : NULL;
    bool past_prepare = strcmp(j->step, "queued") != 0;
    if (!c->pc && !c->halt[0])
        snprintf(c->halt, sizeof c->halt, "node %s of VM %d is no longer configured",
                 j->node[0] ? j->node : "?", j->vmid);
    else if (past_prepare && !config_node(k->cfg, tmp_node(c)) && !c->halt[0])
        snprintf(c->halt, sizeof c->halt, "node %s of the temporary VM is no longer configured",
                 tmp_node(c));
    /* the VM's node left the configuration but the temporary VM's did not
     * (before the migration): that node's cluster reaches both */
    if (!c->pc && past_prepare && config_node(k->cfg, tmp_node(c)))
        c->pc = fleet_client(k->fl, tmp_node(c));
    return 0;
}

void reinstall_run(struct core *k, struct job_rec *j)
{
    struct rctx c = {.k = k, .j = j};
    if (!json_is_array(j->attempts)) {
        json_decref(j->attempts);
        j->attempts = json_array();
    }
    if (json_array_size(j->attempts) == 0)
        json_array_append_new(j->attempts, json_object());
    c.st = json_array_get(j->attempts, 0);
    if (check_run(&c))
        return; /* the lease runs out and the job is claimed again */
    if (c.halt[0])
        log_warn("job", "job=%s vmid=%d reinstall at %s: %s", j->id, j->vmid, j->step, c.halt);
    if (!c.pc && strcmp(j->step, "queued") != 0) {
        unreachable(&c);
        vm_rec_release(&c.v);
        return;
    }
    c.resumed = strcmp(j->step, "queued") != 0;
    bool slot = false;
    while (!core_stopping(k) && j->state != JOB_DONE && j->state != JOB_FAILED) {
        if (job_cancel_asked(j)) { /* abort and restore then run their course */
            on_cancel(&c);
            if (j->state == JOB_FAILED)
                break;
        }
        if (c.halt[0]) {
            halt(&c);
            if (j->state == JOB_FAILED || strcmp(j->step, "queued") == 0 || core_stopping(k))
                break; /* ended, or resumed later (the store did not answer; stopping) */
        }
        const char *s = j->step;
        bool cloning = strcmp(s, "clone") == 0 || strcmp(s, "wait_clone") == 0;
        if (cloning && !slot) { /* clones per node, shared with creations */
            if (!clone_slot_take(k, tmp_node(&c), j->id))
                break;
            slot = true;
        } else if (!cloning && slot) {
            clone_slot_give(k, tmp_node(&c), j->id);
            slot = false;
        }
        char before[sizeof j->step];
        snprintf(before, sizeof before, "%s", s);
        if (strcmp(s, "queued") == 0)
            step_prepare(&c);
        else if (strcmp(s, "clone") == 0)
            step_clone(&c);
        else if (strcmp(s, "wait_clone") == 0)
            step_wait_clone(&c);
        else if (strcmp(s, "configure") == 0)
            step_configure(&c);
        else if (strcmp(s, "resize") == 0)
            step_resize(&c);
        else if (strcmp(s, "stop") == 0)
            step_stop(&c);
        else if (strcmp(s, "migrate") == 0)
            step_migrate(&c);
        else if (strcmp(s, "detach") == 0)
            step_detach(&c);
        else if (strcmp(s, "swap") == 0)
            step_swap(&c);
        else if (strcmp(s, "cloudinit") == 0)
            step_cloudinit(&c);
        else if (strcmp(s, "start") == 0)
            step_start(&c);
        else if (strcmp(s, "verify") == 0)
            step_verify(&c);
        else if (strcmp(s, "commit") == 0)
            step_commit(&c);
        else if (strcmp(s, "restore") == 0)
            step_restore(&c);
        else if (strcmp(s, "abort") == 0)
            step_abort(&c);
        else
            fail_to(&c, "abort", "unknown step '%s'", s);
        if (strcmp(before, j->step) == 0 && j->state != JOB_DONE && j->state != JOB_FAILED)
            break; /* stopping: resumed at this step */
        c.resumed = false;
    }
    if (slot)
        clone_slot_give(k, tmp_node(&c), j->id);
    vm_rec_release(&c.v);
}
