/* core/stackpool.c — task stacks: power-of-two classes from 2 KiB, per-P caches.
 *
 * Small classes (up to 128 KiB) are carved from 2 MiB chunks that jemalloc hands out
 * 2 MiB-aligned and that we madvise(MADV_HUGEPAGE): a first touch of a 4 KiB page costs
 * ~19 us on these machines, one huge page serves a thousand 2 KiB stacks. Larger
 * classes are single jemalloc allocations. Freed stacks stay pooled (per-P cache, then
 * the global class lists) until teardown, except what the gc cycle trims
 * (stackpool_trim: the large classes beyond a few per class).
 * Locks: stackpool.lock (rank 90) for the global lists and the chunk list; a P's cache
 * is touched by its owner only.
 * GORT_DEBUG=stackguard=1: no carving; every block of every class is a jemalloc
 * allocation of its own, page-aligned, one page larger, whose first page is PROT_NONE
 * (the guard page under the stack, stackmap/guard.c reports hits). The page stays
 * protected while the block is pooled and is unprotected only when the block goes back
 * to jemalloc (trim, teardown). Each such stack splits the mappings: the kernel's map
 * count (65530) caps this mode at ~30k live-or-pooled stacks.
 * Rejected: one mmap per stack with a guard page as the normal mode — one VMA each,
 * the same ~30k cap; it is the debug mode above.
 */
#include <jemalloc/jemalloc.h>
#include <string.h>
#include <sys/mman.h>

#include "rt.h"
#if defined(GORT_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#include "sched_impl.h"

#define CHUNK_SIZE (2u << 20)
#define CARVE_MAX_CLASS 6 /* 2 KiB << 6 = 128 KiB: larger classes are allocated whole */
#define CACHE_CAP 32
#define CACHE_BATCH 16

_Atomic uint64_t stack_bytes_used;
_Atomic uint64_t stack_bytes_pooled;

static rtlock_t stackpool_lock;
static void *free_lists[STACK_CLASSES]; /* free blocks linked through their first word */
static char *carve_pos;                 /* bump pointer in the current chunk */
static char *carve_end;
static void **chunks;                   /* every chunk / large block, for teardown */
static size_t nchunks, chunks_cap;

static unsigned size_class(size_t size)
{
    unsigned c = 0;
    while (((size_t)STACK_MIN_DEFAULT << c) < size)
        c++;
    return c;
}

size_t stackpool_class_size(size_t size)
{
    unsigned c = size_class(size);
    return (size_t)STACK_MIN_DEFAULT << c;
}

static bool chunk_record(void *mem)
{
    if (nchunks == chunks_cap) {
        size_t cap = chunks_cap ? chunks_cap * 2 : 64;
        void **n = mallocx(cap * sizeof *n, 0);
        if (!n)
            return false;
        if (chunks)
            memcpy(n, chunks, nchunks * sizeof *n);
        if (chunks)
            dallocx(chunks, 0);
        chunks = n;
        chunks_cap = cap;
    }
    chunks[nchunks++] = mem;
    return true;
}

/* stackguard=1: read per call, constant during a gort_run (debug_parse runs before the
 * first stack and teardown empties the pool before the next parse). */
static inline bool pool_guarded(void) { return rt_debug.stackguard != 0; }

/* The start of the jemalloc allocation a pooled block lo lives in (large classes). */
static inline void *block_base(void *lo)
{
    return pool_guarded() ? (char *)lo - STACK_GUARD_PAGE : lo;
}

static void *block_new_locked(size_t bytes)
{
    size_t guard = pool_guarded() ? STACK_GUARD_PAGE : 0;
    void *mem = mallocx(bytes + guard,
                        MALLOCX_ALIGN(bytes >= CHUNK_SIZE ? CHUNK_SIZE : 4096) |
                            MALLOCX_TCACHE_NONE);
    if (!mem)
        return NULL;
    if (guard && mprotect(mem, guard, PROT_NONE) != 0) {
        dallocx(mem, MALLOCX_TCACHE_NONE);
        return NULL;
    }
    if (!chunk_record(mem)) {
        if (guard)
            mprotect(mem, guard, PROT_READ | PROT_WRITE);
        dallocx(mem, MALLOCX_TCACHE_NONE);
        return NULL;
    }
    if (bytes >= CHUNK_SIZE && !guard)
        madvise(mem, bytes, MADV_HUGEPAGE); /* best effort: the kernel may refuse */
    atomic_fetch_add_explicit(&rt_mem_bytes, (int64_t)sallocx(mem, 0), memory_order_relaxed);
    return (char *)mem + guard;
}

