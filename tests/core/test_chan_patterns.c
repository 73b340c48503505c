/* tests/core/test_chan_patterns.c — the classic channel patterns, each checking every
 * value arrives exactly once: worker pool, fan-in, fan-out, pipeline, graceful shutdown
 * by close, 100,000 tasks woken by one close, and a randomised stress of channels and
 * select (plain and select sends/receives, timeouts, try_ variants) on 1 and 2 Ps that
 * checks nothing is lost or duplicated and each sender's values leave each channel in
 * order. */
/* Not in the TSan set, for CI time: under TSan each of its leak checks scans TSan's
 * resident runtime mappings as program memory, and the suite takes 4.5 minutes a twin
 * on 2 loaded cores (it passes; the mass close uses 5,000 tasks there, under TSan's
 * limit of 8128 fibers and threads). The chan, select and sched suites are in the set. */
/* ctest-timeout: 300 */
#include <stdint.h>

#include "chan_testutil.h"

/* ------------------------------------------------------------- worker pool */

#define WP_WORKERS 8
#define WP_JOBS 20000
static gort_chan_t *wp_jobs, *wp_results, *wp_done;

static void wp_worker(void *arg)
{
    GORT_FRAME();
    int64_t job;
    while (gort_chan_recv(wp_jobs, &job) == 0) {
        int64_t r = job * job;
        gort_chan_send(wp_results, &r);
    }
    gort_chan_send(wp_done, NULL);
}

static void wp_feeder(void *arg)
{
    GORT_FRAME();
    for (int64_t j = 1; j <= WP_JOBS; j++)
        gort_chan_send(wp_jobs, &j);
    gort_chan_close(wp_jobs);
}

static void pool_main(void *arg)
{
    GORT_FRAME();
    wp_jobs = gort_chan_make(sizeof(int64_t), 16);
    wp_results = gort_chan_make(sizeof(int64_t), 16);
    wp_done = gort_chan_make(0, WP_WORKERS);
    for (int i = 0; i < WP_WORKERS; i++)
        CHAN_GO(wp_worker, NULL);
    CHAN_GO(wp_feeder, NULL);
    int64_t sum = 0, r;
    for (int i = 0; i < WP_JOBS; i++) {
        ck_assert_int_eq(gort_chan_recv(wp_results, &r), 0);
        sum += r;
    }
    for (int i = 0; i < WP_WORKERS; i++)
        ck_assert_int_eq(gort_chan_recv(wp_done, NULL), 0);
    int64_t n = WP_JOBS;
    ck_assert_int_eq(sum, n * (n + 1) * (2 * n + 1) / 6);
    ck_assert_int_eq(gort_chan_try_recv(wp_results, &r), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(wp_jobs), 0);
    ck_assert_int_eq(gort_chan_free(wp_results), 0);
    ck_assert_int_eq(gort_chan_free(wp_done), 0);
    chan_assert_no_leaks();
}

START_TEST(test_worker_pool) { CHAN_RUN_1_2(pool_main, NULL); }
END_TEST

/* ------------------------------------------------------------------ fan-in */

#define FI_PRODUCERS 8
#define FI_EACH 3000
static gort_chan_t *fi_c;
static uint64_t fi_seed;

static void fi_producer(void *arg)
{
    GORT_FRAME();
    int p = (int)(intptr_t)arg;
    uint64_t rng = fi_seed + (uint64_t)p;
    for (int64_t i = 0; i < FI_EACH; i++) {
        int64_t v = (int64_t)p << 32 | i;
        if ((test_rand(&rng) & 3) == 0)
            gort_yield();
        gort_chan_send(fi_c, &v);
    }
}

static void fanin_main(void *arg)
{
    GORT_FRAME();
    fi_c = gort_chan_make(sizeof(int64_t), (size_t)(intptr_t)arg);
    for (intptr_t p = 0; p < FI_PRODUCERS; p++)
        CHAN_GO(fi_producer, (void *)p);
    int64_t next[FI_PRODUCERS] = {0};
    for (int k = 0; k < FI_PRODUCERS * FI_EACH; k++) {
        int64_t v;
        ck_assert_int_eq(gort_chan_recv(fi_c, &v), 0);
        int p = (int)(v >> 32);
        ck_assert(p >= 0 && p < FI_PRODUCERS);
        ck_assert_int_eq(v & 0xffffffff, next[p]); /* one consumer: exact order */
        next[p]++;
    }
    for (int p = 0; p < FI_PRODUCERS; p++)
        ck_assert_int_eq(next[p], FI_EACH);
    CHAN_WAIT_FOR(chan_waiters_count(fi_c, true) == 0);
    ck_assert_int_eq(gort_chan_try_recv(fi_c, NULL), -EAGAIN);
    ck_assert_int_eq(gort_chan_free(fi_c), 0);
    chan_assert_no_leaks();
}

