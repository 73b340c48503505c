/* gc/heapmap.c — which memory is whose: the runtime arena's extents, the runtime's
 * objects, and the gc's own scratch memory.
 *
 * Design. Runtime memory comes from a jemalloc arena of its own (core/alloc.c). Two
 * records make "owned by the runtime" exact:
 *  - extents: extent hooks wrap jemalloc's defaults for that arena and keep the union
 *    of the ranges it maps. The arena's metadata (its base: extent descriptors, bins)
 *    is mapped through the same hooks, so it falls inside too. Root scanning skips
 *    these ranges: otherwise descriptors pointing at slab starts would mark objects.
 *  - objects: rt_alloc/rt_free register each object (start, usable size) in an
 *    open-addressing hash (linear probing, backward-shift deletion). A cycle copies it
 *    into a sorted array, so a pointer anywhere inside an object finds it by binary
 *    search.
 * The gc's own memory (this hash, the cycle's scratch) comes from gc_map (plain mmap)
 * and is neither a root nor an object: it holds a pointer to every runtime object.
 * Locks: three leaf spinlocks (extents, objects, gc maps), never held across a call
 * that takes another runtime lock; extent hooks run under jemalloc's locks and so take
 * only theirs.
 * The tracked-heap layer's blocks join the snapshot (gc/tracked.c); its extents and own
 * memory join the owned ranges. The containers are gc/addrset.h's, shared with it.
 * Rejected: jemalloc introspection per pointer (no interior-pointer lookup in its API);
 * scanning all anonymous memory as roots (jemalloc metadata and tcache stacks hold
 * stale pointers to runtime objects: every leak would be hidden).
 */
#include <jemalloc/jemalloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gc/extent_wrap.h"
#include "gc/gc.h"

/* ------------------------------------------------------------ spinlocks */

typedef struct spin {
    atomic_flag f;
} spin_t;

static void spin_lock(spin_t *s)
{
    /* acquire: pairs with the release in spin_unlock */
    while (atomic_flag_test_and_set_explicit(&s->f, memory_order_acquire))
        __builtin_ia32_pause();
}

static void spin_unlock(spin_t *s) { atomic_flag_clear_explicit(&s->f, memory_order_release); }

/* ------------------------------------------------------------ gc maps */

enum { GC_MAPS_MAX = 512 };
static spin_t maps_lock;                /* leaf */
static range_t gc_maps[GC_MAPS_MAX];    /* maps_lock */
static size_t ngc_maps;                 /* maps_lock */

static size_t page_round(size_t b) { return (b + 4095) & ~(size_t)4095; }

void *gc_map(size_t bytes)
{
    bytes = page_round(bytes ? bytes : 1);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    spin_lock(&maps_lock);
    if (ngc_maps == GC_MAPS_MAX) {
        spin_unlock(&maps_lock);
        munmap(p, bytes);
        return NULL;
    }
    gc_maps[ngc_maps++] = (range_t){(uintptr_t)p, (uintptr_t)p + bytes};
    spin_unlock(&maps_lock);
    return p;
}

void gc_unmap(void *p, size_t bytes)
{
    if (!p)
        return;
    bytes = page_round(bytes ? bytes : 1);
    spin_lock(&maps_lock);
    for (size_t i = 0; i < ngc_maps; i++)
        if (gc_maps[i].lo == (uintptr_t)p) {
            gc_maps[i] = gc_maps[--ngc_maps];
            break;
        }
    spin_unlock(&maps_lock);
    munmap(p, bytes);
}

/* ------------------------------------------------------------ extents */

static spin_t ext_lock;   /* leaf; taken inside jemalloc's extent hooks */
static rangeset_t ext;    /* ext_lock */

static void ext_add(uintptr_t a, uintptr_t b)
{
    spin_lock(&ext_lock);
    rangeset_add(&ext, a, b, gc_map, gc_unmap); /* unrecorded: only roots widen */
    spin_unlock(&ext_lock);
}

static void ext_del(uintptr_t a, uintptr_t b)
{
    spin_lock(&ext_lock);
    rangeset_del(&ext, a, b, gc_map, gc_unmap); /* still recorded: roots narrow, never wrongly */
    spin_unlock(&ext_lock);
}

static extent_wrap_t ext_wrap; /* set once by heap_extent_hooks */
static bool ext_wrap_ok;

/* Called once by rt_alloc_init, before the arena exists (single-threaded). */
void *heap_extent_hooks(void)
{
    if (!ext_wrap_ok)
        ext_wrap_ok = extent_wrap_init(&ext_wrap, ext_add, ext_del);
    return ext_wrap_ok ? &ext_wrap.hooks : NULL;
}

