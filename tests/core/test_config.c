/* Tests for core/config: the commented example loads with the expected
 * values, defaults, the lookup helpers, and every kind of error names
 * file:line, section and key. Configs are written to a private temp dir as
 * t.conf so that messages can be matched exactly. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/xalloc.h"
#include "core/access.h"
#include "core/config.h"

static char tmpdir[] = "/tmp/proxd-config-XXXXXX";
static char conf[64]; /* tmpdir/t.conf */
static char err[16384];

/* A valid config, 8 lines, so that the tests can append lines 9, 10, ...
 * and know their numbers. */
#define BASE                                                                                       \
    "[os ubuntu]\n"                                                                                \
    "vmid_range = 1000-1999\n"                                                                     \
    "[node sv1]\n"                                                                                 \
    "host = 10.0.0.1:8006\n"                                                                       \
    "storage = local-lvm\n"                                                                        \
    "template.ubuntu = 8000\n"
#define CREDS                                                                                      \
    "[proxmox]\n"                                                                                  \
    "token = root@pam!t=secret\n"
#define MIN BASE CREDS

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(conf, sizeof conf, "%s/t.conf", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(conf);
    rmdir(tmpdir);
    return 0;
}

static struct proxd_config *load_text(const char *text)
{
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    err[0] = 'x';
    return config_load(conf, err, sizeof err);
}

static struct proxd_config *load_ok(const char *text)
{
    struct proxd_config *c = load_text(text);
    if (!c)
        fail_msg("unexpected errors:\n%s", err);
    assert_string_equal(err, "");
    return c;
}

/* Loading must fail and the messages include "<conf><what>" for each what
 * (a NULL-terminated list), e.g. ":9: [proxd] bogus: unknown key". */
static void expect_errs(const char *text, ...)
{
    struct proxd_config *c = load_text(text);
    if (c) {
        config_free(c);
        fail_msg("loaded, expected errors");
    }
    va_list ap;
    va_start(ap, text);
    for (const char *what; (what = va_arg(ap, const char *));) {
        static char want[1024];
        snprintf(want, sizeof want, "%s%s", conf, what);
        if (!strstr(err, want)) {
            va_end(ap); /* fail_msg() does not return */
            fail_msg("missing '%s' in:\n%s", want, err);
        }
    }
    va_end(ap);
}

#define EXPECT_ERR(text, ...) expect_errs(text, __VA_ARGS__, (const char *)NULL)

static int count_lines(const char *s)
{
    int n = 1;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- the example ------------------------------------------------------ */

static void test_example(void **state)
{
    (void)state;
    /* ctest sets SRC_DIR; run by hand, find the tree from this file's path */
    const char *src = getenv("SRC_DIR");
    char *path =
        src ? xasprintf("%s/docs/proxd.conf.example", src)
            : xasprintf("%.*s/docs/proxd.conf.example",
                        (int)(strlen(__FILE__) - strlen("/tests/core/test_config.c")), __FILE__);
    struct proxd_config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("example: %s", err);
    free(path);

    assert_string_equal(c->listen, "127.0.0.1:8080");
    assert_string_equal(c->database, "sqlite:/var/lib/proxd/proxd.db");
    assert_int_equal(c->placement, PLACE_SPREAD);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->job_lease_s, 30);
    assert_int_equal(c->reconcile_interval_s, 60);
    assert_int_equal(c->ha_wait_s, 120);
    assert_int_equal(c->events_keep_s, 604800);
    assert_int_equal(c->nwebhooks, 1);
    assert_string_equal(c->webhooks[0].name, "billing");
    assert_string_equal(c->webhooks[0].events, "vm.*, node.down, node.up, job.failed");
    assert_false(c->delete_orphans);
    assert_string_equal(c->tag, "proxd");
    assert_int_equal(c->quarantine_s, 300);
    assert_int_equal(c->fallback_lo, 9000);
    assert_int_equal(c->fallback_hi, 9999);
    assert_string_equal(c->token, "root@pam!proxd=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50");
    assert_string_equal(c->user, "");
    assert_true(c->verify_tls);
    assert_string_equal(c->fingerprint, "");
    assert_int_equal(c->connect_timeout_s, 3);
    assert_int_equal(c->timeout_s, 30);
    assert_int_equal(c->ticket_lifetime_s, 7200);
    assert_int_equal(c->ticket_renew_s, 0);
    assert_int_equal(c->cores_max, 32);
    assert_int_equal(c->memory_max_mb, 65536);
    assert_int_equal(c->clones_per_node, 2);

    static const char *const os[] = {"ubuntu", "debian", "centos", "windows"};
    static const int lo[] = {1000, 4000, 2000, 3000};
    assert_int_equal(c->nos, 4);
    for (int k = 0; k < 4; k++) {
        const struct cfg_os *o = config_os(c, os[k]);
        assert_non_null(o);
        assert_int_equal(o->range_lo, lo[k]);
        assert_int_equal(o->range_hi, lo[k] + 999);
    }
    assert_int_equal(c->nnodes, 5);
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "sv%d", i + 1);
        const struct cfg_node *n = config_node(c, name);
        assert_ptr_equal(n, &c->nodes[i]); /* file order is placement order */
        assert_int_equal(n->nhosts, 1);
        assert_string_equal(n->hosts[0], "127.0.0.1:8006");
        assert_string_equal(n->cluster, "pvesim");
        assert_string_equal(n->storage, "local-lvm");
        assert_int_equal(n->max_clones, i == 4 ? 1 : 2);
        assert_string_equal(n->state, "active");
        for (int k = 0; k < 4; k++) /* pvesim's layout */
            assert_int_equal(config_template(n, os[k]), 8000 + 10 * i + k);
    }
    assert_int_equal(config_quota(c, "alice")->vms, 10);
    assert_string_equal(config_quota(c, "alice")->owner, "default");
    assert_int_equal(config_quota(c, "ci")->vms, 100);
    assert_int_equal(config_quota(c, "ci")->memory_mb, 0);
    const struct cfg_ippool *lan = config_ippool(c, "lan"), *lan6 = config_ippool(c, "lan6");
    assert_int_equal(c->npools, 2);
    assert_int_equal(lan->plan.size, 150 - 10 - 0);
    assert_int_equal(lan->ndns, 2);
    assert_string_equal(lan->bridge, "vmbr0");
    assert_int_equal(lan->quarantine_s, 300);
    assert_int_equal(lan6->quarantine_s, 3600);
    for (int i = 0; i < 5; i++)
        assert_true(config_ippool_reachable(c, lan, &c->nodes[i]) &&
                    config_ippool_reachable(c, lan6, &c->nodes[i]));
    assert_int_equal(config_os(c, "ubuntu")->npools, 2);
    assert_int_equal(config_os(c, "debian")->npools, 0);
    config_free(c);
}

