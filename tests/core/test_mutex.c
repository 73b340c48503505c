/* tests/core/test_mutex.c — gort_mutex_t: zero value, trylock, no owner, FIFO wake-up,
 * starvation (hand-off) mode, misuse, and a randomised counter stress on 1 and 2 Ps. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdlib.h>

#include "sync_testutil.h"

/* ------------------------------------------------------- outside a runtime */

struct embeds {
    int before;
    gort_mutex_t mu;
    int after;
};

START_TEST(test_zero_value_outside_runtime)
{
    /* Fast paths need no runtime and no task: lock, trylock, unlock on zeroed memory. */
    struct embeds *e = calloc(1, sizeof *e);
    ck_assert_ptr_nonnull(e);
    gort_mutex_lock(&e->mu);
    ck_assert_int_eq(gort_mutex_trylock(&e->mu), -EBUSY);
    gort_mutex_unlock(&e->mu);
    ck_assert_int_eq(gort_mutex_trylock(&e->mu), 0);
    ck_assert_int_eq(gort_mutex_trylock(&e->mu), -EBUSY);
    gort_mutex_unlock(&e->mu);
    gort_mutex_lock(&e->mu);
    gort_mutex_unlock(&e->mu);
    ck_assert_int_eq(e->before, 0);
    ck_assert_int_eq(e->after, 0);
    ck_assert_uint_eq(sync_mutex_nwaiters(&e->mu), 0);
    /* Unlocked again means all-zero again (so it is reusable, embeddable as zero). */
    static const gort_mutex_t zero;
    ck_assert_int_eq(memcmp(&e->mu, &zero, sizeof zero), 0);
    free(e);
}
END_TEST

/* ------------------------------------------------------ trylock, no owner */

static gort_mutex_t *g_mu;
static _Atomic int g_step;
static _Atomic int g_try_rc;

static void trylock_task(void *arg)
{
    GORT_FRAME();
    atomic_store(&g_try_rc, gort_mutex_trylock(g_mu));
    atomic_store(&g_step, 1);
}

static void unlock_task(void *arg)
{
    GORT_FRAME();
    gort_mutex_unlock(g_mu); /* a mutex has no owner: anyone may unlock */
    atomic_store(&g_step, 2);
}

static void trylock_main(void *arg)
{
    GORT_FRAME();
    g_mu = calloc(1, sizeof *g_mu);
    atomic_store(&g_step, 0);
    gort_mutex_lock(g_mu);
    ck_assert_int_eq(gort_mutex_trylock(g_mu), -EBUSY);
    ck_assert_int_eq(gort_go(trylock_task, NULL), 0);
    SYNC_WAIT_FOR(atomic_load(&g_step) == 1);
    ck_assert_int_eq(atomic_load(&g_try_rc), -EBUSY);
    ck_assert_int_eq(gort_go(unlock_task, NULL), 0);
    SYNC_WAIT_FOR(atomic_load(&g_step) == 2);
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0);
    gort_mutex_unlock(g_mu);
    sync_assert_no_leaks();
    free(g_mu);
}

START_TEST(test_trylock_and_no_owner)
{
    test_run(trylock_main, NULL, 1, 0);
    test_run(trylock_main, NULL, 2, 0);
}
END_TEST

/* --------------------------------------------------------- blocking, FIFO */

#define FIFO_N 8
static int g_order[FIFO_N]; /* g_mu */
static int g_norder;        /* g_mu */
static _Atomic int g_ndone;

static void fifo_locker(void *arg)
{
    GORT_FRAME();
    gort_mutex_lock(g_mu);
    g_order[g_norder++] = (int)(intptr_t)arg;
    gort_mutex_unlock(g_mu);
    atomic_fetch_add(&g_ndone, 1);
}

