/* Pure unit tests: a /cluster/resources answer parsed one element at a time
 * (pve_resources_parse: yajl's events straight into records). No network. */
#include "pvetest.h"

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
        "",
        "   ",
        "[{\"data\":[]}]",
        "42",
        "{\"data\":[{},{}]",                            /* truncated */
        "{\"data\":[{},{},]}",                          /* trailing comma */
        "{\"data\":[{} {}]}",                           /* missing comma */
        "{\"data\":[{}]} x",                            /* trailing garbage */
        "{\"data\":[{}]}{}",                            /* two texts */
        "{\"data\":[{\"a\":1]}",                        /* broken element */
        "{data:[{}]}",                                  /* unquoted key */
        "{\"data\" [{}]}",                              /* missing colon */
        "{\"a\":1,}",                                   /* trailing comma in the envelope */
        "{\"data\":[{\"name\":\"x]}",                   /* string runs off the end */
        "{\"data\":[{\"name\":\"\xff\"}]}",             /* not UTF-8 */
        "{\"data\":[{\"vmid\":99999999999999999999}]}", /* no 64-bit integer */
        "{\"data\":[]} /* c */",                        /* comments are not JSON */
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
        "\"status\":2.5,\"lock\":false,\"tags\":\"a\\u0000b\",\"template\":\"1\","
        "\"shared\":2,\"node\":\"sv1\",\"node\":null,\"id\":\"q\\\"\\u00e9\"},"
        "{\"type\":\"storage\",\"template\":\"0\",\"shared\":0.0,\"storage\":\"s\","
        "\"type\":\"lxc\"},"
        "{\"type\":5,\"template\":true,\"shared\":\"true\",\"vmid\":3000000000}]}";
    struct pve_resource r[3];
    int n = 0;
    struct pve_error e;
    assert_int_equal(pve_resources_parse(text, strlen(text), keep3, &(struct keep3){r, &n}, &e), 0);
    assert_int_equal(n, 2); /* the second became a container by its last "type" */
    assert_int_equal(r[0].type, PVE_RES_VM);
    assert_int_equal(r[0].vmid, 42);
    assert_true(r[0].maxmem == 1500 && r[0].mem == 1 && r[0].maxdisk == 0);
    assert_true(r[0].disk == INT64_MAX && r[0].uptime == -7 && r[0].maxcpu == 4);
    assert_string_equal(r[0].name, "12");
    assert_string_equal(r[0].status, "2.5");
    assert_string_equal(r[0].lock, "");
    assert_string_equal(r[0].tags, "a"); /* a text ends at a NUL */
    assert_true(r[0].tmpl && r[0].shared);
    assert_string_equal(r[0].node, "");
    assert_string_equal(r[0].id, "q\"\xc3\xa9");
    assert_int_equal(r[1].type, PVE_RES_OTHER);
    assert_true(r[1].tmpl && !r[1].shared);
    assert_int_equal(r[1].vmid, 2147483647); /* an int field, kept in range */
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
    assert_int_equal(l.n, 7); /* the container is left out, everything else kept */
    assert_int_equal(l.r[0].type, PVE_RES_NODE);
    assert_string_equal(l.r[0].node, "sv1");
    assert_string_equal(l.r[0].status, "online");
    assert_int_equal(l.r[0].maxcpu, 32);
    assert_true(l.r[0].maxmem == 137438953472LL && l.r[0].mem == 1073741824LL);
    assert_int_equal(l.r[1].type, PVE_RES_STORAGE);
    assert_string_equal(l.r[1].storage, "local-lvm");
    assert_true(l.r[1].maxdisk == 1000 && l.r[1].disk == 400); /* a numeric string */
    const struct pve_resource *v = &l.r[2];
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
    v = &l.r[3];
    assert_int_equal(v->type, PVE_RES_VM);
    assert_int_equal(v->vmid, 101);
    assert_string_equal(v->node, "");
    assert_string_equal(v->name, "");
    assert_string_equal(v->status, "");
    assert_true(v->maxmem == 0 && v->maxdisk == 0 && v->maxcpu == 0);
    /* types proxd does not know, or none, are passed on as OTHER */
    assert_int_equal(l.r[4].type, PVE_RES_OTHER);
    assert_int_equal(l.r[5].type, PVE_RES_OTHER);
    v = &l.r[6];
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),       cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_lenient),  cmocka_unit_test(test_resources),
        cmocka_unit_test(test_resources_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
