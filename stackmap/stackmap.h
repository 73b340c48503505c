/* stackmap/stackmap.h — internals shared by the files of stackmap/ (and the hooks core/
 * calls). README.md in this folder explains the mechanism and the user rules. */
#ifndef GORT_STACKMAP_H
#define GORT_STACKMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

/* The register block gort_morestack pushes (core/arch/x86_64.S), lowest address first,
 * as word indexes from the block's start; RB_RET is the return address into the
 * function whose GORT_FRAME check called the trampoline. */
enum {
    RB_R15 = 0, RB_R14, RB_R13, RB_R12, RB_RBP, RB_RBX, RB_R11, RB_R10, RB_R9,
    RB_R8, RB_RDI, RB_RSI, RB_RDX, RB_RCX, RB_RAX, RB_RFLAGS, RB_RET, RB_WORDS
};

/* What the registry knows about one function (keyed by its start address). Created
 * once, never freed (process lifetime: maps are static, like the code). */
typedef struct funcinfo {
    uintptr_t start;                   /* function start; 0 = unknown code */
    gort_framemap_t *_Atomic maps;     /* its framemap records (PTR and NOPTR), pushed
                                          under framemap.lock, read lock-free (acquire) */
    _Atomic uint32_t reported;         /* stress mode: reported "no map" once */
} funcinfo_t;

/* registry.c — lock-free lookups, insertion under framemap.lock. Context: sysstack. */
funcinfo_t *framemap_lookup_pc(uintptr_t pc); /* the function holding return address pc */
const char *framemap_func_name(uintptr_t pc, char *buf, size_t len, uintptr_t *off);
bool framemap_has_pending(void);

/* relocate.c */
typedef struct stack_move {
    g_t *g;             /* the task whose stack moves */
    uintptr_t sp;       /* lowest live address of the old stack (the register block of a
                           running task, the saved context of a parked one) */
    uint64_t *regs;     /* register block (running task) or NULL (parked task) */
    size_t new_size;    /* size of the new block */
    uintptr_t new_sp;   /* out: sp on the new stack */
    void *old_lo;       /* out: the old block, for the caller to free */
    size_t old_size;
    int rc;             /* out: 0, -ENOMEM */
} stack_move_t;
/* Copies g's stack [sp, hi) to the top of a new block and relocates (both layers, or the
 * precise one alone under stackreloc=precise). The caller frees the old block once no
 * code runs on it. Context: sysstack; g is not running anywhere else. */
void stack_move_sys(stack_move_t *mv);
/* A block of a stack class (pool up to 64 MiB, mmap above; guard page in stackguard=1
 * mode) and its release. Context: sysstack. */
uintptr_t frame0_pc(uintptr_t ret); /* the function of a morestack return address */
void *stack_block_alloc(size_t size);
void stack_block_free(void *lo, size_t size);
size_t stack_class_round(size_t size);

/* Stack-move modes, from GORT_DEBUG (parsed at each gort_run by stackmap_config). */
typedef struct stackmap_cfg {
    bool precise_only;  /* stackreloc=precise: no conservative layer */
    bool stress;        /* stackmove=1 */
    bool guard;         /* stackguard=1 */
    int64_t run_start;  /* sched.start_time this config was read for */
} stackmap_cfg_t;
extern stackmap_cfg_t stackmap_cfg;
void stackmap_config(void);

/* stress.c */
void stress_quarantine(void *lo, size_t size, uint64_t task); /* poisons, keeps a while */
bool stress_fault_explain(uintptr_t addr);     /* names the moved stack holding addr */
void stress_check_fresh(const void *lo, size_t size, uint64_t task); /* throws on overlap */
unsigned stress_quarantine_len(void);
void stress_report_word(g_t *g, uintptr_t old_addr, uint64_t val, uintptr_t pc,
                        uintptr_t cfa);
void stress_report_nomap(funcinfo_t *fi, uintptr_t pc);

/* Backtrace of a frame-pointer chain (rbp, pc) to stderr; async-signal-safe enough for
 * fatal paths (dladdr). */
void stack_backtrace_print(uintptr_t rbp, uintptr_t pc, uintptr_t lo, uintptr_t hi);

/* shrink.c — the gc cycle's primitive. stack_shrink_parked: a parked task using less
 * than a quarter of its stack moves to a block half the size, never below the default
 * stack (1 = moved, 0 = not needed, -EBUSY = not parked, a wake-up under way, or a wait
 * whose pointers cannot be found; -ENOMEM). stack_shrink_all: every such task; returns
 * how many moved. Context: sysstack, world stopped (shrink.c, file head). */
int stack_shrink_parked(g_t *g);
size_t stack_shrink_all(void);

/* Counters for gort_stats (relaxed: statistics). */
extern _Atomic uint64_t stackmap_n_grows;
extern _Atomic uint64_t stackmap_n_shrinks;

#endif
