/* A store read that fails is no answer, never "not there": each job or
 * request that read one as "no record" or "not cordoned" made a decision
 * on it that the store would have refused.
 *
 * The failures are made exact, not left to luck: this test is linked with
 * --wrap=store_vm_get and --wrap=store_kv_get (CMakeLists.txt), and the
 * wrappers fail the armed reads (a VMID's record, a node's cordon) with
 * STORE_E_DB, on the job workers' threads only (proxd names them
 * "job-worker") where a case says so: the request that queues the job
 * reads the record too.
 *  - a snapshot job whose record read fails is resumed later (its lease
 *    runs out), not failed "no record of VM N" (its task may be running);
 *  - a snapshot's per-owner count with another VM's record unread refuses
 *    ("cannot be checked") instead of counting that VM's snapshots as none;
 *  - a reinstall is refused when its node's cordon cannot be read, and does
 *    not move the VM onto a node whose cordon cannot be read;
 *  - a drain does not migrate a VM onto a node whose cordon cannot be read;
 *  - a creation is not placed on a node whose cordon cannot be read;
 *  - a creation that finds no node's cordon readable waits for the store,
 *    and is placed once it answers (it failed at once, every node "cannot
 *    be read": a creation placed during a database outage). */
#include "core_harness.h"

#include "common/util.h"
#include "core/snapshot.h"
#include "pve/pve_api.h"
#include "store/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>

int __real_store_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err);
int __real_store_kv_get(store *s, const char *name, struct store_kv *out, struct store_error *err);
int __real_store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err);
int __real_store_vm_update_logged(store *s, const struct vm_rec *r, enum vm_state expected,
                                  struct store_event *ev, int64_t since, struct store_error *err);

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_vm_vmid; /* the record whose reads fail (on job workers) */
static int g_vm_left; /* how many more */
static atomic_int g_vm_failed;
static char g_kv_fail[8][64]; /* the settings whose reads fail */
static bool g_kv_workers;     /* only on the job workers' threads */
static atomic_int g_kv_failed;

static bool on_worker(void)
{
    char name[32] = ""; /* PR_GET_NAME: 16 bytes */
    if (prctl(PR_GET_NAME, (unsigned long)name, 0, 0, 0) != 0)
        return false;
    return strcmp(name, "job-worker") == 0;
}

static int injected(struct store_error *err, const char *what)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->code = STORE_E_DB;
        snprintf(err->message, sizeof err->message, "injected: %s cannot be read", what);
    }
    return STORE_E_DB;
}

int __wrap_store_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err)
{
    pthread_mutex_lock(&g_mu);
    bool fail = g_vm_left > 0 && vmid == g_vm_vmid && on_worker();
    if (fail)
        g_vm_left--;
    pthread_mutex_unlock(&g_mu);
    if (!fail)
        return __real_store_vm_get(s, vmid, out, err);
    atomic_fetch_add(&g_vm_failed, 1);
    return injected(err, "the record");
}

int __wrap_store_kv_get(store *s, const char *name, struct store_kv *out, struct store_error *err)
{
    bool fail = false;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < sizeof g_kv_fail / sizeof *g_kv_fail && !fail; i++)
        fail = g_kv_fail[i][0] && strcmp(name, g_kv_fail[i]) == 0;
    fail = fail && (!g_kv_workers || on_worker());
    pthread_mutex_unlock(&g_mu);
    if (!fail)
        return __real_store_kv_get(s, name, out, err);
    atomic_fetch_add(&g_kv_failed, 1);
    return injected(err, name);
}

/* The next writes of a reinstall's outcome that fail (on the job workers):
 * VMID releases and logged record updates, each this many times. */
static atomic_int g_release_left, g_update_left;

int __wrap_store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    if (on_worker() && atomic_fetch_sub(&g_release_left, 1) > 0)
        return injected(err, "the VMID's release");
    return __real_store_vmid_release(s, vmid, quarantine_ms, err);
}

