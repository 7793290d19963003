/* store_job: jobs, their leases, events and checkpoints, and claims
 * (store.h "jobs"). Each public function is one transaction; the _in
 * functions of store_int.h are the pieces that submissions run inside
 * theirs. Records returned own their JSON (job_rec_release); event arrays
 * are the caller's to free.
 * Threads: any thread, on its own connection (db.h). Errors: store_err
 * codes with details in *err, as store.h says. */
#include "store/store_int.h"

#include "common/util.h"

/* Column `col` of a job row as a state; job `id` names it in the error. */
static int job_state_col(db_stmt *st, int col, const char *id, enum job_state *out,
                         struct store_error *err)
{
    const char *state = db_col_text(st, col);
    int sv = job_state_parse(state);
    if (sv < 0)
        return store_fail(err, STORE_E_DB, "unknown state '%s' in job %s", state ? state : "", id);
    *out = (enum job_state)sv;
    return STORE_OK;
}

int store_job_row(db_stmt *st, struct job_rec *j, struct store_error *err)
{
    memset(j, 0, sizeof *j);
    DB_COL_FIELD(st, 0, j->id);
    DB_COL_FIELD(st, 1, j->kind);
    int rc = job_state_col(st, 2, j->id, &j->state, err);
    if (rc)
        return rc;
    j->vmid = (int)db_col_i64(st, 3);
    DB_COL_FIELD(st, 4, j->owner);
    DB_COL_FIELD(st, 5, j->step);
    DB_COL_FIELD(st, 6, j->node);
    DB_COL_FIELD(st, 7, j->upid);
    j->progress = (int)db_col_i64(st, 8);
    DB_COL_FIELD(st, 11, j->error);
    DB_COL_FIELD(st, 12, j->lease_owner);
    j->lease_until = db_col_i64(st, 13);
    j->created_at = db_col_i64(st, 14);
    j->updated_at = db_col_i64(st, 15);
    j->finished_at = db_col_i64(st, 16);
    j->cancel_at = db_col_i64(st, 17);
    DB_COL_FIELD(st, 18, j->cancel_by);
    rc = db_col_json(st, 9, &j->request, "jobs.request", err);
    return rc ? rc : db_col_json(st, 10, &j->attempts, "jobs.attempts", err);
}

/* A finished job keeps the time it finished; a final state without one
 * gets `now`. */
static int64_t job_finished_at(const struct job_rec *j, int64_t now)
{
    if (!job_state_final(j->state))
        return 0;
    return j->finished_at ? j->finished_at : now;
}

/* ---- insert ---------------------------------------------------------------- */

static const char SQL_JOB_INSERT[] =
    "INSERT INTO jobs (" JOB_COLS ", seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
    "?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, {JOB_SEQ})";

int store_job_insert_in(db_conn *c, struct job_rec *j, struct store_error *err)
{
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int64_t created = j->created_at ? j->created_at : now;
    int rc = db_prepare(c, SQL_JOB_INSERT, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    DB_BIND_FIELD(st, 2, j->kind);
    db_bind_text(st, 3, job_state_name(j->state));
    db_bind_i64(st, 4, j->vmid);
    DB_BIND_FIELD(st, 5, j->owner);
    DB_BIND_FIELD(st, 6, j->step);
    DB_BIND_FIELD(st, 7, j->node);
    DB_BIND_FIELD(st, 8, j->upid);
    db_bind_i64(st, 9, j->progress);
    db_bind_json(st, 10, j->request);
    db_bind_json(st, 11, j->attempts);
    DB_BIND_FIELD(st, 12, j->error);
    DB_BIND_FIELD(st, 13, j->lease_owner);
    db_bind_i64(st, 14, j->lease_until);
    db_bind_i64(st, 15, created);
    db_bind_i64(st, 16, now);
    db_bind_i64(st, 17, job_finished_at(j, now));
    db_bind_i64(st, 18, j->cancel_at);
    DB_BIND_FIELD(st, 19, j->cancel_by);
    rc = db_run(st, err, "inserting job");
    db_done(st);
    if (rc == STORE_E_CONFLICT)
        return store_fail(err, STORE_E_CONFLICT, "job %.*s exists already", (int)FIELD_LEN(j->id),
                          j->id);
    if (rc)
        return rc;
    if (j->state == JOB_QUEUED)
        db_notify_jobs(c); /* other processes' idle workers: a job to claim */
    j->created_at = created;
    j->updated_at = now;
    j->finished_at = job_finished_at(j, now);
    return STORE_OK;
}

static int job_insert_fn(db_conn *c, void *ctx, struct store_error *err)
{
    return store_job_insert_in(c, ctx, err);
}

int store_job_insert(store *s, struct job_rec *j, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && j, "store_job_insert: NULL argument");
    int rc = store_check_job(j, err);
    if (rc)
        return rc;
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    return db_tx(s->db, DB_WRITE, job_insert_fn, j, err);
}

