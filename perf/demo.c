/* perf/demo.c — the one-million-task demo (the README's first command):
 *
 *   1. launch 1,000,000 tasks that block receiving on one channel: memory (RSS)
 *      before and after, launch time, live tasks (gort_ntasks);
 *   2. pass 100,000 messages through a pool of 8 workers (results summed, checked);
 *   3. shut everything down: close the channel, wait on a wait group, print memory;
 *   4. fairness: can a CPU-bound task keep the others from running? (demo_fairness)
 *   5. leaks: does the leak detector find a task blocked forever? (demo_leaks)
 * Exits 1 if any check fails; a section whose runtime feature is not built yet says
 * so and is not counted as a failure (nothing is faked).
 *
 *   gort_demo [tasks]      (default 1000000; GORT_PROCS sets the number of Ps)
 *
 * Every task function starts with GORT_FRAME() and keeps its frame small (tasks have
 * 2 KiB stacks); all printing happens in the main task, which has 64 KiB.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "gort.h"

#define DEMO_WORKERS 8
#define DEMO_MESSAGES 100000

static long demo_ntasks = 1000000; /* from argv; read-only once the runtime runs */
static int demo_failures;          /* checks failed; main task only */

/* A failed check: say what, count it. Main task only. */
static void demo_check(int ok, const char *what)
{
    if (!ok) {
        printf("CHECK FAILED: %s\n", what);
        fflush(stdout);
        demo_failures++;
    }
}

static void demo_print_mem(const char *label)
{
    long rss = bench_rss_bytes();
    printf("%-22s %.1f MiB RSS\n", label, (double)rss / (1 << 20));
    fflush(stdout);
}

/* ------------------------------------------------ 1. a million idle tasks */

static gort_chan_t *idle_chan;    /* never sent on; closed at shutdown */
static gort_wg_t idle_done;       /* one done per idle task */
static _Atomic long idle_started; /* relaxed: a counter main polls; orders nothing */
static _Atomic long idle_bad;     /* idle tasks whose receive did not see the close */

static void idle_task(void *arg)
{
    GORT_FRAME();
    atomic_fetch_add_explicit(&idle_started, 1, memory_order_relaxed);
    if (gort_chan_recv(idle_chan, NULL) != -EPIPE)
        atomic_fetch_add_explicit(&idle_bad, 1, memory_order_relaxed);
    gort_wg_done(&idle_done);
}

/* Returns how many tasks were launched. */
static long demo_launch(void)
{
    long n = demo_ntasks;
    idle_chan = gort_chan_make(0, 0);
    demo_check(idle_chan != NULL, "gort_chan_make");
    if (!idle_chan)
        return 0;
    demo_print_mem("memory before:");
    gort_wg_add(&idle_done, n);
    int64_t t0 = bench_now_ns();
    long i = 0;
    for (; i < n; i++) {
        int rc = gort_go(idle_task, NULL);
        if (rc != 0) {
            printf("gort_go failed after %ld tasks: %s\n", i, strerror(-rc));
            demo_check(0, "launch every task");
            gort_wg_add(&idle_done, -(n - i));
            break;
        }
    }
    while (atomic_load_explicit(&idle_started, memory_order_relaxed) < i)
        gort_yield();
    int64_t t1 = bench_now_ns();
    size_t live = gort_ntasks();
    printf("launch:                %ld tasks blocked on one channel in %.0f ms (%.0f ns/task)\n",
           i, (t1 - t0) / 1e6, i ? (double)(t1 - t0) / i : 0.0);
    printf("live tasks:            %zu (gort_ntasks)\n", live);
    long rss = bench_rss_bytes();
    printf("%-22s %.1f MiB RSS\n", "memory with them:", (double)rss / (1 << 20));
    fflush(stdout);
    demo_check(live >= (size_t)i + 1, "gort_ntasks counts every parked task and main");
    return i;
}

/* ------------------------------------------------------- 2. worker pool */

static gort_chan_t *pool_jobs;    /* int64 jobs; closed by the feeder */
static gort_chan_t *pool_results; /* int64 results; closed when every worker is done */
static gort_wg_t pool_workers;    /* one done per worker */
static _Atomic int pool_errors;   /* failed sends; relaxed, read after the pool ended */

/* The work: anything cheap whose sum main can predict. */
static inline int64_t pool_work(int64_t x) { return 3 * x + 1; }

