/* poll: when to look at a running task again, and how long tasks of a kind
 * usually take.
 *
 * Every status poll is a request a real pveproxy has to serve, and one
 * creation waits on a clone that may copy for minutes. The schedule is:
 *   - dense for the first 1.5 s (50, 100, 200, 400, 800 ms): most failures
 *     and every short task end there, and a failing clone must fail over
 *     at once;
 *   - then, when tasks of this kind have been seen before, aim at the end
 *     they are expected at, halving the distance each time (a few polls
 *     bracket it), never waiting longer than has already passed (a task
 *     that ends far earlier than expected is noticed at most 2x late);
 *   - past the expected end, every 5% to 25% of the time waited as the
 *     overrun grows; with no expectation, every third of the time waited
 *     (at most a third late);
 *   - never more than 30 s between two polls.
 * The expectations are per client: an EWMA of observed durations per
 * node, task type and, for clones, source template (the UPID's id), in a
 * small table with the least recently used entry replaced. */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "pve/pve_int.h"

#define DENSE_MS 1500
#define FIRST_MS 50
#define MAX_MS 30000
#define EWMA_NEW 0.3 /* weight of the newest observation */

long pve_task_poll_delay(long elapsed_ms, long prev_ms, long expect_ms)
{
    long d;
    if (elapsed_ms < DENSE_MS) {
        d = prev_ms > 0 ? prev_ms * 2 : FIRST_MS;
        /* a short task with a known length: look right when it should end */
        if (expect_ms > elapsed_ms && expect_ms - elapsed_ms < d)
            d = expect_ms - elapsed_ms + FIRST_MS / 5;
    } else if (expect_ms > elapsed_ms) {
        /* halve the distance to the expected end, in steps no finer than
         * 2% of the time waited and no longer than the time waited */
        d = (expect_ms - elapsed_ms) / 2;
        if (d < elapsed_ms / 50)
            d = elapsed_ms / 50;
        if (d > elapsed_ms)
            d = elapsed_ms;
    } else if (expect_ms > 0) {
        /* overdue: back off as the overrun grows, from 5% to 25% */
        d = elapsed_ms - expect_ms;
        if (d > elapsed_ms / 4)
            d = elapsed_ms / 4;
        if (d < elapsed_ms / 20)
            d = elapsed_ms / 20;
    } else {
        d = elapsed_ms / 3;
    }
    if (d < FIRST_MS / 5)
        d = FIRST_MS / 5;
    return d > MAX_MS ? MAX_MS : d;
}

/* node:type[:template] names what a task's duration depends on */
static void expect_key(const struct pve_task *t, char *out, size_t len)
{
    bool clone = strcmp(t->type, "qmclone") == 0 || strcmp(t->type, "vzclone") == 0;
    snprintf(out, len, "%s:%s:%s", t->node, t->type, clone ? t->id : "");
}

long pve_task_expect(pve_client *c, const struct pve_task *t)
{
    char key[PVE_EXPECT_KEY];
    expect_key(t, key, sizeof key);
    long ms = 0;
    pthread_mutex_lock(&c->expect_mu);
    for (size_t i = 0; i < PVE_EXPECT_MAX; i++)
        if (c->expect[i].key[0] && strcmp(c->expect[i].key, key) == 0) {
            ms = (long)c->expect[i].ms;
            c->expect[i].used = ++c->expect_clock;
            break;
        }
    pthread_mutex_unlock(&c->expect_mu);
    return ms;
}

void pve_task_observed(pve_client *c, const struct pve_task *t, long ms)
{
    char key[PVE_EXPECT_KEY];
    expect_key(t, key, sizeof key);
    pthread_mutex_lock(&c->expect_mu);
    size_t slot = 0;
    for (size_t i = 0; i < PVE_EXPECT_MAX; i++) {
        if (c->expect[i].key[0] && strcmp(c->expect[i].key, key) == 0) {
            c->expect[i].ms = EWMA_NEW * (double)ms + (1 - EWMA_NEW) * c->expect[i].ms;
            c->expect[i].used = ++c->expect_clock;
            goto out;
        }
        if (c->expect[i].used < c->expect[slot].used)
            slot = i;
    }
    pve_strlcpy(c->expect[slot].key, key, sizeof c->expect[slot].key);
    c->expect[slot].ms = (double)ms;
    c->expect[slot].used = ++c->expect_clock;
out:
    pthread_mutex_unlock(&c->expect_mu);
}
