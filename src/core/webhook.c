/* webhook: delivery of the event log to [webhook NAME] receivers (see
 * events.h). One thread per webhook:
 *   1. hold the webhook's lease in the store (store_webhook_claim); while
 *      another instance holds it, look again every second (an earlier
 *      proxd of this host that is gone, killed say, is taken over at once);
 *   2. read the events after the cursor, a page at a time; those of types
 *      the webhook does not want are passed over (the cursor moves);
 *   3. post each wanted event, signed, and move the cursor after a 2xx;
 *      on failure wait (0.5 s doubling to retry_max) and post it again, with the
 *      same Proxd-Delivery id and body (a fresh signature time); an event
 *      older than max_age is dropped instead, counted and warned about.
 * The lease (at least 30 s, 3 posts' timeouts, and twice retry_max and a
 * timeout) is renewed before half
 * of it is gone and by every cursor move; a post never outlives it by
 * design (its timeout is shorter), so two instances do not post at once.
 * If a lease is lost anyway (a hung store), the next claim fails and the
 * thread goes back to step 1: the new holder posts from the stored cursor,
 * the same ids again.
 * An admin's seek (store_webhook_seek: skip a poison event, post events
 * again) moves the cursor and counts a seek in the row (gen), leaving the
 * lease to its holder (no other instance posts while one of its posts may
 * be in flight): the holder learns it within a second when idle or
 * pausing between tries (it reads its row), else when its next cursor
 * move or failure fails or its lease's renewal reads the row, and goes on
 * from the new cursor. */
#include "core/events.h"

#include "common/buf.h"
#include "common/hmac.h"
#include "common/jsonw.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 100
#define IDLE_MS 250        /* nothing to send: look again */
#define NOT_HOLDER_MS 1000 /* another instance delivers */
#define LOOK_MS 1000       /* idle: how often the stored row is read (look_at_row) */
#define BACKOFF_MIN_MS 500
#define LEASE_MIN_MS 30000
#define LEASE_SLACK_MS 5000 /* a store write, a late wake-up */

struct hook {
    struct core *k;
    const struct cfg_webhook *cfg;
    pthread_t th;
    bool started;
    int64_t lease_ms, lease_until;
    int64_t after;     /* the cursor, as stored, while this instance holds the lease */
    int64_t gen;       /* the row's seek count, read with it */
    int64_t seek_at;   /* and its last seek's time */
    int64_t looked_at; /* wall ms of the last idle look at the stored row */
    atomic_uint_fast64_t delivered, retried, dropped;
    atomic_int_fast64_t oldest_ts; /* ts of the event waiting first, 0: none */
    atomic_bool holder;
};

struct webhooks {
    struct webhook_transport tr;
    bool have_tr;
    struct hook hooks[CFG_MAX_WEBHOOKS];
    int n;
};

void webhook_signature(const char *secret, int64_t t, const char *body, size_t len, char out[96])
{
    struct buf m = BUF_INIT(BUF_UNLIMITED);
    buf_printf(&m, "%lld.", (long long)t);
    buf_add(&m, body, len);
    char hex[65];
    hmac_sha256_hex(secret, strlen(secret), m.data, m.len, hex);
    buf_release(&m);
    snprintf(out, 96, "t=%lld,v1=%s", (long long)t, hex);
}

static struct webhooks *hooks_of(struct core *k)
{
    if (!k->wh)
        k->wh = xcalloc(1, sizeof *k->wh);
    return k->wh;
}

void core_set_webhook_transport(struct core *k, const struct webhook_transport *t)
{
    struct webhooks *w = hooks_of(k);
    w->tr = *t;
    w->have_tr = t && t->post;
}

/* Renew the lease unless what is left of it covers the next post and the
 * longest pause after it (half of it at least); false when another holds
 * it, or when the renewal found the cursor moved (the caller's page is
 * stale: it starts a new round). (Renewed at half only, a holder waiting
 * out a down receiver with retry_max pauses let it lapse: half left, then
 * a post timing out and a pause took more.) */
