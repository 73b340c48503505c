/* perf/pthread/pthread_bench.c — the pthread counterparts of the gort benchmarks, one
 * program with a subcommand per benchmark:
 *   bench_pthread <name> procs=N ms=N n=N
 * procs= restricts the process to the first N allowed CPUs (sched_setaffinity), the
 * closest thing threads have to Ps. Same RESULT lines as the gort and Go versions.
 *   chan_pingpong  two threads, a value back and forth through two pipes: ns per
 *                  one-way handoff (the "pthread pipe ping-pong")
 *   yield          two threads calling sched_yield: ns per yield
 *   spawn_finish   pthread_create + join in batches of 64: ns per thread
 *   mutex          4 threads, one pthread_mutex_t around a counter: ns per lock/unlock
 *   cpu_hash       the same 64 splitmix64 chains, procs threads taking chains from an
 *                  atomic index: ns per step, and the same check= value
 * Links with -lpthread only.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "bench_util.h"

static bench_args_t args;

static void die(const char *what)
{
    fprintf(stderr, "bench_pthread: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void result(const char *name, const char *metric, double v, const char *extra)
{
    printf("RESULT name=%s impl=pthread procs=%d %s=%.2f%s%s\n", name, args.procs, metric, v,
           extra ? " " : "", extra ? extra : "");
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc) {
        errno = rc;
        die("pthread_create");
    }
}

/* Keeps the first `procs` CPUs of the allowed set. */
static void pin_procs(int procs)
{
    cpu_set_t allowed, use;
    if (sched_getaffinity(0, sizeof allowed, &allowed))
        die("sched_getaffinity");
    CPU_ZERO(&use);
    int k = 0;
    for (int c = 0; c < CPU_SETSIZE && k < procs; c++) {
        if (CPU_ISSET(c, &allowed)) {
            CPU_SET(c, &use);
            k++;
        }
    }
    if (k < procs)
        fprintf(stderr, "bench_pthread: only %d CPUs allowed, procs=%d\n", k, procs);
    if (sched_setaffinity(0, sizeof use, &use))
        die("sched_setaffinity");
}

/* ---------------------------------------------------------------- ping-pong */

static int pp_ping[2];
static int pp_pong[2];

static void *pp_echo(void *arg)
{
    int64_t v;
    for (;;) {
        ssize_t n = read(pp_ping[0], &v, sizeof v);
        if (n == 0)
            return NULL; /* closed: done */
        if (n != sizeof v || write(pp_pong[1], &v, sizeof v) != sizeof v)
            die("echo");
    }
}

static void pp_round(int64_t i)
{
    int64_t v = i;
    if (write(pp_ping[1], &v, sizeof v) != sizeof v || read(pp_pong[0], &v, sizeof v) != sizeof v ||
        v != i)
        die("ping-pong");
}

static void bench_pingpong(void)
{
    if (pipe(pp_ping) || pipe(pp_pong))
        die("pipe");
    pthread_t t;
    start(&t, pp_echo, NULL);
    int64_t i = 0;
    for (; i < 2000; i++)
        pp_round(i);
    int64_t t0 = bench_now_ns(), t1;
    int64_t deadline = t0 + args.ms * 1000000;
    int64_t rounds = 0;
    do {
        for (int k = 0; k < 64; k++, i++)
            pp_round(i);
        rounds += 64;
        t1 = bench_now_ns();
    } while (t1 < deadline);
    close(pp_ping[1]);
    pthread_join(t, NULL);
    result("chan_pingpong", "ns_per_op", (double)(t1 - t0) / (2.0 * rounds), NULL);
}

/* -------------------------------------------------------------------- yield */

static _Atomic int y_stop;        /* relaxed: a polled flag */
static _Atomic int64_t y_total;   /* relaxed: read after join */
static int64_t y_deadline;

