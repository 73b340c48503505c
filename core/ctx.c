/* core/ctx.c — cancellation contexts (gort_ctx_*), after Go's context package.
 *
 * A context is a heap node in a tree: cancelling one sets its error, closes its done
 * channel and cancels every descendant. A timeout context also holds a timer that
 * cancels it with -ETIMEDOUT. NULL is the background context: never cancelled, its
 * done channel is NULL (a select case on it never proceeds).
 *
 * Invariants:
 *  1. err goes from 0 to nonzero once, under the context's lock, and done is closed in
 *     the same critical section: done closed  <=>  err != 0.
 *  2. A cancelled context has no children whenever its lock is free: cancel detaches
 *     them (child->parent = NULL) after cancelling them, and a child made under a
 *     cancelled parent is born cancelled and never linked.
 *  3. x->parent is written holding both the parent's and x's lock, so either lock is
 *     enough to read it; while x's lock is held and x->parent == p, p is alive (freeing
 *     p must first take x's lock to detach it).
 *
 * Locks: ctx.lock (rank 20). Parent before child: a cancel holds the locks of the whole
 * path from the context it cancels down to the one it visits (as Go's context does).
 * chan_close (chan.lock, 30; gort_chan_close without its entry check, rt.h) is called
 * under them. gort_ctx_free detaches from the
 * parent holding the child's lock and only *trying* the parent's (the reverse order),
 * backing off on failure, so it cannot deadlock.
 * Cancel runs on the system stack when called from a task: it recurses down the tree
 * and wakes tasks, more than a 2 KiB task stack should hold.
 * A context is never on a global list: only its parent and its owner point to it.
 *
 * Rejected:
 *  - Lazily made done channels (Go): saves a channel per context never waited on, but
 *    needs a second atomic publication path; contexts are not hot.
 *  - Stopping a timeout context's timer when an ancestor cancels it: the cancel holds
 *    locks the timer callback takes, and timer_stop waits for the callback. The timer
 *    stays queued until it fires (a no-op) or the context is cancelled directly or freed.
 *  - One lock per tree: cancelling one subtree would block unrelated ones.
 */
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/arch.h"
#include "chan.h"
#include "rt.h"
#include "timer.h"

struct gort_ctx {
    rtlock_t lock;        /* ctx.lock: children; with the parent's lock, parent */
    _Atomic int err;      /* 0, -ECANCELED, -ETIMEDOUT; set once under lock; read lock-free */
    gort_chan_t *done;    /* immutable; closed once, by whoever sets err, under lock */
    gort_ctx_t *parent;   /* NULL = a root; write: parent's and this lock; read: either */
    gort_ctx_t *children; /* first child; this lock */
    gort_ctx_t *sib_prev; /* siblings in parent->children; parent's lock */
    gort_ctx_t *sib_next;
    rtimer_t timer;       /* with_timeout only (else never started); the owner's */
};

enum { DETACH_SPINS = 64 };

/* x's lock held, x->err == 0. Cancels x and its subtree, detaching x's children
 * (invariant 2). Any context, but deep: callers reach it on a system stack. */
static void ctx_cancel_locked(gort_ctx_t *x, int err)
{
    /* release: pairs with the acquire load in gort_ctx_err; done's close below is
     * ordered after it too (chan.lock), so who sees done closed sees err */
    atomic_store_explicit(&x->err, err, memory_order_release);
    chan_close(x->done);
    gort_ctx_t *c = x->children;
    x->children = NULL;
    while (c) {
        gort_ctx_t *next = c->sib_next;
        rtlock_acquire(&c->lock); /* parent before child */
        /* relaxed: written only under c->lock, which we hold */
        if (!atomic_load_explicit(&c->err, memory_order_relaxed))
            ctx_cancel_locked(c, err);
        c->parent = NULL;
        c->sib_prev = NULL;
        c->sib_next = NULL;
        rtlock_release(&c->lock);
        c = next;
    }
}

struct cancel_req {
    gort_ctx_t *ctx;
    int err;
};

static void *ctx_cancel_sys(void *arg)
{
    struct cancel_req *r = arg;
    rtlock_acquire(&r->ctx->lock);
    /* relaxed: under the lock that orders every write of err */
    if (!atomic_load_explicit(&r->ctx->err, memory_order_relaxed))
        ctx_cancel_locked(r->ctx, r->err);
    rtlock_release(&r->ctx->lock);
    return NULL;
}

/* any context; holds no lock on entry. */
static void ctx_cancel(gort_ctx_t *x, int err)
{
    struct cancel_req r = {x, err};
    if (g_self())
        sysstack_call(ctx_cancel_sys, &r);
    else
        ctx_cancel_sys(&r);
}

/* Timer callback (sysstack, no lock held). */
static void ctx_timer_fire(rtimer_t *t, int64_t now)
{
    ctx_cancel(t->arg, -ETIMEDOUT);
}

