/* preempt/signal.c — SIGURG: per-M CPU-time timers, the handler, and the asynchronous
 * stop of a running task.
 *
 * Sources of SIGURG for an M:
 *  - its own periodic timer on the thread's CPU clock (timer_create with
 *    CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID), period = the time slice: a blocked or
 *    idle thread consumes no CPU and gets no signal. The kernel checks these timers at
 *    its tick (HZ), so the finest real period is ~4 ms here. A timer signal stops the
 *    task only if the P's schedtick is the same as at the previous timer signal: the
 *    task ran at least one whole period of CPU.
 *  - sysmon's tgkill (preempt_kick): sets m's kick request (the P tick it saw) first;
 *    the handler stops the task if that tick is still current.
 * What the handler does (on the M's sigaltstack; async-signal-safe; errno preserved):
 *  - at a safe PC (preempt/safepc.c: user code, not the runtime/libc/allocator...; no
 *    runtime lock held, no gort_nopreempt section, not pinned, not on the system stack,
 *    the usual signal mask, room on the task stack) it rewrites the interrupted context
 *    so that sigreturn enters preempt_async_entry (core/arch/x86_64.S) with every
 *    register intact, rsp 136 bytes lower (red zone untouched) and the PC pushed as a
 *    return address. The stub saves the full state and calls preempt_async_park, which
 *    requeues the task on the global runq (Go's choice) and switches. Rejected: switching
 *    inside the handler (Go rejected it too): the kernel's signal frame would have to be
 *    kept per task and a task could never resume on another thread.
 *  - else it asks for a cooperative stop: g->preempt and a poisoned stack guard (the next
 *    GORT_FRAME check or runtime call yields).
 * The vector state goes to g->xsave (CPUID 0xD size, 64-byte aligned), allocated only
 * for tasks that are preempted: the handler cannot allocate, so each M keeps one spare
 * area, handed to the first task it stops without one and refilled by
 * preempt_async_park (task context, after the stop).
 * Signals that are not ours (another si_code, another sender, no kick pending) go to the
 * handler that was installed before ours.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"
#include "timer.h"

/* Stack the stop needs below the interrupted sp: red zone (128), the stub's frame
 * (17 words + alignment), preempt_async_park -> g_yield -> g_switch_to -> ctx_switch
 * (measured ~300 bytes at -O2; ASan builds have 64 KiB stacks), with margin. */
enum { ASYNC_STACK_NEED = 128 + 160 + 640, ALTSTACK_MIN = 64 * 1024 };

typedef struct preempt_m {
    m_t *m;                   /* owner */
    pid_t tid;                /* kernel thread id; set at init, read by kickers */
    clockid_t cpuclock;       /* this thread's CPU clock; read by sysmon */
    timer_t timer;            /* the slice timer; owner thread only */
    bool has_timer;
    void *altstack;           /* our sigaltstack, or NULL if the thread had one */
    stack_t old_altstack;     /* restored at exit (the gort_run thread lives on) */
    uint64_t mask0;           /* signal mask (first word) tasks normally run with */
    void *_Atomic spare;      /* xsave area for the next task stopped without one:
                               * the handler takes it (exchange), the park refills it;
                               * both on this thread */
    uint32_t timer_tick;      /* P tick at the previous timer signal; handler only */
    bool timer_tick_valid;
    _Atomic uint32_t kick_tick; /* P tick a kicker wants stopped; written before kick */
    _Atomic uint32_t kick;      /* 1: a kick is pending (release by the kicker, acquire
                                 * exchange by the handler) */
    uint64_t n_signals;       /* handler only: diagnostics */
} preempt_m_t;

static struct sigaction preempt_old_sa; /* the handler before ours; chained to */
static _Atomic bool preempt_installed;
static pid_t preempt_pid;               /* this process (Check forks per test) */
static char preempt_cookie;             /* sigev_value of our timers */
static uint32_t preempt_xsave_size;

/* From core/arch/x86_64.S */
void preempt_async_entry(void);

/* --------------------------------------------------------------- the stop path */

/* Called by the stub before it touches any vector register: none may be used here. */
__attribute__((target("general-regs-only"), visibility("hidden"))) void *
preempt_async_xsave_area(void)
{
    return m_self()->curg->xsave;
}

