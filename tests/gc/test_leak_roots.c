/* tests/gc/test_leak_roots.c — what the detector must never report, and what it must
 * report while the program runs:
 *  - a task blocked on a channel kept in a global, in the program's heap, in a
 *    runtime object that is reachable (a channel buffer), or behind a context;
 *  - a chain of 1,000 tasks, each waiting on the next, the last one sleeping;
 *  - the detector running while other tasks run, spawn and allocate on 2 Ps: every
 *    cycle reports exactly the leaks planted, never a live task (randomised, seeded);
 *  - GORT_DEBUG=leakcheck=exit makes gort_run fail when tasks leaked, =report does not;
 *  - SIGQUIT prints the grouped task dump and exits with status 2.
 */
/* ctest-no-asan: the detector scans all writable memory conservatively; in an ASan
 * process that includes the sanitizer's quarantine and allocator metadata, so a cycle
 * takes seconds and planted leaks are missed (suites time out). The normal build runs
 * this suite; under ASan the detector still runs at every other suite's teardown. */
/* ctest-trackheap-twin */
/* ctest-timeout: 120 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/sched_impl.h"
#include "gc/gc.h"
#include "leak_testutil.h"

/* ------------------------------------------------ reachable from the program */

static gort_chan_t *global_chan;
static gort_chan_t **heap_slot; /* a malloc'd cell holding a channel */
static gort_chan_t *outer;      /* a channel whose buffer holds another channel */

static NOINLINE void spawn_reachable(void)
{
    global_chan = gort_chan_make(sizeof(int), 0);
    ck_assert_int_eq(gort_go(t_recv_chan, global_chan), 0);
    heap_slot = malloc(sizeof *heap_slot);
    *heap_slot = gort_chan_make(sizeof(int), 0);
    ck_assert_int_eq(gort_go(t_recv_chan, *heap_slot), 0);
    outer = gort_chan_make(sizeof(gort_chan_t *), 1);
    gort_chan_t *inner = gort_chan_make(sizeof(int), 0);
    ck_assert_int_eq(gort_chan_send(outer, &inner), 0);
    ck_assert_int_eq(gort_go(t_recv_chan, inner), 0);
}

static NOINLINE void drop_global(void)
{
    hide(global_chan);
    global_chan = NULL;
}

static NOINLINE void drop_heap(void)
{
    hide(*heap_slot);
    *(gort_chan_t *volatile *)heap_slot = NULL; /* free alone would leave the pointer in
                          the freed block (the heap is scanned conservatively, freed parts
                          too); volatile: the compiler drops a store before free */
    free(heap_slot);
    heap_slot = NULL;
}

static NOINLINE void drop_inner(void)
{
    gort_chan_t *inner = NULL;
    ck_assert_int_eq(gort_chan_recv(outer, &inner), 0);
    hide(inner);
    ck_assert_int_eq(gort_chan_free(outer), 0);
    outer = NULL;
}

static void reachable_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    spawn_reachable();
    ck_assert_int_eq(leaks_after_settling(), 0);
    ck_assert_int_eq(gort_leakcheck(stderr), 0);
    /* now drop them one by one (in helpers, whose frames die): each becomes a leak */
    drop_global();
    ck_assert_found(leaks_settle(1), 1);
    drop_heap();
    ck_assert_found(leaks_settle(2), 2);
    drop_inner();
    int n = leaks_settle(3);
    ck_assert_found(n, 3);
    if (n == 3) {
        cancel_and_reap(3, 3);
        ck_assert_found(atomic_load(&cancelled), 3);
    } else { /* missed (unoptimised build): wake them by closing */
        close_hidden();
        gort_sleep(5000000);
    }
    free_hidden();
    ck_assert_int_eq(gort_leakcheck(stderr), 0);
}

START_TEST(test_reachable_never_reported)
{
    test_run(reachable_main, NULL, 1 + _i, 0);
}
END_TEST

/* ------------------------------------------------ a chain of 1,000 waiting tasks */

enum { CHAIN = 1000 };
typedef struct link {
    gort_chan_t *in, *out;  /* receive from in, then send on out (out NULL: the end) */
    int sleep_first;
} link_t;

