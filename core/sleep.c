/* core/sleep.c — gort_sleep and gort_after, on the timers of core/timer.c.
 *
 * gort_sleep parks the task with a timer on its own stack. The race to avoid is a timer
 * that fires (and calls g_ready) before the task has finished parking: timer_park queues
 * the timer under its heap's lock and hands that lock to g_park, which releases it only
 * after the task's registers are saved; timers_run pops a timer only under the same
 * lock, so the callback can never see a task that is still running. The timer is a
 * handoff timer: timers_run does not touch it after calling the callback, because the
 * woken task may return and reuse that stack memory at once.
 *
 * gort_after allocates one block holding the timer and the channel pointer; the timer
 * callback sends the time (try_send into capacity 1: never blocks) and frees the block.
 * The channel belongs to the caller, who frees it with gort_chan_free once the value
 * came. If the runtime ends before the timer fired, timers_destroy frees the block
 * (after_timer_drop) and the channel stays the caller's.
 *
 * Rejected:
 *  - A per-task lock on the stack, taken by the callback: one more lock per sleep and a
 *    rank below p.timers to invent; the heap lock already orders pop after park.
 *  - A status CAS on the task (fire only once G_WAITING is seen): G_WAITING may be set
 *    before the switch has saved the registers, so it does not prove the stack is free.
 *  - gort_after with a channel and timer that free each other (refcount): gort_chan_free
 *    has no hook, so the timer could not learn that the channel is gone.
 *
 * Note for stack movers: while a task sleeps, its heap holds a pointer to the rtimer on
 * the task's stack (wait_reason WAIT_SLEEP, g->waiting = the timer). stackmap/shrink.c
 * fixes the heap slot under the heap's lock (timer_lock_queued, timer_moved_locked).
 */
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"
#include "timer.h"

/* now + ns without overflow (INT64_MAX: never). */
static int64_t sleep_deadline(int64_t ns)
{
    int64_t now = gort_now();
    return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

/* Timer callback (sysstack, no lock held): the task is parked (see the file head). */
static void sleep_fire(rtimer_t *t, int64_t now)
{
    g_ready(t->arg); /* last access to t: the task may run and return at once */
}

/* Outside a task: block the thread. Restarts after signals with the time left. */
static void sleep_thread(int64_t ns)
{
    if (ns <= 0) {
        syscall(SYS_sched_yield); /* <sched.h> is shadowed by core/sched.h */
        return;
    }
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* task: blocks, switches; lean (2 KiB stack: the timer is 48 bytes of it). */
void gort_sleep(int64_t ns)
{
    RT_ENTRY_CHECK();
    g_t *g = g_self();
    if (!g) {
        sleep_thread(ns);
        return;
    }
    if (ns <= 0) {
        g_yield(false);
        return;
    }
    rtimer_t t = {.when = sleep_deadline(ns), .fn = sleep_fire, .arg = g};
    g->waiting = &t; /* for a stack mover (stackmap/shrink.c): the heap names t */
    timer_park(&t, WAIT_SLEEP, NULL);
    g->waiting = NULL;
}

/* ------------------------------------------------------------- gort_after */

typedef struct after {
    rtimer_t timer;    /* handoff timer: owned by the runtime until it fires */
    gort_chan_t *chan; /* the caller's; written before the timer starts, then read-only */
} after_t;

/* Timer callback (sysstack, no lock held). */
static void after_fire(rtimer_t *t, int64_t now)
{
    after_t *a = t->arg;
    int64_t v = now;
    /* Cannot block: capacity 1 and the only sender. -EPIPE if the caller closed it. */
    gort_chan_try_send(a->chan, &v);
    rt_free(a);
}

bool after_timer_drop(rtimer_t *t)
{
    if (t->fn != after_fire)
        return false;
    rt_free(t->arg);
    return true;
}

/* any context inside a runtime; does not block or switch. */
gort_chan_t *gort_after(int64_t ns)
{
    RT_ENTRY_CHECK();
    if (!timer_home_p())
        return NULL;
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 1);
    if (!c)
        return NULL;
    if (ns <= 0) {
        int64_t v = gort_now();
        gort_chan_try_send(c, &v); /* empty, capacity 1: succeeds */
        return c;
    }
    after_t *a = rt_alloc(sizeof *a);
    if (unlikely(!a))
        goto out_free_chan;
    a->chan = c;
    a->timer.when = sleep_deadline(ns);
    a->timer.fn = after_fire;
    a->timer.arg = a;
    timer_start_handoff(&a->timer);
    return c;

out_free_chan:
    gort_chan_free(c);
    return NULL;
}
