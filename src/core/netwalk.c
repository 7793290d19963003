/* netwalk: the config walk (see netwalk.h). */
#include "core/netwalk.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/fleet.h"
#include "core/netconfirm.h"
#include "pve/pve_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NW_MAX_IFACES 32 /* ipconfig0..31, net0..31 */
#define NW_MAX_DRIFT 4096
#define NW_MAX_CONFLICTS 4096

struct drift {
    int64_t vm_id;
    char text[256];
    bool fresh; /* found again by the walk under way */
};

struct conflict {
    struct core_ip_conflict c;
    bool fresh;
};

struct netwalk {
    struct core *k;
    pthread_mutex_t walk_mu; /* one walk at a time (the thread, core_net_walk) */
    pthread_mutex_t mu;      /* what the API reads: drift, conflicts, counters */
    struct drift *drift;
    size_t ndrift;
    struct conflict *conf;
    size_t nconf;
    uint64_t conf_total[CFG_MAX_POOLS];
    int *prev; /* walk_mu: VMIDs of the last walk, sorted (new ones go first) */
    size_t nprev;
    struct netwalk_pacer pacers[CFG_MAX_NODES]; /* per world */
    pthread_t thread;
    bool started;
    struct netconfirm *nc;
    /* walk_mu: guests whose config Proxmox refused to show (403) in this
     * walk and the last, and the first of this walk's, for the warning */
    size_t denied, denied_last;
    char denied_first[PVE_MSG_MAX + 96];
};

/* ---- pacing ------------------------------------------------------------ */

int64_t netwalk_pace(struct netwalk_pacer *p, int64_t now_ms)
{
    int64_t now_us = now_ms * 1000, step = 1000000 / (p->per_s > 0 ? p->per_s : 1);
    if (now_us < p->next_us)
        return (p->next_us - now_us + 999) / 1000;
    p->next_us = now_us + step;
    return 0;
}

/* ---- set-up -------------------------------------------------------------- */

struct netwalk *netwalk_new(struct core *k)
{
    struct netwalk *w = xcalloc(1, sizeof *w);
    w->k = k;
    pthread_mutex_init(&w->walk_mu, NULL);
    pthread_mutex_init(&w->mu, NULL);
    for (int i = 0; i < CFG_MAX_NODES; i++)
        w->pacers[i].per_s = k->cfg->config_reads > 0 ? k->cfg->config_reads : 20;
    w->nc = netconfirm_new(k);
    return w;
}

void netwalk_free(struct netwalk *w)
{
    if (!w)
        return;
    netconfirm_free(w->nc);
    free(w->drift);
    free(w->conf);
    free(w->prev);
    pthread_mutex_destroy(&w->walk_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ---- what the API reads ------------------------------------------------- */

static void drift_set(struct netwalk *w, int64_t vm_id, const char *text)
{
    pthread_mutex_lock(&w->mu);
    size_t i = 0;
    while (i < w->ndrift && w->drift[i].vm_id != vm_id)
        i++;
    if (!text) {
        if (i < w->ndrift)
            w->drift[i] = w->drift[--w->ndrift];
    } else if (i < w->ndrift || w->ndrift < NW_MAX_DRIFT) {
        if (i == w->ndrift) {
            w->drift = xrealloc(w->drift, (w->ndrift + 1) * sizeof *w->drift);
            w->ndrift++;
        }
        w->drift[i].vm_id = vm_id;
        snprintf(w->drift[i].text, sizeof w->drift[i].text, "%s", text);
        w->drift[i].fresh = true;
    }
    pthread_mutex_unlock(&w->mu);
}

/* Was text already the drift of vm_id (so it is logged once, not per walk)? */
static bool drift_known(struct netwalk *w, int64_t vm_id, const char *text)
{
    pthread_mutex_lock(&w->mu);
    bool known = false;
    for (size_t i = 0; i < w->ndrift && !known; i++)
        known = w->drift[i].vm_id == vm_id && strcmp(w->drift[i].text, text) == 0;
    pthread_mutex_unlock(&w->mu);
    return known;
}

static int pool_index(const struct proxd_config *c, const char *pool)
{
    for (int i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].name, pool) == 0)
            return i;
    return -1;
}

