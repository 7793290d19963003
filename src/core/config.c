/* config: load and validate proxd.conf (see config.h and
 * docs/proxd.conf.example).
 *
 * Three stages:
 *   1. read_line(), the line reader we hand to libinih, sees every physical
 *      line first. It counts lines (Debian's libinih is built without
 *      INI_HANDLER_LINENO, so the key handler never learns its line), strips
 *      comments, catches lines libinih would silently truncate, rejects what
 *      is not "[section]" or "key = value", and notes where sections start.
 *   2. on_key() looks the key up in keys[], the one table that knows every
 *      option (section, type, field, default, bounds, validator), and stores
 *      the value. Defaults are set through the same table and setters.
 *   3. check_*() do what no single key can: required keys, credentials,
 *      overlapping VMID ranges, templates, shared endpoints.
 * Every stage records errors and carries on, so one run reports them all. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/config_int.h"
#include "core/config_ippool.h"

#define VMID_MIN 100       /* PVE reserves 0-99 */
#define VMID_MAX 999999999 /* PVE's upper bound */
#define ERRS_MAX 200       /* then stop: the file is probably not a config at all */

/* ---- the key table --------------------------------------------------- */

enum sect {
    S_NONE,
    S_PROXD,
    S_PROXMOX,
    S_LIMITS,
    S_OS,
    S_NODE,
    S_QUOTA,
    S_IPPOOL,
    S_SNAP,
    S_EVENTS,
    S_JOBS,
    S_WEBHOOK,
    S_SKIP
};

static const struct {
    const char *name;
    bool named; /* "[node NAME]" rather than "[proxd]" */
} sect_info[] = {
    [S_NONE] = {"", false},         [S_PROXD] = {"proxd", false},  [S_PROXMOX] = {"proxmox", false},
    [S_LIMITS] = {"limits", false}, [S_OS] = {"os", true},         [S_NODE] = {"node", true},
    [S_QUOTA] = {"quota", true},    [S_IPPOOL] = {"ippool", true}, [S_SNAP] = {"snapshots", false},
    [S_EVENTS] = {"events", false}, [S_JOBS] = {"jobs", false},    [S_WEBHOOK] = {"webhook", true},
    [S_SKIP] = {"", false},
};

enum ktype {
    K_STR,       /* bounded copy; size = field size */
    K_NUM,       /* int or int64_t (size tells which), within [min, max] */
    K_BOOL,      /* yes/no true/false on/off 1/0 */
    K_RANGE,     /* "lo-hi" into two ints at off and off2 */
    K_PLACEMENT, /* ordered | spread */
    K_HOSTS,     /* "host[:port], ..." into cfg_node.hosts */
    K_TEMPLATE,  /* "template.<os> = VMID" into cfg_node.templates */
    K_FUNC,      /* parsed by key_def.set (config_ippool.c) */
};

enum kflags {
    F_REQUIRED = 1 << 0, /* the section is incomplete without it */
};

/* Extra check of a value; false with the reason in why. */
typedef bool (*validator)(const char *v, char *why, size_t whylen);

struct key_def {
    enum sect sect;
    const char *key; /* for K_TEMPLATE a prefix: "template." */
    enum ktype type;
    size_t off;      /* offset of the field in the section's struct */
    size_t off2;     /* K_STR, K_NUM: the field's size; K_RANGE: offset of hi */
    const char *def; /* default, as one would write it in the file; NULL: none */
    int64_t min, max;
    validator check;
    unsigned flags;
    bool (*set)(void *base, const char *v, char *why, size_t n); /* K_FUNC */
};

#define FSIZE(T, f) sizeof(((T *)0)->f)
#define KSTR(s, T, k, f, def, chk, fl)                                                             \
    {                                                                                              \
        s, k, K_STR, offsetof(T, f), FSIZE(T, f), def, 0, 0, chk, fl, NULL                         \
    }
#define KNUM(s, T, k, f, def, lo, hi)                                                              \
    {                                                                                              \
        s, k, K_NUM, offsetof(T, f), FSIZE(T, f), def, lo, hi, NULL, 0, NULL                       \
    }
#define KBOOL(s, T, k, f, def)                                                                     \
    {                                                                                              \
        s, k, K_BOOL, offsetof(T, f), 0, def, 0, 0, NULL, 0, NULL                                  \
    }
#define KRANGE(s, T, k, lo, hi, def, fl)                                                           \
    {                                                                                              \
        s, k, K_RANGE, offsetof(T, lo), offsetof(T, hi), def, VMID_MIN, VMID_MAX, NULL, fl, NULL   \
    }

#define KFUNC(s, k, fn, fl)                                                                        \
    {                                                                                              \
        s, k, K_FUNC, 0, 0, NULL, 0, 0, NULL, fl, fn                                               \
    }

#define PC struct proxd_config
#define NODE struct cfg_node
#define OS struct cfg_os
#define QUOTA struct cfg_quota
#define POOL struct cfg_ippool
#define HOOK struct cfg_webhook

/* Every option, in the order of docs/proxd.conf.example. Durations are
 * seconds and sizes carry their unit in the key name, so values are plain
 * integers. Keep the example and config.h's comments in step with this. */