static void *timers_run_sys(void *arg)
{
    timers_run(arg, gort_now());
    return NULL;
}

/* The task, stopped at a safe PC, with its registers saved on its stack (regs: r15 r14
 * r13 r12 rbx r11 r10 r9 r8 rdi rsi rdx rcx rax rflags rbp pc) and its vector state in
 * g->xsave. Task context (the task's own stack); switches; returns, possibly on
 * another M, the area to restore the vector state from. */
__attribute__((visibility("hidden"))) void *preempt_async_park(void *regs)
{
    m_t *m = m_self();
    g_t *g = m->curg;
    int saved_errno = *errno_ptr();
    preempt_m_t *st = m->preempt;
    __atomic_store_n(&g->preempt, false, __ATOMIC_RELAXED);
    m->p->n_preempt_async++;
    if (st && !atomic_load_explicit(&st->spare, memory_order_relaxed)) {
        /* relaxed: only this thread (handler or task) touches the spare */
        void *x = rt_alloc_aligned(preempt_xsave_size, 64);
        atomic_store_explicit(&st->spare, x, memory_order_relaxed);
    }
    /* A due timer of this P (a sleeper waiting behind this task, the usual reason for
     * a kick) fires now, from a running task, so g_ready puts the woken task in runnext
     * and it runs next instead of queueing behind every other runnable task. */
    p_t *p = m->p;
    if (timers_next(p) <= gort_now())
        sysstack_call(timers_run_sys, p);
    *errno_ptr() = saved_errno;
    __atomic_store_n(&g->xsave_live, true, __ATOMIC_RELAXED);
    g_yield(true);
    __atomic_store_n(&g->xsave_live, false, __ATOMIC_RELAXED);
    return g->xsave;
}

/* --------------------------------------------------------------- the handler */

static void preempt_chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *o = &preempt_old_sa;
    if (o->sa_flags & SA_SIGINFO) {
        if (o->sa_sigaction)
            o->sa_sigaction(sig, si, uc);
    } else if (o->sa_handler != SIG_DFL && o->sa_handler != SIG_IGN) {
        o->sa_handler(sig);
    }
    /* SIG_DFL for SIGURG is "ignore" */
}

