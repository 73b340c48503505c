/* core/timer.c — one-shot timers on per-P 4-ary min-heaps.
 *
 * Each P keeps the timers started on it in a heap ordered by deadline, behind
 * p->timers_lock (rank 50, p.timers), and publishes the earliest deadline in
 * p->timer0_when so the scheduler can decide how long to sleep without a lock. An M
 * runs the due timers of its own P in its scheduling loop, and of other Ps when it
 * steals (timers_run); several Ms may run the same heap at once, the lock decides who
 * pops which timer. Callbacks run with the lock released, on a system stack.
 *
 * Invariants:
 *  1. t->state == TIMER_QUEUED or TIMER_QUEUED_HANDOFF  <=>  t is in exactly one heap,
 *     t->p names it and p->timers[t->heap_index] == t (all under that p's lock).
 *  2. p->timer0_when == (p->ntimers ? max(p->timers[0]->when, 1) : 0) whenever
 *     p->timers_lock is free.
 *  3. TIMER_RUNNING: popped, fn is running or about to; the only store that leaves it
 *     is the release store of TIMER_IDLE after fn returned, and it is the last access
 *     of timers_run to t. timer_stop waits for it (so the owner may free t).
 *  4. A handoff timer (timer_start_handoff, timer_park) goes QUEUED_HANDOFF -> IDLE
 *     under the lock when popped; timers_run never touches it after calling fn.
 * Consequences for callbacks: a plain timer's fn must not restart or stop its own timer
 * (it is RUNNING: timer_start throws, timer_stop would wait for itself); a handoff
 * timer's fn may restart it (periodic timers).
 *
 * Rejected:
 *  - One global heap: every sleep from every P would contend on one lock.
 *  - Lock-free timer states with deferred deletion (Go 1.14-1.22's timerDeleted &c.):
 *    cheaper stop, but a dozen states and subtle adjust/clean passes; our users stop
 *    timers rarely (ctx free, select timeout), so a locked removal is cheap enough.
 *  - A binary heap: 4-ary is shallower and sifts touch fewer cache lines (Go uses 4).
 *  - Setting IDLE before calling fn for every timer: then timer_stop could not promise
 *    that fn has returned, and embedded timers could not be freed safely after it.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/arch.h"
#include "rt.h"
#include "timer.h"

/* Internal state of a queued handoff timer (invariant 4); never seen outside. */
enum { TIMER_QUEUED_HANDOFF = 3 };

enum { HEAP_ARITY = 4, HEAP_CAP_MIN = 16, STOP_SPINS = 128 };

/* ---------------------------------------------------------------- the heap */

static inline void heap_set(p_t *p, uint32_t i, rtimer_t *t)
{
    p->timers[i] = t;
    t->heap_index = (int32_t)i;
}

/* Moves the timer at i up toward the root. p.timers held. */
static void heap_sift_up(p_t *p, uint32_t i)
{
    rtimer_t *t = p->timers[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / HEAP_ARITY;
        rtimer_t *pt = p->timers[parent];
        if (pt->when <= t->when)
            break;
        heap_set(p, i, pt);
        i = parent;
    }
    heap_set(p, i, t);
}

/* Moves the timer at i down toward the leaves. p.timers held. */
static void heap_sift_down(p_t *p, uint32_t i)
{
    rtimer_t *t = p->timers[i];
    uint32_t n = p->ntimers;
    for (;;) {
        uint32_t c = i * HEAP_ARITY + 1;
        if (c >= n)
            break;
        uint32_t best = c;
        uint32_t end = c + HEAP_ARITY < n ? c + HEAP_ARITY : n;
        for (uint32_t k = c + 1; k < end; k++)
            if (p->timers[k]->when < p->timers[best]->when)
                best = k;
        if (p->timers[best]->when >= t->when)
            break;
        heap_set(p, i, p->timers[best]);
        i = best;
    }
    heap_set(p, i, t);
}

/* Invariant 2; called before every release of p.timers that changed the heap. */
static void heap_publish(p_t *p)
{
    int64_t w = 0;
    if (p->ntimers) {
        w = p->timers[0]->when;
        if (w < 1)
            w = 1;
    }
    /* release: a reader that sees w also sees the heap entry it came from; the value is
     * only a hint, timers_run rechecks under the lock */
    atomic_store_explicit(&p->timer0_when, w, memory_order_release);
}

/* Removes the timer at i. p.timers held. */
static void heap_remove(p_t *p, uint32_t i)
{
    uint32_t last = --p->ntimers;
    rtimer_t *t = p->timers[i];
    if (i != last) {
        heap_set(p, i, p->timers[last]);
        heap_sift_up(p, i);   /* at most one of the two moves it */
        heap_sift_down(p, i);
    }
    p->timers[last] = NULL;
    t->heap_index = -1;
}

