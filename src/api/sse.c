/* sse: GET /v1/jobs/{id}/events and GET /v1/events/stream as Server-Sent
 * Events, without holding a thread per stream.
 *
 * The handler sends what the store has and registers the stream in the hub
 * ("parked": its connection stays open in the HTTP server, http.h, and no
 * thread waits on it). The hub's timer thread looks at the store every
 * TICK_MS for each parked stream and sends to those with news, a ping due,
 * or their deadline passed. The HTTP server sees a client hang up (epoll)
 * and marks its stream gone; the timer then ends it, which frees its slot
 * within a tick or two rather than at the next ping.
 *
 * Slots: at most STREAMS_MAX streams in all, and streams_per_owner for one
 * owner (429 past it), so one tenant cannot take every slot. Only the timer thread (or shutdown,
 * after the timer has stopped) takes a stream out of the registry, so a parked stream's fields are
 * stable while the timer reads them.
 *
 * Two sources: a job's steps (the stream ends with an "end" event once
 * the job is finished and its last event is out), and the event log (ids
 * are the log's, the SSE event name its type; the stream runs until its
 * deadline or shutdown, and a client reconnecting with Last-Event-ID goes
 * on after it: the log's ids are commit-ordered, store.h). The core writes a job's row before its
 * event line, so a finished job may still get one event: the end waits SETTLE_MS after the finished
 * state was first seen. */
#include "api/api_int.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 100
#define SETTLE_MS 300
#define PING_MS 15000
#define STREAM_MAX_MS (30 * 60 * 1000)
#define STREAMS_MAX 2048
#define OUT_MAX (256 * 1024) /* per fill: well below the HTTP server's pending cap */

struct sse {
    struct sse_hub *hub;
    struct http_stream *st;
    bool log; /* the event log, else the steps of `job` */
    char job[40];
    int64_t last_seq;            /* the job's step seq, or the log's event id */
    bool own_only;               /* log: only events of `owner`'s VMs */
    char type[STORE_EVENT_TYPE]; /* log: a type filter, "" for all */
    struct buf out;
    bool ended;          /* the end is in out: the stream ends once it is sent */
    int64_t terminal_at; /* mono ms when the job was first seen finished */
    int64_t deadline;    /* mono ms */
    int64_t next_ping;   /* mono ms */
    char owner[64];      /* whose slot it takes */
    struct sse *next;    /* in hub->parked */
};

/* Open streams of one owner (the table holds owners with at least one). */
struct owner_count {
    char owner[64];
    int n;
};

struct sse_hub {
    struct api *api;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sse *parked;
    int open, nparked;
    struct owner_count *owners; /* under mu */
    size_t nowners, capowners;
    bool stopping;
    bool timer_running;
    pthread_t timer;
};

/* ---- formatting ---------------------------------------------------------------- */

static void emit(struct sse *s, const char *event, const char *id, json_t *data)
{
    char *d = json_dumps(data, JSON_COMPACT);
    if (id)
        buf_printf(&s->out, "id: %s\n", id);
    buf_printf(&s->out, "event: %s\ndata: %s\n\n", event, d);
    free(d);
    json_decref(data);
}

static void emit_end(struct sse *s, const char *why, const struct job_rec *j)
{
    json_t *d = json_pack("{s:s}", "reason", why);
    if (j) {
        json_object_set_new(d, "state", json_string(job_state_name(j->state)));
        json_object_set_new(d, "error", j->error[0] ? json_string(j->error) : json_null());
    }
    emit(s, "end", NULL, d);
    s->ended = true;
}

static bool job_finished(const struct job_rec *j)
{
    return j->state == JOB_DONE || j->state == JOB_FAILED;
}

static void log_filter(const struct sse *s, struct event_filter *f, int limit)
{
    *f = (struct event_filter){.after = s->last_seq, .limit = limit};
    f->owner = s->own_only ? s->owner : NULL;
    f->type = s->type[0] ? s->type : NULL;
}