static const struct key_def keys[] = {
    KSTR(S_PROXD, PC, "listen", listen, "127.0.0.1:8080", cfg_v_listen, 0),
    KSTR(S_PROXD, PC, "database", database, "sqlite:/var/lib/proxd/proxd.db", cfg_v_database, 0),
    {S_PROXD, "placement", K_PLACEMENT, offsetof(PC, placement), 0, "spread", 0, 0, NULL, 0, NULL},
    KNUM(S_PROXD, PC, "workers", workers, "0", 0, 256),
    KNUM(S_PROXD, PC, "job_lease", job_lease_s, "30", 3, 3600),
    KNUM(S_PROXD, PC, "reconcile_interval", reconcile_interval_s, "60", 1, 86400),
    KNUM(S_PROXD, PC, "config_reads", config_reads, "20", 1, 1000),
    KNUM(S_PROXD, PC, "ha_wait", ha_wait_s, "120", 1, 3600),
    KNUM(S_PROXD, PC, "stats_lag", stats_lag_s, "15", 0, 300),
    KNUM(S_PROXD, PC, "guest_wait", guest_wait_s, "300", 0, 86400),
    KSTR(S_PROXD, PC, "network_drift", network_drift, "report", cfg_v_drift, 0),
    KNUM(S_PROXD, PC, "idle_timeout", idle_timeout_s, "60", 1, 3600),
    KNUM(S_PROXD, PC, "header_timeout", header_timeout_s, "10", 1, 3600),
    KNUM(S_PROXD, PC, "streams_per_owner", streams_per_owner, "64", 1, 2048),
    KBOOL(S_PROXD, PC, "delete_orphans", delete_orphans, "no"),
    KNUM(S_PROXD, PC, "leftover_grace", leftover_grace_s, "86400", 0, 365 * 86400),
    KSTR(S_PROXD, PC, "tag", tag, "proxd", cfg_v_tag, 0),
    KNUM(S_PROXD, PC, "quarantine", quarantine_s, "300", 0, 30 * 86400),
    KRANGE(S_PROXD, PC, "fallback_range", fallback_lo, fallback_hi, "9000-9999", 0),
    KSTR(S_PROXD, PC, "log_format", log_format, "text", cfg_v_log_format, 0),
    KSTR(S_PROXD, PC, "log_level", log_level, "info", cfg_v_log_level, 0),
    KSTR(S_PROXD, PC, "log_file", log_file, NULL, NULL, 0),

    KSTR(S_PROXMOX, PC, "token", token, NULL, cfg_v_token, 0),
    KSTR(S_PROXMOX, PC, "user", user, NULL, cfg_v_user, 0),
    KSTR(S_PROXMOX, PC, "password", password, NULL, NULL, 0),
    KSTR(S_PROXMOX, PC, "password_file", password_file, NULL, NULL, 0),
    KBOOL(S_PROXMOX, PC, "verify_tls", verify_tls, "yes"),
    KSTR(S_PROXMOX, PC, "ca_file", ca_file, NULL, NULL, 0),
    KSTR(S_PROXMOX, PC, "fingerprint", fingerprint, NULL, cfg_v_fingerprint, 0),
    KNUM(S_PROXMOX, PC, "connect_timeout", connect_timeout_s, "3", 1, 300),
    KNUM(S_PROXMOX, PC, "timeout", timeout_s, "30", 1, 3600),
    KNUM(S_PROXMOX, PC, "probe_interval", probe_interval_s, "10", 0, 3600),
    KNUM(S_PROXMOX, PC, "privilege_check", privilege_check_s, "600", 0, 86400),
    KNUM(S_PROXMOX, PC, "ticket_lifetime", ticket_lifetime_s, "7200", 2, 86400),
    KNUM(S_PROXMOX, PC, "ticket_renew", ticket_renew_s, "0", 0, 86400),
    KBOOL(S_PROXMOX, PC, "json_bodies", json_bodies, "no"),

    KNUM(S_LIMITS, PC, "cores_min", cores_min, "1", 1, 1024),
    KNUM(S_LIMITS, PC, "cores_max", cores_max, "32", 1, 1024),
    KNUM(S_LIMITS, PC, "memory_min_mb", memory_min_mb, "512", 16, 16 * 1024 * 1024),
    KNUM(S_LIMITS, PC, "memory_max_mb", memory_max_mb, "65536", 16, 16 * 1024 * 1024),
    KNUM(S_LIMITS, PC, "disk_min_gb", disk_min_gb, "10", 1, 1024 * 1024),
    KNUM(S_LIMITS, PC, "disk_max_gb", disk_max_gb, "1024", 1, 1024 * 1024),
    KNUM(S_LIMITS, PC, "memory_margin_mb", memory_margin_mb, "2048", 0, 16 * 1024 * 1024),
    KNUM(S_LIMITS, PC, "disk_margin_gb", disk_margin_gb, "20", 0, 1024 * 1024),
    KNUM(S_LIMITS, PC, "clones_per_node", clones_per_node, "2", 1, 64),
    KNUM(S_LIMITS, PC, "jobs_max", jobs_max, "32", 1, 4096),
    KNUM(S_LIMITS, PC, "drain_parallel", drain_parallel, "2", 1, 32),
    KNUM(S_LIMITS, PC, "name_max", name_max, "63", 1, 63),

    KRANGE(S_OS, OS, "vmid_range", range_lo, range_hi, NULL, F_REQUIRED),
    KSTR(S_OS, OS, "ippools", pools_raw, NULL, NULL, 0),
    KSTR(S_OS, OS, "clone", clone, "full", cfg_v_clone, 0),

    {S_NODE, "host", K_HOSTS, offsetof(NODE, hosts), 0, NULL, 0, 0, NULL, F_REQUIRED, NULL},
    KSTR(S_NODE, NODE, "cluster", cluster, NULL, cfg_v_cluster, 0),
    KSTR(S_NODE, NODE, "storage", storage, NULL, cfg_v_storage, F_REQUIRED),
    /* no default: it inherits [limits] clones_per_node, set in check_nodes() */
    KNUM(S_NODE, NODE, "max_clones", max_clones, NULL, 1, 64),
    KSTR(S_NODE, NODE, "state", state, "active", cfg_v_node_state, 0),
    {S_NODE, "template.", K_TEMPLATE, 0, 0, NULL, VMID_MIN, VMID_MAX, NULL, 0, NULL},

    /* 0 means unlimited */
    KNUM(S_QUOTA, QUOTA, "vms", vms, "0", 0, 1000000),
    KNUM(S_QUOTA, QUOTA, "cores", cores, "0", 0, 1000000),
    KNUM(S_QUOTA, QUOTA, "memory_mb", memory_mb, "0", 0, INT64_C(1) << 40),
    KNUM(S_QUOTA, QUOTA, "disk_gb", disk_gb, "0", 0, INT64_C(1) << 40),
    KNUM(S_QUOTA, QUOTA, "addresses", addresses, "0", 0, 1000000),

    KFUNC(S_IPPOOL, "cidr", cfgpool_set_cidr, F_REQUIRED),
    KFUNC(S_IPPOOL, "gateway", cfgpool_set_gateway, 0),
    KFUNC(S_IPPOOL, "ranges", cfgpool_set_ranges, 0),
    KFUNC(S_IPPOOL, "reserved", cfgpool_set_reserved, 0),
    KFUNC(S_IPPOOL, "dns", cfgpool_set_dns, 0),
    KSTR(S_IPPOOL, POOL, "searchdomain", searchdomain, NULL, cfgpool_check_searchdomain, 0),
    KSTR(S_IPPOOL, POOL, "bridge", bridge, NULL, cfgpool_check_bridge, F_REQUIRED),
    KNUM(S_IPPOOL, POOL, "vlan", vlan, "0", 0, 4094),
    KSTR(S_IPPOOL, POOL, "nodes", nodes_raw, NULL, NULL, 0),
    KSTR(S_IPPOOL, POOL, "clusters", clusters_raw, NULL, NULL, 0),
    /* no default: it inherits [proxd] quarantine, set in cfgpool_check() */
    KNUM(S_IPPOOL, POOL, "quarantine", quarantine_s, NULL, 0, 30 * 86400),

    /* 0 means unlimited (limits) or off (retention) */
    KNUM(S_SNAP, PC, "max_per_vm", snap_max_per_vm, "0", 0, 1000),
    KNUM(S_SNAP, PC, "max_per_owner", snap_max_per_owner, "0", 0, 1000000),
    KNUM(S_SNAP, PC, "keep", snap_keep, "0", 0, 1000),
    KNUM(S_SNAP, PC, "max_age", snap_max_age_s, "0", 0, INT64_C(10) * 365 * 86400),
    KNUM(S_SNAP, PC, "sync_per_pass", snap_sync_per_pass, "8", 0, 1000),

    /* 0: kept for ever */
    KNUM(S_EVENTS, PC, "keep", events_keep_s, "604800", 0, INT64_C(10) * 365 * 86400),
    /* finished jobs and idempotency answers (0: kept for ever) */
    KNUM(S_JOBS, PC, "keep", jobs_keep_s, "2592000", 0, INT64_C(10) * 365 * 86400),

    KSTR(S_WEBHOOK, HOOK, "url", url, NULL, cfg_v_url, F_REQUIRED),
    KSTR(S_WEBHOOK, HOOK, "secret", secret, NULL, cfg_v_secret, F_REQUIRED),
    KSTR(S_WEBHOOK, HOOK, "events", events, "*", cfg_v_event_types, 0),
    KNUM(S_WEBHOOK, HOOK, "max_age", max_age_s, "86400", 1, INT64_C(10) * 365 * 86400),
    KNUM(S_WEBHOOK, HOOK, "timeout", timeout_s, "10", 1, 300),
    KNUM(S_WEBHOOK, HOOK, "retry_max", retry_max_s, "60", 1, 3600),
};

