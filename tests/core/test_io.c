/* tests/core/test_io.c — the I/O poller (core/netpoll.c) and the task-aware calls
 * (core/io.c): gort_read, gort_write, gort_accept, gort_connect, gort_wait_fd.
 *
 * Worker tasks run on the default 2 KiB stacks: they keep their buffers in globals and
 * record failures (WCHECK) for the main task, which asserts. Times: only lower bounds
 * (a wait did not end early), never upper ones. Every test closes its fds.
 */
/* ctest-tsan */
/* ctest-timeout: 120 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "netpoll.h"

#define MS 1000000LL

/* ------------------------------------------------------------------ helpers */

static _Atomic int fails;     /* failed worker checks */
static _Atomic int fail_line; /* line of the first one */
static _Atomic int done;      /* workers finished */

static void note_fail(int line)
{
    int zero = 0;
    atomic_compare_exchange_strong(&fail_line, &zero, line);
    atomic_fetch_add(&fails, 1);
}
#define WCHECK(c)                                                                       \
    do {                                                                                \
        if (!(c))                                                                       \
            note_fail(__LINE__);                                                        \
    } while (0)

/* Atomic loads as plain calls, so that failed asserts print readable expressions. */
static int ldi(_Atomic int *p) { return atomic_load(p); }
static long ldl(_Atomic long *p) { return atomic_load(p); }
#define LD(p) _Generic((p), _Atomic int *: ldi, _Atomic long *: ldl)(p)

static void reset_counters(void)
{
    atomic_store(&fails, 0);
    atomic_store(&fail_line, 0);
    atomic_store(&done, 0);
}

static void assert_no_worker_failure(void)
{
    ck_assert_msg(LD(&fails) == 0, "%d worker checks failed, first at line %d",
                  atomic_load(&fails), atomic_load(&fail_line));
}

/* Main task, at the end of a test whose tasks all finished: no task leaked. */
static void assert_no_leaks(void)
{
    int n = gort_leakcheck(stderr);
    ck_assert_msg(n == 0 || n == -ENOSYS, "gort_leakcheck: %d", n);
}

/* Main task: sleeps until `done` reaches n; false after timeout_ns. */
static bool wait_done(int n, int64_t timeout_ns)
{
    int64_t deadline = gort_now() + timeout_ns;
    while (atomic_load(&done) < n) {
        if (gort_now() > deadline)
            return false;
        gort_sleep(MS);
    }
    return true;
}

/* Reads exactly n bytes (fewer only at EOF); bytes or -errno. */
static ssize_t read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = gort_read(fd, (char *)buf + got, n - got);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void close2(int fd[2])
{
    close(fd[0]);
    close(fd[1]);
}

/* ------------------------------------------------------ pipe ping-pong */

enum { PP_ROUNDS = 3000 };
static int pp_ab[2], pp_ba[2];

static void pp_ping(void *arg)
{
    GORT_FRAME();
    for (int i = 0; i < PP_ROUNDS; i++) {
        int v = i;
        WCHECK(gort_write(pp_ab[1], &v, sizeof v) == sizeof v);
        int got = -1;
        WCHECK(read_full(pp_ba[0], &got, sizeof got) == sizeof got);
        WCHECK(got == i + 1);
    }
    atomic_fetch_add(&done, 1);
}

static void pp_pong(void *arg)
{
    GORT_FRAME();
    for (int i = 0; i < PP_ROUNDS; i++) {
        int v = -1;
        WCHECK(read_full(pp_ab[0], &v, sizeof v) == sizeof v);
        WCHECK(v == i);
        v++;
        WCHECK(gort_write(pp_ba[1], &v, sizeof v) == sizeof v);
    }
    atomic_fetch_add(&done, 1);
}

static void pingpong_main(void *arg)
{
    reset_counters();
    ck_assert_int_eq(pipe(pp_ab), 0);
    ck_assert_int_eq(pipe(pp_ba), 0);
    ck_assert_int_eq(gort_go(pp_pong, NULL), 0);
    ck_assert_int_eq(gort_go(pp_ping, NULL), 0);
    ck_assert(wait_done(2, 60000 * MS));
    assert_no_worker_failure();
    ck_assert_int_eq(netpoll_waiters(), 0);
    /* gort_read put the pipes in non-blocking mode */
    ck_assert(fcntl(pp_ab[0], F_GETFL) & O_NONBLOCK);
    close2(pp_ab);
    close2(pp_ba);
    assert_no_leaks();
}

START_TEST(pipe_pingpong_1p) { test_run(pingpong_main, NULL, 1, 0); }
END_TEST
START_TEST(pipe_pingpong_2p) { test_run(pingpong_main, NULL, 2, 0); }
END_TEST

/* ------------------------------------------- 100 socketpairs echoing 1,000 messages */

enum { SP_PAIRS = 100, SP_MSGS = 1000, SP_MAXLEN = 48 };

typedef struct sp_pair {
    int fd[2];               /* [0] client, [1] echo */
    uint64_t rng;            /* message lengths, client only */
    char out[SP_MAXLEN];
    char in[SP_MAXLEN];
    char echo[SP_MAXLEN];
} sp_pair_t;
static sp_pair_t sp[SP_PAIRS];
static _Atomic long sp_sent, sp_echoed, sp_recv;

