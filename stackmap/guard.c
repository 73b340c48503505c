/* stackmap/guard.c — fault reports: GORT_DEBUG=stackguard=1 guard pages, and the
 * SIGSEGV/SIGBUS handler that names the task or the moved stack (stackguard=1,
 * stackmove=1).
 *
 * The guard pages themselves are made by the stack pool (core/stackpool.c: in this
 * mode every stack is a page-aligned block of its own with a PROT_NONE page directly
 * under stack_lo) and by stack_block_alloc for stacks above the pool (relocate.c).
 * Here: the handler, installed by gort_run when either mode is on and removed at
 * teardown (the previous actions come back: Check forks per test, and one process may
 * call gort_run several times).
 *
 * The handler runs on the thread's sigaltstack: an overflowing task has no stack left
 * for the kernel's signal frame, so without one the kernel kills the process silently.
 * Async preemption (preempt/signal.c) gives every M one; in the other preemption modes
 * guard_m_init gives one to each M that has none. The report itself runs on the M's
 * system stack (sysstack_call: free while a task runs), so it may be deep (symbolizing
 * through libunwind, stdio). None of that is async-signal-safe: the handler is on its
 * way to abort(), and a fault inside it is blocked SIGSEGV, which the kernel turns into
 * a plain kill — the worst case is a lost report, never a wrong continuation.
 * Faults that are not ours (an address outside the current task's guard page and, in
 * stress mode, outside every quarantined block) go to the previous handler, or to the
 * default action: the handler resets it and returns, so the fault repeats and kills.
 * Locks: none (a fault handler must not wait).
 */
#include <signal.h>
#include <string.h>
#include <ucontext.h>

#include "rt.h"
#include "sched_impl.h"
#include "stackmap.h"

enum { GUARD_ALTSTACK_SIZE = 64 * 1024 };

static struct sigaction guard_old_segv; /* SIGSEGV's action before ours: guard_install
                                           writes it, the handler reads (may reset) */
static struct sigaction guard_old_bus;  /* the same for SIGBUS */
static bool guard_installed;            /* written by the gort_run thread with no M
                                           running; read by Ms started after it */

/* The sigaltstack this thread got from guard_m_init (NULL: it had one already). */
static __thread void *guard_altstack __attribute__((tls_model("initial-exec")));
static __thread stack_t guard_old_altstack __attribute__((tls_model("initial-exec")));

/* What the handler hands to the report on the system stack (its own frame). */
struct guard_fault {
    int sig;         /* SIGSEGV or SIGBUS */
    uintptr_t addr;  /* fault address (si_addr, or the 0xdbdb... register value) */
    uintptr_t pc;    /* faulting instruction */
    uintptr_t fp;    /* rbp at the fault: the backtrace's start */
    g_t *g;          /* the task whose guard page was hit, or NULL (stale stack) */
};

static void *guard_report_sys(void *arg)
{
    struct guard_fault *f = arg;
    g_t *g = f->g;
    char site[200];
    /* dbg_print's buffer is 240 bytes: one symbolized PC per line */
    if (g) {
        dbg_print("gort: fatal error: task %lu (%s) overflowed its stack\n",
                  (unsigned long)g->id, g->name ? g->name : "unnamed");
        dbg_print("gort: %s at address %p, in the guard page under its %lu-byte stack "
                  "[%p, %p): uninstrumented code used more than the slack\n",
                  f->sig == SIGBUS ? "SIGBUS" : "SIGSEGV", (void *)f->addr,
                  (unsigned long)(g->stack_hi - g->stack_lo), (void *)g->stack_lo,
                  (void *)g->stack_hi);
        dbg_print("gort: faulting pc: %s\n", spawn_site_str((void *)f->pc, site, sizeof site));
        dbg_print("gort: task %lu was spawned at %s\n", (unsigned long)g->id,
                  spawn_site_str(g->spawn_pc, site, sizeof site));
        dbg_print("gort: backtrace of task %lu:\n", (unsigned long)g->id);
        stack_backtrace_print(f->fp, f->pc, g->stack_lo, g->stack_hi);
        gort_throw("stack overflow (guard page)");
    }
    m_t *m = m_self();
    g_t *cur = m ? m->curg : NULL;
    dbg_print("gort: fatal error: fault at %p in a moved (stale) stack\n", (void *)f->addr);
    dbg_print("gort: faulting pc: %s\n", spawn_site_str((void *)f->pc, site, sizeof site));
    if (cur) {
        dbg_print("gort: running task %lu (%s)\n", (unsigned long)cur->id,
                  cur->name ? cur->name : "unnamed");
        dbg_print("gort: task %lu was spawned at %s\n", (unsigned long)cur->id,
                  spawn_site_str(cur->spawn_pc, site, sizeof site));
        dbg_print("gort: backtrace of task %lu:\n", (unsigned long)cur->id);
        stack_backtrace_print(f->fp, f->pc, cur->stack_lo, cur->stack_hi);
    }
    gort_throw("stack: use of a stale stack pointer");
    return NULL;
}

