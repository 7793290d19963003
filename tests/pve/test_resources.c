/* Pure unit tests: a /cluster/resources answer parsed one element at a time
 * (pve_resources_parse: yajl's events straight into records). No network. */
#define _GNU_SOURCE /* memmem */
#include "pvetest.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "pve/api_json.h"
#include "pve/pve_api.h"
#include "pve/pve_int.h"

struct seen {
    int n;
    int stop_at; /* > 0: return stop_rc from the resource with this (1-based) number */
    int stop_rc;
    char kinds[16];
};

static int count_res(const struct pve_resource *r, void *ud)
{
    struct seen *s = ud;
    s->n++;
    if ((size_t)s->n < sizeof s->kinds)
        s->kinds[s->n - 1] = r->type == PVE_RES_VM        ? 'v'
                             : r->type == PVE_RES_CT      ? 'c'
                             : r->type == PVE_RES_NODE    ? 'n'
                             : r->type == PVE_RES_STORAGE ? 's'
                                                          : 'o';
    return s->stop_at == s->n ? s->stop_rc : 0;
}

static int walk(const char *text, struct seen *s, struct pve_error *e)
{
    memset(s->kinds, 0, sizeof s->kinds);
    s->n = 0;
    return pve_resources_parse(text, strlen(text), count_res, s, e);
}

