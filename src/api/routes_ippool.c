/* routes_ippool: address pools (docs/design/ippool.md section 6).
 *
 * GET /v1/ippools and /v1/ippools/{name}: admins see every figure of a pool
 * (size, used, reserved, quarantined, held, foreign, free; ranges, configured
 * and added at run time; the conflicts the config walk found); users see the
 * pools (none is restricted to an owner) and only the addresses of their own
 * VMs. The address list, holds and ranges are for admins. Everything is read
 * from the configuration, the store and the walk's last findings: nothing
 * here waits on Proxmox. */
#include "api/api_int.h"
#include "api/ippool_view.h"
#include "common/xalloc.h"
#include "core/ippool_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFLICTS_SHOWN 100

static const struct cfg_ippool *pool_arg(struct req *rq, struct resp *rs)
{
    const struct cfg_ippool *p = config_ippool(rq->api->cfg, rq->params[0]);
    if (!p)
        resp_error(rs, HTTP_NOT_FOUND, "not_found", "name", "name: no pool '%s'", rq->params[0]);
    return p;
}

/* The prologue of every admin route: an admin, a known query, a known pool
 * (NULL after answering the error). */
static const struct cfg_ippool *admin_pool(struct req *rq, struct resp *rs,
                                           const char *const *allowed)
{
    if (!rq->who.admin) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", NULL, "only admins manage address pools");
        return NULL;
    }
    return check_query(rq, rs, allowed) ? NULL : pool_arg(rq, rs);
}

static json_t *addr_text(const char *key)
{
    struct ippool_addr a;
    char t[IPPOOL_ADDRSTRLEN];
    if (ippool_addr_from_key(key, &a) != IPPOOL_OK)
        return json_string(key);
    ippool_addr_format(&a, t);
    return json_string(t);
}

static json_t *range_text(const struct ippool_range *r)
{
    char lo[IPPOOL_ADDRSTRLEN], hi[IPPOOL_ADDRSTRLEN], t[2 * IPPOOL_ADDRSTRLEN + 2];
    ippool_addr_format(&r->lo, lo);
    ippool_addr_format(&r->hi, hi);
    snprintf(t, sizeof t, "%s-%s", lo, hi);
    return json_string(t);
}

static json_int_t sat(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v;
}

/* The pool as the caller may see it; NULL with rs filled when the store
 * fails. */
static json_t *pool_json(struct req *rq, struct resp *rs, const struct cfg_ippool *p)
{
    char cidr[IPPOOL_NETSTRLEN];
    ippool_net_format(&p->plan.net, cidr);
    json_t *o = json_pack("{s:s,s:s,s:i}", "name", p->name, "cidr", cidr, "family",
                          p->plan.net.base.family);
    struct store_error se;
    if (!rq->who.admin) {
        int64_t mine = 0;
        if (store_addr_count_owner(rq->api->st, p->name, rq->who.owner, &mine, &se)) {
            json_decref(o);
            resp_store_error(rs, &se);
            return NULL;
        }
        json_object_set_new(o, "yours", json_integer(mine));
        return o;
    }
    struct ippool_figures f;
    if (ippool_view_figures(rq->api->st, p, &f, &se)) {
        json_decref(o);
        resp_store_error(rs, &se);
        return NULL;
    }
    char gw[IPPOOL_ADDRSTRLEN] = "";
    if (p->plan.has_gateway)
        ippool_addr_format(&p->plan.gateway, gw);
    json_object_set_new(o, "gateway", gw[0] ? json_string(gw) : json_null());
    json_object_set_new(o, "bridge", json_string(p->bridge));
    json_object_set_new(o, "vlan", json_integer(p->vlan));
    json_object_set_new(o, "size", json_integer(sat(f.size)));
    json_object_set_new(o, "used", json_integer(f.c.used));
    json_object_set_new(o, "reserved", json_integer(f.c.reserved));
    json_object_set_new(o, "quarantined", json_integer(f.c.quarantined));
    json_object_set_new(o, "held", json_integer(f.c.held));
    json_object_set_new(o, "foreign", json_integer(f.foreign));
    json_object_set_new(o, "free", json_integer(sat(f.free)));
    json_object_set_new(
        o, "conflicts",
        json_integer((json_int_t)core_ippool_conflicts(rq->api->k, p->name, NULL, 0)));
    return o;
}

void h_ippools(struct req *rq, struct resp *rs)
{
    if (check_query(rq, rs, NULL))
        return;
    json_t *arr = json_array();
    for (int i = 0; i < rq->api->cfg->npools; i++) {
        json_t *o = pool_json(rq, rs, &rq->api->cfg->pools[i]);
        if (!o) {
            json_decref(arr);
            return;
        }
        json_array_append_new(arr, o);
    }
    resp_json(rs, HTTP_OK, json_pack("{s:o}", "ippools", arr));
}

