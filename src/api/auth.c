/* auth: token creation and checking (see auth.h). */
#include "api/auth.h"

#include "common/util.h"
#include "core/validate.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define KEY_NAME "api.token_key"
#define ID_BYTES 8
#define SECRET_BYTES 32
#define HASH_BYTES 32
#define PREFIX "pxd_"

static void to_hex(char *out, const unsigned char *p, size_t n)
{
    sodium_bin2hex(out, n * 2 + 1, p, n);
}

int auth_init(store *st, unsigned char key[AUTH_KEY_BYTES], char *err, size_t errlen)
{
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialise");
        return -1;
    }
    unsigned char fresh[AUTH_KEY_BYTES];
    char fresh_hex[AUTH_KEY_BYTES * 2 + 1], hex[AUTH_KEY_BYTES * 2 + 1];
    randombytes_buf(fresh, sizeof fresh);
    to_hex(fresh_hex, fresh, sizeof fresh);
    sodium_memzero(fresh, sizeof fresh);
    struct store_error se;
    int rc = store_kv_setdefault(st, KEY_NAME, fresh_hex, hex, sizeof hex, &se);
    sodium_memzero(fresh_hex, sizeof fresh_hex);
    if (rc) {
        snprintf(err, errlen, "token key: %s", se.message);
        return -1;
    }
    size_t n = 0;
    if (sodium_hex2bin(key, AUTH_KEY_BYTES, hex, strlen(hex), NULL, &n, NULL) != 0 ||
        n != AUTH_KEY_BYTES) {
        snprintf(err, errlen, "token key in the database is malformed");
        return -1;
    }
    sodium_memzero(hex, sizeof hex);
    return 0;
}

/* The keyed hash covers the whole token text, id included, so a secret
 * cannot be moved to another record. */
static void token_hash(const unsigned char key[AUTH_KEY_BYTES], const char *token,
                       unsigned char out[HASH_BYTES])
{
    crypto_generichash(out, HASH_BYTES, (const unsigned char *)token, strlen(token), key,
                       AUTH_KEY_BYTES);
}

int auth_token_create(store *st, const unsigned char key[AUTH_KEY_BYTES], const char *owner,
                      const char *role, char token[AUTH_TOKEN_MAX], struct token_rec *rec,
                      char *err, size_t errlen)
{
    char msg[256];
    if (!validate_owner(owner, msg, sizeof msg)) {
        snprintf(err, errlen, "owner: %s", msg);
        return -1;
    }
    if (strcmp(role, "admin") != 0 && strcmp(role, "user") != 0) {
        snprintf(err, errlen, "role: must be admin or user, not '%s'", role);
        return -1;
    }
    unsigned char id[ID_BYTES], secret[SECRET_BYTES], h[HASH_BYTES];
    char id_hex[ID_BYTES * 2 + 1], secret_hex[SECRET_BYTES * 2 + 1];
    randombytes_buf(id, sizeof id);
    randombytes_buf(secret, sizeof secret);
    to_hex(id_hex, id, sizeof id);
    to_hex(secret_hex, secret, sizeof secret);
    snprintf(token, AUTH_TOKEN_MAX, PREFIX "%s_%s", id_hex, secret_hex);
    token_hash(key, token, h);
    memset(rec, 0, sizeof *rec);
    snprintf(rec->id, sizeof rec->id, "%s", id_hex);
    snprintf(rec->owner, sizeof rec->owner, "%s", owner);
    snprintf(rec->role, sizeof rec->role, "%s", role);
    to_hex(rec->hash, h, sizeof h);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(secret_hex, sizeof secret_hex);
    struct store_error se;
    if (store_token_insert(st, rec, &se)) {
        sodium_memzero(token, AUTH_TOKEN_MAX);
        snprintf(err, errlen, "storing the token: %s", se.message);
        return -1;
    }
    return 0;
}

/* "pxd_" + 16 hex + "_" + 64 hex; anything else is refused before the store
 * is asked. */
static bool parse_token(const char *t, char id[ID_BYTES * 2 + 1])
{
    size_t idlen = ID_BYTES * 2, slen = SECRET_BYTES * 2, plen = strlen(PREFIX);
    if (strlen(t) != plen + idlen + 1 + slen || !str_starts(t, PREFIX) || t[plen + idlen] != '_')
        return false;
    for (size_t i = plen; t[i]; i++)
        if (i != plen + idlen && !strchr("0123456789abcdef", t[i]))
            return false;
    memcpy(id, t + plen, idlen);
    id[idlen] = '\0';
    return true;
}

int auth_check(store *st, const unsigned char key[AUTH_KEY_BYTES], const char *header,
               struct auth_identity *who)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0)
        return -1;
    const char *t = header + 7;
    while (*t == ' ')
        t++;
    char id[ID_BYTES * 2 + 1];
    if (!parse_token(t, id))
        return -1;
    struct token_rec rec;
    struct store_error se;
    int rc = store_token_get(st, id, &rec, &se);
    if (rc == STORE_E_NOTFOUND)
        return -1;
    if (rc)
        return -2;
    unsigned char h[HASH_BYTES], want[HASH_BYTES];
    size_t n = 0;
    token_hash(key, t, h);
    if (rec.revoked ||
        sodium_hex2bin(want, sizeof want, rec.hash, strlen(rec.hash), NULL, &n, NULL) != 0 ||
        n != HASH_BYTES || sodium_memcmp(h, want, HASH_BYTES) != 0)
        return -1;
    memset(who, 0, sizeof *who);
    snprintf(who->owner, sizeof who->owner, "%s", rec.owner);
    snprintf(who->token_id, sizeof who->token_id, "%s", rec.id);
    who->admin = strcmp(rec.role, "admin") == 0;
    return 0;
}
