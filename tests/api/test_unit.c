/* api unit tests: the route table against docs/openapi.yaml, tokens
 * (create, check, revoke) on a scratch SQLite store, and the VM record
 * encoder (vm_write_json) against the jansson tree it replaced, and the
 * /metrics writer (mtext_printf). */
#include "harness.h"

#include "api/api.h"
#include "api/api_int.h"
#include "api/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the spec lists exactly the routes the server serves ------------------- */

#define MAX_OPS 128

struct op {
    char method[8];
    char path[128];
};

static void upper(char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            *s = (char)(*s - 'a' + 'A');
}

/* The paths section: "  /path:" at indent 2, "    get:" at indent 4, until
 * the next top-level key. Enough YAML for our own file. */
static size_t spec_ops(const char *file, struct op *ops)
{
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    char line[1024], path[128] = "";
    bool in_paths = false;
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] && line[0] != ' ' && line[0] != '#') {
            in_paths = strcmp(line, "paths:") == 0;
            continue;
        }
        if (!in_paths)
            continue;
        size_t ind = strspn(line, " ");
        size_t len = strlen(line);
        if (ind == 2 && line[2] == '/' && line[len - 1] == ':') {
            snprintf(path, sizeof path, "%.*s", (int)(len - 3), line + 2);
        } else if (ind == 4 && line[len - 1] == ':') {
            char m[16];
            snprintf(m, sizeof m, "%.*s", (int)(len - 5), line + 4);
            if (strcmp(m, "get") && strcmp(m, "post") && strcmp(m, "put") && strcmp(m, "patch") &&
                strcmp(m, "delete"))
                continue;
            assert_true(n < MAX_OPS);
            upper(m);
            snprintf(ops[n].method, sizeof ops[n].method, "%.7s", m);
            snprintf(ops[n].path, sizeof ops[n].path, "%s", path);
            n++;
        }
    }
    fclose(f);
    return n;
}

static bool has(const struct op *ops, size_t n, const char *method, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ops[i].method, method) == 0 && strcmp(ops[i].path, path) == 0)
            return true;
    return false;
}

