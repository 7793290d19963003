#include "sim/auth.h"
#include "common/buf.h"
#include "common/util.h"
#include "common/xalloc.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_USERS 16
#define MAX_TOKENS 32
#define GRACE 300 /* tickets minted up to 5 min in the future are accepted */

struct user {
    char id[128];
    char password[256];
};

struct token {
    char id[128];
    char secret[128];
};

struct auth {
    EVP_PKEY *key;
    unsigned char csrf_secret[32];
    int lifetime;
    struct user users[MAX_USERS];
    int nusers;
    struct token tokens[MAX_TOKENS];
    int ntokens;
};

#define KEY_MAX_BITS 4096 /* sign_b64's and verify_b64's buffers hold its signatures */

/* The ticket key from PEM text: an RSA private key of 2048 to KEY_MAX_BITS
 * bits, or NULL. */
static EVP_PKEY *key_from_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (k && (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA || EVP_PKEY_get_bits(k) < 2048 ||
              EVP_PKEY_get_bits(k) > KEY_MAX_BITS)) {
        EVP_PKEY_free(k);
        k = NULL;
    }
    return k;
}

struct auth *auth_new(int ticket_lifetime, const char *key_pem)
{
    EVP_PKEY *key = NULL;
    if (key_pem) {
        if (!(key = key_from_pem(key_pem)))
            return NULL;
    } else {
        EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, NULL);
        if (!kc || EVP_PKEY_keygen_init(kc) <= 0 ||
            EVP_PKEY_CTX_set_rsa_keygen_bits(kc, 2048) <= 0 || EVP_PKEY_keygen(kc, &key) <= 0)
            abort();
        EVP_PKEY_CTX_free(kc);
    }
    struct auth *a = xcalloc(1, sizeof *a);
    a->key = key;
    a->lifetime = ticket_lifetime > 0 ? ticket_lifetime : 7200;
    if (RAND_bytes(a->csrf_secret, sizeof a->csrf_secret) != 1)
        abort();
    return a;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    EVP_PKEY_free(a->key);
    free(a);
}

void auth_add_user(struct auth *a, const char *userid, const char *password)
{
    if (a->nusers >= MAX_USERS)
        return;
    struct user *u = &a->users[a->nusers++];
    snprintf(u->id, sizeof u->id, "%s", userid);
    snprintf(u->password, sizeof u->password, "%s", password);
}

int auth_add_token(struct auth *a, const char *spec)
{
    const char *eq = strrchr(spec, '=');
    const char *bang = strchr(spec, '!');
    const char *at = strchr(spec, '@');
    if (!eq || !bang || !at || at > bang || bang > eq || a->ntokens >= MAX_TOKENS ||
        (size_t)(eq - spec) >= sizeof a->tokens[0].id)
        return -1;
    struct token *t = &a->tokens[a->ntokens++];
    snprintf(t->id, sizeof t->id, "%.*s", (int)(eq - spec), spec);
    snprintf(t->secret, sizeof t->secret, "%s", eq + 1);
    return 0;
}

static char *sign_b64(struct auth *a, const char *text)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[KEY_MAX_BITS / 8];
    size_t siglen = sizeof sig;
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, a->key) != 1 ||
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)text, strlen(text)) != 1)
        abort();
    EVP_MD_CTX_free(md);
    return b64_encode(sig, siglen);
}

