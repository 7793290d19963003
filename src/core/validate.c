#include "core/validate.h"
#include "common/sshkey.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vm_request_release(struct vm_request *r)
{
    free(r->ssh_keys);
    r->ssh_keys = NULL;
}

/* A DNS label: what Proxmox accepts as a VM name and what a hostname may be,
 * which also keeps shell and path characters out. */
bool validate_name(const struct proxd_config *c, const char *name, char *msg, size_t len)
{
    size_t n = strlen(name);
    size_t max = c && c->name_max > 0 && c->name_max < 63 ? (size_t)c->name_max : 63;
    bool ok = n >= 1 && n <= max && name[0] != '-' && name[n - 1] != '-';
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || name[i] == '-';
    if (!ok)
        snprintf(msg, len,
                 "must be a DNS label: letters, digits and hyphens, 1-%zu characters, not "
                 "starting or ending with a hyphen",
                 max);
    return ok;
}

bool validate_owner(const char *owner, char *msg, size_t len)
{
    size_t n = strlen(owner);
    bool ok = n >= 1 && n <= 63;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)owner[i]) || strchr("-_.@", owner[i]);
    if (!ok)
        snprintf(msg, len, "must be 1-63 letters, digits or - _ . @");
    return ok;
}

static bool in_range(int64_t v, int64_t lo, int64_t hi, const char *unit, char *msg, size_t len)
{
    if (v >= lo && v <= hi)
        return true;
    snprintf(msg, len, "must be between %lld and %lld%s", (long long)lo, (long long)hi, unit);
    return false;
}

bool validate_cores(const struct proxd_config *c, int cores, char *msg, size_t len)
{
    return in_range(cores, c->cores_min, c->cores_max, "", msg, len);
}

bool validate_memory(const struct proxd_config *c, int64_t mb, char *msg, size_t len)
{
    return in_range(mb, c->memory_min_mb, c->memory_max_mb, " MiB", msg, len);
}

bool validate_disk(const struct proxd_config *c, int64_t gb, char *msg, size_t len)
{
    return in_range(gb, c->disk_min_gb, c->disk_max_gb, " GiB", msg, len);
}

static bool fail_field(char *field, size_t flen, const char *name)
{
    snprintf(field, flen, "%s", name);
    return false;
}

int validate_pools(const struct proxd_config *c, const struct vm_request *r,
                   const struct cfg_ippool *out[CFG_OS_POOLS])
{
    int n = 0;
    if (r->pools_given) {
        for (int i = 0; i < r->npools && i < CFG_OS_POOLS; i++)
            if ((out[n] = config_ippool(c, r->pools[i])))
                n++;
        return n;
    }
    const struct cfg_os *os = config_os(c, r->os);
    for (int i = 0; os && i < os->npools && i < CFG_OS_POOLS; i++)
        out[n++] = &c->pools[os->pools[i]];
    return n;
}

/* ippools: known, at most one per family, one bridge and VLAN (one NIC). */
static bool check_pools(const struct proxd_config *c, const struct vm_request *r, char *msg,
                        size_t len)
{
    const struct cfg_ippool *p[CFG_OS_POOLS];
    for (int i = 0; i < r->npools; i++) {
        if (!(p[i] = config_ippool(c, r->pools[i]))) {
            char names[512] = "";
            for (int k = 0; k < c->npools; k++) {
                size_t l = strlen(names);
                snprintf(names + l, sizeof names - l, "%s%s", k ? ", " : "", c->pools[k].name);
            }
            snprintf(msg, len, "unknown pool '%.31s'; known: %s", r->pools[i],
                     names[0] ? names : "(none)");
            return false;
        }
        for (int k = 0; k < i; k++) {
            if (p[k]->plan.net.base.family == p[i]->plan.net.base.family) {
                snprintf(msg, len,
                         "pools %s and %s are of one family: at most one IPv4 and one "
                         "IPv6 pool",
                         p[k]->name, p[i]->name);
                return false;
            }
            if (strcmp(p[k]->bridge, p[i]->bridge) != 0 || p[k]->vlan != p[i]->vlan) {
                snprintf(msg, len, "pools %s and %s are on different bridges or VLANs (one NIC)",
                         p[k]->name, p[i]->name);
                return false;
            }
        }
    }
    return true;
}

