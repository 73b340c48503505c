/* core/sync.c — gort_mutex_t, gort_rwmutex_t, gort_cond_t, gort_wg_t, gort_once_t with
 * Go's semantics (sync/mutex.go, rwmutex.go, cond.go, waitgroup.go, once.go).
 *
 * Design. Every object carries its own wait queue (sync_queue_t, core/sync.h) and a
 * small rtlock (rank sema.lock) inside itself. Nothing is ever put on a global list or
 * hash table: an object that no live task can reach takes its parked tasks with it,
 * which is exactly what the leak detector needs to call them leaked. The wait records
 * (sync_waiter_t) live on the parked task's own stack, linked from g->waiting so a
 * stack mover can find and relink them. Zero bytes are a valid unlocked/empty object.
 *
 * Parking follows "switch, then release": a task links its record on the queue while
 * holding the object's lock and hands that lock to g_park; a waker takes the same lock,
 * unlinks the record (so it sees only fully parked tasks) and calls g_ready. A single
 * wake reads record->g under the lock and readies after releasing it; a multi-wake
 * (broadcast, writer unlock, wait group, once) readies under the lock, because the
 * records of the tasks not yet readied may be moved by a stack mover once we stop
 * holding the lock that the mover takes to relink them.
 *
 * Semaphores. The mutex and rwmutex are built as in Go: lock-free state words whose
 * slow paths sleep on semaphores (a count plus a queue, both under the object's lock).
 * A release with a waiter queued hands its unit directly to the oldest waiter, so a
 * woken waiter never finds the unit stolen; a release with nobody queued yet banks it
 * in the count, for the waiter that announced itself in the state word but has not
 * reached the queue (no lost wake-ups).
 *
 * Invariants:
 *  1. a record is on a queue iff its task is G_WAITING on that object (or about to be,
 *     while its lock is still held by it); record->q == NULL once dequeued
 *  2. mutex: waiters field of state >= tasks queued on the mutex's semaphore (a counted
 *     waiter may still be on its way to the queue); STARVING implies waiters > 0
 *  3. wait group: waiters > 0 implies counter > 0 (the transition to 0 clears both in
 *     one CAS), and the waiters counted then are the first ones in the queue
 *  4. no sync lock is held while taking another sync lock (all share rank sema.lock)
 *
 * Rejected:
 *  - Go's semtable (a global treap of semaphores keyed by address): a global lock on
 *    every contended operation, and it keeps unreachable objects' waiters reachable.
 *  - one futex per object: blocks the thread, not the task.
 *  - spinning before parking (Go's runtime_canSpin): it needs the scheduler's P counts
 *    (core/sched_impl.h is private to the scheduler); without them a spin on one P burns
 *    the holder's time. To add with an rt.h call such as sched_can_spin(iter).
 *  - a mutex-based once (Go's): waiters would get the mutex one after another after fn
 *    ran; here fn's finisher wakes them all at once.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>

#include "rt.h"
#include "sync.h"

/* ----------------------------------------------------------- wait records */

/* The task we run on, or NULL outside gort or on a system stack (sysstack_call,
 * gort_on_system_stack, timer callbacks): only a task on its own stack may park or
 * yield. (g_self() also answers m->curg on the system stack of a task's M.) */
static inline g_t *sync_task(void)
{
    m_t *m = m_self();
    return m && !m->on_sysstack ? m->curg : NULL;
}

/* Parks the calling task on q (at the front with `front`) with the object's lock l
 * held, handing l to g_park. Task context (a fatal error outside a task: there is no
 * task to park); returns when a waker dequeued the record and readied the task, on
 * any M. */
static void sync_park(rtlock_t *l, sync_queue_t *q, bool front, uint32_t ticket,
                      wait_reason_t why, const void *obj);

RT_COLD __attribute__((noreturn)) static void sync_fatal_no_task(wait_reason_t why)
{
    switch (why) {
    case WAIT_MUTEX:
        gort_fatal("sync: mutex lock would block outside a task");
    case WAIT_RWMUTEX_R:
        gort_fatal("sync: rwmutex rlock would block outside a task");
    case WAIT_RWMUTEX_W:
        gort_fatal("sync: rwmutex lock would block outside a task");
    case WAIT_COND:
        gort_fatal("sync: cond wait outside a task");
    case WAIT_WG:
        gort_fatal("sync: wait group wait would block outside a task");
    case WAIT_ONCE:
        gort_fatal("sync: once would block outside a task");
    default:
        gort_throw("sync: park with a foreign wait reason");
    }
}

