/* Pure unit tests of the task poll schedule (pve_task_poll_delay): how many
 * status polls a wait costs and how late the end of a task is noticed, for
 * short and long tasks, with and without a learned expectation. No network. */
#include "pvetest.h"

#include <stdlib.h>

/* Replay pve_task_wait's loop against a task that ends after task_ms:
 * a poll at t = 0, then after each delay. Returns the number of polls;
 * *late: how long after the end the poll that saw it came. */
static int replay(long task_ms, long expect_ms, long *late, long *max_gap)
{
    long t = 0, prev = 0;
    int polls = 0;
    *max_gap = 0;
    for (;;) {
        polls++;
        if (t >= task_ms) {
            *late = t - task_ms;
            return polls;
        }
        prev = pve_task_poll_delay(t, prev, expect_ms);
        assert_true(prev > 0);
        if (prev > *max_gap)
            *max_gap = prev;
        t += prev;
    }
}

static void test_short_tasks(void **state)
{
    (void)state;
    long late, gap;
    /* a clone that fails at once is seen within 50 ms: failover stays fast */
    assert_int_equal(replay(10, 0, &late, &gap), 2);
    assert_true(late <= 50);
    /* a 1 s task (a resize, a start) costs at most 6 polls, seen <= 0.8 s late */
    assert_true(replay(1000, 0, &late, &gap) <= 6);
    assert_true(late <= 800);
    /* at a fast time scale a known 30 ms task is looked at right at its end */
    assert_int_equal(replay(30, 30, &late, &gap), 2);
    assert_true(late <= 20);
}

static void test_long_task_without_expectation(void **state)
{
    (void)state;
    long late, gap;
    /* a 160 s clone never seen before: at most a third late, and far fewer
     * than the 160 polls of a once-a-second client */
    int n = replay(160000, 0, &late, &gap);
    assert_true(n <= 26);
    assert_true(late <= 160000 / 3 + 1);
    /* however long the wait, no gap longer than 30 s */
    n = replay(4 * 3600 * 1000L, 0, &late, &gap);
    assert_int_equal(gap, 30000);
    assert_true(late <= 30000);
    assert_true(n <= 4 * 3600 / 30 + 30);
}

static void test_long_task_with_expectation(void **state)
{
    (void)state;
    long late, gap;
    /* as long as expected: from 100 s on at most 2 polls per 10 s of task
     * (shorter ones pay the dense start), seen within 4% (or 0.2 s) */
    for (long t = 20000; t <= 1200000; t += 20000) {
        int n = replay(t, t, &late, &gap);
        if (n > (t < 100000 ? 17 : 2 * t / 10000) || late > (t / 25 > 200 ? t / 25 : 200))
            fail_msg("task %ld ms: %d polls, %ld ms late", t, n, late);
    }
    /* 20% longer or shorter than expected: still seen within a quarter */
    for (long t = 20000; t <= 1200000; t += 20000) {
        long e1 = t * 5 / 6, e2 = t * 6 / 5;
        int n1 = replay(t, e1, &late, &gap);
        assert_true(late <= t / 4 + 1);
        int n2 = replay(t, e2, &late, &gap);
        assert_true(late <= t / 4 + 1);
        long most = t < 100000 ? 22 : 3 * t / 10000;
        if (n1 > most || n2 > most)
            fail_msg("task %ld ms: %d / %d polls", t, n1, n2);
    }
    /* far shorter than expected (a failure, a quiet node): never more than
     * twice the time it took, plus the dense start */
    for (long t = 100; t <= 600000; t = t * 3 / 2) {
        replay(t, 1200000, &late, &gap);
        if (late > t + 800)
            fail_msg("task %ld ms expected 1200 s: %ld ms late", t, late);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_tasks),
        cmocka_unit_test(test_long_task_without_expectation),
        cmocka_unit_test(test_long_task_with_expectation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
