/* ctl: the /_sim/ control API (documented in the README): node states, fault
 * rules, VM tweaks (HA, ACPI, moves behind the back of clients), the whole
 * state, call counters, reset. JSON in, JSON out, no authentication: it is a
 * test tool's back door and listens where pvesim listens. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/guestnet.h"
#include "sim/perm.h"
#include "sim/sim.h"

#include <errno.h>
#include <fcntl.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void reply(struct http_resp *r, int status, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT);
    http_resp_status(r, status, NULL);
    buf_adds(&r->body, s);
    buf_addc(&r->body, '\n');
    free(s);
    r->content_type = xstrdup("application/json");
    json_decref(body);
}

static void bad(struct http_resp *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad(struct http_resp *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = xvasprintf(fmt, ap);
    va_end(ap);
    reply(r, status, json_pack("{s:s}", "error", m));
    free(m);
}

static json_t *body_json(const struct http_req *req, struct http_resp *r)
{
    if (req->body_len == 0)
        return json_object();
    json_error_t je;
    json_t *o = json_loadb(req->body, req->body_len, 0, &je);
    if (!json_is_object(o)) {
        bad(r, 400, "body must be a JSON object: %s", o ? "not an object" : je.text);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Two requests that change a node's state one after the other may apply
 * them in the other order (each applies after its unlock): switches take
 * turns under apply_mu and each reads the state as it is then, so the last
 * switch applies the last state. */
void sim_node_apply(struct sim *s, struct sim_node *n)
{
    if (n->listener < 0)
        return;
    pthread_mutex_lock(&s->apply_mu);
    pthread_mutex_lock(&s->mu);
    enum httpd_mode m = n->state == NODE_ONLINE    ? HTTPD_UP
                        : n->state == NODE_OFFLINE ? HTTPD_REFUSE
                                                   : HTTPD_BLACKHOLE;
    pthread_mutex_unlock(&s->mu);
    if (httpd_set_mode(s->http, n->listener, m) != 0)
        log_error("sim", "node %s: cannot switch its listener", n->name);
    pthread_mutex_unlock(&s->apply_mu);
}

static int parse_state(const char *st, enum node_state *out)
{
    if (!st)
        return -1;
    if (strcmp(st, "online") == 0)
        *out = NODE_ONLINE;
    else if (strcmp(st, "offline") == 0)
        *out = NODE_OFFLINE;
    else if (strcmp(st, "blackhole") == 0)
        *out = NODE_BLACKHOLE;
    else
        return -1;
    return 0;
}

static void node_set(struct sim *s, const char *name, const struct http_req *req,
                     struct http_resp *r)
{
    json_t *b = body_json(req, r);
    if (!b)
        return;
    json_t *off = json_object_get(b, "clock_offset_s");
    if (off && (!json_is_integer(off) || llabs(json_integer_value(off)) > 10LL * 366 * 86400)) {
        bad(r, 400, "clock_offset_s: an integer number of seconds, at most ten years either way");
        goto out;
    }
    pthread_mutex_lock(&s->mu);
    struct sim_node *n = sim_node_find(s, name);
    enum node_state st = NODE_ONLINE;
    const char *sv = json_string_value(json_object_get(b, "state"));
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        bad(r, 404, "no such node '%s'", name);
        goto out;
    }
    if (json_object_get(b, "state") && parse_state(sv, &st)) {
        pthread_mutex_unlock(&s->mu);
        bad(r, 400, "state: must be online, offline or blackhole");
        goto out;
    }
    bool changed = json_object_get(b, "state") && n->state != st;
    if (changed) {
        if (st == NODE_ONLINE)
            n->boot = sim_now(s);
        n->state = st;
    }
    json_t *v;
    if ((v = json_object_get(b, "memory_gb")) && json_number_value(v) > 0)
        n->mem_total = (int64_t)(json_number_value(v) * 1073741824.0);
    if ((v = json_object_get(b, "bandwidth_mb")) && json_number_value(v) > 0)
        n->bandwidth = json_number_value(v) * 1048576.0;
    if (off)
        n->clock_offset = json_integer_value(off);
    json_t *sts = json_object_get(b, "storage_gb"); /* {"local-lvm": 100} */
    const char *k;
    json_object_foreach(sts, k, v)
    {
        struct sim_storage *ss = sim_storage_find(n, k);
        if (ss && json_number_value(v) >= 0)
            ss->total = (int64_t)(json_number_value(v) * 1073741824.0);
    }
    s->dirty = true;
    sim_world_touch(s);
    log_info("sim", "node %s is %s", n->name, sv ? sv : "unchanged");
    pthread_mutex_unlock(&s->mu);
    if (changed)
        sim_node_apply(s, n); /* outside the lock: it may wait for connections */
    reply(r, 200,
          json_pack("{s:s,s:s}", "node", name, "state",
                    st == NODE_ONLINE    ? "online"
                    : st == NODE_OFFLINE ? "offline"
                                         : "blackhole"));
