/* http_req: one request read from a connection's input.
 *
 * Two passes. First a scan of the head's lines, before http_parser sees any
 * of it, once the blank line that ends it is in: the size limits (a head
 * that grows past them is refused without waiting for its end), and the
 * framing rules that must hold before any body byte is trusted -
 * Transfer-Encoding refused (411: bodies come with a Content-Length), a
 * header name with a space or tab, two Content-Lengths that differ, a line
 * without a colon, obsolete line folding (400), a Content-Length that is not
 * a number (400) or is past the body limit (413). Two equal Content-Lengths
 * are accepted (RFC 9110 8.6); http_parser 2.9 refuses any repeat, so the
 * repeats are renamed in the input before it parses. Then http_parser
 * checks the grammar (method token, target characters, NUL bytes, the
 * version) and splits out the URL, headers and body. Every refusal is the
 * JSON error, made by the connection from err_*. */
#include "api/http_int.h"

#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* room for the raw head and its decoded path and arguments */
#define HEAD_BUF_MAX (2 * HTTP_URI_MAX + HTTP_HEADERS_MAX + 4 * HTTP_HEADERS_COUNT_MAX + 64)
/* a request line: the target plus a method and a version (the target's
 * own limit is checked exactly as it is parsed: on_url) */
#define REQLINE_MAX (HTTP_URI_MAX + 64)
#define URI_TOO_LONG_MSG "the request's path and query may have at most 8192 bytes"

void hreq_fail(struct http_req *rq, unsigned status, const char *code, const char *field,
               const char *msg)
{
    if (!rq->err_status) {
        rq->err_status = status;
        rq->err_code = code;
        rq->err_field = field;
        snprintf(rq->err_msg, sizeof rq->err_msg, "%s", msg);
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&rq->p);
    if (e == HPE_OK || e == HPE_PAUSED) /* pausing a failed parser would clear its error */
        http_parser_pause(&rq->p, 1);
}

static void fail_too_big_head(struct http_req *rq)
{
    hreq_fail(rq, HTTP_HEADER_FIELDS_TOO_LARGE, "headers_too_large", NULL,
              "the request's headers may have at most 16384 bytes in 100 lines");
}

/* ---- the scan --------------------------------------------------------------- */

static bool name_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && strncasecmp(name, want, n) == 0;
}

static void header_line(struct http_req *rq, const char *line, size_t l, size_t off)
{
    if (line[0] == ' ' || line[0] == '\t') {
        rq->fold = true;
        return;
    }
    const char *colon = memchr(line, ':', l);
    if (!colon || colon == line) {
        rq->no_colon = true;
        return;
    }
    size_t nl = (size_t)(colon - line);
    if (memchr(line, ' ', nl) || memchr(line, '\t', nl))
        rq->bad_name = true;
    const char *v = colon + 1, *end = line + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
    if (name_is(line, nl, "transfer-encoding")) {
        rq->te = true;
    } else if (name_is(line, nl, "content-length")) {
        if (!rq->cl_seen) {
            rq->cl_seen = true;
            rq->cl_len = vl;
            rq->cl_digits = vl > 0;
            for (size_t i = 0; i < vl; i++)
                rq->cl_digits = rq->cl_digits && v[i] >= '0' && v[i] <= '9';
            snprintf(rq->cl, sizeof rq->cl, "%.*s", (int)(vl < sizeof rq->cl ? vl : 0), v);
        } else if (vl != rq->cl_len || vl >= sizeof rq->cl || memcmp(v, rq->cl, vl) != 0) {
            rq->cl_differ = true;
        } else if (rq->ncl_dup < sizeof rq->cl_dup / sizeof rq->cl_dup[0]) {
            rq->cl_dup[rq->ncl_dup++] = off;
        } else {
            rq->cl_differ = true; /* more repeats than anyone sends */
        }
    }
}

