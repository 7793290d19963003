/* http: proxd's HTTP/1.1 server (connections, request parsing, answers).
 *
 * Why our own and not libmicrohttpd: Debian bookworm's libmicrohttpd 0.9.75
 * answers a malformed request head (a header line without a colon, a bad
 * Content-Length, an HTTP version other than 1.x, a request line or headers
 * past its memory pool) itself, before any callback runs, with a
 * compiled-in HTML page that no option replaces; proxd promises the JSON
 * error shape for every answer. libevent's evhttp and h2o hard-code
 * non-JSON bodies too. Here every refusal goes through opts.error_body.
 *
 * Shape: one event loop thread (epoll: accept, read, parse with
 * http_parser, write, timers) and a small fixed pool of workers that run
 * the handler; a worker's answer is written by the loop. A request that
 * opts.runs_inline accepts is answered on the loop thread instead (no
 * hand-off: for handlers that cannot wait). Answers on one connection go
 * out in request order (pipelining: the next request is parsed once the
 * previous one is answered). A streamed answer (SSE)
 * keeps its connection open, "parked": another thread sends to it with
 * http_stream_send() and ends it with http_stream_end().
 *
 * Bounds: opts.conn_limit connections, opts.per_ip_limit per address (past
 * either, a new connection is closed at once); the request line URI_MAX
 * bytes (414), the headers HEADERS_MAX bytes and HEADERS_COUNT_MAX lines
 * (431), the body opts.body_max (413, refused from its Content-Length
 * before any of it is read); answers waiting to be written on one
 * connection: past HTTP_OUT_CAP (http_int.h, 64 KiB) none of its requests
 * is read until the client reads (the kernel's buffers then hold the
 * client back); the head must be complete within
 * header_timeout_s of its first byte, a connection may idle idle_timeout_s
 * between requests or while a body or an answer stalls. A framing error
 * (anything that makes the end of the request uncertain) is answered and
 * the connection closed: the bytes behind it are never read as a request.
 *
 * Threads: handlers run on the workers, several at once (and on the loop
 * thread for runs_inline requests); a struct http_req
 * belongs to the one handler call it is given to, and must not be used
 * after it returns. http_stream_* are thread-safe. */
#ifndef API_HTTP_H
#define API_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* status codes proxd answers with */
enum {
    HTTP_OK = 200,
    HTTP_CREATED = 201,
    HTTP_ACCEPTED = 202,
    HTTP_NO_CONTENT = 204,
    HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401,
    HTTP_FORBIDDEN = 403,
    HTTP_NOT_FOUND = 404,
    HTTP_METHOD_NOT_ALLOWED = 405,
    HTTP_CONFLICT = 409,
    HTTP_LENGTH_REQUIRED = 411,
    HTTP_CONTENT_TOO_LARGE = 413,
    HTTP_URI_TOO_LONG = 414,
    HTTP_UNSUPPORTED_MEDIA_TYPE = 415,
    HTTP_TOO_MANY_REQUESTS = 429,
    HTTP_HEADER_FIELDS_TOO_LARGE = 431,
    HTTP_INTERNAL_SERVER_ERROR = 500,
    HTTP_BAD_GATEWAY = 502,
    HTTP_SERVICE_UNAVAILABLE = 503,
    HTTP_VERSION_NOT_SUPPORTED = 505,
};

#define HTTP_URI_MAX (8 * 1024)               /* request line's target */
#define HTTP_HEADERS_MAX (16 * 1024)          /* all header lines together */
#define HTTP_HEADERS_COUNT_MAX 100            /* header lines */
#define HTTP_STREAM_PENDING_MAX (1024 * 1024) /* unsent stream bytes */

struct http_server;
struct http_req;
struct http_stream;

