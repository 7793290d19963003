/* schema: load the PVE apidoc, route requests, and verify parameters and
 * results the way pve-common's JSONSchema.pm does (check_prop, check_type,
 * check_object, check_format, parse_property_string). Comments name the Perl
 * function each piece mirrors; error texts are PVE's, byte for byte.
 *
 * Deliberate choices where PVE's behaviour cannot be copied as is:
 * - An array value (repeated form key) on a property whose format ends in
 *   "-list" is joined with ','; on any other non-array property it fails with
 *   "type check ('<type>') failed - got ARRAY" (PVE joins repeated keys with
 *   NUL bytes in the HTTP layer instead).
 * - Indexed families ("net[n]") accept the indices PVE declares (table
 *   below); families not in the table accept any canonical decimal index.
 * - Multiple errors inside one property string are listed sorted by key
 *   (Perl's hash order is random).
 * - `pattern` is matched as Perl does, m/^$pattern$/, without grouping: a
 *   top-level alternation in a pattern binds to the anchors as in PVE. */
#include "sim/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/schema_format.h"

enum { V_GET, V_POST, V_PUT, V_DELETE, V_COUNT };
static const char *const verb_names[V_COUNT] = {"GET", "POST", "PUT", "DELETE"};

struct schema_method {
    const char *path; /* all strings borrowed from the loaded document */
    const char *verb;
    const char *name;
    const char *proxyto;
    bool is_protected;
    bool allowtoken;
    json_t *parameters;
    json_t *returns;
    json_t *permissions; /* {"check": [...], "user": "all"}, or NULL */
};

/* One path segment in the routing trie. */
struct route {
    char *seg;  /* literal text, or the placeholder's name without braces */
    bool param; /* a {placeholder} */
    bool endpoint;
    struct route **kids;
    size_t nkids;
    struct schema_method *methods[V_COUNT];
};

struct schema {
    json_t *doc;
    struct route *root;
    struct schema_method **methods;
    size_t nmethods;
    size_t cap;
};

/* ---- small helpers ---------------------------------------------------- */

/* Length of a valid UTF-8 sequence at p (as jansson accepts it), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* A JSON string of s; invalid UTF-8 becomes U+FFFD, as Perl's decode does,
 * so an error text quoting a hostile value can always be stored. */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq((const unsigned char *)s + i, len - i);
        if (n == 0) {
            buf_adds(&b, "\xEF\xBF\xBD");
            i++;
        } else {
            buf_add(&b, s + i, n);
            i += n;
        }
    }
    j = json_string(buf_str(&b));
    buf_release(&b);
    return j;
}

/* Perl truthiness of a schema attribute such as `optional`. */
static bool ptrue(const json_t *v)
{
    if (!v || json_is_null(v))
        return false;
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v))
        return json_integer_value(v) != 0;
    if (json_is_real(v))
        return json_real_value(v) != 0.0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return !(s[0] == '\0' || strcmp(s, "0") == 0);
    }
    return true;
}

static bool undefined(const json_t *v)
{
    return !v || json_is_null(v);
}

/* How Perl prints a scalar: strings as is, numbers like "%.15g". */
static char *perl_str(const json_t *v)
{
    if (json_is_string(v)) {
        /* memcpy, not strndup: the value may hold NUL bytes and callers use
         * json_string_length() as its length */
        size_t len = json_string_length(v);
        char *s = xmalloc(len + 1);
        memcpy(s, json_string_value(v), len);
        s[len] = '\0';
        return s;
    }
    if (json_is_integer(v))
        return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_real(v))
        return xasprintf("%.15g", json_real_value(v));
    return xstrdup("");
}

