/* stackmap/morestack.c — GORT_FRAME's slow path: cooperative preemption, stack growth,
 * gort_stack_reserve, and the stack-limit fatal error.
 *
 * gort_morestack (core/arch/x86_64.S) saved every general register on the task stack
 * and the vector state in this M's scratch area, and calls morestack_slow, still on the
 * task stack (inside the slack). It is entered from a GORT_FRAME check or from a
 * runtime call's entry check (RT_ENTRY_CHECK, core/rt.h). Reasons to come here:
 *  - the scheduler poisoned the guard (STACKGUARD_PREEMPT) to ask the task to yield:
 *    the vector state is copied to the task's own area (allocated on first need),
 *    because the task may resume on another M whose scratch area is reused meanwhile;
 *  - the stack is short: the stack moves to a block twice as large (relocate.c), on
 *    the system stack;
 *  - gort_stack_reserve asked for room (it enters the trampoline itself);
 *  - stress mode (stackmove=1): every check moves the stack (the guard sits at the top).
 * After a move morestack_slow returns the register block's new address, so the
 * trampoline resumes on the new stack. The old block cannot be freed before that
 * (morestack_slow's own frame and the trampoline's return path are on it), so the
 * register block's return address is pointed at stack_grow_resume: it runs first on
 * the new stack, with every register saved again, frees the old block (or quarantines
 * it in stress mode) and returns to the real address. Between the two the task runs
 * only runtime code of this M (no switch, no asynchronous preemption at a runtime PC),
 * so the real return address and the old block wait in thread-local slots.
 * Rejected: freeing the old block from morestack_slow (another M may take it from the
 * global pool and write over the frames the trampoline still returns through); a
 * per-M "free later" slot drained by the scheduler (a hook on every switch).
 */
#include <string.h>

#include "rt.h"
#include "sched_impl.h"
#include "stackmap.h"

struct morestack_ret {
    void *regs;  /* where the saved register block is now */
    void *xsave; /* area to restore the vector state from */
};

/* Thread-local hand-over from morestack_slow to stack_grow_finish (same thread, see the
 * file head) and from gort_stack_reserve to morestack_slow and back. */
static __thread uintptr_t grow_ret_pc __attribute__((tls_model("initial-exec")));
static __thread void *grow_old_lo __attribute__((tls_model("initial-exec")));
static __thread size_t grow_old_size __attribute__((tls_model("initial-exec")));
static __thread g_t *grow_g __attribute__((tls_model("initial-exec")));
static __thread size_t reserve_req __attribute__((tls_model("initial-exec")));
static __thread int reserve_rc __attribute__((tls_model("initial-exec")));

/* Called by the trampolines before anything touches a vector register: this function
 * must not use any (hence general-regs-only). */
__attribute__((target("general-regs-only"), visibility("hidden"))) void *
morestack_xsave_scratch(void)
{
    m_t *m = m_self();
    return m->xsave_scratch;
}

void stack_grow_resume(void);
/* Entered by the trampoline's `ret` on the new stack, every register as the task had
 * it and rsp just above the return-address slot. Saves everything again (same layout
 * as gort_morestack), frees the old block, restores, returns to the real address. */
__asm__(".text\n"
        ".globl stack_grow_resume\n"
        ".hidden stack_grow_resume\n"
        ".type stack_grow_resume, @function\n"
        ".p2align 4\n"
        "stack_grow_resume:\n"
        "  .cfi_startproc\n"
        "  subq $8, %rsp\n" /* the return slot again: stack_grow_finish fills it */
        "  pushfq\n"
        "  pushq %rax\n  pushq %rcx\n  pushq %rdx\n  pushq %rsi\n  pushq %rdi\n"
        "  pushq %r8\n  pushq %r9\n  pushq %r10\n  pushq %r11\n  pushq %rbx\n"
        "  pushq %rbp\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, %rbx\n"
        "  andq $-16, %rsp\n"
        "  callq morestack_xsave_scratch\n"
        "  movq %rax, %r12\n"
        "  movl $-1, %eax\n  movl $-1, %edx\n"
        "  xsave64 (%r12)\n"
        "  movq %rbx, %rdi\n"
        "  callq stack_grow_finish\n"
        "  movl $-1, %eax\n  movl $-1, %edx\n"
        "  xrstor64 (%r12)\n"
        "  movq %rbx, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbp\n  popq %rbx\n"
        "  popq %r11\n  popq %r10\n  popq %r9\n  popq %r8\n  popq %rdi\n  popq %rsi\n"
        "  popq %rdx\n  popq %rcx\n  popq %rax\n"
        "  popfq\n"
        "  ret\n"
        "  .cfi_endproc\n"
        ".size stack_grow_resume, .-stack_grow_resume\n");