static char sp_byte(int pair, int msg, int k) { return (char)(pair * 31 + msg * 7 + k); }

static void sp_client(void *arg)
{
    GORT_FRAME();
    sp_pair_t *p = arg;
    int id = (int)(p - sp);
    for (int m = 0; m < SP_MSGS; m++) {
        size_t len = 1 + test_rand(&p->rng) % SP_MAXLEN;
        for (size_t k = 0; k < len; k++)
            p->out[k] = sp_byte(id, m, (int)k);
        ssize_t w = gort_write(p->fd[0], p->out, len);
        WCHECK(w == (ssize_t)len);
        atomic_fetch_add(&sp_sent, w > 0 ? w : 0);
        ssize_t r = read_full(p->fd[0], p->in, len);
        WCHECK(r == (ssize_t)len);
        WCHECK(memcmp(p->in, p->out, len) == 0);
        atomic_fetch_add(&sp_recv, r > 0 ? r : 0);
        if ((m & 63) == 0)
            gort_yield();
    }
    WCHECK(shutdown(p->fd[0], SHUT_WR) == 0);
    WCHECK(gort_read(p->fd[0], p->in, 1) == 0); /* the echo task closed its end */
    close(p->fd[0]);
    atomic_fetch_add(&done, 1);
}

static void sp_echo(void *arg)
{
    GORT_FRAME();
    sp_pair_t *p = arg;
    for (;;) {
        ssize_t r = gort_read(p->fd[1], p->echo, sizeof p->echo);
        WCHECK(r >= 0);
        if (r <= 0)
            break;
        WCHECK(gort_write(p->fd[1], p->echo, (size_t)r) == r);
        atomic_fetch_add(&sp_echoed, r);
    }
    close(p->fd[1]);
    atomic_fetch_add(&done, 1);
}

static void socketpair_echo_main(void *arg)
{
    reset_counters();
    uint64_t seed = test_seed("socketpair_echo", 42);
    atomic_store(&sp_sent, 0);
    atomic_store(&sp_echoed, 0);
    atomic_store(&sp_recv, 0);
    long want = 0;
    for (int i = 0; i < SP_PAIRS; i++) {
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp[i].fd), 0);
        sp[i].rng = seed + (uint64_t)i;
        uint64_t replay = sp[i].rng;
        for (int m = 0; m < SP_MSGS; m++)
            want += (long)(1 + test_rand(&replay) % SP_MAXLEN);
    }
    for (int i = 0; i < SP_PAIRS; i++) {
        ck_assert_int_eq(gort_go(sp_echo, &sp[i]), 0);
        ck_assert_int_eq(gort_go(sp_client, &sp[i]), 0);
    }
    ck_assert(wait_done(2 * SP_PAIRS, 100000 * MS));
    assert_no_worker_failure();
    ck_assert_int_eq(LD(&sp_sent), want);
    ck_assert_int_eq(LD(&sp_echoed), want);
    ck_assert_int_eq(LD(&sp_recv), want);
    ck_assert_int_eq(netpoll_waiters(), 0);
    assert_no_leaks();
}

START_TEST(socketpair_echo_2p) { test_run(socketpair_echo_main, NULL, 2, 0); }
END_TEST

/* ---------------------------------------------------- loopback TCP echo server */

enum { TCP_CLIENTS = 50, TCP_MSGS = 20 };
static int tcp_listener;
static struct sockaddr_in tcp_addr;
static _Atomic int tcp_accepted, tcp_replies;

typedef struct tcp_msg {
    int client;
    int seq;
    char pad[24];
} tcp_msg_t;

static void tcp_handler(void *arg)
{
    GORT_FRAME();
    int fd = *(int *)arg;
    char buf[64];
    for (;;) {
        ssize_t r = gort_read(fd, buf, sizeof buf);
        WCHECK(r >= 0);
        if (r <= 0)
            break;
        WCHECK(gort_write(fd, buf, (size_t)r) == r);
    }
    close(fd);
    atomic_fetch_add(&done, 1);
}

static void tcp_accept_loop(void *arg)
{
    GORT_FRAME();
    for (int k = 0; k < TCP_CLIENTS; k++) {
        int fd = gort_accept(tcp_listener, NULL, NULL);
        WCHECK(fd >= 0);
        if (fd < 0)
            continue;
        WCHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
        WCHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        atomic_fetch_add(&tcp_accepted, 1);
        WCHECK(gort_go_with(tcp_handler, &fd, sizeof fd) == 0);
    }
    atomic_fetch_add(&done, 1);
}

static void tcp_client(void *arg)
{
    GORT_FRAME();
    int id = (int)(intptr_t)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    WCHECK(s >= 0);
    WCHECK(gort_connect(s, (struct sockaddr *)&tcp_addr, sizeof tcp_addr) == 0);
    for (int m = 0; m < TCP_MSGS; m++) {
        tcp_msg_t out = {.client = id, .seq = m};
        memset(out.pad, 'a' + (id + m) % 26, sizeof out.pad);
        tcp_msg_t in;
        WCHECK(gort_write(s, &out, sizeof out) == sizeof out);
        WCHECK(read_full(s, &in, sizeof in) == sizeof in);
        WCHECK(memcmp(&in, &out, sizeof in) == 0);
        atomic_fetch_add(&tcp_replies, 1);
    }
    close(s);
    atomic_fetch_add(&done, 1);
}

