/* core/chan.c — channels: make, send, recv, try_send, try_recv, close, free.
 *
 * Go's design (runtime/chan.go): one lock per channel, a ring buffer, and two FIFO
 * queues of wait records. A send that finds a parked receiver copies the value
 * straight into the receiver's destination on the receiver's stack and readies it
 * (it goes to runnext, so a ping-pong pair hands off without touching a run queue);
 * a receive that finds a parked sender does the mirror image. Only when no peer and
 * no buffer room is there does the caller build a wait record on its own stack,
 * queue it, and park with c->lock ("switch, then release"). core/chan.h states the
 * invariants and the waking protocol shared with select.c.
 *
 * Hot path (unbuffered send to a parked receiver): lock, dequeue, copy, unlock,
 * g_ready. No allocation, no atomic RMW beyond the lock's.
 *
 * Rejected:
 *  - Lock-free fast paths for try_send/try_recv (Go's `empty`/`full` checks): they
 *    save a lock only on failure, and the closed-flag ordering they need is subtle.
 *  - Readying woken tasks under c->lock: g_ready may wake an M (a futex call); holding
 *    the channel lock meanwhile only lengthens everyone's wait. The dequeued task
 *    cannot run before g_ready anyway.
 *  - Blocking outside a task by sleeping the thread: a channel op outside a task that
 *    would have to wait returns -EPERM instead; one that can complete does complete
 *    (try_ variants and close are meant for timer callbacks and foreign threads).
 */
#include "chan.h"
#include "gc/gc.h"

/* Largest channel block: keeps size arithmetic far from overflow. */
#define CHAN_MAX_BYTES ((size_t)1 << 40)

gort_chan_t *gort_chan_make(size_t elem_size, size_t capacity)
{
    if (elem_size && capacity > (CHAN_MAX_BYTES - sizeof(gort_chan_t)) / elem_size)
        return NULL;
    if (capacity > CHAN_MAX_BYTES)
        return NULL;
    gort_chan_t *c = rt_alloc(sizeof(gort_chan_t) + elem_size * capacity);
    if (!c)
        return NULL;
    c->elem_size = elem_size;
    c->cap = capacity;
    return c;
}

int gort_chan_free(gort_chan_t *c)
{
    if (!c)
        return 0;
    rtlock_acquire(&c->lock);
    bool busy = c->recvq.first || c->sendq.first;
    rtlock_release(&c->lock);
    if (busy)
        return -EBUSY;
    rt_free(c);
    return 0;
}

size_t gort_chan_len(const gort_chan_t *c) { return c ? chan_count(c) : 0; }

size_t gort_chan_cap(const gort_chan_t *c) { return c ? c->cap : 0; }

size_t chan_waiters_count(gort_chan_t *c, bool senders)
{
    size_t n = 0;
    rtlock_acquire(&c->lock);
    for (chan_waiter_t *w = senders ? c->sendq.first : c->recvq.first; w; w = w->next)
        n++;
    rtlock_release(&c->lock);
    return n;
}

/* c->lock held, q->first is a select waiter. See waitq_dequeue. */
chan_waiter_t *waitq_dequeue_slow(chan_waitq_t *q)
{
    chan_waiter_t *w;
    while ((w = q->first) != NULL) {
        if (w->parklock) {
            uint32_t zero = 0;
            /* acq_rel: the winner's later writes (value, success, wait_param) are
             * ordered by c->lock and g_ready; acquire keeps a loser from acting on a
             * stale view. Pairs with the other wakers' CAS and the timer's. */
            if (!atomic_compare_exchange_strong_explicit(&w->g->select_done, &zero, 1,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire)) {
                /* Its select fired elsewhere; the task will not look for it here. */
                waitq_unlink(q, w);
                continue;
            }
        }
        waitq_unlink(q, w);
        return w;
    }
    return NULL;
}

/* Task context, c->lock held, no peer and no room: queue a record on this stack and
 * park with c->lock. Switches; the stack may move while parked. */
static __attribute__((noinline)) int chan_send_block(gort_chan_t *c, const void *elem)
{
    g_t *g = chan_task_self();
    if (unlikely(!g)) {
        rtlock_release(&c->lock);
        return -EPERM;
    }
    chan_waiter_t w = {.g = g, .elem = (void *)elem, .c = c};
    waitq_enqueue(&c->sendq, &w);
    g->waiting = &w;
    g->wait_param = NULL;
    g_park(&c->lock, WAIT_CHAN_SEND, c);
    /* Woken by a receiver (success) or by close; either removed w from the queue. */
    g->waiting = NULL;
    g->wait_param = NULL;
    if (unlikely(g->gc_flags & GC_CANCELLED)) { /* leak recovery (gc/leakcheck.c) */
        g->gc_flags &= ~(uint32_t)GC_CANCELLED;
        return -ECANCELED;
    }
    return w.success ? 0 : -EPIPE;
}

