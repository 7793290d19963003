/* httpd: pvesim's HTTP/1.1 server, built to look like pveproxy on the wire.
 *
 * Why not libmicrohttpd: real PVE puts its error message in the HTTP reason
 * phrase ("HTTP/1.1 500 VM 100 is running - destroy failed"), and clients
 * (proxmoxer) read it from there; libmicrohttpd cannot send custom reason
 * phrases. This server is small on purpose: Content-Length bodies only (PVE
 * refuses chunked too), thread per connection, request parsing by the
 * http-parser library.
 *
 * Wire behaviour (pve-api.md §1):
 *  - TLS (OpenSSL) on each listener; a plain-HTTP request on the same port gets
 *    301 (GET/HEAD) or 308 (others) to https://<Host><uri> and the connection
 *    is closed, as pveproxy does since 7.4.
 *  - Limits: request line + headers at most 8 KiB and 64 lines, body at most
 *    512 KiB ("501 for data too large"); chunked bodies get
 *    "501 chunked transfer encoding not supported". These HTTP-layer errors
 *    have a plain-text body (the message) and no content type.
 *  - Keep-alive: at most 100 requests per connection, 5 s idle timeout; every
 *    response with status >= 400 carries `Connection: close` and closes.
 *  - Every response carries Server: pve-api-daemon/3.0, Cache-Control:
 *    max-age=0, Pragma: no-cache, Date and Expires.
 *  - A listener can be switched to refuse connections (its socket is closed:
 *    clients get "connection refused") or to blackhole them (connections are
 *    accepted and never answered), to simulate a dead or hung node.
 *
 * Thread-safety: the handler is called concurrently from connection threads.
 * httpd_set_mode may be called from any thread, including from a handler. */
#ifndef SIM_HTTPD_H
#define SIM_HTTPD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef struct httpd httpd;

struct http_header {
    char *name; /* as received */
    char *value;
};

struct http_req {
    char method[16];         /* as received, e.g. "GET" */
    char *target;            /* raw request target: path and query, not decoded */
    char *path;              /* raw path (before '?'), not decoded */
    char *query;             /* raw query (after '?'), NULL when absent */
    struct http_header *hdr; /* nhdr headers, in order */
    size_t nhdr;
    char *body; /* body_len bytes, NUL-terminated */
    size_t body_len;
    int listener;       /* id returned by httpd_listen */
    void *listener_ctx; /* the ctx given to httpd_listen */
    char peer[64];      /* client address "ip:port" */
};

/* Case-insensitive header lookup; the first match or NULL. Borrowed. */
const char *http_req_header(const struct http_req *r, const char *name);

struct http_resp {
    int status;         /* default 200 */
    char *reason;       /* reason phrase, owned (xstrdup); NULL: the standard one */
    char *content_type; /* owned; NULL: no Content-Type header */
    struct buf headers; /* extra header lines, each "Name: value\r\n" */
    struct buf body;
    /* or a body shared with other answers (a cached answer, sent as it is,
     * never copied): used instead of `body` when `shared` is set;
     * shared_free(shared_ctx) is called once the response is done with it */
    const char *shared;
    size_t shared_len;
    void (*shared_free)(void *ctx);
    void *shared_ctx;
    /* or a file's whole content (a big answer written aside, sent in pieces
     * with its length known beforehand): used when body_fd >= 0; the
     * response owns the descriptor and closes it */
    int body_fd;
    bool close;    /* close the connection after this response */
    long delay_ms; /* wait this long before answering (PVE's 3 s 401 delay) */
    /* a delay a test may cut short: the answer goes at once when *delay_cut
     * no longer reads delay_gen (NULL: the delay runs out) */
    const atomic_uint *delay_cut;
    unsigned delay_gen;
    bool hang; /* never answer; hold the connection until the client leaves
                  or the listener is switched back (a hung node) */
    bool drop; /* the request was served, but its answer is lost: close the
                  connection without a byte (a proxy or link gone) */
};

/* Set status and reason (the reason is copied; only its first line is used,
 * and one that would contain CR/LF is replaced by the standard phrase). */
void http_resp_status(struct http_resp *r, int status, const char *reason);
void http_resp_header(struct http_resp *r, const char *name, const char *value);

typedef void (*http_handler)(void *ctx, const struct http_req *req, struct http_resp *resp);

enum httpd_mode {
    HTTPD_UP = 0,        /* serve */
    HTTPD_REFUSE = 1,    /* socket closed: connect() is refused */
    HTTPD_BLACKHOLE = 2, /* accept, never answer; existing connections go silent */
};

/* Create a server. cert_pem/key_pem: PEM text of the certificate and key,
 * copied. Returns NULL and sets *err (caller frees) on bad PEM. */
httpd *httpd_new(http_handler h, void *ctx, const char *cert_pem, const char *key_pem, char **err);

/* Start listening on "host:port" ("127.0.0.1:8006", "[::1]:8006"; port 0 picks
 * a free one). Returns a listener id >= 0, or -1 with *err set.
 * *bound_port (if given) receives the actual port. */
int httpd_listen(httpd *d, const char *hostport, void *listener_ctx, int *bound_port, char **err);

/* Change a listener's mode (see enum httpd_mode). Switching to REFUSE closes
 * the listening socket and drops open connections; back to UP rebinds the
 * same address. Returns 0, or -1 if rebinding failed. */
int httpd_set_mode(httpd *d, int listener, enum httpd_mode mode);

/* Stop accepting, close every connection, join all threads, free. */
/* TLS handshakes completed on all listeners since httpd_new: each is a
 * client's new connection (tests count a client's reuse of connections).
 * Thread-safe. */
uint64_t httpd_tls_handshakes(httpd *d);
/* Of those, the handshakes that resumed a session the client kept (a
 * ticket or session ID: no certificate, no signature). Thread-safe. */
uint64_t httpd_tls_resumed(httpd *d);
/* TLS connections the server closed since httpd_new: at the request limit
 * (100, pveproxy's) and idle (5 s without a request); the others were
 * closed by their clients or broke. Thread-safe. */
void httpd_tls_closes(httpd *d, uint64_t *at_limit, uint64_t *idle);
void httpd_free(httpd *d);

/* Generate a fresh self-signed certificate (RSA 2048, SHA-256, 10 years)
 * for CN=`cn` with SANs DNS:localhost, DNS:<cn>, IP:127.0.0.1, IP:::1, as a
 * fresh PVE node has. *cert_pem and *key_pem are owned by the caller.
 * Returns 0, or -1 with *err set. */
int tls_selfsigned(const char *cn, char **cert_pem, char **key_pem, char **err);

/* SHA-256 fingerprint of a PEM certificate as the Proxmox GUI shows it:
 * upper-case hex pairs joined by ':' (AA:BB:...). Caller frees; NULL on error. */
char *tls_fingerprint(const char *cert_pem);

#endif
