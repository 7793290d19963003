/* create_batch: proxd create --from FILE (see create_batch.h). */
#include "proxd/create_batch.h"
#include "common/jsonl.h"
#include "common/util.h"
#include "common/xalloc.h"
#ifdef HAVE_API
#include "api/api.h"
#endif

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct item {
    long line;
    struct vm_request r;
    char key[VALIDATE_IDEM_KEY_MAX + 1]; /* "" : no idempotency key */
    char fp[65];
};

struct batch {
    struct core *k;
    store *st;
    bool json;
    struct item *it;
    size_t n, cap;
    int bad; /* lines refused by the validation */
    /* owner "\n" key -> {"fp", "line"}: the first line of the file with that
     * key. The store knows only earlier runs, so two lines of this file with
     * one key and different requests would both pass its check and the
     * second be refused at submission, after the first was queued. */
    json_t *keys;
};

static void say_error(const struct batch *b, long line, const char *field, const char *msg)
{
    if (b->json) {
        json_t *o = json_pack("{s:I,s:{s:s,s:s}}", "line", (json_int_t)line, "error", "field",
                              field, "message", msg);
        char *t = json_dumps(o, JSON_COMPACT);
        printf("%s\n", t);
        free(t);
        json_decref(o);
    } else {
        fprintf(stderr, "proxd: line %ld: %s%s%s\n", line, field, field[0] ? ": " : "", msg);
    }
}

static void say_queued(const struct batch *b, const struct item *it, const char *job, int vmid,
                       bool replayed)
{
    if (b->json)
        printf("{\"line\":%ld,\"job\":\"%s\",\"vmid\":%d%s}\n", it->line, job, vmid,
               replayed ? ",\"replayed\":true" : "");
    else
        printf("line %ld: job %s vmid %d %s\n", it->line, job, vmid,
               replayed ? "(queued before with this idempotency key)" : "queued");
}

/* An idempotency key used before: for the same request it is replayed at
 * submission; for another it is this line's fault, found now. */
static int check_key_unused(struct batch *b, const struct item *it, struct core_error *ce)
{
    json_t *stored = NULL;
    struct store_error se;
    int rc = store_idem_get(b->st, it->r.owner, it->key, &stored, &se);
    if (rc == STORE_E_NOTFOUND)
        return 0;
    snprintf(ce->field, sizeof ce->field, "idempotency_key");
    if (rc) {
        snprintf(ce->message, sizeof ce->message, "cannot read the key's record: %.400s",
                 se.message);
        return -1;
    }
    const char *fp = json_string_value(json_object_get(stored, "fingerprint"));
    rc = fp && strcmp(fp, it->fp) == 0 ? 0 : -1;
    if (rc)
        snprintf(ce->message, sizeof ce->message,
                 "this key of owner %s was used for a different request", it->r.owner);
    json_decref(stored);
    return rc;
}

/* An idempotency key an earlier line of this file has: for the same request
 * the line is replayed at submission; for another it is this line's fault,
 * found now, before anything is submitted. */
static int check_key_in_file(struct batch *b, const struct item *it, struct core_error *ce)
{
    char *scope = xasprintf("%s\n%s", it->r.owner, it->key); /* keys have no newline */
    json_t *first = json_object_get(b->keys, scope);
    int rc = 0;
    if (!first) {
        json_object_set_new(b->keys, scope,
                            json_pack("{s:s,s:I}", "fp", it->fp, "line", (json_int_t)it->line));
    } else if (strcmp(json_string_value(json_object_get(first, "fp")), it->fp) != 0) {
        snprintf(ce->field, sizeof ce->field, "idempotency_key");
        snprintf(ce->message, sizeof ce->message,
                 "this key of owner %s is used on line %lld for a different request", it->r.owner,
                 (long long)json_integer_value(json_object_get(first, "line")));
        rc = -1;
    }
    free(scope);
    return rc;
}

