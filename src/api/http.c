/* http: the connections - accept, read, hand requests to the workers, write,
 * deadlines (contract in http.h; answers and streams are http_answer.c).
 *
 * Only the loop thread touches a connection, except its request while a
 * worker runs the handler (state C_WORK: the loop does not read it, watch
 * it or time it then). Workers hand finished requests back through `done`
 * and an eventfd; stream senders queue bytes in their stream and put it on
 * `notify`. A connection's states:
 *   C_IDLE   waiting for a request line (deadline: idle)
 *   C_HEAD   a request started (deadline: header_timeout from its 1st byte)
 *   C_BODY   head parsed, body coming (deadline: idle, from the last read)
 *   C_WORK   with a worker (none)
 *   C_WRITE  answer going out (deadline: idle, from the last write)
 *   C_STREAM streamed answer open (none: its owner ends it; a hang-up is
 *            seen through EPOLLRDHUP and marks the stream gone)
 *   C_LINGER answered a request it will not read further: write side shut,
 *            the rest read and dropped for a moment so that the client gets
 *            the answer rather than a reset. */
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
#define LINGER_MS 2000
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

/* Interest 0 takes the descriptor out of the set: a hang-up is reported
 * whatever the interest, and would spin the loop while a worker has it. */
static void set_events(struct http_server *s, struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (!ev)
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
    else
        epoll_ctl(s->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
    c->events = ev;
}
static void conn_close(struct http_server *s, struct conn *c)
{
    if (c->events)
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
    buf_release(&c->in);
    buf_release(&c->out);
    free(c);
}

static void linger(struct http_server *s, struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->st = C_LINGER;
    c->until = mono_ms() + LINGER_MS;
    buf_release(&c->in);
    set_events(s, c, EPOLLIN | EPOLLRDHUP);
}

/* These return false when they closed (and freed) c. */
static bool after_write(struct http_server *s, struct conn *c);
static bool process(struct http_server *s, struct conn *c);

/* Write what c->out holds. false when the connection was closed. */
static bool flush(struct http_server *s, struct conn *c)
{
    while (c->outoff < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
        if (n > 0) { /* a client that stops reading is cut after idle_timeout */
            c->outoff += (size_t)n;
            c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* a stream watches for the client going; an answer is written
             * even to a client that shut its sending side */
            set_events(s, c, c->st == C_STREAM ? EPOLLOUT | EPOLLRDHUP : EPOLLOUT);
            return true;
        }
        conn_close(s, c);
        return false;
    }
    buf_release(&c->out);
    c->outoff = 0;
    return after_write(s, c);
}

/* Answer and close: a refusal made here, or a request whose end is not
 * known. */
static bool refuse(struct http_server *s, struct conn *c)
{
    struct http_req *rq = c->rq;
    char *body =
        s->o.error_body(s->o.cls, rq->err_status, rq->err_code, rq->err_field, rq->err_msg);
    rq->answered = false;
    http_respond(rq, rq->err_status, "application/json", body, strlen(body));
    rq->is_head = false;
    rq->keep_alive = false;
    c->close_after = true;
    c->st = C_WRITE;
    c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
    hanswer_format(s, c);
    return flush(s, c);
}

static void dispatch(struct http_server *s, struct conn *c)
{
    c->st = C_WORK;
    c->until = INT64_MAX;
    set_events(s, c, 0);
    pthread_mutex_lock(&s->mu);
    c->qnext = NULL;
    if (s->work_tail)
        s->work_tail->qnext = c;
    else
        s->work_head = c;
    s->work_tail = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static bool after_write(struct http_server *s, struct conn *c)
{
    if (c->st == C_STREAM) {
        if (c->stream) {
            /* what the sender queued meanwhile (it waits there while the
             * output is not drained: the stream's pending cap is the bound) */
            struct http_stream *st = c->stream;
            pthread_mutex_lock(&st->mu);
            bool moved = st->pending.len > 0;
            if (moved) {
                buf_add(&c->out, st->pending.data, st->pending.len);
                buf_reset(&st->pending);
            }
            bool ended = st->ended && !moved && !st->queued;
            bool broken = st->broken;
            pthread_mutex_unlock(&st->mu);
            if (moved)
                return flush(s, c);
            if (!ended) { /* wait for more; watch for the client hanging up */
                c->until = INT64_MAX;
                set_events(s, c, EPOLLRDHUP);
                return true;
            }
            if (broken) /* bytes were dropped: the framing cannot go on */
                c->close_after = true;
            hstream_drop(st); /* ended: "gone" changes nothing for it */
            c->stream = NULL;
        }
        c->st = C_WRITE;
    }
    if (c->st != C_WRITE)
        return true;
    if (c->close_after) {
        linger(s, c);
        return true;
    }
    hreq_free(c->rq);
    c->rq = NULL;
    c->st = C_IDLE;
    c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
    set_events(s, c, EPOLLIN | EPOLLRDHUP);
    if (c->in.len)
        return process(s, c); /* a pipelined request */
    buf_release(&c->in);
    return true;
}

/* Parse what is in c->in; dispatch or refuse a whole request. */
static bool process(struct http_server *s, struct conn *c)
{
    if (c->st == C_IDLE) {
        if (!c->in.len)
            return true;
        c->rq = hreq_new(c, s->o.body_max);
        c->st = C_HEAD;
        c->until = mono_ms() + (int64_t)s->o.header_timeout_s * 1000;
    }
    if (c->st != C_HEAD && c->st != C_BODY)
        return true;
    enum hreq_rc rc = hreq_feed(c->rq, &c->in);
    struct http_req *rq = c->rq;
    if (rc == HREQ_READY && rq->err_status)
        return refuse(s, c);
    if (rc == HREQ_READY) {
        dispatch(s, c);
        return true;
    }
    if (rq->headers_done && c->st == C_HEAD) {
        c->st = C_BODY;
        c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
        if (rq->expect_continue && !rq->continued) {
            rq->continued = true;
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            ssize_t w = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
            (void)w; /* a fresh socket takes 25 bytes; else the client sends anyway */
        }
    }
    return true;
}

static void on_readable(struct http_server *s, struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, s->scratch, sizeof s->scratch, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) { /* closed, or failed: nothing is answered on a broken request */
            conn_close(s, c);
            return;
        }
        if (c->st == C_LINGER)
            continue;
        if (c->st == C_BODY)
            c->until = mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
        if (buf_add(&c->in, s->scratch, (size_t)n) != BUF_OK) {
            conn_close(s, c); /* cannot be: the head and body limits come first */
            return;
        }
        if (!process(s, c))
            return;
        if (c->st != C_IDLE && c->st != C_HEAD && c->st != C_BODY)
            return; /* with a worker, writing or lingering: read the rest later */
    }
}

