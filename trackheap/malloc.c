/* trackheap/malloc.c — libgort_trackheap's malloc family: every block comes from a
 * tracked arena and is registered (trackheap/heap.c), so the leak detector can trace
 * the program's heap like runtime memory.
 *
 * Design.
 *  - Defined here: malloc, free, calloc, realloc, reallocarray, posix_memalign,
 *    aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size. A program opts in by
 *    linking the library before libc and jemalloc, or with LD_PRELOAD; from then on
 *    libc's, ld.so's and every library's mallocs come here too.
 *  - Each call runs on a per-thread malloc stack (64 KiB, the layer's own memory):
 *    jemalloc without a tcache is ~2-3 KiB deep (measured), more than the ~1 KiB a
 *    gort task stack offers code without GORT_FRAME; and the stale block addresses its
 *    frames leave behind are in memory the gc never scans (they would pin blocks).
 *    The stack goes back at thread exit (a pthread key's destructor); calls after that,
 *    in that thread, run on the thread's own stack.
 *  - Start-up: the first call initialises (region, arenas with extent hooks, key,
 *    fork handlers). What that thread allocates meanwhile (jemalloc's and libc's own
 *    calls) comes from a static bootstrap buffer, never freed; other threads wait.
 *    If initialisation fails the layer forwards to jemalloc's default arenas and the
 *    runtime finds no layer (gort_trackheap_api returns NULL).
 *  - Order inside a call: a new block is registered after jemalloc carved it; a freed
 *    one is unregistered before it goes back; realloc copies into a registered new
 *    block before unregistering the old. So while the gc has the registry frozen,
 *    every registered block is mapped and holds what the program stored.
 *  - realloc: in place when the size class still fits (a shrink keeps the block if it
 *    keeps at least half of it) or when xallocx can grow it in place; else
 *    allocate, copy, free. Never jemalloc's rallocx: it frees the old block inside,
 *    while the registry still names it.
 * Not supported: dlopen of the layer (its TLS is initial-exec and a malloc cannot be
 * replaced after start), ASan and TSan (they replace malloc themselves).
 */
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "trackheap/th.h"

enum { ST_NONE, ST_INIT, ST_READY, ST_FAILED };
static _Atomic int th_state;
static __thread bool tl_initialising; /* this thread runs the initialisation */

TH_TEXT bool th_ready(void)
{
    /* acquire: pairs with the release that published the arenas */
    return atomic_load_explicit(&th_state, memory_order_acquire) == ST_READY;
}

/* ------------------------------------------------------------ bootstrap */

enum { BOOT_BYTES = 256 * 1024, BOOT_HDR = 16 };
static _Alignas(64) unsigned char boot[BOOT_BYTES];
static _Atomic size_t boot_used;

static TH_TEXT bool in_boot(const void *p)
{
    return (const unsigned char *)p >= boot && (const unsigned char *)p < boot + BOOT_BYTES;
}

static TH_TEXT size_t boot_size(const void *p)
{
    return *(const size_t *)((const unsigned char *)p - BOOT_HDR);
}

/* Zeroed (the buffer is never reused). */
static TH_TEXT void *boot_alloc(size_t size, size_t align)
{
    if (align < BOOT_HDR)
        align = BOOT_HDR;
    if (size > BOOT_BYTES || align > 4096) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = size + align + BOOT_HDR;
    size_t at = atomic_fetch_add_explicit(&boot_used, need, memory_order_relaxed);
    if (at + need > BOOT_BYTES) {
        errno = ENOMEM;
        return NULL;
    }
    uintptr_t p = ((uintptr_t)(boot + at + BOOT_HDR) + align - 1) & ~(uintptr_t)(align - 1);
    *(size_t *)(p - BOOT_HDR) = size;
    return (void *)p;
}

/* ------------------------------------------------------------ initialisation */

static pthread_key_t stack_key;
enum { STACK_BYTES = 64 * 1024 };
static __thread char *tl_stack;       /* this thread's malloc stack, NULL: none yet */
static __thread bool tl_on_stack;     /* running on it */
static __thread bool tl_exiting;      /* its destructor ran: no new one */
static __thread unsigned tl_arena;    /* arena slot + 1; 0: not chosen yet */
static _Atomic unsigned arena_next;

