/* Placement by expected clone finish time (place.c), with a driven clock:
 * bandwidth learned from shared copies, queued bytes, ties, an uneven
 * fleet filled in proportion to its nodes' speeds. No network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "core/place.h"

#define GiB (1024LL * 1024 * 1024)
#define MiB (1024LL * 1024)

static void order(place *p, int n, int64_t bytes, int *out)
{
    struct place_cand c[8];
    for (int i = 0; i < n; i++)
        c[i] = (struct place_cand){.node = i, .bytes = bytes, .free_mem = (int64_t)(10 - i) * GiB};
    place_order(p, c, n);
    for (int i = 0; i < n; i++)
        out[i] = c[i].node;
}

static void test_equal_nodes_spread_by_queue(void **state)
{
    (void)state;
    place *p = place_new(3);
    int o[3];
    /* nothing known: most free memory first (node 0) */
    order(p, 3, 20 * GiB, o);
    assert_int_equal(o[0], 0);
    /* each placement queues bytes: the next goes elsewhere, round the fleet */
    char id[8];
    int count[3] = {0};
    for (int i = 0; i < 30; i++) {
        order(p, 3, 20 * GiB, o);
        snprintf(id, sizeof id, "j%d", i);
        place_assign(p, id, o[0], 20 * GiB);
        count[o[0]]++;
    }
    assert_int_equal(count[0], 10);
    assert_int_equal(count[1], 10);
    assert_int_equal(count[2], 10);
    assert_int_equal(place_queued(p, 1), 200 * GiB);
    /* forgetting (failover, end) gives the bytes back */
    place_forget(p, "j1", 0);
    place_forget(p, "nosuchjob", 0);
    assert_int_equal(place_queued(p, 0) + place_queued(p, 1) + place_queued(p, 2), 580 * GiB);
    place_free(p);
}

/* Two copies share a node for a while: the sample divides by the share. */
static void test_bandwidth_from_shared_copies(void **state)
{
    (void)state;
    place *p = place_new(2);
    /* node 0 moves 500 MiB/s in all. a: 10 GiB from t=0; b: 10 GiB from t=0.
     * Both at 250 MiB/s: both end at 40.96 s. */
    place_assign(p, "a", 0, 10 * GiB);
    place_assign(p, "b", 0, 10 * GiB);
    place_copy_begin(p, "a", 1000);
    place_copy_begin(p, "b", 1000);
    place_copy_end(p, "a", true, 1000 + 40960);
    place_copy_end(p, "b", true, 1000 + 40960);
    double bw = place_bandwidth(p, 0);
    assert_true(bw > 499 * MiB && bw < 501 * MiB);
    /* c alone then d joins: c 10 GiB, alone 10 s (5000 MiB), then shared
     * with d; c's remaining 5240 MiB at 250 MiB/s takes 20.96 s */
    place_assign(p, "c", 1, 10 * GiB);
    place_assign(p, "d", 1, 10 * GiB);
    place_copy_begin(p, "c", 0);
    place_copy_begin(p, "d", 10000);
    place_copy_end(p, "c", true, 30960);
    bw = place_bandwidth(p, 1);
    assert_true(bw > 499 * MiB && bw < 501 * MiB);
    /* a failed copy is no sample, and its node keeps its estimate */
    place_copy_end(p, "d", false, 31000);
    assert_true(place_bandwidth(p, 1) > 499 * MiB && place_bandwidth(p, 1) < 501 * MiB);
    assert_int_equal(place_queued(p, 1), 0);
    place_free(p);
}

/* Nodes of 1000/500/500/250/250 MiB/s: once measured, 200 placements go in
 * proportion (80/40/40/20/20), and the slow nodes are not the first pick
 * for a lone creation. */
static void test_uneven_fleet(void **state)
{
    (void)state;
    const double speed[5] = {1000, 500, 500, 250, 250};
    place *p = place_new(5);
    char id[16];
    for (int i = 0; i < 5; i++) { /* one measured copy each */
        snprintf(id, sizeof id, "m%d", i);
        place_assign(p, id, i, 10 * GiB);
        place_copy_begin(p, id, 0);
        place_copy_end(p, id, true, (int64_t)(10240.0 / speed[i] * 1000));
    }
    int o[5], count[5] = {0};
    order(p, 5, 20 * GiB, o);
    assert_int_equal(o[0], 0);
    assert_true(o[3] >= 3 && o[4] >= 3);
    for (int i = 0; i < 200; i++) {
        order(p, 5, 20 * GiB, o);
        snprintf(id, sizeof id, "j%d", i);
        place_assign(p, id, o[0], 20 * GiB);
        count[o[0]]++;
    }
    for (int i = 0; i < 5; i++)
        if (count[i] < (int)(speed[i] / 12.5) - 2 || count[i] > (int)(speed[i] / 12.5) + 2)
            fail_msg("node %d: %d placements for %.0f MiB/s", i, count[i], speed[i]);
    place_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_nodes_spread_by_queue),
        cmocka_unit_test(test_bandwidth_from_shared_copies),
        cmocka_unit_test(test_uneven_fleet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