#define NKEYS (sizeof keys / sizeof keys[0])

/* ---- parse state and errors --------------------------------------------- */

/* Where a key was set, for duplicate detection and for pointing cross-key
 * errors at the right line. */
struct seen {
    enum sect sect;
    int idx; /* instance of a named section, 0 for the others */
    char key[64];
    int line;
};

struct cfg_msg {
    int line;
    int seq; /* makes qsort stable */
    char *text;
};

struct pstate {
    struct proxd_config *c;
    FILE *fp;
    char *raw; /* the current physical line (getline) */
    size_t rawcap;
    int lineno;
    /* the section being read */
    enum sect sect;
    int idx;
    char label[160]; /* "[node sv1]" */
    /* where sections start: singletons, then one per named instance */
    int single_line[S_SKIP + 1];
    int os_line[CFG_MAX_OS], node_line[CFG_MAX_NODES], quota_line[CFG_MAX_OWNERS];
    int pool_line[CFG_MAX_POOLS];
    int hook_line[CFG_MAX_WEBHOOKS];
    struct seen *seen;
    size_t nseen, seencap;
    struct cfg_msg *errs; /* in the order found; sorted by line at the end */
    int nerr;
};

/* One message: "file:line: [section] key: text". line 0 and NULL section or
 * key leave those parts out. */
static void __attribute__((format(printf, 5, 6)))
cfg_err(struct pstate *st, int line, const char *label, const char *key, const char *fmt, ...)
{
    if (st->nerr > ERRS_MAX)
        return;
    if (!st->errs)
        st->errs = xcalloc(ERRS_MAX + 1, sizeof *st->errs);
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    if (st->nerr == ERRS_MAX) {
        buf_printf(&b, "%s: too many errors, stopped here", st->c->path);
        line = INT32_MAX; /* sorts last */
        goto out;
    }
    buf_adds(&b, st->c->path);
    if (line > 0)
        buf_printf(&b, ":%d", line);
    buf_adds(&b, ":");
    if (label && *label)
        buf_printf(&b, " %s%s", label, key ? "" : ":");
    if (key)
        buf_printf(&b, " %s:", key);
    buf_adds(&b, " ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
out:
    st->errs[st->nerr] = (struct cfg_msg){line, st->nerr, buf_take(&b)};
    st->nerr++;
}

/* By line, so the report reads like the file; file-wide messages last. */
static int msg_cmp(const void *a, const void *b)
{
    const struct cfg_msg *x = a, *y = b;
    long lx = x->line > 0 ? x->line : INT32_MAX - 1, ly = y->line > 0 ? y->line : INT32_MAX - 1;
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return x->seq - y->seq;
}

/* Sort, join with newlines into *errs (NULL when there is none), free. */
static void flush_errors(struct pstate *st, char **errs)
{
    struct buf all = BUF_INIT(BUF_UNLIMITED);
    if (st->nerr)
        qsort(st->errs, (size_t)st->nerr, sizeof *st->errs, msg_cmp);
    for (int i = 0; i < st->nerr; i++) {
        buf_printf(&all, "%s%s", i ? "\n" : "", st->errs[i].text);
        free(st->errs[i].text);
    }
    *errs = st->nerr ? buf_take(&all) : NULL;
    buf_release(&all);
    FREE_AND_NULL(st->errs);
}

static void seen_add(struct pstate *st, const char *key)
{
    if (st->nseen == st->seencap) {
        st->seencap = st->seencap ? 2 * st->seencap : 64;
        st->seen = xrealloc(st->seen, st->seencap * sizeof *st->seen);
    }
    struct seen *s = &st->seen[st->nseen++];
    s->sect = st->sect;
    s->idx = st->idx;
    snprintf(s->key, sizeof s->key, "%s", key);
    s->line = st->lineno;
}

/* The line where `key` was set in that section instance, 0 if it was not. */
static int seen_line(const struct pstate *st, enum sect sect, int idx, const char *key)
{
    for (size_t i = 0; i < st->nseen; i++) {
        const struct seen *s = &st->seen[i];
        if (s->sect == sect && s->idx == idx && strcmp(s->key, key) == 0)
            return s->line;
    }
    return 0;
}

static int *sect_line_slot(struct pstate *st, enum sect sect, int idx)
{
    switch (sect) {
    case S_OS:
        return &st->os_line[idx];
    case S_NODE:
        return &st->node_line[idx];
    case S_QUOTA:
        return &st->quota_line[idx];
    case S_IPPOOL:
        return &st->pool_line[idx];
    case S_WEBHOOK:
        return &st->hook_line[idx];
    default:
        return &st->single_line[sect];
    }
}

/* The line of `key`, else of its section's header: the best place to point
 * at for a value that is wrong or missing. */
static int key_or_sect_line(struct pstate *st, enum sect sect, int idx, const char *key)
{
    int l = key ? seen_line(st, sect, idx, key) : 0;
    return l ? l : *sect_line_slot(st, sect, idx);
}

/* ---- setting values --------------------------------------------------- */

static bool set_num(const struct key_def *d, void *field, const char *v, char *why, size_t n)
{
    int64_t x;
    if (!parse_i64(v, &x)) {
        snprintf(why, n, "'%s' is not an integer", v);
        return false;
    }
    if (x < d->min || x > d->max) {
        snprintf(why, n, "%lld is out of bounds [%lld, %lld]", (long long)x, (long long)d->min,
                 (long long)d->max);
        return false;
    }
    if (d->off2 == sizeof(int))
        *(int *)field = (int)x;
    else
        *(int64_t *)field = x;
    return true;
}

static bool set_hosts(struct cfg_node *node, const char *v, char *why, size_t n)
{
    char *list = xstrdup(v), *save = NULL;
    bool ok = true;
    node->nhosts = 0;
    for (char *h = strtok_r(list, ",", &save); ok && h; h = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*h))
            h++;
        for (char *e = h + strlen(h); e > h && isspace((unsigned char)e[-1]);)
            *--e = '\0';
        if (node->nhosts == CFG_MAX_HOSTS) {
            snprintf(why, n, "more than %d hosts", CFG_MAX_HOSTS);
            ok = false;
        } else {
            ok = cfg_parse_hostport(h, PVE_PORT, node->hosts[node->nhosts], sizeof node->hosts[0],
                                    why, n);
            node->nhosts += ok;
        }
    }
    free(list);
    if (ok && node->nhosts == 0) {
        snprintf(why, n, "no host in '%s'", v);
        ok = false;
    }
    return ok;
}