static json_t *ranges_json(store *st, const struct cfg_ippool *p, struct store_error *se)
{
    json_t *cr = json_array(), *cres = json_array(), *rt = json_array();
    for (int i = 0; i < p->plan.nranges; i++)
        json_array_append_new(cr, range_text(&p->plan.ranges[i]));
    for (int i = 0; i < p->plan.nreserved; i++)
        json_array_append_new(cres, range_text(&p->plan.reserved[i]));
    struct store_addr_range *r = NULL;
    size_t n = 0;
    if (store_addr_range_list(st, p->name, &r, &n, se)) {
        json_decref(cr);
        json_decref(cres);
        json_decref(rt);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            rt, json_pack("{s:I,s:s,s:o,s:o,s:s,s:o}", "id", (json_int_t)r[i].id, "kind", r[i].kind,
                          "first", addr_text(r[i].first), "last", addr_text(r[i].last),
                          "created_by", r[i].created_by, "created_at", json_time(r[i].created_at)));
    /* what the allocator makes of them (the route refuses a range that does
     * not fit, but two proxd versions, or a CIDR changed since, may differ) */
    struct ippool plan;
    struct ippool_errinfo e;
    enum ippool_plan_state s = ippool_plan_build(p, r, n, &plan, &e, NULL);
    free(r);
    char why[320] = "";
    if (s == IPPOOL_PLAN_NORANGES)
        snprintf(why, sizeof why, "the run-time hand-out ranges are not applied: %s", e.msg);
    else if (s == IPPOOL_PLAN_CLOSED)
        snprintf(why, sizeof why,
                 "the run-time reservations cannot be applied, so nothing is handed out: %s",
                 e.msg);
    return json_pack("{s:o,s:o,s:o,s:o}", "configured", cr, "configured_reserved", cres, "runtime",
                     rt, "runtime_problem", why[0] ? json_string(why) : json_null());
}

static json_t *conflicts_json(struct core *k, const char *pool)
{
    struct core_ip_conflict c[CONFLICTS_SHOWN];
    size_t n = core_ippool_conflicts(k, pool, c, CONFLICTS_SHOWN);
    json_t *arr = json_array();
    for (size_t i = 0; i < n && i < CONFLICTS_SHOWN; i++)
        json_array_append_new(arr,
                              json_pack("{s:s,s:i,s:i,s:s,s:o}", "address", c[i].address, "vmid",
                                        c[i].vmid, "seen_vmid", c[i].seen_vmid, "seen_node",
                                        c[i].seen_node, "first_seen", json_time(c[i].first_seen)));
    return arr;
}

void h_ippool_get(struct req *rq, struct resp *rs)
{
    if (check_query(rq, rs, NULL))
        return;
    const struct cfg_ippool *p = pool_arg(rq, rs);
    json_t *o = p ? pool_json(rq, rs, p) : NULL;
    if (!o)
        return;
    if (rq->who.admin) {
        struct store_error se;
        json_t *r = ranges_json(rq->api->st, p, &se);
        if (!r) {
            json_decref(o);
            resp_store_error(rs, &se);
            return;
        }
        json_object_set_new(o, "ranges", r);
        json_object_set_new(o, "conflict_list", conflicts_json(rq->api->k, p->name));
    }
    resp_json(rs, HTTP_OK, o);
}

/* The row of key in pool p (state "" when there is none). */
static int row_of(store *st, const struct cfg_ippool *p, const char *key, struct store_addr *out,
                  struct store_error *se)
{
    char before[IPPOOL_KEYLEN];
    ippool_view_key_before(key, before);
    struct store_addr *rows = NULL;
    size_t n = 0;
    memset(out, 0, sizeof *out);
    if (store_addr_list(st, p->name, NULL, before, 1, &rows, &n, se))
        return -1;
    if (n && strcmp(rows[0].addr, key) == 0)
        *out = rows[0];
    free(rows);
    return 0;
}

/* Who has a used or reserved address, in the caller's terms: a VM by its
 * VMID, or the creation that reserved it (its VMID is not bound to the
 * row until it is used) by its job. */
static void holder_text(const struct store_addr *r, char *out, size_t n)
{
    if (strcmp(r->state, "reserved") == 0 && r->vmid == 0)
        snprintf(out, n, "reserved by job %s, a creation under way", r->job);
    else
        snprintf(out, n, "%s by vmid %d", r->state, r->vmid);
}

