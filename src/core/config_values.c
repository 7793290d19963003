/* config_values: the parsers and validators of single configuration values
 * (see config_int.h): each says in `why` what is wrong with a value, and
 * config.c adds the file, line, section and key. */
#include "core/config_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

bool cfg_copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

bool cfg_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *out = strcasecmp(v, yes[i]) == 0;
            return true;
        }
    }
    return false;
}

/* A whole unsigned decimal, surrounding blanks allowed ("1000 - 1999"). */
static bool parse_uint(const char *s, size_t len, int64_t *out)
{
    char tmp[32];
    while (len && isspace((unsigned char)*s))
        s++, len--;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (!len || len >= sizeof tmp || !isdigit((unsigned char)*s))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return parse_i64(tmp, out);
}

/* "lo-hi", each in [min, max], lo <= hi. */
bool cfg_parse_range(const char *v, int64_t min, int64_t max, int *lo, int *hi, char *why, size_t n)
{
    const char *dash = strchr(v, '-');
    int64_t a, b;
    if (!dash || !parse_uint(v, (size_t)(dash - v), &a) ||
        !parse_uint(dash + 1, strlen(dash + 1), &b)) {
        snprintf(why, n, "'%s' is not a range lo-hi (e.g. 1000-1999)", v);
        return false;
    }
    if (a < min || b > max || a > b) {
        snprintf(why, n, "'%s': need %lld <= lo <= hi <= %lld", v, (long long)min, (long long)max);
        return false;
    }
    *lo = (int)a;
    *hi = (int)b;
    return true;
}

static bool host_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

/* "host:port", "[v6]:port", and without the port when `port` is given (the
 * port to assume). Writes the normalised "host:port" to out. */
bool cfg_parse_hostport(const char *v, int port, char *out, size_t outlen, char *why, size_t n)
{
    const char *h = v, *hend, *colon;
    if (*v == '[') {
        hend = strchr(v, ']');
        if (!hend || hend == v + 1 ||
            strspn(v + 1, "0123456789abcdefABCDEF:.") != (size_t)(hend - v - 1)) {
            snprintf(why, n, "'%s': bad IPv6 address", v);
            return false;
        }
        hend++;
        colon = *hend == ':' ? hend : NULL;
        if (*hend && !colon)
            goto bad;
    } else {
        colon = strchr(v, ':');
        hend = colon ? colon : v + strlen(v);
        if (hend == h || *h == '-')
            goto bad;
        for (const char *p = h; p < hend; p++)
            if (!host_char(*p))
                goto bad;
    }
    if (colon) {
        int64_t p;
        if (!parse_i64(colon + 1, &p) || p < 1 || p > 65535 || !isdigit((unsigned char)colon[1]))
            goto bad;
        port = (int)p;
    } else if (!port) {
        goto bad;
    }
    if (snprintf(out, outlen, "%.*s:%d", (int)(hend - h), h, port) >= (int)outlen) {
        snprintf(why, n, "'%s' is too long (at most %zu characters)", v, outlen - 1);
        return false;
    }
    return true;
bad:
    snprintf(why, n, "'%s' is not host:port (e.g. 10.0.0.1:%d)", v, PVE_PORT);
    return false;
}

/* ---- validators ------------------------------------------------------- */

bool cfg_v_listen(const char *v, char *why, size_t n)
{
    char tmp[160];
    return cfg_parse_hostport(v, 0, tmp, sizeof tmp, why, n);
}

bool cfg_v_database(const char *v, char *why, size_t n)
{
    if ((str_starts(v, "sqlite:") && v[7]) || str_starts(v, "postgresql://") ||
        str_starts(v, "postgres://"))
        return true;
    char shown[512];
    url_redact(v, shown, sizeof shown);
    snprintf(why, n, "'%s': expected sqlite:PATH or postgresql://...", shown);
    return false;
}

bool cfg_v_log_format(const char *v, char *why, size_t n)
{
    if (strcmp(v, "text") == 0 || strcmp(v, "json") == 0)
        return true;
    snprintf(why, n, "'%s': expected text or json", v);
    return false;
}

bool cfg_v_clone(const char *v, char *why, size_t n)
{
    if (strcmp(v, "full") == 0 || strcmp(v, "linked") == 0)
        return true;
    snprintf(why, n, "'%s': expected full or linked", v);
    return false;
}

bool cfg_v_log_level(const char *v, char *why, size_t n)
{
    if (log_level_parse(v) >= 0)
        return true;
    snprintf(why, n, "'%s': expected debug, info, warn, error or off", v);
    return false;
}

/* Only the characters PVE accepts in a tag, or tagging VMs would fail. */
bool cfg_v_drift(const char *v, char *why, size_t n)
{
    if (strcmp(v, "report") == 0 || strcmp(v, "restore") == 0 || strcmp(v, "adopt") == 0)
        return true;
    snprintf(why, n, "'%s': expected report, restore or adopt", v);
    return false;
}

