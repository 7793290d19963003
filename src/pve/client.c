/* The client: configuration, host selection with failover and a
 * connectivity check, the call loop with retries, stats, path encoding. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_int.h"

int pve_global_init(void)
{
    /* With CURLOPT_NOSIGNAL, a peer closing a TLS connection can raise
     * SIGPIPE in OpenSSL's write: ignore it process-wide. */
    signal(SIGPIPE, SIG_IGN);
    return curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK ? 0 : PVE_E_OTHER;
}

/* ---- set-up ------------------------------------------------------------------ */

static int add_host(pve_client *c, const char *spec, struct pve_error *err)
{
    struct pve_host *h = &c->hosts[c->nhosts];
    const char *colon = strrchr(spec, ':');
    bool v6 = strchr(spec, ':') != colon && spec[0] != '['; /* bare IPv6, no port */
    char name[128];
    int n;
    if (!spec[0] || strpbrk(spec, "/ ?#@"))
        n = -1;
    else if (v6)
        n = snprintf(name, sizeof name, "[%s]:8006", spec);
    else if (!colon || (spec[0] == '[' && colon < strchr(spec, ']')))
        n = snprintf(name, sizeof name, "%s:8006", spec);
    else
        n = snprintf(name, sizeof name, "%s", spec);
    if (n < 0 || (size_t)n >= sizeof name) {
        pve_error_set(err, PVE_E_INVALID, "bad host '%.200s' (want host:port)", spec);
        return PVE_E_INVALID;
    }
    pve_strlcpy(h->name, name, sizeof h->name);
    snprintf(h->base, sizeof h->base, "https://%s/api2/json", name);
    c->nhosts++;
    return 0;
}

static int parse_pins(pve_client *c, const char *list, struct pve_error *err)
{
    char *copy = xstrdup(list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",; \t", &save); t; t = strtok_r(NULL, ",; \t", &save)) {
        if (c->npins == PVE_MAX_PINS || pve_fp_parse(t, c->pins[c->npins]) != 0) {
            pve_error_set(err, PVE_E_INVALID,
                          "bad fingerprint (want the SHA-256 as AA:BB:..., 32 bytes)");
            rc = PVE_E_INVALID;
            break;
        }
        c->npins++;
    }
    if (!rc && !c->npins) {
        pve_error_set(err, PVE_E_INVALID, "empty fingerprint");
        rc = PVE_E_INVALID;
    }
    free(copy);
    return rc;
}

static int configure(pve_client *c, const struct pve_config *cfg, struct pve_error *err)
{
    if (!cfg->hosts || !cfg->nhosts) {
        pve_error_set(err, PVE_E_INVALID, "no hosts configured");
        return PVE_E_INVALID;
    }
    c->hosts = xcalloc(cfg->nhosts, sizeof *c->hosts);
    for (size_t i = 0; i < cfg->nhosts; i++) {
        int rc = add_host(c, cfg->hosts[i] ? cfg->hosts[i] : "", err);
        if (rc)
            return rc;
    }
    c->name = xstrdup(cfg->name && cfg->name[0] ? cfg->name : c->hosts[0].name);
    c->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 3000;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;
    c->probe_timeout_ms =
        cfg->probe_timeout_ms > 0 ? cfg->probe_timeout_ms : c->connect_timeout_ms * 2;
    if (c->probe_timeout_ms > c->timeout_ms)
        c->probe_timeout_ms = c->timeout_ms;
    c->ticket_lifetime_s = cfg->ticket_lifetime_s > 0 ? cfg->ticket_lifetime_s : 7200;
    c->ticket_renew_s = cfg->ticket_renew_s > 0 ? cfg->ticket_renew_s : c->ticket_lifetime_s / 2;
    if (c->ticket_renew_s >= c->ticket_lifetime_s) {
        /* a ticket would expire before its renewal: every call would wait for a login */
        pve_error_set(err, PVE_E_INVALID,
                      "ticket_renew_s (%ld) must be less than ticket_lifetime_s (%ld)",
                      c->ticket_renew_s, c->ticket_lifetime_s);
        return PVE_E_INVALID;
    }
    c->retry = cfg->retry;
    c->on_node_failure = cfg->on_node_failure;
    c->on_node_answer = cfg->on_node_answer;
    c->hook_ud = cfg->hook_ud;
    pve_retry_defaults(&c->retry);
    c->json_bodies = cfg->json_bodies;
    c->insecure = cfg->insecure;
    if (cfg->fingerprint && cfg->fingerprint[0]) {
        int rc = parse_pins(c, cfg->fingerprint, err);
        if (rc)
            return rc;
    }
    if (cfg->ca_file && cfg->ca_file[0]) {
        FILE *f = fopen(cfg->ca_file, "r");
        if (!f) {
            pve_error_set(err, PVE_E_INVALID, "cannot read ca_file %s", cfg->ca_file);
            return PVE_E_INVALID;
        }
        fclose(f);
        c->ca_file = xstrdup(cfg->ca_file);
    }
    return pve_auth_init(c, cfg, err);
}