static void preempt_handle(m_t *m, preempt_m_t *st, bool kicked, ucontext_t *uc)
{
    g_t *g = m->curg;
    p_t *p = m->p;
    if (!g || !p || atomic_load_explicit(&g->status, memory_order_relaxed) != G_RUNNING)
        return;
    uint32_t tick = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
    bool due = false;
    if (kicked && atomic_load_explicit(&st->kick_tick, memory_order_relaxed) == tick)
        due = true;
    if (!kicked) {
        due = st->timer_tick_valid && st->timer_tick == tick;
        st->timer_tick = tick;
        st->timer_tick_valid = true;
    }
    if (!due || sched.preempt_mode == GORT_PREEMPT_OFF)
        return;
    greg_t *gr = uc->uc_mcontext.gregs;
    uintptr_t pc = (uintptr_t)gr[REG_RIP];
    uintptr_t sp = (uintptr_t)gr[REG_RSP];
    uint64_t mask;
    memcpy(&mask, &uc->uc_sigmask, sizeof mask);
    /* The context is the live one only if the kernel just put it on this stack, right
     * above our frame (the signal stack). TSan defers an asynchronous signal: it keeps a
     * copy of the context in its own memory and calls us later, at the end of some
     * interceptor, on whatever stack the task (its fiber) is on then, possibly on
     * another M. Rewriting that copy would store the old PC at the old sp-136, inside
     * frames that live there now, and change nothing else (the chan/select crashes
     * under TSan); such a signal only asks for a cooperative stop. */
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    bool live = (uintptr_t)uc - here < ALTSTACK_MIN;
    bool safe = live && sched.preempt_mode == GORT_PREEMPT_ASYNC && m->locks == 0 &&
                !m->on_sysstack && g->nopreempt == 0 && g->lock_thread == 0 &&
                sp <= g->stack_hi && sp >= g->stack_lo + STACK_SLACK / 4 + ASYNC_STACK_NEED &&
                mask == st->mask0 && safepc_is_safe(pc);
    if (safe && !g->xsave) {
        /* relaxed: see preempt_m_t.spare */
        g->xsave = atomic_exchange_explicit(&st->spare, NULL, memory_order_relaxed);
        safe = g->xsave != NULL;
    }
    if (safe) {
        uintptr_t nsp = sp - 128 - 8;
        *(uint64_t *)nsp = pc;
        gr[REG_RSP] = (greg_t)nsp;
        gr[REG_RIP] = (greg_t)(uintptr_t)preempt_async_entry;
        return;
    }
    /* Cooperative fallback. On the system stack the guard belongs to other frames:
     * leave it, the flag is honoured at the task's next switch-in or runtime call. */
    __atomic_store_n(&g->preempt, true, __ATOMIC_RELAXED);
    if (!m->on_sysstack)
        __atomic_store_n(m->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
}

static void preempt_sigurg(int sig, siginfo_t *si, void *ucv)
{
    int saved_errno = *errno_ptr();
    m_t *m = m_self();
    preempt_m_t *st = m ? __atomic_load_n((preempt_m_t **)&m->preempt, __ATOMIC_ACQUIRE) : NULL;
    bool ours = false;
    bool kicked = false;
    if (si->si_code == SI_TIMER && si->si_value.sival_ptr == &preempt_cookie) {
        ours = true;
        /* a kick that coalesced with this timer signal (standard signals queue once) */
        kicked = st && atomic_exchange_explicit(&st->kick, 0, memory_order_acquire);
    } else if (si->si_code == SI_TKILL && si->si_pid == preempt_pid && st) {
        /* acquire: pairs with the kicker's release store of kick after kick_tick */
        ours = kicked = atomic_exchange_explicit(&st->kick, 0, memory_order_acquire);
    }
    if (!ours)
        preempt_chain(sig, si, ucv);
    else if (st) {
        st->n_signals++;
        preempt_handle(m, st, kicked, ucv);
        /* a kick for another tick (its task is gone) must not make the timer's rule
         * think this task ran a whole period */
    }
    *errno_ptr() = saved_errno;
}

/* --------------------------------------------------------------- setup */

int preempt_start(void)
{
    preempt_pid = getpid();
    preempt_xsave_size = arch_xsave_size();
    if (sched.preempt_mode != GORT_PREEMPT_ASYNC)
        return 0;
    int rc = safepc_build();
    if (rc)
        return rc;
    if (!atomic_load_explicit(&preempt_installed, memory_order_relaxed)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = preempt_sigurg;
        sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        /* glibc copies only the kernel's 8-byte mask into old.sa_mask and leaves the
         * rest of the 128-byte sigset_t as it was: zero it first, or stale stack words
         * there look like pointers to the leak detector. */
        memset(&preempt_old_sa, 0, sizeof preempt_old_sa);
        if (sigaction(SIGURG, &sa, &preempt_old_sa) != 0)
            return -errno;
        atomic_store_explicit(&preempt_installed, true, memory_order_relaxed);
    }
    return 0;
}

void preempt_stop(void) { safepc_free(); }

void preempt_m_init(m_t *m)
{
    if (sched.preempt_mode != GORT_PREEMPT_ASYNC ||
        !atomic_load_explicit(&preempt_installed, memory_order_relaxed))
        return;
    preempt_m_t *st = rt_alloc(sizeof *st);
    if (!st)
        return;
    st->m = m;
    st->tid = (pid_t)syscall(SYS_gettid);
    if (pthread_getcpuclockid(pthread_self(), &st->cpuclock) != 0)
        st->cpuclock = CLOCK_THREAD_CPUTIME_ID;
    atomic_store_explicit(&st->spare, rt_alloc_aligned(preempt_xsave_size, 64),
                          memory_order_relaxed);

    /* The handler runs on a stack of its own: task stacks are 2 KiB, the kernel's
     * signal frame alone is ~3.4 KiB with AVX-512. A thread that already has one (the
     * program's own, on the gort_run thread) keeps it. */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
        long min = sysconf(_SC_SIGSTKSZ);
        size_t size = min > ALTSTACK_MIN ? (size_t)min : ALTSTACK_MIN;
        st->altstack = rt_alloc(size);
        if (st->altstack) {
            stack_t ss = {.ss_sp = st->altstack, .ss_size = size, .ss_flags = 0};
            if (sigaltstack(&ss, &st->old_altstack) != 0) {
                rt_free(st->altstack);
                st->altstack = NULL;
            }
        }
    }
    if (!st->altstack && (cur.ss_flags & SS_DISABLE)) {
        /* no altstack: a signal on a 2 KiB task stack would overflow it */
        rt_free(atomic_load_explicit(&st->spare, memory_order_relaxed));
        rt_free(st);
        return;
    }
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGURG);
    pthread_sigmask(SIG_UNBLOCK, &set, &old);
    sigdelset(&old, SIGURG);
    memcpy(&st->mask0, &old, sizeof st->mask0);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGURG;
    sev.sigev_value.sival_ptr = &preempt_cookie;
    sev._sigev_un._tid = st->tid;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &st->timer) == 0) {
        st->has_timer = true;
        uint64_t ns = (uint64_t)sched.timeslice_us * 1000;
        struct itimerspec its = {
            .it_interval = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)},
            .it_value = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)},
        };
        timer_settime(st->timer, 0, &its, NULL);
    }
    /* release: sysmon and kickers read the fields after loading the pointer */
    __atomic_store_n((preempt_m_t **)&m->preempt, st, __ATOMIC_RELEASE);
}

