/* tests/core/test_rwmutex.c — gort_rwmutex_t: zero value, shared readers, a waiting
 * writer stops new readers, a writer's unlock lets the waiting readers in first,
 * misuse, and a randomised readers/writers stress on 1 and 2 Ps. */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdlib.h>

#include "sync_testutil.h"

static gort_rwmutex_t *g_rw;

START_TEST(test_zero_value_outside_runtime)
{
    /* Uncontended paths need no runtime and no task. */
    struct {
        char c;
        gort_rwmutex_t rw;
    } *e = calloc(1, sizeof *e);
    ck_assert_ptr_nonnull(e);
    gort_rwmutex_rlock(&e->rw);
    gort_rwmutex_rlock(&e->rw);
    gort_rwmutex_runlock(&e->rw);
    gort_rwmutex_runlock(&e->rw);
    gort_rwmutex_lock(&e->rw);
    gort_rwmutex_unlock(&e->rw);
    gort_rwmutex_rlock(&e->rw);
    gort_rwmutex_runlock(&e->rw);
    static const gort_rwmutex_t zero;
    ck_assert_int_eq(memcmp(&e->rw, &zero, sizeof zero), 0);
    free(e);
}
END_TEST

/* ------------------------------------------------------------ shared readers */

#define NREADERS 6
static _Atomic int g_inside;
static _Atomic int g_max_inside;
static _Atomic int g_done;

static void shared_reader(void *arg)
{
    GORT_FRAME();
    gort_rwmutex_rlock(g_rw);
    int n = atomic_fetch_add(&g_inside, 1) + 1;
    int m = atomic_load(&g_max_inside);
    while (n > m && !atomic_compare_exchange_weak(&g_max_inside, &m, n))
        ;
    /* stay inside until every reader is in at once (proves they share) */
    while (atomic_load(&g_max_inside) < NREADERS)
        gort_yield();
    atomic_fetch_sub(&g_inside, 1);
    gort_rwmutex_runlock(g_rw);
    atomic_fetch_add(&g_done, 1);
}

static void shared_main(void *arg)
{
    GORT_FRAME();
    g_rw = calloc(1, sizeof *g_rw);
    atomic_store(&g_inside, 0);
    atomic_store(&g_max_inside, 0);
    atomic_store(&g_done, 0);
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_eq(gort_go(shared_reader, NULL), 0);
    SYNC_WAIT_FOR(atomic_load(&g_done) == NREADERS);
    ck_assert_int_eq(atomic_load(&g_max_inside), NREADERS);
    gort_rwmutex_lock(g_rw); /* free again */
    gort_rwmutex_unlock(g_rw);
    sync_assert_no_leaks();
    free(g_rw);
}

START_TEST(test_readers_share)
{
    test_run(shared_main, NULL, 1, 0);
    test_run(shared_main, NULL, 2, 0);
}
END_TEST

/* ---------------------------------------------------- writer preference */

static char g_log[16]; /* order of entries; written under g_log_mu */
static int g_nlog;
static gort_mutex_t g_log_mu;

static void log_event(char c)
{
    gort_mutex_lock(&g_log_mu);
    g_log[g_nlog++] = c;
    gort_mutex_unlock(&g_log_mu);
}

static void log_reset(void)
{
    memset(g_log, 0, sizeof g_log);
    g_nlog = 0;
}

static void pref_writer(void *arg)
{
    GORT_FRAME();
    gort_rwmutex_lock(g_rw);
    log_event('W');
    gort_yield(); /* readers let in early would show up here */
    gort_rwmutex_unlock(g_rw);
    atomic_fetch_add(&g_done, 1);
}

static void pref_reader(void *arg)
{
    GORT_FRAME();
    gort_rwmutex_rlock(g_rw);
    log_event('R');
    gort_yield();
    gort_rwmutex_runlock(g_rw);
    atomic_fetch_add(&g_done, 1);
}

static void writer_pref_main(void *arg)
{
    GORT_FRAME();
    g_rw = calloc(1, sizeof *g_rw);
    log_reset();
    atomic_store(&g_done, 0);
    gort_rwmutex_rlock(g_rw); /* a reader inside */
    ck_assert_int_eq(gort_go(pref_writer, NULL), 0);
    SYNC_WAIT_FOR(sync_rwmutex_nwaiters(g_rw, true) == 1); /* writer waits for us */
    ck_assert_int_eq(gort_go(pref_reader, NULL), 0);
    /* Only readers are inside, yet the new reader must queue behind the writer. */
    SYNC_WAIT_FOR(sync_rwmutex_nwaiters(g_rw, false) == 1);
    sync_yield_n(50);
    ck_assert_int_eq(g_nlog, 0);
    ck_assert_uint_eq(sync_rwmutex_nwaiters(g_rw, true), 1);
    ck_assert(sync_dump_has("rwmutex lock", g_rw));
    ck_assert(sync_dump_has("rwmutex rlock", g_rw));
    gort_rwmutex_runlock(g_rw);
    SYNC_WAIT_FOR(atomic_load(&g_done) == 2);
    gort_mutex_lock(&g_log_mu);
    ck_assert_str_eq(g_log, "WR");
    gort_mutex_unlock(&g_log_mu);
    sync_assert_no_leaks();
    free(g_rw);
}