pve_client *pve_client_new(const struct pve_config *cfg, struct pve_error *err)
{
    pve_error_clear(err);
    if (!cfg) {
        pve_error_set(err, PVE_E_INVALID, "no configuration");
        return NULL;
    }
    pve_client *c = xcalloc(1, sizeof *c);
    /* before configure(): pve_client_free destroys them when it fails */
    pthread_mutex_init(&c->auth.mu, NULL);
    cond_init_mono(&c->auth.cv); /* bounded callers wait on it with a deadline */
    pthread_mutex_init(&c->host_mu, NULL);
    pthread_mutex_init(&c->pool_mu, NULL);
    cond_init_mono(&c->pool_cv);
    atomic_init(&c->last_ok_ms, 0);
    pthread_mutex_init(&c->stats_mu, NULL);
    pthread_mutex_init(&c->expect_mu, NULL);
    pthread_mutex_init(&c->seen_mu, NULL);
    if (configure(c, cfg, err) != 0) {
        pve_client_free(c);
        return NULL;
    }
    if (c->insecure && !c->npins)
        log_warn(PVE_SUB, "%s: TLS certificates are not verified (insecure)", c->name);
    return c;
}

void pve_client_free(pve_client *c)
{
    if (!c)
        return;
    pve_pool_free(c);
    pve_auth_free(c);
    pthread_mutex_destroy(&c->pool_mu);
    pthread_cond_destroy(&c->pool_cv);
    pthread_mutex_destroy(&c->host_mu);
    pthread_mutex_destroy(&c->stats_mu);
    pthread_mutex_destroy(&c->expect_mu);
    pthread_mutex_destroy(&c->seen_mu);
    free(c->calls);
    free(c->hosts);
    free(c->ca_file);
    free(c->name);
    free(c);
}

void pve_client_stats(pve_client *c, struct pve_stats *out)
{
    out->requests = atomic_load(&c->requests);
    out->task_polls = atomic_load(&c->task_polls);
    out->retries = atomic_load(&c->retries);
    out->failovers = atomic_load(&c->failovers);
    out->logins = atomic_load(&c->logins);
}

/* ---- hosts ------------------------------------------------------------------ */

static void host_down(pve_client *c, struct pve_host *h, const char *why)
{
    pthread_mutex_lock(&c->host_mu);
    h->checked = false;
    h->backoff_ms = pve_host_backoff_next(h->backoff_ms);
    h->down_until = mono_ms() + h->backoff_ms;
    long b = h->backoff_ms;
    pthread_mutex_unlock(&c->host_mu);
    if (c->nhosts > 1)
        atomic_fetch_add(&c->failovers, 1);
    log_warn(PVE_SUB, "%s: host %s down for %ld ms: %s", c->name, h->name, b, why);
}

/* GET /version proves the host answers (any HTTP status will do). Without
 * credentials yet (before the first login) an unauthenticated path is used,
 * because PVE delays 401 answers by 3 s. Within timeout_ms (0: the
 * client's): the check is part of the call that needed it, and a probe
 * that comes first to a host (proxd's start, a host back from backoff)
 * judges a hung one within its own bound. Returns 0 (up), 1 (down) or a
 * fatal class (TLS) with err filled. */
