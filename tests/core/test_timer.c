/* tests/core/test_timer.c — the per-P timer heaps (timer_start/timer_stop), gort_sleep
 * and gort_after. No upper bounds on times (shared, noisy machine); lower bounds (did
 * not wake early) are asserted.
 */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MS 1000000LL
#define US 1000LL

/* Results that worker tasks and timer callbacks record for the main task to check. */
static _Atomic int order_n;
static int order[64];
static _Atomic int failures;

static void note_failure(void) { atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed); }

/* Plain values for ck_assert, so a failure prints numbers, not the atomic builtins. */
static int ld(_Atomic int *p) { return atomic_load(p); }
static unsigned ldu(_Atomic uint32_t *p) { return atomic_load(p); }

/* ------------------------------------------------------------ sleep order */

typedef struct sleeper {
    int id;
    int64_t ns;
    int64_t deadline; /* t0 + ns, written by the task before it sleeps */
    gort_chan_t *done;
} sleeper_t;

static void sleeper_task(void *arg)
{
    GORT_FRAME();
    sleeper_t *s = arg;
    int64_t t0 = gort_now();
    s->deadline = t0 + s->ns;
    gort_sleep(s->ns);
    if (gort_now() - t0 < s->ns)
        note_failure(); /* woke early */
    int i = atomic_fetch_add_explicit(&order_n, 1, memory_order_relaxed);
    order[i] = s->id;
    int one = 1;
    gort_chan_send(s->done, &one);
}

/* 10 tasks, spawned in a shuffled order, sleep 3 ms apart: on one P they wake (and
 * record themselves) in order of their absolute deadlines (start + ns: the starts are
 * not simultaneous, and under TSan they can be milliseconds apart); on two, none wakes
 * early. */
static void sleep_order_main(void *arg)
{
    int procs = (int)(intptr_t)arg;
    uint64_t rng = test_seed("sleep_order", 7);
    enum { N = 10 };
    static sleeper_t s[N];
    int perm[N];
    for (int i = 0; i < N; i++)
        perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(test_rand(&rng) % (uint64_t)(i + 1));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    atomic_store(&order_n, 0);
    atomic_store(&failures, 0);
    gort_chan_t *done = gort_chan_make(sizeof(int), N);
    ck_assert_ptr_nonnull(done);
    for (int k = 0; k < N; k++) {
        int i = perm[k];
        s[i] = (sleeper_t){.id = i, .ns = (i + 1) * 3 * MS, .done = done};
        ck_assert_int_eq(gort_go(sleeper_task, &s[i]), 0);
    }
    for (int k = 0; k < N; k++)
        ck_assert_int_eq(gort_chan_recv(done, NULL), 0);
    ck_assert_int_eq(ld(&order_n), N);
    ck_assert_int_eq(ld(&failures), 0);
    if (procs == 1)
        for (int k = 0; k + 1 < N; k++)
            ck_assert_int_le(s[order[k]].deadline, s[order[k + 1]].deadline);
    ck_assert_int_eq(gort_chan_free(done), 0);
}

START_TEST(sleep_order_1p) { test_run(sleep_order_main, (void *)(intptr_t)1, 1, 0); }
END_TEST

START_TEST(sleep_order_2p) { test_run(sleep_order_main, (void *)(intptr_t)2, 2, 0); }
END_TEST

/* ---------------------------------------------------------- sleep(0) yields */

static _Atomic int flag;

static void set_flag_task(void *arg)
{
    GORT_FRAME();
    atomic_store_explicit(&flag, 1, memory_order_relaxed);
}

/* One P: the spawned task waits in the run queue; sleep(0) and sleep(<0) must let it
 * run before the caller returns. */
static void sleep_zero_main(void *arg)
{
    int64_t ns = (int64_t)(intptr_t)arg;
    atomic_store(&flag, 0);
    ck_assert_int_eq(gort_go(set_flag_task, NULL), 0);
    ck_assert_int_eq(ld(&flag), 0);
    gort_sleep(ns);
    ck_assert_int_eq(ld(&flag), 1);
}

/* Preemption off: a preempted main (gort_go is a cooperative preemption point) would
 * let the task run before the first check. */
static const gort_config_t one_p_no_preempt = {.procs = 1, .preempt = GORT_PREEMPT_OFF};

START_TEST(sleep_zero_yields)
{
    test_run_cfg(sleep_zero_main, (void *)(intptr_t)0, &one_p_no_preempt, 0);
}
END_TEST

