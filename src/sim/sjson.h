/* sjson: pvesim's answers written as JSON text straight into a buf (on top
 * of common/jsonw), for lists too big to build as jansson trees per request
 * (/cluster/resources, the VM and task lists, /_sim/state). The text is
 * what json_dumps(..., JSON_COMPACT) writes for the same values, reals
 * included, so a streamed answer has the content of the tree it replaces.
 *
 * Every function appends to a buf without a cap (BUF_UNLIMITED: allocation
 * failure aborts), so none can fail. Internal to src/sim/. */
#ifndef SIM_SJSON_H
#define SIM_SJSON_H

#include <jansson.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/jsonw.h"

/* Raw text: punctuation and keys that need no escaping ("\"vmid\":"). */
void sj_lit(struct buf *b, const char *lit);
/* A string literal, escaped as jansson does. */
void sj_str(struct buf *b, const char *s);
void sj_int(struct buf *b, int64_t v);
/* A real as jansson writes it: "%.17g", ".0" added to integral values. */
void sj_real(struct buf *b, double v);
/* Any jansson value, compact (objects in their insertion order). */
void sj_json(struct buf *b, const json_t *v);

/* Reserve-and-fill, for the per-VM records written 100,000 times an
 * answer: reserve the record's worst case once, write with the jsonw_put_*
 * functions and SJ_LIT, then commit what was written:
 *     char *p0 = sj_reserve(b, worst), *p = p0;
 *     p = SJ_LIT(p, "{\"vmid\":"); p = jsonw_put_int(p, vmid); ...
 *     sj_commit(b, p0, p); */
#define SJ_LIT(p, lit) JSONW_PUT_LIT(p, lit)
char *sj_reserve(struct buf *b, size_t worst);
void sj_commit(struct buf *b, char *start, char *end);
char *sj_put_mem(char *p, const char *s, size_t n);

#endif
