/* codec: JSON in (request bodies, query strings) and out (records, errors).
 * Every refusal names the field it is about, in details.field. */
#include "api/api_int.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <math.h>
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

/* Written with jsonw, not jansson: the message often quotes the request
 * (a path, a field name, a parser's "near '...'"), which may be any bytes,
 * and jansson refuses a string that is not UTF-8. */
static void error_write_x(struct buf *b, const char *code, const char *field, const char *xkey,
                          const char *node, const char *msg)
{
    jsonw_raw(b, "{\"error\":{\"code\":", 17);
    jsonw_str(b, code, strlen(code));
    jsonw_raw(b, ",\"message\":", 11);
    jsonw_str(b, msg, strlen(msg));
    jsonw_raw(b, ",\"details\":{", 12);
    if (field && *field) {
        jsonw_raw(b, "\"field\":", 8);
        jsonw_str(b, field, strlen(field));
    }
    if (node && *node) {
        if (field && *field)
            jsonw_raw(b, ",", 1);
        jsonw_raw(b, "\"", 1);
        jsonw_raw(b, xkey, strlen(xkey));
        jsonw_raw(b, "\":", 2);
        jsonw_str(b, node, strlen(node));
    }
    jsonw_raw(b, "}}}", 3);
}

static void error_write(struct buf *b, const char *code, const char *field, const char *node,
                        const char *msg)
{
    error_write_x(b, code, field, "node", node, msg);
}

void resp_error_pool(struct resp *rs, unsigned status, const char *code, const char *field,
                     const char *pool, const char *msg)
{
    struct buf b = BUF_INIT(64 * 1024);
    error_write_x(&b, code, field, "pool", pool, msg);
    resp_json_text(rs, status, &b);
    buf_release(&b);
}

char *error_json_text(const char *code, const char *field, const char *node, const char *msg)
{
    struct buf b = BUF_INIT(64 * 1024);
    error_write(&b, code, field, node, msg);
    return buf_take(&b);
}

void resp_error_node(struct resp *rs, unsigned status, const char *code, const char *field,
                     const char *node, const char *msg)
{
    struct buf b = BUF_INIT(64 * 1024);
    error_write(&b, code, field, node, msg);
    resp_json_text(rs, status, &b);
    buf_release(&b);
}

void resp_error(struct resp *rs, unsigned status, const char *code, const char *field,
                const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    resp_error_node(rs, status, code, field, NULL, msg);
}

/* A body's field no route knows: named in details.field even when its
 * name is "" (a JSON object may have that key; error_write takes "" for no
 * field, as its other callers mean). */
static void unknown_field(struct resp *rs, const char *name)
{
    struct buf b = BUF_INIT(1024);
    char msg[768];
    snprintf(msg, sizeof msg, "%s: unknown field", name[0] ? name : "\"\"");
    static const char head[] = "{\"error\":{\"code\":\"unknown_field\",\"message\":";
    static const char mid[] = ",\"details\":{\"field\":";
    jsonw_raw(&b, head, sizeof head - 1);
    jsonw_str(&b, msg, strlen(msg));
    jsonw_raw(&b, mid, sizeof mid - 1);
    jsonw_str(&b, name, strlen(name));
    jsonw_raw(&b, "}}}", 3);
    resp_json_text(rs, HTTP_BAD_REQUEST, &b);
    buf_release(&b);
}

