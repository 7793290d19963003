/* metrics: GET /metrics in the Prometheus text format (version 0.0.4).
 * Everything is read at scrape time from the store, the inventory and the
 * libpve clients; nothing here keeps history. */
#include "api/api_int.h"

#include "common/log.h"
#include "common/xalloc.h"
#include "core/events.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A page's bound. Most of a page is the Proxmox call table: up to
 * PVE_CALLSTAT_MAX endpoints per world, 16 lines each, in a fleet of up to
 * CFG_MAX_NODES standalone worlds: some MiB in a large fleet, past the
 * 1 MiB this once was. Past the bound the answer is 500, never a cut page. */
#define METRICS_MAX (16 * 1024 * 1024)

static void help(struct mtext *b, const char *name, const char *type, const char *text)
{
    mtext_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void jobs(struct api *a, struct mtext *b)
{
    struct job_stat *v = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_job_stats(a->st, &v, &n, &se))
        return;
    help(b, "proxd_jobs", "gauge", "Jobs in the store by kind and state.");
    for (size_t i = 0; i < n; i++)
        mtext_printf(b, "proxd_jobs{kind=\"%s\",state=\"%s\"} %lld\n", v[i].kind,
                     job_state_name(v[i].state), (long long)v[i].count);
    help(b, "proxd_job_duration_seconds", "histogram",
         "Time from request to end of finished jobs, by kind.");
    /* Rows come sorted by kind: sum the finished states of each kind. */
    for (size_t i = 0; i < n;) {
        int64_t bk[STORE_DURATION_BUCKETS] = {0}, sum = 0;
        size_t k = i;
        for (; k < n && strcmp(v[k].kind, v[i].kind) == 0; k++) {
            for (int j = 0; j < STORE_DURATION_BUCKETS; j++)
                bk[j] += v[k].buckets[j];
            sum += v[k].duration_sum_ms;
        }
        for (int j = 0; j < STORE_DURATION_BUCKETS - 1; j++)
            mtext_printf(b, "proxd_job_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} %lld\n",
                         v[i].kind, store_duration_bounds[j] / 1000.0, (long long)bk[j]);
        mtext_printf(b, "proxd_job_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} %lld\n",
                     v[i].kind, (long long)bk[STORE_DURATION_BUCKETS - 1]);
        mtext_printf(b, "proxd_job_duration_seconds_sum{kind=\"%s\"} %.3f\n", v[i].kind,
                     sum / 1000.0);
        mtext_printf(b, "proxd_job_duration_seconds_count{kind=\"%s\"} %lld\n", v[i].kind,
                     (long long)bk[STORE_DURATION_BUCKETS - 1]);
        i = k;
    }
    free(v);
}

static void nodes(struct api *a, struct mtext *b)
{
    const struct proxd_config *c = a->cfg;
    help(b, "proxd_node_up", "gauge", "1 when the node is reachable and online.");
    for (int i = 0; i < c->nnodes; i++)
        mtext_printf(b, "proxd_node_up{node=\"%s\"} %d\n", c->nodes[i].name,
                     fleet_node_up(a->fl, c->nodes[i].name) ? 1 : 0);
    help(b, "proxd_node_vms", "gauge", "VMs the inventory sees on the node.");
    for (int i = 0; i < c->nnodes; i++) {
        struct node_view v;
        memset(&v, 0, sizeof v);
        fleet_node_view(a->fl, c->nodes[i].name, &v);
        mtext_printf(b, "proxd_node_vms{node=\"%s\"} %d\n", c->nodes[i].name, v.nvms);
    }
    help(b, "proxd_node_reserved_memory_bytes", "gauge",
         "Memory reserved on the node by creations in flight.");
    for (int i = 0; i < c->nnodes; i++) {
        int64_t mem = 0, disk = 0;
        struct store_error se;
        store_reserved_on(a->st, c->nodes[i].name, NULL, NULL, INT64_MAX, &mem, &disk, &se);
        mtext_printf(b, "proxd_node_reserved_memory_bytes{node=\"%s\"} %lld\n", c->nodes[i].name,
                     (long long)mem);
    }
    help(b, "proxd_node_privileges_missing", "gauge",
         "Privileges proxd needs on the node that its Proxmox credentials lack (last check; "
         "-1: not checked yet).");
    for (int i = 0; i < c->nnodes; i++) {
        struct core_access ca;
        long long n = -1;
        if (core_node_access(a->k, c->nodes[i].name, &ca) == 0) {
            n = ca.checked_at ? (long long)ca.nmissing : -1;
            free(ca.missing);
        }
        mtext_printf(b, "proxd_node_privileges_missing{node=\"%s\"} %lld\n", c->nodes[i].name, n);
    }
}

