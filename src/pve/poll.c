/* poll: when to look at a running task again, and how long tasks of a kind
 * usually take.
 *
 * Every status poll is a request a real pveproxy has to serve, and a
 * creation waits on a clone that may copy for minutes, then on a resize and
 * a start of a second or two. The first look comes after the first delay
 * (a task just started has not ended), then:
 *   - when tasks of this kind have been seen before (expect > 0): the first
 *     look at the expected end, but within 1 s (a failing clone must fail
 *     over at once); then straight at the expected end, in steps of at most
 *     3x the time waited (a task that ends far earlier than expected is
 *     seen at most 3x late); past it, every 5% to 25% of the time waited
 *     as the overrun grows. A task as long as expected costs 1 poll under a
 *     second, 2 under 4 s, 4 for a 40 s clone.
 *   - with no expectation: 50 ms, then doubling (seen at most 2x late).
 *   - never more than 30 s between two polls.
 * Expectations are per client: an EWMA of observed durations per node,
 * task type and, for clones, source template (the UPID's id), in a small
 * table with the least recently used entry replaced. */
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "pve/pve_int.h"

#define FIRST_MS 50   /* the first look at a task of an unknown kind */
#define EARLY_MS 1000 /* the first look at a known kind comes within this */
#define MIN_MS 10
#define MAX_MS 30000
#define EWMA_NEW 0.3 /* weight of the newest observation */

long pve_task_poll_delay(long elapsed_ms, long prev_ms, long expect_ms)
{
    long d;
    if (expect_ms <= 0) {
        d = prev_ms > 0 ? prev_ms * 2 : FIRST_MS;
    } else if (prev_ms == 0) {
        d = expect_ms < EARLY_MS ? expect_ms : EARLY_MS;
    } else if (elapsed_ms < expect_ms) {
        d = expect_ms - elapsed_ms;
        if (d > 3 * elapsed_ms)
            d = 3 * elapsed_ms;
    } else {
        d = elapsed_ms - expect_ms; /* overdue: back off as the overrun grows */
        if (d > elapsed_ms / 4)
            d = elapsed_ms / 4;
        if (d < elapsed_ms / 20)
            d = elapsed_ms / 20;
    }
    if (d < MIN_MS)
        d = MIN_MS;
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