/* ---- [ippool NAME] ---------------------------------------------------- */

#define POOLS                                                                                      \
    CREDS                                                /* 1-2 */                                 \
        "[os ubuntu]\n"                                  /* 3 */                                   \
        "vmid_range = 1000-1999\n"                       /* 4 */                                   \
        "ippools = lan, lan6\n"                          /* 5 */                                   \
        "[node sv1]\n"                                   /* 6 */                                   \
        "host = 10.0.0.1\n"                              /* 7 */                                   \
        "storage = local-lvm\n"                          /* 8 */                                   \
        "template.ubuntu = 8000\n"                       /* 9 */                                   \
        "cluster = east\n"                               /* 10 */                                  \
        "[node sv2]\n"                                   /* 11 */                                  \
        "host = 10.0.0.2\n"                              /* 12 */                                  \
        "storage = local-lvm\n"                          /* 13 */                                  \
        "template.ubuntu = 8010\n"                       /* 14 */                                  \
        "[ippool lan]\n"                                 /* 15 */                                  \
        "cidr = 192.168.10.0/24\n"                       /* 16 */                                  \
        "gateway = 192.168.10.1\n"                       /* 17 */                                  \
        "ranges = 192.168.10.100-192.168.10.199\n"       /* 18 */                                  \
        "reserved = 192.168.10.150, 192.168.10.160/30\n" /* 19 */                                  \
        "dns = 192.168.10.53 2001:db8::53\n"             /* 20 */                                  \
        "searchdomain = example.com corp.example.com\n"  /* 21 */                                  \
        "bridge = vmbr1\n"                               /* 22 */                                  \
        "vlan = 42\n"                                    /* 23 */                                  \
        "clusters = east\n"                              /* 24 */                                  \
        "[ippool lan6]\n"                                /* 25 */                                  \
        "cidr = 2001:db8:10::/64\n"                      /* 26 */                                  \
        "gateway = 2001:db8:10::1\n"                     /* 27 */                                  \
        "bridge = vmbr1\n"                               /* 28 */                                  \
        "vlan = 42\n"                                    /* 29 */                                  \
        "quarantine = 60\n"                              /* 30 */                                  \
        "[ippool dmz]\n"                                 /* 31 */                                  \
        "cidr = 10.20.0.0/16\n"                          /* 32 */                                  \
        "bridge = vmbr0\n"                               /* 33 */                                  \
        "nodes = sv2\n"                                  /* 34 */

static void test_ippools(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(POOLS);
    assert_int_equal(c->npools, 3);
    const struct cfg_ippool *lan = config_ippool(c, "lan"), *lan6 = config_ippool(c, "lan6"),
                            *dmz = config_ippool(c, "dmz");
    assert_non_null(lan);
    assert_non_null(lan6);
    assert_non_null(dmz);
    assert_null(config_ippool(c, "wan"));
    assert_int_equal(lan->plan.size, 100 - 1 - 4);
    assert_int_equal(lan->plan.net.prefix, 24);
    assert_true(lan->plan.has_gateway);
    assert_int_equal(lan->ndns, 2);
    assert_int_equal(lan->dns[1].family, 6);
    assert_string_equal(lan->searchdomain, "example.com corp.example.com");
    assert_string_equal(lan->bridge, "vmbr1");
    assert_int_equal(lan->vlan, 42);
    assert_int_equal(lan->quarantine_s, 300); /* [proxd] quarantine */
    assert_int_equal(lan6->quarantine_s, 60);
    assert_true(lan6->plan.size == UINT64_MAX - 1); /* a /64 less anycast and gateway */
    assert_int_equal(dmz->vlan, 0);
    assert_int_equal(dmz->plan.size, 65536 - 2);
    /* reachability: clusters = east is sv1; nodes = sv2; neither: all */
    const struct cfg_node *sv1 = config_node(c, "sv1"), *sv2 = config_node(c, "sv2");
    assert_true(config_ippool_reachable(c, lan, sv1));
    assert_false(config_ippool_reachable(c, lan, sv2));
    assert_false(config_ippool_reachable(c, dmz, sv1));
    assert_true(config_ippool_reachable(c, dmz, sv2));
    assert_true(config_ippool_reachable(c, lan6, sv1) && config_ippool_reachable(c, lan6, sv2));
    const struct cfg_os *o = config_os(c, "ubuntu");
    assert_int_equal(o->npools, 2);
    assert_ptr_equal(&c->pools[o->pools[0]], lan);
    assert_ptr_equal(&c->pools[o->pools[1]], lan6);
    config_free(c);
}

/* What proxd's credentials must hold per node (access.c): derived from the
 * node's templates, its OS ranges, its storage and the pools reaching it. */
static bool has_need(const struct access_need *v, size_t n, const char *privs, const char *path,
                     const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].privs, privs) == 0 && strcmp(v[i].path, path) == 0)
            return what == NULL || strstr(v[i].what, what) != NULL;
    return false;
}

