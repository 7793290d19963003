/* store_pg: the PostgreSQL backend of store.h (libpq), for several proxd
 * instances sharing one database. Same semantics as store_sqlite.c, which
 * is the reference.
 *
 * Concurrency model:
 *  - one connection per thread, opened on first use and kept in a pthread
 *    key; all connections are on a list so store_close closes them, and a
 *    thread that exits closes its own (key destructor). A connection found
 *    broken is reset (PQreset) and its prepared statements made again;
 *  - statements are prepared once per connection (cache keyed by the
 *    address of the static SQL text) and run with text parameters;
 *  - every writing op is one READ COMMITTED transaction. Where a decision
 *    reads before it writes, the transaction first takes a transaction-
 *    scoped advisory lock on what it decides about (all VMID reservations;
 *    one node's capacity; one node's clone slots; one owner's quota; one
 *    job's event numbers; migrations), so the deciders of one thing run one
 *    at a time in every process, and each statement after the lock sees
 *    what the previous holder committed (READ COMMITTED takes a new
 *    snapshot per statement). Unique keys (live VMID, idempotency key,
 *    token, job id) are left to the database's unique indexes: a concurrent
 *    insert waits for the first to commit and then conflicts;
 *  - job claims pick with SELECT ... FOR UPDATE SKIP LOCKED: concurrent
 *    claimers never wait for each other and never take the same job; only
 *    the oldest unfinished job of a VMID is claimable, so one VM's jobs run
 *    one at a time;
 *  - serialization failures and deadlocks (SQLSTATE 40001, 40P01), lock
 *    timeouts, and a connection lost before COMMIT was sent make the whole
 *    transaction run again, a bounded number of times.
 * Single reads are one statement each and run without BEGIN. */
#include "store/store_int.h"

#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_TX_ATTEMPTS 8
#define PG_STMT_CACHE 96
#define PG_MAXPARAMS 20
/* Internal result: run the transaction again. */
#define PG_RETRY 100

/* Advisory lock keys: (PG_LOCK_NS + purpose, object). */
#define PG_LOCK_NS 1886938112 /* "pxd\0" */
#define PG_LOCK_MIGRATE 0
#define PG_LOCK_VMID 1
#define PG_LOCK_CAPACITY 2
#define PG_LOCK_SLOTS 3
#define PG_LOCK_QUOTA 4
#define PG_LOCK_EVENTS 5

struct pg_stmt {
    const char *sql; /* identity: the address of a static SQL string */
    char name[16];
};

struct pg_store;

struct pg_conn {
    PGconn *db;
    struct pg_store *s;
    struct pg_conn *prev, *next; /* on s->conns */
    struct pg_stmt cache[PG_STMT_CACHE];
    size_t ncache;
    bool broken; /* the connection failed: reset before the next use */
};

struct pg_store {
    struct store base; /* first: store.c sees only this */
    char *url;
    pid_t pid;          /* connections must not cross fork() */
    pthread_key_t key;  /* this thread's struct pg_conn */
    pthread_mutex_t mu; /* guards conns */
    struct pg_conn *conns;
};

enum tx_mode {
    TX_READ,  /* no BEGIN: one statement, its own snapshot */
    TX_WRITE, /* BEGIN ... COMMIT */
};

typedef int (*tx_fn)(struct pg_conn *c, void *ctx, struct store_error *err);

static struct pg_store *PG(store *s)
{
    return (struct pg_store *)s;
}

/* ---- parameters ------------------------------------------------------------ */

/* Text parameters of one statement; numbers are formatted in place, dumped
 * JSON and copied record fields are owned. */
struct pa {
    int n;
    const char *v[PG_MAXPARAMS];
    char *own[PG_MAXPARAMS];
    char num[PG_MAXPARAMS][24];
};

static void pa_str(struct pa *p, const char *s)
{
    p->own[p->n] = NULL;
    p->v[p->n++] = s;
}

/* A bounded record field (it may lack a NUL). */
static void pa_field(struct pa *p, const char *f, size_t size)
{
    char *t = xstrndup(f, strnlen(f, size));
    p->own[p->n] = t;
    p->v[p->n++] = t;
}
#define PA_FIELD(p, f) pa_field((p), (f), sizeof(f))

static void pa_i64(struct pa *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)v);
    p->own[p->n] = NULL;
    p->v[p->n] = p->num[p->n];
    p->n++;
}

static void pa_json(struct pa *p, const json_t *v)
{
    char *t = store_json_dump(v); /* NULL for NULL: an SQL NULL */
    p->own[p->n] = t;
    p->v[p->n++] = t;
}

static void pa_free(struct pa *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->own[i]);
    p->n = 0;
}

/* ---- reading results -------------------------------------------------------- */

static const char *cv(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t ci64(const PGresult *r, int row, int col)
{
    const char *v = cv(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

static void ccopy(const PGresult *r, int row, int col, char *dst, size_t n)
{
    const char *v = cv(r, row, col);
    store_copy(dst, n, v, v ? (size_t)PQgetlength(r, row, col) : 0);
}
#define COL_FIELD(r, row, i, f) ccopy((r), (row), (i), (f), sizeof(f))

static int changes(const PGresult *r)
{
    return atoi(PQcmdTuples((PGresult *)r));
}

/* ---- errors --------------------------------------------------------------- */

/* Map a failed result to a store error, with `what` naming the operation.
 * Serialization failures, deadlocks and lock timeouts become PG_RETRY;
 * unique keys CONFLICT, foreign keys NOTFOUND, other constraints and bad
 * input INVALID; a lost connection marks the connection broken. */
static int pg_err(struct pg_conn *c, const PGresult *res, struct store_error *err, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char buf[256];
    if (!msg) {
        snprintf(buf, sizeof buf, "%s", PQerrorMessage(c->db));
        size_t l = strlen(buf);
        while (l && (buf[l - 1] == '\n' || buf[l - 1] == ' '))
            buf[--l] = '\0';
        msg = buf;
    }
    if (PQstatus(c->db) != CONNECTION_OK) {
        c->broken = true;
        return store_fail(err, STORE_E_DB, "%s: connection lost: %s", what, msg);
    }
    if (!state)
        state = "";
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0) {
        store_fail(err, STORE_E_DB, "%s: %s (SQLSTATE %s)", what, msg, state);
        return PG_RETRY;
    }
    if (strcmp(state, "23505") == 0)
        return store_fail(err, STORE_E_CONFLICT, "%s: %s", what, msg);
    if (strcmp(state, "23503") == 0)
        return store_fail(err, STORE_E_NOTFOUND, "%s: %s", what, msg);
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return store_fail(err, STORE_E_INVALID, "%s: %s", what, msg);
    return store_fail(err, STORE_E_DB, "%s: %s (SQLSTATE %s)", what, msg, state);
}

/* ---- connections and statements ----------------------------------------- */

static void conn_close(struct pg_conn *c)
{
    PQfinish(c->db);
    free(c);
}

static void conn_unlink(struct pg_store *s, struct pg_conn *c)
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
    struct pg_conn *c = p;
    struct pg_store *s = c->s;
    pthread_mutex_lock(&s->mu);
    conn_unlink(s, c);
    pthread_mutex_unlock(&s->mu);
    conn_close(c);
}

/* libpq's message without its trailing newline. */
static const char *conn_msg(PGconn *db, char *buf, size_t n)
{
    snprintf(buf, n, "%s", db ? PQerrorMessage(db) : "out of memory");
    size_t l = strlen(buf);
    while (l && (buf[l - 1] == '\n' || buf[l - 1] == ' '))
        buf[--l] = '\0';
    return buf;
}

/* Server notices ("relation ... already exists, skipping") are not for
 * proxd's log. */
static void notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int conn_setup(struct pg_conn *c, struct store_error *err)
{
    char m[256];
    if (PQstatus(c->db) != CONNECTION_OK)
        return store_fail(err, STORE_E_DB, "cannot connect to PostgreSQL: %s",
                          conn_msg(c->db, m, sizeof m));
    if (PQsetClientEncoding(c->db, "UTF8") != 0)
        return store_fail(err, STORE_E_DB, "setting the client encoding: %s",
                          conn_msg(c->db, m, sizeof m));
    PQsetNoticeProcessor(c->db, notice_ignore, NULL);
    c->ncache = 0; /* prepared statements live in the server session */
    c->broken = false;
    return STORE_OK;
}

static int conn_open(struct pg_store *s, struct pg_conn **out, struct store_error *err)
{
    struct pg_conn *c = xcalloc(1, sizeof *c);
    c->s = s;
    /* The URL is a libpq connection URI; it may hold a password, which
     * libpq's messages never repeat. It is expanded after the defaults
     * below, so its own parameters win: without a connect_timeout an
     * unreachable server would block the thread for the kernel's TCP
     * timeout. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "proxd", s->url, NULL};
    c->db = PQconnectdbParams(keys, vals, 1 /* expand dbname */);
    int rc = conn_setup(c, err);
    if (rc) {
        conn_close(c);
        c = NULL;
    }
    *out = c;
    return rc;
}

/* Reconnect a broken connection (same parameters). */
static int conn_reset(struct pg_conn *c, struct store_error *err)
{
    PQreset(c->db);
    return conn_setup(c, err);
}

/* This thread's connection, opened on first use, reset when broken. */
static int conn_get(struct pg_store *s, struct pg_conn **out, struct store_error *err)
{
    if (getpid() != s->pid)
        return store_fail(err, STORE_E_INVALID,
                          "store handle used in a forked child; open a new one there");
    struct pg_conn *c = pthread_getspecific(s->key);
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
    } else if (c->broken || PQstatus(c->db) != CONNECTION_OK) {
        int rc = conn_reset(c, err);
        if (rc) {
            c->broken = true;
            return rc;
        }
    }
    *out = c;
    return STORE_OK;
}

/* Run `sql` (a static string: statements are prepared once per connection,
 * keyed by its address) with parameters p (may be NULL). With `out`, the
 * result is handed over (PQclear it), else cleared. */