static TH_TEXT void stack_release(void *s)
{
    tl_exiting = true;
    tl_stack = NULL;
    th_unmap(s, STACK_BYTES);
}

static TH_TEXT void th_init(void)
{
    int want = ST_NONE;
    if (!atomic_compare_exchange_strong_explicit(&th_state, &want, ST_INIT,
                                                 memory_order_acq_rel, memory_order_acquire))
        return;
    tl_initialising = true;
    bool ok = th_region_init() && th_arenas_init() &&
              pthread_key_create(&stack_key, stack_release) == 0 &&
              pthread_atfork(th_fork_prepare, th_fork_after, th_fork_after) == 0;
    tl_initialising = false;
    /* release: the arenas and the region are set up before anyone uses them */
    atomic_store_explicit(&th_state, ok ? ST_READY : ST_FAILED, memory_order_release);
}

__attribute__((constructor)) static TH_TEXT void th_ctor(void) { th_init(); }

/* ------------------------------------------------------------ tracked calls */

static TH_TEXT int arena_flags(void)
{
    if (!tl_arena)
        tl_arena = atomic_fetch_add_explicit(&arena_next, 1, memory_order_relaxed) + 1;
    return MALLOCX_ARENA(th_arena(tl_arena - 1)) | MALLOCX_TCACHE_NONE;
}

static TH_TEXT void *tracked_alloc(size_t size, size_t align, bool zero)
{
    int flags = arena_flags() | (align > 16 ? MALLOCX_ALIGN(align) : 0) |
                (zero ? MALLOCX_ZERO : 0);
    void *p = mallocx(size ? size : 1, flags);
    if (p)
        th_block_add(p, sallocx(p, 0));
    return p;
}

static TH_TEXT void tracked_free(void *p)
{
    if (in_boot(p))
        return;
    th_block_del(p);
    dallocx(p, MALLOCX_TCACHE_NONE); /* finds the block's own arena: any jemalloc block */
}

static TH_TEXT void *tracked_realloc(void *p, size_t size)
{
    size_t old;
    if (in_boot(p)) {
        old = boot_size(p);
    } else {
        old = sallocx(p, 0);
        if (size <= old && size >= old / 2)
            return p;
        if (size > old) {
            size_t got = xallocx(p, size, 0, MALLOCX_TCACHE_NONE);
            if (got >= size) {
                th_block_add(p, got); /* the new tail is fresh: widening later is safe */
                return p;
            }
        }
    }
    void *q = tracked_alloc(size, 0, false);
    if (!q)
        return NULL; /* p untouched */
    memcpy(q, p, old < size ? old : size);
    tracked_free(p);
    return q;
}

enum { OP_ALLOC, OP_FREE, OP_REALLOC };
typedef struct req {
    int op;
    bool zero;
    void *p;
    size_t size, align;
    void *ret;
} req_t;

static TH_TEXT void *req_do(void *arg)
{
    req_t *r = arg;
    switch (r->op) {
    case OP_ALLOC:
        r->ret = tracked_alloc(r->size, r->align, r->zero);
        break;
    case OP_FREE:
        tracked_free(r->p);
        break;
    default:
        r->ret = tracked_realloc(r->p, r->size);
        break;
    }
    return NULL;
}

/* trackheap/switch.S: calls fn(arg) with the stack pointer at top. */
void *th_switch_call(void *arg, void *(*fn)(void *), void *top);

/* Before the layer is ready: the initialising thread takes the bootstrap buffer, others
 * wait for it; after a failed start, jemalloc's default arenas. */
