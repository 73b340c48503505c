/* core/rtlock.h — the runtime's internal lock.
 *
 * A futex-based mutex (0 free, 1 held, 2 held with sleepers) with a short spin. Held
 * only for short, non-blocking critical sections. Holding one raises m->locks, which
 * makes the preemption handler treat the PC as unsafe. No runtime lock crosses a task
 * switch, except the lock a parking task hands to g_park, which the next code to run on
 * the same M releases after the switch ("switch, then release").
 * Zero bytes are an unlocked lock. The lock order is core/README.md's table; it is not
 * checked at run time yet (GORT_LOCKRANK reserves the switch for that checker).
 */
#ifndef GORT_CORE_RTLOCK_H
#define GORT_CORE_RTLOCK_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct rtlock {
    _Atomic uint32_t state; /* 0 free, 1 held, 2 held and someone may sleep on it */
} rtlock_t;

#define RTLOCK_INIT {0}

/* rtlock_acquire and rtlock_release are inline in rt.h (they count m->locks): a call
 * and a return each were a tenth of a channel handoff. Their slow halves: */
void rtlock_acquire_slow(rtlock_t *l); /* contended: spin, then sleep */
void rtlock_wake(rtlock_t *l);         /* released from state 2: wake one sleeper */
int rtlock_try_acquire(rtlock_t *l); /* 1 acquired, 0 not */

#endif
