/* poll: when to look at a running task again, and how long tasks of a kind
 * usually take.
 *
 * Every status poll is a request a real pveproxy has to serve, and a
 * creation waits on a clone that may copy for minutes, then on a resize and
 * a start of a second or two. The first look comes after the first delay
 * (a task just started has not ended), then:
 *   - when tasks of this kind have been seen before (expect > 0): the first
 *     look at the expected end, but within 2 s; then straight at the
 *     expected end, in steps of at most 3x the time waited (a task that
 *     ends far earlier than expected is seen at most 3x late); past it,
 *     every 5% to 25% of the time waited as the overrun grows. A task as
 *     long as expected costs 1 poll under 2 s, 2 under 6 s, 4 for a 40 s
 *     clone.
 *   - with no expectation: 250 ms (no Proxmox task ends sooner: a worker
 *     is forked, locks are taken), then doubling (seen at most 2x late).
 *   - never more than 30 s between two polls.
 * Expectations are per client: an EWMA of observed durations (a kind
 * expected within 2 s raised at once to an overrun: pve_task_learned) per node,
 * task type and, for clones, source template (the UPID's id), in a small
 * table with the least recently used entry replaced; a kind not seen on a
 * node takes what the same type took on another (a clone: of any template,
 * a hint for its first look; its log tells the rest).
 *
 * A clone's log tells more: qemu-img prints its progress every 1%, so two
 * readings give the copy's rate and its end (pve_eta_*), even for the first
 * clone of a template. When the readings pin the end down (within 10%, or
 * agreeing with what this template's clones took on the node), the next
 * look is at that end, up to 60 s away, not in steps of 3x the time waited:
 * a 40 s clone like the last costs 2 looks, not 4. A copy that fails in the
 * middle is then seen up to 60 s late; a node seen failing meanwhile makes
 * the waiter look at once (pve_wait_opts.look_fd). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "pve/pve_int.h"

#define FIRST_MS 250  /* the first look at a task of an unknown kind */
#define EARLY_MS 2000 /* the first look at a known kind comes within this */
#define MIN_MS 10
#define MAX_MS 30000
#define EWMA_NEW 0.3         /* weight of the newest observation */
#define LOG_FIRST_MS 1000    /* the first look through a clone's log within this */
#define STEP_PCT 1.0         /* qemu-img prints its progress every 1% */
#define RECENT_PCT 10.0      /* the rate over the last stretch of at least this */
#define TIGHT_PCT 10.0       /* readings that bound the end this closely are trusted */
#define TRUSTED_MAX_MS 60000 /* the longest sleep toward a trusted end */

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

/* key's part after the node starts with want ("qmstart:") */
static bool same_type(const char *key, const char *want)
{
    const char *colon = strchr(key, ':');
    return colon && strncmp(colon + 1, want, strlen(want)) == 0;
}

long pve_task_expect(pve_client *c, const struct pve_task *t)
{
    char key[PVE_EXPECT_KEY], type[sizeof t->type + 2];
    expect_key(t, key, sizeof key);
    snprintf(type, sizeof type, "%s:", t->type);
    long ms = 0;
    uint64_t other_used = 0;
    pthread_mutex_lock(&c->expect_mu);
    for (size_t i = 0; i < PVE_EXPECT_MAX; i++) {
        struct pve_expect *x = &c->expect[i];
        if (!x->key[0])
            continue;
        if (strcmp(x->key, key) == 0) {
            ms = (long)x->ms;
            x->used = ++c->expect_clock;
            break;
        }
        /* the same type on another node (for a clone, of another template:
         * a hint for the first look; its log tells the rest) */
        if (x->used > other_used && same_type(x->key, type)) {
            ms = (long)x->ms;
            other_used = x->used;
        }
    }
    pthread_mutex_unlock(&c->expect_mu);
    return ms;
}

