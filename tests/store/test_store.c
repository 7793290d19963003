/* Tests for store, run against both backends with the same test cases:
 * schema and migrations, VM records, jobs and leases, events, VMID
 * allocation (including threads and processes racing for IDs), capacity,
 * clone slots, idempotency keys.
 *
 * SQLite: each test gets a fresh database file in its own temporary
 * directory. PostgreSQL: the run starts one private server (initdb +
 * pg_ctl from /usr/lib/postgresql/<version>/bin, as the postgres user when
 * run as root, since initdb refuses root) in a temporary directory,
 * listening on 127.0.0.1 only (no Unix socket), with one database, and
 * each test gets a fresh schema in it (the URL's search_path; a CREATE
 * SCHEMA costs a millisecond where a CREATE DATABASE costs 300). Missing server binaries fail the
 * PostgreSQL half: they are a test dependency (scripts/deps.sh installs them).
 * STORE_TEST_BACKEND=sqlite|postgresql runs one half only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdatomic.h>
#include <pwd.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h> /* white-box: to tamper with the schema version, start jobs */
#include <sqlite3.h>

#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/ippool.h" /* the core's side of an address reservation */
#include "harness.h"
#include "store/store.h"

enum backend { BK_SQLITE, BK_PG };
static enum backend g_bk;

/* The private PostgreSQL server of this run. */
static struct {
    char dir[64]; /* data/, server.log */
    char bin[256];
    int port;
    bool up;
    PGconn *admin; /* to the test database, for CREATE SCHEMA */
    int seq;       /* schema names */
} g_pg;

#define PG_MAX_DBS 4

struct fx {
    char dir[64];
    char *url;
    store *s;
    char dbs[PG_MAX_DBS][32]; /* PostgreSQL: the schemas this test made */
    int ndbs;
};

