/* tests/preempt/test_runtime_range.c — a spinner in a static function of the program's
 * last object file is preempted asynchronously. With libgort linked statically, only
 * the build's exact runtime range (core/arch/text_begin.S .. text_end.S, one ld -r
 * object) tells the program's code from the runtime's; a heuristic over the symbol
 * table took such functions for the runtime's and they were never preempted. */
#include <stdatomic.h>

#include "internal.h"

static _Atomic int stop_spin;
static volatile unsigned long spin_sink;

/* static, call-free, no GORT_FRAME: only asynchronous preemption can stop it */
static void static_spinner(void *arg)
{
    unsigned long x = 0;
    while (!atomic_load_explicit(&stop_spin, memory_order_relaxed))
        x = x * 3 + 1;
    spin_sink = x;
}

static void range_main(void *arg)
{
    ck_assert_int_eq(gort_go(static_spinner, NULL), 0);
    for (int i = 0; i < 10; i++)
        gort_sleep(1000000); /* one P: each wake-up needs the spinner preempted */
    atomic_store(&stop_spin, 1);
    gort_stats_t st;
    gort_stats(&st);
    ck_assert_uint_gt(st.preempt_async, 0);
}

START_TEST(static_function_is_preempted)
{
    atomic_store(&stop_spin, 0);
    gort_config_t cfg = {.procs = 1};
    test_run_cfg(range_main, NULL, &cfg, 0);
}
END_TEST

START_TEST(runtime_range_is_exact)
{
    extern const char gort_text_begin_[], gort_text_end_[];
    /* the runtime's entry points lie inside, this test's code outside */
    ck_assert((const char *)(uintptr_t)gort_run >= gort_text_begin_ &&
              (const char *)(uintptr_t)gort_run < gort_text_end_);
    ck_assert((const char *)(uintptr_t)gort_chan_send >= gort_text_begin_ &&
              (const char *)(uintptr_t)gort_chan_send < gort_text_end_);
    ck_assert(!((const char *)(uintptr_t)static_spinner >= gort_text_begin_ &&
                (const char *)(uintptr_t)static_spinner < gort_text_end_));
}
END_TEST

static Suite *range_suite(void)
{
    Suite *s = suite_create("runtime_range");
    TCase *tc = tcase_create("range");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, static_function_is_preempted);
    tcase_add_test(tc, runtime_range_is_exact);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(range_suite()); }
