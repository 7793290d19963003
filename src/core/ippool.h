/* ippool: IP address pools as pure arithmetic — no SQL, no HTTP, no clock.
 *
 * A pool is a CIDR (IPv4 or IPv6), an optional gateway, the ranges that may
 * be handed out (none: the whole CIDR) and the ranges kept back. From these
 * ippool_prepare() computes the hand-out set: sorted, disjoint segments
 * without the reserved ranges, the gateway, and the network and broadcast
 * addresses of IPv4 prefixes up to /30 (a /31 and a /32 hand out all of
 * theirs, RFC 3021). In IPv6 the all-zero host (the subnet-router anycast
 * address, RFC 4291) is skipped too.
 *
 * Nothing is ever enumerated into memory: an IPv6 /64 is 2^64 addresses.
 * Sizes are counted per segment and saturate at UINT64_MAX; iteration and
 * picking walk the segments lazily, and picking costs O(taken), never
 * O(pool size).
 *
 * What is in use is the caller's business (the store, the inventory): the
 * functions take it as a sorted array of addresses (ippool_addr_cmp order,
 * duplicates and addresses outside the pool allowed).
 *
 * MAC addresses: ippool_mac_random() draws 46 random bits (OpenSSL's
 * RAND_bytes, as core_uuid does) into a locally administered unicast MAC.
 * Chosen over deriving one from (VMID, pool): VMIDs repeat across clusters
 * and after quarantine, record ids repeat across deployments sharing a
 * VLAN, and a hash of either is no more unique than random bits while
 * hiding a clash. The MAC is recorded with the address, in the same store
 * transaction, under a unique index (a clash, about 1 in 10^13 per pair, is
 * a retry); "stable" means every later configure or repair uses the
 * recorded MAC. docs/design/ippool.md has the rest of the design.
 *
 * Errors are enum ippool_err values (0 = success); functions that parse user
 * input also fill a struct ippool_errinfo naming the field. All functions
 * are reentrant; a struct ippool is read-only after ippool_prepare() and
 * may then be shared between threads. */
#ifndef CORE_IPPOOL_H
#define CORE_IPPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define IPPOOL_MAX_RANGES 32
#define IPPOOL_MAX_RESERVED 64
/* every range, reserved range and the gateway splits a segment at most once;
 * network/broadcast/anycast only trim */
#define IPPOOL_MAX_SEGS (IPPOOL_MAX_RANGES + IPPOOL_MAX_RESERVED + 2)
#define IPPOOL_ADDRSTRLEN 46 /* INET6_ADDRSTRLEN */
#define IPPOOL_NETSTRLEN (IPPOOL_ADDRSTRLEN + 4)
#define IPPOOL_MACSTRLEN 18
#define IPPOOL_KEYLEN 34 /* ippool_addr_key: family digit, 32 hex digits, NUL */

enum ippool_err {
    IPPOOL_OK = 0,
    IPPOOL_EINVAL,     /* malformed input */
    IPPOOL_EFAMILY,    /* IPv4 where IPv6 is expected or the other way round */
    IPPOOL_EOUTSIDE,   /* an address or range outside the pool's CIDR */
    IPPOOL_ETOOMANY,   /* more ranges than IPPOOL_MAX_RANGES/_RESERVED */
    IPPOOL_EEXHAUSTED, /* no free address */
    IPPOOL_EEMPTY,     /* the pool hands out nothing at all */
};
const char *ippool_strerror(enum ippool_err e);

/* The field a parse error is about ("cidr", "gateway", "ranges",
 * "reserved", "address") and what is wrong, for the caller's message. */
struct ippool_errinfo {
    char field[32];
    char msg[200];
};

/* An address: IPv4 in the low 32 bits of lo (hi = 0), IPv6 as two 64-bit
 * halves, most significant first. family is 4 or 6. */
struct ippool_addr {
    uint64_t hi, lo;
    int family;
};

struct ippool_net {
    struct ippool_addr base; /* host bits zero */
    int prefix;
};

struct ippool_range {
    struct ippool_addr lo, hi; /* inclusive, same family, lo <= hi */
};

struct ippool_mac {
    uint8_t b[6];
};

/* A pool's address plan. Fill net, gateway, ranges and reserved (directly
 * or with the parsers below), then call ippool_prepare(); the segs part is
 * its output. */
struct ippool {
    struct ippool_net net;
    bool has_gateway;
    struct ippool_addr gateway;
    int nranges; /* 0: the whole CIDR */
    struct ippool_range ranges[IPPOOL_MAX_RANGES];
    int nreserved;
    struct ippool_range reserved[IPPOOL_MAX_RESERVED];
    /* computed */
    int nsegs;
    struct ippool_range segs[IPPOOL_MAX_SEGS];
    uint64_t size; /* addresses in segs, saturated at UINT64_MAX */
};

/* ---- addresses and networks ---- */

/* "10.0.0.5", "2001:db8::5" (inet_pton's forms; no brackets, no zone). */
enum ippool_err ippool_addr_parse(const char *s, struct ippool_addr *out);
/* inet_ntop's canonical text (RFC 5952 for IPv6). */
void ippool_addr_format(const struct ippool_addr *a, char out[IPPOOL_ADDRSTRLEN]);
/* Orders IPv4 before IPv6, then by value. */
int ippool_addr_cmp(const struct ippool_addr *a, const struct ippool_addr *b);
/* a + 1 within its family; false (a unchanged) at the family's last address. */
bool ippool_addr_inc(struct ippool_addr *a);
/* A fixed-width text key whose byte order is the address order (IPv4
 * first): "4" or "6" and the 128-bit value in 32 lower-case hex digits.
 * What the store keeps, so both SQL backends sort and compare addresses
 * as text. */
