/* snapshot: VM snapshots as durable jobs (see snapshot.h).
 *
 * Every snapshot proxd makes carries a marker line in its description
 * ("proxd-snapshot job=<id>"): a job resumed after a restart, or whose call
 * answer was lost, recognises its own snapshot in the list instead of
 * making a second one, and retention only ever removes proxd's snapshots.
 * A creation whose task failed removes what it left half-made (forced
 * delete) before it ends. Proxmox lock errors (a backup, another snapshot)
 * are retried by class with backoff, as control jobs do. */
#include "core/snapshot.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARK "proxd-snapshot job="
#define CACHE_MAX 4096       /* VMs whose lists are kept (the least recent go) */
#define OWNER_FRESH_MS 60000 /* cached lists younger than this count for owner totals */
#define STEP_DEADLINE_MS 600000L
#define CALL_TRIES 8 /* lock and transient errors of a call */
#define OWNER_STRIPES 64
#define IDEM_PREFIX "snapshots:"

struct centry {
    int vmid;
    int64_t at; /* unix ms of the read */
    struct snap_info *s;
    size_t n;
};

struct snapcache {
    pthread_mutex_t mu;
    struct centry e[CACHE_MAX];
    size_t n;
    int64_t cursor; /* sync: the last record id read */
    bool primed;    /* sync: the first reconcile pass after start went by */
    struct snap_stats stats;
    pthread_mutex_t owners[OWNER_STRIPES]; /* count-and-create per owner */
};

static struct snapcache *cache(struct core *k)
{
    pthread_mutex_lock(&k->mu);
    if (!k->snaps) {
        struct snapcache *c = xcalloc(1, sizeof *c);
        pthread_mutex_init(&c->mu, NULL);
        for (int i = 0; i < OWNER_STRIPES; i++)
            pthread_mutex_init(&c->owners[i], NULL);
        k->snaps = c;
    }
    struct snapcache *c = k->snaps;
    pthread_mutex_unlock(&k->mu);
    return c;
}

void snap_cache_free(struct core *k)
{
    struct snapcache *c = k->snaps;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->e[i].s);
    pthread_mutex_destroy(&c->mu);
    for (int i = 0; i < OWNER_STRIPES; i++)
        pthread_mutex_destroy(&c->owners[i]);
    free(c);
    k->snaps = NULL;
}

static struct centry *cfind(struct snapcache *c, int vmid)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].vmid == vmid)
            return &c->e[i];
    return NULL;
}

/* A copy of the cached list (*s NULL and false when none). */
static bool cget(struct core *k, int vmid, struct snap_info **s, size_t *n, int64_t *at)
{
    struct snapcache *c = cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    *s = NULL;
    *n = 0;
    if (e) {
        *s = xcalloc(e->n + 1, sizeof **s);
        memcpy(*s, e->s, e->n * sizeof **s);
        *n = e->n;
        *at = e->at;
    }
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

/* Replace the cached list (copied); drift against the previous one is
 * counted when `drift` (the sync pass: anything else is proxd's own doing). */
static void cput(struct core *k, int vmid, const struct snap_info *s, size_t n, bool drift)
{
    struct snapcache *c = cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    if (e && drift) {
        for (size_t i = 0; i < e->n; i++) {
            bool still = false;
            for (size_t j = 0; j < n && !still; j++)
                still = strcmp(e->s[i].name, s[j].name) == 0;
            if (!still) {
                c->stats.removed_outside++;
                log_warn("snapshot", "vmid=%d snapshot '%s' was removed outside proxd", vmid,
                         e->s[i].name);
            }
        }
        for (size_t j = 0; j < n; j++) {
            bool known = false;
            for (size_t i = 0; i < e->n && !known; i++)
                known = strcmp(e->s[i].name, s[j].name) == 0;
            if (!known) {
                c->stats.added_outside++;
                log_warn("snapshot", "vmid=%d snapshot '%s' was made outside proxd", vmid,
                         s[j].name);
            }
        }
    }
    if (!e) {
        if (c->n == CACHE_MAX) { /* the least recently read goes */
            size_t old = 0;
            for (size_t i = 1; i < c->n; i++)
                if (c->e[i].at < c->e[old].at)
                    old = i;
            free(c->e[old].s);
            c->e[old] = c->e[--c->n];
        }
        e = &c->e[c->n++];
        e->vmid = vmid;
        e->s = NULL;
    }
    free(e->s);
    e->s = xcalloc(n + 1, sizeof *s);
    memcpy(e->s, s, n * sizeof *s);
    e->n = n;
    e->at = wall_ms();
    pthread_mutex_unlock(&c->mu);
}

static void cdrop(struct core *k, int vmid)
{
    struct snapcache *c = cache(k);
    pthread_mutex_lock(&c->mu);
    struct centry *e = cfind(c, vmid);
    if (e) {
        free(e->s);
        *e = c->e[--c->n];
    }
    pthread_mutex_unlock(&c->mu);
}

void core_snap_stats(struct core *k, struct snap_stats *out)
{
    struct snapcache *c = cache(k);
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

static void count_stat(struct core *k, uint64_t *(*field)(struct snap_stats *), uint64_t d)
{
    struct snapcache *c = cache(k);
    pthread_mutex_lock(&c->mu);
    *field(&c->stats) += d;
    pthread_mutex_unlock(&c->mu);
}
static uint64_t *st_limit(struct snap_stats *s)
{
    return &s->limit_refusals;
}
static uint64_t *st_retention(struct snap_stats *s)
{
    return &s->retention;
}
static uint64_t *st_synced(struct snap_stats *s)
{
    return &s->synced;
}

/* ---- names, markers, conversions ---------------------------------------------- */

bool snap_name_ok(const char *name, char *why, size_t whylen)
{
    size_t n = name ? strlen(name) : 0;
    const char *bad = NULL;
    if (n < 2 || n > SNAP_NAME_MAX)
        bad = "must be 2 to 40 characters";
    else if (!isalpha((unsigned char)name[0]))
        bad = "must start with a letter";
    else if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != n)
        bad = "may hold only letters, digits, '_' and '-'";
    else if (strcmp(name, "current") == 0 || strcasecmp(name, "pending") == 0)
        bad = "is reserved by Proxmox";
    if (bad)
        snprintf(why, whylen, "%s", bad);
    return bad == NULL;
}

/* The job id in a description's marker line ("" when none). */
static void marker_job(const char *desc, char job[40])
{
    job[0] = '\0';
    const char *m = strstr(desc, MARK);
    if (m && (m == desc || m[-1] == '\n')) {
        m += strlen(MARK);
        size_t l = strcspn(m, "\n");
        snprintf(job, 40, "%.*s", (int)(l < 39 ? l : 39), m);
    }
}

static void from_pve(const struct pve_snapshot *p, struct snap_info *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", p->name);
    snprintf(s->parent, sizeof s->parent, "%s", p->parent);
    snprintf(s->state, sizeof s->state, "%s", p->snapstate);
    s->snaptime = p->snaptime;
    s->vmstate = p->vmstate;
    marker_job(p->description, s->job);
    s->proxd = s->job[0] != '\0';
    const char *m = s->proxd ? strstr(p->description, MARK) : NULL;
    size_t l = m ? (size_t)(m - p->description) : strlen(p->description);
    while (l > 0 && p->description[l - 1] == '\n')
        l--;
    if (l > SNAP_DESC_MAX)
        l = SNAP_DESC_MAX;
    memcpy(s->description, p->description, l);
}

static json_t *info_json(const struct snap_info *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s,s:I,s:b,s:b,s:s}", "name", s[i].name,
                                           "description", s[i].description, "parent", s[i].parent,
                                           "state", s[i].state, "snaptime",
                                           (json_int_t)s[i].snaptime, "vmstate", s[i].vmstate,
                                           "proxd", s[i].proxd, "job", s[i].job));
    return a;
}

