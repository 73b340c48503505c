/* tests/gc/test_leak_periodic.c — periodic leak checks (gort_leakcheck_interval,
 * GORT_DEBUG=leakcheck_interval_ms): a cycle every interval prints the tasks it finds
 * leaked to stderr, each task once; nothing is printed while nothing leaks; a deadlock
 * is still reported by gort_run (the periodic timer must not keep it waiting).
 * stderr is redirected to a temporary file while a runtime runs, and read back. */
/* ctest-no-asan: the detector scans all writable memory conservatively (see
 * test_leak_shapes.c); under ASan a cycle takes seconds. */
/* ctest-timeout: 120 */
#include <stdlib.h>
#include <unistd.h>

#include "core/sched_impl.h"
#include "leak_testutil.h"

static int saved_fd = -1;
static FILE *capture;

static void stderr_capture(void)
{
    fflush(stderr);
    capture = tmpfile();
    ck_assert_ptr_nonnull(capture);
    saved_fd = dup(2);
    ck_assert_int_ge(saved_fd, 0);
    ck_assert_int_eq(dup2(fileno(capture), 2), 2);
}

/* Restores stderr and returns what was written meanwhile (malloc'd). */
static char *stderr_restore(void)
{
    fflush(stderr);
    ck_assert_int_eq(dup2(saved_fd, 2), 2);
    close(saved_fd);
    long n = ftell(capture);
    ck_assert_int_ge(n, 0);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    rewind(capture);
    size_t got = fread(buf, 1, (size_t)n, capture);
    buf[got] = 0;
    fclose(capture);
    fputs(buf, stderr); /* still visible in the test's log */
    return buf;
}

static int count_str(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void t_recv(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = *(gort_chan_t **)arg;
    note_rc(gort_chan_recv(c, NULL));
    atomic_fetch_add(&finished, 1);
}

static NOINLINE void leak_one(void)
{
    gort_chan_t *c = mkchan(0);
    ck_assert_int_eq(gort_go_with(t_recv, &c, sizeof c), 0);
    c = NULL;
    __asm__ volatile("" : : "r"(c) : "memory");
}

static void t_sleeper(void *arg)
{
    GORT_FRAME();
    gort_sleep(30000000);
    atomic_fetch_add(&finished, 1);
}

static uint64_t leaked_ids[2];

/* Two leaks planted 50 ms apart under 5 ms cycles: each is printed exactly once. */
static void periodic_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    ck_assert_int_eq(gort_leakcheck_interval(5), 0);
    leak_one();
    gort_sleep(60000000); /* about 12 cycles */
    leak_one();
    gort_sleep(60000000);
    ck_assert_int_eq(gort_leakcheck_interval(0), 0);
    gort_sleep(10000000); /* a cycle in flight ends */
    gort_leak_t out[4];
    memset(out, 0, sizeof out);
    ck_assert_int_eq(gort_leaks(out, 4), 2);
    leaked_ids[0] = out[0].id < out[1].id ? out[0].id : out[1].id;
    leaked_ids[1] = out[0].id < out[1].id ? out[1].id : out[0].id;
    memset(out, 0, sizeof out);
    cancel_and_reap(2, 2);
    free_hidden();
}

START_TEST(test_each_leak_reported_once)
{
    stderr_capture();
    test_run(periodic_main, NULL, 1 + _i, 0);
    char *log = stderr_restore();
    /* one report per planted leak, each naming one task */
    ck_assert_int_eq(count_str(log, "gort: leak check: 1 leaked task in 1 group"), 2);
    ck_assert_int_eq(count_str(log, "gort: leak check:"), 2);
    char id[32];
    snprintf(id, sizeof id, "ids: %lu\n", (unsigned long)leaked_ids[0]);
    ck_assert_int_eq(count_str(log, id), 1);
    snprintf(id, sizeof id, "ids: %lu\n", (unsigned long)leaked_ids[1]);
    ck_assert_int_eq(count_str(log, id), 1);
    ck_assert_int_eq(count_str(log, "chan receive"), 2);
    free(log);
}
END_TEST

/* Tasks that sleep, then finish, under 2 ms cycles: nothing printed. */
static void quiet_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    ck_assert_int_eq(gort_leakcheck_interval(2), 0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(gort_go(t_sleeper, NULL), 0);
    while (atomic_load(&finished) < 20)
        gort_sleep(1000000);
    ck_assert_int_eq(gort_leakcheck_interval(0), 0);
}

START_TEST(test_nothing_leaked_nothing_printed)
{
    stderr_capture();
    test_run(quiet_main, NULL, 1 + _i, 0);
    char *log = stderr_restore();
    ck_assert_int_eq(count_str(log, "gort: leak check:"), 0);
    free(log);
}
END_TEST

/* The main task blocks forever with periodic checks on: gort_run still ends with the
 * deadlock (the periodic timer pauses once nothing can change). */
