#include "core/fleet.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/pve_api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define WORLD_PERIOD_MS 0 /* worlds that answer are refreshed whenever asked */

/* What the core put on a node since the inventory last looked: counted on
 * top of the node's reported use until a refresh that began later. */
struct world {
    char name[64];
    bool cluster;
    pve_client *client;
    int nodes[CFG_MAX_NODES]; /* indexes into fleet->nodes */
    int nnodes;
    int64_t next_try; /* unix ms: when a failed world may be asked again */
    int64_t backoff;
};

struct nstate {
    char name[64];
    int world;
    char storage[64];
    struct node_view v;
    bool online;      /* as the world reports it */
    bool failed;      /* an operation failed at the network level */
    int64_t retry_at; /* when a failed node is probed again */
    int64_t backoff;
};

struct fleet {
    pthread_mutex_t mu;
    struct world worlds[CFG_MAX_NODES];
    int nworlds;
    struct nstate nodes[CFG_MAX_NODES];
    int nnodes;
    struct fleet_vm *vms;
    size_t nvms, capvms;
};

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

static int make_client(struct fleet *f, const struct proxd_config *cfg, struct world *w,
                       char *err, size_t errlen)
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
        .json_bodies = cfg->json_bodies,
        .name = w->name,
    };
    struct pve_error pe;
    w->client = pve_client_new(&pc, &pe);
    if (!w->client) {
        snprintf(err, errlen, "world '%s': %s", w->name, pe.message);
        return -1;
    }
    (void)f;
    return 0;
}

struct fleet *fleet_new(const struct proxd_config *cfg, char *err, size_t errlen)
{
    struct fleet *f = xcalloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
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
    for (int i = 0; i < f->nworlds; i++)
        pve_client_free(f->worlds[i].client);
    free(f->vms);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static struct nstate *find_node(struct fleet *f, const char *name)
{
    for (int i = 0; i < f->nnodes; i++)
        if (strcmp(f->nodes[i].name, name) == 0)
            return &f->nodes[i];
    return NULL;
}

pve_client *fleet_client(struct fleet *f, const char *node)
{
    struct nstate *n = find_node(f, node);
    return n ? f->worlds[n->world].client : NULL;
}

/* ---- refresh ------------------------------------------------------------- */

struct refresh_job {
    struct fleet *f;
    int world;
    int64_t started; /* unix ms, before the call */
    struct pve_resource *res;
    size_t nres;
    int rc;
    struct pve_error err;
    bool probe[CFG_MAX_NODES]; /* failed nodes to probe in this world */
    bool probe_ok[CFG_MAX_NODES];
};

static void *refresh_thread(void *arg)
{
    struct refresh_job *j = arg;
    struct world *w = &j->f->worlds[j->world];
    j->rc = pve_cluster_resources(w->client, NULL, &j->res, &j->nres, &j->err);
    /* a node that failed an operation is only trusted again after a direct
     * call through it works (a hung node still looks online to the cluster) */
    for (int i = 0; j->rc == 0 && i < w->nnodes; i++) {
        if (!j->probe[i])
            continue;
        struct pve_node_status st;
        struct pve_error e;
        j->probe_ok[i] = pve_node_status(w->client, j->f->nodes[w->nodes[i]].name, &st, &e) == 0;
    }
    return NULL;
}

static void vms_remove_world(struct fleet *f, int world)
{
    size_t k = 0;
    for (size_t i = 0; i < f->nvms; i++) {
        struct nstate *n = find_node(f, f->vms[i].node);
        if (n && n->world == world)
            continue;
        f->vms[k++] = f->vms[i];
    }
    f->nvms = k;
}

static void vms_add(struct fleet *f, const struct pve_resource *r)
{
    if (f->nvms == f->capvms) {
        f->capvms = f->capvms ? f->capvms * 2 : 256;
        f->vms = xrealloc(f->vms, f->capvms * sizeof *f->vms);
    }
    struct fleet_vm *v = &f->vms[f->nvms++];
    memset(v, 0, sizeof *v);
    v->vmid = r->vmid;
    snprintf(v->node, sizeof v->node, "%s", r->node);
    snprintf(v->status, sizeof v->status, "%s", r->status);
    snprintf(v->name, sizeof v->name, "%.63s", r->name);
    snprintf(v->tags, sizeof v->tags, "%.127s", r->tags);
    snprintf(v->lock, sizeof v->lock, "%s", r->lock);
    v->tmpl = r->tmpl;
    v->maxcpu = r->maxcpu;
    v->maxmem = r->maxmem;
    v->maxdisk = r->maxdisk;
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
    if (j->rc) {
        w->backoff = w->backoff ? w->backoff * 2 : BACKOFF_MIN_MS;
        if (w->backoff > BACKOFF_MAX_MS)
            w->backoff = BACKOFF_MAX_MS;
        w->next_try = now + w->backoff;
        for (int i = 0; i < w->nnodes; i++) {
            struct nstate *n = &f->nodes[w->nodes[i]];
            n->online = false;
            n->v.up = false;
            snprintf(n->v.last_error, sizeof n->v.last_error, "%.255s", j->err.message);
        }
        log_warn("fleet", "world %s unreachable: %s (next try in %lld ms)", w->name,
                 j->err.message, (long long)w->backoff);
        return;
    }
    w->backoff = 0;
    w->next_try = 0;
    vms_remove_world(f, j->world);
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
    for (size_t k = 0; k < j->nres; k++) {
        struct pve_resource *r = &j->res[k];
        struct nstate *n = find_node(f, r->node);
        if (!n || n->world != j->world)
            continue; /* a node proxd does not manage */
        if (r->type == PVE_RES_NODE) {
            n->online = strcmp(r->status, "online") == 0;
            n->v.known = true;
            n->v.cpus = r->maxcpu;
            n->v.mem_total = r->maxmem;
            n->v.mem_used = r->mem;
        } else if (r->type == PVE_RES_STORAGE && strcmp(r->storage, n->storage) == 0) {
            n->v.st_total = r->maxdisk;
            n->v.st_used = r->disk;
            n->v.st_avail = r->maxdisk > r->disk ? r->maxdisk - r->disk : 0;
        } else if (r->type == PVE_RES_VM) {
            vms_add(f, r);
            n->v.nvms++;
        }
    }
    for (int i = 0; i < w->nnodes; i++) {
        struct nstate *n = &f->nodes[w->nodes[i]];
        if (!n->online) /* else placement's reason would be "not reachable" */
            snprintf(n->v.last_error, sizeof n->v.last_error, "%s",
                     n->v.known ? "offline (as the cluster reports it)"
                                : "not among the cluster's nodes");
        n->v.up = n->online && !n->failed;
        n->v.refreshed_at = now;
        n->v.seen_since = j->started;
    }
}

void fleet_refresh(struct fleet *f, bool force)
{
    struct refresh_job jobs[CFG_MAX_NODES];
    pthread_t th[CFG_MAX_NODES];
    int nj = 0;
    int64_t now = wall_ms();
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nworlds; i++) {
        struct world *w = &f->worlds[i];
        if (!force && w->next_try > now)
            continue;
        struct refresh_job *j = &jobs[nj++];
        memset(j, 0, sizeof *j);
        j->f = f;
        j->world = i;
        j->started = now;
        for (int k = 0; k < w->nnodes; k++) {
            struct nstate *n = &f->nodes[w->nodes[k]];
            j->probe[k] = n->failed && (force || n->retry_at <= now);
        }
    }
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < nj; i++)
        if (pthread_create(&th[i], NULL, refresh_thread, &jobs[i]) != 0)
            refresh_thread(&jobs[i]), th[i] = 0;
    for (int i = 0; i < nj; i++)
        if (th[i])
            pthread_join(th[i], NULL);
    now = wall_ms();
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < nj; i++)
        apply_world(f, &jobs[i], now);
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < nj; i++)
        free(jobs[i].res);
}