/* arg: the task that moved (on the system stack g_self() is NULL). */
static void *old_block_free_sys(void *arg)
{
    g_t *g = arg;
    if (stackmap_cfg.stress)
        stress_quarantine(grow_old_lo, grow_old_size, g->id);
    else
        stack_block_free(grow_old_lo, grow_old_size);
    return NULL;
}

/* Task stack (the new one), from stack_grow_resume. */
__attribute__((visibility("hidden"), used)) void stack_grow_finish(uint64_t *regs)
{
    g_t *g = g_self();
    if (unlikely(g != grow_g || !grow_ret_pc))
        gort_throw("stack: grown task resumed on another thread");
    int saved_errno = *errno_ptr(); /* munmap, mprotect: as in morestack_slow */
    regs[RB_RET] = grow_ret_pc;
    grow_ret_pc = 0;
    grow_g = NULL;
    sysstack_call(old_block_free_sys, g);
    grow_old_lo = NULL;
    *errno_ptr() = saved_errno;
}

/* ------------------------------------------------------------ fatal error */

struct limit_report {
    g_t *g;
    uint64_t *regs;
    size_t want;
};

static void *stack_limit_report_sys(void *arg)
{
    struct limit_report *r = arg;
    g_t *g = r->g;
    char site[200];
    dbg_print("gort: fatal error: task %lu (%s) exceeded its %lu-byte stack limit "
              "(growing from %lu to %lu bytes)\n",
              (unsigned long)g->id, g->name ? g->name : "unnamed",
              (unsigned long)sched.stack_max, (unsigned long)(g->stack_hi - g->stack_lo),
              (unsigned long)r->want);
    dbg_print("gort: task %lu was spawned at %s\n", (unsigned long)g->id,
              spawn_site_str(g->spawn_pc, site, sizeof site));
    dbg_print("gort: backtrace of task %lu:\n", (unsigned long)g->id);
    stack_backtrace_print(r->regs[RB_RBP], frame0_pc(r->regs[RB_RET]), g->stack_lo,
                          g->stack_hi);
    gort_throw("stack overflow");
}

void stack_backtrace_print(uintptr_t fp, uintptr_t pc, uintptr_t lo, uintptr_t hi)
{
    char buf[200];
    for (int depth = 0; depth < 32 && pc; depth++) {
        dbg_print("        %s\n", spawn_site_str((void *)pc, buf, sizeof buf));
        if (fp < lo || fp + 16 > hi || (fp & 7))
            break;
        uintptr_t next = ((const uint64_t *)fp)[0];
        pc = ((const uint64_t *)fp)[1];
        if (next <= fp) {
            if (pc && next == 0)
                dbg_print("        %s\n", spawn_site_str((void *)pc, buf, sizeof buf));
            break;
        }
        fp = next;
    }
}

/* ------------------------------------------------------------ growth */

/* The size to move to: twice the old one, or what `free_below` bytes below sp plus the
 * slack need. Stress mode without need: the same size (a move, not a growth). */
static size_t stack_grow_size(g_t *g, uintptr_t sp, size_t free_below, bool must_grow)
{
    size_t old = g->stack_hi - g->stack_lo;
    size_t used = g->stack_hi - sp;
    size_t size = must_grow ? old * 2 : old;
    while (size < used + free_below + STACK_SLACK + 512)
        size *= 2;
    return stack_class_round(size);
}

/* What morestack_slow hands to the system stack: kept small, it lives in the slack. */
struct grow_req {
    g_t *g;
    uint64_t *regs;   /* in: the register block; out: where it is now */
    size_t reserve;   /* bytes gort_stack_reserve wants free, 0 for a check */
    bool short_;      /* below the guard: must grow */
};

