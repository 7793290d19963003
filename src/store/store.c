/* store: URL dispatch, argument checks shared by all backends, and the
 * small helpers of store_int.h. The SQL lives in the backend files. */
#include "store/store_int.h"

#include "common/util.h"
#include "common/xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- helpers -------------------------------------------------------------- */

const char *store_strerror(enum store_err e)
{
    switch (e) {
    case STORE_OK:
        return "ok";
    case STORE_E_NOTFOUND:
        return "not found";
    case STORE_E_CONFLICT:
        return "conflict";
    case STORE_E_FULL:
        return "no free VMID";
    case STORE_E_DB:
        return "database error";
    case STORE_E_INVALID:
        return "invalid argument";
    }
    return "unknown store error";
}

int store_fail(struct store_error *err, enum store_err code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void err_clear(struct store_error *err)
{
    if (err) {
        err->code = STORE_OK;
        err->message[0] = '\0';
    }
}

void store_copy(char *dst, size_t n, const char *src, size_t len)
{
    if (n == 0)
        return;
    if (!src)
        len = 0;
    if (len >= n) {
        len = n - 1;
        /* Back up over continuation bytes (10xxxxxx) so that the cut falls
         * before the lead byte of the character that does not fit. */
        while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
            len--;
    }
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

static const char *const VM_STATES[] = {"creating", "enabled", "failed",
                                        "deleting", "deleted", "lost"};
static const char *const JOB_STATES[] = {"queued", "running", "done", "failed"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *vm_state_name(enum vm_state s)
{
    return (unsigned)s < NELEM(VM_STATES) ? VM_STATES[s] : "unknown";
}

int vm_state_parse(const char *s)
{
    for (size_t i = 0; s && i < NELEM(VM_STATES); i++)
        if (strcmp(s, VM_STATES[i]) == 0)
            return (int)i;
    return -1;
}

bool vm_state_gone(enum vm_state s)
{
    return s == VMS_FAILED || s == VMS_DELETED || s == VMS_LOST;
}

const char *job_state_name(enum job_state s)
{
    return (unsigned)s < NELEM(JOB_STATES) ? JOB_STATES[s] : "unknown";
}

int job_state_parse(const char *s)
{
    for (size_t i = 0; s && i < NELEM(JOB_STATES); i++)
        if (strcmp(s, JOB_STATES[i]) == 0)
            return (int)i;
    return -1;
}

char *store_json_dump(const json_t *v)
{
    if (!v)
        return NULL;
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t) {
        /* jansson fails only on allocation (or a non-JSON value, which the
         * type system rules out): treat as out of memory like xalloc. */
        fprintf(stderr, "store: json_dumps failed\n");
        abort();
    }
    return t;
}

int store_json_load(const char *text, json_t **out, const char *what, struct store_error *err)
{
    *out = NULL;
    if (!text)
        return STORE_OK;
    json_error_t je;
    *out = json_loads(text, JSON_DECODE_ANY, &je);
    if (!*out)
        return store_fail(err, STORE_E_DB, "corrupt JSON in %s: %s (line %d)", what, je.text,
                          je.line);
    return STORE_OK;
}

void store_uuid(char out[37])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "store: getrandom failed\n");
            abort();
        }
        got += (size_t)r;
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void vm_rec_release(struct vm_rec *r)
{
    if (!r)
        return;
    json_decref(r->pending);
    r->pending = NULL;
}

void job_rec_release(struct job_rec *j)
{
    if (!j)
        return;
    json_decref(j->request);
    json_decref(j->attempts);
    j->request = NULL;
    j->attempts = NULL;
}

/* ---- open / close --------------------------------------------------------- */

