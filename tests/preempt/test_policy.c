/* tests/preempt/test_policy.c — where asynchronous preemption must not happen, and the
 * modes: gort_nopreempt sections are never preempted; a task blocked in a system call
 * sees no EINTR under a 100 us slice and a storm of requests; tasks hammering
 * malloc/free, memcpy/strlen and snprintf (on the system stack) under a preemption
 * storm neither deadlock nor corrupt anything; GORT_PREEMPT_OFF really turns it off (a
 * spinner starves a sleeper: checked in a child process killed by a watchdog). */
/* ctest-env: GORT_TIMESLICE_US=100 */
/* ctest-timeout: 120 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "preempt/preempt.h"

/* A plain thread asking every running task to stop, every 50 us. */
static volatile int storm_stop;
static pthread_t storm_thread;

static void *storm_main(void *arg)
{
    struct timespec ts = {0, 50000};
    while (!storm_stop) {
        preempt_request_all();
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void storm_start(void)
{
    storm_stop = 0;
    ck_assert_int_eq(pthread_create(&storm_thread, NULL, storm_main, NULL), 0);
}

static void storm_end(void)
{
    storm_stop = 1;
    pthread_join(storm_thread, NULL);
}

/* ------------------------------------------------------------ nopreempt */

static volatile uint64_t ticker_count;
static volatile int ticker_stop;
static _Atomic int nopre_violations;
static _Atomic int nopre_rounds;

static void ticker(void *arg)
{
    GORT_FRAME();
    while (!ticker_stop)
        ticker_count++;
}

static void nopre_task(void *arg)
{
    GORT_FRAME();
    for (int r = 0; r < 5; r++) {
        gort_nopreempt_begin();
        uint64_t c0 = ticker_count;
        int64_t end = gort_now() + 30000000;
        while (gort_now() < end)
            ;
        if (ticker_count != c0)
            atomic_fetch_add(&nopre_violations, 1);
        gort_nopreempt_end();
        /* outside the section the ticker must get the P back */
        uint64_t c1 = ticker_count;
        while (ticker_count == c1)
            ;
        atomic_fetch_add(&nopre_rounds, 1);
    }
    ticker_stop = 1;
}

static void nopre_main(void *arg)
{
    ticker_stop = 0;
    storm_start();
    ck_assert_int_eq(gort_go(ticker, NULL), 0);
    ck_assert_int_eq(gort_go(nopre_task, NULL), 0);
    while (!ticker_stop)
        gort_sleep(1000000);
    storm_end();
    ck_assert_int_eq(atomic_load(&nopre_violations), 0);
    ck_assert_int_eq(atomic_load(&nopre_rounds), 5);
}

START_TEST(nopreempt_sections)
{
    gort_config_t cfg = {.procs = 1, .timeslice_us = 100};
    test_run_cfg(nopre_main, NULL, &cfg, 0);
}
END_TEST

/* ------------------------------------------------------------ no EINTR */

static _Atomic int eintr_seen;
static volatile int eintr_spin_stop;

static void eintr_spinner(void *arg)
{
    GORT_FRAME();
    while (!eintr_spin_stop)
        ;
}

static void eintr_sleeper(void *arg)
{
    GORT_FRAME();
    gort_wg_t *wg = arg;
    for (int i = 0; i < 300; i++) {
        struct timespec ts = {0, 200000};
        gort_syscall_enter();
        int rc = nanosleep(&ts, NULL); /* never restarted by SA_RESTART: EINTR if hit */
        int e = errno;
        gort_syscall_exit();
        if (rc != 0 && e == EINTR)
            atomic_fetch_add(&eintr_seen, 1);
    }
    gort_wg_done(wg);
}

static void eintr_main(void *arg)
{
    gort_wg_t *wg = calloc(1, sizeof *wg);
    eintr_spin_stop = 0;
    storm_start();
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(gort_go(eintr_spinner, NULL), 0);
    ck_assert_int_eq(gort_wg_add(wg, 2), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(gort_go(eintr_sleeper, wg), 0);
    gort_wg_wait(wg);
    eintr_spin_stop = 1;
    storm_end();
    gort_stats_t st;
    gort_stats(&st);
    ck_assert_int_eq(atomic_load(&eintr_seen), 0);
    ck_assert_uint_gt(st.preempt_async, 0);
    free(wg);
}

START_TEST(no_eintr_in_syscalls)
{
    atomic_store(&eintr_seen, 0);
    gort_config_t cfg = {.procs = 2, .timeslice_us = 100};
    test_run_cfg(eintr_main, NULL, &cfg, 0);
}
END_TEST

/* ------------------------------------------------------------ libc storm */

static _Atomic long libc_bad;
static _Atomic long libc_ops;
static volatile int libc_stop;

struct fmt_req {
    char *buf;
    size_t len;
    long v;
};

static void *fmt_sys(void *arg)
{
    struct fmt_req *r = arg;
    snprintf(r->buf, r->len, "value=%ld:%08lx", r->v, (unsigned long)r->v);
    return NULL;
}

static void libc_task(void *arg)
{
    GORT_FRAME();
    uint64_t rng = (uint64_t)(uintptr_t)arg;
    char line[64];
    char want[64];
    while (!libc_stop) {
        size_t n = 1 + test_rand(&rng) % 4000;
        unsigned char *a = malloc(n);
        unsigned char *b = malloc(n + 1);
        if (!a || !b) {
            atomic_fetch_add(&libc_bad, 1);
            free(a);
            free(b);
            continue;
        }
        unsigned char pat = (unsigned char)(1 + test_rand(&rng) % 250);
        memset(a, pat, n);
        memcpy(b, a, n);
        b[n] = 0;
        if (strlen((char *)b) != n || memcmp(a, b, n) != 0)
            atomic_fetch_add(&libc_bad, 1);
        free(a);
        free(b);
        long v = (long)(test_rand(&rng) & 0xffffff);
        struct fmt_req r = {line, sizeof line, v};
        gort_on_system_stack(fmt_sys, &r);
        struct fmt_req w = {want, sizeof want, v};
        gort_on_system_stack(fmt_sys, &w);
        if (strcmp(line, want) != 0)
            atomic_fetch_add(&libc_bad, 1);
        atomic_fetch_add_explicit(&libc_ops, 1, memory_order_relaxed);
    }
}

static void libc_main(void *arg)
{
    libc_stop = 0;
    storm_start();
    for (intptr_t i = 0; i < 4; i++)
        ck_assert_int_eq(gort_go_opts(&(gort_go_opts_t){.stack_min = 16384}, libc_task,
                                      (void *)(i + 1)),
                         0);
    gort_sleep(1500 * 1000000ll);
    libc_stop = 1;
    storm_end();
    gort_sleep(5000000);
    gort_stats_t st;
    gort_stats(&st);
    fprintf(stderr, "libc storm: ops %ld async %lu coop %lu\n", atomic_load(&libc_ops),
            (unsigned long)st.preempt_async, (unsigned long)st.preempt_coop);
    ck_assert_int_eq(atomic_load(&libc_bad), 0);
    ck_assert_int_gt(atomic_load(&libc_ops), 100);
}

START_TEST(libc_allocator_storm)
{
    atomic_store(&libc_bad, 0);
    atomic_store(&libc_ops, 0);
    gort_config_t cfg = {.procs = 2, .timeslice_us = 100};
    test_run_cfg(libc_main, NULL, &cfg, 0);
}
END_TEST

/* ------------------------------------------------------------ modes */

static volatile int off_woke;

static void off_spinner(void *arg)
{
    GORT_FRAME();
    for (;;)
        ;
}

static void off_sleeper(void *arg)
{
    GORT_FRAME();
    gort_sleep(1000000);
    off_woke = 1;
    _exit(0); /* the child is done: the sleeper ran */
}

static void off_main(void *arg)
{
    gort_go(off_spinner, NULL);
    gort_go(off_sleeper, NULL);
    for (;;)
        gort_sleep(1000000000);
}

/* Runs a spinner and a 1 ms sleeper on 1 P in a child with a 1 s watchdog. Returns
 * true if the sleeper ran. */
static bool child_sleeper_runs(int mode)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* watchdog: SIGALRM's default action kills the child (Check's own SIGALRM
         * handler, inherited through fork, would kill the whole process group) */
        signal(SIGALRM, SIG_DFL);
        alarm(1);
        gort_config_t cfg = {.procs = 1, .preempt = mode};
        gort_run(off_main, NULL, &cfg);
        _exit(3);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM,
                  "child ended otherwise: status %#x", status);
    return false;
}

START_TEST(mode_off_is_off)
{
    ck_assert(!child_sleeper_runs(GORT_PREEMPT_OFF));
    ck_assert(child_sleeper_runs(GORT_PREEMPT_ASYNC));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("preempt_policy");
    TCase *tc = tcase_create("policy");
    tcase_set_timeout(tc, 60);
    const char *only = getenv("PREEMPT_TEST_ONLY"); /* debugging: one test by name */
    if (!only || !strcmp(only, "nopreempt"))
        tcase_add_test(tc, nopreempt_sections);
    if (!only || !strcmp(only, "eintr"))
        tcase_add_test(tc, no_eintr_in_syscalls);
    if (!only || !strcmp(only, "libc"))
        tcase_add_test(tc, libc_allocator_storm);
    if (!only || !strcmp(only, "mode"))
        tcase_add_test(tc, mode_off_is_off);
    suite_add_tcase(s, tc);
    return test_main(s);
}
