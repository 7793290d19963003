#include "core/fleet.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define WORLD_PERIOD_MS 0     /* worlds that answer are refreshed whenever asked */
#define QUICK_FAILURE_MS 1000 /* an inventory read that failed faster is tried again */
/* (and faster than half the connect timeout: a timeout is never quick) */
#define QUICK_RETRY_MS 250
/* A read answered with an error (pveproxy's 500 while pmxcfs restarts, say)
 * says the world answers: the last inventory is kept until this many such
 * reads in a row; one failure must not take a whole cluster out of
 * placement. A refused login (401) is such an answer too: with a password,
 * one refusal (a realm briefly away) failed the read and every creation
 * placed in the 5 s after it ("down: authentication failure"); credentials
 * that stay refused are down at the third read. No answer at all, a 403 or
 * a TLS trust failure mean down at once. */
#define ANSWERED_ERRORS_MAX 3

/* What the core put on a node since the inventory last looked: counted on
 * top of the node's reported use until a refresh that began later. */
struct world {
    char name[64];
    bool cluster;
    pve_client *client;       /* probes too (PVE_CALL_PROBE: its short timeout) */
    int nodes[CFG_MAX_NODES]; /* indexes into fleet->nodes */
    int nnodes;
    int64_t next_try; /* unix ms: when a failed world may be asked again */
    int64_t backoff;
    bool asked; /* one refresh of it has ended, answered or failed */
    bool good;  /* one refresh of it has read the inventory */
    int errors; /* reads answered with an error since the last good one */
    /* VMIDs its inventory shows held by guests proxd does not manage: VMs
     * on nodes it does not manage (a cluster's other nodes) and containers
     * (lxc) on any node. Taken (a cluster's VMIDs are one namespace, VMs'
     * and containers' alike: a clone onto one fails "already exists"), but
     * never in the VM table: not listed, reconciled or counted as VMs. */
    struct ids {
        int *v;
        size_t n, cap;
    } held;
    /* Its containers on nodes proxd manages (their VMIDs are in held too):
     * the config walk reads their network configs, as an address a
     * container has is taken on its network */
    struct cts {
        struct ctrec {
            int vmid;
            uint16_t node; /* index into fleet->nodes */
            bool tmpl, running;
        } * v;
        size_t n, cap;
    } cts;
};

static void cts_add(struct cts *d, const struct ctrec *c)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->v = xrealloc(d->v, d->cap * sizeof *d->v);
    }
    d->v[d->n++] = *c;
}

static void cts_free(struct cts *d)
{
    free(d->v);
    memset(d, 0, sizeof *d);
}

static void ids_add(struct ids *d, int vmid)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = xrealloc(d->v, d->cap * sizeof *d->v);
    }
    d->v[d->n++] = vmid;
}

static void ids_free(struct ids *d)
{
    free(d->v);
    memset(d, 0, sizeof *d);
}

struct nstate {
    char name[64];
    int world;
    char storage[64];
    struct node_view v;
    bool online;      /* as the world reports it */
    bool failed;      /* an operation failed at the network level */
    int64_t retry_at; /* when a failed node is probed again */
    int64_t backoff;
    int64_t alive_ms; /* mono ms: the node answered a call sent then (the probe's or any) */
};

/* The inventory's VMs, compact (10,000 VMs take ~600 KB, not the 3.4 MB
 * of as many struct fleet_vm): fixed fields in a 32-byte record, the node
 * as an index into the fleet's node names, and the texts in the table's
 * string pool, cut to the sizes of struct fleet_vm's fields. */
struct vmrec {
    int32_t vmid;
    uint16_t node; /* < CFG_MAX_NODES: f->nodes[]; above: f->extra[] */
    bool tmpl;
    int32_t maxcpu;
    uint32_t text; /* offset in the pool: status, name, tags, lock (NUL-ended) */
    int64_t maxmem, maxdisk;
};

struct vmtab {
    struct vmrec *v;
    size_t n, cap;
    struct buf pool;
};

#define MAX_EXTRA_NODES 64

/* How stale the inventory may grow: FRESH_MS while anything reads it,
 * IDLE_MS when nothing does (see fleet_refresh_next). A read costs ~3.5 M
 * instructions for 50 VMs here (jansson: ~230 a byte), and Proxmox
 * collects the whole cluster's state for it; with the default
 * reconcile_interval an idle fleet is read by the reconciler's pass
 * alone (was 30 s: twice a minute). */
#define FRESH_MS 5000
#define IDLE_MS 60000

struct fleet {
    pthread_mutex_t mu;
    int64_t wanted_ms;     /* mono ms: the inventory was last read for a decision */
    int64_t read_began_ms; /* mono ms: the last refresh that read a world began */
    bool want_told;        /* ... and the owner was told since the last refresh began */
    void (*notify)(void *ud, unsigned notes);
    void *notify_ud;
    signed char told[CFG_MAX_NODES]; /* health last told: 0 not asked, 1 down, 2 up */
    struct world worlds[CFG_MAX_NODES];
    int nworlds;
    struct nstate nodes[CFG_MAX_NODES];
    int nnodes;
    struct vmtab vms;
    /* names of nodes proxd does not manage that fleet_vm_added was told of */
    char extra[MAX_EXTRA_NODES][64];
    int nextra;
    int64_t quick_ms; /* see QUICK_FAILURE_MS */
    int64_t lag_ms;   /* [proxd] stats_lag: how old a read's node figures may be */
    /* the active probe (fleet_probe_start): the prober, and a thread per
     * node that probes it in full when a glance failed */
    pthread_cond_t probe_cv;   /* stop, or a suspect judged */
    pthread_cond_t suspect_cv; /* stop, or a node handed to its thread */
    bool probe_stop;
    int probe_every_ms;
    int nprobes;
    pthread_t probes[CFG_MAX_NODES];
    pthread_t prober;
    bool prober_up;
    int64_t looked[CFG_MAX_NODES]; /* mono ms: the node's last probe was sent */
    bool suspect[CFG_MAX_NODES];   /* its glance failed: its own thread has it */
    struct fleet_seen *seen;       /* fleet_addrs.c: addresses in VM configs */
};

struct fleet_seen *fleet_seen_of(struct fleet *f)
{
    return f->seen;
}

/* ---- set-up ------------------------------------------------------------- */

static int world_for(struct fleet *f, const struct cfg_node *cn)
{
    if (cn->cluster[0])
        for (int i = 0; i < f->nworlds; i++)
            if (f->worlds[i].cluster && strcmp(f->worlds[i].name, cn->cluster) == 0)
                return i;
    struct world *w = &f->worlds[f->nworlds];
    memset(w, 0, sizeof *w);
    w->cluster = cn->cluster[0] != '\0';
    snprintf(w->name, sizeof w->name, "%s", w->cluster ? cn->cluster : cn->name);
    return f->nworlds++;
}

