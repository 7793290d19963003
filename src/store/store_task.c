/* store_task: the tasks proxd's calls started, known to every instance
 * (store.h). One row per UPID; a lookup after a lost answer asks whether a
 * task on the node's list is one of them. The table is kept short by the
 * writers: every PRUNE_EVERY-th note of a process also deletes the rows
 * older than STORE_TASK_KEEP_MS (in a transaction of its own, after the
 * note's), so no background thread is needed and a busy proxd prunes as
 * often as it adds; a row lives at least STORE_TASK_KEEP_MS.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/log.h"
#include "common/util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define UPID_MAX 256   /* PVE_UPID_MAX: the store does not include pve.h */
#define PRUNE_EVERY 64 /* notes between two prunes, per process */

static const char SQL_TASK_NOTE[] =
    "INSERT INTO tasks_seen (upid, at) VALUES (?1, ?2) ON CONFLICT (upid) DO NOTHING";
static const char SQL_TASK_PRUNE[] = "DELETE FROM tasks_seen WHERE at < ?1";
static const char SQL_TASK_ONE[] = "SELECT 1 FROM tasks_seen WHERE upid = ?1";

static atomic_uint notes;

static int note_fn(db_conn *c, void *ctx, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_TASK_NOTE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, ctx);
    db_bind_i64(st, 2, wall_ms());
    rc = db_run(st, err, "recording a task");
    db_done(st);
    return rc;
}

static int prune_fn(db_conn *c, void *ctx, struct store_error *err)
{
    (void)ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_TASK_PRUNE, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, wall_ms() - STORE_TASK_KEEP_MS);
    rc = db_run(st, err, "forgetting old tasks");
    db_done(st);
    return rc;
}

static int check_upid(const char *fn, const char *upid, struct store_error *err)
{
    if (!upid || !*upid || strlen(upid) >= UPID_MAX)
        return store_fail(err, STORE_E_INVALID, "%s: empty or over-long UPID", fn);
    return STORE_OK;
}

int store_task_note(store *s, const char *upid, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_task_note: NULL store");
    int rc = check_upid("store_task_note", upid, err);
    if (rc)
        return rc;
    if ((rc = db_tx(s->db, DB_WRITE, note_fn, (void *)upid, err)))
        return rc;
    /* in a transaction of its own: a prune that fails leaves the note */
    struct store_error pe;
    if (atomic_fetch_add(&notes, 1) % PRUNE_EVERY == PRUNE_EVERY - 1 &&
        db_tx(s->db, DB_WRITE, prune_fn, NULL, &pe))
        log_warn("store", "old tasks not forgotten: %s", pe.message);
    return STORE_OK;
}

static void bind_upid(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

static int row_seen(db_stmt *st, void *elem, struct store_error *err)
{
    (void)st;
    (void)err;
    *(char *)elem = 1;
    return STORE_OK;
}

int store_task_noted(store *s, const char *upid, bool *noted, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && noted, "store_task_noted: NULL argument");
    *noted = false;
    int rc = check_upid("store_task_noted", upid, err);
    if (rc)
        return rc;
    const struct store_read r = {SQL_TASK_ONE, "looking for a task", bind_upid, upid, 1, row_seen};
    char *rows = NULL;
    size_t n = 0;
    rc = store_read_all(s, &r, (void **)&rows, &n, err);
    if (rc == STORE_OK)
        *noted = n > 0;
    free(rows);
    return rc;
}
