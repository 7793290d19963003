/* The core's test helpers, on the C harness (tests/harness.h): a pvesim
 * cluster (sv1..sv5), a config pointing at it, and a started core over a
 * fresh store (SQLite, or a schema in $PROXD_TEST_PG); plus look-ups in
 * pvesim's /_sim/state and in the store. Static inline so that each test
 * file takes what it uses (CMake links tests/harness.c only). */
#ifndef TESTS_CORE_HARNESS_H
#define TESTS_CORE_HARNESS_H

#include "harness.h"

#include "common/log.h"
#include "core/core.h"
#include "pve/pve.h"
#include "pve/pve_api.h"

#include <arpa/inet.h>
#include <sqlite3.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CH_TOKEN "root@pam!proxd=" H_TOKEN_SECRET
#define CH_KEY                                                                                     \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFzq7NTAlFT4SImr0qHpVZ0HHVdVunThFP1ICflNG6d+ me@host"
#define CH_NNODES 5
#define CH_PASSWORD "ch-Pa55word" /* root@pam's, with ch_opts.password */

struct ch_opts {
    int workers;             /* 0: 8 */
    int clones_per_node;     /* 0: 2 */
    int quarantine;          /* seconds */
    int timeout;             /* [proxmox] timeout, 0: 4 */
    int name_max;            /* 0: 63 */
    bool no_start;           /* leave the core stopped (the test starts it) */
    int pve_version;         /* 0: pvesim's default (9) */
    const char *time_scale;  /* NULL: 0.005 */
    int reconcile_interval;  /* seconds; 0: 60 (proxd's default) */
    const char *extra;       /* appended to the config (quota sections) */
    const char *proxd_extra; /* lines for the [proxd] section */
    const char *sim_seed;    /* pvesim's --seed (fault draws), NULL: none */
    const char *sim_nodes;   /* pvesim's nodes, NULL: sv1..sv5 (proxd manages sv1..sv5) */
    bool password;           /* proxd logs in as root@pam (tickets), not with the token */
};

struct ch_env {
    int port;
    pid_t pid;
    char dir[128];
    struct proxd_config *cfg;
    store *st;
    struct fleet *fl;
    struct core *k;
};

/* The store the core runs on: a SQLite file in the test's directory, or,
 * when $PROXD_TEST_PG names a PostgreSQL database (test_core_pg.py starts a
 * private server), a fresh schema in it. */
static inline void ch_database(const struct ch_env *e, char *url, size_t len)
{
    const char *pg = getenv("PROXD_TEST_PG");
    if (!pg || !*pg) {
        snprintf(url, len, "sqlite:%s/proxd.db", e->dir);
        return;
    }
    static int seq;
    char schema[64], cmd[1024];
    snprintf(schema, sizeof schema, "core_%d_%d", (int)getpid(), ++seq);
    snprintf(cmd, sizeof cmd, "psql -X -q -v ON_ERROR_STOP=1 '%s' -c 'CREATE SCHEMA %s'", pg,
             schema);
    if (system(cmd) != 0)
        fail_msg("cannot create schema %s in %s", schema, pg);
    snprintf(url, len, "%s?options=-csearch_path%%3D%s", pg, schema);
}

/* Run SQL on the core's database behind its back (white-box): through
 * SQLite, or psql for PostgreSQL. The first column of the last row that
 * has one, as an integer (0 when none). */
