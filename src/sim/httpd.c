/* httpd: pvesim's HTTP/1.1 + TLS server (contract and wire behaviour in httpd.h).
 *
 * Structure:
 *  - one accept thread per listener. It alone owns the listening socket, so
 *    mode changes (close, rebind) are applied by it: httpd_set_mode posts the
 *    wanted mode, wakes it through a self-pipe and waits for the result. This
 *    avoids closing a socket another thread is polling.
 *  - one joinable thread per connection. Finished threads flag themselves and
 *    are joined by their listener's accept thread (on its next wake-up), so
 *    httpd_free really joins everything and no OpenSSL thread cleanup can run
 *    after it returns.
 *  - to stop a connection (REFUSE, httpd_free) the controller sets conn->stop
 *    and shutdown()s its socket under the listener lock; every blocking wait of
 *    a connection is a poll() on that socket, so it wakes at once. The fd is
 *    closed only by its own thread, after unregistering, so a shutdown never
 *    hits a reused descriptor.
 *  - the hot path (one request) takes no lock: the listener mode is an atomic.
 *
 * Sockets are non-blocking; every read and write has a deadline. Connection
 * threads block SIGPIPE (OpenSSL's socket BIO uses write(2)), plain writes use
 * MSG_NOSIGNAL. */
#define _GNU_SOURCE /* accept4, pipe2, strcasestr */
#include "sim/httpd.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0x2000
#endif

enum {
    MAX_CONNS = 512,       /* per httpd; beyond it accept-and-close */
    MAX_HELD = 512,        /* blackholed sockets held per listener */
    HEAD_MAX = 8 * 1024,   /* request line + headers */
    HEAD_LINES_MAX = 64,   /* header lines */
    BODY_MAX = 512 * 1024, /* "501 for data too large" */
    KEEPALIVE_MAX = 100,   /* requests per connection */
    IDLE_MS = 5000,        /* wait for a (next) request */
    PEEK_MS = 5000,        /* wait for the first byte: TLS or plain? */
    HANDSHAKE_MS = 10000,  /* TLS handshake */
    REQUEST_MS = 30000,    /* whole request once started (slowloris bound) */
    WRITE_MS = 30000,      /* whole response */
    LINGER_MS = 2000,      /* drain unread input before close */
    LINGER_BYTES = 1024 * 1024,
    TICK_MS = 50,         /* re-check period while sleeping or hanging */
    ACCEPT_TICK_MS = 250, /* accept thread: reap finished threads */
    INBUF = 16 * 1024,
    FILE_PIECE = 256 * 1024, /* a file body is read and sent this much at a time */
    THREAD_STACK = 1024 * 1024,
};

static const char SERVER_HDR[] = "pve-api-daemon/3.0";

struct listener;

struct conn {
    struct conn *prev, *next; /* in listener->conns, guarded by its mu */
    struct listener *l;
    pthread_t tid;
    int fd;           /* guarded by l->mu for others; -1 once closed */
    bool finished;    /* guarded by l->mu: thread done, join it */
    atomic_bool stop; /* set with shutdown(fd): give up now */
    SSL *ssl;         /* NULL for plain HTTP */
    bool linger;      /* drain input before close (we answered and close) */
    char peer[64];
    size_t inoff, inlen; /* unparsed bytes in[inoff..inlen) (pipelining) */
    char in[INBUF];
};

struct listener {
    httpd *d;
    int id;
    void *ctx;
    struct sockaddr_storage addr; /* bound address, with the actual port */
    socklen_t alen;
    pthread_t tid;
    int wake[2]; /* self-pipe to the accept thread */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* mode change applied, connection finished, quit */
    struct conn *conns;
    size_t nlive; /* connections not yet finished */
    enum httpd_mode want;
    unsigned req_seq, done_seq;
    int result;
    bool quit;

    atomic_int mode; /* read lock-free by connection threads */
    atomic_uint gen; /* bumped on every mode change */

    /* owned by the accept thread */
    int fd; /* listening socket, -1 while refusing */
    int held[MAX_HELD];
    size_t nheld;
};

struct httpd {
    http_handler handler;
    void *ctx;
    SSL_CTX *ssl;
    atomic_int nconn;
    pthread_mutex_t mu; /* the listener table; control path only */
    struct listener **ls;
    size_t nls;
};

/* ---- small helpers ------------------------------------------------------ */

static char *ssl_errstr(const char *what)
{
    char msg[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, msg, sizeof msg);
    ERR_clear_error();
    return xasprintf("%s: %s", what, msg);
}

