/* The reconciler during a blip, of the database or of Proxmox. A job it
 * cannot read now is not a job that does not exist:
 *  - a record stuck "creating" (or "deleting") is repaired only when no job
 *    will finish it; taking a failed read of its job for "no job" set a
 *    running creation's record failed and released its VMID;
 *  - a leftover whose VM is not there is "never made" only when its clone
 *    is not running; taking a failed read of the creation's job for "no
 *    clone" forgot the leftover and released its VMID while the clone may
 *    still come.
 * The blip is made exact, not left to luck: this test is linked with
 * --wrap=store_job_brief and --wrap=store_job_get (CMakeLists.txt), and the
 * wrappers fail every read of the armed job with STORE_E_DB, whoever reads
 * it (the job is one no worker claims: its lease is held by a gone
 * instance, or it has ended).
 * And a VM an inventory that did not answer does not show is not a VM that
 * is gone: a record stuck creating or deleting is decided only from an
 * inventory its node answered (a pvesim fault rule on /cluster/resources). */
#include "core_harness.h"

#include "common/util.h"

#include <pthread.h>
#include <stdatomic.h>

int __real_store_job_brief(store *s, const char *id, struct job_brief *out,
                           struct store_error *err);
int __real_store_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err);

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_armed[40];     /* the job whose reads fail; "" none */
static atomic_int g_blipped; /* reads of it failed since it was armed */

static void arm(const char *job)
{
    pthread_mutex_lock(&g_mu);
    snprintf(g_armed, sizeof g_armed, "%s", job ? job : "");
    if (job)
        atomic_store(&g_blipped, 0);
    pthread_mutex_unlock(&g_mu);
}

/* Does this read of `id` meet the blip? (err filled) */
static bool blip(const char *id, struct store_error *err)
{
    pthread_mutex_lock(&g_mu);
    bool hit = g_armed[0] && id && strcmp(id, g_armed) == 0;
    pthread_mutex_unlock(&g_mu);
    if (!hit)
        return false;
    atomic_fetch_add(&g_blipped, 1);
    if (err) {
        memset(err, 0, sizeof *err);
        err->code = STORE_E_DB;
        snprintf(err->message, sizeof err->message, "database is locked (injected by the test)");
    }
    return true;
}

int __wrap_store_job_brief(store *s, const char *id, struct job_brief *out, struct store_error *err)
{
    return blip(id, err) ? STORE_E_DB : __real_store_job_brief(s, id, out, err);
}

int __wrap_store_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err)
{
    return blip(id, err) ? STORE_E_DB : __real_store_job_get(s, id, out, err);
}

/* Creation job `id` of `vmid`, as `state`: running, it was left by an
 * instance that is gone, its lease held for an hour (no worker here claims
 * it). */
static void job_insert(struct ch_env *e, enum job_state state, int vmid, const char *id)
{
    struct job_rec j = {.state = state, .vmid = vmid};
    snprintf(j.id, sizeof j.id, "%s", id);
    snprintf(j.kind, sizeof j.kind, "create");
    snprintf(j.owner, sizeof j.owner, "alice");
    snprintf(j.step, sizeof j.step, state == JOB_RUNNING ? "wait_clone" : "failed");
    snprintf(j.node, sizeof j.node, "sv1");
    if (state == JOB_RUNNING) {
        snprintf(j.lease_owner, sizeof j.lease_owner, "gone:1");
        j.lease_until = h_wall_ms() + 3600000;
    }
    j.request = json_pack("{s:s,s:s,s:s}", "os", "ubuntu", "name", "blip", "owner", "alice");
    j.attempts = json_array();
    assert_int_equal(store_job_insert(e->st, &j, NULL), 0);
    job_rec_release(&j);
}

static int vmid_allocated(struct ch_env *e, int vmid)
{
    int n = -1;
    assert_int_equal(store_vmid_count(e->st, vmid, vmid, &n, NULL), 0);
    return n;
}

