/* core/io.c — task-aware I/O: gort_read, gort_write, gort_accept, gort_connect,
 * gort_wait_fd. A call tries the operation without blocking; on EAGAIN it parks only
 * the task (core/netpoll.c) until the fd reports an edge, then tries again.
 *
 * Not blocking the thread. gort cannot see close(2), so an fd number may name a new
 * file at every call, and nothing cached about the old one may be trusted for safety:
 *  - sockets are read and written with recv/send and MSG_DONTWAIT, which never block
 *    whatever the file's flags: no extra syscall on the hot path;
 *  - other fds (pipes, eventfds, ttys) get O_NONBLOCK checked (F_GETFL, and F_SETFL if
 *    clear) before every read/write, then plain read/write;
 *  - the descriptor's `kind` only picks which of the two to try first; a socket call
 *    on a non-socket fails with ENOTSOCK at no harm and flips the hint;
 *  - gort_accept and gort_connect check O_NONBLOCK on every call (rare calls).
 * Accepted sockets are created O_NONBLOCK | O_CLOEXEC (accept4).
 *
 * Outside a task (no g_self(): a plain thread, or gort_on_system_stack) every call
 * is the plain blocking call, with poll(2) when the fd is non-blocking and says
 * EAGAIN.
 *
 * Task-side code runs on 2 KiB stacks: small frames, no stdio. errno is read through
 * errno_ptr() in every function that may park (a task may resume on another thread,
 * and glibc's __errno_location is declared const, so `errno` could be the old
 * thread's).
 *
 * Rejected:
 *  - Caching O_NONBLOCK per descriptor and trusting it (Go can: its runtime owns
 *    close). A reused number whose new file is blocking would block a whole worker
 *    thread, and with one P the whole program. Measured here: a syscall costs ~1.2 us
 *    on this VM, so sockets avoid the check (MSG_DONTWAIT) and only other fds pay it.
 *  - preadv2/pwritev2 with RWF_NOWAIT for pipes: support varies by kernel and file
 *    type, and a pipe may answer EAGAIN when its mutex is merely contended, with no
 *    edge to follow (a lost wake-up).
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gort.h"
#include "netpoll.h"
#include "rt.h"

#define IO_ERRNO() (*errno_ptr())

/* -------------------------------------------------------- helpers (task side) */

/* Puts fd in O_NONBLOCK if it is not. 0 or -errno. any context; never switches. */
static int io_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -IO_ERRNO();
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -IO_ERRNO();
    return 0;
}

/* One read (is_write false) or write that never blocks: bytes, or -errno (-EAGAIN: not
 * ready / no room). Sockets get recv/send with MSG_DONTWAIT, so the fd's own flags stay
 * as the program set them; anything else is put in O_NONBLOCK once. Task context. */
static ssize_t io_try_rw(polldesc_t *pd, void *buf, size_t n, bool is_write)
{
    ssize_t r;
    /* relaxed: a hint, any value is safe (file head) */
    if (atomic_load_explicit(&pd->kind, memory_order_relaxed) == PD_KIND_SOCKET) {
        /* No MSG_NOSIGNAL: a broken connection raises SIGPIPE, as write(2) does. */
        r = is_write ? send(pd->fd, buf, n, MSG_DONTWAIT) : recv(pd->fd, buf, n, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (IO_ERRNO() != ENOTSOCK)
            return -IO_ERRNO();
        atomic_store_explicit(&pd->kind, PD_KIND_OTHER, memory_order_relaxed);
    }
    int rc = io_set_nonblock(pd->fd);
    if (rc)
        return rc;
    r = is_write ? write(pd->fd, buf, n) : read(pd->fd, buf, n);
    return r >= 0 ? r : -IO_ERRNO();
}

/* The events of `events` (plus POLLERR/POLLHUP) that fd reports now, 0 if none, or
 * -EBADF. any context; never blocks. */
static int io_poll_now(int fd, int events)
{
    struct pollfd p = {.fd = fd, .events = (short)events};
    int r;
    do
        r = poll(&p, 1, 0);
    while (r < 0 && IO_ERRNO() == EINTR);
    if (r < 0)
        return -IO_ERRNO();
    if (p.revents & POLLNVAL)
        return -EBADF;
    return p.revents & (events | POLLERR | POLLHUP);
}

/* -------------------------------------------- the blocking path (no task) */

/* Blocks the thread until fd reports one of `events`. 0 or -errno. */
static int io_block_until(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int r = poll(&p, 1, -1);
        if (r > 0)
            return p.revents & POLLNVAL ? -EBADF : 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static ssize_t io_read_blocking(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN)
            return -e;
        int rc = io_block_until(fd, POLLIN);
        if (rc)
            return rc;
    }
}

