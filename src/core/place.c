/* place: expected-finish-time ordering of candidate nodes; see place.h. */
#include "core/place.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

#define EWMA_NEW 0.3
#define TIE 0.10 /* finish times closer than 10% of one clone count as equal */

struct pnode {
    double bw;       /* bytes/s, EWMA; 0 = unknown */
    int64_t queued;  /* bytes placed and not copied yet */
    int active;      /* copies running */
    double inv_area; /* integral of 1/active over time, seconds */
    int64_t last_ms; /* when active last changed */
};

struct pjob {
    char id[40];
    int node;
    int64_t bytes;
    bool copying;
    double inv_at_begin; /* the node's inv_area when the copy began */
};

struct place {
    pthread_mutex_t mu;
    int nnodes;
    struct pnode *nodes;
    struct pjob *jobs;
    size_t njobs, cap;
};

place *place_new(int nnodes)
{
    place *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->nnodes = nnodes;
    p->nodes = xcalloc(nnodes > 0 ? (size_t)nnodes : 1, sizeof *p->nodes);
    return p;
}

void place_free(place *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->nodes);
    free(p->jobs);
    free(p);
}

/* Bring the node's 1/active integral up to now. */
static void advance(struct pnode *n, int64_t now)
{
    if (now <= n->last_ms)
        return;
    if (n->active > 0)
        n->inv_area += (double)(now - n->last_ms) / 1000.0 / n->active;
    n->last_ms = now;
}

static struct pjob *job_find(place *p, const char *id)
{
    for (size_t i = 0; i < p->njobs; i++)
        if (strcmp(p->jobs[i].id, id) == 0)
            return &p->jobs[i];
    return NULL;
}

/* Remove a job; a running copy stops counting in its node's share. */
static void job_drop(place *p, struct pjob *j, int64_t now)
{
    struct pnode *n = &p->nodes[j->node];
    if (j->copying) {
        advance(n, now);
        n->active--;
    }
    n->queued -= j->bytes;
    if (n->queued < 0)
        n->queued = 0;
    *j = p->jobs[--p->njobs];
}

static double mean_bw(const place *p)
{
    double sum = 0;
    int known = 0;
    for (int i = 0; i < p->nnodes; i++)
        if (p->nodes[i].bw > 0) {
            sum += p->nodes[i].bw;
            known++;
        }
    return known ? sum / known : 1.0;
}

void place_order(place *p, struct place_cand *c, int n)
{
    double eta[64], own[64];
    if (n > 64)
        n = 64;
    pthread_mutex_lock(&p->mu);
    double dflt = mean_bw(p);
    for (int i = 0; i < n; i++) {
        const struct pnode *pn =
            c[i].node >= 0 && c[i].node < p->nnodes ? &p->nodes[c[i].node] : NULL;
        double bw = pn && pn->bw > 0 ? pn->bw : dflt;
        eta[i] = ((double)(pn ? pn->queued : 0) + (double)c[i].bytes) / bw;
        own[i] = (double)c[i].bytes / bw;
    }
    pthread_mutex_unlock(&p->mu);
    for (int a = 1; a < n; a++) /* insertion sort: at most 64 nodes */
        for (int b = a; b > 0; b--) {
            double gap = eta[b] > eta[b - 1] ? eta[b] - eta[b - 1] : eta[b - 1] - eta[b];
            bool tie = gap <= TIE * (own[b] < own[b - 1] ? own[b] : own[b - 1]);
            bool before = tie ? c[b].free_mem > c[b - 1].free_mem : eta[b] < eta[b - 1];
            if (!before)
                break;
            struct place_cand tc = c[b];
            c[b] = c[b - 1];
            c[b - 1] = tc;
            double te = eta[b], to = own[b];
            eta[b] = eta[b - 1];
            eta[b - 1] = te;
            own[b] = own[b - 1];
            own[b - 1] = to;
        }
}

void place_assign(place *p, const char *job, int node, int64_t bytes)
{
    if (node < 0 || node >= p->nnodes)
        return;
    pthread_mutex_lock(&p->mu);
    struct pjob *j = job_find(p, job);
    if (j)
        job_drop(p, j, 0);
    if (p->njobs == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->jobs = xrealloc(p->jobs, p->cap * sizeof *p->jobs);
    }
    j = &p->jobs[p->njobs++];
    memset(j, 0, sizeof *j);
    strncpy(j->id, job, sizeof j->id - 1);
    j->node = node;
    j->bytes = bytes;
    p->nodes[node].queued += bytes;
    pthread_mutex_unlock(&p->mu);
}

void place_copy_begin(place *p, const char *job, int64_t now)
{
    pthread_mutex_lock(&p->mu);
    struct pjob *j = job_find(p, job);
    if (j && !j->copying) {
        struct pnode *n = &p->nodes[j->node];
        advance(n, now);
        n->active++;
        j->copying = true;
        j->inv_at_begin = n->inv_area;
    }
    pthread_mutex_unlock(&p->mu);
}

void place_copy_end(place *p, const char *job, bool ok, int64_t now)
{
    pthread_mutex_lock(&p->mu);
    struct pjob *j = job_find(p, job);
    if (j && j->copying) {
        struct pnode *n = &p->nodes[j->node];
        advance(n, now);
        double share_s = n->inv_area - j->inv_at_begin;
        if (ok && share_s > 0.001 && j->bytes > 0) {
            double sample = (double)j->bytes / share_s;
            n->bw = n->bw > 0 ? EWMA_NEW * sample + (1 - EWMA_NEW) * n->bw : sample;
        }
    }
    if (j)
        job_drop(p, j, now);
    pthread_mutex_unlock(&p->mu);
}

void place_forget(place *p, const char *job, int64_t now)
{
    pthread_mutex_lock(&p->mu);
    struct pjob *j = job_find(p, job);
    if (j)
        job_drop(p, j, now);
    pthread_mutex_unlock(&p->mu);
}

double place_bandwidth(place *p, int node)
{
    pthread_mutex_lock(&p->mu);
    double bw = node >= 0 && node < p->nnodes ? p->nodes[node].bw : 0;
    pthread_mutex_unlock(&p->mu);
    return bw;
}

int64_t place_queued(place *p, int node)
{
    pthread_mutex_lock(&p->mu);
    int64_t q = node >= 0 && node < p->nnodes ? p->nodes[node].queued : 0;
    pthread_mutex_unlock(&p->mu);
    return q;
}
