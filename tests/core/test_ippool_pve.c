/* The Proxmox strings of core/ippool against pvesim, which checks every
 * parameter against the official API schema (qemu-server's net, ipconfig
 * and address-list formats): net0, ipconfig0, nameserver and searchdomain
 * built from pools of both families and of every edge size are sent
 * through libpve's config update (form and JSON bodies, PVE 8 and 9), read
 * back unchanged, and none is refused (/_sim/rejections stays empty). The
 * booted guest's agent then reports the address and the MAC. */
#include "pvetest.h"

#include <strings.h>

#include "core/ippool.h"
#include "pve/pve_api.h"

#define VMID 1000

static struct ippool mkpool(const char *cidr, const char *gw, const char *ranges)
{
    struct ippool p = {0};
    struct ippool_errinfo e;
    assert_int_equal(ippool_net_parse(cidr, &p.net, &e), IPPOOL_OK);
    if (gw) {
        p.has_gateway = true;
        assert_int_equal(ippool_addr_parse(gw, &p.gateway), IPPOOL_OK);
    }
    if (ranges)
        assert_int_equal(
            ippool_ranges_parse(ranges, "ranges", p.ranges, &p.nranges, IPPOOL_MAX_RANGES, &e),
            IPPOOL_OK);
    if (ippool_prepare(&p, &e))
        fail_msg("%s: %s: %s", cidr, e.field, e.msg);
    return p;
}

/* The last hand-out address of a pool, so the edges are exercised. */
static struct ippool_addr last_of(const struct ippool *p)
{
    return p->segs[p->nsegs - 1].hi;
}

struct vmnet {
    char net0[64], ipconfig0[256], nameserver[256], searchdomain[128];
};

/* Build the four strings as proxd will, send them, read them back. */
static void send_and_check(pve_client *c, const struct ippool *v4, const struct ippool *v6,
                           const char *bridge, int vlan, const struct ippool_addr *dns, int ndns,
                           const char *search, struct vmnet *out)
{
    struct ippool_mac mac;
    ippool_mac_random(&mac);
    struct ippool_lease l4 = {v4, v4 ? last_of(v4) : (struct ippool_addr){0}};
    struct ippool_lease l6 = {v6, v6 ? last_of(v6) : (struct ippool_addr){0}};
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    ippool_fmt_net(&b, &mac, bridge, vlan);
    snprintf(out->net0, sizeof out->net0, "%s", buf_str(&b));
    buf_reset(&b);
    ippool_fmt_ipconfig(&b, v4 ? &l4 : NULL, v6 ? &l6 : NULL);
    snprintf(out->ipconfig0, sizeof out->ipconfig0, "%s", buf_str(&b));
    buf_reset(&b);
    ippool_fmt_nameserver(&b, dns, ndns);
    snprintf(out->nameserver, sizeof out->nameserver, "%s", buf_str(&b));
    buf_release(&b);
    snprintf(out->searchdomain, sizeof out->searchdomain, "%s", search);

    struct pve_config_set s = {.net0 = out->net0,
                               .ipconfig0 = out->ipconfig0,
                               .nameserver = out->nameserver,
                               .searchdomain = out->searchdomain};
    struct pve_error e;
    assert_ok(pve_vm_config_set(c, "sv1", VMID, &s, &e), &e);
    struct pve_vm_config cfg;
    assert_ok(pve_vm_config_get(c, "sv1", VMID, false, &cfg, &e), &e);
    static const char *const keys[] = {"net0", "ipconfig0", "nameserver", "searchdomain"};
    const char *want[] = {out->net0, out->ipconfig0, out->nameserver, out->searchdomain};
    for (int i = 0; i < 4; i++) {
        const char *got = json_string_value(json_object_get(cfg.raw, keys[i]));
        if (!got || strcmp(got, want[i]))
            fail_msg("%s: sent '%s', read back '%s'", keys[i], want[i], got ? got : "(none)");
    }
    pve_vm_config_release(&cfg);
}

static void no_rejections(struct tsim *s)
{
    json_t *rej = tsim_ctl(s, "GET", "/_sim/rejections", NULL);
    if (!json_is_array(rej) || json_array_size(rej) != 0) {
        char *text = json_dumps(rej, 0);
        fail_msg("pvesim refused requests as not matching the schema: %s", text);
    }
    json_decref(rej);
}

struct agent_wait {
    struct tsim *s;
    json_t *ifaces;
};

static bool agent_up(void *arg)
{
    struct agent_wait *w = arg;
    struct h_resp r;
    const char *hdrs[] = {"Authorization: PVEAPIToken=" T_TOKEN, NULL};
    h_request(w->s->port, "GET", "/api2/json/nodes/sv1/qemu/1000/agent/network-get-interfaces",
              NULL, NULL, hdrs, &r);
    if (r.status == 200 && r.json)
        w->ifaces = json_incref(json_object_get(json_object_get(r.json, "data"), "result"));
    h_resp_free(&r);
    return w->ifaces != NULL;
}

