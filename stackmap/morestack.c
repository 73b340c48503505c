/* stackmap/morestack.c — GORT_FRAME's slow path.
 *
 * gort_morestack (core/arch/x86_64.S) saved every general register on the task stack
 * and the vector state in this M's scratch area, and calls morestack_slow. Two reasons
 * bring a task here:
 *  - the scheduler poisoned the guard (STACKGUARD_PREEMPT) to ask it to yield: the
 *    cooperative preemption point. The vector state is copied to the task's own area
 *    (allocated on first need, never in every task), because the task may resume on
 *    another M whose scratch area another task will have used meanwhile.
 *  - the stack is really short: growth by copying is the stack-map work (issue 3) and
 *    not built yet, so this is reported as a fatal overflow naming the task.
 */
#include <string.h>

#include "rt.h"
#include "sched_impl.h"

struct morestack_ret {
    void *regs;  /* where the saved register block is now */
    void *xsave; /* area to restore the vector state from */
};

/* Called by the trampoline before anything touches a vector register: this function
 * must not use any (hence general-regs-only). */
__attribute__((target("general-regs-only"), visibility("hidden"))) void *
morestack_xsave_scratch(void)
{
    m_t *m = m_self();
    return m->xsave_scratch;
}

static RT_COLD __attribute__((noreturn)) void stack_overflow_fatal(g_t *g, uintptr_t sp)
{
    char site[160];
    dbg_print("gort: fatal error: task %lu (%s) exceeded its %lu-byte stack "
              "(sp %p, guard %p): stack growth by copying is not built yet; give the task "
              "a larger stack with gort_go_opts(.stack_min) or gort_config.stack_min\n",
              (unsigned long)g->id, g->name ? g->name : "unnamed",
              (unsigned long)(g->stack_hi - g->stack_lo), (void *)sp, (void *)g->stackguard);
    dbg_print("gort: task %lu was spawned at %s\n", (unsigned long)g->id,
              spawn_site_str(g->spawn_pc, site, sizeof site));
    gort_throw("stack: overflow");
}

__attribute__((visibility("hidden"))) struct morestack_ret morestack_slow(void *regs,
                                                                          void *scratch)
{
    struct morestack_ret ret = {regs, scratch};
    m_t *m = m_self();
    g_t *g = m->curg;
    if (!g)
        return ret; /* a GORT_FRAME function called on a system stack: nothing to do */
    uintptr_t sp = (uintptr_t)regs;
    bool preempt_asked = g->preempt || *m->tls_stackguard == STACKGUARD_PREEMPT;
    if (preempt_asked) {
        g->preempt = false;
        *m->tls_stackguard = g->stackguard;
    }
    if (sp < g->stackguard)
        stack_overflow_fatal(g, sp);
    if (!preempt_asked || g->nopreempt || m->locks || g->lock_thread ||
        sched.preempt_mode == GORT_PREEMPT_OFF)
        return ret;
    size_t xs = arch_xsave_size();
    if (!g->xsave) {
        g->xsave = rt_alloc_aligned(xs, 64);
        if (!g->xsave)
            return ret; /* no memory for the state: keep running, try next time */
    }
    memcpy(g->xsave, scratch, xs);
    m->p->n_preempt_coop++;
    g_yield(true); /* Go's choice: a preempted task goes to the global runq */
    ret.xsave = g->xsave;
    return ret;
}

int gort_stack_reserve(size_t bytes)
{
    g_t *g = g_self();
    if (!g)
        return -EPERM;
    if (arch_stack_pointer() - bytes >= g->stackguard &&
        arch_stack_pointer() > bytes)
        return 0; /* already enough room */
    return -ENOSYS;
}
