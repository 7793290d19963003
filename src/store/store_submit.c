/* store_submit: submissions (a creation, a job on an existing VM, a job
 * that moves its VM record), idempotency keys, quotas and the small shared
 * settings (store.h). A submission is one transaction: everything it
 * writes, or nothing. A quota decision reads before it writes: it runs
 * under the owner's lock (db_lock; SQLite's write lock serialises it
 * anyway), and the arithmetic is store.c's store_quota_check on the use
 * summed here.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

#include <stdlib.h>

/* ---- idempotency keys --------------------------------------------------------- */

static const char SQL_IDEM_PUT[] = "INSERT INTO idem (owner, key, answer, created_at)"
                                   " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (owner, key) DO NOTHING";
static const char SQL_IDEM_GET[] = "SELECT answer FROM idem WHERE owner = ?1 AND key = ?2";

/* The stored answer under (owner, key): STORE_E_NOTFOUND when none. */
static int idem_get_in(db_conn *c, const char *owner, const char *key, json_t **out,
                       struct store_error *err)
{
    db_stmt *st = NULL;
    *out = NULL;
    int rc = db_prepare(c, SQL_IDEM_GET, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, owner);
    db_bind_text(st, 2, key);
    bool found = false;
    rc = db_step(st, &found, err, "reading idempotency key");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no idempotency key '%s'", key);
    if (rc == STORE_OK)
        rc = db_col_json(st, 0, out, "idem.answer", err);
    db_done(st);
    return rc;
}

int store_idem_put_in(db_conn *c, const char *owner, const char *key, json_t *answer,
                      json_t **existing, struct store_error *err)
{
    db_stmt *st = NULL;
    *existing = NULL;
    int rc = db_prepare(c, SQL_IDEM_PUT, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, owner);
    db_bind_text(st, 2, key);
    db_bind_json(st, 3, answer);
    db_bind_i64(st, 4, wall_ms());
    rc = db_run(st, err, "storing idempotency key");
    bool taken = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    if (!taken)
        return rc;
    /* A concurrent insert of the key waited for ours to commit, or ours
     * for it: the row is there now. */
    rc = idem_get_in(c, owner, key, existing, err);
    if (rc == STORE_E_NOTFOUND)
        return store_fail(err, STORE_E_DB, "idempotency key '%s' vanished", key);
    return rc ? rc
              : store_fail(err, STORE_E_CONFLICT, "idempotency key '%s' was used already", key);
}

struct idem_ctx {
    const char *owner, *key;
    json_t *answer;
    json_t *existing; /* owned until handed over */
};

static int idem_put_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    json_decref(k->existing); /* a retry runs this again */
    return store_idem_put_in(c, k->owner, k->key, k->answer, &k->existing, err);
}

int store_idem_put(store *s, const char *owner, const char *key, json_t *answer, json_t **existing,
                   struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && key && *key && answer, "store_idem_put: NULL or empty argument");
    if (existing)
        *existing = NULL;
    struct idem_ctx k = {owner, key, answer, NULL};
    int rc = db_tx(s->db, DB_WRITE, idem_put_fn, &k, err);
    if (rc == STORE_E_CONFLICT && existing)
        *existing = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

static int idem_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct idem_ctx *k = ctx;
    json_decref(k->existing);
    return idem_get_in(c, k->owner, k->key, &k->existing, err);
}

int store_idem_get(store *s, const char *owner, const char *key, json_t **answer,
                   struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && key && *key && answer, "store_idem_get: NULL or empty argument");
    *answer = NULL;
    struct idem_ctx k = {owner, key, NULL, NULL};
    int rc = db_tx(s->db, DB_READ, idem_get_fn, &k, err);
    if (rc == STORE_OK)
        *answer = k.existing;
    else
        json_decref(k.existing);
    return rc;
}

/* ---- quotas ------------------------------------------------------------------- */

/* What an owner's live VMs hold by their records, and the changes on their
 * way: the live VMs' queued or running update/resize jobs, with the
 * record's figures beside them, and reinstalls (their temporary clone's
 * disk, temp_disk_gb, on top of the record's). Each VM counts at the larger
 * of its record and what its changes ask for (a change counts before it
 * lands); a target that is not a number does not count. */
static const char SQL_OWNER_USE[] =
    "SELECT count(*), coalesce(sum(cores), 0), coalesce(sum(memory_mb), 0),"
    " coalesce(sum(disk_gb), 0) FROM vms WHERE owner = ?1 AND state IN {LIVE}";
