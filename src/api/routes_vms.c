/* routes_vms: /v1/vms and the operations on one VM.
 *
 * Visibility: a user sees and acts on its own VMs only; another owner's VM
 * answers 404 exactly as a missing one (same code, same message), so VMIDs
 * of others cannot be probed. Admins see all and act as the core's NULL
 * owner. */
#include "api/api_int.h"

#include "common/jsonw.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSH_KEYS_MAX (16 * 1024)

/* The owner the core checks against: NULL lets an admin act on any VM. */
static const char *acting_owner(const struct req *rq)
{
    return rq->who.admin ? NULL : rq->who.owner;
}

static void not_found(struct resp *rs, const char *vmid)
{
    resp_error(rs, HTTP_NOT_FOUND, "not_found", NULL, "no VM %s", vmid);
}

/* The path's {vmid}: a malformed one is no VM at all. */
static int path_vmid(struct req *rq, struct resp *rs, int *vmid)
{
    if (!path_vmid_parse(rq->params[0], vmid)) {
        not_found(rs, rq->params[0]);
        return -1;
    }
    return 0;
}

/* {vmid} of an operation. Users are checked here as well as in the core, so
 * that another owner's VM is a 404 before anything else is looked at. */
static int target_vmid(struct req *rq, struct resp *rs, int *vmid)
{
    if (path_vmid(rq, rs, vmid))
        return -1;
    if (rq->who.admin)
        return 0;
    struct vm_rec v;
    struct store_error se;
    int rc = store_vm_get(rq->api->st, *vmid, &v, &se);
    if (rc && rc != STORE_E_NOTFOUND) {
        resp_store_error(rs, &se);
        return -1;
    }
    bool mine = rc == STORE_OK && strcmp(v.owner, rq->who.owner) == 0;
    if (rc == STORE_OK)
        vm_rec_release(&v);
    if (!mine) {
        not_found(rs, rq->params[0]);
        return -1;
    }
    return 0;
}

static void accepted(struct resp *rs, int vmid, const char *kind, const char *job)
{
    snprintf(rs->location, sizeof rs->location, "/v1/jobs/%s", job);
    resp_json(
        rs, HTTP_ACCEPTED,
        json_pack("{s:i,s:s,s:s,s:s}", "vmid", vmid, "job", job, "kind", kind, "state", "queued"));
}

/* ---- POST /v1/vms --------------------------------------------------------------- */

struct create_in {
    struct vm_request r;
    json_t *pools, *addrs; /* borrowed from the body */
    int64_t cores, memory_mb, disk_gb;
    bool has_owner;
};

/* "ippools": ["lan", "lan6"] and "addresses": {"lan": "192.0.2.7"}
 * (admins only); the core checks the names and the addresses. */
static int decode_net(bool admin, struct resp *rs, struct create_in *in)
{
    size_t i;
    json_t *v;
    if (in->pools) {
        in->r.pools_given = true;
        if (json_array_size(in->pools) > CFG_OS_POOLS) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", "ippools",
                       "ippools: at most %d pools (one IPv4, one IPv6)", CFG_OS_POOLS);
            return -1;
        }
        json_array_foreach(in->pools, i, v)
        {
            const char *p = json_string_value(v);
            if (!p || !*p || strlen(p) >= sizeof in->r.pools[0] ||
                strlen(p) != json_string_length(v)) {
                resp_error(rs, HTTP_BAD_REQUEST, "invalid", "ippools",
                           "ippools: pool names, 1 to %zu characters", sizeof in->r.pools[0] - 1);
                return -1;
            }
            snprintf(in->r.pools[in->r.npools++], sizeof in->r.pools[0], "%s", p);
        }
    }
    if (!in->addrs || json_object_size(in->addrs) == 0)
        return 0;
    if (!admin) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", "addresses",
                   "addresses: only an admin may ask for given addresses");
        return -1;
    }
    if (json_object_size(in->addrs) > CFG_OS_POOLS) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "addresses",
                   "addresses: at most %d (one per pool)", CFG_OS_POOLS);
        return -1;
    }
    const char *pool;
    json_object_foreach(in->addrs, pool, v)
    {
        struct vm_request_addr *a = &in->r.addrs[in->r.naddrs];
        const char *s = json_string_value(v);
        if (strlen(pool) >= sizeof a->pool || !s || strlen(s) >= sizeof a->address ||
            strlen(s) != json_string_length(v)) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", "addresses",
                       "addresses: {\"POOL\": \"ADDRESS\"}, pool names up to %zu characters, "
                       "no NUL",
                       sizeof a->pool - 1);
            return -1;
        }
        snprintf(a->pool, sizeof a->pool, "%s", pool);
        snprintf(a->address, sizeof a->address, "%s", s);
        in->r.naddrs++;
    }
    return 0;
}

