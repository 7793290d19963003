/* httpd_conn: one connection's thread: non-blocking I/O where every read
 * and write has a deadline and wakes at once on a stop, the TLS handshake,
 * the fault modes (hang, blackhole, delays), and serving requests in order
 * with keep-alive until the client or the limits end it. */
#define _GNU_SOURCE /* accept4, pipe2, strcasestr */
#include "sim/httpd_int.h"

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>

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
ssize_t httpd_conn_read(struct conn *c, void *p, size_t n, int64_t deadline)
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

int httpd_conn_write(struct conn *c, const void *p, size_t n, int64_t deadline)
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
static bool nap(struct conn *c, long ms, const struct http_resp *r)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        if (atomic_load(&c->stop))
            return false;
        if (r && r->delay_cut && atomic_load(r->delay_cut) != r->delay_gen)
            return true; /* released */
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

/* ---- serving ------------------------------------------------------------ */

/* Plain HTTP on the TLS port: redirect to https like pveproxy >= 7.4. */
static void serve_plain(struct conn *c)
{
    struct rq q;
    httpd_rq_init(&q, true);
    if (httpd_read_request(c, &q) != 1 || blackholed(c))
        goto out;
    if (q.err) {
        httpd_send_error(c, &q);
        goto out;
    }
    const char *host = httpd_rq_header(&q, "Host");
    if (!host || !*host || !httpd_clean_value(host)) {
        httpd_rq_fail(&q, 400, xstrdup("Bad Request"));
        httpd_send_error(c, &q);
        goto out;
    }
    struct http_resp r;
    httpd_resp_init(&r);
    bool get = q.p.method == HTTP_GET || q.p.method == HTTP_HEAD;
    http_resp_status(&r, get ? 301 : 308, NULL);
    buf_printf(&r.headers, "Location: https://%s%s\r\n", host, httpd_rq_str(&q, 0));
    httpd_send_response(c, &r, httpd_minor_of(&q), false, q.p.method == HTTP_HEAD);
    c->linger = true;
    httpd_resp_free(&r);
out:
    httpd_rq_free(&q);
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
    httpd_resp_init(&r);
    d->handler(d->ctx, &req, &r);
    if (r.hang) {
        hang(c, atomic_load(&c->l->gen));
        goto out;
    }
    if (r.drop)
        goto out; /* not kept: the caller closes it */
    if (r.delay_ms > 0 && !nap(c, r.delay_ms, &r))
        goto out;
    if (blackholed(c))
        goto out;
    keep = !last && !r.close && r.status < 400 && http_should_keep_alive(&q->p);
    if (httpd_send_response(c, &r, httpd_minor_of(q), keep, q->p.method == HTTP_HEAD))
        keep = false;
    else if (!keep)
        c->linger = true;
out:
    free(req.path);
    free(req.hdr);
    httpd_resp_free(&r);
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
    atomic_fetch_add(&c->l->d->handshakes, 1);
    if (SSL_session_reused(c->ssl))
        atomic_fetch_add(&c->l->d->resumed, 1);
    for (int n = 1; n <= KEEPALIVE_MAX; n++) {
        struct rq q;
        httpd_rq_init(&q, false);
        bool keep = false;
        int64_t asked = mono_ms();
        int got = httpd_read_request(c, &q);
        if (got == 1 && !blackholed(c)) {
            if (q.err)
                httpd_send_error(c, &q);
            else
                keep = handle(c, &q, n == KEEPALIVE_MAX);
        } else if (got == 0 && mono_ms() - asked >= IDLE_MS && !atomic_load(&c->stop)) {
            atomic_fetch_add(&c->l->d->closed_idle, 1);
        }
        httpd_rq_free(&q);
        if (got == 1 && n == KEEPALIVE_MAX) /* answered with "close" whatever it asked */
            atomic_fetch_add(&c->l->d->closed_limit, 1);
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

void *httpd_conn_main(void *arg)
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
