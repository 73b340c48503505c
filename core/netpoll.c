/* core/netpoll.c — the I/O poller: epoll, per-fd poll descriptors, parking tasks until
 * their fd is ready. The model is Go's runtime/netpoll.go + netpoll_epoll.go.
 *
 * One epoll instance per runtime, plus an eventfd (level-triggered) that
 * netpoll_break writes to interrupt a blocked epoll_wait. A file is registered
 * edge-triggered for in and out at once (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET), with
 * its descriptor's address as the event's data, the first time a task has to wait on
 * it. Descriptors are indexed by fd number and live until netpoll_destroy.
 *
 * The wait protocol (a task T reading; writing is the same with wseq):
 *   T: s = pd->rseq (snapshot); read() -> EAGAIN; register; lock pd;
 *      if pd->rseq != s: unlock and retry (an edge came after the snapshot);
 *      else queue a record and g_park(&pd->lock) — the lock is released after the
 *      switch, so a waker that takes it sees T fully parked.
 *   poller: lock pd; rseq++; dequeue every record waiting for reads; unlock;
 *      g_ready each one.
 * Invariants:
 *  1. A record is queued on pd->waiters iff its pprev != NULL; only a holder of
 *     pd->lock queues or dequeues it, and whoever dequeues it (poller or timer) is
 *     the one that readies its task, exactly once.
 *  2. rseq/wseq only grow, and only under pd->lock; a task that saw EAGAIN after its
 *     snapshot parks only if the counter still equals the snapshot under the lock.
 *     Since epoll reports an edge after the data arrived, either the attempt saw the
 *     data or the edge's increment comes after the snapshot: no edge is lost.
 *  3. np.waiters == the number of queued records (changed under their pd->lock).
 *
 * Rejected:
 *  - Go's per-direction slot holding one g (rg/wg) and a "ready" flag: Go can because
 *    its fdMutex lets one reader and one writer at a time reach the poller; gort's
 *    users may have several tasks accept on one listener or wait on one fd. A list of
 *    records, all woken per edge, plus edge counters instead of flags, serves any
 *    number of waiters, and a task woken by an edge does not find that same edge
 *    pending again on its next wait (a flag would cost it a useless retry).
 *  - Registering once per descriptor and trusting it: gort does not see close(2), and
 *    epoll drops a file's registration when it is closed, so a number reused by a new
 *    file would never report. Every wait re-adds (EPOLL_CTL_ADD; EEXIST = still
 *    registered): one syscall per park, none on the fast path.
 *  - Readying tasks under pd->lock: the wakers dequeue under the lock and call g_ready
 *    after releasing it, as channels do, to keep the lock's hold time short.
 *  - A table that is reallocated and freed on growth: readers hold no lock, so an old
 *    table is kept (chained from the new one) until netpoll_destroy; the sizes double,
 *    so the old ones cost less than the current one.
 *  - epoll_pwait2 for sub-millisecond timeouts: the scheduler's sleeps are for timers,
 *    which tolerate a late wake-up of < 1 ms, and the syscall is not everywhere.
 */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "netpoll.h"
#include "rt.h"

enum {
    NETPOLL_EVENTS = 128,       /* events taken per epoll_wait */
    PD_TABLE_MIN = 64,          /* first table: slots */
};

/* The fd -> descriptor table. A new, larger table replaces it when an fd does not fit;
 * the old one stays readable (retired) until netpoll_destroy. */
typedef struct pd_table {
    size_t len;                     /* slots; constant */
    struct pd_table *retired;       /* the table this one replaced; np.tab_lock */
    polldesc_t *_Atomic slot[];     /* NULL until the fd's first use; written under
                                       np.tab_lock (release), read lock-free (acquire) */
} pd_table_t;

static struct {
    _Atomic int epfd;               /* -1 when not initialised; written at init/destroy
                                       only (no task runs then), read relaxed */
    _Atomic int breakfd;            /* the eventfd; as epfd */
    _Atomic uint32_t break_pending; /* 1 from a break's write until the poller drained */
    _Atomic int waiters;            /* queued records (invariant 3) */
    pd_table_t *_Atomic tab;        /* current table; replaced under tab_lock */
    rtlock_t tab_lock;              /* pollfd.tab: table growth, descriptor creation */
} np = {.epfd = -1, .breakfd = -1};

/* The event data of the eventfd: an address no descriptor can have. */
static char netpoll_break_tag;

/* -------------------------------------------------------------- lifecycle */

