/* tests/core/test_abi.c — the public ABI and the argument contract of include/gort.h:
 * sizes and alignments of the embeddable types (fixed: a program compiled against one
 * gort.h must work with a later libgort.so.0), zero bytes as valid objects, every call's
 * documented answer to bad input and to being called outside a task, and gort_run run
 * many times in a row giving back every thread and every byte. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <dirent.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Check's own per-test timeout (4 s) is too short for the repeat test under the
 * sanitizers on a shared 2-core machine; ctest's timeout bounds the whole suite. */
#define ABI_TCASE_TIMEOUT 60

/* ------------------------------------------------------------ layout */

/* The embeddable types are part of the ABI: their sizes never shrink or grow within a
 * major version. The numbers are written out so that a change to gort.h fails here. */
#define ABI_LAYOUT(X)        \
    X(gort_mutex_t, 32, 8)   \
    X(gort_rwmutex_t, 96, 8) \
    X(gort_cond_t, 32, 8)    \
    X(gort_wg_t, 32, 8)      \
    X(gort_once_t, 48, 8)    \
    X(gort_case_t, 32, 8)    \
    X(gort_config_t, 40, 8)  \
    X(gort_go_opts_t, 24, 8) \
    X(gort_stats_t, 256, 8)  \
    X(gort_leak_t, 48, 8)