void resp_core_error(struct resp *rs, const struct core_error *ce)
{
    const char *f = ce->field[0] ? ce->field : NULL;
    switch (ce->code) {
    case CORE_E_INVALID:
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", f, "%s", ce->message);
        return;
    case CORE_E_NOTFOUND:
        resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "%s", ce->message);
        return;
    case CORE_E_CONFLICT:
        resp_error(rs, HTTP_CONFLICT, "conflict", f, "%s", ce->message);
        return;
    case CORE_E_FULL:
        /* Both "no VMID left in the OS's range" and "quota used up" are
         * CORE_E_FULL; the first names the os field and is not the
         * caller's doing, so it is a conflict with the fleet's state. */
        if (f && strcmp(f, "os") == 0 && !strstr(ce->message, "quota"))
            resp_error(rs, HTTP_CONFLICT, "vmid_exhausted", f, "%s", ce->message);
        else if (f && strcmp(f, "ippools") == 0 && ce->pool[0])
            resp_error_pool(rs, HTTP_CONFLICT, "address_exhausted", f, ce->pool, ce->message);
        else
            resp_error(rs, HTTP_FORBIDDEN, "quota_exceeded", f, "%s", ce->message);
        return;
    case CORE_E_UNAVAILABLE:
        rs->retry_after = ce->node[0] ? 5 : 1;
        resp_error_node(rs, HTTP_SERVICE_UNAVAILABLE, ce->node[0] ? "node_down" : "starting", f,
                        ce->node, ce->message);
        return;
    case CORE_OK:
    case CORE_E_INTERNAL:
        break;
    }
    /* The message is the store's (libpq's or SQLite's words: hosts, ports,
     * the database user, table names): for the log, not for the caller. */
    log_warn("api", "a request failed inside proxd: %s", ce->message);
    resp_error(rs, HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL, "%s", API_INTERNAL_TEXT);
}

void resp_store_error(struct resp *rs, const struct store_error *se)
{
    /* as above: the detail names the database server; the log has it */
    log_warn("api", "a request's database call failed: %s", se->message);
    resp_error(rs, HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL, "%s", API_DB_DOWN_TEXT);
}

json_t *json_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char out[JSONW_TIME_MAX + 1];
    size_t n = jsonw_fmt_time(out, ms);
    return json_stringn(out, n);
}

/* The fixed text of a record: keys, punctuation, "null" and "{}". */
#define VM_JSON_FIXED 320
#define PUT(p, lit) JSONW_PUT_LIT(p, lit)
#define PUT_FIELD(p, f) jsonw_put_str((p), (f), strnlen((f), sizeof(f)))
#define LIT_RC(b, s) jsonw_raw((b), (s), sizeof(s) - 1)
#define PUT_STR(b, f) jsonw_str((b), (f), strnlen((f), sizeof(f)))

/* "up", "down" or "unknown" (not read yet, no fleet), or NULL for a record
 * with no node (being created, failed). Fills *nv when there is one. */
static const char *node_health(const struct vm_rec *v, struct fleet *fl, struct node_view *nv)
{
    memset(nv, 0, sizeof *nv);
    if (!v->node[0])
        return NULL;
    if (!fl || !fleet_ready(fl) || fleet_node_view(fl, v->node, nv) != 0)
        return "unknown";
    return nv->up ? "up" : "down";
}

