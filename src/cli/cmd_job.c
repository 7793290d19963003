/* cmd_job: proxctl job list|show|watch|cancel: the jobs proxd runs. list
 * pages through GET /v1/jobs newest first (before= the previous page's
 * next) until --limit jobs are shown. cancel asks POST /v1/jobs/ID/cancel
 * and, unless --no-wait, waits for the job to stop. */
#include "cli/cli.h"

#include "common/buf.h"
#include "common/util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX 100000

static int usage_job(void)
{
    fprintf(stderr, "usage: proxctl job list [--state S] [--kind K] [--vmid N] [--owner O]"
                    " [--limit N] | job show|watch ID | job cancel ID [--no-wait]\n");
    return EXIT_USAGE;
}

static void job_row(json_t *j)
{
    const char *e = json_string_value(json_object_get(j, "error"));
    printf("%-36s %-12s %-7s %6lld %-10s %-24.24s %-24.24s %.60s\n", cli_str(j, "id"),
           cli_str(j, "kind"), cli_str(j, "state"), cli_num(j, "vmid"), cli_str(j, "owner"),
           cli_str(j, "created_at"), cli_str(j, "step"), e && *e ? e : "-");
}

static int job_list(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"state", 1, 0, 's'}, {"kind", 1, 0, 'k'},
                                      {"vmid", 1, 0, 'v'},  {"owner", 1, 0, 'o'},
                                      {"limit", 1, 0, 'l'}, {0, 0, 0, 0}};
    struct buf q = BUF_INIT(2048);
    long limit = LIST_DEFAULT;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'l') {
            char *end;
            limit = strtol(optarg, &end, 10);
            if (*end || limit < 1 || limit > LIST_MAX) {
                fprintf(stderr, "proxctl: --limit: a number of jobs, 1 to %d\n", LIST_MAX);
                buf_release(&q);
                return EXIT_USAGE;
            }
            continue;
        }
        const char *k = opt == 's'   ? "state"
                        : opt == 'k' ? "kind"
                        : opt == 'v' ? "vmid"
                        : opt == 'o' ? "owner"
                                     : NULL;
        if (!k) {
            buf_release(&q);
            return usage_job();
        }
        if (!cli_query_add(&q, k, optarg)) {
            buf_release(&q);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        buf_release(&q);
        return usage_job();
    }
    json_t *all = json_array();
    char first[2200];
    snprintf(first, sizeof first, "/v1/jobs?limit=%ld%s", limit < 1000 ? limit : 1000, buf_str(&q));
    int rc = cli_pages(c, first, "jobs", "before", (size_t)limit, all);
    buf_release(&q);
    if (rc == EXIT_OK && !cli_json_out(c, all)) {
        printf("%-36s %-12s %-7s %6s %-10s %-24s %-24s %s\n", "ID", "KIND", "STATE", "VMID",
               "OWNER", "CREATED", "STEP", "ERROR");
        size_t i;
        json_t *j;
        json_array_foreach(all, i, j) job_row(j);
    }
    json_decref(all);
    return rc;
}

static int job_show(struct cli *c, const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    json_t *j = NULL;
    int rc = cli_request(c, "GET", path, NULL, 200, &j);
    if (rc == EXIT_OK && !cli_json_out(c, j)) {
        printf("job       %s\nkind      %s\nstate     %s\nstep      %s\nprogress  %lld%%\n",
               cli_str(j, "id"), cli_str(j, "kind"), cli_str(j, "state"), cli_str(j, "step"),
               cli_num(j, "progress"));
        if (json_object_get(j, "vmid"))
            printf("vmid      %lld\n", cli_num(j, "vmid"));
        const char *e = json_string_value(json_object_get(j, "error"));
        if (e && *e)
            printf("error     %s\n", e);
        json_t *g = json_object_get(j, "guest");
        if (json_is_object(g)) { /* a done start: is the guest up? */
            const char *d = json_string_value(json_object_get(g, "detail"));
            printf("guest     %s%s%s%s%s\n", cli_str(g, "state"),
                   json_is_string(json_object_get(g, "at")) ? " at " : "",
                   json_is_string(json_object_get(g, "at")) ? cli_str(g, "at") : "",
                   d && *d ? ": " : "", d && *d ? d : "");
        }
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(j, "attempts"), i, a)
        {
            if (json_is_string(json_object_get(a, "node")))
                printf("attempt   %s: %s\n", cli_str(a, "node"), cli_str(a, "error"));
            else /* a drain's ledger: one VM */
                printf("vm        %lld %s: %s%s%s\n", cli_num(a, "vmid"), cli_str(a, "name"),
                       cli_str(a, "state"), json_is_string(json_object_get(a, "to")) ? " to " : "",
                       json_is_string(json_object_get(a, "to")) ? cli_str(a, "to") : "");
        }
    }
    json_decref(j);
    return rc;
}

static bool job_ended(json_t *j)
{
    const char *s = cli_str(j, "state");
    return strcmp(s, "done") == 0 || strcmp(s, "failed") == 0;
}

/* The cancel's outcome: 0 when the job stopped (failed: what it made is
 * gone), 1 when it finished (done) before the cancel took effect. */
static int cancel_outcome(struct cli *c, json_t *j)
{
    bool done = strcmp(cli_str(j, "state"), "done") == 0;
    if (!cli_json_out(c, j)) {
        if (done)
            fprintf(stderr, "proxctl: job %s finished before the cancel took effect\n",
                    cli_str(j, "id"));
        else
            printf("job %s cancelled: %s\n", cli_str(j, "id"), cli_str(j, "error"));
    }
    return done ? EXIT_FAILED : EXIT_OK;
}

static int job_cancel(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {{"no-wait", 0, 0, 'W'}, {0, 0, 0, 0}};
    bool wait = true;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt != 'W')
            return usage_job();
        wait = false;
    }
    if (optind != argc - 1 ||
        strspn(argv[optind], "0123456789abcdefABCDEF-") != strlen(argv[optind]) ||
        strlen(argv[optind]) > 40)
        return usage_job();
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", argv[optind]);
    json_t *j = NULL;
    long st = cli_call(c, "POST", path, NULL, &j);
    if (st != 200 && st != 202) {
        int rc = cli_fail(st, j);
        json_decref(j);
        return rc;
    }
    if (st == 202 && !wait) {
        if (!cli_json_out(c, j))
            printf("job %s: cancel requested; it stops at its next step\n", cli_str(j, "id"));
        json_decref(j);
        return EXIT_OK;
    }
    /* running: it stops at its next step (a clone under way first ends) */
    snprintf(path, sizeof path, "/v1/jobs/%s", argv[optind]);
    for (long pause = 100; !job_ended(j); pause = pause < 2000 ? pause * 2 : 2000) {
        sleep_ms(pause);
        json_decref(j);
        j = NULL;
        if ((st = cli_call(c, "GET", path, NULL, &j)) != 200) {
            int rc = cli_fail(st, j);
            json_decref(j);
            return rc;
        }
    }
    int rc = cancel_outcome(c, j);
    json_decref(j);
    return rc;
}

int cmd_job(struct cli *c, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "list") == 0)
        return job_list(c, argc, argv);
    if (argc >= 1 && strcmp(argv[0], "cancel") == 0)
        return job_cancel(c, argc, argv);
    if (argc != 2 || (strcmp(argv[0], "show") != 0 && strcmp(argv[0], "watch") != 0))
        return usage_job();
    if (strcmp(argv[0], "watch") == 0)
        return cli_follow_job(c, argv[1]);
    return job_show(c, argv[1]);
}