/* An address of pool p from the request (field): its key; -1 with a 400. */
static int parse_addr(struct resp *rs, const struct cfg_ippool *p, const char *field, const char *s,
                      struct ippool_addr *a, char key[IPPOOL_KEYLEN])
{
    if (ippool_addr_parse(s, a) != IPPOOL_OK) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", field, "%s: '%s' is not an IP address", field,
                   s);
        return -1;
    }
    if (!ippool_net_contains(&p->plan.net, a)) {
        char cidr[IPPOOL_NETSTRLEN];
        ippool_net_format(&p->plan.net, cidr);
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", field, "%s: %s is outside pool %s (%s)", field,
                   s, p->name, cidr);
        return -1;
    }
    ippool_addr_key(a, key);
    return 0;
}

static json_t *row_json(const struct store_addr *r)
{
    return json_pack("{s:o,s:s,s:i,s:s,s:o,s:s,s:o}", "address", addr_text(r->addr), "state",
                     r->state, "vmid", r->vmid, "job", r->job, "until",
                     strcmp(r->state, "quarantine") == 0 ? json_time(r->until) : json_null(),
                     "note", r->note, "updated_at", json_time(r->updated_at));
}

void h_ippool_addrs(struct req *rq, struct resp *rs)
{
    static const char *const allowed[] = {"state", "after", "limit", NULL};
    const struct cfg_ippool *p = admin_pool(rq, rs, allowed);
    if (!p)
        return;
    const char *state = query(rq, "state"), *after = query(rq, "after"), *lim = query(rq, "limit");
    static const char *const states[] = {"reserved", "used", "quarantine", "foreign", "held"};
    bool ok = !state;
    for (size_t i = 0; !ok && i < 5; i++)
        ok = strcmp(state, states[i]) == 0;
    if (!ok) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "state",
                   "state: '%s' is not one of reserved, used, quarantine, foreign, held", state);
        return;
    }
    int64_t limit = 100;
    if (lim && parse_int_arg(rs, "limit", lim, 1, 1000, &limit))
        return;
    struct ippool_addr a;
    char key[IPPOOL_KEYLEN] = "";
    if (after && parse_addr(rs, p, "after", after, &a, key))
        return;
    /* foreign rows belong to no pool: the pool's are those in its CIDR */
    bool foreign = state && strcmp(state, "foreign") == 0;
    struct ippool_range b;
    ippool_net_bounds(&p->plan.net, &b);
    char lo[IPPOOL_KEYLEN], hi[IPPOOL_KEYLEN];
    ippool_addr_key(&b.lo, lo);
    ippool_addr_key(&b.hi, hi);
    if (foreign && !after)
        ippool_view_key_before(lo, key);
    struct store_addr *rows = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_addr_list(rq->api->st, foreign ? "" : p->name, state, key, (int)limit, &rows, &n,
                        &se)) {
        resp_store_error(rs, &se);
        return;
    }
    json_t *arr = json_array();
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (foreign && strcmp(rows[i].addr, hi) > 0)
            break;
        json_array_append_new(arr, row_json(&rows[i]));
        shown++;
    }
    json_t *next = shown == (size_t)limit && shown ? addr_text(rows[shown - 1].addr) : json_null();
    free(rows);
    resp_json(rs, HTTP_OK, json_pack("{s:o,s:o}", "addresses", arr, "next_after", next));
}

void h_ippool_hold(struct req *rq, struct resp *rs)
{
    const struct cfg_ippool *p = admin_pool(rq, rs, NULL);
    if (!p)
        return;
    char address[IPPOOL_ADDRSTRLEN + 2] = "", note[200] = "";
    bool has_addr = false;
    const struct field f[] = {
        {"address", FT_STRING, address, sizeof address, &has_addr},
        {"note", FT_STRING, note, sizeof note, NULL},
    };
    if (decode_body(rq, rs, f, 2, false, NULL))
        return;
    if (!has_addr) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "address", "address: required");
        return;
    }
    struct ippool_addr a;
    char key[IPPOOL_KEYLEN], text[300];
    if (parse_addr(rs, p, "address", address, &a, key))
        return;
    snprintf(text, sizeof text, "%s: %s", rq->who.owner, note);
    struct store_error se;
    int rc = store_addr_hold(rq->api->st, p->name, key, text, &se);
    if (rc == STORE_E_CONFLICT) {
        /* who has it, in the caller's terms (the store's message names the
         * address by its internal key) */
        struct store_addr r;
        char who[120];
        if (row_of(rq->api->st, p, key, &r, &se) == 0 &&
            (strcmp(r.state, "used") == 0 || strcmp(r.state, "reserved") == 0)) {
            holder_text(&r, who, sizeof who);
            resp_error(rs, HTTP_CONFLICT, "address_in_use", "address",
                       "address: %s is in use (%s): it cannot be held while that VM has it",
                       address, who);
        } else {
            resp_error(rs, HTTP_CONFLICT, "address_in_use", "address", "address: %s is in use",
                       address);
        }
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    resp_json(rs, HTTP_CREATED,
              json_pack("{s:s,s:s,s:s,s:s}", "pool", p->name, "address", address, "state", "held",
                        "note", text));
}

