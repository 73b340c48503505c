/* perf/malloc/bench_malloc.c — the cost of malloc+free: the program's malloc as linked
 * (jemalloc here; libgort_trackheap under LD_PRELOAD) against glibc's own allocator
 * (__libc_malloc/__libc_free, still in libc when malloc is replaced).
 *
 *   bench_malloc MODE THREADS OPS     MODE: malloc | glibc
 *
 * Each thread keeps 256 live blocks and replaces one per op (free + malloc of a size
 * from 16 to 4096 bytes, a fixed sequence per thread), touching the first byte of
 * each; one RESULT line with ns per op (one free + one malloc), wall time divided by
 * the ops of one thread. perf/README.md ("malloc") runs it three ways.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

enum { SLOTS = 256 };
static int use_glibc;
static long ops;
static pthread_barrier_t start;

static void *worker(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    void *slot[SLOTS] = {0};
    unsigned long sum = 0;
    pthread_barrier_wait(&start);
    for (long i = 0; i < ops; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        unsigned k = (unsigned)(rng % SLOTS);
        size_t n = 16 + (size_t)((rng >> 16) % 4081);
        if (use_glibc) {
            __libc_free(slot[k]);
            slot[k] = __libc_malloc(n);
        } else {
            free(slot[k]);
            slot[k] = malloc(n);
        }
        *(volatile char *)slot[k] = (char)i;
        sum += (uintptr_t)slot[k] & 1;
    }
    for (int k = 0; k < SLOTS; k++)
        use_glibc ? __libc_free(slot[k]) : free(slot[k]);
    return (void *)sum;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "malloc") && strcmp(argv[1], "glibc"))) {
        fprintf(stderr, "usage: bench_malloc malloc|glibc THREADS OPS\n");
        return 2;
    }
    use_glibc = !strcmp(argv[1], "glibc");
    int nt = atoi(argv[2]);
    ops = atol(argv[3]);
    if (nt < 1 || nt > 64 || ops < 1) {
        fprintf(stderr, "bench_malloc: THREADS in 1..64, OPS > 0\n");
        return 2;
    }
    pthread_t th[64];
    pthread_barrier_init(&start, NULL, (unsigned)nt + 1);
    for (int i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i);
    struct timespec t0, t1;
    pthread_barrier_wait(&start);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nt; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("RESULT bench=malloc mode=%s threads=%d ops=%ld ns_per_op=%.1f\n", argv[1], nt,
           ops, ns / (double)ops);
    return 0;
}
