/* Pure unit tests of the task poll schedule (pve_task_poll_delay): how many
 * status polls a wait costs and how late the end of a task is noticed, for
 * short and long tasks, with and without a learned expectation; and of the
 * end of a clone estimated from its log's progress lines (pve_eta_*,
 * pve_task_next_delay). No network. */
#include "pvetest.h"

#include <math.h>
#include <stdlib.h>

#include "pve/pve_int.h"

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
    /* the first look after 250 ms (a Proxmox task forks a worker and takes
     * locks first), then doubling: a 1 s task in 3 polls, anything seen at
     * most its length + 250 ms late */
    assert_int_equal(replay(10, 0, &late, &gap), 1);
    assert_int_equal(late, 240);
    assert_int_equal(replay(1000, 0, &late, &gap), 3);
    for (long t = 260; t <= 3600 * 1000L; t = t * 5 / 4) {
        replay(t, 0, &late, &gap);
        if (late > t + 250 || late > 30000)
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
    /* as long as expected: one look under 2 s (a resize, a start), at most
     * 4 for a clone of up to 2 s x 3 x 3 x 3 ... */
    assert_int_equal(replay(500, 500, &late, &gap), 1);
    assert_int_equal(late, 0);
    assert_int_equal(replay(1500, 1500, &late, &gap), 1);
    assert_int_equal(replay(41000, 41000, &late, &gap), 4);
    assert_int_equal(late, 0);
    /* ... and at a fast time scale one look right at a 30 ms task's end */
    assert_int_equal(replay(30, 30, &late, &gap), 1);
    /* a creation of 40 s clone + 1.5 s start + 0.5 s resize: 6 polls, under
     * 2 per 10 s of task time (a once-a-second client: 42) */
    assert_int_equal(replay(41000, 41000, &late, &gap) + replay(1500, 1500, &late, &gap) +
                         replay(500, 500, &late, &gap),
                     6);
    /* long tasks: at most one poll per 30 s, plus the approach */
    for (long t = 60000; t <= 3600 * 1000L; t += 60000) {
        int n = replay(t, t, &late, &gap);
        if (n > t / 30000 + 5 || late)
            fail_msg("task %ld ms: %d polls, %ld ms late", t, n, late);
    }
}

/* Replay n waits on tasks of one kind through the whole loop, as
 * pve_task_wait_opts runs them: the schedule (from the last answer), the
 * look (sent, answered by the node half a round trip later, back after
 * rtt), what each wait teaches in send times (pve_task_learned) and the
 * expectation it leaves for the next (pve_expect_next; the first
 * observation is taken as it is). Task i takes len(i) ms. Returns the
 * looks per task over the waits from `from` on; *late: their mean
 * lateness (the answer that told the end, after the end) in ms. */
static double series(long (*len)(int), int n, int from, long rtt, double *late)
{
    double expect = 0, lat = 0;
    long looks = 0;
    for (int i = 0; i < n; i++) {
        long task = len(i), t = 0, prev = 0, sent = 0, last_running = 0, e = (long)expect;
        int polls = 0;
        for (;;) {
            prev = pve_task_poll_delay(t, prev, e);
            sent = t + prev;
            t = sent + rtt;
            polls++;
            if (sent + rtt / 2 >= task)
                break;
            last_running = sent;
        }
        bool overdue;
        long ms = pve_task_learned(last_running, sent, e, &overdue);
        expect = expect > 0 ? pve_expect_next(expect, ms, overdue) : (double)ms;
        if (i >= from) {
            looks += polls;
            lat += (double)(t - task);
        }
    }
    *late = lat / (n - from);
    return (double)looks / (n - from);
}

/* a start: 1.5 s and up to 120 ms more (the node's tick), in no order */
static long start_len(int i)
{
    return 1500 + (i * 7919L) % 121;
}

/* a kind whose length varies by a third */
static long varied_len(int i)
{
    return 1500 + (i * 7919L) % 501;
}

