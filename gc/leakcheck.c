/* gc/leakcheck.c — the leak detector's entry points: gort_leaks, gort_leakcheck,
 * gort_leaks_cancel, GORT_DEBUG=leakcheck=report|exit|cancel at the end of gort_run.
 *
 * A cycle: take the world flag (yielding while another cycle runs), spill the caller's
 * callee-saved registers onto its own stack, go to the system stack, stop the world
 * (gc/stw.c), mark (gc/mark.c), optionally cancel, report, start the world.
 * Recovery: a leaked task blocked in a channel send/receive or a select on channels is
 * unlinked from its channels, flagged GC_CANCELLED and readied; the operation returns
 * -ECANCELED (core/chan.c, core/select.c check the flag when they resume). It is safe
 * when the task's code treats an error from that operation as "give up": it then
 * unwinds and frees what it holds. It is not safe for code that assumes a blocking
 * receive cannot fail. Tasks leaked on a mutex, rwmutex, cond, wait group, a nil
 * channel or an empty select are reported but not cancelled (those calls return void
 * or never return).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chan.h"
#include "core/sched_impl.h"
#include "core/timer.h"
#include "gc/gc.h"
#include "stackmap/stackmap.h"

static _Atomic int world_busy; /* the `world` lock (rank 10): 1 while a cycle runs */

/* Takes the world lock from a task, yielding while another holder has it.
 * acquire: pairs with the release in world_release. */
static void world_acquire_task(void)
{
    int expect = 0;
    while (!atomic_compare_exchange_weak_explicit(&world_busy, &expect, 1,
                                                  memory_order_acquire, memory_order_relaxed)) {
        expect = 0;
        gort_yield();
    }
}

static void world_release(void) { atomic_store_explicit(&world_busy, 0, memory_order_release); }

enum { STW_TIMEOUT_NS = 1000000000 };
enum { MODE_LEAKS = 0, MODE_CANCEL = 1, MODE_COUNT_CANCELLED = 2, MODE_PERIODIC = 4 };

struct cycle_req {
    g_t *self;
    uintptr_t sp;          /* the caller's stack pointer: its stack is live from here */
    int mode;
    FILE *report;          /* NULL: silent */
    gort_leak_t *out;
    size_t max;
    int rc;                /* count, or negative errno */
    int64_t stw_ns, mark_ns;
    size_t nlive;          /* MODE_PERIODIC: tasks that are roots by state */
    size_t ntimers;        /* MODE_PERIODIC: timers queued, world stopped */
    char *text;            /* the report, formatted while stopped (malloc'd; NULL: none) */
    size_t text_len;
};

/* Unlinks w from whichever queue of its channel holds it. World stopped. */
static void chan_waiter_unlink_any(chan_waiter_t *w)
{
    gort_chan_t *c = w->c;
    if (!atomic_load_explicit(&w->queued, memory_order_relaxed))
        return;
    rtlock_acquire(&c->lock);
    chan_waitq_t *q = &c->recvq;
    chan_waiter_t *x = q->first;
    while (x && x != w)
        x = x->next;
    if (!x)
        q = &c->sendq;
    waitq_unlink(q, w);
    rtlock_release(&c->lock);
}

/* Wakes leaked channel operations with -ECANCELED. World stopped; sysstack. */
static int leaks_cancel(const leak_set_t *s)
{
    int n = 0;
    for (size_t i = 0; i < s->n; i++) {
        g_t *g = s->recs[i].g;
        wait_reason_t why = g->wait_reason;
        if (why == WAIT_CHAN_RECV || why == WAIT_CHAN_SEND) {
            chan_waiter_t *w = g->waiting;
            if (!w || (uintptr_t)w < g->stack_lo || (uintptr_t)w >= g->stack_hi)
                continue;
            chan_waiter_unlink_any(w);
            w->success = false;
        } else if (why == WAIT_SELECT && g->waiting) {
            uint32_t zero = 0;
            /* acq_rel: as a waker's CAS (select.c); the world is stopped, so it wins */
            if (!atomic_compare_exchange_strong_explicit(&g->select_done, &zero, 1,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                continue;
            for (chan_waiter_t *w = g->waiting; w; w = w->waitlink)
                chan_waiter_unlink_any(w);
            g->wait_param = NULL;
        } else {
            continue;
        }
        g->gc_flags = (g->gc_flags & ~(uint32_t)GC_REPORTED) | GC_CANCELLED;
        g_ready(g);
        n++;
    }
    return n;
}

/* A periodic cycle prints each leaked task once: keeps in s only the tasks not printed
 * before and flags them. World stopped. */
static void periodic_keep_new(leak_set_t *s, struct cycle_req *q)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        g_t *g = s->recs[i].g;
        if (g->gc_flags & GC_REPORTED)
            continue;
        g->gc_flags |= GC_REPORTED;
        s->recs[k++] = s->recs[i];
    }
    s->n = k;
    q->nlive = s->nlive;
    q->ntimers = 0;
    for (int i = 0; i < sched.nprocs; i++)
        q->ntimers += sched.allp[i]->ntimers;
}

