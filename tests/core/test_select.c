/* tests/core/test_select.c — gort_select: bad input, timeout 0 never blocks, NULL-channel
 * cases never fire, ready cases (recv, send, to/from parked peers, closed), blocking
 * woken by a sender / a receiver / close, timeouts, the same channel in several cases,
 * uniform choice among ready cases (chi-square), no cases, big case arrays, -EPERM
 * outside a task, wait reasons, and timeout-vs-wake races on 1 and 2 Ps. */
/* In the TSan set: the crashes it showed there were the SIGURG handler rewriting TSan's
 * deferred (stale) copy of the signal context, fixed in preempt/signal.c. The stress
 * loops are shorter under TSan (TEST_ITERS). */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <pthread.h>
#include <stdint.h>

#include "chan_testutil.h"

#define MS 1000000LL

/* ------------------------------------------------------------- bad input */

static void badarg_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 1);
    gort_chan_t *z = gort_chan_make(0, 1);
    int64_t v = 1;
    gort_case_t cs[2] = {{c, GORT_RECV, &v, 99}, {c, GORT_SEND, &v, 99}};
    ck_assert_int_eq(gort_select(cs, 65537, 0), -EINVAL);
    ck_assert_int_eq(gort_select(NULL, 1, 0), -EINVAL);
    cs[1].op = 0;
    ck_assert_int_eq(gort_select(cs, 2, 0), -EINVAL);
    cs[1].op = 3;
    ck_assert_int_eq(gort_select(cs, 2, -1), -EINVAL);
    cs[1].op = GORT_SEND;
    cs[1].elem = NULL; /* sending nothing on an 8-byte channel */
    ck_assert_int_eq(gort_select(cs, 2, -1), -EINVAL);
    cs[1].chan = NULL; /* ... is fine on a case that never fires */
    ck_assert_int_eq(gort_select(cs, 2, 0), -ETIMEDOUT);
    cs[1].chan = z; /* ... and on a zero-size channel */
    ck_assert_int_eq(gort_select(cs, 2, 0), 1);
    ck_assert_int_eq(cs[1].result, 0);
    ck_assert_uint_eq(gort_chan_len(z), 1);
    ck_assert_int_eq(cs[0].result, 99); /* only the case that proceeded is written */
    ck_assert_uint_eq(gort_chan_len(c), 0); /* the failed calls changed nothing */
    ck_assert_int_eq(gort_chan_free(c), 0);
    ck_assert_int_eq(gort_chan_free(z), 0);
    chan_assert_no_leaks();
}

START_TEST(test_bad_args) { test_run(badarg_main, NULL, 1, 0); }
END_TEST

/* --------------------------------------------------- timeout 0, no blocking */

static _Atomic int nb_ran;

static void nb_task(void *arg)
{
    GORT_FRAME();
    atomic_store(&nb_ran, 1);
}

static void nonblock_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *a = gort_chan_make(sizeof(int64_t), 0);
    gort_chan_t *b = gort_chan_make(sizeof(int64_t), 1);
    int64_t v = 5, full = 6;
    ck_assert_int_eq(gort_chan_send(b, &full), 0);
    atomic_store(&nb_ran, 0);
    CHAN_GO(nb_task, NULL); /* would run if select switched (1 P, no preemption) */
    gort_case_t cs[3] = {{a, GORT_RECV, &v, 0}, {a, GORT_SEND, &v, 0}, {b, GORT_SEND, &v, 0}};
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(gort_select(cs, 3, 0), -ETIMEDOUT);
    ck_assert_int_eq(gort_select(NULL, 0, 0), -ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&nb_ran), 0);
    CHAN_WAIT_FOR(atomic_load(&nb_ran) == 1);
    ck_assert_int_eq(v, 5);
    ck_assert_uint_eq(gort_chan_len(b), 1);
    ck_assert_uint_eq(chan_waiters_count(a, true) + chan_waiters_count(a, false), 0);
    ck_assert_int_eq(gort_chan_free(a), 0);
    ck_assert_int_eq(gort_chan_free(b), 0);
    chan_assert_no_leaks();
}

START_TEST(test_timeout_zero_never_blocks)
{
    gort_config_t cfg = {.procs = 1, .preempt = GORT_PREEMPT_OFF};
    test_run_cfg(nonblock_main, NULL, &cfg, 0);
}
END_TEST

/* ------------------------------------------------------ NULL channel cases */

