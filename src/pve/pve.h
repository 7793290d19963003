/* libpve: the Proxmox VE API client proxd uses, and the only way it reaches
 * Proxmox.
 *
 * A pve_client talks to one Proxmox "world": a cluster (reachable through
 * one or more of its members' hosts, with failover between them) or one
 * standalone host. It owns the credentials (API token, or user and password
 * with tickets renewed before their 2 h expiry and one re-login on a 401),
 * the TLS trust (system CAs, a CA file such as pve-root-ca.pem, or a pin of
 * the certificate's SHA-256 fingerprint as the Proxmox GUI shows it), the
 * connections (kept alive and reused), the retry policy and task waiting.
 *
 * Threads: a pve_client may be used from any number of threads at once; it
 * keeps a pool of connections. Call pve_global_init() once in main() before
 * starting threads. Secrets (passwords, tickets, token secrets) never
 * appear in logs or error texts.
 *
 * Tickets (user and password; an API token needs none): logins and
 * renewals are single-flight, and no lock is held while one is sent.
 *   - A ticket is taken as valid for ticket_lifetime_s from when its login
 *     was sent, and renewed (POST /access/ticket with the ticket, sent
 *     once as a glance: a timeout of at most PVE_GLANCE_MS) from
 *     ticket_renew_s on. The first call without a short bound of its own
 *     (not a probe) to find it due renews it and waits for that (a glance
 *     at each host tried: about a second when the first answers or hangs,
 *     then it goes on with the ticket); every other call meanwhile goes on
 *     with the current ticket at once, however long /access/ticket takes.
 *   - A renewal that fails while the ticket is valid is no call's failure:
 *     the ticket serves on and the next call after a pause (an eighth of
 *     its time left, 1 to 60 s) renews again; after one that timed out,
 *     with twice its time (up to timeout_ms; a glance again once one
 *     succeeds), so that a server always slower than a glance renews the
 *     ticket before it expires instead of making every call wait for a
 *     login then. A server that refuses the
 *     ticket (expired by its clock) answers the renewal's glance too late
 *     (pveproxy delays a 401 by 3 s): the next call it refuses gets a 401
 *     and logs in then (below).
 *   - Without a valid ticket (the first call, after it expired, after a
 *     401), one call logs in with the password (retried per the policy)
 *     and the calls that come meanwhile wait for it and share its result:
 *     when it fails, they all fail with its error at once; only a call
 *     made after that tries again.
 *   - A call with a short timeout of its own (PVE_CALL_PROBE, a glance, a
 *     task look on a node held down: see pve_wait_opts.held_down) keeps
 *     it through a login: it waits for a login under way no longer than
 *     that timeout (then fails with PVE_E_NETWORK, "no ticket within ...";
 *     the login goes on for the others), and a login it makes itself is
 *     sent once with that timeout. A node whose /access/ticket hangs is
 *     so judged by its probe within the probe's time. A call that waited
 *     for a login cut short by a bound shorter than its own (a renewal's
 *     glance, a probe's) does not share that failure: it logs in itself,
 *     with the full timeout and retries, or with its own bound.
 *   - A 401 to a request drops the ticket it used (if still current) and
 *     logs in once more, as above; the request is sent again once. A
 *     second 401 is final (PVE_E_AUTH); a login that fails is the call's
 *     failure, with the login's error (PVE_E_NETWORK when it got no
 *     answer), and the call is not sent again.
 *
 * Errors: every call returns 0 on success or a `enum pve_class` value (> 0)
 * and fills the optional `struct pve_error` with the details. Strings in
 * result structs are bounded copies (truncated if longer, always
 * NUL-terminated); arrays are allocated and freed with the matching _free.
 *
 * Retries: only the lock and network classes are retried, with exponential
 * backoff, jitter, a cap, a bounded count and total time. A call that got a
 * UPID back is never sent again; a task-starting call whose answer was lost
 * after it was sent is recognised on retry (clone/create: "already exists"
 * for the VM it created itself) instead of being done twice. */
#ifndef PVE_PVE_H
#define PVE_PVE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pve_client pve_client;

