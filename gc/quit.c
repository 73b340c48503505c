/* gc/quit.c — SIGQUIT: print every task, grouped by identical stacks, then exit(2), as
 * Go does; GORT_DEBUG=quitdump=0 leaves SIGQUIT's default action (core dump).
 *
 * The handler runs on whatever thread the kernel picked, possibly inside malloc or the
 * dynamic linker, so it uses only async-signal-safe calls: dbg_print (write(2)), static
 * memory, and no locks: allg is read racily (a task may change state under it; the
 * process is about to exit anyway). PCs are printed raw with their module offset unknown
 * (dladdr takes a lock): symbolize with `addr2line -f -e <binary> <pc - load base>` or
 * use gort_dump_tasks / gort_leakcheck, which symbolize, from a running program.
 * Installed at each gort_run (gc_run_start), left installed afterwards.
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "core/sched_impl.h"
#include "gc/gc.h"

enum { QUIT_GROUPS = 1024, QUIT_PCS = 12 };

typedef struct quit_group {
    uint64_t h;        /* 0 = empty */
    uint64_t count;
    uint64_t first_id;
    int status;
    wait_reason_t why;
    void *spawn_pc;
    void *pcs[QUIT_PCS];
    int npcs;
} quit_group_t;

static quit_group_t quit_groups[QUIT_GROUPS]; /* the handler's only: it runs once */

static void quit_handler(int sig)
{
    static const char *const st_names[] = {"idle", "runnable", "running", "waiting",
                                           "syscall", "dead"};
    dbg_print("SIGQUIT: quit\n\n");
    size_t ng = 0, overflow = 0, n = allg ? allg_len : 0;
    for (size_t i = 0; i < n; i++) {
        g_t *g = allg[i];
        int st = atomic_load_explicit(&g->status, memory_order_relaxed);
        if (st == G_IDLE || st == G_DEAD)
            continue;
        quit_group_t k = {.status = st, .why = st == G_WAITING ? g->wait_reason : WAIT_NONE,
                          .spawn_pc = g->spawn_pc, .first_id = g->id};
        if (st == G_WAITING || st == G_RUNNABLE)
            k.npcs = report_backtrace(g, k.pcs, QUIT_PCS);
        uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)st ^ ((uint64_t)k.why << 8);
        h = (h ^ (uintptr_t)k.spawn_pc) * 0xff51afd7ed558ccdull;
        for (int j = 0; j < k.npcs; j++)
            h = (h ^ (uintptr_t)k.pcs[j]) * 0xc4ceb9fe1a85ec53ull;
        h |= 1;
        size_t s = h % QUIT_GROUPS, probes = 0;
        while (quit_groups[s].h && quit_groups[s].h != h && probes++ < QUIT_GROUPS)
            s = (s + 1) % QUIT_GROUPS;
        if (probes >= QUIT_GROUPS) {
            overflow++;
            continue;
        }
        if (!quit_groups[s].h) {
            k.h = h;
            quit_groups[s] = k;
            ng++;
        }
        quit_groups[s].count++;
    }
    dbg_print("%lu group(s) of tasks with identical stacks:\n", (unsigned long)ng);
    for (size_t s = 0; s < QUIT_GROUPS; s++) {
        quit_group_t *q = &quit_groups[s];
        if (!q->h)
            continue;
        dbg_print("\n%lu task(s) [%s%s%s], e.g. task %lu\n    spawned at pc %p\n",
                  (unsigned long)q->count, st_names[q->status], q->why ? ", " : "",
                  q->why ? wait_reason_str(q->why) : "", (unsigned long)q->first_id,
                  q->spawn_pc);
        for (int j = 0; j < q->npcs; j++)
            dbg_print("        pc %p\n", q->pcs[j]);
    }
    if (overflow)
        dbg_print("\n(%lu tasks in further groups not shown)\n", (unsigned long)overflow);
    _exit(2);
}

uintptr_t gc_run_frame;

void gc_run_start(uintptr_t frame)
{
    gc_run_frame = frame;
    heap_tracked_start();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = rt_debug.quit_dump ? quit_handler : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGQUIT, &sa, NULL);
}
