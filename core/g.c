/* core/g.c — task records: spawn, exit, the allg registry, reuse.
 *
 * A task record (g_t) is never freed while the runtime runs: a dead task goes to its
 * P's free list with its stack (when the stack has the default size), so the next spawn
 * costs no allocation; allg lists every record ever made, for dumps and the leak
 * detector. Both are Go's choices. Everything is freed at teardown.
 * gort_go_with copies the arguments onto the top of the new task's own stack: no
 * malloc, and they die with the task.
 * Locks: allg.lock (rank 80) around allg growth; sched.gfree_lock (a leaf) for the
 * global free list.
 */
#include <stdlib.h>
#include <string.h>

#include "rt.h"
#include "sched_impl.h"

#if defined(GORT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(GORT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

rtlock_t allg_lock;
g_t **allg;
size_t allg_len;
static size_t allg_cap;

enum { GFREE_LOCAL_MAX = 64, ARGS_ON_STACK_MAX = 256 };

static bool allg_add(g_t *g)
{
    rtlock_acquire(&allg_lock);
    if (allg_len == allg_cap) {
        size_t cap = allg_cap ? allg_cap * 2 : 1024;
        g_t **n = rt_alloc(cap * sizeof *n);
        if (!n) {
            rtlock_release(&allg_lock);
            return false;
        }
        if (allg)
            memcpy(n, allg, allg_len * sizeof *n);
        g_t **old = allg;
        allg = n; /* dumps read allg under allg.lock only */
        allg_cap = cap;
        rt_free(old);
    }
    g->allg_index = allg_len;
    allg[allg_len++] = g;
    rtlock_release(&allg_lock);
    return true;
}

static void g_set_stack(g_t *g, void *lo, size_t size)
{
    g->stack_lo = (uintptr_t)lo;
    g->stack_hi = (uintptr_t)lo + size;
    g->stackguard = g->stack_lo + (size >= 2 * STACK_SLACK ? STACK_SLACK : size / 4);
    /* stackmove=1: the guard at the top from the start, so the task's very first check
     * or runtime call moves its stack (relocate.c keeps it there after each move) */
    if (rt_debug.stackmove)
        g->stackguard = g->stack_hi;
    *(uint64_t *)g->stack_lo = STACK_CANARY;
}

/* A record with a stack of at least stack_size bytes. Context: sysstack. */
g_t *g_alloc(size_t stack_size)
{
    m_t *m = m_self();
    p_t *p = m ? m->p : NULL;
    size_t want = stackpool_class_size(stack_size);
    g_t *g = NULL;
    if (p && want == sched.stack_min) {
        /* relaxed hint read; the list itself is taken under sched.gfree_lock */
        if (!p->gfree && __atomic_load_n(&sched.gfree, __ATOMIC_RELAXED)) {
            /* refill from the global list */
            rtlock_acquire(&sched.gfree_lock);
            while (sched.gfree && p->ngfree < GFREE_LOCAL_MAX / 2) {
                g_t *x = sched.gfree;
                __atomic_store_n(&sched.gfree, x->schedlink, __ATOMIC_RELAXED);
                sched.ngfree--;
                x->schedlink = p->gfree;
                p->gfree = x;
                p->ngfree++;
            }
            rtlock_release(&sched.gfree_lock);
        }
        if (p->gfree) {
            g = p->gfree;
            p->gfree = g->schedlink;
            p->ngfree--;
        }
    }
    if (g && g->stack_lo && g->stack_hi - g->stack_lo == want) {
#if defined(GORT_ASAN)
        __asan_unpoison_memory_region((void *)g->stack_lo, want); /* old frames' redzones */
#endif
        *(uint64_t *)g->stack_lo = STACK_CANARY;
        /* g came from p's free list: p is ours */
        __atomic_store_n(&p->stack_reused, p->stack_reused + (int64_t)want, __ATOMIC_RELAXED);
        return g;
    }
    bool fresh = !g;
    if (fresh) {
        g = rt_alloc_untraced(sizeof *g);
        if (!g)
            return NULL;
    }
    void *stk = stackpool_alloc(p, want);
    if (!stk) {
        if (fresh)
            rt_free_untraced(g);
        else
            g_free_deferred(g);
        return NULL;
    }
    g_set_stack(g, stk, want);
    if (fresh) {
#if defined(GORT_TSAN)
        g->tsan_fiber = __tsan_create_fiber(0);
#endif
        if (!allg_add(g)) {
            stackpool_free(p, stk, want);
            rt_free_untraced(g);
            return NULL;
        }
    }
    return g;
}

/* A dead task's record goes back to the free lists; its stack stays with it when it has
 * the default size. Context: sysstack, on the M whose P (if any) gets the record. */
