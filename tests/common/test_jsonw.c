/* common/jsonw: string escaping, integers and times, checked against fixed
 * texts and against what jansson writes for the same values. */
#include "harness.h"

#include "common/jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* jsonw_str of n bytes, as a heap string. */
static char *enc(const char *s, size_t n)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    assert_int_equal(jsonw_str(&b, s, n), BUF_OK);
    return buf_take(&b);
}

static void expect(const char *in, size_t n, const char *want)
{
    char *got = enc(in, n);
    assert_string_equal(got, want);
    /* and it is valid JSON that decodes to a string */
    json_error_t je;
    json_t *v = json_loads(got, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    assert_non_null(v);
    assert_true(json_is_string(v));
    json_decref(v);
    free(got);
}

#define EXPECT(lit, want) expect((lit), sizeof(lit) - 1, (want))

static void test_plain(void **state)
{
    EXPECT("", "\"\"");
    EXPECT("web-1", "\"web-1\"");
    EXPECT("a/b <c> & 'd' \x7f", "\"a/b <c> & 'd' \x7f\"");
}

static void test_quotes_backslashes(void **state)
{
    EXPECT("say \"hi\"", "\"say \\\"hi\\\"\"");
    EXPECT("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    EXPECT("\\\"", "\"\\\\\\\"\"");
}

static void test_control_chars(void **state)
{
    EXPECT("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"");
    EXPECT("\x01\x1f", "\"\\u0001\\u001F\"");
    /* a NUL inside the given bytes is escaped, not an end */
    expect("a\0b", 3, "\"a\\u0000b\"");
}

static void test_utf8_passthrough(void **state)
{
    EXPECT("h\xc3\xa9llo", "\"h\xc3\xa9llo\"");                           /* é, 2 bytes */
    EXPECT("\xe2\x82\xac \xe2\x80\xa8", "\"\xe2\x82\xac \xe2\x80\xa8\""); /* €, U+2028 */
    EXPECT("\xf0\x9f\x96\xa5", "\"\xf0\x9f\x96\xa5\"");                   /* U+1F5A5, 4 bytes */
    EXPECT("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");                   /* U+10FFFF */
}

static void test_invalid_utf8_replaced(void **state)
{
#define FFFD "\xef\xbf\xbd"
    EXPECT("a\x80z", "\"a" FFFD "z\"");                        /* stray continuation */
    EXPECT("\xc0\xaf", "\"" FFFD FFFD "\"");                   /* overlong '/' */
    EXPECT("\xed\xa0\x80", "\"" FFFD FFFD FFFD "\"");          /* surrogate U+D800 */
    EXPECT("\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* above U+10FFFF */
    EXPECT("ab\xe2\x82", "\"ab" FFFD FFFD "\"");               /* cut short at the end */
    EXPECT("\xe2\x82z", "\"" FFFD FFFD "z\"");                 /* cut short in the middle */
    EXPECT("\xff\xfe", "\"" FFFD FFFD "\"");
#undef FFFD
}

/* Every single byte and a sample of pairs: same text as jansson writes for
 * a valid string, valid JSON always. */
static void test_same_as_jansson(void **state)
{
    char s[3];
    for (int a = 1; a < 256; a++) {
        for (int c = 0; c < 256; c += (a < 0x80 ? 255 : 1)) {
            s[0] = (char)a;
            s[1] = (char)c;
            size_t n = c ? 2 : 1;
            char *got = enc(s, n);
            json_t *ref = json_stringn(s, n);
            if (ref) { /* valid UTF-8: byte for byte what jansson writes */
                char *want = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
                assert_string_equal(got, want);
                free(want);
                json_decref(ref);
            }
            json_t *back = json_loads(got, JSON_DECODE_ANY, NULL);
            assert_non_null(back);
            json_decref(back);
            free(got);
        }
    }
}

/* Longer strings (the word-at-a-time path): random mixes of plain ASCII,
 * quotes, backslashes, control characters, UTF-8 and stray bytes at every
 * alignment; same text as jansson for the valid ones, valid JSON always. */
static void test_long_strings(void **state)
{
    static const char *const pieces[] = {"abcdefgh",
                                         "0123456789",
                                         " ",
                                         "\"",
                                         "\\",
                                         "\n",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x96\xa5",
                                         "\xff",
                                         "\x80",
                                         "~",
                                         "/",
                                         "}"};
    const size_t np = sizeof pieces / sizeof pieces[0];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    char s[256];
    for (int round = 0; round < 5000; round++) {
        size_t n = 0;
        while (n < 200) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* mostly plain runs, sometimes a special piece */
            const char *p = pieces[x % 4 ? x % 3 : (x >> 8) % np];
            size_t k = strlen(p);
            if ((x >> 20) % 5 == 0)
                k = 1 + (x >> 24) % k; /* a cut piece: stray bytes */
            memcpy(s + n, p, k);
            n += k;
        }
        size_t len = 1 + (x >> 32) % n;
        char *got = enc(s, len);
        json_t *ref = json_stringn(s, len);
        if (ref) {
            char *want = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
            assert_string_equal(got, want);
            free(want);
            json_decref(ref);
        }
        json_t *back = json_loads(got, JSON_DECODE_ANY, NULL);
        assert_non_null(back);
        json_decref(back);
        free(got);
    }
}

static void test_cap(void **state)
{
    struct buf b = BUF_INIT(8);
    assert_int_equal(jsonw_str(&b, "abcd", 4), BUF_OK); /* 6 bytes fit, 26 would not */
    assert_string_equal(b.data, "\"abcd\"");
    assert_int_equal(jsonw_str(&b, "x", 1), BUF_TOOBIG);
    assert_string_equal(b.data, "\"abcd\""); /* unchanged */
    assert_int_equal(jsonw_raw(&b, ",1", 2), BUF_OK);
    assert_int_equal(jsonw_int(&b, 7), BUF_TOOBIG);
    assert_int_equal(b.len, 8);
    buf_release(&b);
}

static void test_ints(void **state)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    const int64_t v[] = {0, 7, -1, 10, 1024, 999999999, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        buf_reset(&b);
        assert_int_equal(jsonw_int(&b, v[i]), BUF_OK);
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)v[i]);
        assert_string_equal(b.data, want);
    }
    buf_release(&b);
}

