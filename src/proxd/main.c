/* proxd: the daemon, and the few administrative commands that work on its
 * configuration and database directly.
 *
 *   proxd --config FILE                run: workers, inventory, jobs
 *   proxd --check-config FILE          validate and exit (names bad key and line)
 *   proxd create --config FILE --os OS --name NAME --cores N --memory MB
 *         --disk GB --owner WHO [--ssh-key-file F] [--wait SECONDS]
 *                                      queue a creation; prints {"job","vmid"}
 *   proxd create --config FILE --from FILE|- [--json] [--wait SECONDS]
 *                                      queue one creation per JSON line (create_batch.h)
 *   proxd job --config FILE ID         print a job and its events as JSON
 *   proxd vms --config FILE            print the VM records as JSON
 *   proxd reconcile --config FILE      one reconciliation pass, prints what it repaired
 *                                      (and one config walk when pools are configured)
 *   proxd ippools --config FILE        the address pools' figures from the store, as JSON
 *   proxd vm --config FILE VMID ACTION [ARG...] [--wait S]
 *         ACTION: start|shutdown|stop|pause|resume|reboot|delete,
 *                 resize GB, set CORES MEMORY_MB (0 keeps a value)
 *   proxd token create --config FILE --owner WHO [--role admin|user]
 *                                      make an API token; printed once
 *   proxd token list --config FILE     the tokens (never their secrets)
 *   proxd token revoke --config FILE ID
 */
#include "common/jsonw.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core.h"
#include "core/events.h"
#include "proxd/create_batch.h"
#include "proxd/svc.h"
#include "pve/pve.h"
#ifdef HAVE_API
#include "api/api.h"
#include "api/auth.h"
#include "api/ippool_view.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Point standard error (where every log line goes) at the log file; on
 * SIGHUP this reopens it after rotation. */
static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_error("proxd", "cannot open log file %s: %s", path, strerror(errno));
        return -1;
    }
    dup2(fd, STDERR_FILENO);
    close(fd);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: proxd --config FILE            run the daemon\n"
               "       proxd --check-config FILE      validate a configuration\n"
               "       proxd create --config FILE --os OS --name NAME --cores N --memory MB\n"
               "             --disk GB --owner WHO [--ssh-key-file F] [--wait SECONDS]\n"
               "       proxd create --config FILE --from FILE|- [--json] [--wait SECONDS]\n"
               "       proxd job --config FILE ID\n"
               "       proxd vms --config FILE\n"
               "       proxd reconcile --config FILE\n"
               "       proxd ippools --config FILE\n"
               "       proxd uncordon --config FILE NODE  lift a configuration's cordon\n"
               "       proxd vm --config FILE VMID start|shutdown|stop|pause|resume|reboot|delete\n"
               "       proxd vm --config FILE VMID resize GB | set CORES MEMORY_MB\n"
               "       proxd token create --config FILE --owner WHO [--role admin|user]\n"
               "       proxd token list --config FILE\n"
               "       proxd token revoke --config FILE ID\n");
}

/* Every message printed: a fixed buffer of 8 KiB cut a long report short. */
static struct proxd_config *load(const char *path)
{
    char *err = NULL;
    struct proxd_config *c = config_load_all(path, &err);
    if (!c)
        fprintf(stderr, "%s\n", err ? err : "");
    free(err);
    return c;
}

static char *slurp(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b = BUF_INIT(max);
    char tmp[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(tmp, 1, sizeof tmp, f)) > 0)
        ok = buf_add(&b, tmp, n) == BUF_OK;
    fclose(f);
    if (!ok) {
        buf_release(&b);
        return NULL;
    }
    return buf_take(&b);
}

static void instance_name(char *out, size_t len)
{
    char host[64] = "proxd";
    gethostname(host, sizeof host - 1);
    snprintf(out, len, "%.40s:%d", host, (int)getpid());
}

struct world {
    struct proxd_config *cfg;
    store *st;
    struct fleet *fl;
    struct core *k;
};

/* A database that may answer if asked again: a PostgreSQL server that
 * cannot be reached (still starting at boot, restarting, failing over) or
 * a SQLite file whose lock another process holds. A bad URL, a file that
 * cannot be opened or made, a schema this proxd does not know: no. */
static bool store_may_come(const char *url, const struct store_error *se)
{
    if (se->code != STORE_E_DB)
        return false;
    return strncmp(url, "postgres", 8) == 0 || strstr(se->message, "database is locked") ||
           strstr(se->message, "busy");
}

