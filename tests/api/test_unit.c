/* api unit tests: the route table against docs/openapi.yaml, and tokens
 * (create, check, revoke) on a scratch SQLite store. */
#include "harness.h"

#include "api/api.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openapi_matches_routes),
        cmocka_unit_test_setup_teardown(test_token_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