static void test_access_needs(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(POOLS);
    assert_int_equal(c->privilege_check_s, 600);
    struct access_need v[64];
    size_t n = access_needs(c, 0, v, 64); /* sv1: lan and lan6 (vmbr1, VLAN 42) */
    assert_true(n <= 64);
    assert_true(has_need(v, n, "Sys.Audit", "/nodes/sv1", "node status"));
    assert_true(has_need(v, n, "Datastore.Audit|Datastore.AllocateSpace", "/storage/local-lvm",
                         "storage status"));
    assert_true(has_need(v, n, "Datastore.AllocateSpace", "/storage/local-lvm", "creations"));
    assert_true(has_need(v, n, "VM.Clone", "/vms/8000", "creations of ubuntu"));
    assert_true(has_need(v, n, "VM.Allocate", "/vms/1000", "creations and deletions of ubuntu"));
    assert_true(has_need(v, n, "VM.Audit", "/vms/1000", "seeing ubuntu VMs"));
    assert_true(has_need(v, n, "VM.PowerMgmt", "/vms/1000", NULL));
    assert_true(has_need(v, n, "VM.Snapshot", "/vms/1000", NULL));
    assert_true(has_need(v, n, "VM.Migrate", "/vms/1000", NULL));
    assert_true(has_need(v, n, "VM.Config.Network", "/vms/1000", "addresses"));
    assert_true(has_need(v, n, "VM.Monitor|VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted",
                         "/vms/1000", "guest agent"));
    /* one bridge and VLAN for both pools: asked once */
    assert_true(has_need(v, n, "SDN.Use", "/sdn/zones/localnetwork/vmbr1/42", "pool lan"));
    assert_false(has_need(v, n, "SDN.Use", "/sdn/zones/localnetwork/vmbr0", NULL));
    /* the fallback range (default 9000-9999): its first VMID too */
    assert_true(has_need(v, n, "VM.Allocate", "/vms/9000", "fallback-range"));
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_false(strcmp(v[i].privs, v[j].privs) == 0 && strcmp(v[i].path, v[j].path) == 0);
    n = access_needs(c, 1, v, 64); /* sv2: dmz (vmbr0, untagged) and lan6 */
    assert_true(has_need(v, n, "VM.Clone", "/vms/8010", NULL));
    assert_true(has_need(v, n, "SDN.Use", "/sdn/zones/localnetwork/vmbr0", "pool dmz"));
    assert_true(has_need(v, n, "SDN.Use", "/sdn/zones/localnetwork/vmbr1/42", "pool lan6"));
    assert_false(has_need(v, n, "VM.Clone", "/vms/8000", NULL));
    /* no room: a bound (repeats counted too), none written past max */
    assert_true(access_needs(c, 1, v, 3) >= n);
    assert_true(access_needs(c, 0, NULL, 0) >= access_needs(c, 0, v, 64));
    config_free(c);
    /* no pool: no address privileges */
    c = load_ok(MIN);
    n = access_needs(c, 0, v, 64);
    assert_true(has_need(v, n, "VM.Clone", "/vms/8000", NULL));
    assert_false(has_need(v, n, "VM.Config.Network", "/vms/1000", NULL));
    config_free(c);
}

/* [os] clone: full by default, linked, nothing else. */
static void test_os_clone(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(MIN);
    assert_string_equal(config_os(c, "ubuntu")->clone, "full");
    assert_false(config_clone_linked(c, "ubuntu"));
    assert_false(config_clone_linked(c, "nosuch"));
    config_free(c);
    c = load_ok(MIN "[os debian]\nvmid_range = 2000-2999\nclone = linked\n");
    assert_true(config_clone_linked(c, "debian"));
    assert_false(config_clone_linked(c, "ubuntu"));
    config_free(c);
    assert_null(load_text(MIN "[os debian]\nvmid_range = 2000-2999\nclone = thin\n"));
    assert_non_null(strstr(err, ":11: [os debian] clone: 'thin': expected full or linked"));
}

/* [node] state and [limits] drain_parallel (node maintenance). */
static void test_node_state(void **state)
{
    (void)state;
    struct proxd_config *c =
        load_ok(BASE "state = cordoned\n" CREDS "[limits]\ndrain_parallel = 5\n");
    assert_string_equal(c->nodes[0].state, "cordoned");
    assert_int_equal(c->drain_parallel, 5);
    config_free(c);
    EXPECT_ERR(BASE "state = drained\n" CREDS,
               ":7: [node sv1] state: 'drained': must be active or cordoned");
    EXPECT_ERR(MIN "[limits]\ndrain_parallel = 0\n", ":10: [limits] drain_parallel:");
    EXPECT_ERR(MIN "[limits]\ndrain_parallel = 33\n", ":10: [limits] drain_parallel:");
}