struct db_wait {
    const sigset_t *sigs; /* NULL: a one-off command, which does not wait */
    bool stopped;         /* a signal ended the wait */
    bool waited;          /* the database was asked more than once */
    /* NULL, or called after each try that failed (the daemon's answers
     * meanwhile: api_wait) */
    void (*tried)(void *cls, int tries);
    void *cls;
};

/* The daemon waits for such a database, asking again with a pause that
 * grows to 10 s, instead of exiting: a service manager would start it
 * again and again, then give up (systemd's start limit), and a proxd that
 * another instance's killer or an operator started during an outage would
 * be gone when it ends. SIGTERM or SIGINT ends the wait (sigs: the
 * daemon's blocked set). Returns the store, or NULL (said). */
static store *store_open_waiting(const char *url, struct db_wait *dw)
{
    char shown[512];
    url_redact(url, shown, sizeof shown);
    struct store_error se;
    long pause = 1000;
    for (int tries = 1;; tries++) {
        store *st = store_open(url, &se);
        if (st || !dw->sigs || !store_may_come(url, &se)) {
            if (!st)
                fprintf(stderr, "proxd: database %s: %s\n", shown, se.message);
            return st;
        }
        log_warn("proxd", "database %s does not answer (try %d): %s; asking again in %ld s", shown,
                 tries, se.message, pause / 1000);
        dw->waited = true;
        if (dw->tried)
            dw->tried(dw->cls, tries);
        struct timespec ts = {.tv_sec = pause / 1000, .tv_nsec = 0};
        int sig = sigtimedwait(dw->sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("proxd", "stopped while waiting for the database");
            dw->stopped = true;
            return NULL;
        }
        pause = pause * 2 > 10000 ? 10000 : pause * 2;
    }
}

/* The rest of a world whose configuration w->cfg is loaded: the store
 * (waited for as dw says), the fleet (with_fleet) and the core. */
static int open_world_rest(struct world *w, bool with_fleet, struct db_wait *dw)
{
    if (!(w->st = store_open_waiting(w->cfg->database, dw)))
        return 1;
    if (with_fleet) {
        char err[512];
        if (!(w->fl = fleet_new(w->cfg, err, sizeof err))) {
            fprintf(stderr, "proxd: %s\n", err);
            return 1;
        }
    }
    char inst[64];
    instance_name(inst, sizeof inst);
    if (w->fl)
        w->k = core_new(w->cfg, w->st, w->fl, inst);
    if (w->k && dw->waited)
        core_db_was_out(w->k);
    return 0;
}

/* A one-off command's world: a database that does not answer is said and
 * the command ends. */
static int open_world(struct world *w, const char *path, bool with_fleet)
{
    memset(w, 0, sizeof *w);
    if (!(w->cfg = load(path)))
        return 1;
    struct db_wait dw = {0};
    return open_world_rest(w, with_fleet, &dw);
}

/* A world for a one-off command that decides placement or VMIDs (create,
 * create --from): the inventory read once, now. */
static int open_world_read(struct world *w, const char *path)
{
    int rc = open_world(w, path, true);
    if (rc == 0)
        fleet_refresh(w->fl, true);
    return rc;
}

static void close_world(struct world *w)
{
    core_free(w->k);
    fleet_free(w->fl);
    store_close(w->st);
    config_free(w->cfg);
}

/* A stop that waits on a step in a Proxmox call (a hung node: the call's
 * timeout, then its retries) would hold a restart for minutes, when it is
 * needed most. Past STOP_GRACE_MS, or at a second SIGTERM or SIGINT, the
 * process exits without waiting: the steps still out are resumed as after
 * a crash (their leases given up). Giving the leases up is a write to the
 * store, which may itself not answer (a PostgreSQL server cut off, another
 * process holding SQLite's lock): ABANDON_MS bounds it, and past it the
 * leases run out by themselves. */
#define STOP_GRACE_MS 10000
#define ABANDON_MS 5000

struct stop_watch {
    pthread_mutex_t mu;
    bool done; /* the stop ended: the main thread goes on to free the world */
    struct core *k;
};

static void *abandon_bound_main(void *arg)
{
    (void)arg;
    mem_thread_name("stop-bound");
    sleep_ms(ABANDON_MS);
    log_warn("proxd",
             "the store did not take the leases back in %d s: exiting; they run out by "
             "themselves (a proxd started on this host takes them over at once)",
             ABANDON_MS / 1000);
    _exit(0);
}

