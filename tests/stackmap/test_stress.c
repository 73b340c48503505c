/* tests/stackmap/test_stress.c — the growth cases again with GORT_DEBUG=stackmove=1:
 * the stack moves at every GORT_FRAME check and runtime call, old stacks are poisoned and quarantined,
 * so any pointer the relocation misses faults or reads poison. */
/* ctest-env: GORT_DEBUG=stackmove=1 */
/* ctest-timeout: 120 */
#include <signal.h>
#include <unistd.h>

#include "grow_cases.h"

static uint64_t res[16];

#if defined(GORT_ASAN) || defined(GORT_TSAN)
enum { DEPTH = 100 }; /* each move poisons and verifies a 64 KiB+ block: keep it short */
#else
enum { DEPTH = 400 };
#endif
extern _Atomic uint64_t stackmap_n_grows; /* stackmap/relocate.c: moves made */

static void stress_task(void *arg)
{
    GORT_FRAME();
    uint64_t acc = 0, want_acc;
    uint64_t r = deep(DEPTH, &acc);
    res[0] = r == deep_expect(DEPTH, &want_acc) && acc == want_acc;
    uint64_t arr[8] = {0};
    fill_down(arr, 60, 3);
    res[1] = arr[3];
    res[2] = many_ptrs();
    res[3] = array_loop();
    res[4] = va_sum(4, (uint64_t)1, (uint64_t)2, (uint64_t)3, (uint64_t)4);
    res[5] = span_case();
    res[6] = noptr_case();
    res[7] = qsort_case(99);
    char *buf = malloc(64);
    res[8] = fmt_case(buf);
    free(buf);
}

static void stress_main(void *arg)
{
    ck_assert_int_eq(gort_go(stress_task, arg), 0);
    while (gort_ntasks() > 1)
        gort_yield();
}

START_TEST(test_stress_cases)
{
    memset(res, 0, sizeof res);
    uint64_t moves0 = atomic_load(&stackmap_n_grows);
    test_run(stress_main, NULL, 2, 0);
    /* every check moved: at least one move per frame of deep(DEPTH), and more */
    ck_assert_uint_ge(atomic_load(&stackmap_n_grows) - moves0, DEPTH * 15 / 4);
    ck_assert_uint_eq(res[0], 1);
    ck_assert_uint_eq(res[1], 2 * (60 * 61 / 2));
    ck_assert_uint_eq(res[2], many_ptrs_expect());
    ck_assert_uint_eq(res[3], 120);
    ck_assert_uint_eq(res[4], 10);
    ck_assert_uint_eq(res[5], 27);
    ck_assert_uint_eq(res[6], 1);
    ck_assert_uint_eq(res[7], 1);
    ck_assert_uint_eq(res[8], 1);
}
END_TEST

#if defined(GORT_ASAN) || defined(GORT_TSAN)
enum { NT = 12 }; /* 64 KiB+ stacks moved at every check: keep the sanitizer run short */
#else
enum { NT = 60 };
#endif
static _Atomic int bad, done;

static void small_task(void *arg)
{
    GORT_FRAME();
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t n = 20 + test_rand(&seed) % 100, acc = 0, want_acc;
    if (deep(n, &acc) != deep_expect(n, &want_acc) || acc != want_acc)
        atomic_fetch_add(&bad, 1);
    if (seed & 1)
        gort_yield();
    atomic_fetch_add(&done, 1);
}

static void many_main(void *arg)
{
    uint64_t seed = *(uint64_t *)arg;
    for (int i = 0; i < NT; i++)
        gort_go(small_task, (void *)(uintptr_t)test_rand(&seed));
    while (atomic_load(&done) < NT)
        gort_yield();
}

START_TEST(test_stress_many)
{
    uint64_t seed = test_seed("stress_many", 5);
    atomic_store(&bad, 0);
    atomic_store(&done, 0);
    test_run(many_main, &seed, 2, 0);
    ck_assert_int_eq(atomic_load(&bad), 0);
}
END_TEST

