/* db_pg: the PostgreSQL driver of db.h (libpq), primitives only, for
 * several proxd instances sharing one database.
 *
 * Concurrency model:
 *  - one connection per thread (db.c keeps them). A connection found broken
 *    is reset (PQreset) before the next transaction, and its prepared
 *    statements are made again (they lived in the lost session);
 *  - statements are prepared once per connection under a generated name and
 *    run with text parameters; a step fetches the whole result at once;
 *  - every writing transaction is READ COMMITTED. Where a decision reads
 *    before it writes, the store takes a named lock (db_lock): a
 *    transaction-scoped advisory lock on (purpose, hash of the key), so the
 *    deciders of one thing run one at a time in every process, and each
 *    statement after the lock sees what the previous holder committed
 *    (READ COMMITTED takes a new snapshot per statement). Unique keys are
 *    left to the unique indexes: a concurrent insert waits for the first to
 *    commit and then conflicts;
 *  - the retry class: serialization failures (40001), deadlocks (40P01),
 *    lock timeouts (55P03), and a connection lost before COMMIT was sent.
 *    A connection lost during COMMIT leaves the outcome unknown: that is an
 *    error, not a retry.
 * The URL may hold a password: no message here repeats the URL, and
 * libpq's own messages do not either. */
#include "store/db_int.h"
#include "store/store_int.h"

#include "common/log.h"
#include "common/xalloc.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_MAXPARAMS 24
/* Advisory lock keys: (PG_LOCK_NS + purpose, hash of the key). */
#define PG_LOCK_NS 1886938112 /* "pxd\0" */

struct pg_conn {
    struct db_conn base; /* first: db.c sees only this */
    PGconn *db;
    bool broken;     /* the session failed: reset before the next use */
    unsigned nstmts; /* statement names made on this session */
    bool committing; /* a lost connection now leaves the outcome unknown */
};

struct pg_stmt {
    char name[16];
    int nparams; /* the highest parameter bound */
    const char *v[PG_MAXPARAMS];
    char *own[PG_MAXPARAMS];
    char num[PG_MAXPARAMS][24];
    PGresult *res; /* after the first step */
    int row;       /* the next row to hand out */
};

static struct pg_conn *PG(db_conn *c)
{
    return (struct pg_conn *)c;
}

/* libpq's message without its trailing newline. */
static const char *conn_msg(PGconn *pc, char *buf, size_t n)
{
    snprintf(buf, n, "%s", pc ? PQerrorMessage(pc) : "out of memory");
    size_t l = strlen(buf);
    while (l && (buf[l - 1] == '\n' || buf[l - 1] == ' '))
        buf[--l] = '\0';
    return buf;
}

static enum db_class pg_class(const char *state)
{
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0)
        return DB_C_RETRY;
    if (strcmp(state, "23505") == 0)
        return DB_C_CONFLICT;
    if (strcmp(state, "23503") == 0)
        return DB_C_GONE;
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return DB_C_INVALID;
    return DB_C_OTHER;
}

/* A failed result as a store error. A lost connection marks it broken. */
static int pg_err(struct pg_conn *c, const PGresult *res, struct store_error *err, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char buf[256];
    if (!msg)
        msg = conn_msg(c->db, buf, sizeof buf);
    if (PQstatus(c->db) != CONNECTION_OK) {
        c->broken = true;
        return db_fail(err, c->committing ? DB_C_OTHER : DB_C_RETRY, "%s: connection lost: %s",
                       what, msg);
    }
    if (!state)
        state = "";
    enum db_class cls = pg_class(state);
    if (cls == DB_C_CONFLICT || cls == DB_C_GONE || cls == DB_C_INVALID)
        return db_fail(err, cls, "%s: %s", what, msg);
    return db_fail(err, cls, "%s: %s (SQLSTATE %s)", what, msg, state);
}