/* ---- update and checkpoint --------------------------------------------------- */

static const char SQL_JOB_LEASE_OF[] = "SELECT state, lease_owner FROM jobs WHERE id = ?1";

/* After an UPDATE matched no row: say whether the job is missing or held by
 * someone else (or no longer running). */
static int job_why_not(db_conn *c, const char *id, size_t idlen, const char *owner,
                       struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_LEASE_OF, &st, err);
    if (rc)
        return rc;
    db_bind_textn(st, 1, id, idlen);
    bool found = false;
    rc = db_step(st, &found, err, "reading job lease");
    if (rc == STORE_OK && !found) {
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %.*s", (int)idlen, id);
    } else if (rc == STORE_OK) {
        const char *state = db_col_text(st, 0);
        const char *holder = db_col_text(st, 1);
        if (holder && strcmp(holder, owner) != 0)
            rc = store_fail(err, STORE_E_CONFLICT, "job %.*s is leased by '%s', not '%s'",
                            (int)idlen, id, holder, owner);
        else
            rc = store_fail(err, STORE_E_CONFLICT, "job %.*s is %s, not running", (int)idlen, id,
                            state ? state : "?");
    }
    db_done(st);
    return rc;
}

/* kind, owner, request and created_at are the job's identity and input:
 * not rewritten, nor the cancel (store_job_cancel's), which is read back
 * into the record: a runner learns of a cancel at its next write. With a lease owner in the record,
 * the update applies only while that owner still holds the lease (a runner whose lease expired and
 * was taken over must not overwrite the new runner's progress). */
static const char SQL_JOB_UPDATE[] =
    "UPDATE jobs SET state = ?2, vmid = ?3, step = ?4, node = ?5, upid = ?6, progress = ?7, "
    "attempts = ?8, error = ?9, updated_at = ?10, finished_at = ?11 "
    "WHERE id = ?1 AND (CAST(?12 AS TEXT) = '' OR lease_owner = CAST(?12 AS TEXT))"
    "{RETURNING_CANCEL}";

static const char SQL_JOB_CANCEL_GET[] = "SELECT cancel_at, cancel_by FROM jobs WHERE id = ?1";

/* A job's cancel (store_job_cancel's), read back into j in the transaction
 * that wrote it: on SQLite, where a RETURNING clause builds an ephemeral
 * table for its rows, the read costs less (30 K instructions a write,
 * measured in isolation); PostgreSQL returns it with the write. */
static int job_cancel_read(db_conn *c, struct job_rec *j, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_CANCEL_GET, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading job cancel");
    if (rc == STORE_OK && found) {
        j->cancel_at = db_col_i64(st, 0);
        DB_COL_FIELD(st, 1, j->cancel_by);
    }
    db_done(st);
    return rc;
}

/* One of the two updates (the same parameters); *found: a row was
 * written, its cancel read back into j. */
static int job_update_stmt(db_conn *c, const char *sql, struct job_rec *j, int64_t now, bool *found,
                           struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, sql, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    db_bind_text(st, 2, job_state_name(j->state));
    db_bind_i64(st, 3, j->vmid);
    DB_BIND_FIELD(st, 4, j->step);
    DB_BIND_FIELD(st, 5, j->node);
    DB_BIND_FIELD(st, 6, j->upid);
    db_bind_i64(st, 7, j->progress);
    db_bind_json(st, 8, j->attempts);
    DB_BIND_FIELD(st, 9, j->error);
    db_bind_i64(st, 10, now);
    db_bind_i64(st, 11, job_finished_at(j, now));
    DB_BIND_FIELD(st, 12, j->lease_owner);
    *found = false;
    rc = db_step(st, found, err, "updating job");
    bool read = false;
    if (rc == STORE_OK && *found) { /* {RETURNING_CANCEL} returned it */
        j->cancel_at = db_col_i64(st, 0);
        DB_COL_FIELD(st, 1, j->cancel_by);
    } else if (rc == STORE_OK && db_changes(st) > 0) {
        *found = read = true; /* written, nothing returned: read it */
    }
    db_done(st);
    if (read)
        rc = job_cancel_read(c, j, err);
    return rc;
}