static void sync_park(rtlock_t *l, sync_queue_t *q, bool front, uint32_t ticket,
                      wait_reason_t why, const void *obj)
{
    g_t *g = sync_task();
    if (unlikely(!g)) {
        rtlock_release(l);
        sync_fatal_no_task(why);
    }
    sync_waiter_t w = {.lock = l, .g = g, .ticket = ticket};
    sync_queue_push(q, &w, front);
    g->waiting = &w; /* only this task and a mover (task parked) touch it */
    g_park(l, why, obj);
    /* The waker dequeued w under l before readying us; nothing refers to it now. */
    g->waiting = NULL;
}

void sync_waiter_relocate(sync_waiter_t *old, sync_waiter_t *w)
{
    if (!w->q)
        return;
    if (w->next == old) { /* alone: it points at itself */
        w->next = w;
        w->prev = w;
    } else {
        w->prev->next = w;
        w->next->prev = w;
    }
    if (w->q->head == old)
        w->q->head = w;
}

static size_t sync_queue_len_locked(const sync_queue_t *q)
{
    size_t n = 0;
    const sync_waiter_t *w = q->head;
    if (w) {
        do {
            n++;
            w = w->next;
        } while (w != q->head);
    }
    return n;
}

/* -------------------------------------------------------------- semaphores */

/* Pops up to n waiters (all for SIZE_MAX) under the object's lock into a private chain
 * (through their `next` fields: once popped, no one else touches a record) for
 * sync_wake_chain to wake after the caller released the lock. Waking after the release
 * matters: a woken task may return at once and free the object (a wait group, a cond),
 * and the lock's release would then write to freed memory. */
static sync_waiter_t *sync_pop_chain_locked(sync_queue_t *q, size_t n)
{
    sync_waiter_t *first = NULL, **tail = &first;
    for (; n > 0; n--) {
        sync_waiter_t *w = sync_queue_pop(q);
        if (!w)
            break;
        w->next = NULL;
        *tail = w;
        tail = &w->next;
    }
    return first;
}

/* Wakes a chain from sync_pop_chain_locked; no lock held. Reads each record before
 * readying its task, whose stack holds it. */
static void sync_wake_chain(sync_waiter_t *w)
{
    while (w) {
        sync_waiter_t *next = w->next;
        g_ready(w->g);
        w = next;
    }
}

/* Takes a unit of the semaphore (count, q) protected by l, parking until one is
 * handed over. `lifo`: queue at the front (a woken mutex waiter that lost the race
 * keeps its place). Task context when it must park. */
static void sema_acquire(rtlock_t *l, uint32_t *count, sync_queue_t *q, bool lifo,
                         wait_reason_t why, const void *obj)
{
    rtlock_acquire(l);
    if (*count > 0) {
        (*count)--;
        rtlock_release(l);
        return;
    }
    sync_park(l, q, lifo, 0, why, obj);
}

/* Releases one unit: to the oldest waiter directly, else into the count. `handoff`
 * (a starving mutex): the releaser also yields so the waiter, put in runnext by
 * g_ready, runs at once and inherits the time slice. Any context; switches only with
 * handoff in a task. */
static void sema_release(rtlock_t *l, uint32_t *count, sync_queue_t *q, bool handoff)
{
    rtlock_acquire(l);
    sync_waiter_t *w = sync_queue_pop(q);
    if (!w) {
        (*count)++;
        rtlock_release(l);
        return;
    }
    g_t *g = w->g; /* read under l: once l is released the record may move */
    rtlock_release(l);
    g_ready(g);
    if (handoff && sync_task())
        g_yield(false);
}

/* Releases n units at once (rwmutex writer unlock): waiters first, in FIFO order, the
 * rest into the count. Any context; never switches. */
static void sema_release_n(rtlock_t *l, uint32_t *count, sync_queue_t *q, uint32_t n)
{
    rtlock_acquire(l);
    sync_waiter_t *chain = sync_pop_chain_locked(q, n);
    for (sync_waiter_t *w = chain; w; w = w->next)
        n--;
    *count += n;
    rtlock_release(l);
    sync_wake_chain(chain);
}

