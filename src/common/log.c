#include "common/log.h"
#include "common/buf.h"

#include <jansson.h>
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

/* logfmt quoting: quote when the value has spaces, quotes or '='. */
static void add_logfmt_value(struct buf *b, const char *v)
{
    if (*v && !strpbrk(v, " \"=\t\n\\")) {
        buf_adds(b, v);
        return;
    }
    buf_addc(b, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            buf_addc(b, '\\');
        if (*v == '\n') {
            buf_adds(b, "\\n");
            continue;
        }
        buf_addc(b, *v);
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

    struct buf b = BUF_INIT(8192);
    if (g_format == LOG_FMT_JSON) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "level", level_names[lvl], "sub", sub,
                              "msg", msg);
        char *s = json_dumps(o, JSON_COMPACT);
        buf_adds(&b, s);
        free(s);
        json_decref(o);
    } else {
        buf_printf(&b, "ts=%s level=%s sub=%s msg=", ts, level_names[lvl], sub);
        add_logfmt_value(&b, msg);
    }
    buf_addc(&b, '\n');
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    buf_release(&b);
}
