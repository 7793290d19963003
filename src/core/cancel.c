/* cancel: a job's cancel (core.h core_job_cancel), and what the runners
 * share to honour it (core_int.h job_cancel_*). The request lives in the
 * store (store_job_cancel): a queued job ends there at once, a running one
 * learns of it at its next checkpoint, in whichever instance runs it. Its
 * waits registered for it (a creation's or a reinstall's clone, a drain's
 * nap between its looks) are told at once too, so that it need not sleep to
 * its next look first: in this instance here (core_waiters_cancel); in
 * another, the store's jobs watch tells the runner's process, which reads
 * the cancels of the jobs it holds (core.c tell_cancels,
 * store_job_cancels_held). An uncordon cancels the node's drain so too
 * (cordon.c). */
#include "common/log.h"
#include "core/core_int.h"

#include <stdio.h>
#include <string.h>

int core_job_cancel(struct core *k, const char *id, const char *by, struct job_rec *out,
                    enum store_cancel *outcome, struct core_error *err)
{
    char error[160];
    snprintf(error, sizeof error, "cancelled by %.63s before it started", by);
    struct job_cancel_req rq = {
        .by = by, .error = error, .vmid_quarantine_ms = (int64_t)k->cfg->quarantine_s * 1000};
    struct store_error se;
    int rc = store_job_cancel(k->st, id, &rq, out, outcome, &se);
    if (rc == STORE_E_NOTFOUND)
        return core_fail(err, CORE_E_NOTFOUND, NULL, "no job %s", id);
    if (rc == STORE_E_CONFLICT)
        return core_fail(err, CORE_E_CONFLICT, "job", "%s", se.message);
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    /* a wait of the job's in this process ends now rather than at its next
     * look (a clone's may be a minute away); another instance running it
     * is told through its jobs watch (the cancel's commit tells it) */
    if (*outcome == STORE_CANCEL_ASKED)
        core_waiters_cancel(k, id);
    if (*outcome != STORE_CANCEL_AGAIN)
        log_info("job", "job=%s kind=%s vmid=%d cancel by %s: %s", id, out->kind, out->vmid, by,
                 *outcome == STORE_CANCEL_ENDED ? "ended (it was queued)"
                                                : "asked (it stops at its next step)");
    return CORE_OK;
}

bool job_cancel_read(struct core *k, struct job_rec *j)
{
    struct job_rec now;
    if (!j->cancel_at && store_job_get(k->st, j->id, &now, NULL) == 0) {
        j->cancel_at = now.cancel_at;
        snprintf(j->cancel_by, sizeof j->cancel_by, "%s", now.cancel_by);
        job_rec_release(&now);
    }
    return job_cancel_asked(j);
}

bool job_cancel_asked(const struct job_rec *j)
{
    return j->cancel_at != 0 && j->state != JOB_DONE && j->state != JOB_FAILED;
}

void job_cancel_error(const struct job_rec *j, const char *step, char *out, size_t len,
                      const char *what)
{
    snprintf(out, len, "cancelled by %.63s at step %.31s%s%s", j->cancel_by,
             step && *step ? step : j->step, what && *what ? ": " : "", what ? what : "");
}
