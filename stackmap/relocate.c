/* stackmap/relocate.c — copying a task stack and relocating the pointers into it.
 *
 * A move copies the used part [sp, hi) of the old block to the top of the new one, so
 * every stack address a moves by delta = new_hi - hi. A word is a pointer into the old
 * stack when its value v satisfies lo <= v <= hi (hi itself: one past the top array).
 * Two layers (DESIGN.md, "Stacks"):
 *  1. precise — frames found by the frame-pointer chain; each frame's function (from
 *     its return address, through the registry's cache) lists the CFA-relative slots
 *     that may point into the stack (GORT_FRAME) or never do (GORT_NOPTR); the chain's
 *     saved rbp values; the runtime's own pointers (the caller fixes those: g->arg
 *     here, wait records in shrink.c).
 *  2. conservative — every other word of [sp, hi) (the register block included) whose
 *     value lies in the old range, except the NOPTR slots.
 * The normal mode fuses layer 2 into the copy (one pass, read old / write new), then
 * walks the frames: NOPTR slots get their original bytes back, and the listed slots are
 * already right. stackreloc=precise copies verbatim and fixes only layer 1. The stress
 * mode copies verbatim, marks what layer 1 names, and reports each word layer 2 fixes
 * that no map named (stress.c), once per function and offset.
 * Relocation is idempotent across the layers: old and new blocks are disjoint, so a
 * relocated value never lies in the old range again.
 * Invariants: the task does not run while its stack moves (it is in morestack on this
 * M, or parked with its waiters' locks held by the caller); the old block stays mapped
 * until the caller frees it.
 * Rejected: libunwind per frame (3–14 us a frame here); DWARF CFI walking (the chain
 * is there: task code keeps frame pointers).
 */
#if defined(GORT_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"
#include "stackmap.h"

_Atomic uint64_t stackmap_n_grows;
_Atomic uint64_t stackmap_n_shrinks;
stackmap_cfg_t stackmap_cfg;

/* Saved context of a parked task (core/arch/x86_64.S): fpcw, mxcsr, r15, r14, r13,
 * r12, rbx, rbp, return address. */
enum { CTX_RBP = 7, CTX_RET = 8 };

/* GORT_DEBUG, re-read once per gort_run (core/debug.c accepts stackreloc quietly and
 * parses stackmove/stackguard into rt_debug). Any context; idempotent. */
void stackmap_config(void)
{
    if (likely(stackmap_cfg.run_start == sched.start_time && sched.start_time))
        return;
    stackmap_cfg_t c = {.run_start = sched.start_time};
    const char *env = getenv("GORT_DEBUG");
    c.precise_only = env && strstr(env, "stackreloc=precise") != NULL;
    c.stress = rt_debug.stackmove != 0;
    c.guard = rt_debug.stackguard != 0;
    stackmap_cfg = c; /* several Ms may race here: they all write the same values */
}

/* ------------------------------------------------------------------ blocks */

#define POOL_MAX ((size_t)STACK_MIN_DEFAULT << (STACK_CLASSES - 1))

size_t stack_class_round(size_t size)
{
    size_t s = STACK_MIN_DEFAULT;
    while (s < size)
        s <<= 1;
    return s;
}

