/* 200 creations submitted at once from 8 threads against five pvesim nodes,
 * with a small sv1 (it fills up) and starts that fail now and then (cleanup
 * and failover under load): no VMID is handed out twice, every job ends
 * enabled or failed with a reason, and the database and Proxmox agree
 * exactly afterwards. */
#include "core_harness.h"

#include "common/log.h"

#include <pthread.h>

#define THREADS 8
#define PER_THREAD 25
#define TOTAL (THREADS * PER_THREAD)

struct submitted {
    char job[40];
    int vmid;
    char os[32];
};

struct submitter {
    struct ch_env *e;
    int t;
    struct submitted out[PER_THREAD];
    int rc[PER_THREAD];
};

static void *submit(void *arg)
{
    struct submitter *s = arg;
    static const char *const oses[] = {"ubuntu", "debian"};
    for (int i = 0; i < PER_THREAD; i++) {
        struct vm_request rq;
        char name[32];
        snprintf(name, sizeof name, "load-%d-%d", s->t, i);
        ch_request(&rq, oses[(s->t + i) % 2], name, 1, 512, 10);
        snprintf(s->out[i].os, sizeof s->out[i].os, "%s", rq.os);
        struct core_error ce = {0};
        s->rc[i] = core_create(s->e->k, &rq, s->out[i].job, &s->out[i].vmid, &ce);
    }
    return NULL;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

struct edge {
    int64_t t;
    int d; /* +1 start, -1 end */
};

static int cmp_edge(const void *a, const void *b)
{
    const struct edge *x = a, *y = b;
    if (x->t != y->t)
        return (x->t > y->t) - (x->t < y->t);
    return x->d - y->d; /* ends first: [start, end) */
}

/* The most qmclone tasks that ran at once on `node` (pvesim's task list,
 * whole simulated seconds: it can only under-count). */
static int max_parallel_clones(json_t *state, const char *node)
{
    size_t i, n = 0;
    json_t *t;
    struct edge *ev = calloc(2 * json_array_size(json_object_get(state, "tasks")) + 1, sizeof *ev);
    json_array_foreach(json_object_get(state, "tasks"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "node")), node) != 0 ||
            strcmp(json_string_value(json_object_get(t, "type")), "qmclone") != 0)
            continue;
        ev[n++] = (struct edge){json_integer_value(json_object_get(t, "starttime")), 1};
        json_t *end = json_object_get(t, "endtime");
        ev[n++] = (struct edge){end ? json_integer_value(end) : INT64_MAX, -1};
    }
    qsort(ev, n, sizeof *ev, cmp_edge);
    int cur = 0, max = 0;
    for (size_t k = 0; k < n; k++) {
        cur += ev[k].d;
        if (cur > max)
            max = cur;
    }
    free(ev);
    return max;
}

