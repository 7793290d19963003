/* core: requests into jobs, and the workers that run them. */
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/create_net.h"
#include "core/access.h"
#include "core/guestwatch.h"
#include "core/netwalk.h"
#include "core/snapshot.h"

#include <errno.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WATCH_MS 1000 /* the watcher's look when the store cannot tell it */
/* ... and when it can: what no one tells (a broken watch, a job freed by
 * hand in the database, an older proxd on it) waits no longer than this */
#define WATCH_IDLE_MS 5000

bool core_has_tag(const char *tags, const char *tag)
{
    size_t tl = strlen(tag);
    for (const char *p = tags; *p;) {
        size_t n = strcspn(p, ",; ");
        if (n == tl && strncmp(p, tag, tl) == 0)
            return true;
        p += n;
        if (*p)
            p++;
    }
    return false;
}

void core_uuid(char out[40])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        abort();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* Under k->mu: tell the waits on tasks of nodes now down (once per down
 * spell) to look at once. */
static void tell_waiters(struct core *k)
{
    for (struct core_waiter *w = k->waiters; w; w = w->next) {
        if (!w->node[0]) /* a wait on its job's cancel only */
            continue;
        bool down = !fleet_node_up(k->fl, w->node);
        if (down && !w->told) {
            uint64_t one = 1;
            if (write(w->fd, &one, sizeof one) != sizeof one)
                log_warn("core", "a task wait on %s not told of its node's failure", w->node);
        }
        w->told = down;
    }
}

/* The task registry (pve.h) in the store: every instance on the database
 * knows the tasks the others' calls started. */
static void task_seen(void *ud, const char *upid)
{
    struct core *k = ud;
    struct store_error se;
    if (store_task_note(k->st, upid, &se))
        log_warn("core",
                 "task %s not recorded (%s): a lost answer's lookup by another instance "
                 "may take it for its own",
                 upid, se.message);
}

static int task_known(void *ud, const char *upid)
{
    struct core *k = ud;
    struct store_error se;
    bool noted = false;
    if (store_task_noted(k->st, upid, &noted, &se)) {
        log_warn("core", "cannot tell whether task %s is another's (%s): not taken", upid,
                 se.message);
        return -1;
    }
    return noted;
}

static void on_fleet_note(void *ud, unsigned notes)
{
    struct core *k = ud;
    pthread_mutex_lock(&k->mu);
    k->notes |= notes;
    if (notes & FLEET_NOTE_HEALTH)
        tell_waiters(k);
    pthread_cond_broadcast(&k->note_cv);
    pthread_mutex_unlock(&k->mu);
}

void core_waiter_begin(struct core *k, struct core_waiter *w, const char *upid, const char *job)
{
    struct pve_task t;
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->k = k;
    if (pve_upid_parse(upid, &t) != 0)
        return;
    snprintf(w->node, sizeof w->node, "%s", t.node); /* for held_down, told or not */
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0)
        return;
    snprintf(w->job, sizeof w->job, "%s", job ? job : "");
    pthread_mutex_lock(&k->mu);
    w->next = k->waiters;
    k->waiters = w;
    w->linked = true;
    pthread_mutex_unlock(&k->mu);
}

void core_waiter_begin_job(struct core *k, struct core_waiter *w, const char *job)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->k = k;
    snprintf(w->job, sizeof w->job, "%s", job);
    pthread_mutex_lock(&k->mu);
    w->next = k->waiters;
    k->waiters = w;
    w->linked = true;
    pthread_mutex_unlock(&k->mu);
}

void core_waiter_end(struct core *k, struct core_waiter *w)
{
    if (!w->linked)
        return;
    pthread_mutex_lock(&k->mu);
    for (struct core_waiter **p = &k->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    w->linked = false;
    pthread_mutex_unlock(&k->mu);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

bool core_waiter_cancelled(struct core_waiter *w)
{
    pthread_mutex_lock(&w->k->mu);
    bool c = w->cancel;
    pthread_mutex_unlock(&w->k->mu);
    return c;
}

/* Under k->mu: the waits registered with job `id` end (their tick sees
 * `cancel`, their descriptor turns readable). */
static void waiters_cancel(struct core *k, const char *id)
{
    bool napper = false;
    for (struct core_waiter *w = k->waiters; w; w = w->next) {
        if (!w->job[0] || strcmp(w->job, id) != 0 || w->cancel)
            continue;
        w->cancel = true;
        uint64_t one = 1;
        if (w->fd < 0)
            napper = true; /* core_nap_job sleeps on stop_cv */
        else if (write(w->fd, &one, sizeof one) != sizeof one)
            log_warn("core", "job=%s a task wait not told of the cancel", id);
    }
    if (napper)
        pthread_cond_broadcast(&k->stop_cv); /* core_nap's sleepers look again and sleep on */
}

/* Under k->mu: the worker slot running job `id`, -1 when none here. */
static int held_slot(const struct core *k, const char *id)
{
    for (int i = 0; i < k->nworkers; i++)
        if (k->held[i][0] && strcmp(k->held[i], id) == 0)
            return i;
    return -1;
}

/* The cancel recorded in this process: its waits here are told now. The
 * runner, when another process, learns of it through its jobs watch
 * (tell_cancels). */
void core_waiters_cancel(struct core *k, const char *id)
{
    pthread_mutex_lock(&k->mu);
    int slot = held_slot(k, id);
    if (slot >= 0)
        k->told[slot] = true;
    waiters_cancel(k, id);
    pthread_mutex_unlock(&k->mu);
}

/* Cancels that another instance or process recorded for jobs this one
 * runs: their waits are told as core_waiters_cancel tells them for a
 * cancel recorded here, rather than at the job's next look at the store (a
 * creation: the checkpoint after its clone, whose wait may sleep up to a
 * minute). Called by the watcher when the store's jobs watch tells it (the
 * cancel's commit does) and on its timer, and by the leaser when the watch
 * tells it while every worker runs a job (leaser_main). One read, and none while no held job is
 * untold (an idle daemon, or every held job's cancel told already). A
 * wait registered after the look reads the cancel from the store itself
 * (core_wait_task_job, create.c wait_task): none falls between. */
static void tell_cancels(struct core *k)
{
    bool untold = false;
    pthread_mutex_lock(&k->mu);
    for (int i = 0; i < k->nworkers && !untold; i++)
        untold = k->held[i][0] && !k->told[i];
    pthread_mutex_unlock(&k->mu);
    if (!untold)
        return;
    char ids[CORE_MAX_WORKERS][40];
    size_t n = 0;
    struct store_error se;
    if (store_job_cancels_held(k->st, k->instance, ids, CORE_MAX_WORKERS, &n, &se)) {
        log_debug("job", "cancels of held jobs not read: %s", se.message);
        return;
    }
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < n; i++) {
        int slot = held_slot(k, ids[i]);
        if (slot < 0 || k->told[slot])
            continue;
        k->told[slot] = true;
        log_info("job", "job=%s cancel recorded elsewhere: its waits are told", ids[i]);
        waiters_cancel(k, ids[i]);
    }
    pthread_mutex_unlock(&k->mu);
}

struct core *core_new(const struct proxd_config *cfg, store *st, struct fleet *fl,
                      const char *instance)
{
    struct core *k = xcalloc(1, sizeof *k);
    k->cfg = cfg;
    k->st = st;
    k->fl = fl;
    snprintf(k->instance, sizeof k->instance, "%s", instance);
    pthread_mutex_init(&k->mu, NULL);
    cond_init_mono(&k->cv);
    cond_init_mono(&k->slot_cv);
    cond_init_mono(&k->ccv);
    cond_init_mono(&k->stop_cv);
    cond_init_mono(&k->note_cv);
    fleet_set_notify(fl, on_fleet_note, k);
    fleet_set_task_registry(fl, &(struct pve_task_registry){task_seen, task_known, k});
    if (pipe(k->wake) != 0)
        k->wake[0] = k->wake[1] = -1; /* task waits fall back to ticks */
    k->watch_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    k->leaser_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    k->pl = place_new(cfg->nnodes);
    k->naddrq = cnet_quarantine(cfg, k->addrq);
    store_addr_policy(st, k->addrq, k->naddrq);
    k->nw = netwalk_new(k);
    k->access = access_new(k);
    k->gw = guestwatch_new(k);
    return k;
}

void core_addr_sweep(struct core *k)
{
    size_t n = 0;
    struct store_error se;
    if (store_addr_sweep(k->st, k->addrq, k->naddrq, &n, &se))
        log_warn("ippool", "address sweep failed: %s", se.message);
    else if (n)
        log_warn("ippool",
                 "address sweep released %zu address(es) that no live VM, job or "
                 "leftover held",
                 n);
}

void core_free(struct core *k)
{
    if (!k)
        return;
    if (k->started)
        core_stop(k);
    fleet_set_task_registry(k->fl, NULL); /* the fleet may outlive the core */
    webhooks_free(k);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    pthread_cond_destroy(&k->slot_cv);
    pthread_cond_destroy(&k->ccv);
    pthread_cond_destroy(&k->stop_cv);
    pthread_cond_destroy(&k->note_cv);
    if (k->wake[0] >= 0) {
        close(k->wake[0]);
        close(k->wake[1]);
    }
    if (k->watch_wake >= 0)
        close(k->watch_wake);
    if (k->leaser_wake >= 0)
        close(k->leaser_wake);
    place_free(k->pl);
    snap_cache_free(k);
    netwalk_free(k->nw);
    access_free(k->access);
    guestwatch_free(k->gw);
    free(k);
}

/* ---- checkpoints ------------------------------------------------------- */

const char *core_power_of(const struct pve_vm_status *st)
{
    if (strcmp(st->status, "running") != 0)
        return "stopped";
    return strcmp(st->qmpstatus, "paused") == 0 ? "paused" : "running";
}

json_t *core_pending_json(const struct pve_pending *p, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, p[i].key, p[i].del ? json_null() : json_string(p[i].pending));
    return o;
}

