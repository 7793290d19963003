/* hmac: see hmac.h. */
#include "common/hmac.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>

void hmac_sha256_hex(const void *key, size_t klen, const void *msg, size_t mlen, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, msg, mlen, md, &n) || n != 32)
        abort(); /* SHA-256 is always there: this is a broken library */
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}
