/* libcurl transport: the handle pool, request encoding, TLS trust (including
 * the certificate-fingerprint pin curl cannot do itself) and response
 * parsing. One easy handle serves one request at a time; its keep-alive
 * connections stay with it in the pool. */
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_int.h"

/* ---- encoding ------------------------------------------------------------ */

/* PVE accepts booleans only as 1/0 (older versions reject JSON true/false). */
static int scalar_text(const char *name, json_t *v, struct buf *out, struct pve_error *err)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        buf_add(out, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        buf_printf(out, "%lld", (long long)json_integer_value(v));
        return 0;
    case JSON_REAL:
        buf_printf(out, "%.17g", json_real_value(v));
        return 0;
    case JSON_TRUE:
        buf_addc(out, '1');
        return 0;
    case JSON_FALSE:
        buf_addc(out, '0');
        return 0;
    default:
        pve_error_set(err, PVE_E_INVALID, "parameter '%s': not a string, number or boolean", name);
        return PVE_E_INVALID;
    }
}

int pve_encode_form(json_t *params, struct buf *out, struct pve_error *err)
{
    if (!params)
        return 0;
    if (!json_is_object(params)) {
        pve_error_set(err, PVE_E_INVALID, "parameters must be a JSON object");
        return PVE_E_INVALID;
    }
    struct buf v = BUF_INIT(BUF_UNLIMITED);
    const char *k;
    json_t *val;
    int rc = 0;
    json_object_foreach(params, k, val)
    {
        if (json_is_null(val))
            continue;
        buf_reset(&v);
        if ((rc = scalar_text(k, val, &v, err)) != 0)
            break;
        if (out->len)
            buf_addc(out, '&');
        pct_encode(out, k, strlen(k), false);
        buf_addc(out, '=');
        pct_encode(out, v.data ? v.data : "", v.len, false);
    }
    buf_release(&v);
    return rc;
}

int pve_encode_json(json_t *params, struct buf *out, struct pve_error *err)
{
    if (!params || !json_object_size(params))
        return 0;
    if (!json_is_object(params)) {
        pve_error_set(err, PVE_E_INVALID, "parameters must be a JSON object");
        return PVE_E_INVALID;
    }
    json_t *o = json_object();
    const char *k;
    json_t *val;
    json_object_foreach(params, k, val)
    {
        if (json_is_boolean(val))
            json_object_set_new(o, k, json_integer(json_is_true(val)));
        else if (json_is_string(val) || json_is_number(val))
            json_object_set(o, k, val);
        else if (!json_is_null(val)) {
            json_decref(o);
            pve_error_set(err, PVE_E_INVALID, "parameter '%s': not a string, number or boolean", k);
            return PVE_E_INVALID;
        }
    }
    char *s = json_dumps(o, JSON_COMPACT);
    buf_adds(out, s);
    free(s);
    json_decref(o);
    return 0;
}

/* ---- fingerprints ---------------------------------------------------------- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int pve_fp_parse(const char *s, unsigned char out[PVE_FP_LEN])
{
    size_t n = 0;
    while (*s) {
        if (*s == ':') {
            s++;
            continue;
        }
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (hi < 0 || lo < 0 || n == PVE_FP_LEN)
            return -1;
        out[n++] = (unsigned char)(hi << 4 | lo);
        s += 2;
    }
    return n == PVE_FP_LEN ? 0 : -1;
}

void pve_fp_format(const unsigned char fp[PVE_FP_LEN], char *out, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < PVE_FP_LEN && o + 3 < len; i++) {
        if (i)
            out[o++] = ':';
        out[o++] = hex[fp[i] >> 4];
        out[o++] = hex[fp[i] & 15];
    }
    out[o < len ? o : len - 1] = '\0';
}

static int g_ex_idx = -1;
static pthread_once_t g_ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
    g_ex_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* OpenSSL calls this for every certificate of the chain. The chain's own
 * validity does not matter with a pin (a self-signed node certificate is
 * the normal case); the leaf's SHA-256 must equal one of the pins. */