/* ------------------------------------------------------------------- mutex */

enum {
    MUTEX_LOCKED = 1u,   /* held (in starvation mode: owned by the hand-off target) */
    MUTEX_WOKEN = 2u,    /* a waiter was woken (or spins): unlock need not wake one */
    MUTEX_STARVING = 4u, /* hand-off mode: unlock gives ownership to the oldest waiter */
    MUTEX_WAITER_SHIFT = 3,
};
#define MUTEX_WAITER (1u << MUTEX_WAITER_SHIFT)
/* A waiter that has waited this long switches the mutex to hand-off mode (Go's 1 ms). */
#define MUTEX_STARVE_NS 1000000

struct mutex_impl {
    _Atomic uint32_t state; /* LOCKED|WOKEN|STARVING|waiters<<3; CAS by anyone */
    uint32_t sema;          /* banked wake-ups (see file head); lock */
    rtlock_t lock;          /* sema.lock: sema and q */
    uint32_t pad_;
    sync_queue_t q;         /* parked lockers, FIFO (re-queued ones at the front); lock */
};
_Static_assert(sizeof(struct mutex_impl) <= sizeof(gort_mutex_t), "grow gort_mutex_t");
_Static_assert(_Alignof(struct mutex_impl) <= _Alignof(gort_mutex_t), "align gort_mutex_t");

/* Go's lockSlow: queue on the semaphore, compete when woken, and after waiting more
 * than MUTEX_STARVE_NS switch the mutex to hand-off mode. Task context if it must
 * park; why/obj name the wait (the rwmutex's writers wait on its inner mutex). */
RT_COLD static void mutex_lock_slow(struct mutex_impl *m, wait_reason_t why, const void *obj)
{
    int64_t wait_start = 0;
    bool starving = false;
    bool awoke = false;
    /* relaxed: only a hint for the CAS below, which carries the ordering */
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);
    for (;;) {
        uint32_t new = old;
        if (!(old & MUTEX_STARVING)) /* a starving mutex is handed off: never grab */
            new |= MUTEX_LOCKED;
        if (old & (MUTEX_LOCKED | MUTEX_STARVING))
            new += MUTEX_WAITER;
        /* Only a locked mutex may become starving: unlock expects waiters then. */
        if (starving && (old & MUTEX_LOCKED))
            new |= MUTEX_STARVING;
        if (awoke) {
            /* We were woken by an unlocker that set WOKEN for us: clear it either way. */
            if (unlikely(!(new & MUTEX_WOKEN)))
                gort_throw("sync: inconsistent mutex state");
            new &= ~MUTEX_WOKEN;
        }
        /* acquire: pairs with the unlocker's release fetch_sub when this takes the
         * lock; a failed CAS reloads old (relaxed: we only retry). */
        if (!atomic_compare_exchange_weak_explicit(&m->state, &old, new, memory_order_acquire,
                                                   memory_order_relaxed))
            continue;
        if (!(old & (MUTEX_LOCKED | MUTEX_STARVING)))
            break; /* locked it */
        bool lifo = wait_start != 0; /* waited before: keep our place at the front */
        if (!wait_start)
            wait_start = gort_now();
        sema_acquire(&m->lock, &m->sema, &m->q, lifo, why, obj);
        starving = starving || gort_now() - wait_start > MUTEX_STARVE_NS;
        old = atomic_load_explicit(&m->state, memory_order_relaxed);
        if (old & MUTEX_STARVING) {
            /* Handed off to us: LOCKED is clear and we still count as a waiter. */
            if (unlikely((old & (MUTEX_LOCKED | MUTEX_WOKEN)) || !(old >> MUTEX_WAITER_SHIFT)))
                gort_throw("sync: inconsistent mutex state");
            uint32_t delta = MUTEX_LOCKED - MUTEX_WAITER; /* wraps: mod 2^32 */
            /* Leave hand-off mode when we did not really starve or are the last
             * waiter: two tasks could otherwise hand the lock back and forth forever. */
            if (!starving || (old >> MUTEX_WAITER_SHIFT) == 1)
                delta -= MUTEX_STARVING;
            /* acquire: pairs with the unlocker's release fetch_sub (also ordered by
             * the semaphore's lock and the scheduler's hand-over). */
            atomic_fetch_add_explicit(&m->state, delta, memory_order_acquire);
            break;
        }
        awoke = true;
    }
}

