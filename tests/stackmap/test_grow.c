/* tests/stackmap/test_grow.c — stack growth by copying: deep recursion from 2 KiB,
 * pointers into the stack in every shape the issue lists, reserve, system-stack calls,
 * thousands of tasks growing at once, and the stack-limit fatal error. */
/* ctest-timeout: 120 */
#include <sys/wait.h>
#include <unistd.h>

#include "grow_cases.h"

static uint64_t g_result[16];

/* ------------------------------------------------------------ deep recursion */

struct deep_arg {
    uint64_t n;
    uint64_t ret, acc;
};

static void deep_task(void *arg)
{
    GORT_FRAME();
    struct deep_arg *d = arg;
    uint64_t acc = 0;
    d->ret = deep(d->n, &acc);
    d->acc = acc;
}

static void deep_main(void *arg)
{
    struct deep_arg *d = arg;
    gort_stats_t st0, st1;
    gort_stats(&st0);
    ck_assert_int_eq(gort_go(deep_task, d), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    gort_stats(&st1);
    (void)st0;
    (void)st1;
}

START_TEST(test_deep_1e6)
{
    /* stackmove=1 moves the whole stack at every frame: O(depth^2) bytes copied */
    struct deep_arg d = {.n = TEST_STRESS_SCALE(1000000, 5000)};
    test_run(deep_main, &d, 2, 0);
    uint64_t acc;
    uint64_t want = deep_expect(d.n, &acc);
    ck_assert_uint_eq(d.ret, want);
    ck_assert_uint_eq(d.acc, acc);
}
END_TEST

START_TEST(test_deep_small_many_runs)
{
    for (uint64_t n = 1; n < 5000; n = n * 3 + 1) {
        struct deep_arg d = {.n = n};
        test_run(deep_main, &d, 1, 0);
        uint64_t acc;
        ck_assert_uint_eq(d.ret, deep_expect(n, &acc));
        ck_assert_uint_eq(d.acc, acc);
    }
}
END_TEST

/* ------------------------------------------------------------ pointer shapes */

static void shapes_task(void *arg)
{
    GORT_FRAME();
    uint64_t *res = arg;
    uint64_t arr[8] = {0};
    fill_down(arr, 120, 3);
    res[0] = arr[3];
    res[1] = many_ptrs();
    res[2] = array_loop();
    res[3] = va_sum(5, (uint64_t)1, (uint64_t)2, (uint64_t)3, (uint64_t)4, (uint64_t)5);
    res[4] = span_case();
    res[5] = noptr_case();
    res[6] = grow(2000) == grow_expect(2000);
}

static void shapes_main(void *arg)
{
    ck_assert_int_eq(gort_go(shapes_task, arg), 0);
    while (gort_ntasks() > 1)
        gort_yield();
}

START_TEST(test_pointer_shapes)
{
    memset(g_result, 0, sizeof g_result);
    test_run(shapes_main, g_result, 1, 0);
    /* fill_down: sum over depth d of (d + d) = 2 * (0 + ... + 120) */
    ck_assert_uint_eq(g_result[0], 2 * (120 * 121 / 2));
    ck_assert_uint_eq(g_result[1], many_ptrs_expect());
    ck_assert_uint_eq(g_result[2], 120);
    ck_assert_uint_eq(g_result[3], 15);
    ck_assert_uint_eq(g_result[4], 27);
    ck_assert_uint_eq(g_result[5], 1);
    ck_assert_uint_eq(g_result[6], 1);
}
END_TEST

/* ------------------------------------------------------------ reserve, libc */

static void libc_task(void *arg)
{
    GORT_FRAME();
    uint64_t *res = arg;
    char *buf = malloc(64);
    res[0] = qsort_case(12345);
    res[1] = fmt_case(buf);
    free(buf);
    /* reserve outside the limit */
    res[2] = gort_stack_reserve((size_t)1 << 40) == -E2BIG;
    /* reserve that needs nothing */
    res[3] = gort_stack_reserve(16) == 0;
}

/* A 90 KB frame, uninstrumented: fits only after the reserve (its own function, so the
 * caller's frame stays small at every optimisation level). */
static NOINLINE int use_big_frame(void)
{
    char big[90000];
    memset(big, 1, sizeof big);
    __asm__ volatile("" ::: "memory");
    return big[89999];
}

static void libc_main(void *arg)
{
    ck_assert_int_eq(gort_go(libc_task, arg), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    ck_assert_int_eq(gort_stack_reserve(100000), 0); /* the main task too */
    ck_assert_int_eq(use_big_frame(), 1);
}

START_TEST(test_reserve_libc)
{
    memset(g_result, 0, sizeof g_result);
    test_run(libc_main, g_result, 1, 0);
    ck_assert_uint_eq(g_result[0], 1);
    ck_assert_uint_eq(g_result[1], 1);
    ck_assert_uint_eq(g_result[2], 1);
    ck_assert_uint_eq(g_result[3], 1);
}
END_TEST

/* ------------------------------------------------------------ many tasks */

enum { MANY = 3000 };
static _Atomic int many_bad, many_done;

static void many_task(void *arg)
{
    GORT_FRAME();
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t depth = 50 + test_rand(&seed) % 400;
    uint64_t acc = 0, want_acc;
    for (int round = 0; round < 3; round++) {
        uint64_t r = deep(depth, &acc);
        if (r != deep_expect(depth, &want_acc) || acc != want_acc)
            atomic_fetch_add(&many_bad, 1);
        acc = 0;
        if (test_rand(&seed) & 1)
            gort_yield();
    }
    atomic_fetch_add(&many_done, 1);
}

/* Tasks per run: under stackmove=1 every frame of every task moves its stack. */
static int many_count(void) { return TEST_STRESS_SCALE(MANY, 150); }

static void many_main(void *arg)
{
    uint64_t seed = *(uint64_t *)arg;
    for (int i = 0; i < many_count(); i++)
        ck_assert_int_eq(gort_go(many_task, (void *)(uintptr_t)test_rand(&seed)), 0);
    while (atomic_load(&many_done) < many_count())
        gort_yield();
}

START_TEST(test_many_tasks_growing)
{
    uint64_t seed = test_seed("many_tasks_growing", 77);
    atomic_store(&many_bad, 0);
    atomic_store(&many_done, 0);
    test_run(many_main, &seed, 2, 0);
    ck_assert_int_eq(atomic_load(&many_bad), 0);
    ck_assert_int_eq(atomic_load(&many_done), many_count());
    atomic_store(&many_done, 0);
    test_run(many_main, &seed, 1, 0);
    ck_assert_int_eq(atomic_load(&many_bad), 0);
}
END_TEST

/* ------------------------------------------------------------ fatal errors */

static NOINLINE uint64_t runaway(uint64_t n)
{
    GORT_FRAME();
    volatile uint64_t pad[4] = {n};
    if (pad[0] == UINT64_MAX) /* never: keeps the compiler from calling it infinite */
        return 0;
    return runaway(n + 1) + pad[0];
}

static void runaway_task(void *arg) { GORT_FRAME(); runaway(0); }

static void limit_main(void *arg)
{
    gort_go_opts_t o = {.name = "runaway"};
    gort_go_opts(&o, runaway_task, NULL);
    while (gort_ntasks() > 1)
        gort_yield();
}

static void limit_child(void)
{
    gort_config_t cfg = {.procs = 1, .stack_max = 256 * 1024};
    gort_run(limit_main, NULL, &cfg);
}

START_TEST(test_stack_limit_fatal)
{
    int status;
    char *out = test_child_run(limit_child, &status);
    ck_assert(WIFSIGNALED(status));
    ck_assert_msg(strstr(out, "(runaway) exceeded its 262144-byte stack limit") != NULL,
                  "output: %s", out);
    ck_assert_msg(strstr(out, "was spawned at") != NULL, "output: %s", out);
    ck_assert_msg(strstr(out, "backtrace of task") != NULL, "output: %s", out);
    free(out);
}
END_TEST

static NOINLINE void scribble(void)
{
    /* what uninstrumented code using more than the slack does: writes at the bottom */
    g_t *g = g_self();
    memset((char *)g->stack_lo, 0x41, 16);
}

static void canary_task(void *arg) { scribble(); gort_yield(); }

static void canary_main(void *arg)
{
    gort_go(canary_task, NULL);
    for (int i = 0; i < 10; i++)
        gort_yield();
}

static void canary_child(void)
{
    gort_config_t cfg = {.procs = 1};
    gort_run(canary_main, NULL, &cfg);
}

START_TEST(test_canary_fatal)
{
    int status;
    char *out = test_child_run(canary_child, &status);
    ck_assert(WIFSIGNALED(status));
    ck_assert_msg(strstr(out, "canary") != NULL, "output: %s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stackmap_grow");
    TCase *tc = tcase_create("grow");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_deep_1e6);
    tcase_add_test(tc, test_deep_small_many_runs);
    tcase_add_test(tc, test_pointer_shapes);
    tcase_add_test(tc, test_reserve_libc);
    tcase_add_test(tc, test_many_tasks_growing);
    tcase_add_test(tc, test_stack_limit_fatal);
    tcase_add_test(tc, test_canary_fatal);
    suite_add_tcase(s, tc);
    return test_main(s);
}
