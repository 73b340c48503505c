/* tests/stackmap/grow_cases.h — task functions that grow their stacks, shared by the
 * stackmap suites (normal, precise and stress modes). Each case runs in tasks on the
 * default 2 KiB stack and records its verdict in a global checked by the main task. */
#ifndef GORT_TESTS_GROW_CASES_H
#define GORT_TESTS_GROW_CASES_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NOINLINE __attribute__((noinline, unused))

/* Opaque to the optimiser: the value must be kept (in a register or a slot). */
#define HIDE(x) __asm__ volatile("" : "+r"(x))

/* Recurses n frames (each with a GORT_FRAME check): grows the stack by ~n * 64 bytes. */
static NOINLINE uint64_t grow(uint64_t n)
{
    GORT_FRAME();
    volatile uint64_t pad[2] = {n, n ^ 0x55};
    if (n == 0)
        return pad[1];
    uint64_t r = grow(n - 1);
    return r + pad[0];
}

static __attribute__((unused)) uint64_t grow_expect(uint64_t n)
{
    uint64_t r = 0 ^ 0x55;
    for (uint64_t i = 1; i <= n; i++)
        r += i;
    return r;
}

/* ---- deep recursion with a checksum threaded through a pointer to the base frame */
static NOINLINE uint64_t deep(uint64_t n, uint64_t *acc)
{
    GORT_FRAME(acc);
    uint64_t local = n * 2654435761u;
    *acc += local;
    if (n == 0)
        return local;
    uint64_t r = deep(n - 1, acc);
    return (r ^ (local + n)) * 3;
}

static __attribute__((unused)) uint64_t deep_expect(uint64_t n, uint64_t *acc)
{
    uint64_t r = 0;
    *acc = 0;
    for (uint64_t i = 0; i <= n; i++) {
        uint64_t local = i * 2654435761u;
        *acc += local;
        r = i == 0 ? local : (r ^ (local + i)) * 3;
    }
    return r;
}

/* ---- callee frames writing into arrays of callers, passed down many levels */
static NOINLINE void fill_down(uint64_t *dst, int depth, int idx)
{
    GORT_FRAME(dst);
    uint64_t mine[4];
    mine[0] = (uint64_t)depth;
    uint64_t *p = mine;
    HIDE(p);
    if (depth > 0)
        fill_down(dst, depth - 1, idx);
    dst[idx] += (uint64_t)depth + p[0];
}

/* ---- 10 stack pointers live across a growing call */
static NOINLINE uint64_t many_ptrs(void)
{
    GORT_FRAME();
    uint64_t a[10];
    for (int i = 0; i < 10; i++)
        a[i] = (uint64_t)i * 7 + 1;
    uint64_t *p0 = &a[0], *p1 = &a[1], *p2 = &a[2], *p3 = &a[3], *p4 = &a[4];
    uint64_t *p5 = &a[5], *p6 = &a[6], *p7 = &a[7], *p8 = &a[8], *p9 = &a[9];
    HIDE(p0); HIDE(p1); HIDE(p2); HIDE(p3); HIDE(p4);
    HIDE(p5); HIDE(p6); HIDE(p7); HIDE(p8); HIDE(p9);
    uint64_t g = grow(300);
    HIDE(p0); HIDE(p1); HIDE(p2); HIDE(p3); HIDE(p4);
    HIDE(p5); HIDE(p6); HIDE(p7); HIDE(p8); HIDE(p9);
    *p0 += 1; *p1 += 1; *p2 += 1; *p3 += 1; *p4 += 1;
    *p5 += 1; *p6 += 1; *p7 += 1; *p8 += 1; *p9 += 1;
    uint64_t s = 0;
    for (int i = 0; i < 10; i++)
        s += a[i];
    return s + (g == grow_expect(300) ? 0 : 1000000);
}
static __attribute__((unused)) uint64_t many_ptrs_expect(void)
{
    uint64_t s = 0;
    for (int i = 0; i < 10; i++)
        s += (uint64_t)i * 7 + 2;
    return s;
}