static void test_ippool_errors(void **state)
{
    (void)state;
#define P MIN "[ippool a]\n" /* line 9; its keys from line 10 */
    EXPECT_ERR(
        P "cidr = 10.0.0.5/24\n", ":9: [ippool a] bridge: missing",
        ":10: [ippool a] cidr: '10.0.0.5/24' has host bits set (the network is 10.0.0.0/24)");
    EXPECT_ERR(P "bridge = vmbr0\n", ":9: [ippool a] cidr: missing");
    EXPECT_ERR(P "cidr = 10.0.0.0/4\nbridge = vmbr0\n",
               ":10: [ippool a] cidr: '10.0.0.0/4': the prefix must be 8 to 32 (what PVE's "
               "ipconfig accepts)");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\ngateway = 10.0.1.1\n",
               ":12: [ippool a] gateway: 10.0.1.1 is outside the cidr 10.0.0.0/24");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\ngateway = 10.0.0.0\n",
               ":12: [ippool a] gateway: 10.0.0.0 is the network address of the cidr");
    EXPECT_ERR(P "cidr = 2001:db8::/64\nbridge = vmbr0\ngateway = 10.0.0.1\n",
               ":12: [ippool a] gateway: 10.0.0.1 is IPv4, the pool's cidr 2001:db8::/64 is IPv6");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\ngateway = 10.0.0\n",
               ":12: [ippool a] gateway: '10.0.0' is not an IP address");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nranges = 10.0.0.10-10.0.1.10\n",
               ":12: [ippool a] ranges: 10.0.0.10-10.0.1.10 is outside the cidr 10.0.0.0/24");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nreserved = 10.0.0.1, bogus\n",
               ":12: [ippool a] reserved: 'bogus' is not an address, a range FIRST-LAST "
               "(FIRST <= LAST) or a CIDR");
    EXPECT_ERR(P "cidr = 10.0.0.0/30\nbridge = vmbr0\ngateway = 10.0.0.1\nreserved = 10.0.0.2\n",
               ":10: [ippool a] cidr: no address is left to hand out");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\ndns = 10.0.0.53, resolver\n",
               ":12: [ippool a] dns: 'resolver' is not an IP address");
    EXPECT_ERR(
        P "cidr = 10.0.0.0/24\nbridge = vmbr0\ndns = 1.1.1.1 1.0.0.1 8.8.8.8 8.8.4.4 9.9.9.9\n",
        ":12: [ippool a] dns: more than 4 nameservers");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vm/br0\n",
               ":11: [ippool a] bridge: 'vm/br0' is not a bridge name");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = averyverylongbridge\n",
               ":11: [ippool a] bridge: too long (at most 15 characters)");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nvlan = 4095\n",
               ":12: [ippool a] vlan: 4095 is out of bounds [0, 4094]");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nsearchdomain = example.com -bad.org\n",
               ":12: [ippool a] searchdomain: '-bad.org' is not a DNS domain name");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nnodes = sv1, sv9\nclusters = west\n",
               ":12: [ippool a] nodes: unknown node 'sv9' (no [node sv9] section)",
               ":13: [ippool a] clusters: unknown cluster 'west' (no [node] has cluster = west)");
    /* a list of separators alone names nothing: the pool reached no node, silently */
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nnodes = ,\n",
               ":12: [ippool a] nodes: names no node (only separators)");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nnodes = sv1\nclusters = , ,\n",
               ":13: [ippool a] clusters: names no cluster (only separators)");
    EXPECT_ERR(P "cidr = 10.0.0.0/24\nbridge = vmbr0\nquarantine = -1\n",
               ":12: [ippool a] quarantine: -1 is out of bounds");
    EXPECT_ERR(
        P "cidr = 10.0.0.0/16\nbridge = vmbr0\n[ippool b]\ncidr = 10.0.5.0/24\nbridge = vmbr0\n",
        ":13: [ippool b] cidr: 10.0.5.0/24 overlaps [ippool a] cidr 10.0.0.0/16 (line 10)");
    EXPECT_ERR(MIN "[ippool LAN]\n", ":9: [ippool LAN]: bad ippool name");
    EXPECT_ERR(MIN "[ippool]\n", ":9: [ippool]: this section needs a name: [ippool NAME]");
    /* the pools an OS names */
#define O MIN "[os centos]\nvmid_range = 2000-2999\n" /* ippools on line 11 */
    EXPECT_ERR(O "ippools = ,\n", ":11: [os centos] ippools: names no pool (only separators)");
    EXPECT_ERR(O "ippools = nope\n",
               ":11: [os centos] ippools: unknown pool 'nope' (no [ippool nope] section)");
    EXPECT_ERR(O "ippools = a\n[ippool a]\ncidr = 10.0.0.0/24\nbridge = vmbr0\n",
               ":11: [os centos] ippools: no node has template.centos and reaches every pool "
               "named here");
    EXPECT_ERR(O "ippools = a, b\n[ippool a]\ncidr = 10.0.0.0/24\nbridge = vmbr0\n"
                 "[ippool b]\ncidr = 10.1.0.0/24\nbridge = vmbr0\n",
               ":11: [os centos] ippools: names two IPv4 pools (a, b): a VM gets at most one "
               "address of each family");
    EXPECT_ERR(O "ippools = a, a\n[ippool a]\ncidr = 10.0.0.0/24\nbridge = vmbr0\n",
               ":11: [os centos] ippools: names pool 'a' twice");
    EXPECT_ERR(O "ippools = a, b\n[ippool a]\ncidr = 10.0.0.0/24\nbridge = vmbr0\n"
                 "[ippool b]\ncidr = 2001:db8::/64\nbridge = vmbr1\n",
               ":11: [os centos] ippools: pools a and b put the NIC on different networks "
               "(bridge vmbr0 tag 0, bridge vmbr1 tag 0)");
#undef O
#undef P
}

/* ---- defaults and lookups --------------------------------------------- */

static void test_events_webhooks(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(MIN "[events]\nkeep = 3600\n[webhook billing]\n"
                                         "url = https://hooks.example.net/proxd\n"
                                         "secret = 0123456789abcdef\nevents = vm.*, node.down\n"
                                         "max_age = 600\n");
    assert_int_equal(c->events_keep_s, 3600);
    assert_int_equal(c->nwebhooks, 1);
    assert_string_equal(c->webhooks[0].name, "billing");
    assert_string_equal(c->webhooks[0].url, "https://hooks.example.net/proxd");
    assert_string_equal(c->webhooks[0].events, "vm.*, node.down");
    assert_int_equal(c->webhooks[0].max_age_s, 600);
    assert_int_equal(c->webhooks[0].timeout_s, 10);
    assert_int_equal(c->webhooks[0].retry_max_s, 60);
    config_free(c);
    c = load_ok(MIN "[webhook w]\nurl = http://127.0.0.1:9/x\nsecret = 0123456789abcdef\n");
    assert_string_equal(c->webhooks[0].events, "*");
    assert_int_equal(c->events_keep_s, 604800);
    config_free(c);
#define W MIN "[webhook w]\n" /* line 9; its keys from line 10 */
    EXPECT_ERR(W "secret = 0123456789abcdef\n", ":9: [webhook w] url: missing");
    EXPECT_ERR(W "url = ftp://x/\nsecret = 0123456789abcdef\n",
               ":10: [webhook w] url: 'ftp://x...': an http:// or https:// URL without spaces;");
    /* a refused URL is shown as its scheme and host: a token may be its
     * password, its user part (that was shown), its path or its query */
    EXPECT_ERR(W "url = https://hook:hunter2@x/a b\nsecret = 0123456789abcdef\n",
               ":10: [webhook w] url: 'https://x...': an http:// or https:// URL without spaces "
               "(a space or control character at character 25); only its scheme and host");
    assert_null(strstr(err, "hunter2"));
    assert_null(strstr(err, "//hook"));
    EXPECT_ERR(W "url = https://xoxb-T0kenS3cret@hooks.example/a b\nsecret = 0123456789abcdef\n",
               ":10: [webhook w] url: 'https://hooks.example...'");
    assert_null(strstr(err, "T0kenS3cret"));
    EXPECT_ERR(W "url = https://h.example/services/PathS3cret?t=QueryS3cret\x01\n"
                 "secret = 0123456789abcdef\n",
               ":10: [webhook w] url: 'https://h.example...'");
    assert_null(strstr(err, "S3cret"));
    EXPECT_ERR(W "url = T0kenS3cret@hooks.example/x\nsecret = 0123456789abcdef\n",
               ":10: [webhook w] url: '...': an http:// or https:// URL");
    assert_null(strstr(err, "S3cret"));
    EXPECT_ERR(W "url = http://x/\nsecret = short\n",
               ":11: [webhook w] secret: at least 16 characters");
    EXPECT_ERR(W "url = http://x/\nsecret = 0123456789abcdef\nevents = vm.*, VM;x\n",
               ":12: [webhook w] events: 'vm.*, VM;x': a comma-separated list of event types");
    EXPECT_ERR(W "url = http://x/\nsecret = 0123456789abcdef\nevents = vm*x\n",
               ":12: [webhook w] events:");
    EXPECT_ERR(MIN "[events]\nkeep = 60\n[webhook w]\nurl = http://x/\n"
                   "secret = 0123456789abcdef\nmax_age = 120\n",
               ":14: [webhook w] max_age: 120 is longer than [events] keep (60)");
    EXPECT_ERR(MIN "[webhook W!]\nurl = http://x/\n", ":9: [webhook W!]: bad webhook name");
#undef W
}