static enum vm_state record_state(struct ch_env *e, int64_t id)
{
    struct vm_rec v;
    assert_int_equal(store_vm_get_id(e->st, id, &v, NULL), 0);
    enum vm_state s = v.state;
    vm_rec_release(&v);
    return s;
}

/* ---- 1: a creating record whose running job cannot be read ----------------------- */

static void test_creating_record_kept(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.reconcile_interval = 3600}; /* the passes are the test's */
    ch_up(&e, &o);
    /* a creation under way on sv1 (its clone not in the inventory yet):
     * its VMID reserved, its record creating */
    const char *job = "4f1c2a9e-0000-4000-8000-0000000000c1";
    /* the blip starts before the records are there: a pass of the keeper's
     * own (at start) meets it too */
    arm(job);
    struct vmid_range r = {1700, 1799};
    int vmid = 0;
    assert_int_equal(store_vmid_reserve(e.st, &r, 1, NULL, 0, job, &vmid, NULL), 0);
    job_insert(&e, JOB_RUNNING, vmid, job);
    struct vm_rec v = {
        .vmid = vmid, .state = VMS_CREATING, .cores = 1, .memory_mb = 512, .disk_gb = 10};
    snprintf(v.os, sizeof v.os, "ubuntu");
    snprintf(v.name, sizeof v.name, "blip");
    snprintf(v.owner, sizeof v.owner, "alice");
    snprintf(v.node, sizeof v.node, "sv1");
    snprintf(v.power, sizeof v.power, "stopped");
    snprintf(v.job, sizeof v.job, "%s", job);
    assert_int_equal(store_vm_insert(e.st, &v, NULL), 0);

    /* the blip: the pass cannot read the job; the record is left alone */
    struct reconcile_report rep;
    assert_int_equal(core_reconcile(e.k, &rep), 0);
    arm(NULL);
    assert_true(atomic_load(&g_blipped) > 0); /* the pass did read it */
    assert_int_equal(rep.stuck, 0);
    if (record_state(&e, v.id) != VMS_CREATING)
        fail_msg("the record of a running creation is %s after a failed read of its job",
                 vm_state_name(record_state(&e, v.id)));
    assert_int_equal(vmid_allocated(&e, vmid), 1);

    /* read, the job runs: still left alone */
    assert_int_equal(core_reconcile(e.k, &rep), 0);
    assert_int_equal(record_state(&e, v.id), VMS_CREATING);

    /* the job ended without a result (its runner's last write lost): now
     * nobody will finish the record, and the pass repairs it */
    struct job_rec j;
    assert_int_equal(store_job_get(e.st, job, &j, NULL), 0);
    j.state = JOB_FAILED;
    j.lease_owner[0] = '\0';
    assert_int_equal(store_job_update(e.st, &j, NULL), 0);
    job_rec_release(&j);
    assert_int_equal(core_reconcile(e.k, &rep), 0); /* (or the keeper's pass) */
    assert_int_equal(record_state(&e, v.id), VMS_FAILED);
    assert_int_equal(vmid_allocated(&e, vmid), 0); /* quarantine 0 */
    ch_down(&e);
}

/* ---- 2: a leftover whose creation's job cannot be read --------------------------- */

