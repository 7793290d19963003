/* db: the SQL layer's statement cache (src/store/db.c), on SQLite (the
 * cache is the drivers' common part). A connection that runs many texts
 * keeps them all: the cache had 256 entries and db_prepare failed on the
 * 257th text ("statement cache full"), a store that would refuse every new
 * statement on a thread days into a daemon's life; and a statement handed
 * out stays valid while more are added after it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/xalloc.h"
#include "harness.h"
#include "store/db.h"

#define NTEXTS 600 /* well past the 256 the cache once held */

struct many {
    char *text[NTEXTS]; /* identity is the address: one allocation each */
    db_stmt *first;
    int64_t first_value; /* read from `first` after the others were added */
};

static int one_row(db_stmt *st, int64_t *v, struct store_error *err)
{
    bool row = false;
    int rc = db_step(st, &row, err, "select");
    if (rc)
        return rc;
    assert_true(row);
    *v = db_col_i64(st, 0);
    return 0;
}

/* Hold the first statement in the middle of its row while the other
 * texts are prepared and run on the same connection. */
static int run_all(db_conn *c, void *ctx, struct store_error *err)
{
    struct many *m = ctx;
    int rc = db_prepare(c, m->text[0], &m->first, err);
    bool row = false;
    if (rc || (rc = db_step(m->first, &row, err, "select")))
        return rc;
    assert_true(row);
    for (int i = 1; i < NTEXTS; i++) {
        db_stmt *st = NULL;
        int64_t v = -1;
        if ((rc = db_prepare(c, m->text[i], &st, err)) || (rc = one_row(st, &v, err)))
            return rc;
        assert_int_equal(v, i);
        db_done(st);
    }
    m->first_value = db_col_i64(m->first, 0);
    db_done(m->first);
    return 0;
}

/* Every text again: each found in the cache, the same statement as before. */
static int again(db_conn *c, void *ctx, struct store_error *err)
{
    struct many *m = ctx;
    for (int i = 0; i < NTEXTS; i++) {
        db_stmt *st = NULL;
        int64_t v = -1;
        int rc = db_prepare(c, m->text[i], &st, err);
        if (rc || (rc = one_row(st, &v, err)))
            return rc;
        assert_int_equal(v, i);
        if (i == 0)
            assert_ptr_equal(st, m->first);
        db_done(st);
    }
    return 0;
}

static void test_cache_grows_and_keeps_its_statements(void **state)
{
    (void)state;
    char dir[] = "/tmp/proxd-test-db.XXXXXX", url[128], path[96];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/db.sqlite", dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    struct store_error err = {0};
    db *d = db_open(url, &err);
    assert_non_null(d);
    struct many m = {0};
    for (int i = 0; i < NTEXTS; i++) {
        char t[32];
        snprintf(t, sizeof t, "SELECT %d", i);
        m.text[i] = xstrdup(t);
    }
    int rc = db_tx(d, DB_READ, run_all, &m, &err);
    if (rc)
        fail_msg("first pass: %s", err.message);
    assert_int_equal(m.first_value, 0);
    rc = db_tx(d, DB_READ, again, &m, &err);
    if (rc)
        fail_msg("second pass: %s", err.message);
    db_close(d);
    for (int i = 0; i < NTEXTS; i++)
        free(m.text[i]);
    char wal[112], shm[112];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(wal);
    unlink(shm);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_grows_and_keeps_its_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