static void block_sigpipe(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void wake(struct listener *l)
{
    char c = 1;
    /* a full pipe already means "wake up": ignore EAGAIN */
    ssize_t r = write(l->wake[1], &c, 1);
    (void)r;
}

static void sock_peer(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%u", ip, port);
        return;
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(out, n, "%s:%u", ip, port);
}

/* Wait until fd is ready for `ev` or the deadline passes: 1 ready (or
 * hung up: the next I/O call reports it), 0 timeout, -1 error. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ---- connection I/O ----------------------------------------------------- */

/* Read up to n bytes: >0 bytes, 0 orderly EOF, -1 error, timeout or stop. */
static ssize_t conn_read(struct conn *c, void *p, size_t n, int64_t deadline)
{
    for (;;) {
        short ev = POLLIN;
        if (atomic_load(&c->stop))
            return -1;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
            if (r > 0)
                return r;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if (e == SSL_ERROR_WANT_WRITE)
                ev = POLLOUT;
            else if (e != SSL_ERROR_WANT_READ)
                return -1;
        } else {
            ssize_t r = recv(c->fd, p, n, 0);
            if (r >= 0)
                return r;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
        }
        if (wait_fd(c->fd, ev, deadline) <= 0)
            return -1;
    }
}

static int conn_write(struct conn *c, const void *p, size_t n, int64_t deadline)
{
    const char *s = p;
    while (n > 0) {
        short ev = POLLOUT;
        size_t chunk = n > INT_MAX ? INT_MAX : n;
        if (atomic_load(&c->stop))
            return -1;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, s, (int)chunk);
            if (r > 0) {
                s += r;
                n -= (size_t)r;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                ev = POLLIN;
            else if (e != SSL_ERROR_WANT_WRITE)
                return -1;
        } else {
            ssize_t r = send(c->fd, s, chunk, MSG_NOSIGNAL);
            if (r > 0) {
                s += r;
                n -= (size_t)r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return -1;
        }
        if (wait_fd(c->fd, ev, deadline) <= 0)
            return -1;
    }
    return 0;
}

static int tls_handshake(struct conn *c, SSL_CTX *ctx)
{
    int64_t deadline = mono_ms() + HANDSHAKE_MS;
    if (!(c->ssl = SSL_new(ctx)) || !SSL_set_fd(c->ssl, c->fd))
        return -1;
    for (;;) {
        short ev = POLLIN;
        if (atomic_load(&c->stop))
            return -1;
        ERR_clear_error();
        int r = SSL_accept(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE)
            ev = POLLOUT;
        else if (e != SSL_ERROR_WANT_READ)
            return -1;
        if (wait_fd(c->fd, ev, deadline) <= 0)
            return -1;
    }
}

/* Sleep ms, giving up early when the connection is stopped. */
static bool nap(struct conn *c, long ms)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        if (atomic_load(&c->stop))
            return false;
        int64_t left = end - mono_ms();
        if (left <= 0)
            return true;
        poll(NULL, 0, left < TICK_MS ? (int)left : TICK_MS);
    }
}

/* Hold the connection without reading or answering until the peer closes,
 * the connection is stopped, or the listener's mode generation moves on. */