store *store_open(const char *url, struct store_error *err)
{
    err_clear(err);
    if (!url || !*url) {
        store_fail(err, STORE_E_INVALID, "store URL is empty");
        return NULL;
    }
    if (str_starts(url, "sqlite:"))
        return store_sqlite_open(url + strlen("sqlite:"), err);
    if (str_starts(url, "postgresql://") || str_starts(url, "postgres://"))
        return store_pg_open(url, err);
    /* Name the scheme only: the rest of a URL may hold a password. */
    const char *colon = strchr(url, ':');
    int len = colon ? (int)(colon - url) : (int)strlen(url);
    store_fail(err, STORE_E_INVALID,
               "unknown store URL scheme '%.*s' (expected sqlite:PATH or postgresql://...)",
               len > 32 ? 32 : len, url);
    return NULL;
}

void store_close(store *s)
{
    if (s)
        s->ops->close(s);
}

/* ---- argument checks, then the backend ------------------------------------ */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return store_fail(err, STORE_E_INVALID, __VA_ARGS__);                                  \
    } while (0)

static int check_vm(const struct vm_rec *r, struct store_error *err)
{
    CHECK(r->vmid >= STORE_VMID_MIN && r->vmid <= STORE_VMID_MAX, "VMID %d out of range", r->vmid);
    CHECK((unsigned)r->state <= VMS_LOST, "VM state %d unknown", (int)r->state);
    CHECK(!r->pending || json_is_object(r->pending), "VM pending changes must be an object");
    return STORE_OK;
}

int store_vm_insert(store *s, struct vm_rec *r, struct store_error *err)
{
    err_clear(err);
    CHECK(s && r, "store_vm_insert: NULL argument");
    int rc = check_vm(r, err);
    return rc ? rc : s->ops->vm_insert(s, r, err);
}

int store_vm_update(store *s, const struct vm_rec *r, struct store_error *err)
{
    err_clear(err);
    CHECK(s && r, "store_vm_update: NULL argument");
    int rc = check_vm(r, err);
    return rc ? rc : s->ops->vm_update(s, r, err);
}

int store_vm_get(store *s, int vmid, struct vm_rec *out, struct store_error *err)
{
    err_clear(err);
    CHECK(s && out, "store_vm_get: NULL argument");
    memset(out, 0, sizeof *out);
    return s->ops->vm_get(s, vmid, out, err);
}

int store_vm_get_id(store *s, int64_t id, struct vm_rec *out, struct store_error *err)
{
    err_clear(err);
    CHECK(s && out, "store_vm_get_id: NULL argument");
    memset(out, 0, sizeof *out);
    return s->ops->vm_get_id(s, id, out, err);
}

static int vm_filter_check(const struct vm_filter *f, struct store_error *err)
{
    CHECK(f->limit >= 0, "list limit %d is negative", f->limit);
    CHECK(f->state >= -1 && f->state <= VMS_LOST, "VM state %d unknown", f->state);
    return STORE_OK;
}

int store_vm_scan(store *s, const struct vm_filter *f, store_vm_fn fn, void *ctx,
                  struct store_error *err)
{
    err_clear(err);
    CHECK(s && fn, "store_vm_scan: NULL argument");
    struct vm_filter def = {.state = -1};
    if (!f)
        f = &def;
    int rc = vm_filter_check(f, err);
    return rc ? rc : s->ops->vm_scan(s, f, fn, ctx, err);
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
    if (!r) { /* the backend starts over */
        vm_list_clear(l);
        return 0;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n] = *r;
    json_incref(r->pending); /* the backend releases its own reference */
    l->n++;
    return 0;
}