static void test_parse_ok(void **state)
{
    (void)state;
    struct seen s = {0};
    struct pve_error e;
    assert_int_equal(walk("{\"data\":[]}", &s, &e), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(walk(" \n{ \"data\" : [ {\"type\":\"qemu\"} , {\"type\":\"node\","
                          "\"x\":[1,[2],{\"type\":\"lxc\"}]} ,{\"type\":\"x]\\\"}\"},"
                          "{\"type\":\"storage\"},{}] } \n",
                          &s, &e),
                     0);
    assert_int_equal(s.n, 5);
    assert_string_equal(s.kinds, "vnoso"); /* the node's nested "lxc" is not its type */
    /* other members before and after, of any type, are skipped (a "data"
     * inside one of them is not the answer's) */
    assert_int_equal(walk("{\"message\":\"m\",\"errors\":{\"x\":[1,{\"data\":[9]}]},"
                          "\"data\":[{\"type\":\"qemu\"},{\"type\":\"qemu\"}],\"total\":2.5,"
                          "\"z\":null,\"t\":true,\"data2\":[1]}",
                          &s, &e),
                     0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.kinds, "vv");
}

static void test_parse_errors(void **state)
{
    (void)state;
    struct seen s = {0};
    struct pve_error e;
    static const char *const syntax[] = {
        "", "   ", "[{\"data\":[]}]", "42", "{\"data\":[{},{}]", /* truncated */
        "{\"data\":[{},{},]}",                                   /* trailing comma */
        "{\"data\":[{} {}]}",                                    /* missing comma */
        "{\"data\":[{}]} x",                                     /* trailing garbage */
        "{\"data\":[{}]}{}",                                     /* two texts */
        "{\"data\":[{\"a\":1]}",                                 /* broken element */
        "{data:[{}]}",                                           /* unquoted key */
        "{\"data\" [{}]}",                                       /* missing colon */
        "{\"a\":1,}",                                   /* trailing comma in the envelope */
        "{\"data\":[{\"name\":\"x]}",                   /* string runs off the end */
        "{\"data\":[{\"name\":\"\xff\"}]}",             /* not UTF-8 */
        "{\"data\":[{\"vmid\":99999999999999999999}]}", /* no 64-bit integer */
        "{\"data\":[]} /* c */",                        /* comments are not JSON */
        /* what jansson refuses and yajl would let through */
        "{\"data\":[{\"name\":\"a\\u0000b\"}]}",        /* a NUL */
        "{\"data\":[],\"message\":\"\\u0000\"}",        /* one in a skipped member */
        "{\"data\":[{\"name\":\"\xc0\x80\"}]}",         /* an overlong form */
        "{\"data\":[{\"name\":\"\xed\xa0\x80\"}]}",     /* a surrogate */
        "{\"data\":[{\"name\":\"\xf4\x90\x80\x80\"}]}", /* above U+10FFFF */
        "{\"data\":[{\"name\":\"\\udc00\"}]}",          /* an escaped low surrogate */
        "{\"data\":[{\"\xed\xa0\x80\":1}]}",            /* in a key */
        "{\"data\":[{\"mem\":9223372036854775808}]}",   /* beyond int64 */
        "{\"data\":[{\"mem\":-9223372036854775809}]}",
        "{\"data\":[{\"cpu\":1e400}]}", /* beyond double */
    };
    for (size_t i = 0; i < sizeof syntax / sizeof *syntax; i++) {
        int rc = walk(syntax[i], &s, &e);
        if (rc != PVE_E_OTHER || strcmp(e.message, "answer is not a JSON object") != 0)
            fail_msg("'%s': %d '%s', expected a syntax error", syntax[i], rc, e.message);
    }
    static const char *const shape[] = {
        "{}",
        "{\"message\":\"no data\"}",
        "{\"data\":null}",
        "{\"data\":{\"a\":1}}",
        "{\"data\":\"x\"}",
        "{\"data\":[1]}",
        "{\"data\":[{},[]]}",
        "{\"data\":[{}],\"data\":[{}]}",
    };
    for (size_t i = 0; i < sizeof shape / sizeof *shape; i++) {
        int rc = walk(shape[i], &s, &e);
        if (rc != PVE_E_OTHER || strcmp(e.message, "unexpected result for /cluster/resources") != 0)
            fail_msg("'%s': %d '%s', expected a shape error", shape[i], rc, e.message);
    }
    /* nesting deeper than jansson's 2048 */
    struct buf deep = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&deep, "{\"data\":[{\"x\":");
    for (int i = 0; i < 2046; i++)
        buf_adds(&deep, "[");
    size_t open_at = deep.len;
    for (int i = 0; i < 2046; i++)
        buf_adds(&deep, "]");
    buf_adds(&deep, "}]}");
    assert_int_equal(walk(buf_str(&deep), &s, &e), PVE_E_OTHER);
    assert_string_equal(e.message, "answer is not a JSON object");
    /* one level less is fine */
    memmove(deep.data + open_at - 1, deep.data + open_at, deep.len - open_at + 1);
    deep.len--;
    memmove(deep.data + open_at - 1, deep.data + open_at, deep.len - open_at + 1);
    deep.len--;
    assert_int_equal(walk(buf_str(&deep), &s, &e), 0);
    assert_int_equal(s.n, 1);
    buf_release(&deep);
    /* a scalar counts as a level too */
    for (int k = 0; k < 2; k++) {
        struct buf b = BUF_INIT(BUF_UNLIMITED);
        buf_adds(&b, "{\"data\":[{\"x\":");
        for (int i = 0; i < 2044 + k; i++)
            buf_adds(&b, "[");
        buf_adds(&b, "1");
        for (int i = 0; i < 2044 + k; i++)
            buf_adds(&b, "]");
        buf_adds(&b, "}]}");
        assert_int_equal(walk(buf_str(&b), &s, &e), k ? PVE_E_OTHER : 0);
        buf_release(&b);
    }
    /* the callback stops the walk, any non-zero value its own */
    s.stop_at = 2;
    int rcs[] = {7, -1, -2};
    for (size_t i = 0; i < sizeof rcs / sizeof *rcs; i++) {
        s.stop_rc = rcs[i];
        assert_int_equal(walk("{\"data\":[{},{},{}]}", &s, &e), PVE_E_OTHER);
        assert_int_equal(s.n, 2);
        char want[80];
        snprintf(want, sizeof want, "/cluster/resources: stopped by the caller (%d)", rcs[i]);
        assert_string_equal(e.message, want);
    }
    /* at the last resource; at a container (counted: handed on like any) */
    s.stop_rc = 3;
    assert_int_equal(walk("{\"data\":[{},{}]}", &s, &e), PVE_E_OTHER);
    assert_int_equal(s.n, 2);
    assert_int_equal(walk("{\"data\":[{},{\"type\":\"lxc\"},{},{}]}", &s, &e), PVE_E_OTHER);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.kinds, "oc");
    assert_string_equal(e.message, "/cluster/resources: stopped by the caller (3)");
    s.stop_at = 4; /* after the last: never */
    assert_int_equal(walk("{\"data\":[{},{\"type\":\"lxc\"},{}]}", &s, &e), 0);
    assert_string_equal(s.kinds, "oco");
}