/* Binds a listener to 127.0.0.1, port 0 (the kernel picks), and fills *addr. */
static int tcp_listen(struct sockaddr_in *addr)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(l, 0);
    *addr = (struct sockaddr_in){.sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(l, (struct sockaddr *)addr, sizeof *addr), 0);
    socklen_t len = sizeof *addr;
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
    ck_assert_int_eq(listen(l, 128), 0);
    return l;
}

static void tcp_echo_main(void *arg)
{
    reset_counters();
    atomic_store(&tcp_accepted, 0);
    atomic_store(&tcp_replies, 0);
    tcp_listener = tcp_listen(&tcp_addr);
    ck_assert_int_eq(gort_go(tcp_accept_loop, NULL), 0);
    for (int i = 0; i < TCP_CLIENTS; i++)
        ck_assert_int_eq(gort_go(tcp_client, (void *)(intptr_t)i), 0);
    /* accept loop + clients + one handler per client */
    ck_assert(wait_done(1 + 2 * TCP_CLIENTS, 60000 * MS));
    assert_no_worker_failure();
    ck_assert_int_eq(LD(&tcp_accepted), TCP_CLIENTS);
    ck_assert_int_eq(LD(&tcp_replies), TCP_CLIENTS * TCP_MSGS);
    ck_assert_int_eq(netpoll_waiters(), 0);
    close(tcp_listener);
    assert_no_leaks();
}

START_TEST(tcp_echo_1p) { test_run(tcp_echo_main, NULL, 1, 0); }
END_TEST
START_TEST(tcp_echo_2p) { test_run(tcp_echo_main, NULL, 2, 0); }
END_TEST

/* Several tasks accept on one listener: every connection is taken by one of them. The
 * acceptors leave on a "poison" connection, which main makes until all have left. */
enum { MA_ACCEPTORS = 3, MA_CLIENTS = 30 };
static _Atomic int ma_left;

static void ma_acceptor(void *arg)
{
    GORT_FRAME();
    for (;;) {
        int fd = gort_accept(tcp_listener, NULL, NULL);
        WCHECK(fd >= 0);
        if (fd < 0)
            break;
        char tag = 0;
        WCHECK(read_full(fd, &tag, 1) == 1);
        close(fd);
        if (tag == 'P')
            break;
        WCHECK(tag == 'C');
        atomic_fetch_add(&tcp_accepted, 1);
    }
    atomic_fetch_add(&ma_left, 1);
}

static void ma_client(void *arg)
{
    GORT_FRAME();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    WCHECK(gort_connect(s, (struct sockaddr *)&tcp_addr, sizeof tcp_addr) == 0);
    WCHECK(gort_write(s, "C", 1) == 1);
    close(s);
    atomic_fetch_add(&done, 1);
}

static void multi_accept_main(void *arg)
{
    reset_counters();
    atomic_store(&tcp_accepted, 0);
    atomic_store(&ma_left, 0);
    tcp_listener = tcp_listen(&tcp_addr);
    for (int i = 0; i < MA_ACCEPTORS; i++)
        ck_assert_int_eq(gort_go(ma_acceptor, NULL), 0);
    for (int i = 0; i < MA_CLIENTS; i++)
        ck_assert_int_eq(gort_go(ma_client, NULL), 0);
    ck_assert(wait_done(MA_CLIENTS, 60000 * MS));
    int64_t deadline = gort_now() + 60000 * MS;
    while (atomic_load(&tcp_accepted) < MA_CLIENTS && gort_now() < deadline)
        gort_sleep(MS);
    ck_assert_int_eq(LD(&tcp_accepted), MA_CLIENTS);
    while (atomic_load(&ma_left) < MA_ACCEPTORS && gort_now() < deadline) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_eq(gort_connect(s, (struct sockaddr *)&tcp_addr, sizeof tcp_addr), 0);
        ck_assert_int_eq(gort_write(s, "P", 1), 1);
        close(s);
        gort_sleep(MS);
    }
    ck_assert_int_eq(LD(&ma_left), MA_ACCEPTORS);
    assert_no_worker_failure();
    ck_assert_int_eq(netpoll_waiters(), 0);
    close(tcp_listener);
    assert_no_leaks();
}

START_TEST(multi_accept_2p) { test_run(multi_accept_main, NULL, 2, 0); }
END_TEST

/* --------------------------------------------------------------- gort_wait_fd */

static int wf_pipe[2];

static void wf_late_writer(void *arg)
{
    GORT_FRAME();
    gort_sleep(10 * MS);
    WCHECK(gort_write(wf_pipe[1], "x", 1) == 1);
    atomic_fetch_add(&done, 1);
}

