/* perf/bench_yield.c — (b) two tasks calling gort_yield in a loop (Go: runtime.Gosched).
 *
 * Meant for 1 P: each yield puts the caller at the back of the run queue and switches
 * to the other task. Each task checks the clock every 1024 yields and both stop at the
 * deadline; the result is elapsed time / total yields.
 */
#include "bench_gort.h"

static _Atomic int y_stop;       /* set by the first task past the deadline; relaxed:
                                    a flag polled in a loop, it orders nothing */
static _Atomic int64_t y_total;  /* yields done, summed at task exit; relaxed (read
                                    after gort_wg_wait, which orders it) */
static int64_t y_deadline;       /* written by main before the spawns */
static gort_wg_t y_done;

static void y_task(void *arg)
{
    GORT_FRAME();
    int64_t n = 0;
    while (!atomic_load_explicit(&y_stop, memory_order_relaxed)) {
        for (int k = 0; k < 1024; k++)
            gort_yield();
        n += 1024;
        if (bench_now_ns() >= y_deadline)
            atomic_store_explicit(&y_stop, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&y_total, n, memory_order_relaxed);
    gort_wg_done(&y_done);
}

static void y_main(void *argp)
{
    const bench_args_t *a = argp;
    /* warm-up round of 20 ms, then the measured one */
    for (int round = 0; round < 2; round++) {
        atomic_store_explicit(&y_stop, 0, memory_order_relaxed);
        atomic_store_explicit(&y_total, 0, memory_order_relaxed);
        int64_t t0 = bench_now_ns();
        y_deadline = t0 + (round ? a->ms : 20) * 1000000;
        gort_wg_add(&y_done, 2);
        if (gort_go(y_task, NULL) != 0 || gort_go(y_task, NULL) != 0) {
            bench_fail("gort_go");
            return;
        }
        gort_wg_wait(&y_done);
        int64_t t1 = bench_now_ns();
        int64_t n = atomic_load_explicit(&y_total, memory_order_relaxed);
        if (round && n > 0)
            bench_record("yield", "ns_per_op", (double)(t1 - t0) / (double)n, NULL);
    }
}

int main(int argc, char **argv) { return bench_gort_main(y_main, argc, argv); }
