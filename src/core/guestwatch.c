/* guestwatch: ask a started VM's guest agent until it answers (guestwatch.h). */
#include "core/guestwatch.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/util.h"
#include "common/xalloc.h"
#include "core/core_int.h"
#include "core/events.h"
#include "core/fleet.h"
#include "pve/pve_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A job finishing now is read by a look up to this long after its end
 * (its commit, another instance's clock a little behind ours) */
#define LOOK_BACK_MS (10 * 60 * 1000)

/* A ping slower than this (or one that got no answer) leaves the node's
 * other guests for the next round: a node that hangs costs a round one
 * call's timeout, not one per VM on it, and the other nodes' guests are
 * not told silent for the wait */
#define SLOW_PING_MS 2000
#define SLOW_NODES_MAX 64

/* What this process knows of a pending check between two looks. */
struct entry {
    char job[40];
    int64_t next;   /* mono ms of the next ask */
    char last[200]; /* why the agent has not answered yet */
    bool seen;      /* still pending at the last look */
    bool asked;     /* this process asked (or looked at) it once: a check
                     * past its wait that a restarted proxd finds is asked
                     * once before it is told silent */
};

struct guestwatch {
    struct core *k;
    pthread_t thread;
    bool up;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a poke, or stop */
    bool poked, stop;  /* under mu */
    bool pending;      /* the last look found checks pending (the thread's own) */
    int64_t since;     /* the pending list's read: jobs ended after this (unix ms) */
    struct entry *e;
    size_t n;
    char slow[SLOW_NODES_MAX][64]; /* this round's nodes not asked again */
    int nslow;
};

static bool is_slow(const struct guestwatch *w, const char *node)
{
    for (int i = 0; i < w->nslow; i++)
        if (strcmp(w->slow[i], node) == 0)
            return true;
    return false;
}

static void mark_slow(struct guestwatch *w, const char *node)
{
    if (w->nslow < SLOW_NODES_MAX && !is_slow(w, node))
        snprintf(w->slow[w->nslow++], sizeof w->slow[0], "%s", node);
}

struct guestwatch *guestwatch_new(struct core *k)
{
    struct guestwatch *w = xcalloc(1, sizeof *w);
    w->k = k;
    w->e = xcalloc(GUESTWATCH_BATCH, sizeof *w->e);
    pthread_mutex_init(&w->mu, NULL);
    cond_init_mono(&w->cv);
    return w;
}

void guestwatch_free(struct guestwatch *w)
{
    if (!w)
        return;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->e);
    free(w);
}

static struct entry *entry_of(struct guestwatch *w, const char *job)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->e[i].job, job) == 0)
            return &w->e[i];
    if (w->n == GUESTWATCH_BATCH) /* cannot be: one per pending check looked at */
        return NULL;
    struct entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->job, sizeof e->job, "%s", job);
    return e;
}

/* The job's outcome, with its event unless skipped (data taken). A
 * conflict is another instance's outcome first: as good as ours. */
static void close_check(struct guestwatch *w, const struct guest_check *g, const char *node,
                        enum guest_state state, const char *detail)
{
    struct core *k = w->k;
    struct store_event ev;
    memset(&ev, 0, sizeof ev);
    double after_s = (double)(wall_ms() - g->finished_at) / 1000.0;
    if (state != GUEST_SKIPPED) {
        snprintf(ev.type, sizeof ev.type, "%s",
                 state == GUEST_READY ? EV_VM_GUEST_READY : EV_VM_GUEST_SILENT);
        snprintf(ev.owner, sizeof ev.owner, "%s", g->owner);
        snprintf(ev.node, sizeof ev.node, "%s", node);
        snprintf(ev.job, sizeof ev.job, "%s", g->job);
        ev.vmid = g->vmid;
        ev.data = json_pack("{s:s,s:f}", "kind", g->kind, "after_s", after_s);
        if (state == GUEST_SILENT)
            json_object_set_new(ev.data, "reason", json_string(detail));
    }
    struct store_error se;
    int rc =
        store_guest_close(k->st, g->job, state, detail, state == GUEST_SKIPPED ? NULL : &ev, &se);
    json_decref(ev.data);
    if (rc && rc != STORE_E_CONFLICT) {
        log_warn("guest", "job=%s vmid=%d outcome not written (asked again): %s", g->job, g->vmid,
                 se.message);
        return;
    }
    if (rc == STORE_OK)
        log_info("guest", "job=%s kind=%s vmid=%d guest %s after %.1f s%s%s", g->job, g->kind,
                 g->vmid, guest_state_name(state), after_s, *detail ? ": " : "", detail);
}

/* Is a failed ping an answer that will not change (not "not yet")? */
static const char *final_refusal(int prc, const struct pve_error *pe)
{
    if (prc == PVE_E_OTHER && strstr(pe->message, "No QEMU guest agent configured"))
        return "no QEMU guest agent is configured for the VM (agent: 1 in its options)";
    if (prc == PVE_E_PERMISSION)
        return "proxd's Proxmox credentials may not ask the guest agent";
    return NULL;
}

