/* ippool: address arithmetic for IP pools (see ippool.h). Addresses are
 * 128-bit values in two uint64_t halves; IPv4 lives in the low 32 bits. */
#include "core/ippool.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

const char *ippool_strerror(enum ippool_err e)
{
    switch (e) {
    case IPPOOL_OK:
        return "success";
    case IPPOOL_EINVAL:
        return "malformed";
    case IPPOOL_EFAMILY:
        return "wrong address family";
    case IPPOOL_EOUTSIDE:
        return "outside the pool's CIDR";
    case IPPOOL_ETOOMANY:
        return "too many ranges";
    case IPPOOL_EEXHAUSTED:
        return "no free address";
    case IPPOOL_EEMPTY:
        return "the pool hands out no address";
    }
    return "unknown error";
}

static enum ippool_err fail(struct ippool_errinfo *e, enum ippool_err code, const char *field,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static enum ippool_err fail(struct ippool_errinfo *e, enum ippool_err code, const char *field,
                            const char *fmt, ...)
{
    if (e) {
        snprintf(e->field, sizeof e->field, "%s", field);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- 128-bit helpers ---------------------------------------------------- */

static int bits_of(int family)
{
    return family == 4 ? 32 : 128;
}

/* The host-part mask of a prefix: the low (bits - prefix) bits set. */
static void host_mask(int family, int prefix, uint64_t *hi, uint64_t *lo)
{
    int h = bits_of(family) - prefix;
    if (h >= 64) {
        *lo = UINT64_MAX;
        *hi = h == 128 ? UINT64_MAX : (UINT64_C(1) << (h - 64)) - 1;
    } else {
        *lo = h == 0 ? 0 : (UINT64_C(1) << h) - 1;
        *hi = 0;
    }
}

int ippool_addr_cmp(const struct ippool_addr *a, const struct ippool_addr *b)
{
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    if (a->hi != b->hi)
        return a->hi < b->hi ? -1 : 1;
    if (a->lo != b->lo)
        return a->lo < b->lo ? -1 : 1;
    return 0;
}

bool ippool_addr_inc(struct ippool_addr *a)
{
    if (a->family == 4) {
        if (a->lo >= UINT32_MAX)
            return false;
        a->lo++;
        return true;
    }
    if (a->lo == UINT64_MAX && a->hi == UINT64_MAX)
        return false;
    if (++a->lo == 0)
        a->hi++;
    return true;
}

static bool addr_dec(struct ippool_addr *a)
{
    if (a->lo == 0 && a->hi == 0)
        return false;
    if (a->lo-- == 0)
        a->hi--;
    return true;
}

/* hi - lo + 1, saturated at UINT64_MAX. */
static uint64_t span(const struct ippool_range *r)
{
    uint64_t dlo = r->hi.lo - r->lo.lo;
    uint64_t dhi = r->hi.hi - r->lo.hi - (r->hi.lo < r->lo.lo);
    if (dhi || dlo == UINT64_MAX)
        return UINT64_MAX;
    return dlo + 1;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- addresses and networks --------------------------------------------- */

enum ippool_err ippool_addr_parse(const char *s, struct ippool_addr *out)
{
    unsigned char b[16];
    if (!s || !*s || strlen(s) >= IPPOOL_ADDRSTRLEN)
        return IPPOOL_EINVAL;
    memset(out, 0, sizeof *out);
    if (!strchr(s, ':')) {
        if (inet_pton(AF_INET, s, b) != 1)
            return IPPOOL_EINVAL;
        out->family = 4;
        out->lo = (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
        return IPPOOL_OK;
    }
    if (inet_pton(AF_INET6, s, b) != 1)
        return IPPOOL_EINVAL;
    out->family = 6;
    for (int i = 0; i < 8; i++) {
        out->hi = out->hi << 8 | b[i];
        out->lo = out->lo << 8 | b[8 + i];
    }
    return IPPOOL_OK;
}

void ippool_addr_format(const struct ippool_addr *a, char out[IPPOOL_ADDRSTRLEN])
{
    unsigned char b[16];
    if (a->family == 4) {
        for (int i = 0; i < 4; i++)
            b[i] = (unsigned char)(a->lo >> (24 - 8 * i));
        inet_ntop(AF_INET, b, out, IPPOOL_ADDRSTRLEN);
        return;
    }
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(a->hi >> (56 - 8 * i));
        b[8 + i] = (unsigned char)(a->lo >> (56 - 8 * i));
    }
    inet_ntop(AF_INET6, b, out, IPPOOL_ADDRSTRLEN);
}

void ippool_addr_key(const struct ippool_addr *a, char out[IPPOOL_KEYLEN])
{
    snprintf(out, IPPOOL_KEYLEN, "%d%016llx%016llx", a->family, (unsigned long long)a->hi,
             (unsigned long long)a->lo);
}

enum ippool_err ippool_addr_from_key(const char *key, struct ippool_addr *out)
{
    if (strlen(key) != IPPOOL_KEYLEN - 1 || (key[0] != '4' && key[0] != '6'))
        return IPPOOL_EINVAL;
    for (const char *p = key + 1; *p; p++)
        if (!isdigit((unsigned char)*p) && !(*p >= 'a' && *p <= 'f'))
            return IPPOOL_EINVAL;
    char half[17];
    memcpy(half, key + 1, 16);
    half[16] = '\0';
    out->hi = strtoull(half, NULL, 16);
    out->lo = strtoull(key + 17, NULL, 16);
    out->family = key[0] - '0';
    if (out->family == 4 && (out->hi || out->lo > UINT32_MAX))
        return IPPOOL_EINVAL;
    return IPPOOL_OK;
}

/* "ADDR/N" with min_prefix <= N <= the family's width; host bits zero. */
static enum ippool_err net_parse(const char *s, int min_prefix, struct ippool_net *out,
                                 struct ippool_errinfo *e, const char *field)
{
    char a[IPPOOL_ADDRSTRLEN];
    const char *slash = s ? strchr(s, '/') : NULL;
    int64_t prefix;
    if (!slash || (size_t)(slash - s) >= sizeof a || !isdigit((unsigned char)slash[1]) ||
        !parse_i64(slash + 1, &prefix))
        return fail(e, IPPOOL_EINVAL, field, "'%s' is not a CIDR (e.g. 10.0.0.0/24)", s ? s : "");
    snprintf(a, sizeof a, "%.*s", (int)(slash - s), s);
    if (ippool_addr_parse(a, &out->base) != IPPOOL_OK)
        return fail(e, IPPOOL_EINVAL, field, "'%s' is not an IP address", a);
    int max = bits_of(out->base.family);
    if (prefix < min_prefix || prefix > max)
        return fail(e, IPPOOL_EINVAL, field, "'%s': the prefix must be %d to %d%s", s, min_prefix,
                    max, min_prefix > 0 ? " (what PVE's ipconfig accepts)" : "");
    out->prefix = (int)prefix;
    uint64_t mhi, mlo;
    host_mask(out->base.family, out->prefix, &mhi, &mlo);
    if ((out->base.hi & mhi) || (out->base.lo & mlo)) {
        struct ippool_net fixed = *out;
        fixed.base.hi &= ~mhi;
        fixed.base.lo &= ~mlo;
        char want[IPPOOL_NETSTRLEN];
        ippool_net_format(&fixed, want);
        return fail(e, IPPOOL_EINVAL, field, "'%s' has host bits set (the network is %s)", s, want);
    }
    return IPPOOL_OK;
}

enum ippool_err ippool_net_parse(const char *s, struct ippool_net *out, struct ippool_errinfo *e)
{
    return net_parse(s, 8, out, e, "cidr");
}

void ippool_net_format(const struct ippool_net *n, char out[IPPOOL_NETSTRLEN])
{
    char a[IPPOOL_ADDRSTRLEN];
    ippool_addr_format(&n->base, a);
    snprintf(out, IPPOOL_NETSTRLEN, "%s/%d", a, n->prefix);
}

void ippool_net_bounds(const struct ippool_net *n, struct ippool_range *out)
{
    uint64_t mhi, mlo;
    host_mask(n->base.family, n->prefix, &mhi, &mlo);
    out->lo = n->base;
    out->hi = n->base;
    out->hi.hi |= mhi;
    out->hi.lo |= mlo;
}

bool ippool_net_contains(const struct ippool_net *n, const struct ippool_addr *a)
{
    struct ippool_range r;
    ippool_net_bounds(n, &r);
    return ippool_addr_cmp(a, &r.lo) >= 0 && ippool_addr_cmp(a, &r.hi) <= 0;
}

bool ippool_net_overlaps(const struct ippool_net *a, const struct ippool_net *b)
{
    /* two prefixes overlap exactly when one contains the other's base */
    return ippool_net_contains(a, &b->base) || ippool_net_contains(b, &a->base);
}

enum ippool_err ippool_range_parse(const char *s, struct ippool_range *out)
{
    char a[IPPOOL_ADDRSTRLEN];
    if (strchr(s, '/')) {
        struct ippool_net n;
        if (net_parse(s, 0, &n, NULL, "") != IPPOOL_OK)
            return IPPOOL_EINVAL;
        ippool_net_bounds(&n, out);
        return IPPOOL_OK;
    }
    const char *dash = strchr(s, '-');
    if (!dash)
        return ippool_addr_parse(s, &out->lo) == IPPOOL_OK ? (out->hi = out->lo, IPPOOL_OK)
                                                           : IPPOOL_EINVAL;
    if ((size_t)(dash - s) >= sizeof a)
        return IPPOOL_EINVAL;
    snprintf(a, sizeof a, "%.*s", (int)(dash - s), s);
    if (ippool_addr_parse(a, &out->lo) != IPPOOL_OK || ippool_addr_parse(dash + 1, &out->hi))
        return IPPOOL_EINVAL;
    if (out->lo.family != out->hi.family)
        return IPPOOL_EFAMILY;
    return ippool_addr_cmp(&out->lo, &out->hi) <= 0 ? IPPOOL_OK : IPPOOL_EINVAL;
}

enum ippool_err ippool_ranges_parse(const char *s, const char *field, struct ippool_range *out,
                                    int *n, int max, struct ippool_errinfo *e)
{
    static const char seps[] = ", \t";
    for (const char *p = s + strspn(s, seps); *p; p += strspn(p, seps)) {
        size_t len = strcspn(p, seps);
        char item[2 * IPPOOL_ADDRSTRLEN];
        if (len >= sizeof item)
            return fail(e, IPPOOL_EINVAL, field, "'%.40s...' is too long for an address range", p);
        snprintf(item, sizeof item, "%.*s", (int)len, p);
        p += len;
        if (*n == max)
            return fail(e, IPPOOL_ETOOMANY, field, "more than %d items", max);
        enum ippool_err r = ippool_range_parse(item, &out[*n]);
        if (r == IPPOOL_EFAMILY)
            return fail(e, r, field, "'%s' mixes IPv4 and IPv6", item);
        if (r != IPPOOL_OK)
            return fail(e, r, field,
                        "'%s' is not an address, a range FIRST-LAST (FIRST <= LAST) or a CIDR",
                        item);
        (*n)++;
    }
    return IPPOOL_OK;
}

/* ---- pools -------------------------------------------------------------- */

static int range_cmp(const void *x, const void *y)
{
    return ippool_addr_cmp(&((const struct ippool_range *)x)->lo,
                           &((const struct ippool_range *)y)->lo);
}

/* Remove [cut.lo, cut.hi] from the sorted, disjoint segments. */
static void segs_cut(struct ippool *p, const struct ippool_range *cut)
{
    struct ippool_range out[IPPOOL_MAX_SEGS + 1];
    int n = 0;
    for (int i = 0; i < p->nsegs; i++) {
        struct ippool_range s = p->segs[i];
        if (ippool_addr_cmp(&cut->hi, &s.lo) < 0 || ippool_addr_cmp(&cut->lo, &s.hi) > 0) {
            out[n++] = s;
            continue;
        }
        if (ippool_addr_cmp(&s.lo, &cut->lo) < 0) {
            out[n] = (struct ippool_range){s.lo, cut->lo};
            addr_dec(&out[n++].hi);
        }
        if (ippool_addr_cmp(&cut->hi, &s.hi) < 0) {
            out[n] = (struct ippool_range){cut->hi, s.hi};
            ippool_addr_inc(&out[n++].lo);
        }
    }
    if (n > IPPOOL_MAX_SEGS)
        abort(); /* cannot happen: each cut adds at most one segment */
    memcpy(p->segs, out, (size_t)n * sizeof *out);
    p->nsegs = n;
}

static enum ippool_err check_range(const struct ippool *p, const struct ippool_range *r,
                                   const char *field, struct ippool_errinfo *e)
{
    char a[IPPOOL_ADDRSTRLEN], b[IPPOOL_ADDRSTRLEN], net[IPPOOL_NETSTRLEN];
    ippool_addr_format(&r->lo, a);
    ippool_addr_format(&r->hi, b);
    ippool_net_format(&p->net, net);
    if (r->lo.family != p->net.base.family)
        return fail(e, IPPOOL_EFAMILY, field, "%s is IPv%d, the pool's cidr %s is IPv%d", a,
                    r->lo.family, net, p->net.base.family);
    if (!ippool_net_contains(&p->net, &r->lo) || !ippool_net_contains(&p->net, &r->hi))
        return fail(e, IPPOOL_EOUTSIDE, field, "%s%s%s is outside the cidr %s", a,
                    ippool_addr_cmp(&r->lo, &r->hi) ? "-" : "",
                    ippool_addr_cmp(&r->lo, &r->hi) ? b : "", net);
    return IPPOOL_OK;
}

enum ippool_err ippool_prepare(struct ippool *p, struct ippool_errinfo *e)
{
    struct ippool_range whole;
    enum ippool_err r;
    ippool_net_bounds(&p->net, &whole);
    for (int i = 0; i < p->nranges; i++)
        if ((r = check_range(p, &p->ranges[i], "ranges", e)))
            return r;
    for (int i = 0; i < p->nreserved; i++)
        if ((r = check_range(p, &p->reserved[i], "reserved", e)))
            return r;
    /* IPv4 up to /30: network and broadcast; IPv6 up to /126: the anycast 0 */
    bool v4 = p->net.base.family == 4;
    bool trim_lo = v4 ? p->net.prefix <= 30 : p->net.prefix <= 126;
    bool trim_hi = v4 && p->net.prefix <= 30;
    if (p->has_gateway) {
        struct ippool_range g = {p->gateway, p->gateway};
        if ((r = check_range(p, &g, "gateway", e)))
            return r;
        if ((trim_lo && !ippool_addr_cmp(&g.lo, &whole.lo)) ||
            (trim_hi && !ippool_addr_cmp(&g.lo, &whole.hi))) {
            char a[IPPOOL_ADDRSTRLEN];
            ippool_addr_format(&g.lo, a);
            return fail(e, IPPOOL_EINVAL, "gateway", "%s is the %s address of the cidr", a,
                        ippool_addr_cmp(&g.lo, &whole.lo) ? "broadcast" : "network");
        }
    }
    /* the hand-out ranges, sorted and merged where they overlap or touch */
    p->nsegs = 0;
    struct ippool_range tmp[IPPOOL_MAX_RANGES];
    int n = p->nranges ? p->nranges : 1;
    memcpy(tmp, p->nranges ? p->ranges : &whole, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, range_cmp);
    for (int i = 0; i < n; i++) {
        struct ippool_range *last = p->nsegs ? &p->segs[p->nsegs - 1] : NULL;
        struct ippool_addr after = last ? last->hi : tmp[i].lo;
        bool touches = last && (ippool_addr_cmp(&tmp[i].lo, &last->hi) <= 0 ||
                                (ippool_addr_inc(&after) && !ippool_addr_cmp(&after, &tmp[i].lo)));
        if (!touches)
            p->segs[p->nsegs++] = tmp[i];
        else if (ippool_addr_cmp(&tmp[i].hi, &last->hi) > 0)
            last->hi = tmp[i].hi;
    }
    for (int i = 0; i < p->nreserved; i++)
        segs_cut(p, &p->reserved[i]);
    if (p->has_gateway)
        segs_cut(p, &(struct ippool_range){p->gateway, p->gateway});
    if (trim_lo)
        segs_cut(p, &(struct ippool_range){whole.lo, whole.lo});
    if (trim_hi)
        segs_cut(p, &(struct ippool_range){whole.hi, whole.hi});
    p->size = 0;
    for (int i = 0; i < p->nsegs; i++)
        p->size = add_sat(p->size, span(&p->segs[i]));
    if (p->nsegs == 0)
        return fail(e, IPPOOL_EEMPTY, p->nranges ? "ranges" : "cidr",
                    "no address is left to hand out (reserved, gateway, network and broadcast "
                    "take them all)");
    return IPPOOL_OK;
}

/* The index of the first segment whose last address is >= a (nsegs: none). */
static int seg_at_or_after(const struct ippool *p, const struct ippool_addr *a)
{
    int lo = 0, hi = p->nsegs;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ippool_addr_cmp(&p->segs[mid].hi, a) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool ippool_contains(const struct ippool *p, const struct ippool_addr *a)
{
    int i = seg_at_or_after(p, a);
    return i < p->nsegs && ippool_addr_cmp(&p->segs[i].lo, a) <= 0;
}

uint64_t ippool_free(const struct ippool *p, const struct ippool_addr *taken, size_t n)
{
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || ippool_addr_cmp(&taken[i - 1], &taken[i])) && ippool_contains(p, &taken[i]))
            used++;
    return used > p->size ? 0 : p->size - used;
}

void ippool_iter_init(struct ippool_iter *it, const struct ippool *p,
                      const struct ippool_addr *from)
{
    it->p = p;
    it->seg = from ? seg_at_or_after(p, from) : 0;
    it->done = it->seg >= p->nsegs;
    if (it->done)
        return;
    it->at = p->segs[it->seg].lo;
    if (from && ippool_addr_cmp(from, &it->at) > 0)
        it->at = *from;
}

bool ippool_iter_next(struct ippool_iter *it, struct ippool_addr *out)
{
    if (it->done)
        return false;
    *out = it->at;
    if (ippool_addr_cmp(&it->at, &it->p->segs[it->seg].hi) == 0) {
        it->done = ++it->seg >= it->p->nsegs;
        if (!it->done)
            it->at = it->p->segs[it->seg].lo;
    } else {
        ippool_addr_inc(&it->at);
    }
    return true;
}

/* The first index of taken[0..n) whose address is >= a. */
static size_t lower_bound(const struct ippool_addr *taken, size_t n, const struct ippool_addr *a)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ippool_addr_cmp(&taken[mid], a) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Walk the hand-out set from `from` (NULL: the start), stopping before
 * `stop` (NULL: the end), for the first address not taken. Each step either
 * returns or moves past one taken address, so it costs O(n) at most. */
static bool first_free(const struct ippool *p, const struct ippool_addr *taken, size_t n,
                       const struct ippool_addr *from, const struct ippool_addr *stop,
                       struct ippool_addr *out)
{
    struct ippool_iter it;
    struct ippool_addr c;
    ippool_iter_init(&it, p, from);
    if (!ippool_iter_next(&it, &c))
        return false;
    size_t i = lower_bound(taken, n, &c);
    for (;;) {
        if (stop && ippool_addr_cmp(&c, stop) >= 0)
            return false;
        while (i < n && ippool_addr_cmp(&taken[i], &c) < 0)
            i++;
        if (i == n || ippool_addr_cmp(&taken[i], &c) != 0) {
            *out = c;
            return true;
        }
        if (!ippool_iter_next(&it, &c))
            return false;
    }
}

enum ippool_err ippool_pick(const struct ippool *p, const struct ippool_addr *taken, size_t n,
                            const struct ippool_addr *cursor, struct ippool_addr *out)
{
    struct ippool_addr from;
    bool after = false;
    if (cursor) {
        from = *cursor;
        after = ippool_addr_inc(&from) && from.family == p->net.base.family;
    }
    if (after && first_free(p, taken, n, &from, NULL, out))
        return IPPOOL_OK;
    return first_free(p, taken, n, NULL, after ? &from : NULL, out) ? IPPOOL_OK : IPPOOL_EEXHAUSTED;
}

/* ---- MAC addresses ------------------------------------------------------ */

void ippool_mac_random(struct ippool_mac *m)
{
    if (RAND_bytes(m->b, sizeof m->b) != 1)
        abort();
    m->b[0] = (uint8_t)((m->b[0] & 0xfc) | 0x02);
}

enum ippool_err ippool_mac_parse(const char *s, struct ippool_mac *out)
{
    if (strlen(s) != 17)
        return IPPOOL_EINVAL;
    for (int i = 0; i < 6; i++) {
        const char *p = s + 3 * i;
        if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) ||
            (i < 5 && p[2] != ':'))
            return IPPOOL_EINVAL;
        char hex[3] = {p[0], p[1], '\0'};
        out->b[i] = (uint8_t)strtoul(hex, NULL, 16);
    }
    return out->b[0] & 1 ? IPPOOL_EINVAL : IPPOOL_OK; /* multicast */
}

void ippool_mac_format(const struct ippool_mac *m, char out[IPPOOL_MACSTRLEN])
{
    snprintf(out, IPPOOL_MACSTRLEN, "%02X:%02X:%02X:%02X:%02X:%02X", m->b[0], m->b[1], m->b[2],
             m->b[3], m->b[4], m->b[5]);
}

/* ---- Proxmox VE config values ------------------------------------------- */

void ippool_fmt_net(struct buf *b, const struct ippool_mac *mac, const char *bridge, int vlan)
{
    char m[IPPOOL_MACSTRLEN];
    ippool_mac_format(mac, m);
    buf_printf(b, "virtio=%s,bridge=%s", m, bridge);
    if (vlan > 0)
        buf_printf(b, ",tag=%d", vlan);
}

static void fmt_lease(struct buf *b, const struct ippool_lease *l, const char *ip, const char *gw)
{
    char a[IPPOOL_ADDRSTRLEN];
    ippool_addr_format(&l->addr, a);
    buf_printf(b, "%s=%s/%d", ip, a, l->pool->net.prefix);
    if (l->pool->has_gateway) {
        ippool_addr_format(&l->pool->gateway, a);
        buf_printf(b, ",%s=%s", gw, a);
    }
}

void ippool_fmt_ipconfig(struct buf *b, const struct ippool_lease *v4,
                         const struct ippool_lease *v6)
{
    if (v4)
        fmt_lease(b, v4, "ip", "gw");
    if (v4 && v6)
        buf_addc(b, ',');
    if (v6)
        fmt_lease(b, v6, "ip6", "gw6");
}

void ippool_fmt_nameserver(struct buf *b, const struct ippool_addr *dns, int n)
{
    char a[IPPOOL_ADDRSTRLEN];
    for (int i = 0; i < n; i++) {
        ippool_addr_format(&dns[i], a);
        buf_printf(b, "%s%s", i ? " " : "", a);
    }
}

/* ---- reading Proxmox VE config values ----------------------------------- */

#define PVE_VALUE_MAX 1024

/* "ADDR/N" of an ipconfig item into a, *prefix; family 0 for the keywords. */
static enum ippool_err ipconfig_item(const char *v, size_t len, int family, struct ippool_addr *a,
                                     int *prefix)
{
    char item[IPPOOL_NETSTRLEN];
    memset(a, 0, sizeof *a);
    *prefix = 0;
    if (len >= sizeof item)
        return IPPOOL_EINVAL;
    snprintf(item, sizeof item, "%.*s", (int)len, v);
    if (!strcmp(item, "dhcp") || !strcmp(item, "manual") || (family == 6 && !strcmp(item, "auto")))
        return IPPOOL_OK;
    char *slash = strchr(item, '/');
    int64_t p;
    if (!slash || !isdigit((unsigned char)slash[1]) || !parse_i64(slash + 1, &p))
        return IPPOOL_EINVAL;
    *slash = '\0';
    if (ippool_addr_parse(item, a) != IPPOOL_OK || a->family != family || p < 0 ||
        p > bits_of(family)) {
        memset(a, 0, sizeof *a);
        return IPPOOL_EINVAL;
    }
    *prefix = (int)p;
    return IPPOOL_OK;
}

enum ippool_err ippool_ipconfig_parse(const char *s, struct ippool_addr *v4, int *p4,
                                      struct ippool_addr *v6, int *p6)
{
    memset(v4, 0, sizeof *v4);
    memset(v6, 0, sizeof *v6);
    *p4 = *p6 = 0;
    if (strlen(s) > PVE_VALUE_MAX)
        return IPPOOL_EINVAL;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, ",");
        enum ippool_err r = IPPOOL_OK;
        if (n > 3 && !strncmp(p, "ip=", 3))
            r = ipconfig_item(p + 3, n - 3, 4, v4, p4);
        else if (n > 4 && !strncmp(p, "ip6=", 4))
            r = ipconfig_item(p + 4, n - 4, 6, v6, p6);
        if (r)
            return r;
        p += n;
        if (*p)
            p++;
    }
    return IPPOOL_OK;
}

enum ippool_err ippool_net_mac(const char *net, struct ippool_mac *out)
{
    char mac[IPPOOL_MACSTRLEN];
    if (strlen(net) > PVE_VALUE_MAX)
        return IPPOOL_EINVAL;
    for (const char *p = net; *p;) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        /* "macaddr=MAC", or the first item "<model>=MAC" (not "model=...") */
        bool is_mac = eq && ((eq - p == 7 && !strncmp(p, "macaddr", 7)) ||
                             (p == net && strncmp(p, "model=", 6) && strncmp(p, "bridge=", 7)));
        if (is_mac) {
            size_t ml = n - (size_t)(eq + 1 - p);
            if (ml >= sizeof mac)
                return IPPOOL_EINVAL;
            snprintf(mac, sizeof mac, "%.*s", (int)ml, eq + 1);
            return ippool_mac_parse(mac, out);
        }
        p += n;
        if (*p)
            p++;
    }
    return IPPOOL_EINVAL;
}