/* Context: sysstack, for the task that is in morestack on this M. */
static void *stack_grow_sys(void *arg)
{
    struct grow_req *r = arg;
    g_t *g = r->g;
    uintptr_t sp = (uintptr_t)r->regs;
    size_t size = stack_grow_size(g, sp, r->reserve, r->short_);
    if (size > sched.stack_max) {
        if (r->reserve) {
            reserve_rc = -E2BIG;
            return NULL;
        }
        if (!r->short_)
            return NULL; /* stress mode at the limit: no move */
        struct limit_report lr = {g, r->regs, size};
        stack_limit_report_sys(&lr);
    }
    stack_move_t mv = {.g = g, .sp = sp, .regs = r->regs, .new_size = size};
    stack_move_sys(&mv);
    if (mv.rc) {
        if (r->reserve)
            reserve_rc = mv.rc;
        else if (r->short_)
            gort_throw("stack: out of memory growing a task stack");
        return NULL;
    }
    atomic_fetch_add_explicit(&stackmap_n_grows, 1, memory_order_relaxed);
    uint64_t *nregs = (uint64_t *)mv.new_sp;
    grow_ret_pc = nregs[RB_RET];
    grow_old_lo = mv.old_lo;
    grow_old_size = mv.old_size;
    grow_g = g;
    nregs[RB_RET] = (uint64_t)(uintptr_t)stack_grow_resume;
    reserve_rc = 0;
    r->regs = nregs;
    return NULL;
}

static inline struct morestack_ret morestack_work(void *regs, void *scratch)
{
    struct morestack_ret ret = {regs, scratch};
    m_t *m = m_self();
    g_t *g = m->curg;
    uintptr_t sp = (uintptr_t)regs;
    /* a GORT_FRAME function on a system stack (g0, or a sysstack_call): nothing to do;
     * the task's guard compares meaninglessly with this stack's addresses */
    if (!g || m->on_sysstack || sp - g->stack_lo >= g->stack_hi - g->stack_lo)
        return ret;
    size_t reserve = reserve_req;
    reserve_req = 0;
    bool preempt_asked = __atomic_load_n(&g->preempt, __ATOMIC_RELAXED) ||
                         __atomic_load_n(m->tls_stackguard, __ATOMIC_RELAXED) == STACKGUARD_PREEMPT;
    if (preempt_asked) {
        __atomic_store_n(&g->preempt, false, __ATOMIC_RELAXED);
        __atomic_store_n(m->tls_stackguard, g->stackguard, __ATOMIC_RELAXED);
    }
    if (preempt_asked && !g->nopreempt && !m->locks && !g->lock_thread &&
        sched.preempt_mode != GORT_PREEMPT_OFF) {
        size_t xs = arch_xsave_size();
        if (!g->xsave)
            g->xsave = rt_alloc_aligned(xs, 64);
        if (g->xsave) { /* no memory for the state: keep running, try next time */
            memcpy(g->xsave, scratch, xs);
            m->p->n_preempt_coop++;
            /* xsave_live stays false: a check is a call boundary, where the ABI makes
             * every vector register caller-saved, so none holds a live pointer; what
             * they hold is stale, often another task's (a switch does not clear them) */
            g_yield(true); /* Go's choice: a preempted task goes to the global runq */
            ret.xsave = g->xsave;
            m = m_self();
        }
    }
    stackmap_config();
    bool short_ = sp < (stackmap_cfg.stress ? g->stack_lo + STACK_SLACK : g->stackguard);
    if (!short_ && !reserve && !stackmap_cfg.stress)
        return ret;
    if (unlikely(*(volatile uint64_t *)g->stack_lo != STACK_CANARY))
        stack_canary_report(g, "at a stack check, before a move (or a frame larger than "
                               "the slack below the guard)");
    struct grow_req req = {g, regs, reserve, short_};
    sysstack_call(stack_grow_sys, &req);
    ret.regs = req.regs;
    return ret;
}

/* The task's errno survives the check: a move calls the allocator, mprotect and
 * munmap, which may set it, and task code may read errno after a runtime call (a
 * switch saves and restores it the same way, core/switch.c). Read through the thread
 * pointer again at the end: the task may have yielded and resumed on another M. */
__attribute__((visibility("hidden"))) struct morestack_ret morestack_slow(void *regs,
                                                                          void *scratch)
{
    int saved_errno = *errno_ptr();
    struct morestack_ret ret = morestack_work(regs, scratch);
    *errno_ptr() = saved_errno;
    return ret;
}

int gort_stack_reserve(size_t bytes)
{
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    uintptr_t sp = arch_stack_pointer();
    if (!g || m->on_sysstack || sp - g->stack_lo >= g->stack_hi - g->stack_lo)
        return -EPERM;
    if (sp - g->stackguard >= bytes && sp > g->stackguard)
        return 0; /* already enough room */
    if (bytes > sched.stack_max)
        return -E2BIG;
    reserve_req = bytes ? bytes : 1;
    reserve_rc = 0;
    /* the same entry as GORT_FRAME's slow path: every register saved and relocated */
    __asm__ volatile("leaq -128(%%rsp), %%rsp\n\t"
                     "call gort_morestack\n\t"
                     "leaq 128(%%rsp), %%rsp" ::: "memory", "cc");
    return reserve_rc;
}
