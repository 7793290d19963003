/* api: proxd's REST API (JSON under /v1, plus /healthz, /readyz, /metrics),
 * served by http.c (an epoll loop and a small pool of workers).
 *
 * Handlers never wait on Proxmox: they read the store and the inventory and
 * call core_* functions, which validate, reserve and enqueue. Slow answers
 * (the Server-Sent Events of a job) park their connection instead of holding
 * a thread (sse.c).
 *
 * Threads: api_start and api_stop from one thread (the daemon's main). */
#ifndef API_API_H
#define API_API_H

#include <stddef.h>

#include "core/core.h"

struct api;

/* The HTTP post that delivers webhooks (libcurl), for
 * core_set_webhook_transport before core_start. */
struct webhook_transport;
void api_webhook_transport(struct webhook_transport *out);

/* A socket listening on cfg->listen (port: the one bound, for port 0),
 * the caller's to close after the servers that borrow it have stopped;
 * -1 with err naming the address and the reason (in use, not resolved).
 * proxd listens before it opens its database: a port another program
 * holds is told at once, not after a database outage. */
int api_listen(const struct proxd_config *cfg, int *port, char *err, size_t errlen);

/* Start serving on listen_fd (api_listen's, borrowed: it must outlive the
 * server). The core, store and fleet are borrowed and must outlive the
 * server. NULL with a message in err on failure. */
struct api *api_start(const struct proxd_config *cfg, struct core *k, store *st, struct fleet *fl,
                      int listen_fd, char *err, size_t errlen);
/* Resume every parked stream, stop the server and free it. */
void api_stop(struct api *a);
/* The port actually bound (useful with port 0). */
int api_port(const struct api *a);

/* A listening socket's address as "host:port" ("[v6]:port"). */
void api_sock_text(int fd, char *out, size_t len);

/* While proxd opens its database, and waits for it when it does not
 * answer at start: once the open has taken 2 s or a try has failed
 * (before, connections wait in listen_fd's backlog: a healthy open is not
 * told to anyone), every request on listen_fd (borrowed) is answered
 * without it, by the loop thread: GET /healthz 200 (the process is alive
 * and will serve), /readyz 503 saying the wait, anything else 503
 * `unavailable` (`starting` before a try failed) with Retry-After, naming
 * the wait's tries and start (the database's own error, which names its
 * server, is for the log only). api_wait_stop ends it before api_start
 * takes listen_fd over; connections waiting in the socket's backlog
 * meanwhile are served by the new server. NULL (err says) when its
 * thread cannot start. Threads: start, tried and stop from one thread;
 * the server runs on its own. */
struct api_wait;
struct api_wait *api_wait_start(const struct proxd_config *cfg, int listen_fd, char *err,
                                size_t errlen);
/* So many tries to open the database have failed so far. */
void api_wait_tried(struct api_wait *w, int tries);
void api_wait_stop(struct api_wait *w);

/* One creation request as POST /v1/vms takes it in its body (o: an object
 * of its fields), decoded and checked as the route does for an admin, with
 * "owner" required (there is no caller to default to): proxd create --from.
 * On CORE_OK *r is filled (release it with vm_request_release) and fp gets
 * the fingerprint an Idempotency-Key is stored with, the one the route
 * computes when the caller's token is the VM owner's. Else CORE_E_INVALID
 * with err naming the field. o is not changed. Thread-safe. */
int api_create_decode(json_t *o, struct vm_request *r, char fp[65], struct core_error *err);

/* The routes the server serves, for the OpenAPI conformance test: method
 * and path template ("/v1/vms/{vmid}"). */
struct api_route_info {
    const char *method;
    const char *path;
};
size_t api_route_count(void);
const struct api_route_info *api_route_at(size_t i);

#endif
