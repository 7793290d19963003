/* store_sqlite: the SQLite backend of store.h.
 *
 * Concurrency model (see docs/c-practices.md §2.10 for the measurements):
 *  - one connection per thread, created on first use and kept in a pthread
 *    key; all connections are also on a list so store_close closes them, and
 *    a thread that exits closes its own (key destructor);
 *  - WAL, so readers never block the writer;
 *  - every transaction that may write starts with BEGIN IMMEDIATE: it takes
 *    the write lock up front, where the busy timeout can wait for it. A
 *    deferred transaction that reads and then writes would fail at once with
 *    SQLITE_BUSY_SNAPSHOT when another connection committed in between, and
 *    no amount of waiting can fix a stale snapshot;
 *  - when SQLITE_BUSY still comes back (timeout, or the cases where SQLite
 *    does not call the busy handler), the whole transaction is rolled back
 *    and run again, a bounded number of times.
 * Single reads are one statement each and run without BEGIN: a statement is
 * its own consistent snapshot. */
#include "store/store_int.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SQ_BUSY_TIMEOUT_MS 5000
#define SQ_TX_ATTEMPTS 8
#define SQ_STMT_CACHE 96
#define SQ_CACHE_KIB "512" /* page cache per connection (see conn_open) */
/* Internal result: the transaction met SQLITE_BUSY/LOCKED; run it again. */
#define SQ_RETRY 100

struct sq_stmt {
    const char *sql; /* identity: the address of a static SQL string */
    sqlite3_stmt *st;
};

struct sq_store;

struct sq_conn {
    sqlite3 *db;
    struct sq_store *s;
    struct sq_conn *prev, *next; /* on s->conns */
    struct sq_stmt cache[SQ_STMT_CACHE];
    size_t ncache;
};

struct sq_store {
    struct store base; /* first: store.c sees only this */
    char *path;
    pid_t pid;          /* connections must not cross fork() */
    pthread_key_t key;  /* this thread's struct sq_conn */
    pthread_mutex_t mu; /* guards conns */
    struct sq_conn *conns;
};

enum tx_mode {
    TX_READ,  /* no BEGIN: one statement, its own snapshot */
    TX_WRITE, /* BEGIN IMMEDIATE */
};

typedef int (*tx_fn)(struct sq_conn *c, void *ctx, struct store_error *err);

static struct sq_store *SQ(store *s)
{
    return (struct sq_store *)s;
}

/* ---- errors --------------------------------------------------------------- */

/* Map a SQLite result code to a store error, with `what` naming the
 * operation. Busy and locked become SQ_RETRY (the caller retries the whole
 * transaction); unique keys become CONFLICT, foreign keys NOTFOUND. */
static int sq_err(struct sq_conn *c, int rc, struct store_error *err, const char *what)
{
    const char *msg = c ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        store_fail(err, STORE_E_DB, "%s: %s", what, msg);
        return SQ_RETRY;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return store_fail(err, STORE_E_CONFLICT, "%s: %s", what, msg);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return store_fail(err, STORE_E_NOTFOUND, "%s: %s", what, msg);
        return store_fail(err, STORE_E_INVALID, "%s: %s", what, msg);
    default:
        return store_fail(err, STORE_E_DB, "%s: %s (SQLite code %d)", what, msg, rc);
    }
}

/* ---- connections and statements ----------------------------------------- */

static void conn_close(struct sq_conn *c)
{
    for (size_t i = 0; i < c->ncache; i++)
        sqlite3_finalize(c->cache[i].st);
    sqlite3_close_v2(c->db);
    free(c);
}

static void conn_unlink(struct sq_store *s, struct sq_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

/* pthread key destructor: the thread exits, its connection goes. */
static void conn_tls_free(void *p)
{
    struct sq_conn *c = p;
    struct sq_store *s = c->s;
    pthread_mutex_lock(&s->mu);
    conn_unlink(s, c);
    pthread_mutex_unlock(&s->mu);
    conn_close(c);
}

static int conn_open(struct sq_store *s, struct sq_conn **out, struct store_error *err)
{
    int rc = STORE_OK;
    struct sq_conn *c = xcalloc(1, sizeof *c);
    c->s = s;
    /* NOMUTEX: a connection is only ever used by the thread that made it. */
    int src = sqlite3_open_v2(
        s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = store_fail(err, STORE_E_DB, "cannot open SQLite database %s: %s", s->path,
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
    if (src != SQLITE_OK) {
        rc = store_fail(err, STORE_E_DB, "setting up SQLite connection to %s: %s", s->path,
                        sqlite3_errmsg(c->db));
        goto out;
    }
out:
    if (rc) {
        sqlite3_close_v2(c->db);
        free(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

/* This thread's connection, opened on first use. */
static int conn_get(struct sq_store *s, struct sq_conn **out, struct store_error *err)
{
    if (getpid() != s->pid)
        return store_fail(err, STORE_E_INVALID,
                          "store handle used in a forked child; open a new one there");
    struct sq_conn *c = pthread_getspecific(s->key);
    if (!c) {
        int rc = conn_open(s, &c, err);
        if (rc)
            return rc;
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        pthread_mutex_unlock(&s->mu);
        if (pthread_setspecific(s->key, c) != 0) {
            conn_tls_free(c);
            return store_fail(err, STORE_E_DB, "pthread_setspecific failed");
        }
    }
    *out = c;
    return STORE_OK;
}

/* A prepared statement for `sql` (a static string: the cache is keyed by its
 * address), ready for binding. Release it with stmt_done. */
static int stmt(struct sq_conn *c, const char *sql, sqlite3_stmt **out, struct store_error *err)
{
    for (size_t i = 0; i < c->ncache; i++) {
        if (c->cache[i].sql == sql) {
            *out = c->cache[i].st;
            return STORE_OK;
        }
    }
    if (c->ncache == SQ_STMT_CACHE)
        return store_fail(err, STORE_E_DB, "statement cache full (raise SQ_STMT_CACHE)");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(c, rc, err, "preparing SQL");
    c->cache[c->ncache++] = (struct sq_stmt){sql, st};
    *out = st;
    return STORE_OK;
}

static void stmt_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* Run a statement without parameters or rows (BEGIN, COMMIT, ...). */
static int run(struct sq_conn *c, const char *sql, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, sql, &st, err);
    if (rc)
        return rc;
    int src = sqlite3_step(st);
    rc = (src == SQLITE_DONE || src == SQLITE_ROW) ? STORE_OK : sq_err(c, src, err, sql);
    stmt_done(st);
    return rc;
}

/* ---- binding and reading --------------------------------------------------- */

static int bind_str(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
}

/* A bounded record field: bind only its bytes (it may lack a NUL). */
#define BIND_FIELD(st, i, f) sqlite3_bind_text((st), (i), (f), (int)FIELD_LEN(f), SQLITE_TRANSIENT)

static int bind_json(sqlite3_stmt *st, int i, const json_t *v)
{
    char *t = store_json_dump(v);
    int rc = t ? sqlite3_bind_text(st, i, t, -1, free) : sqlite3_bind_null(st, i);
    return rc;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t n)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    store_copy(dst, n, t, t ? (size_t)sqlite3_column_bytes(st, i) : 0);
}
#define COL_FIELD(st, i, f) col_copy((st), (i), (f), sizeof(f))

static int bind_failed(struct sq_conn *c, int brc, struct store_error *err, const char *what)
{
    return store_fail(err, STORE_E_DB, "binding parameters of %s: %s", what,
                      sqlite3_errstr(brc) ? sqlite3_errstr(brc) : sqlite3_errmsg(c->db));
}

/* ---- transactions ------------------------------------------------------- */

static const char SQL_BEGIN_IMMEDIATE[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";

/* Run fn as one transaction on this thread's connection, again from the
 * start when SQLite reports busy (bounded, with a growing, jittered pause so
 * that colliding writers spread out). fn must be safe to run again: it may
 * not keep results of a failed attempt. */
static int tx(struct sq_store *s, enum tx_mode mode, tx_fn fn, void *ctx, struct store_error *err)
{
    struct sq_conn *c = NULL;
    int rc = conn_get(s, &c, err);
    if (rc)
        return rc;
    for (int attempt = 1;; attempt++) {
        rc = mode == TX_WRITE ? run(c, SQL_BEGIN_IMMEDIATE, err) : STORE_OK;
        if (rc == STORE_OK)
            rc = fn(c, ctx, err);
        if (rc == STORE_OK && mode == TX_WRITE)
            rc = run(c, SQL_COMMIT, err);
        if (rc != STORE_OK && !sqlite3_get_autocommit(c->db))
            run(c, SQL_ROLLBACK, NULL); /* keeps the first error's message */
        if (rc == STORE_OK && err && attempt > 1) {
            err->code = STORE_OK; /* forget the busy message of the failed try */
            err->message[0] = '\0';
        }
        if (rc != SQ_RETRY)
            return rc;
        if (attempt == SQ_TX_ATTEMPTS)
            break;
        sleep_ms((1 << attempt) + random() % 8);
    }
    char first[sizeof err->message] = "";
    if (err)
        snprintf(first, sizeof first, "%s", err->message);
    return store_fail(err, STORE_E_DB, "database busy after %d attempts: %s", SQ_TX_ATTEMPTS,
                      first);
}

/* One step that must produce a row (SQLITE_ROW) or none (`*found` false). */
static int step_row(struct sq_conn *c, sqlite3_stmt *st, bool *found, struct store_error *err,
                    const char *what)
{
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW || src == SQLITE_DONE) {
        *found = src == SQLITE_ROW;
        return STORE_OK;
    }
    return sq_err(c, src, err, what);
}

/* One step of a statement that returns no rows. */
static int step_done(struct sq_conn *c, sqlite3_stmt *st, struct store_error *err, const char *what)
{
    int src = sqlite3_step(st);
    return (src == SQLITE_DONE || src == SQLITE_ROW) ? STORE_OK : sq_err(c, src, err, what);
}

/* ---- schema and migrations ---------------------------------------------- */

/* Migration i (0-based) brings the schema from version i to i+1. Append new
 * steps; never edit a released one. Each runs inside the open transaction
 * (so no PRAGMA foreign_keys changes in here: a table rebuild needs its own
 * mechanism). DDL only: no values, hence plain SQL text. */
static const char *const MIGRATIONS[] = {
    /* 1: initial schema */
    "CREATE TABLE vms ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  vmid INTEGER NOT NULL,"
    "  os TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL DEFAULT '',"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  node TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('creating', 'enabled', 'failed', 'deleting', 'deleted', 'lost')),"
    "  power TEXT NOT NULL DEFAULT 'unknown',"
    "  cores INTEGER NOT NULL DEFAULT 0,"
    "  memory_mb INTEGER NOT NULL DEFAULT 0,"
    "  disk_gb INTEGER NOT NULL DEFAULT 0,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '',"
    "  pending TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX vms_vmid ON vms (vmid);"
    /* At most one live record per VMID; gone records stay for audit. */
    "CREATE UNIQUE INDEX vms_live_vmid ON vms (vmid)"
    "  WHERE state NOT IN ('deleted', 'failed', 'lost');"
    "CREATE INDEX vms_owner ON vms (owner, id);"
    ""
    "CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),"
    "  vmid INTEGER NOT NULL DEFAULT 0," /* 0: not tied to a VM */
    "  owner TEXT NOT NULL DEFAULT '',"
    "  step TEXT NOT NULL DEFAULT '',"
    "  node TEXT NOT NULL DEFAULT '',"
    "  upid TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  request TEXT,"
    "  attempts TEXT,"
    "  error TEXT NOT NULL DEFAULT '',"
    "  lease_owner TEXT NOT NULL DEFAULT '',"
    "  lease_until INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  finished_at INTEGER NOT NULL DEFAULT 0"
    ") STRICT;"
    /* Partial indexes over the unfinished jobs, which claim scans. */
    "CREATE INDEX jobs_active ON jobs (created_at) WHERE state IN ('queued', 'running');"
    "CREATE INDEX jobs_vmid_active ON jobs (vmid, created_at)"
    "  WHERE state IN ('queued', 'running');"
    ""
    "CREATE TABLE job_events ("
    "  job TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  step TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  message TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job, seq)"
    ") STRICT;"
    ""
    /* INTEGER PRIMARY KEY: the rowid, so range scans walk the b-tree. */
    "CREATE TABLE vmid_alloc ("
    "  vmid INTEGER PRIMARY KEY,"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'used', 'foreign', 'quarantine')),"
    "  job TEXT NOT NULL DEFAULT '',"
    "  until INTEGER NOT NULL DEFAULT 0," /* quarantine end, unix ms */
    "  updated_at INTEGER NOT NULL"
    ") STRICT;"
    ""
    "CREATE TABLE capacity ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  disk INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX capacity_node ON capacity (node);"
    ""
    "CREATE TABLE idem ("
    "  owner TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  answer TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (owner, key)"
    ") STRICT;",
    /* 2: API tokens (keyed hashes only) and small shared settings */
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL,"
    "  role TEXT NOT NULL CHECK (role IN ('admin', 'user')),"
    "  hash TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ") STRICT;"
    "CREATE TABLE kv ("
    "  name TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX jobs_kind_state ON jobs (kind, state);",
    /* 3: a creation's reservation outlives it ("settled") until an inventory
     * refresh that began afterwards shows its VM */
    "ALTER TABLE capacity ADD COLUMN settled_at INTEGER;",
    /* 4: every filter of a VM listing has an index (owner has had one
     * from the start); the rowid ends each, so they walk in id order. */
    "CREATE INDEX vms_node ON vms (node);"
    "CREATE INDEX vms_os ON vms (os);"
    "CREATE INDEX vms_state ON vms (state);",
    /* 5: clone slots held per node, shared by every proxd on the database */
    "CREATE TABLE clone_slots ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  taken_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX clone_slots_node ON clone_slots (node);",
    /* 6: half-made VMs of creations, left for the reconciler to remove */
    "CREATE TABLE leftovers ("
    "  vmid INTEGER NOT NULL,"
    "  node TEXT NOT NULL,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (vmid, node)"
    ") STRICT;",
};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