/* Note a conflict; true when it is new (to be logged and counted). */
static bool conflict_note(struct netwalk *w, const struct core_ip_conflict *c)
{
    pthread_mutex_lock(&w->mu);
    bool isnew = true;
    for (size_t i = 0; i < w->nconf && isnew; i++) {
        struct core_ip_conflict *o = &w->conf[i].c;
        if (strcmp(o->address, c->address) == 0 && o->seen_vmid == c->seen_vmid) {
            o->vmid = c->vmid;
            snprintf(o->seen_node, sizeof o->seen_node, "%s", c->seen_node);
            w->conf[i].fresh = true;
            isnew = false;
        }
    }
    if (isnew && w->nconf < NW_MAX_CONFLICTS) {
        w->conf = xrealloc(w->conf, (w->nconf + 1) * sizeof *w->conf);
        w->conf[w->nconf].c = *c;
        w->conf[w->nconf++].fresh = true;
        int p = pool_index(w->k->cfg, c->pool);
        if (p >= 0)
            w->conf_total[p]++;
    }
    pthread_mutex_unlock(&w->mu);
    return isnew;
}

/* After a complete walk: what it did not find again is gone. */
static void forget_stale(struct netwalk *w)
{
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->ndrift;)
        if (!w->drift[i].fresh)
            w->drift[i] = w->drift[--w->ndrift];
        else
            w->drift[i++].fresh = false;
    for (size_t i = 0; i < w->nconf;)
        if (!w->conf[i].fresh)
            w->conf[i] = w->conf[--w->nconf];
        else
            w->conf[i++].fresh = false;
    pthread_mutex_unlock(&w->mu);
}

bool core_net_drift(struct core *k, int64_t vm_id, char *out, size_t len)
{
    struct netwalk *w = k->nw;
    bool found = false;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->ndrift && !found; i++)
        if (w->drift[i].vm_id == vm_id) {
            snprintf(out, len, "%s", w->drift[i].text);
            found = true;
        }
    pthread_mutex_unlock(&w->mu);
    return found;
}

size_t core_ippool_conflicts(struct core *k, const char *pool, struct core_ip_conflict *out,
                             size_t max)
{
    struct netwalk *w = k->nw;
    size_t n = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nconf; i++) {
        if (pool && strcmp(w->conf[i].c.pool, pool) != 0)
            continue;
        if (n < max)
            out[n] = w->conf[i].c;
        n++;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}

uint64_t core_ippool_conflicts_total(struct core *k, const char *pool)
{
    struct netwalk *w = k->nw;
    int p = pool_index(k->cfg, pool);
    pthread_mutex_lock(&w->mu);
    uint64_t n = p >= 0 ? w->conf_total[p] : 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void core_net_confirm(struct core *k, int64_t vm_id)
{
    struct store_net net;
    if (k->cfg->npools && store_vm_net_get(k->st, vm_id, &net, NULL) == STORE_OK)
        netconfirm_ask(k->nw->nc, vm_id, true);
}

/* ---- reading one VM -------------------------------------------------------- */

/* The world (cluster, or standalone node) of a configured node, as an index
 * into the config's nodes: its first node of the same world. -1: unknown. */
static int world_of(const struct proxd_config *c, const char *node)
{
    const struct cfg_node *n = config_node(c, node);
    if (!n)
        return -1;
    for (int i = 0; i < c->nnodes; i++)
        if (n->cluster[0] ? strcmp(c->nodes[i].cluster, n->cluster) == 0
                          : strcmp(c->nodes[i].name, n->name) == 0)
            return i;
    return -1;
}

static bool pools_reach(const struct proxd_config *c, const char *node)
{
    const struct cfg_node *n = config_node(c, node);
    for (int p = 0; n && p < c->npools; p++)
        if (config_ippool_reachable(c, &c->pools[p], n))
            return true;
    return false;
}

/* The pool whose CIDR holds a (pools never overlap: --check-config). */
static int pool_of(const struct proxd_config *c, const struct ippool_addr *a)
{
    for (int p = 0; p < c->npools; p++)
        if (ippool_net_contains(&c->pools[p].plan.net, a))
            return p;
    return -1;
}

struct seen {
    struct fleet_addr a;
    int pool;
};

/* The keys whose ip=/ip6= items are a guest's static addresses: a VM's
 * cloud-init ipconfigN; a container's netN ("name=eth0,bridge=vmbr0,
 * hwaddr=...,ip=10.0.0.5/24,gw=...,ip6=...", which pct configures on the
 * interface itself; dhcp, auto and manual are no static claim). */
#define NW_VM_KEY "ipconfig"
#define NW_CT_KEY "net"

/* Pool addresses in the config's <prefix>0..31, at most max. */
static size_t config_addrs(const struct proxd_config *c, json_t *conf, const char *prefix, int vmid,
                           const char *node, struct seen *out, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < NW_MAX_IFACES; i++) {
        char key[16];
        snprintf(key, sizeof key, "%s%d", prefix, i);
        const char *v = json_string_value(json_object_get(conf, key));
        struct ippool_addr a[2];
        int pfx[2];
        if (!v || ippool_ipconfig_parse(v, &a[0], &pfx[0], &a[1], &pfx[1]) != IPPOOL_OK)
            continue;
        for (int f = 0; f < 2 && n < max; f++) {
            int p = a[f].family ? pool_of(c, &a[f]) : -1;
            if (p < 0)
                continue;
            memset(&out[n], 0, sizeof out[n]);
            out[n].a.addr = a[f];
            out[n].a.vmid = vmid;
            snprintf(out[n].a.node, sizeof out[n].a.node, "%s", node);
            out[n++].pool = p;
        }
    }
    return n;
}