static __attribute__((noinline)) int chan_recv_block(gort_chan_t *c, void *out)
{
    g_t *g = chan_task_self();
    if (unlikely(!g)) {
        rtlock_release(&c->lock);
        return -EPERM;
    }
    chan_waiter_t w = {.g = g, .elem = out, .c = c};
    waitq_enqueue(&c->recvq, &w);
    g->waiting = &w;
    g->wait_param = NULL;
    g_park(&c->lock, WAIT_CHAN_RECV, c);
    g->waiting = NULL;
    g->wait_param = NULL;
    if (unlikely(g->gc_flags & GC_CANCELLED)) { /* leak recovery (gc/leakcheck.c) */
        g->gc_flags &= ~(uint32_t)GC_CANCELLED;
        return -ECANCELED;
    }
    return w.success ? 0 : -EPIPE;
}

/* Any context. Completes the send if it can without waiting: returns 0 or -EPIPE with
 * c->lock released, or 1 with c->lock still held when the caller would have to wait. */
static inline __attribute__((always_inline)) int chan_send_now(gort_chan_t *c, const void *elem)
{
    rtlock_acquire(&c->lock);
    if (unlikely(c->closed)) {
        rtlock_release(&c->lock);
        return -EPIPE;
    }
    chan_waiter_t *w = waitq_dequeue(&c->recvq);
    if (w) {
        chan_give_locked(c, w, elem);
        g_t *g = w->g;
        rtlock_t *pl = w->parklock;
        rtlock_release(&c->lock);
        chan_waiter_ready(g, pl);
        return 0;
    }
    if (chan_count(c) < c->cap) {
        chan_buf_put_locked(c, elem);
        rtlock_release(&c->lock);
        return 0;
    }
    return 1;
}

/* Mirror of chan_send_now. A closed channel still hands out what it buffered. */
static inline __attribute__((always_inline)) int chan_recv_now(gort_chan_t *c, void *out)
{
    rtlock_acquire(&c->lock);
    chan_waiter_t *w = waitq_dequeue(&c->sendq);
    if (w) {
        chan_take_locked(c, w, out);
        g_t *g = w->g;
        rtlock_t *pl = w->parklock;
        rtlock_release(&c->lock);
        chan_waiter_ready(g, pl);
        return 0;
    }
    if (chan_count(c) > 0) {
        chan_buf_get_locked(c, out);
        rtlock_release(&c->lock);
        return 0;
    }
    if (c->closed) {
        rtlock_release(&c->lock);
        return -EPIPE;
    }
    return 1;
}

/* Task context (any context if it can complete at once). Blocks, switches. */
int gort_chan_send(gort_chan_t *c, const void *elem)
{
    RT_ENTRY_CHECK();
    if (unlikely(!c || (!elem && c->elem_size)))
        return -EINVAL;
    int r = chan_send_now(c, elem);
    if (likely(r <= 0))
        return r;
    return chan_send_block(c, elem);
}

int gort_chan_recv(gort_chan_t *c, void *out)
{
    RT_ENTRY_CHECK();
    if (unlikely(!c))
        return -EINVAL;
    int r = chan_recv_now(c, out);
    if (likely(r <= 0))
        return r;
    return chan_recv_block(c, out);
}

/* Any context (timer callbacks, foreign threads). Never blocks or switches. */
int gort_chan_try_send(gort_chan_t *c, const void *elem)
{
    RT_ENTRY_CHECK();
    if (unlikely(!c || (!elem && c->elem_size)))
        return -EINVAL;
    int r = chan_send_now(c, elem);
    if (likely(r <= 0))
        return r;
    rtlock_release(&c->lock);
    return -EAGAIN;
}

int gort_chan_try_recv(gort_chan_t *c, void *out)
{
    RT_ENTRY_CHECK();
    if (unlikely(!c))
        return -EINVAL;
    int r = chan_recv_now(c, out);
    if (likely(r <= 0))
        return r;
    rtlock_release(&c->lock);
    return -EAGAIN;
}

/* Moves every waiter of q to the tail of *list, marked as woken by close. */
static void chan_close_drain_locked(chan_waitq_t *q, chan_waiter_t ***tail)
{
    chan_waiter_t *w;
    while ((w = waitq_dequeue(q)) != NULL) {
        w->success = false;
        w->g->wait_param = w;
        w->next = NULL;
        **tail = w;
        *tail = &w->next;
    }
}

/* Any context (timer callbacks, foreign threads, a caller holding a runtime lock: no
 * entry check). Never blocks or switches; the woken tasks run later (receivers first,
 * each queue in FIFO order). */
int chan_close(gort_chan_t *c)
{
    if (unlikely(!c))
        return -EINVAL;
    rtlock_acquire(&c->lock);
    if (c->closed) {
        rtlock_release(&c->lock);
        return -EPIPE;
    }
    c->closed = 1;
    chan_waiter_t *list = NULL;
    chan_waiter_t **tail = &list;
    chan_close_drain_locked(&c->recvq, &tail);
    chan_close_drain_locked(&c->sendq, &tail);
    rtlock_release(&c->lock);
    while (list) {
        /* Read everything before g_ready: the record lives on the woken task's stack. */
        chan_waiter_t *next = list->next;
        chan_waiter_ready(list->g, list->parklock);
        list = next;
    }
    return 0;
}

int gort_chan_close(gort_chan_t *c)
{
    RT_ENTRY_CHECK();
    return chan_close(c);
}