START_TEST(sleep_negative_yields)
{
    test_run_cfg(sleep_zero_main, (void *)(intptr_t)-5, &one_p_no_preempt, 0);
}
END_TEST

/* --------------------------------------------------------- many sleepers */

enum { MANY = 2000 };
static sleeper_t many[MANY];

/* As sleeper_task, without recording the order. */
static void sleeper_count_task(void *arg)
{
    GORT_FRAME();
    sleeper_t *s = arg;
    int64_t t0 = gort_now();
    gort_sleep(s->ns);
    if (gort_now() - t0 < s->ns)
        note_failure();
    int one = 1;
    gort_chan_send(s->done, &one);
}

static void many_sleepers_main(void *arg)
{
    uint64_t rng = test_seed("many_sleepers", 11);
    atomic_store(&failures, 0);
    for (int round = 0; round < 3; round++) {
        gort_chan_t *done = gort_chan_make(sizeof(int), MANY);
        ck_assert_ptr_nonnull(done);
        for (int i = 0; i < MANY; i++) {
            int64_t ns = (int64_t)(test_rand(&rng) % (2 * MS)) - 100 * US;
            many[i] = (sleeper_t){.id = 0, .ns = ns, .done = done};
            ck_assert_int_eq(gort_go(sleeper_count_task, &many[i]), 0);
            if (test_rand(&rng) % 64 == 0)
                gort_yield();
        }
        for (int i = 0; i < MANY; i++)
            ck_assert_int_eq(gort_chan_recv(done, NULL), 0);
        ck_assert_int_eq(gort_chan_len(done), 0);
        ck_assert_int_eq(gort_chan_free(done), 0);
    }
    ck_assert_int_eq(ld(&failures), 0);
}

START_TEST(many_sleepers_1p) { test_run(many_sleepers_main, NULL, 1, 0); }
END_TEST

START_TEST(many_sleepers_2p) { test_run(many_sleepers_main, NULL, 2, 0); }
END_TEST

/* ---------------------------------------------------- timer_start/timer_stop */

typedef struct ttimer {
    rtimer_t t;
    _Atomic int fired;
    int64_t fired_at;
} ttimer_t;

static void count_fire(rtimer_t *t, int64_t now)
{
    ttimer_t *x = t->arg;
    x->fired_at = now;
    atomic_fetch_add_explicit(&x->fired, 1, memory_order_relaxed);
}

static void stop_basic_main(void *arg)
{
    ttimer_t *x = calloc(1, sizeof *x);
    ck_assert_ptr_nonnull(x);

    /* stop before it fires: removed, never fires */
    x->t = (rtimer_t){.when = gort_now() + 10000 * MS, .fn = count_fire, .arg = x};
    timer_start(&x->t);
    ck_assert_uint_eq(ldu(&x->t.state), TIMER_QUEUED);
    ck_assert(timer_stop(&x->t));
    ck_assert_uint_eq(ldu(&x->t.state), TIMER_IDLE);
    ck_assert(!timer_stop(&x->t)); /* not queued any more */
    ck_assert_int_eq(ld(&x->fired), 0);

    /* stop after it fired: false, fired exactly once, not before its deadline */
    int64_t when = gort_now() + 2 * MS;
    x->t = (rtimer_t){.when = when, .fn = count_fire, .arg = x};
    timer_start(&x->t);
    while (atomic_load(&x->fired) == 0)
        gort_sleep(1 * MS);
    ck_assert(!timer_stop(&x->t));
    ck_assert_int_eq(ld(&x->fired), 1);
    ck_assert_int_ge(x->fired_at, when);
    ck_assert_uint_eq(ldu(&x->t.state), TIMER_IDLE);

    /* restart after it fired */
    atomic_store(&x->fired, 0);
    x->t.when = gort_now();
    timer_start(&x->t);
    while (atomic_load(&x->fired) == 0)
        gort_yield();
    ck_assert(!timer_stop(&x->t));
    ck_assert_int_eq(ld(&x->fired), 1);
    free(x);
}

START_TEST(timer_stop_before_after) { test_run(stop_basic_main, NULL, 1, 0); }
END_TEST

/* A callback that runs for a while: timer_stop, called meanwhile, must return false
 * only after the callback has returned. */
static _Atomic int slow_running;
static _Atomic int slow_done;

static void slow_fire(rtimer_t *t, int64_t now)
{
    atomic_store(&slow_running, 1);
    struct timespec ts = {0, 3 * MS};
    nanosleep(&ts, NULL);
    atomic_store(&slow_done, 1);
}