/* Error classes; zero is success. Never renumbered. */
enum pve_class {
    PVE_OK = 0,
    PVE_E_LOCK = 1,       /* VM is locked (...), can't lock file ... got timeout */
    PVE_E_NETWORK = 2,    /* refused, timed out, 595-599, 502-504, connection reset */
    PVE_E_AUTH = 3,       /* 401, login failed */
    PVE_E_NOTFOUND = 4,   /* "... does not exist", no such task, unable to find configuration */
    PVE_E_EXISTS = 5,     /* "... already exists" */
    PVE_E_INVALID = 6,    /* 400 Parameter verification failed, bad arguments to libpve */
    PVE_E_PERMISSION = 7, /* 403 */
    PVE_E_TLS = 8,        /* certificate not trusted, fingerprint mismatch */
    PVE_E_TIMEOUT = 9,    /* a task did not end before its deadline */
    PVE_E_OTHER = 10,     /* anything else, e.g. a 500 with another text */
};

const char *pve_class_name(enum pve_class c); /* "lock", "network", ... */

#define PVE_MSG_MAX 1024

struct pve_error {
    enum pve_class cls;
    int http_status;           /* 0 when no HTTP answer came back */
    char message[PVE_MSG_MAX]; /* PVE's message (reason phrase or body), or ours */
    char params[PVE_MSG_MAX];  /* per-parameter errors "name: text; name: text" */
    char upid[256];            /* the task, when the failure is a task's */
    int attempts;              /* how many times the request was sent */
    bool maybe_sent;           /* a network failure after the request was sent, or
                                  a relay's 596, 597, 599, 502 or 504 to a write: the
                                  server may have acted on it (see PVE_CALL_ONCE) */
    bool closed;               /* ... and the server closed the connection without
                                  a (whole) answer: it was there, not hung or gone */
    bool earlier_pending;      /* set on success too: the call sent its request a
                                  second time (the first's answer lost, nothing of
                                  it seen), and the first may still be served later
                                  (pve_vm_clone) */
    char host[128];            /* the host that gave the final answer */
};

/* Human-readable one-liner: "<class>: <http status> <message> [<params>]". */
const char *pve_strerror(const struct pve_error *e, char *buf, size_t len);
/* Was a write refused for its digest: the config changed since it was read
 * ("checksum mismatch (file change by other user?)", "missmatch" before
 * qemu-server 8.2.5)? */
bool pve_error_stale_digest(const struct pve_error *e);

/* ---- set-up --------------------------------------------------------- */

struct pve_retry {
    int max_attempts; /* total sends, default 5 */
    long base_ms;     /* first backoff, default 200 */
    long cap_ms;      /* largest single backoff, default 5000 */
    long total_ms;    /* give up when this much time has passed, default 30000 */
};

struct pve_config {
    /* "host:port" of every member to try, in order (at least one). A
     * standalone host has one. Port defaults to 8006 when omitted. */
    const char *const *hosts;
    size_t nhosts;
    /* Credentials: token "user@realm!name=secret" (preferred), or user and
     * password (password_file: the first line of that file). */
    const char *token;
    const char *user;
    const char *password;
    const char *password_file;
    /* TLS: by default verified against the system CAs. ca_file: a PEM bundle
     * (a copy of the cluster's pve-root-ca.pem). fingerprint: the
     * certificate's SHA-256 "AA:BB:..." as the GUI shows it; when set, the
     * certificate must match it (and need not chain to a CA). insecure: no
     * verification at all (logged as a warning at every client creation). */
    const char *ca_file;
    const char *fingerprint;
    bool insecure;
    long connect_timeout_ms; /* default 3000 (covers TCP and the TLS handshake) */
    long timeout_ms;         /* whole request, default 30000 */
    long probe_timeout_ms;   /* a PVE_CALL_PROBE request, default the smaller of
                                2 x connect_timeout_ms and timeout_ms */
    struct pve_retry retry;  /* zeros: defaults */
    bool json_bodies;        /* send POST/PUT bodies as JSON (PVE >= 8) instead of forms */
    long ticket_lifetime_s;  /* how long Proxmox accepts a ticket, default 7200 (its 2 h) */
    long ticket_renew_s;     /* renew tickets this old, default half the lifetime (3600);
                                less than the lifetime */
    const char *name;        /* for log lines, e.g. the cluster's name */
    /* Told of every call on a path naming a node (/nodes/{node}/...) that
     * failed at the network level (refused, timed out, 595, 596, ...) once
     * its retries are spent: the caller's node health. Called on the
     * calling thread with no lock of the client held; may be NULL. */
    void (*on_node_failure)(void *ud, const char *node, const struct pve_error *e);
    /* Told of every call on a path naming a node that succeeded (2xx),
     * with the monotonic time (mono_ms) its successful send began: the node
     * answered after that moment, a proof of life the caller's health
     * tracking may use instead of a probe. Same thread and lock rules as
     * on_node_failure; may be NULL. */
    void (*on_node_answer)(void *ud, const char *node, int64_t sent_ms);
    void *hook_ud;
};

