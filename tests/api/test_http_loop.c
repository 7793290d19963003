/* The HTTP server's event loop (src/api/http.c, http_conn.c) with a real
 * socket: a connection that a worker's answer closes in one batch of events
 * and that has another event later in the same batch. The order is made,
 * not waited for by luck: a worker's handler holds until told, the loop is
 * held in an inline handler, the worker's answer is queued (the loop's
 * eventfd readable), then the client resets its connection, then the loop
 * goes on: the eventfd comes first in its next batch, the answer's send
 * fails and closes the connection, and the reset's event comes after it.
 * Run under ASan (the test build), a use of the freed connection fails.
 * Also the cap on what an event stream's client that reads nothing can
 * make wait. */
#include "harness.h"

#include "api/http.h"
#include "api/http_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct {
    int worker_go[2], loop_go[2]; /* pipes: a byte lets the handler return */
    atomic_int worker_in, loop_in;
} g;

static void hold(int fd)
{
    char b;
    while (read(fd, &b, 1) < 0)
        ;
}

static struct http_stream *_Atomic g_stream;

static void handler(void *cls, struct http_req *rq)
{
    (void)cls;
    if (strcmp(http_req_path(rq), "/stream") == 0) {
        /* a small send buffer: the kernel holds little of what waits */
        int small = 4096;
        struct conn *c = rq->conn;
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        atomic_store(&g_stream, http_respond_stream(rq, "text/plain"));
        return;
    }
    if (strcmp(http_req_path(rq), "/worker") == 0) {
        atomic_store(&g.worker_in, 1);
        hold(g.worker_go[0]);
    } else if (strcmp(http_req_path(rq), "/loop") == 0) {
        atomic_store(&g.loop_in, 1);
        hold(g.loop_go[0]);
    }
    char *body = strdup("ok\n");
    http_respond(rq, 200, "text/plain", body, strlen(body));
}

static bool runs_inline(void *cls, const struct http_req *rq)
{
    (void)cls;
    return strcmp(http_req_path(rq), "/loop") == 0;
}

static char *error_body(void *cls, unsigned status, const char *code, const char *field,
                        const char *msg)
{
    (void)cls, (void)status, (void)field, (void)msg;
    char *b = malloc(64);
    snprintf(b, 64, "{\"code\":\"%s\"}", code);
    return b;
}

/* A server on a port of its own, /loop answered on the loop thread when
 * `with_inline`. */
static struct http_server *start_server(bool with_inline)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct http_options o = {.addr = (struct sockaddr *)&sa,
                             .addrlen = sizeof sa,
                             .conn_limit = 16,
                             .per_ip_limit = 16,
                             .workers = 2,
                             .idle_timeout_s = 30,
                             .header_timeout_s = 30,
                             .body_max = 65536,
                             .handler = handler,
                             .runs_inline = with_inline ? runs_inline : NULL,
                             .error_body = error_body};
    char err[200];
    struct http_server *s = http_server_start(&o, err, sizeof err);
    if (!s)
        fail_msg("http_server_start: %s", err);
    return s;
}

/* Connect and send req; rcvbuf > 0: the socket's receive buffer, set first. */
static int dial_rcvbuf(int port, const char *req, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    return fd;
}

static int dial(int port, const char *req)
{
    return dial_rcvbuf(port, req, 0);
}

static bool flag_set(void *p)
{
    return atomic_load((atomic_int *)p) != 0;
}

static bool wake_queued(void *p)
{
    struct http_server *s = p;
    struct pollfd f = {.fd = s->evfd, .events = POLLIN};
    pthread_mutex_lock(&s->mu);
    bool done = s->done != NULL;
    pthread_mutex_unlock(&s->mu);
    return done && poll(&f, 1, 0) == 1;
}