#define CREATE_FIELDS 9
static void create_fields(struct create_in *in, struct field f[CREATE_FIELDS])
{
    const struct field t[CREATE_FIELDS] = {
        {"os", FT_STRING, in->r.os, sizeof in->r.os, NULL},
        {"name", FT_STRING, in->r.name, sizeof in->r.name, NULL},
        {"cores", FT_INT, &in->cores, 0, NULL},
        {"memory_mb", FT_INT, &in->memory_mb, 0, NULL},
        {"disk_gb", FT_INT, &in->disk_gb, 0, NULL},
        {"ssh_keys", FT_STRINGS, &in->r.ssh_keys, SSH_KEYS_MAX, NULL},
        {"owner", FT_STRING, in->r.owner, sizeof in->r.owner, &in->has_owner},
        {"ippools", FT_ARRAY, &in->pools, 0, NULL},
        {"addresses", FT_OBJECT, &in->addrs, 0, NULL},
    };
    memcpy(f, t, sizeof t);
}

/* What follows the fields' own checks: required ones, ranges, the network,
 * the owner (a user creates for itself; no owner: the caller's). */
static int create_complete(const struct auth_identity *who, struct resp *rs, json_t *raw,
                           struct create_in *in)
{
    static const char *const required[] = {"os", "name", "cores", "memory_mb", "disk_gb"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!json_object_get(raw, required[i]) || json_is_null(json_object_get(raw, required[i]))) {
            resp_error(rs, HTTP_BAD_REQUEST, "invalid", required[i], "%s: required", required[i]);
            return -1;
        }
    }
    if (in->cores < 0 || in->cores > 1 << 20) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "cores", "cores: out of range");
        return -1;
    }
    if (decode_net(who->admin, rs, in))
        return -1;
    in->r.cores = (int)in->cores;
    in->r.memory_mb = in->memory_mb;
    in->r.disk_gb = in->disk_gb;
    if (!in->has_owner || !in->r.owner[0]) {
        snprintf(in->r.owner, sizeof in->r.owner, "%s", who->owner);
    } else if (!who->admin && strcmp(in->r.owner, who->owner) != 0) {
        resp_error(rs, HTTP_FORBIDDEN, "forbidden", "owner",
                   "owner: only an admin may create a VM for another owner");
        return -1;
    }
    return 0;
}

static int decode_create(struct req *rq, struct resp *rs, struct create_in *in, json_t **raw)
{
    struct field f[CREATE_FIELDS];
    create_fields(in, f);
    if (decode_body(rq, rs, f, CREATE_FIELDS, false, raw))
        return -1;
    return create_complete(&rq->who, rs, *raw, in);
}

/* Run the creation and build the answer (202 or an error) in rs. */
static void create_now(struct req *rq, struct resp *rs, struct create_in *in)
{
    char job[40];
    int vmid = 0;
    struct core_error ce = {0};
    if (core_create(rq->api->k, &in->r, job, &vmid, &ce)) {
        resp_core_error(rs, &ce);
        return;
    }
    accepted(rs, vmid, "create", job);
}

/* What makes two requests "the same" under one key: the decoded request,
 * canonical JSON (sorted keys), hashed. */
static void fingerprint(json_t *raw, const char *owner, char out[65])
{
    json_object_set_new(raw, "owner", json_string(owner));
    char *t = json_dumps(raw, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)t, strlen(t), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof h);
    free(t);
}

/* The first request's answer again, from what was stored with its job:
 * {"fingerprint", "job", "vmid"}. */