/* Once per process, before threads start (curl_global_init). */
int pve_global_init(void);

/* Validate the configuration and create a client. No network traffic yet:
 * a host is checked (GET /version) when first used or after it failed.
 * Returns NULL with *err filled (PVE_E_INVALID, PVE_E_AUTH for an unreadable
 * password file) on bad configuration. */
pve_client *pve_client_new(const struct pve_config *cfg, struct pve_error *err);
void pve_client_free(pve_client *c);

/* Who Proxmox records as the user of the tasks this client starts (a
 * UPID's user field): the token's "user@realm!name", or the user as the
 * login answered it. Copied into out (truncated to len). */
void pve_client_who(pve_client *c, char *out, size_t len);

/* The tasks this client knows as started by an earlier call of its own:
 * the UPID a write was answered with (recorded by pve_call_ex), or the task
 * a lost answer was found to be (recorded by its lookup); the last 256. A
 * lost answer's lookup skips them: the task of the VM's previous resize,
 * ended a moment ago, has the type, VMID, user and maybe the very second
 * of the new one's. (A clone's lookup needs no such memory: it is told by
 * the new VMID in its log.) Thread-safe. */
void pve_client_task_seen(pve_client *c, const char *upid);
bool pve_client_task_known(pve_client *c, const char *upid);

/* Where the tasks a client knows are also kept beyond its own memory, so
 * that the processes sharing one token know each other's: several proxd
 * instances on one database, or one proxd before and after a restart. A
 * lost answer's lookup that finds another instance's start of the same VM,
 * a few seconds old, would otherwise take it for its own (the UPID's user
 * is the same token): the start "done", the VM stopped since.
 *   seen:  the client knows upid as its own (called as
 *          pve_client_task_seen is, in the caller's thread; it reports its
 *          own failures, the lookup then knows less);
 *   known: 1 when upid was seen by any client of the registry, 0 when not,
 *          -1 when it cannot tell (the lookup then skips the task: a task
 *          not taken makes the caller look at the VM and ask again, a task
 *          wrongly taken makes it report work nobody did).
 * A task is known from when its answer came (or a lookup found it): a
 * lookup by another process in between could still take it, which proxd's
 * one job at a time per VM rules out (the job that started the task ends
 * after its answer). seen may write to a database: Proxmox is never called
 * inside a transaction (a store callback). Both are called without the
 * client's locks held and must be thread-safe. Set once (NULL: none),
 * before or while the client is in use; the struct is copied. */
struct pve_task_registry {
    void (*seen)(void *ud, const char *upid);
    int (*known)(void *ud, const char *upid);
    void *ud;
};
void pve_client_set_task_registry(pve_client *c, const struct pve_task_registry *r);

/* How long a connection stays open idle: servers close it after 5 s
 * (pveproxy, pvesim); the pool counts 4. */
#define PVE_OPEN_IDLE_MS 4000

/* Until when (monotonic ms) a call finds a connection of this client still
 * open: the end of its last exchange that went well plus PVE_OPEN_IDLE_MS;
 * 0 when none went well yet. A call on an open connection costs a fifteenth of one that
 * opens a new one (a TLS handshake). Lock-free, thread-safe. */
int64_t pve_client_open_until(pve_client *c);

/* Counters for benchmarks and metrics (monotonic, thread-safe). */
struct pve_stats {
    uint64_t requests;   /* HTTP requests sent, all kinds */
    uint64_t task_polls; /* of which task status/log polls */
    uint64_t retries;    /* re-sends after a retriable error */
    uint64_t failovers;  /* switches to another host */
    uint64_t logins;     /* ticket logins and renewals */
};
void pve_client_stats(pve_client *c, struct pve_stats *out);

/* Per endpoint: every HTTP request sent, by the node its path names (""
 * for cluster-wide paths), method and endpoint (the path with its variable
 * parts as {node}, {vmid}, {upid}, {storage}, {id}), with its errors (any
 * answer that is not a success, network failures included) and a latency
 * histogram. At most PVE_CALLSTAT_MAX entries per client; later ones are
 * counted under the endpoint "(other)". */