static bool admin_exec(const char *sql)
{
    PGresult *r = PQexec(g_pg.admin, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        print_message("[ pg       ] %s: %s", sql, PQerrorMessage(g_pg.admin));
    PQclear(r);
    return ok;
}

/* The URL of a database named `name` for this test: a file beside the
 * fixture's (SQLite) or a new schema (PostgreSQL). */
static char *fx_url(struct fx *f, const char *name)
{
    if (g_bk == BK_SQLITE)
        return xasprintf("sqlite:%s/%s.db", f->dir, name);
    assert_true(f->ndbs < PG_MAX_DBS);
    char *db = f->dbs[f->ndbs];
    snprintf(db, sizeof f->dbs[0], "t%d_%s", ++g_pg.seq, name);
    char *sql = xasprintf("CREATE SCHEMA %s", db);
    bool ok = admin_exec(sql);
    free(sql);
    if (!ok)
        return NULL;
    f->ndbs++;
    return xasprintf("postgresql://proxd@127.0.0.1:%d/proxd_test?options=-csearch_path%%3D%s",
                     g_pg.port, db);
}

/* Run SQL on a store's database behind its back (white-box). */
static void db_exec(const char *url, const char *sql)
{
    if (str_starts(url, "sqlite:")) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(url + strlen("sqlite:"), &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_close(db);
        return;
    }
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* Rows of a query, as "a|b|c\n" lines: for a schema described as text and small reads. */
static void db_rows(const char *url, const char *sql, struct buf *out)
{
    if (str_starts(url, "sqlite:")) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(url + strlen("sqlite:"), &db), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        while (sqlite3_step(st) == SQLITE_ROW) {
            for (int i = 0; i < sqlite3_column_count(st); i++) {
                const char *v = (const char *)sqlite3_column_text(st, i);
                buf_printf(out, "%s%s", i ? "|" : "", v ? v : "NULL");
            }
            buf_addc(out, '\n');
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return;
    }
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    for (int row = 0; row < PQntuples(r); row++) {
        for (int i = 0; i < PQnfields(r); i++)
            buf_printf(out, "%s%s", i ? "|" : "", PQgetvalue(r, row, i));
        buf_addc(out, '\n');
    }
    PQclear(r);
    PQfinish(c);
}

/* Two integers of the first row of a query. */
static void db_query2(const char *url, const char *sql, int *a, int *b)
{
    struct buf out = BUF_INIT(BUF_UNLIMITED);
    db_rows(url, sql, &out);
    if (sscanf(buf_str(&out), "%d|%d", a, b) != 2)
        fail_msg("%s: no row of two integers (%s)", sql, buf_str(&out));
    buf_release(&out);
}

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/proxd-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f; /* teardown cleans up after a failed setup too */
    f->url = fx_url(f, "proxd");
    if (!f->url)
        return -1;
    struct store_error e;
    f->s = store_open(f->url, &e);
    if (!f->s) {
        fprintf(stderr, "store_open: %s\n", e.message);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->s);
    /* PostgreSQL: the test's schemas stay until the private server and its
     * directory go at the end of the run. */
    /* the fixture's database and those the process tests made beside it */
    const char *dbs[] = {"proxd.db", "procs.db", "cap.db", "slots.db", "old.db"};
    const char *sfx[] = {"", "-wal", "-shm", "-jobs"};
    for (size_t d = 0; d < sizeof dbs / sizeof *dbs; d++)
        for (size_t i = 0; i < 4; i++) {
            char *p = xasprintf("%s/%s%s", f->dir, dbs[d], sfx[i]);
            unlink(p);
            free(p);
        }
    if (rmdir(f->dir) != 0)
        print_message("[ warning  ] %s not removed: %s\n", f->dir, strerror(errno));
    free(f->url);
    free(f);
    return 0;
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        struct store_error e_;                                                                     \
        int rc_ = (call);                                                                          \
        if (rc_ != STORE_OK)                                                                       \
            fail_msg("%s -> %d: %s", #call, rc_, e_.message);                                      \
    } while (0)
/* `call` must take `&e` as its error argument. */
#define EXPECT(code, call)                                                                         \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != (code))                                                                         \
            fail_msg("%s -> %d, expected %d: %s", #call, rc_, (code), e.message);                  \
    } while (0)

/* ---- open / migrate ----------------------------------------------------- */

/* The schema version store_schema.c's MIGRATIONS ends at (the unified list
 * starts at 7: a new database records 7 and each later step). */
#define SCHEMA_LAST 16

static void test_open_bad_urls(void **state)
{
    (void)state;
    struct store_error e;
    /* nothing listens on port 1: a connection error, without the password */
    assert_null(store_open("postgresql://u@127.0.0.1:1/db", &e));
    assert_int_equal(e.code, STORE_E_DB);
    assert_non_null(strstr(e.message, "cannot connect to PostgreSQL"));
    assert_null(store_open("postgres://u:secret@127.0.0.1:1/db?connect_timeout=2", &e));
    assert_int_equal(e.code, STORE_E_DB);
    assert_null(strstr(e.message, "secret"));
    assert_null(store_open("postgresql://u@127.0.0.1:1/db?bogus_option=1", &e));
    assert_int_equal(e.code, STORE_E_DB);
    assert_null(store_open("mysql://u:secret@h/db", &e));
    assert_int_equal(e.code, STORE_E_INVALID);
    assert_null(strstr(e.message, "secret"));
    assert_null(store_open("sqlite::memory:", &e));
    assert_int_equal(e.code, STORE_E_INVALID);
    assert_null(store_open("sqlite:/nonexistent-dir/x/y.db", &e));
    assert_int_equal(e.code, STORE_E_DB);
    assert_non_null(strstr(e.message, "/nonexistent-dir/x/y.db"));
}

static struct vm_rec vm_new(int vmid, const char *owner, const char *os)
{
    struct vm_rec r = {0};
    r.vmid = vmid;
    snprintf(r.os, sizeof r.os, "%s", os);
    snprintf(r.name, sizeof r.name, "vm-%d", vmid);
    snprintf(r.owner, sizeof r.owner, "%s", owner);
    snprintf(r.power, sizeof r.power, "stopped");
    r.state = VMS_CREATING;
    r.cores = 2;
    r.memory_mb = 2048;
    r.disk_gb = 20;
    return r;
}

static void test_reopen_and_versions(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec r = vm_new(100, "alice", "debian12");
    OK(store_vm_insert(f->s, &r, &e_));
    store_close(f->s);

    /* Reopen: the schema is current, the data is there. */
    f->s = store_open(f->url, &e);
    assert_non_null(f->s);
    struct vm_rec g;
    OK(store_vm_get(f->s, 100, &g, &e_));
    assert_int_equal(g.id, r.id);
    vm_rec_release(&g);

    /* The database records each migration once: both backends share one
     * list, which starts at version 7 (a new database gets its schema in
     * one step; see store_schema.c for the versions before it). */
    int count = 0, max = 0;
    db_query2(f->url, "SELECT count(*), max(version) FROM schema_version", &count, &max);
    assert_int_equal(count, SCHEMA_LAST - 6); /* 7, 8, ... */
    assert_int_equal(max, SCHEMA_LAST);
    /* A schema from the future is refused, not silently used. */
    db_exec(f->url, "INSERT INTO schema_version VALUES (99, 0)");
    store *s2 = store_open(f->url, &e);
    assert_null(s2);
    assert_int_equal(e.code, STORE_E_INVALID);
    assert_non_null(strstr(e.message, "version 99"));
}

/* ---- databases of the previous release ------------------------------------ */

/* A text file of the repository (the fixtures), whole; free it. */
static char *read_fixture(const char *name)
{
    const char *src = getenv("SRC_DIR");
    char *path = xasprintf("%s/tests/store/fixtures/%s", src ? src : ".", name);
    FILE *fp = fopen(path, "r");
    if (!fp)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    free(path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *t = xmalloc((size_t)n + 1);
    assert_int_equal(fread(t, 1, (size_t)n, fp), (size_t)n);
    t[n] = '\0';
    fclose(fp);
    return t;
}

/* Tables, columns (name, type, NOT NULL, default or not) and indexes
 * (columns, unique, partial): what must be the same however the schema was
 * reached. Column order is not compared (ALTER TABLE appends). */
static char *schema_of(const char *url)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    if (str_starts(url, "sqlite:")) {
        db_rows(url,
                "SELECT m.name, p.name, p.type, p.\"notnull\", coalesce(p.dflt_value, ''), p.pk"
                " FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table'"
                " AND m.name NOT LIKE 'sqlite_%' ORDER BY 1, 2",
                &b);
        db_rows(url,
                "SELECT m.name, il.name, il.\"unique\", il.partial, group_concat(ii.name)"
                " FROM sqlite_master m, pragma_index_list(m.name) il,"
                " pragma_index_info(il.name) ii WHERE m.type = 'table' GROUP BY 1, 2 ORDER BY 1, 2",
                &b);
    } else {
        db_rows(url,
                "SELECT table_name, column_name, data_type, is_nullable,"
                " column_default IS NOT NULL FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY 1, 2",
                &b);
        db_rows(url,
                "SELECT tablename, indexname, regexp_replace(indexdef, ' ON \\S+\\.', ' ON ')"
                " FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1, 2",
                &b);
        db_rows(url,
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid)"
                " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                " WHERE n.nspname = current_schema() ORDER BY 1, 2",
                &b);
    }
    return buf_take(&b);
}

/* A database of the previous release, made from its fixture (an SQL dump
 * of what that release's store wrote: scripts/gen-store-fixtures.sh). */
static char *old_db(struct fx *f)
{
    char *url = fx_url(f, "old");
    assert_non_null(url);
    char *dump = read_fixture(g_bk == BK_SQLITE ? "old-sqlite.sql" : "old-pg.sql");
    db_exec(url, dump);
    free(dump);
    if (g_bk == BK_SQLITE) /* as the release made it */
        assert_int_equal(chmod(url + strlen("sqlite:"), 0600), 0);
    return url;
}

#define T0 1700000000000LL /* the fixed times of the fixtures */

static void claim_expect(store *s, const char *owner, int64_t lease, const char *want);
static void job_finish(store *s, const char *id);

/* The previous release's database migrates in place: the schema becomes
 * the one a new database gets, and every row is there and usable. */
static void test_migrate_old_format(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    char *url = old_db(f);
    store *s = store_open(url, &e);
    if (!s)
        fail_msg("store_open of the old database: %s", e.message);
    int count = 0, max = 0;
    db_query2(url, "SELECT count(*), max(version) FROM schema_version", &count, &max);
    assert_int_equal(count, (g_bk == BK_SQLITE ? 6 : 2) + SCHEMA_LAST - 6);
    assert_int_equal(max, SCHEMA_LAST);
    char *fresh = schema_of(f->url), *migrated = schema_of(url);
    assert_string_equal(migrated, fresh);
    free(fresh);
    free(migrated);

    /* VM records, live and gone */
    struct vm_rec v;
    OK(store_vm_get(s, 101, &v, &e_));
    assert_string_equal(v.name, "vm-101");
    assert_string_equal(v.owner, "alice");
    assert_string_equal(v.node, "sv1");
    assert_int_equal(v.state, VMS_ENABLED);
    assert_int_equal(v.memory_mb, 2048);
    assert_int_equal(v.created_at, T0 + 101);
    assert_int_equal(json_integer_value(json_object_get(v.pending, "cores")), 4);
    vm_rec_release(&v);
    OK(store_vm_get(s, 104, &v, &e_));
    assert_int_equal(v.id, 5);
    vm_rec_release(&v);
    struct vm_rec *list = NULL;
    size_t n = 0;
    struct vm_filter fl = {.owner = "bob", .state = -1, .include_gone = true};
    OK(store_vm_list(s, &fl, &list, &n, &e_));
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        vm_rec_release(&list[i]);
    free(list);
    struct vm_rec nv = vm_new(105, "bob", "debian12");
    OK(store_vm_insert(s, &nv, &e_));
    assert_int_equal(nv.id, 6); /* the id sequence goes on */

    /* jobs and events */
    struct job_rec j;
    OK(store_job_get(s, "job-done", &j, &e_));
    assert_int_equal(j.state, JOB_DONE);
    assert_int_equal(j.finished_at, T0 + 5010);
    assert_string_equal(json_string_value(json_object_get(j.request, "os")), "debian12");
    job_rec_release(&j);
    /* a creation done before guest checks is not asked about now */
    struct guest_check gc;
    OK(store_guest_get(s, "job-done", &gc, &e_));
    assert_int_equal(gc.state, GUEST_SKIPPED);
    assert_int_equal(gc.at, T0 + 5010);
    struct job_event *ev = NULL;
    OK(store_job_events(s, "job-done", 0, &ev, &n, &e_));
    assert_int_equal(n, 2);
    assert_string_equal(ev[1].message, "done");
    free(ev);

    /* job-z's reservation on sv1 counts while the job is unfinished */
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(s, "sv1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 1LL << 30);
    assert_int_equal(disk, 20LL << 30);

    /* A quota counts the queued update of VM 102 (6 cores for its 2). */
    struct job_rec up = {0};
    snprintf(up.kind, sizeof up.kind, "update");
    snprintf(up.owner, sizeof up.owner, "alice");
    up.vmid = 101;
    up.request = json_pack("{s:i}", "cores", 3);
    struct store_usage q = {.cores = 1}, used = {0};
    EXPECT(STORE_E_FULL, store_job_submit(s, &up, "queued", &q, &used, &e));
    assert_int_equal(used.vms, 2);
    assert_int_equal(used.cores, 2 + 6);
    job_rec_release(&up);

    /* Insertion order survives: job-z and job-a of VM 101 were made in one
     * millisecond, job-z first; a job added now comes after both. */
    struct job_rec nj = {0};
    snprintf(nj.id, sizeof nj.id, "job-0");
    snprintf(nj.kind, sizeof nj.kind, "reboot");
    nj.vmid = 101;
    nj.created_at = T0 + 1000;
    nj.request = json_object();
    OK(store_job_insert(s, &nj, &e_));
    job_rec_release(&nj);
    claim_expect(s, "t1", 60000, "job-z");
    claim_expect(s, "t1", 60000, "job-upd");
    claim_expect(s, "t1", 60000, NULL); /* job-a waits for job-z */
    job_finish(s, "job-z");
    claim_expect(s, "t1", 60000, "job-a");
    job_finish(s, "job-a");
    claim_expect(s, "t1", 60000, "job-0");

    /* VMID allocations, reservations, slots, leftovers */
    int cnt = 0, id = 0;
    OK(store_vmid_count(s, 200, 299, &cnt, &e_));
    assert_int_equal(cnt, 4);
    struct vmid_range r = {200, 299};
    OK(store_vmid_reserve(s, &r, 1, NULL, 0, "job-0", &id, &e_));
    assert_int_equal(id, 204);
    EXPECT(STORE_E_CONFLICT, store_vmid_mark_used(s, 202, &e));
    OK(store_reserved_on(s, "sv1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 0); /* job-z is done: its reservation no longer counts */
    struct leftover *lo = NULL;
    OK(store_leftover_list(s, &lo, &n, &e_));
    assert_int_equal(n, 1);
    assert_int_equal(lo[0].vmid, 201);
    assert_string_equal(lo[0].job, "job-z");
    free(lo);
    OK(store_leftover_done(s, 201, "sv2", 1000, &e_));
    OK(store_vmid_count(s, 201, 201, &cnt, &e_));
    assert_int_equal(cnt, 1); /* quarantined, still allocated */

    /* idempotency, tokens, settings */
    json_t *a = NULL;
    OK(store_idem_get(s, "alice", "key-1", &a, &e_));
    assert_int_equal(json_integer_value(json_object_get(a, "vmid")), 101);
    json_decref(a);
    struct token_rec t;
    OK(store_token_get(s, "tok1", &t, &e_));
    assert_string_equal(t.owner, "alice");
    assert_string_equal(t.role, "admin");
    assert_string_equal(t.hash, "abcdef");
    assert_int_equal(t.created_at, T0);
    char val[64];
    OK(store_kv_setdefault(s, "api_key", "other", val, sizeof val, &e_));
    assert_string_equal(val, "secret-1");
    store_close(s);

    /* Opened again: nothing more to migrate. */
    s = store_open(url, &e);
    assert_non_null(s);
    store_close(s);
    db_query2(url, "SELECT count(*), max(version) FROM schema_version", &count, &max);
    assert_int_equal(max, SCHEMA_LAST);
    free(url);
}

/* A database older than the previous release is refused, not half-migrated. */
static void test_migrate_too_old(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    char *url = old_db(f);
    db_exec(url, "DELETE FROM schema_version WHERE version > 1");
    store *s = store_open(url, &e);
    assert_null(s);
    assert_int_equal(e.code, STORE_E_INVALID);
    assert_non_null(strstr(e.message, "08db344"));
    free(url);
}

/* ---- VM records ---------------------------------------------------------- */

static void test_vm_crud(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec r = vm_new(101, "alice", "debian12");
    r.pending = json_pack("{s:i}", "cores", 4);
    OK(store_vm_insert(f->s, &r, &e_));
    assert_true(r.id > 0);
    assert_true(r.created_at > 0);

    struct vm_rec g;
    OK(store_vm_get_id(f->s, r.id, &g, &e_));
    assert_int_equal(g.vmid, 101);
    assert_string_equal(g.name, "vm-101");
    assert_string_equal(g.owner, "alice");
    assert_int_equal(g.state, VMS_CREATING);
    assert_int_equal(g.memory_mb, 2048);
    assert_non_null(g.pending);
    assert_int_equal(json_integer_value(json_object_get(g.pending, "cores")), 4);

    /* Update every mutable field. */
    g.state = VMS_ENABLED;
    snprintf(g.node, sizeof g.node, "pve1");
    snprintf(g.power, sizeof g.power, "running");
    g.cores = 4;
    json_decref(g.pending);
    g.pending = NULL;
    OK(store_vm_update(f->s, &g, &e_));
    vm_rec_release(&g);
    OK(store_vm_get(f->s, 101, &g, &e_));
    assert_int_equal(g.state, VMS_ENABLED);
    assert_string_equal(g.node, "pve1");
    assert_string_equal(g.power, "running");
    assert_int_equal(g.cores, 4);
    assert_null(g.pending);
    vm_rec_release(&g);

    EXPECT(STORE_E_NOTFOUND, store_vm_get(f->s, 555, &g, &e));
    EXPECT(STORE_E_NOTFOUND, store_vm_get_id(f->s, 999999, &g, &e));
    g = r;
    g.id = 424242;
    g.pending = NULL;
    EXPECT(STORE_E_NOTFOUND, store_vm_update(f->s, &g, &e));
    vm_rec_release(&r);

    /* Long strings are cut at a character boundary: "é" is two bytes. */
    struct vm_rec u = vm_new(102, "bob", "debian12");
    char big[200];
    memset(big, 0, sizeof big);
    for (size_t i = 0; i + 2 < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    memcpy(u.error, big, sizeof big);
    memcpy(u.name, big, sizeof u.name); /* no NUL in the field */
    OK(store_vm_insert(f->s, &u, &e_));
    OK(store_vm_get(f->s, 102, &g, &e_));
    assert_int_equal(strlen(g.name), 62); /* 63 bytes would split a character */
    assert_int_equal(strlen(g.error), strlen(big));
    vm_rec_release(&g);
}

static void test_vm_live_unique(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec a = vm_new(200, "alice", "debian12");
    OK(store_vm_insert(f->s, &a, &e_));
    struct vm_rec b = vm_new(200, "bob", "debian12");
    EXPECT(STORE_E_CONFLICT, store_vm_insert(f->s, &b, &e));
    assert_non_null(strstr(e.message, "200"));

    a.state = VMS_DELETED;
    OK(store_vm_update(f->s, &a, &e_));
    OK(store_vm_insert(f->s, &b, &e_));
    struct vm_rec g;
    OK(store_vm_get(f->s, 200, &g, &e_));
    assert_int_equal(g.id, b.id);
    assert_string_equal(g.owner, "bob");
    vm_rec_release(&g);

    /* Reviving the deleted record would make two live ones. */
    a.state = VMS_ENABLED;
    EXPECT(STORE_E_CONFLICT, store_vm_update(f->s, &a, &e));
}

struct kv_writer {
    store *s;
    int rc;
    struct store_error e;
};

static void *kv_writer_main(void *arg)
{
    struct kv_writer *w = arg;
    w->rc = store_kv_set(w->s, "lock:other-thread", "x", &w->e);
    return NULL;
}

/* A writing transaction that fails (here at a unique key) lets the write
 * lock go (the transaction is rolled back). Kept, it would hold every later
 * writer of another thread (its busy timeout, then db_tx's retries) until
 * the store call failed, and this thread's next BEGIN would fail at once. */
static void test_write_lock_let_go(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec a = vm_new(300, "alice", "debian12");
    OK(store_vm_insert(f->s, &a, &e_));
    for (int i = 0; i < 3; i++) {
        struct vm_rec b = vm_new(300, "bob", "debian12");
        EXPECT(STORE_E_CONFLICT, store_vm_insert(f->s, &b, &e));
        struct kv_writer w = {.s = f->s};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, kv_writer_main, &w), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        if (w.rc != STORE_OK)
            fail_msg("another thread's write after a failed one: %d %s", w.rc, w.e.message);
        OK(store_kv_set(f->s, "lock:this-thread", "y", &e_));
    }
    struct store_kv kv;
    OK(store_kv_get(f->s, "lock:other-thread", &kv, &e_));
    assert_string_equal(kv.value, "x");
}

static void test_vm_list(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    for (int i = 0; i < 25; i++) {
        struct vm_rec r = vm_new(300 + i, i % 2 ? "alice" : "bob", i % 3 ? "debian12" : "ubuntu24");
        if (i % 5 == 0)
            r.state = VMS_DELETED;
        snprintf(r.node, sizeof r.node, "pve%d", i % 4);
        OK(store_vm_insert(f->s, &r, &e_));
    }
    struct vm_rec *v = NULL;
    size_t n = 0;
    OK(store_vm_list(f->s, NULL, &v, &n, &e_));
    assert_int_equal(n, 20); /* 5 deleted left out */
    for (size_t i = 1; i < n; i++)
        assert_true(v[i].id > v[i - 1].id);
    for (size_t i = 0; i < n; i++)
        vm_rec_release(&v[i]);
    free(v);

    struct vm_filter fl = {.state = -1, .include_gone = true};
    OK(store_vm_list(f->s, &fl, &v, &n, &e_));
    assert_int_equal(n, 25);
    free(v);

    fl = (struct vm_filter){.owner = "alice", .os = "debian12", .state = -1};
    OK(store_vm_list(f->s, &fl, &v, &n, &e_));
    size_t want = 0;
    for (int i = 0; i < 25; i++)
        want += (i % 2) && (i % 3) && (i % 5);
    assert_int_equal(n, want);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(v[i].owner, "alice");
        assert_string_equal(v[i].os, "debian12");
    }
    free(v);

    fl = (struct vm_filter){.node = "pve1", .state = VMS_DELETED};
    OK(store_vm_list(f->s, &fl, &v, &n, &e_));
    assert_int_equal(n, 1); /* i = 5 */
    assert_int_equal(v[0].vmid, 305);
    free(v);

    /* Pagination: pages of 7 over the 25, no gap, no repeat. */
    fl = (struct vm_filter){.state = -1, .include_gone = true, .limit = 7};
    int seen = 0, pages = 0, last = 0;
    for (;;) {
        OK(store_vm_list(f->s, &fl, &v, &n, &e_));
        if (n == 0)
            break;
        pages++;
        for (size_t i = 0; i < n; i++)
            assert_int_equal(v[i].vmid, 300 + seen++);
        last = v[n - 1].vmid;
        fl.after_id = v[n - 1].id;
        free(v);
    }
    free(v);
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 4);
    assert_int_equal(last, 324);

    fl.limit = -1;
    EXPECT(STORE_E_INVALID, store_vm_list(f->s, &fl, &v, &n, &e));
}

/* store_vm_scan under every combination of filters, page by page (a
 * cursor and a small limit), against a plain filter over all records; and
 * a scan stopped early. */
struct scan_ids {
    int64_t ids[64];
    size_t n;
    size_t stop_after; /* 0: never */
};

static int scan_collect(void *ctx, const struct vm_rec *r)
{
    struct scan_ids *s = ctx;
    if (!r) {
        s->n = 0;
        return 0;
    }
    assert_true(s->n < 64);
    s->ids[s->n++] = r->id;
    return s->stop_after && s->n == s->stop_after;
}

static void test_vm_scan_filters(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    const char *owners[] = {"alice", "bob", "carol"}, *oses[] = {"debian12", "ubuntu24"};
    for (int i = 0; i < 40; i++) {
        struct vm_rec r = vm_new(400 + i, owners[i % 3], oses[i % 2]);
        r.state = (enum vm_state)(i % 7 % 6); /* every state, gone ones too */
        snprintf(r.node, sizeof r.node, "pve%d", i % 4);
        OK(store_vm_insert(f->s, &r, &e_));
        vm_rec_release(&r);
    }
    struct vm_filter all = {.state = -1, .include_gone = true, .limit = 1000};
    struct vm_rec *v = NULL;
    size_t n = 0;
    OK(store_vm_list(f->s, &all, &v, &n, &e_));
    assert_int_equal(n, 40);
    const char *owner_q[] = {NULL, "bob"}, *node_q[] = {NULL, "pve2"}, *os_q[] = {NULL, "ubuntu24"};
    for (int combo = 0; combo < 8 * 4; combo++) {
        struct vm_filter q = {.owner = owner_q[combo & 1],
                              .node = node_q[(combo >> 1) & 1],
                              .os = os_q[(combo >> 2) & 1],
                              .state = combo / 8 == 1   ? VMS_ENABLED
                                       : combo / 8 == 3 ? VMS_LOST
                                                        : -1,
                              .include_gone = combo / 8 == 2,
                              .limit = 3};
        struct scan_ids want = {0}, got = {0};
        for (size_t i = 0; i < n; i++) {
            const struct vm_rec *r = &v[i];
            bool ok = (!q.owner || strcmp(r->owner, q.owner) == 0) &&
                      (!q.node || strcmp(r->node, q.node) == 0) &&
                      (!q.os || strcmp(r->os, q.os) == 0) &&
                      (q.state >= 0
                           ? (int)r->state == q.state
                           : q.include_gone || !(r->state == VMS_DELETED ||
                                                 r->state == VMS_FAILED || r->state == VMS_LOST));
            if (ok)
                want.ids[want.n++] = r->id;
        }
        /* page by page: each page starts after the last id of the one before */
        for (;;) {
            struct scan_ids page = {0};
            OK(store_vm_scan(f->s, &q, scan_collect, &page, &e_));
            assert_true(page.n <= 3);
            for (size_t i = 0; i < page.n; i++)
                got.ids[got.n++] = page.ids[i];
            if (page.n < 3)
                break;
            q.after_id = page.ids[page.n - 1];
        }
        if (got.n != want.n)
            fail_msg("combination %d: %zu records, expected %zu", combo, got.n, want.n);
        assert_memory_equal(got.ids, want.ids, want.n * sizeof want.ids[0]);
    }
    /* fn stops the scan: no more calls, still STORE_OK */
    struct scan_ids some = {.stop_after = 2};
    all.limit = 0;
    OK(store_vm_scan(f->s, &all, scan_collect, &some, &e_));
    assert_int_equal(some.n, 2);
    assert_int_equal(some.ids[0], v[0].id);
    EXPECT(STORE_E_INVALID, store_vm_scan(f->s, &all, NULL, NULL, &e));
    for (size_t i = 0; i < n; i++)
        vm_rec_release(&v[i]);
    free(v);
}

/* ---- jobs --------------------------------------------------------------- */

static void job_add_of(store *s, const char *owner, const char *id, const char *kind, int vmid,
                       int64_t created)
{
    struct job_rec j = {0};
    snprintf(j.id, sizeof j.id, "%s", id);
    snprintf(j.kind, sizeof j.kind, "%s", kind);
    snprintf(j.owner, sizeof j.owner, "%s", owner);
    j.vmid = vmid;
    j.created_at = created;
    j.request = json_pack("{s:s}", "name", id);
    OK(store_job_insert(s, &j, &e_));
    job_rec_release(&j);
}

static void job_add(store *s, const char *id, const char *kind, int vmid, int64_t created)
{
    job_add_of(s, "alice", id, kind, vmid, created);
}

/* Whether the store's jobs watch turns readable within ms. */
static bool told_within(store *s, int ms)
{
    struct pollfd p = {.fd = store_jobs_watch(s), .events = POLLIN};
    assert_true(p.fd >= 0);
    return poll(&p, 1, ms) == 1;
}

/* Wait until the watch tells of one commit, then drain it. PostgreSQL
 * hands a commit's NOTIFY to the watch's session after the commit has
 * returned (the listening backend sends it when it gets round to it): a
 * drain right after a commit may come before its word, which then wakes
 * the watch later, as if a later write had told (a late wake-up, which
 * the contract allows: the look finds nothing new). Waiting for the word
 * of each commit that tells before draining leaves nothing in flight, so
 * that a "not told" that follows is about the writes after the drain. */
static void told_then_drain(store *s)
{
    assert_true(told_within(s, 5000));
    store_jobs_watch_drain(s);
}

/* The daemon's idle workers sleep until told (core.c watch_wait): a job
 * queued through another handle (another process's connection), a dead
 * runner's jobs freed, tell the watch; writes that queue nothing do not;
 * the next lease end of other owners' jobs says when to look for a takeover. */
static void test_jobs_watch(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    store *other = store_open(f->url, &e);
    assert_non_null(other);
    int fd = store_jobs_watch(f->s);
    assert_true(fd >= 0);
    store_jobs_watch_drain(f->s);
    assert_false(told_within(f->s, 0));

    /* another fleet's database (PostgreSQL: another schema of the same
     * database, its own channel) tells its own watch, not this one */
    char *url2 = fx_url(f, "fleet2");
    store *fleet2 = store_open(url2, &e);
    assert_non_null(fleet2);
    int fd2 = store_jobs_watch(fleet2);
    assert_true(fd2 >= 0);
    store_jobs_watch_drain(fleet2);
    job_add(fleet2, "f2-1", "start", 0, wall_ms());
    assert_true(told_within(fleet2, 5000));
    assert_false(told_within(f->s, 300));
    store_close(fleet2);
    free(url2);

    job_add(other, "w-1", "start", 0, wall_ms()); /* queued elsewhere */
    told_then_drain(f->s);
    assert_false(told_within(f->s, 0)); /* drained */

    /* a claim and a renewal queue nothing: no word (a NOTIFY would come
     * within milliseconds; a file write at once) */
    struct job_rec c;
    OK(store_job_claim(other, "runner", 30000, &c, &e_));
    job_rec_release(&c);
    int n = 0;
    OK(store_job_renew_owner(other, "runner", 30000, &n, &e_));
    assert_int_equal(n, 1);
    assert_false(told_within(f->s, 300));

    /* its runner is running it: a takeover is due when its lease ends */
    int64_t at = 0, now = wall_ms();
    OK(store_job_next_lease_end(f->s, "me", &at, &e_));
    assert_true(at >= now + 29000 && at <= now + 31000);
    OK(store_job_next_lease_end(f->s, "runner", &at, &e_)); /* not its own */
    assert_int_equal(at, 0);

    /* the runner is known dead: its jobs are claimable at once, and told */
    OK(store_job_expire_owner(other, "runner", &e_));
    told_then_drain(f->s);
    OK(store_job_next_lease_end(f->s, "me", &at, &e_));
    assert_int_equal(at, 0);                          /* given up: no lease to wait for */
    OK(store_job_expire_owner(other, "nobody", &e_)); /* frees nothing */
    assert_false(told_within(f->s, 300));

    /* the watch of this handle sees its own handle's submissions too */
    job_add(f->s, "w-2", "start", 0, wall_ms());
    assert_true(told_within(f->s, 5000));
    assert_int_equal(store_jobs_watch(f->s), fd); /* unbroken: the same fd */
    store_jobs_watch_drain(f->s);

    /* a job that ends frees one queued behind it on its VM: told; one
     * with nothing behind it ends untold. Each submission's word is
     * waited for before its drain (told_then_drain): a drain right after
     * both commits could come before their NOTIFYs reached the watch, and
     * a late one would pass for the first update's word, or for a word
     * from the second update. */
    job_add(other, "w-3", "stop", 1500, wall_ms() - 2000);
    told_then_drain(f->s);
    job_add(other, "w-4", "start", 1500, wall_ms() - 1000);
    told_then_drain(f->s);
    struct job_rec r3;
    OK(store_job_get(other, "w-3", &r3, &e_));
    r3.state = JOB_DONE;
    OK(store_job_update(other, &r3, &e_));
    told_then_drain(f->s);
    job_rec_release(&r3);
    OK(store_job_get(other, "w-4", &r3, &e_));
    r3.state = JOB_DONE;
    OK(store_job_update(other, &r3, &e_));
    assert_false(told_within(f->s, 300));
    job_rec_release(&r3);
    store_close(other);
}

/* A cancel recorded for a running job tells every process's jobs watch
 * (one through another handle: another instance's), and the runner's
 * process finds it among the jobs it holds (store_job_cancels_held): core.c
 * then tells the job's waits (a clone's) at once. */
static void test_job_cancels_held(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    store *other = store_open(f->url, &e);
    assert_non_null(other);
    char ids[4][40];
    size_t n = 9;
    OK(store_job_cancels_held(f->s, "me", ids, 4, &n, &e_));
    assert_int_equal(n, 0);
    job_add(f->s, "ch-1", "create", 0, wall_ms() - 4000);
    job_add(f->s, "ch-2", "create", 0, wall_ms() - 3000);
    job_add(f->s, "ch-3", "create", 0, wall_ms() - 2000);
    job_add(f->s, "ch-4", "create", 0, wall_ms() - 1000);
    job_add(f->s, "ch-5", "create", 0, wall_ms());
    claim_expect(f->s, "me", 30000, "ch-1");
    claim_expect(f->s, "me", 30000, "ch-2");
    claim_expect(f->s, "you", 30000, "ch-3");
    claim_expect(f->s, "me", 30000, "ch-4");
    assert_int_equal(store_jobs_watch(f->s) >= 0, true);
    store_jobs_watch_drain(f->s);
    OK(store_job_cancels_held(f->s, "me", ids, 4, &n, &e_));
    assert_int_equal(n, 0); /* running, none cancelled */

    /* ch-2 cancelled elsewhere: told, and listed for its runner only */
    struct job_cancel_req rq = {.by = "ops", .error = "cancelled by ops before it started"};
    enum store_cancel oc = 0;
    OK(store_job_cancel(other, "ch-2", &rq, NULL, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_ASKED);
    assert_true(told_within(f->s, 5000));
    store_jobs_watch_drain(f->s);
    OK(store_job_cancels_held(f->s, "me", ids, 4, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "ch-2");
    OK(store_job_cancels_held(f->s, "you", ids, 4, &n, &e_));
    assert_int_equal(n, 0);
    /* asked again: nothing changes, nothing told */
    OK(store_job_cancel(other, "ch-2", &rq, NULL, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_AGAIN);
    assert_false(told_within(f->s, 300));

    /* another's job, a queued one (it ends: told as before), a held one */
    OK(store_job_cancel(other, "ch-3", &rq, NULL, &oc, &e_));
    OK(store_job_cancel(other, "ch-5", &rq, NULL, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_ENDED);
    OK(store_job_cancel(other, "ch-4", &rq, NULL, &oc, &e_));
    assert_true(told_within(f->s, 5000));
    store_jobs_watch_drain(f->s);
    OK(store_job_cancels_held(f->s, "me", ids, 4, &n, &e_));
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "ch-2");
    assert_string_equal(ids[1], "ch-4");
    OK(store_job_cancels_held(f->s, "me", ids, 1, &n, &e_)); /* at most max */
    assert_int_equal(n, 1);
    OK(store_job_cancels_held(f->s, "you", ids, 4, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "ch-3");

    /* ended (its cleanup done), or taken over by another owner: not listed */
    job_finish(f->s, "ch-2");
    db_exec(f->url, "UPDATE jobs SET lease_owner = 'you' WHERE id = 'ch-4'");
    OK(store_job_cancels_held(f->s, "me", ids, 4, &n, &e_));
    assert_int_equal(n, 0);
    OK(store_job_cancels_held(f->s, "you", ids, 4, &n, &e_));
    assert_int_equal(n, 2);
    EXPECT(STORE_E_INVALID, store_job_cancels_held(f->s, "", ids, 4, &n, &e));
    store_close(other);
}

/* The -jobs file that tells the watchers is made by whichever process
 * first needs it (root's `proxd create` before the daemon, which runs as
 * another user): it gets the database file's mode and, made by root, its
 * owner and group; one root made before that is put right by root's next
 * open. */
static void test_jobs_file_mode(void **state)
{
    struct fx *f = *state;
    if (g_bk != BK_SQLITE)
        skip(); /* PostgreSQL's watch is a NOTIFY: no file */
    char *dbp = xasprintf("%s/proxd.db", f->dir), *jp = xasprintf("%s-jobs", dbp);
    struct stat st;
    assert_int_equal(stat(jp, &st) == 0, false); /* nothing told yet */
    assert_int_equal(chmod(dbp, 0660), 0);       /* a group may write the database */
    bool root = geteuid() == 0;
    if (root) /* as if the daemon's user owned it and root ran a command */
        assert_int_equal(chown(dbp, 65534, 65534), 0);
    mode_t old = umask(022); /* the usual umask would take the group's write bit */
    job_add(f->s, "m-1", "start", 0, wall_ms()); /* made by the commit's word */
    assert_int_equal(stat(jp, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);
    if (root)
        assert_true(st.st_uid == 65534 && st.st_gid == 65534);
    if (root) { /* made root's, 0600, by an earlier proxd: root's next open fits it */
        assert_int_equal(chown(jp, 0, 0), 0);
        assert_int_equal(chmod(jp, 0600), 0);
        job_add(f->s, "m-2", "start", 0, wall_ms());
        assert_int_equal(stat(jp, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0660);
        assert_true(st.st_uid == 65534 && st.st_gid == 65534);
    }
    umask(old);
    free(dbp);
    free(jp);
}

/* The state lists the store's statements use ({GONE}, {LIVE}, {ACTIVE})
 * are written as the schema's partial indexes write theirs, so that
 * SQLite's planner may use those indexes (and then drops the term) rather
 * than build a temporary table for the list at each execution. */
static void test_state_lists_match_indexes(void **state)
{
    struct fx *f = *state;
    char *t = store_sql_text(f->s, "{GONE} {LIVE} {ACTIVE}");
    assert_string_equal(t, "('deleted', 'failed', 'lost') ('creating', 'deleting', 'enabled') "
                           "('queued', 'running')");
    free(t);
    if (g_bk != BK_SQLITE)
        return;
    char *gone = store_sql_text(f->s, "state NOT IN {GONE}");
    char *act = store_sql_text(f->s, "state IN {ACTIVE}");
    char *q = store_sql_text(f->s, "EXPLAIN QUERY PLAN SELECT id FROM vms WHERE vmid = 5 AND "
                                   "state NOT IN {GONE}");
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(strchr(f->url, ':') + 1, &h), SQLITE_OK);
    struct {
        const char *index, *term;
    } idx[] = {{"vms_live_vmid", gone}, {"jobs_active", act}};
    for (size_t i = 0; i < 2; i++) { /* the schema's text carries the same list */
        sqlite3_stmt *st = NULL;
        assert_int_equal(
            sqlite3_prepare_v2(h, "SELECT sql FROM sqlite_master WHERE name = ?1", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_text(st, 1, idx[i].index, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const char *sql = (const char *)sqlite3_column_text(st, 0);
        if (!strstr(sql, idx[i].term))
            fail_msg("index %s: '%s' does not carry '%s'", idx[i].index, sql, idx[i].term);
        sqlite3_finalize(st);
    }
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, q, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const char *plan = (const char *)sqlite3_column_text(st, 3);
    if (!strstr(plan, "vms_live_vmid"))
        fail_msg("a live record read by VMID: plan '%s', not the live index", plan);
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(gone);
    free(act);
    free(q);
}

static void test_job_crud(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct job_rec j = {0};
    snprintf(j.kind, sizeof j.kind, "create");
    j.vmid = 400;
    j.request = json_pack("{s:s,s:i}", "os", "debian12", "cores", 2);
    OK(store_job_insert(f->s, &j, &e_));
    assert_int_equal(strlen(j.id), 36); /* a UUID was made */
    EXPECT(STORE_E_CONFLICT, store_job_insert(f->s, &j, &e));

    struct job_rec g;
    OK(store_job_get(f->s, j.id, &g, &e_));
    assert_string_equal(g.kind, "create");
    assert_int_equal(g.state, JOB_QUEUED);
    assert_true(json_equal(g.request, j.request));
    assert_null(g.attempts);
    struct job_brief b;
    OK(store_job_brief(f->s, j.id, &b, &e_));
    assert_int_equal(b.state, JOB_QUEUED);
    assert_string_equal(b.kind, "create");
    assert_int_equal(b.finished_at, 0);

    g.state = JOB_DONE;
    snprintf(g.step, sizeof g.step, "done");
    snprintf(g.upid, sizeof g.upid, "UPID:pve1:00001:qmcreate");
    g.progress = 100;
    g.attempts = json_pack("[{s:s,s:s}]", "node", "pve2", "error", "no space");
    OK(store_job_update(f->s, &g, &e_));
    job_rec_release(&g);
    OK(store_job_get(f->s, j.id, &g, &e_));
    assert_int_equal(g.state, JOB_DONE);
    assert_int_equal(g.progress, 100);
    assert_string_equal(g.upid, "UPID:pve1:00001:qmcreate");
    assert_int_equal(json_array_size(g.attempts), 1);
    assert_true(g.finished_at > 0);
    OK(store_job_brief(f->s, j.id, &b, &e_)); /* the brief says what the row says */
    assert_int_equal(b.state, JOB_DONE);
    assert_string_equal(b.kind, "create");
    assert_int_equal(b.finished_at, g.finished_at);
    job_rec_release(&g);
    job_rec_release(&j);

    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "nope", &g, &e));
    EXPECT(STORE_E_NOTFOUND, store_job_brief(f->s, "nope", &b, &e));
    assert_non_null(strstr(e.message, "nope"));
    int n = -1;
    OK(store_job_count_active(f->s, NULL, &n, &e_));
    assert_int_equal(n, 0);
    job_add(f->s, "j-a", "start", 401, 0);
    job_add(f->s, "j-b", "stop", 402, 0);
    OK(store_job_count_active(f->s, NULL, &n, &e_));
    assert_int_equal(n, 2);
    OK(store_job_count_active(f->s, "stop", &n, &e_));
    assert_int_equal(n, 1);
}

static void claim_expect(store *s, const char *owner, int64_t lease, const char *want)
{
    struct store_error e;
    struct job_rec j;
    int64_t before = wall_ms();
    int rc = store_job_claim(s, owner, lease, &j, &e);
    if (!want) {
        if (rc != STORE_E_NOTFOUND)
            fail_msg("claim: expected none, got %d (%s)", rc, rc ? e.message : j.id);
        return;
    }
    if (rc != STORE_OK)
        fail_msg("claim: expected %s, got %d: %s", want, rc, e.message);
    assert_string_equal(j.id, want);
    assert_int_equal(j.state, JOB_RUNNING);
    assert_string_equal(j.lease_owner, owner);
    assert_true(j.lease_until >= before + lease);
    assert_non_null(j.request);
    job_rec_release(&j);
}

static void job_finish(store *s, const char *id)
{
    struct job_rec j;
    OK(store_job_get(s, id, &j, &e_));
    j.state = JOB_DONE;
    OK(store_job_update(s, &j, &e_));
    job_rec_release(&j);
}

static void test_job_claim_order_and_lease(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int64_t t = wall_ms() - 10000;
    job_add(f->s, "j3", "start", 503, t + 3);
    job_add(f->s, "j1", "start", 501, t + 1);
    job_add(f->s, "j2", "start", 502, t + 2);
    claim_expect(f->s, "w1", 60000, "j1"); /* oldest first, not insertion order */
    claim_expect(f->s, "w1", 60000, "j2");
    claim_expect(f->s, "w2", 1, "j3"); /* a 1 ms lease */
    sleep_ms(5);
    /* After a database outage (store_job_claim_at with 0, or a cutoff
     * before the lease ran out) a lease that ran out is not taken: its
     * holder could not renew it either. A queued job is. */
    struct job_rec c;
    EXPECT(STORE_E_NOTFOUND, store_job_claim_at(f->s, "w3", 60000, 0, &c, &e));
    EXPECT(STORE_E_NOTFOUND, store_job_claim_at(f->s, "w3", 60000, wall_ms() - 60000, &c, &e));
    job_add(f->s, "j5", "start", 0, t + 5);
    OK(store_job_claim_at(f->s, "w3", 60000, 0, &c, &e_));
    assert_string_equal(c.id, "j5");
    job_rec_release(&c);
    job_finish(f->s, "j5");
    /* j3's runner "died": its lease ran out, another worker takes it over. */
    claim_expect(f->s, "w3", 60000, "j3");
    claim_expect(f->s, "w1", 60000, NULL);

    /* Renewal belongs to the lease holder only. */
    OK(store_job_renew(f->s, "j3", "w3", 60000, &e_));
    EXPECT(STORE_E_CONFLICT, store_job_renew(f->s, "j3", "w2", 60000, &e));
    assert_non_null(strstr(e.message, "w3"));
    EXPECT(STORE_E_NOTFOUND, store_job_renew(f->s, "zz", "w2", 60000, &e));

    /* The old runner's writes are fenced off by its lease owner name. */
    struct job_rec j;
    OK(store_job_get(f->s, "j3", &j, &e_));
    snprintf(j.lease_owner, sizeof j.lease_owner, "w2");
    snprintf(j.step, sizeof j.step, "stale");
    EXPECT(STORE_E_CONFLICT, store_job_update(f->s, &j, &e));
    job_rec_release(&j);

    job_finish(f->s, "j1");
    EXPECT(STORE_E_CONFLICT, store_job_renew(f->s, "j1", "w1", 60000, &e));
}

/* The owners take turns: the claimable job of the owner with the fewest
 * jobs running goes first (the oldest among equals), so that one owner's
 * burst does not make every other owner wait behind all of it; a job whose
 * runner died goes before any queued one. Plain FIFO claimed a1, a2, a3
 * before b1. */
static void test_job_claim_owners_take_turns(void **state)
{
    struct fx *f = *state;
    int64_t t = wall_ms() - 10000;
    job_add_of(f->s, "alice", "a1", "create", 0, t + 1);
    job_add_of(f->s, "alice", "a2", "create", 0, t + 2);
    job_add_of(f->s, "alice", "a3", "create", 0, t + 3);
    job_add_of(f->s, "alice", "a4", "create", 0, t + 4);
    job_add_of(f->s, "bob", "b1", "create", 0, t + 5);
    job_add_of(f->s, "carol", "c1", "create", 0, t + 6);
    claim_expect(f->s, "w1", 60000, "a1"); /* nobody runs anything: the oldest */
    claim_expect(f->s, "w2", 60000, "b1"); /* alice runs one, bob none */
    claim_expect(f->s, "w1", 60000, "c1");
    claim_expect(f->s, "w2", 60000, "a2"); /* one each: the oldest */
    job_finish(f->s, "b1");
    job_add_of(f->s, "bob", "b2", "create", 0, t + 7);
    claim_expect(f->s, "w1", 60000, "b2"); /* alice runs two, bob none */
    /* a job whose runner died is taken over first, its owner however busy */
    claim_expect(f->s, "w3", 1, "a3");
    sleep_ms(5);
    job_add_of(f->s, "dave", "d1", "create", 0, t + 8);
    claim_expect(f->s, "w1", 60000, "a3");
    claim_expect(f->s, "w1", 60000, "d1");
    claim_expect(f->s, "w1", 60000, "a4");
    claim_expect(f->s, "w1", 60000, NULL);
}

/* Guest checks: the done jobs that started a VM wait for one outcome,
 * written once with its event (a second writer, another instance or a
 * restarted one, writes and logs nothing). */
static void test_guest_checks(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int64_t t = wall_ms() - 10000;
    job_add(f->s, "g1", "create", 601, t + 1);
    job_add(f->s, "g2", "stop", 602, t + 2);
    job_add(f->s, "g3", "reboot", 603, t + 3);
    job_add(f->s, "g4", "start", 604, t + 4); /* queued: not done */
    job_finish(f->s, "g1");
    sleep_ms(3);
    job_finish(f->s, "g2");
    job_finish(f->s, "g3");
    struct guest_check *g = NULL;
    size_t n = 0;
    OK(store_guest_pending(f->s, 0, 10, &g, &n, &e_));
    assert_int_equal(n, 2); /* not the stop, not the queued start */
    assert_string_equal(g[0].job, "g1");
    assert_string_equal(g[0].kind, "create");
    assert_string_equal(g[0].owner, "alice");
    assert_int_equal(g[0].vmid, 601);
    assert_true(g[0].finished_at > 0 && g[1].finished_at > g[0].finished_at);
    assert_string_equal(g[1].job, "g3");
    int64_t since = g[1].finished_at;
    free(g);
    OK(store_guest_pending(f->s, since, 10, &g, &n, &e_)); /* ended after `since` only */
    assert_int_equal(n, 0);
    free(g);
    struct guest_check c;
    EXPECT(STORE_E_NOTFOUND, store_guest_get(f->s, "g1", &c, &e));
    int64_t last = 0;
    OK(store_event_last_id(f->s, &last, &e_));
    struct store_event ev = {.vmid = 601};
    snprintf(ev.type, sizeof ev.type, "vm.guest_ready");
    snprintf(ev.owner, sizeof ev.owner, "alice");
    snprintf(ev.job, sizeof ev.job, "g1");
    OK(store_guest_close(f->s, "g1", GUEST_READY, "", &ev, &e_));
    snprintf(ev.type, sizeof ev.type, "vm.guest_silent");
    EXPECT(STORE_E_CONFLICT, store_guest_close(f->s, "g1", GUEST_SILENT, "late", &ev, &e));
    struct event_filter ef = {.after = last, .limit = 10};
    struct store_event *evs = NULL;
    size_t nev = 0;
    OK(store_event_list(f->s, &ef, &evs, &nev, &e_));
    assert_int_equal(nev, 1); /* the first outcome's, once */
    assert_string_equal(evs[0].type, "vm.guest_ready");
    assert_string_equal(evs[0].job, "g1");
    assert_int_equal(evs[0].vmid, 601);
    store_event_release(&evs[0]);
    free(evs);
    OK(store_guest_get(f->s, "g1", &c, &e_));
    assert_int_equal(c.state, GUEST_READY);
    assert_string_equal(c.kind, "create");
    assert_true(c.at > 0);
    OK(store_guest_close(f->s, "g3", GUEST_SKIPPED, "the VM was not left running", NULL, &e_));
    OK(store_guest_get(f->s, "g3", &c, &e_));
    assert_int_equal(c.state, GUEST_SKIPPED);
    assert_string_equal(c.detail, "the VM was not left running");
    OK(store_event_last_id(f->s, &since, &e_));
    assert_int_equal(since, last + 1); /* a skip logs nothing */
    OK(store_guest_pending(f->s, 0, 10, &g, &n, &e_));
    assert_int_equal(n, 0);
    free(g);
    /* a VM's last done start, with its outcome or waiting */
    OK(store_guest_last(f->s, 601, &c, &e_));
    assert_string_equal(c.job, "g1");
    assert_int_equal(c.state, GUEST_READY);
    OK(store_guest_last(f->s, 603, &c, &e_));
    assert_int_equal(c.state, GUEST_SKIPPED);
    EXPECT(STORE_E_NOTFOUND, store_guest_last(f->s, 604, &c, &e)); /* queued only */
    EXPECT(STORE_E_NOTFOUND, store_guest_last(f->s, 602, &c, &e)); /* a stop */
    job_add(f->s, "g5", "start", 601, t + 5);
    job_finish(f->s, "g5");
    OK(store_guest_last(f->s, 601, &c, &e_));
    assert_string_equal(c.job, "g5"); /* the last one */
    assert_int_equal(c.state, GUEST_WAITING);
    EXPECT(STORE_E_NOTFOUND, store_guest_close(f->s, "nope", GUEST_READY, "", NULL, &e));
    EXPECT(STORE_E_INVALID, store_guest_close(f->s, "g2", GUEST_WAITING, "", NULL, &e));
}

/* A look that finds nothing claimable (an idle worker's, once a second)
 * takes no write lock: it answers "none" at once while another connection
 * holds SQLite's write lock, where a claim that began with BEGIN IMMEDIATE
 * waited out the busy timeout (5 s) and failed. */
static void test_job_claim_empty_look_writes_nothing(void **state)
{
    struct fx *f = *state;
    if (g_bk != BK_SQLITE)
        skip(); /* PostgreSQL has no database-wide write lock to hold */
    int64_t t = wall_ms() - 10000;
    job_add(f->s, "j1", "start", 501, t);
    claim_expect(f->s, "w1", 60000, "j1"); /* running, leased: not claimable */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int64_t t0 = mono_ms();
    claim_expect(f->s, "w2", 60000, NULL);
    int64_t took = mono_ms() - t0;
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    if (took > 1000)
        fail_msg("an empty look waited %lld ms for the write lock", (long long)took);
    /* and a claimable job is still claimed */
    job_add(f->s, "j2", "start", 502, t + 1);
    claim_expect(f->s, "w2", 60000, "j2");
}

static int64_t lease_of(store *s, const char *id, char owner[64])
{
    struct job_rec j;
    OK(store_job_get(s, id, &j, &e_));
    int64_t until = j.lease_until;
    if (owner)
        snprintf(owner, 64, "%s", j.lease_owner);
    job_rec_release(&j);
    return until;
}

struct lock_hold {
    sqlite3 *db;
    long ms;
};

static void *lock_release_after(void *arg)
{
    struct lock_hold *h = arg;
    sleep_ms(h->ms); /* the fault: the lock held this long, as by a backup */
    sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
    return NULL;
}

/* A claim whose write waited for the database (SQLite's lock held 1.5 s by
 * another connection) takes no lease that ran out: the runner holding it
 * was waiting for the same lock to renew it (two instances on one SQLite
 * file took over each other's jobs that way as a lock was let go, and
 * both stopped). It takes a queued job; a prompt claim takes the lapsed
 * lease as ever. */
static void test_job_claim_after_a_wait_leaves_lapsed_leases(void **state)
{
    struct fx *f = *state;
    if (g_bk != BK_SQLITE)
        skip(); /* a database-wide write lock to hold */
    int64_t t = wall_ms() - 10000;
    job_add(f->s, "j1", "start", 501, t);
    claim_expect(f->s, "w1", 1, "j1"); /* its lease runs out at once */
    while (wall_ms() <= lease_of(f->s, "j1", NULL))
        sleep_ms(1);
    job_add(f->s, "j2", "start", 502, t + 1);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->url + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct lock_hold h = {db, 1500};
    pthread_t th;
    pthread_create(&th, NULL, lock_release_after, &h);
    claim_expect(f->s, "w2", 60000, "j2");
    pthread_join(th, NULL);
    sqlite3_close(db);
    char owner[64];
    lease_of(f->s, "j1", owner);
    assert_string_equal(owner, "w1");
    claim_expect(f->s, "w2", 60000, "j1");
}

/* One write renews every running job's lease an owner holds, and only
 * those: not another owner's, not one taken over from it, not a finished
 * or queued job, not one given up (expired on purpose). A lease that ran
 * out but that nobody took over is still the owner's: renewed. */
static void test_job_renew_owner(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int64_t t = wall_ms() - 10000;
    for (int i = 1; i <= 7; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        job_add(f->s, id, "start", 600 + i, t + i);
    }
    claim_expect(f->s, "me", 60000, "r1");
    claim_expect(f->s, "other", 60000, "r2");
    claim_expect(f->s, "me", 60000, "r3");
    claim_expect(f->s, "me", 1, "r4");
    while (wall_ms() <= lease_of(f->s, "r4", NULL))
        sleep_ms(1);
    claim_expect(f->s, "thief", 60000, "r4"); /* taken over from "me" */
    claim_expect(f->s, "me", 60000, "r5");
    claim_expect(f->s, "me", 1, "r6");
    while (wall_ms() <= lease_of(f->s, "r6", NULL))
        sleep_ms(1);
    job_finish(f->s, "r3");
    /* r5 given up (what store_job_expire_owner writes), r7 stays queued */
    db_exec(f->url, "UPDATE jobs SET lease_until = 0 WHERE id = 'r5'");
    int64_t before[8];
    char owner[8][64];
    for (int i = 1; i <= 7; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        before[i] = lease_of(f->s, id, owner[i]);
    }
    int64_t t0 = wall_ms();
    int n = -1;
    OK(store_job_renew_owner(f->s, "me", 120000, &n, &e_));
    assert_int_equal(n, 2);
    const bool renewed[8] = {[1] = true, [6] = true};
    for (int i = 1; i <= 7; i++) {
        char id[8], now_owner[64];
        snprintf(id, sizeof id, "r%d", i);
        int64_t until = lease_of(f->s, id, now_owner);
        assert_string_equal(now_owner, owner[i]); /* the owner is never changed */
        if (renewed[i] && until < t0 + 120000)
            fail_msg("%s (%s): lease until %lld, not renewed", id, owner[i], (long long)until);
        if (!renewed[i] && until != before[i])
            fail_msg("%s (%s): lease moved from %lld to %lld", id, owner[i], (long long)before[i],
                     (long long)until);
    }
    assert_string_equal(owner[4], "thief");
    assert_string_equal(owner[7], "");
    /* the lease renewed is the claimer's own: nobody else claims r1 or r6 */
    claim_expect(f->s, "other", 60000, "r5"); /* the given-up one is free */
    claim_expect(f->s, "other", 60000, "r7");
    claim_expect(f->s, "other", 60000, NULL);
    /* an owner that holds nothing; bad arguments */
    OK(store_job_renew_owner(f->s, "nobody", 1000, &n, &e_));
    assert_int_equal(n, 0);
    OK(store_job_renew_owner(f->s, "me", 1000, NULL, &e_));
    EXPECT(STORE_E_INVALID, store_job_renew_owner(f->s, "", 1000, &n, &e));
    EXPECT(STORE_E_INVALID, store_job_renew_owner(f->s, "me", 0, &n, &e));
}

static void test_job_claim_per_vm(void **state)
{
    struct fx *f = *state;
    int64_t t = wall_ms() - 10000;
    /* Three jobs on VM 600 and one on VM 601, interleaved in time. */
    job_add(f->s, "a1", "start", 600, t + 1);
    job_add(f->s, "a2", "stop", 600, t + 2);
    job_add(f->s, "b1", "start", 601, t + 3);
    job_add(f->s, "a3", "delete", 600, t + 4);
    job_add(f->s, "n1", "create", 0, t + 5); /* not tied to a VM yet */

    claim_expect(f->s, "w1", 60000, "a1");
    /* a2 waits for a1 (live lease); b1 and n1 are free to go. */
    claim_expect(f->s, "w2", 60000, "b1");
    claim_expect(f->s, "w2", 60000, "n1");
    claim_expect(f->s, "w2", 60000, NULL);
    job_finish(f->s, "a1");
    claim_expect(f->s, "w2", 60000, "a2"); /* then a2, before a3 */
    claim_expect(f->s, "w2", 60000, NULL);
    job_finish(f->s, "a2");
    claim_expect(f->s, "w3", 60000, "a3");

    /* An expired lease does not keep the runner's VM blocked: the job
     * itself is reclaimed, and it is still first in line for its VM. */
    job_add(f->s, "c1", "start", 700, t + 10);
    job_add(f->s, "c2", "stop", 700, t + 11);
    claim_expect(f->s, "w1", 1, "c1");
    sleep_ms(5);
    claim_expect(f->s, "w2", 60000, "c1");
    claim_expect(f->s, "w2", 60000, NULL);
}

static void test_job_events(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "ev", "create", 800, 0);
    OK(store_job_event_add(f->s, "ev", "reserve", 5, "VMID 800 reserved", &e_));
    OK(store_job_event_add(f->s, "ev", "clone", 40, "cloning from template", &e_));
    OK(store_job_event_add(f->s, "ev", "start", 90, NULL, &e_));
    EXPECT(STORE_E_NOTFOUND, store_job_event_add(f->s, "nojob", "x", 0, "m", &e));

    struct job_event *v = NULL;
    size_t n = 0;
    OK(store_job_events(f->s, "ev", 0, &v, &n, &e_));
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i].seq, (int64_t)i + 1);
    assert_string_equal(v[0].step, "reserve");
    assert_string_equal(v[1].message, "cloning from template");
    assert_int_equal(v[2].progress, 90);
    assert_true(v[0].ts <= v[2].ts);
    free(v);
    OK(store_job_events(f->s, "ev", 2, &v, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(v[0].step, "start");
    free(v);
}

static void test_job_list(void **state)
{
    struct fx *f = *state;
    /* 30 jobs: owners alternate, kinds cycle, every third done, VMIDs 500+i%5 */
    static const char *const kinds[] = {"create", "stop", "delete"};
    for (int i = 0; i < 30; i++) {
        struct job_rec j = {.state = i % 3 == 0 ? JOB_DONE : JOB_QUEUED, .vmid = 500 + i % 5};
        snprintf(j.id, sizeof j.id, "list-%02d", i);
        snprintf(j.kind, sizeof j.kind, "%s", kinds[i % 3]);
        snprintf(j.owner, sizeof j.owner, "%s", i % 2 ? "bob" : "alice");
        OK(store_job_insert(f->s, &j, &e_));
        job_rec_release(&j);
    }
    struct job_rec *v = NULL;
    size_t n = 0;
    int64_t next = -1;
    struct job_filter all = {.state = -1, .limit = 1000};
    OK(store_job_list(f->s, &all, &v, &n, &next, &e_));
    assert_int_equal(n, 30);
    assert_int_equal(next, 0);
    for (size_t i = 0; i < n; i++) { /* newest first */
        char want[32];
        snprintf(want, sizeof want, "list-%02d", 29 - (int)i);
        assert_string_equal(v[i].id, want);
        job_rec_release(&v[i]);
    }
    free(v);
    /* every filter at once: alice's (i even) done creates (i % 3 == 0) on VMID 500
     * (i % 5 == 0): i = 0 only, below 30 */
    struct job_filter one = {.owner = "alice", .kind = "create", .state = JOB_DONE, .vmid = 500};
    OK(store_job_list(f->s, &one, &v, &n, NULL, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(v[0].id, "list-00");
    job_rec_release(&v[0]);
    free(v);
    /* pages of 4 of bob's queued jobs: each newer than the next, none twice */
    struct job_filter page = {.owner = "bob", .state = JOB_QUEUED, .limit = 4};
    int seen = 0, prev = 100;
    do {
        OK(store_job_list(f->s, &page, &v, &n, &next, &e_));
        for (size_t i = 0; i < n; i++) {
            int k = atoi(v[i].id + 5);
            assert_true(k < prev && k % 2 == 1 && k % 3 != 0);
            assert_string_equal(v[i].owner, "bob");
            prev = k;
            seen++;
            job_rec_release(&v[i]);
        }
        free(v);
        page.before = next;
    } while (next);
    assert_int_equal(seen, 10); /* odd i below 30 not divisible by 3 */
    struct store_error e;
    struct job_filter bad = {.state = 9};
    EXPECT(STORE_E_INVALID, store_job_list(f->s, &bad, &v, &n, NULL, &e));
}

/* ---- history --------------------------------------------------------------- */

static void history_job(store *s, const char *id, enum job_state state, int64_t finished)
{
    struct job_rec j = {.state = state, .vmid = 0, .finished_at = finished};
    snprintf(j.id, sizeof j.id, "%s", id);
    snprintf(j.kind, sizeof j.kind, "create");
    snprintf(j.owner, sizeof j.owner, "alice");
    j.created_at = finished ? finished - 1000 : wall_ms() - 7200 * 1000;
    OK(store_job_insert(s, &j, &e_));
    job_rec_release(&j);
}

static bool job_gone(store *s, const char *id)
{
    struct job_rec j;
    struct store_error e;
    int rc = store_job_get(s, id, &j, &e);
    if (rc == STORE_OK)
        job_rec_release(&j);
    return rc == STORE_E_NOTFOUND;
}

static void test_history_prune(void **state)
{
    struct fx *f = *state;
    int64_t now = wall_ms(), old = now - 3600 * 1000;
    history_job(f->s, "old-done", JOB_DONE, old);
    history_job(f->s, "old-failed", JOB_FAILED, old);
    history_job(f->s, "old-left", JOB_FAILED, old); /* a leftover still names it */
    history_job(f->s, "new-done", JOB_DONE, now);
    history_job(f->s, "old-queued", JOB_QUEUED, 0); /* never, however old */
    history_job(f->s, "old-running", JOB_RUNNING, 0);
    OK(store_job_event_add(f->s, "old-done", "clone", 40, "cloning", &e_));
    OK(store_job_event_add(f->s, "new-done", "clone", 40, "cloning", &e_));
    OK(store_leftover_add(f->s, 901, "sv1", "old-left", STORE_LEFT_NO_ROOM, &e_));
    json_t *prev = NULL, *answer = json_pack("{s:s}", "job", "new-done");
    OK(store_idem_put(f->s, "alice", "k1", answer, &prev, &e_));
    json_decref(answer);
    json_decref(prev);

    struct store_history_pruned n;
    OK(store_history_prune(f->s, now - 60000, &n, &e_));
    assert_int_equal(n.jobs, 2);
    assert_int_equal(n.idem, 0);
    assert_true(job_gone(f->s, "old-done") && job_gone(f->s, "old-failed"));
    assert_false(job_gone(f->s, "old-left") || job_gone(f->s, "new-done") ||
                 job_gone(f->s, "old-queued") || job_gone(f->s, "old-running"));
    struct job_event *v = NULL;
    size_t ne = 9;
    struct store_error e;
    int rc = store_job_events(f->s, "old-done", 0, &v, &ne, &e);
    assert_true(rc == STORE_E_NOTFOUND || (rc == STORE_OK && ne == 0)); /* cascaded */
    free(v);
    OK(store_job_events(f->s, "new-done", 0, &v, &ne, &e_));
    assert_int_equal(ne, 1);
    free(v);

    /* later: the newer job and the answer go; the leftover's job stays
     * until the leftover is done */
    OK(store_history_prune(f->s, wall_ms() + 1000, &n, &e_));
    assert_int_equal(n.jobs, 1);
    assert_int_equal(n.idem, 1);
    json_t *ans = NULL;
    EXPECT(STORE_E_NOTFOUND, store_idem_get(f->s, "alice", "k1", &ans, &e));
    OK(store_leftover_done(f->s, 901, "sv1", 0, &e_));
    OK(store_history_prune(f->s, wall_ms() + 1000, &n, &e_));
    assert_int_equal(n.jobs, 1);
    assert_true(job_gone(f->s, "old-left"));
    assert_false(job_gone(f->s, "old-queued") || job_gone(f->s, "old-running"));
    OK(store_history_prune(f->s, wall_ms() + 1000, &n, &e_));
    assert_int_equal(n.jobs + n.idem, 0);
}

/* ---- VMID allocation ---------------------------------------------------- */

static void test_vmid_reserve(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vmid_range r[] = {{1000, 1004}, {2000, 2001}};
    int id = 0;
    OK(store_vmid_reserve(f->s, r, 2, NULL, 0, "j1", &id, &e_));
    assert_int_equal(id, 1000);
    int taken[] = {1001, 1003};
    OK(store_vmid_reserve(f->s, r, 2, taken, 2, "j2", &id, &e_));
    assert_int_equal(id, 1002);
    OK(store_vmid_reserve(f->s, r, 2, taken, 2, "j3", &id, &e_));
    assert_int_equal(id, 1004);
    /* First range exhausted (counting `taken`): the second one. */
    OK(store_vmid_reserve(f->s, r, 2, taken, 2, "j4", &id, &e_));
    assert_int_equal(id, 2000);
    OK(store_vmid_reserve(f->s, r, 2, taken, 2, "j5", &id, &e_));
    assert_int_equal(id, 2001);
    EXPECT(STORE_E_FULL, store_vmid_reserve(f->s, r, 2, taken, 2, "j6", &id, &e));
    assert_string_equal(e.message, "no free VMID in 1000-1004, 2000-2001");
    /* Without `taken`, 1001 is free for us. */
    OK(store_vmid_reserve(f->s, r, 2, NULL, 0, "j7", &id, &e_));
    assert_int_equal(id, 1001);

    int n = 0;
    OK(store_vmid_count(f->s, 1000, 1004, &n, &e_));
    assert_int_equal(n, 4);

    int unsorted[] = {5, 3};
    EXPECT(STORE_E_INVALID, store_vmid_reserve(f->s, r, 2, unsorted, 2, "j", &id, &e));
    struct vmid_range bad = {50, 60};
    EXPECT(STORE_E_INVALID, store_vmid_reserve(f->s, &bad, 1, NULL, 0, "j", &id, &e));

    /* a job finds the VMID it reserved (a step killed before writing it
     * down); none once it is used, none for a job that holds none */
    OK(store_vmid_reserved_by(f->s, "j2", &id, &e_));
    assert_int_equal(id, 1002);
    EXPECT(STORE_E_NOTFOUND, store_vmid_reserved_by(f->s, "j-none", &id, &e));
    assert_int_equal(id, 0);

    /* used: only from reserved. */
    OK(store_vmid_mark_used(f->s, 1000, &e_));
    OK(store_vmid_mark_used(f->s, 1000, &e_));
    EXPECT(STORE_E_NOTFOUND, store_vmid_mark_used(f->s, 1003, &e));
    EXPECT(STORE_E_NOTFOUND, store_vmid_reserved_by(f->s, "j1", &id, &e));
}

/* A move to a new VMID cut short by a kill (create.c move_vmid): the job
 * holds its own VMID and the next; the move made again finds the next, not
 * the job's own nor one a leftover names, and the job's end gives back
 * every other but those. */
static void test_vmid_reserved_other(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vmid_range r = {4000, 4009};
    int own = 0, left = 0, next = 0, id = -1, n = -1;
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "mover", &left, &e_));
    /* an earlier attempt's */
    OK(store_leftover_add(f->s, left, "sv1", "mover", STORE_LEFT_NO_ROOM, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "mover", &own, &e_));
    EXPECT(STORE_E_NOTFOUND, store_vmid_reserved_other(f->s, "mover", own, &id, &e));
    assert_int_equal(id, 0);
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "other-job", &id, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "mover", &next, &e_));
    OK(store_vmid_reserved_other(f->s, "mover", own, &id, &e_));
    assert_int_equal(id, next);
    /* moved (the job's VMID is `next`): its old one, when not a leftover's */
    OK(store_vmid_reserved_other(f->s, "mover", next, &id, &e_));
    assert_int_equal(id, own);

    /* the job ends under `own`: `next` goes back, the leftover's stays */
    OK(store_vmid_release_others(f->s, "mover", own, 0, &n, &e_));
    assert_int_equal(n, 1);
    char st[16];
    EXPECT(STORE_E_NOTFOUND, store_vmid_state(f->s, next, st, &e));
    OK(store_vmid_state(f->s, own, st, &e_));
    assert_string_equal(st, "reserved");
    OK(store_vmid_state(f->s, left, st, &e_));
    assert_string_equal(st, "reserved");
    EXPECT(STORE_E_NOTFOUND, store_vmid_reserved_other(f->s, "mover", own, &id, &e));
    OK(store_vmid_release_others(f->s, "mover", own, 0, &n, &e_)); /* again: nothing */
    assert_int_equal(n, 0);
    /* quarantined, with a quarantine */
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "mover", &next, &e_));
    OK(store_vmid_release_others(f->s, "mover", own, 60000, NULL, &e_));
    OK(store_vmid_state(f->s, next, st, &e_));
    assert_string_equal(st, "quarantine");
    EXPECT(STORE_E_INVALID, store_vmid_reserved_other(f->s, "", own, &id, &e));
}

static void test_vmid_quarantine_foreign(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vmid_range r = {3000, 3002};
    int id = 0;
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j1", &id, &e_));
    assert_int_equal(id, 3000);
    /* Proxmox has 3001, not ours: never handed out while it is marked. */
    OK(store_vmid_mark_foreign(f->s, 3001, &e_));
    EXPECT(STORE_E_CONFLICT, store_vmid_mark_used(f->s, 3001, &e));

    OK(store_vmid_release(f->s, 3000, 60000, &e_)); /* quarantined for a minute */
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j2", &id, &e_));
    assert_int_equal(id, 3002);
    EXPECT(STORE_E_FULL, store_vmid_reserve(f->s, &r, 1, NULL, 0, "j3", &id, &e));
    int n = 0;
    OK(store_vmid_count(f->s, 3000, 3002, &n, &e_));
    assert_int_equal(n, 3);
    /* of them 3000 is quarantined: allocated, but no VM has it (proxctl os
     * list counted it as used) */
    int q = -1;
    OK(store_vmid_counts(f->s, 3000, 3002, &n, &q, &e_));
    assert_int_equal(n, 3);
    assert_int_equal(q, 1);

    /* A short quarantine runs out, and the ID is reused in place. */
    OK(store_vmid_release(f->s, 3002, 1, &e_));
    sleep_ms(5);
    OK(store_vmid_count(f->s, 3000, 3002, &n, &e_));
    assert_int_equal(n, 2);
    OK(store_vmid_counts(f->s, 3000, 3002, &n, &q, &e_));
    assert_int_equal(n, 2);
    assert_int_equal(q, 1); /* 3002's ran out: free, neither allocated nor quarantined */
    OK(store_vmid_counts(f->s, 3001, 3002, &n, &q, &e_));
    assert_int_equal(q, 0);
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j4", &id, &e_));
    assert_int_equal(id, 3002);

    /* Release without quarantine frees it at once; the foreign ID too. */
    OK(store_vmid_release(f->s, 3001, 0, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j5", &id, &e_));
    assert_int_equal(id, 3001);
    EXPECT(STORE_E_NOTFOUND, store_vmid_release(f->s, 3999, 0, &e));
}

/* A foreign VMID goes back (store_vmid_release_foreign) only while it is
 * still foreign and was last marked before the read that no longer showed
 * its VM began: a mark written since, or another state, wins. */
static void test_vmid_foreign_release(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vmid_range r = {3100, 3104};
    struct vmid_foreign *fl = NULL;
    size_t n = 0;
    char st[16];
    int id = 0;
    OK(store_vmid_foreign_list(f->s, &fl, &n, &e_));
    assert_int_equal(n, 0);
    assert_null(fl);
    int64_t before = wall_ms();
    OK(store_vmid_mark_foreign(f->s, 3102, &e_));
    OK(store_vmid_mark_foreign(f->s, 3100, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j1", &id, &e_));
    assert_int_equal(id, 3101);
    OK(store_vmid_foreign_list(f->s, &fl, &n, &e_));
    assert_int_equal(n, 2); /* the reserved one is not listed */
    assert_int_equal(fl[0].vmid, 3100);
    assert_int_equal(fl[1].vmid, 3102);
    assert_true(fl[0].marked_at >= before && fl[1].marked_at >= before);
    int64_t marked = fl[0].marked_at;
    free(fl);

    /* a read begun at the mark (or before) may not show the VM: kept */
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3100, marked, 0, &e));
    OK(store_vmid_state(f->s, 3100, st, &e_));
    assert_string_equal(st, "foreign");
    /* one begun after it: given back, quarantined */
    OK(store_vmid_release_foreign(f->s, 3100, marked + 1, 60000, &e_));
    OK(store_vmid_state(f->s, 3100, st, &e_));
    assert_string_equal(st, "quarantine");
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j2", &id, &e_));
    assert_int_equal(id, 3103); /* not 3100: its quarantine runs */
    /* no longer foreign: nothing written */
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3100, wall_ms() + 1, 0, &e));
    OK(store_vmid_state(f->s, 3100, st, &e_));
    assert_string_equal(st, "quarantine");
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3101, wall_ms() + 1, 0, &e));
    OK(store_vmid_state(f->s, 3101, st, &e_));
    assert_string_equal(st, "reserved");
    EXPECT(STORE_E_NOTFOUND, store_vmid_release_foreign(f->s, 3104, wall_ms() + 1, 0, &e));

    /* marked again after the read began (a creation met the VM again, or
     * another process did): kept */
    int64_t read_began = wall_ms();
    sleep_ms(2);
    OK(store_vmid_mark_foreign(f->s, 3102, &e_));
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3102, read_began, 0, &e));
    assert_non_null(strstr(e.message, "marked again"));
    /* without a quarantine: free at once */
    OK(store_vmid_release_foreign(f->s, 3102, wall_ms() + 1, 0, &e_));
    EXPECT(STORE_E_NOTFOUND, store_vmid_state(f->s, 3102, st, &e));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "j3", &id, &e_));
    assert_int_equal(id, 3102);
    OK(store_vmid_foreign_list(f->s, &fl, &n, &e_));
    assert_int_equal(n, 0);
    free(fl);
    /* named by a job under way (a creation killed between the mark and
     * its move), a leftover, a live record: kept */
    OK(store_vmid_mark_foreign(f->s, 3104, &e_));
    job_add(f->s, "jf", "create", 3104, wall_ms());
    sleep_ms(2);
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3104, wall_ms(), 0, &e));
    assert_non_null(strstr(e.message, "named by"));
    struct job_rec jr;
    OK(store_job_get(f->s, "jf", &jr, &e_));
    jr.state = JOB_DONE;
    OK(store_job_update(f->s, &jr, &e_));
    job_rec_release(&jr);
    OK(store_leftover_add(f->s, 3104, "sv1", "jf", STORE_LEFT_NO_ROOM, &e_));
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3104, wall_ms(), 0, &e));
    OK(store_leftover_forget(f->s, 3104, "sv1", &e_));
    struct vm_rec v = vm_new(3104, "alice", "ubuntu");
    OK(store_vm_insert(f->s, &v, &e_));
    EXPECT(STORE_E_CONFLICT, store_vmid_release_foreign(f->s, 3104, wall_ms(), 0, &e));
    OK(store_vmid_state(f->s, 3104, st, &e_));
    assert_string_equal(st, "foreign");
    v.state = VMS_FAILED;
    OK(store_vm_update(f->s, &v, &e_));
    vm_rec_release(&v);
    OK(store_vmid_release_foreign(f->s, 3104, wall_ms() + 1, 0, &e_));
    EXPECT(STORE_E_NOTFOUND, store_vmid_state(f->s, 3104, st, &e));
    EXPECT(STORE_E_INVALID, store_vmid_release_foreign(f->s, 3102, 0, -1, &e));
    EXPECT(STORE_E_INVALID, store_vmid_foreign_list(f->s, NULL, &n, &e));
}