/* The value of `key=` in a property string ("bridge" of a netN), or "". */
static void prop_get(const char *s, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    out[0] = '\0';
    for (const char *p = s; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(out, len, "%.*s", (int)(n - kl - 1), p + kl + 1);
            return;
        }
        p += n + (p[n] == ',');
    }
}

/* What differs between the config and proxd's record; "" when nothing. */
static void drift_of(json_t *conf, const struct store_net *net, char *out, size_t len)
{
    const char *ipc = json_string_value(json_object_get(conf, "ipconfig0"));
    const char *net0 = json_string_value(json_object_get(conf, "net0"));
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    if (strcmp(ipc ? ipc : "", net->ipconfig0) != 0)
        buf_printf(&b, "ipconfig0 is '%s' (proxd set '%s'); ", ipc ? ipc : "", net->ipconfig0);
    struct ippool_mac m;
    char mac[IPPOOL_MACSTRLEN] = "", bridge[64], tag[16];
    if (net0 && ippool_net_mac(net0, &m) == IPPOOL_OK)
        ippool_mac_format(&m, mac);
    prop_get(net0, "bridge", bridge, sizeof bridge);
    prop_get(net0, "tag", tag, sizeof tag);
    if (strcasecmp(mac, net->mac) != 0)
        buf_printf(&b, "net0 MAC is '%s' (proxd set '%s'); ", mac, net->mac);
    if (strcmp(bridge, net->bridge) != 0)
        buf_printf(&b, "net0 bridge is '%s' (proxd set '%s'); ", bridge, net->bridge);
    if (atoi(tag) != net->vlan)
        buf_printf(&b, "net0 tag is '%s' (proxd set %d); ", tag, net->vlan);
    if (b.len >= 2 && b.data[b.len - 2] == ';')
        b.len -= 2;
    snprintf(out, len, "%.*s", (int)b.len, b.data ? b.data : "");
    buf_release(&b);
}

static void restore(struct core *k, const struct fleet_vm *fv, const struct pve_vm_config *vc,
                    const struct store_net *net)
{
    pve_client *pc = fleet_client(k->fl, fv->node);
    struct ippool_mac m;
    if (!pc || ippool_mac_parse(net->mac, &m) != IPPOOL_OK)
        return;
    struct buf n0 = BUF_INIT(BUF_UNLIMITED);
    ippool_fmt_net(&n0, &m, net->bridge, net->vlan);
    struct pve_config_set cs = {.ipconfig0 = net->ipconfig0, .net0 = n0.data, .digest = vc->digest};
    struct pve_error pe;
    if (pve_vm_config_set(pc, fv->node, fv->vmid, &cs, &pe))
        log_warn("netwalk", "vmid=%d network not restored: %s", fv->vmid, pe.message);
    else
        log_info("netwalk", "vmid=%d network restored to net0 '%s', ipconfig0 '%s'", fv->vmid,
                 n0.data, net->ipconfig0);
    buf_release(&n0);
}

/* network_drift = adopt: the config's addresses become the record's when
 * each is one its pool hands out (the configured plan) and free; else the
 * drift stays reported. loud: first time this drift is seen (log why). */
