/* A DELETE that lands between another job's read of the VM record and its
 * write (issue 10, item 6's last window): the job must not write "enabled"
 * back over "deleting", or the record shows a live VM under a running
 * delete job and a second DELETE is accepted too.
 *
 * The interleaving is made exact, not left to luck: this test is linked
 * with --wrap=store_vm_update_if (CMakeLists.txt), and the wrapper, on the
 * first write of the armed VM's record, lands a DELETE before the write
 * goes on:
 *  - through this process's core, on another thread (an API request);
 *  - straight into the database through a second store handle, as another
 *    proxd instance sharing the database would: no lock of this process
 *    can see it, only the write's own condition (store_vm_update_if).
 * Either way the write is refused, the job reads the record again and
 * keeps "deleting". */
#include "core_harness.h"

#include "common/log.h"
#include "common/util.h"
#include "pve/pve_api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

int __real_store_vm_update_if(store *s, const struct vm_rec *r, enum vm_state expected,
                              int64_t read_at, struct store_error *err);

enum race_by { BY_THIS_CORE, BY_OTHER_INSTANCE };

static struct ch_env *g_env;
static enum race_by g_by;
static atomic_int g_armed;   /* the VMID whose next record write meets a DELETE */
static atomic_int g_done;    /* the DELETE returned */
static atomic_int g_raced;   /* the VMID the DELETE was landed on */
static atomic_int g_refused; /* writes of that record refused after the DELETE */
static int g_delete_rc = -1;
static char g_delete_job[40];
static pthread_t g_thread;
static atomic_bool g_started;

static void *delete_main(void *arg)
{
    int vmid = (int)(intptr_t)arg;
    struct core_error ce;
    g_delete_rc = core_vm_delete(g_env->k, vmid, NULL, g_delete_job, &ce);
    atomic_store(&g_done, 1);
    return NULL;
}

/* What another proxd's DELETE writes: the delete job, and the record moved
 * to "deleting" naming it, in one transaction of its own connection. */
static void delete_elsewhere(const struct vm_rec *r)
{
    struct store_error se;
    store *other = store_open(g_env->cfg->database, &se);
    if (!other)
        fail_msg("second store handle: %s", se.message);
    struct job_rec j = {.state = JOB_QUEUED, .vmid = r->vmid, .attempts = json_array()};
    j.request = json_pack("{s:I}", "record", (json_int_t)r->id);
    snprintf(j.kind, sizeof j.kind, "delete");
    snprintf(j.owner, sizeof j.owner, "%s", r->owner);
    snprintf(j.step, sizeof j.step, "queued");
    snprintf(j.node, sizeof j.node, "%s", r->node);
    g_delete_rc = store_job_submit_move(other, &j, "delete", r->id, VMS_ENABLED, VMS_DELETING, &se);
    if (g_delete_rc)
        print_message("[ race     ] the other instance's DELETE: %s\n", se.message);
    snprintf(g_delete_job, sizeof g_delete_job, "%s", j.id); /* made by the store */
    job_rec_release(&j);
    store_close(other);
    atomic_store(&g_done, 1);
}

int __wrap_store_vm_update_if(store *s, const struct vm_rec *r, enum vm_state expected,
                              int64_t read_at, struct store_error *err)
{
    int armed = atomic_load(&g_armed);
    if (armed && r->vmid == armed && r->state == VMS_ENABLED &&
        atomic_compare_exchange_strong(&g_armed, &armed, 0)) {
        atomic_store(&g_started, true);
        atomic_store(&g_raced, r->vmid);
        if (g_by == BY_OTHER_INSTANCE) {
            delete_elsewhere(r);
        } else {
            assert_int_equal(
                pthread_create(&g_thread, NULL, delete_main, (void *)(intptr_t)r->vmid), 0);
            int64_t end = mono_ms() + 10000;
            while (!atomic_load(&g_done) && mono_ms() < end)
                sleep_ms(1);
        }
    }
    int rc = __real_store_vm_update_if(s, r, expected, read_at, err);
    if (rc == STORE_E_CONFLICT && r->vmid == atomic_load(&g_raced))
        atomic_fetch_add(&g_refused, 1);
    return rc;
}

static void race(enum race_by by)
{
    struct ch_env e;
    ch_up(&e, NULL);
    g_env = &e;
    g_by = by;
    atomic_store(&g_done, 0);
    atomic_store(&g_refused, 0);
    atomic_store(&g_started, false);
    atomic_store(&g_raced, 0);
    g_delete_rc = -1;
    g_delete_job[0] = '\0';
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
    if (by == BY_THIS_CORE)
        pthread_join(g_thread, NULL);
    assert_int_equal(g_delete_rc, 0); /* that DELETE was accepted */
    /* the DELETE landed between the read and the write: the write was
     * refused (at least once) and made again over "deleting" */
    assert_true(atomic_load(&g_refused) >= 1);
    /* the record says so, and names the delete job */
    struct vm_rec v;
    assert_int_equal(store_vm_get(e.st, vmid, &v, NULL), 0);
    if (v.state != VMS_DELETING || strcmp(v.job, g_delete_job) != 0)
        fail_msg("record %s (job %s) under delete job %s", vm_state_name(v.state), v.job,
                 g_delete_job);
    /* with the stop's result in it */
    assert_string_equal(v.power, "stopped");
    vm_rec_release(&v);
    /* and a second DELETE is refused */
    char again[40];
    assert_int_equal(core_vm_delete(e.k, vmid, NULL, again, &ce), CORE_E_CONFLICT);
    /* the delete finishes (this core's workers claim the other's job too:
     * one database) */
    assert_int_equal(core_wait_job(e.k, g_delete_job, 60000, &st), 0);
    if (st != JOB_DONE) {
        struct job_rec j;
        assert_int_equal(store_job_get(e.st, g_delete_job, &j, NULL), 0);
        fail_msg("the delete job ended %s: %s", job_state_name(j.state), j.error);
    }
    assert_int_equal(store_vm_get(e.st, vmid, &v, NULL), STORE_E_NOTFOUND);
    ch_down(&e);
    g_env = NULL;
}

static void test_delete_between_read_and_write(void **unused)
{
    (void)unused;
    race(BY_THIS_CORE);
}

static void test_other_instance_delete_between_read_and_write(void **unused)
{
    (void)unused;
    race(BY_OTHER_INSTANCE);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_between_read_and_write),
        cmocka_unit_test(test_other_instance_delete_between_read_and_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