static gort_mutex_t global_mu; /* a global: reachable, so not a leak, only a deadlock */

static void deadlock_main(void *arg)
{
    GORT_FRAME();
    memset(&global_mu, 0, sizeof global_mu);
    ck_assert_int_eq(gort_leakcheck_interval(1), 0);
    gort_sleep(5000000); /* a few cycles first */
    gort_mutex_lock(&global_mu);
    gort_mutex_lock(&global_mu);
}

START_TEST(test_deadlock_still_reported)
{
    stderr_capture();
    test_run(deadlock_main, NULL, 1 + _i, -EDEADLK);
    char *log = stderr_restore();
    ck_assert_int_eq(count_str(log, "all tasks are asleep - deadlock!"), 1);
    free(log);
}
END_TEST

/* The GORT_DEBUG knob: set for the whole run. */
static void knob_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    leak_one();
    gort_sleep(30000000);
    cancel_and_reap(1, 1);
    free_hidden();
}

START_TEST(test_debug_knob)
{
    /* appended: the _migrate twin keeps migrate=1 */
    char *saved = test_debug_push("leakcheck_interval_ms=3");
    stderr_capture();
    test_run(knob_main, NULL, 1 + _i, 0);
    char *log = stderr_restore();
    test_debug_restore(saved);
    ck_assert_int_eq(count_str(log, "gort: leak check: 1 leaked task in 1 group"), 1);
    free(log);
}
END_TEST

/* GORT_DEBUG=trackheap=1 asks for the tracked-heap mode. Without libgort_trackheap
 * (this binary does not link it) the request fails loudly: one line on stderr naming
 * how to link the layer, and every detector call answers -ENOTSUP instead of a
 * default-mode answer. */
static void trackheap_missing_main(void *arg)
{
    GORT_FRAME();
    ck_assert_int_eq(gort_trackheap_status(), -ENOTSUP);
    ck_assert_int_eq(gort_leaks(NULL, 0), -ENOTSUP);
    ck_assert_int_eq(gort_leakcheck(NULL), -ENOTSUP);
    ck_assert_int_eq(gort_leaks_cancel(), -ENOTSUP);
    ck_assert_int_eq(gort_leakcheck_interval(5), -ENOTSUP);
}

/* Without the knob the default mode answers (the heap is a root). */
static void trackheap_default_main(void *arg)
{
    GORT_FRAME();
    ck_assert_int_eq(gort_trackheap_status(), 0);
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
}

START_TEST(test_trackheap_without_layer)
{
    ck_assert_int_eq(gort_trackheap_status(), 0); /* outside a run: no layer linked */
    char *saved = test_debug_push("trackheap=1");
    stderr_capture();
    test_run(trackheap_missing_main, NULL, 1, 0);
    test_run(trackheap_missing_main, NULL, 2, 0);
    char *log = stderr_restore();
    test_debug_restore(saved);
    /* once per process, naming both ways to link the layer */
    ck_assert_int_eq(count_str(log, "gort: GORT_DEBUG=trackheap=1 needs libgort_trackheap"), 1);
    ck_assert_ptr_nonnull(strstr(log, "-lgort_trackheap -lgort"));
    ck_assert_ptr_nonnull(strstr(log, "LD_PRELOAD=libgort_trackheap.so"));
    free(log);
    test_run(trackheap_default_main, NULL, 1, 0);
}
END_TEST

START_TEST(test_outside_task)
{
    ck_assert_int_eq(gort_leakcheck_interval(5), -EPERM);
}
END_TEST

/* Periodic cycles shrink parked stacks too (no gort_leaks call here), and never take
 * a task below the size it started with: the main task, parked in gort_sleep while
 * the cycles run, keeps its 64 KiB (it used to be halved down to 2 KiB, and the
 * canary fired when it woke). */
static gort_chan_t *deep_ch;      /* a global: the deep task is not leaked */
static g_t *_Atomic deep_task;
static _Atomic int deep_ok;

static NOINLINE uint64_t deep_sum(uint64_t n)
{
    GORT_FRAME();
    volatile uint64_t pad[8] = {n};
    if (!n)
        return 0;
    uint64_t r = deep_sum(n - 1); /* the frame stays live across the call */
    return r + pad[0] + pad[7];
}

static void t_deep_parker(void *arg)
{
    GORT_FRAME();
    (void)arg;
    uint64_t got = deep_sum(3000); /* ~3000 frames of 100+ bytes: a 512 KiB stack */
    uint64_t tok[2] = {got, 77};
    atomic_store(&deep_task, g_self());
    uint64_t v = 0;
    int rc = gort_chan_recv(deep_ch, &v);
    atomic_store(&deep_ok, rc == 0 && v == 5 && tok[0] == 3000ull * 3001 / 2 && tok[1] == 77);
}

