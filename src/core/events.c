/* events: the event JSON, type lists, and the events keeper thread: node
 * health edges (node.up / node.down, from the fleet's view, written with
 * their event by store_node_health_set) and the log's retention ([events]
 * keep). See events.h. */
#include "core/events.h"

#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define HEALTH_EVERY_MS 10000 /* a look besides the fleet's notes (FLEET_NOTE_HEALTH) */
#define PRUNE_EVERY_MS 60000  /* or half of the shortest retention, when shorter */

static json_t *time_json(int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char t[80];
    snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(t);
}

json_t *event_to_json(const struct store_event *e)
{
    json_t *o = json_pack("{s:I, s:s, s:o, s:s, s:i, s:s, s:s}", "id", (json_int_t)e->id, "type",
                          e->type, "time", time_json(e->ts), "owner", e->owner, "vmid", e->vmid,
                          "node", e->node, "job", e->job);
    json_object_set_new(o, "data", e->data ? json_incref(e->data) : json_object());
    return o;
}

/* One pattern: "*", "vm.*" (a prefix) or an exact type. */
static bool pattern_match(const char *p, size_t n, const char *type)
{
    if (n == 0)
        return false;
    if (p[n - 1] == '*')
        return strncmp(type, p, n - 1) == 0;
    return strlen(type) == n && strncmp(type, p, n) == 0;
}

bool event_type_match(const char *list, const char *type)
{
    const char *p = list;
    while (*p) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, " ,");
        if (pattern_match(p, n, type))
            return true;
        p += n;
    }
    return false;
}

bool event_type_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= STORE_EVENT_TYPE)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(islower((unsigned char)c) || c == '.' || c == '_' || (c == '*' && i == n - 1)))
            return false;
    }
    return true;
}

/* ---- the keeper: node health and retention -------------------------------- */

struct evkeeper {
    pthread_t th;
    bool started;
    signed char seen[CFG_MAX_NODES]; /* -1: not yet; else the up we last wrote */
};

static void health_round(struct core *k, struct evkeeper *ek)
{
    for (int i = 0; i < k->cfg->nnodes; i++) {
        struct node_view v;
        const char *name = k->cfg->nodes[i].name;
        if (fleet_node_peek(k->fl, name, &v) != 0 || v.refreshed_at == 0)
            continue; /* not asked yet: nothing is known */
        int up = v.up ? 1 : 0;
        if (ek->seen[i] == up)
            continue;
        struct store_error se;
        bool changed = false;
        if (store_node_health_set(k->st, name, v.up, v.up ? "" : v.last_error, &changed, &se)) {
            log_warn("events", "node %s health not recorded: %s", name, se.message);
            continue; /* tried again next round */
        }
        ek->seen[i] = (signed char)up;
        if (changed)
            log_info("events", "node %s is %s", name, v.up ? "up" : "down");
    }
}

static void prune_events(struct core *k)
{
    if (k->cfg->events_keep_s <= 0)
        return;
    int64_t n = 0;
    struct store_error se;
    if (store_event_prune(k->st, wall_ms() - k->cfg->events_keep_s * 1000, &n, &se))
        log_warn("events", "pruning the event log: %s", se.message);
    else if (n)
        log_info("events", "pruned %lld events older than %lld s", (long long)n,
                 (long long)k->cfg->events_keep_s);
}

static void prune_history(struct core *k)
{
    if (k->cfg->jobs_keep_s <= 0)
        return;
    struct store_history_pruned n;
    struct store_error se;
    if (store_history_prune(k->st, wall_ms() - k->cfg->jobs_keep_s * 1000, &n, &se))
        log_warn("events", "pruning finished jobs: %s", se.message);
    else if (n.jobs || n.idem)
        log_info("events",
                 "pruned %lld jobs and %lld idempotency answers older than %lld s ([jobs] keep)",
                 (long long)n.jobs, (long long)n.idem, (long long)k->cfg->jobs_keep_s);
}

/* How long until the next prune: PRUNE_EVERY_MS, or half the shortest
 * retention when that is shorter. */
static int64_t prune_every(const struct proxd_config *c)
{
    int64_t every = PRUNE_EVERY_MS;
    if (c->events_keep_s > 0 && c->events_keep_s * 500 < every)
        every = c->events_keep_s * 500;
    if (c->jobs_keep_s > 0 && c->jobs_keep_s * 500 < every)
        every = c->jobs_keep_s * 500;
    return every;
}

static void *keeper_main(void *arg)
{
    mem_thread_name("events");
    struct core *k = arg;
    struct evkeeper *ek = k->evk;
    int64_t next_prune = 0, next;
    do {
        health_round(k, ek);
        if (mono_ms() >= next_prune) {
            prune_events(k);
            prune_history(k);
            next_prune = mono_ms() + prune_every(k->cfg);
        }
        next = mono_ms() + HEALTH_EVERY_MS;
        if (next_prune < next)
            next = next_prune;
    } while (!core_nap_until(k, next, FLEET_NOTE_HEALTH));
    return NULL;
}

int events_start(struct core *k)
{
    struct evkeeper *ek = xcalloc(1, sizeof *ek);
    memset(ek->seen, -1, sizeof ek->seen);
    k->evk = ek;
    if (mem_thread_start(&ek->th, keeper_main, k) != 0)
        return -1;
    ek->started = true;
    return webhooks_start(k);
}

void events_stop(struct core *k)
{
    webhooks_stop(k);
    if (k->evk && k->evk->started)
        pthread_join(k->evk->th, NULL);
    FREE_AND_NULL(k->evk);
}