int vm_write_json(struct buf *b, const struct vm_rec *v, struct fleet *fl)
{
    struct node_view nv;
    /* Reserve the worst case once, then write without checks: the strings'
     * bytes escaped at most 6 times over, the numbers, the times and the
     * pending changes (jansson writes them: rare, a change waiting for a
     * reboot). */
    const size_t pflags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t pending = v->pending ? json_dumpb(v->pending, NULL, 0, pflags) : 0;
    if (v->pending && !pending)
        return BUF_TOOBIG;
    const char *state = vm_state_name(v->state);
    size_t strs = strnlen(v->name, sizeof v->name) + strnlen(v->os, sizeof v->os) +
                  strnlen(v->owner, sizeof v->owner) + strnlen(v->node, sizeof v->node) +
                  strlen(state) + strnlen(v->power, sizeof v->power) +
                  strnlen(v->job, sizeof v->job) + strnlen(v->error, sizeof v->error) +
                  sizeof nv.last_error;
    char *start = buf_space(b, VM_JSON_FIXED + JSONW_ESC_MAX(strs) + 5 * JSONW_INT_MAX +
                                   2 * JSONW_TIME_LIT_MAX + pending);
    if (!start)
        return BUF_TOOBIG;
    char *p = PUT(start, "{\"vmid\":");
    p = jsonw_put_int(p, v->vmid);
    p = PUT_FIELD(PUT(p, ",\"name\":"), v->name);
    p = PUT_FIELD(PUT(p, ",\"os\":"), v->os);
    p = PUT_FIELD(PUT(p, ",\"owner\":"), v->owner);
    p = PUT_FIELD(PUT(p, ",\"node\":"), v->node);
    p = jsonw_put_str(PUT(p, ",\"state\":"), state, strlen(state));
    p = PUT_FIELD(PUT(p, ",\"power\":"), v->power);
    p = jsonw_put_int(PUT(p, ",\"cores\":"), v->cores);
    p = jsonw_put_int(PUT(p, ",\"memory_mb\":"), v->memory_mb);
    p = jsonw_put_int(PUT(p, ",\"disk_gb\":"), v->disk_gb);
    p = PUT_FIELD(PUT(p, ",\"job\":"), v->job);
    p = jsonw_put_int(PUT(p, ",\"id\":"), v->id);
    p = PUT(p, ",\"pending\":");
    if (v->pending) {
        if (json_dumpb(v->pending, p, pending, pflags) != pending)
            return BUF_TOOBIG; /* nothing committed: the buffer is unchanged */
        p += pending;
    } else {
        p = PUT(p, "{}");
    }
    p = PUT(p, ",\"error\":");
    p = v->error[0] ? PUT_FIELD(p, v->error) : PUT(p, "null");
    p = jsonw_put_time(PUT(p, ",\"created_at\":"), v->created_at);
    p = jsonw_put_time(PUT(p, ",\"updated_at\":"), v->updated_at);
    /* the node's health as the inventory knows it: a VM on a node that is
     * down says so (and why) instead of looking enabled and running */
    const char *health = node_health(v, fl, &nv);
    p = PUT(p, ",\"node_status\":");
    p = health ? jsonw_put_str(p, health, strlen(health)) : PUT(p, "null");
    p = PUT(p, ",\"node_error\":");
    p = health && strcmp(health, "down") == 0 ? PUT_FIELD(p, nv.last_error) : PUT(p, "null");
    p = PUT(p, "}");
    buf_commit(b, (size_t)(p - start));
    return BUF_OK;
}

/* The pool of a configured address (pools do not overlap), or NULL. */
static const struct cfg_ippool *pool_of(const struct proxd_config *cfg, const struct ippool_addr *a)
{
    for (int i = 0; cfg && i < cfg->npools; i++)
        if (ippool_net_contains(&cfg->pools[i].plan.net, a))
            return &cfg->pools[i];
    return NULL;
}

/* One {"pool","address","prefix","gateway"} of the recorded ipconfig0. */
static int addr_json(struct buf *b, const struct proxd_config *cfg, const struct ippool_addr *a,
                     int prefix, bool first)
{
    char t[IPPOOL_ADDRSTRLEN];
    const struct cfg_ippool *p = pool_of(cfg, a);
    int rc = (!first && LIT_RC(b, ",")) || LIT_RC(b, "{\"pool\":");
    rc = rc || (p ? jsonw_str(b, p->name, strlen(p->name)) : LIT_RC(b, "null"));
    ippool_addr_format(a, t);
    rc = rc || LIT_RC(b, ",\"address\":") || jsonw_str(b, t, strlen(t));
    rc = rc || LIT_RC(b, ",\"prefix\":") || jsonw_int(b, prefix);
    rc = rc || LIT_RC(b, ",\"gateway\":");
    if (p && p->plan.has_gateway) {
        ippool_addr_format(&p->plan.gateway, t);
        rc = rc || jsonw_str(b, t, strlen(t));
    } else {
        rc = rc || LIT_RC(b, "null");
    }
    return rc || LIT_RC(b, "}");
}