/* A half-made VM left for the reconciler keeps its VMID reserved to its
 * creation until it is forgotten; only then does the ID go back, and only
 * if that creation still holds it and no other node has a leftover of it. */
static void test_leftovers(void **state)
{
    struct fx *f = *state;
    struct vmid_range r = {5000, 5009};
    int a = 0, b = 0;
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-a", &a, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-b", &b, &e_));
    assert_int_equal(a, 5000);
    OK(store_leftover_add(f->s, a, "sv1", "job-a", STORE_LEFT_NO_ROOM, &e_));
    OK(store_leftover_add(f->s, a, "sv1", "job-a", STORE_LEFT_NO_ROOM, &e_)); /* again: one row */
    OK(store_leftover_add(f->s, a, "sv3", "job-a", STORE_LEFT_NO_ROOM, &e_));
    OK(store_leftover_add(f->s, b, "sv2", "job-other", STORE_LEFT_NO_ROOM, &e_));
    struct leftover *l = NULL;
    size_t n = 0;
    OK(store_leftover_list(f->s, &l, &n, &e_));
    assert_int_equal(n, 3);
    int seen_a = 0;
    for (size_t i = 0; i < n; i++) {
        if (l[i].vmid == a) {
            seen_a++;
            assert_string_equal(l[i].job, "job-a");
            assert_true(l[i].created_at > 0);
        }
    }
    assert_int_equal(seen_a, 2);
    free(l);
    int id = 0;
    /* still reserved: never handed out */
    OK(store_leftover_done(f->s, a, "sv1", 0, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-c", &id, &e_));
    assert_int_equal(id, 5002); /* sv3 still has a leftover of 5000 */
    OK(store_leftover_done(f->s, a, "sv3", 0, &e_));
    OK(store_leftover_done(f->s, a, "sv3", 0, &e_)); /* not recorded: fine */
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-d", &id, &e_));
    assert_int_equal(id, 5000); /* released at once (no quarantine) */
    /* a leftover whose VMID is held by another job does not release it */
    OK(store_leftover_done(f->s, b, "sv2", 60000, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-e", &id, &e_));
    assert_int_equal(id, 5003);
    OK(store_vmid_mark_used(f->s, b, &e_)); /* job-b's reservation is intact */
    OK(store_leftover_list(f->s, &l, &n, &e_));
    assert_int_equal(n, 0);
    free(l);

    /* a stale leftover (its creation went on under the VMID) is forgotten
     * and the VMID stays as it is, reserved to the job or used */
    char st[16];
    int g = 0;
    OK(store_vmid_reserve(f->s, &r, 1, NULL, 0, "job-g", &g, &e_));
    OK(store_leftover_add(f->s, g, "sv1", "job-g", STORE_LEFT_NO_ROOM, &e_));
    OK(store_leftover_add(f->s, b, "sv2", "job-b", STORE_LEFT_NO_ROOM, &e_));
    OK(store_leftover_forget(f->s, g, "sv1", &e_));
    OK(store_leftover_forget(f->s, b, "sv2", &e_));
    OK(store_leftover_forget(f->s, b, "sv2", &e_)); /* not recorded: fine */
    OK(store_leftover_list(f->s, &l, &n, &e_));
    assert_int_equal(n, 0);
    free(l);
    OK(store_vmid_state(f->s, g, st, &e_));
    assert_string_equal(st, "reserved");
    OK(store_vmid_reserved_by(f->s, "job-g", &id, &e_));
    assert_int_equal(id, g);
    OK(store_vmid_state(f->s, b, st, &e_));
    assert_string_equal(st, "used");
    struct store_error e;
    EXPECT(STORE_E_INVALID, store_leftover_forget(f->s, g, "", &e));
}

/* A nearly full range of 1000 IDs: the walk must stay one query. */
static void test_vmid_big_range(void **state)
{
    struct fx *f = *state;
    struct vmid_range r = {10000, 10999};
    int *taken = xmalloc(500 * sizeof *taken);
    for (int i = 0; i < 500; i++)
        taken[i] = 10000 + 2 * i; /* the even IDs */
    int id = 0;
    int64_t t0 = mono_ms();
    for (int i = 0; i < 498; i++) {
        OK(store_vmid_reserve(f->s, &r, 1, taken, 500, "j", &id, &e_));
        assert_int_equal(id, 10001 + 2 * i);
    }
    int64_t ms = mono_ms() - t0;
    print_message("[ figures  ] 498 reservations in a 1000-ID range filling up: %lld ms "
                  "(%.0f/s)\n",
                  (long long)ms, 498.0 * 1000.0 / (double)(ms ? ms : 1));
    OK(store_vmid_reserve(f->s, &r, 1, taken, 500, "j", &id, &e_));
    OK(store_vmid_reserve(f->s, &r, 1, taken, 500, "j", &id, &e_));
    assert_int_equal(id, 10999);
    struct store_error e;
    EXPECT(STORE_E_FULL, store_vmid_reserve(f->s, &r, 1, taken, 500, "j", &id, &e));
    free(taken);
}

/* ---- the event log ------------------------------------------------------ */

static size_t events_of(store *s, const char *type, struct store_event **v)
{
    struct event_filter f = {.type = type, .limit = 1000};
    size_t n = 0;
    OK(store_event_list(s, &f, v, &n, &e_));
    return n;
}

static void events_free(struct store_event *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_event_release(&v[i]);
    free(v);
}

static size_t count_events(store *s, const char *type)
{
    struct store_event *v = NULL;
    size_t n = events_of(s, type, &v);
    events_free(v, n);
    return n;
}

/* Record writes log what changed, in their own transaction, once. */
static void test_event_log_vm(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec r = vm_new(900, "alice", "debian12");
    OK(store_vm_insert(f->s, &r, &e_));
    assert_int_equal(count_events(f->s, NULL), 0); /* creating: nothing yet */
    r.state = VMS_ENABLED;
    snprintf(r.node, sizeof r.node, "sv1");
    snprintf(r.power, sizeof r.power, "running");
    snprintf(r.job, sizeof r.job, "job-1");
    OK(store_vm_update(f->s, &r, &e_));
    OK(store_vm_update(f->s, &r, &e_)); /* written again unchanged: nothing */
    struct store_event *v = NULL;
    size_t n = events_of(f->s, NULL, &v);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].type, "vm.created");
    assert_string_equal(v[0].owner, "alice");
    assert_string_equal(v[0].node, "sv1");
    assert_string_equal(v[0].job, "job-1");
    assert_int_equal(v[0].vmid, 900);
    json_t *ch = json_object_get(v[0].data, "changes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "power"), "to")),
                        "running");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(v[0].data, "vm"), "disk_gb")), 20);
    int64_t first = v[0].id;
    events_free(v, n);

    snprintf(r.power, sizeof r.power, "stopped");
    OK(store_vm_update(f->s, &r, &e_));
    struct vm_rec g;
    OK(store_vm_get(f->s, 900, &g, &e_));
    /* the reconciler's repair (read_at): a configuration changed outside */
    g.cores = 4;
    OK(store_vm_update_if(f->s, &g, VMS_ENABLED, g.updated_at, &e_));
    /* a conditional write that does not apply logs nothing */
    g.cores = 8;
    EXPECT(STORE_E_CONFLICT, store_vm_update_if(f->s, &g, VMS_DELETING, 0, &e));
    vm_rec_release(&g);
    OK(store_vm_get(f->s, 900, &g, &e_));
    snprintf(g.node, sizeof g.node, "sv2");
    g.disk_gb = 30;
    OK(store_vm_update(f->s, &g, &e_));
    g.state = VMS_DELETED;
    OK(store_vm_update(f->s, &g, &e_));
    vm_rec_release(&g);
    n = events_of(f->s, NULL, &v);
    const char *want[] = {"vm.created", "vm.stopped", "vm.drift",
                          "vm.moved",   "vm.resized", "vm.deleted"};
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(v[i].type, want[i]);
        assert_true(i == 0 || v[i].id > v[i - 1].id);
    }
    assert_true(json_is_true(json_object_get(v[2].data, "observed")));
    assert_true(json_is_false(json_object_get(v[1].data, "observed")));
    events_free(v, n);

    /* filters: type, prefix, owner, after, limit */
    assert_int_equal(count_events(f->s, "vm.moved"), 1);
    assert_int_equal(count_events(f->s, "vm.*"), 6);
    assert_int_equal(count_events(f->s, "node.*"), 0);
    struct event_filter fl = {.after = first, .limit = 2, .owner = "alice"};
    OK(store_event_list(f->s, &fl, &v, &n, &e_));
    assert_int_equal(n, 2);
    assert_string_equal(v[0].type, "vm.stopped");
    events_free(v, n);
    fl = (struct event_filter){.owner = "bob"};
    OK(store_event_list(f->s, &fl, &v, &n, &e_));
    assert_int_equal(n, 0);
    free(v);
    fl = (struct event_filter){.after = -1};
    EXPECT(STORE_E_INVALID, store_event_list(f->s, &fl, &v, &n, &e));

    /* retention: pruned, and ids are never handed out again */
    int64_t last = 0, pruned = 0;
    OK(store_event_last_id(f->s, &last, &e_));
    OK(store_event_prune(f->s, wall_ms() + 1, &pruned, &e_));
    assert_int_equal(pruned, 6);
    assert_int_equal(count_events(f->s, NULL), 0);
    struct store_event ev = {0};
    snprintf(ev.type, sizeof ev.type, "node.cordoned");
    snprintf(ev.node, sizeof ev.node, "sv3");
    OK(store_event_append(f->s, &ev, &e_));
    assert_true(ev.id > last);
}

