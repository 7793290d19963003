/* libpve internals shared by client.c, http.c, auth.c, error.c, retry.c and
 * task.c. Not part of the public contract (pve.h). */
#ifndef PVE_PVE_INT_H
#define PVE_PVE_INT_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/buf.h"
#include "pve/pve.h"
#include "pve/pve_api.h"

#define PVE_SUB "pve"
#define PVE_BODY_MAX (16u << 20) /* responses larger than this are refused */
#define PVE_FP_LEN 32            /* SHA-256 */
#define PVE_MAX_PINS 16
#define PVE_HOST_BACKOFF_MIN_MS 1000
#define PVE_HOST_BACKOFF_MAX_MS 60000
#define PVE_WARM_MS PVE_OPEN_IDLE_MS /* a connection used this recently is still open */
#define PVE_WARM_WAIT_MS 25          /* how long a call waits for a warm connection in use */

/* Internal call flags, above the public ones in pve.h. */
enum {
    PVE_F_NOAUTH = 1 << 8,     /* send no credentials (login) */
    PVE_F_TASKPOLL = 1 << 9,   /* count in stats.task_polls */
    PVE_F_NORELOGIN = 1 << 10, /* a 401 is final (renewal) */
    /* with PVE_CALL_PROBE: a renewal, whose timeout is the auth's
     * renew_ms (a glance at first, longer after renewals that timed out) */
    PVE_F_RENEW = 1 << 11
};

struct pve_host {
    char name[128];     /* "host:port", as in err->host */
    char base[192];     /* "https://host:port/api2/json" */
    int64_t down_until; /* monotonic ms; the host is skipped before this */
    long backoff_ms;    /* next down period, doubles up to the max */
    bool checked;       /* connectivity verified since it was last down */
};

/* One pooled easy handle; the TLS pin check reports through it. */
struct pve_conn {
    CURL *h;
    struct pve_conn *next;
    pve_client *c;
    int64_t used_ms; /* mono ms its last exchange ended well; 0: none, or it failed */
    bool fp_mismatch;
    char seen_fp[3 * PVE_FP_LEN];
    char errbuf[CURL_ERROR_SIZE];
};

/* Tickets are renewed single-flight and off the lock: mu guards the fields
 * and is never held across a request, so a renewal that hangs on a slow
 * /access/ticket holds up no other call while the current ticket is valid;
 * only calls that have no valid ticket wait (on cv, with a deadline when
 * they have a short bound) for the login under way, and share its result.
 * token_hdr, user and password do not change after pve_auth_init. */
struct pve_auth_state {
    pthread_mutex_t mu; /* guards the fields below but the immutable ones */
    pthread_cond_t cv;  /* a flight (login or renewal) ended */
    char *token_hdr;    /* "Authorization: PVEAPIToken=..." or NULL */
    char *user;
    char *who; /* who Proxmox records as a task's user: the token's id, or the user */
    char *password;
    char *ticket; /* current ticket and its CSRF token, or NULL */
    char *csrf;
    int64_t ticket_ms; /* monotonic time the login or renewal that got it was sent */
    unsigned gen;      /* bumped at every new ticket */
    int64_t renew_at;  /* monotonic time from which a renewal is due (later after a failed one) */
    bool flying;       /* a login or renewal is under way (there is at most one) */
    long flying_bound; /* ... within this timeout (ms, sent once), or 0: the client's, retried */
    unsigned flights;  /* flights ended: a waiter's tells it its flight ended */
    int flight_rc;     /* the last flight's result, and its error, for its waiters */
    struct pve_error flight_err;
    long flight_bound; /* its bound: its failure is not that of a waiter with a longer one */
    /* the next renewal's timeout (ms; 0: a glance): doubled after each that
     * timed out, up to the client's timeout, so that a server always slower
     * than a glance (a pvedaemon whose few workers are busy) still renews the
     * ticket before it expires; back to a glance after one succeeded. Read
     * without mu by the request that carries it. */
    atomic_long renew_ms;
};

/* How many of its tasks a client remembers (pve_client_task_seen). */
#define PVE_SEEN_MAX 256

/* How long tasks of one kind took (poll.c). */
#define PVE_EXPECT_MAX 64
#define PVE_EXPECT_KEY 168
struct pve_expect {
    char key[PVE_EXPECT_KEY]; /* node:type[:template]; "" = free */
    double ms;                /* EWMA of observed durations */
    uint64_t used;            /* expect_clock at last use: LRU */
};

