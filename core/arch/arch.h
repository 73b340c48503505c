/* core/arch/arch.h — what the portable core needs from the architecture. */
#ifndef GORT_CORE_ARCH_H
#define GORT_CORE_ARCH_H

#include <stdint.h>

/* Context switch and helpers (core/arch/x86_64.S). */
void ctx_switch(void **save_sp, void *load_sp);
void ctx_entry(void);
void *stack_call_on(void *(*fn)(void *), void *arg, void *sp);
/* fn(a, b, c, d, sp) with the caller's callee-saved registers pushed at sp, and sp the
 * lowest word of the caller's live stack (the leak detector's start for its own task). */
uintptr_t call_with_callee_saves(uintptr_t (*fn)(uintptr_t, uintptr_t, uintptr_t, uintptr_t,
                                                 uintptr_t),
                                 uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d);

/* The thread pointer, read with asm volatile: the compiler can neither cache it across
 * a call nor move it, so a task that resumed on another thread sees that thread's TLS.
 * Thread-local variables of the static TLS block sit at fixed offsets from it. */
static inline char *arch_thread_pointer(void)
{
    char *tp;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
    return tp;
}

static inline void arch_spin_pause(void) { __asm__ volatile("pause" ::: "memory"); }

static inline uintptr_t arch_stack_pointer(void)
{
    uintptr_t sp;
    __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
    return sp;
}

/* Lays out a new task's stack so that ctx_switch to the returned sp enters
 * entry(arg) through ctx_entry. top is the 16-byte aligned stack top. */
static inline void *ctx_init(uintptr_t top, void (*entry)(void *), void *arg)
{
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                       /* padding: keeps ctx_entry's rsp aligned */
    *--sp = (uint64_t)(uintptr_t)ctx_entry; /* return address */
    *--sp = 0;                       /* rbp */
    *--sp = 0;                       /* rbx */
    *--sp = (uint64_t)(uintptr_t)arg;   /* r12 */
    *--sp = (uint64_t)(uintptr_t)entry; /* r13 */
    *--sp = 0;                       /* r14 */
    *--sp = 0;                       /* r15 */
    *--sp = 0x1f80;                  /* mxcsr: default, all exceptions masked */
    *--sp = 0x037f;                  /* x87 control word: default */
    return sp;
}

/* Bytes of the xsave area for every component the OS enabled (CPUID 0xD, 0: EBX). */
static inline uint32_t arch_xsave_size(void)
{
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(0));
    return b;
}

#endif
