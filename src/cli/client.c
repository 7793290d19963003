/* client: proxctl's HTTP side (libcurl easy interface: a CLI makes one
 * request at a time, every call on one handle, so that a command of many
 * calls, vm create --from, keeps one connection alive), error mapping, and
 * the Server-Sent Events reader. */
#include "cli/cli.h"
#include "common/buf.h"
#include "common/xalloc.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ANSWER_MAX (8u << 20)

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
    struct buf *b = ud;
    return buf_add(b, p, size * n) == BUF_OK ? size * n : 0;
}

static struct curl_slist *headers(struct cli *c, bool json_body, bool sse)
{
    struct curl_slist *h = NULL;
    char line[640];
    if (c->token[0]) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", c->token);
        h = curl_slist_append(h, line);
    }
    if (json_body)
        h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, sse ? "Accept: text/event-stream" : "Accept: application/json");
    if (c->idem_key && !sse) {
        snprintf(line, sizeof line, "Idempotency-Key: %.200s", c->idem_key);
        h = curl_slist_append(h, line);
    }
    return h;
}

static long call_once(struct cli *c, const char *method, const char *path, json_t *body,
                      json_t **out);

/* libcurl sends a request again by itself, on a new connection, when the
 * kept-alive one it reused closes without an answer. A write (POST, PATCH,
 * DELETE) may have been served before its answer was lost: sent again, a
 * creation without an idempotency key makes a second VM. So a write goes
 * out once per call (as libpve's client does, pve/http.c): a second
 * sending is refused here, and the call fails as one that may have been
 * sent. */
struct once {
    bool sent;
    bool refused; /* libcurl went to send it again */
};

static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port)
{
    (void)ip, (void)local_ip, (void)port, (void)local_port;
    struct once *o = ud;
    if (o->sent) {
        o->refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    o->sent = true;
    return CURL_PREREQFUNC_OK;
}

/* proxd answers 503 "starting" for the second or so after its start in
 * which it reads the inventory (nothing was done): wait and ask again, up
 * to STARTING_WAIT_MS in all. Any other answer is the caller's. */
#define STARTING_WAIT_MS 15000
long cli_call(struct cli *c, const char *method, const char *path, json_t *body, json_t **out)
{
    long status;
    for (long waited = 0;; waited += 500) {
        status = call_once(c, method, path, body, out);
        json_t *code = json_object_get(json_object_get(*out, "error"), "code");
        if (status != 503 || !json_is_string(code) ||
            strcmp(json_string_value(code), "starting") != 0 || waited >= STARTING_WAIT_MS)
            return status;
        json_decref(*out);
        usleep(500 * 1000);
    }
}

static long call_once(struct cli *c, const char *method, const char *path, json_t *body,
                      json_t **out)
{
    *out = NULL;
    if (c->curl)
        curl_easy_reset(c->curl); /* the options go; the live connection stays */
    else if (!(c->curl = curl_easy_init()))
        return -1;
    CURL *h = c->curl;
    char url[1024];
    snprintf(url, sizeof url, "%s%s", c->server, path);
    struct buf ans = BUF_INIT(ANSWER_MAX);
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hl = headers(c, payload != NULL, false);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ans);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    struct once once = {0};
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
        curl_easy_setopt(h, CURLOPT_PREREQDATA, &once);
    }
    long status = -1;
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK && once.sent) {
        /* whatever failed after the write went out, it may have been served */
        fprintf(stderr,
                "proxctl: %s %s: no answer from %s after the request was sent (%s): it may "
                "have been sent, and was not sent again\n",
                method, path, c->server,
                once.refused ? "the connection closed" : curl_easy_strerror(rc));
    } else if (rc != CURLE_OK) {
        if (!c->hush_net)
            fprintf(stderr, "proxctl: cannot reach %s: %s\n", c->server, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (ans.len)
            *out = json_loadb(ans.data, ans.len, 0, NULL);
    }
    free(payload);
    buf_release(&ans);
    curl_slist_free_all(hl);
    return status;
}

void cli_close(struct cli *c)
{
    if (c->curl)
        curl_easy_cleanup(c->curl);
    c->curl = NULL;
}

int cli_exit_code(long status, json_t *answer)
{
    /* a used-up quota is 403 like a missing right, but the exit status
     * scripts rely on says "conflict or quota" */
    const char *code = json_string_value(json_object_get(json_object_get(answer, "error"), "code"));
    if (status == 403 && code && strcmp(code, "quota_exceeded") == 0)
        return EXIT_CONFLICT;
    switch (status) {
    case 400:
    case 413:
    case 415:
    case 422:
        return EXIT_USAGE;
    case 401:
    case 403:
        return EXIT_AUTH;
    case 404:
        return EXIT_NOTFOUND;
    case 409:
        return EXIT_CONFLICT;
    default:
        return status < 0 || status >= 500 ? EXIT_SERVER : EXIT_FAILED;
    }
}

