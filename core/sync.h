/* core/sync.h — the wait records of core/sync.c (mutex, rwmutex, cond, wait group,
 * once), for code that must find them inside a parked task (a stack mover, the task
 * dump), plus test hooks.
 *
 * A task parked with a wait reason WAIT_MUTEX, WAIT_RWMUTEX_R, WAIT_RWMUTEX_W,
 * WAIT_COND, WAIT_WG or WAIT_ONCE has g->waiting pointing at exactly one
 * sync_waiter_t, which lives on that task's own stack. It sits on a circular,
 * doubly linked queue whose head is inside the sync object (never on a global list).
 * Whoever moves the stack of such a task fixes the links with sync_waiter_relocate.
 */
#ifndef GORT_CORE_SYNC_H
#define GORT_CORE_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

typedef struct sync_waiter sync_waiter_t;

/* A FIFO of parked tasks: circular, so head->prev is the tail and one word is enough
 * (the public types are small). NULL head = empty. Protected by the owning object's
 * rtlock. */
typedef struct sync_queue {
    sync_waiter_t *head; /* oldest waiter; the object's lock */
} sync_queue_t;

struct sync_waiter {
    sync_waiter_t *next; /* toward the tail (wraps to head); q's lock */
    sync_waiter_t *prev; /* toward the head (head->prev = tail); q's lock */
    sync_queue_t *q;     /* queue it is on; NULL once a waker dequeued it; q's lock */
    rtlock_t *lock;      /* the lock protecting q; set by the waiter, then read-only */
    g_t *g;              /* the parked task; set by the waiter, then read-only */
    uint32_t ticket;     /* cond only: the notify ticket it waits for; read-only */
};

/* Appends w (or prepends it, with front). Caller holds the queue's lock. */
static inline void sync_queue_push(sync_queue_t *q, sync_waiter_t *w, bool front)
{
    sync_waiter_t *h = q->head;
    w->q = q;
    if (!h) {
        w->next = w;
        w->prev = w;
        q->head = w;
        return;
    }
    w->next = h;
    w->prev = h->prev;
    h->prev->next = w;
    h->prev = w;
    if (front)
        q->head = w;
}

/* Unlinks w, which is on q. Caller holds the queue's lock. */
static inline void sync_queue_remove(sync_queue_t *q, sync_waiter_t *w)
{
    if (w->next == w) {
        q->head = NULL;
    } else {
        w->prev->next = w->next;
        w->next->prev = w->prev;
        if (q->head == w)
            q->head = w->next;
    }
    w->next = NULL;
    w->prev = NULL;
    w->q = NULL;
}

/* Unlinks and returns the oldest waiter, or NULL. Caller holds the queue's lock. */
static inline sync_waiter_t *sync_queue_pop(sync_queue_t *q)
{
    sync_waiter_t *w = q->head;
    if (w)
        sync_queue_remove(q, w);
    return w;
}

/* For a stack mover: the record that was at `old` has been copied to `w` (the task is
 * parked, so the record's contents are unchanged). Repoints its neighbours and the
 * queue head at the new place. Caller holds *w->lock, or the world is stopped (no
 * one can be inside the object's critical section then: runtime code holding an
 * rtlock is never at a safe point). Updating g->waiting is the mover's job. Any
 * context; never switches. */
void sync_waiter_relocate(sync_waiter_t *old, sync_waiter_t *w);

/* Test hooks (tests/core/test_*.c): the number of tasks parked on the object now, and
 * whether a mutex is in starvation (hand-off) mode. They take the object's lock; any
 * context; never switch. For rwmutex, `writers` picks the writers' queues (the
 * writer-writer mutex and the wait for departing readers) instead of the readers'. */
size_t sync_mutex_nwaiters(gort_mutex_t *mu);
bool sync_mutex_is_starving(gort_mutex_t *mu);
size_t sync_rwmutex_nwaiters(gort_rwmutex_t *rw, bool writers);
size_t sync_cond_nwaiters(gort_cond_t *cv);
size_t sync_wg_nwaiters(gort_wg_t *wg);
size_t sync_once_nwaiters(gort_once_t *o);

#endif