void ippool_addr_key(const struct ippool_addr *a, char out[IPPOOL_KEYLEN]);
enum ippool_err ippool_addr_from_key(const char *key, struct ippool_addr *out);
/* "10.0.0.0/24", "2001:db8::/64". Host bits must be zero (a typo check:
 * "10.0.0.5/24" is refused, naming 10.0.0.0/24). e: field "cidr". */
enum ippool_err ippool_net_parse(const char *s, struct ippool_net *out, struct ippool_errinfo *e);
void ippool_net_format(const struct ippool_net *n, char out[IPPOOL_NETSTRLEN]);
bool ippool_net_contains(const struct ippool_net *n, const struct ippool_addr *a);
bool ippool_net_overlaps(const struct ippool_net *a, const struct ippool_net *b);
/* The first and last address of the network. */
void ippool_net_bounds(const struct ippool_net *n, struct ippool_range *out);
/* One item of a range list: "A", "A-B" (A <= B, same family) or "A/N". */
enum ippool_err ippool_range_parse(const char *s, struct ippool_range *out);
/* A list of items separated by commas and/or blanks, appended to
 * out[*n..max). e->field is set to `field`. */
enum ippool_err ippool_ranges_parse(const char *s, const char *field, struct ippool_range *out,
                                    int *n, int max, struct ippool_errinfo *e);

/* ---- pools ---- */

/* Check the plan and compute the hand-out segments. Errors name the field:
 * the gateway or a range or reserved range outside the CIDR or of the other
 * family, a gateway that is the network or broadcast address, a plan that
 * hands out nothing (IPPOOL_EEMPTY, field "ranges"). */
enum ippool_err ippool_prepare(struct ippool *p, struct ippool_errinfo *e);
/* Whether `a` is one the pool may hand out. O(log segments). */
bool ippool_contains(const struct ippool *p, const struct ippool_addr *a);
/* Hand-out-able addresses not in taken[0..n) (sorted), saturated. */
uint64_t ippool_free(const struct ippool *p, const struct ippool_addr *taken, size_t n);

/* The first hand-out-able address after `cursor` (NULL: from the start)
 * that is not in taken[0..n) (sorted), wrapping round to the start once.
 * IPPOOL_EEXHAUSTED when there is none. O(n + log n) whatever the size. */
enum ippool_err ippool_pick(const struct ippool *p, const struct ippool_addr *taken, size_t n,
                            const struct ippool_addr *cursor, struct ippool_addr *out);

/* Lazy iteration over the hand-out set in ascending order. */
struct ippool_iter {
    const struct ippool *p;
    int seg;
    struct ippool_addr at;
    bool done;
};
/* Start at the first hand-out-able address >= from (NULL: the first). */
void ippool_iter_init(struct ippool_iter *it, const struct ippool *p,
                      const struct ippool_addr *from);
bool ippool_iter_next(struct ippool_iter *it, struct ippool_addr *out);

/* ---- MAC addresses ---- */

/* 46 random bits, locally administered (bit 1 of the first octet set),
 * unicast (bit 0 clear). Aborts if the random source fails. */
void ippool_mac_random(struct ippool_mac *m);
/* "AA:BB:CC:DD:EE:FF", either case; must be unicast, as PVE's mac-addr. */
enum ippool_err ippool_mac_parse(const char *s, struct ippool_mac *out);
/* Upper case, as PVE shows MACs. */
void ippool_mac_format(const struct ippool_mac *m, char out[IPPOOL_MACSTRLEN]);

/* ---- Proxmox VE config values (qemu-server's formats) ---- */

/* One address lease of a pool, for the ipconfig string. */
struct ippool_lease {
    const struct ippool *pool;
    struct ippool_addr addr;
};

/* net0: "virtio=MAC,bridge=BR[,tag=N]" (vlan 0: no tag). */
void ippool_fmt_net(struct buf *b, const struct ippool_mac *mac, const char *bridge, int vlan);
/* ipconfig0: "ip=ADDR/PREFIX[,gw=GW][,ip6=ADDR/PREFIX[,gw6=GW]]"; v4 or v6
 * may be NULL, not both. */
void ippool_fmt_ipconfig(struct buf *b, const struct ippool_lease *v4,
                         const struct ippool_lease *v6);
/* nameserver: the addresses separated by blanks, as the PVE GUI writes them. */
void ippool_fmt_nameserver(struct buf *b, const struct ippool_addr *dns, int n);

/* What a VM's config says, for the inventory (any VM's, proxd's or not) and
 * drift checks. The static addresses of an ipconfigN value: ip= into v4
 * and ip6= into v6 with their prefixes; family 0 where the value has none
 * or says dhcp, auto or manual. IPPOOL_EINVAL for a malformed ip/ip6 item
 * or a value longer than 1024 characters (PVE's own are far shorter). */
enum ippool_err ippool_ipconfig_parse(const char *s, struct ippool_addr *v4, int *p4,
                                      struct ippool_addr *v6, int *p6);
/* The MAC of a netN value: "virtio=MAC,..." or "model=virtio,macaddr=MAC,...".
 * IPPOOL_EINVAL when it names none or a malformed one. */
enum ippool_err ippool_net_mac(const char *net, struct ippool_mac *out);

#endif