static void test_defaults(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(MIN);
    assert_string_equal(c->path, conf);
    assert_string_equal(c->listen, "127.0.0.1:8080");
    assert_string_equal(c->database, "sqlite:/var/lib/proxd/proxd.db");
    assert_int_equal(c->placement, PLACE_SPREAD); /* the default */
    assert_string_equal(c->log_format, "text");
    assert_string_equal(c->log_level, "info");
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->job_lease_s, 30);
    assert_int_equal(c->reconcile_interval_s, 60);
    assert_int_equal(c->ha_wait_s, 120);
    assert_false(c->delete_orphans);
    assert_string_equal(c->tag, "proxd");
    assert_int_equal(c->quarantine_s, 300);
    assert_int_equal(c->fallback_lo, 9000);
    assert_int_equal(c->fallback_hi, 9999);
    assert_true(c->verify_tls);
    assert_int_equal(c->connect_timeout_s, 3);
    assert_int_equal(c->timeout_s, 30);
    assert_false(c->json_bodies);
    assert_int_equal(c->cores_min, 1);
    assert_int_equal(c->cores_max, 32);
    assert_int_equal(c->memory_min_mb, 512);
    assert_int_equal(c->memory_max_mb, 65536);
    assert_int_equal(c->disk_min_gb, 10);
    assert_int_equal(c->disk_max_gb, 1024);
    assert_int_equal(c->memory_margin_mb, 2048);
    assert_int_equal(c->disk_margin_gb, 20);
    assert_int_equal(c->clones_per_node, 2);
    assert_int_equal(c->jobs_max, 32);
    assert_int_equal(c->drain_parallel, 2);
    assert_int_equal(c->name_max, 63);
    assert_int_equal(c->nodes[0].max_clones, 2);
    assert_string_equal(c->nodes[0].state, "active");
    assert_string_equal(c->nodes[0].cluster, "");
    assert_int_equal(c->nquotas, 0);
    assert_null(config_quota(c, "alice"));
    config_free(c);
}

static void test_values(void **state)
{
    (void)state;
    struct proxd_config *c =
        load_ok("  [proxd]   # leading blanks and '#' comments are fine\n"
                "  placement = spread ; indented keys are keys, not continuations\n"
                "\tdelete_orphans = ON\n"
                "fallback_range = 500 - 599\n"
                "log_format = json\n"
                "[limits]\n"
                "clones_per_node = 3\n"
                "cores_min = 4\n"
                "cores_max = 4\n"
                "[os ubuntu]\n"
                "vmid_range = 1000-1999\n"
                "[node sv1]\n"
                "host = 10.0.0.1:8006, 10.0.0.2 ,[fd00::1]:8443\n"
                "storage = local-lvm\n"
                "template.ubuntu = 8000\n"
                "[node sv2]\n" /* standalone: its own VMID space, so 8000 again is fine */
                "host = 10.0.0.3\n"
                "storage = ceph.pool-1\n"
                "template.ubuntu = 8000\n"
                "[proxmox]\n"
                "user = root@pam\n"
                "password = pa#ss;word\n"
                "fingerprint = ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:"
                "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\n"
                "[quota alice]\n"
                "vms = 2\n");
    assert_int_equal(c->placement, PLACE_SPREAD);
    assert_true(c->delete_orphans);
    assert_int_equal(c->fallback_lo, 500);
    assert_int_equal(c->fallback_hi, 599);
    assert_string_equal(c->log_format, "json");
    const struct cfg_node *n = config_node(c, "sv1");
    assert_int_equal(n->nhosts, 3);
    assert_string_equal(n->hosts[0], "10.0.0.1:8006");
    assert_string_equal(n->hosts[1], "10.0.0.2:8006");
    assert_string_equal(n->hosts[2], "[fd00::1]:8443");
    assert_int_equal(n->max_clones, 3); /* inherits clones_per_node */
    assert_string_equal(config_node(c, "sv2")->storage, "ceph.pool-1");
    assert_string_equal(c->user, "root@pam");
    assert_string_equal(c->password, "pa#ss;word"); /* no blank before: not a comment */
    assert_string_equal(c->fingerprint, "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                                        "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89");
    assert_int_equal(config_quota(c, "alice")->vms, 2);
    assert_int_equal(config_quota(c, "alice")->cores, 0);
    assert_null(config_quota(c, "bob")); /* no [quota default] */
    config_free(c);
}

static void test_lookups(void **state)
{
    (void)state;
    struct proxd_config *c = load_ok(MIN "[quota default]\n"
                                         "vms = 5\n"
                                         "[quota bob@example.com]\n"
                                         "vms = 7\n");
    assert_string_equal(config_os(c, "ubuntu")->name, "ubuntu");
    assert_null(config_os(c, "debian"));
    assert_null(config_os(c, NULL));
    assert_null(config_node(c, "sv9"));
    const struct cfg_node *n = config_node(c, "sv1");
    assert_int_equal(config_template(n, "ubuntu"), 8000);
    assert_int_equal(config_template(n, "debian"), 0);
    assert_int_equal(config_template(NULL, "ubuntu"), 0);
    assert_int_equal(config_quota(c, "bob@example.com")->vms, 7);
    assert_int_equal(config_quota(c, "carol")->vms, 5);
    assert_int_equal(config_quota(c, NULL)->vms, 5);
    config_free(c);
    config_free(NULL);
}

/* ---- errors ----------------------------------------------------------- */

static void test_unknown(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[proxd]\nbogus = 1\n", ":10: [proxd] bogus: unknown key");
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2:8006\nstorage = x\nport = 1\n",
               ":12: [node sv2] port: unknown key");
    /* keys of an unknown section are not reported one by one */
    EXPECT_ERR(MIN "[nodes sv2]\nhost = 10.0.0.2\n", ":9: [nodes sv2]: unknown section");
    assert_null(strstr(err, "host"));
    EXPECT_ERR("listen = 1.2.3.4:80\n" MIN, ":1: listen: key outside any section");
    EXPECT_ERR(MIN "[proxd extra]\n", ":9: [proxd extra]: this section takes no name");
    EXPECT_ERR(MIN "[node]\n", ":9: [node]: this section needs a name: [node NAME]");
    EXPECT_ERR(MIN "[node sv_1]\n", ":9: [node sv_1]: bad node name");
    /* a quota is an owner's: a name no owner can have (validate_owner) binds no one */
    EXPECT_ERR(MIN "[quota ali/ce]\nvms = 1\n", ":9: [quota ali/ce]: bad quota name (an owner");
    EXPECT_ERR(MIN "[quota a!b]\n", ":9: [quota a!b]: bad quota name");
    EXPECT_ERR(MIN "[quota café]\n", ":9: [quota café]: bad quota name");
    struct proxd_config *c = load_ok(MIN "[quota ops.team-1@example_x]\nvms = 3\n");
    assert_int_equal(config_quota(c, "ops.team-1@example_x")->vms, 3);
    config_free(c);
}

