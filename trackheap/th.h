/* trackheap/th.h — what the files of libgort_trackheap share. trackheap/README.md
 * explains the design. */
#ifndef GORT_TRACKHEAP_TH_H
#define GORT_TRACKHEAP_TH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "trackheap/trackheap.h"

/* Every function of the layer lives here, so the runtime knows its bounds (a task must
 * never be stopped asynchronously inside: it may hold a registry shard lock). */
#define TH_TEXT __attribute__((section("gort_trackheap_text")))
#define TH_API __attribute__((visibility("default"))) TH_TEXT

enum { TH_SHARD_BITS = 6, TH_SHARDS = 1 << TH_SHARD_BITS, TH_ARENAS_MAX = 16 };

typedef struct th_spin {
    atomic_flag f;
} th_spin_t;
void th_lock(th_spin_t *s);
void th_unlock(th_spin_t *s);

/* The layer's own memory (never a root, never a block): power-of-two chunks of one
 * reservation. th_region_init once, at initialisation. */
bool th_region_init(void);
void *th_map(size_t bytes);
void th_unmap(void *p, size_t bytes);

/* The registry: a block is added after jemalloc carved it and deleted before it is
 * given back; both wait while the gc has it frozen. th_block_del: false when p was
 * not recorded. */
void th_block_add(void *p, size_t size);
bool th_block_del(void *p);
void th_fork_prepare(void);
void th_fork_after(void);

/* The tracked arenas: created once by th_arenas_init; th_arena(i): the i-th (mod their
 * count), the jemalloc arena index for MALLOCX_ARENA. */
bool th_arenas_init(void);
unsigned th_arena(unsigned i);

/* True once the layer is set up (trackheap/malloc.c). */
bool th_ready(void);

#endif
