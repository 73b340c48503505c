/* tests/core/test_once.c — gort_once_t: fn runs exactly once, concurrent callers park
 * until it finished and then see its effects, works outside a runtime, misuse, and a
 * randomised stress on 1 and 2 Ps. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdlib.h>

#include "sync_testutil.h"

static _Atomic int g_calls;
static gort_once_t *g_once;

static void count_fn(void)
{
    atomic_fetch_add(&g_calls, 1);
}

START_TEST(test_once_outside_runtime)
{
    g_once = calloc(1, sizeof *g_once);
    atomic_store(&g_calls, 0);
    gort_once(g_once, count_fn);
    gort_once(g_once, count_fn);
    gort_once(g_once, count_fn);
    ck_assert_int_eq(atomic_load(&g_calls), 1);
    ck_assert_uint_eq(sync_once_nwaiters(g_once), 0);
    free(g_once);

    /* a NULL fn marks it done without a call */
    g_once = calloc(1, sizeof *g_once);
    gort_once(g_once, NULL);
    gort_once(g_once, count_fn);
    ck_assert_int_eq(atomic_load(&g_calls), 1);
    free(g_once);
}
END_TEST

/* ------------------------------------------------------------ concurrent */

#define NCALLERS 8
static long g_value;         /* written by fn only, read after gort_once returns */
static _Atomic int g_fn_finished;
static _Atomic int g_saw_value; /* callers that saw fn's effect on return */
static _Atomic int g_callers_done;
static _Atomic int g_fn_release; /* set by the main task once it has seen the waiters */

/* Runs long and yields, and does not finish until every other caller parked on the
 * once: proves they wait instead of running fn or returning early. */
static void slow_fn(void)
{
    atomic_fetch_add(&g_calls, 1);
    while (sync_once_nwaiters(g_once) < NCALLERS - 1 || !atomic_load(&g_fn_release))
        gort_yield();
    g_value = 42;
    atomic_store(&g_fn_finished, 1);
}

static void caller(void *arg)
{
    GORT_FRAME();
    gort_once(g_once, slow_fn);
    if (atomic_load(&g_fn_finished) && g_value == 42)
        atomic_fetch_add(&g_saw_value, 1);
    atomic_fetch_add(&g_callers_done, 1);
}

static void concurrent_main(void *arg)
{
    GORT_FRAME();
    g_once = calloc(1, sizeof *g_once);
    g_value = 0;
    atomic_store(&g_calls, 0);
    atomic_store(&g_fn_finished, 0);
    atomic_store(&g_saw_value, 0);
    atomic_store(&g_callers_done, 0);
    atomic_store(&g_fn_release, 0);
    for (int i = 0; i < NCALLERS; i++)
        ck_assert_int_eq(gort_go(caller, NULL), 0);
    SYNC_WAIT_FOR(sync_once_nwaiters(g_once) == NCALLERS - 1);
    ck_assert_int_eq(atomic_load(&g_callers_done), 0);
    ck_assert(sync_dump_has("once", g_once));
    atomic_store(&g_fn_release, 1);
    SYNC_WAIT_FOR(atomic_load(&g_callers_done) == NCALLERS);
    ck_assert_int_eq(atomic_load(&g_calls), 1);
    ck_assert_int_eq(atomic_load(&g_saw_value), NCALLERS);
    ck_assert_uint_eq(sync_once_nwaiters(g_once), 0);
    gort_once(g_once, count_fn); /* done: never runs again */
    ck_assert_int_eq(atomic_load(&g_calls), 1);
    sync_assert_no_leaks();
    free(g_once);
}

START_TEST(test_concurrent_callers_wait)
{
    test_run(concurrent_main, NULL, 1, 0);
    test_run(concurrent_main, NULL, 2, 0);
}
END_TEST

/* ------------------------------------------------------------------ misuse */

static gort_once_t g_rec_once;

static void recursive_fn(void)
{
    gort_once(&g_rec_once, recursive_fn); /* would wait for itself */
}

static void recursive_outside_task(void)
{
    gort_once(&g_rec_once, recursive_fn);
}

START_TEST(test_misuse_is_fatal)
{
    /* Inside a task this deadlocks (as in Go); outside one it cannot park: fatal. */
    sync_expect_death(recursive_outside_task, "sync: once would block outside a task");
}
END_TEST

/* ------------------------------------------------------------------ stress */

/* Many once objects in turn, each raced by a random number of tasks with random
 * yields; fn (which yields too) runs exactly once per object, and every caller sees
 * its result on return. fn takes no argument, so it finds its object in g_cur, which
 * the main task sets before it spawns that object's callers. */
#define OS_OBJECTS 600
#define OS_MAXCALLERS 6

typedef struct ostress {
    gort_once_t once[OS_OBJECTS];
    long value[OS_OBJECTS];       /* written by fn */
    _Atomic int calls[OS_OBJECTS];
    _Atomic int bad;
    _Atomic int done;
} ostress_t;

static ostress_t *g_os;
static _Atomic int g_cur;

static void os_fn(void)
{
    int obj = atomic_load(&g_cur);
    atomic_fetch_add(&g_os->calls[obj], 1);
    gort_yield(); /* let the other callers arrive and park */
    g_os->value[obj] = obj + 1;
}

static void os_caller(void *arg)
{
    GORT_FRAME();
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    int obj = atomic_load(&g_cur);
    for (int k = (int)(test_rand(&rng) % 3); k > 0; k--)
        gort_yield();
    gort_once(&g_os->once[obj], os_fn);
    if (g_os->value[obj] != obj + 1)
        atomic_fetch_add(&g_os->bad, 1);
    atomic_fetch_add(&g_os->done, 1);
}

static void os_main(void *arg)
{
    GORT_FRAME();
    uint64_t rng = *(uint64_t *)arg;
    g_os = calloc(1, sizeof *g_os);
    int total = 0;
    for (int obj = 0; obj < OS_OBJECTS; obj++) {
        atomic_store(&g_cur, obj);
        int n = 1 + (int)(test_rand(&rng) % OS_MAXCALLERS);
        for (int c = 0; c < n; c++)
            ck_assert_int_eq(gort_go(os_caller, (void *)(uintptr_t)test_rand(&rng)), 0);
        total += n;
        SYNC_WAIT_FOR(atomic_load(&g_os->done) == total);
    }
    for (int obj = 0; obj < OS_OBJECTS; obj++) {
        ck_assert_int_eq(atomic_load(&g_os->calls[obj]), 1);
        ck_assert_int_eq(g_os->value[obj], obj + 1);
        ck_assert_uint_eq(sync_once_nwaiters(&g_os->once[obj]), 0);
    }
    ck_assert_int_eq(atomic_load(&g_os->bad), 0);
    free(g_os);
    sync_assert_no_leaks();
}

START_TEST(test_stress_many_objects)
{
    uint64_t seed = test_seed("once_stress", 0x6f6e6365ull);
    test_run(os_main, &seed, 1, 0);
    test_run(os_main, &seed, 2, 0);
}
END_TEST

static Suite *once_suite(void)
{
    Suite *s = suite_create("once");
    TCase *tc = tcase_create("once");
    tcase_set_timeout(tc, SYNC_TCASE_TIMEOUT);
    tcase_add_test(tc, test_once_outside_runtime);
    tcase_add_test(tc, test_concurrent_callers_wait);
    tcase_add_test(tc, test_misuse_is_fatal);
    tcase_add_test(tc, test_stress_many_objects);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(once_suite());
}
