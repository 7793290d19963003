/* vmdisks: where a VM's disks are, for a move to another node, and how big
 * they are. A migration leaves a volume on a shared storage (Ceph, NFS: the
 * cluster marks it shared) where it is, and copies every other one to the
 * target's storage (QemuMigrate.pm); what lands on the target is decided by
 * each volume's own storage, not by the storage the node is configured
 * with. A volume's size is its config line's size= (PVE writes it on every
 * disk it makes, grows or attaches); a line without one (a config edited by
 * hand, an old one) is sized by its storage's content listing, as PVE's
 * volume_size_info does; a volume the listing does not show cannot be
 * sized, and the caller refuses what it would have reserved for it rather
 * than count it as nothing. */
#include "core/core_int.h"

#include <stdio.h>
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

/* The volume's size: size=, else its storage's listing on `node`. */
static int volume_size(pve_client *pc, const char *node, int vmid, const char *storage,
                       const char *volid, int64_t have, int64_t *size, struct pve_error *e)
{
    *size = have;
    if (have > 0)
        return 0;
    int rc = pve_volume_size(pc, node, storage, vmid, volid, size, e);
    if (rc) {
        char why[sizeof e->message];
        snprintf(why, sizeof why, "%s", e->message);
        snprintf(e->message, sizeof e->message,
                 "the size of volume %.200s is not in its config and cannot be read from its "
                 "storage: %.600s",
                 volid, why);
    }
    return rc;
}

int core_disk_placement(pve_client *pc, const char *node, int vmid, const struct pve_vm_config *cfg,
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
        int64_t size = 0;
        if ((rc = volume_size(pc, node, vmid, v[i].storage, v[i].volid, v[i].size, &size, e)))
            break;
        /* a storage the node does not list (disabled): not known to be
         * shared, so the volume counts where it would land */
        const struct pve_storage *s = find_storage(st, ns, v[i].storage);
        if (s && s->shared) {
            out->shared += size;
            out->nshared++;
        } else {
            out->local += size;
            out->nlocal++;
            const char *base = strstr(v[i].volid, ":base-");
            if (!out->linked[0] && base && strchr(base, '/'))
                snprintf(out->linked, sizeof out->linked, "%s", v[i].volid);
        }
    }
    free(st);
    free(v);
    return rc;
}

int core_boot_size(pve_client *pc, const char *node, int vmid, const struct pve_vm_config *cfg,
                   int64_t *size, struct pve_error *e)
{
    *size = cfg->bootdisk_size;
    if (*size > 0 || !cfg->bootdisk_volume[0] || !cfg->bootdisk_storage[0])
        return 0;
    return volume_size(pc, node, vmid, cfg->bootdisk_storage, cfg->bootdisk_volume, 0, size, e);
}