int store_vm_list(store *s, const struct vm_filter *f, struct vm_rec **out, size_t *n,
                  struct store_error *err)
{
    err_clear(err);
    CHECK(s && out && n, "store_vm_list: NULL argument");
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

int store_job_insert(store *s, struct job_rec *j, struct store_error *err)
{
    err_clear(err);
    CHECK(s && j, "store_job_insert: NULL argument");
    CHECK(FIELD_LEN(j->kind) > 0, "job kind is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    return s->ops->job_insert(s, j, err);
}

int store_job_update(store *s, const struct job_rec *j, struct store_error *err)
{
    err_clear(err);
    CHECK(s && j, "store_job_update: NULL argument");
    CHECK(FIELD_LEN(j->id) > 0, "job id is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    return s->ops->job_update(s, j, err);
}

#define NEED_OP(op) CHECK(s->ops->op != NULL, "the %s store does not support " #op, s->ops->name)

int store_job_checkpoint(store *s, const struct job_rec *j, const char *event,
                         struct store_error *err)
{
    err_clear(err);
    CHECK(s && j, "store_job_checkpoint: NULL argument");
    CHECK(FIELD_LEN(j->id) > 0, "job id is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    NEED_OP(job_checkpoint);
    return s->ops->job_checkpoint(s, j, event && *event ? event : NULL, err);
}

int store_job_get(store *s, const char *id, struct job_rec *out, struct store_error *err)
{
    err_clear(err);
    CHECK(s && id && out, "store_job_get: NULL argument");
    memset(out, 0, sizeof *out);
    return s->ops->job_get(s, id, out, err);
}

int store_job_claim(store *s, const char *owner, int64_t lease_ms, struct job_rec *out,
                    struct store_error *err)
{
    err_clear(err);
    CHECK(s && owner && *owner && out, "store_job_claim: NULL or empty argument");
    CHECK(lease_ms > 0, "lease of %lld ms is not positive", (long long)lease_ms);
    memset(out, 0, sizeof *out);
    return s->ops->job_claim(s, owner, lease_ms, out, err);
}

int store_job_renew(store *s, const char *id, const char *owner, int64_t lease_ms,
                    struct store_error *err)
{
    err_clear(err);
    CHECK(s && id && owner && *owner, "store_job_renew: NULL or empty argument");
    CHECK(lease_ms > 0, "lease of %lld ms is not positive", (long long)lease_ms);
    return s->ops->job_renew(s, id, owner, lease_ms, err);
}

int store_job_lease_owners(store *s, char (*owners)[64], size_t max, size_t *n,
                           struct store_error *err)
{
    CHECK(s && owners && n, "store_job_lease_owners: NULL argument");
    if (!s->ops->job_lease_owners) {
        *n = 0;
        return STORE_OK;
    }
    return s->ops->job_lease_owners(s, owners, max, n, err);
}

int store_job_expire_owner(store *s, const char *owner, struct store_error *err)
{
    CHECK(s && owner && *owner, "store_job_expire_owner: NULL or empty argument");
    if (!s->ops->job_expire_owner)
        return STORE_OK;
    return s->ops->job_expire_owner(s, owner, err);
}

int store_job_count_active(store *s, const char *kind, int *n, struct store_error *err)
{
    err_clear(err);
    CHECK(s && n, "store_job_count_active: NULL argument");
    *n = 0;
    return s->ops->job_count_active(s, kind, n, err);
}

int store_job_event_add(store *s, const char *job, const char *step, int progress,
                        const char *message, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job, "store_job_event_add: NULL argument");
    return s->ops->job_event_add(s, job, step ? step : "", progress, message ? message : "", err);
}

int store_job_events(store *s, const char *job, int64_t after, struct job_event **out, size_t *n,
                     struct store_error *err)
{
    err_clear(err);
    CHECK(s && job && out && n, "store_job_events: NULL argument");
    *out = NULL;
    *n = 0;
    return s->ops->job_events(s, job, after, out, n, err);
}

static int check_vmid(int vmid, struct store_error *err)
{
    CHECK(vmid >= STORE_VMID_MIN && vmid <= STORE_VMID_MAX, "VMID %d out of range", vmid);
    return STORE_OK;
}

int store_vmid_reserve(store *s, const struct vmid_range *ranges, size_t nranges, const int *taken,
                       size_t ntaken, const char *job, int *vmid, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job && *job && vmid && (ranges || nranges == 0),
          "store_vmid_reserve: NULL or empty argument");
    CHECK(nranges > 0, "no VMID range given");
    CHECK(taken || ntaken == 0, "store_vmid_reserve: taken is NULL");
    for (size_t i = 0; i < nranges; i++)
        CHECK(ranges[i].lo >= STORE_VMID_MIN && ranges[i].hi <= STORE_VMID_MAX &&
                  ranges[i].lo <= ranges[i].hi,
              "VMID range %d-%d is invalid (must be within %d-%d, lo <= hi)", ranges[i].lo,
              ranges[i].hi, STORE_VMID_MIN, STORE_VMID_MAX);
    /* The backend binary-searches `taken`; unsorted input would make it
     * hand out an ID Proxmox already uses. O(n) to check, so check. */
    for (size_t i = 1; i < ntaken; i++)
        CHECK(taken[i - 1] <= taken[i], "taken VMIDs are not sorted (%d before %d)", taken[i - 1],
              taken[i]);
    *vmid = 0;
    return s->ops->vmid_reserve(s, ranges, nranges, taken, ntaken, job, vmid, err);
}

int store_vmid_mark_used(store *s, int vmid, struct store_error *err)
{
    err_clear(err);
    CHECK(s, "store_vmid_mark_used: NULL store");
    int rc = check_vmid(vmid, err);
    return rc ? rc : s->ops->vmid_mark_used(s, vmid, err);
}

int store_vmid_mark_foreign(store *s, int vmid, struct store_error *err)
{
    err_clear(err);
    CHECK(s, "store_vmid_mark_foreign: NULL store");
    int rc = check_vmid(vmid, err);
    return rc ? rc : s->ops->vmid_mark_foreign(s, vmid, err);
}

int store_vmid_release(store *s, int vmid, int64_t quarantine_ms, struct store_error *err)
{
    err_clear(err);
    CHECK(s, "store_vmid_release: NULL store");
    CHECK(quarantine_ms >= 0, "quarantine of %lld ms is negative", (long long)quarantine_ms);
    int rc = check_vmid(vmid, err);
    return rc ? rc : s->ops->vmid_release(s, vmid, quarantine_ms, err);
}

int store_vmid_count(store *s, int lo, int hi, int *n, struct store_error *err)
{
    err_clear(err);
    CHECK(s && n, "store_vmid_count: NULL argument");
    CHECK(lo <= hi, "VMID range %d-%d is empty", lo, hi);
    *n = 0;
    return s->ops->vmid_count(s, lo, hi, n, err);
}

int store_reserve_capacity(store *s, const char *job, const char *node, int64_t mem_bytes,
                           int64_t disk_bytes, const struct cap_room *room, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job && *job && node && *node, "store_reserve_capacity: NULL or empty argument");
    CHECK(mem_bytes >= 0 && disk_bytes >= 0, "negative capacity reservation");
    return s->ops->reserve_capacity(s, job, node, mem_bytes, disk_bytes, room, err);
}

int store_settle_capacity(store *s, const char *job, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job, "store_settle_capacity: NULL argument");
    return s->ops->settle_capacity(s, job, err);
}

