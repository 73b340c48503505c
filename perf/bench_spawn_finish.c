/* perf/bench_spawn_finish.c — (d) spawn n= tasks (default 1,000,000) that each just
 * mark a wait group done, and wait for all of them: ns per task, spawn to exit.
 * A warm-up round of n/10 tasks runs first, so the measured round is not the first
 * touch of the task and stack pools (bench_idle_spawn measures the cold case).
 */
#include "bench_gort.h"

static gort_wg_t sf_done;

static void sf_task(void *arg)
{
    GORT_FRAME();
    gort_wg_done(&sf_done);
}

/* Spawns n tasks and waits for them; returns elapsed ns or -1. */
static int64_t sf_round(long n)
{
    int64_t t0 = bench_now_ns();
    gort_wg_add(&sf_done, n);
    for (long i = 0; i < n; i++) {
        if (gort_go(sf_task, NULL) != 0) {
            bench_fail("gort_go failed");
            gort_wg_add(&sf_done, -(n - i));
            gort_wg_wait(&sf_done);
            return -1;
        }
    }
    gort_wg_wait(&sf_done);
    return bench_now_ns() - t0;
}

static void sf_main(void *argp)
{
    const bench_args_t *a = argp;
    long n = a->n > 0 ? a->n : 1000000;
    if (sf_round(n / 10 + 1) < 0)
        return;
    int64_t ns = sf_round(n);
    if (ns < 0)
        return;
    bench_record("spawn_finish", "ns_per_op", (double)ns / n, NULL);
}

int main(int argc, char **argv) { return bench_gort_main(sf_main, argc, argv); }