static void adopt(struct netwalk *w, const struct fleet_vm *fv, const struct vm_rec *r,
                  json_t *conf, const struct store_net *old, bool loud)
{
    struct core *k = w->k;
    const char *ipc = json_string_value(json_object_get(conf, "ipconfig0"));
    const char *net0 = json_string_value(json_object_get(conf, "net0"));
    struct store_net nn = *old;
    struct store_addr_req reqs[2];
    char keys[2][IPPOOL_KEYLEN], why[200] = "", t[IPPOOL_ADDRSTRLEN];
    struct ippool_addr a[2];
    int pfx[2];
    size_t n = 0;
    if (!ipc || strlen(ipc) >= sizeof nn.ipconfig0 ||
        ippool_ipconfig_parse(ipc, &a[0], &pfx[0], &a[1], &pfx[1]) != IPPOOL_OK)
        snprintf(why, sizeof why, "ipconfig0 is not one proxd can take over");
    for (int f = 0; f < 2 && !why[0]; f++) {
        if (!a[f].family)
            continue;
        int p = pool_of(k->cfg, &a[f]);
        ippool_addr_format(&a[f], t);
        if (p < 0 || !ippool_contains(&k->cfg->pools[p].plan, &a[f])) {
            snprintf(why, sizeof why, "%s is not an address a pool hands out", t);
            break;
        }
        ippool_addr_key(&a[f], keys[n]);
        reqs[n] = (struct store_addr_req){.pool = k->cfg->pools[p].name, .want = keys[n]};
        n++;
    }
    if (!why[0] && n == 0)
        snprintf(why, sizeof why, "ipconfig0 has no static address of a pool");
    struct ippool_mac m;
    char bridge[64] = "", tag[16] = "";
    if (net0 && ippool_net_mac(net0, &m) == IPPOOL_OK)
        ippool_mac_format(&m, nn.mac);
    prop_get(net0, "bridge", bridge, sizeof bridge);
    prop_get(net0, "tag", tag, sizeof tag);
    if (!why[0] && (!bridge[0] || strlen(bridge) >= sizeof nn.bridge))
        snprintf(why, sizeof why, "net0 has no bridge proxd can record");
    struct store_error se;
    if (!why[0]) {
        snprintf(nn.bridge, sizeof nn.bridge, "%.15s", bridge);
        nn.vlan = atoi(tag);
        snprintf(nn.ipconfig0, sizeof nn.ipconfig0, "%s", ipc);
        if (store_addr_adopt(k->st, r->id, r->vmid, reqs, n, &nn, k->addrq, k->naddrq, &se) == 0) {
            log_info("netwalk", "vmid=%d network adopted: ipconfig0 '%s', net0 MAC %s on %s tag %d",
                     fv->vmid, nn.ipconfig0, nn.mac, nn.bridge, nn.vlan);
            drift_set(w, r->id, NULL);
            return;
        }
        snprintf(why, sizeof why, "%.190s", se.message);
    }
    if (loud)
        log_warn("netwalk", "vmid=%d network not adopted (%s): the drift stays reported", fv->vmid,
                 why);
}

static bool agent_on(json_t *conf)
{
    json_t *a = json_object_get(conf, "agent");
    const char *s = json_string_value(a);
    if (!s)
        return json_integer_value(a) != 0;
    const char *e = strstr(s, "enabled=");
    return e ? e[8] == '1' : s[0] == '1';
}

/* The pool addresses of a config (its <prefix>N keys) into acc (per pool)
 * and the fleet's lists; how many, their first max in s. */
static size_t add_addrs(struct netwalk *w, const struct fleet_vm *fv, json_t *conf,
                        const char *prefix, struct buf acc[], struct seen *s, size_t max)
{
    struct core *k = w->k;
    size_t n = config_addrs(k->cfg, conf, prefix, fv->vmid, fv->node, s, max);
    for (size_t i = 0; i < n; i++) {
        buf_add(&acc[s[i].pool], &s[i].a, sizeof s[i].a);
        fleet_pool_addrs_add(k->fl, k->cfg->pools[s[i].pool].name, &s[i].a, 1);
    }
    return n;
}

/* One of proxd's VMs: drift, and a confirmation nobody asked for yet. A
 * restore (written or maybe written) puts the record's addresses in acc
 * too: the list holds what the config may have now. false when the store
 * could not be read (what was found before stays). */
