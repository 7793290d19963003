/* http: the loop - accepting, the workers' answers, stream senders' bytes,
 * deadlines - and the worker pool (contract in http.h; a connection's own
 * progress is http_conn.c's, answers and streams http_answer.c's).
 *
 * Only the loop thread touches a connection, except its request while a
 * worker runs the handler (state C_WORK: the loop neither reads, writes
 * nor times it then). Workers hand finished requests back through `done`
 * and an eventfd (one wake for a batch); stream senders queue bytes in
 * their stream and put it on `notify`. */
#define _GNU_SOURCE /* accept4 */
#include "api/http_int.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_MS 200
#define ACCEPT_PAUSE_MS 100

void http_wake(struct http_server *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->evfd, &one, sizeof one);
    (void)r; /* a full counter wakes the loop just as well */
}

/* ---- per-address counts ---------------------------------------------------------- */

static unsigned ip_hash(const unsigned char ip[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ ip[i]) * 16777619u;
    return h % HTTP_IP_BUCKETS;
}

static bool ip_take(struct http_server *s, const unsigned char ip[16])
{
    struct ip_count **pp = &s->ips[ip_hash(ip)];
    for (struct ip_count *e = *pp; e; e = e->next) {
        if (memcmp(e->ip, ip, 16) == 0) {
            if (e->n >= s->o.per_ip_limit)
                return false;
            e->n++;
            return true;
        }
    }
    struct ip_count *e = xcalloc(1, sizeof *e);
    memcpy(e->ip, ip, 16);
    e->n = 1;
    e->next = *pp;
    *pp = e;
    return true;
}

static void ip_give(struct http_server *s, const unsigned char ip[16])
{
    for (struct ip_count **pp = &s->ips[ip_hash(ip)]; *pp; pp = &(*pp)->next) {
        struct ip_count *e = *pp;
        if (memcmp(e->ip, ip, 16) == 0) {
            if (--e->n == 0) {
                *pp = e->next;
                free(e);
            }
            return;
        }
    }
}
/* ---- connections ------------------------------------------------------------------------ */

void hconn_close(struct http_server *s, struct conn *c)
{
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->stream)
        hstream_drop(c->stream);
    if (c->rq && c->rq->stream) /* answered after the loop stopped */
        hstream_drop(c->rq->stream);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ip_give(s, c->ip);
    s->nconns--;
    hreq_free(c->rq);
    c->rq = NULL;
    c->stream = NULL;
    buf_release(&c->in);
    buf_release(&c->out);
    c->outoff = 0;
    c->fd = -1; /* closed: hconn_on_event passes it over */
    c->prev = c->next = NULL;
    c->qnext = s->closed;
    s->closed = c;
}

void hconn_reap(struct http_server *s)
{
    while (s->closed) {
        struct conn *c = s->closed;
        s->closed = c->qnext;
        free(c);
    }
}

/* ---- accepting -------------------------------------------------------------------------- */