static void hang(struct conn *c, unsigned gen)
{
    while (!atomic_load(&c->stop) && atomic_load(&c->l->gen) == gen) {
        /* POLLRDHUP only: pending request bytes must not make this spin */
        struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
        int r = poll(&p, 1, TICK_MS * 2);
        if (r > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
            return;
        if (r < 0 && errno != EINTR)
            return;
    }
}

/* A blackholed listener answers nothing: hang until that changes. Returns
 * true when the caller must close the connection instead of answering. */
static bool blackholed(struct conn *c)
{
    unsigned gen = atomic_load(&c->l->gen);
    if (atomic_load(&c->l->mode) == HTTPD_UP)
        return atomic_load(&c->stop);
    hang(c, gen);
    return true;
}

/* ---- request parsing ---------------------------------------------------- */

struct hoff {
    size_t name, value; /* offsets into rq.head */
};

struct rq {
    http_parser p;
    bool plain;      /* plain HTTP: stop after the headers */
    struct buf head; /* "url\0name\0value\0..." */
    struct hoff h[HEAD_LINES_MAX];
    size_t nh;
    int last; /* 0 url, 1 header name, 2 header value */
    struct buf body;
    bool headers_done, done;
    int err; /* HTTP-layer error status to answer, 0 none */
    char *errmsg;
};

static void rq_init(struct rq *q, bool plain)
{
    memset(q, 0, sizeof *q);
    q->plain = plain;
    buf_init(&q->head, HEAD_MAX);
    buf_init(&q->body, BODY_MAX);
}

static void rq_free(struct rq *q)
{
    buf_release(&q->head);
    buf_release(&q->body);
    free(q->errmsg);
}

/* Record an HTTP-layer error (first one wins) and stop the parser. */
static int rq_fail(struct rq *q, int status, char *msg)
{
    if (!q->err) {
        q->err = status;
        q->errmsg = msg;
    } else {
        free(msg);
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&q->p);
    if (e == HPE_OK || e == HPE_PAUSED) /* pausing a failed parser aborts */
        http_parser_pause(&q->p, 1);
    return 0;
}

static int too_large(struct rq *q)
{
    return rq_fail(q, 400, xstrdup("Bad Request"));
}

static const char *rq_str(const struct rq *q, size_t off)
{
    return q->head.data + off;
}

static const char *rq_header(const struct rq *q, const char *name)
{
    for (size_t i = 0; i < q->nh; i++)
        if (strcasecmp(rq_str(q, q->h[i].name), name) == 0)
            return rq_str(q, q->h[i].value);
    return NULL;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct rq *q = p->data;
    return buf_add(&q->head, at, n) ? too_large(q) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct rq *q = p->data;
    if (q->last != 1) {
        /* a new header: end the previous string (url or value) */
        if (q->nh == HEAD_LINES_MAX || buf_addc(&q->head, '\0'))
            return too_large(q);
        q->h[q->nh].name = q->head.len;
        q->h[q->nh].value = SIZE_MAX;
        q->nh++;
        q->last = 1;
    }
    return buf_add(&q->head, at, n) ? too_large(q) : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct rq *q = p->data;
    if (q->last != 2) {
        if (buf_addc(&q->head, '\0'))
            return too_large(q);
        q->h[q->nh - 1].value = q->head.len;
        q->last = 2;
    }
    return buf_add(&q->head, at, n) ? too_large(q) : 0;
}

/* The transfer-encoding and size checks pveproxy makes before the body. */
static int check_body(struct rq *q)
{
    const char *te = rq_header(q, "Transfer-Encoding");
    if (te) {
        if (strcasestr(te, "chunked"))
            return rq_fail(q, 501, xstrdup("chunked transfer encoding not supported"));
        return rq_fail(q, 501, xasprintf("Unknown transfer encoding '%s'", te));
    }
    if (q->p.content_length != ULLONG_MAX && q->p.content_length > BODY_MAX)
        return rq_fail(q, 501, xstrdup("for data too large"));
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct rq *q = p->data;
    if (buf_addc(&q->head, '\0'))
        return too_large(q);
    /* a name without any value callback: give it an empty value */
    if (q->nh && q->h[q->nh - 1].value == SIZE_MAX) {
        if (buf_addc(&q->head, '\0'))
            return too_large(q);
        q->h[q->nh - 1].value = q->head.len - 1;
    }
    q->headers_done = true;
    if (q->plain) {
        q->done = true;
        http_parser_pause(p, 1);
        return 0;
    }
    return check_body(q);
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct rq *q = p->data;
    if (buf_add(&q->body, at, n))
        return rq_fail(q, 501, xstrdup("for data too large"));
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct rq *q = p->data;
    q->done = true;
    /* stop here so that pipelined bytes stay for the next request */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Map a parser failure to the answer pveproxy would give. */
static void parse_failed(struct rq *q)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&q->p);
    /* http-parser rejects "Transfer-Encoding: x" with a body length itself;
     * report it as pveproxy does */
    if ((e == HPE_INVALID_TRANSFER_ENCODING || e == HPE_UNEXPECTED_CONTENT_LENGTH) &&
        rq_header(q, "Transfer-Encoding"))
        check_body(q);
    if (e == HPE_HEADER_OVERFLOW)
        too_large(q);
    rq_fail(q, 400, xstrdup("Bad Request"));
}

static int send_continue(struct conn *c, struct rq *q)
{
    const char *exp = rq_header(q, "Expect");
    if (!exp || strcasecmp(exp, "100-continue") != 0 || q->p.http_minor == 0)
        return 0;
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return conn_write(c, msg, sizeof msg - 1, mono_ms() + WRITE_MS);
}

/* Read one request into q. 1: a request (or q->err to answer); 0: the peer
 * closed or idled out before a request started; -1: broken mid-request.
 * Either non-1 result closes the connection silently. */