static void fifo_main(void *arg)
{
    GORT_FRAME();
    g_mu = calloc(1, sizeof *g_mu);
    g_norder = 0;
    atomic_store(&g_ndone, 0);
    gort_mutex_lock(g_mu);
    for (int i = 0; i < FIFO_N; i++) {
        ck_assert_int_eq(gort_go(fifo_locker, (void *)(intptr_t)i), 0);
        /* queue them one by one so their arrival order is known */
        SYNC_WAIT_FOR(sync_mutex_nwaiters(g_mu) == (size_t)i + 1);
    }
    sync_yield_n(50);
    ck_assert_int_eq(g_norder, 0); /* all blocked while we hold it */
    ck_assert_uint_eq(sync_mutex_nwaiters(g_mu), FIFO_N);
    ck_assert(sync_dump_has("mutex lock", g_mu));
    gort_mutex_unlock(g_mu);
    SYNC_WAIT_FOR(atomic_load(&g_ndone) == FIFO_N);
    gort_mutex_lock(g_mu);
    ck_assert_int_eq(g_norder, FIFO_N);
    /* No newcomer competed, so each woken waiter won in turn: FIFO. */
    for (int i = 0; i < FIFO_N; i++)
        ck_assert_int_eq(g_order[i], i);
    gort_mutex_unlock(g_mu);
    ck_assert_uint_eq(sync_mutex_nwaiters(g_mu), 0);
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0);
    gort_mutex_unlock(g_mu);
    sync_assert_no_leaks();
    free(g_mu);
}

START_TEST(test_fifo_wakeup)
{
    test_run(fifo_main, NULL, 1, 0);
    test_run(fifo_main, NULL, 2, 0);
}
END_TEST

/* ---------------------------------------------------------- starvation mode */

/* A re-locker holds the mutex almost all the time and re-locks it right after each
 * unlock; it yields inside its critical section, so the woken waiter runs, finds the
 * mutex taken and queues again (at the front). Without hand-off mode the waiter never
 * gets the lock (on 1 P: never); with it, after waiting more than 1 ms it sets
 * STARVING and the next unlock hands the mutex to it. */
#define STARVE_CAP 5000        /* re-locker iterations: ~5000 * 20 us = 100 ms >> 1 ms */
#define STARVE_HOLD_NS 20000

static _Atomic int g_b_got;        /* the waiter got the lock */
static _Atomic int g_a_iters;      /* re-locker iterations done */
static _Atomic int g_a_at_b;       /* re-locker iterations when the waiter got it */
static _Atomic int g_saw_starving; /* re-locker saw STARVING while holding the lock */
static _Atomic int g_a_started;

static void starve_relocker(void *arg)
{
    GORT_FRAME();
    int i;
    for (i = 0; i < STARVE_CAP; i++) {
        gort_mutex_lock(g_mu);
        atomic_store(&g_a_started, 1);
        int64_t until = gort_now() + STARVE_HOLD_NS;
        while (gort_now() < until)
            ;
        gort_yield(); /* lets the waiter run into the held mutex */
        if (sync_mutex_is_starving(g_mu))
            atomic_store(&g_saw_starving, 1);
        gort_mutex_unlock(g_mu);
        atomic_store(&g_a_iters, i + 1);
        if (atomic_load(&g_b_got))
            break;
    }
    atomic_store(&g_a_iters, i + 1);
    atomic_fetch_add(&g_step, 1);
}

static void starve_waiter(void *arg)
{
    GORT_FRAME();
    gort_mutex_lock(g_mu);
    atomic_store(&g_a_at_b, atomic_load(&g_a_iters));
    atomic_store(&g_b_got, 1);
    gort_mutex_unlock(g_mu);
    atomic_fetch_add(&g_step, 1);
}

static void starve_main(void *arg)
{
    GORT_FRAME();
    int procs = (int)(intptr_t)arg;
    g_mu = calloc(1, sizeof *g_mu);
    atomic_store(&g_b_got, 0);
    atomic_store(&g_a_iters, 0);
    atomic_store(&g_a_at_b, -1);
    atomic_store(&g_saw_starving, 0);
    atomic_store(&g_a_started, 0);
    atomic_store(&g_step, 0);
    ck_assert_int_eq(gort_go(starve_relocker, NULL), 0);
    SYNC_WAIT_FOR(atomic_load(&g_a_started));
    ck_assert_int_eq(gort_go(starve_waiter, NULL), 0);
    SYNC_WAIT_FOR(atomic_load(&g_step) == 2); /* both finished */
    fprintf(stderr, "starvation (procs %d): waiter got the lock after %d of the re-locker's "
            "iterations; STARVING seen: %d\n", procs, atomic_load(&g_a_at_b),
            atomic_load(&g_saw_starving));
    ck_assert_int_eq(atomic_load(&g_b_got), 1);
    ck_assert_int_ge(atomic_load(&g_a_at_b), 0);
    ck_assert_int_lt(atomic_load(&g_a_at_b), STARVE_CAP);
    if (procs == 1) /* deterministic on one P: the waiter only runs inside A's yield */
        ck_assert_int_eq(atomic_load(&g_saw_starving), 1);
    /* Hand-off mode ends once the queue drains. */
    ck_assert_int_eq(sync_mutex_is_starving(g_mu), 0);
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0);
    gort_mutex_unlock(g_mu);
    sync_assert_no_leaks();
    free(g_mu);
}

