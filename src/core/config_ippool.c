/* config_ippool: [ippool NAME] and [os] ippools (see config_ippool.h). */
#include "core/config_ippool.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/ippool.h"

static const char list_seps[] = ", \t";

/* The next item of a comma/blank separated list, copied into item; false at
 * the end. False with *too_long set for an item that does not fit. */
static bool next_item(const char **p, char *item, size_t size, bool *too_long)
{
    *p += strspn(*p, list_seps);
    if (!**p)
        return false;
    size_t len = strcspn(*p, list_seps);
    *too_long = len >= size;
    snprintf(item, size, "%.*s", (int)len, *p);
    *p += len;
    return true;
}

bool cfgpool_set_cidr(void *base, const char *v, char *why, size_t n)
{
    struct cfg_ippool *p = base;
    struct ippool_errinfo e;
    if (ippool_net_parse(v, &p->plan.net, &e) == IPPOOL_OK)
        return true;
    snprintf(why, n, "%s", e.msg);
    return false;
}

bool cfgpool_set_gateway(void *base, const char *v, char *why, size_t n)
{
    struct cfg_ippool *p = base;
    if (ippool_addr_parse(v, &p->plan.gateway) != IPPOOL_OK) {
        snprintf(why, n, "'%s' is not an IP address", v);
        return false;
    }
    p->plan.has_gateway = true;
    return true;
}

static bool set_list(struct ippool_range *out, int *count, int max, const char *field,
                     const char *v, char *why, size_t n)
{
    struct ippool_errinfo e;
    *count = 0;
    if (ippool_ranges_parse(v, field, out, count, max, &e) == IPPOOL_OK)
        return true;
    snprintf(why, n, "%s", e.msg);
    return false;
}

bool cfgpool_set_ranges(void *base, const char *v, char *why, size_t n)
{
    struct cfg_ippool *p = base;
    return set_list(p->plan.ranges, &p->plan.nranges, IPPOOL_MAX_RANGES, "ranges", v, why, n);
}

bool cfgpool_set_reserved(void *base, const char *v, char *why, size_t n)
{
    struct cfg_ippool *p = base;
    return set_list(p->plan.reserved, &p->plan.nreserved, IPPOOL_MAX_RESERVED, "reserved", v, why,
                    n);
}

bool cfgpool_set_dns(void *base, const char *v, char *why, size_t n)
{
    struct cfg_ippool *p = base;
    char item[IPPOOL_ADDRSTRLEN];
    bool too_long;
    p->ndns = 0;
    for (const char *s = v; next_item(&s, item, sizeof item, &too_long);) {
        if (p->ndns == CFG_POOL_DNS) {
            snprintf(why, n, "more than %d nameservers", CFG_POOL_DNS);
            return false;
        }
        if (too_long || ippool_addr_parse(item, &p->dns[p->ndns]) != IPPOOL_OK) {
            snprintf(why, n, "'%s%s' is not an IP address", item, too_long ? "..." : "");
            return false;
        }
        p->ndns++;
    }
    return true;
}

/* DNS names (letters, digits, inner '-', dot-separated labels of at most 63
 * characters), separated by blanks or commas. */
bool cfgpool_check_searchdomain(const char *v, char *why, size_t n)
{
    char item[256];
    bool too_long, ok = true;
    for (const char *s = v; ok && next_item(&s, item, sizeof item, &too_long);) {
        size_t label = 0;
        ok = !too_long && item[0] != '.';
        for (const char *c = item; ok && *c; c++) {
            if (*c == '.') {
                ok = label > 0 && c[-1] != '-';
                label = 0;
            } else {
                ok = isalnum((unsigned char)*c) || (*c == '-' && label > 0);
                label++;
                ok = ok && label <= 63;
            }
        }
        ok = ok && label > 0 && item[strlen(item) - 1] != '-';
        if (!ok)
            snprintf(why, n, "'%s' is not a DNS domain name (e.g. example.com)", item);
    }
    return ok;
}

/* PVE's pve-bridge-id: [-_.\w\d]+ (the length is the field's). */
bool cfgpool_check_bridge(const char *v, char *why, size_t n)
{
    for (const char *c = v; *c; c++) {
        if (!isalnum((unsigned char)*c) && !strchr("-_.", *c)) {
            snprintf(why, n, "'%s' is not a bridge name (letters, digits and - _ . only)", v);
            return false;
        }
    }
    return true;
}

/* ---- whole-file checks -------------------------------------------------- */

static void __attribute__((format(printf, 5, 6)))
report(const struct cfgpool_ctx *x, enum cfgpool_sect s, int idx, const char *key, const char *fmt,
       ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    x->err(x->st, s, idx, key, msg);
}

static bool has_cluster(const struct proxd_config *c, const char *name)
{
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].cluster, name) == 0)
            return true;
    return false;
}

/* A list given with no item in it ("nodes = ,"): not the key left out (every
 * node) but a pool that reaches no node, which was taken silently. */
static bool names_none(const char *raw)
{
    return raw[0] && raw[strspn(raw, list_seps)] == '\0';
}

