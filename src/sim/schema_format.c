/* schema_format: PVE's named formats, split_list and whole-match regexes.
 *
 * Validators reproduce the register_format() callbacks of pve-common
 * (JSONSchema.pm, Tools.pm), pve-access-control (Auth/Plugin.pm,
 * AccessControl.pm), pve-storage (Storage.pm, Plugin.pm) and qemu-server
 * (QemuServer.pm): same regexes, same die texts.
 *
 * Implemented: urlencoded, pve-configid, pve-storage-id, pve-bridge-id,
 * pve-vmid, pve-node, mac-addr, ipv4, ipv6, ip, ipv4mask, CIDRv4, CIDRv6,
 * CIDR, pve-ipv4-config, pve-ipv6-config, dns-name, address, pve-iface,
 * disk-size, pve-startup-order, pve-tag, pve-task-status-type, pve-poolid,
 * pve-groupid, pve-roleid, pve-realm, pve-userid, pve-tokenid, pve-priv,
 * pve-storage-content, pve-volume-id, pve-hotplug-features,
 * ldap-simple-attr, and the hash format pve-qm-ipconfig. Their "-list" and
 * "-opt" variants are handled by the caller.
 *
 * Accepted without checking (PVE would check them; the simulator's endpoints
 * do not depend on them): email, email-or-username, timezone, storage-pair,
 * bridge-pair, pve-vlan-id-or-range, pve-tfa-secret, pve-calendar-event,
 * pve-fw-* specs, IPorCIDR, IPorCIDRorAlias, pve-sdn-*, pve-ha-*,
 * pve-volume-id-or-qm-path, pve-volume-id-or-absolute-path, pve-storage-path,
 * pve-storage-server, pve-storage-portal-dns, pve-storage-vgname,
 * pve-storage-options, pve-lxc-*, pve-qm-* (other than ipconfig),
 * pve-vm-cpu-conf, pve-qemu-*-fmt, pve-cpuset, pve-replication-job-id,
 * pve-acme-*, pem-*, graphite-path, pve-day-of-week, pve-dir-override,
 * prune-backups, backup-fleecing, backup-performance, realm-sync-options,
 * pve-tfa-config, proxmox-remote, mac-prefix, pve-command-batch, and any
 * other name. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "sim/schema_format.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/xalloc.h"

/* ---- regex cache ------------------------------------------------------ */

/* Compiled patterns live for the whole process: there are a few hundred
 * distinct ones in an apidoc file, and sharing them across schemas and
 * threads makes schema_check_value (which has no schema handle) cheap. */
struct rx_entry {
    char *src;        /* the pattern as written in the schema */
    pcre2_code *code; /* NULL if it did not compile */
    struct rx_entry *next;
};

#define RX_BUCKETS 1024
static struct rx_entry *rx_table[RX_BUCKETS];
static pthread_mutex_t rx_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned rx_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % RX_BUCKETS;
}

/* Perl syntax PCRE2 10.42 reads differently: `(?^` (caret = reset to default
 * modifiers; we compile with none, so plain `(?` is equivalent) and `{,n}`
 * (Perl >= 5.34: {0,n}; PCRE2 < 10.43: literal text). */
static char *rx_translate(const char *pat)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&b, "^");
    for (const char *p = pat; *p; p++) {
        if (*p == '\\' && p[1]) {
            buf_add(&b, p, 2);
            p++;
        } else if (p[0] == '(' && p[1] == '?' && p[2] == '^') {
            buf_adds(&b, "(?");
            p += 2;
        } else if (p[0] == '{' && p[1] == ',' && p[2] >= '0' && p[2] <= '9') {
            buf_adds(&b, "{0");
        } else {
            buf_addc(&b, *p);
        }
    }
    buf_adds(&b, "$");
    return buf_take(&b);
}

static pcre2_code *rx_get(const char *pat)
{
    unsigned h = rx_hash(pat);
    pcre2_code *code = NULL;

    pthread_mutex_lock(&rx_lock);
    struct rx_entry *e;
    for (e = rx_table[h]; e; e = e->next)
        if (strcmp(e->src, pat) == 0)
            break;
    if (!e) {
        char *src = rx_translate(pat);
        int errcode;
        PCRE2_SIZE erroff;
        e = xcalloc(1, sizeof(*e));
        e->src = xstrdup(pat);
        /* UTF+UCP: PVE matches decoded character strings, where \w, \d and
         * \s are Unicode-aware; invalid UTF-8 input must not make matching
         * fail with an error. */
        e->code =
            pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode, &erroff, NULL);
        free(src);
        e->next = rx_table[h];
        rx_table[h] = e;
    }
    code = e->code;
    pthread_mutex_unlock(&rx_lock);
    return code;
}

