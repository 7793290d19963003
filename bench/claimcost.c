/* claimcost: what one job claim costs the store with many jobs queued
 * (bench/bench_claim.py runs it; not a test).
 *
 * Usage: bench_claimcost URL QUEUED CLAIMS
 * Makes QUEUED creation jobs (each its own VMID), all but the last ten of
 * one owner (a burst) and those ten of ten others, and 32 of the burst's
 * owner running under live leases (the workers busy with it); then times
 * CLAIMS claims, each a whole store_job_claim (its read look, its write
 * transaction, the commit). Each claimed job is put back in the queue
 * (not timed), so that every claim sees the same queue. Prints the
 * median and the 90th percentile in microseconds, and the first job
 * claimed (one of the other owners', as the owners take turns). */
#include "common/util.h"
#include "store/store.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int add(store *s, const char *owner, int i, int64_t created)
{
    struct job_rec j = {0};
    snprintf(j.id, sizeof j.id, "job-%06d", i);
    snprintf(j.kind, sizeof j.kind, "create");
    snprintf(j.owner, sizeof j.owner, "%s", owner);
    j.vmid = 100000 + i;
    j.created_at = created;
    j.request = json_pack("{s:i}", "n", i);
    struct store_error e;
    int rc = store_job_insert(s, &j, &e);
    if (rc)
        fprintf(stderr, "insert: %s\n", e.message);
    job_rec_release(&j);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: bench_claimcost URL QUEUED CLAIMS\n");
        return 2;
    }
    int queued = atoi(argv[2]), claims = atoi(argv[3]);
    struct store_error e;
    store *s = store_open(argv[1], &e);
    if (!s) {
        fprintf(stderr, "open: %s\n", e.message);
        return 1;
    }
    int64_t t0 = wall_ms() - 1000000;
    const int running = 32, others = 10;
    struct job_rec j;
    for (int i = 0; i < running + queued; i++) {
        char owner[16];
        snprintf(owner, sizeof owner, i >= running + queued - others ? "o%d" : "burst", i);
        if (add(s, owner, i, t0 + i))
            return 1;
        if (i < running) { /* the burst's first, running (the workers busy with it) */
            if (store_job_claim(s, "busy", 3600 * 1000, &j, &e)) {
                fprintf(stderr, "claim: %s\n", e.message);
                return 1;
            }
            job_rec_release(&j);
        }
    }
    int64_t *us = calloc((size_t)claims, sizeof *us);
    char first[128] = "";
    for (int i = 0; i < claims; i++) {
        int64_t a = now_us();
        int rc = store_job_claim(s, "bench", 60000, &j, &e);
        us[i] = now_us() - a;
        if (rc) {
            fprintf(stderr, "claim: %s\n", e.message);
            return 1;
        }
        if (!first[0])
            snprintf(first, sizeof first, "%s %s", j.id, j.owner);
        j.state = JOB_QUEUED;
        j.lease_owner[0] = '\0';
        j.lease_until = 0;
        if (store_job_update(s, &j, &e)) {
            fprintf(stderr, "requeue: %s\n", e.message);
            return 1;
        }
        job_rec_release(&j);
    }
    qsort(us, (size_t)claims, sizeof *us, cmp_i64);
    printf("queued %d: claim median %lld us, p90 %lld us (first claimed: %s)\n", queued,
           (long long)us[claims / 2], (long long)us[claims * 9 / 10], first);
    free(us);
    store_close(s);
    return 0;
}