static void stop_running_main(void *arg)
{
    rtimer_t *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    for (int i = 0; i < 3; i++) {
        atomic_store(&slow_running, 0);
        atomic_store(&slow_done, 0);
        *t = (rtimer_t){.when = gort_now(), .fn = slow_fire};
        timer_start(t);
        while (!atomic_load(&slow_running))
            gort_yield();
        ck_assert(!timer_stop(t));
        ck_assert_int_eq(ld(&slow_done), 1);
    }
    free(t);
}

START_TEST(timer_stop_waits_for_running) { test_run(stop_running_main, NULL, 2, 0); }
END_TEST

/* Many timers with random deadlines on one P, a random third stopped before they fire:
 * the rest fire in order of deadline (up to overlapping runners), each once, none
 * early; the stopped never. */
enum { HEAP_N = 3000 };
static ttimer_t heap_t[HEAP_N];
static int64_t fire_seq[HEAP_N];
static _Atomic int fire_n;

static void seq_fire(rtimer_t *t, int64_t now)
{
    ttimer_t *x = t->arg;
    x->fired_at = now;
    atomic_fetch_add_explicit(&x->fired, 1, memory_order_relaxed);
    int i = atomic_fetch_add_explicit(&fire_n, 1, memory_order_relaxed);
    if (i < HEAP_N)
        fire_seq[i] = t->when;
}

static void heap_order_main(void *arg)
{
    uint64_t rng = test_seed("heap_order", 3);
    for (int round = 0; round < 3; round++) {
        atomic_store(&fire_n, 0);
        int64_t base = gort_now() + 5 * MS;
        for (int i = 0; i < HEAP_N; i++) {
            ttimer_t *x = &heap_t[i];
            atomic_store(&x->fired, 0);
            x->t = (rtimer_t){.when = base + (int64_t)(test_rand(&rng) % (5 * MS)),
                              .fn = seq_fire, .arg = x};
            timer_start(&x->t);
        }
        int stopped = 0;
        bool was_stopped[HEAP_N];
        for (int i = 0; i < HEAP_N; i++) {
            was_stopped[i] = false;
            if (test_rand(&rng) % 3 == 0) {
                was_stopped[i] = timer_stop(&heap_t[i].t);
                stopped += was_stopped[i];
            }
        }
        int want = HEAP_N - stopped;
        while (atomic_load(&fire_n) < want)
            gort_sleep(1 * MS);
        gort_sleep(1 * MS);
        ck_assert_int_eq(ld(&fire_n), want);
        /* Callbacks run with the heap unlocked and several Ms may run one heap (a
         * runner popped T1, was descheduled, another popped and ran T2), so callback
         * order is the pop order only up to such overlaps: rare, and bounded by the
         * runners. A heap that pops out of order inverts far more. */
        int inversions = 0;
        for (int k = 1; k < want; k++)
            inversions += fire_seq[k - 1] > fire_seq[k];
        ck_assert_msg(inversions <= want / 100, "%d of %d timers fired out of order",
                      inversions, want);
        for (int i = 0; i < HEAP_N; i++) {
            ttimer_t *x = &heap_t[i];
            ck_assert_int_eq(ld(&x->fired), was_stopped[i] ? 0 : 1);
            if (!was_stopped[i])
                ck_assert_int_ge(x->fired_at, x->t.when);
            ck_assert(!timer_stop(&x->t));
        }
    }
}

START_TEST(timer_heap_order) { test_run(heap_order_main, NULL, 1, 0); }
END_TEST

/* Tasks on two Ps start and stop timers with deadlines around now: timer_stop == true
 * iff the callback never ran, and after a false it has run exactly once. */
enum { RACE_TASKS = 8, RACE_ITERS = 2000 };

typedef struct race_arg {
    uint64_t seed;
    gort_chan_t *done;
} race_arg_t;

static void race_task(void *arg)
{
    GORT_FRAME();
    race_arg_t *a = arg;
    uint64_t rng = a->seed;
    ttimer_t *x = rt_alloc(sizeof *x); /* heap: other Ms' callbacks touch it */
    for (int i = 0; i < RACE_ITERS; i++) {
        atomic_store_explicit(&x->fired, 0, memory_order_relaxed);
        x->t = (rtimer_t){.when = gort_now() + (int64_t)(test_rand(&rng) % (50 * US)) -
                                  10 * US,
                          .fn = count_fire, .arg = x};
        timer_start(&x->t);
        uint64_t r = test_rand(&rng) % 4;
        if (r == 0)
            gort_yield();
        else if (r == 1)
            for (volatile int k = 0; k < 2000; k++) {
            }
        bool stopped = timer_stop(&x->t);
        if (atomic_load_explicit(&x->fired, memory_order_relaxed) != (stopped ? 0 : 1))
            note_failure();
        if (stopped && test_rand(&rng) % 2) {
            gort_sleep(60 * US); /* past the deadline: must still never fire */
            if (atomic_load_explicit(&x->fired, memory_order_relaxed) != 0)
                note_failure();
        }
    }
    rt_free(x);
    int one = 1;
    gort_chan_send(a->done, &one);
}

