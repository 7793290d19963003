/* routes_events: GET /v1/events (a page of the event log) and
 * GET /v1/events/stream (the same as Server-Sent Events, sse.c). Admins
 * see every event; a user only those of its own VMs (events carry the
 * VM's owner; node events have none). */
#include "api/api_int.h"

#include "core/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* after, limit, type from the query string; false with the error answered. */
static bool parse_query(struct req *rq, struct resp *rs, struct event_query *q, bool stream)
{
    static const char *const allowed[] = {"after", "limit", "type", NULL};
    static const char *const allowed_stream[] = {"after", "type", NULL};
    if (check_query(rq, rs, stream ? allowed_stream : allowed))
        return false;
    memset(q, 0, sizeof *q);
    q->limit = 100;
    int64_t v;
    const char *s;
    if ((s = query(rq, "after"))) {
        if (parse_int_arg(rs, "after", s, 0, INT64_MAX, &v))
            return false;
        q->after = v;
    }
    if ((s = query(rq, "limit"))) {
        if (parse_int_arg(rs, "limit", s, 1, 1000, &v))
            return false;
        q->limit = (int)v;
    }
    if ((s = query(rq, "type"))) {
        if (!event_type_valid(s)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", "type",
                       "type: an event type (vm.created), a prefix (vm.*) or *");
            return false;
        }
        snprintf(q->type, sizeof q->type, "%s", s);
    }
    return true;
}

static bool wants_stream(struct req *rq)
{
    const char *acc = http_req_header(rq->hr, "Accept");
    return acc && strstr(acc, "text/event-stream");
}

void h_events_stream(struct req *rq, struct resp *rs)
{
    struct event_query q;
    if (parse_query(rq, rs, &q, true))
        events_stream_open(rq, rs, &q, !rq->who.admin);
}

void h_events(struct req *rq, struct resp *rs)
{
    if (wants_stream(rq)) {
        h_events_stream(rq, rs);
        return;
    }
    struct event_query q;
    if (!parse_query(rq, rs, &q, false))
        return;
    struct event_filter f = {.after = q.after, .limit = q.limit};
    f.owner = rq->who.admin ? NULL : rq->who.owner;
    f.type = q.type[0] ? q.type : NULL;
    struct store_event *ev = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_event_list(rq->api->st, &f, &ev, &n, &se)) {
        resp_store_error(rs, &se);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, event_to_json(&ev[i]));
        store_event_release(&ev[i]);
    }
    /* next: the cursor to ask from; the last id seen, or `after` when the
     * page is empty (a poller keeps asking with it) */
    int64_t next = n ? ev[n - 1].id : q.after;
    free(ev);
    resp_json(rs, HTTP_OK,
              json_pack("{s:o, s:I, s:b}", "events", arr, "next", (json_int_t)next, "more",
                        n == (size_t)q.limit));
}