static int check_host(pve_client *c, struct pve_host *h, const struct pve_creds *cr,
                      long timeout_ms, struct pve_error *err)
{
    bool creds = cr && (cr->auth_hdr || cr->cookie);
    struct pve_req rq = {.method = "GET",
                         .path = creds ? "/version" : "/access/domains",
                         .creds = cr,
                         .timeout_ms = timeout_ms};
    struct pve_resp rs;
    int rc = 0;
    if (pve_http_perform(c, h, &rq, &rs) != 0) {
        pve_error_from_resp(err, &rs, h->name);
        if (rs.tls_failed) {
            rc = PVE_E_TLS;
        } else {
            host_down(c, h, rs.curl_msg);
            rc = 1;
        }
    } else {
        pthread_mutex_lock(&c->host_mu);
        h->checked = true;
        h->backoff_ms = 0;
        pthread_mutex_unlock(&c->host_mu);
    }
    pve_resp_clear(&rs);
    return rc;
}

/* The first host in order that is not in backoff, checked if needed
 * (within timeout_ms, the call's own; 0: the client's). When
 * every host is in backoff and none was tried in this pick, the one whose
 * backoff ends first is probed anyway: the caller is retrying, and waiting
 * out the host backoff would make a single-host client stall for a minute.
 * Returns its index, -1 when none is up (err filled) or -2 on a fatal
 * error (TLS). */
static int pick_host(pve_client *c, const struct pve_creds *cr, long timeout_ms,
                     struct pve_error *err)
{
    bool tried = false;
    size_t first = 0;
    int64_t first_until = INT64_MAX;
    for (size_t i = 0; i < c->nhosts; i++) {
        struct pve_host *h = &c->hosts[i];
        pthread_mutex_lock(&c->host_mu);
        int64_t until = h->down_until;
        bool checked = h->checked;
        pthread_mutex_unlock(&c->host_mu);
        if (until > mono_ms()) {
            if (until < first_until) {
                first_until = until;
                first = i;
            }
            continue;
        }
        if (checked)
            return (int)i;
        tried = true;
        int rc = check_host(c, h, cr, timeout_ms, err);
        if (rc == 0)
            return (int)i;
        if (rc > 1)
            return -2;
    }
    if (tried)
        return -1;
    int rc = check_host(c, &c->hosts[first], cr, timeout_ms, err);
    return rc == 0 ? (int)first : rc > 1 ? -2 : -1;
}

static bool any_host_up(pve_client *c)
{
    bool up = false;
    pthread_mutex_lock(&c->host_mu);
    int64_t now = mono_ms();
    for (size_t i = 0; i < c->nhosts && !up; i++)
        up = c->hosts[i].down_until <= now;
    pthread_mutex_unlock(&c->host_mu);
    return up;
}

/* ---- the call loop ------------------------------------------------------------ */

static int check_args(const char *method, const char *path, json_t *params, struct pve_error *err)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    bool ok = false;
    for (size_t i = 0; method && i < 4; i++)
        ok |= strcmp(method, methods[i]) == 0;
    if (!ok) {
        pve_error_set(err, PVE_E_INVALID, "method must be GET, POST, PUT or DELETE");
        return PVE_E_INVALID;
    }
    if (!path || path[0] != '/') {
        pve_error_set(err, PVE_E_INVALID, "path must start with '/'");
        return PVE_E_INVALID;
    }
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    int rc = pve_encode_form(params, &b, err);
    buf_release(&b);
    return rc;
}

unsigned pve_short_flags(unsigned flags, const struct pve_guard *g)
{
    unsigned f = flags & (PVE_CALL_PROBE | PVE_CALL_GLANCE | PVE_F_RENEW);
    /* a look on a node held down: the probe's time, as the prober gives
     * the node before it judges it (http.c also cuts off one whose node
     * is found held down while it is in flight) */
    if (!(f & PVE_CALL_PROBE) && g && g->fn(g->ud))
        f = PVE_CALL_PROBE;
    return f & PVE_CALL_PROBE ? f : 0;
}

