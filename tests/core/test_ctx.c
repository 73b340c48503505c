/* tests/core/test_ctx.c — cancellation contexts: propagation, timeouts, done channels
 * in select, double cancel, free of a parent, and a randomised concurrent stress.
 */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <stdatomic.h>

#include "internal.h"

#define MS 1000000LL
#define US 1000LL

static _Atomic int failures;
static void note_failure(void) { atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed); }
static int ld(_Atomic int *p) { return atomic_load(p); } /* plain value for ck_assert */

/* done is closed: a receive returns -EPIPE at once. */
static bool is_done(gort_ctx_t *c) { return gort_chan_try_recv(gort_ctx_done(c), NULL) == -EPIPE; }

/* ------------------------------------------------------------- the basics */

static void background_main(void *arg)
{
    ck_assert_int_eq(gort_ctx_err(NULL), 0);
    ck_assert_ptr_null(gort_ctx_done(NULL));
    gort_ctx_cancel(NULL);
    gort_ctx_free(NULL);
    gort_ctx_t *c = gort_ctx_with_cancel(NULL);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(gort_ctx_done(c));
    ck_assert_int_eq(gort_ctx_err(c), 0);
    ck_assert(!is_done(c));
    ck_assert_int_eq(gort_chan_try_recv(gort_ctx_done(c), NULL), -EAGAIN);
    gort_ctx_cancel(c);
    ck_assert_int_eq(gort_ctx_err(c), -ECANCELED);
    ck_assert(is_done(c));
    gort_ctx_free(c);
}

START_TEST(ctx_background_and_cancel) { test_run(background_main, NULL, 1, 0); }
END_TEST

/* root -> a -> {a1, a2 -> a21}, root -> b: cancelling a reaches a1, a2, a21 only. */
static void propagate_main(void *arg)
{
    gort_ctx_t *root = gort_ctx_with_cancel(NULL);
    gort_ctx_t *a = gort_ctx_with_cancel(root);
    gort_ctx_t *a1 = gort_ctx_with_cancel(a);
    gort_ctx_t *a2 = gort_ctx_with_cancel(a);
    gort_ctx_t *a21 = gort_ctx_with_timeout(a2, 10000 * MS);
    gort_ctx_t *b = gort_ctx_with_cancel(root);
    ck_assert(root && a && a1 && a2 && a21 && b);
    gort_ctx_cancel(a);
    ck_assert_int_eq(gort_ctx_err(a), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(a1), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(a2), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(a21), -ECANCELED);
    ck_assert(is_done(a) && is_done(a1) && is_done(a2) && is_done(a21));
    ck_assert_int_eq(gort_ctx_err(root), 0);
    ck_assert_int_eq(gort_ctx_err(b), 0);
    ck_assert(!is_done(root) && !is_done(b));
    /* a child made under a cancelled parent is born cancelled */
    gort_ctx_t *late = gort_ctx_with_cancel(a2);
    ck_assert_int_eq(gort_ctx_err(late), -ECANCELED);
    ck_assert(is_done(late));
    /* cancelling the root now reaches b */
    gort_ctx_cancel(root);
    ck_assert_int_eq(gort_ctx_err(b), -ECANCELED);
    /* free in an order that frees parents before children */
    gort_ctx_free(root);
    gort_ctx_free(a);
    gort_ctx_free(a21);
    gort_ctx_free(a2);
    gort_ctx_free(late);
    gort_ctx_free(a1);
    gort_ctx_free(b);
}

START_TEST(ctx_cancel_propagates) { test_run(propagate_main, NULL, 1, 0); }
END_TEST

