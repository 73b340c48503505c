/* tests/core/test_schedtrace.c — GORT_DEBUG=schedtrace=MS prints one SCHED line every
 * MS milliseconds while gort_run runs, with the runtime's real counts (procs, tasks,
 * one queue length per P), and none once gort_run has returned. */
/* ctest-env: GORT_DEBUG=schedtrace=5 */
/* ctest-tsan */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

enum { BLOCKED_TASKS = 6, WANT_LINES = 3, POLL_NS = 5 * 1000000, POLL_MAX = 2000 };

static gort_chan_t *gate;
static int capture_fd; /* the file stderr goes to during the run */

/* Lines starting "SCHED " in the capture so far (the main task polls it: how many
 * lines 60 ms give depends on the machine's load, so the run lasts until it has some). */
static int trace_lines_so_far(void)
{
    char buf[4096];
    int n = 0;
    off_t at = 0;
    ssize_t got;
    char prev = '\n';
    while ((got = pread(capture_fd, buf, sizeof buf, at)) > 0) {
        for (ssize_t i = 0; i + 5 < got; i++)
            if ((i ? buf[i - 1] : prev) == '\n' && memcmp(buf + i, "SCHED ", 6) == 0)
                n++;
        prev = buf[got - 1];
        at += got;
    }
    return n;
}

static void blocked_task(void *arg)
{
    (void)arg;
    gort_chan_recv(gate, NULL);
}

static void trace_main(void *arg)
{
    (void)arg;
    gate = gort_chan_make(0, 0);
    ck_assert_ptr_nonnull(gate);
    for (int i = 0; i < BLOCKED_TASKS; i++)
        ck_assert_int_eq(gort_go(blocked_task, NULL), 0);
    /* lines from after every task was spawned (spawning is slow under TSan) */
    int before = trace_lines_so_far();
    for (int i = 0; i < POLL_MAX && trace_lines_so_far() < before + WANT_LINES; i++)
        gort_sleep(POLL_NS);
    ck_assert_int_eq(gort_chan_close(gate), 0);
    gort_sleep(2000000);
    ck_assert_int_eq(gort_chan_free(gate), 0);
}

/* Runs trace_main on `procs` Ps with stderr sent to a temporary file; returns the file,
 * rewound. */
static FILE *run_captured(int procs)
{
    FILE *out = tmpfile();
    ck_assert_ptr_nonnull(out);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(out), STDERR_FILENO), 0);
    capture_fd = fileno(out);
    test_run(trace_main, NULL, procs, 0);
    /* nothing may be printed once gort_run has returned (sysmon is gone) */
    long at_return = lseek(STDERR_FILENO, 0, SEEK_END);
    usleep(30000);
    long later = lseek(STDERR_FILENO, 0, SEEK_END);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    ck_assert_int_eq(later, at_return);
    rewind(out);
    return out;
}

static void check_trace(int procs)
{
    FILE *out = run_captured(procs);
    char line[1024];
    int lines = 0, max_tasks = 0, zero_lines = 0;
    long last_ms = -1;
    while (fgets(line, sizeof line, out)) {
        if (strncmp(line, "SCHED ", 6) != 0)
            continue; /* the seed line and other test output */
        long ms;
        int np, idle, threads, spinning, idlethreads, syscalls, tasks;
        unsigned runqueue;
        int n = sscanf(line,
                       "SCHED %ldms: procs=%d idleprocs=%d threads=%d spinningthreads=%d "
                       "idlethreads=%d syscalls=%d runqueue=%u tasks=%d [",
                       &ms, &np, &idle, &threads, &spinning, &idlethreads, &syscalls,
                       &runqueue, &tasks);
        ck_assert_msg(n == 9, "unparsed trace line: %s", line);
        ck_assert_int_eq(np, procs);
        ck_assert_int_ge(idle, 0);
        ck_assert_int_le(idle, procs);
        ck_assert_int_ge(threads, 1);
        ck_assert_int_le(idlethreads, threads);
        /* 0 only after the main task returned, before sysmon stopped: the last line */
        ck_assert_int_eq(zero_lines, 0);
        zero_lines += tasks == 0;
        ck_assert_int_ge(tasks, 0);
        ck_assert_int_le(tasks, BLOCKED_TASKS + 1);
        ck_assert_int_gt(ms, last_ms); /* one line per period, in order */
        last_ms = ms;
        if (tasks > max_tasks)
            max_tasks = tasks;
        /* one queue length per P */
        char *lb = strchr(line, '['), *rb = strchr(line, ']');
        ck_assert_ptr_nonnull(lb);
        ck_assert_ptr_nonnull(rb);
        int fields = 0;
        for (char *s = lb + 1; s < rb;) {
            char *end;
            long q = strtol(s, &end, 10);
            ck_assert_ptr_ne(end, s);
            ck_assert_int_ge(q, 0);
            ck_assert_int_le(q, 257);
            fields++;
            s = end;
        }
        ck_assert_int_eq(fields, procs);
        lines++;
    }
    fclose(out);
    ck_assert_int_ge(lines, WANT_LINES);
    /* the main task and every blocked task were seen alive at some line */
    ck_assert_int_eq(max_tasks, BLOCKED_TASKS + 1);
}

START_TEST(test_schedtrace_lines)
{
    check_trace(_i + 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core_schedtrace");
    TCase *tc = tcase_create("schedtrace");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_schedtrace_lines, 0, 2);
    suite_add_tcase(s, tc);
    return test_main(s);
}
