/* tests/internal.h — what the Check suites may use beyond gort.h: a few runtime
 * internals (core/rt.h) and the harness helpers below. */
#ifndef GORT_TESTS_INTERNAL_H
#define GORT_TESTS_INTERNAL_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "gort.h"
#include "core/rt.h"

/* Stack size for test tasks that call ck_assert (its failure path formats text). */
#define TEST_STACK (64 * 1024)

/* Iteration count of a stress loop: `normal` in the normal and ASan builds, `tsan` under
 * TSan, where instrumented code and its happens-before bookkeeping run the loops 10-50x
 * slower (the suite must finish within CI's time on 2 cores). Only for how long a
 * randomised loop runs, never for what it checks. */
#if defined(GORT_TSAN)
#define TEST_ITERS(normal, tsan) (tsan)
#else
#define TEST_ITERS(normal, tsan) (normal)
#endif

/* GORT_DEBUG asks for stackmove=1 (the stress mode: a stack move at every GORT_FRAME
 * check and runtime call, stackmap/README.md). A deep recursion then costs O(depth^2)
 * copying: tests scale depths and counts down with it, never what they check. */
bool test_stress_mode(void);
/* `normal`, or `stress` under stackmove=1 (test_stress_mode). */
#define TEST_STRESS_SCALE(normal, stress) (test_stress_mode() ? (stress) : (normal))

/* Adds a knob to GORT_DEBUG for the next gort_run (nothing for ""), keeping what the
 * ctest environment set (migrate=1, stackmove=1). Check forks per test, so it lasts for the test; under
 * CK_FORK=no (TSan) it lasts for the process. */
void test_debug_add(const char *knob);
/* test_debug_add for a part of a test: returns what GORT_DEBUG was (malloc'd, or NULL
 * when unset), which test_debug_restore puts back and frees. */
char *test_debug_push(const char *knob);
void test_debug_restore(char *saved);

/* Runs fn(arg) as the main task of a fresh runtime with cfg (NULL: defaults, procs from
 * GORT_PROCS or `procs` when > 0) and asserts gort_run returned `want`. Afterwards it
 * asserts that every byte of runtime memory and stack went back (rt_mem_live() == 0). */
void test_run(void (*fn)(void *), void *arg, int procs, int want);
void test_run_cfg(void (*fn)(void *), void *arg, const gort_config_t *cfg, int want);

/* The seed of a randomised test: GORT_TEST_SEED from the environment, else a fixed
 * default per call site; printed to stderr so a failure can be replayed. */
uint64_t test_seed(const char *test_name, uint64_t fallback);
/* splitmix64: a small, fast PRNG for tests (state is the caller's). */
uint64_t test_rand(uint64_t *state);

/* Runs fn() in a forked child whose stderr goes to a pipe; returns what the child
 * wrote (at most 64 KiB, NUL-terminated, the caller frees it) and stores its wait
 * status in *status. For fatal-error reports: the child is expected to die. */
char *test_child_run(void (*fn)(void), int *status);

/* Runs a test suite the standard way; returns the process exit code for main(). */
int test_main(Suite *s);

/* Bytes of runtime-owned memory (records, channels, stacks) currently allocated;
 * 0 when no runtime runs and everything was given back. */
size_t rt_mem_live(void);

#endif