int store_release_capacity(store *s, const char *job, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job, "store_release_capacity: NULL argument");
    return s->ops->release_capacity(s, job, err);
}

int store_reserved_on(store *s, const char *node, const char *except_job, int64_t seen_since,
                      int64_t *mem, int64_t *disk, struct store_error *err)
{
    err_clear(err);
    CHECK(s && node && mem && disk, "store_reserved_on: NULL argument");
    *mem = *disk = 0;
    return s->ops->reserved_on(s, node, except_job, seen_since, mem, disk, err);
}

int store_idem_put(store *s, const char *owner, const char *key, json_t *answer, json_t **existing,
                   struct store_error *err)
{
    err_clear(err);
    CHECK(s && owner && key && *key && answer, "store_idem_put: NULL or empty argument");
    if (existing)
        *existing = NULL;
    return s->ops->idem_put(s, owner, key, answer, existing, err);
}

/* A backend without the call (a newer interface than it implements) says
 * so instead of crashing. */
int store_create_submit(store *s, struct store_submit *sub, struct store_error *err)
{
    err_clear(err);
    CHECK(s && sub && sub->vm && sub->job && sub->event, "store_create_submit: NULL argument");
    const struct store_idem *idem = sub->idem;
    CHECK(!idem || (idem->owner && idem->key && *idem->key && idem->answer),
          "store_create_submit: incomplete idempotency key");
    NEED_OP(create_submit);
    struct job_rec *j = sub->job;
    CHECK(FIELD_LEN(j->kind) > 0, "job kind is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    sub->first = NULL;
    memset(&sub->used, 0, sizeof sub->used);
    int rc = check_vm(sub->vm, err);
    if (rc)
        return rc;
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    return s->ops->create_submit(s, sub, err);
}

int store_job_submit(store *s, struct job_rec *j, const char *event,
                     const struct store_usage *quota, struct store_usage *used,
                     struct store_error *err)
{
    err_clear(err);
    CHECK(s && j && event, "store_job_submit: NULL argument");
    CHECK(FIELD_LEN(j->kind) > 0, "job kind is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    NEED_OP(job_submit);
    if (used)
        memset(used, 0, sizeof *used);
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    return s->ops->job_submit(s, j, event, quota, used, err);
}

int store_job_submit_move(store *s, struct job_rec *j, const char *event, int64_t vm_id,
                          enum vm_state from, enum vm_state to, struct store_error *err)
{
    err_clear(err);
    CHECK(s && j && event, "store_job_submit_move: NULL argument");
    CHECK(FIELD_LEN(j->kind) > 0, "job kind is empty");
    CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    CHECK((unsigned)from <= VMS_LOST && (unsigned)to <= VMS_LOST, "VM state unknown");
    NEED_OP(job_submit_move);
    if (FIELD_LEN(j->id) == 0)
        store_uuid(j->id);
    return s->ops->job_submit_move(s, j, event, vm_id, from, to, err);
}

int store_clone_slot_take(store *s, const char *job, const char *node, int limit,
                          struct store_error *err)
{
    err_clear(err);
    CHECK(s && job && *job && node && *node, "store_clone_slot_take: NULL or empty argument");
    CHECK(limit > 0, "clone slot limit %d must be positive", limit);
    NEED_OP(clone_slot_take);
    return s->ops->clone_slot_take(s, job, node, limit, err);
}

int store_clone_slot_give(store *s, const char *job, struct store_error *err)
{
    err_clear(err);
    CHECK(s && job, "store_clone_slot_give: NULL argument");
    NEED_OP(clone_slot_give);
    return s->ops->clone_slot_give(s, job, err);
}

int store_leftover_add(store *s, int vmid, const char *node, const char *job,
                       struct store_error *err)
{
    err_clear(err);
    CHECK(s && node && *node && job, "store_leftover_add: NULL or empty argument");
    CHECK(vmid >= STORE_VMID_MIN && vmid <= STORE_VMID_MAX, "VMID %d out of range", vmid);
    NEED_OP(leftover_add);
    return s->ops->leftover_add(s, vmid, node, job, err);
}

int store_leftover_list(store *s, struct leftover **out, size_t *n, struct store_error *err)
{
    err_clear(err);
    CHECK(s && out && n, "store_leftover_list: NULL argument");
    NEED_OP(leftover_list);
    *out = NULL;
    *n = 0;
    return s->ops->leftover_list(s, out, n, err);
}

int store_leftover_done(store *s, int vmid, const char *node, int64_t quarantine_ms,
                        struct store_error *err)
{
    err_clear(err);
    CHECK(s && node && *node, "store_leftover_done: NULL or empty argument");
    CHECK(quarantine_ms >= 0, "negative quarantine");
    NEED_OP(leftover_done);
    return s->ops->leftover_done(s, vmid, node, quarantine_ms, err);
}

int store_idem_get(store *s, const char *owner, const char *key, json_t **answer,
                   struct store_error *err)
{
    err_clear(err);
    CHECK(s && owner && key && *key && answer, "store_idem_get: NULL or empty argument");
    NEED_OP(idem_get);
    *answer = NULL;
    return s->ops->idem_get(s, owner, key, answer, err);
}

int store_kv_setdefault(store *s, const char *name, const char *value, char *out, size_t outlen,
                        struct store_error *err)
{
    err_clear(err);
    CHECK(s && name && *name && value && out && outlen, "store_kv_setdefault: NULL argument");
    NEED_OP(kv_setdefault);
    return s->ops->kv_setdefault(s, name, value, out, outlen, err);
}

static bool token_role_ok(const char *role)
{
    return strcmp(role, "admin") == 0 || strcmp(role, "user") == 0;
}

int store_token_insert(store *s, const struct token_rec *t, struct store_error *err)
{
    err_clear(err);
    CHECK(s && t, "store_token_insert: NULL argument");
    CHECK(t->id[0] && t->owner[0] && t->hash[0], "token id, owner and hash must not be empty");
    CHECK(token_role_ok(t->role), "token role must be admin or user, not '%.16s'", t->role);
    NEED_OP(token_insert);
    return s->ops->token_insert(s, t, err);
}

int store_token_get(store *s, const char *id, struct token_rec *out, struct store_error *err)
{
    err_clear(err);
    CHECK(s && id && out, "store_token_get: NULL argument");
    NEED_OP(token_get);
    memset(out, 0, sizeof *out);
    return s->ops->token_get(s, id, out, err);
}

int store_token_list(store *s, struct token_rec **out, size_t *n, struct store_error *err)
{
    err_clear(err);
    CHECK(s && out && n, "store_token_list: NULL argument");
    NEED_OP(token_list);
    *out = NULL;
    *n = 0;
    return s->ops->token_list(s, out, n, err);
}

int store_token_revoke(store *s, const char *id, struct store_error *err)
{
    err_clear(err);
    CHECK(s && id, "store_token_revoke: NULL argument");
    NEED_OP(token_revoke);
    return s->ops->token_revoke(s, id, err);
}

const int64_t store_duration_bounds[STORE_DURATION_BUCKETS] = {1000,   5000,    15000,    60000,
                                                               300000, 1800000, INT64_MAX};

int store_job_stats(store *s, struct job_stat **out, size_t *n, struct store_error *err)
{
    err_clear(err);
    CHECK(s && out && n, "store_job_stats: NULL argument");
    NEED_OP(job_stats);
    *out = NULL;
    *n = 0;
    return s->ops->job_stats(s, out, n, err);
}

/* ---- decisions shared by the backends ------------------------------------- */

int store_room_check(const struct cap_room *room, int64_t held_mem, int64_t held_disk, int64_t mem,
                     int64_t disk, struct store_error *err)
{
    int64_t free_mem = room->mem - held_mem, free_disk = room->disk - held_disk;
    if (free_mem < mem)
        return store_fail(err, STORE_E_FULL, "not enough memory: %lld MiB free, %lld MiB needed",
                          (long long)(free_mem > 0 ? free_mem >> 20 : 0),
                          (long long)((mem + (1 << 20) - 1) >> 20));
    if (free_disk < disk)
        return store_fail(err, STORE_E_FULL,
                          "not enough disk space: %lld GiB free, %lld GiB needed",
                          (long long)(free_disk > 0 ? free_disk >> 30 : 0),
                          (long long)((disk + (1LL << 30) - 1) >> 30));
    return STORE_OK;
}

int store_slots_check(int64_t held, int limit, const char *node, struct store_error *err)
{
    if (held >= limit)
        return store_fail(err, STORE_E_FULL, "%lld of %d clone slots on %s are taken",
                          (long long)held, limit, node);
    return STORE_OK;
}

int store_quota_check(const struct store_usage *q, const struct store_usage *before,
                      const struct store_usage *with, const char *owner, struct store_error *err)
{
    bool over = (q->vms > 0 && with->vms > q->vms) || (q->cores > 0 && with->cores > q->cores) ||
                (q->memory_mb > 0 && with->memory_mb > q->memory_mb) ||
                (q->disk_gb > 0 && with->disk_gb > q->disk_gb);
    bool raises = !before || with->cores > before->cores || with->memory_mb > before->memory_mb ||
                  with->disk_gb > before->disk_gb;
    if (over && raises)
        return store_fail(err, STORE_E_FULL, "the quota of '%s' is reached", owner);
    return STORE_OK;
}