static void nullchan_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 1);
    int64_t v = 3, out = 0;
    gort_case_t cs[3] = {{NULL, GORT_RECV, &out, 0}, {NULL, GORT_SEND, &v, 0},
                         {c, GORT_RECV, &out, 0}};
    for (int i = 0; i < 500; i++) {
        ck_assert_int_eq(gort_chan_try_send(c, &v), 0);
        ck_assert_int_eq(gort_select(cs, 3, -1), 2);
        ck_assert_int_eq(out, 3);
    }
    int64_t t0 = gort_now();
    ck_assert_int_eq(gort_select(cs, 2, 2 * MS), -ETIMEDOUT);
    ck_assert_int_ge(gort_now() - t0, 2 * MS); /* never early */
    ck_assert_int_eq(gort_chan_free(c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_null_chan_never_fires) { CHAN_RUN_1_2(nullchan_main, NULL); }
END_TEST

/* ------------------------------------------------------------ ready cases */

static gort_chan_t *rd_peer_c;
static _Atomic int64_t rd_peer_got = -1;

static void rd_receiver(void *arg)
{
    GORT_FRAME();
    int64_t v = -2;
    int r = gort_chan_recv(rd_peer_c, &v);
    atomic_store(&rd_peer_got, r == 0 ? v : -100 + r);
}

static void rd_sender(void *arg)
{
    GORT_FRAME();
    int64_t v = 4242;
    int r = gort_chan_send(rd_peer_c, &v);
    atomic_store(&rd_peer_got, r == 0 ? 1 : -100 + r);
}

static void ready_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *b = gort_chan_make(sizeof(int64_t), 2);
    gort_chan_t *u = gort_chan_make(sizeof(int64_t), 0);
    int64_t in = 11, out = 0;

    /* recv from a buffer */
    ck_assert_int_eq(gort_chan_send(b, &in), 0);
    gort_case_t cs[2] = {{u, GORT_RECV, &out, 7}, {b, GORT_RECV, &out, 7}};
    ck_assert_int_eq(gort_select(cs, 2, -1), 1);
    ck_assert_int_eq(cs[1].result, 0);
    ck_assert_int_eq(out, 11);

    /* recv with NULL elem drops the value */
    ck_assert_int_eq(gort_chan_send(b, &in), 0);
    cs[1].elem = NULL;
    ck_assert_int_eq(gort_select(cs, 2, 0), 1);
    ck_assert_uint_eq(gort_chan_len(b), 0);

    /* send into a buffer; a full buffer is not ready */
    in = 12;
    gort_case_t ss[2] = {{u, GORT_SEND, &in, 7}, {b, GORT_SEND, &in, 7}};
    ck_assert_int_eq(gort_select(ss, 2, -1), 1);
    ck_assert_int_eq(gort_select(ss, 2, -1), 1);
    ck_assert_int_eq(gort_select(ss, 2, 0), -ETIMEDOUT);
    ck_assert_uint_eq(gort_chan_len(b), 2);

    /* mixed: the full send case waits, the recv case is ready */
    gort_case_t mx[2] = {{b, GORT_SEND, &in, 7}, {b, GORT_RECV, &out, 7}};
    ck_assert_int_eq(gort_select(mx, 2, -1), 1);
    ck_assert_int_eq(out, 12);

    /* send to a parked receiver: straight into its destination */
    rd_peer_c = u;
    atomic_store(&rd_peer_got, -1);
    CHAN_GO(rd_receiver, NULL);
    CHAN_WAIT_QUEUED(u, false, 1);
    in = 777;
    ck_assert_int_eq(gort_select(ss, 1, 0), 0);
    ck_assert_int_eq(ss[0].result, 0);
    CHAN_WAIT_FOR(atomic_load(&rd_peer_got) != -1);
    ck_assert_int_eq(atomic_load(&rd_peer_got), 777);

    /* recv from a parked sender */
    atomic_store(&rd_peer_got, -1);
    CHAN_GO(rd_sender, NULL);
    CHAN_WAIT_QUEUED(u, true, 1);
    out = 0;
    cs[0].elem = &out;
    ck_assert_int_eq(gort_select(cs, 1, 0), 0);
    ck_assert_int_eq(out, 4242);
    CHAN_WAIT_FOR(atomic_load(&rd_peer_got) != -1);
    ck_assert_int_eq(atomic_load(&rd_peer_got), 1);

    /* closed: a recv case proceeds with -EPIPE once drained, a send case at once */
    ck_assert_int_eq(gort_chan_close(b), 0);
    cs[1].elem = &out;
    ck_assert_int_eq(gort_select(cs, 2, -1), 1);
    ck_assert_int_eq(cs[1].result, 0); /* the buffered 12 first */
    ck_assert_int_eq(out, 12);
    ck_assert_int_eq(gort_select(cs, 2, -1), 1);
    ck_assert_int_eq(cs[1].result, -EPIPE);
    ss[1].result = 7;
    ck_assert_int_eq(gort_select(ss, 2, 0), 1);
    ck_assert_int_eq(ss[1].result, -EPIPE);

    ck_assert_int_eq(gort_chan_free(b), 0);
    ck_assert_int_eq(gort_chan_free(u), 0);
    chan_assert_no_leaks();
}