static TH_TEXT void req_unready(req_t *r)
{
    th_init();
    while (atomic_load_explicit(&th_state, memory_order_acquire) == ST_INIT) {
        if (tl_initialising) {
            if (r->op == OP_ALLOC) {
                r->ret = boot_alloc(r->size, r->align);
            } else if (r->op == OP_REALLOC) {
                size_t old = in_boot(r->p) ? boot_size(r->p) : sallocx(r->p, 0);
                r->ret = boot_alloc(r->size, 0);
                if (r->ret)
                    memcpy(r->ret, r->p, old < r->size ? old : r->size);
            } /* a free during start-up: boot blocks are never reused; others wait */
            return;
        }
        sched_yield();
    }
    if (atomic_load_explicit(&th_state, memory_order_acquire) == ST_READY) {
        req_do(r);
        return;
    }
    /* ST_FAILED: jemalloc's defaults (the gc then sees no layer) */
    if (r->op == OP_ALLOC) {
        int flags = (r->align > 16 ? MALLOCX_ALIGN(r->align) : 0) | (r->zero ? MALLOCX_ZERO : 0);
        r->ret = mallocx(r->size ? r->size : 1, flags);
    } else if (r->op == OP_FREE) {
        if (!in_boot(r->p))
            dallocx(r->p, 0);
    } else if (in_boot(r->p)) {
        r->ret = mallocx(r->size ? r->size : 1, 0);
        if (r->ret)
            memcpy(r->ret, r->p, boot_size(r->p) < r->size ? boot_size(r->p) : r->size);
    } else {
        r->ret = rallocx(r->p, r->size ? r->size : 1, 0);
    }
}

static TH_TEXT void req_run(req_t *r)
{
    if (__builtin_expect(!th_ready(), 0)) {
        req_unready(r);
        return;
    }
    if (tl_on_stack || tl_exiting) { /* nested (a signal handler) or after thread exit */
        req_do(r);
        return;
    }
    if (__builtin_expect(!tl_stack, 0)) {
        tl_stack = th_map(STACK_BYTES);
        if (!tl_stack || pthread_setspecific(stack_key, tl_stack) != 0) {
            th_unmap(tl_stack, STACK_BYTES);
            tl_stack = NULL;
            req_do(r); /* no stack to be had: on the caller's */
            return;
        }
    }
    tl_on_stack = true;
    th_switch_call(r, req_do, tl_stack + STACK_BYTES);
    tl_on_stack = false;
}

/* ------------------------------------------------------------ the C interface */

static TH_TEXT void *alloc_common(size_t size, size_t align, bool zero)
{
    req_t r = {.op = OP_ALLOC, .size = size, .align = align, .zero = zero};
    req_run(&r);
    if (!r.ret)
        errno = ENOMEM;
    return r.ret;
}

TH_API void *malloc(size_t size) { return alloc_common(size, 0, false); }

TH_API void free(void *p)
{
    if (!p)
        return;
    int e = errno; /* free never changes errno (POSIX.1-2024) */
    req_t r = {.op = OP_FREE, .p = p};
    req_run(&r);
    errno = e;
}

TH_API void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return alloc_common(total, 0, true);
}

TH_API void *realloc(void *p, size_t size)
{
    if (!p)
        return malloc(size);
    if (size == 0) { /* glibc's behaviour: free and return NULL */
        free(p);
        return NULL;
    }
    req_t r = {.op = OP_REALLOC, .p = p, .size = size};
    req_run(&r);
    if (!r.ret)
        errno = ENOMEM;
    return r.ret;
}

TH_API void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

static TH_TEXT bool pow2(size_t a) { return a && !(a & (a - 1)); }

TH_API int posix_memalign(void **out, size_t align, size_t size)
{
    if (!pow2(align) || align % sizeof(void *))
        return EINVAL;
    int e = errno;
    void *p = alloc_common(size, align, false);
    errno = e;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

TH_API void *aligned_alloc(size_t align, size_t size)
{
    if (!pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_common(size, align, false);
}

TH_API void *memalign(size_t align, size_t size)
{
    size_t a = sizeof(void *);
    while (a < align) /* glibc rounds an odd alignment up */
        a *= 2;
    return alloc_common(size, a, false);
}

static TH_TEXT size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

TH_API void *valloc(size_t size) { return alloc_common(size, page_size(), false); }

TH_API void *pvalloc(size_t size)
{
    size_t pg = page_size();
    if (size > SIZE_MAX - pg) {
        errno = ENOMEM;
        return NULL;
    }
    return alloc_common((size + pg - 1) & ~(pg - 1), pg, false);
}

TH_API size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    return in_boot(p) ? boot_size(p) : sallocx(p, 0);
}
