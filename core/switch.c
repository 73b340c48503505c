/* core/switch.c — switching between tasks on one M, and what follows a switch.
 *
 * g_switch_to saves the running task (or g0) and resumes another on the same M. What
 * the switched-out task could not do while its stack was in use — release the lock it
 * parked with, requeue itself, free itself — is recorded in m->defer_* and done by
 * g_switch_finish, the first thing that runs after every switch, on the new stack
 * ("switch, then release": no other M can see a task runnable before its registers are
 * saved).
 * errno travels with the task; the thread-local state of the runtime is read through
 * the thread pointer after the switch, never from values computed before it.
 * Sanitizers: ASan is told about each stack switch (start/finish_switch_fiber), TSan
 * gets one fiber per task (__tsan_switch_to_fiber); both compile to nothing otherwise.
 */
#include <stdlib.h>
#include <string.h>

#include "rt.h"
#include "sched_impl.h"

#if defined(GORT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(GORT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

__thread uintptr_t gort_tls_stackguard __attribute__((tls_model("initial-exec")));
static __thread m_t *tls_m __attribute__((tls_model("initial-exec")));
ptrdiff_t rt_tls_m_off;
ptrdiff_t rt_tls_errno_off;

/* The offsets are the same in every thread: both variables are in the static TLS block
 * (initial-exec), at fixed distances from the thread pointer. */
__attribute__((constructor)) static void tls_offsets_init(void)
{
    char *tp = arch_thread_pointer();
    rt_tls_m_off = (char *)&tls_m - tp;
    rt_tls_errno_off = (char *)__errno_location() - tp;
}

void m_set_current_tls(m_t *m)
{
    *(m_t **)(arch_thread_pointer() + rt_tls_m_off) = m;
    if (m)
        m->tls_stackguard = &gort_tls_stackguard;
}

RT_COLD void stack_canary_report(g_t *g, const char *where)
{
    char site[160];
    dbg_print("gort: fatal error: task %lu (%s) overflowed its %lu-byte stack "
              "(canary at %p overwritten, seen %s): uninstrumented code used more than "
              "the slack; use GORT_FRAME, gort_stack_reserve or gort_on_system_stack\n",
              (unsigned long)g->id, g->name ? g->name : "unnamed",
              (unsigned long)(g->stack_hi - g->stack_lo), (void *)g->stack_lo, where);
    dbg_print("gort: task %lu was spawned at %s\n", (unsigned long)g->id,
              spawn_site_str(g->spawn_pc, site, sizeof site));
    gort_throw("stack: canary overwritten");
}

void g_switch_to(g_t *from, g_t *to)
{
    m_t *m = m_self();
    if (likely(from != &m->g0)) {
        if (unlikely(*(volatile uint64_t *)from->stack_lo != STACK_CANARY))
            stack_canary_report(from, "at a switch");
    }
    from->saved_errno = *errno_ptr();
    if (to == &m->g0) {
        __atomic_store_n(&m->curg, NULL, __ATOMIC_RELAXED);
        __atomic_store_n(m->tls_stackguard, 0, __ATOMIC_RELAXED);
    } else {
        /* A task resumed twice corrupts memory silently: one load and a compare. */
        if (unlikely(atomic_load_explicit(&to->status, memory_order_relaxed) == G_RUNNING))
            gort_throw("switch: task is already running");
        if (GORT_DEBUG_BUILD && ((uintptr_t)to->ctx.sp < to->stack_lo ||
                                 (uintptr_t)to->ctx.sp >= to->stack_hi))
            gort_throw("switch: saved context outside the task's stack");
        if (GORT_DEBUG_BUILD && ((uint64_t *)to->ctx.sp)[8] == 0) {
            /* The saved return address is gone: something wrote over the parked stack
             * (seen: a neighbour's overflow, e.g. lazy PLT binding's xsave frame). */
            dbg_print("gort: task %lu: saved context at %p overwritten while parked "
                      "(resumed by task %lu on M %d)\n",
                      (unsigned long)to->id, to->ctx.sp, (unsigned long)from->id, m->id);
            gort_throw("switch: saved context corrupted");
        }
        __atomic_store_n(&m->curg, to, __ATOMIC_RELEASE); /* sysmon: acquire */
        to->m = m;
        atomic_store_explicit(&to->status, G_RUNNING, memory_order_relaxed);
        /* relaxed: sysmon may poison the guard concurrently; either order is fine */
        __atomic_store_n(m->tls_stackguard,
                         __atomic_load_n(&to->preempt, __ATOMIC_RELAXED) ? STACKGUARD_PREEMPT
                                                                          : to->stackguard,
                         __ATOMIC_RELAXED);
        if (m->p)
            m->p->n_switches++;
    }
#if defined(GORT_ASAN)
    bool dying = atomic_load_explicit(&from->status, memory_order_relaxed) == G_DEAD;
    __sanitizer_start_switch_fiber(dying ? NULL : &from->asan_fake_stack,
                                   (void *)(to == &m->g0 ? m->sysstack_lo : to->stack_lo),
                                   to == &m->g0 ? m->sysstack_hi - m->sysstack_lo
                                                : to->stack_hi - to->stack_lo);
#endif
#if defined(GORT_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    ctx_switch(&from->ctx.sp, to->ctx.sp);
    /* Resumed: possibly on another M. Nothing computed before the switch about the
     * thread is valid here. */
#if defined(GORT_ASAN)
    __sanitizer_finish_switch_fiber(from->asan_fake_stack, NULL, NULL);
#endif
    *errno_ptr() = from->saved_errno;
    g_switch_finish(m_self());
}