void *stack_block_alloc(size_t size)
{
    m_t *m = m_self();
    if (size <= POOL_MAX)
        return stackpool_alloc(m ? m->p : NULL, size);
    /* Above the pool's classes: a mapping of its own, returned to the kernel on free;
     * under stackguard=1 with a PROT_NONE page below it, as the pool's blocks. */
    size_t guard = rt_debug.stackguard ? STACK_GUARD_PAGE : 0;
    char *b = mmap(NULL, size + guard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (b == MAP_FAILED)
        return NULL;
    if (guard && mprotect(b, guard, PROT_NONE) != 0) {
        munmap(b, size + guard);
        return NULL;
    }
    madvise(b + guard, size, MADV_HUGEPAGE); /* best effort */
    atomic_fetch_add_explicit(&stack_bytes_used, size, memory_order_relaxed);
    return b + guard;
}

/* Called by stackpool_free for sizes above the pool (core/stackpool.c hook) and by
 * stack_block_free. Any context. */
void stack_big_free(void *lo, size_t size)
{
    size_t guard = rt_debug.stackguard ? STACK_GUARD_PAGE : 0;
    atomic_fetch_sub_explicit(&stack_bytes_used, size, memory_order_relaxed);
    munmap((char *)lo - guard, size + guard);
}

void stack_block_free(void *lo, size_t size)
{
#if defined(GORT_ASAN)
    /* the old block of a move keeps the redzones of the frames that were live at the
     * move (they return on the new block, reloc_asan_shadow); the pool writes its
     * free-list links into free blocks */
    __asan_unpoison_memory_region(lo, size);
#endif
    m_t *m = m_self();
    if (size <= POOL_MAX)
        stackpool_free(m ? m->p : NULL, lo, size);
    else
        stack_big_free(lo, size);
}

/* ------------------------------------------------------------------ moving */

typedef struct reloc {
    uintptr_t lo, hi;     /* old block */
    uintptr_t sp;         /* lowest copied address (old) */
    intptr_t delta;       /* new address - old address */
    uint64_t *named;      /* stress mode: bitmap of words layer 1 named (or NOPTR) */
} reloc_t;

static inline bool reloc_in_old(const reloc_t *r, uint64_t v)
{
    return v - r->lo <= r->hi - r->lo;
}

static inline uint64_t *reloc_new(const reloc_t *r, uintptr_t old_addr)
{
    return (uint64_t *)(old_addr + r->delta);
}

static inline void reloc_mark(reloc_t *r, uintptr_t a)
{
    if (r->named) {
        size_t i = (a - r->sp) / 8;
        r->named[i / 64] |= 1ull << (i % 64);
    }
}

/* Layer 1 for one word at old address a: relocated from its original value. */
static inline void reloc_word_precise(reloc_t *r, uintptr_t a)
{
    uint64_t v = *(const uint64_t *)a;
    if (reloc_in_old(r, v))
        *reloc_new(r, a) = v + (uint64_t)r->delta;
    reloc_mark(r, a);
}

/* Applies the maps of one frame (CFA cfa) from the registry. */
static void reloc_frame_maps(reloc_t *r, funcinfo_t *fi, uintptr_t cfa)
{
    /* acquire: pairs with the resolver's release push (record fields filled) */
    for (gort_framemap_t *fm = atomic_load_explicit(&fi->maps, memory_order_acquire); fm;
         fm = fm->fnext) {
        for (unsigned i = 0; i < fm->n; i++) {
            uintptr_t a = cfa + (intptr_t)fm->off[i];
            size_t size = fm->size[i];
            if (a < r->sp || a + size > r->hi)
                continue; /* not in this move's range (a stale or foreign frame) */
            if (fm->kind == GORT_FRAMEMAP_NOPTR) {
                memcpy(reloc_new(r, a), (const void *)a, size); /* original bytes */
                for (uintptr_t w = (a + 7) & ~(uintptr_t)7; w + 8 <= a + size; w += 8)
                    reloc_mark(r, w);
                continue;
            }
            for (uintptr_t w = (a + 7) & ~(uintptr_t)7; w + 8 <= a + size; w += 8)
                reloc_word_precise(r, w);
        }
    }
}

/* Walks the frame-pointer chain from (fp, pc): fp is the innermost frame's rbp (old
 * address), pc a return address inside that frame's function. */
static void reloc_walk(reloc_t *r, uintptr_t fp, uintptr_t pc, bool stress)
{
    while (fp >= r->sp && fp + 16 <= r->hi && !(fp & 7)) {
        funcinfo_t *fi = framemap_lookup_pc(pc);
        if (atomic_load_explicit(&fi->maps, memory_order_relaxed))
            reloc_frame_maps(r, fi, fp + 16);
        else if (stress)
            stress_report_nomap(fi, pc);
        reloc_word_precise(r, fp); /* the chain: saved rbp of the caller */
        reloc_mark(r, fp + 8);     /* return address: code, never a stack pointer */
        uintptr_t next = *(const uint64_t *)fp;
        pc = *(const uint64_t *)(fp + 8);
        if (next <= fp)
            break; /* 0 ends the chain (ctx_entry); anything else is not a chain */
        fp = next;
    }
}

/* Stress mode, layer 2 after layer 1: every unnamed word in range is relocated and
 * reported, attributed to the innermost frame whose CFA lies above it. */
static GORT_NO_ASAN void reloc_conservative_report(reloc_t *r, g_t *g, uintptr_t fp, uintptr_t pc)
{
    size_t nw = (r->hi - r->sp) / 8;
    const uint64_t *src = (const uint64_t *)r->sp;
    uint64_t *dst = reloc_new(r, r->sp);
    uintptr_t cfa = fp + 16;
    uintptr_t fpc = pc;
    for (size_t i = 0; i < nw; i++) {
        uint64_t v = src[i];
        if (!reloc_in_old(r, v) || (r->named[i / 64] >> (i % 64)) & 1)
            continue;
        dst[i] = v + (uint64_t)r->delta;
        uintptr_t a = r->sp + i * 8;
        while (a >= cfa && fp >= r->sp && fp + 16 <= r->hi) {
            uintptr_t next = *(const uint64_t *)fp;
            fpc = *(const uint64_t *)(fp + 8);
            if (next <= fp) {
                fp = r->hi;
                break;
            }
            fp = next;
            cfa = fp + 16;
        }
        stress_report_word(g, a, v, a < cfa ? fpc : 0, cfa);
    }
}

/* A runtime call's entry check (RT_ENTRY_CHECK, core/rt.h) moved the stack: the words
 * between the register block and the runtime function's frame record [a, fp) are the
 * runtime's (its red zone, the caller's arguments it spilled, the callee-saved
 * registers it pushed): relocated conservatively, in precise mode too (layer 1 has no
 * map of runtime frames, and a pointer argument into the caller's stack must follow).
 * Read raw: ASan's redzones of the runtime frame may lie there. */
static GORT_NO_ASAN void reloc_runtime_frame(reloc_t *r, uintptr_t a, uintptr_t fp)
{
    if (fp > r->hi)
        fp = r->hi;
    for (a = (a + 7) & ~(uintptr_t)7; a + 8 <= fp; a += 8) {
        if (a < r->sp)
            continue;
        uint64_t v = *(const uint64_t *)a;
        if (reloc_in_old(r, v))
            *reloc_new(r, a) = v + (uint64_t)r->delta;
        reloc_mark(r, a);
    }
}

#if defined(GORT_ASAN)
/* ASan builds: an instrumented frame keeps its shadow address (frame >> 3, or with the
 * mapping's offset added) in a callee-saved register or a slot from its prologue on,
 * and its redzones are bytes of the old block's shadow. A frame live across a move
 * (any caller of a GORT_FRAME function or of a checked runtime call) would go on
 * poisoning and unpoisoning the old block's shadow (measured: stack-use-after-scope
 * reports on quarantined blocks under stackmove=1, from the test's own loop locals).
 * So the move carries both: the shadow bytes of [sp, hi) go to the new range, and
 * every word of the new copy holding a shadow address of the old range moves by
 * delta >> scale. Conservative, as layer 2: an integer equal to such an address is
 * rewritten too (ASan builds only). */
static GORT_NO_ASAN void reloc_asan_shadow(const reloc_t *r)
{
    size_t scale, off;
    __asan_get_shadow_mapping(&scale, &off);
    if (r->delta & (((intptr_t)1 << scale) - 1))
        return; /* blocks are aligned: never, but a wrong shift would be worse */
    uintptr_t from = r->sp & ~(((uintptr_t)1 << scale) - 1);
    const uint8_t *ssrc = (const uint8_t *)((from >> scale) + off);
    uint8_t *sdst = (uint8_t *)(((from + r->delta) >> scale) + off);
    size_t sbytes = ((r->hi - from) >> scale);
    for (size_t i = 0; i < sbytes; i++)
        sdst[i] = ssrc[i];
    uint64_t s0 = r->lo >> scale, s1 = s0 + off, span = (r->hi - r->lo) >> scale;
    uint64_t sd = (uint64_t)(r->delta >> scale);
    uint64_t *w = reloc_new(r, r->sp);
    for (size_t i = 0, nw = (r->hi - r->sp) / 8; i < nw; i++) {
        uint64_t v = w[i];
        if (v - s0 <= span || v - s1 <= span)
            w[i] = v + sd;
    }
}
#endif

/* A plain word copy of stack memory: not memcpy, which ASan intercepts and which would
 * report the redzones of the frames being copied. */
static GORT_NO_ASAN void stack_copy_raw(uint64_t *dst, const uint64_t *src, size_t bytes)
{
    for (size_t i = 0; i < bytes / 8; i++)
        dst[i] = src[i];
}

/* Fused copy + conservative relocation: one read and one write per word. */
static GORT_NO_ASAN void reloc_copy_conservative(const reloc_t *r)
{
    size_t nw = (r->hi - r->sp) / 8;
    const uint64_t *src = (const uint64_t *)r->sp;
    uint64_t *dst = reloc_new(r, r->sp);
    uint64_t lo = r->lo, span = r->hi - r->lo, d = (uint64_t)r->delta;
    for (size_t i = 0; i < nw; i++) {
        uint64_t v = src[i];
        dst[i] = v - lo <= span ? v + d : v;
    }
}

/* The return address of a GORT_FRAME slow-path call lies in .text.unlikely, outside
 * its function: the code there is `leaq 128(%rsp), %rsp; jmp back` (gort.h), so the
 * jump's target names the function. Other callers (gort_stack_reserve) return into
 * their own function: pc as is. */
uintptr_t frame0_pc(uintptr_t pc)
{
    static const uint8_t lea[8] = {0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00};
    const uint8_t *p = (const uint8_t *)pc;
    if (memcmp(p, lea, sizeof lea) != 0)
        return pc;
    p += sizeof lea;
    if (p[0] == 0xe9) {
        int32_t rel;
        memcpy(&rel, p + 1, 4);
        return (uintptr_t)(p + 5) + (intptr_t)rel;
    }
    if (p[0] == 0xeb)
        return (uintptr_t)(p + 2) + (int8_t)p[1];
    return pc;
}

void stack_move_sys(stack_move_t *mv)
{
    g_t *g = mv->g;
    stackmap_config();
    char *nb = stack_block_alloc(mv->new_size);
    if (!nb) {
        mv->rc = -ENOMEM;
        return;
    }
    if (stackmap_cfg.stress)
        stress_check_fresh(nb, mv->new_size, g->id);
    size_t old_size = g->stack_hi - g->stack_lo;
    reloc_t r = {
        .lo = g->stack_lo,
        .hi = g->stack_hi,
        .sp = mv->sp,
        .delta = (intptr_t)((uintptr_t)nb + mv->new_size) - (intptr_t)g->stack_hi,
    };
    size_t used = r.hi - r.sp;
    uintptr_t fp, pc;
    if (mv->regs) {
        fp = mv->regs[RB_RBP];
        pc = frame0_pc(mv->regs[RB_RET]);
    } else {
        fp = ((uint64_t *)mv->sp)[CTX_RBP];
        pc = ((uint64_t *)mv->sp)[CTX_RET];
    }
    bool stress = stackmap_cfg.stress;
    /* the innermost frame is the runtime's: a runtime call's entry check (or
     * gort_stack_reserve); the caller's pointer arguments are in registers or there */
    bool rt_entry = mv->regs && safepc_in_runtime(pc);
    if (stress)
        r.named = calloc(used / 8 / 64 + 1, 8); /* NULL: no report, still correct */
    if (stackmap_cfg.precise_only || r.named) {
        stack_copy_raw(reloc_new(&r, r.sp), (const uint64_t *)r.sp, used);
        if (mv->regs) {
            /* the register block: rbp is the chain (layer 1); the other registers are
             * layer 2, relocated here rather than reported: a register holding a stack
             * address is the compiler's business, not a missing map entry. At a
             * runtime call's entry they are the call's arguments: relocated in every
             * mode, as the runtime frame under them */
            for (int i = 0; i < RB_RFLAGS; i++)
                if (i == RB_RBP || !stackmap_cfg.precise_only || rt_entry)
                    reloc_word_precise(&r, (uintptr_t)&mv->regs[i]);
            reloc_mark(&r, (uintptr_t)&mv->regs[RB_RFLAGS]);
            reloc_mark(&r, (uintptr_t)&mv->regs[RB_RET]);
            if (rt_entry)
                reloc_runtime_frame(&r, (uintptr_t)&mv->regs[RB_WORDS], fp);
        } else {
            /* the saved context of a parked task, as the register block above: rbp is
             * the chain, the callee-saved registers are layer 2 */
            for (int i = 0; i <= CTX_RET; i++) {
                uintptr_t a = mv->sp + (uintptr_t)i * 8;
                if (i == CTX_RBP || (i >= 2 && i < CTX_RET && !stackmap_cfg.precise_only))
                    reloc_word_precise(&r, a);
                else
                    reloc_mark(&r, a);
            }
        }
        reloc_walk(&r, fp, pc, stress);
        if (r.named && !stackmap_cfg.precise_only)
            reloc_conservative_report(&r, g, fp, pc);
    } else {
        reloc_copy_conservative(&r);
        reloc_walk(&r, fp, pc, stress);
    }
    free(r.named);
#if defined(GORT_ASAN)
    reloc_asan_shadow(&r);
#endif
    /* runtime-owned pointers of a running task: the entry argument (args copy at the
     * top); the other ones (wait records) exist only while parked: shrink.c */
    if (reloc_in_old(&r, (uintptr_t)g->arg))
        g->arg = (char *)g->arg + r.delta;
    mv->old_lo = (void *)g->stack_lo;
    mv->old_size = old_size;
    mv->new_sp = r.sp + r.delta;
    uintptr_t old_guard = g->stackguard;
    g->stack_lo = (uintptr_t)nb;
    g->stack_hi = (uintptr_t)nb + mv->new_size;
    /* stress mode: a guard at the top makes every GORT_FRAME check enter morestack,
     * which moves the stack each time (morestack_slow knows the real guard) */
    g->stackguard = stackmap_cfg.stress ? g->stack_hi : g->stack_lo + STACK_SLACK;
    *(uint64_t *)g->stack_lo = STACK_CANARY;
    m_t *m = m_self();
    if (m && m->curg == g) {
        /* CAS: sysmon may have poisoned the guard meanwhile (a preemption request);
         * relaxed: the guard is this thread's, sysmon's store needs no ordering */
        __atomic_compare_exchange_n(m->tls_stackguard, &old_guard, g->stackguard, false,
                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
    mv->rc = 0;
}
