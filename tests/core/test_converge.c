/* Creations converge whatever Proxmox does (issue 10, the creation path),
 * in-process against pvesim (a five-node cluster sv1..sv5):
 *  - a clone call that fails with nothing made gives its node's clone slot
 *    back before failing over (else the node takes no creation again);
 *  - cleanup retries transient errors, and what it cannot remove is left as
 *    durable work that the reconciler finishes, never called foreign;
 *  - a clone whose task status could not be read is never taken for
 *    "nothing made": its VMID is not reused until proven free;
 *  - half-made VMs of proxd's own failed creations are removed by default;
 *  - a node that dies while clones run on it: the creations caught there
 *    fail over within the timeouts, and once it is back nothing proxd made
 *    stays on it and new creations placed there finish.
 * Each checks pvesim's state (/_sim/state) and the store. */
#include "core_harness.h"

#include "common/log.h"

#define JOB_MS 30000

/* A fault rule limited to `count` matches (0: unlimited). */
static void fault_n(struct ch_env *e, const char *method, const char *path_re, const char *kind,
                    int status, const char *message, int count)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i}", "method", method, "path", path_re, "kind", kind,
                          "message", message, "status", status);
    if (count > 0)
        json_object_set_new(o, "count", json_integer(count));
    char *s = json_dumps(o, 0);
    ch_sim(e, "POST", "/_sim/faults", s);
    free(s);
    json_decref(o);
}

static void job_of(struct ch_env *e, const char *id, struct job_rec *j)
{
    assert_int_equal(store_job_get(e->st, id, j, NULL), 0);
}

static void fail_job(struct ch_env *e, const char *label, const char *id)
{
    struct job_rec j;
    job_of(e, id, &j);
    char *a = json_dumps(j.attempts, 0);
    fail_msg("[%s] job %s: %s on %s (vmid %d), error '%s', attempts %s", label, id,
             job_state_name(j.state), j.node, j.vmid, j.error, a);
}

/* ---- 1: a failed clone call gives its clone slot back ------------------------ */

static void test_slot_given_back(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL); /* two clone slots per node */
    /* the first two clone calls on sv1 fail with nothing made */
    fault_n(&e, "POST", "^/nodes/sv1/qemu/\\d+/clone$", "error", 500, "clone refused by the test",
            2);
    for (int i = 0; i < 2; i++) {
        struct vm_request rq;
        char name[16], job[40];
        int vmid;
        snprintf(name, sizeof name, "slot-%d", i);
        ch_request(&rq, "ubuntu", name, 1, 512, 10);
        if (ch_create_wait(&e, &rq, job, &vmid, JOB_MS) != JOB_DONE)
            fail_job(&e, name, job);
        struct job_rec j;
        job_of(&e, job, &j);
        assert_string_equal(j.node, "sv2");
        assert_true(ch_attempted(&j, "sv1", "clone refused by the test"));
        job_rec_release(&j);
        vm_request_release(&rq);
    }
    /* sv1 is healthy again: the next creations are placed there and finish
     * (with the slots leaked, they waited for ever) */
    char jobs[3][40];
    int vmids[3];
    struct core_error ce;
    for (int i = 0; i < 3; i++) {
        struct vm_request rq;
        char name[16];
        snprintf(name, sizeof name, "after-%d", i);
        ch_request(&rq, "ubuntu", name, 1, 512, 10);
        assert_int_equal(core_create(e.k, &rq, jobs[i], &vmids[i], &ce), 0);
        vm_request_release(&rq);
    }
    for (int i = 0; i < 3; i++) {
        enum job_state st;
        if (core_wait_job(e.k, jobs[i], 20000, &st) != 0 || st != JOB_DONE)
            fail_job(&e, "after", jobs[i]);
        struct job_rec j;
        job_of(&e, jobs[i], &j);
        assert_string_equal(j.node, "sv1");
        job_rec_release(&j);
    }
    assert_int_equal(ch_sql(&e, "SELECT count(*) FROM clone_slots"), 0);
    ch_down(&e);
}

int main(void)
{
    pve_global_init();
    const char *lvl = getenv("PROXD_TEST_LOG");
    log_set_level(lvl ? (enum log_level)log_level_parse(lvl) : LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_given_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
