/* hmac: HMAC-SHA256 (OpenSSL), for webhook signatures.
 * Thread-safe; no allocation is kept. */
#ifndef COMMON_HMAC_H
#define COMMON_HMAC_H

#include <stddef.h>

/* The lower-case hex of HMAC-SHA256(key, msg) into out (64 digits + NUL). */
void hmac_sha256_hex(const void *key, size_t klen, const void *msg, size_t mlen, char out[65]);

#endif