static const char SQL_OWNER_ADDRS[] =
    "SELECT count(*) FROM addr_alloc a JOIN vms v ON v.id = a.vm_id"
    " WHERE v.owner = ?1 AND v.state IN {LIVE} AND a.state IN ('used', 'reserved')";
static const char SQL_OWNER_CHANGES[] =
    "SELECT v.vmid, v.cores, v.memory_mb, v.disk_gb, j.kind, j.request"
    " FROM jobs j JOIN vms v ON v.vmid = j.vmid AND v.owner = ?1 AND v.state IN {LIVE}"
    " WHERE j.kind IN ('update', 'resize', 'reinstall') AND j.state IN {ACTIVE}"
    " ORDER BY v.vmid";

static int64_t target(json_t *req, const char *key, int64_t cur)
{
    json_t *v = json_object_get(req, key);
    if (!json_is_number(v))
        return cur;
    int64_t t = (int64_t)json_number_value(v);
    return t > cur ? t : cur;
}

/* One VM's record (cores, memory, disk) and the largest targets of its
 * changes so far; `add` folds the rise over the record into the use. */
struct vm_rise {
    int vmid;
    int64_t rec[3], want[3];
};

static void rise_add(struct store_usage *u, const struct vm_rise *r)
{
    if (!r->vmid)
        return;
    u->cores += (int)(r->want[0] - r->rec[0]);
    u->memory_mb += r->want[1] - r->rec[1];
    u->disk_gb += r->want[2] - r->rec[2];
}

static int owner_changes(db_conn *c, const char *owner, struct store_usage *u,
                         struct store_error *err)
{
    db_stmt *st = NULL;
    struct vm_rise r = {0};
    int rc = db_prepare(c, SQL_OWNER_CHANGES, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, owner);
    for (bool row = true; rc == STORE_OK && row;) {
        rc = db_step(st, &row, err, "reading the owner's changes");
        if (rc || !row)
            break;
        int vmid = (int)db_col_i64(st, 0);
        if (vmid != r.vmid) {
            rise_add(u, &r);
            r = (struct vm_rise){vmid, {0}, {0}};
            for (int i = 0; i < 3; i++)
                r.rec[i] = r.want[i] = db_col_i64(st, 1 + i);
        }
        json_t *req = NULL;
        if ((rc = db_col_json(st, 5, &req, "jobs.request", err)))
            break;
        const char *kind = db_col_text(st, 4);
        if (kind && strcmp(kind, "update") == 0) {
            r.want[0] = target(req, "cores", r.want[0]);
            r.want[1] = target(req, "memory_mb", r.want[1]);
        } else if (kind && strcmp(kind, "reinstall") == 0) {
            /* the temporary clone's disk, beside the VM's own */
            int64_t t = r.rec[2] + json_integer_value(json_object_get(req, "temp_disk_gb"));
            r.want[2] = t > r.want[2] ? t : r.want[2];
        } else {
            r.want[2] = target(req, "disk_gb", r.want[2]);
        }
        json_decref(req);
    }
    db_done(st);
    if (rc == STORE_OK)
        rise_add(u, &r);
    return rc;
}

static int owner_usage(db_conn *c, const char *owner, struct store_usage *u,
                       struct store_error *err)
{
    db_stmt *st = NULL;
    memset(u, 0, sizeof *u);
    int rc = db_prepare(c, SQL_OWNER_USE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, owner);
    bool row = false;
    rc = db_step(st, &row, err, "summing the owner's VMs");
    if (rc == STORE_OK && row) {
        u->vms = (int)db_col_i64(st, 0);
        u->cores = (int)db_col_i64(st, 1);
        u->memory_mb = db_col_i64(st, 2);
        u->disk_gb = db_col_i64(st, 3);
    }
    db_done(st);
    if (rc || (rc = db_prepare(c, SQL_OWNER_ADDRS, &st, err)))
        return rc;
    db_bind_text(st, 1, owner);
    rc = db_step(st, &row, err, "counting the owner's addresses");
    if (rc == STORE_OK && row)
        u->addresses = (int)db_col_i64(st, 0);
    db_done(st);
    return rc ? rc : owner_changes(c, owner, u, err);
}

/* ---- a creation ------------------------------------------------------------------ */

/* Under the owner's quota lock: would the new VM exceed the quota? */
static int create_quota(db_conn *c, struct store_submit *sub, struct store_error *err)
{
    char owner[sizeof sub->vm->owner + 1];
    store_copy(owner, sizeof owner, sub->vm->owner, FIELD_LEN(sub->vm->owner));
    int rc = db_lock(c, DB_LOCK_QUOTA, owner, err);
    if (rc || (rc = owner_usage(c, owner, &sub->used, err)))
        return rc;
    struct store_usage with = sub->used;
    with.vms++;
    with.cores += sub->vm->cores;
    with.memory_mb += sub->vm->memory_mb;
    with.disk_gb += sub->vm->disk_gb;
    with.addresses += (int)sub->naddrs;
    return store_quota_check(sub->quota, NULL, &with, owner, err);
}