/* Each field as PVE may send it: numbers as strings, booleans as 0/1 or
 * "1", texts as numbers; null as missing; the last of a repeated member. */
struct keep3 {
    struct pve_resource *r;
    int *n;
};

static int keep3(const struct pve_resource *r, void *ud)
{
    struct keep3 *k = ud;
    if (*k->n < 3)
        k->r[*k->n] = *r;
    (*k->n)++;
    return 0;
}

static void test_parse_lenient(void **state)
{
    (void)state;
    const char *text =
        "{\"data\":[{\"type\":\"qemu\",\"vmid\":\" 42\",\"maxmem\":1.5e3,\"mem\":true,"
        "\"maxdisk\":\"12x\",\"disk\":1e300,\"uptime\":-7,\"maxcpu\":4.9,\"name\":12,"
        "\"status\":2.5,\"lock\":false,\"tags\":\"a;\\u00e9\",\"template\":\"1\","
        "\"shared\":2,\"node\":\"sv1\",\"node\":null,\"hastate\":\"x\",\"hastate\":{\"a\":1},"
        "\"uptime\":5,\"uptime\":[1],\"id\":\"q\\\"\\u00e9\"},"
        "{\"type\":\"storage\",\"template\":\"0\",\"shared\":0.0,\"storage\":\"s\","
        "\"type\":\"lxc\"},"
        "{\"type\":5,\"template\":true,\"shared\":\"true\",\"vmid\":3000000000,"
        "\"maxmem\":-9223372036854775808,\"maxdisk\":9.3e18,\"disk\":9.21e18,"
        "\"mem\":\"0000000000000000000000000000000000000042\"}]}";
    struct pve_resource r[3];
    int n = 0;
    struct pve_error e;
    assert_int_equal(pve_resources_parse(text, strlen(text), keep3, &(struct keep3){r, &n}, &e), 0);
    assert_int_equal(n, 3); /* the second became a container by its last "type" */
    assert_int_equal(r[0].type, PVE_RES_VM);
    assert_int_equal(r[0].vmid, 42);
    assert_true(r[0].maxmem == 1500 && r[0].mem == 1 && r[0].maxdisk == 0);
    assert_true(r[0].disk == INT64_MAX && r[0].uptime == 0 &&
                r[0].maxcpu == 4); /* uptime: last, [1] */
    assert_string_equal(r[0].name, "12");
    assert_string_equal(r[0].status, "2.5");
    assert_string_equal(r[0].lock, "");
    assert_string_equal(r[0].tags, "a;\xc3\xa9");
    assert_true(r[0].tmpl && r[0].shared);
    assert_string_equal(r[0].node, "");
    assert_string_equal(r[0].hastate, ""); /* the last of a repeated member, an object */
    assert_string_equal(r[0].id, "q\"\xc3\xa9");
    assert_int_equal(r[1].type, PVE_RES_CT);
    assert_string_equal(r[1].storage, "s");
    assert_true(!r[1].tmpl && !r[1].shared);
    assert_int_equal(r[2].type, PVE_RES_OTHER);
    assert_true(r[2].tmpl && !r[2].shared);
    assert_int_equal(r[2].vmid, 2147483647); /* an int field, kept in range */
    assert_true(r[2].maxmem == INT64_MIN && r[2].maxdisk == INT64_MAX);
    assert_true(r[2].disk == 9210000000000000000LL && r[2].mem == 42);
}

/* pve_resources_parse into a list */
struct rlist {
    struct pve_resource r[16];
    int n;
};

