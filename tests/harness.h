/* The one harness of the C tests (tests/harness.c, linked into every test
 * binary): clocks, free ports, pvesim started and stopped (readiness from
 * its port map, a fresh port block when another program took one), HTTP
 * requests to it with libcurl, its /_sim control API, waits with deadlines,
 * and a private PostgreSQL server (tests/lib/pg.py, the same one the Python
 * tests use). Layer helpers (pvetest.h for tests that drive libpve,
 * core/core_harness.h) build on it. Every function fails the running test (cmocka's fail_msg) on
 * error unless it says otherwise. Not thread-safe: call from the test's thread. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <sys/types.h>
#include <jansson.h>

#include <cmocka.h>

/* The secret of the API token every test's pvesim accepts. */
#define H_TOKEN_SECRET "8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50"

/* Milliseconds: monotonic (durations, deadlines), and wall-clock (what the
 * store keeps, e.g. lease times). */
int64_t h_now_ms(void);
int64_t h_wall_ms(void);

/* A free TCP port on 127.0.0.1 whose next 8 neighbours are free too (bound
 * then released): pvesim listens on a block (entry, a port per node,
 * control). */
int h_free_port(void);

/* Start build/.../pvesim (path from $PVESIM) with the given extra arguments
 * (NULL-terminated), `--listen 127.0.0.1:<*port>` added; waits until
 * pvesim says every listener is up (its port map on stdout, deadline 20 s).
 * When another program took a port of the block meanwhile (pvesim exits
 * with "cannot listen"), it starts again on a fresh block from
 * h_free_port() and updates *port. Returns the pid; fails the test on
 * error. */
pid_t h_sim_start(int *port, const char *const *args);
/* SIGTERM, wait (deadline 10 s, then SIGKILL); asserts a clean exit status
 * when `expect_clean` is set. */
void h_sim_stop(pid_t pid, bool expect_clean);

/* What a test's pvesim is started with; NULL/0 fields take the default. */
struct h_sim_opts {
    const char *nodes;        /* NULL: "sv1,sv2" */
    const char *token;        /* "user@realm!id=secret"; NULL: none */
    const char *password;     /* root@pam's; NULL: none */
    const char *time_scale;   /* NULL: "0.02" */
    const char *log_level;    /* NULL: pvesim's default */
    int pve_version;          /* 0: pvesim's default */
    const char *const *extra; /* more arguments, NULL-terminated, or NULL */
};

/* pvesim on a fresh port block (*port, its entry port), no auth delay,
 * serving the build's test certificate ($PVESIM_TLS_CERT and _KEY, set by
 * ctest) unless extra brings --tls-cert, and signing tickets with the
 * build's ticket key ($PVESIM_TICKET_KEY) unless extra brings --ticket-key,
 * started as h_sim_start does; the pid. */
pid_t h_sim_up(int *port, const struct h_sim_opts *o);

/* A control call (/_sim/...) on `port` with an optional JSON body; the
 * parsed answer (caller decrefs; NULL when it is not JSON). A status other
 * than 2xx fails the test. */
json_t *h_sim_ctl(int port, const char *method, const char *path, const char *json);

struct h_resp {
    long status;
    char reason[512]; /* the reason phrase from the status line */
    char *body;       /* NUL-terminated, owned */
    size_t body_len;
    char *headers; /* raw response headers, owned */
    json_t *json;  /* parsed body or NULL */
};

/* One HTTPS request to 127.0.0.1:<port><path> (TLS not verified). `body`
 * may be NULL; `ctype` defaults to form encoding. `hdrs` is a NULL-terminated
 * list of extra header lines ("Name: value"), may be NULL. */
void h_request(int port, const char *method, const char *path, const char *ctype, const char *body,
               const char *const *hdrs, struct h_resp *out);
void h_resp_free(struct h_resp *r);

/* Poll `cond(arg)` every 10 ms until it is true or `deadline_ms` passes. */
bool h_wait(bool (*cond)(void *), void *arg, int deadline_ms);

/* A private PostgreSQL server (`python3 -m lib.pg start`; PYTHONPATH from
 * ctest, else this tree's tests/, so that a binary run by hand finds it):
 * initdb + pg_ctl in a temporary directory, 127.0.0.1 only, trust
 * authentication for the user proxd. Fills `url` (its database "postgres")
 * and `dir` (for h_pg_stop); false, with the reason printed, when it could
 * not start. */
bool h_pg_start(char *url, size_t url_len, char *dir, size_t dir_len);
/* Stop that server and remove its directory; false when that failed. */
bool h_pg_stop(const char *dir);

#endif
