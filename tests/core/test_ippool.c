/* Tests for core/ippool: address and CIDR parsing for both families, the
 * hand-out set of IPv4 /24 and /30 and IPv6 /64 and /126 pools with gateway
 * and reserved ranges, exhaustion, picking after a cursor, counts of pools
 * too big to enumerate (a /8, a v6 /64 and /48: iterated lazily, picked in
 * O(taken)), malformed input naming the field, MACs and the Proxmox
 * strings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "core/ippool.h"

static struct ippool_addr A(const char *s) {
    struct ippool_addr a;
    if (ippool_addr_parse(s, &a) != IPPOOL_OK)
        fail_msg("bad test address %s", s);
    return a;
}

static const char *
F(const struct ippool_addr *a)
{
    static char out[4][IPPOOL_ADDRSTRLEN];
    static int k;
    k = (k + 1) % 4;
    ippool_addr_format(a, out[k]);
    return out[k];
}

/* A prepared pool from text; ranges/reserved/gateway may be NULL. */
static void pool(struct ippool *p, const char *cidr, const char *gw, const char *ranges,
                 const char *reserved)
{
    struct ippool_errinfo e = {0};
    memset(p, 0, sizeof *p);
    assert_int_equal(ippool_net_parse(cidr, &p->net, &e), IPPOOL_OK);
    if (gw) {
        p->has_gateway = true;
        p->gateway = A(gw);
    }
    if (ranges)
        assert_int_equal(
            ippool_ranges_parse(ranges, "ranges", p->ranges, &p->nranges, IPPOOL_MAX_RANGES, &e),
            IPPOOL_OK);
    if (reserved)
        assert_int_equal(ippool_ranges_parse(reserved, "reserved", p->reserved, &p->nreserved,
                                             IPPOOL_MAX_RESERVED, &e),
                         IPPOOL_OK);
    enum ippool_err r = ippool_prepare(p, &e);
    if (r)
        fail_msg("prepare %s: %s: %s", cidr, e.field, e.msg);
}

/* The whole hand-out set as text, "a b c" (small pools only). */
static char *all(const struct ippool *p)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    struct ippool_iter it;
    struct ippool_addr a;
    ippool_iter_init(&it, p, NULL);
    while (ippool_iter_next(&it, &a))
        buf_printf(&b, "%s%s", buf_str(&b)[0] ? " " : "", F(&a));
    return buf_take(&b);
}

