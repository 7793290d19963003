/* server: the libmicrohttpd daemon, request bodies, answers.
 *
 * Mode: MHD_USE_AUTO_INTERNAL_THREAD (epoll on Linux; select() would cap us
 * near 1,020 sockets) with a thread pool, and MHD_ALLOW_SUSPEND_RESUME so
 * event streams park instead of holding a thread. Every resource a client
 * can make us spend is bounded: connections (total and per IP), time per
 * idle connection, header memory, and the body (API_BODY_MAX -> 413). */
#include "api/api_int.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#define CONN_LIMIT 4096
#define PER_IP_LIMIT 512
#define CONN_MEMORY (64 * 1024)
/* proxd's own limits, well below what a connection may hold, so that
 * proxd answers (in JSON) before libmicrohttpd has to (in HTML) */
#define URI_MAX (8 * 1024)
#define HEADERS_MAX (16 * 1024)
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

static enum MHD_Result send_resp(struct req *rq, struct resp *rs)
{
    struct MHD_Response *r = rs->raw;
    if (!r) {
        char *text;
        if (rs->body && (text = json_dumps(rs->body, JSON_COMPACT)) != NULL) {
            rs->ctype = "application/json";
        } else if (rs->body || (!rs->text && rs->status >= 400)) {
            /* a body jansson could not write (it refuses text that is not
             * UTF-8), or an error with none: still the documented shape */
            text = error_json_text("internal", NULL, NULL, "the answer could not be encoded");
            json_decref(rs->body);
            rs->body = NULL;
            rs->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
            rs->ctype = "application/json";
            rs->text_len = 0;
        } else {
            text = rs->text ? rs->text : xstrdup("");
            rs->text = NULL;
        }
        size_t len = rs->body || !rs->text_len ? strlen(text) : rs->text_len;
        r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                rs->ctype ? rs->ctype : "text/plain");
    }
    if (rs->location[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, rs->location);
    if (rs->allow[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
    if (rs->retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", rs->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (rs->status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"proxd\"");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (rs->close) /* libmicrohttpd then closes the connection after the answer */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(rq->conn, rs->status, r);
    MHD_destroy_response(r);
    rs->raw = NULL;
    count_status(rq->api, rs->status);
    log_debug("api", "%s %s -> %u", rq->method, rq->path, rs->status);
    return ok;
}

static void resp_release(struct resp *rs)
{
    json_decref(rs->body);
    free(rs->text);
    if (rs->raw)
        MHD_destroy_response(rs->raw);
}

static enum MHD_Result answer(struct req *rq, struct resp *rs)
{
    enum MHD_Result ok = send_resp(rq, rs);
    resp_release(rs);
    return ok;
}

/* ---- requests ------------------------------------------------------------------ */

static bool declared_too_big(struct MHD_Connection *c)
{
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;
    return cl && parse_i64(cl, &n) && n > API_BODY_MAX;
}

/* Handlers may put a query argument into a JSON answer: one that is not
 * UTF-8 is refused here (the refusal's text replaces the bad bytes). */
static enum MHD_Result utf8_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    const char **bad = cls;
    if (jsonw_utf8_valid(key, strlen(key)) && (!value || jsonw_utf8_valid(value, strlen(value))))
        return MHD_YES;
    *bad = key;
    return MHD_NO;
}

static enum MHD_Result add_len(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* How the body is framed, checked before libmicrohttpd reads any of it.
 *
 * A Transfer-Encoding is refused (411): libmicrohttpd 0.9.75 parses chunked
 * bodies after proxd's first look at the request, and answers a malformed
 * chunk with its own HTML page, which proxd cannot replace; any other coding
 * it would read until the client closes. Bodies come with a Content-Length
 * (proxctl, curl and every HTTP library send one for a JSON body).
 *
 * A header name with a space or tab before its colon, or two Content-Length
 * headers that differ, are refused (400): libmicrohttpd keeps "Content-Length "
 * as another header and takes the first of two lengths, where a proxy in
 * front of proxd may read the request differently (request smuggling).
 *
 * Each refusal closes the connection: what follows the headers is never
 * read as another request. 0 when the framing is fine. */
struct framing {
    const char *te, *cl;
    bool cl_differ;
    const char *bad_name;
};

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (!f->bad_name && strpbrk(key, " \t"))
        f->bad_name = key;
    if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        f->te = value ? value : "";
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->cl && strcmp(f->cl, value ? value : "") != 0)
            f->cl_differ = true;
        f->cl = value ? value : "";
    }
    return MHD_YES;
}

static unsigned bad_framing(struct MHD_Connection *c, struct resp *rs)
{
    struct framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_header, &f);
    if (f.te)
        resp_error(rs, MHD_HTTP_LENGTH_REQUIRED, "length_required", "Transfer-Encoding",
                   "Transfer-Encoding is not accepted: send the body with a Content-Length");
    else if (f.bad_name)
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", "headers",
                   "a header name may not contain spaces or tabs");
    else if (f.cl_differ)
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", "Content-Length",
                   "Content-Length is given twice with different values");
    else
        return 0;
    rs->close = true;
    return rs->status;
}