int schema_regex_match(const char *pattern, const char *subject, size_t len)
{
    pcre2_code *code = rx_get(pattern);
    if (!code)
        return -1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    if (!md)
        abort();
    int rc = pcre2_match(code, (PCRE2_SPTR)subject, len, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0 ? 1 : 0;
}

/* ---- split_list ------------------------------------------------------- */

static bool perl_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

void schema_split_list(const char *text, size_t len, json_t *out)
{
    bool nul = memchr(text, '\0', len) != NULL;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        if (nul) {
            while (j < len && text[j] != '\0')
                j++;
            /* Perl's split keeps inner empty fields but drops trailing ones */
            if (j > i || j < len)
                json_array_append_new(out, json_stringn_nocheck(text + i, j - i));
            i = j + 1;
            continue;
        }
        while (j < len && !perl_space(text[j]) && text[j] != ',' && text[j] != ';')
            j++;
        if (j > i)
            json_array_append_new(out, json_stringn_nocheck(text + i, j - i));
        i = j + 1;
    }
    if (nul) {
        /* drop trailing empty items, as split() does */
        while (json_array_size(out) > 0 &&
               json_string_length(json_array_get(out, json_array_size(out) - 1)) == 0)
            json_array_remove(out, json_array_size(out) - 1);
    }
}

/* ---- named hash formats ----------------------------------------------- */

/* qemu-server's $ipconfig_fmt, registered as 'pve-qm-ipconfig'. */
static const char ipconfig_fmt[] =
    "{\"ip\":{\"type\":\"string\",\"format\":\"pve-ipv4-config\",\"optional\":1},"
    "\"gw\":{\"type\":\"string\",\"format\":\"ipv4\",\"optional\":1,\"requires\":\"ip\"},"
    "\"ip6\":{\"type\":\"string\",\"format\":\"pve-ipv6-config\",\"optional\":1},"
    "\"gw6\":{\"type\":\"string\",\"format\":\"ipv6\",\"optional\":1,\"requires\":\"ip6\"}}";

static json_t *hash_ipconfig;
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_init(void)
{
    hash_ipconfig = json_loads(ipconfig_fmt, 0, NULL);
    if (!hash_ipconfig)
        abort();
}

json_t *schema_format_hash(const char *name)
{
    pthread_once(&hash_once, hash_init);
    if (strcmp(name, "pve-qm-ipconfig") == 0)
        return hash_ipconfig;
    return NULL;
}

/* ---- validators ------------------------------------------------------- */

#define IPV4OCTET "(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
#define IPV4RE "(?:(?:" IPV4OCTET "\\.){3}" IPV4OCTET ")"
#define H16 "(?:[0-9a-fA-F]{1,4})"
#define LS32 "(?:(?:" IPV4RE "|" H16 ":" H16 "))"
#define IPV6RE                                                                                     \
    "(?:(?:(?:(?:" H16 ":){6})" LS32 ")|"                                                          \
    "(?:(?:::(?:" H16 ":){5})" LS32 ")|"                                                           \
    "(?:(?:(?:" H16 ")?::(?:" H16 ":){4})" LS32 ")|"                                               \
    "(?:(?:(?:(?:" H16 ":){0,1}" H16 ")?::(?:" H16 ":){3})" LS32 ")|"                              \
    "(?:(?:(?:(?:" H16 ":){0,2}" H16 ")?::(?:" H16 ":){2})" LS32 ")|"                              \
    "(?:(?:(?:(?:" H16 ":){0,3}" H16 ")?::(?:" H16 ":){1})" LS32 ")|"                              \
    "(?:(?:(?:(?:" H16 ":){0,4}" H16 ")?::)" LS32 ")|"                                             \
    "(?:(?:(?:(?:" H16 ":){0,5}" H16 ")?::)" H16 ")|"                                              \
    "(?:(?:(?:(?:" H16 ":){0,6}" H16 ")?::)))"
#define DNSNAME_RE                                                                                 \
    "(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9\\-]*[a-zA-Z0-9])?)\\.)*"                                       \
    "(?:[a-zA-Z0-9](?:[a-zA-Z0-9\\-]*[a-zA-Z0-9])?)"
#define REALM_RE "[A-Za-z][A-Za-z0-9\\.\\-_]+"
#define USER_RE "[^\\s:/]+"

