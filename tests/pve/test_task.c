/* Tasks against pvesim: UPIDs, status, waiting, logs, lists, failures. */
#include "pvetest.h"

#include <stdlib.h>
#include <unistd.h>

#include "pve/pve_int.h"

static struct tsim g_sim;
static pve_client *g_c;

static int group_setup(void **state)
{
    t_setup_global(state);
    tsim_start(&g_sim, NULL);
    struct pve_config cfg;
    static const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    g_c = tclient(&cfg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    pve_client_free(g_c);
    tsim_stop(&g_sim);
    return 0;
}

static int reset_sim(void **state)
{
    (void)state;
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    return 0;
}

/* POST a clone and return its UPID (static buffer). */
static const char *start_clone(const char *node, int src, int newid)
{
    static char upid[256];
    char path[128];
    assert_int_equal(pve_path(path, sizeof path, "/nodes/%s/qemu/%d/clone", node, src), 0);
    json_t *p = json_pack("{s:i, s:b}", "newid", newid, "full", 1), *d = NULL;
    struct pve_error e;
    assert_ok(pve_call_ex(g_c, "POST", path, p, PVE_CALL_ONCE, &d, &e), &e);
    assert_true(json_is_string(d));
    snprintf(upid, sizeof upid, "%s", json_string_value(d));
    json_decref(d);
    json_decref(p);
    return upid;
}

static void test_upid_parse(void **state)
{
    (void)state;
    struct pve_task t;
    assert_int_equal(
        pve_upid_parse("UPID:pve1:0001A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam:", &t), 0);
    assert_string_equal(t.node, "pve1");
    assert_string_equal(t.type, "qmclone");
    assert_string_equal(t.id, "9000");
    assert_string_equal(t.user, "root@pam");
    assert_int_equal(t.starttime, 0x66F0A1B2);
    /* token user, empty id, 9-digit pstart */
    assert_int_equal(
        pve_upid_parse("UPID:sv-2:0001A2B3:1C0FFEE00:66F0A1B2:startall::root@pam!ci:", &t), 0);
    assert_string_equal(t.user, "root@pam!ci");
    assert_string_equal(t.id, "");
    const char *bad[] = {
        "",
        "UPID:pve1:0001A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam",  /* no trailing ':' */
        "UPID:pve1:1A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam:",    /* short pid */
        "UPID:-pve:0001A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam:", /* node */
        "UPID:pve1:0001A2B3:00C0FFEE:66F0A1BZ:qmclone:9000:root@pam:", /* hex */
        "UPID:pve1:0001A2B3:00C0FFEE:66F0A1B2::9000:root@pam:",        /* empty type */
        "UPID:pve1:0001A2B3:00C0FFEE:66F0A1B2:qm clone:9000:root@pam:",
        "UPID:pve1:0001A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam:x:",
        "XPID:pve1:0001A2B3:00C0FFEE:66F0A1B2:qmclone:9000:root@pam:",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (pve_upid_parse(bad[i], &t) != PVE_E_INVALID)
            fail_msg("accepted bad UPID %zu", i);
    assert_int_equal(pve_upid_parse(NULL, &t), PVE_E_INVALID);
}

struct progress {
    int lines;
    bool saw_transfer, saw_end;
};

static void on_line(void *ud, const char *upid, const char *line)
{
    struct progress *p = ud;
    assert_true(str_starts(upid, "UPID:sv1:"));
    p->lines++;
    p->saw_transfer |= strstr(line, "transferred") != NULL;
    p->saw_end |= strcmp(line, "TASK OK") == 0;
}

static void test_clone_wait_progress(void **state)
{
    (void)state;
    const char *upid = start_clone("sv1", 8000, 500);
    struct pve_stats s0, s1;
    pve_client_stats(g_c, &s0);
    struct progress pr = {0};
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_wait(g_c, upid, 20000, on_line, &pr, &t, &e), &e);
    assert_false(t.running);
    assert_string_equal(t.exitstatus, "OK");
    assert_string_equal(t.type, "qmclone");
    assert_string_equal(t.node, "sv1");
    assert_true(pr.saw_transfer && pr.saw_end);
    pve_client_stats(g_c, &s1);
    assert_true(s1.task_polls - s0.task_polls >= 1);
    assert_int_equal(s1.task_polls - s0.task_polls, s1.requests - s0.requests);

    /* every line exactly once: the callback count equals the whole log */
    json_t *lines = NULL;
    assert_ok(pve_task_log(g_c, upid, 0, 0, &lines, &e), &e);
    assert_int_equal((int)json_array_size(lines), pr.lines);
    json_decref(lines);
    assert_ok(pve_task_log(g_c, upid, 1, 2, &lines, &e), &e);
    assert_int_equal(json_array_size(lines), 2);
    assert_true(str_starts(json_string_value(json_array_get(lines, 0)), "create full clone"));
    json_decref(lines);

    /* status through a path with ':' '@' '!' encoded, and the list */
    assert_ok(pve_task_status(g_c, upid, &t, &e), &e);
    assert_false(t.running);
    assert_string_equal(t.user, "root@pam!ci");
    struct pve_task *list = NULL;
    size_t n = 0;
    assert_ok(pve_task_list(g_c, "sv1", 8000, "qmclone", 10, &list, &n, &e), &e);
    assert_true(n >= 1);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].upid, upid) == 0) {
            found = true;
            assert_false(list[i].running);
            assert_string_equal(list[i].exitstatus, "OK");
        }
    assert_true(found);
    free(list);
}

