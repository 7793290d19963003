/* Tests for the pvesim HTTP/1.1 + TLS server (src/sim/httpd.c, tls.c).
 *
 * One server runs in-process on an ephemeral loopback port with a fresh
 * self-signed certificate; tests talk to it with libcurl (h_request and a
 * reusable-handle helper) or with raw TCP/TLS sockets when they need to send
 * exactly the bytes a broken or hostile client would. Waits are on
 * conditions with deadlines. */
#include "harness.h"

#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/httpd.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

static char *g_cert, *g_key;
static httpd *g_d;
static int g_port, g_lid;
static atomic_int g_hangs;

/* ---- the test handler --------------------------------------------------- */

static long query_long(const struct http_req *r, const char *key)
{
    const char *q = r->query;
    size_t kl = strlen(key);
    while (q && *q) {
        if (strncmp(q, key, kl) == 0 && q[kl] == '=')
            return strtol(q + kl + 1, NULL, 10);
        q = strchr(q, '&');
        if (q)
            q++;
    }
    return 0;
}

static void handler(void *ctx, const struct http_req *req, struct http_resp *resp)
{
    (void)ctx;
    if (strcmp(req->path, "/json") == 0) {
        resp->content_type = xstrdup("application/json;charset=UTF-8");
        buf_printf(&resp->body, "{\"data\":{\"method\":\"%s\",\"query\":\"%s\"}}", req->method,
                   req->query ? req->query : "");
    } else if (strcmp(req->path, "/fail") == 0) {
        http_resp_status(resp, 500, "VM 100 is running - destroy failed\nsecond line");
        resp->content_type = xstrdup("application/json;charset=UTF-8");
        buf_adds(&resp->body, "{\"data\":null}");
    } else if (strcmp(req->path, "/crlf") == 0) {
        resp->status = 500;
        resp->reason = xstrdup("bad\rreason");
    } else if (strcmp(req->path, "/delay") == 0) {
        resp->delay_ms = query_long(req, "ms");
        buf_adds(&resp->body, "late");
    } else if (strcmp(req->path, "/hang") == 0) {
        atomic_fetch_add(&g_hangs, 1);
        resp->hang = true;
    } else if (strcmp(req->path, "/peer") == 0) {
        buf_adds(&resp->body, req->peer);
    } else if (strcmp(req->path, "/ctx") == 0) {
        buf_printf(&resp->body, "%d:%s", req->listener,
                   req->listener_ctx ? (const char *)req->listener_ctx : "-");
    } else if (strcmp(req->path, "/echo") == 0) {
        http_resp_header(resp, "X-Body-Len", "set");
        buf_printf(&resp->body, "%zu:%s", req->body_len, http_req_header(req, "x-test") ?: "-");
    } else {
        http_resp_status(resp, 501, "Method 'GET /nope' not implemented");
    }
}