static void test_200_concurrent(void **unused)
{
    (void)unused;
    int64_t t0 = h_now_ms();
    struct ch_env e;
    /* quarantine: a job that fails while others are still being submitted
     * (a loaded machine times calls out) must not hand its VMID to a later
     * submission, or "handed out twice" below would be a false alarm */
    struct ch_opts o = {.workers = 16, .clones_per_node = 4, .no_start = true, .quarantine = 300};
    ch_up(&e, &o);
    /* sv1 holds only a handful of 512 MiB VMs: 12 GiB, 2 used, 2 margin */
    ch_sim(&e, "POST", "/_sim/nodes/sv1", "{\"memory_gb\":12}");
    ch_sim(&e, "POST", "/_sim/faults",
           "{\"method\":\"POST\",\"path\":\"^/nodes/sv[0-9]/qemu/\\\\d+/status/start$\","
           "\"kind\":\"task_error\",\"message\":\"start failed by the test\",\"rate\":0.05}");
    ch_start(&e);

    struct submitter subs[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        memset(&subs[t], 0, sizeof subs[t]);
        subs[t].e = &e;
        subs[t].t = t;
        assert_int_equal(pthread_create(&th[t], NULL, submit, &subs[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    int64_t t_submit = h_now_ms();

    /* distinct VMIDs at submission, each from its OS's range */
    int ids[TOTAL];
    int n = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            assert_int_equal(subs[t].rc[i], CORE_OK);
            int lo = strcmp(subs[t].out[i].os, "ubuntu") == 0 ? 1000 : 4000;
            assert_true(subs[t].out[i].vmid >= lo && subs[t].out[i].vmid < lo + 1000);
            ids[n++] = subs[t].out[i].vmid;
        }
    qsort(ids, TOTAL, sizeof *ids, cmp_int);
    for (int i = 1; i < TOTAL; i++)
        if (ids[i] == ids[i - 1])
            fail_msg("VMID %d handed out twice", ids[i]);

    /* every job ends, enabled or failed with a reason */
    int done = 0, failed = 0;
    int64_t deadline = h_now_ms() + 90000;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            struct submitted *s = &subs[t].out[i];
            enum job_state st;
            long left = (long)(deadline - h_now_ms());
            if (core_wait_job(e.k, s->job, left > 0 ? left : 1, &st) != 0)
                fail_msg("job %s (VMID %d) did not finish", s->job, s->vmid);
            struct job_rec j;
            assert_int_equal(store_job_get(e.st, s->job, &j, NULL), 0);
            if (st == JOB_DONE) {
                struct vm_rec v;
                if (store_vm_get(e.st, j.vmid, &v, NULL) != 0)
                    fail_msg("job %s done without a record of VM %d", j.id, j.vmid);
                assert_int_equal(v.state, VMS_ENABLED);
                assert_string_equal(v.node, j.node);
                assert_string_equal(v.job, j.id);
                vm_rec_release(&v);
                done++;
            } else {
                if (!j.error[0] || json_array_size(j.attempts) == 0)
                    fail_msg("job %s failed without a reason", j.id);
                failed++;
            }
            job_rec_release(&j);
        }
    int64_t t_done = h_now_ms();
    assert_int_equal(done + failed, TOTAL);
    assert_true(done > TOTAL / 2);

    /* the database: no VMID with two live records, one live record per
     * finished job that succeeded */
    struct vm_filter f = {.state = -1, .include_gone = true, .limit = 1000};
    struct vm_rec *recs;
    size_t nrec;
    assert_int_equal(store_vm_list(e.st, &f, &recs, &nrec, NULL), 0);
    int enabled = 0;
    json_t *state = ch_state(&e);
    for (size_t i = 0; i < nrec; i++) {
        struct vm_rec *v = &recs[i];
        if (v->state == VMS_CREATING)
            fail_msg("VM %d still creating", v->vmid);
        if (v->state != VMS_ENABLED)
            continue;
        enabled++;
        for (size_t k = i + 1; k < nrec; k++)
            if (recs[k].vmid == v->vmid && recs[k].state == VMS_ENABLED)
                fail_msg("two enabled records of VM %d", v->vmid);
        /* ... and Proxmox has it, where the record says, running */
        json_t *vm = ch_state_vm(state, v->vmid);
        if (!vm)
            fail_msg("enabled VM %d (%s) is not on pvesim", v->vmid, v->node);
        assert_string_equal(json_string_value(json_object_get(vm, "node")), v->node);
        assert_string_equal(json_string_value(json_object_get(vm, "power")), "running");
        assert_null(json_object_get(json_object_get(vm, "conf"), "lock"));
    }
    assert_int_equal(enabled, done);
    /* every VM on pvesim that is not a template has an enabled record */
    size_t i;
    json_t *vm;
    int nvms = 0;
    json_array_foreach(json_object_get(state, "vms"), i, vm)
    {
        int vmid = (int)json_integer_value(json_object_get(vm, "vmid"));
        if (ch_is_template(vmid))
            continue;
        nvms++;
        struct vm_rec v;
        if (store_vm_get(e.st, vmid, &v, NULL) != 0 || v.state != VMS_ENABLED)
            fail_msg("VM %d on %s has no enabled record", vmid,
                     json_string_value(json_object_get(vm, "node")));
        vm_rec_release(&v);
    }
    assert_int_equal(nvms, enabled);
    int on_sv1 = ch_count_vms(state, "sv1");
    /* capacity: no node went below the memory margin (2 GiB by default) */
    json_array_foreach(json_object_get(state, "nodes"), i, vm)
    {
        int64_t total = json_integer_value(json_object_get(vm, "mem_total"));
        int64_t used = json_integer_value(json_object_get(vm, "mem_used"));
        const char *node = json_string_value(json_object_get(vm, "name"));
        int par = max_parallel_clones(state, node);
        print_message("%s: %d VMs, memory %lld of %lld MiB used, at most %d clones at once\n", node,
                      ch_count_vms(state, node), (long long)(used >> 20), (long long)(total >> 20),
                      par);
        if (par > e.cfg->clones_per_node)
            fail_msg("%s ran %d clones at once (clones_per_node %d)", node, par,
                     e.cfg->clones_per_node);
        if (total - used < e.cfg->memory_margin_mb * (1LL << 20))
            fail_msg("%s is over-committed: %lld of %lld MiB used, margin %lld MiB", node,
                     (long long)(used >> 20), (long long)(total >> 20),
                     (long long)e.cfg->memory_margin_mb);
    }
    json_decref(state);
    for (size_t k = 0; k < nrec; k++)
        vm_rec_release(&recs[k]);
    free(recs);

    /* nothing left reserved: every VMID allocated is a VM, or the released
     * ID of a failed job resting in quarantine */
    int alloc = -1;
    assert_int_equal(store_vmid_count(e.st, 100, 999999999, &alloc, NULL), 0);
    assert_int_equal(alloc, enabled + failed);
    int active = -1;
    assert_int_equal(store_job_count_active(e.st, NULL, &active, NULL), 0);
    assert_int_equal(active, 0);

    print_message("%d done, %d failed, %d on sv1; submit %lld ms, all done %lld ms\n", done, failed,
                  on_sv1, (long long)(t_submit - t0), (long long)(t_done - t0));
    ch_down(&e);
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_200_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