START_TEST(test_waiting_writer_stops_new_readers)
{
    test_run(writer_pref_main, NULL, 1, 0);
    test_run(writer_pref_main, NULL, 2, 0);
}
END_TEST

static void readers_first_main(void *arg)
{
    GORT_FRAME();
    g_rw = calloc(1, sizeof *g_rw);
    log_reset();
    atomic_store(&g_done, 0);
    gort_rwmutex_lock(g_rw);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(gort_go(pref_reader, NULL), 0);
        SYNC_WAIT_FOR(sync_rwmutex_nwaiters(g_rw, false) == (size_t)i + 1);
    }
    ck_assert_int_eq(gort_go(pref_writer, NULL), 0); /* a second writer queues too */
    SYNC_WAIT_FOR(sync_rwmutex_nwaiters(g_rw, true) == 1);
    sync_yield_n(20);
    ck_assert_int_eq(g_nlog, 0);
    /* the second writer waits on the writers' inner mutex: still shown as the rwmutex */
    ck_assert(sync_dump_has("rwmutex lock", g_rw));
    gort_rwmutex_unlock(g_rw);
    SYNC_WAIT_FOR(atomic_load(&g_done) == 4);
    gort_mutex_lock(&g_log_mu);
    /* the readers that waited for our unlock go before the next writer */
    ck_assert_str_eq(g_log, "RRRW");
    gort_mutex_unlock(&g_log_mu);
    sync_assert_no_leaks();
    free(g_rw);
}

START_TEST(test_unlock_lets_waiting_readers_first)
{
    test_run(readers_first_main, NULL, 1, 0);
    test_run(readers_first_main, NULL, 2, 0);
}
END_TEST

/* ------------------------------------------------------------------ misuse */

static void runlock_unlocked(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_runlock(&rw);
}

static void runlock_write_locked(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_lock(&rw);
    gort_rwmutex_runlock(&rw);
}

static void unlock_unlocked(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_unlock(&rw);
}

static void unlock_read_locked(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_rlock(&rw);
    gort_rwmutex_unlock(&rw);
}

static void double_unlock_task(void *arg)
{
    GORT_FRAME();
    gort_rwmutex_t *rw = calloc(1, sizeof *rw);
    gort_rwmutex_lock(rw);
    gort_rwmutex_unlock(rw);
    gort_rwmutex_unlock(rw);
}

static void double_unlock_in_task(void)
{
    sync_child_run(double_unlock_task);
}

static void rlock_outside_task(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_lock(&rw);
    gort_rwmutex_rlock(&rw);
}

static void lock_outside_task(void)
{
    gort_rwmutex_t rw = {{0}};
    gort_rwmutex_rlock(&rw);
    gort_rwmutex_lock(&rw);
}

START_TEST(test_misuse_is_fatal)
{
    sync_expect_death(runlock_unlocked, "sync: runlock of unlocked rwmutex");
    sync_expect_death(runlock_write_locked, "sync: runlock of unlocked rwmutex");
    sync_expect_death(unlock_unlocked, "sync: unlock of unlocked rwmutex");
    sync_expect_death(unlock_read_locked, "sync: unlock of unlocked rwmutex");
    sync_expect_death(double_unlock_in_task, "sync: unlock of unlocked rwmutex");
    sync_expect_death(rlock_outside_task, "sync: rwmutex rlock would block outside a task");
    sync_expect_death(lock_outside_task, "sync: rwmutex lock would block outside a task");
}
END_TEST

/* ------------------------------------------------------------------ stress */

/* Readers and writers with random yields inside: a reader never sees a writer inside,
 * a writer never sees anyone inside; writers' plain counter ends at the sum. */
#define RS_READERS 6
#define RS_WRITERS 3
#define RS_ITERS 1500
#define RS_ROUNDS 6

