/* stackmap/registry.c — the frame-map registry and the per-return-address cache.
 *
 * Owns: the list of registered gort_framemap_t records, the table of functions
 * (start address -> funcinfo_t) and the cache (return address -> funcinfo_t).
 * Invariants:
 *   1. A framemap record is pushed on `pending` exactly once (its state 0 -> 1 CAS
 *      picks the one thread that fills it) and moved to its function's list by the
 *      first stack move that follows; it is never freed (it is a static of user code).
 *   2. A funcinfo_t, once in a table, never moves or dies: the cache may hand it out
 *      lock-free; its maps list only grows (push with a release store).
 *   3. Table slots are written once: the value first, then the key with a release
 *      store; readers load the key with acquire. A grown table replaces the old one
 *      (release store of the pointer); old tables are kept (readers may still be in
 *      them) and are tiny next to the new one.
 * Locks: framemap.lock (rank 100) around insertion and the pending resolution; lookups
 * take no lock. libunwind (unw_get_proc_info_by_ip) runs only on a cache miss, once
 * per return address: never per frame per move (it costs microseconds a call here).
 * Memory: malloc'd, process lifetime — maps outlive a gort_run (they are registered
 * once per process), so they are not runtime memory counted by rt_alloc.
 * Rejected: a lookup per frame through libunwind (3–14 us a frame measured); keying maps
 * by a label address inside the macro (&&label): the registration call's own return
 * address names the same physical function with no extra code at the site.
 */
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"
#include "sched_impl.h"
#include "stackmap.h"

typedef struct ht_slot {
    _Atomic uintptr_t key; /* 0 = empty; written once, release, under framemap.lock */
    funcinfo_t *val;       /* written before key */
} ht_slot_t;

typedef struct htab {
    size_t mask;           /* capacity - 1 (power of two); immutable */
    size_t count;          /* framemap.lock */
    struct htab *retired;  /* older tables, kept for readers; framemap.lock */
    ht_slot_t slots[];
} htab_t;

static rtlock_t framemap_lock;                 /* framemap.lock, rank 100 */
static htab_t *_Atomic pc_table;               /* return address -> funcinfo */
static htab_t *_Atomic func_table;             /* function start -> funcinfo */
static gort_framemap_t *_Atomic pending;       /* registered, not yet resolved */
static funcinfo_t unknown_func;                /* code without unwind info */

static inline size_t ht_hash(uintptr_t k) { return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 17); }

static funcinfo_t *ht_get(htab_t *t, uintptr_t key)
{
    if (!t)
        return NULL;
    for (size_t i = ht_hash(key) & t->mask;; i = (i + 1) & t->mask) {
        /* acquire: pairs with the release in ht_put, so val is seen filled */
        uintptr_t k = atomic_load_explicit(&t->slots[i].key, memory_order_acquire);
        if (k == key)
            return t->slots[i].val;
        if (k == 0)
            return NULL;
    }
}

static htab_t *ht_new(size_t cap)
{
    htab_t *t = calloc(1, sizeof *t + cap * sizeof(ht_slot_t));
    if (t)
        t->mask = cap - 1;
    return t;
}

static void ht_put_raw(htab_t *t, uintptr_t key, funcinfo_t *val)
{
    size_t i = ht_hash(key) & t->mask;
    while (atomic_load_explicit(&t->slots[i].key, memory_order_relaxed))
        i = (i + 1) & t->mask;
    t->slots[i].val = val;
    /* release: publishes val to lock-free readers (ht_get's acquire) */
    atomic_store_explicit(&t->slots[i].key, key, memory_order_release);
    t->count++;
}

/* framemap.lock held. False on no memory (the entry is then simply not cached). */
static bool ht_put_locked(htab_t *_Atomic *tp, uintptr_t key, funcinfo_t *val)
{
    htab_t *t = atomic_load_explicit(tp, memory_order_relaxed);
    if (!t || (t->count + 1) * 2 > t->mask + 1) {
        size_t cap = t ? (t->mask + 1) * 2 : 1024;
        htab_t *n = ht_new(cap);
        if (!n)
            return false;
        if (t) {
            for (size_t i = 0; i <= t->mask; i++) {
                uintptr_t k = atomic_load_explicit(&t->slots[i].key, memory_order_relaxed);
                if (k)
                    ht_put_raw(n, k, t->slots[i].val);
            }
            n->retired = t;
        }
        /* release: readers that load the new table see its slots filled */
        atomic_store_explicit(tp, n, memory_order_release);
        t = n;
    }
    ht_put_raw(t, key, val);
    return true;
}

