/* gc/addrset.h — two address containers shared by the runtime (gc/heapmap.c) and the
 * tracked-heap layer (trackheap/): a set of disjoint ranges (an arena's extents) and a
 * table of blocks (start -> usable size: registered objects).
 *
 * Header-only (static inline): the layer is a library of its own that must not depend
 * on libgort, and both may be linked statically into one program, where two copies of
 * one external symbol would clash. Neither container locks or allocates by itself: the
 * caller holds its lock and passes the page allocator (plain mmap in both users: this
 * memory holds the address of every range or block, so it must never be scanned as a
 * root or traced, and the allocator it comes from must tell the gc so).
 */
#ifndef GORT_GC_ADDRSET_H
#define GORT_GC_ADDRSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A half-open address range. */
typedef struct range {
    uintptr_t lo, hi;
} range_t;

typedef void *(*addrset_map_fn)(size_t bytes);       /* NULL on ENOMEM */
typedef void (*addrset_unmap_fn)(void *p, size_t bytes);

/* ------------------------------------------------------------ range set */

typedef struct rangeset {
    range_t *r;      /* sorted, disjoint, non-adjacent */
    size_t n, cap;
} rangeset_t;

static inline bool rangeset_reserve(rangeset_t *s, size_t want, addrset_map_fn map,
                                    addrset_unmap_fn unmap)
{
    if (want <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap * 2 : 256;
    while (cap < want)
        cap *= 2;
    range_t *n = map(cap * sizeof *n);
    if (!n)
        return false;
    if (s->r)
        memcpy(n, s->r, s->n * sizeof *n);
    range_t *old = s->r;
    size_t oldcap = s->cap;
    s->r = n;
    s->cap = cap;
    if (old)
        unmap(old, oldcap * sizeof *old);
    return true;
}

/* In r[lo, hi), sorted by lo: the index after the last range that starts at or below a
 * (lo itself when none does). The range that may hold a is the one before it. */
static inline size_t ranges_upper(const range_t *r, size_t lo, size_t hi, uintptr_t a)
{
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r[mid].lo <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index whose hi > a. */
static inline size_t rangeset_find(const rangeset_t *s, uintptr_t a)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->r[mid].hi <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Adds [a, b), merging with what it touches. False when no memory: not recorded. */
static inline bool rangeset_add(rangeset_t *s, uintptr_t a, uintptr_t b, addrset_map_fn map,
                                addrset_unmap_fn unmap)
{
    if (!rangeset_reserve(s, s->n + 1, map, unmap))
        return false;
    size_t i = rangeset_find(s, a > 0 ? a - 1 : a); /* may merge with a range ending at a */
    size_t j = i;
    while (j < s->n && s->r[j].lo <= b) {
        if (s->r[j].lo < a)
            a = s->r[j].lo;
        if (s->r[j].hi > b)
            b = s->r[j].hi;
        j++;
    }
    /* ranges [i, j) merge into [a, b) */
    if (j == i) {
        memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
        s->n++;
    } else if (j > i + 1) {
        memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof *s->r);
        s->n -= j - i - 1;
    }
    s->r[i] = (range_t){a, b};
    return true;
}

/* Removes [a, b). False when no memory for a split: the range stays recorded (callers
 * use the set to skip memory, so keeping too much is the safe failure). */
static inline bool rangeset_del(rangeset_t *s, uintptr_t a, uintptr_t b, addrset_map_fn map,
                                addrset_unmap_fn unmap)
{
    if (!rangeset_reserve(s, s->n + 1, map, unmap)) /* a split needs one more slot */
        return false;
    size_t i = rangeset_find(s, a);
    while (i < s->n && s->r[i].lo < b) {
        range_t r = s->r[i];
        if (r.lo < a && r.hi > b) { /* split */
            memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
            s->n++;
            s->r[i].hi = a;
            s->r[i + 1].lo = b;
            break;
        }
        if (r.lo < a) {
            s->r[i].hi = a;
            i++;
        } else if (r.hi > b) {
            s->r[i].lo = b;
            break;
        } else {
            memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof *s->r);
            s->n--;
        }
    }
    return true;
}

/* Copies the ranges into out (at most max); returns the count (may exceed max). */
static inline size_t rangeset_copy(const rangeset_t *s, range_t *out, size_t max)
{
    for (size_t i = 0; i < s->n && i < max; i++)
        out[i] = s->r[i];
    return s->n;
}

/* ------------------------------------------------------------ block table */

/* Open addressing, linear probing, backward-shift deletion; at most half full. */
typedef struct blocktab_slot {
    uintptr_t key;  /* block start; 0 = empty */
    size_t size;    /* usable size */
} blocktab_slot_t;

typedef struct blocktab {
    blocktab_slot_t *s;
    size_t cap;     /* power of two (0: nothing allocated yet) */
    size_t n;
} blocktab_t;

static inline size_t blocktab_hash(uintptr_t k, size_t mask)
{
    return (size_t)(((k >> 4) * 0x9e3779b97f4a7c15ull) >> 20) & mask;
}

static inline void blocktab_put(blocktab_t *t, uintptr_t k, size_t size)
{
    size_t mask = t->cap - 1;
    size_t i = blocktab_hash(k, mask);
    while (t->s[i].key && t->s[i].key != k)
        i = (i + 1) & mask;
    if (!t->s[i].key)
        t->n++;
    t->s[i] = (blocktab_slot_t){k, size};
}

static inline bool blocktab_grow(blocktab_t *t, size_t initial, addrset_map_fn map,
                                 addrset_unmap_fn unmap)
{
    size_t cap = t->cap ? t->cap * 2 : initial;
    blocktab_slot_t *n = map(cap * sizeof *n);
    if (!n)
        return false;
    blocktab_t old = *t;
    *t = (blocktab_t){n, cap, 0};
    for (size_t i = 0; i < old.cap; i++)
        if (old.s[i].key)
            blocktab_put(t, old.s[i].key, old.s[i].size);
    if (old.s)
        unmap(old.s, old.cap * sizeof *old.s);
    return true;
}

/* Inserts or updates k. False when the table could not grow (k is not recorded). */
static inline bool blocktab_add(blocktab_t *t, uintptr_t k, size_t size, size_t initial,
                                addrset_map_fn map, addrset_unmap_fn unmap)
{
    if (2 * (t->n + 1) > t->cap && !blocktab_grow(t, initial, map, unmap))
        return false;
    blocktab_put(t, k, size);
    return true;
}

/* Removes k; false when k was not recorded. */
static inline bool blocktab_del(blocktab_t *t, uintptr_t k)
{
    if (!t->cap)
        return false;
    size_t mask = t->cap - 1;
    size_t i = blocktab_hash(k, mask);
    while (t->s[i].key && t->s[i].key != k)
        i = (i + 1) & mask;
    if (!t->s[i].key)
        return false;
    /* backward shift keeps every probe chain unbroken */
    size_t j = i;
    for (;;) {
        t->s[i].key = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!t->s[j].key) {
                t->n--;
                return true;
            }
            size_t h = blocktab_hash(t->s[j].key, mask);
            /* can s[j] move to i? only if its home is not in (i, j] cyclically */
            if (i <= j ? (h <= i || h > j) : (h <= i && h > j))
                break;
        }
        t->s[i] = t->s[j];
        i = j;
    }
}

/* Copies the blocks as ranges into out (at most max); returns how many it copied. */
static inline size_t blocktab_copy(const blocktab_t *t, range_t *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < t->cap && k < max; i++)
        if (t->s[i].key)
            out[k++] = (range_t){t->s[i].key, t->s[i].key + t->s[i].size};
    return k;
}

#endif