/* a longer kind: 3 to 6 s */
static long long_len(int i)
{
    return 3000 + (i * 7919L) % 3001;
}

/* a short kind: 400 ms */
static long short_len(int i)
{
    (void)i;
    return 400;
}

/* a 1.8 s kind, the 200th held up for 30 s (a busy node), 2.2 s after it */
static long held_len(int i)
{
    return i < 200 ? 1800 : i == 200 ? 30000 : 2200;
}

/* a kind that gets twice as fast after the 100th */
static long faster_len(int i)
{
    return i < 100 ? 1500 : 750;
}

/* Tasks of a kind one after another: the first look at a kind that
 * learned its length mostly sees the end. It aimed at an average of ends
 * and came before the end every other time (2.0 looks a start, seen 1.9
 * a start against pvesim at time scale 1): now at most 1.5, for at most
 * ~5% of the task's length later; and a kind that gets faster is followed. */
static void test_known_kind_series(void **state)
{
    (void)state;
    double late;
    double looks = series(start_len, 400, 20, 0, &late);
    if (looks > 1.5 || late > 100)
        fail_msg("starts: %.2f looks a task, %.0f ms late", looks, late);
    looks = series(varied_len, 400, 20, 0, &late);
    if (looks > 1.6 || late > 250)
        fail_msg("varied: %.2f looks a task, %.0f ms late", looks, late);
    /* a longer kind: its first look comes at 2 s whatever it expects, its
     * approach in steps of 3x; as before (2.02 looks, 1.46 s late): an
     * overrun that raised its expectation at once too, as a short kind's
     * does, had the next runs seen later (1.61 s), for no look fewer */
    looks = series(long_len, 400, 20, 0, &late);
    if (looks > 2.1 || late > 1500)
        fail_msg("longer: %.2f looks a task, %.0f ms late", looks, late);
    /* a round trip of 60 ms, 150 ms: what a wait learns is counted in send
     * times; counted in answers, a round trip was added to each
     * observation and the expectation climbed to ~9 round trips (228 ms
     * late at 60 ms, ~1 s at 150) */
    looks = series(short_len, 400, 20, 60, &late);
    if (looks > 1.5 || late > 60 + 60)
        fail_msg("400 ms, 60 ms away: %.2f looks a task, %.0f ms late", looks, late);
    looks = series(short_len, 400, 20, 150, &late);
    if (looks > 1.5 || late > 150 + 100)
        fail_msg("400 ms, 150 ms away: %.2f looks a task, %.0f ms late", looks, late);
    looks = series(start_len, 400, 20, 150, &late);
    if (looks > 1.5 || late > 150 + 100)
        fail_msg("starts 150 ms away: %.2f looks a task, %.0f ms late", looks, late);
    /* one run held up for 30 s, the next a little slower than before: the
     * expectation is raised at most twice over (3.6 s), and they are seen
     * 1.6 s late on average; raised to 30 s, they were looked at after
     * 2 s and then 8 s (steps of 3x): 5.8 s late */
    looks = series(held_len, 240, 201, 0, &late);
    if (late > 2500)
        fail_msg("after a hold-up: %.2f looks a task, %.0f ms late", looks, late);
    /* twice as fast from the 100th: seen late at first (at the old
     * length, 750 ms), then within 150 ms from the 130th on */
    looks = series(faster_len, 200, 130, 0, &late);
    if (looks > 1.6 || late > 150)
        fail_msg("faster: %.2f looks a task, %.0f ms late", looks, late);
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
     * first 2 s is seen within them, later ends at most 3x late */
    for (long t = 10; t <= 600000; t = t * 3 / 2) {
        replay(t, 1200000, &late, &gap);
        if ((t < 2000 && t + late > 2000) || (t >= 2000 && late > 3 * t))
            fail_msg("task %ld ms expected 1200 s: %ld ms late", t, late);
    }
}