bool cfg_v_tag(const char *v, char *why, size_t n)
{
    bool ok = isalnum((unsigned char)v[0]) || v[0] == '_';
    for (const char *p = v + 1; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || strchr("_-+.", *p);
    if (!ok)
        snprintf(why, n, "'%s': PVE tags are letters, digits and _ - + . only", v);
    return ok;
}

static bool no_space(const char *s)
{
    for (; *s; s++)
        if (isspace((unsigned char)*s))
            return false;
    return true;
}

/* user@realm!tokenid=secret; the secret is never echoed. */
bool cfg_v_token(const char *v, char *why, size_t n)
{
    const char *at = strchr(v, '@'), *bang = strchr(v, '!'), *eq = strchr(v, '=');
    if (at && bang && eq && at > v && bang > at + 1 && eq > bang + 1 && eq[1] && no_space(v))
        return true;
    snprintf(why, n, "not an API token of the form user@realm!tokenid=secret");
    return false;
}

bool cfg_v_user(const char *v, char *why, size_t n)
{
    const char *at = strchr(v, '@');
    if (at && at > v && at[1] && no_space(v) && !strchr(v, '!'))
        return true;
    snprintf(why, n, "'%s': expected user@realm (e.g. root@pam)", v);
    return false;
}

/* SHA-256 as the PVE GUI shows it: 32 hex pairs joined by ':'. */
bool cfg_v_fingerprint(const char *v, char *why, size_t n)
{
    bool ok = strlen(v) == 32 * 3 - 1;
    for (size_t i = 0; ok && v[i]; i++)
        ok = i % 3 == 2 ? v[i] == ':' : isxdigit((unsigned char)v[i]) != 0;
    if (!ok)
        snprintf(why, n, "'%s': expected the SHA-256 fingerprint, 32 hex pairs AA:BB:...", v);
    return ok;
}

/* PVE's storage ID format (pve-storage-id). */
bool cfg_v_storage(const char *v, char *why, size_t n)
{
    size_t len = strlen(v);
    bool ok = islower((unsigned char)v[0]) &&
              (islower((unsigned char)v[len - 1]) || isdigit((unsigned char)v[len - 1]));
    for (size_t i = 0; ok && i < len; i++)
        ok = islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || strchr("-_.", v[i]);
    if (!ok)
        snprintf(why, n, "'%s' is not a PVE storage ID (e.g. local-lvm)", v);
    return ok;
}

/* [node] state: "cordoned" keeps creations off the node from the start
 * (as POST /v1/nodes/{node}/cordon does at run time). */
bool cfg_v_node_state(const char *v, char *why, size_t n)
{
    if (strcmp(v, "active") == 0 || strcmp(v, "cordoned") == 0)
        return true;
    snprintf(why, n, "'%s': must be active or cordoned", v);
    return false;
}

bool cfg_v_cluster(const char *v, char *why, size_t n)
{
    bool ok = true;
    for (const char *p = v; ok && *p; p++)
        ok = host_char(*p);
    if (!ok)
        snprintf(why, n, "'%s': use letters, digits and . - _ only", v);
    return ok;
}

/* The scheme and host[:port] of a URL into out: no user part, path or
 * query. "" when it has no "scheme://" (a short run of letters). */
static void url_origin(const char *v, char *out, size_t n)
{
    size_t sl = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    out[0] = '\0';
    if (sl == 0 || sl > 10 || !str_starts(v + sl, "://"))
        return;
    const char *auth = v + sl + 3, *host = auth;
    size_t alen = strcspn(auth, "/?#");
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@') /* the last one: a password may hold one */
            host = auth + i + 1;
    size_t hlen = strcspn(host, "/?#");
    snprintf(out, n, "%.*s%.*s", (int)(sl + 3), v, (int)(hlen > 100 ? 100 : hlen), host);
}

/* A webhook's receiver: http(s)://, no spaces or control characters. A
 * refused one is shown as its scheme and host only: a receiver's token may
 * be its user part ("https://TOKEN@host"), its password, its path
 * ("/services/T0/B0/SECRET") or its query, and the message goes to
 * --check-config's output and the journal. */
bool cfg_v_url(const char *v, char *why, size_t n)
{
    bool http = str_starts(v, "http://") || str_starts(v, "https://");
    size_t bad = 0;
    while (v[bad] && isgraph((unsigned char)v[bad]))
        bad++;
    if (http && !v[bad])
        return true;
    char origin[128], at[96] = "";
    url_origin(v, origin, sizeof origin);
    if (http)
        snprintf(at, sizeof at, " (a space or control character at character %zu)", bad + 1);
    snprintf(why, n,
             "'%s...': an http:// or https:// URL without spaces%s; only its scheme and host are "
             "shown: the rest may hold a secret",
             origin, at);
    return false;
}

bool cfg_v_secret(const char *v, char *why, size_t n)
{
    bool ok = strlen(v) >= 16;
    if (!ok)
        snprintf(why, n, "at least 16 characters (it signs every delivery)");
    return ok;
}

/* "vm.created, vm.*, node.down" or "*": letters, '.', '_', a final '*'. */
bool cfg_v_event_types(const char *v, char *why, size_t n)
{
    bool ok = true;
    size_t len = 0;
    for (const char *p = v; ok; p++) {
        if (*p == ',' || *p == '\0') {
            ok = len > 0;
            len = 0;
            if (!*p)
                break;
            continue;
        }
        if (*p == ' ' && len == 0)
            continue;
        ok = islower((unsigned char)*p) || *p == '.' || *p == '_' ||
             (*p == '*' && (p[1] == ',' || p[1] == '\0' || p[1] == ' '));
        len += *p != ' ';
    }
    if (!ok)
        snprintf(why, n, "'%.200s': a comma-separated list of event types (vm.created, vm.*, *)",
                 v);
    return ok;
}
