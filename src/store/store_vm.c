/* store_vm: VM records (store.h "VM records"): insert, update, reads and
 * the filtered, paged listing. Each public function is one transaction;
 * store_vm_insert_in is the insert inside a caller's (a creation's
 * submission). Errors as store.h says; records returned own their
 * `pending` (vm_rec_release).
 * store_vm_update_if is the same write made conditional on the record's
 * state (and last write) in its own WHERE, so that no other writer, in this
 * process or another sharing the database, lands between a check and the
 * write.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define VM_COLS                                                                                    \
    "id, vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, job, error, "       \
    "pending, created_at, updated_at"

/* Every field is written (no memset of the whole record: a page reads a
 * hundred of them); strings are NUL-terminated, the bytes after the NUL
 * are not cleared. */
static int row_to_vm(db_stmt *st, struct vm_rec *r, struct store_error *err)
{
    r->pending = NULL;
    r->id = db_col_i64(st, 0);
    r->vmid = (int)db_col_i64(st, 1);
    DB_COL_FIELD(st, 2, r->os);
    DB_COL_FIELD(st, 3, r->name);
    DB_COL_FIELD(st, 4, r->owner);
    DB_COL_FIELD(st, 5, r->node);
    const char *state = db_col_text(st, 6);
    int sv = vm_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in vms id %lld", state ? state : "",
                          (long long)r->id);
    r->state = (enum vm_state)sv;
    DB_COL_FIELD(st, 7, r->power);
    r->cores = (int)db_col_i64(st, 8);
    r->memory_mb = db_col_i64(st, 9);
    r->disk_gb = db_col_i64(st, 10);
    DB_COL_FIELD(st, 11, r->job);
    DB_COL_FIELD(st, 12, r->error);
    r->created_at = db_col_i64(st, 14);
    r->updated_at = db_col_i64(st, 15);
    return db_col_json(st, 13, &r->pending, "vms.pending", err);
}

/* The mutable fields as ?2..?14 (shared by insert and update). */
static void bind_vm_fields(db_stmt *st, const struct vm_rec *r, int64_t now)
{
    DB_BIND_FIELD(st, 2, r->os);
    DB_BIND_FIELD(st, 3, r->name);
    DB_BIND_FIELD(st, 4, r->owner);
    DB_BIND_FIELD(st, 5, r->node);
    db_bind_text(st, 6, vm_state_name(r->state));
    DB_BIND_FIELD(st, 7, r->power);
    db_bind_i64(st, 8, r->cores);
    db_bind_i64(st, 9, r->memory_mb);
    db_bind_i64(st, 10, r->disk_gb);
    DB_BIND_FIELD(st, 11, r->job);
    DB_BIND_FIELD(st, 12, r->error);
    db_bind_json(st, 13, r->pending);
    db_bind_i64(st, 14, now);
}

static const char SQL_VM_INSERT[] =
    "INSERT INTO vms (vmid, os, name, owner, node, state, power, cores, memory_mb, disk_gb, "
    "job, error, pending, updated_at, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15){RETURNING_ID}";

int store_vm_insert_in(db_conn *c, struct vm_rec *r, struct store_error *err)
{
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int64_t created = r->created_at ? r->created_at : now;
    int rc = db_prepare(c, SQL_VM_INSERT, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, r->vmid);
    bind_vm_fields(st, r, now);
    db_bind_i64(st, 15, created);
    rc = db_run(st, err, "inserting VM record");
    if (rc == STORE_E_CONFLICT)
        rc = store_fail(err, STORE_E_CONFLICT, "VMID %d already has a live VM record", r->vmid);
    if (rc == STORE_OK) {
        r->id = db_last_id(st);
        r->created_at = created;
        r->updated_at = now;
    }
    db_done(st);
    return rc;
}

struct vm_insert_ctx {
    struct vm_rec *r;
    int64_t adopt_from;
};

static int vm_insert_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct vm_insert_ctx *k = ctx;
    int rc = store_vm_insert_in(c, k->r, err);
    if (rc == STORE_OK && k->adopt_from)
        rc = store_addr_rebind_in(c, k->adopt_from, k->r->id, k->r->vmid, err);
    return rc;
}