static void test_bool_and_numbers(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[proxd]\ndelete_orphans = maybe\n",
               ":10: [proxd] delete_orphans: 'maybe' is not a boolean");
    EXPECT_ERR(MIN "[proxd]\nworkers = 300\n",
               ":10: [proxd] workers: 300 is out of bounds [0, 256]");
    EXPECT_ERR(MIN "[proxd]\nworkers = 8k\n", ":10: [proxd] workers: '8k' is not an integer");
    EXPECT_ERR(MIN "[limits]\nname_max = 64\n",
               ":10: [limits] name_max: 64 is out of bounds [1, 63]");
    EXPECT_ERR(MIN "[limits]\ncores_min = 8\ncores_max = 4\n",
               ":11: [limits] cores_max: 4 is below cores_min 8");
    EXPECT_ERR(MIN "[proxmox]\n", ":9: [proxmox]: duplicate section (first on line 7)");
    EXPECT_ERR(MIN "connect_timeout = 10\ntimeout = 5\n",
               ":10: [proxmox] timeout: 5 is shorter than connect_timeout 10");
    EXPECT_ERR(MIN "ticket_lifetime = 60\nticket_renew = 60\n",
               ":10: [proxmox] ticket_renew: 60 is not shorter than ticket_lifetime 60");
    EXPECT_ERR(MIN "ticket_renew = 7200\n",
               ":9: [proxmox] ticket_renew: 7200 is not shorter than ticket_lifetime 7200");
    EXPECT_ERR(MIN "ticket_lifetime = 1\n",
               ":9: [proxmox] ticket_lifetime: 1 is out of bounds [2, 86400]");
    EXPECT_ERR(MIN "[quota x]\nvms = -1\n", ":10: [quota x] vms: -1 is out of bounds");
    EXPECT_ERR(MIN "[proxd]\nplacement = random\n",
               ":10: [proxd] placement: 'random': expected ordered or spread");
    EXPECT_ERR(MIN "[proxd]\nlisten = localhost\n",
               ":10: [proxd] listen: 'localhost' is not host:port");
    EXPECT_ERR(MIN "[proxd]\ndatabase = mysql://x\n", ":10: [proxd] database: 'mysql://x'");
    EXPECT_ERR(MIN "[proxd]\ntag = a b\n", ":10: [proxd] tag: 'a b': PVE tags");
    EXPECT_ERR(MIN "[proxd]\nlog_level = loud\n", ":10: [proxd] log_level: 'loud'");
    EXPECT_ERR(MIN "[proxd]\nnetwork_drift = fix\n",
               ":10: [proxd] network_drift: 'fix': expected report, restore or adopt");
    EXPECT_ERR(MIN "[proxd]\nconfig_reads = 0\n",
               ":10: [proxd] config_reads: 0 is out of bounds [1, 1000]");
    EXPECT_ERR(MIN "[proxd]\nha_wait = 0\n", ":10: [proxd] ha_wait: 0 is out of bounds [1, 3600]");
    EXPECT_ERR(MIN "[proxd]\njob_lease = 2\n",
               ":10: [proxd] job_lease: 2 is out of bounds [3, 3600]");
}

static void test_ranges(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 2999-2000\n",
               ":10: [os centos] vmid_range: '2999-2000': need 100 <= lo <= hi <= 999999999");
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 50-99\n", ":10: [os centos] vmid_range: '50-99'");
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 2000-1000000000\n",
               ":10: [os centos] vmid_range: '2000-1000000000': need");
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 2000\n",
               ":10: [os centos] vmid_range: '2000' is not a range lo-hi");
    EXPECT_ERR(MIN "[os centos]\nvmid_range = -5-10\n", ":10: [os centos] vmid_range: '-5-10'");
    EXPECT_ERR(MIN "[proxd]\nfallback_range = 9000-\n", ":10: [proxd] fallback_range: '9000-'");
    EXPECT_ERR(MIN "[os centos]\n", ":9: [os centos] vmid_range: missing");
}