static bool rx(const char *pattern, const char *v, size_t len)
{
    return schema_regex_match(pattern, v, len) == 1;
}

/* `msg` with its one "%s" (if any) replaced by the value. */
static char *fail(const char *msg, const char *v)
{
    const char *p = strstr(msg, "%s");
    if (!p)
        return xstrdup(msg);
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_add(&b, msg, (size_t)(p - msg));
    buf_adds(&b, v);
    buf_adds(&b, p + 2);
    return buf_take(&b);
}

/* Formats that are one regex and one message. */
struct rx_format {
    const char *name;
    const char *re;
    const char *msg;
};

static const struct rx_format rx_formats[] = {
    {"urlencoded", "[-%a-zA-Z0-9_.!~*'()]*", "invalid urlencoded string: %s\n"},
    {"pve-configid", "(?i:[a-z][a-z0-9_-]+)", "invalid configuration ID '%s'\n"},
    {"pve-storage-id", "(?i:[a-z][a-z0-9\\-\\_\\.]*[a-z0-9])",
     "storage ID '%s' contains illegal characters\n"},
    {"pve-bridge-id", "[-_.\\w\\d]+", "invalid bridge ID '%s'\n"},
    {"pve-vmid", "[1-9][0-9]{2,8}", "value does not look like a valid VM ID\n"},
    {"pve-node", "(?:[a-zA-Z0-9](?:[a-zA-Z0-9\\-]*[a-zA-Z0-9])?)",
     "value does not look like a valid node name\n"},
    {"mac-addr", "(?i:[a-f0-9][02468ace](?::[a-f0-9]{2}){5})",
     "value does not look like a valid unicast MAC address\n"},
    {"ipv4", IPV4RE, "value does not look like a valid IPv4 address\n"},
    {"ipv6", IPV6RE, "value does not look like a valid IPv6 address\n"},
    {"ip", "(?:" IPV4RE "|" IPV6RE ")", "value does not look like a valid IP address\n"},
    {"dns-name", "(?:" DNSNAME_RE ")", "value does not look like a valid DNS name\n"},
    {"pve-iface", "(?i:[a-z][a-z0-9_]{1,20}(?:[:\\.]\\d+)?)",
     "invalid network interface name '%s'\n"},
    {"disk-size", "(?:\\d+(?:\\.\\d+)?)[KMGT]?",
     "value does not look like a valid disk size: %s\n"},
    {"pve-tag", "(?i:[a-z0-9_][a-z0-9_\\-\\+\\.]*)", "invalid characters in tag\n"},
    {"pve-task-status-type", "(?i:ok|error|warning|unknown)", "invalid status '%s'\n"},
    {"pve-poolid", "[A-Za-z0-9\\.\\-_]+", "pool name '%s' contains invalid characters\n"},
    {"pve-groupid", "[A-Za-z0-9\\.\\-_]+", "group name '%s' contains invalid characters\n"},
    {"pve-roleid", "[A-Za-z0-9\\.\\-_]+", "role name '%s' contains invalid characters\n"},
    {"pve-realm", REALM_RE, "value does not look like a valid realm\n"},
    {"pve-tokenid", "(?:" USER_RE "@" REALM_RE ")!" REALM_RE,
     "value '%s' does not look like a valid token ID\n"},
    {"pve-volume-id", "(?i:[a-z][a-z0-9\\-\\_\\.]*[a-z0-9]):.+",
     "unable to parse volume ID '%s'\n"},
    {"ldap-simple-attr", "[a-zA-Z0-9]+",
     "value '%s' does not look like a simple ldap attribute name\n"},
};

static const char *const ipv4_masks[] = {"0.0.0.0",         "128.0.0.0",
                                         "192.0.0.0",       "224.0.0.0",
                                         "240.0.0.0",       "248.0.0.0",
                                         "252.0.0.0",       "254.0.0.0",
                                         "255.0.0.0",       "255.128.0.0",
                                         "255.192.0.0",     "255.224.0.0",
                                         "255.240.0.0",     "255.248.0.0",
                                         "255.252.0.0",     "255.254.0.0",
                                         "255.255.0.0",     "255.255.128.0",
                                         "255.255.192.0",   "255.255.224.0",
                                         "255.255.240.0",   "255.255.248.0",
                                         "255.255.252.0",   "255.255.254.0",
                                         "255.255.255.0",   "255.255.255.128",
                                         "255.255.255.192", "255.255.255.224",
                                         "255.255.255.240", "255.255.255.248",
                                         "255.255.255.252", "255.255.255.254",
                                         "255.255.255.255", NULL};

