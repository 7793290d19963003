/* output: sizes, JSON printing, and following a job with a progress bar on
 * a terminal or plain lines when piped. */
#include "cli/cli.h"
#include "common/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool size_in(const char *s, int64_t unit_div, int64_t default_mul, int64_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return false;
    double v = strtod(s, &end);
    int64_t mul = default_mul;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        mul = 1024;
        end++;
        break;
    case 'M':
        mul = 1024 * 1024;
        end++;
        break;
    case 'G':
        mul = 1024LL * 1024 * 1024;
        end++;
        break;
    case 'T':
        mul = 1024LL * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v <= 0 || v > 1e15)
        return false;
    *out = (int64_t)(v * (double)mul / (double)unit_div);
    return *out > 0;
}

bool cli_int(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out)
{
    int64_t v;
    if (!parse_i64(s, &v) || v < min || v > max) {
        fprintf(stderr, "proxctl: %s: '%.40s' is not a whole number from %lld to %lld\n", opt, s,
                (long long)min, (long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool cli_size_mb(const char *s, int64_t *mb)
{
    return size_in(s, 1024 * 1024, 1024 * 1024, mb);
}

bool cli_size_gb(const char *s, int64_t *gb)
{
    return size_in(s, 1024LL * 1024 * 1024, 1024LL * 1024 * 1024, gb);
}

void cli_print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", s ? s : "null");
    free(s);
}

bool cli_json_out(const struct cli *c, json_t *v)
{
    if (c->json)
        cli_print_json(v);
    return c->json;
}

const char *cli_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s && *s ? s : "-";
}

long long cli_num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? (long long)json_number_value(v) : 0;
}

struct follow {
    struct cli *c;
    char last_step[64];
    int progress;
};

static void bar(int pct, char *out, size_t len)
{
    int w = 24, full = pct * w / 100;
    size_t k = 0;
    out[k++] = '[';
    for (int i = 0; i < w && k + 2 < len; i++)
        out[k++] = i < full ? '#' : '-';
    out[k++] = ']';
    out[k] = '\0';
}

static void show(struct follow *f, const char *step, int progress, const char *msg)
{
    if (f->c->json)
        return;
    if (progress >= 0)
        f->progress = progress;
    if (f->c->tty) {
        char b[32];
        bar(f->progress, b, sizeof b);
        printf("\r\033[K%s %3d%% %-10s %.60s", b, f->progress, step, msg ? msg : "");
        fflush(stdout);
    } else if (strcmp(step, f->last_step) != 0 || (msg && *msg)) {
        printf("%3d%% %s%s%s\n", f->progress, step, msg && *msg ? ": " : "", msg ? msg : "");
        fflush(stdout);
    }
    snprintf(f->last_step, sizeof f->last_step, "%s", step);
}

static void on_event(void *ud, json_t *ev)
{
    struct follow *f = ud;
    const char *step = json_string_value(json_object_get(ev, "step"));
    if (!step || !*step)
        return; /* the stream's closing event carries no step */
    json_t *p = json_object_get(ev, "progress");
    show(f, step ? step : "", p ? (int)json_integer_value(p) : -1,
         json_string_value(json_object_get(ev, "message")));
}

/* How long proxd may be out of reach (a restart: stopped, then reading its
 * inventory) while a job is followed before proxctl gives up on it. */
#define FOLLOW_LOST_MS 60000

/* GET /v1/jobs/<id> until the job has ended: *status 200 and the job, or
 * the status of the answer that stopped it (and that answer). proxd out
 * of reach or failing (a network error, 5xx) is asked again for
 * FOLLOW_LOST_MS: the job goes on without it (a restart resumes it). */
static json_t *poll_job(struct follow *f, const char *job, long *status)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", job);
    int64_t answered = mono_ms();
    for (long pause = 100;; pause = pause < 1000 ? pause * 2 : 1000) {
        json_t *j = NULL;
        long st = cli_call(f->c, "GET", path, NULL, &j);
        *status = st;
        if ((st < 0 || st >= 500) && mono_ms() - answered < FOLLOW_LOST_MS) {
            /* "cannot reach" was said once: the asking again is quiet */
            f->c->hush_net = true;
            json_decref(j);
            sleep_ms(pause);
            continue;
        }
        f->c->hush_net = false;
        if (st != 200)
            return j;
        answered = mono_ms();
        const char *state = json_string_value(json_object_get(j, "state"));
        if (state && (strcmp(state, "done") == 0 || strcmp(state, "failed") == 0))
            return j;
        const char *step = json_string_value(json_object_get(j, "step"));
        show(f, step ? step : "", (int)json_integer_value(json_object_get(j, "progress")), NULL);
        json_decref(j);
        sleep_ms(pause);
    }
}