struct http_options {
    const struct sockaddr *addr; /* where to listen (IPv4 or IPv6); NULL: listen_fd */
    socklen_t addrlen;
    /* With addr NULL: a socket listening already (http_listen), borrowed:
     * the server accepts on it and stops accepting at its stop, but never
     * closes it, so that another server may take it over (connections
     * waiting in its backlog meanwhile are kept). */
    int listen_fd;
    unsigned conn_limit, per_ip_limit, workers;
    int idle_timeout_s, header_timeout_s;
    size_t body_max;
    size_t thread_stack; /* 0: the default */
    /* Runs on a worker for each request; must answer (http_respond or
     * http_respond_stream) before it returns, else the answer is a 500. */
    void (*handler)(void *cls, struct http_req *rq);
    /* NULL, or: may the handler answer rq on the loop thread itself? Only
     * for a handler that never blocks (no store, no Proxmox, no lock held
     * long): every connection waits while it runs. Called on the loop
     * thread once rq is whole. */
    bool (*runs_inline)(void *cls, const struct http_req *rq);
    /* The body of a refusal the server makes itself (malformed or oversized
     * request): a NUL-terminated application/json document, malloc'd (the
     * server frees it). Called on the loop thread, also to count it. */
    char *(*error_body)(void *cls, unsigned status, const char *code, const char *field,
                        const char *msg);
    void *cls;
};

/* A non-blocking socket bound to sa and listening, for opts.listen_fd;
 * -1 with the reason in err (the address in use). */
int http_listen(const struct sockaddr *sa, socklen_t len, int *port, char *err, size_t errlen);

/* Listen and start the threads. NULL with a message in err on failure
 * (address in use, no threads). */
struct http_server *http_server_start(const struct http_options *opts, char *err, size_t errlen);
/* The port listened on (the one chosen, for port 0). */
int http_server_port(const struct http_server *s);
/* Stop accepting, wait up to drain_ms for answers and ended streams to be
 * written, then close every connection, join the threads and free s.
 * Streams still open are told they are gone (http_stream_send -> false);
 * their owners must end them. NULL is fine. */
void http_server_stop(struct http_server *s, int64_t drain_ms);

/* ---- the request (borrowed for the handler's call) ---- */
const char *http_req_method(const struct http_req *rq);
/* The path, percent-decoded (no query). */
const char *http_req_path(const struct http_req *rq);
/* A header's value (first of that name, case-insensitive), or NULL. */
const char *http_req_header(const struct http_req *rq, const char *name);
/* Query arguments, percent-decoded ('+' is a space), in order; value is ""
 * for "?k". false past the last. */
bool http_req_arg(const struct http_req *rq, size_t i, const char **key, const char **value);
/* The first argument named name, or NULL. */
const char *http_req_query(const struct http_req *rq, const char *name);
const char *http_req_body(const struct http_req *rq, size_t *len);

/* ---- the answer ---- */
/* Answer with body (taken: malloc'd, or NULL with len 0). Once only. */
void http_respond(struct http_req *rq, unsigned status, const char *ctype, char *body, size_t len);
/* An extra header line for the answer (before http_respond); dropped past
 * a small fixed room (1 KiB in all). name and value must be one line. */
void http_add_header(struct http_req *rq, const char *name, const char *value);
/* Close the connection after the answer. */
void http_close_after(struct http_req *rq);
/* Answer 200 with a body of unknown length that the caller sends later
 * (chunked): the caller holds the stream until http_stream_end. */
struct http_stream *http_respond_stream(struct http_req *rq, const char *ctype);
/* Queue bytes (sent as one chunk). false when the client is gone, or
 * does not read (HTTP_STREAM_PENDING_MAX bytes would wait: this send and
 * every later one are dropped, and the connection is closed at once, with
 * a warning in the log): end the stream then. A stream whose written
 * bytes make no progress for idle_timeout is closed likewise. */
bool http_stream_send(struct http_stream *st, const char *data, size_t len);
/* Has the client closed its end (or the server stopped)? */
bool http_stream_gone(struct http_stream *st);
/* Finish the stream (what was queued is still written) and release the
 * caller's hold; st must not be used after. */
void http_stream_end(struct http_stream *st);

#endif
