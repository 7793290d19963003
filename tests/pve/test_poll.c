/* Pure unit tests of the task poll schedule (pve_task_poll_delay): how many
 * status polls a wait costs and how late the end of a task is noticed, for
 * short and long tasks, with and without a learned expectation. No network. */
#include "pvetest.h"

#include <stdlib.h>

/* Replay pve_task_wait's loop against a task that ends after task_ms: sleep,
 * look, until a look comes at or after the end. Returns the number of
 * polls; *late: how long after the end the poll that saw it came. */
static int replay(long task_ms, long expect_ms, long *late, long *max_gap)
{
    long t = 0, prev = 0;
    int polls = 0;
    *max_gap = 0;
    for (;;) {
        prev = pve_task_poll_delay(t, prev, expect_ms);
        assert_true(prev > 0);
        if (prev > *max_gap)
            *max_gap = prev;
        t += prev;
        polls++;
        if (t >= task_ms) {
            *late = t - task_ms;
            return polls;
        }
    }
}

static void test_unknown_kind(void **state)
{
    (void)state;
    long late, gap;
    /* a clone that fails at once is seen within 50 ms: failover stays fast */
    assert_int_equal(replay(10, 0, &late, &gap), 1);
    assert_true(late <= 50);
    /* doubling: a 1 s task in 5 polls, anything seen at most 2x late */
    assert_int_equal(replay(1000, 0, &late, &gap), 5);
    for (long t = 60; t <= 3600 * 1000L; t = t * 5 / 4) {
        replay(t, 0, &late, &gap);
        if (late > t + 50 || late > 30000)
            fail_msg("task %ld ms: %ld ms late", t, late);
    }
    /* however long the wait, no gap longer than 30 s */
    int n = replay(4 * 3600 * 1000L, 0, &late, &gap);
    assert_int_equal(gap, 30000);
    assert_true(n <= 4 * 3600 / 30 + 12);
}

static void test_known_kind(void **state)
{
    (void)state;
    long late, gap;
    /* as long as expected: one look under a second (a resize), two under
     * 4 s (a start), at most 4 for a clone of up to 16 s x 4 ... */
    assert_int_equal(replay(500, 500, &late, &gap), 1);
    assert_int_equal(late, 0);
    assert_int_equal(replay(1500, 1500, &late, &gap), 2);
    assert_int_equal(replay(41000, 41000, &late, &gap), 4);
    assert_int_equal(late, 0);
    /* ... and at a fast time scale one look right at a 30 ms task's end */
    assert_int_equal(replay(30, 30, &late, &gap), 1);
    /* a creation of 40 s clone + 1.5 s start + 0.5 s resize: 7 polls, under
     * 2 per 10 s of task time (a once-a-second client: 42) */
    assert_int_equal(replay(41000, 41000, &late, &gap) + replay(1500, 1500, &late, &gap) +
                         replay(500, 500, &late, &gap),
                     7);
    /* long tasks: at most one poll per 30 s, plus the approach */
    for (long t = 60000; t <= 3600 * 1000L; t += 60000) {
        int n = replay(t, t, &late, &gap);
        if (n > t / 30000 + 5 || late)
            fail_msg("task %ld ms: %d polls, %ld ms late", t, n, late);
    }
}

static void test_known_kind_off(void **state)
{
    (void)state;
    long late, gap;
    /* 20% longer than expected: seen within a quarter of its time, in a few
     * more polls; 20% shorter: seen when it was expected */
    for (long t = 2000; t <= 1200000; t = t * 5 / 4) {
        int n = replay(t, t * 5 / 6, &late, &gap);
        if (late > t / 4 + 10 || n > (t < 120000 ? 12 : t / 30000 + 12))
            fail_msg("task %ld ms expected %ld: %d polls, %ld ms late", t, t * 5 / 6, n, late);
        replay(t, t * 6 / 5, &late, &gap);
        if (late > t / 5 + 10 && late > 30000)
            fail_msg("task %ld ms expected %ld: %ld ms late", t, t * 6 / 5, late);
    }
    /* far shorter than expected (a failure, a quiet node): a failure in the
     * first second is seen within it, later ends at most 3x late */
    for (long t = 10; t <= 600000; t = t * 3 / 2) {
        replay(t, 1200000, &late, &gap);
        if ((t < 1000 && t + late > 1000) || (t >= 1000 && late > 3 * t))
            fail_msg("task %ld ms expected 1200 s: %ld ms late", t, late);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_kind),
        cmocka_unit_test(test_known_kind),
        cmocka_unit_test(test_known_kind_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