static struct snap_info *info_of_json(json_t *a, size_t *n)
{
    size_t cnt = json_is_array(a) ? json_array_size(a) : 0, i;
    struct snap_info *s = xcalloc(cnt + 1, sizeof *s);
    json_t *e;
    *n = 0;
    json_array_foreach(a, i, e)
    {
        struct snap_info *x = &s[(*n)++];
        snprintf(x->name, sizeof x->name, "%s",
                 json_string_value(json_object_get(e, "name")) ?: "");
        snprintf(x->description, sizeof x->description, "%s",
                 json_string_value(json_object_get(e, "description")) ?: "");
        snprintf(x->parent, sizeof x->parent, "%s",
                 json_string_value(json_object_get(e, "parent")) ?: "");
        snprintf(x->state, sizeof x->state, "%s",
                 json_string_value(json_object_get(e, "state")) ?: "");
        x->snaptime = json_integer_value(json_object_get(e, "snaptime"));
        x->vmstate = json_is_true(json_object_get(e, "vmstate"));
        x->proxd = json_is_true(json_object_get(e, "proxd"));
        snprintf(x->job, sizeof x->job, "%s", json_string_value(json_object_get(e, "job")) ?: "");
    }
    return s;
}

/* ---- requests ------------------------------------------------------------------ */

/* Queue a job of `kind` on v (request stolen). */
static int enqueue(struct core *k, const struct vm_rec *v, const char *kind, json_t *request,
                   char job_id[40], struct core_error *err)
{
    json_object_set_new(request, "record", json_integer(v->id));
    struct job_rec j = {
        .state = JOB_QUEUED, .vmid = v->vmid, .request = request, .attempts = json_array()};
    core_uuid(j.id);
    snprintf(j.kind, sizeof j.kind, "%s", kind);
    snprintf(j.owner, sizeof j.owner, "%s", v->owner);
    snprintf(j.step, sizeof j.step, "queued");
    snprintf(j.node, sizeof j.node, "%s", v->node);
    struct store_error se;
    int rc = store_job_submit(k->st, &j, kind, NULL, NULL, &se);
    if (!rc && job_id)
        snprintf(job_id, 40, "%s", j.id);
    if (!rc)
        log_info("job", "job=%s kind=%s vmid=%d node=%s queued", j.id, kind, v->vmid, v->node);
    job_rec_release(&j);
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    pthread_mutex_lock(&k->mu);
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    return CORE_OK;
}

/* Snapshots the owner's VMs hold as far as the cache shows (fresh lists
 * only when `fresh_ms` > 0), except VM `except`; *unknown counts the VMs
 * without such a list. -1 when the store fails. */
static int owner_count(struct core *k, const char *owner, int except, int64_t fresh_ms,
                       int *unknown, int **unknown_ids, size_t *nunknown)
{
    int total = 0;
    *unknown = 0;
    struct vm_filter f = {.owner = owner, .state = VMS_ENABLED, .limit = 1000};
    for (;;) {
        struct vm_rec *v = NULL;
        size_t n = 0;
        if (store_vm_list(k->st, &f, &v, &n, NULL))
            return -1;
        for (size_t i = 0; i < n; i++) {
            f.after_id = v[i].id;
            if (v[i].vmid != except) {
                struct snap_info *s;
                size_t sn;
                int64_t at = 0;
                bool have = cget(k, v[i].vmid, &s, &sn, &at);
                if (have && (fresh_ms <= 0 || wall_ms() - at <= fresh_ms)) {
                    total += (int)sn;
                } else {
                    (*unknown)++;
                    if (unknown_ids) {
                        *unknown_ids = xrealloc(*unknown_ids, (*nunknown + 1) * sizeof(int));
                        (*unknown_ids)[(*nunknown)++] = v[i].vmid;
                    }
                }
                free(s);
            }
            vm_rec_release(&v[i]);
        }
        free(v);
        if (n == 0)
            break;
    }
    return total;
}

