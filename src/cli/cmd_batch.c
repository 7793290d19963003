/* cmd_batch: proxctl vm create --from FILE|- (proxctl(1)).
 *
 * FILE is JSON Lines: one creation request per line, the body POST /v1/vms
 * takes, plus an optional "idempotency_key" sent as the Idempotency-Key
 * header; blank lines are skipped. Every call goes over one kept-alive
 * connection (client.c).
 *
 * First every line is read and sent with ?dry_run=true: proxd checks it as
 * a submission would and records nothing. Any bad line (not JSON, a field
 * missing or refused, a key used before for another request, by proxd or
 * by an earlier line of the file) is reported
 * with its number and field, and then nothing is submitted (exit 2; 4 when
 * refused for the caller's rights, 6 for such a key). Then each line is
 * submitted as its own creation: a refusal then (quota, no VMID or address
 * left) is reported for its line and the others go on. A network or server error stops the run:
 * the lines from there on are reported as not submitted (the one in flight
 * may have been: its idempotency key makes the run safe to repeat). */
#include "cli/cli.h"
#include "common/jsonl.h"
#include "common/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct line {
    long no;
    json_t *body; /* NULL: the line was refused before proxd saw it (error) */
    char *key;    /* NULL: none */
    char *error;
};

struct batch {
    struct cli *c;
    struct line *l;
    size_t n, cap;
    int bad;        /* lines refused before anything was submitted */
    int rc;         /* the worst exit code of a refused line */
    json_t *caller; /* the owner proxd gives a line without one; NULL: not asked yet */
    bool no_caller; /* it was asked and could not be had */
};

static void say_error(struct batch *b, long no, const char *field, const char *msg, long status)
{
    if (b->c->json) {
        json_t *o = json_pack("{s:I,s:{s:s,s:s}}", "line", (json_int_t)no, "error", "field",
                              field ? field : "", "message", msg);
        if (status > 0)
            json_object_set_new(json_object_get(o, "error"), "status", json_integer(status));
        char *t = json_dumps(o, JSON_COMPACT);
        printf("%s\n", t);
        free(t);
        json_decref(o);
        return;
    }
    fprintf(stderr, "proxctl: line %ld: %s%s%s", no, field && *field ? field : "",
            field && *field ? ": " : "", msg);
    if (status > 0)
        fprintf(stderr, " (HTTP %ld)", status);
    fprintf(stderr, "\n");
}

/* The API's error of an answer, reported for line no; its exit code. */
static int say_answer(struct batch *b, long no, long status, json_t *ans)
{
    json_t *e = json_object_get(ans, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *field = json_string_value(json_object_get(json_object_get(e, "details"), "field"));
    size_t fl = field ? strlen(field) : 0;
    if (msg && fl && strncmp(msg, field, fl) == 0 && strncmp(msg + fl, ": ", 2) == 0)
        msg += fl + 2; /* "name: must be ..." names the field already */
    if (field && strcmp(field, "Idempotency-Key") == 0)
        field = "idempotency_key"; /* the header, from the line's member */
    say_error(b, no, field, msg ? msg : "request failed", status);
    return cli_exit_code(status, ans);
}

static void add(struct batch *b, long no, json_t *body, char *key, const char *error)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->l = xrealloc(b->l, b->cap * sizeof *b->l);
    }
    b->l[b->n++] = (struct line){no, body, key, error ? xstrdup(error) : NULL};
}

static void add_line(struct batch *b, long no, const char *text, size_t len)
{
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    char m[300];
    if (!o || !json_is_object(o)) {
        if (o)
            snprintf(m, sizeof m, "must be a JSON object (one creation request per line)");
        else
            snprintf(m, sizeof m, "not JSON: %.200s (column %d)", je.text, je.column);
        json_decref(o);
        add(b, no, NULL, NULL, m);
        return;
    }
    json_t *k = json_object_get(o, "idempotency_key");
    char *key = NULL;
    if (k && !json_is_null(k)) {
        const char *s = json_string_value(k);
        if (!s) {
            json_decref(o);
            add(b, no, NULL, NULL, "idempotency_key: must be a string");
            return;
        }
        key = xstrdup(s);
    }
    json_object_del(o, "idempotency_key");
    add(b, no, o, key, NULL);
}

