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

/* Raw text: punctuation and keys that need no escaping ("\"vmid\":"). */
void sj_lit(struct buf *b, const char *lit);
/* A string literal, escaped as jansson does. */
void sj_str(struct buf *b, const char *s);
void sj_int(struct buf *b, int64_t v);
/* A real as jansson writes it: "%.17g", ".0" added to integral values. */
void sj_real(struct buf *b, double v);
/* Any jansson value, compact (objects in their insertion order). */
void sj_json(struct buf *b, const json_t *v);

#endif