START_TEST(test_fan_in)
{
    fi_seed = test_seed("fan_in", 61);
    CHAN_RUN_1_2(fanin_main, (void *)0);
    CHAN_RUN_1_2(fanin_main, (void *)4);
}
END_TEST

/* ----------------------------------------------------------------- fan-out */

#define FO_CONSUMERS 8
#define FO_N 40000
static gort_chan_t *fo_c, *fo_done;
static _Atomic uint8_t fo_seen[FO_N];
static _Atomic int fo_order_bad;
static _Atomic int fo_per[FO_CONSUMERS];

static void fo_consumer(void *arg)
{
    GORT_FRAME();
    int id = (int)(intptr_t)arg;
    int64_t v, last = -1;
    while (gort_chan_recv(fo_c, &v) == 0) {
        if (v <= last || v < 0 || v >= FO_N)
            atomic_fetch_add(&fo_order_bad, 1);
        else
            atomic_fetch_add(&fo_seen[v], 1);
        last = v;
        atomic_fetch_add(&fo_per[id], 1);
        if ((v & 15) == 0)
            gort_yield();
    }
    gort_chan_send(fo_done, NULL);
}

static void fanout_main(void *arg)
{
    GORT_FRAME();
    fo_c = gort_chan_make(sizeof(int64_t), (size_t)(intptr_t)arg);
    fo_done = gort_chan_make(0, FO_CONSUMERS);
    memset(fo_seen, 0, sizeof fo_seen);
    atomic_store(&fo_order_bad, 0);
    for (intptr_t i = 0; i < FO_CONSUMERS; i++) {
        atomic_store(&fo_per[i], 0);
        CHAN_GO(fo_consumer, (void *)i);
    }
    for (int64_t v = 0; v < FO_N; v++)
        ck_assert_int_eq(gort_chan_send(fo_c, &v), 0);
    ck_assert_int_eq(gort_chan_close(fo_c), 0);
    for (int i = 0; i < FO_CONSUMERS; i++)
        ck_assert_int_eq(gort_chan_recv(fo_done, NULL), 0);
    ck_assert_int_eq(atomic_load(&fo_order_bad), 0);
    int total = 0;
    for (int i = 0; i < FO_CONSUMERS; i++)
        total += atomic_load(&fo_per[i]);
    ck_assert_int_eq(total, FO_N);
    for (int v = 0; v < FO_N; v++)
        ck_assert_msg(atomic_load(&fo_seen[v]) == 1, "value %d seen %d times", v,
                      (int)atomic_load(&fo_seen[v]));
    ck_assert_int_eq(gort_chan_free(fo_c), 0);
    ck_assert_int_eq(gort_chan_free(fo_done), 0);
    chan_assert_no_leaks();
}

START_TEST(test_fan_out)
{
    CHAN_RUN_1_2(fanout_main, (void *)0);
    CHAN_RUN_1_2(fanout_main, (void *)8);
}
END_TEST

/* ---------------------------------------------------------------- pipeline */

#define PL_STAGES 10
#define PL_N 10000
static gort_chan_t *pl_c[PL_STAGES + 1];

static void pl_stage(void *arg)
{
    GORT_FRAME();
    int s = (int)(intptr_t)arg;
    int64_t v;
    while (gort_chan_recv(pl_c[s], &v) == 0) {
        v++;
        gort_chan_send(pl_c[s + 1], &v);
    }
    gort_chan_close(pl_c[s + 1]); /* shutdown flows down the pipe */
}

static void pl_source(void *arg)
{
    GORT_FRAME();
    for (int64_t i = 0; i < PL_N; i++)
        gort_chan_send(pl_c[0], &i);
    gort_chan_close(pl_c[0]);
}