static void on_line(void *ud, long no, const char *text, size_t len)
{
    struct batch *b = ud;
    if (text)
        add_line(b, no, text, len);
    else
        add(b, no, NULL, NULL, "longer than 65536 bytes");
}

static int read_lines(struct batch *b, FILE *in)
{
    long no = 0;
    int rc = jsonl_each(in, on_line, b, &no);
    if (rc == JSONL_E_TOO_MANY)
        say_error(b, no, "", "too many lines: at most 100000 requests in one batch", 0);
    else if (rc == JSONL_E_READ)
        say_error(b, no + 1, "", "read error", 0);
    return rc ? -1 : 0;
}

/* The owner proxd fills in for a line without one (or with null or ""):
 * the caller's, which GET /v1/quota names. Asked once, when a comparison
 * needs it; NULL when it could not be had. */
static json_t *caller_owner(struct batch *b)
{
    if (b->caller || b->no_caller)
        return b->caller;
    json_t *ans = NULL;
    bool hush = b->c->hush_net;
    b->c->hush_net = true; /* the dry runs that follow say it when proxd cannot be reached */
    long st = cli_call(b->c, "GET", "/v1/quota", NULL, &ans);
    b->c->hush_net = hush;
    json_t *o = json_object_get(ans, "owner");
    if (st == 200 && json_string_length(o) > 0)
        b->caller = json_incref(o);
    else
        b->no_caller = true;
    json_decref(ans);
    return b->caller;
}

/* A copy of a line's request with the owner proxd would record in it
 * (absent, null or "": the caller's, when known). */
static json_t *as_proxd_sees(struct batch *b, json_t *body)
{
    json_t *o = json_object_get(body, "owner"), *copy = json_copy(body);
    if (!o || json_is_null(o) || (json_is_string(o) && json_string_length(o) == 0)) {
        json_t *me = caller_owner(b);
        if (me)
            json_object_set(copy, "owner", me);
        else
            json_object_del(copy, "owner");
    }
    return copy;
}

/* Whether two lines are one request as proxd tells (its fingerprint: the
 * members and values, with the owner filled in): one line without an owner
 * and one naming the caller are the same, and proxd replays the second. */
static bool same_request(struct batch *b, json_t *x, json_t *y)
{
    if (json_equal(x, y))
        return true;
    json_t *ox = json_object_get(x, "owner"), *oy = json_object_get(y, "owner");
    if ((!ox && !oy) || json_equal(ox, oy)) /* the owner is not the difference */
        return false;
    json_t *sx = as_proxd_sees(b, x), *sy = as_proxd_sees(b, y);
    bool same = json_equal(sx, sy);
    json_decref(sx);
    json_decref(sy);
    return same;
}

/* Line i's idempotency key on an earlier line of the file with another
 * request: reported, true. proxd's dry run asks only what it has stored, so
 * both lines would pass it and the second be refused at submission, after
 * the first was queued. The same request is as proxd's test says
 * (same_request). keys: idempotency key -> the index of its first line. */
static bool key_clash(struct batch *b, json_t *keys, size_t i)
{
    json_t *first = json_object_get(keys, b->l[i].key);
    if (!first) {
        json_object_set_new(keys, b->l[i].key, json_integer((json_int_t)i));
        return false;
    }
    const struct line *f = &b->l[json_integer_value(first)];
    if (same_request(b, f->body, b->l[i].body))
        return false; /* submitted once, then replayed */
    char m[200];
    snprintf(m, sizeof m, "this key is used on line %ld for a different request", f->no);
    say_error(b, b->l[i].no, "idempotency_key", m, 0);
    return true;
}

/* Every line checked by proxd, nothing recorded. -1: the server could not
 * be asked (reported), stop. */