static void test_openapi_matches_routes(void **state)
{
    const char *src = getenv("SRC_DIR");
    char file[1024];
    snprintf(file, sizeof file, "%s/docs/openapi.yaml", src ? src : "../..");
    struct op ops[MAX_OPS];
    size_t n = spec_ops(file, ops);
    size_t missing = 0;
    for (size_t i = 0; i < api_route_count(); i++) {
        const struct api_route_info *r = api_route_at(i);
        if (!has(ops, n, r->method, r->path)) {
            print_error("served but not in openapi.yaml: %s %s\n", r->method, r->path);
            missing++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool served = false;
        for (size_t k = 0; k < api_route_count() && !served; k++)
            served = strcmp(api_route_at(k)->method, ops[i].method) == 0 &&
                     strcmp(api_route_at(k)->path, ops[i].path) == 0;
        if (!served) {
            print_error("in openapi.yaml but not served: %s %s\n", ops[i].method, ops[i].path);
            missing++;
        }
    }
    assert_int_equal(missing, 0);
    assert_int_equal(n, api_route_count());
}

/* ---- tokens ------------------------------------------------------------------ */

struct fx {
    char dir[64];
    store *st;
    unsigned char key[AUTH_KEY_BYTES];
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof *x);
    snprintf(x->dir, sizeof x->dir, "/tmp/proxd-api-XXXXXX");
    assert_non_null(mkdtemp(x->dir));
    char url[128];
    snprintf(url, sizeof url, "sqlite:%s/t.db", x->dir);
    struct store_error se;
    x->st = store_open(url, &se);
    assert_non_null(x->st);
    char err[256];
    assert_int_equal(auth_init(x->st, x->key, err, sizeof err), 0);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    store_close(x->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
    assert_int_equal(system(cmd), 0);
    free(x);
    return 0;
}

static void test_token_roundtrip(void **state)
{
    struct fx *x = *state;
    char tok[AUTH_TOKEN_MAX], hdr[AUTH_TOKEN_MAX + 16], err[256];
    struct token_rec rec;
    assert_int_equal(auth_token_create(x->st, x->key, "alice", "user", tok, &rec, err, sizeof err),
                     0);
    assert_true(strncmp(tok, "pxd_", 4) == 0);
    assert_null(strstr(rec.hash, tok + 21)); /* the secret is not stored */
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    struct auth_identity who;
    assert_int_equal(auth_check(x->st, x->key, hdr, &who), 0);
    assert_string_equal(who.owner, "alice");
    assert_false(who.admin);

    /* The key survives a restart: a second init reads the same one. */
    unsigned char again[AUTH_KEY_BYTES];
    assert_int_equal(auth_init(x->st, again, err, sizeof err), 0);
    assert_memory_equal(again, x->key, AUTH_KEY_BYTES);

    /* one changed secret digit, a foreign key, garbage: all refused */
    char bad[sizeof hdr];
    snprintf(bad, sizeof bad, "%s", hdr);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
    assert_int_equal(auth_check(x->st, x->key, bad, &who), -1);
    unsigned char other[AUTH_KEY_BYTES] = {1};
    assert_int_equal(auth_check(x->st, other, hdr, &who), -1);
    assert_int_equal(auth_check(x->st, x->key, NULL, &who), -1);
    assert_int_equal(auth_check(x->st, x->key, "Bearer", &who), -1);
    assert_int_equal(auth_check(x->st, x->key, tok, &who), -1); /* no scheme */

    assert_int_equal(store_token_revoke(x->st, rec.id, NULL), 0);
    assert_int_equal(auth_check(x->st, x->key, hdr, &who), -1);
}

static void test_token_refusals(void **state)
{
    struct fx *x = *state;
    char tok[AUTH_TOKEN_MAX], err[256];
    struct token_rec rec;
    assert_int_not_equal(auth_token_create(x->st, x->key, "a", "root", tok, &rec, err, sizeof err),
                         0);
    assert_non_null(strstr(err, "role"));
    assert_int_not_equal(auth_token_create(x->st, x->key, "", "user", tok, &rec, err, sizeof err),
                         0);
    assert_int_equal(auth_token_create(x->st, x->key, "ops", "admin", tok, &rec, err, sizeof err),
                     0);
    struct token_rec *all = NULL;
    size_t n = 0;
    assert_int_equal(store_token_list(x->st, &all, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(all[0].role, "admin");
    free(all);
    assert_int_equal(store_token_revoke(x->st, "nope", NULL), STORE_E_NOTFOUND);
    assert_int_equal(store_token_insert(x->st, &rec, NULL), STORE_E_CONFLICT);
}

/* ---- the VM record encoder ----------------------------------------------------- */

/* The encoder before vm_write_json: a jansson tree, dumped compact. The
 * answers must stay byte for byte the same. */
static char *vm_ref_json(const struct vm_rec *v)
{
    json_t *o =
        json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:s}", "vmid", v->vmid, "name", v->name,
                  "os", v->os, "owner", v->owner, "node", v->node, "state", vm_state_name(v->state),
                  "power", v->power, "cores", v->cores, "memory_mb", (json_int_t)v->memory_mb,
                  "disk_gb", (json_int_t)v->disk_gb, "job", v->job);
    assert_non_null(o);
    json_object_set_new(o, "id", json_integer(v->id));
    json_object_set_new(o, "pending", v->pending ? json_deep_copy(v->pending) : json_object());
    json_object_set_new(o, "error", v->error[0] ? json_string(v->error) : json_null());
    json_object_set_new(o, "created_at", json_time(v->created_at));
    json_object_set_new(o, "updated_at", json_time(v->updated_at));
    /* no fleet here: a record with a node says "unknown" */
    json_object_set_new(o, "node_status", v->node[0] ? json_string("unknown") : json_null());
    json_object_set_new(o, "node_error", json_null());
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

static struct vm_rec vm_sample(void)
{
    struct vm_rec v = {0};
    v.id = 42;
    v.vmid = 10042;
    snprintf(v.os, sizeof v.os, "ubuntu");
    snprintf(v.name, sizeof v.name, "web-1");
    snprintf(v.owner, sizeof v.owner, "tenant07");
    snprintf(v.node, sizeof v.node, "sv3");
    v.state = VMS_ENABLED;
    snprintf(v.power, sizeof v.power, "running");
    v.cores = 2;
    v.memory_mb = 4096;
    v.disk_gb = 40;
    snprintf(v.job, sizeof v.job, "5f0c2d3e-0b8e-4a7b-9a52-1f0c2d3e4f50");
    v.created_at = 1795477201123;
    v.updated_at = 1795477262001;
    return v;
}

static char *vm_new_json(const struct vm_rec *v)
{
    struct buf b = BUF_INIT(API_ANSWER_MAX);
    assert_int_equal(vm_write_json(&b, v, NULL), BUF_OK);
    assert_int_equal(strlen(b.data), b.len);
    return buf_take(&b);
}

static void expect_same_as_ref(const struct vm_rec *v)
{
    char *got = vm_new_json(v), *want = vm_ref_json(v);
    assert_non_null(want);
    assert_string_equal(got, want);
    free(got);
    free(want);
}

static void test_vm_json_fields(void **state)
{
    struct vm_rec v = vm_sample();
    char *got = vm_new_json(&v);
    assert_string_equal(
        got, "{\"vmid\":10042,\"name\":\"web-1\",\"os\":\"ubuntu\",\"owner\":\"tenant07\","
             "\"node\":\"sv3\",\"state\":\"enabled\",\"power\":\"running\",\"cores\":2,"
             "\"memory_mb\":4096,\"disk_gb\":40,\"job\":\"5f0c2d3e-0b8e-4a7b-9a52-1f0c2d3e4f50\","
             "\"id\":42,\"pending\":{},\"error\":null,\"created_at\":\"2026-11-23T23:40:01.123Z\","
             "\"updated_at\":\"2026-11-23T23:41:02.001Z\",\"node_status\":\"unknown\","
             "\"node_error\":null}");
    free(got);
    expect_same_as_ref(&v);
    /* every state, big numbers */
    for (int s = VMS_CREATING; s <= VMS_LOST; s++) {
        v.state = (enum vm_state)s;
        v.memory_mb = INT64_MAX;
        v.disk_gb = -1;
        v.id = INT64_MAX;
        expect_same_as_ref(&v);
    }
}

static void test_vm_json_nulls(void **state)
{
    struct vm_rec v = vm_sample();
    /* no node, job, error, times: "", "", null, null, null */
    v.node[0] = v.job[0] = v.error[0] = '\0';
    v.created_at = 0;
    v.updated_at = -1;
    char *got = vm_new_json(&v);
    assert_non_null(strstr(got, "\"node\":\"\","));
    assert_non_null(strstr(got, "\"job\":\"\","));
    assert_non_null(strstr(got, "\"error\":null,\"created_at\":null,\"updated_at\":null,"
                                "\"node_status\":null,\"node_error\":null}"));
    free(got);
    expect_same_as_ref(&v);
    /* pending changes: written as they are */
    v.pending = json_pack("{s:i,s:s,s:[i]}", "cores", 4, "note", "a\"b\n", "list", 1);
    got = vm_new_json(&v);
    assert_non_null(strstr(got, "\"pending\":{\"cores\":4,\"note\":\"a\\\"b\\n\",\"list\":[1]}"));
    free(got);
    expect_same_as_ref(&v);
    json_decref(v.pending);
    v.pending = json_object();
    expect_same_as_ref(&v);
    json_decref(v.pending);
}

static void test_vm_json_escaping(void **state)
{
    struct vm_rec v = vm_sample();
    snprintf(v.name, sizeof v.name, "say \"hi\" \\ back\\slash");
    snprintf(v.owner, sizeof v.owner,
             "Ren\xc3\xa9"
             "e \xe2\x82\xac \xf0\x9f\x96\xa5"); /* UTF-8 passes */
    snprintf(v.error, sizeof v.error, "line 1\nline 2\r\n\ttab \x01\x1f\b\f end");
    snprintf(v.node, sizeof v.node, "</script>");
    char *got = vm_new_json(&v);
    assert_non_null(strstr(got, "\"name\":\"say \\\"hi\\\" \\\\ back\\\\slash\""));
    assert_non_null(strstr(got, "\"owner\":\"Ren\xc3\xa9"
                                "e \xe2\x82\xac \xf0\x9f\x96\xa5\""));
    assert_non_null(
        strstr(got, "\"error\":\"line 1\\nline 2\\r\\n\\ttab \\u0001\\u001F\\b\\f end\""));
    assert_non_null(strstr(got, "\"node\":\"</script>\""));
    /* and it decodes back to the same strings */
    json_error_t je;
    json_t *o = json_loads(got, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "name")), v.name);
    assert_string_equal(json_string_value(json_object_get(o, "owner")), v.owner);
    assert_string_equal(json_string_value(json_object_get(o, "error")), v.error);
    json_decref(o);
    free(got);
    expect_same_as_ref(&v);

    /* Invalid UTF-8 (jansson would refuse the string): U+FFFD, valid JSON. */
    snprintf(v.error, sizeof v.error, "bad \xff\xc0\xaf end");
    got = vm_new_json(&v);
    assert_non_null(strstr(got, "\"error\":\"bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end\""));
    o = json_loads(got, 0, &je);
    assert_non_null(o);
    json_decref(o);
    free(got);
}