int __wrap_store_vm_update_logged(store *s, const struct vm_rec *r, enum vm_state expected,
                                  struct store_event *ev, int64_t since, struct store_error *err)
{
    if (on_worker() && atomic_fetch_sub(&g_update_left, 1) > 0)
        return injected(err, "the record's update");
    return __real_store_vm_update_logged(s, r, expected, ev, since, err);
}

static void arm_vm(int vmid, int times)
{
    pthread_mutex_lock(&g_mu);
    g_vm_vmid = vmid;
    g_vm_left = times;
    pthread_mutex_unlock(&g_mu);
    atomic_store(&g_vm_failed, 0);
}

/* The cordons of these nodes (NULL-terminated) cannot be read. */
static void arm_cordons(const char *const *nodes, bool workers)
{
    pthread_mutex_lock(&g_mu);
    memset(g_kv_fail, 0, sizeof g_kv_fail);
    for (size_t i = 0; nodes && nodes[i] && i < sizeof g_kv_fail / sizeof *g_kv_fail; i++)
        snprintf(g_kv_fail[i], sizeof g_kv_fail[i], "cordon:%s", nodes[i]);
    g_kv_workers = workers;
    pthread_mutex_unlock(&g_mu);
    atomic_store(&g_kv_failed, 0);
}

/* The cordons of every node but `node` cannot be read (on the job workers). */
static void arm_other_cordons(const char *node)
{
    static char names[CH_NNODES][8];
    const char *others[CH_NNODES];
    int n = 0;
    for (int i = 1; i <= CH_NNODES; i++) {
        snprintf(names[i - 1], sizeof names[i - 1], "sv%d", i);
        if (strcmp(names[i - 1], node) != 0)
            others[n++] = names[i - 1];
    }
    others[n] = NULL;
    arm_cordons(others, true);
}

static int make_vm(struct ch_env *e, const char *owner, const char *name)
{
    struct vm_request rq;
    char job[40];
    int vmid = 0;
    ch_request(&rq, "ubuntu", name, 1, 1024, 10);
    snprintf(rq.owner, sizeof rq.owner, "%s", owner);
    assert_int_equal(ch_create_wait(e, &rq, job, &vmid, 60000), JOB_DONE);
    vm_request_release(&rq);
    return vmid;
}

static enum job_state wait_job(struct ch_env *e, const char *job, long ms, struct job_rec *out)
{
    enum job_state st = JOB_QUEUED;
    if (core_wait_job(e->k, job, ms, &st) != 0)
        fail_msg("job %s did not end in %ld ms", job, ms);
    assert_int_equal(store_job_get(e->st, job, out, NULL), 0);
    return st;
}

static const char *vm_node(struct ch_env *e, int vmid, char out[64])
{
    json_t *state = ch_state(e);
    json_t *v = ch_state_vm(state, vmid);
    assert_non_null(v);
    snprintf(out, 64, "%s", json_string_value(json_object_get(v, "node")));
    json_decref(state);
    return out;
}

static size_t snap_count(struct ch_env *e, int vmid)
{
    json_t *state = ch_state(e);
    json_t *v = ch_state_vm(state, vmid);
    assert_non_null(v);
    size_t n = json_object_size(json_object_get(v, "snapshots"));
    json_decref(state);
    return n;
}

/* The job's record read fails once on the worker: the job is claimed again
 * once its lease runs out and makes the snapshot. It used to fail "no
 * record of VM N" at once. */
static void test_snapshot_job_resumed_after_a_failed_record_read(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    int vmid = make_vm(&e, "alice", "snap-db");
    arm_vm(vmid, 1);
    struct snap_request r = {.name = "s1"};
    char job[40];
    struct core_error ce = {0};
    assert_int_equal(core_snap_create(e.k, vmid, "alice", &r, job, &ce), 0);
    struct job_rec j;
    enum job_state st = wait_job(&e, job, 120000, &j);
    assert_int_equal(atomic_load(&g_vm_failed), 1);
    if (st != JOB_DONE)
        fail_msg("the snapshot job ended %d: %s", st, j.error);
    job_rec_release(&j);
    assert_int_equal(snap_count(&e, vmid), 1);
    arm_vm(0, 0);
    ch_down(&e);
}

