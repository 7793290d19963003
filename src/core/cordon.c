/* cordon: node cordons, shared by every proxd on one database.
 *
 * A cordon is kept in the store as the setting "cordon:<node>", which every
 * reader (placement, migration and reinstall targets, the API's node views)
 * reads alike, whichever instance it runs in:
 *   {"by": WHO, "at": MS}                          the API's (POST .../cordon)
 *   {"by": "configuration", "at": MS,
 *    "configs": [NAME...], "api": {"by", "at"}}     the configuration's
 * A configuration's cordon ([node] state = cordoned) is written by each
 * instance at start-up, naming its configuration ("host:/path/proxd.conf")
 * in "configs". An instance that starts without the cordon takes its name
 * out, and the cordon is lifted when no configuration names it any more:
 * it holds while any configuration that set it still says so, so an
 * instance restarted with an older configuration (a rolling change, a
 * reboot) never lifts another's cordon. An API cordon the configuration's
 * met is kept under "api" and is back once the configuration's is lifted.
 * The API cannot lift a configuration's cordon (CORE_E_CONFLICT);
 * core_node_cordon_release (proxd uncordon) can, for a configuration gone
 * for good.
 *
 * Every change is decided under the setting's lock with the value it
 * replaces (store_kv_change_logged), its event in the same transaction:
 * node.cordoned / node.uncordoned when the node's cordon comes or goes
 * (data.by: who, "configuration" for a configuration's, with
 * data.configuration its name), none when only its holder changes. */
#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/events.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BY_CONFIG "configuration"

static void cordon_key(const char *node, char name[128])
{
    snprintf(name, 128, "cordon:%s", node);
}

/* The names of the configurations holding the cordon v, comma-separated. */
static void configs_text(json_t *v, char *out, size_t len)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(v, "configs"), i, c)
    {
        buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(c));
    }
    snprintf(out, len, "%s", buf_str(&b));
    buf_release(&b);
}

/* Does the configuration cordon v name `me`? */
static bool names(json_t *v, const char *me)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(v, "configs"), i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), me) == 0)
            return true;
    }
    return false;
}

static bool by_config(json_t *v)
{
    return json_array_size(json_object_get(v, "configs")) > 0;
}

/* The stored value, parsed; a value that is no object reads as an API
 * cordon of "?" (it cordons: a cordon is never lost to a bad value). */
static json_t *cordon_parse(const char *text)
{
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    if (text && !json_is_object(v)) {
        json_decref(v);
        v = json_pack("{s:s}", "by", "?");
    }
    return v;
}

static char *dump(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return s;
}

static void event(struct store_event *ev, const char *type, const char *node, json_t *data)
{
    snprintf(ev->type, sizeof ev->type, "%s", type);
    snprintf(ev->node, sizeof ev->node, "%s", node);
    ev->data = data;
}

int core_node_cordon_get(struct core *k, const char *node, struct node_cordon *out)
{
    memset(out, 0, sizeof *out);
    if (!config_node(k->cfg, node))
        return CORE_E_NOTFOUND;
    char name[128];
    cordon_key(node, name);
    struct store_kv kv;
    int rc = store_kv_get(k->st, name, &kv, NULL);
    if (rc == STORE_E_NOTFOUND)
        return CORE_OK;
    if (rc)
        return CORE_E_INTERNAL;
    json_t *v = cordon_parse(kv.value);
    out->cordoned = true;
    out->by_config = by_config(v);
    const char *by = json_string_value(json_object_get(v, "by"));
    snprintf(out->by, sizeof out->by, "%s", out->by_config ? BY_CONFIG : by ? by : "?");
    json_int_t at = json_integer_value(json_object_get(v, "at"));
    out->at = at > 0 ? at : kv.created_at;
    if (out->by_config)
        configs_text(v, out->configs, sizeof out->configs);
    json_decref(v);
    return CORE_OK;
}

/* ---- the API's cordons ------------------------------------------------------ */

struct api_change {
    const char *node, *by;
    bool on;
    bool conflict;     /* out: the configuration holds the cordon */
    char configs[512]; /* out: which configurations */
};

static bool decide_api(const struct store_kv *cur, void *ctx, char **next, struct store_event *ev)
{
    struct api_change *a = ctx;
    a->conflict = false;
    json_t *v = cordon_parse(cur ? cur->value : NULL);
    bool change = false;
    if (!v) {
        /* not cordoned: cordon; an uncordon has nothing to do */
        if ((change = a->on)) {
            *next = dump(json_pack("{s:s,s:I}", "by", a->by, "at", (json_int_t)wall_ms()));
            event(ev, EV_NODE_CORDONED, a->node, json_pack("{s:s}", "by", a->by));
        }
    } else if (!a->on && by_config(v)) {
        a->conflict = true;
        configs_text(v, a->configs, sizeof a->configs);
    } else if (!a->on) {
        change = true; /* *next NULL: removed */
        event(ev, EV_NODE_UNCORDONED, a->node, json_pack("{s:s}", "by", a->by));
    } /* a cordon of a cordoned node: the first cordon's who and when stay */
    json_decref(v);
    return change;
}

