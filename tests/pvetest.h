/* Helpers of the tests that drive libpve (tests/pve, and core tests such as
 * test_ippool_pve.c), on the C harness (tests/harness.h): a two-node pvesim
 * with both credentials, client configurations, log capture. Header-only:
 * every test_*.c is its own binary. */
#ifndef TESTS_PVETEST_H
#define TESTS_PVETEST_H

#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "pve/pve.h"

#define T_TOKEN_ID "root@pam!ci"
#define T_SECRET H_TOKEN_SECRET
#define T_TOKEN T_TOKEN_ID "=" T_SECRET
#define T_PASSWORD "s3cr3t-Pa55word"

struct tsim {
    pid_t pid;
    int port; /* entry (cluster) or sv1 (standalone) */
    int ctl;  /* a port that serves /_sim/ */
    char host[64];
};

/* Start pvesim fast and quiet with both credentials; extra args appended. */
static inline void tsim_start(struct tsim *s, const char *const *extra)
{
    struct h_sim_opts o = {.nodes = "sv1,sv2", /* with entry: a block of three */
                           .token = T_TOKEN,
                           .password = T_PASSWORD,
                           .time_scale = "0.02",
                           .log_level = "error",
                           .extra = extra};
    s->pid = h_sim_up(&s->port, &o);
    s->ctl = s->port;
    snprintf(s->host, sizeof s->host, "127.0.0.1:%d", s->port);
}

static inline void tsim_stop(struct tsim *s)
{
    if (s->pid > 0)
        h_sim_stop(s->pid, false);
    s->pid = 0;
}

/* A simulator started by one test, stopped by its teardown even when the
 * test fails. */
static struct tsim t_own;

static inline int t_own_teardown(void **state)
{
    (void)state;
    tsim_stop(&t_own);
    return 0;
}

/* A /_sim/ control call; returns the parsed answer (caller decrefs) or NULL. */
static inline json_t *tsim_ctl(struct tsim *s, const char *method, const char *path,
                               const char *json)
{
    return h_sim_ctl(s->ctl, method, path, json);
}

static inline void tsim_ctl0(struct tsim *s, const char *method, const char *path, const char *json)
{
    json_decref(tsim_ctl(s, method, path, json));
}

/* How often `key` (e.g. "POST /nodes/{node}/qemu/{vmid}/clone") was called. */
static inline long tsim_calls(struct tsim *s, const char *key)
{
    json_t *j = tsim_ctl(s, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(json_object_get(json_object_get(j, "calls"), key));
    json_decref(j);
    return n;
}

static inline long tsim_node_calls(struct tsim *s, const char *node)
{
    json_t *j = tsim_ctl(s, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(json_object_get(json_object_get(j, "nodes"), node));
    json_decref(j);
    return n;
}

/* A configuration for one host with sane test defaults (insecure TLS,
 * token auth, fast retries). */
static inline void tcfg_init(struct pve_config *cfg, const char **hostv, const char *host)
{
    memset(cfg, 0, sizeof *cfg);
    hostv[0] = host;
    cfg->hosts = hostv;
    cfg->nhosts = 1;
    cfg->token = T_TOKEN;
    cfg->insecure = true;
    cfg->connect_timeout_ms = 1000;
    cfg->timeout_ms = 5000;
    cfg->retry.base_ms = 10;
    cfg->retry.cap_ms = 50;
    cfg->name = "test";
}

static inline pve_client *tclient(const struct pve_config *cfg)
{
    struct pve_error e;
    pve_client *c = pve_client_new(cfg, &e);
    if (!c)
        fail_msg("pve_client_new: %s", e.message);
    return c;
}

static inline void assert_ok(int rc, const struct pve_error *e)
{
    if (rc) {
        char b[2048];
        fail_msg("call failed: %s", pve_strerror(e, b, sizeof b));
    }
}

static inline int t_setup_global(void **state)
{
    (void)state;
    log_set_level(LOG_OFF);
    return pve_global_init();
}

/* Capture what libpve logs (stderr) at the given level. */
static inline char *capture_begin(int *saved, enum log_level level)
{
    char *path = strdup("/tmp/pvetest-log-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    *saved = dup(2);
    dup2(fd, 2);
    close(fd);
    log_set_level(level);
    return path;
}

static inline char *capture_end(int saved, char *path)
{
    log_set_level(LOG_OFF);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(path);
    free(path);
    return text;
}

/* The parsers' differential tests (pve/test_resources, pve/test_tasklog):
 * seed[0..seedlen) edited at random into buf (cap bytes), 1 to 3 edits: a
 * byte changed into one of JSON's or a few bad ones, a byte dropped, one of
 * `words` put in, the end cut, a stretch repeated. *x is the xorshift state
 * (never 0), moved on. Returns the edited length. */
static inline size_t t_random_edits(char *buf, size_t cap, const char *seed, size_t seedlen,
                                    const char *const *words, size_t nwords, uint64_t *x)
{
    static const char pieces[] = "{}[]:,\"\\0123456789-+.eEtrufalsn \x01\xff\x00";
    size_t len = seedlen < cap ? seedlen : cap;
    memcpy(buf, seed, len);
    int edits = 1 + (int)((*x >> 60) % 3);
    for (int k = 0; k < edits; k++) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        size_t at = (size_t)(*x % len);
        switch ((*x >> 32) % 5) {
        case 0: /* change a byte */
            buf[at] = pieces[(*x >> 40) % (sizeof pieces - 1)];
            break;
        case 1: /* drop one */
            memmove(buf + at, buf + at + 1, len - at - 1);
            len--;
            break;
        case 2: { /* put a word in */
            const char *w = words[(*x >> 40) % nwords];
            size_t wl = strlen(w);
            if (len + wl < cap) {
                memmove(buf + at + wl, buf + at, len - at);
                memcpy(buf + at, w, wl);
                len += wl;
            }
            break;
        }
        case 3: /* cut the end */
            len = at + 1;
            break;
        default: { /* repeat a stretch */
            size_t n = (size_t)((*x >> 40) % 64);
            if (at + n <= len && len + n < cap) {
                memmove(buf + at + n, buf + at, len - at);
                len += n;
            }
            break;
        }
        }
    }
    return len;
}

#endif