static void leaks_fill(const leak_set_t *s, gort_leak_t *out, size_t max)
{
    for (size_t i = 0; i < s->n && i < max; i++) {
        const leak_rec_t *r = &s->recs[i];
        out[i] = (gort_leak_t){
            .id = r->id,
            .name = r->name,
            .wait = wait_reason_str(r->why),
            .object = r->obj,
            .blocked_ns = r->blocked_ns,
            .spawn_site = r->spawn_pc ? report_symbolize(r->spawn_pc) : "?",
        };
    }
}

static void *cycle_sys(void *arg)
{
    struct cycle_req *q = arg;
    leak_set_t set = {0};
    int64_t t0 = gort_now();
    int rc = stw_stop(STW_TIMEOUT_NS);
    if (rc) {
        q->rc = rc;
        return NULL;
    }
    int64_t t1 = gort_now();
    rc = mark_find_leaks(&set, q->self, q->sp);
    int64_t t2 = gort_now();
    q->stw_ns = t1 - t0;
    q->mark_ns = t2 - t1;
    if (rc == 0) {
        if (q->mode & MODE_PERIODIC)
            periodic_keep_new(&set, q);
        /* Formatted with the world still stopped (names, records and backtraces stay
         * valid) and written by the caller once it runs again (report_write): a
         * stopped task may hold the FILE's lock (flockfile around code that reaches a
         * GORT_FRAME check, or stopped asynchronously inside its own code), and
         * writing now would wait for it forever. The text buffer is program heap but
         * holds no binary address, so later cycles' root scans find nothing in it.
         * No memory for it: printed now, as before. */
        if (q->report && set.n) {
            FILE *mem = open_memstream(&q->text, &q->text_len);
            if (mem) {
                report_print(mem, &set);
                fclose(mem);
            } else {
                report_print(q->report, &set);
            }
        }
        if (q->out)
            leaks_fill(&set, q->out, q->max);
        q->rc = set.n > INT32_MAX ? INT32_MAX : (int)set.n;
        if (q->mode & MODE_CANCEL) {
            int nc = leaks_cancel(&set);
            if (q->mode & MODE_COUNT_CANCELLED)
                q->rc = nc;
        }
        /* Stacks (stackmap/shrink.c): parked tasks using < 1/4 of theirs get half,
         * never below the size they started with; then the pools are trimmed. In
         * periodic cycles too: there no task runs the cycle, so the main task is
         * shrinkable, which is how the floor was found missing. */
        stack_shrink_all();
        stackpool_trim();
    } else {
        q->rc = rc;
    }
    leak_set_free(&set);
    stw_start();
    return NULL;
}

/* ------------------------------------------------------------ writing reports */

struct report_out {
    FILE *f;
    char *text;
    size_t len;
};

/* System stack (stdio to an unbuffered stream is ~11 KiB deep); the caller holds the
 * FILE's lock. */
static void *report_write_locked_sys(void *arg)
{
    struct report_out *o = arg;
    fwrite_unlocked(o->text, 1, o->len, o->f);
    fflush_unlocked(o->f);
    free(o->text);
    return NULL;
}

/* Task context: waits for the FILE's lock by sleeping, so the task holding it (maybe
 * on this P) runs and lets go, then writes. Nothing between ftrylockfile and
 * funlockfile switches: the lock belongs to this thread. */