START_TEST(test_ready_cases) { CHAN_RUN_1_2(ready_main, NULL); }
END_TEST

/* ------------------------------------------------------------- blocking */

static gort_chan_t *bl_a, *bl_b;
static _Atomic int bl_step;

static void bl_helper(void *arg)
{
    GORT_FRAME();
    int what = (int)(intptr_t)arg;
    while (atomic_load(&bl_step) == 0)
        gort_yield();
    int64_t v = 99;
    if (what == 0)
        gort_chan_send(bl_b, &v);
    else if (what == 1)
        gort_chan_recv(bl_b, &v);
    else
        gort_chan_close(bl_b);
}

static void blocking_main(void *arg)
{
    GORT_FRAME();
    bl_a = gort_chan_make(sizeof(int64_t), 0);
    bl_b = gort_chan_make(sizeof(int64_t), 0);
    for (int what = 0; what < 3; what++) {
        int64_t out = 0, in = 5;
        atomic_store(&bl_step, 0);
        CHAN_GO(bl_helper, (void *)(intptr_t)what);
        gort_case_t cs[2] = {{bl_a, GORT_RECV, &out, 7},
                             {bl_b, what == 1 ? GORT_SEND : GORT_RECV,
                              what == 1 ? &in : &out, 7}};
        atomic_store(&bl_step, 1);
        int r = gort_select(cs, 2, what == 2 ? 10000 * MS : -1);
        ck_assert_int_eq(r, 1);
        ck_assert_int_eq(cs[0].result, 7);
        if (what == 0) {
            ck_assert_int_eq(cs[1].result, 0);
            ck_assert_int_eq(out, 99);
        } else if (what == 1) {
            ck_assert_int_eq(cs[1].result, 0);
        } else {
            ck_assert_int_eq(cs[1].result, -EPIPE);
        }
        /* pass 3 took our record off the other channel */
        ck_assert_uint_eq(chan_waiters_count(bl_a, false), 0);
        ck_assert_uint_eq(chan_waiters_count(bl_b, false) + chan_waiters_count(bl_b, true), 0);
    }
    int64_t v = 1;
    ck_assert_int_eq(gort_chan_try_send(bl_a, &v), -EAGAIN); /* no stale receiver */
    ck_assert_int_eq(gort_chan_free(bl_a), 0);
    ck_assert_int_eq(gort_chan_free(bl_b), 0);
    chan_assert_no_leaks();
}

START_TEST(test_blocking_wakeups) { CHAN_RUN_1_2(blocking_main, NULL); }
END_TEST

/* Tasks woken by a close never touch the closed channel again: it may be freed at once
 * (under ASan a touch would be a use-after-free report). */
#define CF_K 16
static gort_chan_t *cf_c, *cf_other;
static _Atomic int cf_ok;
static _Atomic int cf_done;

static void cf_task(void *arg)
{
    GORT_FRAME();
    int64_t out = -1;
    gort_case_t cs[3] = {{cf_other, GORT_RECV, &out, 7}, {cf_c, GORT_RECV, &out, 7},
                         {cf_c, GORT_RECV, NULL, 7}};
    int r = gort_select(cs, 3, -1);
    if ((r == 1 || r == 2) && cs[r].result == -EPIPE && cs[0].result == 7 && out == -1)
        atomic_fetch_add(&cf_ok, 1);
    atomic_fetch_add(&cf_done, 1);
}

static void closefree_main(void *arg)
{
    GORT_FRAME();
    cf_c = gort_chan_make(sizeof(int64_t), 0);
    cf_other = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&cf_ok, 0);
    atomic_store(&cf_done, 0);
    for (int i = 0; i < CF_K; i++)
        CHAN_GO(cf_task, NULL);
    CHAN_WAIT_QUEUED(cf_c, false, 2 * CF_K);
    ck_assert_int_eq(gort_chan_free(cf_c), -EBUSY);
    ck_assert_int_eq(gort_chan_close(cf_c), 0);
    ck_assert_int_eq(gort_chan_free(cf_c), 0); /* before the woken tasks ran */
    CHAN_WAIT_FOR(atomic_load(&cf_done) == CF_K);
    ck_assert_int_eq(atomic_load(&cf_ok), CF_K);
    ck_assert_uint_eq(chan_waiters_count(cf_other, false), 0);
    ck_assert_int_eq(gort_chan_free(cf_other), 0);
    chan_assert_no_leaks();
}