static bool verify_b64(struct auth *a, const char *text, const char *b64)
{
    unsigned char sig[600];
    size_t l = strlen(b64);
    /* EVP_DecodeBlock writes 3 bytes per 4 characters before it can fail:
     * the length is checked first, as it bounds what lands in sig[] (800
     * characters: 600 bytes, a 4096-bit signature's 512 and more) */
    if (l == 0 || l > sizeof sig / 3 * 4)
        return false;
    int n = EVP_DecodeBlock(sig, (const unsigned char *)b64, (int)l);
    if (n <= 0)
        return false;
    /* EVP_DecodeBlock counts padding bytes as data; strip them */
    while (l > 0 && b64[l - 1] == '=') {
        n--;
        l--;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a->key) == 1 &&
              EVP_DigestVerify(md, sig, (size_t)n, (const unsigned char *)text, strlen(text)) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* user names in tickets have ':' percent-escaped */
static void escape_user(struct buf *b, const char *user)
{
    for (; *user; user++) {
        if (*user == ':')
            buf_adds(b, "%3A");
        else
            buf_addc(b, *user);
    }
}

char *auth_make_ticket(struct auth *a, const char *user, int64_t t)
{
    struct buf b = BUF_INIT(BUF_UNLIMITED);
    buf_adds(&b, "PVE:");
    escape_user(&b, user);
    buf_printf(&b, ":%08llX", (unsigned long long)t);
    char *sig = sign_b64(a, b.data);
    buf_printf(&b, "::%s", sig);
    free(sig);
    return buf_take(&b);
}

char *auth_make_csrf(struct auth *a, const char *user, int64_t t)
{
    char text[256];
    snprintf(text, sizeof text, "%08llX:%s", (unsigned long long)t, user);
    unsigned char mac[32];
    unsigned int maclen = sizeof mac;
    HMAC(EVP_sha256(), a->csrf_secret, sizeof a->csrf_secret, (unsigned char *)text, strlen(text),
         mac, &maclen);
    char *b64 = b64_encode(mac, maclen);
    b64[43] = '\0'; /* PVE strips the '=' padding */
    char *out = xasprintf("%08llX:%s", (unsigned long long)t, b64);
    free(b64);
    return out;
}

static bool time_ok(struct auth *a, int64_t t)
{
    int64_t age = wall_s() - t;
    return age >= -GRACE && age <= a->lifetime;
}

/* Verify a ticket; on success copy its user into user[]. */
static bool ticket_verify(struct auth *a, const char *ticket, char *user, size_t ulen)
{
    if (!str_starts(ticket, "PVE:") || strlen(ticket) > 2048)
        return false;
    const char *sep = strstr(ticket, "::");
    if (!sep)
        return false;
    char *text = xstrndup(ticket, (size_t)(sep - ticket));
    bool ok = false;
    const char *c2 = strrchr(text, ':'); /* before the time */
    if (!c2 || c2 - text < 5 || strlen(c2 + 1) != 8)
        goto out;
    char *end;
    int64_t t = (int64_t)strtoll(c2 + 1, &end, 16);
    if (*end || !time_ok(a, t) || !verify_b64(a, text, sep + 2))
        goto out;
    char *u = pct_decode(text + 4, (size_t)(c2 - text - 4), false, NULL);
    snprintf(user, ulen, "%s", u);
    free(u);
    ok = true;
out:
    free(text);
    return ok;
}

static bool csrf_verify(struct auth *a, const char *user, const char *tok)
{
    if (!tok || strlen(tok) != 8 + 1 + 43)
        return false;
    char *end;
    int64_t t = (int64_t)strtoll(tok, &end, 16);
    if (end != tok + 8 || *end != ':' || !time_ok(a, t))
        return false;
    char *expect = auth_make_csrf(a, user, t);
    bool ok = CRYPTO_memcmp(expect, tok, strlen(expect)) == 0;
    free(expect);
    return ok;
}

static struct user *user_find(struct auth *a, const char *id)
{
    for (int i = 0; i < a->nusers; i++)
        if (strcmp(a->users[i].id, id) == 0)
            return &a->users[i];
    return NULL;
}

int auth_login(struct auth *a, const char *username, const char *realm, const char *password,
               char **userid, char **ticket, char **csrf)
{
    char id[160];
    if (realm && *realm && !strchr(username, '@'))
        snprintf(id, sizeof id, "%s@%s", username, realm);
    else
        snprintf(id, sizeof id, "%s", username);
    struct user *u = user_find(a, id);
    if (!u)
        return -1;
    char tuser[160];
    bool ok = strcmp(u->password, password) == 0;
    if (!ok && str_starts(password, "PVE:") && ticket_verify(a, password, tuser, sizeof tuser))
        ok = strcmp(tuser, id) == 0 || strcmp(tuser, "root@pam") == 0;
    if (!ok)
        return -1;
    int64_t now = wall_s();
    *userid = xstrdup(id);
    *ticket = auth_make_ticket(a, id, now);
    *csrf = auth_make_csrf(a, id, now);
    return 0;
}

/* PVE's extract_auth_value: `key` at the start or after white space (\s:
 * not after ';'), then '=' or one space, the value up to ';', then
 * percent-decoded. Its callers test the value for Perl truth, so an empty
 * value or "0" is none (NULL): the next source is tried. */
static char *extract(const char *hdr, const char *key)
{
    if (!hdr)
        return NULL;
    size_t kl = strlen(key);
    for (const char *p = hdr; (p = strstr(p, key)) != NULL; p++) {
        if (p != hdr && !strchr(" \t\n\r\f\v", p[-1]))
            continue;
        const char *v = p + kl;
        if (*v != '=' && *v != ' ')
            continue;
        v++;
        char *val = pct_decode(v, strcspn(v, ";"), false, NULL);
        if (!*val || strcmp(val, "0") == 0)
            FREE_AND_NULL(val);
        return val;
    }
    return NULL;
}

/* The ticket a request presents: the cookie's, else the Authorization
 * header's (NULL: none). */
static char *ticket_of(const char *cookie, const char *authorization)
{
    char *t = extract(cookie, "PVEAuthCookie");
    return t ? t : extract(authorization, "PVEAuthCookie");
}

bool auth_token_presented(const char *cookie, const char *authorization)
{
    char *t = ticket_of(cookie, authorization);
    char *tok = t ? NULL : extract(authorization, "PVEAPIToken");
    bool r = tok != NULL;
    free(t);
    free(tok);
    return r;
}

static int fail(char *buf, int len, const char *fmt, const char *arg)
{
    snprintf(buf, (size_t)len, fmt, arg ? arg : "");
    return -1;
}

static int token_check(struct auth *a, const char *value, struct auth_who *who, char *rb, int rl)
{
    const char *eq = strrchr(value, '=');
    if (!eq)
        return fail(rb, rl, "no tokenid specified", NULL);
    char id[160];
    snprintf(id, sizeof id, "%.*s", (int)(eq - value), value);
    const char *bang = strchr(id, '!');
    if (!bang || !strchr(id, '@') || strchr(id, '@') > bang)
        return fail(rb, rl,
                    "'%s' is not a valid token ID - not able to split into user and token parts",
                    id);
    for (int i = 0; i < a->ntokens; i++) {
        if (strcmp(a->tokens[i].id, id) != 0)
            continue;
        if (strcmp(a->tokens[i].secret, eq + 1) != 0)
            return fail(rb, rl, "invalid token value!", NULL);
        snprintf(who->user, sizeof who->user, "%.*s", (int)(bang - id) & 127, id);
        snprintf(who->tokenid, sizeof who->tokenid, "%.127s", id);
        who->ticket = false;
        return 0;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "no such token '%s' for user '%.*s'", bang + 1, (int)(bang - id), id);
    return fail(rb, rl, "%s", msg);
}

int auth_check(struct auth *a, const char *cookie, const char *authorization, const char *csrf,
               bool write, struct auth_who *who, char *rb, int rl)
{
    memset(who, 0, sizeof *who);
    char *ticket = ticket_of(cookie, authorization);
    int rc = -1;
    if (ticket) {
        if (!ticket_verify(a, ticket, who->user, sizeof who->user)) {
            rc = fail(rb, rl, "permission denied - invalid PVE ticket", NULL);
            goto out;
        }
        who->ticket = true;
        if (write && !csrf_verify(a, who->user, csrf)) {
            rc = fail(rb, rl, "Permission denied - invalid csrf token", NULL);
            goto out;
        }
        rc = 0;
        goto out;
    }
    char *tok = extract(authorization, "PVEAPIToken");
    if (tok) {
        rc = token_check(a, tok, who, rb, rl);
        free(tok);
        goto out;
    }
    rc = fail(rb, rl, "No ticket", NULL);
out:
    free(ticket);
    return rc;
}
