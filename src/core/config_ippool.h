/* config_ippool: the [ippool NAME] sections and [os] ippools of proxd.conf,
 * for config.c only. The setters parse one value into a struct cfg_ippool
 * (or cfg_os); cfgpool_check() does what needs the whole file — preparing
 * each pool's plan, overlapping pools, node and cluster names, the pools an
 * OS names — and reports through the callbacks, which know the lines. */
#ifndef CORE_CONFIG_IPPOOL_H
#define CORE_CONFIG_IPPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* Setters: base is the section's struct; false with the reason in why. */
bool cfgpool_set_cidr(void *base, const char *v, char *why, size_t n);
bool cfgpool_set_gateway(void *base, const char *v, char *why, size_t n);
bool cfgpool_set_ranges(void *base, const char *v, char *why, size_t n);
bool cfgpool_set_reserved(void *base, const char *v, char *why, size_t n);
bool cfgpool_set_dns(void *base, const char *v, char *why, size_t n);
bool cfgpool_check_searchdomain(const char *v, char *why, size_t n);
bool cfgpool_check_bridge(const char *v, char *why, size_t n);

enum cfgpool_sect { CFGPOOL_POOL, CFGPOOL_OS };

struct cfgpool_ctx {
    void *st;
    /* the line where `key` was set in pool/OS idx, 0 if it was not */
    int (*line)(void *st, enum cfgpool_sect s, int idx, const char *key);
    /* one error about `key` of pool/OS idx (at that key's line, else the
     * section's) */
    void (*err)(void *st, enum cfgpool_sect s, int idx, const char *key, const char *msg);
};

void cfgpool_check(struct proxd_config *c, const struct cfgpool_ctx *x);

#endif
