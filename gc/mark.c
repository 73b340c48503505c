/* gc/mark.c — conservative marking from the roots, to a fixed point over blocked tasks.
 *
 * Roots (scanned word by word, every aligned word that points anywhere inside a
 * registered runtime object marks that object):
 *  - every writable private mapping of /proc/self/maps (globals of every loaded object,
 *    the program's heap, threads that are not Ms) minus what the runtime owns: the
 *    runtime arena's extents, the stack pool's chunks, the gc's own maps, and the Ms'
 *    thread stacks;
 *  - each M's thread stack from g0's saved sp up (below it: dead system-stack frames,
 *    whose stale words would hide leaks);
 *  - tasks that can run or be woken by something other than a task: running (the
 *    stopper, from its sp), runnable, in a system call (whole stack), sleeping, waiting
 *    for I/O, and any task whose stack holds a queued timer (select with a timeout);
 *    a root task's stack [sp, hi), and what its record holds for it: its argument (a
 *    task not started yet has it nowhere else), args copy, wake-up parameter and
 *    vector-state save area;
 *  - queued timers elsewhere (gort_after, contexts with a deadline): the timer and its
 *    argument.
 * Runtime objects are traced, not roots (a channel marks what its buffer holds), except
 * task records and the allg array: tracing those would mark every wait object.
 * A blocked task becomes a root when its wait object is reachable: the object is a
 * marked runtime object, lies in a root task's stack, or lies anywhere else (the
 * program's heap and globals are roots in this mode, so an object there is reachable).
 * For a select, any of its channels; a nil channel or an empty select is never
 * reachable. Repeated until nothing changes; the tasks left are leaked.
 * No false positives: every doubt (an address we cannot classify, an object the registry
 * lost) counts as reachable.
 * Tracked-heap mode (gc/tracked.c): the program's malloc'd blocks are objects like
 * runtime ones (their arena is not a root), and the layer's registry stays frozen from
 * the snapshot to the end of the fixed point, so no block is freed under the scan.
 * Context: sysstack of the stopper, world stopped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/chan.h"
#include "core/sched_impl.h"
#include "gc/gc.h"

/* stackpool.c accessor (additive, core/stackpool.c) */
size_t stackpool_chunks(void **out, size_t *sizes, size_t max);

enum { TASK_CAND = 0, TASK_ROOT = 1 };

typedef struct task_ent {
    g_t *g;
    uint8_t state;   /* TASK_CAND or TASK_ROOT */
    uint8_t kind;    /* 0 root kind, 1 chan/sync object, 2 select, 3 never wakes */
} task_ent_t;

typedef struct marker {
    range_t *objs;      /* sorted registered objects */
    size_t nobjs;
    uintptr_t objs_lo, objs_hi;
    uint32_t *bucket_first; /* per 2^bucket_shift bytes from objs_lo: the first object
                               whose hi lies above the bucket's start (NULL: none) */
    size_t nbuckets;
    unsigned bucket_shift;
    uint8_t *marks;     /* per object: 1 marked */
    uint32_t *work;     /* object indices to trace */
    size_t nwork;
    range_t *stacks;    /* lo = stack lo, hi = index into tasks; sorted by lo */
    size_t nstacks;
    task_ent_t *tasks;
    size_t ntasks;
    range_t *maps;      /* readable+writable private mappings, sorted */
    size_t nmaps;
    range_t *excl;      /* runtime-owned, sorted, merged */
    size_t nexcl;
} marker_t;

/* ------------------------------------------------------------ lookups */

/* The lookup every scanned word makes. A binary search over all objects missed the
 * cache at nearly every step with millions of tracked blocks (60% of such a cycle):
 * the bucket index narrows it to the few objects of one address bucket first. */
