/* preempt/sysmon.c — the system monitor thread: preemption requests.
 *
 * sysmon looks at every P a few thousand times a second while some P runs a task:
 *  - ASYNC mode (default): a task that has run at least PREEMPT_MIN_SLICE_NS (1 ms)
 *    while a due timer of its P, a task in its runnext slot, or a woken task in its
 *    local runq waits behind it, or that has run a whole time slice, is kicked with
 *    tgkill(SIGURG) (preempt_kick; the handler decides between an asynchronous stop
 *    and the cooperative fallback). Only an M whose thread CPU clock advanced since
 *    sysmon's previous look at the same task is signalled: a thread blocked in the
 *    kernel (a task calling a blocking function without gort_syscall_enter) is never
 *    interrupted, and tasks in G_SYSCALL are never looked at. The per-M CPU-time
 *    timers (preempt/signal.c) enforce the slice without sysmon; sysmon's slice rule is
 *    the backup for an M without a timer.
 *  - COOP mode: a task that has run a whole slice gets its stack guard poisoned; its
 *    next GORT_FRAME check or runtime call yields (morestack_slow).
 *  - OFF: nothing.
 * It also rebuilds the safe-PC table when libraries are loaded or unloaded.
 * Period: 250 us while a busy P has a timer pending or queued work (the latency a
 * sleeper behind a spinner sees), 1 ms while some P is busy, 10 ms when all are idle.
 * Locks: none (reads Ps racily with relaxed atomics; a stale read only delays or
 * duplicates a harmless request). sysmon is not an M: it never runs tasks.
 */
#include <pthread.h>
#include <time.h>

#include "gc/gc.h"
#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"
#include "timer.h"

enum {
    SYSMON_NAP_BUSY_NS = 250000,    /* some P busy with work or timers behind it */
    SYSMON_NAP_RUN_NS = 1000000,    /* some P busy, nothing waiting */
    SYSMON_NAP_IDLE_NS = 10000000,  /* every P idle */
    SYSMON_REFRESH_NS = 100000000,  /* safe-PC table check */
    WOKEN_SCAN_MAX = 8,             /* local runq entries looked at for a woken task */
};

static pthread_t sysmon_thread;
static _Atomic bool sysmon_quit;
static bool sysmon_started;

typedef struct sysmon_p {
    uint32_t tick;       /* schedtick at the last look */
    int64_t since;       /* when that tick was first seen */
    int64_t last_kick;   /* last kick sent for this tick */
    uint32_t cpu_tick;   /* tick the cpu reading belongs to */
    int64_t cpu_ns;      /* the M's thread CPU time at the previous look */
    bool cpu_valid;
} sysmon_p_t;

/* Is a task woken by someone (not merely preempted or yielding) waiting on p? The
 * runnext slot holds only woken tasks; in the runq, a woken task still carries the wait
 * reason of its park until it runs (g_park clears it on return). */
static bool sysmon_woken_waiting(p_t *p)
{
    if (atomic_load_explicit(&p->runnext, memory_order_relaxed))
        return true;
#if !defined(GORT_TSAN) /* reads another thread's plain field: a benign race */
    uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_acquire);
    for (uint32_t i = 0; i < WOKEN_SCAN_MAX && h + i != t; i++) {
        g_t *g = atomic_load_explicit(&p->runq[(h + i) % RUNQ_SIZE], memory_order_relaxed);
        if (g && __atomic_load_n((int *)&g->wait_reason, __ATOMIC_RELAXED) != WAIT_NONE)
            return true;
    }
#endif
    return false;
}

