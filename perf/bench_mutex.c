/* perf/bench_mutex.c — (e) contended mutex: 4 tasks (run it with 2 P) take one
 * gort_mutex_t around a counter increment, until the time budget is spent.
 * Result: elapsed / total lock+unlock pairs. The counter must equal the sum of the
 * tasks' own counts (mutual exclusion check).
 */
#include "bench_gort.h"

#define MU_TASKS 4

static gort_mutex_t mu_lock;       /* the contended mutex (zero = unlocked) */
static int64_t mu_counter;         /* mu_lock */
static _Atomic int64_t mu_ops;     /* per-task counts summed at exit; relaxed (read
                                      after gort_wg_wait, which orders it) */
static int64_t mu_deadline;        /* written by main before the spawns */
static gort_wg_t mu_done;

static void mu_task(void *arg)
{
    GORT_FRAME();
    int64_t n = 0;
    do {
        for (int k = 0; k < 256; k++) {
            gort_mutex_lock(&mu_lock);
            mu_counter++;
            gort_mutex_unlock(&mu_lock);
        }
        n += 256;
    } while (bench_now_ns() < mu_deadline);
    atomic_fetch_add_explicit(&mu_ops, n, memory_order_relaxed);
    gort_wg_done(&mu_done);
}

static void mu_main(void *argp)
{
    const bench_args_t *a = argp;
    for (int round = 0; round < 2; round++) { /* 20 ms warm-up, then the measurement */
        mu_counter = 0;
        atomic_store_explicit(&mu_ops, 0, memory_order_relaxed);
        int64_t t0 = bench_now_ns();
        mu_deadline = t0 + (round ? a->ms : 20) * 1000000;
        gort_wg_add(&mu_done, MU_TASKS);
        for (int i = 0; i < MU_TASKS; i++) {
            if (gort_go(mu_task, NULL) != 0) {
                bench_fail("gort_go");
                gort_wg_add(&mu_done, -(MU_TASKS - i));
                gort_wg_wait(&mu_done);
                return;
            }
        }
        gort_wg_wait(&mu_done);
        int64_t t1 = bench_now_ns();
        int64_t ops = atomic_load_explicit(&mu_ops, memory_order_relaxed);
        gort_mutex_lock(&mu_lock);
        int64_t counter = mu_counter;
        gort_mutex_unlock(&mu_lock);
        if (counter != ops) {
            bench_fail("mutex: counter != sum of increments (lost update)");
            return;
        }
        if (round)
            bench_record("mutex", "ns_per_op", (double)(t1 - t0) / (double)ops, NULL);
    }
}

int main(int argc, char **argv) { return bench_gort_main(mu_main, argc, argv); }
