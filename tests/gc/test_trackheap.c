/* tests/gc/test_trackheap.c — the tracked-heap mode: this binary links
 * libgort_trackheap (static, first on the link line), so the program's malloc is the
 * layer and the leak detector traces malloc'd blocks.
 *  - a task leaked on a channel that lives only in a malloc'd struct (two levels deep)
 *    passed as its argument is found, with its wait reason; with GORT_DEBUG=trackheap=0
 *    (the heap a root again) the same shape reports nothing: the layer is what finds it;
 *  - its fixed twin (another live task keeps the struct) reports 0;
 *  - the malloc family behaves: values kept across realloc, calloc zeroes, alignment
 *    honoured, ENOMEM/EINVAL where due, free(NULL), malloc_usable_size;
 *  - threads and tasks malloc/free in parallel while the detector runs on 2 Ps: no
 *    block is damaged and nothing is reported.
 * Each leak shape runs on 1 and 2 Ps and retries in a fresh layout as
 * test_leak_shapes.c does (a stale word can hide a leak, never invent one). */
/* ctest-trackheap: link */
/* ctest-no-asan: ASan replaces malloc itself; the layer is not built there (and the
 * TSan build leaves this suite out: no ctest-tsan marker). */
/* ctest-timeout: 180 */
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "leak_testutil.h"

/* ------------------------------------------------------------- the shape */

typedef struct inner {
    gort_chan_t *c;
    long pad[5];
} inner_t;

typedef struct outer {
    int tag;
    inner_t *in;
} outer_t;

/* Receives on o->in->c; when cancelled (or woken), frees the structs itself. */
static void t_recv_struct(void *arg)
{
    GORT_FRAME();
    outer_t *o = arg;
    int v;
    note_rc(gort_chan_recv(o->in->c, &v));
    free(o->in);
    free(o);
    atomic_fetch_add(&finished, 1);
}

static _Atomic int keeper_stop;

/* The fixed twin: a live task (it sleeps, so it is a root) holds the struct and
 * will send on its channel. */
static void t_keeper(void *arg)
{
    GORT_FRAME();
    outer_t *volatile o = *(outer_t **)arg;
    while (!atomic_load(&keeper_stop))
        gort_sleep(2000000);
    int v = 1;
    ck_assert_int_eq(gort_chan_send(o->in->c, &v), 0);
    atomic_fetch_add(&finished, 1);
}

static NOINLINE void shape_build(int fixed)
{
    outer_t *o = malloc(sizeof *o);
    ck_assert_ptr_nonnull(o);
    o->tag = 7;
    o->in = calloc(1, sizeof *o->in);
    ck_assert_ptr_nonnull(o->in);
    o->in->c = mkchan(0); /* hidden copy: freed at the end, never keeps it alive */
    ck_assert_int_eq(gort_go(t_recv_struct, o), 0);
    if (fixed)
        ck_assert_int_eq(gort_go_with(t_keeper, &o, sizeof o), 0);
    o = NULL;
    __asm__ volatile("" : : "r"(o) : "memory");
}

static int cur_fixed, cur_mode_off, shape_found;

static NOINLINE void check_record(void)
{
    gort_leak_t out[4];
    memset(out, 0, sizeof out);
    ck_assert_int_eq(gort_leaks(out, 4), 1);
    ck_assert_str_eq(out[0].wait, "chan receive");
    ck_assert_msg(strstr(out[0].spawn_site, "shape_build"), "spawn site %s", out[0].spawn_site);
    memset(out, 0, sizeof out);
    __asm__ volatile("" : : "r"(out) : "memory");
}

