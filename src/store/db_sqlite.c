/* db_sqlite: the SQLite driver of db.h, primitives only.
 *
 * Concurrency model (see docs/c-practices.md §2.10 for the measurements):
 *  - one connection per thread (db.c keeps them), opened NOMUTEX;
 *  - WAL, so readers never block the writer;
 *  - every transaction that may write starts with BEGIN IMMEDIATE: it takes
 *    the write lock up front, where the busy timeout can wait for it. A
 *    deferred transaction that reads and then writes would fail at once
 *    with SQLITE_BUSY_SNAPSHOT when another connection committed in
 *    between, and no amount of waiting can fix a stale snapshot. Writers
 *    are therefore serialised, and the named locks of db.h cost nothing;
 *  - SQLITE_BUSY/LOCKED that still come back (timeout, or the cases where
 *    SQLite does not call the busy handler) are the retry class: db_tx runs
 *    the whole transaction again.
 * The database file is made 0600 before SQLite opens it: it holds owners,
 * SSH keys, token hashes and the key they are hashed with. */
#include "store/db_int.h"
#include "store/store_int.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQ_BUSY_TIMEOUT_MS 5000
#define SQ_CACHE_KIB "512" /* page cache per connection (see conn_open) */

struct sq_conn {
    struct db_conn base; /* first: db.c sees only this */
    sqlite3 *db;
};

static sqlite3 *SQ(db_conn *c)
{
    return ((struct sq_conn *)c)->db;
}

static const char *sq_path(db_conn *c)
{
    return c->d->drv_data;
}

/* Busy and locked: retry; unique keys: conflict; foreign keys: gone. */
static enum db_class sq_class(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return DB_C_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return DB_C_RETRY;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return DB_C_CONFLICT;
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return DB_C_GONE;
        return DB_C_INVALID;
    default:
        return DB_C_OTHER;
    }
}

static int sq_err(db_conn *c, int rc, struct store_error *err, const char *what)
{
    enum db_class cls = sq_class(rc);
    if (cls == DB_C_OTHER)
        return db_fail(err, cls, "%s: %s (SQLite code %d)", what, sqlite3_errmsg(SQ(c)), rc);
    return db_fail(err, cls, "%s: %s", what, sqlite3_errmsg(SQ(c)));
}

/* ---- handle and connections ------------------------------------------------ */

/* A new file is made 0600 whatever the umask, before SQLite opens it
 * (SQLite gives its -wal and -shm files the database's mode). A file that
 * exists keeps its mode; one others may read is reported. */
static int create_private(const char *path, struct store_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        fchmod(fd, 0600); /* open's mode went through the umask */
        close(fd);
        return STORE_OK;
    }
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0) {
        if (st.st_mode & S_IROTH)
            log_warn("store", "database %s may be read by anyone (mode %03o): chmod 600 it", path,
                     (unsigned)(st.st_mode & 0777));
        return STORE_OK;
    }
    return store_fail(err, STORE_E_DB, "cannot create SQLite database %s: %s", path,
                      strerror(errno));
}

static const char SQL_WAL[] = "PRAGMA journal_mode=WAL";

/* journal_mode=WAL is persistent in the file; set it once at open. */
static int wal_fn(db_conn *c, void *ctx, struct store_error *err)
{
    (void)ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_WAL, &st, err);
    if (rc)
        return rc;
    bool found = false;
    rc = db_step(st, &found, err, "setting journal_mode=WAL");
    if (rc == STORE_OK) {
        const char *mode = found ? db_col_text(st, 0) : NULL;
        if (!mode || strcmp(mode, "wal") != 0)
            rc = store_fail(err, STORE_E_DB,
                            "SQLite refused WAL mode for %s (got %s); WAL needs a local "
                            "filesystem",
                            sq_path(c), mode ? mode : "nothing");
    }
    db_done(st);
    return rc;
}

/* path: a file name, or "//" + an absolute path (sqlite:///var/lib/x.db). */
static int sq_open(db *d, const char *path, struct store_error *err)
{
    if (str_starts(path, "//"))
        path += 2;
    if (!*path || strcmp(path, ":memory:") == 0 || str_starts(path, "file:"))
        /* In-memory databases are per connection, and we have one
         * connection per thread: each thread would see its own data. */
        return store_fail(err, STORE_E_INVALID, "SQLite store needs a file path, got '%s'", path);
    int rc = create_private(path, err);
    if (rc)
        return rc;
    d->drv_data = xstrdup(path);
    return db_tx(d, DB_READ, wal_fn, NULL, err);
}

static void sq_close(db *d)
{
    free(d->drv_data);
}

static void sq_conn_close(db_conn *c)
{
    sqlite3_close_v2(SQ(c));
    free(c);
}