#define PVE_CALLSTAT_MAX 256
#define PVE_LAT_NBOUNDS 11
extern const double pve_latency_bounds[PVE_LAT_NBOUNDS]; /* seconds, ascending */
struct pve_callstat {
    char node[64];
    char method[8];
    char endpoint[96];
    uint64_t calls, errors;
    uint64_t le[PVE_LAT_NBOUNDS + 1]; /* le[i]: calls of at most bounds[i]; last: the rest */
    double seconds;                   /* sum of latencies */
};
/* A copy of the client's table (caller frees *out); thread-safe. */
void pve_client_callstats(pve_client *c, struct pve_callstat **out, size_t *n);

/* The endpoint of an (encoded) API path, as pve_callstat names it, and the
 * node it names, for tests and metrics. */
void pve_endpoint_of(const char *path, char *endpoint, size_t elen, char *node, size_t nlen);

/* ---- the raw call ------------------------------------------------------ */

/* Parameters: a JSON object of name -> string, integer or boolean (borrowed).
 * GET and DELETE send them in the query string; POST and PUT in a form (or
 * JSON) body. `path` is relative to /api2/json and already encoded; build it
 * with pve_path(). *data receives the response's `data` (new reference,
 * may be JSON null); pass NULL to ignore it. Retries per the policy. */
int pve_call(pve_client *c, const char *method, const char *path, json_t *params, json_t **data,
             struct pve_error *err);

enum pve_call_flags {
    /* The call starts a task or creates something: never re-send it after a
     * failure that may have reached the server (a timeout or reset after the
     * request was sent); return PVE_E_NETWORK with err->maybe_sent set so the
     * caller can check what happened. Failures before sending (refused,
     * connect timeout, TLS) and 595/596 are still retried. */
    PVE_CALL_ONCE = 1 << 0,
    /* A 595 or 596 (the node behind the answering host is down or hung) is
     * final, not retried: the caller would rather fail over to another node
     * at once. Used for the first call of an operation on a node. */
    PVE_CALL_FAILFAST = 1 << 1,
    /* Send once (another host of the world may still be tried): no retry
     * with backoff. For reads whose caller asks again on its own schedule,
     * such as the inventory, which must not wait out five timeouts of a
     * host that does not answer. */
    PVE_CALL_NORETRY = 1 << 2,
    /* A health probe: sent once (as NORETRY) with the probe timeout instead
     * of the operation timeout, on the pool's warm connections (a probe on
     * a client of its own paid a TLS handshake nearly every time: servers
     * close a connection idle for 5 s); the node hooks are not told, the
     * caller judges the answer itself. A login it needs first (no valid
     * ticket) is bounded by the same timeout (see Tickets above). */
    PVE_CALL_PROBE = 1 << 3,
    /* With PVE_CALL_PROBE: a glance, with a timeout of at most
     * PVE_GLANCE_MS (a healthy node answers a status read in
     * milliseconds): a prober going through several nodes in a row is
     * held up by a hung one for no longer, and probes that one again
     * on its own with the full timeout before judging. */
    PVE_CALL_GLANCE = 1 << 4,
};
#define PVE_GLANCE_MS 1000

int pve_call_ex(pve_client *c, const char *method, const char *path, json_t *params, unsigned flags,
                json_t **data, struct pve_error *err);

/* Build an encoded path: each %s argument is percent-encoded as one path
 * segment; %d as a decimal. pve_path(buf, sizeof buf, "/nodes/%s/tasks/%s/status",
 * node, upid). Returns 0, or -1 if it does not fit. */
int pve_path(char *out, size_t len, const char *fmt, ...);

/* Encode SSH public keys (one per line) as PVE's sshkeys parameter wants
 * them before the transport encoding: every byte outside A-Z a-z 0-9 - _ .
 * ! ~ * ' ( ) as %XX (so a space is %20 and a newline %0A). Caller frees. */
char *pve_sshkeys_encode(const char *keys);

/* ---- tasks -------------------------------------------------------------- */

struct pve_task {
    char upid[256];
    char node[64];
    char type[32];
    char id[64];
    char user[128];
    bool running;
    char exitstatus[512]; /* when stopped: "OK", "WARNINGS: n" or the error */
    int warnings;         /* n of "WARNINGS: n" */
    int64_t starttime, endtime;
};

/* Parse a UPID's fields (node, type, id, user, starttime). 0 or PVE_E_INVALID. */
int pve_upid_parse(const char *upid, struct pve_task *out);

int pve_task_status(pve_client *c, const char *upid, struct pve_task *out, struct pve_error *err);