static void start_stop_race_main(void *arg)
{
    uint64_t seed = test_seed("start_stop_race", 5);
    atomic_store(&failures, 0);
    gort_chan_t *done = gort_chan_make(sizeof(int), RACE_TASKS);
    static race_arg_t args[RACE_TASKS];
    for (int i = 0; i < RACE_TASKS; i++) {
        args[i] = (race_arg_t){.seed = seed + (uint64_t)i * 7919, .done = done};
        ck_assert_int_eq(gort_go(race_task, &args[i]), 0);
    }
    for (int i = 0; i < RACE_TASKS; i++)
        ck_assert_int_eq(gort_chan_recv(done, NULL), 0);
    ck_assert_int_eq(gort_chan_free(done), 0);
    ck_assert_int_eq(ld(&failures), 0);
}

START_TEST(timer_start_stop_race_1p) { test_run(start_stop_race_main, NULL, 1, 0); }
END_TEST

START_TEST(timer_start_stop_race_2p) { test_run(start_stop_race_main, NULL, 2, 0); }
END_TEST

/* ------------------------------------------------------------- gort_after */

static void after_basic_main(void *arg)
{
    for (int64_t ns = -1; ns <= 4 * MS; ns += 2 * MS) { /* -1 (immediate), 2 ms, 4 ms */
        int64_t start = gort_now();
        gort_chan_t *c = gort_after(ns);
        ck_assert_ptr_nonnull(c);
        ck_assert_uint_eq(gort_chan_cap(c), 1);
        int64_t v = 0;
        ck_assert_int_eq(gort_chan_recv(c, &v), 0);
        ck_assert_int_ge(v, start + (ns > 0 ? ns : 0));
        ck_assert_int_ge(gort_now(), v);
        ck_assert_int_eq(gort_chan_try_recv(c, &v), -EAGAIN); /* one value only */
        ck_assert_int_eq(gort_chan_free(c), 0);
    }
}

START_TEST(after_delivers_once) { test_run(after_basic_main, NULL, 0, 0); }
END_TEST

/* gort_after as a select timeout: whichever case wins first (the timer may already
 * have fired on a slow machine), the other one proceeds next; each exactly once; the
 * timer's value arrives even when the data case won, and then the channel is freed
 * (test_run checks nothing leaked). */