/* A job's outcome with its record's change: one transaction, after the
 * record's own events, once per job however often it is written again,
 * and nothing when the write does not apply. */
static void test_event_log_with_record(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int64_t since = wall_ms();
    struct vm_rec r = vm_new(910, "alice", "ubuntu");
    r.state = VMS_ENABLED;
    snprintf(r.node, sizeof r.node, "sv1");
    snprintf(r.power, sizeof r.power, "running");
    OK(store_vm_insert(f->s, &r, &e_));
    struct store_event ev = {.vmid = 910, .data = json_pack("{s:s}", "os", "debian")};
    snprintf(ev.type, sizeof ev.type, "vm.reinstalled");
    snprintf(ev.owner, sizeof ev.owner, "alice");
    snprintf(ev.job, sizeof ev.job, "job-r1");
    size_t before = count_events(f->s, "vm.*");
    /* a write that does not apply logs nothing, not even the job's event */
    snprintf(r.os, sizeof r.os, "debian");
    EXPECT(STORE_E_CONFLICT, store_vm_update_logged(f->s, &r, VMS_DELETING, &ev, since, &e));
    assert_int_equal(count_events(f->s, "vm.*"), before);
    OK(store_vm_update_logged(f->s, &r, VMS_ENABLED, &ev, since, &e_));
    OK(store_vm_update_logged(f->s, &r, VMS_ENABLED, &ev, since, &e_)); /* again */
    struct store_event *v = NULL;
    size_t n = events_of(f->s, "vm.*", &v);
    assert_int_equal(n, before + 2);
    assert_string_equal(v[n - 2].type, "vm.updated"); /* os: ubuntu -> debian */
    assert_string_equal(v[n - 1].type, "vm.reinstalled");
    assert_string_equal(v[n - 1].job, "job-r1");
    assert_string_equal(json_string_value(json_object_get(v[n - 1].data, "os")), "debian");
    events_free(v, n);
    /* another job, the record unchanged (the same OS again): its own event */
    snprintf(ev.job, sizeof ev.job, "job-r2");
    OK(store_vm_update_logged(f->s, &r, VMS_ENABLED, &ev, since, &e_));
    assert_int_equal(count_events(f->s, "vm.reinstalled"), 2);
    assert_int_equal(count_events(f->s, "vm.updated"), 1);
    /* an event of the job from before `since` does not count */
    snprintf(ev.job, sizeof ev.job, "job-r1");
    OK(store_vm_update_logged(f->s, &r, VMS_ENABLED, &ev, wall_ms() + 1000, &e_));
    assert_int_equal(count_events(f->s, "vm.reinstalled"), 3);
    snprintf(ev.job, sizeof ev.job, "%s", "");
    EXPECT(STORE_E_INVALID, store_vm_update_logged(f->s, &r, VMS_ENABLED, &ev, since, &e));
    store_event_release(&ev);
}

/* The only event after id `after` is an admin's webhook change of `type`
 * for webhook `name` by "ops" (a seek's from and to, when from >= 0). */
static void webhook_event_is(store *s, int64_t after, const char *type, const char *name,
                             int64_t from, int64_t to)
{
    struct event_filter ef = {.after = after, .limit = 10};
    struct store_event *ev = NULL;
    size_t n = 0;
    OK(store_event_list(s, &ef, &ev, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].type, type);
    assert_string_equal(ev[0].owner, "");
    assert_string_equal(json_string_value(json_object_get(ev[0].data, "webhook")), name);
    assert_string_equal(json_string_value(json_object_get(ev[0].data, "by")), "ops");
    if (from >= 0) {
        assert_int_equal(json_integer_value(json_object_get(ev[0].data, "from")), from);
        assert_int_equal(json_integer_value(json_object_get(ev[0].data, "to")), to);
    }
    store_event_release(&ev[0]);
    free(ev);
}

static void test_event_log_jobs_nodes(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "jf", "start", 901, 0);
    struct job_rec j;
    OK(store_job_get(f->s, "jf", &j, &e_));
    j.state = JOB_FAILED;
    snprintf(j.error, sizeof j.error, "it broke");
    OK(store_job_checkpoint(f->s, &j, "failed", &e_));
    OK(store_job_checkpoint(f->s, &j, "failed", &e_)); /* again: not told twice */
    job_rec_release(&j);
    struct store_event *v = NULL;
    size_t n = events_of(f->s, "job.failed", &v);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].job, "jf");
    assert_int_equal(v[0].vmid, 901);
    assert_string_equal(json_string_value(json_object_get(v[0].data, "error")), "it broke");
    events_free(v, n);

    bool changed = true;
    OK(store_node_health_set(f->s, "sv1", true, "", &changed, &e_));
    assert_false(changed); /* first seen up */
    OK(store_node_health_set(f->s, "sv1", false, "no answer", &changed, &e_));
    assert_true(changed);
    OK(store_node_health_set(f->s, "sv1", false, "no answer", &changed, &e_));
    assert_false(changed); /* another instance saw it too */
    OK(store_node_health_set(f->s, "sv1", true, "", &changed, &e_));
    assert_true(changed);
    OK(store_node_health_set(f->s, "sv2", false, "refused", &changed, &e_));
    assert_true(changed); /* first seen down */
    assert_int_equal(count_events(f->s, "node.down"), 2);
    assert_int_equal(count_events(f->s, "node.up"), 1);

    /* webhook cursors: one holder, moves only by it, never back */
    int64_t last = 0;
    OK(store_event_last_id(f->s, &last, &e_));
    struct webhook_cursor c;
    OK(store_webhook_claim(f->s, "h", "A", 30000, &c, &e_));
    assert_int_equal(c.after, last); /* a new webhook starts at the end */
    EXPECT(STORE_E_CONFLICT, store_webhook_claim(f->s, "h", "B", 30000, &c, &e));
    EXPECT(STORE_E_CONFLICT, store_webhook_advance(f->s, "h", "B", 0, last + 5, 30000, 1, 0, &e));
    OK(store_webhook_advance(f->s, "h", "A", 0, last + 5, 30000, 1, 0, &e_));
    OK(store_webhook_advance(f->s, "h", "A", 0, last + 2, 30000, 0, 1, &e_));
    OK(store_webhook_release(f->s, "h", "A", &e_));
    OK(store_webhook_claim(f->s, "h", "B", 30000, &c, &e_));
    assert_int_equal(c.after, last + 5);
    assert_int_equal(c.delivered, 1);
    assert_int_equal(c.dropped, 1);
    assert_string_equal(c.lease_owner, "B");

    /* a failure is told only by the holder; the list counts what waits */
    EXPECT(STORE_E_CONFLICT, store_webhook_failed(f->s, "h", "A", 0, "HTTP 500", &e));
    OK(store_webhook_failed(f->s, "h", "B", 0, "HTTP 502", &e_));
    char longer[300];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    EXPECT(STORE_E_INVALID, store_webhook_failed(f->s, "h", "B", 0, longer, &e));
    OK(store_webhook_claim(f->s, "g", "A", 30000, &c, &e_)); /* at the log's end */
    assert_int_equal(c.seek_at, 0);
    OK(store_webhook_advance(f->s, "h", "B", 0, last - 1, 30000, 0, 0, &e_)); /* never back */
    struct store_event ev = {0};
    snprintf(ev.type, sizeof ev.type, "test.tick");
    OK(store_event_append(f->s, &ev, &e_));
    struct webhook_status *w = NULL;
    size_t nw = 0;
    OK(store_webhook_list(f->s, &w, &nw, &e_));
    assert_int_equal(nw, 2);
    assert_string_equal(w[0].c.name, "g"); /* by name */
    assert_int_equal(w[0].behind, 1);
    assert_true(w[0].oldest_ts > 0);
    assert_string_equal(w[0].last_error, "");
    assert_int_equal(w[0].last_error_at, 0);
    assert_int_equal(w[0].last_dropped_at, 0);
    assert_true(w[1].last_dropped_at > 0); /* its advance with a drop */
    assert_string_equal(w[1].c.name, "h");
    assert_int_equal(w[1].c.after, last + 5);
    assert_int_equal(w[1].behind, 0); /* its cursor is past the log's end */
    assert_int_equal(w[1].oldest_ts, 0);
    assert_string_equal(w[1].last_error, "HTTP 502");
    assert_true(w[1].last_error_at > 0 && w[1].updated_at >= w[1].last_error_at);
    assert_string_equal(w[1].c.lease_owner, "B");
    free(w);

    /* a seek moves the cursor either way and counts itself: the holder's
     * next write naming the count it read fails, its next claim reads the
     * new cursor; the lease stays its own */
    int64_t end = 0;
    OK(store_event_last_id(f->s, &end, &e_));
    struct webhook_cursor was;
    EXPECT(STORE_E_NOTFOUND, store_webhook_seek(f->s, "nope", 0, "ops", &was, &e));
    EXPECT(STORE_E_INVALID, store_webhook_seek(f->s, "h", end + 1, "ops", &was, &e));
    assert_string_equal(e.field, "after");
    EXPECT(STORE_E_INVALID, store_webhook_seek(f->s, "h", -1, "ops", &was, &e));
    OK(store_webhook_seek(f->s, "h", 1, "ops", &was, &e_)); /* back */
    assert_int_equal(was.after, last + 5);
    /* told in the log, once: the refused seeks told nothing */
    webhook_event_is(f->s, end, "webhook.cursor_moved", "h", last + 5, 1);
    assert_string_equal(was.lease_owner, "B");
    assert_int_equal(was.gen, 1); /* counting this seek */
    assert_true(was.seek_at > 0);
    EXPECT(STORE_E_CONFLICT, store_webhook_advance(f->s, "h", "B", 0, end, 30000, 1, 0, &e));
    EXPECT(STORE_E_CONFLICT, store_webhook_failed(f->s, "h", "B", 0, "HTTP 400", &e));
    OK(store_webhook_get(f->s, "h", &c, &e_));
    assert_int_equal(c.after, 1);
    assert_int_equal(c.gen, 1);
    assert_string_equal(c.lease_owner, "B");
    assert_true(c.lease_until > 0);
    EXPECT(STORE_E_CONFLICT, store_webhook_claim(f->s, "h", "A", 30000, &c, &e)); /* B's */
    OK(store_webhook_claim(f->s, "h", "B", 30000, &c, &e_));
    assert_int_equal(c.after, 1);
    OK(store_webhook_advance(f->s, "h", "B", c.gen, 2, 30000, 1, 0, &e_));
    OK(store_webhook_seek(f->s, "h", end, "ops", &was, &e_)); /* forward, to the log's end */
    assert_int_equal(was.after, 2);
    OK(store_webhook_claim(f->s, "h", "B", 30000, &c, &e_));
    assert_int_equal(c.after, end);
    assert_int_equal(c.gen, 2);
    OK(store_webhook_failed(f->s, "h", "B", 2, "HTTP 400", &e_));
    EXPECT(STORE_E_NOTFOUND, store_webhook_get(f->s, "nope", &c, &e));

    /* forgotten only once no instance holds it */
    EXPECT(STORE_E_CONFLICT, store_webhook_forget(f->s, "h", "ops", &was, &e));
    assert_string_equal(was.lease_owner, "B");
    OK(store_webhook_release(f->s, "h", "B", &e_));
    OK(store_event_last_id(f->s, &end, &e_));
    OK(store_webhook_forget(f->s, "h", "ops", &was, &e_));
    webhook_event_is(f->s, end, "webhook.forgotten", "h", -1, -1);
    EXPECT(STORE_E_NOTFOUND, store_webhook_forget(f->s, "h", "ops", &was, &e));
    EXPECT(STORE_E_NOTFOUND, store_webhook_get(f->s, "h", &c, &e));
}

/* A seek tells the cursor as it was when it moved it: on PostgreSQL a
 * holder's cursor move under way (its row locked, not yet committed) is
 * waited for, not read past ("was 3" when the move made it 4). */
static void *hold_cursor_main(void *arg)
{
    PGconn *c = PQconnectdb(arg);
    PGresult *r =
        PQexec(c, "BEGIN; UPDATE webhook_cursor SET after = after + 1 WHERE name = 'race';"
                  " SELECT pg_sleep(1); COMMIT");
    PQclear(r);
    PQfinish(c);
    return NULL;
}

static void test_webhook_seek_waits_for_a_move(void **state)
{
    struct fx *f = *state;
    if (g_bk != BK_PG)
        skip(); /* SQLite: one writer at a time, nothing to wait for */
    for (int i = 0; i < 3; i++) {
        struct store_event ev = {0};
        snprintf(ev.type, sizeof ev.type, "test.tick");
        OK(store_event_append(f->s, &ev, &e_));
    }
    struct webhook_cursor c, was;
    OK(store_webhook_claim(f->s, "race", "A", 30000, &c, &e_));
    int64_t before = c.after;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hold_cursor_main, (void *)f->url), 0);
    /* until the move holds the row (its transaction asleep) */
    int64_t end = mono_ms() + 10000;
    for (;;) {
        struct buf out = BUF_INIT(BUF_UNLIMITED);
        db_rows(f->url,
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%pg_sleep(1)%' AND pid <> pg_backend_pid()",
                &out);
        bool asleep = strcmp(buf_str(&out), "1\n") == 0;
        buf_release(&out);
        if (asleep)
            break;
        assert_true(mono_ms() < end);
        sleep_ms(10);
    }
    OK(store_webhook_seek(f->s, "race", 0, "ops", &was, &e_));
    pthread_join(th, NULL);
    assert_int_equal(was.after, before + 1);
    OK(store_webhook_get(f->s, "race", &c, &e_));
    assert_int_equal(c.after, 0);
}

/* Readers paging with `after` never skip an event: ids are commit-ordered
 * (PostgreSQL: drawn under the log's lock), whatever the writers' timing. */
struct ev_writer {
    store *s;
    int n;
    atomic_int *finished;
};

static void *ev_writer_main(void *arg)
{
    struct ev_writer *w = arg;
    for (int i = 0; i < w->n; i++) {
        struct store_event ev = {0};
        snprintf(ev.type, sizeof ev.type, "test.tick");
        struct store_error e;
        if (store_event_append(w->s, &ev, &e))
            fail_msg("append: %s", e.message);
    }
    atomic_fetch_add(w->finished, 1);
    return NULL;
}

static void test_event_ids_commit_ordered(void **state)
{
    struct fx *f = *state;
    enum { WRITERS = 6, EACH = 150 };
    pthread_t th[WRITERS];
    atomic_int finished = 0;
    struct ev_writer w = {f->s, EACH, &finished};
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ev_writer_main, &w), 0);
    int64_t after = 0;
    size_t seen = 0;
    for (;;) { /* a reader moving its cursor as fast as it can */
        bool last = atomic_load(&finished) == WRITERS;
        struct event_filter fl = {.after = after, .limit = 1000};
        struct store_event *v = NULL;
        size_t n = 0;
        OK(store_event_list(f->s, &fl, &v, &n, &e_));
        if (n)
            after = v[n - 1].id;
        seen += n;
        events_free(v, n);
        if (last && n == 0)
            break;
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    /* an id committed after a larger one was read would be behind the
     * cursor: never seen */
    assert_int_equal(seen, (size_t)WRITERS * EACH);
}

/* ---- concurrency -------------------------------------------------------- */

#define NTHREADS 8
#define PER_THREAD 50
#define NPROCS 4
#define PER_PROC 50

struct worker {
    store *s;
    int ids[PER_THREAD];
    int errors;
    char msg[512];
};

static void *reserve_worker(void *arg)
{
    struct worker *w = arg;
    struct vmid_range r[] = {{100, 299}, {5000, 5999}};
    for (int i = 0; i < PER_THREAD; i++) {
        struct store_error e;
        char job[32];
        snprintf(job, sizeof job, "t%p-%d", arg, i);
        if (store_vmid_reserve(w->s, r, 2, NULL, 0, job, &w->ids[i], &e) != STORE_OK) {
            w->errors++;
            snprintf(w->msg, sizeof w->msg, "%s", e.message);
        }
    }
    return NULL;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void assert_distinct(int *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, cmp_int);
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] >= 100);
        if (i)
            assert_true(ids[i] != ids[i - 1]);
    }
}

static void test_vmid_threads(void **state)
{
    struct fx *f = *state;
    struct worker w[NTHREADS];
    pthread_t th[NTHREADS];
    int64_t t0 = mono_ms();
    for (int i = 0; i < NTHREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].s = f->s;
        assert_int_equal(pthread_create(&th[i], NULL, reserve_worker, &w[i]), 0);
    }
    int all[NTHREADS * PER_THREAD];
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors)
            fail_msg("thread %d: %d errors, last: %s", i, w[i].errors, w[i].msg);
        memcpy(all + i * PER_THREAD, w[i].ids, sizeof w[i].ids);
    }
    int64_t ms = mono_ms() - t0;
    print_message("[ figures  ] %d threads x %d reservations: %lld ms (%.0f/s)\n", NTHREADS,
                  PER_THREAD, (long long)ms,
                  NTHREADS * PER_THREAD * 1000.0 / (double)(ms ? ms : 1));
    assert_distinct(all, NTHREADS * PER_THREAD);
    int n = 0;
    OK(store_vmid_count(f->s, 100, 5999, &n, &e_));
    assert_int_equal(n, NTHREADS * PER_THREAD);
    /* 200 from the first range, the rest spilled into the second. */
    assert_int_equal(all[199], 299);
    assert_int_equal(all[200], 5000);
}

static void test_vmid_processes(void **state)
{
    struct fx *f = *state;
    /* The children open a fresh file concurrently (racing the migration
     * too), so the parent's handle and file are not involved. */
    char *url = fx_url(f, "procs");
    assert_non_null(url);
    int fds[NPROCS][2];
    pid_t pids[NPROCS];
    int64_t t0 = mono_ms();
    for (int p = 0; p < NPROCS; p++) {
        assert_int_equal(pipe(fds[p]), 0);
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(fds[p][0]);
            struct store_error e;
            /* The parent's handle must not be used here: refused. */
            int n = 0;
            if (store_vmid_count(f->s, 100, 999, &n, &e) != STORE_E_INVALID)
                _exit(5);
            store *s = store_open(url, &e);
            if (!s) {
                fprintf(stderr, "child %d: store_open: %s\n", p, e.message);
                _exit(2);
            }
            struct vmid_range r = {100, 999};
            int ids[PER_PROC];
            for (int i = 0; i < PER_PROC; i++) {
                char job[32];
                snprintf(job, sizeof job, "p%d-%d", p, i);
                if (store_vmid_reserve(s, &r, 1, NULL, 0, job, &ids[i], &e) != STORE_OK) {
                    fprintf(stderr, "child %d: reserve: %s\n", p, e.message);
                    _exit(3);
                }
            }
            store_close(s);
            ssize_t wr = write(fds[p][1], ids, sizeof ids);
            _exit(wr == (ssize_t)sizeof ids ? 0 : 4);
        }
        close(fds[p][1]);
    }
    int all[NPROCS * PER_PROC];
    for (int p = 0; p < NPROCS; p++) {
        size_t got = 0;
        char *dst = (char *)(all + p * PER_PROC);
        while (got < sizeof(int) * PER_PROC) {
            ssize_t r = read(fds[p][0], dst + got, sizeof(int) * PER_PROC - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fds[p][0]);
        int st = 0;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        assert_int_equal(got, sizeof(int) * PER_PROC);
    }
    int64_t ms = mono_ms() - t0;
    print_message("[ figures  ] %d processes x %d reservations (incl. open+migrate): %lld ms "
                  "(%.0f/s)\n",
                  NPROCS, PER_PROC, (long long)ms,
                  NPROCS * PER_PROC * 1000.0 / (double)(ms ? ms : 1));
    assert_distinct(all, NPROCS * PER_PROC);
    assert_int_equal(all[0], 100);
    assert_int_equal(all[NPROCS * PER_PROC - 1], 100 + NPROCS * PER_PROC - 1);

    struct store_error e;
    store *s = store_open(url, &e);
    assert_non_null(s);
    int n = 0;
    OK(store_vmid_count(s, 100, 999, &n, &e_));
    assert_int_equal(n, NPROCS * PER_PROC);
    store_close(s);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char *p = xasprintf("%s/procs.db%s", f->dir, sfx[i]);
        unlink(p);
        free(p);
    }
    free(url);
}