static void replay(struct resp *rs, json_t *stored, const char *fp)
{
    const char *old_fp = json_string_value(json_object_get(stored, "fingerprint"));
    const char *job = json_string_value(json_object_get(stored, "job"));
    if (!old_fp || strcmp(old_fp, fp) != 0 || !job) {
        resp_error(rs, HTTP_CONFLICT, "idempotency_key_reused", "Idempotency-Key",
                   "this Idempotency-Key was used for a different request");
        return;
    }
    accepted(rs, (int)json_integer_value(json_object_get(stored, "vmid")), "create", job);
    /* the first answer again, marked: a client (proxctl --from) can tell a
     * request it made before from a new one */
    json_object_set_new(rs->body, "replayed", json_true());
}

/* One stripe lock per key hash: retries of one key in this process run one
 * after the other, so the second finds the first's answer without taking a
 * VMID for nothing. Across processes the store decides: the key is stored
 * in the transaction that makes the job. */
static pthread_mutex_t *idem_lock(struct api *a, const char *who, const char *key)
{
    unsigned char h[8];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)who, strlen(who) + 1);
    crypto_generichash_update(&st, (const unsigned char *)key, strlen(key));
    crypto_generichash_final(&st, h, sizeof h);
    return &a->idem[h[0] % API_IDEM_STRIPES];
}

static void create_idempotent(struct req *rq, struct resp *rs, struct create_in *in, json_t *raw,
                              const char *key)
{
    char fp[65];
    fingerprint(raw, in->r.owner, fp);
    /* Keys are per caller (the token's owner), whatever the VM's owner. */
    const char *scope = rq->who.owner;
    pthread_mutex_t *mu = idem_lock(rq->api, scope, key);
    pthread_mutex_lock(mu);
    json_t *stored = NULL;
    struct store_error se;
    int rc = store_idem_get(rq->api->st, scope, key, &stored, &se);
    if (rc == STORE_OK) {
        replay(rs, stored, fp);
        goto out;
    }
    if (rc != STORE_E_NOTFOUND) {
        resp_store_error(rs, &se);
        goto out;
    }
    /* refusals are not remembered: the caller may fix the request and retry */
    struct core_idem ci = {scope, key, fp};
    char job[40];
    int vmid = 0;
    struct core_error ce = {0};
    rc = core_create_idem(rq->api->k, &in->r, &ci, job, &vmid, &stored, &ce);
    if (rc == CORE_OK)
        accepted(rs, vmid, "create", job);
    else if (stored) /* another proxd instance stored the key first */
        replay(rs, stored, fp);
    else
        resp_core_error(rs, &ce);
out:
    pthread_mutex_unlock(mu);
    json_decref(stored);
}

/* ?dry_run=true (or a bare ?dry_run): the request checked as a submission would check it
 * before touching the store (core_create_check), nothing recorded: 200
 * {"dry_run": true, "valid": true} or the error the submission would give.
 * proxctl vm create --from checks a whole file this way before it submits
 * any line. */
static int dry_run_arg(struct req *rq, struct resp *rs, bool *dry)
{
    static const char *const allowed[] = {"dry_run", NULL};
    if (check_query(rq, rs, allowed))
        return -1;
    return query_flag(rq, rs, "dry_run", dry);
}

/* The dry run's checks, in the submission's order: an Idempotency-Key
 * used before must have been used for this same request (else 409, which
 * the submission answers before it looks at the request: checked after,
 * a dry run said 400 where its submission says 409), then the request's
 * own. */
static void dry_run(struct req *rq, struct resp *rs, struct create_in *in, json_t *raw,
                    const char *key)
{
    struct core_error ce = {0};
    bool replay = false; /* this very request before, under this key */
    if (key) {
        char fp[65];
        fingerprint(raw, in->r.owner, fp);
        json_t *stored = NULL;
        struct store_error se;
        int rc = store_idem_get(rq->api->st, rq->who.owner, key, &stored, &se);
        if (rc != STORE_OK && rc != STORE_E_NOTFOUND) {
            resp_store_error(rs, &se);
            return;
        }
        const char *old_fp = json_string_value(json_object_get(stored, "fingerprint"));
        bool other = rc == STORE_OK && (!old_fp || strcmp(old_fp, fp) != 0);
        json_decref(stored);
        if (other) {
            resp_error(rs, HTTP_CONFLICT, "idempotency_key_reused", "Idempotency-Key",
                       "this Idempotency-Key was used for a different request");
            return;
        }
        replay = rc == STORE_OK;
    }
    /* a replay's submission answers the first answer again without
     * checking the request anew, whatever changed since */
    if (!replay && core_create_check(rq->api->k, &in->r, &ce)) {
        resp_core_error(rs, &ce);
        return;
    }
    resp_json(rs, HTTP_OK, json_pack("{s:b,s:b}", "dry_run", 1, "valid", 1));
}

