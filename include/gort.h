/* gort.h — the one public header of gort, a goroutine runtime for C.
 *
 * Conventions (docs/errors.md says each code once):
 *  - Calls return 0 (or a count) or a negative errno; a failed call changed nothing.
 *  - "blocks": may park the calling task until something happens.
 *  - "switches": may run other tasks on this thread before returning.
 *  - "moves": the calling task's stack may move (grow) during the call; pointers into it
 *    held in the task's own frames are relocated, pointers stored elsewhere are not.
 *  - The task calls that block, switch or take a pointer (channel send/recv/try/close,
 *    select, the sync objects, yield, sleep, spawn, after, the ctx calls, the IO calls)
 *    begin with GORT_FRAME's stack check: each also moves (a growth point; every call,
 *    under GORT_DEBUG=stackmove=1) and switches (a cooperative preemption point).
 *  - Calls that need a task return -EPERM outside one (or do nothing, for void calls).
 *  - An object two tasks share (mutex, channel, buffer) lives in the heap or in a global,
 *    never on one task's stack: stacks move.
 */
#ifndef GORT_H
#define GORT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GORT_API __attribute__((visibility("default")))
#else
#define GORT_API
#endif

/* ---------------------------------------------------------------- runtime */

enum { GORT_PREEMPT_ASYNC = 0, GORT_PREEMPT_COOP = 1, GORT_PREEMPT_OFF = 2 };

typedef struct gort_config {
    int procs;             /* number of Ps; 0 = online CPUs (env GORT_PROCS wins) */
    size_t stack_min;      /* initial task stack; 0 = 2048 */
    size_t stack_max;      /* growth limit per task; 0 = 1 GiB */
    size_t main_stack;     /* main task's initial stack; 0 = 64 KiB */
    uint32_t timeslice_us; /* preemption slice; 0 = 10000 (env GORT_TIMESLICE_US wins) */
    int preempt;           /* GORT_PREEMPT_ASYNC (default) | _COOP | _OFF */
} gort_config_t;

/* Runs main_fn(arg) as the main task on a fresh runtime and returns when it returns (0;
 * tasks still alive are discarded, as when a Go main returns), or -EDEADLK after printing
 * "all tasks are asleep - deadlock!" and the task dump when every task is blocked
 * forever. Tears everything down, so it can run again. -EINVAL: bad config or NULL fn;
 * -EBUSY: called while a runtime is running; -ENOMEM, -EAGAIN: resources. */
GORT_API int gort_run(void (*main_fn)(void *), void *arg, const gort_config_t *cfg /*NULL ok*/);

/* ------------------------------------------------------------------ tasks */

/* Spawns fn(arg) as a new task; it runs later, on any thread. Does not block or switch.
 * -EINVAL: NULL fn; -EPERM: outside a task; -ENOMEM: no memory (fn never runs). */
GORT_API int gort_go(void (*fn)(void *), void *arg);
/* As gort_go, but copies size bytes at args into the task's own memory (freed when the
 * task ends) and passes fn the copy. -EINVAL: NULL fn, or size > 0 with NULL args. */
GORT_API int gort_go_with(void (*fn)(void *), const void *args, size_t size);
typedef struct gort_go_opts {
    const char *name; /* shown in dumps and leak reports; copied; NULL ok */
    size_t stack_min; /* initial stack of this task; 0 = the runtime's */
    size_t args_size; /* > 0: copy args_size bytes at arg, as gort_go_with */
} gort_go_opts_t;
GORT_API int gort_go_opts(const gort_go_opts_t *o /*NULL ok*/, void (*fn)(void *), void *arg);

GORT_API void gort_yield(void);        /* switches: lets other runnable tasks run */
/* blocks for at least ns (<= 0: yields); outside a task it sleeps the thread */
GORT_API void gort_sleep(int64_t ns);
GORT_API int64_t gort_now(void);       /* monotonic ns; anywhere */
GORT_API uint64_t gort_self(void);     /* task id (1 = main task), 0 outside a task */
GORT_API void gort_exit(void);         /* ends the calling task; never returns in a task */
GORT_API size_t gort_ntasks(void);     /* live tasks; 0 when no runtime runs */
/* Pins the calling task to its current thread (thread-locals stay valid) until the
 * matching unlock; nestable. */
