/* httpd_int: what pvesim's HTTP server's files share: httpd.c (listeners,
 * accept threads, the public API), httpd_conn.c (a connection's thread:
 * I/O with deadlines, TLS, serving requests in order), httpd_req.c
 * (parsing a request with http_parser) and httpd_resp.c (writing
 * answers). The limits and the threading rules are in httpd.c's opening
 * comment. Not for use outside src/sim/httpd*.c. */
#ifndef SIM_HTTPD_INT_H
#define SIM_HTTPD_INT_H

#include "sim/httpd.h"

#include "common/buf.h"

#include <http_parser.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

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
    IDLE_MS = 5000,        /* wait for a (next) request, or a request's next byte */
    PEEK_MS = 5000,        /* wait for the first byte: TLS or plain? */
    HANDSHAKE_MS = 10000,  /* TLS handshake */
    REQUEST_MS = 30000,    /* whole request once started (slowloris bound; not PVE's) */
    WRITE_MS = 30000,      /* whole response */
    LINGER_MS = 2000,      /* drain unread input before close */
    LINGER_BYTES = 1024 * 1024,
    TICK_MS = 50,         /* re-check period while sleeping or hanging */
    ACCEPT_TICK_MS = 250, /* accept thread: reap finished threads */
    INBUF = 16 * 1024,
    FILE_PIECE = 256 * 1024, /* a file body is read and sent this much at a time */
    THREAD_STACK = 1024 * 1024,
};

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
    atomic_uint_fast64_t handshakes; /* TLS handshakes completed, ever */
    atomic_uint_fast64_t resumed;    /* of which resumed a session (no signature) */
    /* TLS connections this server closed: after KEEPALIVE_MAX requests, or
     * idle for IDLE_MS (what makes a client's next call a new handshake) */
    atomic_uint_fast64_t closed_limit, closed_idle;
    pthread_mutex_t mu; /* the listener table; control path only */
    struct listener **ls;
    size_t nls;
};

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

/* ---- a connection's I/O and thread (httpd_conn.c) ---- */

/* Read up to n bytes: >0 bytes, 0 orderly EOF, -1 error, timeout or stop. */
ssize_t httpd_conn_read(struct conn *c, void *p, size_t n, int64_t deadline);
/* Write all n bytes before the deadline; 0, or -1. */
int httpd_conn_write(struct conn *c, const void *p, size_t n, int64_t deadline);
/* The connection thread (started by the listener's accept thread). */
void *httpd_conn_main(void *arg);

/* ---- requests (httpd_req.c) ---- */

void httpd_rq_init(struct rq *q, bool plain);
void httpd_rq_free(struct rq *q);
/* Record an HTTP-layer error (the first one wins; msg is taken) and stop
 * the parser. */
int httpd_rq_fail(struct rq *q, int status, char *msg);
const char *httpd_rq_str(const struct rq *q, size_t off);
const char *httpd_rq_header(const struct rq *q, const char *name);
/* Read and parse one request from c into q (pipelined bytes kept in c). */
int httpd_read_request(struct conn *c, struct rq *q);

/* ---- answers (httpd_resp.c) ---- */

/* A header value without CR or LF (safe to send). */
bool httpd_clean_value(const char *s);
void httpd_resp_init(struct http_resp *r);
void httpd_resp_free(struct http_resp *r);
int httpd_minor_of(const struct rq *q);
/* Serialise and send a response. keep: announce keep-alive; head_only: the
 * headers without the body (HEAD). */
int httpd_send_response(struct conn *c, const struct http_resp *r, int minor, bool keep,
                        bool head_only);
/* Answer q's HTTP-layer error (q->err, q->errmsg). */
void httpd_send_error(struct conn *c, const struct rq *q);

#endif
