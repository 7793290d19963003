/* store_int: what the files of the store share, and nothing else may use.
 *
 * The operations of store.h are written once, one file per concern
 * (store_vm.c, store_job.c, store_vmid.c, store_capacity.c,
 * store_submit.c, store_token.c, store_leftover.c, store_stats.c,
 * store_addr.c, store_addr_keep.c, store_addr_range.c, store_event.c), in SQL
 * both databases accept, over the driver contract of db.h. Each public
 * function checks its arguments, then runs one transaction through db_tx
 * (which retries it on the driver's retry class). The decisions that are
 * policy (which VM states hold a VMID, which job states are unfinished,
 * whether a reservation fits, whether a quota is passed) are the functions
 * below, used by every operation that needs them; SQL names the state
 * lists through db.h's {GONE}, {LIVE} and {ACTIVE} tokens, made from
 * these functions. Functions ending in _in run inside a transaction that
 * the caller opened, and report errors through store_fail(). */
#ifndef STORE_STORE_INT_H
#define STORE_STORE_INT_H

#include "store/db.h"
#include "store/store.h"

#include <stdarg.h>
#include <string.h>

struct store {
    db *db;
    /* store_addr_policy: quarantine times for the store's own releases
     * (pool names owned); has_policy false: records going to a gone state
     * keep their addresses until the sweep */
    bool has_policy;
    struct store_addr_quarantine *q;
    size_t nq;
};

/* Proxmox accepts VMIDs 100 .. 999999999. */
#define STORE_VMID_MIN 100
#define STORE_VMID_MAX 999999999
/* store_vm_list: the default and the largest page. */
#define STORE_LIST_DEFAULT 100
#define STORE_LIST_MAX 1000

/* Fill *err (may be NULL) and return `code`. */
int store_fail(struct store_error *err, enum store_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void store_err_clear(struct store_error *err);

/* An argument check: STORE_E_INVALID with the message when cond fails. */
#define STORE_CHECK(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return store_fail(err, STORE_E_INVALID, __VA_ARGS__);                                  \
    } while (0)

/* Copy src[0..len) into dst[n] NUL-terminated, cutting at a UTF-8 character
 * boundary when it does not fit (a record must never hold half a character). */
void store_copy(char *dst, size_t n, const char *src, size_t len);
/* Length of a string held in a bounded record field (it may lack a NUL when
 * a caller filled the whole array). */
#define FIELD_LEN(f) strnlen((f), sizeof(f))

/* ---- policy ---------------------------------------------------------------- */

/* The "gone" states: a VM record in one of them does not hold its VMID. */
bool vm_state_gone(enum vm_state s);
/* Finished jobs (done, failed): they hold no lease and are not claimed. */
bool job_state_final(enum job_state s);
int job_state_parse(const char *s); /* -1 when unknown */

/* Does a reservation of mem/disk bytes fit in `room` beside what others hold
 * on the node (held_mem, held_disk)? STORE_OK, or STORE_E_FULL saying what
 * is free. */
int store_room_check(const struct cap_room *room, int64_t held_mem, int64_t held_disk, int64_t mem,
                     int64_t disk, struct store_error *err);
/* Is `held` of `limit` clone slots on node all of them? STORE_E_FULL then. */
int store_slots_check(int64_t held, int limit, const char *node, struct store_error *err);
/* Would an owner's use `with` (the new VM or change counted) exceed quota
 * q? A change that raises nothing over `before` (NULL: a new VM, which
 * always does) is let through even over the quota. STORE_E_FULL then. */
int store_quota_check(const struct store_usage *q, const struct store_usage *before,
                      const struct store_usage *with, const char *owner, struct store_error *err);

/* ---- values ------------------------------------------------------------------ */

/* JSON columns: compact text, or NULL for a NULL value. The caller frees. */
char *store_json_dump(const json_t *v);
/* Parse a stored JSON text; `what` names the column for the message. */
int store_json_load(const char *text, json_t **out, const char *what, struct store_error *err);
/* A random (version 4) UUID in out[37]. */
void store_uuid(char out[37]);
/* Validity checks shared by several operations. */
int store_check_vm(const struct vm_rec *r, struct store_error *err);
int store_check_job(const struct job_rec *j, struct store_error *err);

/* ---- pieces of transactions (inside one the caller opened) -------------------- */

/* A read of every row of `sql` into an array (db_collect), as one
 * transaction: bind (may be NULL) binds the parameters from arg. On
 * success *out (the caller frees it) holds *n elements of `size` bytes. */
struct store_read {
    const char *sql, *what;
    void (*bind)(db_stmt *st, const void *arg);
    const void *arg;
    size_t size;
    db_row_fn row;
};
int store_read_all(store *s, const struct store_read *r, void **out, size_t *n,
                   struct store_error *err);

/* VMID reservation inside a transaction (store_vmid.c), and the checks of
 * its arguments (STORE_E_INVALID naming what is wrong). */