int core_snap_create(struct core *k, int vmid, const char *owner, const struct snap_request *r,
                     char job_id[40], struct core_error *err)
{
    char why[128];
    if (!snap_name_ok(r->name, why, sizeof why))
        return core_fail(err, CORE_E_INVALID, "name", "name %s", why);
    if (r->description &&
        (strlen(r->description) > SNAP_DESC_MAX || strpbrk(r->description, "\r\n")))
        return core_fail(err, CORE_E_INVALID, "description", "must be one line of at most %d bytes",
                         SNAP_DESC_MAX);
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, false, &v, err);
    if (rc)
        return rc;
    if ((rc = core_node_check(k, vmid, v.node, err)))
        goto out;
    /* what proxd knows: the job checks again against Proxmox */
    struct snap_info *s;
    size_t n;
    int64_t at;
    if (cget(k, vmid, &s, &n, &at)) {
        const struct proxd_config *cfg = k->cfg;
        for (size_t i = 0; i < n && !rc; i++)
            if (strcmp(s[i].name, r->name) == 0)
                rc = core_fail(err, CORE_E_CONFLICT, "name", "VM %d has a snapshot '%s' already",
                               vmid, r->name);
        if (!rc && cfg->snap_max_per_vm > 0 && (int)n >= cfg->snap_max_per_vm)
            rc = core_fail(err, CORE_E_CONFLICT, "snapshots",
                           "snapshot limit reached: VM %d holds %zu snapshots, max_per_vm is %d",
                           vmid, n, cfg->snap_max_per_vm);
        if (!rc && cfg->snap_max_per_owner > 0) {
            int unknown;
            int others = owner_count(k, v.owner, vmid, 0, &unknown, NULL, NULL);
            if (others >= 0 && others + (int)n >= cfg->snap_max_per_owner)
                rc = core_fail(err, CORE_E_CONFLICT, "snapshots",
                               "snapshot limit reached: the VMs of '%s' hold %d snapshots, "
                               "max_per_owner is %d",
                               v.owner, others + (int)n, cfg->snap_max_per_owner);
        }
        if (rc == CORE_E_CONFLICT && strcmp(err->field, "snapshots") == 0)
            count_stat(k, st_limit, 1);
    }
    free(s);
    if (!rc) {
        json_t *req = json_pack("{s:s,s:s,s:b}", "name", r->name, "description",
                                r->description ? r->description : "", "vmstate", r->vmstate);
        rc = enqueue(k, &v, "snap-create", req, job_id, err);
    }
out:
    vm_rec_release(&v);
    return rc;
}

/* For delete and rollback: the record, and a 404 when the cache says the
 * snapshot is not there. */
static int snap_named(struct core *k, int vmid, const char *owner, const char *name,
                      const char *kind, char job_id[40], struct core_error *err)
{
    char why[128];
    if (!snap_name_ok(name, why, sizeof why))
        return core_fail(err, CORE_E_NOTFOUND, "name", "no snapshot '%s' (a name %s)", name, why);
    struct vm_rec v;
    int rc = core_vm_load_owned(k, vmid, owner, false, &v, err);
    if (rc)
        return rc;
    if ((rc = core_node_check(k, vmid, v.node, err)))
        goto out;
    struct snap_info *s;
    size_t n;
    int64_t at;
    if (cget(k, vmid, &s, &n, &at)) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(s[i].name, name) == 0;
        if (!found)
            rc = core_fail(err, CORE_E_NOTFOUND, "name", "VM %d has no snapshot '%s'", vmid, name);
    }
    free(s);
    if (!rc)
        rc = enqueue(k, &v, kind, json_pack("{s:s}", "name", name), job_id, err);
out:
    vm_rec_release(&v);
    return rc;
}

int core_snap_delete(struct core *k, int vmid, const char *owner, const char *name, char job_id[40],
                     struct core_error *err)
{
    return snap_named(k, vmid, owner, name, "snap-delete", job_id, err);
}

int core_snap_rollback(struct core *k, int vmid, const char *owner, const char *name,
                       char job_id[40], struct core_error *err)
{
    return snap_named(k, vmid, owner, name, "snap-rollback", job_id, err);
}

int core_snap_list(struct core *k, int vmid, const char *owner, bool refresh,
                   struct snap_info **out, size_t *n, int64_t *as_of, char job_id[40],
                   struct core_error *err)
{
    struct vm_rec v;
    *out = NULL;
    *n = 0;
    *as_of = 0;
    job_id[0] = '\0';
    int rc = core_vm_load_owned(k, vmid, owner, false, &v, err);
    if (rc)
        return rc;
    if (refresh || !cget(k, vmid, out, n, as_of)) {
        free(*out);
        *out = NULL;
        *n = 0;
        if (!(rc = core_node_check(k, vmid, v.node, err)))
            rc = enqueue(k, &v, "snap-list", json_object(), job_id, err);
    }
    vm_rec_release(&v);
    return rc;
}

