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
    return true;
}
