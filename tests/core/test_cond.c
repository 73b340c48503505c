/* tests/core/test_cond.c — gort_cond_t: signals are not banked, signal wakes in FIFO
 * order, broadcast wakes exactly the tasks already waiting, wait returns with the mutex
 * held, misuse, and a randomised bounded-buffer stress on 1 and 2 Ps. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdlib.h>

#include "sync_testutil.h"

typedef struct cshared {
    gort_mutex_t mu;
    gort_cond_t cv;
    int order[16];      /* mu: ids in wake-up order */
    int norder;         /* mu */
    int held_on_return; /* mu: waiters that found mu held by themselves on return */
    _Atomic int done;
} cshared_t;

static cshared_t *g_c;

START_TEST(test_no_waiters_outside_runtime)
{
    /* signal/broadcast with nobody waiting need no task */
    gort_cond_t *cv = calloc(1, sizeof *cv);
    gort_cond_signal(cv);
    gort_cond_broadcast(cv);
    ck_assert_uint_eq(sync_cond_nwaiters(cv), 0);
    static const gort_cond_t zero;
    ck_assert_int_eq(memcmp(cv, &zero, sizeof zero), 0);
    free(cv);
}
END_TEST

/* A waiter: waits once, then records its id in wake-up order. */
static void waiter(void *arg)
{
    GORT_FRAME();
    gort_mutex_lock(&g_c->mu);
    gort_cond_wait(&g_c->cv, &g_c->mu);
    /* wait relocked mu for us: nobody else can take it now */
    if (gort_mutex_trylock(&g_c->mu) == -EBUSY)
        g_c->held_on_return++;
    g_c->order[g_c->norder++] = (int)(intptr_t)arg;
    gort_mutex_unlock(&g_c->mu);
    atomic_fetch_add(&g_c->done, 1);
}

static int woken(void)
{
    gort_mutex_lock(&g_c->mu);
    int n = g_c->norder;
    gort_mutex_unlock(&g_c->mu);
    return n;
}

static void not_banked_main(void *arg)
{
    GORT_FRAME();
    g_c = calloc(1, sizeof *g_c);
    gort_cond_broadcast(&g_c->cv); /* nobody waits: lost, as in Go */
    gort_cond_signal(&g_c->cv);
    gort_cond_signal(&g_c->cv);
    ck_assert_int_eq(gort_go(waiter, (void *)0), 0);
    SYNC_WAIT_FOR(sync_cond_nwaiters(&g_c->cv) == 1);
    sync_yield_n(50);
    ck_assert_int_eq(woken(), 0);
    gort_cond_signal(&g_c->cv);
    SYNC_WAIT_FOR(atomic_load(&g_c->done) == 1);
    ck_assert_int_eq(woken(), 1);
    gort_cond_signal(&g_c->cv); /* nobody waits again */
    ck_assert_uint_eq(sync_cond_nwaiters(&g_c->cv), 0);
    sync_assert_no_leaks();
    free(g_c);
}

START_TEST(test_signal_not_banked)
{
    test_run(not_banked_main, NULL, 1, 0);
    test_run(not_banked_main, NULL, 2, 0);
}
END_TEST

#define FIFO_N 8

static void fifo_main(void *arg)
{
    GORT_FRAME();
    uint64_t rng = *(uint64_t *)arg;
    g_c = calloc(1, sizeof *g_c);
    for (int i = 0; i < FIFO_N; i++) {
        ck_assert_int_eq(gort_go(waiter, (void *)(intptr_t)i), 0);
        SYNC_WAIT_FOR(sync_cond_nwaiters(&g_c->cv) == (size_t)i + 1);
    }
    ck_assert(sync_dump_has("cond wait", &g_c->cv));
    /* A signalled waiter relocks the mutex: while we hold it, it waits there. */
    gort_mutex_lock(&g_c->mu);
    gort_cond_signal(&g_c->cv);
    SYNC_WAIT_FOR(sync_mutex_nwaiters(&g_c->mu) == 1);
    ck_assert(sync_dump_has("mutex lock", &g_c->mu));
    gort_mutex_unlock(&g_c->mu);
    SYNC_WAIT_FOR(atomic_load(&g_c->done) == 1);
    for (int i = 1; i < FIFO_N; i++) {
        /* signal with or without the mutex held: both are allowed */
        bool hold = test_rand(&rng) & 1;
        if (hold)
            gort_mutex_lock(&g_c->mu);
        gort_cond_signal(&g_c->cv);
        if (hold)
            gort_mutex_unlock(&g_c->mu);
        SYNC_WAIT_FOR(atomic_load(&g_c->done) == i + 1);
        ck_assert_uint_eq(sync_cond_nwaiters(&g_c->cv), (size_t)(FIFO_N - i - 1));
    }
    gort_mutex_lock(&g_c->mu);
    for (int i = 0; i < FIFO_N; i++)
        ck_assert_int_eq(g_c->order[i], i);
    ck_assert_int_eq(g_c->held_on_return, FIFO_N);
    gort_mutex_unlock(&g_c->mu);
    sync_assert_no_leaks();
    free(g_c);
}

