/* blob: an answer's text shared by every response that sends it (see
 * sim.h). The last holder frees it; holders are connection threads, hence
 * the atomic count. */
#include "common/xalloc.h"
#include "sim/sim.h"

#include <stdatomic.h>
#include <stdlib.h>

struct sim_blob {
    atomic_int refs;
    size_t len;
    char *data;
};

struct sim_blob *sim_blob_take(struct buf *b)
{
    struct sim_blob *bl = xcalloc(1, sizeof *bl);
    atomic_init(&bl->refs, 1);
    bl->len = b->len;
    bl->data = buf_take(b);
    return bl;
}

struct sim_blob *sim_blob_ref(struct sim_blob *bl)
{
    if (bl)
        atomic_fetch_add(&bl->refs, 1);
    return bl;
}

void sim_blob_release(void *blob)
{
    struct sim_blob *bl = blob;
    if (!bl || atomic_fetch_sub(&bl->refs, 1) != 1)
        return;
    free(bl->data);
    free(bl);
}

const char *sim_blob_data(const struct sim_blob *bl)
{
    return bl->data;
}

size_t sim_blob_len(const struct sim_blob *bl)
{
    return bl->len;
}

void sim_blob_send(struct sim_blob *bl, struct http_resp *r)
{
    if (r->shared_free)
        r->shared_free(r->shared_ctx);
    r->shared = bl->data;
    r->shared_len = bl->len;
    r->shared_free = sim_blob_release;
    r->shared_ctx = sim_blob_ref(bl);
}