int netpoll_init(void)
{
    if (atomic_load_explicit(&np.epfd, memory_order_relaxed) >= 0)
        return 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    int rc;
    int bfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (bfd < 0) {
        rc = -errno;
        goto out_close_epoll;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &netpoll_break_tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, bfd, &ev) < 0) {
        rc = -errno;
        goto out_close_eventfd;
    }
    atomic_store_explicit(&np.break_pending, 0, memory_order_relaxed);
    atomic_store_explicit(&np.waiters, 0, memory_order_relaxed);
    atomic_store_explicit(&np.breakfd, bfd, memory_order_relaxed);
    atomic_store_explicit(&np.epfd, ep, memory_order_relaxed);
    return 0;

out_close_eventfd:
    close(bfd);
out_close_epoll:
    close(ep);
    return rc;
}

void netpoll_destroy(void)
{
    int ep = atomic_exchange_explicit(&np.epfd, -1, memory_order_relaxed);
    int bfd = atomic_exchange_explicit(&np.breakfd, -1, memory_order_relaxed);
    if (ep >= 0)
        close(ep);
    if (bfd >= 0)
        close(bfd);
    pd_table_t *t = atomic_exchange_explicit(&np.tab, NULL, memory_order_relaxed);
    if (t)
        for (size_t i = 0; i < t->len; i++)
            rt_free(atomic_load_explicit(&t->slot[i], memory_order_relaxed));
    while (t) {
        pd_table_t *older = t->retired;
        rt_free(t);
        t = older;
    }
    atomic_store_explicit(&np.waiters, 0, memory_order_relaxed);
    atomic_store_explicit(&np.break_pending, 0, memory_order_relaxed);
}

int netpoll_waiters(void)
{
    /* acquire: pairs with the acq_rel increment of a parking task, made before it
     * switches away; the deadlock check runs after that task's M went idle under
     * sched.lock, which orders the increment before the check in any case */
    return atomic_load_explicit(&np.waiters, memory_order_acquire);
}

/* ------------------------------------------------------------ descriptors */

polldesc_t *polldesc_find(int fd)
{
    /* acquire: pairs with the release store in pd_table_grow (slots copied first) */
    pd_table_t *t = atomic_load_explicit(&np.tab, memory_order_acquire);
    if (!t || (size_t)(unsigned)fd >= t->len)
        return NULL;
    /* acquire: pairs with the release store in polldesc_create (fields set first) */
    return atomic_load_explicit(&t->slot[fd], memory_order_acquire);
}

/* A table with room for fd, holding t's slots. np.tab_lock held. NULL: no memory. */
static pd_table_t *pd_table_grow(pd_table_t *t, int fd)
{
    size_t len = t ? t->len : PD_TABLE_MIN;
    while (len <= (size_t)fd)
        len *= 2;
    pd_table_t *nt = rt_alloc(sizeof *nt + len * sizeof nt->slot[0]);
    if (!nt)
        return NULL;
    nt->len = len;
    nt->retired = t;
    for (size_t i = 0; t && i < t->len; i++)
        atomic_store_explicit(&nt->slot[i],
                              atomic_load_explicit(&t->slot[i], memory_order_relaxed),
                              memory_order_relaxed);
    /* release: readers that load nt see its slots */
    atomic_store_explicit(&np.tab, nt, memory_order_release);
    return nt;
}

/* First use of fd: creates its descriptor (and a larger table if needed). Task or
 * sysstack context; takes np.tab_lock; never switches. */
static RT_COLD int polldesc_create(int fd, polldesc_t **out)
{
    if (atomic_load_explicit(&np.epfd, memory_order_relaxed) < 0)
        return -ENXIO;
    /* An open fd is below the open-files limit: this bounds the table. */
    if (fcntl(fd, F_GETFD) < 0)
        return -*errno_ptr();
    int rc = 0;
    rtlock_acquire(&np.tab_lock);
    pd_table_t *t = atomic_load_explicit(&np.tab, memory_order_relaxed);
    if (!t || (size_t)fd >= t->len) {
        t = pd_table_grow(t, fd);
        if (!t) {
            rc = -ENOMEM;
            goto out_unlock;
        }
    }
    polldesc_t *pd = atomic_load_explicit(&t->slot[fd], memory_order_relaxed);
    if (!pd) {
        pd = rt_alloc(sizeof *pd);
        if (!pd) {
            rc = -ENOMEM;
            goto out_unlock;
        }
        pd->fd = fd;
        /* release: publishes the initialised descriptor to polldesc_find */
        atomic_store_explicit(&t->slot[fd], pd, memory_order_release);
    }
    *out = pd;
out_unlock:
    rtlock_release(&np.tab_lock);
    return rc;
}

