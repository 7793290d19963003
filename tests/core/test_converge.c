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
#include "common/util.h"
#include "pve/pve_api.h"

#define JOB_MS 30000

/* A fault rule limited to `count` matches (0: unlimited). */
static void fault_n(struct ch_env *e, const char *method, const char *path_re, const char *kind,
                    int status, const char *message, int count)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "method", method, "path", path_re, "kind", kind,
                          "message", message);
    if (status > 0)
        json_object_set_new(o, "status", json_integer(status));
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

/* ---- helpers for the cleanup tests ------------------------------------------- */

/* Wait until the job's step is `step` and its UPID contains `upid_part`. */
static void wait_step(struct ch_env *e, const char *id, const char *step, const char *upid_part)
{
    int64_t end = ch_now_ms() + JOB_MS;
    for (;;) {
        struct job_rec j;
        job_of(e, id, &j);
        bool there = strcmp(j.step, step) == 0 && strstr(j.upid, upid_part);
        enum job_state st = j.state;
        job_rec_release(&j);
        if (there)
            return;
        if (st == JOB_DONE || st == JOB_FAILED || ch_now_ms() > end)
            fail_job(e, "wait_step", id);
        sleep_ms(5);
    }
}

static int64_t vmid_rows(struct ch_env *e, int vmid, const char *states)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM vmid_alloc WHERE vmid = %d AND state IN (%s)",
             vmid, states);
    return ch_sql(e, sql);
}

static void no_attempt_with(struct ch_env *e, const char *id, const char *what)
{
    struct job_rec j;
    job_of(e, id, &j);
    for (int i = 1; i <= CH_NNODES; i++) {
        char node[8];
        snprintf(node, sizeof node, "sv%d", i);
        if (ch_attempted(&j, node, what))
            fail_job(e, what, id);
    }
    job_rec_release(&j);
}

static void reconcile(struct ch_env *e)
{
    struct reconcile_report rep;
    assert_int_equal(core_reconcile(e->k, &rep), 0);
}

/* A start that fails on sv1, with its task's first status read held for
 * 1.5 s: the test acts while the job waits there, before cleanup begins. */
static void start_fails_on_sv1(struct ch_env *e, const char *label, char job[40], int *vmid)
{
    fault_n(e, "POST", "^/nodes/sv1/qemu/\\d+/status/start$", "task_error", 0,
            "start failed by the test", 1);
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:i}", "method", "GET", "path",
                          "^/nodes/sv1/tasks/[^/]*qmstart[^/]*/status$", "kind", "delay",
                          "delay_ms", 1500, "count", 1);
    char *js = json_dumps(o, 0);
    ch_sim(e, "POST", "/_sim/faults", js);
    free(js);
    json_decref(o);
    struct vm_request rq;
    ch_request(&rq, "ubuntu", label, 1, 512, 10);
    struct core_error ce;
    assert_int_equal(core_create(e->k, &rq, job, vmid, &ce), 0);
    vm_request_release(&rq);
    wait_step(e, job, "start", "qmstart");
}

/* ---- 2: cleanup retries a transient error ---------------------------------------- */

static void test_cleanup_read_retried(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    char job[40];
    int vmid;
    start_fails_on_sv1(&e, "retried", job, &vmid);
    /* cleanup's first two reads of the VM's config answer 500 */
    fault_n(&e, "GET", "^/nodes/sv1/qemu/\\d+/config$", "error", 500,
            "config read failed by the test", 2);
    enum job_state st;
    if (core_wait_job(e.k, job, JOB_MS, &st) != 0 || st != JOB_DONE)
        fail_job(&e, "retried", job);
    struct job_rec j;
    job_of(&e, job, &j);
    /* the partial VM was removed, so the request kept its VMID */
    if (strcmp(j.node, "sv2") != 0 || j.vmid != vmid || !ch_attempted(&j, "sv1", "start failed"))
        fail_job(&e, "retried", job);
    job_rec_release(&j);
    json_t *state = ch_state(&e);
    assert_int_equal(ch_count_vms(state, "sv1"), 0);
    assert_int_equal(ch_count_vms(state, NULL), 1);
    json_decref(state);
    assert_int_equal(vmid_rows(&e, vmid, "'foreign'"), 0);
    assert_int_equal(ch_sql(&e, "SELECT count(*) FROM leftovers"), 0);
    assert_true(fleet_node_up(e.fl, "sv1")); /* a 500 is no sign of a dead node */
    ch_down(&e);
}

/* ---- 2: what cleanup cannot remove is left as durable work ------------------------ */

static void test_cleanup_left_durable(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    char job[40];
    int vmid;
    start_fails_on_sv1(&e, "durable", job, &vmid);
    fault_n(&e, "GET", "^/nodes/sv1/qemu/\\d+/config$", "error", 500,
            "config read failed by the test", 0);
    enum job_state st;
    if (core_wait_job(e.k, job, JOB_MS, &st) != 0 || st != JOB_DONE)
        fail_job(&e, "durable", job);
    struct job_rec j;
    job_of(&e, job, &j);
    if (strcmp(j.node, "sv2") != 0 || j.vmid == vmid)
        fail_job(&e, "durable", job);
    int now_vmid = j.vmid;
    job_rec_release(&j);
    /* the half-made VM is recorded, its VMID kept from others, never foreign */
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM leftovers WHERE vmid = %d AND node = 'sv1'",
             vmid);
    assert_int_equal(ch_sql(&e, sql), 1);
    assert_int_equal(vmid_rows(&e, vmid, "'reserved'"), 1);
    json_t *state = ch_state(&e);
    assert_non_null(ch_state_vm(state, vmid));
    json_decref(state);
    /* sv1 answers again: the reconciler finishes the work */
    ch_sim(&e, "DELETE", "/_sim/faults", NULL);
    reconcile(&e);
    state = ch_state(&e);
    assert_int_equal(ch_count_vms(state, "sv1"), 0);
    assert_int_equal(ch_count_vms(state, NULL), 1);
    assert_non_null(ch_state_vm(state, now_vmid));
    json_decref(state);
    assert_int_equal(ch_sql(&e, "SELECT count(*) FROM leftovers"), 0);
    assert_int_equal(vmid_rows(&e, vmid, "'reserved', 'used', 'foreign'"), 0);
    ch_down(&e);
}