void h_vms_create(struct req *rq, struct resp *rs)
{
    struct create_in in = {0};
    json_t *raw = NULL;
    bool dry = false;
    if (dry_run_arg(rq, rs, &dry) || decode_create(rq, rs, &in, &raw))
        goto out;
    const char *key = http_req_header(rq->hr, "Idempotency-Key");
    if (key && !validate_idem_key(key)) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "Idempotency-Key",
                   "Idempotency-Key: 1 to %d printable ASCII characters", VALIDATE_IDEM_KEY_MAX);
        goto out;
    }
    if (dry) {
        dry_run(rq, rs, &in, raw, key);
    } else if (key) {
        create_idempotent(rq, rs, &in, raw, key);
    } else {
        create_now(rq, rs, &in);
    }
out:
    json_decref(raw);
    vm_request_release(&in.r);
}

int api_create_decode(json_t *o, struct vm_request *r, char fp[65], struct core_error *err)
{
    struct create_in in = {0};
    struct auth_identity who = {.admin = true};
    struct resp rs = {0};
    struct field f[CREATE_FIELDS];
    create_fields(&in, f);
    int rc = CORE_OK;
    if (decode_object(&rs, o, f, CREATE_FIELDS) || create_complete(&who, &rs, o, &in)) {
        /* the route's answer, {"error": {"message", "details": {"field"}}},
         * back into a core error; the message without its "field: " */
        json_t *ans =
            rs.text ? json_loadb(rs.text, rs.text_len ? rs.text_len : strlen(rs.text), 0, NULL)
                    : json_incref(rs.body);
        json_t *e = json_object_get(ans, "error");
        const char *field =
            json_string_value(json_object_get(json_object_get(e, "details"), "field"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        size_t fl = field ? strlen(field) : 0;
        if (msg && fl && strncmp(msg, field, fl) == 0 && strncmp(msg + fl, ": ", 2) == 0)
            msg += fl + 2;
        err->code = rc = CORE_E_INVALID;
        err->node[0] = err->pool[0] = '\0';
        snprintf(err->field, sizeof err->field, "%s", field ? field : "");
        snprintf(err->message, sizeof err->message, "%s", msg ? msg : "invalid request");
        json_decref(ans);
        json_decref(rs.body);
        free(rs.text);
        vm_request_release(&in.r);
        return rc;
    }
    if (!in.r.owner[0]) {
        vm_request_release(&in.r);
        err->code = CORE_E_INVALID;
        err->node[0] = err->pool[0] = '\0';
        snprintf(err->field, sizeof err->field, "owner");
        snprintf(err->message, sizeof err->message, "required");
        return CORE_E_INVALID;
    }
    json_t *copy = json_deep_copy(o);
    fingerprint(copy, in.r.owner, fp);
    json_decref(copy);
    *r = in.r;
    return CORE_OK;
}

/* ---- GET /v1/vms ------------------------------------------------------------------ */

#define LIT(b, s) jsonw_raw((b), (s), sizeof(s) - 1)

/* the most records a page holds: their networks are read in one query */
#define VMS_PAGE_MAX 1000
_Static_assert(VMS_PAGE_MAX <= STORE_NET_IDS_MAX, "a page's networks fit one read");

/* A page written as the store reads it: no array of records, no tree. */
struct page {
    struct buf *b;
    size_t start; /* where the first record goes */
    size_t n;
    size_t *end;  /* where each record ends (its networks are put in after the scan) */
    int64_t *ids; /* each record's id */
    int64_t last_id;
    int rc;           /* BUF_TOOBIG stops the scan */
    struct fleet *fl; /* node health for each record */
};

static int page_add(void *ctx, const struct vm_rec *r)
{
    struct page *pg = ctx;
    if (!r) { /* the store reads again from the start */
        buf_truncate(pg->b, pg->start);
        pg->n = 0;
        return 0;
    }
    pg->rc = (pg->n && LIT(pg->b, ",")) || vm_write_json(pg->b, r, pg->fl) ? BUF_TOOBIG : BUF_OK;
    pg->end[pg->n] = pg->b->len;
    pg->ids[pg->n] = r->id;
    pg->n++;
    pg->last_id = r->id;
    return pg->rc;
}

/* The page's records get their "network" blocks: one read of the vm_net
 * rows of exactly the page's ids (a range would also cover other owners'
 * records in between, without bound), then the page rewritten with each block
 * put before its record's closing brace. A failed read leaves "network"
 * out (the listing is still true). */
static int add_nets(struct req *rq, struct page *pg, struct store_error *se)
{
    if (pg->n == 0)
        return BUF_OK;
    struct store_vm_net *nets = NULL;
    size_t nn = 0;
    if (store_vm_net_ids(rq->api->st, pg->ids, pg->n, &nets, &nn, se)) {
        log_warn("api", "VM networks not read for a listing: %s", se->message);
        return BUF_OK;
    }
    struct buf out = BUF_INIT(API_ANSWER_MAX);
    int rc = buf_add(&out, pg->b->data, pg->start) ? BUF_TOOBIG : BUF_OK;
    size_t from = pg->start, k = 0;
    for (size_t i = 0; i < pg->n && rc == BUF_OK; i++) {
        while (k < nn && nets[k].vm_id < pg->ids[i])
            k++;
        const struct store_net *net = k < nn && nets[k].vm_id == pg->ids[i] ? &nets[k].net : NULL;
        char drift[256];
        bool dr = net && core_net_drift(rq->api->k, pg->ids[i], drift, sizeof drift);
        if (buf_add(&out, pg->b->data + from, pg->end[i] - from))
            rc = BUF_TOOBIG;
        else
            rc = vm_add_net(&out, out.len, net, rq->api->cfg, dr ? drift : NULL);
        from = pg->end[i];
    }
    free(nets);
    if (rc == BUF_OK) {
        buf_release(pg->b);
        *pg->b = out;
    } else {
        buf_release(&out);
    }
    return rc;
}

void h_vms_list(struct req *rq, struct resp *rs)
{
    static const char *const allowed[] = {"owner", "state", "node", "os", "limit", "after", NULL};
    if (check_query(rq, rs, allowed))
        return;
    struct vm_filter f = {.state = -1, .limit = 100};
    f.owner = query(rq, "owner");
    f.node = query(rq, "node");
    f.os = query(rq, "os");
    int64_t v;
    const char *s = query(rq, "state");
    if (s && (f.state = vm_state_parse(s)) < 0) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "state",
                   "state: one of creating, enabled, failed, deleting, deleted, lost");
        return;
    }
    if ((s = query(rq, "limit"))) {
        if (parse_int_arg(rs, "limit", s, 1, VMS_PAGE_MAX, &v))
            return;
        f.limit = (int)v;
    }
    if ((s = query(rq, "after"))) {
        if (parse_int_arg(rs, "after", s, 0, INT64_MAX, &v))
            return;
        f.after_id = v;
    }
    /* A user's listing is its own VMs whatever it asks for. */
    if (!rq->who.admin) {
        if (f.owner && strcmp(f.owner, rq->who.owner) != 0) {
            resp_json(rs, HTTP_OK, json_pack("{s:[],s:n}", "vms", "next"));
            return;
        }
        f.owner = rq->who.owner;
    }
    struct buf b = BUF_INIT(API_ANSWER_MAX);
    struct page pg = {&b,
                      0,
                      0,
                      xcalloc((size_t)f.limit, sizeof(size_t)),
                      xcalloc((size_t)f.limit, sizeof(int64_t)),
                      0,
                      BUF_OK,
                      rq->api->fl};
    /* About 280 bytes a record: one allocation for most pages. */
    if (!buf_space(&b, (size_t)f.limit * 320 + 64))
        goto too_big;
    LIT(&b, "{\"vms\":[");
    pg.start = b.len;
    struct store_error se;
    if (store_vm_scan(rq->api->st, &f, page_add, &pg, &se)) {
        resp_store_error(rs, &se);
        goto out;
    }
    if (pg.rc || add_nets(rq, &pg, &se) == BUF_TOOBIG)
        goto too_big;
    /* A full page may have more behind it: hand out the cursor. */
    int rc = LIT(&b, "],\"next\":");
    if (!rc && pg.n == (size_t)f.limit)
        rc = LIT(&b, "\"") || jsonw_int(&b, pg.last_id) || LIT(&b, "\"");
    else if (!rc)
        rc = LIT(&b, "null");
    if (rc || LIT(&b, "}"))
        goto too_big;
    resp_json_text(rs, HTTP_OK, &b);
    goto out;
too_big:
    resp_error(rs, HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
               "the answer would pass %d bytes: ask for a smaller page (limit)", API_ANSWER_MAX);
out:
    free(pg.end);
    free(pg.ids);
    buf_release(&b);
}