/* valid_content_types('dir') of pve-storage, plus 'import' (PVE 8.2+). */
static const char *const content_types[] = {"images", "rootdir",  "vztmpl", "iso",
                                            "backup", "snippets", "import", NULL};

/* The union of PVE 8.x and 9.x privileges ($valid_privs of AccessControl.pm). */
static const char *const privileges[] = {"Datastore.Allocate",
                                         "Datastore.AllocateSpace",
                                         "Datastore.AllocateTemplate",
                                         "Datastore.Audit",
                                         "Group.Allocate",
                                         "Mapping.Audit",
                                         "Mapping.Modify",
                                         "Mapping.Use",
                                         "Permissions.Modify",
                                         "Pool.Allocate",
                                         "Pool.Audit",
                                         "Realm.Allocate",
                                         "Realm.AllocateUser",
                                         "SDN.Allocate",
                                         "SDN.Audit",
                                         "SDN.Use",
                                         "Sys.AccessNetwork",
                                         "Sys.Audit",
                                         "Sys.Console",
                                         "Sys.Incoming",
                                         "Sys.Modify",
                                         "Sys.PowerMgmt",
                                         "Sys.Syslog",
                                         "User.Modify",
                                         "VM.Allocate",
                                         "VM.Audit",
                                         "VM.Backup",
                                         "VM.Clone",
                                         "VM.Config.CDROM",
                                         "VM.Config.CPU",
                                         "VM.Config.Cloudinit",
                                         "VM.Config.Disk",
                                         "VM.Config.HWType",
                                         "VM.Config.Memory",
                                         "VM.Config.Network",
                                         "VM.Config.Options",
                                         "VM.Console",
                                         "VM.GuestAgent.Audit",
                                         "VM.GuestAgent.FileRead",
                                         "VM.GuestAgent.FileSystemMgmt",
                                         "VM.GuestAgent.FileWrite",
                                         "VM.GuestAgent.Unrestricted",
                                         "VM.Migrate",
                                         "VM.Monitor",
                                         "VM.PowerMgmt",
                                         "VM.Replicate",
                                         "VM.Snapshot",
                                         "VM.Snapshot.Rollback",
                                         NULL};

static bool in_set(const char *const *set, const char *v)
{
    for (; *set; set++)
        if (strcmp(*set, v) == 0)
            return true;
    return false;
}

/* Perl's `$x =~ /^...$/` tolerates one trailing newline; keep that for the
 * hand-written checks too. */
static size_t chomp_len(const char *v, size_t len)
{
    return (len > 0 && v[len - 1] == '\n') ? len - 1 : len;
}

static bool all_digits(const char *v, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (v[i] < '0' || v[i] > '9')
            return false;
    return true;
}

/* `^(?:$ADDR_RE)(?:/(\d+))$` with min < prefix <= max. */
static bool cidr_ok(const char *addr_re, int max, const char *v, size_t len)
{
    size_t n = chomp_len(v, len);
    const char *slash = NULL;
    for (size_t i = n; i > 0 && !slash; i--)
        if (v[i - 1] == '/')
            slash = v + i - 1;
    if (!slash)
        return false;
    size_t alen = (size_t)(slash - v);
    const char *pfx = slash + 1;
    size_t plen = n - alen - 1;
    if (!all_digits(pfx, plen) || memchr(v, '\n', alen))
        return false;
    if (!rx(addr_re, v, alen))
        return false;
    long bits = plen > 4 ? 1000 : strtol(pfx, NULL, 10);
    return bits > 7 && bits <= max;
}

static bool ipv4_config_ok(const char *v, size_t len)
{
    return rx("(?:dhcp|manual)", v, len) || cidr_ok(IPV4RE, 32, v, len);
}

static bool ipv6_config_ok(const char *v, size_t len)
{
    return rx("(?:auto|dhcp|manual)", v, len) || cidr_ok(IPV6RE, 128, v, len);
}

/* pve_parse_startup_order: false for "" and "0" (Perl falsy), else every
 * comma part must be [order=]N, up=N or down=N. */