static void pool_feeder(void *arg)
{
    GORT_FRAME();
    for (int64_t x = 1; x <= DEMO_MESSAGES; x++)
        if (gort_chan_send(pool_jobs, &x) != 0)
            atomic_fetch_add_explicit(&pool_errors, 1, memory_order_relaxed);
    gort_chan_close(pool_jobs);
}

static void pool_worker(void *arg)
{
    GORT_FRAME();
    int64_t x;
    while (gort_chan_recv(pool_jobs, &x) == 0) {
        int64_t y = pool_work(x);
        if (gort_chan_send(pool_results, &y) != 0)
            atomic_fetch_add_explicit(&pool_errors, 1, memory_order_relaxed);
    }
    gort_wg_done(&pool_workers);
}

static void pool_closer(void *arg)
{
    GORT_FRAME();
    gort_wg_wait(&pool_workers);
    gort_chan_close(pool_results);
}

static void demo_pool(void)
{
    pool_jobs = gort_chan_make(sizeof(int64_t), 64);
    pool_results = gort_chan_make(sizeof(int64_t), 64);
    demo_check(pool_jobs && pool_results, "gort_chan_make");
    if (!pool_jobs || !pool_results)
        return;
    int64_t t0 = bench_now_ns();
    gort_wg_add(&pool_workers, DEMO_WORKERS);
    int rc = 0;
    for (int i = 0; i < DEMO_WORKERS; i++)
        rc |= gort_go(pool_worker, NULL);
    rc |= gort_go(pool_closer, NULL);
    rc |= gort_go(pool_feeder, NULL);
    demo_check(rc == 0, "gort_go (pool)");
    if (rc)
        return; /* main returns, gort_run discards the rest */
    int64_t y, sum = 0, count = 0;
    while (gort_chan_recv(pool_results, &y) == 0) {
        sum += y;
        count++;
    }
    int64_t t1 = bench_now_ns();
    int64_t want = 3 * ((int64_t)DEMO_MESSAGES * (DEMO_MESSAGES + 1) / 2) + DEMO_MESSAGES;
    int ok = count == DEMO_MESSAGES && sum == want &&
             atomic_load_explicit(&pool_errors, memory_order_relaxed) == 0;
    printf("worker pool:           %" PRId64 " messages through %d workers in %.0f ms, "
           "sum %" PRId64 " (want %" PRId64 ") %s\n",
           count, DEMO_WORKERS, (t1 - t0) / 1e6, sum, want, ok ? "ok" : "WRONG");
    fflush(stdout);
    demo_check(ok, "worker pool: every message once, sum right");
    gort_chan_free(pool_jobs);
    gort_chan_free(pool_results);
}

/* ------------------------------------------------------------ 3. shutdown */

static void demo_shutdown(long launched)
{
    if (!idle_chan)
        return;
    int64_t t0 = bench_now_ns();
    demo_check(gort_chan_close(idle_chan) == 0, "gort_chan_close");
    gort_wg_wait(&idle_done);
    int64_t t1 = bench_now_ns();
    /* wg_done is the tasks' last act, but they finish returning just after it */
    while (gort_ntasks() > 1 && bench_now_ns() - t1 < 2000000000)
        gort_yield();
    size_t live = gort_ntasks();
    printf("shutdown:              channel closed, %ld tasks exited in %.0f ms; "
           "live tasks: %zu\n",
           launched, (t1 - t0) / 1e6, live);
    fflush(stdout);
    demo_check(atomic_load_explicit(&idle_bad, memory_order_relaxed) == 0,
               "every idle task saw the close (-EPIPE)");
    demo_check(live == 1, "only the main task is left");
    demo_check(gort_chan_free(idle_chan) == 0, "gort_chan_free");
    idle_chan = NULL;
    demo_print_mem("memory after:");
}

/* ------------------------------------------------------------ 4. fairness */
/* Later work (asynchronous preemption, preempt/) fills this in further. Today: Ps
 * full of CPU-bound tasks, and the main task asks to wake after 1 ms. A task that
 * calls instrumented functions (a GORT_FRAME check per call) can be preempted
 * cooperatively; a tight loop with no call needs SIGURG (GORT_PREEMPT_ASYNC). Each
 * spinner stops on its own after FAIR_SPIN_NS, so the demo never hangs. */

#define FAIR_SPIN_NS 300000000 /* a spinner's own limit */
#define FAIR_LATE_NS 50000000  /* main woke later than this: not preempted */

