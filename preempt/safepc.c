/* preempt/safepc.c — where a task may be stopped asynchronously.
 *
 * A PC is safe when it lies in the executable code of a module that is not the runtime
 * itself, libc, ld.so, libpthread, jemalloc, libunwind, libgcc_s, the vDSO or a
 * sanitizer runtime: code there may hold locks, half-updated allocator state or the
 * runtime's own invariants (g_yield between setting m->defer_* and the switch, say).
 * Anything not in a known module (JIT code) is unsafe too. An unsafe PC falls back to
 * cooperative preemption.
 *
 * The table is a sorted array of [lo, hi) executable ranges, each safe or not, built
 * with dl_iterate_phdr at gort_run and rebuilt by sysmon when the loader's add/sub
 * counters move (a library was dlopen'ed or closed). The handler reads it lock-free:
 * a new table is published with a release store, and old tables are retired (freed at
 * preempt_stop, when no handler can run on them any more).
 *
 * The runtime's own range. When libgort is a shared object, it is the module holding
 * gort_run: exact. When it is linked statically it is part of the main program, and
 * the build makes it one contiguous range with exact bounds: every runtime object is
 * compiled to keep all its code in .text (-fno-reorder-functions
 * -fno-reorder-blocks-and-partition: no .text.unlikely/.hot/.startup pieces that the
 * final link would interleave with the program's) and linked with `ld -r` into one
 * object between core/arch/text_begin.S and text_end.S, so
 * [gort_text_begin_, gort_text_end_) is exactly the runtime's code.
 * Rejected: guessing the runtime from the executable's symbol table (runs of hidden or
 * local function symbols around the public gort_* ones): it took a program's static
 * functions laid out next to the runtime for the runtime's, and they were never
 * preempted asynchronously (measured: a one-file program spinning in a static
 * function); it also needed a symbol table, which stripped programs lack.
 */
#include <elf.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

#include "gc/gc.h"
#include "preempt/preempt.h"

/* core/arch/text_begin.S, text_end.S: the bounds of the runtime's code. */
extern const char gort_text_begin_[], gort_text_end_[];
#include "rt.h"
#include "sched_impl.h"

typedef struct pc_range {
    uintptr_t lo, hi; /* [lo, hi) */
    bool safe;
} pc_range_t;

typedef struct pc_table {
    size_t n;               /* ranges, sorted by lo, disjoint */
    pc_range_t *r;
    unsigned long long adds, subs; /* loader counters when built */
    struct pc_table *retired; /* older tables; freed at safepc_free */
} pc_table_t;

/* Written by sysmon / gort_run thread (release), read by the signal handler (acquire). */
static pc_table_t *_Atomic safepc_table;

static const char *const unsafe_modules[] = {
    "libc.so",     "ld-linux",   "ld.so",     "libpthread", "libjemalloc", "libunwind",
    "libgcc_s",    "linux-vdso", "libasan",   "libubsan",   "libtsan",     "liblsan",
    "libdl.so",    "librt.so",   "libgort_trackheap", NULL,
};

/* growable range list used while building */
struct builder {
    pc_range_t *r;
    size_t n, cap;
    int err;
    uintptr_t gort_pc;      /* address of gort_run: finds the runtime's module */
    bool main_is_runtime;   /* the runtime is linked into the main program */
    unsigned long long adds, subs;
};

static void range_add(struct builder *b, uintptr_t lo, uintptr_t hi, bool safe)
{
    if (b->err || lo >= hi)
        return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        pc_range_t *n = rt_alloc(cap * sizeof *n);
        if (!n) {
            b->err = -ENOMEM;
            return;
        }
        if (b->r)
            memcpy(n, b->r, b->n * sizeof *n);
        rt_free(b->r);
        b->r = n;
        b->cap = cap;
    }
    b->r[b->n++] = (pc_range_t){lo, hi, safe};
}

static bool module_is_unsafe(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    for (int i = 0; unsafe_modules[i]; i++)
        if (strncmp(base, unsafe_modules[i], strlen(unsafe_modules[i])) == 0)
            return true;
    return false;
}

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct builder *b = arg;
    b->adds = info->dlpi_adds;
    b->subs = info->dlpi_subs;
    bool is_main = !info->dlpi_name || !info->dlpi_name[0];
    bool has_gort = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (b->gort_pc >= lo && b->gort_pc < lo + ph->p_memsz)
            has_gort = true;
    }
    bool safe = !has_gort && !(is_main ? false : module_is_unsafe(info->dlpi_name));
    if (has_gort && is_main) {
        b->main_is_runtime = true; /* the runtime's own range is cut out below */
        safe = true;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        range_add(b, lo, lo + ph->p_memsz, safe);
    }
    return 0;
}