static void test_addr_parse_format(void **state)
{
    (void)state;
    struct ippool_addr a;
    assert_int_equal(ippool_addr_parse("10.1.2.3", &a), IPPOOL_OK);
    assert_int_equal(a.family, 4);
    assert_int_equal(a.lo, 0x0a010203);
    assert_string_equal(F(&a), "10.1.2.3");
    assert_int_equal(ippool_addr_parse("2001:DB8:0:0:0:0:0:5", &a), IPPOOL_OK);
    assert_int_equal(a.family, 6);
    assert_true(a.hi == UINT64_C(0x20010db800000000) && a.lo == 5);
    assert_string_equal(F(&a), "2001:db8::5"); /* RFC 5952 */
    const char *bad[] = {"",
                         "10.0.0",
                         "10.0.0.256",
                         "10.0.0.1 ",
                         " 10.0.0.1",
                         "10.0.0.1/24",
                         "2001:db8:::1",
                         "fe80::1%eth0",
                         "[2001:db8::1]",
                         "hello",
                         "1111:2222:3333:4444:5555:6666:7777:8888:9999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (ippool_addr_parse(bad[i], &a) != IPPOOL_EINVAL)
            fail_msg("'%s' parsed", bad[i]);
    /* order: all IPv4 before IPv6, then by value; increments carry */
    assert_true(ippool_addr_cmp(&(struct ippool_addr){0, 0xffffffff, 4},
                                &(struct ippool_addr){0, 0, 6}) < 0);
    a = A("10.0.0.255");
    assert_true(ippool_addr_inc(&a));
    assert_string_equal(F(&a), "10.0.1.0");
    a = A("255.255.255.255");
    assert_false(ippool_addr_inc(&a));
    a = A("2001:db8::ffff:ffff:ffff:ffff");
    assert_true(ippool_addr_inc(&a));
    assert_string_equal(F(&a), "2001:db8:0:1::");
    a = A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_false(ippool_addr_inc(&a));
}

static void test_net_parse(void **state)
{
    (void)state;
    struct ippool_net n;
    struct ippool_errinfo e;
    char s[IPPOOL_NETSTRLEN];
    assert_int_equal(ippool_net_parse("192.168.10.0/24", &n, &e), IPPOOL_OK);
    ippool_net_format(&n, s);
    assert_string_equal(s, "192.168.10.0/24");
    assert_true(ippool_net_contains(&n, &(struct ippool_addr){0, 0xc0a80aff, 4}));
    assert_false(ippool_net_contains(&n, &(struct ippool_addr){0, 0xc0a80b00, 4}));
    assert_int_equal(ippool_net_parse("2001:db8:1::/64", &n, &e), IPPOOL_OK);
    ippool_net_format(&n, s);
    assert_string_equal(s, "2001:db8:1::/64");
    struct ippool_addr in = A("2001:db8:1::ffff:ffff:ffff:ffff"), out = A("2001:db8:2::");
    assert_true(ippool_net_contains(&n, &in));
    assert_false(ippool_net_contains(&n, &out));
    assert_false(ippool_net_contains(&n, &(struct ippool_addr){0, 1, 4}));

    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"10.0.0.5/24", "'10.0.0.5/24' has host bits set (the network is 10.0.0.0/24)"},
        {"2001:db8::1/64", "'2001:db8::1/64' has host bits set (the network is 2001:db8::/64)"},
        {"10.0.0.0", "'10.0.0.0' is not a CIDR (e.g. 10.0.0.0/24)"},
        {"10.0.0.0/", "'10.0.0.0/' is not a CIDR (e.g. 10.0.0.0/24)"},
        {"10.0.0.0/x", "'10.0.0.0/x' is not a CIDR (e.g. 10.0.0.0/24)"},
        {"10.0.0.0/-1", "'10.0.0.0/-1' is not a CIDR (e.g. 10.0.0.0/24)"},
        {"10.0.0.0/33", "'10.0.0.0/33': the prefix must be 8 to 32 (what PVE's ipconfig accepts)"},
        {"0.0.0.0/0", "'0.0.0.0/0': the prefix must be 8 to 32 (what PVE's ipconfig accepts)"},
        {"2001:db8::/129",
         "'2001:db8::/129': the prefix must be 8 to 128 (what PVE's ipconfig accepts)"},
        {"10.0.0.999/24", "'10.0.0.999' is not an IP address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        assert_int_equal(ippool_net_parse(bad[i].in, &n, &e), IPPOOL_EINVAL);
        assert_string_equal(e.field, "cidr");
        assert_string_equal(e.msg, bad[i].msg);
    }
    struct ippool_net a, b;
    ippool_net_parse("10.0.0.0/16", &a, &e);
    ippool_net_parse("10.0.5.0/24", &b, &e);
    assert_true(ippool_net_overlaps(&a, &b) && ippool_net_overlaps(&b, &a));
    ippool_net_parse("10.1.0.0/16", &b, &e);
    assert_false(ippool_net_overlaps(&a, &b));
    ippool_net_parse("2001:db8::/32", &b, &e);
    assert_false(ippool_net_overlaps(&a, &b));
}