static int group_setup(void **state)
{
    (void)state;
    char *err = NULL;
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_ALL);
    if (tls_selfsigned("pvesim-test", &g_cert, &g_key, &err)) {
        fprintf(stderr, "tls_selfsigned: %s\n", err);
        return -1;
    }
    g_d = httpd_new(handler, NULL, g_cert, g_key, &err);
    if (!g_d) {
        fprintf(stderr, "httpd_new: %s\n", err);
        return -1;
    }
    g_lid = httpd_listen(g_d, "127.0.0.1:0", NULL, &g_port, &err);
    if (g_lid < 0) {
        fprintf(stderr, "httpd_listen: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    httpd_free(g_d);
    free(g_cert);
    free(g_key);
    curl_global_cleanup();
    return 0;
}

/* ---- client helpers ----------------------------------------------------- */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

/* Send raw bytes over plain TCP, read until the server closes (10 s cap). */
static char *plain_exchange(int port, const void *data, size_t n, bool close_early)
{
    struct buf out = BUF_INIT(BUF_UNLIMITED);
    int fd = tcp_connect(port);
    assert_true(fd >= 0);
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    (void)w;
    if (!close_early) {
        char tmp[4096];
        ssize_t r;
        while ((r = recv(fd, tmp, sizeof tmp, 0)) > 0)
            buf_add(&out, tmp, (size_t)r);
    }
    close(fd);
    return buf_take(&out);
}

struct tls_cli {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static void tls_open(struct tls_cli *t, int port)
{
    t->fd = tcp_connect(port);
    assert_true(t->fd >= 0);
    t->ctx = SSL_CTX_new(TLS_client_method());
    t->ssl = SSL_new(t->ctx);
    SSL_set_fd(t->ssl, t->fd);
    assert_int_equal(SSL_connect(t->ssl), 1);
}

static void tls_close(struct tls_cli *t)
{
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    close(t->fd);
    ERR_clear_error();
}

/* Send bytes over TLS and read until the server closes. */
static char *tls_exchange(int port, const void *data, size_t n)
{
    struct tls_cli t;
    struct buf out = BUF_INIT(BUF_UNLIMITED);
    tls_open(&t, port);
    SSL_write(t.ssl, data, (int)n);
    char tmp[4096];
    int r;
    while ((r = SSL_read(t.ssl, tmp, sizeof tmp)) > 0)
        buf_add(&out, tmp, (size_t)r);
    tls_close(&t);
    return buf_take(&out);
}

static size_t sink_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    buf_add(b, p, size * nmemb);
    return size * nmemb;
}

static CURL *cli_new(void)
{
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_cb);
    return c;
}

/* GET path with a reusable handle; body into *body (reset first). */
static CURLcode cli_get(CURL *c, int port, const char *path, long timeout_ms, long *status,
                        long *connects, struct buf *body)
{
    char url[256];
    snprintf(url, sizeof url, "https://127.0.0.1:%d%s", port, path);
    buf_reset(body);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (connects)
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, connects);
    return rc;
}

