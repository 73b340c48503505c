/* perf/bench_deep_recursion.c — stack growth by copying (stackmap/): a task starting on
 * the default 2 KiB stack recurses to n frames of 64-byte frames (each a GORT_FRAME
 * check and a pointer to the base frame's accumulator, listed in the map), twice:
 * the first run grows the stack (copies, relocation, first-touch page faults), the
 * second runs on the grown stack. Results: ns a frame, first and second run, for
 * depth 10,000 and n (default 1,000,000). Go: perf/go/deep.go.
 * Then the task parks and gc cycles (gort_leaks) shrink its stack, halving it once a
 * cycle (stackmap/shrink.c): the bytes the parked task still holds after up to 32
 * cycles (issue 3's goal: <= 4 KiB), and the cycles that took.
 */
#include "bench_gort.h"

static __attribute__((noinline)) uint64_t dr_rec(uint64_t n, uint64_t *acc)
{
    GORT_FRAME(acc);
    volatile uint64_t pad[3] = {n, n >> 1, n >> 2}; /* 64-byte frames, as in deep.go */
    *acc += pad[0];
    if (n == 0)
        return pad[1];
    return dr_rec(n - 1, acc) + pad[2];
}

struct dr_req {
    uint64_t depth;
    int64_t ns[2];
    uint64_t sum[2];
    gort_wg_t done;
    gort_chan_t *park; /* the task parks on it after the runs; closed to let it go */
};

static void dr_task(void *arg)
{
    GORT_FRAME();
    struct dr_req *r = arg;
    for (int run = 0; run < 2; run++) {
        uint64_t acc = 0;
        int64_t t0 = bench_now_ns();
        r->sum[run] = dr_rec(r->depth, &acc) + acc;
        r->ns[run] = bench_now_ns() - t0;
    }
    gort_wg_done(&r->done);
    gort_chan_recv(r->park, NULL);
}

static void dr_main(void *argp)
{
    const bench_args_t *a = argp;
    uint64_t depths[2] = {10000, a->n > 0 ? (uint64_t)a->n : 1000000};
    for (int i = 0; i < 2; i++) {
        static struct dr_req r; /* shared with the task: global, never on a stack */
        memset(&r, 0, sizeof r);
        r.depth = depths[i];
        r.park = gort_chan_make(0, 0);
        gort_wg_add(&r.done, 1);
        gort_stats_t st0, st1;
        gort_stats(&st0);
        if (gort_go(dr_task, &r) != 0) {
            bench_fail("gort_go");
            return;
        }
        gort_wg_wait(&r.done);
        gort_yield(); /* the task parks right after its wg_done */
        int cycles = 0;
        int64_t tc = bench_now_ns();
        for (;;) {
            gort_stats(&st1);
            if (st1.stack_bytes <= st0.stack_bytes + 4096 || cycles == 32)
                break;
            gort_leaks(NULL, 0);
            cycles++;
        }
        tc = bench_now_ns() - tc;
        gort_chan_close(r.park);
        while (gort_ntasks() > 1)
            gort_yield();
        gort_chan_free(r.park);
        if (r.sum[0] != r.sum[1])
            bench_fail("checksum differs between runs");
        char extra[64];
        snprintf(extra, sizeof extra, "depth=%llu", (unsigned long long)r.depth);
        bench_record(i ? "deep_1e6_first" : "deep_1e4_first", "ns_per_frame",
                     (double)r.ns[0] / (double)r.depth, extra);
        bench_record(i ? "deep_1e6_second" : "deep_1e4_second", "ns_per_frame",
                     (double)r.ns[1] / (double)r.depth, extra);
        snprintf(extra, sizeof extra, "depth=%llu cycles=%d ms=%.1f", (unsigned long long)r.depth,
                 cycles, (double)tc / 1e6);
        bench_record(i ? "deep_1e6_parked_shrunk_stack" : "deep_1e4_parked_shrunk_stack",
                     "bytes", (double)(st1.stack_bytes - st0.stack_bytes), extra);
    }
}

int main(int argc, char **argv) { return bench_gort_main(dr_main, argc, argv); }