/* The pause before a store operation a job needs runs again after the
 * database was out of reach, the tries-th time (0, 1, ...): 100 ms growing
 * to 2 s. One pacing for the checkpoint, core_db_again and the store's
 * patience (worker_waits). */
static long db_pause_ms(int tries)
{
    return tries < 20 ? 100L * (tries + 1) : 2000;
}

bool core_db_again(struct core *k, int rc, const struct store_error *se, int *tries,
                   const char *job, const char *what)
{
    if (rc != STORE_E_DB || core_stopping(k))
        return false;
    if (*tries % 30 == 0)
        log_error("job", "job=%s cannot %s (try %d, trying again): %s", job, what, *tries + 1,
                  se->message);
    sleep_ms(db_pause_ms(*tries));
    (*tries)++;
    return true;
}

void job_checkpoint(struct core *k, struct job_rec *j, const char *step, int progress,
                    const char *fmt, ...)
{
    char msg[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    if (step)
        snprintf(j->step, sizeof j->step, "%s", step);
    if (progress >= 0)
        j->progress = progress;
    j->lease_until = wall_ms() + LEASE_MS(k);
    struct store_error se;
    /* the job row (what a restart resumes from) and its event in one
     * transaction: a job never ends without the event that says so */
    for (int tries = 0; store_job_checkpoint(k->st, j, msg, &se) != 0; tries++) {
        if (se.code == STORE_E_CONFLICT) {
            /* another runner holds the job now: its lease ran out while
             * this one could not reach the database, and another instance
             * took it. This runner must not call Proxmox for it again, and
             * cannot be unwound from here: the process stops, and its other
             * jobs are taken over (their leases run out) or resumed at its
             * restart, from their checkpoints */
            log_error("job",
                      "job=%s is no longer this instance's (%s): it lost its lease while the "
                      "database was out of reach; proxd stops so that the job never runs twice",
                      j->id, se.message);
            abort();
        }
        /* the database is out of reach (a PostgreSQL failover, SQLite's
         * lock held by another process): the job waits here, calling
         * nothing, until it answers, however long that is. Its lease runs
         * out meanwhile; a runner elsewhere that takes the job over is the
         * case above, one of this process's own workers does not run it
         * (hold_claimed) */
        if (tries < 10 || tries % 30 == 0)
            log_error("job", "job=%s cannot write step %s (try %d, trying again): %s", j->id,
                      j->step, tries + 1, se.message);
        sleep_ms(db_pause_ms(tries));
    }
    if (msg[0]) {
        log_info("job", "job=%s kind=%s vmid=%d node=%s step=%s %s", j->id, j->kind, j->vmid,
                 j->node[0] ? j->node : "-", j->step, msg);
    }
}

void job_adopt_clone(struct core *k, pve_client *pc, struct job_rec *j, const char *node, int tpl,
                     int newid, bool cloning, const char *what)
{
    j->upid[0] = '\0';
    if (cloning && pve_find_clone_task(pc, node, tpl, newid, j->created_at / 1000, j->upid))
        job_checkpoint(k, j, "wait_clone", 20, "%s, its clone under way (%s)", what, j->upid);
    else
        job_checkpoint(k, j, "wait_clone", 20, "%s", what);
}

/* ---- clone slots ---------------------------------------------------------- */

static int node_index(struct core *k, const char *node)
{
    for (int i = 0; i < k->cfg->nnodes; i++)
        if (strcmp(k->cfg->nodes[i].name, node) == 0)
            return i;
    return -1;
}

/* A clone slot on `node` for job `job`: first among this process's
 * workers, then in the store, where every proxd sharing the database
 * counts (Proxmox storage locks time out when too many clones run on a
 * node, whoever started them). Waits; false when the core stops. */
bool clone_slot_take(struct core *k, const char *node, const char *job)
{
    int i = node_index(k, node);
    if (i < 0)
        return false;
    int limit =
        k->cfg->nodes[i].max_clones > 0 ? k->cfg->nodes[i].max_clones : k->cfg->clones_per_node;
    if (limit <= 0)
        limit = 2;
    pthread_mutex_lock(&k->mu);
    while (k->clones[i] >= limit && !k->stopping)
        pthread_cond_wait(&k->slot_cv, &k->mu);
    bool ok = !k->stopping;
    if (ok)
        k->clones[i]++;
    pthread_mutex_unlock(&k->mu);
    bool waited = false;
    while (ok) {
        struct store_error se;
        int rc = store_clone_slot_take(k->st, job, node, limit, &se);
        if (rc == STORE_OK)
            break;
        if (rc != STORE_E_FULL) { /* the store failed: the local limit still holds */
            log_warn("job", "job=%s node=%s clone slot not recorded: %s", job, node, se.message);
            break;
        }
        if (!waited)
            log_info("job", "job=%s node=%s waits for a clone slot: %s", job, node, se.message);
        waited = true;
        pthread_mutex_lock(&k->mu);
        if (!k->stopping) {
            struct timespec until = deadline_in_ms(250);
            pthread_cond_timedwait(&k->slot_cv, &k->mu, &until);
        }
        ok = !k->stopping;
        pthread_mutex_unlock(&k->mu);
        if (!ok)
            clone_slot_give(k, node, job);
    }
    return ok;
}

void clone_slot_give(struct core *k, const char *node, const char *job)
{
    store_clone_slot_give(k->st, job, NULL);
    int i = node_index(k, node);
    if (i < 0)
        return;
    pthread_mutex_lock(&k->mu);
    if (k->clones[i] > 0)
        k->clones[i]--;
    pthread_cond_broadcast(&k->slot_cv);
    pthread_mutex_unlock(&k->mu);
}

/* ---- requests ------------------------------------------------------------ */

static int fail(struct core_error *err, enum core_err code, const char *field, const char *msg)
{
    if (err) {
        err->code = code;
        err->node[0] = '\0';
        snprintf(err->field, sizeof err->field, "%s", field ? field : "");
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return code;
}

static json_t *request_json(const struct vm_request *r)
{
    json_t *o = json_pack("{s:s,s:s,s:i,s:I,s:I,s:s}", "os", r->os, "name", r->name, "cores",
                          r->cores, "memory_mb", (json_int_t)r->memory_mb, "disk_gb",
                          (json_int_t)r->disk_gb, "owner", r->owner);
    if (r->ssh_keys)
        json_object_set_new(o, "ssh_keys", json_string(r->ssh_keys));
    return o;
}

int core_node_check(struct core *k, int vmid, const char *node, struct core_error *err)
{
    /* where the inventory last saw it in its node's world (HA may have
     * moved it; standalone hosts each have their own VMIDs) */
    char where[64];
    struct fleet_vm fv;
    snprintf(where, sizeof where, "%s", node);
    if (node[0] && fleet_vm_find(k->fl, node, vmid, &fv) == 0)
        snprintf(where, sizeof where, "%s", fv.node);
    struct node_view v;
    if (!where[0] || !fleet_ready(k->fl) || fleet_node_view(k->fl, where, &v) != 0 || v.up)
        return CORE_OK;
    if (err) {
        err->code = CORE_E_UNAVAILABLE;
        snprintf(err->field, sizeof err->field, "node");
        snprintf(err->node, sizeof err->node, "%s", where);
        snprintf(err->message, sizeof err->message,
                 "node %s is down (%.300s): VM %d cannot be acted on until it answers again", where,
                 v.last_error[0] ? v.last_error : "not reachable", vmid);
    }
    return CORE_E_UNAVAILABLE;
}

/* Is there a node that has the OS's template and reaches every pool? */
static int pools_placeable(struct core *k, const struct vm_request *r,
                           const struct cfg_ippool *const *pool, int npools, struct core_error *err)
{
    char names[CFG_OS_POOLS][32], why[256] = "";
    for (int i = 0; i < npools; i++)
        snprintf(names[i], sizeof names[i], "%s", pool[i]->name);
    for (int i = 0; i < k->cfg->nnodes; i++) {
        const struct cfg_node *cn = &k->cfg->nodes[i];
        if (config_template(cn, r->os) &&
            cnet_reachable(k->cfg, names, npools, cn, why, sizeof why))
            return CORE_OK;
    }
    return fail(err, CORE_E_CONFLICT, "ippools",
                "no node with a template of this OS reaches every pool of the creation");
}

static json_t *request_pools(const struct cnet *n)
{
    json_t *a = json_array();
    for (int i = 0; i < n->n; i++)
        json_array_append_new(a, json_string(n->pool[i]->name));
    return a;
}

/* What a refused submission means for the caller. */
static int submit_error(struct core *k, const struct vm_request *r, struct store_submit *sub,
                        const struct store_error *se, int rc, json_t **first,
                        struct core_error *err)
{
    const struct cfg_quota *q = config_quota(k->cfg, r->owner);
    if (rc == STORE_E_CONFLICT && sub->first) {
        if (first)
            *first = sub->first;
        else
            json_decref(sub->first);
        return fail(err, CORE_E_CONFLICT, "Idempotency-Key", "this key was used before");
    }
    if (rc == STORE_E_FULL && strcmp(se->field, "ippool") == 0) {
        fail(err, CORE_E_FULL, "ippools", se->message);
        if (err)
            snprintf(err->pool, sizeof err->pool, "%.31s", se->pool);
        return CORE_E_FULL;
    }
    if (rc == STORE_E_CONFLICT && strcmp(se->field, "address") == 0) {
        char f[48];
        snprintf(f, sizeof f, "addresses.%.31s", se->pool);
        return fail(err, CORE_E_CONFLICT, f, se->message);
    }
    if (rc == STORE_E_FULL && q && strstr(se->message, "quota")) {
        struct quota_use u = {sub->used.vms, sub->used.cores, sub->used.memory_mb,
                              sub->used.disk_gb, sub->used.addresses};
        if (core_quota_judge(q, r->owner, &u, 1, r->cores, r->memory_mb, r->disk_gb, err))
            return CORE_E_FULL;
        if (q->addresses > 0 && sub->used.addresses + (int)sub->naddrs > q->addresses) {
            char m[256];
            snprintf(m, sizeof m, "address quota of '%s': %d of %d addresses in use, %d left",
                     r->owner, sub->used.addresses, q->addresses,
                     q->addresses - sub->used.addresses);
            return fail(err, CORE_E_FULL, "quota", m);
        }
    }
    if (rc == STORE_E_FULL && !se->field[0])
        return fail(err, CORE_E_FULL, "os", se->message);
    return fail(err, CORE_E_INTERNAL, NULL, se->message);
}

int core_create_idem(struct core *k, const struct vm_request *r, const struct core_idem *idem,
                     char job_id[40], int *vmid, json_t **first, struct core_error *err)
{
    char field[48], msg[512];
    if (first)
        *first = NULL;
    if (!validate_request(k->cfg, r, field, sizeof field, msg, sizeof msg))
        return fail(err, CORE_E_INVALID, field, msg);
    if (!fleet_ready(k->fl)) /* a VMID must not be picked before the fleet's are known */
        return fail(err, CORE_E_UNAVAILABLE, NULL,
                    "proxd has just started and is reading the inventory: retry in a second");
    int rc = core_quota_check(k, r->owner, 1, r->cores, r->memory_mb, r->disk_gb, err);
    if (rc)
        return rc;
    struct cnet *net = xmalloc(sizeof *net);
    if ((rc = cnet_prepare(k, r, net, err)) ||
        (net->n && (rc = pools_placeable(k, r, net->pool, net->n, err)))) {
        cnet_release(net);
        free(net);
        return rc;
    }
    const struct cfg_os *os = config_os(k->cfg, r->os);
    struct vmid_range ranges[2] = {{os->range_lo, os->range_hi},
                                   {k->cfg->fallback_lo, k->cfg->fallback_hi}};
    size_t ntaken;
    int *taken = fleet_taken_vmids(k->fl, &ntaken);
    core_uuid(job_id);
    struct vm_rec v = {
        .state = VMS_CREATING, .cores = r->cores, .memory_mb = r->memory_mb, .disk_gb = r->disk_gb};
    snprintf(v.os, sizeof v.os, "%s", r->os);
    snprintf(v.name, sizeof v.name, "%s", r->name);
    snprintf(v.owner, sizeof v.owner, "%s", r->owner);
    snprintf(v.power, sizeof v.power, "unknown");
    snprintf(v.job, sizeof v.job, "%s", job_id);
    struct job_rec j = {.state = JOB_QUEUED};
    snprintf(j.id, sizeof j.id, "%s", job_id);
    snprintf(j.kind, sizeof j.kind, "create");
    snprintf(j.owner, sizeof j.owner, "%s", r->owner);
    snprintf(j.step, sizeof j.step, "queued");
    j.request = request_json(r);
    if (net->n)
        json_object_set_new(j.request, "ippools", request_pools(net));
    j.attempts = json_array();
    json_t *answer = NULL;
    struct store_idem si = {0};
    if (idem) { /* "vmid" is set by the store once it is chosen */
        answer =
            json_pack("{s:s,s:s,s:i}", "fingerprint", idem->fingerprint, "job", job_id, "vmid", 0);
        si = (struct store_idem){idem->scope, idem->key, answer};
    }
    /* the quota again inside the transaction: concurrent requests of one
     * owner (in any proxd sharing the database) cannot both take the last */
    const struct cfg_quota *q = config_quota(k->cfg, r->owner);
    struct store_usage lim = {0};
    if (q)
        lim = (struct store_usage){q->vms, q->cores, q->memory_mb, q->disk_gb, q->addresses};
    /* the VMID, the addresses, the record, its network and the job: one
     * transaction, so a failure or a crash leaves nothing behind */
    struct store_submit sub = {.vm = &v,
                               .job = &j,
                               .event = "creation queued",
                               .idem = idem ? &si : NULL,
                               .quota = q ? &lim : NULL,
                               .ranges = ranges,
                               .nranges = k->cfg->fallback_lo ? 2 : 1,
                               .taken_vmids = taken,
                               .ntaken = ntaken,
                               .addrs = net->req,
                               .naddrs = (size_t)net->n,
                               .net = net->n ? &net->net : NULL,
                               .net_fill = cnet_fill,
                               .net_ctx = net};
    struct store_error se;
    for (int tries = 0;; tries++) { /* a MAC of a live record: draw another (46 random bits) */
        rc = store_create_submit(k->st, &sub, &se);
        if (!(rc == STORE_E_CONFLICT && strcmp(se.field, "mac") == 0 && tries < 2))
            break;
        cnet_new_mac(net);
    }
    free(taken);
    json_decref(answer);
    job_rec_release(&j);
    if (rc) {
        rc = submit_error(k, r, &sub, &se, rc, first, err);
        cnet_release(net);
        free(net);
        return rc;
    }
    *vmid = v.vmid;
    char got[CFG_OS_POOLS][IPPOOL_ADDRSTRLEN + 2] = {"", ""};
    for (int i = 0; i < net->n; i++) {
        struct ippool_addr a;
        if (ippool_addr_from_key(net->req[i].got, &a) == IPPOOL_OK)
            ippool_addr_format(&a, got[i] + 1);
        got[i][0] = ' ';
    }
    log_info("job", "job=%s kind=create vmid=%d os=%s name=%s owner=%s queued%s%s%s", job_id, *vmid,
             r->os, r->name, r->owner, net->n ? " addresses" : "", got[0], got[1]);
    cnet_release(net);
    free(net);
    core_wake(k);
    return CORE_OK;
}

int core_create_check(struct core *k, const struct vm_request *r, struct core_error *err)
{
    char field[48], msg[512];
    if (!validate_request(k->cfg, r, field, sizeof field, msg, sizeof msg))
        return fail(err, CORE_E_INVALID, field, msg);
    const struct cfg_ippool *pools[CFG_OS_POOLS];
    int n = validate_pools(k->cfg, r, pools);
    return n ? pools_placeable(k, r, pools, n, err) : CORE_OK;
}

int core_create(struct core *k, const struct vm_request *r, char job_id[40], int *vmid,
                struct core_error *err)
{
    return core_create_idem(k, r, NULL, job_id, vmid, NULL, err);
}

bool core_stopping(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    bool s = k->stopping;
    pthread_mutex_unlock(&k->mu);
    return s;
}

static int stop_tick(void *ud)
{
    return core_stopping(ud);
}

/* A registered wait's tick: a stop or its job's cancel interrupts it (a
 * node's failure only makes it look: the tick says 0). */
static int waiter_tick(void *ud)
{
    struct core_waiter *w = ud;
    pthread_mutex_lock(&w->k->mu);
    int r = w->k->stopping || w->cancel;
    pthread_mutex_unlock(&w->k->mu);
    return r;
}

/* A registered wait's node is held down by the fleet (a failed call or
 * probe): its looks are short (pve_wait_opts.held_down), so that a hung
 * node costs the job the probe's timeout, not two operation timeouts (the
 * clone's log, then its status) with retries, before it fails over. */
static int waiter_held_down(void *ud)
{
    struct core_waiter *w = ud;
    return fleet_node_held_down(w->k->fl, w->node);
}

struct pve_wait_opts core_wait_opts(struct core *k, struct core_waiter *w, long deadline_ms)
{
    struct pve_wait_opts o = {.deadline_ms = deadline_ms,
                              .tick = w ? waiter_tick : stop_tick,
                              .tick_ms = 500,
                              .wake_fd = k->wake[0] >= 0 ? &k->wake[0] : NULL,
                              .look_fd = w && w->fd >= 0 ? &w->fd : NULL,
                              .held_down = w && w->node[0] ? waiter_held_down : NULL,
                              .ud = w ? (void *)w : (void *)k};
    return o;
}

int core_wait_task(struct core *k, pve_client *pc, const char *upid, long deadline_ms,
                   struct pve_error *err)
{
    struct core_waiter w;
    core_waiter_begin(k, &w, upid, NULL);
    struct pve_wait_opts o = core_wait_opts(k, &w, deadline_ms);
    struct pve_task t;
    int rc = pve_task_wait_opts(pc, upid, &o, &t, err);
    core_waiter_end(k, &w);
    return rc == PVE_E_TIMEOUT && stop_tick(k) ? -1 : rc;
}

int core_wait_task_job(struct core *k, pve_client *pc, const char *upid, struct job_rec *j,
                       long deadline_ms, struct pve_error *err)
{
    struct core_waiter w;
    core_waiter_begin(k, &w, upid, j->id);
    int rc = -3;
    if (!job_cancel_read(k, j)) {
        struct pve_wait_opts o = core_wait_opts(k, &w, deadline_ms);
        struct pve_task t;
        rc = pve_task_wait_opts(pc, upid, &o, &t, err);
        if (rc == PVE_E_TIMEOUT && core_waiter_cancelled(&w)) {
            job_cancel_read(k, j); /* best effort: the cancel was told all the same */
            rc = -3;
        } else if (rc == PVE_E_TIMEOUT && stop_tick(k)) {
            rc = -1;
        }
    }
    core_waiter_end(k, &w);
    return rc;
}

void core_note_failover(struct core *k, const char *node)
{
    for (int i = 0; i < k->cfg->nnodes; i++)
        if (strcmp(k->cfg->nodes[i].name, node) == 0) {
            pthread_mutex_lock(&k->mu);
            k->failovers[i]++;
            pthread_mutex_unlock(&k->mu);
        }
}

void core_failovers(struct core *k, uint64_t out[CFG_MAX_NODES])
{
    pthread_mutex_lock(&k->mu);
    memcpy(out, k->failovers, sizeof k->failovers);
    pthread_mutex_unlock(&k->mu);
}

int core_wait_job(struct core *k, const char *job_id, long timeout_ms, enum job_state *state)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        struct job_rec j;
        struct store_error se;
        if (store_job_get(k->st, job_id, &j, &se) == 0) {
            enum job_state s = j.state;
            job_rec_release(&j);
            if (s == JOB_DONE || s == JOB_FAILED) {
                if (state)
                    *state = s;
                return 0;
            }
        }
        if (mono_ms() > end)
            return -1;
        sleep_ms(20);
    }
}