/* ---- queries and reports -------------------------------------------------- */

int fleet_node_view(struct fleet *f, const char *node, struct node_view *out)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    if (n) {
        *out = n->v;
        out->up = n->online && !n->failed;
    }
    pthread_mutex_unlock(&f->mu);
    return n ? 0 : -1;
}

void fleet_node_failed(struct fleet *f, const char *node, const char *why)
{
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    if (n) {
        mark_failed(n, why, wall_ms());
        n->v.up = false;
        log_warn("fleet", "node %s marked down: %s (probe again in %lld ms)", node, why,
                 (long long)n->backoff);
    }
    pthread_mutex_unlock(&f->mu);
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
    pthread_mutex_unlock(&f->mu);
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

int fleet_vm_node(struct fleet *f, int vmid, char node[64])
{
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nvms && rc; i++) {
        if (f->vms[i].vmid == vmid) {
            snprintf(node, 64, "%s", f->vms[i].node);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int fleet_vms(struct fleet *f, struct fleet_vm **out, size_t *n)
{
    pthread_mutex_lock(&f->mu);
    *n = f->nvms;
    *out = xmalloc((f->nvms + 1) * sizeof **out);
    memcpy(*out, f->vms, f->nvms * sizeof **out);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int *fleet_taken_vmids(struct fleet *f, size_t *n)
{
    pthread_mutex_lock(&f->mu);
    int *ids = xmalloc((f->nvms + 1) * sizeof *ids);
    for (size_t i = 0; i < f->nvms; i++)
        ids[i] = f->vms[i].vmid;
    *n = f->nvms;
    pthread_mutex_unlock(&f->mu);
    qsort(ids, *n, sizeof *ids, cmp_int);
    return ids;
}

void fleet_vm_added(struct fleet *f, int vmid, const char *node)
{
    struct pve_resource r = {.type = PVE_RES_VM, .vmid = vmid};
    snprintf(r.node, sizeof r.node, "%s", node);
    snprintf(r.status, sizeof r.status, "unknown");
    pthread_mutex_lock(&f->mu);
    bool have = false;
    for (size_t i = 0; i < f->nvms && !have; i++)
        have = f->vms[i].vmid == vmid && strcmp(f->vms[i].node, node) == 0;
    if (!have)
        vms_add(f, &r);
    pthread_mutex_unlock(&f->mu);
}

int fleet_vm_find(struct fleet *f, const char *node, int vmid, struct fleet_vm *out)
{
    int rc = -1;
    pthread_mutex_lock(&f->mu);
    struct nstate *n = find_node(f, node);
    for (size_t i = 0; n && i < f->nvms && rc; i++) {
        struct nstate *on = f->vms[i].vmid == vmid ? find_node(f, f->vms[i].node) : NULL;
        if (on && on->world == n->world) {
            *out = f->vms[i];
            rc = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void fleet_vm_removed(struct fleet *f, int vmid)
{
    pthread_mutex_lock(&f->mu);
    size_t k = 0;
    for (size_t i = 0; i < f->nvms; i++)
        if (f->vms[i].vmid != vmid)
            f->vms[k++] = f->vms[i];
    f->nvms = k;
    pthread_mutex_unlock(&f->mu);
}