int polldesc_get(int fd, polldesc_t **out)
{
    if (fd < 0)
        return -EBADF;
    polldesc_t *pd = polldesc_find(fd);
    if (likely(pd)) {
        *out = pd;
        return 0;
    }
    return polldesc_create(fd, out);
}

/* ----------------------------------------------------------- waiter lists */

/* pd->lock held. */
static void waiter_queue(polldesc_t *pd, io_waiter_t *w)
{
    w->next = pd->waiters;
    if (w->next)
        w->next->pprev = &w->next;
    pd->waiters = w;
    w->pprev = &pd->waiters;
    /* acq_rel: see netpoll_waiters */
    atomic_fetch_add_explicit(&np.waiters, 1, memory_order_acq_rel);
}

/* pd->lock held; w is queued. */
static void waiter_unlink(io_waiter_t *w)
{
    *w->pprev = w->next;
    if (w->next)
        w->next->pprev = w->pprev;
    w->pprev = NULL;
    w->next = NULL;
    /* acq_rel: the count drops before the task can be seen runnable (g_ready) */
    atomic_fetch_sub_explicit(&np.waiters, 1, memory_order_acq_rel);
}

void netpoll_waiter_relocate(io_waiter_t *old, io_waiter_t *w)
{
    (void)old;
    if (!w->pprev)
        return;
    *w->pprev = w;
    if (w->next)
        w->next->pprev = &w->next;
}

/* An edge for `mode` on pd: counts it and readies every task waiting for it. Returns
 * how many. sysstack (the poller); takes pd->lock. */
static int polldesc_fire(polldesc_t *pd, uint32_t mode)
{
    io_waiter_t *woken = NULL;
    rtlock_acquire(&pd->lock);
    /* release: a task whose snapshot sees the new count (it re-checks under the lock
     * anyway) knows an edge came; relaxed load: only lock holders write it */
    if (mode & IO_READ)
        atomic_store_explicit(&pd->rseq,
                              atomic_load_explicit(&pd->rseq, memory_order_relaxed) + 1,
                              memory_order_release);
    if (mode & IO_WRITE)
        atomic_store_explicit(&pd->wseq,
                              atomic_load_explicit(&pd->wseq, memory_order_relaxed) + 1,
                              memory_order_release);
    io_waiter_t *w = pd->waiters;
    while (w) {
        io_waiter_t *next = w->next;
        if (w->mode & mode) {
            waiter_unlink(w);
            w->result = 1;
            w->next = woken;
            woken = w;
        }
        w = next;
    }
    rtlock_release(&pd->lock);
    /* The dequeued tasks stay parked until g_ready: their records are ours until then
     * and gone after, so read next and g first. */
    int n = 0;
    while (woken) {
        io_waiter_t *next = woken->next;
        g_ready(woken->g);
        woken = next;
        n++;
    }
    return n;
}

/* The timer of a wait with a deadline. sysstack, no lock held. The task waits in
 * timer_stop for this function to return before its record (on its stack) goes. */
static void netpoll_timeout_fire(rtimer_t *t, int64_t now)
{
    (void)now;
    io_waiter_t *w = t->arg;
    polldesc_t *pd = w->pd;
    g_t *g = NULL;
    rtlock_acquire(&pd->lock);
    if (w->result == 0) {
        /* Not queued yet: the task sees the result under the lock and does not park. */
        w->result = -ETIMEDOUT;
        if (w->pprev) {
            waiter_unlink(w);
            g = w->g;
        }
    }
    rtlock_release(&pd->lock);
    if (g)
        g_ready(g);
}

/* ------------------------------------------------------------------ waiting */

/* Adds fd to the epoll set, unless this very file already is in it. Task context. */
static int netpoll_register(polldesc_t *pd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.ptr = pd};
    int ep = atomic_load_explicit(&np.epfd, memory_order_relaxed);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, pd->fd, &ev) == 0)
        return 0;
    int e = *errno_ptr();
    return e == EEXIST ? 0 : -e;
}

/* pd->lock held. */
static bool polldesc_edge_since(polldesc_t *pd, uint32_t mode, io_seq_t seq)
{
    /* relaxed: the lock orders these loads after every increment made before */
    return ((mode & IO_READ) &&
            atomic_load_explicit(&pd->rseq, memory_order_relaxed) != seq.r) ||
           ((mode & IO_WRITE) &&
            atomic_load_explicit(&pd->wseq, memory_order_relaxed) != seq.w);
}