/* ---- capacity, idempotency --------------------------------------------- */

static void test_capacity(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "c1", "create", 0, 0);
    job_add(f->s, "c2", "create", 0, 0);
    job_add(f->s, "c3", "create", 0, 0);
    OK(store_reserve_capacity(f->s, "c1", "pve1", 1000, 10, NULL, &e_));
    OK(store_reserve_capacity(f->s, "c2", "pve1", 2000, 20, NULL, &e_));
    OK(store_reserve_capacity(f->s, "c3", "pve2", 4000, 40, NULL, &e_));
    EXPECT(STORE_E_NOTFOUND, store_reserve_capacity(f->s, "nojob", "pve1", 1, 1, NULL, &e));
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 3000);
    assert_int_equal(disk, 30);
    OK(store_reserved_on(f->s, "pve1", NULL, "c1", 0, &mem, &disk, &e_));
    assert_int_equal(mem, 2000);
    /* Re-reserving moves a job's reservation. */
    OK(store_reserve_capacity(f->s, "c2", "pve2", 500, 5, NULL, &e_));
    OK(store_reserved_on(f->s, "pve2", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 4500);
    OK(store_release_capacity(f->s, "c3", &e_));
    OK(store_release_capacity(f->s, "c3", &e_)); /* releasing twice is fine */
    OK(store_reserved_on(f->s, "pve2", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 500);
    assert_int_equal(disk, 5);
    /* A finished job's forgotten reservation no longer counts, and is gone
     * with its end (not left in the table); a settled one stays */
    job_add(f->s, "c4", "create", 0, 0);
    OK(store_reserve_capacity(f->s, "c4", "pve2", 700, 7, NULL, &e_));
    OK(store_settle_capacity(f->s, "c4", &e_));
    job_finish(f->s, "c4");
    job_finish(f->s, "c2");
    OK(store_reserved_on(f->s, "pve2", NULL, NULL, wall_ms() + 1, &mem, &disk, &e_));
    assert_int_equal(mem, 0);
    int rows = 0, settled = 0;
    db_query2(f->url, "SELECT count(*), count(settled_at) FROM capacity WHERE node = 'pve2'", &rows,
              &settled);
    assert_int_equal(rows, 1); /* c4's, settled; c2's gone */
    assert_int_equal(settled, 1);
    OK(store_reserved_on(f->s, "nowhere", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 0);
    EXPECT(STORE_E_INVALID, store_reserve_capacity(f->s, "c1", "pve1", -1, 0, NULL, &e));
}

/* With a room, the check and the reservation are one: what does not fit
 * beside the others is refused and nothing is written. */
static void test_capacity_room(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "r1", "create", 0, 0);
    job_add(f->s, "r2", "create", 0, 0);
    job_add(f->s, "r3", "create", 0, 0);
    struct cap_room room = {.mem = 3LL << 30, .disk = 100LL << 30, .seen_since = 0};
    OK(store_reserve_capacity(f->s, "r1", "pve1", 2LL << 30, 40LL << 30, &room, &e_));
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "r2", "pve1", 2LL << 30, 1, &room, &e));
    assert_non_null(strstr(e.message, "not enough memory: 1024 MiB free, 2048 MiB needed"));
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "r2", "pve1", 1, 61LL << 30, &room, &e));
    assert_non_null(strstr(e.message, "not enough disk space: 60 GiB free, 61 GiB needed"));
    /* what is over whole GiB is told in MiB (a cloud-init drive's 4) */
    EXPECT(STORE_E_FULL,
           store_reserve_capacity(f->s, "r2", "pve1", 1, (60LL << 30) + (4LL << 20), &room, &e));
    assert_non_null(strstr(e.message, "not enough disk space: 60 GiB free, 60 GiB + 4 MiB needed"));
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 2LL << 30); /* the refusals wrote nothing */
    /* exactly the rest fits; a job's own reservation does not count
     * against its move */
    OK(store_reserve_capacity(f->s, "r2", "pve1", 1LL << 30, 60LL << 30, &room, &e_));
    OK(store_reserve_capacity(f->s, "r1", "pve1", 2LL << 30, 40LL << 30, &room, &e_));
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "r3", "pve1", 1, 0, &room, &e));
    OK(store_reserve_capacity(f->s, "r3", "pve2", 1, 0, &room, &e_));
}

/* A shared storage (Ceph, NFS) is one pool seen from each of its nodes:
 * disk reservations through different nodes count together against it,
 * memory stays per node, and a node's own storage is apart. */
static void test_capacity_shared_pool(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    const char *jobs[] = {"p1", "p2", "p3", "p4", "p5"};
    for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++)
        job_add(f->s, jobs[i], "create", 0, 0);
    /* each node sees the whole pool free: 100 GiB */
    struct cap_room pool = {.mem = 8LL << 30, .disk = 100LL << 30, .pool = "pve/ceph"};
    OK(store_reserve_capacity(f->s, "p1", "pve1", 4LL << 30, 80LL << 30, &pool, &e_));
    EXPECT(STORE_E_FULL,
           store_reserve_capacity(f->s, "p2", "pve2", 4LL << 30, 80LL << 30, &pool, &e));
    assert_non_null(strstr(e.message, "not enough disk space: 20 GiB free, 80 GiB needed"));
    OK(store_reserve_capacity(f->s, "p2", "pve2", 4LL << 30, 20LL << 30, &pool, &e_));
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "p3", "pve3", 1, 1LL << 30, &pool, &e));
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(f->s, "pve2", "pve/ceph", NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 4LL << 30);    /* pve2's own memory only */
    assert_int_equal(disk, 100LL << 30); /* the pool's, from both nodes */
    OK(store_reserved_on(f->s, "pve2", "pve/ceph", "p1", 0, &mem, &disk, &e_));
    assert_int_equal(disk, 20LL << 30);
    /* the node's own storage holds none of it */
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, 4LL << 30);
    assert_int_equal(disk, 0);
    struct cap_room local = {.mem = 8LL << 30, .disk = 30LL << 30};
    OK(store_reserve_capacity(f->s, "p3", "pve1", 1LL << 30, 30LL << 30, &local, &e_));
    /* another pool of the same name in another cluster is apart */
    struct cap_room other = {.mem = 8LL << 30, .disk = 100LL << 30, .pool = "pve9/ceph"};
    OK(store_reserve_capacity(f->s, "p4", "pve9a", 1, 90LL << 30, &other, &e_));
    /* memory stays per node: pve1 has 8 - 4 - 1 GiB left whatever the pool */
    struct cap_room full = {.mem = 8LL << 30, .disk = -(5LL << 30), .pool = "pve/ceph"};
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "p5", "pve1", 4LL << 30, 0, &full, &e));
    assert_non_null(strstr(e.message, "not enough memory"));
    /* a need of no disk (a migration whose disk stays on the pool) is not
     * refused by a full pool */
    OK(store_reserve_capacity(f->s, "p5", "pve1", 3LL << 30, 0, &full, &e_));
    /* a released reservation gives its share of the pool back */
    OK(store_release_capacity(f->s, "p1", &e_));
    OK(store_reserve_capacity(f->s, "p4", "pve3", 1, 80LL << 30, &pool, &e_));
}

/* A creation's room stays held after it succeeds until the inventory has
 * been refreshed since: no process sees the room twice in between. */
static void test_capacity_settle(void **state)
{
    struct fx *f = *state;
    job_add(f->s, "s1", "create", 0, 0);
    job_add(f->s, "s2", "create", 0, 0);
    struct cap_room room = {.mem = 4000, .disk = 4000, .seen_since = 0};
    OK(store_reserve_capacity(f->s, "s1", "pve1", 3000, 3000, &room, &e_));
    int64_t before = wall_ms();
    OK(store_settle_capacity(f->s, "s1", &e_));
    job_finish(f->s, "s1");
    int64_t mem = 0, disk = 0;
    /* an inventory older than the VM: the room still counts as taken */
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, before, &mem, &disk, &e_));
    assert_int_equal(mem, 3000);
    room.seen_since = before;
    struct store_error e;
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "s2", "pve1", 3000, 1, &room, &e));
    /* an inventory that began after it shows the VM itself */
    int64_t later = wall_ms() + 1;
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, later, &mem, &disk, &e_));
    assert_int_equal(mem, 0);
    room.seen_since = later;
    OK(store_reserve_capacity(f->s, "s2", "pve1", 3000, 1, &room, &e_));
    /* settling nothing is fine; releasing a settled one removes it */
    OK(store_settle_capacity(f->s, "nothing", &e_));
    OK(store_release_capacity(f->s, "s1", &e_));
    OK(store_reserved_on(f->s, "pve1", NULL, "s2", 0, &mem, &disk, &e_));
    assert_int_equal(mem, 0);
}

/* A leftover takes its job's reservation with it: a made one counts until
 * an inventory that began after it, a pending one (its clone may still be
 * served) until the leftover is done, whichever job asks, its own next
 * attempt too; the job's next reservation does not move it. */
static void test_capacity_leftover(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "l1", "create", 0, 0);
    job_add(f->s, "l2", "create", 0, 0);
    struct cap_room pool = {.mem = 8LL << 30, .disk = 100LL << 30, .pool = "pve/ceph"};
    /* made: the job's room stays on the pool after the leftover is recorded */
    OK(store_reserve_capacity(f->s, "l1", "pve1", 2LL << 30, 60LL << 30, &pool, &e_));
    int64_t before = wall_ms();
    OK(store_leftover_add(f->s, 4000, "pve1", "l1", STORE_LEFT_MADE, &e_));
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(f->s, "pve2", "pve/ceph", "l1", before, &mem, &disk, &e_));
    assert_int_equal(disk, 60LL << 30); /* whichever job asks, its own too */
    assert_int_equal(mem, 0);           /* memory stays pve1's */
    OK(store_reserved_on(f->s, "pve1", NULL, NULL, before, &mem, &disk, &e_));
    assert_int_equal(mem, 2LL << 30);
    assert_int_equal(disk, 0); /* not on pve1's own storage */
    pool.seen_since = before;
    /* the job's next attempt reserves again: the leftover's room stays */
    EXPECT(STORE_E_FULL,
           store_reserve_capacity(f->s, "l1", "pve2", 1LL << 30, 60LL << 30, &pool, &e));
    OK(store_reserve_capacity(f->s, "l1", "pve2", 1LL << 30, 30LL << 30, &pool, &e_));
    EXPECT(STORE_E_FULL, store_reserve_capacity(f->s, "l2", "pve3", 1, 20LL << 30, &pool, &e));
    /* an inventory read that began after the leftover shows its VM */
    int64_t later = wall_ms() + 1;
    OK(store_reserved_on(f->s, "pve2", "pve/ceph", "l1", later, &mem, &disk, &e_));
    assert_int_equal(disk, 0);
    /* pending: the next attempt's reservation goes with a second leftover
     * and counts until it is done, however late the inventory */
    OK(store_leftover_add(f->s, 4001, "pve2", "l1", STORE_LEFT_PENDING, &e_));
    OK(store_reserved_on(f->s, "pve3", "pve/ceph", NULL, INT64_MAX, &mem, &disk, &e_));
    assert_int_equal(disk, 30LL << 30);
    OK(store_reserved_on(f->s, "pve2", NULL, NULL, INT64_MAX, &mem, &disk, &e_));
    assert_int_equal(mem, 1LL << 30);
    /* recorded again without a room: what it holds stays */
    OK(store_leftover_add(f->s, 4001, "pve2", "l1", STORE_LEFT_NO_ROOM, &e_));
    OK(store_reserved_on(f->s, "pve3", "pve/ceph", NULL, INT64_MAX, &mem, &disk, &e_));
    assert_int_equal(disk, 30LL << 30);
    /* a job with no reservation left moves nothing and takes nothing away */
    OK(store_leftover_add(f->s, 4001, "pve2", "l1", STORE_LEFT_MADE, &e_));
    OK(store_reserved_on(f->s, "pve3", "pve/ceph", NULL, INT64_MAX, &mem, &disk, &e_));
    assert_int_equal(disk, 30LL << 30);
    OK(store_leftover_done(f->s, 4001, "pve2", 0, &e_));
    OK(store_reserved_on(f->s, "pve3", "pve/ceph", NULL, 0, &mem, &disk, &e_));
    assert_int_equal(disk, 60LL << 30); /* the made one's, for an old inventory */
    OK(store_leftover_done(f->s, 4000, "pve1", 0, &e_));
    OK(store_reserved_on(f->s, "pve3", "pve/ceph", NULL, 0, &mem, &disk, &e_));
    assert_int_equal(disk, 0);
    EXPECT(STORE_E_INVALID, store_leftover_add(f->s, 4002, "pve1", "l2", 7, &e));
}

/* Several processes on one database fill a node with room for exactly
 * CAP_FIT reservations: exactly CAP_FIT succeed. */
#define CAP_FIT 7
/* Processes racing for a limited thing: NPROCS children, each opening its
 * own store on url and calling take() for its jobs "<prefix><p>-0..3";
 * the total of successes (STORE_OK). Any other result than STORE_OK or
 * STORE_E_FULL fails the test. */
static void run_children(const char *url, int (*fn)(const char *url, int p), int st[NPROCS]);
static int (*g_race_take)(store *s, const char *job);
static const char *g_race_prefix;

static int race_child(const char *url, int p)
{
    struct store_error e;
    store *cs = store_open(url, &e);
    if (!cs)
        return 100;
    int won = 0;
    for (int i = 0; i < 4; i++) {
        char job[32];
        snprintf(job, sizeof job, "%s%d-%d", g_race_prefix, p, i);
        int rc = g_race_take(cs, job);
        if (rc == STORE_OK)
            won++;
        else if (rc != STORE_E_FULL)
            return 101;
    }
    store_close(cs);
    return won;
}

static int race(const char *url, const char *prefix, int (*take)(store *s, const char *job))
{
    g_race_take = take;
    g_race_prefix = prefix;
    int st[NPROCS], won = 0;
    run_children(url, race_child, st);
    for (int p = 0; p < NPROCS; p++) {
        assert_true(st[p] <= 4);
        won += st[p];
    }
    return won;
}

static int take_capacity(store *s, const char *job)
{
    struct cap_room room = {.mem = CAP_FIT * 1000, .disk = 1LL << 40, .seen_since = 0};
    return store_reserve_capacity(s, job, "pve1", 1000, 1, &room, NULL);
}

static int take_slot(store *s, const char *job)
{
    return store_clone_slot_take(s, job, "pve1", 3, NULL);
}

static void test_capacity_processes(void **state)
{
    struct fx *f = *state;
    char *url = fx_url(f, "cap");
    assert_non_null(url);
    struct store_error e;
    store *s = store_open(url, &e);
    assert_non_null(s);
    for (int p = 0; p < NPROCS; p++)
        for (int i = 0; i < 4; i++) {
            char job[32];
            snprintf(job, sizeof job, "cp%d-%d", p, i);
            job_add(s, job, "create", 0, 0);
        }
    int won = race(url, "cp", take_capacity);
    assert_true(NPROCS * 4 > CAP_FIT);
    assert_int_equal(won, CAP_FIT);
    int64_t mem = 0, disk = 0;
    OK(store_reserved_on(s, "pve1", NULL, NULL, 0, &mem, &disk, &e_));
    assert_int_equal(mem, CAP_FIT * 1000);
    store_close(s);
    free(url);
}

/* Clone slots: at most `limit` per node across processes; a job that is not
 * running under a live lease holds none. */
static void running_job(store *s, const char *url, const char *id, int64_t lease_until)
{
    job_add(s, id, "create", 0, 0);
    /* ids are the tests' own: no quoting needed */
    char *sql = xasprintf("UPDATE jobs SET state = 'running', lease_owner = 't:1',"
                          " lease_until = %lld WHERE id = '%s'",
                          (long long)lease_until, id);
    db_exec(url, sql);
    free(sql);
}

static void test_clone_slots(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int64_t live = wall_ms() + 3600000;
    running_job(f->s, f->url, "k1", live);
    running_job(f->s, f->url, "k2", live);
    running_job(f->s, f->url, "k3", live);
    running_job(f->s, f->url, "dead", wall_ms() - 1000);
    OK(store_clone_slot_take(f->s, "dead", "pve1", 2, &e_)); /* its lease is over */
    OK(store_clone_slot_take(f->s, "k1", "pve1", 2, &e_));
    OK(store_clone_slot_take(f->s, "k2", "pve1", 2, &e_)); /* the dead one does not count */
    EXPECT(STORE_E_FULL, store_clone_slot_take(f->s, "k3", "pve1", 2, &e));
    assert_non_null(strstr(e.message, "2 of 2 clone slots on pve1"));
    OK(store_clone_slot_take(f->s, "k1", "pve1", 2, &e_)); /* again: still one */
    OK(store_clone_slot_take(f->s, "k3", "pve2", 2, &e_)); /* per node */
    OK(store_clone_slot_give(f->s, "k1", &e_));
    OK(store_clone_slot_give(f->s, "k1", &e_));            /* twice is fine */
    OK(store_clone_slot_take(f->s, "k3", "pve1", 2, &e_)); /* moved from pve2 */
    EXPECT(STORE_E_INVALID, store_clone_slot_take(f->s, "k3", "pve1", 0, &e));

    /* processes racing for 3 slots on one node: exactly 3 win */
    char *url = fx_url(f, "slots");
    assert_non_null(url);
    store *s = store_open(url, &e);
    assert_non_null(s);
    for (int p = 0; p < NPROCS; p++)
        for (int i = 0; i < 4; i++) {
            char job[32];
            snprintf(job, sizeof job, "sp%d-%d", p, i);
            running_job(s, url, job, live);
        }
    int won = race(url, "sp", take_slot);
    assert_int_equal(won, 3);
    store_close(s);
    free(url);
}

/* A creation's record, job, first event and idempotency key land together;
 * a taken key or a full quota writes none of them. */
static void submit(struct vm_rec *v, struct job_rec *j, int vmid, const char *owner, int cores,
                   const char *job)
{
    *v = (struct vm_rec){
        .vmid = vmid, .state = VMS_CREATING, .cores = cores, .memory_mb = 1024, .disk_gb = 10};
    snprintf(v->owner, sizeof v->owner, "%s", owner);
    *j = (struct job_rec){.state = JOB_QUEUED, .vmid = vmid};
    snprintf(j->id, sizeof j->id, "%s", job);
    snprintf(j->kind, sizeof j->kind, "create");
    snprintf(j->step, sizeof j->step, "queued");
}

static void test_create_submit(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    json_t *ans = json_pack("{s:s,s:s,s:i}", "fingerprint", "fp1", "job", "sub-1", "vmid", 700);
    struct store_idem key = {"alice", "k-sub", ans};
    struct vm_rec v;
    struct job_rec j;
    submit(&v, &j, 700, "alice", 2, "sub-1");
    struct store_submit sub = {.vm = &v, .job = &j, .event = "creation queued", .idem = &key};
    OK(store_create_submit(f->s, &sub, &e_));
    assert_null(sub.first);
    assert_true(v.id > 0);
    struct vm_rec g;
    OK(store_vm_get(f->s, 700, &g, &e_));
    vm_rec_release(&g);
    struct job_event *ev = NULL;
    size_t n = 0;
    OK(store_job_events(f->s, "sub-1", 0, &ev, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].message, "creation queued");
    free(ev);

    /* the same key again: the first answer, and nothing new */
    submit(&v, &j, 701, "alice", 2, "sub-2");
    EXPECT(STORE_E_CONFLICT, store_create_submit(f->s, &sub, &e));
    assert_non_null(sub.first);
    assert_string_equal(json_string_value(json_object_get(sub.first, "job")), "sub-1");
    json_decref(sub.first);
    EXPECT(STORE_E_NOTFOUND, store_vm_get(f->s, 701, &g, &e));
    struct job_rec jj;
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "sub-2", &jj, &e));

    /* a live record of the VMID: the key is not kept either */
    struct store_idem key2 = {"alice", "k-sub-2", ans};
    submit(&v, &j, 700, "alice", 2, "sub-3");
    sub.idem = &key2;
    EXPECT(STORE_E_CONFLICT, store_create_submit(f->s, &sub, &e));
    assert_null(sub.first);
    json_t *got = NULL;
    EXPECT(STORE_E_NOTFOUND, store_idem_get(f->s, "alice", "k-sub-2", &got, &e));

    /* a quota of 5 cores: alice holds 2, 3 more fit, then nothing */
    struct store_usage q = {.cores = 5};
    sub.idem = NULL;
    sub.quota = &q;
    submit(&v, &j, 702, "alice", 3, "sub-4");
    OK(store_create_submit(f->s, &sub, &e_));
    submit(&v, &j, 703, "alice", 1, "sub-5");
    EXPECT(STORE_E_FULL, store_create_submit(f->s, &sub, &e));
    assert_int_equal(sub.used.vms, 2);
    assert_int_equal(sub.used.cores, 5);
    assert_int_equal(sub.used.memory_mb, 2048);
    EXPECT(STORE_E_NOTFOUND, store_vm_get(f->s, 703, &g, &e));
    submit(&v, &j, 703, "bob", 5, "sub-6"); /* per owner */
    OK(store_create_submit(f->s, &sub, &e_));
    json_decref(ans);
}

/* A change on its way counts against the quota before it lands: two
 * updates that each fit alone cannot pass it together. */
static void test_job_submit_quota(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec v;
    struct job_rec j;
    struct store_submit sub = {.vm = &v, .job = &j, .event = "creation queued"};
    submit(&v, &j, 800, "erin", 2, "q-c1");
    OK(store_create_submit(f->s, &sub, &e_));
    submit(&v, &j, 801, "erin", 2, "q-c2");
    OK(store_create_submit(f->s, &sub, &e_));
    struct store_usage q = {.cores = 6}, used;
    struct job_rec u = {.state = JOB_QUEUED, .vmid = 800};
    snprintf(u.kind, sizeof u.kind, "update");
    snprintf(u.owner, sizeof u.owner, "erin");
    u.request = json_pack("{s:i}", "cores", 4);
    OK(store_job_submit(f->s, &u, "update", &q, &used, &e_));
    assert_int_equal(used.cores, 4);
    json_decref(u.request);
    struct job_rec u2 = {.state = JOB_QUEUED, .vmid = 801};
    snprintf(u2.kind, sizeof u2.kind, "update");
    snprintf(u2.owner, sizeof u2.owner, "erin");
    u2.request = json_pack("{s:i}", "cores", 4);
    EXPECT(STORE_E_FULL, store_job_submit(f->s, &u2, "update", &q, &used, &e));
    assert_int_equal(used.cores, 6); /* 800 counted at its queued 4 */
    struct job_rec got;
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, u2.id, &got, &e));
    /* a change that lowers nothing further is taken even at the limit */
    json_decref(u2.request);
    u2.request = json_pack("{s:i}", "cores", 1);
    memset(u2.id, 0, sizeof u2.id);
    OK(store_job_submit(f->s, &u2, "update", &q, &used, &e_));
    json_decref(u2.request);
    /* once the first update has ended, its target no longer counts */
    job_finish(f->s, u.id);
    struct job_rec u3 = {.state = JOB_QUEUED, .vmid = 800};
    snprintf(u3.kind, sizeof u3.kind, "resize");
    snprintf(u3.owner, sizeof u3.owner, "erin");
    u3.request = json_pack("{s:i}", "disk_gb", 30);
    struct store_usage qd = {.disk_gb = 40};
    OK(store_job_submit(f->s, &u3, "resize", &qd, &used, &e_)); /* 30 + 10 */
    /* the same target again on the same VM adds nothing (targets are sizes) */
    memset(u3.id, 0, sizeof u3.id);
    OK(store_job_submit(f->s, &u3, "resize", &qd, &used, &e_));
    json_decref(u3.request);
    struct job_rec u4 = {.state = JOB_QUEUED, .vmid = 801};
    snprintf(u4.kind, sizeof u4.kind, "resize");
    snprintf(u4.owner, sizeof u4.owner, "erin");
    u4.request = json_pack("{s:i}", "disk_gb", 11);
    EXPECT(STORE_E_FULL, store_job_submit(f->s, &u4, "resize", &qd, &used, &e)); /* 30 + 11 */
    assert_int_equal(used.disk_gb, 40);
    json_decref(u4.request);
    /* no quota: always queued */
    struct job_rec p = {.state = JOB_QUEUED, .vmid = 800};
    snprintf(p.kind, sizeof p.kind, "start");
    snprintf(p.owner, sizeof p.owner, "erin");
    OK(store_job_submit(f->s, &p, "start", NULL, NULL, &e_));
}

/* A job and its record's move (a delete: enabled -> deleting) are one
 * transaction: a second move of the same record gets STORE_E_CONFLICT and
 * writes nothing. */
static void test_job_submit_move(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec v;
    struct job_rec j;
    submit(&v, &j, 810, "frank", 1, "mv-c");
    struct store_submit sub = {.vm = &v, .job = &j, .event = "creation queued"};
    OK(store_create_submit(f->s, &sub, &e_));
    v.state = VMS_ENABLED;
    OK(store_vm_update(f->s, &v, &e_));
    struct job_rec d = {.state = JOB_QUEUED, .vmid = 810};
    snprintf(d.id, sizeof d.id, "mv-d1");
    snprintf(d.kind, sizeof d.kind, "delete");
    snprintf(d.owner, sizeof d.owner, "frank");
    snprintf(d.step, sizeof d.step, "queued");
    OK(store_job_submit_move(f->s, &d, "delete", v.id, VMS_ENABLED, VMS_DELETING, &e_));
    struct vm_rec g;
    OK(store_vm_get_id(f->s, v.id, &g, &e_));
    assert_int_equal(g.state, VMS_DELETING);
    assert_string_equal(g.job, "mv-d1");
    int64_t at = g.updated_at;
    vm_rec_release(&g);
    struct job_event *ev = NULL;
    size_t n = 0;
    OK(store_job_events(f->s, "mv-d1", 0, &ev, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].message, "delete");
    free(ev);
    /* a second delete: refused, nothing written */
    snprintf(d.id, sizeof d.id, "mv-d2");
    EXPECT(STORE_E_CONFLICT,
           store_job_submit_move(f->s, &d, "delete", v.id, VMS_ENABLED, VMS_DELETING, &e));
    assert_non_null(strstr(e.message, "deleting"));
    struct job_rec got;
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "mv-d2", &got, &e));
    OK(store_vm_get_id(f->s, v.id, &g, &e_));
    assert_string_equal(g.job, "mv-d1");
    assert_int_equal(g.updated_at, at);
    vm_rec_release(&g);
    /* no such record */
    snprintf(d.id, sizeof d.id, "mv-d3");
    EXPECT(STORE_E_NOTFOUND,
           store_job_submit_move(f->s, &d, "delete", v.id + 1000, VMS_ENABLED, VMS_DELETING, &e));
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "mv-d3", &got, &e));
}

/* Every child moves the same record: exactly one wins, in all. */
static int64_t g_move_vm;
static int g_move_round;