static void shape_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    atomic_store(&keeper_stop, 0);
    ck_assert_int_eq(gort_trackheap_status(), cur_mode_off ? 0 : 1);
    shape_build(cur_fixed);
    if (cur_fixed || cur_mode_off) {
        int n = leaks_after_settling();
        if (n)
            gort_leakcheck(stderr);
        ck_assert_msg(n == 0, "%s: %d leaked", cur_fixed ? "fixed twin" : "trackheap=0", n);
        /* wake the receiver: the keeper sends (fixed), or the channel is closed */
        if (cur_fixed)
            atomic_store(&keeper_stop, 1);
        else
            close_hidden();
        int want = cur_fixed ? 2 : 1;
        for (int i = 0; i < 5000 && atomic_load(&finished) < want; i++)
            gort_sleep(1000000);
        ck_assert_int_eq(atomic_load(&finished), want);
        free_hidden();
        return;
    }
    int n = leaks_settle(1);
    ck_assert_msg(n >= 0 && n <= 1, "%d leaked, want 1", n);
    if (n < 1) {
        fprintf(stderr, "malloc'd struct leak: not found; retrying with a fresh layout\n");
        close_hidden_and_reap(1);
        return;
    }
    shape_found = 1;
    check_record();
    cancel_and_reap(1, 1); /* the task frees the structs */
    ck_assert_found(atomic_load(&cancelled), 1);
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
    free_hidden();
}

static void with_debug(const char *knob, void (*fn)(void *), int procs)
{
    char *saved = test_debug_push(knob);
    test_run(fn, NULL, procs, 0);
    test_debug_restore(saved);
}

START_TEST(test_leak_through_malloc_found)
{
    ck_assert_int_eq(gort_trackheap_status(), 1); /* outside a run: the layer is linked */
    cur_fixed = 0;
    cur_mode_off = 0;
    shape_found = 0;
    for (int attempt = 0; attempt < 5 && !shape_found; attempt++) {
        void *ballast[8];
        for (int i = 0; i < 8; i++) /* a different layout per attempt */
            ballast[i] = malloc(48 + 16 * (size_t)attempt * (size_t)i);
        test_run(shape_main, NULL, 1 + _i, 0);
        for (int i = 0; i < 8; i++)
            free(ballast[i]);
    }
    if (LEAK_FOUND_STRICT)
        ck_assert_msg(shape_found, "never found in 5 layouts (%d P)", 1 + _i);
}
END_TEST

START_TEST(test_leak_through_malloc_fixed)
{
    cur_fixed = 1;
    cur_mode_off = 0;
    test_run(shape_main, NULL, 1 + _i, 0);
}
END_TEST

START_TEST(test_trackheap_off_heap_is_root)
{
    cur_fixed = 0;
    cur_mode_off = 1;
    with_debug("trackheap=0", shape_main, 1 + _i);
}
END_TEST

/* trackheap=1 with the layer linked: the mode is on, the detector answers. */
static void required_main(void *arg)
{
    GORT_FRAME();
    ck_assert_int_eq(gort_trackheap_status(), 1);
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
    ck_assert_int_eq(gort_leakcheck_interval(0), 0);
}

START_TEST(test_trackheap_required_and_present)
{
    with_debug("trackheap=1", required_main, 1);
}
END_TEST

/* ------------------------------------------------------------- the malloc family */