/* The leases given up within ABANDON_MS, or not at all: exits either way. */
static void abandon_and_exit(struct core *k)
{
    pthread_t t;
    if (mem_thread_start(&t, abandon_bound_main, NULL) == 0)
        pthread_detach(t);
    core_abandon(k);
    _exit(0);
}

static void *stop_watch_main(void *arg)
{
    mem_thread_name("stop-watch");
    struct stop_watch *s = arg;
    /* SIGTERM, SIGINT and SIGUSR1 (the stop's end) are blocked in every
     * thread (run_daemon): they queue for this wait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    struct timespec left = {.tv_sec = STOP_GRACE_MS / 1000};
    int sig;
    do
        sig = sigtimedwait(&sigs, NULL, &left); /* EINTR: rare, the grace starts over */
    while (sig < 0 && errno == EINTR);
    if (sig == SIGUSR1)
        return NULL;
    /* the lock is kept to the end: the main thread cannot go on to free
     * what the threads still running use */
    pthread_mutex_lock(&s->mu);
    if (!s->done) {
        if (sig > 0)
            log_warn("proxd", "second signal while stopping: exiting now; steps still out "
                              "resume at the next start, as after a crash");
        else
            log_warn("proxd",
                     "still stopping after %d s (a step waits on a Proxmox call): "
                     "exiting; such steps resume at the next start, as after a crash",
                     STOP_GRACE_MS / 1000);
        abandon_and_exit(s->k);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static bool stop_watch_start(struct stop_watch *s, pthread_t *t)
{
    pthread_mutex_init(&s->mu, NULL);
    if (mem_thread_start(t, stop_watch_main, s) == 0)
        return true;
    log_warn("proxd", "no stop watch: the stop waits for every step");
    return false;
}

static void stop_watch_end(struct stop_watch *s, pthread_t t)
{
    pthread_mutex_lock(&s->mu);
    s->done = true;
    pthread_mutex_unlock(&s->mu);
    pthread_kill(t, SIGUSR1);
    pthread_join(t, NULL);
}

/* A start timeout extended this much at each failed try: past the pause
 * before the next (10 s at most) and a PostgreSQL connect that hangs */
#define START_EXTEND_MS 120000

/* After each try to open the database that failed: the early server's
 * answers and systemd's status say so, and the start may go on. */
static void daemon_tried(void *cls, int tries)
{
#ifdef HAVE_API
    api_wait_tried(cls, tries);
#else
    (void)cls;
#endif
    char status[96];
    snprintf(status, sizeof status, "waiting for the database: %d failed tr%s (see the log)", tries,
             tries == 1 ? "y" : "ies");
    svc_starting(status, START_EXTEND_MS);
}

#ifdef HAVE_API
/* The socket systemd passed (proxd.socket: it keeps the port while proxd
 * restarts), else `listen` bound now; -1 said. */
static int daemon_listen(const struct proxd_config *cfg)
{
    char err[512], addr[96];
    int fd = svc_listen_fd(err, sizeof err);
    if (fd == SVC_NO_SOCKET && (fd = api_listen(cfg, NULL, err, sizeof err)) >= 0)
        return fd;
    if (fd < 0) {
        fprintf(stderr, "proxd: %s\n", err);
        return -1;
    }
    api_sock_text(fd, addr, sizeof addr);
    log_info("proxd",
             "listening on the socket systemd passed, %s (the configuration's listen, %s, "
             "is not used)",
             addr, cfg->listen);
    return fd;
}
#endif

/* The log as the configuration says: before the database is opened, so
 * that a wait for it is in the log file. */
static int set_up_log(const struct proxd_config *cfg)
{
    int lvl = log_level_parse(cfg->log_level[0] ? cfg->log_level : "info");
    log_set_level(lvl < 0 ? LOG_INFO : (enum log_level)lvl);
    log_set_format(strcmp(cfg->log_format, "json") == 0 ? LOG_FMT_JSON : LOG_FMT_TEXT);
    return cfg->log_file[0] ? open_log(cfg->log_file) : 0;
}

static int run_daemon(const char *path)
{
    struct world w;
    memset(&w, 0, sizeof w);
    int rc = 1;
    int listen_fd = -1;
    /* SIGTERM, SIGINT and SIGHUP come to the sigwait below: blocked here,
     * before any thread starts, so that every thread inherits the mask and
     * the main thread sleeps until one comes (no wake-ups to look) */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1); /* the stop watch's: its stop ended */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    sigdelset(&sigs, SIGUSR1);
    if (!(w.cfg = load(path)) || set_up_log(w.cfg))
        goto out;
    struct db_wait dw = {.sigs = &sigs, .tried = daemon_tried};
#ifdef HAVE_API
    char aerr[512];
    if ((listen_fd = daemon_listen(w.cfg)) < 0)
        goto out;
    /* answered once the database is slow or has failed a try: the first
     * try alone may take a while (a PostgreSQL connect timeout, SQLite's
     * busy timeout); until then connections wait in the backlog */
    struct api_wait *early = api_wait_start(w.cfg, listen_fd, aerr, sizeof aerr);
    if (!early)
        log_warn("proxd", "%s: the port answers once the database does", aerr);
    dw.cls = early;
#endif
    rc = open_world_rest(&w, true, &dw);
#ifdef HAVE_API
    api_wait_stop(early); /* the socket's backlog waits for api_start */
#endif
    if (rc) {
        rc = dw.stopped ? 0 : rc;
        goto out;
    }
#ifdef HAVE_API
    struct webhook_transport wt;
    api_webhook_transport(&wt);
    core_set_webhook_transport(w.k, &wt);
#endif
    if (core_start(w.k)) {
        fprintf(stderr, "proxd: cannot start workers\n");
        rc = 1;
        goto out;
    }
#ifdef HAVE_API
    struct api *api = api_start(w.cfg, w.k, w.st, w.fl, listen_fd, aerr, sizeof aerr);
    if (!api) {
        fprintf(stderr, "proxd: %s\n", aerr);
        core_stop(w.k);
        rc = 1;
        goto out;
    }
#endif
    char shown[512];
    url_redact(w.cfg->database, shown, sizeof shown);
    log_info("proxd", "running with %d nodes, database %s", w.cfg->nnodes, shown);
    char status[640];
    snprintf(status, sizeof status, "running with %d nodes, database %s", w.cfg->nnodes, shown);
    svc_ready(status);
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0 || sig != SIGHUP)
            break;
        if (w.cfg->log_file[0] && open_log(w.cfg->log_file) == 0)
            log_info("proxd", "log file reopened");
    }
    log_info("proxd", "stopping: no new jobs; running steps reach their checkpoint");
    svc_stopping("stopping: no new jobs; running steps reach their checkpoint");
    struct stop_watch sw = {.k = w.k};
    pthread_t swt;
    bool watched = stop_watch_start(&sw, &swt);
