/* store: opening and closing, the small helpers of store_int.h, and the
 * decisions that are policy (room, clone slots, quotas). The operations
 * live one file per concern (see store_int.h); the SQL drivers under them
 * in db_sqlite.c and db_pg.c. */
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
        err->field[0] = err->pool[0] = '\0';
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void store_err_clear(struct store_error *err)
{
    if (err) {
        err->code = STORE_OK;
        err->message[0] = err->field[0] = err->pool[0] = '\0';
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

bool job_state_final(enum job_state s)
{
    return s == JOB_DONE || s == JOB_FAILED;
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

char *store_sql_text(store *s, const char *sql)
{
    return db_sql_text(s->db, sql);
}

store *store_open(const char *url, struct store_error *err)
{
    store_err_clear(err);
    if (!url || !*url) {
        store_fail(err, STORE_E_INVALID, "store URL is empty");
        return NULL;
    }
    db *d = db_open(url, err);
    if (!d)
        return NULL;
    if (store_schema_migrate(d, err)) {
        db_close(d);
        return NULL;
    }
    store *s = xcalloc(1, sizeof *s);
    s->db = d;
    return s;
}

void store_close(store *s)
{
    if (!s)
        return;
    db_close(s->db);
    for (size_t i = 0; i < s->nq; i++)
        free((char *)s->q[i].pool);
    free(s->q);
    free(s);
}

/* ---- reads of whole lists ----------------------------------------------------- */

struct read_ctx {
    const struct store_read *r;
    void *v;
    size_t n;
};

static int read_all_fn(db_conn *c, void *ctx, struct store_error *err)
{
    struct read_ctx *k = ctx;
    db_stmt *st = NULL;
    int rc = db_prepare(c, k->r->sql, &st, err);
    if (rc)
        return rc;
    if (k->r->bind)
        k->r->bind(st, k->r->arg);
    rc = db_collect(st, &k->v, &k->n, k->r->size, k->r->row, err, k->r->what);
    db_done(st);
    return rc;
}

int store_read_all(store *s, const struct store_read *r, void **out, size_t *n,
                   struct store_error *err)
{
    struct read_ctx k = {r, NULL, 0};
    *out = NULL;
    *n = 0;
    int rc = db_tx(s->db, DB_READ, read_all_fn, &k, err);
    if (rc) {
        free(k.v);
        return rc;
    }
    *out = k.v;
    *n = k.n;
    return STORE_OK;
}

/* ---- checks shared by several operations ------------------------------------ */

int store_check_vm(const struct vm_rec *r, struct store_error *err)
{
    STORE_CHECK(r->vmid >= STORE_VMID_MIN && r->vmid <= STORE_VMID_MAX, "VMID %d out of range",
                r->vmid);
    STORE_CHECK((unsigned)r->state <= VMS_LOST, "VM state %d unknown", (int)r->state);
    STORE_CHECK(!r->pending || json_is_object(r->pending), "VM pending changes must be an object");
    return STORE_OK;
}

int store_check_job(const struct job_rec *j, struct store_error *err)
{
    STORE_CHECK(FIELD_LEN(j->kind) > 0, "job kind is empty");
    STORE_CHECK((unsigned)j->state <= JOB_FAILED, "job state %d unknown", (int)j->state);
    return STORE_OK;
}

/* ---- decisions shared by the backends ------------------------------------- */

int store_room_check(const struct cap_room *room, int64_t held_mem, int64_t held_disk, int64_t mem,
                     int64_t disk, struct store_error *err)
{
    int64_t free_mem = room->mem - held_mem, free_disk = room->disk - held_disk;
    if (mem > 0 && free_mem < mem)
        return store_fail(err, STORE_E_FULL, "not enough memory: %lld MiB free, %lld MiB needed",
                          (long long)(free_mem > 0 ? free_mem >> 20 : 0),
                          (long long)((mem + (1 << 20) - 1) >> 20));
    if (disk > 0 && free_disk < disk) {
        /* whole GiB, and the MiB over them (a cloud-init drive's 4) */
        long long gib = (long long)(disk >> 30),
                  mib = (long long)(((disk & ((1LL << 30) - 1)) + (1 << 20) - 1) >> 20);
        char over[32] = "";
        if (mib)
            snprintf(over, sizeof over, " + %lld MiB", mib);
        return store_fail(err, STORE_E_FULL,
                          "not enough disk space: %lld GiB free, %lld GiB%s needed",
                          (long long)(free_disk > 0 ? free_disk >> 30 : 0), gib, over);
    }
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
                (q->disk_gb > 0 && with->disk_gb > q->disk_gb) ||
                (q->addresses > 0 && with->addresses > q->addresses);
    bool raises = !before || with->cores > before->cores || with->memory_mb > before->memory_mb ||
                  with->disk_gb > before->disk_gb || with->addresses > before->addresses;
    if (over && raises)
        return store_fail(err, STORE_E_FULL, "the quota of '%s' is reached", owner);
    return STORE_OK;
}