static long double perl_num(const json_t *v)
{
    if (json_is_number(v))
        return (long double)json_number_value(v);
    if (json_is_string(v))
        return strtold(json_string_value(v), NULL);
    return 0;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static char *join_path(const char *path, const char *key)
{
    return (path && *path) ? xasprintf("%s.%s", path, key) : xstrdup(key);
}

/* JSONSchema.pm add_error: a second error on the same path is appended with
 * a literal backslash-n (Perl's single-quoted '\n'). */
static void add_error(json_t *errors, const char *path, const char *msg)
{
    const char *key = (path && *path) ? path : "_root";
    json_t *old = json_object_get(errors, key);
    if (old) {
        char *joined = xasprintf("%s\\n%s", json_string_value(old), msg);
        json_object_set_new(errors, key, jstr(joined));
        free(joined);
    } else {
        json_object_set_new(errors, key, jstr(msg));
    }
}

static bool is_integer(const char *s, size_t len)
{
    return schema_regex_match("[+-]?\\d+", s, len) == 1;
}

static bool is_number(const char *s, size_t len)
{
    return schema_regex_match("[+-]?(\\d+\\.\\d+|\\d+\\.|\\.\\d+|\\d+)([eE][+-]?\\d+)?", s, len) ==
           1;
}

/* ---- validation ------------------------------------------------------- */

struct vctx {
    bool json_bools;
};

static void check_prop(json_t *value, json_t *sch, const char *path, json_t *errors,
                       const struct vctx *cx, const char *instance_type);

/* Indices PVE declares for its indexed option families ($MAX_NETS etc.). */
static const struct {
    const char *base;
    unsigned count;
} families[] = {
    {"net", 32},     {"ipconfig", 32},  {"scsi", 31},     {"virtio", 16}, {"sata", 6},
    {"ide", 4},      {"unused", 256},   {"hostpci", 16},  {"usb", 14},    {"serial", 4},
    {"parallel", 3}, {"numa", 8},       {"virtiofs", 10}, {"link", 8},    {"mp", 256},
    {"dev", 256},    {"acmedomain", 5},
};

/* The `x[n]` member of props that key ("net3") belongs to, or NULL. */
static json_t *family_lookup(json_t *props, const char *key)
{
    size_t len = strlen(key), d = len;
    while (d > 0 && key[d - 1] >= '0' && key[d - 1] <= '9')
        d--;
    if (d == 0 || d == len || (key[d] == '0' && d + 1 < len) || len - d > 6)
        return NULL;
    char *name = xasprintf("%.*s[n]", (int)d, key);
    json_t *sub = json_object_get(props, name);
    free(name);
    if (!sub)
        return NULL;
    unsigned long idx = strtoul(key + d, NULL, 10);
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        if (strlen(families[i].base) == d && strncmp(families[i].base, key, d) == 0)
            return idx < families[i].count ? sub : NULL;
    }
    return sub;
}

static bool is_family_key(const char *key)
{
    return str_ends(key, "[n]");
}

/* get_instance_type: the value of the sibling named by `type-property`. */
static const char *instance_type_of(json_t *props, const char *key, json_t *value)
{
    const char *tp =
        json_string_value(json_object_get(json_object_get(props, key), "type-property"));
    if (!tp)
        return NULL;
    return json_string_value(json_object_get(value, tp));
}

static bool types_contain(json_t *alt, const char *itype)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(alt, "instance-types"), i, t)
    {
        if (json_is_string(t) && strcmp(json_string_value(t), itype) == 0)
            return true;
    }
    return false;
}

static void check_requires(json_t *sub, json_t *value, const char *path, const char *child,
                           json_t *errors, const struct vctx *cx)
{
    json_t *req = json_object_get(sub, "requires");
    if (json_is_object(req)) {
        check_prop(value, req, path, errors, cx, NULL);
    } else if (json_is_string(req) && undefined(json_object_get(value, json_string_value(req)))) {
        char *rpath = join_path(path, json_string_value(req));
        char *msg = xasprintf("missing property - '%s' requires this property", child);
        add_error(errors, rpath, msg);
        free(rpath);
        free(msg);
    }
}

/* check_object. `addl` is additionalProperties (NULL: not defined). */
static void check_object(const char *path, json_t *props, json_t *value, json_t *addl,
                         json_t *errors, const struct vctx *cx)
{
    const char *k;
    json_t *sub, *v;

    if (!json_is_object(props)) {
        add_error(errors, path, "Invalid schema definition.");
        return;
    }
    if (!json_is_object(value)) {
        add_error(errors, path, "an object is required");
        return;
    }
    json_object_foreach(props, k, sub)
    {
        if (is_family_key(k))
            continue; /* checked per concrete key (net0, net1, ...) below */
        char *child = join_path(path, k);
        check_prop(json_object_get(value, k), sub, child, errors, cx,
                   instance_type_of(props, k, value));
        free(child);
    }
    json_object_foreach(value, k, v)
    {
        char *child = join_path(path, k);
        /* "net[n]" itself is no parameter name, only net0, net1, ... are */
        sub = is_family_key(k) ? NULL : json_object_get(props, k);
        if (!sub && (sub = family_lookup(props, k)))
            check_prop(v, sub, child, errors, cx, NULL);
        bool matched = sub != NULL;
        if (sub) {
            check_requires(sub, value, path, child, errors, cx);
            json_t *oneof = json_object_get(sub, "oneOf");
            if (json_is_array(oneof)) {
                const char *itype = instance_type_of(props, k, value);
                size_t i;
                json_t *alt;
                matched = false;
                json_array_foreach(oneof, i, alt)
                {
                    if (json_object_get(alt, "instance-types") &&
                        (!itype || !types_contain(alt, itype)))
                        continue;
                    matched = true;
                    break;
                }
            }
        }
        if (!matched) {
            if (addl && !json_is_null(addl) && !ptrue(addl))
                add_error(errors, child,
                          "property is not defined in schema and the schema "
                          "does not allow additional properties");
            else if (json_is_object(addl))
                check_prop(v, addl, child, errors, cx, NULL);
        }
        free(child);
    }
}

