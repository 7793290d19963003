/* create_batch: `proxd create --from FILE`, many creations from one
 * process (one store open, one inventory read).
 *
 * FILE is JSON Lines: one creation request per line, the object POST
 * /v1/vms takes as its body (os, name, cores, memory_mb, disk_gb, owner,
 * ssh_keys, ippools, addresses) plus an optional "idempotency_key"; blank
 * lines are skipped. "owner" is required.
 *
 * All or nothing on validation: every line is read, decoded and checked
 * (the fields, as core_create_check; an idempotency key used before for a
 * different request, by an earlier run or an earlier line) before any is submitted, and every bad
 * line is reported with its number and field; then nothing is submitted. After that each line is
 * its own creation, in its own transaction: a refusal at submission (quota, no VMID or address
 * left) is reported for its line and the others go on. An idempotency key is scoped to the line's
 * owner (what that owner's token would send through the API): a line whose key was used before for
 * the same request answers the first job again and makes nothing.
 *
 * Output: one line per request on stdout, as text or, with json, one JSON
 * object per line ({"line","job","vmid"[,"replayed"]} or {"line","error":
 * {"field","message"}}). Threads: the caller's only. */
#ifndef PROXD_CREATE_BATCH_H
#define PROXD_CREATE_BATCH_H

#include <stdbool.h>
#include <stdio.h>

#include "core/core.h"

/* The most lines a file may hold and the longest line (the API's body
 * cap): JSONL_LINES_MAX, JSONL_LINE_MAX (common/jsonl.h). */

/* Exit codes: 0 every line queued (or replayed); 2 the file is bad (nothing
 * submitted); 1 some lines were refused at submission or, with wait_s > 0,
 * some job ended failed; 3 some job did not end in wait_s seconds. */
int create_batch(struct core *k, store *st, FILE *in, bool json, long wait_s);

#endif
