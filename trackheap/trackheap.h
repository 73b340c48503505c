/* trackheap/trackheap.h — what libgort_trackheap offers the runtime's gc (gc/tracked.c).
 *
 * The layer is a library of its own (it must run from process start, before and
 * without libgort), so the runtime finds it at gort_run: a weak reference to
 * gort_trackheap_api, else dlsym (an LD_PRELOADed layer under a statically linked
 * libgort). The table is versioned; a runtime that does not know the version runs in
 * the default mode and says why. Not installed: an internal contract between the two
 * libraries of one gort build.
 */
#ifndef GORT_TRACKHEAP_H
#define GORT_TRACKHEAP_H

#include <stddef.h>
#include <stdint.h>

#include "gc/addrset.h"

enum { GORT_TRACKHEAP_VERSION = 1 };

typedef struct gort_trackheap_api {
    uint32_t version;   /* GORT_TRACKHEAP_VERSION */
    /* Takes every registry shard's lock: until thaw, malloc/free/realloc in any thread
     * wait before touching the registry (malloc after its block was carved, free before
     * it is given back). The caller must not call malloc in between. */
    void (*freeze)(void);
    void (*thaw)(void);
    /* Frozen: copies the live blocks [start, start + usable size) into out, at most
     * max; max 0 returns their count. SIZE_MAX: a block was lost (no memory for the
     * registry), the copy is incomplete. */
    size_t (*blocks)(range_t *out, size_t max);
    /* Memory the layer owns: its arena's extents (blocks and jemalloc's metadata for
     * them) and its own maps (registry, per-thread malloc stacks). Never a root. Returns
     * the count (may exceed max). Any time. */
    size_t (*owned)(range_t *out, size_t max);
    /* The layer's code: a task stopped in it would hold a registry lock. */
    uintptr_t text_lo, text_hi;
} gort_trackheap_api_t;

/* Exported by libgort_trackheap (default visibility); NULL if it failed to set up. */
const gort_trackheap_api_t *gort_trackheap_api(void);

#endif