/* One line: decoded and checked into a new item, or reported. */
static void take_line(struct batch *b, long line, const char *text, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    struct core_error ce = {0};
    struct item it = {.line = line};
    bool have_r = false;
    if (!o || !json_is_object(o)) {
        char m[300];
        if (o)
            snprintf(m, sizeof m, "must be a JSON object (one creation request per line)");
        else
            snprintf(m, sizeof m, "not JSON: %.200s (column %d)", je.text, je.column);
        say_error(b, line, "", m);
        goto bad;
    }
    json_t *key = json_object_get(o, "idempotency_key");
    if (key && !json_is_null(key)) {
        const char *s = json_string_value(key);
        if (!s || !validate_idem_key(s)) {
            say_error(b, line, "idempotency_key", "1 to 128 printable ASCII characters");
            goto bad;
        }
        snprintf(it.key, sizeof it.key, "%s", s);
    }
    json_object_del(o, "idempotency_key");
#ifdef HAVE_API
    if (api_create_decode(o, &it.r, it.fp, &ce)) {
#else
    if (snprintf(ce.message, sizeof ce.message, "needs a proxd built with its API") > 0) {
#endif
        say_error(b, line, ce.field, ce.message);
        goto bad;
    }
    have_r = true;
    if (core_create_check(b->k, &it.r, &ce) ||
        (it.key[0] && (check_key_unused(b, &it, &ce) || check_key_in_file(b, &it, &ce)))) {
        say_error(b, line, ce.field, ce.message);
        goto bad;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->it = xrealloc(b->it, b->cap * sizeof *b->it);
    }
    b->it[b->n++] = it;
    json_decref(o);
    return;
bad:
    b->bad++;
    if (have_r)
        vm_request_release(&it.r);
    json_decref(o);
}

static void on_line(void *ud, long no, const char *text, size_t len)
{
    struct batch *b = ud;
    if (text) {
        take_line(b, no, text, len);
        return;
    }
    say_error(b, no, "", "longer than 65536 bytes");
    b->bad++;
}

/* Every line of in into b->it; -1 when the file itself cannot be taken
 * (reported). Lines refused are counted in b->bad. */
static int read_all(struct batch *b, FILE *in)
{
    long no = 0;
    int rc = jsonl_each(in, on_line, b, &no);
    if (rc == JSONL_E_TOO_MANY)
        say_error(b, no, "", "too many lines: at most 100000 requests in one batch");
    else if (rc == JSONL_E_READ)
        say_error(b, no + 1, "", "read error");
    return rc ? -1 : 0;
}

/* Submit one checked line; 0 when queued or replayed. */
static int submit(struct batch *b, struct item *it, char job[40], int *vmid)
{
    struct core_error ce = {0};
    json_t *first = NULL;
    int rc = 0;
    if (it->key[0]) {
        struct core_idem ci = {it->r.owner, it->key, it->fp};
        json_t *stored = NULL;
        struct store_error se;
        if (store_idem_get(b->st, it->r.owner, it->key, &stored, &se) == STORE_OK)
            first = stored; /* an earlier line of this file, or another run */
        else
            rc = core_create_idem(b->k, &it->r, &ci, job, vmid, &first, &ce);
        if (first) {
            const char *fp = json_string_value(json_object_get(first, "fingerprint"));
            const char *j = json_string_value(json_object_get(first, "job"));
            bool same = fp && j && strcmp(fp, it->fp) == 0;
            if (same)
                snprintf(job, 40, "%s", j);
            if (same)
                say_queued(b, it, j, (int)json_integer_value(json_object_get(first, "vmid")), true);
            else
                say_error(b, it->line, "idempotency_key",
                          "this key was used for a different request");
            json_decref(first);
            return same ? 0 : -1;
        }
    } else {
        rc = core_create(b->k, &it->r, job, vmid, &ce);
    }
    if (rc) {
        say_error(b, it->line, ce.field, ce.message);
        return -1;
    }
    say_queued(b, it, job, *vmid, false);
    return 0;
}

static int wait_all(struct batch *b, char (*jobs)[40], long wait_s)
{
    int64_t end = mono_ms() + wait_s * 1000;
    int rc = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!jobs[i][0])
            continue;
        enum job_state st;
        long left = (long)(end - mono_ms());
        if (core_wait_job(b->k, jobs[i], left > 0 ? left : 0, &st)) {
            fprintf(stderr, "proxd: line %ld: job %s did not finish in %ld s\n", b->it[i].line,
                    jobs[i], wait_s);
            rc = 3;
            continue;
        }
        if (b->json)
            printf("{\"line\":%ld,\"job\":\"%s\",\"state\":\"%s\"}\n", b->it[i].line, jobs[i],
                   job_state_name(st));
        else
            printf("line %ld: job %s %s\n", b->it[i].line, jobs[i], job_state_name(st));
        if (st != JOB_DONE && !rc)
            rc = 1;
    }
    return rc;
}

int create_batch(struct core *k, store *st, FILE *in, bool json, long wait_s)
{
    struct batch b = {.k = k, .st = st, .json = json, .keys = json_object()};
    char(*jobs)[40] = NULL;
    int rc = 2;
    if (read_all(&b, in) || b.bad) {
        fprintf(stderr, "proxd: %d bad line%s: nothing submitted\n", b.bad ? b.bad : 1,
                b.bad == 1 ? "" : "s");
        goto out;
    }
    rc = 0;
    jobs = xcalloc(b.n ? b.n : 1, sizeof *jobs);
    for (size_t i = 0; i < b.n; i++) {
        int vmid = 0;
        if (submit(&b, &b.it[i], jobs[i], &vmid)) {
            jobs[i][0] = '\0';
            rc = 1;
        }
    }
    fflush(stdout);
    if (wait_s > 0) {
        int w = wait_all(&b, jobs, wait_s);
        rc = w > rc ? w : rc;
    }
out:
    for (size_t i = 0; i < b.n; i++)
        vm_request_release(&b.it[i].r);
    free(b.it);
    free(jobs);
    json_decref(b.keys);
    return rc;
}
