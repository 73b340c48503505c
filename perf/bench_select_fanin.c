/* perf/bench_select_fanin.c — (f) select fan-in: 4 producer tasks each send on their
 * own unbuffered channel; the main task receives with one gort_select over the 4.
 * Result: elapsed / messages received. At the deadline the consumer raises a flag;
 * each producer sees it, closes its channel and exits; the consumer drops closed
 * cases (NULL chan) and stops when all 4 are closed. Received == sent is checked.
 */
#include "bench_gort.h"

#define SF_PRODUCERS 4

static gort_chan_t *fan_chan[SF_PRODUCERS]; /* set by main before the spawns */
static _Atomic int fan_stop;                /* relaxed: a polled flag, orders nothing */
static _Atomic int64_t fan_sent;            /* summed at producer exit; read after the
                                               consumer saw every close, which orders it */

static void fan_producer(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = arg;
    int64_t n = 0;
    int64_t v = 1;
    while (!atomic_load_explicit(&fan_stop, memory_order_relaxed)) {
        if (gort_chan_send(c, &v) != 0) {
            bench_fail("producer: send failed");
            break;
        }
        n++;
    }
    atomic_fetch_add_explicit(&fan_sent, n, memory_order_relaxed);
    gort_chan_close(c);
}

/* One fan-in run of `ms` milliseconds; records the result when `record`. */
static int fan_round(int64_t ms, int record)
{
    atomic_store_explicit(&fan_stop, 0, memory_order_relaxed);
    atomic_store_explicit(&fan_sent, 0, memory_order_relaxed);
    gort_case_t cs[SF_PRODUCERS];
    int64_t vals[SF_PRODUCERS];
    for (int i = 0; i < SF_PRODUCERS; i++) {
        fan_chan[i] = gort_chan_make(sizeof(int64_t), 0);
        if (!fan_chan[i]) {
            bench_fail("chan_make");
            return -1;
        }
        cs[i] = (gort_case_t){.chan = fan_chan[i], .op = GORT_RECV, .elem = &vals[i]};
    }
    int64_t t0 = bench_now_ns();
    int64_t deadline = t0 + ms * 1000000;
    for (int i = 0; i < SF_PRODUCERS; i++)
        if (gort_go(fan_producer, fan_chan[i]) != 0) {
            bench_fail("gort_go"); /* main returns: gort_run discards the rest */
            return -1;
        }
    int64_t got = 0;
    int64_t sum = 0;
    int open = SF_PRODUCERS;
    while (open > 0) {
        int k = gort_select(cs, SF_PRODUCERS, -1);
        if (k < 0 || k >= SF_PRODUCERS) {
            bench_fail("select returned an error");
            return -1;
        }
        if (cs[k].result == -EPIPE) {
            cs[k].chan = NULL;
            open--;
            continue;
        }
        got++;
        sum += vals[k];
        if ((got & 1023) == 0 && bench_now_ns() >= deadline)
            atomic_store_explicit(&fan_stop, 1, memory_order_relaxed);
    }
    int64_t t1 = bench_now_ns();
    for (int i = 0; i < SF_PRODUCERS; i++) {
        gort_chan_free(fan_chan[i]);
        fan_chan[i] = NULL;
    }
    if (got != atomic_load_explicit(&fan_sent, memory_order_relaxed) || sum != got) {
        bench_fail("select fan-in: received != sent");
        return -1;
    }
    if (record)
        bench_record("select_fanin", "ns_per_op", (double)(t1 - t0) / (double)got, NULL);
    return 0;
}

static void fan_main(void *argp)
{
    const bench_args_t *a = argp;
    if (fan_round(20, 0) == 0)
        fan_round(a->ms, 1);
}

int main(int argc, char **argv) { return bench_gort_main(fan_main, argc, argv); }
