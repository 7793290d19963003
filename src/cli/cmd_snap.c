/* cmd_snap: proxctl vm snapshot list|create|delete|rollback. */
#include "cli/cli.h"
#include "common/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_WAIT_MS 120000 /* a list job: how long to wait for its answer */

static int usage(void)
{
    fprintf(stderr, "usage: proxctl vm snapshot list VMID [--refresh]\n"
                    "       proxctl vm snapshot create VMID NAME [--description TEXT] [--ram] "
                    "[--no-wait]\n"
                    "       proxctl vm snapshot delete|rollback VMID NAME [--no-wait]\n");
    return EXIT_USAGE;
}

static int print_list(struct cli *c, json_t *ans)
{
    if (c->json) {
        cli_print_json(ans);
        return EXIT_OK;
    }
    printf("%-24s %-24s %-4s %-6s %-9s %s\n", "NAME", "CREATED", "RAM", "PROXD", "STATE",
           "DESCRIPTION");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(ans, "snapshots"), i, s)
        printf("%-24s %-24s %-4s %-6s %-9s %s\n", cli_str(s, "name"), cli_str(s, "created_at"),
               json_is_true(json_object_get(s, "vmstate")) ? "yes" : "no",
               json_is_true(json_object_get(s, "proxd")) ? "yes" : "no", cli_str(s, "state"),
               cli_str(s, "description"));
    if (!json_array_size(json_object_get(ans, "snapshots")))
        printf("(no snapshots)\n");
    return EXIT_OK;
}

/* GET the list; a 202 names a list job whose answer is polled for. */
static int snap_list(struct cli *c, const char *vmid, bool refresh)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/vms/%s/snapshots%s", vmid, refresh ? "?refresh=1" : "");
    json_t *ans = NULL;
    long st = cli_call(c, "GET", path, NULL, &ans);
    int64_t end = mono_ms() + LIST_WAIT_MS;
    long pause = 100;
    while (st == 202 && mono_ms() < end) {
        const char *job = json_string_value(json_object_get(ans, "job"));
        if (!job)
            break;
        snprintf(path, sizeof path, "/v1/vms/%s/snapshots?job=%.40s", vmid, job);
        json_decref(ans);
        ans = NULL;
        sleep_ms(pause);
        pause = pause < 1000 ? pause * 2 : 1000;
        st = cli_call(c, "GET", path, NULL, &ans);
    }
    int rc;
    if (st == 200)
        rc = print_list(c, ans);
    else if (st == 202) {
        fprintf(stderr, "proxctl: the snapshot list job did not answer within %d s\n",
                LIST_WAIT_MS / 1000);
        rc = EXIT_SERVER;
    } else
        rc = cli_fail(st, ans);
    json_decref(ans);
    return rc;
}

int cmd_snapshot(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"description", 1, 0, 'd'},
                                      {"ram", 0, 0, 'r'},
                                      {"refresh", 0, 0, 'f'},
                                      {"no-wait", 0, 0, 'W'},
                                      {0, 0, 0, 0}};
    if (argc < 2)
        return usage();
    const char *sub = argv[0], *vmid = argv[1];
    bool list = strcmp(sub, "list") == 0, create = strcmp(sub, "create") == 0;
    bool del = strcmp(sub, "delete") == 0, back = strcmp(sub, "rollback") == 0;
    if (!list && !create && !del && !back)
        return usage();
    int pos = list ? 2 : 3;
    if (argc < pos || strspn(vmid, "0123456789") != strlen(vmid) || !*vmid)
        return usage();
    const char *name = list ? NULL : argv[2];
    if (name && (strlen(name) > 64 || strchr(name, '/') || strchr(name, '?')))
        return usage();
    json_t *body = create ? json_pack("{s:s}", "name", name) : NULL;
    bool refresh = false;
    int opt;
    optind = pos;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'd' && create)
            json_object_set_new(body, "description", json_string(optarg));
        else if (opt == 'r' && create)
            json_object_set_new(body, "vmstate", json_true());
        else if (opt == 'f' && list)
            refresh = true;
        else if (opt == 'W' && !list)
            c->quiet = true;
        else {
            json_decref(body);
            return usage();
        }
    }
    if (optind != argc) {
        json_decref(body);
        return usage();
    }
    if (list)
        return snap_list(c, vmid, refresh);
    char path[192];
    if (create)
        snprintf(path, sizeof path, "/v1/vms/%s/snapshots", vmid);
    else
        snprintf(path, sizeof path, "/v1/vms/%s/snapshots/%s%s", vmid, name,
                 back ? "/rollback" : "");
    json_t *ans = NULL;
    long st = cli_call(c, del ? "DELETE" : "POST", path, body, &ans);
    json_decref(body);
    return cli_accepted(c, st, ans, vmid);
}