static void look_one(struct guestwatch *w, const struct guest_check *g)
{
    struct core *k = w->k;
    if (k->cfg->guest_wait_s == 0) {
        close_check(w, g, "", GUEST_SKIPPED, "guest checks are off (guest_wait = 0)");
        return;
    }
    struct entry *e = entry_of(w, g->job);
    if (!e)
        return;
    e->seen = true;
    if (e->next > mono_ms())
        return;
    struct vm_rec r;
    struct store_error se;
    int src = store_vm_get(k->st, g->vmid, &r, &se);
    if (src == STORE_E_NOTFOUND) {
        close_check(w, g, "", GUEST_SKIPPED, "the VM has no live record");
        return;
    }
    if (src) {
        snprintf(e->last, sizeof e->last, "record not read: %.170s", se.message);
        goto later;
    }
    char detail[320];
    if (strcmp(r.power, "stopped") == 0) {
        /* a reinstall leaves a stopped VM stopped; the others start it */
        if (strcmp(g->kind, "reinstall") == 0)
            close_check(w, g, r.node, GUEST_SKIPPED, "the VM was not left running");
        else
            close_check(w, g, r.node, GUEST_SILENT,
                        "the VM stopped before its guest agent answered");
        goto out;
    }
    pve_client *pc = fleet_client(k->fl, r.node);
    if (strcmp(r.power, "paused") == 0) {
        snprintf(e->last, sizeof e->last, "the VM is paused");
        e->asked = true; /* as good as an answer: its agent does not run */
    } else if (!pc || !fleet_node_up(k->fl, r.node)) {
        snprintf(e->last, sizeof e->last, "node %s is down", r.node);
        e->asked = true;
    } else if (is_slow(w, r.node)) {
        snprintf(e->last, sizeof e->last, "node %s was slow to answer", r.node);
        e->next = 0; /* asked first thing next round */
        goto out;
    } else {
        struct pve_error pe;
        int64_t t0 = mono_ms();
        int prc = pve_agent_ping(pc, r.node, r.vmid, &pe);
        e->asked = true;
        if (prc == PVE_E_NETWORK || prc == PVE_E_TIMEOUT || mono_ms() - t0 > SLOW_PING_MS)
            mark_slow(w, r.node);
        const char *final = prc ? final_refusal(prc, &pe) : NULL;
        if (prc == 0) {
            close_check(w, g, r.node, GUEST_READY, "");
            goto out;
        }
        if (final) {
            snprintf(detail, sizeof detail, "%s (%.200s)", final, pe.message);
            close_check(w, g, r.node, GUEST_SILENT, detail);
            goto out;
        }
        snprintf(e->last, sizeof e->last, "%.190s", pe.message);
    }
later:
    /* a check this process has not asked yet (a restart found it past its
     * wait, its node down or slow since) is asked before it is told silent */
    if (e->asked && wall_ms() > g->finished_at + (int64_t)k->cfg->guest_wait_s * 1000) {
        snprintf(detail, sizeof detail, "the guest agent did not answer within %d s (last: %s)",
                 k->cfg->guest_wait_s, e->last);
        close_check(w, g, src ? "" : r.node, GUEST_SILENT, detail);
    } else {
        int64_t every = GUESTWATCH_EVERY_MS + (wall_ms() - g->finished_at) / 4;
        e->next = mono_ms() + (every < GUESTWATCH_EVERY_MAX_MS ? every : GUESTWATCH_EVERY_MAX_MS);
    }
out:
    if (src == STORE_OK)
        vm_rec_release(&r);
}

static void look(struct guestwatch *w)
{
    struct guest_check *g = NULL;
    size_t n = 0;
    struct store_error se;
    int64_t now = wall_ms();
    if (store_guest_pending(w->k->st, w->since, GUESTWATCH_BATCH, &g, &n, &se)) {
        log_debug("guest", "pending checks not read: %s", se.message);
        return;
    }
    for (size_t i = 0; i < w->n; i++)
        w->e[i].seen = false;
    w->nslow = 0;
    for (size_t i = 0; i < n && !core_stopping(w->k); i++)
        look_one(w, &g[i]);
    /* what is not pending any more (an outcome written, by us or another
     * instance) is forgotten */
    size_t kept = 0;
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].seen)
            w->e[kept++] = w->e[i];
    w->n = kept;
    /* the next read starts at the oldest still pending, or a little before
     * now: the index walks only the jobs ended since */
    w->since = n ? g[0].finished_at - 1 : now - LOOK_BACK_MS;
    w->pending = n > 0;
    free(g);
}

/* Looks every second while checks are pending; else it sleeps until a job
 * of this process that may start a VM ends (guestwatch_poke), or
 * GUESTWATCH_IDLE_MS for another instance's: an idle daemon does not read
 * the store every second (api/test_idle_cost). */
static void *watch_main(void *arg)
{
    mem_thread_name("guestwatch");
    struct guestwatch *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->poked) {
            struct timespec ts =
                deadline_in_ms(w->pending ? GUESTWATCH_LOOK_MS : GUESTWATCH_IDLE_MS);
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            if (w->stop)
                break;
        }
        w->poked = false;
        pthread_mutex_unlock(&w->mu);
        if (fleet_ready(w->k->fl)) /* a node is down only once it was read */
            look(w);
        else
            w->pending = true; /* looked at again in a second */
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void guestwatch_poke(struct guestwatch *w)
{
    pthread_mutex_lock(&w->mu);
    w->poked = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int guestwatch_start(struct guestwatch *w)
{
    w->pending = true; /* a first look at once: checks left by a stop */
    w->poked = true;
    if (mem_thread_start(&w->thread, watch_main, w) != 0)
        return -1;
    w->up = true;
    return 0;
}

void guestwatch_stop(struct guestwatch *w)
{
    if (!w || !w->up)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->up = false;
}