static int sq_conn_open(db *d, db_conn **out, struct store_error *err)
{
    struct sq_conn *c = xcalloc(1, sizeof *c);
    const char *path = d->drv_data;
    int rc = STORE_OK;
    /* NOMUTEX: a connection is only ever used by the thread that made it. */
    int src = sqlite3_open_v2(
        path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = store_fail(err, STORE_E_DB, "cannot open SQLite database %s: %s", path,
                        c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(src));
        goto out;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
    /* synchronous=NORMAL: in WAL mode a commit is written to the WAL but
     * only fsync'ed at checkpoints. The database cannot be corrupted, but
     * the last commits before a power cut (not a process crash) may be lost.
     * We accept that: FULL costs an fsync per commit (every VMID reservation
     * and job step), and what such a loss can forget (a reservation, a step)
     * is what the reconciler rebuilds from Proxmox, whose `taken` list keeps
     * an ID whose VM exists from being handed out again.
     * cache_size: each connection (one per thread, ~20 in proxd) has its
     * own page cache, by default up to 2000 KiB; a thread that scans the
     * VMs (the reconciler, a listing) fills it and keeps it. SQ_CACHE_KIB
     * holds the B-tree interior pages and a working set; the rest is read
     * from the kernel's page cache, which all connections share. */
    src = sqlite3_exec(c->db,
                       "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; "
                       "PRAGMA cache_size=-" SQ_CACHE_KIB ";",
                       NULL, NULL, NULL);
    if (src != SQLITE_OK)
        rc = store_fail(err, STORE_E_DB, "setting up SQLite connection to %s: %s", path,
                        sqlite3_errmsg(c->db));
out:
    if (rc)
        sq_conn_close(&c->base);
    *out = rc ? NULL : &c->base;
    return rc;
}

static int sq_conn_ready(db_conn *c, struct store_error *err)
{
    (void)c;
    (void)err;
    return STORE_OK;
}

/* ---- transactions ------------------------------------------------------- */

static int sq_exec(db_conn *c, const char *sql, struct store_error *err)
{
    int src = sqlite3_exec(SQ(c), sql, NULL, NULL, NULL);
    return src == SQLITE_OK ? STORE_OK : sq_err(c, src, err, "running SQL");
}

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";

static int sq_simple(db_conn *c, const char *sql, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, sql, &st, err);
    if (rc == STORE_OK)
        rc = db_run(st, err, sql);
    db_done(st);
    return rc;
}

static int sq_begin(db_conn *c, enum db_mode mode, struct store_error *err)
{
    return mode == DB_WRITE ? sq_simple(c, SQL_BEGIN, err) : STORE_OK;
}

static int sq_commit(db_conn *c, struct store_error *err)
{
    return sq_simple(c, SQL_COMMIT, err);
}

static void sq_rollback(db_conn *c)
{
    if (!sqlite3_get_autocommit(SQ(c)))
        sqlite3_exec(SQ(c), "ROLLBACK", NULL, NULL, NULL);
}

/* BEGIN IMMEDIATE serialises every writer already. */
static int sq_lock(db_conn *c, int purpose, const char *key, struct store_error *err)
{
    (void)c;
    (void)purpose;
    (void)key;
    (void)err;
    return STORE_OK;
}

/* ---- statements --------------------------------------------------------- */

