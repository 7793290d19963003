/* http_answer: what a handler answers (http_respond*, http_add_header), its
 * bytes on the wire (hanswer_format, on the loop thread), and streamed
 * answers (http_stream_*, from any thread).
 *
 * A stream has up to three holds: its sender's (until http_stream_end),
 * its connection's (until the connection closes or the stream's end is
 * written), and the loop's notify list's while queued there. The sender
 * appends chunks to `pending` under the stream's lock and queues the stream
 * once; the loop moves `pending` to the connection's output. */
#include "api/http_int.h"

#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- streams ---------------------------------------------------------------------- */

void hstream_unref(struct http_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool last = --st->refs == 0;
    pthread_mutex_unlock(&st->mu);
    if (!last)
        return;
    buf_release(&st->pending);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* Put st on the loop's list (st->mu held). */
static void stream_notify(struct http_stream *st)
{
    if (st->queued)
        return;
    st->queued = true;
    st->refs++; /* the list's hold */
    struct http_server *s = st->srv;
    pthread_mutex_lock(&s->mu);
    bool first = !s->notify; /* else a wake is due already */
    st->qnext = s->notify;
    s->notify = st;
    pthread_mutex_unlock(&s->mu);
    if (first)
        http_wake(s);
}

bool http_stream_send(struct http_stream *st, const char *data, size_t len)
{
    if (!len)
        return !http_stream_gone(st);
    pthread_mutex_lock(&st->mu);
    bool open = !st->gone && !st->ended && !st->broken;
    /* room for the chunk's framing and the end's, within the cap on what
     * waits for the client: queued here and handed to the loop alike */
    bool ok = open && st->pending.len + st->handed + len + 32 < HTTP_STREAM_PENDING_MAX;
    if (open && !ok)
        st->broken = true; /* the client does not read: refused from now on */
    if (ok) {
        if (st->chunked)
            buf_printf(&st->pending, "%zx\r\n", len);
        buf_add(&st->pending, data, len);
        if (st->chunked)
            buf_add(&st->pending, "\r\n", 2);
        stream_notify(st);
    }
    pthread_mutex_unlock(&st->mu);
    return ok;
}

bool http_stream_gone(struct http_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool gone = st->gone;
    pthread_mutex_unlock(&st->mu);
    return gone;
}

void http_stream_end(struct http_stream *st)
{
    pthread_mutex_lock(&st->mu);
    if (!st->ended) {
        if (st->chunked && !st->gone)
            buf_add(&st->pending, "0\r\n\r\n", 5);
        if (st->c || !st->gone) /* a connection to finish (not one closed) */
            stream_notify(st);
    }
    st->ended = true;
    pthread_mutex_unlock(&st->mu);
    hstream_unref(st);
}

/* ---- answers ------------------------------------------------------------------------ */

static const char *reason(unsigned status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300 ? "OK" : status < 500 ? "Bad Request" : "Error";
    }
}

void http_respond(struct http_req *rq, unsigned status, const char *ctype, char *body, size_t len)
{
    if (rq->answered) {
        free(body);
        return;
    }
    rq->answered = true;
    rq->status = status;
    rq->ctype = ctype;
    rq->ans = body;
    rq->ans_len = body ? len : 0;
}

void http_add_header(struct http_req *rq, const char *name, const char *value)
{
    size_t room = sizeof rq->hdrs - rq->hdrs_len;
    if (strpbrk(name, "\r\n") || strpbrk(value, "\r\n"))
        return;
    int n = snprintf(rq->hdrs + rq->hdrs_len, room, "%s: %s\r\n", name, value);
    if (n > 0 && (size_t)n < room)
        rq->hdrs_len += (size_t)n;
    else
        rq->hdrs[rq->hdrs_len] = '\0';
}

void http_close_after(struct http_req *rq)
{
    rq->close = true;
}

struct http_stream *http_respond_stream(struct http_req *rq, const char *ctype)
{
    struct conn *c = rq->conn;
    struct http_stream *st = xcalloc(1, sizeof *st);
    st->srv = c->srv;
    pthread_mutex_init(&st->mu, NULL);
    st->refs = 2; /* the caller's and the connection's */
    buf_init(&st->pending, HTTP_STREAM_PENDING_MAX + 64);
    st->chunked = rq->p.http_minor >= 1;
    st->gone = rq->is_head; /* HEAD: the headers only */
    http_respond(rq, HTTP_OK, ctype, NULL, 0);
    rq->stream = st;
    return st;
}

/* The Date header line, made once a second (loop thread). */
static const char *date_header(struct http_server *s)
{
    time_t t = time(NULL);
    if (t != s->date_at) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(s->date, sizeof s->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        s->date_at = t;
    }
    return s->date;
}

/* The answer's bytes into c->out. */
void hanswer_format(struct http_server *s, struct conn *c)
{
    struct http_req *rq = c->rq;
    bool stream = c->stream != NULL;
    bool close = c->close_after || rq->close || !rq->keep_alive || (stream && !c->stream->chunked);
    c->close_after = close;
    buf_printf(&c->out, "HTTP/1.1 %u %s\r\n%s", rq->status, reason(rq->status), date_header(s));
    if (rq->ctype)
        buf_printf(&c->out, "Content-Type: %s\r\n", rq->ctype);
    bool empty = rq->status == HTTP_NO_CONTENT || rq->status == 304; /* no length, no body */
    if (empty)
        rq->ans_len = 0;
    else if (!stream)
        buf_printf(&c->out, "Content-Length: %zu\r\n", rq->ans_len);
    else if (c->stream->chunked)
        buf_adds(&c->out, "Transfer-Encoding: chunked\r\n");
    buf_add(&c->out, rq->hdrs, rq->hdrs_len);
    if (close)
        buf_adds(&c->out, "Connection: close\r\n");
    else if (rq->p.http_minor == 0)
        buf_adds(&c->out, "Connection: keep-alive\r\n");
    buf_adds(&c->out, "\r\n");
    if (!rq->is_head && rq->ans_len)
        buf_add(&c->out, rq->ans, rq->ans_len);
    free(rq->ans);
    rq->ans = NULL;
}

void hstream_drop(struct http_stream *st)
{
    pthread_mutex_lock(&st->mu);
    st->gone = true;
    st->c = NULL;
    pthread_mutex_unlock(&st->mu);
    hstream_unref(st);
}