static inline ptrdiff_t obj_find(const marker_t *mk, uintptr_t v)
{
    if (v < mk->objs_lo || v >= mk->objs_hi)
        return -1;
    size_t lo = 0, hi = mk->nobjs;
    if (mk->bucket_first) {
        size_t b = (v - mk->objs_lo) >> mk->bucket_shift;
        /* the object holding v starts at or after first[b] (objects ending before the
         * bucket cannot hold v) and at or before first[b+1] (one that reaches into the
         * next bucket is that bucket's first) */
        lo = mk->bucket_first[b];
        hi = b + 1 < mk->nbuckets ? (size_t)mk->bucket_first[b + 1] + 1 : mk->nobjs;
        if (hi > mk->nobjs)
            hi = mk->nobjs;
    }
    lo = ranges_upper(mk->objs, lo, hi, v);
    if (lo == 0)
        return -1;
    const range_t *r = &mk->objs[lo - 1];
    return v < r->hi ? (ptrdiff_t)(lo - 1) : -1;
}

/* Task index whose stack holds v, or -1. */
static ptrdiff_t stack_find(const marker_t *mk, uintptr_t v)
{
    size_t lo = ranges_upper(mk->stacks, 0, mk->nstacks, v);
    if (lo == 0)
        return -1;
    task_ent_t *t = &mk->tasks[mk->stacks[lo - 1].hi];
    return v < t->g->stack_hi ? (ptrdiff_t)mk->stacks[lo - 1].hi : -1;
}

/* Objects that are never traced: task records are not even objects (they hold every
 * wait object; rt_alloc_untraced keeps them out of the table), the allg array (it
 * holds every task record), Ps and Ms and what an M owns (stale words:
 * m->defer_lock points into the last channel a task parked on; the SIGURG altstack
 * and the vector save areas hold register dumps of interrupted tasks). Their live
 * contents, tasks and timers, are handled as roots explicitly. */
static void opaque_add(marker_t *mk, const void *p)
{
    /* marked before marking starts, so no word that points into it queues it: one
     * byte read per hit, where a 256-entry list of opaque starts was searched at every
     * newly marked object (134 -> 117 ms a cycle over 1M tracked blocks, and no cap) */
    ptrdiff_t i = p ? obj_find(mk, (uintptr_t)p) : -1;
    if (i >= 0)
        mk->marks[i] = 1;
}

static GORT_NO_ASAN void opaque_build(marker_t *mk)
{
    opaque_add(mk, allg);
    opaque_add(mk, sched.allp);
    for (int i = 0; i < sched.nprocs; i++)
        opaque_add(mk, sched.allp[i]);
    for (m_t *m = sched.allm; m; m = m->all_link) {
        opaque_add(mk, m);
        opaque_add(mk, m->xsave_scratch);
        /* preempt/'s per-M state and every runtime object it points to (altstack,
         * spare xsave area): its layout is preempt/'s, so its words are looked up */
        ptrdiff_t k = m->preempt ? obj_find(mk, (uintptr_t)m->preempt) : -1;
        if (k < 0)
            continue;
        opaque_add(mk, m->preempt);
        for (const uintptr_t *w = (const uintptr_t *)mk->objs[k].lo;
             (uintptr_t)(w + 1) <= mk->objs[k].hi; w++)
            opaque_add(mk, (const void *)*w);
    }
}

static inline void mark_word(marker_t *mk, uintptr_t v)
{
    ptrdiff_t i = obj_find(mk, v);
    if (i < 0 || mk->marks[i])
        return;
    mk->marks[i] = 1;
    mk->work[mk->nwork++] = (uint32_t)i;
}

/* Reads raw words: redzones, other tasks' stacks (GORT_NO_ASAN, core/rt.h). */
static GORT_NO_ASAN void scan_words(marker_t *mk, uintptr_t a, uintptr_t b)
{
    a = (a + 7) & ~(uintptr_t)7;
    for (const uintptr_t *w = (const uintptr_t *)a; (uintptr_t)(w + 1) <= b; w++) {
        uintptr_t v = *w;
        if (v >= mk->objs_lo && v < mk->objs_hi)
            mark_word(mk, v);
    }
}

static void drain(marker_t *mk)
{
    while (mk->nwork) {
        const range_t *r = &mk->objs[mk->work[--mk->nwork]];
        scan_words(mk, r->lo, r->hi);
    }
}

