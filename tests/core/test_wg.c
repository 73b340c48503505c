/* tests/core/test_wg.c — gort_wg_t: zero value, -ERANGE changes nothing, wait blocks
 * until the count is 0 (several waiters, adds while waiting), reuse, misuse, and a
 * randomised stress on 1 and 2 Ps. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdlib.h>

#include "sync_testutil.h"

START_TEST(test_zero_value_and_erange)
{
    /* No runtime needed while wait does not block. */
    gort_wg_t *wg = calloc(1, sizeof *wg);
    gort_wg_wait(wg); /* count 0: returns at once */
    ck_assert_int_eq(gort_wg_done(wg), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, -1), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, 0), 0);
    gort_wg_wait(wg); /* the failed calls changed nothing */

    ck_assert_int_eq(gort_wg_add(wg, 3), 0);
    ck_assert_int_eq(gort_wg_add(wg, -4), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, INT64_MIN), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, INT64_MAX), -ERANGE); /* past the counter's range */
    ck_assert_int_eq(gort_wg_add(wg, (int64_t)INT32_MAX - 2), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, (int64_t)INT32_MAX - 3), 0); /* exactly the max */
    ck_assert_int_eq(gort_wg_add(wg, -((int64_t)INT32_MAX - 3)), 0);
    /* still 3: three dones succeed, the fourth does not */
    ck_assert_int_eq(gort_wg_done(wg), 0);
    ck_assert_int_eq(gort_wg_done(wg), 0);
    ck_assert_int_eq(gort_wg_add(wg, -2), -ERANGE);
    ck_assert_int_eq(gort_wg_done(wg), 0);
    ck_assert_int_eq(gort_wg_done(wg), -ERANGE);
    gort_wg_wait(wg);
    static const gort_wg_t zero;
    ck_assert_int_eq(memcmp(wg, &zero, sizeof zero), 0);
    free(wg);
}
END_TEST

/* ---------------------------------------------- wait blocks until all done */

#define NW 10
#define NWAITERS 3

typedef struct wshared {
    gort_wg_t wg;
    _Atomic int flags[NW + 1]; /* set by each worker before its done */
    _Atomic int waiter_saw_all; /* waiters that found every flag set on return */
    _Atomic int waiters_done;
    _Atomic int release;        /* workers hold their done until this is set */
    _Atomic int started;
} wshared_t;

static wshared_t *g_w;

static void late_worker(void *arg)
{
    GORT_FRAME();
    gort_yield();
    atomic_store(&g_w->flags[NW], 1);
    gort_wg_done(&g_w->wg);
}

static void blocked_worker(void *arg)
{
    GORT_FRAME();
    int i = (int)(intptr_t)arg;
    atomic_fetch_add(&g_w->started, 1);
    while (!atomic_load(&g_w->release))
        gort_yield();
    if (i == 0) {
        /* adding while waiters exist and the count is > 0 is fine */
        gort_wg_add(&g_w->wg, 1);
        gort_go(late_worker, NULL);
    }
    atomic_store(&g_w->flags[i], 1);
    gort_wg_done(&g_w->wg);
}

static void flag_waiter(void *arg)
{
    GORT_FRAME();
    gort_wg_wait(&g_w->wg);
    int all = 1;
    for (int i = 0; i <= NW; i++)
        all &= atomic_load(&g_w->flags[i]);
    atomic_fetch_add(&g_w->waiter_saw_all, all);
    atomic_fetch_add(&g_w->waiters_done, 1);
}

static void wait_main(void *arg)
{
    GORT_FRAME();
    g_w = calloc(1, sizeof *g_w);
    ck_assert_int_eq(gort_wg_add(&g_w->wg, NW), 0);
    for (int i = 0; i < NW; i++)
        ck_assert_int_eq(gort_go(blocked_worker, (void *)(intptr_t)i), 0);
    for (int i = 0; i < NWAITERS; i++)
        ck_assert_int_eq(gort_go(flag_waiter, NULL), 0);
    SYNC_WAIT_FOR(sync_wg_nwaiters(&g_w->wg) == NWAITERS &&
                  atomic_load(&g_w->started) == NW);
    sync_yield_n(30);
    ck_assert_int_eq(atomic_load(&g_w->waiters_done), 0); /* nobody done yet */
    ck_assert(sync_dump_has("wait group", &g_w->wg));
    atomic_store(&g_w->release, 1);
    gort_wg_wait(&g_w->wg); /* the main task waits too */
    for (int i = 0; i <= NW; i++)
        ck_assert_int_eq(atomic_load(&g_w->flags[i]), 1);
    SYNC_WAIT_FOR(atomic_load(&g_w->waiters_done) == NWAITERS);
    ck_assert_int_eq(atomic_load(&g_w->waiter_saw_all), NWAITERS);
    ck_assert_uint_eq(sync_wg_nwaiters(&g_w->wg), 0);
    ck_assert_int_eq(gort_wg_done(&g_w->wg), -ERANGE);
    sync_assert_no_leaks();
    free(g_w);
}

