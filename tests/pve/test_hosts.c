/* Hosts: connect timeouts, failover in order, backoff of a failed host and
 * its return. */
#include "pvetest.h"

#include <errno.h>

static void host_of(char *out, size_t len, int port)
{
    snprintf(out, len, "127.0.0.1:%d", port);
}

/* Standalone sv1 blackholed: accepts TCP, never finishes TLS. */
static void test_blackhole_connect_timeout(void **state)
{
    (void)state;
    const char *args[] = {"--standalone", NULL};
    tsim_start(&t_own, args);
    t_own.ctl = t_own.port + 2; /* the control-only listener */
    tsim_ctl0(&t_own, "POST", "/_sim/nodes/sv1", "{\"state\":\"blackhole\"}");
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, t_own.host);
    cfg.connect_timeout_ms = 300;
    cfg.retry.max_attempts = 1;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    int64_t t0 = mono_ms();
    int rc = pve_call(c, "GET", "/nodes/sv1/status", NULL, NULL, &e);
    int64_t ms = mono_ms() - t0;
    pve_client_free(c);
    assert_int_equal(rc, PVE_E_NETWORK);
    assert_true(ms >= 250 && ms < 1500);
    assert_false(e.maybe_sent);
    assert_int_equal(e.http_status, 0);
    assert_string_equal(e.host, t_own.host);
    tsim_ctl0(&t_own, "POST", "/_sim/nodes/sv1", "{\"state\":\"online\"}");
}

/* ---- a host that accepts TCP and then says nothing; counts connections ---- */

static int g_lfd = -1;

static int mute_listen(void)
{
    g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(g_lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(g_lfd, 64), 0);
    socklen_t l = sizeof a;
    getsockname(g_lfd, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

/* Connections made to it since the last call. */
static int mute_accepted(void)
{
    int n = 0, fd;
    while ((fd = accept(g_lfd, NULL, NULL)) >= 0) {
        close(fd);
        n++;
    }
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    return n;
}

static int mute_teardown(void **state)
{
    if (g_lfd >= 0)
        close(g_lfd);
    g_lfd = -1;
    return t_own_teardown(state);
}

struct probe {
    pve_client *c;
    const char *want_host;
};

/* One call; true once the mute host was tried again. */
static bool mute_probed(void *arg)
{
    struct probe *p = arg;
    struct pve_error e;
    assert_ok(pve_call(p->c, "GET", "/version", NULL, NULL, &e), &e);
    assert_string_equal(e.host, p->want_host);
    return mute_accepted() > 0;
}

/* The first host hangs in the TLS handshake: skipped after the connect
 * timeout, not contacted again during its backoff, probed after it. */
static void test_failover_and_backoff(void **state)
{
    (void)state;
    tsim_start(&t_own, NULL);
    char mute[64];
    host_of(mute, sizeof mute, mute_listen());
    const char *hv[2];
    struct pve_config cfg;
    tcfg_init(&cfg, hv, mute);
    hv[1] = t_own.host;
    cfg.nhosts = 2;
    cfg.connect_timeout_ms = 300;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    int64_t t_fail = mono_ms();
    json_t *d = NULL;
    assert_ok(pve_call(c, "GET", "/cluster/resources", NULL, &d, &e), &e);
    assert_true(json_array_size(d) > 0);
    json_decref(d);
    assert_string_equal(e.host, t_own.host);
    assert_int_equal(e.attempts, 1);
    assert_int_equal(mute_accepted(), 1);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.failovers, 1);

    /* in backoff (1 s): straight to the good host, no connection to the mute one */
    for (int i = 0; i < 5 && mono_ms() - t_fail < 700; i++) {
        assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e);
        assert_string_equal(e.host, t_own.host);
    }
    assert_int_equal(mute_accepted(), 0);

    /* after the backoff it is checked again (and fails again) */
    struct probe p = {c, t_own.host};
    assert_true(h_wait(mute_probed, &p, 4000));
    assert_true(mono_ms() - t_fail >= 1000);
    pve_client_stats(c, &st);
    assert_int_equal(st.failovers, 2);
    pve_client_free(c);
}

static void test_unused_port_skipped(void **state)
{
    (void)state;
    tsim_start(&t_own, NULL);
    char dead[64];
    host_of(dead, sizeof dead, h_free_port());
    const char *hv[2];
    struct pve_config cfg;
    tcfg_init(&cfg, hv, dead);
    hv[1] = t_own.host;
    cfg.nhosts = 2;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    assert_string_equal(e.host, t_own.host);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.failovers, 1);
    pve_client_free(c);
}

struct back {
    pve_client *c;
    const char *first;
};

static bool first_host_again(void *arg)
{
    struct back *b = arg;
    struct pve_error e;
    assert_ok(pve_call(b->c, "GET", "/version", NULL, NULL, &e), &e);
    return strcmp(e.host, b->first) == 0;
}

/* Cluster: sv1's own port is offline; the client uses sv2's port and goes
 * back to sv1's when it is online and its backoff has passed. */
static void test_cluster_node_port_offline(void **state)
{
    (void)state;
    tsim_start(&t_own, NULL);
    char h1[64], h2[64];
    host_of(h1, sizeof h1, t_own.port + 1);
    host_of(h2, sizeof h2, t_own.port + 2);
    tsim_ctl0(&t_own, "POST", "/_sim/nodes/sv1", "{\"state\":\"offline\"}");
    const char *hv[2];
    struct pve_config cfg;
    tcfg_init(&cfg, hv, h1);
    hv[1] = h2;
    cfg.nhosts = 2;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    int64_t t_fail = mono_ms();
    assert_ok(pve_call(c, "GET", "/nodes/sv2/status", NULL, NULL, &e), &e);
    assert_string_equal(e.host, h2);
    /* sv1 is offline behind sv2 too: 595, a network error, sv2 not marked down */
    assert_int_equal(pve_call(c, "GET", "/nodes/sv1/status", NULL, NULL, &e), PVE_E_NETWORK);
    assert_int_equal(e.http_status, 595);
    assert_string_equal(e.host, h2);
    tsim_ctl0(&t_own, "POST", "/_sim/nodes/sv1", "{\"state\":\"online\"}");
    struct back b = {c, h1};
    assert_true(h_wait(first_host_again, &b, 4000));
    assert_true(mono_ms() - t_fail >= 1000);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.failovers, 1);
    pve_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_blackhole_connect_timeout, t_own_teardown),
        cmocka_unit_test_teardown(test_failover_and_backoff, mute_teardown),
        cmocka_unit_test_teardown(test_unused_port_skipped, t_own_teardown),
        cmocka_unit_test_teardown(test_cluster_node_port_offline, t_own_teardown),
    };
    return cmocka_run_group_tests(tests, t_setup_global, NULL);
}