static void add_hosts(const char **hosts, size_t *nh, const struct cfg_node *cn)
{
    for (int h = 0; h < cn->nhosts; h++) {
        bool dup = false;
        for (size_t k = 0; k < *nh && !dup; k++)
            dup = strcmp(hosts[k], cn->hosts[h]) == 0;
        if (!dup && *nh < CFG_MAX_NODES * CFG_MAX_HOSTS)
            hosts[(*nh)++] = cn->hosts[h];
    }
}

static struct nstate *find_node(struct fleet *f, const char *name)
{
    for (int i = 0; i < f->nnodes; i++)
        if (strcmp(f->nodes[i].name, name) == 0)
            return &f->nodes[i];
    return NULL;
}

/* Set on the threads of a refresh: its own failed reads and probes are
 * judged by apply_world, not by the client's failure hook. */
static _Thread_local bool tl_refreshing;

static bool node_suspect(struct fleet *f, const char *node, const char *why);

/* libpve's hook: a call on a node failed at the network level (an
 * operation of any job, a task poll, a read): the node is down at once
 * rather than at the next refresh, which in a cluster could still show it
 * online while every call to it hangs. */
static void on_node_failure(void *ud, const char *node, const struct pve_error *e)
{
    if (tl_refreshing)
        return;
    if (!e->closed || !node_suspect(ud, node, e->message))
        fleet_node_failed(ud, node, e->message);
}

/* libpve's hook: a call on a node succeeded, so the node answered after
 * sent_ms; its active probe waits a full interval from then. */
static void on_node_answer(void *ud, const char *node, int64_t sent_ms)
{
    struct fleet *f = ud;
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    if (n && sent_ms > n->alive_ms)
        n->alive_ms = sent_ms;
    pthread_mutex_unlock(&f->mu);
}

/* The probe's timeout: a node that does not answer a status read within
 * twice the connect timeout (at most the operation timeout) is hung. */
static long probe_timeout_ms(const struct proxd_config *cfg)
{
    long t = cfg->connect_timeout_s * 2000L;
    return t < cfg->timeout_s * 1000L ? t : cfg->timeout_s * 1000L;
}

static int make_client(struct fleet *f, const struct proxd_config *cfg, struct world *w, char *err,
                       size_t errlen)
{
    const char *hosts[CFG_MAX_NODES * CFG_MAX_HOSTS];
    size_t nh = 0;
    for (int i = 0; i < w->nnodes; i++)
        add_hosts(hosts, &nh, &cfg->nodes[w->nodes[i]]);
    struct pve_config pc = {
        .hosts = hosts,
        .nhosts = nh,
        .token = cfg->token[0] ? cfg->token : NULL,
        .user = cfg->user[0] ? cfg->user : NULL,
        .password = cfg->password[0] ? cfg->password : NULL,
        .password_file = cfg->password_file[0] ? cfg->password_file : NULL,
        .ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL,
        .fingerprint = cfg->fingerprint[0] ? cfg->fingerprint : NULL,
        .insecure = !cfg->verify_tls && !cfg->fingerprint[0] && !cfg->ca_file[0],
        .connect_timeout_ms = cfg->connect_timeout_s * 1000L,
        .timeout_ms = cfg->timeout_s * 1000L,
        .probe_timeout_ms = probe_timeout_ms(cfg),
        .ticket_lifetime_s = cfg->ticket_lifetime_s,
        .ticket_renew_s = cfg->ticket_renew_s,
        .json_bodies = cfg->json_bodies,
        .name = w->name,
        .on_node_failure = on_node_failure, /* not for probes: they judge for themselves */
        .on_node_answer = on_node_answer,
        .hook_ud = f,
    };
    struct pve_error pe;
    pve_client *c = pve_client_new(&pc, &pe);
    w->client = c;
    if (!c) {
        snprintf(err, errlen, "world '%s': %s", w->name, pe.message);
        return -1;
    }
    return 0;
}

/* ---- the compact VM table -------------------------------------------------- */

static void vmtab_init(struct vmtab *t)
{
    memset(t, 0, sizeof *t);
    buf_init(&t->pool, BUF_UNLIMITED);
}

static void vmtab_free(struct vmtab *t)
{
    free(t->v);
    buf_release(&t->pool);
    vmtab_init(t);
}

/* Append a record whose texts are given separately (cut to the sizes of
 * struct fleet_vm's fields, as the inventory always did). */
static void vmtab_add(struct vmtab *t, const struct vmrec *r, const char *status, const char *name,
                      const char *tags, const char *lock)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 256;
        t->v = xrealloc(t->v, t->cap * sizeof *t->v);
    }
    struct vmrec *v = &t->v[t->n++];
    *v = *r;
    v->text = (uint32_t)t->pool.len;
    const struct fleet_vm *fv = NULL;
    const char *texts[4] = {status, name, tags, lock};
    const size_t max[4] = {sizeof fv->status, sizeof fv->name, sizeof fv->tags, sizeof fv->lock};
    for (int i = 0; i < 4; i++) {
        size_t len = strnlen(texts[i] ? texts[i] : "", max[i] - 1);
        buf_add(&t->pool, texts[i] ? texts[i] : "", len);
        buf_addc(&t->pool, '\0');
    }
}

/* The texts of t->v[i]: status, name, tags, lock. */
static void vmtab_texts(const struct vmtab *t, size_t i, const char *out[4])
{
    const char *p = t->pool.data + t->v[i].text;
    for (int k = 0; k < 4; k++) {
        out[k] = p;
        p += strlen(p) + 1;
    }
}

/* Copy record i of `from` to the end of `to`. */
static void vmtab_copy(struct vmtab *to, const struct vmtab *from, size_t i)
{
    const char *tx[4];
    vmtab_texts(from, i, tx);
    vmtab_add(to, &from->v[i], tx[0], tx[1], tx[2], tx[3]);
}