/* What the API wrote before jsonw: strftime of gmtime_r, then ".mmmZ". */
static void ref_time(int64_t ms, char *out, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, len, "\"%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03dZ\"", (int)(ms % 1000));
}

static void test_times(void **state)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    assert_int_equal(jsonw_time(&b, 0), BUF_OK);
    assert_int_equal(jsonw_time(&b, -5), BUF_OK);
    assert_string_equal(b.data, "nullnull");
    buf_reset(&b);
    assert_int_equal(jsonw_time(&b, 1795477201123), BUF_OK);
    assert_string_equal(b.data, "\"2026-11-23T23:40:01.123Z\"");
    /* leap days, ends of years and centuries, the epoch's first ms, 9999 */
    const int64_t fixed[] = {1,
                             951782400000,     /* 2000-02-29 */
                             4107542399999,    /* 2100-02-28T23:59:59.999 */
                             4107542400000,    /* 2100-03-01 */
                             1704067199999,    /* 2023-12-31T23:59:59.999 */
                             253402300799999,  /* 9999-12-31T23:59:59.999 */
                             253402300800000}; /* 10000-01-01 */
    char want[64];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        buf_reset(&b);
        assert_int_equal(jsonw_time(&b, fixed[i]), BUF_OK);
        ref_time(fixed[i], want, sizeof want);
        assert_string_equal(b.data, want);
    }
    /* a pseudo-random walk over 1970..2400 */
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t ms = 1 + (int64_t)(x % 13569465600000ull);
        buf_reset(&b);
        assert_int_equal(jsonw_time(&b, ms), BUF_OK);
        ref_time(ms, want, sizeof want);
        assert_string_equal(b.data, want);
    }
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_quotes_backslashes),
        cmocka_unit_test(test_control_chars),
        cmocka_unit_test(test_utf8_passthrough),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_same_as_jansson),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_ints),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
