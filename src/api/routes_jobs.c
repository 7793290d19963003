/* routes_jobs: GET /v1/jobs (a page, newest first), GET /v1/jobs/{id}
 * and POST /v1/jobs/{id}/cancel (the stream is in sse.c). Like VMs, a user's view of another
 * owner's job is a 404, and a user's list holds their own jobs only. */
#include "api/api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool job_id_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n < 40 && strspn(id, "0123456789abcdefABCDEF-") == n;
}

int job_visible(struct req *rq, struct resp *rs, const char *id, struct job_rec *out)
{
    struct store_error se;
    int rc = job_id_ok(id) ? store_job_get(rq->api->st, id, out, &se) : STORE_E_NOTFOUND;
    if (rc && rc != STORE_E_NOTFOUND) {
        resp_store_error(rs, &se);
        return -1;
    }
    if (rc == STORE_OK && !rq->who.admin && strcmp(out->owner, rq->who.owner) != 0) {
        job_rec_release(out);
        rc = STORE_E_NOTFOUND;
    }
    if (rc) {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "no job %s", id);
        return -1;
    }
    return 0;
}

/* A done job that started its VM: is its guest up? (core/guestwatch.h)
 * "waiting" until its outcome is written; NULL for other jobs, or when
 * the outcome cannot be read (the job is answered without it). */
static json_t *guest_json(struct req *rq, const struct job_rec *j)
{
    if (j->state != JOB_DONE || !guest_kind(j->kind))
        return NULL;
    struct guest_check g;
    struct store_error se;
    int rc = store_guest_get(rq->api->st, j->id, &g, &se);
    if (rc == STORE_E_NOTFOUND)
        return json_pack("{s:s}", "state", "waiting");
    if (rc)
        return NULL;
    return json_pack("{s:s,s:o,s:s}", "state", guest_state_name(g.state), "at", json_time(g.at),
                     "detail", g.detail);
}

void h_job_get(struct req *rq, struct resp *rs)
{
    struct job_rec j;
    if (check_query(rq, rs, NULL) || job_visible(rq, rs, rq->params[0], &j))
        return;
    json_t *o = job_to_json(&j);
    json_t *guest = guest_json(rq, &j);
    if (guest)
        json_object_set_new(o, "guest", guest);
    resp_json(rs, HTTP_OK, o);
    job_rec_release(&j);
}

/* POST /v1/jobs/{id}/cancel: whoever may see the job (its owner, an
 * administrator) may cancel it. 200 with the job when it has ended (a
 * queued job ends at once), 202 while it runs on to its next safe step;
 * the same answer again for a job whose cancel was asked before; 409 for a
 * job that finished without one. */
void h_job_cancel(struct req *rq, struct resp *rs)
{
    struct job_rec j;
    if (check_query(rq, rs, NULL) || decode_body(rq, rs, NULL, 0, true, NULL) ||
        job_visible(rq, rs, rq->params[0], &j))
        return;
    char id[sizeof j.id];
    snprintf(id, sizeof id, "%s", j.id);
    job_rec_release(&j);
    enum store_cancel outcome = 0;
    struct core_error ce = {0};
    if (core_job_cancel(rq->api->k, id, rq->who.owner, &j, &outcome, &ce)) {
        resp_core_error(rs, &ce);
        return;
    }
    bool ended = j.state == JOB_DONE || j.state == JOB_FAILED;
    resp_json(rs, ended ? HTTP_OK : HTTP_ACCEPTED, job_to_json(&j));
    job_rec_release(&j);
}

/* GET /v1/jobs?state=&kind=&vmid=&owner=&before=&limit=: newest first. A
 * user sees their own jobs (owner, when given, must be theirs); an admin
 * every owner's. `next` is the `before` of the following page. */
static bool list_filter(struct req *rq, struct resp *rs, struct job_filter *f)
{
    static const char *const allowed[] = {"state",  "kind",  "vmid", "owner",
                                          "before", "limit", NULL};
    static const char *const states[] = {"queued", "running", "done", "failed"};
    if (check_query(rq, rs, allowed))
        return false;
    *f = (struct job_filter){.state = -1};
    const char *s = query(rq, "state");
    for (int i = 0; s && f->state < 0 && i < 4; i++)
        if (strcmp(s, states[i]) == 0)
            f->state = i; /* enum job_state's order */
    if (s && f->state < 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "state",
                   "state: '%.40s' is not one of queued, running, done, failed", s);
        return false;
    }
    f->kind = query(rq, "kind");
    if (f->kind && (!*f->kind || strlen(f->kind) > 15 ||
                    strspn(f->kind, "abcdefghijklmnopqrstuvwxyz-") != strlen(f->kind))) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "kind",
                   "kind: a job kind (create, stop, snap-create...), lower-case letters and '-'");
        return false;
    }
    f->owner = query(rq, "owner");
    if (!rq->who.admin && f->owner && strcmp(f->owner, rq->who.owner) != 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "owner",
                   "owner: only administrators list other owners' jobs");
        return false;
    }
    if (!rq->who.admin)
        f->owner = rq->who.owner;
    int64_t v = 0;
    if ((s = query(rq, "vmid")) && parse_int_arg(rs, "vmid", s, 1, 999999999, &v))
        return false;
    f->vmid = (int)v;
    if ((s = query(rq, "before")) && parse_int_arg(rs, "before", s, 1, INT64_MAX, &f->before))
        return false;
    v = 100;
    if ((s = query(rq, "limit")) && parse_int_arg(rs, "limit", s, 1, 1000, &v))
        return false;
    f->limit = (int)v;
    return true;
}

void h_jobs_list(struct req *rq, struct resp *rs)
{
    struct job_filter f;
    if (!list_filter(rq, rs, &f))
        return;
    struct job_rec *v = NULL;
    size_t n = 0;
    int64_t next = 0;
    struct store_error se;
    if (store_job_list(rq->api->st, &f, &v, &n, &next, &se)) {
        resp_store_error(rs, &se);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, job_to_json(&v[i]));
        job_rec_release(&v[i]);
    }
    free(v);
    resp_json(rs, HTTP_OK,
              json_pack("{s:o,s:o}", "jobs", arr, "next",
                        next ? json_integer((json_int_t)next) : json_null()));
}
