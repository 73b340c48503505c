/* preempt/safepc.c — where a task may be stopped asynchronously.
 *
 * A PC is safe when it lies in the executable code of a module that is not the runtime
 * itself, libc, ld.so, libpthread, jemalloc, libunwind, libgcc_s, the vDSO or a
 * sanitizer runtime: code there may hold locks, half-updated allocator state or the
 * runtime's own invariants (g_yield between setting m->defer_* and the switch, say).
 * Anything not in a known module (JIT code) is unsafe too. An unsafe PC falls back to
 * cooperative preemption.
 *
 * The table is a sorted array of [lo, hi) executable ranges, each safe or not, built
 * with dl_iterate_phdr at gort_run and rebuilt by sysmon when the loader's add/sub
 * counters move (a library was dlopen'ed or closed). The handler reads it lock-free:
 * a new table is published with a release store, and old tables are retired (freed at
 * preempt_stop, when no handler can run on them any more).
 *
 * The runtime's own range. When libgort is a shared object, it is the module holding
 * gort_run: exact. When it is linked statically, the runtime is part of the main
 * program, mixed with the user's code, and only the symbol table can tell them apart:
 * libgort is built with -fvisibility=hidden, so in the executable every runtime
 * function is a LOCAL symbol or a GLOBAL one marked STV_HIDDEN (ld keeps some hidden
 * symbols global in an executable), except the public gort_* ones, while the user's
 * functions are GLOBAL with default visibility (static ones are LOCAL too). Archive members are laid out consecutively,
 * so the runtime is the run of consecutive function symbols around the public gort_*
 * functions in which every symbol is LOCAL, hidden or gort_*. This over-approximates
 * at the edges: a program's static functions laid out right next to the runtime (its
 * last object file, when nothing with a global symbol follows) are taken for the
 * runtime's and lose asynchronous preemption (measured: a one-file program whose only
 * global function is main, which sits in .text.startup). Rejected: telling files apart
 * by their STT_FILE groups: ld moves the hidden symbols it localizes out of their
 * file's group into a trailing one, so groups cannot be trusted. It also misses the runtime's cold split parts
 * (.text.unlikely, `foo.cold`: fatal paths) when no gort_* symbol is next to them.
 * Rejected: a dedicated section for the runtime's code (GCC has no option for a
 * default text-section name; objcopy --rename-section in the build or `ld -r` into one
 * object would do it and is the better long-term fix, but touches the build for
 * everyone). A stripped static executable has no symbol table: then the whole main
 * program is unsafe (cooperative preemption only), and that is printed once.
 */
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "preempt/preempt.h"
#include "rt.h"
#include "sched_impl.h"

typedef struct pc_range {
    uintptr_t lo, hi; /* [lo, hi) */
    bool safe;
} pc_range_t;

typedef struct pc_table {
    size_t n;               /* ranges, sorted by lo, disjoint */
    pc_range_t *r;
    unsigned long long adds, subs; /* loader counters when built */
    struct pc_table *retired; /* older tables; freed at safepc_free */
} pc_table_t;

/* Written by sysmon / gort_run thread (release), read by the signal handler (acquire). */
static pc_table_t *_Atomic safepc_table;

static const char *const unsafe_modules[] = {
    "libc.so",     "ld-linux",   "ld.so",     "libpthread", "libjemalloc", "libunwind",
    "libgcc_s",    "linux-vdso", "libasan",   "libubsan",   "libtsan",     "liblsan",
    "libdl.so",    "librt.so",   NULL,
};

/* growable range list used while building */
struct builder {
    pc_range_t *r;
    size_t n, cap;
    int err;
    uintptr_t gort_pc;      /* address of gort_run: finds the runtime's module */
    bool main_is_runtime;   /* the runtime is linked into the main program */
    uintptr_t main_bias;
    unsigned long long adds, subs;
};

static void range_add(struct builder *b, uintptr_t lo, uintptr_t hi, bool safe)
{
    if (b->err || lo >= hi)
        return;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        pc_range_t *n = rt_alloc(cap * sizeof *n);
        if (!n) {
            b->err = -ENOMEM;
            return;
        }
        if (b->r)
            memcpy(n, b->r, b->n * sizeof *n);
        rt_free(b->r);
        b->r = n;
        b->cap = cap;
    }
    b->r[b->n++] = (pc_range_t){lo, hi, safe};
}