static void addr_key(const struct sockaddr_storage *ss, unsigned char ip[16])
{
    memset(ip, 0, 16);
    if (ss->ss_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    } else if (ss->ss_family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
}

static void on_accept(struct http_server *s)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: stop listening a moment rather than spin */
                epoll_ctl(s->ep, EPOLL_CTL_DEL, s->lfd, NULL);
                s->accept_paused_until = mono_ms() + ACCEPT_PAUSE_MS;
                log_warn("api", "cannot accept connections: %s", strerror(errno));
            }
            return;
        }
        unsigned char ip[16];
        addr_key(&ss, ip);
        if (s->nconns >= s->o.conn_limit || !ip_take(s, ip)) {
            close(fd); /* over the limit: closed at once, as before */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = xcalloc(1, sizeof *c);
        c->fd = fd;
        c->srv = s;
        memcpy(c->ip, ip, 16);
        c->st = C_IDLE;
        c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
        buf_init(&c->out, BUF_UNLIMITED);
        buf_init(&c->in, 2 * HTTP_URI_MAX + HTTP_HEADERS_MAX + s->o.body_max + HTTP_READ_CHUNK);
        /* once, edge-triggered: no epoll_ctl per request (http_conn.c) */
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
            ip_give(s, ip);
            close(fd);
            free(c);
            continue;
        }
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->nconns++;
    }
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* Answers the workers finished, and streams with bytes to send. */
static void on_wake(struct http_server *s)
{
    uint64_t v;
    ssize_t r = read(s->evfd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&s->mu);
    struct conn *done = s->done;
    struct http_stream *notify = s->notify;
    s->done = NULL;
    s->notify = NULL;
    pthread_mutex_unlock(&s->mu);
    while (done) {
        struct conn *c = done;
        done = c->qnext;
        hconn_answered(s, c);
        hconn_drive(s, c);
    }
    while (notify) {
        struct http_stream *st = notify;
        notify = st->qnext;
        pthread_mutex_lock(&st->mu);
        st->queued = false;
        struct conn *c = st->c;
        bool take = c && c->st == C_STREAM && c->stream == st;
        bool broken = st->broken;
        pthread_mutex_unlock(&st->mu);
        /* with the output written, the drive takes what is pending (or
         * finishes an end); else it does once the output is written. A
         * stream whose sender was refused is dropped now (the drive). */
        if (take && (c->outoff == c->out.len || broken))
            hconn_drive(s, c);
        hstream_unref(st); /* the list's hold */
    }
}

static void sweep(struct http_server *s, int64_t now)
{
    if (s->accept_paused_until && now >= s->accept_paused_until && !s->stopping) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &e);
        s->accept_paused_until = 0;
    }
    int cut = 0;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (now <= c->until)
            continue;
        if (c->st == C_STREAM) {
            char why[80];
            snprintf(why, sizeof why, "the client read nothing for %d s", s->o.idle_timeout_s);
            hconn_drop_stalled(s, c, why);
            continue;
        }
        cut += c->st == C_HEAD;
        hconn_close(s, c);
    }
    if (cut)
        log_debug("api", "%d connections cut: request line or headers too slow", cut);
}

/* Stopping: is anything left to write? */
static bool busy(struct http_server *s)
{
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->st == C_WORK || c->st == C_WRITE || c->st == C_STREAM || c->outoff < c->out.len)
            return true;
    return false;
}

/* The listening socket let go: closed, unless borrowed (listen_fd). */
static void unlisten(struct http_server *s)
{
    if (s->lfd >= 0 && s->o.addr)
        close(s->lfd);
    s->lfd = -1;
}

static void *loop_main(void *arg)
{
    mem_thread_name("http-loop");
    struct http_server *s = arg;
    struct epoll_event evs[256];
    int64_t next_sweep = mono_ms() + SWEEP_MS;
    bool listening = true;
    for (;;) {
        /* the sweep is for connections' deadlines and a paused accept: with
         * neither, the loop sleeps until a client or a wake (a stop) comes,
         * rather than waking five times a second for nothing */
        int sleep_ms = s->conns || s->accept_paused_until || !listening ? SWEEP_MS : -1;
        int n = epoll_wait(s->ep, evs, 256, sleep_ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                on_accept(s);
            else if (evs[i].data.ptr == (void *)s)
                on_wake(s);
            else
                hconn_on_event(s, evs[i].data.ptr, evs[i].events);
        }
        hconn_reap(s); /* the batch is over: nothing points to them now */
        int64_t now = mono_ms();
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        int64_t drain_until = s->drain_until;
        pthread_mutex_unlock(&s->mu);
        if (stopping && listening) {
            epoll_ctl(s->ep, EPOLL_CTL_DEL, s->lfd, NULL);
            unlisten(s);
            s->accept_paused_until = 0;
            listening = false;
            for (struct conn *c = s->conns, *next; c; c = next) {
                next = c->next;
                if (c->st == C_IDLE && c->outoff == c->out.len) { /* nothing asked */
                    hconn_close(s, c);
                    continue;
                }
                if (c->st == C_LINGER)
                    continue;
                c->close_after = true; /* the loop's field: a worker never reads it */
                if (c->st == C_IDLE) { /* answers still to write, then close */
                    c->st = C_WRITE;
                    hconn_drive(s, c);
                }
            }
        }
        if (stopping && (!busy(s) || now >= drain_until))
            break;
        if (now >= next_sweep) {
            sweep(s, now);
            next_sweep = now + SWEEP_MS;
        }
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    mem_thread_name("http-worker");
    struct http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->work_head && !s->workers_stop) {
            s->idle_workers++;
            pthread_cond_wait(&s->cv, &s->mu);
            s->idle_workers--;
        }
        if (!s->work_head)
            break;
        struct conn *c = s->work_head;
        s->work_head = c->qnext;
        if (!s->work_head)
            s->work_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        hconn_run_handler(s, c->rq);
        pthread_mutex_lock(&s->mu);
        bool first = !s->done; /* else a wake is due already: the loop takes the list */
        c->qnext = s->done;
        s->done = c;
        pthread_mutex_unlock(&s->mu);
        if (first)
            http_wake(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------------------- */

static int bound_port(int fd)
{
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0)
        return 0;
    return ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                           : ((struct sockaddr_in *)&got)->sin_port);
}

