/* http_conn: one connection's progress - read, parse, answer (inline or
 * through a worker), write - on the loop thread (contract in http.h; the
 * loop, accepting and the workers are http.c's).
 *
 * A descriptor is registered once, edge-triggered, for input, output and
 * the peer's hang-up (no epoll_ctl per request). An edge is remembered in
 * the connection (rd_more: input may be waiting that was not read yet) and
 * acted on once the state allows, so that a connection is read only while
 * it may take a request, without the descriptor leaving the epoll set.
 *
 * States:
 *   C_IDLE   waiting for a request line (deadline: idle, from the last
 *            answer or the last write)
 *   C_HEAD   a request started (deadline: header_timeout from its 1st byte)
 *   C_BODY   head parsed, body coming (deadline: idle, from the last read)
 *   C_WORK   with a worker (none: the loop neither reads nor writes it)
 *   C_WRITE  the last answer going out, then close (deadline: idle, from
 *            the last write)
 *   C_STREAM streamed answer open (none while nothing waits to be written;
 *            else idle from the last write; a hang-up marks the stream
 *            gone)
 *   C_LINGER answered a request it will not read further: write side shut,
 *            the rest read and dropped for a moment so that the client gets
 *            the answer rather than a reset.
 *
 * Answers wait in `out` in request order. Backpressure: a new request is
 * taken (parsed, read) only while less than HTTP_OUT_CAP bytes of answers
 * wait unwritten; above it the connection's requests stay in the kernel's
 * buffers, which then stop the client's sending (TCP flow control), until
 * the client reads. A connection whose output makes no progress for
 * idle_timeout is closed. */
#include "api/http_int.h"

#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int64_t idle_deadline(const struct http_server *s)
{
    return mono_ms() + (int64_t)s->o.idle_timeout_s * 1000;
}

static size_t unsent(const struct conn *c)
{
    return c->out.len - c->outoff;
}

void hconn_addr(const struct conn *c, char *dst, size_t len)
{
    static const unsigned char v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(c->ip, v4, 12) == 0)
        inet_ntop(AF_INET, c->ip + 12, dst, (socklen_t)len);
    else
        inet_ntop(AF_INET6, c->ip, dst, (socklen_t)len);
}

static void linger(struct http_server *s, struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->st = C_LINGER;
    c->until = mono_ms() + HTTP_LINGER_MS;
    buf_release(&c->in);
    buf_release(&c->out);
    c->outoff = 0;
}

/* A stream's sender counts what waits in the connection's output against
 * its cap (http_stream_send). */
static void note_handed(struct conn *c)
{
    if (!c->stream)
        return;
    pthread_mutex_lock(&c->stream->mu);
    c->stream->handed = unsent(c);
    pthread_mutex_unlock(&c->stream->mu);
}

/* Write what waits in c->out, as far as the socket takes it. false when
 * the connection failed (and was closed). */
static bool send_out(struct http_server *s, struct conn *c)
{
    while (unsent(c)) {
        ssize_t n = send(c->fd, c->out.data + c->outoff, unsent(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->outoff += (size_t)n;
            /* a client that stops reading is cut after idle_timeout; a
             * head's own deadline is not moved by writing */
            if (c->st != C_HEAD)
                c->until = idle_deadline(s);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->until == INT64_MAX) /* a stream: its stall is timed from now */
                c->until = idle_deadline(s);
            note_handed(c);
            return true; /* the output edge brings us back */
        }
        hconn_close(s, c);
        return false;
    }
    buf_release(&c->out); /* an idle connection keeps no buffer */
    c->outoff = 0;
    note_handed(c);
    return true;
}

/* The handler's answer (made inline or by a worker) into c->out, and the
 * state after it. */
