/* tests/core/chan_testutil.h — helpers shared by the channel suites (test_chan.c,
 * test_select.c, test_chan_patterns.c). The CHAN_* macros call ck_assert: main task
 * (64 KiB stack) or TEST_STACK tasks only. */
#ifndef GORT_TESTS_CHAN_TESTUTIL_H
#define GORT_TESTS_CHAN_TESTUTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "internal.h"

/* Check's default per-test timeout (4 s) is too short on a shared 2-core machine. */
#define CHAN_TCASE_TIMEOUT 60

/* Bound on polling for a condition: against hangs only, never a timing assertion. */
#define CHAN_WAIT_NS (20LL * 1000 * 1000 * 1000)

/* Yields until cond holds; fails the test if it never does. */
#define CHAN_WAIT_FOR(cond)                                                               \
    do {                                                                                  \
        int64_t chan_deadline_ = gort_now() + CHAN_WAIT_NS;                               \
        while (!(cond)) {                                                                 \
            ck_assert_msg(gort_now() < chan_deadline_, "timed out waiting for: %s", #cond); \
            gort_yield();                                                                 \
        }                                                                                 \
    } while (0)

/* Waits until exactly n tasks are queued on c (senders or receivers). */
#define CHAN_WAIT_QUEUED(c, senders, n) CHAN_WAIT_FOR(chan_waiters_count((c), (senders)) == (n))

/* Lets other tasks run for a while: used to show that something does NOT happen. */
static inline void chan_yield_n(int n)
{
    for (int i = 0; i < n; i++)
        gort_yield();
}

/* Every test ends by proving no task leaked; -ENOSYS while gc/ has no detector yet. */
static inline void chan_assert_no_leaks(void)
{
    int n = gort_leakcheck(stderr);
    ck_assert_msg(n == 0 || n == -ENOSYS, "gort_leakcheck: %d", n);
}

/* Spawns fn(arg) or fails the test. */
#define CHAN_GO(fn, arg) ck_assert_int_eq(gort_go((fn), (arg)), 0)

/* Spawns fn(arg) with a stack big enough for ck_assert. */
static inline int chan_go_big(void (*fn)(void *), void *arg)
{
    gort_go_opts_t o = {.name = "test", .stack_min = TEST_STACK};
    return gort_go_opts(&o, fn, arg);
}

/* Runs a main function on 1 P and on 2 Ps. */
#define CHAN_RUN_1_2(fn, arg)                                                             \
    do {                                                                                  \
        test_run((fn), (arg), 1, 0);                                                      \
        test_run((fn), (arg), 2, 0);                                                      \
    } while (0)

#endif
