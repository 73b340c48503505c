/* tests/stackmap/test_shrink.c — shrinking parked tasks' stacks (stackmap/shrink.c) in
 * the gc cycle (gort_leaks runs one): tasks parked in send, recv, select (inline and
 * heap records, with and without a timeout), sleep, mutex, cond and wait group, with
 * element pointers into their stacks, are shrunk and then regrown, and every value
 * must arrive intact; a deep task ends at the smallest stack; a task stopped by
 * asynchronous preemption is never moved. */
/* ctest-timeout: 120 */
#include "core/chan.h"
#include "core/sched_impl.h"
#include "grow_cases.h"
#include "stackmap/stackmap.h"

enum { K_RECV, K_SEND, K_SEL2, K_SEL6, K_SELTO, K_SLEEP, K_MUTEX, K_COND, K_WG, K_N };

typedef struct big {
    uint64_t w[5];
} big_t;

static gort_chan_t *ch[K_N][6];
static gort_mutex_t mu, cmu;
static gort_cond_t cv;
static int cond_ready;
static gort_wg_t wg;
static g_t *_Atomic tg[K_N];
static _Atomic int verdict[K_N]; /* 1 = ok; negative: which check failed */
static size_t grown_to;          /* stack size each task grows to before parking */

static big_t pattern(int k, uint64_t salt)
{
    big_t b;
    for (int i = 0; i < 5; i++)
        b.w[i] = 0x9e3779b97f4a7c15ull * (uint64_t)(k * 8 + i + 1) ^ salt;
    return b;
}

static size_t stack_size_of(g_t *g)
{
    return g->stack_hi - g->stack_lo;
}

/* Grows the caller's stack to at least `bytes`, then returns to a shallow depth. */
static NOINLINE void grow_stack_to(size_t bytes)
{
    GORT_FRAME();
    for (uint64_t n = bytes / 64; stack_size_of(g_self()) < bytes; n *= 2) {
        uint64_t r = grow(n);
        HIDE(r);
        ck_assert_uint_eq(r, grow_expect(n));
    }
}

/* One gc cycle; a stop that timed out (-EAGAIN: the world runs on) is retried. */
static int leaks_cycle(void)
{
    int rc;
    for (int i = 0; i < 20 && (rc = gort_leaks(NULL, 0)) == -EAGAIN; i++)
        gort_yield();
    return rc;
}