/* ---- a loop over a local array around calls that grow */
static NOINLINE uint64_t array_loop(void)
{
    GORT_FRAME();
    uint64_t a[16];
    uint64_t *end = a + 16;
    for (uint64_t *q = a; q < end; q++) {
        *q = (uint64_t)(q - a);
        grow(40 + (uint64_t)(q - a) * 8);
    }
    uint64_t s = 0;
    for (uint64_t *q = a; q != end; q++)
        s += *q;
    return s; /* 0 + 1 + ... + 15 = 120 */
}

/* ---- va_list across growth */
static NOINLINE uint64_t va_sum(int n, ...)
{
    GORT_FRAME();
    va_list ap;
    va_start(ap, n);
    uint64_t s = 0;
    for (int i = 0; i < n; i++) {
        s += va_arg(ap, uint64_t);
        grow(60);
    }
    va_end(ap);
    return s;
}

/* ---- {base, len} structs */
struct span {
    uint64_t *base;
    size_t len;
};
static NOINLINE uint64_t span_sum(struct span sp, int depth)
{
    GORT_FRAME(sp);
    if (depth > 0)
        return span_sum(sp, depth - 1);
    grow(100);
    uint64_t s = 0;
    for (size_t i = 0; i < sp.len; i++)
        s += sp.base[i];
    return s;
}
static NOINLINE uint64_t span_case(void)
{
    GORT_FRAME();
    uint64_t arr[6] = {1, 2, 3, 4, 5, 6};
    struct span s = {arr, 6};
    struct span copy[2] = {s, s};
    HIDE(copy[1].base);
    uint64_t r = span_sum(s, 30);
    r += copy[1].base[5];
    return r; /* 21 + 6 */
}

/* ---- NOPTR integer keys left untouched */
static uintptr_t noptr_before; /* a global: not relocated by anyone */
static NOINLINE uint64_t noptr_case(void)
{
    GORT_FRAME();
    uint64_t here = 0;
    uintptr_t key = (uintptr_t)&here; /* an integer that equals a stack address */
    GORT_NOPTR(key);
    noptr_before = key;
    g_t *g = g_self();
    grow((g->stack_hi - g->stack_lo) / 16); /* deeper than the stack: it must move */
    /* the key kept its value; the conservative layer would have moved it */
    uintptr_t saved = *(volatile uintptr_t *)&noptr_before;
    return key == saved && (uintptr_t)&here != key ? 1 : 0;
}

/* ---- qsort on a stack array with a growing comparator, after a reserve */
static __attribute__((unused)) int cmp_grow(const void *a, const void *b)
{
    GORT_FRAME();
    grow(3);
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
/* no_sanitize: UBSan's object-size check of a[i] keeps `8 - &a[0]` in a callee-saved
 * register across qsort (seen in objdump of the ASan build): a value derived from a
 * stack address, outside the stack, which no layer relocates (stackmap/README.md,
 * "What no layer can fix"). After a move the check compares the new &a[i] with the old
 * base and reports a bogus overflow; the loads themselves use relocated pointers. */
static NOINLINE __attribute__((no_sanitize("object-size"))) uint64_t qsort_case(uint64_t seed)
{
    GORT_FRAME();
    uint64_t a[24];
    for (int i = 0; i < 24; i++)
        a[i] = test_rand(&seed) % 1000;
    if (gort_stack_reserve(4096) != 0)
        return 0;
    qsort(a, 24, sizeof a[0], cmp_grow);
    for (int i = 1; i < 24; i++)
        if (a[i - 1] > a[i])
            return 0;
    return 1;
}

/* ---- snprintf after a reserve and on the system stack */
static __attribute__((unused)) void *fmt_sys(void *arg)
{
    char *buf = arg;
    snprintf(buf, 64, "%s-%d-%.3f", "sys", 42, 2.5);
    return buf;
}
static NOINLINE uint64_t fmt_case(char *heapbuf)
{
    GORT_FRAME();
    char buf[64];
    if (gort_stack_reserve(4096) != 0)
        return 0;
    snprintf(buf, sizeof buf, "%s-%d-%.3f", "res", 7, 1.25);
    if (strcmp(buf, "res-7-1.250") != 0)
        return 0;
    gort_on_system_stack(fmt_sys, heapbuf);
    return strcmp(heapbuf, "sys-42-2.500") == 0;
}

#endif
