#include "common/log.h"
#include "common/buf.h"
#include "common/jsonw.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static _Atomic int g_format = LOG_FMT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_set_level(enum log_level lvl)
{
    g_level = lvl;
}

enum log_level log_get_level(void)
{
    return (enum log_level)g_level;
}

void log_set_format(enum log_format fmt)
{
    g_format = fmt;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

static void timestamp(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(tv.tv_usec / 1000));
}

/* logfmt quoting: quote when the value has spaces, quotes, '=' or bytes
 * that are not printable ASCII. Log lines often quote the network (paths,
 * header values, Proxmox's texts): control characters are escaped (\n,
 * \xHH) so a line is always one line, and bytes that are not UTF-8 are
 * written as \xHH too. */
static void add_logfmt_value(struct buf *b, const char *v)
{
    bool plain = *v != '\0';
    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        plain = *p > ' ' && *p < 0x7f && *p != '"' && *p != '=' && *p != '\\';
    if (plain) {
        buf_adds(b, v);
        return;
    }
    buf_addc(b, '"');
    size_t n = strlen(v);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            buf_addc(b, '\\');
            buf_addc(b, (char)c);
            i++;
        } else if (c == '\n') {
            buf_adds(b, "\\n");
            i++;
        } else if (c < ' ' || c == 0x7f) {
            buf_printf(b, "\\x%02x", c);
            i++;
        } else if (c < 0x80) {
            buf_addc(b, (char)c);
            i++;
        } else {
            size_t k = 1; /* a whole valid UTF-8 sequence passes as it is */
            while (k < 4 && i + k < n && ((unsigned char)v[i + k] & 0xC0) == 0x80)
                k++;
            while (k > 0 && !jsonw_utf8_valid(v + i, k))
                k--;
            if (k) {
                buf_add(b, v + i, k);
                i += k;
            } else {
                buf_printf(b, "\\x%02x", c);
                i++;
            }
        }
    }
    buf_addc(b, '"');
}

void log_write(enum log_level lvl, const char *sub, const char *fmt, ...)
{
    char ts[40], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    timestamp(ts, sizeof ts);

    struct buf b = BUF_INIT(32768); /* a 2 KiB message escaped 6 times over fits */
    if (g_format == LOG_FMT_JSON) {
        /* jsonw, not jansson: a message that is not UTF-8 (a request's
         * bytes, a cut multi-byte character) gets U+FFFD, not a NULL */
        buf_adds(&b, "{\"ts\":");
        jsonw_str(&b, ts, strlen(ts));
        buf_adds(&b, ",\"level\":");
        jsonw_str(&b, level_names[lvl], strlen(level_names[lvl]));
        buf_adds(&b, ",\"sub\":");
        jsonw_str(&b, sub, strlen(sub));
        buf_adds(&b, ",\"msg\":");
        jsonw_str(&b, msg, strlen(msg));
        buf_addc(&b, '}');
    } else {
        buf_printf(&b, "ts=%s level=%s sub=%s msg=", ts, level_names[lvl], sub);
        add_logfmt_value(&b, msg);
    }
    buf_addc(&b, '\n');
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    buf_release(&b);
}