int core_snap_list_job(struct core *k, int vmid, const char *owner, const char *job_id,
                       struct snap_info **out, size_t *n, int64_t *as_of, struct core_error *err)
{
    struct job_rec j;
    *out = NULL;
    *n = 0;
    if (store_job_get(k->st, job_id, &j, NULL))
        return core_fail(err, CORE_E_NOTFOUND, "job", "no snapshot list job %s", job_id);
    int rc = CORE_OK;
    if (strcmp(j.kind, "snap-list") != 0 || j.vmid != vmid || (owner && strcmp(owner, j.owner)))
        rc = core_fail(err, CORE_E_NOTFOUND, "job", "no snapshot list job %s for VM %d", job_id,
                       vmid);
    else if (j.state == JOB_FAILED)
        rc = core_fail(err, CORE_E_INVALID, "job", "the list job failed: %s", j.error);
    else if (j.state != JOB_DONE)
        rc = core_fail(err, CORE_E_CONFLICT, "job", "the list job is %s", job_state_name(j.state));
    if (!rc) {
        char key[64];
        json_t *a = NULL;
        snprintf(key, sizeof key, IDEM_PREFIX "%s", job_id);
        if (store_idem_get(k->st, j.owner, key, &a, NULL))
            rc =
                core_fail(err, CORE_E_INTERNAL, NULL, "the answer of job %s is not stored", job_id);
        else {
            *out = info_of_json(json_object_get(a, "snapshots"), n);
            *as_of = json_integer_value(json_object_get(a, "as_of"));
        }
        json_decref(a);
    }
    job_rec_release(&j);
    return rc;
}

/* ---- running the jobs ----------------------------------------------------------- */

struct sctx {
    struct core *k;
    struct job_rec *j;
    struct vm_rec v;
    pve_client *pc;
};

bool snap_kind(const char *kind)
{
    return strncmp(kind, "snap-", 5) == 0;
}

static void end(struct sctx *c, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void end(struct sctx *c, bool ok, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->j->state = ok ? JOB_DONE : JOB_FAILED;
    c->j->finished_at = wall_ms();
    if (!ok)
        snprintf(c->j->error, sizeof c->j->error, "%s", msg);
    job_checkpoint(c->k, c->j, ok ? "done" : "failed", 100, "%s", msg);
}

/* May the call succeed if made again? (as control jobs judge it) */
static bool transient(int rc)
{
    return rc == PVE_E_LOCK || rc == PVE_E_NETWORK || rc == PVE_E_OTHER || rc == PVE_E_TIMEOUT;
}

/* The pause before try n+1: 250 ms doubling to 4 s; the lease is renewed. */
static void pause_n(struct sctx *c, int n)
{
    store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS, NULL);
    sleep_ms(250L << (n < 5 ? n - 1 : 4));
}

/* The VM's node client: where the record says, else where the (refreshed)
 * inventory sees the VM. */
static int find_vm(struct sctx *c, struct pve_error *e)
{
    for (int round = 0; round < 2; round++) {
        c->pc = c->v.node[0] ? fleet_client(c->k->fl, c->v.node) : NULL;
        if (c->pc) {
            struct pve_vm_status st;
            int rc = 0;
            for (int n = 1; n <= 5; n++) {
                rc = pve_vm_status(c->pc, c->v.node, c->v.vmid, &st, e);
                if (!transient(rc) || core_stopping(c->k))
                    break;
                pause_n(c, n);
            }
            if (rc != PVE_E_NOTFOUND)
                return rc;
        }
        if (round == 1)
            break;
        fleet_refresh(c->k->fl, true);
        char node[64];
        if (fleet_vm_node(c->k->fl, c->v.vmid, node) != 0)
            break;
        snprintf(c->v.node, sizeof c->v.node, "%s", node);
        snprintf(c->j->node, sizeof c->j->node, "%s", node);
    }
    snprintf(e->message, sizeof e->message, "VM %d is on no node", c->v.vmid);
    e->cls = PVE_E_NOTFOUND;
    return PVE_E_NOTFOUND;
}

/* The snapshot list (retried reads), cached; *s (free()) of *n. */
static int list(struct sctx *c, struct snap_info **s, size_t *n, struct pve_error *e)
{
    struct pve_snapshot *p = NULL;
    size_t pn = 0;
    int rc = 0;
    *s = NULL;
    *n = 0;
    for (int t = 1; t <= 5; t++) {
        rc = pve_snap_list(c->pc, c->v.node, c->v.vmid, &p, &pn, e);
        if (!transient(rc) || core_stopping(c->k))
            break;
        pause_n(c, t);
    }
    if (rc)
        return rc;
    *s = xcalloc(pn + 1, sizeof **s);
    for (size_t i = 0; i < pn; i++)
        from_pve(&p[i], &(*s)[i]);
    *n = pn;
    free(p);
    cput(c->k, c->v.vmid, *s, *n, false);
    return 0;
}

static const struct snap_info *lookup(const struct snap_info *s, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return &s[i];
    return NULL;
}

/* A lock that waiting does not clear: Proxmox leaves "rollback" on a VM
 * whose rollback failed, until an operator unlocks it. */
static bool stuck_lock(const struct pve_error *e)
{
    return strstr(e->message, "VM is locked (rollback)") != NULL;
}

#define UNLOCK_HINT                                                                                \
    "Proxmox keeps the VM locked (rollback) after a failed rollback: an operator must unlock it "  \
    "(qm unlock %d) before anything else is done to it"

/* Is the job's task (j->upid) still running? */
static bool task_running(struct sctx *c)
{
    struct pve_task t;
    struct pve_error e;
    return c->j->upid[0] && pve_task_status(c->pc, c->j->upid, &t, &e) == 0 && t.running;
}

/* Start a task with `call` (retrying transient call errors is the
 * caller's loop) and wait for it: 0, -1 when stopping, or the error (a
 * task's own failure has e->upid set). */
static int run_task(struct sctx *c, int rc, struct pve_error *e)
{
    if (rc)
        return rc;
    job_checkpoint(c->k, c->j, "wait", 50, "task %s", c->j->upid);
    return core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, e);
}

/* Remove a snapshot the job left half-made (forced); best effort, the
 * caller lists again. */