static void test_v4_24(void **state)
{
    (void)state;
    struct ippool p;
    pool(&p, "10.0.0.0/24", "10.0.0.1", NULL, "10.0.0.100-10.0.0.199, 10.0.0.250");
    /* 256 - network - broadcast - gateway - 100 reserved - 1 reserved */
    assert_int_equal(p.size, 256 - 2 - 1 - 100 - 1);
    struct ippool_addr a = A("10.0.0.0");
    assert_false(ippool_contains(&p, &a));
    a = A("10.0.0.1");
    assert_false(ippool_contains(&p, &a));
    a = A("10.0.0.2");
    assert_true(ippool_contains(&p, &a));
    a = A("10.0.0.150");
    assert_false(ippool_contains(&p, &a));
    a = A("10.0.0.255");
    assert_false(ippool_contains(&p, &a));
    a = A("10.0.0.254");
    assert_true(ippool_contains(&p, &a));
    /* iteration is in order and agrees with contains and size */
    struct ippool_iter it;
    struct ippool_addr prev = {0}, x;
    uint64_t n = 0;
    ippool_iter_init(&it, &p, NULL);
    while (ippool_iter_next(&it, &x)) {
        assert_true(ippool_contains(&p, &x));
        assert_true(n == 0 || ippool_addr_cmp(&prev, &x) < 0);
        prev = x;
        n++;
    }
    assert_int_equal(n, p.size);
    /* from the middle of a reserved block: the next segment */
    a = A("10.0.0.120");
    ippool_iter_init(&it, &p, &a);
    assert_true(ippool_iter_next(&it, &x));
    assert_string_equal(F(&x), "10.0.0.200");

    /* picking: first free, then after a cursor, wrapping round */
    struct ippool_addr taken[] = {A("10.0.0.2"), A("10.0.0.3"),   A("10.0.0.3"),
                                  A("10.0.0.5"), A("10.0.0.150"), A("10.0.0.254")};
    size_t nt = sizeof taken / sizeof *taken;
    assert_int_equal(ippool_pick(&p, taken, nt, NULL, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "10.0.0.4");
    a = A("10.0.0.4");
    assert_int_equal(ippool_pick(&p, taken, nt, &a, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "10.0.0.6");
    a = A("10.0.0.99");
    assert_int_equal(ippool_pick(&p, taken, nt, &a, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "10.0.0.200");
    a = A("10.0.0.253");
    assert_int_equal(ippool_pick(&p, taken, nt, &a, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "10.0.0.4"); /* .254 taken, .255 broadcast: wrap */
    /* a cursor of the other family starts from the beginning */
    a = A("2001:db8::1");
    assert_int_equal(ippool_pick(&p, taken, nt, &a, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "10.0.0.4");
    /* taken addresses outside the hand-out set do not count as used */
    assert_int_equal(ippool_free(&p, taken, nt), p.size - 4);
}

static void test_v4_30_and_exhaustion(void **state)
{
    (void)state;
    struct ippool p;
    pool(&p, "192.0.2.4/30", "192.0.2.5", NULL, NULL);
    char *s = all(&p);
    assert_string_equal(s, "192.0.2.6"); /* .4 network, .5 gateway, .7 broadcast */
    free(s);
    struct ippool_addr x, t = A("192.0.2.6");
    assert_int_equal(ippool_pick(&p, &t, 1, NULL, &x), IPPOOL_EEXHAUSTED);
    assert_int_equal(ippool_pick(&p, &t, 1, &t, &x), IPPOOL_EEXHAUSTED);
    assert_int_equal(ippool_free(&p, &t, 1), 0);
    assert_int_equal(ippool_pick(&p, NULL, 0, &t, &x), IPPOOL_OK); /* wraps to itself */
    assert_string_equal(F(&x), "192.0.2.6");
    /* /31 and /32 hand out every address (RFC 3021) */
    pool(&p, "192.0.2.8/31", NULL, NULL, NULL);
    s = all(&p);
    assert_string_equal(s, "192.0.2.8 192.0.2.9");
    free(s);
    pool(&p, "192.0.2.10/32", NULL, NULL, NULL);
    assert_int_equal(p.size, 1);

    /* a /24 filled address by address: exactly size picks, then exhausted */
    pool(&p, "10.9.0.0/24", "10.9.0.254", "10.9.0.10-10.9.0.60", "10.9.0.20/30");
    struct ippool_addr taken[64];
    size_t n = 0;
    struct ippool_addr *cur = NULL;
    while (ippool_pick(&p, taken, n, cur, &x) == IPPOOL_OK) {
        assert_true(ippool_contains(&p, &x));
        assert_true(n == 0 || ippool_addr_cmp(&taken[n - 1], &x) < 0); /* sorted as we go */
        assert_true(n < 64);
        taken[n++] = x;
        cur = &taken[n - 1];
    }
    assert_int_equal(n, 51 - 4);
    assert_int_equal(p.size, 51 - 4);
    assert_int_equal(ippool_free(&p, taken, n), 0);
}

static void test_v6(void **state)
{
    (void)state;
    struct ippool p;
    /* /126: ::0 is the subnet-router anycast, ::1 the gateway */
    pool(&p, "2001:db8::/126", "2001:db8::1", NULL, NULL);
    char *s = all(&p);
    assert_string_equal(s, "2001:db8::2 2001:db8::3");
    free(s);
    /* /64: 2^64 addresses less the anycast and the gateway; counted, not listed */
    pool(&p, "2001:db8:5::/64", "2001:db8:5::1", NULL, "2001:db8:5::ff00/120");
    assert_true(p.size == UINT64_MAX - 1 - 256);
    struct ippool_addr taken[] = {A("2001:db8:5::2"), A("2001:db8:5::3"), A("2001:db8:5::4")};
    struct ippool_addr x, c = A("2001:db8:5::feff");
    assert_int_equal(ippool_pick(&p, taken, 3, NULL, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "2001:db8:5::5");
    assert_int_equal(ippool_pick(&p, taken, 3, &c, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "2001:db8:5::1:0"); /* past the reserved /120 */
    c = A("2001:db8:5:0:ffff:ffff:ffff:ffff");
    assert_int_equal(ippool_pick(&p, taken, 3, &c, &x), IPPOOL_OK);
    assert_string_equal(F(&x), "2001:db8:5::5"); /* wrapped */
    assert_true(ippool_free(&p, taken, 3) == p.size - 3);
    /* the last addresses, across the 64-bit halves */
    pool(&p, "2001:db8:7::/63", NULL, "2001:db8:7:0:ffff:ffff:ffff:fffe-2001:db8:7:1::1", NULL);
    s = all(&p);
    assert_string_equal(s, "2001:db8:7:0:ffff:ffff:ffff:fffe 2001:db8:7:0:ffff:ffff:ffff:ffff "
                           "2001:db8:7:1:: 2001:db8:7:1::1");
    free(s);
    /* a /48 saturates the count */
    pool(&p, "2001:db8:9::/48", NULL, NULL, NULL);
    assert_true(p.size == UINT64_MAX);
}

/* A /8 and a v6 /64 nearly full at the front: picking is O(taken), never
 * O(pool size); the pool is never listed. */
static void test_big_pools_lazy(void **state)
{
    (void)state;
    struct ippool p;
    pool(&p, "10.0.0.0/8", "10.0.0.1", NULL, NULL);
    assert_int_equal(p.size, (1u << 24) - 3);
    size_t n = 100000;
    struct ippool_addr *taken = calloc(n, sizeof *taken), x;
    for (size_t i = 0; i < n; i++)
        taken[i] = (struct ippool_addr){0, 0x0a000002 + i, 4};
    assert_int_equal(ippool_pick(&p, taken, n, NULL, &x), IPPOOL_OK);
    assert_int_equal(x.lo, 0x0a000002 + n);
    assert_int_equal(ippool_free(&p, taken, n), p.size - n);
    pool(&p, "fd00:1::/64", NULL, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        taken[i] = (struct ippool_addr){UINT64_C(0xfd00000100000000), 1 + i, 6};
    assert_int_equal(ippool_pick(&p, taken, n, &taken[n / 2], &x), IPPOOL_OK);
    assert_true(x.hi == UINT64_C(0xfd00000100000000) && x.lo == n + 1);
    assert_true(ippool_free(&p, taken, n) == UINT64_MAX - n);
    free(taken);
}

static void expect_prepare(const char *cidr, const char *gw, const char *ranges,
                           const char *reserved, enum ippool_err code, const char *field,
                           const char *msg)
{
    struct ippool p = {0};
    struct ippool_errinfo e = {0};
    assert_int_equal(ippool_net_parse(cidr, &p.net, &e), IPPOOL_OK);
    if (gw) {
        p.has_gateway = true;
        p.gateway = A(gw);
    }
    if (ranges)
        assert_int_equal(
            ippool_ranges_parse(ranges, "ranges", p.ranges, &p.nranges, IPPOOL_MAX_RANGES, &e), 0);
    if (reserved)
        assert_int_equal(ippool_ranges_parse(reserved, "reserved", p.reserved, &p.nreserved,
                                             IPPOOL_MAX_RESERVED, &e),
                         0);
    assert_int_equal(ippool_prepare(&p, &e), code);
    assert_string_equal(e.field, field);
    assert_string_equal(e.msg, msg);
}

static void test_bad_plans(void **state)
{
    (void)state;
    expect_prepare("10.0.0.0/24", "10.0.1.1", NULL, NULL, IPPOOL_EOUTSIDE, "gateway",
                   "10.0.1.1 is outside the cidr 10.0.0.0/24");
    expect_prepare("10.0.0.0/24", "2001:db8::1", NULL, NULL, IPPOOL_EFAMILY, "gateway",
                   "2001:db8::1 is IPv6, the pool's cidr 10.0.0.0/24 is IPv4");
    expect_prepare("10.0.0.0/24", "10.0.0.255", NULL, NULL, IPPOOL_EINVAL, "gateway",
                   "10.0.0.255 is the broadcast address of the cidr");
    expect_prepare("10.0.0.0/24", "10.0.0.0", NULL, NULL, IPPOOL_EINVAL, "gateway",
                   "10.0.0.0 is the network address of the cidr");
    expect_prepare("10.0.0.0/24", NULL, "10.0.0.10-10.0.1.10", NULL, IPPOOL_EOUTSIDE, "ranges",
                   "10.0.0.10-10.0.1.10 is outside the cidr 10.0.0.0/24");
    expect_prepare("2001:db8::/64", NULL, NULL, "2001:db9::/64", IPPOOL_EOUTSIDE, "reserved",
                   "2001:db9::-2001:db9::ffff:ffff:ffff:ffff is outside the cidr 2001:db8::/64");
    expect_prepare("10.0.0.0/30", "10.0.0.1", NULL, "10.0.0.2", IPPOOL_EEMPTY, "cidr",
                   "no address is left to hand out (reserved, gateway, network and broadcast "
                   "take them all)");
    expect_prepare("10.0.0.0/24", NULL, "10.0.0.10-10.0.0.20", "10.0.0.0/27", IPPOOL_EEMPTY,
                   "ranges",
                   "no address is left to hand out (reserved, gateway, network and broadcast "
                   "take them all)");

    struct ippool_range r[4];
    int n = 0;
    struct ippool_errinfo e = {0};
    assert_int_equal(ippool_ranges_parse("10.0.0.1, 10.0.0.9-10.0.0.3", "reserved", r, &n, 4, &e),
                     IPPOOL_EINVAL);
    assert_string_equal(e.field, "reserved");
    assert_string_equal(
        e.msg,
        "'10.0.0.9-10.0.0.3' is not an address, a range FIRST-LAST (FIRST <= LAST) or a CIDR");
    n = 0;
    assert_int_equal(ippool_ranges_parse("10.0.0.1-2001:db8::1", "ranges", r, &n, 4, &e),
                     IPPOOL_EFAMILY);
    assert_string_equal(e.msg, "'10.0.0.1-2001:db8::1' mixes IPv4 and IPv6");
    n = 0;
    assert_int_equal(
        ippool_ranges_parse("1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4 5.5.5.5", "ranges", r, &n, 4, &e),
        IPPOOL_ETOOMANY);
    assert_string_equal(e.msg, "more than 4 items");
    n = 0;
    assert_int_equal(
        ippool_ranges_parse("10.0.0.0/27 ,, 10.0.1.1\t10.0.2.0-10.0.2.3", "ranges", r, &n, 4, &e),
        IPPOOL_OK);
    assert_int_equal(n, 3);
    assert_string_equal(F(&r[0].hi), "10.0.0.31");

    /* overlapping and touching hand-out ranges merge */
    struct ippool p;
    pool(&p, "10.0.0.0/24", NULL, "10.0.0.20-10.0.0.30, 10.0.0.10-10.0.0.25, 10.0.0.31", NULL);
    assert_int_equal(p.nsegs, 1);
    assert_int_equal(p.size, 22);
}

static void test_mac(void **state)
{
    (void)state;
    struct ippool_mac m[2000];
    char s[IPPOOL_MACSTRLEN];
    for (int i = 0; i < 2000; i++) {
        ippool_mac_random(&m[i]);
        assert_int_equal(m[i].b[0] & 3, 2); /* locally administered, unicast */
        for (int j = 0; j < i; j++)
            assert_memory_not_equal(m[i].b, m[j].b, 6);
    }
    struct ippool_mac back;
    ippool_mac_format(&m[0], s);
    assert_int_equal(ippool_mac_parse(s, &back), IPPOOL_OK);
    assert_memory_equal(back.b, m[0].b, 6);
    assert_int_equal(ippool_mac_parse("bc:24:11:0a:0b:0c", &back), IPPOOL_OK);
    ippool_mac_format(&back, s);
    assert_string_equal(s, "BC:24:11:0A:0B:0C");
    const char *bad[] = {"01:00:5e:00:00:01", "bc:24:11:0a:0b", "bc-24-11-0a-0b-0c",
                         "bc:24:11:0a:0b:0g", "bc:24:11:0a:0b:0c:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(ippool_mac_parse(bad[i], &back), IPPOOL_EINVAL);
}

static void test_pve_strings(void **state)
{
    (void)state;
    struct ippool p4, p6;
    pool(&p4, "192.168.10.0/24", "192.168.10.1", NULL, NULL);
    pool(&p6, "2001:db8:10::/64", "2001:db8:10::1", NULL, NULL);
    struct ippool_lease l4 = {&p4, A("192.168.10.5")}, l6 = {&p6, A("2001:db8:10::5")};
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    ippool_fmt_ipconfig(&b, &l4, &l6);
    assert_string_equal(
        buf_str(&b), "ip=192.168.10.5/24,gw=192.168.10.1,ip6=2001:db8:10::5/64,gw6=2001:db8:10::1");
    buf_reset(&b);
    ippool_fmt_ipconfig(&b, NULL, &l6);
    assert_string_equal(buf_str(&b), "ip6=2001:db8:10::5/64,gw6=2001:db8:10::1");
    buf_reset(&b);
    p4.has_gateway = false;
    ippool_fmt_ipconfig(&b, &l4, NULL);
    assert_string_equal(buf_str(&b), "ip=192.168.10.5/24");
    buf_reset(&b);
    struct ippool_mac m = {{0x02, 0xab, 0x00, 0x01, 0x02, 0x03}};
    ippool_fmt_net(&b, &m, "vmbr1", 0);
    assert_string_equal(buf_str(&b), "virtio=02:AB:00:01:02:03,bridge=vmbr1");
    buf_reset(&b);
    ippool_fmt_net(&b, &m, "vmbr1", 42);
    assert_string_equal(buf_str(&b), "virtio=02:AB:00:01:02:03,bridge=vmbr1,tag=42");
    buf_reset(&b);
    struct ippool_addr dns[] = {A("192.0.2.53"), A("2001:db8::53")};
    ippool_fmt_nameserver(&b, dns, 2);
    assert_string_equal(buf_str(&b), "192.0.2.53 2001:db8::53");
    buf_release(&b);
}

static void test_keys(void **state)
{
    (void)state;
    const char *order[] = {"0.0.0.1",
                           "10.0.0.9",
                           "10.0.0.10",
                           "255.255.255.255",
                           "::",
                           "::ffff:1.2.3.4",
                           "2001:db8::1",
                           "2001:db8:0:1::",
                           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"};
    char prev[IPPOOL_KEYLEN] = "", k[IPPOOL_KEYLEN];
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        struct ippool_addr a = A(order[i]), back;
        ippool_addr_key(&a, k);
        assert_int_equal(strlen(k), IPPOOL_KEYLEN - 1);
        assert_true(strcmp(prev, k) < 0); /* text order is address order */
        assert_int_equal(ippool_addr_from_key(k, &back), IPPOOL_OK);
        assert_int_equal(ippool_addr_cmp(&a, &back), 0);
        snprintf(prev, sizeof prev, "%s", k);
    }
    struct ippool_addr a = A("10.0.0.1");
    ippool_addr_key(&a, k);
    assert_string_equal(k, "4"
                           "0000000000000000"
                           "000000000a000001");
    struct ippool_addr x;
    assert_int_equal(ippool_addr_from_key("50000000000000000000000000a000001", &x), IPPOOL_EINVAL);
    assert_int_equal(ippool_addr_from_key("40000000000000000000000000a00000", &x), IPPOOL_EINVAL);
    assert_int_equal(ippool_addr_from_key("40000000000000000000000000a00000g", &x), IPPOOL_EINVAL);
    assert_int_equal(ippool_addr_from_key("400000000000000000000000100000000", &x), IPPOOL_EINVAL);
}

static void test_read_pve_values(void **state)
{
    (void)state;
    struct ippool_addr v4, v6;
    int p4, p6;
    assert_int_equal(ippool_ipconfig_parse("ip=192.168.10.5/24,gw=192.168.10.1,"
                                           "ip6=2001:db8::5/64,gw6=2001:db8::1",
                                           &v4, &p4, &v6, &p6),
                     IPPOOL_OK);
    assert_string_equal(F(&v4), "192.168.10.5");
    assert_int_equal(p4, 24);
    assert_string_equal(F(&v6), "2001:db8::5");
    assert_int_equal(p6, 64);
    assert_int_equal(ippool_ipconfig_parse("gw=10.0.0.1,ip=dhcp,ip6=auto", &v4, &p4, &v6, &p6),
                     IPPOOL_OK);
    assert_int_equal(v4.family, 0);
    assert_int_equal(v6.family, 0);
    assert_int_equal(ippool_ipconfig_parse("", &v4, &p4, &v6, &p6), IPPOOL_OK);
    assert_int_equal(v4.family, 0);
    const char *bad[] = {"ip=10.0.0.5",     "ip=10.0.0.5/33", "ip=2001:db8::5/64",
                         "ip6=10.0.0.5/24", "ip=10.0.0.x/24", "ip6=auto6",
                         "ip=/24"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (ippool_ipconfig_parse(bad[i], &v4, &p4, &v6, &p6) != IPPOOL_EINVAL)
            fail_msg("'%s' parsed", bad[i]);
    char *big = calloc(1, 2000);
    memset(big, 'a', 1999);
    assert_int_equal(ippool_ipconfig_parse(big, &v4, &p4, &v6, &p6), IPPOOL_EINVAL);
    assert_int_equal(ippool_net_mac(big, &(struct ippool_mac){{0}}), IPPOOL_EINVAL);
    free(big);

    struct ippool_mac m;
    char s[IPPOOL_MACSTRLEN];
    assert_int_equal(ippool_net_mac("virtio=BC:24:11:0A:0B:0C,bridge=vmbr0,tag=5", &m), IPPOOL_OK);
    ippool_mac_format(&m, s);
    assert_string_equal(s, "BC:24:11:0A:0B:0C");
    assert_int_equal(ippool_net_mac("model=e1000,bridge=vmbr0,macaddr=02:00:00:00:00:01", &m),
                     IPPOOL_OK);
    ippool_mac_format(&m, s);
    assert_string_equal(s, "02:00:00:00:00:01");
    assert_int_equal(ippool_net_mac("virtio,bridge=vmbr0", &m), IPPOOL_EINVAL);
    assert_int_equal(ippool_net_mac("bridge=vmbr0,firewall=1", &m), IPPOOL_EINVAL);
    assert_int_equal(ippool_net_mac("virtio=01:00:5E:00:00:01,bridge=vmbr0", &m), IPPOOL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parse_format),
        cmocka_unit_test(test_net_parse),
        cmocka_unit_test(test_v4_24),
        cmocka_unit_test(test_v4_30_and_exhaustion),
        cmocka_unit_test(test_v6),
        cmocka_unit_test(test_big_pools_lazy),
        cmocka_unit_test(test_bad_plans),
        cmocka_unit_test(test_mac),
        cmocka_unit_test(test_pve_strings),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_read_pve_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
