/* libpve against pvesim: credentials, raw calls, encoding, retries, the
 * call-once rule and concurrency. */
#include "pvetest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pve/pve_int.h" /* pve_callstat_note */

static struct tsim g_sim; /* PVE 9 cluster, shared by the tests of this file */

static int group_setup(void **state)
{
    t_setup_global(state);
    tsim_start(&g_sim, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tsim_stop(&g_sim);
    return 0;
}

static int reset_sim(void **state)
{
    (void)state;
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    tsim_ctl0(&g_sim, "DELETE", "/_sim/calls", NULL);
    return 0;
}

static pve_client *token_client(struct pve_config *cfg, const char **hv)
{
    tcfg_init(cfg, hv, g_sim.host);
    return tclient(cfg);
}

static void test_token_raw_endpoints(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    pve_client *c = token_client(&cfg, hv);
    struct pve_error e;
    json_t *d = NULL;

    assert_ok(pve_call(c, "GET", "/version", NULL, &d, &e), &e);
    assert_true(str_starts(json_string_value(json_object_get(d, "version")), "9."));
    json_decref(d);

    assert_ok(pve_call(c, "GET", "/nodes", NULL, &d, &e), &e);
    assert_int_equal(json_array_size(d), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "type")), "node");
    json_decref(d);

    json_t *p = json_pack("{s:s}", "type", "vm");
    assert_ok(pve_call(c, "GET", "/cluster/resources", p, &d, &e), &e);
    assert_true(json_array_size(d) >= 8); /* 4 templates per node */
    size_t i;
    json_t *r;
    json_array_foreach(d, i, r)
        assert_string_equal(json_string_value(json_object_get(r, "type")), "qemu");
    json_decref(d);
    json_decref(p);

    /* a NULL data pointer is fine; not-found is classified */
    assert_int_equal(pve_call(c, "GET", "/nodes/sv1/qemu/99999/config", NULL, NULL, &e),
                     PVE_E_NOTFOUND);
    assert_int_equal(e.http_status, 500);
    assert_int_equal(e.attempts, 1);

    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.requests, 5); /* connectivity check + 4 calls */
    assert_int_equal(st.logins, 0);
    pve_client_free(c);
}

/* Ticket login, CSRF on writes, on PVE 8 and 9 behaviour. */
static void ticket_roundtrip(const char *host)
{
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = T_PASSWORD;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    json_t *d = NULL;
    assert_ok(pve_call(c, "GET", "/version", NULL, &d, &e), &e);
    json_decref(d);
    /* a write needs the CSRF token with a ticket */
    json_t *p = json_pack("{s:s}", "description", "ticket write");
    assert_ok(pve_call(c, "PUT", "/nodes/sv1/qemu/8003/config", p, NULL, &e), &e);
    json_decref(p);
    assert_ok(pve_call(c, "GET", "/nodes/sv1/qemu/8003/config", NULL, &d, &e), &e);
    assert_string_equal(json_string_value(json_object_get(d, "description")), "ticket write");
    json_decref(d);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.logins, 1);
    pve_client_free(c);
}

static void test_ticket_pve9(void **state)
{
    (void)state;
    ticket_roundtrip(g_sim.host);
}

static void test_ticket_and_token_pve8(void **state)
{
    (void)state;
    struct tsim *sp = &t_own, s;
    const char *args[] = {"--pve-version", "8", NULL};
    tsim_start(sp, args);
    s = *sp;
    ticket_roundtrip(s.host);
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, s.host);
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    json_t *d = NULL;
    assert_ok(pve_call(c, "GET", "/version", NULL, &d, &e), &e);
    assert_true(str_starts(json_string_value(json_object_get(d, "version")), "8."));
    json_decref(d);
    pve_client_free(c);
    tsim_stop(sp);
}

static void test_relogin_on_401(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = T_PASSWORD;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"^/nodes$\",\"kind\":\"error\",\"status\":401,"
              "\"message\":\"permission denied - invalid PVE ticket\",\"count\":1}");
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.logins, 2);
    /* only one re-login per call: two 401s in a row are final */
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"^/nodes$\",\"kind\":\"error\",\"status\":401,"
              "\"message\":\"permission denied - invalid PVE ticket\",\"count\":2}");
    assert_int_equal(pve_call(c, "GET", "/nodes", NULL, NULL, &e), PVE_E_AUTH);
    assert_int_equal(e.http_status, 401);
    pve_client_stats(c, &st);
    assert_int_equal(st.logins, 3);
    pve_client_free(c);
}

static void test_ticket_renewal(void **state)
{
    (void)state;
    struct tsim *sp = &t_own, s;
    const char *args[] = {"--ticket-lifetime", "3", NULL};
    tsim_start(sp, args);
    s = *sp;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, s.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = T_PASSWORD;
    cfg.ticket_renew_s = 1;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    int64_t end = mono_ms() + 4500;
    while (mono_ms() < end) {
        assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e);
        sleep_ms(250);
    }
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_true(st.logins >= 4); /* the login and a renewal about every second */
    /* renewals, not password logins: a 401 never happened */
    assert_int_equal(tsim_calls(&s, "POST /access/ticket"), (long)st.logins);
    pve_client_free(c);
    tsim_stop(sp);
}

/* ---- renewal and login: single-flight, off the lock ------------------------------ */

static void password_cfg(struct pve_config *cfg, const char **hv)
{
    tcfg_init(cfg, hv, g_sim.host);
    cfg->token = NULL;
    cfg->user = "root@pam";
    cfg->password = T_PASSWORD;
}