/* ---- a clone's log ---------------------------------------------------------- */

static void test_progress_lines(void **state)
{
    (void)state;
    double p = -1;
    /* qemu-img convert as qemu-server prints it, and a drive mirror's */
    assert_true(pve_progress_pct("transferred 1.0 GiB of 10.0 GiB (10.00%)", &p));
    assert_true(fabs(p - 10) < 1e-9);
    assert_true(pve_progress_pct("transferred 0.0 B of 32.0 GiB (0.00%)", &p));
    assert_true(p == 0);
    assert_true(pve_progress_pct("drive-scsi0: transferred 1.2 GiB of 32.0 GiB (3.75%) in 5s", &p));
    assert_true(fabs(p - 3.75) < 1e-9);
    /* not progress: other lines, a migration's VM state, nonsense */
    const char *no[] = {"create full clone of drive scsi0 (local-lvm:base-8000-disk-0)",
                        "TASK OK",
                        "migration active, transferred 1.0 GiB of 2.0 GiB VM-state, 1.0 GiB/s",
                        "transferred 1 of 2 (abc%)",
                        "transferred 1 of 2 (120.00%)",
                        "transferred 1 of 2 (-1.00%)",
                        "transferred 1 of 2 (5.00%",
                        ""};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (pve_progress_pct(no[i], &p))
            fail_msg("took '%s' for progress", no[i]);
}

/* A copy as pvesim and qemu-img print it: setup_ms before the copy starts,
 * then a line at every whole percent. Up to two disks one after the other;
 * from speedup_at_ms on (0: never) the copy goes twice as fast (a copy
 * beside it on the same storage ended). */
struct copy {
    long setup_ms, disk_ms[2];
    int disks;
    long speedup_at_ms;
    long slowdown_at_ms; /* from then on half as fast (a copy beside it began) */
    long fail_at_ms;     /* the task ends there (an error in the middle) */
};

/* copy time done by wall time t (the speedup counts double) */
static double copy_done(const struct copy *c, long t)
{
    double w = (double)(t - c->setup_ms);
    if (w <= 0)
        return 0;
    if (c->speedup_at_ms && t > c->speedup_at_ms)
        w += (double)(t - (c->speedup_at_ms > c->setup_ms ? c->speedup_at_ms : c->setup_ms));
    if (c->slowdown_at_ms && t > c->slowdown_at_ms)
        w -= (double)(t - (c->slowdown_at_ms > c->setup_ms ? c->slowdown_at_ms : c->setup_ms)) / 2;
    return w;
}

static long copy_end(const struct copy *c)
{
    long t = c->setup_ms;
    double need = (double)(c->disk_ms[0] + (c->disks > 1 ? c->disk_ms[1] : 0));
    while (copy_done(c, t) < need)
        t++;
    return c->fail_at_ms && c->fail_at_ms < t ? c->fail_at_ms : t;
}

/* the last progress line printed by time t, or -1 before the first */
static double copy_line(const struct copy *c, long t)
{
    double w = copy_done(c, t);
    if (t < c->setup_ms)
        return -1;
    if (c->disks > 1 && w >= c->disk_ms[0])
        w -= (double)c->disk_ms[0];
    else
        w = w < c->disk_ms[0] ? w : (double)c->disk_ms[0];
    long d = c->disks > 1 && copy_done(c, t) >= c->disk_ms[0] ? c->disk_ms[1] : c->disk_ms[0];
    double p = floor(w * 100 / (double)d);
    return p > 100 ? 100 : p;
}

/* pve_task_wait's loop for a clone: sleep, read the log (the last
 * progress line), until a look comes at or after the end */
static long max_gap; /* the longest sleep of the last replay_clone */