static inline int64_t ch_sql(const struct ch_env *e, const char *sql)
{
    const char *url = e->cfg->database;
    int64_t v = 0;
    if (strncmp(url, "sqlite:", 7) == 0) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(url + 7, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        const char *tail = sql;
        while (tail && *tail) {
            sqlite3_stmt *st = NULL;
            assert_int_equal(sqlite3_prepare_v2(db, tail, -1, &st, &tail), SQLITE_OK);
            if (!st)
                break;
            int rc;
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
            assert_int_equal(rc, SQLITE_DONE);
            sqlite3_finalize(st);
        }
        sqlite3_close(db);
        return v;
    }
    char path[160], cmd[1024], line[256];
    snprintf(path, sizeof path, "%s/query.sql", e->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(sql, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "psql -X -q -A -t -v ON_ERROR_STOP=1 '%s' -f %s", url, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    while (fgets(line, sizeof line, p))
        if (line[0] >= '0' && line[0] <= '9')
            v = strtoll(line, NULL, 10);
    assert_int_equal(pclose(p), 0);
    unlink(path);
    return v;
}

/* A test binary's start: libpve's global state, and the log level from
 * $PROXD_TEST_LOG (default warn). */
static inline void ch_main_init(void)
{
    pve_global_init();
    const char *lvl = getenv("PROXD_TEST_LOG");
    log_set_level(lvl ? (enum log_level)log_level_parse(lvl) : LOG_WARN);
}

static inline bool ch_fleet_ready(void *fl)
{
    return fleet_ready(fl);
}

/* Start the core with the inventory read now, as the keeper's first read
 * would: a test that changed pvesim before the start (or read the
 * inventory itself earlier) must not race that read. */
static inline void ch_start(struct ch_env *e)
{
    assert_int_equal(core_start(e->k), 0);
    fleet_refresh(e->fl, true);
    assert_true(h_wait(ch_fleet_ready, e->fl, 30000));
}

static inline void ch_up(struct ch_env *e, const struct ch_opts *o)
{
    struct ch_opts d = {0};
    if (!o)
        o = &d;
    memset(e, 0, sizeof *e);
    const char *seed_args[] = {"--seed", o->sim_seed, NULL};
    struct h_sim_opts so = {.nodes = o->sim_nodes ? o->sim_nodes : "sv1,sv2,sv3,sv4,sv5",
                            .token = CH_TOKEN,
                            .time_scale = o->time_scale ? o->time_scale : "0.005",
                            .pve_version = o->pve_version ? o->pve_version : 9,
                            .password = o->password ? CH_PASSWORD : NULL,
                            .extra = o->sim_seed ? seed_args : NULL};
    e->pid = h_sim_up(&e->port, &so);
    snprintf(e->dir, sizeof e->dir, "/tmp/proxd-core-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    char path[256];
    snprintf(path, sizeof path, "%s/proxd.conf", e->dir);
    char db[512];
    ch_database(e, db, sizeof db);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[proxd]\nlisten = 127.0.0.1:8080\ndatabase = %s\n"
            "placement = ordered\nworkers = %d\ntag = proxd\nquarantine = %d\n"
            "fallback_range = 9000-9999\nlog_level = warn\nreconcile_interval = %d\n%s%s"
            "[proxmox]\n%s%s\nverify_tls = no\nconnect_timeout = 1\ntimeout = %d\n"
            "[limits]\nclones_per_node = %d\nname_max = %d\n"
            "[os ubuntu]\nvmid_range = 1000-1999\n[os centos]\nvmid_range = 2000-2999\n"
            "[os windows]\nvmid_range = 3000-3999\n[os debian]\nvmid_range = 4000-4999\n",
            db, o->workers ? o->workers : 8, o->quarantine,
            o->reconcile_interval ? o->reconcile_interval : 60,
            o->proxd_extra ? o->proxd_extra : "",
            /* pvesim serves /cluster/resources live (--pvestatd-cycle 0) */
            o->proxd_extra && strstr(o->proxd_extra, "stats_lag") ? "" : "stats_lag = 0\n",
            o->password ? "user = root@pam\npassword = " CH_PASSWORD : "token = ",
            o->password ? "" : CH_TOKEN, o->timeout ? o->timeout : 4,
            o->clones_per_node ? o->clones_per_node : 2, o->name_max ? o->name_max : 63);
    static const char *const oses[] = {"ubuntu", "debian", "centos", "windows"};
    for (int i = 0; i < CH_NNODES; i++) {
        fprintf(f, "[node sv%d]\nhost = 127.0.0.1:%d\ncluster = pvesim\nstorage = local-lvm\n",
                i + 1, e->port);
        for (int k = 0; k < 4; k++)
            fprintf(f, "template.%s = %d\n", oses[k], 8000 + 10 * i + k);
    }
    if (o->extra)
        fputs(o->extra, f);
    fclose(f);
    char err[4096];
    e->cfg = config_load(path, err, sizeof err);
    if (!e->cfg)
        fail_msg("config: %s", err);
    struct store_error se;
    e->st = store_open(e->cfg->database, &se);
    if (!e->st)
        fail_msg("store: %s", se.message);
    e->fl = fleet_new(e->cfg, err, sizeof err);
    if (!e->fl)
        fail_msg("fleet: %s", err);
    e->k = core_new(e->cfg, e->st, e->fl, "test:1");
    assert_non_null(e->k);
    if (!o->no_start)
        ch_start(e);
}

static inline void ch_down(struct ch_env *e)
{
    core_stop(e->k);
    core_free(e->k);
    fleet_free(e->fl);
    store_close(e->st);
    config_free(e->cfg);
    h_sim_stop(e->pid, true);
    static const char *const files[] = {"proxd.conf", "proxd.db", "proxd.db-wal", "proxd.db-shm",
                                        "proxd.db-journal"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", e->dir, files[i]);
        unlink(p);
    }
    rmdir(e->dir);
}

/* ---- pvesim ---------------------------------------------------------------- */

static inline void ch_sim(struct ch_env *e, const char *method, const char *path, const char *json)
{
    json_decref(h_sim_ctl(e->port, method, path, json));
}

/* A fault rule: kind error/task_error..., on `method` `path_re`, hitting
 * the next `count` calls (0: every call). */
static inline void ch_fault_n(struct ch_env *e, const char *method, const char *path_re,
                              const char *kind, const char *message, int count)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i}", "method", method, "path", path_re, "kind", kind,
                          "message", message, "status", 500);
    if (count)
        json_object_set_new(o, "count", json_integer(count));
    char *s = json_dumps(o, 0);
    ch_sim(e, "POST", "/_sim/faults", s);
    free(s);
    json_decref(o);
}

static inline void ch_fault(struct ch_env *e, const char *method, const char *path_re,
                            const char *kind, const char *message)
{
    ch_fault_n(e, method, path_re, kind, message, 0);
}