/* ---- connections -------------------------------------------------------- */

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
    c->broken = false;
    return STORE_OK;
}

static void pg_conn_close(db_conn *base)
{
    /* In a forked child the sessions are the parent's: PQfinish would end
     * them (it says goodbye on the shared socket). Leave them. */
    if (getpid() != base->d->pid)
        return;
    PQfinish(PG(base)->db);
    free(base);
}

static int pg_conn_open(db *d, db_conn **out, struct store_error *err)
{
    struct pg_conn *c = xcalloc(1, sizeof *c);
    c->base.d = d;
    /* The URL is a libpq connection URI. It is expanded after the defaults
     * below, so its own parameters win: without a connect_timeout an
     * unreachable server would block the thread for the kernel's TCP
     * timeout. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "proxd", d->drv_data, NULL};
    c->db = PQconnectdbParams(keys, vals, 1 /* expand dbname */);
    *out = NULL;
    int rc = conn_setup(c, err);
    if (rc == STORE_OK)
        *out = &c->base;
    else
        pg_conn_close(&c->base);
    return rc;
}

/* Reconnect a broken connection (same parameters). */
static int pg_conn_ready(db_conn *base, struct store_error *err)
{
    struct pg_conn *c = PG(base);
    c->committing = false;
    if (!c->broken && PQstatus(c->db) == CONNECTION_OK)
        return STORE_OK;
    db_cache_drop(base); /* the prepared statements died with the session */
    PQreset(c->db);
    int rc = conn_setup(c, err);
    if (rc)
        c->broken = true;
    return rc;
}

static int pg_open(db *d, const char *url, struct store_error *err)
{
    (void)err;
    d->drv_data = xstrdup(url);
    return STORE_OK;
}

static void pg_close(db *d)
{
    free(d->drv_data);
}

/* ---- transactions ------------------------------------------------------- */

/* A statement without parameters through the simple protocol (BEGIN,
 * COMMIT, DDL scripts). */
static int pg_exec(db_conn *base, const char *sql, struct store_error *err)
{
    struct pg_conn *c = PG(base);
    PGresult *res = PQexec(c->db, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
        rc = pg_err(c, res, err, "running SQL");
    PQclear(res);
    return rc;
}

static int pg_begin(db_conn *c, enum db_mode mode, struct store_error *err)
{
    return mode == DB_WRITE ? pg_exec(c, "BEGIN ISOLATION LEVEL READ COMMITTED", err) : STORE_OK;
}

/* A COMMIT of a transaction that a failed statement aborted rolls it back,
 * and says so only in its command tag ("ROLLBACK", with a success status):
 * taken for a commit, the caller was told its writes were kept. Nothing
 * was written then, so the whole transaction runs again. */
static int pg_commit(db_conn *base, struct store_error *err)
{
    struct pg_conn *c = PG(base);
    c->committing = true;
    PGresult *res = PQexec(c->db, "COMMIT");
    int rc = STORE_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = pg_err(c, res, err, "COMMIT");
    else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
        rc = db_fail(err, DB_C_RETRY,
                     "COMMIT: the transaction was rolled back (a statement in it "
                     "failed)");
    c->committing = false;
    PQclear(res);
    return rc;
}

static void pg_rollback(db_conn *base)
{
    struct pg_conn *c = PG(base);
    if (!c->broken && PQtransactionStatus(c->db) != PQTRANS_IDLE)
        PQclear(PQexec(c->db, "ROLLBACK"));
}

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock(?1::int, hashtext(?2::text))";

static int pg_lock(db_conn *c, int purpose, const char *key, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_LOCK, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, PG_LOCK_NS + purpose);
    db_bind_text(st, 2, key);
    rc = db_run(st, err, "taking an advisory lock");
    db_done(st);
    return rc;
}

/* ---- statements --------------------------------------------------------- */