static int move_child(const char *url, int p)
{
    struct store_error e;
    store *s = store_open(url, &e);
    if (!s)
        return 100;
    struct job_rec d = {.state = JOB_QUEUED, .vmid = 820};
    snprintf(d.id, sizeof d.id, "mvp-%d-%d", g_move_round, p);
    snprintf(d.kind, sizeof d.kind, "delete");
    snprintf(d.owner, sizeof d.owner, "frank");
    int rc = store_job_submit_move(s, &d, "delete", g_move_vm, VMS_ENABLED, VMS_DELETING, &e);
    store_close(s);
    return rc == STORE_OK ? 1 : rc == STORE_E_CONFLICT ? 0 : 102;
}

static void test_move_processes(void **state)
{
    struct fx *f = *state;
    for (int round = 0; round < 3; round++) {
        struct vm_rec v;
        struct job_rec j;
        char id[16];
        snprintf(id, sizeof id, "mvp-c%d", round);
        submit(&v, &j, 820, "frank", 1, id);
        v.state = VMS_ENABLED;
        struct store_submit sub = {.vm = &v, .job = &j, .event = "creation queued"};
        OK(store_create_submit(f->s, &sub, &e_));
        g_move_vm = v.id;
        g_move_round = round;
        int st[NPROCS], won = 0;
        run_children(f->url, move_child, st);
        for (int p = 0; p < NPROCS; p++) {
            assert_true(st[p] <= 1);
            won += st[p];
        }
        assert_int_equal(won, 1);
        char del[16];
        int jobs = 0;
        for (int p = 0; p < NPROCS; p++) {
            struct job_rec got;
            struct store_error e;
            snprintf(del, sizeof del, "mvp-%d-%d", round, p);
            if (store_job_get(f->s, del, &got, &e) == STORE_OK) {
                jobs++;
                job_rec_release(&got);
                job_finish(f->s, del);
            }
        }
        assert_int_equal(jobs, 1);
        /* the record leaves the VMID for the next round */
        OK(store_vm_get_id(f->s, g_move_vm, &v, &e_));
        v.state = VMS_DELETED;
        OK(store_vm_update(f->s, &v, &e_));
        vm_rec_release(&v);
    }
}

/* One unfinished job of a kind per node (a drain), decided in the
 * transaction that inserts it: NPROCS processes each ask for a drain of
 * every one of SOLE_NODES nodes at once; exactly one per node gets in, the
 * others are refused with the winner's id. */
#define SOLE_NODES 8

static int sole_child(const char *url, int p)
{
    struct store_error e;
    store *s = store_open(url, &e);
    if (!s)
        return 100;
    int won = 0;
    for (int n = 0; n < SOLE_NODES && won < 100; n++) {
        struct job_rec d = {.state = JOB_QUEUED};
        snprintf(d.id, sizeof d.id, "sole-%d-%d", n, p);
        snprintf(d.kind, sizeof d.kind, "drain");
        snprintf(d.owner, sizeof d.owner, "ops");
        snprintf(d.step, sizeof d.step, "queued");
        snprintf(d.node, sizeof d.node, "sv%d", n);
        char other[40] = "";
        int rc = store_job_submit_sole(s, &d, "drain queued", other, &e);
        char want[16];
        snprintf(want, sizeof want, "sole-%d-", n);
        if (rc == STORE_OK)
            won++;
        else if (rc != STORE_E_CONFLICT)
            won = 101;
        else if (strncmp(other, want, strlen(want)) != 0 || strcmp(other, d.id) == 0)
            won = 102; /* refused: the id given is another process's drain of that node */
    }
    store_close(s);
    return won;
}

static void test_sole_processes(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    int st[NPROCS], won = 0;
    run_children(f->url, sole_child, st);
    for (int p = 0; p < NPROCS; p++) {
        if (st[p] > SOLE_NODES)
            fail_msg("child %d: status %d", p, st[p]);
        won += st[p];
    }
    assert_int_equal(won, SOLE_NODES);
    int nodes = 0, most = 0;
    db_query2(f->url,
              "SELECT count(DISTINCT node), (SELECT max(c) FROM (SELECT count(*) AS c FROM jobs"
              " WHERE kind = 'drain' GROUP BY node) x) FROM jobs WHERE kind = 'drain'",
              &nodes, &most);
    assert_int_equal(nodes, SOLE_NODES);
    assert_int_equal(most, 1);
    /* the winner is what a reader sees; once it ends, the next one gets in */
    char id[40];
    OK(store_job_active_on(f->s, "drain", "sv3", id, &e_));
    assert_true(strncmp(id, "sole-3-", 7) == 0);
    struct job_rec d = {.state = JOB_QUEUED};
    snprintf(d.id, sizeof d.id, "sole-again");
    snprintf(d.kind, sizeof d.kind, "drain");
    snprintf(d.node, sizeof d.node, "sv3");
    char other[40];
    EXPECT(STORE_E_CONFLICT, store_job_submit_sole(f->s, &d, "drain queued", other, &e));
    assert_string_equal(other, id);
    assert_non_null(strstr(e.message, id));
    job_finish(f->s, id);
    EXPECT(STORE_E_NOTFOUND, store_job_active_on(f->s, "drain", "sv3", id, &e));
    OK(store_job_submit_sole(f->s, &d, "drain queued", other, &e_));
    OK(store_job_active_on(f->s, "drain", "sv3", id, &e_));
    assert_string_equal(id, "sole-again");
    /* another kind on the node, or the kind on another node, is not held up */
    struct job_rec m = {.state = JOB_QUEUED};
    snprintf(m.kind, sizeof m.kind, "cordon-check");
    snprintf(m.node, sizeof m.node, "sv3");
    OK(store_job_submit_sole(f->s, &m, "queued", other, &e_));
    EXPECT(STORE_E_NOTFOUND, store_job_active_on(f->s, "drain", "sv99", id, &e));
    /* a job without a node has no place in this rule */
    struct job_rec bad = {.state = JOB_QUEUED};
    snprintf(bad.kind, sizeof bad.kind, "drain");
    EXPECT(STORE_E_INVALID, store_job_submit_sole(f->s, &bad, "x", other, &e));
}

/* A conditional write lands only over the state (and last write) the
 * writer read. The record is moved between the read and the write by
 * another process sharing the database (a DELETE of another proxd): the
 * write is refused and the move survives. */
static int64_t g_cond_vm;

static int cond_move_child(const char *url)
{
    struct store_error e;
    store *s = store_open(url, &e);
    if (!s)
        return 100;
    struct job_rec d = {.state = JOB_QUEUED, .vmid = 830};
    snprintf(d.id, sizeof d.id, "cond-del");
    snprintf(d.kind, sizeof d.kind, "delete");
    snprintf(d.owner, sizeof d.owner, "gina");
    int rc = store_job_submit_move(s, &d, "delete", g_cond_vm, VMS_ENABLED, VMS_DELETING, &e);
    store_close(s);
    return rc == STORE_OK ? 0 : 101;
}

static void test_vm_update_if(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec r = vm_new(830, "gina", "debian12");
    r.state = VMS_ENABLED;
    OK(store_vm_insert(f->s, &r, &e_));
    g_cond_vm = r.id;
    /* the state read holds: written */
    snprintf(r.power, sizeof r.power, "running");
    OK(store_vm_update_if(f->s, &r, VMS_ENABLED, 0, &e_));
    struct vm_rec g;
    OK(store_vm_get_id(f->s, r.id, &g, &e_));
    assert_string_equal(g.power, "running");
    vm_rec_release(&g);
    /* read, then another process moves the record, then the write */
    struct vm_rec read;
    OK(store_vm_get_id(f->s, r.id, &read, &e_));
    assert_int_equal(read.state, VMS_ENABLED);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(cond_move_child(f->url));
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    snprintf(read.power, sizeof read.power, "stopped");
    snprintf(read.job, sizeof read.job, "stop-job");
    EXPECT(STORE_E_CONFLICT, store_vm_update_if(f->s, &read, VMS_ENABLED, 0, &e));
    assert_non_null(strstr(e.message, "deleting"));
    OK(store_vm_get_id(f->s, r.id, &g, &e_));
    assert_int_equal(g.state, VMS_DELETING);
    assert_string_equal(g.job, "cond-del");
    assert_string_equal(g.power, "running"); /* nothing of the refused write */
    int64_t at = g.updated_at;
    vm_rec_release(&g);
    /* reading again and writing over what was read: written */
    read.state = VMS_DELETING;
    snprintf(read.job, sizeof read.job, "cond-del");
    OK(store_vm_update_if(f->s, &read, VMS_DELETING, at, &e_));
    OK(store_vm_get_id(f->s, r.id, &g, &e_));
    assert_int_equal(g.state, VMS_DELETING);
    assert_string_equal(g.power, "stopped");
    int64_t at2 = g.updated_at;
    vm_rec_release(&g);
    /* the state is the same but the record was written since `at`: refused
     * (at2 differs from at: the write above waited for the clock) */
    if (at2 == at) {
        while (wall_ms() <= at2)
            sleep_ms(1);
        OK(store_vm_update(f->s, &read, &e_));
    }
    snprintf(read.power, sizeof read.power, "paused");
    EXPECT(STORE_E_CONFLICT, store_vm_update_if(f->s, &read, VMS_DELETING, at, &e));
    assert_non_null(strstr(e.message, "written at"));
    OK(store_vm_get_id(f->s, r.id, &g, &e_));
    assert_string_equal(g.power, "stopped");
    vm_rec_release(&g);
    /* no such record; a state that does not exist */
    read.id = r.id + 1000;
    EXPECT(STORE_E_NOTFOUND, store_vm_update_if(f->s, &read, VMS_DELETING, 0, &e));
    read.id = r.id;
    EXPECT(STORE_E_INVALID, store_vm_update_if(f->s, &read, (enum vm_state)42, 0, &e));
    EXPECT(STORE_E_INVALID, store_vm_update_if(f->s, &read, VMS_DELETING, -1, &e));
    vm_rec_release(&read);
    vm_rec_release(&r);
}

/* A setting can be forgotten; the next setdefault sets it anew. */
static void test_kv_delete(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    char val[32];
    OK(store_kv_setdefault(f->s, "leftover_unmanaged:900:gone:1", "111", val, sizeof val, &e_));
    OK(store_kv_setdefault(f->s, "leftover_unmanaged:901:gone:1", "222", val, sizeof val, &e_));
    OK(store_kv_delete(f->s, "leftover_unmanaged:900:gone:1", &e_));
    OK(store_kv_setdefault(f->s, "leftover_unmanaged:900:gone:1", "333", val, sizeof val, &e_));
    assert_string_equal(val, "333");
    /* the other name is untouched */
    OK(store_kv_setdefault(f->s, "leftover_unmanaged:901:gone:1", "444", val, sizeof val, &e_));
    assert_string_equal(val, "222");
    /* a name without a value: not an error */
    OK(store_kv_delete(f->s, "never-set", &e_));
    EXPECT(STORE_E_INVALID, store_kv_delete(f->s, "", &e));
    EXPECT(STORE_E_INVALID, store_kv_delete(f->s, NULL, &e));
}

/* The tasks proxd's calls started (store_task.c): noted once, however
 * often; told apart by UPID; the old forgotten by a later note; bad UPIDs
 * refused naming the function. A second handle on the database (another
 * instance) sees what the first noted. */
static void test_task_note(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    const char *u1 = "UPID:sv1:00001000:00100000:6B000000:qmstart:100:root@pam!proxd:",
               *u2 = "UPID:sv1:00001001:00100001:6B000001:qmstart:100:root@pam!proxd:";
    bool noted = true;
    OK(store_task_noted(f->s, u1, &noted, &e_));
    assert_false(noted);
    OK(store_task_note(f->s, u1, &e_));
    OK(store_task_note(f->s, u1, &e_)); /* again: no change, no error */
    OK(store_task_noted(f->s, u1, &noted, &e_));
    assert_true(noted);
    OK(store_task_noted(f->s, u2, &noted, &e_));
    assert_false(noted);
    store *other = store_open(f->url, &e);
    assert_non_null(other);
    OK(store_task_noted(other, u1, &noted, &e_));
    assert_true(noted);
    /* an old row goes at a later note (one in 64 of a process prunes) */
    db_exec(f->url, "UPDATE tasks_seen SET at = 0");
    for (int i = 0; i < 64; i++) {
        char u[80];
        snprintf(u, sizeof u, "UPID:sv2:%08X:00100000:6B000000:qmstop:200:root@pam!proxd:", i);
        OK(store_task_note(other, u, &e_));
    }
    OK(store_task_noted(f->s, u1, &noted, &e_));
    assert_false(noted);
    int rows = 0, unused = 0;
    db_query2(f->url, "SELECT count(*), 0 FROM tasks_seen", &rows, &unused);
    assert_int_equal(rows, 64);
    store_close(other);
    char big[300];
    memset(big, 'U', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EXPECT(STORE_E_INVALID, store_task_note(f->s, big, &e));
    assert_non_null(strstr(e.message, "store_task_note"));
    EXPECT(STORE_E_INVALID, store_task_note(f->s, "", &e));
    EXPECT(STORE_E_INVALID, store_task_noted(f->s, NULL, &noted, &e));
    assert_non_null(strstr(e.message, "store_task_noted"));
}

/* Run-time settings (cordons): set overwrites, get and a prefix list read
 * them back, a prefix with LIKE's wildcards in it matches only itself. */
static void test_kv_set_get_list(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct store_kv kv;
    EXPECT(STORE_E_NOTFOUND, store_kv_get(f->s, "cordon:sv1", &kv, &e));
    OK(store_kv_set(f->s, "cordon:sv1", "{\"by\":\"a\"}", &e_));
    OK(store_kv_set(f->s, "cordon:sv_2", "{\"by\":\"b\"}", &e_));
    OK(store_kv_set(f->s, "cordonXsv3", "x", &e_));
    OK(store_kv_set(f->s, "drain:sv1", "job", &e_));
    OK(store_kv_get(f->s, "cordon:sv1", &kv, &e_));
    assert_string_equal(kv.value, "{\"by\":\"a\"}");
    assert_true(kv.created_at > 0);
    OK(store_kv_set(f->s, "cordon:sv1", "{\"by\":\"c\"}", &e_)); /* overwrite */
    OK(store_kv_get(f->s, "cordon:sv1", &kv, &e_));
    assert_string_equal(kv.value, "{\"by\":\"c\"}");
    struct store_kv *all = NULL;
    size_t n = 0;
    OK(store_kv_list(f->s, "cordon:", &all, &n, &e_));
    assert_int_equal(n, 2);
    assert_string_equal(all[0].name, "cordon:sv1");
    assert_string_equal(all[1].name, "cordon:sv_2");
    free(all);
    OK(store_kv_list(f->s, "cordon:sv_", &all, &n, &e_)); /* "_" is no wildcard */
    assert_int_equal(n, 1);
    free(all);
    OK(store_kv_delete(f->s, "cordon:sv1", &e_));
    EXPECT(STORE_E_NOTFOUND, store_kv_get(f->s, "cordon:sv1", &kv, &e));
    char big[2100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    EXPECT(STORE_E_INVALID, store_kv_set(f->s, "cordon:sv1", big, &e));
    EXPECT(STORE_E_INVALID, store_kv_set(f->s, "", "v", &e));
}

/* store_kv_change_logged's decider: the value is a count, one more each
 * call (an event with each), until it reaches `upto`: then the setting goes. */
struct kv_counter {
    store *s;
    int upto, n;
};

static bool count_decide(const struct store_kv *cur, void *ctx, char **next, struct store_event *ev)
{
    struct kv_counter *c = ctx;
    int v = cur ? atoi(cur->value) : 0;
    if (v < 0)
        return false; /* a value it does not change */
    if (v + 1 < c->upto) {
        char t[32];
        snprintf(t, sizeof t, "%d", v + 1);
        *next = strdup(t);
    }
    snprintf(ev->type, sizeof ev->type, "test.count");
    ev->data = json_pack("{s:i}", "to", v + 1);
    return true;
}

static void *counter_main(void *arg)
{
    struct kv_counter *c = arg;
    for (int i = 0; i < c->n; i++) {
        struct store_error e;
        bool changed = false;
        if (store_kv_change_logged(c->s, "count", count_decide, c, &changed, &e) || !changed)
            fail_msg("change: %s", e.message);
    }
    return NULL;
}

/* A setting changed by a read-modify-write decision: concurrent writers
 * in threads of their own each decide on the other's result (no lost
 * update), one event with each change in its transaction; a decider that
 * leaves the value writes nothing; a NULL value deletes the setting. */
static void test_kv_change_logged(void **state)
{
    struct fx *f = *state;
    enum { WRITERS = 4, EACH = 25 };
    pthread_t th[WRITERS];
    struct kv_counter c = {f->s, 1000000, EACH};
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, counter_main, &c), 0);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    struct store_kv kv;
    OK(store_kv_get(f->s, "count", &kv, &e_));
    assert_int_equal(atoi(kv.value), WRITERS * EACH);
    struct store_event *v = NULL;
    assert_int_equal(events_of(f->s, "test.count", &v), WRITERS * EACH);
    for (int i = 0; i < WRITERS * EACH; i++) /* in commit order: each saw the one before */
        assert_int_equal(json_integer_value(json_object_get(v[i].data, "to")), i + 1);
    events_free(v, WRITERS * EACH);
    /* the last one deletes it */
    struct kv_counter last = {f->s, WRITERS * EACH + 1, 1};
    bool changed = false;
    OK(store_kv_change_logged(f->s, "count", count_decide, &last, &changed, &e_));
    assert_true(changed);
    struct store_error e;
    EXPECT(STORE_E_NOTFOUND, store_kv_get(f->s, "count", &kv, &e));
    /* a value the decider leaves: nothing written, no event */
    OK(store_kv_set(f->s, "count", "-1", &e_));
    OK(store_kv_change_logged(f->s, "count", count_decide, &last, &changed, &e_));
    assert_false(changed);
    assert_int_equal(events_of(f->s, "test.count", &v), WRITERS * EACH + 1);
    events_free(v, WRITERS * EACH + 1);
    EXPECT(STORE_E_INVALID, store_kv_change_logged(f->s, "", count_decide, &last, NULL, &e));
}

/* store_kv_change_cancel: a change that removes the setting cancels the
 * node's unfinished job of the kind in its transaction (a queued one ends,
 * a running one is asked, the reason in its line and event); one that
 * keeps it, or a node without such a job, cancels nothing. */
static void test_kv_change_cancel(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct job_cancel_req rq = {
        .by = "ops", .error = "cancelled by ops before it started: gone", .why = "gone"};
    struct store_kv_cancel kc = {.kind = "drain", .node = "sv1", .req = &rq};
    struct kv_counter two = {f->s, 2, 1};
    bool changed = false;
    /* nothing to cancel: the setting goes all the same */
    OK(store_kv_set(f->s, "count", "1", &e_));
    OK(store_kv_change_cancel(f->s, "count", count_decide, &two, &kc, &changed, &e_));
    assert_true(changed);
    assert_string_equal(kc.job, "");
    assert_int_equal(kc.outcome, 0);
    /* a queued drain of sv1 (and one of sv2, left alone) */
    struct job_rec d = {.state = JOB_QUEUED}, d2 = {.state = JOB_QUEUED};
    snprintf(d.id, sizeof d.id, "kvc-1");
    snprintf(d.kind, sizeof d.kind, "drain");
    snprintf(d.node, sizeof d.node, "sv1");
    OK(store_job_submit_sole(f->s, &d, "drain queued", NULL, &e_));
    snprintf(d2.id, sizeof d2.id, "kvc-2");
    snprintf(d2.kind, sizeof d2.kind, "drain");
    snprintf(d2.node, sizeof d2.node, "sv2");
    OK(store_job_submit_sole(f->s, &d2, "drain queued", NULL, &e_));
    /* a change that keeps the setting cancels nothing */
    struct kv_counter more = {f->s, 100, 1};
    OK(store_kv_change_cancel(f->s, "count", count_decide, &more, &kc, &changed, &e_));
    assert_true(changed);
    assert_string_equal(kc.job, "");
    OK(store_kv_set(f->s, "count", "1", &e_));
    OK(store_kv_change_cancel(f->s, "count", count_decide, &two, &kc, &changed, &e_));
    assert_string_equal(kc.job, "kvc-1");
    assert_int_equal(kc.outcome, STORE_CANCEL_ENDED);
    struct job_rec j;
    OK(store_job_get(f->s, "kvc-1", &j, &e_));
    assert_int_equal(j.state, JOB_FAILED);
    assert_string_equal(j.error, "cancelled by ops before it started: gone");
    assert_string_equal(j.cancel_by, "ops");
    job_rec_release(&j);
    OK(store_job_get(f->s, "kvc-2", &j, &e_));
    assert_int_equal(j.state, JOB_QUEUED);
    assert_int_equal(j.cancel_at, 0);
    job_rec_release(&j);
    /* a running one is asked; the reason in the job.cancelled event */
    OK(store_kv_set(f->s, "count", "1", &e_));
    struct job_rec r = {.state = JOB_RUNNING};
    snprintf(r.id, sizeof r.id, "kvc-3");
    snprintf(r.kind, sizeof r.kind, "drain");
    snprintf(r.node, sizeof r.node, "sv1");
    OK(store_job_submit_sole(f->s, &r, "drain queued", NULL, &e_));
    OK(store_kv_change_cancel(f->s, "count", count_decide, &two, &kc, &changed, &e_));
    assert_string_equal(kc.job, "kvc-3");
    assert_int_equal(kc.outcome, STORE_CANCEL_ASKED);
    OK(store_job_get(f->s, "kvc-3", &j, &e_));
    assert_int_equal(j.state, JOB_RUNNING);
    assert_true(j.cancel_at > 0);
    assert_string_equal(j.cancel_by, "ops");
    job_rec_release(&j);
    struct store_event *v = NULL;
    int n = events_of(f->s, "job.cancelled", &v);
    assert_int_equal(n, 2);
    assert_string_equal(v[1].job, "kvc-3");
    assert_string_equal(json_string_value(json_object_get(v[1].data, "reason")), "gone");
    events_free(v, (size_t)n);
    /* a change that sets it (from nothing) cancels nothing */
    job_finish(f->s, "kvc-3");
    OK(store_job_submit_sole(
        f->s, &(struct job_rec){.state = JOB_QUEUED, .id = "kvc-4", .kind = "drain", .node = "sv1"},
        "drain queued", NULL, &e_));
    OK(store_kv_change_cancel(f->s, "count", count_decide, &two, &kc, &changed, &e_));
    assert_true(changed);
    assert_string_equal(kc.job, "");
    OK(store_job_get(f->s, "kvc-4", &j, &e_));
    assert_int_equal(j.state, JOB_QUEUED);
    job_rec_release(&j);
    EXPECT(STORE_E_INVALID,
           store_kv_change_cancel(f->s, "count", count_decide, &two,
                                  &(struct store_kv_cancel){.kind = "drain"}, NULL, &e));
}

/* A checkpoint writes the job and its event together, or neither. */
static void test_job_checkpoint(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    job_add(f->s, "cp-1", "stop", 0, wall_ms());
    struct job_rec j;
    OK(store_job_get(f->s, "cp-1", &j, &e_));
    j.state = JOB_DONE;
    snprintf(j.step, sizeof j.step, "done");
    j.progress = 100;
    OK(store_job_checkpoint(f->s, &j, "VM 100 is stopped", &e_));
    struct job_rec g;
    OK(store_job_get(f->s, "cp-1", &g, &e_));
    assert_int_equal(g.state, JOB_DONE);
    job_rec_release(&g);
    struct job_event *ev = NULL;
    size_t n = 0;
    OK(store_job_events(f->s, "cp-1", 0, &ev, &n, &e_));
    assert_true(n >= 1);
    assert_string_equal(ev[n - 1].step, "done");
    assert_int_equal(ev[n - 1].progress, 100);
    assert_string_equal(ev[n - 1].message, "VM 100 is stopped");
    free(ev);
    /* no event: the job only */
    snprintf(j.step, sizeof j.step, "after");
    OK(store_job_checkpoint(f->s, &j, NULL, &e_));
    size_t n2 = 0;
    OK(store_job_events(f->s, "cp-1", 0, &ev, &n2, &e_));
    assert_int_equal(n2, n);
    free(ev);
    /* a runner that lost its lease writes neither */
    snprintf(j.lease_owner, sizeof j.lease_owner, "someone-else");
    snprintf(j.step, sizeof j.step, "stale");
    EXPECT(STORE_E_CONFLICT, store_job_checkpoint(f->s, &j, "stale step", &e));
    OK(store_job_events(f->s, "cp-1", 0, &ev, &n2, &e_));
    assert_int_equal(n2, n);
    free(ev);
    job_rec_release(&j);

    /* A running job's checkpoints (state, VMID and end unchanged: the write
     * that leaves the indexes alone) land, read a cancel back, and keep the
     * job active; its last write (done) takes it out of the active index. */
    job_add(f->s, "cp-2", "start", 77, wall_ms());
    struct job_rec r;
    OK(store_job_claim(f->s, "me", 30000, &r, &e_));
    assert_string_equal(r.id, "cp-2");
    for (int i = 1; i <= 3; i++) {
        snprintf(r.step, sizeof r.step, "step-%d", i);
        r.progress = 10 * i;
        OK(store_job_checkpoint(f->s, &r, i == 2 ? "half way" : NULL, &e_));
    }
    OK(store_job_get(f->s, "cp-2", &g, &e_));
    assert_int_equal(g.state, JOB_RUNNING);
    assert_string_equal(g.step, "step-3");
    assert_int_equal(g.progress, 30);
    assert_int_equal(g.finished_at, 0);
    job_rec_release(&g);
    int active = -1;
    OK(store_job_count_active(f->s, "start", &active, &e_));
    assert_int_equal(active, 1);
    struct job_cancel_req rq = {.by = "admin", .error = "cancelled"};
    enum store_cancel oc;
    OK(store_job_cancel(f->s, "cp-2", &rq, NULL, &oc, &e_));
    snprintf(r.step, sizeof r.step, "step-4");
    OK(store_job_checkpoint(f->s, &r, NULL, &e_));
    assert_true(r.cancel_at > 0); /* read back by the checkpoint */
    assert_string_equal(r.cancel_by, "admin");
    snprintf(r.lease_owner, sizeof r.lease_owner, "not-me");
    EXPECT(STORE_E_CONFLICT, store_job_checkpoint(f->s, &r, NULL, &e));
    snprintf(r.lease_owner, sizeof r.lease_owner, "me");
    r.state = JOB_DONE;
    OK(store_job_checkpoint(f->s, &r, "done", &e_));
    OK(store_job_count_active(f->s, "start", &active, &e_));
    assert_int_equal(active, 0);
    OK(store_job_get(f->s, "cp-2", &g, &e_));
    assert_int_equal(g.state, JOB_DONE);
    assert_true(g.finished_at > 0);
    job_rec_release(&g);
    job_rec_release(&r);
}

/* A cancel: a queued creation ends at once, its record failed and its
 * VMID free again, in one transaction; a running job is asked, its next
 * checkpoint reads the ask back and no write of its runner undoes it;
 * asked again, nothing changes; a job finished without one: a conflict. */