static bool keep_lease(struct hook *h)
{
    int64_t now = wall_ms();
    int64_t need = (h->cfg->timeout_s + h->cfg->retry_max_s) * 1000L + LEASE_SLACK_MS;
    if (need < h->lease_ms / 2)
        need = h->lease_ms / 2;
    if (h->lease_until - now > need && atomic_load(&h->holder))
        return true;
    struct store_error se;
    struct webhook_cursor cur;
    int rc = store_webhook_claim(h->k->st, h->cfg->name, h->k->instance, h->lease_ms, &cur, &se);
    if (rc == STORE_E_CONFLICT && core_instance_gone(h->k, cur.lease_owner)) {
        /* its holder died (killed; restarted as this process): it posts
         * nothing any more, so its lease need not be waited out (the
         * default's is over two minutes). Released only while it still
         * holds it: of two instances that saw it, one takes it. */
        log_info("webhook", "webhook %s: taking over from %s, which is gone", h->cfg->name,
                 cur.lease_owner);
        if (store_webhook_release(h->k->st, h->cfg->name, cur.lease_owner, NULL) == STORE_OK)
            rc =
                store_webhook_claim(h->k->st, h->cfg->name, h->k->instance, h->lease_ms, &cur, &se);
    }
    bool held = rc == STORE_OK, moved = false;
    if (held) {
        /* the cursor moved under this holder (an admin's seek back, or
         * another instance delivered while this one's lease had lapsed):
         * the page under way was read after the old cursor, so it is not
         * gone on with (posting its next event and moving the cursor there
         * would pass over what lies between); the next round reads anew */
        moved = atomic_load(&h->holder) && (cur.after != h->after || cur.gen != h->gen);
        h->lease_until = now + h->lease_ms;
        h->after = cur.after;
        h->gen = cur.gen;
        h->seek_at = cur.seek_at;
    } else if (rc != STORE_E_CONFLICT)
        log_warn("webhook", "webhook %s: cannot take its lease: %s", h->cfg->name, se.message);
    if (atomic_exchange(&h->holder, held) != held)
        log_info("webhook", "webhook %s: %s", h->cfg->name,
                 held ? "delivering from this instance" : "delivered by another instance");
    return held && !moved;
}

/* This instance no longer holds the lease (another took it, or an admin
 * moved the cursor): the next round claims it again and reads the cursor. */
static void lease_lost(struct hook *h)
{
    atomic_store(&h->holder, false);
    h->lease_until = 0;
}

static bool advance(struct hook *h, int64_t after, int delivered, int dropped)
{
    struct store_error se;
    int rc = store_webhook_advance(h->k->st, h->cfg->name, h->k->instance, h->gen, after,
                                   h->lease_ms, delivered, dropped, &se);
    if (rc) {
        log_warn("webhook", "webhook %s: cursor not moved to %lld: %s", h->cfg->name,
                 (long long)after, se.message);
        lease_lost(h);
        return false;
    }
    h->lease_until = wall_ms() + h->lease_ms;
    if (after > h->after)
        h->after = after;
    return true;
}

/* A post under way when proxd stops is given up (its event posted again
 * by the next holder): a receiver that does not answer would otherwise
 * hold the stop for the post's timeout (up to 300 s; a service manager
 * kills the process sooner). */
static int post_give_up(void *ud)
{
    return core_stopping(ud);
}

/* One post of e: 1 on a 2xx, 0 when it failed, -1 when it failed and the
 * lease turned out to be gone (its failure could not be told). */
static int post_once(struct hook *h, const struct store_event *e, const char *body, size_t len)
{
    struct webhooks *w = h->k->wh;
    char sig[96], hsig[128], hid[128], htype[80];
    webhook_signature(h->cfg->secret, wall_s(), body, len, sig);
    snprintf(hsig, sizeof hsig, "Proxd-Signature: %s", sig);
    snprintf(hid, sizeof hid, "Proxd-Delivery: %s-%lld", h->cfg->name, (long long)e->id);
    snprintf(htype, sizeof htype, "Proxd-Event: %s", e->type);
    const char *headers[] = {"Content-Type: application/json", hsig, hid, htype};
    struct webhook_post p = {.url = h->cfg->url,
                             .headers = headers,
                             .nheaders = 4,
                             .body = body,
                             .len = len,
                             .timeout_ms = h->cfg->timeout_s * 1000L,
                             .give_up = post_give_up,
                             .ud = h->k};
    long status = 0;
    char why[256] = "";
    int rc = w->tr.post(w->tr.ctx, &p, &status, why, sizeof why);
    if (rc == 0 && status >= 200 && status < 300)
        return 1;
    if (rc == 0)
        snprintf(why, sizeof why, "HTTP %ld", status);
    log_info("webhook", "webhook %s: event %lld (%s) not delivered: %s", h->cfg->name,
             (long long)e->id, e->type, why);
    /* in the store, for an operator asking any instance (GET /v1/webhooks);
     * not written, it is only not told. Refused when the lease is gone: an
     * admin moved the cursor past this event (or back), so it is not
     * posted again from here. */
    jsonw_utf8_scrub(why, strlen(why));
    if (store_webhook_failed(h->k->st, h->cfg->name, h->k->instance, h->gen, why, NULL) ==
        STORE_E_CONFLICT) {
        lease_lost(h);
        return -1;
    }
    return 0;
}