static void pipeline_main(void *arg)
{
    GORT_FRAME();
    for (int s = 0; s <= PL_STAGES; s++)
        pl_c[s] = gort_chan_make(sizeof(int64_t), (size_t)(s % 3)); /* mixed capacities */
    for (intptr_t s = 0; s < PL_STAGES; s++)
        CHAN_GO(pl_stage, (void *)s);
    CHAN_GO(pl_source, NULL);
    int64_t v;
    for (int64_t i = 0; i < PL_N; i++) {
        ck_assert_int_eq(gort_chan_recv(pl_c[PL_STAGES], &v), 0);
        ck_assert_int_eq(v, i + PL_STAGES);
    }
    ck_assert_int_eq(gort_chan_recv(pl_c[PL_STAGES], &v), -EPIPE);
    for (int s = 0; s <= PL_STAGES; s++)
        CHAN_WAIT_FOR(gort_chan_free(pl_c[s]) == 0);
    chan_assert_no_leaks();
}

START_TEST(test_pipeline) { CHAN_RUN_1_2(pipeline_main, NULL); }
END_TEST

/* --------------------------------------------------- graceful shutdown */

#define GS_WORKERS 6
#define GS_N 20000
static gort_chan_t *gs_work, *gs_quit, *gs_done;
static _Atomic int64_t gs_sum;
static _Atomic int gs_count;

static void gs_worker(void *arg)
{
    GORT_FRAME();
    int64_t v;
    gort_case_t cs[2] = {{gs_work, GORT_RECV, &v, 0}, {gs_quit, GORT_RECV, NULL, 0}};
    for (;;) {
        int r = gort_select(cs, 2, -1);
        if (r == 1)
            break; /* quit closed: -EPIPE */
        atomic_fetch_add(&gs_sum, v);
        atomic_fetch_add(&gs_count, 1);
    }
    gort_chan_send(gs_done, NULL);
}

static void shutdown_main(void *arg)
{
    GORT_FRAME();
    gs_work = gort_chan_make(sizeof(int64_t), 0);
    gs_quit = gort_chan_make(0, 0);
    gs_done = gort_chan_make(0, GS_WORKERS);
    atomic_store(&gs_sum, 0);
    atomic_store(&gs_count, 0);
    for (int i = 0; i < GS_WORKERS; i++)
        CHAN_GO(gs_worker, NULL);
    for (int64_t i = 1; i <= GS_N; i++)
        ck_assert_int_eq(gort_chan_send(gs_work, &i), 0); /* each send: a worker took it */
    ck_assert_int_eq(gort_chan_close(gs_quit), 0);
    for (int i = 0; i < GS_WORKERS; i++)
        ck_assert_int_eq(gort_chan_recv(gs_done, NULL), 0);
    ck_assert_int_eq(atomic_load(&gs_count), GS_N);
    ck_assert_int_eq(atomic_load(&gs_sum), (int64_t)GS_N * (GS_N + 1) / 2);
    ck_assert_int_eq(gort_chan_free(gs_work), 0);
    ck_assert_int_eq(gort_chan_free(gs_quit), 0);
    ck_assert_int_eq(gort_chan_free(gs_done), 0);
    chan_assert_no_leaks();
}

START_TEST(test_graceful_shutdown) { CHAN_RUN_1_2(shutdown_main, NULL); }
END_TEST

/* --------------------------------------- 100,000 tasks, one close */

/* TSan gives every task record a fiber and allows 8128 fibers and threads at once. */
#define MW_N TEST_ITERS(100000, 5000)
static gort_chan_t *mw_c, *mw_done;
static _Atomic int mw_woken;
static _Atomic int mw_bad;

static void mw_task(void *arg)
{
    GORT_FRAME();
    int64_t v = -1;
    int r = gort_chan_recv(mw_c, &v);
    if (r != -EPIPE || v != -1)
        atomic_fetch_add(&mw_bad, 1);
    if (atomic_fetch_add(&mw_woken, 1) + 1 == MW_N)
        gort_chan_close(mw_done);
}

