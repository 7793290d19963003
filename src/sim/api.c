/* api: the request pipeline of the simulated pveproxy, in the order the real
 * one runs it (pve-api.md §1-3): method check, /api2/<format> split, path
 * decoding, body rules, authentication and CSRF, routing by the official
 * schema, parameter merging, proxying to the named node (595/596 for nodes
 * that are down), parameter verification, injected faults, the handler, and
 * the {"data": ...} envelope or the PVE-shaped error. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/auth.h"
#include "sim/sim.h"
#include "sim/sjson.h"

#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROXY_TIMEOUT 30.0 /* pveproxy's timeout toward another node, PVE seconds */

struct listener_ctx {
    struct sim *s;
    struct sim_node *node; /* NULL: the cluster entry point */
};

/* ---- call helpers (declared in sim.h) ------------------------------- */

void call_fail(struct sim_call *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(c->message);
    c->message = xvasprintf(fmt, ap);
    va_end(ap);
    c->status = status;
}

void call_param_fail(struct sim_call *c, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = xvasprintf(fmt, ap);
    va_end(ap);
    if (!c->errors)
        c->errors = json_object();
    json_object_set_new(c->errors, param, json_string(m));
    free(m);
    free(c->message);
    c->message = xstrdup("Parameter verification failed.");
    c->status = 400;
}

const char *call_str(struct sim_call *c, const char *name)
{
    json_t *v = json_object_get(c->params, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int64_t call_int(struct sim_call *c, const char *name, int64_t dflt)
{
    json_t *v = json_object_get(c->params, name);
    int64_t r;
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v) && parse_i64(json_string_value(v), &r))
        return r;
    return dflt;
}

bool call_bool(struct sim_call *c, const char *name, bool dflt)
{
    json_t *v = json_object_get(c->params, name);
    if (!v)
        return dflt;
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    const char *sv = json_string_value(v);
    return sv && strcmp(sv, "1") == 0;
}

const char *call_owner(struct sim_call *c)
{
    return c->tokenid ? c->tokenid : c->user;
}

/* ---- responses -------------------------------------------------------- */

/* An error produced by the HTTP layer: no JSON, the message as plain text
 * (http-server >= 5.2.0; before it, PVE 7, the body was empty). */
/* AnyEvent.pm error(): the body is the message as is (no newline), since
 * http-server 5.2.0; empty before. */
static void plain_error(const struct sim *s, struct http_resp *r, int status, const char *msg)
{
    http_resp_status(r, status, msg);
    if (s->o.pve_version >= 8)
        buf_adds(&r->body, msg);
    r->close = true;
}

static void json_reply(struct http_resp *r, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    buf_adds(&r->body, s);
    free(s);
    free(r->content_type);
    r->content_type = xstrdup("application/json;charset=UTF-8");
}

/* `nl`: the message came from a die "...\n" (handlers, exceptions); the
 * rest_handler's own 501 text has none. */
static void render_error_nl(struct sim *s, struct http_resp *r, int status, const char *msg,
                            json_t *errors, bool nl)
{
    http_resp_status(r, status, msg);
    json_t *body = json_object();
    json_object_set_new(body, "data", json_null());
    if (errors)
        json_object_set(body, "errors", errors);
    if (s->o.pve_version >= 8) /* http-server 5.2.0: the message in the body too */
        json_object_set_new(body, "message", json_sprintf("%s%s", msg, nl ? "\n" : ""));
    json_reply(r, body);
    json_decref(body);
    r->close = true;
}

static void render_error(struct sim *s, struct http_resp *r, int status, const char *msg,
                         json_t *errors)
{
    render_error_nl(s, r, status, msg, errors, true);
}

/* PVE's rest_handler answer for a path or verb it has no handler for. */
static void not_implemented(struct sim *s, struct http_resp *r, const char *verb, const char *path)
{
    char *m = xasprintf("Method '%s %s' not implemented", verb, path);
    render_error_nl(s, r, 501, m, NULL, false);
    free(m);
}

/* ---- parameters --------------------------------------------------------- */

/* decode_urlencoded's merge of one pair: a value joins an earlier defined
 * one as an array; a pair without '=' (Perl's undef, here null) replaces
 * whatever the key had. */
static void param_add(json_t *params, const char *k, json_t *v)
{
    json_t *old = json_object_get(params, k);
    if (json_is_null(v) || !old || json_is_null(old)) {
        json_object_set_new(params, k, v);
        return;
    }
    if (!json_is_array(old)) {
        json_t *arr = json_array();
        json_array_append(arr, old);
        json_object_set_new(params, k, arr);
        old = arr;
    }
    json_array_append_new(old, v);
}

/* Bytes a UTF-8 sequence starting with c spans, as Perl counts them (its
 * extended UTF-8: 0xfe starts 7 bytes, 0xff 13). */
static size_t utf8_span(unsigned char c)
{
    return c < 0xe0    ? 2
           : c < 0xf0  ? 3
           : c < 0xf8  ? 4
           : c < 0xfc  ? 5
           : c < 0xfe  ? 6
           : c == 0xfe ? 7
                       : 13;
}

/* Encode::decode('utf8', ...) as decode_urlencoded applies it to a value:
 * lax, never failing: a malformed sequence (a stray continuation byte, one
 * cut short, an overlong form) becomes one U+FFFD for the bytes it spans.
 * Perl's lax utf8 also keeps surrogates and code points above U+10FFFF,
 * which JSON text cannot carry: each becomes one U+FFFD here. */