int cli_follow_job(struct cli *c, const char *job)
{
    struct follow f = {.c = c, .progress = 0};
    char events[128];
    snprintf(events, sizeof events, "/v1/jobs/%s/events", job);
    /* The stream shows the steps as they come. Its end is not the job's:
     * proxd ends a stream after 30 minutes, and with "shutdown" when it
     * stops (a restart), while the job goes on. So the job itself is asked
     * after any end, and asked again until it has ended. */
    cli_sse(c, events, on_event, &f);
    long st;
    json_t *j = poll_job(&f, job, &st);
    if (c->tty && !c->json)
        printf("\n");
    if (st != 200) {
        int rc = cli_fail(st, j);
        if (rc == EXIT_SERVER)
            fprintf(stderr,
                    "proxctl: proxd did not answer for %d s: job %s may still be running "
                    "(proxctl job watch %s)\n",
                    FOLLOW_LOST_MS / 1000, job, job);
        json_decref(j);
        return rc;
    }
    if (c->json)
        cli_print_json(j);
    const char *state = json_string_value(json_object_get(j, "state"));
    int rc = state && strcmp(state, "done") == 0 ? EXIT_OK : EXIT_FAILED;
    if (!c->json && rc == EXIT_OK) {
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(j, "attempts"), i, a)
        {
            if (json_is_string(json_object_get(a, "node"))) /* a drain's are VMs: its result */
                printf("passed over %s: %s\n", json_string_value(json_object_get(a, "node")),
                       json_string_value(json_object_get(a, "error")));
        }
    }
    if (!c->json && rc != EXIT_OK) {
        const char *err = json_string_value(json_object_get(j, "error"));
        fprintf(stderr, "proxctl: job %s failed: %s\n", job, err ? err : "(no reason given)");
        json_t *att = json_object_get(j, "attempts");
        size_t i;
        json_t *a;
        json_array_foreach(att, i, a)
            fprintf(stderr, "  %s: %s\n", json_string_value(json_object_get(a, "node")),
                    json_string_value(json_object_get(a, "error")));
    }
    json_decref(j);
    return rc;
}

/* --wait-guest: the job is done; ask it until its guest check has an
 * outcome (proxd's guest_wait bounds the wait): EXIT_OK when the guest's
 * agent answered, EXIT_FAILED when it did not or the check was skipped
 * (said on stderr). With --json, only the exit code and stderr tell. */
static int wait_guest(struct cli *c, const char *job, const char *vm)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", job);
    for (bool told = false;; told = true) {
        json_t *j = NULL;
        long st = cli_call(c, "GET", path, NULL, &j);
        if (st != 200) {
            int rc = cli_fail(st, j);
            json_decref(j);
            return rc;
        }
        json_t *g = json_object_get(j, "guest");
        const char *state = json_string_value(json_object_get(g, "state"));
        const char *detail = json_string_value(json_object_get(g, "detail"));
        int rc = EXIT_FAILED;
        if (!state)
            fprintf(stderr, "proxctl: job %s has no guest check (a proxd without them?)\n", job);
        else if (strcmp(state, "ready") == 0 && !c->json)
            printf("guest of VM %s is ready (%s)\n", vm, cli_str(g, "at"));
        else if (strcmp(state, "ready") != 0 && strcmp(state, "waiting") != 0)
            fprintf(stderr, "proxctl: guest of VM %s is %s: %s\n", vm, state,
                    detail && *detail ? detail : "(no reason given)");
        if (state && strcmp(state, "ready") == 0)
            rc = EXIT_OK;
        bool waiting = state && strcmp(state, "waiting") == 0;
        json_decref(j);
        if (!waiting)
            return rc;
        if (!told && c->tty && !c->json)
            printf("waiting for the guest of VM %s to answer...\n", vm);
        sleep_ms(1000);
    }
}

int cli_accepted(struct cli *c, long st, json_t *ans, const char *vmid)
{
    if (st != 202 && st != 200) {
        int rc = cli_fail(st, ans);
        json_decref(ans);
        return rc;
    }
    const char *job = json_string_value(json_object_get(ans, "job"));
    if (!job) {
        /* every call that queues work names its job: a 200 or 202 without
         * one is not proxd's (a wrong PROXD_URL, a proxy's login page), and
         * nothing says the work was queued */
        fprintf(stderr, "proxctl: the answer (HTTP %ld) names no job: is %s proxd's API?\n", st,
                c->server);
        json_decref(ans);
        return EXIT_SERVER;
    }
    if (c->quiet) {
        if (!cli_json_out(c, ans))
            printf("job %s queued\n", job);
        json_decref(ans);
        return EXIT_OK;
    }
    char id[64], vm[32];
    snprintf(id, sizeof id, "%s", job);
    if (vmid)
        snprintf(vm, sizeof vm, "%s", vmid);
    else
        snprintf(vm, sizeof vm, "%lld", cli_num(ans, "vmid"));
    json_decref(ans);
    int rc = cli_follow_job(c, id);
    if (rc == EXIT_OK && !c->json && strcmp(vm, "0") != 0) {
        char path[64];
        snprintf(path, sizeof path, "/v1/vms/%s", vm);
        json_t *v = NULL;
        if (cli_call(c, "GET", path, NULL, &v) == 200)
            printf("VM %s (%s) is %s on %s\n", vm, cli_str(v, "name"), cli_str(v, "power"),
                   cli_str(v, "node"));
        json_decref(v);
    }
    if (rc == EXIT_OK && c->wait_guest)
        rc = wait_guest(c, id, vm);
    return rc;
}
