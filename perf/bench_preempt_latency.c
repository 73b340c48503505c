/* perf/bench_preempt_latency.c — asynchronous preemption on 1 P (issue 4):
 *  - lateness of a task sleeping 1 ms in a loop beside 1 and 4 call-free spinners
 *    (median, max over 500 sleeps);
 *  - Jain's fairness index of 4 spinners for 2 s;
 *  - cost on a CPU-bound task with nothing to preempt it for: ASYNC vs OFF.
 * Usage: bench_preempt_latency [n=SLEEPS] [procs=1 ms=..] (n: sleeps per spinner count,
 * at most and by default 500; the other arguments of the runner are accepted and
 * ignored: the comparison is 1 P). Prints one line per measurement, and the
 * RESULT lines (value=) that perf/run.py puts beside Go's (perf/go/preempt.go, same
 * names). Standalone (not the bench_gort.h frame): it runs several runtimes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gort.h"

enum { SLEEPS = 500, MAXSPIN = 4 };

static volatile int stop;
static volatile uint64_t counts[MAXSPIN];
static int64_t late[SLEEPS];
static int nspin_cfg;
static int nsleeps = SLEEPS; /* n= */

/* Global, not static: in a static link, static functions laid out right next to the
 * runtime are taken for the runtime's (preempt/README.md, known weakness). */
void bench_preempt_spinner(void *arg);
void bench_preempt_spinner(void *arg)
{
    GORT_FRAME();
    intptr_t i = (intptr_t)arg;
    uint64_t n = 0;
    while (!stop)
        counts[i] = ++n;
}

static void sleeper(void *arg)
{
    GORT_FRAME();
    for (int i = 0; i < nsleeps; i++) {
        int64_t t0 = gort_now();
        gort_sleep(1000000);
        late[i] = gort_now() - t0 - 1000000;
    }
    stop = 1;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void latency_main(void *arg)
{
    for (intptr_t i = 0; i < nspin_cfg; i++)
        gort_go(bench_preempt_spinner, (void *)i);
    gort_go(sleeper, NULL);
    while (!stop)
        gort_sleep(10000000);
}

static void fair_main(void *arg)
{
    for (intptr_t i = 0; i < MAXSPIN; i++)
        gort_go(bench_preempt_spinner, (void *)i);
    gort_sleep(2000000000);
    stop = 1;
}

static volatile uint64_t sink;

static void cpu_main(void *arg)
{
    int64_t t0 = gort_now();
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < 1500000000ull; i++)
        h = (h ^ i) * 1099511628211ull;
    sink = h;
    *(int64_t *)arg = gort_now() - t0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "n=", 2) && atoi(argv[i] + 2) > 0 && atoi(argv[i] + 2) <= SLEEPS)
            nsleeps = atoi(argv[i] + 2);
    for (int k = 0; k < 2; k++) {
        nspin_cfg = k ? 4 : 1;
        stop = 0;
        gort_config_t cfg = {.procs = 1};
        gort_run(latency_main, NULL, &cfg);
        qsort(late, nsleeps, sizeof late[0], cmp64);
        printf("preempt_latency impl=gort spinners=%d median_us=%.1f p99_us=%.1f max_us=%.1f\n",
               nspin_cfg, late[nsleeps / 2] / 1e3, late[nsleeps * 99 / 100] / 1e3,
               late[nsleeps - 1] / 1e3);
        printf("RESULT name=preempt_late_median_%d impl=gort procs=1 value=%.1f spinners=%d\n",
               nspin_cfg, late[nsleeps / 2] / 1e3, nspin_cfg);
        printf("RESULT name=preempt_late_max_%d impl=gort procs=1 value=%.1f spinners=%d\n",
               nspin_cfg, late[nsleeps - 1] / 1e3, nspin_cfg);
    }
    stop = 0;
    memset((void *)counts, 0, sizeof counts);
    gort_config_t cfg = {.procs = 1};
    gort_run(fair_main, NULL, &cfg);
    double s = 0, s2 = 0;
    for (int i = 0; i < MAXSPIN; i++) {
        s += (double)counts[i];
        s2 += (double)counts[i] * (double)counts[i];
    }
    printf("preempt_fairness impl=gort spinners=4 seconds=2 jain=%.4f\n", s * s / (MAXSPIN * s2));
    printf("RESULT name=preempt_jain impl=gort procs=1 value=%.4f spinners=4 seconds=2\n",
           s * s / (MAXSPIN * s2));
    int64_t t_async = 0, t_off = 0;
    gort_config_t ca = {.procs = 1, .preempt = GORT_PREEMPT_ASYNC};
    gort_config_t co = {.procs = 1, .preempt = GORT_PREEMPT_OFF};
    for (int r = 0; r < 2; r++) {
        int64_t a, o;
        gort_run(cpu_main, &a, &ca);
        gort_run(cpu_main, &o, &co);
        if (!t_async || a < t_async)
            t_async = a;
        if (!t_off || o < t_off)
            t_off = o;
    }
    printf("preempt_overhead impl=gort async_ms=%.1f off_ms=%.1f overhead_pct=%.2f\n",
           t_async / 1e6, t_off / 1e6, 100.0 * (double)(t_async - t_off) / (double)t_off);
    printf("RESULT name=preempt_overhead impl=gort procs=1 value=%.2f async_ms=%.1f off_ms=%.1f\n",
           100.0 * (double)(t_async - t_off) / (double)t_off, t_async / 1e6, t_off / 1e6);
    return 0;
}