static void wait_fd_main(void *arg)
{
    reset_counters();
    ck_assert_int_eq(pipe(wf_pipe), 0);
    /* nothing to read: times out, not before the timeout */
    int64_t t0 = gort_now();
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN, 30 * MS), -ETIMEDOUT);
    ck_assert_int_ge(gort_now() - t0, 30 * MS);
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN, 0), -ETIMEDOUT);
    ck_assert_int_eq(netpoll_waiters(), 0);
    /* an empty pipe is writable at once; a pipe with data readable at once */
    ck_assert_int_eq(gort_wait_fd(wf_pipe[1], POLLOUT, -1), POLLOUT);
    ck_assert_int_eq(gort_write(wf_pipe[1], "y", 1), 1);
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN, 0), POLLIN);
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN, 5 * MS), POLLIN);
    char c;
    ck_assert_int_eq(gort_read(wf_pipe[0], &c, 1), 1);
    ck_assert_int_eq(c, 'y');
    /* data that comes while waiting ends the wait with POLLIN, not a timeout */
    ck_assert_int_eq(gort_go(wf_late_writer, NULL), 0);
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN, 60000 * MS), POLLIN);
    ck_assert_int_eq(gort_read(wf_pipe[0], &c, 1), 1);
    ck_assert_int_eq(c, 'x');
    /* and so does it with no timeout at all */
    ck_assert_int_eq(gort_go(wf_late_writer, NULL), 0);
    ck_assert_int_eq(gort_wait_fd(wf_pipe[0], POLLIN | POLLOUT, -1), POLLIN);
    ck_assert_int_eq(gort_read(wf_pipe[0], &c, 1), 1);
    ck_assert(wait_done(2, 60000 * MS));
    /* the write end after the read end closed: POLLERR */
    close(wf_pipe[0]);
    ck_assert_int_ne(gort_wait_fd(wf_pipe[1], POLLOUT, -1) & POLLERR, 0);
    close(wf_pipe[1]);
    /* bad events */
    ck_assert_int_eq(gort_wait_fd(0, 0, 0), -EINVAL);
    ck_assert_int_eq(gort_wait_fd(0, POLLPRI, 0), -EINVAL);
    assert_no_worker_failure();
    ck_assert_int_eq(netpoll_waiters(), 0);
    assert_no_leaks();
}

START_TEST(wait_fd_1p) { test_run(wait_fd_main, NULL, 1, 0); }
END_TEST
START_TEST(wait_fd_2p) { test_run(wait_fd_main, NULL, 2, 0); }
END_TEST

/* Many short timed waits race with writes at random times: each ends with POLLIN (and
 * the byte is there) or with -ETIMEDOUT, never before its timeout. */
enum { WR_TASKS = 40, WR_ROUNDS = 25 };
static int wr_pipe[WR_TASKS][2];
static uint64_t wr_rng[WR_TASKS];
static _Atomic int wr_timeouts, wr_ready;

static void wr_waiter(void *arg)
{
    GORT_FRAME();
    int i = (int)(intptr_t)arg;
    uint64_t rng = wr_rng[i]; /* a copy: the writer reads wr_rng[i] concurrently (TSan) */
    for (int k = 0; k < WR_ROUNDS; k++) {
        int64_t timeout = (int64_t)(test_rand(&rng) % 2000) * 1000 + 1; /* < 2 ms */
        int64_t t0 = gort_now();
        int r = gort_wait_fd(wr_pipe[i][0], POLLIN, timeout);
        if (r == -ETIMEDOUT) {
            WCHECK(gort_now() - t0 >= timeout);
            atomic_fetch_add(&wr_timeouts, 1);
            continue;
        }
        WCHECK(r == POLLIN);
        WCHECK(gort_wait_fd(wr_pipe[i][0], POLLIN, 0) == POLLIN);
        char c = 0;
        WCHECK(gort_read(wr_pipe[i][0], &c, 1) == 1);
        WCHECK(c == 'z');
        atomic_fetch_add(&wr_ready, 1);
    }
    atomic_fetch_add(&done, 1);
}

static void wr_writer(void *arg)
{
    GORT_FRAME();
    int i = (int)(intptr_t)arg;
    uint64_t rng = wr_rng[i] ^ 0xabcdef;
    for (int k = 0; k < WR_ROUNDS; k++) {
        gort_sleep((int64_t)(test_rand(&rng) % 1500) * 1000);
        WCHECK(gort_write(wr_pipe[i][1], "z", 1) == 1);
    }
    atomic_fetch_add(&done, 1);
}

static void wait_fd_race_main(void *arg)
{
    reset_counters();
    atomic_store(&wr_timeouts, 0);
    atomic_store(&wr_ready, 0);
    uint64_t seed = test_seed("wait_fd_race", 99);
    for (int i = 0; i < WR_TASKS; i++) {
        ck_assert_int_eq(pipe(wr_pipe[i]), 0);
        wr_rng[i] = seed * 1000 + (uint64_t)i;
    }
    for (int i = 0; i < WR_TASKS; i++) {
        ck_assert_int_eq(gort_go(wr_waiter, (void *)(intptr_t)i), 0);
        ck_assert_int_eq(gort_go(wr_writer, (void *)(intptr_t)i), 0);
    }
    ck_assert(wait_done(2 * WR_TASKS, 60000 * MS));
    assert_no_worker_failure();
    ck_assert_int_eq(LD(&wr_timeouts) + LD(&wr_ready), WR_TASKS * WR_ROUNDS);
    ck_assert_int_eq(netpoll_waiters(), 0);
    for (int i = 0; i < WR_TASKS; i++)
        close2(wr_pipe[i]);
    assert_no_leaks();
}

