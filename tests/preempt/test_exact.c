/* tests/preempt/test_exact.c — a preempted task resumes with exactly its state: every
 * general register, rbp, ymm0-15, a live carry flag and its red zone, checked while it
 * is stopped asynchronously at least EXACT_STOPS times (100 us slice, sysmon kicks for
 * sleepers, and a thread calling preempt_request_all in a loop), on 1 and 2 Ps (with
 * stealing: a preempted task goes to the global runq and any P may take it). */
/* ctest-env: GORT_TIMESLICE_US=100 */
/* ctest-timeout: 120 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "preempt/preempt.h"

/* uint64_t exact_spin(uint64_t iters, uint64_t seed, uint64_t out[72]):
 * out[0..15]: rax rbx rcx rdx rsi rdi r8 r9 r10 r11 r12 r13 r14 r15 rbp fail;
 * out[16..]: ymm0-15 (4 lanes each). A leaf function: its red zone is its own. */
__asm__(".text\n"
        ".globl exact_spin\n"
        ".type exact_spin,@function\n"
        "exact_spin:\n"
        "  pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
        "  pushq %rdx\n"
        "  movq %rdi, %r14\n"
        "  vmovq %rsi, %xmm0\n vpbroadcastq %xmm0, %ymm0\n"
        "  movl $1, %eax\n vmovq %rax, %xmm15\n vpbroadcastq %xmm15, %ymm15\n"
        "  vpaddq %ymm15, %ymm0, %ymm1\n vpaddq %ymm15, %ymm1, %ymm2\n"
        "  vpaddq %ymm15, %ymm2, %ymm3\n vpaddq %ymm15, %ymm3, %ymm4\n"
        "  vpaddq %ymm15, %ymm4, %ymm5\n vpaddq %ymm15, %ymm5, %ymm6\n"
        "  vpaddq %ymm15, %ymm6, %ymm7\n vpaddq %ymm15, %ymm7, %ymm8\n"
        "  vpaddq %ymm15, %ymm8, %ymm9\n vpaddq %ymm15, %ymm9, %ymm10\n"
        "  vpaddq %ymm15, %ymm10, %ymm11\n vpaddq %ymm15, %ymm11, %ymm12\n"
        "  vpaddq %ymm15, %ymm12, %ymm13\n vpaddq %ymm15, %ymm13, %ymm14\n"
        "  movq %rsi, %rax\n"
        "  leaq 1(%rsi), %rbx\n leaq 2(%rsi), %rcx\n leaq 3(%rsi), %rdx\n"
        "  leaq 5(%rsi), %rdi\n leaq 6(%rsi), %r8\n leaq 7(%rsi), %r9\n"
        "  leaq 8(%rsi), %r10\n leaq 9(%rsi), %r11\n leaq 10(%rsi), %r12\n"
        "  leaq 12(%rsi), %r15\n leaq 13(%rsi), %rbp\n leaq 4(%rsi), %rsi\n"
        "  xorl %r13d, %r13d\n"
        "1:\n"
        "  movq %rax, -8(%rsp)\n  movq %rbx, -128(%rsp)\n"
        "  addq $1, -8(%rsp)\n  addq $3, -128(%rsp)\n"
        "  btq $0, %r14\n" /* CF = counter bit 0, live until the adc */
        "  leaq 1(%rax), %rax\n leaq 3(%rbx), %rbx\n leaq 5(%rcx), %rcx\n"
        "  leaq 7(%rdx), %rdx\n leaq 11(%rsi), %rsi\n leaq 13(%rdi), %rdi\n"
        "  leaq 17(%r8), %r8\n leaq 19(%r9), %r9\n leaq 23(%r10), %r10\n"
        "  leaq 29(%r11), %r11\n leaq 31(%r12), %r12\n leaq 37(%r15), %r15\n"
        "  leaq 41(%rbp), %rbp\n"
        "  vpaddq %ymm15, %ymm0, %ymm0\n vpaddq %ymm15, %ymm1, %ymm1\n"
        "  vpaddq %ymm15, %ymm2, %ymm2\n vpaddq %ymm15, %ymm3, %ymm3\n"
        "  vpaddq %ymm15, %ymm4, %ymm4\n vpaddq %ymm15, %ymm5, %ymm5\n"
        "  vpaddq %ymm15, %ymm6, %ymm6\n vpaddq %ymm15, %ymm7, %ymm7\n"
        "  vpaddq %ymm15, %ymm8, %ymm8\n vpaddq %ymm15, %ymm9, %ymm9\n"
        "  vpaddq %ymm15, %ymm10, %ymm10\n vpaddq %ymm15, %ymm11, %ymm11\n"
        "  vpaddq %ymm15, %ymm12, %ymm12\n vpaddq %ymm15, %ymm13, %ymm13\n"
        "  vpaddq %ymm15, %ymm14, %ymm14\n"
        "  adcq $0, %r13\n"
        "  cmpq -8(%rsp), %rax\n jne 2f\n"
        "  cmpq -128(%rsp), %rbx\n jne 2f\n"
        "  decq %r14\n"
        "  jnz 1b\n"
        "  xorl %r14d, %r14d\n jmp 3f\n"
        "2: movl $1, %r14d\n"
        "3:\n"
        "  xchgq %rax, (%rsp)\n" /* rax = out, the old rax on the stack */
        "  movq %rbx, 8(%rax)\n movq %rcx, 16(%rax)\n movq %rdx, 24(%rax)\n"
        "  movq %rsi, 32(%rax)\n movq %rdi, 40(%rax)\n movq %r8, 48(%rax)\n"
        "  movq %r9, 56(%rax)\n movq %r10, 64(%rax)\n movq %r11, 72(%rax)\n"
        "  movq %r12, 80(%rax)\n movq %r13, 88(%rax)\n movq %r15, 104(%rax)\n"
        "  movq %rbp, 112(%rax)\n movq %r14, 120(%rax)\n movq $0, 96(%rax)\n"
        "  vmovdqu %ymm0, 128(%rax)\n vmovdqu %ymm1, 160(%rax)\n"
        "  vmovdqu %ymm2, 192(%rax)\n vmovdqu %ymm3, 224(%rax)\n"
        "  vmovdqu %ymm4, 256(%rax)\n vmovdqu %ymm5, 288(%rax)\n"
        "  vmovdqu %ymm6, 320(%rax)\n vmovdqu %ymm7, 352(%rax)\n"
        "  vmovdqu %ymm8, 384(%rax)\n vmovdqu %ymm9, 416(%rax)\n"
        "  vmovdqu %ymm10, 448(%rax)\n vmovdqu %ymm11, 480(%rax)\n"
        "  vmovdqu %ymm12, 512(%rax)\n vmovdqu %ymm13, 544(%rax)\n"
        "  vmovdqu %ymm14, 576(%rax)\n vmovdqu %ymm15, 608(%rax)\n"
        "  vzeroupper\n"
        "  popq %rdx\n movq %rdx, (%rax)\n"
        "  popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
        "  ret\n"
        ".size exact_spin, .-exact_spin\n");