static void test_wait_without_progress(void **state)
{
    (void)state;
    const char *upid = start_clone("sv2", 8010, 501);
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), &e);
    assert_string_equal(t.exitstatus, "OK");
}

/* A clone that ended OK teaches the client how long such clones take (per
 * node, type and template); a clone of another template or on another node
 * takes that as a hint until it has its own. */
static void test_wait_learns(void **state)
{
    (void)state;
    const char *upid = start_clone("sv2", 8010, 505);
    struct pve_task t, other;
    struct pve_error e;
    assert_ok(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), &e);
    long ms = pve_task_expect(g_c, &t);
    assert_true(ms > 0 && ms < 20000);
    assert_int_equal(
        pve_upid_parse("UPID:sv2:00001000:0010851D:6B04CF4B:qmclone:8003:root@pam:", &other), 0);
    /* another template, another node: the clone seen last, as a hint */
    assert_int_equal(pve_task_expect(g_c, &other), ms);
    assert_int_equal(
        pve_upid_parse("UPID:sv1:00001000:0010851D:6B04CF4B:qmclone:8010:root@pam:", &other), 0);
    assert_int_equal(pve_task_expect(g_c, &other), ms);
}

/* Calls the client made to one task endpoint ("status", "log") so far. */
static uint64_t task_calls_of(pve_client *c, const char *what)
{
    struct pve_callstat *cs = NULL;
    size_t n = 0;
    uint64_t calls = 0;
    char want[64];
    snprintf(want, sizeof want, "/nodes/{node}/tasks/{upid}/%s", what);
    pve_client_callstats(c, &cs, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(cs[i].method, "GET") == 0 && strcmp(cs[i].endpoint, want) == 0)
            calls += cs[i].calls;
    free(cs);
    return calls;
}

static uint64_t task_calls(const char *what)
{
    return task_calls_of(g_c, what);
}

/* A clone is watched through its log: the copy's progress lines tell its
 * end, the log's last line ("TASK OK") its exit status; no status read is
 * needed. When the log cannot be read, the status decides. */
static void test_clone_wait_reads_log(void **state)
{
    (void)state;
    uint64_t st0 = task_calls("status"), log0 = task_calls("log");
    const char *upid = start_clone("sv2", 8010, 507);
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), &e);
    assert_string_equal(t.exitstatus, "OK");
    assert_false(t.running);
    assert_int_equal(task_calls("status"), st0);
    assert_true(task_calls("log") > log0);

    /* every log read fails: the status is read instead */
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"method\":\"GET\",\"path\":\"/tasks/.*/log$\",\"kind\":\"error\","
              "\"status\":500,\"message\":\"log gone\",\"count\":-1}");
    st0 = task_calls("status");
    upid = start_clone("sv2", 8010, 508);
    assert_ok(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), &e);
    assert_string_equal(t.exitstatus, "OK");
    assert_true(task_calls("status") > st0);
}

/* A kind not seen on a node takes what the same type took on another,
 * for a clone of another template too (its first look; the log tells the
 * rest); what the node itself has seen comes first. */