static const char SQL_VERSION_TABLE[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT";
static const char SQL_VERSION_GET[] = "SELECT coalesce(max(version), 0) FROM schema_version";
static const char SQL_VERSION_ADD[] = "INSERT INTO schema_version (version, applied_at) "
                                      "VALUES (?1, ?2)";

/* Inside BEGIN IMMEDIATE: a second process opening the same file waits for
 * the write lock, then finds the schema current and applies nothing. */
static int migrate_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    (void)ctx;
    sqlite3_stmt *st = NULL;
    int rc = run(c, SQL_VERSION_TABLE, err);
    if (rc)
        goto out;
    rc = stmt(c, SQL_VERSION_GET, &st, err);
    if (rc)
        goto out;
    bool found = false;
    rc = step_row(c, st, &found, err, "reading schema_version");
    if (rc)
        goto out;
    int version = sqlite3_column_int(st, 0);
    stmt_done(st);
    st = NULL;
    if (version > NMIGRATIONS) {
        rc = store_fail(err, STORE_E_INVALID,
                        "database schema version %d is newer than this proxd knows (%d)", version,
                        NMIGRATIONS);
        goto out;
    }
    for (int v = version; v < NMIGRATIONS; v++) {
        int src = sqlite3_exec(c->db, MIGRATIONS[v], NULL, NULL, NULL);
        if (src != SQLITE_OK) {
            char what[64];
            snprintf(what, sizeof what, "schema migration %d", v + 1);
            rc = sq_err(c, src, err, what);
            goto out;
        }
        rc = stmt(c, SQL_VERSION_ADD, &st, err);
        if (rc)
            goto out;
        sqlite3_bind_int(st, 1, v + 1);
        sqlite3_bind_int64(st, 2, wall_ms());
        rc = step_done(c, st, err, "recording schema version");
        stmt_done(st);
        st = NULL;
        if (rc)
            goto out;
    }
out:
    stmt_done(st);
    return rc;
}

static const char SQL_WAL[] = "PRAGMA journal_mode=WAL";

/* journal_mode=WAL is persistent in the file; set it once at open. */
static int wal_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    (void)ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_WAL, &st, err);
    if (rc)
        return rc;
    bool found = false;
    rc = step_row(c, st, &found, err, "setting journal_mode=WAL");
    if (rc == STORE_OK) {
        const char *mode = found ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (!mode || strcmp(mode, "wal") != 0)
            rc = store_fail(err, STORE_E_DB,
                            "SQLite refused WAL mode for %s (got %s); WAL needs a local "
                            "filesystem",
                            c->s->path, mode ? mode : "nothing");
    }
    stmt_done(st);
    return rc;
}

/* ---- VM records ------------------------------------------------------------ */

#define VM_COLS                                                                                    \
    "id, vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, job, error, "       \
    "pending, created_at, updated_at"
#define GONE_STATES "('deleted', 'failed', 'lost')"

/* Every field is written (no memset of the whole record: a page reads a
 * hundred of them); strings are NUL-terminated, the bytes after the NUL
 * are not cleared. */
static int row_to_vm(sqlite3_stmt *st, struct vm_rec *r, struct store_error *err)
{
    r->pending = NULL;
    r->id = sqlite3_column_int64(st, 0);
    r->vmid = sqlite3_column_int(st, 1);
    COL_FIELD(st, 2, r->os);
    COL_FIELD(st, 3, r->name);
    COL_FIELD(st, 4, r->owner);
    COL_FIELD(st, 5, r->node);
    const char *state = (const char *)sqlite3_column_text(st, 6);
    int sv = vm_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in vms id %lld", state ? state : "",
                          (long long)r->id);
    r->state = (enum vm_state)sv;
    COL_FIELD(st, 7, r->power);
    r->cores = sqlite3_column_int(st, 8);
    r->memory_mb = sqlite3_column_int64(st, 9);
    r->disk_gb = sqlite3_column_int64(st, 10);
    COL_FIELD(st, 11, r->job);
    COL_FIELD(st, 12, r->error);
    r->created_at = sqlite3_column_int64(st, 14);
    r->updated_at = sqlite3_column_int64(st, 15);
    return store_json_load((const char *)sqlite3_column_text(st, 13), &r->pending, "vms.pending",
                           err);
}

/* Bind the mutable fields to ?2..?13 (shared by insert and update). */
static int bind_vm_fields(sqlite3_stmt *st, const struct vm_rec *r, int64_t now)
{
    int b = BIND_FIELD(st, 2, r->os);
    b = b ? b : BIND_FIELD(st, 3, r->name);
    b = b ? b : BIND_FIELD(st, 4, r->owner);
    b = b ? b : BIND_FIELD(st, 5, r->node);
    b = b ? b : bind_str(st, 6, vm_state_name(r->state));
    b = b ? b : BIND_FIELD(st, 7, r->power);
    b = b ? b : sqlite3_bind_int(st, 8, r->cores);
    b = b ? b : sqlite3_bind_int64(st, 9, r->memory_mb);
    b = b ? b : sqlite3_bind_int64(st, 10, r->disk_gb);
    b = b ? b : BIND_FIELD(st, 11, r->job);
    b = b ? b : BIND_FIELD(st, 12, r->error);
    b = b ? b : bind_json(st, 13, r->pending);
    b = b ? b : sqlite3_bind_int64(st, 14, now);
    return b;
}

static const char SQL_VM_INSERT[] =
    "INSERT INTO vms (vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, "
    "job, error, pending, updated_at, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

static int vm_insert_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct vm_rec *r = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int64_t created = r->created_at ? r->created_at : now;
    int rc = stmt(c, SQL_VM_INSERT, &st, err);
    if (rc)
        goto out;
    int b = sqlite3_bind_int(st, 1, r->vmid);
    b = b ? b : bind_vm_fields(st, r, now);
    b = b ? b : sqlite3_bind_int64(st, 15, created);
    if (b) {
        rc = bind_failed(c, b, err, "VM insert");
        goto out;
    }
    rc = step_done(c, st, err, "inserting VM record");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d already has a live VM record", r->vmid);
    if (rc)
        goto out;
    r->id = sqlite3_last_insert_rowid(c->db);
    r->created_at = created;
    r->updated_at = now;
out:
    stmt_done(st);
    return rc;
}

static int sq_vm_insert(store *s, struct vm_rec *r, struct store_error *err)
{
    return tx(SQ(s), TX_WRITE, vm_insert_fn, r, err);
}

/* vmid and created_at are not mutable. */
static const char SQL_VM_UPDATE[] =
    "UPDATE vms SET os = ?2, name = ?3, owner = ?4, node = ?5, state = ?6, power = ?7, "
    "cores = ?8, memory_mb = ?9, disk_gb = ?10, job = ?11, error = ?12, pending = ?13, "
    "updated_at = ?14 WHERE id = ?1";

static int vm_update_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    const struct vm_rec *r = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_VM_UPDATE, &st, err);
    if (rc)
        goto out;
    int b = sqlite3_bind_int64(st, 1, r->id);
    b = b ? b : bind_vm_fields(st, r, wall_ms());
    if (b) {
        rc = bind_failed(c, b, err, "VM update");
        goto out;
    }
    rc = step_done(c, st, err, "updating VM record");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d already has another live VM record",
                        r->vmid);
    else if (rc == STORE_OK && sqlite3_changes(c->db) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)r->id);
out:
    stmt_done(st);
    return rc;
}

static int sq_vm_update(store *s, const struct vm_rec *r, struct store_error *err)
{
    return tx(SQ(s), TX_WRITE, vm_update_fn, (void *)r, err);
}

struct vm_get_ctx {
    const char *sql;
    int64_t key;
    struct vm_rec *out;
};

static const char SQL_VM_GET[] =
    "SELECT " VM_COLS " FROM vms WHERE vmid = ?1 AND state NOT IN " GONE_STATES;
static const char SQL_VM_GET_ID[] = "SELECT " VM_COLS " FROM vms WHERE id = ?1";

static int vm_get_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct vm_get_ctx *g = ctx;
    sqlite3_stmt *st = NULL;
    vm_rec_release(g->out);
    int rc = stmt(c, g->sql, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, g->key);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading VM record");
    if (rc)
        goto out;
    if (!found) {
        rc = store_fail(err, STORE_E_NOTFOUND,
                        g->sql == SQL_VM_GET ? "no live VM record for VMID %lld"
                                             : "no VM record with id %lld",
                        (long long)g->key);
        goto out;
    }
    rc = row_to_vm(st, g->out, err);