/* gort_run's teardown empties the quarantine: its blocks are slices of the pool's
 * chunks, which teardown gives back to jemalloc. A block left in it used to be
 * "released" into the pool of a later gort_run in the same process, whose chunks
 * reused that memory: one block owned by two tasks (issue 3's seeds 8012, 11824,
 * 25647 of shrink_parked_kinds). Back-to-back runs, each leaving moved stacks behind,
 * must each start with an empty quarantine and never hand out a quarantined block
 * (stress_check_fresh throws). */
unsigned stress_quarantine_len(void); /* stackmap/stress.c */

START_TEST(test_stress_runs_back_to_back)
{
    uint64_t seed = test_seed("stress_back_to_back", 11);
    for (int run = 0; run < 12; run++) {
        atomic_store(&bad, 0);
        atomic_store(&done, 0);
        uint64_t s = seed + (uint64_t)run;
        uint64_t moves0 = atomic_load(&stackmap_n_grows);
        test_run(many_main, &s, 1 + (run & 1), 0);
        ck_assert_int_eq(atomic_load(&bad), 0);
        /* the run moved stacks, so the quarantine held blocks before teardown */
        ck_assert_uint_gt(atomic_load(&stackmap_n_grows) - moves0, 64);
        ck_assert_uint_eq(stress_quarantine_len(), 0);
    }
}
END_TEST

#if !defined(GORT_ASAN) /* see main */
/* A write through a pointer into a moved stack is caught when the old block leaves the
 * quarantine (here: at teardown), unless it hit a PROT_NONE page and faulted at once.
 * The write goes to the old block's lowest byte when that page is shared (a partial
 * page, checked byte by byte on release), else to its highest. */
/* the old block's bounds live in globals: in locals, the conservative layer would
 * relocate them with the stack (integers equal to stack addresses) */
static uintptr_t stale_lo, stale_hi;

static void stale_write_task(void *arg)
{
    GORT_FRAME();
    (void)arg;
    g_t *g = g_self();
    stale_lo = (uintptr_t)g->stack_lo;
    stale_hi = (uintptr_t)g->stack_hi;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    ck_assert_uint_eq(grow(2), grow_expect(2)); /* stress mode: every check moves */
    /* volatile: grow looks pure to gcc's IPA, which would reuse the load above */
    ck_assert_uint_ne(*(volatile uintptr_t *)&g->stack_lo, stale_lo); /* it moved */
    volatile unsigned char *stale = (stale_lo & (pg - 1)) ? (unsigned char *)stale_lo
                                  : (stale_hi & (pg - 1)) ? (unsigned char *)stale_hi - 1
                                                          : NULL;
    ck_assert_msg(stale != NULL, "old stack [%#lx, %#lx) has no shared page", stale_lo,
                  stale_hi);
    *stale = 0x11;
}

static void stale_write_main(void *arg)
{
    GORT_FRAME();
    /* a small pooled stack: its blocks share pages (the 64 KiB main stack does not) */
    ck_assert_int_eq(gort_go(stale_write_task, arg), 0);
    while (gort_ntasks() > 1)
        gort_yield();
}

START_TEST(test_stress_stale_write_caught)
{
    test_run(stale_write_main, NULL, 1, 0); /* aborts in teardown's quarantine drain */
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("stackmap_stress");
    TCase *tc = tcase_create("stress");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_stress_cases);
    tcase_add_test(tc, test_stress_many);
    tcase_add_test(tc, test_stress_runs_back_to_back);
#if !defined(GORT_ASAN)
    /* ASan builds give every task a 64 KiB page-aligned stack: no shared page, and the
     * write would fault in a PROT_NONE page instead (ASan's SEGV report, exit code 1) */
    tcase_add_test_raise_signal(tc, test_stress_stale_write_caught, SIGABRT);
#endif
    suite_add_tcase(s, tc);
    return test_main(s);
}