static int keep(const struct pve_resource *r, void *ud)
{
    struct rlist *l = ud;
    if (l->n < 16)
        l->r[l->n] = *r;
    l->n++;
    return 0;
}

static void test_resources(void **state)
{
    (void)state;
    char longname[400], longtags[600];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    memset(longtags, 't', sizeof longtags - 1);
    longtags[sizeof longtags - 1] = '\0';
    struct buf body = BUF_INIT(BUF_UNLIMITED);
    buf_printf(
        &body,
        "{\"data\":["
        "{\"type\":\"node\",\"id\":\"node/sv1\",\"node\":\"sv1\",\"status\":\"online\","
        "\"maxcpu\":32,\"maxmem\":137438953472,\"mem\":1073741824},"
        "{\"type\":\"lxc\",\"id\":\"lxc/200\",\"node\":\"sv1\",\"vmid\":200,\"name\":\"ct\"},"
        "{\"type\":\"storage\",\"id\":\"storage/sv1/local-lvm\",\"node\":\"sv1\","
        "\"storage\":\"local-lvm\",\"maxdisk\":1000,\"disk\":\"400\",\"shared\":0},"
        "{\"type\":\"qemu\",\"id\":\"qemu/100\",\"node\":\"sv1\",\"vmid\":100,\"name\":\"%s\","
        "\"status\":\"running\",\"template\":0,\"maxcpu\":2,\"maxmem\":\"2147483648\","
        "\"maxdisk\":10737418240,\"lock\":\"clone\",\"tags\":\"%s\",\"hastate\":\"started\"},"
        "{\"type\":\"qemu\",\"vmid\":\"101\"},"
        "{\"type\":\"sdn\",\"id\":\"sdn/sv1/localnetwork\",\"node\":\"sv1\"},"
        "{\"id\":\"no type\"},"
        "{\"type\":\"qemu\",\"vmid\":102,\"node\":\"sv2\",\"template\":1,\"name\":null,"
        "\"tags\":42,\"extra\":{\"nested\":[1,2,{\"deep\":true}]}}"
        "],\"total\":8}",
        longname, longtags);
    struct rlist l = {0};
    struct pve_error e;
    assert_int_equal(pve_resources_parse(body.data, body.len, keep, &l, &e), 0);
    buf_release(&body);
    assert_int_equal(l.n, 8); /* everything kept, the container too */
    assert_int_equal(l.r[0].type, PVE_RES_NODE);
    assert_string_equal(l.r[0].node, "sv1");
    assert_string_equal(l.r[0].status, "online");
    assert_int_equal(l.r[0].maxcpu, 32);
    assert_true(l.r[0].maxmem == 137438953472LL && l.r[0].mem == 1073741824LL);
    /* a container: not a VM, but with its VMID (taken as a VM's is) */
    const struct pve_resource *v = &l.r[1];
    assert_int_equal(v->type, PVE_RES_CT);
    assert_int_equal(v->vmid, 200);
    assert_string_equal(v->node, "sv1");
    assert_string_equal(v->id, "lxc/200");
    assert_string_equal(v->name, "ct");
    assert_int_equal(l.r[2].type, PVE_RES_STORAGE);
    assert_string_equal(l.r[2].storage, "local-lvm");
    assert_true(l.r[2].maxdisk == 1000 && l.r[2].disk == 400); /* a numeric string */
    v = &l.r[3];
    assert_int_equal(v->type, PVE_RES_VM);
    assert_int_equal(v->vmid, 100);
    assert_string_equal(v->status, "running");
    assert_int_equal(strlen(v->name), sizeof v->name - 1); /* long texts are cut */
    assert_int_equal(strlen(v->tags), sizeof v->tags - 1);
    assert_true(v->maxmem == 2147483648LL && v->maxdisk == 10737418240LL);
    assert_string_equal(v->lock, "clone");
    assert_string_equal(v->hastate, "started");
    assert_false(v->tmpl);
    /* missing fields: zero and empty */
    v = &l.r[4];
    assert_int_equal(v->type, PVE_RES_VM);
    assert_int_equal(v->vmid, 101);
    assert_string_equal(v->node, "");
    assert_string_equal(v->name, "");
    assert_string_equal(v->status, "");
    assert_true(v->maxmem == 0 && v->maxdisk == 0 && v->maxcpu == 0);
    /* types proxd does not know, or none, are passed on as OTHER */
    assert_int_equal(l.r[5].type, PVE_RES_OTHER);
    assert_int_equal(l.r[6].type, PVE_RES_OTHER);
    v = &l.r[7];
    assert_int_equal(v->type, PVE_RES_VM);
    assert_true(v->tmpl);
    assert_string_equal(v->name, "");
    assert_string_equal(v->tags, "42");

    /* a malformed answer fails as a whole; a wrong shape says so */
    l.n = 0;
    const char *bad = "{\"data\":[{\"type\":\"qemu\",\"vmid\":1},{\"type\":";
    assert_int_equal(pve_resources_parse(bad, strlen(bad), keep, &l, &e), PVE_E_OTHER);
    assert_string_equal(e.message, "answer is not a JSON object");
    const char *nul = "{\"data\":null}";
    assert_int_equal(pve_resources_parse(nul, strlen(nul), keep, &l, &e), PVE_E_OTHER);
    assert_string_equal(e.message, "unexpected result for /cluster/resources");
    const char *notobj = "{\"data\":[1]}";
    assert_int_equal(pve_resources_parse(notobj, strlen(notobj), keep, &l, &e), PVE_E_OTHER);
    assert_int_equal(pve_resources_parse(NULL, 0, keep, &l, &e), PVE_E_OTHER);
}

