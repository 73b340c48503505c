/* gc/report.c — leak reports: backtraces of parked tasks, symbols cached per PC, and
 * grouping of identical stacks so a report over a million tasks stays readable.
 *
 * A group is (wait reason, spawn site, backtrace): the tasks of one leaking code path.
 * Symbols come from libunwind (it reads .symtab, so static functions have names too),
 * with dladdr for the file; libunwind is slow per call (it opens the object file), so
 * every PC is symbolized once per process and kept in a gc_map'd table. file:line comes
 * from the module's DWARF line tables (core/lineinfo.c) when it has them.
 * Context: sysstack (stdio, libunwind).
 */
#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <libunwind.h>
#include <stdlib.h>
#include <string.h>

#include "core/sched_impl.h"
#include "gc/gc.h"

/* Saved context layout (core/arch/x86_64.S): fpcw+mxcsr, r15, r14, r13, r12, rbx, rbp,
 * return address — the same slots core/dump.c reads. */
enum { CTX_RBP_SLOT = 7, CTX_RET_SLOT = 8 };

GORT_NO_ASAN int report_backtrace(g_t *g, void **pcs, int max)
{
    const uint64_t *sp = g->ctx.sp;
    uintptr_t lo = g->stack_lo, hi = g->stack_hi;
    int n = 0;
    if ((uintptr_t)sp < lo || (uintptr_t)(sp + CTX_RET_SLOT + 1) > hi)
        return 0;
    if (n < max && sp[CTX_RET_SLOT])
        pcs[n++] = (void *)sp[CTX_RET_SLOT];
    uintptr_t fp = sp[CTX_RBP_SLOT];
    while (n < max) {
        if (fp < lo || fp + 16 > hi || (fp & 7))
            break;
        void *ret = (void *)((const uint64_t *)fp)[1];
        if (!ret)
            break;
        pcs[n++] = ret;
        uintptr_t next = ((const uint64_t *)fp)[0];
        if (next <= fp)
            break;
        fp = next;
    }
    return n;
}

/* ------------------------------------------------------------ symbol cache */

typedef struct sym_slot {
    void *pc;
    const char *s;
} sym_slot_t;

static atomic_flag sym_lock;   /* leaf */
static sym_slot_t *syms;       /* sym_lock; open addressing */
static size_t syms_cap, syms_n;
static char *sym_arena;        /* strings; sym_lock */
static size_t sym_arena_left;

static char *sym_strdup(const char *s)
{
    size_t len = strlen(s) + 1;
    if (len > sym_arena_left) {
        size_t sz = len > 65536 ? len : 65536;
        sym_arena = gc_map(sz);
        if (!sym_arena) {
            sym_arena_left = 0;
            return NULL;
        }
        sym_arena_left = sz;
    }
    char *d = sym_arena;
    memcpy(d, s, len);
    sym_arena += len;
    sym_arena_left -= len;
    return d;
}

static void sym_format(void *pc, char *buf, size_t len)
{
    Dl_info info;
    const char *file = "?";
    char name[160];
    unw_word_t off = 0;
    bool named = false;
    if (dladdr(pc, &info) && info.dli_fname) {
        file = strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname;
        if (info.dli_sname) {
            snprintf(name, sizeof name, "%s", info.dli_sname);
            off = (unw_word_t)((char *)pc - (char *)info.dli_saddr);
            named = true;
        }
    }
    if (!named) {
        /* the dynamic symbol table lacks static and unexported functions: ask libunwind,
         * which reads .symtab, with a cursor placed at pc */
        unw_context_t uc;
        unw_cursor_t cur;
        if (unw_getcontext(&uc) == 0 && unw_init_local(&cur, &uc) == 0 &&
            unw_set_reg(&cur, UNW_REG_IP, (unw_word_t)pc) == 0 &&
            unw_get_proc_name(&cur, name, sizeof name, &off) == 0)
            named = true;
    }
    char where[200];
    if (lineinfo_find((uintptr_t)pc - 1, where, sizeof where)) /* pc: a return address */
        file = where;
    if (named)
        snprintf(buf, len, "%s+0x%lx (%s)", name, (unsigned long)off, file);
    else
        snprintf(buf, len, "%p (%s)", pc, file);
}

const char *report_symbolize(void *pc)
{
    while (atomic_flag_test_and_set_explicit(&sym_lock, memory_order_acquire))
        __builtin_ia32_pause();
    const char *res = NULL;
    if (2 * (syms_n + 1) > syms_cap) {
        size_t cap = syms_cap ? syms_cap * 2 : 1024;
        sym_slot_t *n = gc_map(cap * sizeof *n);
        if (n) {
            for (size_t i = 0; i < syms_cap; i++)
                if (syms[i].pc) {
                    size_t j = ((uintptr_t)syms[i].pc * 0x9e3779b97f4a7c15ull >> 17) & (cap - 1);
                    while (n[j].pc)
                        j = (j + 1) & (cap - 1);
                    n[j] = syms[i];
                }
            gc_unmap(syms, syms_cap * sizeof *syms);
            syms = n;
            syms_cap = cap;
        }
    }
    size_t j = 0;
    if (syms_cap) {
        j = ((uintptr_t)pc * 0x9e3779b97f4a7c15ull >> 17) & (syms_cap - 1);
        while (syms[j].pc && syms[j].pc != pc)
            j = (j + 1) & (syms_cap - 1);
        if (syms[j].pc)
            res = syms[j].s;
    }
    if (!res) {
        char buf[400]; /* name (160) + path:line (200) + the rest */
        sym_format(pc, buf, sizeof buf);
        res = sym_strdup(buf);
        if (res && syms_cap && 2 * (syms_n + 1) <= syms_cap) {
            syms[j] = (sym_slot_t){pc, res};
            syms_n++;
        }
    }
    atomic_flag_clear_explicit(&sym_lock, memory_order_release);
    return res ? res : "?";
}