static void massclose_main(void *arg)
{
    GORT_FRAME();
    mw_c = gort_chan_make(sizeof(int64_t), 0);
    mw_done = gort_chan_make(0, 0);
    atomic_store(&mw_woken, 0);
    atomic_store(&mw_bad, 0);
    for (int i = 0; i < MW_N; i++)
        CHAN_GO(mw_task, NULL);
    int64_t deadline = gort_now() + CHAN_WAIT_NS;
    while (chan_waiters_count(mw_c, false) != MW_N) {
        ck_assert_msg(gort_now() < deadline, "only %zu of %d tasks queued",
                      chan_waiters_count(mw_c, false), MW_N);
        gort_sleep(1000000);
    }
    ck_assert_int_eq(gort_chan_free(mw_c), -EBUSY);
    ck_assert_int_eq(atomic_load(&mw_woken), 0);
    ck_assert_int_eq(gort_chan_close(mw_c), 0);
    ck_assert_int_eq(gort_chan_recv(mw_done, NULL), -EPIPE); /* the last one closed it */
    ck_assert_int_eq(atomic_load(&mw_woken), MW_N);
    ck_assert_int_eq(atomic_load(&mw_bad), 0);
    ck_assert_int_eq(gort_chan_free(mw_c), 0);
    ck_assert_int_eq(gort_chan_free(mw_done), 0);
    CHAN_WAIT_FOR(gort_ntasks() == 1);
    chan_assert_no_leaks();
}

START_TEST(test_100k_woken_by_one_close) { CHAN_RUN_1_2(massclose_main, NULL); }
END_TEST

/* ----------------------------------- randomised stress: channels + select */

#define RS_CHANS 4
#define RS_SENDERS 6
#define RS_RECEIVERS 4
#define RS_EACH 3000
static const size_t rs_caps[RS_CHANS] = {0, 1, 4, 0};
static gort_chan_t *rs_c[RS_CHANS];
static gort_chan_t *rs_done;
static uint64_t rs_seed;
static _Atomic uint8_t rs_seen[RS_SENDERS][RS_EACH];
static _Atomic int rs_bad;
static _Atomic int64_t rs_sum;

/* Sends its RS_EACH values (sender << 32 | seq), each through one of: a plain send, a
 * try_send loop, a select over two channels (blocking, or with a short timeout and a
 * retry of the same value). */
static void rs_sender(void *arg)
{
    GORT_FRAME();
    int s = (int)(intptr_t)arg;
    uint64_t rng = rs_seed * 31 + (uint64_t)s;
    for (int64_t i = 0; i < RS_EACH; i++) {
        int64_t v = (int64_t)s << 32 | i;
        uint64_t r = test_rand(&rng);
        int a = (int)(r % RS_CHANS), b = (int)((r >> 8) % RS_CHANS);
        if ((r >> 16 & 7) == 0)
            gort_yield();
        switch (r >> 20 & 3) {
        case 0:
            if (gort_chan_send(rs_c[a], &v) != 0)
                atomic_fetch_add(&rs_bad, 1);
            break;
        case 1:
            while (gort_chan_try_send(rs_c[a], &v) == -EAGAIN)
                gort_yield();
            break;
        default: {
            gort_case_t cs[2] = {{rs_c[a], GORT_SEND, &v, 0}, {rs_c[b], GORT_SEND, &v, 0}};
            int64_t to = (r >> 22 & 1) ? -1 : (int64_t)(r >> 24 & 0x3fff);
            int x;
            while ((x = gort_select(cs, 2, to)) == -ETIMEDOUT)
                gort_yield(); /* timeout 0 must not spin out the receivers on 1 P */
            if (x < 0 || cs[x].result != 0)
                atomic_fetch_add(&rs_bad, 1);
        }
        }
    }
    gort_chan_send(rs_done, NULL);
}

/* Receives until every channel is closed and drained: mostly a select over the open
 * channels (sometimes with a timeout), sometimes a try_recv of one. Checks per channel
 * that each sender's values come in increasing order. */