#ifdef HAVE_API
    api_stop(api); /* first: no request may reach a stopping core */
    /* refused from now on, not left waiting in the backlog; systemd's
     * socket (proxd.socket) stays open: those wait for the next start */
    close(listen_fd);
    listen_fd = -1;
#endif
    core_stop(w.k);
    if (watched)
        stop_watch_end(&sw, swt);
out:
    if (listen_fd >= 0)
        close(listen_fd);
    close_world(&w);
    return rc;
}

/* The longest --wait: its milliseconds are far inside a long. */
#define WAIT_S_MAX INT32_MAX
/* Proxmox accepts VMIDs 100 .. 999999999. */
#define VMID_MIN 100
#define VMID_MAX 999999999

/* An option's whole decimal number in [min, max] into *out; else said,
 * naming the option, and false. (atoi took "four" for 0, which `vm set`
 * reads as "keep", "2m" for 2 and "100x" for 100.) */
static bool arg_num(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out)
{
    int64_t v;
    if (!parse_i64(s, &v) || v < min || v > max) {
        fprintf(stderr, "proxd: %s: '%.40s' is not a whole number from %lld to %lld\n", opt, s,
                (long long)min, (long long)max);
        return false;
    }
    *out = v;
    return true;
}

/* An option's text into dst (n bytes); else said, naming the option, and
 * false: cut to fit, a 70-character owner would be another owner. */
static bool arg_text(const char *opt, const char *s, char *dst, size_t n)
{
    size_t len = strlen(s);
    if (len >= n) {
        fprintf(stderr, "proxd: %s: longer than %zu bytes\n", opt, n - 1);
        return false;
    }
    memcpy(dst, s, len + 1);
    return true;
}

