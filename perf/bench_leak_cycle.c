/* perf/bench_leak_cycle.c — one gc cycle (stop the world, mark, find leaks) over N
 * parked tasks: half of them blocked on channels that a sleeping task holds (live: the
 * fixed point must make them roots), half leaked. Prints the median of several cycles,
 * split into stop-the-world and marking.
 *   bench_leak_cycle [tasks=1000] [procs=2] [cycles=5] [heap_mb=0]
 * heap_mb: that many MiB of the program's heap, in 256-byte malloc blocks kept in a
 * list from a global (all reachable), to price the heap's part of a cycle: a root
 * scanned word by word by default, traced block by block with libgort_trackheap
 * (LD_PRELOAD it to compare).
 * Issue 5's budgets: 1,000 tasks <= 1 ms; 1,000,000 tasks <= 0.5 s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gort.h"

void gc_last_cycle_ns(int64_t *stw_ns, int64_t *mark_ns); /* gc/leakcheck.c (static lib) */

static long ntasks = 1000, ncycles = 5, heap_mb;
static int failed;

enum { HEAP_BLOCK = 256 };
static void **heap_list; /* each block's first word: the next block */

/* Before the runtime starts: malloc's slow paths need a deep stack. */
static void heap_fill(long mb)
{
    long n = mb * (1L << 20) / HEAP_BLOCK;
    for (long i = 0; i < n; i++) {
        void **b = malloc(HEAP_BLOCK);
        if (!b) {
            failed = 1;
            return;
        }
        memset(b, 0x11, HEAP_BLOCK); /* resident, and no word looks like a pointer */
        b[0] = heap_list;
        heap_list = b;
    }
}

static void heap_free(void)
{
    while (heap_list) {
        void **next = *heap_list;
        free(heap_list);
        heap_list = next;
    }
}
static gort_chan_t *live_chan; /* held by a sleeping task: its receivers are live */

static void t_recv(void *arg)
{
    GORT_FRAME();
    gort_chan_recv(arg, NULL);
}

static void t_holder(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = arg;
    gort_sleep(3600LL * 1000000000);
    gort_chan_close(c);
}

static __attribute__((noinline)) void spawn_all(void)
{
    gort_chan_t *dead = gort_chan_make(0, 0);
    live_chan = gort_chan_make(0, 0);
    gort_go(t_holder, live_chan);
    for (long i = 0; i < ntasks; i++)
        if (gort_go(t_recv, i % 2 ? dead : live_chan) != 0)
            failed = 1;
    live_chan = NULL; /* only the holder keeps it */
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void body(void *arg)
{
    GORT_FRAME();
    int64_t t0 = gort_now();
    spawn_all();
    while (gort_ntasks() < (size_t)ntasks + 2)
        gort_yield();
    gort_sleep(20000000); /* let every task block */
    int64_t spawn_ns = gort_now() - t0;
    int64_t tot[64], stw[64], mark[64];
    long want = ntasks / 2;
    for (long i = 0; i < ncycles && i < 64; i++) {
        int64_t a = gort_now();
        int n = gort_leaks(NULL, 0);
        tot[i] = gort_now() - a;
        gc_last_cycle_ns(&stw[i], &mark[i]);
        if (n != want) {
            fprintf(stderr, "cycle %ld: %d leaked, want %ld\n", i, n, want);
            failed = 1;
        }
    }
    long k = ncycles < 64 ? ncycles : 64;
    qsort(tot, (size_t)k, sizeof tot[0], cmp64);
    qsort(stw, (size_t)k, sizeof stw[0], cmp64);
    qsort(mark, (size_t)k, sizeof mark[0], cmp64);
    printf("bench_leak_cycle tasks=%ld heap_mb=%ld trackheap=%d cycles=%ld: cycle median %.3f ms (stw %.3f ms, mark "
           "%.3f ms), min %.3f ms, max %.3f ms; spawn+settle %.1f ms\n",
           ntasks, heap_mb, gort_trackheap_status() > 0, k, tot[k / 2] / 1e6, stw[k / 2] / 1e6, mark[k / 2] / 1e6, tot[0] / 1e6,
           tot[k - 1] / 1e6, spawn_ns / 1e6);
}

int main(int argc, char **argv)
{
    int procs = 2;
    if (argc > 1)
        ntasks = atol(argv[1]);
    if (argc > 2)
        procs = atoi(argv[2]);
    if (argc > 3)
        ncycles = atol(argv[3]);
    if (argc > 4)
        heap_mb = atol(argv[4]);
    heap_fill(heap_mb);
    gort_config_t cfg = {.procs = procs, .preempt = getenv("BENCH_COOP") ? GORT_PREEMPT_COOP : 0};
    int rc = gort_run(body, NULL, &cfg);
    heap_free();
    if (rc || failed) {
        fprintf(stderr, "bench_leak_cycle: failed (rc %d)\n", rc);
        return 1;
    }
    return 0;
}