struct pve_client {
    char *name;
    long connect_timeout_ms, timeout_ms, probe_timeout_ms, ticket_renew_s, ticket_lifetime_s;
    struct pve_retry retry;
    bool json_bodies, insecure;
    void (*on_node_failure)(void *ud, const char *node, const struct pve_error *e);
    void (*on_node_answer)(void *ud, const char *node, int64_t sent_ms);
    void *hook_ud;
    char *ca_file;
    unsigned char pins[PVE_MAX_PINS][PVE_FP_LEN];
    size_t npins;

    pthread_mutex_t host_mu; /* guards hosts[].down_until/backoff_ms/checked */
    struct pve_host *hosts;
    size_t nhosts;

    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;          /* a handle came back */
    struct pve_conn *pool;           /* idle handles, the last one back first */
    int busy;                        /* handles out in exchanges */
    atomic_int_least64_t last_ok_ms; /* mono ms the last exchange ended well; 0: none */

    struct pve_auth_state auth;

    atomic_uint_least64_t requests, task_polls, retries, failovers, logins;

    pthread_mutex_t stats_mu; /* guards calls */
    struct pve_callstat *calls;
    size_t ncalls;

    pthread_mutex_t expect_mu; /* guards expect, expect_clock */
    struct pve_expect expect[PVE_EXPECT_MAX];
    uint64_t expect_clock;

    pthread_mutex_t seen_mu;     /* guards seen, seen_next */
    uint64_t seen[PVE_SEEN_MAX]; /* hashes of the tasks known as ours (a ring) */
    unsigned seen_next;
    struct pve_task_registry reg; /* under seen_mu; fn NULL: none */
};

/* ---- poll.c ---- */
/* Expected duration of a task like t (0: none seen yet), and a new
 * observation of one that ended OK after ms: the expectation moves toward
 * it (an EWMA), or rises to it at once, at most doubled, with `raise` (a
 * short kind overran it: looking at the old one again costs overdue looks).
 * Thread-safe. */
long pve_task_expect(pve_client *c, const struct pve_task *t);
void pve_task_observed(pve_client *c, const struct pve_task *t, long ms, bool raise);
/* The pure parts: what a wait whose last look at the task running came
 * last_running_ms after its start (0: none did) and whose look that saw it
 * end came seen_ms after teaches, given the expectation it had (0: none);
 * *overdue tells pve_task_observed to raise. And an expectation's next value. */
long pve_task_learned(long last_running_ms, long seen_ms, long expect_ms, bool *overdue);
double pve_expect_next(double cur_ms, long ms, bool raise);

/* The copy progress in a task log line ("transferred X of Y (P%)"): true
 * and *pct in 0..100 when the line is one. Pure. */
bool pve_progress_pct(const char *line, double *pct);

/* Progress readings of one copy (zero-initialised before the first): the
 * first, and the last PVE_ETA_READINGS that moved, each when (ms into the
 * wait) and at what percentage. A lower percentage starts a new copy (the
 * next disk). Pure. */
#define PVE_ETA_READINGS 8
struct pve_eta {
    long t_first, t[PVE_ETA_READINGS];
    double p_first, p[PVE_ETA_READINGS];
    int n; /* readings that moved since the copy started */
};
void pve_eta_note(struct pve_eta *e, long elapsed_ms, double pct);
/* When the copy should end, in ms into the wait: from the rate over the
 * last stretch (or since the first reading), or from one reading above 0%
 * (the copy started no earlier than the wait); 0: not known yet. Taken a
 * little late: a reading is the last step printed, behind the copy. */
long pve_eta_end(const struct pve_eta *e);

/* The bounds of the copy's end (ms into the wait) that the readings allow:
 * a reading is the last 1% step printed, up to a step behind the copy, and
 * the copy began at or after the wait; false while they allow no bound.
 * Pure. */
bool pve_eta_range(const struct pve_eta *e, long *lo, long *hi);

/* The sleep before the next look: pve_task_poll_delay() on the expectation,
 * or for a task whose log is read (logged: a clone) on the copy's expected
 * end once the readings tell it, the first look within 1 s; straight to the
 * end (sleeps of at most 60 s) when the readings pin it down within 10% or
 * agree with expect_ms (what clones of the template took on the node).
 * Pure. */