/* The event log's new events. */
static void fill_log(struct sse *s, int64_t now)
{
    struct event_filter f;
    log_filter(s, &f, 100);
    struct store_event *ev = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_event_list(s->hub->api->st, &f, &ev, &n, &se) == STORE_OK) {
        for (size_t i = 0; i < n; i++) {
            char id[24];
            snprintf(id, sizeof id, "%lld", (long long)ev[i].id);
            if (s->out.len < OUT_MAX) {
                emit(s, ev[i].type, id, event_to_json(&ev[i]));
                s->last_seq = ev[i].id;
            }
            store_event_release(&ev[i]);
        }
        free(ev);
    }
    if (now >= s->deadline)
        emit_end(s, "timeout", NULL);
    else if (s->out.len == 0 && now >= s->next_ping)
        buf_adds(&s->out, ": ping\n\n");
    if (s->out.len)
        s->next_ping = now + PING_MS;
}

/* Append what is new. The job's state is read before its events, so that
 * "finished" observed here implies its events up to then are visible. */
static void fill(struct sse *s)
{
    int64_t now = mono_ms();
    struct api *a = s->hub->api;
    pthread_mutex_lock(&s->hub->mu);
    bool stopping = s->hub->stopping; /* written under mu by sse_hub_shutdown */
    pthread_mutex_unlock(&s->hub->mu);
    if (stopping) {
        emit_end(s, "shutdown", NULL);
        return;
    }
    if (s->log) {
        fill_log(s, now);
        return;
    }
    struct job_rec j;
    struct store_error se;
    int rc = store_job_get(a->st, s->job, &j, &se);
    if (rc == STORE_E_NOTFOUND) {
        emit_end(s, "gone", NULL);
        return;
    }
    bool finished = rc == STORE_OK && job_finished(&j);
    struct job_event *ev = NULL;
    size_t n = 0;
    if (rc == STORE_OK && store_job_events(a->st, s->job, s->last_seq, &ev, &n, &se) == STORE_OK) {
        for (size_t i = 0; i < n && s->out.len < OUT_MAX; i++) {
            char id[24];
            snprintf(id, sizeof id, "%lld", (long long)ev[i].seq);
            emit(s, "step", id,
                 json_pack("{s:I,s:o,s:s,s:i,s:s}", "seq", (json_int_t)ev[i].seq, "ts",
                           json_time(ev[i].ts), "step", ev[i].step, "progress", ev[i].progress,
                           "message", ev[i].message));
            s->last_seq = ev[i].seq;
        }
        free(ev);
    }
    if (finished && !s->terminal_at)
        s->terminal_at = now;
    if (finished && n == 0 && now - s->terminal_at >= SETTLE_MS)
        emit_end(s, "finished", &j);
    else if (now >= s->deadline)
        emit_end(s, "timeout", rc == STORE_OK ? &j : NULL);
    else if (s->out.len == 0 && now >= s->next_ping)
        buf_adds(&s->out, ": ping\n\n");
    if (s->out.len)
        s->next_ping = now + PING_MS;
    if (rc == STORE_OK)
        job_rec_release(&j);
}

/* ---- sending ------------------------------------------------------------------------ */

/* Fill and send what is new. false once the stream is over (ended, or the
 * client gone): then it is to be finished with stream_finish. */
static bool pump(struct sse *s)
{
    if (http_stream_gone(s->st))
        return false;
    if (!s->ended)
        fill(s);
    bool ok = !s->out.len || http_stream_send(s->st, s->out.data, s->out.len);
    buf_reset(&s->out);
    return ok && !s->ended;
}

/* Take (delta 1, if the owner has room under `limit`) or give back (-1)
 * one of an owner's slots. Under h->mu. */
static bool owner_slot(struct sse_hub *h, const char *owner, int delta, int limit)
{
    size_t i = 0;
    while (i < h->nowners && strcmp(h->owners[i].owner, owner) != 0)
        i++;
    if (delta > 0) {
        if (i < h->nowners && h->owners[i].n >= limit)
            return false;
        if (i == h->nowners) {
            if (h->nowners == h->capowners)
                h->owners =
                    xrealloc(h->owners, (h->capowners = h->capowners ? h->capowners * 2 : 16) *
                                            sizeof *h->owners);
            snprintf(h->owners[i].owner, sizeof h->owners[i].owner, "%s", owner);
            h->owners[i].n = 0;
            h->nowners++;
        }
        h->owners[i].n++;
        return true;
    }
    if (i < h->nowners && --h->owners[i].n <= 0)
        h->owners[i] = h->owners[--h->nowners];
    return true;
}

