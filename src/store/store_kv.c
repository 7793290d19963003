/* store_kv: small named settings shared by every instance (store.h), as
 * written and read at run time: node cordons are kept here
 * ("cordon:<node>"), so every proxd on one database sees them. (The
 * first-start defaults are store_kv_setdefault in store_submit.c.)
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_KV_SET[] = "INSERT INTO kv (name, value, created_at) VALUES (?1, ?2, ?3)"
                                 " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                                 "   created_at = excluded.created_at";
static const char SQL_KV_DEL_ONE[] = "DELETE FROM kv WHERE name = ?1";
static const char SQL_KV_ONE[] = "SELECT name, value, created_at FROM kv WHERE name = ?1";
static const char SQL_KV_PREFIX[] =
    "SELECT name, value, created_at FROM kv"
    " WHERE substr(name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT) ORDER BY name";

struct kvset_ctx {
    const char *name, *value;
};

static int kv_set_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct kvset_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_KV_SET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_text(st, 2, k->value);
    db_bind_i64(st, 3, wall_ms());
    rc = db_run(st, err, "writing a setting");
    db_done(st);
    return rc;
}

int store_kv_set(store *s, const char *name, const char *value, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name && value, "store_kv_set: NULL or empty argument");
    STORE_CHECK(strlen(name) < sizeof((struct store_kv *)0)->name &&
                    strlen(value) < sizeof((struct store_kv *)0)->value,
                "store_kv_set: name or value too long");
    struct kvset_ctx k = {name, value};
    return db_tx(s->db, DB_WRITE, kv_set_fn, &k, err);
}

static int kv_del_fn(db_conn *c, const char *name, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_KV_DEL_ONE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, name);
    rc = db_run(st, err, "removing a setting");
    db_done(st);
    return rc;
}

struct kvlog_ctx {
    const char *name, *value; /* value NULL: delete */
    struct store_event *ev;
};

static int kv_logged_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct kvlog_ctx *k = ctx;
    int rc;
    if (k->value) {
        struct kvset_ctx set = {k->name, k->value};
        rc = kv_set_fn(c, &set, err);
    } else {
        rc = kv_del_fn(c, k->name, err);
    }
    /* the event last: it takes the log's commit-order lock (store.h) */
    return rc ? rc : store_log_add_in(c, k->ev, err);
}

int store_kv_write_logged(store *s, const char *name, const char *value, struct store_event *ev,
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name && ev, "store_kv_write_logged: NULL or empty argument");
    STORE_CHECK(strlen(name) < sizeof((struct store_kv *)0)->name &&
                    (!value || strlen(value) < sizeof((struct store_kv *)0)->value),
                "store_kv_write_logged: name or value too long");
    struct kvlog_ctx k = {name, value, ev};
    return db_tx(s->db, DB_WRITE, kv_logged_fn, &k, err);
}

static int row_to_kv(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct store_kv *kv = elem;
    DB_COL_FIELD(st, 0, kv->name);
    DB_COL_FIELD(st, 1, kv->value);
    kv->created_at = db_col_i64(st, 2);
    return STORE_OK;
}

struct kvchange_ctx {
    const char *name;
    store_kv_decide_fn decide;
    void *ctx;
    bool changed;
    struct store_kv_cancel *cancel; /* NULL: none */
    store *s;
};

/* The setting was removed: cancel the unfinished job cancel names, if any
 * (after the setting's write, before its event: the log's lock last). */
static int kv_cancel_in(db_conn *c, store *s, struct store_kv_cancel *kc, struct store_error *err)
{
    char id[40] = "";
    int rc = store_job_active_in(c, kc->kind, kc->node, id, err);
    if (rc == STORE_E_NOTFOUND) {
        store_err_clear(err);
        return STORE_OK;
    }
    if (rc)
        return rc;
    struct job_rec j = {0};
    enum store_cancel out = 0;
    rc = store_job_cancel_in(c, s, id, kc->req, &j, &out, err);
    job_rec_release(&j);
    if (rc == STORE_E_CONFLICT) { /* finished meanwhile (it read unfinished under no row lock) */
        store_err_clear(err);
        return STORE_OK;
    }
    if (rc == STORE_OK) {
        snprintf(kc->job, sizeof kc->job, "%s", id);
        kc->outcome = out;
    }
    return rc;
}

