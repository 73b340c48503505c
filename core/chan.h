/* core/chan.h — channel internals shared by core/chan.c and core/select.c.
 *
 * A channel is one rt_alloc block: this header, then cap * elem_size bytes of ring
 * buffer. Everything mutable is protected by c->lock (rank chan, 30); several channel
 * locks are taken only by select, in increasing address order.
 *
 * Invariants (under c->lock):
 *  1. At least one of sendq and recvq is empty — except while one select waits to send
 *     and to receive on the same channel.
 *  2. count > 0 implies recvq is empty; count < cap implies sendq is empty.
 *  3. closed implies sendq and recvq are empty (close wakes everyone) and no waiter is
 *     ever queued again.
 *  4. A waiter is in a queue iff its `queued` flag is set; only a holder of c->lock
 *     links or unlinks it, and unlinking clears the flag as its very last access to
 *     the record (release), after which the record may vanish (it lives on the
 *     waiting task's stack).
 *
 * Waking: a waker holding c->lock dequeues a waiter, moves the value straight to or
 * from the waiter's elem (on the parked task's stack: it is not running), sets
 * `success` and g->wait_param, releases c->lock, and only then calls g_ready (Go's
 * rule: never ready a task while holding a channel lock). A direct send/recv parks
 * with c->lock itself, so a waker cannot see it before its registers are saved. A
 * select releases its channel locks before it parks and parks with its own `parklock`
 * instead; every winner of g->select_done passes through that lock before g_ready.
 *
 * For a stack mover (gc shrink of a parked task): the runtime's pointers into a parked
 * task's stack are the records of g->waiting (linked through waitlink; each queued on
 * waiter->c, whose lock must be held while it is moved): their own addresses in the
 * neighbours' next/prev and in c->sendq/recvq, their elem and parklock fields, and for
 * a select with a timeout the select frame's rtimer, which sits in a P's timer heap.
 */
#ifndef GORT_CORE_CHAN_H
#define GORT_CORE_CHAN_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "rt.h"

/* One blocked operation of one task: a direct send/recv, or one case of a select. Lives
 * on the blocked task's stack (or, for a select of many cases, in its rt_alloc block)
 * while the task is parked. */
typedef struct chan_waiter {
    g_t *g;                       /* the blocked task; set before queuing, then constant */
    void *elem;                   /* send: value to take; recv: where to put (NULL ok);
                                     read and written by wakers under c->lock */
    struct chan_waiter *next;     /* c's queue; c->lock (after a dequeue: the waker's
                                     private list, e.g. close's list of tasks to ready) */
    struct chan_waiter *prev;     /* c's queue; c->lock */
    gort_chan_t *c;               /* the channel it is queued on; constant while queued */
    struct chan_waiter *waitlink; /* next record of the same task, from g->waiting; the
                                     task only */
    rtlock_t *parklock;           /* select: the lock its task parks with (wakers pass
                                     through it before g_ready); NULL: the task parks
                                     with c->lock */
    _Atomic bool queued;          /* in c's queue; written under c->lock; the select
                                     task reads it lock-free (acquire) in pass 3 */
    bool success;                 /* set by the waker before g_ready: true = the value
                                     moved, false = woken by close */
} chan_waiter_t;

/* What the timer and the wakers need besides the wait records. On the selecting task's
 * stack while it is parked; a stack mover finds it from a record's parklock
 * (stackmap/shrink.c). */
typedef struct select_frame {
    rtimer_t timer;    /* the timeout; queued in a P's heap from pass 2 to pass 3 */
    rtlock_t parklock; /* the task holds it from pass 2 until its switch; a winner
                          passes through it before g_ready */
    g_t *g;            /* the selecting task; constant */
} select_frame_t;

typedef struct chan_waitq {
    chan_waiter_t *first;         /* oldest waiter (served first); c->lock */
    chan_waiter_t *last;          /* c->lock */
} chan_waitq_t;

struct gort_chan {
    rtlock_t lock;                /* protects every mutable field and the queued waiters */
    uint32_t closed;              /* set once by close; c->lock */
    size_t elem_size;             /* immutable */
    size_t cap;                   /* ring slots; immutable (0 = unbuffered) */
    _Atomic size_t count;         /* values in the ring; written under c->lock, read
                                     lock-free (relaxed) by gort_chan_len only */
    size_t sendx;                 /* next slot to fill; c->lock */
    size_t recvx;                 /* next slot to drain; c->lock */
    chan_waitq_t recvq;           /* blocked receivers; c->lock */
    chan_waitq_t sendq;           /* blocked senders; c->lock */
    _Alignas(16) unsigned char buf[]; /* cap * elem_size bytes; c->lock */
};

/* Any context; takes c->lock. For tests: blocked senders (send) or receivers. */
size_t chan_waiters_count(gort_chan_t *c, bool senders);
/* gort_chan_close without the entry check: for the runtime's callers that hold a lock. */
int chan_close(gort_chan_t *c);

/* The task that may park here: g_self() when running on that task's own stack, NULL
 * outside a task and on a system stack (g_self() still names the task during a
 * sysstack_call / gort_on_system_stack, where parking would save the wrong stack). */
static inline g_t *chan_task_self(void)
{
    g_t *g = g_self();
    if (g && arch_stack_pointer() - g->stack_lo < g->stack_hi - g->stack_lo)
        return g;
    return NULL;
}