static int pin_verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    (void)preverify_ok;
    if (X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct pve_conn *k = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_ex_idx) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(xs);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!k || !cert || !X509_digest(cert, EVP_sha256(), md, &mdlen) || mdlen != PVE_FP_LEN)
        return 0;
    for (size_t i = 0; i < k->c->npins; i++)
        if (memcmp(md, k->c->pins[i], PVE_FP_LEN) == 0) {
            X509_STORE_CTX_set_error(xs, X509_V_OK);
            return 1;
        }
    k->fp_mismatch = true;
    pve_fp_format(md, k->seen_fp, sizeof k->seen_fp);
    X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
    return 0;
}

static CURLcode ssl_ctx_cb(CURL *h, void *sslctx, void *ud)
{
    (void)h;
    SSL_CTX *ctx = sslctx;
    SSL_CTX_set_ex_data(ctx, g_ex_idx, ud);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, pin_verify_cb);
    return CURLE_OK;
}

/* ---- the handle pool ------------------------------------------------------- */

static void conn_setup(pve_client *c, struct pve_conn *k)
{
    CURL *h = k->h;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (c->npins) {
        pthread_once(&g_ex_once, ex_init);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, k);
    } else if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (c->ca_file)
            curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    }
}

/* Unlink and return the idle handle whose exchange ended last if that
 * was within PVE_WARM_MS (its connection is still open), else NULL. */
static struct pve_conn *take_warm(pve_client *c, int64_t now)
{
    struct pve_conn **best = NULL;
    for (struct pve_conn **pp = &c->pool; *pp; pp = &(*pp)->next)
        if (now - (*pp)->used_ms < PVE_WARM_MS && (!best || (*pp)->used_ms > (*best)->used_ms))
            best = pp;
    if (!best)
        return NULL;
    struct pve_conn *k = *best;
    *best = k->next;
    return k;
}

/* A handle for one exchange. Servers close a connection idle for 5 s
 * (pveproxy, pvesim), and a new one costs a TLS handshake: about 1 ms of
 * CPU here and a signature on the server, fifteen times a request on a
 * warm connection. So a handle whose connection is warm is taken first;
 * when none is idle but others are out (a burst: the polls of a batch of
 * clones that started together come due together), the call waits up to
 * PVE_WARM_WAIT_MS for one to come back before it opens a connection of
 * its own; an exchange on loopback or a LAN takes a few ms. */
struct pve_conn *pve_conn_get(pve_client *c)
{
    pthread_mutex_lock(&c->pool_mu);
    int64_t now = mono_ms(), until = now + PVE_WARM_WAIT_MS;
    struct pve_conn *k = take_warm(c, now);
    while (!k && c->busy > 0 && now < until) {
        struct timespec ts = deadline_in_ms(until - now);
        pthread_cond_timedwait(&c->pool_cv, &c->pool_mu, &ts);
        now = mono_ms();
        k = take_warm(c, now);
    }
    if (!k && c->pool) { /* a cold one: curl opens a new connection */
        k = c->pool;
        c->pool = k->next;
    }
    c->busy++;
    pthread_mutex_unlock(&c->pool_mu);
    if (k)
        return k;
    k = xcalloc(1, sizeof *k);
    k->c = c;
    k->h = curl_easy_init();
    if (!k->h) {
        log_error(PVE_SUB, "curl_easy_init failed");
        abort();
    }
    conn_setup(c, k);
    return k;
}

void pve_conn_put(pve_client *c, struct pve_conn *k, bool ok)
{
    pthread_mutex_lock(&c->pool_mu);
    k->used_ms = ok ? mono_ms() : 0;
    k->next = c->pool;
    c->pool = k;
    /* after a failure (curl may have dropped the connection) the newest of
     * the idle handles' exchanges, if any, tells pve_client_open_until */
    int64_t last = k->used_ms;
    for (struct pve_conn *p = c->pool; !ok && p; p = p->next)
        if (p->used_ms > last)
            last = p->used_ms;
    atomic_store(&c->last_ok_ms, last);
    c->busy--;
    pthread_cond_signal(&c->pool_cv);
    pthread_mutex_unlock(&c->pool_mu);
}

int64_t pve_client_open_until(pve_client *c)
{
    int64_t last = atomic_load(&c->last_ok_ms);
    return last ? last + PVE_WARM_MS : 0;
}

void pve_pool_free(pve_client *c)
{
    struct pve_conn *k = c->pool;
    while (k) {
        struct pve_conn *n = k->next;
        curl_easy_cleanup(k->h);
        free(k);
        k = n;
    }
    c->pool = NULL;
}

