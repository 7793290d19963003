/* A failed creation gives its VMID back; with quarantine = 0 the next
 * creation takes it at once (the lowest free ID). The failed record must be
 * closed before that, or the next creation's record meets a live one under
 * the same VMID and its submit is refused ("VMID 1000 already has a live VM
 * record", a 503 at the API) although the ID was handed out free (commit
 * feb305a: finish_failed used to release the VMID first).
 *
 * The interleaving is made exact, not left to luck: this test is linked
 * with --wrap=store_vmid_release (CMakeLists.txt), and the wrapper, right
 * after the armed VMID is given back and before the failing job goes on,
 * submits the next creation on another thread (an API request) and waits
 * for its answer. The first creation fails at a chosen step: every clone
 * refused by a pvesim fault rule, on every node. */
#include "core_harness.h"

#include "common/util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

int __real_store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err);

static struct ch_env *g_env;
static atomic_int g_armed;  /* the VMID whose release lands the next creation */
static atomic_int g_done;   /* that creation's submit returned */
static atomic_bool g_raced; /* the wrapper ran it */
static int g_rc = -1;       /* its core_create result */
static int g_vmid;          /* the VMID it got */
static char g_job[40];
static struct core_error g_err;

static void *submit_main(void *arg)
{
    (void)arg;
    struct vm_request rq;
    ch_request(&rq, "ubuntu", "next", 1, 512, 10);
    g_rc = core_create(g_env->k, &rq, g_job, &g_vmid, &g_err);
    vm_request_release(&rq);
    atomic_store(&g_done, 1);
    return NULL;
}

int __wrap_store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    int rc = __real_store_vmid_release(s, vmid, quarantine_ms, err);
    int armed = atomic_load(&g_armed);
    if (rc == 0 && armed && vmid == armed && atomic_compare_exchange_strong(&g_armed, &armed, 0)) {
        atomic_store(&g_raced, true);
        /* the next creation must be able to clone again */
        ch_sim(g_env, "DELETE", "/_sim/faults", NULL);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, submit_main, NULL), 0);
        int64_t end = mono_ms() + 10000;
        while (!atomic_load(&g_done) && mono_ms() < end)
            sleep_ms(1);
        if (atomic_load(&g_done))
            pthread_join(t, NULL);
        else
            pthread_detach(t); /* stuck behind this job: the test fails below */
    }
    return rc;
}

static void test_next_creation_takes_the_failed_ones_vmid(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.quarantine = 0};
    ch_up(&e, &o);
    g_env = &e;
    /* every clone fails, on every node: the creation ends "no node could
     * create the VM" and gives its VMID back */
    ch_fault(&e, "POST", "^/nodes/sv\\d/qemu/\\d+/clone$", "error", "injected: no clone");
    struct vm_request rq;
    ch_request(&rq, "ubuntu", "first", 1, 512, 10);
    char job[40];
    int vmid = 0;
    struct core_error ce = {0};
    assert_int_equal(core_create(e.k, &rq, job, &vmid, &ce), 0);
    vm_request_release(&rq);
    assert_int_equal(vmid, 1000); /* the range's first */
    atomic_store(&g_armed, vmid);
    enum job_state st;
    assert_int_equal(core_wait_job(e.k, job, 60000, &st), 0);
    assert_int_equal(st, JOB_FAILED);
    assert_true(atomic_load(&g_raced)); /* the release was reached, the race run */
    assert_true(atomic_load(&g_done));
    if (g_rc != 0)
        fail_msg("the next creation, submitted as VMID %d was given back, was refused: %d %s", vmid,
                 g_rc, g_err.message);
    /* it took that very VMID (the window under test), and makes its VM */
    assert_int_equal(g_vmid, vmid);
    assert_int_equal(core_wait_job(e.k, g_job, 60000, &st), 0);
    assert_int_equal(st, JOB_DONE);
    /* one live record under the VMID, the failed one closed */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM vms WHERE vmid = %d AND state IN ('creating', 'enabled')", vmid);
    assert_int_equal(ch_sql(&e, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM vms WHERE vmid = %d AND state = 'failed'",
             vmid);
    assert_int_equal(ch_sql(&e, sql), 1);
    json_t *state = ch_state(&e);
    assert_non_null(ch_state_vm(state, vmid));
    assert_int_equal(ch_count_vms(state, NULL), 1);
    json_decref(state);
    ch_down(&e);
    g_env = NULL;
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_creation_takes_the_failed_ones_vmid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
