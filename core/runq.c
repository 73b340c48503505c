/* core/runq.c — a P's local run queue: spilling to the global queue and stealing.
 * The design and its memory-ordering argument sit with the owner's inline put, get
 * and empty in sched_impl.h. */
#include "rt.h"
#include "sched_impl.h"

enum { RUNNEXT_GRACE_NS = 3000 };

/* Moves half of p's full queue to the global runq in one batch (owner only;
 * sysstack: the batch buffer is 1 KiB). */
static void *runq_spill(void *arg)
{
    p_t *p = arg;
    g_t *batch[RUNQ_SIZE / 2];
    for (;;) {
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        uint32_t n = (t - h) / 2;
        if (n < RUNQ_SIZE / 4)
            return NULL; /* thieves took some meanwhile: room now */
        for (uint32_t i = 0; i < n; i++)
            batch[i] = atomic_load_explicit(&p->runq[(h + i) % RUNQ_SIZE], memory_order_relaxed);
        /* acq_rel: our reads of the slots happen before we give them up */
        if (!atomic_compare_exchange_strong_explicit(&p->runq_head, &h, h + n,
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue;
        rtlock_acquire(&sched.lock);
        for (uint32_t i = 0; i < n; i++)
            globrunq_put_locked(batch[i]);
        rtlock_release(&sched.lock);
        return NULL;
    }
}

/* Owner only, runq_put_or_global's slow path: p's queue was full. */
void runq_spill_put(p_t *p, g_t *g)
{
    do
        sysstack_call(runq_spill, p);
    while (!runq_put(p, g));
}

/* Grabs half of victim's queue (or its runnext when the queue is empty and
 * steal_runnext) into p's ring at p's tail, without publishing tail. Returns the count.
 * Caller: the owner of p, on a system stack. */
static uint32_t runq_grab(p_t *p, p_t *victim, bool steal_runnext)
{
    uint32_t ptail = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->runq_head, memory_order_acquire);
        /* acquire: pairs with the victim's release store of tail; its slots are visible */
        uint32_t t = atomic_load_explicit(&victim->runq_tail, memory_order_acquire);
        uint32_t n = t - h;
        n -= n / 2;
        if (n == 0) {
            if (!steal_runnext)
                return 0;
            g_t *next = atomic_load_explicit(&victim->runnext, memory_order_acquire);
            if (!next)
                return 0;
            /* A running P's runnext was just readied by its task, which is probably
             * about to block and switch to it: give it ~3 us first (Go does the same),
             * or ping-pong pairs get split across CPUs. */
            if (atomic_load_explicit(&victim->status, memory_order_relaxed) != 0) {
                int64_t until = gort_now() + RUNNEXT_GRACE_NS;
                while (gort_now() < until) {
                    arch_spin_pause();
                    if (atomic_load_explicit(&victim->runnext, memory_order_relaxed) != next)
                        break;
                }
                if (atomic_load_explicit(&victim->runnext, memory_order_relaxed) != next)
                    continue;
            }
            if (!atomic_compare_exchange_strong_explicit(&victim->runnext, &next, NULL,
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
            atomic_store_explicit(&p->runq[ptail % RUNQ_SIZE], next, memory_order_relaxed);
            return 1;
        }
        if (n > t - h) /* inconsistent snapshot (h and t read at different times) */
            continue;
        if (n > RUNQ_SIZE / 2)
            continue;
        for (uint32_t i = 0; i < n; i++) {
            g_t *g = atomic_load_explicit(&victim->runq[(h + i) % RUNQ_SIZE],
                                          memory_order_relaxed);
            atomic_store_explicit(&p->runq[(ptail + i) % RUNQ_SIZE], g, memory_order_relaxed);
        }
        /* acq_rel: commits the grab; release orders our slot reads before the victim can
         * reuse the slots */
        if (atomic_compare_exchange_strong_explicit(&victim->runq_head, &h, h + n,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed))
            return n;
    }
}

/* Steals into p; returns the number stolen (the last one is left for runq_pop_stolen).
 * Caller: owner of p, whose own queue is empty. */
uint32_t runq_steal(p_t *p, p_t *victim, bool steal_runnext)
{
    uint32_t n = runq_grab(p, victim, steal_runnext);
    if (n == 0)
        return 0;
    uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
    atomic_store_explicit(&p->runq_tail, t + n, memory_order_release); /* publishes them */
    return n;
}

g_t *runq_pop_stolen(p_t *p) { return runq_get(p); }
