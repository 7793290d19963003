/* cmd_events: proxctl events [--after ID] [--type T] [--follow]: the event
 * log, a page at a time from `after`; with --follow it keeps asking (once a
 * second while nothing is new) until interrupted, so a restart of proxd or
 * a dropped connection loses nothing: it goes on from the last id seen. */
#include "cli/cli.h"

#include "common/util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FOLLOW_MS 1000

static int usage_events(void)
{
    fprintf(stderr, "usage: proxctl events [--after ID] [--type TYPE] [--follow]\n");
    return EXIT_USAGE;
}

static void event_row(const struct cli *c, json_t *e)
{
    if (c->json) {
        char *d = json_dumps(e, JSON_COMPACT);
        printf("%s\n", d);
        free(d);
    } else {
        char *d = json_dumps(json_object_get(e, "data"), JSON_COMPACT);
        printf("%-8lld %-24.24s %-18.18s %-8lld %-10.10s %-10.10s %s\n",
               (long long)json_integer_value(json_object_get(e, "id")), cli_str(e, "time"),
               cli_str(e, "type"), (long long)json_integer_value(json_object_get(e, "vmid")),
               cli_str(e, "node"), cli_str(e, "owner"), d ? d : "{}");
        free(d);
    }
    fflush(stdout);
}

int cmd_events(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {
        {"after", 1, 0, 'a'}, {"type", 1, 0, 't'}, {"follow", 0, 0, 'f'}, {0, 0, 0, 0}};
    long long after = 0;
    const char *type = NULL;
    bool follow = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'a') {
            char *end;
            after = strtoll(optarg, &end, 10);
            if (*end || after < 0) {
                fprintf(stderr, "proxctl: --after: a non-negative event id\n");
                return EXIT_USAGE;
            }
        } else if (opt == 't') {
            type = optarg;
        } else if (opt == 'f') {
            follow = true;
        } else {
            return usage_events();
        }
    }
    if (optind < argc)
        return usage_events();
    if (!c->json)
        printf("%-8s %-24s %-18s %-8s %-10s %-10s %s\n", "ID", "TIME", "TYPE", "VMID", "NODE",
               "OWNER", "DATA");
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/v1/events?limit=500&after=%lld%s%s", after,
                 type ? "&type=" : "", type ? type : "");
        json_t *ans = NULL;
        long st = cli_call(c, "GET", path, NULL, &ans);
        if (st != 200) {
            int rc = cli_fail(st, ans);
            json_decref(ans);
            if (!follow || st > 0)
                return rc;
            sleep_ms(FOLLOW_MS); /* proxd restarting: ask again */
            continue;
        }
        json_t *evs = json_object_get(ans, "events"), *e;
        size_t i;
        json_array_foreach(evs, i, e)
        {
            event_row(c, e);
            after = (long long)json_integer_value(json_object_get(e, "id"));
        }
        bool more = json_is_true(json_object_get(ans, "more"));
        json_decref(ans);
        if (!more && !follow)
            return EXIT_OK;
        if (!more)
            sleep_ms(FOLLOW_MS);
    }
}
