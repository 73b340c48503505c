/* tests/stackmap/test_rtcall.c — a public runtime call begins with GORT_FRAME's stack
 * check (RT_ENTRY_CHECK, core/rt.h): it grows a short stack, it moves the stack at every
 * call under stackmove=1, and the caller's pointer arguments into its own stack (in
 * registers at the check) follow the move in every mode, stackreloc=precise too. */
/* ctest-timeout: 60 */
#include "grow_cases.h"

/* GORT_DEBUG plus knob for one run, then what it was (CK_FORK=no runs every test in
 * one process). */
static void run_with(const char *knob, void (*fn)(void *), void *arg, int procs)
{
    char *saved = test_debug_push(knob);
    test_run(fn, arg, procs, 0);
    test_debug_restore(saved);
}

/* ------------------------------------------------ stress: a move at every call */

enum { ROUNDS = 40 };

struct pair {
    uint64_t a, b;
};

static struct {
    uint64_t bad;      /* a value that came back wrong */
    uint64_t calls;    /* runtime calls made */
    uint64_t unmoved;  /* calls after which the stack was where it was before */
    uint64_t child_sum;
} st;
static _Atomic uint64_t child_sum;
static gort_mutex_t mu;
static gort_wg_t wg;

static void child_task(void *arg)
{
    GORT_FRAME();
    const struct pair *p = arg; /* the args copy at the top of this task's stack */
    atomic_fetch_add(&child_sum, p->a * 3 + p->b);
    gort_wg_done(&wg);
}

/* The stack_lo before a call, kept in a global: in a register or a stack slot the value
 * lies in the old stack's range and the conservative layer would relocate it with the
 * stack (and the compiler is free to keep any disguise of it undone). */
static uintptr_t lo_before;

/* Calls `call` and counts it, and whether this task's stack moved across it. */
#define COUNTED(call)                                                                  \
    do {                                                                               \
        lo_before = g_self()->stack_lo;                                                \
        call;                                                                          \
        st.calls++;                                                                    \
        st.unmoved += g_self()->stack_lo == lo_before;                                 \
    } while (0)

static void ptr_task(void *arg)
{
    GORT_FRAME();
    gort_chan_t *c = arg;
    uint64_t want_children = 0;
    for (uint64_t i = 1; i <= ROUNDS; i++) {
        uint64_t v = i * 0x9e3779b97f4a7c15ull, out = 0;
        int rc;
        COUNTED(rc = gort_chan_send(c, &v));
        st.bad += rc != 0;
        COUNTED(rc = gort_chan_recv(c, &out));
        st.bad += rc != 0 || out != v;
        v = ~v;
        out = 0;
        COUNTED(rc = gort_chan_try_send(c, &v));
        st.bad += rc != 0;
        COUNTED(rc = gort_chan_try_recv(c, &out));
        st.bad += rc != 0 || out != v;
        /* the case array and the values it points to live in this frame */
        v += i;
        out = 0;
        gort_case_t cs = {.chan = c, .op = GORT_SEND, .elem = &v};
        COUNTED(rc = gort_select(&cs, 1, -1));
        st.bad += rc != 0 || cs.result != 0;
        cs = (gort_case_t){.chan = c, .op = GORT_RECV, .elem = &out};
        COUNTED(rc = gort_select(&cs, 1, -1));
        st.bad += rc != 0 || out != v;
        /* spawn arguments copied from this frame */
        struct pair p = {i, i * 7};
        want_children += p.a * 3 + p.b;
        COUNTED(gort_wg_add(&wg, 1));
        COUNTED(rc = gort_go_with(child_task, &p, sizeof p));
        st.bad += rc != 0;
        COUNTED(gort_mutex_lock(&mu));
        COUNTED(gort_mutex_unlock(&mu));
        COUNTED(gort_yield());
    }
    COUNTED(gort_wg_wait(&wg));
    st.bad += atomic_load(&child_sum) != want_children;
}

