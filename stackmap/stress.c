/* stackmap/stress.c — GORT_DEBUG=stackmove=1: the stack moves at every GORT_FRAME check
 * and runtime morestack entry, old stacks are poisoned and quarantined, and the words
 * the conservative layer had to fix that no map named are reported, once per function
 * and CFA offset.
 *
 * Poison: every byte of an old block becomes 0xdb, so a stale pointer read from it is
 * the non-canonical address 0xdbdb...: dereferencing it faults at once (general
 * protection, SIGSEGV). The pages wholly inside the block are made PROT_NONE as well,
 * so a stale pointer *into* the old block faults too. Blocks stay in a FIFO quarantine
 * of QUARANTINE_MAX entries; on leaving it the poison is checked (a changed byte is a
 * write through a stale pointer into a moved stack: reported) and the block goes back
 * to the pool.
 * Locks: stress.lock (leaf) around the quarantine and the report table.
 * Rejected: PROT_NONE on the whole block — pooled 2 KiB blocks share pages with
 * neighbours; a mapping per stack in this mode — blocks freed by task exit go to the
 * pool, which knows nothing of such mappings.
 */
#if defined(GORT_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"
#include "stackmap.h"

enum { QUARANTINE_MAX = 64, REPORTED_MAX = 4096 };
#define POISON_BYTE 0xdb

typedef struct qblock {
    void *lo;          /* block start; stress.lock */
    size_t size;
    uint64_t task;     /* task id whose stack it was */
    uintptr_t plo, phi; /* the PROT_NONE pages inside it */
} qblock_t;

static rtlock_t stress_lock;
static qblock_t quarantine[QUARANTINE_MAX]; /* ring; stress.lock */
static unsigned q_head, q_len;
static uint64_t reported[REPORTED_MAX];      /* hashes of (function, offset); stress.lock */

static void page_span(void *lo, size_t size, uintptr_t *plo, uintptr_t *phi)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    *plo = ((uintptr_t)lo + pg - 1) & ~(pg - 1);
    *phi = ((uintptr_t)lo + size) & ~(pg - 1);
    if (*phi < *plo)
        *phi = *plo;
}

/* The first byte of [lo, hi) that is no longer POISON_BYTE, or NULL. */
static const unsigned char *poison_first_changed(uintptr_t lo, uintptr_t hi)
{
    for (const unsigned char *b = (const unsigned char *)lo; b < (const unsigned char *)hi; b++)
        if (*b != POISON_BYTE)
            return b;
    return NULL;
}

static void quarantine_release_locked(qblock_t *q)
{
    if (q->phi > q->plo)
        mprotect((void *)q->plo, q->phi - q->plo, PROT_READ | PROT_WRITE);
#if defined(GORT_ASAN)
    /* frames that ran on the block before its move left scope poison in the shadow
     * after stress_quarantine cleared it (their epilogues ran on the new stack, at the
     * new addresses, but instrumented code of the move path touched the old ones) */
    __asan_unpoison_memory_region(q->lo, q->size);
#endif
    /* The PROT_NONE pages could not be written: only the partial pages at either end
     * are checked (scanning the whole block byte by byte cost 2/3 of an ASan stress
     * run's time, and made test_stress time out) */
    uintptr_t lo = (uintptr_t)q->lo, hi = lo + q->size;
    const unsigned char *bad = poison_first_changed(lo, q->phi > q->plo ? q->plo : hi);
    if (!bad && q->phi > q->plo)
        bad = poison_first_changed(q->phi, hi);
    if (bad) {
        dbg_print("gort: stackmove: the moved stack [%p, %p) of task %lu was written "
                  "at %p after the move: a pointer into it was not relocated\n",
                  q->lo, (void *)hi, (unsigned long)q->task, (const void *)bad);
        gort_throw("stack: write through a stale stack pointer");
    }
    stack_block_free(q->lo, q->size);
    q->lo = NULL; /* stress_fault_explain scans every slot */
}

/* task: the id of the task whose stack it was (the caller knows it: on the system
 * stack g_self() is NULL). Context: sysstack. */
void stress_quarantine(void *lo, size_t size, uint64_t task)
{
#if defined(GORT_ASAN)
    __asan_unpoison_memory_region(lo, size); /* the moved frames' redzones */
#endif
    memset(lo, POISON_BYTE, size);
    qblock_t q = {.lo = lo, .size = size, .task = task};
    page_span(lo, size, &q.plo, &q.phi);
    if (q.phi > q.plo)
        mprotect((void *)q.plo, q.phi - q.plo, PROT_NONE);
    rtlock_acquire(&stress_lock);
    if (q_len == QUARANTINE_MAX) {
        quarantine_release_locked(&quarantine[q_head]);
        q_head = (q_head + 1) % QUARANTINE_MAX;
        q_len--;
    }
    quarantine[(q_head + q_len) % QUARANTINE_MAX] = q;
    q_len++;
    rtlock_release(&stress_lock);
}