/* Go's unlockSlow: new is the state after LOCKED was dropped. Any context. */
RT_COLD static void mutex_unlock_slow(struct mutex_impl *m, uint32_t new)
{
    if (unlikely(!((new + MUTEX_LOCKED) & MUTEX_LOCKED)))
        gort_fatal("sync: unlock of unlocked mutex");
    if (new & MUTEX_STARVING) {
        /* Ownership goes to the oldest waiter; LOCKED stays clear (it sets it), but
         * STARVING keeps newcomers out meanwhile. */
        sema_release(&m->lock, &m->sema, &m->q, true);
        return;
    }
    uint32_t old = new;
    for (;;) {
        /* Nobody to wake, or someone already woken / locked it / it went starving
         * (then hand-off is the next unlocker's job, not ours). */
        if (!(old >> MUTEX_WAITER_SHIFT) ||
            (old & (MUTEX_LOCKED | MUTEX_WOKEN | MUTEX_STARVING)))
            return;
        new = (old - MUTEX_WAITER) | MUTEX_WOKEN;
        /* relaxed: the woken waiter synchronises through its own CAS on state, which
         * reads our release fetch_sub's value or a later one in its RMW chain. */
        if (atomic_compare_exchange_weak_explicit(&m->state, &old, new, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            sema_release(&m->lock, &m->sema, &m->q, false);
            return;
        }
    }
}

/* The lock fast path: one CAS. Any context. */
static inline void mutex_lock(struct mutex_impl *m, wait_reason_t why, const void *obj)
{
    uint32_t unlocked = 0;
    /* acquire: pairs with the previous holder's release in mutex_unlock */
    if (likely(atomic_compare_exchange_strong_explicit(&m->state, &unlocked, MUTEX_LOCKED,
                                                       memory_order_acquire,
                                                       memory_order_relaxed)))
        return;
    mutex_lock_slow(m, why, obj);
}

static inline void mutex_unlock(struct mutex_impl *m)
{
    /* release: publishes the critical section to the next locker's acquire */
    uint32_t new = atomic_fetch_sub_explicit(&m->state, MUTEX_LOCKED, memory_order_release) -
                   MUTEX_LOCKED;
    if (unlikely(new != 0))
        mutex_unlock_slow(m, new);
}

void gort_mutex_lock(gort_mutex_t *mu)
{
    RT_ENTRY_CHECK();
    mutex_lock((struct mutex_impl *)mu, WAIT_MUTEX, mu);
}

int gort_mutex_trylock(gort_mutex_t *mu)
{
    RT_ENTRY_CHECK();
    struct mutex_impl *m = (struct mutex_impl *)mu;
    /* relaxed: the CAS below carries the ordering */
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);
    do {
        /* A starving mutex belongs to its waiters even when LOCKED is clear. */
        if (old & (MUTEX_LOCKED | MUTEX_STARVING))
            return -EBUSY;
        /* acquire on success: pairs with the previous holder's release */
    } while (!atomic_compare_exchange_weak_explicit(&m->state, &old, old | MUTEX_LOCKED,
                                                    memory_order_acquire, memory_order_relaxed));
    return 0;
}

void gort_mutex_unlock(gort_mutex_t *mu)
{
    RT_ENTRY_CHECK();
    mutex_unlock((struct mutex_impl *)mu);
}

size_t sync_mutex_nwaiters(gort_mutex_t *mu)
{
    struct mutex_impl *m = (struct mutex_impl *)mu;
    rtlock_acquire(&m->lock);
    size_t n = sync_queue_len_locked(&m->q);
    rtlock_release(&m->lock);
    return n;
}

bool sync_mutex_is_starving(gort_mutex_t *mu)
{
    struct mutex_impl *m = (struct mutex_impl *)mu;
    /* relaxed: a test's snapshot */
    return atomic_load_explicit(&m->state, memory_order_relaxed) & MUTEX_STARVING;
}

/* ----------------------------------------------------------------- rwmutex */

