/* access: the credentials' privileges per node (access.h). */
#include "core/access.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/fleet.h"
#include "pve/pve_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 30000 /* a node whose check could not be made */

struct node_access {
    int64_t checked_at; /* unix ms; 0: never read whole */
    char error[256];
    struct access_missing *missing;
    size_t nmissing;
};

struct access {
    struct core *k;
    pthread_mutex_t mu; /* nodes[], poked */
    pthread_cond_t cv;  /* a poke, or the stop */
    bool poked;
    struct node_access nodes[CFG_MAX_NODES];
    pthread_t thread;
    bool started;
};

/* A job refused for a privilege asks for a check this soon after the last
 * one at the earliest (a burst of refusals makes one check). */
#define POKE_MIN_MS 10000

/* ---- what proxd needs ---------------------------------------------------- */

struct needs {
    struct access_need *v;
    size_t n, max, total;
};

static void need(struct needs *o, const char *privs, const char *path, const char *what, ...)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->v[i].privs, privs) == 0 && strcmp(o->v[i].path, path) == 0)
            return;
    o->total++;
    if (o->n == o->max)
        return;
    struct access_need *d = &o->v[o->n++];
    snprintf(d->privs, sizeof d->privs, "%s", privs);
    snprintf(d->path, sizeof d->path, "%s", path);
    va_list ap;
    va_start(ap, what);
    vsnprintf(d->what, sizeof d->what, what, ap);
    va_end(ap);
}

/* The privileges each step of a job checks (PVE 8.4 and 9.1, qemu-server's
 * API2/Qemu.pm and the API schema's permissions): clone: VM.Clone on the
 * template, VM.Allocate on the new VMID, Datastore.AllocateSpace on the
 * storage; the config write: per option (cores VM.Config.CPU, memory
 * VM.Config.Memory, name/description/tags VM.Config.Options, sshkeys,
 * ciuser, cipassword, nameserver, searchdomain, ipconfig0
 * VM.Config.Cloudinit or VM.Config.Network, net0 VM.Config.Network);
 * resize and disk moves VM.Config.Disk; power VM.PowerMgmt; destroy
 * VM.Allocate; snapshots VM.Snapshot (a rollback takes it or
 * VM.Snapshot.Rollback); migrate VM.Migrate; the config, status and
 * pending reads VM.Audit; the guest agent VM.Monitor (8.x) or
 * VM.GuestAgent.Audit/Unrestricted (9.x); a bridge SDN.Use on
 * /sdn/zones/localnetwork/BRIDGE[/VLAN]; node status Sys.Audit; storage
 * status and content Datastore.Audit or Datastore.AllocateSpace. */
static void vm_needs(struct needs *o, const char *os, int lo, bool nets)
{
    char p[96];
    snprintf(p, sizeof p, "/vms/%d", lo);
    need(o, "VM.Audit", p, "seeing %s VMs", os);
    need(o, "VM.Allocate", p, "creations and deletions of %s VMs", os);
    need(o, "VM.Config.CPU", p, "creations and resizes of %s VMs", os);
    need(o, "VM.Config.Memory", p, "creations and resizes of %s VMs", os);
    need(o, "VM.Config.Options", p, "creations of %s VMs (name, description, tags)", os);
    need(o, "VM.Config.Cloudinit|VM.Config.Network", p, "creations of %s VMs (SSH keys, user)", os);
    need(o, "VM.Config.Disk", p, "disk growth and reinstalls of %s VMs", os);
    need(o, "VM.PowerMgmt", p, "starting and stopping %s VMs", os);
    need(o, "VM.Snapshot", p, "snapshots of %s VMs", os);
    need(o, "VM.Migrate", p, "drains and reinstalls moving %s VMs", os);
    if (nets) {
        need(o, "VM.Config.Network", p, "addresses of %s VMs (net0)", os);
        need(o, "VM.Monitor|VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted", p,
             "the guest agent's address confirmation of %s VMs", os);
    }
}

size_t access_needs(const struct proxd_config *cfg, int node, struct access_need *out, size_t max)
{
    struct needs o = {.v = out, .max = max};
    const struct cfg_node *cn = &cfg->nodes[node];
    char p[96];
    bool nets = false;
    for (int i = 0; i < cfg->npools; i++)
        nets = nets || cfg->pools[i].on_node[node];
    snprintf(p, sizeof p, "/nodes/%s", cn->name);
    need(&o, "Sys.Audit", p, "node status");
    snprintf(p, sizeof p, "/storage/%s", cn->storage);
    need(&o, "Datastore.Audit|Datastore.AllocateSpace", p, "storage status");
    need(&o, "Datastore.AllocateSpace", p, "creations (disks on %s)", cn->storage);
    for (int t = 0; t < cn->ntemplates; t++) {
        const struct cfg_template *tp = &cn->templates[t];
        snprintf(p, sizeof p, "/vms/%d", tp->vmid);
        need(&o, "VM.Clone", p, "creations of %s (its template)", tp->os);
        need(&o, "VM.Audit", p, "creations of %s (its template's config)", tp->os);
        const struct cfg_os *os = config_os(cfg, tp->os);
        if (os)
            vm_needs(&o, tp->os, os->range_lo, nets);
    }
    if (cfg->fallback_lo > 0 && cn->ntemplates) /* VMIDs for an OS whose range is full */
        vm_needs(&o, "fallback-range", cfg->fallback_lo, nets);
    for (int i = 0; i < cfg->npools; i++) {
        const struct cfg_ippool *pl = &cfg->pools[i];
        if (!pl->on_node[node])
            continue;
        if (pl->vlan)
            snprintf(p, sizeof p, "/sdn/zones/localnetwork/%s/%d", pl->bridge, pl->vlan);
        else
            snprintf(p, sizeof p, "/sdn/zones/localnetwork/%s", pl->bridge);
        need(&o, "SDN.Use", p, "addresses of pool %s (its bridge)", pl->name);
    }
    return o.total;
}