/* Empties the quarantine: gort_run's teardown, before the pool frees its chunks. A
 * block left in it would outlive its chunk, and released in a later gort_run it
 * would unprotect and "free" into the pool memory that pool had handed out again: one
 * block owned twice. Context: any thread, no P needed (blocks go to the global lists
 * when the caller has none). */
void stress_quarantine_drain(void)
{
    rtlock_acquire(&stress_lock);
    while (q_len) {
        quarantine_release_locked(&quarantine[q_head]);
        q_head = (q_head + 1) % QUARANTINE_MAX;
        q_len--;
    }
    rtlock_release(&stress_lock);
}

/* A block the pool just handed out must not overlap one still in quarantine: that
 * would be one block owned twice (the defect stress_quarantine_drain's comment
 * describes). Checked at every stress move, on the new block. Context: sysstack. */
void stress_check_fresh(const void *lo, size_t size, uint64_t task)
{
    uintptr_t a = (uintptr_t)lo, b = a + size;
    rtlock_acquire(&stress_lock);
    for (unsigned i = 0; i < q_len; i++) {
        const qblock_t *q = &quarantine[(q_head + i) % QUARANTINE_MAX];
        if (a < (uintptr_t)q->lo + q->size && (uintptr_t)q->lo < b) {
            dbg_print("gort: stackmove: task %lu was given the stack block [%p, %p), which "
                      "overlaps the quarantined old stack [%p, %p) of task %lu\n",
                      (unsigned long)task, lo, (void *)b, q->lo,
                      (void *)((char *)q->lo + q->size), (unsigned long)q->task);
            gort_throw("stack: the pool handed out a block that is still in quarantine");
        }
    }
    rtlock_release(&stress_lock);
}

/* Blocks in quarantine now (tests: teardown must leave none). */
unsigned stress_quarantine_len(void)
{
    rtlock_acquire(&stress_lock);
    unsigned n = q_len;
    rtlock_release(&stress_lock);
    return n;
}

/* Signal context: names the quarantined stack holding addr, if any. No lock (a fault
 * handler must not wait): the ring is read racily, which is fine for a report. */
bool stress_fault_explain(uintptr_t addr)
{
    for (unsigned i = 0; i < QUARANTINE_MAX; i++) {
        qblock_t *q = &quarantine[i];
        if (q->lo && addr - (uintptr_t)q->lo < q->size) {
            dbg_print("gort: stackmove: fault at %p, inside the old stack [%p, %p) of task "
                      "%lu, moved away: a pointer into the stack was not relocated "
                      "(stored outside the task's stack?)\n",
                      (void *)addr, q->lo, (void *)((char *)q->lo + q->size),
                      (unsigned long)q->task);
            return true;
        }
    }
    if ((addr >> 48) == 0xdbdb || addr == 0xdbdbdbdbdbdbdbdbull) {
        dbg_print("gort: stackmove: fault at %p: a value read from a poisoned old stack "
                  "(a pointer into a moved stack was not relocated)\n", (void *)addr);
        return true;
    }
    return false;
}

static bool reported_once(uint64_t key)
{
    key = key * 0x9e3779b97f4a7c15ull | 1;
    bool fresh = false;
    rtlock_acquire(&stress_lock);
    for (unsigned i = (unsigned)(key >> 52) % REPORTED_MAX, n = 0; n < REPORTED_MAX;
         i = (i + 1) % REPORTED_MAX, n++) {
        if (reported[i] == key)
            break;
        if (!reported[i]) {
            reported[i] = key;
            fresh = true;
            break;
        }
    }
    rtlock_release(&stress_lock);
    return fresh;
}

/* Context: sysstack, during a move. */
void stress_report_word(g_t *g, uintptr_t old_addr, uint64_t val, uintptr_t pc,
                        uintptr_t cfa)
{
    if (pc && safepc_in_runtime(pc))
        return; /* the runtime's own frames are relocated conservatively by design */
    funcinfo_t *fi = pc ? framemap_lookup_pc(pc) : NULL;
    uintptr_t fstart = fi ? fi->start : 0;
    intptr_t off = (intptr_t)old_addr - (intptr_t)cfa;
    if (!reported_once((fstart ? fstart : pc) * 131 + (uint64_t)off))
        return;
    char buf[200];
    uintptr_t unused;
    dbg_print("gort: stackmove: task %lu: conservative fix at CFA%ld in %s (no map "
              "names it; value %p)\n",
              (unsigned long)g->id, (long)off,
              pc ? framemap_func_name(pc, buf, sizeof buf, &unused) : "(above the chain)",
              (void *)val);
}

void stress_report_nomap(funcinfo_t *fi, uintptr_t pc)
{
    if (!fi->start || safepc_in_runtime(pc) ||
        atomic_exchange_explicit(&fi->reported, 1, memory_order_relaxed))
        return; /* unknown code, the runtime's own frames (g_entry, a runtime call's
                   entry check: no maps, by design), or reported already */
    char buf[200];
    uintptr_t unused;
    dbg_print("gort: stackmove: frame without a map: %s\n",
              framemap_func_name(pc, buf, sizeof buf, &unused));
}
