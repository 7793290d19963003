/* vmdisks: where a VM's disks are, for a move to another node. A
 * migration leaves a volume on a shared storage (Ceph, NFS: the cluster
 * marks it shared) where it is, and copies every other one to the target's
 * storage (QemuMigrate.pm); what lands on the target is decided by each
 * volume's own storage, not by the storage the node is configured with. */
#include "core/core_int.h"

#include <stdlib.h>
#include <string.h>

static const struct pve_storage *find_storage(const struct pve_storage *st, size_t n,
                                              const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(st[i].storage, id) == 0)
            return &st[i];
    return NULL;
}

int core_disk_placement(pve_client *pc, const char *node, const struct pve_vm_config *cfg,
                        struct disk_placement *out, struct pve_error *e)
{
    memset(out, 0, sizeof *out);
    struct pve_volume *v = NULL;
    size_t nv = 0;
    pve_vm_config_volumes(cfg, &v, &nv);
    struct pve_storage *st = NULL;
    size_t ns = 0;
    int rc = nv ? pve_storage_list(pc, node, NULL, &st, &ns, e) : 0;
    for (size_t i = 0; rc == 0 && i < nv; i++) {
        /* a storage the node does not list (disabled): not known to be
         * shared, so the volume counts where it would land */
        const struct pve_storage *s = find_storage(st, ns, v[i].storage);
        if (s && s->shared) {
            out->shared += v[i].size;
            out->nshared++;
        } else {
            out->local += v[i].size;
            out->nlocal++;
        }
    }
    free(st);
    free(v);
    return rc;
}