static bool set_template(struct cfg_node *node, const char *os, const char *v, char *why, size_t n,
                         const struct key_def *d)
{
    int64_t vmid;
    if (!*os || strlen(os) >= sizeof node->templates[0].os) {
        snprintf(why, n, "expected template.<os> with an OS name of 1 to %zu characters",
                 sizeof node->templates[0].os - 1);
        return false;
    }
    if (node->ntemplates == CFG_MAX_OS) {
        snprintf(why, n, "more than %d templates", CFG_MAX_OS);
        return false;
    }
    if (!parse_i64(v, &vmid) || vmid < d->min || vmid > d->max) {
        snprintf(why, n, "'%s' is not a VMID (%lld-%lld)", v, (long long)d->min, (long long)d->max);
        return false;
    }
    struct cfg_template *t = &node->templates[node->ntemplates++];
    cfg_copy_str(t->os, sizeof t->os, os);
    t->vmid = (int)vmid;
    return true;
}

/* Store value v of key (d describes it) into base, the section's struct.
 * False with the reason in why. */
static bool set_value(const struct key_def *d, void *base, const char *key, const char *v,
                      char *why, size_t n)
{
    char *field = (char *)base + d->off;
    bool b;
    switch (d->type) {
    case K_STR:
        if (d->check && !d->check(v, why, n))
            return false;
        if (!cfg_copy_str(field, d->off2, v)) {
            snprintf(why, n, "too long (at most %zu characters)", d->off2 - 1);
            return false;
        }
        return true;
    case K_NUM:
        return set_num(d, field, v, why, n);
    case K_BOOL:
        if (!cfg_parse_bool(v, &b)) {
            snprintf(why, n, "'%s' is not a boolean (yes/no, true/false, on/off, 1/0)", v);
            return false;
        }
        *(bool *)field = b;
        return true;
    case K_RANGE:
        return cfg_parse_range(v, d->min, d->max, (int *)field, (int *)((char *)base + d->off2),
                               why, n);
    case K_PLACEMENT:
        if (strcmp(v, "ordered") == 0 || strcmp(v, "spread") == 0) {
            *(enum placement *)field = v[0] == 's' ? PLACE_SPREAD : PLACE_ORDERED;
            return true;
        }
        snprintf(why, n, "'%s': expected ordered or spread", v);
        return false;
    case K_HOSTS:
        return set_hosts(base, v, why, n);
    case K_TEMPLATE:
        return set_template(base, key + strlen(d->key), v, why, n, d);
    case K_FUNC:
        return d->set(base, v, why, n);
    }
    return false;
}

static void apply_defaults(enum sect sect, void *base)
{
    char why[256];
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].sect != sect || !keys[i].def)
            continue;
        /* the defaults are ours: a bad one is a bug caught by the tests */
        if (!set_value(&keys[i], base, keys[i].key, keys[i].def, why, sizeof why))
            abort();
    }
}

static const struct key_def *find_key(enum sect sect, const char *key)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].sect != sect)
            continue;
        if (keys[i].type == K_TEMPLATE ? str_starts(key, keys[i].key)
                                       : strcmp(key, keys[i].key) == 0)
            return &keys[i];
    }
    return NULL;
}

/* The struct that keys of the current section go into. */
static void *sect_base(struct pstate *st)
{
    switch (st->sect) {
    case S_OS:
        return &st->c->os[st->idx];
    case S_NODE:
        return &st->c->nodes[st->idx];
    case S_QUOTA:
        return &st->c->quotas[st->idx];
    case S_IPPOOL:
        return &st->c->pools[st->idx];
    case S_WEBHOOK:
        return &st->c->webhooks[st->idx];
    default:
        return st->c;
    }
}

/* libinih's callback for every "key = value". Always returns 1: errors are
 * collected here, and a 0 would only make ini_parse_stream() report a line
 * number we already have. */
static int on_key(void *user, const char *section, const char *key, const char *value)
{
    struct pstate *st = user;
    (void)section; /* read_line() tracks sections with their lines */
    if (st->sect == S_SKIP)
        return 1;
    if (st->sect == S_NONE) {
        cfg_err(st, st->lineno, NULL, key, "key outside any section");
        return 1;
    }
    const struct key_def *d = find_key(st->sect, key);
    if (!d) {
        cfg_err(st, st->lineno, st->label, key, "unknown key");
        return 1;
    }
    int first = seen_line(st, st->sect, st->idx, key);
    if (first) {
        cfg_err(st, st->lineno, st->label, key, "set twice (first on line %d)", first);
        return 1;
    }
    seen_add(st, key);
    char why[256];
    if (!*value)
        cfg_err(st, st->lineno, st->label, key, "must not be empty");
    else if (!set_value(d, sect_base(st), key, value, why, sizeof why))
        cfg_err(st, st->lineno, st->label, key, "%s", why);
    return 1;
}

/* ---- sections --------------------------------------------------------- */