static void test_closed_by_an_answer_then_its_event(void **state)
{
    (void)state;
    assert_int_equal(pipe(g.worker_go), 0);
    assert_int_equal(pipe(g.loop_go), 0);
    struct http_server *s = start_server(true);
    int port = http_server_port(s);

    int a = dial(port, "GET /worker HTTP/1.1\r\nHost: x\r\n\r\n");
    if (!h_wait(flag_set, &g.worker_in, 10000))
        fail_msg("timed out waiting for %s", "the worker's handler to start");
    int b = dial(port, "GET /loop HTTP/1.1\r\nHost: x\r\n\r\n");
    if (!h_wait(flag_set, &g.loop_in, 10000))
        fail_msg("timed out waiting for %s", "the loop to run the inline handler");
    assert_int_equal(write(g.worker_go[1], "x", 1), 1);
    if (!h_wait(wake_queued, s, 10000))
        fail_msg("timed out waiting for %s", "the worker's answer to be queued for the loop");
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(a, SOL_SOCKET, SO_LINGER, &rst, sizeof rst), 0);
    close(a); /* a reset, behind the eventfd */
    assert_int_equal(write(g.loop_go[1], "x", 1), 1);

    char buf[512] = "";
    size_t got = 0;
    int64_t until = h_now_ms() + 10000;
    while (!strstr(buf, "ok\n") && h_now_ms() < until && got < sizeof buf - 1) {
        struct pollfd f = {.fd = b, .events = POLLIN};
        if (poll(&f, 1, 100) == 1) {
            ssize_t n = read(b, buf + got, sizeof buf - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        buf[got] = '\0';
    }
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    /* the loop goes on serving: a new connection is answered */
    int c = dial(port, "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    got = 0;
    for (;;) {
        ssize_t n = read(c, buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    close(b);
    close(c);
    http_server_stop(s, 1000);
}

static bool stream_taken(void *p)
{
    (void)p;
    struct http_stream *st = atomic_load(&g_stream);
    if (!st)
        return false;
    pthread_mutex_lock(&st->mu);
    bool taken = st->c != NULL && st->pending.len == 0;
    pthread_mutex_unlock(&st->mu);
    return taken;
}

/* What a stream's sender may queue for a client that reads nothing is
 * bounded by HTTP_STREAM_PENDING_MAX in all: what waits in the sender's
 * queue and what the loop took from it into the connection's output (the
 * cap counted the queue only: up to twice the cap waited). */
static void test_stream_cap_counts_what_the_loop_holds(void **state)
{
    (void)state;
    struct http_server *s = start_server(false);
    /* a small receive buffer, and it never reads */
    int fd = dial_rcvbuf(http_server_port(s), "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", 4096);
    if (!h_wait(stream_taken, NULL, 10000))
        fail_msg("timed out waiting for the loop to take the stream");
    struct http_stream *st = atomic_load(&g_stream);
    /* half the cap in one piece: the loop moves a queue whole into the
     * output when that is empty (it is: the head went out), so once the
     * queue is empty again, the half waits in the output */
    static char half[HTTP_STREAM_PENDING_MAX / 2], chunk[16384];
    memset(half, 'x', sizeof half);
    memset(chunk, 'x', sizeof chunk);
    assert_true(http_stream_send(st, half, sizeof half));
    size_t sent = sizeof half;
    if (!h_wait(stream_taken, NULL, 10000))
        fail_msg("timed out waiting for the loop to take the first half");
    while (sent < 4 * HTTP_STREAM_PENDING_MAX && http_stream_send(st, chunk, sizeof chunk))
        sent += sizeof chunk;
    /* the kernel's buffers (small here) took a little of it */
    if (sent > HTTP_STREAM_PENDING_MAX + 256 * 1024)
        fail_msg("%zu bytes accepted for a client that reads nothing (cap %d)", sent,
                 HTTP_STREAM_PENDING_MAX);
    assert_false(http_stream_send(st, chunk, 1)); /* refused from then on */
    http_stream_end(st);
    close(fd);
    http_server_stop(s, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_cap_counts_what_the_loop_holds),
        cmocka_unit_test(test_closed_by_an_answer_then_its_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
