/* api_int: what the files of src/api/ share. Internal to src/api/.
 *
 * A request goes: http.c (connection, parsing, limits; http.h) -> server.c
 * on a worker thread -> router.c (route table, authentication, path
 * parameters) -> a handler in routes_*.c, which fills a struct resp that
 * server.c hands back to http.c. Handlers are small and never block on
 * anything but the store. */
#ifndef API_API_INT_H
#define API_API_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>

#include "api/api.h"
#include "api/auth.h"
#include "api/http.h"
#include "common/buf.h"

#define API_BODY_MAX (64 * 1024)
#define API_IDEM_STRIPES 64
#define API_PARAMS 2

struct sse_hub;

struct api {
    const struct proxd_config *cfg;
    struct core *k;
    store *st;
    struct fleet *fl;
    unsigned char key[AUTH_KEY_BYTES];
    struct http_server *http;
    int port;
    struct sse_hub *hub;
    /* Idempotent creations with the same key are serialised here, so that a
     * burst of retries makes one VM (striped: one lock per key hash). */
    pthread_mutex_t idem[API_IDEM_STRIPES];
    int64_t started_ms;
    /* counters for /metrics */
    pthread_mutex_t mu;
    uint64_t requests[6]; /* by status class: 1xx..5xx, index 1..5 */
};

struct req {
    struct api *api;
    struct http_req *hr; /* borrowed for the handler's call */
    const char *method;
    const char *path;
    char params[API_PARAMS][64]; /* path parameters, in pattern order */
    struct auth_identity who;
};

struct resp {
    unsigned status;
    json_t *body;    /* JSON answer (owned), or NULL */
    char *text;      /* or a text answer (owned) with its type */
    size_t text_len; /* its length, or 0: strlen(text) */
    const char *ctype;
    char location[128];   /* Location header when set */
    char allow[64];       /* Allow header (405) */
    unsigned retry_after; /* Retry-After header in seconds when > 0 */
    bool streamed;        /* answered already (an event stream) */
    bool close;           /* Connection: close (the request's framing is not trusted) */
};

typedef void (*route_fn)(struct req *rq, struct resp *rs);

/* ---- router.c ---- */
void router_dispatch(struct req *rq, struct resp *rs);
/* May the request be answered on the HTTP server's loop thread (its route
 * never waits: see the table)? Thread-safe. */
bool router_inline(const char *method, const char *path);

/* ---- codec.c: JSON in and out ---- */
/* Error answer {"error": {"code", "message", "details"}}; field may be NULL
 * (details then is {}). Any text may come from the network: bytes that are
 * not UTF-8 become U+FFFD, so the answer is always this JSON shape. */