int store_vm_insert_adopt(store *s, struct vm_rec *r, int64_t adopt_from, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && r, "store_vm_insert: NULL argument");
    STORE_CHECK(adopt_from >= 0, "adopt_from %lld is negative", (long long)adopt_from);
    int rc = store_check_vm(r, err);
    struct vm_insert_ctx k = {r, adopt_from};
    return rc ? rc : db_tx(s->db, DB_WRITE, vm_insert_fn, &k, err);
}

int store_vm_insert(store *s, struct vm_rec *r, struct store_error *err)
{
    return store_vm_insert_adopt(s, r, 0, err);
}

/* vmid and created_at are not mutable. */
#define SQL_VM_SET                                                                                 \
    "UPDATE vms SET os = ?2, name = ?3, owner = ?4, node = ?5, state = ?6, power = ?7, "           \
    "cores = ?8, memory_mb = ?9, disk_gb = ?10, job = ?11, error = ?12, pending = ?13, "           \
    "updated_at = ?14 WHERE id = ?1"
static const char SQL_VM_UPDATE[] = SQL_VM_SET;
/* the same, while the record is in state ?15 and, unless ?16 is 0, was
 * last written at ?16: the check and the write are one statement */
static const char SQL_VM_UPDATE_IF[] =
    SQL_VM_SET " AND state = ?15 AND (updated_at = ?16 OR CAST(?16 AS BIGINT) = 0)";
static const char SQL_VM_STATE_OF[] = "SELECT state, updated_at FROM vms WHERE id = ?1";
/* the record as stored, locked until the write: what changed is logged */
static const char SQL_VM_OLD[] = "SELECT " VM_COLS " FROM vms WHERE id = ?1{FOR_UPDATE}";

struct vm_update_ctx {
    const struct vm_rec *r;
    const store *s; /* its address policy */
    bool cond;      /* store_vm_update_if: only from `expected` (and `read_at`) */
    enum vm_state expected;
    int64_t read_at;
    struct store_event *ev; /* store_vm_update_logged: logged with the change */
    int64_t since;
};

static const char SQL_EVENT_OF_JOB[] =
    "SELECT 1 FROM events WHERE ts >= ?1 AND job = ?2 AND type = ?3 LIMIT 1";

/* The job's event ev, unless the log has one of its type for the job from
 * `since` on (the same outcome written again after a crash). */
static int log_once(db_conn *c, struct store_event *ev, int64_t since, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_EVENT_OF_JOB, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, since);
    DB_BIND_FIELD(st, 2, ev->job);
    DB_BIND_FIELD(st, 3, ev->type);
    bool found = false;
    rc = db_step(st, &found, err, "looking for a job's event");
    db_done(st);
    if (rc || found)
        return rc;
    return store_log_add_in(c, ev, err);
}

/* After a conditional update matched no row: say whether the record is
 * missing, or what it holds now. */
static int vm_why_not(db_conn *c, const struct vm_update_ctx *u, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VM_STATE_OF, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, u->r->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading VM record state");
    if (rc == STORE_OK && !found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)u->r->id);
    } else if (rc == STORE_OK) {
        const char *state = db_col_text(st, 0);
        if (vm_state_parse(state) != (int)u->expected)
            rc = store_fail(err, STORE_E_CONFLICT, "VM record %lld is %s, not %s",
                            (long long)u->r->id, state ? state : "?", vm_state_name(u->expected));
        else
            rc = store_fail(err, STORE_E_CONFLICT,
                            "VM record %lld was written at %lld, after %lld when it was read",
                            (long long)u->r->id, (long long)db_col_i64(st, 1),
                            (long long)u->read_at);
    }
    db_done(st);
    return rc;
}

/* The record as stored (o->pending is released at once: not compared). */
static int vm_old(db_conn *c, int64_t id, struct vm_rec *o, bool *found, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VM_OLD, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, id);
    rc = db_step(st, found, err, "reading VM record");
    if (rc == STORE_OK && *found) {
        rc = row_to_vm(st, o, err);
        vm_rec_release(o);
    }
    db_done(st);
    return rc;
}