/* ---- reading what the credentials hold ------------------------------------ */

/* One read per (world, path) in a pass: the nodes of a cluster share paths. */
struct seen {
    pve_client *pc;
    char path[96];
    struct pve_priv *privs;
    size_t n;
    int rc;
    char error[256];
};
struct pass {
    struct seen *v;
    size_t n, cap;
    struct { /* each world's PVE major version, read once a pass (0: unknown) */
        pve_client *pc;
        int major;
    } ver[CFG_MAX_NODES];
    int nver;
};

/* The world's PVE major version: SDN.Use exists from PVE 8 on (7 checks
 * no bridge), so it is not asked of a 7. 0 when /version cannot be read
 * (then everything is asked). */
static int world_major(struct pass *ps, pve_client *pc)
{
    for (int i = 0; i < ps->nver; i++)
        if (ps->ver[i].pc == pc)
            return ps->ver[i].major;
    struct pve_version v = {0};
    if (pve_get_version(pc, &v, NULL) != 0)
        v.major = 0;
    if (ps->nver < CFG_MAX_NODES) {
        ps->ver[ps->nver].pc = pc;
        ps->ver[ps->nver++].major = v.major;
    }
    return v.major;
}

static void pass_free(struct pass *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->v[i].privs);
    free(ps->v);
}

static const struct seen *read_path(struct pass *ps, pve_client *pc, const char *path)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].pc == pc && strcmp(ps->v[i].path, path) == 0)
            return &ps->v[i];
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 16;
        ps->v = xrealloc(ps->v, ps->cap * sizeof *ps->v);
    }
    struct seen *s = &ps->v[ps->n++];
    memset(s, 0, sizeof *s);
    s->pc = pc;
    snprintf(s->path, sizeof s->path, "%s", path);
    struct pve_error e = {0};
    s->rc = pve_permissions(pc, path, &s->privs, &s->n, &e);
    if (s->rc) {
        char buf[PVE_MSG_MAX + 64];
        snprintf(s->error, sizeof s->error, "GET /access/permissions?path=%s: %s", path,
                 pve_strerror(&e, buf, sizeof buf));
    }
    return s;
}

static bool holds(const struct seen *s, const char *priv, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->privs[i].name) == len && strncmp(s->privs[i].name, priv, len) == 0)
            return true;
    return false;
}

/* Any one of "A|B|C" held? */
static bool satisfied(const struct seen *s, const char *privs)
{
    for (const char *p = privs;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (holds(s, p, len))
            return true;
        if (!bar)
            return false;
        p = bar + 1;
    }
}

static char *missing_text(const struct access_missing *m, size_t n)
{
    struct buf b;
    buf_init(&b, BUF_UNLIMITED);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s on %s (%s)", i ? "; " : "", m[i].privs, m[i].path, m[i].what);
    return buf_take(&b);
}

/* Keep node i's new result; log what changed. Takes m. */
static void node_result(struct access *a, int i, struct access_missing *m, size_t nm,
                        const char *error)
{
    const char *name = a->k->cfg->nodes[i].name;
    char *now = missing_text(m, nm);
    pthread_mutex_lock(&a->mu);
    struct node_access *na = &a->nodes[i];
    char *was = missing_text(na->missing, na->nmissing);
    bool first = na->checked_at == 0 && !na->error[0];
    bool err_moved = strcmp(na->error, error) != 0;
    if (!error[0]) { /* a whole read: the result */
        free(na->missing);
        na->missing = m;
        na->nmissing = nm;
        na->checked_at = wall_ms();
        m = NULL;
    }
    snprintf(na->error, sizeof na->error, "%s", error);
    bool moved = !error[0] && (first || strcmp(was, now) != 0);
    pthread_mutex_unlock(&a->mu);
    if (moved && nm)
        log_warn("access", "node %s: the Proxmox credentials lack %s", name, now);
    else if (moved && !first)
        log_info("access", "node %s: the Proxmox credentials hold every privilege proxd needs",
                 name);
    if (err_moved && error[0])
        log_warn("access", "node %s: privileges not read (asked again in %d s): %s", name,
                 RETRY_MS / 1000, error);
    free(m);
    free(was);
    free(now);
}

