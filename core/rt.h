/* core/rt.h — the runtime's internal contract: tasks (G), worker threads (M),
 * processors (P), and the calls the other core files use to park and wake tasks.
 * core/README.md explains the vocabulary; read it first.
 *
 * Calling contexts, named in every function comment:
 *   task      — on a task stack (small: keep frames lean, no stdio, no deep libc)
 *   sysstack  — on the M's own thread stack (scheduler, timers, gort_on_system_stack)
 *   any       — either, or a thread that is not a gort worker
 */
#ifndef GORT_CORE_RT_H
#define GORT_CORE_RT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/arch.h"
#include "gort.h"
#include "rtlock.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define RT_HIDDEN __attribute__((visibility("hidden")))
#define RT_COLD __attribute__((noinline, cold))
#define CACHE_LINE 64

#if defined(GORT_ASAN) || defined(GORT_TSAN)
#define GORT_SANITIZER_BUILD 1
#else
#define GORT_SANITIZER_BUILD 0
#endif

/* Code that reads raw memory word by word (stack copying, conservative scans) reads
 * ASan's redzones and words other threads write atomically: it is not instrumented
 * (what it reads is only ever a hint or is stable: the world is stopped, or the stack's
 * task cannot run). */
#if defined(GORT_ASAN)
#define GORT_NO_ASAN __attribute__((no_sanitize_address))
#elif defined(GORT_TSAN)
#define GORT_NO_ASAN __attribute__((no_sanitize_thread))
#else
#define GORT_NO_ASAN
#endif

/* Invariant checks that cost more than a compare on hot paths are compiled in checked
 * builds only (-DGORT_CHECKS=ON; on in the sanitizer builds): the code is always
 * compiled, and dead when the constant is 0. */
#if defined(GORT_CHECKS_ON)
#define GORT_DEBUG_BUILD 1
#else
#define GORT_DEBUG_BUILD 0
#endif

typedef struct g g_t;
typedef struct m m_t;
typedef struct p p_t;

/* ------------------------------------------------------------------ G */

typedef enum g_status {
    G_IDLE = 0,  /* allocated, not started, or on a free list */
    G_RUNNABLE,  /* in exactly one of: a local runq, a runnext slot, the global runq */
    G_RUNNING,   /* an M runs it; that M owns the stack */
    G_WAITING,   /* parked: registers saved; stack owned by nobody; wake with g_ready */
    G_SYSCALL,   /* between gort_syscall_enter/exit: running, but holds no P */
    G_DEAD,      /* finished; stack and record go back to the pools */
} g_status_t;

/* Why a task is parked; the strings are Go's (wait_reason_str). */
typedef enum wait_reason {
    WAIT_NONE = 0,
    WAIT_CHAN_RECV,       /* "chan receive" */
    WAIT_CHAN_SEND,       /* "chan send" */
    WAIT_CHAN_RECV_NIL,   /* "chan receive (nil chan)" */
    WAIT_CHAN_SEND_NIL,   /* "chan send (nil chan)" */
    WAIT_SELECT,          /* "select" */
    WAIT_SELECT_NO_CASES, /* "select (no cases)" */
    WAIT_MUTEX,           /* "mutex lock" */
    WAIT_RWMUTEX_R,       /* "rwmutex rlock" */
    WAIT_RWMUTEX_W,       /* "rwmutex lock" */
    WAIT_COND,            /* "cond wait" */
    WAIT_WG,              /* "wait group" */
    WAIT_ONCE,            /* "once" */
    WAIT_SLEEP,           /* "sleep" */
    WAIT_IO,              /* "IO wait" */
    WAIT_PREEMPTED,       /* "preempted" (runnable again at once) */
    WAIT_REASON_COUNT
} wait_reason_t;
const char *wait_reason_str(wait_reason_t r);

/* The saved context of a task that is not running: callee-saved registers, mxcsr and
 * the x87 control word are pushed on its own stack; only sp is kept here. */
