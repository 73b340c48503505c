/* stackmap/shrink.c — halving the stack of a parked task (the gc cycle's primitive).
 *
 * A parked task whose live stack [ctx.sp, hi) is under a quarter of its block moves to
 * a block half the size (relocate.c copies and relocates what is on the stack). What
 * only the runtime knows is fixed here: the places outside the stack that hold an
 * address inside it, all reachable from g->waiting while the task is parked:
 *  - channel send/recv (core/chan.c): one chan_waiter_t on the stack; its address is
 *    in its neighbours' next/prev (records of other tasks, or of this one) or in
 *    c->sendq/recvq first/last;
 *  - select (core/select.c): a chain of records (waitlink) on the stack or, for more
 *    than SELECT_INLINE cases, in an rt_alloc block whose elem/parklock/next/prev
 *    fields point into the stack; the select frame's timeout rtimer (found through
 *    the records' parklock), whose address is in a P's timer heap;
 *  - sleep (core/sleep.c): the rtimer on the stack, named by a heap slot;
 *  - mutex/rwmutex/cond/wg/once (core/sync.c): one sync_waiter_t, linked in a
 *    circular queue whose head is in the sync object (sync_waiter_relocate);
 *  - g->waiting, g->wait_obj (a select's case array, a sync object on the stack), and
 *    g->arg (relocate.c).
 * Every record is checked and moved under the lock that protects its queue (all the
 * channel locks of a select, in its own lock order, then the timer heap's lock), so
 * no waker can find it in the middle. A wake-up already under way — a waker dequeued
 * the record, or won a select, or popped the timer, but has not readied the task yet —
 * makes the task busy (-EBUSY): the waker may still touch the old records.
 * Not moved (-EBUSY, and why):
 *  - not G_WAITING: running, runnable (a task stopped by asynchronous preemption is
 *    runnable, with its registers on its stack and no saved context at ctx.sp), in a
 *    system call;
 *  - IO wait (core/netpoll.c): the timeout rtimer of netpoll_wait is reached from no
 *    record (its arg points at the record, not the other way);
 *  - a select with no channel case (waiting == NULL): its timeout timer cannot be
 *    found;
 *  - a sync wait whose object (its lock) lies in this task's own stack: other tasks
 *    hold its address, which the user rules forbid and no mover can fix.
 * Context: sysstack, with the world stopped (gc/stw.c): every G_WAITING task has
 * finished its switch (its M went on to findrunnable, where it stopped), so the lock a
 * task parked with is free and its saved context is complete. The locks guard against
 * wakers that are not stopped (threads outside the runtime; the timer of a P).
 */
#include <string.h>

#include "core/chan.h"
#include "core/sched_impl.h"
#include "core/sync.h"
#include "core/timer.h"
#include "stackmap.h"

enum { SHRINK_MAX_LOCKS = 64 }; /* channels of one select we lock; more: not moved */

typedef struct shrink_ctx {
    uintptr_t lo, hi;  /* the old block */
    intptr_t delta;    /* new address - old address */
} shrink_ctx_t;

static inline bool in_old(const shrink_ctx_t *s, const void *p)
{
    return (uintptr_t)p - s->lo <= s->hi - s->lo;
}

/* The new address of a pointer that may point into the old block. */
static inline void *moved(const shrink_ctx_t *s, void *p)
{
    return in_old(s, p) ? (char *)p + s->delta : p;
}
#define MOVE_FIELD(s, f) ((f) = moved((s), (void *)(f)))

/* The locks one shrink holds, in acquisition order (released in reverse). The mover's
 * own (a local of stack_shrink_parked). */
typedef struct shrink_locks {
    rtlock_t *held[SHRINK_MAX_LOCKS + 2]; /* channel locks, then a timer heap's lock */
    unsigned n;                           /* how many are held */
} shrink_locks_t;

static void locks_take(shrink_locks_t *l, rtlock_t *k)
{
    rtlock_acquire(k);
    l->held[l->n++] = k;
}

static void locks_drop(shrink_locks_t *l)
{
    while (l->n)
        rtlock_release(l->held[--l->n]);
}

/* The queue of c that holds w at its front (w->prev == NULL) or back (next == NULL). */
static chan_waitq_t *chan_queue_of(gort_chan_t *c, chan_waiter_t *old, bool front)
{
    if (front)
        return c->sendq.first == old ? &c->sendq : &c->recvq;
    return c->sendq.last == old ? &c->sendq : &c->recvq;
}

