/* tests/gc/test_leak_many.c — scale: 100,000 leaked tasks are all found, grouped into
 * one report group per leaking code path, and set free by recovery; and recovery in
 * general: cancelled channel operations and selects return -ECANCELED, the tasks
 * finish, and nothing is left (every byte of runtime memory back, test_run checks). */
/* ctest-no-asan: the detector scans all writable memory conservatively; in an ASan
 * process that includes the sanitizer's quarantine and allocator metadata, so a cycle
 * takes seconds and planted leaks are missed (suites time out). The normal build runs
 * this suite; under ASan the detector still runs at every other suite's teardown. */
/* ctest-trackheap-twin */
/* ctest-timeout: 120 */
#include <stdio.h>
#include <stdlib.h>

#include "leak_testutil.h"

#ifdef __OPTIMIZE__
enum { MANY_FULL = 100000 };
#else
enum { MANY_FULL = 10000 }; /* -O0 spawns and scans ~10x slower */
#endif
/* The planted tasks. Under stackmove=1 a tenth: every spawn and every first check of
 * each task moves a stack, and the detector's scans of the pool's and quarantine's
 * blocks made single runs take 5 to 100 s (measured) at 100,000. */
static int many_count(void)
{
    return TEST_STRESS_SCALE(MANY_FULL, MANY_FULL / 10 > 2000 ? MANY_FULL / 10 : 2000);
}

static void t_select(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = arg;
    int v;
    gort_case_t cs[2] = {{.chan = c, .op = GORT_RECV, .elem = &v},
                         {.chan = NULL, .op = GORT_SEND, .elem = &v}};
    note_rc(gort_select(cs, 2, -1));
    atomic_fetch_add(&finished, 1);
}

/* Two code paths: many_count() - 1000 receivers and 1000 selects, on two channels
 * nobody holds. */
static NOINLINE void spawn_many(void)
{
    gort_chan_t *a = mkchan(0), *b = mkchan(0);
    for (int i = 0; i < many_count() - 1000; i++)
        ck_assert_int_eq(gort_go(t_recv_chan, a), 0);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(gort_go(t_select, b), 0);
}

static void many_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    spawn_many();
    int n = leaks_settle(many_count());
    ck_assert_found(n, many_count());
    if (n != many_count()) {
        close_hidden_and_reap(many_count());
        return;
    }
    /* the report: two groups, with their counts */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    n = gort_leakcheck(f);
    fclose(f);
    ck_assert_found(n, many_count());
    if (n != many_count()) {
        free(text);
        close_hidden_and_reap(many_count());
        return;
    }
    char want[64];
    snprintf(want, sizeof want, "%d leaked tasks in 2 groups", many_count());
    ck_assert_ptr_nonnull(strstr(text, want));
    snprintf(want, sizeof want, "%d tasks [chan receive", many_count() - 1000);
    ck_assert_ptr_nonnull(strstr(text, want));
    ck_assert_ptr_nonnull(strstr(text, "1000 tasks [select"));
    ck_assert_ptr_nonnull(strstr(text, "spawned at spawn_many+"));
    ck_assert_int_lt(len, 4096); /* grouped: readable, not 100,000 entries */
    free(text);
    /* recovery: every one returns -ECANCELED and finishes */
    cancel_and_reap(many_count(), many_count());
    ck_assert_found(atomic_load(&cancelled), many_count()); /* exact where strict */
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
    free_hidden();
}

START_TEST(test_100k_leaked_grouped_and_cancelled)
{
    test_run(many_main, NULL, 2, 0);
}
END_TEST

/* GORT_DEBUG=leakcheck=cancel: gort_leakcheck cancels what it finds. */
static NOINLINE void spawn_ten(void)
{
    gort_chan_t *c = mkchan(0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(gort_go(i % 2 ? t_recv_chan : t_select, c), 0);
}

static void cancel_mode_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    spawn_ten();
    int n = leaks_settle(10);
    ck_assert_found(n, 10);
    if (n != 10) {
        close_hidden_and_reap(10);
        return;
    }
    int before = atomic_load(&finished);
    n = gort_leakcheck(NULL); /* found, and (this mode) cancelled */
    ck_assert_found(n, 10);
    if (n < 10) /* a miss where one is allowed: wake the rest */
        close_hidden();
    for (int i = 0; i < 2000 && atomic_load(&finished) - before < 10; i++)
        gort_sleep(1000000);
    ck_assert_int_eq(atomic_load(&finished) - before, 10);
    ck_assert_found(atomic_load(&cancelled), 10);
    ck_assert_int_eq(gort_leakcheck(stderr), 0);
    free_hidden();
}

START_TEST(test_leakcheck_cancel_mode)
{
    char *saved = test_debug_push("leakcheck=cancel"); /* the twins keep their knob */
    test_run(cancel_mode_main, NULL, 1 + _i, 0);
    test_debug_restore(saved);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_leak_many");
    TCase *tc = tcase_create("many");
    tcase_set_timeout(tc, 100);
    tcase_add_test(tc, test_100k_leaked_grouped_and_cancelled);
    tcase_add_loop_test(tc, test_leakcheck_cancel_mode, 0, 2);
    suite_add_tcase(s, tc);
    return test_main(s);
}