/* A cordon change that may lift the node's cordon: when it does, the
 * node's unfinished drain is cancelled in its transaction, `by` the one
 * who lifts it (an operator who puts the node back into service wants no
 * more of its VMs moved off, nor a drain left behind that moves them once
 * someone cordons it again). A drain submitted after it finds the node
 * uncordoned at its first look and ends so too (drain.c). drain: its id
 * ("" none); its runner in this process is told at once. */
static int change_lifting(struct core *k, const char *node, store_kv_decide_fn decide, void *ctx,
                          const char *by, bool *changed, char drain[40], struct store_error *se)
{
    char name[128], error[192];
    cordon_key(node, name);
    snprintf(error, sizeof error, "cancelled by %.63s before it started: %s", by, DRAIN_UNCORDONED);
    struct job_cancel_req rq = {.by = by, .error = error, .why = DRAIN_UNCORDONED};
    struct store_kv_cancel kc = {.kind = "drain", .node = node, .req = &rq};
    int rc = store_kv_change_cancel(k->st, name, decide, ctx, &kc, changed, se);
    if (drain)
        snprintf(drain, 40, "%s", rc ? "" : kc.job);
    if (rc || !kc.job[0])
        return rc;
    if (kc.outcome == STORE_CANCEL_ASKED)
        core_waiters_cancel(k, kc.job);
    log_info("job", "job=%s kind=drain node=%s cancel by %s: %s (%s)", kc.job, node, by,
             DRAIN_UNCORDONED,
             kc.outcome == STORE_CANCEL_ENDED   ? "ended: it was queued"
             : kc.outcome == STORE_CANCEL_ASKED ? "it stops at its next look"
                                                : "cancelled already");
    return rc;
}

int core_node_cordon(struct core *k, const char *node, bool on, const char *by, char drain[40],
                     struct core_error *err)
{
    if (drain)
        drain[0] = '\0';
    if (!config_node(k->cfg, node))
        return core_fail(err, CORE_E_NOTFOUND, "node", "no node %s", node);
    char name[128];
    cordon_key(node, name);
    struct api_change a = {.node = node, .by = by && *by ? by : "?", .on = on};
    struct store_error se;
    bool changed = false;
    int rc = on ? store_kv_change_logged(k->st, name, decide_api, &a, &changed, &se)
                : change_lifting(k, node, decide_api, &a, a.by, &changed, drain, &se);
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    if (a.conflict) {
        struct buf b = BUF_INIT(BUF_UNLIMITED);
        buf_printf(&b,
                   "%s is cordoned by the configuration of %s (state = cordoned): change it "
                   "there and restart that proxd",
                   node, a.configs);
        core_fail(err, CORE_E_CONFLICT, "node", "%s", buf_str(&b));
        buf_release(&b);
        return CORE_E_CONFLICT;
    }
    if (changed)
        log_info("node", "node=%s %s by %s", node, on ? "cordoned" : "uncordoned", a.by);
    return CORE_OK;
}

/* ---- the configurations' cordons ---------------------------------------- */

struct config_change {
    const char *node, *me; /* me: this configuration's name; NULL: every one */
    bool hold;             /* this configuration cordons the node */
    const char *who;       /* for a release: who lifts it */
    char done[160];        /* out: what changed, for the log ("" nothing) */
};

/* v without the configuration me (every one when me is NULL): what the
 * setting becomes, and its event when the node's cordon goes. */
static bool config_drop(json_t *v, struct config_change *c, char **next, struct store_event *ev)
{
    json_t *cs = json_object_get(v, "configs");
    size_t before = json_array_size(cs);
    for (size_t i = before; i-- > 0;)
        if (!c->me || !json_is_string(json_array_get(cs, i)) ||
            strcmp(json_string_value(json_array_get(cs, i)), c->me) == 0)
            json_array_remove(cs, i);
    if (json_array_size(cs) == before)
        return false;
    if (json_array_size(cs) > 0) { /* another configuration still holds it */
        *next = json_dumps(v, JSON_COMPACT);
        snprintf(c->done, sizeof c->done, "still cordoned by other configurations");
        return true;
    }
    json_t *api = json_object_get(v, "api");
    if (json_is_object(api)) { /* the API's cordon it met is back */
        *next = json_dumps(api, JSON_COMPACT);
        const char *by = json_string_value(json_object_get(api, "by"));
        snprintf(c->done, sizeof c->done, "cordoned again by %.60s, as before the configuration",
                 by ? by : "?");
        return true;
    }
    event(ev, EV_NODE_UNCORDONED, c->node,
          c->me ? json_pack("{s:s,s:s}", "by", BY_CONFIG, "configuration", c->me)
                : json_pack("{s:s}", "by", c->who));
    snprintf(c->done, sizeof c->done, "uncordoned");
    return true;
}