long pve_short_ms(const pve_client *c, unsigned shortf)
{
    long r = (shortf & PVE_F_RENEW) ? atomic_load(&c->auth.renew_ms) : 0;
    if (r > 0)
        return r;
    long t = (shortf & PVE_CALL_PROBE) ? c->probe_timeout_ms : 0;
    if ((shortf & PVE_CALL_GLANCE) && t > PVE_GLANCE_MS)
        t = PVE_GLANCE_MS;
    return t;
}

/* One send to one host. Returns the class; *rs holds the answer. */
static int send_once(pve_client *c, int hi, const char *method, const char *path, json_t *params,
                     unsigned flags, const struct pve_guard *g, bool raw_ok,
                     const struct pve_creds *cr, struct pve_resp *rs, struct pve_error *err)
{
    struct pve_req rq = {.method = method,
                         .path = path,
                         .params = params,
                         .creds = cr,
                         .json_body = c->json_bodies,
                         .raw_ok = raw_ok,
                         .timeout_ms = pve_short_ms(c, pve_short_flags(flags, g)),
                         .guard = g};
    if (flags & PVE_F_TASKPOLL)
        atomic_fetch_add(&c->task_polls, 1);
    int64_t t0 = mono_us();
    pve_http_perform(c, &c->hosts[hi], &rq, rs);
    double took = (double)(mono_us() - t0) / 1e6;
    pve_error_from_resp(err, rs, c->hosts[hi].name);
    /* an unparsed body is checked by whoever parses it */
    if (err->cls == PVE_OK && !rs->raw.len && !json_is_object(rs->body)) {
        pve_error_set(err, PVE_E_OTHER, "answer is not a JSON object");
        err->http_status = (int)rs->status;
    }
    pve_callstat_note(c, method, path, took, err->cls != PVE_OK);
    return err->cls;
}

/* A network failure on a path that names a node: the caller's health
 * tracking hears of it (cluster-wide paths name none). */
static void tell_node_failure(pve_client *c, const char *path, const struct pve_error *err)
{
    char ep[96], node[64];
    pve_endpoint_of(path, ep, sizeof ep, node, sizeof node);
    if (node[0])
        c->on_node_failure(c->hook_ud, node, err);
}

/* A success on a path that names a node: proof that it answered after
 * sent_ms (cluster-wide paths name none). */
static void tell_node_answer(pve_client *c, const char *path, int64_t sent_ms)
{
    char ep[96], node[64];
    pve_endpoint_of(path, ep, sizeof ep, node, sizeof node);
    if (node[0])
        c->on_node_answer(c->hook_ud, node, sent_ms);
}

/* The call loop behind pve_call_int and pve_call_raw: the answer goes to
 * *envelope (parsed) or, with raw, to *raw (unparsed). */