static int check_all(struct batch *b)
{
    json_t *keys = json_object();
    int rc = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->l[i].error) {
            const char *e = b->l[i].error, *colon = strstr(e, ": ");
            char field[32] = "";
            if (strncmp(e, "idempotency_key: ", 17) == 0) {
                snprintf(field, sizeof field, "idempotency_key");
                e = colon + 2;
            }
            say_error(b, b->l[i].no, field, e, 0);
            b->bad++;
            continue;
        }
        if (b->l[i].key && key_clash(b, keys, i)) {
            b->bad++;
            if (EXIT_CONFLICT > b->rc)
                b->rc = EXIT_CONFLICT;
            continue;
        }
        json_t *ans = NULL;
        b->c->idem_key = b->l[i].key;
        long st = cli_call(b->c, "POST", "/v1/vms?dry_run=true", b->l[i].body, &ans);
        b->c->idem_key = NULL;
        if (st == 200) {
            json_decref(ans);
            continue;
        }
        int erc = st < 0 ? EXIT_SERVER : say_answer(b, b->l[i].no, st, ans);
        json_decref(ans);
        if (erc == EXIT_SERVER || st == 401) {
            if (st < 0)
                say_error(b, b->l[i].no, "", "cannot reach proxd: nothing submitted", 0);
            b->rc = erc;
            rc = -1;
            goto out;
        }
        b->bad++;
        if (erc > b->rc)
            b->rc = erc;
    }
out:
    json_decref(keys);
    return rc;
}

static void say_queued(struct batch *b, long no, json_t *ans)
{
    const char *job = json_string_value(json_object_get(ans, "job"));
    long long vmid = cli_num(ans, "vmid");
    /* a key used before for this same request: its first answer again */
    bool replayed = json_is_true(json_object_get(ans, "replayed"));
    if (b->c->json)
        printf("{\"line\":%ld,\"job\":\"%s\",\"vmid\":%lld%s}\n", no, job ? job : "", vmid,
               replayed ? ",\"replayed\":true" : "");
    else
        printf("line %ld: job %s vmid %lld %s\n", no, job ? job : "?", vmid,
               replayed ? "(queued before with this idempotency key)" : "queued");
}

static void submit_all(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        json_t *ans = NULL;
        b->c->idem_key = b->l[i].key;
        long st = cli_call(b->c, "POST", "/v1/vms", b->l[i].body, &ans);
        b->c->idem_key = NULL;
        if (st == 202) {
            say_queued(b, b->l[i].no, ans);
            json_decref(ans);
            continue;
        }
        int rc = st < 0 ? EXIT_SERVER : say_answer(b, b->l[i].no, st, ans);
        json_decref(ans);
        if (rc > b->rc || (rc == EXIT_SERVER))
            b->rc = rc;
        if (st < 0 || (st >= 500 && st != 503)) {
            say_error(b, b->l[i].no, "",
                      "the server did not answer: this line may have been submitted; the lines "
                      "after it were not",
                      0);
            return;
        }
    }
}

int cmd_create_from(struct cli *c, const char *path)
{
    bool std_in = strcmp(path, "-") == 0;
    FILE *in = std_in ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "proxctl: --from: cannot open '%s'\n", path);
        return EXIT_USAGE;
    }
    struct batch b = {.c = c};
    /* the lines that parsed are checked by proxd even when others did not:
     * every bad line is reported in one run */
    if (read_lines(&b, in) || check_all(&b) || b.bad) {
        if (b.rc != EXIT_SERVER)
            fprintf(stderr, "proxctl: %d bad line%s: nothing submitted\n", b.bad ? b.bad : 1,
                    b.bad == 1 ? "" : "s");
        if (!b.rc)
            b.rc = EXIT_USAGE;
        goto out;
    }
    submit_all(&b);
out:
    fflush(stdout);
    for (size_t i = 0; i < b.n; i++) {
        json_decref(b.l[i].body);
        free(b.l[i].key);
        free(b.l[i].error);
    }
    free(b.l);
    json_decref(b.caller);
    if (!std_in)
        fclose(in);
    return b.rc;
}