static void ranges(struct api *a, struct mtext *b)
{
    const struct proxd_config *c = a->cfg;
    help(b, "proxd_vmid_range_size", "gauge", "VMIDs in the OS's range.");
    for (int i = 0; i < c->nos; i++)
        mtext_printf(b, "proxd_vmid_range_size{os=\"%s\"} %d\n", c->os[i].name,
                     c->os[i].range_hi - c->os[i].range_lo + 1);
    /* one read per range for both families, each printed whole as the text format wants */
    int n[CFG_MAX_OS] = {0}, q[CFG_MAX_OS] = {0};
    for (int i = 0; i < c->nos; i++) {
        struct store_error se;
        store_vmid_counts(a->st, c->os[i].range_lo, c->os[i].range_hi, &n[i], &q[i], &se);
    }
    help(b, "proxd_vmid_range_allocated", "gauge",
         "VMIDs of the OS's range that are allocated (quarantined ones included).");
    for (int i = 0; i < c->nos; i++)
        mtext_printf(b, "proxd_vmid_range_allocated{os=\"%s\"} %d\n", c->os[i].name, n[i]);
    help(b, "proxd_vmid_range_quarantined", "gauge",
         "VMIDs of the OS's range given back and not yet free again (no VM has them).");
    for (int i = 0; i < c->nos; i++)
        mtext_printf(b, "proxd_vmid_range_quarantined{os=\"%s\"} %d\n", c->os[i].name, q[i]);
}

/* The libpve clients, one per world (a cluster, or a standalone node),
 * named as the configuration names the world. */
struct world_stats {
    const char *name;
    struct pve_stats st;
    struct pve_callstat *calls;
    size_t ncalls;
};

static int worlds(struct api *a, struct world_stats *out)
{
    const struct proxd_config *c = a->cfg;
    pve_client *seen[CFG_MAX_NODES];
    int n = 0;
    for (int i = 0; i < c->nnodes; i++) {
        pve_client *pc = fleet_client(a->fl, c->nodes[i].name);
        bool dup = !pc;
        for (int k = 0; k < n && !dup; k++)
            dup = seen[k] == pc;
        if (dup)
            continue;
        seen[n] = pc;
        out[n].name = c->nodes[i].cluster[0] ? c->nodes[i].cluster : c->nodes[i].name;
        pve_client_stats(pc, &out[n].st);
        pve_client_callstats(pc, &out[n].calls, &out[n].ncalls);
        n++;
    }
    return n;
}

static void call_labels(struct mtext *b, const char *world, const struct pve_callstat *s)
{
    mtext_printf(b, "world=\"%s\",node=\"%s\",method=\"%s\",endpoint=\"%s\"", world, s->node,
                 s->method, s->endpoint);
}

/* One counter family over every world's endpoints. */
static void call_counter(struct mtext *b, const struct world_stats *w, int n, const char *name,
                         const char *text, size_t off)
{
    help(b, name, "counter", text);
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < w[i].ncalls; k++) {
            mtext_printf(b, "%s{", name);
            call_labels(b, w[i].name, &w[i].calls[k]);
            mtext_printf(
                b, "} %llu\n",
                (unsigned long long)*(const uint64_t *)((const char *)&w[i].calls[k] + off));
        }
}

/* Per endpoint: calls, errors and the latency histogram. Each family's
 * lines stay together, as the text format requires. */
static void pve_calls(struct mtext *b, const struct world_stats *w, int n)
{
    call_counter(b, w, n, "proxd_pve_calls_total",
                 "HTTP requests sent to Proxmox, by world, node, method and endpoint.",
                 offsetof(struct pve_callstat, calls));
    call_counter(b, w, n, "proxd_pve_call_errors_total",
                 "Requests to Proxmox that failed (error answer or network), by endpoint.",
                 offsetof(struct pve_callstat, errors));
    help(b, "proxd_pve_call_duration_seconds", "histogram",
         "Latency of requests to Proxmox, by endpoint.");
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < w[i].ncalls; k++) {
            const struct pve_callstat *s = &w[i].calls[k];
            uint64_t cum = 0;
            for (int j = 0; j <= PVE_LAT_NBOUNDS; j++) {
                cum += s->le[j];
                mtext_printf(b, "proxd_pve_call_duration_seconds_bucket{");
                call_labels(b, w[i].name, s);
                if (j < PVE_LAT_NBOUNDS)
                    mtext_printf(b, ",le=\"%g\"} %llu\n", pve_latency_bounds[j],
                                 (unsigned long long)cum);
                else
                    mtext_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
            }
            mtext_printf(b, "proxd_pve_call_duration_seconds_sum{");
            call_labels(b, w[i].name, s);
            mtext_printf(b, "} %.6f\n", s->seconds);
            mtext_printf(b, "proxd_pve_call_duration_seconds_count{");
            call_labels(b, w[i].name, s);
            mtext_printf(b, "} %llu\n", (unsigned long long)s->calls);
        }
}