/* The same write when the state, VMID and end it writes are the row's
 * already (a checkpoint of a running job: most writes): SET names none of
 * the columns the job indexes hold or are partial on, so SQLite leaves the
 * four indexes alone, where setting them to the same values deletes and
 * inserts an entry in each (a third of a checkpoint's cost, measured). No
 * row: the full write decides (a state change, a lost lease, no job). */
static const char SQL_JOB_UPDATE_SAME[] =
    "UPDATE jobs SET step = ?4, node = ?5, upid = ?6, progress = ?7, attempts = ?8, error = ?9, "
    "updated_at = ?10 WHERE id = ?1 AND state = ?2 AND vmid = ?3 AND finished_at = ?11"
    " AND (CAST(?12 AS TEXT) = '' OR lease_owner = CAST(?12 AS TEXT))"
    "{RETURNING_CANCEL}";

static int job_update_in(db_conn *c, struct job_rec *j, struct store_error *err)
{
    int64_t now = wall_ms();
    bool found = false;
    int rc = job_update_stmt(c, SQL_JOB_UPDATE_SAME, j, now, &found, err);
    if (rc || found)
        return rc;
    rc = job_update_stmt(c, SQL_JOB_UPDATE, j, now, &found, err);
    if (rc == STORE_OK && !found) {
        char owner[sizeof j->lease_owner + 1];
        store_copy(owner, sizeof owner, j->lease_owner, FIELD_LEN(j->lease_owner));
        rc = job_why_not(c, j->id, FIELD_LEN(j->id), owner, err);
    }
    return rc;
}

struct checkpoint_ctx {
    struct job_rec *j;
    const char *event; /* NULL: the update alone */
};

static const char SQL_JOB_STATE_LOCK[] = "SELECT state FROM jobs WHERE id = ?1{FOR_UPDATE}";

/* The job's stored state, for a write that may fail it (job.failed is
 * logged on the edge only). */
static int job_old_state(db_conn *c, const struct job_rec *j, enum job_state *old,
                         struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_STATE_LOCK, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading job state");
    int v = found ? job_state_parse(db_col_text(st, 0)) : -1;
    *old = v < 0 ? JOB_QUEUED : (enum job_state)v;
    db_done(st);
    return rc;
}

/* A queued job that waited behind this one (its VM's, or its owner's
 * snapshot creation: JOB_PICK's serialisation). */
static const char SQL_JOB_BEHIND[] =
    "SELECT 1 FROM jobs WHERE state = 'queued' AND id <> ?1"
    " AND ((CAST(?2 AS BIGINT) <> 0 AND vmid = CAST(?2 AS BIGINT))"
    "  OR (CAST(?3 AS TEXT) = 'snap-create' AND kind = 'snap-create' AND owner = CAST(?4 AS TEXT)))"
    " LIMIT 1";

/* A job that ends may free one queued behind it: other processes' idle
 * workers are told (db_notify_jobs); the runner's own worker looks again
 * anyway, but it may be stopping, or be another instance's. */
static int tell_behind(db_conn *c, const struct job_rec *j, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_BEHIND, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    db_bind_i64(st, 2, j->vmid);
    DB_BIND_FIELD(st, 3, j->kind);
    DB_BIND_FIELD(st, 4, j->owner);
    bool found = false;
    rc = db_step(st, &found, err, "looking for a job behind");
    db_done(st);
    if (rc == STORE_OK && found)
        db_notify_jobs(c);
    return rc;
}

/* A reservation its job still held in flight when it ended: its own
 * release or settlement did not get written (the database out of reach
 * then; the job's end waits for it, those writes do not). It no longer
 * counts (SQL_CAP_SUM counts in-flight ones of unfinished jobs only): gone
 * with the job's end, it is not left in the table for ever. */
static const char SQL_JOB_END_CAPACITY[] =
    "DELETE FROM capacity WHERE job = ?1 AND settled_at IS NULL";

static int end_capacity(db_conn *c, const struct job_rec *j, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_END_CAPACITY, &st, err);
    if (rc)
        return rc;
    DB_BIND_FIELD(st, 1, j->id);
    rc = db_run(st, err, "ending a job's reservation");
    db_done(st);
    return rc;
}

