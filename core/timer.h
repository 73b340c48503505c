/* core/timer.h — the per-P timer heaps (core/timer.c): what the scheduler calls to run
 * due timers, and the two extra ways of starting a timer that gort_sleep and gort_after
 * use. The basic calls (rtimer_t, timer_start, timer_stop) are in core/rt.h.
 *
 * Lock: p->timers_lock (rank 50, p.timers) protects p->timers, p->ntimers,
 * p->timers_cap and every queued timer's heap_index. Timer callbacks run with it
 * released.
 */
#ifndef GORT_CORE_TIMER_H
#define GORT_CORE_TIMER_H

#include <stdint.h>

#include "rt.h"

/* Runs every timer of p whose deadline is <= now, each fn(t, now) with no lock held,
 * and returns p's next deadline (INT64_MAX: none). sysstack; called by an M that holds
 * p or that is stealing from it: several Ms may run it on the same p at once. Never
 * parks; the callbacks may take any runtime lock. */
int64_t timers_run(p_t *p, int64_t now);
/* p's earliest deadline, or INT64_MAX; lock-free (a hint: may be stale by the time the
 * caller acts, never later than a deadline queued before the call). any context. */
int64_t timers_next(p_t *p);
/* Teardown, no M running: frees p's heap array. Timers still queued are dropped (their
 * owners are gone with the runtime), except gort_after's, whose memory is freed. It
 * reads each queued timer, some of which live on parked tasks' stacks: call it before
 * the stack memory is released (stackpool_destroy). */
void timers_destroy(p_t *p);

/* As timer_start, but t is handed to fn when it fires: the runtime stops touching t
 * before it calls fn, so fn may free t or wake a task whose stack holds t. timer_stop
 * still removes it while queued (true); once it fired, timer_stop returns false at
 * once without waiting for fn, so the owner must not free t unless timer_stop returned
 * true. any context inside a runtime. */
void timer_start_handoff(rtimer_t *t);
/* Queues t as timer_start_handoff does and parks the calling task (task context) with
 * g_park(&heap lock, why, obj): the heap's lock is released only after the switch, and
 * no M can pop t without that lock, so fn (typically g_ready of the parked task) never
 * sees a task that has not finished parking. The caller holds no rtlock. switches. */
void timer_park(rtimer_t *t, wait_reason_t why, const void *obj);
/* The P whose heap timer_start would use from here, or NULL when no runtime runs. */
p_t *timer_home_p(void);

/* Stack movers (stackmap/shrink.c): a timer embedded in a parked task's stack moves
 * with it. timer_lock_queued(t, &p): 1 = t is queued on p and p->timers_lock is now
 * held; 0 = t is idle (no lock); -EBUSY = its callback runs or is about to (no lock).
 * timer_moved_locked(p, t): t is the copy of the queued timer (same heap_index); the
 * heap slot now names it. Caller holds p->timers_lock. any context; never switch. */
int timer_lock_queued(rtimer_t *t, p_t **out);
void timer_moved_locked(p_t *p, rtimer_t *t);

/* From core/sleep.c, for timers_destroy: frees t if it is a gort_after timer that never
 * fired; false (nothing done) for any other timer. */
bool after_timer_drop(rtimer_t *t);

/* Provided by the scheduler (core/sched.c). */
/* Some P of the running runtime (P 0), for threads that hold none; NULL if none runs. */
p_t *sched_any_p(void);
/* A timer with deadline `when` became the earliest of its heap: wake a sleeping M (or
 * shorten a netpoll wait) if no M will look at the heaps before `when`. any context;
 * called with no rtlock held, except from timer_park, which holds that P's timers_lock
 * (rank 50, p.timers): so it may take only locks ranked above 50 (sched.lock), and
 * must not run timers. */
void sched_wake_for_timer(int64_t when);

#endif
