/* gc/gc.h — the gc module's internal interface: the hooks core/ calls (allocation
 * registry, stop-the-world safe points, leak check at exit, cancellation flag) and the
 * pieces the files of gc/ share. gc/README.md explains the design. */
#ifndef GORT_GC_GC_H
#define GORT_GC_GC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/rt.h"
#include "gc/addrset.h"

/* ------------------------------------------------ hooks called by core/ */

/* jemalloc extent hooks for the runtime arena (core/alloc.c passes them to
 * arenas.create): every extent the arena maps, metadata included, is recorded, so
 * "owned by the runtime" is an address-range question. NULL if they cannot be set up. */
void *heap_extent_hooks(void);
/* Every rt_alloc'd object is registered (start, usable size) and unregistered by
 * rt_free: a pointer anywhere inside one finds it. Any context, any thread; leaf lock. */
void heap_obj_add(void *p, size_t size);
void heap_obj_del(void *p);

/* Stop-the-world safe points. stw_requested is read by the scheduler on its slow paths
 * (relaxed is enough there: the stopper re-checks under sched.lock and waits). */
extern RT_HIDDEN _Atomic int stw_requested;
/* An M holding a P, on g0, no lock held, no task: parks until the world restarts. */
void stw_park_m(m_t *m);
/* A task leaving a system call while the world is stopped waits here (no lock held,
 * task stack, no P); returns when the world runs again. */
void stw_wait_syscall(void);

/* gort_run's frame on the thread that called it: the program's frames above it are
 * roots; every other part of the Ms' own stacks holds only the scheduler's words
 * (below it, stale ones that would hide leaks). Set by gort_run. */
extern uintptr_t gc_run_frame;
/* gort_run, after GORT_DEBUG is parsed: records its frame (above) and installs the
 * SIGQUIT handler (gc/quit.c) unless quitdump=0. */
void gc_run_start(uintptr_t frame);

/* A runtime thread that is not an M (sysmon) registers its stack: runtime memory, never
 * a root (its frames hold stale addresses of runtime objects it looked at, and it runs
 * during a cycle, so what they hold changes between cycles). lo == hi: gone. */
void gc_runtime_thread_stack(uintptr_t lo, uintptr_t hi);
extern _Atomic uintptr_t gc_rtthread_lo, gc_rtthread_hi; /* its stack, for mark.c */
/* A runtime thread (an M, sysmon) about to exit: returns the pages of its stack below
 * the caller's frame to the kernel (they read as zeros). glibc caches the stacks of
 * exited threads, so their stale frames would otherwise be scanned as roots and hide
 * leaks. Context: that thread's own stack, nothing of it below in use. */
void gc_thread_stack_release(uintptr_t lo);

/* GORT_DEBUG=leakcheck=... at the end of gort_run (main task, just returned). Returns
 * the run result gort_run should report (rc unless leakcheck=exit found leaks). */
int leakcheck_at_exit(int rc);

/* gort_run, before scheduling (m0 holds P 0): queues the periodic leak-check timer when
 * leakcheck_interval_ms (config or GORT_DEBUG) is > 0. */
void gc_periodic_start(void);

/* g->gc_flags bits: set by the gc with the world stopped. GC_CANCELLED: before
 * g_ready; read and cleared by the woken task itself. GC_REPORTED: a periodic cycle
 * printed this task as leaked (cleared at spawn and by a cancel). */
enum { GC_CANCELLED = 1, GC_REPORTED = 2 };

/* ------------------------------------------------ shared inside gc/ */

/* Memory the gc itself maps (registry, scratch): never a root, never an object. */
void *gc_map(size_t bytes);
void gc_unmap(void *p, size_t bytes);
/* Scratch buffers kept from one cycle to the next (fresh pages cost a fault each, ~20 us
 * on these VMs): at least `bytes` of slot `slot`, contents undefined, NULL on ENOMEM.
 * Only the cycle (world flag held) uses them. */
enum { SCR_OBJS, SCR_MARKS, SCR_WORK, SCR_STACKS, SCR_TASKS, SCR_MAPS, SCR_EXCL, SCR_MAPSBUF,
       SCR_CHUNKS, SCR_SORT, SCR_LEAKS, SCR_REPORT, SCR_OBJIDX, SCR_COUNT };