static int checkpoint_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct checkpoint_ctx *k = ctx;
    enum job_state old = JOB_FAILED;
    int rc = k->j->state == JOB_FAILED ? job_old_state(c, k->j, &old, err) : STORE_OK;
    if (rc || (rc = job_update_in(c, k->j, err)))
        return rc;
    if (job_state_final(k->j->state) &&
        ((rc = tell_behind(c, k->j, err)) || (rc = end_capacity(c, k->j, err))))
        return rc;
    if (k->event && (rc = store_event_add_in(c, k->j->id, FIELD_LEN(k->j->id), k->j->step,
                                             FIELD_LEN(k->j->step), k->j->progress, k->event, err)))
        return rc;
    return store_event_job_in(c, k->j, old, err); /* last: it takes the log's lock */
}

static int job_write(store *s, struct job_rec *j, const char *event, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && j, "store_job_update: NULL argument");
    STORE_CHECK(FIELD_LEN(j->id) > 0, "job id is empty");
    STORE_CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    struct checkpoint_ctx k = {j, event && *event ? event : NULL};
    return db_tx(s->db, DB_WRITE, checkpoint_fn, &k, err);
}

int store_job_update(store *s, struct job_rec *j, struct store_error *err)
{
    return job_write(s, j, NULL, err);
}

int store_job_checkpoint(store *s, struct job_rec *j, const char *event, struct store_error *err)
{
    return job_write(s, j, event, err);
}

/* ---- reads ------------------------------------------------------------------- */

/* One job by id: `sql` selects it (WHERE id = ?1), `row` decodes it into
 * `out`; STORE_E_NOTFOUND when there is no such job. */
struct job_read_ctx {
    const char *sql, *id;
    int (*row)(db_stmt *st, void *out, struct store_error *err);
    void *out;
};

static int job_read_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct job_read_ctx *g = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, g->sql, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, g->id);
    bool found = false;
    rc = db_step(st, &found, err, "reading job");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", g->id);
    if (rc == STORE_OK)
        rc = g->row(st, g->out, err);
    db_done(st);
    return rc;
}

static const char SQL_JOB_GET[] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1";

static int job_get_row(db_stmt *st, void *out, struct store_error *err)
{
    job_rec_release(out); /* a try before a retry may have filled it */
    return store_job_row(st, out, err);
}

int store_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id && out, "store_job_get: NULL argument");
    memset(out, 0, sizeof *out);
    struct job_read_ctx g = {SQL_JOB_GET, id, job_get_row, out};
    int rc = db_tx(s->db, DB_READ, job_read_fn, &g, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

/* A job's state, kind and end only: the reconciler asks this of every
 * record's last job each pass, and the full row (request, attempts: JSON
 * decoded) cost four times as much (40 K instructions a read against 11 K,
 * the idle daemon under callgrind). */
static const char SQL_JOB_BRIEF[] = "SELECT state, kind, finished_at, vmid FROM jobs WHERE id = ?1";

struct job_brief_row {
    const char *id;
    struct job_brief *out;
};

static int job_brief_row(db_stmt *st, void *out, struct store_error *err)
{
    struct job_brief_row *b = out;
    DB_COL_FIELD(st, 1, b->out->kind);
    b->out->finished_at = db_col_i64(st, 2);
    b->out->vmid = (int)db_col_i64(st, 3);
    return job_state_col(st, 0, b->id, &b->out->state, err);
}

int store_job_brief(store *s, const char *id, struct job_brief *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id && out, "store_job_brief: NULL argument");
    memset(out, 0, sizeof *out);
    struct job_brief_row b = {id, out};
    struct job_read_ctx g = {SQL_JOB_BRIEF, id, job_brief_row, &b};
    return db_tx(s->db, DB_READ, job_read_fn, &g, err);
}

/* ---- claims and leases ---------------------------------------------------------- */

/* The claimable jobs: queued, or running with an expired lease. A job
 * with a VMID is skipped while another unfinished job of that VMID holds a
 * live lease or is older: a VM's jobs run one at a time, in creation order
 * (ties on created_at: insertion order, seq). On PostgreSQL the row is
 * locked with SKIP LOCKED ({CLAIM_LOCK}): a job another claimer is taking
 * is passed over, and since only the oldest job of a VMID qualifies, the
 * next one of the same VM is never picked instead. An owner's snapshot
 * creations are ordered the same way, across all of its VMs: each counts
 * the owner's snapshots before it makes one ([snapshots] max_per_owner),
 * so two of them running at once, in two instances, could both pass the
 * count. {ACTIVE} expands to the
 * list the partial indexes name, so the planner can use them. */