static int kv_change_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct kvchange_ctx *k = ctx;
    k->changed = false;
    if (k->cancel) { /* a try again starts over */
        k->cancel->job[0] = '\0';
        k->cancel->outcome = 0;
    }
    /* the deciders of one setting, one at a time in every process */
    int rc = db_lock(c, DB_LOCK_KV, k->name, err);
    if (rc)
        return rc;
    db_stmt *st = NULL;
    if ((rc = db_prepare(c, SQL_KV_ONE, &st, err)))
        return rc;
    db_bind_text(st, 1, k->name);
    bool found = false;
    struct store_kv *cur = NULL;
    rc = db_step(st, &found, err, "reading a setting");
    if (rc == STORE_OK && found) {
        cur = xcalloc(1, sizeof *cur);
        rc = row_to_kv(st, cur, err);
    }
    db_done(st);
    if (rc) {
        free(cur);
        return rc;
    }
    char *next = NULL;
    struct store_event ev = {0};
    if (k->decide(cur, k->ctx, &next, &ev)) {
        if (next && strlen(next) >= sizeof((struct store_kv *)0)->value)
            rc = store_fail(err, STORE_E_INVALID, "setting '%s': value too long", k->name);
        else if (!next && k->cancel) {
            if (!(rc = kv_del_fn(c, k->name, err)) &&
                !(rc = kv_cancel_in(c, k->s, k->cancel, err)) && ev.type[0])
                rc = store_log_add_in(c, &ev, err);
        } else if (ev.type[0]) {
            struct kvlog_ctx w = {k->name, next, &ev};
            rc = kv_logged_fn(c, &w, err);
        } else if (next) {
            struct kvset_ctx w = {k->name, next};
            rc = kv_set_fn(c, &w, err);
        } else {
            rc = kv_del_fn(c, k->name, err);
        }
        k->changed = rc == STORE_OK;
    }
    store_event_release(&ev);
    free(next);
    free(cur);
    return rc;
}

int store_kv_change_logged(store *s, const char *name, store_kv_decide_fn decide, void *ctx,
                           bool *changed, struct store_error *err)
{
    store_err_clear(err);
    if (changed)
        *changed = false;
    STORE_CHECK(s && name && *name && decide, "store_kv_change_logged: NULL or empty argument");
    STORE_CHECK(strlen(name) < sizeof((struct store_kv *)0)->name,
                "store_kv_change_logged: name too long");
    struct kvchange_ctx k = {name, decide, ctx, false, NULL, s};
    int rc = db_tx(s->db, DB_WRITE, kv_change_fn, &k, err);
    if (rc == STORE_OK && changed)
        *changed = k.changed;
    return rc;
}

int store_kv_change_cancel(store *s, const char *name, store_kv_decide_fn decide, void *ctx,
                           struct store_kv_cancel *cancel, bool *changed, struct store_error *err)
{
    store_err_clear(err);
    if (changed)
        *changed = false;
    STORE_CHECK(s && name && *name && decide && cancel && cancel->kind && *cancel->kind &&
                    cancel->node && *cancel->node && cancel->req && cancel->req->by &&
                    *cancel->req->by && cancel->req->error,
                "store_kv_change_cancel: NULL or empty argument");
    STORE_CHECK(strlen(name) < sizeof((struct store_kv *)0)->name,
                "store_kv_change_cancel: name too long");
    cancel->job[0] = '\0';
    cancel->outcome = 0;
    struct kvchange_ctx k = {name, decide, ctx, false, cancel, s};
    int rc = db_tx(s->db, DB_WRITE, kv_change_fn, &k, err);
    if (rc == STORE_OK && changed)
        *changed = k.changed;
    if (rc) {
        cancel->job[0] = '\0';
        cancel->outcome = 0;
    }
    return rc;
}

static void bind_text1(db_stmt *st, const void *arg)
{
    db_bind_text(st, 1, arg);
}

int store_kv_get(store *s, const char *name, struct store_kv *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name && out, "store_kv_get: NULL or empty argument");
    const struct store_read r = {SQL_KV_ONE, "reading a setting", bind_text1,
                                 name,       sizeof *out,         row_to_kv};
    struct store_kv *v = NULL;
    size_t n = 0;
    int rc = store_read_all(s, &r, (void **)&v, &n, err);
    if (rc == STORE_OK && n == 0)
        rc = store_fail(err, STORE_E_NOTFOUND, "no setting '%s'", name);
    if (rc == STORE_OK)
        *out = v[0];
    free(v);
    return rc;
}

int store_kv_list(store *s, const char *prefix, struct store_kv **out, size_t *n,
                  struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && prefix && out && n, "store_kv_list: NULL argument");
    const struct store_read r = {SQL_KV_PREFIX, "listing settings", bind_text1,
                                 prefix,        sizeof **out,       row_to_kv};
    return store_read_all(s, &r, (void **)out, n, err);
}
