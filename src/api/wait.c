/* wait: what proxd answers while it opens its database at start, and
 * waits for it when it does not answer.
 *
 * Before, proxd listened only once its database answered: during a
 * PostgreSQL outage at boot its port refused connections, so a load
 * balancer, `proxctl status` and an operator's curl all said "connection
 * refused", as if proxd were not running at all, and a port another
 * program had taken was told only when the outage ended. Now the port is
 * bound first (api_listen) and this small server answers on it until the
 * real one takes the socket over. It needs nothing of proxd's world: every
 * answer is made on the HTTP loop thread from what is stored here.
 *
 * It answers only once the database is slow (WAIT_GRACE_MS) or has failed
 * a try: a healthy database opens in milliseconds, and a client connecting
 * then is better held in the socket's backlog and served by the real
 * server than told 503 (a restart under load gave every request of those
 * milliseconds a `starting`, an error to a client that does not ask
 * again). */
#include "api/api.h"
#include "api/api_int.h"
#include "api/http.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Its few requests are answered inline: one worker is the least the
 * server starts. */
#define WAIT_CONN_LIMIT 256
#define WAIT_PER_IP_LIMIT 64
#define WAIT_RETRY_AFTER "5"
#define WAIT_DRAIN_MS 1000
/* Held in the backlog this long at most: well under a client's usual 5 to
 * 30 s timeout, well over a healthy open (SQLite: a few ms; PostgreSQL: a
 * connect and a schema look) */
#define WAIT_GRACE_MS 2000

struct api_wait {
    const struct proxd_config *cfg; /* borrowed, for the server's start */
    int listen_fd;                  /* borrowed */
    int64_t since_ms;               /* the wait's start (wall clock, for the message) */
    atomic_int tries;               /* tries to open the database that failed so far */
    int nodes;                      /* configured, for /readyz's shape */
    pthread_t starter;              /* starts the server after the grace or a failed try */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;            /* under mu: api_wait_stop was called */
    struct http_server *http; /* under mu: NULL until started */
};

static void wait_text(struct api_wait *w, char *out, size_t len)
{
    char since[JSONW_TIME_MAX + 1];
    jsonw_fmt_time(since, w->since_ms);
    int tries = atomic_load(&w->tries);
    if (tries == 0)
        snprintf(out, len, "proxd is starting: it is opening its database (since %s)", since);
    else
        snprintf(out, len,
                 "proxd is starting: its database does not answer yet (%d failed tr%s since %s; "
                 "the detail is in proxd's log); it serves once the database answers",
                 tries, tries == 1 ? "y" : "ies", since);
}

static void answer(struct http_req *rq, unsigned status, char *body)
{
    http_add_header(rq, "Cache-Control", "no-store");
    if (status == HTTP_SERVICE_UNAVAILABLE)
        http_add_header(rq, "Retry-After", WAIT_RETRY_AFTER);
    http_respond(rq, status, "application/json", body, strlen(body));
}

static void on_request(void *cls, struct http_req *rq)
{
    struct api_wait *w = cls;
    const char *method = http_req_method(rq), *path = http_req_path(rq);
    bool get = strcmp(method, "GET") == 0;
    char msg[320];
    wait_text(w, msg, sizeof msg);
    if (get && strcmp(path, "/healthz") == 0) {
        answer(rq, HTTP_OK, xstrdup("{\"status\":\"ok\"}"));
        return;
    }
    if (get && strcmp(path, "/readyz") == 0) {
        json_t *o = json_pack("{s:s,s:b,s:s,s:i,s:i}", "status", "not_ready", "database", 0,
                              "database_error", msg, "nodes_up", 0, "nodes", w->nodes);
        char *text = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        answer(rq, HTTP_SERVICE_UNAVAILABLE, text ? text : xstrdup("{}"));
        return;
    }
    /* "starting" while the database opens (clients such as proxctl ask
     * again a moment later); "unavailable", as for a database gone while
     * proxd runs, once it did not answer (they tell it at once) */
    const char *code = atomic_load(&w->tries) ? "unavailable" : "starting";
    answer(rq, HTTP_SERVICE_UNAVAILABLE, error_json_text(code, NULL, NULL, msg));
}

static bool runs_inline(void *cls, const struct http_req *rq)
{
    (void)cls;
    (void)rq;
    return true;
}

static char *refusal_body(void *cls, unsigned status, const char *code, const char *field,
                          const char *msg)
{
    (void)cls;
    (void)status;
    return error_json_text(code, field, NULL, msg);
}

/* The starter thread: the server is started at the grace's end or at the
 * first failed try, whichever comes first, unless the wait ended before. */
static void *starter_main(void *arg)
{
    struct api_wait *w = arg;
    struct timespec until = deadline_in_ms(WAIT_GRACE_MS);
    pthread_mutex_lock(&w->mu);
    while (!w->stopping && atomic_load(&w->tries) == 0)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT)
            break;
    if (!w->stopping) {
        struct http_options o = {
            .conn_limit = WAIT_CONN_LIMIT,
            .per_ip_limit = WAIT_PER_IP_LIMIT,
            .workers = 1,
            .handler = on_request,
            .runs_inline = runs_inline,
            .error_body = refusal_body,
            .cls = w,
        };
        char err[256];
        if (!(w->http = api_http_start(w->cfg, w->listen_fd, &o, err, sizeof err)))
            log_warn("proxd", "%s: the port answers once the database does", err);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct api_wait *api_wait_start(const struct proxd_config *cfg, int listen_fd, char *err,
                                size_t errlen)
{
    struct api_wait *w = xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->listen_fd = listen_fd;
    w->since_ms = wall_ms();
    w->nodes = cfg->nnodes;
    pthread_mutex_init(&w->mu, NULL);
    cond_init_mono(&w->cv);
    if (mem_thread_start(&w->starter, starter_main, w) != 0) {
        snprintf(err, errlen, "cannot start a thread");
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void api_wait_tried(struct api_wait *w, int tries)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->tries, tries);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void api_wait_stop(struct api_wait *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->starter, NULL);
    if (w->http)
        http_server_stop(w->http, WAIT_DRAIN_MS);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