static ssize_t io_write_blocking(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    do {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r >= 0) {
            done += (size_t)r;
            continue;
        }
        int e = errno;
        if (e == EINTR)
            continue;
        int rc = e == EAGAIN ? io_block_until(fd, POLLOUT) : -e;
        if (rc)
            return done ? (ssize_t)done : rc;
    } while (done < n);
    return (ssize_t)done;
}

static int io_accept_blocking(int fd, struct sockaddr *a, socklen_t *l)
{
    for (;;) {
        int r = accept4(fd, a, l, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r >= 0)
            return r;
        int e = errno;
        if (e == EINTR || e == ECONNABORTED)
            continue;
        if (e != EAGAIN)
            return -e;
        int rc = io_block_until(fd, POLLIN);
        if (rc)
            return rc;
    }
}

/* The outcome of a connect in progress: 0, -errno, or -EINPROGRESS (still going). */
static int io_connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -IO_ERRNO();
    if (err == EINPROGRESS || err == EALREADY || err == EINTR)
        return -EINPROGRESS;
    if (err != 0 && err != EISCONN)
        return -err;
    /* No error yet: connected only if it has a peer (a wake-up may be spurious). */
    struct sockaddr sa;
    socklen_t salen = 0;
    if (getpeername(fd, &sa, &salen) == 0)
        return 0;
    return IO_ERRNO() == ENOTCONN ? -EINPROGRESS : -IO_ERRNO();
}

static int io_connect_blocking(int fd, const struct sockaddr *a, socklen_t l)
{
    if (connect(fd, a, l) == 0)
        return 0;
    int e = errno;
    if (e != EINPROGRESS && e != EALREADY && e != EINTR)
        return -e;
    for (;;) {
        int rc = io_block_until(fd, POLLOUT);
        if (rc)
            return rc;
        rc = io_connect_result(fd);
        if (rc != -EINPROGRESS)
            return rc;
    }
}

static int io_wait_fd_blocking(int fd, int events, int64_t timeout_ns)
{
    int64_t deadline = timeout_ns < 0 ? -1 : gort_now() + timeout_ns;
    struct pollfd p = {.fd = fd, .events = (short)events};
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - gort_now();
            if (left < 0)
                left = 0;
            /* round up: never return before the timeout */
            ms = left >= (int64_t)INT_MAX * 1000000 ? INT_MAX
                                                     : (int)((left + 999999) / 1000000);
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (p.revents & POLLNVAL)
            return -EBADF;
        if (r > 0 && (p.revents & (events | POLLERR | POLLHUP)))
            return p.revents & (events | POLLERR | POLLHUP);
        if (deadline >= 0 && gort_now() >= deadline)
            return -ETIMEDOUT;
    }
}

/* ------------------------------------------------------------- public calls */

ssize_t gort_read(int fd, void *buf, size_t n)
{
    RT_ENTRY_CHECK();
    if (fd < 0)
        return -EBADF;
    if (n > SSIZE_MAX)
        return -EINVAL;
    polldesc_t *pd;
    int rc = g_self() ? polldesc_get(fd, &pd) : -ENXIO; /* -ENXIO: no poller */
    if (rc == -ENXIO)
        return io_read_blocking(fd, buf, n);
    if (rc)
        return rc;
    for (;;) {
        io_seq_t seq = polldesc_seq(pd);
        ssize_t r = io_try_rw(pd, buf, n, false);
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN)
            return r;
        rc = netpoll_wait(pd, IO_READ, seq, -1);
        if (rc)
            return rc;
    }
}

