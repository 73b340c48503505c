/* gc/stw.c — stopping the world at safe points.
 *
 * Design (Go's stopTheWorld, reduced to what gort's scheduler offers). The stopper is
 * a task; on its system stack it sets stw_requested, then waits until every other P is
 * either idle or held by an M parked in stw_park_m. Ms notice the request where they
 * hold a P and run no task: at the top of findrunnable and in the direct hand-off
 * (sched_next_fast sends a parking or yielding task to g0 instead of the next task).
 * A running task is stopped with preempt_request_all (SIGURG at a safe PC, else the
 * cooperative request: g->preempt and a poisoned stack guard, so its next GORT_FRAME
 * check or runtime call yields), renewed every millisecond; the cooperative request is
 * also renewed on every poll, because the task on a P changes. A task in a system call
 * holds no P: it is a root and is not waited for; gort_syscall_exit waits here, under
 * sched.lock's ordering, before it may take a P back. Idle Ps stay idle: any M that
 * takes one passes through findrunnable's top first.
 * If a task does not reach a safe point in time (a pinned task, a loop with no check),
 * the stop fails with -EAGAIN and the world runs on: never a cycle over a running task.
 * Locks: `world` (rank 10) is a flag taken in task context with no runtime lock held
 * (a busy flag makes the caller yield, so two stoppers on two Ps cannot wait for each
 * other's P); sched.lock while checking Ps.
 * Rejected: signalling threads to stop in a handler (not a safe point: runtime locks may
 * be held); waiting for tasks in system calls (may be forever).
 */
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/sched_impl.h"
#include "gc/gc.h"
#include "preempt/preempt.h"

_Atomic int stw_requested;
static _Atomic uint32_t stw_epoch;       /* bumped by stw_start; Ms futex-wait on it */
static _Atomic int p_stopped[1024];      /* by P id: its M is parked here; set by that M,
                                            cleared by stw_start */

static void futex_wait_u32(_Atomic uint32_t *a, uint32_t v)
{
    syscall(SYS_futex, (uint32_t *)a, FUTEX_WAIT_PRIVATE, v, NULL, NULL, 0);
}

void stw_park_m(m_t *m)
{
    int id = m->p->id;
    for (;;) {
        /* acquire: pairs with the release increment in stw_start */
        uint32_t e = atomic_load_explicit(&stw_epoch, memory_order_acquire);
        if (!atomic_load_explicit(&stw_requested, memory_order_seq_cst) ||
            atomic_load_explicit(&sched.stopping, memory_order_relaxed))
            return;
        /* release: the stopper reads it (acquire) and then owns this P's tasks */
        atomic_store_explicit(&p_stopped[id], 1, memory_order_release);
        futex_wait_u32(&stw_epoch, e);
    }
}

void stw_wait_syscall(void)
{
    for (;;) {
        uint32_t e = atomic_load_explicit(&stw_epoch, memory_order_acquire);
        if (!atomic_load_explicit(&stw_requested, memory_order_seq_cst))
            return;
        futex_wait_u32(&stw_epoch, e);
    }
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void stw_start(void)
{
    atomic_store_explicit(&stw_requested, 0, memory_order_seq_cst);
    for (int i = 0; i < sched.nprocs && i < 1024; i++)
        atomic_store_explicit(&p_stopped[i], 0, memory_order_relaxed);
    /* release: parked Ms that see the new epoch see the request cleared */
    atomic_fetch_add_explicit(&stw_epoch, 1, memory_order_release);
    syscall(SYS_futex, (uint32_t *)&stw_epoch, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

int stw_stop(int64_t timeout_ns)
{
    m_t *self = m_self();
    p_t *own = self->p;
    if (sched.nprocs > 1024)
        return -EAGAIN;
    atomic_store_explicit(&stw_requested, 1, memory_order_seq_cst);
    int64_t start = mono_ns(), deadline = start + timeout_ns, next_kick = start;
    for (unsigned spins = 0;; spins++) {
        bool all = true;
        rtlock_acquire(&sched.lock);
        for (int i = 0; i < sched.nprocs; i++) {
            p_t *p = sched.allp[i];
            if (p == own || atomic_load_explicit(&p_stopped[i], memory_order_acquire))
                continue;
            if (atomic_load_explicit(&p->status, memory_order_relaxed) == 0)
                continue; /* idle: whoever takes it parks at findrunnable's top */
            all = false;
            m_t *m = __atomic_load_n(&p->m, __ATOMIC_RELAXED);
            g_t *g = m ? __atomic_load_n(&m->curg, __ATOMIC_RELAXED) : NULL;
            if (g) {
                /* as sysmon: a stale g only costs that task one early yield */
                __atomic_store_n(&g->preempt, true, __ATOMIC_RELAXED);
                __atomic_store_n(m->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
            }
        }
        rtlock_release(&sched.lock);
        if (all)
            return 0;
        if (mono_ns() >= next_kick) {
            /* SIGURG where the PC is safe, else the cooperative request (preempt/);
             * only once some P did not stop at once (it kicks this M too) */
            preempt_request_all();
            next_kick = mono_ns() + 1000000;
        }
        if (mono_ns() > deadline) {
            stw_start();
            return -EAGAIN;
        }
        if (spins < 64) {
            __builtin_ia32_pause();
        } else {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* The runtime's non-M thread's stack (sysmon): written by sysmon_start/_stop, read by
 * a cycle (mark.c, excl_build), hi first: a cycle that sees a hi sees its lo. */
_Atomic uintptr_t gc_rtthread_lo, gc_rtthread_hi;

void gc_runtime_thread_stack(uintptr_t lo, uintptr_t hi)
{
    atomic_store_explicit(&gc_rtthread_hi, 0, memory_order_relaxed);
    atomic_store_explicit(&gc_rtthread_lo, lo, memory_order_relaxed);
    /* release: pairs with excl_build's acquire load of hi */
    atomic_store_explicit(&gc_rtthread_hi, hi, memory_order_release);
}

/* noinline: its frame lies below the caller's, so the pages released are below both */
__attribute__((noinline)) void gc_thread_stack_release(uintptr_t lo)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    uintptr_t a = (lo + 4095) & ~(uintptr_t)4095;
    uintptr_t b = ((sp - 1024) & ~(uintptr_t)4095) - 4096; /* this frame's callees: a page */
    if (lo && b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}
