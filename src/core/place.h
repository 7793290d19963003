/* place: where a creation should go, by when its clone would finish.
 *
 * A full clone copies the template's disk, and the copies running on one
 * node share its storage bandwidth. So the node that finishes a new clone
 * first is not the emptiest one but the one with the least work queued for
 * its bandwidth:  eta = (bytes placed there and not yet copied + this
 * clone's bytes) / bandwidth.  Bandwidth is learned from the clones this
 * process ran: while n copies run on a node each moves bandwidth/n, so a
 * copy of B bytes that ran through intervals of n_i copies for dt_i
 * measures bandwidth = B / sum(dt_i / n_i). Each node's estimate is an
 * EWMA of those samples; a node without one is assumed as fast as the
 * average of the others (all equal before any clone ended).
 *
 * Only this process's clones are seen: with several proxd on one fleet,
 * each learns from its own (the store keeps capacity exact; this only
 * orders the candidates).
 *
 * Thread-safe (one mutex). Times are monotonic milliseconds passed in, so
 * that tests can drive the clock. */
#ifndef CORE_PLACE_H
#define CORE_PLACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct place place;

place *place_new(int nnodes);
void place_free(place *p);

/* A candidate for place_order: index in the configuration's node list and
 * what decides between equals. */
struct place_cand {
    int node;
    int64_t bytes;    /* what a clone copies there (the template's disk) */
    int64_t free_mem; /* bytes, after reservations */
};

/* Sort cands by expected finish time, earliest first; where two differ by
 * less than a tenth of one clone's own time, more free memory first. */
void place_order(place *p, struct place_cand *cands, int n);

/* The job was placed on node: its bytes count as queued there until
 * place_copy_end or place_forget (placing a job again moves it). */
void place_assign(place *p, const char *job, int node, int64_t bytes);
/* Its copy started / ended (ok: it ended well, and is a sample). */
void place_copy_begin(place *p, const char *job, int64_t now_ms);
void place_copy_end(place *p, const char *job, bool ok, int64_t now_ms);
/* The job left the node (failed over, finished, stopped). No-op if unknown. */
void place_forget(place *p, const char *job, int64_t now_ms);

/* Learned bandwidth of a node in bytes per second (0: none yet), and the
 * bytes queued on it. For tests and metrics. */
double place_bandwidth(place *p, int node);
int64_t place_queued(place *p, int node);

#endif
