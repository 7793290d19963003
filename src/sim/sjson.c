/* sjson: JSON text into a buf with jansson's compact output. */
#include "sim/sjson.h"

#include "common/jsonw.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void sj_lit(struct buf *b, const char *lit)
{
    jsonw_raw(b, lit, strlen(lit));
}

void sj_str(struct buf *b, const char *s)
{
    jsonw_str(b, s, strlen(s));
}

void sj_int(struct buf *b, int64_t v)
{
    jsonw_int(b, v);
}

/* jansson's jsonp_dtostr with its default precision (17): "%.17g", then
 * ".0" when the text looks like an integer, then the exponent without '+'
 * or leading zeros ("1e+05" -> "1e5"). */
void sj_real(struct buf *b, double v)
{
    char t[64];
    int n = snprintf(t, sizeof t - 3, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof t - 3)
        n = snprintf(t, sizeof t, "0.0");
    if (!strpbrk(t, ".eEn")) { /* "nan"/"inf" never reach here: jansson refuses them */
        memcpy(t + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(t, 'e');
    if (e) {
        char *p = e + 1, *q = p;
        if (*q == '+')
            q++;
        else if (*q == '-')
            p++, q++;
        while (*q == '0' && q[1])
            q++;
        memmove(p, q, strlen(q) + 1);
        n = (int)strlen(t);
    }
    jsonw_raw(b, t, (size_t)n);
}

void sj_json(struct buf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        buf_addc(b, '{');
        json_object_foreach((json_t *)v, k, x)
        {
            if (!first)
                buf_addc(b, ',');
            first = false;
            jsonw_str(b, k, strlen(k));
            buf_addc(b, ':');
            sj_json(b, x);
        }
        buf_addc(b, '}');
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        buf_addc(b, '[');
        json_array_foreach((json_t *)v, i, x)
        {
            if (i)
                buf_addc(b, ',');
            sj_json(b, x);
        }
        buf_addc(b, ']');
        break;
    }
    case JSON_STRING:
        jsonw_str(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        jsonw_int(b, json_integer_value(v));
        break;
    case JSON_REAL:
        sj_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sj_lit(b, "true");
        break;
    case JSON_FALSE:
        sj_lit(b, "false");
        break;
    default:
        sj_lit(b, "null");
        break;
    }
}

char *sj_reserve(struct buf *b, size_t worst)
{
    return buf_space(b, worst); /* never NULL: the buffers here have no cap */
}

void sj_commit(struct buf *b, char *start, char *end)
{
    buf_commit(b, (size_t)(end - start));
}

char *sj_put_mem(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