/* Makes room for one more timer. p.timers held on entry and on return; it is dropped
 * around the allocation (rt_alloc may switch to the system stack and take jemalloc's
 * locks), so the caller must re-read anything it read under it. */
static void heap_reserve(p_t *p)
{
    while (p->ntimers == p->timers_cap) {
        uint32_t cap = p->timers_cap;
        uint32_t ncap = cap ? cap * 2 : HEAP_CAP_MIN;
        rtlock_release(&p->timers_lock);
        rtimer_t **nt = rt_alloc(sizeof(rtimer_t *) * ncap);
        if (unlikely(!nt))
            gort_throw("timer: out of memory for a timer heap");
        rtlock_acquire(&p->timers_lock);
        void *spare = nt;
        if (p->timers_cap == cap) { /* nobody grew it meanwhile */
            for (uint32_t i = 0; i < p->ntimers; i++)
                nt[i] = p->timers[i];
            spare = p->timers;
            p->timers = nt;
            p->timers_cap = ncap;
        }
        rt_free(spare); /* rare; jemalloc takes no runtime lock */
    }
}

/* Inserts t, in state `state`, into p's heap; returns true if t became the earliest.
 * p.timers held. */
static bool heap_add(p_t *p, rtimer_t *t, uint32_t state)
{
    heap_reserve(p);
    uint32_t i = p->ntimers++;
    p->timers[i] = t;
    t->heap_index = (int32_t)i;
    heap_sift_up(p, i);
    /* relaxed: t->p is read lock-free only by timer_stop after its acquire load of
     * state, which the release store below orders after this one */
    atomic_store_explicit(&t->p, p, memory_order_relaxed);
    /* release: pairs with the acquire load in timer_stop (sees t->p) */
    atomic_store_explicit(&t->state, state, memory_order_release);
    bool first = t->heap_index == 0;
    heap_publish(p);
    return first;
}

/* --------------------------------------------------------------- the calls */

p_t *timer_home_p(void)
{
    m_t *m = m_self();
    p_t *p = m ? m->p : NULL;
    return p ? p : sched_any_p();
}

static void timer_check_idle(rtimer_t *t)
{
    /* relaxed: only the owner starts a timer, and it saw IDLE with acquire (timer_stop)
     * or set it up itself */
    if (unlikely(atomic_load_explicit(&t->state, memory_order_relaxed) != TIMER_IDLE))
        gort_throw("timer: start of a timer that is queued or running");
}

/* any context inside a runtime; never switches. */
static void timer_start_as(rtimer_t *t, uint32_t state)
{
    timer_check_idle(t);
    p_t *p = timer_home_p();
    if (unlikely(!p))
        gort_throw("timer: start with no runtime running");
    /* Read before the unlock: once t is in the heap another M may run it, and a
     * handoff timer's fn may free it (gort_after's record) before we look again. */
    int64_t when = t->when;
    rtlock_acquire(&p->timers_lock);
    bool first = heap_add(p, t, state);
    rtlock_release(&p->timers_lock);
    if (first)
        sched_wake_for_timer(when);
}

void timer_start(rtimer_t *t) { timer_start_as(t, TIMER_QUEUED); }

void timer_start_handoff(rtimer_t *t) { timer_start_as(t, TIMER_QUEUED_HANDOFF); }

/* task context; switches. Lean: runs on a 2 KiB task stack. */
void timer_park(rtimer_t *t, wait_reason_t why, const void *obj)
{
    timer_check_idle(t);
    /* The P may change under us (preemption) until the lock is held; any P's heap does. */
    p_t *p = m_self()->p;
    rtlock_acquire(&p->timers_lock);
    if (heap_add(p, t, TIMER_QUEUED_HANDOFF))
        sched_wake_for_timer(t->when);
    g_park(&p->timers_lock, why, obj);
}

/* any context. Spins while fn runs: keep callbacks short. */
bool timer_stop(rtimer_t *t)
{
    for (int spins = 0;; spins++) {
        /* acquire: pairs with the release stores in heap_add (t->p is valid) and after
         * fn in timers_run (fn's accesses to t happen before our caller frees it) */
        uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
        if (s == TIMER_IDLE)
            return false;
        if (s == TIMER_RUNNING) {
            if (spins < STOP_SPINS)
                arch_spin_pause();
            else
                syscall(SYS_sched_yield); /* the M running fn was descheduled
                                           * (<sched.h> is shadowed by core/sched.h) */
            continue;
        }
        /* relaxed: ordered by the acquire load of state above; rechecked under lock */
        p_t *p = atomic_load_explicit(&t->p, memory_order_relaxed);
        if (unlikely(!p))
            continue; /* popped between the two loads; state moves on */
        rtlock_acquire(&p->timers_lock);
        /* relaxed: the lock orders every change of a queued timer's state and p */
        if (atomic_load_explicit(&t->p, memory_order_relaxed) == p &&
            atomic_load_explicit(&t->state, memory_order_relaxed) == s) {
            heap_remove(p, (uint32_t)t->heap_index);
            heap_publish(p);
            atomic_store_explicit(&t->p, NULL, memory_order_relaxed);
            /* relaxed: the owner is the caller; no one else reads t any more */
            atomic_store_explicit(&t->state, TIMER_IDLE, memory_order_relaxed);
            rtlock_release(&p->timers_lock);
            return true;
        }
        rtlock_release(&p->timers_lock);
    }
}