/* The start of the function containing code address pc, 0 if unknown. */
static uintptr_t proc_start(uintptr_t pc)
{
    unw_proc_info_t pi;
    memset(&pi, 0, sizeof pi);
    if (unw_get_proc_info_by_ip(unw_local_addr_space, (unw_word_t)pc, &pi, NULL) < 0)
        return 0;
    return (uintptr_t)pi.start_ip;
}

/* framemap.lock held. */
static funcinfo_t *func_get_locked(uintptr_t start)
{
    if (!start)
        return &unknown_func;
    funcinfo_t *fi = ht_get(atomic_load_explicit(&func_table, memory_order_relaxed), start);
    if (fi)
        return fi;
    fi = calloc(1, sizeof *fi);
    if (!fi)
        return &unknown_func;
    fi->start = start;
    if (!ht_put_locked(&func_table, start, fi)) {
        free(fi);
        return &unknown_func;
    }
    return fi;
}

/* Moves every pending record to its function's list. framemap.lock held. */
static void pending_resolve_locked(void)
{
    /* acquire: pairs with the release CAS in gort_framemap_register (record filled) */
    gort_framemap_t *m = atomic_exchange_explicit(&pending, NULL, memory_order_acquire);
    while (m) {
        gort_framemap_t *next = m->next;
        /* the pc is the return address of the registration call: inside the function */
        funcinfo_t *fi = func_get_locked(proc_start((uintptr_t)m->pc - 1));
        if (fi != &unknown_func) {
            m->fnext = atomic_load_explicit(&fi->maps, memory_order_relaxed);
            /* release: lock-free walkers see the record's fields */
            atomic_store_explicit(&fi->maps, m, memory_order_release);
        }
        m = next;
    }
}

bool framemap_has_pending(void)
{
    return atomic_load_explicit(&pending, memory_order_relaxed) != NULL;
}

/* Context: sysstack. The function holding return address pc (never NULL). */
funcinfo_t *framemap_lookup_pc(uintptr_t pc)
{
    if (unlikely(framemap_has_pending())) {
        rtlock_acquire(&framemap_lock);
        pending_resolve_locked();
        rtlock_release(&framemap_lock);
    }
    funcinfo_t *fi = ht_get(atomic_load_explicit(&pc_table, memory_order_acquire), pc);
    if (likely(fi != NULL))
        return fi;
    rtlock_acquire(&framemap_lock);
    fi = ht_get(atomic_load_explicit(&pc_table, memory_order_relaxed), pc);
    if (!fi) {
        /* a return address follows its call: pc - 1 is inside the caller even when the
         * call is the last instruction of a noreturn function */
        fi = func_get_locked(proc_start(pc - 1));
        ht_put_locked(&pc_table, pc, fi);
    }
    rtlock_release(&framemap_lock);
    return fi;
}

const char *framemap_func_name(uintptr_t pc, char *buf, size_t len, uintptr_t *off)
{
    *off = 0;
    return spawn_site_str((void *)pc, buf, len);
}

/* Task stack, first run of a GORT_FRAME / GORT_NOPTR site: a CAS, a few stores and a
 * lock-free push. No lock, no allocation, no libunwind (resolved at the next move). */
void gort_framemap_register(gort_framemap_t *m, int kind, const void *frame,
                            const void *const *addrs, const uint32_t *sizes, unsigned n)
{
    int zero = 0;
    /* acquire/relaxed: only picks the filler; the record is published below */
    if (!__atomic_compare_exchange_n(&m->state, &zero, 1, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return; /* another task fills it; until then the conservative layer covers */
    if (n > GORT_FRAME_MAX)
        n = GORT_FRAME_MAX;
    uintptr_t cfa = (uintptr_t)frame + 16; /* rbp + 16: saved rbp and return address */
    for (unsigned i = 0; i < n; i++) {
        m->off[i] = (int32_t)((intptr_t)addrs[i] - (intptr_t)cfa);
        m->size[i] = sizes[i];
    }
    m->kind = kind;
    m->n = n;
    m->pc = __builtin_return_address(0);
    gort_framemap_t *head = atomic_load_explicit(&pending, memory_order_relaxed);
    do
        m->next = head;
    /* release: the resolver's acquire exchange sees the filled record */
    while (!atomic_compare_exchange_weak_explicit(&pending, &head, m, memory_order_release,
                                                  memory_order_relaxed));
    __atomic_store_n(&m->state, 2, __ATOMIC_RELEASE);
}