static void stream_finish(struct sse *s)
{
    http_stream_end(s->st);
    pthread_mutex_lock(&s->hub->mu);
    s->hub->open--;
    owner_slot(s->hub, s->owner, -1, 0);
    pthread_mutex_unlock(&s->hub->mu);
    buf_release(&s->out);
    free(s);
}

/* Anything for a parked stream? Reads the store, not the stream's buffer. */
static bool has_news(struct sse_hub *h, struct sse *s, int64_t now)
{
    if (http_stream_gone(s->st))
        return true;
    if (now >= s->deadline || now >= s->next_ping)
        return true;
    if (s->log) {
        struct event_filter f;
        log_filter(s, &f, 1);
        struct store_event *ev = NULL;
        size_t n = 0;
        struct store_error se;
        if (store_event_list(h->api->st, &f, &ev, &n, &se) != STORE_OK)
            return false;
        for (size_t i = 0; i < n; i++)
            store_event_release(&ev[i]);
        free(ev);
        return n > 0;
    }
    if (s->terminal_at)
        return now - s->terminal_at >= SETTLE_MS;
    struct job_event *ev = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_job_events(h->api->st, s->job, s->last_seq, &ev, &n, &se) == STORE_OK) {
        free(ev);
        if (n)
            return true;
    }
    struct job_rec j;
    if (store_job_get(h->api->st, s->job, &j, &se) != STORE_OK)
        return true; /* gone, or the store failed: let the stream decide */
    bool fin = job_finished(&j);
    job_rec_release(&j);
    return fin;
}

