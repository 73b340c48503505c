/* perf/bench_idle_spawn.c — (c) one million idle tasks blocked on one channel.
 *
 * Round 1 (cold, in a fresh process): spawn n= tasks (default 1,000,000); each one
 * counts itself as started and blocks receiving on one unbuffered channel. The launch
 * time runs from the first gort_go until every task has started (so it includes each
 * task's first run up to its park, as in Go). RSS is read from /proc/self/statm
 * before and after: the difference per task is the memory cost of an idle task.
 * Then the channel is closed, every task exits, and round 2 (warm) does the same
 * again, now reusing the memory (task records, stacks) round 1 gave back.
 * Results: idle_spawn_cold, idle_spawn_warm (ns per task), idle_rss (bytes per task,
 * from round 1), idle_exit (ns per task from close to the last exit, round 2).
 */
#include "bench_gort.h"

static gort_chan_t *idle_chan;     /* the channel of the current round; set by main
                                      before the spawns, read by the tasks */
static _Atomic long idle_started;  /* tasks that reached their receive; relaxed: main
                                      polls it only to know when to stop waiting */
static gort_wg_t idle_done;        /* exits of the current round's tasks */

static void idle_task(void *arg)
{
    GORT_FRAME();
    atomic_fetch_add_explicit(&idle_started, 1, memory_order_relaxed);
    if (gort_chan_recv(idle_chan, NULL) != -EPIPE)
        bench_fail("idle task: receive did not report the close");
    gort_wg_done(&idle_done);
}

typedef struct idle_round {
    int64_t spawn_ns; /* first gort_go .. all started */
    int64_t exit_ns;  /* close .. all exited */
    long rss_before;
    long rss_after;
    size_t ntasks;    /* gort_ntasks() with every task parked */
} idle_round_t;

static int idle_run_round(long n, idle_round_t *r)
{
    idle_chan = gort_chan_make(0, 0);
    if (!idle_chan)
        return -1;
    atomic_store_explicit(&idle_started, 0, memory_order_relaxed);
    r->rss_before = bench_rss_bytes();
    gort_wg_add(&idle_done, n);
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        if (gort_go(idle_task, NULL) != 0) {
            bench_fail("gort_go failed (out of memory?)");
            gort_wg_add(&idle_done, -(n - i));
            break;
        }
    }
    while (atomic_load_explicit(&idle_started, memory_order_relaxed) < n &&
           !atomic_load_explicit(&bench_error, memory_order_relaxed))
        gort_yield();
    int64_t t1 = bench_now_ns();
    r->rss_after = bench_rss_bytes();
    r->ntasks = gort_ntasks();
    gort_chan_close(idle_chan);
    gort_wg_wait(&idle_done);
    int64_t t2 = bench_now_ns();
    r->spawn_ns = t1 - t0;
    r->exit_ns = t2 - t1;
    gort_chan_free(idle_chan);
    idle_chan = NULL;
    return atomic_load_explicit(&bench_error, memory_order_relaxed) ? -1 : 0;
}

static void idle_main(void *argp)
{
    const bench_args_t *a = argp;
    long n = a->n > 0 ? a->n : 1000000;
    idle_round_t cold, warm;
    if (idle_run_round(n, &cold) || idle_run_round(n, &warm))
        return;
    if (cold.ntasks < (size_t)n || warm.ntasks < (size_t)n) {
        bench_fail("gort_ntasks() below the number of parked tasks");
        return;
    }
    bench_record("idle_spawn_cold", "ns_per_op", (double)cold.spawn_ns / n, NULL);
    bench_record("idle_spawn_warm", "ns_per_op", (double)warm.spawn_ns / n, NULL);
    bench_record("idle_rss", "bytes_per_task",
                 (double)(cold.rss_after - cold.rss_before) / n, NULL);
    bench_record("idle_exit", "ns_per_op", (double)warm.exit_ns / n, NULL);
}

int main(int argc, char **argv) { return bench_gort_main(idle_main, argc, argv); }