/* reader_count goes this far negative while a writer is pending or holds the lock. */
#define RW_MAX_READERS (1 << 30)

struct rwmutex_impl {
    struct mutex_impl w;          /* held by the writer, pending or active: writers queue here */
    _Atomic int32_t reader_count; /* readers in or waiting; - RW_MAX_READERS if a writer; atomic */
    _Atomic int32_t reader_wait;  /* readers the pending writer still waits for; atomic */
    rtlock_t lock;                /* sema.lock: the two semaphores below */
    uint32_t writer_sem;          /* banked wake-up of the pending writer; lock */
    uint32_t reader_sem;          /* banked wake-ups of readers let in by unlock; lock */
    uint32_t pad_;
    sync_queue_t writerq;         /* the pending writer, waiting for readers to leave; lock */
    sync_queue_t readerq;         /* readers waiting for the writer to unlock; lock */
};
_Static_assert(sizeof(struct rwmutex_impl) <= sizeof(gort_rwmutex_t), "grow gort_rwmutex_t");
_Static_assert(_Alignof(struct rwmutex_impl) <= _Alignof(gort_rwmutex_t), "align gort_rwmutex_t");

void gort_rwmutex_rlock(gort_rwmutex_t *rw_)
{
    RT_ENTRY_CHECK();
    struct rwmutex_impl *rw = (struct rwmutex_impl *)rw_;
    /* acquire: pairs with the writer's release in gort_rwmutex_unlock (the RMW chain
     * on reader_count carries it to us) */
    if (unlikely(atomic_fetch_add_explicit(&rw->reader_count, 1, memory_order_acquire) + 1 < 0))
        /* A writer is pending or active: its unlock hands us a unit. */
        sema_acquire(&rw->lock, &rw->reader_sem, &rw->readerq, false, WAIT_RWMUTEX_R, rw);
}

RT_COLD static void rwmutex_runlock_slow(struct rwmutex_impl *rw, int32_t r)
{
    if (unlikely(r + 1 == 0 || r + 1 == -RW_MAX_READERS))
        gort_fatal("sync: runlock of unlocked rwmutex");
    /* acq_rel: the last departing reader acquires the others' releases (RMW chain)
     * and passes them to the writer through the semaphore. */
    if (atomic_fetch_sub_explicit(&rw->reader_wait, 1, memory_order_acq_rel) - 1 == 0)
        sema_release(&rw->lock, &rw->writer_sem, &rw->writerq, false);
}

void gort_rwmutex_runlock(gort_rwmutex_t *rw_)
{
    RT_ENTRY_CHECK();
    struct rwmutex_impl *rw = (struct rwmutex_impl *)rw_;
    /* release: pairs with the writer's acquire RMW on reader_count */
    int32_t r = atomic_fetch_sub_explicit(&rw->reader_count, 1, memory_order_release) - 1;
    if (unlikely(r < 0))
        rwmutex_runlock_slow(rw, r);
}

void gort_rwmutex_lock(gort_rwmutex_t *rw_)
{
    RT_ENTRY_CHECK();
    struct rwmutex_impl *rw = (struct rwmutex_impl *)rw_;
    mutex_lock(&rw->w, WAIT_RWMUTEX_W, rw); /* first, exclude the other writers */
    /* Announce the writer: new readers now queue. acq_rel: acquires the releases of
     * readers that already left (RMW chain on reader_count). */
    int32_t r = atomic_fetch_sub_explicit(&rw->reader_count, RW_MAX_READERS,
                                          memory_order_acq_rel);
    /* Wait for the r readers inside; the ones that leave meanwhile count reader_wait
     * down, so it reaches 0 exactly when the last of them left. acq_rel: pairs with
     * their decrements. */
    if (r != 0 &&
        atomic_fetch_add_explicit(&rw->reader_wait, r, memory_order_acq_rel) + r != 0)
        sema_acquire(&rw->lock, &rw->writer_sem, &rw->writerq, false, WAIT_RWMUTEX_W, rw);
}