/* What a wait teaches of the task's length: it ended after the last look
 * that saw it running and by the look that saw it end. The later bound, so
 * that the next first look comes at or after the end (one look, where one
 * a little early costs a string of overdue ones). A task over at the first
 * look may have been shorter: a little less then (9/10: the EWMA moves the
 * expectation 3% down a task), so that it follows tasks that get faster
 * (twice as fast: ~30 tasks; a fifth less, as before, overran every other
 * time); far less when nothing was known (the first look of an unknown kind
 * comes late for a fast task). Times are the looks' send times (task.c).
 * A task of a short kind (expected within EARLY_MS: its first status look
 * comes at the expected end; a clone's first log look at 1 s) still running
 * at a look at or past that end: the later bound is close (an overdue step
 * is 5% of the time waited), and the expectation rises to it at once (at
 * most doubled: pve_expect_next). Aiming the first look at an average of
 * ends put it before the end every other time: two looks a start. A longer
 * task's first look comes at EARLY_MS anyway and its approach in steps of
 * 3x: raised at once by one long run, its next runs would be seen later,
 * for no look fewer (tests/pve/test_poll.c test_known_kind_series). */
long pve_task_learned(long last_running_ms, long seen_ms, long expect_ms, bool *overdue)
{
    *overdue = expect_ms > 0 && expect_ms <= EARLY_MS && last_running_ms >= expect_ms;
    if (last_running_ms > 0)
        return seen_ms;
    return expect_ms > 0 ? seen_ms * 9 / 10 : seen_ms / 5;
}

double pve_expect_next(double cur_ms, long ms, bool raise)
{
    /* at most doubled: one start held up for 30 s (a busy node) does not
     * make every next one a long kind seen in steps of 3x */
    if (raise && (double)ms > cur_ms)
        return (double)ms < 2 * cur_ms ? (double)ms : 2 * cur_ms;
    return EWMA_NEW * (double)ms + (1 - EWMA_NEW) * cur_ms;
}