/* Locks every channel of the chain (address order: direct records are alone, select
 * chains are in lock order already) and checks that no wake-up is under way. */
static int chan_chain_lock(g_t *g, shrink_locks_t *l, rtimer_t **timer, p_t **tp)
{
    chan_waiter_t *head = g->waiting;
    gort_chan_t *last = NULL;
    for (chan_waiter_t *w = head; w; w = w->waitlink) {
        if (w->c != last) {
            if (l->n == SHRINK_MAX_LOCKS || (uintptr_t)w->c < (uintptr_t)last)
                return -EBUSY;
            locks_take(l, &w->c->lock);
            last = w->c;
        }
    }
    for (chan_waiter_t *w = head; w; w = w->waitlink)
        /* relaxed: c->lock (held) orders every write of it; false = dequeued by a
         * waker that will ready the task */
        if (!atomic_load_explicit(&w->queued, memory_order_relaxed))
            return -EBUSY;
    if (g->wait_reason != WAIT_SELECT)
        return 0;
    /* acquire: pairs with the winners' CAS; 0 under every channel lock = no winner,
     * and none but the timer can appear */
    if (atomic_load_explicit(&g->select_done, memory_order_acquire))
        return -EBUSY;
    if (!head->parklock)
        return -EBUSY;
    select_frame_t *f = (select_frame_t *)((char *)head->parklock -
                                           offsetof(select_frame_t, parklock));
    rtimer_t *t = &f->timer;
    int rc = timer_lock_queued(t, tp);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        l->held[l->n++] = &(*tp)->timers_lock;
        *timer = t;
        /* the timer could have fired and lost its CAS meanwhile: recheck */
        if (atomic_load_explicit(&g->select_done, memory_order_acquire))
            return -EBUSY;
    }
    return 0;
}

/* After the move: the chain's own fields, then its neighbours and queue heads. */
static void chan_chain_fix(const shrink_ctx_t *s, g_t *g)
{
    chan_waiter_t *head = moved(s, g->waiting);
    for (chan_waiter_t *w = head; w; w = w->waitlink) {
        MOVE_FIELD(s, w->elem);
        MOVE_FIELD(s, w->next);
        MOVE_FIELD(s, w->prev);
        MOVE_FIELD(s, w->parklock);
        MOVE_FIELD(s, w->waitlink);
    }
    for (chan_waiter_t *w = head; w; w = w->waitlink) {
        chan_waiter_t *old = (uintptr_t)w - (s->lo + s->delta) <= s->hi - s->lo
                                 ? (chan_waiter_t *)((char *)w - s->delta)
                                 : w;
        if (w->prev)
            w->prev->next = w;
        else
            chan_queue_of(w->c, old, true)->first = w;
        if (w->next)
            w->next->prev = w;
        else
            chan_queue_of(w->c, old, false)->last = w;
    }
    g->waiting = head;
}

static int sync_lock(g_t *g, shrink_locks_t *l)
{
    sync_waiter_t *w = g->waiting;
    if (!w || !w->lock || ((uintptr_t)w->lock >= g->stack_lo && (uintptr_t)w->lock < g->stack_hi))
        return -EBUSY;
    locks_take(l, w->lock);
    return w->q ? 0 : -EBUSY; /* NULL: dequeued, its waker will ready the task */
}

static void sync_fix(const shrink_ctx_t *s, g_t *g)
{
    sync_waiter_t *old = g->waiting;
    sync_waiter_t *w = moved(s, old);
    MOVE_FIELD(s, w->next);
    MOVE_FIELD(s, w->prev);
    MOVE_FIELD(s, w->q);
    sync_waiter_relocate(old, w);
    g->waiting = w;
}

/* The block size a shrink moves to, or 0 when g stays as it is. Never below the size
 * the task started with: the main task's 64 KiB and a gort_go_opts stack_min are
 * promises to code without GORT_FRAME (printf deep in main_fn), which only the
 * canary would catch, after the fact. (Periodic cycles used to halve the parked
 * main task down to 2 KiB: the canary fired when it woke.) */
static size_t shrink_target(g_t *g, uintptr_t sp)
{
    size_t size = g->stack_hi - g->stack_lo;
    size_t used = g->stack_hi - sp;
    size_t floor = sched.stack_min > STACK_FLOOR ? sched.stack_min : STACK_FLOOR;
    if (g->stack_min && stackpool_class_size(g->stack_min) > floor)
        floor = stackpool_class_size(g->stack_min);
    size_t half = size / 2;
    if (half < floor || used >= size / 4 || used + STACK_SLACK + 512 > half)
        return 0;
    return half;
}

