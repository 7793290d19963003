/* db: the part of the SQL layer both drivers share (see db.h): the URL
 * dispatch, a connection per thread, the statement cache and the rewriting
 * of SQL text for a dialect, the transaction loop, and the small wrappers
 * that call the driver's primitives. */
#include "store/db_int.h"
#include "store/store_int.h"

#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_TX_ATTEMPTS 8
/* No try of a transaction starts this long after its first: a SQLite lock
 * another process holds costs each try the busy timeout (5 s), and eight of
 * them held an API request 40 s, past any client's patience, for an answer
 * (503) it could give after two. A conflict that clears (a snapshot that
 * could not be upgraded, a PostgreSQL serialization failure) is tried again
 * within milliseconds, well inside it. */
#define DB_TX_BUDGET_MS 8000

int db_fail(struct store_error *err, enum db_class cls, const char *fmt, ...)
{
    static const int code[] = {
        [DB_C_OK] = STORE_OK,
        [DB_C_RETRY] = DB_RETRY,
        [DB_C_CONFLICT] = STORE_E_CONFLICT,
        [DB_C_GONE] = STORE_E_NOTFOUND,
        [DB_C_INVALID] = STORE_E_INVALID,
        [DB_C_OTHER] = STORE_E_DB,
    };
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = cls == DB_C_RETRY ? STORE_E_DB : (enum store_err)code[cls];
        err->field[0] = err->pool[0] = '\0';
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code[cls];
}

/* ---- handles and connections ---------------------------------------------- */