/* check_type. Only called with a defined value. */
static bool check_type(const char *path, json_t *type, json_t *value, json_t *errors,
                       const struct vctx *cx)
{
    char *msg = NULL;
    bool ok = true;

    if (!type)
        return true;
    if (json_is_array(type)) {
        struct buf names = BUF_INIT(BUF_UNLIMITED);
        size_t i;
        json_t *t;
        json_array_foreach(type, i, t)
        {
            json_t *tmp = json_object();
            bool this_ok = check_type(path, t, value, tmp, cx);
            json_decref(tmp);
            if (this_ok) {
                buf_release(&names);
                return true;
            }
            buf_printf(&names, "%s%s", i ? "|" : "", json_is_string(t) ? json_string_value(t) : "");
        }
        msg = xasprintf("type check ('%s') failed", buf_str(&names));
        buf_release(&names);
        ok = false;
        goto out;
    }
    if (json_is_object(type)) {
        json_t *tmp = json_object();
        check_prop(value, type, path, tmp, cx, NULL);
        ok = json_object_size(tmp) == 0;
        json_decref(tmp);
        if (!ok)
            msg = xstrdup("type check failed");
        goto out;
    }
    const char *t = json_string_value(type);
    if (!t || strcmp(t, "any") == 0)
        return true;
    if (strcmp(t, "null") == 0) {
        msg = xasprintf("type check ('%s') failed - value is not null", t);
    } else if (strcmp(t, "array") == 0 || strcmp(t, "object") == 0 || strcmp(t, "coderef") == 0) {
        bool good = (t[0] == 'a' && json_is_array(value)) || (t[0] == 'o' && json_is_object(value));
        if (!good)
            msg = xasprintf("type check ('%s') failed", t);
    } else if (json_is_array(value) || json_is_object(value) || json_is_boolean(value)) {
        /* a Perl reference: only a JSON boolean for a boolean, since 8.0.5 */
        if (!(strcmp(t, "boolean") == 0 && json_is_boolean(value) && cx->json_bools))
            msg = xasprintf("type check ('%s') failed - got %s", t,
                            json_is_array(value)    ? "ARRAY"
                            : json_is_object(value) ? "HASH"
                                                    : "JSON::PP::Boolean");
    } else {
        char *s = perl_str(value);
        size_t len = json_is_string(value) ? json_string_length(value) : strlen(s);
        bool good = true;
        if (strcmp(t, "boolean") == 0)
            good = strcmp(s, "1") == 0 || strcmp(s, "0") == 0;
        else if (strcmp(t, "integer") == 0)
            good = is_integer(s, len);
        else if (strcmp(t, "number") == 0)
            good = is_number(s, len);
        if (!good)
            msg = xasprintf("type check ('%s') failed - got '%s'", t, s);
        free(s);
    }
    ok = msg == NULL;
out:
    if (msg)
        add_error(errors, path, msg);
    free(msg);
    return ok;
}

static char *check_format(json_t *format, const char *s, size_t len, const char *path,
                          const struct vctx *cx);

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* parse_property_string: "k=v,k=v,default" against a hash format. Returns
 * NULL or the die text ("format error\n<path.key>: <msg>\n..."). */
