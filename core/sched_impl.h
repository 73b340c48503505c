/* core/sched_impl.h — scheduler internals shared by the files of core/ that implement the
 * scheduler itself (sched.c, g.c, runq.c, stackpool.c, switch.c, dump.c). Other modules
 * use core/rt.h only. */
#ifndef GORT_CORE_SCHED_H
#define GORT_CORE_SCHED_H

#include "rt.h"

/* Stack layout: [lo, lo+8) holds the canary; the guard sits STACK_SLACK above lo. */
#define STACK_MIN_DEFAULT 2048u
#define STACK_MAIN_DEFAULT (64u * 1024u)
#if defined(GORT_ASAN) || defined(GORT_TSAN)
/* Instrumented frames are several times larger (redzones, shadow calls): sanitizer
 * builds give every task at least 64 KiB and 16 KiB of slack. */
#define STACK_SLACK 16384u
#define STACK_FLOOR (64u * 1024u)
#else
#define STACK_SLACK 1024u  /* headroom below the guard for uninstrumented leaf calls */
#define STACK_FLOOR STACK_MIN_DEFAULT
#endif
#define STACK_CANARY 0x9e3779b97f4a7c15ull
#define STACKGUARD_PREEMPT ((uintptr_t)-1) /* poisoned guard: every check fails */
#define STACK_CLASSES 16   /* 2 KiB << 0 .. 2 KiB << 15 (64 MiB) pooled */
#define SYSSTACK_SIZE (256u * 1024u)
/* GORT_DEBUG=stackguard=1: the PROT_NONE page directly under every stack's lo */
#define STACK_GUARD_PAGE 4096u

typedef struct sched {
    rtlock_t lock;            /* sched.lock: global runq, idle lists, allm */
    g_t *runq_head;           /* global runq (FIFO through schedlink); lock */
    g_t *runq_tail;
    _Atomic uint32_t runq_size; /* written under lock; read lock-free as a hint */

    p_t **allp;               /* procs Ps; fixed while running */
    int nprocs;
    p_t *pidle;               /* idle Ps; lock */
    _Atomic int npidle;       /* written under lock; read lock-free as a hint */
    m_t *midle;               /* idle Ms; lock */
    int nmidle;
    m_t *allm;                /* every M; lock */
    int mcount;
    _Atomic int nmspinning;   /* Ms looking for work (spinning) */
    _Atomic int nmsyscall;    /* tasks in gort_syscall_enter..exit */
    /* global free task records, with their own lock on their own line: the spawning P
     * takes them back from the P its tasks exited on, and under sched.lock that
     * contended with the global runq (rank: a leaf, taken with no other lock) */
    _Alignas(CACHE_LINE) rtlock_t gfree_lock;
    g_t *gfree;               /* gfree_lock; read lock-free as a hint */
    int ngfree;               /* gfree_lock */

    _Alignas(CACHE_LINE) _Atomic bool netpoll_inuse; /* an M is blocked in netpoll_poll */
    _Atomic int64_t netpoll_until; /* its deadline (INT64_MAX = none) */

    _Atomic bool stopping;    /* the main task returned or deadlock: Ms exit */
    bool deadlock;            /* lock */
    int run_result;           /* gort_run's return value */

    /* configuration, fixed while running */
    size_t stack_min;
    size_t stack_max;
    size_t main_stack;
    uint32_t timeslice_us;
    int preempt_mode;

    _Atomic uint64_t goidgen; /* task ids */
    _Atomic int64_t ntasks;   /* live tasks */
    /* gort_now() as of sysmon's last look (written by sysmon every 0.25-10 ms; 0 before
     * it runs): g_park's "blocked since" stamp, a load instead of a clock read */
    _Atomic int64_t sysmon_now;
    _Atomic uint64_t n_steals_extra; /* steals counted outside Ps */
    int64_t start_time;
} sched_t;

extern RT_HIDDEN sched_t sched;