/* The key first: when it is taken, nothing else is written. */
static int create_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct store_submit *sub = ctx;
    struct job_rec *j = sub->job;
    int rc = STORE_OK;
    json_decref(sub->first); /* a retry runs this again */
    sub->first = NULL;
    /* locks in the one order: VMID, pools by name, the owner's quota */
    if (sub->nranges) {
        if ((rc = store_vmid_reserve_in(c, sub->ranges, sub->nranges, sub->taken_vmids, sub->ntaken,
                                        j->id, &sub->vm->vmid, err)))
            return rc;
        j->vmid = sub->vm->vmid;
        if (sub->idem && json_is_object(sub->idem->answer))
            json_object_set_new(sub->idem->answer, "vmid", json_integer(j->vmid));
    }
    /* a key taken: the transaction is rolled back, so nothing is written */
    if (sub->idem && (rc = store_idem_put_in(c, sub->idem->owner, sub->idem->key, sub->idem->answer,
                                             &sub->first, err)))
        return rc;
    if (sub->naddrs && (rc = store_addr_reserve_in(c, j->id, sub->addrs, sub->naddrs, err)))
        return rc;
    if ((sub->quota && (rc = create_quota(c, sub, err))) ||
        (rc = store_vm_insert_in(c, sub->vm, err)))
        return rc;
    if (sub->naddrs) {
        int64_t bound = 0;
        struct store_net net = *sub->net;
        if (sub->net_fill)
            sub->net_fill(sub->net_ctx, sub->addrs, sub->naddrs, &net);
        if ((rc = store_vm_net_insert_in(c, sub->vm->id, &net, err)) ||
            (rc = store_addr_bind_in(c, j->id, sub->vm->id, sub->vm->vmid, &bound, err)))
            return rc;
    }
    if ((rc = store_job_insert_in(c, j, err)))
        return rc;
    return store_event_add_in(c, j->id, FIELD_LEN(j->id), j->step, FIELD_LEN(j->step), 0,
                              sub->event, err);
}

int store_create_submit(store *s, struct store_submit *sub, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && sub && sub->vm && sub->job && sub->event,
                "store_create_submit: NULL argument");
    const struct store_idem *idem = sub->idem;
    STORE_CHECK(!idem || (idem->owner && idem->key && *idem->key && idem->answer),
                "store_create_submit: incomplete idempotency key");
    sub->first = NULL;
    memset(&sub->used, 0, sizeof sub->used);
    if (sub->nranges) /* chosen in the transaction; a valid one passes the check */
        sub->vm->vmid = sub->job->vmid = STORE_VMID_MIN;
    int rc = store_check_job(sub->job, err);
    if (rc || (rc = store_check_vm(sub->vm, err)))
        return rc;
    if (sub->nranges &&
        (rc = store_vmid_check_args(sub->ranges, sub->nranges, sub->taken_vmids, sub->ntaken, err)))
        return rc;
    if (sub->naddrs) {
        STORE_CHECK(sub->net && FIELD_LEN(sub->net->mac) > 0,
                    "store_create_submit: addresses without the VM's network (net, mac)");
        if ((rc = store_addr_check_reqs(sub->addrs, sub->naddrs, err)))
            return rc;
    }
    if (FIELD_LEN(sub->job->id) == 0)
        store_uuid(sub->job->id);
    rc = db_tx(s->db, DB_WRITE, create_fn, sub, err);
    if (rc && sub->nranges)
        sub->vm->vmid = sub->job->vmid = 0;
    if (rc != STORE_E_CONFLICT) {
        json_decref(sub->first);
        sub->first = NULL;
    }
    return rc;
}

/* ---- a job on an existing VM --------------------------------------------------------- */

struct jsub_ctx {
    struct job_rec *j;
    const char *event;
    const struct store_usage *quota;
    struct store_usage used;
};