static void on_event(struct http_server *s, struct conn *c, uint32_t ev)
{
    if (c->st == C_STREAM && (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        conn_close(s, c); /* the client is gone: its stream's slot frees */
        return;
    }
    if (ev & EPOLLOUT) {
        if (!flush(s, c))
            return;
        if (c->st == C_WRITE || c->st == C_STREAM)
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (c->st == C_WORK)
            return;
        on_readable(s, c);
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
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event e = {.events = c->events, .data.ptr = c};
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
        struct http_req *rq = c->rq;
        if (rq->stream) {
            c->stream = rq->stream;
            rq->stream = NULL;
            pthread_mutex_lock(&c->stream->mu);
            c->stream->c = c;
            pthread_mutex_unlock(&c->stream->mu);
        }
        c->st = c->stream ? C_STREAM : C_WRITE;
        c->until = c->stream ? INT64_MAX : mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
        hanswer_format(s, c);
        if (c->stream) { /* what was sent before the head went out */
            pthread_mutex_lock(&c->stream->mu);
            buf_add(&c->out, c->stream->pending.data, c->stream->pending.len);
            buf_reset(&c->stream->pending);
            pthread_mutex_unlock(&c->stream->mu);
        }
        flush(s, c);
    }
    while (notify) {
        struct http_stream *st = notify;
        notify = st->qnext;
        pthread_mutex_lock(&st->mu);
        st->queued = false;
        struct conn *c = st->c;
        bool take = c && c->st == C_STREAM && c->stream == st;
        pthread_mutex_unlock(&st->mu);
        /* with the output drained, after_write takes what is pending (or
         * finishes an end); else it does once the output is written */
        if (take && c->out.len == 0)
            flush(s, c);
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
        if (now > c->until) {
            cut += c->st == C_HEAD;
            conn_close(s, c);
        }
    }
    if (cut)
        log_debug("api", "%d connections cut: request line or headers too slow", cut);
}

/* Stopping: is anything left to write? */
static bool busy(struct http_server *s)
{
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->st == C_WORK || c->st == C_WRITE || c->st == C_STREAM)
            return true;
    return false;
}

