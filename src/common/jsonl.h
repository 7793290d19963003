/* jsonl: JSON Lines input, one request per line, bounded (proxd create
 * --from and proxctl vm create --from read the same format). Not thread-
 * specific: one reader per FILE. */
#ifndef COMMON_JSONL_H
#define COMMON_JSONL_H

#include <stddef.h>
#include <stdio.h>

#define JSONL_LINES_MAX 100000     /* lines in one input */
#define JSONL_LINE_MAX (64 * 1024) /* bytes in one line */

enum jsonl_err {
    JSONL_OK = 0,
    JSONL_E_TOO_MANY, /* more than JSONL_LINES_MAX lines: *no is the first one over */
    JSONL_E_READ      /* the input failed: *no is the last line read */
};

/* Call fn for each line of `in` that is not blank (spaces and tabs only),
 * with its number (from 1), its text without the line end (NUL-terminated,
 * borrowed for the call) and its length; a line longer than JSONL_LINE_MAX
 * bytes comes with text NULL (the caller reports it and goes on). Returns
 * a jsonl_err; *no as it says. */
int jsonl_each(FILE *in, void (*fn)(void *ud, long no, const char *text, size_t len), void *ud,
               long *no);

#endif