static int64_t fair_deadline;       /* written by main before the spawns */
static gort_wg_t fair_done;
static _Atomic int fair_started;    /* spinners that got a P; relaxed: a count main reads */
static _Atomic uint64_t fair_sink;  /* keeps the work alive; relaxed */

/* One step of work in its own instrumented frame: a cooperative preemption point. */
static __attribute__((noinline)) uint64_t fair_step(uint64_t x)
{
    GORT_FRAME();
    for (int i = 0; i < 64; i++)
        x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
    __asm__ volatile("" : "+r"(x));
    return x;
}

static void fair_spin_calls(void *arg)
{
    GORT_FRAME();
    atomic_fetch_add_explicit(&fair_started, 1, memory_order_relaxed);
    uint64_t x = 1;
    while (bench_now_ns() < fair_deadline)
        for (int k = 0; k < 256; k++)
            x = fair_step(x);
    atomic_fetch_add_explicit(&fair_sink, x, memory_order_relaxed);
    gort_wg_done(&fair_done);
}

static void fair_spin_tight(void *arg)
{
    GORT_FRAME();
    atomic_fetch_add_explicit(&fair_started, 1, memory_order_relaxed);
    uint64_t x = 1;
    while (bench_now_ns() < fair_deadline)
        for (int k = 0; k < 16384; k++)
            x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
    atomic_fetch_add_explicit(&fair_sink, x, memory_order_relaxed);
    gort_wg_done(&fair_done);
}

typedef struct fair_result {
    int64_t late_ns;   /* how much later than asked main woke */
    int started;       /* spinners that had started when main woke */
    int procs;         /* Ps, i.e. spinners */
    uint64_t preempts; /* preemptions (async + coop) counted meanwhile */
} fair_result_t;

/* Spawns one spinner running fn per P, then sleeps 1 ms at a time until a sleep
 * that began with every spinner running is over, and reports how late that one woke.
 * If the spinners never all ran at once (a P stayed free), the result says nothing:
 * started < procs, and the caller reports it as inconclusive. */
static void fair_measure(void (*fn)(void *), fair_result_t *r)
{
    gort_stats_t s0, s1;
    gort_stats(&s0);
    r->procs = s0.procs ? (int)s0.procs : 1;
    atomic_store_explicit(&fair_started, 0, memory_order_relaxed);
    fair_deadline = bench_now_ns() + FAIR_SPIN_NS;
    gort_wg_add(&fair_done, r->procs);
    for (int i = 0; i < r->procs; i++)
        if (gort_go(fn, NULL) != 0)
            gort_wg_done(&fair_done);
    for (;;) {
        r->started = atomic_load_explicit(&fair_started, memory_order_relaxed);
        int64_t t0 = bench_now_ns();
        gort_sleep(1000000); /* parks main: the spinners may take every P */
        int64_t t1 = bench_now_ns();
        r->late_ns = t1 - t0 - 1000000;
        if (r->started == r->procs || t1 >= fair_deadline)
            break;
    }
    gort_wg_wait(&fair_done);
    gort_stats(&s1);
    r->preempts = (s1.preempt_async - s0.preempt_async) + (s1.preempt_coop - s0.preempt_coop);
}

static void demo_fairness(void)
{
    fair_result_t r;
    fair_measure(fair_spin_calls, &r);
    if (r.started < r.procs) {
        printf("fairness (calls):      inconclusive: only %d of %d Ps ever ran a spinner "
               "while main slept\n", r.started, r.procs);
    } else {
        printf("fairness (calls):      main woke %.1f ms late beside %d CPU-bound tasks that "
               "call instrumented functions (%" PRIu64 " preemptions) %s\n",
               r.late_ns / 1e6, r.procs, r.preempts,
               r.late_ns <= FAIR_LATE_NS ? "ok" : "NOT PREEMPTED");
        demo_check(r.late_ns <= FAIR_LATE_NS,
                   "cooperative preemption of a task that calls functions");
    }

    gort_stats_t s;
    fair_measure(fair_spin_tight, &r);
    gort_stats(&s);
    if (r.late_ns > FAIR_LATE_NS && s.preempt_async == 0) {
        /* No asynchronous preemption has happened in this run at all: the feature is
         * not built (or is disabled). Report it; do not count it as a failure. */
        printf("fairness (tight loop): not built yet (GORT_PREEMPT_ASYNC): a loop with no "
               "call kept its P for %.0f ms\n", r.late_ns / 1e6);
    } else if (r.started < r.procs) {
        printf("fairness (tight loop): inconclusive: only %d of %d Ps ever ran a spinner "
               "while main slept\n", r.started, r.procs);
    } else {
        printf("fairness (tight loop): main woke %.1f ms late beside %d tight loops "
               "(%" PRIu64 " preemptions) %s\n",
               r.late_ns / 1e6, r.procs, r.preempts,
               r.late_ns <= FAIR_LATE_NS ? "ok" : "NOT PREEMPTED");
        demo_check(r.late_ns <= FAIR_LATE_NS, "asynchronous preemption of a tight loop");
    }
    fflush(stdout);
}