static void utf8_lax(struct buf *out, const char *str, size_t n)
{
    static const char fffd[] = "\xef\xbf\xbd";
    static const uint32_t least[8] = {0, 0, 0x80, 0x800, 0x10000, 0x200000, 0x4000000, 0x80000000};
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            buf_addc(out, (char)s[i++]);
            continue;
        }
        if (s[i] < 0xc0) { /* a continuation byte with nothing to continue */
            buf_add(out, fffd, 3);
            i++;
            continue;
        }
        size_t want = utf8_span(s[i]), j = i + 1;
        while (j < n && j - i < want && (s[j] & 0xc0) == 0x80)
            j++;
        bool ok = j - i == want && want <= 4;
        if (ok) {
            uint32_t cp = s[i] & (0x7fu >> want);
            for (size_t k = i + 1; k < j; k++)
                cp = cp << 6 | (s[k] & 0x3fu);
            ok = cp >= least[want] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok)
            buf_add(out, str + i, j - i);
        else
            buf_add(out, fffd, 3);
        i = j;
    }
}

/* A form key: not decoded from UTF-8 by PVE, so each byte is a character
 * (Latin-1), as its error messages then print it. */
static void latin1(struct buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            buf_addc(out, (char)c);
        } else {
            buf_addc(out, (char)(0xc0 | c >> 6));
            buf_addc(out, (char)(0x80 | (c & 0x3f)));
        }
    }
}

/* One pair as decode_urlencoded splits it: `my ($k, $v) = split(/=/, $kv)`
 * (a list of two: split's limit is 3) makes "a=b=c" a => "b", "a=" a => ""
 * and a bare "a" (or an empty pair) a => undef. */
static void form_pair(const char *p, size_t n, json_t *params)
{
    const char *eq = memchr(p, '=', n);
    size_t kl = eq ? (size_t)(eq - p) : n;
    size_t klen, vlen;
    char *k = pct_decode(p, kl, true, &klen);
    struct buf kb = BUF_INIT(BUF_UNLIMITED);
    latin1(&kb, k, klen);
    json_t *v = json_null();
    if (eq) {
        const char *vs = eq + 1, *ve = memchr(vs, '=', (size_t)(p + n - vs));
        char *raw = pct_decode(vs, (size_t)((ve ? ve : p + n) - vs), true, &vlen);
        struct buf vb = BUF_INIT(BUF_UNLIMITED);
        utf8_lax(&vb, raw, vlen);
        v = json_stringn(vb.data ? vb.data : "", vb.len);
        buf_release(&vb);
        free(raw);
    }
    if (strcmp(buf_str(&kb), "_dc") == 0) /* the ExtJS cache buster, deleted */
        json_decref(v);
    else
        param_add(params, buf_str(&kb), v);
    buf_release(&kb);
    free(k);
}

/* PVE's decode_urlencoded: nothing for "" or "0" (Perl's false); pairs
 * split on '&' and ';' with Perl's split, which keeps empty pairs before
 * the last non-empty one (each a key "" => undef, which the schema then
 * refuses as an unknown parameter) and drops those after it. */
static void parse_form(const char *q, size_t n, json_t *params)
{
    if (n == 0 || (n == 1 && q[0] == '0'))
        return;
    while (n > 0 && (q[n - 1] == '&' || q[n - 1] == ';'))
        n--;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && q[j] != '&' && q[j] != ';')
            j++;
        form_pair(q + i, j - i, params);
        i = j + 1;
    }
}

/* How Perl names a scalar in "Can't use string (...)": its text, cut to 32
 * bytes and marked "..." beyond. */
static char *perl_scalar_text(const json_t *v)
{
    char *t = json_is_string(v)    ? xstrdup(json_string_value(v))
              : json_is_integer(v) ? xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v))
                                   : xasprintf("%.15g", json_real_value(v));
    char *m = strlen(t) > 32 ? xasprintf("(\"%.32s\"...)", t) : xasprintf("(\"%s\")", t);
    free(t);
    return m;
}

enum json_body_rc {
    JB_OK,
    JB_HTTP_ERR, /* handle_api2_request's eval: a plain 500, before the handler lookup */
    JB_REST_ERR, /* rest_handler's eval: a 500 with a JSON body, after the lookup */
};

/* extract_params' decode_json and what PVE then does with the result. An
 * object's duplicate keys: the last wins (JSON::XS). null: no parameters
 * (`keys %{$params}` makes it a hash). Any other value: Perl's strict refs
 * refuse it as a hash, at `delete $params->{_dc} if $params` for a true
 * one, at rest_handler's `keys %{$params}` for a false one ("", 0, "0").
 * Line numbers are those of http-server 5.2 / manager 9.1's sources.
 * Scalars keep their JSON type, nested values stay as they are. */
static enum json_body_rc parse_json_body(const char *body, size_t n, json_t *params, char **err)
{
    static const char at_http[] = " at /usr/share/perl5/PVE/APIServer/AnyEvent.pm line";
    json_error_t je;
    enum json_body_rc rc = JB_OK;
    json_t *o = json_loadb(body, n, JSON_DECODE_ANY, &je);
    if (!o) {
        if (n == 0) /* JSON::XS's own text for the case PVE's docs warn about */
            *err = xasprintf("malformed JSON string, neither tag, array, object, number, string "
                             "or atom, at character offset 0 (before \"(end of string)\")%s 934.",
                             at_http);
        else
            *err = xasprintf("malformed JSON string, %s%s 934.", je.text, at_http);
        return JB_HTTP_ERR;
    }
    if (json_is_array(o) || json_is_boolean(o)) {
        *err = xasprintf("Not a HASH reference%s 978.", at_http);
        rc = JB_HTTP_ERR;
        goto out;
    }
    if (json_is_string(o) || json_is_number(o)) {
        const char *sv = json_string_value(o);
        bool falsy = sv ? (!*sv || strcmp(sv, "0") == 0) : json_number_value(o) == 0;
        char *what = perl_scalar_text(o);
        *err =
            xasprintf("Can't use string %s as a HASH ref while \"strict refs\" in use at %s", what,
                      falsy ? "/usr/share/perl5/PVE/HTTPServer.pm line 160."
                            : "/usr/share/perl5/PVE/APIServer/AnyEvent.pm line 978.");
        free(what);
        rc = falsy ? JB_REST_ERR : JB_HTTP_ERR;
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "_dc") == 0)
            continue;
        if (json_is_real(v)) {
            /* keep numbers as their text so integer checks see "2" not 2.0;
             * as Perl prints them (%.15g): 0.1 reads back "0.1" */
            json_object_set_new(params, k, json_sprintf("%.15g", json_real_value(v)));
        } else {
            json_object_set(params, k, v);
        }
    }
