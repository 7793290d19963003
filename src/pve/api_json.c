#include "pve/api_json.h"

#include "common/jsonw.h"
#include "common/xalloc.h"

#include <errno.h>
#include <yajl/yajl_parse.h>
#include <math.h>
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

bool pj_stream(const yajl_callbacks *cb, void *ctx, const char *body, size_t len)
{
    yajl_handle h = yajl_alloc(cb, NULL, ctx);
    if (!h)
        abort(); /* allocation failure */
    yajl_status st = yajl_parse(h, (const unsigned char *)(body ? body : ""), body ? len : 0);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    return st == yajl_status_ok;
}

bool pj_text_ok(const unsigned char *s, size_t n)
{
    return !memchr(s, '\0', n) && jsonw_utf8_valid((const char *)s, n);
}

/* yajl's own conversion refuses INT64_MIN and overflows inside on some
 * 19-digit inputs. strtod reads '.' as the decimal point in the C locale,
 * which proxd never leaves (no setlocale anywhere). */
int pj_number(const char *s, size_t n, long long *i, double *d)
{
    char small[64], *t = n < sizeof small ? small : xmalloc(n + 1);
    memcpy(t, s, n);
    t[n] = '\0';
    bool real = strpbrk(t, ".eE") != NULL;
    *i = 0;
    *d = 0;
    errno = 0;
    if (real)
        *d = strtod(t, NULL);
    else
        *i = strtoll(t, NULL, 10);
    bool over = errno == ERANGE && (!real || fabs(*d) == HUGE_VAL);
    if (t != small)
        free(t);
    return over ? -1 : real;
}