static void cancel_twice_main(void *arg)
{
    gort_ctx_t *p = gort_ctx_with_cancel(NULL);
    gort_ctx_t *c = gort_ctx_with_timeout(p, 1 * MS);
    gort_ctx_cancel(c);
    gort_ctx_cancel(c);
    ck_assert_int_eq(gort_ctx_err(c), -ECANCELED);
    gort_sleep(3 * MS); /* past the deadline: the error stays the first one */
    ck_assert_int_eq(gort_ctx_err(c), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(p), 0);
    gort_ctx_cancel(p); /* parent after child: harmless too */
    ck_assert_int_eq(gort_ctx_err(c), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(p), -ECANCELED);
    gort_ctx_free(c);
    gort_ctx_free(p);
}

START_TEST(ctx_cancel_twice) { test_run(cancel_twice_main, NULL, 1, 0); }
END_TEST

/* Freeing a parent cancels its children; they stay usable until their own free. */
static void free_parent_main(void *arg)
{
    gort_ctx_t *p = gort_ctx_with_cancel(NULL);
    gort_ctx_t *c1 = gort_ctx_with_cancel(p);
    gort_ctx_t *c2 = gort_ctx_with_timeout(p, 10000 * MS);
    gort_ctx_t *g = gort_ctx_with_cancel(c1);
    gort_ctx_free(p);
    ck_assert_int_eq(gort_ctx_err(c1), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(c2), -ECANCELED);
    ck_assert_int_eq(gort_ctx_err(g), -ECANCELED);
    ck_assert(is_done(c1) && is_done(c2) && is_done(g));
    gort_ctx_t *late = gort_ctx_with_cancel(g);
    ck_assert_int_eq(gort_ctx_err(late), -ECANCELED);
    gort_ctx_free(c1);
    gort_ctx_free(late);
    gort_ctx_free(g);
    gort_ctx_free(c2);
}

START_TEST(ctx_free_parent_cancels_children) { test_run(free_parent_main, NULL, 1, 0); }
END_TEST

/* ---------------------------------------------------------------- timeouts */

static void timeout_main(void *arg)
{
    /* before: 0 (a deadline far away) */
    gort_ctx_t *far = gort_ctx_with_timeout(NULL, 10000 * MS);
    ck_assert_ptr_nonnull(far);
    ck_assert_int_eq(gort_ctx_err(far), 0);
    ck_assert(!is_done(far));

    /* after: -ETIMEDOUT, not early, and it reaches a child */
    int64_t start = gort_now();
    gort_ctx_t *t = gort_ctx_with_timeout(NULL, 2 * MS);
    gort_ctx_t *child = gort_ctx_with_cancel(t);
    ck_assert_int_eq(gort_chan_recv(gort_ctx_done(child), NULL), -EPIPE);
    ck_assert_int_ge(gort_now() - start, 2 * MS);
    ck_assert_int_eq(gort_ctx_err(t), -ETIMEDOUT);
    ck_assert_int_eq(gort_ctx_err(child), -ETIMEDOUT);
    ck_assert_int_eq(gort_ctx_err(far), 0);

    /* zero or negative: already expired */
    gort_ctx_t *z = gort_ctx_with_timeout(NULL, 0);
    ck_assert_int_eq(gort_ctx_err(z), -ETIMEDOUT);
    ck_assert(is_done(z));

    /* a timeout child of a cancelled parent reports the parent's error */
    gort_ctx_t *pc = gort_ctx_with_cancel(NULL);
    gort_ctx_cancel(pc);
    gort_ctx_t *tc = gort_ctx_with_timeout(pc, 1 * MS);
    ck_assert_int_eq(gort_ctx_err(tc), -ECANCELED);

    gort_ctx_free(tc);
    gort_ctx_free(pc);
    gort_ctx_free(z);
    gort_ctx_free(child);
    gort_ctx_free(t);
    gort_ctx_free(far); /* stops its queued timer */
}

START_TEST(ctx_timeout_err) { test_run(timeout_main, NULL, 0, 0); }
END_TEST

/* ------------------------------------------------------------------ select */

typedef struct canceller {
    gort_ctx_t *ctx;
    int64_t delay;
} canceller_t;