static int call_loop(pve_client *c, const char *method, const char *path, json_t *params,
                     unsigned flags, const struct pve_guard *g, json_t **envelope, struct buf *raw,
                     struct pve_error *err)
{
    struct pve_error scratch;
    if (!err)
        err = &scratch;
    pve_error_clear(err);
    if (envelope)
        *envelope = NULL;
    if (!c) {
        pve_error_set(err, PVE_E_INVALID, "no client");
        return PVE_E_INVALID;
    }
    int rc = check_args(method, path, params, err);
    if (rc)
        return rc;
    int64_t t0 = mono_ms(), sent_ms = t0;
    int sent = 0, tries = 0;
    bool relogged = false, login_failed = false;
    for (;;) {
        struct pve_creds cr = {0};
        struct pve_resp rs = {0};
        bool retriable, again = false;
        /* a call with a short timeout of its own keeps it through a login */
        unsigned sf = (flags & PVE_F_NOAUTH) ? 0 : pve_short_flags(flags, g);
        if (!(flags & PVE_F_NOAUTH) && (rc = pve_auth_get(c, sf, &cr, err)) != 0)
            break;
        int hi = pick_host(c, &cr, pve_short_ms(c, pve_short_flags(flags, g)), err);
        if (hi == -2) {
            rc = err->cls;
            pve_creds_clear(&cr);
            break;
        }
        if (hi == -1) {
            rc = PVE_E_NETWORK;
            retriable = true;
        } else {
            sent++;
            sent_ms = mono_ms();
            rc = send_once(c, hi, method, path, params, flags, g, raw != NULL, &cr, &rs, err);
            if (rc == PVE_OK && envelope)
                *envelope = json_incref(rs.body);
            if (rc == PVE_OK && raw) {
                *raw = rs.raw;
                buf_init(&rs.raw, PVE_BODY_MAX);
            }
            if (rc != PVE_OK && rs.host_failed) {
                host_down(c, &c->hosts[hi], rs.curl_msg);
                again = any_host_up(c); /* fail over at once */
            } else if (rs.status == 401 && !relogged && pve_auth_is_ticket(c) &&
                       !(flags & (PVE_F_NOAUTH | PVE_F_NORELOGIN))) {
                relogged = true;
                /* a login that fails is the call's failure (a hung one is a
                 * network failure, as a probe must see it), not the 401 */
                struct pve_error le;
                int lrc = pve_auth_relogin(c, cr.gen, sf, &le);
                again = lrc == 0;
                if (lrc) {
                    rc = lrc;
                    *err = le;
                    /* not sent again: the login its waiters shared failed
                     * for them all at once (pve.h, Tickets) */
                    login_failed = true;
                }
            }
            retriable = !login_failed && (rc == PVE_E_LOCK || rc == PVE_E_NETWORK) &&
                        !((flags & PVE_CALL_ONCE) && rs.maybe_sent) &&
                        !((flags & PVE_CALL_FAILFAST) && (rs.status == 595 || rs.status == 596));
        }
        pve_resp_clear(&rs);
        pve_creds_clear(&cr);
        if (rc == PVE_OK)
            break;
        if (again)
            continue;
        /* a look on a node held down is not sent again: its failure is
         * the answer the waiting job needs to fail over */
        if (!retriable || (flags & (PVE_CALL_NORETRY | PVE_CALL_PROBE)) || (g && g->fn(g->ud)) ||
            ++tries >= c->retry.max_attempts)
            break;
        long d = pve_backoff_ms(&c->retry, tries);
        if (mono_ms() - t0 + d > c->retry.total_ms)
            break;
        log_warn(PVE_SUB, "%s: %s %s failed (%s: %s), attempt %d of %d, retrying in %ld ms",
                 c->name, method, path, pve_class_name(err->cls), err->message, tries,
                 c->retry.max_attempts, d);
        atomic_fetch_add(&c->retries, 1);
        sleep_ms(d);
    }
    err->attempts = sent;
    if (rc == PVE_E_NETWORK && c->on_node_failure && !(flags & PVE_CALL_PROBE))
        tell_node_failure(c, path, err);
    if (rc == PVE_OK && c->on_node_answer && !(flags & PVE_CALL_PROBE))
        tell_node_answer(c, path, sent_ms);
    if (rc == PVE_OK) {
        int a = err->attempts;
        char host[sizeof err->host];
        pve_strlcpy(host, err->host, sizeof host);
        pve_error_clear(err);
        err->attempts = a;
        pve_strlcpy(err->host, host, sizeof err->host);
    }
    return rc;
}

int pve_call_int(pve_client *c, const char *method, const char *path, json_t *params,
                 unsigned flags, json_t **envelope, struct pve_error *err)
{
    return call_loop(c, method, path, params, flags, NULL, envelope, NULL, err);
}

int pve_call_guarded(pve_client *c, const char *method, const char *path, json_t *params,
                     unsigned flags, const struct pve_guard *g, json_t **envelope,
                     struct pve_error *err)
{
    return call_loop(c, method, path, params, flags, g, envelope, NULL, err);
}

int pve_call_raw(pve_client *c, const char *method, const char *path, json_t *params,
                 unsigned flags, struct buf *raw, struct pve_error *err)
{
    buf_init(raw, PVE_BODY_MAX);
    return call_loop(c, method, path, params, flags, NULL, NULL, raw, err);
}

int pve_call_guarded_raw(pve_client *c, const char *method, const char *path, json_t *params,
                         unsigned flags, const struct pve_guard *g, struct buf *raw,
                         struct pve_error *err)
{
    buf_init(raw, PVE_BODY_MAX);
    return call_loop(c, method, path, params, flags, g, NULL, raw, err);
}

