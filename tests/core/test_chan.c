/* tests/core/test_chan.c — channels: make/len/cap, bad arguments, unbuffered rendezvous,
 * buffered FIFO, zero-size elements, close (send -EPIPE, double close, wakes every
 * receiver and sender, receivers drain first), FIFO service of waiters, dropped values,
 * -EPERM outside a task, free -EBUSY, wait reasons, ping-pong hand-off, and a
 * randomised many-to-many stress on 1 and 2 Ps. */
/* In the TSan set: the crashes it showed there were the SIGURG handler rewriting TSan's
 * deferred (stale) copy of the signal context, fixed in preempt/signal.c. The stress
 * loops are shorter under TSan (TEST_ITERS). */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <pthread.h>
#include <stdint.h>

#include "chan_testutil.h"

/* ------------------------------------------------------------- make, len, cap */

static void make_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 4);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(gort_chan_cap(c), 4);
    ck_assert_uint_eq(gort_chan_len(c), 0);
    for (int64_t v = 1; v <= 3; v++)
        ck_assert_int_eq(gort_chan_send(c, &v), 0);
    ck_assert_uint_eq(gort_chan_len(c), 3);
    int64_t out = 0;
    ck_assert_int_eq(gort_chan_recv(c, &out), 0);
    ck_assert_int_eq(out, 1);
    ck_assert_uint_eq(gort_chan_len(c), 2);
    ck_assert_int_eq(gort_chan_free(c), 0); /* values still buffered: no task blocked */

    gort_chan_t *u = gort_chan_make(16, 0);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq(gort_chan_cap(u), 0);
    ck_assert_uint_eq(gort_chan_len(u), 0);
    ck_assert_int_eq(gort_chan_free(u), 0);

    /* sizes whose product overflows, or absurd ones, fail cleanly */
    ck_assert_ptr_null(gort_chan_make(SIZE_MAX / 2, 4));
    ck_assert_ptr_null(gort_chan_make(2, SIZE_MAX));
    ck_assert_ptr_null(gort_chan_make(0, SIZE_MAX));
    ck_assert_uint_eq(gort_chan_len(NULL), 0);
    ck_assert_uint_eq(gort_chan_cap(NULL), 0);
    ck_assert_int_eq(gort_chan_free(NULL), 0);
    chan_assert_no_leaks();
}

START_TEST(test_make_len_cap) { test_run(make_main, NULL, 1, 0); }
END_TEST

/* ----------------------------------------------------------- bad arguments */