struct fleet *fleet_new(const struct proxd_config *cfg, char *err, size_t errlen)
{
    struct fleet *f = xcalloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->seen = fleet_seen_new();
    cond_init_mono(&f->probe_cv);
    cond_init_mono(&f->suspect_cv);
    vmtab_init(&f->vms);
    f->quick_ms = cfg->connect_timeout_s * 1000L / 2;
    f->lag_ms = cfg->stats_lag_s * 1000LL;
    if (f->quick_ms <= 0 || f->quick_ms > QUICK_FAILURE_MS)
        f->quick_ms = QUICK_FAILURE_MS;
    for (int i = 0; i < cfg->nnodes; i++) {
        const struct cfg_node *cn = &cfg->nodes[i];
        int wi = world_for(f, cn);
        struct world *w = &f->worlds[wi];
        w->nodes[w->nnodes++] = i;
        struct nstate *n = &f->nodes[f->nnodes++];
        snprintf(n->name, sizeof n->name, "%s", cn->name);
        snprintf(n->v.name, sizeof n->v.name, "%s", cn->name);
        snprintf(n->storage, sizeof n->storage, "%s", cn->storage);
        n->world = wi;
    }
    for (int i = 0; i < f->nworlds; i++) {
        if (make_client(f, cfg, &f->worlds[i], err, errlen)) {
            fleet_free(f);
            return NULL;
        }
    }
    return f;
}