void gort_rwmutex_unlock(gort_rwmutex_t *rw_)
{
    RT_ENTRY_CHECK();
    struct rwmutex_impl *rw = (struct rwmutex_impl *)rw_;
    /* Announce no writer. release: pairs with readers' acquire fetch_add. The value
     * counts the readers that queued meanwhile. */
    int32_t r = atomic_fetch_add_explicit(&rw->reader_count, RW_MAX_READERS,
                                          memory_order_acq_rel) + RW_MAX_READERS;
    if (unlikely(r >= RW_MAX_READERS))
        gort_fatal("sync: unlock of unlocked rwmutex");
    /* Let the waiting readers in before the next writer. */
    if (r > 0)
        sema_release_n(&rw->lock, &rw->reader_sem, &rw->readerq, (uint32_t)r);
    mutex_unlock(&rw->w);
}

size_t sync_rwmutex_nwaiters(gort_rwmutex_t *rw_, bool writers)
{
    struct rwmutex_impl *rw = (struct rwmutex_impl *)rw_;
    size_t n = 0;
    if (writers)
        n += sync_mutex_nwaiters((gort_mutex_t *)&rw->w);
    rtlock_acquire(&rw->lock);
    n += sync_queue_len_locked(writers ? &rw->writerq : &rw->readerq);
    rtlock_release(&rw->lock);
    return n;
}

/* -------------------------------------------------------------------- cond */

/* Go's notify list: a waiter takes a ticket before unlocking the mutex, so a signal
 * that comes between its unlock and its park is not lost: signal notifies the oldest
 * ticket not yet notified, whether its task is queued yet or not. */
struct cond_impl {
    _Atomic uint32_t wait;   /* next ticket to hand out; atomic fetch_add */
    _Atomic uint32_t notify; /* next ticket to notify; written under lock, read atomic */
    rtlock_t lock;           /* sema.lock: notify and q */
    uint32_t pad_;
    sync_queue_t q;          /* tasks with un-notified tickets; lock */
};
_Static_assert(sizeof(struct cond_impl) <= sizeof(gort_cond_t), "grow gort_cond_t");
_Static_assert(_Alignof(struct cond_impl) <= _Alignof(gort_cond_t), "align gort_cond_t");

