/* snapshot: VM snapshots as durable jobs (see snapshot.h).
 *
 * Every snapshot proxd makes carries a marker line in its description
 * ("proxd-snapshot job=<id>"): a job resumed after a restart, or whose call
 * answer was lost, recognises its own snapshot in the list instead of
 * making a second one, and retention only ever removes proxd's snapshots.
 * A creation whose task failed removes what it left half-made (forced
 * delete) before it ends. Proxmox lock errors (a backup, another snapshot)
 * are retried by class with backoff, as control jobs do. */
#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/snapshot_int.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
static void snap_marker_job(const char *desc, char job[40])
{
    job[0] = '\0';
    const char *m = strstr(desc, MARK);
    if (m && (m == desc || m[-1] == '\n')) {
        m += strlen(MARK);
        size_t l = strcspn(m, "\n");
        snprintf(job, 40, "%.*s", (int)(l < 39 ? l : 39), m);
    }
}

void snap_from_pve(const struct pve_snapshot *p, struct snap_info *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", p->name);
    snprintf(s->parent, sizeof s->parent, "%s", p->parent);
    snprintf(s->state, sizeof s->state, "%s", p->snapstate);
    s->snaptime = p->snaptime;
    s->vmstate = p->vmstate;
    snap_marker_job(p->description, s->job);
    s->proxd = s->job[0] != '\0';
    const char *m = s->proxd ? strstr(p->description, MARK) : NULL;
    size_t l = m ? (size_t)(m - p->description) : strlen(p->description);
    while (l > 0 && p->description[l - 1] == '\n')
        l--;
    /* a cut inside a multi-byte character would leave text that is not
     * UTF-8, which no JSON encoder takes */
    l = jsonw_utf8_fit(p->description, l, SNAP_DESC_MAX);
    memcpy(s->description, p->description, l);
    /* and text not UTF-8 in the first place (proxd never writes it; a
     * Proxmox host might) must not cost the entry either */
    jsonw_utf8_scrub(s->description, l);
    jsonw_utf8_scrub(s->name, strlen(s->name));
    jsonw_utf8_scrub(s->parent, strlen(s->parent));
    jsonw_utf8_scrub(s->state, strlen(s->state));
}

json_t *snap_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *c = xstrdup(s);
    jsonw_utf8_scrub(c, strlen(c));
    j = json_string(c);
    free(c);
    return j;
}

json_t *snap_info_json(const struct snap_info *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        /* snap_text never fails: an entry left out here would be a
         * snapshot the limits and retention do not count */
        json_array_append_new(
            a,
            json_pack("{s:o,s:o,s:o,s:o,s:I,s:b,s:b,s:o}", "name", snap_text(s[i].name),
                      "description", snap_text(s[i].description), "parent", snap_text(s[i].parent),
                      "state", snap_text(s[i].state), "snaptime", (json_int_t)s[i].snaptime,
                      "vmstate", s[i].vmstate, "proxd", s[i].proxd, "job", snap_text(s[i].job)));
    return a;
}

static struct snap_info *snap_info_of_json(json_t *a, size_t *n)
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
int snap_enqueue(struct core *k, const struct vm_rec *v, const char *kind, json_t *request,
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
    core_wake(k);
    return CORE_OK;
}

/* Snapshots the owner's VMs hold as far as the cache shows (fresh lists
 * only when `fresh_ms` > 0), except VM `except`; *unknown counts the VMs
 * without such a list. -1 when the store fails. */
/* When VM vmid's snapshots last changed by a job, as `ended` says (0: no
 * such job). */
static int64_t changed_at(const struct job_ended *ended, size_t n, int vmid)
{
    for (size_t i = 0; i < n; i++)
        if (ended[i].vmid == vmid)
            return ended[i].at;
    return 0;
}

int snap_owner_count(struct core *k, const char *owner, int except, int64_t fresh_ms,
                     const struct job_ended *ended, size_t nended, int *unknown, int **unknown_ids,
                     size_t *nunknown)
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
                bool have = snap_cache_get(k, v[i].vmid, &s, &sn, &at);
                /* a list read before a job (of any instance) changed the
                 * VM's snapshots is stale, however young */
                int64_t changed = changed_at(ended, nended, v[i].vmid);
                if (have && changed && at <= changed + CLOCK_SKEW_MS)
                    have = false;
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
    if (snap_cache_get(k, vmid, &s, &n, &at)) {
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
            int others = snap_owner_count(k, v.owner, vmid, 0, NULL, 0, &unknown, NULL, NULL);
            if (others >= 0 && others + (int)n >= cfg->snap_max_per_owner)
                rc = core_fail(err, CORE_E_CONFLICT, "snapshots",
                               "snapshot limit reached: the VMs of '%s' hold %d snapshots, "
                               "max_per_owner is %d",
                               v.owner, others + (int)n, cfg->snap_max_per_owner);
        }
        if (rc == CORE_E_CONFLICT && strcmp(err->field, "snapshots") == 0)
            snap_count(k, SNAP_ST_LIMIT);
    }
    free(s);
    if (!rc) {
        json_t *req = json_pack("{s:s,s:s,s:b}", "name", r->name, "description",
                                r->description ? r->description : "", "vmstate", r->vmstate);
        rc = snap_enqueue(k, &v, "snap-create", req, job_id, err);
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
    if (snap_cache_get(k, vmid, &s, &n, &at)) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(s[i].name, name) == 0;
        if (!found)
            rc = core_fail(err, CORE_E_NOTFOUND, "name", "VM %d has no snapshot '%s'", vmid, name);
    }
    free(s);
    if (!rc)
        rc = snap_enqueue(k, &v, kind, json_pack("{s:s}", "name", name), job_id, err);
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

/* A list job of this record that has not started yet: its answer will be
 * as fresh as a new one's, so a caller asking again (?refresh=1 in a loop)
 * gets it rather than one more job per call. Its id in job_id. */
static bool queued_list(struct core *k, const struct vm_rec *v, char job_id[40])
{
    struct job_filter f = {.kind = "snap-list", .state = JOB_QUEUED, .vmid = v->vmid, .limit = 1};
    struct job_rec *js = NULL;
    size_t n = 0;
    bool found = false;
    if (store_job_list(k->st, &f, &js, &n, NULL, NULL) != 0)
        return false; /* a new job, as before */
    if (n == 1 &&
        json_integer_value(json_object_get(js[0].request, "record")) == (json_int_t)v->id) {
        snprintf(job_id, 40, "%s", js[0].id);
        found = true;
    }
    for (size_t i = 0; i < n; i++)
        job_rec_release(&js[i]);
    free(js);
    return found;
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
    if (refresh || !snap_cache_get(k, vmid, out, n, as_of)) {
        free(*out);
        *out = NULL;
        *n = 0;
        if (!(rc = core_node_check(k, vmid, v.node, err)) && !queued_list(k, &v, job_id))
            rc = snap_enqueue(k, &v, "snap-list", json_object(), job_id, err);
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
            *out = snap_info_of_json(json_object_get(a, "snapshots"), n);
            *as_of = json_integer_value(json_object_get(a, "as_of"));
        }
        json_decref(a);
    }
    job_rec_release(&j);
    return rc;
}