long pve_task_next_delay(bool logged, long elapsed_ms, long prev_ms, long expect_ms,
                         const struct pve_eta *eta);

/* ---- callstats.c ---- */
void pve_callstat_note(pve_client *c, const char *method, const char *path, double seconds,
                       bool error);

/* Credentials for one request, copied out of the auth state. */
struct pve_creds {
    char *auth_hdr; /* full header line or NULL */
    char *cookie;   /* "PVEAuthCookie=<ticket>" or NULL */
    char *csrf_hdr; /* "CSRFPreventionToken: <token>" or NULL */
    unsigned gen;   /* ticket generation the request used */
};

/* A task look's guard (task.c, pve_wait_opts.held_down): nonzero when the
 * caller holds the request's node down. Then the request gets at most the
 * probe timeout (one already in flight is cut off once it has run that
 * long) and is not sent again after a failure. */
struct pve_guard {
    int (*fn)(void *ud);
    void *ud;
};

/* ---- http.c ---- */
struct pve_req {
    const char *method;
    const char *path; /* encoded, relative to /api2/json */
    json_t *params;   /* may be NULL */
    const struct pve_creds *creds;
    bool json_body;
    bool raw_ok;                   /* hand a 2xx body over unparsed (rs->raw) */
    long timeout_ms;               /* this request's whole time; 0: the client's */
    const struct pve_guard *guard; /* may be NULL */
};

struct pve_resp {
    long status;              /* 0 when no HTTP answer */
    char reason[PVE_MSG_MAX]; /* status line reason phrase */
    json_t *body;             /* parsed JSON body or NULL */
    struct buf raw;           /* with rq->raw_ok: a 2xx body, unparsed (body is NULL) */
    CURLcode cc;              /* transport result */
    char curl_msg[CURL_ERROR_SIZE + 128];
    bool host_failed; /* refused, connect timeout, reset before sending */
    bool maybe_sent;  /* failed after the request went out */
    bool closed;      /* ... the server closing the connection (not a timeout) */
    bool tls_failed;  /* certificate refused */
};

/* Encode params as a query string / form body / JSON body. PVE_E_INVALID on
 * values that are not string, integer, real or boolean (message in err). */
int pve_encode_form(json_t *params, struct buf *out, struct pve_error *err);
int pve_encode_json(json_t *params, struct buf *out, struct pve_error *err);
/* One HTTP exchange with host h. Returns 0 when an HTTP answer came back
 * (any status), -1 on a transport failure (rs->cc and flags set). */
int pve_http_perform(pve_client *c, const struct pve_host *h, const struct pve_req *rq,
                     struct pve_resp *rs);
void pve_resp_clear(struct pve_resp *rs);
struct pve_conn *pve_conn_get(pve_client *c);
/* ok: the exchange ended well (its connection stays open and warm). */
void pve_conn_put(pve_client *c, struct pve_conn *k, bool ok);
void pve_pool_free(pve_client *c);
/* Parse "AA:BB:..." (colons optional) into 32 bytes; -1 if malformed. */
int pve_fp_parse(const char *s, unsigned char out[PVE_FP_LEN]);
void pve_fp_format(const unsigned char fp[PVE_FP_LEN], char *out, size_t len);

/* ---- client.c ---- */
/* The flags that give a call a short timeout of its own (PVE_CALL_PROBE,
 * with PVE_CALL_GLANCE), with PVE_CALL_PROBE added for a look whose guard
 * holds its node down (asks the guard: call it with no lock held); 0 for a
 * call with the client's timeout. And the timeout such flags give. */
unsigned pve_short_flags(unsigned flags, const struct pve_guard *g);
long pve_short_ms(const pve_client *c, unsigned shortf);
/* The raw call with internal flags; *envelope receives the whole response
 * body (new reference) when not NULL. */
/* api_vm.c: a request that starts a task of `type` on VM `vmid`, sent once
 * (PVE_CALL_ONCE); when its answer is lost after it went out, the task it
 * started, looked for on the node's list, is the answer (0, *upid set).
 * params stay the caller's. */
int pve_once_call(pve_client *c, const char *method, const char *path, json_t *params,
                  const char *node, const char *type, int vmid, char upid[PVE_UPID_MAX],
                  struct pve_error *err);