/* ---- 3: a clone whose task could not be seen is not "nothing made" ------------------ */

static void test_clone_status_unseen(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    /* the clone call works, its task's status cannot be read, and the
     * config is not there yet when cleanup looks (as right after a clone) */
    fault_n(&e, "GET", "^/nodes/sv1/tasks/[^/]*qmclone[^/]*/status$", "error", 500,
            "task status failed by the test", 0);
    fault_n(&e, "GET", "^/nodes/sv1/qemu/\\d+/config$", "error", 500,
            "Configuration file 'nodes/sv1/qemu-server/1000.conf' does not exist", 1);
    struct vm_request rq;
    ch_request(&rq, "ubuntu", "unseen", 1, 512, 10);
    char job[40];
    int vmid;
    if (ch_create_wait(&e, &rq, job, &vmid, JOB_MS) != JOB_DONE)
        fail_job(&e, "unseen", job);
    vm_request_release(&rq);
    assert_int_equal(vmid, 1000);
    struct job_rec j;
    job_of(&e, job, &j);
    /* 1000 was not cloned again elsewhere: the request went on under another */
    if (strcmp(j.node, "sv2") != 0 || j.vmid == 1000)
        fail_job(&e, "unseen", job);
    int now_vmid = j.vmid;
    job_rec_release(&j);
    no_attempt_with(&e, job, "File exists");
    no_attempt_with(&e, job, "already exists");
    ch_sim(&e, "DELETE", "/_sim/faults", NULL);
    reconcile(&e);
    json_t *state = ch_state(&e);
    assert_int_equal(ch_count_vms(state, "sv1"), 0);
    assert_int_equal(ch_count_vms(state, NULL), 1);
    assert_non_null(ch_state_vm(state, now_vmid));
    json_decref(state);
    assert_int_equal(ch_sql(&e, "SELECT count(*) FROM leftovers"), 0);
    assert_int_equal(vmid_rows(&e, 1000, "'reserved', 'used', 'foreign'"), 0);
    ch_down(&e);
}

/* ---- 4: half-made VMs of proxd's own creations are removed by default --------------- */

/* A VM on sv1 as an earlier attempt of `job` would have left it (cloned
 * with the creation marker), optionally tagged. */
static void make_halfmade(struct ch_env *e, int vmid, const char *job, bool tagged)
{
    pve_client *pc = fleet_client(e->fl, "sv1");
    char m[96], upid[PVE_UPID_MAX];
    snprintf(m, sizeof m, "proxd job %s", job);
    struct pve_clone o = {.newid = vmid, .name = "half", .description = m, .full = 1};
    struct pve_error pe;
    if (pve_vm_clone(pc, "sv1", 8000, &o, upid, &pe) != 0)
        fail_msg("clone: %s", pe.message);
    struct pve_task t;
    if (pve_task_wait(pc, upid, 20000, NULL, NULL, &t, &pe) != 0)
        fail_msg("clone task: %s", pe.message);
    if (tagged) {
        struct pve_config_set cs = {.tags = "proxd", .description = m};
        if (pve_vm_config_set(pc, "sv1", vmid, &cs, &pe) != 0)
            fail_msg("config: %s", pe.message);
    }
}

static void test_halfmade_removed(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL); /* delete_orphans is off */
    struct vm_request rq;
    ch_request(&rq, "ubuntu", "known", 1, 512, 10);
    char job[40];
    int vmid;
    assert_int_equal(ch_create_wait(&e, &rq, job, &vmid, JOB_MS), JOB_DONE);
    vm_request_release(&rq);
    make_halfmade(&e, 1500, job, false); /* clone of a known creation, never configured */
    make_halfmade(&e, 1501, job, true);  /* configured and tagged, then abandoned */
    make_halfmade(&e, 1502, "4f1c2a9e-0000-4000-8000-00000000dead", true); /* no such job */
    struct reconcile_report rep;
    assert_int_equal(core_reconcile(e.k, &rep), 0);
    json_t *state = ch_state(&e);
    assert_null(ch_state_vm(state, 1500));
    assert_null(ch_state_vm(state, 1501));
    /* a tagged VM proxd has no record of is only reported (delete_orphans) */
    assert_non_null(ch_state_vm(state, 1502));
    assert_non_null(ch_state_vm(state, vmid)); /* the creation's own VM stays */
    json_decref(state);
    assert_int_equal(rep.orphans, 1);
    assert_int_equal(rep.orphans_deleted, 0);
    /* and again: nothing more to do */
    assert_int_equal(core_reconcile(e.k, &rep), 0);
    assert_int_equal(rep.orphans, 1);
    state = ch_state(&e);
    assert_int_equal(ch_count_vms(state, NULL), 2);
    json_decref(state);
    ch_down(&e);
}

int main(void)
{
    pve_global_init();
    const char *lvl = getenv("PROXD_TEST_LOG");
    log_set_level(lvl ? (enum log_level)log_level_parse(lvl) : LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_given_back),
        cmocka_unit_test(test_cleanup_read_retried),
        cmocka_unit_test(test_cleanup_left_durable),
        cmocka_unit_test(test_clone_status_unseen),
        cmocka_unit_test(test_halfmade_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