START_TEST(test_close_then_free) { CHAN_RUN_1_2(closefree_main, NULL); }
END_TEST

static void timeout_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *a = gort_chan_make(sizeof(int64_t), 0);
    gort_chan_t *b = gort_chan_make(sizeof(int64_t), 1);
    int64_t out = 0, in = 1, full = 2;
    ck_assert_int_eq(gort_chan_send(b, &full), 0);
    gort_case_t cs[3] = {{a, GORT_RECV, &out, 7}, {b, GORT_SEND, &in, 7},
                         {a, GORT_SEND, &in, 7}};
    for (int i = 0; i < 5; i++) {
        int64_t t0 = gort_now();
        ck_assert_int_eq(gort_select(cs, 3, 3 * MS), -ETIMEDOUT);
        ck_assert_int_ge(gort_now() - t0, 3 * MS);
        ck_assert_int_eq(cs[0].result + cs[1].result + cs[2].result, 21);
        ck_assert_uint_eq(chan_waiters_count(a, true) + chan_waiters_count(a, false), 0);
        ck_assert_uint_eq(chan_waiters_count(b, true), 0);
    }
    /* n == 0 with a timeout is a sleep */
    int64_t t0 = gort_now();
    ck_assert_int_eq(gort_select(NULL, 0, 2 * MS), -ETIMEDOUT);
    ck_assert_int_ge(gort_now() - t0, 2 * MS);
    ck_assert_int_eq(gort_chan_free(a), 0);
    ck_assert_int_eq(gort_chan_free(b), 0);
    chan_assert_no_leaks();
}

START_TEST(test_timeout) { CHAN_RUN_1_2(timeout_main, NULL); }
END_TEST

/* ------------------------------------------ the same channel in several cases */

static gort_chan_t *sc_c;
static _Atomic int sc_done;

static void sc_sender(void *arg)
{
    GORT_FRAME();
    int64_t v = 31;
    gort_chan_send(sc_c, &v);
    atomic_store(&sc_done, 1);
}

static void sc_receiver(void *arg)
{
    GORT_FRAME();
    int64_t v;
    gort_chan_recv(sc_c, &v);
    atomic_store(&sc_done, v == 8 ? 1 : 2);
}