/* Wait (up to 5 s) until pvesim has seen n logins or renewals. */
static void wait_ticket_posts(long n)
{
    int64_t end = mono_ms() + 5000;
    while (tsim_calls(&g_sim, "POST /access/ticket") < n) {
        if (mono_ms() > end)
            fail_msg("pvesim saw %ld of %ld POST /access/ticket",
                     tsim_calls(&g_sim, "POST /access/ticket"), n);
        sleep_ms(20);
    }
}

struct renewer {
    pve_client *c;
    int rc;
    int64_t took_ms;
    atomic_bool done;
};

static void *renew_call(void *arg)
{
    struct renewer *r = arg;
    struct pve_error e;
    int64_t t0 = mono_ms();
    r->rc = pve_call(r->c, "GET", "/version", NULL, NULL, &e);
    r->took_ms = mono_ms() - t0;
    atomic_store(&r->done, true);
    return NULL;
}

/* A client of cfg, logged in (one call), returned once its renewal falls
 * due (cfg->ticket_renew_s after the login, and 100 ms); *t_login (if
 * not NULL): when the login's call was sent. */
static pve_client *renewal_due_client(struct pve_config *cfg, int64_t *t_login)
{
    pve_client *c = tclient(cfg);
    struct pve_error e;
    int64_t t0 = mono_ms();
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    while (mono_ms() < t0 + cfg->ticket_renew_s * 1000 + 100) /* the renewal falls due */
        sleep_ms(50);
    if (t_login)
        *t_login = t0;
    return c;
}

/* A renewal whose /access/ticket hangs (a pveproxy stuck at 3 a.m.) holds
 * up only the call that renews: the others go on at once with the ticket,
 * valid for a long while yet (they waited out the hung login under the
 * lock, and a password login after it). The renewing call itself goes on
 * on the old ticket once its renewal, a glance, times out: within about a
 * second, not the request timeout (4 s here) it waited before. */
static void test_hung_renewal_does_not_stall_calls(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.ticket_renew_s = 1;
    cfg.timeout_ms = 4000;
    pve_client *c = renewal_due_client(&cfg, NULL);
    struct pve_error e;
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\",\"count\":1}");
    struct renewer r = {.c = c, .rc = -1};
    pthread_t th;
    pthread_create(&th, NULL, renew_call, &r);
    wait_ticket_posts(2); /* the renewal is at pvesim, hung */
    for (int i = 0; i < 5; i++) {
        int64_t t0 = mono_ms();
        assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
        int64_t took = mono_ms() - t0;
        if (took > 1000)
            fail_msg("call %d took %lld ms while a renewal hung", i, (long long)took);
    }
    pthread_join(th, NULL);
    assert_int_equal(r.rc, PVE_OK);
    /* it waited for its renewal's glance (1 s), not the request timeout */
    if (r.took_ms < 900 || r.took_ms > 3000)
        fail_msg("the renewing call took %lld ms", (long long)r.took_ms);
    /* the renewal was sent once, and no password login followed it */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    pve_client_free(c);
}

/* A failed renewal is no call's failure while the ticket is valid, nor is
 * it sent again by every call: the next renewal comes after a pause (with
 * a 10 s ticket renewed at 1 s: 9 s left, an eighth: ~1.1 s), and once
 * /access/ticket answers again the ticket is renewed. */
static void test_failed_renewal_retried_later(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.ticket_lifetime_s = 10;
    cfg.ticket_renew_s = 1;
    pve_client *c = renewal_due_client(&cfg, NULL);
    struct pve_error e;
    unsigned gen0 = c->auth.gen;
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"error\","
              "\"status\":500,\"message\":\"injected: pvedaemon busy\"}");
    int64_t t_fail = mono_ms();
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e); /* renews, fails, goes on */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    /* calls in the pause after it: on the ticket, no renewal sent */
    int n = 0;
    while (mono_ms() < t_fail + 800) {
        assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
        n++;
        sleep_ms(20);
    }
    assert_true(n >= 3);
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    assert_int_equal(c->auth.gen, gen0);
    /* /access/ticket answers again: a later call renews */
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    int64_t end = mono_ms() + 5000;
    while (c->auth.gen == gen0) {
        if (mono_ms() > end)
            fail_msg("the ticket was not renewed after a failed renewal");
        assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
        sleep_ms(20);
    }
    assert_true(mono_ms() - t_fail >= 1000); /* not before the pause ended */
    /* a renewal with the ticket, not a password login */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 3);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.logins, 3);
    pve_client_free(c);
}

struct waiter {
    pve_client *c;
    pthread_barrier_t *go;
    int rc;
    struct pve_error e;
};

static void *wait_call(void *arg)
{
    struct waiter *w = arg;
    pthread_barrier_wait(w->go);
    w->rc = pve_call(w->c, "GET", "/nodes", NULL, NULL, &w->e);
    return NULL;
}

/* Eight calls at once on a client with no ticket: one login, whose
 * result they all share. */