static void canceller_task(void *arg)
{
    GORT_FRAME();
    canceller_t *c = arg;
    gort_sleep(c->delay);
    gort_ctx_cancel(c->ctx);
}

static void select_main(void *arg)
{
    gort_chan_t *never = gort_chan_make(sizeof(int), 0);
    for (int i = 0; i < 20; i++) {
        gort_ctx_t *ctx = gort_ctx_with_cancel(NULL);
        canceller_t cc = {.ctx = ctx, .delay = (i % 4) * 200 * US};
        ck_assert_int_eq(gort_go_with(canceller_task, &cc, sizeof cc), 0);
        int v = 0;
        gort_case_t cases[2] = {{.chan = never, .op = GORT_RECV, .elem = &v},
                                {.chan = gort_ctx_done(ctx), .op = GORT_RECV}};
        ck_assert_int_eq(gort_select(cases, 2, -1), 1);
        ck_assert_int_eq(cases[1].result, -EPIPE);
        ck_assert_int_eq(gort_ctx_err(ctx), -ECANCELED);
        gort_ctx_free(ctx); /* the canceller may still be returning from its cancel */
    }
    /* a timeout context's done channel in a select, with a NULL (background) case */
    gort_ctx_t *t = gort_ctx_with_timeout(NULL, 1 * MS);
    gort_case_t cases[2] = {{.chan = gort_ctx_done(NULL), .op = GORT_RECV},
                            {.chan = gort_ctx_done(t), .op = GORT_RECV}};
    ck_assert_int_eq(gort_select(cases, 2, -1), 1);
    ck_assert_int_eq(gort_ctx_err(t), -ETIMEDOUT);
    gort_ctx_free(t);
    ck_assert_int_eq(gort_chan_free(never), 0);
}

START_TEST(ctx_select_on_done) { test_run(select_main, NULL, 2, 0); }
END_TEST

/* ---------------------------------------------------------- concurrent stress */

/* Main owns a root and MIDS children of it. Each worker owns a child of a random mid
 * and a grandchild (with_cancel or with a tiny timeout), cancels and frees some of
 * them at random while main cancels mids; after a barrier, main frees the mids and the
 * root (in random order) while workers wait for their remaining contexts to be done,
 * check the error and free them. */
enum { MIDS = 4, WORKERS = 16, STRESS_ROUNDS = 1000 };

typedef struct worker {
    uint64_t seed;
    gort_ctx_t **mids;
    gort_chan_t *ready;
    gort_chan_t *finished;
} worker_t;

static bool err_ok(int e) { return e == -ECANCELED || e == -ETIMEDOUT; }

static void stress_worker(void *arg)
{
    GORT_FRAME();
    worker_t *w = arg;
    uint64_t rng = w->seed;
    gort_ctx_t *mid = w->mids[test_rand(&rng) % MIDS];
    gort_ctx_t *c = test_rand(&rng) % 2 ? gort_ctx_with_cancel(mid)
                                         : gort_ctx_with_timeout(mid, (int64_t)(test_rand(&rng) % (100 * US)));
    gort_ctx_t *g = test_rand(&rng) % 2 ? gort_ctx_with_cancel(c)
                                         : gort_ctx_with_timeout(c, (int64_t)(test_rand(&rng) % (100 * US)));
    if (!c || !g)
        note_failure();
    if (test_rand(&rng) % 2)
        gort_yield();
    switch (test_rand(&rng) % 4) {
    case 0:
        gort_ctx_cancel(c);
        if (!err_ok(gort_ctx_err(g)) || !is_done(g))
            note_failure();
        break;
    case 1:
        gort_ctx_free(c); /* g becomes a cancelled root */
        c = NULL;
        if (!err_ok(gort_ctx_err(g)) || !is_done(g))
            note_failure();
        break;
    case 2:
        gort_ctx_free(g);
        g = NULL;
        break;
    default:
        break;
    }
    int one = 1;
    gort_chan_send(w->ready, &one);
    /* whatever is left is cancelled once main cancels or frees the mids */
    if (c && gort_chan_recv(gort_ctx_done(c), NULL) != -EPIPE)
        note_failure();
    if (g && gort_chan_recv(gort_ctx_done(g), NULL) != -EPIPE)
        note_failure();
    if ((c && !err_ok(gort_ctx_err(c))) || (g && !err_ok(gort_ctx_err(g))))
        note_failure();
    if (test_rand(&rng) % 2) {
        gort_ctx_free(c);
        gort_ctx_free(g);
    } else {
        gort_ctx_free(g);
        gort_ctx_free(c);
    }
    gort_chan_send(w->finished, &one);
}

