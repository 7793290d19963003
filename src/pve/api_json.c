#include "pve/api_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pj_str(char *dst, size_t len, json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_string(v))
        snprintf(dst, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(dst, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(dst, len, "%g", json_real_value(v));
    else if (len)
        dst[0] = '\0';
}

int64_t pj_int(json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long n = strtoll(s, &end, 10);
        if (end != s && *end == '\0')
            return n;
    }
    if (json_is_boolean(v))
        return json_is_true(v);
    return dflt;
}

double pj_num(json_t *obj, const char *key, double dflt)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v)) {
        char *end;
        double d = strtod(json_string_value(v), &end);
        if (end != json_string_value(v) && *end == '\0')
            return d;
    }
    return dflt;
}

bool pj_bool(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_number(v))
        return json_number_value(v) != 0;
    const char *s = json_string_value(v);
    return s && strcmp(s, "1") == 0;
}

/* ---- one element at a time ------------------------------------------------ */

static size_t skip_ws(const char *p, size_t len, size_t i)
{
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* Parse the one JSON value at p[*i..len) (any type) and move *i past it;
 * NULL on a syntax error. jansson stops right after the value and says how
 * far it read (error.position, exact for a buffer). */
static json_t *value_at(const char *p, size_t len, size_t *i)
{
    json_error_t je;
    json_t *v = json_loadb(p + *i, len - *i, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
    if (v)
        *i += (size_t)je.position;
    return v;
}

/* The array at p[*i] ('[' already checked): every element to fn. */
static int each_elem(const char *p, size_t len, size_t *i, pj_elem_fn fn, void *ud)
{
    size_t k = skip_ws(p, len, *i + 1);
    if (k < len && p[k] == ']') {
        *i = k + 1;
        return 0;
    }
    for (;;) {
        json_t *e = value_at(p, len, &k);
        if (!e)
            return PJ_E_SYNTAX;
        int rc = fn(e, ud);
        json_decref(e);
        if (rc)
            return rc;
        k = skip_ws(p, len, k);
        if (k < len && p[k] == ']') {
            *i = k + 1;
            return 0;
        }
        if (k >= len || p[k] != ',')
            return PJ_E_SYNTAX;
        k = skip_ws(p, len, k + 1);
    }
}

int pj_each_data(const char *p, size_t len, pj_elem_fn fn, void *ud)
{
    bool seen = false;
    size_t i = skip_ws(p, len, 0);
    if (i >= len || p[i] != '{')
        return PJ_E_SYNTAX;
    i = skip_ws(p, len, i + 1);
    if (i < len && p[i] == '}') {
        i++;
        goto end;
    }
    for (;;) {
        json_t *key = value_at(p, len, &i);
        bool is_data = json_is_string(key) && strcmp(json_string_value(key), "data") == 0;
        bool is_key = json_is_string(key);
        json_decref(key);
        if (!is_key)
            return PJ_E_SYNTAX;
        i = skip_ws(p, len, i);
        if (i >= len || p[i] != ':')
            return PJ_E_SYNTAX;
        i = skip_ws(p, len, i + 1);
        if (is_data && !seen && i < len && p[i] == '[') {
            seen = true;
            int rc = each_elem(p, len, &i, fn, ud);
            if (rc)
                return rc;
        } else { /* another member (message, errors, ...) or a second "data" */
            json_t *v = value_at(p, len, &i);
            if (!v)
                return PJ_E_SYNTAX;
            json_decref(v);
            if (is_data)
                return PJ_E_SHAPE; /* null, an object, or twice */
        }
        i = skip_ws(p, len, i);
        if (i < len && p[i] == '}') {
            i++;
            break;
        }
        if (i >= len || p[i] != ',')
            return PJ_E_SYNTAX;
        i = skip_ws(p, len, i + 1);
    }
end:
    if (skip_ws(p, len, i) != len)
        return PJ_E_SYNTAX;
    return seen ? 0 : PJ_E_SHAPE;
}