/* Every string field full (no NUL inside the array) of bytes that escape
 * to six: the reserved worst case holds (ASan watches the writes). */
static void test_vm_json_worst_case(void **state)
{
    struct vm_rec v = vm_sample();
    memset(v.os, 0x01, sizeof v.os);
    memset(v.name, 0x02, sizeof v.name);
    memset(v.owner, 0x03, sizeof v.owner);
    memset(v.node, 0x04, sizeof v.node);
    memset(v.power, 0x05, sizeof v.power);
    memset(v.job, 0x06, sizeof v.job);
    memset(v.error, 0x07, sizeof v.error);
    v.vmid = INT32_MIN;
    v.id = INT64_MIN;
    v.created_at = INT64_MAX;
    char *got = vm_new_json(&v);
    size_t strs = sizeof v.os + sizeof v.name + sizeof v.owner + sizeof v.node + sizeof v.power +
                  sizeof v.job + sizeof v.error;
    assert_true(strlen(got) > strs * 6);
    json_t *o = json_loads(got, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_string_length(json_object_get(o, "error")), sizeof v.error);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), INT64_MIN);
    json_decref(o);
    free(got);

    /* past the buffer's cap: BUF_TOOBIG, the buffer as it was */
    struct buf b = BUF_INIT(64);
    assert_int_equal(buf_add(&b, "[", 1), BUF_OK);
    assert_int_equal(vm_write_json(&b, &v, NULL), BUF_TOOBIG);
    assert_string_equal(b.data, "[");
    buf_release(&b);
}

