/* guestnet: the ipconfigN a running guest booted with (see guestnet.h). */
#include "sim/guestnet.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

/* The remembered values belong to the boot that started at boot_net_at. */
static bool current(const struct sim_vm *vm)
{
    return vm->boot_net && vm->power != VM_STOPPED && vm->boot_net_at == vm->started;
}

void guestnet_keep(struct sim_vm *vm)
{
    if (vm->power == VM_STOPPED || current(vm))
        return;
    json_t *keep = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(vm->conf, k, v)
    {
        if (str_starts(k, "ipconfig"))
            json_object_set(keep, k, v);
    }
    json_decref(vm->boot_net);
    vm->boot_net = keep;
    vm->boot_net_at = vm->started;
}

const char *guestnet_ipconfig(const struct sim_vm *vm, int idx)
{
    char key[16];
    snprintf(key, sizeof key, "ipconfig%d", idx);
    return json_string_value(json_object_get(current(vm) ? vm->boot_net : vm->conf, key));
}

void guestnet_free(struct sim_vm *vm)
{
    json_decref(vm->boot_net);
    vm->boot_net = NULL;
}