static void *carve_locked(size_t bytes)
{
    if ((size_t)(carve_end - carve_pos) < bytes) {
        char *c = block_new_locked(CHUNK_SIZE);
        if (!c)
            return NULL;
        carve_pos = c;
        carve_end = c + CHUNK_SIZE;
    }
    void *b = carve_pos;
    carve_pos += bytes;
    return b;
}

/* Takes up to want blocks of class c from the global pool into out[]; sysstack. */
static unsigned global_take(unsigned c, void **out, unsigned want)
{
    size_t bytes = (size_t)STACK_MIN_DEFAULT << c;
    unsigned n = 0;
    rtlock_acquire(&stackpool_lock);
    while (n < want && free_lists[c]) {
        void *b = free_lists[c];
        free_lists[c] = *(void **)b;
        out[n++] = b;
    }
    while (n < want) {
        void *b = c <= CARVE_MAX_CLASS && !pool_guarded() ? carve_locked(bytes)
                                                           : block_new_locked(bytes);
        if (!b)
            break;
        out[n++] = b;
        atomic_fetch_add_explicit(&stack_bytes_pooled, bytes, memory_order_relaxed);
    }
    rtlock_release(&stackpool_lock);
    return n;
}

static void global_give(unsigned c, void **blocks, unsigned n)
{
    rtlock_acquire(&stackpool_lock);
    for (unsigned i = 0; i < n; i++) {
        *(void **)blocks[i] = free_lists[c];
        free_lists[c] = blocks[i];
    }
    rtlock_release(&stackpool_lock);
}

/* Returns a block of stackpool_class_size(size) bytes. p: the caller's P (owner) or
 * NULL. Context: sysstack (may take stackpool.lock and call jemalloc). */
void *stackpool_alloc(p_t *p, size_t size)
{
    unsigned c = size_class(size);
    if (c >= STACK_CLASSES)
        return NULL;
    size_t bytes = (size_t)STACK_MIN_DEFAULT << c;
    void *b = NULL;
    if (p) {
        if (p->stack_cache_n[c] == 0)
            p->stack_cache_n[c] = (uint8_t)global_take(
                c, p->stack_cache[c], c <= CARVE_MAX_CLASS && !pool_guarded() ? CACHE_BATCH : 1);
        if (p->stack_cache_n[c] > 0)
            b = p->stack_cache[c][--p->stack_cache_n[c]];
    } else if (global_take(c, &b, 1) != 1) {
        b = NULL;
    }
    if (b) {
#if defined(GORT_ASAN)
        /* A reused block still carries the redzone poison of its last task's frames. */
        __asan_unpoison_memory_region(b, bytes);
#endif
        atomic_fetch_add_explicit(&stack_bytes_used, bytes, memory_order_relaxed);
        atomic_fetch_sub_explicit(&stack_bytes_pooled, bytes, memory_order_relaxed);
    }
    return b;
}

/* Gives a block back. Context: sysstack or owner P. */
void stackpool_free(p_t *p, void *lo, size_t size)
{
    unsigned c = size_class(size);
    if (unlikely(c >= STACK_CLASSES)) { /* grown past the pool: stackmap/ mapped it */
        void stack_big_free(void *lo, size_t size);
        stack_big_free(lo, size);
        return;
    }
    size_t bytes = (size_t)STACK_MIN_DEFAULT << c;
    atomic_fetch_sub_explicit(&stack_bytes_used, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&stack_bytes_pooled, bytes, memory_order_relaxed);
    if (p && c <= CARVE_MAX_CLASS) {
        if (p->stack_cache_n[c] == CACHE_CAP) {
            global_give(c, &p->stack_cache[c][CACHE_CAP - CACHE_BATCH], CACHE_BATCH);
            p->stack_cache_n[c] -= CACHE_BATCH;
        }
        p->stack_cache[c][p->stack_cache_n[c]++] = lo;
        return;
    }
    global_give(c, &lo, 1);
}