/* ---- one exchange ------------------------------------------------------------ */

struct sink {
    struct buf body;
    bool too_big;
    char *reason;
    /* a guarded request (struct pve_guard): cut off once it has run
     * cut_ms while the guard holds its node down */
    const struct pve_guard *guard;
    int64_t t0, cut_ms;
    bool cut;
};

/* libcurl calls this often while data moves and about once a second while
 * none does: the guard is asked only once the request has run its short
 * time, so a fast request pays nothing for it. Nonzero aborts the transfer
 * (CURLE_ABORTED_BY_CALLBACK). */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct sink *s = ud;
    if (mono_ms() - s->t0 < s->cut_ms || !s->guard->fn(s->guard->ud))
        return 0;
    s->cut = true;
    return 1;
}

/* curl sends a request again by itself, on a new connection, when a
 * reused one closes without an answer ("Connection died, retrying a fresh
 * connect"). For a read that is right; a write (POST, PUT, DELETE) may have
 * been served before its answer was lost (a clone started, a VM deleted),
 * and sent again it does its work twice or fails against its own first run
 * ("already exists": a creation took its own clone for a stranger's VM and
 * made a second). So a write goes out once per exchange: a second sending
 * is refused here, and the exchange fails as one that may have been served
 * (maybe_sent), as does one whose sending went out and whose end failed
 * in any way (curl's new connection refused: not a host to fail over
 * from); PVE_CALL_ONCE callers look before they ask again. */
struct once {
    bool sent;
    bool refused; /* curl went to send it again */
};

/* The answers of a proxy that had sent the request on and then lost the
 * node's answer: pveproxy relaying to another node of its cluster gives 596
 * for a failure while sending or reading the headers (its proxy timeout is
 * 30 s: a busy pvedaemon's clone, started, answers later), 597 while
 * reading the body, 599 any other; a reverse proxy before it, 502 or 504.
 * A write so answered may have been served (a 595 was never sent on, nor
 * is a 503 refused at the door). */
static bool relay_lost(long status)
{
    return status == 596 || status == 597 || status == 599 || status == 502 || status == 504;
}

static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port)
{
    (void)ip;
    (void)local_ip;
    (void)port;
    (void)local_port;
    struct once *o = ud;
    if (o->sent) {
        o->refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    o->sent = true;
    return CURL_PREREQFUNC_OK;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (buf_add(&s->body, p, n) != BUF_OK) {
        s->too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

/* Keep the reason phrase of the last status line (PVE puts its message there). */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (n > 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', n);
        const char *end = p + n;
        s->reason[0] = '\0';
        if (sp && (sp = memchr(sp + 1, ' ', (size_t)(end - sp - 1))) != NULL) {
            sp++;
            size_t k = (size_t)(end - sp);
            while (k && (sp[k - 1] == '\n' || sp[k - 1] == '\r'))
                k--;
            if (k >= PVE_MSG_MAX)
                k = PVE_MSG_MAX - 1;
            memcpy(s->reason, sp, k);
            s->reason[k] = '\0';
        }
    }
    return n;
}

static bool is_get_like(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "DELETE") == 0;
}

/* Sort a transport failure: did the host fail (try another), or might the
 * server have the request already (PVE_CALL_ONCE must not resend)? */
static void judge_failure(CURL *h, struct pve_conn *k, struct pve_resp *rs)
{
    curl_off_t app = 0;
    long reqsize = 0;
    curl_easy_getinfo(h, CURLINFO_APPCONNECT_TIME_T, &app);
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &reqsize);
    /* A reused connection has no handshake this time but is connected. */
    long nconn = 0;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &nconn);
    bool connected = app > 0 || nconn == 0;
    switch (rs->cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
        rs->host_failed = true;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        if (connected)
            rs->maybe_sent = true;
        else
            rs->host_failed = true;
        break;
    case CURLE_SEND_ERROR:
        if (reqsize > 0)
            rs->maybe_sent = rs->closed = true;
        else
            rs->host_failed = true;
        break;
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        rs->maybe_sent = rs->closed = true;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        rs->tls_failed = true;
        break;
    default:
        break;
    }
    if (k->fp_mismatch) {
        rs->tls_failed = true;
        rs->host_failed = false;
    }
}