static bool valid_name(enum sect sect, const char *name, size_t max, char *why, size_t n)
{
    size_t len = strlen(name);
    bool ok = len > 0 && len <= max;
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (sect == S_NODE) /* a DNS label, as PVE node names are */
            ok = isalnum(ch) || (ch == '-' && i > 0 && i < len - 1);
        else if (sect == S_OS || sect == S_IPPOOL || sect == S_WEBHOOK) /* paths, labels */
            ok = islower(ch) || isdigit(ch) || (i > 0 && strchr("._-", ch));
        else if (sect == S_QUOTA) /* an owner (validate_owner): another name binds no one */
            ok = isalnum(ch) || strchr("-_.@", ch);
        else
            ok = isgraph(ch) && ch != '[' && ch != ']';
    }
    if (!ok)
        snprintf(why, n, "bad %s name (%s, at most %zu characters)", sect_info[sect].name,
                 sect == S_NODE ? "letters, digits and inner '-'"
                 : sect == S_OS || sect == S_IPPOOL || sect == S_WEBHOOK
                     ? "lower-case letters, digits and . _ -"
                 : sect == S_QUOTA ? "an owner: letters, digits and - _ . @"
                                   : "no spaces",
                 max);
    return ok;
}

/* The instances of a named section: their count, capacity and names. */
struct named {
    int *count;
    int max;
    char *(*name)(struct proxd_config *c, int i);
    void *(*base)(struct proxd_config *c, int i);
    size_t name_max;
};

static char *os_name(struct proxd_config *c, int i)
{
    return c->os[i].name;
}
static void *os_base(struct proxd_config *c, int i)
{
    return &c->os[i];
}
static char *node_name(struct proxd_config *c, int i)
{
    return c->nodes[i].name;
}
static void *node_base(struct proxd_config *c, int i)
{
    return &c->nodes[i];
}
static char *quota_name(struct proxd_config *c, int i)
{
    return c->quotas[i].owner;
}
static void *quota_base(struct proxd_config *c, int i)
{
    return &c->quotas[i];
}
static char *pool_name(struct proxd_config *c, int i)
{
    return c->pools[i].name;
}
static void *pool_base(struct proxd_config *c, int i)
{
    return &c->pools[i];
}

static char *hook_name(struct proxd_config *c, int i)
{
    return c->webhooks[i].name;
}
static void *hook_base(struct proxd_config *c, int i)
{
    return &c->webhooks[i];
}

static struct named named_of(struct proxd_config *c, enum sect sect)
{
    switch (sect) {
    case S_OS:
        return (struct named){&c->nos, CFG_MAX_OS, os_name, os_base, FSIZE(OS, name) - 1};
    case S_NODE:
        return (struct named){&c->nnodes, CFG_MAX_NODES, node_name, node_base,
                              FSIZE(NODE, name) - 1};
    case S_IPPOOL:
        return (struct named){&c->npools, CFG_MAX_POOLS, pool_name, pool_base,
                              FSIZE(POOL, name) - 1};
    case S_WEBHOOK: /* the name is in metric labels and the store's cursor */
        return (struct named){&c->nwebhooks, CFG_MAX_WEBHOOKS, hook_name, hook_base,
                              FSIZE(HOOK, name) - 1};
    default:
        return (struct named){&c->nquotas, CFG_MAX_OWNERS, quota_name, quota_base,
                              FSIZE(QUOTA, owner) - 1};
    }
}

/* Find or add the instance `name` of a named section; -1 when full. */
static int named_instance(struct pstate *st, enum sect sect, const char *name, bool *dup)
{
    struct named nm = named_of(st->c, sect);
    for (int i = 0; i < *nm.count; i++) {
        if (strcmp(nm.name(st->c, i), name) == 0) {
            *dup = true;
            return i;
        }
    }
    *dup = false;
    if (*nm.count == nm.max)
        return -1;
    int i = (*nm.count)++;
    memcpy(nm.name(st->c, i), name, strlen(name) + 1); /* length checked by valid_name() */
    apply_defaults(sect, nm.base(st->c, i));
    return i;
}

/* A "[kind name]" header on the current line (inner text in h). Sets the
 * current section; S_SKIP when it is bad, so its keys add no more noise. */
static void section_begin(struct pstate *st, char *h)
{
    char *kind = h + strspn(h, " \t"), *name = kind + strcspn(kind, " \t");
    if (*name)
        *name++ = '\0';
    name += strspn(name, " \t");
    snprintf(st->label, sizeof st->label, "[%s%s%s]", kind, *name ? " " : "", name);
    st->sect = S_SKIP;
    st->idx = 0;
    enum sect s = S_NONE;
    for (int i = S_PROXD; i < S_SKIP; i++)
        if (strcmp(kind, sect_info[i].name) == 0)
            s = (enum sect)i;
    char why[256];
    if (s == S_NONE) {
        cfg_err(st, st->lineno, st->label, NULL, "unknown section");
        return;
    }
    if (sect_info[s].named != (*name != '\0')) {
        if (sect_info[s].named)
            cfg_err(st, st->lineno, st->label, NULL, "this section needs a name: [%s NAME]", kind);
        else
            cfg_err(st, st->lineno, st->label, NULL, "this section takes no name");
        return;
    }
    int idx = 0;
    bool dup = false;
    if (sect_info[s].named) {
        if (!valid_name(s, name, named_of(st->c, s).name_max, why, sizeof why)) {
            cfg_err(st, st->lineno, st->label, NULL, "%s", why);
            return;
        }
        idx = named_instance(st, s, name, &dup);
        if (idx < 0) {
            cfg_err(st, st->lineno, st->label, NULL, "too many [%s] sections (at most %d)", kind,
                    named_of(st->c, s).max);
            return;
        }
    } else {
        dup = st->single_line[s] != 0;
    }
    int *line = sect_line_slot(st, s, idx);
    if (dup) {
        cfg_err(st, st->lineno, st->label, NULL, "duplicate section (first on line %d)", *line);
        return;
    }
    *line = st->lineno;
    st->sect = s;
    st->idx = idx;
}

/* ---- the line reader -------------------------------------------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    for (char *e = s + strlen(s); e > s && isspace((unsigned char)e[-1]);)
        *--e = '\0';
    return s;
}

/* Cut an inline comment: ';' or '#' after whitespace. libinih as Debian
 * builds it knows only ';', and we want '#' to behave the same. */
static void cut_comment(char *s)
{
    for (char *p = s + 1; *p; p++) {
        if ((*p == ';' || *p == '#') && isspace((unsigned char)p[-1])) {
            *p = '\0';
            return;
        }
    }
}

/* A line that is neither "key = value" nor "[section]". Its first word is
 * shown only when it is a key of the section: "password hunter2" or
 * "token: ...=secret" says 'password' or 'token', but a word of its own (a
 * token pasted alone on a line) may be the secret itself, and the message
 * goes to --check-config's output and the journal. */