out:
    json_decref(o); /* null: json_loadb's NULL-safe null, no parameters */
    return rc;
}

/* ---- faults ------------------------------------------------------------- */

static struct sim_fault *fault_match(struct sim *s, const char *verb, const char *path,
                                     const char *node)
{
    for (struct sim_fault *f = s->faults; f; f = f->next) {
        if (f->remaining == 0)
            continue;
        if (f->method[0] && strcmp(f->method, verb) != 0)
            continue;
        if (f->node[0] && (!node || strcmp(f->node, node) != 0))
            continue;
        if (f->re) {
            pcre2_match_data *md = pcre2_match_data_create(4, NULL);
            int rc = pcre2_match(f->re, (PCRE2_SPTR)path, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
            pcre2_match_data_free(md);
            if (rc < 0)
                continue;
        }
        if (f->rate < 1.0 && sim_rand(s) >= f->rate)
            continue;
        if (f->remaining > 0)
            f->remaining--;
        f->hits++;
        return f;
    }
    return NULL;
}

static bool late_queue(struct sim *s, const struct sim_call *c, long delay_ms);

/* A served call's answer replaced by the relay's 596 (served_596): an empty
 * body, the connection closed, as a 596 fault's. */
static void relay_answer(struct http_resp *r, const char *reason)
{
    buf_reset(&r->body);
    buf_reset(&r->headers);
    free(r->content_type);
    r->content_type = NULL;
    if (r->shared_free)
        r->shared_free(r->shared_ctx);
    r->shared = NULL;
    r->shared_len = 0;
    r->shared_free = NULL;
    r->shared_ctx = NULL;
    if (r->body_fd >= 0)
        close(r->body_fd);
    r->body_fd = -1;
    http_resp_status(r, 596, reason);
    r->close = true;
}

/* Apply a fault rule. Returns true if the call is answered by the fault. */
static bool fault_apply(struct sim *s, struct sim_fault *f, struct sim_call *c, struct http_resp *r,
                        long *delay_ms)
{
    if (strcmp(f->kind, "delay") == 0) {
        *delay_ms += f->delay_ms;
        return false;
    }
    if (strcmp(f->kind, "task_error") == 0) {
        c->task_fault_exit = xstrdup(f->message ? f->message : "injected failure");
        c->task_fault_keep = f->cleanup_fails;
        return false;
    }
    if (strcmp(f->kind, "hang") == 0) {
        r->hang = true;
        return true;
    }
    if (strcmp(f->kind, "drop") == 0) {
        r->drop = true; /* the call is served, its answer never sent */
        return false;
    }
    if (strcmp(f->kind, "late") == 0) {
        /* the connection closes now without an answer, the call is served
         * later; one that cannot wait is served now, as `drop` */
        r->drop = true;
        return late_queue(s, c, f->delay_ms);
    }
    if (strcmp(f->kind, "late_hang") == 0) {
        /* never answered (the client waits out its timeout), served later:
         * a request a busy pvedaemon takes up after its client gave up; one
         * that cannot wait is served now and its answer held back */
        r->hang = true;
        return late_queue(s, c, f->delay_ms);
    }
    if (strcmp(f->kind, "served_596") == 0) {
        /* the call is served; the pveproxy relaying it gave up reading the
         * node's answer (its 30 s proxy timeout): the client gets a 596
         * for a call that was done (relay_answer) */
        free(c->relay_fail); /* the rule may go before the answer: a copy */
        c->relay_fail = xstrdup(f->message ? f->message : "Connection timed out");
        return false;
    }
    if (strcmp(f->kind, "595") == 0 || strcmp(f->kind, "596") == 0) {
        http_resp_status(r, atoi(f->kind), f->message ? f->message : "Connection timed out");
        r->close = true;
        r->delay_ms = f->delay_ms;
        return true;
    }
    if (strcmp(f->kind, "lock_timeout") == 0) {
        json_t *id = json_object_get(c->params, "newid");
        if (!id || strcmp(c->verb, "POST") != 0 || !strstr(c->path, "/clone"))
            id = json_object_get(c->params, "vmid");
        int vmid = (int)sim_json_int(id, 0);
        char lf[96];
        char *m = xasprintf("can't lock file '%s' - got timeout", sim_lockfile(vmid, lf));
        render_error(s, r, 500, m, NULL);
        free(m);
        return true;
    }
    /* "error": a handler error with the given status and text */
    render_error(s, r, f->status ? f->status : 500, f->message ? f->message : "injected error",
                 NULL);
    return true;
}

/* ---- routing ------------------------------------------------------------ */

static sim_handler route_find(const char *verb, const char *path)
{
    static const struct sim_route *const tables[] = {
        sim_routes_nodes,      sim_routes_cluster,   sim_routes_qemu,     sim_routes_power,
        sim_routes_tasks,      sim_routes_vmops,     sim_routes_migrate,  sim_routes_agent,
        sim_routes_lxc,        sim_routes_inventory, sim_routes_movedisk, sim_routes_lxcvol,
        sim_routes_lxcmigrate, sim_routes_access};
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (const struct sim_route *r = tables[t]; r->verb; r++)
            if (strcmp(r->verb, verb) == 0 && strcmp(r->path, path) == 0)
                return r->fn;
    return NULL;
}

static void count_call(struct sim *s, const char *verb, const char *tmpl, const char *node)
{
    char key[512];
    snprintf(key, sizeof key, "%s %s", verb, tmpl);
    json_t *v = json_object_get(s->calls, key);
    json_object_set_new(s->calls, key, json_integer(v ? json_integer_value(v) + 1 : 1));
    if (node) {
        v = json_object_get(s->node_calls, node);
        json_object_set_new(s->node_calls, node, json_integer(v ? json_integer_value(v) + 1 : 1));
    }
}

/* Decide which node answers. Returns false when the response is already set
 * (proxy errors). */
static bool proxy(struct sim *s, struct sim_call *c, struct http_resp *r)
{
    const char *pt = schema_method_proxyto(c->m);
    const char *target = pt ? call_str(c, pt) : NULL;
    c->node = c->local;
    if (!target || strcmp(target, "localhost") == 0) {
        if (!c->node) /* the cluster entry point answers as its first online node */
            for (int i = 0; i < s->nnodes && !c->node; i++)
                if (s->nodes[i].state == NODE_ONLINE)
                    c->node = &s->nodes[i];
        if (!c->node)
            c->node = &s->nodes[0];
        return true;
    }
    struct sim_node *n = sim_node_find(s, target);
    if (!n || (s->o.standalone && n != c->local)) {
        char *m = xasprintf("hostname lookup '%s' failed - failed to get address info for: %s: "
                            "Name or service not known",
                            target, target);
        render_error(s, r, 500, m, NULL);
        free(m);
        return false;
    }
    c->node = n;
    if (n == c->local || n->state == NODE_ONLINE)
        return true;
    if (n->state == NODE_OFFLINE) {
        http_resp_status(r, 595, "Connection refused");
    } else {
        http_resp_status(r, 596, "Connection timed out");
        r->delay_ms = sim_real_ms(s, PROXY_TIMEOUT);
    }
    r->close = true;
    return false;
}

/* Remember a request the schema refused, so that client tests can assert
 * they never send one (GET /_sim/rejections). With s->mu held. */
static void reject(struct sim *s, const char *verb, const char *path, json_t *errors)
{
    if (json_array_size(s->rejections) >= 100)
        return;
    json_t *e = json_pack("{s:s,s:s}", "method", verb, "path", path);
    if (errors)
        json_object_set(e, "errors", errors);
    json_array_append_new(s->rejections, e);
}

/* A parameter given without a value (a bare `a` in a form, null in JSON)
 * is Perl's undef: the schema takes it as absent, and so do the handlers
 * (which test with defined()): gone once verified. */
static void drop_nulls(json_t *params)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(params, tmp, k, v)
    {
        if (json_is_null(v))
            json_object_del(params, k);
    }
}