static char *parse_property_string(json_t *format, const char *data, const char *path,
                                   const struct vctx *cx)
{
    json_t *res = json_object();
    json_t *errors = NULL;
    char *err = NULL;
    const char *default_key = NULL;
    char *copy = xstrdup(data);
    char *save = NULL;

    for (char *part = strtok_r(copy, ",", &save); part && !err; part = strtok_r(NULL, ",", &save)) {
        if (schema_regex_match("\\s*", part, strlen(part)) == 1)
            continue;
        char *eq = strchr(part, '=');
        size_t vlen = eq ? strlen(eq + 1) : 0;
        if (eq && vlen > 0 && eq[1 + vlen - 1] == '\n')
            vlen--; /* `(.+)$` leaves out a final newline */
        if (eq && eq != part && vlen > 0 && !memchr(eq + 1, '\n', vlen)) {
            char *k = xstrndup(part, (size_t)(eq - part));
            char *v = xstrndup(eq + 1, vlen);
            json_t *sub = json_object_get(format, k);
            const char *alias = json_string_value(json_object_get(sub, "alias"));
            if (!undefined(json_object_get(res, k))) {
                err = xasprintf("duplicate key in comma-separated list property: %s\n", k);
            } else if (alias) {
                const char *key_alias = json_string_value(json_object_get(sub, "keyAlias"));
                if (key_alias && !undefined(json_object_get(res, key_alias)))
                    err = xasprintf("key alias '%s' is already defined\n", key_alias);
                else if (key_alias)
                    json_object_set_new(res, key_alias, jstr(k));
                free(k);
                k = xstrdup(alias);
                sub = json_object_get(format, k);
            }
            if (!err && !sub)
                err = xasprintf("invalid key in comma-separated list property: %s\n", k);
            if (!err) {
                const char *t = json_string_value(json_object_get(sub, "type"));
                const char *val = v;
                if (t && strcmp(t, "boolean") == 0) {
                    /* parse_boolean, lenient inside property strings */
                    if (schema_regex_match("(?i:1|on|yes|true)", v, strlen(v)) == 1)
                        val = "1";
                    else if (schema_regex_match("(?i:0|off|no|false)", v, strlen(v)) == 1)
                        val = "0";
                }
                json_object_set_new(res, k, jstr(val));
            }
            free(k);
            free(v);
        } else if (!eq) {
            if (default_key) {
                err =
                    xasprintf("duplicate key in comma-separated list property: %s\n", default_key);
                break;
            }
            const char *key;
            json_t *fs;
            json_object_foreach(format, key, fs)
            {
                if (ptrue(json_object_get(fs, "default_key"))) {
                    default_key = key;
                    if (!ptrue(json_object_get(res, key)))
                        json_object_set_new(res, key, jstr(part));
                    else
                        err =
                            xasprintf("duplicate key in comma-separated list property: %s\n", key);
                    break;
                }
            }
            if (!default_key && !err)
                err = xstrdup("value without key, but schema does not define a default key\n");
        } else {
            err = xstrdup("missing key in comma-separated list property\n");
        }
    }
    if (err)
        goto out;

    errors = json_object();
    json_t *no = json_integer(0);
    check_object(path, format, res, no, errors, cx);
    json_decref(no);
    if (json_object_size(errors) > 0) {
        /* PVE::Exception stringify: message, then "<key>: <error>\n" each */
        struct buf b = BUF_INIT(BUF_UNLIMITED);
        size_t n = json_object_size(errors), i = 0;
        const char **keys = xmalloc(n * sizeof(*keys));
        const char *key;
        json_t *ev;
        json_object_foreach(errors, key, ev)
        {
            keys[i++] = key;
        }
        qsort(keys, n, sizeof(*keys), cmp_str);
        buf_adds(&b, "format error\n");
        for (i = 0; i < n; i++)
            buf_printf(&b, "%s: %s\n", keys[i],
                       json_string_value(json_object_get(errors, keys[i])));
        free(keys);
        err = buf_take(&b);
    }
out:
    json_decref(errors);
    json_decref(res);
    free(copy);
    return err;
}

/* check_format: a hash (inline property string) or a named format with an
 * optional -list / -opt suffix. */
static char *check_format(json_t *format, const char *s, size_t len, const char *path,
                          const struct vctx *cx)
{
    if (json_is_object(format))
        return parse_property_string(format, s, path, cx);
    const char *f = json_string_value(format);
    if (!f || strcmp(f, "regex") == 0)
        return NULL;

    size_t flen = strlen(f);
    enum { F_NONE, F_LIST, F_OPT } kind = F_NONE;
    if (flen > 5 && strcmp(f + flen - 5, "-list") == 0) {
        kind = F_LIST;
        flen -= 5;
    } else if (flen > 4 && strcmp(f + flen - 4, "-opt") == 0) {
        kind = F_OPT;
        flen -= 4;
    }
    char *name = xstrndup(f, flen);
    char *err = NULL;
    json_t *hash = schema_format_hash(name);
    if (hash) {
        if (kind != F_NONE)
            err = xasprintf("'-%s' format must have code ref, not hash\n",
                            kind == F_LIST ? "list" : "opt");
        else
            err = parse_property_string(hash, s, path, cx);
    } else if (kind == F_LIST) {
        json_t *items = json_array();
        size_t i;
        json_t *it;
        schema_split_list(s, len, items);
        json_array_foreach(items, i, it)
        {
            err = schema_format_verify(name, json_string_value(it), json_string_length(it));
            if (err)
                break;
        }
        json_decref(items);
    } else if (kind == F_OPT) {
        if (len > 0 && strcmp(s, "0") != 0)
            err = schema_format_verify(name, s, len);
    } else {
        err = schema_format_verify(name, s, len);
    }
    free(name);
    return err;
}