static void remove_half(struct sctx *c, const char *name)
{
    struct pve_error e = {0};
    job_checkpoint(c->k, c->j, "cleanup", 70, "removing the half-made snapshot '%s'", name);
    for (int t = 1; t <= CALL_TRIES && !core_stopping(c->k); t++) {
        c->j->upid[0] = '\0';
        int rc = run_task(
            c, pve_snap_delete(c->pc, c->v.node, c->v.vmid, name, true, c->j->upid, &e), &e);
        if (rc == 0 || rc == -1 || rc == PVE_E_NOTFOUND || !transient(rc))
            return;
        pause_n(c, t);
    }
}

/* The owner's snapshots on other VMs, read from Proxmox where the cache
 * has no fresh list; -1 when it cannot be known. */
static int owner_total(struct sctx *c)
{
    int unknown = 0, *ids = NULL;
    size_t nids = 0;
    int total = owner_count(c->k, c->v.owner, c->v.vmid, OWNER_FRESH_MS, &unknown, &ids, &nids);
    for (size_t i = 0; total >= 0 && i < nids; i++) {
        struct sctx o = {.k = c->k, .j = c->j};
        struct pve_error e = {0};
        struct snap_info *s = NULL;
        size_t n = 0;
        if (store_vm_get(c->k->st, ids[i], &o.v, NULL))
            continue; /* gone meanwhile */
        if (find_vm(&o, &e) == 0 && list(&o, &s, &n, &e) == 0)
            total += (int)n;
        else if (e.cls != PVE_E_NOTFOUND)
            total = -1;
        free(s);
        vm_rec_release(&o.v);
    }
    free(ids);
    return total;
}

/* The limits, against Proxmox's lists: NULL, or why the creation may not be. */
static const char *over_limit(struct sctx *c, size_t have, char *why, size_t len)
{
    const struct proxd_config *cfg = c->k->cfg;
    if (cfg->snap_max_per_vm > 0 && (int)have >= cfg->snap_max_per_vm) {
        snprintf(why, len, "snapshot limit reached: VM %d holds %zu snapshots, max_per_vm is %d",
                 c->v.vmid, have, cfg->snap_max_per_vm);
        return why;
    }
    if (cfg->snap_max_per_owner > 0) {
        int others = owner_total(c);
        if (others < 0) {
            snprintf(why, len, "snapshot limit of '%s' cannot be checked: a node does not answer",
                     c->v.owner);
            return why;
        }
        if (others + (int)have >= cfg->snap_max_per_owner) {
            snprintf(why, len,
                     "snapshot limit reached: the VMs of '%s' hold %d snapshots, max_per_owner "
                     "is %d",
                     c->v.owner, others + (int)have, cfg->snap_max_per_owner);
            return why;
        }
    }
    return NULL;
}

static unsigned stripe(const char *owner)
{
    unsigned h = 5381;
    for (const char *p = owner; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h % OWNER_STRIPES;
}

static void create_steps(struct sctx *c)
{
    json_t *r = c->j->request;
    const char *name = json_string_value(json_object_get(r, "name"));
    const char *udesc = json_string_value(json_object_get(r, "description"));
    bool vmstate = json_is_true(json_object_get(r, "vmstate"));
    char desc[SNAP_DESC_MAX + 80];
    snprintf(desc, sizeof desc, "%s%s" MARK "%s", udesc && *udesc ? udesc : "",
             udesc && *udesc ? "\n" : "", c->j->id);
    bool resumed = strcmp(c->j->step, "queued") != 0;
    struct pve_error e = {0}, last = {0};
    for (int t = 1;; t++) {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *mine = lookup(s, n, name);
        bool ours = mine && strcmp(mine->job, c->j->id) == 0;
        if (mine && !ours && !resumed && t == 1) {
            free(s);
            end(c, false, "VM %d has a snapshot '%s' already", c->v.vmid, name);
            return;
        }
        if (mine && ours && mine->state[0] == '\0') {
            free(s);
            end(c, true, "snapshot '%s' of VM %d made%s", name, c->v.vmid,
                vmstate ? " with its RAM" : "");
            return;
        }
        if (mine && ours) { /* half-made: still being made, or left by a failed task */
            free(s);
            if (task_running(c)) {
                int rc = core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e);
                if (rc == -1)
                    return;
            } else {
                remove_half(c, name);
                if (core_stopping(c->k))
                    return;
                if (t > CALL_TRIES || (last.upid[0] && last.cls != PVE_E_LOCK)) {
                    end(c, false, "snapshot '%s' failed: %s (the half-made snapshot is removed)",
                        name, last.message[0] ? last.message : "its task failed");
                    return;
                }
            }
            continue;
        }
        if (mine && !ours) { /* a resumed job whose name was taken meanwhile */
            free(s);
            end(c, false, "VM %d has a snapshot '%s' that proxd's job did not make", c->v.vmid,
                name);
            return;
        }
        if (t > CALL_TRIES || (last.upid[0] && last.cls != PVE_E_LOCK)) {
            free(s);
            end(c, false, "snapshot '%s' failed: %s", name, last.message);
            return;
        }
        if (t == 1) {
            char why[256];
            if (over_limit(c, n, why, sizeof why)) {
                free(s);
                count_stat(c->k, st_limit, 1);
                end(c, false, "%s", why);
                return;
            }
        }
        free(s);
        if (t > 1)
            pause_n(c, t - 1);
        if (core_stopping(c->k))
            return;
        job_checkpoint(c->k, c->j, "call", 20, "snapshot '%s' of VM %d on %s%s", name, c->v.vmid,
                       c->v.node, vmstate ? " with RAM" : "");
        c->j->upid[0] = '\0';
        memset(&e, 0, sizeof e);
        int rc = run_task(
            c, pve_snap_create(c->pc, c->v.node, c->v.vmid, name, desc, vmstate, c->j->upid, &e),
            &e);
        if (rc == -1)
            return;
        if (rc && stuck_lock(&e)) {
            end(c, false, "snapshot '%s' failed: %s; " UNLOCK_HINT, name, e.message, c->v.vmid);
            return;
        }
        if (rc && !transient(rc) && !e.upid[0]) {
            end(c, false, "snapshot '%s' refused: %s", name, e.message);
            return;
        }
        last = e;
        if (rc)
            log_warn("job", "job=%s vmid=%d snapshot '%s': %s (%s), the list decides", c->j->id,
                     c->v.vmid, name, e.message, pve_class_name(rc));
        /* the list, read at the top, says what the call did */
    }
}

