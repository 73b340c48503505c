/* tests/stackmap/test_guard.c — GORT_DEBUG=stackguard=1 (a PROT_NONE page under every
 * stack) and the fault handler: an uninstrumented overflow reports the task, its spawn
 * site, the PC and a backtrace, then aborts; a use of a stale pointer into a moved
 * stack under stackmove=1 names the moved stack and its task; ordinary tasks (spawn,
 * grow, shrink in a gc cycle, exit) run unchanged in guard mode, on 1 and 2 Ps.
 * The fatal cases run in a forked child whose stderr comes back through a pipe.
 * (The canary report without guard pages is tested by test_grow.c and test_sched.c.) */
/* ctest-timeout: 60 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grow_cases.h"

static void expect_abort(int status, const char *out)
{
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "child ended with status %#x, not SIGABRT; output:\n%s", status, out);
}

/* ------------------------------------------------------------ guard-page overflow */

/* Uninstrumented (no GORT_FRAME) and each frame bigger than the slack: nothing grows
 * the stack, so the recursion runs into the page under it. */
static NOINLINE uint64_t dive(uint64_t n)
{
    volatile char big[1536];
    big[0] = (char)n;
    big[sizeof big - 1] = (char)(n >> 8);
    if (n == UINT64_MAX) /* never: keeps the recursion from being turned into a loop */
        return 0;
    return dive(n + 1) + (uint64_t)big[0] + (uint64_t)big[sizeof big - 1];
}

static volatile uint64_t dive_result;

static void dive_task(void *arg) { dive_result = dive(0); }

static void dive_main(void *arg)
{
    gort_go_opts_t o = {.name = "deepdive"};
    gort_go_opts(&o, dive_task, NULL); /* the second task: id 2 */
    for (;;)
        gort_yield();
}

static void dive_child_run(int procs)
{
    test_debug_add("stackguard=1");
    gort_config_t cfg = {.procs = procs};
    gort_run(dive_main, NULL, &cfg);
}

static void dive_child1(void) { dive_child_run(1); }
static void dive_child2(void) { dive_child_run(2); }

static void check_dive_report(void (*child)(void))
{
    int status;
    char *out = test_child_run(child, &status);
    expect_abort(status, out);
    ck_assert_msg(strstr(out, "gort: fatal error: task 2 (deepdive) overflowed its stack"),
                  "output:\n%s", out);
    ck_assert_msg(strstr(out, "in the guard page under its"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "task 2 was spawned at dive_main"), "output:\n%s", out);
    /* dive, or a clone of it (dive.constprop.1 at gcc -O3) */
    ck_assert_msg(strstr(out, "backtrace of task 2:\n        dive"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "faulting pc: dive"), "output:\n%s", out);
    free(out);
}

START_TEST(test_guard_overflow_report)
{
    check_dive_report(dive_child1);
}
END_TEST

START_TEST(test_guard_overflow_report_2p)
{
    check_dive_report(dive_child2);
}
END_TEST

/* A fault that is no task's guard page goes to the handler the process had before
 * gort_run: here one of the test's own. */
static void wild_main(void *arg)
{
    volatile int *volatile wild = (int *)(uintptr_t)64; /* page 0: no guard page */
    *wild = 1;
}

static void own_segv(int sig)
{
    static const char msg[] = "own handler: SIGSEGV\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(7);
}

static void chain_child(void)
{
    /* guard mode on, but the fault is not a task's guard page: a wild address */
    test_debug_add("stackguard=1");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_segv;
    sigaction(SIGSEGV, &sa, NULL);
    gort_config_t cfg = {.procs = 1};
    gort_run(wild_main, NULL, &cfg);
}

START_TEST(test_guard_chains_foreign_faults)
{
    int status;
    char *out = test_child_run(chain_child, &status);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 7, "status %#x, output:\n%s",
                  status, out);
    ck_assert_msg(strstr(out, "own handler: SIGSEGV"), "output:\n%s", out);
    ck_assert_msg(!strstr(out, "overflowed its stack"), "output:\n%s", out);
    free(out);
}
END_TEST

/* ------------------------------------------------------------ stale stack (stackmove=1) */

static uint64_t *volatile stale; /* a stack address stored outside the stack: the bug */

static void stale_task(void *arg)
{
    GORT_FRAME();
    volatile char pad[6000]; /* puts `slot` in a middle page of the 16 KiB block */
    pad[0] = 1;
    uint64_t slot = 42;
    stale = &slot;
    HIDE(slot);
    gort_stack_reserve(128 * 1024); /* moves the stack; the old block is quarantined */
    dive_result = *stale + (uint64_t)pad[0]; /* into the old block: PROT_NONE */
}

