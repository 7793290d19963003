/* routes_jobs: GET /v1/jobs/{id} (the stream is in sse.c). Like VMs, a
 * user's view of another owner's job is a 404. */
#include "api/api_int.h"

#include <stdio.h>
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
        resp_error(rs, HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL, "%s", se.message);
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

void h_job_get(struct req *rq, struct resp *rs)
{
    struct job_rec j;
    if (check_query(rq, rs, NULL) || job_visible(rq, rs, rq->params[0], &j))
        return;
    resp_json(rs, HTTP_OK, job_to_json(&j));
    job_rec_release(&j);
}