START_TEST(wait_fd_race_2p) { test_run(wait_fd_race_main, NULL, 2, 0); }
END_TEST

/* Timeouts so short that the timer may fire on another P before the waiter has queued
 * itself: the wait must still end (-ETIMEDOUT), with nothing ever written. */
enum { TT_TASKS = 20, TT_WAITS = 300 };
static int tt_pipe[2];
static uint64_t tt_rng[TT_TASKS];

static void tt_waiter(void *arg)
{
    GORT_FRAME();
    int i = (int)(intptr_t)arg;
    for (int k = 0; k < TT_WAITS; k++) {
        int64_t timeout = 1 + (int64_t)(test_rand(&tt_rng[i]) % 20000); /* 1 ns .. 20 us */
        int64_t t0 = gort_now();
        WCHECK(gort_wait_fd(tt_pipe[0], POLLIN, timeout) == -ETIMEDOUT);
        WCHECK(gort_now() - t0 >= timeout);
    }
    atomic_fetch_add(&done, 1);
}

static void tiny_timeouts_main(void *arg)
{
    reset_counters();
    uint64_t seed = test_seed("tiny_timeouts", 77);
    ck_assert_int_eq(pipe(tt_pipe), 0);
    for (int i = 0; i < TT_TASKS; i++) {
        tt_rng[i] = seed + (uint64_t)i;
        ck_assert_int_eq(gort_go(tt_waiter, (void *)(intptr_t)i), 0);
    }
    ck_assert_msg(wait_done(TT_TASKS, 30000 * MS), "a timed wait never ended");
    assert_no_worker_failure();
    ck_assert_int_eq(netpoll_waiters(), 0);
    close2(tt_pipe);
    assert_no_leaks();
}

START_TEST(tiny_timeouts_1p) { test_run(tiny_timeouts_main, NULL, 1, 0); }
END_TEST
START_TEST(tiny_timeouts_2p) { test_run(tiny_timeouts_main, NULL, 2, 0); }
END_TEST

/* ----------------------------- an edge that comes before the reader parks is not lost */

enum { EDGE_ITERS = 1500 };
static int edge_fd[2];
static int edge_done[2]; /* workers -> main: one byte each when finished */
static uint64_t edge_rng_r, edge_rng_w;

static void edge_reader(void *arg)
{
    GORT_FRAME();
    int yields = (int)(test_rand(&edge_rng_r) % 4);
    for (int i = 0; i < yields; i++)
        gort_yield();
    char c = 0;
    WCHECK(gort_read(edge_fd[0], &c, 1) == 1);
    WCHECK(c == 'e');
    WCHECK(gort_write(edge_done[1], "r", 1) == 1);
}

static void edge_writer(void *arg)
{
    GORT_FRAME();
    uint64_t r = test_rand(&edge_rng_w);
    int yields = (int)(r % 4);
    for (int i = 0; i < yields; i++)
        gort_yield();
    /* a short spin shifts the write across the reader's attempt-to-park window */
    for (volatile int spin = (int)((r >> 8) % 3000); spin > 0; spin--)
        ;
    WCHECK(gort_write(edge_fd[1], "e", 1) == 1);
    WCHECK(gort_write(edge_done[1], "w", 1) == 1);
}

static void edge_main(void *arg)
{
    reset_counters();
    uint64_t seed = test_seed("edge_before_park", 1234);
    edge_rng_r = seed;
    edge_rng_w = seed ^ 0x5555;
    ck_assert_int_eq(pipe(edge_done), 0);
    for (int it = 0; it < EDGE_ITERS; it++) {
        /* pipes and socketpairs alternate on the same fd numbers: the descriptors
         * must cope with the number changing files behind their back */
        if (it % 3 == 0)
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, edge_fd), 0);
        else
            ck_assert_int_eq(pipe(edge_fd), 0);
        ck_assert_int_eq(gort_go(edge_reader, NULL), 0);
        ck_assert_int_eq(gort_go(edge_writer, NULL), 0);
        char buf[2];
        for (int got = 0; got < 2;) {
            int r = gort_wait_fd(edge_done[0], POLLIN, 10000 * MS);
            ck_assert_msg(r == POLLIN, "iteration %d: a worker never finished (lost edge?)",
                          it);
            ssize_t n = gort_read(edge_done[0], buf, (size_t)(2 - got));
            ck_assert_int_gt(n, 0);
            got += (int)n;
        }
        assert_no_worker_failure();
        close2(edge_fd);
    }
    close2(edge_done);
    ck_assert_int_eq(netpoll_waiters(), 0);
    assert_no_leaks();
}

