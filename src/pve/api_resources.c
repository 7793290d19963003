/* api_resources: a /cluster/resources answer read as a stream of parse
 * events (yajl), each resource straight into a struct pve_resource.
 *
 * Why not jansson, as everywhere else: the fleet reads this answer at
 * least once a minute (every few seconds while placements are decided),
 * and it grows with the fleet (~340 bytes a VM: 3.4 MB for 10,000).
 * jansson builds a tree of every object (a hash table each, an allocation
 * per member) at ~230 instructions a byte here; yajl's events cost ~40,
 * and nothing but the record being filled is ever held. The conversions
 * are api_json.c's lenient ones (pj_str, pj_int, pj_bool): PVE sends
 * numbers as strings now and then and booleans as 0/1.
 *
 * What a jansson tree refuses is refused here too (tests/pve/test_resources
 * compares the two on randomly edited answers): strings that are not
 * strict UTF-8 or hold a NUL (yajl lets overlong forms, surrogates and
 * "\u0000" through), integers beyond int64, reals beyond double, nesting
 * deeper than 2048, a raw NUL byte anywhere (jansson let one after a
 * number through). Left: yajl reads an escaped lone high surrogate
 * ("\ud800") as '?', takes one followed by any \u escape for a pair, and
 * \f and \v for white space; a text with a fault of shape
 * before one of syntax is said to be of the wrong shape (the stream meets
 * it first). */
#include "common/xalloc.h"
#include "pve/api_json.h"
#include "pve/pve_api.h"
#include "pve/pve_int.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

enum field {
    F_NONE, /* a member proxd does not read: its value is skipped */
    F_TYPE,
    F_ID,
    F_NODE,
    F_VMID,
    F_NAME,
    F_STATUS,
    F_TEMPLATE,
    F_MAXCPU,
    F_MAXMEM,
    F_MEM,
    F_MAXDISK,
    F_DISK,
    F_UPTIME,
    F_LOCK,
    F_TAGS,
    F_HASTATE,
    F_STORAGE,
    F_SHARED,
};

#define KEY(k, f)                                                                                  \
    {                                                                                              \
        k, sizeof k - 1, f                                                                         \
    }
static const struct {
    const char *key;
    size_t len;
    enum field f;
} fields[] = {
    KEY("type", F_TYPE),         KEY("id", F_ID),           KEY("node", F_NODE),
    KEY("vmid", F_VMID),         KEY("name", F_NAME),       KEY("status", F_STATUS),
    KEY("template", F_TEMPLATE), KEY("maxcpu", F_MAXCPU),   KEY("maxmem", F_MAXMEM),
    KEY("mem", F_MEM),           KEY("maxdisk", F_MAXDISK), KEY("disk", F_DISK),
    KEY("uptime", F_UPTIME),     KEY("lock", F_LOCK),       KEY("tags", F_TAGS),
    KEY("hastate", F_HASTATE),   KEY("storage", F_STORAGE), KEY("shared", F_SHARED),
};
#undef KEY

/* Where the parse is: the envelope's members at depth 1, the "data" array
 * at 2, a resource's members at 3. */
enum { D_ENVELOPE = 1, D_DATA = 2, D_ELEMENT = 3 };
#define MAX_DEPTH 2048 /* jansson's */

struct rparse {
    pve_resource_fn fn;
    void *ud;
    int depth;         /* containers open, skipped ones not counted */
    int skip;          /* > 0: inside a value being skipped, its depth */
    bool next_is_data; /* the envelope's next value is "data" */
    bool seen_data;    /* "data" came (a second one is a wrong shape) */
    bool began;        /* the envelope opened */
    int fail;          /* why the parse was cancelled (enum below) */
    int stopped;       /* fn's non-zero value, when it stopped the walk */
    enum field cur;    /* what the element's next value sets */
    char type[32];     /* the element's "type", as pj_str reads it */
    struct pve_resource r;
};

enum { E_NONE, E_SYNTAX, E_SHAPE, E_STOPPED };

static int cancel(struct rparse *p, int why)
{
    p->fail = why;
    return 0;
}

static char *field_text(struct rparse *p, size_t *len)
{
    struct pve_resource *r = &p->r;
    switch (p->cur) {
    case F_TYPE:
        *len = sizeof p->type;
        return p->type;
    case F_ID:
        *len = sizeof r->id;
        return r->id;
    case F_NODE:
        *len = sizeof r->node;
        return r->node;
    case F_NAME:
        *len = sizeof r->name;
        return r->name;
    case F_STATUS:
        *len = sizeof r->status;
        return r->status;
    case F_LOCK:
        *len = sizeof r->lock;
        return r->lock;
    case F_TAGS:
        *len = sizeof r->tags;
        return r->tags;
    case F_HASTATE:
        *len = sizeof r->hastate;
        return r->hastate;
    case F_STORAGE:
        *len = sizeof r->storage;
        return r->storage;
    default:
        return NULL;
    }
}

