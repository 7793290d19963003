/* callcost: the client CPU of one Proxmox API call (libpve, TLS, a warm
 * keep-alive connection) when calls come back to back and when they come
 * spaced out, as a daemon's do at real speed. Not a test: bench_callcost.py
 * runs it against pvesim and reports.
 *
 * usage: callcost HOST:PORT TOKEN PATH ROUNDS BURST GAP_MS [THREADS]
 * Each round sleeps GAP_MS, then sends BURST calls one after another on
 * each of THREADS threads (1), all woken at once, as job threads whose
 * looks are due at the same moment; prints the CPU time of the process
 * (user + system, the sleeps' wake-ups included) per call, in
 * microseconds, over all rounds (the first call, which opens the
 * connection, is not counted). */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/util.h"
#include "pve/pve.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int one(pve_client *c, const char *path)
{
    json_t *data = NULL;
    struct pve_error e;
    int rc = pve_call(c, "GET", path, NULL, &data, &e);
    if (rc)
        fprintf(stderr, "callcost: GET %s: %s\n", path, e.message);
    json_decref(data);
    return rc;
}

struct crew {
    pve_client *c;
    const char *path;
    int rounds, burst;
    pthread_barrier_t go, done;
    int failed;
};

static void *crew_main(void *arg)
{
    struct crew *w = arg;
    for (int r = 0; r < w->rounds; r++) {
        pthread_barrier_wait(&w->go);
        for (int i = 0; i < w->burst; i++)
            if (one(w->c, w->path) != 0)
                w->failed = 1;
        pthread_barrier_wait(&w->done);
    }
    return NULL;
}

/* THREADS threads, released together after each sleep */
static int run_crew(pve_client *c, const char *path, int rounds, int burst, long gap, int threads)
{
    struct crew w = {.c = c, .path = path, .rounds = rounds, .burst = burst};
    pthread_t t[64];
    pthread_barrier_init(&w.go, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&w.done, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, crew_main, &w);
    for (int r = 0; r < rounds; r++) {
        if (gap)
            sleep_ms(gap);
        pthread_barrier_wait(&w.go);
        pthread_barrier_wait(&w.done);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&w.go);
    pthread_barrier_destroy(&w.done);
    return w.failed;
}

int main(int argc, char **argv)
{
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: callcost HOST:PORT TOKEN PATH ROUNDS BURST GAP_MS [THREADS]\n");
        return 2;
    }
    const char *hosts[] = {argv[1]};
    const char *path = argv[3];
    int rounds = atoi(argv[4]), burst = atoi(argv[5]);
    long gap = atol(argv[6]);
    int threads = argc == 8 ? atoi(argv[7]) : 1;
    if (rounds < 1 || burst < 1 || gap < 0 || threads < 1 || threads > 64) {
        fprintf(stderr, "callcost: ROUNDS and BURST at least 1, GAP_MS at least 0, THREADS 1-64\n");
        return 2;
    }
    pve_global_init();
    struct pve_config cfg = {.hosts = hosts, .nhosts = 1, .token = argv[2], .insecure = true};
    struct pve_error e;
    pve_client *c = pve_client_new(&cfg, &e);
    int rc = 1;
    if (!c) {
        fprintf(stderr, "callcost: %s\n", e.message);
        return 1;
    }
    if (one(c, path) != 0)
        goto out;
    /* the sleeps count: waking up is part of what a spaced call costs */
    double t0 = cpu_s();
    if (threads > 1) {
        if (run_crew(c, path, rounds, burst, gap, threads) != 0)
            goto out;
        printf("%.1f\n", (cpu_s() - t0) / (rounds * burst * threads) * 1e6);
        rc = 0;
        goto out;
    }
    for (int r = 0; r < rounds; r++) {
        if (gap)
            sleep_ms(gap);
        for (int i = 0; i < burst; i++)
            if (one(c, path) != 0)
                goto out;
    }
    printf("%.1f\n", (cpu_s() - t0) / (rounds * burst) * 1e6);
    rc = 0;
out:
    pve_client_free(c);
    return rc;
}
