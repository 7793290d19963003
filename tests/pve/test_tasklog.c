/* Pure unit tests: a task log page read as a stream (pve_log_parse), and
 * against the reading it replaced (a jansson tree: every element of "data"
 * a line, its "t" the text). No network. */
#define _GNU_SOURCE
#include "pvetest.h"

#include <stdint.h>
#include <stdlib.h>

#include "pve/pve_int.h"

/* The page as lines joined by '|', or NULL when it failed. */
static char *page(const char *text, size_t len, int64_t *total, int *rc)
{
    json_t *lines = json_array();
    json_array_append_new(lines, json_string("before")); /* an earlier page's */
    struct pve_error e;
    *total = -1;
    *rc = pve_log_parse(text, len, lines, total, &e);
    char *out = NULL;
    if (*rc == 0) {
        struct buf b = BUF_INIT(BUF_UNLIMITED);
        size_t i;
        json_t *l;
        json_array_foreach(lines, i, l) buf_printf(&b, "%s%s", i ? "|" : "", json_string_value(l));
        out = strdup(buf_str(&b));
        buf_release(&b);
    } else {
        assert_int_equal(*rc, PVE_E_OTHER);
        assert_string_equal(e.message, "answer is not a JSON object");
        assert_int_equal(json_array_size(lines), 1); /* nothing of a failed page */
    }
    json_decref(lines);
    return out;
}

static void expect(const char *text, const char *want, int64_t want_total)
{
    int64_t total;
    int rc;
    char *got = page(text, strlen(text), &total, &rc);
    if (!want) {
        if (got)
            fail_msg("'%s': read as '%s', expected a failure", text, got);
        return;
    }
    if (!got)
        fail_msg("'%s': failed, expected '%s'", text, want);
    if (strcmp(got, want) != 0 || total != want_total)
        fail_msg("'%s': '%s' total %lld, expected '%s' total %lld", text, got, (long long)total,
                 want, (long long)want_total);
    free(got);
}

static void test_log_pages(void **state)
{
    (void)state;
    expect("{\"data\":[{\"n\":1,\"t\":\"a\"},{\"n\":2,\"t\":\"TASK OK\"}],\"total\":2}",
           "before|a|TASK OK", 2);
    expect("{\"data\":[]}", "before", 0);
    expect(" {\"total\":7, \"data\":[{\"t\":\"x\\u00e9\\\"\"}]} ", "before|x\xc3\xa9\"", 7);
    /* lines without a text are lines all the same */
    expect("{\"data\":[{\"n\":1},{\"t\":null},{\"t\":5},{\"t\":{\"a\":\"b\"}},1,null,[\"t\"],"
           "{\"t\":\"a\",\"t\":\"b\"},{\"t\":\"a\",\"t\":[1]},{\"x\":{\"t\":\"no\"},\"t\":\"y\"}]}",
           "before||||||||b||y", 0);
    /* "total" an integer or 0; "data" that is no array gives no line */
    expect("{\"data\":[{\"t\":\"a\"}],\"total\":2.5}", "before|a", 0);
    expect("{\"data\":[{\"t\":\"a\"}],\"total\":\"3\"}", "before|a", 0);
    expect("{\"data\":[{\"t\":\"a\"}],\"total\":3,\"total\":[4]}", "before|a", 0);
    expect("{\"data\":null,\"total\":1}", "before", 1);
    expect("{\"data\":{\"t\":\"a\"}}", "before", 0);
    expect("{\"message\":\"x\"}", "before", 0);
    /* the last "data" counts, as in a tree */
    expect("{\"data\":[{\"t\":\"a\"}],\"data\":[{\"t\":\"b\"},{\"t\":\"c\"}]}", "before|b|c", 0);
    expect("{\"data\":[{\"t\":\"a\"}],\"data\":null}", "before", 0);
    expect("{\"data\":[{\"t\":\"a\"}],\"errors\":{\"data\":[{\"t\":\"no\"}]}}", "before|a", 0);
    /* not JSON, or what jansson refuses */
    static const char *const bad[] = {
        "",
        " ",
        "[]",
        "42",
        "null",
        "{\"data\":[{\"t\":\"a\"}]",
        "{\"data\":[{\"t\":\"a\"},]}",
        "{\"data\":[]} x",
        "{\"data\":[]}{}",
        "{\"data\":[{\"t\":\"a\\u0000\"}]}",
        "{\"data\":[{\"t\":\"\xc0\x80\"}]}",
        "{\"data\":[{\"t\":\"\xed\xa0\x80\"}]}",
        "{\"data\":[],\"total\":9223372036854775808}",
        "{\"data\":[],\"total\":1e400}",
        "{\"data\":[]} // c",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        expect(bad[i], NULL, 0);
    expect("{\"data\":[],\"total\":-9223372036854775808}", "before", INT64_MIN);
    /* nesting: jansson's 2048 values deep (the envelope the first), a
     * scalar counted as a container is */
    for (int k = 0; k < 4; k++) {
        int arrays = k < 2 ? 2045 + k : 2044 + (k - 2); /* empty, then with a scalar */
        struct buf deep = BUF_INIT(BUF_UNLIMITED);
        buf_adds(&deep, "{\"data\":[{\"x\":");
        for (int i = 0; i < arrays; i++)
            buf_adds(&deep, "[");
        if (k >= 2)
            buf_adds(&deep, "1");
        for (int i = 0; i < arrays; i++)
            buf_adds(&deep, "]");
        buf_adds(&deep, ",\"t\":\"deep\"}]}");
        expect(buf_str(&deep), k % 2 ? NULL : "before|deep", 0);
        buf_release(&deep);
    }
}

/* ---- against a JSON tree ---------------------------------------------------------- */

/* The reading log_page did before: NULL when the tree fails. */
static char *tree_page(const char *text, size_t len, int64_t *total)
{
    if (memchr(text, '\0', len)) /* no JSON text holds one (jansson lets some pass) */
        return NULL;
    json_t *env = json_loadb(text, len, 0, NULL);
    if (!json_is_object(env)) {
        json_decref(env);
        return NULL;
    }
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&b, "before");
    json_t *d = json_object_get(env, "data"), *e;
    size_t i;
    json_array_foreach(d, i, e)
    {
        const char *s = json_string_value(json_object_get(e, "t"));
        buf_printf(&b, "|%s", s ? s : "");
    }
    *total = json_integer_value(json_object_get(env, "total"));
    json_decref(env);
    char *out = strdup(buf_str(&b));
    buf_release(&b);
    return out;
}

