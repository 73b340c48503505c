/* core/debug.c — fatal errors, async-signal-safe printing, and the GORT_DEBUG table.
 *
 * dbg_print formats into a small buffer and write(2)s it: usable in signal handlers,
 * on 2 KiB task stacks (its frame is ~300 bytes) and with runtime locks held.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt.h"
#include "sched_impl.h"

rt_debug_t rt_debug = {.quit_dump = 1};

static size_t fmt_u64(char *out, uint64_t v, unsigned base)
{
    char tmp[24];
    size_t n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

void dbg_print(const char *fmt, ...)
{
    char buf[240];
    size_t n = 0;
    va_list ap;
    va_start(ap, fmt);
    for (const char *f = fmt; *f && n < sizeof buf - 24; f++) {
        if (*f != '%') {
            buf[n++] = *f;
            continue;
        }
        f++;
        bool lng = false;
        while (*f == 'l' || *f == 'z') {
            lng = true;
            f++;
        }
        switch (*f) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            while (*s && n < sizeof buf - 24)
                buf[n++] = *s++;
            break;
        }
        case 'd': {
            int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                buf[n++] = '-';
                v = -v;
            }
            n += fmt_u64(buf + n, (uint64_t)v, 10);
            break;
        }
        case 'u':
            n += fmt_u64(buf + n, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 10);
            break;
        case 'x':
            n += fmt_u64(buf + n, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned), 16);
            break;
        case 'p':
            buf[n++] = '0';
            buf[n++] = 'x';
            n += fmt_u64(buf + n, (uintptr_t)va_arg(ap, void *), 16);
            break;
        case '%':
            buf[n++] = '%';
            break;
        default:
            buf[n++] = '?';
        }
    }
    va_end(ap);
    (void)!write(STDERR_FILENO, buf, n);
}

static void *dump_on_sysstack(void *unused)
{
    fflush(stderr);
    dump_tasks_locked_world(stderr);
    return NULL;
}

static _Atomic int throwing;

void gort_throw(const char *what)
{
    dbg_print("gort: fatal error: %s\n", what);
    if (atomic_fetch_add_explicit(&throwing, 1, memory_order_relaxed) == 0 &&
        sched.allp != NULL)
        gort_on_system_stack(dump_on_sysstack, NULL);
    abort();
}

void gort_fatal(const char *what)
{
    g_t *g = g_self();
    dbg_print("gort: fatal error: %s (task %lu)\n", what, g ? (unsigned long)g->id : 0ul);
    if (atomic_fetch_add_explicit(&throwing, 1, memory_order_relaxed) == 0 &&
        sched.allp != NULL)
        gort_on_system_stack(dump_on_sysstack, NULL);
    abort();
}

static const char *const wait_reason_names[WAIT_REASON_COUNT] = {
    [WAIT_NONE] = "",
    [WAIT_CHAN_RECV] = "chan receive",
    [WAIT_CHAN_SEND] = "chan send",
    [WAIT_CHAN_RECV_NIL] = "chan receive (nil chan)",
    [WAIT_CHAN_SEND_NIL] = "chan send (nil chan)",
    [WAIT_SELECT] = "select",
    [WAIT_SELECT_NO_CASES] = "select (no cases)",
    [WAIT_MUTEX] = "mutex lock",
    [WAIT_RWMUTEX_R] = "rwmutex rlock",
    [WAIT_RWMUTEX_W] = "rwmutex lock",
    [WAIT_COND] = "cond wait",
    [WAIT_WG] = "wait group",
    [WAIT_ONCE] = "once",
    [WAIT_SLEEP] = "sleep",
    [WAIT_IO] = "IO wait",
    [WAIT_PREEMPTED] = "preempted",
};

const char *wait_reason_str(wait_reason_t r)
{
    return (unsigned)r < WAIT_REASON_COUNT ? wait_reason_names[r] : "?";
}

/* The one table of GORT_DEBUG knobs; unknown names are reported, not ignored. */
static const struct {
    const char *name;
    int *value;
} debug_knobs[] = {
    {"migrate", &rt_debug.migrate},       {"schedtrace", &rt_debug.schedtrace},
    {"stackmove", &rt_debug.stackmove},   {"stackguard", &rt_debug.stackguard},
    {"quitdump", &rt_debug.quit_dump},
    {"leakcheck_interval_ms", &rt_debug.leakcheck_interval_ms},
    {"trackheap", &rt_debug.trackheap},
};

void debug_parse(const char *env)
{
    rt_debug = (rt_debug_t){.quit_dump = 1, .trackheap = -1};
    if (!env)
        return;
    const char *s = env;
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        size_t nlen = eq ? (size_t)(eq - s) : len;
        bool known = false;
        for (size_t i = 0; i < sizeof debug_knobs / sizeof debug_knobs[0]; i++) {
            if (strlen(debug_knobs[i].name) == nlen && !memcmp(debug_knobs[i].name, s, nlen)) {
                *debug_knobs[i].value = eq ? atoi(eq + 1) : 1;
                known = true;
            }
        }
        /* leakcheck=report|exit|cancel (gc/): words, not numbers */
        if (nlen == 9 && !memcmp(s, "leakcheck", 9)) {
            static const char *const words[] = {"off", "report", "exit", "cancel"};
            size_t vlen = eq ? len - nlen - 1 : 0;
            rt_debug.leakcheck = eq ? -1 : 1;
            for (int w = 0; w < 4 && eq; w++)
                if (strlen(words[w]) == vlen && !memcmp(words[w], eq + 1, vlen))
                    rt_debug.leakcheck = w;
            if (rt_debug.leakcheck < 0) {
                dbg_print("gort: GORT_DEBUG: leakcheck wants report|exit|cancel\n");
                rt_debug.leakcheck = 1;
            }
            known = true;
        }
        /* Knobs of modules not built yet (stackreloc) are accepted quietly. */
        if (!known && !(nlen == 10 && !memcmp(s, "stackreloc", 10)))
            dbg_print("gort: GORT_DEBUG: unknown knob '%s'\n", s);
        s = end ? end + 1 : s + len;
    }
}