/* proxd create --from FILE|-: one process, one store, one inventory read */
static int create_from(const char *config, const char *from, bool json, long wait_s)
{
    bool std_in = strcmp(from, "-") == 0;
    FILE *in = std_in ? stdin : fopen(from, "r");
    if (!in) {
        fprintf(stderr, "proxd: --from: cannot open '%s': %s\n", from, strerror(errno));
        return 2;
    }
    struct world w;
    int rc = open_world_read(&w, config);
    if (rc)
        goto out;
    rc = create_batch(w.k, w.st, in, json, wait_s);
out:
    close_world(&w);
    if (!std_in)
        fclose(in);
    return rc;
}

static int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"os", 1, 0, 'o'},           {"name", 1, 0, 'n'},
        {"cores", 1, 0, 'C'},  {"memory", 1, 0, 'm'},       {"disk", 1, 0, 'd'},
        {"owner", 1, 0, 'u'},  {"ssh-key-file", 1, 0, 'k'}, {"wait", 1, 0, 'w'},
        {"from", 1, 0, 'F'},   {"json", 0, 0, 'j'},         {0, 0, 0, 0}};
    const char *config = NULL, *keyfile = NULL, *from = NULL;
    bool json = false, single = false;
    struct vm_request r = {.cores = 1, .memory_mb = 1024, .disk_gb = 10};
    int64_t wait_s = 0, cores = r.cores;
    bool ok = true;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'o':
            ok = arg_text("--os", optarg, r.os, sizeof r.os);
            break;
        case 'n':
            ok = arg_text("--name", optarg, r.name, sizeof r.name);
            break;
        case 'C': /* the limits ([limits]) are the creation's check */
            ok = arg_num("--cores", optarg, 0, INT_MAX, &cores);
            r.cores = (int)cores;
            break;
        case 'm':
            ok = arg_num("--memory", optarg, 0, INT64_MAX, &r.memory_mb);
            break;
        case 'd':
            ok = arg_num("--disk", optarg, 0, INT64_MAX, &r.disk_gb);
            break;
        case 'u':
            ok = arg_text("--owner", optarg, r.owner, sizeof r.owner);
            break;
        case 'k':
            keyfile = optarg;
            break;
        case 'w':
            ok = arg_num("--wait", optarg, 0, WAIT_S_MAX, &wait_s);
            break;
        case 'F':
            from = optarg;
            break;
        case 'j':
            json = true;
            break;
        default:
            usage(stderr);
            return 2;
        }
        if (!ok)
            return 2;
        single = single || !strchr("cwFj", c);
    }
    if (!config || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (from && single) {
        fprintf(stderr, "proxd: create --from takes every request from the file: no --os, "
                        "--name, --cores, --memory, --disk, --owner or --ssh-key-file with it\n");
        return 2;
    }
    if (from)
        return create_from(config, from, json, (long)wait_s);
    if (keyfile && !(r.ssh_keys = slurp(keyfile, 16384))) {
        fprintf(stderr, "proxd: ssh_keys: cannot read '%s' (or larger than 16 KiB)\n", keyfile);
        return 2;
    }
    struct world w;
    int rc = open_world_read(&w, config);
    if (rc)
        goto out;
    char job[40];
    int vmid;
    struct core_error ce;
    if (core_create(w.k, &r, job, &vmid, &ce)) {
        fprintf(stderr, "proxd: %s%s%s\n", ce.field, ce.field[0] ? ": " : "", ce.message);
        rc = ce.code == CORE_E_INVALID ? 2 : 1;
        goto out;
    }
    printf("{\"job\":\"%s\",\"vmid\":%d}\n", job, vmid);
    fflush(stdout);
    if (wait_s > 0) {
        enum job_state st;
        if (core_wait_job(w.k, job, wait_s * 1000, &st)) {
            fprintf(stderr, "proxd: job %s did not finish in %lld s\n", job, (long long)wait_s);
            rc = 3;
        } else {
            rc = st == JOB_DONE ? 0 : 1;
        }
    }
out:
    vm_request_release(&r);
    close_world(&w);
    return rc;
}

/* n texts made valid UTF-8 in place (a bad byte becomes '?'). */
static void scrub(char *const *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        jsonw_utf8_scrub(t[i], strlen(t[i]));
}