START_TEST(test_starvation_handoff)
{
    test_run(starve_main, (void *)1, 1, 0);
    test_run(starve_main, (void *)2, 2, 0);
}
END_TEST

/* A woken waiter that loses the race to a barging locker goes back to the FRONT of
 * the queue, ahead of waiters that came after it. One P makes the race deterministic:
 * our unlock puts W0 in runnext, and we re-lock before it runs. */
static void requeue_front_main(void *arg)
{
    GORT_FRAME();
    g_mu = calloc(1, sizeof *g_mu);
    g_norder = 0;
    atomic_store(&g_ndone, 0);
    gort_mutex_lock(g_mu);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(gort_go(fifo_locker, (void *)(intptr_t)i), 0);
        SYNC_WAIT_FOR(sync_mutex_nwaiters(g_mu) == (size_t)i + 1);
    }
    gort_mutex_unlock(g_mu);                     /* wakes W0 ... */
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0); /* ... and we barge in first */
    ck_assert_uint_eq(sync_mutex_nwaiters(g_mu), 1);
    SYNC_WAIT_FOR(sync_mutex_nwaiters(g_mu) == 2); /* W0 lost and queued again */
    gort_mutex_unlock(g_mu);
    SYNC_WAIT_FOR(atomic_load(&g_ndone) == 2);
    gort_mutex_lock(g_mu);
    ck_assert_int_eq(g_order[0], 0);
    ck_assert_int_eq(g_order[1], 1);
    gort_mutex_unlock(g_mu);
    sync_assert_no_leaks();
    free(g_mu);
}

START_TEST(test_loser_requeues_at_front)
{
    test_run(requeue_front_main, NULL, 1, 0);
}
END_TEST

/* In starvation mode an unlock hands the mutex to the oldest waiter: until it runs,
 * LOCKED is clear, yet nobody else may take the mutex. The unlock runs on the system
 * stack (outside any task), so it cannot yield to the waiter: the window stays open
 * for our trylock. */
static void *unlock_then_trylock(void *arg)
{
    gort_mutex_unlock(g_mu);
    return (void *)(intptr_t)gort_mutex_trylock(g_mu);
}

static _Atomic int g_seq;
static _Atomic int g_got[2]; /* order in which the waiter (0) and the newcomer (1) got it */

static void handoff_waiter(void *arg)
{
    GORT_FRAME();
    gort_mutex_lock(g_mu);
    atomic_store(&g_got[(intptr_t)arg], atomic_fetch_add(&g_seq, 1));
    gort_mutex_unlock(g_mu);
    atomic_fetch_add(&g_ndone, 1);
}