static void samechan_main(void *arg)
{
    GORT_FRAME();
    sc_c = gort_chan_make(sizeof(int64_t), 0);
    int64_t o0 = 0, o1 = 0, in = 8;
    gort_case_t cs[3] = {{sc_c, GORT_RECV, &o0, 7}, {sc_c, GORT_RECV, &o1, 7},
                         {sc_c, GORT_SEND, &in, 7}};
    int hits[3] = {0, 0, 0};
    for (int round = 0; round < 200; round++) {
        /* a plain sender: exactly one of the two recv cases takes the value */
        atomic_store(&sc_done, 0);
        o0 = o1 = 0;
        cs[0].result = cs[1].result = cs[2].result = 7;
        CHAN_GO(sc_sender, NULL);
        int r = gort_select(cs, 3, -1);
        ck_assert(r == 0 || r == 1);
        ck_assert_int_eq(r == 0 ? o0 : o1, 31);
        ck_assert_int_eq(r == 0 ? o1 : o0, 0);
        ck_assert_int_eq(cs[r].result, 0);
        ck_assert_int_eq(cs[1 - r].result + cs[2].result, 14);
        hits[r]++;
        CHAN_WAIT_FOR(atomic_load(&sc_done) == 1);
        /* a plain receiver: the send case fires */
        atomic_store(&sc_done, 0);
        CHAN_GO(sc_receiver, NULL);
        r = gort_select(cs, 3, -1);
        ck_assert_int_eq(r, 2);
        hits[2]++;
        CHAN_WAIT_FOR(atomic_load(&sc_done) != 0);
        ck_assert_int_eq(atomic_load(&sc_done), 1);
        ck_assert_uint_eq(chan_waiters_count(sc_c, true) + chan_waiters_count(sc_c, false), 0);
    }
    /* the sender may arrive before the select parks (then pass 1 picks at random) or
     * after (then the first queued case in address order... both recv cases are on one
     * channel, queued in random relative order): both must happen */
    ck_assert_int_gt(hits[0], 0);
    ck_assert_int_gt(hits[1], 0);
    ck_assert_int_eq(gort_chan_free(sc_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_same_channel_cases) { CHAN_RUN_1_2(samechan_main, NULL); }
END_TEST

/* ----------------------------------------------- uniform among ready cases */

/* Pearson's chi-square of counts against a uniform expectation. */
static double chi_square(const int *counts, int k, int total)
{
    double e = (double)total / k, x = 0;
    for (int i = 0; i < k; i++)
        x += (counts[i] - e) * (counts[i] - e) / e;
    return x;
}

#define UNI_TRIALS TEST_ITERS(40000, 8000)

static void uniform_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = gort_chan_make(sizeof(int64_t), 1);
    int64_t v = 1, out;
    gort_case_t cs[5];
    int counts[5];

    /* four ready recv cases; refill the one that fired */
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(gort_chan_send(c[i], &v), 0);
        cs[i] = (gort_case_t){c[i], GORT_RECV, &out, 0};
    }
    memset(counts, 0, sizeof counts);
    for (int t = 0; t < UNI_TRIALS; t++) {
        int r = gort_select(cs, 4, 0);
        ck_assert(r >= 0 && r < 4);
        counts[r]++;
        ck_assert_int_eq(gort_chan_send(c[r], &v), 0);
    }
    /* 3 degrees of freedom: P(chi2 > 60) ~ 6e-13 for a uniform choice; a fixed or
     * first-ready choice gives ~120000 */
    double x = chi_square(counts, 4, UNI_TRIALS);
    ck_assert_msg(x < 60, "chi-square %.1f: %d %d %d %d", x, counts[0], counts[1],
                  counts[2], counts[3]);

    /* only the ready ones: cases 1 and 3 ready (c[1], c[3] full; 0 and 2 recv empty) */
    gort_chan_t *e0 = gort_chan_make(sizeof(int64_t), 1), *e2 = gort_chan_make(sizeof(int64_t), 1);
    cs[0].chan = e0;
    cs[2].chan = e2;
    memset(counts, 0, sizeof counts);
    for (int t = 0; t < UNI_TRIALS / 2; t++) {
        int r = gort_select(cs, 4, 0);
        ck_assert(r == 1 || r == 3);
        counts[r]++;
        ck_assert_int_eq(gort_chan_send(c[r], &v), 0);
    }
    int two[2] = {counts[1], counts[3]};
    x = chi_square(two, 2, UNI_TRIALS / 2);
    ck_assert_msg(x < 55, "chi-square %.1f: %d %d", x, two[0], two[1]);

    /* the same channel in three cases plus a send case: all four ready, uniform */
    int64_t sv = 2;
    cs[0] = (gort_case_t){c[0], GORT_RECV, &out, 0};
    cs[1] = (gort_case_t){c[0], GORT_RECV, &out, 0};
    cs[2] = (gort_case_t){c[0], GORT_RECV, &out, 0};
    cs[3] = (gort_case_t){e0, GORT_SEND, &sv, 0};
    cs[4] = (gort_case_t){NULL, GORT_RECV, &out, 0};
    memset(counts, 0, sizeof counts);
    for (int t = 0; t < UNI_TRIALS; t++) {
        int r = gort_select(cs, 5, 0);
        ck_assert(r >= 0 && r < 4);
        counts[r]++;
        if (r < 3)
            ck_assert_int_eq(gort_chan_send(c[0], &v), 0);
        else
            ck_assert_int_eq(gort_chan_recv(e0, &out), 0);
    }
    x = chi_square(counts, 4, UNI_TRIALS);
    ck_assert_msg(x < 60, "chi-square %.1f: %d %d %d %d", x, counts[0], counts[1],
                  counts[2], counts[3]);

    for (int i = 0; i < 4; i++) {
        while (gort_chan_try_recv(c[i], NULL) == 0) {
        }
        ck_assert_int_eq(gort_chan_free(c[i]), 0);
    }
    ck_assert_int_eq(gort_chan_free(e0), 0);
    ck_assert_int_eq(gort_chan_free(e2), 0);
    chan_assert_no_leaks();
}

START_TEST(test_uniform_choice) { test_run(uniform_main, NULL, 1, 0); }
END_TEST

/* ----------------------------------------------------------------- no cases */

static g_t *_Atomic nc_g;

static void nc_task(void *arg)
{
    GORT_FRAME();
    atomic_store(&nc_g, g_self());
    gort_case_t cs[2] = {{NULL, GORT_RECV, NULL, 0}, {NULL, GORT_SEND, NULL, 0}};
    if (arg)
        gort_select(cs, 2, -1); /* only NULL channels: blocks forever too */
    else
        gort_select(NULL, 0, -1);
    atomic_store(&nc_g, NULL); /* never reached */
}