static int cmd_job(const char *config, const char *id)
{
    struct world w;
    int rc = open_world(&w, config, false);
    if (rc)
        goto out;
    struct job_rec j;
    struct store_error se;
    if (store_job_get(w.st, id, &j, &se)) {
        fprintf(stderr, "proxd: job %s: %s\n", id, se.message);
        rc = 1;
        goto out;
    }
    /* Texts from Proxmox or cut to fit may hold bytes that are not UTF-8:
     * json_pack refuses them (NULL: the record printed as null). */
    scrub((char *[]){j.kind, j.step, j.node, j.upid, j.error}, 5);
    json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:O,s:s}", "id", j.id, "kind", j.kind,
                          "state", job_state_name(j.state), "vmid", j.vmid, "step", j.step, "node",
                          j.node, "upid", j.upid, "progress", j.progress, "attempts",
                          j.attempts ? j.attempts : json_array(), "error", j.error);
    struct job_event *ev = NULL;
    size_t n = 0;
    json_t *evs = json_array();
    if (store_job_events(w.st, id, 0, &ev, &n, &se) == 0)
        for (size_t i = 0; i < n; i++) {
            scrub((char *[]){ev[i].step, ev[i].message}, 2);
            json_array_append_new(evs, json_pack("{s:I,s:s,s:i,s:s}", "ts", (json_int_t)ev[i].ts,
                                                 "step", ev[i].step, "progress", ev[i].progress,
                                                 "message", ev[i].message));
        }
    free(ev);
    json_object_set_new(o, "events", evs);
    char *s = json_dumps(o, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(o);
    job_rec_release(&j);
out:
    close_world(&w);
    return rc;
}

static int cmd_vms(const char *config)
{
    struct world w;
    int rc = open_world(&w, config, false);
    if (rc)
        goto out;
    json_t *a = json_array();
    struct vm_filter f = {.state = -1, .include_gone = true, .limit = 1000};
    for (;;) {
        struct vm_rec *v = NULL;
        size_t n = 0;
        struct store_error se;
        if (store_vm_list(w.st, &f, &v, &n, &se)) {
            fprintf(stderr, "proxd: %s\n", se.message);
            rc = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            /* else json_pack fails and the record is dropped */
            scrub((char *[]){v[i].os, v[i].name, v[i].owner, v[i].node, v[i].power, v[i].job,
                             v[i].error},
                  7);
            json_array_append_new(
                a, json_pack("{s:I,s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "id", (json_int_t)v[i].id,
                             "vmid", v[i].vmid, "os", v[i].os, "name", v[i].name, "owner",
                             v[i].owner, "node", v[i].node, "state", vm_state_name(v[i].state),
                             "power", v[i].power, "job", v[i].job, "error", v[i].error));
            f.after_id = v[i].id;
            vm_rec_release(&v[i]);
        }
        free(v);
        if (n == 0)
            break;
    }
    char *s = json_dumps(a, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(a);
out:
    close_world(&w);
    return rc;
}

/* An administrator's VM operation, queued like any request; --wait S as the
 * last two arguments waits for the job (the daemon must be running). */
static int cmd_vm(int argc, char **argv)
{
    int64_t wait_s = 0, vmid = 0, n1 = 0, n2 = 0;
    if (argc >= 2 && strcmp(argv[argc - 2], "--wait") == 0) {
        if (!arg_num("--wait", argv[argc - 1], 0, WAIT_S_MAX, &wait_s))
            return 2;
        argc -= 2;
    }
    if (argc < 5 || strcmp(argv[1], "--config") != 0) {
        usage(stderr);
        return 2;
    }
    const char *op = argv[4];
    int a = vm_action_parse(op);
    bool del = strcmp(op, "delete") == 0, resize = strcmp(op, "resize") == 0,
         set = strcmp(op, "set") == 0;
    /* every argument read before anything is queued: a word where a number
     * belongs is refused, not taken as 0 ("set four 4096": cores kept) */
    if (argc != ((a >= 0 || del) ? 5 : resize ? 6 : set ? 7 : 0)) {
        usage(stderr);
        return 2;
    }
    if (!arg_num("VMID", argv[3], VMID_MIN, VMID_MAX, &vmid) ||
        (resize && !arg_num("GB", argv[5], 1, INT64_MAX, &n1)) ||
        (set && (!arg_num("CORES", argv[5], 0, INT_MAX, &n1) ||
                 !arg_num("MEMORY_MB", argv[6], 0, INT64_MAX, &n2))))
        return 2;
    struct world w;
    int rc = open_world(&w, argv[2], true);
    if (rc)
        goto out;
    char job[40];
    struct core_error ce = {0};
    if (a >= 0) {
        struct action_opts o = {.timeout_s = 0, .force = false};
        rc = core_vm_action(w.k, (int)vmid, NULL, (enum vm_action)a, &o, job, &ce);
    } else if (del) {
        rc = core_vm_delete(w.k, (int)vmid, NULL, job, &ce);
    } else if (resize) {
        rc = core_vm_resize(w.k, (int)vmid, NULL, n1, job, &ce);
    } else {
        rc = core_vm_update(w.k, (int)vmid, NULL, (int)n1, n2, job, &ce);
    }
    if (rc) {
        fprintf(stderr, "proxd: %s%s%s\n", ce.field, ce.field[0] ? ": " : "", ce.message);
        rc = ce.code == CORE_E_INVALID ? 2 : 1;
        goto out;
    }
    printf("{\"job\":\"%s\",\"vmid\":%lld}\n", job, (long long)vmid);
    fflush(stdout);
    if (wait_s > 0) {
        enum job_state st;
        rc = core_wait_job(w.k, job, wait_s * 1000, &st) ? 3 : st == JOB_DONE ? 0 : 1;
    }
out:
    close_world(&w);
    return rc;
}

#ifdef HAVE_API
static int token_create(struct world *w, const char *owner, const char *role)
{
    unsigned char key[AUTH_KEY_BYTES];
    char err[512], token[AUTH_TOKEN_MAX];
    struct token_rec rec;
    if (auth_init(w->st, key, err, sizeof err) ||
        auth_token_create(w->st, key, owner, role, token, &rec, err, sizeof err)) {
        fprintf(stderr, "proxd: %s\n", err);
        return 1;
    }
    printf("%s\n", token);
    fprintf(stderr, "token %s for %s (%s): shown once, store it now\n", rec.id, rec.owner,
            rec.role);
    return 0;
}

static int token_list(struct world *w)
{
    struct token_rec *t = NULL;
    size_t n = 0;
    struct store_error se;
    if (store_token_list(w->st, &t, &n, &se)) {
        fprintf(stderr, "proxd: %s\n", se.message);
        return 1;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:I,s:b}", "id", t[i].id, "owner",
                                           t[i].owner, "role", t[i].role, "created_at",
                                           (json_int_t)t[i].created_at, "revoked", t[i].revoked));
    free(t);
    char *s = json_dumps(a, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(a);
    return 0;
}