static void shrink_main(void *arg)
{
    GORT_FRAME();
    (void)arg;
    g_t *self = g_self();
    size_t main_size = self->stack_hi - self->stack_lo;
    deep_ch = gort_chan_make(sizeof(uint64_t), 0);
    atomic_store(&deep_task, NULL);
    atomic_store(&deep_ok, 0);
    ck_assert_int_eq(gort_go(t_deep_parker, NULL), 0);
    g_t *g;
    while (!(g = atomic_load(&deep_task)) ||
           atomic_load_explicit(&g->status, memory_order_relaxed) != G_WAITING)
        gort_yield();
    size_t before = g->stack_hi - g->stack_lo;
    ck_assert_uint_ge(before, 256 * 1024);
    gort_stats_t s0, s1;
    gort_stats(&s0);
    ck_assert_int_eq(gort_leakcheck_interval(1), 0);
    /* one halving per cycle: wait (bounded) until it is down to the default stack */
    for (int i = 0; i < 2000 && g->stack_hi - g->stack_lo > sched.stack_min; i++)
        gort_sleep(1000000);
    ck_assert_int_eq(gort_leakcheck_interval(0), 0);
    gort_stats(&s1);
    ck_assert_uint_eq(g->stack_hi - g->stack_lo, sched.stack_min);
    ck_assert_uint_ge(s1.stack_shrinks - s0.stack_shrinks,
                      (uint64_t)__builtin_ctzl(before / sched.stack_min));
    ck_assert_uint_eq(self->stack_hi - self->stack_lo, main_size); /* never below its 64 KiB */
    uint64_t v = 5;
    ck_assert_int_eq(gort_chan_send(deep_ch, &v), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    ck_assert_int_eq(atomic_load(&deep_ok), 1); /* the value and its locals survived */
    gort_chan_free(deep_ch);
}

START_TEST(test_periodic_cycles_shrink)
{
    stderr_capture();
    test_run(shrink_main, NULL, 1 + _i, 0);
    char *log = stderr_restore();
    ck_assert_int_eq(count_str(log, "gort: leak check:"), 0); /* nothing leaked */
    free(log);
}
END_TEST

/* GORT_DEBUG=leakcheck at exit runs in the main task's exit path, and its report waits
 * (gort_sleep) while another thread holds the stream's lock: the main task resumes on
 * another M there (migrate=1 makes it likely). The exit path must not keep using the M
 * it started on (it did: "switch: task is already running", or a dead M's P). */
static _Atomic int stream_held;

/* The leak: a task locking a mutex it holds, the mutex in its own args copy (> 256
 * bytes: runtime memory that teardown frees, so the run leaves no byte behind). */
static void t_mutex_twice(void *arg)
{
    GORT_FRAME();
    gort_mutex_t *mu = arg;
    gort_mutex_lock(mu);
    gort_mutex_lock(mu);
}

static void t_hold_stderr(void *arg)
{
    GORT_FRAME();
    (void)arg;
    gort_lock_thread(); /* a FILE lock belongs to the thread */
    flockfile(stderr);
    atomic_store(&stream_held, 1);
    gort_sleep(20000000);
    funlockfile(stderr);
    gort_unlock_thread();
}

static void exit_report_main(void *arg)
{
    GORT_FRAME();
    (void)arg;
    atomic_store(&stream_held, 0);
    char args[320] = {0};
    gort_go_opts_t o = {.args_size = sizeof args};
    ck_assert_int_eq(gort_go_opts(&o, t_mutex_twice, args), 0);
    ck_assert_found(leaks_settle(1), 1);
    ck_assert_int_eq(gort_go(t_hold_stderr, NULL), 0);
    while (!atomic_load(&stream_held))
        gort_yield();
    /* returns: the exit check finds the leak and waits for stderr */
}

START_TEST(test_exit_report_waits_for_stream)
{
    char *saved = test_debug_push("leakcheck=report,migrate=1");
    enum { RUNS = 8 };
    stderr_capture();
    for (int i = 0; i < RUNS; i++)
        test_run(exit_report_main, NULL, 2, 0);
    char *log = stderr_restore();
    test_debug_restore(saved);
    /* every run reported (a run that aborted fails the test before this) */
    ck_assert_found(count_str(log, "gort: leak check: 1 leaked task in 1 group"), RUNS);
    free(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_leak_periodic");
    TCase *tc = tcase_create("periodic");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_each_leak_reported_once, 0, 2);
    tcase_add_loop_test(tc, test_nothing_leaked_nothing_printed, 0, 2);
    tcase_add_loop_test(tc, test_deadlock_still_reported, 0, 2);
    tcase_add_loop_test(tc, test_debug_knob, 0, 2);
    tcase_add_test(tc, test_outside_task);
    tcase_add_loop_test(tc, test_periodic_cycles_shrink, 0, 2);
    tcase_add_test(tc, test_trackheap_without_layer);
    tcase_add_test(tc, test_exit_report_waits_for_stream);
    suite_add_tcase(s, tc);
    return test_main(s);
}