START_TEST(test_signal_fifo)
{
    uint64_t seed = test_seed("cond_fifo", 0x636f6e64ull);
    test_run(fifo_main, &seed, 1, 0);
    test_run(fifo_main, &seed, 2, 0);
}
END_TEST

static void broadcast_main(void *arg)
{
    GORT_FRAME();
    g_c = calloc(1, sizeof *g_c);
    for (int i = 0; i < FIFO_N; i++)
        ck_assert_int_eq(gort_go(waiter, (void *)(intptr_t)i), 0);
    SYNC_WAIT_FOR(sync_cond_nwaiters(&g_c->cv) == FIFO_N);
    gort_cond_broadcast(&g_c->cv);
    ck_assert_uint_eq(sync_cond_nwaiters(&g_c->cv), 0);
    /* a task that starts waiting after the broadcast is not woken by it */
    ck_assert_int_eq(gort_go(waiter, (void *)(intptr_t)FIFO_N), 0);
    SYNC_WAIT_FOR(atomic_load(&g_c->done) == FIFO_N);
    SYNC_WAIT_FOR(sync_cond_nwaiters(&g_c->cv) == 1);
    sync_yield_n(50);
    ck_assert_int_eq(woken(), FIFO_N);
    gort_cond_broadcast(&g_c->cv);
    SYNC_WAIT_FOR(atomic_load(&g_c->done) == FIFO_N + 1);
    gort_mutex_lock(&g_c->mu);
    ck_assert_int_eq(g_c->order[FIFO_N], FIFO_N);
    ck_assert_int_eq(g_c->held_on_return, FIFO_N + 1);
    gort_mutex_unlock(&g_c->mu);
    sync_assert_no_leaks();
    free(g_c);
}

START_TEST(test_broadcast_wakes_current_waiters)
{
    test_run(broadcast_main, NULL, 1, 0);
    test_run(broadcast_main, NULL, 2, 0);
}
END_TEST

/* ------------------------------------------------------------------ misuse */

static void wait_outside_task(void)
{
    gort_mutex_t mu = {{0}};
    gort_cond_t cv = {{0}};
    gort_mutex_lock(&mu);
    gort_cond_wait(&cv, &mu);
}

static void wait_unlocked_task(void *arg)
{
    GORT_FRAME();
    gort_mutex_t *mu = calloc(1, sizeof *mu);
    gort_cond_t *cv = calloc(1, sizeof *cv);
    gort_cond_wait(cv, mu); /* mu not held */
}

static void wait_unlocked(void)
{
    sync_child_run(wait_unlocked_task);
}

START_TEST(test_misuse_is_fatal)
{
    sync_expect_death(wait_outside_task, "sync: cond wait outside a task");
    sync_expect_death(wait_unlocked, "sync: unlock of unlocked mutex");
}
END_TEST

/* ------------------------------------------------------------------ stress */

/* Producers and consumers over a small ring guarded by mu with not_full/not_empty;
 * random mix of signal and broadcast, random yields. Every item is consumed exactly
 * once (sum and count), the ring never over- or under-flows. */
#define BB_CAP 4
#define BB_PROD 4
#define BB_CONS 4
#define BB_ITEMS 3000 /* per producer */
#define BB_ROUNDS 4

typedef struct bbuf {
    gort_mutex_t mu;
    gort_cond_t not_full;
    gort_cond_t not_empty;
    long ring[BB_CAP]; /* mu */
    int head;          /* mu */
    int len;           /* mu */
    long consumed_sum; /* mu */
    long consumed_n;   /* mu */
    int violations;    /* mu */
    _Atomic int done;
    uint64_t seed;
} bbuf_t;

static bbuf_t *g_bb;