static bool check_ours(struct netwalk *w, const struct fleet_vm *fv, const struct vm_rec *r,
                       const struct pve_vm_config *vc, struct buf acc[])
{
    struct core *k = w->k;
    struct store_net net;
    if (r->state != VMS_ENABLED || vc->lock[0])
        return true; /* a job or Proxmox is at work on it */
    int src = store_vm_net_get(k->st, r->id, &net, NULL);
    if (src != STORE_OK)
        return src == STORE_E_NOTFOUND; /* no network; or not read */
    char d[256];
    drift_of(vc->raw, &net, d, sizeof d);
    if (!d[0]) {
        drift_set(w, r->id, NULL);
    } else {
        bool fresh = !drift_known(w, r->id, d);
        if (fresh)
            log_warn("netwalk", "vmid=%d network drift: %s (network_drift = %s)", fv->vmid, d,
                     k->cfg->network_drift);
        drift_set(w, r->id, d);
        if (strcmp(k->cfg->network_drift, "restore") == 0) {
            restore(k, fv, vc, &net);
            const char *ipc = json_string_value(json_object_get(vc->raw, "ipconfig0"));
            if (!ipc || strcmp(ipc, net.ipconfig0) != 0) {
                json_t *put = json_pack("{s:s}", "ipconfig0", net.ipconfig0);
                struct seen s[2];
                add_addrs(w, fv, put, NW_VM_KEY, acc, s, 2);
                json_decref(put);
            }
        } else if (strcmp(k->cfg->network_drift, "adopt") == 0)
            adopt(w, fv, r, vc->raw, &net, fresh);
    }
    if (net.seen_at == 0 && strcmp(fv->status, "running") == 0 && agent_on(vc->raw))
        netconfirm_ask(w->nc, r->id, false);
    return true;
}

/* A VM that is not proxd's, or a container (kind "vm", "ct"): its pool
 * addresses are foreign. */
static bool mark_foreign(struct netwalk *w, const struct fleet_vm *fv, const char *kind,
                         const struct seen *s, size_t n)
{
    struct core *k = w->k;
    if (!n)
        return true;
    char keys[NW_MAX_IFACES * 2][IPPOOL_KEYLEN];
    const char *kp[NW_MAX_IFACES * 2];
    for (size_t i = 0; i < n; i++) {
        ippool_addr_key(&s[i].a.addr, keys[i]);
        kp[i] = keys[i];
    }
    char where[128];
    snprintf(where, sizeof where, "%s %d on %s", kind, fv->vmid, fv->node);
    struct store_addr *conf = NULL;
    size_t nconf = 0;
    struct store_error se;
    if (store_addr_mark_foreign(k->st, kp, n, where, &conf, &nconf, &se)) {
        log_warn("netwalk", "vmid=%d: addresses not marked foreign: %s", fv->vmid, se.message);
        return false;
    }
    for (size_t i = 0; i < nconf; i++) {
        if (strcmp(conf[i].state, "held") == 0)
            continue; /* an admin's hold: never handed out anyway */
        struct core_ip_conflict c = {
            .vmid = conf[i].vmid, .seen_vmid = fv->vmid, .first_seen = wall_ms()};
        struct ippool_addr a;
        ippool_addr_from_key(conf[i].addr, &a);
        ippool_addr_format(&a, c.address);
        snprintf(c.pool, sizeof c.pool, "%s", conf[i].pool);
        snprintf(c.seen_node, sizeof c.seen_node, "%s", fv->node);
        if (conflict_note(w, &c))
            log_error("netwalk",
                      "address conflict in pool %s: %s, which proxd %s for vmid=%d, is in the "
                      "config of %s%d on %s (not proxd's); nothing is changed",
                      c.pool, c.address, conf[i].state, c.vmid,
                      strcmp(kind, "ct") == 0 ? "container " : "vmid=", fv->vmid, fv->node);
    }
    free(conf);
    return true;
}

/* One of proxd's VMs whose config carries an address proxd gave another
 * of its VMs (a GUI edit copied it): drift on this VM (check_ours), and a
 * conflict on the address, as on a foreign VM. */
static bool check_taken(struct netwalk *w, const struct fleet_vm *fv, const struct vm_rec *r,
                        const struct seen *s, size_t n)
{
    bool read = true;
    for (size_t i = 0; i < n; i++) {
        char key[IPPOOL_KEYLEN];
        ippool_addr_key(&s[i].a.addr, key);
        struct store_addr row;
        int src = store_addr_get(w->k->st, key, &row, NULL);
        if (src != STORE_OK) {
            read = read && src == STORE_E_NOTFOUND; /* no row: proxd's nowhere */
            continue;
        }
        bool other = (strcmp(row.state, "used") == 0 || strcmp(row.state, "reserved") == 0) &&
                     row.vm_id != r->id && row.vmid != fv->vmid;
        if (!other)
            continue;
        struct core_ip_conflict c = {
            .vmid = row.vmid, .seen_vmid = fv->vmid, .first_seen = wall_ms()};
        ippool_addr_format(&s[i].a.addr, c.address);
        snprintf(c.pool, sizeof c.pool, "%s", row.pool);
        snprintf(c.seen_node, sizeof c.seen_node, "%s", fv->node);
        if (conflict_note(w, &c))
            log_error("netwalk",
                      "address conflict in pool %s: %s, which proxd %s for vmid=%d, is in the "
                      "config of vmid=%d on %s (another of proxd's VMs); nothing is changed",
                      c.pool, c.address, row.state, c.vmid, fv->vmid, fv->node);
    }
    return read;
}

