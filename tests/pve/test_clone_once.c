/* A clone whose answer is lost after it was sent is found and adopted, not
 * sent again: one POST, one VM, the caller gets the real UPID. And a clone
 * that meets "already exists" for someone else's VM reports PVE_E_EXISTS.
 * A write whose connection closes without an answer once it went out (a
 * reused one: curl would send it again by itself) fails as maybe sent,
 * sent once. A clone whose answer is lost and whose task is not found (the
 * request not served yet) is sent again, and says that the first may still
 * be served (earlier_pending): its caller must not give the VMID to another
 * host when this clone fails. */
#include "pvetest.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int port;
static pid_t pid;

static int setup(void **st)
{
    (void)st;
    struct h_sim_opts o = {.nodes = "sv1", .token = T_TOKEN, .time_scale = "0.01"};
    pid = h_sim_up(&port, &o);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_sim_stop(pid, true);
    return 0;
}

static pve_client *client(long timeout_ms)
{
    char host[64];
    const char *hostv[1];
    struct pve_config cfg;
    snprintf(host, sizeof host, "127.0.0.1:%d", port);
    tcfg_init(&cfg, hostv, host);
    cfg.connect_timeout_ms = 2000;
    cfg.timeout_ms = timeout_ms;
    return tclient(&cfg);
}

static long count_calls(const char *key)
{
    struct h_resp r;
    h_request(port, "GET", "/_sim/calls", NULL, NULL, NULL, &r);
    long n = (long)json_integer_value(json_object_get(json_object_get(r.json, "calls"), key));
    h_resp_free(&r);
    return n;
}

static void sim_post(const char *path, const char *body)
{
    struct h_resp r;
    h_request(port, "POST", path, "application/json", body, NULL, &r);
    assert_true(r.status == 200 || r.status == 201);
    h_resp_free(&r);
}

/* Clone template 8000 on sv1 to newid: it succeeds with the clone task's
 * UPID, and pvesim saw one clone request. */
static void clone_sent_once(pve_client *c, int newid, const char *name, char upid[PVE_UPID_MAX])
{
    struct pve_error e;
    char buf[1024];
    long before = count_calls("POST /nodes/{node}/qemu/{vmid}/clone");
    upid[0] = '\0';
    struct pve_clone co = {.newid = newid, .name = name, .full = 1};
    if (pve_vm_clone(c, "sv1", 8000, &co, upid, &e))
        fail_msg("clone: %s", pve_strerror(&e, buf, sizeof buf));
    assert_non_null(strstr(upid, ":qmclone:8000:"));
    assert_false(e.earlier_pending);
    assert_int_equal(count_calls("POST /nodes/{node}/qemu/{vmid}/clone") - before, 1);
}

static void lost_answer_is_adopted(void **st)
{
    (void)st;
    pve_client *c = client(400);
    struct pve_error e;
    /* warm up: the connectivity check and first connection outside the fault */
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    /* the clone is done at once, but its answer comes after our 400 ms timeout */
    sim_post("/_sim/faults", "{\"method\":\"POST\",\"path\":\"/clone$\",\"kind\":\"delay\","
                             "\"delay_ms\":1500,\"count\":1}");
    char upid[PVE_UPID_MAX];
    clone_sent_once(c, 700, "once", upid);
    struct pve_task t;
    assert_int_equal(pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e), 0);
    struct pve_vm *vms;
    size_t n;
    assert_int_equal(pve_vm_list(c, "sv1", &vms, &n, &e), 0);
    int copies = 0;
    for (size_t i = 0; i < n; i++)
        copies += vms[i].vmid == 700;
    free(vms);
    assert_int_equal(copies, 1);
    pve_client_free(c);
}

