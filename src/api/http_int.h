/* http_int: what http.c (the loop and the connections), http_answer.c
 * (answers and streams) and http_req.c (parsing a request) share.
 * Internal to the HTTP server; the threads' rules are in http.c. */
#ifndef API_HTTP_INT_H
#define API_HTTP_INT_H

#include <http_parser.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "api/http.h"
#include "common/buf.h"

struct hoff {
    size_t name, value; /* offsets into head */
};

struct harg {
    size_t key, value; /* offsets into head (decoded) */
};

#define HTTP_ARGS_MAX 64

struct http_req {
    void *conn; /* the connection (http.c's) */
    http_parser p;
    size_t body_max;
    /* head: "url\0name\0value\0...", then the decoded path and arguments */
    struct buf head;
    struct hoff h[HTTP_HEADERS_COUNT_MAX];
    size_t nh;
    int last; /* 0 url, 1 header name, 2 header value */
    size_t path;
    struct harg args[HTTP_ARGS_MAX];
    size_t nargs;
    struct buf body;
    /* pre-scan of the head (before http_parser sees any of it) */
    size_t scan;     /* bytes of the input scanned */
    size_t lines;    /* lines scanned (request line included) */
    size_t head_len; /* the head's length once its end was seen, else 0 */
    size_t reqline;  /* the request line's length (with its line end) */
    bool te, bad_name, no_colon, fold, cl_seen, cl_differ, cl_digits;
    char cl[24]; /* the first Content-Length's value (trimmed, cut at 23) */
    size_t cl_len;
    size_t cl_dup[8]; /* offsets of repeated equal Content-Length lines */
    size_t ncl_dup;
    bool headers_done, done, keep_alive, expect_continue, continued, is_head;
    /* a refusal to answer (status 0: none) */
    unsigned err_status;
    const char *err_code, *err_field;
    char err_msg[200];
    /* the answer */
    bool answered, close;
    unsigned status;
    const char *ctype;
    char *ans;
    size_t ans_len;
    char hdrs[1024];
    size_t hdrs_len;
    struct http_stream *stream;
};

enum hreq_rc {
    HREQ_MORE,  /* everything was taken: read more */
    HREQ_READY, /* a whole request (or a refusal in err_status) */
};

struct http_req *hreq_new(void *conn, size_t body_max);
void hreq_free(struct http_req *rq);
/* Take what it can of in (consumed bytes are removed from its front). */
enum hreq_rc hreq_feed(struct http_req *rq, struct buf *in);
/* Record a refusal (the first one stays). */
void hreq_fail(struct http_req *rq, unsigned status, const char *code, const char *field,
               const char *msg);

/* ---- connections (http.c) ---- */
#define HTTP_IP_BUCKETS 1024
#define HTTP_READ_CHUNK (16 * 1024)
#define HTTP_LINGER_MS 2000
/* Answers waiting unwritten on one connection past which none of its
 * requests is read (the backpressure bound, http_conn.c). One answer may
 * pass it (a list page); the next request then waits. */
#define HTTP_OUT_CAP (64 * 1024)

enum cstate { C_IDLE, C_HEAD, C_BODY, C_WORK, C_WRITE, C_STREAM, C_LINGER };

struct ip_count {
    unsigned char ip[16];
    unsigned n;
    struct ip_count *next;
};

struct conn {
    int fd;
    struct http_server *srv;
    enum cstate st;
    int64_t until; /* mono ms; INT64_MAX: none */
    unsigned char ip[16];
    bool rd_more;   /* input may wait unread (an edge not followed to EAGAIN) */
    bool rdhup;     /* the peer's FIN (or an error) was seen */
    struct buf in;  /* read, not parsed yet */
    struct buf out; /* answers to write, in request order */
    size_t outoff;
    struct http_req *rq;
    bool close_after;
    struct http_stream *stream;
    struct conn *prev, *next; /* all connections */
    struct conn *qnext;       /* work or done queue */
};

struct http_stream {
    pthread_mutex_t mu;
    int refs;
    struct buf pending; /* chunks not handed to the loop yet */
    size_t handed;      /* handed to the loop, not written yet (the loop sets it) */
    bool ended, gone, queued;
    bool broken; /* a send was refused (pending full): close after the end */
    bool chunked;
    struct http_server *srv;
    struct conn *c; /* loop thread only; NULL once the connection is gone */
    struct http_stream *qnext;
};

struct http_server {
    struct http_options o;
    int lfd, ep, evfd;
    int port;
    pthread_t loop, *workers;
    unsigned nworkers;
    bool loop_running;
    struct conn *conns;
    unsigned nconns;
    /* closed in the current batch of events, freed after it: a later
     * event of the batch may still name one (its fd is -1 then) */
    struct conn *closed;
    struct ip_count *ips[HTTP_IP_BUCKETS];
    int64_t accept_paused_until;
    char scratch[HTTP_READ_CHUNK];
    char date[64];
    time_t date_at;
    /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn *work_head, *work_tail, *done;
    unsigned idle_workers; /* waiting on cv */
    struct http_stream *notify;
    bool stopping, workers_stop;
    int64_t drain_until;
};

/* Wake the loop (from any thread). */
void http_wake(struct http_server *s);
/* Close a connection (loop thread; never one in C_WORK): its socket and
 * buffers at once, its struct after the loop's batch of events
 * (hconn_reap), since an event of the batch may still point to it. */
void hconn_close(struct http_server *s, struct conn *c);
void hconn_reap(struct http_server *s);

/* ---- a connection's progress (http_conn.c, loop thread) ---- */
/* An epoll event on c: note it, then hconn_drive. */
void hconn_on_event(struct http_server *s, struct conn *c, uint32_t ev);
/* Take c as far as it goes without waiting. false when c was closed. */
bool hconn_drive(struct http_server *s, struct conn *c);
/* Run the handler on rq (a 500 when it made no answer). */
void hconn_run_handler(struct http_server *s, struct http_req *rq);
/* The handler's answer into c's output, and c's next state. */
void hconn_answered(struct http_server *s, struct conn *c);
/* Close c, a streamed answer that cannot go on, logging why. */
void hconn_drop_stalled(struct http_server *s, struct conn *c, const char *why);
/* c's peer address as text. */
void hconn_addr(const struct conn *c, char *dst, size_t len);

/* ---- answers and streams (http_answer.c) ---- */
/* The answer's status line, headers and body into c->out (loop thread). */
void hanswer_format(struct http_server *s, struct conn *c);
/* Drop one hold on a stream. */
void hstream_unref(struct http_stream *st);
/* The connection lets go of its stream: gone for the sender, and the
 * connection's hold dropped. */
void hstream_drop(struct http_stream *st);

#endif