static int q(struct pg_conn *c, const char *sql, const struct pa *p, PGresult **out,
             struct store_error *err, const char *what)
{
    const char *name = NULL;
    if (out)
        *out = NULL;
    for (size_t i = 0; i < c->ncache; i++) {
        if (c->cache[i].sql == sql) {
            name = c->cache[i].name;
            break;
        }
    }
    if (!name) {
        if (c->ncache == PG_STMT_CACHE)
            return store_fail(err, STORE_E_DB, "statement cache full (raise PG_STMT_CACHE)");
        struct pg_stmt *ps = &c->cache[c->ncache];
        snprintf(ps->name, sizeof ps->name, "pxd%zu", c->ncache);
        PGresult *res = PQprepare(c->db, ps->name, sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            int rc = pg_err(c, res, err, "preparing SQL");
            PQclear(res);
            return rc;
        }
        PQclear(res);
        ps->sql = sql;
        c->ncache++;
        name = ps->name;
    }
    PGresult *res =
        PQexecPrepared(c->db, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0 /* text */);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = pg_err(c, res, err, what);
        PQclear(res);
        return rc;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return STORE_OK;
}

/* Run a statement without parameters through the simple protocol (BEGIN,
 * COMMIT, DDL with several statements). */
static int simple(struct pg_conn *c, const char *sql, struct store_error *err, const char *what)
{
    PGresult *res = PQexec(c->db, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pg_err(c, res, err, what);
    PQclear(res);
    return rc;
}

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))";

/* Take the transaction's advisory lock on (purpose, key). */
static int xlock(struct pg_conn *c, int purpose, const char *key, struct store_error *err)
{
    struct pa p = {0};
    pa_i64(&p, PG_LOCK_NS + purpose);
    pa_str(&p, key);
    int rc = q(c, SQL_LOCK, &p, NULL, err, "taking an advisory lock");
    pa_free(&p);
    return rc;
}

/* ---- transactions ------------------------------------------------------- */

/* Run fn as one transaction on this thread's connection, again from the
 * start on a retryable failure (bounded, with a growing, jittered pause).
 * fn must be safe to run again: it may not keep results of a failed
 * attempt. */
static int tx(struct pg_store *s, enum tx_mode mode, tx_fn fn, void *ctx, struct store_error *err)
{
    struct pg_conn *c = NULL;
    int rc = conn_get(s, &c, err);
    if (rc)
        return rc;
    for (int attempt = 1;; attempt++) {
        bool committing = false;
        rc = mode == TX_WRITE
                 ? simple(c, "BEGIN ISOLATION LEVEL READ COMMITTED", err, "starting a transaction")
                 : STORE_OK;
        if (rc == STORE_OK)
            rc = fn(c, ctx, err);
        if (rc == STORE_OK && mode == TX_WRITE) {
            committing = true;
            rc = simple(c, "COMMIT", err, "committing");
        }
        if (rc != STORE_OK && !c->broken && PQtransactionStatus(c->db) != PQTRANS_IDLE)
            simple(c, "ROLLBACK", NULL, "rolling back"); /* keeps the first error's message */
        if (c->broken) {
            /* The transaction is gone with the session. Before COMMIT it
             * did nothing and can run again on a new connection; during
             * COMMIT its fate is unknown, so say so. */
            if (committing || conn_reset(c, NULL) != STORE_OK)
                return rc;
            rc = PG_RETRY;
        }
        if (rc == STORE_OK && err && attempt > 1) {
            err->code = STORE_OK; /* forget the message of the failed try */
            err->message[0] = '\0';
        }
        if (rc != PG_RETRY)
            return rc;
        if (attempt == PG_TX_ATTEMPTS)
            break;
        sleep_ms((1 << attempt) + random() % 8);
    }
    char first[sizeof err->message] = "";
    if (err)
        snprintf(first, sizeof first, "%s", err->message);
    return store_fail(err, STORE_E_DB, "transaction failed after %d attempts: %s", PG_TX_ATTEMPTS,
                      first);
}

/* ---- schema and migrations ---------------------------------------------- */

/* Migration i (0-based) brings the schema from version i to i+1. Append new
 * steps; never edit a released one. Each runs inside the transaction that
 * holds the migration lock. PostgreSQL's versions are its own (the backend
 * started with the schema SQLite had reached at version 5). */
static const char *const MIGRATIONS[] = {
    /* 1: initial schema */
    "CREATE TABLE vms ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  vmid INTEGER NOT NULL,"
    "  os TEXT NOT NULL DEFAULT '',"
    "  name TEXT NOT NULL DEFAULT '',"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  node TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL CHECK (state IN"
    "    ('creating', 'enabled', 'failed', 'deleting', 'deleted', 'lost')),"
    "  power TEXT NOT NULL DEFAULT 'unknown',"
    "  cores INTEGER NOT NULL DEFAULT 0,"
    "  memory_mb BIGINT NOT NULL DEFAULT 0,"
    "  disk_gb BIGINT NOT NULL DEFAULT 0,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '',"
    "  pending TEXT,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL"
    ");"
    "CREATE INDEX vms_vmid ON vms (vmid);"
    /* At most one live record per VMID; gone records stay for audit. */
    "CREATE UNIQUE INDEX vms_live_vmid ON vms (vmid)"
    "  WHERE state NOT IN ('deleted', 'failed', 'lost');"
    "CREATE INDEX vms_owner ON vms (owner, id);"
    "CREATE INDEX vms_node ON vms (node, id);"
    "CREATE INDEX vms_os ON vms (os, id);"
    "CREATE INDEX vms_state ON vms (state, id);"
    ""
    "CREATE TABLE jobs ("
    "  id TEXT PRIMARY KEY,"
    "  seq BIGSERIAL NOT NULL," /* insertion order, for ties on created_at */
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
    "  lease_until BIGINT NOT NULL DEFAULT 0,"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL,"
    "  finished_at BIGINT NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX jobs_active ON jobs (created_at, seq) WHERE state IN ('queued', 'running');"
    "CREATE INDEX jobs_vmid_active ON jobs (vmid, created_at)"
    "  WHERE state IN ('queued', 'running');"
    "CREATE INDEX jobs_kind_state ON jobs (kind, state);"
    ""
    "CREATE TABLE job_events ("
    "  job TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  seq BIGINT NOT NULL,"
    "  ts BIGINT NOT NULL,"
    "  step TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  message TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (job, seq)"
    ");"
    ""
    "CREATE TABLE vmid_alloc ("
    "  vmid INTEGER PRIMARY KEY,"
    "  state TEXT NOT NULL CHECK (state IN ('reserved', 'used', 'foreign', 'quarantine')),"
    "  job TEXT NOT NULL DEFAULT '',"
    "  until BIGINT NOT NULL DEFAULT 0," /* quarantine end, unix ms */
    "  updated_at BIGINT NOT NULL"
    ");"
    ""
    "CREATE TABLE capacity ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  mem BIGINT NOT NULL,"
    "  disk BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  settled_at BIGINT"
    ");"
    "CREATE INDEX capacity_node ON capacity (node);"
    ""
    "CREATE TABLE idem ("
    "  owner TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  answer TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  PRIMARY KEY (owner, key)"
    ");"
    ""
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  owner TEXT NOT NULL,"
    "  role TEXT NOT NULL CHECK (role IN ('admin', 'user')),"
    "  hash TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE kv ("
    "  name TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL"
    ");"
    ""
    "CREATE TABLE clone_slots ("
    "  job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    "  node TEXT NOT NULL,"
    "  taken_at BIGINT NOT NULL"
    ");"
    "CREATE INDEX clone_slots_node ON clone_slots (node);",
    /* 2: half-made VMs of creations, left for the reconciler to remove */
    "CREATE TABLE leftovers ("
    "  vmid INTEGER NOT NULL,"
    "  node TEXT NOT NULL,"
    "  job TEXT NOT NULL DEFAULT '',"
    "  created_at BIGINT NOT NULL,"
    "  PRIMARY KEY (vmid, node)"
    ");",
};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

static const char SQL_VERSION_TABLE[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "  version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)";
static const char SQL_MIGRATE_LOCK[] = "SELECT pg_advisory_xact_lock($1::int, 0)";
static const char SQL_VERSION_GET[] = "SELECT coalesce(max(version), 0) FROM schema_version";
static const char SQL_VERSION_ADD[] = "INSERT INTO schema_version (version, applied_at) "
                                      "VALUES ($1, $2)";

/* Under the migration lock: a second process starting at the same time
 * waits, then finds the schema current and applies nothing. */
static int migrate_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    (void)ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, PG_LOCK_NS + PG_LOCK_MIGRATE);
    int rc = q(c, SQL_MIGRATE_LOCK, &p, NULL, err, "taking the migration lock");
    pa_free(&p);
    if (rc)
        goto out;
    rc = simple(c, SQL_VERSION_TABLE, err, "creating schema_version");
    if (rc)
        goto out;
    rc = q(c, SQL_VERSION_GET, NULL, &res, err, "reading schema_version");
    if (rc)
        goto out;
    int version = (int)ci64(res, 0, 0);
    if (version > NMIGRATIONS) {
        rc = store_fail(err, STORE_E_INVALID,
                        "database schema version %d is newer than this proxd knows (%d)", version,
                        NMIGRATIONS);
        goto out;
    }
    for (int v = version; v < NMIGRATIONS; v++) {
        char what[64];
        snprintf(what, sizeof what, "schema migration %d", v + 1);
        rc = simple(c, MIGRATIONS[v], err, what);
        if (rc)
            goto out;
        pa_i64(&p, v + 1);
        pa_i64(&p, wall_ms());
        rc = q(c, SQL_VERSION_ADD, &p, NULL, err, "recording schema version");
        pa_free(&p);
        if (rc)
            goto out;
    }
out:
    PQclear(res);
    return rc;
}

/* ---- VM records ------------------------------------------------------------ */

#define VM_COLS                                                                                    \
    "id, vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, job, error, "       \
    "pending, created_at, updated_at"
#define GONE_STATES "('deleted', 'failed', 'lost')"

static int row_to_vm(const PGresult *res, int row, struct vm_rec *r, struct store_error *err)
{
    r->pending = NULL;
    r->id = ci64(res, row, 0);
    r->vmid = (int)ci64(res, row, 1);
    COL_FIELD(res, row, 2, r->os);
    COL_FIELD(res, row, 3, r->name);
    COL_FIELD(res, row, 4, r->owner);
    COL_FIELD(res, row, 5, r->node);
    const char *state = cv(res, row, 6);
    int sv = vm_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in vms id %lld", state ? state : "",
                          (long long)r->id);
    r->state = (enum vm_state)sv;
    COL_FIELD(res, row, 7, r->power);
    r->cores = (int)ci64(res, row, 8);
    r->memory_mb = ci64(res, row, 9);
    r->disk_gb = ci64(res, row, 10);
    COL_FIELD(res, row, 11, r->job);
    COL_FIELD(res, row, 12, r->error);
    r->created_at = ci64(res, row, 14);
    r->updated_at = ci64(res, row, 15);
    return store_json_load(cv(res, row, 13), &r->pending, "vms.pending", err);
}