static void report_write(FILE *f, char *text, size_t len)
{
    if (!text)
        return;
    while (ftrylockfile(f) != 0)
        gort_sleep(100000);
    struct report_out o = {f, text, len};
    sysstack_call(report_write_locked_sys, &o);
    funlockfile(f);
}

/* A periodic report that found stderr locked waits here for the next fire or the end
 * of the run (periodic cycles run on a scheduler's system stack, where nothing may
 * wait for a task). Guarded by world_busy. */
static char *periodic_pending;
static size_t periodic_pending_len;

/* Appends text to the pending report and writes it all if stderr's lock is free.
 * Context: g0 (periodic_fire), holding world_busy. */
static void periodic_report_write(char *text, size_t len)
{
    if (text) {
        if (!periodic_pending) {
            periodic_pending = text;
            periodic_pending_len = len;
        } else {
            char *both = realloc(periodic_pending, periodic_pending_len + len);
            if (both) {
                memcpy(both + periodic_pending_len, text, len);
                periodic_pending = both;
                periodic_pending_len += len;
            } /* no memory: this report is dropped, the earlier one kept */
            free(text);
        }
    }
    if (!periodic_pending || ftrylockfile(stderr) != 0)
        return;
    struct report_out o = {stderr, periodic_pending, periodic_pending_len};
    report_write_locked_sys(&o);
    funlockfile(stderr);
    periodic_pending = NULL;
    periodic_pending_len = 0;
}

static int64_t last_stw_ns, last_mark_ns; /* the last cycle's phases (benchmarks) */

/* Task context, through call_with_callee_saves: live_sp is where the caller's live
 * stack begins, its callee-saved registers pushed there (a channel held only in a
 * register of the caller is seen). This function's own frame is not scanned: its
 * unwritten slots hold stale words of earlier deeper calls, and a planted channel's
 * pointer there hid a leak (test_leak_roots detector_while_running, ~6 runs in 80). */
static uintptr_t cycle_run_at(uintptr_t mode_, uintptr_t report_, uintptr_t out_,
                              uintptr_t max, uintptr_t live_sp)
{
    int mode = (int)mode_;
    FILE *report = (FILE *)report_;
    gort_leak_t *out = (gort_leak_t *)out_;
    m_t *m = m_self();
    if (!m || !sched.allp)
        return 0; /* no runtime: no task can leak */
    g_t *self = m->curg;
    if (!self || m->on_sysstack)
        return (uintptr_t)-EPERM;
    if (heap_tracked_status() < 0)
        return (uintptr_t)-ENOTSUP; /* trackheap=1 without the layer: no answer rather than a wrong one */
    /* the wait for the world lock yields, and a cycle meanwhile may move this stack
     * (shrinking): the live part keeps its distance from the top */
    uintptr_t live_depth = self->stack_hi - live_sp;
    world_acquire_task(); /* one cycle at a time */
    struct cycle_req q = {.self = self, .sp = self->stack_hi - live_depth, .mode = mode,
                          .report = report, .out = out, .max = max};
    sysstack_call(cycle_sys, &q);
    last_stw_ns = q.stw_ns;
    last_mark_ns = q.mark_ns;
    world_release();
    report_write(report, q.text, q.text_len);
    return (uintptr_t)(intptr_t)q.rc;
}

static int cycle_run(int mode, FILE *report, gort_leak_t *out, size_t max)
{
    return (int)(intptr_t)call_with_callee_saves(cycle_run_at, (uintptr_t)mode,
                                                 (uintptr_t)report, (uintptr_t)out, max);
}

int gort_leaks(gort_leak_t *out, size_t max)
{
    return cycle_run(MODE_LEAKS, NULL, out, out ? max : 0);
}

int gort_leakcheck(FILE *report)
{
    return cycle_run(rt_debug.leakcheck == 3 ? MODE_CANCEL : MODE_LEAKS, report, NULL, 0);
}

int gort_leaks_cancel(void)
{
    return cycle_run(MODE_CANCEL | MODE_COUNT_CANCELLED, NULL, NULL, 0);
}

/* Benchmarks (perf/): the last cycle's stop-the-world and marking times. */
void gc_last_cycle_ns(int64_t *stw_ns, int64_t *mark_ns)
{
    *stw_ns = last_stw_ns;
    *mark_ns = last_mark_ns;
}

