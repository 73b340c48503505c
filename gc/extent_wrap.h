/* gc/extent_wrap.h — jemalloc extent hooks that let arena 0's default hooks do the work
 * and tell their owner which address ranges an arena maps and unmaps: the runtime
 * arena (gc/heapmap.c) and the tracked heap's arenas (trackheap/heap.c), so "owned by
 * the runtime" or "tracked" is an address-range question for the gc.
 *
 * Header-only (static inline), for the reason gc/addrset.h gives: libgort_trackheap
 * must not depend on libgort, and both may be linked statically into one program. An
 * includer whose code must live in a section of its own defines EXTENT_WRAP_ATTR first
 * (trackheap: its section is what preemption treats as unsafe).
 *
 * jemalloc hands every hook the hooks pointer the arena was created with: it is the
 * first member of extent_wrap_t, so each hook finds its wrapper without a global.
 * Callbacks run inside jemalloc's hooks, under its locks: they may take only leaf locks
 * and must not allocate through jemalloc.
 */
#ifndef GORT_GC_EXTENT_WRAP_H
#define GORT_GC_EXTENT_WRAP_H

#include <jemalloc/jemalloc.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef EXTENT_WRAP_ATTR
#define EXTENT_WRAP_ATTR
#endif

typedef struct extent_wrap {
    extent_hooks_t hooks; /* first: the pointer jemalloc passes back */
    extent_hooks_t *def;  /* arena 0's hooks */
    void (*mapped)(uintptr_t lo, uintptr_t hi);
    void (*unmapped)(uintptr_t lo, uintptr_t hi);
} extent_wrap_t;

static inline EXTENT_WRAP_ATTR extent_wrap_t *ew_of(extent_hooks_t *h)
{
    return (extent_wrap_t *)h;
}

static EXTENT_WRAP_ATTR void *ew_alloc(extent_hooks_t *h, void *addr, size_t size, size_t align,
                                       bool *zero, bool *commit, unsigned arena)
{
    extent_wrap_t *w = ew_of(h);
    void *p = w->def->alloc(w->def, addr, size, align, zero, commit, arena);
    if (p)
        w->mapped((uintptr_t)p, (uintptr_t)p + size);
    return p;
}

static EXTENT_WRAP_ATTR bool ew_dalloc(extent_hooks_t *h, void *addr, size_t size,
                                       bool committed, unsigned arena)
{
    extent_wrap_t *w = ew_of(h);
    if (!w->def->dalloc)
        return true; /* opt out: jemalloc retains it, and it stays recorded */
    bool refused = w->def->dalloc(w->def, addr, size, committed, arena);
    if (!refused)
        w->unmapped((uintptr_t)addr, (uintptr_t)addr + size);
    return refused;
}

static EXTENT_WRAP_ATTR void ew_destroy(extent_hooks_t *h, void *addr, size_t size,
                                        bool committed, unsigned arena)
{
    extent_wrap_t *w = ew_of(h);
    if (w->def->destroy)
        w->def->destroy(w->def, addr, size, committed, arena);
    w->unmapped((uintptr_t)addr, (uintptr_t)addr + size);
}

static EXTENT_WRAP_ATTR bool ew_commit(extent_hooks_t *h, void *addr, size_t size, size_t off,
                                       size_t len, unsigned arena)
{
    return ew_of(h)->def->commit(ew_of(h)->def, addr, size, off, len, arena);
}

static EXTENT_WRAP_ATTR bool ew_decommit(extent_hooks_t *h, void *addr, size_t size,
                                         size_t off, size_t len, unsigned arena)
{
    return ew_of(h)->def->decommit(ew_of(h)->def, addr, size, off, len, arena);
}

static EXTENT_WRAP_ATTR bool ew_purge_lazy(extent_hooks_t *h, void *addr, size_t size,
                                           size_t off, size_t len, unsigned arena)
{
    return ew_of(h)->def->purge_lazy(ew_of(h)->def, addr, size, off, len, arena);
}

static EXTENT_WRAP_ATTR bool ew_purge_forced(extent_hooks_t *h, void *addr, size_t size,
                                             size_t off, size_t len, unsigned arena)
{
    return ew_of(h)->def->purge_forced(ew_of(h)->def, addr, size, off, len, arena);
}

static EXTENT_WRAP_ATTR bool ew_split(extent_hooks_t *h, void *addr, size_t size, size_t a,
                                      size_t b, bool committed, unsigned arena)
{
    return ew_of(h)->def->split(ew_of(h)->def, addr, size, a, b, committed, arena);
}

static EXTENT_WRAP_ATTR bool ew_merge(extent_hooks_t *h, void *a, size_t asz, void *b,
                                      size_t bsz, bool committed, unsigned arena)
{
    return ew_of(h)->def->merge(ew_of(h)->def, a, asz, b, bsz, committed, arena);
}

/* Fills w from arena 0's hooks (a hook the default lacks stays NULL: jemalloc then
 * treats the operation as refused, as it would for the default). false when jemalloc
 * does not tell them. Single-threaded (before the first arena is created with w). */
static inline EXTENT_WRAP_ATTR bool extent_wrap_init(extent_wrap_t *w,
                                                     void (*mapped)(uintptr_t, uintptr_t),
                                                     void (*unmapped)(uintptr_t, uintptr_t))
{
    extent_hooks_t *def = NULL;
    size_t sz = sizeof def;
    if (mallctl("arena.0.extent_hooks", &def, &sz, NULL, 0) != 0 || !def || !def->alloc)
        return false;
    *w = (extent_wrap_t){
        .hooks =
            {
                .alloc = ew_alloc,
                .dalloc = ew_dalloc,
                .destroy = ew_destroy,
                .commit = def->commit ? ew_commit : NULL,
                .decommit = def->decommit ? ew_decommit : NULL,
                .purge_lazy = def->purge_lazy ? ew_purge_lazy : NULL,
                .purge_forced = def->purge_forced ? ew_purge_forced : NULL,
                .split = def->split ? ew_split : NULL,
                .merge = def->merge ? ew_merge : NULL,
            },
        .def = def,
        .mapped = mapped,
        .unmapped = unmapped,
    };
    return true;
}

#endif
