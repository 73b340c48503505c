/* tests/core/test_lineinfo.c — file:line from the DWARF line tables (core/lineinfo.c):
 * the line of a call in this file, nothing for addresses without line tables (libc's
 * stripped code, the heap), the same answer from many tasks at once, and the spawn
 * site of a dumped task naming this file and the line of its gort_go. */
/* ctest-timeout: 60 */
#include <stdio.h>
#include <string.h>

#include "core/sched_impl.h"
#include "internal.h"

#define NOINLINE __attribute__((noinline))

static NOINLINE void *return_address(void)
{
    void *ra = __builtin_return_address(0);
    __asm__ volatile("" : : "r"(ra) : "memory"); /* not a tail call */
    return ra;
}

/* "path:line" of a call made on the caller's line `line`, checked against this file. */
static void check_call_line(uintptr_t ret, int line)
{
    char where[256];
    ck_assert_msg(lineinfo_find(ret - 1, where, sizeof where), "no line for %#lx",
                  (unsigned long)ret);
    char want[32];
    snprintf(want, sizeof want, ":%d", line);
    ck_assert_msg(strstr(where, "tests/core/test_lineinfo.c:") != NULL, "file of %s", where);
    const char *colon = strrchr(where, ':');
    ck_assert_str_eq(colon, want);
}

START_TEST(test_line_of_a_call)
{
    void *a = return_address(); int line_a = __LINE__;
    check_call_line((uintptr_t)a, line_a);
    /* a second call, further down, gets its own line */
    void *b = return_address(); int line_b = __LINE__;
    check_call_line((uintptr_t)b, line_b);
    ck_assert_int_ne(line_a, line_b);
}
END_TEST

START_TEST(test_no_line_tables)
{
    char where[64] = "untouched";
    int on_stack = 0;
    /* a stack address is in no module's code */
    ck_assert(!lineinfo_find((uintptr_t)&on_stack, where, sizeof where));
    ck_assert(!lineinfo_find(0, where, sizeof where));
    /* libc is stripped of its line tables on Debian (no -dbg package installed): a
     * false answer, not a crash; if debug info is there, a plausible answer */
    if (lineinfo_find((uintptr_t)strlen, where, sizeof where))
        ck_assert_ptr_nonnull(strchr(where, ':'));
    ck_assert(!lineinfo_find((uintptr_t)return_address, where, 0));
    /* a buffer too small for the path keeps its end: the file name and the line */
    char tiny[12];
    void *r = return_address(); int line = __LINE__;
    ck_assert(lineinfo_find((uintptr_t)r - 1, tiny, sizeof tiny));
    char want[16];
    snprintf(want, sizeof want, ".c:%d", line);
    ck_assert_msg(strlen(tiny) == sizeof tiny - 1 && strstr(tiny, want), "tail %s", tiny);
}
END_TEST

/* Many tasks on 2 Ps look up at once: the module cache is filled by one, read by all. */
enum { LOOKERS = 16 };
static _Atomic int lookups_ok;
static uintptr_t shared_ret;
static int shared_line;

static void looker(void *arg)
{
    (void)arg;
    char where[256];
    for (int i = 0; i < 50; i++) {
        if (lineinfo_find(shared_ret - 1, where, sizeof where)) {
            char want[32];
            snprintf(want, sizeof want, ":%d", shared_line);
            const char *colon = strrchr(where, ':');
            if (colon && strcmp(colon, want) == 0)
                atomic_fetch_add(&lookups_ok, 1);
        }
        gort_yield();
    }
}

static gort_chan_t *block_here;
static void blocked(void *arg)
{
    (void)arg;
    gort_chan_recv(block_here, NULL);
}

static void lineinfo_main(void *arg)
{
    (void)arg;
    void *r = return_address(); shared_line = __LINE__;
    shared_ret = (uintptr_t)r;
    atomic_store(&lookups_ok, 0);
    for (int i = 0; i < LOOKERS; i++) {
        gort_go_opts_t o = {.stack_min = TEST_STACK};
        ck_assert_int_eq(gort_go_opts(&o, looker, NULL), 0);
    }
    while (gort_ntasks() > 1)
        gort_sleep(1000000);
    ck_assert_int_eq(atomic_load(&lookups_ok), LOOKERS * 50);

    /* the dump names the spawn site by file and line */
    block_here = gort_chan_make(0, 0);
    ck_assert_int_eq(gort_go(blocked, NULL), 0); int spawn_line = __LINE__;
    gort_sleep(2000000);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(gort_dump_tasks(f), 2);
    rewind(f);
    char want[64], line[512];
    snprintf(want, sizeof want, "test_lineinfo.c:%d)", spawn_line);
    bool seen = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "spawned at") && strstr(line, want))
            seen = true;
    fclose(f);
    ck_assert_msg(seen, "no spawn site naming %s in the dump", want);
    ck_assert_int_eq(gort_chan_close(block_here), 0);
    while (gort_ntasks() > 1)
        gort_sleep(1000000);
    ck_assert_int_eq(gort_chan_free(block_here), 0);
}

START_TEST(test_lines_from_tasks_and_dump)
{
    test_run(lineinfo_main, NULL, 2, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("core_lineinfo");
    TCase *tc = tcase_create("lineinfo");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_line_of_a_call);
    tcase_add_test(tc, test_no_line_tables);
    tcase_add_test(tc, test_lines_from_tasks_and_dump);
    suite_add_tcase(s, tc);
    return test_main(s);
}
