/* server: the HTTP server's options, the requests' way to the router, and
 * the answers.
 *
 * The connections are http.c's (epoll loop, a few workers): every resource
 * a client can make us spend is bounded there - connections (total and
 * per IP), time per idle connection and per request head, header memory,
 * and the body (API_BODY_MAX -> 413) - and every refusal it makes itself
 * is the JSON error shape, written here (refusal_body). */
#include "api/api_int.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CONN_LIMIT 4096
#define PER_IP_LIMIT 512
#define POOL_MAX 16
#define STREAM_DRAIN_MS 2000

/* ---- answers ---------------------------------------------------------------- */

static void count_status(struct api *a, unsigned status)
{
    unsigned cls = status / 100;
    pthread_mutex_lock(&a->mu);
    if (cls >= 1 && cls <= 5)
        a->requests[cls]++;
    pthread_mutex_unlock(&a->mu);
}

static void send_resp(struct req *rq, struct resp *rs)
{
    struct http_req *hr = rq->hr;
    if (rs->location[0])
        http_add_header(hr, "Location", rs->location);
    if (rs->allow[0])
        http_add_header(hr, "Allow", rs->allow);
    if (rs->retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", rs->retry_after);
        http_add_header(hr, "Retry-After", ra);
    }
    if (rs->status == HTTP_UNAUTHORIZED)
        http_add_header(hr, "WWW-Authenticate", "Bearer realm=\"proxd\"");
    http_add_header(hr, "Cache-Control", "no-store");
    if (rs->close)
        http_close_after(hr);
    if (!rs->streamed) {
        char *text;
        if (rs->body && (text = json_dumps(rs->body, JSON_COMPACT)) != NULL) {
            rs->ctype = "application/json";
        } else if (rs->body || (!rs->text && rs->status >= 400)) {
            /* a body jansson could not write (it refuses text that is not
             * UTF-8), or an error with none: still the documented shape */
            text = error_json_text("internal", NULL, NULL, "the answer could not be encoded");
            rs->status = HTTP_INTERNAL_SERVER_ERROR;
            rs->ctype = "application/json";
            rs->text_len = 0;
        } else {
            text = rs->text ? rs->text : xstrdup("");
            rs->text = NULL;
        }
        size_t len = rs->body || !rs->text_len ? strlen(text) : rs->text_len;
        http_respond(hr, rs->status, rs->ctype ? rs->ctype : "text/plain", text, len);
    }
    json_decref(rs->body);
    free(rs->text);
    count_status(rq->api, rs->status);
    log_debug("api", "%s %s -> %u", rq->method, rq->path, rs->status);
}

/* ---- requests ------------------------------------------------------------------ */

/* Handlers may put a query argument into a JSON answer: one that is not
 * UTF-8 is refused here (the refusal's text replaces the bad bytes). */
static const char *non_utf8_arg(struct http_req *hr)
{
    const char *k, *v;
    for (size_t i = 0; http_req_arg(hr, i, &k, &v); i++)
        if (!jsonw_utf8_valid(k, strlen(k)) || !jsonw_utf8_valid(v, strlen(v)))
            return k;
    return NULL;
}

/* On a worker of the HTTP server (or its loop thread, runs_inline): one
 * whole request. */
static void on_request(void *cls, struct http_req *hr)
{
    struct req rq = {.api = cls, .hr = hr};
    rq.method = http_req_method(hr);
    rq.path = http_req_path(hr);
    struct resp rs = {.status = HTTP_OK};
    const char *bad = non_utf8_arg(hr);
    if (bad)
        resp_error(&rs, HTTP_BAD_REQUEST, "invalid", bad,
                   "%s: the query string must be UTF-8 once percent-decoded", bad);
    else
        router_dispatch(&rq, &rs);
    send_resp(&rq, &rs);
}

/* On the HTTP server's loop thread: may on_request run there for hr? */
static bool runs_inline(void *cls, const struct http_req *hr)
{
    return router_inline(http_req_method(hr), http_req_path(hr));
}