static void bad_line(struct pstate *st, const char *s)
{
    const char *label = st->label[0] ? st->label : NULL;
    size_t word = strcspn(s, " \t=:");
    char key[64];
    bool known = false;
    if (word < sizeof key) {
        snprintf(key, sizeof key, "%.*s", (int)word, s);
        known = word > 0 && find_key(st->sect, key) != NULL;
    }
    if (known && s[word])
        cfg_err(st, st->lineno, label, NULL,
                "expected 'key = value' or '[section]', got a line starting '%s' (the rest not "
                "shown: it may be a secret)",
                key);
    else if (known)
        cfg_err(st, st->lineno, label, NULL,
                "expected 'key = value' or '[section]', got '%s' with no '= value'", key);
    else
        cfg_err(st, st->lineno, label, NULL,
                "expected 'key = value' or '[section]', got a line that starts with no key of "
                "this section (not shown: it may be a secret)");
}

/* What libinih gets for one physical line: "" for comments and for lines
 * already reported, else the line stripped of comments and indentation.
 * Stripping the indentation also turns off libinih's continuation lines,
 * which would glue an indented "key = value" onto the previous value. */
static const char *normalise(struct pstate *st, int limit)
{
    char *s = trim(st->raw);
    if (*s == ';' || *s == '#' || !*s)
        return "";
    cut_comment(s);
    s = trim(s);
    if (strlen(s) > (size_t)limit) {
        if (*s == '[')
            st->sect = S_SKIP; /* keys below must not land in the previous section */
        cfg_err(st, st->lineno, NULL, NULL,
                "line too long (%zu characters, at most %d): libinih would cut it; "
                "keep long values short or in a file",
                strlen(s), limit);
        return "";
    }
    if (*s == '[') {
        size_t n = strlen(s);
        if (s[n - 1] != ']' || n < 3) {
            st->sect = S_SKIP;
            cfg_err(st, st->lineno, NULL, NULL, "bad section header '%s': expected [kind name]", s);
            return "";
        }
        char inner[256];
        snprintf(inner, sizeof inner, "%.*s", (int)(n - 2), s + 1);
        section_begin(st, inner);
        return s;
    }
    /* libinih splits "name: value" too; we accept only '=' */
    size_t k = strcspn(s, "=:");
    if (s[k] != '=' || k == 0)
        bad_line(st, s);
    return s[k] != '=' || k == 0 ? "" : s;
}

/* libinih's fgets-like reader: one physical line per call, so lineno is the
 * line of whatever the handler is called for. `num` is libinih's own buffer
 * size, which includes room for "\r\n\0". */
static char *read_line(char *str, int num, void *stream)
{
    struct pstate *st = stream;
    if (getline(&st->raw, &st->rawcap, st->fp) < 0)
        return NULL;
    st->lineno++;
    /* a UTF-8 byte order mark, as some editors write; libinih allows it too */
    if (st->lineno == 1 && str_starts(st->raw, "\xEF\xBB\xBF"))
        memmove(st->raw, st->raw + 3, strlen(st->raw + 3) + 1);
    const char *s = normalise(st, num - 3);
    snprintf(str, (size_t)num, "%s\n", s);
    return str;
}

/* ---- whole-file checks ------------------------------------------------ */

static const char *sect_label(char *out, size_t n, enum sect sect, const char *name)
{
    snprintf(out, n, "[%s%s%s]", sect_info[sect].name, name ? " " : "", name ? name : "");
    return out;
}

static void check_required(struct pstate *st, enum sect sect, int count)
{
    char label[160];
    for (int i = 0; i < count; i++) {
        const char *name = named_of(st->c, sect).name(st->c, i);
        for (size_t k = 0; k < NKEYS; k++) {
            if (keys[k].sect == sect && (keys[k].flags & F_REQUIRED) &&
                !seen_line(st, sect, i, keys[k].key))
                cfg_err(st, *sect_line_slot(st, sect, i),
                        sect_label(label, sizeof label, sect, name), keys[k].key, "missing");
        }
    }
}

static void check_credentials(struct pstate *st)
{
    const struct proxd_config *c = st->c;
    int line = st->single_line[S_PROXMOX];
    bool tok = c->token[0], user = c->user[0], pw = c->password[0], pwf = c->password_file[0];
    if (tok && (user || pw || pwf)) {
        const char *other = pw ? "password" : pwf ? "password_file" : "user";
        cfg_err(st, key_or_sect_line(st, S_PROXMOX, 0, other), "[proxmox]", other,
                "set either token (line %d) or user with password/password_file, not both",
                seen_line(st, S_PROXMOX, 0, "token"));
    } else if (pw && pwf) {
        cfg_err(st, seen_line(st, S_PROXMOX, 0, "password_file"), "[proxmox]", "password_file",
                "set password (line %d) or password_file, not both",
                seen_line(st, S_PROXMOX, 0, "password"));
    } else if (user && !pw && !pwf) {
        cfg_err(st, seen_line(st, S_PROXMOX, 0, "user"), "[proxmox]", "user",
                "needs password or password_file");
    } else if (!user && (pw || pwf)) {
        const char *k = pw ? "password" : "password_file";
        cfg_err(st, seen_line(st, S_PROXMOX, 0, k), "[proxmox]", k, "needs user");
    } else if (!tok && !user) {
        cfg_err(st, line, "[proxmox]", NULL,
                "no credentials: set token, or user with password or password_file");
    }
    if (pwf && access(c->password_file, R_OK) != 0)
        cfg_err(st, seen_line(st, S_PROXMOX, 0, "password_file"), "[proxmox]", "password_file",
                "cannot read '%s': %s", c->password_file, strerror(errno));
    /* a ticket that expires before its renewal: every call would wait for a login */
    if (c->ticket_renew_s >= c->ticket_lifetime_s)
        cfg_err(st, key_or_sect_line(st, S_PROXMOX, 0, "ticket_renew"), "[proxmox]", "ticket_renew",
                "%d is not shorter than ticket_lifetime %d", c->ticket_renew_s,
                c->ticket_lifetime_s);
}

