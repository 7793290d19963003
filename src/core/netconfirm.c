/* netconfirm: poll the guest agent until it shows the recorded address. */
#include "core/netconfirm.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/fleet.h"
#include "pve/pve_api.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TRIED_MAX 65536

struct item {
    int64_t vm_id;
    int64_t until, next; /* mono ms */
    char last[200];      /* why it is not confirmed yet */
};

struct netconfirm {
    struct core *k;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an ask, or stop */
    struct item *q;
    size_t nq;
    int64_t *tried; /* vm_ids polled to the end without a confirmation */
    size_t ntried;
    pthread_t thread;
    bool started, stop;
};

struct netconfirm *netconfirm_new(struct core *k)
{
    struct netconfirm *c = xcalloc(1, sizeof *c);
    c->k = k;
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->cv);
    c->q = xcalloc(NETCONFIRM_MAX, sizeof *c->q);
    return c;
}

void netconfirm_free(struct netconfirm *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->q);
    free(c->tried);
    free(c);
}

void netconfirm_ask(struct netconfirm *c, int64_t vm_id, bool again)
{
    pthread_mutex_lock(&c->mu);
    bool known = false;
    for (size_t i = 0; again && i < c->ntried; i++)
        if (c->tried[i] == vm_id)
            c->tried[i--] = c->tried[--c->ntried];
    for (size_t i = 0; i < c->nq && !known; i++)
        known = c->q[i].vm_id == vm_id;
    for (size_t i = 0; i < c->ntried && !known; i++)
        known = c->tried[i] == vm_id;
    if (!known && c->started && c->nq < NETCONFIRM_MAX) {
        int64_t now = mono_ms();
        c->q[c->nq++] =
            (struct item){.vm_id = vm_id, .until = now + NETCONFIRM_FOR_MS, .next = now};
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* The recorded addresses of ipconfig0 in the agent's text form. */
static int wanted(const char *ipconfig0, char out[2][IPPOOL_ADDRSTRLEN])
{
    struct ippool_addr a[2];
    int p[2], n = 0;
    if (ippool_ipconfig_parse(ipconfig0, &a[0], &p[0], &a[1], &p[1]) != IPPOOL_OK)
        return 0;
    for (int i = 0; i < 2; i++)
        if (a[i].family)
            ippool_addr_format(&a[i], out[n++]);
    return n;
}

/* Does the agent's address text s name address w (compared as addresses,
 * so "2001:DB8::5" and "2001:db8::5" agree)? */
static bool same_addr(const char *s, const char *w)
{
    struct ippool_addr x, y;
    return ippool_addr_parse(s, &x) == IPPOOL_OK && ippool_addr_parse(w, &y) == IPPOOL_OK &&
           ippool_addr_cmp(&x, &y) == 0;
}

static json_t *seen_json(const struct pve_agent_nic *nic)
{
    json_t *addrs = json_array();
    for (int i = 0; i < nic->naddrs; i++)
        json_array_append_new(addrs, json_pack("{s:s,s:i}", "address", nic->addrs[i].ip, "prefix",
                                               nic->addrs[i].prefix));
    return json_pack("{s:s,s:s,s:o}", "interface", nic->name, "mac", nic->mac, "addresses", addrs);
}

/* Is a failed agent call an answer (the agent is off or absent, the VM or
 * our right to it gone, the call refused), not just no answer yet (a 500
 * of another kind, a 596, a timeout, a lock: looked at again)? */
static bool agent_answered(int prc, const struct pve_error *pe)
{
    return prc == PVE_E_NOTFOUND || prc == PVE_E_PERMISSION || prc == PVE_E_INVALID ||
           (prc == PVE_E_OTHER && strstr(pe->message, "No QEMU guest agent configured"));
}

/* One look: 1 confirmed (recorded), 0 not yet (it->last says why), -1 give
 * up (no network, not proxd's any more, agent off). A read that failed is
 * "not yet", never "give up": the store's or Proxmox's. */
static int look(struct core *k, struct item *it)
{
    struct vm_rec r;
    struct store_net net;
    struct store_error se;
    int src = store_vm_get_id(k->st, it->vm_id, &r, &se);
    if (src != STORE_OK) {
        snprintf(it->last, sizeof it->last, "record not read: %.180s", se.message);
        return src == STORE_E_NOTFOUND ? -1 : 0;
    }
    int rc = -1;
    if (r.state != VMS_ENABLED || !r.node[0])
        goto out;
    src = store_vm_net_get(k->st, r.id, &net, &se);
    if (src != STORE_OK) {
        snprintf(it->last, sizeof it->last, "network not read: %.180s", se.message);
        rc = src == STORE_E_NOTFOUND ? -1 : 0;
        goto out;
    }
    if (net.seen_at) {
        rc = 1; /* another proxd confirmed it */
        goto out;
    }
    pve_client *pc = fleet_client(k->fl, r.node);
    if (!pc || !fleet_node_up(k->fl, r.node)) {
        snprintf(it->last, sizeof it->last, "node %s is down", r.node);
        rc = 0;
        goto out;
    }
    struct pve_agent_nic nics[PVE_AGENT_NICS];
    int n = 0;
    struct pve_error pe;
    int prc = pve_agent_interfaces(pc, r.node, r.vmid, nics, PVE_AGENT_NICS, &n, &pe);
    if (prc) {
        snprintf(it->last, sizeof it->last, "%.190s", pe.message);
        /* "not running": booting, or paused; "No QEMU guest agent
         * configured": nothing to wait for; a failed call: no answer */
        rc = agent_answered(prc, &pe) ? -1 : 0;
        if (rc < 0)
            log_info("netconfirm", "vmid=%d address not confirmed: %s", r.vmid, pe.message);
        goto out;
    }
    char want[2][IPPOOL_ADDRSTRLEN];
    int nw = wanted(net.ipconfig0, want);
    rc = 0;
    snprintf(it->last, sizeof it->last, "no interface with MAC %s", net.mac);
    for (int i = 0; i < n; i++) {
        if (strcasecmp(nics[i].mac, net.mac) != 0)
            continue;
        int found = 0;
        for (int w = 0; w < nw; w++)
            for (int a = 0; a < nics[i].naddrs; a++)
                if (same_addr(nics[i].addrs[a].ip, want[w])) {
                    found++;
                    break;
                }
        if (found < nw) {
            snprintf(it->last, sizeof it->last, "interface %s does not show %s%s%s yet",
                     nics[i].name, want[0], nw > 1 ? " and " : "", nw > 1 ? want[1] : "");
            break;
        }
        json_t *seen = seen_json(&nics[i]);
        if (store_vm_net_seen(k->st, r.id, seen, &se) == STORE_OK) {
            log_info("netconfirm", "vmid=%d address confirmed by the guest agent (%s)", r.vmid,
                     nics[i].name);
            rc = 1;
        } else {
            snprintf(it->last, sizeof it->last, "not recorded: %.180s", se.message);
        }
        json_decref(seen);
        break;
    }
out:
    vm_rec_release(&r);
    return rc;
}

static void give_up(struct netconfirm *c, const struct item *it, bool remember)
{
    if (remember && c->ntried < TRIED_MAX) {
        c->tried = xrealloc(c->tried, (c->ntried + 1) * sizeof *c->tried);
        c->tried[c->ntried++] = it->vm_id;
    }
}

static void *confirm_main(void *arg)
{
    mem_thread_name("netconfirm");
    struct netconfirm *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t now = mono_ms(), soonest = now + 60000;
        size_t due = c->nq;
        for (size_t i = 0; i < c->nq; i++) {
            if (c->q[i].next <= now && due == c->nq)
                due = i;
            if (c->q[i].next < soonest)
                soonest = c->q[i].next;
        }
        if (due == c->nq) {
            struct timespec ts = deadline_in_ms(soonest - now);
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
            continue;
        }
        struct item it = c->q[due];
        pthread_mutex_unlock(&c->mu); /* the agent may take its time */
        int rc = look(c->k, &it);
        pthread_mutex_lock(&c->mu);
        size_t i = 0;
        while (i < c->nq && c->q[i].vm_id != it.vm_id)
            i++;
        if (i == c->nq)
            continue;
        if (rc == 0 && mono_ms() + NETCONFIRM_EVERY_MS <= it.until) {
            c->q[i] = it;
            c->q[i].next = mono_ms() + NETCONFIRM_EVERY_MS;
            continue;
        }
        if (rc == 0)
            log_info("netconfirm",
                     "record %lld: address not confirmed within %d s (%s); the VM "
                     "is not failed for it",
                     (long long)it.vm_id, NETCONFIRM_FOR_MS / 1000, it.last);
        give_up(c, &it, rc <= 0);
        c->q[i] = c->q[--c->nq];
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int netconfirm_start(struct netconfirm *c)
{
    if (mem_thread_start(&c->thread, confirm_main, c) != 0)
        return -1;
    pthread_mutex_lock(&c->mu);
    c->started = true;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void netconfirm_stop(struct netconfirm *c)
{
    pthread_mutex_lock(&c->mu);
    bool started = c->started;
    pthread_mutex_unlock(&c->mu);
    if (!started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_mutex_lock(&c->mu);
    c->started = false;
    pthread_mutex_unlock(&c->mu);
}
