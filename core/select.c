/* core/select.c — gort_select: wait on several channel operations, run exactly one.
 *
 * Go's algorithm (runtime/select.go), in three passes over the cases that have a
 * channel (a NULL channel never proceeds and is left out of both orders):
 *   poll order — a uniformly random permutation; the first ready case in it proceeds,
 *                which makes the choice uniform among the ready cases;
 *   lock order — the cases sorted by channel address (heap sort: O(n log n), constant
 *                stack), so two selects lock shared channels in the same order, and a
 *                channel named by several cases is locked once.
 *   pass 1  — all channel locks held: poll for a peer, buffered value, buffer room or a
 *             closed channel; perform the first one found (exactly as chan.c would).
 *   pass 2  — nothing ready and the caller may wait: queue one wait record per case (in
 *             lock order, linked from g->waiting), take this select's parklock, release
 *             the channel locks, start the timeout timer, park with parklock.
 *   pass 3  — woken: stop the timer, then unlink the records still queued. The winner
 *             is g->wait_param (NULL: the timer won).
 * Exactly one waker wins: every waker (a peer's send/recv/close in chan.c, another
 * select's pass 1, or the timer) must CAS g->select_done from 0 to 1 first; losers
 * just drop the record from their queue.
 *
 * Why a parklock: g_park releases one lock after the switch, but a select holds many.
 * It releases them all before parking, so a waker may find a record before the task
 * has stopped running; the winner therefore passes through parklock (held by the task
 * until its registers are saved) before g_ready. Lock order: chan < parklock < p.timers:
 * parklock is taken under the channel locks, which are then released, and timer_start
 * runs with parklock alone held, so the timer cannot win before the park either.
 *
 * Pass 3 locks only channels where one of its records is still queued (`queued`,
 * acquire): a channel whose records all went (the winner's, or all of them by close)
 * is never touched again. This saves a lock round trip on the winning channel, and it
 * makes `gort_chan_close(c); gort_chan_free(c)` safe for a select woken by that close
 * (close unlinks every record on c before it readies anyone). It does not cover a
 * select woken elsewhere whose record on c a concurrent close removes between the
 * `queued` load and the lock: freeing c then is the program's use-after-free, as in
 * any call still running on a freed channel.
 *
 * Stack: the frame holds up to SELECT_INLINE wait records and the timer (~400 bytes
 * with gort_select's); larger selects take one rt_alloc block for records and orders.
 *
 * Rejected:
 *  - A timeout channel (Go's time.After in a case): an allocation and a channel per
 *    call; the embedded rtimer costs nothing when the select does not block.
 *  - Locking every channel again in pass 3 (Go does, to reset selectDone and read
 *    param under the locks): g_ready already orders wait_param, select_done is reset
 *    only at the next pass 2 when no record of this task is queued anywhere, and not
 *    touching drained channels makes close-then-free safe for tasks the close woke.
 */
#include "chan.h"
#include "gc/gc.h"

#define SELECT_MAX_CASES 65536u /* case indices fit in uint16_t */
#define SELECT_INLINE 4u        /* cases whose records and orders fit in the frame */

/* Per-thread PRNG state for poll orders (splitmix64). Touched only inside
 * select_shuffle, which never switches, so a task that resumes on another thread
 * never uses a stale thread's address. */
static __thread uint64_t select_rng;

/* Any context. Writes a uniformly random permutation of the indices of the cases that
 * have a channel into poll (inside-out Fisher-Yates) and returns their count. */
static __attribute__((noinline)) size_t select_shuffle(const gort_case_t *cases,
                                                       size_t n, uint16_t *poll)
{
    uint64_t s = select_rng;
    if (unlikely(s == 0))
        s = (uint64_t)gort_now() ^ (uint64_t)(uintptr_t)&select_rng ^ 0x2545f4914f6cdd1dull;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        s += 0x9e3779b97f4a7c15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        /* Lemire's multiply-shift: j uniform in [0, k] (bias < 2^-16 for k < 2^16) */
        size_t j = (size_t)(((z >> 32) * (uint64_t)(k + 1)) >> 32);
        poll[k] = poll[j];
        poll[j] = (uint16_t)i;
        k++;
    }
    select_rng = s ? s : 1;
    return k;
}

static inline uintptr_t select_key(const gort_case_t *cases, uint16_t i)
{
    return (uintptr_t)cases[i].chan;
}

/* Heap sort of the poll order by channel address into lo (starting from the poll order
 * keeps cases on the same channel in random relative order). */
