/* store_int: what the backends of store.h share, and nothing else may use.
 *
 * A backend fills a `struct store_ops` table and embeds `struct store` as
 * the first member of its own handle, so store.c can dispatch through
 * s->ops without knowing the backend. store.c checks arguments that every
 * backend would check the same way (NULL pointers, negative leases, range
 * order) before it calls a backend function, so the backends may assume
 * them. Each ops function is one transaction and reports errors through
 * store_fail(). */
#ifndef STORE_STORE_INT_H
#define STORE_STORE_INT_H

#include "store/store.h"

#include <stdarg.h>

struct store_ops {
    const char *name; /* "sqlite", "postgresql" */
    void (*close)(store *s);

    int (*vm_insert)(store *s, struct vm_rec *r, struct store_error *err);
    int (*vm_update)(store *s, const struct vm_rec *r, struct store_error *err);
    int (*vm_get)(store *s, int vmid, struct vm_rec *out, struct store_error *err);
    int (*vm_get_id)(store *s, int64_t id, struct vm_rec *out, struct store_error *err);
    int (*vm_scan)(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                   struct store_error *err);

    int (*job_insert)(store *s, struct job_rec *j, struct store_error *err);
    int (*job_update)(store *s, const struct job_rec *j, struct store_error *err);
    int (*job_get)(store *s, const char *id, struct job_rec *out, struct store_error *err);
    int (*job_checkpoint)(store *s, const struct job_rec *j, const char *event,
                          struct store_error *err);
    int (*job_claim)(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                     struct store_error *err);
    int (*job_renew)(store *s, const char *id, const char *owner, int64_t lease_ms,
                     struct store_error *err);
    int (*job_count_active)(store *s, const char *kind, int *n, struct store_error *err);
    int (*job_lease_owners)(store *s, char (*owners)[64], size_t max, size_t *n,
                            struct store_error *err);
    int (*job_expire_owner)(store *s, const char *owner, struct store_error *err);
    int (*job_event_add)(store *s, const char *job, const char *step, int progress,
                         const char *message, struct store_error *err);
    int (*job_events)(store *s, const char *job, int64_t after, struct job_event **out, size_t *n,
                      struct store_error *err);

    int (*vmid_reserve)(store *s, const struct vmid_range *ranges, size_t nranges, const int *taken,
                        size_t ntaken, const char *job, int *vmid, struct store_error *err);
    int (*vmid_mark_used)(store *s, int vmid, struct store_error *err);
    int (*vmid_mark_foreign)(store *s, int vmid, struct store_error *err);
    int (*vmid_release)(store *s, int vmid, int64_t quarantine_ms, struct store_error *err);
    int (*vmid_count)(store *s, int lo, int hi, int *n, struct store_error *err);

    int (*reserve_capacity)(store *s, const char *job, const char *node, int64_t mem, int64_t disk,
                            const struct cap_room *room, struct store_error *err);
    int (*settle_capacity)(store *s, const char *job, struct store_error *err);
    int (*release_capacity)(store *s, const char *job, struct store_error *err);
    int (*reserved_on)(store *s, const char *node, const char *except_job, int64_t seen_since,
                       int64_t *mem, int64_t *disk, struct store_error *err);

    int (*create_submit)(store *s, struct store_submit *sub, struct store_error *err);
    int (*job_submit)(store *s, struct job_rec *j, const char *event,
                      const struct store_usage *quota, struct store_usage *used,
                      struct store_error *err);
    int (*job_submit_move)(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                           enum vm_state from, enum vm_state to, struct store_error *err);
    int (*clone_slot_take)(store *s, const char *job, const char *node, int limit,
                           struct store_error *err);
    int (*clone_slot_give)(store *s, const char *job, struct store_error *err);
    int (*leftover_add)(store *s, int vmid, const char *node, const char *job,
                        struct store_error *err);
    int (*leftover_list)(store *s, struct leftover **out, size_t *n, struct store_error *err);
    int (*leftover_done)(store *s, int vmid, const char *node, int64_t quarantine_ms,
                         struct store_error *err);
    int (*idem_put)(store *s, const char *owner, const char *key, json_t *answer, json_t **existing,
                    struct store_error *err);
    int (*idem_get)(store *s, const char *owner, const char *key, json_t **answer,
                    struct store_error *err);
    int (*kv_setdefault)(store *s, const char *name, const char *value, char *out, size_t outlen,
                         struct store_error *err);

    int (*token_insert)(store *s, const struct token_rec *t, struct store_error *err);
    int (*token_get)(store *s, const char *id, struct token_rec *out, struct store_error *err);
    int (*token_list)(store *s, struct token_rec **out, size_t *n, struct store_error *err);
    int (*token_revoke)(store *s, const char *id, struct store_error *err);
    int (*job_stats)(store *s, struct job_stat **out, size_t *n, struct store_error *err);
};

struct store {
    const struct store_ops *ops;
};

/* Proxmox accepts VMIDs 100 .. 999999999. */
#define STORE_VMID_MIN 100
#define STORE_VMID_MAX 999999999
/* store_vm_list: the default and the largest page. */
#define STORE_LIST_DEFAULT 100
#define STORE_LIST_MAX 1000

/* Backends. SQLite gets what follows "sqlite:"; PostgreSQL the whole URL
 * (a libpq connection URI). */
store *store_sqlite_open(const char *path, struct store_error *err);
store *store_pg_open(const char *url, struct store_error *err);

/* Fill *err (may be NULL) and return `code`. */
int store_fail(struct store_error *err, enum store_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copy src[0..len) into dst[n] NUL-terminated, cutting at a UTF-8 character
 * boundary when it does not fit (a record must never hold half a character). */
void store_copy(char *dst, size_t n, const char *src, size_t len);
/* Length of a string held in a bounded record field (it may lack a NUL when
 * a caller filled the whole array). */
#define FIELD_LEN(f) strnlen((f), sizeof(f))

/* The "gone" states: a VM record in one of them does not hold its VMID. */
bool vm_state_gone(enum vm_state s);
int job_state_parse(const char *s); /* -1 when unknown */

/* JSON columns: compact text, or NULL for a NULL value. The caller frees. */
char *store_json_dump(const json_t *v);
/* Parse a stored JSON text; `what` names the column for the message. */
int store_json_load(const char *text, json_t **out, const char *what, struct store_error *err);

/* A random (version 4) UUID in out[37]. */
void store_uuid(char out[37]);

/* The decisions every backend takes the same way, on sums it read inside
 * its transaction. */
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

#endif
