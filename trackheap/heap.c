/* trackheap/heap.c — libgort_trackheap's records: the tracked arenas' extents, the
 * block registry, the layer's own memory, and the table the gc reads (trackheap.h).
 *
 * Design.
 *  - Arenas: TH_ARENAS_MAX jemalloc arenas of the layer's own (one per CPU, up to 16:
 *    used without a tcache, so threads on different arenas do not share bin locks),
 *    created with extent hooks that wrap jemalloc's defaults and keep the union of the
 *    ranges they map (metadata too: an arena's base is mapped through its hooks). Those
 *    ranges are not roots for the gc: freed blocks and jemalloc's descriptors would
 *    otherwise pin blocks.
 *  - Registry: every live block (start, usable size) in one of TH_SHARDS open-addressing
 *    tables (gc/addrset.h), chosen by address; a spinlock per shard. The gc freezes all
 *    shards for the duration of a mark (trackheap.h).
 *  - Own memory: one PROT_NONE reservation, carved in power-of-two chunks (made
 *    read-write when handed out, returned with MADV_DONTNEED to a free list per size):
 *    the registry's tables, the extent list and the per-thread malloc stacks. One range
 *    for the gc to skip, and no recursion into malloc.
 * Locks (all leaf spinlocks; order shard -> region, ext -> region): shard[i] (registry),
 * ext (taken inside jemalloc's extent hooks, under jemalloc's locks), region.
 * Every function is in section gort_trackheap_text (TH_TEXT): the runtime must never
 * stop a task inside it (it may hold a shard lock the gc then waits for).
 */
#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

#include "trackheap/th.h"
#define EXTENT_WRAP_ATTR TH_TEXT
#include "gc/extent_wrap.h"

/* ------------------------------------------------------------ spinlocks */

TH_TEXT void th_lock(th_spin_t *s)
{
    /* acquire: pairs with the release in th_unlock */
    for (unsigned n = 0; atomic_flag_test_and_set_explicit(&s->f, memory_order_acquire); n++) {
        if (n < 128)
            __builtin_ia32_pause();
        else
            sched_yield(); /* a frozen registry: the gc holds it for a whole mark */
    }
}

TH_TEXT void th_unlock(th_spin_t *s)
{
    atomic_flag_clear_explicit(&s->f, memory_order_release);
}

/* ------------------------------------------------------------ own memory */

#define TH_REGION_BYTES ((size_t)64 << 30) /* virtual only: carved as needed */
enum { TH_CLASSES = 37 };                  /* 4 KiB << 0 .. << 36 */

static th_spin_t region_lock;              /* leaf */
static uintptr_t region_lo, region_bump, region_hi; /* region_lock (lo, hi: set once) */
static void *region_free[TH_CLASSES];      /* region_lock; chunk's first word links */

static TH_TEXT unsigned region_class(size_t bytes)
{
    unsigned c = 0;
    while (((size_t)4096 << c) < bytes)
        c++;
    return c;
}