START_TEST(test_malloc_family)
{
    volatile size_t huge = SIZE_MAX / 2; /* volatile: the compiler would reject the calls */
    free(NULL);
    ck_assert_uint_eq(malloc_usable_size(NULL), 0);
    /* realloc keeps values while growing (in place or moved) and shrinking */
    size_t n = 4;
    unsigned *a = malloc(n * sizeof *a);
    ck_assert_ptr_nonnull(a);
    for (size_t i = 0; i < n; i++)
        a[i] = (unsigned)i * 2654435761u;
    for (; n < (1u << 20); n *= 3) {
        a = realloc(a, n * 3 * sizeof *a);
        ck_assert_ptr_nonnull(a);
        ck_assert_uint_ge(malloc_usable_size(a), n * 3 * sizeof *a);
        for (size_t i = 0; i < n; i++)
            ck_assert_uint_eq(a[i], (unsigned)i * 2654435761u);
        for (size_t i = n; i < n * 3; i++)
            a[i] = (unsigned)i * 2654435761u;
    }
    for (; n > 4; n /= 5) {
        a = realloc(a, n * sizeof *a);
        ck_assert_ptr_nonnull(a);
        for (size_t i = 0; i < n; i++)
            ck_assert_uint_eq(a[i], (unsigned)i * 2654435761u);
    }
    errno = 0;
    ck_assert_ptr_null(realloc(a, 0)); /* frees, as glibc's */
    /* calloc zeroes (also memory that held data before) and checks the product */
    for (int r = 0; r < 4; r++) {
        unsigned char *d = malloc(3000);
        memset(d, 0xab, 3000);
        free(d);
        unsigned char *z = calloc(30, 100);
        ck_assert_ptr_nonnull(z);
        for (int i = 0; i < 3000; i++)
            ck_assert_uint_eq(z[i], 0);
        free(z);
    }
    errno = 0;
    ck_assert_ptr_null(calloc(huge, 3));
    ck_assert_int_eq(errno, ENOMEM);
    /* alignment */
    for (size_t al = 8; al <= 65536; al *= 2) {
        void *p = NULL;
        ck_assert_int_eq(posix_memalign(&p, al, 100), 0);
        ck_assert_uint_eq((uintptr_t)p % al, 0);
        memset(p, 1, 100);
        free(p);
        p = aligned_alloc(al, al * 2);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % al, 0);
        free(p);
        p = memalign(al, 10);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % al, 0);
        free(p);
    }
    void *p = NULL;
    ck_assert_int_eq(posix_memalign(&p, 24, 100), EINVAL);
    ck_assert_int_eq(posix_memalign(&p, 4, 100), EINVAL);
    errno = 0;
    ck_assert_ptr_null(aligned_alloc(48, 96));
    ck_assert_int_eq(errno, EINVAL);
    long pg = sysconf(_SC_PAGESIZE);
    p = valloc(10);
    ck_assert_uint_eq((uintptr_t)p % (uintptr_t)pg, 0);
    free(p);
    p = pvalloc(10);
    ck_assert_uint_eq((uintptr_t)p % (uintptr_t)pg, 0);
    ck_assert_uint_ge(malloc_usable_size(p), (size_t)pg);
    free(p);
    /* huge sizes: ENOMEM, nothing changed */
    errno = 0;
    ck_assert_ptr_null(malloc(huge));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(posix_memalign(&p, 64, huge), ENOMEM);
    errno = 0;
    ck_assert_ptr_null(aligned_alloc(64, huge * 2 + 1));
    ck_assert_int_eq(errno, ENOMEM);
    char *s = malloc(16);
    strcpy(s, "kept");
    errno = 0;
    ck_assert_ptr_null(realloc(s, huge));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_str_eq(s, "kept"); /* a failed realloc leaves the block alone */
    free(s);
    /* libc's own allocations come here too and work */
    char *d = strdup("through the layer");
    ck_assert_str_eq(d, "through the layer");
    ck_assert_uint_ge(malloc_usable_size(d), 18);
    free(d);
}
END_TEST

/* ------------------------------------------------------------- in parallel */

enum { PAR_THREADS = 4, PAR_TASKS = 8, PAR_SLOTS = 64 };
static _Atomic int par_stop;
static _Atomic long par_ops;
static _Atomic long par_bad; /* damaged blocks or failed calls */

/* No ck_assert in the loop: Check takes a process-wide pthread mutex in every
 * assertion, and a task stopped while holding it blocks every thread that asserts. */
#define PAR_CHECK(cond)                                                                  \
    do {                                                                                 \
        if (!(cond))                                                                     \
            atomic_fetch_add(&par_bad, 1);                                               \
    } while (0)

/* Keeps PAR_SLOTS blocks, each filled with a pattern from its own address and size;
 * replaces one at a time, checking the old one first. */
