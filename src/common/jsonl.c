/* jsonl: see jsonl.h. */
#include "common/jsonl.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

int jsonl_each(FILE *in, void (*fn)(void *ud, long no, const char *text, size_t len), void *ud,
               long *no)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = JSONL_OK;
    *no = 0;
    while ((len = getline(&line, &cap, in)) >= 0) {
        if (++*no > JSONL_LINES_MAX) {
            rc = JSONL_E_TOO_MANY;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (strspn(line, " \t") == (size_t)len)
            continue;
        fn(ud, *no, len > JSONL_LINE_MAX ? NULL : line, (size_t)len);
    }
    if (rc == JSONL_OK && ferror(in))
        rc = JSONL_E_READ;
    free(line);
    return rc;
}
