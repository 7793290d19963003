/* http_req unit tests: a request parsed whatever way its bytes are cut
 * into reads (one byte at a time included), pipelined requests kept apart,
 * the head scan's refusals, and the decoded path and query. */
#include "harness.h"

#include "api/http_int.h"
#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX 65536

/* Feed data in pieces of `step` bytes (as reads would bring it) until the
 * request is ready; the bytes not taken stay in *in. */
static struct http_req *feed(struct buf *in, const char *data, size_t n, size_t step, size_t *fed)
{
    struct http_req *rq = hreq_new(NULL, BODY_MAX);
    size_t off = *fed;
    enum hreq_rc rc = HREQ_MORE;
    if (in->len)
        rc = hreq_feed(rq, in);
    while (rc == HREQ_MORE && off < n) {
        size_t k = n - off < step ? n - off : step;
        assert_int_equal(buf_add(in, data + off, k), BUF_OK);
        off += k;
        rc = hreq_feed(rq, in);
    }
    *fed = off;
    assert_int_equal(rc, HREQ_READY);
    return rq;
}

static const char PIPELINED[] = "POST /v1/vms%2Fx?limit=5&a+b=c%20d&flag HTTP/1.1\r\n"
                                "Host: x\r\n"
                                "Content-Type:  application/json  \r\n"
                                "Content-Length: 7\r\n"
                                "Content-Length: 7\r\n"
                                "\r\n"
                                "{\"a\":1}"
                                "GET /healthz HTTP/1.1\r\nHost: y\r\n\r\n";

static void check_pair(size_t step)
{
    struct buf in = BUF_INIT(1 << 20);
    size_t fed = 0, n = strlen(PIPELINED);
    struct http_req *rq = feed(&in, PIPELINED, n, step, &fed);
    assert_int_equal(rq->err_status, 0);
    assert_string_equal(http_req_method(rq), "POST");
    assert_string_equal(http_req_path(rq), "/v1/vms/x");
    assert_string_equal(http_req_header(rq, "content-type"), "application/json");
    assert_string_equal(http_req_query(rq, "limit"), "5");
    assert_string_equal(http_req_query(rq, "a b"), "c d");
    assert_string_equal(http_req_query(rq, "flag"), "");
    assert_null(http_req_query(rq, "nope"));
    size_t blen;
    const char *body = http_req_body(rq, &blen);
    assert_int_equal(blen, 7);
    assert_memory_equal(body, "{\"a\":1}", 7);
    assert_true(rq->keep_alive);
    hreq_free(rq);
    rq = feed(&in, PIPELINED, n, step, &fed);
    assert_int_equal(rq->err_status, 0);
    assert_string_equal(http_req_method(rq), "GET");
    assert_string_equal(http_req_path(rq), "/healthz");
    assert_string_equal(http_req_header(rq, "host"), "y");
    assert_int_equal(in.len, 0);
    hreq_free(rq);
    buf_release(&in);
}

static void test_any_cut(void **state)
{
    (void)state;
    for (size_t step = 1; step <= 64; step++)
        check_pair(step);
    check_pair(sizeof PIPELINED);
}

