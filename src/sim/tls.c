/* tls: self-signed node certificates and their fingerprints (see httpd.h).
 *
 * A fresh PVE node serves a certificate for its own name; pvesim makes one per
 * simulated node at start-up, so generation must not depend on any file. */
#include "sim/httpd.h"

#include "common/xalloc.h"

#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

enum { CERT_DAYS = 3650, RSA_BITS = 2048 };

/* The most recent OpenSSL error as a new string, for *err. */
static char *ssl_errstr(const char *what)
{
    char msg[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, msg, sizeof msg);
    ERR_clear_error();
    return xasprintf("%s: %s", what, msg);
}

/* Copy a memory BIO's contents into a new NUL-terminated string. */
static char *bio_string(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    return xstrndup(p ? p : "", n > 0 ? (size_t)n : 0);
}

static int add_dns(GENERAL_NAMES *gens, const char *name)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    if (!g || !s || !ASN1_STRING_set(s, name, (int)strlen(name))) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(s);
        return -1;
    }
    GENERAL_NAME_set0_value(g, GEN_DNS, s);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

static int add_ip(GENERAL_NAMES *gens, const char *ip)
{
    ASN1_OCTET_STRING *s = a2i_IPADDRESS(ip);
    GENERAL_NAME *g = GENERAL_NAME_new();
    if (!g || !s) {
        GENERAL_NAME_free(g);
        ASN1_OCTET_STRING_free(s);
        return -1;
    }
    GENERAL_NAME_set0_value(g, GEN_IPADD, s);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

/* SANs are built as GENERAL_NAMEs rather than from a config string so that a
 * CN with commas or colons cannot inject extra names. */
static int add_san(X509 *x, const char *cn)
{
    int rc = -1;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    if (!gens)
        goto out;
    if (add_dns(gens, "localhost") || (strcmp(cn, "localhost") != 0 && add_dns(gens, cn)) ||
        add_ip(gens, "127.0.0.1") || add_ip(gens, "::1"))
        goto out;
    if (!X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT))
        goto out;
    rc = 0;
out:
    GENERAL_NAMES_free(gens);
    return rc;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A random positive 63-bit serial, as openssl req -x509 does. */
static int set_serial(X509 *x)
{
    unsigned char r[8];
    if (RAND_bytes(r, sizeof r) != 1)
        return -1;
    r[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(r, sizeof r, NULL);
    int rc = -1;
    if (bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        rc = 0;
    BN_free(bn);
    return rc;
}

int tls_selfsigned(const char *cn, char **cert_pem, char **key_pem, char **err)
{
    int rc = -1;
    EVP_PKEY *pkey = NULL;
    X509 *x = NULL;
    BIO *cb = NULL, *kb = NULL;
    const char *what = "certificate generation";

    *cert_pem = *key_pem = NULL;
    if (!cn || !*cn || strlen(cn) > 64) {
        *err = xstrdup("certificate CN must be 1..64 characters");
        return -1;
    }
    what = "RSA key generation";
    if (!(pkey = EVP_RSA_gen(RSA_BITS)))
        goto fail;
    what = "certificate construction";
    if (!(x = X509_new()) || !X509_set_version(x, 2) || set_serial(x) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) || !X509_set_pubkey(x, pkey))
        goto fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_issuer_name(x, name))
        goto fail;
    if (add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
        add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
        add_ext(x, NID_ext_key_usage, "serverAuth") ||
        add_ext(x, NID_subject_key_identifier, "hash") || add_san(x, cn))
        goto fail;
    what = "certificate signing";
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto fail;
    what = "PEM encoding";
    if (!(cb = BIO_new(BIO_s_mem())) || !(kb = BIO_new(BIO_s_mem())) ||
        !PEM_write_bio_X509(cb, x) ||
        !PEM_write_bio_PrivateKey(kb, pkey, NULL, NULL, 0, NULL, NULL))
        goto fail;
    *cert_pem = bio_string(cb);
    *key_pem = bio_string(kb);
    rc = 0;
    goto out;
fail:
    *err = ssl_errstr(what);
out:
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

char *tls_fingerprint(const char *cert_pem)
{
    char *out = NULL;
    if (!cert_pem)
        return NULL;
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!x || !X509_digest(x, EVP_sha256(), md, &n) || n == 0)
        goto out;
    static const char hex[] = "0123456789ABCDEF";
    out = xmalloc((size_t)n * 3);
    for (unsigned int i = 0; i < n; i++) {
        out[i * 3] = hex[md[i] >> 4];
        out[i * 3 + 1] = hex[md[i] & 15];
        out[i * 3 + 2] = i + 1 < n ? ':' : '\0';
    }
out:
    ERR_clear_error();
    X509_free(x);
    BIO_free(b);
    return out;
}