static void guard_chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *o = sig == SIGBUS ? &guard_old_bus : &guard_old_segv;
    if ((o->sa_flags & SA_SIGINFO) && o->sa_sigaction) {
        o->sa_sigaction(sig, si, uc);
        return;
    }
    if (o->sa_handler == SIG_IGN) /* ignoring a fault loops on it: die instead */
        o->sa_handler = SIG_DFL;
    if (o->sa_handler != SIG_DFL) {
        o->sa_handler(sig);
        return;
    }
    /* default action: restore it and return, the faulting instruction runs again */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
}

static void guard_handler(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    struct guard_fault f = {
        .sig = sig,
        .addr = (uintptr_t)si->si_addr,
        .pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP],
        .fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP],
    };
    m_t *m = m_self();
    g_t *g = m ? m->curg : NULL;
    if (g && rt_debug.stackguard && g->stack_lo &&
        f.addr - (g->stack_lo - STACK_GUARD_PAGE) < STACK_GUARD_PAGE) {
        f.g = g;
        sysstack_call(guard_report_sys, &f);
    }
    if (m && rt_debug.stackmove) {
        if (stress_fault_explain(f.addr))
            sysstack_call(guard_report_sys, &f);
        /* a non-canonical address (0xdbdb..., read from a poisoned old stack) faults
         * as a general protection fault: no address, look for it in the registers */
        if (si->si_code == SI_KERNEL)
            for (int r = REG_R8; r <= REG_RCX; r++)
                if (((uint64_t)uc->uc_mcontext.gregs[r] >> 48) == 0xdbdb &&
                    stress_fault_explain((uintptr_t)uc->uc_mcontext.gregs[r])) {
                    f.addr = (uintptr_t)uc->uc_mcontext.gregs[r];
                    sysstack_call(guard_report_sys, &f);
                }
    }
    guard_chain(sig, si, ucv);
}

/* Gives this thread a sigaltstack if it has none. Context: an M's thread, at start. */
void guard_m_init(void)
{
    if (!guard_installed || guard_altstack)
        return;
    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0 || !(cur.ss_flags & SS_DISABLE))
        return;
    void *mem = rt_alloc(GUARD_ALTSTACK_SIZE);
    if (!mem)
        return; /* the report is lost on this M; the fault still kills */
    stack_t ss = {.ss_sp = mem, .ss_size = GUARD_ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, &guard_old_altstack) != 0) {
        rt_free(mem);
        return;
    }
    guard_altstack = mem;
}

/* Removes and frees what guard_m_init set. Context: the same thread, at its end. */
void guard_m_exit(void)
{
    if (!guard_altstack)
        return;
    stack_t ss = guard_old_altstack;
    if (!(ss.ss_flags & SS_DISABLE) && ss.ss_sp) {
        sigaltstack(&ss, NULL);
    } else {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    rt_free(guard_altstack);
    guard_altstack = NULL;
}

/* Context: the gort_run thread (m0), before any task runs. Nothing to do unless
 * stackguard=1 or stackmove=1. */
void guard_install(void)
{
    if (!rt_debug.stackguard && !rt_debug.stackmove)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGURG); /* no preemption signal nested on the alt stack */
    if (sigaction(SIGSEGV, &sa, &guard_old_segv) != 0)
        return;
    if (sigaction(SIGBUS, &sa, &guard_old_bus) != 0) {
        sigaction(SIGSEGV, &guard_old_segv, NULL);
        return;
    }
    guard_installed = true;
    guard_m_init();
}

/* Context: the gort_run thread at teardown, every other M gone. */
void guard_uninstall(void)
{
    if (!guard_installed)
        return;
    guard_m_exit();
    sigaction(SIGSEGV, &guard_old_segv, NULL);
    sigaction(SIGBUS, &guard_old_bus, NULL);
    guard_installed = false;
}