int vm_net_json(struct buf *b, const struct store_net *net, const struct proxd_config *cfg,
                const char *drift)
{
    if (!net)
        return LIT_RC(b, ",\"network\":null");
    struct ippool_addr v4, v6;
    int p4 = 0, p6 = 0;
    if (ippool_ipconfig_parse(net->ipconfig0, &v4, &p4, &v6, &p6) != IPPOOL_OK)
        v4.family = v6.family = 0;
    int rc = LIT_RC(b, ",\"network\":{\"mac\":") || PUT_STR(b, net->mac);
    rc = rc || LIT_RC(b, ",\"bridge\":") || PUT_STR(b, net->bridge);
    rc = rc || LIT_RC(b, ",\"vlan\":") || jsonw_int(b, net->vlan);
    rc = rc || LIT_RC(b, ",\"addresses\":[");
    if (v4.family)
        rc = rc || addr_json(b, cfg, &v4, p4, true);
    if (v6.family)
        rc = rc || addr_json(b, cfg, &v6, p6, !v4.family);
    rc = rc || LIT_RC(b, "],\"confirmed\":");
    if (net->seen_at)
        rc = rc || LIT_RC(b, "true");
    else
        rc = rc || LIT_RC(b, "false");
    rc = rc || LIT_RC(b, ",\"seen_at\":") || jsonw_time(b, net->seen_at);
    rc = rc || LIT_RC(b, ",\"drift\":") ||
         (drift ? jsonw_str(b, drift, strlen(drift)) : LIT_RC(b, "null"));
    return rc || LIT_RC(b, "}");
}

int vm_add_net(struct buf *b, size_t end, const struct store_net *net,
               const struct proxd_config *cfg, const char *drift)
{
    /* the record's closing brace is the last byte: the block goes before it */
    if (end == 0 || b->len != end || b->data[end - 1] != '}')
        return BUF_TOOBIG;
    buf_truncate(b, end - 1);
    return vm_net_json(b, net, cfg, drift) || LIT_RC(b, "}");
}

/* A drain's result, from its ledger (drain.c): what moved where and what
 * stayed and why, so far (final once the job is done). */
static json_t *drain_result(const struct job_rec *j)
{
    json_t *moved = json_array(), *stayed = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(j->attempts, i, e)
    {
        const char *st = json_string_value(json_object_get(e, "state"));
        json_t *vm = json_pack("{s:O,s:O,s:O}", "vmid", json_object_get(e, "vmid"), "name",
                               json_object_get(e, "name"), "from", json_object_get(e, "from"));
        if (st && strcmp(st, "moved") == 0) {
            json_object_set(vm, "to", json_object_get(e, "to"));
            json_object_set(vm, "job", json_object_get(e, "job"));
            json_array_append_new(moved, vm);
        } else if (st && strcmp(st, "stayed") == 0) {
            json_object_set(vm, "reason", json_object_get(e, "error"));
            if (json_object_get(e, "job")) /* its move failed, or was cancelled */
                json_object_set(vm, "job", json_object_get(e, "job"));
            json_array_append_new(stayed, vm);
        } else {
            json_decref(vm);
        }
    }
    json_t *standalone = json_object_get(j->request, "standalone");
    return json_pack("{s:O,s:b,s:o,s:o}", "node", json_object_get(j->request, "node"), "standalone",
                     json_is_true(standalone), "moved", moved, "stayed", stayed);
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
    json_object_set_new(o, "cancel",
                        j->cancel_at ? json_pack("{s:o,s:s}", "requested_at",
                                                 json_time(j->cancel_at), "by", j->cancel_by)
                                     : json_null());
    if (strcmp(j->kind, "drain") == 0)
        json_object_set_new(o, "result", drain_result(j));
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
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be an array of strings",
                   f->name);
        return -1;
    }
    struct buf b = BUF_INIT(f->len);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e);
        /* a NUL would end the text early and hide what follows it */
        if (!s || strlen(s) != json_string_length(e) || strchr(s, '\n') || strchr(s, '\r')) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name,
                       "%s[%zu]: must be a string on one line, no NUL", f->name, i);
            goto fail;
        }
        /* joined, a blank one is a blank line, which the readers skip: an
         * empty key file would become no key at all without a word */
        if (s[strspn(s, " \t")] == '\0') {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s[%zu]: must not be blank",
                       f->name, i);
            goto fail;
        }
        if ((i && buf_addc(&b, '\n')) || buf_adds(&b, s)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: at most %zu bytes in all",
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
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be a string", f->name);
            return -1;
        }
        if (strlen(s) >= f->len || strlen(s) != json_string_length(v)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name,
                       "%s: at most %zu characters, no NUL", f->name, f->len - 1);
            return -1;
        }
        snprintf(f->dst, f->len, "%s", s);
        return 0;
    }
    case FT_INT:
        if (!json_is_integer(v)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be an integer", f->name);
            return -1;
        }
        *(int64_t *)f->dst = json_integer_value(v);
        return 0;
    case FT_BOOL:
        if (!json_is_boolean(v)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be true or false",
                       f->name);
            return -1;
        }
        *(bool *)f->dst = json_is_true(v);
        return 0;
    case FT_STRINGS:
        return decode_strings(rs, f, v);
    case FT_ARRAY:
    case FT_OBJECT:
        if (f->type == FT_ARRAY ? !json_is_array(v) : !json_is_object(v)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", f->name, "%s: must be an %s", f->name,
                       f->type == FT_ARRAY ? "array" : "object");
            return -1;
        }
        *(json_t **)f->dst = v;
        return 0;
    }
    return -1;
}