static void t_link(void *arg)
{
    GORT_FRAME();
    link_t *l = arg;
    int v = 1;
    if (l->sleep_first) { /* the last one: sleeps, then starts the wave */
        gort_sleep(200000000);
        note_rc(gort_chan_send(l->out, &v));
    } else {
        int rc = gort_chan_recv(l->in, &v);
        note_rc(rc);
        if (rc == 0)
            gort_chan_free(l->in); /* its only sender has finished sending */
        if (rc == 0 && l->out)
            note_rc(gort_chan_send(l->out, &v));
    }
    atomic_fetch_add(&finished, 1);
}

static gort_chan_t *chain_end; /* where the wave arrives: the test receives it */

/* Task i waits on chan[i], fed by task i+1; the last task sleeps, then feeds chan[N-2]. */
static NOINLINE void spawn_chain(void)
{
    chain_end = gort_chan_make(sizeof(int), 0);
    gort_chan_t *prev = NULL;
    for (int i = 0; i < CHAIN; i++) {
        link_t l = {0};
        if (i == CHAIN - 1) {
            l.sleep_first = 1;
            l.out = prev;
        } else {
            gort_chan_t *in = gort_chan_make(sizeof(int), 0);
            l.in = in;
            l.out = i == 0 ? chain_end : prev;
            prev = in;
        }
        ck_assert_int_eq(gort_go_with(t_link, &l, sizeof l), 0);
    }
}

static void chain_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    spawn_chain();
    gort_sleep(20000000); /* all 999 blocked, the last one sleeping */
    gort_leak_t out[4];
    int n = gort_leaks(out, 4);
    if (n)
        gort_leakcheck(stderr);
    ck_assert_int_eq(n, 0);
    int v = 0;
    ck_assert_int_eq(gort_chan_recv(chain_end, &v), 0); /* the wave went through */
    ck_assert_int_eq(v, 1);
    for (int i = 0; i < 2000 && atomic_load(&finished) < CHAIN; i++)
        gort_sleep(1000000);
    ck_assert_int_eq(atomic_load(&finished), CHAIN);
    ck_assert_int_eq(gort_leakcheck(stderr), 0);
    ck_assert_int_eq(gort_chan_free(chain_end), 0);
}

START_TEST(test_chain_of_1000)
{
    test_run(chain_main, NULL, 1 + _i, 0);
}
END_TEST

/* ------------------------------------------------ detector while tasks run */

enum { BUSY_WORKERS = 6, PLANTED = 3 };
static _Atomic int busy_stop;

/* A pair ping-pongs over a channel it owns, spawning and freeing short-lived tasks and
 * channels, with random yields: everything reachable from running tasks. */
static void t_child(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = arg;
    int v = 3;
    gort_chan_send(c, &v);
}

static void t_busy(void *arg)
{
    GORT_FRAME();
    uint64_t rng = *(uint64_t *)arg;
    while (!atomic_load(&busy_stop)) {
        gort_chan_t *c = gort_chan_make(sizeof(int), test_rand(&rng) % 2);
        gort_go(t_child, c);
        if (test_rand(&rng) % 3 == 0)
            gort_yield();
        int v = 0;
        gort_chan_recv(c, &v);
        void *junk = malloc(64 + test_rand(&rng) % 256);
        if (test_rand(&rng) % 4 == 0)
            gort_sleep(10000);
        free(junk);
        gort_chan_free(c);
    }
    atomic_fetch_add(&finished, 1);
}

static NOINLINE void plant_leaks(void)
{
    for (int i = 0; i < PLANTED; i++)
        ck_assert_int_eq(gort_go(t_recv_chan, mkchan(0)), 0);
}

static void busy_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    atomic_store(&busy_stop, 0);
    uint64_t seed = test_seed("detector_while_running", 0x1eaf);
    /* planted first: a spawn/receive ping-pong keeps its P's local run queue from being
     * served for a long time (runnext), and a runnable task is never a leak */
    plant_leaks();
    ck_assert_int_eq(leaks_settle(PLANTED), PLANTED);
    for (int i = 0; i < BUSY_WORKERS; i++) {
        uint64_t s = seed + (uint64_t)i * 0x9e3779b97f4a7c15ull;
        /* malloc is deep (jemalloc's slow paths): a big stack, not the 2 KiB default */
        gort_go_opts_t o = {.stack_min = TEST_STACK, .args_size = sizeof s};
        ck_assert_int_eq(gort_go_opts(&o, t_busy, &s), 0);
    }
    int ok = 0, eagain = 0;
    for (int round = 0; round < 200; round++) {
        int n = gort_leaks(NULL, 0);
        if (n == -EAGAIN) {
            eagain++;
            continue;
        }
        if (n != PLANTED)
            gort_leakcheck(stderr);
        ck_assert_found(n, PLANTED); /* exact where LEAK_FOUND_STRICT: leak_testutil.h */
        ok++;
    }
    ck_assert_int_gt(ok, 150);
    atomic_store(&busy_stop, 1);
    for (int i = 0; i < 5000 && atomic_load(&finished) < BUSY_WORKERS; i++)
        gort_sleep(1000000);
    ck_assert_int_eq(atomic_load(&finished), BUSY_WORKERS);
    cancel_and_reap(PLANTED, PLANTED);
    free_hidden();
    ck_assert_int_eq(gort_leakcheck(stderr), 0);
}