static void test_job_cancel(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct vm_rec v;
    struct job_rec j, out;
    struct vmid_range r = {800, 809};
    submit(&v, &j, 0, "alice", 1, "cx-1");
    snprintf(v.name, sizeof v.name, "cx");
    snprintf(v.job, sizeof v.job, "cx-1"); /* as core_create_idem names it */
    struct store_submit sub = {
        .vm = &v, .job = &j, .event = "creation queued", .ranges = &r, .nranges = 1};
    OK(store_create_submit(f->s, &sub, &e_));
    assert_int_equal(v.vmid, 800);
    struct job_cancel_req rq = {.by = "ops", .error = "cancelled by ops before it started"};
    enum store_cancel oc = 0;
    OK(store_job_cancel(f->s, "cx-1", &rq, &out, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_ENDED);
    assert_int_equal(out.state, JOB_FAILED);
    assert_true(out.cancel_at > 0 && out.finished_at == out.cancel_at);
    assert_string_equal(out.cancel_by, "ops");
    assert_string_equal(out.error, "cancelled by ops before it started");
    job_rec_release(&out);
    struct vm_rec g;
    EXPECT(STORE_E_NOTFOUND, store_vm_get(f->s, 800, &g, &e)); /* failed: no live record */
    OK(store_vm_get_id(f->s, v.id, &g, &e_));
    assert_int_equal(g.state, VMS_FAILED);
    assert_string_equal(g.error, "cancelled by ops before it started");
    vm_rec_release(&g);
    char st[16];
    EXPECT(STORE_E_NOTFOUND, store_vmid_state(f->s, 800, st, &e)); /* free (no quarantine) */
    OK(store_job_cancel(f->s, "cx-1", &rq, NULL, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_AGAIN);

    /* running: asked; the runner reads it at its next write */
    job_add(f->s, "cx-2", "stop", 0, wall_ms());
    struct job_rec c;
    OK(store_job_claim(f->s, "me", 30000, &c, &e_));
    assert_string_equal(c.id, "cx-2");
    OK(store_job_cancel(f->s, "cx-2", &rq, &out, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_ASKED);
    assert_int_equal(out.state, JOB_RUNNING);
    job_rec_release(&out);
    assert_int_equal(c.cancel_at, 0);
    snprintf(c.step, sizeof c.step, "call");
    OK(store_job_checkpoint(f->s, &c, "calling", &e_));
    assert_true(c.cancel_at > 0);
    assert_string_equal(c.cancel_by, "ops");
    c.cancel_at = 0; /* a runner's write never clears it */
    c.cancel_by[0] = '\0';
    OK(store_job_update(f->s, &c, &e_));
    assert_true(c.cancel_at > 0);
    c.state = JOB_DONE; /* it finished all the same: the ask stays on record */
    OK(store_job_checkpoint(f->s, &c, "done", &e_));
    OK(store_job_get(f->s, "cx-2", &out, &e_));
    assert_true(out.cancel_at > 0 && out.state == JOB_DONE);
    job_rec_release(&out);
    OK(store_job_cancel(f->s, "cx-2", &rq, NULL, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_AGAIN);
    job_rec_release(&c);

    /* queued_only (a cancelled drain's moves): a running job is left as it
     * is, nothing recorded; a queued one ends */
    struct job_cancel_req qo = {
        .by = "ops", .error = "cancelled by ops before it started", .queued_only = true};
    job_add(f->s, "cx-4", "migrate", 0, wall_ms());
    OK(store_job_claim(f->s, "me", 30000, &c, &e_));
    assert_string_equal(c.id, "cx-4");
    OK(store_job_cancel(f->s, "cx-4", &qo, &out, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_RUNS);
    job_rec_release(&out);
    OK(store_job_get(f->s, "cx-4", &out, &e_));
    assert_true(out.cancel_at == 0 && out.state == JOB_RUNNING);
    job_rec_release(&out);
    c.state = JOB_DONE;
    OK(store_job_checkpoint(f->s, &c, "done", &e_));
    job_rec_release(&c);
    job_add(f->s, "cx-5", "migrate", 0, wall_ms());
    OK(store_job_cancel(f->s, "cx-5", &qo, &out, &oc, &e_));
    assert_int_equal(oc, STORE_CANCEL_ENDED);
    assert_int_equal(out.state, JOB_FAILED);
    assert_string_equal(out.cancel_by, "ops");
    job_rec_release(&out);

    /* finished without a cancel; unknown */
    job_add(f->s, "cx-3", "stop", 0, wall_ms());
    OK(store_job_claim(f->s, "me", 30000, &c, &e_));
    c.state = JOB_FAILED;
    OK(store_job_checkpoint(f->s, &c, "failed", &e_));
    job_rec_release(&c);
    EXPECT(STORE_E_CONFLICT, store_job_cancel(f->s, "cx-3", &rq, NULL, &oc, &e));
    assert_non_null(strstr(e.message, "has finished (failed)"));
    EXPECT(STORE_E_NOTFOUND, store_job_cancel(f->s, "cx-none", &rq, NULL, &oc, &e));
    rq.by = "";
    EXPECT(STORE_E_INVALID, store_job_cancel(f->s, "cx-2", &rq, NULL, &oc, &e));
}

static void test_idem(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    json_t *a1 = json_pack("{s:i,s:s}", "status", 202, "job", "j-1");
    json_t *a2 = json_pack("{s:i,s:s}", "status", 202, "job", "j-2");
    json_t *old = NULL;
    OK(store_idem_put(f->s, "alice", "k1", a1, &old, &e_));
    assert_null(old);
    EXPECT(STORE_E_CONFLICT, store_idem_put(f->s, "alice", "k1", a2, &old, &e));
    assert_non_null(old);
    assert_true(json_equal(old, a1));
    json_decref(old);
    old = NULL;
    /* Keys are per owner. */
    OK(store_idem_put(f->s, "bob", "k1", a2, &old, &e_));
    EXPECT(STORE_E_CONFLICT, store_idem_put(f->s, "bob", "k1", a1, NULL, &e));
    json_decref(a1);
    json_decref(a2);
}

/* ---- connections ------------------------------------------------------------ */

/* A connection the server ended (restart, failover, idle kill) is made
 * again: the next call succeeds, in every thread. PostgreSQL only (SQLite
 * has no server). */
static void test_reconnect(void **state)
{
    struct fx *f = *state;
    if (g_bk != BK_PG)
        skip();
    struct vm_rec r = vm_new(900, "alice", "debian12");
    OK(store_vm_insert(f->s, &r, &e_));
    const char *sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                      " WHERE datname = 'proxd_test' AND pid <> pg_backend_pid()";
    PGresult *res = PQexec(g_pg.admin, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_true(atoi(PQgetvalue(res, 0, 0)) >= 1);
    PQclear(res);
    /* termination is asynchronous: wait until the store's backend is gone,
     * so the read below surely meets a cut connection */
    const char *left = "SELECT count(*) FROM pg_stat_activity"
                       " WHERE datname = 'proxd_test' AND pid <> pg_backend_pid()";
    int64_t deadline = mono_ms() + 10000;
    for (;;) {
        res = PQexec(g_pg.admin, left);
        assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
        int n = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (n == 0)
            break;
        if (mono_ms() > deadline)
            fail_msg("%d backends still there 10 s after pg_terminate_backend", n);
        usleep(10000);
    }
    /* a read, then a write, on the connection that was cut */
    struct vm_rec g;
    OK(store_vm_get(f->s, 900, &g, &e_));
    vm_rec_release(&g);
    r = vm_new(901, "alice", "debian12");
    OK(store_vm_insert(f->s, &r, &e_));
    int n = 0;
    OK(store_vmid_count(f->s, 100, 999, &n, &e_));
}

/* ---- guarantees across processes ------------------------------------------- */

/* Fork NPROCS children running fn(url, p) (its result is the exit status,
 * 0..200); their statuses in st[]. */
static void run_children(const char *url, int (*fn)(const char *url, int p), int st[NPROCS])
{
    pid_t pids[NPROCS];
    for (int p = 0; p < NPROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0)
            _exit(fn(url, p));
    }
    for (int p = 0; p < NPROCS; p++) {
        int w = 0;
        assert_int_equal(waitpid(pids[p], &w, 0), pids[p]);
        assert_true(WIFEXITED(w));
        st[p] = WEXITSTATUS(w);
    }
}

#define CLAIM_JOBS 24
/* Claim until nothing is left; write the claimed ids' numbers to a file. */
static int claim_child(const char *url, int p)
{
    struct store_error e;
    store *s = store_open(url, &e);
    if (!s)
        return 200;
    char owner[16], path[64];
    snprintf(owner, sizeof owner, "proc:%d", p);
    int won = 0;
    snprintf(path, sizeof path, "/tmp/proxd-claims-%d-%d", (int)getppid(), p);
    FILE *fp = fopen(path, "w");
    for (;;) {
        struct job_rec j;
        int rc = store_job_claim(s, owner, 60000, &j, &e);
        if (rc == STORE_E_NOTFOUND)
            break;
        if (rc != STORE_OK) {
            fprintf(stderr, "child %d: claim: %s\n", p, e.message);
            won = 201;
            break;
        }
        if (fp)
            fprintf(fp, "%s\n", j.id);
        job_rec_release(&j);
        won++;
    }
    if (fp)
        fclose(fp);
    store_close(s);
    return won;
}

/* Processes claiming at once: every job is claimed once, and of a VM's
 * jobs only the oldest (the others wait until it ends). */
static void test_claim_processes(void **state)
{
    struct fx *f = *state;
    int64_t t = wall_ms() - 10000;
    /* 16 jobs without a VM, 4 VMs with 2 jobs each */
    for (int i = 0; i < CLAIM_JOBS; i++) {
        char id[16];
        snprintf(id, sizeof id, "cj%02d", i);
        job_add(f->s, id, "start", i < 16 ? 0 : 1000 + (i - 16) % 4, t + i);
    }
    int st[NPROCS], total = 0;
    run_children(f->url, claim_child, st);
    bool seen[CLAIM_JOBS] = {false};
    for (int p = 0; p < NPROCS; p++) {
        assert_true(st[p] <= CLAIM_JOBS);
        total += st[p];
        char path[64], line[64];
        snprintf(path, sizeof path, "/tmp/proxd-claims-%d-%d", (int)getpid(), p);
        FILE *fp = fopen(path, "r");
        assert_non_null(fp);
        while (fgets(line, sizeof line, fp)) {
            int i = atoi(line + 2);
            assert_true(i >= 0 && i < CLAIM_JOBS);
            assert_false(seen[i]); /* never claimed twice */
            seen[i] = true;
        }
        fclose(fp);
        unlink(path);
    }
    assert_int_equal(total, 16 + 4);
    for (int i = 0; i < CLAIM_JOBS; i++)
        assert_int_equal(seen[i], i < 20); /* 20..23: second jobs of the VMs */
}

/* Every child submits with the same idempotency key (exactly one creation
 * in all), then two VMs of its own for an owner whose quota is 3 VMs
 * (exactly 3 in all). Exit status: bit 0 the keyed one won, then the
 * number of quota wins times 2. */
static int submit_child(const char *url, int p)
{
    struct store_error e;
    store *s = store_open(url, &e);
    if (!s)
        return 200;
    int status = 0;
    json_t *ans = json_pack("{s:i}", "proc", p);
    struct store_idem key = {"alice", "same-key", ans};
    struct vm_rec v;
    struct job_rec j;
    char job[32];
    snprintf(job, sizeof job, "key-%d", p);
    submit(&v, &j, 2000 + p, "alice", 1, job);
    struct store_submit sub = {.vm = &v, .job = &j, .event = "queued", .idem = &key};
    int rc = store_create_submit(s, &sub, &e);
    if (rc == STORE_OK)
        status |= 1;
    else if (rc != STORE_E_CONFLICT || !sub.first)
        status = 201;
    json_decref(sub.first);
    json_decref(ans);
    struct store_usage quota = {.vms = 3};
    for (int i = 0; i < 2 && status < 200; i++) {
        snprintf(job, sizeof job, "quota-%d-%d", p, i);
        submit(&v, &j, 3000 + p * 10 + i, "bob", 1, job);
        struct store_submit qs = {.vm = &v, .job = &j, .event = "queued", .quota = &quota};
        rc = store_create_submit(s, &qs, &e);
        if (rc == STORE_OK)
            status += 2;
        else if (rc != STORE_E_FULL)
            status = 202;
    }
    store_close(s);
    return status;
}

static void test_submit_processes(void **state)
{
    struct fx *f = *state;
    int st[NPROCS], keyed = 0, quota = 0;
    run_children(f->url, submit_child, st);
    for (int p = 0; p < NPROCS; p++) {
        assert_true(st[p] < 200);
        keyed += st[p] & 1;
        quota += st[p] >> 1;
    }
    assert_int_equal(keyed, 1);
    assert_int_equal(quota, 3);
    struct vm_filter fl = {.owner = "bob", .state = -1};
    struct vm_rec *v = NULL;
    size_t n = 0;
    OK(store_vm_list(f->s, &fl, &v, &n, &e_));
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        vm_rec_release(&v[i]);
    free(v);
}

/* ---- the private PostgreSQL server ---------------------------------------- */

/* ---- IP addresses ------------------------------------------------------------ */

/* The core's side of a reservation, as docs/design/ippool.md section 4 has
 * it: the store's allocated keys merged with the inventory's addresses, and
 * ippool_pick on the pool's plan from the cursor. */
struct picker {
    const struct ippool *plan;
    const char *const *inventory; /* keys seen in Proxmox configs, any order */
    size_t ninv;
    int calls;
};

static int cmp_addr(const void *a, const void *b)
{
    return ippool_addr_cmp(a, b);
}

static int pick_cb(void *ctx, const char *const *alloc, size_t n, const char *cursor,
                   char out[STORE_ADDR_KEY])
{
    struct picker *p = ctx;
    p->calls++;
    size_t m = n + p->ninv;
    struct ippool_addr *taken = xcalloc(m ? m : 1, sizeof *taken);
    for (size_t i = 0; i < n; i++)
        if (ippool_addr_from_key(alloc[i], &taken[i]) != IPPOOL_OK)
            fail_msg("the store gave a bad key '%s'", alloc[i]);
    for (size_t i = 0; i < p->ninv; i++)
        assert_int_equal(ippool_addr_from_key(p->inventory[i], &taken[n + i]), IPPOOL_OK);
    qsort(taken, m, sizeof *taken, cmp_addr);
    struct ippool_addr cur, got;
    bool has_cur = *cursor && ippool_addr_from_key(cursor, &cur) == IPPOOL_OK;
    enum ippool_err r = ippool_pick(p->plan, taken, m, has_cur ? &cur : NULL, &got);
    free(taken);
    if (r == IPPOOL_EEXHAUSTED)
        return STORE_E_FULL;
    if (r != IPPOOL_OK)
        return STORE_E_INVALID;
    ippool_addr_key(&got, out);
    return STORE_OK;
}

/* A pool 10.0.0.0/24 handing out first-last (last octets). */
static void plan_make(struct ippool *p, int first, int last)
{
    struct ippool_errinfo e;
    memset(p, 0, sizeof *p);
    assert_int_equal(ippool_net_parse("10.0.0.0/24", &p->net, &e), IPPOOL_OK);
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "10.0.0.%d", first);
    snprintf(hi, sizeof hi, "10.0.0.%d", last);
    p->nranges = 1;
    assert_int_equal(ippool_addr_parse(lo, &p->ranges[0].lo), IPPOOL_OK);
    assert_int_equal(ippool_addr_parse(hi, &p->ranges[0].hi), IPPOOL_OK);
    assert_int_equal(ippool_prepare(p, &e), IPPOOL_OK);
}

/* The key of 10.0.0.<octet>. */
static const char *key4(int octet)
{
    static char keys[256][STORE_ADDR_KEY];
    struct ippool_addr a = {.lo = (10u << 24) | (unsigned)octet, .family = 4};
    ippool_addr_key(&a, keys[octet]);
    return keys[octet];
}

static int reserve1(store *s, const char *job, struct picker *pk, const char *want,
                    char got[STORE_ADDR_KEY], struct store_error *e)
{
    struct store_addr_req r = {.pool = "lan", .want = want, .pick = pick_cb, .ctx = pk};
    int rc = store_addr_reserve(s, job, &r, 1, e);
    if (got)
        snprintf(got, STORE_ADDR_KEY, "%s", r.got);
    return rc;
}

static int64_t pool_free(store *s, const struct ippool *plan)
{
    char(*keys)[STORE_ADDR_KEY] = NULL;
    size_t n = 0;
    OK(store_addr_allocated(s, "lan", &keys, &n, &e_));
    struct ippool_addr *taken = xcalloc(n ? n : 1, sizeof *taken);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ippool_addr_from_key(keys[i], &taken[i]), IPPOOL_OK);
    uint64_t free_n = ippool_free(plan, taken, n);
    free(taken);
    free(keys);
    return (int64_t)free_n;
}

/* Exhaustion names the pool and writes nothing; a wanted address that is
 * taken is a conflict on "address"; holds are never handed out. */
static void test_addr_reserve(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 12);
    struct picker pk = {.plan = &plan};
    char got[STORE_ADDR_KEY];
    assert_int_equal(pool_free(f->s, &plan), 3);
    OK(reserve1(f->s, "j1", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(10));
    OK(reserve1(f->s, "j2", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(11));
    OK(reserve1(f->s, "j3", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(12));
    EXPECT(STORE_E_FULL, reserve1(f->s, "j4", &pk, NULL, got, &e));
    assert_string_equal(e.field, "ippool");
    assert_string_equal(e.pool, "lan");
    assert_non_null(strstr(e.message, "pool lan"));
    assert_int_equal(pool_free(f->s, &plan), 0);
    EXPECT(STORE_E_CONFLICT, reserve1(f->s, "j4", &pk, key4(11), got, &e));
    assert_string_equal(e.field, "address");
    struct store_addr_counts c;
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.reserved, 3);
    assert_int_equal(c.used + c.quarantined + c.held, 0);
    /* a bad key is refused before anything is read */
    EXPECT(STORE_E_INVALID, reserve1(f->s, "j4", &pk, "10.0.0.13", got, &e));

    /* j3 failed before its record: its address is free again (no
     * quarantine for this pool), and an admin holds it */
    struct store_addr_quarantine none[] = {{NULL, 0}};
    size_t n = 0;
    OK(store_addr_release_job(f->s, "j3", none, 1, &n, &e_));
    assert_int_equal(n, 1);
    EXPECT(STORE_E_CONFLICT, store_addr_hold(f->s, "lan", key4(11), "router", &e));
    assert_string_equal(e.field, "address");
    OK(store_addr_hold(f->s, "lan", key4(12), "router", &e_));
    EXPECT(STORE_E_FULL, reserve1(f->s, "j5", &pk, NULL, got, &e));
    struct store_addr *rows = NULL;
    OK(store_addr_list(f->s, "lan", "held", NULL, 0, &rows, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].addr, key4(12));
    assert_string_equal(rows[0].note, "router");
    free(rows);
    OK(store_addr_list(f->s, "lan", NULL, key4(10), 1, &rows, &n, &e_));
    assert_int_equal(n, 1); /* after .10, one row: .11 */
    assert_string_equal(rows[0].addr, key4(11));
    assert_string_equal(rows[0].state, "reserved");
    assert_string_equal(rows[0].job, "j2");
    free(rows);
    EXPECT(STORE_E_INVALID, store_addr_list(f->s, "lan", "gone", NULL, 0, &rows, &n, &e));
    OK(store_addr_unhold(f->s, "lan", key4(12), &e_));
    EXPECT(STORE_E_NOTFOUND, store_addr_unhold(f->s, "lan", key4(12), &e));
    OK(reserve1(f->s, "j5", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(12));
}

/* A released address is not handed out before its quarantine ends, then
 * is. Each look is a reservation attempt; the deadline bounds the wait. */
static void test_addr_quarantine(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 11);
    struct picker pk = {.plan = &plan};
    char got[STORE_ADDR_KEY];
    OK(reserve1(f->s, "j1", &pk, NULL, got, &e_));
    OK(reserve1(f->s, "j2", &pk, NULL, got, &e_));
    struct store_addr_quarantine q[] = {{"other", 0}, {"lan", 600}, {NULL, 0}};
    int64_t released = wall_ms();
    OK(store_addr_release_job(f->s, "j1", q, 3, NULL, &e_));
    struct store_addr_counts c;
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.quarantined, 1);
    assert_int_equal(pool_free(f->s, &plan), 0);
    int64_t deadline = mono_ms() + 10000;
    int rc;
    while ((rc = reserve1(f->s, "j3", &pk, NULL, got, &e)) == STORE_E_FULL) {
        assert_true(mono_ms() < deadline);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(rc, STORE_OK);
    assert_true(wall_ms() >= released + 600);
    assert_string_equal(got, key4(10));
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.quarantined, 0);
    assert_int_equal(c.reserved, 2);
}

/* Addresses the inventory saw in VMs that are not proxd's are never handed
 * out; one proxd holds is returned as a conflict, not overwritten. */
static void test_addr_foreign(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 14);
    struct picker pk = {.plan = &plan};
    char got[STORE_ADDR_KEY];
    OK(reserve1(f->s, "j1", &pk, key4(13), got, &e_));
    const char *seen[] = {key4(10), key4(11), key4(13)};
    struct store_addr *conf = NULL;
    size_t nconf = 0;
    OK(store_addr_mark_foreign(f->s, seen, 3, "vm 900 on sv1", &conf, &nconf, &e_));
    assert_int_equal(nconf, 1);
    assert_string_equal(conf[0].addr, key4(13));
    assert_string_equal(conf[0].state, "reserved");
    assert_string_equal(conf[0].job, "j1");
    free(conf);
    /* the foreign rows are in no pool: the pick is told after each miss */
    OK(reserve1(f->s, "j2", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(12));
    assert_int_equal(pk.calls, 3);
    OK(reserve1(f->s, "j3", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(14));
    EXPECT(STORE_E_FULL, reserve1(f->s, "j4", &pk, NULL, got, &e));
    EXPECT(STORE_E_CONFLICT, reserve1(f->s, "j4", &pk, key4(10), got, &e));
    /* seen no more: forgotten, and handed out again */
    size_t n = 0;
    OK(store_addr_forget_foreign(f->s, wall_ms() + 1, &n, &e_));
    assert_int_equal(n, 2);
    OK(reserve1(f->s, "j4", &pk, NULL, got, &e_));
    assert_string_equal(got, key4(10));
    /* the inventory's own list (a walk newer than any mark) is skipped too */
    const char *inv[] = {key4(11)};
    struct picker pk2 = {.plan = &plan, .inventory = inv, .ninv = 1};
    EXPECT(STORE_E_FULL, reserve1(f->s, "j5", &pk2, NULL, got, &e));
}

static void net_make(struct store_net *n, const char *mac)
{
    memset(n, 0, sizeof *n);
    snprintf(n->mac, sizeof n->mac, "%s", mac);
    snprintf(n->bridge, sizeof n->bridge, "vmbr1");
    n->vlan = 42;
    snprintf(n->ipconfig0, sizeof n->ipconfig0, "ip=10.0.0.10/24,gw=10.0.0.1");
    snprintf(n->nameserver, sizeof n->nameserver, "10.0.0.53");
}

/* A page's networks are read by its ids, not by its id range: an owner's
 * records interleaved with more than a page's worth of others' vm_net rows
 * all get theirs (a range read of at most 1000 rows missed the later ones). */
static void test_vm_net_ids(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 20);
    struct picker pk = {.plan = &plan};
    struct vmid_range r = {100, 199};
    struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = &pk};
    struct store_net net;
    struct vm_rec a[3];
    struct job_rec j;
    const char *jobs[] = {"ni-1", "ni-2"};
    for (int i = 0; i < 3; i++) {
        if (i == 1) /* 1200 of bob's records with networks, between alice's */
            db_exec(f->url, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                            " WHERE i < 1200) INSERT INTO vms (vmid, owner, state, created_at,"
                            " updated_at) SELECT 5000 + i, 'bob', 'deleted', 1, 1 FROM n;"
                            "INSERT INTO vm_net (vm_id, mac, bridge, ipconfig0, live)"
                            " SELECT id, 'bob-' || id, 'vmbr0', 'ip=dhcp', 0 FROM vms"
                            " WHERE owner = 'bob'");
        if (i == 2) { /* no network */
            a[i] = (struct vm_rec){.vmid = 190, .state = VMS_CREATING, .cores = 1};
            snprintf(a[i].owner, sizeof a[i].owner, "alice");
            OK(store_vm_insert(f->s, &a[i], &e_));
            continue;
        }
        char mac[18];
        snprintf(mac, sizeof mac, "02:00:00:00:03:%02d", i);
        net_make(&net, mac);
        submit(&a[i], &j, 0, "alice", 1, jobs[i]);
        struct store_submit sub = {.vm = &a[i],
                                   .job = &j,
                                   .event = "queued",
                                   .ranges = &r,
                                   .nranges = 1,
                                   .addrs = &req,
                                   .naddrs = 1,
                                   .net = &net};
        OK(store_create_submit(f->s, &sub, &e_));
    }
    assert_true(a[1].id - a[0].id > 1200);
    /* asked in any order, answered by id, the one without a network left out */
    int64_t ids[] = {a[2].id, a[1].id, a[0].id};
    struct store_vm_net *rows = NULL;
    size_t n = 0;
    OK(store_vm_net_ids(f->s, ids, 3, &rows, &n, &e_));
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].vm_id, a[0].id);
    assert_string_equal(rows[0].net.mac, "02:00:00:00:03:00");
    assert_int_equal(rows[1].vm_id, a[1].id);
    assert_string_equal(rows[1].net.mac, "02:00:00:00:03:01");
    assert_int_equal(rows[1].net.vlan, 42);
    assert_string_equal(rows[1].net.nameserver, "10.0.0.53");
    free(rows);
    /* a full page of ids: every one of bob's in it, in one read */
    int64_t *many = xcalloc(STORE_NET_IDS_MAX + 1, sizeof *many);
    for (size_t i = 0; i < STORE_NET_IDS_MAX; i++)
        many[i] = a[0].id + 1 + (int64_t)i;
    OK(store_vm_net_ids(f->s, many, STORE_NET_IDS_MAX, &rows, &n, &e_));
    assert_int_equal(n, STORE_NET_IDS_MAX);
    assert_int_equal(rows[STORE_NET_IDS_MAX - 1].vm_id, a[0].id + STORE_NET_IDS_MAX);
    free(rows);
    /* over a page: refused, not cut */
    EXPECT(STORE_E_INVALID, store_vm_net_ids(f->s, many, STORE_NET_IDS_MAX + 1, &rows, &n, &e));
    free(many);
    OK(store_vm_net_ids(f->s, NULL, 0, &rows, &n, &e_));
    assert_int_equal(n, 0);
    free(rows);
}

/* A creation with a pool: VMID, address, record, network and job in one
 * transaction; any failure leaves nothing behind. */