void *g_free_deferred(void *arg)
{
    g_t *g = arg;
    m_t *m = m_self();
    p_t *p = m ? m->p : NULL;
    rt_free(g->name);
    g->name = NULL;
    rt_free(g->args_copy);
    g->args_copy = NULL;
    g->fn = NULL;
    g->arg = NULL;
    g->wait_reason = WAIT_NONE;
    g->wait_obj = NULL;
    g->waiting = NULL;
    g->wait_param = NULL;
    g->lock_thread = 0;
    g->locked_m = NULL;
    g->nopreempt = 0;
    __atomic_store_n(&g->preempt, false, __ATOMIC_RELAXED); /* sysmon may set it racily */
    g->m = NULL;
    atomic_store_explicit(&g->status, G_IDLE, memory_order_relaxed);
    size_t size = g->stack_hi - g->stack_lo;
    if (g->stack_lo) {
        /* The stack is pooled whether or not it stays attached to the record. */
        if (size != sched.stack_min || !p) {
            stackpool_free(p, (void *)g->stack_lo, size);
            g->stack_lo = g->stack_hi = g->stackguard = 0;
        } else {
            __atomic_store_n(&p->stack_reused, p->stack_reused - (int64_t)size,
                             __ATOMIC_RELAXED);
        }
    }
    if (p) {
        g->schedlink = p->gfree;
        p->gfree = g;
        if (++p->ngfree > GFREE_LOCAL_MAX) {
            rtlock_acquire(&sched.gfree_lock);
            while (p->ngfree > GFREE_LOCAL_MAX / 2) {
                g_t *x = p->gfree;
                p->gfree = x->schedlink;
                p->ngfree--;
                x->schedlink = sched.gfree;
                __atomic_store_n(&sched.gfree, x, __ATOMIC_RELAXED);
                sched.ngfree++;
            }
            rtlock_release(&sched.gfree_lock);
        }
    } else {
        rtlock_acquire(&sched.gfree_lock);
        g->schedlink = sched.gfree;
        __atomic_store_n(&sched.gfree, g, __ATOMIC_RELAXED);
        sched.ngfree++;
        rtlock_release(&sched.gfree_lock);
    }
    return NULL;
}

/* Teardown: frees every record and stack. Single-threaded. */
void g_destroy_all(void)
{
    for (size_t i = 0; i < allg_len; i++) {
        g_t *g = allg[i];
        if (g->stack_lo) {
            size_t size = g->stack_hi - g->stack_lo;
            int st = atomic_load_explicit(&g->status, memory_order_relaxed);
            if (st != G_IDLE) /* still alive: discarded, as when a Go main returns */
                atomic_fetch_sub_explicit(&stack_bytes_used, size, memory_order_relaxed);
            else
                atomic_fetch_sub_explicit(&stack_bytes_pooled, size, memory_order_relaxed);
        }
        rt_free(g->name);
        rt_free(g->args_copy);
        rt_free(g->xsave);
#if defined(GORT_TSAN)
        __tsan_destroy_fiber(g->tsan_fiber);
#endif
        rt_free_untraced(g);
    }
    rt_free(allg);
    allg = NULL;
    allg_len = allg_cap = 0;
    for (int i = 0; i < sched.nprocs; i++) {
        sched.allp[i]->gfree = NULL;
        sched.allp[i]->ngfree = 0;
    }
    sched.gfree = NULL;
    sched.ngfree = 0;
}

/* ------------------------------------------------------------ spawning */

void sched_main_returned(void);

static __attribute__((noreturn)) void g_exit_current(void)
{
    g_t *g = g_self();
    if (g->id == 1)
        sched_main_returned(); /* the exit leak check may sleep: resumes on any M */
    m_t *m = m_self(); /* read after it, not before */
    atomic_store_explicit(&g->status, G_DEAD, memory_order_relaxed);
    atomic_fetch_sub_explicit(&sched.ntasks, 1, memory_order_relaxed);
    if (g->lock_thread) {
        m->locked_g = NULL;
        g->locked_m = NULL;
    }
    m->defer_kind = DEFER_FREE;
    m->defer_g = g;
    /* Straight to the next task when there is one: exit + start is one switch. */
    g_t *next = NULL;
    if (m->p && !rt_debug.migrate && !atomic_load_explicit(&sched.stopping, memory_order_relaxed) &&
        --m->p->fast_budget != 0) {
        __atomic_store_n(&m->p->schedtick, m->p->schedtick + 1, __ATOMIC_RELAXED);
        next = runq_get(m->p);
        if (next && next->locked_m && next->locked_m != m) {
            m->nextg = next;
            next = NULL;
        }
    }
    if (!next && m->p && m->p->fast_budget == 0) {
        m->p->fast_budget = 61;
        m->p->check_global = true;
    }
    g_switch_to(g, next ? next : &m->g0);
    gort_throw("g_exit: dead task resumed");
}

void g_entry(void *arg)
{
    g_t *g = arg;
#if defined(GORT_ASAN)
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    g_switch_finish(m_self());
    *errno_ptr() = 0;
    g->fn(g->arg);
    g_exit_current();
}

