/* gc/tracked.c — the gc's side of the tracked-heap mode (libgort_trackheap).
 *
 * When the program links the layer (or preloads it), its malloc'd blocks are recorded
 * and live in an arena of their own. A cycle then treats them as runtime objects are
 * treated: the arena's extents are not roots, and a word pointing anywhere inside a
 * block marks it and its words are scanned. So a channel kept only in a malloc'd struct
 * that only a leaked task references is found.
 * The mode: the layer present turns it on (linking it is the opt-in);
 * GORT_DEBUG=trackheap=0 turns it off with the layer present (the heap is a root again,
 * for comparing verdicts); trackheap=1 without the layer is an error: one line on
 * stderr, and the detector's calls return -ENOTSUP (an answer in the default mode would
 * look like a tracked-heap answer).
 * Rejected: the layer registering itself with libgort from its constructor: it runs
 * before libgort's, and a program may load it without libgort at all.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/sched_impl.h"
#include "gc/gc.h"
#include "trackheap/trackheap.h"

/* Resolved at load time when the layer is linked (shared, or static into the program). */
extern const gort_trackheap_api_t *gort_trackheap_api(void) __attribute__((weak));

static const gort_trackheap_api_t *_Atomic th_api_cache;
static _Atomic int th_looked; /* 0 not yet, 1 looked */
static int th_status;         /* this run's mode: 1, 0 or -ENOTSUP; gort_run sets it */

static const gort_trackheap_api_t *th_find(void)
{
    /* acquire: pairs with the release below (any thread may look first) */
    if (atomic_load_explicit(&th_looked, memory_order_acquire))
        return atomic_load_explicit(&th_api_cache, memory_order_relaxed);
    const gort_trackheap_api_t *(*get)(void) = gort_trackheap_api;
    if (!get) /* preloaded under a static libgort: only the dynamic table knows it */
        get = (const gort_trackheap_api_t *(*)(void))dlsym(RTLD_DEFAULT, "gort_trackheap_api");
    const gort_trackheap_api_t *api = get ? get() : NULL;
    if (api && api->version != GORT_TRACKHEAP_VERSION) {
        dbg_print("gort: libgort_trackheap is of another gort build (interface %u, want "
                  "%u): the program's heap stays a root\n",
                  api->version, (unsigned)GORT_TRACKHEAP_VERSION);
        api = NULL;
    }
    atomic_store_explicit(&th_api_cache, api, memory_order_relaxed);
    atomic_store_explicit(&th_looked, 1, memory_order_release);
    return api;
}

void heap_tracked_start(void)
{
    const gort_trackheap_api_t *api = th_find();
    if (rt_debug.trackheap == 0)
        th_status = 0;
    else if (api)
        th_status = 1;
    else if (rt_debug.trackheap > 0)
        th_status = -ENOTSUP;
    else
        th_status = 0;
    static bool said;
    if (th_status == -ENOTSUP && !said) {
        said = true;
        dbg_print("gort: GORT_DEBUG=trackheap=1 needs libgort_trackheap: link it first "
                  "(-lgort_trackheap -lgort) or LD_PRELOAD=libgort_trackheap.so; the leak "
                  "detector returns -ENOTSUP\n");
    }
}

int heap_tracked_status(void) { return th_status; }

static const gort_trackheap_api_t *th_on(void)
{
    return th_status == 1 ? atomic_load_explicit(&th_api_cache, memory_order_relaxed) : NULL;
}

void heap_tracked_freeze(void)
{
    const gort_trackheap_api_t *api = th_on();
    if (api)
        api->freeze();
}

void heap_tracked_thaw(void)
{
    const gort_trackheap_api_t *api = th_on();
    if (api)
        api->thaw();
}

size_t heap_tracked_blocks(range_t *out, size_t max)
{
    const gort_trackheap_api_t *api = th_on();
    return api ? api->blocks(out, max) : 0;
}

size_t heap_tracked_owned(range_t *out, size_t max)
{
    const gort_trackheap_api_t *api = th_on();
    return api ? api->owned(out, max) : 0;
}

bool heap_tracked_text(uintptr_t *lo, uintptr_t *hi)
{
    const gort_trackheap_api_t *api = th_find();
    if (!api || api->text_hi <= api->text_lo)
        return false;
    *lo = api->text_lo;
    *hi = api->text_hi;
    return true;
}

int gort_trackheap_status(void)
{
    if (sched.allp)
        return th_status;
    return th_find() ? 1 : 0; /* outside a run: is the layer linked */
}