/* ---- workers --------------------------------------------------------------- */

void core_wake(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    k->wakes++;
    /* one worker: an idle one, or else the watcher (waking both would
     * make two looks where one finds the job) */
    uint64_t one = 1;
    if (k->idle > 0)
        pthread_cond_signal(&k->cv);
    else if (k->watcher && k->watch_wake >= 0 && write(k->watch_wake, &one, sizeof one) < 0)
        log_debug("job", "the watcher not told of a job: %s", strerror(errno));
    pthread_mutex_unlock(&k->mu);
}

/* The watcher's wait (without k->mu), for what no core_wake announces:
 * jobs that other processes queued or freed, and cancels they recorded
 * of jobs this process runs (tell_cancels), which the store tells
 * (store_jobs_watch: a file's inotify watch, PostgreSQL's NOTIFY), and
 * leases that run out, whose end the store knows. An idle daemon then
 * wakes for nothing (a wake-up from idle costs ~0.5 ms of CPU on a virtual
 * machine: bench/results/callcost.txt); it used to look once a second.
 * Without a watch (it broke, or cannot be had) the look is on a 1 s
 * timer as before, and before the inventory is read (no claims yet). A
 * watch that broke unseen (a PostgreSQL session cut without a reset) is
 * caught by the 5 s look. */
