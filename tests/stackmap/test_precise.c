/* tests/stackmap/test_precise.c — GORT_DEBUG=stackreloc=precise: the conservative layer
 * is off, so these cases pass only if the maps (GORT_FRAME lists, GORT_NOPTR) and the
 * frame-pointer chain are right. Only cases whose stack pointers live in listed slots. */
/* ctest-env: GORT_DEBUG=stackreloc=precise */
/* ctest-timeout: 60 */
#include "grow_cases.h"

static uint64_t res[8];

/* A caller's array written by callees many levels down, through a listed parameter
 * only (fill_down in grow_cases.h also keeps &local in a register: gcc -O2 hoists
 * it above the check, which the precise layer cannot see, by design). */
static NOINLINE void fill_listed(uint64_t *dst, int depth, int idx)
{
    GORT_FRAME(dst);
    if (depth > 0)
        fill_listed(dst, depth - 1, idx);
    dst[idx] += (uint64_t)depth * 2;
}

/* The NOPTR slot keeps its value (registers holding &here are not relocated in this
 * mode, so only the key is checked). */
static uintptr_t key_before;
static NOINLINE uint64_t noptr_precise(void)
{
    GORT_FRAME();
    uint64_t here = 0;
    uintptr_t key = (uintptr_t)&here;
    GORT_NOPTR(key);
    key_before = key;
    g_t *g = g_self();
    uintptr_t lo0 = g->stack_lo;
    grow((g->stack_hi - g->stack_lo) / 16);
    return key == *(volatile uintptr_t *)&key_before && g_self()->stack_lo != lo0;
}

static void precise_task(void *arg)
{
    GORT_FRAME();
    uint64_t n = (uint64_t)(uintptr_t)arg;
    uint64_t acc = 0, want_acc;
    uint64_t r = deep(n, &acc);
    res[0] = r == deep_expect(n, &want_acc) && acc == want_acc;
    uint64_t arr[8] = {0};
    fill_listed(arr, 200, 5);
    res[1] = arr[5];
    res[2] = noptr_precise();
}

static void precise_main(void *arg)
{
    ck_assert_int_eq(gort_go(precise_task, arg), 0);
    while (gort_ntasks() > 1)
        gort_yield();
}

START_TEST(test_precise_maps)
{
#if defined(GORT_ASAN) || defined(GORT_TSAN)
    /* Instrumented code keeps stack addresses where no frame map can name them (ASan's
     * frame descriptors, TSan's shadow calls): precise-only relocation is for normal
     * builds, stackmap/README.md says so. */
    return;
#endif
    /* stackmove=1 moves the whole stack at every frame: O(depth^2) bytes copied */
    uint64_t max = TEST_STRESS_SCALE(100000, 1000);
    for (uint64_t n = 10; n <= max; n *= 10) {
        memset(res, 0, sizeof res);
        test_run(precise_main, (void *)(uintptr_t)n, 2, 0);
        ck_assert_uint_eq(res[0], 1);
        ck_assert_uint_eq(res[1], 2 * (200 * 201 / 2));
        ck_assert_uint_eq(res[2], 1);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stackmap_precise");
    TCase *tc = tcase_create("precise");
    tcase_set_timeout(tc, 60); /* the ctest timeout; under stackmove=1 Check's 4 s is close */
    tcase_add_test(tc, test_precise_maps);
    suite_add_tcase(s, tc);
    return test_main(s);
}
