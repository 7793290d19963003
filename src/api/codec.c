/* codec: JSON in (request bodies, query strings) and out (records, errors).
 * Every refusal names the field it is about, in details.field. */
#include "api/api_int.h"

#include "common/jsonw.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- answers -------------------------------------------------------------- */

void resp_json(struct resp *rs, unsigned status, json_t *body)
{
    json_decref(rs->body);
    rs->status = status;
    rs->body = body;
}

void resp_json_text(struct resp *rs, unsigned status, struct buf *b)
{
    json_decref(rs->body);
    rs->body = NULL;
    free(rs->text);
    rs->status = status;
    rs->text_len = b->len;
    rs->text = buf_take(b);
    rs->ctype = "application/json";
}

void resp_error(struct resp *rs, unsigned status, const char *code, const char *field,
                const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *details = json_object();
    if (field && *field)
        json_object_set_new(details, "field", json_string(field));
    resp_json(
        rs, status,
        json_pack("{s:{s:s,s:s,s:o}}", "error", "code", code, "message", msg, "details", details));
}

void resp_core_error(struct resp *rs, const struct core_error *ce)
{
    const char *f = ce->field[0] ? ce->field : NULL;
    switch (ce->code) {
    case CORE_E_INVALID:
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f, "%s", ce->message);
        return;
    case CORE_E_NOTFOUND:
        resp_error(rs, MHD_HTTP_NOT_FOUND, "not_found", NULL, "%s", ce->message);
        return;
    case CORE_E_CONFLICT:
        resp_error(rs, MHD_HTTP_CONFLICT, "conflict", f, "%s", ce->message);
        return;
    case CORE_E_FULL:
        /* Both "no VMID left in the OS's range" and "quota used up" are
         * CORE_E_FULL; the first names the os field and is not the
         * caller's doing, so it is a conflict with the fleet's state. */
        if (f && strcmp(f, "os") == 0 && !strstr(ce->message, "quota"))
            resp_error(rs, MHD_HTTP_CONFLICT, "vmid_exhausted", f, "%s", ce->message);
        else
            resp_error(rs, MHD_HTTP_FORBIDDEN, "quota_exceeded", f, "%s", ce->message);
        return;
    case CORE_OK:
    case CORE_E_INTERNAL:
        break;
    }
    resp_error(rs, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL, "%s", ce->message);
}

json_t *json_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char out[JSONW_TIME_MAX + 1];
    size_t n = jsonw_fmt_time(out, ms);
    return json_stringn(out, n);
}

/* Keys and punctuation as literals: "sizeof - 1" spares a strlen each. */
#define LIT(b, s) jsonw_raw((b), (s), sizeof(s) - 1)
#define FIELD_STR(b, key, f) (LIT(b, key) || jsonw_str((b), (f), strnlen((f), sizeof(f))))

int vm_write_json(struct buf *b, const struct vm_rec *v)
{
    const char *state = vm_state_name(v->state);
    int rc = LIT(b, "{\"vmid\":") || jsonw_int(b, v->vmid) || FIELD_STR(b, ",\"name\":", v->name) ||
             FIELD_STR(b, ",\"os\":", v->os) || FIELD_STR(b, ",\"owner\":", v->owner) ||
             FIELD_STR(b, ",\"node\":", v->node) || LIT(b, ",\"state\":") ||
             jsonw_str(b, state, strlen(state)) || FIELD_STR(b, ",\"power\":", v->power) ||
             LIT(b, ",\"cores\":") || jsonw_int(b, v->cores) || LIT(b, ",\"memory_mb\":") ||
             jsonw_int(b, v->memory_mb) || LIT(b, ",\"disk_gb\":") || jsonw_int(b, v->disk_gb) ||
             FIELD_STR(b, ",\"job\":", v->job) || LIT(b, ",\"id\":") || jsonw_int(b, v->id) ||
             LIT(b, ",\"pending\":");
    if (rc)
        return BUF_TOOBIG;
    if (v->pending) {
        /* Rare (a change waiting for a reboot): jansson writes it. */
        const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
        size_t n = json_dumpb(v->pending, NULL, 0, flags);
        char *p = n ? buf_space(b, n) : NULL;
        if (!p || json_dumpb(v->pending, p, n, flags) != n)
            return BUF_TOOBIG;
        buf_commit(b, n);
    } else if (LIT(b, "{}")) {
        return BUF_TOOBIG;
    }
    rc = LIT(b, ",\"error\":") ||
         (v->error[0] ? jsonw_str(b, v->error, strnlen(v->error, sizeof v->error))
                      : LIT(b, "null")) ||
         LIT(b, ",\"created_at\":") || jsonw_time(b, v->created_at) || LIT(b, ",\"updated_at\":") ||
         jsonw_time(b, v->updated_at) || LIT(b, "}");
    return rc ? BUF_TOOBIG : BUF_OK;
}

