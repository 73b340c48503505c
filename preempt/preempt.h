/* preempt/preempt.h — asynchronous preemption (SIGURG), for the scheduler, sysmon and
 * the stop-the-world of gc/. preempt/README.md explains the mechanism. */
#ifndef GORT_PREEMPT_H
#define GORT_PREEMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "rt.h"

/* Minimum run time before sysmon kicks a task that a due timer or a woken task waits
 * behind (issue 4: "about 1 ms"). */
#define PREEMPT_MIN_SLICE_NS 1000000

/* Process-wide setup for one gort_run: builds the safe-PC table and installs the
 * SIGURG handler (kept installed afterwards; it chains signals that are not ours).
 * Context: the gort_run thread, before any M has a timer. 0 or negative errno. */
int preempt_start(void);
/* Undoes preempt_start's memory (the handler stays). Every M's timer is gone. */
void preempt_stop(void);

/* Per-M state: sigaltstack, CPU-time timer, spare xsave area. Context: the M's own
 * thread, at its start / just before it exits (sysstack). A failure leaves the M
 * without asynchronous preemption (cooperative fallback), never fails the M. */
void preempt_m_init(m_t *m);
void preempt_m_exit(m_t *m);

/* Asks every running task to stop at its next safe point: asynchronously (SIGURG) where
 * the PC allows, else at its next GORT_FRAME check or runtime call. Returns at once
 * (does not wait). any context, any thread; async-signal-safe. */
void preempt_request_all(void);

/* sysmon: asks the task running on m (with P tick `tick`) to stop now: sets the
 * request and sends SIGURG, unless m's thread is not consuming CPU (blocked in the
 * kernel). Returns true if a signal was sent. sysmon thread only. */
bool preempt_kick(m_t *m, uint32_t tick, bool force);

/* m's thread CPU time in ns, or -1 (no preemption state). any thread. */
int64_t preempt_m_cpu_ns(m_t *m);

/* Safe-PC policy (preempt/safepc.c). */
int safepc_build(void);              /* sysmon/gort_run thread; 0 or -ENOMEM */
void safepc_refresh(void);           /* rebuild if libraries were loaded/unloaded */
void safepc_free(void);
bool safepc_is_safe(uintptr_t pc);   /* async-signal-safe, lock-free */
bool safepc_in_runtime(uintptr_t pc); /* pc is the runtime's own code; any context */
void safepc_dump(void);              /* debugging: prints the table */

#endif