static bool decide_config(const struct store_kv *cur, void *ctx, char **next,
                          struct store_event *ev)
{
    struct config_change *c = ctx;
    c->done[0] = '\0';
    json_t *v = cordon_parse(cur ? cur->value : NULL);
    bool change = false;
    if (!c->hold) {
        change = v && by_config(v) && config_drop(v, c, next, ev);
    } else if (!v) {
        *next = dump(json_pack("{s:s,s:I,s:[s]}", "by", BY_CONFIG, "at", (json_int_t)wall_ms(),
                               "configs", c->me));
        event(ev, EV_NODE_CORDONED, c->node,
              json_pack("{s:s,s:s}", "by", BY_CONFIG, "configuration", c->me));
        snprintf(c->done, sizeof c->done, "cordoned");
        change = true;
    } else if (!by_config(v)) { /* an API cordon: the configuration's now, kept under it */
        json_int_t at = json_integer_value(json_object_get(v, "at"));
        const char *by = json_string_value(json_object_get(v, "by"));
        json_t *api = json_pack("{s:s,s:I}", "by", by ? by : "?", "at",
                                at > 0 ? at : (json_int_t)cur->created_at);
        *next = dump(json_pack("{s:s,s:I,s:[s],s:o}", "by", BY_CONFIG, "at", (json_int_t)wall_ms(),
                               "configs", c->me, "api", api));
        snprintf(c->done, sizeof c->done, "cordoned by the configuration (it was by the API)");
        change = true;
    } else {
        if (!names(v, c->me)) {
            json_array_append_new(json_object_get(v, "configs"), json_string(c->me));
            *next = json_dumps(v, JSON_COMPACT);
            snprintf(c->done, sizeof c->done, "cordoned by one more configuration");
            change = true;
        }
    }
    json_decref(v);
    return change;
}

static int config_change(struct core *k, struct config_change *c, char drain[40],
                         struct store_error *se)
{
    char name[128];
    cordon_key(c->node, name);
    int rc = c->hold ? store_kv_change_logged(k->st, name, decide_config, c, NULL, se)
                     : change_lifting(k, c->node, decide_config, c, c->me ? BY_CONFIG : c->who,
                                      NULL, drain, se);
    if (rc == 0 && c->done[0])
        log_info("node", "node=%s %s (configuration %s)", c->node, c->done, c->me ? c->me : c->who);
    return rc;
}

/* This configuration's name among those sharing the database: the host
 * (the instance's name less its pid) and the file's absolute path. */
static void config_name(struct core *k, char *out, size_t len)
{
    const char *colon = strrchr(k->instance, ':');
    int hl = colon ? (int)(colon - k->instance) : (int)strlen(k->instance);
    char abs[PATH_MAX];
    const char *path = realpath(k->cfg->path, abs) ? abs : k->cfg->path;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_printf(&b, "%.*s:%s", hl, k->instance, path);
    snprintf(out, len, "%s", buf_str(&b)); /* a longer name is cut: still this file's own */
    buf_release(&b);
}

int core_cordons_sync(struct core *k, struct core_error *err)
{
    char me[600];
    config_name(k, me, sizeof me);
    struct store_error se;
    int rc = 0;
    /* the nodes this configuration cordons */
    for (int i = 0; i < k->cfg->nnodes && !rc; i++) {
        const struct cfg_node *cn = &k->cfg->nodes[i];
        struct config_change c = {.node = cn->name, .me = me, .hold = true};
        if (strcmp(cn->state, "cordoned") == 0)
            rc = config_change(k, &c, NULL, &se);
    }
    /* the cordons it held and holds no more (a node set active again, or no
     * longer configured here) */
    struct store_kv *kv = NULL;
    size_t n = 0;
    if (!rc)
        rc = store_kv_list(k->st, "cordon:", &kv, &n, &se);
    for (size_t i = 0; i < n && !rc; i++) {
        const char *node = kv[i].name + strlen("cordon:");
        const struct cfg_node *cn = config_node(k->cfg, node);
        if (cn && strcmp(cn->state, "cordoned") == 0)
            continue;
        json_t *v = cordon_parse(kv[i].value);
        bool mine = names(v, me);
        json_decref(v);
        struct config_change c = {.node = node, .me = me, .hold = false};
        if (mine)
            rc = config_change(k, &c, NULL, &se);
    }
    free(kv);
    if (rc)
        return core_fail(err, CORE_E_INTERNAL, NULL, "the configuration's cordons: %.400s",
                         se.message);
    return CORE_OK;
}

int core_node_cordon_release(struct core *k, const char *node, const char *by, char drain[40],
                             struct core_error *err)
{
    struct config_change c = {.node = node, .who = by && *by ? by : "?", .hold = false};
    struct store_error se;
    if (config_change(k, &c, drain, &se))
        return core_fail(err, CORE_E_INTERNAL, NULL, "%s", se.message);
    if (!c.done[0])
        return core_fail(err, CORE_E_NOTFOUND, "node", "%s has no configuration's cordon", node);
    return CORE_OK;
}