static void watch_wait(struct core *k)
{
    int fd = fleet_ready(k->fl) ? store_jobs_watch(k->st) : -1;
    long ms = WATCH_MS;
    if (fd >= 0) {
        int64_t at = 0, now = wall_ms();
        ms = WATCH_IDLE_MS;
        /* claimable once lease_until < now */
        if (store_job_next_lease_end(k->st, k->instance, &at, NULL) == STORE_OK && at > 0 &&
            at - now + 1 < ms)
            ms = at - now + 1 > 1 ? (long)(at - now + 1) : 1;
        /* and when the settling window ends (leases that ran out in it) */
        pthread_mutex_lock(&k->mu);
        at = k->claim_expired_from;
        pthread_mutex_unlock(&k->mu);
        if (at > now && at - now + 1 < ms)
            ms = (long)(at - now + 1);
    }
    struct pollfd p[3] = {{.fd = fd, .events = POLLIN},
                          {.fd = k->watch_wake, .events = POLLIN},
                          {.fd = k->wake[0], .events = POLLIN}};
    int r = poll(p, 3, (int)ms);
    if (r < 0)
        return;
    if (r > 0 && p[0].revents)
        store_jobs_watch_drain(k->st); /* before the looks that follow */
    /* the store told (a cancel of a running job is told too), or the
     * timer's look: a core_wake alone (this process's) tells no cancel */
    if (r == 0 || p[0].revents)
        tell_cancels(k);
    uint64_t v;
    if (r > 0 && (p[1].revents & POLLIN) && read(k->watch_wake, &v, sizeof v) < 0)
        v = 0;
}