static bool module_is_unsafe(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    for (int i = 0; unsafe_modules[i]; i++)
        if (strncmp(base, unsafe_modules[i], strlen(unsafe_modules[i])) == 0)
            return true;
    return false;
}

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct builder *b = arg;
    b->adds = info->dlpi_adds;
    b->subs = info->dlpi_subs;
    bool is_main = !info->dlpi_name || !info->dlpi_name[0];
    bool has_gort = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (b->gort_pc >= lo && b->gort_pc < lo + ph->p_memsz)
            has_gort = true;
    }
    bool safe = !has_gort && !(is_main ? false : module_is_unsafe(info->dlpi_name));
    if (has_gort && is_main) {
        b->main_is_runtime = true; /* split by the symbol table below */
        b->main_bias = info->dlpi_addr;
        safe = true;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        range_add(b, lo, lo + ph->p_memsz, safe);
    }
    return 0;
}

struct fsym {
    uintptr_t lo, hi;
    bool rtish;  /* LOCAL or gort_*: may be the runtime's */
    bool anchor; /* a public gort_* function: certainly the runtime's */
};

static int fsym_cmp(const void *a, const void *b)
{
    const struct fsym *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Splits the main program's executable ranges: marks the runtime's functions unsafe.
 * Returns 0, or -ENOENT when there is no symbol table (caller marks all unsafe). */
static int runtime_ranges_from_symtab(struct builder *b)
{
    int rc = -ENOENT;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rc;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(ElfW(Ehdr))) {
        close(fd);
        return rc;
    }
    const char *img = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (img == MAP_FAILED)
        return rc;
    const ElfW(Ehdr) *eh = (const void *)img;
    const ElfW(Shdr) *sh = (const void *)(img + eh->e_shoff);
    const ElfW(Shdr) *symtab = NULL;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff == 0 ||
        eh->e_shoff + (size_t)eh->e_shnum * sizeof *sh > (size_t)st.st_size)
        goto out_unmap;
    for (int i = 0; i < eh->e_shnum; i++)
        if (sh[i].sh_type == SHT_SYMTAB)
            symtab = &sh[i];
    if (!symtab || symtab->sh_link >= eh->e_shnum)
        goto out_unmap;
    const ElfW(Sym) *syms = (const void *)(img + symtab->sh_offset);
    size_t nsyms = symtab->sh_size / sizeof *syms;
    const char *strs = img + sh[symtab->sh_link].sh_offset;
    struct fsym *f = rt_alloc((nsyms + 1) * sizeof *f);
    if (!f) {
        rc = -ENOMEM;
        goto out_unmap;
    }
    size_t nf = 0;
    for (size_t i = 0; i < nsyms; i++) {
        const ElfW(Sym) *s = &syms[i];
        if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || s->st_shndx == SHN_UNDEF ||
            s->st_value == 0)
            continue;
        const char *name = strs + s->st_name;
        bool local = ELF64_ST_BIND(s->st_info) == STB_LOCAL;
        bool anchor = !local && (strncmp(name, "gort_", 5) == 0 ||
                                 ELF64_ST_VISIBILITY(s->st_other) == STV_HIDDEN);
        uintptr_t lo = b->main_bias + s->st_value;
        f[nf++] = (struct fsym){lo, lo + (s->st_size ? s->st_size : 1), local || anchor,
                                anchor};
    }
    qsort(f, nf, sizeof *f, fsym_cmp);
    /* Maximal runs of rt-ish symbols holding an anchor are the runtime. A run extends
     * to the start of the next non-rt-ish symbol (padding and aliases included). */
    for (size_t i = 0; i < nf;) {
        if (!f[i].rtish) {
            i++;
            continue;
        }
        size_t j = i;
        bool anchored = false;
        while (j < nf && f[j].rtish) {
            anchored |= f[j].anchor;
            j++;
        }
        if (anchored) {
            uintptr_t hi = j < nf ? f[j].lo : f[j - 1].hi;
            if (hi < f[j - 1].hi)
                hi = f[j - 1].hi;
            range_add(b, f[i].lo, hi, false);
        }
        i = j;
    }
    rt_free(f);
    rc = 0;
out_unmap:
    munmap((void *)img, st.st_size);
    return rc;
}

