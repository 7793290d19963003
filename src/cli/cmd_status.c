/* cmd_status: proxctl status — what needs an operator's attention, in one
 * look: proxd's readiness, the nodes down or not yet known (and those
 * cordoned), the jobs running, queued and failed in the last hours, the VMID
 * ranges and address pools close to full, the VMs lost, the webhooks whose
 * events wait longer than --webhook-age seconds. Each problem is an
 * "attention" line; the exit code is 1 when there is one (a cron job or a
 * monitor can page on it) and 0 when there is none. A section the token may
 * not read (a user's: the pools' figures) is left out, not an error.
 *
 * It only reads the API (GET), as `node list`, `job list`, `os list`,
 * `ippool list` and `webhook list` do, and says nothing they do not: it puts them side by side
 * and picks out what is wrong. */
#include "cli/cli.h"

#include "common/buf.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FULL_FILL 0.9      /* a VMID range this full needs room soon */
#define POOL_FREE_PCT 10.0 /* a pool with less free than this of its size */
#define LIST_MAX 10000     /* jobs or VMs read per list at the most */
#define FAILED_SHOWN 5     /* failed jobs listed by name in the text */
#define HOOK_AGE_S 300     /* a webhook's event waiting longer than this */

struct report {
    json_t *r;         /* the whole report (--json prints it) */
    json_t *attention; /* its "attention" array: one line per problem */
    bool db_down;      /* /readyz: the database does not answer */
};

static void attention(struct report *rp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void attention(struct report *rp, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    json_array_append_new(rp->attention, json_string(line));
}

/* "2026-12-06T15:03:00.123Z" (proxd's times) in unix seconds; -1 if not. */
static int64_t api_time_s(const char *s)
{
    struct tm tm = {0};
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm);
}

/* Readiness; false when proxd does not answer at all (said: there is
 * nothing more to read). */
static bool check_ready(struct cli *c, struct report *rp)
{
    json_t *ans = NULL;
    long st = cli_call(c, "GET", "/readyz", NULL, &ans);
    if (st < 0)
        return false;
    bool ready = st == 200;
    json_object_set_new(rp->r, "ready", json_boolean(ready));
    if (!ready) {
        if ((rp->db_down = json_is_false(json_object_get(ans, "database"))))
            attention(rp, "proxd is not ready: its database does not answer (%s)",
                      cli_str(ans, "database_error"));
        else if (st == 503)
            attention(rp, "proxd is not ready: %lld of %lld nodes up", cli_num(ans, "nodes_up"),
                      cli_num(ans, "nodes"));
        else
            attention(rp, "proxd is not ready (HTTP %ld)", st);
    }
    json_decref(ans);
    return true;
}

/* A node's privileges (GET /v1/nodes, admins): one line naming the first
 * few that the Proxmox credentials lack; a node that is up whose
 * privileges were never read whole (a read that failed after a whole one is
 * not paged on: that one's finding stands, and `node list` shows the
 * error). */
static void privileges_attention(struct report *rp, const char *name, const char *health,
                                 json_t *pv)
{
    json_t *miss = json_object_get(pv, "missing");
    size_t n = json_array_size(miss);
    if (n) {
        char list[512] = "";
        size_t len = 0, shown = 0;
        for (; shown < n && shown < 3; shown++) {
            json_t *m = json_array_get(miss, shown);
            int w = snprintf(list + len, sizeof list - len, "%s%s on %s", shown ? ", " : "",
                             cli_str(m, "privilege"), cli_str(m, "path"));
            if (w < 0 || (size_t)w >= sizeof list - len)
                break;
            len += (size_t)w;
        }
        char more[64] = "";
        if (shown < n)
            snprintf(more, sizeof more, " and %zu more", n - shown);
        attention(rp, "node %s: the Proxmox credentials lack %s%s (proxctl node list)", name, list,
                  more);
        return;
    }
    const char *err = json_string_value(json_object_get(pv, "error"));
    if (err && json_is_null(json_object_get(pv, "checked_at")) && strcmp(health, "up") == 0)
        attention(rp, "node %s: its privileges could not be read: %s", name, err);
}