void fleet_free(struct fleet *f)
{
    if (!f)
        return;
    fleet_probe_stop(f);
    for (int i = 0; i < f->nworlds; i++) {
        pve_client_free(f->worlds[i].client);
        ids_free(&f->worlds[i].held);
        cts_free(&f->worlds[i].cts);
    }
    vmtab_free(&f->vms);
    fleet_seen_free(f->seen);
    pthread_cond_destroy(&f->probe_cv);
    pthread_cond_destroy(&f->suspect_cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

pve_client *fleet_client(struct fleet *f, const char *node)
{
    struct nstate *n = find_node(f, node);
    return n ? f->worlds[n->world].client : NULL;
}

/* Index of a node proxd manages, or -1. Node names and their worlds never
 * change after fleet_new, so this needs no lock. */
static int node_index(const struct fleet *f, const char *name)
{
    for (int i = 0; i < f->nnodes; i++)
        if (strcmp(f->nodes[i].name, name) == 0)
            return i;
    return -1;
}

static const char *node_name(const struct fleet *f, unsigned idx)
{
    return idx < CFG_MAX_NODES ? f->nodes[idx].name : f->extra[idx - CFG_MAX_NODES];
}

/* ---- refresh ------------------------------------------------------------- */

/* What one answer said about a node of the world it refreshes. */
struct node_seen {
    bool node, storage; /* its node and VM storage records were in the answer */
    bool online, shared;
    int maxcpu;
    int64_t maxmem, mem, st_total, st_used;
    int nvms;
};

struct refresh_job {
    struct fleet *f;
    int world;
    int64_t started;                      /* unix ms, before the call */
    struct vmtab vms;                     /* the world's VMs, in the answer's order */
    struct node_seen seen[CFG_MAX_NODES]; /* by index into f->nodes */
    int rc;
    struct pve_error err;
    bool probe[CFG_MAX_NODES]; /* failed nodes to probe in this world */
    bool probe_ok[CFG_MAX_NODES];
    struct ids held; /* VMIDs of guests proxd does not manage (world.held) */
    struct cts cts;  /* its containers on nodes proxd manages (world.cts) */
};

/* One resource of the answer, straight into the job's compact form: the
 * answer is never held whole (see pve_cluster_resources_each). */
static int on_resource(const struct pve_resource *r, void *ud)
{
    struct refresh_job *j = ud;
    int ni = node_index(j->f, r->node);
    if (r->type == PVE_RES_CT || (ni < 0 && r->type == PVE_RES_VM)) {
        /* a container, or a VM on a node proxd does not manage: not its
         * VM, but its VMID is taken (a creation given it met "already
         * exists"). The node and storage figures already count what it
         * uses: they are the host's */
        ids_add(&j->held, r->vmid);
        if (r->type == PVE_RES_CT && ni >= 0 && j->f->nodes[ni].world == j->world) {
            struct ctrec c = {.vmid = r->vmid,
                              .node = (uint16_t)ni,
                              .tmpl = r->tmpl,
                              .running = strcmp(r->status, "running") == 0};
            cts_add(&j->cts, &c);
        }
        return 0;
    }
    if (ni < 0 || j->f->nodes[ni].world != j->world)
        return 0; /* a node proxd does not manage */
    struct node_seen *s = &j->seen[ni];
    if (r->type == PVE_RES_NODE) {
        s->node = true;
        s->online = strcmp(r->status, "online") == 0;
        s->maxcpu = r->maxcpu;
        s->maxmem = r->maxmem;
        s->mem = r->mem;
    } else if (r->type == PVE_RES_STORAGE && strcmp(r->storage, j->f->nodes[ni].storage) == 0) {
        s->storage = true;
        s->st_total = r->maxdisk;
        s->st_used = r->disk;
        s->shared = r->shared;
    } else if (r->type == PVE_RES_VM) {
        struct vmrec v = {.vmid = r->vmid,
                          .node = (uint16_t)ni,
                          .tmpl = r->tmpl,
                          .maxcpu = r->maxcpu,
                          .maxmem = r->maxmem,
                          .maxdisk = r->maxdisk};
        vmtab_add(&j->vms, &v, r->status, r->name, r->tags, r->lock);
        s->nvms++;
    }
    return 0;
}

static void *refresh_thread(void *arg)
{
    struct refresh_job *j = arg;
    struct world *w = &j->f->worlds[j->world];
    tl_refreshing = true;
    /* one send: a world that does not answer is marked down now and asked
     * again by a later refresh (backoff), never waited on five times */
    int64_t t0 = mono_ms();
    j->rc =
        pve_cluster_resources_each_ex(w->client, NULL, PVE_CALL_NORETRY, on_resource, j, &j->err);
    if (j->rc == PVE_E_NETWORK && mono_ms() - t0 < j->f->quick_ms) {
        /* a quick failure (a reset, a refused connection, a 502) may be a
         * blip: one more try before the whole world counts as down; a
         * timeout is not tried again */
        vmtab_free(&j->vms);
        ids_free(&j->held);
        cts_free(&j->cts);
        memset(j->seen, 0, sizeof j->seen);
        sleep_ms(QUICK_RETRY_MS);
        j->rc = pve_cluster_resources_each_ex(w->client, NULL, PVE_CALL_NORETRY, on_resource, j,
                                              &j->err);
    }
    if (j->rc) { /* whatever came before the failure is not an inventory */
        vmtab_free(&j->vms);
        ids_free(&j->held);
        cts_free(&j->cts);
        memset(j->seen, 0, sizeof j->seen);
    }
    /* a node that failed an operation is only trusted again after a direct
     * call through it works (a hung node still looks online to the cluster) */
    for (int i = 0; j->rc == 0 && i < w->nnodes; i++) {
        if (!j->probe[i])
            continue;
        char path[128];
        struct pve_error e;
        pve_path(path, sizeof path, "/nodes/%s/status", j->f->nodes[w->nodes[i]].name);
        j->probe_ok[i] = pve_call_ex(w->client, "GET", path, NULL, PVE_CALL_PROBE, NULL, &e) == 0;
    }
    tl_refreshing = false;
    return NULL;
}

/* The world's VMs become those of its answer; the other worlds' (and those
 * on nodes proxd does not manage) stay, in their order, before them. */
static void vms_replace_world(struct fleet *f, struct refresh_job *j)
{
    size_t kept = 0;
    for (size_t i = 0; i < f->vms.n; i++) {
        unsigned ni = f->vms.v[i].node;
        kept += !(ni < CFG_MAX_NODES && f->nodes[ni].world == j->world);
    }
    if (kept == 0) { /* one world, the usual case: take the answer's table */
        vmtab_free(&f->vms);
        f->vms = j->vms;
        vmtab_init(&j->vms);
        return;
    }
    struct vmtab t;
    vmtab_init(&t);
    t.cap = kept + j->vms.n + 1;
    t.v = xmalloc(t.cap * sizeof *t.v);
    for (size_t i = 0; i < f->vms.n; i++) {
        unsigned ni = f->vms.v[i].node;
        if (!(ni < CFG_MAX_NODES && f->nodes[ni].world == j->world))
            vmtab_copy(&t, &f->vms, i);
    }
    for (size_t i = 0; i < j->vms.n; i++)
        vmtab_copy(&t, &j->vms, i);
    vmtab_free(&f->vms);
    f->vms = t;
}

static void mark_failed(struct nstate *n, const char *why, int64_t now)
{
    n->backoff = n->failed ? n->backoff * 2 : BACKOFF_MIN_MS;
    if (n->backoff > BACKOFF_MAX_MS)
        n->backoff = BACKOFF_MAX_MS;
    n->failed = true;
    n->retry_at = now + n->backoff;
    snprintf(n->v.last_error, sizeof n->v.last_error, "%s", why);
}

static void apply_world(struct fleet *f, struct refresh_job *j, int64_t now)
{
    struct world *w = &f->worlds[j->world];
    w->asked = true;
    if (j->rc) {
        w->backoff = w->backoff ? w->backoff * 2 : BACKOFF_MIN_MS;
        if (w->backoff > BACKOFF_MAX_MS)
            w->backoff = BACKOFF_MAX_MS;
        w->next_try = now + w->backoff;
        bool answered = j->rc != PVE_E_NETWORK && j->rc != PVE_E_PERMISSION && j->rc != PVE_E_TLS;
        if (answered && w->good && ++w->errors < ANSWERED_ERRORS_MAX) {
            log_warn("fleet",
                     "world %s: inventory read failed: %s (its last inventory is kept; "
                     "next try in %lld ms)",
                     w->name, j->err.message, (long long)w->backoff);
            return;
        }
        for (int i = 0; i < w->nnodes; i++) {
            struct nstate *n = &f->nodes[w->nodes[i]];
            n->online = false;
            n->v.up = false;
            snprintf(n->v.last_error, sizeof n->v.last_error, "%.255s", j->err.message);
        }
        log_warn("fleet", "world %s unreachable: %s (next try in %lld ms)", w->name, j->err.message,
                 (long long)w->backoff);
        return;
    }
    w->backoff = 0;
    w->next_try = 0;
    w->good = true;
    w->errors = 0;
    vms_replace_world(f, j);
    ids_free(&w->held);
    w->held = j->held;
    memset(&j->held, 0, sizeof j->held);
    cts_free(&w->cts);
    w->cts = j->cts;
    memset(&j->cts, 0, sizeof j->cts);
    for (int i = 0; i < w->nnodes; i++) {
        struct nstate *n = &f->nodes[w->nodes[i]];
        n->online = false;
        n->v.nvms = 0;
        if (j->probe[i] && j->probe_ok[i]) {
            n->failed = false;
            n->backoff = 0;
            log_info("fleet", "node %s answers again", n->name);
        } else if (j->probe[i]) {
            mark_failed(n, "still unreachable", now);
        }
    }
    for (int i = 0; i < w->nnodes; i++) {
        struct nstate *n = &f->nodes[w->nodes[i]];
        const struct node_seen *s = &j->seen[w->nodes[i]];
        if (s->node) {
            n->online = s->online;
            n->v.known = true;
            n->v.cpus = s->maxcpu;
            n->v.mem_total = s->maxmem;
            n->v.mem_used = s->mem;
        }
        if (s->storage) {
            n->v.st_total = s->st_total;
            n->v.st_used = s->st_used;
            n->v.st_avail = s->st_total > s->st_used ? s->st_total - s->st_used : 0;
            /* a standalone host's "shared" storage is shared with no node we know */
            char pool[sizeof n->v.pool] = "";
            if (s->shared && w->cluster)
                snprintf(pool, sizeof pool, "%s/%s", w->name, n->storage);
            memcpy(n->v.pool, pool, sizeof pool);
        }
        n->v.nvms = s->nvms;
    }
    for (int i = 0; i < w->nnodes; i++) {
        struct nstate *n = &f->nodes[w->nodes[i]];
        if (!n->online) /* else placement's reason would be "not reachable" */
            snprintf(n->v.last_error, sizeof n->v.last_error, "%s",
                     n->v.known ? "offline (as the cluster reports it)"
                                : "not among the cluster's nodes");
        n->v.up = n->online && !n->failed;
        n->v.refreshed_at = now;
        /* the node's memory and storage figures in /cluster/resources come
         * from the RRD cache each node's pvestatd fills about every 10 s
         * (then spread by pmxcfs): a VM made just before the read may not
         * be in them yet. A reservation settled after seen_since counts
         * (store_settle_capacity): as of the read's start, the room of a VM
         * just made was free again before the figures showed it */
        n->v.seen_since = j->started - f->lag_ms;
    }
}

void fleet_set_task_registry(struct fleet *f, const struct pve_task_registry *r)
{
    for (int w = 0; w < f->nworlds; w++)
        pve_client_set_task_registry(f->worlds[w].client, r);
}

void fleet_set_notify(struct fleet *f, void (*fn)(void *ud, unsigned notes), void *ud)
{
    f->notify = fn;
    f->notify_ud = ud;
}

static void tell(struct fleet *f, unsigned notes)
{
    if (notes && f->notify)
        f->notify(f->notify_ud, notes);
}

/* Under f->mu: a read of the inventory for a decision. One younger than
 * FRESH_MS (or being read again: a refresh began less than FRESH_MS ago,
 * and its view comes anyway) serves it as a new read would, and a read now
 * would serve no one: a burst of placements on a fresh view asked for a read 5 s later
 * that the next burst, 40 s on, found as old as any (two of the four
 * whole-inventory reads of a 20-creation run at real speed). So only a
 * decision on an older view brings the next read, at once; the first such
 * since a refresh began tells the keeper. */
static unsigned wanted(struct fleet *f)
{
    int64_t now = mono_ms();
    if (f->read_began_ms && now - f->read_began_ms < FRESH_MS)
        return 0;
    f->wanted_ms = now;
    if (f->want_told)
        return 0;
    f->want_told = true;
    return FLEET_NOTE_WANTED;
}

/* Under f->mu: has any node's health (not asked yet, down, up) changed
 * since the last call? */
static unsigned health_moved(struct fleet *f)
{
    unsigned notes = 0;
    for (int i = 0; i < f->nnodes; i++) {
        const struct nstate *n = &f->nodes[i];
        signed char h = n->v.refreshed_at == 0 ? 0 : n->online && !n->failed ? 2 : 1;
        if (f->told[i] != h) {
            f->told[i] = h;
            notes |= FLEET_NOTE_HEALTH | (h == 1 ? FLEET_NOTE_DOWN : 0);
        }
    }
    return notes;
}

void fleet_refresh(struct fleet *f, bool force)
{
    struct refresh_job *jobs = xcalloc((size_t)f->nworlds + 1, sizeof *jobs);
    pthread_t th[CFG_MAX_NODES];
    bool started[CFG_MAX_NODES] = {false};
    int nj = 0;
    int64_t now = wall_ms();
    pthread_mutex_lock(&f->mu);
    f->want_told = false; /* a read from now on wants the next one */
    for (int i = 0; i < f->nworlds; i++) {
        struct world *w = &f->worlds[i];
        if (!force && w->next_try > now)
            continue;
        struct refresh_job *j = &jobs[nj++];
        j->f = f;
        j->world = i;
        j->started = now;
        vmtab_init(&j->vms);
        for (int k = 0; k < w->nnodes; k++) {
            struct nstate *n = &f->nodes[w->nodes[k]];
            j->probe[k] = n->failed && (force || n->retry_at <= now);
        }
    }
    if (nj)
        f->read_began_ms = mono_ms();
    pthread_mutex_unlock(&f->mu);
    /* Worlds are asked in parallel, but the first on this thread: with a
     * single cluster (the usual set-up) no thread is made at all. */
    for (int i = 1; i < nj; i++)
        started[i] = mem_thread_start(&th[i], refresh_thread, &jobs[i]) == 0;
    for (int i = 0; i < nj; i++)
        if (!started[i])
            refresh_thread(&jobs[i]);
    for (int i = 1; i < nj; i++)
        if (started[i])
            pthread_join(th[i], NULL);
    now = wall_ms();
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < nj; i++)
        apply_world(f, &jobs[i], now);
    unsigned notes = health_moved(f);
    pthread_mutex_unlock(&f->mu);
    tell(f, notes);
    for (int i = 0; i < nj; i++) {
        vmtab_free(&jobs[i].vms);
        ids_free(&jobs[i].held);
        cts_free(&jobs[i].cts);
    }
    free(jobs);
    mem_release();
}

/* ---- queries and reports -------------------------------------------------- */

bool fleet_ready(struct fleet *f)
{
    pthread_mutex_lock(&f->mu);
    bool ready = true;
    for (int i = 0; i < f->nworlds && ready; i++)
        ready = f->worlds[i].asked;
    pthread_mutex_unlock(&f->mu);
    return ready;
}

int64_t fleet_refresh_next(struct fleet *f, int64_t last_ms)
{
    int64_t next = last_ms + IDLE_MS, soon = last_ms + FRESH_MS;
    int64_t now = mono_ms(), wall = wall_ms();
    pthread_mutex_lock(&f->mu);
    if (f->wanted_ms >= last_ms)
        next = soon;
    /* a down world or node is tried again at its backoff's end, but no
     * sooner than FRESH_MS after the last refresh (every world is read) */
    for (int i = 0; i < f->nworlds; i++)
        if (f->worlds[i].next_try > 0) {
            int64_t t = now + (f->worlds[i].next_try - wall);
            next = t < next ? (t > soon ? t : soon) : next;
        }
    for (int i = 0; i < f->nnodes; i++)
        if (f->nodes[i].failed) {
            int64_t t = now + (f->nodes[i].retry_at - wall);
            next = t < next ? (t > soon ? t : soon) : next;
        }
    pthread_mutex_unlock(&f->mu);
    return next;
}

static int node_view(struct fleet *f, const char *node, struct node_view *out, bool want)
{
    pthread_mutex_lock(&f->mu);
    unsigned notes = want ? wanted(f) : 0;
    struct nstate *n = find_node(f, node);
    if (n) {
        *out = n->v;
        out->up = n->online && !n->failed;
        out->retry_at = n->failed ? n->retry_at : 0;
    }
    pthread_mutex_unlock(&f->mu);
    tell(f, notes);
    return n ? 0 : -1;
}

int fleet_node_view(struct fleet *f, const char *node, struct node_view *out)
{
    return node_view(f, node, out, true);
}

int fleet_node_peek(struct fleet *f, const char *node, struct node_view *out)
{
    return node_view(f, node, out, false);
}

void fleet_node_failed(struct fleet *f, const char *node, const char *why)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    if (n && n->failed) {
        /* only a failed probe lengthens the backoff: calls that fail on a
         * node already held down (the jobs that were running on it) would
         * push its next probe a minute out after a short outage */
        snprintf(n->v.last_error, sizeof n->v.last_error, "%s", why);
    } else if (n) {
        mark_failed(n, why, wall_ms());
        n->v.up = false;
        log_warn("fleet", "node %s marked down: %s (probe again in %lld ms)", node, why,
                 (long long)n->backoff);
    }
    unsigned notes = health_moved(f);
    pthread_mutex_unlock(&f->mu);
    tell(f, notes);
}