static void stress_main(void *arg)
{
    uint64_t rng = test_seed("ctx_stress", 17);
    atomic_store(&failures, 0);
    static worker_t ws[WORKERS];
    static gort_ctx_t *mids[MIDS]; /* the workers read it: not on this task's stack */
    gort_chan_t *ready = gort_chan_make(sizeof(int), WORKERS);
    gort_chan_t *finished = gort_chan_make(sizeof(int), WORKERS);
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        gort_ctx_t *root = gort_ctx_with_cancel(NULL);
        for (int i = 0; i < MIDS; i++)
            mids[i] = gort_ctx_with_cancel(root);
        for (int i = 0; i < WORKERS; i++) {
            ws[i] = (worker_t){.seed = test_rand(&rng), .mids = mids, .ready = ready,
                               .finished = finished};
            ck_assert_int_eq(gort_go(stress_worker, &ws[i]), 0);
        }
        for (int i = 0; i < MIDS; i++) {
            if (test_rand(&rng) % 3 == 0)
                gort_ctx_cancel(mids[i]); /* while workers add children under it */
            if (test_rand(&rng) % 2)
                gort_yield();
        }
        for (int i = 0; i < WORKERS; i++)
            ck_assert_int_eq(gort_chan_recv(ready, NULL), 0);
        /* no worker makes children under the mids any more: free them, root included */
        int order[MIDS + 1];
        for (int i = 0; i <= MIDS; i++)
            order[i] = i;
        for (int i = MIDS; i > 0; i--) {
            int j = (int)(test_rand(&rng) % (uint64_t)(i + 1));
            int tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        for (int i = 0; i <= MIDS; i++) {
            gort_ctx_t *x = order[i] == MIDS ? root : mids[order[i]];
            if (test_rand(&rng) % 2)
                gort_ctx_cancel(x);
            gort_ctx_free(x);
            if (test_rand(&rng) % 2)
                gort_yield();
        }
        for (int i = 0; i < WORKERS; i++)
            ck_assert_int_eq(gort_chan_recv(finished, NULL), 0);
    }
    ck_assert_int_eq(gort_chan_free(ready), 0);
    ck_assert_int_eq(gort_chan_free(finished), 0);
    ck_assert_int_eq(ld(&failures), 0);
}

START_TEST(ctx_stress_1p) { test_run(stress_main, NULL, 1, 0); }
END_TEST

START_TEST(ctx_stress_2p) { test_run(stress_main, NULL, 2, 0); }
END_TEST

static Suite *ctx_suite(void)
{
    Suite *s = suite_create("ctx");
    TCase *tc = tcase_create("ctx");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ctx_background_and_cancel);
    tcase_add_test(tc, ctx_cancel_propagates);
    tcase_add_test(tc, ctx_cancel_twice);
    tcase_add_test(tc, ctx_free_parent_cancels_children);
    tcase_add_test(tc, ctx_timeout_err);
    tcase_add_test(tc, ctx_select_on_done);
    tcase_add_test(tc, ctx_stress_1p);
    tcase_add_test(tc, ctx_stress_2p);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(ctx_suite()); }