static void check_tls(struct pstate *st)
{
    struct proxd_config *c = st->c;
    int line;
    if (!c->verify_tls && (c->ca_file[0] || c->fingerprint[0])) {
        const char *k = c->ca_file[0] ? "ca_file" : "fingerprint";
        cfg_err(st, seen_line(st, S_PROXMOX, 0, k), "[proxmox]", k,
                "has no effect with verify_tls = no (line %d)",
                seen_line(st, S_PROXMOX, 0, "verify_tls"));
    } else if (c->ca_file[0] && c->fingerprint[0]) {
        cfg_err(st, seen_line(st, S_PROXMOX, 0, "fingerprint"), "[proxmox]", "fingerprint",
                "set ca_file (line %d) or fingerprint, not both: the pin replaces the CA check",
                seen_line(st, S_PROXMOX, 0, "ca_file"));
    }
    if (c->ca_file[0] && access(c->ca_file, R_OK) != 0)
        cfg_err(st, seen_line(st, S_PROXMOX, 0, "ca_file"), "[proxmox]", "ca_file",
                "cannot read '%s': %s", c->ca_file, strerror(errno));
    /* libpve compares pins as the GUI prints them: upper case */
    for (char *p = c->fingerprint; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    if (c->timeout_s < c->connect_timeout_s) {
        line = key_or_sect_line(st, S_PROXMOX, 0, "timeout");
        cfg_err(st, line, "[proxmox]", "timeout", "%d is shorter than connect_timeout %d",
                c->timeout_s, c->connect_timeout_s);
    }
}

static void check_min_max(struct pstate *st, const char *kmin, int64_t min, const char *kmax,
                          int64_t max)
{
    if (min > max)
        cfg_err(st, key_or_sect_line(st, S_LIMITS, 0, kmax), "[limits]", kmax,
                "%lld is below %s %lld", (long long)max, kmin, (long long)min);
}

/* A webhook's undelivered events must still be in the log when it catches
 * up: the log keeps them at least as long as a webhook waits. */
static void check_webhooks(struct pstate *st)
{
    const struct proxd_config *c = st->c;
    for (int i = 0; i < c->nwebhooks; i++) {
        const struct cfg_webhook *h = &c->webhooks[i];
        if (c->events_keep_s && h->max_age_s > c->events_keep_s) {
            char label[160];
            snprintf(label, sizeof label, "[webhook %s]", h->name);
            cfg_err(st, key_or_sect_line(st, S_WEBHOOK, i, "max_age"), label, "max_age",
                    "%lld is longer than [events] keep (%lld): events would be pruned before "
                    "they are delivered",
                    (long long)h->max_age_s, (long long)c->events_keep_s);
        }
    }
}

static void check_limits(struct pstate *st)
{
    const struct proxd_config *c = st->c;
    check_min_max(st, "cores_min", c->cores_min, "cores_max", c->cores_max);
    check_min_max(st, "memory_min_mb", c->memory_min_mb, "memory_max_mb", c->memory_max_mb);
    check_min_max(st, "disk_min_gb", c->disk_min_gb, "disk_max_gb", c->disk_max_gb);
}

/* OS ranges are where proxd picks VMIDs: two OSes sharing VMIDs, or the
 * fallback range reaching into one, would hand out one VMID twice. */
static void check_ranges(struct pstate *st)
{
    const struct proxd_config *c = st->c;
    char a[160], b[160];
    for (int i = 0; i < c->nos; i++) {
        const struct cfg_os *o = &c->os[i];
        int line = seen_line(st, S_OS, i, "vmid_range");
        if (!o->range_lo)
            continue; /* missing or malformed: reported already */
        sect_label(a, sizeof a, S_OS, o->name);
        for (int j = 0; j < i; j++) {
            const struct cfg_os *p = &c->os[j];
            if (p->range_lo && o->range_lo <= p->range_hi && p->range_lo <= o->range_hi)
                cfg_err(st, line, a, "vmid_range", "%d-%d overlaps %s vmid_range %d-%d (line %d)",
                        o->range_lo, o->range_hi, sect_label(b, sizeof b, S_OS, p->name),
                        p->range_lo, p->range_hi, seen_line(st, S_OS, j, "vmid_range"));
        }
        if (o->range_lo <= c->fallback_hi && c->fallback_lo <= o->range_hi)
            cfg_err(st, line, a, "vmid_range", "%d-%d overlaps [proxd] fallback_range %d-%d%s",
                    o->range_lo, o->range_hi, c->fallback_lo, c->fallback_hi,
                    seen_line(st, S_PROXD, 0, "fallback_range") ? "" : " (the default)");
    }
}

/* Nodes of one cluster share a VMID space; a standalone node has its own. */
static bool same_vmid_space(const struct cfg_node *a, const struct cfg_node *b)
{
    return a == b || (a->cluster[0] && strcmp(a->cluster, b->cluster) == 0);
}

/* A template: its OS must exist, its VMID must not be one proxd could hand
 * out (from an OS range or the fallback range, which a creation takes from
 * when its OS range is full), and within one VMID space a VMID is one VM. */
static void check_template(struct pstate *st, int ni, int ti)
{
    const struct proxd_config *c = st->c;
    const struct cfg_node *n = &c->nodes[ni];
    const struct cfg_template *t = &n->templates[ti];
    char key[64], label[160], other[160];
    snprintf(key, sizeof key, "template.%s", t->os);
    int line = seen_line(st, S_NODE, ni, key);
    sect_label(label, sizeof label, S_NODE, n->name);
    if (!config_os(c, t->os))
        cfg_err(st, line, label, key, "unknown OS '%s' (no [os %s] section)", t->os, t->os);
    for (int i = 0; i < c->nos; i++)
        if (t->vmid >= c->os[i].range_lo && t->vmid <= c->os[i].range_hi)
            cfg_err(st, line, label, key, "VMID %d lies in %s vmid_range %d-%d (line %d)", t->vmid,
                    sect_label(other, sizeof other, S_OS, c->os[i].name), c->os[i].range_lo,
                    c->os[i].range_hi, seen_line(st, S_OS, i, "vmid_range"));
    if (c->fallback_lo && t->vmid >= c->fallback_lo && t->vmid <= c->fallback_hi)
        cfg_err(st, line, label, key, "VMID %d lies in [proxd] fallback_range %d-%d%s", t->vmid,
                c->fallback_lo, c->fallback_hi,
                seen_line(st, S_PROXD, 0, "fallback_range") ? "" : " (the default)");
    for (int nj = 0; nj <= ni; nj++) {
        const struct cfg_node *m = &c->nodes[nj];
        if (!same_vmid_space(n, m))
            continue;
        for (int tj = 0; tj < (nj == ni ? ti : m->ntemplates); tj++)
            if (m->templates[tj].vmid == t->vmid)
                cfg_err(st, line, label, key, "VMID %d is already %s template.%s%s%s", t->vmid,
                        sect_label(other, sizeof other, S_NODE, m->name), m->templates[tj].os,
                        n->cluster[0] ? " in cluster " : "", n->cluster);
    }
}

/* Two nodes behind one endpoint are one VMID space, so they must say so. */
static void check_endpoints(struct pstate *st, int ni)
{
    const struct proxd_config *c = st->c;
    const struct cfg_node *n = &c->nodes[ni];
    char label[160], other[160];
    for (int nj = 0; nj < ni; nj++) {
        const struct cfg_node *m = &c->nodes[nj];
        if (same_vmid_space(n, m))
            continue;
        for (int h = 0; h < n->nhosts; h++)
            for (int k = 0; k < m->nhosts; k++)
                if (strcmp(n->hosts[h], m->hosts[k]) == 0)
                    cfg_err(st, seen_line(st, S_NODE, ni, "host"),
                            sect_label(label, sizeof label, S_NODE, n->name), "host",
                            "%s is also a host of %s: nodes sharing an endpoint need the same "
                            "cluster = NAME",
                            n->hosts[h], sect_label(other, sizeof other, S_NODE, m->name));
    }
}

static void check_nodes(struct pstate *st)
{
    struct proxd_config *c = st->c;
    for (int i = 0; i < c->nnodes; i++) {
        if (!c->nodes[i].max_clones)
            c->nodes[i].max_clones = c->clones_per_node;
        for (int t = 0; t < c->nodes[i].ntemplates; t++)
            check_template(st, i, t);
        check_endpoints(st, i);
    }
    if (c->nnodes == 0)
        cfg_err(st, 0, NULL, NULL, "no [node NAME] section: proxd needs at least one node");
    if (c->nos == 0)
        cfg_err(st, 0, NULL, NULL, "no [os NAME] section: proxd needs at least one OS");
}

static enum sect pool_sect(enum cfgpool_sect s)
{
    return s == CFGPOOL_POOL ? S_IPPOOL : S_OS;
}

static int pool_line(void *stv, enum cfgpool_sect s, int idx, const char *key)
{
    return seen_line(stv, pool_sect(s), idx, key);
}

static void pool_err(void *stv, enum cfgpool_sect s, int idx, const char *key, const char *msg)
{
    struct pstate *st = stv;
    char label[160];
    enum sect sect = pool_sect(s);
    sect_label(label, sizeof label, sect, named_of(st->c, sect).name(st->c, idx));
    cfg_err(st, key_or_sect_line(st, sect, idx, key), label, key, "%s", msg);
}

static void check_all(struct pstate *st)
{
    check_required(st, S_OS, st->c->nos);
    check_required(st, S_NODE, st->c->nnodes);
    check_required(st, S_IPPOOL, st->c->npools);
    check_required(st, S_WEBHOOK, st->c->nwebhooks);
    check_credentials(st);
    check_tls(st);
    check_limits(st);
    check_ranges(st);
    check_nodes(st);
    cfgpool_check(st->c, &(struct cfgpool_ctx){st, pool_line, pool_err});
    check_webhooks(st);
}

/* ---- public ----------------------------------------------------------- */

static void parse_file(struct pstate *st, const char *path)
{
    st->fp = fopen(path, "r");
    if (!st->fp) {
        cfg_err(st, 0, NULL, NULL, "cannot open: %s", strerror(errno));
        return;
    }
    int rc = ini_parse_stream(read_line, st, on_key, st);
    fclose(st->fp);
    if (rc == 0) {
        check_all(st);
        return;
    }
    /* read_line() hands libinih only lines it can parse, so this means the
     * library and we disagree about the format: stop rather than guess */
    if (rc > 0)
        cfg_err(st, rc, NULL, NULL, "libinih cannot parse this line");
    else
        cfg_err(st, 0, NULL, NULL, "libinih failed (%d)", rc);
}

struct proxd_config *config_load_all(const char *path, char **errs)
{
    struct pstate st = {0};
    st.c = xcalloc(1, sizeof *st.c);
    if (!cfg_copy_str(st.c->path, sizeof st.c->path, path)) {
        snprintf(st.c->path, sizeof st.c->path, "%s", "config");
        cfg_err(&st, 0, NULL, NULL, "path too long (at most %zu characters)",
                sizeof st.c->path - 1);
    } else {
        apply_defaults(S_PROXD, st.c);
        apply_defaults(S_PROXMOX, st.c);
        apply_defaults(S_LIMITS, st.c);
        apply_defaults(S_SNAP, st.c);
        apply_defaults(S_EVENTS, st.c);
        apply_defaults(S_JOBS, st.c);
        parse_file(&st, path);
    }
    free(st.raw);
    free(st.seen);
    if (st.nerr)
        FREE_AND_NULL(st.c);
    flush_errors(&st, errs);
    return st.c;
}

struct proxd_config *config_load(const char *path, char *err, size_t errlen)
{
    char *all = NULL;
    struct proxd_config *c = config_load_all(path, &all);
    if (err && errlen)
        snprintf(err, errlen, "%s", all ? all : "");
    free(all);
    return c;
}

void config_free(struct proxd_config *c)
{
    /* secrets should not linger in freed memory */
    if (c) {
        explicit_bzero(c->token, sizeof c->token);
        explicit_bzero(c->password, sizeof c->password);
    }
    free(c);
}

const struct cfg_os *config_os(const struct proxd_config *c, const char *name)
{
    for (int i = 0; c && name && i < c->nos; i++)
        if (strcmp(c->os[i].name, name) == 0)
            return &c->os[i];
    return NULL;
}

bool config_clone_linked(const struct proxd_config *c, const char *os)
{
    const struct cfg_os *o = config_os(c, os);
    return o && strcmp(o->clone, "linked") == 0;
}

const struct cfg_node *config_node(const struct proxd_config *c, const char *name)
{
    for (int i = 0; c && name && i < c->nnodes; i++)
        if (strcmp(c->nodes[i].name, name) == 0)
            return &c->nodes[i];
    return NULL;
}

int config_template(const struct cfg_node *n, const char *os)
{
    for (int i = 0; n && os && i < n->ntemplates; i++)
        if (strcmp(n->templates[i].os, os) == 0)
            return n->templates[i].vmid;
    return 0;
}

const struct cfg_ippool *config_ippool(const struct proxd_config *c, const char *name)
{
    for (int i = 0; c && name && i < c->npools; i++)
        if (strcmp(c->pools[i].name, name) == 0)
            return &c->pools[i];
    return NULL;
}

bool config_ippool_reachable(const struct proxd_config *c, const struct cfg_ippool *p,
                             const struct cfg_node *n)
{
    return c && p && n && n >= c->nodes && n < c->nodes + c->nnodes && p->on_node[n - c->nodes];
}

const struct cfg_quota *config_quota(const struct proxd_config *c, const char *owner)
{
    const struct cfg_quota *def = NULL;
    for (int i = 0; c && i < c->nquotas; i++) {
        if (owner && strcmp(c->quotas[i].owner, owner) == 0)
            return &c->quotas[i];
        if (strcmp(c->quotas[i].owner, "default") == 0)
            def = &c->quotas[i];
    }
    return def;
}