static int vm_update_fn(db_conn *c, void *ctx, struct store_error *err)
{
    const struct vm_update_ctx *u = ctx;
    const struct vm_rec *r = u->r;
    db_stmt *st = NULL;
    struct vm_rec old;
    bool found = false;
    int rc = vm_old(c, r->id, &old, &found, err);
    if (rc)
        return rc;
    if (!found)
        return store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)r->id);
    if ((rc = db_prepare(c, u->cond ? SQL_VM_UPDATE_IF : SQL_VM_UPDATE, &st, err)))
        return rc;
    db_bind_i64(st, 1, r->id);
    bind_vm_fields(st, r, wall_ms());
    if (u->cond) {
        db_bind_text(st, 15, vm_state_name(u->expected));
        db_bind_i64(st, 16, u->read_at);
    }
    rc = db_run(st, err, "updating VM record");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (rc == STORE_E_CONFLICT)
        return store_fail(err, STORE_E_CONFLICT, "VMID %d already has another live VM record",
                          r->vmid);
    if (none && u->cond)
        return vm_why_not(c, u, err);
    if (none)
        return store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)r->id);
    /* gone: its addresses go back in this transaction (a crash cannot
     * leave a gone record holding them, nor release them from a live one) */
    if (rc == STORE_OK && u->s->has_policy && vm_state_gone(r->state))
        rc = store_addr_release_vm_in(c, r->id, u->s->q, u->s->nq, NULL, err);
    /* last (it takes the event log's lock); read_at is the reconciler's:
     * what it wrote, it observed */
    if (!rc)
        rc = store_event_vm_in(c, &old, r, u->cond && u->read_at != 0, err);
    return rc || !u->ev ? rc : log_once(c, u->ev, u->since, err);
}

int store_vm_update(store *s, const struct vm_rec *r, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && r, "store_vm_update: NULL argument");
    int rc = store_check_vm(r, err);
    struct vm_update_ctx u = {.r = r, .s = s};
    return rc ? rc : db_tx(s->db, DB_WRITE, vm_update_fn, &u, err);
}

int store_vm_update_if(store *s, const struct vm_rec *r, enum vm_state expected, int64_t read_at,
                       struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && r, "store_vm_update_if: NULL argument");
    STORE_CHECK((unsigned)expected <= VMS_LOST, "expected VM state %d unknown", (int)expected);
    STORE_CHECK(read_at >= 0, "read_at %lld is negative", (long long)read_at);
    int rc = store_check_vm(r, err);
    struct vm_update_ctx u = {r, s, true, expected, read_at, NULL, 0};
    return rc ? rc : db_tx(s->db, DB_WRITE, vm_update_fn, &u, err);
}

int store_vm_update_logged(store *s, const struct vm_rec *r, enum vm_state expected,
                           struct store_event *ev, int64_t since, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && r && ev, "store_vm_update_logged: NULL argument");
    STORE_CHECK((unsigned)expected <= VMS_LOST, "expected VM state %d unknown", (int)expected);
    STORE_CHECK(FIELD_LEN(ev->type) > 0 && FIELD_LEN(ev->job) > 0,
                "store_vm_update_logged: the event needs a type and a job");
    STORE_CHECK(!ev->data || json_is_object(ev->data), "event data must be an object");
    int rc = store_check_vm(r, err);
    struct vm_update_ctx u = {r, s, true, expected, 0, ev, since};
    return rc ? rc : db_tx(s->db, DB_WRITE, vm_update_fn, &u, err);
}

struct vm_get_ctx {
    const char *sql;
    int64_t key;
    struct vm_rec *out;
};

static const char SQL_VM_GET[] =
    "SELECT " VM_COLS " FROM vms WHERE vmid = ?1 AND state NOT IN {GONE}";
static const char SQL_VM_GET_ID[] = "SELECT " VM_COLS " FROM vms WHERE id = ?1";

static int vm_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct vm_get_ctx *g = ctx;
    db_stmt *st = NULL;
    vm_rec_release(g->out);
    int rc = db_prepare(c, g->sql, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, g->key);
    bool found = false;
    rc = db_step(st, &found, err, "reading VM record");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND,
                        g->sql == SQL_VM_GET ? "no live VM record for VMID %lld"
                                             : "no VM record with id %lld",
                        (long long)g->key);
    if (rc == STORE_OK)
        rc = row_to_vm(st, g->out, err);
    db_done(st);
    return rc;
}