void hconn_answered(struct http_server *s, struct conn *c)
{
    struct http_req *rq = c->rq;
    if (rq->stream) {
        c->stream = rq->stream;
        rq->stream = NULL;
        pthread_mutex_lock(&c->stream->mu);
        c->stream->c = c;
        pthread_mutex_unlock(&c->stream->mu);
    }
    hanswer_format(s, c);
    if (c->stream) { /* what was sent before the head went out */
        pthread_mutex_lock(&c->stream->mu);
        buf_add(&c->out, c->stream->pending.data, c->stream->pending.len);
        buf_reset(&c->stream->pending);
        c->stream->handed = unsent(c);
        pthread_mutex_unlock(&c->stream->mu);
        c->st = C_STREAM;
        c->until = INT64_MAX;
    } else if (c->close_after) {
        c->st = C_WRITE;
        c->until = idle_deadline(s);
    } else { /* done with the request: the next one may be parsed */
        hreq_free(rq);
        c->rq = NULL;
        c->st = C_IDLE;
        c->until = idle_deadline(s);
    }
}

/* A refusal made here (malformed request, or one whose end is not known):
 * answered, then the connection closed. */
static void refuse(struct http_server *s, struct conn *c)
{
    struct http_req *rq = c->rq;
    char *body =
        s->o.error_body(s->o.cls, rq->err_status, rq->err_code, rq->err_field, rq->err_msg);
    rq->answered = false;
    http_respond(rq, rq->err_status, "application/json", body, strlen(body));
    rq->is_head = false;
    rq->keep_alive = false;
    c->close_after = true;
    hconn_answered(s, c);
}

void hconn_run_handler(struct http_server *s, struct http_req *rq)
{
    s->o.handler(s->o.cls, rq);
    if (!rq->answered) {
        char *body = s->o.error_body(s->o.cls, HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
                                     "no answer was made");
        http_respond(rq, HTTP_INTERNAL_SERVER_ERROR, "application/json", body, strlen(body));
    }
}