#define JOB_CLAIMABLE                                                                              \
    " WHERE j.state IN {ACTIVE} AND (j.state = 'queued' OR j.lease_until < ?1)"                    \
    " AND (j.vmid = 0 OR NOT EXISTS (SELECT 1 FROM jobs k"                                         \
    "   WHERE k.vmid = j.vmid AND k.state IN {ACTIVE} AND k.id <> j.id"                            \
    "   AND ((k.state = 'running' AND k.lease_until >= ?1)"                                        \
    "        OR k.created_at < j.created_at"                                                       \
    "        OR (k.created_at = j.created_at AND k.seq < j.seq))))"                                \
    " AND (j.kind <> 'snap-create' OR NOT EXISTS (SELECT 1 FROM jobs k"                            \
    "   WHERE k.kind = 'snap-create' AND k.owner = j.owner AND k.state IN {ACTIVE}"                \
    "   AND k.id <> j.id"                                                                          \
    "   AND ((k.state = 'running' AND k.lease_until >= ?1)"                                        \
    "        OR k.created_at < j.created_at"                                                       \
    "        OR (k.created_at = j.created_at AND k.seq < j.seq))))"
/* Which claimable job first. A job whose runner died (its lease ran out)
 * before any queued one: it may hold Proxmox resources half-way. Then the
 * owners take turns: the job of the owner with the fewest jobs running
 * now (live leases, every instance's), the oldest first among equals. A
 * customer who queues 500 creations at once no longer makes every other
 * customer's one creation wait behind all 500 (FIFO did: hours on a busy
 * fleet); each other owner's job is claimed at the next free worker. */
#define JOB_PICK                                                                                   \
    "WITH busy AS (SELECT owner, count(*) AS n FROM jobs"                                          \
    " WHERE state IN {ACTIVE} AND state = 'running' AND lease_until >= ?1 GROUP BY owner)"         \
    " SELECT j.id FROM jobs j LEFT JOIN busy b ON b.owner = j.owner" JOB_CLAIMABLE                 \
    " ORDER BY CASE WHEN j.state = 'running' THEN 0 ELSE 1 END, COALESCE(b.n, 0),"                 \
    " j.created_at, j.seq LIMIT 1"
static const char SQL_JOB_PICK[] = JOB_PICK "{CLAIM_LOCK}";
/* The same question in a read transaction, asked first: a look that finds
 * nothing (an idle worker's, once a second) then takes no write lock and
 * writes nothing; a job that turns claimable just after it is found by the
 * next look, as one queued just after a claim would be. */
static const char SQL_JOB_ANY[] = "SELECT j.id FROM jobs j" JOB_CLAIMABLE " LIMIT 1";
static const char SQL_JOB_TAKE[] =
    "UPDATE jobs SET state = 'running', lease_owner = ?2, lease_until = ?3, updated_at = ?4"
    " WHERE id = ?1 RETURNING " JOB_COLS;

/* A claim whose write began this long after it was asked waited for the
 * database (SQLite's lock held by another process, a stalled server):
 * the runners whose leases ran out meanwhile were waiting for it too, to
 * renew them, so it takes none of those (store.h). */
#define CLAIM_PROMPT_MS 1000

struct job_claim_ctx {
    const char *owner;
    int64_t lease_ms;
    int64_t expired_before; /* ?1 of JOB_PICK: a lease alive until then is alive */
    int64_t asked;          /* mono ms of the call */
    struct job_rec *out;
};

static int job_claim_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct job_claim_ctx *cl = ctx;
    db_stmt *pick = NULL, *take = NULL;
    char id[sizeof cl->out->id];
    int64_t now = wall_ms();
    job_rec_release(cl->out);
    int rc = db_prepare(c, SQL_JOB_PICK, &pick, err);
    if (rc)
        return rc;
    /* 1: only the leases given up (lease_until 0), as while settling */
    db_bind_i64(
        pick, 1,
        mono_ms() - cl->asked > CLAIM_PROMPT_MS && cl->expired_before > 1 ? 1 : cl->expired_before);
    bool found = false;
    rc = db_step(pick, &found, err, "picking a job");
    if (rc == STORE_OK && !found)
        rc = store_fail(err, STORE_E_NOTFOUND, "no claimable job");
    if (rc == STORE_OK)
        DB_COL_FIELD(pick, 0, id);
    db_done(pick);
    if (rc || (rc = db_prepare(c, SQL_JOB_TAKE, &take, err)))
        return rc;
    db_bind_text(take, 1, id);
    db_bind_text(take, 2, cl->owner);
    db_bind_i64(take, 3, now + cl->lease_ms);
    db_bind_i64(take, 4, now);
    rc = db_step(take, &found, err, "claiming a job");
    if (rc == STORE_OK && !found) /* we hold the write lock or the row lock */
        rc = store_fail(err, STORE_E_DB, "job %s vanished while claiming it", id);
    if (rc == STORE_OK)
        rc = store_job_row(take, cl->out, err);
    db_done(take);
    return rc;
}