static void run_waiters(pve_client *c, struct waiter *w, int n)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    pthread_t th[8];
    for (int i = 0; i < n; i++) {
        w[i] = (struct waiter){.c = c, .go = &go, .rc = -1};
        pthread_create(&th[i], NULL, wait_call, &w[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

/* Without a valid ticket the concurrent callers wait for one login and
 * share its result: a slow login's ticket, and a hung login's failure,
 * which each would otherwise wait out again in turn (eight callers, two
 * timeouts each: 24 s instead of 3). */
static void test_callers_share_one_login(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct waiter w[8];
    password_cfg(&cfg, hv);
    pve_client *c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"delay\","
              "\"delay_ms\":500,\"count\":1}");
    run_waiters(c, w, 8);
    for (int i = 0; i < 8; i++)
        assert_ok(w[i].rc, &w[i].e);
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 1);
    pve_client_free(c);

    tsim_ctl0(&g_sim, "DELETE", "/_sim/calls", NULL);
    cfg.timeout_ms = 1500;
    cfg.retry.max_attempts = 2;
    c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\"}");
    int64_t t0 = mono_ms();
    run_waiters(c, w, 8);
    int64_t took = mono_ms() - t0;
    for (int i = 0; i < 8; i++) {
        assert_int_equal(w[i].rc, PVE_E_NETWORK);
        assert_string_equal(w[i].e.message, w[0].e.message); /* the login's error, shared */
    }
    assert_non_null(strstr(w[0].e.message, "login as root@pam failed on "));
    /* one login, sent twice (the policy's two attempts) */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    if (took > 6000)
        fail_msg("eight callers took %lld ms for one failed login", (long long)took);
    /* a call after the failure tries again: it answers now */
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 3);
    pve_client_free(c);
}

/* ---- a call's own bound holds through a login ------------------------------------ */

struct bounded {
    pve_client *c;
    unsigned flags;
    const char *path;
    int rc;
    int64_t took_ms;
    struct pve_error e;
    atomic_bool done;
};

static void *bounded_call(void *arg)
{
    struct bounded *b = arg;
    int64_t t0 = mono_ms();
    b->rc = pve_call_ex(b->c, "GET", b->path, NULL, b->flags, NULL, &b->e);
    b->took_ms = mono_ms() - t0;
    atomic_store(&b->done, true);
    return NULL;
}

static void bounded_run(struct bounded *b, pve_client *c, unsigned flags, const char *path)
{
    *b = (struct bounded){.c = c, .flags = flags, .path = path, .rc = -1};
    bounded_call(b);
}

/* The same on a thread of its own, then the login it starts is awaited at
 * pvesim (the n-th POST /access/ticket): joined by the caller. */
static void bounded_start(struct bounded *b, pthread_t *th, pve_client *c, unsigned flags,
                          const char *path, long n)
{
    *b = (struct bounded){.c = c, .flags = flags, .path = path, .rc = -1};
    pthread_create(th, NULL, bounded_call, b);
    wait_ticket_posts(n);
}

/* Every POST /access/ticket from now on: its fault `rule` ("\"kind\":...") */
static void ticket_fault(const char *rule)
{
    char body[256];
    snprintf(body, sizeof body, "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",%s}", rule);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults", body);
}

/* A probe that finds no ticket (proxd's start, expiry, a 401) logs in within
 * its own timeout: against a node whose /access/ticket hangs it fails as a
 * network failure within its bound (0.8 s; a glance's 1 s), where it waited
 * for the login's timeouts and retries before (3 s, twice: over 6 s). */
static void test_probe_login_bounded(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 3000;
    cfg.probe_timeout_ms = 800;
    cfg.retry.max_attempts = 2;
    pve_client *c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\"}");
    struct bounded b;
    bounded_run(&b, c, PVE_CALL_PROBE, "/nodes/sv1/version");
    assert_int_equal(b.rc, PVE_E_NETWORK);
    if (b.took_ms > 2500)
        fail_msg("a probe without a ticket took %lld ms against a hung login",
                 (long long)b.took_ms);
    /* its login was sent once, with its timeout */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 1);
    cfg.probe_timeout_ms = 3000;
    pve_client_free(c);
    c = tclient(&cfg);
    bounded_run(&b, c, PVE_CALL_PROBE | PVE_CALL_GLANCE, "/nodes/sv1/version");
    assert_int_equal(b.rc, PVE_E_NETWORK);
    if (b.took_ms > 2500)
        fail_msg("a glance without a ticket took %lld ms against a hung login",
                 (long long)b.took_ms);
    pve_client_free(c);
}

/* A probe that finds a login under way waits for it no longer than its own
 * timeout (the login goes on for its caller); it waited for the whole
 * login before (two hung 3 s sends). */
static void test_probe_waits_for_login_within_its_bound(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 3000;
    cfg.probe_timeout_ms = 800;
    cfg.retry.max_attempts = 2;
    pve_client *c = tclient(&cfg);
    ticket_fault("\"kind\":\"hang\"");
    struct bounded op;
    pthread_t th;
    bounded_start(&op, &th, c, 0, "/nodes", 1); /* the operation's login: at pvesim, hung */
    struct bounded b;
    bounded_run(&b, c, PVE_CALL_PROBE, "/nodes/sv1/version");
    assert_int_equal(b.rc, PVE_E_NETWORK);
    if (b.took_ms > 2500)
        fail_msg("a probe waited %lld ms for a hung login", (long long)b.took_ms);
    assert_non_null(strstr(b.e.message, "no ticket within"));
    /* the probe sent no login of its own; the operation's goes on */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 1);
    assert_false(atomic_load(&op.done));
    pthread_join(th, NULL);
    assert_int_equal(op.rc, PVE_E_NETWORK); /* its own login's failure */
    assert_true(op.took_ms >= 5500);        /* both sends timed out */
    pve_client_free(c);
}