/* Whether the agent's interface with `mac` (lower case) has ip/prefix. */
static bool has_addr(json_t *ifaces, const char *mac, const char *ip, int prefix)
{
    size_t i, j;
    json_t *nic, *a;
    json_array_foreach(ifaces, i, nic)
    {
        const char *hw = json_string_value(json_object_get(nic, "hardware-address"));
        if (!hw || strcasecmp(hw, mac))
            continue;
        json_array_foreach(json_object_get(nic, "ip-addresses"), j, a)
        {
            if (strcmp(json_string_value(json_object_get(a, "ip-address")), ip) == 0 &&
                json_integer_value(json_object_get(a, "prefix")) == prefix)
                return true;
        }
    }
    return false;
}

static void run(const char *version, bool json_bodies)
{
    struct tsim s;
    const char *extra[] = {"--pve-version", version, NULL};
    tsim_start(&s, extra);
    struct pve_config cfg;
    const char *hostv[1];
    tcfg_init(&cfg, hostv, s.host);
    cfg.json_bodies = json_bodies;
    pve_client *c = tclient(&cfg);
    struct pve_error e;
    char upid[PVE_UPID_MAX];
    struct pve_clone co = {.newid = VMID, .name = "pool-vm", .full = 1};
    assert_ok(pve_vm_clone(c, "sv1", 8000, &co, upid, &e), &e);
    struct pve_task t;
    assert_ok(pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e), &e);
    assert_string_equal(t.exitstatus, "OK");

    struct ippool v4_24 = mkpool("192.168.10.0/24", "192.168.10.1", NULL);
    struct ippool v6_64 = mkpool("2001:db8:10::/64", "2001:db8:10::1", NULL);
    struct ippool v4_30 = mkpool("192.0.2.4/30", "192.0.2.5", NULL);
    struct ippool v6_126 = mkpool("2001:db8:20::/126", "2001:db8:20::1", NULL);
    struct ippool v4_8 = mkpool("10.0.0.0/8", "10.0.0.1", NULL);
    struct ippool v4_32 = mkpool("198.51.100.7/32", NULL, NULL);
    struct ippool v6_128 = mkpool("2001:db8:30::7/128", NULL, NULL);
    struct ippool v6_48 = mkpool("fd12:3456:789a::/48", "fd12:3456:789a::1", "fd12:3456:789a::/64");
    struct ippool_addr dns[4];
    const char *dns_text[] = {"192.168.10.53", "2001:db8:10::53", "9.9.9.9", "2620:fe::fe"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ippool_addr_parse(dns_text[i], &dns[i]), IPPOOL_OK);

    struct vmnet n;
    send_and_check(c, &v4_30, NULL, "vmbr0", 0, dns, 1, "", &n);
    assert_string_equal(n.ipconfig0, "ip=192.0.2.6/30,gw=192.0.2.5");
    send_and_check(c, NULL, &v6_126, "vmbr0", 4094, dns + 1, 1, "example.com", &n);
    assert_string_equal(n.ipconfig0, "ip6=2001:db8:20::3/126,gw6=2001:db8:20::1");
    send_and_check(c, &v4_8, &v6_48, "vmbr9", 1, dns, 4, "a.example b.example", &n);
    assert_string_equal(n.ipconfig0,
                        "ip=10.255.255.254/8,gw=10.0.0.1,ip6=fd12:3456:789a:0:ffff:ffff:ffff:ffff/"
                        "48,gw6=fd12:3456:789a::1");
    send_and_check(c, &v4_32, &v6_128, "vmbr0", 0, dns, 2, "example.com", &n);
    assert_string_equal(n.ipconfig0, "ip=198.51.100.7/32,ip6=2001:db8:30::7/128");
    /* the everyday case last: the guest boots with it */
    send_and_check(c, &v4_24, &v6_64, "vmbr1", 42, dns, 2, "example.com corp.example.com", &n);
    assert_string_equal(n.ipconfig0, "ip=192.168.10.254/24,gw=192.168.10.1,"
                                     "ip6=2001:db8:10:0:ffff:ffff:ffff:ffff/64,gw6=2001:db8:10::1");
    no_rejections(&s);

    assert_ok(pve_vm_power(c, "sv1", VMID, PVE_POWER_START, NULL, upid, &e), &e);
    assert_ok(pve_task_wait(c, upid, 30000, NULL, NULL, &t, &e), &e);
    struct agent_wait w = {&s, NULL};
    assert_true(h_wait(agent_up, &w, 20000)); /* the agent answers 15 PVE s after boot */
    char mac[IPPOOL_MACSTRLEN];
    snprintf(mac, sizeof mac, "%.*s", (int)sizeof mac - 1, n.net0 + strlen("virtio="));
    assert_true(has_addr(w.ifaces, mac, "192.168.10.254", 24));
    assert_true(has_addr(w.ifaces, mac, "2001:db8:10:0:ffff:ffff:ffff:ffff", 64));
    json_decref(w.ifaces);
    no_rejections(&s);
    pve_client_free(c);
    tsim_stop(&s);
}

static void pve9_forms(void **state)
{
    (void)state;
    run("9", false);
}

static void pve9_json(void **state)
{
    (void)state;
    run("9", true);
}

static void pve8_forms(void **state)
{
    (void)state;
    run("8", false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pve9_forms),
        cmocka_unit_test(pve9_json),
        cmocka_unit_test(pve8_forms),
    };
    return cmocka_run_group_tests(tests, t_setup_global, NULL);
}
