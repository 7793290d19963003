/* util's clock helpers: a timed wait on a cond_init_mono variable with a
 * deadline_in_ms deadline runs on the monotonic clock (a wall-clock step,
 * NTP's or a resumed VM's, neither stretches nor cuts it: the waits of job
 * naps, event streams and the connection pool were on the wall clock). */
#include "harness.h"

#include "common/util.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

static void test_deadline_is_monotonic(void **state)
{
    (void)state;
    struct timespec now, d = deadline_in_ms(0);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t diff = ((int64_t)now.tv_sec - d.tv_sec) * 1000 + (now.tv_nsec - d.tv_nsec) / 1000000;
    assert_true(diff >= 0 && diff < 1000);
}

static void test_timed_wait_lasts_its_time(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    cond_init_mono(&cv);
    pthread_mutex_lock(&mu);
    int64_t t0 = mono_ms();
    struct timespec until = deadline_in_ms(150);
    int rc;
    do /* a spurious wake-up may come early: wait again for the same deadline */
        rc = pthread_cond_timedwait(&cv, &mu, &until);
    while (rc == 0);
    int64_t took = mono_ms() - t0;
    pthread_mutex_unlock(&mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(took >= 140); /* not at once, as a deadline on the other clock would be */
    assert_true(took < 10000);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadline_is_monotonic),
        cmocka_unit_test(test_timed_wait_lasts_its_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