/* The framing verdict once the whole head is in. */
static void head_verdict(struct http_req *rq, char *d)
{
    if (rq->te) {
        hreq_fail(rq, HTTP_LENGTH_REQUIRED, "length_required", "Transfer-Encoding",
                  "Transfer-Encoding is not accepted: send the body with a Content-Length");
    } else if (rq->bad_name) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "headers",
                  "a header name may not contain spaces or tabs");
    } else if (rq->cl_differ) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "Content-Length",
                  "Content-Length is given twice with different values");
    } else if (rq->no_colon) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "headers",
                  "a header line has no name and colon");
    } else if (rq->fold) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "headers",
                  "a header line may not start with a space or tab (obsolete line folding)");
    } else if (rq->cl_seen && !rq->cl_digits) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "Content-Length",
                  "Content-Length must be a whole number of bytes");
    } else if (rq->cl_seen && (rq->cl_len > 18 || strtoull(rq->cl, NULL, 10) > rq->body_max)) {
        char msg[80];
        snprintf(msg, sizeof msg, "the body may have at most %zu bytes", rq->body_max);
        hreq_fail(rq, HTTP_CONTENT_TOO_LARGE, "too_large", NULL, msg);
    }
    if (rq->err_status)
        return;
    for (size_t i = 0; i < rq->ncl_dup; i++) /* same length as "Content-Length" */
        memcpy(d + rq->cl_dup[i], "X-Repeated-Len", 14);
}

/* Scan the complete lines of the head from rq->scan on. */
static void prescan(struct http_req *rq, char *d, size_t n)
{
    while (rq->scan < n && !rq->head_len && !rq->err_status) {
        size_t start = rq->scan;
        const char *lf = memchr(d + start, '\n', n - start);
        size_t linelen = (lf ? (size_t)(lf - d) : n) - start;
        if (rq->lines == 0 && linelen > REQLINE_MAX) {
            hreq_fail(rq, HTTP_URI_TOO_LONG, "uri_too_long", NULL, URI_TOO_LONG_MSG);
            return;
        }
        if (rq->lines > 0 && start + linelen - rq->reqline > HTTP_HEADERS_MAX) {
            fail_too_big_head(rq);
            return;
        }
        if (!lf)
            return;
        size_t l = linelen && d[start + linelen - 1] == '\r' ? linelen - 1 : linelen;
        rq->scan = start + linelen + 1;
        if (rq->lines == 0) {
            if (l > 0) { /* blank lines before a request are skipped (RFC 9112 2.2) */
                rq->lines = 1;
                rq->reqline = rq->scan;
            }
            continue;
        }
        if (l == 0) {
            rq->head_len = rq->scan;
            head_verdict(rq, d);
            return;
        }
        if (++rq->lines > HTTP_HEADERS_COUNT_MAX + 1) {
            fail_too_big_head(rq);
            return;
        }
        header_line(rq, d + start, l, start);
    }
}

/* ---- http_parser's callbacks ---------------------------------------------------- */

static int add(struct http_req *rq, const char *at, size_t n)
{
    if (buf_add(&rq->head, at, n) != BUF_OK)
        fail_too_big_head(rq);
    return 0;
}

/* The target (path and query) is the head's first part: its own limit,
 * exact here; the head scan only bounds the whole request line. */
static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_req *rq = p->data;
    if (rq->head.len + n > HTTP_URI_MAX) {
        hreq_fail(rq, HTTP_URI_TOO_LONG, "uri_too_long", NULL, URI_TOO_LONG_MSG);
        return 0;
    }
    return add(rq, at, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_req *rq = p->data;
    if (rq->last != 1) { /* a new header: end the url or the last value */
        if (rq->nh == HTTP_HEADERS_COUNT_MAX || buf_addc(&rq->head, '\0') != BUF_OK) {
            fail_too_big_head(rq);
            return 0;
        }
        rq->h[rq->nh].name = rq->head.len;
        rq->h[rq->nh].value = SIZE_MAX;
        rq->nh++;
        rq->last = 1;
    }
    return add(rq, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_req *rq = p->data;
    if (rq->last != 2) {
        if (buf_addc(&rq->head, '\0') != BUF_OK) {
            fail_too_big_head(rq);
            return 0;
        }
        rq->h[rq->nh - 1].value = rq->head.len;
        rq->last = 2;
    }
    return add(rq, at, n);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Append s[0..n) percent-decoded (plus: '+' is a space) and a NUL; the
 * offset it starts at, or SIZE_MAX for an escaped NUL byte. Escapes that
 * are not two hex digits stay as they are. */
static size_t decode(struct http_req *rq, const char *s, size_t n, bool plus)
{
    size_t at = rq->head.len;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int hi, lo;
        if (c == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return SIZE_MAX;
            i += 2;
        } else if (plus && c == '+') {
            c = ' ';
        }
        if (buf_addc(&rq->head, c) != BUF_OK)
            return SIZE_MAX;
    }
    return buf_addc(&rq->head, '\0') == BUF_OK ? at : SIZE_MAX;
}

static bool split_query(struct http_req *rq, const char *q, size_t n)
{
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if (stop > q) {
            const char *eq = memchr(q, '=', (size_t)(stop - q));
            const char *kend = eq ? eq : stop;
            if (rq->nargs == HTTP_ARGS_MAX)
                return false;
            struct harg *a = &rq->args[rq->nargs];
            a->key = decode(rq, q, (size_t)(kend - q), true);
            a->value =
                eq ? decode(rq, eq + 1, (size_t)(stop - eq - 1), true) : decode(rq, "", 0, false);
            if (a->key == SIZE_MAX || a->value == SIZE_MAX)
                return false;
            rq->nargs++;
        }
        q = stop + 1;
    }
    return true;
}