static int job_submit_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct jsub_ctx *k = ctx;
    char owner[sizeof k->j->owner + 1];
    store_copy(owner, sizeof owner, k->j->owner, FIELD_LEN(k->j->owner));
    memset(&k->used, 0, sizeof k->used);
    int rc;
    if (k->quota && ((rc = db_lock(c, DB_LOCK_QUOTA, owner, err)) ||
                     (rc = owner_usage(c, owner, &k->used, err))))
        return rc;
    if ((rc = store_job_insert_in(c, k->j, err)))
        return rc;
    if (k->quota) { /* with the job counted: its target is in the sums now */
        struct store_usage with;
        if ((rc = owner_usage(c, owner, &with, err)) ||
            (rc = store_quota_check(k->quota, &k->used, &with, owner, err)))
            return rc;
    }
    return store_event_add_in(c, k->j->id, FIELD_LEN(k->j->id), k->j->step, FIELD_LEN(k->j->step),
                              0, k->event, err);
}

int store_job_submit(store *s, struct job_rec *j, const char *event,
                     const struct store_usage *quota, struct store_usage *used,
                     struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && j && event, "store_job_submit: NULL argument");
    if (used)
        memset(used, 0, sizeof *used);
    int rc = store_check_job(j, err);
    if (rc)
        return rc;
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    struct jsub_ctx k = {j, event, quota, {0}};
    rc = db_tx(s->db, DB_WRITE, job_submit_fn, &k, err);
    if (used)
        *used = k.used;
    return rc;
}

/* ---- a job of which one at a time may run on a node ------------------------------------ */

static const char SQL_SOLE_ACTIVE[] = "SELECT id FROM jobs WHERE kind = ?1 AND node = ?2"
                                      " AND state IN {ACTIVE} ORDER BY created_at LIMIT 1";

/* The unfinished job of kind on node into other: STORE_E_NOTFOUND when none. */
static int sole_active_in(db_conn *c, const char *kind, const char *node, char other[40],
                          struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_SOLE_ACTIVE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, kind);
    db_bind_text(st, 2, node);
    bool found = false;
    rc = db_step(st, &found, err, "reading the unfinished jobs of a node");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no unfinished %s job on %s", kind, node);
    if (rc == STORE_OK)
        db_col_copy(st, 0, other, 40);
    db_done(st);
    return rc;
}

struct sole_ctx {
    struct job_rec *j;
    const char *event;
    char kind[sizeof((struct job_rec *)0)->kind + 1];
    char node[sizeof((struct job_rec *)0)->node + 1];
    char other[40];
};

static int sole_submit_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct sole_ctx *k = ctx;
    char key[sizeof k->kind + sizeof k->node + 1];
    snprintf(key, sizeof key, "%s/%s", k->kind, k->node);
    k->other[0] = '\0';
    /* the deciders for one kind and node, one at a time in every process:
     * the one after sees the job the one before inserted */
    int rc = db_lock(c, DB_LOCK_SOLE, key, err);
    if (rc)
        return rc;
    rc = sole_active_in(c, k->kind, k->node, k->other, err);
    if (rc == STORE_OK)
        return store_fail(err, STORE_E_CONFLICT, "a %s job of %s is unfinished: %s", k->kind,
                          k->node, k->other);
    if (rc != STORE_E_NOTFOUND)
        return rc;
    store_err_clear(err);
    if ((rc = store_job_insert_in(c, k->j, err)))
        return rc;
    return store_event_add_in(c, k->j->id, FIELD_LEN(k->j->id), k->j->step, FIELD_LEN(k->j->step),
                              0, k->event, err);
}

int store_job_submit_sole(store *s, struct job_rec *j, const char *event, char other[40],
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && j && event, "store_job_submit_sole: NULL argument");
    if (other)
        other[0] = '\0';
    int rc = store_check_job(j, err);
    if (rc)
        return rc;
    struct sole_ctx k = {.j = j, .event = event};
    store_copy(k.kind, sizeof k.kind, j->kind, FIELD_LEN(j->kind));
    store_copy(k.node, sizeof k.node, j->node, FIELD_LEN(j->node));
    STORE_CHECK(k.kind[0] && k.node[0], "store_job_submit_sole: a job without kind or node");
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    rc = db_tx(s->db, DB_WRITE, sole_submit_fn, &k, err);
    if (rc == STORE_E_CONFLICT && other)
        snprintf(other, 40, "%s", k.other);
    return rc;
}

int store_job_active_in(db_conn *c, const char *kind, const char *node, char id[40],
                        struct store_error *err)
{
    char key[sizeof((struct sole_ctx *)0)->kind + sizeof((struct sole_ctx *)0)->node + 1];
    snprintf(key, sizeof key, "%s/%s", kind, node);
    int rc = db_lock(c, DB_LOCK_SOLE, key, err);
    return rc ? rc : sole_active_in(c, kind, node, id, err);
}