static void pve(struct api *a, struct mtext *b)
{
    struct world_stats w[CFG_MAX_NODES];
    int n = worlds(a, w);
    static const struct {
        const char *name, *text;
        size_t off;
    } totals[] = {
        {"proxd_pve_requests_total", "HTTP requests sent to Proxmox, per world.",
         offsetof(struct pve_stats, requests)},
        {"proxd_pve_retries_total", "Re-sends after a lock or network error, per world.",
         offsetof(struct pve_stats, retries)},
        {"proxd_pve_host_failovers_total",
         "Switches to another host of a world after one failed, per world.",
         offsetof(struct pve_stats, failovers)},
    };
    for (size_t t = 0; t < sizeof totals / sizeof *totals; t++) {
        help(b, totals[t].name, "counter", totals[t].text);
        for (int i = 0; i < n; i++)
            mtext_printf(
                b, "%s{world=\"%s\"} %llu\n", totals[t].name, w[i].name,
                (unsigned long long)*(const uint64_t *)((const char *)&w[i].st + totals[t].off));
    }
    pve_calls(b, w, n);
    for (int i = 0; i < n; i++)
        free(w[i].calls);
    /* creations that left a node after a failure there */
    uint64_t fo[CFG_MAX_NODES];
    core_failovers(a->k, fo);
    help(b, "proxd_creation_failovers_total", "counter",
         "Creations that moved on to another node after a failure, by the node they left.");
    for (int i = 0; i < a->cfg->nnodes; i++)
        mtext_printf(b, "proxd_creation_failovers_total{node=\"%s\"} %llu\n", a->cfg->nodes[i].name,
                     (unsigned long long)fo[i]);
}

static void server(struct api *a, struct mtext *b)
{
    help(b, "proxd_http_responses_total", "counter", "HTTP answers by status class.");
    pthread_mutex_lock(&a->mu);
    for (int i = 1; i <= 5; i++)
        mtext_printf(b, "proxd_http_responses_total{class=\"%dxx\"} %llu\n", i,
                     (unsigned long long)a->requests[i]);
    pthread_mutex_unlock(&a->mu);
    int open = 0, parked = 0;
    sse_hub_counts(a->hub, &open, &parked);
    help(b, "proxd_event_streams", "gauge", "Open job event streams (parked: waiting for news).");
    mtext_printf(b, "proxd_event_streams{parked=\"no\"} %d\n", open - parked);
    mtext_printf(b, "proxd_event_streams{parked=\"yes\"} %d\n", parked);
}

/* Webhook delivery counters of this instance (each counts what it did
 * while it held the webhook's lease; sum across instances). */
static void webhooks(struct api *a, struct mtext *b)
{
    struct webhook_stat st[CFG_MAX_WEBHOOKS];
    size_t n = core_webhook_stats(a->k, st, CFG_MAX_WEBHOOKS);
    if (n == 0)
        return;
    static const struct {
        const char *name, *help;
        size_t off;
    } C[] = {
        {"proxd_webhook_delivered_total", "Events a webhook's receiver took (2xx).",
         offsetof(struct webhook_stat, delivered)},
        {"proxd_webhook_retried_total", "Failed posts that were tried again.",
         offsetof(struct webhook_stat, retried)},
        {"proxd_webhook_dropped_total", "Events dropped undelivered after max_age.",
         offsetof(struct webhook_stat, dropped)},
    };
    for (size_t c = 0; c < sizeof C / sizeof C[0]; c++) {
        help(b, C[c].name, "counter", C[c].help);
        for (size_t i = 0; i < n; i++)
            mtext_printf(b, "%s{webhook=\"%s\"} %llu\n", C[c].name, st[i].name,
                         (unsigned long long)*(const uint64_t *)((const char *)&st[i] + C[c].off));
    }
    help(b, "proxd_webhook_queue_age_seconds", "gauge",
         "Age of the oldest event waiting for delivery (0: none, or another instance delivers).");
    for (size_t i = 0; i < n; i++)
        mtext_printf(b, "proxd_webhook_queue_age_seconds{webhook=\"%s\"} %.3f\n", st[i].name,
                     (double)st[i].queue_age_ms / 1000.0);
    help(b, "proxd_webhook_holder", "gauge", "1 when this instance delivers the webhook.");
    for (size_t i = 0; i < n; i++)
        mtext_printf(b, "proxd_webhook_holder{webhook=\"%s\"} %d\n", st[i].name, st[i].holder);
}

void mtext_printf(struct mtext *m, const char *fmt, ...)
{
    if (m->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    m->full = buf_vprintf(&m->b, fmt, ap) != BUF_OK;
    va_end(ap);
}

void h_metrics(struct req *rq, struct resp *rs)
{
    struct mtext m = {BUF_INIT(METRICS_MAX), false};
    jobs(rq->api, &m);
    nodes(rq->api, &m);
    ranges(rq->api, &m);
    pve(rq->api, &m);
    server(rq->api, &m);
    snap_metrics(rq->api, &m);
    ippool_metrics(rq->api, &m);
    webhooks(rq->api, &m);
    if (m.full) {
        log_error("api", "/metrics: the page passed its %d MiB bound: answered 500",
                  METRICS_MAX / (1024 * 1024));
        buf_release(&m.b);
        resp_error(rs, HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
                   "the metrics page passed its %d MiB bound (see proxd's log)",
                   METRICS_MAX / (1024 * 1024));
        return;
    }
    rs->status = HTTP_OK;
    rs->ctype = "text/plain; version=0.0.4; charset=utf-8";
    rs->text = buf_take(&m.b);
}
