/* Tasks: UPIDs, status, logs, lists, and waiting for a task to end. */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_int.h"

#define WAIT_DEFAULT_MS (3600 * 1000L)
#define NOTFOUND_GRACE_MS 5000 /* a proxied task may not be visible at once */
#define TAIL_LINES 10
#define LOG_PAGE 500

/* ---- UPID ------------------------------------------------------------------------ */

static bool all_hex(const char *s, size_t n, size_t min, size_t max)
{
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool node_ok(const char *s, size_t n)
{
    if (!n || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool word_ok(const char *s, size_t n, bool may_be_empty)
{
    if (!n)
        return may_be_empty;
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)s[i]) || s[i] == '/')
            return false;
    return true;
}

static void copy_n(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>: */
int pve_upid_parse(const char *upid, struct pve_task *out)
{
    enum { NODE, PID, PSTART, START, TYPE, ID, USER, NF };
    const char *f[NF];
    size_t len[NF];
    if (!upid || !out || strncmp(upid, "UPID:", 5) != 0 || strlen(upid) >= sizeof out->upid)
        return PVE_E_INVALID;
    const char *p = upid + 5;
    for (int i = 0; i < NF; i++) {
        const char *colon = strchr(p, ':');
        if (!colon)
            return PVE_E_INVALID;
        f[i] = p;
        len[i] = (size_t)(colon - p);
        p = colon + 1;
    }
    if (*p || !node_ok(f[NODE], len[NODE]) || !all_hex(f[PID], len[PID], 8, 8) ||
        !all_hex(f[PSTART], len[PSTART], 8, 9) || !all_hex(f[START], len[START], 8, 8) ||
        !word_ok(f[TYPE], len[TYPE], false) || !word_ok(f[ID], len[ID], true) ||
        !word_ok(f[USER], len[USER], false) || len[NODE] >= sizeof out->node)
        return PVE_E_INVALID;
    memset(out, 0, sizeof *out);
    pve_strlcpy(out->upid, upid, sizeof out->upid);
    copy_n(out->node, sizeof out->node, f[NODE], len[NODE]);
    copy_n(out->type, sizeof out->type, f[TYPE], len[TYPE]);
    copy_n(out->id, sizeof out->id, f[ID], len[ID]);
    copy_n(out->user, sizeof out->user, f[USER], len[USER]);
    out->starttime = strtoll(f[START], NULL, 16);
    return 0;
}

static int parse_or_fail(const char *upid, struct pve_task *t, struct pve_error *err)
{
    if (pve_upid_parse(upid, t) == 0)
        return 0;
    pve_error_set(err, PVE_E_INVALID, "not a UPID: '%.200s'", upid ? upid : "(null)");
    return PVE_E_INVALID;
}

/* ---- status ------------------------------------------------------------------------ */

static void set_exit(struct pve_task *t, const char *status)
{
    pve_strlcpy(t->exitstatus, status, sizeof t->exitstatus);
    t->warnings = str_starts(status, "WARNINGS: ") ? atoi(status + 10) : 0;
}

/* The status read, under a look's guard (NULL: none). */
static int status_read(pve_client *c, const char *upid, const struct pve_guard *g,
                       struct pve_task *out, struct pve_error *err)
{
    struct pve_task t = {0};
    char path[1024];
    json_t *env = NULL;
    int rc = parse_or_fail(upid, &t, err);
    if (rc)
        goto out;
    if (pve_path(path, sizeof path, "/nodes/%s/tasks/%s/status", t.node, upid) != 0) {
        pve_error_set(err, PVE_E_INVALID, "UPID too long");
        rc = PVE_E_INVALID;
        goto out;
    }
    rc = pve_call_guarded(c, "GET", path, NULL, PVE_F_TASKPOLL, g, &env, err);
    if (rc)
        goto out;
    json_t *d = json_object_get(env, "data");
    const char *st = json_string_value(json_object_get(d, "status"));
    const char *ex = json_string_value(json_object_get(d, "exitstatus"));
    t.running = !st || strcmp(st, "running") == 0;
    if (!t.running)
        set_exit(&t, ex ? ex : "unexpected status");
    json_t *et = json_object_get(d, "endtime");
    if (json_is_integer(et))
        t.endtime = json_integer_value(et);
out:
    if (rc && err)
        pve_strlcpy(err->upid, upid ? upid : "", sizeof err->upid);
    if (out)
        *out = t;
    json_decref(env);
    return rc;
}

int pve_task_status(pve_client *c, const char *upid, struct pve_task *out, struct pve_error *err)
{
    return status_read(c, upid, NULL, out, err);
}

int pve_task_stop(pve_client *c, const char *upid, struct pve_error *err)
{
    struct pve_task t = {0};
    char path[1024];
    int rc = parse_or_fail(upid, &t, err);
    if (rc)
        return rc;
    if (pve_path(path, sizeof path, "/nodes/%s/tasks/%s", t.node, upid) != 0) {
        pve_error_set(err, PVE_E_INVALID, "UPID too long");
        return PVE_E_INVALID;
    }
    rc = pve_call(c, "DELETE", path, NULL, NULL, err);
    if (rc && err)
        pve_strlcpy(err->upid, upid, sizeof err->upid);
    return rc;
}

/* ---- log -------------------------------------------------------------------------- */

/* One page of the log; *total from the envelope (0 when absent). */
static int log_page(pve_client *c, const struct pve_task *t, int start, int limit, json_t *lines,
                    int64_t *total, const struct pve_guard *g, struct pve_error *err)
{
    char path[1024];
    if (pve_path(path, sizeof path, "/nodes/%s/tasks/%s/log", t->node, t->upid) != 0) {
        pve_error_set(err, PVE_E_INVALID, "UPID too long");
        return PVE_E_INVALID;
    }
    json_t *params = json_pack("{s:i, s:i}", "start", start, "limit", limit);
    struct buf raw;
    int rc = pve_call_guarded_raw(c, "GET", path, params, PVE_F_TASKPOLL, g, &raw, err);
    json_decref(params);
    if (rc == 0) { /* read as a stream: see api_tasklog.c */
        rc = pve_log_parse(raw.data, raw.len, lines, total, err);
        if (rc && err)
            err->http_status = 200; /* a 2xx answer whose body is no envelope */
    }
    buf_release(&raw);
    return rc;
}

/* PVE's placeholders for an empty log and for a log not (yet) there are
 * not lines of the task's. */
static bool is_placeholder(json_t *lines, int start)
{
    const char *l = json_string_value(json_array_get(lines, 0));
    return start == 0 && json_array_size(lines) == 1 &&
           (strcmp(l, "no content") == 0 || str_starts(l, "unable to open file - "));
}

static int log_read(pve_client *c, const struct pve_task *t, int start, int limit,
                    const struct pve_guard *g, json_t **out, struct pve_error *err)
{
    json_t *lines = json_array();
    int rc = 0;
    for (;;) {
        int want = limit > 0 ? limit - (int)json_array_size(lines) : LOG_PAGE;
        if (limit > 0 && want <= 0)
            break;
        if (want > LOG_PAGE)
            want = LOG_PAGE;
        size_t before = json_array_size(lines);
        rc = log_page(c, t, start + (int)before, want, lines, NULL, g, err);
        if (rc || json_array_size(lines) - before < (size_t)want)
            break;
    }
    if (rc == 0 && is_placeholder(lines, start))
        json_array_clear(lines);
    if (rc)
        json_decref(lines);
    else
        *out = lines;
    return rc;
}

int pve_task_log(pve_client *c, const char *upid, int start, int limit, json_t **lines,
                 struct pve_error *err)
{
    struct pve_task t = {0};
    *lines = NULL;
    if (start < 0 || limit < 0) {
        pve_error_set(err, PVE_E_INVALID, "negative start or limit");
        return PVE_E_INVALID;
    }
    int rc = parse_or_fail(upid, &t, err);
    return rc ? rc : log_read(c, &t, start, limit, NULL, lines, err);
}

/* ---- wait --------------------------------------------------------------------------- */

struct tail {
    char *line[TAIL_LINES];
    size_t n; /* lines seen in total */
};

static void tail_add(struct tail *tl, const char *s)
{
    size_t i = tl->n++ % TAIL_LINES;
    free(tl->line[i]);
    tl->line[i] = xstrdup(s);
}

static void tail_free(struct tail *tl)
{
    for (size_t i = 0; i < TAIL_LINES; i++)
        free(tl->line[i]);
}

/* Feed new log lines to the callback; returns the new read position. */
static int feed_progress(pve_client *c, const struct pve_task *t, int pos, pve_progress_fn fn,
                         void *ud, const struct pve_guard *g, struct tail *tl)
{
    json_t *lines = NULL;
    struct pve_error e;
    if (log_read(c, t, pos, 0, g, &lines, &e) != 0)
        return pos; /* progress is best effort; the status decides */
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        fn(ud, t->upid, json_string_value(l));
        tail_add(tl, json_string_value(l));
    }
    pos += (int)json_array_size(lines);
    json_decref(lines);
    return pos;
}