uint64_t exact_spin(uint64_t iters, uint64_t seed, uint64_t out[80]);

static _Atomic long exact_bad;
static _Atomic long exact_runs;
static volatile int exact_stop;

static _Atomic int exact_first_bad = -1;
static uint64_t exact_bad_got, exact_bad_want;

static int exact_note(int idx, uint64_t got, uint64_t want)
{
    if (got == want)
        return 0;
    int none = -1;
    if (atomic_compare_exchange_strong(&exact_first_bad, &none, idx)) {
        exact_bad_got = got;
        exact_bad_want = want;
    }
    return 1;
}

static int exact_check(uint64_t n, uint64_t s, const uint64_t *o)
{
    static const uint64_t init[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 12, 13, 0};
    static const uint64_t inc[16] = {1, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 0, 0, 37, 41, 0};
    int bad = 0;
    for (int r = 0; r < 15; r++) {
        if (r == 11 || r == 12)
            continue;
        bad |= exact_note(r, o[r], s + init[r] + n * inc[r]);
    }
    bad |= exact_note(11, o[11], (n + 1) / 2); /* r13: odd counter values seen by adc */
    bad |= exact_note(15, o[15], 0);          /* red zone check inside the loop */
    for (int y = 0; y < 15; y++)
        for (int l = 0; l < 4; l++)
            bad |= exact_note(16 + 4 * y + l, o[16 + 4 * y + l], s + (uint64_t)y + n);
    for (int l = 0; l < 4; l++)
        bad |= exact_note(76 + l, o[76 + l], 1);
    return bad;
}

