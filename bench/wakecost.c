/* wakecost: what a thread pays in CPU to wake from a sleep and touch its
 * memory again, with no Proxmox call (bench/bench_callcost.py, make bench).
 *
 * usage: bench_wakecost GAP_MS ROUNDS TOUCH_KIB
 * Each round sleeps GAP_MS (nanosleep), then reads one byte in every 64 of
 * a TOUCH_KIB buffer (made resident first). Prints the process's CPU per
 * round in microseconds. Against GAP_MS 0 it tells how much of a spaced-out
 * call's cost is the wake-up and the cold caches, whatever the call does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s GAP_MS ROUNDS TOUCH_KIB\n", argv[0]);
        return 2;
    }
    long gap_ms = atol(argv[1]);
    int rounds = atoi(argv[2]);
    size_t bytes = (size_t)atol(argv[3]) * 1024;
    if (rounds <= 0 || gap_ms < 0) {
        fprintf(stderr, "%s: ROUNDS > 0, GAP_MS >= 0\n", argv[0]);
        return 2;
    }
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (!buf)
        abort();
    memset(buf, 1, bytes ? bytes : 1);
    volatile unsigned long sum = 0;
    double c0 = cpu_us();
    for (int i = 0; i < rounds; i++) {
        struct timespec ts = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
        if (gap_ms)
            nanosleep(&ts, NULL);
        for (size_t j = 0; j < bytes; j += 64)
            sum += buf[j];
    }
    printf("%.1f\n", (cpu_us() - c0) / rounds);
    free(buf);
    return 0;
}
