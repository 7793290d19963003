/* cmd_ippool: proxctl ippool list|show|hold|unhold|add-range. */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: proxctl ippool list\n"
                    "       proxctl ippool show NAME\n"
                    "       proxctl ippool hold NAME ADDRESS [--note TEXT]\n"
                    "       proxctl ippool unhold NAME ADDRESS\n"
                    "       proxctl ippool add-range NAME FIRST-LAST [--reserved]\n");
    return EXIT_USAGE;
}

/* A path segment from the command line: no characters that would change
 * the path (the server checks the rest). */
static bool segment_ok(const char *s)
{
    return *s && strlen(s) < 64 && !strpbrk(s, "/?#% ");
}

static void print_pool_row(json_t *p, bool admin)
{
    if (!admin) {
        printf("%-16s %-24s %lld\n", cli_str(p, "name"), cli_str(p, "cidr"),
               (long long)cli_num(p, "yours"));
        return;
    }
    printf("%-16s %-24s %8lld %6lld %6lld %6lld %6lld %6lld %8lld\n", cli_str(p, "name"),
           cli_str(p, "cidr"), (long long)cli_num(p, "size"), (long long)cli_num(p, "used"),
           (long long)cli_num(p, "reserved"), (long long)cli_num(p, "quarantined"),
           (long long)cli_num(p, "held"), (long long)cli_num(p, "foreign"),
           (long long)cli_num(p, "free"));
}

static int pool_list(struct cli *c)
{
    json_t *ans = NULL;
    int rc = cli_request(c, "GET", "/v1/ippools", NULL, 200, &ans);
    if (rc != EXIT_OK || cli_json_out(c, ans)) {
        json_decref(ans);
        return rc;
    }
    json_t *arr = json_object_get(ans, "ippools");
    bool admin = json_array_size(arr) && json_object_get(json_array_get(arr, 0), "size");
    if (admin)
        printf("%-16s %-24s %8s %6s %6s %6s %6s %6s %8s\n", "NAME", "CIDR", "SIZE", "USED", "RESV",
               "QUAR", "HELD", "FOREIGN", "FREE");
    else
        printf("%-16s %-24s %s\n", "NAME", "CIDR", "YOURS");
    size_t i;
    json_t *p;
    json_array_foreach(arr, i, p) print_pool_row(p, admin);
    if (!json_array_size(arr))
        printf("(no pools)\n");
    json_decref(ans);
    return EXIT_OK;
}

static void print_strings(const char *label, json_t *arr)
{
    size_t i;
    json_t *v;
    printf("%-12s", label);
    json_array_foreach(arr, i, v) printf("%s%s", i ? ", " : "", json_string_value(v));
    printf("%s\n", json_array_size(arr) ? "" : "-");
}

static int pool_show(struct cli *c, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/ippools/%s", name);
    json_t *p = NULL;
    int rc = cli_request(c, "GET", path, NULL, 200, &p);
    if (rc != EXIT_OK || cli_json_out(c, p)) {
        json_decref(p);
        return rc;
    }
    printf("%-12s%s\n%-12s%s\n", "name", cli_str(p, "name"), "cidr", cli_str(p, "cidr"));
    if (!json_object_get(p, "size")) {
        printf("%-12s%lld\n", "yours", (long long)cli_num(p, "yours"));
        json_decref(p);
        return EXIT_OK;
    }
    printf("%-12s%s\n%-12s%s\n%-12s%lld\n", "gateway", cli_str(p, "gateway"), "bridge",
           cli_str(p, "bridge"), "vlan", (long long)cli_num(p, "vlan"));
    static const char *const figs[] = {"size", "used",    "reserved", "quarantined",
                                       "held", "foreign", "free",     "conflicts"};
    for (size_t i = 0; i < sizeof figs / sizeof *figs; i++)
        printf("%-12s%lld\n", figs[i], (long long)cli_num(p, figs[i]));
    json_t *r = json_object_get(p, "ranges");
    print_strings("ranges", json_object_get(r, "configured"));
    print_strings("reserved", json_object_get(r, "configured_reserved"));
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r, "runtime"), i, x) printf(
        "%-12s#%lld %s %s-%s (%s)\n", "run-time", (long long)cli_num(x, "id"), cli_str(x, "kind"),
        cli_str(x, "first"), cli_str(x, "last"), cli_str(x, "created_by"));
    json_array_foreach(json_object_get(p, "conflict_list"), i, x)
        printf("%-12s%s held for vmid %lld, in the config of vmid %lld on %s\n", "conflict",
               cli_str(x, "address"), (long long)cli_num(x, "vmid"),
               (long long)cli_num(x, "seen_vmid"), cli_str(x, "seen_node"));
    json_decref(p);
    return EXIT_OK;
}

static int simple(struct cli *c, const char *method, const char *path, json_t *body,
                  const char *done)
{
    json_t *ans = NULL;
    long st = cli_call(c, method, path, body, &ans);
    json_decref(body);
    int rc = EXIT_OK;
    if (st != 200 && st != 201 && st != 204)
        rc = cli_fail(st, ans);
    else if (c->json && ans)
        cli_print_json(ans);
    else
        printf("%s\n", done);
    json_decref(ans);
    return rc;
}

int cmd_ippool(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"note", 1, 0, 'n'}, {"reserved", 0, 0, 'r'}, {0, 0, 0, 0}};
    if (argc < 1)
        return usage();
    const char *sub = argv[0];
    if (strcmp(sub, "list") == 0)
        return argc == 1 ? pool_list(c) : usage();
    if (argc < 2 || !segment_ok(argv[1]))
        return usage();
    const char *name = argv[1];
    if (strcmp(sub, "show") == 0)
        return argc == 2 ? pool_show(c, name) : usage();
    bool hold = strcmp(sub, "hold") == 0, unhold = strcmp(sub, "unhold") == 0;
    bool range = strcmp(sub, "add-range") == 0;
    if ((!hold && !unhold && !range) || argc < 3 || !segment_ok(argv[2]))
        return usage();
    const char *arg = argv[2], *note = NULL;
    bool reserved = false;
    int opt;
    optind = 3;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'n' && hold)
            note = optarg;
        else if (opt == 'r' && range)
            reserved = true;
        else
            return usage();
    }
    if (optind != argc)
        return usage();
    char path[192], msg[192];
    if (hold) {
        snprintf(path, sizeof path, "/v1/ippools/%s/addresses", name);
        json_t *b = json_pack("{s:s}", "address", arg);
        if (note)
            json_object_set_new(b, "note", json_string(note));
        snprintf(msg, sizeof msg, "%s is held in %s", arg, name);
        return simple(c, "POST", path, b, msg);
    }
    if (unhold) {
        snprintf(path, sizeof path, "/v1/ippools/%s/addresses/%s", name, arg);
        snprintf(msg, sizeof msg, "%s is no longer held", arg);
        return simple(c, "DELETE", path, NULL, msg);
    }
    const char *dash = strchr(arg, '-');
    if (!dash || dash == arg || !dash[1])
        return usage();
    char first[64];
    snprintf(first, sizeof first, "%.*s", (int)(dash - arg), arg);
    snprintf(path, sizeof path, "/v1/ippools/%s/ranges", name);
    json_t *b = json_pack("{s:s,s:s,s:s}", "first", first, "last", dash + 1, "kind",
                          reserved ? "reserved" : "ranges");
    snprintf(msg, sizeof msg, "range %s added to %s%s", arg, name, reserved ? " (reserved)" : "");
    return simple(c, "POST", path, b, msg);
}
