/* tests/harness.c — helpers shared by the Check suites (tests/internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "sched_impl.h"

size_t rt_mem_live(void)
{
    return (size_t)atomic_load_explicit(&rt_mem_bytes, memory_order_relaxed);
}

void test_run_cfg(void (*fn)(void *), void *arg, const gort_config_t *cfg, int want)
{
    size_t before = rt_mem_live();
    int rc = gort_run(fn, arg, cfg);
    ck_assert_int_eq(rc, want);
    ck_assert_uint_eq(rt_mem_live(), before);
}

void test_run(void (*fn)(void *), void *arg, int procs, int want)
{
    gort_config_t cfg = {0};
    const char *env = getenv("GORT_PROCS");
    cfg.procs = procs > 0 && !(env && *env) ? procs : 0;
    test_run_cfg(fn, arg, &cfg, want);
}

bool test_stress_mode(void)
{
    /* the runtime's own parse (core/debug.c) fills rt_debug only inside gort_run;
     * tests decide their sizes before it: the same key, read here */
    const char *env = getenv("GORT_DEBUG");
    for (const char *p = env; p && (p = strstr(p, "stackmove=")) != NULL; p++)
        if ((p == env || p[-1] == ',') && strtol(p + 10, NULL, 10) != 0)
            return true;
    return false;
}

void test_debug_add(const char *knob)
{
    if (!*knob)
        return;
    char buf[256];
    const char *cur = getenv("GORT_DEBUG");
    snprintf(buf, sizeof buf, "%s%s%s", cur && *cur ? cur : "", cur && *cur ? "," : "", knob);
    setenv("GORT_DEBUG", buf, 1);
}

char *test_debug_push(const char *knob)
{
    const char *old = getenv("GORT_DEBUG");
    char *saved = old ? strdup(old) : NULL;
    test_debug_add(knob);
    return saved;
}

void test_debug_restore(char *saved)
{
    if (saved)
        setenv("GORT_DEBUG", saved, 1);
    else
        unsetenv("GORT_DEBUG");
    free(saved);
}

uint64_t test_seed(const char *test_name, uint64_t fallback)
{
    const char *env = getenv("GORT_TEST_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 0) : fallback;
    fprintf(stderr, "%s: seed %llu (replay with GORT_TEST_SEED=%llu)\n", test_name,
            (unsigned long long)seed, (unsigned long long)seed);
    return seed;
}

uint64_t test_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int test_main(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

char *test_child_run(void (*fn)(void), int *status)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    fflush(stderr); /* nothing of the parent's buffered output repeats in the child */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(cap + 1, 1);
    ck_assert_ptr_nonnull(out);
    ssize_t n;
    while (len < cap && (n = read(pfd[0], out + len, cap - len)) > 0)
        len += (size_t)n;
    close(pfd[0]);
    waitpid(pid, status, 0);
    return out;
}
