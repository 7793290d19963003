/* util: small helpers shared by every module: clocks, percent-encoding,
 * base64, string checks. All functions are thread-safe and allocate with
 * xalloc (results are owned by the caller). */
#ifndef COMMON_UTIL_H
#define COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>
#include <time.h>

#include "common/buf.h"

/* Milliseconds on the monotonic clock (for timeouts and durations). */
int64_t mono_ms(void);
/* Microseconds on the monotonic clock (for latencies). */
int64_t mono_us(void);
/* Wall clock, seconds and milliseconds since the epoch. */
int64_t wall_s(void);
int64_t wall_ms(void);
/* Sleep for ms milliseconds (restarts on EINTR). */
void sleep_ms(int64_t ms);
/* A condition variable whose timed waits run on the monotonic clock: a
 * step of the wall clock (NTP, a resumed VM) neither stretches nor cuts
 * them. Every condition variable here that is waited on with a deadline is
 * made with it; deadline_in_ms gives the deadline it takes. */
void cond_init_mono(pthread_cond_t *cv);
/* The monotonic moment ms milliseconds from now, as pthread_cond_timedwait
 * takes its deadline on a cond_init_mono variable (ms <= 0: now). */
struct timespec deadline_in_ms(int64_t ms);

/* Percent-decode s[0..n) into a new NUL-terminated string. With `plus`, '+'
 * becomes a space (form encoding). Invalid escapes are kept literally, as
 * Perl's uri_unescape does. *outlen (if given) receives the decoded length,
 * which can be less than strlen() if the input encoded a NUL. */
char *pct_decode(const char *s, size_t n, bool plus, size_t *outlen);
/* Percent-encode everything but the unreserved set A-Z a-z 0-9 - _ . ~,
 * and, with `js`, also ! * ' ( ) (JavaScript's encodeURIComponent). */
void pct_encode(struct buf *out, const char *s, size_t n, bool js);

/* Standard base64 with padding. */
char *b64_encode(const unsigned char *p, size_t n);
/* Hex of n bytes, lower case. */
char *hex_encode(const unsigned char *p, size_t n);

bool str_starts(const char *s, const char *prefix);
bool str_ends(const char *s, const char *suffix);
/* A URL fit to print: the password of "scheme://user:PASSWORD@host..." and
 * the value of any "password=" parameter replaced by "***" (a database URL
 * may hold one). Always NUL-terminates out (cut to n - 1). */
void url_redact(const char *url, char *out, size_t n);

/* Parse a whole decimal integer (optional sign); false on any junk or overflow. */
bool parse_i64(const char *s, int64_t *out);

#endif
