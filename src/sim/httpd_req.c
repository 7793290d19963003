/* httpd_req: reading one request: http_parser callbacks collecting the
 * request line and headers into one buffer (bounded: HEAD_MAX bytes,
 * HEAD_LINES_MAX lines, BODY_MAX body), 100-continue, and the HTTP-layer
 * errors answered as pve-api-daemon does. */
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

/* ---- request parsing ---------------------------------------------------- */

void httpd_rq_init(struct rq *q, bool plain)
{
    memset(q, 0, sizeof *q);
    q->plain = plain;
    buf_init(&q->head, HEAD_MAX);
    buf_init(&q->body, BODY_MAX);
}

void httpd_rq_free(struct rq *q)
{
    buf_release(&q->head);
    buf_release(&q->body);
    free(q->errmsg);
}

/* Record an HTTP-layer error (first one wins) and stop the parser. */
int httpd_rq_fail(struct rq *q, int status, char *msg)
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
    return httpd_rq_fail(q, 400, xstrdup("Bad Request"));
}

const char *httpd_rq_str(const struct rq *q, size_t off)
{
    return q->head.data + off;
}

const char *httpd_rq_header(const struct rq *q, const char *name)
{
    for (size_t i = 0; i < q->nh; i++)
        if (strcasecmp(httpd_rq_str(q, q->h[i].name), name) == 0)
            return httpd_rq_str(q, q->h[i].value);
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
    const char *te = httpd_rq_header(q, "Transfer-Encoding");
    if (te) {
        if (strcasestr(te, "chunked"))
            return httpd_rq_fail(q, 501, xstrdup("chunked transfer encoding not supported"));
        return httpd_rq_fail(q, 501, xasprintf("Unknown transfer encoding '%s'", te));
    }
    if (q->p.content_length != ULLONG_MAX && q->p.content_length > BODY_MAX)
        return httpd_rq_fail(q, 501, xstrdup("for data too large"));
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
        return httpd_rq_fail(q, 501, xstrdup("for data too large"));
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
        httpd_rq_header(q, "Transfer-Encoding"))
        check_body(q);
    if (e == HPE_HEADER_OVERFLOW)
        too_large(q);
    httpd_rq_fail(q, 400, xstrdup("Bad Request"));
}

static int send_continue(struct conn *c, struct rq *q)
{
    const char *exp = httpd_rq_header(q, "Expect");
    if (!exp || strcasecmp(exp, "100-continue") != 0 || q->p.http_minor == 0)
        return 0;
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return httpd_conn_write(c, msg, sizeof msg - 1, mono_ms() + WRITE_MS);
}

/* Read one request into q. 1: a request (or q->err to answer); 0: the peer
 * closed or idled out before a request started; -1: broken mid-request.
 * Either non-1 result closes the connection silently. */
int httpd_read_request(struct conn *c, struct rq *q)
{
    /* pveproxy's handle times out after IDLE_MS without a byte, before a
     * request as within one (AnyEvent::Handle's timeout, 5 s); REQUEST_MS
     * bounds a request that trickles in (slowloris), which pveproxy does not */
    bool started = c->inoff < c->inlen;
    int64_t t0 = mono_ms(), end = t0 + REQUEST_MS;
    int64_t deadline = t0 + IDLE_MS;
    bool continued = false;

    http_parser_init(&q->p, HTTP_REQUEST);
    q->p.data = q;
    for (;;) {
        if (c->inoff == c->inlen) {
            c->inoff = c->inlen = 0;
            ssize_t n = httpd_conn_read(c, c->in, sizeof c->in, deadline);
            if (n <= 0)
                return started ? -1 : 0;
            if (!started) {
                started = true;
                end = mono_ms() + REQUEST_MS;
            }
            int64_t now = mono_ms();
            deadline = now + IDLE_MS < end ? now + IDLE_MS : end;
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