/* max_per_owner 2: one snapshot on each of two VMs of the owner (the
 * second's made outside proxd: its list unknown to proxd); a third, on
 * the first VM, while the second VM's record cannot be read, must be
 * refused, not counted against one snapshot. */
static void test_owner_limit_with_an_unread_record_refuses(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.extra = "[snapshots]\nmax_per_owner = 2\n"};
    ch_up(&e, &o);
    int a = make_vm(&e, "olga", "olga-a");
    struct snap_request r = {.name = "s1"};
    char job[40], node[64];
    struct core_error ce = {0};
    struct job_rec j;
    assert_int_equal(core_snap_create(e.k, a, "olga", &r, job, &ce), 0);
    assert_int_equal(wait_job(&e, job, 60000, &j), JOB_DONE);
    job_rec_release(&j);
    /* b made since (no list of it read yet), its snapshot behind proxd's back */
    int b = make_vm(&e, "olga", "olga-b");
    char upid[PVE_UPID_MAX];
    struct pve_error pe = {0};
    pve_client *pc = fleet_client(e.fl, vm_node(&e, b, node));
    assert_int_equal(pve_snap_create(pc, node, b, "x1", NULL, false, upid, &pe), 0);
    struct pve_task t;
    assert_int_equal(pve_task_wait(pc, upid, 30000, NULL, NULL, &t, &pe), 0);
    arm_vm(b, 100);
    r.name = "s2";
    assert_int_equal(core_snap_create(e.k, a, "olga", &r, job, &ce), 0);
    enum job_state st = wait_job(&e, job, 60000, &j);
    assert_true(atomic_load(&g_vm_failed) >= 1); /* b's record was asked for */
    if (st != JOB_FAILED || !strstr(j.error, "cannot be checked"))
        fail_msg("the snapshot over the owner's limit ended %d: %s", st, j.error);
    job_rec_release(&j);
    arm_vm(0, 0);
    assert_int_equal(snap_count(&e, a), 1);
    ch_down(&e);
}

/* A reinstall whose node's cordon cannot be read is refused (it used to be
 * queued as if the node were not cordoned). */
static void test_reinstall_refused_when_the_cordon_is_unknown(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    int vmid = make_vm(&e, "alice", "re-db");
    char node[64];
    const char *nodes[] = {vm_node(&e, vmid, node), NULL};
    arm_cordons(nodes, false);
    struct reinstall_request r = {.os = "debian"};
    char job[40] = "";
    struct core_error ce = {0};
    int rc = core_vm_reinstall(e.k, vmid, "alice", &r, job, &ce);
    assert_true(atomic_load(&g_kv_failed) >= 1);
    arm_cordons(NULL, false);
    if (rc != CORE_E_INTERNAL) {
        enum job_state st;
        if (rc == 0)
            core_wait_job(e.k, job, 60000, &st);
        fail_msg("the reinstall was answered %d (%s), not refused", rc, ce.message);
    }
    assert_non_null(strstr(ce.message, "cordoned cannot be read"));
    ch_down(&e);
}

/* Fill `node`'s VM storage but `free_gb` and let the inventory see it. */
static void fill(struct ch_env *e, const char *node, int free_gb)
{
    json_t *state = ch_state(e);
    size_t i;
    json_t *n;
    int64_t used = -1;
    json_array_foreach(json_object_get(state, "nodes"), i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "name")), node) != 0)
            continue;
        size_t k;
        json_t *st;
        json_array_foreach(json_object_get(n, "storages"), k, st)
        {
            if (strcmp(json_string_value(json_object_get(st, "id")), "local-lvm") == 0)
                used = json_integer_value(json_object_get(st, "used"));
        }
    }
    json_decref(state);
    assert_true(used >= 0);
    char body[128], path[64];
    snprintf(body, sizeof body, "{\"storage_gb\": {\"local-lvm\": %lld}}",
             (long long)(used / (1024LL * 1024 * 1024) + free_gb));
    snprintf(path, sizeof path, "/_sim/nodes/%s", node);
    ch_sim(e, "POST", path, body);
    fleet_refresh(e->fl, true);
}