/* Whether pveproxy hands the call on with its parameters encoded again
 * (proxy_request): to pvedaemon for a protected method, to another node
 * for a proxyto one. A form's undef then goes as "a=", an empty string. */
static bool form_reencoded(const schema_method *m, json_t *pathp, const struct listener_ctx *lc)
{
    if (schema_method_protected(m))
        return true;
    const char *pt = schema_method_proxyto(m);
    const char *target = pt ? json_string_value(json_object_get(pathp, pt)) : NULL;
    return target && strcmp(target, "localhost") != 0 &&
           (!lc->node || strcmp(lc->node->name, target) != 0);
}

static void nulls_to_empty(json_t *params)
{
    for (void *it = json_object_iter(params); it; it = json_object_iter_next(params, it))
        if (json_is_null(json_object_iter_value(it)))
            json_object_iter_set_new(params, it, json_string(""));
}

static bool verify(struct sim *s, struct sim_call *c, struct http_resp *r, bool json_body)
{
    json_t *errors = json_object();
    bool jb = json_body && s->o.pve_version >= 8;
    int rc = schema_check_params(c->m, c->params, jb, errors);
    drop_nulls(c->params);
    if (rc == SCHEMA_OK && json_object_get(c->params, "skiplock") && !c->is_root)
        json_object_set_new(errors, "skiplock", json_string("Only root may use this option."));
    bool ok = json_object_size(errors) == 0;
    if (!ok) {
        reject(s, c->verb, c->path, errors);
        render_error(s, r, 400, "Parameter verification failed.", errors);
    }
    json_decref(errors);
    return ok;
}

/* Once verified, integers become text, as a form body gives them: Perl's
 * scalars serve a string parameter as they serve an integer one, and the
 * schema takes {"target": 123} for a string; handlers and the tasks they
 * start (which copy the parameters) read strings with call_str and integers
 * from text with call_int. Reals are text already (parse_json_body);
 * booleans, arrays and objects stay as they are. */
static void integers_as_text(json_t *params)
{
    for (void *it = json_object_iter(params); it; it = json_object_iter_next(params, it)) {
        json_t *v = json_object_iter_value(it);
        if (json_is_integer(v))
            json_object_iter_set_new(params, it,
                                     json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v)));
    }
}

/* Streamed answers (big lists) under --check-returns. The validator costs
 * about 50 times what writing a record does (0.35 ms a record: 7 s for
 * 20,000 VMs), and a tree of 100,000 records hundreds of MiB, so:
 * - an answer under 64 KiB (every answer of the functional tests) is
 *   checked whole, every time;
 * - a bigger one is checked on the first call of its method and every
 *   1024th after it, on a sample: its array is parsed record by record
 *   (one record's tree at a time) and about CHECK_SAMPLE records spread
 *   over it, the first and the last among them, are checked as one array.
 * The records all come from the same writers, which the small answers
 * exercise completely. Runs without the lock, which it takes only to count
 * and to record a violation. */
#define CHECK_ALWAYS_BELOW (64 * 1024)
#define CHECK_SAMPLE 256
#define RAW_HEAD "{\"data\":" /* c->raw starts with it: the answer is built in place */
#define RAW_HEAD_LEN (sizeof RAW_HEAD - 1)

