/* routes_webhooks: GET /v1/webhooks (admins): each webhook's delivery as
 * the store has it, so that any instance tells the same: its cursor, the
 * events waiting behind it and the oldest one's age, the totals, the
 * instance delivering it (the lease) and the last failed post. A cursor
 * of a webhook this instance's configuration lacks (removed, or another
 * instance's) is listed with configured false.
 * POST /v1/webhooks/{name}/seek {"after": ID} (admins): move its cursor,
 * back to post events again (a receiver that lost them), forward to pass
 * over some (one its receiver refuses for ever holds up every later one
 * until max_age).
 * DELETE /v1/webhooks/{name} (admins): forget the cursor of a webhook no
 * instance has any more (409 while one holds its lease, or when this
 * instance's configuration has it: its thread would make it again). */
#include "api/api_int.h"

#include "common/log.h"
#include "common/util.h"
#include "core/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cfg_webhook *configured(const struct proxd_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nwebhooks; i++)
        if (strcmp(cfg->webhooks[i].name, name) == 0)
            return &cfg->webhooks[i];
    return NULL;
}

static json_t *hook_json(const struct webhook_status *w, const struct cfg_webhook *c, int64_t now)
{
    bool held = w->c.lease_owner[0] && w->c.lease_until > now;
    json_t *o = json_pack(
        "{s:s, s:b, s:I, s:I, s:o, s:f, s:I, s:I, s:s, s:b, s:o, s:s, s:o, s:o}", "name", w->c.name,
        "configured", c != NULL, "after", (json_int_t)w->c.after, "behind", (json_int_t)w->behind,
        "oldest_waiting_at", json_time(w->oldest_ts), "oldest_waiting_s",
        w->oldest_ts ? (double)(now - w->oldest_ts) / 1000.0 : 0.0, "delivered",
        (json_int_t)w->c.delivered, "dropped", (json_int_t)w->c.dropped, "holder",
        held ? w->c.lease_owner : "", "held", held, "lease_until",
        json_time(held ? w->c.lease_until : 0), "last_error", w->last_error, "last_error_at",
        json_time(w->last_error_at), "updated_at", json_time(w->updated_at));
    if (c) {
        json_object_set_new(o, "url", json_string(c->url));
        json_object_set_new(o, "events", json_string(c->events));
        json_object_set_new(o, "max_age_s", json_integer(c->max_age_s));
    }
    json_object_set_new(o, "last_dropped_at", json_time(w->last_dropped_at));
    return o;
}

/* A webhook of some types: what waits behind its cursor is what it wants
 * (the store counts every type, which the poster passes over within a
 * round: a webhook of vm.deleted held up by a receiver that refuses showed
 * the whole log's count). A read that fails leaves the store's figures. */
static void wanted_only(store *st, const struct cfg_webhook *c, struct webhook_status *w)
{
    /* (only a list holding "*" matches the type "*": it wants them all) */
    if (!c || w->behind == 0 || event_type_match(c->events, "*"))
        return;
    struct event_head *h = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_event_heads_after(st, w->c.after, &h, &n, &se))
        return;
    w->behind = 0;
    w->oldest_ts = 0;
    for (size_t i = 0; i < n; i++) {
        if (!event_type_match(c->events, h[i].type))
            continue;
        if (w->behind++ == 0)
            w->oldest_ts = h[i].ts;
    }
    free(h);
}

/* Every route here: an admin's, with no query; false with the error answered. */
static bool admin_call(struct req *rq, struct resp *rs)
{
    static const char *const allowed[] = {NULL};
    if (!rq->who.admin) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", NULL, "only admins manage webhooks");
        return false;
    }
    return check_query(rq, rs, allowed) == 0;
}

void h_webhooks(struct req *rq, struct resp *rs)
{
    if (!admin_call(rq, rs))
        return;
    const struct proxd_config *cfg = rq->api->cfg;
    struct webhook_status *v = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_webhook_list(rq->api->st, &v, &n, &se)) {
        resp_store_error(rs, &se);
        return;
    }
    int64_t now = wall_ms();
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct cfg_webhook *c = configured(cfg, v[i].c.name);
        wanted_only(rq->api->st, c, &v[i]);
        json_array_append_new(arr, hook_json(&v[i], c, now));
    }
    /* configured, not claimed yet (its thread's first look is under way) */
    for (int i = 0; i < cfg->nwebhooks; i++) {
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = strcmp(v[j].c.name, cfg->webhooks[i].name) == 0;
        if (!seen) {
            struct webhook_status w = {0};
            snprintf(w.c.name, sizeof w.c.name, "%s", cfg->webhooks[i].name);
            json_array_append_new(arr, hook_json(&w, &cfg->webhooks[i], now));
        }
    }
    free(v);
    resp_json(rs, HTTP_OK, json_pack("{s:o}", "webhooks", arr));
}

void h_webhook_seek(struct req *rq, struct resp *rs)
{
    if (!admin_call(rq, rs))
        return;
    int64_t after = 0;
    bool has = false;
    const struct field f[] = {{"after", FT_INT, &after, 0, &has}};
    if (decode_body(rq, rs, f, 1, false, NULL))
        return;
    if (!has || after < 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "after",
                   "after: required, an event id (0: from the log's start)");
        return;
    }
    struct webhook_cursor was;
    struct store_error se;
    int rc = store_webhook_seek(rq->api->st, rq->params[0], after, rq->who.owner, &was, &se);
    if (rc == STORE_E_NOTFOUND) {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", "name", "name: no webhook '%s'", rq->params[0]);
        return;
    }
    if (rc == STORE_E_INVALID) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "after", "%s", se.message);
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    log_info("api", "webhook %s: cursor moved from %lld to %lld by %s", rq->params[0],
             (long long)was.after, (long long)after, rq->who.owner);
    resp_json(rs, HTTP_OK,
              json_pack("{s:s, s:I, s:I}", "name", rq->params[0], "after", (json_int_t)after, "was",
                        (json_int_t)was.after));
}

void h_webhook_forget(struct req *rq, struct resp *rs)
{
    if (!admin_call(rq, rs))
        return;
    const char *name = rq->params[0];
    if (configured(rq->api->cfg, name)) {
        resp_error(rs, HTTP_CONFLICT, "conflict", "name",
                   "name: webhook '%s' is in this instance's configuration: remove it there "
                   "(and from every instance's) first",
                   name);
        return;
    }
    struct webhook_cursor held;
    struct store_error se;
    int rc = store_webhook_forget(rq->api->st, name, rq->who.owner, &held, &se);
    if (rc == STORE_E_NOTFOUND) {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", "name", "name: no webhook '%s'", name);
        return;
    }
    if (rc == STORE_E_CONFLICT) {
        resp_error(rs, HTTP_CONFLICT, "conflict", "name",
                   "name: webhook '%s' is delivered by instance %s: remove it from that "
                   "instance's configuration first",
                   name, held.lease_owner);
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    log_info("api", "webhook %s: cursor forgotten by %s", name, rq->who.owner);
    rs->status = HTTP_NO_CONTENT;
}
