/* cmd_node: node maintenance from the command line — proxctl node cordon,
 * uncordon and drain (POST /v1/nodes/{node}/...). A drain is followed
 * until it ends (unless --no-wait), then what moved and what stayed is
 * printed. */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void print_drain(json_t *j)
{
    json_t *r = json_object_get(j, "result");
    size_t i;
    json_t *e;
    if (json_is_true(json_object_get(r, "standalone")))
        printf("%s is a standalone host: nothing to move its VMs to; cordoned only\n",
               cli_str(r, "node"));
    json_array_foreach(json_object_get(r, "moved"), i, e)
        printf("moved   %-6lld %-24s %s -> %s\n",
               (long long)json_integer_value(json_object_get(e, "vmid")), cli_str(e, "name"),
               cli_str(e, "from"), cli_str(e, "to"));
    json_array_foreach(json_object_get(r, "stayed"), i, e) printf(
        "stayed  %-6lld %-24s %s\n", (long long)json_integer_value(json_object_get(e, "vmid")),
        cli_str(e, "name"), cli_str(e, "reason"));
    printf("%zu moved, %zu stayed\n", json_array_size(json_object_get(r, "moved")),
           json_array_size(json_object_get(r, "stayed")));
}

static int drain(struct cli *c, const char *node, bool wait)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/nodes/%s/drain", node);
    json_t *ans = NULL;
    int rc = cli_request(c, "POST", path, NULL, 202, &ans);
    if (rc != EXIT_OK)
        return rc;
    char job[64];
    snprintf(job, sizeof job, "%s", cli_str(ans, "job"));
    if (!wait) {
        if (!cli_json_out(c, ans))
            printf("job %s queued\n", job);
        json_decref(ans);
        return EXIT_OK;
    }
    json_decref(ans);
    rc = cli_follow_job(c, job);
    snprintf(path, sizeof path, "/v1/jobs/%s", job);
    json_t *j = NULL;
    if (!c->json && cli_call(c, "GET", path, NULL, &j) == 200) /* --json: printed by the follow */
        print_drain(j);
    json_decref(j);
    return rc;
}

int cmd_node_maint(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"no-wait", 0, 0, 'W'}, {0, 0, 0, 0}};
    if (argc < 2) {
        fprintf(stderr, "usage: proxctl node cordon|uncordon NODE | node drain NODE [--no-wait]\n");
        return EXIT_USAGE;
    }
    bool wait = true;
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt != 'W') {
            fprintf(stderr, "usage: proxctl node drain NODE [--no-wait]\n");
            return EXIT_USAGE;
        }
        wait = false;
    }
    if (strcmp(argv[0], "drain") == 0)
        return drain(c, argv[1], wait);
    char path[256];
    snprintf(path, sizeof path, "/v1/nodes/%s/%s", argv[1], argv[0]);
    json_t *ans = NULL;
    int rc = cli_request(c, "POST", path, NULL, 200, &ans);
    if (rc == EXIT_OK && !cli_json_out(c, ans)) {
        if (json_is_true(json_object_get(ans, "cordoned")))
            printf("%s cordoned by %s\n", argv[1], cli_str(ans, "cordoned_by"));
        else if (json_is_string(json_object_get(ans, "drain_cancelled")))
            printf("%s uncordoned; its drain (job %s) was cancelled: moves under way finish, "
                   "no other starts\n",
                   argv[1], cli_str(ans, "drain_cancelled"));
        else
            printf("%s uncordoned\n", argv[1]);
    }
    json_decref(ans);
    return rc;
}