static int sq_prepare(db_conn *c, const char *text, void **h, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(SQ(c), text, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(c, rc, err, "preparing SQL");
    *h = st;
    return STORE_OK;
}

static void sq_finalize(db_conn *c, void *h)
{
    (void)c;
    sqlite3_finalize(h);
}

static void sq_reset(void *h)
{
    sqlite3_reset(h);
    sqlite3_clear_bindings(h);
}

/* Binding fails only for an index out of range or a value over SQLite's
 * limits; both show at the step (a missing parameter binds NULL, which the
 * schema's NOT NULL constraints refuse). */
static void sq_bind_i64(void *h, int i, int64_t v)
{
    sqlite3_bind_int64(h, i, v);
}

static void sq_bind_text(void *h, int i, const char *s, size_t n)
{
    if (s)
        sqlite3_bind_text(h, i, s, (int)n, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(h, i);
}

static int sq_step(db_conn *c, void *h, bool *row, struct store_error *err, const char *what)
{
    int src = sqlite3_step(h);
    *row = src == SQLITE_ROW;
    if (src == SQLITE_ROW || src == SQLITE_DONE)
        return STORE_OK;
    return sq_err(c, src, err, what);
}

static int64_t sq_changes(db_conn *c, void *h)
{
    (void)h;
    return sqlite3_changes64(SQ(c));
}

static int64_t sq_last_id(db_conn *c, void *h)
{
    (void)h;
    return sqlite3_last_insert_rowid(SQ(c));
}

static int64_t sq_col_i64(void *h, int col)
{
    return sqlite3_column_int64(h, col);
}

static const char *sq_col_text(void *h, int col, size_t *len)
{
    const char *t = (const char *)sqlite3_column_text(h, col);
    *len = t ? (size_t)sqlite3_column_bytes(h, col) : 0;
    return t;
}

static const struct db_token SQ_TOKENS[] = {
    {"ID", "INTEGER PRIMARY KEY AUTOINCREMENT"},
    {"I64", "INTEGER"},
    {"STRICT", " STRICT"},
    {"NOIDX", "+"},
    {"CLAIM_LOCK", ""},
    /* the rowid SQLite gives the new row anyway (jobs has no AUTOINCREMENT),
     * read from the b-tree's last entry */
    {"JOB_SEQ", "(SELECT coalesce(max(rowid), 0) + 1 FROM jobs)"},
    {"SEQ_TYPE", "INTEGER NOT NULL DEFAULT 0"},
    {"FOR_UPDATE", ""},   /* lock a row read before it is written */
    {"RETURNING_ID", ""}, /* RETURNING costs an ephemeral table: the rowid is known */
    /* a job write's cancel, read after it instead (store_job.c) */
    {"RETURNING_CANCEL", ""},
    /* membership in parameter 1, a JSON array of integers */
    {"IN_IDS_1", " IN (SELECT value FROM json_each(?1))"},
    {NULL, NULL},
};

/* ---- the jobs watch ------------------------------------------------------ */

/* A commit that queued a job writes a byte to PATH-jobs (after the commit:
 * a watcher woken by it then sees the row); the watcher's inotify watch on
 * that file turns readable. Our own commits wake our watcher too, which
 * costs a look; commits that queue nothing write nothing. The file holds
 * one byte. Best effort: a write that fails leaves the watcher's timer. */
static void jobs_file(const db *d, char *out, size_t len)
{
    snprintf(out, len, "%s-jobs", (const char *)d->drv_data);
}

/* The file is made by whichever process first needs it, which may be root
 * running `proxd create` or `proxd token` before the daemon (another user)
 * ever started: it gets the database file's read and write bits and, made
 * by root, the database's owner and group, as SQLite gives its -wal and
 * -shm files, so that whoever may write the database may tell and watch.
 * A file that root made before this rule (root's, 0600) is put right the
 * next time root opens it. */
static void jobs_file_fit(int fd, const char *db_path, const char *path, bool made)
{
    struct stat dbs, js;
    if (stat(db_path, &dbs) != 0 || fstat(fd, &js) != 0)
        return;
    mode_t want = dbs.st_mode & 0666;
    if (geteuid() == 0 && (js.st_uid != dbs.st_uid || js.st_gid != dbs.st_gid) &&
        fchown(fd, dbs.st_uid, dbs.st_gid) != 0)
        log_warn("store", "cannot give %s the database's owner: %s", path, strerror(errno));
    if ((made || geteuid() == 0) && (js.st_mode & 0777) != want && fchmod(fd, want) != 0)
        log_warn("store", "cannot give %s the database's mode %03o: %s", path, (unsigned)want,
                 strerror(errno));
}

static int jobs_file_open(const db *d)
{
    char path[4096];
    jobs_file(d, path, sizeof path);
    bool made = true;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == EEXIST) {
        made = false;
        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        log_debug("store", "cannot open %s: %s", path, strerror(errno));
        return fd;
    }
    if (made || geteuid() == 0)
        jobs_file_fit(fd, d->drv_data, path, made);
    return fd;
}

static void sq_notify(db_conn *c, bool committed)
{
    if (!committed)
        return;
    int fd = jobs_file_open(c->d);
    if (fd < 0)
        return;
    if (pwrite(fd, "j", 1, 0) != 1)
        log_debug("store", "cannot tell watchers of a job: %s", strerror(errno));
    close(fd);
}

static int sq_watch_open(db *d)
{
    char path[4096];
    jobs_file(d, path, sizeof path);
    int made = jobs_file_open(d);
    if (made < 0) { /* another user's file (made 0600 by an older proxd run as root, say) */
        log_warn("store", "cannot open %s to watch for jobs (looking every second instead): %s",
                 path, strerror(errno));
        return -1;
    }
    close(made);
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0)
        return -1;
    if (inotify_add_watch(fd, path, IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
        log_warn("store", "cannot watch %s for jobs (looking every second instead): %s", path,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* false when the file went (deleted, moved): the watch is made again */
static bool sq_watch_drain(db *d)
{
    char ev[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool ok = true;
    for (;;) {
        ssize_t n = read(d->watch_fd, ev, sizeof ev);
        if (n <= 0)
            return ok && (n == 0 || errno == EAGAIN || errno == EINTR);
        for (char *p = ev; p < ev + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
                ok = false;
            p += sizeof *e + e->len;
        }
    }
}

static void sq_watch_close(db *d)
{
    close(d->watch_fd);
}

const struct db_driver db_sqlite_driver = DB_DRIVER(sq, "sqlite", SQ_TOKENS, false);