static void describe_failure(pve_client *c, struct pve_conn *k, struct pve_resp *rs,
                             const struct sink *s)
{
    if (k->fp_mismatch) {
        char want[3 * PVE_FP_LEN];
        pve_fp_format(c->pins[0], want, sizeof want);
        snprintf(rs->curl_msg, sizeof rs->curl_msg,
                 "certificate fingerprint mismatch: expected %s%s, seen %s", want,
                 c->npins > 1 ? " (or another pin)" : "", k->seen_fp);
    } else if (s->too_big) {
        snprintf(rs->curl_msg, sizeof rs->curl_msg, "response larger than %u bytes", PVE_BODY_MAX);
    } else {
        snprintf(rs->curl_msg, sizeof rs->curl_msg, "%s",
                 k->errbuf[0] ? k->errbuf : curl_easy_strerror(rs->cc));
    }
}

static struct curl_slist *build_headers(const struct pve_req *rq, bool has_body, bool json)
{
    struct curl_slist *sl = NULL;
    sl = curl_slist_append(sl, "Accept: application/json");
    sl = curl_slist_append(sl, "Expect:"); /* no 100-continue round trip */
    if (has_body)
        sl = curl_slist_append(sl, json ? "Content-Type: application/json"
                                        : "Content-Type: application/x-www-form-urlencoded");
    if (rq->creds && rq->creds->auth_hdr)
        sl = curl_slist_append(sl, rq->creds->auth_hdr);
    if (rq->creds && rq->creds->csrf_hdr && strcmp(rq->method, "GET") != 0)
        sl = curl_slist_append(sl, rq->creds->csrf_hdr);
    return sl;
}

void pve_resp_clear(struct pve_resp *rs)
{
    json_decref(rs->body);
    buf_release(&rs->raw);
    memset(rs, 0, sizeof *rs);
}

int pve_http_perform(pve_client *c, const struct pve_host *h, const struct pve_req *rq,
                     struct pve_resp *rs)
{
    memset(rs, 0, sizeof *rs);
    buf_init(&rs->raw, PVE_BODY_MAX);
    struct buf url = BUF_INIT(BUF_UNLIMITED), body = BUF_INIT(BUF_UNLIMITED);
    struct sink s = {.body = BUF_INIT(PVE_BODY_MAX), .reason = rs->reason};
    struct curl_slist *hdrs = NULL;
    struct pve_conn *k = NULL;
    struct once once = {0};
    bool getlike = is_get_like(rq->method);
    bool json = false;
    int rc = -1;

    buf_printf(&url, "%s%s", h->base, rq->path);
    if (getlike) {
        struct buf q = BUF_INIT(BUF_UNLIMITED);
        struct pve_error e;
        if (pve_encode_form(rq->params, &q, &e) == 0 && q.len)
            buf_printf(&url, "%c%s", strchr(rq->path, '?') ? '&' : '?', q.data);
        buf_release(&q);
    } else {
        struct pve_error e;
        /* An empty JSON body makes PVE fail: send an empty form instead. */
        json = rq->json_body && rq->params && json_object_size(rq->params);
        if (json)
            pve_encode_json(rq->params, &body, &e);
        else
            pve_encode_form(rq->params, &body, &e);
    }