static void rs_receiver(void *arg)
{
    GORT_FRAME();
    uint64_t rng = rs_seed * 17 + (uint64_t)(intptr_t)arg;
    int64_t last[RS_CHANS][RS_SENDERS];
    for (int c = 0; c < RS_CHANS; c++)
        for (int s = 0; s < RS_SENDERS; s++)
            last[c][s] = -1;
    int64_t v;
    gort_case_t cs[RS_CHANS];
    for (int c = 0; c < RS_CHANS; c++)
        cs[c] = (gort_case_t){rs_c[c], GORT_RECV, &v, 0};
    int open = RS_CHANS;
    while (open > 0) {
        uint64_t r = test_rand(&rng);
        if ((r & 7) == 0)
            gort_yield();
        int c;
        if ((r >> 4 & 7) == 0) {
            c = (int)((r >> 8) % RS_CHANS);
            if (!cs[c].chan)
                continue;
            int x = gort_chan_try_recv(rs_c[c], &v);
            if (x == -EAGAIN)
                continue;
            cs[c].result = x;
        } else {
            int64_t to = (r >> 12 & 1) ? -1 : (int64_t)(r >> 16 & 0x3fff);
            c = gort_select(cs, RS_CHANS, to);
            if (c == -ETIMEDOUT)
                continue;
            if (c < 0) {
                atomic_fetch_add(&rs_bad, 1);
                break;
            }
        }
        if (cs[c].result == -EPIPE) {
            cs[c].chan = NULL;
            open--;
            continue;
        }
        int s = (int)(v >> 32);
        int64_t i = v & 0xffffffff;
        if (s < 0 || s >= RS_SENDERS || i >= RS_EACH || i <= last[c][s]) {
            atomic_fetch_add(&rs_bad, 1);
            continue;
        }
        last[c][s] = i;
        atomic_fetch_add(&rs_seen[s][i], 1);
        atomic_fetch_add(&rs_sum, i);
    }
    gort_chan_send(rs_done, NULL);
}

static void stress_main(void *arg)
{
    GORT_FRAME();
    for (int c = 0; c < RS_CHANS; c++)
        rs_c[c] = gort_chan_make(sizeof(int64_t), rs_caps[c]);
    rs_done = gort_chan_make(0, RS_SENDERS + RS_RECEIVERS);
    memset(rs_seen, 0, sizeof rs_seen);
    atomic_store(&rs_bad, 0);
    atomic_store(&rs_sum, 0);
    for (intptr_t r = 0; r < RS_RECEIVERS; r++)
        CHAN_GO(rs_receiver, (void *)r);
    for (intptr_t s = 0; s < RS_SENDERS; s++)
        CHAN_GO(rs_sender, (void *)s);
    for (int s = 0; s < RS_SENDERS; s++)
        ck_assert_int_eq(gort_chan_recv(rs_done, NULL), 0);
    for (int c = 0; c < RS_CHANS; c++)
        ck_assert_int_eq(gort_chan_close(rs_c[c]), 0);
    for (int r = 0; r < RS_RECEIVERS; r++)
        ck_assert_int_eq(gort_chan_recv(rs_done, NULL), 0);
    ck_assert_int_eq(atomic_load(&rs_bad), 0);
    for (int s = 0; s < RS_SENDERS; s++)
        for (int i = 0; i < RS_EACH; i++)
            ck_assert_msg(atomic_load(&rs_seen[s][i]) == 1, "sender %d value %d seen %d times",
                          s, i, (int)atomic_load(&rs_seen[s][i]));
    ck_assert_int_eq(atomic_load(&rs_sum), (int64_t)RS_SENDERS * RS_EACH * (RS_EACH - 1) / 2);
    for (int c = 0; c < RS_CHANS; c++)
        ck_assert_int_eq(gort_chan_free(rs_c[c]), 0);
    ck_assert_int_eq(gort_chan_free(rs_done), 0);
    chan_assert_no_leaks();
}

START_TEST(test_random_stress)
{
    uint64_t base = test_seed("random_stress", 71);
    for (uint64_t k = 0; k < 3; k++) {
        rs_seed = base + k;
        CHAN_RUN_1_2(stress_main, NULL);
    }
}
END_TEST

static Suite *patterns_suite(void)
{
    Suite *s = suite_create("chan_patterns");
    TCase *tc = tcase_create("patterns");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_worker_pool);
    tcase_add_test(tc, test_fan_in);
    tcase_add_test(tc, test_fan_out);
    tcase_add_test(tc, test_pipeline);
    tcase_add_test(tc, test_graceful_shutdown);
    tcase_add_test(tc, test_100k_woken_by_one_close);
    tcase_add_test(tc, test_random_stress);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(patterns_suite()); }