START_TEST(test_detector_while_running)
{
    test_run(busy_main, NULL, 2, 0);
}
END_TEST

/* ------------------------------------------------ a stale saved vector state is no root */

/* A preempted task's vector registers are saved in g->xsave and stay there after it
 * resumes. Those stale words must not keep a leaked task alive: the detector reads the
 * area only while the task is stopped by a signal (at a check, a call boundary, no
 * vector register is live). Here the main task leaves a planted channel's address in
 * every xmm register, is preempted at a check, and resumes; the leak must be found. */
static NOINLINE void preempted_at_check(void)
{
    GORT_FRAME(); /* g->preempt is set: this check yields, saving the vector state */
}

static NOINLINE void xmm_fill_and_yield(uintptr_t v)
{
    /* what the scheduler does to ask for a yield (gc/stw.c, preempt/sysmon.c) */
    g_self()->preempt = true;
    __atomic_store_n(m_self()->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
    __asm__ volatile("movq %0, %%xmm0\n\tpunpcklqdq %%xmm0, %%xmm0\n\t"
                     "movdqa %%xmm0, %%xmm1\n\tmovdqa %%xmm0, %%xmm2\n\t"
                     "movdqa %%xmm0, %%xmm3\n\tmovdqa %%xmm0, %%xmm4\n\t"
                     "movdqa %%xmm0, %%xmm5\n\tmovdqa %%xmm0, %%xmm6\n\t"
                     "movdqa %%xmm0, %%xmm7\n\tmovdqa %%xmm0, %%xmm8\n\t"
                     "movdqa %%xmm0, %%xmm9\n\tmovdqa %%xmm0, %%xmm10\n\t"
                     "movdqa %%xmm0, %%xmm11\n\tmovdqa %%xmm0, %%xmm12\n\t"
                     "movdqa %%xmm0, %%xmm13\n\tmovdqa %%xmm0, %%xmm14\n\t"
                     "movdqa %%xmm0, %%xmm15"
                     :
                     : "r"(v)
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
    preempted_at_check();
}

static NOINLINE void plant_in_xmm(void)
{
    gort_chan_t *c = mkchan(0);
    ck_assert_int_eq(gort_go(t_recv_chan, c), 0);
    uint64_t coop0 = m_self()->p->n_preempt_coop;
    xmm_fill_and_yield((uintptr_t)c);
    /* it did stop there (possibly counted on another P after a migration: then the
     * task's xsave being set is the witness) */
    ck_assert(m_self()->p->n_preempt_coop != coop0 || g_self()->xsave != NULL);
    ck_assert_ptr_nonnull(g_self()->xsave);
}

static void xsave_main(void *arg)
{
    GORT_FRAME();
    (void)arg;
    counters_reset();
    plant_in_xmm();
    int n = leaks_settle(1);
    ck_assert_found(n, 1);
    if (n == 1)
        cancel_and_reap(1, 1);
    else
        close_hidden_and_reap(1);
    free_hidden();
}

START_TEST(test_stale_xsave_not_a_root)
{
    test_run(xsave_main, NULL, 1, 0);
}
END_TEST

/* ------------------------------------------------ GORT_DEBUG=leakcheck at exit */

static void t_mutex_twice(void *arg)
{
    GORT_FRAME();
    gort_mutex_t *mu = arg; /* in the args copy: runtime memory */
    gort_mutex_lock(mu);
    gort_mutex_lock(mu);
}

static NOINLINE void plant_mutex_leak(void)
{
    char args[320] = {0}; /* > 256 bytes: copied to runtime memory, freed at teardown */
    gort_go_opts_t o = {.args_size = sizeof args};
    ck_assert_int_eq(gort_go_opts(&o, t_mutex_twice, args), 0);
}

static void exit_main(void *arg)
{
    GORT_FRAME();
    plant_mutex_leak();
    gort_sleep(5000000);
}

START_TEST(test_leakcheck_exit_fails_run)
{
    char *saved = test_debug_push("leakcheck=exit"); /* the twins keep their knob */
    if (LEAK_FOUND_STRICT) {
        test_run(exit_main, NULL, 1 + _i, -EDEADLK);
    } else {
        /* sanitizer/-O0 builds may miss the leak (leak_testutil.h): found or not, never
         * another error, and every byte back */
        gort_config_t cfg = {.procs = 1 + _i};
        size_t before = rt_mem_live();
        int rc = gort_run(exit_main, NULL, &cfg);
        ck_assert(rc == -EDEADLK || rc == 0);
        ck_assert_uint_eq(rt_mem_live(), before);
    }
    test_debug_restore(saved);
    saved = test_debug_push("leakcheck=report");
    test_run(exit_main, NULL, 1 + _i, 0);
    test_debug_restore(saved);
}
END_TEST

/* ------------------------------------------------ reports are written with the world running */

/* A report is formatted while the world is stopped but written once it runs again: a
 * stopped task may hold the FILE's lock (flockfile), and a write with the world stopped
 * would wait for it forever. An unbuffered stream whose writes note whether a stop is
 * in force shows where the writes happen (each fprintf used to be one, mid-stop). */
static _Atomic int report_writes, report_writes_stopped;
static char report_text[16384];
static size_t report_text_len;

static ssize_t report_cookie_write(void *cookie, const char *buf, size_t n)
{
    (void)cookie;
    atomic_fetch_add(&report_writes, 1);
    if (atomic_load(&stw_requested))
        atomic_fetch_add(&report_writes_stopped, 1);
    size_t room = sizeof report_text - 1 - report_text_len;
    size_t k = n < room ? n : room;
    memcpy(report_text + report_text_len, buf, k);
    report_text_len += k;
    report_text[report_text_len] = 0;
    return (ssize_t)n;
}

static void report_stream_main(void *arg)
{
    GORT_FRAME();
    (void)arg;
    counters_reset();
    atomic_store(&report_writes, 0);
    atomic_store(&report_writes_stopped, 0);
    report_text_len = 0;
    report_text[0] = 0;
    ck_assert_int_eq(gort_go(t_recv_chan, mkchan(0)), 0); /* one leak */
    ck_assert_int_eq(leaks_settle(1), 1);
    FILE *f = fopencookie(NULL, "w", (cookie_io_functions_t){.write = report_cookie_write});
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(setvbuf(f, NULL, _IONBF, 0), 0);
    ck_assert_int_eq(gort_leakcheck(f), 1);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_gt(atomic_load(&report_writes), 0);
    ck_assert_int_eq(atomic_load(&report_writes_stopped), 0);
    ck_assert_ptr_nonnull(strstr(report_text, "gort: leak check: 1 leaked task in 1 group"));
    ck_assert_ptr_nonnull(strstr(report_text, "chan receive"));
    cancel_and_reap(1, 1);
    free_hidden();
}

START_TEST(test_report_written_world_running)
{
    test_run(report_stream_main, NULL, 1 + _i, 0);
}
END_TEST

/* ------------------------------------------------ SIGQUIT: grouped dump, exit 2 */

static void quit_main(void *arg)
{
    GORT_FRAME();
    plant_mutex_leak();
    plant_mutex_leak();
    gort_sleep(5000000);
    raise(SIGQUIT); /* does not return: the handler dumps and exits 2 */
}

START_TEST(test_sigquit_dumps_and_exits_2)
{
    unsetenv("GORT_DEBUG");
    gort_run(quit_main, NULL, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_leak_roots");
    TCase *tc = tcase_create("roots");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_reachable_never_reported, 0, 2);
    tcase_add_loop_test(tc, test_chain_of_1000, 0, 2);
    tcase_add_test(tc, test_detector_while_running);
    tcase_add_test(tc, test_stale_xsave_not_a_root);
    tcase_add_loop_test(tc, test_leakcheck_exit_fails_run, 0, 2);
    tcase_add_loop_test(tc, test_report_written_world_running, 0, 2);
    tcase_add_exit_test(tc, test_sigquit_dumps_and_exits_2, 2);
    suite_add_tcase(s, tc);
    return test_main(s);
}