static void *timer_main(void *arg)
{
    mem_thread_name("sse-timer");
    struct sse_hub *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        /* Check outside the lock: only this thread unlinks parked streams. */
        struct sse *list = h->parked;
        pthread_mutex_unlock(&h->mu);
        int64_t now = mono_ms();
        size_t cap = 0, n = 0;
        struct sse **ready = NULL;
        for (struct sse *s = list; s; s = s->next) {
            if (!has_news(h, s, now))
                continue;
            if (n == cap)
                ready = xrealloc(ready, (cap = cap ? cap * 2 : 16) * sizeof *ready);
            ready[n++] = s;
        }
        for (size_t i = 0; i < n; i++) {
            if (pump(ready[i]))
                continue;
            pthread_mutex_lock(&h->mu);
            for (struct sse **pp = &h->parked; *pp; pp = &(*pp)->next) {
                if (*pp == ready[i]) {
                    *pp = ready[i]->next;
                    h->nparked--;
                    break;
                }
            }
            pthread_mutex_unlock(&h->mu);
            stream_finish(ready[i]);
        }
        free(ready);
        pthread_mutex_lock(&h->mu);
        if (!h->stopping && !h->parked) {
            pthread_cond_wait(&h->cv, &h->mu); /* until a stream parks, or stop */
        } else if (!h->stopping) {
            struct timespec ts = deadline_in_ms(TICK_MS);
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

struct sse_hub *sse_hub_new(struct api *a)
{
    struct sse_hub *h = xcalloc(1, sizeof *h);
    h->api = a;
    pthread_mutex_init(&h->mu, NULL);
    cond_init_mono(&h->cv);
    h->timer_running = mem_thread_start(&h->timer, timer_main, h) == 0;
    if (!h->timer_running)
        log_error("api", "cannot start the event stream timer: streams will not progress");
    return h;
}

void sse_hub_shutdown(struct sse_hub *h)
{
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (h->timer_running)
        pthread_join(h->timer, NULL);
    h->timer_running = false;
    /* Every parked stream writes its end ("shutdown"). */
    for (;;) {
        pthread_mutex_lock(&h->mu);
        struct sse *s = h->parked;
        if (s) {
            h->parked = s->next;
            h->nparked--;
        }
        pthread_mutex_unlock(&h->mu);
        if (!s)
            break;
        pump(s);
        stream_finish(s);
    }
}

void sse_hub_free(struct sse_hub *h)
{
    if (!h)
        return;
    if (h->timer_running)
        sse_hub_shutdown(h);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h->owners);
    free(h);
}

void sse_hub_counts(struct sse_hub *h, int *open, int *parked)
{
    pthread_mutex_lock(&h->mu);
    *open = h->open;
    *parked = h->nparked;
    pthread_mutex_unlock(&h->mu);
}

/* ---- the route ---------------------------------------------------------------------- */

/* Take a slot for rq's owner and answer with a stream (made here, its
 * source set by `setup`); the error answered when there is no slot. */
static void stream_open(struct req *rq, struct resp *rs, void (*setup)(struct sse *, void *),
                        void *arg)
{
    struct sse_hub *h = rq->api->hub;
    int limit = rq->api->cfg->streams_per_owner > 0 ? rq->api->cfg->streams_per_owner : 64;
    pthread_mutex_lock(&h->mu);
    bool room = !h->stopping && h->open < STREAMS_MAX;
    bool mine = room && owner_slot(h, rq->who.owner, 1, limit);
    if (mine)
        h->open++;
    pthread_mutex_unlock(&h->mu);
    if (!room) {
        resp_error(rs, HTTP_SERVICE_UNAVAILABLE, "unavailable", NULL,
                   "too many event streams are open; try again later");
        return;
    }
    if (!mine) {
        rs->retry_after = 5;
        resp_error(rs, HTTP_TOO_MANY_REQUESTS, "too_many_streams", NULL,
                   "'%s' has %d event streams open, the most one owner may have "
                   "(streams_per_owner); close one or try again later",
                   rq->who.owner, limit);
        return;
    }
    struct sse *s = xcalloc(1, sizeof *s);
    s->hub = h;
    snprintf(s->owner, sizeof s->owner, "%s", rq->who.owner);
    buf_init(&s->out, BUF_UNLIMITED);
    int64_t now = mono_ms();
    s->deadline = now + STREAM_MAX_MS;
    s->next_ping = now + PING_MS;
    setup(s, arg);
    /* A client that reconnects goes on after the last event it saw. */
    const char *last = http_req_header(rq->hr, "Last-Event-ID");
    int64_t seq;
    if (last && parse_i64(last, &seq) && seq > 0)
        s->last_seq = seq;
    http_add_header(rq->hr, "X-Accel-Buffering", "no");
    s->st = http_respond_stream(rq->hr, "text/event-stream");
    rs->streamed = true;
    rs->status = HTTP_OK;
    if (!pump(s)) {
        stream_finish(s);
        return;
    }
    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        pthread_mutex_unlock(&h->mu);
        stream_finish(s);
        return;
    }
    if (!h->parked)
        pthread_cond_signal(&h->cv); /* the timer sleeps while none is parked */
    s->next = h->parked;
    h->parked = s;
    h->nparked++;
    pthread_mutex_unlock(&h->mu);
}

static void setup_job(struct sse *s, void *arg)
{
    snprintf(s->job, sizeof s->job, "%s", (const char *)arg);
}

void h_job_events(struct req *rq, struct resp *rs)
{
    struct job_rec j;
    if (check_query(rq, rs, NULL) || job_visible(rq, rs, rq->params[0], &j))
        return;
    job_rec_release(&j);
    stream_open(rq, rs, setup_job, j.id);
}

struct log_setup {
    const struct event_query *q;
    bool own_only;
};

static void setup_log(struct sse *s, void *arg)
{
    const struct log_setup *ls = arg;
    s->log = true;
    s->last_seq = ls->q->after;
    s->own_only = ls->own_only;
    snprintf(s->type, sizeof s->type, "%s", ls->q->type);
}

void events_stream_open(struct req *rq, struct resp *rs, const struct event_query *q, bool own_only)
{
    struct log_setup ls = {q, own_only};
    stream_open(rq, rs, setup_log, &ls);
}