/* Scans [a, b) minus the runtime-owned ranges. */
static void scan_minus_excl(marker_t *mk, uintptr_t a, uintptr_t b)
{
    size_t lo = 0, hi = mk->nexcl;
    while (lo < hi) { /* first exclusion with hi > a */
        size_t mid = (lo + hi) / 2;
        if (mk->excl[mid].hi <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < mk->nexcl && a < b; i++) {
        const range_t *e = &mk->excl[i];
        if (e->lo >= b)
            break;
        if (e->lo > a)
            scan_words(mk, a, e->lo);
        if (e->hi > a)
            a = e->hi;
    }
    if (a < b)
        scan_words(mk, a, b);
}

/* Scans [a, b) clipped to readable mappings (a thread stack's reported bounds may reach
 * below what is mapped). */
static void scan_clipped(marker_t *mk, uintptr_t a, uintptr_t b)
{
    for (size_t i = 0; i < mk->nmaps; i++) {
        uintptr_t x = mk->maps[i].lo > a ? mk->maps[i].lo : a;
        uintptr_t y = mk->maps[i].hi < b ? mk->maps[i].hi : b;
        if (x < y)
            scan_words(mk, x, y);
    }
}

/* ------------------------------------------------------------ roots */

/* Pages never touched hold zeros: reading them only costs page faults (tens of us each
 * on these VMs; jemalloc reserves megabytes it never touches). mincore finds the
 * resident pages; a non-resident page may still hold data if it was swapped out, which
 * /proc/self/pagemap tells (bit 62), so those are scanned too. Any doubt: scan. */
/* True when the system has swap: /proc/swaps lists more than its header line. */
static bool swap_active(void)
{
    char buf[256];
    int fd = open("/proc/swaps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return true;
    buf[n] = 0;
    char *nl = strchr(buf, '\n');
    return !nl || nl[1] != 0;
}

static void scan_root_map(marker_t *mk, uintptr_t lo, uintptr_t hi, bool swap, int pagemap)
{
    enum { BATCH = 16384 };
    static unsigned char vec[BATCH]; /* gc cycles are serialised by the world flag */
    static uint64_t pm[BATCH];
    for (uintptr_t a = lo; a < hi;) {
        size_t pages = (hi - a) / 4096;
        if (pages > BATCH)
            pages = BATCH;
        if (pages == 0) { /* a partial last page */
            scan_minus_excl(mk, a, hi);
            break;
        }
        bool probed = false;
        if (mincore((void *)a, pages * 4096, vec) != 0) {
            if (errno != ENOMEM) { /* cannot tell: scan, more roots never hurt */
                scan_minus_excl(mk, a, a + pages * 4096);
                a += pages * 4096;
                continue;
            }
            /* ENOMEM: part of the range is no longer mapped (a thread the cycle does
             * not stop, a sanitizer's or the program's own, unmapped it after
             * /proc/self/maps was read). Unmapped pages hold no roots, and reading
             * them faults: ask page by page and keep only what is mapped. */
            for (size_t i = 0; i < pages; i++) {
                if (mincore((void *)(a + i * 4096), 4096, &vec[i]) != 0)
                    vec[i] = errno == ENOMEM ? 0 : 1;
                else if (swap)
                    vec[i] = 1; /* mapped, maybe swapped out: scan */
            }
            probed = true;
        }
        if (swap && !probed) { /* (probed: an unmapped page must stay 0 in vec) */
            /* a swapped-out page is not resident but holds data: keep it */
            ssize_t want = (ssize_t)(pages * 8);
            if (pagemap < 0 || pread(pagemap, pm, (size_t)want, (off_t)(a / 4096 * 8)) != want)
                memset(vec, 1, pages);
            else
                for (size_t i = 0; i < pages; i++)
                    vec[i] |= (unsigned char)((pm[i] >> 62) & 1);
        }
        size_t i = 0;
        while (i < pages) {
            size_t j = i;
            while (j < pages && (vec[j] & 1))
                j++;
            if (j > i)
                scan_minus_excl(mk, a + i * 4096, a + j * 4096);
            while (j < pages && !(vec[j] & 1))
                j++; /* never touched: zeros */
            i = j;
        }
        a += pages * 4096;
    }
}

static int maps_read(marker_t *mk)
{
    /* Read in one go into a buffer that stays mapped; if it was too small, read again
     * into a bigger one, so the listing never names a buffer unmapped since. */
    size_t cap = 1 << 20, len;
    char *buf;
    int fd;
    for (;;) {
        buf = gc_scratch(SCR_MAPSBUF, cap);
        if (!buf)
            return -ENOMEM;
        fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        len = 0;
        for (;;) {
            ssize_t r = read(fd, buf + len, cap - len - 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            len += (size_t)r;
            if (len + 1 >= cap)
                break;
        }
        if (len + 4096 < cap)
            break;
        close(fd);
        cap *= 2; /* the old buffer is unmapped before the next listing is made */
    }
    close(fd);
    buf[len] = 0;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += buf[i] == '\n';
    mk->maps = gc_scratch(SCR_MAPS, lines * sizeof(range_t));
    if (!mk->maps)
        return -ENOMEM;
    mk->nmaps = 0;
    for (char *s = buf; *s;) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = 0;
        char *end;
        uintptr_t lo = strtoull(s, &end, 16);
        uintptr_t hi = *end == '-' ? strtoull(end + 1, &end, 16) : 0;
        /* "rw-p": readable, writable, private; skip the kernel's special pages */
        if (hi > lo && end[0] == ' ' && end[1] == 'r' && end[2] == 'w' && end[4] == 'p' &&
            !strstr(end, "[vvar") && !strstr(end, "[vsyscall]") && !strstr(end, "[vdso]"))
            mk->maps[mk->nmaps++] = (range_t){lo, hi};
        if (!nl)
            break;
        s = nl + 1;
    }
    return 0;
}

static int excl_build(marker_t *mk)
{
    size_t nown = heap_owned_ranges(NULL, 0) + 64;
    size_t nchunks = stackpool_chunks(NULL, NULL, 0);
    size_t nm = 0;
    for (m_t *m = sched.allm; m; m = m->all_link)
        nm++;
    size_t cap = nown + nchunks + nm + 17;
    mk->excl = gc_scratch(SCR_EXCL, cap * sizeof(range_t));
    void **ch = gc_scratch(SCR_CHUNKS, (nchunks + 1) * (sizeof(void *) + sizeof(size_t)));
    if (!mk->excl || !ch)
        return -ENOMEM;
    size_t *chsz = (size_t *)(ch + nchunks + 1);
    size_t n = heap_owned_ranges(mk->excl, nown);
    if (n > nown)
        n = nown; /* ranges appeared meanwhile (gc maps): the rest scan as roots, safe */
    size_t k = stackpool_chunks(ch, chsz, nchunks);
    for (size_t i = 0; i < k && i < nchunks; i++)
        mk->excl[n++] = (range_t){(uintptr_t)ch[i], (uintptr_t)ch[i] + chsz[i]};
    for (m_t *m = sched.allm; m; m = m->all_link)
        if (m->sysstack_hi > m->sysstack_lo)
            mk->excl[n++] = (range_t){m->sysstack_lo & ~(uintptr_t)7, m->sysstack_hi};
    /* sysmon's stack (gc_runtime_thread_stack): it runs during a cycle, and its frames
     * hold stale addresses of what it looked at, changing from one cycle to the next */
    /* acquire: pairs with gc_runtime_thread_stack's release store */
    uintptr_t thi = atomic_load_explicit(&gc_rtthread_hi, memory_order_acquire);
    uintptr_t tlo = atomic_load_explicit(&gc_rtthread_lo, memory_order_relaxed);
    if (thi > tlo && thi - tlo <= ((uintptr_t)64 << 20))
        mk->excl[n++] = (range_t){tlo & ~(uintptr_t)7, thi};
    range_sort(mk->excl, n);
    size_t o = 0; /* merge overlaps */
    for (size_t i = 0; i < n; i++) {
        if (o && mk->excl[i].lo <= mk->excl[o - 1].hi) {
            if (mk->excl[i].hi > mk->excl[o - 1].hi)
                mk->excl[o - 1].hi = mk->excl[i].hi;
        } else {
            mk->excl[o++] = mk->excl[i];
        }
    }
    mk->nexcl = o;
    return 0;
}

static void task_scan_root(marker_t *mk, size_t ti, uintptr_t from)
{
    task_ent_t *t = &mk->tasks[ti];
    g_t *g = t->g;
    t->state = TASK_ROOT;
    uintptr_t lo = g->stack_lo + 8; /* [lo, lo+8) is the canary */
    if (from < lo || from >= g->stack_hi)
        from = lo; /* no usable sp: the whole stack (more roots, never fewer) */
    scan_words(mk, from, g->stack_hi);
    /* what the record holds for the task (the record itself is never traced): a task
     * not started yet has its argument only there */
    mark_word(mk, (uintptr_t)g->arg);
    mark_word(mk, (uintptr_t)g->args_copy);
    mark_word(mk, (uintptr_t)g->wait_param);
    /* the vector state only while the task is stopped by a signal (xsave_live): after
     * it resumed, or when it stopped at a check, the area is a stale register dump,
     * often of another task, since a switch leaves the vector registers as they were
     * (test_leak_roots detector_while_running missed ~6 leaks in 80 runs through a
     * channel pointer in saved xmm0 and xmm2) */
    if (__atomic_load_n(&g->xsave_live, __ATOMIC_RELAXED))
        mark_word(mk, (uintptr_t)g->xsave);
}

/* The sp from which a parked or runnable task's stack is live: its saved context. An
 * asynchronously preempted task saved its registers above it too, below the
 * interrupted frame's red zone (preempt/signal.c). */
static uintptr_t task_sp(const g_t *g, int st)
{
    (void)st;
    return (uintptr_t)g->ctx.sp;
}

static bool wait_obj_reachable(marker_t *mk, const void *obj)
{
    uintptr_t v = (uintptr_t)obj;
    if (!v)
        return false;
    ptrdiff_t i = obj_find(mk, v);
    if (i >= 0)
        return mk->marks[i];
    ptrdiff_t t = stack_find(mk, v);
    if (t >= 0)
        return mk->tasks[t].state == TASK_ROOT;
    return true; /* the program's memory, a global, or unknown: reachable */
}

/* A parked select: reachable when any of its queued records' channels is. The records
 * are on its stack (or in a runtime object for large selects). */
static GORT_NO_ASAN bool select_reachable(marker_t *mk, const g_t *g)
{
    const chan_waiter_t *w = g->waiting;
    for (int k = 0; w && k < 4096; k++) {
        uintptr_t a = (uintptr_t)w;
        bool in_stack = a >= g->stack_lo && a + sizeof *w <= g->stack_hi;
        if (!in_stack && obj_find(mk, a) < 0)
            return true; /* a record we cannot vouch for: reachable */
        if (wait_obj_reachable(mk, w->c))
            return true;
        w = w->waitlink;
    }
    return w != NULL; /* a chain too long to follow: reachable */
}

static bool task_wakeable(marker_t *mk, const g_t *g, int kind)
{
    switch (kind) {
    case 1:
        return wait_obj_reachable(mk, g->wait_obj);
    case 2:
        return select_reachable(mk, g);
    default:
        return false;
    }
}

/* 0: a root by state; 1: waits on wait_obj; 2: select; 3: can never be woken. */
static int wait_kind(wait_reason_t r)
{
    switch (r) {
    case WAIT_CHAN_RECV:
    case WAIT_CHAN_SEND:
    case WAIT_MUTEX:
    case WAIT_RWMUTEX_R:
    case WAIT_RWMUTEX_W:
    case WAIT_COND:
    case WAIT_WG:
    case WAIT_ONCE:
        return 1;
    case WAIT_SELECT:
        return 2;
    case WAIT_CHAN_RECV_NIL:
    case WAIT_CHAN_SEND_NIL:
    case WAIT_SELECT_NO_CASES:
        return 3;
    default:
        return 0; /* sleep, I/O, preempted, none: woken by the runtime */
    }
}

/* ------------------------------------------------------------ the cycle */

void leak_set_free(leak_set_t *s)
{
    s->recs = NULL; /* scratch: kept for the next cycle */
    s->n = s->cap = 0;
}

static int leak_add(leak_set_t *s, g_t *g, int64_t now)
{
    leak_rec_t *r = &s->recs[s->n++];
    r->g = g;
    r->id = g->id;
    r->why = g->wait_reason;
    r->obj = g->wait_obj;
    r->blocked_ns = now - g->wait_since;
    r->spawn_pc = g->spawn_pc;
    r->name = g->name;
    return 0;
}

/* obj_find's bucket index: about one bucket per object (a power-of-two size of at
 * least 4 KiB), so the index costs 4 bytes an object and a lookup searches a bucket's
 * few objects. Objects are sorted and disjoint. Without scratch memory, or with more
 * than 2^32 objects, obj_find searches everything, as before. */
static void objs_index_build(marker_t *mk)
{
    mk->bucket_first = NULL;
    if (mk->nobjs < 64 || mk->nobjs >= UINT32_MAX)
        return;
    uintptr_t span = mk->objs_hi - mk->objs_lo;
    unsigned shift = 12;
    while (shift < 63 && (span >> shift) > mk->nobjs)
        shift++;
    size_t nb = (size_t)((span - 1) >> shift) + 1;
    uint32_t *first = gc_scratch(SCR_OBJIDX, nb * sizeof *first);
    if (!first)
        return;
    size_t i = 0;
    for (size_t b = 0; b < nb; b++) {
        uintptr_t start = mk->objs_lo + ((uintptr_t)b << shift);
        while (i < mk->nobjs && mk->objs[i].hi <= start)
            i++;
        first[b] = (uint32_t)i;
    }
    mk->bucket_first = first;
    mk->nbuckets = nb;
    mk->bucket_shift = shift;
}

int mark_find_leaks(leak_set_t *out, g_t *self, uintptr_t self_sp)
{
    marker_t mk = {0};
    int rc = -ENOMEM;
    /* tracked heap: no block comes or goes until the scan is done (no malloc here) */
    heap_tracked_freeze();
    mk.objs = heap_objs_snapshot(&mk.nobjs);
    if (!mk.objs) {
        heap_tracked_thaw();
        return -ENOMEM; /* or the registry lost an object: report nothing, never guess */
    }
    mk.objs_lo = mk.nobjs ? mk.objs[0].lo : 0;
    mk.objs_hi = 0;
    for (size_t i = 0; i < mk.nobjs; i++)
        if (mk.objs[i].hi > mk.objs_hi)
            mk.objs_hi = mk.objs[i].hi;
    objs_index_build(&mk);
    mk.marks = gc_scratch(SCR_MARKS, mk.nobjs + 1);
    mk.work = gc_scratch(SCR_WORK, (mk.nobjs + 1) * sizeof(uint32_t));
    mk.stacks = gc_scratch(SCR_STACKS, (allg_len + 1) * sizeof(range_t));
    mk.tasks = gc_scratch(SCR_TASKS, (allg_len + 1) * sizeof(task_ent_t));
    if (!mk.marks || !mk.work || !mk.stacks || !mk.tasks)
        goto out_free;
    memset(mk.marks, 0, mk.nobjs + 1);
    if ((rc = maps_read(&mk)))
        goto out_free;
    if ((rc = excl_build(&mk)))
        goto out_free;

    opaque_build(&mk);
    /* live tasks and their stacks */
    for (size_t i = 0; i < allg_len; i++) {
        g_t *g = allg[i];
        int st = atomic_load_explicit(&g->status, memory_order_relaxed);
        if (st == G_IDLE || st == G_DEAD || !g->stack_lo)
            continue;
        mk.stacks[mk.nstacks++] = (range_t){g->stack_lo, mk.ntasks};
        mk.tasks[mk.ntasks++] = (task_ent_t){.g = g};
    }
    out->ntasks = mk.ntasks;
    out->nlive = 0;
    range_sort(mk.stacks, mk.nstacks);

    /* roots: the program's memory and globals */
    bool swap = swap_active();
    int pagemap = swap ? open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) : -1;
    for (size_t i = 0; i < mk.nmaps; i++) {
        /* Sanitizer builds: ASan's shadow (16 TiB) and the sanitizers' allocator
         * reserves are writable mappings of 256 GiB or more that hold no program pointers;
         * probing them page by page took seconds per cycle (TSan's 960 GiB mapping at
         * 0x1f1000047000 alone is 250M pages, most of a chan suite's time). Only in those builds: in a
         * normal build skipping a mapping could hide a reference and report a task that
         * can still be woken. */
        if (GORT_SANITIZER_BUILD && mk.maps[i].hi - mk.maps[i].lo >= ((uintptr_t)1 << 38))
            continue;
        scan_root_map(&mk, mk.maps[i].lo, mk.maps[i].hi, swap, pagemap);
    }
    if (pagemap >= 0)
        close(pagemap);
    /* Ms' thread stacks: the scheduler's frames hold no program data (and stale words
     * below them would hide leaks), so only the program's frames above gort_run, and the
     * whole stack of an M whose task runs program code on it (gort_on_system_stack) in
     * a system call */
    for (m_t *m = sched.allm; m; m = m->all_link) {
        uintptr_t lo = m->sysstack_lo, hi = m->sysstack_hi;
        if (hi <= lo)
            continue;
        g_t *cg = __atomic_load_n(&m->curg, __ATOMIC_RELAXED);
        if (cg && cg != self && m->on_sysstack)
            scan_clipped(&mk, lo, hi);
        else if (gc_run_frame >= lo && gc_run_frame < hi)
            scan_clipped(&mk, gc_run_frame, hi);
    }
    /* queued timers: a task with a timer on its stack can be woken by it */
    for (int i = 0; i < sched.nprocs; i++) {
        p_t *p = sched.allp[i];
        for (uint32_t k = 0; k < p->ntimers; k++) {
            rtimer_t *t = p->timers[k];
            ptrdiff_t ti = stack_find(&mk, (uintptr_t)t);
            if (ti >= 0) {
                mk.tasks[ti].kind = 0xff; /* root, scanned below */
                continue;
            }
            mark_word(&mk, (uintptr_t)t);
            mark_word(&mk, (uintptr_t)t->arg);
        }
    }
    /* tasks that are roots by state */
    for (size_t i = 0; i < mk.ntasks; i++) {
        task_ent_t *t = &mk.tasks[i];
        g_t *g = t->g;
        int st = atomic_load_explicit(&g->status, memory_order_relaxed);
        int kind = st == G_WAITING ? wait_kind(g->wait_reason) : 0;
        if (t->kind == 0xff)
            kind = 0;
        t->kind = (uint8_t)kind;
        if (kind)
            continue;
        out->nlive += g != self;
        if (g == self)
            task_scan_root(&mk, i, self_sp);
        else if (st == G_WAITING || st == G_RUNNABLE)
            task_scan_root(&mk, i, task_sp(g, st));
        else
            task_scan_root(&mk, i, 0); /* running elsewhere or in a system call: all */
    }
    drain(&mk);

    /* fixed point over blocked tasks */
    for (bool progress = true; progress;) {
        progress = false;
        for (size_t i = 0; i < mk.ntasks; i++) {
            task_ent_t *t = &mk.tasks[i];
            if (t->state == TASK_ROOT || !task_wakeable(&mk, t->g, t->kind))
                continue;
            task_scan_root(&mk, i, task_sp(t->g, G_WAITING));
            drain(&mk);
            progress = true;
        }
    }

    int64_t now = gort_now();
    size_t nleaked = 0;
    for (size_t i = 0; i < mk.ntasks; i++)
        nleaked += mk.tasks[i].state != TASK_ROOT;
    out->recs = gc_scratch(SCR_LEAKS, (nleaked + 1) * sizeof(leak_rec_t));
    out->cap = nleaked;
    out->n = 0;
    rc = out->recs ? 0 : -ENOMEM;
    for (size_t i = 0; i < mk.ntasks && !rc; i++)
        if (mk.tasks[i].state != TASK_ROOT)
            rc = leak_add(out, mk.tasks[i].g, now);

out_free:
    heap_tracked_thaw();
    return rc;
}