static void create_run_locked(struct sctx *c)
{
    struct snapcache *sc = cache(c->k);
    bool per_owner = c->k->cfg->snap_max_per_owner > 0;
    unsigned st = stripe(c->v.owner);
    if (per_owner) /* count and make one at a time per owner (in this instance) */
        pthread_mutex_lock(&sc->owners[st]);
    create_steps(c);
    if (per_owner)
        pthread_mutex_unlock(&sc->owners[st]);
}

static void delete_steps(struct sctx *c)
{
    const char *name = json_string_value(json_object_get(c->j->request, "name"));
    bool resumed = strcmp(c->j->step, "queued") != 0, force = false;
    struct pve_error e = {0}, last = {0};
    for (int t = 1;; t++) {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *it = lookup(s, n, name);
        bool half = it && it->state[0];
        free(s);
        if (!it) {
            if (t == 1 && !resumed)
                end(c, false, "VM %d has no snapshot '%s'", c->v.vmid, name);
            else
                end(c, true, "snapshot '%s' of VM %d deleted", name, c->v.vmid);
            return;
        }
        if (task_running(c)) {
            if (core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e) == -1)
                return;
            continue;
        }
        if (t > CALL_TRIES) {
            end(c, false, "deleting snapshot '%s' failed: %s", name, last.message);
            return;
        }
        /* a task that failed for another reason than a lock: once more, forced */
        if (last.upid[0] && last.cls != PVE_E_LOCK) {
            if (force) {
                end(c, false, "deleting snapshot '%s' failed: %s", name, last.message);
                return;
            }
            force = true;
        }
        force = force || half;
        if (t > 1)
            pause_n(c, t - 1);
        if (core_stopping(c->k))
            return;
        job_checkpoint(c->k, c->j, "call", 20, "delete snapshot '%s' of VM %d%s", name, c->v.vmid,
                       force ? " (forced)" : "");
        c->j->upid[0] = '\0';
        memset(&e, 0, sizeof e);
        int rc = run_task(
            c, pve_snap_delete(c->pc, c->v.node, c->v.vmid, name, force, c->j->upid, &e), &e);
        if (rc == -1)
            return;
        if (rc && stuck_lock(&e)) {
            end(c, false, "deleting snapshot '%s' failed: %s; " UNLOCK_HINT, name, e.message,
                c->v.vmid);
            return;
        }
        if (rc && !transient(rc) && !e.upid[0] && rc != PVE_E_NOTFOUND) {
            end(c, false, "deleting snapshot '%s' refused: %s", name, e.message);
            return;
        }
        last = e;
    }
}

/* The record follows Proxmox after a rollback: power, cores, memory, disk
 * (a snapshot holds the config it was taken with); identity stays. */
static bool take_over(struct sctx *c)
{
    bool locked = false;
    struct pve_vm_status st;
    struct pve_vm_config cfg;
    struct pve_error e = {0};
    bool have_st = false, have_cfg = false;
    for (int t = 1; t <= 5 && !(have_st && have_cfg); t++) {
        if (!have_st)
            have_st = pve_vm_status(c->pc, c->v.node, c->v.vmid, &st, &e) == 0;
        if (!have_cfg)
            have_cfg = pve_vm_config_get(c->pc, c->v.node, c->v.vmid, false, &cfg, &e) == 0;
        if (!(have_st && have_cfg) && t < 5)
            pause_n(c, t);
    }
    /* written only while the record is still enabled (store_vm_update_if):
     * a DELETE, of this proxd or another sharing the database, that lands
     * between the read and the write wins */
    struct vm_rec now;
    struct store_error se;
    if (store_vm_get_id(c->k->st, c->v.id, &now, NULL) == 0) {
        if (now.state == VMS_ENABLED) {
            if (have_st)
                snprintf(now.power, sizeof now.power, "%s",
                         strcmp(st.status, "running") != 0     ? "stopped"
                         : strcmp(st.qmpstatus, "paused") == 0 ? "paused"
                                                               : "running");
            else
                snprintf(now.power, sizeof now.power, "unknown");
            if (have_cfg) {
                if (cfg.cores > 0)
                    now.cores = cfg.cores;
                if (cfg.memory_mb > 0)
                    now.memory_mb = cfg.memory_mb;
                if (cfg.bootdisk_size > 0)
                    now.disk_gb = cfg.bootdisk_size / (1024LL * 1024 * 1024);
                json_decref(now.pending);
                now.pending = NULL;
            }
            snprintf(now.node, sizeof now.node, "%s", c->v.node);
            snprintf(now.job, sizeof now.job, "%s", c->j->id);
            int rc = store_vm_update_if(c->k->st, &now, VMS_ENABLED, 0, &se);
            if (rc == STORE_E_CONFLICT)
                log_info("job", "job=%s vmid=%d record left as it is: %s", c->j->id, c->v.vmid,
                         se.message);
            else if (rc)
                log_error("job", "job=%s vmid=%d cannot update the record: %s", c->j->id, c->v.vmid,
                          se.message);
            snprintf(c->v.power, sizeof c->v.power, "%s", now.power);
        }
        vm_rec_release(&now);
    }
    if (have_cfg) {
        locked = strcmp(cfg.lock, "rollback") == 0;
        pve_vm_config_release(&cfg);
    }
    return locked;
}