static int vm_get(store *s, const char *sql, int64_t key, struct vm_rec *out,
                  struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out, "store_vm_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct vm_get_ctx g = {sql, key, out};
    int rc = db_tx(s->db, DB_READ, vm_get_fn, &g, err);
    if (rc)
        vm_rec_release(out);
    return rc;
}

int store_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err)
{
    return vm_get(s, SQL_VM_GET, vmid, out, err);
}

int store_vm_get_id(store *s, int64_t id, struct vm_rec *out, struct store_error *err)
{
    return vm_get(s, SQL_VM_GET_ID, id, out, err);
}

/* ---- listing ----------------------------------------------------------------- */

/* The statement is made for the filters given (one per combination of
 * owner, node, os and the state condition), so that no row pays for
 * conditions that were not asked for, and one filter drives the walk: a
 * plain equality served by its (column, id) index, walked in id order from
 * the cursor. A page then reads about `limit` rows whatever the table's
 * size, unless the other filters drop most of them. On SQLite the other
 * filters are written "+col = ?" ({NOIDX}: a unary + keeps its planner,
 * which has no statistics, from choosing their index). The driver is the
 * most selective filter given, in this order: owner (a tenant's VMs),
 * node, state, os; without filters the id range is the walk. The live-state
 * condition is spelled as inequalities: "NOT IN (list)" makes SQLite probe
 * a temporary index for every row. Parameters are numbered in the order
 * after_id, owner, node, os, state (those given), limit. */
#define VM_LIST_OWNER 1
#define VM_LIST_NODE 2
#define VM_LIST_OS 4
enum { VM_LIST_LIVE, VM_LIST_STATE, VM_LIST_ALL }; /* the state condition */
#define VM_LIST_VARIANTS (8 * 3)
#define VM_LIST_SQL_MAX 640

static char vm_list_sql_text[VM_LIST_VARIANTS][VM_LIST_SQL_MAX];
static pthread_once_t vm_list_once = PTHREAD_ONCE_INIT;

static size_t vm_list_cond(char *w, size_t len, size_t max, const char *col, bool given,
                           bool drives, int *n)
{
    if (!given)
        return len;
    return len + (size_t)snprintf(w + len, max - len, " AND %s%s = ?%d", drives ? "" : "{NOIDX}",
                                  col, ++*n);
}

