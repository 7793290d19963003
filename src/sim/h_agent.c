/* h_agent: the QEMU guest agent of a booted guest — ping and
 * network-get-interfaces — with qemu-server's refusals
 * (Agent::assert_agent_available): no `agent` in the config, VM not
 * running, agent not answering (disabled, guest still booting, VM paused).
 * Addresses come from the cloud-init ipconfigN the guest booted with
 * (guestnet.c: a change while it runs shows at the next boot; DHCP leases
 * are made up from the MAC), MACs from the current netN (NICs hotplug). */
#include "common/util.h"
#include "common/xalloc.h"
#include "sim/guestnet.h"
#include "sim/vmops.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_BOOT 15.0 /* PVE seconds from start until the guest's agent answers */

/* agent: "1", "0", "enabled=1,fstrim_cloned_disks=1", "1,type=virtio" */
static bool agent_enabled(const char *a)
{
    if (!a)
        return false;
    const char *e = strstr(a, "enabled=");
    if (e)
        return e[8] == '1';
    return a[0] == '1';
}

static struct sim_vm *agent_vm(struct sim_call *c)
{
    struct sim_vm *vm = vmops_load(c);
    if (!vm)
        return NULL;
    json_t *a = json_object_get(vm->conf, "agent");
    if (!a) {
        call_fail(c, 500, "No QEMU guest agent configured");
        return NULL;
    }
    if (vm->power == VM_STOPPED) {
        call_fail(c, 500, "VM %d is not running", vm->vmid);
        return NULL;
    }
    const char *as = json_string_value(a);
    bool on = as ? agent_enabled(as) : json_integer_value(a) != 0;
    if (!on || vm->power == VM_PAUSED || sim_now(c->s) - vm->started < AGENT_BOOT) {
        call_fail(c, 500, "QEMU guest agent is not running");
        return NULL;
    }
    return vm;
}

static void h_ping(struct sim_call *c)
{
    if (agent_vm(c))
        c->data = json_pack("{s:{}}", "result");
}

static json_t *addr(const char *ip, const char *type, int prefix)
{
    return json_pack("{s:s,s:s,s:i}", "ip-address", ip, "ip-address-type", type, "prefix", prefix);
}

/* "ip=10.0.0.5/24,gw=10.0.0.1" -> value of `key` ("10.0.0.5/24"), or NULL. */
static char *ipconf_get(const char *conf, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = conf; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=')
            return xstrndup(p + kl + 1, n - kl - 1);
        p += n;
        if (*p)
            p++;
    }
    return NULL;
}

static void add_cidr(json_t *list, const char *cidr, const char *type)
{
    const char *slash = strchr(cidr, '/');
    char ip[64];
    snprintf(ip, sizeof ip, "%.*s", (int)(slash ? slash - cidr : (long)strlen(cidr)), cidr);
    json_array_append_new(list,
                          addr(ip, type, slash ? atoi(slash + 1) : (*type == '4' ? 32 : 128)));
}

static json_t *nic_entry(struct sim *s, struct sim_vm *vm, int idx, const char *net)
{
    /* "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0" or "...,macaddr=..." */
    const char *eq = strchr(net, '=');
    const char *m = strstr(net, "macaddr=");
    const char *mac = m ? m + 8 : eq ? eq + 1 : "";
    char lmac[18];
    size_t i;
    for (i = 0; i < 17 && mac[i] && mac[i] != ','; i++)
        lmac[i] = (char)tolower((unsigned char)mac[i]);
    lmac[i] = '\0';
    unsigned b[6] = {0};
    sscanf(lmac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
    char name[16], buf[64];
    snprintf(name, sizeof name, "ens%d", 18 + idx);
    const char *ipc = guestnet_ipconfig(vm, idx); /* as the guest booted */
    json_t *ips = json_array();
    char *ip4 = ipc ? ipconf_get(ipc, "ip") : NULL;
    if (ip4 && strcmp(ip4, "dhcp") == 0) { /* a lease from the node's subnet */
        snprintf(buf, sizeof buf, "10.%d.%u.%u/16", 100 + vm->node->idx, b[4], b[5] ? b[5] : 1);
        add_cidr(ips, buf, "ipv4");
    } else if (ip4) {
        add_cidr(ips, ip4, "ipv4");
    }
    char *ip6 = ipc ? ipconf_get(ipc, "ip6") : NULL;
    if (ip6 && strcmp(ip6, "dhcp") != 0 && strcmp(ip6, "auto") != 0)
        add_cidr(ips, ip6, "ipv6");
    snprintf(buf, sizeof buf, "fe80::%x:%xff:fe%02x:%x", (b[0] ^ 2) << 8 | b[1], b[2], b[3],
             b[4] << 8 | b[5]);
    json_array_append_new(ips, addr(buf, "ipv6", 64));
    free(ip4);
    free(ip6);
    double up = sim_now(s) - vm->started;
    json_int_t rx = (json_int_t)(up * 2048), tx = (json_int_t)(up * 1024);
    return json_pack("{s:s,s:s,s:o,s:{s:I,s:I,s:i,s:i,s:I,s:I,s:i,s:i}}", "name", name,
                     "hardware-address", lmac, "ip-addresses", ips, "statistics", "rx-bytes", rx,
                     "rx-packets", rx / 512, "rx-errs", 0, "rx-dropped", 0, "tx-bytes", tx,
                     "tx-packets", tx / 512, "tx-errs", 0, "tx-dropped", 0);
}

static void h_interfaces(struct sim_call *c)
{
    struct sim_vm *vm = agent_vm(c);
    if (!vm)
        return;
    json_t *list = json_array();
    json_array_append_new(
        list, json_pack("{s:s,s:s,s:[o,o],s:{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}}", "name", "lo",
                        "hardware-address", "00:00:00:00:00:00", "ip-addresses",
                        addr("127.0.0.1", "ipv4", 8), addr("::1", "ipv6", 128), "statistics",
                        "rx-bytes", 0, "rx-packets", 0, "rx-errs", 0, "rx-dropped", 0, "tx-bytes",
                        0, "tx-packets", 0, "tx-errs", 0, "tx-dropped", 0));
    for (int i = 0; i < 32; i++) {
        char key[16];
        snprintf(key, sizeof key, "net%d", i);
        const char *net = json_string_value(json_object_get(vm->conf, key));
        if (net)
            json_array_append_new(list, nic_entry(c->s, vm, i, net));
    }
    c->data = json_pack("{s:o}", "result", list);
}

const struct sim_route sim_routes_agent[] = {
    {"POST", "/nodes/{node}/qemu/{vmid}/agent/ping", h_ping},
    {"GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", h_interfaces},
    {NULL, NULL, NULL},
};