/* Wake the leaser (under k->mu or not). */
static void leaser_tell(struct core *k)
{
    uint64_t one = 1;
    if (k->leaser_wake >= 0 && write(k->leaser_wake, &one, sizeof one) < 0)
        log_debug("job", "the leaser not told: %s", strerror(errno));
}

static void hold(struct core *k, int slot, const char *id)
{
    pthread_mutex_lock(&k->mu);
    snprintf(k->held[slot], sizeof k->held[slot], "%s", id ? id : "");
    k->told[slot] = false;
    if (id && k->idle == 0 && !k->watcher) {
        /* no worker is left to watch the store: the leaser takes the
         * watch from now on (it may be asleep for 10 s), even if a worker
         * had asked for it back (that worker took a job instead) */
        k->watch_want = false;
        leaser_tell(k);
    }
    pthread_mutex_unlock(&k->mu);
}

/* A job this worker claimed: held unless another worker of this process
 * runs it already (false). That one waits at a checkpoint for a database
 * that was out of reach long enough for the job's lease to run out: the
 * claim renewed the lease for this process, whose runner goes on with it
 * once its write goes through. */
static bool hold_claimed(struct core *k, int slot, const char *id)
{
    pthread_mutex_lock(&k->mu);
    bool ours = false;
    for (int i = 0; i < k->nworkers && !ours; i++)
        ours = i != slot && strcmp(k->held[i], id) == 0;
    pthread_mutex_unlock(&k->mu);
    if (ours) {
        log_warn("job",
                 "job=%s is run by another worker here, waiting for the database: not run "
                 "twice",
                 id);
        return false;
    }
    hold(k, slot, id);
    return true;
}