/* Check node i; false when it could not be read whole. */
static bool check_node(struct access *a, struct pass *ps, int i)
{
    struct core *k = a->k;
    const struct cfg_node *cn = &k->cfg->nodes[i];
    pve_client *pc = fleet_client(k->fl, cn->name);
    if (!pc)
        return true; /* not a node of the fleet's */
    if (fleet_node_held_down(k->fl, cn->name)) {
        node_result(a, i, NULL, 0, "not read: the node is down");
        return false;
    }
    size_t max = access_needs(k->cfg, i, NULL, 0); /* a bound: 32 OSes make hundreds */
    struct access_need *nd = xcalloc(max ? max : 1, sizeof *nd);
    size_t n = access_needs(k->cfg, i, nd, max);
    struct access_missing *m = xcalloc(n ? n : 1, sizeof *m);
    size_t nm = 0;
    const char *error = "";
    int major = world_major(ps, pc);
    for (size_t j = 0; j < n && !core_stopping(k); j++) {
        if (major && major < 8 && strcmp(nd[j].privs, "SDN.Use") == 0)
            continue;
        const struct seen *s = read_path(ps, pc, nd[j].path);
        if (s->rc) {
            error = s->error;
            break;
        }
        if (satisfied(s, nd[j].privs))
            continue;
        snprintf(m[nm].privs, sizeof m[nm].privs, "%s", nd[j].privs);
        snprintf(m[nm].path, sizeof m[nm].path, "%s", nd[j].path);
        snprintf(m[nm].what, sizeof m[nm].what, "%s", nd[j].what);
        nm++;
    }
    bool whole = !error[0] && !core_stopping(k);
    if (!core_stopping(k))
        node_result(a, i, m, nm, error);
    else
        free(m);
    free(nd);
    return whole;
}

static bool check_all(struct access *a)
{
    struct pass ps = {0};
    bool whole = true;
    for (int i = 0; i < a->k->cfg->nnodes && !core_stopping(a->k); i++)
        whole = check_node(a, &ps, i) && whole;
    pass_free(&ps);
    return whole;
}

static void *access_main(void *arg)
{
    mem_thread_name("access");
    struct access *a = arg;
    struct core *k = a->k;
    while (!fleet_ready(k->fl))
        if (core_nap(k, 200))
            return NULL;
    do {
        int64_t every = 1000LL * k->cfg->privilege_check_s, last = mono_ms();
        if (!check_all(a) && every > RETRY_MS)
            every = RETRY_MS;
        pthread_mutex_lock(&a->mu);
        a->poked = false;
        for (;;) {
            int64_t now = mono_ms(), due = last + every;
            if (a->poked && last + POKE_MIN_MS < due)
                due = last + POKE_MIN_MS;
            if (now >= due || core_stopping(k))
                break;
            struct timespec ts = deadline_in_ms(due - now);
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        pthread_mutex_unlock(&a->mu);
    } while (!core_stopping(k));
    return NULL;
}

void core_access_poke(struct core *k)
{
    struct access *a = k->access;
    pthread_mutex_lock(&a->mu);
    a->poked = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* ---- life and views ------------------------------------------------------ */

struct access *access_new(struct core *k)
{
    struct access *a = xcalloc(1, sizeof *a);
    a->k = k;
    pthread_mutex_init(&a->mu, NULL);
    cond_init_mono(&a->cv);
    return a;
}

void access_free(struct access *a)
{
    if (!a)
        return;
    for (int i = 0; i < CFG_MAX_NODES; i++)
        free(a->nodes[i].missing);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int access_start(struct access *a)
{
    if (a->k->cfg->privilege_check_s <= 0)
        return 0;
    if (mem_thread_start(&a->thread, access_main, a) != 0)
        return -1;
    a->started = true;
    return 0;
}

void access_stop(struct access *a)
{
    if (!a->started)
        return;
    pthread_mutex_lock(&a->mu); /* k->stopping is set: its wait ends */
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = false;
}

int core_node_access(struct core *k, const char *node, struct core_access *out)
{
    memset(out, 0, sizeof *out);
    const struct cfg_node *cn = config_node(k->cfg, node);
    if (!cn)
        return -1;
    struct access *a = k->access;
    long i = cn - k->cfg->nodes;
    pthread_mutex_lock(&a->mu);
    const struct node_access *na = &a->nodes[i];
    out->checked_at = na->checked_at;
    snprintf(out->error, sizeof out->error, "%s", na->error);
    if (na->nmissing) {
        out->missing = xmalloc(na->nmissing * sizeof *out->missing);
        memcpy(out->missing, na->missing, na->nmissing * sizeof *out->missing);
        out->nmissing = na->nmissing;
    }
    pthread_mutex_unlock(&a->mu);
    return 0;
}