struct job_any_ctx {
    int64_t expired_before;
    bool found;
};

static int job_any_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct job_any_ctx *a = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_ANY, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, a->expired_before);
    rc = db_step(st, &a->found, err, "looking for a claimable job");
    db_done(st);
    return rc;
}

int store_job_claim_at(store *s, const char *owner, int64_t lease_ms, int64_t expired_before,
                       struct job_rec *out, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && *owner && out, "store_job_claim: NULL or empty argument");
    STORE_CHECK(lease_ms > 0, "lease of %lld ms is not positive", (long long)lease_ms);
    STORE_CHECK(expired_before >= 0, "store_job_claim_at: negative time");
    memset(out, 0, sizeof *out);
    int64_t asked = mono_ms();
    struct job_any_ctx any = {expired_before, false};
    int rc = db_tx(s->db, DB_READ, job_any_fn, &any, err);
    if (rc == STORE_OK && !any.found)
        return store_fail(err, STORE_E_NOTFOUND, "no claimable job");
    struct job_claim_ctx cl = {owner, lease_ms, expired_before, asked, out};
    rc = db_tx(s->db, DB_WRITE, job_claim_fn, &cl, err);
    if (rc)
        job_rec_release(out);
    return rc;
}

int store_job_claim(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                    struct store_error *err)
{
    return store_job_claim_at(s, owner, lease_ms, wall_ms(), out, err);
}

static const char SQL_JOB_RENEW[] = "UPDATE jobs SET lease_until = ?3, updated_at = ?4"
                                    " WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'";

struct job_renew_ctx {
    const char *id, *owner;
    int64_t lease_ms;
};

static int job_renew_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct job_renew_ctx *r = ctx;
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    int rc = db_prepare(c, SQL_JOB_RENEW, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, r->id);
    db_bind_text(st, 2, r->owner);
    db_bind_i64(st, 3, now + r->lease_ms);
    db_bind_i64(st, 4, now);
    rc = db_run(st, err, "renewing job lease");
    bool none = rc == STORE_OK && db_changes(st) == 0;
    db_done(st);
    return none ? job_why_not(c, r->id, strlen(r->id), r->owner, err) : rc;
}

int store_job_renew(store *s, const char *id, const char *owner, int64_t lease_ms,
                    struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && id && owner && *owner, "store_job_renew: NULL or empty argument");
    STORE_CHECK(lease_ms > 0, "lease of %lld ms is not positive", (long long)lease_ms);
    struct job_renew_ctx r = {id, owner, lease_ms};
    return db_tx(s->db, DB_WRITE, job_renew_fn, &r, err);
}

/* Every lease of one owner at once. The owner check is in the WHERE: a job
 * another instance took over (its lease_owner changed) is not renewed, nor
 * a finished one, nor one given up by store_job_expire_owner (lease_until
 * 0). A lease that ran out but that nobody took over yet is renewed, as
 * store_job_renew does: its runner is still at work. {ACTIVE} lets the
 * planner walk the partial index of unfinished jobs instead of the whole
 * table with its history. */
static const char SQL_JOB_RENEW_OWNER[] =
    "UPDATE jobs SET lease_until = ?2, updated_at = ?3 WHERE state IN {ACTIVE}"
    " AND state = 'running' AND lease_owner = ?1 AND lease_until > 0";

struct renew_owner_ctx {
    const char *owner;
    int64_t lease_ms;
    int n;
};

static int job_renew_owner_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct renew_owner_ctx *r = ctx;
    db_stmt *st = NULL;
    int64_t now = wall_ms();
    r->n = 0;
    int rc = db_prepare(c, SQL_JOB_RENEW_OWNER, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, r->owner);
    db_bind_i64(st, 2, now + r->lease_ms);
    db_bind_i64(st, 3, now);
    rc = db_run(st, err, "renewing an owner's leases");
    if (rc == STORE_OK)
        r->n = (int)db_changes(st);
    db_done(st);
    return rc;
}