static int replay_clone(const struct copy *c, long expect_ms, long *late)
{
    struct pve_eta e = {0};
    long t = 0, prev = 0, end = copy_end(c);
    max_gap = 0;
    for (int looks = 1;; looks++) {
        prev = pve_task_next_delay(true, t, prev, expect_ms, &e);
        assert_true(prev > 0);
        if (prev > max_gap)
            max_gap = prev;
        t += prev;
        if (t >= end) {
            *late = t - end;
            return looks;
        }
        double p = copy_line(c, t);
        if (p >= 0)
            pve_eta_note(&e, t, p);
    }
}

static void test_clone_first_of_its_kind(void **state)
{
    (void)state;
    long late;
    /* the first clone of a template (nothing learned): 41 s, as the
     * benchmark's at real speed: 5 looks at most, seen within 5% */
    struct copy c = {.setup_ms = 300, .disk_ms = {40700}, .disks = 1};
    int n = replay_clone(&c, 0, &late);
    if (n > 5 || late > 41000 / 20)
        fail_msg("41 s clone: %d looks, %ld ms late", n, late);
    /* any length from 5 s to an hour: a few looks, seen within 10% (a
     * once-a-second client: one look per second) */
    for (long d = 5000; d <= 3600 * 1000L; d = d * 3 / 2) {
        struct copy k = {.setup_ms = 500, .disk_ms = {d}, .disks = 1};
        long end = copy_end(&k);
        n = replay_clone(&k, 0, &late);
        if (late > end / 10 + 1000 || n > 6 + end / 30000)
            fail_msg("%ld ms clone: %d looks, %ld ms late", end, n, late);
    }
    /* a clone that fails at once is seen within 1 s (failover stays fast) */
    struct copy f = {.setup_ms = 200, .disk_ms = {1}, .disks = 1};
    replay_clone(&f, 0, &late);
    assert_true(copy_end(&f) + late <= 1000);
}

static void test_clone_changes(void **state)
{
    (void)state;
    long late;
    /* learned 41 s, and it takes that: the first reading agrees, the next
     * look is at the end: 2 looks, seen within 5% */
    struct copy c = {.setup_ms = 300, .disk_ms = {40700}, .disks = 1};
    int n = replay_clone(&c, 41000, &late);
    if (n > 2 || late > 2050)
        fail_msg("as learned: %d looks, %ld ms late", n, late);
    /* the copy beside it ends and this one speeds up: the end comes far
     * earlier than learned; a speedup after the last look is not seen
     * before the end the readings foretold, but not after it either */
    for (long at = 2000; at < 40000; at += 1000) {
        struct copy s = {.setup_ms = 300, .disk_ms = {40700}, .disks = 1, .speedup_at_ms = at};
        n = replay_clone(&s, 41000, &late);
        if (copy_end(&s) + late > 41000 * 21 / 20 || n > 5)
            fail_msg("sped up at %ld (end %ld): %d looks, %ld ms late", at, copy_end(&s), n, late);
    }
    /* two disks: the second starts from 0% again; the estimate starts
     * over and the end is seen within 25% */
    struct copy two = {.setup_ms = 300, .disk_ms = {20000, 20000}, .disks = 2};
    n = replay_clone(&two, 0, &late);
    if (late > copy_end(&two) / 4 || n > 8)
        fail_msg("two disks: %d looks, %ld ms late", n, late);
    /* no progress lines at all (a linked clone, a container): the plain
     * schedule, first look within 1 s */
    struct pve_eta none = {0};
    assert_int_equal(pve_task_next_delay(true, 0, 0, 0, &none), 1000);
    assert_int_equal(pve_task_next_delay(true, 0, 0, 300, &none), 300);
    assert_int_equal(pve_task_next_delay(true, 1000, 1000, 0, &none), 2000);
}