/* 10,000 VMs: every one arrives, in order. */
static int check_order(const struct pve_resource *r, void *ud)
{
    int *next = ud;
    if (r->vmid != *next)
        return 1;
    (*next)++;
    return 0;
}

static void test_resources_many(void **state)
{
    (void)state;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&b, "{\"data\":[");
    for (int i = 0; i < 10000; i++)
        buf_printf(&b,
                   "%s{\"type\":\"qemu\",\"id\":\"qemu/%d\",\"node\":\"sv%d\",\"vmid\":%d,"
                   "\"name\":\"bench-%05d\",\"status\":\"stopped\",\"tags\":\"proxd\","
                   "\"maxmem\":1073741824,\"maxdisk\":10737418240,\"maxcpu\":1}",
                   i ? "," : "", 10000 + i, i % 5 + 1, 10000 + i, i);
    buf_adds(&b, "]}");
    int next = 10000;
    struct pve_error e;
    assert_int_equal(pve_resources_parse(b.data, b.len, check_order, &next, &e), 0);
    assert_int_equal(next, 20000);
    buf_release(&b);
}

/* ---- against a JSON tree ---------------------------------------------------------- */

/* The oracle: the whole answer as a jansson tree, each element read with
 * api_json.c's lenient readers, as the parse did before it streamed. Its
 * documented differences: an int field takes the value kept in range, a
 * real out of int64's range is clamped (the old cast was undefined). */
static int64_t ref_int(json_t *e, const char *key)
{
    json_t *v = json_object_get(e, key);
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return d >= 0x1p63 ? INT64_MAX : d < -0x1p63 ? INT64_MIN : (int64_t)d;
    }
    return pj_int(e, key, 0);
}

static int ref_small(json_t *e, const char *key)
{
    int64_t v = ref_int(e, key);
    return v > INT_MAX ? INT_MAX : v < INT_MIN ? INT_MIN : (int)v;
}