int store_vmid_check_args(const struct vmid_range *ranges, size_t nranges, const int *taken,
                          size_t ntaken, struct store_error *err);
int store_vmid_reserve_in(db_conn *c, const struct vmid_range *ranges, size_t nranges,
                          const int *taken, size_t ntaken, const char *job, int *vmid,
                          struct store_error *err);
/* Addresses inside a creation's transaction (store_addr.c): check the
 * requests; reserve them for job (pools locked in name order); bind the
 * job's reserved ones to a record; write the record's vm_net row
 * (STORE_E_CONFLICT with field "mac" when the MAC is a live record's). */
bool store_addr_key_ok(const char *key); /* "4"/"6" and 32 lower-case hex digits */
int store_addr_check_reqs(const struct store_addr_req *reqs, size_t n, struct store_error *err);
int store_addr_reserve_in(db_conn *c, const char *job, struct store_addr_req *reqs, size_t n,
                          struct store_error *err);
int store_addr_bind_in(db_conn *c, const char *job, int64_t vm_id, int vmid, int64_t *bound,
                       struct store_error *err);
/* store_addr_release_vm inside the transaction that marks the record
 * deleted or failed (the next step: store_vm_update's callers). */
int store_addr_release_vm_in(db_conn *c, int64_t vm_id, const struct store_addr_quarantine *q,
                             size_t nq, size_t *n, struct store_error *err);
/* The addresses of creation `job` that no live record uses, once no
 * leftover of that job remains (store_leftover_done). */
int store_addr_release_left_in(db_conn *c, const char *job, const struct store_addr_quarantine *q,
                               size_t nq, struct store_error *err);
int store_addr_rebind_in(db_conn *c, int64_t old_vm_id, int64_t new_vm_id, int new_vmid,
                         struct store_error *err);
int store_vm_net_insert_in(db_conn *c, int64_t vm_id, const struct store_net *net,
                           struct store_error *err);

/* A queued job's holds, given back inside store_job_cancel's transaction:
 * the live record of vmid that names job, creating (failed with `error`,
 * its addresses released with it) or deleting (enabled again); none:
 * nothing. And vmid's reservation when job still holds it (quarantine_ms
 * 0: free at once). */
int store_vm_unhold_in(db_conn *c, const store *s, const char *job, int vmid, const char *error,
                       struct store_error *err);
int store_vmid_release_job_in(db_conn *c, int vmid, const char *job, int64_t quarantine_ms,
                              struct store_error *err);

/* Bring the schema to the current version (store_schema.c). */
int store_schema_migrate(db *d, struct store_error *err);

int store_vm_insert_in(db_conn *c, struct vm_rec *r, struct store_error *err);
int store_job_insert_in(db_conn *c, struct job_rec *j, struct store_error *err);
/* The columns a job row is read from, and the reader of one such row. */
#define JOB_COLS                                                                                   \
    "id, kind, state, vmid, owner, step, node, upid, progress, request, attempts, error, "         \
    "lease_owner, lease_until, created_at, updated_at, finished_at, cancel_at, cancel_by"
int store_job_row(db_stmt *st, struct job_rec *j, struct store_error *err);
/* A job event line; `step` and `job` may be bounded fields. */
int store_event_add_in(db_conn *c, const char *job, size_t joblen, const char *step, size_t steplen,
                       int progress, const char *message, struct store_error *err);
/* Event log (store_event.c), inside a transaction: append one event (last
 * statement of the transaction: it takes the log lock); log what changed
 * between a VM record as stored (old) and as written (new); log job.failed
 * when a job moves from old_state to failed. */
int store_log_add_in(db_conn *c, struct store_event *e, struct store_error *err);
int store_event_vm_in(db_conn *c, const struct vm_rec *old, const struct vm_rec *new, bool observed,
                      struct store_error *err);
int store_event_job_in(db_conn *c, const struct job_rec *j, enum job_state old_state,
                       struct store_error *err);
/* Append an event of `type` about job j (its owner, VM, node, id) with
 * data (taken), as store_log_add_in. */
int store_log_job_in(db_conn *c, const struct job_rec *j, const char *type, json_t *data,
                     struct store_error *err);
/* store_job_cancel inside a transaction (store_job_cancel.c): out is
 * filled (release it) also on failure; *outcome 0 on failure. */
int store_job_cancel_in(db_conn *c, const store *s, const char *id,
                        const struct job_cancel_req *req, struct job_rec *out,
                        enum store_cancel *outcome, struct store_error *err);
/* The oldest unfinished job of kind on node into id, under the lock its
 * submissions take (store_job_submit_sole: one in progress is waited for
 * and seen); STORE_E_NOTFOUND when none (store_submit.c). */
int store_job_active_in(db_conn *c, const char *kind, const char *node, char id[40],
                        struct store_error *err);
/* STORE_E_CONFLICT with *existing (owned) when the key is taken. */
int store_idem_put_in(db_conn *c, const char *owner, const char *key, json_t *answer,
                      json_t **existing, struct store_error *err);

#endif