out:
    stmt_done(st);
    return rc;
}

static int sq_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err)
{
    struct vm_get_ctx g = {SQL_VM_GET, vmid, out};
    int rc = tx(SQ(s), TX_READ, vm_get_fn, &g, err);
    if (rc)
        vm_rec_release(out);
    return rc;
}

static int sq_vm_get_id(store *s, int64_t id, struct vm_rec *out, struct store_error *err)
{
    struct vm_get_ctx g = {SQL_VM_GET_ID, id, out};
    int rc = tx(SQ(s), TX_READ, vm_get_fn, &g, err);
    if (rc)
        vm_rec_release(out);
    return rc;
}

/* Listing. The statement is made for the filters given (one per
 * combination of owner, node, os and the state condition), so that no row
 * pays for conditions that were not asked for, and one filter drives the
 * walk: a plain equality that SQLite serves from its index, which ends
 * with the rowid, so the walk is in id order and starts at the cursor. A
 * page then reads about `limit` rows whatever the table's size, unless the
 * other filters (written "+col = ?": a unary + keeps SQLite from choosing
 * their index, which without statistics it might) drop most of them. The
 * driver is the most selective filter given, in this order: owner (a
 * tenant's VMs), node, state, os. Without filters the rowid range is the
 * walk. The live-state condition is spelled as inequalities: "NOT IN
 * (list)" makes SQLite probe a temporary index for every row. Parameters
 * keep their numbers in every variant: ?1 after_id, ?2 owner, ?3 node, ?4
 * os, ?5 state, ?7 limit (?6 is not used). */
#define VM_LIST_OWNER 1
#define VM_LIST_NODE 2
#define VM_LIST_OS 4
enum { VM_LIST_LIVE, VM_LIST_STATE, VM_LIST_ALL }; /* the state condition */
#define VM_LIST_VARIANTS (8 * 3)
#define VM_LIST_SQL_MAX 512

static char vm_list_sql_text[VM_LIST_VARIANTS][VM_LIST_SQL_MAX];
static pthread_once_t vm_list_once = PTHREAD_ONCE_INIT;

static void vm_list_sql_init(void)
{
    for (int i = 0; i < VM_LIST_VARIANTS; i++) {
        int mask = i % 8, cond = i / 8;
        /* the driver: the first of owner, node, state, os that is given */
        bool by_owner = mask & VM_LIST_OWNER;
        bool by_node = !by_owner && (mask & VM_LIST_NODE);
        bool by_state = !by_owner && !by_node && cond == VM_LIST_STATE;
        bool by_os = !by_owner && !by_node && !by_state;
        snprintf(vm_list_sql_text[i], VM_LIST_SQL_MAX,
                 "SELECT " VM_COLS " FROM vms WHERE id > ?1%s%s%s%s ORDER BY id LIMIT ?7",
                 !(mask & VM_LIST_OWNER) ? ""
                 : by_owner              ? " AND owner = ?2"
                                         : " AND +owner = ?2",
                 !(mask & VM_LIST_NODE) ? ""
                 : by_node              ? " AND node = ?3"
                                        : " AND +node = ?3",
                 !(mask & VM_LIST_OS) ? ""
                 : by_os              ? " AND os = ?4"
                                      : " AND +os = ?4",
                 cond == VM_LIST_STATE  ? (by_state ? " AND state = ?5" : " AND +state = ?5")
                 : cond == VM_LIST_LIVE ? " AND state <> 'deleted' AND state <> 'failed'"
                                          " AND state <> 'lost'"
                                        : "");
    }
}

/* The statement text for f: a static string, as the statement cache wants. */
static const char *vm_list_sql(const struct vm_filter *f)
{
    pthread_once(&vm_list_once, vm_list_sql_init);
    int mask =
        (f->owner ? VM_LIST_OWNER : 0) | (f->node ? VM_LIST_NODE : 0) | (f->os ? VM_LIST_OS : 0);
    int cond = f->state >= 0 ? VM_LIST_STATE : f->include_gone ? VM_LIST_ALL : VM_LIST_LIVE;
    return vm_list_sql_text[cond * 8 + mask];
}

struct vm_scan_ctx {
    const struct vm_filter *f;
    store_vm_fn fn;
    void *ctx;
    bool started;
};

static int vm_scan_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct vm_scan_ctx *l = ctx;
    const struct vm_filter *f = l->f;
    sqlite3_stmt *st = NULL;
    struct vm_rec r = {0};
    int limit = f->limit == 0 ? STORE_LIST_DEFAULT : f->limit;
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    if (l->started)
        l->fn(l->ctx, NULL); /* a retried attempt starts over */
    l->started = true;
    int rc = stmt(c, vm_list_sql(f), &st, err);
    if (rc)
        goto out;
    int b = sqlite3_bind_int64(st, 1, f->after_id);
    b = b ? b : bind_str(st, 2, f->owner);
    b = b ? b : bind_str(st, 3, f->node);
    b = b ? b : bind_str(st, 4, f->os);
    b = b ? b : bind_str(st, 5, f->state >= 0 ? vm_state_name((enum vm_state)f->state) : NULL);
    b = b ? b : sqlite3_bind_int(st, 7, limit);
    if (b) {
        rc = bind_failed(c, b, err, "VM list");
        goto out;
    }
    for (;;) {
        bool found = false;
        rc = step_row(c, st, &found, err, "listing VM records");
        if (rc || !found)
            break;
        rc = row_to_vm(st, &r, err);
        if (rc)
            break;
        int stop = l->fn(l->ctx, &r);
        vm_rec_release(&r);
        if (stop)
            break;
    }
out:
    vm_rec_release(&r);
    stmt_done(st);
    return rc;
}

static int sq_vm_scan(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                      struct store_error *err)
{
    struct vm_scan_ctx l = {f, fn, ctx, false};
    return tx(SQ(s), TX_READ, vm_scan_fn, &l, err);
}

/* ---- jobs ----------------------------------------------------------------- */

#define JOB_COLS                                                                                   \
    "id, kind, state, vmid, owner, step, node, upid, progress, request, attempts, error, "         \
    "lease_owner, lease_until, created_at, updated_at, finished_at"
#define ACTIVE_STATES "('queued', 'running')"

static int row_to_job(sqlite3_stmt *st, struct job_rec *j, struct store_error *err)
{
    memset(j, 0, sizeof *j);
    COL_FIELD(st, 0, j->id);
    COL_FIELD(st, 1, j->kind);
    const char *state = (const char *)sqlite3_column_text(st, 2);
    int sv = job_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in job %s", state ? state : "",
                          j->id);
    j->state = (enum job_state)sv;
    j->vmid = sqlite3_column_int(st, 3);
    COL_FIELD(st, 4, j->owner);
    COL_FIELD(st, 5, j->step);
    COL_FIELD(st, 6, j->node);
    COL_FIELD(st, 7, j->upid);
    j->progress = sqlite3_column_int(st, 8);
    COL_FIELD(st, 11, j->error);
    COL_FIELD(st, 12, j->lease_owner);
    j->lease_until = sqlite3_column_int64(st, 13);
    j->created_at = sqlite3_column_int64(st, 14);
    j->updated_at = sqlite3_column_int64(st, 15);
    j->finished_at = sqlite3_column_int64(st, 16);
    int rc =
        store_json_load((const char *)sqlite3_column_text(st, 9), &j->request, "jobs.request", err);
    if (rc == STORE_OK)
        rc = store_json_load((const char *)sqlite3_column_text(st, 10), &j->attempts,
                             "jobs.attempts", err);
    return rc;
}

/* A finished job keeps the time it finished; a terminal state without one
 * gets `now`. */
static int64_t job_finished_at(const struct job_rec *j, int64_t now)
{
    if (j->state != JOB_DONE && j->state != JOB_FAILED)
        return 0;
    return j->finished_at ? j->finished_at : now;
}

static const char SQL_JOB_INSERT[] = "INSERT INTO jobs (" JOB_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, "
                                     "?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

static int job_insert_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct job_rec *j = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int64_t created = j->created_at ? j->created_at : now;
    int rc = stmt(c, SQL_JOB_INSERT, &st, err);
    if (rc)
        goto out;
    int b = BIND_FIELD(st, 1, j->id);
    b = b ? b : BIND_FIELD(st, 2, j->kind);
    b = b ? b : bind_str(st, 3, job_state_name(j->state));
    b = b ? b : sqlite3_bind_int(st, 4, j->vmid);
    b = b ? b : BIND_FIELD(st, 5, j->owner);
    b = b ? b : BIND_FIELD(st, 6, j->step);
    b = b ? b : BIND_FIELD(st, 7, j->node);
    b = b ? b : BIND_FIELD(st, 8, j->upid);
    b = b ? b : sqlite3_bind_int(st, 9, j->progress);
    b = b ? b : bind_json(st, 10, j->request);
    b = b ? b : bind_json(st, 11, j->attempts);
    b = b ? b : BIND_FIELD(st, 12, j->error);
    b = b ? b : BIND_FIELD(st, 13, j->lease_owner);
    b = b ? b : sqlite3_bind_int64(st, 14, j->lease_until);
    b = b ? b : sqlite3_bind_int64(st, 15, created);
    b = b ? b : sqlite3_bind_int64(st, 16, now);
    b = b ? b : sqlite3_bind_int64(st, 17, job_finished_at(j, now));
    if (b) {
        rc = bind_failed(c, b, err, "job insert");
        goto out;
    }
    rc = step_done(c, st, err, "inserting job");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "job %.*s exists already", (int)FIELD_LEN(j->id),
                        j->id);
    if (rc)
        goto out;
    j->created_at = created;
    j->updated_at = now;
    j->finished_at = job_finished_at(j, now);
out:
    stmt_done(st);
    return rc;
}

static int sq_job_insert(store *s, struct job_rec *j, struct store_error *err)
{
    return tx(SQ(s), TX_WRITE, job_insert_fn, j, err);
}

static const char SQL_JOB_LEASE_OF[] = "SELECT state, lease_owner FROM jobs WHERE id = ?1";

/* After an UPDATE matched no row: say whether the job is missing or held by
 * someone else (or no longer running). */
static int job_why_not(struct sq_conn *c, const char *id, size_t idlen, const char *owner,
                       struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_JOB_LEASE_OF, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_text(st, 1, id, (int)idlen, SQLITE_TRANSIENT);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading job lease");
    if (rc)
        goto out;
    if (!found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %.*s", (int)idlen, id);
        goto out;
    }
    const char *state = (const char *)sqlite3_column_text(st, 0);
    const char *holder = (const char *)sqlite3_column_text(st, 1);
    if (holder && strcmp(holder, owner) != 0)
        rc = store_fail(err, STORE_E_CONFLICT, "job %.*s is leased by '%s', not '%s'", (int)idlen,
                        id, holder, owner);
    else
        rc = store_fail(err, STORE_E_CONFLICT, "job %.*s is %s, not running", (int)idlen, id,
                        state ? state : "?");
out:
    stmt_done(st);
    return rc;
}

