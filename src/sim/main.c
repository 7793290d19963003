/* pvesim: a Proxmox VE API simulator for a fleet of nodes.
 *
 * Cluster mode (default): --listen is the cluster's entry point (think of a
 * VIP in front of the cluster); it never goes down and proxies /nodes/<n>/...
 * to node n. Node i (1-based) also answers on port+i, as itself.
 * Standalone mode: node i is its own PVE host on port+i-1 (sv1 on --listen),
 * each with its own VMID space; port+N is a control-only listener.
 * See the README for the /_sim/ control API. */
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/auth.h"
#include "sim/perm.h"
#include "sim/sim.h"

#include <getopt.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <pcre2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *sim_listener_ctx_new(struct sim *s, struct sim_node *n);

static volatile sig_atomic_t g_stop;

/* The first SIGTERM or SIGINT stops pvesim cleanly (its state saved); a
 * second Ctrl-C, during a long start-up (a state of 100,000 VMs), ends it
 * at once. */
static void on_signal(int sig)
{
    if (g_stop && sig == SIGINT) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pvesim [options]\n"
               "  --listen HOST:PORT      entry point (default 127.0.0.1:8006)\n"
               "  --nodes a,b,c           node names (default sv1,sv2,sv3,sv4,sv5)\n"
               "  --fleet FILE            JSON fleet description (nodes, storages, templates)\n"
               "  --standalone            every node is its own PVE host on its own port\n"
               "  --password PW           password of root@pam (ticket login)\n"
               "  --token ID=SECRET       an API token, e.g. 'root@pam!ci=<uuid>' (repeatable)\n"
               "  --token-privsep ID      that token has privilege separation: its own ACL\n"
               "                          entries, intersected with its user's (repeatable)\n"
               "  --acl PATH:UGID:ROLE[,ROLE...][:nopropagate]\n"
               "                          an ACL entry for a user, token id or @group\n"
               "                          (repeatable); without any (and none set through\n"
               "                          PUT /access/acl) every user and token may do\n"
               "                          everything (open mode)\n"
               "  --role NAME:PRIV[,PRIV...]  a custom role (repeatable)\n"
               "  --group NAME[:USER[,USER...]]  a group and its members (repeatable)\n"
               "  --pve-version 7|8|9     behaviour and schema to serve (default 9: 9.1.3;\n"
               "                          8: 8.4.2; 7: 8.4.2 schema with PVE 7.4 behaviour)\n"
               "  --schema FILE           an apidoc JSON (full or compact) instead of the\n"
               "                          bundled data (share/pve-apidoc/pve-VERSION.schema.json)\n"
               "  --time-scale F          real seconds per simulated second (default 1)\n"
               "  --auth-delay SECONDS    delay of 401 answers (default 3)\n"
               "  --ticket-lifetime SECS  ticket validity (default 7200)\n"
               "  --state-dir DIR         keep the state in DIR/state.json across restarts;\n"
               "                          once the ACL, roles or groups were changed through\n"
               "                          the API, the saved ones, not --acl, --role and\n"
               "                          --group, hold there\n"
               "  --tls-cert FILE --tls-key FILE   serve this certificate (PEM)\n"
               "  --ticket-key FILE       sign tickets with this RSA private key (PEM, 2048 to\n"
               "                          4096 bits; default: one made at start)\n"
               "  --check-returns         log every result that does not match the schema\n"
               "  --seed N                seed of the random numbers (fault rates, MACs;\n"
               "                          default: the clock)\n"
               "  --pvestatd-cycle S      stats in /cluster/resources and GET /nodes as of\n"
               "                          pvestatd's last report, every S seconds (real PVE:\n"
               "                          10; default 0: live)\n"
               "  --log-level LEVEL       debug, info, warn, error (default info)\n");
}

static char *read_file(const char *path, char **err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err = xasprintf("cannot open '%s'", path);
        return NULL;
    }
    struct buf b = BUF_INIT(1 << 20);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (buf_add(&b, tmp, n)) {
            *err = xasprintf("'%s' is larger than 1 MiB", path);
            fclose(f);
            buf_release(&b);
            return NULL;
        }
    }
    fclose(f);
    return buf_take(&b);
}

/* The bundled compact schema (data/pve-apidoc, made by scripts/gen-apidoc.py):
 * $PVESIM_SCHEMA_DIR, beside the binary (build/share), installed
 * (PREFIX/share/pvesim), then the source tree it was built from. */