#define ABI_STATIC(type, size, align)                                        \
    _Static_assert(sizeof(type) == (size), "ABI: sizeof " #type " changed"); \
    _Static_assert(alignof(type) == (align), "ABI: alignof " #type " changed");
ABI_LAYOUT(ABI_STATIC)

/* Field offsets a caller's compiled code relies on. */
_Static_assert(offsetof(gort_case_t, chan) == 0, "ABI: gort_case_t.chan");
_Static_assert(offsetof(gort_case_t, op) == 8, "ABI: gort_case_t.op");
_Static_assert(offsetof(gort_case_t, elem) == 16, "ABI: gort_case_t.elem");
_Static_assert(offsetof(gort_case_t, result) == 24, "ABI: gort_case_t.result");
_Static_assert(offsetof(gort_config_t, procs) == 0, "ABI: gort_config_t.procs");
_Static_assert(offsetof(gort_config_t, stack_min) == 8, "ABI: gort_config_t.stack_min");
_Static_assert(offsetof(gort_config_t, stack_max) == 16, "ABI: gort_config_t.stack_max");
_Static_assert(offsetof(gort_config_t, main_stack) == 24, "ABI: gort_config_t.main_stack");
_Static_assert(offsetof(gort_config_t, timeslice_us) == 32, "ABI: gort_config_t.timeslice");
_Static_assert(offsetof(gort_config_t, preempt) == 36, "ABI: gort_config_t.preempt");
_Static_assert(offsetof(gort_stats_t, threads) == 11 * 8, "ABI: gort_stats_t.threads");
_Static_assert(GORT_SEND == 1 && GORT_RECV == 2, "ABI: select ops");
_Static_assert(GORT_PREEMPT_ASYNC == 0 && GORT_PREEMPT_COOP == 1 && GORT_PREEMPT_OFF == 2,
               "ABI: preempt modes");

START_TEST(test_layout_runtime)
{
    /* The same facts at run time, so a failure names the type and both numbers (and so
     * the suite proves the compile-time table is not dead code). */
#define ABI_CHECK(type, size, align)                                                             \
    ck_assert_msg(sizeof(type) == (size) && alignof(type) == (align),                            \
                  #type ": size %zu align %zu, want %d %d", sizeof(type), alignof(type), (size), \
                  (align));
    ABI_LAYOUT(ABI_CHECK)
#undef ABI_CHECK
    /* Embedded in a struct next to a char, each type keeps its alignment. */
    struct {
        char c;
        gort_mutex_t mu;
    } s;
    ck_assert_uint_eq((uintptr_t)&s.mu % 8, 0);
}
END_TEST

/* --------------------------------------------------- zero-initialised objects */

/* One heap block of zero bytes holding one of each sync object: no init call exists, so
 * zero bytes must be a valid unlocked / empty object. */
struct zeroed {
    gort_mutex_t mu;
    gort_rwmutex_t rw;
    gort_cond_t cv;
    gort_wg_t wg;
    gort_once_t once;
    long counter; /* mu */
    int inside;   /* mu: tasks in the critical section */
    int bad;      /* mu: times two tasks were inside at once */
};
static struct zeroed *zo;
static _Atomic int once_calls;

static void once_fn(void)
{
    atomic_fetch_add_explicit(&once_calls, 1, memory_order_relaxed); /* counter only */
}

static uint64_t zero_seed; /* set by the main task before the workers start */

static void zero_worker(void *arg)
{
    GORT_FRAME();
    uint64_t rng = zero_seed ^ (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 200; i++) {
        gort_mutex_lock(&zo->mu);
        if (zo->inside++)
            zo->bad++;
        zo->counter++;
        if (test_rand(&rng) % 4 == 0)
            gort_yield(); /* others find it locked and park */
        zo->inside--;
        gort_mutex_unlock(&zo->mu);
        if (test_rand(&rng) % 4 == 0)
            gort_yield();
    }
    gort_once(&zo->once, once_fn);
    gort_rwmutex_rlock(&zo->rw);
    gort_rwmutex_runlock(&zo->rw);
    gort_wg_done(&zo->wg);
}

static void zero_main(void *arg)
{
    GORT_FRAME();
    zo = calloc(1, sizeof *zo);
    ck_assert_ptr_nonnull(zo);
    atomic_store_explicit(&once_calls, 0, memory_order_relaxed);

    /* Each object on its own first: the zero value works with no other call before. */
    gort_mutex_lock(&zo->mu);
    ck_assert_int_eq(gort_mutex_trylock(&zo->mu), -EBUSY);
    gort_mutex_unlock(&zo->mu);
    ck_assert_int_eq(gort_mutex_trylock(&zo->mu), 0);
    gort_mutex_unlock(&zo->mu);
    gort_wg_wait(&zo->wg);     /* count 0: returns at once */
    gort_cond_signal(&zo->cv); /* nobody waits: nothing happens */
    gort_cond_broadcast(&zo->cv);
    gort_rwmutex_lock(&zo->rw);
    gort_rwmutex_unlock(&zo->rw);

    /* Then under contention, on procs Ps. */
    enum { NW = 8 };
    ck_assert_int_eq(gort_wg_add(&zo->wg, NW), 0);
    for (int i = 0; i < NW; i++)
        ck_assert_int_eq(gort_go(zero_worker, (void *)(uintptr_t)(i + 1)), 0);
    gort_wg_wait(&zo->wg);
    ck_assert_int_eq(zo->bad, 0);
    ck_assert_int_eq(zo->counter, NW * 200);
    ck_assert_int_eq(atomic_load_explicit(&once_calls, memory_order_relaxed), 1);
    ck_assert_int_eq(gort_wg_add(&zo->wg, -1), -ERANGE);
    free(zo);
    zo = NULL;
    ck_assert_int_eq(gort_leakcheck(stderr), 0); /* every worker finished */
}

START_TEST(test_zero_objects)
{
    zero_seed = test_seed("zero_objects", 17);
    for (int round = 0; round < 10; round++) {
        for (int procs = 1; procs <= 2; procs++)
            test_run(zero_main, NULL, procs, 0);
        zero_seed = test_rand(&zero_seed);
    }
}
END_TEST

/* ------------------------------------------------- bad input, inside a task */

static void never_runs(void *arg)
{
    GORT_FRAME();
    abort(); /* a call that failed changed nothing: this task must never exist */
}

static void *sysstack_fn(void *arg)
{
    return (char *)arg + 1;
}

static void bad_input_main(void *arg)
{
    GORT_FRAME();
    char buf[8] = {0};
    int x = 1;

    /* Channels: a NULL channel is -EINVAL for every direct operation. */
    ck_assert_int_eq(gort_chan_send(NULL, &x), -EINVAL);
    ck_assert_int_eq(gort_chan_recv(NULL, &x), -EINVAL);
    ck_assert_int_eq(gort_chan_try_send(NULL, &x), -EINVAL);
    ck_assert_int_eq(gort_chan_try_recv(NULL, &x), -EINVAL);
    ck_assert_int_eq(gort_chan_close(NULL), -EINVAL);
    ck_assert_int_eq(gort_chan_free(NULL), 0); /* NULL ok */
    ck_assert_uint_eq(gort_chan_len(NULL), 0);
    ck_assert_uint_eq(gort_chan_cap(NULL), 0);

    gort_chan_t *c = gort_chan_make(sizeof(int), 1);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(gort_chan_send(c, NULL), -EINVAL); /* elem_size > 0 */
    ck_assert_int_eq(gort_chan_try_send(c, NULL), -EINVAL);
    ck_assert_uint_eq(gort_chan_len(c), 0); /* ... and changed nothing */
    ck_assert_int_eq(gort_chan_try_recv(c, &x), -EAGAIN);
    ck_assert_int_eq(gort_chan_try_send(c, &x), 0);
    ck_assert_int_eq(gort_chan_try_send(c, &x), -EAGAIN); /* full */
    ck_assert_uint_eq(gort_chan_len(c), 1);
    ck_assert_uint_eq(gort_chan_cap(c), 1);
    ck_assert_int_eq(gort_chan_close(c), 0);
    ck_assert_int_eq(gort_chan_close(c), -EPIPE);
    ck_assert_int_eq(gort_chan_send(c, &x), -EPIPE);
    ck_assert_int_eq(gort_chan_try_send(c, &x), -EPIPE);
    ck_assert_int_eq(gort_chan_recv(c, &x), 0);        /* buffered value survives */
    ck_assert_int_eq(gort_chan_recv(c, NULL), -EPIPE); /* closed and empty */
    ck_assert_int_eq(gort_chan_try_recv(c, NULL), -EPIPE);
    ck_assert_int_eq(gort_chan_free(c), 0);

    gort_chan_t *sig = gort_chan_make(0, 1); /* elem_size 0: a signal channel */
    ck_assert_ptr_nonnull(sig);
    ck_assert_int_eq(gort_chan_try_send(sig, NULL), 0);
    ck_assert_int_eq(gort_chan_try_recv(sig, NULL), 0);
    ck_assert_int_eq(gort_chan_free(sig), 0);

    /* select */
    gort_case_t cs[2] = {{.chan = NULL, .op = GORT_RECV}, {.chan = NULL, .op = GORT_SEND}};
    ck_assert_int_eq(gort_select(NULL, 1, 0), -EINVAL);
    /* n is checked before any case is read: the array really has 65537 valid cases. */
    gort_case_t *many = calloc(65537, sizeof *many);
    ck_assert_ptr_nonnull(many);
    for (size_t i = 0; i < 65537; i++)
        many[i].op = GORT_RECV;
    ck_assert_int_eq(gort_select(many, 65537, 0), -EINVAL);
    ck_assert_int_eq(gort_select(many, 65536, 0), -ETIMEDOUT); /* the largest n allowed */
    free(many);
    gort_case_t badop = {.chan = NULL, .op = 3};
    ck_assert_int_eq(gort_select(&badop, 1, 0), -EINVAL);
    badop.op = 0;
    ck_assert_int_eq(gort_select(&badop, 1, 0), -EINVAL);
    ck_assert_int_eq(gort_select(cs, 2, 0), -ETIMEDOUT); /* NULL cases never proceed */
    ck_assert_int_eq(gort_select(NULL, 0, 0), -ETIMEDOUT);
    ck_assert_int_eq(gort_select(cs, 2, 1000), -ETIMEDOUT);

    /* Tasks: NULL fn is -EINVAL, and nothing was spawned. */
    size_t before = gort_ntasks();
    ck_assert_int_eq(gort_go(NULL, NULL), -EINVAL);
    ck_assert_int_eq(gort_go_with(NULL, buf, sizeof buf), -EINVAL);
    ck_assert_int_eq(gort_go_with(never_runs, NULL, 8), -EINVAL);
    ck_assert_int_eq(gort_go_opts(NULL, NULL, NULL), -EINVAL);
    gort_go_opts_t o = {.name = "x"};
    ck_assert_int_eq(gort_go_opts(&o, NULL, NULL), -EINVAL);
    o.args_size = 8;
    ck_assert_int_eq(gort_go_opts(&o, never_runs, NULL), -EINVAL);
    ck_assert_uint_eq(gort_ntasks(), before);

    /* Sync */
    gort_wg_t *wg = calloc(1, sizeof *wg);
    ck_assert_ptr_nonnull(wg);
    ck_assert_int_eq(gort_wg_add(wg, -1), -ERANGE);
    ck_assert_int_eq(gort_wg_done(wg), -ERANGE);
    ck_assert_int_eq(gort_wg_add(wg, 2), 0);
    ck_assert_int_eq(gort_wg_add(wg, -3), -ERANGE); /* changed nothing: still 2 */
    ck_assert_int_eq(gort_wg_done(wg), 0);
    ck_assert_int_eq(gort_wg_done(wg), 0);
    gort_wg_wait(wg);
    free(wg);

    /* Runtime: no nested run; introspection rejects NULL. */
    ck_assert_int_eq(gort_run(never_runs, NULL, NULL), -EBUSY);
    ck_assert_int_eq(gort_dump_tasks(NULL), -EINVAL);
    ck_assert_uint_ne(gort_self(), 0);
    ck_assert_uint_ge(gort_ntasks(), 1);

    /* I/O on a bad descriptor: -errno, here -EBADF. */
    ck_assert_int_eq(gort_read(-1, buf, sizeof buf), -EBADF);
    ck_assert_int_eq(gort_write(-1, buf, sizeof buf), -EBADF);

    /* Stacks: room is made (or was there); past stack_max (1 GiB by default) -E2BIG. */
    ck_assert_int_eq(gort_stack_reserve(1024), 0);
    ck_assert_int_eq(gort_stack_reserve((size_t)2 << 30), -E2BIG);
    ck_assert_int_eq(gort_stack_reserve(1024), 0); /* the failure changed nothing */
    ck_assert_ptr_eq(gort_on_system_stack(sysstack_fn, buf), buf + 1);

    /* Leaks: nothing here is blocked, so nothing leaked; out NULL is fine. */
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
    ck_assert_int_eq(gort_leakcheck(NULL), 0);
}

START_TEST(test_bad_input_in_task)
{
    test_run(bad_input_main, NULL, 2, 0);
}
END_TEST

/* --------------------------------------------------------- outside a task */

START_TEST(test_outside_task)
{
    char buf[4];
    /* Calls that need a task: -EPERM, and no task was made. */
    ck_assert_int_eq(gort_go(never_runs, NULL), -EPERM);
    ck_assert_int_eq(gort_go_with(never_runs, buf, sizeof buf), -EPERM);
    ck_assert_int_eq(gort_go_opts(NULL, never_runs, NULL), -EPERM);
    ck_assert_int_eq(gort_stack_reserve(1024), -EPERM);
    /* Queries answer "no runtime". */
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
    ck_assert_uint_eq(gort_self(), 0);
    ck_assert_uint_eq(gort_ntasks(), 0);
    gort_stats_t st;
    memset(&st, 0xab, sizeof st);
    gort_stats(&st);
    static const gort_stats_t zero_stats;
    ck_assert_int_eq(memcmp(&st, &zero_stats, sizeof st), 0);
    ck_assert_int_gt(gort_now(), 0);
    /* Void calls that need a task do nothing (and return). */
    gort_yield();
    gort_sleep(1000);
    gort_nopreempt_begin();
    gort_nopreempt_end();
    gort_lock_thread();
    gort_unlock_thread();
    /* gort_on_system_stack outside a task simply calls fn. */
    ck_assert_ptr_eq(gort_on_system_stack(sysstack_fn, buf), buf + 1);
    /* A channel needs no task to be made, used without blocking, and freed. */
    gort_chan_t *c = gort_chan_make(sizeof(int), 2);
    ck_assert_ptr_nonnull(c);
    int x = 7;
    ck_assert_int_eq(gort_chan_try_send(c, &x), 0);
    x = 0;
    ck_assert_int_eq(gort_chan_try_recv(c, &x), 0);
    ck_assert_int_eq(x, 7);
    ck_assert_int_eq(gort_chan_free(c), 0);
    ck_assert_uint_eq(rt_mem_live(), 0);
}
END_TEST

/* ------------------------------------------------------------- gort_run */

static void empty_main(void *arg)
{
    GORT_FRAME();
}

START_TEST(test_run_bad_config)
{
    ck_assert_int_eq(gort_run(NULL, NULL, NULL), -EINVAL);
    gort_config_t c = {.procs = -1};
    ck_assert_int_eq(gort_run(empty_main, NULL, &c), -EINVAL);
    c = (gort_config_t){.preempt = 3};
    ck_assert_int_eq(gort_run(empty_main, NULL, &c), -EINVAL);
    c = (gort_config_t){.preempt = -1};
    ck_assert_int_eq(gort_run(empty_main, NULL, &c), -EINVAL);
    c = (gort_config_t){.stack_min = 64 * 1024, .stack_max = 16 * 1024};
    ck_assert_int_eq(gort_run(empty_main, NULL, &c), -EINVAL);
    c = (gort_config_t){.stack_min = 16}; /* below the 2 KiB minimum */
    ck_assert_int_eq(gort_run(empty_main, NULL, &c), -EINVAL);
    /* A failed gort_run changed nothing: no runtime, no memory, and the next one works. */
    ck_assert_uint_eq(rt_mem_live(), 0);
    ck_assert_uint_eq(gort_ntasks(), 0);
    test_run(empty_main, NULL, 1, 0);
}
END_TEST

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The thread count once exited threads are gone from /proc. pthread_join returns when
 * the kernel clears the thread's tid (at mm release), a moment before the thread's
 * /proc/self/task entry goes away, so a count right after gort_run may still see a
 * joined thread. Waits up to 2 s for the count to come down to `want`: a bound against
 * that race, not a timing assertion (a thread really left running stays). */
static int count_threads_settled(int want)
{
    int n = count_threads();
    for (int i = 0; i < 400 && n > want; i++) {
        usleep(5000);
        n = count_threads();
    }
    return n;
}

/* Each run: tasks on both Ps, a channel hand-off, a timer, and tasks still blocked when
 * main returns (discarded, as when a Go main returns: one on a mutex, one asleep), so
 * teardown has something to undo. */
static gort_chan_t *rep_ch;
static gort_mutex_t rep_mu; /* a global: zeroed before each run, held by main throughout */

static void rep_sender(void *arg)
{
    GORT_FRAME();
    int v = (int)(intptr_t)arg;
    gort_chan_send(rep_ch, &v);
}

static void rep_blocked_mutex(void *arg)
{
    GORT_FRAME();
    gort_mutex_lock(&rep_mu); /* main never unlocks: discarded at exit */
    abort();
}

static void rep_blocked_sleep(void *arg)
{
    GORT_FRAME();
    gort_sleep(3600LL * 1000 * 1000 * 1000); /* an hour: discarded at exit, timer too */
    abort();
}

static void rep_main(void *arg)
{
    GORT_FRAME();
    int *sum = arg;
    memset(&rep_mu, 0, sizeof rep_mu);
    gort_mutex_lock(&rep_mu);
    rep_ch = gort_chan_make(sizeof(int), 0);
    ck_assert_ptr_nonnull(rep_ch);
    ck_assert_int_eq(gort_go(rep_blocked_mutex, NULL), 0);
    ck_assert_int_eq(gort_go(rep_blocked_sleep, NULL), 0);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_eq(gort_go(rep_sender, (void *)(intptr_t)i), 0);
    int v;
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(gort_chan_recv(rep_ch, &v), 0);
        *sum += v;
    }
    gort_sleep(1000);
    gort_yield();
    ck_assert_int_eq(gort_chan_free(rep_ch), 0);
    rep_ch = NULL;
    ck_assert_uint_ge(gort_ntasks(), 3); /* main and the two blocked ones */
}

START_TEST(test_run_repeat)
{
    int threads0 = count_threads();
    ck_assert_uint_eq(rt_mem_live(), 0);
    for (int i = 0; i < 100; i++) {
        int sum = 0;
        gort_config_t cfg = {.procs = 1 + i % 2};
        ck_assert_int_eq(gort_run(rep_main, &sum, &cfg), 0);
        ck_assert_int_eq(sum, 1 + 2 + 3 + 4);
        ck_assert_msg(rt_mem_live() == 0, "run %d: %zu bytes of runtime memory left", i,
                      rt_mem_live());
        int t = count_threads_settled(threads0);
        ck_assert_msg(t == threads0, "run %d: %d threads, started with %d", i, t, threads0);
        ck_assert_uint_eq(gort_ntasks(), 0);
    }
}
END_TEST

static Suite *abi_suite(void)
{
    Suite *s = suite_create("abi");
    TCase *tc = tcase_create("abi");
    tcase_set_timeout(tc, ABI_TCASE_TIMEOUT);
    tcase_add_test(tc, test_layout_runtime);
    tcase_add_test(tc, test_zero_objects);
    tcase_add_test(tc, test_bad_input_in_task);
    tcase_add_test(tc, test_outside_task);
    tcase_add_test(tc, test_run_bad_config);
    tcase_add_test(tc, test_run_repeat);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(abi_suite());
}