static void assert_serves(void)
{
    struct h_resp r;
    h_request(g_port, "GET", "/json", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/* The value of header `name` in a raw header block, or "" (static buffer). */
static const char *hdr_value(const char *headers, const char *name)
{
    static char v[256];
    char pat[64];
    snprintf(pat, sizeof pat, "\r\n%s: ", name);
    const char *p = strstr(headers, pat);
    v[0] = '\0';
    if (!p)
        return v;
    p += strlen(pat);
    size_t n = strcspn(p, "\r\n");
    if (n >= sizeof v)
        n = sizeof v - 1;
    memcpy(v, p, n);
    v[n] = '\0';
    return v;
}

/* ---- tests -------------------------------------------------------------- */

static bool is_fingerprint(const char *s)
{
    if (!s || strlen(s) != 32 * 3 - 1)
        return false;
    for (int i = 0; i < 32 * 3 - 1; i++) {
        char ch = s[i];
        if (i % 3 == 2 ? ch != ':' : !((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return true;
}

static void test_fingerprint(void **state)
{
    (void)state;
    char *fp = tls_fingerprint(g_cert);
    assert_true(is_fingerprint(fp));
    assert_null(tls_fingerprint("not a certificate"));

    /* the certificate the server actually presents, hashed by OpenSSL */
    struct tls_cli t;
    tls_open(&t, g_port);
    X509 *x = SSL_get1_peer_certificate(t.ssl);
    assert_non_null(x);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_true(X509_digest(x, EVP_sha256(), md, &n));
    assert_int_equal(n, 32);
    char hex[32 * 3];
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + i * 3, 4, "%02X%s", md[i], i + 1 < n ? ":" : "");
    assert_string_equal(fp, hex);

    /* subject and SANs as a fresh PVE node has them */
    char cn[64] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "pvesim-test");
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "pvesim-test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
    assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(x)), 2048);
    int days = 0, secs = 0;
    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
    assert_true(days >= 3650);
    X509_free(x);
    tls_close(&t);
    free(fp);
}

static void test_bad_pem(void **state)
{
    (void)state;
    char *err = NULL;
    assert_null(httpd_new(handler, NULL, "garbage", g_key, &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_null(httpd_new(handler, NULL, g_cert, "garbage", &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_int_equal(httpd_listen(g_d, "nonsense", NULL, NULL, &err), -1);
    assert_non_null(err);
    free(err);
}

static void test_ok_headers(void **state)
{
    (void)state;
    struct h_resp r;
    h_request(g_port, "GET", "/json?x=1", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.reason, "OK");
    assert_non_null(r.json);
    json_t *data = json_object_get(r.json, "data");
    assert_string_equal(json_string_value(json_object_get(data, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(data, "query")), "x=1");
    assert_non_null(strstr(r.headers, "\r\nServer: pve-api-daemon/3.0\r\n"));
    assert_non_null(strstr(r.headers, "\r\nCache-Control: max-age=0\r\n"));
    assert_non_null(strstr(r.headers, "\r\nPragma: no-cache\r\n"));
    assert_non_null(strstr(r.headers, "\r\nConnection: Keep-Alive\r\n"));
    assert_non_null(strstr(r.headers, "\r\nContent-Type: application/json;charset=UTF-8\r\n"));
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", r.body_len);
    assert_string_equal(hdr_value(r.headers, "Content-Length"), cl);
    char date[256];
    snprintf(date, sizeof date, "%s", hdr_value(r.headers, "Date"));
    assert_int_equal(strlen(date), strlen("Sun, 06 Nov 1994 08:49:37 GMT"));
    assert_true(str_ends(date, " GMT"));
    assert_string_equal(hdr_value(r.headers, "Expires"), date);
    h_resp_free(&r);

    /* handler-added header lines and the request body reach both sides */
    const char *hdrs[] = {"X-Test: yes", NULL};
    h_request(g_port, "POST", "/echo", NULL, "a=1&b=2", hdrs, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "7:yes");
    assert_string_equal(hdr_value(r.headers, "X-Body-Len"), "set");
    assert_null(strstr(r.headers, "Content-Type"));
    h_resp_free(&r);
}

static void test_error_reason(void **state)
{
    (void)state;
    struct h_resp r;
    h_request(g_port, "DELETE", "/fail", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.reason, "VM 100 is running - destroy failed");
    assert_non_null(strstr(r.headers, "HTTP/1.1 500 VM 100 is running - destroy failed\r\n"));
    assert_non_null(strstr(r.headers, "\r\nConnection: close\r\n"));
    assert_string_equal(r.body, "{\"data\":null}");
    h_resp_free(&r);

    h_request(g_port, "GET", "/crlf", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.reason, "Internal Server Error");
    h_resp_free(&r);

    h_request(g_port, "GET", "/nope", NULL, NULL, NULL, &r);
    assert_int_equal(r.status, 501);
    assert_string_equal(r.reason, "Method 'GET /nope' not implemented");
    h_resp_free(&r);
}

static void test_keepalive(void **state)
{
    (void)state;
    CURL *c = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    char first[64] = "";
    long status, connects, total = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cli_get(c, g_port, "/peer", 10000, &status, &connects, &body), CURLE_OK);
        assert_int_equal(status, 200);
        total += connects;
        if (i == 0)
            snprintf(first, sizeof first, "%s", buf_str(&body));
        else
            assert_string_equal(buf_str(&body), first); /* same client port */
    }
    assert_int_equal(total, 1);

    /* at most 100 requests per connection */
    total = 0;
    curl_easy_cleanup(c);
    c = cli_new();
    for (int i = 0; i < 101; i++) {
        assert_int_equal(cli_get(c, g_port, "/peer", 10000, &status, &connects, &body), CURLE_OK);
        total += connects;
    }
    assert_int_equal(total, 2);

    /* an error response closes the connection */
    total = 0;
    assert_int_equal(cli_get(c, g_port, "/fail", 10000, &status, &connects, &body), CURLE_OK);
    assert_int_equal(status, 500);
    assert_int_equal(cli_get(c, g_port, "/peer", 10000, &status, &connects, &body), CURLE_OK);
    assert_int_equal(connects, 1);
    buf_release(&body);
    curl_easy_cleanup(c);
}

static void test_http10_and_pipelining(void **state)
{
    (void)state;
    const char req10[] = "GET /json HTTP/1.0\r\n\r\n";
    char *out = tls_exchange(g_port, req10, sizeof req10 - 1);
    assert_true(str_starts(out, "HTTP/1.0 200 OK\r\n"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    free(out);

    const char two[] = "GET /peer HTTP/1.1\r\nHost: a\r\n\r\n"
                       "GET /json?n=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    out = tls_exchange(g_port, two, sizeof two - 1);
    const char *second = strstr(out + 1, "HTTP/1.1 200 OK\r\n");
    assert_true(str_starts(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(second);
    assert_non_null(strstr(second, "\"query\":\"n=2\""));
    assert_non_null(strstr(second, "\r\nConnection: close\r\n"));
    free(out);
}

static void test_plain_redirect(void **state)
{
    (void)state;
    const char get[] = "GET /api2/json/version?x=1 HTTP/1.1\r\nHost: node1:8006\r\n\r\n";
    char *out = plain_exchange(g_port, get, sizeof get - 1, false);
    assert_true(str_starts(out, "HTTP/1.1 301 Moved Permanently\r\n"));
    assert_non_null(strstr(out, "\r\nLocation: https://node1:8006/api2/json/version?x=1\r\n"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    free(out);

    const char post[] = "POST /api2/json/access/ticket HTTP/1.1\r\nHost: 10.0.0.1:8006\r\n"
                        "Content-Length: 5\r\n\r\na=b&c";
    out = plain_exchange(g_port, post, sizeof post - 1, false);
    assert_true(str_starts(out, "HTTP/1.1 308 Permanent Redirect\r\n"));
    assert_non_null(strstr(out, "\r\nLocation: https://10.0.0.1:8006/api2/json/access/ticket\r\n"));
    free(out);

    const char nohost[] = "GET / HTTP/1.0\r\n\r\n";
    out = plain_exchange(g_port, nohost, sizeof nohost - 1, false);
    assert_true(str_starts(out, "HTTP/1.0 400 "));
    free(out);
}

static void test_transfer_encoding(void **state)
{
    (void)state;
    const char chunked[] = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n0\r\n\r\n";
    char *out = tls_exchange(g_port, chunked, sizeof chunked - 1);
    assert_true(str_starts(out, "HTTP/1.1 501 chunked transfer encoding not supported\r\n"));
    assert_true(str_ends(out, "\r\n\r\nchunked transfer encoding not supported"));
    assert_null(strstr(out, "Content-Type"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    free(out);

    const char gz[] = "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n";
    out = tls_exchange(g_port, gz, sizeof gz - 1);
    assert_true(str_starts(out, "HTTP/1.1 501 Unknown transfer encoding 'gzip'\r\n"));
    free(out);
}

static void test_body_limit(void **state)
{
    (void)state;
    size_t n = 600 * 1024;
    char *big = xmalloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    struct h_resp r;
    h_request(g_port, "POST", "/echo", NULL, big, NULL, &r);
    assert_int_equal(r.status, 501);
    assert_string_equal(r.reason, "for data too large");
    assert_string_equal(r.body, "for data too large");
    assert_null(strstr(r.headers, "Content-Type"));
    h_resp_free(&r);

    /* exactly at the limit is fine */
    big[512 * 1024] = '\0';
    h_request(g_port, "POST", "/echo", NULL, big, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "524288:-");
    h_resp_free(&r);
    free(big);
}

static void test_header_limits(void **state)
{
    (void)state;
    struct buf req = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&req, "GET /json HTTP/1.1\r\nHost: a\r\nX-Big: ");
    for (int i = 0; i < 10 * 1024; i++)
        buf_addc(&req, 'x');
    buf_adds(&req, "\r\n\r\n");
    char *out = tls_exchange(g_port, req.data, req.len);
    assert_true(str_starts(out, "HTTP/1.1 400 "));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    free(out);

    buf_reset(&req);
    buf_adds(&req, "GET /json HTTP/1.1\r\n");
    for (int i = 0; i < 70; i++)
        buf_printf(&req, "X-H%d: v\r\n", i);
    buf_adds(&req, "\r\n");
    out = tls_exchange(g_port, req.data, req.len);
    assert_true(str_starts(out, "HTTP/1.1 400 "));
    free(out);

    /* 64 headers are allowed */
    buf_reset(&req);
    buf_adds(&req, "GET /json HTTP/1.1\r\nConnection: close\r\n");
    for (int i = 0; i < 63; i++)
        buf_printf(&req, "X-H%d: v\r\n", i);
    buf_adds(&req, "\r\n");
    out = tls_exchange(g_port, req.data, req.len);
    assert_true(str_starts(out, "HTTP/1.1 200 OK\r\n"));
    free(out);

    /* an over-long request target counts against the same limit */
    buf_reset(&req);
    buf_adds(&req, "GET /json?");
    for (int i = 0; i < 9 * 1024; i++)
        buf_addc(&req, 'q');
    buf_adds(&req, " HTTP/1.1\r\nHost: a\r\n\r\n");
    out = tls_exchange(g_port, req.data, req.len);
    assert_true(str_starts(out, "HTTP/1.1 400 "));
    free(out);

    /* an empty header value is an empty string, not a missing header */
    const char empty[] = "POST /echo HTTP/1.1\r\nX-Test:\r\nContent-Length: 2\r\n"
                         "Connection: close\r\n\r\nab";
    out = tls_exchange(g_port, empty, sizeof empty - 1);
    assert_true(str_ends(out, "\r\n\r\n2:"));
    free(out);

    /* a huge header on plain HTTP too */
    buf_reset(&req);
    buf_adds(&req, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    for (int i = 0; i < 100 * 1024; i++)
        buf_addc(&req, 'y');
    out = plain_exchange(g_port, req.data, req.len, false);
    assert_true(str_starts(out, "HTTP/1.1 400 "));
    free(out);
    buf_release(&req);
    assert_serves();
}

static void test_garbage(void **state)
{
    (void)state;
    unsigned char junk[4096];
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        seed = seed * 1103515245u + 12345u;
        junk[i] = (unsigned char)(seed >> 16);
    }
    junk[0] = 0x01; /* not a TLS record: taken as plain HTTP */
    char *out = plain_exchange(g_port, junk, sizeof junk, false);
    assert_true(out[0] == '\0' || str_starts(out, "HTTP/1.1 400 "));
    free(out);

    /* looks like TLS, is not */
    junk[0] = 0x16;
    out = plain_exchange(g_port, junk, sizeof junk, false);
    assert_null(strstr(out, "HTTP/1.1"));
    free(out);

    /* half requests, then the client leaves */
    const char half[] = "GET /json HTTP/1.1\r\nHost: a\r\nX-Partial: abc";
    free(plain_exchange(g_port, half, sizeof half - 1, true));
    const char half_body[] = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc";
    struct tls_cli t;
    tls_open(&t, g_port);
    SSL_write(t.ssl, half_body, sizeof half_body - 1);
    tls_close(&t);

    /* garbage inside TLS */
    out = tls_exchange(g_port, junk + 1, 1000);
    assert_true(out[0] == '\0' || str_starts(out, "HTTP/1.1 400 "));
    free(out);

    /* connect and say nothing, then close */
    int fd = tcp_connect(g_port);
    close(fd);
    assert_serves();
}

static bool refused(void *arg)
{
    int port = *(int *)arg;
    int fd = tcp_connect(port);
    if (fd >= 0) {
        close(fd);
        return false;
    }
    return errno == ECONNREFUSED;
}

static void test_refuse(void **state)
{
    (void)state;
    CURL *c = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    long status;
    assert_int_equal(cli_get(c, g_port, "/peer", 10000, &status, NULL, &body), CURLE_OK);

    assert_int_equal(httpd_set_mode(g_d, g_lid, HTTPD_REFUSE), 0);
    assert_true(h_wait(refused, &g_port, 2000));
    /* the kept-alive connection was dropped too; a reconnect is refused */
    assert_int_equal(cli_get(c, g_port, "/peer", 2000, &status, NULL, &body),
                     CURLE_COULDNT_CONNECT);

    assert_int_equal(httpd_set_mode(g_d, g_lid, HTTPD_UP), 0);
    assert_int_equal(cli_get(c, g_port, "/peer", 10000, &status, NULL, &body), CURLE_OK);
    assert_int_equal(status, 200);
    assert_int_equal(httpd_set_mode(g_d, 99, HTTPD_UP), -1);
    buf_release(&body);
    curl_easy_cleanup(c);
}

static void test_blackhole(void **state)
{
    (void)state;
    CURL *kept = cli_new(), *fresh = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    long status;
    assert_int_equal(cli_get(kept, g_port, "/peer", 10000, &status, NULL, &body), CURLE_OK);

    assert_int_equal(httpd_set_mode(g_d, g_lid, HTTPD_BLACKHOLE), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(cli_get(fresh, g_port, "/json", 300, &status, NULL, &body),
                     CURLE_OPERATION_TIMEDOUT);
    assert_true(mono_ms() - t0 >= 290);
    /* the existing keep-alive connection goes silent as well */
    assert_int_equal(cli_get(kept, g_port, "/json", 300, &status, NULL, &body),
                     CURLE_OPERATION_TIMEDOUT);

    assert_int_equal(httpd_set_mode(g_d, g_lid, HTTPD_UP), 0);
    assert_int_equal(cli_get(fresh, g_port, "/json", 10000, &status, NULL, &body), CURLE_OK);
    assert_int_equal(status, 200);
    buf_release(&body);
    curl_easy_cleanup(kept);
    curl_easy_cleanup(fresh);
}

static void test_delay(void **state)
{
    (void)state;
    struct h_resp r;
    int64_t t0 = mono_ms();
    h_request(g_port, "GET", "/delay?ms=300", NULL, NULL, NULL, &r);
    int64_t took = mono_ms() - t0;
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "late");
    assert_true(took >= 300);
    h_resp_free(&r);
}

enum { NTHREADS = 50, NREQ = 20 };

struct worker {
    pthread_t tid;
    int ok;
    long connects;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    CURL *c = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    for (int i = 0; i < NREQ; i++) {
        long status = 0, connects = 0;
        if (cli_get(c, g_port, "/json?x=1", 30000, &status, &connects, &body) == CURLE_OK &&
            status == 200 && strstr(buf_str(&body), "\"x=1\""))
            w->ok++;
        w->connects += connects;
    }
    buf_release(&body);
    curl_easy_cleanup(c);
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    struct worker w[NTHREADS] = {0};
    int64_t t0 = mono_ms();
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&w[i].tid, NULL, worker_main, &w[i]), 0);
    int ok = 0;
    long connects = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(w[i].tid, NULL);
        ok += w[i].ok;
        connects += w[i].connects;
    }
    print_message("%d requests on %ld connections in %lld ms\n", ok, connects,
                  (long long)(mono_ms() - t0));
    assert_int_equal(ok, NTHREADS * NREQ);
    assert_int_equal(connects, NTHREADS);
}

struct hung_call {
    int port;
    CURLcode rc;
};

static void *hung_main(void *arg)
{
    struct hung_call *h = arg;
    CURL *c = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    long status;
    h->rc = cli_get(c, h->port, "/hang", 20000, &status, NULL, &body);
    buf_release(&body);
    curl_easy_cleanup(c);
    return NULL;
}

static bool hang_started(void *arg)
{
    return atomic_load(&g_hangs) >= *(int *)arg;
}

/* httpd_free must not wait for hung requests; a mode change releases them. */
static void test_hang_and_free(void **state)
{
    (void)state;
    char *err = NULL;
    httpd *d = httpd_new(handler, NULL, g_cert, g_key, &err);
    assert_non_null(d);
    struct hung_call h = {0};
    int lid = httpd_listen(d, "127.0.0.1:0", NULL, &h.port, &err);
    assert_true(lid >= 0);

    pthread_t tid;
    int want = atomic_load(&g_hangs) + 1;
    assert_int_equal(pthread_create(&tid, NULL, hung_main, &h), 0);
    assert_true(h_wait(hang_started, &want, 10000));
    int64_t t0 = mono_ms();
    assert_int_equal(httpd_set_mode(d, lid, HTTPD_BLACKHOLE), 0); /* mode change ends the hang */
    pthread_join(tid, NULL);
    assert_true(mono_ms() - t0 < 5000);
    assert_int_not_equal(h.rc, CURLE_OK);
    assert_int_equal(httpd_set_mode(d, lid, HTTPD_UP), 0);

    want = atomic_load(&g_hangs) + 1;
    assert_int_equal(pthread_create(&tid, NULL, hung_main, &h), 0);
    assert_true(h_wait(hang_started, &want, 10000));
    t0 = mono_ms();
    httpd_free(d);
    int64_t took = mono_ms() - t0;
    pthread_join(tid, NULL);
    print_message("httpd_free with a hung request: %lld ms\n", (long long)took);
    assert_true(took < 2000);
    assert_int_not_equal(h.rc, CURLE_OK);
}

/* A request served while httpd_free stops the server switches another
 * listener's mode, as pvesim's /_sim/nodes/X may on its way down. */
struct cross {
    httpd *d;
    int other, own_port;
    atomic_bool started, saw_refused;
    atomic_int rc;
};

static void cross_handler(void *ctx, const struct http_req *req, struct http_resp *resp)
{
    (void)req;
    struct cross *x = ctx;
    atomic_store(&x->started, true);
    /* its own listener refuses once httpd_free has told it to quit: the
     * old httpd_free had freed the listeners before it by then */
    atomic_store(&x->saw_refused, h_wait(refused, &x->own_port, 10000));
    atomic_store(&x->rc, httpd_set_mode(x->d, x->other, HTTPD_UP));
    buf_adds(&resp->body, "done");
}

static bool cross_started(void *arg)
{
    return atomic_load(&((struct cross *)arg)->started);
}

static void *cross_main(void *arg)
{
    const struct cross *x = arg;
    CURL *c = cli_new();
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    long status;
    cli_get(c, x->own_port, "/cross", 20000, &status, NULL, &body); /* cut short: any outcome */
    buf_release(&body);
    curl_easy_cleanup(c);
    return NULL;
}

/* httpd_free stops every listener before it frees any: a handler still
 * running on one finds another quitting (-1), not freed (ASan). */
static void test_free_while_switching(void **state)
{
    (void)state;
    char *err = NULL;
    struct cross x = {.rc = 0};
    httpd *d = httpd_new(cross_handler, &x, g_cert, g_key, &err);
    assert_non_null(d);
    x.d = d;
    int p0 = 0;
    x.other = httpd_listen(d, "127.0.0.1:0", NULL, &p0, &err);
    assert_int_equal(x.other, 0); /* freed first by the old httpd_free */
    assert_int_equal(httpd_listen(d, "127.0.0.1:0", NULL, &x.own_port, &err), 1);

    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, cross_main, &x), 0);
    assert_true(h_wait(cross_started, &x, 10000));
    httpd_free(d); /* waits for the handler */
    pthread_join(tid, NULL);
    assert_true(atomic_load(&x.saw_refused));
    assert_int_equal(atomic_load(&x.rc), -1);
}

static void test_ipv6(void **state)
{
    (void)state;
    char *err = NULL;
    httpd *d = httpd_new(handler, NULL, g_cert, g_key, &err);
    assert_non_null(d);
    int port = 0;
    int lid = httpd_listen(d, "[::1]:0", NULL, &port, &err);
    if (lid < 0) {
        print_message("no IPv6 loopback: %s\n", err);
        free(err);
        httpd_free(d);
        skip();
    }
    assert_true(port > 0);
    CURL *c = cli_new();
    char url[128];
    snprintf(url, sizeof url, "https://[::1]:%d/peer", port);
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    assert_true(str_starts(buf_str(&body), "[::1]:"));
    buf_release(&body);
    curl_easy_cleanup(c);
    httpd_free(d);
}

/* Idle keep-alive connections are closed after 5 s, silently. */
static void test_idle_timeout(void **state)
{
    (void)state;
    struct tls_cli t;
    tls_open(&t, g_port);
    const char req[] = "GET /json HTTP/1.1\r\nHost: a\r\n\r\n";
    SSL_write(t.ssl, req, sizeof req - 1);
    char tmp[4096];
    int r = SSL_read(t.ssl, tmp, sizeof tmp - 1);
    assert_true(r > 0);
    tmp[r] = '\0';
    assert_true(str_starts(tmp, "HTTP/1.1 200 OK\r\n"));
    int64_t t0 = mono_ms();
    r = SSL_read(t.ssl, tmp, sizeof tmp); /* SO_RCVTIMEO 10 s caps this */
    int64_t idle = mono_ms() - t0;
    print_message("idle keep-alive connection closed after %lld ms\n", (long long)idle);
    assert_true(r <= 0);
    assert_true(idle >= 4500 && idle < 8000);
    tls_close(&t);
}

/* Several listeners per server: own ids, contexts and modes. */
static void test_two_listeners(void **state)
{
    (void)state;
    char *err = NULL;
    httpd *d = httpd_new(handler, NULL, g_cert, g_key, &err);
    assert_non_null(d);
    int p0 = 0, p1 = 0;
    int l0 = httpd_listen(d, "127.0.0.1:0", "node1", &p0, &err);
    int l1 = httpd_listen(d, "localhost:0", "node2", &p1, &err);
    assert_int_equal(l0, 0);
    assert_int_equal(l1, 1);
    assert_int_not_equal(p0, p1);
    struct h_resp r;
    h_request(p1, "GET", "/ctx", NULL, NULL, NULL, &r);
    assert_string_equal(r.body, "1:node2");
    h_resp_free(&r);
    assert_int_equal(httpd_set_mode(d, l1, HTTPD_REFUSE), 0);
    assert_true(h_wait(refused, &p1, 2000));
    h_request(p0, "GET", "/ctx", NULL, NULL, NULL, &r);
    assert_string_equal(r.body, "0:node1");
    h_resp_free(&r);
    httpd_free(d);
}

/* Beyond 512 concurrent connections new ones are accepted and closed. */
static void test_conn_limit(void **state)
{
    (void)state;
    enum { LIMIT = 512 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 3 * LIMIT) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 3 * LIMIT)
        skip();
    char *err = NULL;
    httpd *d = httpd_new(handler, NULL, g_cert, g_key, &err);
    assert_non_null(d);
    int port = 0;
    assert_true(httpd_listen(d, "127.0.0.1:0", NULL, &port, &err) >= 0);
    int fds[LIMIT];
    for (int i = 0; i < LIMIT; i++)
        assert_true((fds[i] = tcp_connect(port)) >= 0);
    /* the next one is closed by the server at once */
    int extra = tcp_connect(port);
    assert_true(extra >= 0);
    char b;
    int64_t t0 = mono_ms();
    assert_int_equal(recv(extra, &b, 1, 0), 0);
    assert_true(mono_ms() - t0 < 3000);
    close(extra);
    /* the held ones are still open (waiting for their first byte) */
    assert_int_equal(recv(fds[0], &b, 1, MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    for (int i = 0; i < LIMIT; i++)
        close(fds[i]);
    httpd_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_bad_pem),
        cmocka_unit_test(test_ok_headers),
        cmocka_unit_test(test_error_reason),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_http10_and_pipelining),
        cmocka_unit_test(test_plain_redirect),
        cmocka_unit_test(test_transfer_encoding),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_refuse),
        cmocka_unit_test(test_blackhole),
        cmocka_unit_test(test_delay),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_hang_and_free),
        cmocka_unit_test(test_free_while_switching),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_two_listeners),
        cmocka_unit_test(test_conn_limit),
        cmocka_unit_test(test_idle_timeout),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