typedef struct gctx {
    void *sp;
} gctx_t;

struct g {
    gctx_t ctx;          /* owner: the M that runs it; read by the M that resumes it */
    uintptr_t stack_lo;  /* [stack_lo, stack_hi): the stack block; owner M */
    uintptr_t stack_hi;
    uintptr_t stackguard; /* stack_lo + STACK_SLACK; copied to TLS at switch-in */
    _Atomic int status;  /* g_status_t; written by the owner (M or the waker) */
    int saved_errno;     /* errno while not running (errno travels with the task) */
    uint64_t id;         /* 1 = main task; 0 = an M's g0 */
    m_t *m;              /* M running it; NULL when not running */
    g_t *schedlink;      /* link in the global runq or a free list; sched.lock or owner */

    void (*fn)(void *);  /* entry; set at spawn */
    void *arg;
    void *args_copy;     /* gort_go_with copy (freed at exit); NULL if none */
    char *name;          /* owned copy or NULL */
    void *spawn_pc;      /* return address in the code that called gort_go */

    /* What a parked task waits on: written by the task itself before parking, under
     * the lock it hands to g_park; read by dumps and the leak detector. */
    const void *wait_obj;
    int64_t wait_since;   /* gort_now() at park */
    wait_reason_t wait_reason;

    /* Channel/select/sync hand-off (owned by chan.c, select.c, sync.c):
     * wait_param — what the waker hands over (e.g. the waiter that fired);
     * select_done — 0 while a select waits; the first waker CASes it to 1, so exactly
     * one case (or the timeout) wins;
     * waiting — the list of this task's wait records (for a stack mover: they live on
     * the task's stack while it is parked). */
    _Atomic uint32_t select_done;
    void *wait_param;
    void *waiting;

    /* (Fields ordered so that no padding is left: 192 bytes, a jemalloc size class,
     * in normal builds; every byte of the record is resident per live task.) */
    uint32_t lock_thread; /* gort_lock_thread depth; only the task itself */
    uint32_t nopreempt;   /* gort_nopreempt depth; only the task itself */
    m_t *locked_m;        /* M it is pinned to while lock_thread > 0 */
    size_t stack_min;     /* requested initial stack (opts) */
    uint64_t allg_index;  /* slot in the allg array; allg.lock */
    void *xsave;          /* vector state of a preempted task; allocated on first need */
    uint32_t gc_flags;    /* GC_* (gc/gc.h): set by the gc with the world stopped before
                           * g_ready; read and cleared by the task itself when it resumes */
    bool preempt;         /* the scheduler asked it to yield at the next check */
    bool xsave_live;      /* xsave holds live vector state: the task is stopped by a
                           * signal (preempt/signal.c). Otherwise (resumed, or stopped at
                           * a check, a call boundary) xsave is a stale dump the leak
                           * detector must not read as roots (gc/mark.c) */
#if defined(GORT_TSAN)
    void *tsan_fiber;     /* the task's TSan fiber; its M at create/switch/destroy */
#endif
#if defined(GORT_ASAN)
    void *asan_fake_stack;/* ASan's fake-stack handle across switches; its M */
#endif
};

/* ------------------------------------------------------------------ P */

#define RUNQ_SIZE 256

typedef struct timer_heap timer_heap_t;

struct p {
    /* Lock-free local run queue: only the owner P pushes (writes tail) and pops; thieves
     * and the owner CAS head. Ordering: see core/runq.c. */
    _Alignas(CACHE_LINE) _Atomic uint32_t runq_head;
    _Atomic uint32_t runq_tail;
    g_t *_Atomic runq[RUNQ_SIZE];
    g_t *_Atomic runnext; /* readied by the running task; runs next, inherits the slice */