/* The failure of a login cut short by a probe's bound is the probe's alone:
 * a call without a bound that waited for it logs in on its own, with the
 * full timeout, and gets through a login that is merely slow. */
static void test_short_login_failure_not_shared(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 4000;
    cfg.probe_timeout_ms = 800;
    pve_client *c = tclient(&cfg);
    ticket_fault("\"kind\":\"delay\",\"delay_ms\":1500,\"count\":1");
    struct bounded pr;
    pthread_t th;
    bounded_start(&pr, &th, c, PVE_CALL_PROBE, "/nodes/sv1/version", 1); /* slow, at pvesim */
    struct bounded op;
    bounded_run(&op, c, 0, "/nodes");
    pthread_join(th, NULL);
    assert_int_equal(pr.rc, PVE_E_NETWORK);
    assert_ok(op.rc, &op.e);
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    pve_client_free(c);
}

/* A 401 to a probe, whose re-login hangs: the probe fails within its bound,
 * as the network failure it is (a probe judges a node by that), not with
 * the 401 after the login's timeouts. */
static void test_probe_relogin_bounded(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 3000;
    cfg.probe_timeout_ms = 800;
    cfg.retry.max_attempts = 2;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"^/nodes/sv1/version$\",\"kind\":\"error\","
              "\"status\":401,\"message\":\"permission denied - invalid PVE ticket\",\"count\":1}");
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\"}");
    struct bounded b;
    bounded_run(&b, c, PVE_CALL_PROBE, "/nodes/sv1/version");
    assert_int_equal(b.rc, PVE_E_NETWORK);
    if (b.took_ms > 2500)
        fail_msg("a probe's re-login took %lld ms", (long long)b.took_ms);
    pve_client_free(c);
}

/* A probe never renews the ticket: the renewal's glance would come on top
 * of the probe's own timeout (2 of them against a hung /access/ticket). It
 * goes on with the ticket; the next call without a bound of its own renews. */
static void test_probe_leaves_the_renewal_to_other_calls(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.ticket_renew_s = 1;
    cfg.probe_timeout_ms = 800;
    pve_client *c = renewal_due_client(&cfg, NULL);
    struct pve_error e;
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\",\"count\":1}");
    struct bounded b;
    bounded_run(&b, c, PVE_CALL_PROBE | PVE_CALL_GLANCE, "/nodes/sv1/version");
    assert_ok(b.rc, &b.e);
    print_message("[ figures  ] a probe with the renewal due: %lld ms, %ld logins\n",
                  (long long)b.took_ms, tsim_calls(&g_sim, "POST /access/ticket"));
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 1);
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e); /* renews: hung, goes on */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    pve_client_free(c);
}

/* A call whose 401 is followed by a login that fails is not sent again:
 * the login, retried per the policy, failed for every caller waiting on it
 * at once; the call's own retries would each start another (here: 2 more
 * logins of 1 s per retry). */
static void test_failed_relogin_not_sent_again(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 1000;
    cfg.retry.max_attempts = 3;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"^/nodes$\",\"kind\":\"error\","
              "\"status\":401,\"message\":\"permission denied - invalid PVE ticket\",\"count\":1}");
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/access/ticket$\",\"kind\":\"hang\"}");
    int rc = pve_call(c, "GET", "/nodes", NULL, NULL, &e);
    assert_int_equal(rc, PVE_E_NETWORK);
    /* the first login, then the re-login's 3 tries: no more */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 4);
    pve_client_free(c);
}

/* A server that always answers /access/ticket in 1.5 s (a pvedaemon whose
 * few workers are busy), slower than a renewal's first glance (1 s): that
 * glance times out, the next renewal (after the pause, ~2.4 s with a 20 s
 * ticket) waits twice as long and renews, well before the ticket expires.
 * Before, every renewal timed out at 1 s and the ticket ran out, and then
 * every call waited for a password login. */
static void test_slow_renewal_renews_in_time(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.ticket_lifetime_s = 20;
    cfg.ticket_renew_s = 1;
    cfg.timeout_ms = 4000;
    int64_t t_login;
    pve_client *c = renewal_due_client(&cfg, &t_login);
    struct pve_error e;
    unsigned gen0 = c->auth.gen;
    ticket_fault("\"kind\":\"delay\",\"delay_ms\":1500");
    int64_t end = t_login + 12000; /* the ticket serves until 20 s */
    while (c->auth.gen == gen0) {
        if (mono_ms() > end)
            fail_msg("no renewal in 12 s against a server answering in 1.5 s (%ld tried)",
                     tsim_calls(&g_sim, "POST /access/ticket") - 1);
        assert_ok(pve_call(c, "GET", "/nodes", NULL, NULL, &e), &e);
        sleep_ms(50);
    }
    /* renewals with the ticket only: one timed out, the next took */
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 3);
    /* the next renewal is a glance again */
    assert_int_equal(atomic_load(&c->auth.renew_ms), 0);
    pve_client_free(c);
}

/* The first call to a host checks it answers (GET /version): a probe that
 * comes first (proxd's start, a host back from its backoff) checks a hung
 * host within its own bound (0.8 s), not the client's timeout (4 s). */