/* The mutable fields as $2..$14 (shared by insert and update). */
static void pa_vm_fields(struct pa *p, const struct vm_rec *r, int64_t now)
{
    PA_FIELD(p, r->os);
    PA_FIELD(p, r->name);
    PA_FIELD(p, r->owner);
    PA_FIELD(p, r->node);
    pa_str(p, vm_state_name(r->state));
    PA_FIELD(p, r->power);
    pa_i64(p, r->cores);
    pa_i64(p, r->memory_mb);
    pa_i64(p, r->disk_gb);
    PA_FIELD(p, r->job);
    PA_FIELD(p, r->error);
    pa_json(p, r->pending);
    pa_i64(p, now);
}

static const char SQL_VM_INSERT[] =
    "INSERT INTO vms (vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, "
    "job, error, pending, updated_at, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id";

static int vm_insert_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct vm_rec *r = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    int64_t created = r->created_at ? r->created_at : now;
    pa_i64(&p, r->vmid);
    pa_vm_fields(&p, r, now);
    pa_i64(&p, created);
    int rc = q(c, SQL_VM_INSERT, &p, &res, err, "inserting VM record");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d already has a live VM record", r->vmid);
    if (rc)
        goto out;
    r->id = ci64(res, 0, 0);
    r->created_at = created;
    r->updated_at = now;
out:
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vm_insert(store *s, struct vm_rec *r, struct store_error *err)
{
    return tx(PG(s), TX_WRITE, vm_insert_fn, r, err);
}

static const char SQL_VM_UPDATE[] =
    "UPDATE vms SET os = $2, name = $3, owner = $4, node = $5, state = $6, power = $7, "
    "cores = $8, memory_mb = $9, disk_gb = $10, job = $11, error = $12, pending = $13, "
    "updated_at = $14 WHERE id = $1";

static int vm_update_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    const struct vm_rec *r = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, r->id);
    pa_vm_fields(&p, r, wall_ms());
    int rc = q(c, SQL_VM_UPDATE, &p, &res, err, "updating VM record");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d already has another live VM record",
                        r->vmid);
    else if (rc == STORE_OK && changes(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)r->id);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vm_update(store *s, const struct vm_rec *r, struct store_error *err)
{
    return tx(PG(s), TX_WRITE, vm_update_fn, (void *)r, err);
}

struct vm_get_ctx {
    const char *sql;
    int64_t key;
    struct vm_rec *out;
};

static const char SQL_VM_GET[] =
    "SELECT " VM_COLS " FROM vms WHERE vmid = $1 AND state NOT IN " GONE_STATES;
static const char SQL_VM_GET_ID[] = "SELECT " VM_COLS " FROM vms WHERE id = $1";

static int vm_get_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct vm_get_ctx *g = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    vm_rec_release(g->out);
    pa_i64(&p, g->key);
    int rc = q(c, g->sql, &p, &res, err, "reading VM record");
    if (rc)
        goto out;
    if (PQntuples(res) == 0) {
        rc = store_fail(err, STORE_E_NOTFOUND,
                        g->sql == SQL_VM_GET ? "no live VM record for VMID %lld"
                                             : "no VM record with id %lld",
                        (long long)g->key);
        goto out;
    }
    rc = row_to_vm(res, 0, g->out, err);
out:
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err)
{
    struct vm_get_ctx g = {SQL_VM_GET, vmid, out};
    int rc = tx(PG(s), TX_READ, vm_get_fn, &g, err);
    if (rc)
        vm_rec_release(out);
    return rc;
}

static int pg_vm_get_id(store *s, int64_t id, struct vm_rec *out, struct store_error *err)
{
    struct vm_get_ctx g = {SQL_VM_GET_ID, id, out};
    int rc = tx(PG(s), TX_READ, vm_get_fn, &g, err);
    if (rc)
        vm_rec_release(out);
    return rc;
}

/* Listing: one statement per combination of the filters given (owner,
 * node, os, and the state condition), so that no row pays for conditions
 * that were not asked for and the planner sees plain equalities it can
 * serve from the (column, id) indexes in id order. Parameters are numbered
 * in the order: after_id, owner, node, os, state (those given), limit. */
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
        int mask = i % 8, cond = i / 8, n = 1;
        char where[256] = "";
        size_t len = 0;
        if (mask & VM_LIST_OWNER)
            len += (size_t)snprintf(where + len, sizeof where - len, " AND owner = $%d", ++n);
        if (mask & VM_LIST_NODE)
            len += (size_t)snprintf(where + len, sizeof where - len, " AND node = $%d", ++n);
        if (mask & VM_LIST_OS)
            len += (size_t)snprintf(where + len, sizeof where - len, " AND os = $%d", ++n);
        if (cond == VM_LIST_STATE)
            len += (size_t)snprintf(where + len, sizeof where - len, " AND state = $%d", ++n);
        else if (cond == VM_LIST_LIVE)
            snprintf(where + len, sizeof where - len, " AND state NOT IN " GONE_STATES);
        snprintf(vm_list_sql_text[i], VM_LIST_SQL_MAX,
                 "SELECT " VM_COLS " FROM vms WHERE id > $1%s ORDER BY id LIMIT $%d", where, n + 1);
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

static int vm_scan_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct vm_scan_ctx *l = ctx;
    const struct vm_filter *f = l->f;
    PGresult *res = NULL;
    struct pa p = {0};
    struct vm_rec r = {0};
    int limit = f->limit == 0 ? STORE_LIST_DEFAULT : f->limit;
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    if (l->started)
        l->fn(l->ctx, NULL); /* a retried attempt starts over */
    l->started = true;
    pa_i64(&p, f->after_id);
    if (f->owner)
        pa_str(&p, f->owner);
    if (f->node)
        pa_str(&p, f->node);
    if (f->os)
        pa_str(&p, f->os);
    if (f->state >= 0)
        pa_str(&p, vm_state_name((enum vm_state)f->state));
    pa_i64(&p, limit);
    int rc = q(c, vm_list_sql(f), &p, &res, err, "listing VM records");
    if (rc)
        goto out;
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        rc = row_to_vm(res, i, &r, err);
        if (rc)
            break;
        int stop = l->fn(l->ctx, &r);
        vm_rec_release(&r);
        if (stop)
            break;
    }
out:
    vm_rec_release(&r);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vm_scan(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                      struct store_error *err)
{
    struct vm_scan_ctx l = {f, fn, ctx, false};
    return tx(PG(s), TX_READ, vm_scan_fn, &l, err);
}

/* ---- jobs ----------------------------------------------------------------- */

#define JOB_COLS                                                                                   \
    "id, kind, state, vmid, owner, step, node, upid, progress, request, attempts, error, "         \
    "lease_owner, lease_until, created_at, updated_at, finished_at"
#define ACTIVE_STATES "('queued', 'running')"

static int row_to_job(const PGresult *res, int row, struct job_rec *j, struct store_error *err)
{
    memset(j, 0, sizeof *j);
    COL_FIELD(res, row, 0, j->id);
    COL_FIELD(res, row, 1, j->kind);
    const char *state = cv(res, row, 2);
    int sv = job_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in job %s", state ? state : "",
                          j->id);
    j->state = (enum job_state)sv;
    j->vmid = (int)ci64(res, row, 3);
    COL_FIELD(res, row, 4, j->owner);
    COL_FIELD(res, row, 5, j->step);
    COL_FIELD(res, row, 6, j->node);
    COL_FIELD(res, row, 7, j->upid);
    j->progress = (int)ci64(res, row, 8);
    COL_FIELD(res, row, 11, j->error);
    COL_FIELD(res, row, 12, j->lease_owner);
    j->lease_until = ci64(res, row, 13);
    j->created_at = ci64(res, row, 14);
    j->updated_at = ci64(res, row, 15);
    j->finished_at = ci64(res, row, 16);
    int rc = store_json_load(cv(res, row, 9), &j->request, "jobs.request", err);
    if (rc == STORE_OK)
        rc = store_json_load(cv(res, row, 10), &j->attempts, "jobs.attempts", err);
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

static const char SQL_JOB_INSERT[] = "INSERT INTO jobs (" JOB_COLS ") VALUES ($1, $2, $3, $4, $5, "
                                     "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

static int job_insert_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct job_rec *j = ctx;
    struct pa p = {0};
    int64_t now = wall_ms();
    int64_t created = j->created_at ? j->created_at : now;
    PA_FIELD(&p, j->id);
    PA_FIELD(&p, j->kind);
    pa_str(&p, job_state_name(j->state));
    pa_i64(&p, j->vmid);
    PA_FIELD(&p, j->owner);
    PA_FIELD(&p, j->step);
    PA_FIELD(&p, j->node);
    PA_FIELD(&p, j->upid);
    pa_i64(&p, j->progress);
    pa_json(&p, j->request);
    pa_json(&p, j->attempts);
    PA_FIELD(&p, j->error);
    PA_FIELD(&p, j->lease_owner);
    pa_i64(&p, j->lease_until);
    pa_i64(&p, created);
    pa_i64(&p, now);
    pa_i64(&p, job_finished_at(j, now));
    int rc = q(c, SQL_JOB_INSERT, &p, NULL, err, "inserting job");
    pa_free(&p);
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "job %.*s exists already", (int)FIELD_LEN(j->id),
                        j->id);
    if (rc)
        return rc;
    j->created_at = created;
    j->updated_at = now;
    j->finished_at = job_finished_at(j, now);
    return STORE_OK;
}

static int pg_job_insert(store *s, struct job_rec *j, struct store_error *err)
{
    return tx(PG(s), TX_WRITE, job_insert_fn, j, err);
}

static const char SQL_JOB_LEASE_OF[] = "SELECT state, lease_owner FROM jobs WHERE id = $1";

/* After an UPDATE matched no row: say whether the job is missing or held by
 * someone else (or no longer running). */
