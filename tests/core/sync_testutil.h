/* tests/core/sync_testutil.h — helpers shared by the sync suites (test_mutex.c,
 * test_rwmutex.c, test_cond.c, test_wg.c, test_once.c). Main-task context only (they
 * call ck_assert, which needs the main task's 64 KiB stack). */
#ifndef GORT_TESTS_SYNC_TESTUTIL_H
#define GORT_TESTS_SYNC_TESTUTIL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "sync.h"

/* Check's default per-test timeout (4 s) is too short for the loop tests on a shared
 * 2-core machine; ctest's timeout still bounds the whole suite. */
#define SYNC_TCASE_TIMEOUT 60

/* How long a main task polls for a condition before calling the test failed. Only a
 * bound against hangs, never a timing assertion. */
#define SYNC_WAIT_NS (20LL * 1000 * 1000 * 1000)

/* Yields until cond holds; fails the test (with the condition's text) if it never
 * does. Main task only. */
#define SYNC_WAIT_FOR(cond)                                                               \
    do {                                                                                  \
        int64_t sync_deadline_ = gort_now() + SYNC_WAIT_NS;                               \
        while (!(cond)) {                                                                 \
            ck_assert_msg(gort_now() < sync_deadline_, "timed out waiting for: %s", #cond); \
            gort_yield();                                                                 \
        }                                                                                 \
    } while (0)

/* Lets other tasks run for a while (n yields): used to show that something does NOT
 * happen (a blocked task stays blocked). */
static inline void sync_yield_n(int n)
{
    for (int i = 0; i < n; i++)
        gort_yield();
}

/* Every test ends by proving no task leaked; -ENOSYS while gc/ has no detector yet. */
static inline void sync_assert_no_leaks(void)
{
    int n = gort_leakcheck(stderr);
    ck_assert_msg(n == 0 || n == -ENOSYS, "gort_leakcheck: %d", n);
}

/* Runs fn in a forked child with stderr captured, and asserts that the child died
 * (killed by a signal or a non-zero exit) and printed `want` on stderr. */
static inline void sync_expect_death(void (*fn)(void), const char *want)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        close(pfd[1]);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    static char buf[16384];
    size_t len = 0;
    for (;;) {
        char chunk[4096];
        ssize_t r = read(pfd[0], chunk, sizeof chunk);
        if (r <= 0)
            break;
        size_t take = (size_t)r < sizeof buf - 1 - len ? (size_t)r : sizeof buf - 1 - len;
        memcpy(buf + len, chunk, take);
        len += take;
    }
    buf[len] = 0;
    close(pfd[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(!(WIFEXITED(st) && WEXITSTATUS(st) == 0),
                  "child survived; stderr: %s", buf);
    ck_assert_msg(strstr(buf, want) != NULL, "want \"%s\" on stderr, got: %s", want, buf);
}

/* Whether gort_dump_tasks shows a task parked with this wait reason on obj
 * ("[mutex lock] on 0x..."): the wait reason and object the sync calls record. */
static inline bool sync_dump_has(const char *reason, const void *obj)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_gt(gort_dump_tasks(f), 0);
    fclose(f);
    char needle[160];
    snprintf(needle, sizeof needle, "[%s] on %p", reason, obj);
    bool found = strstr(text, needle) != NULL;
    if (!found)
        fprintf(stderr, "no \"%s\" in the dump:\n%s", needle, text);
    free(text);
    return found;
}

/* A runtime in the child of a death test: one P, main task fn. */
static inline void sync_child_run(void (*fn)(void *))
{
    gort_config_t cfg = {.procs = 1};
    gort_run(fn, NULL, &cfg);
}

#endif