/* 414 or 431 with the JSON error when the request line or the headers
 * pass proxd's limits; 0 when they do not. */
static unsigned oversize(struct MHD_Connection *c, const char *url, const char **what)
{
    size_t uri = strlen(url), hdr = 0;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_len, &uri);
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_len, &hdr);
    if (uri > URI_MAX) {
        *what = "the request's path and query";
        return MHD_HTTP_URI_TOO_LONG;
    }
    if (hdr > HEADERS_MAX) {
        *what = "the request's headers";
        return MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE;
    }
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct api *a = cls;
    struct req *rq = *con_cls;
    if (!rq) {
        deadlines_headers_done(a->dl, conn);
        rq = xcalloc(1, sizeof *rq);
        rq->api = a;
        rq->conn = conn;
        rq->method = method;
        rq->path = url;
        buf_init(&rq->body, API_BODY_MAX);
        *con_cls = rq;
        const char *what = NULL;
        unsigned big = oversize(conn, url, &what);
        if (big) {
            rq->started = true;
            struct resp rs = {0};
            resp_error(&rs, big,
                       big == MHD_HTTP_URI_TOO_LONG ? "uri_too_long" : "headers_too_large", NULL,
                       "%s may have at most %d bytes", what,
                       big == MHD_HTTP_URI_TOO_LONG ? URI_MAX : HEADERS_MAX);
            return answer(rq, &rs);
        }
        struct resp fr = {0};
        if (bad_framing(conn, &fr)) {
            rq->started = true;
            return answer(rq, &fr);
        }
        /* Refuse a declared oversize body before reading any of it. */
        if (declared_too_big(conn)) {
            rq->started = true;
            struct resp rs = {0};
            resp_error(&rs, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", NULL,
                       "the body may have at most %d bytes", API_BODY_MAX);
            return answer(rq, &rs);
        }
        return MHD_YES;
    }
    if (rq->started) {
        *size = 0; /* an answer is queued already: drop what is left */
        return MHD_YES;
    }
    if (*size) {
        if (!rq->too_big && buf_add(&rq->body, data, *size) != BUF_OK)
            rq->too_big = true; /* keep reading (and dropping) to answer cleanly */
        *size = 0;
        return MHD_YES;
    }
    rq->started = true;
    struct resp rs = {.status = MHD_HTTP_OK};
    const char *bad = NULL;
    if (rq->too_big)
        resp_error(&rs, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", NULL,
                   "the body may have at most %d bytes", API_BODY_MAX);
    else if (MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, utf8_arg, &bad) >= 0 && bad)
        resp_error(&rs, MHD_HTTP_BAD_REQUEST, "invalid", bad,
                   "%s: the query string must be UTF-8 once percent-decoded", bad);
    else
        router_dispatch(rq, &rs);
    return answer(rq, &rs);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct api *a = cls;
    deadlines_answered(a->dl, conn); /* the next request line is awaited */
    struct req *rq = *con_cls;
    if (!rq)
        return;
    buf_release(&rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("api", "libmicrohttpd: %s", msg);
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

struct api *api_start(const struct proxd_config *cfg, struct core *k, store *st, struct fleet *fl,
                      char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (resolve(cfg->listen, &ss, err, errlen))
        return NULL;
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
    a->dl =
        deadlines_new(cfg->idle_timeout_s, cfg->header_timeout_s > 0 ? cfg->header_timeout_s : 10);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, pool_size(), MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONN_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_IP_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)MEM_THREAD_STACK, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, a, MHD_OPTION_NOTIFY_CONNECTION, deadlines_on_connection, a->dl,
        MHD_OPTION_URI_LOG_CALLBACK, deadlines_on_request_line, a->dl, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, a, MHD_OPTION_END);
    if (!a->d) {
        snprintf(err, errlen, "listen %s: cannot start the HTTP server (address in use?)",
                 cfg->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    a->port = di ? di->port : 0;
    log_info("api", "listening on %s (port %d, %u threads)", cfg->listen, a->port, pool_size());
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
    /* Suspended connections must all be resumed before MHD_stop_daemon. */
    if (a->hub) {
        sse_hub_shutdown(a->hub);
        if (!sse_hub_drain(a->hub, STREAM_DRAIN_MS))
            log_warn("api", "event streams still open at shutdown: closing them");
    }
    if (a->d)
        MHD_stop_daemon(a->d);
    sse_hub_free(a->hub);
    deadlines_free(a->dl);
    for (int i = 0; i < API_IDEM_STRIPES; i++)
        pthread_mutex_destroy(&a->idem[i]);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