static int pg_prepare(db_conn *base, const char *text, void **h, struct store_error *err)
{
    struct pg_conn *c = PG(base);
    struct pg_stmt *st = xcalloc(1, sizeof *st);
    snprintf(st->name, sizeof st->name, "pxd%u", c->nstmts++);
    PGresult *res = PQprepare(c->db, st->name, text, 0, NULL);
    int rc = STORE_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_err(c, res, err, "preparing SQL");
        free(st);
        st = NULL;
    }
    PQclear(res);
    *h = st;
    return rc;
}

static void pg_reset(void *h)
{
    struct pg_stmt *st = h;
    PQclear(st->res);
    st->res = NULL;
    st->row = 0;
    for (int i = 0; i < st->nparams; i++) {
        free(st->own[i]);
        st->own[i] = NULL;
        st->v[i] = NULL;
    }
    st->nparams = 0;
}

static void pg_finalize(db_conn *c, void *h)
{
    (void)c;
    pg_reset(h);
    free(h);
}

static char *slot(struct pg_stmt *st, int i)
{
    if (i < 1 || i > PG_MAXPARAMS) {
        fprintf(stderr, "store: parameter %d out of range\n", i);
        abort();
    }
    if (i > st->nparams)
        st->nparams = i;
    free(st->own[i - 1]);
    st->own[i - 1] = NULL;
    return st->num[i - 1];
}

static void pg_bind_i64(void *h, int i, int64_t v)
{
    struct pg_stmt *st = h;
    char *num = slot(st, i);
    snprintf(num, sizeof st->num[0], "%lld", (long long)v);
    st->v[i - 1] = num;
}

static void pg_bind_text(void *h, int i, const char *s, size_t n)
{
    struct pg_stmt *st = h;
    slot(st, i);
    st->own[i - 1] = s ? xstrndup(s, n) : NULL;
    st->v[i - 1] = st->own[i - 1];
}

static int pg_step(db_conn *base, void *h, bool *row, struct store_error *err, const char *what)
{
    struct pg_conn *c = PG(base);
    struct pg_stmt *st = h;
    *row = false;
    if (!st->res) {
        st->res = PQexecPrepared(c->db, st->name, st->nparams, st->v, NULL, NULL, 0 /* text */);
        ExecStatusType s = PQresultStatus(st->res);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
            int rc = pg_err(c, st->res, err, what);
            PQclear(st->res);
            st->res = NULL;
            return rc;
        }
    }
    *row = st->row < PQntuples(st->res);
    if (*row)
        st->row++;
    return STORE_OK;
}

static int64_t pg_changes(db_conn *c, void *h)
{
    (void)c;
    struct pg_stmt *st = h;
    return st->res ? strtoll(PQcmdTuples(st->res), NULL, 10) : 0;
}

static int64_t pg_last_id(db_conn *c, void *h)
{
    (void)c;
    struct pg_stmt *st = h;
    if (!st->res || PQntuples(st->res) < 1 || PQgetisnull(st->res, 0, 0))
        return 0;
    return strtoll(PQgetvalue(st->res, 0, 0), NULL, 10);
}

static int64_t pg_col_i64(void *h, int col)
{
    struct pg_stmt *st = h;
    if (PQgetisnull(st->res, st->row - 1, col))
        return 0;
    return strtoll(PQgetvalue(st->res, st->row - 1, col), NULL, 10);
}

static const char *pg_col_text(void *h, int col, size_t *len)
{
    struct pg_stmt *st = h;
    *len = 0;
    if (PQgetisnull(st->res, st->row - 1, col))
        return NULL;
    *len = (size_t)PQgetlength(st->res, st->row - 1, col);
    return PQgetvalue(st->res, st->row - 1, col);
}

