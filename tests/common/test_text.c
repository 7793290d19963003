/* Text from the network on its way to logs and prints: url_redact (a
 * database URL's password), jsonw_utf8_valid, and log lines in both
 * formats for messages that are not UTF-8 or hold control characters. */
#include "harness.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void redacted(const char *url, const char *want)
{
    char out[256];
    url_redact(url, out, sizeof out);
    assert_string_equal(out, want);
}

static void test_url_redact(void **state)
{
    (void)state;
    redacted("postgresql://proxd:s3cret@db.example:5432/proxd?sslmode=verify-full",
             "postgresql://proxd:***@db.example:5432/proxd?sslmode=verify-full");
    redacted("postgres://proxd:p%40ss:w@h/db", "postgres://proxd:***@h/db");
    redacted("postgresql://proxd@h/db?password=s3cret&sslmode=require",
             "postgresql://proxd@h/db?password=***&sslmode=require");
    redacted("postgresql://h/db?application_name=a&password=x",
             "postgresql://h/db?application_name=a&password=***");
    redacted("postgresql://h/db?xpassword=keep", "postgresql://h/db?xpassword=keep");
    redacted("sqlite:/var/lib/proxd/proxd.db", "sqlite:/var/lib/proxd/proxd.db");
    redacted("postgresql://proxd@h/db", "postgresql://proxd@h/db");
    redacted("mysql://u:pw@h/x", "mysql://u:***@h/x");
    redacted("postgresql://u:p@ss@h/x", "postgresql://u:***@h/x");
    redacted("", "");
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(jsonw_utf8_valid("plain", 5));
    assert_true(jsonw_utf8_valid("\xe2\x82\xac", 3));
    assert_false(jsonw_utf8_valid("\xff", 1));
    assert_false(jsonw_utf8_valid("\xe2\x82", 2));     /* cut short */
    assert_false(jsonw_utf8_valid("\xc0\xaf", 2));     /* overlong */
    assert_false(jsonw_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
}

/* Cutting to a byte count keeps whole characters; scrubbing leaves text
 * jansson takes. */
static void test_utf8_fit_and_scrub(void **state)
{
    (void)state;
    const char *euros = "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"; /* 3 x U+20AC */
    assert_int_equal(jsonw_utf8_fit(euros, 9, 9), 9);
    assert_int_equal(jsonw_utf8_fit(euros, 9, 8), 6);
    assert_int_equal(jsonw_utf8_fit(euros, 9, 7), 6);
    assert_int_equal(jsonw_utf8_fit(euros, 9, 6), 6);
    assert_int_equal(jsonw_utf8_fit(euros, 9, 2), 0);
    assert_int_equal(jsonw_utf8_fit("ab\xff"
                                    "cd",
                                    5, 3),
                     3); /* a stray byte stands alone */
    assert_int_equal(jsonw_utf8_fit("abc", 3, 10), 3);
    char s[] = "a\xe2\x82\xac\xe2\x82z\xff";
    jsonw_utf8_scrub(s, strlen(s));
    assert_string_equal(s, "a\xe2\x82\xac??z?");
    assert_true(jsonw_utf8_valid(s, strlen(s)));
}

/* Log one message to a temporary file in `fmt`; the line, without '\n'. */
static char *logged(enum log_format fmt, const char *msg)
{
    char path[] = "/tmp/proxd-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    log_set_format(fmt);
    log_write(LOG_WARN, "api", "%s", msg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0 && buf[n - 1] == '\n');
    buf[n - 1] = '\0';
    assert_null(strchr(buf, '\n'));
    return strdup(buf);
}

static void test_log_lines(void **state)
{
    (void)state;
    const char *bad = "GET /\xff\xfe\x01 cut \xe2\x82";
    char *line = logged(LOG_FMT_JSON, bad);
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "msg")),
                        "GET /\xef\xbf\xbd\xef\xbf\xbd\x01 cut \xef\xbf\xbd\xef\xbf\xbd");
    json_decref(o);
    free(line);
    line = logged(LOG_FMT_TEXT, "a\nb \xff \xe2\x82\xac");
    assert_non_null(strstr(line, "msg=\"a\\nb \\xff \xe2\x82\xac\""));
    free(line);
    /* a long message cut mid-character is still one valid JSON line */
    char big[4000];
    for (size_t i = 0; i + 3 < sizeof big; i += 3)
        memcpy(big + i, "\xe2\x82\xac", 3);
    big[sizeof big - 1] = '\0';
    line = logged(LOG_FMT_JSON, big);
    o = json_loads(line, 0, &je);
    assert_non_null(o);
    json_decref(o);
    free(line);
    log_set_format(LOG_FMT_TEXT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_fit_and_scrub),
        cmocka_unit_test(test_log_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