int store_job_renew_owner(store *s, const char *owner, int64_t lease_ms, int *n,
                          struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && *owner, "store_job_renew_owner: NULL or empty argument");
    STORE_CHECK(lease_ms > 0, "lease of %lld ms is not positive", (long long)lease_ms);
    struct renew_owner_ctx r = {owner, lease_ms, 0};
    int rc = db_tx(s->db, DB_WRITE, job_renew_owner_fn, &r, err);
    if (n)
        *n = rc ? 0 : r.n;
    return rc;
}

static const char SQL_JOB_OWNERS[] =
    "SELECT DISTINCT lease_owner FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL"
    " AND lease_owner <> '' LIMIT ?1";

struct owners_ctx {
    char (*out)[64];
    size_t max, n;
};

static int job_owners_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct owners_ctx *o = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_OWNERS, &st, err);
    if (rc)
        return rc;
    db_bind_i64(st, 1, (int64_t)o->max);
    o->n = 0;
    for (bool found = true; rc == STORE_OK && found && o->n < o->max;) {
        rc = db_step(st, &found, err, "listing lease owners");
        if (rc == STORE_OK && found)
            db_col_copy(st, 0, o->out[o->n++], 64);
    }
    db_done(st);
    return rc;
}

int store_job_lease_owners(store *s, char (*owners)[64], size_t max, size_t *n,
                           struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owners && n, "store_job_lease_owners: NULL argument");
    struct owners_ctx o = {owners, max, 0};
    int rc = db_tx(s->db, DB_READ, job_owners_fn, &o, err);
    *n = rc ? 0 : o.n;
    return rc;
}

/* {ACTIVE} first, as in SQL_JOB_RENEW_OWNER: the planner walks the partial
 * index of unfinished jobs, not the table with its history. */
static const char SQL_JOB_CANCELS_HELD[] =
    "SELECT id FROM jobs WHERE state IN {ACTIVE} AND state = 'running' AND lease_owner = ?1"
    " AND cancel_at <> 0 ORDER BY id LIMIT ?2";

struct cancels_ctx {
    const char *owner;
    char (*ids)[40];
    size_t max, n;
};

static int job_cancels_held_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct cancels_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_CANCELS_HELD, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->owner);
    db_bind_i64(st, 2, (int64_t)k->max);
    k->n = 0;
    for (bool found = true; rc == STORE_OK && found && k->n < k->max;) {
        rc = db_step(st, &found, err, "listing the cancels of held jobs");
        if (rc == STORE_OK && found)
            db_col_copy(st, 0, k->ids[k->n++], sizeof k->ids[0]);
    }
    db_done(st);
    return rc;
}

int store_job_cancels_held(store *s, const char *owner, char (*ids)[40], size_t max, size_t *n,
                           struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && *owner && ids && n, "store_job_cancels_held: NULL or empty argument");
    struct cancels_ctx k = {owner, ids, max, 0};
    int rc = max ? db_tx(s->db, DB_READ, job_cancels_held_fn, &k, err) : STORE_OK;
    *n = rc ? 0 : k.n;
    return rc;
}

static const char SQL_JOB_EXPIRE[] =
    "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND lease_owner = ?1";

static int job_expire_fn(db_conn *c, void *ctx, struct store_error *err)
{
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_EXPIRE, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, ctx);
    rc = db_run(st, err, "expiring leases");
    if (rc == STORE_OK && db_changes(st) > 0)
        db_notify_jobs(c); /* the dead runner's jobs: claimable at once */
    db_done(st);
    return rc;
}

static const char SQL_JOB_LEASE_END[] =
    "SELECT min(lease_until) FROM jobs WHERE state = 'running' AND lease_owner <> ?1"
    " AND lease_until > ?2";

static int lease_end_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct {
        const char *owner;
        int64_t *at;
    } *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_LEASE_END, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->owner);
    db_bind_i64(st, 2, wall_ms());
    bool row = false;
    rc = db_step(st, &row, err, "reading the next lease end");
    *k->at = rc == STORE_OK && row ? db_col_i64(st, 0) : 0;
    db_done(st);
    return rc;
}

int store_job_next_lease_end(store *s, const char *owner, int64_t *at, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && at, "store_job_next_lease_end: NULL argument");
    struct {
        const char *owner;
        int64_t *at;
    } k = {owner, at};
    *at = 0;
    return db_tx(s->db, DB_READ, lease_end_fn, &k, err);
}

int store_jobs_watch(store *s)
{
    return s ? db_watch_fd(s->db) : -1;
}

