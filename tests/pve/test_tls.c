/* TLS trust: system CAs by default, a CA file, a SHA-256 fingerprint pin,
 * insecure. pvesim serves a certificate generated here. */
#include "pvetest.h"

#include <stdlib.h>
#include <sys/stat.h>

static struct tsim g_sim;
static char g_dir[64], g_cert[128], g_key[128], g_fp[128];

static void sh(const char *cmd)
{
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static int group_setup(void **state)
{
    t_setup_global(state);
    snprintf(g_dir, sizeof g_dir, "/tmp/pvetest-tls-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_cert, sizeof g_cert, "%s/cert.pem", g_dir);
    snprintf(g_key, sizeof g_key, "%s/key.pem", g_dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
             "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s "
             ">/dev/null 2>&1",
             g_key, g_cert);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "openssl x509 -noout -fingerprint -sha256 -in %s > %s/fp", g_cert,
             g_dir);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "%s/fp", g_dir);
    FILE *f = fopen(cmd, "r");
    char line[256] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    char *eq = strchr(line, '=');
    assert_non_null(eq);
    snprintf(g_fp, sizeof g_fp, "%s", eq + 1);
    g_fp[strcspn(g_fp, "\r\n")] = '\0';
    const char *args[] = {"--tls-cert", g_cert, "--tls-key", g_key, NULL};
    tsim_start(&g_sim, args);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tsim_stop(&g_sim);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    sh(cmd);
    return 0;
}

static int reset_sim(void **state)
{
    (void)state;
    tsim_ctl0(&g_sim, "DELETE", "/_sim/calls", NULL);
    return 0;
}

static int try_call(struct pve_config *cfg, const char *method, struct pve_error *e)
{
    pve_client *c = tclient(cfg);
    json_t *p = strcmp(method, "GET") ? json_pack("{s:s}", "description", "tls") : NULL;
    int rc = pve_call(c, method, "/nodes/sv1/qemu/8000/config", p, NULL, e);
    json_decref(p);
    pve_client_free(c);
    return rc;
}

static void tls_cfg(struct pve_config *cfg, const char **hv)
{
    tcfg_init(cfg, hv, g_sim.host);
    cfg->insecure = false;
}

static void test_unknown_ca_refused(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tls_cfg(&cfg, hv);
    assert_int_equal(try_call(&cfg, "GET", &e), PVE_E_TLS);
    assert_int_equal(e.attempts, 0); /* refused in the handshake, never sent, not retried */
    assert_int_equal(e.http_status, 0);
    assert_int_equal(tsim_node_calls(&g_sim, "sv1"), 0);
}

static void test_ca_file_accepted(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tls_cfg(&cfg, hv);
    cfg.ca_file = g_cert;
    assert_ok(try_call(&cfg, "GET", &e), &e);
}

static void test_fingerprint_pin(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tls_cfg(&cfg, hv);
    cfg.fingerprint = g_fp;
    assert_ok(try_call(&cfg, "PUT", &e), &e);

    /* lower case and without colons is the same pin; a list may hold several */
    char lower[128], list[300];
    size_t k = 0;
    for (const char *p = g_fp; *p; p++)
        if (*p != ':')
            lower[k++] = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
    lower[k] = '\0';
    snprintf(list, sizeof list, "00:%s, %s", g_fp + 3, lower);
    cfg.fingerprint = list;
    assert_ok(try_call(&cfg, "GET", &e), &e);
}

static void test_wrong_fingerprint_refused(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tls_cfg(&cfg, hv);
    char wrong[128];
    snprintf(wrong, sizeof wrong, "%s", g_fp);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    cfg.fingerprint = wrong;
    assert_int_equal(try_call(&cfg, "PUT", &e), PVE_E_TLS);
    assert_non_null(strstr(e.message, wrong));
    assert_non_null(strstr(e.message, g_fp)); /* the one seen */
    /* nothing reached the server: no request, so no body */
    json_t *j = tsim_ctl(&g_sim, "GET", "/_sim/calls", NULL);
    assert_int_equal(json_object_size(json_object_get(j, "calls")), 0);
    json_decref(j);
}

static void test_insecure(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    struct pve_error e;
    tls_cfg(&cfg, hv);
    cfg.insecure = true;
    int saved;
    char *path = capture_begin(&saved, LOG_WARN);
    int rc = try_call(&cfg, "GET", &e);
    rc |= try_call(&cfg, "GET", &e);
    char *log = capture_end(saved, path);
    assert_ok(rc, &e);
    /* warned at every client creation */
    const char *w = strstr(log, "not verified (insecure)");
    assert_non_null(w);
    assert_non_null(strstr(w + 1, "not verified (insecure)"));
}

/* pvesim's counts of TLS handshakes and resumed ones (this read's own
 * connection counted in the first, not resumed). */
static void tls_counts(long *handshakes, long *resumed)
{
    json_t *j = tsim_ctl(&g_sim, "GET", "/_sim/calls", NULL);
    *handshakes = (long)json_integer_value(json_object_get(j, "tls_handshakes"));
    *resumed = (long)json_integer_value(json_object_get(j, "tls_resumed"));
    json_decref(j);
}

/* pveproxy closes a connection after 100 requests. The client's next
 * connection resumes its TLS session (a ticket: no certificate sent and
 * checked, no signature on the node, which pveproxy pays for each full
 * handshake) in every trust mode, the pinned one too. The 105 calls make
 * two connections: the second resumed. */
static void reconnects(struct pve_config *cfg, const char *mode)
{
    pve_client *c = tclient(cfg);
    struct pve_error e;
    long h0, r0, h1, r1;
    tls_counts(&h0, &r0);
    for (int i = 0; i < 105; i++)
        assert_ok(pve_call(c, "GET", "/version", NULL, NULL, &e), &e);
    pve_client_free(c);
    tls_counts(&h1, &r1);
    long made = h1 - h0 - 1, resumed = r1 - r0; /* less the second read's own */
    if (made != 2 || resumed != 1)
        fail_msg("%s: %ld connections, %ld resumed (2 and 1 wanted)", mode, made, resumed);
}

static void test_reconnect_resumes_the_session(void **state)
{
    (void)state;
    struct pve_config cfg;
    const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    reconnects(&cfg, "insecure");
    tls_cfg(&cfg, hv);
    cfg.ca_file = g_cert;
    reconnects(&cfg, "CA file");
    tls_cfg(&cfg, hv);
    cfg.fingerprint = g_fp;
    reconnects(&cfg, "fingerprint");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_unknown_ca_refused, reset_sim),
        cmocka_unit_test_setup(test_ca_file_accepted, reset_sim),
        cmocka_unit_test_setup(test_fingerprint_pin, reset_sim),
        cmocka_unit_test_setup(test_wrong_fingerprint_refused, reset_sim),
        cmocka_unit_test_setup(test_insecure, reset_sim),
        cmocka_unit_test_setup(test_reconnect_resumes_the_session, reset_sim),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