/* The status line a task's log ends with ("TASK OK", "TASK WARNINGS: n",
 * "TASK ERROR: <message>"): what the status's exitstatus is made from. */
static bool end_line(const char *l, struct pve_task *t)
{
    if (strcmp(l, "TASK OK") == 0)
        set_exit(t, l + 5);
    else if (str_starts(l, "TASK WARNINGS: "))
        set_exit(t, l + 5);
    else if (str_starts(l, "TASK ERROR: "))
        set_exit(t, l + 12);
    else
        return false;
    return true;
}

/* A look through the log (clones): the new lines show the copy's progress
 * and, at the end, the task's exit status; one request where the status
 * and the log would be two. Returns 1 when the lines said something (they
 * moved, or the task ended: t->running tells), 0 when the status must be
 * read instead (no new line: the task may have died silently), -1 when
 * the log could not be read (*e says why; the status may still be). */
static int log_look(pve_client *c, struct pve_task *t, int *pos, const struct pve_wait_opts *o,
                    const struct pve_guard *g, struct tail *tl, struct pve_eta *eta,
                    long elapsed_ms, struct pve_error *e)
{
    json_t *lines = NULL;
    if (log_read(c, t, *pos, 0, g, &lines, e) != 0)
        return -1;
    size_t i, n = json_array_size(lines);
    json_t *l;
    double pct, last = -1;
    json_array_foreach(lines, i, l)
    {
        const char *s = json_string_value(l);
        if (o->progress)
            o->progress(o->ud, t->upid, s);
        tail_add(tl, s);
        if (pve_progress_pct(s, &pct)) {
            if (pct < last) /* the next disk's copy began since the last look */
                pve_eta_note(eta, elapsed_ms, last);
            last = pct;
        }
    }
    if (last >= 0) /* where the copy is now: the last line printed */
        pve_eta_note(eta, elapsed_ms, last);
    *pos += (int)n;
    if (n && end_line(json_string_value(json_array_get(lines, n - 1)), t))
        t->running = false;
    json_decref(lines);
    return n > 0;
}