static bool big_eq(const big_t *a, const big_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Each task: grow, park with pointers into its stack, check what arrived, regrow. */
static void parker(void *arg)
{
    GORT_FRAME();
    int k = (int)(intptr_t)arg;
    grow_stack_to(grown_to);
    uint64_t canary[4] = {1, 2, 3, 4};
    big_t v = {{0}}, w6[6];
    memset(w6, 0, sizeof w6);
    big_t sendv = pattern(k, 7), want1 = pattern(k, 1), want7 = sendv;
    int ok = 1;
    atomic_store(&tg[k], g_self());
    switch (k) {
    case K_RECV:
        ok = gort_chan_recv(ch[k][0], &v) == 0 && big_eq(&v, &want1) ? 1 : -1;
        break;
    case K_SEND:
        ok = gort_chan_send(ch[k][0], &sendv) == 0 ? 1 : -1;
        break;
    case K_SEL2: {
        gort_case_t cs[2] = {{ch[k][0], GORT_RECV, &v, 0}, {ch[k][1], GORT_SEND, &sendv, 0}};
        int r = gort_select(cs, 2, 60 * 1000000000LL);
        if (r == 0)
            ok = big_eq(&v, &want1) ? 1 : -3;
        else if (r != 1)
            ok = -4;
        break;
    }
    case K_SEL6: {
        gort_case_t cs[6];
        for (int i = 0; i < 6; i++)
            cs[i] = (gort_case_t){ch[k][i], GORT_RECV, &w6[i], 0};
        int r = gort_select(cs, 6, -1);
        big_t want = pattern(k, (uint64_t)r + 1);
        if (r < 0 || r >= 6 || !big_eq(&w6[r], &want))
            ok = -5;
        for (int i = 0; i < 6; i++)
            if (i != r && w6[i].w[0])
                ok = -6;
        break;
    }
    case K_SELTO: {
        gort_case_t cs[1] = {{ch[k][0], GORT_RECV, &v, 0}};
        ok = gort_select(cs, 1, 300 * 1000000LL) == -ETIMEDOUT && !v.w[0] ? 1 : -7;
        break;
    }
    case K_SLEEP:
        gort_sleep(300 * 1000000LL);
        break;
    case K_MUTEX:
        gort_mutex_lock(&mu);
        gort_mutex_unlock(&mu);
        break;
    case K_COND:
        gort_mutex_lock(&cmu);
        while (!cond_ready)
            gort_cond_wait(&cv, &cmu);
        gort_mutex_unlock(&cmu);
        break;
    case K_WG:
        gort_wg_wait(&wg);
        break;
    }
    if (canary[0] != 1 || canary[1] != 2 || canary[2] != 3 || canary[3] != 4)
        ok = -8;
    if (!big_eq(&sendv, &want7))
        ok = -9;
    /* regrow from the shrunk stack */
    uint64_t r = grow(grown_to / 32);
    if (r != grow_expect(grown_to / 32))
        ok = -10;
    atomic_store(&verdict[k], ok);
}

static bool parked(int k)
{
    g_t *g = atomic_load(&tg[k]);
    return g && atomic_load_explicit(&g->status, memory_order_relaxed) == G_WAITING &&
           g->wait_reason != WAIT_NONE && g->wait_reason != WAIT_PREEMPTED;
}

struct wake_arg {
    uint64_t seed;
    bool shrunk[K_N];
};

static void shrink_main(void *arg)
{
    struct wake_arg *wa = arg;
    uint64_t rs = wa->seed;
    size_t floor = sched.stack_min > STACK_FLOOR ? sched.stack_min : STACK_FLOOR;
    grown_to = 16 * floor;
    for (int k = 0; k < K_N; k++)
        for (int i = 0; i < 6; i++)
            ch[k][i] = gort_chan_make(sizeof(big_t), 0);
    gort_mutex_lock(&mu);
    gort_wg_add(&wg, 1);
    cond_ready = 0;
    for (int k = 0; k < K_N; k++) {
        atomic_store(&tg[k], NULL);
        atomic_store(&verdict[k], 0);
        ck_assert_int_eq(gort_go(parker, (void *)(intptr_t)k), 0);
    }
    for (int k = 0; k < K_N; k++)
        while (!parked(k))
            gort_yield();
    gort_stats_t s0, s1;
    gort_stats(&s0);
    size_t before[K_N];
    for (int k = 0; k < K_N; k++)
        before[k] = stack_size_of(atomic_load(&tg[k]));
    int cycles = 1 + (int)(test_rand(&rs) % 3);
    for (int i = 0; i < cycles; i++)
        ck_assert_int_ge(leaks_cycle(), 0);
    gort_stats(&s1);
    for (int k = 0; k < K_N; k++) {
        g_t *g = atomic_load(&tg[k]);
        wa->shrunk[k] = stack_size_of(g) < before[k];
        ck_assert_msg(parked(k) || k == K_SLEEP || k == K_SELTO, "task %d woke early", k);
    }
    ck_assert_uint_ge(s1.stack_shrinks - s0.stack_shrinks, (uint64_t)K_N - 2);
    /* wake in a random order */
    int order[K_N];
    for (int k = 0; k < K_N; k++)
        order[k] = k;
    for (int k = K_N - 1; k > 0; k--) {
        int j = (int)(test_rand(&rs) % (uint64_t)(k + 1));
        int t = order[k];
        order[k] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < K_N; i++) {
        int k = order[i];
        big_t v = pattern(k, 1), got = {{0}};
        switch (k) {
        case K_RECV:
            ck_assert_int_eq(gort_chan_send(ch[k][0], &v), 0);
            break;
        case K_SEND:
            ck_assert_int_eq(gort_chan_recv(ch[k][0], &got), 0);
            big_t want = pattern(k, 7);
            ck_assert(big_eq(&got, &want));
            break;
        case K_SEL2:
            if (test_rand(&rs) & 1) {
                ck_assert_int_eq(gort_chan_send(ch[k][0], &v), 0);
            } else {
                ck_assert_int_eq(gort_chan_recv(ch[k][1], &got), 0);
                ck_assert_uint_eq(got.w[4], pattern(k, 7).w[4]);
            }
            break;
        case K_SEL6: {
            int c = (int)(test_rand(&rs) % 6);
            big_t x = pattern(k, (uint64_t)c + 1);
            ck_assert_int_eq(gort_chan_send(ch[k][c], &x), 0);
            break;
        }
        case K_MUTEX:
            gort_mutex_unlock(&mu);
            break;
        case K_COND:
            gort_mutex_lock(&cmu);
            cond_ready = 1;
            gort_cond_signal(&cv);
            gort_mutex_unlock(&cmu);
            break;
        case K_WG:
            gort_wg_done(&wg);
            break;
        default:
            break; /* sleep and the timed-out select wake by themselves */
        }
    }
    while (gort_ntasks() > 1)
        gort_yield();
    for (int k = 0; k < K_N; k++)
        for (int i = 0; i < 6; i++)
            gort_chan_free(ch[k][i]);
}

static void check_shrink_run(int procs, uint64_t seed)
{
    struct wake_arg wa = {.seed = seed};
    test_run(shrink_main, &wa, procs, 0);
    for (int k = 0; k < K_N; k++) {
        ck_assert_msg(atomic_load(&verdict[k]) == 1, "task kind %d: verdict %d", k,
                      atomic_load(&verdict[k]));
        if (k != K_SLEEP && k != K_SELTO)
            ck_assert_msg(wa.shrunk[k], "task kind %d was not shrunk", k);
    }
}

START_TEST(test_shrink_parked_kinds)
{
    uint64_t seed = test_seed("shrink_parked_kinds", 0x5eed5421);
    for (int i = 0; i < 4; i++)
        check_shrink_run(1 + (i & 1), seed + (uint64_t)i);
}
END_TEST

/* ------------------------------------------------------------ deep task */

static g_t *_Atomic deep_g;
static gort_chan_t *deep_ch;
static size_t deep_sizes[32];
static int deep_nsizes;
static _Atomic int deep_ok;

static void deep_parker(void *arg)
{
    GORT_FRAME();
    size_t target = (size_t)arg;
    for (int round = 0; round < 3; round++) {
        grow_stack_to(target);
        atomic_store(&deep_g, g_self());
        uint64_t tok[3] = {(uint64_t)round, 0, 99};
        uint64_t v = 0;
        if (gort_chan_recv(deep_ch, &v) != 0 || v != (uint64_t)round * 31 || tok[0] != (uint64_t)round ||
            tok[2] != 99)
            return;
    }
    atomic_store(&deep_ok, 1);
}

/* arg: NULL, or the gort_go_opts stack_min the deep task is spawned with. Without it
 * the stack goes down to the floor; with it, to exactly that size and never below:
 * the size is a promise to its code without GORT_FRAME (the main task's 64 KiB
 * likewise). */
static void deep_main(void *arg)
{
    size_t stack_min = arg ? *(const size_t *)arg : 0;
    size_t floor = sched.stack_min > STACK_FLOOR ? sched.stack_min : STACK_FLOOR;
    /* under stackmove=1 every frame of the descent moves the whole stack: a smaller
     * peak, still seven halvings above the floor */
    size_t target = TEST_STRESS_SCALE(1u << 20, 256u << 10);
    deep_ch = gort_chan_make(8, 0);
    atomic_store(&deep_ok, 0);
    atomic_store(&deep_g, NULL);
    gort_go_opts_t o = {.name = "deep", .stack_min = stack_min};
    ck_assert_int_eq(gort_go_opts(&o, deep_parker, (void *)target), 0);
    deep_nsizes = 0;
    for (uint64_t round = 0; round < 3; round++) {
        g_t *g;
        while (!(g = atomic_load(&deep_g)) ||
               atomic_load_explicit(&g->status, memory_order_relaxed) != G_WAITING)
            gort_yield();
        size_t before = stack_size_of(g);
        ck_assert_uint_ge(before, target);
        gort_stats_t s0, s1;
        gort_stats(&s0);
        for (int i = 0; i < 12; i++)
            ck_assert_int_ge(leaks_cycle(), 0);
        gort_stats(&s1);
        size_t sz = stack_size_of(g);
        deep_sizes[deep_nsizes++] = sz;
        if (stack_min)
            ck_assert_uint_eq(sz, stack_min);
        else
            ck_assert_uint_le(sz, floor > 4096 ? floor : 4096);
        /* one halving per shrink: before / sz = 2^shrinks */
        ck_assert_uint_ge(s1.stack_shrinks - s0.stack_shrinks,
                          (uint64_t)__builtin_ctzl(before / sz));
        atomic_store(&deep_g, NULL);
        uint64_t v = round * 31;
        ck_assert_int_eq(gort_chan_send(deep_ch, &v), 0);
    }
    while (gort_ntasks() > 1)
        gort_yield();
    gort_chan_free(deep_ch);
}

START_TEST(test_shrink_deep_to_floor)
{
    test_run(deep_main, NULL, 2, 0);
    ck_assert_int_eq(atomic_load(&deep_ok), 1);
    ck_assert_int_eq(deep_nsizes, 3);
}
END_TEST

START_TEST(test_shrink_keeps_requested_size)
{
    size_t stack_min = 64 * 1024;
    test_run(deep_main, &stack_min, 1 + _i, 0);
    ck_assert_int_eq(atomic_load(&deep_ok), 1);
    ck_assert_int_eq(deep_nsizes, 3);
}
END_TEST

/* ------------------------------------------------------------ pool trim */

enum { TRIM_TASKS = 8 };
static gort_chan_t *trim_ch;
static _Atomic int trim_parked;
static g_t *trim_g[TRIM_TASKS];

static void *trim_on_sys(void *unused)
{
    (void)unused;
    return (void *)stackpool_trim();
}
static uint64_t trim_pool_growth, trim_freed_by_shrink;

static void trim_parker(void *arg)
{
    GORT_FRAME();
    grow_stack_to((size_t)arg);
    trim_g[atomic_fetch_add(&trim_parked, 1)] = g_self();
    gort_chan_recv(trim_ch, NULL);
}

static void trim_main(void *arg)
{
    (void)arg;
    size_t floor = sched.stack_min > STACK_FLOOR ? sched.stack_min : STACK_FLOOR;
    /* stackmove=1: smaller, still above the 128 KiB from which the pool trims */
    size_t want = TEST_STRESS_SCALE(512 * 1024, 256 * 1024);
    size_t target = want > 8 * floor ? want : 8 * floor;
    trim_ch = gort_chan_make(0, 0);
    atomic_store(&trim_parked, 0);
    for (int i = 0; i < TRIM_TASKS; i++)
        ck_assert_int_eq(gort_go(trim_parker, (void *)target), 0);
    while (atomic_load(&trim_parked) < TRIM_TASKS || chan_waiters_count(trim_ch, false) < TRIM_TASKS)
        gort_yield();
    size_t big = 0;
    for (int i = 0; i < TRIM_TASKS; i++)
        if (stack_size_of(trim_g[i]) > big)
            big = stack_size_of(trim_g[i]);
    /* the growth left large blocks in the pool: trim them first, so the cycle's own
     * trim is what the numbers below measure */
    gort_on_system_stack(trim_on_sys, NULL);
    gort_stats_t s0, s1;
    gort_stats(&s0);
    ck_assert_int_ge(leaks_cycle(), 0);
    gort_stats(&s1);
    ck_assert_uint_eq(s1.stack_shrinks - s0.stack_shrinks, TRIM_TASKS);
    /* the shrinks freed TRIM_TASKS blocks of up to `big` bytes and took as many of half
     * that size; without the trim the pool would grow by ~(TRIM_TASKS - 2) * big,
     * with it by at most two blocks of each large class */
    trim_freed_by_shrink = (uint64_t)TRIM_TASKS * big;
    trim_pool_growth = s1.stack_pool_bytes > s0.stack_pool_bytes
                           ? s1.stack_pool_bytes - s0.stack_pool_bytes : 0;
    ck_assert_int_eq(gort_chan_close(trim_ch), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    gort_chan_free(trim_ch);
}

START_TEST(test_shrink_trims_pool)
{
    test_run(trim_main, NULL, 2, 0);
    ck_assert_uint_le(trim_pool_growth, trim_freed_by_shrink * 3 / TRIM_TASKS);
}
END_TEST

/* ------------------------------------------------ asynchronous preemption */

static _Atomic int spin_started, spin_stop;
static g_t *_Atomic spin_g;

static void spinner(void *arg)
{
    (void)arg;
    atomic_store(&spin_g, g_self());
    grow_stack_to(64 * 1024);
    atomic_store(&spin_started, 1);
    /* no GORT_FRAME, no runtime call: only a signal stops it */
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        __asm__ volatile("pause");
}

static void *shrink_on_sys(void *g)
{
    return (void *)(intptr_t)stack_shrink_parked(g);
}

static int spin_rc;
static size_t spin_before, spin_after;

static void async_main(void *arg)
{
    (void)arg;
    atomic_store(&spin_started, 0);
    atomic_store(&spin_stop, 0);
    ck_assert_int_eq(gort_go(spinner, NULL), 0);
    gort_stats_t st;
    /* one P: the spinner runs only while this task is off the P, and gives it back only
     * when the preemption signal stops it */
    do {
        gort_yield();
        gort_stats(&st);
    } while (!atomic_load(&spin_started) || st.preempt_async == 0);
    g_t *g = atomic_load(&spin_g);
    spin_before = stack_size_of(g);
    spin_rc = (int)(intptr_t)gort_on_system_stack(shrink_on_sys, g);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(leaks_cycle(), 0);
    spin_after = stack_size_of(g);
    atomic_store(&spin_stop, 1);
    while (gort_ntasks() > 1)
        gort_yield();
}

START_TEST(test_shrink_never_async_preempted)
{
    gort_config_t cfg = {.procs = 1};
    test_run_cfg(async_main, NULL, &cfg, 0);
    ck_assert_int_eq(spin_rc, -EBUSY);
    ck_assert_uint_eq(spin_before, spin_after);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stackmap_shrink");
    TCase *tc = tcase_create("shrink");
    tcase_set_timeout(tc, 110);
    tcase_add_test(tc, test_shrink_parked_kinds);
    tcase_add_test(tc, test_shrink_deep_to_floor);
    tcase_add_loop_test(tc, test_shrink_keeps_requested_size, 0, 2);
    tcase_add_test(tc, test_shrink_trims_pool);
    tcase_add_test(tc, test_shrink_never_async_preempted);
    suite_add_tcase(s, tc);
    return test_main(s);
}