static void *loop_main(void *arg)
{
    struct http_server *s = arg;
    struct epoll_event evs[256];
    int64_t next_sweep = mono_ms() + SWEEP_MS;
    bool listening = true;
    for (;;) {
        int n = epoll_wait(s->ep, evs, 256, SWEEP_MS);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL)
                on_accept(s);
            else if (evs[i].data.ptr == (void *)s)
                on_wake(s);
            else
                on_event(s, evs[i].data.ptr, evs[i].events);
        }
        int64_t now = mono_ms();
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        int64_t drain_until = s->drain_until;
        pthread_mutex_unlock(&s->mu);
        if (stopping && listening) {
            epoll_ctl(s->ep, EPOLL_CTL_DEL, s->lfd, NULL);
            close(s->lfd);
            s->lfd = -1;
            s->accept_paused_until = 0;
            listening = false;
            for (struct conn *c = s->conns, *next; c; c = next) {
                next = c->next;
                if (c->st == C_IDLE) /* nothing asked: close now */
                    conn_close(s, c);
                else if (c->st != C_WORK && c->st != C_LINGER)
                    c->close_after = true;
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
    struct http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->work_head && !s->workers_stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->work_head)
            break;
        struct conn *c = s->work_head;
        s->work_head = c->qnext;
        if (!s->work_head)
            s->work_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        struct http_req *rq = c->rq;
        s->o.handler(s->o.cls, rq);
        if (!rq->answered) {
            char *body = s->o.error_body(s->o.cls, HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
                                         "no answer was made");
            http_respond(rq, HTTP_INTERNAL_SERVER_ERROR, "application/json", body, strlen(body));
        }
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

static int listen_on(struct http_server *s, char *err, size_t errlen)
{
    const struct sockaddr *sa = s->o.addr;
    s->lfd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0)
        goto fail;
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6) /* "[::]:port" takes IPv6 only, as before */
        setsockopt(s->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s->lfd, sa, s->o.addrlen) != 0 || listen(s->lfd, 1024) != 0)
        goto fail;
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (getsockname(s->lfd, (struct sockaddr *)&got, &gl) == 0)
        s->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                  : ((struct sockaddr_in *)&got)->sin_port);
    return 0;
fail:
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
}

struct http_server *http_server_start(const struct http_options *opts, char *err, size_t errlen)
{
    struct http_server *s = xcalloc(1, sizeof *s);
    s->o = *opts;
    s->lfd = s->ep = s->evfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
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
        conn_close(s, s->conns); /* those with a worker came back through done */
    for (int i = 0; i < HTTP_IP_BUCKETS; i++)
        while (s->ips[i]) {
            struct ip_count *e = s->ips[i];
            s->ips[i] = e->next;
            free(e);
        }
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->ep >= 0)
        close(s->ep);
    if (s->evfd >= 0)
        close(s->evfd);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