json_t *job_to_json(const struct job_rec *j)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:i}", "id", j->id, "kind", j->kind,
                          "state", job_state_name(j->state), "vmid", j->vmid, "owner", j->owner,
                          "step", j->step, "node", j->node, "progress", j->progress);
    json_object_set_new(o, "attempts", j->attempts ? json_deep_copy(j->attempts) : json_array());
    json_object_set_new(o, "error", j->error[0] ? json_string(j->error) : json_null());
    json_object_set_new(o, "created_at", json_time(j->created_at));
    json_object_set_new(o, "updated_at", json_time(j->updated_at));
    json_object_set_new(o, "finished_at", json_time(j->finished_at));
    return o;
}

/* ---- request bodies ----------------------------------------------------------- */

static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

static int decode_strings(struct resp *rs, const struct field *f, json_t *v)
{
    if (!json_is_array(v)) {
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be an array of strings",
                   f->name);
        return -1;
    }
    struct buf b = BUF_INIT(f->len);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        if (!s || strchr(s, '\n') || strchr(s, '\r')) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name,
                       "%s[%zu]: must be a string on one line", f->name, i);
            goto fail;
        }
        if ((i && buf_addc(&b, '\n')) || buf_adds(&b, s)) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name, "%s: at most %zu bytes in all",
                       f->name, f->len);
            goto fail;
        }
    }
    char **dst = f->dst;
    free(*dst);
    *dst = b.len ? buf_take(&b) : NULL;
    buf_release(&b);
    return 0;
fail:
    buf_release(&b);
    return -1;
}

static int decode_field(struct resp *rs, const struct field *f, json_t *v)
{
    switch (f->type) {
    case FT_STRING: {
        const char *s = json_string_value(v);
        if (!s) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be a string",
                       f->name);
            return -1;
        }
        if (strlen(s) >= f->len || strlen(s) != json_string_length(v)) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name,
                       "%s: at most %zu characters, no NUL", f->name, f->len - 1);
            return -1;
        }
        snprintf(f->dst, f->len, "%s", s);
        return 0;
    }
    case FT_INT:
        if (!json_is_integer(v)) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be an integer",
                       f->name);
            return -1;
        }
        *(int64_t *)f->dst = json_integer_value(v);
        return 0;
    case FT_BOOL:
        if (!json_is_boolean(v)) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be true or false",
                       f->name);
            return -1;
        }
        *(bool *)f->dst = json_is_true(v);
        return 0;
    case FT_STRINGS:
        return decode_strings(rs, f, v);
    }
    return -1;
}

int decode_body(struct req *rq, struct resp *rs, const struct field *f, size_t n, bool empty_ok,
                json_t **raw)
{
    json_t *o = NULL;
    if (raw)
        *raw = NULL;
    if (rq->body.len == 0) {
        if (!empty_ok) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", NULL, "a JSON object body is needed");
            return -1;
        }
        o = json_object();
    } else {
        const char *ct =
            MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!is_json_type(ct)) {
            resp_error(rs, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", NULL,
                       "the body must be application/json, not '%s'", ct ? ct : "(none)");
            return -1;
        }
        json_error_t je;
        o = json_loadb(rq->body.data, rq->body.len, JSON_REJECT_DUPLICATES, &je);
        if (!o) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid_json", NULL,
                       "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                       je.column);
            return -1;
        }
        if (!json_is_object(o)) {
            json_decref(o);
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid_json", NULL,
                       "the body must be a JSON object");
            return -1;
        }
    }
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v)
    {
        size_t i = 0;
        while (i < n && strcmp(f[i].name, name) != 0)
            i++;
        if (i == n) {
            resp_error(rs, MHD_HTTP_BAD_REQUEST, "unknown_field", name, "%s: unknown field", name);
            goto fail;
        }
        if (json_is_null(v))
            continue; /* null is "not given" */
        if (decode_field(rs, &f[i], v))
            goto fail;
        if (f[i].seen)
            *f[i].seen = true;
    }
    if (raw)
        *raw = o;
    else
        json_decref(o);
    return 0;
fail:
    json_decref(o);
    return -1;
}

/* ---- query strings ------------------------------------------------------------- */

struct qcheck {
    const char *const *allowed;
    const char *bad;
};

static enum MHD_Result qcheck_it(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct qcheck *q = cls;
    for (size_t i = 0; q->allowed && q->allowed[i]; i++)
        if (strcmp(q->allowed[i], key) == 0)
            return MHD_YES;
    q->bad = key;
    return MHD_NO;
}

int check_query(struct req *rq, struct resp *rs, const char *const *allowed)
{
    struct qcheck q = {allowed, NULL};
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, qcheck_it, &q);
    if (q.bad) {
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "unknown_parameter", q.bad,
                   "%s: unknown query parameter", q.bad);
        return -1;
    }
    return 0;
}

const char *query(struct req *rq, const char *name)
{
    const char *v = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

int parse_int_arg(struct resp *rs, const char *name, const char *s, int64_t lo, int64_t hi,
                  int64_t *out)
{
    if (!s || !parse_i64(s, out) || *out < lo || *out > hi) {
        resp_error(rs, MHD_HTTP_BAD_REQUEST, "invalid", name,
                   "%s: must be an integer from %lld to %lld", name, (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}