static void select_sort(const gort_case_t *cases, const uint16_t *poll, uint16_t *lo,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t v = poll[i];
        uintptr_t key = select_key(cases, v);
        size_t j = i;
        while (j > 0) {
            size_t parent = (j - 1) / 2;
            if (select_key(cases, lo[parent]) >= key)
                break;
            lo[j] = lo[parent];
            j = parent;
        }
        lo[j] = v;
    }
    for (size_t i = n; i-- > 1;) {
        uint16_t v = lo[i];
        uintptr_t key = select_key(cases, v);
        lo[i] = lo[0];
        size_t j = 0;
        for (;;) {
            size_t k = 2 * j + 1;
            if (k >= i)
                break;
            if (k + 1 < i && select_key(cases, lo[k]) < select_key(cases, lo[k + 1]))
                k++;
            if (key >= select_key(cases, lo[k]))
                break;
            lo[j] = lo[k];
            j = k;
        }
        lo[j] = v;
    }
}

static void select_lock(const gort_case_t *cases, const uint16_t *lo, size_t n)
{
    gort_chan_t *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        gort_chan_t *c = cases[lo[i]].chan;
        if (c != prev)
            rtlock_acquire(&c->lock);
        prev = c;
    }
}

static void select_unlock(const gort_case_t *cases, const uint16_t *lo, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        gort_chan_t *c = cases[lo[i]].chan;
        if (i == 0 || cases[lo[i - 1]].chan != c)
            rtlock_release(&c->lock);
    }
}

enum { SELECT_NOT_READY = -1 };

/* Pass 1. Any context. Locks every channel; performs the first ready case in poll
 * order and returns its index with every lock released, or SELECT_NOT_READY with every
 * lock still held. */
static int select_poll(gort_case_t *cases, const uint16_t *poll, const uint16_t *lo,
                       size_t n)
{
    select_lock(cases, lo, n);
    for (size_t k = 0; k < n; k++) {
        uint16_t i = poll[k];
        gort_case_t *cs = &cases[i];
        gort_chan_t *c = cs->chan;
        chan_waiter_t *w;
        int result = 0;
        if (cs->op == GORT_RECV) {
            if ((w = waitq_dequeue(&c->sendq)) != NULL) {
                chan_take_locked(c, w, cs->elem);
            } else if (chan_count(c) > 0) {
                chan_buf_get_locked(c, cs->elem);
            } else if (c->closed) {
                result = -EPIPE;
            } else {
                continue;
            }
        } else {
            if (c->closed) {
                w = NULL;
                result = -EPIPE;
            } else if ((w = waitq_dequeue(&c->recvq)) != NULL) {
                chan_give_locked(c, w, cs->elem);
            } else if (chan_count(c) < c->cap) {
                chan_buf_put_locked(c, cs->elem);
            } else {
                continue;
            }
        }
        g_t *g = w ? w->g : NULL;
        rtlock_t *pl = w ? w->parklock : NULL;
        select_unlock(cases, lo, n);
        if (g)
            chan_waiter_ready(g, pl);
        cs->result = result;
        return i;
    }
    return SELECT_NOT_READY;
}

/* Timer callback: system stack, no runtime lock held. */
static void select_timer_fire(rtimer_t *t, int64_t now)
{
    select_frame_t *f = t->arg;
    g_t *g = f->g;
    uint32_t zero = 0;
    /* acq_rel: pairs with the wakers' CAS in waitq_dequeue_slow; exactly one wins */
    if (!atomic_compare_exchange_strong_explicit(&g->select_done, &zero, 1,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire))
        return; /* a case won; the task stops this timer, waiting for us to return */
    chan_waiter_ready(g, &f->parklock);
}

/* Pass 3. Task context, no lock held. Unlinks the records still queued, locking only
 * the channels that still hold one. */
static void select_unqueue(gort_case_t *cases, const uint16_t *lo, size_t n,
                           chan_waiter_t *waiters)
{
    for (size_t k = 0; k < n;) {
        gort_chan_t *c = cases[lo[k]].chan;
        size_t end = k + 1;
        while (end < n && cases[lo[end]].chan == c)
            end++;
        bool any = false;
        for (size_t j = k; j < end && !any; j++)
            /* acquire: pairs with waitq_unlink's release; false means the remover is
             * done with the record and the channel on our behalf */
            any = atomic_load_explicit(&waiters[lo[j]].queued, memory_order_acquire);
        if (any) {
            rtlock_acquire(&c->lock);
            for (size_t j = k; j < end; j++) {
                chan_waiter_t *w = &waiters[lo[j]];
                /* relaxed: c->lock orders every write of it */
                if (atomic_load_explicit(&w->queued, memory_order_relaxed))
                    waitq_unlink(cases[lo[j]].op == GORT_SEND ? &c->sendq : &c->recvq, w);
            }
            rtlock_release(&c->lock);
        }
        k = end;
    }
}

/* Passes 2 and 3. Called with every channel lock held (pass 1 found nothing ready),
 * timeout_ns != 0. Task context (else -EPERM); switches; the stack may move while
 * parked. heap_waiters: n records when n > SELECT_INLINE, else NULL. */