static void nocases_main(void *arg)
{
    GORT_FRAME();
    atomic_store(&nc_g, NULL);
    CHAN_GO(nc_task, arg);
    CHAN_WAIT_FOR(atomic_load(&nc_g) != NULL &&
                  atomic_load(&atomic_load(&nc_g)->status) == G_WAITING);
    chan_yield_n(100);
    g_t *g = atomic_load(&nc_g);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(atomic_load(&g->status), G_WAITING);
#ifndef GORT_TSAN /* g_park writes the reason before its relaxed status store */
    ck_assert_int_eq(g->wait_reason, arg ? WAIT_SELECT : WAIT_SELECT_NO_CASES);
#endif
    gort_leak_t leaks[4];
    int n = gort_leaks(leaks, 4);
    ck_assert_msg(n == 1 || n == -ENOSYS, "gort_leaks: %d", n);
    /* main returns: the blocked task is discarded, gort_run returns 0 */
}

START_TEST(test_no_cases_blocks_forever)
{
    test_run(nocases_main, NULL, 1, 0);
    test_run(nocases_main, NULL, 2, 0);
    test_run(nocases_main, (void *)1, 2, 0);
}
END_TEST

/* ------------------------------------------------------------ many cases */

static gort_chan_t *mc_chans[100];
static _Atomic int mc_target = -1;

static void mc_sender(void *arg)
{
    GORT_FRAME();
    int t = atomic_load(&mc_target);
    int64_t v = 1000 + t;
    gort_chan_send(mc_chans[t], &v);
}

static void many_main(void *arg)
{
    GORT_FRAME();
    uint64_t rng = *(uint64_t *)arg;
    enum { N = 100 };
    static gort_case_t cs[N];
    static int64_t outs[N];
    for (int i = 0; i < N; i++) {
        mc_chans[i] = gort_chan_make(sizeof(int64_t), 0);
        cs[i] = (gort_case_t){mc_chans[i], GORT_RECV, &outs[i], 0};
    }
    for (int round = 0; round < 50; round++) {
        int t = (int)(test_rand(&rng) % N);
        atomic_store(&mc_target, t);
        CHAN_GO(mc_sender, NULL);
        memset(outs, 0, sizeof outs);
        ck_assert_int_eq(gort_select(cs, N, -1), t);
        ck_assert_int_eq(outs[t], 1000 + t);
        for (int i = 0; i < N; i++)
            ck_assert_uint_eq(chan_waiters_count(mc_chans[i], false), 0);
    }
    ck_assert_int_eq(gort_select(cs, N, 0), -ETIMEDOUT);

    /* the largest select: 65536 cases, one of them ready */
    size_t big = 65536;
    gort_case_t *bc = calloc(big, sizeof *bc);
    ck_assert_ptr_nonnull(bc);
    gort_chan_t *b = gort_chan_make(sizeof(int64_t), 1);
    /* static: the heap array points at it, and a stack object's address must not be
     * stored outside the stack (the stack may move at any runtime call) */
    static int64_t out;
    int64_t v = 5;
    out = 0;
    ck_assert_int_eq(gort_chan_send(b, &v), 0);
    for (size_t i = 0; i < big; i++)
        bc[i] = (gort_case_t){i % 3 ? mc_chans[i % N] : NULL, GORT_RECV, &out, 0};
    bc[big - 1].chan = b;
    ck_assert_int_eq(gort_select(bc, big, -1), (int)(big - 1));
    ck_assert_int_eq(out, 5);
    ck_assert_int_eq(gort_select(bc, big, 0), -ETIMEDOUT);
    ck_assert_int_eq(gort_select(bc, big + 1, 0), -EINVAL);
    free(bc);
    ck_assert_int_eq(gort_chan_free(b), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(gort_chan_free(mc_chans[i]), 0);
    chan_assert_no_leaks();
}

START_TEST(test_many_cases)
{
    uint64_t seed = test_seed("many_cases", 31);
    test_run(many_main, &seed, 1, 0);
    test_run(many_main, &seed, 2, 0);
}
END_TEST

/* ----------------------------------------------------- outside a task */

struct foreign {
    gort_chan_t *empty;
    gort_chan_t *ready;
    int rc[4];
};

static void *foreign_ops(void *arg)
{
    struct foreign *f = arg;
    int64_t out;
    gort_case_t cs[1] = {{f->empty, GORT_RECV, &out, 0}};
    gort_case_t rs[2] = {{f->empty, GORT_RECV, &out, 0}, {f->ready, GORT_RECV, &out, 0}};
    f->rc[0] = gort_select(cs, 1, -1);      /* would block: -EPERM */
    f->rc[1] = gort_select(cs, 1, 5 * MS);  /* would block: -EPERM */
    f->rc[2] = gort_select(cs, 1, 0);       /* never blocks: -ETIMEDOUT */
    f->rc[3] = gort_select(rs, 2, -1);      /* ready: proceeds */
    return NULL;
}

static void foreign_main(void *arg)
{
    GORT_FRAME();
    static struct foreign f;
    f.empty = gort_chan_make(sizeof(int64_t), 0);
    f.ready = gort_chan_make(sizeof(int64_t), 1);
    int64_t v = 1;
    ck_assert_int_eq(gort_chan_send(f.ready, &v), 0);
    if (arg) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, foreign_ops, &f), 0);
        pthread_join(t, NULL); /* blocks this M: the thread needs no runtime help */
    } else {
        gort_on_system_stack(foreign_ops, &f);
    }
    ck_assert_int_eq(f.rc[0], -EPERM);
    ck_assert_int_eq(f.rc[1], -EPERM);
    ck_assert_int_eq(f.rc[2], -ETIMEDOUT);
    ck_assert_int_eq(f.rc[3], 1);
    ck_assert_uint_eq(chan_waiters_count(f.empty, false), 0);
    ck_assert_int_eq(gort_chan_free(f.empty), 0);
    ck_assert_int_eq(gort_chan_free(f.ready), 0);
    chan_assert_no_leaks();
}