static struct {
    void *p;
    size_t bytes;
} scratch[SCR_COUNT]; /* the world flag's holder only */

void *gc_scratch(int slot, size_t bytes)
{
    if (bytes <= scratch[slot].bytes)
        return scratch[slot].p;
    size_t nb = scratch[slot].bytes ? scratch[slot].bytes : 65536;
    while (nb < bytes)
        nb *= 2;
    void *n = gc_map(nb);
    if (!n)
        return NULL;
    gc_unmap(scratch[slot].p, scratch[slot].bytes);
    scratch[slot].p = n;
    scratch[slot].bytes = nb;
    return n;
}

size_t heap_owned_ranges(range_t *out, size_t max)
{
    size_t n = 0;
    spin_lock(&maps_lock);
    for (size_t i = 0; i < ngc_maps; i++, n++)
        if (n < max)
            out[n] = gc_maps[i];
    spin_unlock(&maps_lock);
    spin_lock(&ext_lock);
    n += rangeset_copy(&ext, n < max ? out + n : NULL, n < max ? max - n : 0);
    spin_unlock(&ext_lock);
    n += heap_tracked_owned(n < max ? out + n : NULL, n < max ? max - n : 0);
    return n;
}

/* ------------------------------------------------------------ objects */

static spin_t obj_lock;   /* leaf */
static blocktab_t objs;   /* obj_lock */
static bool objs_lost;    /* an insert failed (no memory): cycles must not trust the table */

void heap_obj_add(void *p, size_t size)
{
    spin_lock(&obj_lock);
    if (!blocktab_add(&objs, (uintptr_t)p, size, 4096, gc_map, gc_unmap))
        objs_lost = true;
    spin_unlock(&obj_lock);
}

void heap_obj_del(void *p)
{
    spin_lock(&obj_lock);
    blocktab_del(&objs, (uintptr_t)p);
    spin_unlock(&obj_lock);
}

/* In place, no allocation. */
static void range_isort(range_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        range_t x = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1].lo > x.lo; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

/* Shell sort (Ciura's gaps): in place, for when no scratch memory is to be had. */
static void range_shellsort(range_t *a, size_t n)
{
    static const size_t gaps[] = {1750, 701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        size_t gap = gaps[g];
        for (size_t i = gap; i < n; i++) {
            range_t x = a[i];
            size_t j = i;
            for (; j >= gap && a[j - gap].lo > x.lo; j -= gap)
                a[j] = a[j - gap];
            a[j] = x;
        }
    }
}

/* LSD radix sort on lo (bits 3..50: objects are 8-aligned user-space addresses).
 * Never qsort: glibc's qsort copies the array into a malloc'd buffer, i.e. into the
 * program's heap, which is a root: after free, that stale copy of every object's
 * address kept every channel reachable (missed leaks, changing from cycle to cycle). */
void range_sort(range_t *a, size_t n)
{
    if (n < 64) {
        range_isort(a, n);
        return;
    }
    range_t *tmp = gc_scratch(SCR_SORT, n * sizeof *tmp);
    if (!tmp) {
        range_shellsort(a, n);
        return;
    }
    range_t *src = a, *dst = tmp;
    for (unsigned shift = 3; shift < 51; shift += 12) {
        static size_t count[4096];
        memset(count, 0, sizeof count);
        for (size_t i = 0; i < n; i++)
            count[(src[i].lo >> shift) & 4095]++;
        size_t sum = 0;
        for (size_t d = 0; d < 4096; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i].lo >> shift) & 4095]++] = src[i];
        range_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

range_t *heap_objs_snapshot(size_t *nout)
{
    *nout = 0;
    spin_lock(&obj_lock);
    if (objs_lost) {
        spin_unlock(&obj_lock);
        return NULL;
    }
    /* the tracked heap's blocks are traced like runtime objects; the caller has frozen
     * its registry (heap_tracked_freeze), so the count holds until the copy */
    size_t nt = heap_tracked_blocks(NULL, 0);
    if (nt == SIZE_MAX) {
        spin_unlock(&obj_lock);
        return NULL;
    }
    size_t n = objs.n;
    range_t *a = gc_scratch(SCR_OBJS, (n + nt + 1) * sizeof *a);
    if (!a) {
        spin_unlock(&obj_lock);
        return NULL;
    }
    size_t k = blocktab_copy(&objs, a, n);
    spin_unlock(&obj_lock);
    k += heap_tracked_blocks(a + k, nt);
    range_sort(a, k);
    *nout = k;
    return a;
}