static void conn_unlink(db *d, db_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

void db_cache_drop(db_conn *c)
{
    for (size_t i = 0; i < c->ncache; i++) {
        c->d->drv->finalize(c, c->cache[i]->h);
        free(c->cache[i]);
    }
    c->ncache = 0;
}

static void conn_free(db_conn *c)
{
    db_cache_drop(c);
    FREE_AND_NULL(c->cache);
    c->cache_cap = 0;
    c->d->drv->conn_close(c);
}

/* pthread key destructor: the thread exits, its connection goes. */
static void conn_tls_free(void *p)
{
    db_conn *c = p;
    db *d = c->d;
    pthread_mutex_lock(&d->mu);
    conn_unlink(d, c);
    pthread_mutex_unlock(&d->mu);
    conn_free(c);
}

/* This thread's connection, opened on first use. */
static int conn_get(db *d, db_conn **out, struct store_error *err)
{
    if (getpid() != d->pid)
        return store_fail(err, STORE_E_INVALID,
                          "store handle used in a forked child; open a new one there");
    db_conn *c = pthread_getspecific(d->key);
    if (!c) {
        int rc = d->drv->conn_open(d, &c, err);
        if (rc)
            return rc;
        c->d = d;
        pthread_mutex_lock(&d->mu);
        c->next = d->conns;
        if (d->conns)
            d->conns->prev = c;
        d->conns = c;
        pthread_mutex_unlock(&d->mu);
        if (pthread_setspecific(d->key, c) != 0) {
            conn_tls_free(c);
            return store_fail(err, STORE_E_DB, "pthread_setspecific failed");
        }
    }
    *out = c;
    return STORE_OK;
}

db *db_open(const char *url, struct store_error *err)
{
    const struct db_driver *drv = NULL;
    if (str_starts(url, "sqlite:")) {
        drv = &db_sqlite_driver;
        url += strlen("sqlite:");
    } else if (str_starts(url, "postgresql://") || str_starts(url, "postgres://")) {
        drv = &db_pg_driver;
    } else {
        /* Name the scheme only: the rest of a URL may hold a password. */
        const char *colon = strchr(url, ':');
        int len = colon ? (int)(colon - url) : (int)strlen(url);
        store_fail(err, STORE_E_INVALID,
                   "unknown store URL scheme '%.*s' (expected sqlite:PATH or postgresql://...)",
                   len > 32 ? 32 : len, url);
        return NULL;
    }
    db *d = xcalloc(1, sizeof *d);
    d->drv = drv;
    d->pid = getpid();
    d->watch_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    if (pthread_key_create(&d->key, conn_tls_free) != 0) {
        store_fail(err, STORE_E_DB, "pthread_key_create failed");
        pthread_mutex_destroy(&d->mu);
        free(d);
        return NULL;
    }
    if (drv->open(d, url, err)) {
        db_close(d);
        return NULL;
    }
    return d;
}

void db_close(db *d)
{
    if (!d)
        return;
    /* After the key is gone no thread-exit destructor can run for it, so
     * the list is ours alone (no other call may race with closing). */
    pthread_key_delete(d->key);
    pthread_mutex_lock(&d->mu);
    while (d->conns) {
        db_conn *c = d->conns;
        d->conns = c->next;
        conn_free(c);
    }
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_destroy(&d->mu);
    if (d->watch_fd >= 0)
        d->drv->watch_close(d);
    d->drv->close(d);
    free(d);
}

const char *db_name(const db *d)
{
    return d->drv->name;
}

/* ---- transactions ------------------------------------------------------- */

/* The calling thread's patience (store_thread_patience). */
static __thread struct {
    store_wait_fn wait;
    void *ctx;
} patience;

void store_thread_patience(store_wait_fn wait, void *ctx)
{
    patience.wait = wait;
    patience.ctx = ctx;
}

/* db_tx's tries, bounded. *unreachable: the failure says the database is
 * out of reach (no connection, or none made ready, or the transaction
 * could not begin; or conflicts, a lock held, until the budget ran out),
 * so nothing of the transaction was kept and running it later is safe.
 * Not so for an error of a statement (corrupt data, I/O) nor of COMMIT,
 * whose outcome may be unknown (a connection lost during it). */
static int tx_tries(db *d, enum db_mode mode, db_fn fn, void *ctx, struct store_error *err,
                    bool *unreachable)
{
    db_conn *c = NULL;
    int rc = conn_get(d, &c, err);
    *unreachable = rc == STORE_E_DB;
    if (rc)
        return rc;
    int64_t t0 = mono_ms();
    int attempt = 1;
    for (;; attempt++) {
        c->notify = false; /* a try again calls db_notify_jobs again */
        rc = d->drv->conn_ready(c, err);
        if (rc == STORE_OK)
            rc = d->drv->begin(c, mode, err);
        *unreachable = rc == STORE_E_DB;
        if (rc == STORE_OK)
            rc = fn(c, ctx, err);
        if (rc == STORE_OK && mode == DB_WRITE)
            rc = d->drv->commit(c, err);
        if (rc == STORE_OK && c->notify)
            d->drv->notify(c, true);
        c->notify = false;
        if (rc != STORE_OK)
            d->drv->rollback(c); /* keeps the first error's message */
        if (rc == STORE_OK && attempt > 1) {
            err->code = STORE_OK; /* forget the message of the failed try */
            err->message[0] = '\0';
        }
        if (rc != DB_RETRY)
            return rc;
        long pause = (1L << attempt) + random() % 8;
        if (attempt == DB_TX_ATTEMPTS || mono_ms() - t0 + pause >= DB_TX_BUDGET_MS)
            break;
        sleep_ms(pause);
    }
    *unreachable = true;
    char first[sizeof err->message];
    snprintf(first, sizeof first, "%s", err->message);
    return store_fail(err, STORE_E_DB, "transaction failed after %d attempts in %lld ms: %s",
                      attempt, (long long)(mono_ms() - t0), first);
}

int db_tx(db *d, enum db_mode mode, db_fn fn, void *ctx, struct store_error *err)
{
    struct store_error own;
    if (!err)
        err = &own; /* the wait is told the failure */
    for (int tries = 0;; tries++) {
        bool unreachable;
        int rc = tx_tries(d, mode, fn, ctx, err, &unreachable);
        if (rc != STORE_E_DB || !unreachable || !patience.wait ||
            !patience.wait(patience.ctx, tries, err))
            return rc;
    }
}

static char *sql_dialect(const struct db_driver *drv, const char *sql);

int db_exec(db_conn *c, const char *sql, struct store_error *err)
{
    char *text = sql_dialect(c->d->drv, sql);
    int rc = c->d->drv->exec(c, text, err);
    free(text);
    return rc;
}

void db_notify_jobs(db_conn *c)
{
    if (c->notify)
        return;
    c->notify = true;
    c->d->drv->notify(c, false);
}

/* A watch that cannot be had (PostgreSQL unreachable: its connect may
 * take its timeout) is not tried at every look: every 30 s. */
#define WATCH_RETRY_MS 30000

int db_watch_fd(db *d)
{
    if (d->watch_fd < 0 && getpid() == d->pid && mono_ms() >= d->watch_retry) {
        d->watch_fd = d->drv->watch_open(d);
        if (d->watch_fd < 0)
            d->watch_retry = mono_ms() + WATCH_RETRY_MS;
    }
    return d->watch_fd;
}

void db_watch_drain(db *d)
{
    if (d->watch_fd >= 0 && !d->drv->watch_drain(d)) {
        d->drv->watch_close(d);
        d->watch_fd = -1;
    }
}

int db_lock(db_conn *c, enum db_lock purpose, const char *key, struct store_error *err)
{
    return c->d->drv->lock(c, (int)purpose, key, err);
}

/* ---- SQL text ----------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The states of `names` for which `pick` holds, as an SQL list, in
 * alphabetical order: the order the schema's partial indexes write their
 * lists in. SQLite uses a partial index only for a WHERE term written as
 * its own, and otherwise builds a temporary table for the list at each
 * execution: a live record read by VMID (state NOT IN {GONE}) cost twice
 * the read with the states in enum order (store/test_store
 * test_state_lists_match_indexes). */
static void state_list(struct buf *b, const char *(*name)(int), int n, bool (*pick)(int))
{
    const char *names[16];
    size_t m = 0;
    for (int i = 0; i < n && m < sizeof names / sizeof *names; i++)
        if (pick(i))
            names[m++] = name(i);
    qsort(names, m, sizeof *names, cmp_name);
    buf_adds(b, "(");
    for (size_t i = 0; i < m; i++)
        buf_printf(b, "%s'%s'", i ? ", " : "", names[i]);
    buf_adds(b, ")");
}

static const char *vm_name(int s)
{
    return vm_state_name((enum vm_state)s);
}
static const char *job_name(int s)
{
    return job_state_name((enum job_state)s);
}
static bool vm_gone(int s)
{
    return vm_state_gone((enum vm_state)s);
}
static bool vm_live(int s)
{
    return !vm_state_gone((enum vm_state)s);
}
static bool job_active(int s)
{
    return !job_state_final((enum job_state)s);
}

/* A policy token: a list of states. */
static bool policy_token(struct buf *b, const char *name, size_t len)
{
    if (len == 4 && memcmp(name, "GONE", 4) == 0)
        state_list(b, vm_name, VMS_LOST + 1, vm_gone);
    else if (len == 4 && memcmp(name, "LIVE", 4) == 0)
        state_list(b, vm_name, VMS_LOST + 1, vm_live);
    else if (len == 6 && memcmp(name, "ACTIVE", 6) == 0)
        state_list(b, job_name, JOB_FAILED + 1, job_active);
    else
        return false;
    return true;
}

/* `sql` in the driver's dialect: tokens expanded, parameters renamed. An
 * unknown token is a programming error: abort at once. */
static char *sql_dialect(const struct db_driver *drv, const char *sql)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    for (const char *p = sql; *p; p++) {
        if (*p == '?' && drv->dollar_params) {
            buf_addc(&b, '$');
            continue;
        }
        if (*p != '{') {
            buf_addc(&b, *p);
            continue;
        }
        const char *end = strchr(p, '}');
        size_t len = end ? (size_t)(end - p - 1) : 0;
        bool done = end && policy_token(&b, p + 1, len);
        for (const struct db_token *t = drv->tokens; end && !done && t->name; t++) {
            if (strlen(t->name) == len && memcmp(t->name, p + 1, len) == 0) {
                buf_adds(&b, t->text);
                done = true;
            }
        }
        if (!done) {
            fprintf(stderr, "store: unknown SQL token in: %s\n", sql);
            abort();
        }
        p = end;
    }
    return buf_take(&b);
}

