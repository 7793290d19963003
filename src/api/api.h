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

/* Start serving on cfg->listen. The core, store and fleet are borrowed and
 * must outlive the server. NULL with a message in err on failure. */
struct api *api_start(const struct proxd_config *cfg, struct core *k, store *st, struct fleet *fl,
                      char *err, size_t errlen);
/* Resume every parked stream, stop the server and free it. */
void api_stop(struct api *a);
/* The port actually bound (useful with port 0). */
int api_port(const struct api *a);

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