void *gc_scratch(int slot, size_t bytes);
/* Copies the ranges gc_map handed out and the runtime arena's extents into out (at most
 * max); returns the count (may exceed max: call again with more room). */
size_t heap_owned_ranges(range_t *out, size_t max);

/* The tracked-heap mode (gc/tracked.c): the program's malloc'd blocks, recorded by
 * libgort_trackheap, are traced like runtime objects and its arena is not a root.
 * heap_tracked_start: gort_run, after GORT_DEBUG is parsed: decides the mode for the run
 * (prints one line when trackheap=1 asks for a layer that is not linked).
 * heap_tracked_status: 1 traced, 0 the heap is a root, -ENOTSUP asked for but absent.
 * Freeze/thaw bracket a cycle's marking: while frozen no block is registered or freed
 * (a thread the stop does not stop waits in malloc/free), so every block copied stays
 * valid until the scan ends. Between them nothing may call malloc.
 * heap_tracked_blocks: copies the blocks (frozen) into out; with max 0 returns their
 * count; SIZE_MAX when the layer lost one (no memory): no verdict then.
 * heap_tracked_owned: the layer's arena extents and own maps (never roots); count as
 * heap_owned_ranges. All are no-ops returning 0 when the mode is off.
 * heap_tracked_text: the layer's code, which no task may be stopped in (it holds its
 * registry's locks); false when no layer is linked. */
void heap_tracked_start(void);
int heap_tracked_status(void);
void heap_tracked_freeze(void);
void heap_tracked_thaw(void);
size_t heap_tracked_blocks(range_t *out, size_t max);
size_t heap_tracked_owned(range_t *out, size_t max);
bool heap_tracked_text(uintptr_t *lo, uintptr_t *hi);

/* Sorts by lo (radix sort; lo must be 8-aligned). World stopped or gc-private. */
void range_sort(range_t *a, size_t n);
/* The registered objects, sorted by address, in scratch slot SCR_OBJS; *n its length;
 * NULL on ENOMEM or when the registry lost an object. World stopped. */
range_t *heap_objs_snapshot(size_t *n);

/* Stops every P at a safe point (the caller's own P counts as stopped). Sysstack, on a
 * task's M, no runtime lock held. Returns 0, or -EAGAIN when some task did not reach
 * a safe point within timeout_ns (the world is then running again). */
int stw_stop(int64_t timeout_ns);
void stw_start(void);

/* One leaked task, as the cycle found it (with the world stopped). */
typedef struct leak_rec {
    g_t *g;
    uint64_t id;
    wait_reason_t why;
    const void *obj;
    int64_t blocked_ns;
    void *spawn_pc;
    const char *name;
} leak_rec_t;

/* The result of a cycle: leaked tasks, in scratch slot SCR_LEAKS. */
typedef struct leak_set {
    leak_rec_t *recs;
    size_t n, cap;
    size_t ntasks;      /* tasks examined */
    size_t nlive;       /* tasks that are roots by state (can run or be woken by the
                           runtime: runnable, running, sleeping, I/O, system call) */
    int64_t stw_ns;     /* time to stop the world */
    int64_t mark_ns;    /* marking */
} leak_set_t;

/* Marks from the roots and fills `out` with the leaked tasks. World stopped; sysstack.
 * self: the task that stopped the world (a root); self_sp: its stack pointer before
 * the system-stack call. Returns 0 or -ENOMEM. */
int mark_find_leaks(leak_set_t *out, g_t *self, uintptr_t self_sp);
void leak_set_free(leak_set_t *s);

/* Frame-pointer backtrace of a parked task; returns the count. */
int report_backtrace(g_t *g, void **pcs, int max);
/* "fn+0xNN (file)" for pc, cached per PC for the life of the process. */
const char *report_symbolize(void *pc);
/* Prints the leaks grouped by identical (wait reason, spawn site, backtrace); takes
 * the backtraces, so the world must still be stopped. */
void report_print(FILE *out, const leak_set_t *s);

#endif
