#include "common/mem.h"

#include <malloc.h>
#include <sys/prctl.h>

void mem_tune(void)
{
    /* glibc gives every thread that meets contention its own arena, up to
     * 8 per core (16 on 2 cores), and an arena keeps what was freed in it
     * for its next user. proxd's ~20 threads (API pool, job workers,
     * keeper) then each keep their own high-water mark: measured with
     * 10,000 VMs, tens of MiB of free memory spread over arenas. Two arenas
     * leave the threads little contention (their work is mostly waiting on
     * Proxmox and SQLite) and one place for freed memory to be reused. */
    mallopt(M_ARENA_MAX, 2);
    /* Blocks of 128 KiB and more (the 2.7 MB /cluster/resources answer, the
     * inventory's copies) get their own mapping, returned to the kernel on
     * free. Setting the threshold explicitly turns off glibc's dynamic
     * threshold, which after the first such free would raise it to the
     * freed size and keep every later multi-MiB buffer in the heap, where
     * it stays resident after free. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* Give the top of the heap back once 2 MiB of it are free. The job
     * threads' working set moves the top of the heap by hundreds of KiB per
     * creation: with 256 KiB every creation gave pages back and faulted them
     * in again, each give-back a TLB shootdown on the other core (perf at
     * the benchmark's fast scale: 15% of proxd's CPU in brk, 10% more in
     * page faults). 2 MiB per arena (M_ARENA_MAX) is what the resident set
     * may keep beyond its use. */
    mallopt(M_TRIM_THRESHOLD, 2 * 1024 * 1024);
}

void mem_release(void)
{
    /* Also returns whole free pages in the middle of every arena (not just
     * at the top), which free() never does. Costs a walk of the free lists:
     * call it after large frees, not per request. A sanitizer build has
     * the sanitizer's allocator in glibc's place: glibc's arenas were never
     * set up, and malloc_trim walking them crashed the keeper now and then
     * (a NULL read in mtrim, tests/core/test_control_faults in CI). */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    malloc_trim(0);
#endif
}

int mem_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    pthread_attr_t at;
    int rc = pthread_attr_init(&at);
    if (rc)
        return rc;
    rc = pthread_attr_setstacksize(&at, MEM_THREAD_STACK);
    if (rc == 0)
        rc = pthread_create(t, &at, fn, arg);
    pthread_attr_destroy(&at);
    return rc;
}

void mem_thread_name(const char *name)
{
    /* the kernel cuts the name to 15 characters itself */
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}