/* The target: the path decoded, the query split into arguments. */
static void parse_target(struct http_req *rq)
{
    const char *url = rq->head.data;
    size_t n = strlen(url);
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, n, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "path", "the request's target is not a path");
        return;
    }
    /* copies: decode() may move head.data */
    char *path = xstrndup(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    char *qs = u.field_set & (1 << UF_QUERY)
                   ? xstrndup(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len)
                   : NULL;
    rq->path = decode(rq, path, strlen(path), false);
    if (rq->path == SIZE_MAX)
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "path",
                  "the path may not hold a NUL byte (%00)");
    else if (qs && !split_query(rq, qs, strlen(qs)))
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "query",
                  "the query string may have at most 64 arguments and no NUL byte (%00)");
    free(path);
    free(qs);
}

/* The headers proxd reads one value of (http_req_header gives the first).
 * Given again with another value, which one the client meant is not known
 * (a proxy in front may have read the other), so the request is refused
 * as two differing Content-Lengths are, not read by its first. */
static const char *const SINGLE_HEADERS[] = {"Authorization", "Content-Type", "Idempotency-Key",
                                             "Last-Event-ID"};

static void check_repeats(struct http_req *rq)
{
    for (size_t s = 0; s < sizeof SINGLE_HEADERS / sizeof *SINGLE_HEADERS; s++) {
        const char *first = NULL;
        for (size_t i = 0; i < rq->nh; i++) {
            if (strcasecmp(rq->head.data + rq->h[i].name, SINGLE_HEADERS[s]) != 0)
                continue;
            const char *v = rq->head.data + rq->h[i].value;
            if (!first) {
                first = v;
            } else if (strcmp(first, v) != 0) {
                char msg[96];
                snprintf(msg, sizeof msg, "%s is given twice with different values",
                         SINGLE_HEADERS[s]);
                hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", SINGLE_HEADERS[s], msg);
                return;
            }
        }
    }
}

static int on_headers_complete(http_parser *p)
{
    struct http_req *rq = p->data;
    if (buf_addc(&rq->head, '\0') != BUF_OK) {
        fail_too_big_head(rq);
        return 0;
    }
    if (rq->nh && rq->h[rq->nh - 1].value == SIZE_MAX) {
        if (buf_addc(&rq->head, '\0') != BUF_OK) {
            fail_too_big_head(rq);
            return 0;
        }
        rq->h[rq->nh - 1].value = rq->head.len - 1;
    }
    /* trailing blanks of values (http_parser drops the leading ones) */
    for (size_t i = 0; i < rq->nh; i++) {
        char *v = rq->head.data + rq->h[i].value;
        size_t l = strlen(v);
        while (l && (v[l - 1] == ' ' || v[l - 1] == '\t'))
            v[--l] = '\0';
    }
    rq->headers_done = true;
    if (p->http_major == 0) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "version",
                  "the request line needs a version: HTTP/1.1");
        return 0;
    }
    if (p->http_major != 1) {
        char msg[80];
        snprintf(msg, sizeof msg, "HTTP/%u.%u is not supported: use HTTP/1.1", p->http_major,
                 p->http_minor);
        hreq_fail(rq, HTTP_VERSION_NOT_SUPPORTED, "http_version_not_supported", "version", msg);
        return 0;
    }
    /* http_parser takes a CONNECT as the end of HTTP on the connection: it
     * calls the message complete after the head, its Content-Length unread,
     * and the bytes behind would be parsed as the next request. (A request
     * asking for an Upgrade has its body read first, and is answered in
     * HTTP/1.1 as if it had not asked.) */
    if (p->method == HTTP_CONNECT) {
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "method", "CONNECT is not served here");
        return 0;
    }
    parse_target(rq);
    if (!rq->err_status)
        check_repeats(rq);
    if (rq->err_status)
        return 0;
    rq->is_head = p->method == HTTP_HEAD;
    const char *exp = http_req_header(rq, "Expect");
    rq->expect_continue = exp && strcasecmp(exp, "100-continue") == 0 && p->http_minor >= 1;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_req *rq = p->data;
    if (buf_add(&rq->body, at, n) != BUF_OK) /* the Content-Length was checked: not reached */
        hreq_fail(rq, HTTP_CONTENT_TOO_LARGE, "too_large", NULL, "the body is past its limit");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_req *rq = p->data;
    rq->done = true;
    rq->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* pipelined bytes stay for the next request */
    return 0;
}