static int job_why_not(struct pg_conn *c, const char *id, const char *owner,
                       struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, id);
    int rc = q(c, SQL_JOB_LEASE_OF, &p, &res, err, "reading job lease");
    if (rc)
        goto out;
    if (PQntuples(res) == 0) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", id);
        goto out;
    }
    const char *state = cv(res, 0, 0);
    const char *holder = cv(res, 0, 1);
    if (holder && strcmp(holder, owner) != 0)
        rc = store_fail(err, STORE_E_CONFLICT, "job %s is leased by '%s', not '%s'", id, holder,
                        owner);
    else
        rc =
            store_fail(err, STORE_E_CONFLICT, "job %s is %s, not running", id, state ? state : "?");
out:
    pa_free(&p);
    PQclear(res);
    return rc;
}

/* kind, owner, request and created_at are not rewritten; with a lease
 * owner in the record, the update applies only while it holds the lease. */
static const char SQL_JOB_UPDATE[] =
    "UPDATE jobs SET state = $2, vmid = $3, step = $4, node = $5, upid = $6, progress = $7, "
    "attempts = $8, error = $9, updated_at = $10, finished_at = $11 "
    "WHERE id = $1 AND ($12::text = '' OR lease_owner = $12::text)";

static int job_update_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    const struct job_rec *j = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    PA_FIELD(&p, j->id);
    pa_str(&p, job_state_name(j->state));
    pa_i64(&p, j->vmid);
    PA_FIELD(&p, j->step);
    PA_FIELD(&p, j->node);
    PA_FIELD(&p, j->upid);
    pa_i64(&p, j->progress);
    pa_json(&p, j->attempts);
    PA_FIELD(&p, j->error);
    pa_i64(&p, now);
    pa_i64(&p, job_finished_at(j, now));
    PA_FIELD(&p, j->lease_owner);
    int rc = q(c, SQL_JOB_UPDATE, &p, &res, err, "updating job");
    if (rc == STORE_OK && changes(res) == 0)
        rc = job_why_not(c, p.v[0], p.v[11], err);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_update(store *s, const struct job_rec *j, struct store_error *err)
{
    return tx(PG(s), TX_WRITE, job_update_fn, (void *)j, err);
}

struct checkpoint_ctx {
    const struct job_rec *j;
    const char *event;
};

struct event_add_ctx {
    const char *job, *step, *message;
    int progress;
};
static int event_add_fn(struct pg_conn *c, void *ctx, struct store_error *err);

static int checkpoint_fn(struct pg_conn *c, void *ctx, struct store_error *err)
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

static int pg_job_checkpoint(store *s, const struct job_rec *j, const char *event,
                             struct store_error *err)
{
    struct checkpoint_ctx k = {j, event};
    return tx(PG(s), TX_WRITE, checkpoint_fn, &k, err);
}

static const char SQL_JOB_GET[] = "SELECT " JOB_COLS " FROM jobs WHERE id = $1";

struct job_get_ctx {
    const char *id;
    struct job_rec *out;
};

static int job_get_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct job_get_ctx *g = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    job_rec_release(g->out);
    pa_str(&p, g->id);
    int rc = q(c, SQL_JOB_GET, &p, &res, err, "reading job");
    if (rc == STORE_OK && PQntuples(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", g->id);
    if (rc == STORE_OK)
        rc = row_to_job(res, 0, g->out, err);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err)
{
    struct job_get_ctx g = {id, out};
    int rc = tx(PG(s), TX_READ, job_get_fn, &g, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

/* The oldest claimable job: queued, or running with an expired lease. A job
 * with a VMID is skipped while another unfinished job of that VMID holds a
 * live lease or is older, so a VM's jobs run one at a time, in creation
 * order (ties on created_at: insertion order, seq). The row is locked with
 * SKIP LOCKED: a job another claimer is taking is passed over, not waited
 * for, and since only the oldest job of a VMID qualifies, the next one of
 * the same VM is never picked instead. NO KEY UPDATE: rows that refer to
 * the job (events, reservations, slots, which take KEY SHARE locks) do not
 * make it look taken. */
static const char SQL_JOB_PICK[] =
    "SELECT j.id FROM jobs j"
    " WHERE j.state IN " ACTIVE_STATES " AND (j.state = 'queued' OR j.lease_until < $1)"
    " AND (j.vmid = 0 OR NOT EXISTS (SELECT 1 FROM jobs k"
    "   WHERE k.vmid = j.vmid AND k.state IN " ACTIVE_STATES " AND k.id <> j.id"
    "   AND ((k.state = 'running' AND k.lease_until >= $1)"
    "        OR k.created_at < j.created_at"
    "        OR (k.created_at = j.created_at AND k.seq < j.seq))))"
    " ORDER BY j.created_at, j.seq LIMIT 1 FOR NO KEY UPDATE OF j SKIP LOCKED";
static const char SQL_JOB_TAKE[] =
    "UPDATE jobs SET state = 'running', lease_owner = $2, lease_until = $3, updated_at = $4"
    " WHERE id = $1 RETURNING " JOB_COLS;

struct job_claim_ctx {
    const char *owner;
    int64_t lease_ms;
    struct job_rec *out;
};

static int job_claim_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct job_claim_ctx *cl = ctx;
    PGresult *pick = NULL, *take = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    job_rec_release(cl->out);
    pa_i64(&p, now);
    int rc = q(c, SQL_JOB_PICK, &p, &pick, err, "picking a job");
    pa_free(&p);
    if (rc)
        goto out;
    if (PQntuples(pick) == 0) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no claimable job");
        goto out;
    }
    pa_str(&p, cv(pick, 0, 0));
    pa_str(&p, cl->owner);
    pa_i64(&p, now + cl->lease_ms);
    pa_i64(&p, now);
    rc = q(c, SQL_JOB_TAKE, &p, &take, err, "claiming a job");
    if (rc)
        goto out;
    if (PQntuples(take) == 0) { /* we hold the row lock */
        rc = store_fail(err, STORE_E_DB, "job %s vanished while claiming it", cv(pick, 0, 0));
        goto out;
    }
    rc = row_to_job(take, 0, cl->out, err);
out:
    pa_free(&p);
    PQclear(pick);
    PQclear(take);
    return rc;
}

static int pg_job_claim(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                        struct store_error *err)
{
    struct job_claim_ctx cl = {owner, lease_ms, out};
    int rc = tx(PG(s), TX_WRITE, job_claim_fn, &cl, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

static const char SQL_JOB_RENEW[] = "UPDATE jobs SET lease_until = $3, updated_at = $4"
                                    " WHERE id = $1 AND lease_owner = $2 AND state = 'running'";

struct job_renew_ctx {
    const char *id, *owner;
    int64_t lease_ms;
};

static int job_renew_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct job_renew_ctx *r = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    pa_str(&p, r->id);
    pa_str(&p, r->owner);
    pa_i64(&p, now + r->lease_ms);
    pa_i64(&p, now);
    int rc = q(c, SQL_JOB_RENEW, &p, &res, err, "renewing job lease");
    if (rc == STORE_OK && changes(res) == 0)
        rc = job_why_not(c, r->id, r->owner, err);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_renew(store *s, const char *id, const char *owner, int64_t lease_ms,
                        struct store_error *err)
{
    struct job_renew_ctx r = {id, owner, lease_ms};
    return tx(PG(s), TX_WRITE, job_renew_fn, &r, err);
}

/* ---- leases of dead runners ------------------------------------------- */

static const char SQL_JOB_OWNERS[] =
    "SELECT DISTINCT lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL"
    " AND lease_owner <> '' LIMIT $1";

struct owners_ctx {
    char (*out)[64];
    size_t max, n;
};

static int job_owners_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct owners_ctx *o = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, (int64_t)o->max);
    o->n = 0;
    int rc = q(c, SQL_JOB_OWNERS, &p, &res, err, "listing lease owners");
    for (int i = 0; rc == STORE_OK && i < PQntuples(res) && o->n < o->max; i++) {
        const char *v = cv(res, i, 0);
        snprintf(o->out[o->n++], 64, "%s", v ? v : "");
    }
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_lease_owners(store *s, char (*owners)[64], size_t max, size_t *n,
                               struct store_error *err)
{
    struct owners_ctx o = {owners, max, 0};
    int rc = tx(PG(s), TX_READ, job_owners_fn, &o, err);
    *n = rc ? 0 : o.n;
    return rc;
}

static const char SQL_JOB_EXPIRE[] =
    "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND lease_owner = $1";

static int job_expire_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct pa p = {0};
    pa_str(&p, ctx);
    int rc = q(c, SQL_JOB_EXPIRE, &p, NULL, err, "expiring leases");
    pa_free(&p);
    return rc;
}

static int pg_job_expire_owner(store *s, const char *owner, struct store_error *err)
{
    return tx(PG(s), TX_WRITE, job_expire_fn, (void *)owner, err);
}

static const char SQL_JOB_COUNT[] = "SELECT count(*) FROM jobs WHERE state IN " ACTIVE_STATES
                                    " AND ($1::text IS NULL OR kind = $1::text)";

struct count_ctx {
    const char *kind;
    int *n;
};

static int job_count_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct count_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->kind);
    int rc = q(c, SQL_JOB_COUNT, &p, &res, err, "counting jobs");
    if (rc == STORE_OK)
        *k->n = (int)ci64(res, 0, 0);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_count_active(store *s, const char *kind, int *n, struct store_error *err)
{
    struct count_ctx k = {kind, n};
    return tx(PG(s), TX_READ, job_count_fn, &k, err);
}

/* seq is per job, 1, 2, ...: computed in the statement, under the job's
 * event lock, so two writers cannot both take the same next number. */
static const char SQL_EVENT_ADD[] =
    "INSERT INTO job_events (job, seq, ts, step, progress, message)"
    " SELECT $1::text, coalesce(max(seq), 0) + 1, $2, $3, $4, $5 FROM job_events"
    " WHERE job = $1::text";

static int event_add_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct event_add_ctx *e = ctx;
    int rc = xlock(c, PG_LOCK_EVENTS, e->job, err);
    if (rc)
        return rc;
    struct pa p = {0};
    pa_str(&p, e->job);
    pa_i64(&p, wall_ms());
    pa_str(&p, e->step);
    pa_i64(&p, e->progress);
    pa_str(&p, e->message);
    rc = q(c, SQL_EVENT_ADD, &p, NULL, err, "adding job event");
    pa_free(&p);
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", e->job);
    return rc;
}