static const char seed_text[] =
    "{\"data\":[{\"n\":1,\"t\":\"create full clone of drive scsi0 (local-lvm:base-9000-disk-0)\"},"
    "{\"n\":2,\"t\":\"transferred 0.0 B of 10.0 GiB (0.00%)\"},"
    "{\"n\":3,\"t\":\"transferred 1.0 GiB of 10.0 GiB (10.00%)\"},"
    "{\"n\":4,\"t\":\"caf\\u00e9 \\\"q\\\" \\\\ \xc3\xa9\"},{\"n\":5,\"t\":\"TASK OK\"}],"
    "\"total\":5,\"success\":1,\"message\":null}";

/* Random edits of a real-looking page, read both ways: the same lines and
 * total, or both fail (a fault of shape does not exist here: any text the
 * tree takes as an object has lines). */
static void test_log_matches_tree(void **state)
{
    (void)state;
    static const char *const words[] = {"true",
                                        "null",
                                        "1e400",
                                        "-0",
                                        "\"\"",
                                        "{}",
                                        "[]",
                                        "\"t\"",
                                        "\"data\"",
                                        "\"total\":",
                                        "\\u0000",
                                        "99999999999999999999",
                                        "\xc3\xa9",
                                        "\xc0\x80",
                                        "\xed\xa0\x80",
                                        "\\udc00",
                                        "1,",
                                        "null,",
                                        "{\"t\":\"x\"},",
                                        "\"t\":1,",
                                        "\"data\":[],"};
    uint64_t x = 0x243f6a8885a308d3ull;
    char buf[2048];
    int agree_ok = 0, agree_bad = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = t_random_edits(buf, sizeof buf, seed_text, sizeof seed_text - 1, words,
                                    sizeof words / sizeof *words, &x);
        int64_t want_total = 0, total = 0;
        int rc;
        char *want = tree_page(buf, len, &want_total);
        char *got = page(buf, len, &total, &rc);
        if (!want != !got || (want && (strcmp(want, got) != 0 || want_total != total)))
            fail_msg("round %d: stream '%s' (%lld), tree '%s' (%lld): %.*s", round,
                     got ? got : "(failed)", (long long)total, want ? want : "(failed)",
                     (long long)want_total, (int)len, buf);
        want ? agree_ok++ : agree_bad++;
        free(want);
        free(got);
    }
    print_message("agreed: %d read, %d refused\n", agree_ok, agree_bad);
    assert_true(agree_ok > 1000 && agree_bad > 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_pages),
        cmocka_unit_test(test_log_matches_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