typedef struct rstress {
    gort_rwmutex_t rw;
    _Atomic int readers_in;
    _Atomic int writers_in;
    _Atomic int violations;
    _Atomic int done;
    long counter;      /* rw (write) */
    _Atomic long reads;
    uint64_t seed;
} rstress_t;

static rstress_t *g_rs;

static void rs_reader(void *arg)
{
    GORT_FRAME();
    uint64_t rng = g_rs->seed * 31 + (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < RS_ITERS; i++) {
        uint64_t r = test_rand(&rng);
        gort_rwmutex_rlock(&g_rs->rw);
        atomic_fetch_add(&g_rs->readers_in, 1);
        if (atomic_load(&g_rs->writers_in) != 0)
            atomic_fetch_add(&g_rs->violations, 1);
        long c = g_rs->counter; /* readers may read what writers write */
        if (r % 4 == 0)
            gort_yield();
        if (g_rs->counter != c || atomic_load(&g_rs->writers_in) != 0)
            atomic_fetch_add(&g_rs->violations, 1);
        atomic_fetch_sub(&g_rs->readers_in, 1);
        gort_rwmutex_runlock(&g_rs->rw);
        atomic_fetch_add(&g_rs->reads, 1);
        if ((r >> 8) % 3 == 0)
            gort_yield();
    }
    atomic_fetch_add(&g_rs->done, 1);
}

static void rs_writer(void *arg)
{
    GORT_FRAME();
    uint64_t rng = g_rs->seed * 17 + (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < RS_ITERS; i++) {
        uint64_t r = test_rand(&rng);
        gort_rwmutex_lock(&g_rs->rw);
        if (atomic_fetch_add(&g_rs->writers_in, 1) != 0 || atomic_load(&g_rs->readers_in) != 0)
            atomic_fetch_add(&g_rs->violations, 1);
        long c = g_rs->counter;
        if (r % 4 == 0)
            gort_yield();
        g_rs->counter = c + 1;
        if (atomic_load(&g_rs->readers_in) != 0)
            atomic_fetch_add(&g_rs->violations, 1);
        atomic_fetch_sub(&g_rs->writers_in, 1);
        gort_rwmutex_unlock(&g_rs->rw);
        if ((r >> 8) % 2 == 0)
            gort_yield();
    }
    atomic_fetch_add(&g_rs->done, 1);
}

static void rs_main(void *arg)
{
    GORT_FRAME();
    uint64_t seed = *(uint64_t *)arg;
    for (int round = 0; round < RS_ROUNDS; round++) {
        g_rs = calloc(1, sizeof *g_rs);
        g_rs->seed = seed + (uint64_t)round;
        for (int i = 0; i < RS_READERS + RS_WRITERS; i++) {
            /* interleave spawns so both kinds start early */
            void (*fn)(void *) = (i % 3 == 2) ? rs_writer : rs_reader;
            ck_assert_int_eq(gort_go(fn, (void *)(intptr_t)i), 0);
        }
        SYNC_WAIT_FOR(atomic_load(&g_rs->done) == RS_READERS + RS_WRITERS);
        gort_rwmutex_lock(&g_rs->rw);
        ck_assert_int_eq(atomic_load(&g_rs->violations), 0);
        ck_assert_int_eq(g_rs->counter, (long)RS_WRITERS * RS_ITERS);
        ck_assert_int_eq(atomic_load(&g_rs->reads), (long)RS_READERS * RS_ITERS);
        gort_rwmutex_unlock(&g_rs->rw);
        ck_assert_uint_eq(sync_rwmutex_nwaiters(&g_rs->rw, true), 0);
        ck_assert_uint_eq(sync_rwmutex_nwaiters(&g_rs->rw, false), 0);
        free(g_rs);
    }
    sync_assert_no_leaks();
}

START_TEST(test_stress_readers_writers)
{
    uint64_t seed = test_seed("rwmutex_stress", 0x72776d7574ull);
    test_run(rs_main, &seed, 1, 0);
    test_run(rs_main, &seed, 2, 0);
}
END_TEST

static Suite *rwmutex_suite(void)
{
    Suite *s = suite_create("rwmutex");
    TCase *tc = tcase_create("rwmutex");
    tcase_set_timeout(tc, SYNC_TCASE_TIMEOUT);
    tcase_add_test(tc, test_zero_value_outside_runtime);
    tcase_add_test(tc, test_readers_share);
    tcase_add_test(tc, test_waiting_writer_stops_new_readers);
    tcase_add_test(tc, test_unlock_lets_waiting_readers_first);
    tcase_add_test(tc, test_misuse_is_fatal);
    tcase_add_test(tc, test_stress_readers_writers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_main(rwmutex_suite());
}