void fleet_node_ok(struct fleet *f, const char *node)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    if (n && n->failed) {
        n->failed = false;
        n->backoff = 0;
        n->v.up = n->online;
    }
    unsigned notes = health_moved(f);
    pthread_mutex_unlock(&f->mu);
    tell(f, notes);
}

bool fleet_node_fresh(struct fleet *f, const char *node, int64_t since)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    bool fresh = false;
    if (n) {
        struct world *w = &f->worlds[n->world];
        fresh = w->backoff == 0 && n->v.refreshed_at >= since;
    }
    pthread_mutex_unlock(&f->mu);
    return fresh;
}

bool fleet_node_up(struct fleet *f, const char *node)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    bool up = n && n->online && !n->failed;
    pthread_mutex_unlock(&f->mu);
    return up;
}

bool fleet_node_held_down(struct fleet *f, const char *node)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    bool down = n && (n->failed || (f->worlds[n->world].asked && !n->online));
    pthread_mutex_unlock(&f->mu);
    return down;
}

/* Under f->mu: is node index `on` (of the table; an unmanaged node's is
 * beyond nnodes) a managed node in the world of managed node ni? */
static bool in_world(const struct fleet *f, int on, int ni)
{
    return on < f->nnodes && f->nodes[on].world == f->nodes[ni].world;
}