/* The VM's node has no room for the new disk and no other node's cordon
 * can be read: the reinstall fails, nothing changed. It used to take those
 * nodes for uncordoned and move the VM onto one. */
static void test_reinstall_does_not_move_onto_an_unknown_cordon(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    int vmid = make_vm(&e, "alice", "re-move");
    char node[64];
    vm_node(&e, vmid, node);
    fill(&e, node, 5); /* a 10 GiB disk does not fit */
    arm_other_cordons(node);
    struct reinstall_request r = {.os = "debian"};
    char job[40];
    struct core_error ce = {0};
    assert_int_equal(core_vm_reinstall(e.k, vmid, "alice", &r, job, &ce), 0);
    struct job_rec j;
    enum job_state st = wait_job(&e, job, 120000, &j);
    assert_true(atomic_load(&g_kv_failed) >= 1); /* the other nodes' cordons were asked for */
    arm_cordons(NULL, false);
    char now[64];
    if (st != JOB_FAILED || strcmp(vm_node(&e, vmid, now), node) != 0)
        fail_msg("the reinstall ended %d with VM %d on %s (was %s): %s", st, vmid, now, node,
                 j.error);
    assert_non_null(strstr(j.error, "whether it is cordoned cannot be read"));
    assert_non_null(strstr(j.error, "nothing was changed"));
    job_rec_release(&j);
    ch_down(&e);
}

/* The database out of reach as a reinstall commits: its record's update
 * (with vm.reinstalled) and its temporary VMID's release fail three times
 * each, then go through; the job ends done with both written. They were
 * written once: the job ended done, the record still named the old OS and
 * the temporary VMID stayed reserved for good (the PostgreSQL fault test,
 * seed 12101, an outage during a commit). */
static void test_reinstall_commit_waits_for_the_database(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    int vmid = make_vm(&e, "alice", "re-commit");
    atomic_store(&g_release_left, 3);
    atomic_store(&g_update_left, 3);
    struct reinstall_request r = {.os = "debian"};
    char job[40];
    struct core_error ce = {0};
    assert_int_equal(core_vm_reinstall(e.k, vmid, "alice", &r, job, &ce), 0);
    struct job_rec j;
    enum job_state st = wait_job(&e, job, 120000, &j);
    int left_r = atomic_load(&g_release_left), left_u = atomic_load(&g_update_left);
    atomic_store(&g_release_left, 0);
    atomic_store(&g_update_left, 0);
    if (st != JOB_DONE)
        fail_msg("the reinstall ended %d: %s", st, j.error);
    int tmp = (int)json_integer_value(json_object_get(json_array_get(j.attempts, 0), "tmp_vmid"));
    assert_true(tmp > 0);
    char state[16] = "";
    int rc = store_vmid_state(e.st, tmp, state, NULL);
    if (rc == 0 && strcmp(state, "reserved") == 0)
        fail_msg("temporary VMID %d left reserved", tmp);
    struct vm_rec v;
    assert_int_equal(store_vm_get(e.st, vmid, &v, NULL), 0);
    assert_string_equal(v.os, "debian");
    vm_rec_release(&v);
    assert_true(left_r <= 0 && left_u <= 0); /* every injected failure was met */
    job_rec_release(&j);
    ch_down(&e);
}

/* A creation while sv1's cordon (ordered placement's first) cannot be read:
 * placed on sv2, sv1 passed over saying why. It was placed on sv1, which an
 * operator may have cordoned to empty it. */