/* kind, owner, request and created_at are the job's identity and input:
 * not rewritten. With a lease owner in the record, the update applies only
 * while that owner still holds the lease (a runner whose lease expired and
 * was taken over must not overwrite the new runner's progress). */
static const char SQL_JOB_UPDATE[] =
    "UPDATE jobs SET state = ?2, vmid = ?3, step = ?4, node = ?5, upid = ?6, progress = ?7, "
    "attempts = ?8, error = ?9, updated_at = ?10, finished_at = ?11 "
    "WHERE id = ?1 AND (?12 = '' OR lease_owner = ?12)";

static int job_update_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    const struct job_rec *j = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = stmt(c, SQL_JOB_UPDATE, &st, err);
    if (rc)
        goto out;
    int b = BIND_FIELD(st, 1, j->id);
    b = b ? b : bind_str(st, 2, job_state_name(j->state));
    b = b ? b : sqlite3_bind_int(st, 3, j->vmid);
    b = b ? b : BIND_FIELD(st, 4, j->step);
    b = b ? b : BIND_FIELD(st, 5, j->node);
    b = b ? b : BIND_FIELD(st, 6, j->upid);
    b = b ? b : sqlite3_bind_int(st, 7, j->progress);
    b = b ? b : bind_json(st, 8, j->attempts);
    b = b ? b : BIND_FIELD(st, 9, j->error);
    b = b ? b : sqlite3_bind_int64(st, 10, now);
    b = b ? b : sqlite3_bind_int64(st, 11, job_finished_at(j, now));
    b = b ? b : BIND_FIELD(st, 12, j->lease_owner);
    if (b) {
        rc = bind_failed(c, b, err, "job update");
        goto out;
    }
    rc = step_done(c, st, err, "updating job");
    if (rc == STORE_OK && sqlite3_changes(c->db) == 0) {
        char owner[sizeof j->lease_owner];
        store_copy(owner, sizeof owner, j->lease_owner, FIELD_LEN(j->lease_owner));
        rc = job_why_not(c, j->id, FIELD_LEN(j->id), owner, err);
    }
out:
    stmt_done(st);
    return rc;
}

static int sq_job_update(store *s, const struct job_rec *j, struct store_error *err)
{
    return tx(SQ(s), TX_WRITE, job_update_fn, (void *)j, err);
}

struct checkpoint_ctx {
    const struct job_rec *j;
    const char *event;
};

static int event_add_fn(struct sq_conn *c, void *ctx, struct store_error *err);
struct event_add_ctx {
    const char *job, *step, *message;
    int progress;
};

static int checkpoint_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct checkpoint_ctx *k = ctx;
    int rc = job_update_fn(c, (void *)k->j, err);
    if (rc || !k->event)
        return rc;
    char id[sizeof k->j->id + 1], step[sizeof k->j->step + 1];
    store_copy(id, sizeof id, k->j->id, FIELD_LEN(k->j->id));
    store_copy(step, sizeof step, k->j->step, FIELD_LEN(k->j->step));
    struct event_add_ctx e = {id, step, k->event, k->j->progress};
    return event_add_fn(c, &e, err);
}

static int sq_job_checkpoint(store *s, const struct job_rec *j, const char *event,
                             struct store_error *err)
{
    struct checkpoint_ctx k = {j, event};
    return tx(SQ(s), TX_WRITE, checkpoint_fn, &k, err);
}

static const char SQL_JOB_GET[] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1";

struct job_get_ctx {
    const char *id;
    struct job_rec *out;
};

static int job_get_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct job_get_ctx *g = ctx;
    sqlite3_stmt *st = NULL;
    job_rec_release(g->out);
    int rc = stmt(c, SQL_JOB_GET, &st, err);
    if (rc)
        goto out;
    bind_str(st, 1, g->id);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading job");
    if (rc)
        goto out;
    if (!found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", g->id);
        goto out;
    }
    rc = row_to_job(st, g->out, err);
out:
    stmt_done(st);
    return rc;
}

static int sq_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err)
{
    struct job_get_ctx g = {id, out};
    int rc = tx(SQ(s), TX_READ, job_get_fn, &g, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

/* The oldest claimable job: queued, or running with an expired lease. A job
 * with a VMID is skipped while another unfinished job of that VMID holds a
 * live lease or is older: a VM's jobs run one at a time, in creation order.
 * Ties on created_at fall back to rowid, i.e. insertion order.
 * `state IN ACTIVE_STATES` is spelled out so the planner can use the
 * partial indexes. */
static const char SQL_JOB_PICK[] =
    "SELECT j.id FROM jobs j"
    " WHERE j.state IN " ACTIVE_STATES " AND (j.state = 'queued' OR j.lease_until < ?1)"
    " AND (j.vmid = 0 OR NOT EXISTS (SELECT 1 FROM jobs k"
    "   WHERE k.vmid = j.vmid AND k.state IN " ACTIVE_STATES " AND k.rowid <> j.rowid"
    "   AND ((k.state = 'running' AND k.lease_until >= ?1)"
    "        OR k.created_at < j.created_at"
    "        OR (k.created_at = j.created_at AND k.rowid < j.rowid))))"
    " ORDER BY j.created_at, j.rowid LIMIT 1";
static const char SQL_JOB_TAKE[] =
    "UPDATE jobs SET state = 'running', lease_owner = ?2, lease_until = ?3, updated_at = ?4"
    " WHERE id = ?1 RETURNING " JOB_COLS;

struct job_claim_ctx {
    const char *owner;
    int64_t lease_ms;
    struct job_rec *out;
};

static int job_claim_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct job_claim_ctx *cl = ctx;
    sqlite3_stmt *pick = NULL, *take = NULL;
    char id[sizeof cl->out->id];
    int64_t now = wall_ms();
    job_rec_release(cl->out);
    int rc = stmt(c, SQL_JOB_PICK, &pick, err);
    if (rc)
        goto out;
    sqlite3_bind_int64(pick, 1, now);
    bool found = false;
    rc = step_row(c, pick, &found, err, "picking a job");
    if (rc)
        goto out;
    if (!found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no claimable job");
        goto out;
    }
    COL_FIELD(pick, 0, id);
    stmt_done(pick);
    pick = NULL;

    rc = stmt(c, SQL_JOB_TAKE, &take, err);
    if (rc)
        goto out;
    int b = bind_str(take, 1, id);
    b = b ? b : bind_str(take, 2, cl->owner);
    b = b ? b : sqlite3_bind_int64(take, 3, now + cl->lease_ms);
    b = b ? b : sqlite3_bind_int64(take, 4, now);
    if (b) {
        rc = bind_failed(c, b, err, "job claim");
        goto out;
    }
    rc = step_row(c, take, &found, err, "claiming a job");
    if (rc)
        goto out;
    if (!found) { /* cannot happen inside BEGIN IMMEDIATE */
        rc = store_fail(err, STORE_E_DB, "job %s vanished while claiming it", id);
        goto out;
    }
    rc = row_to_job(take, cl->out, err);
out:
    stmt_done(pick);
    stmt_done(take);
    return rc;
}

static int sq_job_claim(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                        struct store_error *err)
{
    struct job_claim_ctx cl = {owner, lease_ms, out};
    int rc = tx(SQ(s), TX_WRITE, job_claim_fn, &cl, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

static const char SQL_JOB_RENEW[] = "UPDATE jobs SET lease_until = ?3, updated_at = ?4"
                                    " WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'";

struct job_renew_ctx {
    const char *id, *owner;
    int64_t lease_ms;
};

static int job_renew_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct job_renew_ctx *r = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = stmt(c, SQL_JOB_RENEW, &st, err);
    if (rc)
        goto out;
    int b = bind_str(st, 1, r->id);
    b = b ? b : bind_str(st, 2, r->owner);
    b = b ? b : sqlite3_bind_int64(st, 3, now + r->lease_ms);
    b = b ? b : sqlite3_bind_int64(st, 4, now);
    if (b) {
        rc = bind_failed(c, b, err, "job renew");
        goto out;
    }
    rc = step_done(c, st, err, "renewing job lease");
    if (rc == STORE_OK && sqlite3_changes(c->db) == 0)
        rc = job_why_not(c, r->id, strlen(r->id), r->owner, err);
out:
    stmt_done(st);
    return rc;
}

static int sq_job_renew(store *s, const char *id, const char *owner, int64_t lease_ms,
                        struct store_error *err)
{
    struct job_renew_ctx r = {id, owner, lease_ms};
    return tx(SQ(s), TX_WRITE, job_renew_fn, &r, err);
}

/* ---- leases of dead runners ------------------------------------------- */

static const char SQL_JOB_OWNERS[] =
    "SELECT DISTINCT lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL"
    " AND lease_owner <> '' LIMIT ?1";

struct owners_ctx {
    char (*out)[64];
    size_t max, n;
};

static int job_owners_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct owners_ctx *o = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_JOB_OWNERS, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)o->max);
    o->n = 0;
    for (;;) {
        bool found = false;
        rc = step_row(c, st, &found, err, "listing lease owners");
        if (rc || !found)
            break;
        const char *v = (const char *)sqlite3_column_text(st, 0);
        snprintf(o->out[o->n++], 64, "%s", v ? v : "");
    }
out:
    stmt_done(st);
    return rc;
}

static int sq_job_lease_owners(store *s, char (*owners)[64], size_t max, size_t *n,
                               struct store_error *err)
{
    struct owners_ctx o = {owners, max, 0};
    int rc = tx(SQ(s), TX_READ, job_owners_fn, &o, err);
    *n = rc ? 0 : o.n;
    return rc;
}

static const char SQL_JOB_EXPIRE[] =
    "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND lease_owner = ?1";

static int job_expire_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_JOB_EXPIRE, &st, err);
    if (rc)
        goto out;
    int b = bind_str(st, 1, ctx);
    if (b) {
        rc = bind_failed(c, b, err, "job expire");
        goto out;
    }
    rc = step_done(c, st, err, "expiring leases");
out:
    stmt_done(st);
    return rc;
}

static int sq_job_expire_owner(store *s, const char *owner, struct store_error *err)
{
    return tx(SQ(s), TX_WRITE, job_expire_fn, (void *)owner, err);
}

/* A scalar query: ?1.. bound by the caller through `bind`, one int64 back. */
static int scalar_i64(struct sq_conn *c, sqlite3_stmt *st, int col, int64_t *out,
                      struct store_error *err, const char *what)
{
    bool found = false;
    int rc = step_row(c, st, &found, err, what);
    if (rc == STORE_OK)
        *out = found ? sqlite3_column_int64(st, col) : 0;
    return rc;
}

static const char SQL_JOB_COUNT[] =
    "SELECT count(*) FROM jobs WHERE state IN " ACTIVE_STATES " AND (?1 IS NULL OR kind = ?1)";

struct count_ctx {
    const char *kind;
    int *n;
};

static int job_count_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct count_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_JOB_COUNT, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, k->kind);
    int64_t n = 0;
    rc = scalar_i64(c, st, 0, &n, err, "counting jobs");
    *k->n = (int)n;
    stmt_done(st);
    return rc;
}

static int sq_job_count_active(store *s, const char *kind, int *n, struct store_error *err)
{
    struct count_ctx k = {kind, n};
    return tx(SQ(s), TX_READ, job_count_fn, &k, err);
}