static void test_probe_checks_a_host_within_its_bound(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.timeout_ms = 4000;
    cfg.probe_timeout_ms = 800;
    pve_client *c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"^/version$\",\"kind\":\"hang\"}");
    struct bounded b;
    bounded_run(&b, c, PVE_CALL_PROBE, "/nodes/sv1/version");
    assert_int_equal(b.rc, PVE_E_NETWORK);
    if (b.took_ms > 2500)
        fail_msg("a probe checking a hung host took %lld ms", (long long)b.took_ms);
    assert_int_equal(tsim_calls(&g_sim, "GET /version"), 1);
    pve_client_free(c);
}

/* A probe that waited for a login cut short by a shorter bound (another
 * probe's glance, 1 s) does not take that failure for its own while its
 * time (3 s) lasts: it logs in itself, and the login (1.5 s) succeeds. */
static void test_longer_bound_logs_in_after_a_short_flight(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    password_cfg(&cfg, hv);
    cfg.timeout_ms = 5000;
    cfg.probe_timeout_ms = 3000;
    pve_client *c = tclient(&cfg);
    ticket_fault("\"kind\":\"delay\",\"delay_ms\":1500");
    struct bounded glance, probe;
    pthread_t th;
    /* the glance's login is at pvesim */
    bounded_start(&glance, &th, c, PVE_CALL_PROBE | PVE_CALL_GLANCE, "/nodes/sv1/version", 1);
    bounded_run(&probe, c, PVE_CALL_PROBE, "/nodes/sv1/version");
    pthread_join(th, NULL);
    assert_int_equal(glance.rc, PVE_E_NETWORK);
    assert_ok(probe.rc, &probe.e);
    assert_int_equal(tsim_calls(&g_sim, "POST /access/ticket"), 2);
    pve_client_free(c);
}

/* ---- secrets stay out of logs and errors --------------------------------------- */

static void test_auth_failures_no_secret(void **state)
{
    (void)state;
    int saved;
    char *path = capture_begin(&saved, LOG_DEBUG);
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e1, e2, e3;

    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = "Wrong-Pa55word-xyzzy";
    pve_client *c = tclient(&cfg);
    int rc1 = pve_call(c, "GET", "/nodes", NULL, NULL, &e1);
    pve_client_free(c);

    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = T_TOKEN_ID "=deadbeef-0000-4000-8000-0123456789ab";
    c = tclient(&cfg);
    int rc2 = pve_call(c, "GET", "/nodes", NULL, NULL, &e2);
    pve_client_free(c);

    /* a good ticket session with a logged write */
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = T_PASSWORD;
    c = tclient(&cfg);
    json_t *p = json_pack("{s:s}", "description", "x");
    int rc3 = pve_call(c, "PUT", "/nodes/sv1/qemu/8001/config", p, NULL, &e3);
    json_decref(p);
    pve_client_free(c);

    char *log = capture_end(saved, path);
    assert_int_equal(rc1, PVE_E_AUTH);
    assert_int_equal(rc2, PVE_E_AUTH);
    assert_ok(rc3, &e3);
    assert_int_equal(e1.http_status, 401);
    /* the call failed because its login did: the message says so */
    char want[sizeof e1.message];
    snprintf(want, sizeof want, "login as root@pam failed on %s: authentication failure", e1.host);
    assert_string_equal(e1.message, want);
    assert_non_null(strstr(log, "/access/ticket")); /* requests were logged */
    assert_non_null(strstr(log, "PUT "));
    const char *secrets[] = {"Wrong-Pa55word-xyzzy", "deadbeef-0000", T_PASSWORD,      T_SECRET,
                             "PVE:root@pam",         "PVEAuthCookie", "CSRFPrevention"};
    for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++) {
        if (strstr(log, secrets[i]))
            fail_msg("log contains secret %zu", i);
        assert_null(strstr(e1.message, secrets[i]));
        assert_null(strstr(e2.message, secrets[i]));
        assert_null(strstr(e1.params, secrets[i]));
    }
}

/* ---- encoding --------------------------------------------------------------------- */

static void roundtrip_description(bool json_bodies)
{
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.json_bodies = json_bodies;
    pve_client *c = tclient(&cfg);
    const char *text = "a+b c&d=e;f%20g%zz/h?i#j\nsecond line: 100% \"quoted\" \xc3\xa9";
    json_t *p = json_pack("{s:s}", "description", text), *d = NULL;
    struct pve_error e;
    assert_ok(pve_call(c, "PUT", "/nodes/sv2/qemu/8010/config", p, NULL, &e), &e);
    assert_ok(pve_call(c, "GET", "/nodes/sv2/qemu/8010/config", NULL, &d, &e), &e);
    const char *got = json_string_value(json_object_get(d, "description"));
    assert_non_null(got);
    /* PVE may add a trailing newline to descriptions; the content must match */
    assert_int_equal(strncmp(got, text, strlen(text)), 0);
    json_decref(d);
    json_decref(p);
    /* booleans as 1/0 and integers in a query string */
    p = json_pack("{s:b, s:s}", "current", 1, "snapshot", "");
    json_object_del(p, "snapshot");
    assert_ok(pve_call(c, "GET", "/nodes/sv2/qemu/8010/config", p, &d, &e), &e);
    json_decref(d);
    json_decref(p);
    pve_client_free(c);
}

static void test_form_encoding(void **state)
{
    (void)state;
    roundtrip_description(false);
}