static inline json_t *ch_state(struct ch_env *e)
{
    json_t *j = h_sim_ctl(e->port, "GET", "/_sim/state", NULL);
    assert_non_null(j);
    return j;
}

static inline bool ch_is_template(int vmid)
{
    return vmid >= 8000 && vmid <= 8049;
}

/* The VM `vmid` in a state (borrowed), or NULL. */
static inline json_t *ch_state_vm(json_t *state, int vmid)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(state, "vms"), i, v)
    {
        if (json_integer_value(json_object_get(v, "vmid")) == vmid)
            return v;
    }
    return NULL;
}

/* Non-template VMs on `node` (NULL: anywhere). */
static inline int ch_count_vms(json_t *state, const char *node)
{
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(state, "vms"), i, v)
    {
        int vmid = (int)json_integer_value(json_object_get(v, "vmid"));
        const char *nd = json_string_value(json_object_get(v, "node"));
        if (!ch_is_template(vmid) && (!node || (nd && strcmp(nd, node) == 0)))
            n++;
    }
    return n;
}

/* Size in GiB of "storage:vol,size=40G" (G or M or T suffix). */
static inline int64_t ch_disk_gb(const char *spec)
{
    const char *s = spec ? strstr(spec, "size=") : NULL;
    if (!s)
        return -1;
    char *end;
    double v = strtod(s + 5, &end);
    switch (*end) {
    case 'T':
        return (int64_t)(v * 1024);
    case 'G':
        return (int64_t)v;
    case 'M':
        return (int64_t)(v / 1024);
    case 'K':
        return (int64_t)(v / (1024 * 1024));
    default:
        return (int64_t)(v / (1024.0 * 1024 * 1024));
    }
}

static inline int ch_hex(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decode into a new string. */
static inline char *ch_pct_decode(const char *s)
{
    char *o = malloc(strlen(s) + 1), *p = o;
    for (; *s; s++) {
        if (*s == '%' && ch_hex(s[1]) >= 0 && ch_hex(s[2]) >= 0) {
            *p++ = (char)(ch_hex(s[1]) * 16 + ch_hex(s[2]));
            s += 2;
        } else {
            *p++ = *s;
        }
    }
    *p = '\0';
    return o;
}

/* A VM on sv1 as an earlier attempt of `job` would have left it (cloned
 * with the creation marker), optionally tagged. */
static inline void ch_make_halfmade(struct ch_env *e, int vmid, const char *job, bool tagged)
{
    pve_client *pc = fleet_client(e->fl, "sv1");
    char m[96], upid[PVE_UPID_MAX];
    snprintf(m, sizeof m, "proxd job %s", job);
    struct pve_clone o = {.newid = vmid, .name = "half", .description = m, .full = 1};
    struct pve_error pe;
    if (pve_vm_clone(pc, "sv1", 8000, &o, upid, &pe) != 0)
        fail_msg("clone: %s", pe.message);
    struct pve_task t;
    if (pve_task_wait(pc, upid, 20000, NULL, NULL, &t, &pe) != 0)
        fail_msg("clone task: %s", pe.message);
    if (tagged) {
        struct pve_config_set cs = {.tags = "proxd", .description = m};
        if (pve_vm_config_set(pc, "sv1", vmid, &cs, &pe) != 0)
            fail_msg("config: %s", pe.message);
    }
}

/* ---- the core -------------------------------------------------------------- */

static inline void ch_request(struct vm_request *r, const char *os, const char *name, int cores,
                              int64_t memory_mb, int64_t disk_gb)
{
    memset(r, 0, sizeof *r);
    snprintf(r->os, sizeof r->os, "%s", os);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->owner, sizeof r->owner, "%s", "alice");
    r->cores = cores;
    r->memory_mb = memory_mb;
    r->disk_gb = disk_gb;
}

/* Submit and wait; returns the job's end state, fills job id and vmid. */
static inline enum job_state ch_create_wait(struct ch_env *e, const struct vm_request *r,
                                            char job[40], int *vmid, long timeout_ms)
{
    struct core_error ce = {0};
    int rc = core_create(e->k, r, job, vmid, &ce);
    if (rc)
        fail_msg("core_create: %d %s: %s", rc, ce.field, ce.message);
    enum job_state st = JOB_QUEUED;
    if (core_wait_job(e->k, job, timeout_ms, &st) != 0)
        fail_msg("job %s (vmid %d) did not finish in %ld ms", job, *vmid, timeout_ms);
    return st;
}

/* Does the job's attempts list have an entry for `node` whose error
 * contains `what` (NULL: any)? */
static inline bool ch_attempted(const struct job_rec *j, const char *node, const char *what)
{
    size_t i;
    json_t *a;
    json_array_foreach(j->attempts, i, a)
    {
        const char *n = json_string_value(json_object_get(a, "node"));
        const char *m = json_string_value(json_object_get(a, "error"));
        if (n && strcmp(n, node) == 0 && (!what || (m && strstr(m, what))))
            return true;
    }
    return false;
}

#endif