START_TEST(test_outside_task)
{
    test_run(foreign_main, (void *)1, 1, 0);
    test_run(foreign_main, NULL, 1, 0);
}
END_TEST

/* ------------------------------------------------------------ wait reason */

static gort_chan_t *wr_c;
static g_t *_Atomic wr_g;
/* where the case array lies, as its distance below the top of the task's stack: the
 * stack may move at the select's entry (stackmove=1 moves it at every runtime call),
 * and a move keeps every distance to the top */
static _Atomic uintptr_t wr_cases_off;
static _Atomic int wr_rc = 100;

static void wr_task(void *arg)
{
    GORT_FRAME();
    int64_t out;
    gort_case_t cs[2] = {{wr_c, GORT_RECV, &out, 0}, {NULL, GORT_SEND, &out, 0}};
    atomic_store(&wr_cases_off, g_self()->stack_hi - (uintptr_t)cs);
    atomic_store(&wr_g, g_self());
    atomic_store(&wr_rc, gort_select(cs, 2, -1));
}

static void waitreason_main(void *arg)
{
    GORT_FRAME();
    wr_c = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&wr_g, NULL);
    atomic_store(&wr_rc, 100);
    CHAN_GO(wr_task, NULL);
    CHAN_WAIT_QUEUED(wr_c, false, 1);
    g_t *g = atomic_load(&wr_g);
    CHAN_WAIT_FOR(atomic_load(&g->status) == G_WAITING);
#ifndef GORT_TSAN /* the select parks with its own lock, not wr_c's: a benign race */
    chan_yield_n(10);
    ck_assert_int_eq(g->wait_reason, WAIT_SELECT);
    ck_assert_uint_eq(g->stack_hi - (uintptr_t)g->wait_obj, atomic_load(&wr_cases_off));