/* ---- one VM ------------------------------------------------------------------------ */

/* ,"guest":{...} put inside the record that ends b: a running (or
 * paused) VM's last start's guest check (core/guestwatch.h), so that a
 * panel shows "booting" or "ready"; nothing for a stopped VM, one never
 * started by a job, or when the read fails. */
static int vm_add_guest(struct req *rq, struct buf *b, const struct vm_rec *v)
{
    struct guest_check g;
    if ((strcmp(v->power, "running") != 0 && strcmp(v->power, "paused") != 0) ||
        store_guest_last(rq->api->st, v->vmid, &g, NULL) != STORE_OK)
        return BUF_OK;
    if (b->len == 0 || b->data[b->len - 1] != '}')
        return BUF_TOOBIG;
    json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:s}", "state", guest_state_name(g.state), "job", g.job,
                          "kind", g.kind, "at", json_time(g.at), "detail", g.detail);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    buf_truncate(b, b->len - 1);
    int rc = buf_adds(b, ",\"guest\":") || buf_adds(b, text) || buf_addc(b, '}');
    free(text);
    return rc ? BUF_TOOBIG : BUF_OK;
}

static void vm_answer(struct req *rq, struct resp *rs, const struct vm_rec *v)
{
    struct buf b = BUF_INIT(API_ANSWER_MAX);
    struct store_net net;
    bool has_net = store_vm_net_get(rq->api->st, v->id, &net, NULL) == STORE_OK;
    char drift[256];
    bool dr = has_net && core_net_drift(rq->api->k, v->id, drift, sizeof drift);
    if (vm_write_json(&b, v, rq->api->fl) ||
        vm_add_net(&b, b.len, has_net ? &net : NULL, rq->api->cfg, dr ? drift : NULL) ||
        vm_add_guest(rq, &b, v))
        resp_error(rs, HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
                   "the answer would pass %d bytes", API_ANSWER_MAX);
    else
        resp_json_text(rs, HTTP_OK, &b);
    buf_release(&b);
}

