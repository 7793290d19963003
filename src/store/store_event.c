/* store_event: the event log (store.h "event log"): appending an event
 * inside a caller's transaction, the events a VM record's or a job's
 * change makes, node health edges, reading and pruning the log, and the
 * webhooks' cursors with their leases.
 *
 * Id order (PostgreSQL). Ids come from the table's sequence, which hands
 * them out in the order transactions ask, not the order they commit: a
 * reader paging with `id > after` could see 8 committed, move its cursor
 * to 8, and never see 7 committed a moment later. So every append first
 * takes a transaction-scoped advisory lock on the log (DB_LOCK_EVENTLOG),
 * held until COMMIT or ROLLBACK: the next id is drawn only once every
 * transaction holding a smaller one has ended. The append is the last
 * statement of its transaction, so the lock is held for the commit alone.
 * SQLite serialises writers already (BEGIN IMMEDIATE).
 *
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>

#define EVENT_COLS "id, ts, type, owner, vmid, node, job, data"
#define PRUNE_BATCH 5000

void store_event_release(struct store_event *e)
{
    if (e) {
        json_decref(e->data);
        e->data = NULL;
    }
}

static const char SQL_EVENT_ADD[] = "INSERT INTO events (ts, type, owner, vmid, node, job, data)"
                                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7){RETURNING_ID}";

int store_log_add_in(db_conn *c, struct store_event *e, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_lock(c, DB_LOCK_EVENTLOG, "log", err);
    if (rc || (rc = db_prepare(c, SQL_EVENT_ADD, &st, err)))
        return rc;
    e->ts = wall_ms();
    db_bind_i64(st, 1, e->ts);
    DB_BIND_FIELD(st, 2, e->type);
    DB_BIND_FIELD(st, 3, e->owner);
    db_bind_i64(st, 4, e->vmid);
    DB_BIND_FIELD(st, 5, e->node);
    DB_BIND_FIELD(st, 6, e->job);
    if (e->data)
        db_bind_json(st, 7, e->data);
    else
        db_bind_text(st, 7, "{}");
    rc = db_run(st, err, "logging an event");
    if (rc == STORE_OK)
        e->id = db_last_id(st);
    db_done(st);
    return rc;
}

/* ---- what a VM record's change logs ----------------------------------------- */

static void change_str(json_t *ch, const char *field, const char *from, const char *to)
{
    if (strcmp(from, to) != 0)
        json_object_set_new(ch, field, json_pack("{s:s, s:s}", "from", from, "to", to));
}

static void change_int(json_t *ch, const char *field, int64_t from, int64_t to)
{
    if (from != to)
        json_object_set_new(
            ch, field, json_pack("{s:I, s:I}", "from", (json_int_t)from, "to", (json_int_t)to));
}

/* The fields that differ, {"field": {"from", "to"}}. */
static json_t *vm_changes(const struct vm_rec *o, const struct vm_rec *n)
{
    json_t *ch = json_object();
    change_str(ch, "state", vm_state_name(o->state), vm_state_name(n->state));
    change_str(ch, "node", o->node, n->node);
    change_str(ch, "power", o->power, n->power);
    change_int(ch, "cores", o->cores, n->cores);
    change_int(ch, "memory_mb", o->memory_mb, n->memory_mb);
    change_int(ch, "disk_gb", o->disk_gb, n->disk_gb);
    change_str(ch, "name", o->name, n->name);
    change_str(ch, "os", o->os, n->os);
    return ch;
}

/* The type of a state change, or NULL when it is not one that is told. */
static const char *state_event(enum vm_state from, enum vm_state to)
{
    if (to == VMS_DELETED)
        return "vm.deleted";
    if (to == VMS_LOST)
        return "vm.lost";
    if (from == VMS_CREATING && to == VMS_ENABLED)
        return "vm.created";
    if (from == VMS_CREATING && to == VMS_FAILED)
        return "vm.creation_failed";
    return NULL; /* creating, deleting: a job's step, told by the job */
}