START_TEST(edge_before_park_1p) { test_run(edge_main, NULL, 1, 0); }
END_TEST
START_TEST(edge_before_park_2p) { test_run(edge_main, NULL, 2, 0); }
END_TEST

/* -------------------------------------------------------- errors, bad fds */

static void bad_fd_main(void *arg)
{
    char c = 0;
    ck_assert_int_eq(gort_read(-1, &c, 1), -EBADF);
    ck_assert_int_eq(gort_write(-1, &c, 1), -EBADF);
    ck_assert_int_eq(gort_accept(-1, NULL, NULL), -EBADF);
    struct sockaddr_in a = {.sin_family = AF_INET};
    ck_assert_int_eq(gort_connect(-1, (struct sockaddr *)&a, sizeof a), -EBADF);
    ck_assert_int_eq(gort_wait_fd(-1, POLLIN, 10 * MS), -EBADF);
    /* a closed number, with and without a descriptor from earlier use */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(gort_write(p[1], "q", 1), 1);
    close2(p);
    ck_assert_int_eq(gort_read(p[0], &c, 1), -EBADF);
    ck_assert_int_eq(gort_write(p[1], &c, 1), -EBADF);
    ck_assert_int_eq(gort_wait_fd(p[0], POLLIN, 10 * MS), -EBADF);
    ck_assert_int_eq(gort_wait_fd(p[0], POLLIN, 0), -EBADF);
    ck_assert_int_eq(gort_accept(p[0], NULL, NULL), -EBADF);
    /* a huge number: no table of a billion slots, just -EBADF */
    ck_assert_int_eq(gort_read(1 << 29, &c, 1), -EBADF);
    ck_assert_int_eq(gort_wait_fd(1 << 29, POLLIN, 10 * MS), -EBADF);
    /* the wrong kind of fd */
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(gort_accept(p[0], NULL, NULL), -ENOTSOCK);
    ck_assert_int_eq(gort_connect(p[0], (struct sockaddr *)&a, sizeof a), -ENOTSOCK);
    ck_assert_int_eq(gort_read(p[1], &c, 1), -EBADF); /* write end of a pipe */
    close2(p);
    /* nobody listens: refused */
    struct sockaddr_in addr;
    int l = tcp_listen(&addr);
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(gort_connect(s, (struct sockaddr *)&addr, sizeof addr), -ECONNREFUSED);
    close(s);
    ck_assert_int_eq(netpoll_waiters(), 0);
    assert_no_leaks();
}

START_TEST(bad_fd) { test_run(bad_fd_main, NULL, 1, 0); }
END_TEST

/* ---------------------------------------------------------- peer close, EOF */

static int pc_fd[2];
static _Atomic long pc_result;

static void pc_reader(void *arg)
{
    GORT_FRAME();
    char c;
    atomic_store(&pc_result, gort_read(pc_fd[0], &c, 1));
    atomic_fetch_add(&done, 1);
}

static char pc_big[1 << 20];

static void pc_writer(void *arg)
{
    GORT_FRAME();
    /* fills the pipe, parks, and is woken by the reader's close */
    atomic_store(&pc_result, gort_write(pc_fd[1], pc_big, sizeof pc_big));
    atomic_fetch_add(&done, 1);
}

static void peer_close_main(void *arg)
{
    reset_counters();
    /* a parked reader sees EOF when the peer closes */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pc_fd), 0);
    atomic_store(&pc_result, -1000);
    ck_assert_int_eq(gort_go(pc_reader, NULL), 0);
    while (netpoll_waiters() == 0)
        gort_sleep(MS);
    close(pc_fd[1]);
    ck_assert(wait_done(1, 60000 * MS));
    ck_assert_int_eq(LD(&pc_result), 0);
    close(pc_fd[0]);
    /* a parked writer sees the reader go: the bytes it wrote, then -EPIPE */
    ck_assert_int_eq(pipe(pc_fd), 0);
    atomic_store(&pc_result, -1000);
    ck_assert_int_eq(gort_go(pc_writer, NULL), 0);
    while (netpoll_waiters() == 0)
        gort_sleep(MS);
    close(pc_fd[0]);
    ck_assert(wait_done(2, 60000 * MS));
    long r = atomic_load(&pc_result);
    ck_assert_int_gt(r, 0);
    ck_assert_int_lt(r, (long)sizeof pc_big);
    ck_assert_int_eq(gort_write(pc_fd[1], pc_big, 1), -EPIPE);
    close(pc_fd[1]);
    ck_assert_int_eq(netpoll_waiters(), 0);
    assert_no_leaks();
}

START_TEST(peer_close_1p)
{
    signal(SIGPIPE, SIG_IGN);
    test_run(peer_close_main, NULL, 1, 0);
}
END_TEST

/* ------------------------------------------- several waiters, waiter count */

enum { MW_READERS = 4 };
static int mw_pipe[2];
static _Atomic int mw_bytes;

static void mw_reader(void *arg)
{
    GORT_FRAME();
    char c = 0;
    WCHECK(gort_read(mw_pipe[0], &c, 1) == 1);
    WCHECK(c == 'm');
    atomic_fetch_add(&mw_bytes, 1);
    atomic_fetch_add(&done, 1);
}