/* seq is per job, 1, 2, ...: computed in the same statement, and the
 * statement runs under BEGIN IMMEDIATE, so two writers cannot both take
 * the same next number. */
static const char SQL_EVENT_ADD[] =
    "INSERT INTO job_events (job, seq, ts, step, progress, message)"
    " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM job_events WHERE job = ?1";

static int event_add_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct event_add_ctx *e = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_EVENT_ADD, &st, err);
    if (rc)
        goto out;
    int b = bind_str(st, 1, e->job);
    b = b ? b : sqlite3_bind_int64(st, 2, wall_ms());
    b = b ? b : bind_str(st, 3, e->step);
    b = b ? b : sqlite3_bind_int(st, 4, e->progress);
    b = b ? b : bind_str(st, 5, e->message);
    if (b) {
        rc = bind_failed(c, b, err, "job event");
        goto out;
    }
    rc = step_done(c, st, err, "adding job event");
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", e->job);
out:
    stmt_done(st);
    return rc;
}

static int sq_job_event_add(store *s, const char *job, const char *step, int progress,
                            const char *message, struct store_error *err)
{
    struct event_add_ctx e = {job, step, message, progress};
    return tx(SQ(s), TX_WRITE, event_add_fn, &e, err);
}

static const char SQL_EVENTS[] = "SELECT seq, ts, step, progress, message FROM job_events"
                                 " WHERE job = ?1 AND seq > ?2 ORDER BY seq";

struct events_ctx {
    const char *job;
    int64_t after;
    struct job_event *v;
    size_t n;
};

static int events_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct events_ctx *e = ctx;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    FREE_AND_NULL(e->v);
    e->n = 0;
    int rc = stmt(c, SQL_EVENTS, &st, err);
    if (rc)
        goto out;
    bind_str(st, 1, e->job);
    sqlite3_bind_int64(st, 2, e->after);
    for (;;) {
        bool found = false;
        rc = step_row(c, st, &found, err, "reading job events");
        if (rc || !found)
            break;
        if (e->n == cap) {
            cap = cap ? cap * 2 : 16;
            e->v = xrealloc(e->v, cap * sizeof *e->v);
        }
        struct job_event *ev = &e->v[e->n++];
        ev->seq = sqlite3_column_int64(st, 0);
        ev->ts = sqlite3_column_int64(st, 1);
        COL_FIELD(st, 2, ev->step);
        ev->progress = sqlite3_column_int(st, 3);
        COL_FIELD(st, 4, ev->message);
    }
out:
    stmt_done(st);
    if (rc) {
        FREE_AND_NULL(e->v);
        e->n = 0;
    }
    return rc;
}

static int sq_job_events(store *s, const char *job, int64_t after, struct job_event **out,
                         size_t *n, struct store_error *err)
{
    struct events_ctx e = {job, after, NULL, 0};
    int rc = tx(SQ(s), TX_READ, events_fn, &e, err);
    if (rc == STORE_OK) {
        *out = e.v;
        *n = e.n;
    }
    return rc;
}

/* ---- VMID allocation -------------------------------------------------------- */

/* The allocated IDs of a range, ascending: every row except quarantines
 * that have run out (those count as free and are taken over in place). */
static const char SQL_VMID_ALLOCATED[] =
    "SELECT vmid FROM vmid_alloc WHERE vmid BETWEEN ?1 AND ?2"
    " AND NOT (state = 'quarantine' AND until <= ?3) ORDER BY vmid";
static const char SQL_VMID_TAKE[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
    " VALUES (?1, 'reserved', ?2, 0, ?3)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'reserved', job = excluded.job, until = 0,"
    "   updated_at = excluded.updated_at"
    " WHERE vmid_alloc.state = 'quarantine' AND vmid_alloc.until <= ?3";

struct reserve_ctx {
    const struct vmid_range *ranges;
    size_t nranges;
    const int *taken;
    size_t ntaken;
    const char *job;
    int *vmid;
};

static bool in_sorted(const int *a, size_t n, int v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v)
            lo = mid + 1;
        else if (a[mid] > v)
            hi = mid;
        else
            return true;
    }
    return false;
}

/* Merge-walk the range against its allocated IDs (one query, ascending):
 * the first ID that is neither allocated nor in `taken`, or 0. */
static int first_free(struct sq_conn *c, const struct reserve_ctx *r, const struct vmid_range *rg,
                      int64_t now, int *found_id, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int cand = rg->lo;
    *found_id = 0;
    int rc = stmt(c, SQL_VMID_ALLOCATED, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_int(st, 1, rg->lo);
    sqlite3_bind_int(st, 2, rg->hi);
    sqlite3_bind_int64(st, 3, now);
    for (;;) {
        bool row = false;
        rc = step_row(c, st, &row, err, "reading VMID allocations");
        if (rc)
            goto out;
        int next_used = row ? sqlite3_column_int(st, 0) : rg->hi + 1;
        for (; cand < next_used; cand++) {
            if (!in_sorted(r->taken, r->ntaken, cand)) {
                *found_id = cand;
                goto out;
            }
        }
        if (!row)
            break;
        cand = next_used + 1;
    }
out:
    stmt_done(st);
    return rc;
}

static int reserve_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct reserve_ctx *r = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int id = 0, rc = STORE_OK;
    for (size_t i = 0; i < r->nranges && id == 0; i++) {
        rc = first_free(c, r, &r->ranges[i], now, &id, err);
        if (rc)
            goto out;
    }
    if (id == 0) {
        struct buf msg = BUF_INIT(sizeof err->message);
        buf_adds(&msg, "no free VMID in ");
        for (size_t i = 0; i < r->nranges; i++)
            buf_printf(&msg, "%s%d-%d", i ? ", " : "", r->ranges[i].lo, r->ranges[i].hi);
        rc = store_fail(err, STORE_E_FULL, "%s", buf_str(&msg));
        buf_release(&msg);
        goto out;
    }
    rc = stmt(c, SQL_VMID_TAKE, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_int(st, 1, id);
    bind_str(st, 2, r->job);
    sqlite3_bind_int64(st, 3, now);
    rc = step_done(c, st, err, "reserving VMID");
    if (rc == STORE_OK && sqlite3_changes(c->db) != 1) /* we hold the write lock */
        rc = store_fail(err, STORE_E_DB, "VMID %d was allocated while reserving it", id);
    if (rc == STORE_OK)
        *r->vmid = id;
out:
    stmt_done(st);
    return rc;
}

static int sq_vmid_reserve(store *s, const struct vmid_range *ranges, size_t nranges,
                           const int *taken, size_t ntaken, const char *job, int *vmid,
                           struct store_error *err)
{
    struct reserve_ctx r = {ranges, nranges, taken, ntaken, job, vmid};
    return tx(SQ(s), TX_WRITE, reserve_fn, &r, err);
}

static const char SQL_VMID_STATE[] = "SELECT state FROM vmid_alloc WHERE vmid = ?1";
static const char SQL_VMID_USED[] = "UPDATE vmid_alloc SET state = 'used', until = 0,"
                                    " updated_at = ?2 WHERE vmid = ?1"
                                    " AND state IN ('reserved', 'used')";
static const char SQL_VMID_FOREIGN[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at) VALUES (?1, 'foreign', '', 0, ?2)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'foreign', job = '', until = 0,"
    "   updated_at = excluded.updated_at";
static const char SQL_VMID_FREE[] = "DELETE FROM vmid_alloc WHERE vmid = ?1";
static const char SQL_VMID_QUARANTINE[] = "UPDATE vmid_alloc SET state = 'quarantine', job = '',"
                                          " until = ?2, updated_at = ?3 WHERE vmid = ?1";

struct vmid_ctx {
    const char *sql; /* one of the SQL_VMID_* writes above */
    int vmid;
    int64_t quarantine_ms;
};

/* After mark_used matched nothing: missing, or in a state that is not ours. */
static int vmid_why_not(struct sq_conn *c, int vmid, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_VMID_STATE, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int(st, 1, vmid);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading VMID state");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", vmid);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d is %s, not reserved", vmid,
                        (const char *)sqlite3_column_text(st, 0));
    stmt_done(st);
    return rc;
}

static int vmid_write_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_ctx *v = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = stmt(c, v->sql, &st, err);
    if (rc)
        goto out;
    sqlite3_bind_int(st, 1, v->vmid);
    if (v->sql == SQL_VMID_QUARANTINE) {
        sqlite3_bind_int64(st, 2, now + v->quarantine_ms);
        sqlite3_bind_int64(st, 3, now);
    } else if (v->sql != SQL_VMID_FREE) {
        sqlite3_bind_int64(st, 2, now);
    }
    rc = step_done(c, st, err, "writing VMID allocation");
    if (rc || sqlite3_changes(c->db) > 0)
        goto out;
    if (v->sql == SQL_VMID_USED)
        rc = vmid_why_not(c, v->vmid, err);
    else
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", v->vmid);
out:
    stmt_done(st);
    return rc;
}

static int sq_vmid_mark_used(store *s, int vmid, struct store_error *err)
{
    struct vmid_ctx v = {SQL_VMID_USED, vmid, 0};
    return tx(SQ(s), TX_WRITE, vmid_write_fn, &v, err);
}

static int sq_vmid_mark_foreign(store *s, int vmid, struct store_error *err)
{
    struct vmid_ctx v = {SQL_VMID_FOREIGN, vmid, 0};
    return tx(SQ(s), TX_WRITE, vmid_write_fn, &v, err);
}

static int sq_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    struct vmid_ctx v = {quarantine_ms ? SQL_VMID_QUARANTINE : SQL_VMID_FREE, vmid, quarantine_ms};
    return tx(SQ(s), TX_WRITE, vmid_write_fn, &v, err);
}

static const char SQL_VMID_COUNT[] = "SELECT count(*) FROM vmid_alloc WHERE vmid BETWEEN ?1 AND ?2"
                                     " AND NOT (state = 'quarantine' AND until <= ?3)";

struct vmid_count_ctx {
    int lo, hi, *n;
};

static int vmid_count_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_count_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_VMID_COUNT, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int(st, 1, k->lo);
    sqlite3_bind_int(st, 2, k->hi);
    sqlite3_bind_int64(st, 3, wall_ms());
    int64_t n = 0;
    rc = scalar_i64(c, st, 0, &n, err, "counting VMIDs");
    *k->n = (int)n;
    stmt_done(st);
    return rc;
}

static int sq_vmid_count(store *s, int lo, int hi, int *n, struct store_error *err)
{
    struct vmid_count_ctx k = {lo, hi, n};
    return tx(SQ(s), TX_READ, vmid_count_fn, &k, err);
}

/* ---- capacity ------------------------------------------------------------- */

/* One reservation per job; reserving again moves it (the job retries on
 * another node) and makes it in-flight again. */
static const char SQL_CAP_RESERVE[] =
    "INSERT INTO capacity (job, node, mem, disk, created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, mem = excluded.mem,"
    "   disk = excluded.disk, settled_at = NULL";
