/* db: the SQL driver contract under the store (private to src/store/).
 *
 * The store's operations are written once, in SQL that both databases
 * accept, against this interface; a driver (db_sqlite.c, db_pg.c) supplies
 * only the primitives that differ: opening and resetting a connection,
 * preparing and stepping a statement, binding and reading values, starting
 * and ending a transaction, a named lock, and the classes of its errors.
 * db.c holds what is common: a connection per thread, the statement cache,
 * SQL rewriting and the transaction loop with its bounded retries.
 *
 * SQL text: parameters are written ?1, ?2, ... (PostgreSQL gets $1, $2, ...,
 * rewritten once when the statement is prepared); every number from 1 to
 * the highest must be used. {NAME} is a dialect token (the drivers' tables
 * say what it becomes: {ID} an auto-increment key, {I64} a 64-bit integer
 * column, {STRICT} the table option, {NOIDX} SQLite's "+" that keeps the
 * planner off an index, {CLAIM_LOCK} PostgreSQL's row lock with SKIP LOCKED,
 * {JOB_SEQ} the next job insertion number, {SEQ_TYPE} its column,
 * {RETURNING_ID} what db_last_id needs, {FOR_UPDATE} a row lock
 * on a row read before it is written, nothing in SQLite), or one
 * of the policy lists made from store_int.h's functions: {GONE} (VM states
 * that hold no VMID), {LIVE} (the others), {ACTIVE} (unfinished jobs).
 * Statement texts must be static: the cache is keyed by their address.
 *
 * Threads: a `db` handle is shared; each thread gets its own connection on
 * first use (inside db_tx), closed when the thread exits or at db_close. A
 * db_conn and its statements belong to that thread alone. A handle does
 * not cross fork(): the child gets STORE_E_INVALID.
 *
 * Errors: functions return 0 or a store_err code with *err filled, or
 * DB_RETRY (the transaction met a conflict that running it again can
 * resolve: SQLite busy, PostgreSQL serialization failure, deadlock, lock
 * timeout, a connection lost before COMMIT). Only db_tx sees DB_RETRY: it
 * runs the transaction again, a bounded number of times. */
#ifndef STORE_DB_H
#define STORE_DB_H

#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db db;
typedef struct db_conn db_conn;
typedef struct db_stmt db_stmt;

/* Internal result: run the whole transaction again. */
#define DB_RETRY 100

/* What a driver's native error means for the store. */
enum db_class {
    DB_C_OK = 0,
    DB_C_RETRY,    /* run the transaction again */
    DB_C_CONFLICT, /* a unique key is taken: STORE_E_CONFLICT */
    DB_C_GONE,     /* a referenced row is missing (foreign key): STORE_E_NOTFOUND */
    DB_C_INVALID,  /* a check constraint or bad input: STORE_E_INVALID */
    DB_C_OTHER,    /* anything else: STORE_E_DB */
};

/* Named locks for decisions that read before they write (PostgreSQL:
 * pg_advisory_xact_lock on (purpose, key); SQLite: nothing, its writing
 * transactions are serialised already). */
enum db_lock {
    DB_LOCK_MIGRATE = 0,
    DB_LOCK_VMID,
    DB_LOCK_CAPACITY,
    DB_LOCK_SLOTS,
    DB_LOCK_QUOTA,
    DB_LOCK_EVENTS,
    DB_LOCK_ADDR,     /* key: the pool name */
    DB_LOCK_EVENTLOG, /* the event log's id order (store_event.c) */
    DB_LOCK_SOLE,     /* key: "kind/node" of a one-at-a-time job (store_submit.c) */
    DB_LOCK_KV,       /* key: a setting's name (store_kv_change_logged) */
};

enum db_mode {
    DB_READ,  /* one statement, its own snapshot: no BEGIN */
    DB_WRITE, /* a transaction that may write */
};

/* Fill *err for an error of class `cls` and return what the caller returns:
 * DB_RETRY for DB_C_RETRY, else the store_err code of the class. */