static bool *field_flag(struct rparse *p)
{
    return p->cur == F_TEMPLATE ? &p->r.tmpl : p->cur == F_SHARED ? &p->r.shared : NULL;
}

static bool is_int_field(enum field f)
{
    return f == F_VMID || f == F_MAXCPU || f == F_MAXMEM || f == F_MEM || f == F_MAXDISK ||
           f == F_DISK || f == F_UPTIME;
}

/* The integer fields; vmid and maxcpu are ints, kept in range. */
static void set_int(struct rparse *p, int64_t v)
{
    struct pve_resource *r = &p->r;
    int small = v > INT_MAX ? INT_MAX : v < INT_MIN ? INT_MIN : (int)v;
    switch (p->cur) {
    case F_VMID:
        r->vmid = small;
        break;
    case F_MAXCPU:
        r->maxcpu = small;
        break;
    case F_MAXMEM:
        r->maxmem = v;
        break;
    case F_MEM:
        r->mem = v;
        break;
    case F_MAXDISK:
        r->maxdisk = v;
        break;
    case F_DISK:
        r->disk = v;
        break;
    case F_UPTIME:
        r->uptime = v;
        break;
    default:
        break;
    }
}

/* A scalar member of an element: text for the text fields, a number or a
 * flag for the others, each as api_json.c's readers take it. */