/* ------------------------------------------------------------ grouping */

typedef struct group_key {
    uint64_t h;   /* hash of (wait reason, spawn site, backtrace) */
    uint32_t i;   /* index into the leak records */
    uint32_t pad;
} group_key_t;

typedef struct stack_sig {
    wait_reason_t why;
    void *spawn_pc;
    void *pcs[16];
    int npcs;
} stack_sig_t;

static void sig_take(const leak_rec_t *r, stack_sig_t *sg)
{
    sg->why = r->why;
    sg->spawn_pc = r->spawn_pc;
    sg->npcs = report_backtrace(r->g, sg->pcs, 16);
}

static uint64_t sig_hash(const stack_sig_t *sg)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)sg->why;
    h = (h ^ (uintptr_t)sg->spawn_pc) * 0xff51afd7ed558ccdull;
    for (int k = 0; k < sg->npcs; k++)
        h = (h ^ (uintptr_t)sg->pcs[k]) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static bool sig_same(const stack_sig_t *a, const stack_sig_t *b)
{
    return a->why == b->why && a->spawn_pc == b->spawn_pc && a->npcs == b->npcs &&
           !memcmp(a->pcs, b->pcs, (size_t)a->npcs * sizeof a->pcs[0]);
}

static const leak_rec_t *key_recs; /* qsort's context (cycles are serialised) */

static int key_cmp(const void *a, const void *b)
{
    const group_key_t *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    uint64_t ix = key_recs[x->i].id, iy = key_recs[y->i].id;
    return ix < iy ? -1 : ix > iy;
}

static void group_print(FILE *out, const leak_rec_t *r, const group_key_t *k, size_t cnt,
                        const stack_sig_t *sg)
{
    const leak_rec_t *first = &r[k[0].i];
    int64_t longest = 0;
    for (size_t j = 0; j < cnt; j++)
        if (r[k[j].i].blocked_ns > longest)
            longest = r[k[j].i].blocked_ns;
    fprintf(out, "\n%zu task%s [%s, blocked %.3f s%s] e.g. task %lu", cnt, cnt == 1 ? "" : "s",
            wait_reason_str(first->why), (double)longest / 1e9, cnt > 1 ? " max" : "",
            (unsigned long)first->id);
    if (first->name)
        fprintf(out, " \"%s\"", first->name);
    if (first->obj)
        fprintf(out, " on %p", first->obj);
    fprintf(out, "\n    ids:");
    for (size_t j = 0; j < cnt && j < 8; j++)
        fprintf(out, " %lu", (unsigned long)r[k[j].i].id);
    if (cnt > 8)
        fprintf(out, " ... (%zu more)", cnt - 8);
    fprintf(out, "\n    spawned at %s\n", sg->spawn_pc ? report_symbolize(sg->spawn_pc) : "?");
    for (int j = 0; j < sg->npcs; j++)
        fprintf(out, "        %s\n", report_symbolize(sg->pcs[j]));
}

void report_print(FILE *out, const leak_set_t *s)
{
    if (!out || !s->n)
        return;
    group_key_t *k = gc_scratch(SCR_REPORT, s->n * sizeof *k);
    if (!k) {
        fprintf(out, "gort: leak check: %zu leaked tasks (no memory to group them)\n", s->n);
        return;
    }
    stack_sig_t sg, rep;
    for (size_t i = 0; i < s->n; i++) {
        sig_take(&s->recs[i], &sg);
        k[i] = (group_key_t){sig_hash(&sg), (uint32_t)i, 0};
    }
    key_recs = s->recs;
    qsort(k, s->n, sizeof *k, key_cmp);
    size_t ngroups = 0;
    for (size_t i = 0; i < s->n; i++)
        ngroups += i == 0 || k[i].h != k[i - 1].h;
    fprintf(out, "gort: leak check: %zu leaked task%s in %zu group%s (%zu tasks checked)\n",
            s->n, s->n == 1 ? "" : "s", ngroups, ngroups == 1 ? "" : "s", s->ntasks);
    for (size_t i = 0; i < s->n;) {
        size_t j = i + 1;
        while (j < s->n && k[j].h == k[i].h)
            j++;
        /* a 64-bit hash collision would merge two paths: print them apart */
        sig_take(&s->recs[k[i].i], &rep);
        size_t a = i;
        for (size_t m = i + 1; m <= j; m++) {
            if (m < j) {
                sig_take(&s->recs[k[m].i], &sg);
                if (sig_same(&sg, &rep))
                    continue;
            }
            group_print(out, s->recs, &k[a], m - a, &rep);
            if (m < j) {
                rep = sg;
                a = m;
            }
        }
        i = j;
    }
    fflush(out);
}