static void test_leftover_kept(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.reconcile_interval = 3600};
    ch_up(&e, &o);
    /* a creation that left VMID 17xx on sv1 (nothing there yet: its clone
     * request may still be served) and failed */
    const char *job = "4f1c2a9e-0000-4000-8000-0000000000c2";
    arm(job); /* before the leftover is there (the keeper's pass) */
    struct vmid_range r = {1700, 1799};
    int vmid = 0;
    assert_int_equal(store_vmid_reserve(e.st, &r, 1, NULL, 0, job, &vmid, NULL), 0);
    job_insert(&e, JOB_FAILED, vmid, job);
    assert_int_equal(store_leftover_add(e.st, vmid, "sv1", job, STORE_LEFT_NO_ROOM, NULL), 0);

    /* the blip: the pass cannot tell whether its clone runs; kept. (The
     * keeper's cleaner may hold the leftover, posted by its pass at start:
     * this pass then leaves it to it; passes until one of them read it.) */
    struct reconcile_report rep;
    for (int64_t end = h_now_ms() + 10000; atomic_load(&g_blipped) == 0; sleep_ms(50)) {
        assert_int_equal(core_reconcile(e.k, &rep), 0);
        if (h_now_ms() > end)
            fail_msg("no pass read the leftover's job");
    }
    arm(NULL);
    struct leftover *ls = NULL;
    size_t n = 0;
    assert_int_equal(store_leftover_list(e.st, &ls, &n, NULL), 0);
    free(ls);
    if (n != 1)
        fail_msg("the leftover was forgotten after a failed read of its job");
    assert_int_equal(vmid_allocated(&e, vmid), 1);

    /* read, no clone task of the job: never made, forgotten, VMID free (by
     * this pass, or by the keeper's cleaner when it had the leftover) */
    for (int64_t end = h_now_ms() + 10000;; sleep_ms(100)) {
        assert_int_equal(core_reconcile(e.k, &rep), 0);
        assert_int_equal(store_leftover_list(e.st, &ls, &n, NULL), 0);
        free(ls);
        if (n == 0)
            break;
        if (h_now_ms() > end)
            fail_msg("the leftover, never made, was not forgotten once its job could be read");
    }
    assert_int_equal(vmid_allocated(&e, vmid), 0);
    ch_down(&e);
}

/* ---- 3: stuck records while the inventory is empty -------------------------------- */

/* A VM made through the Proxmox API (a form body), waited for in pvesim. */
static void pve_vm_make(struct ch_env *e, const char *node, int vmid)
{
    static const char *const hdrs[] = {"Authorization: PVEAPIToken=" CH_TOKEN, NULL};
    char path[96], form[128];
    snprintf(path, sizeof path, "/api2/json/nodes/%s/qemu", node);
    snprintf(form, sizeof form, "vmid=%d&name=made-%d&tags=proxd&memory=512", vmid, vmid);
    struct h_resp r;
    h_request(e->port, "POST", path, NULL, form, hdrs, &r);
    if (r.status != 200)
        fail_msg("POST %s: %ld %s", path, r.status, r.body);
    h_resp_free(&r);
    for (int64_t end = h_now_ms() + 10000;; sleep_ms(20)) {
        json_t *st = ch_state(e);
        json_t *v = ch_state_vm(st, vmid);
        const char *lock = json_string_value(json_object_get(json_object_get(v, "conf"), "lock"));
        bool made = v && !lock;
        json_decref(st);
        if (made)
            return;
        if (h_now_ms() > end)
            fail_msg("VM %d was not made", vmid);
    }
}

/* A record of `vmid` in `state` whose job `job` (ended: `jstate`, on
 * `jnode`) will not finish it; node: the record's. */