static void exact_task(void *arg)
{
    GORT_FRAME();
    uint64_t out[80];
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x10001;
    while (!exact_stop) {
        uint64_t n = 200000 + (seed & 0xffff);
        memset(out, 0, sizeof out);
        exact_spin(n, seed, out);
        if (exact_check(n, seed, out))
            atomic_fetch_add(&exact_bad, 1);
        atomic_fetch_add(&exact_runs, 1);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        seed >>= 8;
    }
}

static void exact_sleeper(void *arg)
{
    GORT_FRAME();
    while (!exact_stop)
        gort_sleep(300000);
}

/* Each run needs this many asynchronous stops and completed, checked spins before it
 * ends; EXACT_CAP_NS bounds the wait (against hangs, not a timing assertion). */
#define EXACT_STOPS 1000
#define EXACT_RUNS 10
#define EXACT_CAP_NS (40 * 1000000000ll)

static volatile int kicker_stop;

static void *kicker(void *arg)
{
    struct timespec ts = {0, 50000};
    while (!kicker_stop) {
        preempt_request_all();
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void exact_main(void *arg)
{
    int tasks = 4;
    for (intptr_t i = 0; i < tasks; i++)
        ck_assert_int_eq(gort_go_opts(&(gort_go_opts_t){.stack_min = 16384}, exact_task,
                                      (void *)(i + 1)),
                         0);
    ck_assert_int_eq(gort_go(exact_sleeper, NULL), 0);
    pthread_t k;
    kicker_stop = 0;
    ck_assert_int_eq(pthread_create(&k, NULL, kicker, NULL), 0);
    /* Count-based, not timed: run until enough stops and checked runs happened (a
     * loaded machine only takes longer); the cap is against hangs only. */
    gort_stats_t st;
    int64_t deadline = gort_now() + EXACT_CAP_NS;
    do {
        gort_sleep(10 * 1000000ll);
        gort_stats(&st);
    } while ((st.preempt_async < EXACT_STOPS || atomic_load(&exact_runs) < EXACT_RUNS) &&
             gort_now() < deadline);
    kicker_stop = 1;
    pthread_join(k, NULL);
    exact_stop = 1;
    gort_stats(&st);
    fprintf(stderr, "exact procs=%d: runs %ld bad %ld async %lu coop %lu\n", (int)(intptr_t)arg,
            atomic_load(&exact_runs), atomic_load(&exact_bad), (unsigned long)st.preempt_async,
            (unsigned long)st.preempt_coop);
    if (atomic_load(&exact_bad))
        fprintf(stderr, "first bad: out[%d] = %#lx, want %#lx\n", atomic_load(&exact_first_bad),
                (unsigned long)exact_bad_got, (unsigned long)exact_bad_want);
    ck_assert_int_eq(atomic_load(&exact_bad), 0);
    ck_assert_int_ge(atomic_load(&exact_runs), EXACT_RUNS);
    ck_assert_uint_ge(st.preempt_async, EXACT_STOPS);
    gort_sleep(2000000); /* let the tasks see exact_stop */
}

static void exact_run(int procs)
{
    atomic_store(&exact_bad, 0);
    atomic_store(&exact_first_bad, -1);
    atomic_store(&exact_runs, 0);
    exact_stop = 0;
    gort_config_t cfg = {.procs = procs, .timeslice_us = 100};
    test_run_cfg(exact_main, (void *)(intptr_t)procs, &cfg, 0);
}

START_TEST(exact_1p) { exact_run(1); }
END_TEST
START_TEST(exact_2p) { exact_run(2); }
END_TEST

int main(void)
{
    Suite *s = suite_create("preempt_exact");
    TCase *tc = tcase_create("exact");
    tcase_set_timeout(tc, 100); /* > EXACT_CAP_NS */
    if (__builtin_cpu_supports("avx2")) {
        tcase_add_test(tc, exact_1p);
        tcase_add_test(tc, exact_2p);
    }
    suite_add_tcase(s, tc);
    return test_main(s);
}