void h_vm_get(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || path_vmid(rq, rs, &vmid))
        return;
    struct vm_rec v;
    struct store_error se;
    int rc = store_vm_get(rq->api->st, vmid, &v, &se);
    if (rc == STORE_E_NOTFOUND) {
        not_found(rs, rq->params[0]);
        return;
    }
    if (rc) {
        resp_store_error(rs, &se);
        return;
    }
    if (!rq->who.admin && strcmp(v.owner, rq->who.owner) != 0)
        not_found(rs, rq->params[0]);
    else
        vm_answer(rq, rs, &v);
    vm_rec_release(&v);
}

/* The core answers NOTFOUND for another owner's VM too; make it the same
 * message as a missing VM's. */
static void op_error(struct req *rq, struct resp *rs, const struct core_error *ce)
{
    if (ce->code == CORE_E_NOTFOUND)
        not_found(rs, rq->params[0]);
    else
        resp_core_error(rs, ce);
}

void h_vm_action(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || target_vmid(rq, rs, &vmid))
        return;
    const char *name = strrchr(rq->path, '/') + 1;
    int act = vm_action_parse(name);
    if (act < 0) { /* the route table lists only known actions */
        not_found(rs, rq->params[0]);
        return;
    }
    int64_t timeout = 0;
    bool force = false, has_timeout = false;
    const struct field f[] = {
        {"timeout", FT_INT, &timeout, 0, &has_timeout},
        {"force", FT_BOOL, &force, 0, NULL},
    };
    /* Only shutdown takes options; the others take an empty body or {}. */
    if (decode_body(rq, rs, f, act == ACT_SHUTDOWN ? 2 : 0, true, NULL))
        return;
    if (has_timeout && (timeout < 1 || timeout > 3600)) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "timeout", "timeout: seconds from 1 to 3600");
        return;
    }
    struct action_opts o = {.timeout_s = (int)timeout, .force = force};
    char job[40];
    struct core_error ce = {0};
    if (core_vm_action(rq->api->k, vmid, acting_owner(rq), (enum vm_action)act, &o, job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, vm_action_name((enum vm_action)act), job);
}