static void test_overlaps(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 1500-2500\n",
               ":10: [os centos] vmid_range: 1500-2500 overlaps [os ubuntu] vmid_range 1000-1999 "
               "(line 2)");
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 9500-10500\n",
               ":10: [os centos] vmid_range: 9500-10500 overlaps [proxd] fallback_range "
               "9000-9999 (the default)");
    EXPECT_ERR(MIN "[proxd]\nfallback_range = 1900-2000\n",
               ":2: [os ubuntu] vmid_range: 1000-1999 overlaps [proxd] fallback_range 1900-2000");
    /* a template inside an OS range: proxd could hand its VMID out */
    EXPECT_ERR(MIN "[os centos]\nvmid_range = 7000-8999\n",
               ":6: [node sv1] template.ubuntu: VMID 8000 lies in [os centos] vmid_range "
               "7000-8999 (line 10)");
    /* the fallback range is handed out too (an OS range full): its own, or the default */
    EXPECT_ERR(MIN "[proxd]\nfallback_range = 7500-8499\n",
               ":6: [node sv1] template.ubuntu: VMID 8000 lies in [proxd] fallback_range "
               "7500-8499");
    EXPECT_ERR(BASE "template.debian = 9500\n[os debian]\nvmid_range = 4000-4999\n" CREDS,
               ":7: [node sv1] template.debian: VMID 9500 lies in [proxd] fallback_range "
               "9000-9999 (the default)");
}

static void test_templates(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2\nstorage = local-lvm\ntemplate.suse = 8100\n",
               ":12: [node sv2] template.suse: unknown OS 'suse'");
    EXPECT_ERR(MIN "[node sv1]\n", ":9: [node sv1]: duplicate section (first on line 3)");
    EXPECT_ERR(MIN "[os debian]\nvmid_range = 4000-4999\n[node sv1]\n",
               ":11: [node sv1]: duplicate");
    EXPECT_ERR(BASE "template.ubuntu = 8001\n" CREDS,
               ":7: [node sv1] template.ubuntu: set twice (first on line 6)");
    EXPECT_ERR(BASE "template. = 8001\n" CREDS, ":7: [node sv1] template.: expected template.<os>");
    EXPECT_ERR(BASE "template.debian = 99\n" CREDS,
               ":7: [node sv1] template.debian: '99' is not a VMID");
    /* one cluster, one VMID space: a VMID is one VM */
    EXPECT_ERR(
        "[os ubuntu]\nvmid_range = 1000-1999\n"
        "[node a]\nhost = 10.0.0.1\ncluster = c\nstorage = s1\ntemplate.ubuntu = 8000\n"
        "[node b]\nhost = 10.0.0.2\ncluster = c\nstorage = s1\ntemplate.ubuntu = 8000\n" CREDS,
        ":12: [node b] template.ubuntu: VMID 8000 is already [node a] template.ubuntu in "
        "cluster c");
    /* two nodes behind one endpoint are one cluster */
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.1:8006\nstorage = local-lvm\n",
               ":10: [node sv2] host: 10.0.0.1:8006 is also a host of [node sv1]");
}

static void test_nodes(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "[node sv2]\nstorage = local-lvm\n", ":9: [node sv2] host: missing");
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2\n", ":9: [node sv2] storage: missing");
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2\nstorage =\n",
               ":11: [node sv2] storage: must not be empty");
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2:99999\nstorage = s\n",
               ":10: [node sv2] host: '10.0.0.2:99999' is not host:port");
    EXPECT_ERR(MIN "[node sv2]\nhost = a,b,c,d,e,f,g,h,i\nstorage = s\n",
               ":10: [node sv2] host: more than 8 hosts");
    EXPECT_ERR(MIN "[node sv2]\nhost = ,\nstorage = s\n", ":10: [node sv2] host: no host in ','");
    EXPECT_ERR(MIN "[node sv2]\nhost = 10.0.0.2\nstorage = Local\n",
               ":11: [node sv2] storage: 'Local' is not a PVE storage ID");
    EXPECT_ERR(CREDS, ": no [node NAME] section", ": no [os NAME] section");
}

static void test_credentials(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "user = root@pam\npassword = x\n",
               ":10: [proxmox] password: set either token (line 8) or user with "
               "password/password_file, not both");
    EXPECT_ERR(BASE "[proxmox]\nuser = root@pam\n", ":8: [proxmox] user: needs password");
    EXPECT_ERR(BASE "[proxmox]\npassword = x\n", ":8: [proxmox] password: needs user");
    EXPECT_ERR(BASE "[proxmox]\nuser = root@pam\npassword = x\npassword_file = /nonexistent\n",
               ":10: [proxmox] password_file: set password (line 9) or password_file, not both",
               ":10: [proxmox] password_file: cannot read '/nonexistent'");
    EXPECT_ERR(BASE "[proxmox]\nverify_tls = no\n", ":7: [proxmox]: no credentials");
    EXPECT_ERR(BASE, ": [proxmox]: no credentials");
    /* a malformed token is reported without echoing the secret */
    EXPECT_ERR(BASE "[proxmox]\ntoken = root@pam=topsecret\n",
               ":8: [proxmox] token: not an API token");
    assert_null(strstr(err, "topsecret"));
    EXPECT_ERR(BASE "[proxmox]\nuser = root\npassword = x\n", ":8: [proxmox] user: 'root'");
}

static void test_tls(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "fingerprint = AA:BB:CC\n", ":9: [proxmox] fingerprint: 'AA:BB:CC': expected");
    EXPECT_ERR(MIN "fingerprint = ZZ:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                   "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\n",
               ":9: [proxmox] fingerprint: 'ZZ:");
    EXPECT_ERR(MIN "verify_tls = no\nca_file = /etc/hostname\n",
               ":10: [proxmox] ca_file: has no effect with verify_tls = no (line 9)");
    EXPECT_ERR(MIN "ca_file = /nonexistent/ca.pem\n",
               ":9: [proxmox] ca_file: cannot read '/nonexistent/ca.pem'");
    struct proxd_config *c = load_ok(MIN "verify_tls = off\n");
    assert_false(c->verify_tls); /* allowed: the client warns */
    config_free(c);
}