GORT_API void gort_lock_thread(void);
GORT_API void gort_unlock_thread(void);
/* No asynchronous preemption inside (e.g. while holding an OS lock); nestable. */
GORT_API void gort_nopreempt_begin(void);
GORT_API void gort_nopreempt_end(void);

/* --------------------------------------------------------------- channels */

typedef struct gort_chan gort_chan_t;
/* A channel of capacity elements of elem_size bytes (0 = unbuffered); NULL on no memory.
 * Needs no task. elem_size may be 0 (signals only). */
GORT_API gort_chan_t *gort_chan_make(size_t elem_size, size_t capacity);
/* blocks, switches. Copies elem_size bytes from elem. -EPIPE: closed (at once, or
 * closed while waiting); -EINVAL: NULL channel, or NULL elem with elem_size > 0. */
GORT_API int gort_chan_send(gort_chan_t *c, const void *elem);
/* blocks, switches. Copies into out (NULL ok: value dropped). -EPIPE: closed and empty. */
GORT_API int gort_chan_recv(gort_chan_t *c, void *out /*NULL ok*/);
GORT_API int gort_chan_try_send(gort_chan_t *c, const void *elem); /* -EAGAIN, -EPIPE */
GORT_API int gort_chan_try_recv(gort_chan_t *c, void *out /*NULL ok*/); /* -EAGAIN, -EPIPE */
/* Wakes every blocked receiver and sender (-EPIPE); buffered values stay receivable.
 * -EPIPE: already closed; -EINVAL: NULL. Does not block. */
GORT_API int gort_chan_close(gort_chan_t *c);
/* Frees c: 0, or -EBUSY (nothing freed) while tasks are blocked on it; NULL ok. */
GORT_API int gort_chan_free(gort_chan_t *c);
GORT_API size_t gort_chan_len(const gort_chan_t *c); /* buffered values now; 0 for NULL */
GORT_API size_t gort_chan_cap(const gort_chan_t *c);

enum { GORT_SEND = 1, GORT_RECV = 2 };
typedef struct gort_case {
    gort_chan_t *chan; /* in: NULL = this case never proceeds */
    int op;            /* in: GORT_SEND | GORT_RECV */
    void *elem;        /* in: value to send / where to receive (NULL ok for recv) */
    int result;        /* out: 0, or -EPIPE (closed) for the case that proceeded */
} gort_case_t;
/* Waits until one case can proceed and performs it; returns its index (uniformly random
 * among ready cases), -ETIMEDOUT when timeout_ns passes first (0 = never block, < 0 =
 * forever; n == 0 with timeout < 0 blocks forever), -EINVAL for a bad op, n too large
 * (> 65536) or NULL cases with n > 0. blocks, switches. */
GORT_API int gort_select(gort_case_t *cases, size_t n, int64_t timeout_ns);

/* ------------------------------------------------------------------- sync */
/* Zero-initialised memory is a valid unlocked/empty object; embeddable; no owners
 * (any task may unlock). Never on any global list. Must not live on a task stack when
 * shared. The lock calls block and switch; every call here begins with the stack check
 * of the conventions above (moves, switches). */
typedef struct gort_mutex { uint64_t opaque_[4]; } gort_mutex_t;
GORT_API void gort_mutex_lock(gort_mutex_t *mu);
GORT_API int gort_mutex_trylock(gort_mutex_t *mu); /* 0 or -EBUSY */
GORT_API void gort_mutex_unlock(gort_mutex_t *mu);  /* unlocking an unlocked mutex: fatal */

typedef struct gort_rwmutex { uint64_t opaque_[12]; } gort_rwmutex_t;
GORT_API void gort_rwmutex_rlock(gort_rwmutex_t *rw);
GORT_API void gort_rwmutex_runlock(gort_rwmutex_t *rw);
GORT_API void gort_rwmutex_lock(gort_rwmutex_t *rw);
GORT_API void gort_rwmutex_unlock(gort_rwmutex_t *rw);

