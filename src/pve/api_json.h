/* api_json: lenient readers for PVE's JSON results, which send numbers as
 * strings now and then (nextid, memory, cpulimit) and booleans as 0/1.
 * Internal to src/pve/. */
#ifndef PVE_API_JSON_H
#define PVE_API_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>

/* Copy a string member (numbers are formatted) into dst, truncated. */
void pj_str(char *dst, size_t len, json_t *obj, const char *key);
/* An integer member given as a number or a numeric string; dflt otherwise. */
int64_t pj_int(json_t *obj, const char *key, int64_t dflt);
double pj_num(json_t *obj, const char *key, double dflt);
/* 1/0, true/false, "1"/"0". */
bool pj_bool(json_t *obj, const char *key);

/* For the parsers that read an answer as a stream of yajl's events
 * (api_resources.c, api_tasklog.c), refusing what jansson refuses:
 * a string that is not strict UTF-8 (RFC 3629) or holds a NUL; a number
 * out of range. pj_number converts a number's text (yajl checked its
 * grammar): 0 an integer in *i, 1 a real in *d, -1 out of range. */
bool pj_text_ok(const unsigned char *s, size_t n);
/* Run yajl over body[0..len) (NULL: empty) with these callbacks and ctx:
 * true when the whole text parsed and no callback cancelled. */
bool pj_stream(const yajl_callbacks *cb, void *ctx, const char *body, size_t len);
int pj_number(const char *s, size_t n, long long *i, double *d);

#endif
