/* perf/bench_gort.h — the frame of every gort benchmark: parse the arguments, run the
 * benchmark as the main task of a fresh runtime with `procs` Ps, then print what it
 * recorded. The benchmark body runs in the main task (64 KiB stack); the tasks it
 * spawns have 2 KiB stacks, so they never print: they leave a string literal in
 * bench_error and main() reports it. */
#ifndef GORT_PERF_BENCH_GORT_H
#define GORT_PERF_BENCH_GORT_H

#include <stdatomic.h>

#include "bench_util.h"
#include "gort.h"

/* First failure seen by any task: a string literal; CAS from NULL, so the first wins.
 * Relaxed is enough: main() reads it after gort_run returned, which joined every M. */
static _Atomic(const char *) bench_error;

static inline void bench_fail(const char *what)
{
    const char *none = NULL;
    atomic_compare_exchange_strong_explicit(&bench_error, &none, what, memory_order_relaxed,
                                            memory_order_relaxed);
}

/* Runs body(args) as the main task and prints its results as impl=gort; returns the
 * process exit code. */
static inline int bench_gort_main(void (*body)(void *), int argc, char **argv)
{
    static bench_args_t args; /* global: read by tasks through the body */
    bench_args_parse(&args, argc, argv);
    gort_config_t cfg = {.procs = args.procs};
    int rc = gort_run(body, &args, &cfg);
    if (rc != 0) {
        fprintf(stderr, "%s: gort_run: %s\n", argv[0], strerror(-rc));
        return 1;
    }
    const char *err = atomic_load_explicit(&bench_error, memory_order_relaxed);
    if (err) {
        fprintf(stderr, "%s: FAILED: %s\n", argv[0], err);
        return 1;
    }
    bench_print_results("gort", args.procs);
    return bench_failed ? 1 : 0;
}

#endif