static void churn(uint64_t seed, bool task)
{
    void *slot[PAR_SLOTS] = {0};
    size_t len[PAR_SLOTS] = {0};
    uint64_t rng = seed;
    long ops = 0;
    while (!atomic_load_explicit(&par_stop, memory_order_relaxed)) {
        int i = (int)(test_rand(&rng) % PAR_SLOTS);
        if (slot[i]) {
            unsigned char *b = slot[i];
            unsigned char want = (unsigned char)((uintptr_t)b >> 4 ^ len[i]);
            for (size_t k = 0; k < len[i]; k += 61)
                PAR_CHECK(b[k] == want);
            if (test_rand(&rng) % 4 == 0) { /* realloc keeps the prefix */
                size_t nl = 16 + test_rand(&rng) % 4096;
                unsigned char *nb = realloc(b, nl);
                PAR_CHECK(nb != NULL);
                if (!nb)
                    break;
                size_t keep = nl < len[i] ? nl : len[i];
                for (size_t k = 0; k < keep; k += 61)
                    PAR_CHECK(nb[k] == want);
                b = nb;
                len[i] = nl;
                memset(b, (unsigned char)((uintptr_t)b >> 4 ^ nl), nl);
                slot[i] = b;
                ops++;
                continue;
            }
            free(b);
            slot[i] = NULL;
        } else {
            size_t n = 16 + test_rand(&rng) % 4096;
            unsigned char *b = test_rand(&rng) % 8 ? malloc(n) : calloc(1, n);
            PAR_CHECK(b != NULL);
            if (!b)
                break;
            memset(b, (unsigned char)((uintptr_t)b >> 4 ^ n), n);
            slot[i] = b;
            len[i] = n;
        }
        if (task && ++ops % 64 == 0)
            gort_yield();
        else if (!task)
            ops++;
    }
    for (int i = 0; i < PAR_SLOTS; i++)
        free(slot[i]);
    atomic_fetch_add(&par_ops, ops);
}

static void *par_thread(void *arg)
{
    churn((uint64_t)(uintptr_t)arg, false);
    return NULL;
}

static void t_par(void *arg)
{
    GORT_FRAME();
    churn((uint64_t)(uintptr_t)arg, true);
    atomic_fetch_add(&finished, 1);
}

static uint64_t par_seed;

static void par_main(void *arg)
{
    GORT_FRAME();
    counters_reset();
    pthread_t th[PAR_THREADS];
    for (int i = 0; i < PAR_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, par_thread,
                                        (void *)(uintptr_t)(par_seed + (uint64_t)i)), 0);
    for (int i = 0; i < PAR_TASKS; i++) {
        gort_go_opts_t o = {.stack_min = TEST_STACK};
        ck_assert_int_eq(gort_go_opts(&o, t_par, (void *)(uintptr_t)(par_seed + 100 + (uint64_t)i)), 0);
    }
    for (int c = 0; c < TEST_ITERS(40, 10); c++) {
        int n = gort_leaks(NULL, 0);
        ck_assert_msg(n == 0 || n == -EAGAIN, "cycle %d: %d leaked (seed %llu)", c, n,
                      (unsigned long long)par_seed);
        gort_sleep(1000000);
    }
    atomic_store(&par_stop, 1);
    for (int i = 0; i < PAR_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 5000 && atomic_load(&finished) < PAR_TASKS; i++)
        gort_sleep(1000000);
    ck_assert_int_eq(atomic_load(&finished), PAR_TASKS);
    ck_assert_int_eq(gort_leaks(NULL, 0), 0);
}

START_TEST(test_parallel_churn_with_detector)
{
    par_seed = test_seed("trackheap_parallel", 0x7ac4ea9);
    atomic_store(&par_stop, 0);
    atomic_store(&par_ops, 0);
    atomic_store(&par_bad, 0);
    test_run(par_main, NULL, 2, 0);
    ck_assert_int_gt(atomic_load(&par_ops), 1000);
    ck_assert_msg(atomic_load(&par_bad) == 0, "%ld damaged blocks or failed calls (seed %llu)",
                  atomic_load(&par_bad), (unsigned long long)par_seed);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gc_trackheap");
    TCase *tc = tcase_create("trackheap");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_leak_through_malloc_found, 0, 2);
    tcase_add_loop_test(tc, test_leak_through_malloc_fixed, 0, 2);
    tcase_add_loop_test(tc, test_trackheap_off_heap_is_root, 0, 2);
    tcase_add_test(tc, test_trackheap_required_and_present);
    tcase_add_test(tc, test_malloc_family);
    tcase_add_test(tc, test_parallel_churn_with_detector);
    suite_add_tcase(s, tc);
    return test_main(s);
}