static const char *power_event(const char *to)
{
    if (strcmp(to, "running") == 0)
        return "vm.started";
    if (strcmp(to, "stopped") == 0)
        return "vm.stopped";
    if (strcmp(to, "paused") == 0)
        return "vm.paused";
    return NULL; /* unknown */
}

static int vm_log(db_conn *c, const struct vm_rec *n, const struct vm_rec *o, const char *type,
                  json_t *changes, bool observed, struct store_error *err)
{
    struct store_event e = {0};
    snprintf(e.type, sizeof e.type, "%s", type);
    store_copy(e.owner, sizeof e.owner, n->owner, FIELD_LEN(n->owner));
    e.vmid = n->vmid;
    if (FIELD_LEN(n->node))
        store_copy(e.node, sizeof e.node, n->node, FIELD_LEN(n->node));
    else
        store_copy(e.node, sizeof e.node, o->node, FIELD_LEN(o->node));
    store_copy(e.job, sizeof e.job, n->job, FIELD_LEN(n->job));
    /* the record after the change, so a reader has the whole state */
    json_t *vm = json_pack("{s:s, s:s%, s:s%, s:i, s:I, s:I}", "state", vm_state_name(n->state),
                           "power", n->power, FIELD_LEN(n->power), "node", n->node,
                           FIELD_LEN(n->node), "cores", n->cores, "memory_mb",
                           (json_int_t)n->memory_mb, "disk_gb", (json_int_t)n->disk_gb);
    e.data = json_pack("{s:s%, s:O, s:o, s:b}", "name", n->name, FIELD_LEN(n->name), "changes",
                       changes, "vm", vm, "observed", observed);
    if (n->state == VMS_FAILED && FIELD_LEN(n->error))
        json_object_set_new(e.data, "error", json_stringn(n->error, FIELD_LEN(n->error)));
    int rc = store_log_add_in(c, &e, err);
    store_event_release(&e);
    return rc;
}

int store_event_vm_in(db_conn *c, const struct vm_rec *o, const struct vm_rec *n, bool observed,
                      struct store_error *err)
{
    json_t *ch = vm_changes(o, n);
    int rc = STORE_OK;
    if (json_object_size(ch) == 0)
        goto out;
    const char *t = o->state != n->state ? state_event(o->state, n->state) : NULL;
    if (t) { /* the change of state tells the rest that came with it */
        rc = vm_log(c, n, o, t, ch, observed, err);
        goto out;
    }
    if (vm_state_gone(n->state) || n->state == VMS_CREATING)
        goto out; /* a creation tells its outcome once, at its end */
    int told = 0;
    bool moved = FIELD_LEN(o->node) && FIELD_LEN(n->node) && json_object_get(ch, "node");
    if (moved && (rc = vm_log(c, n, o, "vm.moved", ch, observed, err)))
        goto out;
    told += moved;
    const char *pw = json_object_get(ch, "power") ? power_event(n->power) : NULL;
    if (pw && (rc = vm_log(c, n, o, pw, ch, observed, err)))
        goto out;
    told += pw != NULL;
    bool config = json_object_get(ch, "cores") || json_object_get(ch, "memory_mb");
    bool disk = json_object_get(ch, "disk_gb") != NULL;
    if (observed && (config || disk)) { /* changed outside proxd */
        rc = vm_log(c, n, o, "vm.drift", ch, observed, err);
        goto out;
    }
    if (disk && (rc = vm_log(c, n, o, "vm.resized", ch, observed, err)))
        goto out;
    told += disk;
    /* cores, memory, name; and anything else no event above told (a
     * power "unknown", a node first set, a state without an event) */
    if (config || !told)
        rc = vm_log(c, n, o, "vm.updated", ch, observed, err);
out:
    json_decref(ch);
    return rc;
}