    k = pve_conn_get(c);
    CURL *ch = k->h;
    k->fp_mismatch = false;
    k->seen_fp[0] = k->errbuf[0] = '\0';
    hdrs = build_headers(rq, !getlike, json);
    curl_easy_setopt(ch, CURLOPT_URL, url.data);
    if (getlike) {
        curl_easy_setopt(ch, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(ch, CURLOPT_CUSTOMREQUEST,
                         strcmp(rq->method, "GET") == 0 ? NULL : rq->method);
    } else {
        /* POSTFIELDS with an explicit size: always a Content-Length, never chunked. */
        curl_easy_setopt(ch, CURLOPT_POSTFIELDSIZE, (long)body.len);
        curl_easy_setopt(ch, CURLOPT_POSTFIELDS, body.data ? body.data : "");
        curl_easy_setopt(ch, CURLOPT_CUSTOMREQUEST,
                         strcmp(rq->method, "POST") == 0 ? NULL : rq->method);
    }
    if (strcmp(rq->method, "GET") != 0) { /* a write: a DELETE too */
        curl_easy_setopt(ch, CURLOPT_PREREQFUNCTION, on_prereq);
        curl_easy_setopt(ch, CURLOPT_PREREQDATA, &once);
    }
    curl_easy_setopt(ch, CURLOPT_TIMEOUT_MS, rq->timeout_ms > 0 ? rq->timeout_ms : c->timeout_ms);
    curl_easy_setopt(ch, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(ch, CURLOPT_COOKIE, rq->creds ? rq->creds->cookie : NULL);
    curl_easy_setopt(ch, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(ch, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(ch, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(ch, CURLOPT_HEADERDATA, &s);
    if (rq->guard) {
        s.guard = rq->guard;
        s.cut_ms = c->probe_timeout_ms;
        curl_easy_setopt(ch, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(ch, CURLOPT_XFERINFODATA, &s);
        curl_easy_setopt(ch, CURLOPT_NOPROGRESS, 0L);
    }

    atomic_fetch_add(&c->requests, 1);
    int64_t t0 = mono_ms();
    s.t0 = t0;
    rs->cc = curl_easy_perform(ch);
    if (once.refused) {
        /* what curl met before it went to send again: nothing came back */
        rs->cc = CURLE_GOT_NOTHING;
        snprintf(k->errbuf, sizeof k->errbuf,
                 "the connection closed without an answer after the request was sent");
    }
    if (s.cut) {
        /* a timeout of the short look's, after the request went out: a
         * network failure as a timeout is, the connection is closed */
        rs->cc = CURLE_OPERATION_TIMEDOUT;
        rs->maybe_sent = true;
        snprintf(k->errbuf, sizeof k->errbuf,
                 "no answer within %lld ms from a node held down (a short look)",
                 (long long)(mono_ms() - t0));
    }
    if (rs->cc == CURLE_OK) {
        curl_easy_getinfo(ch, CURLINFO_RESPONSE_CODE, &rs->status);
        if (once.sent && relay_lost(rs->status))
            rs->maybe_sent = true;
        if (rq->raw_ok && rs->status >= 200 && rs->status < 300) {
            rs->raw = s.body; /* the caller parses it piece by piece */
            buf_init(&s.body, PVE_BODY_MAX);
        } else {
            rs->body = s.body.len ? json_loadb(s.body.data, s.body.len, 0, NULL) : NULL;
        }
        rc = 0;
        log_debug(PVE_SUB, "%s %s%s -> %ld (%lld ms)", rq->method, h->name, rq->path, rs->status,
                  (long long)(mono_ms() - t0));
    } else {
        if (!s.cut)
            judge_failure(ch, k, rs);
        if (once.sent) {
            /* the write went out once: whatever failed after it (curl's own
             * new connection refused, a timeout) it may have been served */
            rs->maybe_sent = true;
            rs->host_failed = false;
        }
        describe_failure(c, k, rs, &s);
        log_debug(PVE_SUB, "%s %s%s failed: %s (%lld ms)", rq->method, h->name, rq->path,
                  rs->curl_msg, (long long)(mono_ms() - t0));
    }

    /* Do not leave pointers to this frame's data in the pooled handle. */
    curl_easy_setopt(ch, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(ch, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(ch, CURLOPT_PREREQFUNCTION, NULL);
    curl_easy_setopt(ch, CURLOPT_PREREQDATA, NULL);
    curl_easy_setopt(ch, CURLOPT_COOKIE, NULL);
    curl_easy_setopt(ch, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(ch, CURLOPT_HEADERDATA, NULL);
    if (rq->guard) {
        curl_easy_setopt(ch, CURLOPT_NOPROGRESS, 1L);
        curl_easy_setopt(ch, CURLOPT_XFERINFOFUNCTION, NULL);
        curl_easy_setopt(ch, CURLOPT_XFERINFODATA, NULL);
    }
    /* PVE closes the connection after an error status */
    pve_conn_put(c, k, rs->cc == CURLE_OK && rs->status < 400);
    curl_slist_free_all(hdrs);
    buf_release(&s.body);
    buf_release(&body);
    buf_release(&url);
    return rc;
}