static void bb_wake(gort_cond_t *cv, uint64_t r)
{
    if (r % 5 == 0)
        gort_cond_broadcast(cv);
    else
        gort_cond_signal(cv);
}

static void bb_producer(void *arg)
{
    GORT_FRAME();
    int id = (int)(intptr_t)arg;
    uint64_t rng = g_bb->seed * 7 + (uint64_t)id;
    for (int i = 0; i < BB_ITEMS; i++) {
        uint64_t r = test_rand(&rng);
        gort_mutex_lock(&g_bb->mu);
        while (g_bb->len == BB_CAP)
            gort_cond_wait(&g_bb->not_full, &g_bb->mu);
        if (g_bb->len < 0 || g_bb->len >= BB_CAP)
            g_bb->violations++;
        g_bb->ring[(g_bb->head + g_bb->len) % BB_CAP] = (long)id * BB_ITEMS + i + 1;
        g_bb->len++;
        if ((r >> 4) % 8 == 0)
            gort_yield(); /* with the mutex held */
        bb_wake(&g_bb->not_empty, r >> 8);
        gort_mutex_unlock(&g_bb->mu);
        if ((r >> 12) % 3 == 0)
            gort_yield();
    }
    atomic_fetch_add(&g_bb->done, 1);
}

static void bb_consumer(void *arg)
{
    GORT_FRAME();
    uint64_t rng = g_bb->seed * 13 + (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < BB_PROD * BB_ITEMS / BB_CONS; i++) {
        uint64_t r = test_rand(&rng);
        gort_mutex_lock(&g_bb->mu);
        while (g_bb->len == 0)
            gort_cond_wait(&g_bb->not_empty, &g_bb->mu);
        if (g_bb->len <= 0 || g_bb->len > BB_CAP)
            g_bb->violations++;
        g_bb->consumed_sum += g_bb->ring[g_bb->head];
        g_bb->consumed_n++;
        g_bb->head = (g_bb->head + 1) % BB_CAP;
        g_bb->len--;
        bb_wake(&g_bb->not_full, r >> 8);
        gort_mutex_unlock(&g_bb->mu);
        if ((r >> 12) % 3 == 0)
            gort_yield();
    }
    atomic_fetch_add(&g_bb->done, 1);
}

static void bb_main(void *arg)
{
    GORT_FRAME();
    uint64_t seed = *(uint64_t *)arg;
    for (int round = 0; round < BB_ROUNDS; round++) {
        g_bb = calloc(1, sizeof *g_bb);
        g_bb->seed = seed + (uint64_t)round;
        for (int i = 0; i < BB_PROD; i++) {
            ck_assert_int_eq(gort_go(bb_consumer, (void *)(intptr_t)i), 0);
            ck_assert_int_eq(gort_go(bb_producer, (void *)(intptr_t)i), 0);
        }
        SYNC_WAIT_FOR(atomic_load(&g_bb->done) == BB_PROD + BB_CONS);
        long n = (long)BB_PROD * BB_ITEMS;
        gort_mutex_lock(&g_bb->mu);
        ck_assert_int_eq(g_bb->violations, 0);
        ck_assert_int_eq(g_bb->consumed_n, n);
        ck_assert_int_eq(g_bb->consumed_sum, n * (n + 1) / 2);
        ck_assert_int_eq(g_bb->len, 0);
        gort_mutex_unlock(&g_bb->mu);
        ck_assert_uint_eq(sync_cond_nwaiters(&g_bb->not_full), 0);
        ck_assert_uint_eq(sync_cond_nwaiters(&g_bb->not_empty), 0);
        free(g_bb);
    }
    sync_assert_no_leaks();
}

START_TEST(test_stress_bounded_buffer)
{
    uint64_t seed = test_seed("cond_stress", 0x62627566ull);
    test_run(bb_main, &seed, 1, 0);
    test_run(bb_main, &seed, 2, 0);
}
END_TEST

static Suite *cond_suite(void)
{
    Suite *s = suite_create("cond");
    TCase *tc = tcase_create("cond");
    tcase_set_timeout(tc, SYNC_TCASE_TIMEOUT);
    tcase_add_test(tc, test_no_waiters_outside_runtime);
    tcase_add_test(tc, test_signal_not_banked);
    tcase_add_test(tc, test_signal_fifo);
    tcase_add_test(tc, test_broadcast_wakes_current_waiters);
    tcase_add_test(tc, test_misuse_is_fatal);
    tcase_add_test(tc, test_stress_bounded_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(cond_suite());
}
