/* snapshot.c's pure parts: the snapshot name rule (PVE's configid, the
 * reserved names) and the retention choice ([snapshots] keep, max_age):
 * only proxd's complete snapshots, oldest first, ties of snaptime by the
 * parent chain, the newest always kept. No network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/snapshot.h"

static void test_names(void **state)
{
    (void)state;
    char why[128];
    const char *good[] = {"ab", "Before-upgrade", "s_1", "x0123456789012345678901234567890123456"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_true(snap_name_ok(good[i], why, sizeof why));
    const char *bad[] = {"",
                         "a",
                         "1abc",
                         "-ab",
                         "a b",
                         "a/b",
                         "current",
                         "pending",
                         "PENDING",
                         "a.b",
                         "x01234567890123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(snap_name_ok(bad[i], why, sizeof why));
    assert_true(snap_name_ok("Current", why, sizeof why)); /* only "current" is reserved */
}

static struct snap_info mk(const char *name, const char *parent, int64_t t, bool proxd)
{
    struct snap_info s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "%s", name);
    snprintf(s.parent, sizeof s.parent, "%s", parent);
    s.snaptime = t;
    s.proxd = proxd;
    return s;
}

static void test_keep(void **state)
{
    (void)state;
    struct proxd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.snap_keep = 2;
    /* listed out of order; s1..s4 made in one second (ties: the parent chain) */
    struct snap_info s[] = {mk("s3", "s2", 100, true), mk("hand", "s4", 90, false),
                            mk("s1", "", 100, true), mk("s4", "s3", 100, true),
                            mk("s2", "s1", 100, true)};
    const struct snap_info *out[5];
    size_t n = snap_retention(&cfg, s, 5, 1000, out);
    assert_int_equal(n, 2);
    assert_string_equal(out[0]->name, "s1");
    assert_string_equal(out[1]->name, "s2");
    /* a half-made snapshot is neither counted nor chosen */
    snprintf(s[2].state, sizeof s[2].state, "prepare");
    n = snap_retention(&cfg, s, 5, 1000, out);
    assert_int_equal(n, 1);
    assert_string_equal(out[0]->name, "s2");
    cfg.snap_keep = 0;
    assert_int_equal(snap_retention(&cfg, s, 5, 1000, out), 0);
}

static void test_max_age(void **state)
{
    (void)state;
    struct proxd_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.snap_max_age_s = 3600;
    struct snap_info s[] = {mk("old1", "", 1000, true), mk("old2", "old1", 2000, true),
                            mk("new", "old2", 9000, true), mk("foreign", "new", 500, false)};
    const struct snap_info *out[4];
    size_t n = snap_retention(&cfg, s, 4, 9100, out);
    assert_int_equal(n, 2);
    assert_string_equal(out[0]->name, "old1");
    assert_string_equal(out[1]->name, "old2");
    /* all of proxd's are old: the newest stays */
    n = snap_retention(&cfg, s, 4, 100000, out);
    assert_int_equal(n, 2);
    assert_string_equal(out[1]->name, "old2");
    /* both rules: keep 1 and max_age */
    cfg.snap_keep = 1;
    n = snap_retention(&cfg, s, 4, 5000, out);
    assert_int_equal(n, 2);
    /* none of proxd's: nothing */
    struct snap_info f[] = {mk("a", "", 1, false), mk("b", "a", 2, false)};
    assert_int_equal(snap_retention(&cfg, f, 2, 100000, out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_keep),
        cmocka_unit_test(test_max_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
