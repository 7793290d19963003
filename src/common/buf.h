/* buf: the one growable byte buffer, with a hard size cap.
 *
 * Invariants (after buf_init): `data` is never NULL once anything was added,
 * is always NUL-terminated (the NUL is not counted in `len`), and may contain
 * NUL bytes. `len` <= `max`. Read `data` and `len` freely; never write `cap`.
 *
 * The cap is the point: every buffer filled from the network is created with a
 * named maximum, and an append past it fails with BUF_TOOBIG and leaves the
 * buffer unchanged, so a hostile peer cannot make us allocate without bound.
 * Allocation failure aborts (xalloc.h). Not thread-safe: one owner at a time. */
#ifndef COMMON_BUF_H
#define COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

enum buf_err {
    BUF_OK = 0,
    BUF_TOOBIG = 1, /* the append would pass the buffer's cap */
};

struct buf {
    char *data;
    size_t len;
    size_t cap; /* private */
    size_t max; /* private: the cap on len */
};

#define BUF_UNLIMITED ((size_t)-1 / 2)
#define BUF_INIT(maxlen)                                                                           \
    {                                                                                              \
        NULL, 0, 0, (maxlen)                                                                       \
    }

void buf_init(struct buf *b, size_t max);
/* Free the contents; the buffer can be used again (empty, same cap). */
void buf_release(struct buf *b);
/* Empty the buffer, keeping its memory. */
void buf_reset(struct buf *b);
int buf_add(struct buf *b, const void *p, size_t n);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Cut the contents back to their first len bytes (len <= b->len). */
void buf_truncate(struct buf *b, size_t len);
/* Room for n more bytes: where to write them (the buffer's end), or NULL
 * when n more would pass the cap. Then buf_commit(b, k) with k <= n, the
 * bytes actually written. For writers that fill memory directly (jsonw.h). */
char *buf_space(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t k);
/* Hand the heap string to the caller (who frees it) and reset the buffer.
 * Never returns NULL: an empty buffer yields "". */
char *buf_take(struct buf *b);
/* Borrow the contents as a C string ("" when empty). */
const char *buf_str(const struct buf *b);

#endif