typedef struct gort_cond { uint64_t opaque_[4]; } gort_cond_t;
GORT_API void gort_cond_wait(gort_cond_t *cv, gort_mutex_t *mu); /* unlocks, waits, relocks */
GORT_API void gort_cond_signal(gort_cond_t *cv);
GORT_API void gort_cond_broadcast(gort_cond_t *cv);

typedef struct gort_wg { uint64_t opaque_[4]; } gort_wg_t;
GORT_API int gort_wg_add(gort_wg_t *wg, int64_t n); /* -ERANGE: count would go negative */
GORT_API int gort_wg_done(gort_wg_t *wg);           /* add(-1) */
GORT_API void gort_wg_wait(gort_wg_t *wg);          /* blocks until the count is 0 */

typedef struct gort_once { uint64_t opaque_[6]; } gort_once_t;
GORT_API void gort_once(gort_once_t *o, void (*fn)(void)); /* fn runs once; others wait */

/* ------------------------------------------------- time and cancellation */

/* A channel (elem int64_t, capacity 1) that receives gort_now() once, ns from now
 * (ns <= 0: already holds it). The caller frees it with gort_chan_free once the value
 * came (received, or gort_chan_len == 1); freeing it earlier is a use after free when
 * the timer fires. If the runtime ends first, the runtime frees its timer and the
 * channel stays the caller's. NULL on no memory, or when no runtime runs. Does not
 * block. For a timeout inside a select, gort_select's timeout_ns needs no freeing. */
GORT_API gort_chan_t *gort_after(int64_t ns);

/* Cancellation contexts (docs/time.md). NULL is the background context: never
 * cancelled, its done channel is NULL. None of these calls blocks; cancel and free may
 * wait a moment for a timeout that is firing. A context is freed only by its owner,
 * once no task uses it; freeing a parent cancels its children, which stay valid until
 * their own free. NULL on no memory (with_timeout: also when no runtime runs). */
typedef struct gort_ctx gort_ctx_t;
GORT_API gort_ctx_t *gort_ctx_with_cancel(gort_ctx_t *parent /*NULL = background*/);
/* Cancelled with -ETIMEDOUT ns from now (ns <= 0: at once), or earlier with the
 * parent's error. */
GORT_API gort_ctx_t *gort_ctx_with_timeout(gort_ctx_t *parent /*NULL ok*/, int64_t ns);
GORT_API void gort_ctx_cancel(gort_ctx_t *ctx);          /* cancels ctx and its children */
GORT_API gort_chan_t *gort_ctx_done(gort_ctx_t *ctx);    /* closed when cancelled */
GORT_API int gort_ctx_err(gort_ctx_t *ctx);              /* 0, -ECANCELED, -ETIMEDOUT */
GORT_API void gort_ctx_free(gort_ctx_t *ctx);            /* cancels, detaches, frees */

/* ---------------------------------------------------- I/O, blocking calls */

/* Like read/write/accept/connect on any fd, but park only the task while the fd is not
 * ready (the fd is put in non-blocking mode). Return -errno on failure. blocks. */
GORT_API ssize_t gort_read(int fd, void *buf, size_t n);
GORT_API ssize_t gort_write(int fd, const void *buf, size_t n);
GORT_API int gort_accept(int fd, struct sockaddr *a /*NULL ok*/, socklen_t *l /*NULL ok*/);
GORT_API int gort_connect(int fd, const struct sockaddr *a, socklen_t l);
/* Waits until fd is ready for events (POLLIN/POLLOUT): returns the ready events,
 * -ETIMEDOUT, or -errno. */
GORT_API int gort_wait_fd(int fd, int events, int64_t timeout_ns);
/* Bracket a call that may block the thread in the kernel: the thread's processor goes
 * on running other tasks meanwhile. */
GORT_API void gort_syscall_enter(void);
GORT_API void gort_syscall_exit(void);

/* ----------------------------------------------------------------- stacks */

/* The stack guard of the running task (0 outside a task). Read only by GORT_FRAME. */
extern __thread uintptr_t gort_tls_stackguard
    __attribute__((tls_model("initial-exec"), visibility("default")));
/* Entered by GORT_FRAME's slow path only (all registers preserved). */
GORT_API void gort_morestack(void);

