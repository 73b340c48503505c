/* perf/bench_cpu_hash.c — (g) CPU-bound parallel work: 64 tasks each compute a chain
 * of n= (default 2^19) dependent splitmix64 steps from their own seed. Run with
 * procs=1 and procs=2: the runner divides the two times (speed-up; ideal 2.0).
 * Result: ns per step (elapsed / (64 * n)), and check= the xor of the 64 chain ends,
 * which Go and the pthread version must reproduce exactly.
 * The tasks never block or yield: on 2 P the load balance comes from work stealing.
 */
#include "bench_gort.h"

#define CPU_TASKS 64

static long cpu_steps;                 /* chain length; written by main before spawns */
static uint64_t cpu_out[CPU_TASKS];    /* each task writes its own slot; read after wait */
static gort_wg_t cpu_done;

static inline uint64_t cpu_chain(uint64_t x, long steps)
{
    for (long i = 0; i < steps; i++) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        x = z ^ (z >> 31);
    }
    return x;
}

static void cpu_task(void *arg)
{
    GORT_FRAME();
    uintptr_t i = (uintptr_t)arg;
    cpu_out[i] = cpu_chain(i + 1, cpu_steps);
    gort_wg_done(&cpu_done);
}

static void cpu_main(void *argp)
{
    const bench_args_t *a = argp;
    cpu_steps = a->n > 0 ? a->n : 1 << 19;
    int64_t t0 = bench_now_ns();
    gort_wg_add(&cpu_done, CPU_TASKS);
    for (uintptr_t i = 0; i < CPU_TASKS; i++) {
        if (gort_go(cpu_task, (void *)i) != 0) {
            bench_fail("gort_go");
            gort_wg_add(&cpu_done, -(int64_t)(CPU_TASKS - i));
            return;
        }
    }
    gort_wg_wait(&cpu_done);
    int64_t t1 = bench_now_ns();
    uint64_t check = 0;
    for (int i = 0; i < CPU_TASKS; i++)
        check ^= cpu_out[i];
    char extra[40];
    snprintf(extra, sizeof extra, "check=%016llx", (unsigned long long)check);
    bench_record("cpu_hash", "ns_per_op", (double)(t1 - t0) / ((double)CPU_TASKS * cpu_steps),
                 extra);
}

int main(int argc, char **argv) { return bench_gort_main(cpu_main, argc, argv); }