int decode_object(struct resp *rs, json_t *o, const struct field *f, size_t n)
{
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v)
    {
        size_t i = 0;
        while (i < n && strcmp(f[i].name, name) != 0)
            i++;
        if (i == n) {
            unknown_field(rs, name);
            return -1;
        }
        if (json_is_null(v))
            continue; /* null is "not given" */
        if (decode_field(rs, &f[i], v))
            return -1;
        if (f[i].seen)
            *f[i].seen = true;
    }
    return 0;
}

/* Is v, or anything in it, a number past 64 bits (read as a real)? */
static bool past_64_bits(json_t *v)
{
    size_t i;
    const char *k;
    json_t *e;
    if (json_is_real(v))
        return fabs(json_real_value(v)) >= 9223372036854775808.0;
    bool found = false;
    if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            found = found || past_64_bits(e);
        }
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, e)
        {
            found = found || past_64_bits(e);
        }
    }
    return found;
}

/* jansson refuses a whole document for one integer past 64 bits ("too big
 * integer"), which would answer invalid_json naming nothing: read again
 * with every integer a real, the field holding it is named, as any other
 * wrong value of it is. 0 with rs filled; -1 when none is found (a real
 * past a double's range fails this reading too). */
static int name_overflow(struct resp *rs, const char *body, size_t blen, const struct field *f,
                         size_t n)
{
    const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL;
    json_t *o = json_loadb(body, blen, flags, NULL);
    const char *name;
    json_t *v;
    int rc = -1;
    if (!json_is_object(o))
        goto out;
    json_object_foreach(o, name, v)
    {
        if (!past_64_bits(v))
            continue;
        size_t i = 0;
        while (i < n && strcmp(f[i].name, name) != 0)
            i++;
        if (i == n)
            unknown_field(rs, name);
        else
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", name,
                       "%s: a number past 64 bits is no value of it", name);
        rc = 0;
        break;
    }
out:
    json_decref(o);
    return rc;
}