static int pg_job_event_add(store *s, const char *job, const char *step, int progress,
                            const char *message, struct store_error *err)
{
    struct event_add_ctx e = {job, step, message, progress};
    return tx(PG(s), TX_WRITE, event_add_fn, &e, err);
}

static const char SQL_EVENTS[] = "SELECT seq, ts, step, progress, message FROM job_events"
                                 " WHERE job = $1 AND seq > $2 ORDER BY seq";

struct events_ctx {
    const char *job;
    int64_t after;
    struct job_event *v;
    size_t n;
};

static int events_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct events_ctx *e = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    FREE_AND_NULL(e->v);
    e->n = 0;
    pa_str(&p, e->job);
    pa_i64(&p, e->after);
    int rc = q(c, SQL_EVENTS, &p, &res, err, "reading job events");
    int rows = rc ? 0 : PQntuples(res);
    if (rows > 0)
        e->v = xcalloc((size_t)rows, sizeof *e->v);
    for (int i = 0; i < rows; i++) {
        struct job_event *ev = &e->v[e->n++];
        ev->seq = ci64(res, i, 0);
        ev->ts = ci64(res, i, 1);
        COL_FIELD(res, i, 2, ev->step);
        ev->progress = (int)ci64(res, i, 3);
        COL_FIELD(res, i, 4, ev->message);
    }
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_job_events(store *s, const char *job, int64_t after, struct job_event **out,
                         size_t *n, struct store_error *err)
{
    struct events_ctx e = {job, after, NULL, 0};
    int rc = tx(PG(s), TX_READ, events_fn, &e, err);
    if (rc == STORE_OK) {
        *out = e.v;
        *n = e.n;
    } else {
        free(e.v);
    }
    return rc;
}

/* ---- VMID allocation -------------------------------------------------------- */

/* The allocated IDs of a range, ascending: every row except quarantines
 * that have run out (those count as free and are taken over in place). */
static const char SQL_VMID_ALLOCATED[] =
    "SELECT vmid FROM vmid_alloc WHERE vmid BETWEEN $1 AND $2"
    " AND NOT (state = 'quarantine' AND until <= $3) ORDER BY vmid";
static const char SQL_VMID_TAKE[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at)"
    " VALUES ($1, 'reserved', $2, 0, $3)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'reserved', job = excluded.job, until = 0,"
    "   updated_at = excluded.updated_at"
    " WHERE vmid_alloc.state = 'quarantine' AND vmid_alloc.until <= $3";

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
static int first_free(struct pg_conn *c, const struct reserve_ctx *r, const struct vmid_range *rg,
                      int64_t now, int *found_id, struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    int cand = rg->lo;
    *found_id = 0;
    pa_i64(&p, rg->lo);
    pa_i64(&p, rg->hi);
    pa_i64(&p, now);
    int rc = q(c, SQL_VMID_ALLOCATED, &p, &res, err, "reading VMID allocations");
    pa_free(&p);
    if (rc)
        return rc;
    int rows = PQntuples(res);
    for (int i = 0; i <= rows; i++) {
        int next_used = i < rows ? (int)ci64(res, i, 0) : rg->hi + 1;
        for (; cand < next_used; cand++) {
            if (!in_sorted(r->taken, r->ntaken, cand)) {
                *found_id = cand;
                goto out;
            }
        }
        cand = next_used + 1;
    }
out:
    PQclear(res);
    return rc;
}

/* Under the VMID lock: reservations of every process run one at a time, and
 * each sees the IDs the previous ones took. */
static int reserve_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct reserve_ctx *r = ctx;
    PGresult *res = NULL;
    int64_t now = wall_ms();
    int id = 0;
    int rc = xlock(c, PG_LOCK_VMID, "vmid", err);
    for (size_t i = 0; rc == STORE_OK && i < r->nranges && id == 0; i++)
        rc = first_free(c, r, &r->ranges[i], now, &id, err);
    if (rc)
        return rc;
    if (id == 0) {
        struct buf msg = BUF_INIT(sizeof err->message);
        buf_adds(&msg, "no free VMID in ");
        for (size_t i = 0; i < r->nranges; i++)
            buf_printf(&msg, "%s%d-%d", i ? ", " : "", r->ranges[i].lo, r->ranges[i].hi);
        rc = store_fail(err, STORE_E_FULL, "%s", buf_str(&msg));
        buf_release(&msg);
        return rc;
    }
    struct pa p = {0};
    pa_i64(&p, id);
    pa_str(&p, r->job);
    pa_i64(&p, now);
    rc = q(c, SQL_VMID_TAKE, &p, &res, err, "reserving VMID");
    if (rc == STORE_OK && changes(res) != 1) {
        /* marked foreign meanwhile (that write takes no lock): look again */
        store_fail(err, STORE_E_DB, "VMID %d was allocated while reserving it", id);
        rc = PG_RETRY;
    }
    if (rc == STORE_OK)
        *r->vmid = id;
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vmid_reserve(store *s, const struct vmid_range *ranges, size_t nranges,
                           const int *taken, size_t ntaken, const char *job, int *vmid,
                           struct store_error *err)
{
    struct reserve_ctx r = {ranges, nranges, taken, ntaken, job, vmid};
    return tx(PG(s), TX_WRITE, reserve_fn, &r, err);
}

static const char SQL_VMID_STATE[] = "SELECT state FROM vmid_alloc WHERE vmid = $1";
static const char SQL_VMID_USED[] = "UPDATE vmid_alloc SET state = 'used', until = 0,"
                                    " updated_at = $2 WHERE vmid = $1"
                                    " AND state IN ('reserved', 'used')";
static const char SQL_VMID_FOREIGN[] =
    "INSERT INTO vmid_alloc (vmid, state, job, until, updated_at) VALUES ($1, 'foreign', '', 0, $2)"
    " ON CONFLICT (vmid) DO UPDATE SET state = 'foreign', job = '', until = 0,"
    "   updated_at = excluded.updated_at";
static const char SQL_VMID_FREE[] = "DELETE FROM vmid_alloc WHERE vmid = $1";
static const char SQL_VMID_QUARANTINE[] = "UPDATE vmid_alloc SET state = 'quarantine', job = '',"
                                          " until = $2, updated_at = $3 WHERE vmid = $1";

struct vmid_ctx {
    const char *sql; /* one of the SQL_VMID_* writes above */
    int vmid;
    int64_t quarantine_ms;
};

/* After mark_used matched nothing: missing, or in a state that is not ours. */
static int vmid_why_not(struct pg_conn *c, int vmid, struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, vmid);
    int rc = q(c, SQL_VMID_STATE, &p, &res, err, "reading VMID state");
    if (rc == STORE_OK && PQntuples(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", vmid);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d is %s, not reserved", vmid, cv(res, 0, 0));
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int vmid_write_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_ctx *v = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    pa_i64(&p, v->vmid);
    if (v->sql == SQL_VMID_QUARANTINE) {
        pa_i64(&p, now + v->quarantine_ms);
        pa_i64(&p, now);
    } else if (v->sql != SQL_VMID_FREE) {
        pa_i64(&p, now);
    }
    int rc = q(c, v->sql, &p, &res, err, "writing VMID allocation");
    if (rc || changes(res) > 0)
        goto out;
    if (v->sql == SQL_VMID_USED)
        rc = vmid_why_not(c, v->vmid, err);
    else
        rc = store_fail(err, STORE_E_NOTFOUND, "VMID %d is not allocated", v->vmid);
out:
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vmid_mark_used(store *s, int vmid, struct store_error *err)
{
    struct vmid_ctx v = {SQL_VMID_USED, vmid, 0};
    return tx(PG(s), TX_WRITE, vmid_write_fn, &v, err);
}

static int pg_vmid_mark_foreign(store *s, int vmid, struct store_error *err)
{
    struct vmid_ctx v = {SQL_VMID_FOREIGN, vmid, 0};
    return tx(PG(s), TX_WRITE, vmid_write_fn, &v, err);
}

static int pg_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    struct vmid_ctx v = {quarantine_ms ? SQL_VMID_QUARANTINE : SQL_VMID_FREE, vmid, quarantine_ms};
    return tx(PG(s), TX_WRITE, vmid_write_fn, &v, err);
}

static const char SQL_VMID_COUNT[] = "SELECT count(*) FROM vmid_alloc WHERE vmid BETWEEN $1 AND $2"
                                     " AND NOT (state = 'quarantine' AND until <= $3)";

struct vmid_count_ctx {
    int lo, hi, *n;
};

static int vmid_count_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct vmid_count_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, k->lo);
    pa_i64(&p, k->hi);
    pa_i64(&p, wall_ms());
    int rc = q(c, SQL_VMID_COUNT, &p, &res, err, "counting VMIDs");
    if (rc == STORE_OK)
        *k->n = (int)ci64(res, 0, 0);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_vmid_count(store *s, int lo, int hi, int *n, struct store_error *err)
{
    struct vmid_count_ctx k = {lo, hi, n};
    return tx(PG(s), TX_READ, vmid_count_fn, &k, err);
}

/* ---- capacity ------------------------------------------------------------- */

static const char SQL_CAP_RESERVE[] =
    "INSERT INTO capacity (job, node, mem, disk, created_at) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, mem = excluded.mem,"
    "   disk = excluded.disk, settled_at = NULL";
static const char SQL_CAP_RELEASE[] = "DELETE FROM capacity WHERE job = $1";
static const char SQL_CAP_SETTLE[] = "UPDATE capacity SET settled_at = $2 WHERE job = $1";
static const char SQL_CAP_PRUNE[] = "DELETE FROM capacity WHERE settled_at < $1";
/* In-flight reservations count while their job is active; settled ones
 * until the caller's inventory has caught up with them. */
static const char SQL_CAP_SUM[] =
    "SELECT coalesce(sum(mem), 0), coalesce(sum(disk), 0) FROM capacity"
    " WHERE node = $1 AND ($2::text IS NULL OR job <> $2::text)"
    " AND ((settled_at IS NULL AND job IN (SELECT id FROM jobs WHERE state IN " ACTIVE_STATES "))"
    "   OR settled_at >= $3)";

#define SETTLED_KEEP_MS (3600 * 1000LL)