/* The checks check_prop applies to a plain scalar, in PVE's order. */
static void check_scalar(json_t *value, json_t *sch, const char *path, json_t *errors,
                         const struct vctx *cx)
{
    char *s = perl_str(value);
    size_t len = json_is_string(value) ? json_string_length(value) : strlen(s);
    char *msg = NULL;
    json_t *format = json_object_get(sch, "format");
    json_t *pattern = json_object_get(sch, "pattern");
    json_t *maxl = json_object_get(sch, "maxLength");
    json_t *minl = json_object_get(sch, "minLength");
    json_t *max = json_object_get(sch, "maximum");
    json_t *min = json_object_get(sch, "minimum");
    json_t *en = json_object_get(sch, "enum");

    if (ptrue(format)) {
        char *ferr = check_format(format, s, len, path, cx);
        if (ferr) {
            msg = xasprintf("invalid format - %s", ferr);
            free(ferr);
            goto out;
        }
    }
    if (ptrue(pattern) && json_is_string(pattern) &&
        schema_regex_match(json_string_value(pattern), s, len) == 0) {
        msg = xstrdup("value does not match the regex pattern");
        goto out;
    }
    if (!undefined(maxl) && (long double)utf8_chars(s, len) > perl_num(maxl)) {
        char *n = perl_str(maxl);
        msg = xasprintf("value may only be %s characters long", n);
        free(n);
        goto out;
    }
    if (!undefined(minl) && (long double)utf8_chars(s, len) < perl_num(minl)) {
        char *n = perl_str(minl);
        msg = xasprintf("value must be at least %s characters long", n);
        free(n);
        goto out;
    }
    if (is_number(s, len)) {
        long double x = strtold(s, NULL);
        if (!undefined(max) && x > perl_num(max)) {
            char *n = perl_str(max);
            msg = xasprintf("value must have a maximum value of %s", n);
            free(n);
            goto out;
        }
        if (!undefined(min) && x < perl_num(min)) {
            char *n = perl_str(min);
            msg = xasprintf("value must have a minimum value of %s", n);
            free(n);
            goto out;
        }
    }
    if (ptrue(en) && json_is_array(en)) {
        struct buf list = BUF_INIT(BUF_UNLIMITED);
        bool found = false;
        size_t i;
        json_t *ev;
        json_array_foreach(en, i, ev)
        {
            char *e = perl_str(ev);
            found = found || strcmp(e, s) == 0;
            buf_printf(&list, "%s%s", i ? ", " : "", e);
            free(e);
        }
        if (!found)
            msg = xasprintf("value '%s' does not have a value in the enumeration '%s'", s,
                            buf_str(&list));
        buf_release(&list);
    }
out:
    if (msg)
        add_error(errors, path, msg);
    free(msg);
    free(s);
}

/* A repeated form key (JSON array of scalars) for a "-list" format becomes
 * one comma-separated string; NULL when that does not apply. */
static json_t *join_list_value(json_t *value, json_t *sch)
{
    const char *f = json_string_value(json_object_get(sch, "format"));
    const char *t = json_string_value(json_object_get(sch, "type"));
    if (!json_is_array(value) || !f || !str_ends(f, "-list") || (t && strcmp(t, "array") == 0))
        return NULL;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    size_t i;
    json_t *el;
    json_array_foreach(value, i, el)
    {
        if (!json_is_string(el) && !json_is_number(el)) {
            buf_release(&b);
            return NULL;
        }
        char *s = perl_str(el);
        buf_printf(&b, "%s%s", i ? "," : "", s);
        free(s);
    }
    json_t *j = jstr(buf_str(&b));
    buf_release(&b);
    return j;
}