bool cli_query_add(struct buf *q, const char *key, const char *value)
{
    char *v = curl_easy_escape(NULL, value, 0);
    if (!v)
        abort(); /* allocation failure */
    bool ok = buf_printf(q, "&%s=%s", key, v) == 0;
    curl_free(v);
    if (!ok)
        fprintf(stderr, "proxctl: --%s: too long\n", key);
    return ok;
}

int cli_fail(long status, json_t *answer)
{
    if (status < 0)
        return EXIT_SERVER;
    json_t *e = json_object_get(answer, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *field = json_string_value(json_object_get(json_object_get(e, "details"), "field"));
    fprintf(stderr, "proxctl: %s%s%s (HTTP %ld)\n", field ? field : "", field ? ": " : "",
            msg ? msg : "request failed", status);
    return cli_exit_code(status, answer);
}

int cli_request(struct cli *c, const char *method, const char *path, json_t *body, long want,
                json_t **out)
{
    long st = cli_call(c, method, path, body, out);
    if (st == want)
        return EXIT_OK;
    int rc = cli_fail(st, *out);
    json_decref(*out);
    *out = NULL;
    return rc;
}

int cli_pages(struct cli *c, const char *first, const char *items, const char *cursor_param,
              size_t max, json_t *all)
{
    char cursor[64] = "";
    int rc = EXIT_OK;
    while (json_array_size(all) < max) {
        char path[2400];
        snprintf(path, sizeof path, "%s%s%s%s%s", first, cursor[0] ? "&" : "",
                 cursor[0] ? cursor_param : "", cursor[0] ? "=" : "", cursor);
        json_t *ans = NULL;
        if ((rc = cli_request(c, "GET", path, NULL, 200, &ans)) != EXIT_OK)
            break;
        json_array_extend(all, json_object_get(ans, items));
        json_t *next = json_object_get(ans, "next");
        if (json_is_integer(next))
            snprintf(cursor, sizeof cursor, "%lld", (long long)json_integer_value(next));
        else if (json_is_string(next))
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        else
            cursor[0] = '\0';
        json_decref(ans);
        if (!cursor[0])
            break;
    }
    while (json_array_size(all) > max)
        json_array_remove(all, json_array_size(all) - 1);
    return rc;
}

/* ---- Server-Sent Events -------------------------------------------------- */

struct sse {
    struct buf line; /* the current, incomplete line */
    struct buf data; /* the current event's data */
    void (*fn)(void *, json_t *);
    void *ud;
    int events;
};

static void sse_line(struct sse *s, const char *l)
{
    if (*l == '\0') { /* blank line: dispatch */
        if (s->data.len) {
            json_t *ev = json_loads(buf_str(&s->data), 0, NULL);
            if (ev) {
                s->fn(s->ud, ev);
                json_decref(ev);
                s->events++;
            }
        }
        buf_reset(&s->data);
        return;
    }
    if (strncmp(l, "data:", 5) == 0) {
        const char *v = l + 5;
        if (*v == ' ')
            v++;
        if (s->data.len)
            buf_addc(&s->data, '\n');
        buf_adds(&s->data, v);
    }
}

static size_t sse_sink(char *p, size_t size, size_t n, void *ud)
{
    struct sse *s = ud;
    size_t k = size * n;
    for (size_t i = 0; i < k; i++) {
        if (p[i] == '\n') {
            if (s->line.len && s->line.data[s->line.len - 1] == '\r')
                s->line.data[--s->line.len] = '\0';
            sse_line(s, buf_str(&s->line));
            buf_reset(&s->line);
        } else if (buf_addc(&s->line, p[i]) != BUF_OK) {
            return 0; /* a line over the cap: give up on this stream */
        }
    }
    return k;
}

int cli_sse(struct cli *c, const char *path, void (*fn)(void *ud, json_t *ev), void *ud)
{
    CURL *h = curl_easy_init();
    if (!h)
        return -1;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", c->server, path);
    struct sse s = {BUF_INIT(1 << 20), BUF_INIT(1 << 20), fn, ud, 0};
    struct curl_slist *hl = headers(c, false, true);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    sse_line(&s, ""); /* an event not followed by a blank line */
    buf_release(&s.line);
    buf_release(&s.data);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    return rc == CURLE_OK && status == 200 ? 0 : -1;
}