/* Did Proxmox refuse the job, or one of its attempts (a creation that
 * failed over from a node and was done on another), for a privilege? */
static bool refused_for_privilege(const struct job_rec *j)
{
    static const char refusal[] = "Permission check failed";
    if (j->state == JOB_FAILED && strstr(j->error, refusal))
        return true;
    size_t i;
    json_t *a;
    json_array_foreach(j->attempts, i, a)
    {
        const char *e = json_string_value(json_object_get(a, "error"));
        if (e && strstr(e, refusal))
            return true;
    }
    return false;
}

static void run_job(struct core *k, struct job_rec *j)
{
    if (strcmp(j->kind, "create") == 0)
        create_run(k, j);
    else if (snap_kind(j->kind))
        snap_run(k, j);
    else if (strcmp(j->kind, "drain") == 0)
        drain_run(k, j);
    else if (strcmp(j->kind, "reinstall") == 0)
        reinstall_run(k, j);
    else
        control_run(k, j);
    /* refused for a privilege: the token changed, or was always short; the
     * operator hears what it lacks now rather than at the next check, also
     * when another node did the work */
    if (refused_for_privilege(j))
        core_access_poke(k);
    if (guest_kind(j->kind) && k->gw)
        guestwatch_poke(k->gw); /* its guest check, if it is done */
}

/* After a database outage, jobs whose lease ran out during it are not
 * claimed for this long: their holders could not renew either, and renew
 * within a second of the database's return (the leaser's pause after a
 * failed renewal). Claimed at once, another instance took over a job whose
 * runner was alive and working, which then had to end its process
 * (api/test_db_outage, a loaded CI machine: PostgreSQL out 35 s, the
 * lease 30 s). A renewal period, so that even a runner whose renewal was
 * not due yet renews first, and never less than 5 s: with a short
 * job_lease (3 s: a renewal period of 1 s) the window would end as the
 * runners' renewals, a second after the database's return, were due, on
 * a loaded machine after them. Queued jobs are claimed meanwhile. */
#define CLAIM_SETTLE_MS(k) (LEASE_MS(k) / 3 > 5000 ? LEASE_MS(k) / 3 : 5000)

/* What the claim loop and the leaser learn of the store: a success after
 * failures opens the settling window. */
static void db_seen(struct core *k, bool ok)
{
    pthread_mutex_lock(&k->mu);
    if (!ok) {
        k->db_failing = true;
    } else if (k->db_failing) {
        k->db_failing = false;
        k->claim_expired_from = wall_ms() + CLAIM_SETTLE_MS(k);
        log_info("job",
                 "the database answers again: jobs whose lease ran out are left to their runners "
                 "for %d s",
                 (int)(CLAIM_SETTLE_MS(k) / 1000));
    }
    pthread_mutex_unlock(&k->mu);
}

void core_db_was_out(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    k->db_failing = true; /* the first answer opens the window */
    pthread_mutex_unlock(&k->mu);
}

/* A lease that ran out before this may be claimed: one that ran out
 * within the settling window is still its runner's, whose renewal may be
 * waiting for the database (SQLite's lock held by another process: not an
 * error, a wait) and lands as the database lets go. Taken at once, two
 * instances on one SQLite file whose lock was held 6 s took over each
 * other's jobs as it was let go, and both ended their processes (the
 * random fault test, seed 15602). While settling, 1: only the leases given
 * up by store_job_expire_owner (lease_until 0: a runner known dead) are. */
static int64_t claim_expired_before(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    int64_t now = wall_ms();
    bool settling = k->db_failing || now < k->claim_expired_from;
    pthread_mutex_unlock(&k->mu);
    return settling ? 1 : now - CLAIM_SETTLE_MS(k);
}

/* A job's store operations wait out a database outage (the store's
 * patience): a stop ends the wait at once. */
struct worker_wait {
    struct core *k;
    const char *job;
};

static bool worker_waits(void *ctx, int tries, const struct store_error *err)
{
    struct worker_wait *w = ctx;
    if (tries % 30 == 0)
        log_error("job", "job=%s waits for the database (try %d): %s", w->job, tries + 1,
                  err->message);
    return !core_nap(w->k, db_pause_ms(tries));
}

struct worker_arg {
    struct core *k;
    int slot;
};

static void *worker_main(void *arg)
{
    mem_thread_name("job-worker");
    struct worker_arg *wa = arg;
    struct core *k = wa->k;
    int slot = wa->slot;
    free(wa);
    for (;;) {
        pthread_mutex_lock(&k->mu);
        bool stop = k->stopping;
        uint64_t wakes = k->wakes;
        pthread_mutex_unlock(&k->mu);
        if (stop)
            break;
        struct job_rec j;
        struct store_error se;
        /* no job before the inventory is read once: placement and locating
         * a VM need it (the keeper reads it first thing) */
        bool ready = fleet_ready(k->fl);
        int rc = ready ? store_job_claim_at(k->st, k->instance, LEASE_MS(k),
                                            claim_expired_before(k), &j, &se)
                       : STORE_E_NOTFOUND;
        if (ready)
            db_seen(k, rc == STORE_OK || rc == STORE_E_NOTFOUND);
        if (rc == STORE_E_NOTFOUND || rc) {
            if (rc && rc != STORE_E_NOTFOUND)
                log_error("job", "claiming a job failed: %s", se.message);
            /* One idle worker watches the store (watch_wait) for what no
             * wake-up announces: jobs other processes queued, leases that
             * ran out. The others sleep until this process queues work
             * (core_wake) or stops: an idle daemon with 60 workers would
             * otherwise look 60 times a second. A wake-up that came
             * between this look and the wait (its job committed after the
             * look began) would find nobody waiting: look again. */
            pthread_mutex_lock(&k->mu);
            if (k->wakes != wakes) {
                pthread_mutex_unlock(&k->mu);
                continue;
            }
            if (!k->stopping && !k->watcher && !k->leaser_watch) {
                k->watcher = true;
                k->watch_want = false;
                pthread_mutex_unlock(&k->mu);
                watch_wait(k);
                pthread_mutex_lock(&k->mu);
                k->watcher = false;
            } else if (!k->stopping) {
                if (!k->watcher && !k->watch_want) {
                    /* the leaser holds the watch (every worker ran a
                     * job): it hands it to an idle worker */
                    k->watch_want = true;
                    leaser_tell(k);
                }
                k->idle++;
                pthread_cond_wait(&k->cv, &k->mu);
                k->idle--;
            }
            pthread_mutex_unlock(&k->mu);
            continue;
        }
        /* there may be more: wake one idle worker, which wakes the next
         * if it finds one too (a job's end wakes nobody: its worker looks
         * again itself) */
        core_wake(k);
        if (!hold_claimed(k, slot, j.id)) {
            job_rec_release(&j);
            continue;
        }
        log_info("job", "job=%s kind=%s vmid=%d claimed at step %s by %s", j.id, j.kind, j.vmid,
                 j.step, k->instance);
        /* the job's writes wait out a database outage (only a stop ends
         * the wait): dropped, they would leave a VMID reserved, a room
         * held, a leftover unrecorded */
        struct worker_wait ww = {k, j.id};
        store_thread_patience(worker_waits, &ww);
        run_job(k, &j);
        store_thread_patience(NULL, NULL);
        hold(k, slot, NULL);
        job_rec_release(&j);
    }
    return NULL;
}