/* Is VMID vmid of node one of proxd's VMs (a live record in that world)?
 * 1 yes (*r filled), 0 no, -1 the store could not tell. */
static int ours(struct core *k, const struct fleet_vm *fv, struct vm_rec *r)
{
    int src = store_vm_get(k->st, fv->vmid, r, NULL);
    if (src != STORE_OK)
        return src == STORE_E_NOTFOUND ? 0 : -1;
    if (!r->node[0] || world_of(k->cfg, r->node) == world_of(k->cfg, fv->node))
        return 1;
    vm_rec_release(r);
    return 0;
}

/* Is it a half-made VM of proxd's own, waiting for the reconciler to
 * remove it (a leftover: it keeps its creation's address, which the
 * creation may have taken on to another VMID)? 1 yes, 0 no, -1 the store
 * could not tell. Read after the config: a creation records its leftover
 * before it moves on. */
static int leftover(struct core *k, const struct fleet_vm *fv)
{
    struct leftover *lo = NULL;
    size_t n = 0;
    if (store_leftover_list(k->st, &lo, &n, NULL) != STORE_OK)
        return -1;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = lo[i].vmid == fv->vmid && strcmp(lo[i].node, fv->node) == 0;
    free(lo);
    return found;
}

/* Is it a VM a job of proxd's is making under a VMID still reserved (a
 * reinstall's temporary VM, configured with the VM's own address and MAC
 * before the swap)? 1 yes, 0 no, -1 the store could not tell. */
static int in_flight(struct core *k, const struct fleet_vm *fv)
{
    char state[16];
    int rc = store_vmid_state(k->st, fv->vmid, state, NULL);
    if (rc && rc != STORE_E_NOTFOUND)
        return -1;
    return rc == STORE_OK && strcmp(state, "reserved") == 0;
}

/* A guest's config refused (403: the token lacks VM.Audit on it): the
 * addresses it uses stay unknown to the pools, which may hand them out.
 * Counted per walk, told at its end (walk_denied). */
static void note_denied(struct netwalk *w, const struct fleet_vm *fv, const char *kind,
                        const struct pve_error *pe)
{
    if (pe->cls != PVE_E_PERMISSION)
        return;
    if (w->denied++ == 0)
        snprintf(w->denied_first, sizeof w->denied_first, "%s %d on %s: %s", kind, fv->vmid,
                 fv->node, pe->message);
}

/* Warned when the number of refused guests changes (not every walk: a
 * token short of a privilege stays so until an operator acts). */
static void walk_denied(struct netwalk *w)
{
    if (w->denied && w->denied != w->denied_last)
        log_warn("netwalk",
                 "%zu guest config(s) cannot be read, permission denied (the first, %s): the "
                 "addresses they use are unknown to the IP pools, which may hand them out; give "
                 "proxd's Proxmox user VM.Audit on them",
                 w->denied, w->denied_first);
    else if (!w->denied && w->denied_last)
        log_info("netwalk", "every guest config can be read again");
    w->denied_last = w->denied;
    w->denied = 0;
}

/* Read one VM: its addresses into acc (per pool), the store, drift. false
 * when it could not be read, Proxmox's config or the store's rows (its
 * last addresses are kept, and nothing is concluded from what a failed
 * read did not show). */