void pve_task_observed(pve_client *c, const struct pve_task *t, long ms, bool raise)
{
    char key[PVE_EXPECT_KEY];
    expect_key(t, key, sizeof key);
    pthread_mutex_lock(&c->expect_mu);
    size_t slot = 0;
    for (size_t i = 0; i < PVE_EXPECT_MAX; i++) {
        if (c->expect[i].key[0] && strcmp(c->expect[i].key, key) == 0) {
            c->expect[i].ms = pve_expect_next(c->expect[i].ms, ms, raise);
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

/* ---- what a clone's log tells of its end ---------------------------------- */

/* "transferred 1.0 GiB of 10.0 GiB (10.00%)": qemu-img convert's progress
 * (every 1%) as qemu-server prints it; a drive mirror's lines have a
 * "drive-scsi0: " before and " in 5s" after. */
bool pve_progress_pct(const char *line, double *pct)
{
    const char *s = strstr(line, "transferred ");
    if (!s || !strstr(s, " of "))
        return false;
    const char *open = strrchr(s, '(');
    if (!open)
        return false;
    char *end;
    double p = strtod(open + 1, &end);
    if (end == open + 1 || strncmp(end, "%)", 2) != 0 || !(p >= 0 && p <= 100))
        return false;
    *pct = p;
    return true;
}

void pve_eta_note(struct pve_eta *e, long elapsed_ms, double pct)
{
    if (e->n && pct < e->p[(e->n - 1) % PVE_ETA_READINGS])
        e->n = 0; /* a new disk's copy starts from 0% */
    if (e->n && pct == e->p[(e->n - 1) % PVE_ETA_READINGS])
        return; /* not moved: the reading before is closer to its step */
    if (!e->n) {
        e->t_first = elapsed_ms;
        e->p_first = pct;
    }
    e->t[e->n % PVE_ETA_READINGS] = elapsed_ms;
    e->p[e->n % PVE_ETA_READINGS] = pct;
    e->n++;
}

/* ms per percent between two readings, taken as slow as they allow: each
 * is the last step printed, up to a step behind the copy */
static double ms_per_pct(long ta, double pa, long tb, double pb)
{
    double moved = pb - pa;
    if (moved > 2 * STEP_PCT)
        moved -= STEP_PCT;
    return (double)(tb - ta) / moved;
}

/* The reading to take the rate from, up to the last: the start of the last
 * stretch of RECENT_PCT or more (the rate changes when a copy beside this
 * one on the same storage ends or starts), or the first reading. */
static void stretch(const struct pve_eta *e, long *ta, double *pa)
{
    double p1 = e->p[(e->n - 1) % PVE_ETA_READINGS];
    *ta = e->t_first;
    *pa = e->p_first;
    int kept = e->n < PVE_ETA_READINGS ? e->n : PVE_ETA_READINGS;
    for (int k = 2; k <= kept; k++) {
        int i = (e->n - k) % PVE_ETA_READINGS;
        if (p1 - e->p[i] >= RECENT_PCT) {
            *ta = e->t[i];
            *pa = e->p[i];
            return;
        }
    }
}

long pve_eta_end(const struct pve_eta *e)
{
    if (e->n == 0)
        return 0;
    long t1 = e->t[(e->n - 1) % PVE_ETA_READINGS];
    double p1 = e->p[(e->n - 1) % PVE_ETA_READINGS], end;
    if (e->n == 1) {
        if (p1 <= 0 || t1 <= 0)
            return 0;
        end = t1 * 100 / p1; /* the copy started no earlier than the wait */
    } else {
        long ta;
        double pa;
        stretch(e, &ta, &pa);
        if (t1 <= ta || p1 <= pa)
            return 0;
        end = t1 + (100 - p1) * ms_per_pct(ta, pa, t1, p1);
    }
    return end > 24 * 3600 * 1000.0 ? 24 * 3600 * 1000L : (long)end + 1;
}

bool pve_eta_range(const struct pve_eta *e, long *lo, long *hi)
{
    if (e->n == 0)
        return false;
    long t1 = e->t[(e->n - 1) % PVE_ETA_READINGS];
    double p1 = e->p[(e->n - 1) % PVE_ETA_READINGS], l, h;
    if (e->n == 1) {
        /* at t1 the copy was at p1 to p1 + 1 %, and it started at or
         * after the wait began: no later than at this pace from the start;
         * no earlier bound (it may have started just before t1) */
        if (p1 <= 0 || t1 <= 0)
            return false;
        l = t1;
        h = t1 * 100 / p1;
    } else {
        long ta;
        double pa;
        stretch(e, &ta, &pa);
        double moved = p1 - pa; /* the truth: within a step either way */
        if (t1 <= ta || moved <= STEP_PCT)
            return false;
        l = t1 + (100 - p1 - STEP_PCT) * (double)(t1 - ta) / (moved + STEP_PCT);
        h = t1 + (100 - p1) * (double)(t1 - ta) / (moved - STEP_PCT);
    }
    if (h > 24 * 3600 * 1000.0)
        return false;
    *lo = l > t1 ? (long)l : t1;
    *hi = (long)h + 1;
    return true;
}

/* The sleep toward the copy's end when the readings say enough: they pin
 * the end down (within TIGHT_PCT, or agreeing with what clones of this
 * template took on this node: then that end), or they rule out any end
 * within the longest sleep; else 0. */
static long trusted_delay(long elapsed_ms, long expect_ms, const struct pve_eta *eta)
{
    long lo, hi, at = 0;
    if (!pve_eta_range(eta, &lo, &hi))
        return 0;
    if (expect_ms > 0 && expect_ms >= lo - lo / 20 && expect_ms <= hi + hi / 20)
        at = expect_ms < lo ? lo : expect_ms > hi ? hi : expect_ms;
    else if ((double)(hi - lo) <= hi * TIGHT_PCT / 100)
        at = hi;
    else if (lo >= elapsed_ms + TRUSTED_MAX_MS)
        at = lo;
    if (at <= elapsed_ms + MIN_MS)
        return 0;
    return at - elapsed_ms < TRUSTED_MAX_MS ? at - elapsed_ms : TRUSTED_MAX_MS;
}

long pve_task_next_delay(bool logged, long elapsed_ms, long prev_ms, long expect_ms,
                         const struct pve_eta *eta)
{
    if (!logged)
        return pve_task_poll_delay(elapsed_ms, prev_ms, expect_ms);
    if (prev_ms == 0) /* a clone that fails does so at once; the first reading */
        return expect_ms > 0 && expect_ms < LOG_FIRST_MS ? expect_ms : LOG_FIRST_MS;
    /* a copy whose end the readings tell is looked at then, not in steps
     * of 3x the time waited (they catch a copy that ends far earlier than
     * thought: the readings say it will not) */
    long d = trusted_delay(elapsed_ms, expect_ms, eta);
    if (d)
        return d;
    long end = pve_eta_end(eta);
    return pve_task_poll_delay(elapsed_ms, prev_ms, end ? end : expect_ms);
}