static void handoff_main(void *arg)
{
    GORT_FRAME();
    g_mu = calloc(1, sizeof *g_mu);
    g_norder = 0;
    atomic_store(&g_ndone, 0);
    atomic_store(&g_seq, 0);
    gort_mutex_lock(g_mu);
    ck_assert_int_eq(gort_go(handoff_waiter, (void *)0), 0);
    SYNC_WAIT_FOR(sync_mutex_nwaiters(g_mu) == 1);
    int64_t until = gort_now() + 2 * 1000 * 1000; /* make the waiter wait > 1 ms */
    while (gort_now() < until)
        ;
    gort_mutex_unlock(g_mu);
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0); /* barge (one P: it has not run) */
    SYNC_WAIT_FOR(sync_mutex_nwaiters(g_mu) == 1); /* it woke, starved, queued again */
    ck_assert(sync_mutex_is_starving(g_mu));
    int rc = (int)(intptr_t)gort_on_system_stack(unlock_then_trylock, NULL);
    ck_assert_int_eq(rc, -EBUSY);
    ck_assert_int_eq(atomic_load(&g_ndone), 0); /* handed over, but it has not run yet */
    /* A newcomer that calls lock now must queue behind it too (it may run first). */
    ck_assert_int_eq(gort_go(handoff_waiter, (void *)1), 0);
    SYNC_WAIT_FOR(atomic_load(&g_ndone) == 2);
    ck_assert_int_eq(atomic_load(&g_got[0]), 0);
    ck_assert_int_eq(atomic_load(&g_got[1]), 1);
    ck_assert_int_eq(sync_mutex_is_starving(g_mu), 0); /* last waiter: back to normal */
    ck_assert_int_eq(gort_mutex_trylock(g_mu), 0);
    gort_mutex_unlock(g_mu);
    sync_assert_no_leaks();
    free(g_mu);
}

START_TEST(test_handoff_keeps_newcomers_out)
{
    test_run(handoff_main, NULL, 1, 0);
}
END_TEST

/* --------------------------------------------------------------- misuse */

static void double_unlock_outside(void)
{
    gort_mutex_t mu = {{0}};
    gort_mutex_lock(&mu);
    gort_mutex_unlock(&mu);
    gort_mutex_unlock(&mu);
}

static void double_unlock_task(void *arg)
{
    GORT_FRAME();
    gort_mutex_t *mu = calloc(1, sizeof *mu);
    gort_mutex_lock(mu);
    gort_mutex_unlock(mu);
    gort_mutex_unlock(mu);
}

static void double_unlock_in_task(void)
{
    sync_child_run(double_unlock_task);
}

static void unlock_zero_in_task(void *arg)
{
    GORT_FRAME();
    gort_mutex_t *mu = calloc(1, sizeof *mu);
    gort_mutex_unlock(mu);
}

static void unlock_zero_child(void)
{
    sync_child_run(unlock_zero_in_task);
}

static void block_outside_task(void)
{
    gort_mutex_t mu = {{0}};
    gort_mutex_lock(&mu);
    gort_mutex_lock(&mu); /* would park, but there is no task */
}

START_TEST(test_misuse_is_fatal)
{
    sync_expect_death(double_unlock_outside, "sync: unlock of unlocked mutex");
    sync_expect_death(double_unlock_in_task, "sync: unlock of unlocked mutex");
    sync_expect_death(unlock_zero_child, "sync: unlock of unlocked mutex");
    sync_expect_death(block_outside_task, "sync: mutex lock would block outside a task");
}
END_TEST

/* ---------------------------------------------------------------- stress */

/* T tasks each add 1 to a plain counter N times under the mutex (half by lock, half
 * by trylock-and-yield), with random yields inside and outside the critical section:
 * the counter must equal T*N and nobody may ever find another task inside. */
#define STRESS_T 8
#define STRESS_N 3000
#define STRESS_ROUNDS 6

typedef struct mstress {
    gort_mutex_t mu;
    long counter;         /* mu */
    int inside;           /* mu: tasks in the critical section, must be 0 on entry */
    _Atomic int violations;
    _Atomic int done;
    uint64_t seed;
} mstress_t;

static mstress_t *g_ms;

static void stress_worker(void *arg)
{
    GORT_FRAME();
    uint64_t rng = g_ms->seed + (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < STRESS_N; i++) {
        uint64_t r = test_rand(&rng);
        if (r & 1) {
            gort_mutex_lock(&g_ms->mu);
        } else {
            while (gort_mutex_trylock(&g_ms->mu) != 0)
                gort_yield();
        }
        if (g_ms->inside++ != 0)
            atomic_fetch_add(&g_ms->violations, 1);
        long c = g_ms->counter;
        if ((r >> 1) % 8 == 0)
            gort_yield();
        g_ms->counter = c + 1;
        g_ms->inside--;
        gort_mutex_unlock(&g_ms->mu);
        if ((r >> 4) % 4 == 0)
            gort_yield();
    }
    atomic_fetch_add(&g_ms->done, 1);
}

