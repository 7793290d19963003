/* netconf: a netN value as qemu-server stores it. Every write of netN goes
 * through parse_net + print_net (API2/Qemu.pm), so the config holds the
 * canonical form: "<model>=<MAC>" first (a missing MAC generated), then
 * the other keys sorted by name ("virtio=BC:24:11:..,bridge=vmbr0,
 * firewall=1,tag=5"), whatever order the client wrote. A clone always
 * gets a new MAC. */
#ifndef SIM_NETCONF_H
#define SIM_NETCONF_H

#include <stdbool.h>

#include "sim/sim.h"

/* The canonical value (caller frees), or NULL when `net` names no model
 * (the schema check refused such values already; the caller keeps it). */
char *netconf_canonical(struct sim *s, const char *net, bool new_mac);

#endif