struct cap_ctx {
    const char *job, *node;
    int64_t mem, disk;
    const struct cap_room *room;
    int64_t since;
};

static int cap_sum_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->node);
    pa_str(&p, k->job);
    pa_i64(&p, k->since);
    int rc = q(c, SQL_CAP_SUM, &p, &res, err, "summing capacity");
    if (rc == STORE_OK) {
        k->mem = ci64(res, 0, 0);
        k->disk = ci64(res, 0, 1);
    }
    pa_free(&p);
    PQclear(res);
    return rc;
}

/* Under the node's capacity lock: does the request fit beside what others
 * hold on the node? */
static int cap_check(struct pg_conn *c, const struct cap_ctx *want, struct store_error *err)
{
    struct cap_ctx held = {want->job, want->node, 0, 0, NULL, want->room->seen_since};
    int rc = cap_sum_fn(c, &held, err);
    if (rc)
        return rc;
    return store_room_check(want->room, held.mem, held.disk, want->mem, want->disk, err);
}

static int cap_reserve_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    int rc = STORE_OK;
    if (k->room && ((rc = xlock(c, PG_LOCK_CAPACITY, k->node, err)) || (rc = cap_check(c, k, err))))
        return rc;
    struct pa p = {0};
    pa_str(&p, k->job);
    pa_str(&p, k->node);
    pa_i64(&p, k->mem);
    pa_i64(&p, k->disk);
    pa_i64(&p, wall_ms());
    rc = q(c, SQL_CAP_RESERVE, &p, NULL, err, "reserving capacity");
    pa_free(&p);
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s to reserve capacity for", k->job);
    return rc;
}

static int pg_reserve_capacity(store *s, const char *job, const char *node, int64_t mem,
                               int64_t disk, const struct cap_room *room, struct store_error *err)
{
    struct cap_ctx k = {job, node, mem, disk, room, 0};
    return tx(PG(s), TX_WRITE, cap_reserve_fn, &k, err);
}

/* One statement with a job id ($1) and optionally a time ($2). */
static int job_stmt(struct pg_conn *c, const char *sql, const char *job, int64_t now,
                    struct store_error *err)
{
    struct pa p = {0};
    pa_str(&p, job);
    if (now)
        pa_i64(&p, now);
    int rc = q(c, sql, &p, NULL, err, "updating a reservation");
    pa_free(&p);
    return rc;
}

static int cap_settle_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    int64_t now = wall_ms();
    int rc = job_stmt(c, SQL_CAP_SETTLE, k->job, now, err);
    if (rc == STORE_OK) {
        struct pa p = {0};
        pa_i64(&p, now - SETTLED_KEEP_MS);
        rc = q(c, SQL_CAP_PRUNE, &p, NULL, err, "pruning settled reservations");
        pa_free(&p);
    }
    return rc;
}

static int pg_settle_capacity(store *s, const char *job, struct store_error *err)
{
    struct cap_ctx k = {.job = job};
    return tx(PG(s), TX_WRITE, cap_settle_fn, &k, err);
}

static int cap_release_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct cap_ctx *k = ctx;
    return job_stmt(c, SQL_CAP_RELEASE, k->job, 0, err);
}

static int pg_release_capacity(store *s, const char *job, struct store_error *err)
{
    struct cap_ctx k = {.job = job};
    return tx(PG(s), TX_WRITE, cap_release_fn, &k, err);
}

static int pg_reserved_on(store *s, const char *node, const char *except_job, int64_t seen_since,
                          int64_t *mem, int64_t *disk, struct store_error *err)
{
    struct cap_ctx k = {except_job, node, 0, 0, NULL, seen_since};
    int rc = tx(PG(s), TX_READ, cap_sum_fn, &k, err);
    if (rc == STORE_OK) {
        *mem = k.mem;
        *disk = k.disk;
    }
    return rc;
}

/* ---- idempotency ------------------------------------------------------------ */

/* A concurrent insert of the same key waits for the first to commit, then
 * does nothing; the SELECT after it (a new snapshot) sees the first's row. */
static const char SQL_IDEM_PUT[] = "INSERT INTO idem (owner, key, answer, created_at)"
                                   " VALUES ($1, $2, $3, $4) ON CONFLICT (owner, key) DO NOTHING";
static const char SQL_IDEM_GET[] = "SELECT answer FROM idem WHERE owner = $1 AND key = $2";

struct idem_ctx {
    const char *owner, *key;
    json_t *answer;
    json_t *existing; /* owned until handed over */
};

static int idem_read(struct pg_conn *c, struct idem_ctx *k, bool *found, struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->owner);
    pa_str(&p, k->key);
    int rc = q(c, SQL_IDEM_GET, &p, &res, err, "reading idempotency key");
    *found = rc == STORE_OK && PQntuples(res) > 0;
    if (*found)
        rc = store_json_load(cv(res, 0, 0), &k->existing, "idem.answer", err);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int idem_put_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    json_decref(k->existing);
    k->existing = NULL;
    pa_str(&p, k->owner);
    pa_str(&p, k->key);
    pa_json(&p, k->answer);
    pa_i64(&p, wall_ms());
    int rc = q(c, SQL_IDEM_PUT, &p, &res, err, "storing idempotency key");
    pa_free(&p);
    if (rc || changes(res) == 1)
        goto out;
    bool found = false;
    rc = idem_read(c, k, &found, err);
    if (rc == STORE_OK && !found) { /* deleted in between: try again */
        store_fail(err, STORE_E_DB, "idempotency key '%s' vanished", k->key);
        rc = PG_RETRY;
    } else if (rc == STORE_OK) {
        rc = store_fail(err, STORE_E_CONFLICT, "idempotency key '%s' was used already", k->key);
    }
out:
    PQclear(res);
    return rc;
}

static int pg_idem_put(store *s, const char *owner, const char *key, json_t *answer,
                       json_t **existing, struct store_error *err)
{
    struct idem_ctx k = {owner, key, answer, NULL};
    int rc = tx(PG(s), TX_WRITE, idem_put_fn, &k, err);
    if (rc == STORE_E_CONFLICT && existing)
        *existing = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

static int idem_get_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    json_decref(k->existing);
    k->existing = NULL;
    bool found = false;
    int rc = idem_read(c, k, &found, err);
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no idempotency key '%s'", k->key);
    return rc;
}

static int pg_idem_get(store *s, const char *owner, const char *key, json_t **answer,
                       struct store_error *err)
{
    struct idem_ctx k = {owner, key, NULL, NULL};
    int rc = tx(PG(s), TX_READ, idem_get_fn, &k, err);
    if (rc == STORE_OK)
        *answer = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

/* ---- clone slots ----------------------------------------------------------- */

static const char SQL_SLOT_COUNT[] =
    "SELECT count(*) FROM clone_slots s JOIN jobs j ON j.id = s.job"
    " WHERE s.node = $1 AND s.job <> $2 AND j.state = 'running' AND j.lease_until >= $3";
static const char SQL_SLOT_TAKE[] =
    "INSERT INTO clone_slots (job, node, taken_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (job) DO UPDATE SET node = excluded.node, taken_at = excluded.taken_at";
static const char SQL_SLOT_GIVE[] = "DELETE FROM clone_slots WHERE job = $1";

struct slot_ctx {
    const char *job, *node;
    int limit;
};

/* Under the node's slot lock: count and take are one decision. */
static int slot_take_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct slot_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms(), held = 0;
    int rc = xlock(c, PG_LOCK_SLOTS, k->node, err);
    if (rc)
        return rc;
    pa_str(&p, k->node);
    pa_str(&p, k->job);
    pa_i64(&p, now);
    rc = q(c, SQL_SLOT_COUNT, &p, &res, err, "counting clone slots");
    pa_free(&p);
    if (rc == STORE_OK)
        held = ci64(res, 0, 0);
    PQclear(res);
    if (rc)
        return rc;
    if ((rc = store_slots_check(held, k->limit, k->node, err)))
        return rc;
    pa_str(&p, k->job);
    pa_str(&p, k->node);
    pa_i64(&p, now);
    rc = q(c, SQL_SLOT_TAKE, &p, NULL, err, "taking a clone slot");
    pa_free(&p);
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s to take a clone slot for", k->job);
    return rc;
}

static int pg_clone_slot_take(store *s, const char *job, const char *node, int limit,
                              struct store_error *err)
{
    struct slot_ctx k = {job, node, limit};
    return tx(PG(s), TX_WRITE, slot_take_fn, &k, err);
}

static int slot_give_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct slot_ctx *k = ctx;
    return job_stmt(c, SQL_SLOT_GIVE, k->job, 0, err);
}

static int pg_clone_slot_give(store *s, const char *job, struct store_error *err)
{
    struct slot_ctx k = {job, NULL, 0};
    return tx(PG(s), TX_WRITE, slot_give_fn, &k, err);
}

/* ---- leftovers -------------------------------------------------------------- */

static const char SQL_LEFT_ADD[] =
    "INSERT INTO leftovers (vmid, node, job, created_at) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (vmid, node) DO UPDATE SET job = excluded.job";
static const char SQL_LEFT_LIST[] =
    "SELECT vmid, node, job, created_at FROM leftovers ORDER BY created_at, vmid";
static const char SQL_LEFT_DEL[] =
    "DELETE FROM leftovers WHERE vmid = $1 AND node = $2 RETURNING job";
/* the VMID goes back only if its creation still holds it and no other
 * leftover has it (standalone hosts each have their own VMID space) */
static const char SQL_LEFT_RELEASE[] =
    "UPDATE vmid_alloc SET state = 'quarantine', job = '', until = $2, updated_at = $3"
    " WHERE vmid = $1 AND state = 'reserved' AND job = $4"
    " AND NOT EXISTS (SELECT 1 FROM leftovers WHERE vmid = $1)";

struct left_ctx {
    int vmid;
    const char *node, *job;
    int64_t quarantine_ms;
    struct leftover *out;
    size_t n;
};

static int left_add_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    struct pa p = {0};
    pa_i64(&p, k->vmid);
    pa_str(&p, k->node);
    pa_str(&p, k->job);
    pa_i64(&p, wall_ms());
    int rc = q(c, SQL_LEFT_ADD, &p, NULL, err, "recording a leftover");
    pa_free(&p);
    return rc;
}