static void stress_main(void *arg)
{
    GORT_FRAME();
    uint64_t seed = *(uint64_t *)arg;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        g_ms = calloc(1, sizeof *g_ms);
        g_ms->seed = seed + (uint64_t)round;
        for (int t = 0; t < STRESS_T; t++)
            ck_assert_int_eq(gort_go(stress_worker, (void *)(intptr_t)t), 0);
        SYNC_WAIT_FOR(atomic_load(&g_ms->done) == STRESS_T);
        gort_mutex_lock(&g_ms->mu);
        ck_assert_int_eq(g_ms->counter, (long)STRESS_T * STRESS_N);
        ck_assert_int_eq(atomic_load(&g_ms->violations), 0);
        ck_assert_uint_eq(sync_mutex_nwaiters(&g_ms->mu), 0);
        gort_mutex_unlock(&g_ms->mu);
        free(g_ms);
    }
    sync_assert_no_leaks();
}

START_TEST(test_stress_counter)
{
    uint64_t seed = test_seed("mutex_stress", 0x6d75746578ull);
    test_run(stress_main, &seed, 1, 0);
    test_run(stress_main, &seed, 2, 0);
}
END_TEST

/* ------------------------------------------------- wait record relinking */

START_TEST(test_waiter_relocate)
{
    /* What a stack mover does to a parked waiter: copy its record, then relink. */
    sync_queue_t q = {0};
    sync_waiter_t *w = calloc(4, sizeof *w);
    for (int i = 0; i < 3; i++) {
        w[i].ticket = (uint32_t)i;
        sync_queue_push(&q, &w[i], false);
    }
    for (int moved = 0; moved < 3; moved++) {
        /* move record `moved` to w[3] and back, checking the ring each time */
        sync_waiter_t *from = &w[moved];
        w[3] = *from;
        memset(from, 0xa5, sizeof *from);
        sync_waiter_relocate(from, &w[3]);
        sync_waiter_t *x = q.head;
        for (uint32_t i = 0; i < 3; i++) {
            ck_assert_uint_eq(x->ticket, i);
            ck_assert_ptr_eq(x->next->prev, x);
            ck_assert_ptr_eq(x->q, &q);
            x = x->next;
        }
        ck_assert_ptr_eq(x, q.head);
        *from = w[3];
        sync_waiter_relocate(&w[3], from);
    }
    /* a lone record points at itself */
    sync_queue_t q1 = {0};
    sync_waiter_t a;
    sync_waiter_t b;
    sync_queue_push(&q1, &a, false);
    b = a;
    sync_waiter_relocate(&a, &b);
    ck_assert_ptr_eq(q1.head, &b);
    ck_assert_ptr_eq(b.next, &b);
    ck_assert_ptr_eq(b.prev, &b);
    ck_assert_ptr_eq(sync_queue_pop(&q1), &b);
    ck_assert_ptr_null(q1.head);
    /* pop order is FIFO, push-front goes first */
    ck_assert_ptr_eq(sync_queue_pop(&q), &w[0]);
    sync_queue_push(&q, &w[0], true);
    ck_assert_ptr_eq(sync_queue_pop(&q), &w[0]);
    ck_assert_ptr_eq(sync_queue_pop(&q), &w[1]);
    ck_assert_ptr_eq(sync_queue_pop(&q), &w[2]);
    ck_assert_ptr_null(sync_queue_pop(&q));
    free(w);
}
END_TEST

static Suite *mutex_suite(void)
{
    Suite *s = suite_create("mutex");
    TCase *tc = tcase_create("mutex");
    tcase_set_timeout(tc, SYNC_TCASE_TIMEOUT);
    tcase_add_test(tc, test_zero_value_outside_runtime);
    tcase_add_test(tc, test_trylock_and_no_owner);
    tcase_add_test(tc, test_fifo_wakeup);
    tcase_add_test(tc, test_starvation_handoff);
    tcase_add_test(tc, test_loser_requeues_at_front);
    tcase_add_test(tc, test_handoff_keeps_newcomers_out);
    tcase_add_test(tc, test_misuse_is_fatal);
    tcase_add_test(tc, test_stress_counter);
    tcase_add_test(tc, test_waiter_relocate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(mutex_suite());
}