static void ptr_main(void *arg)
{
    gort_chan_t *c = gort_chan_make(sizeof(uint64_t), 1);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(gort_go(ptr_task, c), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    ck_assert_int_eq(gort_chan_free(c), 0);
}

static void check_ptr_run(int procs)
{
    memset(&st, 0, sizeof st);
    memset(&mu, 0, sizeof mu);
    memset(&wg, 0, sizeof wg);
    atomic_store(&child_sum, 0);
    run_with("stackmove=1", ptr_main, NULL, procs);
    ck_assert_uint_eq(st.bad, 0);
    ck_assert_uint_eq(st.calls, ROUNDS * 11 + 1);
    /* every call moved the stack: the entry check, with the guard at the top */
    ck_assert_uint_eq(st.unmoved, 0);
}

START_TEST(test_stress_moves_at_every_call_1p)
{
    check_ptr_run(1);
}
END_TEST

START_TEST(test_stress_moves_at_every_call_2p)
{
    check_ptr_run(2);
}
END_TEST

/* ------------------------------------------- growth at the call, any relocation */

static gort_chan_t *grow_chan;
static struct {
    int rc;
    uint64_t out;
    bool grew;
} gr;

/* Descends without a check of its own until the frame is under the guard (inside the
 * slack), then receives into a local: the receive's entry check must grow the stack,
 * and `out`'s address, passed in a register, must follow, or the value lands in the
 * old block and `out` stays 0. */
static NOINLINE uint64_t dive_then_recv(uint64_t n)
{
    volatile uint64_t pad[2] = {n, n + 1};
    g_t *g = g_self();
    if ((uintptr_t)__builtin_frame_address(0) >= g->stackguard) {
        uint64_t r = dive_then_recv(n + 1);
        __asm__ volatile("" ::: "memory"); /* no tail call: the frames stay */
        return r + pad[0];
    }
    uint64_t out = 0;
    lo_before = g->stack_lo; /* a global: see COUNTED */
    gr.rc = gort_chan_recv(grow_chan, &out);
    gr.out = out;
    gr.grew = g_self()->stack_lo != lo_before;
    return pad[1];
}

static void dive_task(void *arg)
{
    GORT_FRAME();
    dive_then_recv(0);
}

static void dive_main(void *arg)
{
    grow_chan = gort_chan_make(sizeof(uint64_t), 1);
    ck_assert_ptr_nonnull(grow_chan);
    uint64_t v = 0x5eed0123456789abull;
    ck_assert_int_eq(gort_chan_send(grow_chan, &v), 0);
    ck_assert_int_eq(gort_go(dive_task, NULL), 0);
    while (gort_ntasks() > 1)
        gort_yield();
    ck_assert_int_eq(gort_chan_free(grow_chan), 0);
}

static void check_dive(const char *knob)
{
    memset(&gr, 0, sizeof gr);
    run_with(knob, dive_main, NULL, 1);
    ck_assert_int_eq(gr.rc, 0);
    ck_assert(gr.grew);
    ck_assert_msg(gr.out == 0x5eed0123456789abull, "received %#llx",
                  (unsigned long long)gr.out);
}

START_TEST(test_grows_at_call)
{
    check_dive("");
}
END_TEST

START_TEST(test_grows_at_call_precise)
{
#if defined(GORT_ASAN) || defined(GORT_TSAN)
    return; /* precise-only relocation is for normal builds (test_precise.c says why) */
#endif
    check_dive("stackreloc=precise");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stackmap_rtcall");
    TCase *tc = tcase_create("rtcall");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stress_moves_at_every_call_1p);
    tcase_add_test(tc, test_stress_moves_at_every_call_2p);
    tcase_add_test(tc, test_grows_at_call);
    tcase_add_test(tc, test_grows_at_call_precise);
    suite_add_tcase(s, tc);
    return test_main(s);
}
