/* scripts/consumer/consumer.c — a program built against an *installed* gort, by
 * scripts/install_consumer.sh (the `install_consumer` ctest): once with pkg-config,
 * once with find_package(gort), each against the static and the shared library.
 * It prints "consumer ok 5050" when a producer task's 100 values arrived in order. */
#include <gort.h>
#include <stdio.h>
#include <stdlib.h>

static gort_chan_t *ch; /* shared by the two tasks: a global, never a stack object */
static long sum;
static int in_order = 1;

static void producer(void *arg)
{
    GORT_FRAME();
    for (long i = 1; i <= 100; i++)
        gort_chan_send(ch, &i);
    gort_chan_close(ch);
}

static void consumer_main(void *arg)
{
    GORT_FRAME();
    ch = gort_chan_make(sizeof(long), 4);
    if (!ch || gort_go(producer, NULL) != 0)
        exit(1);
    long v, want = 1;
    while (gort_chan_recv(ch, &v) == 0) {
        in_order &= v == want++;
        sum += v;
    }
    gort_chan_free(ch);
}

int main(void)
{
    int rc = gort_run(consumer_main, NULL, NULL);
    if (rc != 0 || !in_order || sum != 5050) {
        fprintf(stderr, "consumer: gort_run=%d in_order=%d sum=%ld\n", rc, in_order, sum);
        return 1;
    }
    printf("consumer ok %ld\n", sum);
    return 0;
}