/* proxd token create|list|revoke --config FILE ... */
static int cmd_token(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"owner", 1, 0, 'u'}, {"role", 1, 0, 'r'}, {0, 0, 0, 0}};
    const char *config = NULL, *owner = NULL, *role = "user";
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *verb = argv[1];
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'u':
            owner = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    bool create = strcmp(verb, "create") == 0, list = strcmp(verb, "list") == 0,
         revoke = strcmp(verb, "revoke") == 0;
    if (!config || !(create || list || revoke) || (create && !owner) ||
        (revoke && optind != argc - 1) || (!revoke && optind != argc)) {
        usage(stderr);
        return 2;
    }
    struct world w;
    int rc = open_world(&w, config, false);
    if (rc)
        goto out;
    if (create) {
        rc = token_create(&w, owner, role);
    } else if (list) {
        rc = token_list(&w);
    } else {
        struct store_error se;
        if ((rc = store_token_revoke(w.st, argv[optind], &se) ? 1 : 0))
            fprintf(stderr, "proxd: %s\n", se.message);
    }
out:
    close_world(&w);
    return rc;
}
#endif

#ifdef HAVE_API
/* The admin view of the pools (GET /v1/ippools as an admin sees it, less
 * the conflicts, which only a running proxd's config walk knows). */
static int cmd_ippools(const char *config)
{
    struct world w;
    int rc = open_world(&w, config, false);
    if (rc)
        goto out;
    json_t *a = json_array();
    for (int i = 0; i < w.cfg->npools && !rc; i++) {
        const struct cfg_ippool *p = &w.cfg->pools[i];
        struct ippool_figures f;
        struct store_error se;
        if (ippool_view_figures(w.st, p, &f, &se)) {
            fprintf(stderr, "proxd: pool %s: %s\n", p->name, se.message);
            rc = 1;
            break;
        }
        char cidr[IPPOOL_NETSTRLEN];
        ippool_net_format(&p->plan.net, cidr);
        json_array_append_new(
            a, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "name", p->name, "cidr", cidr,
                         "size", (json_int_t)(f.size > INT64_MAX ? INT64_MAX : f.size), "used",
                         (json_int_t)f.c.used, "reserved", (json_int_t)f.c.reserved, "quarantined",
                         (json_int_t)f.c.quarantined, "held", (json_int_t)f.c.held, "foreign",
                         (json_int_t)f.foreign, "free",
                         (json_int_t)(f.free > INT64_MAX ? INT64_MAX : f.free)));
    }
    char *s = json_dumps(a, JSON_INDENT(2));
    if (!rc)
        printf("%s\n", s);
    free(s);
    json_decref(a);