static void dispatch(struct http_server *s, struct conn *c)
{
    c->st = C_WORK;
    c->until = INT64_MAX;
    pthread_mutex_lock(&s->mu);
    c->qnext = NULL;
    if (s->work_tail)
        s->work_tail->qnext = c;
    else
        s->work_head = c;
    s->work_tail = c;
    if (s->idle_workers) /* else a busy worker takes it when done */
        pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Parse what c->in holds. true when the request was answered or handed
 * on (the state changed), false when more input is needed. */
static bool parse(struct http_server *s, struct conn *c)
{
    if (c->st == C_IDLE) {
        c->rq = hreq_new(c, s->o.body_max);
        c->st = C_HEAD;
        c->until = mono_ms() + (int64_t)s->o.header_timeout_s * 1000;
    }
    enum hreq_rc rc = hreq_feed(c->rq, &c->in);
    struct http_req *rq = c->rq;
    if (rc == HREQ_READY && rq->err_status) {
        refuse(s, c);
        return true;
    }
    if (rc == HREQ_READY) {
        if (s->o.runs_inline && s->o.runs_inline(s->o.cls, rq)) {
            hconn_run_handler(s, rq);
            hconn_answered(s, c);
        } else {
            dispatch(s, c);
        }
        return true;
    }
    if (rq->headers_done && c->st == C_HEAD) {
        c->st = C_BODY;
        c->until = idle_deadline(s);
        if (rq->expect_continue && !rq->continued) {
            rq->continued = true; /* behind any answer still waiting */
            buf_adds(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
    return false;
}

/* Read once into c->in. false when the connection was closed. */
static bool read_some(struct http_server *s, struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, s->scratch, sizeof s->scratch, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->rd_more = false; /* the next input edge brings us back */
            return true;
        }
        if (n <= 0 && c->st == C_IDLE && unsent(c)) {
            /* the client is done sending: finish writing what it asked */
            c->rd_more = false;
            c->close_after = true;
            c->st = C_WRITE;
            c->until = idle_deadline(s);
            return true;
        }
        if (n <= 0) { /* closed, or failed: nothing is answered on a broken request */
            hconn_close(s, c);
            return false;
        }
        /* A short read emptied the socket's queue: input arriving later is
         * a new edge. Past the peer's FIN, the end is still to be read. */
        if ((size_t)n < sizeof s->scratch && !c->rdhup)
            c->rd_more = false;
        if (c->st == C_LINGER)
            continue;
        if (c->st == C_BODY)
            c->until = idle_deadline(s);
        if (buf_add(&c->in, s->scratch, (size_t)n) != BUF_OK) {
            hconn_close(s, c); /* cannot be: the head and body limits come first */
            return false;
        }
        return true;
    }
}

/* A streamed answer's output is written: take what its sender queued
 * meanwhile, or finish it. false when the connection was closed. */
static bool stream_written(struct http_server *s, struct conn *c, bool *wait)
{
    struct http_stream *st = c->stream;
    pthread_mutex_lock(&st->mu);
    bool moved = st->pending.len > 0;
    if (moved) {
        buf_add(&c->out, st->pending.data, st->pending.len);
        buf_reset(&st->pending);
        st->handed = unsent(c);
    }
    bool ended = st->ended && !moved && !st->queued;
    pthread_mutex_unlock(&st->mu);
    *wait = !moved && !ended;
    if (*wait) {
        c->until = INT64_MAX; /* its owner ends it; a hang-up is seen */
        return true;
    }
    if (moved)
        return true;
    hstream_drop(st); /* ended: "gone" changes nothing for it */
    c->stream = NULL;
    if (c->close_after) {
        linger(s, c);
        return true;
    }
    hreq_free(c->rq);
    c->rq = NULL;
    c->st = C_IDLE;
    c->until = idle_deadline(s);
    return true;
}

/* Has the stream's sender been refused (the client reads too little)? */
static bool stream_broken(struct conn *c)
{
    pthread_mutex_lock(&c->stream->mu);
    bool b = c->stream->broken;
    pthread_mutex_unlock(&c->stream->mu);
    return b;
}

void hconn_drop_stalled(struct http_server *s, struct conn *c, const char *why)
{
    char ip[INET6_ADDRSTRLEN];
    hconn_addr(c, ip, sizeof ip);
    size_t pending = 0;
    if (c->stream) {
        pthread_mutex_lock(&c->stream->mu);
        pending = c->stream->pending.len;
        pthread_mutex_unlock(&c->stream->mu);
    }
    log_warn("api", "streamed answer to %s dropped: %s (%zu bytes unwritten)", ip, why,
             unsent(c) + pending);
    hconn_close(s, c);
}

bool hconn_drive(struct http_server *s, struct conn *c)
{
    for (;;) {
        switch (c->st) {
        case C_WORK:
            return true;
        case C_LINGER:
            while (c->rd_more)
                if (!read_some(s, c))
                    return false;
            return true;
        case C_STREAM:
            if (c->rdhup) { /* the client is gone: its stream's slot frees */
                hconn_close(s, c);
                return false;
            }
            if (c->stream && stream_broken(c)) {
                hconn_drop_stalled(s, c, "the client does not read, its stream's buffer is full");
                return false;
            }
            /* fall through */
        case C_WRITE:
            if (!send_out(s, c))
                return false;
            if (unsent(c))
                return true;
            if (c->st == C_WRITE) {
                linger(s, c);
                continue;
            }
            bool wait;
            if (!stream_written(s, c, &wait))
                return false;
            if (wait)
                return true;
            continue;
        case C_IDLE:
        case C_HEAD:
        case C_BODY:
            /* a new request only while the answers waiting are under the cap */
            if (c->in.len && (c->st != C_IDLE || unsent(c) < HTTP_OUT_CAP) && parse(s, c))
                continue;
            /* more input is needed: write the answers first */
            if (unsent(c) && !send_out(s, c))
                return false;
            if (c->st == C_IDLE && c->in.len) {
                if (unsent(c) >= HTTP_OUT_CAP)
                    return true; /* paused: the output edge resumes it */
                continue;
            }
            if (!c->rd_more)
                return true;
            if (!read_some(s, c))
                return false;
            continue;
        }
    }
}

void hconn_on_event(struct http_server *s, struct conn *c, uint32_t ev)
{
    if (c->fd < 0) /* closed earlier in this batch (on_wake, another event) */
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rd_more = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rdhup = true;
    hconn_drive(s, c);
}