    _Alignas(CACHE_LINE) int id;
    m_t *m;               /* M holding it; NULL when idle or in syscall hand-off;
                           * written under sched.lock, read by sysmon (relaxed) */
    p_t *link;            /* idle list; sched.lock */
    uint32_t schedtick;   /* schedules on this P; owner writes, sysmon reads (relaxed
                           * atomics on both sides: a stale value only delays a
                           * preemption request) */
    uint32_t fastrand;    /* steal-order PRNG state; owner */
    uint32_t fast_budget; /* fast handoffs left before a trip through g0; owner */
    bool check_global;    /* the fast path ran out: g0 looks at the global runq first */
    _Atomic uint32_t status; /* P_IDLE, P_RUNNING */

    g_t *gfree;           /* dead tasks with their 2 KiB stacks, for reuse; owner */
    uint32_t ngfree;
    /* stack bytes that went from pooled to in use through gfree's attached stacks
     * (negative: the other way), so that a spawn and an exit do not each write the
     * global stack_bytes_used/_pooled, a cache line both CPUs fought over (a third of
     * spawn+finish at 2 P); owner writes, gort_stats sums (relaxed) */
    int64_t stack_reused;

    void *stack_cache[16][32]; /* per size class free stacks; owner */
    uint8_t stack_cache_n[16];

    rtlock_t timers_lock;      /* p.timers */
    struct rtimer **timers;    /* binary min-heap by when; timers_lock */
    uint32_t ntimers, timers_cap;
    _Atomic int64_t timer0_when; /* earliest deadline, 0 if none; read lock-free */

    /* counters, owner P only; summed by gort_stats */
    uint64_t n_switches, n_steals, n_created, n_preempt_coop, n_preempt_async;
};

/* ------------------------------------------------------------------ M */

struct m {
    g_t g0;               /* the thread's own stack (scheduler, sysstack calls) */
    g_t *curg;            /* task running on this M (also during its sysstack calls),
                           * or NULL on g0; owner writes, sysmon reads (relaxed) */
    p_t *p;               /* P held, NULL when idle or in a syscall */
    p_t *oldp;            /* P given up at gort_syscall_enter, wanted back at exit */
    int id;
    int locks;            /* rtlocks held + other no-preempt reasons */
    bool on_sysstack;     /* inside sysstack_call: nested calls run in place */
    bool spinning;        /* looking for work without a P's runq of its own */
    _Atomic uint32_t park_futex; /* 0 asleep-or-about-to, 1 woken */
    m_t *idle_link;       /* idle M list; sched.lock */
    m_t *all_link;        /* all Ms; sched.lock */
    g_t *locked_g;        /* task pinned here by gort_lock_thread */
    g_t *nextg;           /* task to run next from g0 (handed over); owner */
    p_t *nextp;           /* P handed over by the M that woke this one; sched.lock */
    uintptr_t *tls_stackguard; /* &gort_tls_stackguard of this thread */
    uint64_t pthread;     /* pthread_t */
    bool exiting;
    void *xsave_scratch;  /* morestack's vector-state save area (64-byte aligned) */
    uintptr_t sysstack_lo, sysstack_hi; /* this thread's own stack (g0) */

    /* After a switch, the code that resumes on this M finishes what the previous task
     * could not do on its own stack: release the lock it parked with, requeue it
     * (yield, preemption), or free it (exit). */
    int defer_kind;       /* DEFER_* */
    g_t *defer_g;
    rtlock_t *defer_lock;

    void *preempt;        /* preempt/: this M's SIGURG state (preempt_m_t); set and
                           * cleared by the M's own thread at start/exit; read by the
                           * handler on that thread and by sysmon (acquire) */
};

enum { DEFER_NONE = 0, DEFER_UNLOCK, DEFER_READY, DEFER_READY_GLOBAL, DEFER_FREE };

/* --------------------------------------------------------- the scheduler */