out:
    close_world(&w);
    return rc;
}
#endif

/* proxd uncordon: lift a configuration's cordon of a node whichever
 * configurations hold it (one retired for good cannot start again to lift
 * it; the API refuses to). */
static int cmd_uncordon(const char *path, const char *node)
{
    struct world w;
    int rc = open_world(&w, path, true);
    if (!rc) {
        struct core_error ce;
        char drain[40] = "";
        if (core_node_cordon_release(w.k, node, "proxd uncordon", drain, &ce)) {
            fprintf(stderr, "proxd: %s\n", ce.message);
            rc = 1;
        } else {
            struct node_cordon nc;
            core_node_cordon_get(w.k, node, &nc);
            if (nc.cordoned)
                printf("%s: the configurations' cordon is lifted; still cordoned by %s (the "
                       "API's)\n",
                       node, nc.by);
            else
                printf("%s: uncordoned\n", node);
            if (drain[0])
                printf("%s: its drain (job %s) was cancelled\n", node, drain);
        }
    }
    close_world(&w);
    return rc;
}

int main(int argc, char **argv)
{
    mem_tune(); /* before any thread: see common/mem.c */
    signal(SIGPIPE, SIG_IGN);
    pve_global_init();
#ifdef HAVE_API
    if (argc >= 2 && strcmp(argv[1], "token") == 0)
        return cmd_token(argc - 1, argv + 1);
#endif
    if (argc >= 2 && strcmp(argv[1], "create") == 0)
        return cmd_create(argc - 1, argv + 1);
    if (argc == 5 && strcmp(argv[1], "job") == 0 && strcmp(argv[2], "--config") == 0)
        return cmd_job(argv[3], argv[4]);
    if (argc >= 2 && strcmp(argv[1], "vm") == 0)
        return cmd_vm(argc - 1, argv + 1);
    if (argc == 4 && strcmp(argv[1], "reconcile") == 0 && strcmp(argv[2], "--config") == 0) {
        struct world w;
        int rc = open_world(&w, argv[3], true);
        if (!rc) {
            struct reconcile_report r;
            rc = core_reconcile(w.k, &r) ? 1 : 0;
            if (w.cfg->npools && core_net_walk(w.k)) {
                fprintf(stderr, "proxd: the config walk could not read every VM\n");
                rc = 1; /* a pass that did not see everything is not a clean one */
            }
            printf("{\"moved\":%d,\"power\":%d,\"resized\":%d,\"lost\":%d,\"hidden\":%d,"
                   "\"stuck\":%d,\"partial_removed\":%d,\"orphans\":%d,\"orphans_deleted\":%d,"
                   "\"unmanaged\":%d,\"unmanaged_released\":%d,\"foreign_released\":%d}\n",
                   r.moved, r.power, r.resized, r.lost, r.hidden, r.stuck, r.partial_removed,
                   r.orphans, r.orphans_deleted, r.unmanaged, r.unmanaged_released,
                   r.foreign_released);
        }
        close_world(&w);
        return rc;
    }
    if (argc == 4 && strcmp(argv[1], "vms") == 0 && strcmp(argv[2], "--config") == 0)
        return cmd_vms(argv[3]);
    if (argc == 5 && strcmp(argv[1], "uncordon") == 0 && strcmp(argv[2], "--config") == 0)
        return cmd_uncordon(argv[3], argv[4]);
#ifdef HAVE_API
    if (argc == 4 && strcmp(argv[1], "ippools") == 0 && strcmp(argv[2], "--config") == 0)
        return cmd_ippools(argv[3]);
#endif
    if (argc == 3 && strcmp(argv[1], "--check-config") == 0) {
        struct proxd_config *c = load(argv[2]);
        if (!c)
            return 1;
        printf("%s: configuration OK (%d nodes, %d OS)\n", argv[2], c->nnodes, c->nos);
        config_free(c);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--config") == 0)
        return run_daemon(argv[2]);
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