/* ---------------------------------------------------------- inline helpers
 * All run with c->lock held, in any context, and never switch. */

static inline void chan_copy(void *dst, const void *src, size_t size)
{
    if (likely(size == 8)) {
        uint64_t v;
        memcpy(&v, src, 8);
        memcpy(dst, &v, 8);
    } else if (size) {
        memcpy(dst, src, size);
    }
}

static inline size_t chan_count(const gort_chan_t *c)
{
    /* relaxed: under c->lock, which orders it; the atomic only serves gort_chan_len */
    return atomic_load_explicit(&c->count, memory_order_relaxed);
}

static inline void chan_count_set(gort_chan_t *c, size_t n)
{
    /* relaxed: a plain store under c->lock; gort_chan_len wants no ordering */
    atomic_store_explicit(&c->count, n, memory_order_relaxed);
}

static inline void waitq_enqueue(chan_waitq_t *q, chan_waiter_t *w)
{
    w->next = NULL;
    w->prev = q->last;
    if (q->last)
        q->last->next = w;
    else
        q->first = w;
    q->last = w;
    /* relaxed: published by the release of c->lock; the lock-free reader only acts on
     * false, which it gets from waitq_unlink's release store */
    atomic_store_explicit(&w->queued, true, memory_order_relaxed);
}

/* Unlinks w (which is queued on q). The release store of `queued` pairs with the
 * acquire load in select pass 3: a select task that sees false may return at once and
 * reuse the stack holding w, so after it only a caller that won w (whose task stays
 * parked until this caller readies it) may touch w again. */
static inline void waitq_unlink(chan_waitq_t *q, chan_waiter_t *w)
{
    chan_waiter_t *n = w->next;
    chan_waiter_t *p = w->prev;
    if (p)
        p->next = n;
    else
        q->first = n;
    if (n)
        n->prev = p;
    else
        q->last = p;
    atomic_store_explicit(&w->queued, false, memory_order_release);
}

chan_waiter_t *waitq_dequeue_slow(chan_waitq_t *q);

/* Removes and returns the oldest waiter that can still be woken, or NULL. A select
 * waiter is returned only if this caller won its task's select_done; the losers are
 * dropped from the queue on the way (their select already fired elsewhere). */
static inline chan_waiter_t *waitq_dequeue(chan_waitq_t *q)
{
    chan_waiter_t *w = q->first;
    if (!w)
        return NULL;
    if (unlikely(w->parklock != NULL))
        return waitq_dequeue_slow(q);
    chan_waiter_t *n = w->next;
    q->first = n;
    if (n)
        n->prev = NULL;
    else
        q->last = NULL;
    /* release: see waitq_unlink (a direct waiter is never read lock-free, but the
     * invariant is the same for every record) */
    atomic_store_explicit(&w->queued, false, memory_order_release);
    return w;
}

/* Readies the task of a waiter that a waker dequeued and filled. Any context; called
 * after c->lock (and every other channel lock) was released. g and parklock were read
 * from the waiter: the record may be gone as soon as g_ready returns. */
static inline void chan_waiter_ready(g_t *g, rtlock_t *parklock)
{
    if (parklock) {
        /* The select task holds parklock from before its waiters became visible until
         * its registers are saved: passing through it orders g_ready after the park. */
        rtlock_acquire(parklock);
        rtlock_release(parklock);
    }
    g_ready(g);
}

/* A sender hands elem to the dequeued receiver w (c->lock held). */
static inline void chan_give_locked(gort_chan_t *c, chan_waiter_t *w, const void *elem)
{
    if (w->elem)
        chan_copy(w->elem, elem, c->elem_size);
    w->success = true;
    w->g->wait_param = w;
}

/* A receiver takes from the dequeued sender w (c->lock held): on an unbuffered channel
 * straight from w's elem; on a full buffered one the oldest buffered value, and w's
 * value takes the freed slot at the tail (which is the same slot). */
static inline void chan_take_locked(gort_chan_t *c, chan_waiter_t *w, void *out)
{
    size_t sz = c->elem_size;
    if (c->cap == 0) {
        if (out)
            chan_copy(out, w->elem, sz);
    } else {
        unsigned char *slot = c->buf + c->recvx * sz;
        if (out)
            chan_copy(out, slot, sz);
        chan_copy(slot, w->elem, sz);
        if (++c->recvx == c->cap)
            c->recvx = 0;
        c->sendx = c->recvx;
    }
    w->success = true;
    w->g->wait_param = w;
}

/* Appends elem to the ring (c->lock held, count < cap). */
static inline void chan_buf_put_locked(gort_chan_t *c, const void *elem)
{
    chan_copy(c->buf + c->sendx * c->elem_size, elem, c->elem_size);
    if (++c->sendx == c->cap)
        c->sendx = 0;
    chan_count_set(c, chan_count(c) + 1);
}

/* Removes the oldest value of the ring into out (NULL ok) (c->lock held, count > 0). */
static inline void chan_buf_get_locked(gort_chan_t *c, void *out)
{
    if (out)
        chan_copy(out, c->buf + c->recvx * c->elem_size, c->elem_size);
    if (++c->recvx == c->cap)
        c->recvx = 0;
    chan_count_set(c, chan_count(c) - 1);
}

#endif