static void vm_list_sql_init(void)
{
    for (int i = 0; i < VM_LIST_VARIANTS; i++) {
        int mask = i % 8, cond = i / 8, n = 1;
        /* the driver: the first of owner, node, state, os that is given */
        bool by_owner = mask & VM_LIST_OWNER;
        bool by_node = !by_owner && (mask & VM_LIST_NODE);
        bool by_state = !by_owner && !by_node && cond == VM_LIST_STATE;
        bool by_os = !by_owner && !by_node && !by_state;
        char w[VM_LIST_SQL_MAX / 2] = "";
        size_t len = 0;
        len = vm_list_cond(w, len, sizeof w, "owner", mask & VM_LIST_OWNER, by_owner, &n);
        len = vm_list_cond(w, len, sizeof w, "node", mask & VM_LIST_NODE, by_node, &n);
        len = vm_list_cond(w, len, sizeof w, "os", mask & VM_LIST_OS, by_os, &n);
        len = vm_list_cond(w, len, sizeof w, "state", cond == VM_LIST_STATE, by_state, &n);
        for (int sv = 0; cond == VM_LIST_LIVE && sv <= VMS_LOST; sv++)
            if (vm_state_gone((enum vm_state)sv))
                len += (size_t)snprintf(w + len, sizeof w - len, " AND state <> '%s'",
                                        vm_state_name((enum vm_state)sv));
        snprintf(vm_list_sql_text[i], VM_LIST_SQL_MAX,
                 "SELECT " VM_COLS " FROM vms WHERE id > ?1%s ORDER BY id LIMIT ?%d", w, n + 1);
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

static int vm_scan_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct vm_scan_ctx *l = ctx;
    const struct vm_filter *f = l->f;
    db_stmt *st = NULL;
    struct vm_rec r = {0};
    int limit = f->limit == 0 ? STORE_LIST_DEFAULT : f->limit;
    if (limit > STORE_LIST_MAX)
        limit = STORE_LIST_MAX;
    if (l->started)
        l->fn(l->ctx, NULL); /* a retried attempt starts over */
    l->started = true;
    int rc = db_prepare(c, vm_list_sql(f), &st, err);
    if (rc)
        return rc;
    int n = 1;
    db_bind_i64(st, n, f->after_id);
    if (f->owner)
        db_bind_text(st, ++n, f->owner);
    if (f->node)
        db_bind_text(st, ++n, f->node);
    if (f->os)
        db_bind_text(st, ++n, f->os);
    if (f->state >= 0)
        db_bind_text(st, ++n, vm_state_name((enum vm_state)f->state));
    db_bind_i64(st, ++n, limit);
    for (;;) {
        bool found = false;
        rc = db_step(st, &found, err, "listing VM records");
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
    vm_rec_release(&r);
    db_done(st);
    return rc;
}

int store_vm_scan(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                  struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && fn, "store_vm_scan: NULL argument");
    struct vm_filter def = {.state = -1};
    if (!f)
        f = &def;
    STORE_CHECK(f->limit >= 0, "list limit %d is negative", f->limit);
    STORE_CHECK(f->state >= -1 && f->state <= VMS_LOST, "VM state %d unknown", f->state);
    struct vm_scan_ctx l = {f, fn, ctx, false};
    return db_tx(s->db, DB_READ, vm_scan_fn, &l, err);
}

struct vm_list_ctx {
    struct vm_rec *v;
    size_t n, cap;
};

static void vm_list_clear(struct vm_list_ctx *l)
{
    for (size_t i = 0; i < l->n; i++)
        vm_rec_release(&l->v[i]);
    l->n = 0;
}

static int vm_list_add(void *ctx, const struct vm_rec *r)
{
    struct vm_list_ctx *l = ctx;
    if (!r) { /* the scan starts over */
        vm_list_clear(l);
        return 0;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n] = *r;
    json_incref(r->pending); /* the scan releases its own reference */
    l->n++;
    return 0;
}

int store_vm_list(store *s, const struct vm_filter *f, struct vm_rec **out, size_t *n,
                  struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && out && n, "store_vm_list: NULL argument");
    *out = NULL;
    *n = 0;
    struct vm_list_ctx l = {NULL, 0, 0};
    int rc = store_vm_scan(s, f, vm_list_add, &l, err);
    if (rc) {
        vm_list_clear(&l);
        free(l.v);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return STORE_OK;
}

/* ---- a queued job's hold on its record, given back ------------------------------ */

static const char SQL_VM_HELD[] = "SELECT " VM_COLS " FROM vms WHERE vmid = ?1 AND job = ?2"
                                  " AND state IN ('creating', 'deleting'){FOR_UPDATE}";

int store_vm_unhold_in(db_conn *c, const store *s, const char *job, int vmid, const char *error,
                       struct store_error *err)
{
    db_stmt *st = NULL;
    struct vm_rec r;
    bool found = false;
    int rc = db_prepare(c, SQL_VM_HELD, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, vmid);
    db_bind_text(st, 2, job);
    rc = db_step(st, &found, err, "reading the job's VM record");
    if (rc == STORE_OK && found)
        rc = row_to_vm(st, &r, err);
    db_done(st);
    if (rc || !found)
        return rc;
    if (r.state == VMS_CREATING) { /* as a creation that failed before its clone */
        r.state = VMS_FAILED;
        r.node[0] = '\0';
        snprintf(r.error, sizeof r.error, "%s", error);
    } else { /* a delete that did nothing: the VM stays */
        r.state = VMS_ENABLED;
    }
    struct vm_update_ctx u = {.r = &r, .s = s};
    rc = vm_update_fn(c, &u, err);
    vm_rec_release(&r);
    return rc;
}
