/* core/dump.c — gort_dump_tasks: every task, its state, what it waits on, where it was
 * spawned, and (for parked tasks) its backtrace from the frame-pointer chain.
 *
 * The walk reads only inside the task's own stack [lo, hi), so a racing wake-up can
 * give a stale frame but never a fault. With the world stopped (deadlock report, gc) the
 * dump is exact. Context: sysstack (uses stdio).
 */
#include <stdio.h>
#include <string.h>

#include "rt.h"
#include "sched_impl.h"
#include "gc/gc.h"

static const char *const status_names[] = {
    [G_IDLE] = "idle",         [G_RUNNABLE] = "runnable", [G_RUNNING] = "running",
    [G_WAITING] = "waiting",   [G_SYSCALL] = "syscall",   [G_DEAD] = "dead",
};

/* "fn+0xNN (path:line)" for a return address (a spawn site, a frame of a backtrace):
 * the leak reports' symbolizer (gc/report.c), so dumps and reports name code alike.
 * Context: sysstack (libunwind, stdio). */
const char *spawn_site_str(void *pc, char *buf, size_t len)
{
    if (!pc)
        snprintf(buf, len, "?");
    else
        snprintf(buf, len, "%s", report_symbolize(pc));
    return buf;
}

/* Saved context layout (core/arch/x86_64.S): fpcw, mxcsr, r15, r14, r13, r12, rbx, rbp,
 * return address. */
enum { CTX_RBP_SLOT = 7, CTX_RET_SLOT = 8, BACKTRACE_MAX = 32 };

static void backtrace_parked(FILE *out, g_t *g)
{
    uint64_t *sp = g->ctx.sp;
    uintptr_t lo = g->stack_lo, hi = g->stack_hi;
    if ((uintptr_t)sp < lo || (uintptr_t)(sp + CTX_RET_SLOT + 1) > hi)
        return;
    uintptr_t fp = sp[CTX_RBP_SLOT];
    char buf[200];
    for (int depth = 0; depth < BACKTRACE_MAX; depth++) {
        if (fp < lo || fp + 16 > hi || (fp & 7))
            break;
        void *ret = (void *)((uint64_t *)fp)[1];
        if (!ret)
            break;
        fprintf(out, "        %s\n", spawn_site_str(ret, buf, sizeof buf));
        uintptr_t next = ((uint64_t *)fp)[0];
        if (next <= fp)
            break;
        fp = next;
    }
}

/* Prints every live task. Returns the count printed. Context: sysstack. */
int dump_tasks_locked_world(FILE *out)
{
    int n = 0;
    int64_t now = gort_now();
    char site[200];
    rtlock_acquire(&allg_lock);
    for (size_t i = 0; i < allg_len; i++) {
        g_t *g = allg[i];
        int st = atomic_load_explicit(&g->status, memory_order_relaxed);
        if (st == G_IDLE || st == G_DEAD)
            continue;
        n++;
        fprintf(out, "task %lu", (unsigned long)g->id);
        if (g->name)
            fprintf(out, " \"%s\"", g->name);
        if (st == G_WAITING) {
            int64_t secs = (now - g->wait_since) / 1000000000;
            fprintf(out, " [%s", wait_reason_str(g->wait_reason));
            if (secs > 0)
                fprintf(out, ", %ld s", (long)secs);
            fprintf(out, "]");
            if (g->wait_obj)
                fprintf(out, " on %p", g->wait_obj);
        } else {
            fprintf(out, " [%s]", status_names[st]);
        }
        fprintf(out, ":\n    spawned at %s\n", spawn_site_str(g->spawn_pc, site, sizeof site));
        if (st == G_WAITING || st == G_RUNNABLE)
            backtrace_parked(out, g);
    }
    rtlock_release(&allg_lock);
    fflush(out);
    return n;
}

struct dump_req {
    FILE *out;
    int n;
};

static void *dump_sys(void *arg)
{
    struct dump_req *r = arg;
    r->n = dump_tasks_locked_world(r->out);
    return NULL;
}

int gort_dump_tasks(FILE *out)
{
    if (!out)
        return -EINVAL;
    if (!sched.allp)
        return 0;
    struct dump_req r = {out, 0};
    sysstack_call(dump_sys, &r);
    return r.n;
}