/* Sleep up to ms, woken only by a stop; true when the core stops. */
bool core_nap(struct core *k, long ms)
{
    struct timespec until = deadline_in_ms(ms);
    pthread_mutex_lock(&k->mu);
    while (!k->stopping && pthread_cond_timedwait(&k->stop_cv, &k->mu, &until) != ETIMEDOUT)
        ;
    bool stop = k->stopping;
    pthread_mutex_unlock(&k->mu);
    return stop;
}

bool core_nap_job(struct core *k, struct core_waiter *w, long ms)
{
    struct timespec until = deadline_in_ms(ms);
    pthread_mutex_lock(&k->mu);
    while (!k->stopping && !w->cancel &&
           pthread_cond_timedwait(&k->stop_cv, &k->mu, &until) != ETIMEDOUT)
        ;
    bool stop = k->stopping;
    pthread_mutex_unlock(&k->mu);
    return stop;
}

bool core_nap_until(struct core *k, int64_t until, unsigned notes)
{
    pthread_mutex_lock(&k->mu);
    for (;;) {
        int64_t left = until - mono_ms();
        if (k->stopping || (k->notes & notes) || left <= 0)
            break;
        struct timespec ts = deadline_in_ms(left);
        pthread_cond_timedwait(&k->note_cv, &k->mu, &ts);
    }
    k->notes &= ~notes;
    bool stop = k->stopping;
    pthread_mutex_unlock(&k->mu);
    return stop;
}

/* The leaser's look for cancels while it holds the jobs watch and the
 * store cannot tell (no watch): once a second. */
#define BUSY_LOOK_MS 1000

/* The leaser's sleep of up to ms: woken by a stop (wake[0]), by
 * leaser_wake, and while it holds the store's jobs watch (watch) by the
 * watch, which a cancel recorded elsewhere of a job this process runs
 * turns readable: its waits are told then (tell_cancels). What else the
 * watch tells (jobs queued elsewhere) waits for a worker to end its job
 * and look. */
static void leaser_wait(struct core *k, bool watch, long ms)
{
    int fd = watch ? store_jobs_watch(k->st) : -1;
    if (watch && fd < 0 && ms > BUSY_LOOK_MS)
        ms = BUSY_LOOK_MS;
    if (k->leaser_wake < 0 && ms > BUSY_LOOK_MS)
        ms = BUSY_LOOK_MS; /* nothing would wake it: hold's poke is lost */
    struct pollfd p[3] = {{.fd = k->wake[0], .events = POLLIN},
                          {.fd = k->leaser_wake, .events = POLLIN},
                          {.fd = fd, .events = POLLIN}};
    int r = poll(p, 3, (int)(ms > 0 ? ms : 1));
    uint64_t v;
    if (r > 0 && (p[1].revents & POLLIN) && read(k->leaser_wake, &v, sizeof v) < 0)
        v = 0;
    if (r > 0 && p[2].revents)
        store_jobs_watch_drain(k->st); /* before the look that follows */
    if (watch && (fd < 0 ? r == 0 : r > 0 && p[2].revents))
        tell_cancels(k);
}

/* Renew the leases of the jobs this process runs, on a thread of its own:
 * nothing that waits on Proxmox (a reconcile pass on a hung node) may hold
 * up a renewal, or another instance would take over a running job. One
 * write renews them all (store_job_renew_owner: every running job leased
 * to this instance's name, none that another took over); none while no
 * job is held. Every job leased to the name was claimed by this process:
 * core_start gave up those of an earlier process of the same name.
 *
 * While every worker runs a job none watches the store (watch_wait): the
 * leaser holds the watch then, and tells the waits of jobs cancelled
 * elsewhere when it turns readable. It used to look at the store once a
 * second instead: at time scale 1, with every worker on a long clone, that
 * was 1 ms of CPU per creation (bench/results/create.txt). A worker that
 * goes idle asks for the watch back (watch_want); the leaser lets it go
 * after each wait and does not take it again while a worker is idle. */
static void *leaser_main(void *arg)
{
    mem_thread_name("leaser");
    struct core *k = arg;
    int64_t renew_at = 0;
    bool watching = false;
    for (;;) {
        int held = 0;
        pthread_mutex_lock(&k->mu);
        if (k->stopping) {
            pthread_mutex_unlock(&k->mu);
            break;
        }
        for (int i = 0; i < k->nworkers; i++)
            held += k->held[i][0] != '\0';
        bool watch = held && !k->watcher && k->idle == 0 && !k->watch_want;
        k->leaser_watch = watch;
        pthread_mutex_unlock(&k->mu);
        if (watch && !watching)
            tell_cancels(k); /* a cancel told before the watch was its */
        watching = watch;
        if (mono_ms() >= renew_at) {
            struct store_error se;
            int n = 0;
            bool failed = held && store_job_renew_owner(k->st, k->instance, LEASE_MS(k), &n, &se);
            if (held)
                db_seen(k, !failed);
            if (failed)
                log_warn("job", "lease renewal of %d jobs failed: %s", held, se.message);
            else if (n < held) /* taken over, or finished since they were counted */
                log_debug("job", "%d of %d held jobs' leases renewed", n, held);
            /* a third of the lease: two renewals in a row may fail before
             * it lapses. After a failure, a second: the database back
             * after an outage, the leases that ran out meanwhile are
             * renewed before another instance takes the jobs over */
            renew_at = mono_ms() + (failed ? 1000 : LEASE_MS(k) / 3);
        }
        leaser_wait(k, watch, (long)(renew_at - mono_ms()));
        if (watch) {
            pthread_mutex_lock(&k->mu);
            k->leaser_watch = false;
            if (k->watch_want && k->idle > 0)
                pthread_cond_signal(&k->cv); /* it becomes the watcher */
            pthread_mutex_unlock(&k->mu);
        }
    }
    return NULL;
}