static int uptr_cmp(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static int range_cmp(const void *a, const void *b)
{
    const pc_range_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Turns overlapping entries into disjoint ones: an unsafe range wins over the safe
 * module range it lies in (the runtime inside the main program). */
static int ranges_normalize(struct builder *b, pc_table_t *t)
{
    /* Cut points: every lo and hi; each elementary piece is unsafe if any range
     * covering it is unsafe. n is small (tens to a few hundred). */
    size_t npts = b->n * 2;
    uintptr_t *pts = rt_alloc(npts * sizeof *pts + 1);
    if (!pts)
        return -ENOMEM;
    for (size_t i = 0; i < b->n; i++) {
        pts[2 * i] = b->r[i].lo;
        pts[2 * i + 1] = b->r[i].hi;
    }
    qsort(pts, npts, sizeof *pts, uptr_cmp);
    pc_range_t *out = rt_alloc(npts * sizeof *out + 1);
    if (!out) {
        rt_free(pts);
        return -ENOMEM;
    }
    qsort(b->r, b->n, sizeof *b->r, range_cmp);
    size_t n = 0;
    for (size_t i = 0; i + 1 < npts; i++) {
        uintptr_t lo = pts[i], hi = pts[i + 1];
        if (lo == hi)
            continue;
        int cover = 0; /* 0 none, 1 safe, 2 unsafe */
        for (size_t k = 0; k < b->n && b->r[k].lo <= lo; k++)
            if (b->r[k].hi >= hi && b->r[k].lo <= lo)
                cover = b->r[k].safe ? (cover ? cover : 1) : 2;
        if (!cover)
            continue;
        bool safe = cover == 1;
        if (n && out[n - 1].hi == lo && out[n - 1].safe == safe)
            out[n - 1].hi = hi;
        else
            out[n++] = (pc_range_t){lo, hi, safe};
    }
    rt_free(pts);
    t->r = out;
    t->n = n;
    return 0;
}

static void builder_free(struct builder *b) { rt_free(b->r); }

/* Builds a new table and publishes it. Context: gort_run thread or sysmon. */
int safepc_build(void)
{
    struct builder b = {.gort_pc = (uintptr_t)&gort_run};
    dl_iterate_phdr(phdr_cb, &b);
    if (b.main_is_runtime && runtime_ranges_from_symtab(&b) == -ENOENT) {
        static bool warned;
        if (!warned)
            dbg_print("gort: preempt: the executable has no symbol table: the runtime's "
                      "code cannot be told from the program's, so tasks of the main "
                      "program are preempted cooperatively only\n");
        warned = true;
        for (size_t i = 0; i < b.n; i++)
            if (b.r[i].lo <= b.gort_pc && b.gort_pc < b.r[i].hi)
                b.r[i].safe = false;
    }
    if (b.err) {
        builder_free(&b);
        return b.err;
    }
    pc_table_t *t = rt_alloc(sizeof *t);
    if (!t) {
        builder_free(&b);
        return -ENOMEM;
    }
    int rc = ranges_normalize(&b, t);
    builder_free(&b);
    if (rc) {
        rt_free(t);
        return rc;
    }
    t->adds = b.adds;
    t->subs = b.subs;
    /* relaxed: only sysmon / the gort_run thread write the pointer */
    t->retired = atomic_load_explicit(&safepc_table, memory_order_relaxed);
    /* release: the handler's acquire load sees the filled table */
    atomic_store_explicit(&safepc_table, t, memory_order_release);
    return 0;
}

static int counters_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    unsigned long long *c = arg;
    c[0] = info->dlpi_adds;
    c[1] = info->dlpi_subs;
    return 1; /* the counters are the same in every entry: stop at the first */
}

void safepc_refresh(void)
{
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_relaxed);
    unsigned long long c[2] = {0, 0};
    dl_iterate_phdr(counters_cb, c);
    if (!t || c[0] != t->adds || c[1] != t->subs)
        safepc_build();
}

/* No handler may run on the tables any more (every M's timer is deleted; sysmon has
 * stopped), except a stray signal, which finds NULL and treats the PC as unsafe. */
void safepc_free(void)
{
    pc_table_t *t = atomic_exchange_explicit(&safepc_table, NULL, memory_order_acq_rel);
    while (t) {
        pc_table_t *next = t->retired;
        rt_free(t->r);
        rt_free(t);
        t = next;
    }
}

/* async-signal-safe: a binary search over an immutable table */
bool safepc_is_safe(uintptr_t pc)
{
    /* acquire: pairs with the release store in safepc_build */
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_acquire);
    if (!t)
        return false;
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pc < t->r[mid].lo)
            hi = mid;
        else if (pc >= t->r[mid].hi)
            lo = mid + 1;
        else
            return t->r[mid].safe;
    }
    return false;
}

/* Prints the table (debugging; any thread, not the handler). */
void safepc_dump(void)
{
    pc_table_t *t = atomic_load_explicit(&safepc_table, memory_order_acquire);
    for (size_t i = 0; t && i < t->n; i++)
        dbg_print("safepc: %lx-%lx %s\n", (unsigned long)t->r[i].lo,
                  (unsigned long)t->r[i].hi, t->r[i].safe ? "safe" : "unsafe");
}