/* --------------------------------------------------------------- 5. leaks */
/* Later work (the leak detector, gc/) fills this in. A task blocks receiving on a
 * channel that only it can reach: nobody can ever wake it, so the detector must
 * report it. The channel is made in a helper task that exits, so no stale copy of
 * the pointer stays in main's frames. */

static gort_wg_t leak_made;

static void leak_victim(void *arg)
{
    GORT_FRAME();
    gort_chan_recv(arg, NULL); /* blocks forever: nobody else knows the channel */
}

static void leak_maker(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(0, 0);
    if (c)
        gort_go(leak_victim, c);
    gort_wg_done(&leak_made);
}

static void demo_leaks(void)
{
    gort_leak_t found[8];
    int n = gort_leaks(NULL, 0);
    if (n == -ENOSYS) {
        printf("leaks:                 not built yet (gort_leaks returns -ENOSYS)\n");
        fflush(stdout);
        return;
    }
    demo_check(n == 0, "no leak before the planted one");
    gort_wg_add(&leak_made, 1);
    demo_check(gort_go(leak_maker, NULL) == 0, "gort_go (leak maker)");
    gort_wg_wait(&leak_made);
    for (int i = 0; i < 200 && gort_leaks(NULL, 0) < 1; i++)
        gort_sleep(1000000); /* let the victim reach its receive */
    int64_t t0 = gort_now();
    n = gort_leaks(found, 8);
    int64_t cycle = gort_now() - t0;
    int ok = n == 1 && found[0].wait && strcmp(found[0].wait, "chan receive") == 0;
    printf("leaks:                 planted 1 task blocked forever, detector found %d", n);
    if (n > 0)
        printf(" (task %" PRIu64 ", \"%s\", blocked %.1f ms, spawned at %s)", found[0].id,
               found[0].wait ? found[0].wait : "?", found[0].blocked_ns / 1e6,
               found[0].spawn_site ? found[0].spawn_site : "?");
    printf(" in %.2f ms %s\n", cycle / 1e6, ok ? "ok" : "WRONG");
    demo_check(ok, "leak detector finds the planted leak");
    /* Recovery: the victim's receive returns -ECANCELED and it ends. The records name
     * the channel: wipe them first, or this frame would keep it reachable. */
    memset(found, 0, sizeof found);
    __asm__ volatile("" : : "r"(found) : "memory");
    int cancelled = gort_leaks_cancel();
    for (int i = 0; i < 200 && gort_leaks(NULL, 0) != 0; i++)
        gort_sleep(1000000);
    int left = gort_leaks(NULL, 0);
    printf("leaks:                 recovery cancelled %d, left %d %s\n", cancelled, left,
           cancelled == 1 && left == 0 ? "ok" : "WRONG");
    fflush(stdout);
    demo_check(cancelled == 1 && left == 0, "leak recovery (-ECANCELED)");
}

/* -------------------------------------------------------------------- main */

static void demo_main(void *arg)
{
    gort_stats_t s;
    gort_stats(&s);
    printf("gort demo: %ld tasks, %" PRIu64 " P%s (GORT_PROCS to change)\n", demo_ntasks,
           s.procs, s.procs == 1 ? "" : "s");
    fflush(stdout);
    long launched = demo_launch();
    demo_pool();
    demo_shutdown(launched);
    demo_fairness();
    demo_leaks();
    demo_print_mem("memory at the end:");
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        demo_ntasks = atol(argv[1]);
        if (demo_ntasks < 1) {
            fprintf(stderr, "usage: %s [tasks]\n", argv[0]);
            return 2;
        }
    }
    int rc = gort_run(demo_main, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "gort_demo: gort_run: %s\n", strerror(-rc));
        return 1;
    }
    if (demo_failures) {
        printf("gort demo: %d check(s) FAILED\n", demo_failures);
        return 1;
    }
    printf("gort demo: all checks passed\n");
    return 0;
}