static const struct db_token PG_TOKENS[] = {
    {"ID", "BIGSERIAL PRIMARY KEY"},
    {"I64", "BIGINT"},
    {"STRICT", ""},
    {"NOIDX", ""},
    /* SKIP LOCKED: a job another claimer is taking is passed over, not
     * waited for. NO KEY UPDATE: rows that refer to the job (events,
     * reservations, slots, which take KEY SHARE locks) do not make it look
     * taken. */
    {"CLAIM_LOCK", " FOR NO KEY UPDATE OF j SKIP LOCKED"},
    {"JOB_SEQ", "DEFAULT"},
    {"SEQ_TYPE", "BIGSERIAL NOT NULL"},
    {"FOR_UPDATE", " FOR UPDATE"}, /* lock a row read before it is written */
    {"RETURNING_ID", " RETURNING id"},
    {"RETURNING_CANCEL", " RETURNING cancel_at, cancel_by"},
    /* membership in parameter 1, a JSON array of integers: as an array,
     * so the primary key's index answers each */
    {"IN_IDS_1", " = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint))"},
    {NULL, NULL},
};

/* ---- the jobs watch ------------------------------------------------------ */

/* A transaction that queued a job sends a notification; PostgreSQL
 * delivers it at the commit (and drops it at a rollback) to every session
 * that LISTENs on its channel: the watch is such a session of its own, its
 * socket the fd. The channel is the schema's (CHANNEL_SQL), so that stores
 * sharing one database in separate schemas (several test runs, several
 * fleets) do not wake each other's watches: "proxd_jobs" for the public
 * schema, "proxd_jobs_" and the md5 of the schema's name for another (a
 * channel's name is at most 63 bytes; a schema's may be 63 itself). */
#define CHANNEL_SQL                                                                                \
    "CASE coalesce(current_schema(), 'public') WHEN 'public' THEN 'proxd_jobs' "                   \
    "ELSE 'proxd_jobs_' || md5(current_schema()) END"

static void pg_notify(db_conn *c, bool committed)
{
    struct store_error e;
    if (!committed && pg_exec(c, "SELECT pg_notify(" CHANNEL_SQL ", '')", &e) != STORE_OK)
        log_debug("store", "NOTIFY failed: %s", e.message); /* its COMMIT rolls back: pg_commit */
}

/* LISTEN on this session's schema's channel (CHANNEL_SQL). */
static bool watch_listen(PGconn *w)
{
    bool ok = false;
    char *ident = NULL;
    PGresult *res = PQexec(w, "SELECT " CHANNEL_SQL);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        goto out;
    const char *chan = PQgetvalue(res, 0, 0);
    ident = PQescapeIdentifier(w, chan, strlen(chan));
    if (!ident)
        goto out;
    char *sql = xasprintf("LISTEN %s", ident);
    PQclear(res);
    res = PQexec(w, sql);
    free(sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
out:
    PQfreemem(ident);
    PQclear(res);
    return ok;
}

static int pg_watch_open(db *d)
{
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "proxd-watch", d->drv_data, NULL};
    PGconn *w = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(w) != CONNECTION_OK || !watch_listen(w) || PQsocket(w) < 0) {
        char m[256];
        log_warn("store", "cannot LISTEN for jobs (looking every second instead): %s",
                 conn_msg(w, m, sizeof m));
        PQfinish(w);
        return -1;
    }
    PQsetNoticeProcessor(w, notice_ignore, NULL);
    d->watch_data = w;
    return PQsocket(w);
}

static bool pg_watch_drain(db *d)
{
    PGconn *w = d->watch_data;
    if (!PQconsumeInput(w) || PQstatus(w) != CONNECTION_OK)
        return false; /* the session is gone: LISTEN again on a new one */
    PGnotify *n;
    while ((n = PQnotifies(w)) != NULL)
        PQfreemem(n);
    return true;
}

static void pg_watch_close(db *d)
{
    if (getpid() == d->pid)
        PQfinish(d->watch_data);
    d->watch_data = NULL;
}

const struct db_driver db_pg_driver = DB_DRIVER(pg, "postgresql", PG_TOKENS, true);
