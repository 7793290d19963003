/* A job queued while the only idle worker is between its look at the store
 * and its sleep: the wake-up (core_wake, a condition signal) finds nobody
 * waiting. The worker must look again at once, not sleep out the watcher's
 * second (or, were it not the watcher, until the next job).
 *
 * The interleaving is made exact: this test is linked with
 * --wrap=store_job_claim_at (CMakeLists.txt); the wrapper, once armed, lets a
 * look that found nothing return and, before it does, queues a creation
 * (as the API would) on the worker's own thread. The store's jobs watch
 * is taken away (--wrap=store_jobs_watch answers -1, as a watch that
 * cannot be had): otherwise the creation's own commit would tell the
 * watcher, and a look would follow by that path even with the wake-up
 * lost. Without it the idle watcher looks on its 1 s timer, so a lost
 * wake-up shows as a claim about a second late. */
#include "core_harness.h"

#include "common/util.h"

#include <stdatomic.h>
#include <stdint.h>

int __real_store_job_claim_at(store *s, const char *owner, int64_t lease_ms, int64_t expired_before,
                              struct job_rec *out, struct store_error *err);

static struct ch_env *g_env;
static atomic_bool g_armed;
static atomic_llong g_queued_ms; /* when the creation was queued (mono ms) */
static atomic_llong g_claimed_ms;
static char g_job[40];

int __wrap_store_jobs_watch(store *s);
int __wrap_store_jobs_watch(store *s)
{
    (void)s;
    return -1;
}

int __wrap_store_job_claim_at(store *s, const char *owner, int64_t lease_ms, int64_t expired_before,
                              struct job_rec *out, struct store_error *err)
{
    int rc = __real_store_job_claim_at(s, owner, lease_ms, expired_before, out, err);
    if (rc == STORE_OK && atomic_load(&g_queued_ms) && !atomic_load(&g_claimed_ms) &&
        strcmp(out->id, g_job) == 0)
        atomic_store(&g_claimed_ms, mono_ms());
    bool armed = true;
    if (rc == STORE_E_NOTFOUND && atomic_compare_exchange_strong(&g_armed, &armed, false)) {
        struct vm_request rq;
        ch_request(&rq, "ubuntu", "between", 1, 512, 10);
        int vmid = 0;
        struct core_error ce = {0};
        assert_int_equal(core_create(g_env->k, &rq, g_job, &vmid, &ce), 0);
        vm_request_release(&rq);
        atomic_store(&g_queued_ms, mono_ms());
    }
    return rc;
}

static void test_a_wake_between_look_and_sleep_is_not_lost(void **unused)
{
    (void)unused;
    struct ch_env e;
    struct ch_opts o = {.workers = 1};
    ch_up(&e, &o);
    g_env = &e;
    /* the one worker is idle, the watcher without a watch: it looks on
     * its 1 s timer, and the armed look queues the creation */
    sleep_ms(300);
    atomic_store(&g_armed, true);
    int64_t end = mono_ms() + 10000;
    while (!atomic_load(&g_claimed_ms) && mono_ms() < end)
        sleep_ms(5);
    assert_true(atomic_load(&g_queued_ms) > 0);
    assert_true(atomic_load(&g_claimed_ms) > 0);
    long took = (long)(atomic_load(&g_claimed_ms) - atomic_load(&g_queued_ms));
    /* at once: the next look follows the wake-up that came during the
     * look (lost, the claim would come at the watcher's next timer look,
     * ~1 s later) */
    if (took > 600)
        fail_msg("the job queued during the look was claimed %ld ms later", took);
    enum job_state st;
    assert_int_equal(core_wait_job(e.k, g_job, 60000, &st), 0);
    assert_int_equal(st, JOB_DONE);
    ch_down(&e);
    g_env = NULL;
}

int main(void)
{
    ch_main_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_wake_between_look_and_sleep_is_not_lost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
