/* api_tasklog: one page of a task log's answer, read as a stream of parse
 * events (yajl) straight into the lines.
 *
 * A clone's log is ~100 lines of progress ("transferred 1.0 GiB of 10.0
 * GiB (10.00%)"), read as the copy goes: as a jansson tree each line cost
 * ~15 K instructions (an object with two members, at ~250 instructions a
 * byte), some 1.5 M per creation, a tenth of its whole cost. The reading
 * is the one log_page did on the tree: every element of "data" is a line,
 * its "t" the text ("" when it has none or it is no string), the last of
 * a repeated member counting, a "data" that is no array giving no line;
 * "total" an integer or 0. What jansson refuses is refused (pj_text_ok,
 * pj_number, a value nested deeper than 2048), and a raw NUL byte anywhere
 * (jansson let one after a number through). Left, as in api_resources.c:
 * yajl reads an escaped lone high surrogate ("\ud800") as '?', takes one
 * followed by any \u escape for a pair, and \f and \v for white space. */
#include "pve/api_json.h"
#include "pve/pve_int.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define MAX_DEPTH 2048 /* jansson's */

enum { D_ENVELOPE = 1, D_DATA = 2, D_LINE = 3 };

struct lparse {
    json_t *lines;
    size_t base;  /* lines there before this page */
    int depth;    /* containers open (the skipped ones not counted) */
    int skip;     /* > 0: inside a value being skipped */
    int key;      /* what the next value is: K_* */
    bool bad;     /* refused: the parse was cancelled */
    bool began;   /* the envelope opened */
    json_t *text; /* the line's text so far (NULL: none) */
    long long total;
};

enum { K_OTHER, K_DATA, K_TOTAL, K_TEXT };

static int refuse(struct lparse *p)
{
    p->bad = true;
    return 0;
}

/* A second "data": as in a tree, the last one counts. */
static void drop_page(struct lparse *p)
{
    while (json_array_size(p->lines) > p->base)
        json_array_remove(p->lines, json_array_size(p->lines) - 1);
}

static void set_text(struct lparse *p, json_t *v)
{
    json_decref(p->text);
    p->text = v;
}

/* A scalar (str: a string's value, NULL for any other): where it stands
 * says what it is. 1 to go on, 0 when refused (yajl's convention);
 * containers are open_value's. */
static int scalar(struct lparse *p, json_t *str, bool is_int, long long i)
{
    if (p->depth + p->skip >= MAX_DEPTH) { /* jansson counts every value */
        json_decref(str);
        return refuse(p);
    }
    if (p->skip) {
        json_decref(str);
        return 1;
    }
    switch (p->depth) {
    case 0: /* the text is not an object */
        json_decref(str);
        return refuse(p);
    case D_ENVELOPE:
        if (p->key == K_TOTAL)
            p->total = is_int ? i : 0;
        else if (p->key == K_DATA)
            drop_page(p); /* a "data" that is no array: no lines */
        json_decref(str);
        return 1;
    case D_DATA: /* a line that is not an object: one without text */
        json_decref(str);
        json_array_append_new(p->lines, json_string(""));
        return 1;
    default: /* a member of a line */
        if (p->key == K_TEXT)
            set_text(p, str); /* NULL for anything but a string */
        else
            json_decref(str);
        return 1;
    }
}

static int on_null(void *ctx)
{
    return scalar(ctx, NULL, false, 0);
}

static int on_bool(void *ctx, int b)
{
    (void)b;
    return scalar(ctx, NULL, false, 0);
}

static int on_number(void *ctx, const char *s, size_t n)
{
    struct lparse *p = ctx;
    long long i;
    double d;
    int kind = pj_number(s, n, &i, &d);
    if (kind < 0)
        return refuse(p);
    return scalar(p, NULL, kind == 0, i);
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    struct lparse *p = ctx;
    if (!pj_text_ok(s, n))
        return refuse(p);
    bool keep = !p->skip && p->depth == D_LINE && p->key == K_TEXT;
    return scalar(p, keep ? json_stringn((const char *)s, n) : NULL, false, 0);
}

static int on_key(void *ctx, const unsigned char *k, size_t n)
{
    struct lparse *p = ctx;
    if (!pj_text_ok(k, n))
        return refuse(p);
    if (p->skip)
        return 1;
    p->key = K_OTHER;
    if (p->depth == D_ENVELOPE && n == 4 && memcmp(k, "data", 4) == 0)
        p->key = K_DATA;
    else if (p->depth == D_ENVELOPE && n == 5 && memcmp(k, "total", 5) == 0)
        p->key = K_TOTAL;
    else if (p->depth == D_LINE && n == 1 && k[0] == 't')
        p->key = K_TEXT;
    return 1;
}

/* A container opens: the envelope, "data", a line, or one to skip. */
static int open_value(struct lparse *p, bool array)
{
    if (p->skip) {
        p->skip++;
        return p->depth + p->skip > MAX_DEPTH ? refuse(p) : 1;
    }
    if (p->depth == 0) {
        if (array)
            return refuse(p); /* not an object */
        p->began = true;
        p->depth = D_ENVELOPE;
        return 1;
    }
    if (p->depth == D_ENVELOPE && p->key == K_DATA) {
        drop_page(p);
        if (array) {
            p->depth = D_DATA;
            return 1;
        }
    } else if (p->depth == D_DATA && !array) {
        set_text(p, NULL);
        p->key = K_OTHER;
        p->depth = D_LINE;
        return 1;
    } else if (p->depth == D_DATA) {
        json_array_append_new(p->lines, json_string("")); /* a line that is an array */
    } else if (p->depth == D_ENVELOPE && p->key == K_TOTAL) {
        p->total = 0;
    } else if (p->depth == D_LINE && p->key == K_TEXT) {
        set_text(p, NULL);
    }
    p->skip = 1;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_value(ctx, false);
}

static int on_start_array(void *ctx)
{
    return open_value(ctx, true);
}

static int on_end(void *ctx)
{
    struct lparse *p = ctx;
    if (p->skip) {
        p->skip--;
        return 1;
    }
    if (p->depth == D_LINE) {
        json_array_append_new(p->lines, p->text ? p->text : json_string(""));
        p->text = NULL;
    }
    p->depth--;
    p->key = K_OTHER;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_bool,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

int pve_log_parse(const char *body, size_t len, json_t *lines, int64_t *total,
                  struct pve_error *err)
{
    struct lparse p = {.lines = lines, .base = json_array_size(lines)};
    bool ok = pj_stream(&callbacks, &p, body, len);
    set_text(&p, NULL);
    if (!ok || p.bad || !p.began) {
        drop_page(&p);
        pve_error_set(err, PVE_E_OTHER, "answer is not a JSON object");
        return PVE_E_OTHER;
    }
    if (total)
        *total = p.total;
    return 0;
}
