/* core/netpoll.h — the I/O poller (core/netpoll.c): what the scheduler calls to wait
 * for readiness and wake I/O-blocked tasks, and what core/io.c uses to park a task
 * until its fd is ready.
 *
 * One epoll instance per runtime. Each fd number that a task ever waited on has a poll
 * descriptor (polldesc_t), found through a table indexed by fd that readers use
 * without a lock. A task parks on its descriptor with g_park(&pd->lock, WAIT_IO, pd)
 * after queuing a wait record (io_waiter_t, on its own stack, g->waiting points at
 * it); the poller, or the wait's timer, dequeues it under pd->lock and calls g_ready.
 *
 * Lock: pd->lock (rank 60, pollfd.lock) protects a descriptor's waiter list and the
 * stores to its edge counters. The table lock (pollfd.tab) is a leaf: it is held only
 * around rt_alloc and a fcntl.
 *
 * For a stack mover (gc shrink of a parked task): a task parked with WAIT_IO has
 * g->waiting pointing at exactly one io_waiter_t on its stack, queued on w->pd (hold
 * w->pd->lock, or stop the world, while moving it); the runtime's pointers into the
 * stack are its address in the neighbour's `next` or pd->waiters (through w->pprev)
 * and in the next record's pprev (netpoll_waiter_relocate fixes both), and, for
 * gort_wait_fd with a timeout, the rtimer of the netpoll_wait frame, which sits in a
 * P's timer heap (its arg points at the record).
 */
#ifndef GORT_CORE_NETPOLL_H
#define GORT_CORE_NETPOLL_H

#include <stdbool.h>
#include <stdint.h>

#include "rt.h"

/* ------------------------------------------------------- for the scheduler */

/* Creates the epoll instance and the eventfd that netpoll_break writes. Called once at
 * gort_run start (any context, no task running). 0 or -errno (-EMFILE, -ENOMEM). */
int netpoll_init(void);
/* Frees every descriptor and table, closes the epoll fd and the eventfd, and resets the
 * counters, so that the next gort_run starts clean. Teardown only: no task runs, no M
 * polls. Tasks still parked on I/O are discarded with their stacks; their records are
 * not touched. Safe without a prior netpoll_init. */
void netpoll_destroy(void);
/* Waits in epoll_wait up to timeout_ns (< 0: forever; 0: do not block; rounded up to
 * whole milliseconds) and readies every task whose fd became ready (g_ready: on a
 * thread without a P they go to the global runq). Returns the number of tasks readied;
 * a wake-up by netpoll_break counts 0. sysstack; the calling M may hold no P; several
 * Ms may poll at once (each event goes to one of them). Returns 0 at once when the
 * poller is not initialised. */
int netpoll_poll(int64_t timeout_ns);
/* Makes a netpoll_poll that blocks (now or next) return. Any thread, any context,
 * async-signal-safe; a storm of breaks before the poller wakes costs one write. */
void netpoll_break(void);
/* Tasks parked on I/O now (queued wait records). The scheduler polls only when this
 * is > 0 or a timer is due, and a runtime whose every task is blocked is deadlocked
 * only if this is 0. Any context, lock-free. */
int netpoll_waiters(void);

/* ------------------------------------------------------------ for core/io.c */

enum {
    IO_READ = 1,  /* waits for readability (EPOLLIN, RDHUP, HUP, ERR) */
    IO_WRITE = 2, /* waits for writability (EPOLLOUT, HUP, ERR) */
};

/* How core/io.c reads and writes an fd: a hint about the file that uses the number now,
 * never trusted for safety (every path copes with any value; see core/io.c). */
enum {
    PD_KIND_SOCKET = 0, /* try recv/send with MSG_DONTWAIT (the default guess) */
    PD_KIND_OTHER = 1,  /* not a socket: set O_NONBLOCK, then read/write */
};

typedef struct io_waiter io_waiter_t;

typedef struct polldesc {
    rtlock_t lock;            /* pollfd.lock: waiters, and the stores to rseq/wseq */
    int fd;                   /* the fd number it serves; constant */
    _Atomic uint32_t rseq;    /* read edges seen; incremented under lock (release);
                                 tasks snapshot it lock-free before an attempt */
    _Atomic uint32_t wseq;    /* write edges seen; as rseq */
    _Atomic uint8_t kind;     /* PD_KIND_*; a hint, relaxed loads and stores by anyone */
    io_waiter_t *waiters;     /* parked tasks (records on their stacks); lock */
} polldesc_t;

/* One parked task. Lives on the task's stack while it waits; g->waiting points at it. */
struct io_waiter {
    io_waiter_t *next;        /* pd->waiters list; pd->lock (after a dequeue: the
                                 waker's private list of tasks to ready) */
    io_waiter_t **pprev;      /* what points at this record; NULL = not queued; lock */
    g_t *g;                   /* the parked task; set before queuing, then constant */
    polldesc_t *pd;           /* the descriptor it waits on; constant */
    uint32_t mode;            /* IO_READ | IO_WRITE it waits for; constant */
    int result;               /* 0 waiting, 1 an edge woke it, -ETIMEDOUT; pd->lock */
};

/* A snapshot of a descriptor's edge counters, taken before an I/O attempt: if an edge
 * arrives between the attempt and the park, the counters differ and the task retries
 * instead of parking (the edge is not lost). */
typedef struct io_seq {
    uint32_t r;
    uint32_t w;
} io_seq_t;

static inline io_seq_t polldesc_seq(polldesc_t *pd)
{
    /* acquire: the I/O attempt that follows cannot be hoisted above the snapshot */
    io_seq_t s = {atomic_load_explicit(&pd->rseq, memory_order_acquire),
                  atomic_load_explicit(&pd->wseq, memory_order_acquire)};
    return s;
}

/* The descriptor of fd, created on first use (fd must be open then). 0 and *out, or
 * -EBADF (fd < 0 or not open), -ENOMEM, -ENXIO (no runtime: poller not initialised).
 * Lock-free once the descriptor exists. Task or sysstack context; never switches. */
int polldesc_get(int fd, polldesc_t **out);
/* The descriptor of fd if it exists, else NULL; never creates. Lock-free, any context. */
polldesc_t *polldesc_find(int fd);

/* Task context; switches. Parks the calling task until an edge for `mode` arrives on
 * pd after the snapshot `seq` (returns 0 at once if one already did), or until
 * gort_now() >= deadline (deadline < 0: none) -> -ETIMEDOUT. Registers the fd with
 * epoll on the way (edge-triggered, in and out; a number whose file changed since is
 * registered again): -errno if that fails (-EBADF: closed; -EPERM: a file epoll cannot
 * watch). A return of 0 only says "try again": the caller retries its I/O. */
int netpoll_wait(polldesc_t *pd, uint32_t mode, io_seq_t seq, int64_t deadline);

/* For a stack mover: the record that was at `old` has been copied to `w` (the task is
 * parked, so nothing changed it). Repoints its neighbours at the new place. Caller holds
 * w->pd->lock or the world is stopped. g->waiting and the timer (see the file head) are
 * the mover's. Any context; never switches. */
void netpoll_waiter_relocate(io_waiter_t *old, io_waiter_t *w);

#endif