static void mw_waiter(void *arg)
{
    GORT_FRAME();
    WCHECK(gort_wait_fd(mw_pipe[0], POLLIN, -1) == POLLIN);
    atomic_fetch_add(&done, 1);
}

static void multi_waiters_main(void *arg)
{
    reset_counters();
    atomic_store(&mw_bytes, 0);
    ck_assert_int_eq(pipe(mw_pipe), 0);
    for (int i = 0; i < MW_READERS; i++)
        ck_assert_int_eq(gort_go(mw_reader, NULL), 0);
    ck_assert_int_eq(gort_go(mw_waiter, NULL), 0);
    int64_t deadline = gort_now() + 60000 * MS;
    while (netpoll_waiters() < MW_READERS + 1 && gort_now() < deadline)
        gort_sleep(MS);
    ck_assert_int_eq(netpoll_waiters(), MW_READERS + 1);
    ck_assert_int_eq(LD(&done), 0);
    /* one byte at a time: each goes to exactly one reader */
    for (int i = 0; i < MW_READERS; i++) {
        ck_assert_int_eq(gort_write(mw_pipe[1], "m", 1), 1);
        while (atomic_load(&mw_bytes) < i + 1 && gort_now() < deadline)
            gort_sleep(MS);
        ck_assert_int_eq(LD(&mw_bytes), i + 1);
    }
    /* The waiter is owed no byte: each edge wakes every waiter, and a reader may drain
     * the byte before the waiter polls it (seen under TSan); it then waits on. One more
     * byte, which no reader is left to take, ends its wait. */
    ck_assert_int_eq(gort_write(mw_pipe[1], "m", 1), 1);
    ck_assert(wait_done(MW_READERS + 1, 60000 * MS));
    assert_no_worker_failure();
    ck_assert_int_eq(netpoll_waiters(), 0);
    close2(mw_pipe);
    assert_no_leaks();
}

START_TEST(multi_waiters_1p) { test_run(multi_waiters_main, NULL, 1, 0); }
END_TEST
START_TEST(multi_waiters_2p) { test_run(multi_waiters_main, NULL, 2, 0); }
END_TEST

/* ------------------------ user bugs that must not crash: close while waiting */

static int cw_pipe[2];
static _Atomic int cw_result;

static void cw_waiter(void *arg)
{
    GORT_FRAME();
    atomic_store(&cw_result, gort_wait_fd(cw_pipe[0], POLLIN, 50 * MS));
    atomic_fetch_add(&done, 1);
}

static void cw_stuck_reader(void *arg)
{
    GORT_FRAME();
    char c;
    gort_read(cw_pipe[0], &c, 1); /* the fd is closed under it: may never return */
    atomic_fetch_add(&done, 1);
}

static void close_while_waiting_main(void *arg)
{
    reset_counters();
    /* a timed wait on an fd closed under it ends (by the timeout, or -EBADF) */
    ck_assert_int_eq(pipe(cw_pipe), 0);
    atomic_store(&cw_result, 1000);
    ck_assert_int_eq(gort_go(cw_waiter, NULL), 0);
    while (netpoll_waiters() == 0)
        gort_sleep(MS);
    close2(cw_pipe);
    ck_assert(wait_done(1, 60000 * MS));
    int r = atomic_load(&cw_result);
    ck_assert_msg(r == -ETIMEDOUT || r == -EBADF, "result %d", r);
    /* a reader parked forever on a closed fd: main returns, the runtime tears down
     * cleanly (test_run checks that every byte went back) */
    ck_assert_int_eq(pipe(cw_pipe), 0);
    ck_assert_int_eq(gort_go(cw_stuck_reader, NULL), 0);
    while (netpoll_waiters() == 0)
        gort_sleep(MS);
    close2(cw_pipe);
    /* the numbers are reused by new files; I/O on them works */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(gort_write(p[1], "n", 1), 1);
    char c;
    ck_assert_int_eq(gort_read(p[0], &c, 1), 1);
    close2(p);
}

START_TEST(close_while_waiting_2p) { test_run(close_while_waiting_main, NULL, 2, 0); }
END_TEST

/* A file that gort made non-blocking is closed and its number reused by a blocking
 * one: gort_read must still park, not block the thread (with one P, a blocked thread
 * would never let the writer run). */
static int reuse_fd[2];

static void reuse_writer(void *arg)
{
    GORT_FRAME();
    gort_sleep(5 * MS);
    WCHECK(gort_write(reuse_fd[1], "u", 1) == 1);
    atomic_fetch_add(&done, 1);
}

static void fd_reuse_main(void *arg)
{
    reset_counters();
    for (int round = 0; round < 6; round++) {
        /* pipes and socketpairs, created blocking, on the same numbers */
        if (round % 2)
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, reuse_fd), 0);
        else
            ck_assert_int_eq(pipe(reuse_fd), 0);
        ck_assert_int_eq(gort_go(reuse_writer, NULL), 0);
        char c = 0;
        ck_assert_int_eq(gort_read(reuse_fd[0], &c, 1), 1);
        ck_assert_int_eq(c, 'u');
        ck_assert(wait_done(round + 1, 60000 * MS));
        close2(reuse_fd);
    }
    assert_no_worker_failure();
    assert_no_leaks();
}