/* The nodes; an exit code when the token cannot read them (said), which
 * no other section can then either. */
static int check_nodes(struct cli *c, struct report *rp, json_t *sum)
{
    json_t *ans = NULL;
    long st = cli_call(c, "GET", "/v1/nodes", NULL, &ans);
    if (st != 200) {
        int rc = cli_fail(st, ans);
        json_decref(ans);
        return rc;
    }
    long long up = 0, down = 0, unknown = 0, cordoned = 0;
    json_t *cord = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(ans, "nodes"), i, n)
    {
        const char *h = cli_str(n, "health"), *name = cli_str(n, "name");
        if (strcmp(h, "up") == 0) {
            up++;
        } else if (strcmp(h, "down") == 0) {
            down++;
            const char *at = json_string_value(json_object_get(n, "probe_at"));
            attention(rp, "node %s is down: %s%s%s%s", name, cli_str(n, "last_error"),
                      at ? " (asked again at " : "", at ? at : "", at ? ")" : "");
        } else {
            unknown++;
            attention(rp, "node %s: health %s (not read yet)", name, h);
        }
        privileges_attention(rp, name, h, json_object_get(n, "privileges"));
        if (json_is_true(json_object_get(n, "cordoned"))) {
            cordoned++;
            json_array_append_new(
                cord, json_pack("{s:s,s:s}", "node", name, "by", cli_str(n, "cordoned_by")));
        }
    }
    json_object_set_new(sum, "nodes",
                        json_pack("{s:I,s:I,s:I,s:I,s:o}", "up", up, "down", down, "unknown",
                                  unknown, "cordoned", cordoned, "cordons", cord));
    json_decref(ans);
    return EXIT_OK;
}

/* The jobs of one state, newest first, up to LIST_MAX; NULL if unreadable. */
static json_t *jobs_of(struct cli *c, const char *state)
{
    char first[96];
    snprintf(first, sizeof first, "/v1/jobs?state=%s&limit=1000", state);
    json_t *all = json_array();
    if (cli_pages(c, first, "jobs", "before", LIST_MAX, all) != EXIT_OK) {
        json_decref(all);
        return NULL;
    }
    return all;
}

#define OWNERS_SHOWN 3 /* owners of queued jobs named in the text */

static int by_count_desc(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "queued"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "queued"));
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Whose jobs are queued, most first: [{"owner", "queued"}]. A long queue
 * at 3 a.m. is one customer's batch or everyone's slowness; the owners
 * take turns for the workers, so a burst does not hold up the others, but
 * it is the first thing to know. */
static json_t *queued_by_owner(json_t *queued)
{
    json_t *counts = json_object();
    size_t i;
    json_t *j;
    json_array_foreach(queued, i, j)
    {
        const char *o = cli_str(j, "owner");
        json_object_set_new(counts, o,
                            json_integer(json_integer_value(json_object_get(counts, o)) + 1));
    }
    size_t n = json_object_size(counts), k = 0;
    json_t **rows = calloc(n ? n : 1, sizeof *rows);
    const char *o;
    json_t *v;
    json_object_foreach(counts, o, v) rows[k++] = json_pack("{s:s,s:O}", "owner", o, "queued", v);
    qsort(rows, n, sizeof *rows, by_count_desc);
    json_t *out = json_array();
    for (k = 0; k < n; k++)
        json_array_append_new(out, rows[k]);
    free(rows);
    json_decref(counts);
    return out;
}