int store_log_job_in(db_conn *c, const struct job_rec *j, const char *type, json_t *data,
                     struct store_error *err)
{
    struct store_event e = {0};
    snprintf(e.type, sizeof e.type, "%s", type);
    store_copy(e.owner, sizeof e.owner, j->owner, FIELD_LEN(j->owner));
    e.vmid = j->vmid;
    store_copy(e.node, sizeof e.node, j->node, FIELD_LEN(j->node));
    store_copy(e.job, sizeof e.job, j->id, FIELD_LEN(j->id));
    e.data = data;
    int rc = store_log_add_in(c, &e, err);
    store_event_release(&e);
    return rc;
}

int store_event_job_in(db_conn *c, const struct job_rec *j, enum job_state old_state,
                       struct store_error *err)
{
    if (j->state != JOB_FAILED || old_state == JOB_FAILED)
        return STORE_OK;
    return store_log_job_in(c, j, "job.failed",
                            json_pack("{s:s%, s:s%, s:s%}", "kind", j->kind, FIELD_LEN(j->kind),
                                      "step", j->step, FIELD_LEN(j->step), "error", j->error,
                                      FIELD_LEN(j->error)),
                            err);
}

/* ---- append, list, prune --------------------------------------------------------- */

static int append_fn(db_conn *c, void *ctx, struct store_error *err)
{
    return store_log_add_in(c, ctx, err);
}

int store_event_append(store *s, struct store_event *e, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && e, "store_event_append: NULL argument");
    STORE_CHECK(FIELD_LEN(e->type) > 0, "event type is empty");
    STORE_CHECK(!e->data || json_is_object(e->data), "event data must be an object");
    return db_tx(s->db, DB_WRITE, append_fn, e, err);
}

static const char SQL_EVENT_LIST[] =
    "SELECT " EVENT_COLS " FROM events WHERE id > ?1"
    " AND (CAST(?2 AS TEXT) = '' OR owner = CAST(?2 AS TEXT))"
    " AND ((CAST(?3 AS TEXT) = '' AND CAST(?4 AS TEXT) = '') OR type = CAST(?3 AS TEXT)"
    "      OR (CAST(?4 AS TEXT) <> '' AND substr(type, 1, length(CAST(?4 AS TEXT)))"
    "          = CAST(?4 AS TEXT)))"
    " ORDER BY id LIMIT ?5";

struct list_arg {
    const struct event_filter *f;
    char exact[STORE_EVENT_TYPE], prefix[STORE_EVENT_TYPE];
    int limit;
};

static void list_bind(db_stmt *st, const void *arg)
{
    const struct list_arg *a = arg;
    db_bind_i64(st, 1, a->f->after);
    db_bind_text(st, 2, a->f->owner ? a->f->owner : "");
    db_bind_text(st, 3, a->exact);
    db_bind_text(st, 4, a->prefix);
    db_bind_i64(st, 5, a->limit);
}

static int row_to_event(db_stmt *st, void *elem, struct store_error *err)
{
    struct store_event *e = elem;
    e->id = db_col_i64(st, 0);
    e->ts = db_col_i64(st, 1);
    DB_COL_FIELD(st, 2, e->type);
    DB_COL_FIELD(st, 3, e->owner);
    e->vmid = (int)db_col_i64(st, 4);
    DB_COL_FIELD(st, 5, e->node);
    DB_COL_FIELD(st, 6, e->job);
    return db_col_json(st, 7, &e->data, "events.data", err);
}

