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

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>

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
    int rc = pthread_create(&c->tid, &attr, httpd_conn_main, c);
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
    cond_init_mono(&l->cv);
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
    atomic_init(&d->handshakes, 0);
    atomic_init(&d->resumed, 0);
    atomic_init(&d->closed_limit, 0);
    atomic_init(&d->closed_idle, 0);
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

uint64_t httpd_tls_handshakes(httpd *d)
{
    return atomic_load(&d->handshakes);
}

uint64_t httpd_tls_resumed(httpd *d)
{
    return atomic_load(&d->resumed);
}

void httpd_tls_closes(httpd *d, uint64_t *at_limit, uint64_t *idle)
{
    *at_limit = atomic_load(&d->closed_limit);
    *idle = atomic_load(&d->closed_idle);
}

/* Every listener is told to quit, then all are joined, then freed: a
 * request still served by one (until its accept thread has joined its
 * connections) may switch another's mode (pvesim's /_sim/nodes/X), which
 * must then find that listener quitting (httpd_set_mode: -1), not freed. */
void httpd_free(httpd *d)
{
    if (!d)
        return;
    bool *running = xcalloc(d->nls ? d->nls : 1, sizeof *running);
    for (size_t i = 0; i < d->nls; i++) {
        struct listener *l = d->ls[i];
        pthread_mutex_lock(&l->mu);
        running[i] = !l->quit;
        l->quit = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (running[i])
            wake(l);
    }
    for (size_t i = 0; i < d->nls; i++)
        if (running[i])
            pthread_join(d->ls[i]->tid, NULL);
    for (size_t i = 0; i < d->nls; i++) {
        struct listener *l = d->ls[i];
        close(l->wake[0]);
        close(l->wake[1]);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        free(l);
    }
    free(running);
    free(d->ls);
    pthread_mutex_destroy(&d->mu);
    SSL_CTX_free(d->ssl);
    free(d);
}