static int read_request(struct conn *c, struct rq *q)
{
    bool started = c->inoff < c->inlen;
    int64_t deadline = mono_ms() + (started ? REQUEST_MS : IDLE_MS);
    bool continued = false;

    http_parser_init(&q->p, HTTP_REQUEST);
    q->p.data = q;
    for (;;) {
        if (c->inoff == c->inlen) {
            c->inoff = c->inlen = 0;
            ssize_t n = conn_read(c, c->in, sizeof c->in, deadline);
            if (n <= 0)
                return started ? -1 : 0;
            if (!started) {
                started = true;
                deadline = mono_ms() + REQUEST_MS;
            }
            c->inlen = (size_t)n;
        }
        size_t avail = c->inlen - c->inoff;
        size_t used = http_parser_execute(&q->p, &parser_settings, c->in + c->inoff, avail);
        c->inoff += used > avail ? avail : used;
        enum http_errno e = HTTP_PARSER_ERRNO(&q->p);
        if (e == HPE_PAUSED)
            http_parser_pause(&q->p, 0);
        else if (e != HPE_OK)
            parse_failed(q);
        if (q->err || q->done)
            return 1;
        if (q->headers_done && !continued) {
            continued = true;
            if (send_continue(c, q))
                return -1;
        }
    }
}

/* ---- responses ---------------------------------------------------------- */

static const char *std_reason(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return strcmp(s, "<unknown>") == 0 ? "Unknown" : s;
}

/* Length of the usable first line of a reason phrase; 0 when it is empty
 * or would still contain control characters (then the standard one is used). */
static size_t reason_len(const char *r)
{
    if (!r)
        return 0;
    size_t n = strcspn(r, "\n");
    if (n && r[n - 1] == '\r')
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)r[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return n;
}

static bool clean_value(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

/* RFC 1123 date, always in English (no locale). */
static void add_date(struct buf *o, const char *name, const struct tm *tm)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    buf_printf(o, "%s: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", name, days[tm->tm_wday % 7],
               tm->tm_mday, mons[tm->tm_mon % 12], tm->tm_year + 1900, tm->tm_hour, tm->tm_min,
               tm->tm_sec);
}

/* Send the first len bytes of file fd, a piece at a time. */
static int send_file(struct conn *c, int fd, size_t len, int64_t deadline)
{
    char *piece = xmalloc(FILE_PIECE);
    int rc = 0;
    for (off_t off = 0; rc == 0 && (size_t)off < len;) {
        size_t want = len - (size_t)off < FILE_PIECE ? len - (size_t)off : FILE_PIECE;
        ssize_t n = pread(fd, piece, want, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) { /* the file shrank: the length sent cannot be kept */
            rc = -1;
            break;
        }
        rc = conn_write(c, piece, (size_t)n, deadline);
        off += n;
    }
    free(piece);
    return rc;
}

/* Serialise and send a response. keep: announce keep-alive. */
static int send_response(struct conn *c, const struct http_resp *r, int minor, bool keep,
                         bool head_only)
{
    struct buf o = BUF_INIT(BUF_UNLIMITED);
    int status = r->status >= 100 && r->status <= 999 ? r->status : 500;
    size_t rl = reason_len(r->reason);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    const char *body = r->shared ? r->shared : r->body.data;
    size_t blen = r->shared ? r->shared_len : r->body.len;
    struct stat st;
    if (r->body_fd >= 0) {
        if (fstat(r->body_fd, &st) != 0)
            return -1;
        body = NULL;
        blen = (size_t)st.st_size;
    }

    if (rl)
        buf_printf(&o, "HTTP/1.%d %d %.*s\r\n", minor, status, (int)rl, r->reason);
    else
        buf_printf(&o, "HTTP/1.%d %d %s\r\n", minor, status, std_reason(status));
    buf_printf(&o, "Cache-Control: max-age=0\r\nConnection: %s\r\n", keep ? "Keep-Alive" : "close");
    add_date(&o, "Date", &tm);
    buf_printf(&o, "Pragma: no-cache\r\nServer: %s\r\n", SERVER_HDR);
    if (clean_value(r->content_type))
        buf_printf(&o, "Content-Type: %s\r\n", r->content_type);
    buf_printf(&o, "Content-Length: %zu\r\n", blen);
    add_date(&o, "Expires", &tm);
    if (r->headers.len) {
        buf_add(&o, r->headers.data, r->headers.len);
        if (!str_ends(r->headers.data, "\r\n"))
            buf_adds(&o, "\r\n");
    }
    buf_adds(&o, "\r\n");
    /* a big body (a whole fleet's /cluster/resources) goes out from where
     * it is, not copied behind the head first */
    bool apart = !head_only && (blen > 65536 || !body);
    if (!head_only && blen && !apart)
        buf_add(&o, body, blen);
    int64_t deadline = mono_ms() + WRITE_MS;
    int rc = conn_write(c, o.data, o.len, deadline);
    if (rc == 0 && apart)
        rc = body ? conn_write(c, body, blen, deadline) : send_file(c, r->body_fd, blen, deadline);
    buf_release(&o);
    return rc;
}