/* Is the stored row still as this holder read it? When not (an admin's
 * seek, or another instance took the lease), the lease is dropped here and
 * the next round claims it again and reads the row. A failed read says
 * nothing: the next claim or write tells. */
static bool row_moved(struct hook *h)
{
    struct webhook_cursor cur;
    if (store_webhook_get(h->k->st, h->cfg->name, &cur, NULL) != STORE_OK)
        return false;
    if (strcmp(cur.lease_owner, h->k->instance) == 0 && cur.lease_until > 0 &&
        cur.after == h->after && cur.gen == h->gen)
        return false;
    log_info("webhook",
             "webhook %s: the stored cursor (%lld, seek %lld, lease '%s') is not as this "
             "instance read it: reading it again",
             h->cfg->name, (long long)cur.after, (long long)cur.gen, cur.lease_owner);
    lease_lost(h);
    return true;
}

/* With nothing to send, a look at the stored row now and then: an admin
 * who moved the cursor back (to post events again) counted a seek, which a
 * busy holder learns at its next write but an idle one would learn only
 * when renewing its lease (up to half the lease later). */
static void look_at_row(struct hook *h)
{
    int64_t now = wall_ms();
    if (now - h->looked_at < LOOK_MS)
        return;
    h->looked_at = now;
    row_moved(h);
}

/* The pause before a failed post is tried again, in slices of LOOK_MS
 * with a look at the row between: a seek (past the event under way, back,
 * or to the cursor itself: "try again now") is acted on within a second,
 * not after a pause of up to retry_max. 1: proxd stops; -1: the row moved
 * (the lease dropped); 0: paused out. */
static int pause_watching(struct hook *h, int64_t ms)
{
    while (ms > 0) {
        int64_t slice = ms < LOOK_MS ? ms : LOOK_MS;
        if (core_nap(h->k, slice))
            return 1;
        ms -= slice;
        if (ms > 0 && row_moved(h))
            return -1;
    }
    return 0;
}

/* Deliver e until it is taken or dropped; false when the thread must stop
 * or lost its lease (the event was not handled). */
static bool deliver(struct hook *h, const struct store_event *e)
{
    json_t *j = event_to_json(e);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t len = strlen(body);
    int64_t backoff = BACKOFF_MIN_MS;
    bool ok = false;
    for (;;) {
        /* an event a seek put behind the cursor again (an admin wants it
         * posted again) is as old as the seek */
        int64_t since = e->ts > h->seek_at ? e->ts : h->seek_at;
        if (wall_ms() - since > h->cfg->max_age_s * 1000) {
            atomic_fetch_add(&h->dropped, 1);
            log_warn("webhook",
                     "webhook %s: event %lld (%s, vmid %d) dropped: undelivered after "
                     "max_age %lld s",
                     h->cfg->name, (long long)e->id, e->type, e->vmid,
                     (long long)h->cfg->max_age_s);
            ok = advance(h, e->id, 0, 1);
            break;
        }
        if (!keep_lease(h))
            break;
        if (e->id <= h->after) { /* the lease lapsed and was taken back: */
            ok = true;           /* another holder delivered it meanwhile */
            break;
        }
        int posted = post_once(h, e, body, len);
        if (posted > 0) {
            atomic_fetch_add(&h->delivered, 1);
            ok = advance(h, e->id, 1, 0);
            break;
        }
        if (posted < 0)
            break;
        atomic_fetch_add(&h->retried, 1);
        if (pause_watching(h, backoff))
            break;
        int64_t max = h->cfg->retry_max_s * 1000L;
        backoff = backoff * 2 > max ? max : backoff * 2;
    }
    free(body);
    return ok;
}