/* api_vm.c: the newest task of `type` on VM `vmid` started by this
 * client's user since since_ms (this host's clock) and not adopted before
 * (find_task). */
bool pve_task_of(pve_client *c, const char *node, const char *type, int vmid, int64_t since_ms,
                 char upid[PVE_UPID_MAX]);
int pve_call_int(pve_client *c, const char *method, const char *path, json_t *params,
                 unsigned flags, json_t **envelope, struct pve_error *err);
/* The same under a look's guard (may be NULL): see struct pve_guard. */
int pve_call_guarded(pve_client *c, const char *method, const char *path, json_t *params,
                     unsigned flags, const struct pve_guard *g, json_t **envelope,
                     struct pve_error *err);
/* The same call, but a successful answer's body is handed over unparsed in
 * *raw (which the caller releases with buf_release): for big answers that
 * are parsed as a stream (api_resources.c, api_tasklog.c) instead of as
 * one JSON tree; the _guarded_ one under a look's guard. Error answers are
 * parsed and classified as usual. */
int pve_call_raw(pve_client *c, const char *method, const char *path, json_t *params,
                 unsigned flags, struct buf *raw, struct pve_error *err);
int pve_call_guarded_raw(pve_client *c, const char *method, const char *path, json_t *params,
                         unsigned flags, const struct pve_guard *g, struct buf *raw,
                         struct pve_error *err);

/* ---- api_tasklog.c ---- */
/* One page of a task log's answer body (the whole envelope): each line's
 * text ("t") appended to `lines` (a JSON array of strings; a line without
 * a text as ""), *total (may be NULL) from the envelope's "total" (0 when
 * it is no integer). Read as a stream of parse events (a clone's log is
 * ~100 lines of progress). A malformed body fails (PVE_E_OTHER, "answer
 * is not a JSON object") and appends nothing. */
int pve_log_parse(const char *body, size_t len, json_t *lines, int64_t *total,
                  struct pve_error *err);

/* ---- api_resources.c ---- */
/* The resources of a /cluster/resources answer body (p[0..len), the whole
 * envelope), one at a time to fn, as pve_cluster_resources_each does. */
int pve_resources_parse(const char *body, size_t len, pve_resource_fn fn, void *ud,
                        struct pve_error *err);

/* ---- auth.c ---- */
int pve_auth_init(pve_client *c, const struct pve_config *cfg, struct pve_error *err);
void pve_auth_free(pve_client *c);
bool pve_auth_is_ticket(const pve_client *c);
/* Credentials for the next request. With a valid ticket due for renewal
 * and no flight under way, a call without short flags renews it first (a glance: at most
 * PVE_GLANCE_MS at first, longer after renewals that timed out; a failed
 * renewal leaves the ticket in use, tried again later); other calls meanwhile get the current
 * ticket. Without a valid ticket: the login under way is waited for (its failure is this call's
 * unless a bound shorter than the call's cut it off), or this call logs in. shortf: the call's
 * short flags (pve_short_flags; 0: none), which bound that wait, or the login it sends, by their
 * timeout (PVE_E_NETWORK when it passes). */
int pve_auth_get(pve_client *c, unsigned shortf, struct pve_creds *out, struct pve_error *err);
/* A request made with generation `gen` got a 401: that ticket is dropped
 * and the client logs in again (or joins the login under way) unless
 * another thread got a new ticket already; bounded by shortf as above. */
int pve_auth_relogin(pve_client *c, unsigned gen, unsigned shortf, struct pve_error *err);
void pve_creds_clear(struct pve_creds *cr);

/* ---- error.c ---- */
enum pve_class pve_classify(long status, const char *text);
/* Fill err (if not NULL) from an HTTP answer or transport failure. */
void pve_error_from_resp(struct pve_error *err, const struct pve_resp *rs, const char *host);
void pve_error_set(struct pve_error *err, enum pve_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pve_error_clear(struct pve_error *err);
void pve_strlcpy(char *dst, const char *src, size_t len);

/* ---- retry.c ---- */
void pve_retry_defaults(struct pve_retry *r);
/* Full-jitter exponential backoff before retry number `retry` (1-based). */
long pve_backoff_ms(const struct pve_retry *r, int retry);
long pve_host_backoff_next(long cur_ms);

#endif