static void ref_resource(struct pve_resource *r, json_t *e)
{
    char type[32];
    memset(r, 0, sizeof *r);
    pj_str(type, sizeof type, e, "type");
    r->type = strcmp(type, "qemu") == 0      ? PVE_RES_VM
              : strcmp(type, "lxc") == 0     ? PVE_RES_CT
              : strcmp(type, "node") == 0    ? PVE_RES_NODE
              : strcmp(type, "storage") == 0 ? PVE_RES_STORAGE
                                             : PVE_RES_OTHER;
    pj_str(r->id, sizeof r->id, e, "id");
    pj_str(r->node, sizeof r->node, e, "node");
    r->vmid = ref_small(e, "vmid");
    pj_str(r->name, sizeof r->name, e, "name");
    pj_str(r->status, sizeof r->status, e, "status");
    r->tmpl = pj_bool(e, "template");
    r->maxcpu = ref_small(e, "maxcpu");
    r->maxmem = ref_int(e, "maxmem");
    r->mem = ref_int(e, "mem");
    r->maxdisk = ref_int(e, "maxdisk");
    r->disk = ref_int(e, "disk");
    r->uptime = ref_int(e, "uptime");
    pj_str(r->lock, sizeof r->lock, e, "lock");
    pj_str(r->tags, sizeof r->tags, e, "tags");
    pj_str(r->hastate, sizeof r->hastate, e, "hastate");
    pj_str(r->storage, sizeof r->storage, e, "storage");
    r->shared = pj_bool(e, "shared");
}

enum { REF_OK, REF_SYNTAX, REF_SHAPE, REF_SKIP };

/* The oracle's verdict and records (up to max). */
static int ref_parse(const char *text, size_t len, struct pve_resource *out, int max, int *n)
{
    json_error_t je;
    *n = 0;
    if (memchr(text, '\0', len)) /* no JSON text holds one (jansson lets some pass) */
        return REF_SYNTAX;
    /* a second "data" fails the shape (the first's elements were handed
     * on already), where a tree keeps the last: not compared */
    const char *d = memmem(text, len, "\"data\"", 6);
    if (d && memmem(d + 6, len - (size_t)(d + 6 - text), "\"data\"", 6))
        return REF_SKIP;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        return REF_SYNTAX;
    int rc = REF_OK;
    json_t *data = json_object_get(root, "data"), *e;
    if (!json_is_object(root))
        rc = REF_SYNTAX;
    else if (!json_is_array(data))
        rc = REF_SHAPE;
    size_t i;
    json_array_foreach(rc == REF_OK ? data : NULL, i, e)
    {
        if (!json_is_object(e)) {
            rc = REF_SHAPE;
            break;
        }
        if (*n < max)
            ref_resource(&out[*n], e);
        (*n)++;
    }
    json_decref(root);
    return rc;
}

struct got {
    struct pve_resource r[64];
    int n;
};

static int keep_got(const struct pve_resource *r, void *ud)
{
    struct got *g = ud;
    if (g->n < 64)
        g->r[g->n] = *r;
    g->n++;
    return 0;
}

static bool same(const struct pve_resource *a, const struct pve_resource *b)
{
    return a->type == b->type && !strcmp(a->id, b->id) && !strcmp(a->node, b->node) &&
           a->vmid == b->vmid && !strcmp(a->name, b->name) && !strcmp(a->status, b->status) &&
           a->tmpl == b->tmpl && a->maxcpu == b->maxcpu && a->maxmem == b->maxmem &&
           a->mem == b->mem && a->maxdisk == b->maxdisk && a->disk == b->disk &&
           a->uptime == b->uptime && !strcmp(a->lock, b->lock) && !strcmp(a->tags, b->tags) &&
           !strcmp(a->hastate, b->hastate) && !strcmp(a->storage, b->storage) &&
           a->shared == b->shared;
}