#if defined(__x86_64__)
/* Three instructions on the fast path: load the guard, compare, branch. The slow path is
 * an inline-asm call below the red zone to a trampoline that preserves every register,
 * so the compiler needs to spill nothing around it. */
#define GORT_FRAME_CHECK_()                                                        \
    __asm__ volatile("movq gort_tls_stackguard@gottpoff(%%rip), %%r11\n\t"         \
                     "cmpq %%fs:(%%r11), %%rsp\n\t"                                  \
                     "jb 2f\n"                                                       \
                     "1:\n\t"                                                        \
                     ".pushsection .text.unlikely,\"ax\",@progbits\n"                \
                     "2:\n\t"                                                        \
                     "leaq -128(%%rsp), %%rsp\n\t"                                   \
                     "call gort_morestack@PLT\n\t"                                   \
                     "leaq 128(%%rsp), %%rsp\n\t"                                    \
                     "jmp 1b\n\t"                                                    \
                     ".popsection"                                                   \
                     ::: "r11", "cc", "memory")
#else
#error "gort: GORT_FRAME is implemented for x86-64 only so far"
#endif

/* Frame maps (stackmap/README.md). One static record per GORT_FRAME / GORT_NOPTR site,
 * filled on the site's first run and pushed on the runtime's registry; never freed.
 * Offsets are relative to the frame's CFA (rbp + 16 with frame pointers). */
#define GORT_FRAME_MAX 16
enum { GORT_FRAMEMAP_PTR = 1, GORT_FRAMEMAP_NOPTR = 2 };
typedef struct gort_framemap {
    int state;                     /* 0 new, 1 being filled, 2 registered (atomic) */
    int kind;                      /* GORT_FRAMEMAP_PTR | _NOPTR; written once */
    unsigned n;                    /* slots used; written once */
    void *pc;                      /* a code address in the function; written once */
    struct gort_framemap *next;    /* registry list; the runtime's */
    struct gort_framemap *fnext;   /* per-function list; the runtime's */
    int32_t off[GORT_FRAME_MAX];   /* CFA-relative offset of each slot */
    uint32_t size[GORT_FRAME_MAX]; /* bytes of each slot */
} gort_framemap_t;
/* Registers m (called once per site by the macros; the caller is the frame owner).
 * Never blocks, switches or moves. */
GORT_API void gort_framemap_register(gort_framemap_t *m, int kind, const void *frame,
                                     const void *const *addrs, const uint32_t *sizes,
                                     unsigned n);

#define GORT_FM_CAT_(a, b) a##b
#define GORT_FM_CAT(a, b) GORT_FM_CAT_(a, b)
#define GORT_FM_NARG_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15,  \
                      _16, N, ...) N