static void test_expect_other_node(void **state)
{
    (void)state;
    struct pve_task a, b, ca, cb;
    assert_int_equal(
        pve_upid_parse("UPID:sv4:00001000:0010851D:6B04CF4B:qmstart:600:root@pam:", &a), 0);
    assert_int_equal(
        pve_upid_parse("UPID:sv5:00001000:0010851D:6B04CF4B:qmstart:601:root@pam:", &b), 0);
    assert_int_equal(
        pve_upid_parse("UPID:sv4:00001000:0010851D:6B04CF4B:qmclone:8030:root@pam:", &ca), 0);
    assert_int_equal(
        pve_upid_parse("UPID:sv5:00001000:0010851D:6B04CF4B:qmclone:8040:root@pam:", &cb), 0);
    assert_int_equal(pve_task_expect(g_c, &b), 0);
    pve_task_observed(g_c, &a, 1500, false);
    pve_task_observed(g_c, &ca, 40000, false);
    assert_int_equal(pve_task_expect(g_c, &b), 1500);
    assert_int_equal(pve_task_expect(g_c, &cb), 40000);
    pve_task_observed(g_c, &cb, 20000, false);
    assert_int_equal(pve_task_expect(g_c, &cb), 20000);
    assert_int_equal(pve_task_expect(g_c, &ca), 40000);
    /* its own node's, once seen, comes first */
    pve_task_observed(g_c, &b, 3000, false);
    assert_int_equal(pve_task_expect(g_c, &b), 3000);
    assert_int_equal(pve_task_expect(g_c, &a), 1500);
}

/* A clone on sv1 that cannot end while a test looks at it running, however
 * slow the machine (valgrind, load): sv1 copies at 1 MB/s (40 GiB: hours in
 * simulated time) until end_clone lets it finish at once. */
static const char *slow_clone(int src, int newid)
{
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv1", "{\"bandwidth_mb\": 1}");
    return start_clone("sv1", src, newid);
}

static void end_clone(const char *upid)
{
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv1", "{\"bandwidth_mb\": 1000000}");
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), &e);
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv1", "{\"bandwidth_mb\": 500}");
}

/* The client's looks at tasks (status and log reads) so far. */
static uint64_t task_calls(const char *what);
static uint64_t looks(void)
{
    return task_calls("status") + task_calls("log");
}

static int ticks;
static int tick_three(void *ud)
{
    (void)ud;
    return ++ticks >= 3;
}

/* The tick runs while the wait sleeps, and stops it. */
static void test_wait_tick_interrupts(void **state)
{
    (void)state;
    char upid[256];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 506));
    struct pve_wait_opts o = {.deadline_ms = 60000, .tick = tick_three, .tick_ms = 20};
    struct pve_task t;
    struct pve_error e;
    ticks = 0;
    uint64_t l0 = looks();
    assert_int_equal(pve_task_wait_opts(g_c, upid, &o, &t, &e), PVE_E_TIMEOUT);
    assert_string_equal(e.message, "interrupted");
    assert_int_equal(ticks, 3);
    assert_true(t.running);
    /* the ticks ran in the first sleep: no look came between them (counted,
     * not timed: a slow machine makes the sleep no shorter) */
    assert_int_equal(looks() - l0, 0);
    end_clone(upid);
}

static void task_error_case(const char *message, int newid, enum pve_class want)
{
    char rule[512];
    snprintf(rule, sizeof rule,
             "{\"method\":\"POST\",\"path\":\"^/nodes/sv1/qemu/8001/clone$\","
             "\"kind\":\"task_error\",\"message\":\"%s\",\"count\":1}",
             message);
    tsim_ctl0(&g_sim, "POST", "/_sim/faults", rule);
    const char *upid = start_clone("sv1", 8001, newid);
    struct pve_task t;
    struct pve_error e;
    assert_int_equal(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), want);
    assert_int_equal(e.cls, want);
    assert_string_equal(e.upid, upid);
    assert_true(str_starts(e.message, message));
    assert_non_null(strstr(e.message, " (task log: "));
    if (!strstr(e.message, "transferred 10.0 GiB of 10.0 GiB"))
        fail_msg("message: %s", e.message);
    assert_string_equal(t.exitstatus, message);
    assert_null(strstr(e.message + 1, message)); /* not repeated from the log */
}

static int wake_ticks;
static int tick_count(void *ud)
{
    (void)ud;
    wake_ticks++;
    return 0;
}

static int tick_stop_when_woken(void *ud)
{
    char b;
    wake_ticks++;
    return read(*(int *)ud, &b, 1) == 1; /* the pipe was written: stop */
}

/* With a wake_fd the wait sleeps until its next look (no tick every
 * tick_ms), and a write to the descriptor asks the tick at once. */
