/* auth: API tokens.
 *
 * A token is "pxd_<id>_<secret>": <id> (16 hex digits) finds the record,
 * <secret> is 32 random bytes in hex. The store keeps only a keyed BLAKE2b
 * hash of the whole token, with a server key generated once and kept in the
 * store (so every proxd sharing the database agrees on it). Checking a token
 * costs one indexed read and one BLAKE2b: no password hashing per request.
 *
 * Thread-safe once auth_init has run. */
#ifndef API_AUTH_H
#define API_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "store/store.h"

#define AUTH_KEY_BYTES 32
#define AUTH_TOKEN_MAX 128

struct auth_identity {
    char owner[64];
    bool admin;
    char token_id[32];
};

/* sodium_init and the server key (created in the store on first use). */
int auth_init(store *st, unsigned char key[AUTH_KEY_BYTES], char *err, size_t errlen);

/* Make a token for owner with role "admin" or "user"; the token text goes
 * to token[AUTH_TOKEN_MAX] (shown once, never stored). */
int auth_token_create(store *st, const unsigned char key[AUTH_KEY_BYTES], const char *owner,
                      const char *role, char token[AUTH_TOKEN_MAX], struct token_rec *rec,
                      char *err, size_t errlen);

/* Check "Bearer <token>" (the Authorization header's value, may be NULL).
 * 0 and *who filled when valid; -1 otherwise (missing, malformed, unknown,
 * revoked or wrong secret all look the same to the caller); -2 when the
 * store failed (the caller answers 503, not 401). */
int auth_check(store *st, const unsigned char key[AUTH_KEY_BYTES], const char *header,
               struct auth_identity *who);

#endif