/* The refusal of one malformed request, fed in pieces of `step`. */
static unsigned refusal(const char *data, size_t n, size_t step, const char **field)
{
    struct buf in = BUF_INIT(1 << 20);
    size_t fed = 0;
    struct http_req *rq = feed(&in, data, n, step, &fed);
    unsigned st = rq->err_status;
    static char f[64];
    snprintf(f, sizeof f, "%s", rq->err_field ? rq->err_field : "");
    *field = f;
    hreq_free(rq);
    buf_release(&in);
    return st;
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        unsigned status;
        const char *field;
    } cases[] = {
        {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, "headers"},
        {"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400, "headers"},
        {"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400, "headers"},
        {"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", 400,
         "Content-Length"},
        {"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400, "Content-Length"},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413, ""},
        {"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413, ""},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411,
         "Transfer-Encoding"},
        {"GET / HTTP/2.0\r\n\r\n", 505, "version"},
        {"GET /\r\n\r\n", 400, "version"},
        {"G@T / HTTP/1.1\r\n\r\n", 400, "method"},
        {"GET /a%00b HTTP/1.1\r\n\r\n", 400, "path"},
        /* http_parser would end the request after a CONNECT's head and
         * leave its body to be parsed as the next request */
        {"CONNECT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\n"
         "GET /smuggled HTTP/1.1\r\n\r\n",
         400, "method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 1; step <= 7; step += 6) {
            const char *field;
            unsigned st = refusal(cases[i].req, strlen(cases[i].req), step, &field);
            if (st != cases[i].status || strcmp(field, cases[i].field) != 0)
                fail_msg("%s (step %zu): %u '%s', wanted %u '%s'", cases[i].req, step, st, field,
                         cases[i].status, cases[i].field);
        }
    }
}

/* A head past its limits is refused before its end arrives. */
static void test_limits_before_the_end(void **state)
{
    (void)state;
    struct buf in = BUF_INIT(1 << 20);
    struct http_req *rq = hreq_new(NULL, BODY_MAX);
    char line[HTTP_URI_MAX + 200];
    memset(line, 'a', sizeof line);
    memcpy(line, "GET /", 5);
    assert_int_equal(buf_add(&in, line, sizeof line), BUF_OK);
    assert_int_equal(hreq_feed(rq, &in), HREQ_READY);
    assert_int_equal(rq->err_status, HTTP_URI_TOO_LONG);
    hreq_free(rq);
    buf_reset(&in);
    rq = hreq_new(NULL, BODY_MAX);
    assert_int_equal(buf_adds(&in, "GET / HTTP/1.1\r\nX: "), BUF_OK);
    assert_int_equal(hreq_feed(rq, &in), HREQ_MORE);
    char big[HTTP_HEADERS_MAX];
    memset(big, 'b', sizeof big);
    assert_int_equal(buf_add(&in, big, sizeof big), BUF_OK);
    assert_int_equal(hreq_feed(rq, &in), HREQ_READY);
    assert_int_equal(rq->err_status, HTTP_HEADER_FIELDS_TOO_LARGE);
    hreq_free(rq);
    buf_release(&in);
}

/* The target (path and query) may have 8192 bytes, not one more, whatever
 * the method's and the version's length. */
static unsigned target_of(size_t len)
{
    char *req = xmalloc(len + 64);
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', len - 1);
    strcpy(req + 4 + len, " HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *field;
    unsigned st = refusal(req, strlen(req), 4096, &field);
    free(req);
    return st;
}

static void test_target_limit_exact(void **state)
{
    (void)state;
    assert_int_equal(target_of(HTTP_URI_MAX), 0);
    assert_int_equal(target_of(HTTP_URI_MAX + 1), HTTP_URI_TOO_LONG);
    assert_int_equal(target_of(HTTP_URI_MAX + 40), HTTP_URI_TOO_LONG);
}

/* A request asking for an Upgrade is served as HTTP/1.1: its body is its
 * own, the bytes behind it the next request. */
static void test_upgrade_body_is_read(void **state)
{
    (void)state;
    static const char req[] = "POST /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                              "Upgrade: websocket\r\nContent-Length: 26\r\n\r\n"
                              "GET /smuggled HTTP/1.1\r\n\r\n"
                              "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t step = 1; step <= 64; step += 63) {
        struct buf in = BUF_INIT(1 << 20);
        size_t fed = 0, n = strlen(req), blen;
        struct http_req *rq = feed(&in, req, n, step, &fed);
        assert_int_equal(rq->err_status, 0);
        assert_string_equal(http_req_path(rq), "/a");
        http_req_body(rq, &blen);
        assert_int_equal(blen, 26);
        hreq_free(rq);
        rq = feed(&in, req, n, step, &fed);
        assert_int_equal(rq->err_status, 0);
        assert_string_equal(http_req_path(rq), "/next");
        hreq_free(rq);
        buf_release(&in);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_cut),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits_before_the_end),
        cmocka_unit_test(test_target_limit_exact),
        cmocka_unit_test(test_upgrade_body_is_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