int netpoll_wait(polldesc_t *pd, uint32_t mode, io_seq_t seq, int64_t deadline)
{
    int rc = netpoll_register(pd);
    if (rc)
        return rc;
    g_t *g = g_self();
    io_waiter_t w = {.g = g, .pd = pd, .mode = mode};
    rtimer_t t = {0};
    bool timed = deadline >= 0;
    if (timed) {
        if (gort_now() >= deadline)
            return -ETIMEDOUT;
        t.when = deadline;
        t.fn = netpoll_timeout_fire;
        t.arg = &w;
        /* Started before taking pd->lock (p.timers ranks below pollfd.lock); if it
         * fires before the record is queued, it leaves its verdict in w.result. */
        timer_start(&t);
    }
    bool edge;
    rtlock_acquire(&pd->lock);
    edge = polldesc_edge_since(pd, mode, seq);
    if (edge || w.result) {
        rtlock_release(&pd->lock);
    } else {
        waiter_queue(pd, &w);
        g->waiting = &w;
        g_park(&pd->lock, WAIT_IO, pd);
        g->waiting = NULL;
        /* invariant 1: only the dequeuer readies us; our record must be off the list */
        if (unlikely(w.pprev || !w.result))
            gort_throw("netpoll: woken while still queued");
    }
    if (timed)
        timer_stop(&t); /* waits for a firing timer: it may still touch w */
    /* An edge wins over a timeout that raced with it: the caller retries its I/O. */
    return edge || w.result > 0 ? 0 : w.result;
}

/* -------------------------------------------------------------- the poller */

int netpoll_poll(int64_t timeout_ns)
{
    int ep = atomic_load_explicit(&np.epfd, memory_order_relaxed);
    if (ep < 0)
        return 0;
    int ms;
    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns == 0)
        ms = 0;
    else if (timeout_ns < 1000000000LL * 1000000)
        ms = (int)((timeout_ns + 999999) / 1000000); /* round up: never wake early */
    else
        ms = 1000000000; /* ~11.5 days; the caller loops */

    struct epoll_event ev[NETPOLL_EVENTS];
    int n;
    for (;;) {
        n = epoll_wait(ep, ev, NETPOLL_EVENTS, ms);
        if (n >= 0)
            break;
        if (errno != EINTR)
            gort_throw("netpoll: epoll_wait failed");
        if (ms > 0)
            return 0; /* a timed sleep: let the caller recompute its deadline */
    }
    int woken = 0;
    for (int i = 0; i < n; i++) {
        uint32_t e = ev[i].events;
        if (ev[i].data.ptr == &netpoll_break_tag) {
            /* A non-blocking poll leaves the eventfd readable (level-triggered), so the
             * blocked poller the break was meant for still wakes. */
            if (timeout_ns != 0) {
                uint64_t cnt;
                ssize_t r = read(atomic_load_explicit(&np.breakfd, memory_order_relaxed),
                                 &cnt, sizeof cnt);
                (void)r; /* EAGAIN: another poller drained it */
                /* acq_rel: clears the flag after the drain; a break that found it still
                 * set (and skipped its write) happened before this poller returns to
                 * its caller, which then sees that break's work */
                atomic_exchange_explicit(&np.break_pending, 0, memory_order_acq_rel);
            }
            continue;
        }
        uint32_t mode = 0;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            mode |= IO_READ;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            mode |= IO_WRITE;
        if (mode)
            woken += polldesc_fire(ev[i].data.ptr, mode);
    }
    return woken;
}

void netpoll_break(void)
{
    int bfd = atomic_load_explicit(&np.breakfd, memory_order_relaxed);
    if (bfd < 0)
        return;
    /* acq_rel: release publishes the breaker's work to the poller that clears the
     * flag (acquire side there); a breaker that finds it set needs no write: the
     * pending one will wake the poller */
    if (atomic_exchange_explicit(&np.break_pending, 1, memory_order_acq_rel) != 0)
        return;
    int saved_errno = errno; /* async-signal-safe: the interrupted code keeps errno */
    uint64_t one = 1;
    for (;;) {
        ssize_t r = write(bfd, &one, sizeof one);
        if (r == (ssize_t)sizeof one || (r < 0 && errno == EAGAIN))
            break; /* EAGAIN: the counter is full, so it is readable anyway */
        if (r < 0 && errno == EINTR)
            continue;
        gort_throw("netpoll: eventfd write failed");
    }
    errno = saved_errno;
}