/* The oneOf part of check_prop; returns whether a missing value is fine. */
static bool check_oneof(json_t *value, json_t *sch, const char *path, json_t *errors,
                        const struct vctx *cx, const char *itype)
{
    json_t *oneof = json_object_get(sch, "oneOf");
    size_t i;
    json_t *alt;
    bool optional_for_type = false;

    if (json_object_get(sch, "type-property")) {
        optional_for_type = true;
        json_array_foreach(oneof, i, alt)
        {
            if (!itype)
                break; /* no instance type: treated as optional */
            if (!json_object_get(alt, "instance-types")) {
                add_error(errors, path, "missing 'instance-types' in oneOf alternative");
                return true;
            }
            if (!types_contain(alt, itype))
                continue;
            optional_for_type = ptrue(json_object_get(alt, "optional"));
            check_prop(value, alt, path, errors, cx, NULL);
        }
        return optional_for_type;
    }
    json_t *first = NULL;
    json_array_foreach(oneof, i, alt)
    {
        json_t *tmp = json_object();
        char *apath = xasprintf("%s.oneOf[%zu]", path, i);
        check_prop(value, alt, apath, tmp, cx, NULL);
        free(apath);
        if (json_object_size(tmp) == 0) {
            json_decref(tmp);
            json_decref(first);
            return false;
        }
        if (!first)
            first = tmp;
        else
            json_decref(tmp);
    }
    if (first)
        json_object_update(errors, first);
    json_decref(first);
    return false;
}

/* check_prop. */
static void check_prop(json_t *value, json_t *sch, const char *path, json_t *errors,
                       const struct vctx *cx, const char *instance_type)
{
    json_t *joined = NULL;
    bool optional_for_type = false;

    if (!json_is_object(sch)) {
        add_error(errors, path, "Invalid schema definition.");
        return;
    }
    if (json_is_array(json_object_get(sch, "oneOf")))
        optional_for_type = check_oneof(value, sch, path, errors, cx, instance_type);

    const char *type = json_string_value(json_object_get(sch, "type"));
    if (undefined(value)) {
        if (type && strcmp(type, "null") == 0)
            return;
        if (!ptrue(json_object_get(sch, "optional")) && !ptrue(json_object_get(sch, "alias")) &&
            !ptrue(json_object_get(sch, "group")) && !optional_for_type)
            add_error(errors, path, "property is missing and it is not optional");
        return;
    }
    if ((joined = join_list_value(value, sch)))
        value = joined;
    if (!check_type(path, json_object_get(sch, "type"), value, errors, cx))
        goto out;

    if (json_is_array(value)) {
        json_t *items = json_object_get(sch, "items");
        size_t i;
        json_t *el;
        if (json_is_object(items)) {
            json_array_foreach(value, i, el)
            {
                char *ipath = xasprintf("%s[%zu]", path, i);
                check_prop(el, items, ipath, errors, cx, NULL);
                free(ipath);
            }
        }
    } else if (json_is_object(value)) {
        json_t *props = json_object_get(sch, "properties");
        json_t *addl = json_object_get(sch, "additionalProperties");
        if (ptrue(props) || ptrue(addl)) {
            json_t *empty = props ? NULL : json_object();
            check_object(path, props ? props : empty, value, addl, errors, cx);
            json_decref(empty);
        }
    } else if (!json_is_boolean(value)) {
        check_scalar(value, sch, path, errors, cx);
    }
out:
    json_decref(joined);
}

int schema_check_params(const schema_method *m, json_t *params, bool json_bools, json_t *errors)
{
    struct vctx cx = {.json_bools = json_bools};
    json_t *found = json_object();
    json_t *empty = params ? NULL : json_object();
    int rc = SCHEMA_OK;

    if (m->parameters)
        check_prop(params ? params : empty, m->parameters, "", found, &cx, NULL);
    if (json_object_size(found) > 0) {
        if (errors)
            json_object_update(errors, found);
        rc = SCHEMA_INVALID;
    }
    json_decref(found);
    json_decref(empty);
    return rc;
}

/* The first error as "<path>: <message>". */
static char *first_error(json_t *errors)
{
    void *it = json_object_iter(errors);
    if (!it)
        return NULL;
    return xasprintf("%s: %s", json_object_iter_key(it),
                     json_string_value(json_object_iter_value(it)));
}

bool schema_check_returns(const schema_method *m, json_t *data, char **err)
{
    json_t *rs = m->returns;
    struct vctx cx = {.json_bools = true};

    if (err)
        *err = NULL;
    /* a returns schema without a type documents nothing checkable */
    if (!rs || (undefined(data) && !json_object_get(rs, "type")))
        return true;
    json_t *errors = json_object();
    check_prop(data, rs, "data", errors, &cx, NULL);
    bool ok = json_object_size(errors) == 0;
    if (!ok && err)
        *err = first_error(errors);
    json_decref(errors);
    return ok;
}