int store_event_list(store *s, const struct event_filter *f, struct store_event **out, size_t *n,
                     struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && f && out && n, "store_event_list: NULL argument");
    STORE_CHECK(f->after >= 0, "after %lld is negative", (long long)f->after);
    STORE_CHECK(f->limit >= 0 && f->limit <= STORE_LIST_MAX, "limit %d not in 0..%d", f->limit,
                STORE_LIST_MAX);
    struct list_arg a = {.f = f, .limit = f->limit ? f->limit : STORE_LIST_DEFAULT};
    if (f->type && *f->type) {
        size_t len = strlen(f->type);
        STORE_CHECK(len < STORE_EVENT_TYPE, "event type '%.40s' is too long", f->type);
        if (f->type[len - 1] == '*')
            snprintf(a.prefix, sizeof a.prefix, "%.*s", (int)(len - 1), f->type);
        else
            snprintf(a.exact, sizeof a.exact, "%s", f->type);
        if (len == 1) /* "*": any */
            a.prefix[0] = '\0';
    }
    struct store_read r = {
        SQL_EVENT_LIST, "listing events", list_bind, &a, sizeof(struct store_event), row_to_event};
    void *v = NULL;
    int rc = store_read_all(s, &r, &v, n, err);
    *out = v;
    return rc;
}

static const char SQL_EVENT_LAST[] = "SELECT coalesce(max(id), 0) FROM events";

static int last_row(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    *(int64_t *)elem = db_col_i64(st, 0);
    return STORE_OK;
}

int store_event_last_id(store *s, int64_t *id, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id, "store_event_last_id: NULL argument");
    struct store_read r = {SQL_EVENT_LAST, "reading the last event id", NULL, NULL, sizeof(int64_t),
                           last_row};
    void *v = NULL;
    size_t n = 0;
    int rc = store_read_all(s, &r, &v, &n, err);
    *id = rc == STORE_OK && n ? *(int64_t *)v : 0;
    free(v);
    return rc;
}

static const char SQL_EVENT_PRUNE[] = "DELETE FROM events WHERE id IN"
                                      " (SELECT id FROM events WHERE ts < ?1 ORDER BY id LIMIT ?2)";

struct prune_ctx {
    int64_t before, n;
};

static int prune_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct prune_ctx *p = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_EVENT_PRUNE, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, p->before);
    db_bind_i64(st, 2, PRUNE_BATCH);
    rc = db_run(st, err, "pruning events");
    p->n = rc ? 0 : db_changes(st);
    db_done(st);
    return rc;
}

int store_event_prune(store *s, int64_t before_ts, int64_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s, "store_event_prune: NULL argument");
    int64_t total = 0;
    int rc;
    for (;;) { /* batches: no transaction holds the log for long */
        struct prune_ctx p = {before_ts, 0};
        if ((rc = db_tx(s->db, DB_WRITE, prune_fn, &p, err)))
            break;
        total += p.n;
        if (p.n < PRUNE_BATCH)
            break;
    }
    if (n)
        *n = total;
    return rc;
}

/* ---- node health ------------------------------------------------------------------- */

static const char SQL_HEALTH_GET[] = "SELECT up FROM node_health WHERE node = ?1{FOR_UPDATE}";
static const char SQL_HEALTH_PUT[] =
    "INSERT INTO node_health (node, up, changed_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (node) DO UPDATE SET up = excluded.up, changed_at = excluded.changed_at";

struct health_ctx {
    const char *node, *why;
    bool up, changed;
};

static int health_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct health_ctx *h = ctx;
    db_stmt *st = NULL;
    h->changed = false;
    int rc = db_prepare(c, SQL_HEALTH_GET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, h->node);
    bool found = false;
    rc = db_step(st, &found, err, "reading node health");
    bool was_up = found && db_col_i64(st, 0) != 0;
    db_done(st);
    if (rc || (found && was_up == h->up))
        return rc;
    if ((rc = db_prepare(c, SQL_HEALTH_PUT, &st, err)))
        return rc;
    db_bind_text(st, 1, h->node);
    db_bind_i64(st, 2, h->up);
    db_bind_i64(st, 3, wall_ms());
    rc = db_run(st, err, "writing node health");
    db_done(st);
    if (rc || (!found && h->up)) /* first seen up: nothing happened */
        return rc;
    h->changed = true;
    struct store_event e = {0};
    snprintf(e.type, sizeof e.type, "%s", h->up ? "node.up" : "node.down");
    snprintf(e.node, sizeof e.node, "%s", h->node);
    e.data = json_pack("{s:s}", "reason", h->why ? h->why : "");
    rc = store_log_add_in(c, &e, err);
    store_event_release(&e);
    return rc;
}