int fleet_vm_node(struct fleet *f, int vmid, const char *near, char node[64])
{
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    int ni = near && near[0] ? node_index(f, near) : -1;
    for (size_t i = 0; i < f->vms.n && rc; i++) {
        int on = f->vms.v[i].node;
        if (f->vms.v[i].vmid != vmid)
            continue;
        if (ni >= 0 && !in_world(f, on, ni))
            continue;
        snprintf(node, 64, "%s", node_name(f, on));
        rc = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

bool fleet_same_world(struct fleet *f, const char *a, const char *b)
{
    pthread_mutex_lock(&f->mu);
    int ia = node_index(f, a), ib = node_index(f, b);
    bool same = ia >= 0 && ib >= 0 && in_world(f, ia, ib);
    pthread_mutex_unlock(&f->mu);
    return same;
}

bool fleet_one_world(struct fleet *f, const char *node)
{
    pthread_mutex_lock(&f->mu);
    int ni = node_index(f, node);
    bool one = ni >= 0 && ni < f->nnodes;
    for (int i = 0; one && i < f->nnodes; i++)
        one = in_world(f, i, ni);
    pthread_mutex_unlock(&f->mu);
    return one;
}

/* Record i of the table as the header's struct. Under f->mu. */
static void vm_out(struct fleet *f, size_t i, struct fleet_vm *v)
{
    const struct vmrec *r = &f->vms.v[i];
    const char *tx[4];
    vmtab_texts(&f->vms, i, tx);
    v->vmid = r->vmid;
    snprintf(v->node, sizeof v->node, "%s", node_name(f, r->node));
    snprintf(v->status, sizeof v->status, "%s", tx[0]);
    snprintf(v->name, sizeof v->name, "%s", tx[1]);
    snprintf(v->tags, sizeof v->tags, "%s", tx[2]);
    snprintf(v->lock, sizeof v->lock, "%s", tx[3]);
    v->tmpl = r->tmpl;
    v->maxcpu = r->maxcpu;
    v->maxmem = r->maxmem;
    v->maxdisk = r->maxdisk;
}

int fleet_vms(struct fleet *f, struct fleet_vm **out, size_t *n)
{
    pthread_mutex_lock(&f->mu);
    *n = f->vms.n;
    struct fleet_vm *v = xcalloc(f->vms.n + 1, sizeof *v);
    for (size_t i = 0; i < f->vms.n; i++)
        vm_out(f, i, &v[i]);
    pthread_mutex_unlock(&f->mu);
    *out = v;
    return 0;
}

int fleet_cts(struct fleet *f, struct fleet_vm **out, size_t *n)
{
    pthread_mutex_lock(&f->mu);
    size_t all = 0;
    for (int w = 0; w < f->nworlds; w++)
        all += f->worlds[w].cts.n;
    struct fleet_vm *v = xcalloc(all + 1, sizeof *v);
    *n = 0;
    for (int w = 0; w < f->nworlds; w++)
        for (size_t i = 0; i < f->worlds[w].cts.n; i++) {
            const struct ctrec *c = &f->worlds[w].cts.v[i];
            struct fleet_vm *o = &v[(*n)++];
            o->vmid = c->vmid;
            snprintf(o->node, sizeof o->node, "%s", f->nodes[c->node].name);
            snprintf(o->status, sizeof o->status, "%s", c->running ? "running" : "stopped");
            o->tmpl = c->tmpl;
        }
    pthread_mutex_unlock(&f->mu);
    *out = v;
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Under f->mu: when the read behind the whole inventory began (the
 * earliest of the worlds' last reads), or 0 when some world's last read
 * failed or none has answered yet: its VMs are unseen, not gone. */
static int64_t inventory_since(const struct fleet *f)
{
    int64_t since = INT64_MAX;
    for (int w = 0; w < f->nworlds; w++) {
        const struct world *wd = &f->worlds[w];
        if (!wd->asked || !wd->good || wd->backoff != 0 || wd->nnodes == 0)
            return 0;
        for (int i = 0; i < wd->nnodes; i++) {
            int64_t s = f->nodes[wd->nodes[i]].v.seen_since;
            if (s <= 0)
                return 0;
            since = s < since ? s : since;
        }
    }
    return f->nworlds ? since : 0;
}

int *fleet_taken_vmids_since(struct fleet *f, size_t *n, int64_t *since)
{
    pthread_mutex_lock(&f->mu);
    unsigned notes = wanted(f);
    if (since)
        *since = inventory_since(f);
    size_t all = f->vms.n;
    for (int w = 0; w < f->nworlds; w++)
        all += f->worlds[w].held.n;
    int *ids = xmalloc((all + 1) * sizeof *ids);
    for (size_t i = 0; i < f->vms.n; i++)
        ids[i] = f->vms.v[i].vmid;
    *n = f->vms.n;
    for (int w = 0; w < f->nworlds; w++)
        for (size_t i = 0; i < f->worlds[w].held.n; i++)
            ids[(*n)++] = f->worlds[w].held.v[i];
    pthread_mutex_unlock(&f->mu);
    tell(f, notes);
    qsort(ids, *n, sizeof *ids, cmp_int);
    size_t k = 0; /* a VM the core noted on a node it does not manage may be in both */
    for (size_t i = 0; i < *n; i++)
        if (k == 0 || ids[k - 1] != ids[i])
            ids[k++] = ids[i];
    *n = k;
    return ids;
}

int *fleet_taken_vmids(struct fleet *f, size_t *n)
{
    return fleet_taken_vmids_since(f, n, NULL);
}

/* The node index of a name for a VM record: a managed node's, else one of
 * the extra names (-1 when they are all taken). Under f->mu. */
static int intern_node(struct fleet *f, const char *node)
{
    int ni = node_index(f, node);
    if (ni >= 0)
        return ni;
    for (int i = 0; i < f->nextra; i++)
        if (strncmp(f->extra[i], node, sizeof f->extra[i] - 1) == 0)
            return CFG_MAX_NODES + i;
    if (f->nextra == MAX_EXTRA_NODES)
        return -1;
    snprintf(f->extra[f->nextra], sizeof f->extra[f->nextra], "%s", node);
    return CFG_MAX_NODES + f->nextra++;
}

void fleet_vm_added(struct fleet *f, int vmid, const char *node)
{
    pthread_mutex_lock(&f->mu);
    int ni = intern_node(f, node);
    bool have = ni < 0;
    for (size_t i = 0; i < f->vms.n && !have; i++)
        have = f->vms.v[i].vmid == vmid && f->vms.v[i].node == ni;
    if (!have) {
        struct vmrec v = {.vmid = vmid, .node = (uint16_t)ni};
        vmtab_add(&f->vms, &v, "unknown", "", "", "");
    }
    pthread_mutex_unlock(&f->mu);
    if (ni < 0)
        log_warn("fleet", "VM %d on node %s not noted: too many unknown nodes", vmid, node);
}

int fleet_vm_find(struct fleet *f, const char *node, int vmid, struct fleet_vm *out)
{
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    int ni = node_index(f, node);
    for (size_t i = 0; ni >= 0 && i < f->vms.n && rc; i++) {
        int on = f->vms.v[i].node;
        if (f->vms.v[i].vmid == vmid && in_world(f, on, ni)) {
            vm_out(f, i, out);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Its texts stay in the pool until the next refresh rebuilds the table. */
void fleet_vm_removed(struct fleet *f, int vmid, const char *node)
{
    pthread_mutex_lock(&f->mu);
    size_t k = 0;
    for (size_t i = 0; i < f->vms.n; i++)
        if (f->vms.v[i].vmid != vmid || (node && strcmp(node_name(f, f->vms.v[i].node), node)))
            f->vms.v[k++] = f->vms.v[i];
    f->vms.n = k;
    pthread_mutex_unlock(&f->mu);
}

/* ---- the active probe -------------------------------------------------------- */

/* A node that the cluster still shows online may hang (it takes TCP
 * connections and never answers, or the cluster's proxy to it times out):
 * without calls to it, nothing would notice. Each up node is asked for its
 * version (GET /nodes/N/version: proxied to the node as any node call, the
 * smallest answer a node gives, allowed to every user; its status, asked
 * before, is ten times the answer to parse, and needs Sys.Audit) when it
 * has given no sign of life for a probe interval; a network
 * failure marks it down at once. A sign of life is an answer to any call
 * sent at or after a moment (the probe's own, or a job's through the
 * world's client: on_node_answer): a node that hangs at h answered nothing
 * sent after h, so its probe is due at most one interval after h, while a
 * node that jobs keep calling costs no probe at all. Down nodes are probed
 * again by the refresh's backoff, which also brings them back.
 *
 * One thread (the prober) wakes when the first probe is due and glances at
 * the nodes due, one after another on the pool's warm connection: a
 * wake-up from idle costs ~0.5 ms of CPU on a virtual machine, a call
 * right after another a quarter of one alone (bench/results/callcost.txt),
 * and five threads each waking for its own node's probe paid that five
 * times. A glance has a short timeout (PVE_CALL_GLANCE): a node that does
 * not answer it is handed to a thread of its own, which probes it with the
 * full timeout and judges; so a hung node holds up the others' glances by
 * at most PVE_GLANCE_MS, not by the probe's timeout. Those threads sleep
 * until handed a node.
 *
 * The probes also keep each world's connection open. Servers close one
 * idle for 5 s, and a new one costs a TLS handshake: 3.5-3.8 M
 * instructions with curl 7.88 and OpenSSL 3.0 (a new SSL_CTX and a key
 * exchange each, resumed or not) against ~0.2 M for a call on an open one
 * (bench/results/instr.txt), and a key exchange on the node too. A probe
 * every 10 s always found its connection closed. So while a world's
 * connection is open, its probes are spent to keep it so: when it has been
 * idle KEEP_IDLE_MS (KEEP_SLACK_MS less, to share a wake-up with another
 * world's), the world's node due soonest is probed then, early, provided
 * its last sign of life is a third of an interval old: no node is probed
 * more than about three times an interval (a node of a cluster that jobs
 * keep calling is still never probed, its cluster's connection being in
 * use; a standalone host whose calls come more than 3 s apart may be, in
 * the gaps, which saves a handshake at its next call). A wake-up takes
 * along the world's nodes due within KEEP_IDLE_MS (half an interval at
 * most), so wake-ups come some 3 s apart, not one per node: with the
 * default 10 s and five nodes of a cluster, 3-4 wake-ups and 5-6 probes
 * per 10 s, and no new connection. A world whose
 * connection has closed (a longer interval, a pause) is probed as before:
 * its nodes due within half an interval, in one wake-up and on one new
 * connection. */
#define KEEP_IDLE_MS 3000 /* < PVE_OPEN_IDLE_MS */
#define KEEP_SLACK_MS 1000
#define MIN_NAP_MS 100 /* a round never follows the last sooner */

struct probe_arg {
    struct fleet *f;
    int node;
};

/* Wait under f->mu until mono ms `due` or a stop; true when stopping. */
static bool probe_sleep(struct fleet *f, int64_t due)
{
    int64_t left = due - mono_ms();
    if (left <= 0)
        return f->probe_stop;
    /* woken early (a suspect judged: its node is the prober's again), the
     * caller works out its next time again */
    struct timespec ts = deadline_in_ms(left);
    if (!f->probe_stop)
        pthread_cond_timedwait(&f->probe_cv, &f->mu, &ts);
    return f->probe_stop;
}

/* Under f->mu: whether node i is the prober's to probe, and when. */
static bool probe_due(struct fleet *f, int i, int64_t *due)
{
    struct nstate *n = &f->nodes[i];
    if (!f->worlds[n->world].asked || !n->online || n->failed || f->suspect[i])
        return false;
    int64_t seen = n->alive_ms > f->looked[i] ? n->alive_ms : f->looked[i];
    *due = seen + f->probe_every_ms;
    return true;
}

/* Under f->mu: when node i may be probed early to keep its world's
 * connection open (open: pve_client_open_until), that connection idle
 * KEEP_IDLE_MS less `slack`; 0 when not before it closes. */
static int64_t keep_at(struct fleet *f, int i, int64_t open, int64_t slack)
{
    int64_t due, every = f->probe_every_ms;
    if (!open || !probe_due(f, i, &due))
        return 0;
    int64_t idle = open - PVE_OPEN_IDLE_MS + KEEP_IDLE_MS - slack, third = due - every + every / 3;
    int64_t at = idle > third ? idle : third;
    return at < open ? at : 0;
}

/* Under f->mu: when the prober has something to do next. */
static int64_t probe_next(struct fleet *f, int64_t now)
{
    int64_t first = now + f->probe_every_ms, due;
    for (int w = 0; w < f->nworlds; w++) {
        int64_t open = pve_client_open_until(f->worlds[w].client);
        for (int k = 0; k < f->worlds[w].nnodes; k++) {
            int i = f->worlds[w].nodes[k];
            int64_t keep = open > now ? keep_at(f, i, open, 0) : 0;
            if (probe_due(f, i, &due) && due < first)
                first = due;
            if (keep && keep < first)
                first = keep;
        }
    }
    return first > now + MIN_NAP_MS ? first : now + MIN_NAP_MS;
}

/* One probe of node i (without f->mu); the answer is a sign of life. */
static int probe_once(struct fleet *f, int i, unsigned flags, struct pve_error *e)
{
    struct nstate *n = &f->nodes[i];
    char path[128];
    pve_path(path, sizeof path, "/nodes/%s/version", n->name);
    int64_t sent = mono_ms();
    int rc = pve_call_ex(f->worlds[n->world].client, "GET", path, NULL, flags, NULL, e);
    pthread_mutex_lock(&f->mu);
    f->looked[i] = sent;
    if (rc == PVE_OK && sent > n->alive_ms)
        n->alive_ms = sent;
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Under f->mu (dropped during the call): the prober's glance at node i. */
static void glance(struct fleet *f, int i)
{
    pthread_mutex_unlock(&f->mu);
    struct pve_error e;
    int rc = probe_once(f, i, PVE_CALL_PROBE | PVE_CALL_GLANCE, &e);
    pthread_mutex_lock(&f->mu);
    if (rc == PVE_E_NETWORK) { /* no verdict yet: its own thread judges */
        f->suspect[i] = true;
        pthread_cond_broadcast(&f->suspect_cv);
    }
}

/* Under f->mu: world w's probes due within KEEP_IDLE_MS (half an interval
 * at most) while its connection is open, within half an interval once it
 * has closed (each checked again just before: a call may have answered);
 * when none is and the open connection is about to close, the one probe
 * that keeps it open. */
static void probe_world(struct fleet *f, int w)
{
    struct world *wd = &f->worlds[w];
    int64_t now = mono_ms(), open = pve_client_open_until(wd->client), due;
    int64_t half = f->probe_every_ms / 2;
    int64_t ahead = open > now && KEEP_IDLE_MS < half ? KEEP_IDLE_MS : half;
    bool sent = false;
    for (int k = 0; k < wd->nnodes && !f->probe_stop; k++) {
        int i = wd->nodes[k];
        if (probe_due(f, i, &due) && due <= mono_ms() + ahead) {
            glance(f, i);
            sent = true;
        }
    }
    if (sent || open <= now || f->probe_stop)
        return;
    int best = -1;
    int64_t best_due = 0;
    for (int k = 0; k < wd->nnodes; k++) {
        int i = wd->nodes[k];
        int64_t keep = keep_at(f, i, open, KEEP_SLACK_MS);
        if (keep && keep <= now && probe_due(f, i, &due) && (best < 0 || due < best_due)) {
            best = i;
            best_due = due;
        }
    }
    if (best >= 0)
        glance(f, best);
}

static void *prober_main(void *arg)
{
    mem_thread_name("probe");
    struct fleet *f = arg;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nnodes; i++)
        f->looked[i] = mono_ms();
    while (!probe_sleep(f, probe_next(f, mono_ms())))
        for (int w = 0; w < f->nworlds && !f->probe_stop; w++)
            probe_world(f, w);
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* A node's own thread: the full probe of a node that failed a glance. */
static void *suspect_main(void *arg)
{
    mem_thread_name("probe-node");
    struct probe_arg pa = *(struct probe_arg *)arg;
    free(arg);
    struct fleet *f = pa.f;
    int i = pa.node;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!f->probe_stop && !f->suspect[i])
            pthread_cond_wait(&f->suspect_cv, &f->mu);
        if (f->probe_stop)
            break;
        pthread_mutex_unlock(&f->mu);
        struct pve_error e;
        if (probe_once(f, i, PVE_CALL_PROBE, &e) == PVE_E_NETWORK) {
            char why[300];
            snprintf(why, sizeof why, "does not answer a status probe: %.250s", e.message);
            fleet_node_failed(f, f->nodes[i].name, why);
        }
        pthread_mutex_lock(&f->mu);
        f->suspect[i] = false;
        pthread_cond_signal(&f->probe_cv); /* the prober counts it again */
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* A call's connection was closed by the node without an answer after the
 * request went out (a proxy or a pveproxy worker that gave up, a restart):
 * the node was there a moment ago, so it is not held down on that alone
 * (the API would refuse every request on its VMs meanwhile) but handed to
 * its own thread for a full probe now, which holds it down if it does not
 * answer (a restarting pveproxy refuses at once). False when no probe
 * runs, or the node is already down or being probed: the caller marks it
 * down as for any network failure. */
static bool node_suspect(struct fleet *f, const char *node, const char *why)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    int i = n ? (int)(n - f->nodes) : -1;
    bool taken = n && f->nprobes > 0 && !f->probe_stop && !n->failed && n->online;
    if (taken && !f->suspect[i]) {
        f->suspect[i] = true;
        pthread_cond_broadcast(&f->suspect_cv);
        log_info("fleet", "node %s closed a connection without an answer (%s): probing it", node,
                 why);
    }
    pthread_mutex_unlock(&f->mu);
    return taken;
}

int fleet_probe_start(struct fleet *f, int interval_ms)
{
    if (interval_ms <= 0 || f->nprobes)
        return 0;
    f->probe_every_ms = interval_ms;
    f->probe_stop = false;
    memset(f->suspect, 0, sizeof f->suspect);
    for (int i = 0; i < f->nnodes; i++) {
        struct probe_arg *pa = xmalloc(sizeof *pa);
        pa->f = f;
        pa->node = i;
        if (mem_thread_start(&f->probes[i], suspect_main, pa) != 0) {
            free(pa);
            fleet_probe_stop(f);
            return -1;
        }
        f->nprobes++;
    }
    if (mem_thread_start(&f->prober, prober_main, f) != 0) {
        fleet_probe_stop(f);
        return -1;
    }
    f->prober_up = true;
    return 0;
}

void fleet_probe_stop(struct fleet *f)
{
    pthread_mutex_lock(&f->mu);
    f->probe_stop = true;
    pthread_cond_broadcast(&f->probe_cv);
    pthread_cond_broadcast(&f->suspect_cv);
    pthread_mutex_unlock(&f->mu);
    if (f->prober_up)
        pthread_join(f->prober, NULL);
    f->prober_up = false;
    for (int i = 0; i < f->nprobes; i++)
        pthread_join(f->probes[i], NULL);
    f->nprobes = 0;
}