static bool walk_one(struct netwalk *w, const struct fleet_vm *fv, struct buf acc[])
{
    struct core *k = w->k;
    pve_client *pc = fleet_client(k->fl, fv->node);
    if (!pc || !fleet_node_up(k->fl, fv->node))
        return false;
    struct pve_vm_config vc;
    struct pve_error pe;
    int rc = pve_vm_config_get(pc, fv->node, fv->vmid, false, &vc, &pe);
    if (rc) {
        /* not found: deleted, or moved to another node (HA, a migration)
         * since the inventory saw it; which, the next inventory tells, and
         * until then what the last walk saw on it stays */
        log_debug("netwalk", "vmid=%d config not read: %s", fv->vmid, pe.message);
        note_denied(w, fv, "VM", &pe);
        return false;
    }
    struct seen s[NW_MAX_IFACES * 2];
    size_t n = add_addrs(w, fv, vc.raw, NW_VM_KEY, acc, s, NW_MAX_IFACES * 2);
    struct vm_rec r;
    bool read = true;
    int mine = ours(k, fv, &r);
    if (mine > 0) {
        read = check_ours(w, fv, &r, &vc, acc);
        read = check_taken(w, fv, &r, s, n) && read;
        vm_rec_release(&r);
    } else if (mine == 0 && n > 0) {
        int left = leftover(k, fv);
        if (left == 0)
            left = in_flight(k, fv);
        read = left == 0 ? mark_foreign(w, fv, "vm", s, n) : left > 0;
    } else if (mine < 0) {
        read = false;
    }
    pve_vm_config_release(&vc);
    return read;
}

/* Read one container: never proxd's, so the pool addresses of its netN
 * are foreign (a creation must not be given one: the customer's network
 * would have it twice), and one proxd gave a VM is a conflict. false when
 * it could not be read (what the last walk saw on it stays). */
static bool walk_ct(struct netwalk *w, const struct fleet_vm *fv, struct buf acc[])
{
    struct core *k = w->k;
    pve_client *pc = fleet_client(k->fl, fv->node);
    if (!pc || !fleet_node_up(k->fl, fv->node))
        return false;
    json_t *conf = NULL;
    struct pve_error pe;
    if (pve_ct_config_get(pc, fv->node, fv->vmid, &conf, &pe)) {
        log_debug("netwalk", "container %d config not read: %s", fv->vmid, pe.message);
        note_denied(w, fv, "container", &pe);
        return false;
    }
    struct seen s[NW_MAX_IFACES * 2];
    size_t n = add_addrs(w, fv, conf, NW_CT_KEY, acc, s, NW_MAX_IFACES * 2);
    bool read = mark_foreign(w, fv, "ct", s, n);
    json_decref(conf);
    return read;
}

/* ---- the walk --------------------------------------------------------------- */

struct target {
    struct fleet_vm v;
    int world;
    bool ct; /* a container (lxc): walk_ct */
    bool isnew;
    size_t rank; /* its place among its world's targets */
};

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* New VMIDs first; then worlds in turn, so each gets its own rate. */
static int cmp_target(const void *a, const void *b)
{
    const struct target *x = a, *y = b;
    if (x->isnew != y->isnew)
        return x->isnew ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return (x->world > y->world) - (x->world < y->world);
}

static struct target *targets(struct netwalk *w, size_t *nt)
{
    struct core *k = w->k;
    struct fleet_vm *vms = NULL, *cts = NULL;
    size_t n = 0, nc = 0;
    *nt = 0;
    if (fleet_vms(k->fl, &vms, &n) != 0)
        return NULL;
    if (fleet_cts(k->fl, &cts, &nc) != 0) {
        free(vms);
        return NULL;
    }
    /* the containers are read as VMs are, within the same rate per world:
     * one more read each per walk, never one per creation (a pick reads
     * what the walk published) */
    struct target *t = xcalloc(n + nc + 1, sizeof *t);
    size_t per_world[CFG_MAX_NODES] = {0};
    for (size_t i = 0; i < n + nc; i++) {
        const struct fleet_vm *v = i < n ? &vms[i] : &cts[i - n];
        int wi = world_of(k->cfg, v->node);
        if (v->tmpl || wi < 0 || !pools_reach(k->cfg, v->node))
            continue;
        struct target *x = &t[(*nt)++];
        x->v = *v;
        x->world = wi;
        x->ct = i >= n;
        x->isnew = !w->nprev || !bsearch(&v->vmid, w->prev, w->nprev, sizeof *w->prev, cmp_int);
    }
    free(vms);
    free(cts);
    /* ranks in VMID order within each world, new ones first */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < *nt; i++)
            if (t[i].isnew == (pass == 0))
                t[i].rank = per_world[t[i].world]++;
    qsort(t, *nt, sizeof *t, cmp_target);
    return t;
}