static void dropped_write_is_sent_once(void **st)
{
    (void)st;
    pve_client *c = client(5000);
    struct pve_error e;
    char buf[1024];
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0); /* the next call reuses its connection */
    sim_post("/_sim/faults",
             "{\"method\":\"POST\",\"path\":\"/status/start$\",\"kind\":\"drop\",\"count\":1}");
    long before = count_calls("POST /nodes/{node}/qemu/{vmid}/status/start");
    json_t *d = NULL;
    int rc =
        pve_call_ex(c, "POST", "/nodes/sv1/qemu/700/status/start", NULL, PVE_CALL_ONCE, &d, &e);
    if (rc != PVE_E_NETWORK || !e.maybe_sent)
        fail_msg("a dropped start: %d %s", rc, pve_strerror(&e, buf, sizeof buf));
    assert_int_equal(count_calls("POST /nodes/{node}/qemu/{vmid}/status/start") - before, 1);
    /* a clone the same way: adopted through its task, one request, one VM */
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    sim_post("/_sim/faults",
             "{\"method\":\"POST\",\"path\":\"/clone$\",\"kind\":\"drop\",\"count\":1}");
    char upid[PVE_UPID_MAX];
    clone_sent_once(c, 701, "dropped", upid);
    struct pve_task t;
    assert_int_equal(pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e), 0);
    assert_string_equal(t.exitstatus, "OK");
    pve_client_free(c);
}

/* The clone's answer lost before its worker wrote its first line ("creating
 * a clone of VM 8000 with ID N", some 50 ms of PVE time after the answer;
 * 1 s here, at time scale 20): the lookup reads the still empty log of the
 * running task again until it names the VM, and adopts it. It took an
 * empty log for another clone and asked again: two requests, and the
 * second clone's task failed "config file already exists" against the
 * first's VM. */
static void slow_worker_is_still_adopted(void **st)
{
    (void)st;
    int port0 = port;
    pid_t pid0 = pid;
    struct h_sim_opts o = {.nodes = "sv1", .token = T_TOKEN, .time_scale = "20"};
    pid = h_sim_up(&port, &o);
    pve_client *c = client(5000);
    struct pve_error e;
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    sim_post("/_sim/faults",
             "{\"method\":\"POST\",\"path\":\"/clone$\",\"kind\":\"drop\",\"count\":1}");
    char upid[PVE_UPID_MAX];
    clone_sent_once(c, 702, "slow", upid);
    json_t *lines = NULL;
    assert_int_equal(pve_task_log(c, upid, 0, 1, &lines, &e), 0);
    assert_non_null(strstr(json_string_value(json_array_get(lines, 0)), "with ID 702"));
    json_decref(lines);
    pve_client_free(c);
    h_sim_stop(pid, true);
    port = port0;
    pid = pid0;
}

static void unseen_request_sent_again_is_pending(void **st)
{
    (void)st;
    pve_client *c = client(5000);
    struct pve_error e;
    char buf[1024];
    struct pve_version v;
    assert_int_equal(pve_get_version(c, &v, &e), 0);
    /* no answer now, served when released (after the second request) */
    sim_post("/_sim/faults", "{\"method\":\"POST\",\"path\":\"/clone$\",\"kind\":\"late\","
                             "\"delay_ms\":600000,\"count\":1}");
    long before = count_calls("POST /nodes/{node}/qemu/{vmid}/clone");
    char upid[PVE_UPID_MAX];
    struct pve_clone co = {.newid = 703, .name = "twice", .full = 1};
    if (pve_vm_clone(c, "sv1", 8000, &co, upid, &e))
        fail_msg("clone: %s", pve_strerror(&e, buf, sizeof buf));
    assert_true(e.earlier_pending);
    assert_int_equal(count_calls("POST /nodes/{node}/qemu/{vmid}/clone") - before, 2);
    struct pve_task t;
    assert_int_equal(pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e), 0);
    sim_post("/_sim/late", "{}"); /* served now: refused, VM 703 stands */
    pve_client_free(c);
}

static void someone_elses_vm_is_exists(void **st)
{
    (void)st;
    pve_client *c = client(5000);
    struct pve_error e;
    char upid[PVE_UPID_MAX];
    struct pve_clone co = {.newid = 8001, .name = "taken", .full = 1}; /* a template's ID */
    assert_int_equal(pve_vm_clone(c, "sv1", 8000, &co, upid, &e), PVE_E_EXISTS);
    assert_non_null(strstr(e.message, "already exists"));
    pve_client_free(c);
}

int main(void)
{
    pve_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lost_answer_is_adopted),
        cmocka_unit_test(dropped_write_is_sent_once),
        cmocka_unit_test(someone_elses_vm_is_exists),
        cmocka_unit_test(unseen_request_sent_again_is_pending),
        cmocka_unit_test(slow_worker_is_still_adopted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