static void *sysmon_main(void *arg)
{
    uintptr_t stack_lo = 0;
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t sz;
        pthread_attr_getstack(&a, &lo, &sz);
        pthread_attr_destroy(&a);
        stack_lo = (uintptr_t)lo;
        /* runtime memory: its frames hold stale addresses of what it looked at */
        gc_runtime_thread_stack(stack_lo, stack_lo + sz);
    }
    int n = sched.nprocs;
    sysmon_p_t *sp = rt_alloc((size_t)n * sizeof *sp);
    if (!sp)
        return NULL;
    int64_t now = gort_now();
    for (int i = 0; i < n; i++)
        sp[i].since = now;
    int64_t slice = (int64_t)sched.timeslice_us * 1000;
    int64_t next_refresh = now + SYSMON_REFRESH_NS;
    int64_t nap = SYSMON_NAP_RUN_NS;
    int mode = sched.preempt_mode;
    int64_t trace_every = (int64_t)rt_debug.schedtrace * 1000000;
    int64_t next_trace = now + trace_every;
    while (!atomic_load_explicit(&sysmon_quit, memory_order_acquire)) {
        int64_t sleep_ns = nap;
        if (trace_every && next_trace - now < sleep_ns)
            sleep_ns = next_trace > now ? next_trace - now : 0;
        struct timespec ts = {sleep_ns / 1000000000, sleep_ns % 1000000000};
        nanosleep(&ts, NULL);
        now = gort_now();
        atomic_store_explicit(&sched.sysmon_now, now, memory_order_relaxed);
        if (trace_every && now >= next_trace) {
            schedtrace_print(now);
            next_trace = now + trace_every; /* a period, not a schedule: no bursts */
        }
        if (mode == GORT_PREEMPT_ASYNC && now >= next_refresh) {
            safepc_refresh();
            next_refresh = now + SYSMON_REFRESH_NS;
        }
        bool busy = false;
        bool pending = false;
        for (int i = 0; i < n; i++) {
            p_t *p = sched.allp[i];
            sysmon_p_t *s = &sp[i];
            uint32_t tick = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
            /* acquire: pairs with p_set_m's release store */
            m_t *m = __atomic_load_n(&p->m, __ATOMIC_ACQUIRE);
            if (tick != s->tick || !m ||
                atomic_load_explicit(&p->status, memory_order_relaxed) == 0) {
                s->tick = tick;
                s->since = now;
                s->cpu_valid = false;
                if (m)
                    busy = true;
                continue;
            }
            /* acquire: pairs with the release store in g_switch_to, so g is initialised */
            g_t *g = __atomic_load_n(&m->curg, __ATOMIC_ACQUIRE);
            if (!g || atomic_load_explicit(&g->status, memory_order_relaxed) != G_RUNNING)
                continue;
            busy = true;
            int64_t ran = now - s->since;
            if (mode == GORT_PREEMPT_COOP) {
                if (ran >= slice) {
                    __atomic_store_n(&g->preempt, true, __ATOMIC_RELAXED);
                    __atomic_store_n(m->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
                    s->since = now;
                }
                continue;
            }
            if (mode != GORT_PREEMPT_ASYNC)
                continue;
            bool waiting = timers_next(p) <= now || sysmon_woken_waiting(p);
            if (waiting || timers_next(p) != INT64_MAX)
                pending = true;
            bool want = ran >= slice || (waiting && ran >= PREEMPT_MIN_SLICE_NS);
            if (!want || now - s->last_kick < PREEMPT_MIN_SLICE_NS / 2)
                continue;
            /* Only a thread that is consuming CPU: compare with the previous look at
             * this same task (the first look only takes the reading). */
            int64_t cpu = preempt_m_cpu_ns(m);
            bool advancing = cpu >= 0 && s->cpu_valid && s->cpu_tick == tick && cpu > s->cpu_ns;
            s->cpu_valid = cpu >= 0;
            s->cpu_tick = tick;
            s->cpu_ns = cpu;
            if (advancing && preempt_kick(m, tick, false))
                s->last_kick = now;
        }
        nap = !busy ? SYSMON_NAP_IDLE_NS : pending ? SYSMON_NAP_BUSY_NS : SYSMON_NAP_RUN_NS;
        if (mode == GORT_PREEMPT_COOP && nap > slice / 4)
            nap = slice / 4 > 20000 ? slice / 4 : 20000;
    }
    rt_free(sp);
    gc_thread_stack_release(stack_lo); /* glibc caches this stack: no stale frames */
    return NULL;
}

/* Context: the gort_run thread (m0), after the main task was spawned. */
void sysmon_start(void)
{
    m_t *m0 = m_self();
    if (preempt_start() == 0 && m0)
        preempt_m_init(m0);
    atomic_store(&sysmon_quit, false);
    sysmon_started = pthread_create(&sysmon_thread, NULL, sysmon_main, NULL) == 0;
}

/* Context: the gort_run thread at teardown; every other M has exited. */
void sysmon_stop(void)
{
    if (sysmon_started) {
        atomic_store(&sysmon_quit, true);
        pthread_join(sysmon_thread, NULL);
        sysmon_started = false;
        gc_runtime_thread_stack(0, 0);
    }
    m_t *m0 = m_self();
    if (m0)
        preempt_m_exit(m0);
    preempt_stop();
}