/* Moves a P's cached stacks to the global lists (teardown, or a P going away). */
void stackpool_flush_p(p_t *p)
{
    for (unsigned c = 0; c < STACK_CLASSES; c++) {
        if (p->stack_cache_n[c])
            global_give(c, p->stack_cache[c], p->stack_cache_n[c]);
        p->stack_cache_n[c] = 0;
    }
}

/* The gc cycle's trim (gc/leakcheck.c, after stack_shrink_all): free blocks of the
 * large classes (above CARVE_MAX_CLASS: single jemalloc allocations, never in a P's
 * cache) beyond TRIM_KEEP per class go back to jemalloc. Carved blocks stay: they are
 * slices of 2 MiB chunks shared with live stacks. Returns the bytes released.
 * Context: sysstack; takes stackpool.lock. */
#define TRIM_KEEP 2
size_t stackpool_trim(void)
{
    size_t freed = 0;
    rtlock_acquire(&stackpool_lock);
    for (unsigned c = CARVE_MAX_CLASS + 1; c < STACK_CLASSES; c++) {
        size_t bytes = (size_t)STACK_MIN_DEFAULT << c;
        void **link = &free_lists[c];
        for (unsigned kept = 0; *link && kept < TRIM_KEEP; kept++)
            link = (void **)*link;
        while (*link) {
            void *lo = *link;
            *link = *(void **)lo;
            void *b = block_base(lo);
            if (b != lo)
                mprotect(b, STACK_GUARD_PAGE, PROT_READ | PROT_WRITE);
            for (size_t i = 0; i < nchunks; i++) {
                if (chunks[i] == b) {
                    chunks[i] = chunks[--nchunks];
                    break;
                }
            }
            atomic_fetch_sub_explicit(&rt_mem_bytes, (int64_t)sallocx(b, 0),
                                      memory_order_relaxed);
            atomic_fetch_sub_explicit(&stack_bytes_pooled, bytes, memory_order_relaxed);
            dallocx(b, MALLOCX_TCACHE_NONE);
            freed += bytes;
        }
    }
    rtlock_release(&stackpool_lock);
    return freed;
}

/* Frees every chunk and block; all stacks must be back (teardown, single-threaded). */
void stackpool_destroy(void)
{
    for (size_t i = 0; i < nchunks; i++) {
        if (pool_guarded())
            mprotect(chunks[i], STACK_GUARD_PAGE, PROT_READ | PROT_WRITE);
        atomic_fetch_sub_explicit(&rt_mem_bytes, (int64_t)sallocx(chunks[i], 0),
                                  memory_order_relaxed);
        dallocx(chunks[i], MALLOCX_TCACHE_NONE);
    }
    if (chunks)
        dallocx(chunks, 0);
    chunks = NULL;
    nchunks = chunks_cap = 0;
    memset(free_lists, 0, sizeof free_lists);
    carve_pos = carve_end = NULL;
    atomic_store_explicit(&stack_bytes_used, 0, memory_order_relaxed);
    atomic_store_explicit(&stack_bytes_pooled, 0, memory_order_relaxed);
}

/* The gc's view (gc/mark.c): copies up to max chunk/block addresses and sizes (out and
 * sizes NULL ok) and returns how many there are. Task stacks live only in them. */
size_t stackpool_chunks(void **out, size_t *sizes, size_t max)
{
    rtlock_acquire(&stackpool_lock);
    size_t n = nchunks;
    for (size_t i = 0; i < n && i < max; i++) {
        out[i] = chunks[i];
        sizes[i] = sallocx(chunks[i], 0);
    }
    rtlock_release(&stackpool_lock);
    return n;
}