static void check_jobs(struct cli *c, struct report *rp, json_t *sum, int hours)
{
    json_t *run = jobs_of(c, "running"), *queued = jobs_of(c, "queued");
    json_t *failed = jobs_of(c, "failed");
    if (!run || !queued || !failed)
        goto out;
    /* the running job quiet the longest: a job that waits on Proxmox
     * writes its step as it goes, so one quiet for long is where to look */
    json_t *quiet = NULL;
    int64_t quiet_at = 0;
    size_t i;
    json_t *j;
    json_array_foreach(run, i, j)
    {
        int64_t at = api_time_s(json_string_value(json_object_get(j, "updated_at")));
        if (at >= 0 && (!quiet || at < quiet_at)) {
            quiet = j;
            quiet_at = at;
        }
    }
    int64_t since = (int64_t)time(NULL) - (int64_t)hours * 3600;
    json_t *recent = json_array();
    long long cancelled = 0;
    json_array_foreach(failed, i, j)
    {
        int64_t at = api_time_s(json_string_value(json_object_get(j, "finished_at")));
        if (at < since)
            continue;
        const char *e = cli_str(j, "error");
        if (strncmp(e, "cancelled by", 12) == 0) {
            cancelled++; /* someone asked for it: not a problem */
            continue;
        }
        json_array_append(recent, j);
    }
    json_t *js = json_pack("{s:I,s:I,s:i,s:o,s:I}", "running", (json_int_t)json_array_size(run),
                           "queued", (json_int_t)json_array_size(queued), "hours", hours, "failed",
                           recent, "cancelled", cancelled);
    if (quiet)
        json_object_set(js, "quiet_longest", quiet);
    json_object_set_new(js, "queued_by_owner", queued_by_owner(queued));
    json_object_set_new(sum, "jobs", js);
    if (json_array_size(recent))
        attention(rp, "%zu job%s failed in the last %d h (proxctl job list --state failed)",
                  json_array_size(recent), json_array_size(recent) == 1 ? "" : "s", hours);
out:
    json_decref(run);
    json_decref(queued);
    json_decref(failed);
}

static void check_ranges(struct cli *c, struct report *rp, json_t *sum)
{
    json_t *ans = NULL;
    if (cli_call(c, "GET", "/v1/os", NULL, &ans) != 200) {
        json_decref(ans);
        return;
    }
    json_t *full = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(ans, "os"), i, o)
    {
        json_t *r = json_object_get(o, "range");
        double fill = json_number_value(json_object_get(r, "fill"));
        if (fill < FULL_FILL)
            continue;
        json_array_append_new(full, json_pack("{s:s,s:O}", "os", cli_str(o, "name"), "range", r));
        attention(rp, "VMID range of %s (%lld-%lld) is %.0f%% allocated (%lld quarantined)",
                  cli_str(o, "name"), cli_num(r, "lo"), cli_num(r, "hi"), fill * 100,
                  cli_num(r, "quarantined"));
    }
    json_object_set_new(sum, "ranges_full", full);
    json_decref(ans);
}

static void check_pools(struct cli *c, struct report *rp, json_t *sum)
{
    json_t *ans = NULL;
    if (cli_call(c, "GET", "/v1/ippools", NULL, &ans) != 200) {
        json_decref(ans);
        return;
    }
    json_t *low = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ans, "ippools"), i, p)
    {
        if (!json_is_integer(json_object_get(p, "size")))
            continue; /* a user's view: no figures */
        /* sizes are saturated at 2^63-1 (IPv6): compared as doubles */
        double size = (double)cli_num(p, "size"), fr = (double)cli_num(p, "free");
        const char *name = cli_str(p, "name");
        if (size > 0 && fr * 100 < size * POOL_FREE_PCT) {
            json_array_append_new(low, json_pack("{s:s,s:I,s:I}", "pool", name, "free",
                                                 cli_num(p, "free"), "size", cli_num(p, "size")));
            attention(rp, "address pool %s has %lld free of %lld", name, cli_num(p, "free"),
                      cli_num(p, "size"));
        }
        if (cli_num(p, "conflicts") > 0)
            attention(rp, "address pool %s has %lld conflicts (proxctl ippool show %s)", name,
                      cli_num(p, "conflicts"), name);
    }
    json_object_set_new(sum, "pools_low", low);
    json_decref(ans);
}