char *db_sql_text(db *d, const char *sql)
{
    return sql_dialect(d->drv, sql);
}

/* ---- statements --------------------------------------------------------- */

int db_prepare(db_conn *c, const char *sql, db_stmt **out, struct store_error *err)
{
    for (size_t i = 0; i < c->ncache; i++) {
        if (c->cache[i]->sql == sql) {
            *out = c->cache[i];
            return STORE_OK;
        }
    }
    char *text = sql_dialect(c->d->drv, sql);
    void *h = NULL;
    int rc = c->d->drv->prepare(c, text, &h, err);
    free(text);
    if (rc)
        return rc;
    if (c->ncache == c->cache_cap) {
        c->cache_cap = c->cache_cap ? 2 * c->cache_cap : 64;
        c->cache = xrealloc(c->cache, c->cache_cap * sizeof *c->cache);
    }
    struct db_stmt *st = xmalloc(sizeof *st);
    *st = (struct db_stmt){sql, c, h};
    c->cache[c->ncache++] = st;
    *out = st;
    return STORE_OK;
}

void db_done(db_stmt *st)
{
    if (st)
        st->c->d->drv->reset(st->h);
}

void db_bind_i64(db_stmt *st, int i, int64_t v)
{
    st->c->d->drv->bind_i64(st->h, i, v);
}

