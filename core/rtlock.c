/* core/rtlock.c — the runtime's internal lock (see rtlock.h).
 *
 * Three states, as in Drepper's "Futexes are tricky", mutex 2: 0 free, 1 held, 2 held
 * and a sleeper may exist. A short spin first, because critical sections are tens of
 * nanoseconds and a futex round trip costs microseconds.
 * Rejected: a pure spinlock — a holder descheduled by the kernel would make every other
 * M burn its time slice.
 */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/arch.h"
#include "rt.h"
#include "sched_impl.h"

enum { RTLOCK_SPINS = 64 };

static void futex_wait_u32(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_one(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

RT_COLD void rtlock_acquire_slow(rtlock_t *l)
{
    for (int i = 0; i < RTLOCK_SPINS; i++) {
        uint32_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
        /* acquire: pairs with the release in rtlock_release */
        if (s == 0 && atomic_compare_exchange_weak_explicit(&l->state, &s, 1,
                                                            memory_order_acquire,
                                                            memory_order_relaxed))
            return;
        arch_spin_pause();
    }
    /* Announce a sleeper (state 2) before sleeping; whoever releases from 2 wakes one. */
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        futex_wait_u32(&l->state, 2);
}

int rtlock_try_acquire(rtlock_t *l)
{
    uint32_t s = 0;
    if (!atomic_compare_exchange_strong_explicit(&l->state, &s, 1, memory_order_acquire,
                                                 memory_order_relaxed))
        return 0;
    m_t *m = m_self();
    if (m)
        m->locks++;
    return 1;
}

RT_COLD void rtlock_wake(rtlock_t *l) { futex_wake_one(&l->state); }
