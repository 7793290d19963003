/* api_json: lenient readers for PVE's JSON results, which send numbers as
 * strings now and then (nextid, memory, cpulimit) and booleans as 0/1.
 * Internal to src/pve/. */
#ifndef PVE_API_JSON_H
#define PVE_API_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Copy a string member (numbers are formatted) into dst, truncated. */
void pj_str(char *dst, size_t len, json_t *obj, const char *key);
/* An integer member given as a number or a numeric string; dflt otherwise. */
int64_t pj_int(json_t *obj, const char *key, int64_t dflt);
double pj_num(json_t *obj, const char *key, double dflt);
/* 1/0, true/false, "1"/"0". */
bool pj_bool(json_t *obj, const char *key);

/* Walk a PVE answer envelope {"data": [e1, e2, ...], ...} held as text in
 * p[0..len), parsing one element at a time: fn gets each element (borrowed,
 * freed when fn returns), so the whole answer never exists as one JSON tree.
 * Returns 0, PJ_E_SYNTAX (not JSON, or not an object), PJ_E_SHAPE ("data"
 * missing or not an array) or the first non-zero value fn returned (which
 * stops the walk). fn may have seen some elements before an error: on a
 * non-zero return the caller discards what it gathered. */
enum { PJ_E_SYNTAX = -1, PJ_E_SHAPE = -2 };
typedef int (*pj_elem_fn)(json_t *elem, void *ud);
int pj_each_data(const char *p, size_t len, pj_elem_fn fn, void *ud);

#endif