#define GORT_FM_NARG(...)                                                              \
    GORT_FM_NARG_(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define GORT_FM_E1(M, a) M(a)
#define GORT_FM_E2(M, a, ...) M(a), GORT_FM_E1(M, __VA_ARGS__)
#define GORT_FM_E3(M, a, ...) M(a), GORT_FM_E2(M, __VA_ARGS__)
#define GORT_FM_E4(M, a, ...) M(a), GORT_FM_E3(M, __VA_ARGS__)
#define GORT_FM_E5(M, a, ...) M(a), GORT_FM_E4(M, __VA_ARGS__)
#define GORT_FM_E6(M, a, ...) M(a), GORT_FM_E5(M, __VA_ARGS__)
#define GORT_FM_E7(M, a, ...) M(a), GORT_FM_E6(M, __VA_ARGS__)
#define GORT_FM_E8(M, a, ...) M(a), GORT_FM_E7(M, __VA_ARGS__)
#define GORT_FM_E9(M, a, ...) M(a), GORT_FM_E8(M, __VA_ARGS__)
#define GORT_FM_E10(M, a, ...) M(a), GORT_FM_E9(M, __VA_ARGS__)
#define GORT_FM_E11(M, a, ...) M(a), GORT_FM_E10(M, __VA_ARGS__)
#define GORT_FM_E12(M, a, ...) M(a), GORT_FM_E11(M, __VA_ARGS__)
#define GORT_FM_E13(M, a, ...) M(a), GORT_FM_E12(M, __VA_ARGS__)
#define GORT_FM_E14(M, a, ...) M(a), GORT_FM_E13(M, __VA_ARGS__)
#define GORT_FM_E15(M, a, ...) M(a), GORT_FM_E14(M, __VA_ARGS__)
#define GORT_FM_E16(M, a, ...) M(a), GORT_FM_E15(M, __VA_ARGS__)
#define GORT_FM_EACH(M, ...) GORT_FM_CAT(GORT_FM_E, GORT_FM_NARG(__VA_ARGS__))(M, __VA_ARGS__)
#define GORT_FM_ADDR_(x) ((const void *)&(x))
#define GORT_FM_SIZE_(x) ((uint32_t)sizeof(x))

/* The registration of one site: a relaxed load and a branch on the fast path; the
 * first run records &x - CFA for each listed variable (taking the address also keeps
 * each variable in its stack slot across calls, where the mover can find it). */
#define GORT_FRAMEMAP_(kind, ...)                                                       \
    do {                                                                                \
        static gort_framemap_t gort_fm_;                                                \
        if (__builtin_expect(!__atomic_load_n(&gort_fm_.state, __ATOMIC_RELAXED), 0)) { \
            const void *const gort_fa_[] = {GORT_FM_EACH(GORT_FM_ADDR_, __VA_ARGS__)};  \
            const uint32_t gort_fs_[] = {GORT_FM_EACH(GORT_FM_SIZE_, __VA_ARGS__)};     \
            gort_framemap_register(&gort_fm_, kind, __builtin_frame_address(0),         \
                                   gort_fa_, gort_fs_,                                  \
                                   (unsigned)(sizeof gort_fs_ / sizeof gort_fs_[0]));   \
        }                                                                               \
    } while (0)

/* First statement of a task function: checks the stack and, when short, grows it (or
 * yields, when the scheduler asked the task to). GORT_FRAME(a, b) also names up to 16
 * pointer locals/parameters that may point into the task's stack (frame maps: see
 * stackmap/README.md); GORT_FRAME() only checks (three instructions). moves, switches.
 * Task code must keep frame pointers (-fno-omit-frame-pointer). */
#define GORT_FRAME(...)                                                                 \
    do {                                                                                \
        __VA_OPT__(GORT_FRAMEMAP_(GORT_FRAMEMAP_PTR, __VA_ARGS__);)                     \
        GORT_FRAME_CHECK_();                                                            \
    } while (0)
/* In a frame: the variable x never holds a stack pointer (never relocated, even when
 * its value happens to lie in the stack's range: hash keys made from addresses, say). */
#define GORT_NOPTR(x) GORT_FRAMEMAP_(GORT_FRAMEMAP_NOPTR, x)

/* Grows the stack now so that `bytes` are free below the caller (plus the slack for
 * uninstrumented leaf calls). moves. 0 when done (or already enough room); -E2BIG past
 * stack_max; -ENOMEM; -EPERM outside a task or on a system stack. */
GORT_API int gort_stack_reserve(size_t bytes);
/* Runs fn(arg) on the thread's large system stack and returns its result; for deep
 * uninstrumented code (stdio, getaddrinfo, qsort). fn must not call blocking gort calls.
 * Outside a task it simply calls fn. */
GORT_API void *gort_on_system_stack(void *(*fn)(void *), void *arg);

/* ------------------------------------------------------ introspection, leaks */

typedef struct gort_stats {
    uint64_t tasks_live;     /* tasks not yet finished */
    uint64_t tasks_created;  /* since gort_run started */
    uint64_t switches;       /* task switches */
    uint64_t steals;         /* successful run-queue steals */
    uint64_t preempt_async;  /* asynchronous preemptions */
    uint64_t preempt_coop;   /* cooperative preemptions (guard poisoned) */
    uint64_t stack_grows;
    uint64_t stack_shrinks;
    uint64_t stack_bytes;    /* bytes of stack currently held by tasks */
    uint64_t stack_pool_bytes; /* bytes of free stacks kept in the pool */
    uint64_t procs;          /* Ps */
    uint64_t threads;        /* Ms started */
    uint64_t reserved_[20];
} gort_stats_t;
GORT_API void gort_stats(gort_stats_t *out); /* zeroes when no runtime runs */

/* Prints every task: id, name, state, wait reason and object, blocked for, spawn site
 * (also on SIGQUIT). Returns the number of tasks printed, or -EINVAL for NULL. */
GORT_API int gort_dump_tasks(FILE *out);

typedef struct gort_leak {
    uint64_t id;
    const char *name;       /* NULL if unnamed */
    const char *wait;       /* "chan receive", "select", "mutex lock", ... */
    const void *object;     /* what it waits on */
    int64_t blocked_ns;
    const char *spawn_site; /* "fn+0x12 (file:line)" */
} gort_leak_t;
/* Runs the leak detector now (a gc cycle: stops the world at safe points, marks,
 * resumes); fills up to max entries (out NULL ok) and returns the count of leaked tasks
 * (may exceed max), 0 outside a runtime, -EPERM outside a task, -EAGAIN when some
 * running task did not reach a safe point within 1 s, -ENOMEM; -ENOTSUP under
 * GORT_DEBUG=trackheap=1 when libgort_trackheap is not linked (gort_trackheap_status).
 * What it can see: by default the program's heap is a root, so a channel kept only in a
 * malloc'd struct that only leaked tasks reference is missed (never a false report);
 * with libgort_trackheap linked, malloc'd blocks are traced and such leaks are found
 * (gc/README.md, "Tracked heap"). `name` stays valid while
 * the task lives, `spawn_site` for the life of the process. Task context; switches
 * (the caller yields while another cycle runs); does not move the caller's stack. */
GORT_API int gort_leaks(gort_leak_t *out, size_t max);
/* For test teardown: runs the detector, prints a report of the leaked tasks grouped by
 * identical stacks to `report` (NULL ok: silent) and returns their count (0 = none), or
 * a negative errno as gort_leaks. With GORT_DEBUG=leakcheck=cancel it also cancels
 * them, as gort_leaks_cancel. */
GORT_API int gort_leakcheck(FILE *report);
/* Runs the detector and sets the leaked tasks free: the blocked channel send/receive or
 * select of each leaked task returns -ECANCELED, so it can unwind and free what it
 * holds. Tasks leaked on a mutex, rwmutex, cond, wait group, nil channel or empty
 * select stay as they are. Returns the number of tasks cancelled, or a negative errno
 * as gort_leaks. Safe only for code that treats an error from a blocking channel
 * operation as "give up" (docs: gc/README.md). Task context; switches. */
GORT_API int gort_leaks_cancel(void);
/* Periodic leak checks: from now on a gc cycle runs every ms milliseconds (at the first
 * scheduling point after that time) and prints the tasks it finds leaked to stderr,
 * each task once, grouped as gort_leakcheck does; 0 stops them. Also set for the
 * whole run by GORT_DEBUG=leakcheck_interval_ms=N. They pause while every task is
 * blocked and no timer is queued, so gort_run still reports a deadlock. (Not a
 * gort_config_t field: that struct's size is fixed ABI.) 0, -EPERM outside a task,
 * -ENOTSUP as gort_leaks.
 * Does not block. */
GORT_API int gort_leakcheck_interval(uint32_t ms);
/* Tracked-heap mode: whether the leak detector traces the program's malloc'd memory.
 * It does when the program links libgort_trackheap before libc and jemalloc
 * (`-lgort_trackheap -lgort`, pkg-config gort_trackheap, CMake gort::trackheap) or runs
 * with LD_PRELOAD=libgort_trackheap.so: that library becomes the program's malloc and
 * records every block. GORT_DEBUG=trackheap=0 turns the tracing off with the layer
 * present; trackheap=1 without it makes the detector's calls return -ENOTSUP (and
 * prints one line). Returns 1 when this run traces the heap, 0 when the heap is a root,
 * -ENOTSUP when trackheap=1 found no layer; outside a run, 1 if the layer is linked,
 * else 0. Any thread. Cost of the layer: perf/README.md ("malloc"). */
GORT_API int gort_trackheap_status(void);

#ifdef __cplusplus
}
#endif
#endif /* GORT_H */