int decode_body(struct req *rq, struct resp *rs, const struct field *f, size_t n, bool empty_ok,
                json_t **raw)
{
    json_t *o = NULL;
    if (raw)
        *raw = NULL;
    size_t blen;
    const char *body = http_req_body(rq->hr, &blen);
    if (blen == 0) {
        if (!empty_ok) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", NULL, "a JSON object body is needed");
            return -1;
        }
        o = json_object();
    } else {
        const char *ct = http_req_header(rq->hr, "Content-Type");
        if (!is_json_type(ct)) {
            resp_error(rs, HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", NULL,
                       "the body must be application/json, not '%s'", ct ? ct : "(none)");
            return -1;
        }
        json_error_t je;
        /* A \u0000 in a string is let through to the field's own check,
         * which refuses it naming the field; refused here, the whole body
         * would be invalid_json naming nothing. Every reader of a string
         * from the body checks for a NUL (decode_field, decode_strings,
         * routes_vms.c's decode_net). */
        o = json_loadb(body, blen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        if (!o && json_error_code(&je) == json_error_numeric_overflow &&
            name_overflow(rs, body, blen, f, n) == 0)
            return -1;
        if (!o) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid_json", NULL,
                       "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                       je.column);
            return -1;
        }
        if (!json_is_object(o)) {
            json_decref(o);
            resp_error(rs, HTTP_BAD_REQUEST, "invalid_json", NULL,
                       "the body must be a JSON object");
            return -1;
        }
    }
    if (decode_object(rs, o, f, n))
        goto fail;
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

static bool allowed_arg(const char *const *allowed, const char *key)
{
    for (size_t i = 0; allowed && allowed[i]; i++)
        if (strcmp(allowed[i], key) == 0)
            return true;
    return false;
}

int check_query(struct req *rq, struct resp *rs, const char *const *allowed)
{
    const char *k, *v, *k2, *v2;
    for (size_t i = 0; http_req_arg(rq->hr, i, &k, &v); i++) {
        if (!allowed_arg(allowed, k)) {
            resp_error(rs, HTTP_BAD_REQUEST, "unknown_parameter", k, "%s: unknown query parameter",
                       k);
            return -1;
        }
        /* query() reads the first: a second value, whatever it said,
         * would be dropped without a word (a quadratic look, but over at
         * most HTTP_ARGS_MAX arguments) */
        for (size_t j = 0; j < i && http_req_arg(rq->hr, j, &k2, &v2); j++) {
            if (strcmp(k, k2) == 0) {
                resp_error(rs, HTTP_BAD_REQUEST, "invalid", k, "%s: given more than once", k);
                return -1;
            }
        }
    }
    return 0;
}

const char *query(struct req *rq, const char *name)
{
    const char *v = http_req_query(rq->hr, name);
    return v && *v ? v : NULL;
}

int query_flag(struct req *rq, struct resp *rs, const char *name, bool *on)
{
    const char *k, *v, *got = NULL;
    for (size_t i = 0; http_req_arg(rq->hr, i, &k, &v); i++) {
        if (strcmp(k, name) != 0)
            continue;
        /* a repeat could say both: refused rather than guessing which counts */
        if (got) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", name, "%s: given more than once", name);
            return -1;
        }
        got = v;
    }
    /* a bare ?name (or ?name=) is the flag raised: read as absent it would
     * turn a request for a check into the real thing */
    *on = got && (!*got || strcmp(got, "1") == 0 || strcmp(got, "true") == 0);
    if (got && !*on && strcmp(got, "0") != 0 && strcmp(got, "false") != 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", name, "%s: true, false, 1, 0 or empty (true)",
                   name);
        return -1;
    }
    return 0;
}

bool path_vmid_parse(const char *s, int *vmid)
{
    int64_t v;
    if (!s || s[0] < '1' || s[0] > '9' || strspn(s, "0123456789") != strlen(s) ||
        !parse_i64(s, &v) || v < 100 || v > 999999999)
        return false;
    *vmid = (int)v;
    return true;
}

int parse_int_arg(struct resp *rs, const char *name, const char *s, int64_t lo, int64_t hi,
                  int64_t *out)
{
    if (!s || !parse_i64(s, out) || *out < lo || *out > hi) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", name,
                   "%s: must be an integer from %lld to %lld", name, (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}