static const char SQL_CAP_RELEASE[] = "DELETE FROM capacity WHERE job = ?1";
static const char SQL_CAP_SETTLE[] = "UPDATE capacity SET settled_at = ?2 WHERE job = ?1";
static const char SQL_CAP_PRUNE[] = "DELETE FROM capacity WHERE settled_at < ?1";
/* In-flight reservations count while their job is active (a runner that
 * died before releasing must not hold capacity forever); settled ones
 * count until the caller's inventory has caught up with them. */
static const char SQL_CAP_SUM[] =
    "SELECT coalesce(sum(mem), 0), coalesce(sum(disk), 0) FROM capacity"
    " WHERE node = ?1 AND (?2 IS NULL OR job <> ?2)"
    " AND ((settled_at IS NULL AND job IN (SELECT id FROM jobs WHERE state IN " ACTIVE_STATES "))"
    "   OR settled_at >= ?3)";

#define SETTLED_KEEP_MS (3600 * 1000LL)

struct cap_ctx {
    const char *job, *node;
    int64_t mem, disk;
    const struct cap_room *room;
    int64_t since;
};

static int cap_sum_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_CAP_SUM, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, k->node);
    bind_str(st, 2, k->job);
    sqlite3_bind_int64(st, 3, k->since);
    rc = scalar_i64(c, st, 0, &k->mem, err, "summing capacity");
    if (rc == STORE_OK)
        k->disk = sqlite3_column_int64(st, 1);
    stmt_done(st);
    return rc;
}

/* Inside the write transaction: does the request fit beside what others
 * hold on the node? */
static int cap_check(struct sq_conn *c, const struct cap_ctx *want, struct store_error *err)
{
    struct cap_ctx held = {want->job, want->node, 0, 0, NULL, want->room->seen_since};
    int rc = cap_sum_fn(c, &held, err);
    if (rc)
        return rc;
    return store_room_check(want->room, held.mem, held.disk, want->mem, want->disk, err);
}

static int cap_reserve_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = k->room ? cap_check(c, k, err) : STORE_OK;
    if (rc)
        return rc;
    if ((rc = stmt(c, SQL_CAP_RESERVE, &st, err)))
        return rc;
    int b = bind_str(st, 1, k->job);
    b = b ? b : bind_str(st, 2, k->node);
    b = b ? b : sqlite3_bind_int64(st, 3, k->mem);
    b = b ? b : sqlite3_bind_int64(st, 4, k->disk);
    b = b ? b : sqlite3_bind_int64(st, 5, wall_ms());
    if (b)
        rc = bind_failed(c, b, err, "capacity reservation");
    else
        rc = step_done(c, st, err, "reserving capacity");
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s to reserve capacity for", k->job);
    stmt_done(st);
    return rc;
}

static int sq_reserve_capacity(store *s, const char *job, const char *node, int64_t mem,
                               int64_t disk, const struct cap_room *room, struct store_error *err)
{
    struct cap_ctx k = {job, node, mem, disk, room, 0};
    return tx(SQ(s), TX_WRITE, cap_reserve_fn, &k, err);
}

/* One statement with a job id, then (for settling) the old settled rows go. */
static int cap_job_stmt(struct sq_conn *c, const char *sql, const char *job, int64_t now,
                        struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, sql, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, job);
    if (now)
        sqlite3_bind_int64(st, 2, now);
    rc = step_done(c, st, err, "updating a capacity reservation");
    stmt_done(st);
    return rc;
}

static int cap_settle_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    int64_t now = wall_ms();
    int rc = cap_job_stmt(c, SQL_CAP_SETTLE, k->job, now, err);
    if (rc == STORE_E_NOTFOUND) /* nothing reserved: nothing to settle */
        rc = STORE_OK;
    sqlite3_stmt *st = NULL;
    if (rc == STORE_OK && (rc = stmt(c, SQL_CAP_PRUNE, &st, err)) == STORE_OK) {
        sqlite3_bind_int64(st, 1, now - SETTLED_KEEP_MS);
        rc = step_done(c, st, err, "pruning settled reservations");
        if (rc == STORE_E_NOTFOUND)
            rc = STORE_OK;
        stmt_done(st);
    }
    return rc;
}

static int sq_settle_capacity(store *s, const char *job, struct store_error *err)
{
    struct cap_ctx k = {.job = job};
    return tx(SQ(s), TX_WRITE, cap_settle_fn, &k, err);
}

/* Releasing nothing is not an error: failure paths release unconditionally. */
static int cap_release_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    int rc = cap_job_stmt(c, SQL_CAP_RELEASE, k->job, 0, err);
    return rc == STORE_E_NOTFOUND ? STORE_OK : rc;
}

static int sq_release_capacity(store *s, const char *job, struct store_error *err)
{
    struct cap_ctx k = {.job = job};
    return tx(SQ(s), TX_WRITE, cap_release_fn, &k, err);
}

static int sq_reserved_on(store *s, const char *node, const char *except_job, int64_t seen_since,
                          int64_t *mem, int64_t *disk, struct store_error *err)
{
    struct cap_ctx k = {except_job, node, 0, 0, NULL, seen_since};
    int rc = tx(SQ(s), TX_READ, cap_sum_fn, &k, err);
    if (rc == STORE_OK) {
        *mem = k.mem;
        *disk = k.disk;
    }
    return rc;
}

/* ---- idempotency ------------------------------------------------------------ */

static const char SQL_IDEM_PUT[] = "INSERT INTO idem (owner, key, answer, created_at)"
                                   " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (owner, key) DO NOTHING";
static const char SQL_IDEM_GET[] = "SELECT answer FROM idem WHERE owner = ?1 AND key = ?2";

struct idem_ctx {
    const char *owner, *key;
    json_t *answer;
    json_t *existing; /* owned until handed over */
};

static int idem_put_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    json_decref(k->existing);
    k->existing = NULL;
    int rc = stmt(c, SQL_IDEM_PUT, &st, err);
    if (rc)
        goto out;
    int b = bind_str(st, 1, k->owner);
    b = b ? b : bind_str(st, 2, k->key);
    b = b ? b : bind_json(st, 3, k->answer);
    b = b ? b : sqlite3_bind_int64(st, 4, wall_ms());
    if (b) {
        rc = bind_failed(c, b, err, "idempotency key");
        goto out;
    }
    rc = step_done(c, st, err, "storing idempotency key");
    if (rc || sqlite3_changes(c->db) == 1)
        goto out;
    stmt_done(st);
    st = NULL;
    rc = stmt(c, SQL_IDEM_GET, &st, err);
    if (rc)
        goto out;
    bind_str(st, 1, k->owner);
    bind_str(st, 2, k->key);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading idempotency key");
    if (rc)
        goto out;
    if (!found) { /* cannot happen inside BEGIN IMMEDIATE */
        rc = store_fail(err, STORE_E_DB, "idempotency key '%s' vanished", k->key);
        goto out;
    }
    rc =
        store_json_load((const char *)sqlite3_column_text(st, 0), &k->existing, "idem.answer", err);
    if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "idempotency key '%s' was used already", k->key);
out:
    stmt_done(st);
    return rc;
}

static int sq_idem_put(store *s, const char *owner, const char *key, json_t *answer,
                       json_t **existing, struct store_error *err)
{
    struct idem_ctx k = {owner, key, answer, NULL};
    int rc = tx(SQ(s), TX_WRITE, idem_put_fn, &k, err);
    if (rc == STORE_E_CONFLICT && existing)
        *existing = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

/* ---- clone slots ----------------------------------------------------------- */

/* Slots of jobs that are not running under a live lease (their runner died,
 * or they ended without giving the slot back) are not counted. */
static const char SQL_SLOT_COUNT[] =
    "SELECT count(*) FROM clone_slots s JOIN jobs j ON j.id = s.job"
    " WHERE s.node = ?1 AND s.job <> ?2 AND j.state = 'running' AND j.lease_until >= ?3";
static const char SQL_SLOT_TAKE[] =
    "INSERT INTO clone_slots (job, node, taken_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, taken_at = excluded.taken_at";
static const char SQL_SLOT_GIVE[] = "DELETE FROM clone_slots WHERE job = ?1";

struct slot_ctx {
    const char *job, *node;
    int limit;
};

static int slot_take_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct slot_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int64_t now = wall_ms(), held = 0;
    int rc = stmt(c, SQL_SLOT_COUNT, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, k->node);
    bind_str(st, 2, k->job);
    sqlite3_bind_int64(st, 3, now);
    rc = scalar_i64(c, st, 0, &held, err, "counting clone slots");
    stmt_done(st);
    if (rc)
        return rc;
    if ((rc = store_slots_check(held, k->limit, k->node, err)))
        return rc;
    if ((rc = stmt(c, SQL_SLOT_TAKE, &st, err)))
        return rc;
    bind_str(st, 1, k->job);
    bind_str(st, 2, k->node);
    sqlite3_bind_int64(st, 3, now);
    rc = step_done(c, st, err, "taking a clone slot");
    stmt_done(st);
    return rc;
}

static int sq_clone_slot_take(store *s, const char *job, const char *node, int limit,
                              struct store_error *err)
{
    struct slot_ctx k = {job, node, limit};
    return tx(SQ(s), TX_WRITE, slot_take_fn, &k, err);
}

static int slot_give_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct slot_ctx *k = ctx;
    return cap_job_stmt(c, SQL_SLOT_GIVE, k->job, 0, err);
}

static int sq_clone_slot_give(store *s, const char *job, struct store_error *err)
{
    struct slot_ctx k = {job, NULL, 0};
    int rc = tx(SQ(s), TX_WRITE, slot_give_fn, &k, err);
    return rc == STORE_E_NOTFOUND ? STORE_OK : rc;
}

/* ---- leftovers -------------------------------------------------------------- */

static const char SQL_LEFT_ADD[] =
    "INSERT INTO leftovers (vmid, node, job, created_at) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (vmid, node) DO UPDATE SET job = excluded.job";
static const char SQL_LEFT_LIST[] =
    "SELECT vmid, node, job, created_at FROM leftovers ORDER BY created_at, vmid";
static const char SQL_LEFT_JOB[] = "SELECT job FROM leftovers WHERE vmid = ?1 AND node = ?2";
static const char SQL_LEFT_DEL[] = "DELETE FROM leftovers WHERE vmid = ?1 AND node = ?2";
/* the VMID goes back only if its creation still holds it and no other
 * leftover has it (standalone hosts each have their own VMID space) */
static const char SQL_LEFT_RELEASE[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = ?2, updated_at = ?3"
    " WHERE vmid = ?1 AND state = 'reserved' AND job = ?4"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE vmid = ?1)";

struct left_ctx {
    int vmid;
    const char *node, *job;
    int64_t quarantine_ms;
    struct leftover *out;
    size_t n;
};

static int left_add_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_LEFT_ADD, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int(st, 1, k->vmid);
    bind_str(st, 2, k->node);
    bind_str(st, 3, k->job);
    sqlite3_bind_int64(st, 4, wall_ms());
    rc = step_done(c, st, err, "recording a leftover");
    stmt_done(st);
    return rc;
}

static int sq_leftover_add(store *s, int vmid, const char *node, const char *job,
                           struct store_error *err)
{
    struct left_ctx k = {.vmid = vmid, .node = node, .job = job};
    return tx(SQ(s), TX_WRITE, left_add_fn, &k, err);
}