/* For a stack mover (stackmap/shrink.c): t lives on a parked task's stack. Returns 1
 * with t's heap lock held when t is queued (then the mover may copy t and call
 * timer_moved_locked), 0 with no lock when t is idle (never started, or fired and
 * done), -EBUSY when its callback is running or about to. any context; never switches. */
int timer_lock_queued(rtimer_t *t, p_t **out)
{
    for (;;) {
        /* acquire: as timer_stop (t->p is valid when the state says queued) */
        uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
        if (s == TIMER_IDLE)
            return 0;
        if (s == TIMER_RUNNING)
            return -EBUSY;
        /* relaxed: ordered by the acquire load above; rechecked under the lock */
        p_t *p = atomic_load_explicit(&t->p, memory_order_relaxed);
        if (!p)
            continue; /* popped between the two loads; state moves on */
        rtlock_acquire(&p->timers_lock);
        /* relaxed: the lock orders every change of a queued timer's state and p */
        if (atomic_load_explicit(&t->p, memory_order_relaxed) == p &&
            atomic_load_explicit(&t->state, memory_order_relaxed) == s) {
            *out = p;
            return 1;
        }
        rtlock_release(&p->timers_lock);
    }
}

void timer_moved_locked(p_t *p, rtimer_t *t)
{
    p->timers[t->heap_index] = t;
}

int64_t timers_next(p_t *p)
{
    /* acquire: pairs with heap_publish; a hint only */
    int64_t w = atomic_load_explicit(&p->timer0_when, memory_order_acquire);
    return w ? w : INT64_MAX;
}

/* sysstack; no rtlock held on entry. */
int64_t timers_run(p_t *p, int64_t now)
{
    int64_t next = timers_next(p);
    if (next > now)
        return next;
    rtlock_acquire(&p->timers_lock);
    while (p->ntimers && p->timers[0]->when <= now) {
        rtimer_t *t = p->timers[0];
        heap_remove(p, 0);
        heap_publish(p);
        void (*fn)(rtimer_t *, int64_t) = t->fn;
        /* relaxed: the lock orders it with timer_stop's recheck */
        bool handoff = atomic_load_explicit(&t->state, memory_order_relaxed) ==
                       TIMER_QUEUED_HANDOFF;
        atomic_store_explicit(&t->p, NULL, memory_order_relaxed);
        /* release: a timer_stop that sees RUNNING or IDLE without the lock also sees
         * t->p == NULL; for a handoff timer IDLE is final here (invariant 4) */
        atomic_store_explicit(&t->state, handoff ? TIMER_IDLE : TIMER_RUNNING,
                              memory_order_release);
        rtlock_release(&p->timers_lock);
        fn(t, now);
        if (!handoff)
            /* release: pairs with timer_stop's acquire load; last access to t */
            atomic_store_explicit(&t->state, TIMER_IDLE, memory_order_release);
        rtlock_acquire(&p->timers_lock);
    }
    next = p->ntimers ? p->timers[0]->when : INT64_MAX;
    rtlock_release(&p->timers_lock);
    return next;
}

/* Teardown: no M runs, so no lock is needed (taken anyway: cheap, and keeps the rule). */
void timers_destroy(p_t *p)
{
    rtlock_acquire(&p->timers_lock);
    for (uint32_t i = 0; i < p->ntimers; i++) {
        rtimer_t *t = p->timers[i];
        p->timers[i] = NULL;
        t->heap_index = -1;
        atomic_store_explicit(&t->p, NULL, memory_order_relaxed);   /* no M runs */
        atomic_store_explicit(&t->state, TIMER_IDLE, memory_order_relaxed);
        after_timer_drop(t);
    }
    rtimer_t **arr = p->timers;
    p->timers = NULL;
    p->ntimers = 0;
    p->timers_cap = 0;
    atomic_store_explicit(&p->timer0_when, 0, memory_order_relaxed); /* no M runs */
    rtlock_release(&p->timers_lock);
    rt_free(arr);
}