int store_node_health_set(store *s, const char *node, bool up, const char *why, bool *changed,
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && node && *node, "store_node_health_set: no node");
    struct health_ctx h = {node, why, up, false};
    int rc = db_tx(s->db, DB_WRITE, health_fn, &h, err);
    if (changed)
        *changed = rc == STORE_OK && h.changed;
    return rc;
}

/* ---- webhook cursors ---------------------------------------------------------------- */

#define CURSOR_COLS "name, after, lease_owner, lease_until, delivered, dropped, gen, seek_at"
static const char SQL_CURSOR_NEW[] =
    "INSERT INTO webhook_cursor (name, after, updated_at)"
    " SELECT CAST(?1 AS TEXT), coalesce(max(id), 0), ?2 FROM events"
    " WHERE true" /* SQLite: an upsert after a SELECT needs a WHERE */
    " ON CONFLICT (name) DO NOTHING";
static const char SQL_CURSOR_TAKE[] =
    "UPDATE webhook_cursor SET lease_owner = ?2, lease_until = ?3, updated_at = ?4"
    " WHERE name = ?1 AND (lease_owner = ?2 OR lease_until < ?4)";
static const char SQL_CURSOR_GET[] = "SELECT " CURSOR_COLS " FROM webhook_cursor WHERE name = ?1";

struct cursor_ctx {
    const char *name, *owner, *by;
    int64_t lease_ms, after, gen;
    int delivered, dropped;
    struct webhook_cursor *out;
};

static int cursor_get(db_conn *c, const char *name, struct webhook_cursor *out,
                      struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CURSOR_GET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, name);
    bool found = false;
    rc = db_step(st, &found, err, "reading a webhook cursor");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no webhook cursor '%s'", name);
    if (rc == STORE_OK) {
        DB_COL_FIELD(st, 0, out->name);
        out->after = db_col_i64(st, 1);
        DB_COL_FIELD(st, 2, out->lease_owner);
        out->lease_until = db_col_i64(st, 3);
        out->delivered = db_col_i64(st, 4);
        out->dropped = db_col_i64(st, 5);
        out->gen = db_col_i64(st, 6);
        out->seek_at = db_col_i64(st, 7);
    }
    db_done(st);
    return rc;
}

static int claim_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cursor_ctx *k = ctx;
    int64_t now = wall_ms();
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CURSOR_NEW, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_i64(st, 2, now);
    rc = db_run(st, err, "making a webhook cursor");
    db_done(st);
    if (rc || (rc = db_prepare(c, SQL_CURSOR_TAKE, &st, err)))
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_text(st, 2, k->owner);
    db_bind_i64(st, 3, now + k->lease_ms);
    db_bind_i64(st, 4, now);
    rc = db_run(st, err, "leasing a webhook cursor");
    bool taken = rc == STORE_OK && db_changes(st) == 1;
    db_done(st);
    if (rc || (rc = cursor_get(c, k->name, k->out, err)))
        return rc;
    if (!taken)
        return store_fail(err, STORE_E_CONFLICT, "webhook '%s' is leased by '%s'", k->name,
                          k->out->lease_owner);
    return STORE_OK;
}

int store_webhook_claim(store *s, const char *name, const char *owner, int64_t lease_ms,
                        struct webhook_cursor *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name && owner && *owner && out, "store_webhook_claim: no name/owner");
    STORE_CHECK(lease_ms > 0, "lease_ms %lld must be positive", (long long)lease_ms);
    memset(out, 0, sizeof *out);
    struct cursor_ctx k = {.name = name, .owner = owner, .lease_ms = lease_ms, .out = out};
    return db_tx(s->db, DB_WRITE, claim_fn, &k, err);
}