static void check_lost(struct cli *c, struct report *rp, json_t *sum)
{
    json_t *all = json_array();
    if (cli_pages(c, "/v1/vms?limit=100&state=lost", "vms", "after", LIST_MAX, all) == EXIT_OK) {
        json_object_set_new(sum, "lost", json_integer((json_int_t)json_array_size(all)));
        if (json_array_size(all))
            attention(rp,
                      "%zu VM%s lost: recorded, not found on any node (proxctl vm list "
                      "--state lost)",
                      json_array_size(all), json_array_size(all) == 1 ? "" : "s");
    }
    json_decref(all);
}

/* A webhook of this instance's configuration whose oldest waiting event
 * is older than age_s: its receiver is down or refuses, or no instance
 * delivers it; or that dropped an event (undelivered after its max_age) in
 * the last `hours`: its receiver will never have it. (A cursor no
 * instance's configuration has any more waits for ever: listed by
 * `webhook list`, not an attention line.) */
static void check_webhooks(struct cli *c, struct report *rp, json_t *sum, int64_t age_s, int hours)
{
    json_t *ans = NULL;
    if (cli_call(c, "GET", "/v1/webhooks", NULL, &ans) != 200) {
        json_decref(ans); /* a user's token: not its business */
        return;
    }
    json_t *late = json_array();
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(ans, "webhooks"), i, w)
    {
        int64_t dropped_at = api_time_s(json_string_value(json_object_get(w, "last_dropped_at")));
        if (json_is_true(json_object_get(w, "configured")) && dropped_at >= 0 &&
            dropped_at >= (int64_t)time(NULL) - hours * 3600L)
            attention(rp,
                      "webhook %s dropped events undelivered after max_age (%lld in all, the "
                      "last at %s): its receiver will not get them",
                      cli_str(w, "name"), cli_num(w, "dropped"), cli_str(w, "last_dropped_at"));
        double oldest = json_number_value(json_object_get(w, "oldest_waiting_s"));
        if (!json_is_true(json_object_get(w, "configured")) || cli_num(w, "behind") == 0 ||
            oldest <= (double)age_s)
            continue;
        json_array_append_new(late,
                              json_pack("{s:s,s:I,s:f}", "webhook", cli_str(w, "name"), "behind",
                                        cli_num(w, "behind"), "oldest_waiting_s", oldest));
        const char *err = json_string_value(json_object_get(w, "last_error"));
        char why[400] = "no instance delivers it";
        if (*cli_str(w, "holder") != '-')
            snprintf(why, sizeof why, "held by %s; last failure %s: %.200s", cli_str(w, "holder"),
                     cli_str(w, "last_error_at"), err && *err ? err : "none");
        attention(rp, "webhook %s: %lld event%s waiting, the oldest for %.0f s (%s)",
                  cli_str(w, "name"), cli_num(w, "behind"), cli_num(w, "behind") == 1 ? "" : "s",
                  oldest, why);
    }
    json_object_set_new(sum, "webhooks_late", late);
    json_decref(ans);
}

/* " (alice 6, carol 1, 2 more)", or nothing when none is queued. */
static void print_queued_owners(json_t *by)
{
    size_t k;
    json_t *o;
    json_array_foreach(by, k, o)
    {
        if (k == OWNERS_SHOWN) {
            printf(", %zu more", json_array_size(by) - OWNERS_SHOWN);
            break;
        }
        const char *who = cli_str(o, "owner"); /* "": proxd's own (a snapshot sync) */
        printf("%s%s %lld", k ? ", " : " (", who[0] ? who : "proxd", cli_num(o, "queued"));
    }
    if (json_array_size(by))
        printf(")");
}

