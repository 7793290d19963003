/* callstats: what the client sent, per node, method and endpoint, with
 * errors and latency, for proxd's /metrics. Paths are reduced to endpoint
 * templates so that the table stays small (a handful of endpoints times
 * the nodes) however many VMs and tasks there are. */
#include "pve/pve_int.h"

#include "common/xalloc.h"

#include <stdlib.h>
#include <string.h>

const double pve_latency_bounds[PVE_LAT_NBOUNDS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                    0.5,   1.0,  2.5,   5.0,  10.0};

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* The name a variable segment stands for, from the segment before it. */
static const char *variable(const char *prev, size_t plen, const char *seg, size_t slen)
{
#define PREV_IS(w) (plen == sizeof(w) - 1 && memcmp(prev, w, plen) == 0)
    if (PREV_IS("nodes"))
        return "{node}";
    if (PREV_IS("qemu") || PREV_IS("lxc"))
        return all_digits(seg, slen) ? "{vmid}" : NULL;
    if (PREV_IS("tasks"))
        return "{upid}";
    if (PREV_IS("storage"))
        return "{storage}";
    if (PREV_IS("resources"))
        return "{sid}";
#undef PREV_IS
    return all_digits(seg, slen) ? "{id}" : NULL;
}

void pve_endpoint_of(const char *path, char *endpoint, size_t elen, char *node, size_t nlen)
{
    struct buf e = BUF_INIT(4096); /* the result is cut to elen */
    const char *prev = "";
    size_t plen = 0;
    if (nlen)
        node[0] = '\0';
    for (const char *p = path; *p == '/';) {
        const char *seg = p + 1;
        size_t slen = strcspn(seg, "/?");
        const char *v = variable(prev, plen, seg, slen);
        if (v && strcmp(v, "{node}") == 0 && nlen)
            snprintf(node, nlen, "%.*s", (int)slen, seg);
        buf_adds(&e, "/");
        if (v)
            buf_adds(&e, v);
        else
            buf_add(&e, seg, slen);
        prev = seg;
        plen = slen;
        p = seg + slen;
    }
    snprintf(endpoint, elen, "%s", e.len ? buf_str(&e) : "/");
    buf_release(&e);
}

static struct pve_callstat *entry(pve_client *c, const char *method, const char *ep,
                                  const char *node)
{
    for (size_t i = 0; i < c->ncalls; i++) {
        struct pve_callstat *s = &c->calls[i];
        if (strcmp(s->endpoint, ep) == 0 && strcmp(s->method, method) == 0 &&
            strcmp(s->node, node) == 0)
            return s;
    }
    /* the last place is "(other)"'s: once it is taken, every new key
     * goes there (found by the look above) */
    if (c->ncalls >= PVE_CALLSTAT_MAX - 1 && strcmp(ep, "(other)") != 0)
        return entry(c, "", "(other)", "");
    if (!c->calls)
        c->calls = xcalloc(PVE_CALLSTAT_MAX, sizeof *c->calls);
    struct pve_callstat *s = &c->calls[c->ncalls++];
    snprintf(s->node, sizeof s->node, "%s", node);
    snprintf(s->method, sizeof s->method, "%s", method);
    snprintf(s->endpoint, sizeof s->endpoint, "%s", ep);
    return s;
}

void pve_callstat_note(pve_client *c, const char *method, const char *path, double seconds,
                       bool error)
{
    char ep[96], node[64];
    pve_endpoint_of(path, ep, sizeof ep, node, sizeof node);
    int b = 0;
    while (b < PVE_LAT_NBOUNDS && seconds > pve_latency_bounds[b])
        b++;
    pthread_mutex_lock(&c->stats_mu);
    struct pve_callstat *s = entry(c, method, ep, node);
    s->calls++;
    s->errors += error;
    s->le[b]++;
    s->seconds += seconds;
    pthread_mutex_unlock(&c->stats_mu);
}

void pve_client_callstats(pve_client *c, struct pve_callstat **out, size_t *n)
{
    pthread_mutex_lock(&c->stats_mu);
    *n = c->ncalls;
    *out = xcalloc(c->ncalls + 1, sizeof **out);
    if (c->ncalls)
        memcpy(*out, c->calls, c->ncalls * sizeof **out);
    pthread_mutex_unlock(&c->stats_mu);
}