ssize_t gort_write(int fd, const void *buf, size_t n)
{
    RT_ENTRY_CHECK();
    if (fd < 0)
        return -EBADF;
    if (n > SSIZE_MAX)
        return -EINVAL;
    polldesc_t *pd;
    int rc = g_self() ? polldesc_get(fd, &pd) : -ENXIO; /* -ENXIO: no poller */
    if (rc == -ENXIO)
        return io_write_blocking(fd, buf, n);
    if (rc)
        return rc;
    size_t done = 0;
    do {
        io_seq_t seq = polldesc_seq(pd);
        ssize_t r = io_try_rw(pd, (char *)buf + done, n - done, true);
        if (r >= 0) {
            done += (size_t)r;
            continue;
        }
        if (r == -EINTR)
            continue;
        rc = r == -EAGAIN ? netpoll_wait(pd, IO_WRITE, seq, -1) : (int)r;
        if (rc)
            return done ? (ssize_t)done : rc; /* as a blocking write cut short */
    } while (done < n);
    return (ssize_t)done;
}

int gort_accept(int fd, struct sockaddr *a, socklen_t *l)
{
    RT_ENTRY_CHECK();
    if (fd < 0)
        return -EBADF;
    polldesc_t *pd;
    int rc = g_self() ? polldesc_get(fd, &pd) : -ENXIO; /* -ENXIO: no poller */
    if (rc == -ENXIO)
        return io_accept_blocking(fd, a, l);
    if (rc)
        return rc;
    rc = io_set_nonblock(fd);
    if (rc)
        return rc;
    for (;;) {
        io_seq_t seq = polldesc_seq(pd);
        int r = accept4(fd, a, l, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r >= 0) {
            /* The number now names a socket, whatever it named before. */
            polldesc_t *npd = polldesc_find(r);
            if (npd)
                atomic_store_explicit(&npd->kind, PD_KIND_SOCKET, memory_order_relaxed);
            return r;
        }
        int e = IO_ERRNO();
        if (e == EINTR || e == ECONNABORTED)
            continue; /* as Go does: the next connection may be fine */
        if (e != EAGAIN)
            return -e;
        rc = netpoll_wait(pd, IO_READ, seq, -1);
        if (rc)
            return rc;
    }
}

int gort_connect(int fd, const struct sockaddr *a, socklen_t l)
{
    RT_ENTRY_CHECK();
    if (fd < 0)
        return -EBADF;
    polldesc_t *pd;
    int rc = g_self() ? polldesc_get(fd, &pd) : -ENXIO; /* -ENXIO: no poller */
    if (rc == -ENXIO)
        return io_connect_blocking(fd, a, l);
    if (rc)
        return rc;
    rc = io_set_nonblock(fd);
    if (rc)
        return rc;
    atomic_store_explicit(&pd->kind, PD_KIND_SOCKET, memory_order_relaxed);
    io_seq_t seq = polldesc_seq(pd);
    if (connect(fd, a, l) == 0)
        return 0;
    int e = IO_ERRNO();
    if (e != EINPROGRESS && e != EALREADY && e != EINTR)
        return -e;
    for (;;) {
        rc = netpoll_wait(pd, IO_WRITE, seq, -1);
        if (rc)
            return rc;
        seq = polldesc_seq(pd);
        rc = io_connect_result(fd);
        if (rc != -EINPROGRESS)
            return rc;
    }
}

int gort_wait_fd(int fd, int events, int64_t timeout_ns)
{
    RT_ENTRY_CHECK();
    if (events == 0 || (events & ~(POLLIN | POLLOUT)))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    if (timeout_ns == 0) {
        int r = io_poll_now(fd, events);
        return r ? r : -ETIMEDOUT;
    }
    polldesc_t *pd;
    int rc = g_self() ? polldesc_get(fd, &pd) : -ENXIO; /* -ENXIO: no poller */
    if (rc == -ENXIO)
        return io_wait_fd_blocking(fd, events, timeout_ns);
    if (rc)
        return rc;
    uint32_t mode = (events & POLLIN ? IO_READ : 0) | (events & POLLOUT ? IO_WRITE : 0);
    int64_t deadline = -1;
    if (timeout_ns > 0) {
        int64_t now = gort_now();
        deadline = timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
    }
    for (;;) {
        io_seq_t seq = polldesc_seq(pd);
        int r = io_poll_now(fd, events);
        if (r)
            return r;
        rc = netpoll_wait(pd, mode, seq, deadline);
        if (rc)
            return rc;
    }
}
