/* A DELETE that lands between another job's read of the VM record and its
 * write (issue 10, item 6's last window): the job must not write "enabled"
 * back over "deleting", or the record shows a live VM under a running
 * delete job and a second DELETE is accepted too.
 *
 * The interleaving is made exact, not left to luck: this test is linked
 * with --wrap=store_vm_update (CMakeLists.txt), and the wrapper, on the
 * first write of the armed VM's record, runs a concurrent DELETE on
 * another thread and gives it up to 300 ms to commit before the write
 * goes on. Without the record lock the DELETE commits in between; with it,
 * it waits for the write and then moves the record. */
#include "core_harness.h"

#include "common/log.h"
#include "common/util.h"
#include "pve/pve_api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

int __real_store_vm_update(store *s, const struct vm_rec *r, struct store_error *err);

static struct core *g_core;
static atomic_int g_armed; /* the VMID whose next record write meets a DELETE */
static atomic_int g_done;  /* the DELETE returned */
static int g_delete_rc = -1;
static char g_delete_job[40];
static pthread_t g_thread;
static atomic_bool g_started;

static void *delete_main(void *arg)
{
    int vmid = (int)(intptr_t)arg;
    struct core_error ce;
    g_delete_rc = core_vm_delete(g_core, vmid, NULL, g_delete_job, &ce);
    atomic_store(&g_done, 1);
    return NULL;
}

int __wrap_store_vm_update(store *s, const struct vm_rec *r, struct store_error *err)
{
    int armed = atomic_load(&g_armed);
    if (armed && r->vmid == armed && r->state == VMS_ENABLED &&
        atomic_compare_exchange_strong(&g_armed, &armed, 0)) {
        assert_int_equal(pthread_create(&g_thread, NULL, delete_main, (void *)(intptr_t)r->vmid),
                         0);
        atomic_store(&g_started, true);
        for (int i = 0; i < 300 && !atomic_load(&g_done); i++)
            sleep_ms(1);
    }
    return __real_store_vm_update(s, r, err);
}

static void test_delete_between_read_and_write(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    g_core = e.k;
    struct vm_request rq;
    ch_request(&rq, "ubuntu", "raced", 1, 512, 10);
    char job[40];
    int vmid;
    assert_int_equal(ch_create_wait(&e, &rq, job, &vmid, 30000), JOB_DONE);
    vm_request_release(&rq);
    /* the delete job, once it runs, is held 2 s at its Proxmox DELETE */
    char re[64];
    snprintf(re, sizeof re, "^/nodes/sv\\d/qemu/%d$", vmid);
    json_t *o = json_pack("{s:s,s:s,s:s,s:i}", "method", "DELETE", "path", re, "kind", "delay",
                          "delay_ms", 2000);
    char *js = json_dumps(o, 0);
    ch_sim(&e, "POST", "/_sim/faults", js);
    free(js);
    json_decref(o);
    /* a stop; its write of the record meets the DELETE */
    atomic_store(&g_armed, vmid);
    char stop_job[40];
    struct core_error ce;
    assert_int_equal(core_vm_action(e.k, vmid, NULL, ACT_STOP, NULL, stop_job, &ce), 0);
    enum job_state st;
    assert_int_equal(core_wait_job(e.k, stop_job, 30000, &st), 0);
    assert_int_equal(st, JOB_DONE);
    assert_true(atomic_load(&g_started)); /* the race was run */
    pthread_join(g_thread, NULL);
    assert_int_equal(g_delete_rc, 0); /* that DELETE was accepted */
    /* the record says so, and names the delete job */
    struct vm_rec v;
    assert_int_equal(store_vm_get(e.st, vmid, &v, NULL), 0);
    if (v.state != VMS_DELETING || strcmp(v.job, g_delete_job) != 0)
        fail_msg("record %s (job %s) under delete job %s", vm_state_name(v.state), v.job,
                 g_delete_job);
    vm_rec_release(&v);
    /* and a second DELETE is refused */
    char again[40];
    assert_int_equal(core_vm_delete(e.k, vmid, NULL, again, &ce), CORE_E_CONFLICT);
    /* the delete finishes */
    assert_int_equal(core_wait_job(e.k, g_delete_job, 60000, &st), 0);
    if (st != JOB_DONE) {
        struct job_rec j;
        assert_int_equal(store_job_get(e.st, g_delete_job, &j, NULL), 0);
        fail_msg("the delete job ended %s: %s", job_state_name(j.state), j.error);
    }
    assert_int_equal(store_vm_get(e.st, vmid, &v, NULL), STORE_E_NOTFOUND);
    ch_down(&e);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_between_read_and_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