static bool startup_order_ok(const char *v)
{
    if (v[0] == '\0' || strcmp(v, "0") == 0)
        return false;
    bool ok = true;
    char *copy = xstrdup(v);
    char *save = NULL;
    /* split(/,/) then skip blank parts: strtok_r skips empty ones already */
    for (char *p = strtok_r(copy, ",", &save); p && ok; p = strtok_r(NULL, ",", &save)) {
        size_t n = strlen(p);
        bool blank = true;
        for (size_t i = 0; i < n; i++)
            blank = blank && perl_space(p[i]);
        if (blank)
            continue;
        ok = rx("(?:order=)?\\d+", p, n) || rx("up=\\d+", p, n) || rx("down=\\d+", p, n);
    }
    free(copy);
    return ok;
}

/* parse_hotplug_features dies on the first unknown feature. */
static char *hotplug_check(const char *v, size_t len)
{
    if (strcmp(v, "0") == 0)
        return NULL;
    if (strcmp(v, "1") == 0)
        return NULL; /* the default "network,disk,usb" */
    json_t *items = json_array();
    char *err = NULL;
    size_t i;
    json_t *it;
    schema_split_list(v, len, items);
    json_array_foreach(items, i, it)
    {
        const char *f = json_string_value(it);
        if (!rx("(?:network|disk|cpu|memory|usb|cloudinit)", f, json_string_length(it))) {
            err = fail("invalid hotplug feature '%s'\n", f);
            break;
        }
    }
    json_decref(items);
    return err;
}

/* verify_username of pve-access-control. */
static char *userid_check(const char *v, size_t len)
{
    const char *u = (len == 0 || strcmp(v, "0") == 0) ? "" : v;
    size_t n = 0;
    for (const char *p = u; *p; p++)
        n += ((unsigned char)*p & 0xC0) != 0x80; /* characters, not bytes */
    if (n < 3)
        return fail("user name '%s' is too short\n", u);
    if (n > 64) {
        char *s = xasprintf("user name '%s' is too long (%zu > 64)\n", u, n);
        return s;
    }
    if (rx(USER_RE "@" REALM_RE, v, len))
        return NULL;
    return fail("value '%s' does not look like a valid user name\n", v);
}

char *schema_format_verify(const char *name, const char *v, size_t len)
{
    for (size_t i = 0; i < sizeof(rx_formats) / sizeof(rx_formats[0]); i++) {
        if (strcmp(rx_formats[i].name, name) == 0)
            return rx(rx_formats[i].re, v, len) ? NULL : fail(rx_formats[i].msg, v);
    }
    if (strcmp(name, "ipv4mask") == 0)
        return in_set(ipv4_masks, v) ? NULL
                                     : xstrdup("value does not look like a valid IP netmask\n");
    if (strcmp(name, "CIDRv4") == 0)
        return cidr_ok(IPV4RE, 32, v, len)
                   ? NULL
                   : xstrdup("value does not look like a valid IPv4 CIDR network\n");
    if (strcmp(name, "CIDRv6") == 0)
        return cidr_ok(IPV6RE, 128, v, len)
                   ? NULL
                   : xstrdup("value does not look like a valid IPv6 CIDR network\n");
    if (strcmp(name, "CIDR") == 0)
        return (cidr_ok(IPV4RE, 32, v, len) || cidr_ok(IPV6RE, 128, v, len))
                   ? NULL
                   : xstrdup("value does not look like a valid CIDR network\n");
    if (strcmp(name, "pve-ipv4-config") == 0)
        return ipv4_config_ok(v, len)
                   ? NULL
                   : xstrdup("value does not look like a valid ipv4 network configuration\n");
    if (strcmp(name, "pve-ipv6-config") == 0)
        return ipv6_config_ok(v, len)
                   ? NULL
                   : xstrdup("value does not look like a valid ipv6 network configuration\n");
    if (strcmp(name, "address") == 0)
        return (rx("(?:" IPV4RE "|" IPV6RE ")", v, len) || rx(DNSNAME_RE, v, len))
                   ? NULL
                   : fail("value does not look like a valid address: %s\n", v);
    if (strcmp(name, "pve-startup-order") == 0)
        return startup_order_ok(v) ? NULL : xstrdup("unable to parse startup options\n");
    if (strcmp(name, "pve-hotplug-features") == 0)
        return hotplug_check(v, len);
    if (strcmp(name, "pve-userid") == 0)
        return userid_check(v, len);
    if (strcmp(name, "pve-priv") == 0)
        return in_set(privileges, v) ? NULL : fail("invalid privilege '%s'\n", v);
    if (strcmp(name, "pve-storage-content") == 0)
        return in_set(content_types, v) ? NULL : fail("invalid content type '%s'\n", v);
    return NULL;
}