static void resp_init(struct http_resp *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    buf_init(&r->headers, BUF_UNLIMITED);
    buf_init(&r->body, BUF_UNLIMITED);
    r->body_fd = -1;
}

static void resp_free(struct http_resp *r)
{
    free(r->reason);
    free(r->content_type);
    buf_release(&r->headers);
    buf_release(&r->body);
    if (r->shared_free)
        r->shared_free(r->shared_ctx);
    if (r->body_fd >= 0)
        close(r->body_fd);
}

static int minor_of(const struct rq *q)
{
    return q->p.http_major == 1 && q->p.http_minor == 0 ? 0 : 1;
}

/* An HTTP-layer error: the message as reason and as plain-text body. */
static void send_error(struct conn *c, const struct rq *q)
{
    struct http_resp r;
    resp_init(&r);
    http_resp_status(&r, q->err, q->errmsg);
    buf_adds(&r.body, q->errmsg ? q->errmsg : ""); /* as is, as AnyEvent error() */
    send_response(c, &r, minor_of(q), false, false);
    c->linger = true;
    resp_free(&r);
}

void http_resp_status(struct http_resp *r, int status, const char *reason)
{
    r->status = status;
    FREE_AND_NULL(r->reason);
    size_t n = reason_len(reason);
    if (n)
        r->reason = xstrndup(reason, n);
}

void http_resp_header(struct http_resp *r, const char *name, const char *value)
{
    /* a CR/LF would let a value inject headers: drop such a header */
    if (!clean_value(name) || !clean_value(value) || !*name)
        return;
    buf_printf(&r->headers, "%s: %s\r\n", name, value);
}

const char *http_req_header(const struct http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (strcasecmp(r->hdr[i].name, name) == 0)
            return r->hdr[i].value;
    return NULL;
}

/* ---- serving ------------------------------------------------------------ */

/* Plain HTTP on the TLS port: redirect to https like pveproxy >= 7.4. */
static void serve_plain(struct conn *c)
{
    struct rq q;
    rq_init(&q, true);
    if (read_request(c, &q) != 1 || blackholed(c))
        goto out;
    if (q.err) {
        send_error(c, &q);
        goto out;
    }
    const char *host = rq_header(&q, "Host");
    if (!host || !*host || !clean_value(host)) {
        rq_fail(&q, 400, xstrdup("Bad Request"));
        send_error(c, &q);
        goto out;
    }
    struct http_resp r;
    resp_init(&r);
    bool get = q.p.method == HTTP_GET || q.p.method == HTTP_HEAD;
    http_resp_status(&r, get ? 301 : 308, NULL);
    buf_printf(&r.headers, "Location: https://%s%s\r\n", host, rq_str(&q, 0));
    send_response(c, &r, minor_of(&q), false, q.p.method == HTTP_HEAD);
    c->linger = true;
    resp_free(&r);
out:
    rq_free(&q);
}

static void fill_req(struct conn *c, struct rq *q, struct http_req *req)
{
    memset(req, 0, sizeof *req);
    const char *m = http_method_str((enum http_method)q->p.method);
    size_t ml = strlen(m);
    if (ml >= sizeof req->method)
        ml = sizeof req->method - 1;
    memcpy(req->method, m, ml);
    req->target = q->head.data;
    size_t pl = strcspn(req->target, "?");
    req->path = xstrndup(req->target, pl);
    req->query = req->target[pl] == '?' ? req->target + pl + 1 : NULL;
    req->nhdr = q->nh;
    req->hdr = xcalloc(q->nh ? q->nh : 1, sizeof *req->hdr);
    for (size_t i = 0; i < q->nh; i++) {
        req->hdr[i].name = q->head.data + q->h[i].name;
        req->hdr[i].value = q->head.data + q->h[i].value;
    }
    buf_add(&q->body, "", 0); /* makes body.data non-NULL and NUL-terminated */
    req->body = q->body.data;
    req->body_len = q->body.len;
    req->listener = c->l->id;
    req->listener_ctx = c->l->ctx;
    memcpy(req->peer, c->peer, sizeof req->peer);
}

/* Run the handler and answer. Returns true to keep the connection. */
static bool handle(struct conn *c, struct rq *q, bool last)
{
    httpd *d = c->l->d;
    struct http_req req;
    struct http_resp r;
    bool keep = false;

    fill_req(c, q, &req);
    resp_init(&r);
    d->handler(d->ctx, &req, &r);
    if (r.hang) {
        hang(c, atomic_load(&c->l->gen));
        goto out;
    }
    if (r.delay_ms > 0 && !nap(c, r.delay_ms))
        goto out;
    if (blackholed(c))
        goto out;
    keep = !last && !r.close && r.status < 400 && http_should_keep_alive(&q->p);
    if (send_response(c, &r, minor_of(q), keep, q->p.method == HTTP_HEAD))
        keep = false;
    else if (!keep)
        c->linger = true;
out:
    free(req.path);
    free(req.hdr);
    resp_free(&r);
    return keep;
}