static __attribute__((noinline)) int select_block(gort_case_t *cases, size_t n,
                                                  const uint16_t *lo, size_t norder,
                                                  chan_waiter_t *heap_waiters,
                                                  int64_t timeout_ns)
{
    g_t *g = chan_task_self();
    if (unlikely(!g)) {
        select_unlock(cases, lo, norder);
        return -EPERM;
    }
    wait_reason_t why = n ? WAIT_SELECT : WAIT_SELECT_NO_CASES;
    if (norder == 0 && timeout_ns < 0) {
        if (heap_waiters)
            rt_free(heap_waiters); /* gort_select never gets it back */
        g_park(NULL, why, cases); /* nothing can ever wake it: the leak detector's */
        gort_throw("select: woken with nothing to wait for");
    }
    chan_waiter_t inline_waiters[SELECT_INLINE];
    chan_waiter_t *waiters = heap_waiters ? heap_waiters : inline_waiters;
    select_frame_t f = {.g = g};

    /* relaxed: no record of this task is queued anywhere, so nobody reads it until the
     * channel locks (released below) or timer_start publish the records */
    atomic_store_explicit(&g->select_done, 0, memory_order_relaxed);
    g->wait_param = NULL;
    chan_waiter_t *head = NULL;
    chan_waiter_t **tail = &head;
    for (size_t k = 0; k < norder; k++) {
        gort_case_t *cs = &cases[lo[k]];
        chan_waiter_t *w = &waiters[lo[k]];
        w->g = g;
        w->elem = cs->elem;
        w->c = cs->chan;
        w->parklock = &f.parklock;
        w->success = false;
        w->waitlink = NULL;
        *tail = w;
        tail = &w->waitlink;
        waitq_enqueue(cs->op == GORT_SEND ? &cs->chan->sendq : &cs->chan->recvq, w);
    }
    g->waiting = head;

    /* From here until the switch, a winner (a peer that found a record, or the timer)
     * waits on parklock before it readies us. */
    rtlock_acquire(&f.parklock);
    select_unlock(cases, lo, norder);
    if (timeout_ns > 0) {
        int64_t now = gort_now();
        f.timer.when = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
        f.timer.fn = select_timer_fire;
        f.timer.arg = &f;
        timer_start(&f.timer); /* takes p.timers (50) and maybe sched.lock: above us */
    }
    g_park(&f.parklock, why, cases);

    if (timeout_ns > 0)
        timer_stop(&f.timer); /* after it, the timer neither runs nor will run */
    chan_waiter_t *fired = g->wait_param;
    g->wait_param = NULL;
    select_unqueue(cases, lo, norder, waiters);
    g->waiting = NULL;
    if (!fired) {
        if (unlikely(g->gc_flags & GC_CANCELLED)) { /* leak recovery (gc/leakcheck.c) */
            g->gc_flags &= ~(uint32_t)GC_CANCELLED;
            return -ECANCELED;
        }
        if (unlikely(timeout_ns < 0))
            gort_throw("select: woken without a case");
        return -ETIMEDOUT;
    }
    size_t i = (size_t)(fired - waiters);
    cases[i].result = fired->success ? 0 : -EPIPE;
    return (int)i;
}

/* Any context when it need not wait (timeout 0, or a case ready); else task context.
 * Blocks, switches; the stack may move while parked. */
int gort_select(gort_case_t *cases, size_t n, int64_t timeout_ns)
{
    RT_ENTRY_CHECK();
    if (unlikely(n > SELECT_MAX_CASES || (!cases && n)))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const gort_case_t *cs = &cases[i];
        if (unlikely(cs->op != GORT_SEND && cs->op != GORT_RECV))
            return -EINVAL;
        if (unlikely(cs->op == GORT_SEND && cs->chan && !cs->elem && cs->chan->elem_size))
            return -EINVAL;
    }
    uint16_t order_inline[2 * SELECT_INLINE];
    uint16_t *poll = order_inline;
    chan_waiter_t *heap_waiters = NULL;
    if (unlikely(n > SELECT_INLINE)) {
        /* records first: they need pointer alignment, the orders only 2 */
        heap_waiters = rt_alloc(n * (sizeof(chan_waiter_t) + 2 * sizeof(uint16_t)));
        if (!heap_waiters)
            return -ENOMEM;
        poll = (uint16_t *)(heap_waiters + n);
    }
    uint16_t *lo = poll + n;
    size_t norder = select_shuffle(cases, n, poll);
    select_sort(cases, poll, lo, norder);
    int r = select_poll(cases, poll, lo, norder);
    if (r == SELECT_NOT_READY) {
        if (timeout_ns == 0) {
            select_unlock(cases, lo, norder);
            r = -ETIMEDOUT;
        } else {
            r = select_block(cases, n, lo, norder, heap_waiters, timeout_ns);
        }
    }
    if (heap_waiters)
        rt_free(heap_waiters);
    return r;
}
