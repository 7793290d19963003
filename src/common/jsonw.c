#include "common/jsonw.h"

#include "common/xalloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char HEX[] = "0123456789ABCDEF";

/* The length of the valid UTF-8 sequence that starts at s[0] (a byte >=
 * 0x80), or 0 when it is not one (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, nothing cut short). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

bool jsonw_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_seq(u + i, n - i);
        if (!len)
            return false;
        i += len;
    }
    return true;
}

size_t jsonw_utf8_fit(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    for (;;) {
        size_t len = u[i] < 0x80 ? 1 : utf8_seq(u + i, n - i);
        if (!len)
            len = 1; /* a stray byte stands alone: cutting after it cuts nothing */
        if (i + len > max)
            return i;
        i += len;
    }
}

void jsonw_utf8_scrub(char *s, size_t n)
{
    unsigned char *u = (unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = u[i] < 0x80 ? 1 : utf8_seq(u + i, n - i);
        if (!len) {
            u[i] = '?';
            len = 1;
        }
        i += len;
    }
}

/* Whether none of the 8 bytes in w needs a look: all ASCII (< 0x80), none
 * a control character (< 0x20), a quote or a backslash. Word-at-a-time
 * tests for "some byte < k" (Hacker's Delight 6-1 style), exact here
 * because bytes >= 0x80 are refused first. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
static bool plain8(uint64_t w)
{
    uint64_t quote = w ^ (ONES * '"'), bslash = w ^ (ONES * '\\');
    uint64_t bad = w | (w - ONES * 0x20) | ((quote - ONES) & ~quote) | ((bslash - ONES) & ~bslash);
    return (bad & HIGHS) == 0;
}

size_t jsonw_escape(char *dst, const char *src, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0;
    size_t i = 0;
    while (i < n) {
        /* runs of plain ASCII, 8 bytes at a time */
        uint64_t w;
        while (n - i >= 8 && (memcpy(&w, s + i, 8), plain8(w))) {
            memcpy(dst + o, &w, 8);
            o += 8;
            i += 8;
        }
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            dst[o++] = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(s + i, n - i);
            if (k) {
                memcpy(dst + o, s + i, k);
                o += k;
                i += k;
            } else { /* U+FFFD REPLACEMENT CHARACTER */
                memcpy(dst + o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            }
            continue;
        }
        dst[o++] = '\\';
        switch (c) {
        case '"':
        case '\\':
            dst[o++] = (char)c;
            break;
        case '\b':
            dst[o++] = 'b';
            break;
        case '\f':
            dst[o++] = 'f';
            break;
        case '\n':
            dst[o++] = 'n';
            break;
        case '\r':
            dst[o++] = 'r';
            break;
        case '\t':
            dst[o++] = 't';
            break;
        default:
            memcpy(dst + o, "u00", 3);
            dst[o + 3] = HEX[c >> 4];
            dst[o + 4] = HEX[c & 15];
            o += 5;
            break;
        }
        i++;
    }
    return o;
}

int jsonw_raw(struct buf *b, const char *s, size_t n)
{
    return buf_add(b, s, n);
}

char *jsonw_put_str(char *p, const char *s, size_t n)
{
    *p++ = '"';
    p += jsonw_escape(p, s, n);
    *p++ = '"';
    return p;
}

int jsonw_str(struct buf *b, const char *s, size_t n)
{
    if (n > (BUF_UNLIMITED - 2) / 6)
        return BUF_TOOBIG;
    char *p = buf_space(b, JSONW_STR_MAX(n));
    if (!p) {
        /* The worst case passes the cap, the real text may not: escape
         * into scratch memory and append what it really is. */
        char *t = xmalloc(JSONW_STR_MAX(n));
        int rc = buf_add(b, t, (size_t)(jsonw_put_str(t, s, n) - t));
        free(t);
        return rc;
    }
    buf_commit(b, (size_t)(jsonw_put_str(p, s, n) - p));
    return BUF_OK;
}

/* Decimal digits of v into the end of out[20]; returns where they start. */
static char *u64_digits(char *end, uint64_t v)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

char *jsonw_put_int(char *p, int64_t v)
{
    char tmp[JSONW_INT_MAX];
    char *end = tmp + sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *d = u64_digits(end, u);
    if (v < 0)
        *--d = '-';
    size_t n = (size_t)(end - d);
    memcpy(p, d, n);
    return p + n;
}

int jsonw_int(struct buf *b, int64_t v)
{
    char tmp[JSONW_INT_MAX];
    return buf_add(b, tmp, (size_t)(jsonw_put_int(tmp, v) - tmp));
}

/* Days since 1970-01-01 into a proleptic Gregorian date (H. Hinnant's
 * civil_from_days). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static char *two(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

size_t jsonw_fmt_time(char out[JSONW_TIME_MAX + 1], int64_t ms)
{
    int64_t secs = ms / 1000, days = secs / 86400;
    unsigned sod = (unsigned)(secs % 86400), milli = (unsigned)(ms % 1000);
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    /* ms > 0, so the year is 1970 or later: at least four digits. */
    char *p = out;
    if (y < 10000) {
        p = two(two(p, (unsigned)y / 100), (unsigned)y % 100);
    } else {
        char yd[20];
        char *ys = u64_digits(yd + sizeof yd, (uint64_t)y);
        size_t yl = (size_t)(yd + sizeof yd - ys);
        memcpy(p, ys, yl);
        p += yl;
    }
    *p++ = '-';
    p = two(p, mo);
    *p++ = '-';
    p = two(p, d);
    *p++ = 'T';
    p = two(p, sod / 3600);
    *p++ = ':';
    p = two(p, sod / 60 % 60);
    *p++ = ':';
    p = two(p, sod % 60);
    *p++ = '.';
    *p++ = (char)('0' + milli / 100);
    p = two(p, milli % 100);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

char *jsonw_put_time(char *p, int64_t ms)
{
    if (ms <= 0)
        return JSONW_PUT_LIT(p, "null");
    /* The NUL jsonw_fmt_time ends with falls where the closing quote goes. */
    *p++ = '"';
    p += jsonw_fmt_time(p, ms);
    *p++ = '"';
    return p;
}

int jsonw_time(struct buf *b, int64_t ms)
{
    char t[JSONW_TIME_LIT_MAX];
    return buf_add(b, t, (size_t)(jsonw_put_time(t, ms) - t));
}