char *schema_check_value(json_t *prop_schema, json_t *value, bool json_bools)
{
    struct vctx cx = {.json_bools = json_bools};
    json_t *errors = json_object();
    char *msg = NULL;

    check_prop(value, prop_schema, "", errors, &cx, NULL);
    json_t *root = json_object_get(errors, "_root");
    if (root)
        msg = xstrdup(json_string_value(root));
    else
        msg = first_error(errors);
    json_decref(errors);
    return msg;
}

/* ---- loading and routing ---------------------------------------------- */

static struct route *route_new(const char *seg, size_t n, bool param)
{
    struct route *r = xcalloc(1, sizeof(*r));
    r->seg = xstrndup(seg, n);
    r->param = param;
    return r;
}

static void route_free(struct route *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nkids; i++)
        route_free(r->kids[i]);
    free(r->kids);
    free(r->seg);
    free(r);
}

static struct route *route_child(struct route *r, const char *seg, size_t n)
{
    bool param = n >= 2 && seg[0] == '{' && seg[n - 1] == '}';
    const char *name = param ? seg + 1 : seg;
    size_t nlen = param ? n - 2 : n;

    for (size_t i = 0; i < r->nkids; i++) {
        struct route *k = r->kids[i];
        if (k->param == param && strlen(k->seg) == nlen && memcmp(k->seg, name, nlen) == 0)
            return k;
    }
    r->kids = xrealloc(r->kids, (r->nkids + 1) * sizeof(*r->kids));
    r->kids[r->nkids] = route_new(name, nlen, param);
    return r->kids[r->nkids++];
}

static struct route *route_insert(struct route *root, const char *path)
{
    struct route *r = root;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        if (e > p)
            r = route_child(r, p, (size_t)(e - p));
        p = e;
    }
    return r;
}

static int verb_index(const char *verb)
{
    for (int i = 0; i < V_COUNT; i++)
        if (strcmp(verb_names[i], verb) == 0)
            return i;
    return -1;
}

/* The methods whose PVE source declares `parameters => { additionalProperties
 * => 0 }` and no `properties` hash at all. JSONSchema.pm's check_prop checks
 * an object against its properties only `if ($schema->{properties} ||
 * $schema->{additionalProperties})`: an empty `properties => {}` is a true
 * hash reference, so a method declaring it refuses every parameter ("property
 * is not defined in schema ..."), while one without it takes any. The apidoc
 * (RESTHandler's api_clone_schema copies `properties` member by member) drops
 * an empty hash, so both read `{"additionalProperties":0}` there. Every other
 * such method of 8.4 and 9.1 declares `properties => {}` (GET /version,
 * /cluster/tasks, /cluster/status, /nodes, ...), as the sources of both
 * (stable-bookworm and master) show: it gets it back at load, so that it
 * refuses unknown parameters as PVE does, from a compact or a full apidoc. */
static const struct {
    const char *verb, *path;
} no_properties[] = {
    {"GET", "/access/ticket"},            /* access-control API2/AccessControl.pm get_ticket */
    {"GET", "/cluster/firewall"},         /* firewall API2/Firewall/Cluster.pm index */
    {"GET", "/cluster/firewall/options"}, /* ... get_options */
    {"GET", "/cluster/firewall/macros"},  /* ... get_macros */
    /* manager API2/Cluster/Notifications.pm get_matcher_field_values */
    {"GET", "/cluster/notifications/matcher-field-values"},
    {"PUT", "/cluster/sdn"}, /* network API2/Network/SDN.pm reload (8.x; 9.x declares some) */
};

/* Gives a method's parameters the empty `properties` its apidoc dropped. */
static void restore_properties(const char *path, const char *verb, json_t *params)
{
    if (!json_is_object(params) || json_object_get(params, "properties"))
        return;
    for (size_t i = 0; i < sizeof(no_properties) / sizeof(no_properties[0]); i++)
        if (strcmp(no_properties[i].verb, verb) == 0 && strcmp(no_properties[i].path, path) == 0)
            return;
    json_object_set_new(params, "properties", json_object());
}