static const http_parser_settings SETTINGS = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void parse_failed(struct http_req *rq, enum http_errno e)
{
    char msg[160];
    switch (e) {
    case HPE_INVALID_METHOD:
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "method", "the method is not one HTTP knows");
        return;
    case HPE_INVALID_URL:
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "path",
                  "the request's target has bytes a URL may not have");
        return;
    case HPE_INVALID_VERSION:
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "version",
                  "the request line's version is not HTTP/1.0 or HTTP/1.1");
        return;
    case HPE_INVALID_HEADER_TOKEN:
    case HPE_LF_EXPECTED:
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "headers",
                  "a header line has bytes a header may not have");
        return;
    case HPE_HEADER_OVERFLOW:
        fail_too_big_head(rq);
        return;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", "Content-Length",
                  "Content-Length must be a whole number of bytes, given once");
        return;
    default:
        snprintf(msg, sizeof msg, "the request is malformed (%s)", http_errno_description(e));
        hreq_fail(rq, HTTP_BAD_REQUEST, "invalid", NULL, msg);
        return;
    }
}

/* ---- the request ------------------------------------------------------------------ */

struct http_req *hreq_new(void *conn, size_t body_max)
{
    struct http_req *rq = xcalloc(1, sizeof *rq);
    rq->conn = conn;
    rq->body_max = body_max;
    http_parser_init(&rq->p, HTTP_REQUEST);
    rq->p.data = rq;
    buf_init(&rq->head, HEAD_BUF_MAX);
    buf_init(&rq->body, body_max);
    return rq;
}

void hreq_free(struct http_req *rq)
{
    if (!rq)
        return;
    buf_release(&rq->head);
    buf_release(&rq->body);
    free(rq->ans);
    free(rq);
}

static void consume(struct buf *in, size_t n)
{
    if (n >= in->len) {
        in->len = 0;
        return;
    }
    memmove(in->data, in->data + n, in->len - n);
    in->len -= n;
}

enum hreq_rc hreq_feed(struct http_req *rq, struct buf *in)
{
    if (!rq->head_len) {
        prescan(rq, in->data, in->len);
        if (rq->err_status)
            return HREQ_READY;
        if (!rq->head_len)
            return HREQ_MORE;
    }
    if (in->len == 0)
        return HREQ_MORE;
    size_t used = http_parser_execute(&rq->p, &SETTINGS, in->data, in->len);
    consume(in, used);
    enum http_errno e = HTTP_PARSER_ERRNO(&rq->p);
    if (e == HPE_PAUSED)
        http_parser_pause(&rq->p, 0);
    else if (e != HPE_OK)
        parse_failed(rq, e);
    return rq->err_status || rq->done ? HREQ_READY : HREQ_MORE;
}

/* ---- accessors (http.h) --------------------------------------------------------------- */

const char *http_req_method(const struct http_req *rq)
{
    return http_method_str(rq->p.method);
}

const char *http_req_path(const struct http_req *rq)
{
    return rq->head.data + rq->path;
}

const char *http_req_header(const struct http_req *rq, const char *name)
{
    for (size_t i = 0; i < rq->nh; i++)
        if (strcasecmp(rq->head.data + rq->h[i].name, name) == 0)
            return rq->head.data + rq->h[i].value;
    return NULL;
}

bool http_req_arg(const struct http_req *rq, size_t i, const char **key, const char **value)
{
    if (i >= rq->nargs)
        return false;
    *key = rq->head.data + rq->args[i].key;
    *value = rq->head.data + rq->args[i].value;
    return true;
}

const char *http_req_query(const struct http_req *rq, const char *name)
{
    const char *k, *v;
    for (size_t i = 0; http_req_arg(rq, i, &k, &v); i++)
        if (strcmp(k, name) == 0)
            return v;
    return NULL;
}

const char *http_req_body(const struct http_req *rq, size_t *len)
{
    *len = rq->body.len;
    return rq->body.data ? rq->body.data : "";
}