static void *y_thread(void *arg)
{
    int64_t n = 0;
    while (!atomic_load_explicit(&y_stop, memory_order_relaxed)) {
        for (int k = 0; k < 256; k++)
            sched_yield();
        n += 256;
        if (bench_now_ns() >= y_deadline)
            atomic_store_explicit(&y_stop, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&y_total, n, memory_order_relaxed);
    return NULL;
}

static void bench_yield(void)
{
    pthread_t t[2];
    int64_t t0 = bench_now_ns();
    y_deadline = t0 + args.ms * 1000000;
    for (int i = 0; i < 2; i++)
        start(&t[i], y_thread, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    int64_t t1 = bench_now_ns();
    result("yield", "ns_per_op", (double)(t1 - t0) / (double)y_total, NULL);
}

/* ------------------------------------------------------------- spawn+finish */

static _Atomic int64_t sf_count; /* relaxed: read after join */

static void *sf_thread(void *arg)
{
    atomic_fetch_add_explicit(&sf_count, 1, memory_order_relaxed);
    return NULL;
}

static void bench_spawn_finish(void)
{
    pthread_t t[64];
    int64_t t0 = bench_now_ns(), t1;
    int64_t deadline = t0 + args.ms * 1000000;
    int64_t n = 0;
    do {
        for (int i = 0; i < 64; i++)
            start(&t[i], sf_thread, NULL);
        for (int i = 0; i < 64; i++)
            pthread_join(t[i], NULL);
        n += 64;
        t1 = bench_now_ns();
    } while (t1 < deadline);
    if (atomic_load_explicit(&sf_count, memory_order_relaxed) != n) {
        fprintf(stderr, "bench_pthread: spawn_finish: count mismatch\n");
        exit(1);
    }
    result("spawn_finish", "ns_per_op", (double)(t1 - t0) / (double)n, NULL);
}

/* -------------------------------------------------------------------- mutex */

#define MU_THREADS 4
static pthread_mutex_t mu_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t mu_counter;      /* mu_lock */
static _Atomic int64_t mu_ops;  /* relaxed: read after join */
static int64_t mu_deadline;

static void *mu_thread(void *arg)
{
    int64_t n = 0;
    do {
        for (int k = 0; k < 256; k++) {
            pthread_mutex_lock(&mu_lock);
            mu_counter++;
            pthread_mutex_unlock(&mu_lock);
        }
        n += 256;
    } while (bench_now_ns() < mu_deadline);
    atomic_fetch_add_explicit(&mu_ops, n, memory_order_relaxed);
    return NULL;
}

static void bench_mutex(void)
{
    pthread_t t[MU_THREADS];
    int64_t t0 = bench_now_ns();
    mu_deadline = t0 + args.ms * 1000000;
    for (int i = 0; i < MU_THREADS; i++)
        start(&t[i], mu_thread, NULL);
    for (int i = 0; i < MU_THREADS; i++)
        pthread_join(t[i], NULL);
    int64_t t1 = bench_now_ns();
    if (mu_counter != mu_ops) {
        fprintf(stderr, "bench_pthread: mutex: lost update\n");
        exit(1);
    }
    result("mutex", "ns_per_op", (double)(t1 - t0) / (double)mu_ops, NULL);
}

/* ----------------------------------------------------------------- cpu_hash */

#define CPU_CHAINS 64
static long cpu_steps;
static uint64_t cpu_out[CPU_CHAINS];
static _Atomic int cpu_next; /* next chain to compute; relaxed: each index taken once */

static uint64_t cpu_chain(uint64_t x, long steps)
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

static void *cpu_thread(void *arg)
{
    int i;
    while ((i = atomic_fetch_add_explicit(&cpu_next, 1, memory_order_relaxed)) < CPU_CHAINS)
        cpu_out[i] = cpu_chain((uint64_t)i + 1, cpu_steps);
    return NULL;
}

static void bench_cpu_hash(void)
{
    cpu_steps = args.n > 0 ? args.n : 1 << 19;
    pthread_t t[64];
    int nt = args.procs < 64 ? args.procs : 64;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < nt; i++)
        start(&t[i], cpu_thread, NULL);
    for (int i = 0; i < nt; i++)
        pthread_join(t[i], NULL);
    int64_t t1 = bench_now_ns();
    uint64_t check = 0;
    for (int i = 0; i < CPU_CHAINS; i++)
        check ^= cpu_out[i];
    char extra[40];
    snprintf(extra, sizeof extra, "check=%016llx", (unsigned long long)check);
    result("cpu_hash", "ns_per_op", (double)(t1 - t0) / ((double)CPU_CHAINS * cpu_steps), extra);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } benches[] = {
        {"chan_pingpong", bench_pingpong}, {"yield", bench_yield},
        {"spawn_finish", bench_spawn_finish}, {"mutex", bench_mutex},
        {"cpu_hash", bench_cpu_hash},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: bench_pthread <name> [procs=N] [ms=N] [n=N]\n");
        return 2;
    }
    bench_args_parse(&args, argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) {
        if (!strcmp(argv[1], benches[i].name)) {
            pin_procs(args.procs);
            benches[i].fn();
            return 0;
        }
    }
    fprintf(stderr, "bench_pthread: unknown benchmark '%s'\n", argv[1]);
    return 2;
}