/* The body of a refusal the HTTP server makes (malformed request). */
static char *refusal_body(void *cls, unsigned status, const char *code, const char *field,
                          const char *msg)
{
    count_status(cls, status);
    return error_json_text(code, field, NULL, msg);
}

/* ---- start and stop ---------------------------------------------------------------- */

/* systemd starts services with a soft limit of 1024 descriptors; with epoll
 * nothing stops us from using the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("api", "cannot raise the open file limit to %llu",
                     (unsigned long long)rl.rlim_max);
    }
}

/* "host:port" or "[v6]:port" into a socket address. */
static int resolve(const char *listen, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    char host[128];
    const char *port;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(end - listen - 1), listen + 1);
        port = end + 2;
    } else {
        const char *c = strrchr(listen, ':');
        if (!c || (size_t)(c - listen) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(c - listen), listen);
        port = c + 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s: %s", listen, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
bad:
    snprintf(err, errlen, "listen %s: expected host:port or [v6-address]:port", listen);
    return -1;
}

static unsigned pool_size(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 2 ? 2 : n > POOL_MAX ? POOL_MAX : (unsigned)n;
}

void api_sock_text(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN + 1], port[8];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, len, "socket %d", fd);
        return;
    }
    snprintf(out, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

int api_listen(const struct proxd_config *cfg, int *port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (resolve(cfg->listen, &ss, err, errlen))
        return -1;
    char herr[160];
    socklen_t len =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = http_listen((struct sockaddr *)&ss, len, port, herr, sizeof herr);
    if (fd < 0)
        snprintf(err, errlen, "listen %s: %s", cfg->listen, herr);
    return fd;
}

struct http_server *api_http_start(const struct proxd_config *cfg, int listen_fd,
                                   struct http_options *o, char *err, size_t errlen)
{
    o->listen_fd = listen_fd;
    o->idle_timeout_s = cfg->idle_timeout_s;
    o->header_timeout_s = cfg->header_timeout_s > 0 ? cfg->header_timeout_s : 10;
    o->body_max = API_BODY_MAX;
    char herr[160];
    struct http_server *s = http_server_start(o, herr, sizeof herr);
    if (!s)
        snprintf(err, errlen, "listen %s: cannot start the HTTP server: %s", cfg->listen, herr);
    return s;
}

struct api *api_start(const struct proxd_config *cfg, struct core *k, store *st, struct fleet *fl,
                      int listen_fd, char *err, size_t errlen)
{
    struct api *a = xcalloc(1, sizeof *a);
    a->cfg = cfg;
    a->k = k;
    a->st = st;
    a->fl = fl;
    a->started_ms = wall_ms();
    pthread_mutex_init(&a->mu, NULL);
    for (int i = 0; i < API_IDEM_STRIPES; i++)
        pthread_mutex_init(&a->idem[i], NULL);
    if (auth_init(st, a->key, err, errlen))
        goto fail;
    raise_nofile();
    a->hub = sse_hub_new(a);
    struct http_options o = {
        .conn_limit = CONN_LIMIT,
        .per_ip_limit = PER_IP_LIMIT,
        .workers = pool_size(),
        .handler = on_request,
        .runs_inline = runs_inline,
        .error_body = refusal_body,
        .cls = a,
    };
    if (!(a->http = api_http_start(cfg, listen_fd, &o, err, errlen)))
        goto fail;
    a->port = http_server_port(a->http);
    char addr[96];
    api_sock_text(listen_fd, addr, sizeof addr);
    log_info("api", "listening on %s (%u threads)", addr, pool_size());
    return a;
fail:
    api_stop(a);
    return NULL;
}

int api_port(const struct api *a)
{
    return a ? a->port : 0;
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    /* Every stream writes its end; the server then has STREAM_DRAIN_MS to
     * get those ends (and answers being written) out. */
    if (a->hub)
        sse_hub_shutdown(a->hub);
    http_server_stop(a->http, STREAM_DRAIN_MS);
    sse_hub_free(a->hub);
    for (int i = 0; i < API_IDEM_STRIPES; i++)
        pthread_mutex_destroy(&a->idem[i]);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