static void badarg_main(void *arg)
{
    GORT_FRAME();
    int64_t v = 7;
    ck_assert_int_eq(gort_chan_send(NULL, &v), -EINVAL);
    ck_assert_int_eq(gort_chan_recv(NULL, &v), -EINVAL);
    ck_assert_int_eq(gort_chan_try_send(NULL, &v), -EINVAL);
    ck_assert_int_eq(gort_chan_try_recv(NULL, &v), -EINVAL);
    ck_assert_int_eq(gort_chan_close(NULL), -EINVAL);
    ck_assert_int_eq(gort_chan_recv(NULL, NULL), -EINVAL);

    gort_chan_t *c = gort_chan_make(sizeof v, 1);
    ck_assert_int_eq(gort_chan_send(c, NULL), -EINVAL);
    ck_assert_int_eq(gort_chan_try_send(c, NULL), -EINVAL);
    ck_assert_uint_eq(gort_chan_len(c), 0); /* a failed call changed nothing */
    ck_assert_int_eq(gort_chan_try_send(c, &v), 0);
    ck_assert_int_eq(gort_chan_recv(c, NULL), 0); /* NULL out is fine: value dropped */
    ck_assert_uint_eq(gort_chan_len(c), 0);
    ck_assert_int_eq(gort_chan_free(c), 0);

    gort_chan_t *z = gort_chan_make(0, 1); /* zero-size: NULL elem is fine */
    ck_assert_int_eq(gort_chan_send(z, NULL), 0);
    ck_assert_int_eq(gort_chan_try_send(z, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(z), 0);
    chan_assert_no_leaks();
}

START_TEST(test_bad_args) { test_run(badarg_main, NULL, 1, 0); }
END_TEST

/* ---------------------------------------------------- unbuffered rendezvous */

#define RV_N TEST_ITERS(20000, 2000)
static gort_chan_t *rv_c;
static _Atomic int rv_sent;   /* how many sends have returned */
static _Atomic int rv_bad;    /* a send returned an error */
static uint64_t rv_seed;

static void rv_sender(void *arg)
{
    GORT_FRAME();
    uint64_t rng = rv_seed;
    for (int64_t i = 0; i < RV_N; i++) {
        if ((test_rand(&rng) & 7) == 0)
            gort_yield();
        if (gort_chan_send(rv_c, &i) != 0)
            atomic_fetch_add(&rv_bad, 1);
        atomic_fetch_add(&rv_sent, 1);
    }
}

static void rendezvous_main(void *arg)
{
    GORT_FRAME();
    rv_c = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&rv_sent, 0);
    atomic_store(&rv_bad, 0);
    CHAN_GO(rv_sender, NULL);
    /* The first send cannot complete before a receiver comes: it is queued, not done. */
    CHAN_WAIT_QUEUED(rv_c, true, 1);
    chan_yield_n(100);
    ck_assert_int_eq(atomic_load(&rv_sent), 0);
    ck_assert_uint_eq(gort_chan_len(rv_c), 0);
    uint64_t rng = rv_seed ^ 0x5555;
    for (int64_t i = 0; i < RV_N; i++) {
        if ((test_rand(&rng) & 7) == 0)
            gort_yield();
        int64_t v = -1;
        ck_assert_int_eq(gort_chan_recv(rv_c, &v), 0);
        ck_assert_int_eq(v, i);
        /* rendezvous: never more than one send ahead of the receives (the one whose
         * hand-off just completed may not have returned yet) */
        ck_assert_int_le(atomic_load(&rv_sent), i + 1);
    }
    CHAN_WAIT_FOR(atomic_load(&rv_sent) == RV_N);
    ck_assert_int_eq(atomic_load(&rv_bad), 0);
    ck_assert_int_eq(gort_chan_free(rv_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_unbuffered_rendezvous)
{
    rv_seed = test_seed("unbuffered_rendezvous", 11);
    CHAN_RUN_1_2(rendezvous_main, NULL);
}
END_TEST

/* ------------------------------------------------------------ buffered FIFO */

static void fifo_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 8);
    for (int64_t v = 0; v < 8; v++)
        ck_assert_int_eq(gort_chan_try_send(c, &v), 0);
    int64_t extra = 99;
    ck_assert_int_eq(gort_chan_try_send(c, &extra), -EAGAIN);
    ck_assert_uint_eq(gort_chan_len(c), 8);
    for (int64_t v = 0; v < 8; v++) {
        int64_t out = -1;
        ck_assert_int_eq(gort_chan_try_recv(c, &out), 0);
        ck_assert_int_eq(out, v);
    }
    int64_t out = 1234;
    ck_assert_int_eq(gort_chan_try_recv(c, &out), -EAGAIN);
    ck_assert_int_eq(out, 1234); /* a failed call changed nothing */

    /* wrap around the ring many times with random fill levels */
    uint64_t rng = *(uint64_t *)arg;
    int64_t next_in = 0, next_out = 0;
    for (int round = 0; round < 2000; round++) {
        int k = (int)(test_rand(&rng) % 9);
        for (int j = 0; j < k; j++) {
            int r = gort_chan_try_send(c, &next_in);
            if (next_in - next_out < 8) {
                ck_assert_int_eq(r, 0);
                next_in++;
            } else {
                ck_assert_int_eq(r, -EAGAIN);
            }
        }
        ck_assert_uint_eq(gort_chan_len(c), (size_t)(next_in - next_out));
        k = (int)(test_rand(&rng) % 9);
        for (int j = 0; j < k; j++) {
            int r = gort_chan_try_recv(c, &out);
            if (next_out < next_in) {
                ck_assert_int_eq(r, 0);
                ck_assert_int_eq(out, next_out);
                next_out++;
            } else {
                ck_assert_int_eq(r, -EAGAIN);
            }
        }
    }
    while (next_out < next_in) {
        ck_assert_int_eq(gort_chan_recv(c, &out), 0);
        ck_assert_int_eq(out, next_out++);
    }
    ck_assert_int_eq(gort_chan_free(c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_buffered_fifo)
{
    uint64_t seed = test_seed("buffered_fifo", 12);
    test_run(fifo_main, &seed, 1, 0);
}
END_TEST

/* A sender blocked on a full buffer: values still arrive in order, none lost. */
#define BF_N TEST_ITERS(20000, 2000)
static gort_chan_t *bf_c;
static uint64_t bf_seed;

static void bf_sender(void *arg)
{
    GORT_FRAME();
    uint64_t rng = bf_seed;
    for (int64_t i = 0; i < BF_N; i++) {
        if ((test_rand(&rng) & 3) == 0)
            gort_yield();
        gort_chan_send(bf_c, &i);
    }
    gort_chan_close(bf_c);
}

static void buffered_block_main(void *arg)
{
    GORT_FRAME();
    bf_c = gort_chan_make(sizeof(int64_t), 3);
    CHAN_GO(bf_sender, NULL);
    uint64_t rng = bf_seed ^ 77;
    int64_t v, expect = 0;
    while (gort_chan_recv(bf_c, &v) == 0) {
        ck_assert_int_eq(v, expect);
        expect++;
        if ((test_rand(&rng) & 3) == 0)
            gort_yield();
    }
    ck_assert_int_eq(expect, BF_N);
    ck_assert_int_eq(gort_chan_free(bf_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_buffered_blocking)
{
    bf_seed = test_seed("buffered_blocking", 13);
    CHAN_RUN_1_2(buffered_block_main, NULL);
}
END_TEST

/* ------------------------------------------------------- zero-size elements */

#define ZS_N TEST_ITERS(5000, 1000)
static gort_chan_t *zs_c;
static _Atomic int zs_done;

static void zs_sender(void *arg)
{
    GORT_FRAME();
    for (int i = 0; i < ZS_N; i++)
        gort_chan_send(zs_c, NULL);
    atomic_store(&zs_done, 1);
}

static void zerosize_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(0, 3);
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gort_chan_send(c, NULL), 0);
    ck_assert_int_eq(gort_chan_try_send(c, NULL), -EAGAIN);
    ck_assert_uint_eq(gort_chan_len(c), 3);
    char dummy = 'x';
    ck_assert_int_eq(gort_chan_recv(c, &dummy), 0);
    ck_assert_int_eq(dummy, 'x'); /* zero bytes copied */
    ck_assert_int_eq(gort_chan_recv(c, NULL), 0);
    ck_assert_int_eq(gort_chan_try_recv(c, NULL), 0);
    ck_assert_int_eq(gort_chan_try_recv(c, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(c), 0);

    zs_c = gort_chan_make(0, 0);
    atomic_store(&zs_done, 0);
    CHAN_GO(zs_sender, NULL);
    for (int i = 0; i < ZS_N; i++)
        ck_assert_int_eq(gort_chan_recv(zs_c, NULL), 0);
    CHAN_WAIT_FOR(atomic_load(&zs_done));
    ck_assert_int_eq(gort_chan_try_recv(zs_c, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(zs_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_zero_size) { CHAN_RUN_1_2(zerosize_main, NULL); }
END_TEST

/* ------------------------------------------------------------------- close */

static void closed_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int), 4);
    int v = 5;
    ck_assert_int_eq(gort_chan_send(c, &v), 0);
    ck_assert_int_eq(gort_chan_close(c), 0);
    ck_assert_int_eq(gort_chan_close(c), -EPIPE);       /* twice */
    ck_assert_int_eq(gort_chan_send(c, &v), -EPIPE);    /* at once, even with room */
    ck_assert_int_eq(gort_chan_try_send(c, &v), -EPIPE);
    ck_assert_uint_eq(gort_chan_len(c), 1);
    int out = 0;
    ck_assert_int_eq(gort_chan_recv(c, &out), 0);       /* drained first */
    ck_assert_int_eq(out, 5);
    out = 42;
    ck_assert_int_eq(gort_chan_recv(c, &out), -EPIPE);
    ck_assert_int_eq(out, 42); /* untouched */
    ck_assert_int_eq(gort_chan_try_recv(c, &out), -EPIPE);
    ck_assert_int_eq(gort_chan_recv(c, NULL), -EPIPE);
    ck_assert_int_eq(gort_chan_free(c), 0);

    gort_chan_t *u = gort_chan_make(sizeof(int), 0);
    ck_assert_int_eq(gort_chan_close(u), 0);
    ck_assert_int_eq(gort_chan_send(u, &v), -EPIPE);
    ck_assert_int_eq(gort_chan_recv(u, &out), -EPIPE);
    ck_assert_int_eq(gort_chan_free(u), 0);
    chan_assert_no_leaks();
}

START_TEST(test_closed_semantics) { test_run(closed_main, NULL, 1, 0); }
END_TEST

static void drain_main(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = gort_chan_make(sizeof(int64_t), 4);
    for (int64_t v = 1; v <= 3; v++)
        ck_assert_int_eq(gort_chan_send(c, &v), 0);
    ck_assert_int_eq(gort_chan_close(c), 0);
    for (int64_t v = 1; v <= 3; v++) {
        int64_t out = 0;
        ck_assert_int_eq(gort_chan_try_recv(c, &out), 0);
        ck_assert_int_eq(out, v);
    }
    ck_assert_uint_eq(gort_chan_len(c), 0);
    ck_assert_int_eq(gort_chan_recv(c, NULL), -EPIPE);
    ck_assert_int_eq(gort_chan_free(c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_drain_before_closed) { test_run(drain_main, NULL, 1, 0); }
END_TEST

/* close wakes every blocked receiver and every blocked sender with -EPIPE */
#define CW_K 64
static gort_chan_t *cw_c;
static _Atomic int cw_rc[CW_K];
static _Atomic int cw_done;

static void cw_receiver(void *arg)
{
    GORT_FRAME();
    int64_t v = -1;
    int r = gort_chan_recv(cw_c, &v);
    atomic_store(&cw_rc[(intptr_t)arg], r == -EPIPE && v == -1 ? 1 : 100 + r);
    atomic_fetch_add(&cw_done, 1);
}

static void cw_sender(void *arg)
{
    GORT_FRAME();
    int64_t v = (intptr_t)arg;
    int r = gort_chan_send(cw_c, &v);
    atomic_store(&cw_rc[(intptr_t)arg], r == -EPIPE ? 1 : 100 + r);
    atomic_fetch_add(&cw_done, 1);
}

static void close_wakes_main(void *arg)
{
    GORT_FRAME();
    bool senders = arg != NULL;
    /* senders block on a full buffered channel, receivers on an empty unbuffered one */
    cw_c = gort_chan_make(sizeof(int64_t), senders ? 2 : 0);
    int64_t fill = 1000;
    if (senders) {
        ck_assert_int_eq(gort_chan_send(cw_c, &fill), 0);
        fill++;
        ck_assert_int_eq(gort_chan_send(cw_c, &fill), 0);
    }
    atomic_store(&cw_done, 0);
    for (intptr_t i = 0; i < CW_K; i++) {
        atomic_store(&cw_rc[i], 0);
        CHAN_GO(senders ? cw_sender : cw_receiver, (void *)i);
    }
    CHAN_WAIT_QUEUED(cw_c, senders, CW_K);
    ck_assert_int_eq(gort_chan_free(cw_c), -EBUSY); /* tasks blocked: nothing freed */
    chan_yield_n(50);
    ck_assert_int_eq(atomic_load(&cw_done), 0);
    ck_assert_int_eq(gort_chan_close(cw_c), 0);
    CHAN_WAIT_FOR(atomic_load(&cw_done) == CW_K);
    for (int i = 0; i < CW_K; i++)
        ck_assert_int_eq(atomic_load(&cw_rc[i]), 1);
    if (senders) { /* what was buffered before the close is still there */
        int64_t out;
        ck_assert_int_eq(gort_chan_recv(cw_c, &out), 0);
        ck_assert_int_eq(out, 1000);
        ck_assert_int_eq(gort_chan_recv(cw_c, &out), 0);
        ck_assert_int_eq(out, 1001);
        ck_assert_int_eq(gort_chan_recv(cw_c, &out), -EPIPE);
    }
    ck_assert_uint_eq(chan_waiters_count(cw_c, true) + chan_waiters_count(cw_c, false), 0);
    ck_assert_int_eq(gort_chan_free(cw_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_close_wakes_receivers) { CHAN_RUN_1_2(close_wakes_main, NULL); }
END_TEST

START_TEST(test_close_wakes_senders) { CHAN_RUN_1_2(close_wakes_main, (void *)1); }
END_TEST

/* ------------------------------------------------------- waiters are FIFO */

#define FW_K 24
static gort_chan_t *fw_c;
static _Atomic int64_t fw_got[FW_K];
static _Atomic int fw_done;

static void fw_receiver(void *arg)
{
    GORT_FRAME();
    int64_t v = -1;
    int r = gort_chan_recv(fw_c, &v);
    atomic_store(&fw_got[(intptr_t)arg], r == 0 ? v : -100 + r);
    atomic_fetch_add(&fw_done, 1);
}

static void fw_sender(void *arg)
{
    GORT_FRAME();
    int64_t v = (intptr_t)arg;
    if (gort_chan_send(fw_c, &v) == 0)
        atomic_fetch_add(&fw_done, 1);
}

static void fifo_waiters_main(void *arg)
{
    GORT_FRAME();
    size_t cap = (size_t)(intptr_t)arg;
    /* receivers, queued one at a time, are served in arrival order */
    fw_c = gort_chan_make(sizeof(int64_t), cap);
    atomic_store(&fw_done, 0);
    for (intptr_t i = 0; i < FW_K; i++) {
        CHAN_GO(fw_receiver, (void *)i);
        CHAN_WAIT_QUEUED(fw_c, false, (size_t)i + 1);
    }
    for (int64_t v = 0; v < FW_K; v++)
        ck_assert_int_eq(gort_chan_send(fw_c, &v), 0);
    CHAN_WAIT_FOR(atomic_load(&fw_done) == FW_K);
    for (int i = 0; i < FW_K; i++)
        ck_assert_int_eq(atomic_load(&fw_got[i]), i);

    /* senders likewise (behind the buffered values, if any) */
    atomic_store(&fw_done, 0);
    for (size_t j = 0; j < cap; j++) {
        int64_t v = 1000 + (int64_t)j;
        ck_assert_int_eq(gort_chan_send(fw_c, &v), 0);
    }
    for (intptr_t i = 0; i < FW_K; i++) {
        CHAN_GO(fw_sender, (void *)i);
        CHAN_WAIT_QUEUED(fw_c, true, (size_t)i + 1);
    }
    for (size_t j = 0; j < cap; j++) {
        int64_t out = -1;
        ck_assert_int_eq(gort_chan_recv(fw_c, &out), 0);
        ck_assert_int_eq(out, 1000 + (int64_t)j);
    }
    for (int64_t v = 0; v < FW_K; v++) {
        int64_t out = -1;
        ck_assert_int_eq(gort_chan_recv(fw_c, &out), 0);
        ck_assert_int_eq(out, v);
    }
    CHAN_WAIT_FOR(atomic_load(&fw_done) == FW_K);
    ck_assert_uint_eq(gort_chan_len(fw_c), 0);
    ck_assert_int_eq(gort_chan_free(fw_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_fifo_waiters_unbuffered) { CHAN_RUN_1_2(fifo_waiters_main, (void *)0); }
END_TEST

START_TEST(test_fifo_waiters_buffered) { CHAN_RUN_1_2(fifo_waiters_main, (void *)3); }
END_TEST

/* ------------------------------------------------ recv with NULL out drops */

static gort_chan_t *dr_c;
static _Atomic int dr_rc = 1;

static void dr_sender(void *arg)
{
    GORT_FRAME();
    int64_t v = 77;
    atomic_store(&dr_rc, gort_chan_send(dr_c, &v));
}

static void drop_main(void *arg)
{
    GORT_FRAME();
    dr_c = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&dr_rc, 1);
    CHAN_GO(dr_sender, NULL);
    CHAN_WAIT_QUEUED(dr_c, true, 1);
    ck_assert_int_eq(gort_chan_recv(dr_c, NULL), 0); /* from a parked sender */
    CHAN_WAIT_FOR(atomic_load(&dr_rc) != 1);
    ck_assert_int_eq(atomic_load(&dr_rc), 0);
    ck_assert_int_eq(gort_chan_try_recv(dr_c, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(dr_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_recv_null_drops) { CHAN_RUN_1_2(drop_main, NULL); }
END_TEST

/* ------------------------------------------ outside a task: -EPERM, or done */

struct foreign {
    gort_chan_t *unbuf;  /* empty, nobody on it */
    gort_chan_t *buf;    /* capacity 2, empty */
    gort_chan_t *wake;   /* a task waits to receive on it */
    int rc[10];
    int64_t got;
};

static void foreign_ops(struct foreign *f)
{
    int64_t v = 9;
    f->rc[0] = gort_chan_send(f->unbuf, &v);  /* would block: -EPERM */
    f->rc[1] = gort_chan_recv(f->unbuf, &v);  /* would block: -EPERM */
    f->rc[2] = gort_chan_send(f->buf, &v);    /* room: done */
    f->rc[3] = gort_chan_try_send(f->buf, &v);
    f->rc[4] = gort_chan_recv(f->buf, &f->got); /* a value: done */
    f->rc[5] = gort_chan_try_recv(f->buf, NULL);
    f->rc[6] = gort_chan_try_recv(f->buf, NULL); /* empty now */
    f->rc[7] = gort_chan_try_send(f->wake, &v);  /* hands off to the parked task */
}

static void *foreign_thread(void *arg)
{
    foreign_ops(arg);
    return NULL;
}

static void *foreign_sysstack(void *arg)
{
    foreign_ops(arg);
    return NULL;
}

static void *foreign_close(void *c)
{
    return (void *)(intptr_t)gort_chan_close(c);
}

static gort_chan_t *fo_wake;
static _Atomic int64_t fo_got = -1;

static void fo_receiver(void *arg)
{
    GORT_FRAME();
    int64_t v = -2;
    int r = gort_chan_recv(fo_wake, &v);
    atomic_store(&fo_got, r == 0 ? v : -100 + r);
}

static void foreign_check(struct foreign *f)
{
    ck_assert_int_eq(f->rc[0], -EPERM);
    ck_assert_int_eq(f->rc[1], -EPERM);
    ck_assert_int_eq(f->rc[2], 0);
    ck_assert_int_eq(f->rc[3], 0);
    ck_assert_int_eq(f->rc[4], 0);
    ck_assert_int_eq(f->got, 9);
    ck_assert_int_eq(f->rc[5], 0);
    ck_assert_int_eq(f->rc[6], -EAGAIN);
    ck_assert_int_eq(f->rc[7], 0);
    CHAN_WAIT_FOR(atomic_load(&fo_got) != -1);
    ck_assert_int_eq(atomic_load(&fo_got), 9);
}

static void foreign_main(void *arg)
{
    GORT_FRAME();
    bool use_thread = arg != NULL;
    static struct foreign f; /* shared with another thread: not on this stack */
    memset(&f, 0, sizeof f);
    f.unbuf = gort_chan_make(sizeof(int64_t), 0);
    f.buf = gort_chan_make(sizeof(int64_t), 2);
    f.wake = fo_wake = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&fo_got, -1);
    CHAN_GO(fo_receiver, NULL);
    CHAN_WAIT_QUEUED(fo_wake, false, 1);
    if (use_thread) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, foreign_thread, &f), 0);
        pthread_join(t, NULL); /* blocks this M: the thread needs no runtime help */
    } else {
        gort_on_system_stack(foreign_sysstack, &f);
    }
    foreign_check(&f);

    /* close works from a foreign thread too, and wakes the blocked task */
    if (use_thread) {
        atomic_store(&fo_got, -1);
        CHAN_GO(fo_receiver, NULL);
        CHAN_WAIT_QUEUED(fo_wake, false, 1);
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, foreign_close, fo_wake), 0);
        pthread_join(t, NULL); /* blocks this M: the thread needs no runtime help */
        CHAN_WAIT_FOR(atomic_load(&fo_got) != -1);
        ck_assert_int_eq(atomic_load(&fo_got), -100 - EPIPE);
    }
    ck_assert_int_eq(gort_chan_free(f.unbuf), 0);
    ck_assert_int_eq(gort_chan_free(f.buf), 0);
    ck_assert_int_eq(gort_chan_free(f.wake), 0);
    chan_assert_no_leaks();
}

START_TEST(test_outside_task_thread) { CHAN_RUN_1_2(foreign_main, (void *)1); }
END_TEST

START_TEST(test_outside_task_sysstack) { CHAN_RUN_1_2(foreign_main, NULL); }
END_TEST

/* ------------------------------------------------------------- wait reasons */

static gort_chan_t *wr_c;
static g_t *_Atomic wr_g;
static _Atomic int wr_rc = 1;

static void wr_task(void *arg)
{
    GORT_FRAME();
    atomic_store(&wr_g, g_self());
    int64_t v = 3;
    int r = arg ? gort_chan_send(wr_c, &v) : gort_chan_recv(wr_c, &v);
    atomic_store(&wr_rc, r);
}

static void wait_reason_main(void *arg)
{
    GORT_FRAME();
    bool send = arg != NULL;
    wr_c = gort_chan_make(sizeof(int64_t), 0);
    atomic_store(&wr_rc, 1);
    atomic_store(&wr_g, NULL);
    CHAN_GO(wr_task, arg);
    /* queued and parked happen under one hold of wr_c's lock, which
     * chan_waiters_count takes: the park's writes are visible once it counts 1 */
    CHAN_WAIT_QUEUED(wr_c, send, 1);
    g_t *g = atomic_load(&wr_g);
    ck_assert_int_eq(atomic_load(&g->status), G_WAITING);
    ck_assert_int_eq(g->wait_reason, send ? WAIT_CHAN_SEND : WAIT_CHAN_RECV);
    ck_assert_ptr_eq(g->wait_obj, wr_c);
    ck_assert_ptr_nonnull(g->waiting);
    ck_assert_int_eq(gort_chan_close(wr_c), 0);
    CHAN_WAIT_FOR(atomic_load(&wr_rc) != 1);
    ck_assert_int_eq(atomic_load(&wr_rc), -EPIPE);
    ck_assert_int_eq(gort_chan_free(wr_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_wait_reasons)
{
    CHAN_RUN_1_2(wait_reason_main, NULL);
    CHAN_RUN_1_2(wait_reason_main, (void *)1);
}
END_TEST

/* ---------------------------------------------------------------- ping-pong */

#define PP_N TEST_ITERS(50000, 5000)
static gort_chan_t *pp_ping;
static gort_chan_t *pp_pong;

static void pp_echo(void *arg)
{
    GORT_FRAME();
    int64_t v;
    while (gort_chan_recv(pp_ping, &v) == 0) {
        v++;
        gort_chan_send(pp_pong, &v);
    }
}

static void pingpong_main(void *arg)
{
    GORT_FRAME();
    pp_ping = gort_chan_make(sizeof(int64_t), 0);
    pp_pong = gort_chan_make(sizeof(int64_t), 0);
    CHAN_GO(pp_echo, NULL);
    int64_t v = 0;
    for (int i = 0; i < PP_N; i++) {
        ck_assert_int_eq(gort_chan_send(pp_ping, &v), 0);
        ck_assert_int_eq(gort_chan_recv(pp_pong, &v), 0);
    }
    ck_assert_int_eq(v, PP_N);
    gort_chan_close(pp_ping);
    CHAN_WAIT_FOR(chan_waiters_count(pp_ping, false) == 0 &&
                  gort_chan_free(pp_ping) == 0);
    ck_assert_int_eq(gort_chan_free(pp_pong), 0);
    chan_assert_no_leaks();
}

START_TEST(test_pingpong) { CHAN_RUN_1_2(pingpong_main, NULL); }
END_TEST

/* ------------------------------------------ randomised many-to-many stress */

#define ST_SENDERS 6
#define ST_RECEIVERS 4
#define ST_PER_SENDER TEST_ITERS(4000, 500)
static gort_chan_t *st_c;
static gort_chan_t *st_done; /* zero-size, buffered: one token per finished task */
static uint64_t st_seed;
static _Atomic uint8_t st_seen[ST_SENDERS][ST_PER_SENDER];
static _Atomic int st_order_bad;
static _Atomic int64_t st_sum;

static void st_sender(void *arg)
{
    GORT_FRAME();
    int s = (int)(intptr_t)arg;
    uint64_t rng = st_seed + (uint64_t)s * 1000003;
    for (int64_t i = 0; i < ST_PER_SENDER; i++) {
        int64_t v = (int64_t)s << 32 | i;
        uint64_t r = test_rand(&rng);
        if ((r & 7) == 0)
            gort_yield();
        if ((r & 0x30) == 0) {
            while (gort_chan_try_send(st_c, &v) == -EAGAIN)
                gort_yield();
        } else {
            gort_chan_send(st_c, &v);
        }
    }
    gort_chan_send(st_done, NULL);
}

static void st_receiver(void *arg)
{
    GORT_FRAME();
    uint64_t rng = st_seed ^ ((uint64_t)(intptr_t)arg * 7919);
    int64_t last[ST_SENDERS];
    for (int s = 0; s < ST_SENDERS; s++)
        last[s] = -1;
    int64_t v;
    for (;;) {
        int r;
        uint64_t x = test_rand(&rng);
        if ((x & 7) == 0)
            gort_yield();
        if ((x & 0x30) == 0) {
            r = gort_chan_try_recv(st_c, &v);
            if (r == -EAGAIN)
                continue;
        } else {
            r = gort_chan_recv(st_c, &v);
        }
        if (r != 0)
            break;
        int s = (int)(v >> 32);
        int64_t i = v & 0xffffffff;
        /* one sender's values leave the channel in the order they entered it */
        if (s < 0 || s >= ST_SENDERS || i <= last[s])
            atomic_fetch_add(&st_order_bad, 1);
        else {
            last[s] = i;
            atomic_fetch_add(&st_seen[s][i], 1);
            atomic_fetch_add(&st_sum, i);
        }
    }
    gort_chan_send(st_done, NULL);
}

static void stress_main(void *arg)
{
    GORT_FRAME();
    size_t cap = (size_t)(intptr_t)arg;
    st_c = gort_chan_make(sizeof(int64_t), cap);
    st_done = gort_chan_make(0, ST_SENDERS + ST_RECEIVERS);
    memset(st_seen, 0, sizeof st_seen);
    atomic_store(&st_order_bad, 0);
    atomic_store(&st_sum, 0);
    for (intptr_t r = 0; r < ST_RECEIVERS; r++)
        CHAN_GO(st_receiver, (void *)r);
    for (intptr_t s = 0; s < ST_SENDERS; s++)
        CHAN_GO(st_sender, (void *)s);
    for (int s = 0; s < ST_SENDERS; s++)
        ck_assert_int_eq(gort_chan_recv(st_done, NULL), 0);
    ck_assert_int_eq(gort_chan_close(st_c), 0);
    for (int r = 0; r < ST_RECEIVERS; r++)
        ck_assert_int_eq(gort_chan_recv(st_done, NULL), 0);
    ck_assert_int_eq(atomic_load(&st_order_bad), 0);
    for (int s = 0; s < ST_SENDERS; s++)
        for (int i = 0; i < ST_PER_SENDER; i++)
            ck_assert_msg(atomic_load(&st_seen[s][i]) == 1, "sender %d value %d seen %d times",
                          s, i, (int)atomic_load(&st_seen[s][i]));
    ck_assert_int_eq(atomic_load(&st_sum),
                     (int64_t)ST_SENDERS * ST_PER_SENDER * (ST_PER_SENDER - 1) / 2);
    ck_assert_int_eq(gort_chan_free(st_c), 0);
    ck_assert_int_eq(gort_chan_free(st_done), 0);
    chan_assert_no_leaks();
}

START_TEST(test_stress_unbuffered)
{
    st_seed = test_seed("stress_unbuffered", 21);
    CHAN_RUN_1_2(stress_main, (void *)0);
}
END_TEST

START_TEST(test_stress_buffered)
{
    st_seed = test_seed("stress_buffered", 22);
    CHAN_RUN_1_2(stress_main, (void *)5);
}
END_TEST

static Suite *chan_suite(void)
{
    Suite *s = suite_create("chan");
    TCase *tc = tcase_create("chan");
    tcase_set_timeout(tc, CHAN_TCASE_TIMEOUT);
    tcase_add_test(tc, test_make_len_cap);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_unbuffered_rendezvous);
    tcase_add_test(tc, test_buffered_fifo);
    tcase_add_test(tc, test_buffered_blocking);
    tcase_add_test(tc, test_zero_size);
    tcase_add_test(tc, test_closed_semantics);
    tcase_add_test(tc, test_drain_before_closed);
    tcase_add_test(tc, test_close_wakes_receivers);
    tcase_add_test(tc, test_close_wakes_senders);
    tcase_add_test(tc, test_fifo_waiters_unbuffered);
    tcase_add_test(tc, test_fifo_waiters_buffered);
    tcase_add_test(tc, test_recv_null_drops);
    tcase_add_test(tc, test_outside_task_thread);
    tcase_add_test(tc, test_outside_task_sysstack);
    tcase_add_test(tc, test_wait_reasons);
    tcase_add_test(tc, test_pingpong);
    tcase_add_test(tc, test_stress_unbuffered);
    tcase_add_test(tc, test_stress_buffered);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(chan_suite()); }