/* The VMs not read this time keep what the last walk saw on them. */
static void carry_over(struct netwalk *w, const int *unread, size_t nu, struct buf acc[])
{
    struct core *k = w->k;
    for (int p = 0; p < k->cfg->npools && nu; p++) {
        struct fleet_addr *old;
        size_t n;
        fleet_pool_addrs(k->fl, k->cfg->pools[p].name, &old, &n);
        for (size_t i = 0; i < n; i++)
            if (bsearch(&old[i].vmid, unread, nu, sizeof *unread, cmp_int))
                buf_add(&acc[p], &old[i], sizeof old[i]);
        free(old);
    }
}

static int walk(struct netwalk *w, bool paced)
{
    struct core *k = w->k;
    const struct proxd_config *c = k->cfg;
    if (c->npools == 0)
        return 0;
    pthread_mutex_lock(&w->walk_mu);
    int64_t start = wall_ms();
    size_t nt;
    struct target *t = targets(w, &nt);
    struct buf acc[CFG_MAX_POOLS];
    for (int p = 0; p < c->npools; p++)
        buf_init(&acc[p], BUF_UNLIMITED);
    int *unread = xcalloc(nt ? nt : 1, sizeof *unread), *seen = xcalloc(nt ? nt : 1, sizeof *seen);
    size_t nu = 0, done = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t wait;
        while (paced && (wait = netwalk_pace(&w->pacers[t[i].world], mono_ms())) > 0)
            if (core_nap(k, wait))
                break;
        if (core_stopping(k))
            break;
        seen[done++] = t[i].v.vmid;
        if (!(t[i].ct ? walk_ct(w, &t[i].v, acc) : walk_one(w, &t[i].v, acc)))
            unread[nu++] = t[i].v.vmid;
    }
    bool complete = done == nt;
    if (complete)
        walk_denied(w);
    else
        w->denied = 0; /* a walk cut short tells nothing */
    if (complete) {
        qsort(unread, nu, sizeof *unread, cmp_int);
        carry_over(w, unread, nu, acc);
        for (int p = 0; p < c->npools; p++)
            fleet_pool_addrs_set(k->fl, c->pools[p].name, (const struct fleet_addr *)acc[p].data,
                                 acc[p].len / sizeof(struct fleet_addr));
        qsort(seen, done, sizeof *seen, cmp_int);
        free(w->prev);
        w->prev = seen;
        w->nprev = done;
        seen = NULL;
    }
    if (complete && nu == 0) {
        /* every VM was read: a foreign address not seen in this walk, and
         * not for two intervals, is gone */
        int64_t before =
            wall_ms() - 2000LL * (c->reconcile_interval_s > 0 ? c->reconcile_interval_s : 60);
        size_t forgot = 0;
        struct store_error se;
        if (store_addr_forget_foreign(k->st, before < start ? before : start, &forgot, &se))
            log_warn("netwalk", "foreign addresses not forgotten: %s", se.message);
        else if (forgot)
            log_info("netwalk", "%zu foreign address(es) no longer seen are forgotten", forgot);
        forget_stale(w);
    }
    log_debug("netwalk", "config walk: %zu VM(s) read, %zu not, %lld ms", done - nu, nu,
              (long long)(wall_ms() - start));
    for (int p = 0; p < c->npools; p++)
        buf_release(&acc[p]);
    free(unread);
    free(seen);
    free(t);
    pthread_mutex_unlock(&w->walk_mu);
    return complete && nu == 0 ? 0 : -1;
}

int core_net_walk(struct core *k)
{
    return walk(k->nw, false);
}

static void *walk_main(void *arg)
{
    mem_thread_name("netwalk");
    struct netwalk *w = arg;
    struct core *k = w->k;
    while (!fleet_ready(k->fl))
        if (core_nap(k, 200))
            return NULL;
    do {
        int64_t t0 = mono_ms();
        walk(w, true);
        int64_t every =
            1000LL * (k->cfg->reconcile_interval_s > 0 ? k->cfg->reconcile_interval_s : 60);
        int64_t left = t0 + every - mono_ms();
        if (left > 0 && core_nap(k, left))
            break;
    } while (!core_stopping(k));
    return NULL;
}

int netwalk_start(struct netwalk *w)
{
    if (w->k->cfg->npools == 0)
        return 0;
    if (netconfirm_start(w->nc) != 0 || mem_thread_start(&w->thread, walk_main, w) != 0)
        return -1;
    w->started = true;
    return 0;
}

void netwalk_stop(struct netwalk *w)
{
    if (!w->started)
        return;
    pthread_join(w->thread, NULL);
    netconfirm_stop(w->nc);
    w->started = false;
}