/* Without a progress callback, fetch only the tail of the log. */
static void fetch_tail(pve_client *c, const struct pve_task *t, const struct pve_guard *g,
                       struct tail *tl)
{
    json_t *lines = json_array();
    int64_t total = 0;
    struct pve_error e;
    if (log_page(c, t, 0, 1, lines, &total, g, &e) == 0 && total > 1) {
        json_array_clear(lines);
        int start = total > TAIL_LINES ? (int)(total - TAIL_LINES) : 0;
        if (log_page(c, t, start, TAIL_LINES, lines, NULL, g, &e) != 0)
            json_array_clear(lines);
    }
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) tail_add(tl, json_string_value(l));
    json_decref(lines);
}

/* The exit text of a failed task with the log's last lines, and its class:
 * PVE::Exception texts start with the HTTP code ("400 Parameter ..."). */
static int task_failed(const struct pve_task *t, struct tail *tl, struct pve_error *err)
{
    const char *ex = t->exitstatus;
    long status = 500;
    if (isdigit((unsigned char)ex[0]) && isdigit((unsigned char)ex[1]) &&
        isdigit((unsigned char)ex[2]) && ex[3] == ' ')
        status = strtol(ex, NULL, 10);
    enum pve_class cls = pve_classify(status, ex);
    if (cls == PVE_OK || cls == PVE_E_AUTH)
        cls = PVE_E_OTHER;
    struct buf b = BUF_INIT(PVE_MSG_MAX - 1);
    buf_adds(&b, ex);
    size_t n = tl->n < TAIL_LINES ? tl->n : TAIL_LINES, shown = 0;
    for (size_t k = 0; k < n; k++) {
        const char *l = tl->line[(tl->n - n + k) % TAIL_LINES];
        if (str_starts(l, "TASK ERROR: ") || str_starts(l, "TASK OK") || strcmp(l, ex) == 0)
            continue; /* repeats the exit status */
        buf_adds(&b, shown++ ? " | " : " (task log: ");
        buf_adds(&b, l);
    }
    if (shown && buf_adds(&b, ")") != BUF_OK && b.len > 5)
        memcpy(b.data + b.len - 5, "...)", 5);
    if (err) {
        pve_error_clear(err);
        err->cls = cls;
        pve_strlcpy(err->message, buf_str(&b), sizeof err->message);
        pve_strlcpy(err->upid, t->upid, sizeof err->upid);
    }
    buf_release(&b);
    return cls;
}

