/* log: one line per event on stderr, as logfmt (default) or JSON.
 *
 *   log_info("sim", "node %s set %s", name, state);
 *   -> ts=2026-11-23T23:40:01.123Z level=info sub=sim msg="node sv1 set offline"
 *
 * The macros skip formatting when the level is filtered out. Secrets never go
 * into log lines: callers pass only redacted values (see pve auth code).
 * Thread-safe: each line is written with one write(2). */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON = 1 };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_set_format(enum log_format fmt);
/* Parse "debug", "info", "warn", "error", "off"; returns -1 when unknown. */
int log_level_parse(const char *s);

void log_write(enum log_level lvl, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, sub, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= log_get_level())                                                              \
            log_write((lvl), (sub), __VA_ARGS__);                                                  \
    } while (0)
#define log_debug(sub, ...) log_at(LOG_DEBUG, sub, __VA_ARGS__)
#define log_info(sub, ...) log_at(LOG_INFO, sub, __VA_ARGS__)
#define log_warn(sub, ...) log_at(LOG_WARN, sub, __VA_ARGS__)
#define log_error(sub, ...) log_at(LOG_ERROR, sub, __VA_ARGS__)

#endif
