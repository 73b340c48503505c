/* core/sched.c — the scheduler: Ps, Ms, parking and waking, gort_run.
 *
 * Design (Go's, see core/README.md): a task runs only on an M that holds a P. Each P
 * has a local runq and a runnext slot; the global runq is checked every 61 schedules
 * so a busy local queue cannot starve it. An M with nothing to run steals half of a
 * random victim's runq; at most half the busy Ps have a spinning M; an M that finds
 * nothing sleeps on a futex, except one that blocks in the I/O poller with a timeout of
 * the earliest timer. Wake an M only if a P is idle and no M spins (wakep); a spinning
 * M that finds work wakes the next spinner, so bursts fan out without a thundering
 * herd.
 * Handoff: a parking or yielding task switches straight to the next task of its P
 * (runnext first) without going through g0, unless it is time to look at the global
 * runq or timers (every 61st schedule), the next task is pinned elsewhere, or
 * GORT_DEBUG=migrate=1 wants tasks moved.
 * Rejected: a wake-up per ready task (futex storms on ping-pong); one global queue
 * (its lock is the bottleneck at 2+ Ps); running g0 between every pair of tasks (two
 * switches per handoff).
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "gc/gc.h"
#include "netpoll.h"
#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"
#include "stackmap/stackmap.h"
#include "timer.h"

#if defined(GORT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

sched_t sched;
static _Atomic bool sched_running;

enum { GLOBAL_CHECK_TICKS = 61, STEAL_TRIES = 4, GFREE_LOCAL_MAX = 64 };

int64_t gort_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Coarse clock (~4 ms resolution, a few ns to read): "blocked since" stamps. */
static int64_t now_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ futex notes */

