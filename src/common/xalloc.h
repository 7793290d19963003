/* xalloc: allocation that aborts on failure.
 *
 * proxd is a daemon, not a library: running out of memory is not an error a
 * caller can handle, so every allocation goes through these wrappers, which
 * print the size and abort. What keeps memory bounded is the caps on every
 * size that comes from the network (see buf.h), not NULL checks.
 * Thread-safe. */
#ifndef COMMON_XALLOC_H
#define COMMON_XALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* Free *pp and set it to NULL. */
#define FREE_AND_NULL(p)                                                                           \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#endif