void h_vm_update(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || target_vmid(rq, rs, &vmid))
        return;
    int64_t cores = 0, memory = 0;
    bool has_cores = false, has_memory = false;
    const struct field f[] = {
        {"cores", FT_INT, &cores, 0, &has_cores},
        {"memory_mb", FT_INT, &memory, 0, &has_memory},
    };
    if (decode_body(rq, rs, f, 2, false, NULL))
        return;
    if (!has_cores && !has_memory) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "cores", "give cores, memory_mb or both");
        return;
    }
    if ((has_cores && (cores < 1 || cores > 1 << 20)) || (has_memory && memory < 1)) {
        const char *bad = has_cores && (cores < 1 || cores > 1 << 20) ? "cores" : "memory_mb";
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", bad, "%s: must be a positive integer", bad);
        return;
    }
    char job[40];
    struct core_error ce = {0};
    if (core_vm_update(rq->api->k, vmid, acting_owner(rq), (int)cores, memory, job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, "update", job);
}

void h_vm_resize(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || target_vmid(rq, rs, &vmid))
        return;
    int64_t disk = 0;
    bool has_disk = false;
    const struct field f[] = {{"disk_gb", FT_INT, &disk, 0, &has_disk}};
    if (decode_body(rq, rs, f, 1, false, NULL))
        return;
    if (!has_disk || disk < 1) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "disk_gb",
                   "disk_gb: required, a positive integer");
        return;
    }
    char job[40];
    struct core_error ce = {0};
    if (core_vm_resize(rq->api->k, vmid, acting_owner(rq), disk, job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, "resize", job);
}

/* POST /v1/vms/{vmid}/reinstall {os, ssh_keys?, password?} */
void h_vm_reinstall(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || target_vmid(rq, rs, &vmid))
        return;
    char os[64] = "", password[256] = "";
    char *keys = NULL;
    bool has_os = false, has_pw = false;
    const struct field f[] = {
        {"os", FT_STRING, os, sizeof os, &has_os},
        {"ssh_keys", FT_STRINGS, &keys, SSH_KEYS_MAX, NULL},
        {"password", FT_STRING, password, sizeof password, &has_pw},
    };
    if (decode_body(rq, rs, f, sizeof f / sizeof f[0], false, NULL))
        goto out;
    if (!has_os || !os[0]) {
        resp_error(rs, HTTP_BAD_REQUEST, "invalid", "os", "os: required");
        goto out;
    }
    struct reinstall_request r = {os, keys, has_pw ? password : NULL};
    char job[40];
    struct core_error ce = {0};
    if (core_vm_reinstall(rq->api->k, vmid, acting_owner(rq), &r, job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, "reinstall", job);
out:
    free(keys);
}

void h_vm_delete(struct req *rq, struct resp *rs)
{
    int vmid;
    if (check_query(rq, rs, NULL) || target_vmid(rq, rs, &vmid))
        return;
    if (decode_body(rq, rs, NULL, 0, true, NULL))
        return;
    char job[40];
    struct core_error ce = {0};
    if (core_vm_delete(rq->api->k, vmid, acting_owner(rq), job, &ce))
        op_error(rq, rs, &ce);
    else
        accepted(rs, vmid, "delete", job);
}