/* One page after the cursor; the pause before the next look. */
static long round_once(struct hook *h)
{
    if (!keep_lease(h)) {
        atomic_store(&h->oldest_ts, 0);
        return NOT_HOLDER_MS;
    }
    struct event_filter f = {.after = h->after, .limit = PAGE};
    struct store_event *ev = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_event_list(h->k->st, &f, &ev, &n, &se)) {
        log_warn("webhook", "webhook %s: reading events: %s", h->cfg->name, se.message);
        return NOT_HOLDER_MS;
    }
    if (n == 0)
        look_at_row(h);
    int64_t skipped_to = 0;
    bool go_on = true;
    atomic_store(&h->oldest_ts, 0);
    for (size_t i = 0; i < n && go_on; i++) {
        if (ev[i].id <= h->after) { /* delivered by another holder while */
            skipped_to = 0;         /* this one's lease had lapsed */
            continue;
        }
        if (!event_type_match(h->cfg->events, ev[i].type)) {
            skipped_to = ev[i].id;
            continue;
        }
        if (skipped_to > h->after && !(go_on = advance(h, skipped_to, 0, 0)))
            break;
        skipped_to = 0;
        atomic_store(&h->oldest_ts, ev[i].ts);
        go_on = deliver(h, &ev[i]);
    }
    if (go_on && skipped_to > h->after)
        advance(h, skipped_to, 0, 0);
    atomic_store(&h->oldest_ts, 0);
    for (size_t i = 0; i < n; i++)
        store_event_release(&ev[i]);
    free(ev);
    return n == PAGE && go_on ? 0 : IDLE_MS;
}

static void *hook_main(void *arg)
{
    mem_thread_name("webhook");
    struct hook *h = arg;
    long pause = 0;
    while (!core_nap(h->k, pause))
        pause = round_once(h);
    if (atomic_load(&h->holder)) /* another instance takes over at once */
        store_webhook_release(h->k->st, h->cfg->name, h->k->instance, NULL);
    return NULL;
}

int webhooks_start(struct core *k)
{
    struct webhooks *w = hooks_of(k);
    if (k->cfg->nwebhooks && !w->have_tr) {
        log_warn("webhook", "no HTTP transport: %d webhooks are not delivered", k->cfg->nwebhooks);
        return 0;
    }
    for (int i = 0; i < k->cfg->nwebhooks; i++) {
        struct hook *h = &w->hooks[i];
        h->k = k;
        h->cfg = &k->cfg->webhooks[i];
        /* long enough for a post and the longest pause before the next
         * try, so that a holder waiting out a down receiver keeps it */
        h->lease_ms = 3L * h->cfg->timeout_s * 1000;
        int64_t wait = (2L * h->cfg->retry_max_s + h->cfg->timeout_s) * 1000;
        if (h->lease_ms < wait)
            h->lease_ms = wait;
        if (h->lease_ms < LEASE_MIN_MS)
            h->lease_ms = LEASE_MIN_MS;
        w->n = i + 1;
        if (mem_thread_start(&h->th, hook_main, h) != 0)
            return -1;
        h->started = true;
    }
    return 0;
}

void webhooks_stop(struct core *k)
{
    struct webhooks *w = k->wh;
    for (int i = 0; w && i < w->n; i++) {
        if (w->hooks[i].started)
            pthread_join(w->hooks[i].th, NULL);
        w->hooks[i].started = false;
    }
}

void webhooks_free(struct core *k)
{
    FREE_AND_NULL(k->wh);
}

size_t core_webhook_stats(struct core *k, struct webhook_stat *out, size_t max)
{
    struct webhooks *w = k->wh;
    size_t n = w ? (size_t)w->n : 0;
    int64_t now = wall_ms();
    for (size_t i = 0; i < n && i < max; i++) {
        struct hook *h = &w->hooks[i];
        struct webhook_stat *s = &out[i];
        snprintf(s->name, sizeof s->name, "%s", h->cfg->name);
        s->delivered = atomic_load(&h->delivered);
        s->retried = atomic_load(&h->retried);
        s->dropped = atomic_load(&h->dropped);
        int64_t ts = atomic_load(&h->oldest_ts);
        s->queue_age_ms = ts ? now - ts : 0;
        s->holder = atomic_load(&h->holder);
    }
    return n;
}
