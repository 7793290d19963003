/* mem: how proxd uses memory as a process (glibc's allocator, thread
 * stacks). proxd is a long-running daemon whose target is a small resident
 * set (32 MiB with 10,000 VMs and 200 jobs in flight), and glibc's defaults
 * are tuned for throughput of short programs; see mem.c for each choice.
 * Thread-safe. */
#ifndef COMMON_MEM_H
#define COMMON_MEM_H

#include <pthread.h>

/* Stack size of the threads proxd makes (mem_thread_start). Only touched
 * pages count in the resident set, but a thread's touched pages are never
 * given back: a bounded stack bounds that. Sanitizer builds get more (ASan
 * redzones make frames several times larger). */
#if defined(__SANITIZE_ADDRESS__)
#define MEM_THREAD_STACK (4u << 20)
#else
#define MEM_THREAD_STACK (512u << 10)
#endif

/* Tune the allocator for a daemon; call first thing in main, before any
 * thread exists. Idempotent. */
void mem_tune(void);
/* Give free heap memory back to the kernel; call after large frees. */
void mem_release(void);
/* pthread_create with a MEM_THREAD_STACK stack; returns its result. */
int mem_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* Name the calling thread (at most 15 characters are kept): shown by
 * `top -H`, `ps -L` and /proc/PID/task/TID/comm, so an operator (and the
 * benchmark) can tell which thread spends the CPU. */
void mem_thread_name(const char *name);

#endif