START_TEST(test_wait_until_all_done)
{
    test_run(wait_main, NULL, 1, 0);
    test_run(wait_main, NULL, 2, 0);
}
END_TEST

/* ------------------------------------------------------------------ misuse */

static void wait_outside_task(void)
{
    gort_wg_t wg = {{0}};
    gort_wg_add(&wg, 1);
    gort_wg_wait(&wg);
}

START_TEST(test_misuse_is_fatal)
{
    sync_expect_death(wait_outside_task, "sync: wait group wait would block outside a task");
}
END_TEST

/* ------------------------------------------------------- stress and reuse */

/* One wait group reused for many generations: each generation's workers (random
 * count, random yields, some adding a child worker) set a flag per unit of work; the
 * main task and a few helper waiters must see every unit of the generation done on
 * return. Helpers queue before, during and after the workers' dones. */
#define WS_ROUNDS 500
#define WS_MAXW 12
#define WS_HELPERS 2

typedef struct wstress {
    gort_wg_t wg;
    _Atomic int units;      /* work units done this generation */
    _Atomic int want;       /* units the generation will do (incl. children) */
    _Atomic int bad;        /* a waiter returned early */
    _Atomic int helpers_done;
    _Atomic int gen;
    uint64_t seed;
} wstress_t;

static wstress_t *g_ws;

static void ws_child(void *arg)
{
    GORT_FRAME();
    gort_yield();
    atomic_fetch_add(&g_ws->units, 1);
    gort_wg_done(&g_ws->wg);
}

static void ws_worker(void *arg)
{
    GORT_FRAME();
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    uint64_t r = test_rand(&rng);
    for (int k = (int)(r % 4); k > 0; k--)
        gort_yield();
    if ((r >> 8) % 3 == 0) {
        /* count > 0 here (our own unit is still pending): a legal concurrent add */
        gort_wg_add(&g_ws->wg, 1);
        gort_go(ws_child, NULL);
    }
    atomic_fetch_add(&g_ws->units, 1);
    gort_wg_done(&g_ws->wg);
}

static void ws_helper(void *arg)
{
    GORT_FRAME();
    gort_wg_wait(&g_ws->wg);
    if (atomic_load(&g_ws->units) != atomic_load(&g_ws->want))
        atomic_fetch_add(&g_ws->bad, 1);
    atomic_fetch_add(&g_ws->helpers_done, 1);
}

static void ws_main(void *arg)
{
    GORT_FRAME();
    uint64_t rng = *(uint64_t *)arg;
    g_ws = calloc(1, sizeof *g_ws);
    for (int round = 0; round < WS_ROUNDS; round++) {
        int n = 1 + (int)(test_rand(&rng) % WS_MAXW);
        /* Pre-compute how many children will be added, from the workers' seeds. */
        int want = n;
        uint64_t seeds[WS_MAXW];
        for (int i = 0; i < n; i++) {
            seeds[i] = test_rand(&rng);
            uint64_t s = seeds[i];
            if ((test_rand(&s) >> 8) % 3 == 0)
                want++;
        }
        atomic_store(&g_ws->units, 0);
        atomic_store(&g_ws->want, want);
        atomic_store(&g_ws->helpers_done, 0);
        ck_assert_int_eq(gort_wg_add(&g_ws->wg, n), 0);
        for (int i = 0; i < WS_HELPERS; i++)
            ck_assert_int_eq(gort_go(ws_helper, NULL), 0);
        for (int i = 0; i < n; i++)
            ck_assert_int_eq(gort_go(ws_worker, (void *)(uintptr_t)seeds[i]), 0);
        gort_wg_wait(&g_ws->wg);
        ck_assert_int_eq(atomic_load(&g_ws->units), want);
        /* The next generation may only start after every Wait of this one returned
         * (Go's rule for reuse). */
        SYNC_WAIT_FOR(atomic_load(&g_ws->helpers_done) == WS_HELPERS);
        ck_assert_int_eq(atomic_load(&g_ws->bad), 0);
    }
    ck_assert_uint_eq(sync_wg_nwaiters(&g_ws->wg), 0);
    static const gort_wg_t zero;
    ck_assert_int_eq(memcmp(&g_ws->wg, &zero, sizeof zero), 0);
    free(g_ws);
    sync_assert_no_leaks();
}

START_TEST(test_stress_reuse)
{
    uint64_t seed = test_seed("wg_stress", 0x7767ull);
    test_run(ws_main, &seed, 1, 0);
    test_run(ws_main, &seed, 2, 0);
}
END_TEST

static Suite *wg_suite(void)
{
    Suite *s = suite_create("wg");
    TCase *tc = tcase_create("wg");
    tcase_set_timeout(tc, SYNC_TCASE_TIMEOUT);
    tcase_add_test(tc, test_zero_value_and_erange);
    tcase_add_test(tc, test_wait_until_all_done);
    tcase_add_test(tc, test_misuse_is_fatal);
    tcase_add_test(tc, test_stress_reuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(wg_suite());
}