/* A DELETE takes no body (or {}): one it ignored would be taken however
 * wrong, as if the caller had meant the delete. -1 with rs filled. */
static int no_body(struct req *rq, struct resp *rs)
{
    return decode_body(rq, rs, NULL, 0, true, NULL);
}

void h_ippool_unhold(struct req *rq, struct resp *rs)
{
    const struct cfg_ippool *p = admin_pool(rq, rs, NULL);
    if (!p || no_body(rq, rs))
        return;
    struct ippool_addr a;
    char key[IPPOOL_KEYLEN];
    if (parse_addr(rs, p, "address", rq->params[1], &a, key))
        return;
    struct store_error se;
    int rc = store_addr_unhold(rq->api->st, p->name, key, &se);
    if (rc == STORE_E_NOTFOUND) {
        struct store_addr r;
        if (row_of(rq->api->st, p, key, &r, &se) != 0) {
            /* why it is not held cannot be told now: not "not held" */
            resp_store_error(rs, &se);
            return;
        }
        char who[120];
        if (strcmp(r.state, "used") == 0 || strcmp(r.state, "reserved") == 0) {
            holder_text(&r, who, sizeof who);
            resp_error(rs, HTTP_CONFLICT, "address_in_use", "address",
                       "address: %s is %s, not held: delete the VM to release it", rq->params[1],
                       who);
        } else {
            resp_error(rs, HTTP_NOT_FOUND, "not_found", "address", "address: %s is not held",
                       rq->params[1]);
        }
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    rs->status = HTTP_NO_CONTENT;
}

/* store_addr_range_add_checked's check: the plan with the new range must
 * build whole, as the allocator builds it (ippool_plan_build), or the
 * range is refused. Accepted and then left out, a hand-out range would
 * not count and a reservation would once have freed every run-time
 * reservation. */
static int range_fits(void *ctx, const struct store_addr_range *have, size_t n,
                      const struct store_addr_range *r, struct store_error *err)
{
    const struct cfg_ippool *p = ctx;
    struct store_addr_range *all = xcalloc(n + 1, sizeof *all);
    if (n)
        memcpy(all, have, n * sizeof *all);
    all[n] = *r;
    struct ippool plan;
    struct ippool_errinfo e;
    enum ippool_err code;
    enum ippool_plan_state s = ippool_plan_build(p, all, n + 1, &plan, &e, &code);
    free(all);
    if (s == IPPOOL_PLAN_OK)
        return STORE_OK;
    /* a cap is about how many ranges of the kind; the rest about where */
    const char *field = code == IPPOOL_ETOOMANY ? "kind" : "first";
    memset(err, 0, sizeof *err);
    err->code = STORE_E_CONFLICT;
    snprintf(err->field, sizeof err->field, "%s", field);
    snprintf(err->message, sizeof err->message, "%s: pool %s cannot take this range: %s", field,
             p->name, e.msg);
    return STORE_E_CONFLICT;
}

void h_ippool_range_add(struct req *rq, struct resp *rs)
{
    const struct cfg_ippool *p = admin_pool(rq, rs, NULL);
    if (!p)
        return;
    char first[IPPOOL_ADDRSTRLEN + 2] = "", last[IPPOOL_ADDRSTRLEN + 2] = "", kind[16] = "ranges";
    bool hf = false, hl = false;
    const struct field f[] = {
        {"first", FT_STRING, first, sizeof first, &hf},
        {"last", FT_STRING, last, sizeof last, &hl},
        {"kind", FT_STRING, kind, sizeof kind, NULL},
    };
    if (decode_body(rq, rs, f, 3, false, NULL))
        return;
    if (!hf || !hl) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", hf ? "last" : "first", "%s: required",
                   hf ? "last" : "first");
        return;
    }
    if (strcmp(kind, "ranges") != 0 && strcmp(kind, "reserved") != 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "kind",
                   "kind: '%s' is not one of ranges, reserved", kind);
        return;
    }
    struct ippool_addr a, b;
    struct store_addr_range r = {0};
    if (parse_addr(rs, p, "first", first, &a, r.first) ||
        parse_addr(rs, p, "last", last, &b, r.last))
        return;
    if (ippool_addr_cmp(&a, &b) > 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "last", "last: %s is before first (%s)", last,
                   first);
        return;
    }
    if (strcmp(kind, "ranges") == 0 && p->plan.nranges == 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "kind",
                   "kind: pool %s hands out its whole CIDR (no ranges configured): a range adds "
                   "nothing",
                   p->name);
        return;
    }
    snprintf(r.pool, sizeof r.pool, "%s", p->name);
    snprintf(r.kind, sizeof r.kind, "%s", kind);
    snprintf(r.created_by, sizeof r.created_by, "%s", rq->who.owner);
    struct store_error se;
    int rc = store_addr_range_add_checked(rq->api->st, &r, range_fits, (void *)p, &se);
    if (rc == STORE_E_INVALID) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", se.field[0] ? se.field : "first", "%s",
                   se.message);
        return;
    }
    if (rc == STORE_E_CONFLICT && se.field[0]) {
        resp_error(rs, HTTP_CONFLICT, "conflict", se.field, "%s", se.message);
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    resp_json(rs, HTTP_CREATED,
              json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)r.id, "pool", p->name, "kind",
                        kind, "first", first, "last", last));
}