/* The /metrics writer: once a line does not fit under the cap, no later
 * one is written (a short line after a dropped long one made a malformed
 * page) and the page says it is full. */
static void test_metrics_writer_is_all_or_full(void **state)
{
    (void)state;
    struct mtext m = {BUF_INIT(32), false};
    mtext_printf(&m, "a_total %d\n", 1);
    mtext_printf(&m, "b_total{world=\"%s\"} %d\n", "a-long-world-name", 2); /* past 32 */
    assert_true(m.full);
    mtext_printf(&m, "c %d\n", 3); /* would fit: skipped all the same */
    assert_true(m.full);
    assert_string_equal(buf_str(&m.b), "a_total 1\n");
    buf_release(&m.b);
    struct mtext ok = {BUF_INIT(32), false};
    mtext_printf(&ok, "a_total %d\n", 1);
    mtext_printf(&ok, "b_total %d\n", 2);
    assert_false(ok.full);
    assert_string_equal(buf_str(&ok.b), "a_total 1\nb_total 2\n");
    buf_release(&ok.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi_matches_routes),
        cmocka_unit_test_setup_teardown(test_token_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_refusals, setup, teardown),
        cmocka_unit_test(test_vm_json_fields),
        cmocka_unit_test(test_vm_json_nulls),
        cmocka_unit_test(test_vm_json_escaping),
        cmocka_unit_test(test_vm_json_worst_case),
        cmocka_unit_test(test_metrics_writer_is_all_or_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
