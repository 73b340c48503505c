/* perf/bench_chan_pingpong.c — (a) unbuffered channel ping-pong between two tasks.
 *
 * The main task sends a value on `ping`; an echo task receives it and sends it back on
 * `pong`. Each round trip is two one-way handoffs; the result is the time of one
 * handoff (round trip / 2), over a time budget of ms= milliseconds, after a warm-up.
 * With 1 P both tasks share one thread (the handoff is a direct switch via runnext);
 * with 2 P the peer may sit on the other P, so wake-ups and stealing show.
 * Go: perf/go (chan_pingpong); pthreads: a pipe ping-pong (perf/pthread).
 */
#include "bench_gort.h"

static gort_chan_t *pp_ping; /* main -> echo; set before the echo task starts */
static gort_chan_t *pp_pong; /* echo -> main */
static gort_wg_t pp_done;    /* the echo task's exit */

/* Echoes until ping is closed. */
static void pp_echo(void *arg)
{
    GORT_FRAME();
    int64_t v;
    while (gort_chan_recv(pp_ping, &v) == 0) {
        if (gort_chan_send(pp_pong, &v) != 0) {
            bench_fail("echo: send failed");
            break;
        }
    }
    gort_wg_done(&pp_done);
}

/* One round trip from the main task; returns 0 or -1 on a wrong value. */
static inline int pp_round(int64_t i)
{
    int64_t v = i;
    if (gort_chan_send(pp_ping, &v) != 0 || gort_chan_recv(pp_pong, &v) != 0 || v != i)
        return -1;
    return 0;
}

static void pp_main(void *argp)
{
    const bench_args_t *a = argp;
    pp_ping = gort_chan_make(sizeof(int64_t), 0);
    pp_pong = gort_chan_make(sizeof(int64_t), 0);
    if (!pp_ping || !pp_pong) {
        bench_fail("chan_make");
        return;
    }
    gort_wg_add(&pp_done, 1);
    if (gort_go(pp_echo, NULL) != 0) {
        bench_fail("gort_go");
        return;
    }
    int64_t i = 0;
    for (; i < 10000; i++) /* warm-up: both tasks started, caches hot */
        if (pp_round(i))
            goto out_close;

    int64_t rounds = 0;
    int64_t t0 = bench_now_ns();
    int64_t deadline = t0 + a->ms * 1000000;
    int64_t t1;
    for (;;) {
        for (int k = 0; k < 1024; k++, i++)
            if (pp_round(i))
                goto out_close;
        rounds += 1024;
        t1 = bench_now_ns();
        if (t1 >= deadline)
            break;
    }
    bench_record("chan_pingpong", "ns_per_op", (double)(t1 - t0) / (2.0 * rounds), NULL);
out_close:
    if (!bench_nresults)
        bench_fail("ping-pong: wrong value or failed op");
    gort_chan_close(pp_ping);
    gort_wg_wait(&pp_done);
    gort_chan_free(pp_ping);
    gort_chan_free(pp_pong);
}

int main(int argc, char **argv) { return bench_gort_main(pp_main, argc, argv); }