static int left_list_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    FREE_AND_NULL(k->out);
    k->n = 0;
    int rc = stmt(c, SQL_LEFT_LIST, &st, err);
    for (bool found = true; rc == STORE_OK && found;) {
        rc = step_row(c, st, &found, err, "listing leftovers");
        if (rc || !found)
            break;
        if (k->n == cap) {
            cap = cap ? cap * 2 : 16;
            k->out = xrealloc(k->out, cap * sizeof *k->out);
        }
        struct leftover *l = &k->out[k->n++];
        memset(l, 0, sizeof *l);
        l->vmid = sqlite3_column_int(st, 0);
        COL_FIELD(st, 1, l->node);
        COL_FIELD(st, 2, l->job);
        l->created_at = sqlite3_column_int64(st, 3);
    }
    stmt_done(st);
    return rc;
}

static int sq_leftover_list(store *s, struct leftover **out, size_t *n, struct store_error *err)
{
    struct left_ctx k = {0};
    int rc = tx(SQ(s), TX_READ, left_list_fn, &k, err);
    if (rc) {
        free(k.out);
        return rc;
    }
    *out = k.out;
    *n = k.n;
    return STORE_OK;
}

static int left_done_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    char job[40] = "";
    bool found = false;
    int64_t now = wall_ms();
    int rc = stmt(c, SQL_LEFT_JOB, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int(st, 1, k->vmid);
    bind_str(st, 2, k->node);
    rc = step_row(c, st, &found, err, "reading a leftover");
    if (rc == STORE_OK && found)
        COL_FIELD(st, 0, job);
    stmt_done(st);
    if (rc || !found)
        return rc;
    static const char *const sql[] = {SQL_LEFT_DEL, SQL_LEFT_RELEASE};
    for (int i = 0; i < 2 && rc == STORE_OK; i++) {
        if ((rc = stmt(c, sql[i], &st, err)))
            break;
        sqlite3_bind_int(st, 1, k->vmid);
        if (i == 0) {
            bind_str(st, 2, k->node);
        } else {
            sqlite3_bind_int64(st, 2, now + k->quarantine_ms);
            sqlite3_bind_int64(st, 3, now);
            bind_str(st, 4, job);
        }
        rc = step_done(c, st, err, "forgetting a leftover");
        stmt_done(st);
    }
    return rc;
}

static int sq_leftover_done(store *s, int vmid, const char *node, int64_t quarantine_ms,
                            struct store_error *err)
{
    struct left_ctx k = {.vmid = vmid, .node = node, .quarantine_ms = quarantine_ms};
    return tx(SQ(s), TX_WRITE, left_done_fn, &k, err);
}

/* ---- a creation's submission ------------------------------------------------ */

/* What an owner's live VMs hold, each counted at the larger of its record
 * and what its queued or running update/resize jobs ask for: a change on
 * its way counts before it lands. */
#define TARGET(key, kind)                                                                          \
    "coalesce((SELECT max(json_extract(j.request, '$." key "')) FROM jobs j"                       \
    " WHERE j.vmid = v.vmid AND j.kind = '" kind "' AND j.state IN ('queued', 'running')), 0)"
static const char SQL_OWNER_USAGE[] = "SELECT count(*), coalesce(sum(max(v.cores, " TARGET(
    "cores", "update") ")), 0),"
                       " coalesce(sum(max(v.memory_mb, " TARGET(
                           "memory_mb",
                           "update") ")), 0),"
                                     " coalesce(sum(max(v.disk_gb, " TARGET(
                                         "disk_gb",
                                         "resize") ")), 0)"
                                                   " FROM vms v WHERE v.owner = ?1 AND v.state IN "
                                                   "('creating', 'enabled', 'deleting')";
#undef TARGET

static int owner_usage(struct sq_conn *c, const char *owner, struct store_usage *u,
                       struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_OWNER_USAGE, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, owner);
    int64_t n = 0;
    rc = scalar_i64(c, st, 0, &n, err, "summing the owner's VMs");
    if (rc == STORE_OK) {
        u->vms = (int)n;
        u->cores = sqlite3_column_int(st, 1);
        u->memory_mb = sqlite3_column_int64(st, 2);
        u->disk_gb = sqlite3_column_int64(st, 3);
    }
    stmt_done(st);
    return rc;
}

/* Would the new VM exceed the owner's quota? Fills sub->used. */
static int quota_fn(struct sq_conn *c, struct store_submit *sub, struct store_error *err)
{
    int rc = owner_usage(c, sub->vm->owner, &sub->used, err);
    if (rc)
        return rc;
    struct store_usage with = sub->used;
    with.vms++;
    with.cores += sub->vm->cores;
    with.memory_mb += sub->vm->memory_mb;
    with.disk_gb += sub->vm->disk_gb;
    return store_quota_check(sub->quota, NULL, &with, sub->vm->owner, err);
}

/* ---- a job on an existing VM ------------------------------------------------ */

struct jsub_ctx {
    struct job_rec *j;
    const char *event;
    const struct store_usage *quota;
    struct store_usage used;
};

static int job_submit_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct jsub_ctx *k = ctx;
    int rc;
    if (k->quota && (rc = owner_usage(c, k->j->owner, &k->used, err)))
        return rc;
    if ((rc = job_insert_fn(c, k->j, err)))
        return rc;
    if (k->quota) { /* with the job counted: its target is in the sums now */
        struct store_usage with;
        if ((rc = owner_usage(c, k->j->owner, &with, err)))
            return rc;
        if ((rc = store_quota_check(k->quota, &k->used, &with, k->j->owner, err)))
            return rc;
    }
    struct event_add_ctx e = {k->j->id, k->j->step, k->event, 0};
    return event_add_fn(c, &e, err);
}

/* ---- a job that moves its VM record from one state to another --------------- */

static const char SQL_VM_MOVE[] =
    "UPDATE vms SET state = ?3, job = ?4, updated_at = ?5 WHERE id = ?1 AND state = ?2";
static const char SQL_VM_STATE_OF[] = "SELECT state FROM vms WHERE id = ?1";

struct jmove_ctx {
    struct job_rec *j;
    const char *event;
    int64_t vm_id;
    enum vm_state from, to;
};

/* Why the record did not move: it is gone, or in another state. */
static int vm_move_why_not(struct sq_conn *c, int64_t id, struct store_error *err)
{
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_VM_STATE_OF, &st, err);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 1, id);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading the VM record's state");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)id);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "the VM record is %s",
                        (const char *)sqlite3_column_text(st, 0));
    stmt_done(st);
    return rc;
}

static int job_move_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct jmove_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_VM_MOVE, &st, err);
    if (rc)
        return rc;
    int b = sqlite3_bind_int64(st, 1, k->vm_id);
    b = b ? b : bind_str(st, 2, vm_state_name(k->from));
    b = b ? b : bind_str(st, 3, vm_state_name(k->to));
    b = b ? b : BIND_FIELD(st, 4, k->j->id);
    b = b ? b : sqlite3_bind_int64(st, 5, wall_ms());
    if (b) {
        rc = bind_failed(c, b, err, "VM move");
        stmt_done(st);
        return rc;
    }
    rc = step_done(c, st, err, "moving the VM record");
    bool moved = rc == STORE_OK && sqlite3_changes(c->db) > 0;
    stmt_done(st);
    if (rc)
        return rc;
    if (!moved)
        return vm_move_why_not(c, k->vm_id, err);
    if ((rc = job_insert_fn(c, k->j, err)))
        return rc;
    struct event_add_ctx e = {k->j->id, k->j->step, k->event, 0};
    return event_add_fn(c, &e, err);
}

static int sq_job_submit_move(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                              enum vm_state from, enum vm_state to, struct store_error *err)
{
    struct jmove_ctx k = {j, event, vm_id, from, to};
    return tx(SQ(s), TX_WRITE, job_move_fn, &k, err);
}

static int sq_job_submit(store *s, struct job_rec *j, const char *event,
                         const struct store_usage *quota, struct store_usage *used,
                         struct store_error *err)
{
    struct jsub_ctx k = {j, event, quota, {0}};
    int rc = tx(SQ(s), TX_WRITE, job_submit_fn, &k, err);
    if (used)
        *used = k.used;
    return rc;
}

/* The key first: when it is taken, nothing else is written. */
static int submit_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct store_submit *sub = ctx;
    int rc = STORE_OK;
    json_decref(sub->first); /* a busy retry runs this again */
    sub->first = NULL;
    if (sub->idem) {
        struct idem_ctx ic = {sub->idem->owner, sub->idem->key, sub->idem->answer, NULL};
        rc = idem_put_fn(c, &ic, err);
        sub->first = ic.existing;
        if (rc)
            return rc;
    }
    if (sub->quota && (rc = quota_fn(c, sub, err)))
        return rc;
    if ((rc = vm_insert_fn(c, sub->vm, err)) || (rc = job_insert_fn(c, sub->job, err)))
        return rc;
    struct event_add_ctx e = {sub->job->id, sub->job->step, sub->event, 0};
    return event_add_fn(c, &e, err);
}

static int sq_create_submit(store *s, struct store_submit *sub, struct store_error *err)
{
    int rc = tx(SQ(s), TX_WRITE, submit_fn, sub, err);
    if (rc != STORE_E_CONFLICT) {
        json_decref(sub->first);
        sub->first = NULL;
    }
    return rc;
}

static int sq_idem_get_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    json_decref(k->existing);
    k->existing = NULL;
    int rc = stmt(c, SQL_IDEM_GET, &st, err);
    if (rc)
        goto out;
    bind_str(st, 1, k->owner);
    bind_str(st, 2, k->key);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading idempotency key");
    if (rc)
        goto out;
    if (!found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no idempotency key '%s'", k->key);
        goto out;
    }
    rc =
        store_json_load((const char *)sqlite3_column_text(st, 0), &k->existing, "idem.answer", err);
out:
    stmt_done(st);
    return rc;
}

static int sq_idem_get(store *s, const char *owner, const char *key, json_t **answer,
                       struct store_error *err)
{
    struct idem_ctx k = {owner, key, NULL, NULL};
    int rc = tx(SQ(s), TX_READ, sq_idem_get_fn, &k, err);
    if (rc == STORE_OK)
        *answer = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

/* ---- shared settings ------------------------------------------------------- */

static const char SQL_KV_PUT[] = "INSERT INTO kv (name, value, created_at) VALUES (?1, ?2, ?3)"
                                 " ON CONFLICT (name) DO NOTHING";
static const char SQL_KV_GET[] = "SELECT value FROM kv WHERE name = ?1";

struct kv_ctx {
    const char *name, *value;
    char *out;
    size_t outlen;
};

static int kv_setdefault_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct kv_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_KV_PUT, &st, err);
    if (rc)
        goto out;
    bind_str(st, 1, k->name);
    bind_str(st, 2, k->value);
    sqlite3_bind_int64(st, 3, wall_ms());
    rc = step_done(c, st, err, "storing a setting");
    stmt_done(st);
    st = NULL;
    if (rc || (rc = stmt(c, SQL_KV_GET, &st, err)))
        goto out;
    bind_str(st, 1, k->name);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading a setting");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_DB, "setting '%s' vanished", k->name);
    if (rc == STORE_OK)
        col_copy(st, 0, k->out, k->outlen);