/* Debug knobs (GORT_DEBUG=name=value,...), parsed once at gort_run. */
typedef struct rt_debug {
    int migrate;     /* move tasks to another M at every switch where it can */
    int schedtrace;  /* ms between scheduler trace lines; 0 = off */
    int stackmove;   /* stack-move stress mode (stackmap/) */
    int stackguard;  /* guard pages under stacks */
    int quit_dump;   /* SIGQUIT prints the dump (default 1) */
    int leakcheck;   /* at gort_run's end: 0 off, 1 report, 2 exit (fail), 3 cancel */
    int leakcheck_interval_ms; /* periodic leak checks (gc/), as gort_leakcheck_interval */
    int trackheap;   /* tracked heap (gc/tracked.c): -1 unset (on when the layer is linked),
                        0 off, 1 required (-ENOTSUP without the layer) */
} rt_debug_t;
extern RT_HIDDEN rt_debug_t rt_debug;
void debug_parse(const char *env);

/* A P's local run queue: a 256-slot ring plus the runnext slot (runq.c has the rest).
 * Single producer (the owner P pushes at tail), multiple consumers (the owner pops and
 * thieves grab, both by CAS on head). Go's runq design, restated:
 *  - The owner writes slot[tail] with a relaxed store, then publishes it with a release
 *    store of tail; consumers load tail with acquire, so they see the slot's value.
 *  - Consumers read slots [head, head+n) and then CAS head forward (acq_rel on success):
 *    the CAS proves no one else consumed those slots meanwhile, and the owner cannot
 *    overwrite them before head moves past them (it checks tail - head < RUNQ_SIZE with
 *    an acquire load of head, pairing with the consumers' release CAS).
 *  - runnext is exchanged/CASed, never stored plainly, so an owner pop and a thief
 *    cannot both take the same task (with one P there is no thief: runq_single_p).
 * Invariant: a runnable task is in exactly one of a runq slot range [head, tail), a
 * runnext slot, or the global runq.
 * The owner's put, get and empty are inline: they sit on every yield and switch
 * (-84 instructions a yield pair, callgrind). The CASes use the value-returning
 * __sync builtin, so no local's address is taken: with an address-taken `expected`
 * inlined into frames that park, ASan reported an "unknown-crash" (perf/README.md). */

/* With one P nobody but its owner changes its queue or runnext: stealing needs a P of
 * one's own, and a P changes hands only under sched.lock. The owner's locked
 * read-modify-writes (~20 cycles each, the largest single cost of a yield) then become
 * relaxed atomic loads and stores. Other threads still read these fields (schedtrace,
 * the deadlock check): they stay atomic. */
static inline bool runq_single_p(void) { return sched.nprocs == 1; }

/* Owner only: takes g out of runnext if it is still there. */
static inline bool runnext_take(p_t *p, g_t *g)
{
    if (runq_single_p()) {
        atomic_store_explicit(&p->runnext, NULL, memory_order_relaxed);
        return true;
    }
    /* full barrier (lock cmpxchg), at least the acquire that pairs with the release
     * exchange that put it there (maybe on another M) */
    return __sync_val_compare_and_swap((g_t **)&p->runnext, g, NULL) == g;
}

/* Owner only: puts g in runnext; returns the task it displaced (the caller queues it). */
static inline g_t *runnext_swap(p_t *p, g_t *g)
{
    if (runq_single_p()) {
        g_t *old = atomic_load_explicit(&p->runnext, memory_order_relaxed);
        atomic_store_explicit(&p->runnext, g, memory_order_relaxed);
        return old;
    }
    /* release: whoever takes g from runnext (maybe a thief) sees its saved context */
    return atomic_exchange_explicit(&p->runnext, g, memory_order_acq_rel);
}

/* Owner only; never switches. False if full (the caller goes global). */
static inline bool runq_put(p_t *p, g_t *g)
{
    uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed); /* own */
    if (t - h >= RUNQ_SIZE)
        return false;
    atomic_store_explicit(&p->runq[t % RUNQ_SIZE], g, memory_order_relaxed);
    atomic_store_explicit(&p->runq_tail, t + 1, memory_order_release); /* publishes slot t */
    return true;
}

/* Owner only: the ring alone (runq_get tries runnext first). */
static inline g_t *runq_get_ring(p_t *p)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed); /* own */
        if (t == h)
            return NULL;
        g_t *g = atomic_load_explicit(&p->runq[h % RUNQ_SIZE], memory_order_relaxed);
        if (runq_single_p()) {
            atomic_store_explicit(&p->runq_head, h + 1, memory_order_relaxed);
            return g;
        }
        /* full barrier, at least acq_rel: consumes slot h against thieves racing for it */
        if (__sync_val_compare_and_swap((uint32_t *)&p->runq_head, h, h + 1) == h)
            return g;
    }
}