static int pg_leftover_add(store *s, int vmid, const char *node, const char *job,
                           struct store_error *err)
{
    struct left_ctx k = {.vmid = vmid, .node = node, .job = job};
    return tx(PG(s), TX_WRITE, left_add_fn, &k, err);
}

static int left_list_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    PGresult *res = NULL;
    FREE_AND_NULL(k->out);
    k->n = 0;
    int rc = q(c, SQL_LEFT_LIST, NULL, &res, err, "listing leftovers");
    int rows = rc ? 0 : PQntuples(res);
    if (rows > 0)
        k->out = xcalloc((size_t)rows, sizeof *k->out);
    for (int i = 0; i < rows; i++) {
        struct leftover *l = &k->out[k->n++];
        l->vmid = (int)ci64(res, i, 0);
        COL_FIELD(res, i, 1, l->node);
        COL_FIELD(res, i, 2, l->job);
        l->created_at = ci64(res, i, 3);
    }
    PQclear(res);
    return rc == STORE_E_NOTFOUND ? STORE_OK : rc;
}

static int pg_leftover_list(store *s, struct leftover **out, size_t *n, struct store_error *err)
{
    struct left_ctx k = {0};
    int rc = tx(PG(s), TX_READ, left_list_fn, &k, err);
    if (rc) {
        free(k.out);
        return rc;
    }
    *out = k.out;
    *n = k.n;
    return STORE_OK;
}

static int left_done_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct left_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    int64_t now = wall_ms();
    char job[40] = "";
    pa_i64(&p, k->vmid);
    pa_str(&p, k->node);
    int rc = q(c, SQL_LEFT_DEL, &p, &res, err, "forgetting a leftover");
    pa_free(&p);
    bool found = rc == STORE_OK && PQntuples(res) > 0;
    if (found)
        COL_FIELD(res, 0, 0, job);
    PQclear(res);
    if (rc == STORE_E_NOTFOUND)
        return STORE_OK;
    if (rc || !found)
        return rc;
    pa_i64(&p, k->vmid);
    pa_i64(&p, now + k->quarantine_ms);
    pa_i64(&p, now);
    pa_str(&p, job);
    rc = q(c, SQL_LEFT_RELEASE, &p, NULL, err, "releasing a leftover's VMID");
    pa_free(&p);
    return rc == STORE_E_NOTFOUND ? STORE_OK : rc;
}

static int pg_leftover_done(store *s, int vmid, const char *node, int64_t quarantine_ms,
                            struct store_error *err)
{
    struct left_ctx k = {.vmid = vmid, .node = node, .quarantine_ms = quarantine_ms};
    return tx(PG(s), TX_WRITE, left_done_fn, &k, err);
}

/* ---- a creation's submission ------------------------------------------------ */

/* What an owner's live VMs hold, each counted at the larger of its record
 * and what its queued or running update/resize jobs ask for: a change on
 * its way counts before it lands. Requests are JSON text; a target that is
 * not a number does not count. */
#define TARGET(key, kind)                                                                          \
    "coalesce((SELECT max(CASE WHEN jsonb_typeof(j.request::jsonb -> '" key "') = 'number'"        \
    " THEN (j.request::jsonb ->> '" key "')::numeric END) FROM jobs j"                             \
    " WHERE j.vmid = v.vmid AND j.kind = '" kind "' AND j.state IN ('queued', 'running')), 0)"
static const char SQL_OWNER_USAGE[] = "SELECT count(*), coalesce(sum(greatest(v.cores, " TARGET(
    "cores", "update") ")), 0),"
                       " coalesce(sum(greatest(v.memory_mb, " TARGET(
                           "memory_mb",
                           "update") ")), 0),"
                                     " coalesce(sum(greatest(v.disk_gb, " TARGET(
                                         "disk_gb",
                                         "resize") ")), 0)"
                                                   " FROM vms v WHERE v.owner = $1 AND v.state IN "
                                                   "('creating', 'enabled', 'deleting')";
#undef TARGET

static int owner_usage(struct pg_conn *c, const char *owner, struct store_usage *u,
                       struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, owner);
    int rc = q(c, SQL_OWNER_USAGE, &p, &res, err, "summing the owner's VMs");
    if (rc == STORE_OK) {
        u->vms = (int)ci64(res, 0, 0);
        u->cores = (int)ci64(res, 0, 1);
        u->memory_mb = ci64(res, 0, 2);
        u->disk_gb = ci64(res, 0, 3);
    }
    pa_free(&p);
    PQclear(res);
    return rc;
}

/* Under the owner's quota lock (every decision on one owner's quota, in
 * creations and changes alike, takes it): would the new VM exceed the
 * quota? Fills sub->used. */
static int quota_fn(struct pg_conn *c, struct store_submit *sub, struct store_error *err)
{
    char owner[sizeof sub->vm->owner + 1];
    store_copy(owner, sizeof owner, sub->vm->owner, FIELD_LEN(sub->vm->owner));
    int rc = xlock(c, PG_LOCK_QUOTA, owner, err);
    if (rc == STORE_OK)
        rc = owner_usage(c, owner, &sub->used, err);
    if (rc)
        return rc;
    struct store_usage with = sub->used;
    with.vms++;
    with.cores += sub->vm->cores;
    with.memory_mb += sub->vm->memory_mb;
    with.disk_gb += sub->vm->disk_gb;
    return store_quota_check(sub->quota, NULL, &with, owner, err);
}

/* ---- a job on an existing VM ------------------------------------------------ */

struct jsub_ctx {
    struct job_rec *j;
    const char *event;
    const struct store_usage *quota;
    struct store_usage used;
};

static int job_submit_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct jsub_ctx *k = ctx;
    char owner[sizeof k->j->owner + 1];
    store_copy(owner, sizeof owner, k->j->owner, FIELD_LEN(k->j->owner));
    memset(&k->used, 0, sizeof k->used);
    int rc;
    if (k->quota &&
        ((rc = xlock(c, PG_LOCK_QUOTA, owner, err)) || (rc = owner_usage(c, owner, &k->used, err))))
        return rc;
    if ((rc = job_insert_fn(c, k->j, err)))
        return rc;
    if (k->quota) { /* with the job counted: its target is in the sums now */
        struct store_usage with;
        if ((rc = owner_usage(c, owner, &with, err)))
            return rc;
        if ((rc = store_quota_check(k->quota, &k->used, &with, owner, err)))
            return rc;
    }
    struct event_add_ctx e = {k->j->id, k->j->step, k->event, 0};
    return event_add_fn(c, &e, err);
}

/* ---- a job that moves its VM record from one state to another --------------- */

/* Under READ COMMITTED a concurrent mover waits for the row lock, then
 * sees the new state and changes nothing. */
static const char SQL_VM_MOVE[] = "UPDATE vms SET state = $3, job = $4, updated_at = $5"
                                  " WHERE id = $1 AND state = $2";
static const char SQL_VM_STATE_OF[] = "SELECT state FROM vms WHERE id = $1";

struct jmove_ctx {
    struct job_rec *j;
    const char *event;
    int64_t vm_id;
    enum vm_state from, to;
};

/* Why the record did not move: it is gone, or in another state. */
static int vm_move_why_not(struct pg_conn *c, int64_t id, struct store_error *err)
{
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, id);
    int rc = q(c, SQL_VM_STATE_OF, &p, &res, err, "reading the VM record's state");
    if (rc == STORE_OK && PQntuples(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)id);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "the VM record is %s", PQgetvalue(res, 0, 0));
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int job_move_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct jmove_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_i64(&p, k->vm_id);
    pa_str(&p, vm_state_name(k->from));
    pa_str(&p, vm_state_name(k->to));
    PA_FIELD(&p, k->j->id);
    pa_i64(&p, wall_ms());
    int rc = q(c, SQL_VM_MOVE, &p, &res, err, "moving the VM record");
    bool moved = rc == STORE_OK && changes(res) > 0;
    pa_free(&p);
    PQclear(res);
    if (rc)
        return rc;
    if (!moved)
        return vm_move_why_not(c, k->vm_id, err);
    if ((rc = job_insert_fn(c, k->j, err)))
        return rc;
    struct event_add_ctx e = {k->j->id, k->j->step, k->event, 0};
    return event_add_fn(c, &e, err);
}

static int pg_job_submit_move(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                              enum vm_state from, enum vm_state to, struct store_error *err)
{
    struct jmove_ctx k = {j, event, vm_id, from, to};
    return tx(PG(s), TX_WRITE, job_move_fn, &k, err);
}

static int pg_job_submit(store *s, struct job_rec *j, const char *event,
                         const struct store_usage *quota, struct store_usage *used,
                         struct store_error *err)
{
    struct jsub_ctx k = {j, event, quota, {0}};
    int rc = tx(PG(s), TX_WRITE, job_submit_fn, &k, err);
    if (used)
        *used = k.used;
    return rc;
}

/* The key first: when it is taken, nothing else is written. */
static int submit_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct store_submit *sub = ctx;
    int rc = STORE_OK;
    json_decref(sub->first); /* a retry runs this again */
    sub->first = NULL;
    memset(&sub->used, 0, sizeof sub->used);
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

static int pg_create_submit(store *s, struct store_submit *sub, struct store_error *err)
{
    int rc = tx(PG(s), TX_WRITE, submit_fn, sub, err);
    if (rc != STORE_E_CONFLICT) {
        json_decref(sub->first);
        sub->first = NULL;
    }
    return rc;
}

/* ---- shared settings ------------------------------------------------------- */

static const char SQL_KV_PUT[] = "INSERT INTO kv (name, value, created_at) VALUES ($1, $2, $3)"
                                 " ON CONFLICT (name) DO NOTHING";
static const char SQL_KV_GET[] = "SELECT value FROM kv WHERE name = $1";

struct kv_ctx {
    const char *name, *value;
    char *out;
    size_t outlen;
};

static int kv_setdefault_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct kv_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->name);
    pa_str(&p, k->value);
    pa_i64(&p, wall_ms());
    int rc = q(c, SQL_KV_PUT, &p, NULL, err, "storing a setting");
    pa_free(&p);
    if (rc)
        return rc;
    pa_str(&p, k->name);
    rc = q(c, SQL_KV_GET, &p, &res, err, "reading a setting");
    pa_free(&p);
    if (rc == STORE_OK && PQntuples(res) == 0)
        rc = store_fail(err, STORE_E_DB, "setting '%s' vanished", k->name);
    if (rc == STORE_OK)
        ccopy(res, 0, 0, k->out, k->outlen);
    PQclear(res);
    return rc;
}