START_TEST(fd_reuse_1p) { test_run(fd_reuse_main, NULL, 1, 0); }
END_TEST

/* -------------------------------------------------------------- outside a task */

static int out_pipe[2];

static void *out_late_writer(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ssize_t r = write(out_pipe[1], "o", 1);
    (void)r;
    return NULL;
}

START_TEST(outside_a_task)
{
    ck_assert_uint_eq(gort_self(), 0);
    char c = 0;
    /* blocking pipe: plain blocking calls */
    ck_assert_int_eq(pipe(out_pipe), 0);
    ck_assert_int_eq(gort_write(out_pipe[1], "a", 1), 1);
    ck_assert_int_eq(gort_read(out_pipe[0], &c, 1), 1);
    ck_assert_int_eq(c, 'a');
    ck_assert_int_eq(fcntl(out_pipe[0], F_GETFL) & O_NONBLOCK, 0); /* flags untouched */
    /* non-blocking pipe: EAGAIN turns into a poll() that waits for the writer */
    ck_assert_int_eq(fcntl(out_pipe[0], F_SETFL, O_NONBLOCK), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, out_late_writer, NULL), 0);
    ck_assert_int_eq(gort_read(out_pipe[0], &c, 1), 1);
    ck_assert_int_eq(c, 'o');
    pthread_join(th, NULL);
    /* wait_fd: timeout (not early), readiness, bad arguments */
    int64_t t0 = gort_now();
    ck_assert_int_eq(gort_wait_fd(out_pipe[0], POLLIN, 20 * MS), -ETIMEDOUT);
    ck_assert_int_ge(gort_now() - t0, 20 * MS);
    ck_assert_int_eq(gort_wait_fd(out_pipe[1], POLLOUT, -1), POLLOUT);
    ck_assert_int_eq(gort_wait_fd(out_pipe[0], POLLIN, 0), -ETIMEDOUT);
    ck_assert_int_eq(gort_wait_fd(out_pipe[0], 0, 0), -EINVAL);
    close2(out_pipe);
    ck_assert_int_eq(gort_read(out_pipe[0], &c, 1), -EBADF);
    ck_assert_int_eq(gort_write(out_pipe[1], "a", 1), -EBADF);
    ck_assert_int_eq(gort_wait_fd(out_pipe[0], POLLIN, 10 * MS), -EBADF);
    /* TCP on loopback: connect completes into the backlog, then accept */
    struct sockaddr_in addr;
    int l = tcp_listen(&addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(gort_connect(s, (struct sockaddr *)&addr, sizeof addr), 0);
    int a = gort_accept(l, NULL, NULL);
    ck_assert_int_ge(a, 0);
    ck_assert(fcntl(a, F_GETFL) & O_NONBLOCK);
    ck_assert(fcntl(a, F_GETFD) & FD_CLOEXEC);
    ck_assert_int_eq(gort_write(s, "t", 1), 1);
    ck_assert_int_eq(gort_read(a, &c, 1), 1); /* non-blocking accepted fd: poll path */
    ck_assert_int_eq(c, 't');
    close(a);
    close(s);
    close(l);
}
END_TEST

/* Two runtimes in a row, both doing I/O: the poller starts clean each time. */
static void tiny_io_main(void *arg)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(gort_write(p[1], "r", 1), 1);
    char c;
    ck_assert_int_eq(gort_read(p[0], &c, 1), 1);
    ck_assert_int_eq(gort_wait_fd(p[0], POLLIN, 2 * MS), -ETIMEDOUT);
    close2(p);
}

START_TEST(two_runtimes)
{
    test_run(tiny_io_main, NULL, 1, 0);
    test_run(tiny_io_main, NULL, 2, 0);
}
END_TEST

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("io");
    tcase_set_timeout(tc, 100);
    tcase_add_test(tc, pipe_pingpong_1p);
    tcase_add_test(tc, pipe_pingpong_2p);
    tcase_add_test(tc, socketpair_echo_2p);
    tcase_add_test(tc, tcp_echo_1p);
    tcase_add_test(tc, tcp_echo_2p);
    tcase_add_test(tc, multi_accept_2p);
    tcase_add_test(tc, wait_fd_1p);
    tcase_add_test(tc, wait_fd_2p);
    tcase_add_test(tc, wait_fd_race_2p);
    tcase_add_test(tc, tiny_timeouts_1p);
    tcase_add_test(tc, tiny_timeouts_2p);
    tcase_add_test(tc, edge_before_park_1p);
    tcase_add_test(tc, edge_before_park_2p);
    tcase_add_test(tc, bad_fd);
    tcase_add_test(tc, peer_close_1p);
    tcase_add_test(tc, multi_waiters_1p);
    tcase_add_test(tc, multi_waiters_2p);
    tcase_add_test(tc, close_while_waiting_2p);
    tcase_add_test(tc, fd_reuse_1p);
    tcase_add_test(tc, outside_a_task);
    tcase_add_test(tc, two_runtimes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return test_main(io_suite()); }