/* Unlinks x from its parent, if it still has one (invariant 3). No lock held. */
static void ctx_detach(gort_ctx_t *x)
{
    for (int spins = 0;; spins++) {
        rtlock_acquire(&x->lock);
        gort_ctx_t *p = x->parent;
        if (!p) {
            rtlock_release(&x->lock);
            return;
        }
        if (rtlock_try_acquire(&p->lock)) { /* reverse order: only try */
            if (x->sib_prev)
                x->sib_prev->sib_next = x->sib_next;
            else
                p->children = x->sib_next;
            if (x->sib_next)
                x->sib_next->sib_prev = x->sib_prev;
            x->parent = NULL;
            x->sib_prev = NULL;
            x->sib_next = NULL;
            rtlock_release(&p->lock);
            rtlock_release(&x->lock);
            return;
        }
        rtlock_release(&x->lock);
        /* The parent's holder may be a cancel waiting for x's lock: let it run. */
        if (spins < DETACH_SPINS)
            arch_spin_pause();
        else
            syscall(SYS_sched_yield); /* <sched.h> is shadowed by core/sched.h */
    }
}

/* A new context under parent (NULL = a root), not yet visible to anyone but the
 * caller; born cancelled if the parent is. */
static gort_ctx_t *ctx_make(gort_ctx_t *parent)
{
    gort_ctx_t *x = rt_alloc(sizeof *x);
    if (unlikely(!x))
        return NULL;
    x->done = gort_chan_make(0, 0);
    if (unlikely(!x->done))
        goto out_free_ctx;
    if (!parent)
        return x;
    rtlock_acquire(&parent->lock);
    /* relaxed: under the parent's lock, which orders its writes of err */
    int perr = atomic_load_explicit(&parent->err, memory_order_relaxed);
    if (!perr) {
        x->parent = parent;
        x->sib_next = parent->children;
        if (x->sib_next)
            x->sib_next->sib_prev = x;
        parent->children = x;
    }
    rtlock_release(&parent->lock);
    if (perr) /* invariant 2: never linked; x is still private, no lock needed */
        ctx_cancel(x, perr);
    return x;

out_free_ctx:
    rt_free(x);
    return NULL;
}

/* any context; does not block. NULL on no memory. */
gort_ctx_t *gort_ctx_with_cancel(gort_ctx_t *parent)
{
    RT_ENTRY_CHECK();
    return ctx_make(parent);
}

/* any context inside a runtime; does not block. NULL on no memory or no runtime. */
gort_ctx_t *gort_ctx_with_timeout(gort_ctx_t *parent, int64_t ns)
{
    RT_ENTRY_CHECK();
    if (!timer_home_p())
        return NULL;
    gort_ctx_t *x = ctx_make(parent);
    if (unlikely(!x))
        return NULL;
    x->timer.fn = ctx_timer_fire;
    x->timer.arg = x;
    if (ns <= 0) {
        ctx_cancel(x, -ETIMEDOUT);
        return x;
    }
    /* relaxed: a parent's cancel that raced in is seen or not; either way correct */
    if (atomic_load_explicit(&x->err, memory_order_relaxed))
        return x;
    int64_t now = gort_now();
    x->timer.when = ns > INT64_MAX - now ? INT64_MAX : now + ns;
    timer_start(&x->timer);
    return x;
}

/* any context; does not block (may wait for a running timer callback). The cancel is
 * the last access to ctx: a task that sees done closed may free it at once. */
void gort_ctx_cancel(gort_ctx_t *ctx)
{
    RT_ENTRY_CHECK();
    if (!ctx)
        return;
    timer_stop(&ctx->timer); /* drop a pending timeout; a firing one cancels first */
    ctx_cancel(ctx, -ECANCELED);
}

gort_chan_t *gort_ctx_done(gort_ctx_t *ctx)
{
    return ctx ? ctx->done : NULL;
}

int gort_ctx_err(gort_ctx_t *ctx)
{
    /* acquire: pairs with the release store in ctx_cancel_locked */
    return ctx ? atomic_load_explicit(&ctx->err, memory_order_acquire) : 0;
}

/* any context; does not block. ctx must not be used afterwards; its children stay
 * valid (cancelled, now roots) until their own free. */
void gort_ctx_free(gort_ctx_t *ctx)
{
    RT_ENTRY_CHECK();
    if (!ctx)
        return;
    timer_stop(&ctx->timer); /* after it, the callback has returned and cannot fire */
    ctx_cancel(ctx, -ECANCELED);
    ctx_detach(ctx);
    /* Closed, so no task is parked on it any more; -EBUSY means a task is still inside
     * a call on it, i.e. the program freed a context that is in use. */
    if (gort_chan_free(ctx->done) != 0)
        gort_fatal("ctx: gort_ctx_free while a task still waits on gort_ctx_done");
    rt_free(ctx);
}
