/* api_agent: the QEMU guest agent's view of a guest's network, read through
 * PVE (agent/network-get-interfaces). The answer comes from inside the
 * guest, so it is bounded (PVE_AGENT_ANSWER_MAX) and every field is cut to
 * its slot; NICs and addresses beyond the caller's slots are left out. */
#include "common/buf.h"
#include "common/util.h"
#include "pve/api_json.h"
#include "pve/pve_api.h"
#include "pve/pve_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int agent_err(struct pve_error *err, enum pve_class cls, const char *msg)
{
    if (err) {
        memset(err, 0, sizeof *err);
        err->cls = cls;
        snprintf(err->message, sizeof err->message, "%s", msg);
    }
    return cls;
}

bool pve_agent_not_running(const struct pve_error *e)
{
    return e && e->cls == PVE_E_OTHER && strstr(e->message, "agent is not running") != NULL;
}

static void nic_fill(json_t *nic, struct pve_agent_nic *o)
{
    memset(o, 0, sizeof *o);
    pj_str(o->name, sizeof o->name, nic, "name");
    pj_str(o->mac, sizeof o->mac, nic, "hardware-address");
    for (char *p = o->mac; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(nic, "ip-addresses"), i, a)
    {
        if (o->naddrs == PVE_AGENT_ADDRS)
            break;
        const char *ip = json_string_value(json_object_get(a, "ip-address"));
        if (!ip || strlen(ip) >= sizeof o->addrs[0].ip)
            continue;
        snprintf(o->addrs[o->naddrs].ip, sizeof o->addrs[0].ip, "%s", ip);
        o->addrs[o->naddrs++].prefix = (int)pj_int(a, "prefix", -1);
    }
}

int pve_agent_interfaces(pve_client *c, const char *node, int vmid, struct pve_agent_nic *out,
                         int max, int *n, struct pve_error *err)
{
    char path[256];
    *n = 0;
    if (pve_path(path, sizeof path, "/nodes/%s/qemu/%d/agent/network-get-interfaces", node, vmid))
        return agent_err(err, PVE_E_INVALID, "bad node name");
    struct buf raw;
    int rc = pve_call_raw(c, "GET", path, NULL, PVE_CALL_NORETRY, &raw, err);
    if (rc)
        goto out;
    if (raw.len > PVE_AGENT_ANSWER_MAX) {
        rc = agent_err(err, PVE_E_INVALID, "guest agent answer larger than 256 KiB");
        goto out;
    }
    json_error_t je;
    json_t *env = json_loadb(raw.data, raw.len, 0, &je);
    json_t *list = json_object_get(json_object_get(env, "data"), "result");
    if (!json_is_array(list)) {
        json_decref(env);
        rc = agent_err(err, PVE_E_INVALID, "unexpected guest agent answer");
        goto out;
    }
    size_t i;
    json_t *nic;
    json_array_foreach(list, i, nic)
    {
        if (*n == max)
            break;
        if (json_is_object(nic))
            nic_fill(nic, &out[(*n)++]);
    }
    json_decref(env);
out:
    buf_release(&raw);
    return rc;
}

int pve_agent_ping(pve_client *c, const char *node, int vmid, struct pve_error *err)
{
    char path[256];
    if (pve_path(path, sizeof path, "/nodes/%s/qemu/%d/agent/ping", node, vmid))
        return agent_err(err, PVE_E_INVALID, "bad node name");
    /* asked again by the caller's schedule, not by the client's retries */
    struct buf raw;
    int rc = pve_call_raw(c, "POST", path, NULL, PVE_CALL_NORETRY, &raw, err);
    if (rc == 0)
        buf_release(&raw);
    return rc;
}
