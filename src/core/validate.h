/* validate: checks on what users ask for, before anything is recorded.
 * Every refusal names the field and says what is allowed, e.g.
 * "name: must be a DNS label (letters, digits, hyphens; 1-63 characters, not
 * starting or ending with a hyphen)". Pure functions, thread-safe. */
#ifndef CORE_VALIDATE_H
#define CORE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* An address a creation asks for (admins only): `address` from `pool`. */
struct vm_request_addr {
    char pool[32];
    char address[48];
};

struct vm_request {
    char os[32];
    char name[64];
    int cores;
    int64_t memory_mb;
    int64_t disk_gb;
    char *ssh_keys; /* newline-separated OpenSSH public keys, owned; may be NULL */
    char owner[64];
    /* the pools to take addresses from; pools_given false: the OS's */
    bool pools_given;
    int npools;
    char pools[CFG_OS_POOLS][32];
    int naddrs;
    struct vm_request_addr addrs[CFG_OS_POOLS];
};

void vm_request_release(struct vm_request *r);

/* Each returns true when valid; otherwise false with a message in msg. */
bool validate_name(const struct proxd_config *c, const char *name, char *msg, size_t len);
bool validate_owner(const char *owner, char *msg, size_t len);
/* An Idempotency-Key: 1 to VALIDATE_IDEM_KEY_MAX printable ASCII
 * characters, no spaces (the API's header and a batch line's key alike). */
#define VALIDATE_IDEM_KEY_MAX 128
bool validate_idem_key(const char *key);
/* The pools of a valid request (its own, or its OS's) into out; how many. */
int validate_pools(const struct proxd_config *c, const struct vm_request *r,
                   const struct cfg_ippool *out[CFG_OS_POOLS]);
bool validate_request(const struct proxd_config *c, const struct vm_request *r, char *field,
                      size_t flen, char *msg, size_t len);
bool validate_cores(const struct proxd_config *c, int cores, char *msg, size_t len);
bool validate_memory(const struct proxd_config *c, int64_t mb, char *msg, size_t len);
bool validate_disk(const struct proxd_config *c, int64_t gb, char *msg, size_t len);

#endif