static void test_clone_trusted(void **state)
{
    (void)state;
    long late;
    /* learned 41 s, but a copy beside it halves its speed from the start
     * or on the way: the readings disagree with what was learned, the
     * steps of 3x the time waited find the end within 10% */
    for (long at = 300; at < 40000; at += 2300) {
        struct copy s = {.setup_ms = 300, .disk_ms = {40700}, .disks = 1, .slowdown_at_ms = at};
        int n = replay_clone(&s, 41000, &late);
        if (late > copy_end(&s) / 10 || n > 7)
            fail_msg("slowed at %ld (end %ld): %d looks, %ld ms late", at, copy_end(&s), n, late);
    }
    /* the first clone of its kind, an hour long: once the readings pin the
     * end down, sleeps of up to 60 s (not 30): half the looks */
    struct copy hour = {.setup_ms = 500, .disk_ms = {3600 * 1000L}, .disks = 1};
    int n = replay_clone(&hour, 0, &late);
    if (n > 8 + 3600 / 60 || max_gap > 60000 || late > 60000)
        fail_msg("an hour: %d looks, %ld ms late, gaps up to %ld ms", n, late, max_gap);
    /* a copy that fails in the middle is seen within 60 s of its failure,
     * or by the end the readings foretold if that comes first */
    for (long at = 2000; at < 40000; at += 3700) {
        struct copy f = {.setup_ms = 300, .disk_ms = {40700}, .disks = 1, .fail_at_ms = at};
        replay_clone(&f, 41000, &late);
        if (late > 60000 || at + late > 41000 * 21 / 20)
            fail_msg("failed at %ld: seen %ld ms late", at, late);
    }
    for (long at = 60000; at < 3600 * 1000L; at = at * 3 / 2) {
        struct copy f = {.setup_ms = 500, .disk_ms = {3600 * 1000L}, .disks = 1, .fail_at_ms = at};
        replay_clone(&f, 0, &late);
        if (late > 60000)
            fail_msg("an hour's copy failed at %ld: seen %ld ms late", at, late);
    }
    /* the bounds a reading allows: 2% after 1 s is an end by 50 s (the
     * copy may have begun just before the reading: no earlier bound); 38%
     * at 16 s after 2% at 1 s, between 40.7 and 42.6 s */
    struct pve_eta e = {0};
    long lo, hi;
    assert_false(pve_eta_range(&e, &lo, &hi));
    pve_eta_note(&e, 1000, 2);
    assert_true(pve_eta_range(&e, &lo, &hi));
    assert_true(lo == 1000 && hi >= 50000 && hi <= 50001);
    pve_eta_note(&e, 16000, 38);
    assert_true(pve_eta_range(&e, &lo, &hi));
    if (lo < 40600 || lo > 40800 || hi < 42500 || hi > 42700)
        fail_msg("38%% at 16 s: %ld..%ld", lo, hi);
}

static void test_eta_estimate(void **state)
{
    (void)state;
    struct pve_eta e = {0};
    assert_int_equal(pve_eta_end(&e), 0);
    /* 0% read: no estimate yet; 10% after 10 s: no later than 100 s */
    pve_eta_note(&e, 2000, 0);
    assert_int_equal(pve_eta_end(&e), 0);
    pve_eta_note(&e, 12000, 10);
    long end = pve_eta_end(&e);
    assert_true(end >= 100000 && end <= 125000); /* 2 s + 90 x (10 s / 9%) */
    /* a repeated reading adds nothing; a lower one is the next disk */
    pve_eta_note(&e, 13000, 10);
    assert_int_equal(pve_eta_end(&e), end);
    pve_eta_note(&e, 14000, 3);
    assert_int_equal(e.n, 1);
    assert_true(pve_eta_end(&e) >= 14000 * 100 / 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_kind),      cmocka_unit_test(test_known_kind),
        cmocka_unit_test(test_known_kind_series), cmocka_unit_test(test_known_kind_off),
        cmocka_unit_test(test_progress_lines),    cmocka_unit_test(test_clone_first_of_its_kind),
        cmocka_unit_test(test_clone_changes),     cmocka_unit_test(test_clone_trusted),
        cmocka_unit_test(test_eta_estimate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
