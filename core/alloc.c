/* core/alloc.c — runtime memory: jemalloc, in an arena of the runtime's own.
 *
 * A dedicated arena keeps runtime objects (task records, channels, contexts) apart from
 * the program's heap, so the leak detector can tell them apart by address. Every byte
 * is counted in rt_mem_bytes, so tests can assert that gort_run gave everything back.
 * Allocation from a task runs on the system stack: jemalloc's slow paths are deeper
 * than a 2 KiB task stack allows.
 */
#include <jemalloc/jemalloc.h>
#include <string.h>

#include "gc/gc.h"
#include "rt.h"
#include "sched_impl.h"

#if defined(GORT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

_Atomic int64_t rt_mem_bytes;
static unsigned rt_arena;
static bool rt_arena_ok;

int rt_alloc_init(void)
{
    if (rt_arena_ok)
        return 0;
    size_t sz = sizeof rt_arena;
    /* gc/heapmap.c's extent hooks record every range the arena maps (NULL: defaults) */
    void *hooks = heap_extent_hooks();
    if (mallctl("arenas.create", &rt_arena, &sz, hooks ? &hooks : NULL,
                hooks ? sizeof hooks : 0) != 0)
        return -ENOMEM;
    rt_arena_ok = true;
    return 0;
}

struct alloc_req {
    size_t size;
    size_t align;
    bool untraced; /* not in the gc's object table (rt_alloc_untraced) */
    void *ptr;
};

/* The runtime arena is used without a tcache. The thread's automatic tcache caches
 * regions of any arena and would mix the program's memory with the runtime's; an
 * explicit tcache (tcache.create) lives in arena 0, i.e. in memory the leak detector
 * scans as the program's, and its bins keep stale pointers to runtime objects it handed
 * out, which would mark every channel reachable (gc/README.md). */
static int rt_flags(void)
{
    return MALLOCX_TCACHE_NONE | (rt_arena_ok ? MALLOCX_ARENA(rt_arena) : 0);
}

static void *alloc_on_sysstack(void *arg)
{
    struct alloc_req *r = arg;
    int flags = rt_flags() | (r->align ? MALLOCX_ALIGN(r->align) : 0);
#if defined(GORT_TSAN)
    /* TSan sees neither jemalloc's locks nor its reuse of a freed region (this arena
     * is not malloc), so the last owner's accesses would race with the zeroing and
     * every use by the next owner. The free releases on the address, the allocation
     * acquires on it before anything writes there. (A freed region comes back at the
     * same address to the same size class: small objects, slabs.) */
    r->ptr = mallocx(r->size ? r->size : 1, flags);
    if (r->ptr) {
        __tsan_acquire(r->ptr);
        memset(r->ptr, 0, sallocx(r->ptr, 0));
    }
#else
    r->ptr = mallocx(r->size ? r->size : 1, flags | MALLOCX_ZERO);
#endif
    if (r->ptr) {
        size_t usable = sallocx(r->ptr, 0);
        atomic_fetch_add_explicit(&rt_mem_bytes, (int64_t)usable, memory_order_relaxed);
        if (!r->untraced)
            heap_obj_add(r->ptr, usable); /* gc: a pointer inside it finds it */
    }
    return NULL;
}

static void *alloc_req_run(struct alloc_req *r)
{
    if (g_self())
        sysstack_call(alloc_on_sysstack, r);
    else
        alloc_on_sysstack(r);
    return r->ptr;
}

void *rt_alloc(size_t size) { return rt_alloc_aligned(size, 0); }

void *rt_alloc_aligned(size_t size, size_t align)
{
    struct alloc_req r = {.size = size, .align = align};
    return alloc_req_run(&r);
}

void *rt_alloc_untraced(size_t size)
{
    struct alloc_req r = {.size = size, .untraced = true};
    return alloc_req_run(&r);
}

struct free_req {
    void *ptr;
    bool untraced;
};

static void *free_on_sysstack(void *arg)
{
    struct free_req *r = arg;
    if (!r->untraced)
        heap_obj_del(r->ptr);
    atomic_fetch_sub_explicit(&rt_mem_bytes, (int64_t)sallocx(r->ptr, 0),
                              memory_order_relaxed);
#if defined(GORT_TSAN)
    __tsan_release(r->ptr); /* pairs with the acquire of the region's next allocation */
#endif
    dallocx(r->ptr, rt_flags());
    return NULL;
}

static void free_req_run(struct free_req *r)
{
    if (!r->ptr)
        return;
    if (g_self())
        sysstack_call(free_on_sysstack, r);
    else
        free_on_sysstack(r);
}

void rt_free(void *ptr)
{
    struct free_req r = {ptr, false};
    free_req_run(&r);
}

void rt_free_untraced(void *ptr)
{
    struct free_req r = {ptr, true};
    free_req_run(&r);
}
