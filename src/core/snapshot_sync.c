/* snapshot_sync: the reconcile pass's snapshot sync (a snap-sync job
 * reading a bounded batch of VMs' lists round robin, counting snapshots
 * made or removed behind proxd's back) and retention (keep, max_age). */
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

/* ---- the sync pass and retention -------------------------------------------------- */

/* How many parents up the chain a snapshot has (ties of snaptime, which
 * has a resolution of seconds, are ordered by it). */
static size_t depth(const struct snap_info *s, size_t n, const struct snap_info *x)
{
    size_t d = 0;
    for (const struct snap_info *p = x; p && p->parent[0] && d < n; d++)
        p = snap_lookup(s, n, p->parent);
    return d;
}

static bool older(const struct snap_info *s, size_t n, const struct snap_info *a,
                  const struct snap_info *b)
{
    return a->snaptime != b->snaptime ? a->snaptime < b->snaptime : depth(s, n, a) < depth(s, n, b);
}

/* Snapshots retention removes from a list: proxd's complete ones beyond
 * `keep` (oldest first) and older than max_age (the newest always stays). */
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

/* A complete snapshot whose marker names a snap-create job that ended
 * failed: a call the job gave up on (its answer never came) that Proxmox
 * served after the job had looked and failed, as a busy pvedaemon does
 * with a request queued behind others. Nothing else removes it. */
static bool made_by_a_failed_job(const struct job_brief *b)
{
    return b->state == JOB_FAILED && strcmp(b->kind, "snap-create") == 0;
}

/* The VM's snap-delete jobs that ended done, newest first (a bounded
 * page), read once per VM and only when a snapshot needs them. */
struct deletes {
    bool read;
    struct job_rec *j;
    size_t n;
};

static void deletes_read(struct core *k, int vmid, struct deletes *d)
{
    if (d->read)
        return;
    d->read = true;
    struct job_filter f = {.kind = "snap-delete", .state = JOB_DONE, .vmid = vmid, .limit = 100};
    if (store_job_list(k->st, &f, &d->j, &d->n, NULL, NULL) != 0) {
        d->j = NULL; /* unknown: none taken for one */
        d->n = 0;
    }
}

static void deletes_release(struct deletes *d)
{
    for (size_t i = 0; i < d->n; i++)
        job_rec_release(&d->j[i]);
    free(d->j);
}

/* A complete snapshot whose snap-create job ended done, but which a
 * snap-delete of that name submitted after that job ended removed (its
 * task ended well): made again since by a copy of the creation's call
 * served late (a call sent before a crash whose answer never came, sent
 * again by the resumed job, which made the snapshot the deletion
 * removed). Nothing else makes a snapshot carrying that job's marker. */
static bool made_again_after_its_deletion(struct core *k, int vmid, const struct snap_info *s,
                                          const struct job_brief *b, struct deletes *d)
{
    if (b->state != JOB_DONE || strcmp(b->kind, "snap-create") != 0 || !b->finished_at)
        return false;
    deletes_read(k, vmid, d);
    for (size_t i = 0; i < d->n; i++) {
        const char *name = json_string_value(json_object_get(d->j[i].request, "name"));
        if (name && strcmp(name, s->name) == 0 && d->j[i].created_at > b->finished_at)
            return true;
    }
    return false;
}

/* Queue the removal of the snapshots in s that no job of proxd stands
 * for (above); the deletion checks the marker again (a snapshot of that
 * name made since is left). */
static void remove_strays(struct sctx *c, const struct vm_rec *v, const struct snap_info *s,
                          size_t n, int *queued)
{
    struct deletes d = {0};
    for (size_t i = 0; i < n; i++) {
        char id[40];
        struct job_brief b;
        if (!s[i].proxd || s[i].state[0] || store_job_brief(c->k->st, s[i].job, &b, NULL) != 0)
            continue;
        const char *why = made_by_a_failed_job(&b) ? "which failed"
                          : made_again_after_its_deletion(c->k, v->vmid, &s[i], &b, &d)
                              ? "and was deleted since"
                              : NULL;
        if (!why || snap_enqueue(c->k, v, "snap-delete",
                                 json_pack("{s:s,s:s,s:s}", "name", s[i].name, "reason", "stray",
                                           "job", s[i].job),
                                 id, NULL) != 0)
            continue;
        (*queued)++;
        log_warn("snapshot",
                 "vmid=%d snapshot '%s' was made by job %s, %s (a call of it served late): "
                 "removed (job %s)",
                 v->vmid, s[i].name, s[i].job, why, id);
    }
    deletes_release(&d);
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
        snap_from_pve(&p[i], &s[i]);
    free(p);
    snap_cache_put(c->k, vmid, s, pn, NULL);
    snap_count(c->k, SNAP_ST_SYNCED);
    remove_strays(c, &o.v, s, pn, queued);
    if (c->k->cfg->snap_keep > 0 || c->k->cfg->snap_max_age_s > 0) {
        const struct snap_info **vic = xcalloc(pn + 1, sizeof *vic);
        size_t nv = snap_retention(c->k->cfg, s, pn, wall_ms() / 1000, vic);
        for (size_t i = 0; i < nv; i++) {
            char id[40];
            if (snap_enqueue(c->k, &o.v, "snap-delete",
                             json_pack("{s:s,s:s}", "name", vic[i]->name, "reason", "retention"),
                             id, NULL) == 0) {
                (*queued)++;
                snap_count(c->k, SNAP_ST_RETENTION);
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

void snap_sync_steps(struct sctx *c)
{
    json_t *ids = json_object_get(c->j->request, "vmids"), *x;
    size_t i;
    int queued = 0;
    job_checkpoint(c->k, c->j, "read", 10, "reading the snapshots of %zu VMs",
                   json_array_size(ids));
    json_array_foreach(ids, i, x)
    {
        /* (no renewal per VM: the leaser renews every job this process
         * holds, and a write per VM was a twentieth of the batch's cost) */
        if (core_stopping(c->k))
            return;
        sync_one(c, (int)json_integer_value(x), &queued);
    }
    snap_end(c, true, "read the snapshots of %zu VMs; retention and strays queued %d deletions",
             json_array_size(ids), queued);
}

void snap_reconcile(struct core *k)
{
    int per = k->cfg->snap_sync_per_pass, busy = 0, dels = 0;
    if (per <= 0 || store_job_count_active(k->st, "snap-sync", &busy, NULL) || busy ||
        store_job_count_active(k->st, "snap-delete", &dels, NULL) || dels)
        return; /* one batch at a time, and never over retention's own deletions */
    int64_t after;
    if (!snap_sync_cursor(k, &after)) /* right after start: nothing known to compare with, and a
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
    snap_sync_advance(k, last);
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
        core_wake(k);
    }
    job_rec_release(&j);
}