void h_ippool_range_del(struct req *rq, struct resp *rs)
{
    const struct cfg_ippool *p = admin_pool(rq, rs, NULL);
    int64_t id;
    if (!p || no_body(rq, rs) || parse_int_arg(rs, "id", rq->params[1], 1, INT64_MAX, &id))
        return;
    struct store_error se;
    int rc = store_addr_range_del(rq->api->st, p->name, id, &se);
    if (rc == STORE_E_NOTFOUND) {
        resp_error(rs, HTTP_NOT_FOUND, "not_found", "id", "id: pool %s has no run-time range %lld",
                   p->name, (long long)id);
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    rs->status = HTTP_NO_CONTENT;
}

/* /metrics: proxd_ippool_* */
void ippool_metrics(struct api *a, struct mtext *b)
{
    const struct proxd_config *c = a->cfg;
    if (c->npools == 0)
        return;
    mtext_printf(b, "# HELP proxd_ippool_addresses Addresses of each pool by state.\n"
                    "# TYPE proxd_ippool_addresses gauge\n");
    struct buf sz = BUF_INIT(BUF_UNLIMITED), fr = BUF_INIT(BUF_UNLIMITED),
               cf = BUF_INIT(BUF_UNLIMITED);
    for (int i = 0; i < c->npools; i++) {
        const struct cfg_ippool *p = &c->pools[i];
        struct ippool_figures f;
        struct store_error se;
        if (ippool_view_figures(a->st, p, &f, &se))
            continue;
        const char *st[] = {"used", "reserved", "quarantine", "held", "foreign"};
        int64_t v[] = {f.c.used, f.c.reserved, f.c.quarantined, f.c.held, f.foreign};
        for (int s = 0; s < 5; s++)
            mtext_printf(b, "proxd_ippool_addresses{pool=\"%s\",state=\"%s\"} %lld\n", p->name,
                         st[s], (long long)v[s]);
        buf_printf(&sz, "proxd_ippool_size{pool=\"%s\"} %llu\n", p->name,
                   (unsigned long long)f.size);
        buf_printf(&fr, "proxd_ippool_free{pool=\"%s\"} %llu\n", p->name,
                   (unsigned long long)f.free);
        buf_printf(&cf, "proxd_ippool_conflicts_total{pool=\"%s\"} %llu\n", p->name,
                   (unsigned long long)core_ippool_conflicts_total(a->k, p->name));
    }
    mtext_printf(b,
                 "# HELP proxd_ippool_size Addresses each pool hands out (saturated at 2^64-1).\n"
                 "# TYPE proxd_ippool_size gauge\n%s",
                 buf_str(&sz));
    mtext_printf(b,
                 "# HELP proxd_ippool_free Free addresses of each pool (saturated at 2^64-1).\n"
                 "# TYPE proxd_ippool_free gauge\n%s",
                 buf_str(&fr));
    mtext_printf(b,
                 "# HELP proxd_ippool_conflicts_total Addresses of each pool found on a VM "
                 "that is not proxd's while proxd holds them for another.\n"
                 "# TYPE proxd_ippool_conflicts_total counter\n%s",
                 buf_str(&cf));
    buf_release(&sz);
    buf_release(&fr);
    buf_release(&cf);
}