void store_jobs_watch_drain(store *s)
{
    if (s)
        db_watch_drain(s->db);
}

int store_job_expire_owner(store *s, const char *owner, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && owner && *owner, "store_job_expire_owner: NULL or empty argument");
    return db_tx(s->db, DB_WRITE, job_expire_fn, (void *)owner, err);
}

static const char SQL_JOB_COUNT[] = "SELECT count(*) FROM jobs WHERE state IN {ACTIVE}"
                                    " AND (CAST(?1 AS TEXT) IS NULL OR kind = CAST(?1 AS TEXT))";

struct count_ctx {
    const char *kind;
    int *n;
};

static int job_count_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct count_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, SQL_JOB_COUNT, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, k->kind);
    bool row = false;
    rc = db_step(st, &row, err, "counting jobs");
    *k->n = row ? (int)db_col_i64(st, 0) : 0;
    db_done(st);
    return rc;
}

int store_job_count_active(store *s, const char *kind, int *n, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && n, "store_job_count_active: NULL argument");
    *n = 0;
    struct count_ctx k = {kind, n};
    return db_tx(s->db, DB_READ, job_count_fn, &k, err);
}

/* ---- events ------------------------------------------------------------------------- */

/* seq is per job, 1, 2, ...: computed in the same statement, under the
 * job's event lock (SQLite: the write lock), so two writers cannot both
 * take the same next number. */
static const char SQL_EVENT_ADD[] =
    "INSERT INTO job_events (job, seq, ts, step, progress, message)"
    " SELECT CAST(?1 AS TEXT), coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM job_events"
    " WHERE job = CAST(?1 AS TEXT)";

int store_event_add_in(db_conn *c, const char *job, size_t joblen, const char *step, size_t steplen,
                       int progress, const char *message, struct store_error *err)
{
    char id[64];
    store_copy(id, sizeof id, job, joblen);
    db_stmt *st = NULL;
    int rc = db_lock(c, DB_LOCK_EVENTS, id, err);
    if (rc || (rc = db_prepare(c, SQL_EVENT_ADD, &st, err)))
        return rc;
    db_bind_text(st, 1, id);
    db_bind_i64(st, 2, wall_ms());
    db_bind_textn(st, 3, step, steplen);
    db_bind_i64(st, 4, progress);
    db_bind_text(st, 5, message);
    rc = db_run(st, err, "adding job event");
    db_done(st);
    if (rc == STORE_E_NOTFOUND)
        rc = store_fail(err, STORE_E_NOTFOUND, "no job %s", id);
    return rc;
}

struct event_add_ctx {
    const char *job, *step, *message;
    int progress;
};

static int event_add_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct event_add_ctx *e = ctx;
    return store_event_add_in(c, e->job, strlen(e->job), e->step, strlen(e->step), e->progress,
                              e->message, err);
}

int store_job_event_add(store *s, const char *job, const char *step, int progress,
                        const char *message, struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job, "store_job_event_add: NULL argument");
    struct event_add_ctx e = {job, step ? step : "", message ? message : "", progress};
    return db_tx(s->db, DB_WRITE, event_add_fn, &e, err);
}

static const char SQL_EVENTS[] = "SELECT seq, ts, step, progress, message FROM job_events"
                                 " WHERE job = ?1 AND seq > ?2 ORDER BY seq";

struct events_arg {
    const char *job;
    int64_t after;
};

static void bind_events(db_stmt *st, const void *arg)
{
    const struct events_arg *a = arg;
    db_bind_text(st, 1, a->job);
    db_bind_i64(st, 2, a->after);
}

static int row_to_event(db_stmt *st, void *elem, struct store_error *err)
{
    (void)err;
    struct job_event *ev = elem;
    ev->seq = db_col_i64(st, 0);
    ev->ts = db_col_i64(st, 1);
    DB_COL_FIELD(st, 2, ev->step);
    ev->progress = (int)db_col_i64(st, 3);
    DB_COL_FIELD(st, 4, ev->message);
    return STORE_OK;
}

int store_job_events(store *s, const char *job, int64_t after, struct job_event **out, size_t *n,
                     struct store_error *err)
{
    store_err_clear(err);
    STORE_CHECK(s && job && out && n, "store_job_events: NULL argument");
    struct events_arg a = {job, after};
    const struct store_read r = {SQL_EVENTS, "reading job events", bind_events,
                                 &a,         sizeof **out,         row_to_event};
    return store_read_all(s, &r, (void **)out, n, err);
}