static void test_wait_wake_fd(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    char upid[256];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 509));
    struct pve_wait_opts o = {
        .deadline_ms = 300, .tick = tick_count, .tick_ms = 10, .wake_fd = &p[0], .ud = NULL};
    struct pve_task t;
    struct pve_error e;
    wake_ticks = 0;
    assert_int_equal(pve_task_wait_opts(g_c, upid, &o, &t, &e), PVE_E_TIMEOUT);
    assert_true(t.running);
    assert_int_equal(wake_ticks, 1); /* once, when the sleep ended; not every 10 ms */

    /* written before: the tick is asked at once and stops the wait */
    assert_int_equal(write(p[1], "s", 1), 1);
    o = (struct pve_wait_opts){
        .deadline_ms = 60000, .tick = tick_stop_when_woken, .wake_fd = &p[0], .ud = &p[0]};
    wake_ticks = 0;
    uint64_t l0 = looks();
    assert_int_equal(pve_task_wait_opts(g_c, upid, &o, &t, &e), PVE_E_TIMEOUT);
    assert_string_equal(e.message, "interrupted");
    assert_int_equal(wake_ticks, 1);
    assert_int_equal(looks() - l0, 0); /* at once, not at the first look */
    close(p[0]);
    close(p[1]);
    end_clone(upid);
}

static void test_task_error_lock(void **state)
{
    (void)state;
    task_error_case("can't lock file '/var/lock/qemu-server/lock-8001.conf' - got timeout", 502,
                    PVE_E_LOCK);
}

static void test_task_error_other(void **state)
{
    (void)state;
    task_error_case("storage migration failed: disk full", 503, PVE_E_OTHER);
}

static void test_wait_deadline(void **state)
{
    (void)state;
    /* the windows template has 40 GiB: at 1 MB/s the clone outlasts any
     * wait that ignored its deadline by far */
    char upid[256];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 504));
    struct pve_task t;
    struct pve_error e;
    int64_t t0 = mono_ms();
    assert_int_equal(pve_task_wait(g_c, upid, 300, NULL, NULL, &t, &e), PVE_E_TIMEOUT);
    assert_true(mono_ms() - t0 < 20000);
    assert_true(t.running);
    assert_string_equal(e.upid, upid);
    end_clone(upid);
}

/* A stopped clone ends failed at once ("received interrupt"), its VM gone
 * (qemu-server's clone removes what it made); stopping it again, ended, is
 * no error. */
static void test_task_stop(void **state)
{
    (void)state;
    char upid[256], path[64];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 510));
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_status(g_c, upid, &t, &e), &e);
    assert_true(t.running);
    assert_ok(pve_task_stop(g_c, upid, &e), &e);
    assert_int_equal(pve_task_wait(g_c, upid, 20000, NULL, NULL, &t, &e), PVE_E_OTHER);
    assert_false(t.running);
    assert_string_equal(t.exitstatus, "clone failed: received interrupt");
    snprintf(path, sizeof path, "/nodes/sv1/qemu/510/config");
    json_t *d = NULL;
    assert_int_not_equal(pve_call(g_c, "GET", path, NULL, &d, &e), 0);
    json_decref(d);
    assert_ok(pve_task_stop(g_c, upid, &e), &e);
    assert_int_equal(pve_task_stop(g_c, "garbage", &e), PVE_E_INVALID);
    tsim_ctl0(&g_sim, "POST", "/_sim/nodes/sv1", "{\"bandwidth_mb\": 500}");
}

/* pve_wait_opts.held_down: the caller holds the task's node down. */
static int64_t down_at; /* mono ms from which held_down says so */
static int held_down_since(void *ud)
{
    (void)ud;
    return mono_ms() >= down_at;
}

/* A node held down that answers: its short looks are answered and the wait
 * goes on to the task's end as before. */
static void test_short_looks_answered(void **state)
{
    (void)state;
    down_at = 0;
    const char *upid = start_clone("sv2", 8010, 511);
    struct pve_wait_opts o = {.deadline_ms = 20000, .held_down = held_down_since};
    struct pve_task t;
    struct pve_error e;
    assert_ok(pve_task_wait_opts(g_c, upid, &o, &t, &e), &e);
    assert_false(t.running);
    assert_string_equal(t.exitstatus, "OK");
}

/* A node held down that does not answer (its requests hang, as behind the
 * cluster's proxy a hung node's do): the first look is sent once with the
 * probe's timeout (2 s: twice connect_timeout_ms; the operation timeout is
 * 5 s) and its failure ends the wait, without a status read after the
 * clone's log read. Before: the log read waited out 5 s, five times
 * (retried), then the status read as long. */