static void test_json_bodies(void **state)
{
    (void)state;
    roundtrip_description(true);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    pve_client *c = token_client(&cfg, hv);
    struct pve_error e;
    json_t *p = json_pack("{s:[i]}", "net0", 1);
    assert_int_equal(pve_call(c, "GET", "/nodes", p, NULL, &e), PVE_E_INVALID);
    assert_non_null(strstr(e.message, "net0"));
    json_decref(p);
    assert_int_equal(pve_call(c, "PATCH", "/nodes", NULL, NULL, &e), PVE_E_INVALID);
    assert_int_equal(pve_call(c, "GET", "nodes", NULL, NULL, &e), PVE_E_INVALID);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.requests, 0);
    /* PVE's own verification: 400 with per-parameter errors */
    p = json_pack("{s:s}", "cores", "many");
    assert_int_equal(pve_call(c, "PUT", "/nodes/sv1/qemu/8000/config", p, NULL, &e), PVE_E_INVALID);
    assert_int_equal(e.http_status, 400);
    assert_non_null(strstr(e.params, "cores: "));
    char buf[2048];
    assert_non_null(strstr(pve_strerror(&e, buf, sizeof buf), "invalid: 400 "));
    json_decref(p);
    pve_client_free(c);
}

static void test_config_validation(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.nhosts = 0;
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_INVALID);
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.fingerprint = "AA:BB";
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_INVALID);
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = "not-a-token";
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_INVALID);
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password_file = "/nonexistent/pw";
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_AUTH);
    /* a ticket renewed no sooner than it expires would make every call wait */
    cfg.password_file = NULL;
    cfg.password = T_PASSWORD;
    cfg.ticket_lifetime_s = 60;
    cfg.ticket_renew_s = 60;
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_INVALID);
    cfg.ticket_renew_s = 0; /* half the lifetime */
    pve_client_free(tclient(&cfg));
    cfg.ticket_lifetime_s = 0;
    cfg.ticket_renew_s = 7200; /* PVE's 2 h */
    assert_null(pve_client_new(&cfg, &e));
    assert_int_equal(e.cls, PVE_E_INVALID);
    cfg.ticket_renew_s = 0;
    cfg.password = NULL;

    /* the password file's first line is the password */
    char path[] = "/tmp/pvetest-pw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, T_PASSWORD "\nignored\n", strlen(T_PASSWORD) + 9),
                     (ssize_t)strlen(T_PASSWORD) + 9);
    close(fd);
    cfg.password_file = path;
    pve_client *c = tclient(&cfg);
    assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e);
    pve_client_free(c);
    unlink(path);
}

/* ---- retries ------------------------------------------------------------------------ */

static void test_lock_retried(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    pve_client *c = token_client(&cfg, hv);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"PUT\",\"path\":\"^/nodes/sv1/qemu/8002/config$\","
              "\"kind\":\"lock_timeout\",\"count\":2}");
    json_t *p = json_pack("{s:s}", "description", "after lock");
    struct pve_error e;
    assert_ok(pve_call(c, "PUT", "/nodes/sv1/qemu/8002/config", p, NULL, &e), &e);
    assert_int_equal(e.attempts, 3);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.retries, 2);
    /* per endpoint: three sends, two of them errors, each timed */
    struct pve_callstat *cs = NULL;
    size_t n = 0;
    pve_client_callstats(c, &cs, &n);
    const struct pve_callstat *put = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(cs[i].method, "PUT") == 0 &&
            strcmp(cs[i].endpoint, "/nodes/{node}/qemu/{vmid}/config") == 0)
            put = &cs[i];
    assert_non_null(put);
    assert_string_equal(put->node, "sv1");
    assert_int_equal(put->calls, 3);
    assert_int_equal(put->errors, 2);
    uint64_t in_buckets = 0;
    for (int b = 0; b <= PVE_LAT_NBOUNDS; b++)
        in_buckets += put->le[b];
    assert_int_equal(in_buckets, 3);
    assert_true(put->seconds > 0);
    free(cs);
    json_decref(p);
    pve_client_free(c);
}

static void test_lock_exhausted(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.retry.max_attempts = 3;
    pve_client *c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"PUT\",\"path\":\"^/nodes/sv1/qemu/8002/config$\","
              "\"kind\":\"lock_timeout\"}");
    json_t *p = json_pack("{s:s}", "description", "never");
    struct pve_error e;
    assert_int_equal(pve_call(c, "PUT", "/nodes/sv1/qemu/8002/config", p, NULL, &e), PVE_E_LOCK);
    assert_int_equal(e.attempts, 3);
    assert_int_equal(e.http_status, 500);
    assert_non_null(strstr(e.message, "can't lock file"));
    assert_string_equal(e.host, g_sim.host);
    assert_int_equal(tsim_calls(&g_sim, "PUT /nodes/{node}/qemu/{vmid}/config"), 3);
    json_decref(p);
    pve_client_free(c);
}

static void test_595_retried_then_failed(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.retry.max_attempts = 3;
    pve_client *c = tclient(&cfg);
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv2", "{\"state\":\"offline\"}");
    struct pve_error e;
    assert_int_equal(pve_call(c, "GET", "/nodes/sv2/status", NULL, NULL, &e), PVE_E_NETWORK);
    assert_int_equal(e.http_status, 595);
    assert_int_equal(e.attempts, 3);
    /* the entry host answered: it is not marked down, other calls go on */
    assert_ok(pve_call(c, "GET", "/nodes/sv1/status", NULL, NULL, &e), &e);
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.retries, 2);
    assert_int_equal(st.failovers, 0);
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv2", "{\"state\":\"online\"}");
    pve_client_free(c);
}

