/* tests/preempt/test_spin.c — asynchronous preemption of loops without calls: on 1 P,
 * 1..8 tasks spin in `while (!stop) n++` beside a task that sleeps 1 ms in a loop. The
 * sleeper must get all its wake-ups (it is the one that stops the spinners), and every
 * spinner must make progress. No timing assertions (perf/bench_preempt_latency does
 * those). */
/* ctest-timeout: 120 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "preempt/preempt.h"

enum { MAX_SPINNERS = 8, SLEEPS = 100 };

static volatile int spin_stop;
static volatile uint64_t spin_count[MAX_SPINNERS];
static _Atomic int sleeper_wakeups;
static gort_wg_t *spin_wg;

static void spinner(void *arg)
{
    GORT_FRAME();
    intptr_t i = (intptr_t)arg;
    uint64_t n = 0;
    /* no call in the loop: only an asynchronous stop can take the P from it */
    while (!spin_stop)
        spin_count[i] = ++n;
    gort_wg_done(spin_wg);
}

static void sleeper(void *arg)
{
    GORT_FRAME();
    for (int i = 0; i < SLEEPS; i++) {
        gort_sleep(1000000);
        atomic_fetch_add_explicit(&sleeper_wakeups, 1, memory_order_relaxed);
    }
    spin_stop = 1;
    gort_wg_done(spin_wg);
}

static void spin_main(void *arg)
{
    int nspin = (int)(intptr_t)arg;
    gort_wg_t *wg = calloc(1, sizeof *wg);
    spin_wg = wg;
    ck_assert_int_eq(gort_wg_add(wg, nspin + 1), 0);
    for (intptr_t i = 0; i < nspin; i++)
        ck_assert_int_eq(gort_go(spinner, (void *)i), 0);
    ck_assert_int_eq(gort_go(sleeper, NULL), 0);
    gort_wg_wait(wg);
    ck_assert_int_eq(atomic_load(&sleeper_wakeups), SLEEPS);
    for (int i = 0; i < nspin; i++)
        ck_assert_msg(spin_count[i] > 0, "spinner %d never ran", i);
    gort_stats_t st;
    gort_stats(&st);
    fprintf(stderr, "spin %d: async %lu coop %lu switches %lu\n", nspin,
            (unsigned long)st.preempt_async, (unsigned long)st.preempt_coop,
            (unsigned long)st.switches);
    ck_assert_msg(st.preempt_async > 0, "no asynchronous preemption (coop %lu)",
                  (unsigned long)st.preempt_coop);
    free(wg);
}

static void spin_run(int nspin)
{
    spin_stop = 0;
    memset((void *)spin_count, 0, sizeof spin_count);
    atomic_store(&sleeper_wakeups, 0);
    gort_config_t cfg = {.procs = 1};
    test_run_cfg(spin_main, (void *)(intptr_t)nspin, &cfg, 0);
}

START_TEST(spinners_1) { spin_run(1); }
END_TEST
START_TEST(spinners_2) { spin_run(2); }
END_TEST
START_TEST(spinners_4) { spin_run(4); }
END_TEST
START_TEST(spinners_8) { spin_run(8); }
END_TEST

/* Every spinner on 1 P gets the CPU in turn with the slice timer alone (no sleeper, so
 * no sysmon kick for a waiting timer): the main task waits on a channel that the last
 * spinner to see its turn closes. */
static _Atomic int turns_seen;
static volatile int turn_stop;

static void turn_spinner(void *arg)
{
    GORT_FRAME();
    gort_chan_t *done = arg;
    int first = 1;
    while (!turn_stop) {
        if (first) {
            first = 0;
            if (atomic_fetch_add(&turns_seen, 1) + 1 == 4) {
                turn_stop = 1;
                gort_chan_close(done);
            }
        }
    }
}

static void turns_main(void *arg)
{
    gort_chan_t *done = gort_chan_make(sizeof(int), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(gort_go(turn_spinner, done), 0);
    ck_assert_int_eq(gort_chan_recv(done, NULL), -EPIPE);
    ck_assert_int_eq(atomic_load(&turns_seen), 4);
    gort_yield();
    gort_chan_free(done);
}

START_TEST(slice_round_robin)
{
    atomic_store(&turns_seen, 0);
    turn_stop = 0;
    gort_config_t cfg = {.procs = 1, .timeslice_us = 2000};
    test_run_cfg(turns_main, NULL, &cfg, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("preempt_spin");
    TCase *tc = tcase_create("spin");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, spinners_1);
    tcase_add_test(tc, spinners_2);
    tcase_add_test(tc, spinners_4);
    tcase_add_test(tc, spinners_8);
    tcase_add_test(tc, slice_round_robin);
    suite_add_tcase(s, tc);
    return test_main(s);
}
