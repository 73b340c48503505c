/* perf/bench_util.h — helpers shared by the C benchmarks (gort and pthread alike):
 * argument parsing, clocks, resident memory, and the RESULT line format.
 *
 * Every benchmark program takes the same key=value arguments, as do the Go and pthread
 * counterparts, so the runner (perf/run.py) drives all three the same way:
 *   procs=N   Ps (gort), GOMAXPROCS (Go), CPUs in the affinity mask (pthread)
 *   ms=N      time budget of a time-bounded measurement (default 250)
 *   n=N       work count of a count-bounded measurement (default per benchmark)
 * and prints one line per measurement on stdout:
 *   RESULT name=<bench> impl=<gort|go|pthread> procs=<N> <metric>=<value> [key=value...]
 *
 * Nothing here needs the runtime, and nothing here may be called from a task with a
 * small stack except bench_now_ns and bench_rss_bytes (syscalls and a few locals only):
 * gort benchmarks record results with bench_record in the main task and print them
 * after gort_run has returned, on the thread's own stack.
 */
#ifndef GORT_PERF_BENCH_UTIL_H
#define GORT_PERF_BENCH_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_args {
    int procs;  /* parsed once in main(); read-only afterwards */
    int64_t ms; /* time budget of time-bounded loops, milliseconds */
    long n;     /* work count; 0 = the benchmark's default */
} bench_args_t;

static inline void bench_args_parse(bench_args_t *a, int argc, char **argv)
{
    const char *env = getenv("GORT_PROCS");
    a->procs = env ? atoi(env) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    a->ms = 250;
    a->n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "procs=", 6))
            a->procs = atoi(argv[i] + 6);
        else if (!strncmp(argv[i], "ms=", 3))
            a->ms = atoll(argv[i] + 3);
        else if (!strncmp(argv[i], "n=", 2))
            a->n = atol(argv[i] + 2);
        else {
            fprintf(stderr, "%s: unknown argument '%s' (procs=N ms=N n=N)\n", argv[0], argv[i]);
            exit(2);
        }
    }
    if (a->procs < 1)
        a->procs = 1;
    if (a->ms < 1)
        a->ms = 1;
}

/* Monotonic nanoseconds (vDSO; safe on a task stack). */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Resident set size in bytes from /proc/self/statm (second field, in pages); -1 on
 * error. Plain syscalls and a 64-byte buffer, no stdio: callable from a task. */
static inline long bench_rss_bytes(void)
{
    char buf[64];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = buf;
    while (*p && *p != ' ') /* skip "size" */
        p++;
    long pages = 0;
    while (*p == ' ')
        p++;
    while (*p >= '0' && *p <= '9')
        pages = pages * 10 + (*p++ - '0');
    return pages * sysconf(_SC_PAGESIZE);
}

/* Results recorded during a run (main task only), printed after it. */
typedef struct bench_result {
    const char *name;   /* benchmark name, a string literal */
    const char *metric; /* "ns_per_op", "bytes_per_task", ... */
    double value;
    char extra[96];     /* more key=value pairs, already formatted; may be empty */
} bench_result_t;

/* main task only, then main() after gort_run; unused by the pthread program */
static bench_result_t bench_results[16] __attribute__((unused));
static int bench_nresults __attribute__((unused));
static int bench_failed __attribute__((unused)); /* a failed check: main() exits 1 */

static inline void bench_record(const char *name, const char *metric, double value,
                                const char *extra)
{
    if (bench_nresults == (int)(sizeof bench_results / sizeof bench_results[0]))
        return;
    bench_result_t *r = &bench_results[bench_nresults++];
    r->name = name;
    r->metric = metric;
    r->value = value;
    r->extra[0] = 0;
    if (extra) {
        size_t len = strlen(extra);
        if (len >= sizeof r->extra)
            len = sizeof r->extra - 1;
        memcpy(r->extra, extra, len);
        r->extra[len] = 0;
    }
}

static inline void bench_print_results(const char *impl, int procs)
{
    for (int i = 0; i < bench_nresults; i++) {
        bench_result_t *r = &bench_results[i];
        printf("RESULT name=%s impl=%s procs=%d %s=%.2f%s%s\n", r->name, impl, procs,
               r->metric, r->value, r->extra[0] ? " " : "", r->extra);
    }
    fflush(stdout);
}

#endif