void db_bind_text(db_stmt *st, int i, const char *s)
{
    st->c->d->drv->bind_text(st->h, i, s, s ? strlen(s) : 0);
}

void db_bind_textn(db_stmt *st, int i, const char *s, size_t n)
{
    st->c->d->drv->bind_text(st->h, i, s, n);
}

void db_bind_json(db_stmt *st, int i, const json_t *v)
{
    char *t = store_json_dump(v);
    db_bind_text(st, i, t);
    free(t);
}

int db_step(db_stmt *st, bool *row, struct store_error *err, const char *what)
{
    return st->c->d->drv->step(st->c, st->h, row, err, what);
}

int db_run(db_stmt *st, struct store_error *err, const char *what)
{
    bool row = false;
    return db_step(st, &row, err, what);
}

int db_collect(db_stmt *st, void **v, size_t *n, size_t size, db_row_fn fn, struct store_error *err,
               const char *what)
{
    size_t cap = 0;
    FREE_AND_NULL(*v);
    *n = 0;
    for (;;) {
        bool row = false;
        int rc = db_step(st, &row, err, what);
        if (rc || !row)
            return rc;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *v = xrealloc(*v, cap * size);
        }
        char *elem = (char *)*v + *n * size;
        memset(elem, 0, size);
        if ((rc = fn(st, elem, err)))
            return rc;
        (*n)++;
    }
}

int64_t db_changes(db_stmt *st)
{
    return st->c->d->drv->changes(st->c, st->h);
}

int64_t db_last_id(db_stmt *st)
{
    return st->c->d->drv->last_id(st->c, st->h);
}

int64_t db_col_i64(db_stmt *st, int col)
{
    return st->c->d->drv->col_i64(st->h, col);
}

const char *db_col_text(db_stmt *st, int col)
{
    size_t len = 0;
    return st->c->d->drv->col_text(st->h, col, &len);
}

void db_col_copy(db_stmt *st, int col, char *dst, size_t n)
{
    size_t len = 0;
    const char *t = st->c->d->drv->col_text(st->h, col, &len);
    store_copy(dst, n, t, t ? len : 0);
}

int db_col_json(db_stmt *st, int col, json_t **out, const char *what, struct store_error *err)
{
    return store_json_load(db_col_text(st, col), out, what, err);
}