out:
    json_decref(b);
}

static bool kind_ok(const char *k)
{
    static const char *const kinds[] = {"lock_timeout", "error", "595",        "596",
                                        "served_596",   "delay", "task_error", "hang",
                                        "drop",         "late",  "late_hang",  NULL};
    for (int i = 0; kinds[i]; i++)
        if (strcmp(kinds[i], k) == 0)
            return true;
    return false;
}

static json_t *fault_json(struct sim_fault *f)
{
    return json_pack("{s:i,s:s,s:s?,s:s,s:s,s:i,s:s?,s:I,s:f,s:i,s:i,s:b}", "id", f->id, "method",
                     f->method, "path", f->pattern, "node", f->node, "kind", f->kind, "status",
                     f->status, "message", f->message, "delay_ms", (json_int_t)f->delay_ms, "rate",
                     f->rate, "count", f->remaining, "hits", f->hits, "cleanup_fails",
                     f->cleanup_fails);
}

static void fault_free(struct sim_fault *f)
{
    pcre2_code_free(f->re);
    free(f->pattern);
    free(f->message);
    free(f);
}

static void fault_add(struct sim *s, const struct http_req *req, struct http_resp *r)
{
    json_t *b = body_json(req, r);
    if (!b)
        return;
    const char *kind = json_string_value(json_object_get(b, "kind"));
    const char *method = json_string_value(json_object_get(b, "method"));
    const char *path = json_string_value(json_object_get(b, "path"));
    const char *node = json_string_value(json_object_get(b, "node"));
    const char *msg = json_string_value(json_object_get(b, "message"));
    json_t *rate = json_object_get(b, "rate"), *count = json_object_get(b, "count");
    struct sim_fault *f = NULL;
    if (!kind || !kind_ok(kind)) {
        bad(r, 400,
            "kind: one of lock_timeout, error, 595, 596, served_596, delay, task_error, hang, "
            "drop, late, late_hang");
        goto out;
    }
    json_t *jm = json_object_get(b, "method");
    if (jm && (!method || (strcmp(method, "GET") && strcmp(method, "POST") &&
                           strcmp(method, "PUT") && strcmp(method, "DELETE")))) {
        bad(r, 400, "method: GET, POST, PUT or DELETE");
        goto out;
    }
    if (json_object_get(b, "node") && !node) {
        bad(r, 400, "node: a string");
        goto out;
    }
    if (node && strlen(node) >= sizeof f->node) {
        bad(r, 400, "node: name too long");
        goto out;
    }
    if (json_object_get(b, "path") && !path) {
        bad(r, 400, "path: a string (PCRE)");
        goto out;
    }
    if (json_object_get(b, "message") && !msg) {
        bad(r, 400, "message: a string");
        goto out;
    }
    json_t *st = json_object_get(b, "status"), *dl = json_object_get(b, "delay_ms");
    if (st &&
        (!json_is_integer(st) || json_integer_value(st) < 100 || json_integer_value(st) > 599)) {
        bad(r, 400, "status: an integer from 100 to 599");
        goto out;
    }
    if (dl && (!json_is_integer(dl) || json_integer_value(dl) < 0)) {
        bad(r, 400, "delay_ms: a non-negative integer");
        goto out;
    }
    if (rate &&
        (!json_is_number(rate) || json_number_value(rate) < 0 || json_number_value(rate) > 1)) {
        bad(r, 400, "rate: a number from 0 to 1");
        goto out;
    }
    if (count && (!json_is_integer(count) || json_integer_value(count) < -1)) {
        bad(r, 400, "count: an integer, -1 for unlimited");
        goto out;
    }
    json_t *cf = json_object_get(b, "cleanup_fails");
    if (cf && (!json_is_boolean(cf) || strcmp(kind, "task_error") != 0)) {
        bad(r, 400, "cleanup_fails: true or false, for a task_error rule");
        goto out;
    }
    f = xcalloc(1, sizeof *f);
    if (path) {
        int ec;
        PCRE2_SIZE off;
        f->re = pcre2_compile((PCRE2_SPTR)path, PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
        if (!f->re) {
            PCRE2_UCHAR m[256];
            pcre2_get_error_message(ec, m, sizeof m);
            bad(r, 400, "path: bad regular expression at %zu: %s", (size_t)off, (char *)m);
            fault_free(f);
            goto out;
        }
        f->pattern = xstrdup(path);
    }
    snprintf(f->kind, sizeof f->kind, "%s", kind);
    snprintf(f->method, sizeof f->method, "%s", method ? method : "");
    snprintf(f->node, sizeof f->node, "%s", node ? node : "");
    f->message = msg ? xstrdup(msg) : NULL;
    f->status = (int)json_integer_value(json_object_get(b, "status"));
    f->delay_ms = (long)json_integer_value(dl);
    if (!dl && (strcmp(kind, "late") == 0 || strcmp(kind, "late_hang") == 0))
        f->delay_ms = SIM_LATE_DELAY_MS;
    f->rate = rate ? json_number_value(rate) : 1.0;
    f->remaining = count ? (int)json_integer_value(count) : -1;
    f->cleanup_fails = json_is_true(json_object_get(b, "cleanup_fails"));
    pthread_mutex_lock(&s->mu);
    f->id = ++s->fault_next;
    /* append: rules are tried in the order they were added */
    struct sim_fault **pp = &s->faults;
    while (*pp)
        pp = &(*pp)->next;
    *pp = f;
    json_t *out = fault_json(f);
    pthread_mutex_unlock(&s->mu);
    reply(r, 201, out);
out:
    json_decref(b);
}

static void faults_clear(struct sim *s, int id)
{
    for (struct sim_fault **pp = &s->faults; *pp;) {
        struct sim_fault *f = *pp;
        if (id == 0 || f->id == id) {
            *pp = f->next;
            fault_free(f);
            continue;
        }
        pp = &f->next;
    }
}

/* A drive rewritten behind PVE's back without its size= (an edited config
 * file): the volume on its storage keeps its size, which the storage's
 * content listing and a volume_size_info then tell. */
static void keep_volume_size(struct sim *s, const char *old, const char *new)
{
    size_t vl = old ? strcspn(old, ",") : 0;
    char vol[160];
    if (!old || !new || vl >= sizeof vol || strstr(new, "size=") || sim_disk_size(old) <= 0 ||
        strcspn(new, ",") != vl || strncmp(old, new, vl) != 0)
        return;
    snprintf(vol, sizeof vol, "%.*s", (int)vl, old);
    if (!s->vol_sizes)
        s->vol_sizes = json_object();
    json_object_set_new(s->vol_sizes, vol, json_integer(sim_disk_size(old)));
}

static void vm_set(struct sim *s, int vmid, const struct http_req *req, struct http_resp *r)
{
    json_t *b = body_json(req, r);
    if (!b)
        return;
    pthread_mutex_lock(&s->mu);
    struct sim_vm *vm = NULL;
    const char *on = json_string_value(json_object_get(b, "at"));
    vm = sim_vm_find(s, on ? sim_node_find(s, on) : NULL, vmid);
    const char *to = json_string_value(json_object_get(b, "node"));
    const char *power = json_string_value(json_object_get(b, "power"));
    struct sim_node *dst = to ? sim_node_find(s, to) : NULL;
    if (!vm) {
        bad(r, 404, "no VM %d", vmid);
    } else if (to && !dst) {
        bad(r, 400, "node: no such node '%s'", to);
    } else if (power && strcmp(power, "running") && strcmp(power, "stopped") &&
               strcmp(power, "paused")) {
        bad(r, 400, "power: running, stopped or paused");
    } else {
        json_t *v;
        if ((v = json_object_get(b, "ha"))) {
            bool frozen = vm->ha && strcmp(vm->ha_state, "freeze") == 0;
            vm->ha = json_is_true(v);
            const char *hs = json_string_value(json_object_get(b, "ha_state"));
            snprintf(vm->ha_state, sizeof vm->ha_state, "%s", vm->ha ? (hs ? hs : "started") : "");
            /* a freeze lifted: the CRM acts on the request it kept */
            if (frozen && vm->ha && vm->ha_request[0] && strcmp(vm->ha_state, "freeze") != 0)
                sim_ha_resume(s, vm);
            if (!vm->ha || strcmp(vm->ha_state, "freeze") != 0)
                vm->ha_request[0] = '\0';
        }
        if ((v = json_object_get(b, "acpi")))
            vm->acpi = json_is_true(v);
        if (dst) { /* a migration behind the clients' back (HA, an operator) */
            vm->node = dst;
            sim_history_moved(s, vm);
        }
        if (power) {
            sim_vm_set_power(s, vm,
                             strcmp(power, "running") == 0  ? VM_RUNNING
                             : strcmp(power, "paused") == 0 ? VM_PAUSED
                                                            : VM_STOPPED);
            vm->started = sim_now(s);
        }
        json_t *conf = json_object_get(b, "conf");
        if (json_is_object(conf)) {
            guestnet_keep(vm); /* a change behind PVE's back reaches the guest at its next boot */
            const char *ck;
            json_t *cv;
            json_object_foreach(conf, ck, cv)
            {
                keep_volume_size(s, json_string_value(json_object_get(vm->conf, ck)),
                                 json_string_value(cv));
                if (json_is_null(cv)) /* null removes the key */
                    json_object_del(vm->conf, ck);
                else
                    json_object_set(vm->conf, ck, cv);
            }
        }
        s->dirty = true;
        sim_world_touch(s); /* its config, node or power changed: derived values are stale */
        sim_history_sizes(s, vm);
        reply(r, 200, json_pack("{s:i,s:s}", "vmid", vmid, "node", vm->node->name));
    }
    pthread_mutex_unlock(&s->mu);
    json_decref(b);
}

/* Access control back to what the flags made at start: the ACL and roles
 * the API changed are gone, as the VMs it made are (and no longer in the
 * state file, so that a restart starts from the flags too). */
static void reset_perm(struct sim *s)
{
    char *err = NULL;
    struct sim_perm *p = sim_perm_setup(s, &err);
    if (!p) { /* the same flags passed at start: not expected */
        log_error("sim", "reset: %s", err);
        free(err);
        return;
    }
    perm_free(s->perm);
    s->perm = p;
}

static void reset(struct sim *s, struct http_resp *r)
{
    pthread_mutex_lock(&s->mu);
    while (s->vms)
        sim_vm_unlink(s, s->vms);
    sim_cts_free(s);
    sim_rrd_clear(s); /* the new fleet is reported at the next advance */
    s->pools = json_object();
    sim_tasks_clear(s);
    sim_late_cancel(s); /* a late call would land in the new fleet */
    faults_clear(s, 0);
    json_object_clear(s->calls);
    json_object_clear(s->node_calls);
    int n = s->nnodes;
    struct sim_node saved[SIM_MAX_NODES];
    memcpy(saved, s->nodes, sizeof saved);
    s->nnodes = 0;
    char *err = NULL;
    if (sim_build_fleet(s, &err)) {
        log_error("sim", "reset: %s", err);
        free(err);
    }
    reset_perm(s);
    for (int i = 0; i < n && i < s->nnodes; i++) {
        s->nodes[i].listener = saved[i].listener;
        s->nodes[i].port = saved[i].port;
        s->nodes[i].boot = sim_now(s) - 86400;
    }
    s->dirty = true;
    sim_world_touch(s);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nnodes; i++)
        sim_node_apply(s, &s->nodes[i]);
    reply(r, 200, json_pack("{s:b}", "reset", 1));
}