/* Periodic cycles (leakcheck_interval_ms): a timer of the runtime's own, so the cycle
 * runs where timers run: at the top of findrunnable, on g0 of an M that holds a P, no
 * lock held, no task -- a safe point already. sysmon could not run one (not an M). */
static rtimer_t periodic_timer;          /* queued while periodic_armed */
static _Atomic int64_t periodic_ns;      /* the interval; 0 = off */
static _Atomic int periodic_armed;       /* 1 while the timer is queued or firing */

static void periodic_arm(int64_t now)
{
    int64_t ns = atomic_load_explicit(&periodic_ns, memory_order_relaxed);
    periodic_timer = (rtimer_t){.when = now + ns, .fn = periodic_timer.fn};
    timer_start_handoff(&periodic_timer);
}

/* Queues the timer unless it is queued already. */
static void periodic_kick(void)
{
    int expect = 0;
    /* acq_rel: one arming at a time; pairs with the release in periodic_fire */
    if (atomic_load_explicit(&periodic_ns, memory_order_relaxed) > 0 &&
        atomic_compare_exchange_strong_explicit(&periodic_armed, &expect, 1,
                                                memory_order_acq_rel, memory_order_acquire))
        periodic_arm(gort_now());
}

static void periodic_fire(rtimer_t *t, int64_t now)
{
    (void)t;
    if (atomic_load_explicit(&sched.stopping, memory_order_acquire))
        return; /* armed stays 1: gc_periodic_start resets it for the next run */
    bool rearm = atomic_load_explicit(&periodic_ns, memory_order_relaxed) > 0;
    int expect = 0;
    /* acquire: pairs with the release of whoever ran the previous cycle */
    if (rearm && atomic_compare_exchange_strong_explicit(&world_busy, &expect, 1,
                                                         memory_order_acquire,
                                                         memory_order_relaxed)) {
        struct cycle_req q = {.mode = MODE_PERIODIC, .report = stderr};
        cycle_sys(&q); /* g0: already on the system stack */
        periodic_report_write(q.text, q.text_len);
        last_stw_ns = q.stw_ns;
        last_mark_ns = q.mark_ns;
        world_release();
        /* Every task blocked on something only a task could signal and no timer left:
         * nothing can change any more. Pause, so gort_run sees and reports the deadlock
         * (a queued timer would keep it waiting forever); gort_leakcheck_interval from
         * a task woken by I/O or a thread resumes them. */
        if (q.rc >= 0 && q.nlive == 0 && q.ntimers == 0)
            rearm = false;
    }
    if (rearm) {
        periodic_arm(now);
        return;
    }
    /* release: the next periodic_kick's CAS sees the timer idle */
    atomic_store_explicit(&periodic_armed, 0, memory_order_release);
}

void gc_periodic_start(void)
{
    periodic_timer = (rtimer_t){.fn = periodic_fire};
    atomic_store_explicit(&periodic_armed, 0, memory_order_relaxed);
    int ms = heap_tracked_status() < 0 ? 0 : rt_debug.leakcheck_interval_ms;
    atomic_store_explicit(&periodic_ns, ms > 0 ? (int64_t)ms * 1000000 : 0, memory_order_relaxed);
    periodic_kick();
}

int gort_leakcheck_interval(uint32_t ms)
{
    m_t *m = m_self();
    if (!sched.allp || !m || !m->curg)
        return -EPERM;
    if (heap_tracked_status() < 0)
        return -ENOTSUP;
    atomic_store_explicit(&periodic_ns, (int64_t)ms * 1000000, memory_order_relaxed);
    periodic_kick();
    return 0;
}

int leakcheck_at_exit(int rc)
{
    /* a periodic report still waiting for stderr (main task context: it can wait) */
    world_acquire_task(); /* the pending text is the world lock's */
    char *pending = periodic_pending;
    size_t pending_len = periodic_pending_len;
    periodic_pending = NULL;
    periodic_pending_len = 0;
    world_release();
    report_write(stderr, pending, pending_len);
    if (!rt_debug.leakcheck)
        return rc;
    int n = cycle_run(MODE_LEAKS, stderr, NULL, 0);
    if (n < 0)
        dbg_print("gort: leakcheck: the detector could not run (%d)\n", n);
    if (n > 0 && rt_debug.leakcheck == 2 && rc == 0)
        return -EDEADLK;
    return rc;
}