static const char SQL_CURSOR_ADVANCE[] =
    "UPDATE webhook_cursor SET after = CASE WHEN after > ?3 THEN after ELSE ?3 END,"
    " lease_until = ?4, delivered = delivered + ?5, dropped = dropped + ?6, updated_at = ?7,"
    " last_dropped_at = CASE WHEN ?6 > 0 THEN ?7 ELSE last_dropped_at END"
    " WHERE name = ?1 AND lease_owner = ?2 AND gen = ?8";
static const char SQL_CURSOR_RELEASE[] =
    "UPDATE webhook_cursor SET lease_until = 0 WHERE name = ?1 AND lease_owner = ?2";

/* Run st, a write only the webhook's holder may make (its row matched by
 * owner, and by the seek count it read): none matched is a conflict. */
static int run_as_holder(db_stmt *st, const char *name, const char *owner, const char *what,
                         struct store_error *err)
{
    int rc = db_run(st, err, what);
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (none)
        rc = store_fail(err, STORE_E_CONFLICT,
                        "webhook '%s' is not leased by '%s' or its cursor was moved", name, owner);
    return rc;
}

static int advance_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cursor_ctx *k = ctx;
    int64_t now = wall_ms();
    db_stmt *st = NULL;
    bool release = k->lease_ms < 0;
    int rc = db_prepare(c, release ? SQL_CURSOR_RELEASE : SQL_CURSOR_ADVANCE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_text(st, 2, k->owner);
    if (!release) {
        db_bind_i64(st, 3, k->after);
        db_bind_i64(st, 4, now + k->lease_ms);
        db_bind_i64(st, 5, k->delivered);
        db_bind_i64(st, 6, k->dropped);
        db_bind_i64(st, 7, now);
        db_bind_i64(st, 8, k->gen);
    }
    return run_as_holder(st, k->name, k->owner, "moving a webhook cursor", err);
}

int store_webhook_advance(store *s, const char *name, const char *owner, int64_t gen, int64_t after,
                          int64_t lease_ms, int delivered, int dropped, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && owner, "store_webhook_advance: NULL argument");
    STORE_CHECK(lease_ms > 0, "lease_ms %lld must be positive", (long long)lease_ms);
    struct cursor_ctx k = {name, owner, NULL, lease_ms, after, gen, delivered, dropped, NULL};
    return db_tx(s->db, DB_WRITE, advance_fn, &k, err);
}

int store_webhook_release(store *s, const char *name, const char *owner, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && owner, "store_webhook_release: NULL argument");
    struct cursor_ctx k = {name, owner, NULL, -1, 0, 0, 0, 0, NULL};
    return db_tx(s->db, DB_WRITE, advance_fn, &k, err);
}

static const char SQL_CURSOR_FAILED[] =
    "UPDATE webhook_cursor SET last_error = ?3, last_error_at = ?4, updated_at = ?4"
    " WHERE name = ?1 AND lease_owner = ?2 AND gen = ?5";

struct failed_ctx {
    const char *name, *owner, *why;
    int64_t gen;
};

static int failed_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct failed_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CURSOR_FAILED, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_text(st, 2, k->owner);
    db_bind_text(st, 3, k->why);
    db_bind_i64(st, 4, wall_ms());
    db_bind_i64(st, 5, k->gen);
    return run_as_holder(st, k->name, k->owner, "recording a webhook's failure", err);
}

int store_webhook_failed(store *s, const char *name, const char *owner, int64_t gen,
                         const char *why, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && owner && why, "store_webhook_failed: NULL argument");
    STORE_CHECK(strlen(why) < sizeof((struct webhook_status *)0)->last_error,
                "a webhook's failure text is longer than %zu bytes",
                sizeof((struct webhook_status *)0)->last_error - 1);
    struct failed_ctx k = {name, owner, why, gen};
    return db_tx(s->db, DB_WRITE, failed_fn, &k, err);
}