TH_TEXT bool th_region_init(void)
{
    void *p = mmap(NULL, TH_REGION_BYTES, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return false;
    region_lo = region_bump = (uintptr_t)p;
    region_hi = region_lo + TH_REGION_BYTES;
    return true;
}

TH_TEXT void *th_map(size_t bytes)
{
    unsigned c = region_class(bytes ? bytes : 1);
    if (c >= TH_CLASSES)
        return NULL;
    size_t sz = (size_t)4096 << c;
    th_lock(&region_lock);
    void *p = region_free[c];
    if (p) {
        region_free[c] = *(void **)p;
        *(void **)p = NULL;
        th_unlock(&region_lock);
        return p;
    }
    if (region_hi - region_bump < sz) {
        th_unlock(&region_lock);
        return NULL;
    }
    p = (void *)region_bump;
    region_bump += sz;
    th_unlock(&region_lock);
    if (mprotect(p, sz, PROT_READ | PROT_WRITE) != 0)
        return NULL; /* stays reserved, unused: a leak of address space only */
    return p;
}

TH_TEXT void th_unmap(void *p, size_t bytes)
{
    if (!p)
        return;
    unsigned c = region_class(bytes ? bytes : 1);
    madvise(p, (size_t)4096 << c, MADV_DONTNEED); /* zero pages: no stale addresses */
    th_lock(&region_lock);
    *(void **)p = region_free[c];
    region_free[c] = p;
    th_unlock(&region_lock);
}

/* ------------------------------------------------------------ registry */

typedef struct shard {
    th_spin_t lock;
    blocktab_t t;   /* lock */
    char pad[64 - sizeof(th_spin_t) - sizeof(blocktab_t)];
} __attribute__((aligned(64))) shard_t;

static shard_t shards[TH_SHARDS];
static _Atomic bool blocks_lost; /* an insert failed: the gc must not trust the registry */

static TH_TEXT shard_t *shard_of(uintptr_t p)
{
    /* blocks are 16-aligned; mix the bits so one size class spreads over all shards */
    return &shards[((p >> 4) * 0x9e3779b97f4a7c15ull) >> (64 - TH_SHARD_BITS)];
}

TH_TEXT void th_block_add(void *p, size_t size)
{
    shard_t *s = shard_of((uintptr_t)p);
    th_lock(&s->lock);
    bool ok = blocktab_add(&s->t, (uintptr_t)p, size, 256, th_map, th_unmap);
    th_unlock(&s->lock);
    if (!ok) /* relaxed: read by the gc after freezing every shard (acquire) */
        atomic_store_explicit(&blocks_lost, true, memory_order_relaxed);
}

TH_TEXT bool th_block_del(void *p)
{
    shard_t *s = shard_of((uintptr_t)p);
    th_lock(&s->lock);
    bool found = blocktab_del(&s->t, (uintptr_t)p);
    th_unlock(&s->lock);
    return found;
}

static TH_TEXT void th_freeze(void)
{
    for (int i = 0; i < TH_SHARDS; i++)
        th_lock(&shards[i].lock);
}

static TH_TEXT void th_thaw(void)
{
    for (int i = TH_SHARDS - 1; i >= 0; i--)
        th_unlock(&shards[i].lock);
}

static TH_TEXT size_t th_blocks(range_t *out, size_t max)
{
    if (atomic_load_explicit(&blocks_lost, memory_order_relaxed))
        return SIZE_MAX;
    size_t n = 0;
    if (!max) {
        for (int i = 0; i < TH_SHARDS; i++)
            n += shards[i].t.n;
        return n;
    }
    for (int i = 0; i < TH_SHARDS && n < max; i++)
        n += blocktab_copy(&shards[i].t, out + n, max - n);
    return n;
}

/* fork: no shard may be held by a thread that does not exist in the child */
TH_TEXT void th_fork_prepare(void) { th_freeze(); }
TH_TEXT void th_fork_after(void) { th_thaw(); }

/* ------------------------------------------------------------ extents */

static th_spin_t ext_lock;   /* leaf but for region_lock; inside jemalloc's hooks */
static rangeset_t ext;       /* ext_lock */
static extent_wrap_t ext_wrap; /* th_arenas_init */

static TH_TEXT void ext_mapped(uintptr_t lo, uintptr_t hi)
{
    th_lock(&ext_lock);
    rangeset_add(&ext, lo, hi, th_map, th_unmap);
    th_unlock(&ext_lock);
}

static TH_TEXT void ext_unmapped(uintptr_t lo, uintptr_t hi)
{
    th_lock(&ext_lock);
    rangeset_del(&ext, lo, hi, th_map, th_unmap);
    th_unlock(&ext_lock);
}

static unsigned th_arena_ids[TH_ARENAS_MAX];
static unsigned th_narenas;

TH_TEXT unsigned th_arena(unsigned i) { return th_arena_ids[i % th_narenas]; }

/* Creates the arenas. Called once, by the initialising thread (trackheap/malloc.c). */
TH_TEXT bool th_arenas_init(void)
{
    if (!extent_wrap_init(&ext_wrap, ext_mapped, ext_unmapped))
        return false;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = ncpu < 1 ? 1 : ncpu > TH_ARENAS_MAX ? TH_ARENAS_MAX : (unsigned)ncpu;
    extent_hooks_t *hp = &ext_wrap.hooks;
    for (unsigned i = 0; i < want; i++) {
        size_t sz = sizeof th_arena_ids[i];
        if (mallctl("arenas.create", &th_arena_ids[i], &sz, &hp, sizeof hp) != 0)
            break;
        th_narenas = i + 1;
    }
    return th_narenas > 0;
}

/* ------------------------------------------------------------ the gc's table */

static TH_TEXT size_t th_owned(range_t *out, size_t max)
{
    size_t n = 0;
    th_lock(&region_lock);
    if (max)
        out[0] = (range_t){region_lo, region_bump};
    n++;
    th_unlock(&region_lock);
    th_lock(&ext_lock);
    n += rangeset_copy(&ext, n < max ? out + n : NULL, n < max ? max - n : 0);
    th_unlock(&ext_lock);
    return n;
}

/* the linker's bounds of the section (hidden: they are this library's own) */
extern const char __start_gort_trackheap_text[] __attribute__((visibility("hidden")));
extern const char __stop_gort_trackheap_text[] __attribute__((visibility("hidden")));

static gort_trackheap_api_t th_table = {
    .version = GORT_TRACKHEAP_VERSION,
    .freeze = th_freeze,
    .thaw = th_thaw,
    .blocks = th_blocks,
    .owned = th_owned,
};

TH_API const gort_trackheap_api_t *gort_trackheap_api(void)
{
    if (!th_ready())
        return NULL;
    th_table.text_lo = (uintptr_t)__start_gort_trackheap_text;
    th_table.text_hi = (uintptr_t)__stop_gort_trackheap_text;
    return &th_table;
}