static bool clone_called(void *arg)
{
    return tsim_calls(arg, "POST /nodes/{node}/qemu/{vmid}/clone") >= 1;
}

/* A task-starting call whose answer is lost is not sent twice. */
static void test_call_once(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.timeout_ms = 400;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e); /* warm up */
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"POST\",\"path\":\"^/nodes/sv1/qemu/8000/clone$\","
              "\"kind\":\"delay\",\"delay_ms\":1200,\"count\":1}");
    json_t *p = json_pack("{s:i, s:s}", "newid", 4321, "name", "once");
    json_t *d = NULL;
    int64_t t0 = mono_ms();
    assert_int_equal(pve_call_ex(c, "POST", "/nodes/sv1/qemu/8000/clone", p, PVE_CALL_ONCE, &d, &e),
                     PVE_E_NETWORK);
    assert_true(mono_ms() - t0 < 1000);
    assert_null(d);
    assert_true(e.maybe_sent);
    assert_int_equal(e.attempts, 1);
    assert_true(h_wait(clone_called, &g_sim, 5000));
    assert_int_equal(tsim_calls(&g_sim, "POST /nodes/{node}/qemu/{vmid}/clone"), 1);
    json_decref(p);
    pve_client_free(c);
}

/* A DELETE goes out once per exchange too: served, its answer lost on a
 * reused connection, curl would have sent it again on a new one by itself
 * (the guard was on POST and PUT only). */
static void test_delete_once(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    pve_client *c = token_client(&cfg, hv);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e); /* a warm connection */
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"DELETE\",\"path\":\"^/nodes/sv1/qemu/4777$\","
              "\"kind\":\"drop\",\"count\":1}");
    json_t *d = NULL;
    assert_int_equal(pve_call_ex(c, "DELETE", "/nodes/sv1/qemu/4777", NULL, PVE_CALL_ONCE, &d, &e),
                     PVE_E_NETWORK);
    assert_true(e.maybe_sent);
    assert_int_equal(e.attempts, 1);
    assert_int_equal(tsim_calls(&g_sim, "DELETE /nodes/{node}/qemu/{vmid}"), 1);
    json_decref(d);
    pve_client_free(c);
}

/* A write served just before pveproxy restarts: the connection drops
 * without an answer and curl's own new connection is refused. That is not
 * a host that failed before the request (to fail over from, or to send it
 * to again): the write may have been served (maybe_sent), and a
 * PVE_CALL_ONCE caller is told so, the write sent once. */
struct fake {
    pid_t pid;
    int port;
};

static bool port_open(void *arg)
{
    struct fake *f = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void fake_start(struct fake *f, const char *hold)
{
    const char *cert = getenv("PVESIM_TLS_CERT"), *key = getenv("PVESIM_TLS_KEY");
    const char *src = getenv("SRC_DIR");
    if (!cert || !key || !src)
        skip(); /* ctest sets them (CMakeLists.txt) */
    char script[512], port[16];
    snprintf(script, sizeof script, "%s/tests/pve/restart_server.py", src);
    f->port = h_free_port();
    snprintf(port, sizeof port, "%d", f->port);
    f->pid = fork();
    assert_true(f->pid >= 0);
    if (f->pid == 0) {
        execl("/usr/bin/python3", "python3", script, port, cert, key, hold, (char *)NULL);
        _exit(127);
    }
    if (!h_wait(port_open, f, 10000))
        fail_msg("restart_server.py did not listen on %d", f->port);
}

static void fake_stop(struct fake *f)
{
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
}

static void test_write_once_across_a_restart(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, "0.5");
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%d", f.port);
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, host);
    cfg.retry.total_ms = 3000; /* room for the old resend once the port is back */
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e); /* a warm connection */
    json_t *p = json_pack("{s:i}", "newid", 4321), *d = NULL;
    int rc = pve_call_ex(c, "POST", "/nodes/sv1/qemu/8000/clone", p, PVE_CALL_ONCE, &d, &e);
    assert_int_equal(rc, PVE_E_NETWORK);
    assert_true(e.maybe_sent);
    assert_int_equal(e.attempts, 1);
    if (!h_wait(port_open, &f, 10000))
        fail_msg("restart_server.py did not listen again");
    json_t *n = NULL;
    assert_ok(pve_call(c, "GET", "/count", NULL, &n, &e), &e);
    assert_int_equal(json_integer_value(n), 1); /* the clone was sent once */
    json_decref(n);
    json_decref(p);
    json_decref(d);
    pve_client_free(c);
    fake_stop(&f);
}

/* The per-endpoint table keeps its last place for "(other)": 300 distinct
 * endpoints (snapshot names are not made variables) fill it, and every
 * later one is counted there (the 257th was written past the table's end). */
static void test_callstats_bounded(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    pve_client *c = token_client(&cfg, hv);
    for (int i = 0; i < 300; i++) {
        char path[96];
        snprintf(path, sizeof path, "/nodes/sv1/qemu/100/snapshot/s%d", i);
        pve_callstat_note(c, "GET", path, 0.001, false);
    }
    struct pve_callstat *cs = NULL;
    size_t n = 0;
    pve_client_callstats(c, &cs, &n);
    assert_int_equal(n, PVE_CALLSTAT_MAX);
    uint64_t total = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        total += cs[i].calls;
        if (strcmp(cs[i].endpoint, "(other)") == 0)
            other = cs[i].calls;
    }
    assert_int_equal(total, 300);
    assert_int_equal(other, 300 - (PVE_CALLSTAT_MAX - 1));
    free(cs);
    pve_client_free(c);
}