/* An admin's change of a webhook's cursor, in the event log (data taken). */
static int log_webhook(db_conn *c, const char *type, const char *by, json_t *data,
                       struct store_error *err)
{
    struct store_event e;
    memset(&e, 0, sizeof e);
    snprintf(e.type, sizeof e.type, "%s", type);
    json_object_set_new(data, "by", json_string(by));
    e.data = data;
    int rc = store_log_add_in(c, &e, err);
    json_decref(data);
    return rc;
}

/* The seek count first: on PostgreSQL that UPDATE takes the row's lock
 * (waiting for a holder's cursor move under way), so the row read after it
 * is the cursor as it now is. Read first, a move committed between the
 * read and the write went untold ("moved from 34" when it was 35). */
static const char SQL_CURSOR_SEEK_GEN[] =
    "UPDATE webhook_cursor SET gen = gen + 1, seek_at = ?2, updated_at = ?2 WHERE name = ?1";
static const char SQL_CURSOR_SEEK[] = "UPDATE webhook_cursor SET after = ?2 WHERE name = ?1";
static const char SQL_LOG_END[] = "SELECT coalesce(max(id), 0) FROM events";

static int seek_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cursor_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CURSOR_SEEK_GEN, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_i64(st, 2, wall_ms());
    rc = db_run(st, err, "counting a webhook's seek");
    db_done(st);
    if (rc || (rc = cursor_get(c, k->name, k->out, err)) ||
        (rc = db_prepare(c, SQL_LOG_END, &st, err)))
        return rc;
    bool row = false;
    rc = db_step(st, &row, err, "reading the event log's end");
    int64_t end = row ? db_col_i64(st, 0) : 0;
    db_done(st);
    if (rc == STORE_OK && k->after > end) {
        rc = store_fail(err, STORE_E_INVALID,
                        "after: %lld is past the event log's last event (%lld)",
                        (long long)k->after, (long long)end);
        if (err)
            snprintf(err->field, sizeof err->field, "after");
    }
    if (rc || (rc = db_prepare(c, SQL_CURSOR_SEEK, &st, err)))
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_i64(st, 2, k->after);
    rc = db_run(st, err, "moving a webhook cursor");
    db_done(st);
    if (rc == STORE_OK)
        rc = log_webhook(c, STORE_EV_WEBHOOK_MOVED, k->by,
                         json_pack("{s:s,s:I,s:I}", "webhook", k->name, "from",
                                   (json_int_t)k->out->after, "to", (json_int_t)k->after),
                         err);
    return rc;
}

int store_webhook_seek(store *s, const char *name, int64_t after, const char *by,
                       struct webhook_cursor *was, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && by && was, "store_webhook_seek: NULL argument");
    STORE_CHECK(after >= 0, "after %lld must not be negative", (long long)after);
    memset(was, 0, sizeof *was);
    struct cursor_ctx k = {.name = name, .by = by, .after = after, .out = was};
    return db_tx(s->db, DB_WRITE, seek_fn, &k, err);
}

struct get_ctx {
    const char *name, *by;
    struct webhook_cursor *out;
};

static const char SQL_CURSOR_FORGET[] =
    "DELETE FROM webhook_cursor WHERE name = ?1 AND (lease_owner = '' OR lease_until < ?2)";

static int forget_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct get_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_CURSOR_FORGET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_i64(st, 2, wall_ms());
    rc = db_run(st, err, "forgetting a webhook cursor");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (none && (rc = cursor_get(c, k->name, k->out, err)) == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "webhook '%s' is delivered by '%s'", k->name,
                        k->out->lease_owner);
    if (rc == STORE_OK)
        rc = log_webhook(c, STORE_EV_WEBHOOK_FORGOTTEN, k->by,
                         json_pack("{s:s}", "webhook", k->name), err);
    return rc;
}

