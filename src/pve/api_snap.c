/* api_snap: a VM's snapshots (list, create, delete, rollback). Every call
 * that starts a task is sent once (PVE_CALL_ONCE): a lost answer is
 * resolved by the caller from the snapshot list, never by sending the
 * call again blindly. */
#include "common/util.h"
#include "common/xalloc.h"
#include "pve/api_json.h"
#include "pve/pve_api.h"
#include "pve/pve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int invalid(struct pve_error *err, const char *msg)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = PVE_E_INVALID;
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return PVE_E_INVALID;
}

/* "/nodes/<node>/qemu/<vmid>/snapshot[/<name>][<tail>]" */
static int snap_path(char *out, size_t len, const char *node, int vmid, const char *name,
                     const char *tail)
{
    int rc = name ? pve_path(out, len, "/nodes/%s/qemu/%d/snapshot/%s", node, vmid, name)
                  : pve_path(out, len, "/nodes/%s/qemu/%d/snapshot", node, vmid);
    size_t l = strlen(out), tl = tail ? strlen(tail) : 0;
    if (rc || l + tl >= len)
        return -1;
    memcpy(out + l, tail ? tail : "", tl + 1);
    return 0;
}

static int task_call(pve_client *c, const char *method, const char *path, json_t *params,
                     char upid[PVE_UPID_MAX], struct pve_error *err)
{
    json_t *d = NULL;
    int rc = pve_call_ex(c, method, path, params, PVE_CALL_ONCE, &d, err);
    json_decref(params);
    if (rc)
        return rc;
    upid[0] = '\0';
    if (json_is_string(d))
        snprintf(upid, PVE_UPID_MAX, "%s", json_string_value(d));
    json_decref(d);
    return 0;
}

int pve_snap_list(pve_client *c, const char *node, int vmid, struct pve_snapshot **out, size_t *n,
                  struct pve_error *err)
{
    char path[256];
    *out = NULL;
    *n = 0;
    if (snap_path(path, sizeof path, node, vmid, NULL, NULL))
        return invalid(err, "bad node name");
    json_t *a = NULL, *e;
    size_t i;
    int rc = pve_call(c, "GET", path, NULL, &a, err);
    if (rc)
        return rc;
    if (!json_is_array(a) || json_array_size(a) > PVE_SNAP_LIST_MAX) {
        json_decref(a);
        return invalid(err, "unexpected snapshot list");
    }
    struct pve_snapshot *s = xcalloc(json_array_size(a) + 1, sizeof *s);
    size_t k = 0;
    json_array_foreach(a, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        if (!name || strcmp(name, "current") == 0)
            continue; /* "You are here!" */
        pj_str(s[k].name, sizeof s[k].name, e, "name");
        pj_str(s[k].description, sizeof s[k].description, e, "description");
        pj_str(s[k].parent, sizeof s[k].parent, e, "parent");
        pj_str(s[k].snapstate, sizeof s[k].snapstate, e, "snapstate");
        s[k].snaptime = pj_int(e, "snaptime", 0);
        s[k].vmstate = pj_bool(e, "vmstate");
        k++;
    }
    json_decref(a);
    *out = s;
    *n = k;
    return 0;
}

int pve_snap_create(pve_client *c, const char *node, int vmid, const char *name,
                    const char *description, bool vmstate, char upid[PVE_UPID_MAX],
                    struct pve_error *err)
{
    char path[256];
    if (snap_path(path, sizeof path, node, vmid, NULL, NULL))
        return invalid(err, "bad node name");
    json_t *p = json_pack("{s:s}", "snapname", name);
    if (description && *description)
        json_object_set_new(p, "description", json_string(description));
    if (vmstate)
        json_object_set_new(p, "vmstate", json_integer(1));
    return task_call(c, "POST", path, p, upid, err);
}

int pve_snap_delete(pve_client *c, const char *node, int vmid, const char *name, bool force,
                    char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    if (snap_path(path, sizeof path, node, vmid, name, NULL))
        return invalid(err, "bad node or snapshot name");
    json_t *p = force ? json_pack("{s:i}", "force", 1) : NULL;
    return task_call(c, "DELETE", path, p, upid, err);
}

/* A rollback whose answer is lost is answered by its qmrollback task: the
 * caller sent it again, and a first request still queued on a busy node
 * could be served after the job ended, rolling the VM back a second time
 * over whatever was done to it since. */
int pve_snap_rollback(pve_client *c, const char *node, int vmid, const char *name,
                      char upid[PVE_UPID_MAX], struct pve_error *err)
{
    char path[256];
    if (snap_path(path, sizeof path, node, vmid, name, "/rollback"))
        return invalid(err, "bad node or snapshot name");
    json_t *p = json_object();
    upid[0] = '\0';
    int rc = pve_once_call(c, "POST", path, p, node, "qmrollback", vmid, upid, err);
    json_decref(p);
    return rc;
}

bool pve_snap_rollback_task(pve_client *c, const char *node, int vmid, int64_t since,
                            char upid[PVE_UPID_MAX])
{
    return pve_task_of(c, node, "qmrollback", vmid, since * 1000, upid);
}