/* ---- threads ------------------------------------------------------------------------- */

struct worker {
    pve_client *c;
    int failures;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 10; i++) {
        struct pve_error e;
        json_t *d = NULL;
        if (pve_call(w->c, "GET", "/nodes", NULL, &d, &e) != 0 || json_array_size(d) != 2)
            w->failures++;
        json_decref(d);
    }
    return NULL;
}

static void test_concurrent_ticket_client(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.token = NULL;
    cfg.user = "root@pam";
    cfg.password = T_PASSWORD;
    pve_client *c = tclient(&cfg);
    pthread_t th[8];
    struct worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){.c = c};
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    struct pve_stats st;
    pve_client_stats(c, &st);
    assert_int_equal(st.logins, 1); /* login is serialised */
    assert_true(st.requests >= 81);
    pve_client_free(c);
}

/* ---- a burst on warm connections ------------------------------------------ */

static long handshakes(void)
{
    json_t *j = tsim_ctl(&g_sim, "GET", "/_sim/calls", NULL);
    long n = (long)json_integer_value(json_object_get(j, "tls_handshakes"));
    json_decref(j);
    return n;
}

struct burster {
    pve_client *c;
    pthread_barrier_t *go;
    int rc;
};

static void *burst_one(void *arg)
{
    struct burster *b = arg;
    pthread_barrier_wait(b->go);
    struct pve_error e;
    b->rc = pve_call(b->c, "GET", "/version", NULL, NULL, &e);
    return NULL;
}

/* Eight calls at once on a client with one warm connection (the polls of
 * a batch of clones that started together): they take turns on it rather
 * than each opening a connection of its own (a TLS handshake each: ~1 ms
 * of CPU, fifteen times a call on a warm connection). */
static void test_burst_takes_turns_on_a_warm_connection(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e);
    long h0 = handshakes(); /* its own control call's handshake counted */
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 8);
    pthread_t th[8];
    struct burster b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (struct burster){.c = c, .go = &go, .rc = -1};
        pthread_create(&th[i], NULL, burst_one, &b[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(b[i].rc, PVE_OK);
    }
    long made = handshakes() - h0 - 1; /* less this control call's own */
    pthread_barrier_destroy(&go);
    pve_client_free(c);
    /* without the turns each call but one opens its own (7); a call that
     * waited 25 ms in vain opens one too, and on a loaded machine (the
     * suite runs twice as many tests as cores, ASan) an exchange takes that
     * long now and then: 3 failed 3 runs in 9 at load 5-7 */
    print_message("[ figures  ] %ld new connections for 8 calls at once, one warm\n", made);
    if (made > 5)
        fail_msg("%ld new connections for 8 calls with one warm connection", made);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_token_raw_endpoints, reset_sim),
        cmocka_unit_test_setup(test_ticket_pve9, reset_sim),
        cmocka_unit_test_setup_teardown(test_ticket_and_token_pve8, reset_sim, t_own_teardown),
        cmocka_unit_test_setup(test_relogin_on_401, reset_sim),
        cmocka_unit_test_setup_teardown(test_ticket_renewal, reset_sim, t_own_teardown),
        cmocka_unit_test_setup(test_hung_renewal_does_not_stall_calls, reset_sim),
        cmocka_unit_test_setup(test_failed_renewal_retried_later, reset_sim),
        cmocka_unit_test_setup(test_callers_share_one_login, reset_sim),
        cmocka_unit_test_setup(test_probe_login_bounded, reset_sim),
        cmocka_unit_test_setup(test_probe_waits_for_login_within_its_bound, reset_sim),
        cmocka_unit_test_setup(test_short_login_failure_not_shared, reset_sim),
        cmocka_unit_test_setup(test_probe_relogin_bounded, reset_sim),
        cmocka_unit_test_setup(test_probe_leaves_the_renewal_to_other_calls, reset_sim),
        cmocka_unit_test_setup(test_failed_relogin_not_sent_again, reset_sim),
        cmocka_unit_test_setup(test_longer_bound_logs_in_after_a_short_flight, reset_sim),
        cmocka_unit_test_setup(test_slow_renewal_renews_in_time, reset_sim),
        cmocka_unit_test_setup(test_probe_checks_a_host_within_its_bound, reset_sim),
        cmocka_unit_test_setup(test_auth_failures_no_secret, reset_sim),
        cmocka_unit_test_setup(test_form_encoding, reset_sim),
        cmocka_unit_test_setup(test_json_bodies, reset_sim),
        cmocka_unit_test_setup(test_bad_arguments, reset_sim),
        cmocka_unit_test_setup(test_config_validation, reset_sim),
        cmocka_unit_test_setup(test_lock_retried, reset_sim),
        cmocka_unit_test_setup(test_lock_exhausted, reset_sim),
        cmocka_unit_test_setup(test_595_retried_then_failed, reset_sim),
        cmocka_unit_test_setup(test_call_once, reset_sim),
        cmocka_unit_test_setup(test_delete_once, reset_sim),
        cmocka_unit_test(test_write_once_across_a_restart),
        cmocka_unit_test(test_callstats_bounded),
        cmocka_unit_test_setup(test_concurrent_ticket_client, reset_sim),
        cmocka_unit_test_setup(test_burst_takes_turns_on_a_warm_connection, reset_sim),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