void preempt_m_exit(m_t *m)
{
    preempt_m_t *st = m->preempt;
    if (!st)
        return;
    if (st->has_timer)
        timer_delete(st->timer);
    /* Block SIGURG while the state goes away: a kick already sent may still arrive. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGURG);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    __atomic_store_n((preempt_m_t **)&m->preempt, NULL, __ATOMIC_RELEASE);
    if (st->altstack) {
        stack_t ss = st->old_altstack;
        if (!(ss.ss_flags & SS_DISABLE))
            sigaltstack(&ss, NULL);
        else {
            stack_t off = {.ss_flags = SS_DISABLE};
            sigaltstack(&off, NULL);
        }
        rt_free(st->altstack);
    }
    rt_free(atomic_load_explicit(&st->spare, memory_order_relaxed));
    rt_free(st);
    /* A pending SIGURG is ours (or would have been chained): drop it, then unblock. */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) == SIGURG)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* --------------------------------------------------------------- requests */

bool preempt_kick(m_t *m, uint32_t tick, bool force)
{
    /* acquire: pairs with the release store in preempt_m_init */
    preempt_m_t *st = __atomic_load_n((preempt_m_t **)&m->preempt, __ATOMIC_ACQUIRE);
    if (!st)
        return false;
    (void)force;
    atomic_store_explicit(&st->kick_tick, tick, memory_order_relaxed);
    /* release: the handler's acquire exchange of kick sees kick_tick */
    atomic_store_explicit(&st->kick, 1, memory_order_release);
    return syscall(SYS_tgkill, preempt_pid, st->tid, SIGURG) == 0;
}

int64_t preempt_m_cpu_ns(m_t *m)
{
    /* acquire: pairs with the release store in preempt_m_init */
    preempt_m_t *st = __atomic_load_n((preempt_m_t **)&m->preempt, __ATOMIC_ACQUIRE);
    struct timespec ts;
    if (!st || clock_gettime(st->cpuclock, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void preempt_request_all(void)
{
    if (!sched.allp || sched.preempt_mode == GORT_PREEMPT_OFF)
        return;
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *p = sched.allp[i];
        /* acquire: pairs with p_set_m's release; the M record outlives the run */
        m_t *m = __atomic_load_n(&p->m, __ATOMIC_ACQUIRE);
        if (!m || atomic_load_explicit(&p->status, memory_order_relaxed) == 0)
            continue;
        g_t *g = __atomic_load_n(&m->curg, __ATOMIC_RELAXED);
        if (!g || atomic_load_explicit(&g->status, memory_order_relaxed) != G_RUNNING)
            continue;
        uint32_t tick = __atomic_load_n(&p->schedtick, __ATOMIC_RELAXED);
        if (sched.preempt_mode == GORT_PREEMPT_ASYNC && preempt_kick(m, tick, true))
            continue;
        /* relaxed: a stale request only costs one extra yield */
        __atomic_store_n(&g->preempt, true, __ATOMIC_RELAXED);
        __atomic_store_n(m->tls_stackguard, STACKGUARD_PREEMPT, __ATOMIC_RELAXED);
    }
}