static void violation(struct sim *s, struct sim_call *c, const char *err)
{
    log_error("sim", "%s %s: result does not match the schema: %s", c->verb, c->path, err);
    if (json_array_size(s->violations) < 100)
        json_array_append_new(s->violations, json_pack("{s:s,s:s,s:s}", "method", c->verb, "path",
                                                       c->path, "error", err));
}

/* --check-returns: a result that does not match the schema is logged and
 * remembered for /_sim/violations. With s->mu held. */
static void check_returns(struct sim *s, struct sim_call *c, json_t *data)
{
    char *err = NULL;
    if (schema_check_returns(c->m, data, &err))
        return;
    violation(s, c, err);
    free(err);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* A sample of the JSON array in text[0..n) (see above), or the whole value
 * parsed when it is not an array; NULL with *err when it is not JSON. */
static json_t *sample_array(const char *text, size_t n, char **err)
{
    const char *p = skip_ws(text, text + n), *end = text + n;
    json_error_t je;
    if (p == end || *p != '[') {
        json_t *v = json_loadb(text, n, JSON_DECODE_ANY, &je);
        if (!v)
            *err = xstrdup(je.text);
        return v;
    }
    size_t stride = n / ((size_t)CHECK_SAMPLE * 200) + 1, i = 0;
    json_t *sample = json_array(), *last = NULL;
    bool last_kept = false;
    p = skip_ws(p + 1, end);
    while (p < end && *p != ']') {
        json_t *el =
            json_loadb(p, (size_t)(end - p), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
        if (!el) {
            *err = xasprintf("byte %ld: %s", (long)(p - text) + je.position, je.text);
            json_decref(last);
            json_decref(sample);
            return NULL;
        }
        p = skip_ws(p + je.position, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        last_kept = i++ % stride == 0;
        if (last_kept)
            json_array_append(sample, el);
        json_decref(last);
        last = el;
    }
    if (last && !last_kept)
        json_array_append(sample, last);
    json_decref(last);
    if (p == end) {
        *err = xstrdup("the array does not end");
        json_decref(sample);
        return NULL;
    }
    return sample;
}

static void check_raw(struct sim *s, struct sim_call *c, const struct http_resp *r)
{
    if (!s->o.check_returns || !c->raw_set || (c->status && c->status != 200) ||
        c->raw_end < RAW_HEAD_LEN)
        return;
    const char *text = (r->shared ? r->shared : r->body.data) + RAW_HEAD_LEN;
    size_t n = c->raw_end - RAW_HEAD_LEN;
    char *err = NULL;
    json_t *data = NULL;
    if (n < CHECK_ALWAYS_BELOW) {
        json_error_t je;
        data = json_loadb(text, n, JSON_DECODE_ANY, &je);
        if (!data)
            err = xstrdup(je.text);
    } else {
        pthread_mutex_lock(&s->mu);
        char key[512];
        snprintf(key, sizeof key, "%s %s", c->verb, schema_method_path(c->m));
        json_t *slot = json_object_get(s->big_checks, key);
        json_int_t k = slot ? json_integer_value(slot) + 1 : 1;
        json_object_set_new(s->big_checks, key, json_integer(k));
        pthread_mutex_unlock(&s->mu);
        if (k != 1 && k % 1024 != 0)
            return;
        data = sample_array(text, n, &err);
    }
    pthread_mutex_lock(&s->mu);
    if (!data) {
        char *m = xasprintf("streamed result is not JSON: %s", err);
        violation(s, c, m);
        free(m);
    } else if (!schema_check_returns(c->m, data, &err)) {
        violation(s, c, err);
    }
    pthread_mutex_unlock(&s->mu);
    free(err);
    json_decref(data);
}

static void finish(struct sim *s, struct sim_call *c, struct http_resp *r)
{
    if (c->status && c->status != 200) {
        render_error(s, r, c->status, c->message ? c->message : "error", c->errors);
        if (c->status == 401) /* a failed login is delayed like any 401 (§2) */
            r->delay_ms = (long)(s->o.auth_delay * 1000);
        return;
    }
    if (c->answer) { /* already whole (a cached answer): checked when it was built */
        sim_blob_send(c->answer, r);
        free(r->content_type);
        r->content_type = xstrdup("application/json;charset=UTF-8");
        return;
    }
    /* --pve-version 7 serves the 8.4.2 schema; the documented 7.x result
     * shapes that differ from it are not violations (§10: resize returns
     * null; node status has no boot-info before 8.1) */
    if (c->raw_set) {            /* a streamed answer: checked by check_raw, after the lock */
        struct buf *b = &c->raw; /* RAW_HEAD, then what the handler wrote */
        c->raw_end = b->len;
        if (c->extra) {
            const char *k;
            json_t *v;
            json_object_foreach(c->extra, k, v)
            {
                buf_addc(b, ',');
                sj_str(b, k);
                buf_addc(b, ':');
                sj_json(b, v);
            }
        }
        buf_addc(b, '}');
        if (c->keep_answer) { /* kept for the next callers, and sent from there */
            struct sim_blob *bl = sim_blob_take(b);
            sim_blob_release(*c->keep_answer);
            *c->keep_answer = bl;
            sim_blob_send(bl, r);
        } else { /* the answer becomes the body as it is: no copy of megabytes */
            struct buf t = r->body;
            r->body = *b;
            *b = t;
        }
        free(r->content_type);
        r->content_type = xstrdup("application/json;charset=UTF-8");
        return;
    }
    const char *mp = schema_method_path(c->m);
    bool pve7_shape =
        s->o.pve_version < 8 && ((json_is_null(c->data ? c->data : json_null()) &&
                                  strcmp(mp, "/nodes/{node}/qemu/{vmid}/resize") == 0) ||
                                 strcmp(mp, "/nodes/{node}/status") == 0);
    if (s->o.check_returns && !pve7_shape)
        check_returns(s, c, c->data ? c->data : json_null());
    json_t *body = json_object();
    json_object_set(body, "data", c->data ? c->data : json_null());
    if (c->extra)
        json_object_update(body, c->extra);
    json_reply(r, body);
    json_decref(body);
}

/* The body and content-type rules of pve-http-server. */
static bool body_rules(const struct sim *s, const struct http_req *req, struct http_resp *r,
                       bool *is_json)
{
    bool write = strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0;
    *is_json = false;
    if (!write && req->body_len > 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "Unexpected content for method '%s'", req->method);
        plain_error(s, r, 501, msg);
        return false;
    }
    const char *ct = http_req_header(req, "Content-Type");
    if (!write || !ct)
        return true;
    /* parse_content_type: the type is what comes before the first [;,],
     * compared as it is (case-sensitive) */
    size_t n = strcspn(ct, ";,");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    /* extract_params decodes JSON even from an empty body (which fails) */
    *is_json = n == 16 && strncmp(ct, "application/json", 16) == 0;
    if (req->body_len == 0 || *is_json || n == 0 ||
        (n == 33 && strncmp(ct, "application/x-www-form-urlencoded", 33) == 0))
        return true;
    char *msg = xasprintf("upload 'Content-Type '%s' not implemented", ct);
    plain_error(s, r, 506, msg);
    free(msg);
    return false;
}

/* The calls HTTPServer.pm's auth_handler lets through without credentials. */
static bool auth_exempt(const char *verb, const char *path)
{
    bool get = strcmp(verb, "GET") == 0, post = strcmp(verb, "POST") == 0;
    return (get && strcmp(path, "/access/domains") == 0) ||
           ((get || post) && strcmp(path, "/access/ticket") == 0) ||
           (post &&
            (strcmp(path, "/access/vncticket") == 0 || strcmp(path, "/access/openid/login") == 0 ||
             strcmp(path, "/access/openid/auth-url") == 0));
}

static bool authenticate(struct sim *s, const struct http_req *req, struct http_resp *r,
                         const char *path, struct sim_call *c, struct auth_who *who)
{
    if (auth_exempt(req->method, path)) {
        c->user = "";
        return true;
    }
    char reason[512];
    if (auth_check(s->auth, http_req_header(req, "Cookie"), http_req_header(req, "Authorization"),
                   http_req_header(req, "CSRFPreventionToken"), strcmp(req->method, "GET") != 0,
                   who, reason, sizeof reason) != 0) {
        http_resp_status(r, 401, reason);
        r->close = true;
        r->delay_ms = (long)(s->o.auth_delay * 1000);
        return false;
    }
    c->user = who->user;
    c->tokenid = who->tokenid[0] ? who->tokenid : NULL;
    c->is_root = strcmp(who->user, "root@pam") == 0 && !c->tokenid;
    return true;
}

static void call_release(struct sim_call *c)
{
    buf_release(&c->raw);
    sim_blob_release(c->answer);
    json_decref(c->data);
    json_decref(c->extra);
    json_decref(c->errors);
    free(c->message);
    free(c->task_fault_exit);
    free(c->relay_fail);
}

/* ---- late calls ---------------------------------------------------------- */

/* A call under a `late` fault: a request queued behind others in a busy
 * pveproxy or pvedaemon, served after its client gave up on it (and maybe
 * looked and sent it again). It keeps what the handler reads of the
 * request as it was verified when it came in, and is served by a thread
 * of its own once due: not on the engine's tick, as the handler may wait
 * for the VM's file lock (sim_flock_wait), which only the engine's steps
 * of a running task may give back. */
struct sim_late {
    struct sim *s;
    struct timespec due; /* CLOCK_MONOTONIC, as every wait on s->cv (deadline_in_ms) */
    bool cancelled;      /* never to be served (reset, exit) */
    bool started;        /* being served: a cancel comes too late */
    char verb[8];
    char *path;
    const schema_method *m;
    struct sim_node *node, *local;
    json_t *params;
    char *user, *tokenid; /* tokenid NULL: a ticket's call */
    bool is_root;
    struct sim_late *next;
};

static void late_free(struct sim_late *l)
{
    free(l->path);
    json_decref(l->params);
    free(l->user);
    free(l->tokenid);
    free(l);
}

/* Serve a late call as dispatch would have served it, with the world as
 * it is now (a digest is checked against the config of now, a resize grows
 * the disk it finds, a task starts now). Its answer goes nowhere. With
 * s->mu held. */
static void late_serve(struct sim *s, struct sim_late *l)
{
    if (l->node->state != NODE_ONLINE) { /* the node went down: its queue went with it */
        log_info("sim", "late %s %s: node %s is down, not served", l->verb, l->path, l->node->name);
        return;
    }
    sim_handler fn = route_find(l->verb, schema_method_path(l->m));
    if (!fn)
        return;
    struct sim_call c = {.s = s,
                         .m = l->m,
                         .verb = l->verb,
                         .path = l->path,
                         .node = l->node,
                         .local = l->local,
                         .params = l->params,
                         .user = l->user,
                         .tokenid = l->tokenid,
                         .is_root = l->is_root,
                         .raw = BUF_INIT(BUF_UNLIMITED)};
    buf_add(&c.raw, RAW_HEAD, RAW_HEAD_LEN); /* what handlers that stream expect */
    sim_advance(s);
    bool write = strcmp(l->verb, "GET") != 0;
    if (write)
        sim_world_begin(s);
    fn(&c);
    if (write) {
        sim_world_end(s);
        sim_history_sizes_params(s, c.node, c.params);
    }
    log_info("sim", "late %s %s served: %d %s", l->verb, l->path, c.status ? c.status : 200,
             c.message ? c.message : "");
    call_release(&c);
}

static void *late_main(void *arg)
{
    struct sim_late *l = arg;
    struct sim *s = l->s;
    pthread_mutex_lock(&s->mu);
    /* s->cv is broadcast on every lock release and task end, and on a
     * cancel: each wake looks and waits again until due */
    while (!l->cancelled && pthread_cond_timedwait(&s->cv, &s->mu, &l->due) == 0)
        ;
    if (!l->cancelled) {
        l->started = true;
        late_serve(s, l);
    }
    struct sim_late **pp = &s->late;
    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    s->nlate--;
    late_free(l); /* under the lock: after the unlock this thread touches nothing */
    pthread_cond_broadcast(&s->cv); /* sim_late_drain */
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queue a call to be served delay_ms (real milliseconds, as a `delay`)
 * from now. False when it cannot wait (SIM_LATE_MAX waiting already, no
 * thread): the caller serves it now. With s->mu held. */
static bool late_queue(struct sim *s, const struct sim_call *c, long delay_ms)
{
    if (s->nlate >= SIM_LATE_MAX) {
        log_warn("sim", "late %s %s: %d late calls wait already, served now", c->verb, c->path,
                 s->nlate);
        return false;
    }
    struct sim_late *l = xcalloc(1, sizeof *l);
    l->s = s;
    l->due = deadline_in_ms(delay_ms);
    snprintf(l->verb, sizeof l->verb, "%s", c->verb);
    l->path = xstrdup(c->path);
    l->m = c->m;
    l->node = c->node;
    l->local = c->local;
    l->params = json_deep_copy(c->params); /* the connection's thread frees its own */
    l->user = xstrdup(c->user);
    l->tokenid = c->tokenid ? xstrdup(c->tokenid) : NULL;
    l->is_root = c->is_root;
    pthread_attr_t a;
    pthread_t t;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &a, late_main, l);
    pthread_attr_destroy(&a);
    if (rc) {
        log_warn("sim", "late %s %s: no thread (%s), served now", c->verb, c->path, strerror(rc));
        late_free(l);
        return false;
    }
    /* the thread waits for s->mu, held here: it finds itself linked */
    l->next = s->late;
    s->late = l;
    s->nlate++;
    return true;
}

void sim_late_cancel(struct sim *s)
{
    for (struct sim_late *l = s->late; l; l = l->next)
        l->cancelled = true;
    pthread_cond_broadcast(&s->cv);
}

void sim_late_drain(struct sim *s)
{
    pthread_mutex_lock(&s->mu);
    sim_late_cancel(s);
    while (s->nlate > 0)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

int sim_late_release(struct sim *s)
{
    int n = 0;
    struct timespec now = deadline_in_ms(0);
    for (struct sim_late *l = s->late; l; l = l->next)
        if (!l->cancelled && !l->started) {
            l->due = now; /* its thread's wait ends at once (late_main) */
            n++;
        }
    pthread_cond_broadcast(&s->cv);
    return n;
}

int sim_late_pending(const struct sim *s)
{
    /* one being served (its handler waiting for a lock) is pending until
     * done: none pending, every effect is there */
    int n = 0;
    for (const struct sim_late *l = s->late; l; l = l->next)
        n += l->started || !l->cancelled;
    return n;
}

/* Everything from routing on; `path` is decoded and relative to /api2/<fmt>.
 * In AnyEvent.pm's order: authentication
 * (authenticate_and_handle_request), then the body's rules, then the
 * formatter (handle_api2_request: `nofmt`, the 501 for a format pvesim does
 * not serve), then the parameters and the handler. */
static void dispatch(struct sim *s, struct listener_ctx *lc, const struct http_req *req,
                     struct http_resp *r, const char *path, const char *nofmt)
{
    bool is_json;
    struct sim_call c = {.s = s,
                         .verb = req->method,
                         .path = path,
                         .local = lc->node,
                         .raw = BUF_INIT(BUF_UNLIMITED)};
    struct auth_who who;
    json_t *params = json_object();
    long fault_delay = 0;
    char *jerr = NULL;
    buf_add(&c.raw, RAW_HEAD, RAW_HEAD_LEN);
    if (!authenticate(s, req, r, path, &c, &who) || !body_rules(s, req, r, &is_json))
        goto out;
    if (nofmt) {
        plain_error(s, r, 501, nofmt);
        goto out;
    }
    if (strcmp(path, "/") == 0 && strcmp(req->method, "GET") == 0) {
        /* the root index (manager PVE/API2.pm): not in the apidoc schema */
        pthread_mutex_lock(&s->mu);
        count_call(s, "GET", "/", NULL);
        pthread_mutex_unlock(&s->mu);
        json_t *body = json_pack("{s:[{s:s},{s:s},{s:s},{s:s},{s:s},{s:s}]}", "data", "subdir",
                                 "version", "subdir", "cluster", "subdir", "nodes", "subdir",
                                 "storage", "subdir", "access", "subdir", "pools");
        json_reply(r, body);
        json_decref(body);
        goto out;
    }
    /* extract_params runs before rest_handler looks the handler up */
    enum json_body_rc jrc =
        is_json ? parse_json_body(req->body, req->body_len, params, &jerr) : JB_OK;
    if (jrc == JB_HTTP_ERR) {
        /* handle_api2_request's eval: 501 before http-server 5.2.0 (PVE 7) */
        char *m = xasprintf("%s\n", jerr);
        plain_error(s, r, s->o.pve_version >= 8 ? 500 : 501, m);
        free(m);
        goto out;
    }
    if (!is_json && req->body_len > 0)
        parse_form(req->body, req->body_len, params);
    json_t *pathp = json_object();
    int rc = schema_find(s->sch, req->method, path, &c.m, pathp);
    if (rc != SCHEMA_OK) {
        pthread_mutex_lock(&s->mu);
        reject(s, req->method, path, NULL);
        pthread_mutex_unlock(&s->mu);
        not_implemented(s, r, req->method, path);
        json_decref(pathp);
        goto out;
    }
    if (jrc == JB_REST_ERR) {
        render_error(s, r, 500, jerr, NULL);
        json_decref(pathp);
        goto out;
    }
    if (!is_json && req->body_len > 0 && form_reencoded(c.m, pathp, lc))
        nulls_to_empty(params);
    if (req->query) {
        json_t *q = json_object();
        parse_form(req->query, strlen(req->query), q);
        json_object_update(params, q); /* the query overrides the body */
        json_decref(q);
    }
    const char *k;
    json_t *v;
    json_object_foreach(pathp, k, v)
    {
        json_t *old = json_object_get(params, k);
        const char *os = json_string_value(old);
        if (old && !(os && strcmp(os, json_string_value(v)) == 0) &&
            !(json_is_integer(old) && atoll(json_string_value(v)) == json_integer_value(old))) {
            json_t *e = json_pack("{s:s}", k,
                                  "duplicate parameter (already defined in URI) with conflicting "
                                  "values!");
            render_error(s, r, 400, "Parameter verification failed.", e);
            json_decref(e);
            json_decref(pathp);
            goto out;
        }
        json_object_set(params, k, v);
    }
    json_decref(pathp);
    c.params = params;
    if (!schema_method_allowtoken(c.m) &&
        auth_token_presented(http_req_header(req, "Cookie"),
                             http_req_header(req, "Authorization"))) {
        /* rest_handler: a token (even unverified, on an exempt path) may not
         * call an allowtoken => 0 method; the message names the called URI */
        char *m = xasprintf("Permission check failed (URI '%s' not available with API token, "
                            "need proper ticket.",
                            path);
        render_error(s, r, 403, m, NULL);
        free(m);
        goto out;
    }

    pthread_mutex_lock(&s->mu);
    sim_advance(s);
    const char *pt = schema_method_proxyto(c.m);
    count_call(s, req->method, schema_method_path(c.m), pt ? call_str(&c, pt) : NULL);
    /* rest_handler checks the privileges before it proxies or verifies */
    char *why = NULL;
    if (!sim_perm_api_check(&c, params, &why)) {
        pthread_mutex_unlock(&s->mu);
        render_error(s, r, 403, why, NULL);
        free(why);
        goto out;
    }
    if (!proxy(s, &c, r) || !verify(s, &c, r, is_json)) {
        pthread_mutex_unlock(&s->mu);
        goto out;
    }
    integers_as_text(params);
    struct sim_fault *f = fault_match(s, req->method, path, c.node ? c.node->name : NULL);
    if (f && fault_apply(s, f, &c, r, &fault_delay)) {
        pthread_mutex_unlock(&s->mu);
        goto out;
    }
    sim_handler fn = route_find(req->method, schema_method_path(c.m));
    if (!fn) {
        pthread_mutex_unlock(&s->mu);
        not_implemented(s, r, req->method, path);
        goto out;
    }
    /* a write may change the world: caches of derived values step aside
     * while it runs and are stale after it (sim->gen) */
    bool write = strcmp(req->method, "GET") != 0;
    if (write)
        sim_world_begin(s);
    fn(&c);
    if (write) {
        sim_world_end(s);
        sim_history_sizes_params(s, c.node, c.params);
    }
    finish(s, &c, r);
    pthread_mutex_unlock(&s->mu);
    check_raw(s, &c, r);
    if (c.relay_fail)
        relay_answer(r, c.relay_fail);
out:
    if (fault_delay > 0) { /* a test may send it at once (POST /_sim/late) */
        r->delay_cut = &s->delay_gen;
        r->delay_gen = atomic_load(&s->delay_gen);
    }
    r->delay_ms += fault_delay;
    call_release(&c);
    json_decref(params);
    free(jerr);
}

void sim_http_handler(void *ctx, const struct http_req *req, struct http_resp *r)
{
    struct sim *s = ctx;
    struct listener_ctx *lc = req->listener_ctx;
    if (str_starts(req->path, "/_sim/") || strcmp(req->path, "/_sim") == 0) {
        sim_ctl_handle(s, req, r);
        return;
    }
    const char *m = req->method;
    if (strcmp(m, "GET") && strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "DELETE")) {
        char msg[64];
        snprintf(msg, sizeof msg, "method '%s' not available", m);
        http_resp_status(r, 501, msg); /* a bare HTTP::Response: no body */
        r->close = true;
        return;
    }
    char *path = pct_decode(req->path, strlen(req->path), false, NULL);
    char *nofmt = NULL;
    if (!str_starts(path, "/api2/")) {
        plain_error(s, r, 501, "no such uri");
        goto out;
    }
    const char *fmt = path + 6;
    size_t fl = strcspn(fmt, "/");
    if (fl == 0) {
        plain_error(s, r, 501, "no such uri");
        goto out;
    }
    const char *rest = fmt + fl;
    if (fl != 4 || strncmp(fmt, "json", 4) != 0)
        nofmt = xasprintf("no formatter for uri %s, %.*s", path + 5 + fl + 1, (int)fl, fmt);
    dispatch(s, lc, req, r, *rest ? rest : "/", nofmt);
out:
    free(nofmt);
    free(path);
}

/* Exported for main.c: a listener context per node (NULL node: gateway). */
void *sim_listener_ctx_new(struct sim *s, struct sim_node *n);
void *sim_listener_ctx_new(struct sim *s, struct sim_node *n)
{
    struct listener_ctx *lc = xcalloc(1, sizeof *lc);
    lc->s = s;
    lc->node = n;
    if (s->nlctx < SIM_MAX_NODES + 1)
        s->lctx[s->nlctx++] = lc;
    return lc;
}
