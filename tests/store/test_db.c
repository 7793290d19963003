/* db: the SQL layer's statement cache (src/store/db.c), on SQLite (the
 * cache is the drivers' common part). A connection that runs many texts
 * keeps them all: the cache had 256 entries and db_prepare failed on the
 * 257th text ("statement cache full"), a store that would refuse every new
 * statement on a thread days into a daemon's life; and a statement handed
 * out stays valid while more are added after it. And on PostgreSQL, a
 * transaction whose COMMIT in fact rolled back is not reported kept. */
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

/* ---- PostgreSQL: a COMMIT that rolled back --------------------------------------- */

static const char SQL_T_MAKE[] = "CREATE TABLE IF NOT EXISTS commit_t (x integer)";
static const char SQL_T_ADD[] = "INSERT INTO commit_t (x) VALUES (?1)";
static const char SQL_T_COUNT[] = "SELECT count(*) FROM commit_t";

struct add {
    int x;
    bool fail_quietly; /* a statement fails and its error is let go (as a NOTIFY's was) */
};

static int add_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct add *a = ctx;
    int rc = db_exec(c, SQL_T_MAKE, err);
    db_stmt *st = NULL;
    if (rc || (rc = db_prepare(c, SQL_T_ADD, &st, err)))
        return rc;
    db_bind_i64(st, 1, a->x);
    rc = db_run(st, err, "adding a row");
    db_done(st);
    if (rc == 0 && a->fail_quietly) {
        struct store_error ignored;
        db_exec(c, "SELECT 1/0", &ignored);
    }
    return rc;
}

static int count_fn(db_conn *c, void *ctx, struct store_error *err)
{
    db_stmt *st = NULL;
    bool row = false;
    int rc = db_prepare(c, SQL_T_COUNT, &st, err);
    if (rc == 0 && (rc = db_step(st, &row, err, "counting")) == 0)
        *(int64_t *)ctx = row ? db_col_i64(st, 0) : -1;
    db_done(st);
    return rc;
}

/* A failed statement aborts a PostgreSQL transaction, and its COMMIT then
 * rolls back with a success status: the transaction was reported kept
 * (pg_notify lets a failed NOTIFY go: a queued job would have been lost
 * while its creator was told it was stored). */
static void test_pg_commit_that_rolled_back_fails(void **state)
{
    (void)state;
    char url[512], dir[256];
    if (!h_pg_start(url, sizeof url, dir, sizeof dir))
        skip();
    struct store_error err = {0};
    db *d = db_open(url, &err);
    if (!d)
        fail_msg("db_open: %s", err.message);
    struct add ok = {1, false}, bad = {2, true};
    if (db_tx(d, DB_WRITE, add_fn, &ok, &err))
        fail_msg("a plain transaction: %s", err.message);
    int rc = db_tx(d, DB_WRITE, add_fn, &bad, &err);
    assert_int_not_equal(rc, STORE_OK); /* not reported kept */
    int64_t n = 0;
    if (db_tx(d, DB_READ, count_fn, &n, &err))
        fail_msg("counting: %s", err.message);
    assert_int_equal(n, 1); /* and indeed not kept */
    db_close(d);
    assert_true(h_pg_stop(dir));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_grows_and_keeps_its_statements),
        cmocka_unit_test(test_pg_commit_that_rolled_back_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
