/* preempt/sysmon.c — the system monitor thread: cooperative preemption.
 *
 * Every quarter time slice it looks at each P: a P whose schedtick has not moved for a
 * whole slice runs one task too long, so sysmon poisons that M's stack guard; the
 * task's next GORT_FRAME check or runtime call yields (morestack_slow). Asynchronous
 * preemption by SIGURG (issue 4) is not built yet: a loop with no GORT_FRAME and no
 * runtime call is not preempted.
 * Locks: none (reads Ps racily; a stale read only delays or duplicates a harmless
 * request).
 */
#include <pthread.h>
#include <time.h>

#include "rt.h"
#include "sched_impl.h"

static pthread_t sysmon_thread;
static _Atomic bool sysmon_quit;
static bool sysmon_started;

static void *sysmon_main(void *arg)
{
    int n = sched.nprocs;
    uint32_t last_tick[n];
    int64_t last_change[n];
    for (int i = 0; i < n; i++) {
        last_tick[i] = 0;
        last_change[i] = gort_now();
    }
    int64_t slice = (int64_t)sched.timeslice_us * 1000;
    struct timespec nap = {0, (long)(slice / 4 > 50000000 ? 50000000 : slice / 4)};
    while (!atomic_load_explicit(&sysmon_quit, memory_order_acquire)) {
        nanosleep(&nap, NULL);
        int64_t now = gort_now();
        for (int i = 0; i < n; i++) {
            p_t *p = sched.allp[i];
            uint32_t tick = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
            m_t *m = __atomic_load_n(&p->m, __ATOMIC_RELAXED);
            if (tick != last_tick[i] || !m ||
                atomic_load_explicit(&p->status, memory_order_relaxed) == 0) {
                last_tick[i] = tick;
                last_change[i] = now;
                continue;
            }
            if (now - last_change[i] >= slice && sched.preempt_mode != GORT_PREEMPT_OFF) {
                g_t *g = __atomic_load_n(&m->curg, __ATOMIC_RELAXED);
                if (g) {
                    __atomic_store_n(&g->preempt, true, __ATOMIC_RELAXED);
                    __atomic_store_n(m->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
                }
                last_change[i] = now;
            }
        }
    }
    return NULL;
}

void sysmon_start(void)
{
    atomic_store(&sysmon_quit, false);
    sysmon_started = pthread_create(&sysmon_thread, NULL, sysmon_main, NULL) == 0;
}

void sysmon_stop(void)
{
    if (!sysmon_started)
        return;
    atomic_store(&sysmon_quit, true);
    pthread_join(sysmon_thread, NULL);
    sysmon_started = false;
}