/* The state (sim_state_write) in an unlinked temporary file ($TMPDIR or
 * /tmp), written record by record under the lock in pieces of 1 MiB: the
 * answer is then sent from the file with its length known, without the
 * lock, and pvesim never holds more than a piece of it (54 MB at 100,000
 * VMs). The descriptor, or -1 with errno. */
static int state_file(struct sim *s)
{
    const char *dir = getenv("TMPDIR");
    char *path = xasprintf("%s/pvesim-state-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path), e = 0;
    if (fd >= 0) {
        unlink(path);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    free(path);
    int wfd = fd >= 0 ? dup(fd) : -1;
    FILE *f = wfd >= 0 ? fdopen(wfd, "w") : NULL;
    if (!f) {
        e = errno;
        if (wfd >= 0)
            close(wfd);
        goto fail;
    }
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    pthread_mutex_lock(&s->mu);
    sim_advance(s);
    sim_state_write(s, &b, f);
    pthread_mutex_unlock(&s->mu);
    buf_release(&b);
    errno = 0;
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0)
        failed = true;
    if (!failed)
        return fd;
    e = errno;
fail:
    if (fd >= 0)
        close(fd);
    errno = e ? e : EIO;
    return -1;
}

/* GET /_sim/tasks[?wait_ms=N]: how many tasks run now, and their types.
 * With wait_ms, the answer waits until one runs (at once if one does) or
 * N ms have passed: a test aims a kill at a running task this way, where a
 * task of a fast time scale ends before a poll of /_sim/state is read. */
static void tasks_get(struct sim *s, const struct http_req *req, struct http_resp *r)
{
    int64_t wait = 0;
    const char *q = req->query;
    if (q && q[0] &&
        (!str_starts(q, "wait_ms=") || !parse_i64(q + 8, &wait) || wait < 0 || wait > 60000)) {
        bad(r, 400, "wait_ms: an integer from 0 to 60000");
        return;
    }
    struct timespec until = deadline_in_ms(wait);
    pthread_mutex_lock(&s->mu);
    sim_advance(s);
    uint64_t seen = s->ntasks_started;
    while (wait > 0 && s->ntasks_running == 0 && s->ntasks_started == seen &&
           pthread_cond_timedwait(&s->started_cv, &s->mu, &until) != ETIMEDOUT)
        ;
    json_t *types = json_array();
    for (struct sim_task *t = s->tasks; t && (int)json_array_size(types) < s->ntasks_running;
         t = t->next)
        if (t->running)
            json_array_append_new(types, json_string(t->type));
    json_t *o = json_pack("{s:i,s:I,s:o}", "running", s->ntasks_running, "started",
                          (json_int_t)s->ntasks_started, "types", types);
    pthread_mutex_unlock(&s->mu);
    reply(r, 200, o);
}

void sim_ctl_handle(struct sim *s, const struct http_req *req, struct http_resp *r)
{
    const char *p = req->path + 5; /* after "/_sim" */
    const char *m = req->method;
    bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0, del = strcmp(m, "DELETE") == 0;
    if (get && strcmp(p, "/state") == 0) {
        int fd = state_file(s);
        if (fd < 0) {
            bad(r, 500, "cannot write the state aside: %s", strerror(errno));
            return;
        }
        http_resp_status(r, 200, NULL);
        r->content_type = xstrdup("application/json");
        r->body_fd = fd;
    } else if (get && strcmp(p, "/calls") == 0) {
        uint64_t at_limit, idle;
        httpd_tls_closes(s->http, &at_limit, &idle);
        pthread_mutex_lock(&s->mu);
        json_t *c = json_pack(
            "{s:O,s:O,s:I,s:I,s:I,s:I,s:i}", "calls", s->calls, "nodes", s->node_calls,
            "tls_handshakes", (json_int_t)httpd_tls_handshakes(s->http), "tls_resumed",
            (json_int_t)httpd_tls_resumed(s->http), "tls_closed_at_limit", (json_int_t)at_limit,
            "tls_closed_idle", (json_int_t)idle, "late_pending", sim_late_pending(s));
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, c);
    } else if (del && strcmp(p, "/calls") == 0) {
        pthread_mutex_lock(&s->mu);
        json_object_clear(s->calls);
        json_object_clear(s->node_calls);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, json_object());
    } else if (get && strcmp(p, "/tasks") == 0) {
        tasks_get(s, req, r);
    } else if (get && strcmp(p, "/history") == 0) {
        pthread_mutex_lock(&s->mu);
        json_t *h = sim_history_json(s);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, h);
    } else if (post && strcmp(p, "/late") == 0) {
        pthread_mutex_lock(&s->mu);
        int n = sim_late_release(s);
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->delay_gen, 1); /* and the answers delays hold back */
        reply(r, 200, json_pack("{s:i}", "released", n));
    } else if (get && strcmp(p, "/violations") == 0) {
        pthread_mutex_lock(&s->mu);
        json_t *v = json_deep_copy(s->violations);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, v);
    } else if (get && strcmp(p, "/rejections") == 0) {
        pthread_mutex_lock(&s->mu);
        json_t *v = json_deep_copy(s->rejections);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, v);
    } else if (del && strcmp(p, "/rejections") == 0) {
        pthread_mutex_lock(&s->mu);
        json_array_clear(s->rejections);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, json_object());
    } else if (post && strcmp(p, "/reset") == 0) {
        reset(s, r);
    } else if (post && str_starts(p, "/nodes/")) {
        node_set(s, p + 7, req, r);
    } else if (get && strcmp(p, "/faults") == 0) {
        pthread_mutex_lock(&s->mu);
        json_t *a = json_array();
        for (struct sim_fault *f = s->faults; f; f = f->next)
            json_array_append_new(a, fault_json(f));
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, a);
    } else if (post && strcmp(p, "/faults") == 0) {
        fault_add(s, req, r);
    } else if (del && (strcmp(p, "/faults") == 0 || str_starts(p, "/faults/"))) {
        int64_t id = 0;
        if (p[7] == '/' && (!parse_i64(p + 8, &id) || id <= 0)) {
            bad(r, 400, "fault id: a positive integer");
            return;
        }
        pthread_mutex_lock(&s->mu);
        faults_clear(s, (int)id);
        pthread_mutex_unlock(&s->mu);
        reply(r, 200, json_object());
    } else if (post && str_starts(p, "/vms/")) {
        int64_t vmid;
        if (!parse_i64(p + 5, &vmid) || vmid < 100) {
            bad(r, 400, "vmid: an integer of at least 100");
            return;
        }
        vm_set(s, (int)vmid, req, r);
    } else {
        bad(r, 404, "no such control endpoint: %s %s", m, req->path);
    }
}