/* The current M of this thread, or NULL outside gort. Read through the thread pointer
 * with asm volatile, which the compiler can neither cache across a switch nor hoist (a
 * task may resume on another thread): never keep the result across a call that may
 * switch. rt_tls_m_off is the fixed offset of the M slot in the static TLS block. */
extern RT_HIDDEN ptrdiff_t rt_tls_m_off; /* hidden: one load, not GOT + load */
static inline m_t *m_self(void)
{
    return *(m_t **)(arch_thread_pointer() + rt_tls_m_off);
}
/* The rtlock fast paths (core/rtlock.h; the slow halves live in rtlock.c). m->locks
 * counts first, so the preemption handler never sees a held lock with locks == 0. */
static inline void rtlock_acquire(rtlock_t *l)
{
    m_t *m = m_self();
    if (m)
        m->locks++;
    uint32_t s = 0;
    /* acquire: the critical section's loads happen after the previous holder's
     * release store */
    if (unlikely(!atomic_compare_exchange_strong_explicit(&l->state, &s, 1,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)))
        rtlock_acquire_slow(l);
}

static inline void rtlock_release(rtlock_t *l)
{
    /* release: publishes the critical section to the next acquirer */
    if (unlikely(atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2))
        rtlock_wake(l);
    m_t *m = m_self();
    if (m)
        m->locks--;
}

/* The running task, or NULL on a system stack (g0, or inside a sysstack_call, where
 * nothing may park) and outside gort. m->curg stays set during a sysstack_call. */
static inline g_t *g_self(void)
{
    m_t *m = m_self();
    return m && !m->on_sysstack ? m->curg : NULL;
}
/* This thread's errno, found the same way (glibc declares __errno_location const, so a
 * plain `errno` after a switch may name the previous thread's). */
extern RT_HIDDEN ptrdiff_t rt_tls_errno_off;
static inline int *errno_ptr(void) { return (int *)(arch_thread_pointer() + rt_tls_errno_off); }

/* Parks the calling task (task context): records reason/obj/since, sets G_WAITING,
 * switches away, and only then releases `unlock` (NULL ok). Whoever wakes it must hold
 * `unlock` (or otherwise see the task only after the switch) and calls g_ready. On
 * return the task runs again, on any M. The task must not hold other rtlocks. */
void g_park(rtlock_t *unlock, wait_reason_t why, const void *obj);
/* Makes a G_WAITING task runnable (any context, any thread). From a running task the
 * woken task goes to runnext (runs next on this P); else to this P's runq or, on a
 * thread without a P, the global runq. Wakes an idle P if there is one. */
void g_ready(g_t *g);
/* Yields the calling task (task context); with `global` it goes to the global runq
 * (fairness) instead of the local one. */
void g_yield(bool global);

/* Runs fn(arg) on this M's system stack (task or sysstack context); fn must not park. */
void *sysstack_call(void *(*fn)(void *), void *arg);

/* RT_ENTRY_CHECK() is the first statement of every public runtime call a task makes
 * that may block, switch or take a pointer into the caller's stack (chan send, recv,
 * try, close; select; the sync objects; yield, sleep, spawn, after; the ctx calls that
 * do work; the IO calls). It is GORT_FRAME's check (gort.h): so a runtime call is a
 * growth point, a cooperative preemption point (a poisoned guard: sysmon, stop the
 * world) and, in stress mode, a stack move. It runs before the call takes any lock, so
 * morestack_slow may yield there. The caller's pointer arguments are in registers (or
 * spilled into this runtime frame) at the check: relocate.c relocates every saved
 * register and the runtime's innermost frame in every mode, stackreloc=precise too.
 * Differences from GORT_FRAME_CHECK_: the slow path goes to subsection 1 of the same
 * section, not .text.unlikely (the runtime's code must stay one range: safepc.c),
 * and the frame address is an input, which makes the compiler set up rbp before the
 * check: the mover finds the caller's frame through it.
 * Not checked: queries (gort_now, gort_self, chan len/cap, ctx done/err), gort_exit,
 * the lock_thread/nopreempt brackets, gort_syscall_enter/exit (between them the task
 * holds no P: morestack_slow's yield needs one), chan make/free, calls that switch to
 * the system stack themselves (gort_on_system_stack, gort_stack_reserve), and the
 * runtime's own internal calls made with a lock held (ctx cancel closes its done
 * channel through chan_close, under ctx.lock).
 * ASan builds: the call's instrumented prologue runs before the check and keeps the
 * frame's shadow address in a register across it; relocate.c moves shadow addresses
 * and shadow bytes with the stack in those builds (reloc_asan_shadow). */
