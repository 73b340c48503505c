/* core/schedtrace.c — GORT_DEBUG=schedtrace=MS: one line of scheduler state on stderr
 * every MS milliseconds while gort_run runs, in the shape of Go's schedtrace:
 *
 *   SCHED 1000ms: procs=2 idleprocs=0 threads=3 spinningthreads=0 idlethreads=0
 *     syscalls=0 runqueue=0 tasks=1001 [3 0]
 *
 * (one line; [...] is each P's local run queue length, runnext included).
 * Context: the sysmon thread (not an M). sched.lock is taken for the counters it
 * guards, so a line is consistent for those; the per-P queue lengths are read
 * lock-free and are hints (a queue may change while the line is printed).
 */
#include <stdio.h>
#include <unistd.h>

#include "rt.h"
#include "sched_impl.h"

enum { SCHEDTRACE_LINE = 512 };

/* Context: sysmon; every P is allocated (sysmon starts after the Ps). */
void schedtrace_print(int64_t now)
{
    rtlock_acquire(&sched.lock);
    int threads = sched.mcount;
    int idlethreads = sched.nmidle;
    rtlock_release(&sched.lock);

    char line[SCHEDTRACE_LINE];
    size_t len = 0;
    len += (size_t)snprintf(
        line, sizeof line,
        "SCHED %lldms: procs=%d idleprocs=%d threads=%d spinningthreads=%d "
        "idlethreads=%d syscalls=%d runqueue=%u tasks=%lld [",
        (long long)((now - sched.start_time) / 1000000), sched.nprocs,
        atomic_load_explicit(&sched.npidle, memory_order_relaxed), threads,
        atomic_load_explicit(&sched.nmspinning, memory_order_relaxed), idlethreads,
        atomic_load_explicit(&sched.nmsyscall, memory_order_relaxed),
        atomic_load_explicit(&sched.runq_size, memory_order_relaxed),
        (long long)atomic_load_explicit(&sched.ntasks, memory_order_relaxed));
    for (int i = 0; i < sched.nprocs && len < sizeof line - 16; i++) {
        p_t *p = sched.allp[i];
        /* relaxed: a length for a human, not a claim on any slot */
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_relaxed);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        uint32_t n = t - h <= RUNQ_SIZE ? t - h : 0;
        if (atomic_load_explicit(&p->runnext, memory_order_relaxed))
            n++;
        len += (size_t)snprintf(line + len, sizeof line - len, i ? " %u" : "%u", n);
    }
    len += (size_t)snprintf(line + len, sizeof line - len, "]\n");
    if (len >= sizeof line)
        len = sizeof line - 1;
    /* one write(2): lines from several runtimes' stderr users do not interleave */
    (void)!write(STDERR_FILENO, line, len);
}