static void set_text(struct rparse *p, const char *s, size_t n)
{
    size_t cap;
    char *dst = field_text(p, &cap);
    if (!dst)
        return;
    const char *nul = memchr(s, '\0', n); /* as a C string reads it */
    if (nul)
        n = (size_t)(nul - s);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* A member that is null, an object or an array: as if it were missing
 * (the last of a repeated member counts, as in a JSON tree). */
static void clear_field(struct rparse *p)
{
    set_text(p, "", 0);
    set_int(p, 0);
    bool *b = field_flag(p);
    if (b)
        *b = false;
}

/* A scalar nested deeper than jansson's limit (it counts every value). */
static bool too_deep(const struct rparse *p)
{
    return p->depth + p->skip >= MAX_DEPTH;
}

static int on_null(void *ctx)
{
    struct rparse *p = ctx;
    if (too_deep(p))
        return cancel(p, E_SYNTAX);
    if (p->skip)
        return 1;
    if (p->depth == D_ELEMENT) {
        clear_field(p);
        return 1;
    }
    if (p->depth == D_DATA || (p->depth == D_ENVELOPE && p->next_is_data))
        return cancel(p, E_SHAPE); /* an element, or "data", that is not what it must be */
    return p->depth == 0 ? cancel(p, E_SYNTAX) : 1;
}

/* Any scalar outside an element: skipped, or the shape is wrong. */
static int scalar_outside(struct rparse *p)
{
    return on_null(p);
}

static int on_bool(void *ctx, int v)
{
    struct rparse *p = ctx;
    if (too_deep(p))
        return cancel(p, E_SYNTAX);
    if (p->skip || p->depth != D_ELEMENT)
        return scalar_outside(p);
    set_text(p, "", 0); /* pj_str: a boolean is no text */
    set_int(p, v != 0);
    bool *b = field_flag(p);
    if (b)
        *b = v != 0;
    return 1;
}

static int got_integer(struct rparse *p, long long v)
{
    if (p->skip || p->depth != D_ELEMENT)
        return scalar_outside(p);
    size_t cap;
    if (field_text(p, &cap)) { /* a number where a text is due (a name "12") */
        char t[32];
        int n = snprintf(t, sizeof t, "%lld", v);
        set_text(p, t, (size_t)n);
    }
    set_int(p, v);
    bool *b = field_flag(p);
    if (b)
        *b = v != 0;
    return 1;
}

static int got_double(struct rparse *p, double v)
{
    if (p->skip || p->depth != D_ELEMENT)
        return scalar_outside(p);
    size_t cap;
    if (field_text(p, &cap)) {
        char t[32];
        int n = snprintf(t, sizeof t, "%g", v);
        set_text(p, t, (size_t)n < sizeof t ? (size_t)n : sizeof t - 1);
    }
    /* truncated toward zero; out of range (1e300) clamped, not undefined */
    set_int(p, v != v ? 0 : v >= 0x1p63 ? INT64_MAX : v < -0x1p63 ? INT64_MIN : (int64_t)v);
    bool *b = field_flag(p);
    if (b)
        *b = v != 0;
    return 1;
}

/* A number as yajl's lexer found it (grammar checked), converted here
 * (pj_number). Out of range is a syntax error, as in jansson. */
static int on_number(void *ctx, const char *s, size_t n)
{
    struct rparse *p = ctx;
    long long i;
    double d;
    int kind = pj_number(s, n, &i, &d);
    if (kind < 0 || too_deep(p))
        return cancel(p, E_SYNTAX);
    return kind ? got_double(p, d) : got_integer(p, i);
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    struct rparse *p = ctx;
    if (!pj_text_ok(s, n) || too_deep(p))
        return cancel(p, E_SYNTAX);
    if (p->skip || p->depth != D_ELEMENT)
        return scalar_outside(p);
    set_text(p, (const char *)s, n);
    if (is_int_field(p->cur)) {
        /* a numeric string, whole; anything else reads as the default 0 */
        char small[32], *t = n < sizeof small ? small : xmalloc(n + 1), *end;
        memcpy(t, s, n);
        t[n] = '\0';
        long long v = strtoll(t, &end, 10);
        set_int(p, end == t || *end ? 0 : v);
        if (t != small)
            free(t);
    }
    bool *b = field_flag(p);
    if (b)
        *b = n == 1 && s[0] == '1';
    return 1;
}

static int on_key(void *ctx, const unsigned char *k, size_t n)
{
    struct rparse *p = ctx;
    if (!pj_text_ok(k, n))
        return cancel(p, E_SYNTAX);
    if (p->skip)
        return 1;
    if (p->depth == D_ENVELOPE) {
        p->next_is_data = n == 4 && memcmp(k, "data", 4) == 0;
        return 1;
    }
    p->cur = F_NONE;
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (fields[i].len == n && memcmp(fields[i].key, k, n) == 0) {
            p->cur = fields[i].f;
            break;
        }
    return 1;
}

/* A container opens: the envelope (an object at the top), the data array
 * (under "data" in the envelope), an element (an object in it), or a value
 * skipped whole (anything else). */
static int open_value(struct rparse *p, bool array)
{
    if (p->skip) {
        p->skip++;
        return p->depth + p->skip > MAX_DEPTH ? cancel(p, E_SYNTAX) : 1;
    }
    switch (p->depth) {
    case 0:
        if (array)
            return cancel(p, E_SYNTAX); /* not an object */
        p->began = true;
        p->depth = D_ENVELOPE;
        return 1;
    case D_ENVELOPE:
        if (!p->next_is_data) {
            p->skip = 1;
            return 1;
        }
        if (!array || p->seen_data)
            return cancel(p, E_SHAPE); /* data that is not an array, or twice */
        p->seen_data = true;
        p->depth = D_DATA;
        return 1;
    case D_DATA:
        if (array)
            return cancel(p, E_SHAPE); /* an element that is not an object */
        memset(&p->r, 0, sizeof p->r);
        p->type[0] = '\0';
        p->cur = F_NONE;
        p->depth = D_ELEMENT;
        return 1;
    default: /* a nested value in an element */
        clear_field(p);
        p->skip = 1;
        return 1;
    }
}

static int on_start_map(void *ctx)
{
    return open_value(ctx, false);
}

static int on_start_array(void *ctx)
{
    return open_value(ctx, true);
}

static int element_done(struct rparse *p)
{
    struct pve_resource *r = &p->r;
    /* containers are passed on as such: not proxd's to manage, but their
     * VMIDs are taken in the cluster as a VM's are */
    r->type = strcmp(p->type, "qemu") == 0      ? PVE_RES_VM
              : strcmp(p->type, "lxc") == 0     ? PVE_RES_CT
              : strcmp(p->type, "node") == 0    ? PVE_RES_NODE
              : strcmp(p->type, "storage") == 0 ? PVE_RES_STORAGE
                                                : PVE_RES_OTHER;
    return p->fn(r, p->ud);
}

static int on_end(void *ctx)
{
    struct rparse *p = ctx;
    if (p->skip) {
        p->skip--;
        return 1;
    }
    if (p->depth == D_ELEMENT) {
        p->depth = D_DATA;
        p->stopped = element_done(p);
        return p->stopped ? cancel(p, E_STOPPED) : 1;
    }
    p->depth--; /* the data array back to the envelope, the envelope to the end */
    if (p->depth == D_ENVELOPE)
        p->next_is_data = false;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_bool,
    .yajl_number = on_number, /* not yajl_integer, yajl_double: see on_number */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

int pve_resources_parse(const char *body, size_t len, pve_resource_fn fn, void *ud,
                        struct pve_error *err)
{
    struct rparse p = {.fn = fn, .ud = ud};
    int rc = pj_stream(&callbacks, &p, body, len) ? E_NONE : p.fail ? p.fail : E_SYNTAX;
    if (rc == E_NONE && !p.began)
        rc = E_SYNTAX; /* an empty text (or only white space) */
    if (rc == E_NONE && !p.seen_data)
        rc = E_SHAPE;
    if (rc != E_NONE)
        pve_error_clear(err); /* nothing of the exchange's answer stays */
    if (rc == E_SYNTAX) {
        pve_error_set(err, PVE_E_OTHER, "answer is not a JSON object");
        return PVE_E_OTHER;
    }
    if (rc == E_SHAPE) {
        pve_error_set(err, PVE_E_OTHER, "unexpected result for /cluster/resources");
        return PVE_E_OTHER;
    }
    if (rc == E_STOPPED) {
        pve_error_set(err, PVE_E_OTHER, "/cluster/resources: stopped by the caller (%d)",
                      p.stopped);
        return PVE_E_OTHER;
    }
    return 0;
}