int stack_shrink_parked(g_t *g)
{
    /* relaxed: with the world stopped the status of a parked task changes only by a
     * waker, which the locks below exclude (and the checks under them detect) */
    if (atomic_load_explicit(&g->status, memory_order_relaxed) != G_WAITING || !g->stack_lo)
        return -EBUSY;
    uintptr_t sp = (uintptr_t)g->ctx.sp;
    if (sp - g->stack_lo >= g->stack_hi - g->stack_lo)
        return -EBUSY;
    size_t target = shrink_target(g, sp);
    if (!target)
        return 0;
    shrink_locks_t l = {.n = 0};
    rtimer_t *timer = NULL;
    p_t *tp = NULL;
    int rc = 0;
    wait_reason_t why = g->wait_reason;
    switch (why) {
    case WAIT_CHAN_SEND:
    case WAIT_CHAN_RECV:
    case WAIT_SELECT:
        rc = g->waiting ? chan_chain_lock(g, &l, &timer, &tp) : -EBUSY;
        break;
    case WAIT_MUTEX:
    case WAIT_RWMUTEX_R:
    case WAIT_RWMUTEX_W:
    case WAIT_COND:
    case WAIT_WG:
    case WAIT_ONCE:
        rc = sync_lock(g, &l);
        break;
    case WAIT_SLEEP:
        timer = g->waiting;
        rc = timer ? timer_lock_queued(timer, &tp) : -EBUSY;
        if (rc == 1)
            l.held[l.n++] = &tp->timers_lock;
        rc = rc == 1 ? 0 : -EBUSY; /* idle: fired, its task is being readied */
        break;
    case WAIT_CHAN_RECV_NIL:
    case WAIT_CHAN_SEND_NIL:
    case WAIT_SELECT_NO_CASES:
        break; /* nothing but g->wait_obj points in: they are never woken */
    default:
        rc = -EBUSY;
        break;
    }
    /* relaxed: see above; a waker that got in before our locks changed it */
    if (rc == 0 && atomic_load_explicit(&g->status, memory_order_relaxed) != G_WAITING)
        rc = -EBUSY;
    if (rc)
        goto out_unlock;

    shrink_ctx_t s = {.lo = g->stack_lo, .hi = g->stack_hi};
    stack_move_t mv = {.g = g, .sp = sp, .regs = NULL, .new_size = target};
    stack_move_sys(&mv);
    if (mv.rc) {
        rc = mv.rc;
        goto out_unlock;
    }
    s.delta = (intptr_t)(mv.new_sp - sp);
    g->ctx.sp = (void *)mv.new_sp;
    switch (why) {
    case WAIT_CHAN_SEND:
    case WAIT_CHAN_RECV:
    case WAIT_SELECT:
        chan_chain_fix(&s, g);
        break;
    case WAIT_SLEEP:
        g->waiting = moved(&s, g->waiting);
        break;
    case WAIT_CHAN_RECV_NIL:
    case WAIT_CHAN_SEND_NIL:
    case WAIT_SELECT_NO_CASES:
        break;
    default:
        sync_fix(&s, g);
        break;
    }
    if (timer) {
        rtimer_t *nt = moved(&s, timer);
        MOVE_FIELD(&s, nt->arg); /* a select's frame; a sleep's is the task */
        timer_moved_locked(tp, nt);
    }
    g->wait_obj = moved(&s, (void *)g->wait_obj);
    MOVE_FIELD(&s, g->wait_param);
    locks_drop(&l);
    if (stackmap_cfg.stress)
        stress_quarantine(mv.old_lo, mv.old_size, g->id);
    else
        stack_block_free(mv.old_lo, mv.old_size);
    atomic_fetch_add_explicit(&stackmap_n_shrinks, 1, memory_order_relaxed);
    return 1;

out_unlock:
    locks_drop(&l);
    return rc;
}

size_t stack_shrink_all(void)
{
    g_t *self = g_self();
    size_t n = 0;
    for (size_t i = 0;; i++) {
        rtlock_acquire(&allg_lock);
        g_t *g = i < allg_len ? allg[i] : NULL;
        rtlock_release(&allg_lock);
        if (!g)
            break;
        if (g != self && stack_shrink_parked(g) == 1)
            n++;
    }
    return n;
}