static void test_short_look_unanswered(void **state)
{
    (void)state;
    char upid[256];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 512));
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"path\":\"^/nodes/sv1/tasks/\",\"kind\":\"hang\"}");
    down_at = 0;
    struct pve_wait_opts o = {.deadline_ms = 60000, .held_down = held_down_since};
    struct pve_task t;
    struct pve_error e;
    uint64_t logs = task_calls("log"), statuses = task_calls("status");
    int64_t t0 = mono_ms();
    assert_int_equal(pve_task_wait_opts(g_c, upid, &o, &t, &e), PVE_E_NETWORK);
    int64_t took = mono_ms() - t0;
    /* the first look within 1 s, then the probe's 2 s */
    if (took < 1900 || took > 8000) /* before: 5 s, five times, then as long again */
        fail_msg("the wait ended after %lld ms", (long long)took);
    assert_int_equal(e.cls, PVE_E_NETWORK);
    assert_string_equal(e.upid, upid);
    assert_int_equal(e.attempts, 1);
    assert_int_equal(task_calls("log") - logs, 1);
    assert_int_equal(task_calls("status") - statuses, 0);
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    end_clone(upid);
}

/* A look sent before its node was held down (with the operation's
 * timeout, 20 s on this client) is cut off once it has run the probe's 2 s
 * with the node held down, and not sent again. */
static void test_look_in_flight_cut_off(void **state)
{
    (void)state;
    struct pve_config cfg;
    static const char *hv[1];
    tcfg_init(&cfg, hv, g_sim.host);
    cfg.timeout_ms = 20000;
    pve_client *c = tclient(&cfg);
    char upid[256];
    snprintf(upid, sizeof upid, "%s", slow_clone(8003, 513));
    tsim_ctl0(&g_sim, "POST", "/_sim/faults",
              "{\"path\":\"^/nodes/sv1/tasks/\",\"kind\":\"hang\"}");
    int64_t t0 = mono_ms();
    down_at = t0 + 1500; /* the first look goes out within 1 s, unguarded */
    struct pve_wait_opts o = {.deadline_ms = 60000, .held_down = held_down_since};
    struct pve_task t;
    struct pve_error e;
    assert_int_equal(pve_task_wait_opts(c, upid, &o, &t, &e), PVE_E_NETWORK);
    int64_t took = mono_ms() - t0;
    /* cut at its 2 s (libcurl asks about once a second while nothing
     * moves): ~3-4 s; uncut, its 20 s timeout would end it */
    if (took > 10000)
        fail_msg("the wait ended after %lld ms", (long long)took);
    assert_non_null(strstr(e.message, "held down"));
    assert_int_equal(e.attempts, 1);
    assert_int_equal(task_calls_of(c, "log"), 1);
    assert_int_equal(task_calls_of(c, "status"), 0);
    pve_client_free(c);
    tsim_ctl0(&g_sim, "DELETE", "/_sim/faults", NULL);
    end_clone(upid);
}

static void test_status_errors(void **state)
{
    (void)state;
    struct pve_task t;
    struct pve_error e;
    assert_int_equal(pve_task_status(g_c,
                                     "UPID:sv1:0000FFFF:00000001:66F0A1B2:qmstart:100:"
                                     "root@pam:",
                                     &t, &e),
                     PVE_E_NOTFOUND);
    assert_int_equal(e.http_status, 400);
    assert_non_null(strstr(e.params, "no such task"));
    assert_int_equal(pve_task_status(g_c, "garbage", &t, &e), PVE_E_INVALID);
    assert_int_equal(pve_task_status(g_c,
                                     "UPID:nosuchnode:0000FFFF:00000001:66F0A1B2:qmstart:"
                                     "100:root@pam:",
                                     &t, &e),
                     PVE_E_OTHER); /* hostname lookup failed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upid_parse),
        cmocka_unit_test_setup(test_clone_wait_progress, reset_sim),
        cmocka_unit_test_setup(test_wait_without_progress, reset_sim),
        cmocka_unit_test_setup(test_wait_learns, reset_sim),
        cmocka_unit_test_setup(test_clone_wait_reads_log, reset_sim),
        cmocka_unit_test(test_expect_other_node),
        cmocka_unit_test_setup(test_wait_tick_interrupts, reset_sim),
        cmocka_unit_test_setup(test_wait_wake_fd, reset_sim),
        cmocka_unit_test_setup(test_task_error_lock, reset_sim),
        cmocka_unit_test_setup(test_task_error_other, reset_sim),
        cmocka_unit_test_setup(test_wait_deadline, reset_sim),
        cmocka_unit_test_setup(test_task_stop, reset_sim),
        cmocka_unit_test_setup(test_status_errors, reset_sim),
        cmocka_unit_test_setup(test_short_looks_answered, reset_sim),
        cmocka_unit_test_setup(test_short_look_unanswered, reset_sim),
        cmocka_unit_test_setup(test_look_in_flight_cut_off, reset_sim),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