static int pg_kv_setdefault(store *s, const char *name, const char *value, char *out, size_t outlen,
                            struct store_error *err)
{
    struct kv_ctx k = {name, value, out, outlen};
    return tx(PG(s), TX_WRITE, kv_setdefault_fn, &k, err);
}

/* ---- API tokens -------------------------------------------------------------- */

#define TOKEN_COLS "id, owner, role, hash, created_at, revoked"
static const char SQL_TOKEN_INSERT[] = "INSERT INTO tokens (" TOKEN_COLS ")"
                                       " VALUES ($1, $2, $3, $4, $5, $6)"
                                       " ON CONFLICT (id) DO NOTHING";
static const char SQL_TOKEN_GET[] = "SELECT " TOKEN_COLS " FROM tokens WHERE id = $1";
static const char SQL_TOKEN_LIST[] = "SELECT " TOKEN_COLS " FROM tokens ORDER BY created_at, id";
static const char SQL_TOKEN_REVOKE[] = "UPDATE tokens SET revoked = 1 WHERE id = $1";

static void row_to_token(const PGresult *res, int row, struct token_rec *t)
{
    COL_FIELD(res, row, 0, t->id);
    COL_FIELD(res, row, 1, t->owner);
    COL_FIELD(res, row, 2, t->role);
    COL_FIELD(res, row, 3, t->hash);
    t->created_at = ci64(res, row, 4);
    t->revoked = ci64(res, row, 5) != 0;
}

struct token_ctx {
    const char *id;
    const struct token_rec *in;
    struct token_rec *out; /* get: one record; list: the array */
    size_t n;
};

static int token_insert_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    const struct token_rec *t = ((struct token_ctx *)ctx)->in;
    PGresult *res = NULL;
    struct pa p = {0};
    PA_FIELD(&p, t->id);
    PA_FIELD(&p, t->owner);
    PA_FIELD(&p, t->role);
    PA_FIELD(&p, t->hash);
    pa_i64(&p, t->created_at ? t->created_at : wall_ms());
    pa_i64(&p, t->revoked);
    int rc = q(c, SQL_TOKEN_INSERT, &p, &res, err, "storing a token");
    if (rc == STORE_OK && changes(res) == 0)
        rc = store_fail(err, STORE_E_CONFLICT, "token id '%.32s' exists", p.v[0]);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_token_insert(store *s, const struct token_rec *t, struct store_error *err)
{
    struct token_ctx k = {.in = t};
    return tx(PG(s), TX_WRITE, token_insert_fn, &k, err);
}

static int token_get_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->id);
    int rc = q(c, SQL_TOKEN_GET, &p, &res, err, "reading a token");
    if (rc == STORE_OK && PQntuples(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", k->id);
    if (rc == STORE_OK)
        row_to_token(res, 0, k->out);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_token_get(store *s, const char *id, struct token_rec *out, struct store_error *err)
{
    struct token_ctx k = {.id = id, .out = out};
    return tx(PG(s), TX_READ, token_get_fn, &k, err);
}

static int token_list_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    PGresult *res = NULL;
    FREE_AND_NULL(k->out);
    k->n = 0;
    int rc = q(c, SQL_TOKEN_LIST, NULL, &res, err, "listing tokens");
    int rows = rc ? 0 : PQntuples(res);
    if (rows > 0)
        k->out = xcalloc((size_t)rows, sizeof *k->out);
    for (int i = 0; i < rows; i++)
        row_to_token(res, i, &k->out[k->n++]);
    PQclear(res);
    return rc;
}

static int pg_token_list(store *s, struct token_rec **out, size_t *n, struct store_error *err)
{
    struct token_ctx k = {0};
    int rc = tx(PG(s), TX_READ, token_list_fn, &k, err);
    if (rc) {
        free(k.out);
        return rc;
    }
    *out = k.out;
    *n = k.n;
    return STORE_OK;
}

static int token_revoke_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct token_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    pa_str(&p, k->id);
    int rc = q(c, SQL_TOKEN_REVOKE, &p, &res, err, "revoking a token");
    if (rc == STORE_OK && changes(res) == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no token '%.32s'", k->id);
    pa_free(&p);
    PQclear(res);
    return rc;
}

static int pg_token_revoke(store *s, const char *id, struct store_error *err)
{
    struct token_ctx k = {.id = id};
    return tx(PG(s), TX_WRITE, token_revoke_fn, &k, err);
}

/* ---- job statistics ------------------------------------------------------------ */

#define DUR "(finished_at - created_at)"
#define BUCKET(i)                                                                                  \
    "sum(CASE WHEN finished_at > 0 AND " DUR " <= $" #i "::bigint THEN 1 ELSE 0 END), "
static const char SQL_JOB_STATS[] =
    "SELECT kind, state, count(*), coalesce(sum(CASE WHEN finished_at > 0 THEN " DUR
    " END), 0), " BUCKET(1) BUCKET(2) BUCKET(3) BUCKET(4) BUCKET(5)
        BUCKET(6) "sum(CASE WHEN finished_at > 0 THEN 1 ELSE 0 END)"
                  " FROM jobs GROUP BY kind, state ORDER BY kind, state";

struct stats_ctx {
    struct job_stat *v;
    size_t n;
};

static int job_stats_fn(struct pg_conn *c, void *ctx, struct store_error *err)
{
    struct stats_ctx *k = ctx;
    PGresult *res = NULL;
    struct pa p = {0};
    FREE_AND_NULL(k->v);
    k->n = 0;
    for (int i = 0; i < STORE_DURATION_BUCKETS - 1; i++)
        pa_i64(&p, store_duration_bounds[i]);
    int rc = q(c, SQL_JOB_STATS, &p, &res, err, "counting jobs");
    pa_free(&p);
    int rows = rc ? 0 : PQntuples(res);
    if (rows > 0)
        k->v = xcalloc((size_t)rows, sizeof *k->v);
    for (int i = 0; i < rows; i++) {
        struct job_stat *j = &k->v[k->n];
        memset(j, 0, sizeof *j);
        COL_FIELD(res, i, 0, j->kind);
        int state = job_state_parse(cv(res, i, 1));
        if (state < 0)
            continue; /* the CHECK constraint rules this out */
        j->state = (enum job_state)state;
        j->count = ci64(res, i, 2);
        j->duration_sum_ms = ci64(res, i, 3);
        for (int b = 0; b < STORE_DURATION_BUCKETS; b++)
            j->buckets[b] = ci64(res, i, 4 + b);
        k->n++;
    }
    PQclear(res);
    return rc;
}

static int pg_job_stats(store *s, struct job_stat **out, size_t *n, struct store_error *err)
{
    struct stats_ctx k = {0};
    int rc = tx(PG(s), TX_READ, job_stats_fn, &k, err);
    if (rc) {
        free(k.v);
        return rc;
    }
    *out = k.v;
    *n = k.n;
    return STORE_OK;
}

/* ---- open / close ----------------------------------------------------------- */

static void pg_close(store *base)
{
    struct pg_store *s = PG(base);
    pthread_key_delete(s->key);
    pthread_mutex_lock(&s->mu);
    while (s->conns) {
        struct pg_conn *c = s->conns;
        s->conns = c->next;
        /* In a forked child the sessions are the parent's: PQfinish would
         * end them (it says goodbye on the shared socket). Leave them. */
        if (getpid() == s->pid)
            conn_close(c);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    free(s->url);
    free(s);
}

static const struct store_ops PG_OPS = {
    .name = "postgresql",
    .close = pg_close,
    .vm_insert = pg_vm_insert,
    .vm_update = pg_vm_update,
    .vm_get = pg_vm_get,
    .vm_get_id = pg_vm_get_id,
    .vm_scan = pg_vm_scan,
    .job_insert = pg_job_insert,
    .job_update = pg_job_update,
    .job_get = pg_job_get,
    .job_claim = pg_job_claim,
    .job_renew = pg_job_renew,
    .job_lease_owners = pg_job_lease_owners,
    .job_expire_owner = pg_job_expire_owner,
    .job_count_active = pg_job_count_active,
    .job_event_add = pg_job_event_add,
    .job_events = pg_job_events,
    .vmid_reserve = pg_vmid_reserve,
    .vmid_mark_used = pg_vmid_mark_used,
    .vmid_mark_foreign = pg_vmid_mark_foreign,
    .vmid_release = pg_vmid_release,
    .vmid_count = pg_vmid_count,
    .reserve_capacity = pg_reserve_capacity,
    .settle_capacity = pg_settle_capacity,
    .release_capacity = pg_release_capacity,
    .reserved_on = pg_reserved_on,
    .create_submit = pg_create_submit,
    .job_submit = pg_job_submit,
    .job_submit_move = pg_job_submit_move,
    .job_checkpoint = pg_job_checkpoint,
    .clone_slot_take = pg_clone_slot_take,
    .clone_slot_give = pg_clone_slot_give,
    .leftover_add = pg_leftover_add,
    .leftover_list = pg_leftover_list,
    .leftover_done = pg_leftover_done,
    .idem_put = pg_idem_put,
    .idem_get = pg_idem_get,
    .kv_setdefault = pg_kv_setdefault,
    .token_insert = pg_token_insert,
    .token_get = pg_token_get,
    .token_list = pg_token_list,
    .token_revoke = pg_token_revoke,
    .job_stats = pg_job_stats,
};

/* url: the whole libpq connection URI (postgresql://... or postgres://...). */
store *store_pg_open(const char *url, struct store_error *err)
{
    struct pg_store *s = xcalloc(1, sizeof *s);
    s->base.ops = &PG_OPS;
    s->url = xstrdup(url);
    s->pid = getpid();
    pthread_mutex_init(&s->mu, NULL);
    if (pthread_key_create(&s->key, conn_tls_free) != 0) {
        store_fail(err, STORE_E_DB, "pthread_key_create failed");
        pthread_mutex_destroy(&s->mu);
        free(s->url);
        free(s);
        return NULL;
    }
    int rc = tx(s, TX_WRITE, migrate_fn, NULL, err);
    if (rc) {
        pg_close(&s->base);
        return NULL;
    }
    return &s->base;
}
