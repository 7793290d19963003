/* httpd_resp: writing answers: status line, pve-api-daemon's headers,
 * bodies from memory or a file in pieces, and the HTTP-layer errors. */
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

#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

static const char SERVER_HDR[] = "pve-api-daemon/3.0";

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

bool httpd_clean_value(const char *s)
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
        rc = httpd_conn_write(c, piece, (size_t)n, deadline);
        off += n;
    }
    free(piece);
    return rc;
}

/* Serialise and send a response. keep: announce keep-alive. */
int httpd_send_response(struct conn *c, const struct http_resp *r, int minor, bool keep,
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
    if (httpd_clean_value(r->content_type))
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
    int rc = httpd_conn_write(c, o.data, o.len, deadline);
    if (rc == 0 && apart)
        rc = body ? httpd_conn_write(c, body, blen, deadline)
                  : send_file(c, r->body_fd, blen, deadline);
    buf_release(&o);
    return rc;
}

void httpd_resp_init(struct http_resp *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    buf_init(&r->headers, BUF_UNLIMITED);
    buf_init(&r->body, BUF_UNLIMITED);
    r->body_fd = -1;
}

void httpd_resp_free(struct http_resp *r)
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

int httpd_minor_of(const struct rq *q)
{
    return q->p.http_major == 1 && q->p.http_minor == 0 ? 0 : 1;
}

/* An HTTP-layer error: the message as reason and as plain-text body. */
void httpd_send_error(struct conn *c, const struct rq *q)
{
    struct http_resp r;
    httpd_resp_init(&r);
    http_resp_status(&r, q->err, q->errmsg);
    buf_adds(&r.body, q->errmsg ? q->errmsg : ""); /* as is, as AnyEvent error() */
    httpd_send_response(c, &r, httpd_minor_of(q), false, false);
    c->linger = true;
    httpd_resp_free(&r);
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
    if (!httpd_clean_value(name) || !httpd_clean_value(value) || !*name)
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