#define RT_ENTRY_CHECK()                                                               \
    __asm__ volatile("movq gort_tls_stackguard@gottpoff(%%rip), %%r11\n\t"             \
                     "cmpq %%fs:(%%r11), %%rsp\n\t"                                    \
                     "jb 2f\n"                                                         \
                     "1:\n\t"                                                          \
                     ".subsection 1\n"                                                 \
                     "2:\n\t"                                                          \
                     "leaq -128(%%rsp), %%rsp\n\t"                                     \
                     "call gort_morestack_rt_\n\t"                                     \
                     "leaq 128(%%rsp), %%rsp\n\t"                                      \
                     "jmp 1b\n\t"                                                      \
                     ".previous"                                                       \
                     : : "r"(__builtin_frame_address(0)) : "r11", "cc", "memory")

/* Timers (core/timer.c). A timer fires once, fn(t, now) on a system stack of an M
 * holding a P, with no runtime lock held; fn must not park and should be short.
 * Timers are owned by the caller (embedded in the object that uses them). */
typedef struct rtimer {
    int64_t when;                    /* deadline, gort_now() ns */
    void (*fn)(struct rtimer *t, int64_t now);
    void *arg;
    p_t *_Atomic p;                  /* heap it is in; NULL when not queued */
    int32_t heap_index;              /* p->timers_lock */
    _Atomic uint32_t state;          /* TIMER_IDLE, _QUEUED, _RUNNING */
} rtimer_t;
enum { TIMER_IDLE = 0, TIMER_QUEUED, TIMER_RUNNING };
/* Queues t (state must be IDLE) to fire at t->when, on the current P's heap (any
 * context inside a runtime; wakes a sleeping M if it becomes the earliest deadline). */
void timer_start(rtimer_t *t);
/* Removes t: true if it was queued and will not fire; false if it already fired or is
 * firing — then timer_stop waits until fn has returned, so t may be freed after it. */
bool timer_stop(rtimer_t *t);

/* Statistics counters kept outside Ps. */
void stats_add_steal(void);

/* Fatal errors: a broken runtime invariant (constant string), then the task dump. */
__attribute__((noreturn)) void gort_throw(const char *what);
/* Corrupting misuse by the program (e.g. unlock of an unlocked mutex). */
__attribute__((noreturn)) void gort_fatal(const char *what);
/* Async-signal-safe printing to stderr (a formatted line; %s %d %u %lu %lx %p only). */
void dbg_print(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runtime memory: jemalloc, from the runtime's own arena (rt_alloc/rt_free work in any
 * context but use a system stack inside: call sparingly from task context). */
void *rt_alloc(size_t size);       /* zeroed; NULL on failure */
void *rt_alloc_aligned(size_t size, size_t align); /* zeroed, align a power of two */
void rt_free(void *ptr);
/* The same memory, left out of the gc's object table (one slot, ~32 bytes resident, per
 * object, and a range to sort in every cycle): for task records, which the gc never
 * traces (their live contents are roots by task state, gc/mark.c). Freed only with
 * rt_free_untraced. */
void *rt_alloc_untraced(size_t size); /* zeroed; NULL on failure */
void rt_free_untraced(void *ptr);

#endif
