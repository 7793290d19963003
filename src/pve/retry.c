/* Backoff policy: exponential with full jitter (a random delay in
 * [0, min(cap, base * 2^(n-1))]), so that clients that failed together do
 * not retry together. */
#include <pthread.h>
#include <stdint.h>

#include "common/util.h"
#include "pve/pve_int.h"

void pve_retry_defaults(struct pve_retry *r)
{
    if (r->max_attempts <= 0)
        r->max_attempts = 5;
    if (r->base_ms <= 0)
        r->base_ms = 200;
    if (r->cap_ms <= 0)
        r->cap_ms = 5000;
    if (r->total_ms <= 0)
        r->total_ms = 30000;
}

/* xorshift64*, one state per thread: no lock, no shared rand() state. */
static uint64_t rnd(void)
{
    static _Thread_local uint64_t s;
    if (!s)
        s = (uint64_t)mono_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&s ^
            (uint64_t)pthread_self();
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
}

long pve_backoff_ms(const struct pve_retry *r, int retry)
{
    long ceil = r->base_ms;
    for (int i = 1; i < retry && ceil < r->cap_ms; i++)
        ceil *= 2;
    if (ceil > r->cap_ms)
        ceil = r->cap_ms;
    return (long)(rnd() % (uint64_t)(ceil + 1));
}

long pve_host_backoff_next(long cur_ms)
{
    if (cur_ms < PVE_HOST_BACKOFF_MIN_MS)
        return PVE_HOST_BACKOFF_MIN_MS;
    return cur_ms * 2 > PVE_HOST_BACKOFF_MAX_MS ? PVE_HOST_BACKOFF_MAX_MS : cur_ms * 2;
}