static int sole_get_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct sole_ctx *k = ctx;
    return sole_active_in(c, k->kind, k->node, k->other, err);
}

int store_job_active_on(store *s, const char *kind, const char *node, char id[40],
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && kind && *kind && node && *node && id, "store_job_active_on: NULL argument");
    id[0] = '\0';
    struct sole_ctx k = {0};
    snprintf(k.kind, sizeof k.kind, "%s", kind);
    snprintf(k.node, sizeof k.node, "%s", node);
    int rc = db_tx(s->db, DB_READ, sole_get_fn, &k, err);
    if (rc == STORE_OK)
        snprintf(id, 40, "%s", k.other);
    return rc;
}

/* ---- a job that moves its VM record from one state to another ------------------------ */

/* On PostgreSQL a concurrent mover waits for the row lock, then sees the
 * new state and changes nothing (READ COMMITTED re-checks the WHERE). */
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
static int vm_move_why_not(db_conn *c, int64_t id, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VM_STATE_OF, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, id);
    bool found = false;
    rc = db_step(st, &found, err, "reading the VM record's state");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no VM record with id %lld", (long long)id);
    else if (rc == STORE_OK)
        rc = store_fail(err, STORE_E_CONFLICT, "the VM record is %s", db_col_text(st, 0));
    db_done(st);
    return rc;
}

static int job_move_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct jmove_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_VM_MOVE, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, k->vm_id);
    db_bind_text(st, 2, vm_state_name(k->from));
    db_bind_text(st, 3, vm_state_name(k->to));
    DB_BIND_FIELD(st, 4, k->j->id);
    db_bind_i64(st, 5, wall_ms());
    rc = db_run(st, err, "moving the VM record");
    bool moved = rc == STORE_OK && db_changes(st) > 0;
    db_done(st);
    if (rc)
        return rc;
    if (!moved)
        return vm_move_why_not(c, k->vm_id, err);
    if ((rc = store_job_insert_in(c, k->j, err)))
        return rc;
    return store_event_add_in(c, k->j->id, FIELD_LEN(k->j->id), k->j->step, FIELD_LEN(k->j->step),
                              0, k->event, err);
}

int store_job_submit_move(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                          enum vm_state from, enum vm_state to, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && j && event, "store_job_submit_move: NULL argument");
    STORE_CHECK((unsigned)from <= VMS_LOST && (unsigned)to <= VMS_LOST, "VM state unknown");
    int rc = store_check_job(j, err);
    if (rc)
        return rc;
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    struct jmove_ctx k = {j, event, vm_id, from, to};
    return db_tx(s->db, DB_WRITE, job_move_fn, &k, err);
}

/* ---- shared settings ------------------------------------------------------------------ */

static const char SQL_KV_PUT[] = "INSERT INTO kv (name, value, created_at) VALUES (?1, ?2, ?3)"
                                 " ON CONFLICT (name) DO NOTHING";
static const char SQL_KV_GET[] = "SELECT value FROM kv WHERE name = ?1";

struct kv_ctx {
    const char *name, *value;
    char *out;
    size_t outlen;
};

static int kv_setdefault_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct kv_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_KV_PUT, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->name);
    db_bind_text(st, 2, k->value);
    db_bind_i64(st, 3, wall_ms());
    rc = db_run(st, err, "storing a setting");
    db_done(st);
    if (rc || (rc = db_prepare(c, SQL_KV_GET, &st, err)))
        return rc;
    db_bind_text(st, 1, k->name);
    bool found = false;
    rc = db_step(st, &found, err, "reading a setting");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_DB, "setting '%s' vanished", k->name);
    if (rc == STORE_OK)
        db_col_copy(st, 0, k->out, k->outlen);
    db_done(st);
    return rc;
}

int store_kv_setdefault(store *s, const char *name, const char *value, char *out, size_t outlen,
                        struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name && value && out && outlen, "store_kv_setdefault: NULL argument");
    struct kv_ctx k = {name, value, out, outlen};
    return db_tx(s->db, DB_WRITE, kv_setdefault_fn, &k, err);
}

static const char SQL_KV_DEL[] = "DELETE FROM kv WHERE name = ?1";

static int kv_delete_fn(db_conn *c, void *ctx, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_KV_DEL, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, ctx);
    rc = db_run(st, err, "removing a setting");
    db_done(st);
    return rc;
}

int store_kv_delete(store *s, const char *name, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && name && *name, "store_kv_delete: NULL or empty argument");
    return db_tx(s->db, DB_WRITE, kv_delete_fn, (void *)name, err);
}