out:
    stmt_done(st);
    return rc;
}

static int sq_kv_setdefault(store *s, const char *name, const char *value, char *out, size_t outlen,
                            struct store_error *err)
{
    struct kv_ctx k = {name, value, out, outlen};
    return tx(SQ(s), TX_WRITE, kv_setdefault_fn, &k, err);
}

/* ---- API tokens -------------------------------------------------------------- */

#define TOKEN_COLS "id, owner, role, hash, created_at, revoked"
static const char SQL_TOKEN_INSERT[] = "INSERT INTO tokens (" TOKEN_COLS ")"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                                       " ON CONFLICT (id) DO NOTHING";
static const char SQL_TOKEN_GET[] = "SELECT " TOKEN_COLS " FROM tokens WHERE id = ?1";
static const char SQL_TOKEN_LIST[] = "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_at, id";
static const char SQL_TOKEN_REVOKE[] = "UPDATE tokens SET revoked = 1 WHERE id = ?1";

static void row_to_token(sqlite3_stmt *st, struct token_rec *t)
{
    COL_FIELD(st, 0, t->id);
    COL_FIELD(st, 1, t->owner);
    COL_FIELD(st, 2, t->role);
    COL_FIELD(st, 3, t->hash);
    t->created_at = sqlite3_column_int64(st, 4);
    t->revoked = sqlite3_column_int(st, 5) != 0;
}

struct token_ctx {
    const char *id;
    const struct token_rec *in;
    struct token_rec *out; /* get: one record; list: the array */
    size_t n;
};

static int token_insert_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    const struct token_rec *t = ((struct token_ctx *)ctx)->in;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_TOKEN_INSERT, &st, err);
    if (rc)
        return rc;
    BIND_FIELD(st, 1, t->id);
    BIND_FIELD(st, 2, t->owner);
    BIND_FIELD(st, 3, t->role);
    BIND_FIELD(st, 4, t->hash);
    sqlite3_bind_int64(st, 5, t->created_at ? t->created_at : wall_ms());
    sqlite3_bind_int(st, 6, t->revoked);
    rc = step_done(c, st, err, "storing a token");
    if (rc == STORE_OK && sqlite3_changes(c->db) == 0)
        rc = store_fail(err, STORE_E_CONFLICT, "token id '%.32s' exists", t->id);
    stmt_done(st);
    return rc;
}

static int sq_token_insert(store *s, const struct token_rec *t, struct store_error *err)
{
    struct token_ctx k = {.in = t};
    return tx(SQ(s), TX_WRITE, token_insert_fn, &k, err);
}

static int token_get_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_TOKEN_GET, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, k->id);
    bool found = false;
    rc = step_row(c, st, &found, err, "reading a token");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", k->id);
    if (rc == STORE_OK)
        row_to_token(st, k->out);
    stmt_done(st);
    return rc;
}

static int sq_token_get(store *s, const char *id, struct token_rec *out, struct store_error *err)
{
    struct token_ctx k = {.id = id, .out = out};
    return tx(SQ(s), TX_READ, token_get_fn, &k, err);
}

static int token_list_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    FREE_AND_NULL(k->out);
    k->n = 0;
    int rc = stmt(c, SQL_TOKEN_LIST, &st, err);
    for (bool found = true; rc == STORE_OK && found;) {
        rc = step_row(c, st, &found, err, "listing tokens");
        if (rc || !found)
            break;
        if (k->n == cap) {
            cap = cap ? cap * 2 : 16;
            k->out = xrealloc(k->out, cap * sizeof *k->out);
        }
        memset(&k->out[k->n], 0, sizeof k->out[k->n]);
        row_to_token(st, &k->out[k->n++]);
    }
    stmt_done(st);
    return rc;
}

static int sq_token_list(store *s, struct token_rec **out, size_t *n, struct store_error *err)
{
    struct token_ctx k = {0};
    int rc = tx(SQ(s), TX_READ, token_list_fn, &k, err);
    if (rc) {
        free(k.out);
        return rc;
    }
    *out = k.out;
    *n = k.n;
    return STORE_OK;
}

static int token_revoke_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    int rc = stmt(c, SQL_TOKEN_REVOKE, &st, err);
    if (rc)
        return rc;
    bind_str(st, 1, k->id);
    rc = step_done(c, st, err, "revoking a token");
    if (rc == STORE_OK && sqlite3_changes(c->db) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", k->id);
    stmt_done(st);
    return rc;
}

static int sq_token_revoke(store *s, const char *id, struct store_error *err)
{
    struct token_ctx k = {.id = id};
    return tx(SQ(s), TX_WRITE, token_revoke_fn, &k, err);
}

/* ---- job statistics ------------------------------------------------------------ */

/* Durations are bucketed in SQL so that metrics never load every job. */
#define DUR "(finished_at - created_at)"
#define BUCKET(i) "sum(CASE WHEN finished_at > 0 AND " DUR " <= ?" #i " THEN 1 ELSE 0 END), "
static const char SQL_JOB_STATS[] =
    "SELECT kind, state, count(*), coalesce(sum(CASE WHEN finished_at > 0 THEN " DUR
    " END), 0), " BUCKET(1) BUCKET(2) BUCKET(3) BUCKET(4) BUCKET(5)
        BUCKET(6) "sum(CASE WHEN finished_at > 0 THEN 1 ELSE 0 END)"
                  " FROM jobs GROUP BY kind, state ORDER BY kind, state";

struct stats_ctx {
    struct job_stat *v;
    size_t n;
};

static int job_stats_fn(struct sq_conn *c, void *ctx, struct store_error *err)
{
    struct stats_ctx *k = ctx;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    FREE_AND_NULL(k->v);
    k->n = 0;
    int rc = stmt(c, SQL_JOB_STATS, &st, err);
    if (rc)
        return rc;
    for (int i = 0; i < STORE_DURATION_BUCKETS - 1; i++)
        sqlite3_bind_int64(st, i + 1, store_duration_bounds[i]);
    for (bool found = true; rc == STORE_OK && found;) {
        rc = step_row(c, st, &found, err, "counting jobs");
        if (rc || !found)
            break;
        if (k->n == cap) {
            cap = cap ? cap * 2 : 16;
            k->v = xrealloc(k->v, cap * sizeof *k->v);
        }
        struct job_stat *j = &k->v[k->n];
        memset(j, 0, sizeof *j);
        COL_FIELD(st, 0, j->kind);
        int state = job_state_parse((const char *)sqlite3_column_text(st, 1));
        if (state < 0)
            continue; /* the CHECK constraint rules this out */
        j->state = (enum job_state)state;
        j->count = sqlite3_column_int64(st, 2);
        j->duration_sum_ms = sqlite3_column_int64(st, 3);
        for (int i = 0; i < STORE_DURATION_BUCKETS; i++)
            j->buckets[i] = sqlite3_column_int64(st, 4 + i);
        k->n++;
    }
    stmt_done(st);
    return rc;
}

static int sq_job_stats(store *s, struct job_stat **out, size_t *n, struct store_error *err)
{
    struct stats_ctx k = {0};
    int rc = tx(SQ(s), TX_READ, job_stats_fn, &k, err);
    if (rc) {
        free(k.v);
        return rc;
    }
    *out = k.v;
    *n = k.n;
    return STORE_OK;
}

/* ---- open / close ----------------------------------------------------------- */

static void sq_close(store *base)
{
    struct sq_store *s = SQ(base);
    /* After the key is gone no thread-exit destructor can run for it, so
     * the list below is ours alone (store_close must not race with other
     * calls on the same handle). */
    pthread_key_delete(s->key);
    pthread_mutex_lock(&s->mu);
    while (s->conns) {
        struct sq_conn *c = s->conns;
        s->conns = c->next;
        conn_close(c);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

static const struct store_ops SQLITE_OPS = {
    .name = "sqlite",
    .close = sq_close,
    .vm_insert = sq_vm_insert,
    .vm_update = sq_vm_update,
    .vm_get = sq_vm_get,
    .vm_get_id = sq_vm_get_id,
    .vm_scan = sq_vm_scan,
    .job_insert = sq_job_insert,
    .job_update = sq_job_update,
    .job_get = sq_job_get,
    .job_claim = sq_job_claim,
    .job_renew = sq_job_renew,
    .job_lease_owners = sq_job_lease_owners,
    .job_expire_owner = sq_job_expire_owner,
    .job_count_active = sq_job_count_active,
    .job_event_add = sq_job_event_add,
    .job_events = sq_job_events,
    .vmid_reserve = sq_vmid_reserve,
    .vmid_mark_used = sq_vmid_mark_used,
    .vmid_mark_foreign = sq_vmid_mark_foreign,
    .vmid_release = sq_vmid_release,
    .vmid_count = sq_vmid_count,
    .reserve_capacity = sq_reserve_capacity,
    .settle_capacity = sq_settle_capacity,
    .release_capacity = sq_release_capacity,
    .reserved_on = sq_reserved_on,
    .create_submit = sq_create_submit,
    .job_submit = sq_job_submit,
    .job_submit_move = sq_job_submit_move,
    .job_checkpoint = sq_job_checkpoint,
    .clone_slot_take = sq_clone_slot_take,
    .clone_slot_give = sq_clone_slot_give,
    .leftover_add = sq_leftover_add,
    .leftover_list = sq_leftover_list,
    .leftover_done = sq_leftover_done,
    .idem_put = sq_idem_put,
    .idem_get = sq_idem_get,
    .kv_setdefault = sq_kv_setdefault,
    .token_insert = sq_token_insert,
    .token_get = sq_token_get,
    .token_list = sq_token_list,
    .token_revoke = sq_token_revoke,
    .job_stats = sq_job_stats,
};

/* path: a file name, or "//" + an absolute path (sqlite:///var/lib/x.db). */
/* The database holds owners, SSH keys, token hashes and the key they are
 * hashed with: a new file is made 0600 whatever the umask, before SQLite
 * opens it (SQLite gives its -wal and -shm files the database's mode). A
 * file that exists keeps its mode; one others may read is reported. */
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

store *store_sqlite_open(const char *path, struct store_error *err)
{
    if (str_starts(path, "//"))
        path += 2;
    if (!*path || strcmp(path, ":memory:") == 0 || str_starts(path, "file:")) {
        /* In-memory databases are per connection, and we have one
         * connection per thread: each thread would see its own data. */
        store_fail(err, STORE_E_INVALID, "SQLite store needs a file path, got '%s'", path);
        return NULL;
    }
    if (create_private(path, err))
        return NULL;
    struct sq_store *s = xcalloc(1, sizeof *s);
    s->base.ops = &SQLITE_OPS;
    s->path = xstrdup(path);
    s->pid = getpid();
    pthread_mutex_init(&s->mu, NULL);
    if (pthread_key_create(&s->key, conn_tls_free) != 0) {
        store_fail(err, STORE_E_DB, "pthread_key_create failed");
        pthread_mutex_destroy(&s->mu);
        free(s->path);
        free(s);
        return NULL;
    }
    int rc = tx(s, TX_READ, wal_fn, NULL, err);
    if (rc == STORE_OK)
        rc = tx(s, TX_WRITE, migrate_fn, NULL, err);
    if (rc) {
        sq_close(&s->base);
        return NULL;
    }
    return &s->base;
}