static int64_t stuck_record(struct ch_env *e, int vmid, enum vm_state state, const char *node,
                            const char *job, enum job_state jstate, const char *jnode)
{
    struct job_rec j = {.state = jstate, .vmid = vmid};
    snprintf(j.id, sizeof j.id, "%s", job);
    snprintf(j.kind, sizeof j.kind, state == VMS_CREATING ? "create" : "delete");
    snprintf(j.owner, sizeof j.owner, "alice");
    snprintf(j.step, sizeof j.step, jstate == JOB_DONE ? "done" : "failed");
    snprintf(j.node, sizeof j.node, "%s", jnode);
    j.request = json_pack("{s:s,s:s,s:s}", "os", "ubuntu", "name", "stuck", "owner", "alice");
    j.attempts = json_array();
    assert_int_equal(store_job_insert(e->st, &j, NULL), 0);
    job_rec_release(&j);
    struct vmid_range r = {vmid, vmid};
    int got = 0;
    assert_int_equal(store_vmid_reserve(e->st, &r, 1, NULL, 0, job, &got, NULL), 0);
    assert_int_equal(got, vmid);
    if (state != VMS_CREATING)
        assert_int_equal(store_vmid_mark_used(e->st, vmid, NULL), 0);
    struct vm_rec v = {.vmid = vmid, .state = state, .cores = 1, .memory_mb = 512, .disk_gb = 10};
    snprintf(v.os, sizeof v.os, "ubuntu");
    snprintf(v.name, sizeof v.name, "made-%d", vmid);
    snprintf(v.owner, sizeof v.owner, "alice");
    snprintf(v.node, sizeof v.node, "%s", node);
    snprintf(v.power, sizeof v.power, "running");
    snprintf(v.job, sizeof v.job, "%s", job);
    assert_int_equal(store_vm_insert(e->st, &v, NULL), 0);
    return v.id;
}

/* Records stuck "creating" (a creation done on sv1 whose last record write
 * was lost: the record names no node yet) and "deleting" (a delete that
 * failed without putting the record back) are decided from the inventory.
 * While the cluster does not answer, proxd starts with an empty one: both
 * VMs seem gone, but they run. Released, their VMIDs went to the next
 * creations while the VMs lived. */
static void test_stuck_records_wait_for_an_inventory(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.reconcile_interval = 3600, .no_start = true};
    ch_up(&e, &o);
    pve_vm_make(&e, "sv1", 1700);
    pve_vm_make(&e, "sv1", 1701);
    int64_t creating = stuck_record(&e, 1700, VMS_CREATING, "",
                                    "4f1c2a9e-0000-4000-8000-0000000000c3", JOB_DONE, "sv1");
    int64_t deleting = stuck_record(&e, 1701, VMS_DELETING, "sv1",
                                    "4f1c2a9e-0000-4000-8000-0000000000c4", JOB_FAILED, "");
    /* the cluster's inventory does not answer from the start */
    ch_fault(&e, "GET", "^/cluster/resources$", "error", "injected: no inventory");
    ch_start(&e);
    struct reconcile_report rep;
    assert_int_equal(core_reconcile(e.k, &rep), 0);
    assert_int_equal(rep.stuck, 0);
    if (record_state(&e, creating) != VMS_CREATING || record_state(&e, deleting) != VMS_DELETING)
        fail_msg("stuck records decided from an empty inventory: creating -> %s, deleting -> %s",
                 vm_state_name(record_state(&e, creating)),
                 vm_state_name(record_state(&e, deleting)));
    assert_int_equal(vmid_allocated(&e, 1700), 1);
    assert_int_equal(vmid_allocated(&e, 1701), 1);

    /* the inventory answers: both VMs are there, both records enabled */
    ch_sim(&e, "DELETE", "/_sim/faults", NULL);
    for (int64_t end = h_now_ms() + 15000;; sleep_ms(100)) {
        assert_int_equal(core_reconcile(e.k, &rep), 0);
        if (record_state(&e, creating) == VMS_ENABLED && record_state(&e, deleting) == VMS_ENABLED)
            break;
        if (h_now_ms() > end)
            fail_msg("stuck records not decided once the inventory answered: %s, %s",
                     vm_state_name(record_state(&e, creating)),
                     vm_state_name(record_state(&e, deleting)));
    }
    struct vm_rec v;
    assert_int_equal(store_vm_get_id(e.st, creating, &v, NULL), 0);
    assert_string_equal(v.node, "sv1");
    vm_rec_release(&v);
    assert_int_equal(vmid_allocated(&e, 1700), 1);
    assert_int_equal(vmid_allocated(&e, 1701), 1);
    ch_down(&e);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creating_record_kept),
        cmocka_unit_test(test_leftover_kept),
        cmocka_unit_test(test_stuck_records_wait_for_an_inventory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