static const char seed_text[] =
    "{\"data\":[{\"id\":\"qemu/100\",\"type\":\"qemu\",\"node\":\"sv1\",\"vmid\":100,"
    "\"name\":\"web-1\",\"status\":\"running\",\"maxcpu\":2,\"maxmem\":2147483648,"
    "\"maxdisk\":10737418240,\"disk\":0,\"mem\":123456,\"cpu\":0.05,\"uptime\":3600,"
    "\"template\":0,\"tags\":\"proxd;owner-7\",\"lock\":\"\",\"hastate\":\"started\"},"
    "{\"id\":\"node/sv1\",\"type\":\"node\",\"node\":\"sv1\",\"status\":\"online\","
    "\"maxcpu\":32,\"maxmem\":137438953472,\"mem\":\"1073741824\",\"level\":\"\"},"
    "{\"id\":\"storage/sv1/local-lvm\",\"type\":\"storage\",\"node\":\"sv1\","
    "\"storage\":\"local-lvm\",\"maxdisk\":1e12,\"disk\":4.5e11,\"shared\":1,"
    "\"content\":\"images,rootdir\",\"plugintype\":\"lvmthin\"},"
    "{\"id\":\"lxc/200\",\"type\":\"lxc\",\"node\":\"sv2\",\"vmid\":200},"
    "{\"id\":\"qemu/9000\",\"type\":\"qemu\",\"node\":\"sv2\",\"vmid\":\"9000\","
    "\"name\":\"tpl-\\u00e9\\\"x\\\\\",\"template\":true,\"extra\":{\"a\":[1,{\"b\":null}]}}],"
    "\"total\":5,\"message\":null}";

/* Random edits of a real-looking answer, each parsed both ways: the same
 * verdict (syntax, shape, or the same records in the same order). */
static void test_parse_matches_tree(void **state)
{
    (void)state;
    static const char *const words[] = {"true",
                                        "null",
                                        "1e400",
                                        "-0",
                                        "\"\"",
                                        "{}",
                                        "[]",
                                        "\"lxc\"",
                                        "\"qemu\"",
                                        "\"data\"",
                                        "\\u0000",
                                        "99999999999999999999",
                                        "\xc3\xa9",
                                        "\xc0\x80",
                                        "\xed\xa0\x80",
                                        "\xf4\x90\x80\x80",
                                        "\\udc00",
                                        "-9223372036854775808",
                                        "9223372036854775808",
                                        "\"vmid\":",
                                        "\"type\":",
                                        "1,",
                                        "null,"};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char buf[2048];
    int agree[4] = {0};
    for (int round = 0; round < 20000; round++) {
        size_t len = t_random_edits(buf, sizeof buf, seed_text, sizeof seed_text - 1, words,
                                    sizeof words / sizeof *words, &x);
        struct pve_resource want[64];
        int nwant;
        int ref = ref_parse(buf, len, want, 64, &nwant);
        if (ref == REF_SKIP)
            continue;
        struct got g = {.n = 0};
        struct pve_error e;
        int rc = pve_resources_parse(buf, len, keep_got, &g, &e);
        int verdict = rc == 0                                                 ? REF_OK
                      : strcmp(e.message, "answer is not a JSON object") == 0 ? REF_SYNTAX
                      : strcmp(e.message, "unexpected result for /cluster/resources") == 0
                          ? REF_SHAPE
                          : -1;
        /* text that is not JSON fails; where a fault of shape comes first
         * in the text (an element that is not an object, "data" not an
         * array) the stream says that one */
        if (ref == REF_SYNTAX && verdict == REF_SHAPE)
            verdict = REF_SYNTAX;
        if (verdict != ref)
            fail_msg("round %d: %d, the tree says %d: %.*s", round, verdict, ref, (int)len, buf);
        if (ref == REF_OK) {
            if (g.n != nwant)
                fail_msg("round %d: %d records, the tree %d: %.*s", round, g.n, nwant, (int)len,
                         buf);
            for (int i = 0; i < g.n && i < 64; i++)
                if (!same(&g.r[i], &want[i]))
                    fail_msg("round %d: record %d differs (name '%s' / '%s'): %.*s", round, i,
                             g.r[i].name, want[i].name, (int)len, buf);
        }
        agree[ref]++;
    }
    /* the edits reach every verdict, not just syntax errors */
    print_message("agreed: %d ok, %d syntax, %d shape\n", agree[REF_OK], agree[REF_SYNTAX],
                  agree[REF_SHAPE]);
    assert_true(agree[REF_OK] > 1000 && agree[REF_SYNTAX] > 1000 && agree[REF_SHAPE] > 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),      cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_lenient), cmocka_unit_test(test_parse_matches_tree),
        cmocka_unit_test(test_resources),     cmocka_unit_test(test_resources_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
