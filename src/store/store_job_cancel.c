/* store_job_cancel: a job's cancel (store.h store_job_cancel), one
 * transaction. The job row is locked first (SQLite: the write lock;
 * PostgreSQL: FOR UPDATE, so a claim taking it runs before or after, never
 * between the read and the write): a queued job is ended here with what its
 * submission held, a running one gets the request its runner reads at its
 * next checkpoint, or at once when its process's jobs watch is told.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

#include <stdio.h>

static const char SQL_JOB_LOCK[] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1{FOR_UPDATE}";
static const char SQL_JOB_END[] =
    "UPDATE jobs SET state = 'failed', step = 'failed', progress = 100, error = ?2,"
    " cancel_at = ?3, cancel_by = ?4, updated_at = ?3, finished_at = ?3 WHERE id = ?1";
static const char SQL_JOB_ASK[] =
    "UPDATE jobs SET cancel_at = ?2, cancel_by = ?3, updated_at = ?2 WHERE id = ?1";

struct cancel_ctx {
    const store *s;
    const char *id;
    const struct job_cancel_req *c;
    struct job_rec *j;
    enum store_cancel outcome;
};

static int read_locked(db_conn *c, struct cancel_ctx *k, struct store_error *err)
{
    db_stmt *st = NULL;
    job_rec_release(k->j);
    int rc = db_prepare(c, SQL_JOB_LOCK, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading the job to cancel");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", k->id);
    if (rc == STORE_OK)
        rc = store_job_row(st, k->j, err);
    db_done(st);
    return rc;
}

static int write_cancel(db_conn *c, struct cancel_ctx *k, bool end, int64_t now,
                        struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, end ? SQL_JOB_END : SQL_JOB_ASK, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->id);
    if (end) {
        db_bind_text(st, 2, k->c->error);
        db_bind_i64(st, 3, now);
        db_bind_text(st, 4, k->c->by);
    } else {
        db_bind_i64(st, 2, now);
        db_bind_text(st, 3, k->c->by);
    }
    rc = db_run(st, err, "recording the cancel");
    db_done(st);
    return rc;
}

/* The job's line and the log's job.cancelled (last: it takes the log's
 * lock). */
static int tell(db_conn *c, struct cancel_ctx *k, bool ended, const char *step,
                struct store_error *err)
{
    struct job_rec *j = k->j;
    char line[256];
    const char *why = k->c->why && *k->c->why ? k->c->why : NULL;
    if (ended)
        snprintf(line, sizeof line, "cancelled by %s before it started%s%.120s", k->c->by,
                 why ? ": " : "", why ? why : "");
    else
        snprintf(line, sizeof line,
                 "cancel requested by %s%s%.120s%s: the job stops at its next step", k->c->by,
                 why ? " (" : "", why ? why : "", why ? ")" : "");
    int rc = store_event_add_in(c, j->id, FIELD_LEN(j->id), j->step, FIELD_LEN(j->step),
                                j->progress, line, err);
    if (rc)
        return rc;
    json_t *data = json_pack("{s:s%, s:s, s:s, s:b}", "kind", j->kind, FIELD_LEN(j->kind), "step",
                             step, "by", k->c->by, "ended", ended);
    if (why)
        json_object_set_new(data, "reason", json_string(why));
    return store_log_job_in(c, j, "job.cancelled", data, err);
}

static int cancel_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cancel_ctx *k = ctx;
    struct job_rec *j = k->j;
    int rc = read_locked(c, k, err);
    if (rc)
        return rc;
    if (j->cancel_at) {
        k->outcome = STORE_CANCEL_AGAIN;
        return STORE_OK;
    }
    if (job_state_final(j->state))
        return store_fail(err, STORE_E_CONFLICT, "job %s has finished (%s): nothing to cancel",
                          j->id, job_state_name(j->state));
    bool end = j->state == JOB_QUEUED;
    if (!end && k->c->queued_only) { /* decided under the row lock: a claim is before or after */
        k->outcome = STORE_CANCEL_RUNS;
        return STORE_OK;
    }
    int64_t now = wall_ms();
    char step[sizeof j->step];
    store_copy(step, sizeof step, j->step, FIELD_LEN(j->step));
    if ((rc = write_cancel(c, k, end, now, err)))
        return rc;
    /* what the submission held (only a creation's and a delete's hold
     * anything beyond the job row, which counts no more once it ended) */
    if (end && j->vmid &&
        ((rc = store_vm_unhold_in(c, k->s, j->id, j->vmid, k->c->error, err)) ||
         (strcmp(j->kind, "create") == 0 &&
          (rc = store_vmid_release_job_in(c, j->vmid, j->id, k->c->vmid_quarantine_ms, err)))))
        return rc;
    enum job_state old = j->state;
    j->cancel_at = now;
    snprintf(j->cancel_by, sizeof j->cancel_by, "%s", k->c->by);
    if (end) {
        j->state = JOB_FAILED;
        j->finished_at = j->updated_at = now;
        j->progress = 100;
        snprintf(j->error, sizeof j->error, "%s", k->c->error);
        snprintf(j->step, sizeof j->step, "failed");
    }
    k->outcome = end ? STORE_CANCEL_ENDED : STORE_CANCEL_ASKED;
    /* ended: a job behind it on the VM may be claimable now; asked: the
     * runner's process, whichever it is, looks for cancels of the jobs it
     * holds (store_job_cancels_held) and tells their waits (a clone's may
     * be a minute from its next look) */
    if (!end || j->vmid)
        db_notify_jobs(c);
    if ((rc = tell(c, k, end, step, err)))
        return rc;
    return store_event_job_in(c, j, old, err); /* job.failed, as any failed job's */
}

int store_job_cancel_in(db_conn *c, const store *s, const char *id,
                        const struct job_cancel_req *req, struct job_rec *out,
                        enum store_cancel *outcome, struct store_error *err)
{
    struct cancel_ctx k = {s, id, req, out, 0};
    int rc = cancel_fn(c, &k, err);
    *outcome = rc ? 0 : k.outcome;
    return rc;
}

int store_job_cancel(store *s, const char *id, const struct job_cancel_req *c, struct job_rec *out,
                     enum store_cancel *outcome, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id && c && c->by && c->error, "store_job_cancel: NULL argument");
    STORE_CHECK(*c->by, "store_job_cancel: who cancels is empty");
    STORE_CHECK(c->vmid_quarantine_ms >= 0, "quarantine of %lld ms is negative",
                (long long)c->vmid_quarantine_ms);
    struct job_rec j = {0};
    struct cancel_ctx k = {s, id, c, &j, 0};
    int rc = db_tx(s->db, DB_WRITE, cancel_fn, &k, err);
    if (outcome)
        *outcome = rc ? 0 : k.outcome;
    if (out && !rc)
        *out = j;
    else
        job_rec_release(&j);
    return rc;
}