#endif
    int64_t v = 1;
    ck_assert_int_eq(gort_chan_send(wr_c, &v), 0);
    CHAN_WAIT_FOR(atomic_load(&wr_rc) != 100);
    ck_assert_int_eq(atomic_load(&wr_rc), 0);
    ck_assert_int_eq(gort_chan_free(wr_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_wait_reason) { CHAN_RUN_1_2(waitreason_main, NULL); }
END_TEST

/* --------------------------------------- timeouts racing with wake-ups */

#define RACE_N TEST_ITERS(3000, 500)
static gort_chan_t *ra_c;
static uint64_t ra_seed;
static _Atomic int ra_sent;

/* Sends RACE_N values with try_send (so a value is sent only if a receiver is
 * parked right now: exactly the moment the receiver's timer may fire too). */
static void ra_sender(void *arg)
{
    GORT_FRAME();
    uint64_t rng = ra_seed;
    int64_t i = 0;
    while (i < RACE_N) {
        int r = gort_chan_try_send(ra_c, &i);
        if (r == 0) {
            i++;
            atomic_store(&ra_sent, (int)i);
        } else if (r != -EAGAIN) {
            break;
        }
        if (test_rand(&rng) & 1)
            gort_yield();
    }
}

static void race_main(void *arg)
{
    GORT_FRAME();
    ra_c = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&ra_sent, 0);
    CHAN_GO(ra_sender, NULL);
    uint64_t rng = ra_seed ^ 99;
    int64_t expect = 0, out = -1;
    int timeouts = 0;
    gort_case_t cs[1] = {{ra_c, GORT_RECV, &out, 0}};
    while (expect < RACE_N) {
        int64_t to = (int64_t)(test_rand(&rng) % 30000) + 1; /* 1 ns .. 30 us */
        int r = gort_select(cs, 1, to);
        if (r == -ETIMEDOUT) {
            timeouts++;
            continue;
        }
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(out, expect); /* nothing lost, nothing twice */
        expect++;
    }
    CHAN_WAIT_FOR(atomic_load(&ra_sent) == RACE_N);
    ck_assert_int_eq(gort_chan_try_recv(ra_c, NULL), -EAGAIN);
    ck_assert_uint_eq(chan_waiters_count(ra_c, false), 0);
    ck_assert_int_eq(gort_chan_free(ra_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_timeout_races)
{
    ra_seed = test_seed("timeout_races", 41);
    CHAN_RUN_1_2(race_main, NULL);
}
END_TEST

/* ------------------------------------------------------ select vs select */

#define SS_N TEST_ITERS(20000, 2000)
static gort_chan_t *ss_a, *ss_b;
static uint64_t ss_seed;
static _Atomic int ss_bad;

/* Sends 0..SS_N-1, each through a select over ss_a and ss_b (both unbuffered), so the
 * peer is often another select. */
static void ss_sender(void *arg)
{
    GORT_FRAME();
    uint64_t rng = ss_seed;
    for (int64_t i = 0; i < SS_N; i++) {
        gort_case_t cs[2] = {{ss_a, GORT_SEND, &i, 0}, {ss_b, GORT_SEND, &i, 0}};
        if (test_rand(&rng) & 1)
            gort_yield();
        int r = gort_select(cs, 2, -1);
        if (r < 0 || cs[r].result != 0)
            atomic_fetch_add(&ss_bad, 1);
    }
    gort_chan_close(ss_a);
    gort_chan_close(ss_b);
}

static void selsel_main(void *arg)
{
    GORT_FRAME();
    ss_a = gort_chan_make(sizeof(int64_t), 0);
    ss_b = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&ss_bad, 0);
    CHAN_GO(ss_sender, NULL);
    uint64_t rng = ss_seed ^ 5;
    int64_t out = -1, expect = 0;
    int closed = 0;
    gort_case_t cs[2] = {{ss_a, GORT_RECV, &out, 0}, {ss_b, GORT_RECV, &out, 0}};
    while (closed < 2) {
        if (test_rand(&rng) & 1)
            gort_yield();
        int r = gort_select(cs, 2, -1);
        ck_assert(r == 0 || r == 1);
        if (cs[r].result == -EPIPE) {
            cs[r].chan = NULL;
            closed++;
            continue;
        }
        ck_assert_int_eq(out, expect);
        expect++;
    }
    ck_assert_int_eq(expect, SS_N);
    ck_assert_int_eq(atomic_load(&ss_bad), 0);
    ck_assert_int_eq(gort_chan_free(ss_a), 0);
    ck_assert_int_eq(gort_chan_free(ss_b), 0);
    chan_assert_no_leaks();
}

START_TEST(test_select_vs_select)
{
    ss_seed = test_seed("select_vs_select", 51);
    CHAN_RUN_1_2(selsel_main, NULL);
}
END_TEST

static Suite *select_suite(void)
{
    Suite *s = suite_create("select");
    TCase *tc = tcase_create("select");
    tcase_set_timeout(tc, CHAN_TCASE_TIMEOUT);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_timeout_zero_never_blocks);
    tcase_add_test(tc, test_null_chan_never_fires);
    tcase_add_test(tc, test_ready_cases);
    tcase_add_test(tc, test_blocking_wakeups);
    tcase_add_test(tc, test_close_then_free);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_same_channel_cases);
    tcase_add_test(tc, test_uniform_choice);
    tcase_add_test(tc, test_no_cases_blocks_forever);
    tcase_add_test(tc, test_many_cases);
    tcase_add_test(tc, test_outside_task);
    tcase_add_test(tc, test_wait_reason);
    tcase_add_test(tc, test_timeout_races);
    tcase_add_test(tc, test_select_vs_select);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(select_suite()); }