static void test_addr_submit(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 10);
    struct picker pk = {.plan = &plan};
    struct vmid_range r = {100, 199};
    struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = &pk};
    struct store_net net;
    net_make(&net, "02:00:00:00:00:01");
    struct vm_rec v;
    struct job_rec j;
    submit(&v, &j, 0, "alice", 1, "as-1");
    struct store_submit sub = {.vm = &v,
                               .job = &j,
                               .event = "queued",
                               .ranges = &r,
                               .nranges = 1,
                               .addrs = &req,
                               .naddrs = 1,
                               .net = &net};
    OK(store_create_submit(f->s, &sub, &e_));
    assert_int_equal(v.vmid, 100);
    assert_string_equal(req.got, key4(10));
    struct job_rec g;
    OK(store_job_get(f->s, "as-1", &g, &e_));
    assert_int_equal(g.vmid, 100);
    job_rec_release(&g);
    struct store_addr *rows = NULL;
    size_t n = 0;
    OK(store_addr_list(f->s, "lan", NULL, NULL, 0, &rows, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].state, "used");
    assert_int_equal(rows[0].vm_id, v.id);
    assert_int_equal(rows[0].vmid, 100);
    free(rows);
    struct store_net got;
    OK(store_vm_net_get(f->s, v.id, &got, &e_));
    assert_string_equal(got.mac, "02:00:00:00:00:01");
    assert_string_equal(got.ipconfig0, net.ipconfig0);
    assert_int_equal(got.vlan, 42);
    int64_t first_id = v.id;

    /* the pool is empty: FULL naming it, and no VMID, record or job kept */
    int nv = 0;
    submit(&v, &j, 0, "alice", 1, "as-2");
    net_make(&net, "02:00:00:00:00:02");
    EXPECT(STORE_E_FULL, store_create_submit(f->s, &sub, &e));
    assert_string_equal(e.field, "ippool");
    assert_string_equal(e.pool, "lan");
    assert_int_equal(v.vmid, 0);
    OK(store_vmid_count(f->s, 100, 199, &nv, &e_));
    assert_int_equal(nv, 1);
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "as-2", &g, &e));

    /* a wider pool, the MAC of a live record: a conflict on "mac", nothing kept */
    plan_make(&plan, 10, 20);
    submit(&v, &j, 0, "alice", 1, "as-3");
    net_make(&net, "02:00:00:00:00:01");
    EXPECT(STORE_E_CONFLICT, store_create_submit(f->s, &sub, &e));
    assert_string_equal(e.field, "mac");
    OK(store_vmid_count(f->s, 100, 199, &nv, &e_));
    assert_int_equal(nv, 1);
    struct store_addr_counts c;
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 1);
    assert_int_equal(c.reserved, 0);

    /* the first VM deleted: its address to quarantine, its MAC free */
    struct store_addr_quarantine q[] = {{"lan", 3600 * 1000}};
    OK(store_addr_release_vm(f->s, first_id, q, 1, &n, &e_));
    assert_int_equal(n, 1);
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 0);
    assert_int_equal(c.quarantined, 1);
    OK(store_create_submit(f->s, &sub, &e_)); /* same MAC, record 1 is not live */
    assert_string_equal(req.got, key4(11));
    assert_int_equal(v.vmid, 101);

    /* no pool asked: as before, the VMID the caller chose */
    submit(&v, &j, 150, "alice", 1, "as-4");
    struct store_submit plain = {.vm = &v, .job = &j, .event = "queued"};
    OK(store_create_submit(f->s, &plain, &e_));
    assert_int_equal(v.vmid, 150);
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 1);
}

/* Crash recovery: what a finished or vanished creation held, and what a
 * gone record holds, goes back; a live job's, a live record's and a
 * leftover's stay. */
static void test_addr_sweep(void **state)
{
    struct fx *f = *state;
    struct ippool plan;
    plan_make(&plan, 10, 50);
    struct picker pk = {.plan = &plan};
    char got[STORE_ADDR_KEY];
    struct job_rec j = {.state = JOB_QUEUED};
    snprintf(j.kind, sizeof j.kind, "create");
    snprintf(j.id, sizeof j.id, "live-1");
    OK(store_job_insert(f->s, &j, &e_));
    snprintf(j.id, sizeof j.id, "done-1");
    j.state = JOB_FAILED;
    OK(store_job_insert(f->s, &j, &e_));
    OK(reserve1(f->s, "live-1", &pk, key4(10), got, &e_));
    OK(reserve1(f->s, "done-1", &pk, key4(11), got, &e_));
    OK(reserve1(f->s, "gone-1", &pk, key4(12), got, &e_)); /* no job: old */
    OK(reserve1(f->s, "gone-2", &pk, key4(13), got, &e_)); /* no job: fresh */
    db_exec(f->url, "UPDATE addr_alloc SET updated_at = 0 WHERE job = 'gone-1'");

    /* two creations that made records; both fail, one leaves a leftover */
    struct vmid_range r = {100, 199};
    struct store_net net;
    int64_t ids[2];
    int vmids[2];
    for (int i = 0; i < 2; i++) {
        struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = &pk};
        char mac[18], job[16];
        snprintf(mac, sizeof mac, "02:00:00:00:01:%02X", i);
        snprintf(job, sizeof job, "mk-%d", i);
        net_make(&net, mac);
        struct vm_rec v;
        struct job_rec jj;
        submit(&v, &jj, 0, "alice", 1, job);
        struct store_submit sub = {.vm = &v,
                                   .job = &jj,
                                   .event = "q",
                                   .ranges = &r,
                                   .nranges = 1,
                                   .addrs = &req,
                                   .naddrs = 1,
                                   .net = &net};
        OK(store_create_submit(f->s, &sub, &e_));
        ids[i] = v.id;
        vmids[i] = v.vmid;
        v.state = VMS_FAILED;
        OK(store_vm_update(f->s, &v, &e_));
    }
    OK(store_leftover_add(f->s, vmids[1], "sv1", "mk-1", STORE_LEFT_NO_ROOM, &e_));
    struct store_addr_quarantine q[] = {{NULL, 60000}};
    size_t n = 0;
    OK(store_addr_sweep(f->s, q, 1, &n, &e_));
    assert_int_equal(n, 3); /* done-1, gone-1, mk-0's record */
    struct store_addr_counts c;
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.reserved, 2); /* live-1, gone-2 */
    assert_int_equal(c.used, 1);     /* mk-1: its leftover */
    assert_int_equal(c.quarantined, 3);
    /* the failed records' MACs are not live any more: new records may take them */
    int rows = 0, live = 0;
    db_query2(f->url, "SELECT count(*), sum(live) FROM vm_net", &rows, &live);
    assert_int_equal(rows, 2);
    assert_int_equal(live, 0);
    struct store_net nw;
    OK(store_vm_net_get(f->s, ids[0], &nw, &e_));
    assert_string_equal(nw.mac, "02:00:00:00:01:00");
    OK(store_addr_sweep(f->s, q, 1, &n, &e_));
    assert_int_equal(n, 0); /* idempotent */
    OK(store_leftover_done(f->s, vmids[1], "sv1", 0, &e_));
    OK(store_addr_sweep(f->s, q, 1, &n, &e_));
    assert_int_equal(n, 1);
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 0);
    assert_int_equal(c.quarantined, 4);
}

/* One creation with an address of lan for owner, VMID from 100-199; the
 * record's id, or 0 and *rc when refused. */
static int64_t made(store *s, struct picker *pk, const char *owner, const char *job,
                    const char *mac, const struct store_usage *quota, json_t *answer,
                    struct store_submit *out, int *rc)
{
    static const struct vmid_range r = {100, 199};
    struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = pk};
    struct store_net net;
    net_make(&net, mac);
    struct vm_rec v;
    struct job_rec j;
    submit(&v, &j, 0, owner, 1, job);
    struct store_idem idem = {owner, job, answer};
    *out = (struct store_submit){.vm = &v,
                                 .job = &j,
                                 .event = "q",
                                 .idem = answer ? &idem : NULL,
                                 .quota = quota,
                                 .ranges = &r,
                                 .nranges = 1,
                                 .addrs = &req,
                                 .naddrs = 1,
                                 .net = &net};
    struct store_error e;
    *rc = store_create_submit(s, out, &e);
    json_decref(out->first);
    out->first = NULL;
    out->vm = NULL;
    out->job = NULL;
    return *rc ? 0 : v.id;
}

/* With the core's policy given to the store: a record that goes to a gone
 * state releases its addresses in that write (store_vm_update and _if);
 * a leftover of its creation keeps them until store_leftover_done, which
 * releases them; store_vm_insert_adopt moves them to the new record in
 * its insert; an owner's address quota holds inside the submit; the VMID
 * chosen in the submit is in the idempotency answer. */
static void test_addr_policy(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 50);
    struct picker pk = {.plan = &plan};
    struct store_addr_quarantine q[] = {{"lan", 60000}, {NULL, 0}};
    store_addr_policy(f->s, q, 2);
    struct store_submit sub;
    struct store_addr_counts c;
    int rc;
    struct vm_rec v;

    /* failed: released at once, quarantined for lan's time */
    int64_t a = made(f->s, &pk, "alice", "po-1", "02:00:00:00:03:01", NULL, NULL, &sub, &rc);
    OK(rc);
    OK(store_vm_get_id(f->s, a, &v, &e_));
    v.state = VMS_FAILED;
    OK(store_vm_update(f->s, &v, &e_));
    vm_rec_release(&v);
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 0);
    assert_int_equal(c.quarantined, 1);
    int rows = 0, live = 0;
    db_query2(f->url, "SELECT count(*), coalesce(sum(live), 0) FROM vm_net", &rows, &live);
    assert_int_equal(live, 0);

    /* a leftover of the creation keeps it until it is done */
    int64_t b = made(f->s, &pk, "alice", "po-2", "02:00:00:00:03:02", NULL, NULL, &sub, &rc);
    OK(rc);
    OK(store_vm_get_id(f->s, b, &v, &e_));
    int bvmid = v.vmid;
    OK(store_leftover_add(f->s, bvmid, "sv1", "po-2", STORE_LEFT_NO_ROOM, &e_));
    v.state = VMS_FAILED;
    OK(store_vm_update_if(f->s, &v, VMS_CREATING, 0, &e_));
    vm_rec_release(&v);
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 1);
    size_t n = 0;
    OK(store_addr_sweep(f->s, q, 2, &n, &e_));
    assert_int_equal(n, 0);
    OK(store_leftover_done(f->s, bvmid, "sv1", 0, &e_));
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 0);
    assert_int_equal(c.quarantined, 2);

    /* adopted by a new record in its insert; the old one failing then
     * releases nothing, the new one deleted releases it */
    int64_t d = made(f->s, &pk, "alice", "po-3", "02:00:00:00:03:03", NULL, NULL, &sub, &rc);
    OK(rc);
    struct vm_rec nv = {.vmid = 170, .state = VMS_CREATING, .cores = 1};
    snprintf(nv.owner, sizeof nv.owner, "alice");
    OK(store_vm_insert_adopt(f->s, &nv, d, &e_));
    struct store_net net;
    OK(store_vm_net_get(f->s, nv.id, &net, &e_));
    assert_string_equal(net.mac, "02:00:00:00:03:03");
    OK(store_vm_get_id(f->s, d, &v, &e_));
    v.state = VMS_FAILED;
    OK(store_vm_update(f->s, &v, &e_));
    vm_rec_release(&v);
    struct store_addr *list = NULL;
    OK(store_addr_list(f->s, "lan", "used", NULL, 0, &list, &n, &e_));
    assert_int_equal(n, 1);
    assert_int_equal(list[0].vm_id, nv.id);
    assert_int_equal(list[0].vmid, 170);
    free(list);
    nv.state = VMS_DELETED;
    OK(store_vm_update(f->s, &nv, &e_));
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.used, 0);
    assert_int_equal(c.quarantined, 3);
    /* adopting from a record that does not exist moves nothing */
    struct vm_rec lone = {.vmid = 171, .state = VMS_CREATING, .cores = 1};
    snprintf(lone.owner, sizeof lone.owner, "alice");
    OK(store_vm_insert_adopt(f->s, &lone, 999999, &e_));

    /* quota: one address for bob */
    struct store_usage quota = {.addresses = 1};
    OK((made(f->s, &pk, "bob", "po-4", "02:00:00:00:03:04", &quota, NULL, &sub, &rc), rc));
    assert_int_equal(made(f->s, &pk, "bob", "po-5", "02:00:00:00:03:05", &quota, NULL, &sub, &rc),
                     0);
    assert_int_equal(rc, STORE_E_FULL);
    assert_int_equal(sub.used.addresses, 1);
    assert_int_equal(sub.used.vms, 1);
    EXPECT(STORE_E_NOTFOUND, store_job_get(f->s, "po-5", &(struct job_rec){0}, &e));

    /* the idempotency answer gets the VMID chosen in the transaction */
    json_t *ans = json_pack("{s:s,s:i}", "job", "po-6", "vmid", 0);
    int64_t g = made(f->s, &pk, "carol", "po-6", "02:00:00:00:03:06", NULL, ans, &sub, &rc);
    OK(rc);
    OK(store_vm_get_id(f->s, g, &v, &e_));
    json_t *stored = NULL;
    OK(store_idem_get(f->s, "carol", "po-6", &stored, &e_));
    assert_int_equal(json_integer_value(json_object_get(stored, "vmid")), v.vmid);
    assert_true(v.vmid >= 100 && v.vmid <= 199);
    vm_rec_release(&v);
    json_decref(stored);
    json_decref(ans);
}

/* A creation that goes on under a new record takes its addresses and
 * network along; the guest agent's report is kept; run-time ranges. */
/* store_addr_range_add_checked's check: sees the pool's ranges; refuses
 * once it sees *max of them. */
static int range_cap(void *ctx, const struct store_addr_range *have, size_t n,
                     const struct store_addr_range *r, struct store_error *err)
{
    (void)have;
    (void)r;
    if (n < *(size_t *)ctx)
        return STORE_OK;
    err->code = STORE_E_CONFLICT;
    snprintf(err->message, sizeof err->message, "full");
    return STORE_E_CONFLICT;
}

static void test_addr_extras(void **state)
{
    struct fx *f = *state;
    struct store_error e;
    struct ippool plan;
    plan_make(&plan, 10, 20);
    struct picker pk = {.plan = &plan};
    struct vmid_range r = {100, 199};
    struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = &pk};
    struct store_net net;
    net_make(&net, "02:00:00:00:02:01");
    struct vm_rec v;
    struct job_rec j;
    submit(&v, &j, 0, "alice", 1, "ex-1");
    struct store_submit sub = {.vm = &v,
                               .job = &j,
                               .event = "queued",
                               .ranges = &r,
                               .nranges = 1,
                               .addrs = &req,
                               .naddrs = 1,
                               .net = &net};
    OK(store_create_submit(f->s, &sub, &e_));
    int64_t old_id = v.id;
    v.state = VMS_FAILED;
    OK(store_vm_update(f->s, &v, &e_));
    struct vm_rec v2 = {.vmid = 160, .state = VMS_CREATING, .cores = 1};
    snprintf(v2.owner, sizeof v2.owner, "alice");
    OK(store_vm_insert(f->s, &v2, &e_));
    OK(store_addr_rebind(f->s, old_id, v2.id, 160, &e_));
    struct store_addr *rows = NULL;
    size_t n = 0;
    OK(store_addr_list(f->s, "lan", "used", NULL, 0, &rows, &n, &e_));
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].vm_id, v2.id);
    assert_int_equal(rows[0].vmid, 160);
    free(rows);
    struct store_net got;
    OK(store_vm_net_get(f->s, v2.id, &got, &e_));
    assert_string_equal(got.mac, "02:00:00:00:02:01");
    assert_int_equal(got.seen_at, 0);
    EXPECT(STORE_E_NOTFOUND, store_vm_net_get(f->s, old_id, &got, &e));
    /* the sweep leaves the new live record's address alone */
    OK(store_addr_sweep(f->s, NULL, 0, &n, &e_));
    assert_int_equal(n, 0);

    json_t *seen = json_pack("[{s:s,s:[s]}]", "mac", "02:00:00:00:02:01", "ip", "10.0.0.10");
    OK(store_vm_net_seen(f->s, v2.id, seen, &e_));
    json_t *back = NULL;
    OK(store_vm_net_seen_get(f->s, v2.id, &back, &e_));
    assert_true(json_equal(seen, back));
    json_decref(back);
    EXPECT(STORE_E_NOTFOUND, store_vm_net_seen(f->s, old_id, seen, &e));
    json_decref(seen);
    OK(store_vm_net_get(f->s, v2.id, &got, &e_));
    assert_true(got.seen_at > 0);

    /* two pools in one reservation, asked out of name order; a third
     * request over the bound is refused */
    struct ippool plan2;
    plan_make(&plan2, 100, 100);
    struct picker pk2 = {.plan = &plan2};
    struct store_addr_req two[] = {{.pool = "wan", .pick = pick_cb, .ctx = &pk2},
                                   {.pool = "lan", .pick = pick_cb, .ctx = &pk}};
    OK(store_addr_reserve(f->s, "ex-2", two, 2, &e_));
    assert_string_equal(two[0].got, key4(100));
    assert_string_equal(two[1].got, key4(11));
    EXPECT(STORE_E_FULL, store_addr_reserve(f->s, "ex-3", two, 2, &e));
    assert_string_equal(e.pool, "wan");
    struct store_addr_counts c;
    OK(store_addr_counts(f->s, "lan", &c, &e_));
    assert_int_equal(c.reserved, 1); /* ex-3 kept nothing of lan */
    struct store_addr_req many[STORE_ADDR_MAX_REQS + 1];
    for (size_t i = 0; i <= STORE_ADDR_MAX_REQS; i++)
        many[i] = two[1];
    EXPECT(STORE_E_INVALID, store_addr_reserve(f->s, "ex-3", many, STORE_ADDR_MAX_REQS + 1, &e));

    struct store_addr_range rg = {.kind = "reserved"};
    snprintf(rg.pool, sizeof rg.pool, "lan");
    snprintf(rg.first, sizeof rg.first, "%s", key4(30));
    snprintf(rg.last, sizeof rg.last, "%s", key4(20));
    EXPECT(STORE_E_INVALID, store_addr_range_add(f->s, &rg, &e));
    assert_non_null(strstr(e.message, "first is after last"));
    snprintf(rg.first, sizeof rg.first, "%s", key4(15));
    OK(store_addr_range_add(f->s, &rg, &e_));
    assert_true(rg.id > 0);
    snprintf(rg.kind, sizeof rg.kind, "ranges");
    snprintf(rg.pool, sizeof rg.pool, "wan");
    OK(store_addr_range_add(f->s, &rg, &e_));
    struct store_addr_range *ranges = NULL;
    OK(store_addr_range_list(f->s, "lan", &ranges, &n, &e_));
    assert_int_equal(n, 1);
    assert_string_equal(ranges[0].kind, "reserved");
    assert_string_equal(ranges[0].first, key4(15));
    int64_t lan_id = ranges[0].id;
    free(ranges);
    OK(store_addr_range_list(f->s, NULL, &ranges, &n, &e_));
    assert_int_equal(n, 2);
    free(ranges);
    EXPECT(STORE_E_NOTFOUND, store_addr_range_del(f->s, "wan", lan_id, &e));
    OK(store_addr_range_del(f->s, "lan", lan_id, &e_));
    OK(store_addr_range_list(f->s, "lan", &ranges, &n, &e_));
    assert_int_equal(n, 0);
    free(ranges);
    /* checked: the check sees the pool's ranges (wan's one); refused, the
     * range is not added */
    size_t cap = 2;
    OK(store_addr_range_add_checked(f->s, &rg, range_cap, &cap, &e_));
    EXPECT(STORE_E_CONFLICT, store_addr_range_add_checked(f->s, &rg, range_cap, &cap, &e));
    assert_string_equal(e.message, "full");
    OK(store_addr_range_list(f->s, "wan", &ranges, &n, &e_));
    assert_int_equal(n, 2);
    free(ranges);
}

/* 4 processes race 50 reservations each for a pool with 150 free
 * addresses, two of them through creations (the VMID in the same
 * transaction), two through store_addr_reserve: exactly 150 succeed with
 * 150 distinct addresses (and distinct VMIDs), 50 are STORE_E_FULL naming
 * the pool, and the failures keep nothing. */
#define ADDR_FREE 150
static void test_addr_processes(void **state)
{
    struct fx *f = *state;
    char *url = fx_url(f, "procs");
    assert_non_null(url);
    struct ippool plan;
    plan_make(&plan, 20, 20 + ADDR_FREE + 9); /* 160, 10 of them held */
    {
        struct store_error e;
        store *s = store_open(url, &e);
        assert_non_null(s);
        for (int i = 0; i < 10; i++)
            OK(store_addr_hold(s, "lan", key4(20 + 3 * i), "test", &e_));
        store_close(s);
    }
    struct result {
        char key[STORE_ADDR_KEY];
        int vmid;
        int rc;
    };
    int fds[NPROCS][2];
    pid_t pids[NPROCS];
    int64_t t0 = mono_ms();
    for (int p = 0; p < NPROCS; p++) {
        assert_int_equal(pipe(fds[p]), 0);
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(fds[p][0]);
            struct store_error e;
            store *s = store_open(url, &e);
            if (!s)
                _exit(2);
            struct result res[PER_PROC];
            struct picker pk = {.plan = &plan};
            struct vmid_range r = {100, 999};
            for (int i = 0; i < PER_PROC; i++) {
                struct store_addr_req req = {.pool = "lan", .pick = pick_cb, .ctx = &pk};
                struct store_net net;
                char mac[18], job[32];
                snprintf(mac, sizeof mac, "02:00:00:%02X:00:%02X", p, i);
                snprintf(job, sizeof job, "ap%d-%d", p, i);
                net_make(&net, mac);
                struct vm_rec v;
                struct job_rec j;
                submit(&v, &j, 0, "alice", 1, job);
                struct store_submit sub = {.vm = &v,
                                           .job = &j,
                                           .event = "q",
                                           .ranges = &r,
                                           .nranges = 1,
                                           .addrs = &req,
                                           .naddrs = 1,
                                           .net = &net};
                /* half the processes reserve addresses alone (no VMID
                 * lock serialises them), half with creations */
                res[i].rc = p % 2 ? store_addr_reserve(s, job, &req, 1, &e)
                                  : store_create_submit(s, &sub, &e);
                if (res[i].rc == STORE_E_FULL &&
                    (strcmp(e.field, "ippool") != 0 || strcmp(e.pool, "lan") != 0))
                    _exit(3);
                if (res[i].rc != STORE_OK && res[i].rc != STORE_E_FULL) {
                    fprintf(stderr, "child %d: %s\n", p, e.message);
                    _exit(4);
                }
                snprintf(res[i].key, sizeof res[i].key, "%s", res[i].rc ? "" : req.got);
                res[i].vmid = p % 2 ? 0 : v.vmid;
            }
            store_close(s);
            ssize_t wr = write(fds[p][1], res, sizeof res);
            _exit(wr == (ssize_t)sizeof res ? 0 : 5);
        }
        close(fds[p][1]);
    }
    struct result all[NPROCS * PER_PROC];
    for (int p = 0; p < NPROCS; p++) {
        size_t got = 0, want = sizeof(struct result) * PER_PROC;
        char *dst = (char *)(all + p * PER_PROC);
        while (got < want) {
            ssize_t r = read(fds[p][0], dst + got, want - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fds[p][0]);
        int st = 0;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        assert_int_equal(got, want);
    }
    print_message(
        "[ figures  ] %d processes x %d address reservations (half in creations): %lld ms\n",
        NPROCS, PER_PROC, (long long)(mono_ms() - t0));
    int ok = 0, full = 0, nv = 0, vmids[NPROCS * PER_PROC];
    char keys[NPROCS * PER_PROC][STORE_ADDR_KEY];
    for (int i = 0; i < NPROCS * PER_PROC; i++) {
        if (all[i].rc == STORE_E_FULL) {
            full++;
            continue;
        }
        if (all[i].vmid)
            vmids[nv++] = all[i].vmid;
        memcpy(keys[ok++], all[i].key, STORE_ADDR_KEY);
    }
    assert_int_equal(ok, ADDR_FREE);
    assert_int_equal(full, NPROCS * PER_PROC - ADDR_FREE);
    assert_distinct(vmids, (size_t)nv);
    qsort(keys, (size_t)ok, STORE_ADDR_KEY, (int (*)(const void *, const void *))strcmp);
    for (int i = 1; i < ok; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            fail_msg("address %s handed out twice", keys[i]);
    for (int i = 0; i < 10; i++) /* held ones never */
        for (int k = 0; k < ok; k++)
            assert_string_not_equal(keys[k], key4(20 + 3 * i));

    struct store_error e;
    store *s = store_open(url, &e);
    assert_non_null(s);
    struct store_addr_counts c;
    OK(store_addr_counts(s, "lan", &c, &e_));
    assert_int_equal(c.used, nv);
    assert_int_equal(c.reserved, ADDR_FREE - nv);
    assert_int_equal(c.held, 10);
    int nid = 0;
    OK(store_vmid_count(s, 100, 999, &nid, &e_));
    assert_int_equal(nid, nv);
    assert_int_equal(pool_free(s, &plan), 0);
    store_close(s);
    free(url);
}

/* The private server is tests/lib/pg.py's (h_pg_start), the one every
 * test uses; here it gets one database, and each test a schema in it. */
static int pg_group_setup(void **state)
{
    (void)state;
    int64_t t0 = mono_ms();
    char url[256];
    g_pg.up = h_pg_start(url, sizeof url, g_pg.dir, sizeof g_pg.dir);
    if (!g_pg.up) {
        print_message("[ pg       ] the server did not start (python3 -m lib.pg start)\n");
        return -1;
    }
    const char *colon = strrchr(url, ':');
    g_pg.port = colon ? atoi(colon + 1) : 0;
    PGconn *pc = PQconnectdb(url);
    PGresult *res = PQexec(pc, "CREATE DATABASE proxd_test");
    bool made = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!made)
        print_message("[ pg       ] cannot create the test database: %s", PQerrorMessage(pc));
    PQclear(res);
    PQfinish(pc);
    if (!made)
        return -1;
    char *db = xasprintf("postgresql://proxd@127.0.0.1:%d/proxd_test", g_pg.port);
    g_pg.admin = PQconnectdb(db);
    free(db);
    if (PQstatus(g_pg.admin) != CONNECTION_OK) {
        print_message("[ pg       ] cannot connect: %s", PQerrorMessage(g_pg.admin));
        return -1;
    }
    print_message("[ figures  ] PostgreSQL server (initdb + start) on 127.0.0.1:%d: %lld ms\n",
                  g_pg.port, (long long)(mono_ms() - t0));
    return 0;
}

static int pg_group_teardown(void **state)
{
    (void)state;
    PQfinish(g_pg.admin);
    g_pg.admin = NULL;
    if (g_pg.up && !h_pg_stop(g_pg.dir))
        print_message("[ warning  ] stopping the PostgreSQL server failed\n");
    g_pg.up = false;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_bad_urls),
        cmocka_unit_test_setup_teardown(test_reopen_and_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_old_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_too_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_log_vm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_log_with_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_log_jobs_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_seek_waits_for_a_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_ids_commit_ordered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_live_unique, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_lock_let_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_scan_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_lists_match_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_claim_order_and_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_claim_owners_take_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_claim_empty_look_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_claim_after_a_wait_leaves_lapsed_leases, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_job_claim_per_vm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_reserved_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_quarantine_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_foreign_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_big_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmid_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_shared_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_settle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_leftover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clone_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_submit_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_submit_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sole_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_cancels_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jobs_file_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_update_if, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_renew_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_set_get_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_note, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_change_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv_change_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_quarantine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_extras, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_net_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addr_processes, setup, teardown),
    };
    const char *only = getenv("STORE_TEST_BACKEND");
    int failed = 0;
    int64_t t0 = mono_ms();
    if (!only || strcmp(only, "sqlite") == 0) {
        g_bk = BK_SQLITE;
        failed += cmocka_run_group_tests_name("store/sqlite", tests, NULL, NULL);
        print_message("[ figures  ] SQLite half: %lld ms\n", (long long)(mono_ms() - t0));
    }
    if (!only || strcmp(only, "postgresql") == 0) {
        t0 = mono_ms();
        g_bk = BK_PG;
        failed += cmocka_run_group_tests_name("store/postgresql", tests, pg_group_setup,
                                              pg_group_teardown);
        print_message("[ figures  ] PostgreSQL half (server start and stop included): %lld ms\n",
                      (long long)(mono_ms() - t0));
    }
    return failed;
}