/* nodes = and clusters = into on_node[]; neither: every node. */
static void resolve_reach(struct proxd_config *c, int pi, const struct cfgpool_ctx *x)
{
    struct cfg_ippool *p = &c->pools[pi];
    char item[64];
    bool too_long;
    bool any = p->nodes_raw[0] || p->clusters_raw[0];
    if (names_none(p->nodes_raw))
        report(x, CFGPOOL_POOL, pi, "nodes",
               "names no node (only separators): name nodes, or leave the key out for every "
               "node");
    if (names_none(p->clusters_raw))
        report(x, CFGPOOL_POOL, pi, "clusters",
               "names no cluster (only separators): name clusters, or leave the key out for "
               "every node");
    for (int i = 0; i < c->nnodes; i++)
        p->on_node[i] = !any;
    for (const char *s = p->nodes_raw; next_item(&s, item, sizeof item, &too_long);) {
        const struct cfg_node *nd = too_long ? NULL : config_node(c, item);
        if (nd)
            p->on_node[nd - c->nodes] = true;
        else
            report(x, CFGPOOL_POOL, pi, "nodes", "unknown node '%s' (no [node %s] section)", item,
                   item);
    }
    for (const char *s = p->clusters_raw; next_item(&s, item, sizeof item, &too_long);) {
        if (too_long || !item[0] || !has_cluster(c, item)) {
            report(x, CFGPOOL_POOL, pi, "clusters",
                   "unknown cluster '%s' (no [node] has cluster = %s)", item, item);
            continue;
        }
        for (int i = 0; i < c->nnodes; i++)
            p->on_node[i] |= strcmp(c->nodes[i].cluster, item) == 0;
    }
}

static void check_pool(struct proxd_config *c, int pi, const struct cfgpool_ctx *x)
{
    struct cfg_ippool *p = &c->pools[pi];
    if (!x->line(x->st, CFGPOOL_POOL, pi, "quarantine"))
        p->quarantine_s = c->quarantine_s;
    resolve_reach(c, pi, x);
    if (!p->plan.net.base.family)
        return; /* cidr missing or malformed: reported already */
    struct ippool_errinfo e;
    if (ippool_prepare(&p->plan, &e) != IPPOOL_OK)
        report(x, CFGPOOL_POOL, pi, e.field, "%s", e.msg);
    for (int j = 0; j < pi; j++) {
        const struct cfg_ippool *q = &c->pools[j];
        if (!q->plan.net.base.family || !ippool_net_overlaps(&p->plan.net, &q->plan.net))
            continue;
        char a[IPPOOL_NETSTRLEN], b[IPPOOL_NETSTRLEN];
        ippool_net_format(&p->plan.net, a);
        ippool_net_format(&q->plan.net, b);
        report(x, CFGPOOL_POOL, pi, "cidr", "%s overlaps [ippool %s] cidr %s (line %d)", a, q->name,
               b, x->line(x->st, CFGPOOL_POOL, j, "cidr"));
    }
}

static const char *family_name(const struct cfg_ippool *p)
{
    return p->plan.net.base.family == 6 ? "IPv6" : "IPv4";
}

/* One OS's ippools: known names, one pool per family, one NIC, and a node
 * where a VM of it can go. */
static void check_os(struct proxd_config *c, int oi, const struct cfgpool_ctx *x)
{
    struct cfg_os *o = &c->os[oi];
    char item[64];
    bool too_long;
    o->npools = 0;
    if (names_none(o->pools_raw))
        report(x, CFGPOOL_OS, oi, "ippools",
               "names no pool (only separators): name pools, or leave the key out for none");
    for (const char *s = o->pools_raw; next_item(&s, item, sizeof item, &too_long);) {
        const struct cfg_ippool *p = too_long ? NULL : config_ippool(c, item);
        if (!p) {
            report(x, CFGPOOL_OS, oi, "ippools", "unknown pool '%s' (no [ippool %s] section)", item,
                   item);
            continue;
        }
        for (int k = 0; k < o->npools; k++) {
            const struct cfg_ippool *q = &c->pools[o->pools[k]];
            if (q == p) {
                report(x, CFGPOOL_OS, oi, "ippools", "names pool '%s' twice", item);
                return;
            }
            if (p->plan.net.base.family && q->plan.net.base.family == p->plan.net.base.family) {
                report(x, CFGPOOL_OS, oi, "ippools",
                       "names two %s pools (%s, %s): a VM gets at most one address of each "
                       "family",
                       family_name(p), q->name, p->name);
                return;
            }
            if (strcmp(q->bridge, p->bridge) || q->vlan != p->vlan) {
                report(x, CFGPOOL_OS, oi, "ippools",
                       "pools %s and %s put the NIC on different networks (bridge %s tag %d, "
                       "bridge %s tag %d): a VM's addresses share one NIC",
                       q->name, p->name, q->bridge, q->vlan, p->bridge, p->vlan);
                return;
            }
        }
        o->pools[o->npools++] = (int)(p - c->pools);
    }
    if (!o->npools)
        return;
    for (int i = 0; i < c->nnodes; i++) {
        bool ok = config_template(&c->nodes[i], o->name) != 0;
        for (int k = 0; ok && k < o->npools; k++)
            ok = c->pools[o->pools[k]].on_node[i];
        if (ok)
            return;
    }
    report(x, CFGPOOL_OS, oi, "ippools",
           "no node has template.%s and reaches every pool named here: no VM of this OS could "
           "be placed",
           o->name);
}

void cfgpool_check(struct proxd_config *c, const struct cfgpool_ctx *x)
{
    for (int i = 0; i < c->npools; i++)
        check_pool(c, i, x);
    for (int i = 0; i < c->nos; i++)
        check_os(c, i, x);
}