static char *schema_path(struct sim *s)
{
    if (s->o.schema_path)
        return xstrdup(s->o.schema_path);
    const char *file = s->o.pve_version >= 9 ? "pve-9.1.3.schema.json" : "pve-8.4.2.schema.json";
    const char *env = getenv("PVESIM_SCHEMA_DIR");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *cands[4] = {NULL, NULL, NULL, NULL};
    if (env)
        cands[0] = xasprintf("%s/%s", env, file);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        cands[1] = xasprintf("%s/share/pve-apidoc/%s", exe, file);
        cands[2] = xasprintf("%s/../share/pvesim/pve-apidoc/%s", exe, file); /* installed */
    }
    cands[3] = xasprintf("%s/%s", SCHEMA_DIR_DEFAULT, file);
    char *found = NULL;
    for (int i = 0; i < 4; i++) {
        if (!found && cands[i] && access(cands[i], R_OK) == 0)
            found = cands[i];
        else
            free(cands[i]);
    }
    return found ? found : xasprintf("%s/%s", SCHEMA_DIR_DEFAULT, file);
}

/* An option's number: the whole text, finite (strtod takes "nan" and
 * "inf", which pass any range check written as comparisons). */
static bool parse_real(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* An option's integer in [lo, hi]: the whole text (atoi took "8.4" as 8). */
static bool parse_int(const char *text, int lo, int hi, int *out)
{
    int64_t v;
    if (!parse_i64(text, &v) || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static int parse_args(struct sim *s, int argc, char **argv)
{
    enum {
        O_LISTEN = 1,
        O_NODES,
        O_FLEET,
        O_STANDALONE,
        O_PASSWORD,
        O_TOKEN,
        O_VERSION,
        O_SCHEMA,
        O_SCALE,
        O_AUTHDELAY,
        O_LIFETIME,
        O_STATEDIR,
        O_CERT,
        O_KEY,
        O_TICKETKEY,
        O_CHECK,
        O_SEED,
        O_PVESTATD,
        O_LOGLEVEL,
        O_ACL,
        O_ROLE,
        O_GROUP,
        O_PRIVSEP,
        O_HELP
    };
    static const struct option opts[] = {{"listen", 1, 0, O_LISTEN},
                                         {"nodes", 1, 0, O_NODES},
                                         {"fleet", 1, 0, O_FLEET},
                                         {"standalone", 0, 0, O_STANDALONE},
                                         {"password", 1, 0, O_PASSWORD},
                                         {"token", 1, 0, O_TOKEN},
                                         {"token-privsep", 1, 0, O_PRIVSEP},
                                         {"acl", 1, 0, O_ACL},
                                         {"role", 1, 0, O_ROLE},
                                         {"group", 1, 0, O_GROUP},
                                         {"pve-version", 1, 0, O_VERSION},
                                         {"schema", 1, 0, O_SCHEMA},
                                         {"time-scale", 1, 0, O_SCALE},
                                         {"auth-delay", 1, 0, O_AUTHDELAY},
                                         {"ticket-lifetime", 1, 0, O_LIFETIME},
                                         {"state-dir", 1, 0, O_STATEDIR},
                                         {"tls-cert", 1, 0, O_CERT},
                                         {"tls-key", 1, 0, O_KEY},
                                         {"ticket-key", 1, 0, O_TICKETKEY},
                                         {"check-returns", 0, 0, O_CHECK},
                                         {"seed", 1, 0, O_SEED},
                                         {"pvestatd-cycle", 1, 0, O_PVESTATD},
                                         {"log-level", 1, 0, O_LOGLEVEL},
                                         {"help", 0, 0, O_HELP},
                                         {0, 0, 0, 0}};
    struct sim_opts *o = &s->o;
    o->listen = "127.0.0.1:8006";
    o->pve_version = 9;
    o->time_scale = 1.0;
    o->auth_delay = 3.0;
    o->ticket_lifetime = 7200;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            o->listen = optarg;
            break;
        case O_NODES:
            o->nodes_csv = optarg;
            break;
        case O_FLEET:
            o->fleet_file = optarg;
            break;
        case O_STANDALONE:
            o->standalone = true;
            break;
        case O_PASSWORD:
            o->password = optarg;
            break;
        case O_TOKEN:
            if (o->ntokens >= SIM_MAX_TOKENS) {
                fprintf(stderr, "pvesim: at most %d --token options\n", SIM_MAX_TOKENS);
                return -1;
            }
            o->tokens[o->ntokens++] = optarg;
            break;
        case O_ACL:
        case O_ROLE:
        case O_GROUP:
        case O_PRIVSEP: {
            char **arr = c == O_ACL     ? o->acls
                         : c == O_ROLE  ? o->roles
                         : c == O_GROUP ? o->groups
                                        : o->privsep;
            int *n = c == O_ACL     ? &o->nacls
                     : c == O_ROLE  ? &o->nroles
                     : c == O_GROUP ? &o->ngroups
                                    : &o->nprivsep;
            if (*n >= SIM_MAX_ACL_OPTS) {
                fprintf(stderr, "pvesim: at most %d --%s options\n", SIM_MAX_ACL_OPTS,
                        c == O_ACL     ? "acl"
                        : c == O_ROLE  ? "role"
                        : c == O_GROUP ? "group"
                                       : "token-privsep");
                return -1;
            }
            arr[(*n)++] = optarg;
            break;
        }
        case O_VERSION:
            if (!parse_int(optarg, 7, 9, &o->pve_version)) {
                fprintf(stderr, "pvesim: --pve-version must be 7, 8 or 9\n");
                return -1;
            }
            break;
        case O_SCHEMA:
            o->schema_path = optarg;
            break;
        case O_SCALE:
            if (!parse_real(optarg, &o->time_scale) || o->time_scale <= 0 || o->time_scale > 100) {
                fprintf(stderr, "pvesim: --time-scale must be a number in (0, 100]\n");
                return -1;
            }
            break;
        case O_AUTHDELAY:
            if (!parse_real(optarg, &o->auth_delay) || o->auth_delay < 0 || o->auth_delay > 60) {
                fprintf(stderr, "pvesim: --auth-delay must be 0..60 seconds\n");
                return -1;
            }
            break;
        case O_SEED: {
            /* digits only (strtoull takes a sign and spaces), and no
             * overflow: strtoull would make it ULLONG_MAX silently */
            errno = 0;
            unsigned long long seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg || strspn(optarg, "0123456789") != strlen(optarg) ||
                errno == ERANGE) {
                fprintf(stderr, "pvesim: --seed must be an integer from 0 to %llu, not '%s'\n",
                        ULLONG_MAX, optarg);
                return -1;
            }
            o->seed = seed;
            o->seeded = true;
            break;
        }
        case O_PVESTATD:
            if (!parse_real(optarg, &o->pvestatd_cycle) || o->pvestatd_cycle < 0 ||
                o->pvestatd_cycle > 3600) {
                fprintf(stderr, "pvesim: --pvestatd-cycle must be 0..3600 seconds\n");
                return -1;
            }
            break;
        case O_LIFETIME:
            if (!parse_int(optarg, 1, INT_MAX, &o->ticket_lifetime)) {
                fprintf(stderr, "pvesim: --ticket-lifetime must be a positive integer (seconds)\n");
                return -1;
            }
            break;
        case O_STATEDIR:
            o->state_dir = optarg;
            break;
        case O_CERT:
            o->tls_cert = optarg;
            break;
        case O_KEY:
            o->tls_key = optarg;
            break;
        case O_TICKETKEY:
            o->ticket_key = optarg;
            break;
        case O_CHECK:
            o->check_returns = true;
            break;
        case O_LOGLEVEL: {
            int l = log_level_parse(optarg);
            if (l < 0) {
                fprintf(stderr, "pvesim: --log-level: debug, info, warn or error\n");
                return -1;
            }
            log_set_level((enum log_level)l);
            break;
        }
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pvesim: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!!o->tls_cert != !!o->tls_key) {
        fprintf(stderr, "pvesim: --tls-cert and --tls-key go together\n");
        return -1;
    }
    return 0;
}

/* "host:port" -> host part and port; IPv6 as "[::1]:8006". */
static int split_hostport(const char *hp, char *host, size_t hl, int *port)
{
    const char *colon = strrchr(hp, ':');
    if (!colon)
        return -1;
    int64_t p;
    if (!parse_i64(colon + 1, &p) || p < 0 || p > 65535)
        return -1;
    snprintf(host, hl, "%.*s", (int)(colon - hp), hp);
    *port = (int)p;
    return 0;
}

static int open_listeners(struct sim *s, char **err)
{
    char host[256];
    int port;
    if (split_hostport(s->o.listen, host, sizeof host, &port)) {
        *err = xasprintf("--listen: expected HOST:PORT, got '%s'", s->o.listen);
        return -1;
    }
    char addr[300];
    int bound;
    int base = port;
    if (!s->o.standalone) {
        s->gw_listener =
            httpd_listen(s->http, s->o.listen, sim_listener_ctx_new(s, NULL), &bound, err);
        if (s->gw_listener < 0)
            return -1;
        base = bound + 1;
    }
    for (int i = 0; i < s->nnodes; i++) {
        struct sim_node *n = &s->nodes[i];
        snprintf(addr, sizeof addr, "%s:%d", host, port == 0 ? 0 : base + i);
        n->listener = httpd_listen(s->http, addr, sim_listener_ctx_new(s, n), &n->port, err);
        if (n->listener < 0)
            return -1;
        if (s->o.standalone && i == 0 && port == 0)
            base = n->port;
    }
    if (s->o.standalone) {
        snprintf(addr, sizeof addr, "%s:%d", host, port == 0 ? 0 : base + s->nnodes);
        s->gw_listener = httpd_listen(s->http, addr, sim_listener_ctx_new(s, NULL), &bound, err);
        if (s->gw_listener < 0)
            return -1;
        printf("control %s:%d\n", host, bound);
    } else {
        printf("cluster %s:%d\n", host, base - 1);
    }
    for (int i = 0; i < s->nnodes; i++)
        printf("node %s %s:%d\n", s->nodes[i].name, host, s->nodes[i].port);
    printf("fingerprint %s\n", s->fingerprint);
    fflush(stdout);
    return 0;
}

static int setup_tls(struct sim *s, char **err)
{
    if (s->o.tls_cert) {
        if (!(s->cert_pem = read_file(s->o.tls_cert, err)) ||
            !(s->key_pem = read_file(s->o.tls_key, err)))
            return -1;
    } else if (tls_selfsigned(s->nnodes ? s->nodes[0].name : "pvesim", &s->cert_pem, &s->key_pem,
                              err)) {
        return -1;
    }
    s->fingerprint = tls_fingerprint(s->cert_pem);
    if (!s->fingerprint) {
        *err = xstrdup("cannot compute the certificate's fingerprint");
        return -1;
    }
    return 0;
}

/* Free the world, so that leak checkers see a clean exit. */
static void sim_free(struct sim *s)
{
    sim_history_free(s);
    while (s->vms)
        sim_vm_unlink(s, s->vms);
    sim_cts_free(s);
    sim_rrd_clear(s);
    free(s->vm_index);
    for (size_t i = 0; i < sizeof s->res_cache / sizeof *s->res_cache; i++)
        sim_blob_release(s->res_cache[i].body);
    sim_tasks_clear(s);
    while (s->faults) {
        struct sim_fault *f = s->faults;
        s->faults = f->next;
        pcre2_code_free(f->re);
        free(f->pattern);
        free(f->message);
        free(f);
    }
    json_decref(s->calls);
    json_decref(s->vol_sizes);
    json_decref(s->node_calls);
    json_decref(s->violations);
    json_decref(s->big_checks);
    json_decref(s->rejections);
    schema_free(s->sch);
    auth_free(s->auth);
    perm_free(s->perm);
    free(s->cert_pem);
    free(s->key_pem);
    free(s->fingerprint);
    for (int i = 0; i < s->nlctx; i++)
        free(s->lctx[i]);
    free(s);
}

static int setup_auth(struct sim *s, char **err)
{
    char *pem = NULL;
    if (s->o.ticket_key && !(pem = read_file(s->o.ticket_key, err)))
        return -1;
    s->auth = auth_new(s->o.ticket_lifetime, pem);
    free(pem);
    if (!s->auth) {
        *err = xasprintf("--ticket-key %s: not an RSA private key of 2048 to 4096 bits (PEM)",
                         s->o.ticket_key);
        return -1;
    }
    if (s->o.password)
        auth_add_user(s->auth, "root@pam", s->o.password);
    for (int i = 0; i < s->o.ntokens; i++)
        if (auth_add_token(s->auth, s->o.tokens[i]))
            log_warn("sim", "ignoring malformed --token (expected USER@REALM!NAME=SECRET)");
    if (!s->o.password && !s->o.ntokens)
        log_warn("sim", "no --password and no --token: no client can authenticate");
    return 0;
}

/* The node certificate and the ticket key are RSA keys: generating them
 * (0.1 to 1 s each, at random; not when given as files, --tls-cert/--tls-key
 * and --ticket-key) runs beside the state load, not before it. */
struct keys_job {
    struct sim *s;
    char *err;
    int rc;
};

static void *keys_main(void *arg)
{
    struct keys_job *j = arg;
    j->rc = setup_tls(j->s, &j->err);
    if (!j->rc)
        j->rc = setup_auth(j->s, &j->err);
    return NULL;
}

int main(int argc, char **argv)
{
    struct sim *s = xcalloc(1, sizeof *s);
    s->rrd.cycle = -1; /* the first advance reports the fleet as it starts */
    char *err = NULL;
    int rc = 1;
    bool keys_started = false;
    signal(SIGPIPE, SIG_IGN);
    /* Before anything: the port map is printed before the engine starts,
     * and a caller may stop pvesim as soon as it has read it; a stop asked
     * during start-up ends it cleanly (its state saved) once it has started.
     * SA_RESTART: start-up's reads and writes are not cut short by it. */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Big answers (a fleet's /cluster/resources is 27 MB at 100,000 VMs)
     * always get their own mapping, given back when freed: glibc would
     * otherwise raise its threshold after the first and keep such buffers
     * in each connection thread's arena. Below 8 MiB (10,000 VMs: 2.8 MB)
     * the arenas keep them: a fresh mapping per answer costs 30 % more CPU
     * in page faults, and what the arenas keep is bounded by connections
     * times answer size. */
    mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024);
    if (parse_args(s, argc, argv)) {
        free(s); /* nothing else is made yet: a leak checker's exit status would hide the 2 */
        return 2;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->apply_mu, NULL);
    cond_init_mono(&s->cv);
    cond_init_mono(&s->started_cv);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->t_origin = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    s->rng =
        ((s->o.seeded ? (uint64_t)s->o.seed + 1 : (uint64_t)wall_ms()) * 0x9E3779B97F4A7C15ULL) | 1;
    s->calls = json_object();
    s->node_calls = json_object();
    s->violations = json_array();
    s->big_checks = json_object();
    s->rejections = json_array();
    s->pools = json_object();
    char *sp = schema_path(s);
    s->sch = schema_load(sp, &err);
    if (!s->sch) {
        fprintf(stderr, "pvesim: cannot load the API schema %s: %s\n", sp, err ? err : "");
        free(sp);
        goto out;
    }
    free(sp);
    if (sim_build_fleet(s, &err) || !(s->perm = sim_perm_setup(s, &err)))
        goto fail;
    struct keys_job kj = {.s = s};
    pthread_t kt;
    if (pthread_create(&kt, NULL, keys_main, &kj))
        keys_main(&kj);
    else
        keys_started = true;
    if (s->o.state_dir) {
        mkdir(s->o.state_dir, 0755);
        char *p = xasprintf("%s/state.json", s->o.state_dir);
        if (access(p, R_OK) == 0) {
            if (sim_state_load(s, p, &err)) {
                free(p);
                goto fail;
            }
            s->dirty = false; /* the file holds what we just read */
        }
        free(p);
    }
    if (keys_started)
        pthread_join(kt, NULL);
    keys_started = false;
    if (kj.rc) {
        err = kj.err;
        goto fail;
    }
    s->http = httpd_new(sim_http_handler, s, s->cert_pem, s->key_pem, &err);
    if (!s->http || open_listeners(s, &err))
        goto fail;
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i].state != NODE_ONLINE)
            sim_node_apply(s, &s->nodes[i]);
    if (sim_engine_start(s))
        goto fail;
    log_info("sim", "pvesim serving %d nodes (%s, PVE %d, time scale %g)", s->nnodes,
             s->o.standalone ? "standalone" : "cluster", s->o.pve_version, s->o.time_scale);
    while (!g_stop)
        sleep_ms(50);
    log_info("sim", "stopping");
    httpd_free(s->http);
    sim_late_drain(s); /* no request comes any more; before the engine, which may free a lock */
    sim_engine_stop(s);
    if (s->o.state_dir) {
        char *p = xasprintf("%s/state.json", s->o.state_dir);
        sim_state_save(s, p);
        free(p);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "pvesim: %s\n", err ? err : "start-up failed");
out:
    free(err);
    if (rc == 0)
        sim_free(s);
    return rc;
}
