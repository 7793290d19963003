#include "common/sshkey.h"
#include "common/xalloc.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct keytype {
    const char *name;
    int fields; /* length-prefixed fields after the type name */
};

static const struct keytype types[] = {
    {"ssh-rsa", 2},             /* e, n */
    {"ssh-ed25519", 1},         /* 32-byte key */
    {"ssh-dss", 4},             /* p, q, g, y */
    {"ecdsa-sha2-nistp256", 2}, /* curve, point */
    {"ecdsa-sha2-nistp384", 2},
    {"ecdsa-sha2-nistp521", 2},
    {"sk-ssh-ed25519@openssh.com", 2},         /* key, application */
    {"sk-ecdsa-sha2-nistp256@openssh.com", 3}, /* curve, point, application */
    {NULL, 0},
};

static bool b64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
    if (n == 0 || n % 4 != 0 || n > 65536)
        return false;
    unsigned char *buf = xmalloc(n);
    int r = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n);
    if (r < 0) {
        free(buf);
        return false;
    }
    size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    *out = buf;
    *outlen = (size_t)r - pad;
    return true;
}

/* Read one uint32-length-prefixed string at *off. */
static bool take_string(const unsigned char *b, size_t blen, size_t *off, size_t *len)
{
    if (blen - *off < 4)
        return false;
    uint32_t l = (uint32_t)b[*off] << 24 | (uint32_t)b[*off + 1] << 16 |
                 (uint32_t)b[*off + 2] << 8 | b[*off + 3];
    if (l > blen - *off - 4)
        return false;
    *len = l;
    *off += 4 + l;
    return true;
}

bool sshkey_valid(const char *line, size_t n)
{
    size_t tl = 0;
    while (tl < n && line[tl] != ' ')
        tl++;
    const struct keytype *t = NULL;
    for (int i = 0; types[i].name && !t; i++)
        if (strlen(types[i].name) == tl && strncmp(types[i].name, line, tl) == 0)
            t = &types[i];
    if (!t || tl >= n)
        return false;
    const char *b = line + tl + 1;
    size_t bl = 0;
    while (b + bl < line + n && b[bl] != ' ')
        bl++;
    unsigned char *blob = NULL;
    size_t blen = 0, off = 0, len = 0;
    if (!b64_decode(b, bl, &blob, &blen))
        return false;
    bool ok = take_string(blob, blen, &off, &len) && len == tl && memcmp(blob + 4, line, tl) == 0;
    for (int f = 0; ok && f < t->fields; f++) {
        ok = take_string(blob, blen, &off, &len) && len > 0;
        if (ok && f == 0 && strstr(t->name, "ed25519"))
            ok = len == 32;
    }
    ok = ok && off == blen;
    free(blob);
    return ok;
}

bool sshkeys_valid(const char *keys, int *bad_line)
{
    int lineno = 0;
    for (const char *p = keys; *p;) {
        size_t n = strcspn(p, "\n");
        size_t m = n;
        lineno++;
        while (m > 0 && (p[m - 1] == '\r' || p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m > 0 && !sshkey_valid(p, m)) {
            if (bad_line)
                *bad_line = lineno;
            return false;
        }
        p += n;
        if (*p)
            p++;
    }
    return true;
}