static void stale_main(void *arg)
{
    gort_go_opts_t o = {.name = "stale", .stack_min = 16384};
    gort_go_opts(&o, stale_task, NULL); /* id 2 */
    for (;;)
        gort_yield();
}

static void stale_child(void)
{
    test_debug_add("stackmove=1");
    gort_config_t cfg = {.procs = 1};
    gort_run(stale_main, NULL, &cfg);
}

START_TEST(test_stale_stack_report)
{
    int status;
    char *out = test_child_run(stale_child, &status);
    expect_abort(status, out);
    /* the quarantined block records the task that moved (issue 3: it said task 0) */
    ck_assert_msg(strstr(out, "inside the old stack"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "of task 2, moved away"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "in a moved (stale) stack"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "running task 2 (stale)"), "output:\n%s", out);
    free(out);
}
END_TEST

/* A pointer read through a stale pointer from a 2 KiB old block (no whole page of it
 * is PROT_NONE: the bytes are readable poison) is 0xdbdb...: dereferencing it is a
 * general protection fault without an address; the handler finds the value in the
 * registers. (Sanitizer builds give tasks 64 KiB: there the read itself faults.) */
static uint64_t **volatile stale_pp;

static void stale_value_task(void *arg)
{
    GORT_FRAME();
    uint64_t x = 7;
    uint64_t *p = &x;
    stale_pp = &p;
    gort_stack_reserve(128 * 1024); /* moves the stack (sanitizer builds: from 64 KiB) */
    uint64_t *q = *stale_pp;  /* poison */
    dive_result = *q;
}

static void stale_value_main(void *arg)
{
    gort_go_opts_t o = {.name = "stalevalue"};
    gort_go_opts(&o, stale_value_task, NULL); /* id 2 */
    for (;;)
        gort_yield();
}

static void stale_value_child(void)
{
    test_debug_add("stackmove=1");
    gort_config_t cfg = {.procs = 1};
    gort_run(stale_value_main, NULL, &cfg);
}

START_TEST(test_stale_value_report)
{
    int status;
    char *out = test_child_run(stale_value_child, &status);
    expect_abort(status, out);
    ck_assert_msg(strstr(out, "gort: stackmove: fault at"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "in a moved (stale) stack"), "output:\n%s", out);
    ck_assert_msg(strstr(out, "running task 2 (stalevalue)"), "output:\n%s", out);
#if !defined(GORT_ASAN) && !defined(GORT_TSAN)
    /* 2 KiB stacks: found through the registers, not the address */
    ck_assert_msg(strstr(out, "a value read from a poisoned old stack"), "output:\n%s", out);
#endif
    free(out);
}
END_TEST

/* ------------------------------------------------------------ normal tasks, guard mode */

enum { NTASKS = 48 };
/* Recursion depth: under stackmove=1 every frame moves the whole stack (O(depth^2)
 * bytes copied per task); 300 frames still grow each task well past the 2 KiB floor,
 * so the shrink checks below keep their meaning. */
#define DEPTH ((uint64_t)TEST_STRESS_SCALE(3000, 300))

/* Looks addr up in /proc/self/maps: its permission string ("rw-p", "---p"), or "" */
static void perms_of(uintptr_t addr, char out[5])
{
    out[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && addr >= lo && addr < hi) {
            memcpy(out, perm, 5);
            break;
        }
    }
    fclose(f);
}

struct guard_check {
    uintptr_t lo;
    bool ok;
};

static void *guard_check_sys(void *arg)
{
    struct guard_check *c = arg;
    char below[5], first[5], at[5];
    perms_of(c->lo - 1, below);
    perms_of(c->lo - 4096, first);
    perms_of(c->lo, at);
    c->ok = !strcmp(below, "---p") && !strcmp(first, "---p") && !strncmp(at, "rw", 2);
    return NULL;
}

/* Whether the page under the running task's stack is PROT_NONE and its stack is not. */
static bool own_guard_ok(void)
{
    struct guard_check c = {.lo = g_self()->stack_lo};
    gort_on_system_stack(guard_check_sys, &c);
    return c.ok;
}

static gort_chan_t *release;
static gort_wg_t done;
static struct {
    uint64_t ret, acc;          /* deep()'s results before the park */
    uint64_t ret2, acc2;        /* after the wake-up (regrown) */
    bool guard1, guard2, guard3; /* fresh, grown, shrunk+regrown */
    size_t parked_size, woken_size; /* stack size before the park, right after it */
    g_t *self;                  /* the task, for main to see its stack size while parked */
} res[NTASKS];