void g_switch_finish(m_t *m)
{
    int kind = m->defer_kind;
    if (kind == DEFER_NONE)
        return;
    g_t *g = m->defer_g;
    m->defer_kind = DEFER_NONE;
    switch (kind) {
    case DEFER_UNLOCK:
        rtlock_release(m->defer_lock);
        break;
    case DEFER_READY:
        atomic_store_explicit(&g->status, G_RUNNABLE, memory_order_relaxed);
        if (m->p && !rt_debug.migrate)
            runq_put_or_global(m->p, g); /* publishes g with a release store */
        else
            globrunq_put(g);
        break;
    case DEFER_READY_GLOBAL:
        atomic_store_explicit(&g->status, G_RUNNABLE, memory_order_relaxed);
        globrunq_put(g);
        wakep();
        break;
    case DEFER_FREE:
        sysstack_call(g_free_deferred, g);
        break;
    }
}

/* Runs g from g0 until it switches back to g0. */
void g_execute(m_t *m, g_t *g)
{
    g_switch_to(&m->g0, g);
}

#if defined(GORT_ASAN)
struct asan_syscall {
    void *(*fn)(void *);
    void *arg;
    g_t *g;
};

/* Runs on the system stack: tells ASan we arrived, runs fn, tells ASan we leave. */
static void *sysstack_asan_body(void *a)
{
    struct asan_syscall *c = a;
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
    void *r = c->fn(c->arg);
    __sanitizer_start_switch_fiber(NULL, (void *)c->g->stack_lo,
                                   c->g->stack_hi - c->g->stack_lo);
    return r;
}
#endif

/* Below g0's saved context the thread's own stack is free while a task runs on this
 * M: system-stack calls run there. */
void *sysstack_call(void *(*fn)(void *), void *arg)
{
    m_t *m = m_self();
    if (!m || !m->curg || m->on_sysstack)
        return fn(arg);
    uintptr_t sp = ((uintptr_t)m->g0.ctx.sp - 256) & ~(uintptr_t)15;
    m->locks++; /* runtime code: never preempted asynchronously */
    m->on_sysstack = true;
#if defined(GORT_ASAN)
    void *fake = NULL;
    struct asan_syscall c = {fn, arg, m->curg};
    __sanitizer_start_switch_fiber(&fake, (void *)m->sysstack_lo,
                                   m->sysstack_hi - m->sysstack_lo);
    void *r = stack_call_on(sysstack_asan_body, &c, (void *)sp);
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#else
    void *r = stack_call_on(fn, arg, (void *)sp);
#endif
    m->on_sysstack = false;
    m->locks--;
    return r;
}

void *gort_on_system_stack(void *(*fn)(void *), void *arg)
{
    return sysstack_call(fn, arg);
}