/* First byte 0x16 is a TLS handshake record; anything else is plain HTTP. */
static int peek_kind(struct conn *c)
{
    unsigned char b;
    if (wait_fd(c->fd, POLLIN, mono_ms() + PEEK_MS) <= 0 || atomic_load(&c->stop))
        return -1;
    ssize_t n;
    do
        n = recv(c->fd, &b, 1, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        return -1;
    return b == 0x16;
}

static void serve(struct conn *c)
{
    int kind = peek_kind(c);
    if (kind < 0)
        return;
    if (kind == 0) {
        serve_plain(c);
        return;
    }
    /* a hung node does not even complete the handshake */
    if (blackholed(c) || tls_handshake(c, c->l->d->ssl))
        return;
    for (int n = 1; n <= KEEPALIVE_MAX; n++) {
        struct rq q;
        rq_init(&q, false);
        bool keep = false;
        if (read_request(c, &q) == 1 && !blackholed(c)) {
            if (q.err)
                send_error(c, &q);
            else
                keep = handle(c, &q, n == KEEPALIVE_MAX);
        }
        rq_free(&q);
        if (!keep)
            break;
    }
}

/* After answering with "close", drain what the client still sends (e.g. the
 * body of a refused upload) so that close() does not reset the connection
 * before the client has read our answer. */
static void linger_close(struct conn *c)
{
    char tmp[4096];
    size_t total = 0;
    int64_t deadline = mono_ms() + LINGER_MS;
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* one try: send close_notify */
    }
    shutdown(c->fd, SHUT_WR);
    while (total < LINGER_BYTES && !atomic_load(&c->stop)) {
        if (wait_fd(c->fd, POLLIN, deadline) <= 0)
            break;
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            break;
        if (n > 0)
            total += (size_t)n;
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct listener *l = c->l;

    serve(c);
    if (c->linger)
        linger_close(c);
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;

    pthread_mutex_lock(&l->mu);
    int fd = c->fd;
    c->fd = -1;
    pthread_mutex_unlock(&l->mu);
    close(fd);
    atomic_fetch_sub(&l->d->nconn, 1);

    pthread_mutex_lock(&l->mu);
    c->finished = true;
    l->nlive--;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- listeners ---------------------------------------------------------- */

static int open_listener(const struct sockaddr_storage *a, socklen_t alen)
{
    int fd = socket(a->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)a, alen) || listen(fd, SOMAXCONN)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void release_held(struct listener *l)
{
    for (size_t i = 0; i < l->nheld; i++)
        close(l->held[i]);
    l->nheld = 0;
}

/* Stop every connection of l. Caller holds l->mu. */
static void stop_conns(struct listener *l)
{
    for (struct conn *c = l->conns; c; c = c->next) {
        if (c->finished || c->fd < 0)
            continue;
        atomic_store(&c->stop, true);
        shutdown(c->fd, SHUT_RDWR);
    }
}

/* Apply a requested mode (accept thread, l->mu held). */
static int apply_mode(struct listener *l, enum httpd_mode want)
{
    enum httpd_mode cur = (enum httpd_mode)atomic_load(&l->mode);
    if (want == HTTPD_REFUSE) {
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
        release_held(l);
        stop_conns(l);
    } else {
        if (l->fd < 0 && (l->fd = open_listener(&l->addr, l->alen)) < 0) {
            log_warn("httpd", "listener %d: rebind failed: %s", l->id, strerror(errno));
            return -1;
        }
        if (want == HTTPD_UP)
            release_held(l);
    }
    if (cur != want) {
        atomic_store(&l->mode, want);
        atomic_fetch_add(&l->gen, 1);
    }
    return 0;
}

/* Join and free the connection threads that have finished. */
static void reap(struct listener *l)
{
    struct conn *done = NULL;
    pthread_mutex_lock(&l->mu);
    for (struct conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (!c->finished)
            continue;
        if (c->prev)
            c->prev->next = c->next;
        else
            l->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->next = done;
        done = c;
    }
    pthread_mutex_unlock(&l->mu);
    while (done) {
        struct conn *c = done;
        done = c->next;
        pthread_join(c->tid, NULL);
        free(c);
    }
}

static void spawn(struct listener *l, int fd, const struct sockaddr_storage *peer)
{
    httpd *d = l->d;
    if (atomic_fetch_add(&d->nconn, 1) >= MAX_CONNS) {
        atomic_fetch_sub(&d->nconn, 1);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = xcalloc(1, sizeof *c);
    c->l = l;
    c->fd = fd;
    sock_peer(peer, c->peer, sizeof c->peer);

    pthread_mutex_lock(&l->mu);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nlive++;
    pthread_mutex_unlock(&l->mu);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    int rc = pthread_create(&c->tid, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return;
    log_warn("httpd", "cannot start connection thread: %s", strerror(rc));
    pthread_mutex_lock(&l->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nlive--;
    pthread_mutex_unlock(&l->mu);
    close(fd);
    free(c);
    atomic_fetch_sub(&d->nconn, 1);
}

/* Accept what is pending. Returns false when accept() hit a resource limit
 * (then the caller backs off instead of spinning on a readable socket). */
static bool accept_some(struct listener *l)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        if (atomic_load(&l->mode) == HTTPD_BLACKHOLE) {
            if (l->nheld < MAX_HELD)
                l->held[l->nheld++] = fd;
            else
                close(fd);
            continue;
        }
        spawn(l, fd, &peer);
    }
    return true;
}

/* Close held (blackholed) sockets whose peer has gone. */
static void check_held(struct listener *l, const struct pollfd *p)
{
    size_t k = 0;
    for (size_t i = 0; i < l->nheld; i++) {
        if (p[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
            close(l->held[i]);
        else
            l->held[k++] = l->held[i];
    }
    l->nheld = k;
}

static void accept_teardown(struct listener *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    release_held(l);
    stop_conns(l);
    while (l->nlive > 0)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    reap(l);
}

static void *accept_main(void *arg)
{
    struct listener *l = arg;
    struct pollfd p[MAX_HELD + 2];
    int64_t backoff_until = 0;

    block_sigpipe(); /* inherited by the connection threads */
    for (;;) {
        size_t n = 0, first_held;
        p[n++] = (struct pollfd){.fd = l->wake[0], .events = POLLIN};
        bool listening = l->fd >= 0 && mono_ms() >= backoff_until;
        if (listening)
            p[n++] = (struct pollfd){.fd = l->fd, .events = POLLIN};
        first_held = n;
        for (size_t i = 0; i < l->nheld; i++)
            p[n++] = (struct pollfd){.fd = l->held[i], .events = POLLRDHUP};
        bool backing_off = l->fd >= 0 && !listening;
        int r = poll(p, n, backing_off ? 50 : ACCEPT_TICK_MS);
        if (r < 0 && errno != EINTR)
            break;

        if (r > 0) {
            check_held(l, p + first_held);
            if (listening && (p[1].revents & POLLIN) && !accept_some(l))
                backoff_until = mono_ms() + 100;
        }
        if (p[0].revents & POLLIN) {
            char tmp[64];
            while (read(l->wake[0], tmp, sizeof tmp) > 0)
                ;
        }
        pthread_mutex_lock(&l->mu);
        bool quit = l->quit;
        if (!quit && l->done_seq != l->req_seq) {
            l->result = apply_mode(l, l->want);
            l->done_seq = l->req_seq;
            pthread_cond_broadcast(&l->cv);
        }
        pthread_mutex_unlock(&l->mu);
        if (quit)
            break;
        reap(l);
    }
    accept_teardown(l);
    return NULL;
}

/* Parse "host:port" / "[v6]:port" / ":port" into a socket address. */
static int parse_hostport(const char *hp, struct sockaddr_storage *ss, socklen_t *len, char **err)
{
    char *host = NULL;
    const char *port;
    int rc = -1;
    if (hp[0] == '[') {
        const char *e = strchr(hp, ']');
        if (!e || e[1] != ':')
            goto bad;
        host = xstrndup(hp + 1, (size_t)(e - hp - 1));
        port = e + 2;
    } else {
        const char *e = strrchr(hp, ':');
        if (!e)
            goto bad;
        host = xstrndup(hp, (size_t)(e - hp));
        port = e + 1;
    }
    int64_t pn;
    if (!parse_i64(port, &pn) || pn < 0 || pn > 65535)
        goto bad;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    bool any = !*host || strcmp(host, "*") == 0;
    if (any)
        hints.ai_family = AF_INET;
    int g = getaddrinfo(any ? NULL : host, port, &hints, &ai);
    if (g || !ai) {
        *err = xasprintf("cannot resolve '%s': %s", hp, gai_strerror(g));
        goto out;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    rc = 0;
    goto out;
bad:
    *err = xasprintf("bad listen address '%s' (want host:port or [v6]:port)", hp);
out:
    free(host);
    return rc;
}

int httpd_listen(httpd *d, const char *hostport, void *listener_ctx, int *bound_port, char **err)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    if (parse_hostport(hostport, &ss, &len, err))
        return -1;
    int fd = open_listener(&ss, len);
    if (fd < 0) {
        *err = xasprintf("cannot listen on %s: %s", hostport, strerror(errno));
        return -1;
    }
    struct listener *l = xcalloc(1, sizeof *l);
    l->d = d;
    l->ctx = listener_ctx;
    l->fd = fd;
    l->alen = sizeof l->addr;
    getsockname(fd, (struct sockaddr *)&l->addr, &l->alen);
    if (pipe2(l->wake, O_NONBLOCK | O_CLOEXEC)) {
        *err = xasprintf("pipe: %s", strerror(errno));
        close(fd);
        free(l);
        return -1;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    atomic_init(&l->mode, HTTPD_UP);
    atomic_init(&l->gen, 0);

    pthread_mutex_lock(&d->mu);
    l->id = (int)d->nls;
    d->ls = xrealloc(d->ls, (d->nls + 1) * sizeof *d->ls);
    d->ls[d->nls++] = l;
    pthread_mutex_unlock(&d->mu);

    int rc = pthread_create(&l->tid, NULL, accept_main, l);
    if (rc) {
        /* keep the table entry (ids stay dense) but leave it refusing */
        *err = xasprintf("cannot start accept thread: %s", strerror(rc));
        close(l->fd);
        l->fd = -1;
        l->quit = true;
        atomic_store(&l->mode, HTTPD_REFUSE);
        return -1;
    }
    if (bound_port) {
        const struct sockaddr_storage *a = &l->addr;
        *bound_port = a->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)a)->sin6_port)
                                               : ntohs(((const struct sockaddr_in *)a)->sin_port);
    }
    log_debug("httpd", "listening on %s (listener %d)", hostport, l->id);
    return l->id;
}

int httpd_set_mode(httpd *d, int listener, enum httpd_mode mode)
{
    struct listener *l = NULL;
    if (mode != HTTPD_UP && mode != HTTPD_REFUSE && mode != HTTPD_BLACKHOLE)
        return -1;
    pthread_mutex_lock(&d->mu);
    if (listener >= 0 && (size_t)listener < d->nls)
        l = d->ls[listener];
    pthread_mutex_unlock(&d->mu);
    if (!l)
        return -1;

    pthread_mutex_lock(&l->mu);
    unsigned seq = ++l->req_seq;
    l->want = mode;
    wake(l);
    /* a later request may overtake ours; its result then stands for both */
    while (!l->quit && (int)(l->done_seq - seq) < 0)
        pthread_cond_wait(&l->cv, &l->mu);
    int rc = l->quit ? -1 : l->result;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

httpd *httpd_new(http_handler h, void *ctx, const char *cert_pem, const char *key_pem, char **err)
{
    httpd *d = NULL;
    BIO *cb = NULL, *kb = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    const char *what = "TLS context";

    if (!s || !SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION))
        goto fail;
    what = "bad certificate";
    cb = BIO_new_mem_buf(cert_pem ? cert_pem : "", -1);
    if (!cb || !(x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) || !SSL_CTX_use_certificate(s, x))
        goto fail;
    /* further certificates in the PEM are the chain */
    X509 *extra;
    while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)))
        if (!SSL_CTX_add_extra_chain_cert(s, extra))
            X509_free(extra);
    ERR_clear_error();
    what = "bad private key";
    kb = BIO_new_mem_buf(key_pem ? key_pem : "", -1);
    if (!kb || !(k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL)) ||
        !SSL_CTX_use_PrivateKey(s, k) || !SSL_CTX_check_private_key(s))
        goto fail;
    SSL_CTX_set_options(s, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    /* idle keep-alive connections then hold no TLS buffers */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);

    d = xcalloc(1, sizeof *d);
    d->handler = h;
    d->ctx = ctx;
    d->ssl = s;
    atomic_init(&d->nconn, 0);
    pthread_mutex_init(&d->mu, NULL);
    goto out;
fail:
    *err = ssl_errstr(what);
    SSL_CTX_free(s);
out:
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    return d;
}

void httpd_free(httpd *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nls; i++) {
        struct listener *l = d->ls[i];
        pthread_mutex_lock(&l->mu);
        bool running = !l->quit;
        l->quit = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (running) {
            wake(l);
            pthread_join(l->tid, NULL);
        }
        close(l->wake[0]);
        close(l->wake[1]);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        free(l);
    }
    free(d->ls);
    pthread_mutex_destroy(&d->mu);
    SSL_CTX_free(d->ssl);
    free(d);
}