static void test_syntax(void **state)
{
    (void)state;
    EXPECT_ERR(MIN "just words\n", ":9: [proxmox]: expected 'key = value' or '[section]'");
    EXPECT_ERR(MIN "timeout: 5\n", ":9: [proxmox]: expected 'key = value'");
    EXPECT_ERR(MIN "[proxd\n", ":9: bad section header '[proxd'");
    EXPECT_ERR(MIN "timeout = 5\ntimeout = 6\n",
               ":10: [proxmox] timeout: set twice (first on line 9)");
    /* a word alone is shown only when it is a key of the section: else it
     * may be a secret pasted on a line of its own (it was echoed) */
    EXPECT_ERR("nonsense", ":1: expected 'key = value' or '[section]', got a line that starts "
                           "with no key of this section (not shown: it may be a secret)");
    EXPECT_ERR(MIN "root@pam!ci=8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50\n",
               ":9: [proxmox] root@pam!ci: unknown key");
    assert_null(strstr(err, "8a3c3c4e"));
    EXPECT_ERR(MIN "8a3c3c4e-0b8e-4a7b-9a52-1f0c2d3e4f50\n",
               ":9: [proxmox]: expected 'key = value' or '[section]', got a line that starts "
               "with no key of this section (not shown");
    assert_null(strstr(err, "8a3c3c4e"));
    EXPECT_ERR(MIN "S3cretWordAlone extra words\n", ":9: [proxmox]: expected 'key = value'");
    assert_null(strstr(err, "S3cret"));
    EXPECT_ERR(MIN "timeout\n",
               ":9: [proxmox]: expected 'key = value' or '[section]', got 'timeout' with no "
               "'= value'");
    /* a malformed line is shown only up to its first blank, '=' or ':': the
     * rest may be a secret (it went to --check-config's output) */
    EXPECT_ERR(MIN "password hunter2\n",
               ":9: [proxmox]: expected 'key = value' or '[section]', got a line starting "
               "'password' (the rest not shown");
    assert_null(strstr(err, "hunter2"));
    EXPECT_ERR(MIN "token: root@pam!x=s3cr3t-v4lue\n",
               ":9: [proxmox]: expected 'key = value' or '[section]', got a line starting "
               "'token'");
    assert_null(strstr(err, "s3cr3t"));
    /* a byte order mark before the first line is fine */
    config_free(load_ok("\xEF\xBB\xBF" MIN));
}

/* libinih (as Debian builds it) cuts lines at 200 bytes and would read the
 * rest as another line; we refuse the line and keep counting right. */
static void test_long_line(void **state)
{
    (void)state;
    char *pad = xmalloc(251);
    memset(pad, 'x', 250);
    pad[250] = '\0';
    char *text = xasprintf(MIN "[proxd]\ndatabase = sqlite:/%s\nbogus = 1\n", pad);
    EXPECT_ERR(text, ":10: line too long", ":11: [proxd] bogus: unknown key");
    /* the tail must not have been parsed as a line of its own */
    assert_int_equal(count_lines(err), 2);
    free(text);
    /* long comments are harmless: they never reach libinih */
    text = xasprintf(MIN "; %s\nverify_tls = yes   # %s\n", pad, pad);
    config_free(load_ok(text));
    free(text);
    free(pad);
}

/* All problems in one run, not just the first. */
static void test_all_errors(void **state)
{
    (void)state;
    EXPECT_ERR("[proxd]\n"
               "workers = many\n"
               "colour = blue\n"
               "[os ubuntu]\n"
               "vmid_range = 1000-1999\n"
               "[os centos]\n"
               "vmid_range = 1999-2999\n"
               "[node sv1]\n"
               "storage = local-lvm\n"
               "template.suse = 8000\n"
               "[proxmox]\n"
               "token = root@pam!t=s\n"
               "password = x\n"
               "verify_tls = perhaps\n",
               ":2: [proxd] workers:", ":3: [proxd] colour: unknown key",
               ":7: [os centos] vmid_range: 1999-2999 overlaps", ":8: [node sv1] host: missing",
               ":10: [node sv1] template.suse: unknown OS",
               ":13: [proxmox] password:", ":14: [proxmox] verify_tls:");
    assert_int_equal(count_lines(err), 7);
    /* reported in file order, although found in different passes */
    const char *prev = err;
    for (int line = 2; line <= 14; line++) {
        char want[32];
        snprintf(want, sizeof want, ":%d: [", line);
        const char *at = strstr(err, want);
        if (at) {
            assert_true(at >= prev);
            prev = at;
        }
    }
}

static void test_many_errors(void **state)
{
    (void)state;
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&b, MIN "[os a]\nvmid_range = x\n[os b]\nvmid_range = y\n"); /* lines 9-12 */
    for (int i = 0; i < 300; i++)
        buf_adds(&b, "bogus = 1\n");
    EXPECT_ERR(buf_str(&b), ":10: [os a] vmid_range: 'x'", ":12: [os b] vmid_range: 'y'",
               ": too many errors, stopped here");
    assert_int_equal(count_lines(err), 201);
    assert_null(strstr(err, "overlaps")); /* two bad ranges are not an overlap */
    buf_release(&b);
}

static void test_errbuf(void **state)
{
    (void)state;
    char small[24];
    memset(small, 'x', sizeof small);
    assert_null(config_load("/nonexistent/proxd.conf", small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_null(config_load("/nonexistent/proxd.conf", err, sizeof err));
    assert_string_equal(err, "/nonexistent/proxd.conf: cannot open: No such file or directory");
    assert_null(config_load("/nonexistent/proxd.conf", NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),       cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values),        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_unknown),       cmocka_unit_test(test_bool_and_numbers),
        cmocka_unit_test(test_ranges),        cmocka_unit_test(test_overlaps),
        cmocka_unit_test(test_templates),     cmocka_unit_test(test_nodes),
        cmocka_unit_test(test_credentials),   cmocka_unit_test(test_tls),
        cmocka_unit_test(test_syntax),        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_all_errors),    cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_errbuf),        cmocka_unit_test(test_ippools),
        cmocka_unit_test(test_ippool_errors), cmocka_unit_test(test_events_webhooks),
        cmocka_unit_test(test_node_state),    cmocka_unit_test(test_access_needs),
        cmocka_unit_test(test_os_clone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
