/* Test harness shared by the C tests: start and stop pvesim, and make HTTP
 * requests to it with libcurl. Include after <cmocka.h>'s prerequisites. */
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

/* A free TCP port on 127.0.0.1 (bound then released). */
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

#endif