static void add_method(schema *s, struct route *r, const char *path, const char *verb, json_t *info)
{
    int vi = verb_index(verb);
    if (vi < 0 || !json_is_object(info))
        return;
    struct schema_method *m = xcalloc(1, sizeof(*m));
    json_t *at = json_object_get(info, "allowtoken");
    m->path = path;
    m->verb = verb_names[vi];
    m->name = json_string_value(json_object_get(info, "name"));
    m->proxyto = json_string_value(json_object_get(info, "proxyto"));
    m->is_protected = ptrue(json_object_get(info, "protected"));
    m->allowtoken = at ? ptrue(at) : true; /* PVE's default is 1 */
    m->parameters = json_object_get(info, "parameters");
    restore_properties(path, m->verb, m->parameters);
    m->returns = json_object_get(info, "returns");
    m->permissions = json_object_get(info, "permissions");
    if (!json_is_object(m->permissions))
        m->permissions = NULL;
    if (s->nmethods == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->methods = xrealloc(s->methods, s->cap * sizeof(*s->methods));
    }
    s->methods[s->nmethods++] = m;
    r->methods[vi] = m;
}

static void index_node(schema *s, json_t *node)
{
    const char *path = json_string_value(json_object_get(node, "path"));
    if (path) {
        struct route *r = route_insert(s->root, path);
        const char *verb;
        json_t *info;
        r->endpoint = true;
        json_object_foreach(json_object_get(node, "info"), verb, info)
        {
            add_method(s, r, path, verb, info);
        }
    }
    size_t i;
    json_t *kid;
    json_array_foreach(json_object_get(node, "children"), i, kid)
    {
        index_node(s, kid);
    }
}

schema *schema_load(const char *path, char **err)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        if (err)
            *err = xasprintf("%s: %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    if (!json_is_array(doc)) {
        if (err)
            *err = xasprintf("%s: not an apidoc array of path nodes", path);
        json_decref(doc);
        return NULL;
    }
    schema *s = xcalloc(1, sizeof(*s));
    s->doc = doc;
    s->root = route_new("", 0, false);
    size_t i;
    json_t *node;
    json_array_foreach(doc, i, node)
    {
        index_node(s, node);
    }
    return s;
}

void schema_free(schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nmethods; i++)
        free(s->methods[i]);
    free(s->methods);
    route_free(s->root);
    json_decref(s->doc);
    free(s);
}

/* Depth-first match, literal children before placeholders, backtracking
 * when a literal branch does not lead to a complete path. */
static struct route *route_match(struct route *r, char **segs, size_t n, size_t i,
                                 struct route **chosen)
{
    if (i == n)
        return r->endpoint ? r : NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < r->nkids; k++) {
            struct route *kid = r->kids[k];
            if (kid->param != (pass == 1))
                continue;
            if (!kid->param && strcmp(kid->seg, segs[i]) != 0)
                continue;
            chosen[i] = kid;
            struct route *hit = route_match(kid, segs, n, i + 1, chosen);
            if (hit)
                return hit;
        }
    }
    return NULL;
}

int schema_find(const schema *s, const char *verb, const char *path, const schema_method **out,
                json_t *path_params)
{
    char *copy = xstrdup(path ? path : "");
    size_t n = 0, cap = 8;
    char **segs = xmalloc(cap * sizeof(*segs));
    char *save = NULL;
    int rc = SCHEMA_NO_PATH;

    for (char *t = strtok_r(copy, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == cap) {
            cap *= 2;
            segs = xrealloc(segs, cap * sizeof(*segs));
        }
        segs[n++] = t;
    }
    struct route **chosen = xcalloc(n ? n : 1, sizeof(*chosen));
    struct route *hit = route_match(s->root, segs, n, 0, chosen);
    if (!hit)
        goto out;
    int vi = verb ? verb_index(verb) : -1;
    if (vi < 0 || !hit->methods[vi]) {
        rc = SCHEMA_NO_METHOD;
        goto out;
    }
    if (out)
        *out = hit->methods[vi];
    if (path_params) {
        for (size_t i = 0; i < n; i++)
            if (chosen[i]->param)
                json_object_set_new(path_params, chosen[i]->seg, jstr(segs[i]));
    }
    rc = SCHEMA_OK;
out:
    free(chosen);
    free(segs);
    free(copy);
    return rc;
}

const char *schema_method_path(const schema_method *m)
{
    return m->path;
}

const char *schema_method_verb(const schema_method *m)
{
    return m->verb;
}

const char *schema_method_name(const schema_method *m)
{
    return m->name;
}

bool schema_method_protected(const schema_method *m)
{
    return m->is_protected;
}

bool schema_method_allowtoken(const schema_method *m)
{
    return m->allowtoken;
}

const char *schema_method_proxyto(const schema_method *m)
{
    return m->proxyto;
}

json_t *schema_method_parameters(const schema_method *m)
{
    return m->parameters;
}

json_t *schema_method_returns(const schema_method *m)
{
    return m->returns;
}

json_t *schema_method_permissions(const schema_method *m)
{
    return m->permissions;
}