int db_fail(struct store_error *err, enum db_class cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* url: "sqlite:PATH" or "postgresql://..." (as store_open takes it). */
db *db_open(const char *url, struct store_error *err);
void db_close(db *d);
const char *db_name(const db *d); /* "sqlite", "postgresql" */
/* `sql` as d's driver runs it: the {TOKENS} expanded, parameters renamed
 * ($1 on PostgreSQL). The caller frees it. For tests and diagnostics. */
char *db_sql_text(db *d, const char *sql);

/* Run fn in one transaction on this thread's connection; again from the
 * start when it returns DB_RETRY (at most 8 tries, none begun 8 s after the
 * first, with a growing, jittered pause).
 * fn must be safe to run again: it may not keep results of a failed try. */
typedef int (*db_fn)(db_conn *c, void *ctx, struct store_error *err);
int db_tx(db *d, enum db_mode mode, db_fn fn, void *ctx, struct store_error *err);

/* In a writing transaction: a job may be claimable once it commits (one
 * was queued, or freed from a dead runner). Other connections, in this
 * process or another, that watch (db_watch_fd) are told after the commit;
 * nothing is told when the transaction rolls back. */
void db_notify_jobs(db_conn *c);
/* The jobs watch: an fd that turns readable (POLLIN) after a transaction
 * that called db_notify_jobs committed on any connection to the database
 * (SQLite: a file beside the database that such a commit writes to,
 * watched with inotify; PostgreSQL: LISTEN on a session of its own, the
 * commit's NOTIFY). -1 when the watch cannot be had (then look on a
 * timer); opened on first use, again after it broke. db_watch_drain
 * empties it before a look: what was told before then is seen by the look.
 * One thread at a time (the daemon's watcher); closed by db_close. */
int db_watch_fd(db *d);
void db_watch_drain(db *d);
/* Run a script of statements without parameters or rows (DDL). */
int db_exec(db_conn *c, const char *sql, struct store_error *err);
int db_lock(db_conn *c, enum db_lock purpose, const char *key, struct store_error *err);

/* A prepared statement for the static text `sql`, ready for binding; give
 * it back with db_done (which resets it for the next use). */
int db_prepare(db_conn *c, const char *sql, db_stmt **out, struct store_error *err);
void db_done(db_stmt *st);

/* Parameters are numbered from 1. Text is copied. */
void db_bind_i64(db_stmt *st, int i, int64_t v);
void db_bind_text(db_stmt *st, int i, const char *s); /* NULL: SQL NULL */
void db_bind_textn(db_stmt *st, int i, const char *s, size_t n);
void db_bind_json(db_stmt *st, int i, const json_t *v); /* compact text; NULL: SQL NULL */
/* A bounded record field (it may lack a NUL). */
#define DB_BIND_FIELD(st, i, f) db_bind_textn((st), (i), (f), strnlen((f), sizeof(f)))

/* One step: *row tells whether a row came back. `what` names the operation
 * in an error message. */
int db_step(db_stmt *st, bool *row, struct store_error *err, const char *what);
/* Step a statement that returns no rows (or whose rows do not matter). */
int db_run(db_stmt *st, struct store_error *err, const char *what);
/* Rows the last step's statement inserted, updated or deleted. */
int64_t db_changes(db_stmt *st);
/* The key of the row an INSERT ending with {RETURNING_ID} made (SQLite:
 * the rowid, without the cost of RETURNING; PostgreSQL: the returned id). */
int64_t db_last_id(db_stmt *st);

/* Step st to its end, one element of `size` bytes per row appended to the
 * array *v (*n elements; freed and emptied first, since a retried
 * transaction reads again; the caller frees it): fn fills the element
 * (zeroed) from the row, and may fail, which stops the walk. */
typedef int (*db_row_fn)(db_stmt *st, void *elem, struct store_error *err);
int db_collect(db_stmt *st, void **v, size_t *n, size_t size, db_row_fn fn, struct store_error *err,
               const char *what);

/* Columns of the current row, numbered from 0. */
int64_t db_col_i64(db_stmt *st, int col);
const char *db_col_text(db_stmt *st, int col); /* NULL for SQL NULL */
/* Copy a text column into a bounded field (cut at a character boundary). */
void db_col_copy(db_stmt *st, int col, char *dst, size_t n);
#define DB_COL_FIELD(st, col, f) db_col_copy((st), (col), (f), sizeof(f))
/* Parse a JSON text column; `what` names it in an error. */
int db_col_json(db_stmt *st, int col, json_t **out, const char *what, struct store_error *err);

#endif
