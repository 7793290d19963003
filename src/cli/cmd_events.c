/* cmd_events: proxctl events [--after ID] [--type T] [--follow]: the event
 * log, a page at a time from `after`. With --follow, once caught up it
 * reads /v1/events/stream from the last id printed, and when the stream
 * ends (its time limit, proxd restarting, a dropped connection) it pages
 * again from that id before streaming anew: nothing lost, nothing twice.
 * Where the stream cannot be had it asks once a second instead. */
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

/* What a stream's events update: the last id printed. */
struct tail {
    const struct cli *c;
    long long after;
    int printed;
};

static void on_stream_event(void *ud, json_t *e)
{
    struct tail *t = ud;
    json_t *id = json_object_get(e, "id");
    /* the stream's own "end" event has no id; a repeat is never printed */
    if (!json_is_integer(id) || json_integer_value(id) <= t->after)
        return;
    event_row(t->c, e);
    t->after = (long long)json_integer_value(id);
    t->printed++;
}

/* Page from *after until the log has no more; false on an error not worth
 * waiting out (printed; *rc set). */
static bool catch_up(struct cli *c, long long *after, const char *type, bool follow, int *rc)
{
    for (;;) {
        char path[256];
        snprintf(path, sizeof path, "/v1/events?limit=500&after=%lld%s%s", *after,
                 type ? "&type=" : "", type ? type : "");
        json_t *ans = NULL;
        long st = cli_call(c, "GET", path, NULL, &ans);
        if (st != 200) {
            *rc = cli_fail(st, ans);
            json_decref(ans);
            if (follow && st < 0) { /* proxd restarting: ask again */
                sleep_ms(FOLLOW_MS);
                continue;
            }
            return false;
        }
        json_t *evs = json_object_get(ans, "events"), *e;
        size_t i;
        json_array_foreach(evs, i, e)
        {
            event_row(c, e);
            *after = (long long)json_integer_value(json_object_get(e, "id"));
        }
        bool more = json_is_true(json_object_get(ans, "more"));
        json_decref(ans);
        if (!more)
            return true;
    }
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
    int rc = EXIT_OK;
    for (;;) {
        if (!catch_up(c, &after, type, follow, &rc))
            return rc;
        if (!follow)
            return EXIT_OK;
        char path[256];
        snprintf(path, sizeof path, "/v1/events/stream?after=%lld%s%s", after, type ? "&type=" : "",
                 type ? type : "");
        struct tail t = {.c = c, .after = after};
        int64_t t0 = mono_ms();
        int st = cli_sse(c, path, on_stream_event, &t);
        after = t.after;
        /* no stream to be had (or one that broke at once): do not spin */
        if (st != 0 && t.printed == 0 && mono_ms() - t0 < FOLLOW_MS)
            sleep_ms(FOLLOW_MS);
    }
}