/* FNV-1a: a UPID's key in the ring of known tasks (a collision would only
 * make a lost answer's lookup skip a task, which then fails as unseen). */
static uint64_t upid_hash(const char *upid)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)upid; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1; /* 0 marks a free slot */
}

void pve_client_set_task_registry(pve_client *c, const struct pve_task_registry *r)
{
    pthread_mutex_lock(&c->seen_mu);
    c->reg = r ? *r : (struct pve_task_registry){0};
    pthread_mutex_unlock(&c->seen_mu);
}

void pve_client_task_seen(pve_client *c, const char *upid)
{
    if (!upid || strncmp(upid, "UPID:", 5) != 0)
        return;
    uint64_t h = upid_hash(upid);
    pthread_mutex_lock(&c->seen_mu);
    c->seen[c->seen_next++ % PVE_SEEN_MAX] = h;
    struct pve_task_registry reg = c->reg;
    pthread_mutex_unlock(&c->seen_mu);
    if (reg.seen)
        reg.seen(reg.ud, upid);
}

bool pve_client_task_known(pve_client *c, const char *upid)
{
    uint64_t h = upid_hash(upid);
    bool known = false;
    pthread_mutex_lock(&c->seen_mu);
    for (unsigned i = 0; i < PVE_SEEN_MAX && !known; i++)
        known = c->seen[i] == h;
    struct pve_task_registry reg = c->reg;
    pthread_mutex_unlock(&c->seen_mu);
    /* not ours in this process: maybe another's sharing the token */
    if (!known && reg.known)
        known = reg.known(reg.ud, upid) != 0;
    return known;
}

int pve_call_ex(pve_client *c, const char *method, const char *path, json_t *params, unsigned flags,
                json_t **data, struct pve_error *err)
{
    json_t *env = NULL;
    if (data)
        *data = NULL;
    int rc = pve_call_int(c, method, path, params,
                          flags & (PVE_CALL_ONCE | PVE_CALL_FAILFAST | PVE_CALL_NORETRY |
                                   PVE_CALL_PROBE | PVE_CALL_GLANCE),
                          &env, err);
    if (rc == 0 && data) {
        json_t *d = json_object_get(env, "data");
        *data = d ? json_incref(d) : json_null();
        if (strcmp(method, "GET") != 0 && json_is_string(d)) /* a task it started */
            pve_client_task_seen(c, json_string_value(d));
    }
    json_decref(env);
    return rc;
}

int pve_call(pve_client *c, const char *method, const char *path, json_t *params, json_t **data,
             struct pve_error *err)
{
    return pve_call_ex(c, method, path, params, 0, data, err);
}

/* ---- encoding helpers --------------------------------------------------------- */

int pve_path(char *out, size_t len, const char *fmt, ...)
{
    struct buf b = BUF_INIT(len ? len - 1 : 0);
    va_list ap;
    int rc = 0;
    va_start(ap, fmt);
    for (const char *p = fmt; *p && rc == 0; p++) {
        if (*p != '%') {
            rc = buf_addc(&b, *p) ? -1 : 0;
            continue;
        }
        p++;
        if (*p == 's') {
            const char *s = va_arg(ap, const char *);
            struct buf seg = BUF_INIT(BUF_UNLIMITED);
            if (s && s[0]) /* an empty segment would silently change the path */
                pct_encode(&seg, s, strlen(s), false);
            rc = !seg.len || buf_add(&b, seg.data, seg.len) ? -1 : 0;
            buf_release(&seg);
        } else if (*p == 'd') {
            rc = buf_printf(&b, "%d", va_arg(ap, int)) ? -1 : 0;
        } else if (*p == '%') {
            rc = buf_addc(&b, '%') ? -1 : 0;
        } else {
            rc = -1;
        }
    }
    va_end(ap);
    if (rc == 0 && len && b.len < len) {
        memcpy(out, buf_str(&b), b.len + 1);
    } else {
        rc = -1;
        if (len)
            out[0] = '\0';
    }
    buf_release(&b);
    return rc;
}

char *pve_sshkeys_encode(const char *keys)
{
    if (!keys)
        return NULL;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    pct_encode(&b, keys, strlen(keys), true);
    return buf_take(&b);
}