void resp_error(struct resp *rs, unsigned status, const char *code, const char *field,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The same with details.node too (a node that is down). */
void resp_error_node(struct resp *rs, unsigned status, const char *code, const char *field,
                     const char *node, const char *msg);
/* The same with details.pool (an exhausted address pool). */
void resp_error_pool(struct resp *rs, unsigned status, const char *code, const char *field,
                     const char *pool, const char *msg);
/* The error text of every refusal that proxd sends outside a handler
 * (the HTTP server's own, http.h): a whole JSON document, NUL-terminated. */
char *error_json_text(const char *code, const char *field, const char *node, const char *msg);
/* The HTTP server on listen_fd (borrowed) with the configuration's
 * timeouts and API_BODY_MAX; o gives the rest (limits, workers, the
 * callbacks). NULL with err naming cfg->listen on failure. Both of proxd's
 * servers (server.c's, wait.c's) start so. */
struct http_server *api_http_start(const struct proxd_config *cfg, int listen_fd,
                                   struct http_options *o, char *err, size_t errlen);
void resp_json(struct resp *rs, unsigned status, json_t *body);
/* A JSON answer already written as text (jsonw.h): takes b's contents. */
void resp_json_text(struct resp *rs, unsigned status, struct buf *b);
/* What a caller is told when the database fails or proxd fails inside:
 * the store's own words (libpq's name the server's host and port and the
 * database user) go to the log only. */
#define API_DB_DOWN_TEXT "the database is not answering (the detail is in proxd's log)"
#define API_INTERNAL_TEXT                                                                          \
    "proxd could not complete the request: the database is not answering or proxd failed "         \
    "inside (the detail is in proxd's log)"
/* Map a core error to the HTTP answer (CORE_E_INTERNAL: 503 with
 * API_INTERNAL_TEXT, the message logged). */
void resp_core_error(struct resp *rs, const struct core_error *ce);
/* A store failure: 503 "unavailable" with API_DB_DOWN_TEXT, the store's
 * message logged. */
void resp_store_error(struct resp *rs, const struct store_error *se);
/* "2026-11-23T23:40:01.123Z", or JSON null for 0. */
json_t *json_time(int64_t unix_ms);
/* A VM record's JSON object appended to b: the one encoder of
 * GET /v1/vms and GET /v1/vms/{vmid}. BUF_OK or BUF_TOOBIG (b's cap). */
int vm_write_json(struct buf *b, const struct vm_rec *v, struct fleet *fl);
/* ,"network":{...} of a record's vm_net row (NULL: null) appended to b;
 * addresses from its recorded ipconfig0, each with the configured pool
 * holding it. vm_add_net: the same put inside the record that
 * vm_write_json just wrote (it ends at b->len == end). drift: what the
 * config walk found changed in the VM's config (core_net_drift), NULL:
 * none. BUF_OK or BUF_TOOBIG. */
int vm_net_json(struct buf *b, const struct store_net *net, const struct proxd_config *cfg,
                const char *drift);
int vm_add_net(struct buf *b, size_t end, const struct store_net *net,
               const struct proxd_config *cfg, const char *drift);
/* Cap on a JSON answer written as text: a page of 1000 records whose
 * strings are all full of escapes stays below it. */
#define API_ANSWER_MAX (16 * 1024 * 1024)
json_t *job_to_json(const struct job_rec *j);

enum field_type { FT_STRING, FT_INT, FT_BOOL, FT_STRINGS, FT_ARRAY, FT_OBJECT };
struct field {
    const char *name;
    enum field_type type;
    void *dst;  /* char[len] | int64_t | bool | char * (FT_STRINGS: joined by '\n', owned)
                 * | json_t * (FT_ARRAY, FT_OBJECT: borrowed from the raw body) */
    size_t len; /* string buffer size; FT_STRINGS: the cap on the joined text */
    bool *seen; /* set when present (may be NULL) */
};
/* Parse the request body as a JSON object of the given fields. An empty
 * body counts as {} when empty_ok. Refuses (400, naming the field) unknown
 * fields, wrong types, over-long strings; 415 a body that is not
 * application/json. Returns 0, or -1 with rs filled. */
int decode_body(struct req *rq, struct resp *rs, const struct field *f, size_t n, bool empty_ok,
                json_t **raw);
/* The same checks on an object already parsed (o stays the caller's). */
int decode_object(struct resp *rs, json_t *o, const struct field *f, size_t n);
/* Query string: every argument must be one of `allowed` (NULL-terminated),
 * given once; -1 with a 400 naming the first that is not. */
int check_query(struct req *rq, struct resp *rs, const char *const *allowed);
/* An argument's value; NULL when absent or empty (as a filter, empty is
 * no filter). Not for flags: see query_flag. */
const char *query(struct req *rq, const char *name);
/* A boolean argument: absent is false; "true", "1" and a bare ?name or
 * ?name= are true; "false" and "0" false. -1 with a 400 naming it for any
 * other value or a repeat. */
int query_flag(struct req *rq, struct resp *rs, const char *name, bool *on);
/* Parse a whole integer in [lo, hi] (query or path); -1 with a 400. */
int parse_int_arg(struct resp *rs, const char *name, const char *s, int64_t lo, int64_t hi,
                  int64_t *out);
/* A path's {vmid} as written in its canonical form: decimal digits, no
 * sign, no leading zero, 100 to 999999999. `+1000` or `01000` name no VM
 * (they reached VM 1000). */
bool path_vmid_parse(const char *s, int *vmid);

/* ---- routes ---- */
void h_vms_create(struct req *rq, struct resp *rs);
void h_vms_list(struct req *rq, struct resp *rs);
void h_vm_get(struct req *rq, struct resp *rs);
void h_vm_update(struct req *rq, struct resp *rs);
void h_vm_delete(struct req *rq, struct resp *rs);
void h_vm_resize(struct req *rq, struct resp *rs);
void h_vm_reinstall(struct req *rq, struct resp *rs);
void h_vm_action(struct req *rq, struct resp *rs);
void h_jobs_list(struct req *rq, struct resp *rs);
void h_job_get(struct req *rq, struct resp *rs);
void h_job_cancel(struct req *rq, struct resp *rs);
void h_job_events(struct req *rq, struct resp *rs);
void h_events(struct req *rq, struct resp *rs);
void h_events_stream(struct req *rq, struct resp *rs);
void h_webhooks(struct req *rq, struct resp *rs);
void h_webhook_seek(struct req *rq, struct resp *rs);
void h_webhook_forget(struct req *rq, struct resp *rs);

/* The event log's query (routes_events.c) and its stream (sse.c): events
 * after `after`, of `type` ("" any), of the caller's VMs only with own_only. */
struct event_query {
    int64_t after;
    int limit;
    char type[32];
};
void events_stream_open(struct req *rq, struct resp *rs, const struct event_query *q,
                        bool own_only);
void h_nodes(struct req *rq, struct resp *rs);
void h_node_cordon(struct req *rq, struct resp *rs);
void h_node_uncordon(struct req *rq, struct resp *rs);
void h_node_drain(struct req *rq, struct resp *rs);
/* {"cordoned", "cordoned_by", "cordoned_at", "cordon_source", "cordon_configurations"} of
 * a node (routes_nodes.c). */
json_t *cordon_json(struct api *a, const char *node);
void h_os(struct req *rq, struct resp *rs);
void h_quota(struct req *rq, struct resp *rs);
void h_healthz(struct req *rq, struct resp *rs);
void h_readyz(struct req *rq, struct resp *rs);
/* The /metrics page as it is written: every append goes through
 * mtext_printf, and the first one that would pass the cap marks the page
 * full and skips every later one, so a short line never follows a dropped
 * one (a page cut piecewise is malformed yet looks fine). A full page is
 * answered 500, never sent. */
struct mtext {
    struct buf b;
    bool full;
};
void mtext_printf(struct mtext *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void h_metrics(struct req *rq, struct resp *rs);
/* routes_ippool.c */
void h_ippools(struct req *rq, struct resp *rs);
void h_ippool_get(struct req *rq, struct resp *rs);
void h_ippool_addrs(struct req *rq, struct resp *rs);
void h_ippool_hold(struct req *rq, struct resp *rs);
void h_ippool_unhold(struct req *rq, struct resp *rs);
void h_ippool_range_add(struct req *rq, struct resp *rs);
void h_ippool_range_del(struct req *rq, struct resp *rs);
void ippool_metrics(struct api *a, struct mtext *b);
/* routes_snap.c */
void h_snap_list(struct req *rq, struct resp *rs);
void h_snap_create(struct req *rq, struct resp *rs);
void h_snap_delete(struct req *rq, struct resp *rs);
void h_snap_rollback(struct req *rq, struct resp *rs);
void snap_metrics(struct api *a, struct mtext *b);

/* ---- sse.c ---- */
struct sse_hub *sse_hub_new(struct api *a);
/* Stop the timer thread, then end every stream (before http_server_stop,
 * which writes the ends out). */
void sse_hub_shutdown(struct sse_hub *h);
void sse_hub_free(struct sse_hub *h);
/* How many streams are open and how many are parked (for /metrics). */
void sse_hub_counts(struct sse_hub *h, int *open, int *parked);

/* The job the caller may see (admins: any; users: their own), else a 404
 * in rs and -1. */
int job_visible(struct req *rq, struct resp *rs, const char *id, struct job_rec *out);

#endif