static void after_select_main(void *arg)
{
    gort_chan_t *data = gort_chan_make(sizeof(int), 1);
    gort_chan_t *tmo = gort_after(3 * MS);
    int x = 42;
    ck_assert_int_eq(gort_chan_send(data, &x), 0);
    int got = 0;
    int64_t v = 0;
    int hits[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        gort_case_t cases[2] = {{.chan = hits[0] ? NULL : data, .op = GORT_RECV, .elem = &got},
                                {.chan = hits[1] ? NULL : tmo, .op = GORT_RECV, .elem = &v}};
        int r = gort_select(cases, 2, -1);
        ck_assert(r == 0 || r == 1);
        ck_assert_int_eq(cases[r].result, 0);
        hits[r]++;
    }
    ck_assert_int_eq(hits[0], 1);
    ck_assert_int_eq(hits[1], 1);
    ck_assert_int_eq(got, 42);
    ck_assert_int_gt(v, 0);
    ck_assert_int_eq(gort_chan_try_recv(tmo, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(tmo), 0);
    ck_assert_int_eq(gort_chan_free(data), 0);
}

START_TEST(after_in_select) { test_run(after_select_main, NULL, 0, 0); }
END_TEST

/* Many tasks each wait on their own gort_after and free it. */
static void after_task(void *arg)
{
    GORT_FRAME();
    race_arg_t *a = arg;
    uint64_t rng = a->seed;
    for (int i = 0; i < 20; i++) {
        int64_t ns = (int64_t)(test_rand(&rng) % (500 * US));
        int64_t start = gort_now();
        gort_chan_t *c = gort_after(ns);
        int64_t v = 0;
        if (!c || gort_chan_recv(c, &v) != 0 || v < start + ns)
            note_failure();
        if (gort_chan_free(c) != 0)
            note_failure();
    }
    int one = 1;
    gort_chan_send(a->done, &one);
}

static void after_many_main(void *arg)
{
    enum { T = 200 };
    uint64_t seed = test_seed("after_many", 13);
    atomic_store(&failures, 0);
    static race_arg_t args[T];
    gort_chan_t *done = gort_chan_make(sizeof(int), T);
    for (int i = 0; i < T; i++) {
        args[i] = (race_arg_t){.seed = seed + (uint64_t)i, .done = done};
        ck_assert_int_eq(gort_go(after_task, &args[i]), 0);
    }
    for (int i = 0; i < T; i++)
        ck_assert_int_eq(gort_chan_recv(done, NULL), 0);
    ck_assert_int_eq(gort_chan_free(done), 0);
    ck_assert_int_eq(ld(&failures), 0);
}

START_TEST(after_many_2p) { test_run(after_many_main, NULL, 2, 0); }
END_TEST

/* The runtime ends while a gort_after timer is still queued: its block is freed by the
 * teardown; the channel is the program's, freed here inside the run. */
static gort_chan_t *pending_after;

static void after_pending_main(void *arg)
{
    pending_after = gort_after(10000 * MS);
    ck_assert_ptr_nonnull(pending_after);
    ck_assert_int_eq(gort_chan_try_recv(pending_after, NULL), -EAGAIN);
}

START_TEST(after_dropped_at_exit)
{
    /* test_run asserts rt_mem_live() == 0 afterwards, so free the channel inside */
    gort_config_t cfg = {.procs = 1};
    pending_after = NULL;
    ck_assert_int_eq(gort_run(after_pending_main, NULL, &cfg), 0);
    ck_assert_ptr_nonnull(pending_after);
    ck_assert_int_eq(gort_chan_free(pending_after), 0);
    ck_assert_uint_eq(rt_mem_live(), 0);
}
END_TEST

/* The main task returns while other tasks sleep and a timer is queued: gort_run
 * discards them, and the teardown gives everything back (test_run checks). */
static void long_sleeper(void *arg)
{
    GORT_FRAME();
    gort_sleep(10000 * MS);
    note_failure(); /* never reached: the runtime ends first */
}

static void exit_while_sleeping_main(void *arg)
{
    atomic_store(&failures, 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(gort_go(long_sleeper, NULL), 0);
    gort_sleep(1 * MS); /* let them park */
    ck_assert_int_eq(ld(&failures), 0);
}

START_TEST(exit_while_tasks_sleep)
{
    test_run(exit_while_sleeping_main, NULL, 2, 0);
    ck_assert_int_eq(ld(&failures), 0);
}
END_TEST

/* ------------------------------------------------------ outside a runtime */

START_TEST(sleep_outside_runtime)
{
    int64_t t0 = gort_now();
    gort_sleep(2 * MS);
    ck_assert_int_ge(gort_now() - t0, 2 * MS);
    gort_sleep(0);
}
END_TEST

/* No runtime, no timers: NULL (needs sched_any_p() == NULL when no runtime runs). */
START_TEST(after_outside_runtime)
{
    ck_assert_ptr_null(gort_after(1 * MS));
    ck_assert_ptr_null(gort_ctx_with_timeout(NULL, 1 * MS));
}
END_TEST

static Suite *timer_suite(void)
{
    Suite *s = suite_create("timer");
    TCase *tc = tcase_create("timer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sleep_order_1p);
    tcase_add_test(tc, sleep_order_2p);
    tcase_add_test(tc, sleep_zero_yields);
    tcase_add_test(tc, sleep_negative_yields);
    tcase_add_test(tc, many_sleepers_1p);
    tcase_add_test(tc, many_sleepers_2p);
    tcase_add_test(tc, timer_stop_before_after);
    tcase_add_test(tc, timer_stop_waits_for_running);
    tcase_add_test(tc, timer_heap_order);
    tcase_add_test(tc, timer_start_stop_race_1p);
    tcase_add_test(tc, timer_start_stop_race_2p);
    tcase_add_test(tc, after_delivers_once);
    tcase_add_test(tc, after_in_select);
    tcase_add_test(tc, after_many_2p);
    tcase_add_test(tc, after_dropped_at_exit);
    tcase_add_test(tc, exit_while_tasks_sleep);
    tcase_add_test(tc, sleep_outside_runtime);
    tcase_add_test(tc, after_outside_runtime);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(timer_suite()); }