int store_webhook_forget(store *s, const char *name, const char *by, struct webhook_cursor *held,
                         struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && by && held, "store_webhook_forget: NULL argument");
    memset(held, 0, sizeof *held);
    struct get_ctx k = {name, by, held};
    return db_tx(s->db, DB_WRITE, forget_fn, &k, err);
}

static int get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct get_ctx *k = ctx;
    return cursor_get(c, k->name, k->out, err);
}

int store_webhook_get(store *s, const char *name, struct webhook_cursor *out,
                      struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && out, "store_webhook_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct get_ctx k = {name, NULL, out};
    return db_tx(s->db, DB_READ, get_fn, &k, err);
}

/* One statement, so the cursor and what is behind it are of one moment.
 * The count stops at a bound (?1, STORE_WEBHOOK_BEHIND_MAX): a cursor left
 * behind for days (a webhook removed from the configuration) must not make
 * each look a scan of the whole log. */
static const char SQL_CURSOR_LIST[] =
    "SELECT " CURSOR_COLS ", last_error, last_error_at, updated_at, last_dropped_at,"
    " (SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.id > w.after LIMIT ?1) t),"
    " coalesce((SELECT e.ts FROM events e WHERE e.id > w.after ORDER BY e.id LIMIT 1), 0)"
    " FROM webhook_cursor w ORDER BY name";

static void bind_behind_max(db_stmt *st, const void *arg)
{
    (void)arg;
    db_bind_i64(st, 1, STORE_WEBHOOK_BEHIND_MAX);
}

static int row_to_status(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct webhook_status *w = elem;
    DB_COL_FIELD(st, 0, w->c.name);
    w->c.after = db_col_i64(st, 1);
    DB_COL_FIELD(st, 2, w->c.lease_owner);
    w->c.lease_until = db_col_i64(st, 3);
    w->c.delivered = db_col_i64(st, 4);
    w->c.dropped = db_col_i64(st, 5);
    w->c.gen = db_col_i64(st, 6);
    w->c.seek_at = db_col_i64(st, 7);
    DB_COL_FIELD(st, 8, w->last_error);
    w->last_error_at = db_col_i64(st, 9);
    w->updated_at = db_col_i64(st, 10);
    w->last_dropped_at = db_col_i64(st, 11);
    w->behind = db_col_i64(st, 12);
    w->oldest_ts = db_col_i64(st, 13);
    return STORE_OK;
}

int store_webhook_list(store *s, struct webhook_status **out, size_t *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_webhook_list: NULL argument");
    const struct store_read r = {SQL_CURSOR_LIST, "listing webhook cursors",
                                 bind_behind_max, NULL,
                                 sizeof **out,    row_to_status};
    return store_read_all(s, &r, (void **)out, n, err);
}

static const char SQL_EVENT_HEADS[] =
    "SELECT id, ts, type FROM events WHERE id > ?1 ORDER BY id LIMIT ?2";

static void bind_heads(db_stmt *st, const void *arg)
{
    db_bind_i64(st, 1, *(const int64_t *)arg);
    db_bind_i64(st, 2, STORE_WEBHOOK_BEHIND_MAX);
}

static int row_to_head(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct event_head *h = elem;
    h->id = db_col_i64(st, 0);
    h->ts = db_col_i64(st, 1);
    DB_COL_FIELD(st, 2, h->type);
    return STORE_OK;
}

int store_event_heads_after(store *s, int64_t after, struct event_head **out, size_t *n,
                            struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_event_heads_after: NULL argument");
    const struct store_read r = {SQL_EVENT_HEADS, "listing the events after a cursor",
                                 bind_heads,      &after,
                                 sizeof **out,    row_to_head};
    return store_read_all(s, &r, (void **)out, n, err);
}