/* a precedes b, with 32-bit wrap-around (2^31 waiters at once is impossible) */
static inline bool ticket_less(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

void gort_cond_wait(gort_cond_t *cv_, gort_mutex_t *mu)
{
    RT_ENTRY_CHECK();
    struct cond_impl *cv = (struct cond_impl *)cv_;
    if (unlikely(!sync_task()))
        sync_fatal_no_task(WAIT_COND);
    /* relaxed: ordered for signalers by the mutex we hold (they load it after taking
     * the mutex, or see an older value and may miss us, as in Go) */
    uint32_t t = atomic_fetch_add_explicit(&cv->wait, 1, memory_order_relaxed);
    mutex_unlock((struct mutex_impl *)mu);
    rtlock_acquire(&cv->lock);
    /* relaxed: written under the lock we hold */
    if (ticket_less(t, atomic_load_explicit(&cv->notify, memory_order_relaxed)))
        rtlock_release(&cv->lock); /* notified before we could park */
    else
        sync_park(&cv->lock, &cv->q, false, t, WAIT_COND, cv);
    mutex_lock((struct mutex_impl *)mu, WAIT_MUTEX, mu);
}

void gort_cond_signal(gort_cond_t *cv_)
{
    RT_ENTRY_CHECK();
    struct cond_impl *cv = (struct cond_impl *)cv_;
    /* Fast path: no waiter since the last notify. relaxed: a racing waiter is not
     * owed this signal (Go's rule); one that held the mutex before us is visible
     * through the mutex if we hold it now. */
    if (atomic_load_explicit(&cv->wait, memory_order_relaxed) ==
        atomic_load_explicit(&cv->notify, memory_order_relaxed))
        return;
    rtlock_acquire(&cv->lock);
    uint32_t t = atomic_load_explicit(&cv->notify, memory_order_relaxed); /* under lock */
    if (t == atomic_load_explicit(&cv->wait, memory_order_relaxed)) {
        rtlock_release(&cv->lock);
        return;
    }
    atomic_store_explicit(&cv->notify, t + 1, memory_order_relaxed); /* under lock */
    /* Tickets are taken in order but queued in any order: look for t. If its task is
     * not queued yet, it sees notify > t under the lock and does not park. */
    sync_waiter_t *w = cv->q.head;
    g_t *g = NULL;
    if (w) {
        do {
            if (w->ticket == t) {
                sync_queue_remove(&cv->q, w);
                g = w->g;
                break;
            }
            w = w->next;
        } while (w != cv->q.head);
    }
    rtlock_release(&cv->lock);
    if (g)
        g_ready(g);
}

void gort_cond_broadcast(gort_cond_t *cv_)
{
    RT_ENTRY_CHECK();
    struct cond_impl *cv = (struct cond_impl *)cv_;
    if (atomic_load_explicit(&cv->wait, memory_order_relaxed) ==
        atomic_load_explicit(&cv->notify, memory_order_relaxed))
        return; /* relaxed: as in gort_cond_signal */
    rtlock_acquire(&cv->lock);
    /* Every ticket handed out so far is notified; later ones are not. relaxed: the
     * store is under the lock that waiters read it under. */
    atomic_store_explicit(&cv->notify, atomic_load_explicit(&cv->wait, memory_order_relaxed),
                          memory_order_relaxed);
    sync_waiter_t *chain = sync_pop_chain_locked(&cv->q, SIZE_MAX);
    rtlock_release(&cv->lock);
    sync_wake_chain(chain);
}

size_t sync_cond_nwaiters(gort_cond_t *cv_)
{
    struct cond_impl *cv = (struct cond_impl *)cv_;
    rtlock_acquire(&cv->lock);
    size_t n = sync_queue_len_locked(&cv->q);
    rtlock_release(&cv->lock);
    return n;
}

/* -------------------------------------------------------------- wait group */

#define WG_MAX INT32_MAX /* the counter's range: [0, WG_MAX] */

struct wg_impl {
    _Atomic uint64_t state; /* counter << 32 | waiters; CAS by anyone */
    rtlock_t lock;          /* sema.lock: q, and waiters' increments */
    uint32_t pad_;
    sync_queue_t q;         /* parked waiters, oldest generation first; lock */
};
_Static_assert(sizeof(struct wg_impl) <= sizeof(gort_wg_t), "grow gort_wg_t");
_Static_assert(_Alignof(struct wg_impl) <= _Alignof(gort_wg_t), "align gort_wg_t");

/* Wakes the w waiters of a generation whose counter just reached 0. They are the first
 * w records of the queue: each counted itself and queued in one hold of the lock, and
 * did so before the counter reached 0, so before any later generation's waiter; a
 * releaser of a later generation that locks first wakes our waiters instead of its
 * own, which is as good (both generations are complete). Any context; never switches. */
RT_COLD static void wg_release(struct wg_impl *wg, uint32_t w)
{
    rtlock_acquire(&wg->lock);
    sync_waiter_t *chain = sync_pop_chain_locked(&wg->q, w);
    size_t got = 0;
    for (sync_waiter_t *x = chain; x; x = x->next)
        got++;
    if (unlikely(got != w))
        gort_throw("sync: wait group waiter missing");
    rtlock_release(&wg->lock);
    sync_wake_chain(chain); /* a woken waiter may free the wait group at once */
}

static int wg_add(gort_wg_t *wg_, int64_t n)
{
    struct wg_impl *wg = (struct wg_impl *)wg_;
    /* relaxed: only the first guess for the CAS */
    uint64_t old = atomic_load_explicit(&wg->state, memory_order_relaxed);
    for (;;) {
        int64_t v = (int64_t)(old >> 32);
        uint32_t w = (uint32_t)old;
        if (n > WG_MAX - v || n < -v)
            return -ERANGE; /* nothing changed */
        int64_t nv = v + n;
        /* Reaching 0 also clears the waiters, in the same CAS: they are ours to wake. */
        uint64_t new = nv == 0 ? 0 : ((uint64_t)nv << 32) | w;
        /* acq_rel: every add/done releases what its task did before it; the CAS that
         * reaches 0 acquires all of it (RMW chain) for the waiters it wakes, and a
         * waiter that sees 0 acquires it from this store. */
        if (atomic_compare_exchange_weak_explicit(&wg->state, &old, new, memory_order_acq_rel,
                                                  memory_order_relaxed)) {
            if (nv == 0 && w > 0)
                wg_release(wg, w);
            return 0;
        }
    }
}

int gort_wg_add(gort_wg_t *wg, int64_t n)
{
    RT_ENTRY_CHECK();
    return wg_add(wg, n);
}

int gort_wg_done(gort_wg_t *wg)
{
    RT_ENTRY_CHECK();
    return wg_add(wg, -1);
}

RT_COLD static void wg_wait_slow(struct wg_impl *wg)
{
    rtlock_acquire(&wg->lock);
    /* acquire: if it is 0, pairs with the CAS that made it 0 */
    uint64_t old = atomic_load_explicit(&wg->state, memory_order_acquire);
    for (;;) {
        if ((old >> 32) == 0) {
            rtlock_release(&wg->lock);
            return;
        }
        /* Count ourselves and queue in one hold of the lock (see wg_release).
         * acquire on failure: a reload that reads 0 pairs with the CAS that made it 0. */
        if (atomic_compare_exchange_weak_explicit(&wg->state, &old, old + 1,
                                                  memory_order_acquire, memory_order_acquire))
            break;
    }
    sync_park(&wg->lock, &wg->q, false, 0, WAIT_WG, wg);
}

void gort_wg_wait(gort_wg_t *wg_)
{
    RT_ENTRY_CHECK();
    struct wg_impl *wg = (struct wg_impl *)wg_;
    /* acquire: pairs with the add/done CAS that made the counter 0 */
    if (likely((atomic_load_explicit(&wg->state, memory_order_acquire) >> 32) == 0))
        return;
    wg_wait_slow(wg);
}

size_t sync_wg_nwaiters(gort_wg_t *wg_)
{
    struct wg_impl *wg = (struct wg_impl *)wg_;
    rtlock_acquire(&wg->lock);
    size_t n = sync_queue_len_locked(&wg->q);
    rtlock_release(&wg->lock);
    return n;
}

/* -------------------------------------------------------------------- once */

enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

struct once_impl {
    _Atomic uint32_t state; /* ONCE_*; NEW->RUNNING by the CAS winner, ->DONE by it */
    rtlock_t lock;          /* sema.lock: q */
    sync_queue_t q;         /* callers that came while fn ran; lock */
};
_Static_assert(sizeof(struct once_impl) <= sizeof(gort_once_t), "grow gort_once_t");
_Static_assert(_Alignof(struct once_impl) <= _Alignof(gort_once_t), "align gort_once_t");

RT_COLD static void once_slow(struct once_impl *o, void (*fn)(void))
{
    uint32_t s = ONCE_NEW;
    /* acquire on failure: if it reads DONE, pairs with the runner's release store
     * (C11 wants the success order at least as strong) */
    if (atomic_compare_exchange_strong_explicit(&o->state, &s, ONCE_RUNNING,
                                                memory_order_acquire, memory_order_acquire)) {
        if (fn)
            fn();
        /* release: publishes fn's effects to every caller that reads DONE */
        atomic_store_explicit(&o->state, ONCE_DONE, memory_order_release);
        rtlock_acquire(&o->lock);
        sync_waiter_t *chain = sync_pop_chain_locked(&o->q, SIZE_MAX);
        rtlock_release(&o->lock);
        sync_wake_chain(chain);
        return;
    }
    if (s == ONCE_DONE)
        return;
    rtlock_acquire(&o->lock);
    /* Checked under the lock: the runner stores DONE before it takes the lock to wake
     * the queue, so if we still see RUNNING here it will find us queued. acquire:
     * pairs with its release store. */
    if (atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_DONE) {
        rtlock_release(&o->lock);
        return;
    }
    sync_park(&o->lock, &o->q, false, 0, WAIT_ONCE, o);
}

void gort_once(gort_once_t *o_, void (*fn)(void))
{
    RT_ENTRY_CHECK();
    struct once_impl *o = (struct once_impl *)o_;
    /* acquire: pairs with the runner's release store of DONE */
    if (likely(atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_DONE))
        return;
    once_slow(o, fn);
}

size_t sync_once_nwaiters(gort_once_t *o_)
{
    struct once_impl *o = (struct once_impl *)o_;
    rtlock_acquire(&o->lock);
    size_t n = sync_queue_len_locked(&o->q);
    rtlock_release(&o->lock);
    return n;
}