static void rollback_steps(struct sctx *c)
{
    const char *name = json_string_value(json_object_get(c->j->request, "name"));
    struct pve_error e = {0};
    int rc = 0;
    if (strcmp(c->j->step, "wait") == 0 && c->j->upid[0]) {
        rc = core_wait_task(c->k, c->pc, c->j->upid, STEP_DEADLINE_MS, &e);
        if (rc == -1)
            return;
    } else {
        struct snap_info *s = NULL;
        size_t n = 0;
        if (list(c, &s, &n, &e)) {
            end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
            return;
        }
        const struct snap_info *it = lookup(s, n, name);
        bool ok = it && !it->state[0];
        free(s);
        if (!ok) {
            end(c, false, "VM %d has no complete snapshot '%s'", c->v.vmid, name);
            return;
        }
        /* a rollback made twice ends in the same state: lost answers and
         * lock errors are retried */
        for (int t = 1; t <= CALL_TRIES; t++) {
            if (t > 1)
                pause_n(c, t - 1);
            if (core_stopping(c->k))
                return;
            job_checkpoint(c->k, c->j, "call", 20, "roll VM %d back to '%s'", c->v.vmid, name);
            c->j->upid[0] = '\0';
            memset(&e, 0, sizeof e);
            rc = run_task(c, pve_snap_rollback(c->pc, c->v.node, c->v.vmid, name, c->j->upid, &e),
                          &e);
            if (rc == -1)
                return;
            if (!rc || !transient(rc) || (e.upid[0] && rc != PVE_E_LOCK) || stuck_lock(&e))
                break;
        }
    }
    bool locked = take_over(c);
    if (rc && locked)
        end(c, false, "rollback to '%s' failed: %s (VM %d is %s); " UNLOCK_HINT, name, e.message,
            c->v.vmid, c->v.power, c->v.vmid);
    else if (rc)
        end(c, false, "rollback to '%s' failed: %s (VM %d is %s)", name, e.message, c->v.vmid,
            c->v.power);
    else
        end(c, true, "VM %d rolled back to '%s'; it is %s", c->v.vmid, name, c->v.power);
}

static void list_steps(struct sctx *c)
{
    struct pve_error e = {0};
    struct snap_info *s = NULL;
    size_t n = 0;
    if (list(c, &s, &n, &e)) {
        end(c, false, "cannot read the snapshots of VM %d: %s", c->v.vmid, e.message);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, IDEM_PREFIX "%s", c->j->id);
    json_t *a =
        json_pack("{s:o,s:I}", "snapshots", info_json(s, n), "as_of", (json_int_t)wall_ms());
    json_t *old = NULL;
    int rc = store_idem_put(c->k->st, c->j->owner, key, a, &old, NULL);
    json_decref(old);
    json_decref(a);
    free(s);
    if (rc && rc != STORE_E_CONFLICT) /* CONFLICT: a resumed job stored it already */
        end(c, false, "cannot store the list");
    else
        end(c, true, "VM %d has %zu snapshots", c->v.vmid, n);
}

/* ---- the sync pass and retention -------------------------------------------------- */

/* Snapshots retention removes from a list: proxd's complete ones beyond
 * `keep` (oldest first) and older than max_age (the newest always stays). */
/* How many parents up the chain a snapshot has (ties of snaptime, which
 * has a resolution of seconds, are ordered by it). */
static size_t depth(const struct snap_info *s, size_t n, const struct snap_info *x)
{
    size_t d = 0;
    for (const struct snap_info *p = x; p && p->parent[0] && d < n; d++)
        p = lookup(s, n, p->parent);
    return d;
}

static bool older(const struct snap_info *s, size_t n, const struct snap_info *a,
                  const struct snap_info *b)
{
    return a->snaptime != b->snaptime ? a->snaptime < b->snaptime : depth(s, n, a) < depth(s, n, b);
}

size_t snap_retention(const struct proxd_config *cfg, const struct snap_info *s, size_t n,
                      int64_t now_s, const struct snap_info **out)
{
    const struct snap_info **mine = xcalloc(n + 1, sizeof *mine);
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i].proxd && !s[i].state[0])
            mine[m++] = &s[i];
    for (size_t i = 1; i < m; i++) /* oldest first (insertion sort: lists are short) */
        for (size_t j = i; j > 0 && older(s, n, mine[j], mine[j - 1]); j--) {
            const struct snap_info *x = mine[j];
            mine[j] = mine[j - 1];
            mine[j - 1] = x;
        }
    int64_t now = now_s;
    for (size_t i = 0; i + 1 < m || (i < m && cfg->snap_keep > 0); i++) {
        bool beyond = cfg->snap_keep > 0 && m - i > (size_t)cfg->snap_keep;
        bool aged =
            cfg->snap_max_age_s > 0 && i + 1 < m && now - mine[i]->snaptime > cfg->snap_max_age_s;
        if (beyond || aged)
            out[k++] = mine[i];
    }
    free(mine);
    return k;
}