/* Owner only. runnext first: it inherits the rest of the current time slice. */
static inline g_t *runq_get(p_t *p)
{
    g_t *next = atomic_load_explicit(&p->runnext, memory_order_relaxed);
    if (next && runnext_take(p, next))
        return next;
    return runq_get_ring(p);
}

static inline bool runq_empty(p_t *p)
{
    uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_acquire);
    return h == t && atomic_load_explicit(&p->runnext, memory_order_acquire) == NULL;
}

void runq_spill_put(p_t *p, g_t *g); /* runq.c: runq_put_or_global's full-queue path */

/* Owner only. On a full queue half of it goes to the global runq in one batch, so a
 * producer that outruns its consumers does not take the global lock per task. */
static inline void runq_put_or_global(p_t *p, g_t *g)
{
    if (unlikely(!runq_put(p, g)))
        runq_spill_put(p, g);
}
uint32_t runq_steal(p_t *p, p_t *victim, bool steal_runnext); /* owner of p; into p's runq */
g_t *runq_pop_stolen(p_t *p);

/* sched.c */
void globrunq_put_locked(g_t *g);
void globrunq_put(g_t *g);
g_t *globrunq_get_locked(p_t *p, uint32_t max);
void wakep(void);
void preempt_yield(void);
p_t *sched_any_p(void);
void sched_wake_for_timer(int64_t when);

/* g.c */
g_t *g_alloc(size_t stack_size);  /* sysstack */
void *g_free_deferred(void *g);    /* sysstack: a dead g back to the pools */
void g_destroy_all(void);          /* teardown */
void g_entry(void *g);             /* first code a task runs */
extern rtlock_t allg_lock;
extern g_t **allg;
extern size_t allg_len;

/* switch.c */
void g_switch_to(g_t *from, g_t *to); /* saves from, runs to; returns when from resumes */
/* The canary at g->stack_lo was overwritten: the fatal report (switch.c); `where` says
 * which check saw it. Never returns. */
_Noreturn void stack_canary_report(g_t *g, const char *where);
void g_switch_finish(m_t *m);         /* runs the deferred action after any switch */
void g_execute(m_t *m, g_t *g);       /* from g0: run g until it switches back */
void m_set_current_tls(m_t *m);

/* stackpool.c */
void *stackpool_alloc(p_t *p, size_t size);  /* sysstack or owner P; NULL on ENOMEM */
void stackpool_free(p_t *p, void *lo, size_t size);
void stackpool_flush_p(p_t *p);
void stackpool_destroy(void);
size_t stackpool_class_size(size_t size);  /* rounds up to the pooled size */
size_t stackpool_trim(void);               /* gc cycle: frees large pooled blocks */
extern _Atomic uint64_t stack_bytes_used;
extern _Atomic uint64_t stack_bytes_pooled;

/* stackmap/guard.c: the fault handler of stackguard=1 / stackmove=1 (gort_run installs
 * it, teardown removes it) and the per-M sigaltstack it needs (M thread start/end). */
void guard_install(void);
void guard_uninstall(void);
void guard_m_init(void);
void guard_m_exit(void);
/* stackmap/stress.c: teardown gives the quarantined old stacks back to the pool before
 * the pool is destroyed (they are slices of its chunks). */
void stress_quarantine_drain(void);

/* alloc.c */
extern _Atomic int64_t rt_mem_bytes;
int rt_alloc_init(void);

/* bindnow.c */
void bindnow_check(void);

/* dump.c */
int dump_tasks_locked_world(FILE *out);
const char *spawn_site_str(void *pc, char *buf, size_t len);
/* core/lineinfo.c: "path:line" of the code at pc from the DWARF line tables of its
 * module; false when there are none. For a return address pass ret - 1 (the call). */
bool lineinfo_find(uintptr_t pc, char *out, size_t len);

/* preempt hooks (sysmon) */
void sysmon_start(void);
void schedtrace_print(int64_t now); /* core/schedtrace.c; sysmon, every schedtrace ms */
void sysmon_stop(void);

/* netpoll hooks are in netpoll.h; timers in timer.h */

#endif