/* Stop a running task (DELETE /nodes/{node}/tasks/{upid}): its worker is
 * sent SIGTERM and ends with an error ("received interrupt"); a clone's
 * worker first removes the disks and config it made. A task that has ended
 * already is no error. Wait for its end with pve_task_wait. */
int pve_task_stop(pve_client *c, const char *upid, struct pve_error *err);

/* Called while waiting with each new task log line. */
typedef void (*pve_progress_fn)(void *ud, const char *upid, const char *line);

/* Wait until the task stops, until deadline_ms of waiting (0: 1 hour).
 * Success: exitstatus OK, or WARNINGS (out->warnings set). A failed task
 * returns its class (from its text: a lock text gives PVE_E_LOCK, ...) with
 * the last lines of its log in err->message; a passed deadline gives
 * PVE_E_TIMEOUT. With a progress callback the log is read as it grows.
 * Works with any UPID, e.g. one stored before a restart. Polls follow
 * pve_task_poll_delay() over the whole wait (the first after the first
 * delay), with the duration the client has seen for tasks of the same kind
 * (node, type, clone source; a type seen only on another node: that) as the
 * expectation; each task that ends OK updates it. A clone (qmclone) is
 * watched through its log instead of its status: qemu-img's progress lines
 * tell when the copy should end (also for the first clone of a template),
 * the log's last line ("TASK OK", "TASK ERROR: ...") its exit status; the
 * status is read when the log brought no new line or could not be read. */
int pve_task_wait(pve_client *c, const char *upid, long deadline_ms, pve_progress_fn progress,
                  void *ud, struct pve_task *out, struct pve_error *err);

/* Called while waiting, at least every tick_ms (or, with a wake_fd, when
 * that descriptor is readable), on the waiting thread; a nonzero return
 * ends the wait at once with PVE_E_TIMEOUT and err->message
 * "interrupted". */
typedef int (*pve_tick_fn)(void *ud);

struct pve_wait_opts {
    long deadline_ms;         /* 0: 1 hour */
    pve_progress_fn progress; /* may be NULL */
    pve_tick_fn tick;         /* may be NULL */
    long tick_ms;             /* 0: 2000 */
    const int *wake_fd;       /* NULL, or a descriptor that turns readable
                                 when the tick must be asked (a pipe written
                                 at stop): then the wait sleeps until its
                                 next look and asks the tick only then */
    const int *look_fd;       /* NULL, or (with wake_fd) a descriptor that
                                 turns readable when the task must be looked
                                 at now (its node was seen failing): the wait
                                 reads it empty and looks at once; the look's
                                 failure, if any, is the wait's result */
    pve_tick_fn held_down;    /* NULL, or asked (with ud) before each look and
                                 while one goes unanswered: nonzero when the
                                 caller holds the task's node down (its health
                                 tracking saw it fail). Such a look is short:
                                 the probe timeout (probe_timeout_ms), no
                                 retry; a look sent before its node was held
                                 down is cut off once it has run that long. A
                                 short look that gets no answer ends the wait
                                 with PVE_E_NETWORK (a clone's log look does
                                 not fall back on a status read); one that is
                                 answered lets the wait go on as before */
    void *ud;                 /* passed to progress, tick and held_down */
};
int pve_task_wait_opts(pve_client *c, const char *upid, const struct pve_wait_opts *o,
                       struct pve_task *out, struct pve_error *err);

/* The poll schedule: how long to sleep before the next status poll when
 * elapsed_ms have been waited, the previous sleep was prev_ms (0 before the
 * first) and tasks like this one took expect_ms (0: unknown). Unknown: 250
 * ms, doubling. Known: the first look within 2 s, then at the expected end
 * (steps of at most 3x the time waited), then backing off from 5% to 25% of
 * the time waited; at most 30 s. Pure; exported for tests. */
long pve_task_poll_delay(long elapsed_ms, long prev_ms, long expect_ms);

/* Lines of a task's log, from line `start` (0-based), at most `limit`
 * (0: all). *lines is a JSON array of strings (new reference). */
int pve_task_log(pve_client *c, const char *upid, int start, int limit, json_t **lines,
                 struct pve_error *err);

/* Tasks on a node, newest first; filters may be 0/NULL. Free with free(). */
int pve_task_list(pve_client *c, const char *node, int vmid, const char *typefilter, int limit,
                  struct pve_task **out, size_t *n, struct pve_error *err);

#endif