static int uptr_cmp(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static int range_cmp(const void *a, const void *b)
{
    const pc_range_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Turns overlapping entries into disjoint ones: an unsafe range wins over the safe
 * module range it lies in (the runtime inside the main program). */
static int ranges_normalize(struct builder *b, pc_table_t *t)
{
    /* Cut points: every lo and hi; each elementary piece is unsafe if any range
     * covering it is unsafe. n is small (tens to a few hundred). */
    size_t npts = b->n * 2;
    uintptr_t *pts = rt_alloc(npts * sizeof *pts + 1);
    if (!pts)
        return -ENOMEM;
    for (size_t i = 0; i < b->n; i++) {
        pts[2 * i] = b->r[i].lo;
        pts[2 * i + 1] = b->r[i].hi;
    }
    qsort(pts, npts, sizeof *pts, uptr_cmp);
    pc_range_t *out = rt_alloc(npts * sizeof *out + 1);
    if (!out) {
        rt_free(pts);
        return -ENOMEM;
    }
    qsort(b->r, b->n, sizeof *b->r, range_cmp);
    size_t n = 0;
    for (size_t i = 0; i + 1 < npts; i++) {
        uintptr_t lo = pts[i], hi = pts[i + 1];
        if (lo == hi)
            continue;
        int cover = 0; /* 0 none, 1 safe, 2 unsafe */
        for (size_t k = 0; k < b->n && b->r[k].lo <= lo; k++)
            if (b->r[k].hi >= hi && b->r[k].lo <= lo)
                cover = b->r[k].safe ? (cover ? cover : 1) : 2;
        if (!cover)
            continue;
        bool safe = cover == 1;
        if (n && out[n - 1].hi == lo && out[n - 1].safe == safe)
            out[n - 1].hi = hi;
        else
            out[n++] = (pc_range_t){lo, hi, safe};
    }
    rt_free(pts);
    t->r = out;
    t->n = n;
    return 0;
}

static void builder_free(struct builder *b) { rt_free(b->r); }

/* Builds a new table and publishes it. Context: gort_run thread or sysmon. */
int safepc_build(void)
{
    struct builder b = {.gort_pc = (uintptr_t)&gort_run};
    dl_iterate_phdr(phdr_cb, &b);
    if (b.main_is_runtime)
        range_add(&b, (uintptr_t)gort_text_begin_, (uintptr_t)gort_text_end_, false);
    /* the tracked-heap layer holds its registry's locks in its code: a task stopped
     * there would stop a gc cycle (gc/tracked.c); linked statically it is part of the
     * program's range, so its bounds come from the layer itself */
    uintptr_t th_lo, th_hi;
    if (heap_tracked_text(&th_lo, &th_hi))
        range_add(&b, th_lo, th_hi, false);
    if (b.err) {
        builder_free(&b);
        return b.err;
    }
    pc_table_t *t = rt_alloc(sizeof *t);
    if (!t) {
        builder_free(&b);
        return -ENOMEM;
    }
    int rc = ranges_normalize(&b, t);
    builder_free(&b);
    if (rc) {
        rt_free(t);
        return rc;
    }
    t->adds = b.adds;
    t->subs = b.subs;
    /* relaxed: only sysmon / the gort_run thread write the pointer */
    t->retired = atomic_load_explicit(&safepc_table, memory_order_relaxed);
    /* release: the handler's acquire load sees the filled table */
    atomic_store_explicit(&safepc_table, t, memory_order_release);
    return 0;
}

static int counters_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *c = arg;
    c[0] = info->dlpi_adds;
    c[1] = info->dlpi_subs;
    return 1; /* the counters are the same in every entry: stop at the first */
}

void safepc_refresh(void)
{
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_relaxed);
    unsigned long long c[2] = {0, 0};
    dl_iterate_phdr(counters_cb, c);
    if (!t || c[0] != t->adds || c[1] != t->subs)
        safepc_build();
}

/* No handler may run on the tables any more (every M's timer is deleted; sysmon has
 * stopped), except a stray signal, which finds NULL and treats the PC as unsafe. */
void safepc_free(void)
{
    pc_table_t *t = atomic_exchange_explicit(&safepc_table, NULL, memory_order_acq_rel);
    while (t) {
        pc_table_t *next = t->retired;
        rt_free(t->r);
        rt_free(t);
        t = next;
    }
}

/* async-signal-safe: a binary search over an immutable table */
bool safepc_is_safe(uintptr_t pc)
{
    /* acquire: pairs with the release store in safepc_build */
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_acquire);
    if (!t)
        return false;
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pc < t->r[mid].lo)
            hi = mid;
        else if (pc >= t->r[mid].hi)
            lo = mid + 1;
        else
            return t->r[mid].safe;
    }
    return false;
}

/* The runtime's own code, for the stack mover (its frames are not user frames to
 * report, and a morestack entry from them is a runtime call's entry check). Both the
 * static library and libgort.so are built from the one gort_all.o (CMakeLists.txt), so
 * [gort_text_begin_, gort_text_end_) is exact in either link; the table above is not
 * needed (it may not exist: preemption off). */
bool safepc_in_runtime(uintptr_t pc)
{
    return pc >= (uintptr_t)gort_text_begin_ && pc < (uintptr_t)gort_text_end_;
}

/* Prints the table (debugging; any thread, not the handler). */
void safepc_dump(void)
{
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_acquire);
    for (size_t i = 0; t && i < t->n; i++)
        dbg_print("safepc: %lx-%lx %s\n", (unsigned long)t->r[i].lo,
                  (unsigned long)t->r[i].hi, t->r[i].safe ? "safe" : "unsafe");
}