static void test_creation_skips_an_unknown_cordon(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    static const char *const first[] = {"sv1", NULL};
    arm_cordons(first, true);
    struct vm_request rq;
    char job[40], node[64];
    int vmid = 0;
    ch_request(&rq, "ubuntu", "unknown-cordon", 1, 1024, 10);
    assert_int_equal(ch_create_wait(&e, &rq, job, &vmid, 60000), JOB_DONE);
    vm_request_release(&rq);
    assert_true(atomic_load(&g_kv_failed) >= 1);
    arm_cordons(NULL, false);
    assert_string_equal(vm_node(&e, vmid, node), "sv2");
    struct job_rec j;
    assert_int_equal(store_job_get(e.st, job, &j, NULL), 0);
    assert_true(ch_attempted(&j, "sv1", "whether it is cordoned cannot be read"));
    job_rec_release(&j);
    ch_down(&e);
}

/* No node's cordon can be read (on the workers): the creation waits, not
 * failed and nothing recorded against the nodes, then is placed once the
 * reads answer. */
static void test_creation_waits_while_no_cordon_can_be_read(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    static const char *const all[] = {"sv1", "sv2", "sv3", "sv4", "sv5", NULL};
    arm_cordons(all, true);
    struct vm_request rq;
    struct core_error ce = {0};
    char job[40], node[64];
    int vmid = 0;
    ch_request(&rq, "ubuntu", "no-cordon-read", 1, 1024, 10);
    assert_int_equal(core_create(e.k, &rq, job, &vmid, &ce), 0);
    vm_request_release(&rq);
    /* three rounds over every node: it waits rather than ends */
    int64_t end = mono_ms() + 30000;
    while (atomic_load(&g_kv_failed) < 3 * CH_NNODES && mono_ms() < end)
        sleep_ms(20);
    assert_true(atomic_load(&g_kv_failed) >= 3 * CH_NNODES);
    struct job_rec j;
    assert_int_equal(store_job_get(e.st, job, &j, NULL), 0);
    assert_int_not_equal(j.state, JOB_FAILED);
    assert_int_not_equal(j.state, JOB_DONE);
    job_rec_release(&j);
    arm_cordons(NULL, false);
    assert_int_equal(wait_job(&e, job, 60000, &j), JOB_DONE);
    for (int i = 0; all[i]; i++)
        assert_false(ch_attempted(&j, all[i], "cannot be read"));
    job_rec_release(&j);
    assert_non_null(vm_node(&e, vmid, node));
    ch_down(&e);
}

/* A drain of the VM's node while no other node's cordon can be read: the
 * VM stays. It used to migrate onto one of them. */
static void test_drain_does_not_move_onto_an_unknown_cordon(void **unused)
{
    (void)unused;
    struct ch_env e;
    ch_up(&e, NULL);
    int vmid = make_vm(&e, "alice", "drain-db");
    char node[64];
    vm_node(&e, vmid, node);
    arm_other_cordons(node);
    char job[40];
    struct core_error ce = {0};
    assert_int_equal(core_node_drain(e.k, node, "ops", job, &ce), 0);
    struct job_rec j;
    wait_job(&e, job, 120000, &j);
    assert_true(atomic_load(&g_kv_failed) >= 1); /* the other nodes' cordons were asked for */
    arm_cordons(NULL, false);
    char now[64];
    if (strcmp(vm_node(&e, vmid, now), node) != 0)
        fail_msg("VM %d moved from %s to %s", vmid, node, now);
    char *a = json_dumps(j.attempts, 0);
    if (!strstr(a, "whether it is cordoned cannot be read"))
        fail_msg("the drain does not say why VM %d stayed: %s", vmid, a);
    free(a);
    job_rec_release(&j);
    ch_down(&e);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_job_resumed_after_a_failed_record_read),
        cmocka_unit_test(test_owner_limit_with_an_unread_record_refuses),
        cmocka_unit_test(test_reinstall_refused_when_the_cordon_is_unknown),
        cmocka_unit_test(test_reinstall_does_not_move_onto_an_unknown_cordon),
        cmocka_unit_test(test_reinstall_commit_waits_for_the_database),
        cmocka_unit_test(test_drain_does_not_move_onto_an_unknown_cordon),
        cmocka_unit_test(test_creation_skips_an_unknown_cordon),
        cmocka_unit_test(test_creation_waits_while_no_cordon_can_be_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