/* Sleep ms, calling the tick at least every tick_ms (with a wake_fd: when
 * it turns readable, and at the end); nonzero: interrupted. */
static int nap(const struct pve_wait_opts *o, long ms)
{
    if (o->wake_fd && o->tick) {
        /* no wake-ups but the look: an idle wait costs nothing */
        struct pollfd p[2] = {{.fd = *o->wake_fd, .events = POLLIN},
                              {.fd = o->look_fd ? *o->look_fd : -1, .events = POLLIN}};
        int64_t end = mono_ms() + ms;
        for (;;) {
            int64_t left = end - mono_ms();
            int n = poll(p, 2, left > 0 ? (int)left : 0);
            if (n > 0 && !(p[0].revents & POLLIN) && (p[1].revents & POLLIN)) {
                uint64_t v; /* an eventfd's count, or a pipe's bytes: emptied */
                if (read(p[1].fd, &v, sizeof v) < 0)
                    v = 0;
                return o->tick(o->ud); /* 0: look now */
            }
            if (n > 0 || left <= 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                return o->tick(o->ud);
        }
    }
    long step = o->tick_ms > 0 ? o->tick_ms : 2000;
    while (ms > 0) {
        long s = ms < step ? ms : step;
        sleep_ms(s);
        ms -= s;
        if (o->tick && o->tick(o->ud))
            return 1;
    }
    return 0;
}

/* Tasks whose log is read instead of their status: qemu-server prints a
 * clone's copy progress there. */
static bool log_kind(const struct pve_task *t)
{
    return strcmp(t->type, "qmclone") == 0;
}

int pve_task_wait_opts(pve_client *c, const char *upid, const struct pve_wait_opts *o,
                       struct pve_task *out, struct pve_error *err)
{
    struct pve_task t = {0};
    struct tail tl = {0};
    struct pve_eta eta = {0};
    int rc = parse_or_fail(upid, &t, err);
    if (rc)
        goto out;
    t.running = true; /* until a look says otherwise */
    /* when the last look went out, and the last that saw the task running:
     * what a wait learns is counted in the looks' send times, which the
     * schedule sets, not their answers' (a round trip added to every
     * observation would push the expectation up by it again and again) */
    int64_t t0 = mono_ms(), last_running = t0, sent = t0;
    int64_t limit = o->deadline_ms > 0 ? o->deadline_ms : WAIT_DEFAULT_MS;
    long expect = pve_task_expect(c, &t), delay = 0;
    bool logged = log_kind(&t);
    int pos = 0;
    /* looks on a node the caller holds down are short (struct pve_guard) */
    struct pve_guard guard = {o->held_down, o->ud};
    const struct pve_guard *g = o->held_down ? &guard : NULL;
    for (;;) {
        /* a task just started has not ended: sleep first, then look */
        int64_t now = mono_ms(), left = limit - (now - t0);
        if (left <= 0) {
            pve_error_set(err, PVE_E_TIMEOUT, "task still running after %lld ms", (long long)limit);
            if (err)
                pve_strlcpy(err->upid, upid, sizeof err->upid);
            rc = PVE_E_TIMEOUT;
            goto out;
        }
        delay = pve_task_next_delay(logged, (long)(now - t0), delay, expect, &eta);
        if (nap(o, delay < left ? delay : (long)left)) {
            pve_error_set(err, PVE_E_TIMEOUT, "interrupted");
            rc = PVE_E_TIMEOUT;
            goto out;
        }
        struct pve_error le = {0};
        sent = mono_ms();
        int lk = logged ? log_look(c, &t, &pos, o, g, &tl, &eta, (long)(sent - t0), &le) : 0;
        if (lk > 0) {
            rc = 0;
        } else if (lk < 0 && le.cls == PVE_E_NETWORK && g && g->fn(g->ud)) {
            /* the node is held down and did not answer the short look:
             * that is the wait's answer, not a second look at its status */
            if (err) {
                *err = le;
                pve_strlcpy(err->upid, upid, sizeof err->upid);
            }
            rc = PVE_E_NETWORK;
            goto out;
        } else {
            rc = status_read(c, upid, g, &t, err);
            if (rc == PVE_E_NOTFOUND && mono_ms() - t0 < NOTFOUND_GRACE_MS)
                t.running = true;
            else if (rc)
                goto out;
            if (o->progress && !logged)
                pos = feed_progress(c, &t, pos, o->progress, o->ud, g, &tl);
        }
        if (!t.running)
            break;
        last_running = sent;
    }
    if (strcmp(t.exitstatus, "OK") == 0 || str_starts(t.exitstatus, "WARNINGS: ")) {
        bool overdue;
        long ms = pve_task_learned((long)(last_running - t0), (long)(sent - t0), expect, &overdue);
        pve_task_observed(c, &t, ms, overdue);
        pve_error_clear(err);
        rc = 0;
        goto out;
    }
    if (!o->progress && !logged)
        fetch_tail(c, &t, g, &tl);
    rc = task_failed(&t, &tl, err);
out:
    if (out)
        *out = t;
    tail_free(&tl);
    return rc;
}

int pve_task_wait(pve_client *c, const char *upid, long deadline_ms, pve_progress_fn progress,
                  void *ud, struct pve_task *out, struct pve_error *err)
{
    struct pve_wait_opts o = {.deadline_ms = deadline_ms, .progress = progress, .ud = ud};
    return pve_task_wait_opts(c, upid, &o, out, err);
}

/* ---- list ------------------------------------------------------------------------------ */

static void copy_field(char *dst, size_t cap, json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    pve_strlcpy(dst, s ? s : "", cap);
}

static void task_from_item(json_t *e, struct pve_task *t)
{
    memset(t, 0, sizeof *t);
    copy_field(t->upid, sizeof t->upid, e, "upid");
    copy_field(t->node, sizeof t->node, e, "node");
    copy_field(t->type, sizeof t->type, e, "type");
    copy_field(t->id, sizeof t->id, e, "id");
    copy_field(t->user, sizeof t->user, e, "user");
    t->starttime = json_integer_value(json_object_get(e, "starttime"));
    t->endtime = json_integer_value(json_object_get(e, "endtime"));
    const char *st = json_string_value(json_object_get(e, "status"));
    t->running = !st || strcmp(st, "RUNNING") == 0 || !t->endtime;
    if (!t->running)
        set_exit(t, st);
}

int pve_task_list(pve_client *c, const char *node, int vmid, const char *typefilter, int limit,
                  struct pve_task **out, size_t *n, struct pve_error *err)
{
    char path[256];
    json_t *params = json_object(), *data = NULL;
    *out = NULL;
    *n = 0;
    int rc = 0;
    if (!node || pve_path(path, sizeof path, "/nodes/%s/tasks", node) != 0) {
        pve_error_set(err, PVE_E_INVALID, "bad node name");
        rc = PVE_E_INVALID;
        goto out;
    }
    if (vmid > 0)
        json_object_set_new(params, "vmid", json_integer(vmid));
    if (typefilter && typefilter[0])
        json_object_set_new(params, "typefilter", json_string(typefilter));
    if (limit > 0)
        json_object_set_new(params, "limit", json_integer(limit));
    rc = pve_call(c, "GET", path, params, &data, err);
    if (rc)
        goto out;
    size_t cnt = json_array_size(data);
    *out = xcalloc(cnt ? cnt : 1, sizeof **out);
    for (size_t i = 0; i < cnt; i++)
        task_from_item(json_array_get(data, i), &(*out)[i]);
    *n = cnt;
out:
    json_decref(params);
    json_decref(data);
    return rc;
}
