/* jsonw: JSON text written straight into a struct buf, for answers too hot
 * to build as a jansson tree and dump (a page of 100 VM records).
 *
 * The output is what jansson's json_dumps(..., JSON_COMPACT) writes for the
 * same values: strings escape '"', '\\' and the control characters below
 * 0x20 (\b \f \n \r \t by name, the others as \u00XX with upper-case hex),
 * everything else passes through as UTF-8 (no ASCII-only escaping, '/' not
 * escaped). A byte that is not part of a valid UTF-8 sequence (stray
 * continuation, overlong form, surrogate, above U+10FFFF, cut short) becomes
 * U+FFFD, so the answer is always valid JSON even from a damaged record.
 *
 * Every function returns BUF_OK, or BUF_TOOBIG and leaves the buffer
 * unchanged when the text would pass the buffer's cap. */
#ifndef COMMON_JSONW_H
#define COMMON_JSONW_H

#include "common/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Characters jsonw_time writes, without NUL: "2026-11-23T23:40:01.123Z". */
#define JSONW_TIME_MAX 32

/* Raw JSON text (punctuation, keys known to need no escaping, numbers). */
int jsonw_raw(struct buf *b, const char *s, size_t n);
/* A string literal: the n bytes of s, quoted and escaped. */
int jsonw_str(struct buf *b, const char *s, size_t n);
/* A whole integer. */
int jsonw_int(struct buf *b, int64_t v);
/* A time in unix milliseconds as an RFC 3339 UTC string with milliseconds
 * ("2026-11-23T23:40:01.123Z"), or null when ms <= 0. */
int jsonw_time(struct buf *b, int64_t ms);

/* The same values written into memory the caller reserved (buf_space with
 * the bound given, then buf_commit of what was written): for encoders that
 * reserve a whole record's worst case once instead of checking each piece.
 * Each returns the end of what it wrote. */
#define JSONW_STR_MAX(n) ((n)*6 + 2) /* a string of n bytes, quotes included */
#define JSONW_INT_MAX 20             /* "-9223372036854775808" */
#define JSONW_TIME_LIT_MAX (JSONW_TIME_MAX + 2)
char *jsonw_put_str(char *p, const char *s, size_t n);
char *jsonw_put_int(char *p, int64_t v);
char *jsonw_put_time(char *p, int64_t ms);
/* A literal: JSONW_PUT_LIT(p, "{\"id\":") */
#define JSONW_PUT_LIT(p, lit) ((char *)memcpy((p), (lit), sizeof(lit) - 1) + sizeof(lit) - 1)

/* The text of jsonw_time's string (no quotes) in out, NUL-terminated;
 * returns its length. ms must be > 0. */
size_t jsonw_fmt_time(char out[JSONW_TIME_MAX + 1], int64_t ms);
/* Escape n bytes of s (no quotes) into dst, which has room for
 * JSONW_ESC_MAX(n) bytes; returns the bytes written. */
#define JSONW_ESC_MAX(n) ((n)*6)
size_t jsonw_escape(char *dst, const char *s, size_t n);
/* Are the n bytes of s valid UTF-8 (the same rules as the encoder's)? */
bool jsonw_utf8_valid(const char *s, size_t n);
/* The length of the longest prefix of s's n bytes, at most max, that does
 * not end inside a valid UTF-8 sequence: where to cut a text to max bytes
 * without making a character half. */
size_t jsonw_utf8_fit(const char *s, size_t n, size_t max);
/* Every byte of s's n bytes that is not part of a valid UTF-8 sequence
 * becomes '?', in place: a text jansson takes, of the same length. */
void jsonw_utf8_scrub(char *s, size_t n);

#endif