static void normal_task(void *arg)
{
    GORT_FRAME();
    int k = (int)(intptr_t)arg;
    res[k].guard1 = own_guard_ok();
    uint64_t acc = 0;
    res[k].ret = deep(DEPTH + (uint64_t)k, &acc);
    res[k].guard2 = own_guard_ok();
    res[k].parked_size = g_self()->stack_hi - g_self()->stack_lo;
    __atomic_store_n(&res[k].self, g_self(), __ATOMIC_RELEASE);
    __atomic_store_n(&res[k].acc, acc, __ATOMIC_RELEASE); /* main polls it */
    gort_chan_recv(release, NULL); /* parked: the gc cycles shrink this stack */
    res[k].woken_size = g_self()->stack_hi - g_self()->stack_lo;
    acc = 0;
    res[k].ret2 = deep(DEPTH / 2 + (uint64_t)k, &acc);
    res[k].acc2 = acc;
    res[k].guard3 = own_guard_ok();
    gort_wg_done(&done);
}

static int leaks_cycle(void)
{
    int rc;
    for (int i = 0; i < 20 && (rc = gort_leaks(NULL, 0)) == -EAGAIN; i++)
        gort_yield();
    return rc;
}

static uint64_t shrinks_seen;

static void normal_main(void *arg)
{
    release = gort_chan_make(0, 0);
    gort_wg_add(&done, NTASKS);
    for (int k = 0; k < NTASKS; k++)
        gort_go(normal_task, (void *)(intptr_t)k);
    /* wait until every task is about to park on the channel */
    for (int spins = 0; spins < 100000; spins++) {
        bool all = true;
        for (int k = 0; k < NTASKS && all; k++)
            all = __atomic_load_n(&res[k].acc, __ATOMIC_ACQUIRE) != 0;
        if (all)
            break;
        gort_yield();
    }
    /* gc cycles (one halving per parked task each) until every task's stack is
     * smaller than when it parked and then several in a row shrink nothing (a task
     * still between its store above and the park shrinks in a later cycle; the
     * sizes are read between cycles, when the stacks only change in a cycle) */
    gort_stats_t st;
    gort_stats(&st);
    uint64_t before = st.stack_shrinks, last = before;
    for (int cycle = 0, idle = 0; cycle < 3000 && idle < 5; cycle++) {
        leaks_cycle();
        gort_stats(&st);
        bool all_shrunk = true;
        for (int k = 0; k < NTASKS && all_shrunk; k++) {
            g_t *t = __atomic_load_n(&res[k].self, __ATOMIC_ACQUIRE); /* NULL: not there yet */
            all_shrunk = t && (size_t)(t->stack_hi - t->stack_lo) < res[k].parked_size;
        }
        idle = all_shrunk && st.stack_shrinks == last ? idle + 1 : 0;
        last = st.stack_shrinks;
        gort_sleep(100000);
    }
    shrinks_seen = st.stack_shrinks - before;
    gort_chan_close(release);
    gort_wg_wait(&done);
    gort_chan_free(release);
}

static void run_normal(int procs)
{
    test_debug_add("stackguard=1");
    memset(res, 0, sizeof res);
    memset(&done, 0, sizeof done);
    test_run(normal_main, NULL, procs, 0);
    for (int k = 0; k < NTASKS; k++) {
        uint64_t acc, want = deep_expect(DEPTH + (uint64_t)k, &acc);
        ck_assert_uint_eq(res[k].ret, want);
        ck_assert_uint_eq(res[k].acc, acc);
        want = deep_expect(DEPTH / 2 + (uint64_t)k, &acc);
        ck_assert_uint_eq(res[k].ret2, want);
        ck_assert_uint_eq(res[k].acc2, acc);
        ck_assert_msg(res[k].guard1 && res[k].guard2 && res[k].guard3,
                      "task %d: no guard page under its stack (%d %d %d)", k, res[k].guard1,
                      res[k].guard2, res[k].guard3);
    }
    /* each task grew (to >= 64 KiB; >= 8 KiB under stackmove=1) and parked using little
     * of it: every one shrank */
    ck_assert_uint_ge(shrinks_seen, NTASKS);
    for (int k = 0; k < NTASKS; k++)
        ck_assert_msg(res[k].woken_size < res[k].parked_size,
                      "task %d: parked with %zu bytes, woke with %zu", k, res[k].parked_size,
                      res[k].woken_size);
}

START_TEST(test_guard_normal_tasks_1p)
{
    run_normal(1);
}
END_TEST

START_TEST(test_guard_normal_tasks_2p)
{
    run_normal(2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stackmap_guard");
    TCase *tc = tcase_create("guard");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_guard_overflow_report);
    tcase_add_test(tc, test_guard_overflow_report_2p);
    tcase_add_test(tc, test_guard_chains_foreign_faults);
    tcase_add_test(tc, test_stale_stack_report);
    tcase_add_test(tc, test_stale_value_report);
    tcase_add_test(tc, test_guard_normal_tasks_1p);
    tcase_add_test(tc, test_guard_normal_tasks_2p);
    suite_add_tcase(s, tc);
    return test_main(s);
}