int http_listen(const struct sockaddr *sa, socklen_t len, int *port, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6) /* "[::]:port" takes IPv6 only, as before */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, sa, len) != 0 || listen(fd, 1024) != 0)
        goto fail;
    if (port)
        *port = bound_port(fd);
    return fd;
fail:
    snprintf(err, errlen, "%s", strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static int listen_on(struct http_server *s, char *err, size_t errlen)
{
    if (!s->o.addr) {
        s->lfd = s->o.listen_fd;
        s->port = bound_port(s->lfd);
        return 0;
    }
    s->lfd = http_listen(s->o.addr, s->o.addrlen, &s->port, err, errlen);
    return s->lfd < 0 ? -1 : 0;
}

struct http_server *http_server_start(const struct http_options *opts, char *err, size_t errlen)
{
    struct http_server *s = xcalloc(1, sizeof *s);
    s->o = *opts;
    s->lfd = s->ep = s->evfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);
    if (listen_on(s, err, errlen))
        goto fail;
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->ep < 0 || s->evfd < 0) {
        snprintf(err, errlen, "epoll: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event ee = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &le);
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->evfd, &ee);
    s->workers = xcalloc(opts->workers, sizeof *s->workers);
    for (; s->nworkers < opts->workers; s->nworkers++)
        if (mem_thread_start(&s->workers[s->nworkers], worker_main, s) != 0)
            break;
    if (!s->nworkers || mem_thread_start(&s->loop, loop_main, s) != 0) {
        snprintf(err, errlen, "cannot start the HTTP server's threads");
        goto fail;
    }
    s->loop_running = true;
    return s;
fail:
    http_server_stop(s, 0);
    return NULL;
}

int http_server_port(const struct http_server *s)
{
    return s ? s->port : 0;
}

void http_server_stop(struct http_server *s, int64_t drain_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->drain_until = mono_ms() + drain_ms;
    pthread_mutex_unlock(&s->mu);
    if (s->loop_running) {
        http_wake(s);
        pthread_join(s->loop, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->workers_stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    /* Streams on the list hold a reference each. */
    for (struct http_stream *st = s->notify, *next; st; st = next) {
        next = st->qnext;
        pthread_mutex_lock(&st->mu);
        st->queued = false;
        pthread_mutex_unlock(&st->mu);
        hstream_unref(st);
    }
    while (s->conns)
        hconn_close(s, s->conns); /* those with a worker came back through done */
    hconn_reap(s);
    for (int i = 0; i < HTTP_IP_BUCKETS; i++)
        while (s->ips[i]) {
            struct ip_count *e = s->ips[i];
            s->ips[i] = e->next;
            free(e);
        }
    unlisten(s);
    if (s->ep >= 0)
        close(s->ep);
    if (s->evfd >= 0)
        close(s->evfd);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