static void sync_one(struct sctx *c, int vmid, int *queued)
{
    struct sctx o = {.k = c->k, .j = c->j};
    struct pve_error e = {0};
    if (store_vm_get(c->k->st, vmid, &o.v, NULL))
        return;
    if (o.v.state != VMS_ENABLED || !(o.pc = fleet_client(c->k->fl, o.v.node)))
        goto out;
    struct pve_snapshot *p = NULL;
    size_t pn = 0;
    if (pve_snap_list(o.pc, o.v.node, vmid, &p, &pn, &e)) { /* once: the next pass tries again */
        log_info("snapshot", "vmid=%d cannot read the snapshots: %s", vmid, e.message);
        goto out;
    }
    struct snap_info *s = xcalloc(pn + 1, sizeof *s);
    for (size_t i = 0; i < pn; i++)
        from_pve(&p[i], &s[i]);
    free(p);
    struct snap_info *prev = NULL;
    size_t pnn = 0;
    int64_t at = 0;
    bool known = cget(c->k, vmid, &prev, &pnn, &at);
    free(prev);
    cput(c->k, vmid, s, pn, known);
    count_stat(c->k, st_synced, 1);
    if (c->k->cfg->snap_keep > 0 || c->k->cfg->snap_max_age_s > 0) {
        const struct snap_info **vic = xcalloc(pn + 1, sizeof *vic);
        size_t nv = snap_retention(c->k->cfg, s, pn, wall_ms() / 1000, vic);
        for (size_t i = 0; i < nv; i++) {
            char id[40];
            if (enqueue(c->k, &o.v, "snap-delete",
                        json_pack("{s:s,s:s}", "name", vic[i]->name, "reason", "retention"), id,
                        NULL) == 0) {
                (*queued)++;
                count_stat(c->k, st_retention, 1);
                log_info("snapshot", "vmid=%d retention removes snapshot '%s' (job %s)", vmid,
                         vic[i]->name, id);
            }
        }
        free(vic);
    }
    free(s);
out:
    vm_rec_release(&o.v);
}

static void sync_steps(struct sctx *c)
{
    json_t *ids = json_object_get(c->j->request, "vmids"), *x;
    size_t i;
    int queued = 0;
    job_checkpoint(c->k, c->j, "read", 10, "reading the snapshots of %zu VMs",
                   json_array_size(ids));
    json_array_foreach(ids, i, x)
    {
        if (core_stopping(c->k))
            return;
        store_job_renew(c->k->st, c->j->id, c->k->instance, LEASE_MS, NULL);
        sync_one(c, (int)json_integer_value(x), &queued);
    }
    end(c, true, "read the snapshots of %zu VMs; retention queued %d deletions",
        json_array_size(ids), queued);
}

void snap_reconcile(struct core *k)
{
    int per = k->cfg->snap_sync_per_pass, busy = 0, dels = 0;
    if (per <= 0 || store_job_count_active(k->st, "snap-sync", &busy, NULL) || busy ||
        store_job_count_active(k->st, "snap-delete", &dels, NULL) || dels)
        return; /* one batch at a time, and never over retention's own deletions */
    struct snapcache *sc = cache(k);
    pthread_mutex_lock(&sc->mu);
    int64_t after = sc->cursor;
    bool primed = sc->primed;
    sc->primed = true;
    pthread_mutex_unlock(&sc->mu);
    if (!primed) /* right after start: nothing known to compare with, and a
                  * restart loop must not leave a sync job per start */
        return;
    struct vm_rec *v = NULL;
    size_t n = 0;
    struct vm_filter f = {.state = VMS_ENABLED, .after_id = after, .limit = per};
    if (store_vm_list(k->st, &f, &v, &n, NULL))
        return;
    if (n == 0 && after > 0) { /* round robin: from the start again */
        free(v);
        f.after_id = 0;
        if (store_vm_list(k->st, &f, &v, &n, NULL))
            return;
    }
    json_t *ids = json_array();
    int64_t last = 0;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(ids, json_integer(v[i].vmid));
        last = v[i].id;
        vm_rec_release(&v[i]);
    }
    free(v);
    pthread_mutex_lock(&sc->mu);
    sc->cursor = last;
    pthread_mutex_unlock(&sc->mu);
    if (n == 0) {
        json_decref(ids);
        return;
    }
    struct job_rec j = {
        .state = JOB_QUEUED, .request = json_pack("{s:o}", "vmids", ids), .attempts = json_array()};
    core_uuid(j.id);
    snprintf(j.kind, sizeof j.kind, "snap-sync");
    snprintf(j.step, sizeof j.step, "queued");
    if (store_job_submit(k->st, &j, "snapshot sync", NULL, NULL, NULL) == 0) {
        pthread_mutex_lock(&k->mu);
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
    }
    job_rec_release(&j);
}

void snap_run(struct core *k, struct job_rec *j)
{
    struct sctx c = {.k = k, .j = j};
    struct pve_error e = {0};
    if (strcmp(j->kind, "snap-sync") == 0) {
        sync_steps(&c);
        return;
    }
    json_t *rec = json_object_get(j->request, "record");
    if (store_vm_get(k->st, j->vmid, &c.v, NULL)) {
        end(&c, false, "no record of VM %d", j->vmid);
        return;
    }
    if ((json_is_integer(rec) && json_integer_value(rec) != c.v.id) || c.v.state != VMS_ENABLED) {
        end(&c, false, "VM %d is not the enabled VM the job was queued for: nothing done", j->vmid);
        goto out;
    }
    if (find_vm(&c, &e)) {
        if (e.cls == PVE_E_NOTFOUND)
            cdrop(k, j->vmid);
        if (!core_stopping(k))
            end(&c, false, "cannot find VM %d: %s", j->vmid, e.message);
        goto out;
    }
    if (strcmp(j->kind, "snap-create") == 0)
        create_run_locked(&c);
    else if (strcmp(j->kind, "snap-delete") == 0)
        delete_steps(&c);
    else if (strcmp(j->kind, "snap-rollback") == 0)
        rollback_steps(&c);
    else if (strcmp(j->kind, "snap-list") == 0)
        list_steps(&c);
    else
        end(&c, false, "unknown job kind '%s'", j->kind);
out:
    vm_rec_release(&c.v);
}