void gort_exit(void)
{
    if (g_self())
        g_exit_current();
}

struct spawn_req {
    void (*fn)(void *);
    void *arg;
    const void *args;
    size_t args_size;
    size_t stack;
    const char *name;
    void *pc;
    g_t *g;
    int rc;
};

/* Builds the new task. Context: sysstack. */
static void *g_spawn_sys(void *arg)
{
    struct spawn_req *r = arg;
    g_t *g = g_alloc(r->stack < STACK_FLOOR ? STACK_FLOOR : r->stack);
    if (!g) {
        r->rc = -ENOMEM;
        return NULL;
    }
    uintptr_t top = g->stack_hi;
    void *fn_arg = r->arg;
    if (r->args_size) {
        size_t sz = (r->args_size + 15) & ~(size_t)15;
        if (sz <= ARGS_ON_STACK_MAX && sz <= (g->stack_hi - g->stack_lo) / 4) {
            top -= sz;
            memcpy((void *)top, r->args, r->args_size);
            fn_arg = (void *)top;
        } else {
            g->args_copy = rt_alloc(r->args_size);
            if (!g->args_copy)
                goto out_free_g;
            memcpy(g->args_copy, r->args, r->args_size);
            fn_arg = g->args_copy;
        }
    }
    if (r->name) {
        size_t len = strlen(r->name);
        g->name = rt_alloc(len + 1);
        if (!g->name)
            goto out_free_g;
        memcpy(g->name, r->name, len + 1);
    }
    g->fn = r->fn;
    g->arg = fn_arg;
    g->spawn_pc = r->pc;
    g->stack_min = r->stack;
    g->saved_errno = 0;
    g->gc_flags = 0; /* a reused record: not yet reported as leaked */
    g->ctx.sp = ctx_init(top & ~(uintptr_t)15, g_entry, g);
    g->id = atomic_fetch_add_explicit(&sched.goidgen, 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&sched.ntasks, 1, memory_order_relaxed);
    atomic_store_explicit(&g->status, G_RUNNABLE, memory_order_relaxed);
    r->g = g;
    r->rc = 0;
    return NULL;

out_free_g:
    g->status = G_DEAD;
    g_free_deferred(g);
    r->rc = -ENOMEM;
    return NULL;
}

static int g_spawn(const gort_go_opts_t *o, void (*fn)(void *), void *arg, void *pc)
{
    if (unlikely(!fn))
        return -EINVAL;
    m_t *m = m_self();
    if (unlikely(!m || !m->curg))
        return -EPERM;
    struct spawn_req r = {.fn = fn, .arg = arg, .stack = sched.stack_min, .pc = pc};
    if (o) {
        if (o->args_size && !arg)
            return -EINVAL;
        r.args = arg;
        r.args_size = o->args_size;
        r.name = o->name;
        if (o->stack_min) {
            if (o->stack_min > sched.stack_max ||
                stackpool_class_size(o->stack_min) > ((size_t)STACK_MIN_DEFAULT << (STACK_CLASSES - 1)))
                return -EINVAL;
            if (o->stack_min > r.stack)
                r.stack = o->stack_min;
        }
    }
    sysstack_call(g_spawn_sys, &r);
    if (r.rc)
        return r.rc;
    m = m_self();
    /* Like Go's newproc: the new task goes to runnext and runs when the spawner blocks. */
    g_t *old = runnext_swap(m->p, r.g);
    if (old)
        runq_put_or_global(m->p, old);
    m->p->n_created++;
    wakep();
    /* A runtime call is a cooperative preemption point: a task spawning in a loop must
     * not run a whole queue's worth of work (and memory) ahead of its children. */
    if (unlikely(__atomic_load_n(&m->curg->preempt, __ATOMIC_RELAXED)))
        preempt_yield();
    return 0;
}

int gort_go(void (*fn)(void *), void *arg)
{
    RT_ENTRY_CHECK();
    return g_spawn(NULL, fn, arg, __builtin_return_address(0));
}

int gort_go_with(void (*fn)(void *), const void *args, size_t size)
{
    RT_ENTRY_CHECK();
    if (size && !args)
        return -EINVAL;
    gort_go_opts_t o = {.args_size = size};
    return g_spawn(&o, fn, (void *)args, __builtin_return_address(0));
}

int gort_go_opts(const gort_go_opts_t *o, void (*fn)(void *), void *arg)
{
    RT_ENTRY_CHECK();
    return g_spawn(o, fn, arg, __builtin_return_address(0));
}

/* The main task: id 1, on a main_stack stack, first in P0's queue. */
int g_spawn_main(void (*fn)(void *), void *arg)
{
    struct spawn_req r = {.fn = fn, .arg = arg, .stack = sched.main_stack,
                          .pc = __builtin_return_address(0), .name = "main"};
    g_spawn_sys(&r);
    if (r.rc)
        return r.rc;
    runq_put(sched.allp[0], r.g);
    return 0;
}
