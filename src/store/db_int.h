/* db_int: what db.c shares with the two drivers, and nothing else uses.
 *
 * A driver fills a `struct db_driver` table of primitives (curl's vtls
 * backends are the model: a small table, the common logic once in front of
 * it). Its connection struct embeds `struct db_conn` as its first member;
 * db.c keeps the per-thread connections, the statement cache and the
 * transaction loop. Primitives report errors through db_fail() with a
 * class; only the driver knows its native codes. */
#ifndef STORE_DB_INT_H
#define STORE_DB_INT_H

#include "store/db.h"

#include <pthread.h>
#include <sys/types.h>

/* A connection's prepared statements, kept for its life: a statement is
 * prepared when first used and found again by its text's address. The
 * store has about 170 texts (December 2026, the listing's variants
 * included), and a long-lived connection (an API thread, days into a
 * daemon's life) ends up running most of them; the table grows as they
 * come, with no limit to reach. Each entry is allocated on its own, so a
 * db_stmt handed out stays where it is while later ones are added (a
 * caller may hold several at once). */
struct db_stmt {
    const char *sql; /* identity: the address of a static SQL text */
    db_conn *c;
    void *h; /* the driver's statement */
};

struct db_conn {
    db *d;
    db_conn *prev, *next; /* on d->conns */
    bool notify;          /* the open transaction called db_notify_jobs */
    struct db_stmt **cache;
    size_t ncache, cache_cap;
};

struct db_token {
    const char *name; /* without braces */
    const char *text;
};

struct db_driver {
    const char *name;
    const struct db_token *tokens; /* ends with {NULL, NULL} */
    bool dollar_params;            /* write ?N as $N */
    /* The driver's part of a handle, from what follows the scheme (SQLite)
     * or the whole URL (PostgreSQL): d->drv_data. */
    int (*open)(db *d, const char *url, struct store_error *err);
    void (*close)(db *d);
    int (*conn_open)(db *d, db_conn **out, struct store_error *err);
    void (*conn_close)(db_conn *c);
    /* Before a transaction: make a broken connection usable again (and
     * db_cache_drop its statements when they died with it). */
    int (*conn_ready)(db_conn *c, struct store_error *err);
    int (*begin)(db_conn *c, enum db_mode mode, struct store_error *err);
    int (*commit)(db_conn *c, struct store_error *err);
    void (*rollback)(db_conn *c); /* when a transaction is open; keeps *err */
    int (*exec)(db_conn *c, const char *sql, struct store_error *err);
    int (*lock)(db_conn *c, int purpose, const char *key, struct store_error *err);
    int (*prepare)(db_conn *c, const char *text, void **h, struct store_error *err);
    void (*finalize)(db_conn *c, void *h);
    void (*reset)(void *h);
    void (*bind_i64)(void *h, int i, int64_t v);
    void (*bind_text)(void *h, int i, const char *s, size_t n); /* s NULL: SQL NULL */
    int (*step)(db_conn *c, void *h, bool *row, struct store_error *err, const char *what);
    int64_t (*changes)(db_conn *c, void *h);
    int64_t (*last_id)(db_conn *c, void *h);
    int64_t (*col_i64)(void *h, int col);
    const char *(*col_text)(void *h, int col, size_t *len);
    /* db_notify_jobs: in the transaction (committed false) and once it
     * committed (true); the driver tells other connections on one of them */
    void (*notify)(db_conn *c, bool committed);
    /* the jobs watch (db_watch_fd): open it (-1: cannot), empty it (false:
     * it broke, close it), close it */
    int (*watch_open)(db *d);
    bool (*watch_drain)(db *d);
    void (*watch_close)(db *d);
};

struct db {
    const struct db_driver *drv;
    void *drv_data;
    pid_t pid;          /* connections must not cross fork() */
    pthread_key_t key;  /* this thread's db_conn */
    pthread_mutex_t mu; /* guards conns */
    db_conn *conns;
    int watch_fd;        /* db_watch_fd's: -1 while closed */
    int64_t watch_retry; /* mono ms: a watch that could not be had is tried again then */
    void *watch_data;    /* the driver's part of the watch */
};

/* A driver's table, from its primitives named p_open, p_close, ... */
#define DB_DRIVER(p, drvname, toks, dollar)                                                        \
    {                                                                                              \
        .name = drvname, .tokens = toks, .dollar_params = dollar, .open = p##_open,                \
        .close = p##_close, .conn_open = p##_conn_open, .conn_close = p##_conn_close,              \
        .conn_ready = p##_conn_ready, .begin = p##_begin, .commit = p##_commit,                    \
        .rollback = p##_rollback, .exec = p##_exec, .lock = p##_lock, .prepare = p##_prepare,      \
        .finalize = p##_finalize, .reset = p##_reset, .bind_i64 = p##_bind_i64,                    \
        .bind_text = p##_bind_text, .step = p##_step, .changes = p##_changes,                      \
        .last_id = p##_last_id, .col_i64 = p##_col_i64, .col_text = p##_col_text,                  \
        .notify = p##_notify, .watch_open = p##_watch_open, .watch_drain = p##_watch_drain,        \
        .watch_close = p##_watch_close,                                                            \
    }

extern const struct db_driver db_sqlite_driver;
extern const struct db_driver db_pg_driver;

/* Finalize every cached statement of c (its session is gone). */
void db_cache_drop(db_conn *c);

#endif