static void m_sleep(m_t *m)
{
    /* acquire: pairs with the release store in m_wake, so nextp/nextg are visible */
    while (atomic_exchange_explicit(&m->park_futex, 0, memory_order_acquire) == 0)
        syscall(SYS_futex, (uint32_t *)&m->park_futex, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

static void m_wake(m_t *m)
{
    atomic_store_explicit(&m->park_futex, 1, memory_order_release);
    syscall(SYS_futex, (uint32_t *)&m->park_futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ------------------------------------------------------------ global runq */

void globrunq_put_locked(g_t *g)
{
    g->schedlink = NULL;
    if (sched.runq_tail)
        sched.runq_tail->schedlink = g;
    else
        sched.runq_head = g;
    sched.runq_tail = g;
    atomic_store_explicit(&sched.runq_size, sched.runq_size + 1, memory_order_relaxed);
}

void globrunq_put(g_t *g)
{
    rtlock_acquire(&sched.lock);
    globrunq_put_locked(g);
    rtlock_release(&sched.lock);
}

/* Takes one task to run and moves up to max-1 more into p's runq. */
g_t *globrunq_get_locked(p_t *p, uint32_t max)
{
    uint32_t size = atomic_load_explicit(&sched.runq_size, memory_order_relaxed);
    if (size == 0)
        return NULL;
    uint32_t n = size / (uint32_t)sched.nprocs + 1;
    if (n > size)
        n = size;
    if (max && n > max)
        n = max;
    if (n > RUNQ_SIZE / 2)
        n = RUNQ_SIZE / 2;
    atomic_store_explicit(&sched.runq_size, size - n, memory_order_relaxed);
    g_t *g = sched.runq_head;
    sched.runq_head = g->schedlink;
    for (uint32_t i = 1; i < n; i++) {
        g_t *x = sched.runq_head;
        sched.runq_head = x->schedlink;
        runq_put(p, x);
    }
    if (!sched.runq_head)
        sched.runq_tail = NULL;
    return g;
}

/* ------------------------------------------------------------ idle Ps and Ms */

/* Owner only: advances the P's schedule count and returns the value before. Relaxed
 * atomics because sysmon reads it to see whether the P is stuck on one task. */
static inline uint32_t p_tick(p_t *p)
{
    uint32_t t = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
    __atomic_store_n(&p->schedtick, t + 1, __ATOMIC_RELAXED);
    return t;
}

/* release: sysmon reads p->m with acquire and then the M's fields */
static inline void p_set_m(p_t *p, m_t *m) { __atomic_store_n(&p->m, m, __ATOMIC_RELEASE); }

static p_t *pidleget_locked(void)
{
    p_t *p = sched.pidle;
    if (p) {
        sched.pidle = p->link;
        atomic_fetch_sub_explicit(&sched.npidle, 1, memory_order_relaxed);
        atomic_store_explicit(&p->status, 1, memory_order_relaxed);
    }
    return p;
}

static void pidleput_locked(p_t *p)
{
    p_set_m(p, NULL);
    p->link = sched.pidle;
    sched.pidle = p;
    atomic_store_explicit(&p->status, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&sched.npidle, 1, memory_order_relaxed);
}

static void *m_thread_main(void *arg);

static void m_init_thread_state(m_t *m)
{
    m_set_current_tls(m);
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t sz;
        pthread_attr_getstack(&a, &lo, &sz);
        m->sysstack_lo = (uintptr_t)lo;
        m->sysstack_hi = (uintptr_t)lo + sz;
        pthread_attr_destroy(&a);
    }
#if defined(GORT_TSAN)
    m->g0.tsan_fiber = __tsan_get_current_fiber();
#endif
}

static m_t *m_alloc(void)
{
    m_t *m = rt_alloc_aligned(sizeof *m, CACHE_LINE);
    if (!m)
        return NULL;
    uint32_t xs = arch_xsave_size();
    m->xsave_scratch = rt_alloc_aligned(xs + 64, 64);
    if (!m->xsave_scratch) {
        rt_free(m);
        return NULL;
    }
    m->g0.status = G_RUNNING;
    m->g0.m = m;
    return m;
}

/* Starts a new M that will run with p (spinning or not). sched.lock not held. */
static bool m_start_new(p_t *p, bool spinning)
{
    m_t *m = m_alloc();
    if (!m)
        return false;
    m->nextp = p;
    m->spinning = spinning;
    rtlock_acquire(&sched.lock);
    m->id = sched.mcount++;
    m->all_link = sched.allm;
    sched.allm = m;
    rtlock_release(&sched.lock);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, SYSSTACK_SIZE * 4);
    pthread_t t;
    int rc = pthread_create(&t, &a, m_thread_main, m);
    pthread_attr_destroy(&a);
    if (rc != 0)
        gort_throw("sched: cannot create a worker thread");
    m->pthread = (uint64_t)t;
    return true;
}

struct m_start_req {
    p_t *p;
    bool spinning;
};

static void *m_start_new_sys(void *arg)
{
    struct m_start_req *r = arg;
    if (!m_start_new(r->p, r->spinning)) {
        /* No memory for an M: the P stays idle; someone else will run its work. */
        rtlock_acquire(&sched.lock);
        pidleput_locked(r->p);
        rtlock_release(&sched.lock);
        if (r->spinning)
            atomic_fetch_sub_explicit(&sched.nmspinning, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Gives p (or an idle P) to an idle or new M. Context: sysstack or task, any locks
 * released. If spinning, the caller already counted the M in nmspinning. */
static void startm(p_t *p, bool spinning)
{
    rtlock_acquire(&sched.lock);
    if (!p) {
        p = pidleget_locked();
        if (!p) {
            rtlock_release(&sched.lock);
            if (spinning)
                atomic_fetch_sub_explicit(&sched.nmspinning, 1, memory_order_relaxed);
            return;
        }
    }
    m_t *m = sched.midle;
    if (m) {
        sched.midle = m->idle_link;
        sched.nmidle--;
        m->nextp = p;
        m->spinning = spinning;
        rtlock_release(&sched.lock);
        m_wake(m);
        return;
    }
    rtlock_release(&sched.lock);
    struct m_start_req req = {p, spinning};
    sysstack_call(m_start_new_sys, &req); /* pthread_create is deep: system stack */
}

/* Wakes an M to look for work if a P is idle and nobody is already looking. */
void wakep(void)
{
    if (atomic_load_explicit(&sched.npidle, memory_order_relaxed) == 0)
        return;
    int zero = 0;
    if (atomic_load_explicit(&sched.nmspinning, memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong_explicit(&sched.nmspinning, &zero, 1,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return;
    startm(NULL, true);
}

p_t *sched_any_p(void)
{
    if (!atomic_load_explicit(&sched_running, memory_order_acquire) || !sched.allp)
        return NULL;
    m_t *m = m_self();
    return m && m->p ? m->p : sched.allp[0];
}

/* A timer became the earliest deadline of its P: make sure an M waits for it. */
void sched_wake_for_timer(int64_t when)
{
    if (atomic_load_explicit(&sched.netpoll_inuse, memory_order_acquire) &&
        when < atomic_load_explicit(&sched.netpoll_until, memory_order_relaxed))
        netpoll_break();
    else
        wakep();
}

/* ------------------------------------------------------------ park and ready */

/* The next task for a fast handoff on m's P, or NULL to go through g0. */
static g_t *sched_next_fast(m_t *m)
{
    p_t *p = m->p;
    if (unlikely(!p || rt_debug.migrate || m->locked_g ||
                 atomic_load_explicit(&sched.stopping, memory_order_relaxed) ||
                 atomic_load_explicit(&stw_requested, memory_order_relaxed)))
        return NULL; /* (gc: through g0, which parks at findrunnable's top) */
    if (unlikely(--p->fast_budget == 0)) {
        p->fast_budget = GLOBAL_CHECK_TICKS;
        p->check_global = true;
        p_tick(p);
        return NULL; /* time to look at the global runq and the timers */
    }
    /* runnext inherits the time slice (Go's inheritTime): the hand-off does not count as
     * a schedule, so a ping-pong pair that keeps handing off through runnext still ends
     * its slice, sysmon preempts it, and the P's queue gets its turn (without this,
     * tasks queued behind a ping-pong pair waited > 200 ms). */
    g_t *g = atomic_load_explicit(&p->runnext, memory_order_relaxed);
    if (!g || !runnext_take(p, g)) {
        p_tick(p);
        /* runnext was just found empty or taken by a thief: the ring (a task readied
         * into runnext since then waits for the next pick, as it would have anyway) */
        g = runq_get_ring(p);
    }
    if (g && unlikely(g->locked_m && g->locked_m != m)) {
        m->nextg = g; /* g0 hands it to its M */
        return NULL;
    }
    return g;
}

void g_park(rtlock_t *unlock, wait_reason_t why, const void *obj)
{
    m_t *m = m_self();
    g_t *g = m->curg;
    if (unlikely(!g))
        gort_throw("g_park: not on a task");
    g->wait_reason = why;
    g->wait_obj = obj;
    /* blocked-task bookkeeping on every park: sysmon's clock costs a load, a clock
     * read (even the coarse vDSO one) cost 3.5% of a channel ping-pong */
    int64_t since = atomic_load_explicit(&sched.sysmon_now, memory_order_relaxed);
    g->wait_since = likely(since) ? since : now_coarse();
    atomic_store_explicit(&g->status, G_WAITING, memory_order_relaxed);
    if (unlock) {
        m->defer_kind = DEFER_UNLOCK;
        m->defer_lock = unlock;
    }
    g_t *next = sched_next_fast(m);
    g_switch_to(g, next ? next : &m->g0);
    g->wait_reason = WAIT_NONE;
}

void g_ready(g_t *g)
{
    /* relaxed: the waker holds the lock the task parked with (or saw it otherwise after
     * the park's switch); the status only guards against double wake-ups. Every waker
     * won the task under a lock or a CAS of its own (a dequeue, select_done, the
     * timer's), so a plain load and store catch a sequential double wake-up; checked
     * builds pay a CAS (a lock xchg, ~20 cycles) to catch a concurrent one too. */
    if (GORT_DEBUG_BUILD) {
        int st = G_WAITING;
        if (unlikely(!atomic_compare_exchange_strong_explicit(&g->status, &st, G_RUNNABLE,
                                                              memory_order_relaxed,
                                                              memory_order_relaxed)))
            gort_throw("g_ready: task is not waiting");
    } else {
        if (unlikely(atomic_load_explicit(&g->status, memory_order_relaxed) != G_WAITING))
            gort_throw("g_ready: task is not waiting");
        atomic_store_explicit(&g->status, G_RUNNABLE, memory_order_relaxed);
    }
    m_t *m = m_self();
    if (m && m->p && !rt_debug.migrate) {
        /* runnext, as Go's ready() does, also from the scheduler's own stack: a task
         * woken by its timer runs next instead of behind the whole queue (sleeper
         * latency under CPU-bound neighbours). release: the next owner of runnext sees
         * g's saved context. */
        p_t *p = m->p;
        if (m->curg) {
            g_t *old = runnext_swap(p, g);
            if (old)
                runq_put_or_global(p, old);
        } else {
            /* From the scheduler (timers, poller): runnext only while it is free, so a
             * batch of timers firing together runs in deadline order. */
            g_t *none = NULL;
            if (!atomic_compare_exchange_strong_explicit(&p->runnext, &none, g,
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed))
                runq_put_or_global(p, g);
        }
    } else {
        globrunq_put(g);
    }
    wakep();
}

void g_yield(bool global)
{
    m_t *m = m_self();
    g_t *g = m->curg;
    if (!g)
        return;
    if (!global && !rt_debug.migrate && runq_empty(m->p) &&
        atomic_load_explicit(&sched.runq_size, memory_order_relaxed) == 0 &&
        m->p->fast_budget > 1) {
        m->p->fast_budget--;
        p_tick(m->p);
        return; /* nothing else could run here: keep going */
    }
    m->defer_kind = global || rt_debug.migrate ? DEFER_READY_GLOBAL : DEFER_READY;
    m->defer_g = g;
    g_t *next = sched_next_fast(m);
    g_switch_to(g, next ? next : &m->g0);
}

/* The running task honours a preemption request at a runtime call (task context). */
void preempt_yield(void)
{
    m_t *m = m_self();
    g_t *g = m->curg;
    if (!g || g->nopreempt || g->lock_thread || m->locks ||
        sched.preempt_mode == GORT_PREEMPT_OFF)
        return;
    __atomic_store_n(&g->preempt, false, __ATOMIC_RELAXED);
    __atomic_store_n(m->tls_stackguard, g->stackguard, __ATOMIC_RELAXED);
    m->p->n_preempt_coop++;
    g_yield(true);
}

void gort_yield(void)
{
    RT_ENTRY_CHECK();
    if (g_self())
        g_yield(false);
}

/* ------------------------------------------------------------ finding work */

static bool runqs_all_empty(void)
{
    for (int i = 0; i < sched.nprocs; i++)
        if (!runq_empty(sched.allp[i]))
            return false;
    return true;
}

static int64_t timers_earliest(void)
{
    int64_t t = INT64_MAX;
    for (int i = 0; i < sched.nprocs; i++) {
        int64_t w = timers_next(sched.allp[i]);
        if (w < t)
            t = w;
    }
    return t;
}

static bool timers_pending(void) { return timers_earliest() != INT64_MAX; }

/* Runs due timers of every P (this M holds p). */
static void timers_run_all(p_t *p, int64_t now)
{
    if (timers_next(p) <= now)
        timers_run(p, now);
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *o = sched.allp[i];
        if (o != p && timers_next(o) <= now)
            timers_run(o, now);
    }
}

static g_t *steal_work(m_t *m)
{
    p_t *p = m->p;
    uint32_t n = (uint32_t)sched.nprocs;
    for (int attempt = 0; attempt < STEAL_TRIES; attempt++) {
        p->fastrand = p->fastrand * 1664525u + 1013904223u; /* LCG: order only */
        uint32_t start = (p->fastrand >> 16) % n;
        for (uint32_t i = 0; i < n; i++) {
            p_t *v = sched.allp[(start + i) % n];
            if (v == p)
                continue;
            /* runnext only on the last attempt: it belongs to a running task that is
             * probably about to block and hand off to it */
            if (runq_steal(p, v, attempt == STEAL_TRIES - 1)) {
                p->n_steals++;
                return runq_get(p);
            }
        }
    }
    return NULL;
}

static void m_reset_spinning(m_t *m)
{
    m->spinning = false;
    /* The last spinner to find work wakes another, in case there is more. */
    if (atomic_fetch_sub_explicit(&sched.nmspinning, 1, memory_order_acq_rel) == 1)
        wakep();
}

/* Takes an idle P for m (which holds none); false if there is none. */
static bool m_acquire_idle_p(m_t *m)
{
    rtlock_acquire(&sched.lock);
    p_t *p = pidleget_locked();
    rtlock_release(&sched.lock);
    if (!p)
        return false;
    m->p = p;
    p_set_m(p, m);
    return true;
}

/* Puts m on the idle list, armed to sleep. sched.lock held. */
static void m_idle_push_locked(m_t *m)
{
    m->idle_link = sched.midle;
    sched.midle = m;
    sched.nmidle++;
    atomic_store_explicit(&m->park_futex, 0, memory_order_relaxed);
}

/* Sleeps until woken; takes the P handed over, if any. False when the runtime stops. */
static bool m_sleep_for_p(m_t *m)
{
    m_sleep(m);
    if (atomic_load_explicit(&sched.stopping, memory_order_acquire))
        return false;
    rtlock_acquire(&sched.lock);
    p_t *p = m->nextp;
    m->nextp = NULL;
    rtlock_release(&sched.lock);
    if (p) {
        m->p = p;
        p_set_m(p, m);
    }
    return true;
}

static bool deadlock_check_locked(void)
{
    if (atomic_load_explicit(&sched.npidle, memory_order_relaxed) != sched.nprocs)
        return false;
    if (sched.runq_head || atomic_load_explicit(&sched.nmsyscall, memory_order_relaxed))
        return false;
    if (atomic_load_explicit(&sched.netpoll_inuse, memory_order_acquire)) {
        netpoll_break(); /* the poller comes back and checks again */
        return false;
    }
    if (netpoll_waiters() > 0 || timers_pending() || !runqs_all_empty())
        return false;
    for (m_t *m = sched.allm; m; m = m->all_link)
        if (m->nextg)
            return false;
    return true;
}

static void sched_stop_locked(int result)
{
    if (atomic_load_explicit(&sched.stopping, memory_order_relaxed))
        return;
    sched.run_result = result;
    atomic_store_explicit(&sched.stopping, true, memory_order_release);
    for (m_t *m = sched.allm; m; m = m->all_link)
        m_wake(m);
    netpoll_break();
}

static void sched_stop(int result)
{
    rtlock_acquire(&sched.lock);
    sched_stop_locked(result);
    rtlock_release(&sched.lock);
}

/* Puts m (no P) on the idle list and sleeps until it is woken, with or without a P
 * (m->p says which). False when the runtime stops: it was stopping already, or
 * deadlock_check found every task blocked with nothing left to wake one (then this
 * stops it with -EDEADLK). Context: g0, no lock held. */
static bool m_idle_sleep(m_t *m, bool deadlock_check)
{
    rtlock_acquire(&sched.lock);
    if (atomic_load_explicit(&sched.stopping, memory_order_relaxed)) {
        rtlock_release(&sched.lock);
        return false;
    }
    if (deadlock_check && deadlock_check_locked()) {
        sched.deadlock = true;
        sched_stop_locked(-EDEADLK);
        rtlock_release(&sched.lock);
        return false;
    }
    m_idle_push_locked(m);
    rtlock_release(&sched.lock);
    return m_sleep_for_p(m);
}

/* Blocks until there is a task to run on m (which then holds a P), or returns NULL
 * when the runtime stops. Context: g0. */
static g_t *findrunnable(m_t *m)
{
top:
    if (atomic_load_explicit(&sched.stopping, memory_order_acquire))
        return NULL;
    p_t *p = m->p;
    if (!p)
        goto idle; /* e.g. back from a system call that found no free P */
    if (unlikely(atomic_load_explicit(&stw_requested, memory_order_relaxed)))
        stw_park_m(m); /* gc: a safe point (a P, no task, no lock) */
    if (m->nextg) {
        g_t *g = m->nextg;
        m->nextg = NULL;
        return g;
    }
    int64_t now = gort_now();
    timers_run_all(p, now);

    g_t *g;
    /* The fast path (sched_next_fast) sends us here with schedtick at a multiple of
     * 61: test the tick we were handed, then advance it. */
    bool check_global = p->check_global || p_tick(p) % GLOBAL_CHECK_TICKS == 0;
    p->check_global = false;
    if (check_global && atomic_load_explicit(&sched.runq_size, memory_order_relaxed) > 0) {
        rtlock_acquire(&sched.lock);
        g = globrunq_get_locked(p, 1);
        rtlock_release(&sched.lock);
        if (g)
            goto found;
    }
    if ((g = runq_get(p)))
        goto found;
    if (atomic_load_explicit(&sched.runq_size, memory_order_relaxed) > 0) {
        rtlock_acquire(&sched.lock);
        g = globrunq_get_locked(p, 0);
        rtlock_release(&sched.lock);
        if (g)
            goto found;
    }
    if (netpoll_waiters() > 0 && !atomic_load_explicit(&sched.netpoll_inuse, memory_order_relaxed)) {
        if (netpoll_poll(0) > 0 && (g = runq_get(p)))
            goto found;
        if (atomic_load_explicit(&sched.runq_size, memory_order_relaxed) > 0)
            goto top;
    }

    /* Steal, unless enough Ms are already spinning. */
    int busy = sched.nprocs - atomic_load_explicit(&sched.npidle, memory_order_relaxed);
    if (m->spinning ||
        2 * atomic_load_explicit(&sched.nmspinning, memory_order_relaxed) < busy) {
        if (!m->spinning) {
            m->spinning = true;
            atomic_fetch_add_explicit(&sched.nmspinning, 1, memory_order_relaxed);
        }
        if ((g = steal_work(m)))
            goto found;
    }

    /* Nothing: give up the P. */
    rtlock_acquire(&sched.lock);
    if (atomic_load_explicit(&sched.stopping, memory_order_relaxed)) {
        rtlock_release(&sched.lock);
        return NULL;
    }
    if ((g = globrunq_get_locked(p, 0))) {
        rtlock_release(&sched.lock);
        goto found;
    }
    m->p = NULL;
    pidleput_locked(p);
    rtlock_release(&sched.lock);

    /* A spinner that stops must look again after it stopped counting as one: a task
     * readied in between saw nmspinning > 0 and woke nobody. */
    bool was_spinning = m->spinning;
    if (m->spinning) {
        m->spinning = false;
        atomic_fetch_sub_explicit(&sched.nmspinning, 1, memory_order_acq_rel);
    }
    if (was_spinning && !runqs_all_empty() && m_acquire_idle_p(m)) {
        m->spinning = true;
        atomic_fetch_add_explicit(&sched.nmspinning, 1, memory_order_relaxed);
        goto top;
    }

    /* Sleep: in the poller if there is I/O or a timer to wait for, else on the futex. */
    int64_t deadline = timers_earliest();
    if ((netpoll_waiters() > 0 || deadline != INT64_MAX)) {
        bool expect = false;
        if (atomic_compare_exchange_strong_explicit(&sched.netpoll_inuse, &expect, true,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            now = gort_now();
            int64_t wait = deadline == INT64_MAX ? -1 : (deadline > now ? deadline - now : 0);
            atomic_store_explicit(&sched.netpoll_until, deadline, memory_order_relaxed);
            /* re-check for work published before we set netpoll_inuse */
            if (wait != 0 &&
                (atomic_load_explicit(&sched.runq_size, memory_order_acquire) > 0 ||
                 !runqs_all_empty()))
                wait = 0;
            netpoll_poll(wait);
            atomic_store_explicit(&sched.netpoll_until, INT64_MAX, memory_order_relaxed);
            atomic_store_explicit(&sched.netpoll_inuse, false, memory_order_release);
            if (m_acquire_idle_p(m))
                goto top;
        }
    }
    if (!m_idle_sleep(m, true))
        return NULL;
    if (m->p)
        goto top;
idle:
    /* No P (woken without one, or back from a system call): take one or sleep. */
    for (;;) {
        if (m_acquire_idle_p(m))
            goto top;
        if (!m_idle_sleep(m, false))
            return NULL;
        if (m->p)
            goto top;
    }

found:
    if (m->spinning)
        m_reset_spinning(m);
    return g;
}

/* ------------------------------------------------------------ the M loop */

static void schedule_loop(m_t *m)
{
    for (;;) {
        g_t *g = findrunnable(m);
        if (!g)
            return;
        if (unlikely(g->locked_m && g->locked_m != m)) {
            /* Pinned to another M: hand it our P and the task, and go idle. */
            m_t *owner = g->locked_m;
            p_t *p = m->p;
            m->p = NULL;
            rtlock_acquire(&sched.lock);
            owner->nextp = p;
            owner->nextg = g;
            rtlock_release(&sched.lock);
            p_set_m(p, owner);
            m_wake(owner);
            continue; /* without a P: findrunnable takes an idle one or sleeps */
        }
        g_execute(m, g);
        /* A pinned task that parked: this M waits for it alone, its P goes to others. */
        while (m->locked_g && !atomic_load_explicit(&sched.stopping, memory_order_acquire) &&
               atomic_load_explicit(&m->locked_g->status, memory_order_acquire) != G_RUNNING) {
            p_t *p = m->p;
            m->p = NULL;
            if (p) {
                rtlock_acquire(&sched.lock);
                pidleput_locked(p);
                rtlock_release(&sched.lock);
                wakep();
            }
            atomic_store_explicit(&m->park_futex, 0, memory_order_relaxed);
            /* re-check after arming the futex: the hand-off may have come already */
            rtlock_acquire(&sched.lock);
            bool handed = m->nextg != NULL;
            rtlock_release(&sched.lock);
            if (!handed)
                m_sleep(m);
            if (atomic_load_explicit(&sched.stopping, memory_order_acquire))
                return;
            rtlock_acquire(&sched.lock);
            p = m->nextp;
            m->nextp = NULL;
            g_t *g2 = m->nextg;
            m->nextg = NULL;
            rtlock_release(&sched.lock);
            if (p && g2) {
                m->p = p;
                p_set_m(p, m);
                g_execute(m, g2);
            } else if (p) {
                /* a P without the task: give it back */
                rtlock_acquire(&sched.lock);
                pidleput_locked(p);
                rtlock_release(&sched.lock);
            }
        }
    }
}

static void *m_thread_main(void *arg)
{
    m_t *m = arg;
    m_init_thread_state(m);
    preempt_m_init(m); /* preempt/: this thread's SIGURG timer and altstack */
    guard_m_init();    /* stackmap/: an altstack for the fault report, if still none */
    rtlock_acquire(&sched.lock);
    m->p = m->nextp;
    m->nextp = NULL;
    rtlock_release(&sched.lock);
    if (m->p)
        p_set_m(m->p, m);
    schedule_loop(m);
    preempt_m_exit(m);
    guard_m_exit();
    gc_thread_stack_release(m->sysstack_lo); /* glibc caches this stack: no stale frames */
    return NULL;
}

/* ------------------------------------------------------------ system calls */

void gort_syscall_enter(void)
{
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    if (!g)
        return;
    /* The P goes idle so another M can run its tasks while this thread blocks. */
    p_t *p = m->p;
    m->p = NULL;
    m->oldp = p;
    atomic_store_explicit(&g->status, G_SYSCALL, memory_order_relaxed);
    atomic_fetch_add_explicit(&sched.nmsyscall, 1, memory_order_relaxed);
    rtlock_acquire(&sched.lock);
    pidleput_locked(p);
    rtlock_release(&sched.lock);
    if (!runq_empty(p) || atomic_load_explicit(&sched.runq_size, memory_order_relaxed) ||
        timers_next(p) != INT64_MAX)
        startm(NULL, false);
}

void gort_syscall_exit(void)
{
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    if (!g || atomic_load_explicit(&g->status, memory_order_relaxed) != G_SYSCALL)
        return;
    atomic_fetch_sub_explicit(&sched.nmsyscall, 1, memory_order_relaxed);
    rtlock_acquire(&sched.lock);
    /* gc: no P while the world is stopped (checked under sched.lock, which the stopper
     * holds while it counts idle Ps) */
    while (unlikely(atomic_load_explicit(&stw_requested, memory_order_relaxed))) {
        rtlock_release(&sched.lock);
        stw_wait_syscall();
        rtlock_acquire(&sched.lock);
    }
    p_t *p = NULL;
    /* Prefer the P we had (its caches are warm), else any idle one. */
    if (m->oldp && atomic_load_explicit(&m->oldp->status, memory_order_relaxed) == 0) {
        for (p_t **pp = &sched.pidle; *pp; pp = &(*pp)->link)
            if (*pp == m->oldp) {
                *pp = m->oldp->link;
                atomic_fetch_sub_explicit(&sched.npidle, 1, memory_order_relaxed);
                atomic_store_explicit(&m->oldp->status, 1, memory_order_relaxed);
                p = m->oldp;
                break;
            }
    }
    if (!p)
        p = pidleget_locked();
    rtlock_release(&sched.lock);
    m->oldp = NULL;
    atomic_store_explicit(&g->status, G_RUNNING, memory_order_relaxed);
    if (p) {
        m->p = p;
        p_set_m(p, m);
        return;
    }
    /* No P free: queue the task and let this M go idle in the scheduler. */
    m->defer_kind = DEFER_READY_GLOBAL;
    m->defer_g = g;
    g_switch_to(g, &m->g0);
}

/* ------------------------------------------------------------ pinning */

void gort_lock_thread(void)
{
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    if (!g)
        return;
    if (g->lock_thread++ == 0) {
        g->locked_m = m;
        m->locked_g = g;
    }
}

void gort_unlock_thread(void)
{
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    if (!g || g->lock_thread == 0)
        return;
    if (--g->lock_thread == 0) {
        g->locked_m = NULL;
        m->locked_g = NULL;
    }
}

void gort_nopreempt_begin(void)
{
    g_t *g = g_self();
    if (g)
        g->nopreempt++;
}

void gort_nopreempt_end(void)
{
    g_t *g = g_self();
    if (g && g->nopreempt > 0)
        g->nopreempt--;
}

/* ------------------------------------------------------------ introspection */

uint64_t gort_self(void)
{
    g_t *g = g_self();
    return g ? g->id : 0;
}

size_t gort_ntasks(void)
{
    if (!atomic_load_explicit(&sched_running, memory_order_acquire))
        return 0;
    return (size_t)atomic_load_explicit(&sched.ntasks, memory_order_relaxed);
}

void gort_stats(gort_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!atomic_load_explicit(&sched_running, memory_order_acquire))
        return;
    out->tasks_live = (uint64_t)atomic_load_explicit(&sched.ntasks, memory_order_relaxed);
    out->tasks_created = atomic_load_explicit(&sched.goidgen, memory_order_relaxed);
    /* Counters are owner-P plain fields: read racily, which is fine for statistics. */
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *p = sched.allp[i];
        out->switches += __atomic_load_n(&p->n_switches, __ATOMIC_RELAXED);
        out->steals += __atomic_load_n(&p->n_steals, __ATOMIC_RELAXED);
        out->preempt_coop += __atomic_load_n(&p->n_preempt_coop, __ATOMIC_RELAXED);
        out->preempt_async += __atomic_load_n(&p->n_preempt_async, __ATOMIC_RELAXED);
    }
    /* relaxed: statistics (stackmap/relocate.c, shrink.c) */
    out->stack_grows = atomic_load_explicit(&stackmap_n_grows, memory_order_relaxed);
    out->stack_shrinks = atomic_load_explicit(&stackmap_n_shrinks, memory_order_relaxed);
    int64_t reused = 0;
    for (int i = 0; i < sched.nprocs; i++)
        reused += __atomic_load_n(&sched.allp[i]->stack_reused, __ATOMIC_RELAXED);
    out->stack_bytes =
        atomic_load_explicit(&stack_bytes_used, memory_order_relaxed) + (uint64_t)reused;
    out->stack_pool_bytes =
        atomic_load_explicit(&stack_bytes_pooled, memory_order_relaxed) - (uint64_t)reused;
    out->procs = (uint64_t)sched.nprocs;
    out->threads = (uint64_t)sched.mcount;
}

/* ------------------------------------------------------------ gort_run */

static int env_int(const char *name, long lo, long hi, long *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        dbg_print("gort: ignoring %s=%s (want %ld..%ld)\n", name, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

static int config_load(const gort_config_t *cfg)
{
    gort_config_t c = cfg ? *cfg : (gort_config_t){0};
    long v;
    if (c.procs < 0 || c.procs > 1024)
        return -EINVAL;
    if (env_int("GORT_PROCS", 1, 1024, &v))
        c.procs = (int)v;
    if (c.procs == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.procs = n > 0 ? (int)(n > 1024 ? 1024 : n) : 1;
    }
    if (env_int("GORT_TIMESLICE_US", 100, 10000000, &v))
        c.timeslice_us = (uint32_t)v;
    if (c.preempt < GORT_PREEMPT_ASYNC || c.preempt > GORT_PREEMPT_OFF)
        return -EINVAL;
    size_t stack_default = STACK_MIN_DEFAULT;
#if defined(GORT_ASAN) || defined(GORT_TSAN)
    stack_default = 64 * 1024; /* instrumented frames are several times larger */
#endif
    if (c.stack_min == 0)
        c.stack_min = stack_default;
    if (c.stack_max == 0)
        c.stack_max = (size_t)1 << 30;
    if (c.main_stack == 0)
        c.main_stack = STACK_MAIN_DEFAULT > stack_default ? STACK_MAIN_DEFAULT : stack_default;
    if (c.stack_min < STACK_MIN_DEFAULT || c.stack_max < c.stack_min ||
        c.main_stack < STACK_MIN_DEFAULT || c.stack_min > c.stack_max ||
        stackpool_class_size(c.stack_min) > ((size_t)STACK_MIN_DEFAULT << (STACK_CLASSES - 1)) ||
        stackpool_class_size(c.main_stack) > ((size_t)STACK_MIN_DEFAULT << (STACK_CLASSES - 1)))
        return -EINVAL;
    sched.nprocs = c.procs;
    sched.stack_min = stackpool_class_size(c.stack_min);
    sched.stack_max = c.stack_max;
    sched.main_stack = stackpool_class_size(c.main_stack);
    sched.timeslice_us = c.timeslice_us ? c.timeslice_us : 10000;
    sched.preempt_mode = c.preempt;
    return 0;
}

/* Spawns the main task (id 1). Context: the gort_run thread, before scheduling. */
int g_spawn_main(void (*fn)(void *), void *arg);

static void teardown(m_t *m0)
{
    /* sysmon first: it signals Ms through their preemption state, which each M frees
     * as it exits (preempt_m_exit) -- a kick during the joins below would write freed
     * memory (TSan). */
    sysmon_stop();
    /* Every other M is asleep or about to notice `stopping`: join them. */
    for (;;) {
        rtlock_acquire(&sched.lock);
        m_t *list = sched.allm;
        rtlock_release(&sched.lock);
        bool again = false;
        for (m_t *m = list; m; m = m->all_link) {
            if (m == m0 || m->exiting)
                continue;
            m_wake(m);
            netpoll_break();
            pthread_join((pthread_t)m->pthread, NULL);
            m->exiting = true;
        }
        rtlock_acquire(&sched.lock);
        again = sched.allm != list;
        rtlock_release(&sched.lock);
        if (!again)
            break;
    }
    guard_uninstall(); /* m0's altstack and the handler; the Ms removed theirs */
    g_destroy_all();
    stress_quarantine_drain();
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *p = sched.allp[i];
        stackpool_flush_p(p);
        timers_destroy(p);
    }
    for (int i = 0; i < sched.nprocs; i++)
        rt_free(sched.allp[i]);
    rt_free(sched.allp);
    sched.allp = NULL; /* sched_any_p and dumps see "no runtime" from here on */
    netpoll_destroy();
    stackpool_destroy();
    m_t *m = sched.allm;
    while (m) {
        m_t *next = m->all_link;
        if (m != m0) {
            rt_free(m->xsave_scratch);
            rt_free(m);
        }
        m = next;
    }
    /* m0 last: nothing may find it through the thread pointer once it is freed */
    void *scratch = m0->xsave_scratch;
    m_set_current_tls(NULL);
    rt_free(scratch);
    rt_free(m0);
}

int gort_run(void (*main_fn)(void *), void *arg, const gort_config_t *cfg)
{
    if (!main_fn)
        return -EINVAL;
    bool expect = false;
    if (!atomic_compare_exchange_strong(&sched_running, &expect, true))
        return -EBUSY;
    if (m_self()) {
        atomic_store(&sched_running, false);
        return -EBUSY;
    }
    sched = (sched_t){0};
    int rc = config_load(cfg);
    if (rc)
        goto out_unrun;
    debug_parse(getenv("GORT_DEBUG"));
    gc_run_start((uintptr_t)__builtin_frame_address(0)); /* gc: caller's frames; SIGQUIT */
    bindnow_check();
    rc = rt_alloc_init();
    if (rc)
        goto out_unrun;
    sched.netpoll_until = INT64_MAX;
    sched.start_time = gort_now();

    rc = -ENOMEM;
    m_t *m0 = m_alloc();
    if (!m0)
        goto out_unrun;
    sched.allp = rt_alloc((size_t)sched.nprocs * sizeof(p_t *));
    if (!sched.allp)
        goto out_free_m0;
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *p = rt_alloc_aligned(sizeof(p_t), CACHE_LINE);
        if (!p)
            goto out_free_ps;
        p->id = i;
        p->fastrand = (uint32_t)i * 7919u + 1;
        p->fast_budget = GLOBAL_CHECK_TICKS;
        sched.allp[i] = p;
    }
    rc = netpoll_init();
    if (rc)
        goto out_free_ps;

    m0->id = sched.mcount++;
    sched.allm = m0;
    m_init_thread_state(m0);
    for (int i = sched.nprocs - 1; i > 0; i--)
        pidleput_locked(sched.allp[i]);
    m0->p = sched.allp[0];
    p_set_m(m0->p, m0);
    atomic_store_explicit(&sched.allp[0]->status, 1, memory_order_relaxed);

    rc = g_spawn_main(main_fn, arg);
    if (rc) {
        netpoll_destroy();
        m_set_current_tls(NULL);
        goto out_free_ps;
    }
    guard_install(); /* stackguard=1 / stackmove=1: the fault report */
    sysmon_start();
    gc_periodic_start(); /* gc: leakcheck_interval_ms */
    schedule_loop(m0);

    rtlock_acquire(&sched.lock);
    sched_stop_locked(sched.run_result);
    rtlock_release(&sched.lock);
    if (sched.deadlock) {
        dbg_print("all tasks are asleep - deadlock!\n\n");
        fflush(stderr);
        dump_tasks_locked_world(stderr);
    }
    rc = sched.run_result;
    teardown(m0);
    atomic_store(&sched_running, false);
    return rc;

out_free_ps:
    if (sched.allp)
        for (int i = 0; i < sched.nprocs; i++)
            rt_free(sched.allp[i]);
    rt_free(sched.allp);
out_free_m0:
    rt_free(m0->xsave_scratch);
    rt_free(m0);
out_unrun:
    sched = (sched_t){0};
    atomic_store(&sched_running, false);
    return rc;
}

/* Called by the main task when it returns: the whole runtime stops. */
void sched_main_returned(void) { sched_stop(leakcheck_at_exit(0)); /* gc: GORT_DEBUG=leakcheck */ }