/* Refresh the inventory and run the reconciler. */
static void *keeper_main(void *arg)
{
    mem_thread_name("keeper");
    struct core *k = arg;
    /* first the inventory, on this thread: the API is already answering,
     * and a world that does not answer is marked down after one try */
    fleet_refresh(k->fl, true);
    core_wake(k); /* workers may claim jobs now */
    int64_t last_refresh = mono_ms(), last_reconcile = 0;
    int64_t every =
        (int64_t)(k->cfg->reconcile_interval_s > 0 ? k->cfg->reconcile_interval_s : 60) * 1000;
    int64_t next;
    do {
        if (last_reconcile == 0 || mono_ms() - last_reconcile >= every) {
            struct reconcile_report rep;
            /* refreshes the inventory too; removals go to the cleaner */
            int64_t began = mono_ms();
            reconcile_pass(k, &rep, false);
            snap_reconcile(k); /* queues a bounded snapshot check (a job) */
            last_reconcile = last_refresh = began;
        } else if (mono_ms() >= fleet_refresh_next(k->fl, last_refresh)) {
            last_refresh = mono_ms();
            fleet_refresh(k->fl, false);
        }
        /* asleep until the next refresh or pass is due; a read of the
         * inventory for a decision may bring the refresh forward */
        next = fleet_refresh_next(k->fl, last_refresh);
        if (last_reconcile + every < next)
            next = last_reconcile + every;
        /* (a node marked down brings its re-probe, at its backoff's end,
         * into the reckoning: the keeper slept up to a minute past it) */
    } while (!core_nap_until(k, next, FLEET_NOTE_WANTED | FLEET_NOTE_DOWN));
    return NULL;
}

/* Jobs leased by an earlier proxd on this host that is gone (killed, say)
 * are taken over at once rather than after their lease runs out. Instances
 * are named host:pid, so the pid tells whether the runner still lives.
 * Jobs leased under this very name are an earlier process's too (a pid
 * reused after a restart, in a container where proxd is always pid 1; a
 * core restarted in one process): nothing runs here yet. They are given up
 * before the leaser starts, which renews every lease of the name. */
static void adopt_dead_local_jobs(struct core *k)
{
    char owners[64][64];
    size_t n = 0;
    struct store_error se;
    if (store_job_expire_owner(k->st, k->instance, &se))
        log_warn("job", "the leases of an earlier %s are not given up: %s", k->instance,
                 se.message);
    if (store_job_lease_owners(k->st, owners, 64, &n, NULL))
        return;
    for (size_t i = 0; i < n; i++) {
        if (!core_instance_gone(k, owners[i]))
            continue; /* another host's, or a second proxd on this host */
        log_info("job", "taking over the jobs of %s, which is gone", owners[i]);
        store_job_expire_owner(k->st, owners[i], NULL);
    }
}

bool core_instance_gone(const struct core *k, const char *owner)
{
    const char *colon = strrchr(k->instance, ':');
    const char *oc = strrchr(owner, ':');
    size_t hl = colon ? (size_t)(colon - k->instance) : 0;
    if (!colon || !oc || (size_t)(oc - owner) != hl || strncmp(owner, k->instance, hl) != 0 ||
        strcmp(owner, k->instance) == 0)
        return false;
    long pid = atol(oc + 1);
    return pid > 0 && !(kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

int core_start(struct core *k)
{
    /* before any placement: this configuration's cordons hold in every
     * instance, and none of them places without them */
    struct core_error ce;
    if (core_cordons_sync(k, &ce)) {
        log_error("node", "%s", ce.message);
        return -1;
    }
    /* A process just started cannot know whether the database was out
     * of reach a moment ago: leases that ran out then are left to their
     * runners for the settling window, as after an outage it saw itself
     * (a proxd started just after one took over a job whose runner, alive,
     * was about to renew, and that runner had to end its process: the
     * PostgreSQL fault test, seed 14102). A known dead runner's jobs
     * (adopt_dead_local_jobs) are claimed at once all the same. */
    pthread_mutex_lock(&k->mu);
    k->claim_expired_from = wall_ms() + CLAIM_SETTLE_MS(k);
    pthread_mutex_unlock(&k->mu);
    adopt_dead_local_jobs(k);
    core_addr_sweep(k);
    int n = k->cfg->workers;
    if (n <= 0) { /* enough workers to keep every clone slot busy, plus some */
        n = 4;
        for (int i = 0; i < k->cfg->nnodes; i++)
            n += k->cfg->nodes[i].max_clones > 0 ? k->cfg->nodes[i].max_clones
                                                 : k->cfg->clones_per_node;
        n = n < 8 ? 8 : n;
    }
    if (k->cfg->jobs_max > 0 && n > k->cfg->jobs_max)
        n = k->cfg->jobs_max; /* the global limit on jobs running at once */
    if (n > CORE_MAX_WORKERS)
        n = CORE_MAX_WORKERS;
    k->nworkers = n;
    for (int i = 0; i < n; i++) {
        struct worker_arg *wa = xmalloc(sizeof *wa);
        wa->k = k;
        wa->slot = i;
        if (mem_thread_start(&k->workers[i], worker_main, wa) != 0) {
            free(wa);
            goto fail;
        }
        k->workers_up++;
    }
    if (fleet_probe_start(k->fl, k->cfg->probe_interval_s * 1000) != 0 ||
        reconcile_cleaner_start(k) != 0)
        goto fail;
    if (mem_thread_start(&k->keeper, keeper_main, k) != 0)
        goto fail;
    k->keeper_up = true;
    if (mem_thread_start(&k->leaser, leaser_main, k) != 0)
        goto fail;
    k->leaser_up = true;
    if (netwalk_start(k->nw) != 0 || events_start(k) != 0 || access_start(k->access) != 0 ||
        guestwatch_start(k->gw) != 0)
        goto fail;
    k->started = true;
    return 0;
fail:
    /* what was made is stopped again: no thread outlives a failed start */
    core_stop(k);
    return -1;
}

void core_abandon(struct core *k)
{
    struct store_error se;
    if (store_job_expire_owner(k->st, k->instance, &se) != 0)
        log_warn("core", "leases not given up (they run out): %s", se.message);
}

void core_stop(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    k->stopping = true;
    pthread_cond_broadcast(&k->cv);
    pthread_cond_broadcast(&k->slot_cv);
    pthread_cond_broadcast(&k->stop_cv);
    pthread_cond_broadcast(&k->note_cv);
    pthread_mutex_unlock(&k->mu);
    if (k->wake[1] >= 0 && write(k->wake[1], "s", 1) != 1)
        log_warn("core", "stop not signalled to task waits: they see it at their next look");
    leaser_tell(k);
    /* only the threads core_start made: a core never started (or whose
     * start failed half-way) has zeroed handles, which are no threads */
    for (int i = 0; i < k->workers_up; i++)
        pthread_join(k->workers[i], NULL);
    k->workers_up = 0;
    if (k->keeper_up)
        pthread_join(k->keeper, NULL);
    if (k->leaser_up)
        pthread_join(k->leaser, NULL);
    k->keeper_up = k->leaser_up = false;
    events_stop(k);
    reconcile_cleaner_stop(k);
    netwalk_stop(k->nw);
    access_stop(k->access);
    guestwatch_stop(k->gw);
    fleet_probe_stop(k->fl);
    /* the jobs we were running stopped at a checkpoint: let the next proxd
     * (or another instance) take them at once instead of after the lease */
    core_abandon(k);
    k->started = false;
}