/* addresses: each of one of the creation's pools, a valid address of the
 * pool's family inside its hand-out set. */
static bool check_addrs(const struct proxd_config *c, const struct vm_request *r, char *field,
                        size_t flen, char *msg, size_t len)
{
    const struct cfg_ippool *p[CFG_OS_POOLS];
    int n = validate_pools(c, r, p);
    for (int i = 0; i < r->naddrs; i++) {
        const struct vm_request_addr *a = &r->addrs[i];
        snprintf(field, flen, "addresses.%s", a->pool);
        const struct cfg_ippool *pool = NULL;
        for (int k = 0; k < n && !pool; k++)
            if (strcmp(p[k]->name, a->pool) == 0)
                pool = p[k];
        if (!pool) {
            snprintf(msg, len, "pool '%.31s' is not one this creation takes an address from",
                     a->pool);
            return false;
        }
        struct ippool_addr ad;
        char net[IPPOOL_NETSTRLEN];
        ippool_net_format(&pool->plan.net, net);
        if (ippool_addr_parse(a->address, &ad) != IPPOOL_OK) {
            snprintf(msg, len, "'%.47s' is not an IP address", a->address);
            return false;
        }
        if (!ippool_contains(&pool->plan, &ad)) {
            snprintf(msg, len,
                     "%.47s is not an address pool %s hands out (%s, its ranges less "
                     "the reserved ones and the gateway)",
                     a->address, pool->name, net);
            return false;
        }
    }
    return true;
}

bool validate_request(const struct proxd_config *c, const struct vm_request *r, char *field,
                      size_t flen, char *msg, size_t len)
{
    if (!config_os(c, r->os)) {
        struct buf_names {
            char s[512];
        } names = {""};
        for (int i = 0; i < c->nos; i++) {
            size_t l = strlen(names.s);
            snprintf(names.s + l, sizeof names.s - l, "%s%s", i ? ", " : "", c->os[i].name);
        }
        snprintf(msg, len, "unknown OS '%.40s'; known: %s", r->os, names.s);
        return fail_field(field, flen, "os");
    }
    if (!validate_name(c, r->name, msg, len))
        return fail_field(field, flen, "name");
    if (!validate_owner(r->owner, msg, len))
        return fail_field(field, flen, "owner");
    if (!validate_cores(c, r->cores, msg, len))
        return fail_field(field, flen, "cores");
    if (!validate_memory(c, r->memory_mb, msg, len))
        return fail_field(field, flen, "memory_mb");
    if (!validate_disk(c, r->disk_gb, msg, len))
        return fail_field(field, flen, "disk_gb");
    if (r->ssh_keys) {
        int bad = 0;
        if (strlen(r->ssh_keys) > 16384) {
            snprintf(msg, len, "at most 16 KiB of keys");
            return fail_field(field, flen, "ssh_keys");
        }
        if (!sshkeys_valid(r->ssh_keys, &bad)) {
            snprintf(msg, len,
                     "key %d is not an OpenSSH public key (\"<type> <base64> [comment]\")", bad);
            return fail_field(field, flen, "ssh_keys");
        }
    }
    if (r->pools_given && !check_pools(c, r, msg, len))
        return fail_field(field, flen, "ippools");
    return check_addrs(c, r, field, flen, msg, len);
}

bool validate_idem_key(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > VALIDATE_IDEM_KEY_MAX)
        return false;
    for (; *k; k++)
        if (*k < 0x21 || *k > 0x7e)
            return false;
    return true;
}