static void print_text(const struct cli *c, json_t *r)
{
    json_t *n = json_object_get(r, "nodes"), *j = json_object_get(r, "jobs");
    printf("proxd at %s: %s\n", c->server,
           json_is_true(json_object_get(r, "ready")) ? "ready" : "NOT READY");
    if (n) {
        printf("nodes:     %lld up, %lld down, %lld unknown, %lld cordoned", cli_num(n, "up"),
               cli_num(n, "down"), cli_num(n, "unknown"), cli_num(n, "cordoned"));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(n, "cordons"), i, e)
            printf("%s%s by %s", i ? ", " : " (", cli_str(e, "node"), cli_str(e, "by"));
        printf("%s\n", json_array_size(json_object_get(n, "cordons")) ? ")" : "");
    }
    if (j) {
        json_t *f = json_object_get(j, "failed");
        printf("jobs:      %lld running, %lld queued", cli_num(j, "running"), cli_num(j, "queued"));
        print_queued_owners(json_object_get(j, "queued_by_owner"));
        printf(", %zu failed in the last %lld h", json_array_size(f), cli_num(j, "hours"));
        if (cli_num(j, "cancelled"))
            printf(" (and %lld cancelled)", cli_num(j, "cancelled"));
        printf("\n");
        json_t *q = json_object_get(j, "quiet_longest");
        if (q)
            printf("           quiet longest: %s %s VM %lld, step %s since %s\n", cli_str(q, "id"),
                   cli_str(q, "kind"), cli_num(q, "vmid"), cli_str(q, "step"),
                   cli_str(q, "updated_at"));
        size_t i;
        json_t *e;
        json_array_foreach(f, i, e)
        {
            if (i == FAILED_SHOWN) {
                printf("           ... %zu more\n", json_array_size(f) - FAILED_SHOWN);
                break;
            }
            printf("           failed %s %s VM %lld: %.200s\n", cli_str(e, "finished_at"),
                   cli_str(e, "kind"), cli_num(e, "vmid"), cli_str(e, "error"));
        }
    }
    json_t *a = json_object_get(r, "attention");
    if (!json_array_size(a)) {
        printf("attention: none\n");
        return;
    }
    printf("attention: %zu\n", json_array_size(a));
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) printf("  - %s\n", json_string_value(e));
}

/* Every section after readiness; an exit code when the nodes cannot be
 * read (said), which no other section can then either. */
static int check_sections(struct cli *c, struct report *rp, int hours, int64_t hook_age)
{
    int rc = check_nodes(c, rp, rp->r);
    if (rc != EXIT_OK)
        return rc;
    check_jobs(c, rp, rp->r, hours);
    check_ranges(c, rp, rp->r);
    check_pools(c, rp, rp->r);
    check_lost(c, rp, rp->r);
    check_webhooks(c, rp, rp->r, hook_age, hours);
    return EXIT_OK;
}

int cmd_status(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {
        {"hours", 1, 0, 'h'}, {"webhook-age", 1, 0, 'w'}, {0, 0, 0, 0}};
    int64_t hours = 1, hook_age = HOOK_AGE_S;
    int opt;
    bool ok = true;
    optind = 1;
    while (ok && (opt = getopt_long(argc, argv, "", o, NULL)) != -1) {
        if (opt == 'h')
            ok = cli_int("--hours", optarg, 1, 24 * 30, &hours);
        else if (opt == 'w')
            ok = cli_int("--webhook-age", optarg, 0, 86400 * 30, &hook_age);
        else
            ok = false;
    }
    if (!ok || optind < argc) {
        fprintf(stderr, "usage: proxctl status [--hours N] [--webhook-age SECONDS]\n");
        return EXIT_USAGE;
    }
    struct report rp = {.r = json_object(), .attention = json_array()};
    json_object_set_new(rp.r, "server", json_string(c->server));
    int rc = EXIT_SERVER;
    if (!check_ready(c, &rp))
        goto out;
    /* without its database proxd answers nothing else (503): the report is
     * that line, at once, rather than the first section's failure */
    if (!rp.db_down && (rc = check_sections(c, &rp, (int)hours, hook_age)) != EXIT_OK)
        goto out;
    json_object_set(rp.r, "attention", rp.attention);
    if (!cli_json_out(c, rp.r))
        print_text(c, rp.r);
    rc = json_array_size(rp.attention) ? EXIT_FAILED : EXIT_OK;
out:
    json_decref(rp.r);
    json_decref(rp.attention);
    return rc;
}
