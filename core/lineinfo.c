/* core/lineinfo.c — "file:line" for a code address, from the DWARF line tables of the
 * module that holds it (`.debug_line`, versions 2 to 5), for dumps and leak reports.
 *
 * No libdw (not a dependency): this reads only the line-number programs, the one part
 * of DWARF that maps addresses to lines, and runs their state machine until the row
 * covering the address. Each module's file is mapped read-only once, on first use,
 * and stays mapped for the life of the process (a leak report symbolizes again later;
 * read-only file pages are neither runtime memory nor a leak-detector root).
 * Answers nothing (returns false) when the module has no line tables (stripped, split
 * debug info, compressed sections) or the address is in none of them: callers then
 * print what they have without a line.
 * Context: the system stack or any thread with a few KiB of stack; not
 * async-signal-safe (mmap, open). Lock: lineinfo.lock, a leaf spinlock around the
 * module cache; the line programs are read outside it (the mappings never go away).
 */
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/arch.h"
#include "rt.h"
#include "sched_impl.h"

enum { LINEINFO_MODULES = 64, LINEINFO_PATH = 256 };

/* What was learnt of one loaded object. Written once under lineinfo.lock, then only
 * read (the slot is published by modules_n's release store). */
typedef struct lineinfo_module {
    uintptr_t bias;          /* dlpi_addr: the module's load address offset */
    uintptr_t lo, hi;        /* its executable range (absolute addresses) */
    const uint8_t *line;     /* .debug_line, or NULL: no line info */
    size_t line_len;
    const uint8_t *line_str; /* .debug_line_str (DWARF 5 file names) */
    size_t line_str_len;
    const uint8_t *str;      /* .debug_str */
    size_t str_len;
} lineinfo_module_t;

static lineinfo_module_t modules[LINEINFO_MODULES];
static _Atomic size_t modules_n;   /* published slots (release/acquire) */
static atomic_flag lineinfo_lock;  /* leaf: adding a module */

/* ------------------------------------------------------------ reading bytes */

typedef struct cursor {
    const uint8_t *p, *end;
    bool bad; /* ran past the end: every read after it returns 0 */
} cursor_t;

static uint64_t rd_fixed(cursor_t *c, size_t n)
{
    if (c->bad || (size_t)(c->end - c->p) < n) {
        c->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)c->p[i] << (8 * i); /* DWARF here is little-endian (x86-64, aarch64) */
    c->p += n;
    return v;
}

static uint64_t rd_uleb(cursor_t *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; !c->bad; shift += 7) {
        if (c->p >= c->end) {
            c->bad = true;
            break;
        }
        uint8_t b = *c->p++;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    return c->bad ? 0 : v;
}

static int64_t rd_sleb(cursor_t *c)
{
    int64_t v = 0;
    unsigned shift = 0;
    uint8_t b = 0;
    do {
        if (c->p >= c->end) {
            c->bad = true;
            return 0;
        }
        b = *c->p++;
        if (shift < 64)
            v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
    } while (b & 0x80);
    if (shift < 64 && (b & 0x40))
        v |= -((int64_t)1 << shift);
    return v;
}

static const char *rd_cstr(cursor_t *c)
{
    const uint8_t *s = c->p;
    const uint8_t *nul = c->bad ? NULL : memchr(s, 0, (size_t)(c->end - s));
    if (!nul) {
        c->bad = true;
        return "";
    }
    c->p = nul + 1;
    return (const char *)s;
}

/* A string at offset off of a string section, or "" when off is outside it. */
static const char *sec_str(const uint8_t *sec, size_t len, uint64_t off)
{
    if (!sec || off >= len || !memchr(sec + off, 0, len - off))
        return "";
    return (const char *)sec + off;
}

/* ------------------------------------------------------------ the line program */

enum {
    DW_LNS_copy = 1, DW_LNS_advance_pc, DW_LNS_advance_line, DW_LNS_set_file,
    DW_LNS_set_column, DW_LNS_negate_stmt, DW_LNS_set_basic_block, DW_LNS_const_add_pc,
    DW_LNS_fixed_advance_pc,
    DW_LNE_end_sequence = 1, DW_LNE_set_address = 2,
    DW_LNCT_path = 1, DW_LNCT_directory_index = 2,
    DW_FORM_block = 0x09, DW_FORM_data1 = 0x0b, DW_FORM_data2 = 0x05, DW_FORM_data4 = 0x06,
    DW_FORM_data8 = 0x07, DW_FORM_data16 = 0x1e, DW_FORM_string = 0x08, DW_FORM_strp = 0x0e,
    DW_FORM_udata = 0x0f, DW_FORM_line_strp = 0x1f,
};

enum { LINE_MAX_DIRS = 256, LINE_MAX_FILES = 1024, LINE_MAX_FORMAT = 16 };

/* One unit's header, as far as finding a file name needs it. */
typedef struct line_unit {
    unsigned version;
    unsigned offset_size;     /* 4 or 8 (64-bit DWARF) */
    unsigned min_inst;
    int line_base;
    unsigned line_range;
    unsigned opcode_base;
    const uint8_t *std_lengths;
    const uint8_t *files_at;  /* where the directory and file tables start */
    const uint8_t *program, *end;
} line_unit_t;

/* Reads one attribute value of a DWARF 5 entry format: a string (for DW_FORM_string
 * and the string-section forms) or a number. Returns false on a form it cannot skip. */
static bool rd_form(cursor_t *c, const lineinfo_module_t *m, const line_unit_t *u,
                    uint64_t form, const char **str, uint64_t *num)
{
    *str = NULL;
    *num = 0;
    switch (form) {
    case DW_FORM_string: *str = rd_cstr(c); return true;
    case DW_FORM_line_strp:
        *str = sec_str(m->line_str, m->line_str_len, rd_fixed(c, u->offset_size));
        return true;
    case DW_FORM_strp: *str = sec_str(m->str, m->str_len, rd_fixed(c, u->offset_size)); return true;
    case DW_FORM_udata: *num = rd_uleb(c); return true;
    case DW_FORM_data1: *num = rd_fixed(c, 1); return true;
    case DW_FORM_data2: *num = rd_fixed(c, 2); return true;
    case DW_FORM_data4: *num = rd_fixed(c, 4); return true;
    case DW_FORM_data8: *num = rd_fixed(c, 8); return true;
    case DW_FORM_data16: rd_fixed(c, 8); rd_fixed(c, 8); return true;
    case DW_FORM_block: {
        uint64_t n = rd_uleb(c);
        if (n > (uint64_t)(c->end - c->p))
            c->bad = true;
        else
            c->p += n;
        return true;
    }
    default: return false;
    }
}

/* A DWARF 5 entry format: (content type, form) pairs. */
typedef struct entry_format {
    unsigned n;
    uint64_t type_form[LINE_MAX_FORMAT][2];
} entry_format_t;

static bool rd_entry_format(cursor_t *c, entry_format_t *f)
{
    f->n = (unsigned)rd_fixed(c, 1);
    if (f->n > LINE_MAX_FORMAT)
        return false;
    for (unsigned i = 0; i < f->n; i++) {
        f->type_form[i][0] = rd_uleb(c);
        f->type_form[i][1] = rd_uleb(c);
    }
    return !c->bad;
}

/* One directory or file entry: its path ("" if none) and directory index (0 if none). */
static bool rd_entry(cursor_t *c, const lineinfo_module_t *m, const line_unit_t *u,
                     const entry_format_t *f, const char **path, uint64_t *dix)
{
    *path = "";
    *dix = 0;
    for (unsigned i = 0; i < f->n; i++) {
        const char *s;
        uint64_t v;
        if (!rd_form(c, m, u, f->type_form[i][1], &s, &v))
            return false;
        if (f->type_form[i][0] == DW_LNCT_path && s)
            *path = s;
        else if (f->type_form[i][0] == DW_LNCT_directory_index)
            *dix = v;
    }
    return true;
}

/* Writes "dir/file:line" for file index `file` of unit u. */
static bool unit_file_name(const lineinfo_module_t *m, const line_unit_t *u, uint64_t file,
                           unsigned line, char *out, size_t len)
{
    cursor_t c = {u->files_at, u->program, false};
    const char *dirs[LINE_MAX_DIRS];
    size_t ndirs = 0;
    const char *name = NULL;
    uint64_t dir = 0;
    if (u->version >= 5) {
        /* two tables, each an entry format then its entries: directories, files */
        entry_format_t fmt;
        if (!rd_entry_format(&c, &fmt))
            return false;
        uint64_t n = rd_uleb(&c);
        for (uint64_t d = 0; d < n && !c.bad; d++) {
            const char *path;
            uint64_t dix;
            if (!rd_entry(&c, m, u, &fmt, &path, &dix))
                return false;
            if (ndirs < LINE_MAX_DIRS)
                dirs[ndirs++] = path;
        }
        if (!rd_entry_format(&c, &fmt))
            return false;
        n = rd_uleb(&c);
        for (uint64_t f = 0; f < n && !c.bad; f++) {
            const char *path;
            uint64_t dix;
            if (!rd_entry(&c, m, u, &fmt, &path, &dix))
                return false;
            if (f == file) {
                name = path;
                dir = dix;
                break;
            }
        }
    } else {
        /* include_directories (1-based; 0 is the compilation directory, not named
         * here), then file_names (1-based) */
        dirs[ndirs++] = "";
        for (const char *d; *(d = rd_cstr(&c)) && !c.bad;)
            if (ndirs < LINE_MAX_DIRS)
                dirs[ndirs++] = d;
        for (uint64_t f = 1; !c.bad; f++) {
            const char *path = rd_cstr(&c);
            if (!*path)
                break;
            uint64_t dix = rd_uleb(&c);
            rd_uleb(&c); /* mtime */
            rd_uleb(&c); /* length */
            if (f == file) {
                name = path;
                dir = dix;
                break;
            }
        }
    }
    if (c.bad || !name || !*name)
        return false;
    const char *d = dir < ndirs ? dirs[dir] : "";
    char full[LINEINFO_PATH * 2];
    int n;
    if (name[0] == '/' || !*d)
        n = snprintf(full, sizeof full, "%s:%u", name, line);
    else
        n = snprintf(full, sizeof full, "%s/%s:%u", d, name, line);
    if (n < 0)
        return false;
    size_t flen = strlen(full);
    /* too long for out: keep the end (file name and line), the useful part */
    const char *from = flen < len ? full : full + (flen - (len - 1));
    memcpy(out, from, strlen(from) + 1);
    return true;
}

/* Parses the header of the unit at c; leaves c after the unit. */
static bool unit_parse(cursor_t *c, line_unit_t *u)
{
    uint64_t unit_len = rd_fixed(c, 4);
    u->offset_size = 4;
    if (unit_len == 0xffffffffu) {
        unit_len = rd_fixed(c, 8);
        u->offset_size = 8;
    }
    if (c->bad || unit_len > (uint64_t)(c->end - c->p))
        return false;
    const uint8_t *unit_end = c->p + unit_len;
    cursor_t h = {c->p, unit_end, false};
    c->p = unit_end;
    u->end = unit_end;
    u->version = (unsigned)rd_fixed(&h, 2);
    if (u->version < 2 || u->version > 5)
        return false;
    if (u->version >= 5)
        rd_fixed(&h, 2); /* address_size, segment_selector_size */
    uint64_t header_len = rd_fixed(&h, u->offset_size);
    if (h.bad || header_len > (uint64_t)(unit_end - h.p))
        return false;
    u->program = h.p + header_len;
    u->min_inst = (unsigned)rd_fixed(&h, 1);
    if (u->version >= 4)
        rd_fixed(&h, 1); /* maximum_operations_per_instruction: 1 outside VLIW */
    rd_fixed(&h, 1);     /* default_is_stmt */
    u->line_base = (int8_t)rd_fixed(&h, 1);
    u->line_range = (unsigned)rd_fixed(&h, 1);
    u->opcode_base = (unsigned)rd_fixed(&h, 1);
    if (h.bad || u->line_range == 0 || u->opcode_base == 0 ||
        u->opcode_base - 1 > (size_t)(u->program - h.p))
        return false;
    u->std_lengths = h.p;
    u->files_at = h.p + (u->opcode_base - 1);
    return u->files_at <= u->program;
}

/* The last row a line program emitted. */
typedef struct line_row {
    bool valid;     /* false at a sequence's start */
    uint64_t addr;
    uint64_t file;
    int64_t line;
} line_row_t;

/* A row at address a (file f, line l) was emitted: the previous row covers
 * [prev->addr, a). True, with *file and *line, when that range holds target. */
static bool line_row(line_row_t *prev, uint64_t a, uint64_t f, int64_t l, uint64_t target,
                     uint64_t *file, unsigned *line)
{
    if (prev->valid && prev->addr <= target && target < a) {
        *file = prev->file;
        *line = prev->line > 0 ? (unsigned)prev->line : 0;
        return true;
    }
    *prev = (line_row_t){true, a, f, l};
    return false;
}

/* Runs unit u's program: true with *file and *line of the row covering addr. */
static bool unit_find(const line_unit_t *u, uint64_t addr, uint64_t *file, unsigned *line)
{
    cursor_t c = {u->program, u->end, false};
    uint64_t a = 0, f = 1;
    int64_t l = 1;
    line_row_t prev = {0};
    while (c.p < c.end && !c.bad) {
        unsigned op = (unsigned)rd_fixed(&c, 1);
        if (op >= u->opcode_base) {
            unsigned adj = op - u->opcode_base;
            a += (uint64_t)(adj / u->line_range) * u->min_inst;
            l += u->line_base + (int)(adj % u->line_range);
            if (line_row(&prev, a, f, l, addr, file, line))
                return true;
            continue;
        }
        switch (op) {
        case 0: {
            uint64_t n = rd_uleb(&c);
            if (n == 0 || n > (uint64_t)(c.end - c.p)) {
                c.bad = true;
                break;
            }
            const uint8_t *next = c.p + n;
            unsigned sub = (unsigned)rd_fixed(&c, 1);
            if (sub == DW_LNE_end_sequence) {
                if (line_row(&prev, a, f, l, addr, file, line))
                    return true;
                prev.valid = false;
                a = 0;
                f = 1;
                l = 1;
            } else if (sub == DW_LNE_set_address) {
                a = rd_fixed(&c, n - 1 > 8 ? 8 : n - 1);
            }
            c.p = next;
            break;
        }
        case DW_LNS_copy:
            if (line_row(&prev, a, f, l, addr, file, line))
                return true;
            break;
        case DW_LNS_advance_pc: a += rd_uleb(&c) * u->min_inst; break;
        case DW_LNS_advance_line: l += rd_sleb(&c); break;
        case DW_LNS_set_file: f = rd_uleb(&c); break;
        case DW_LNS_const_add_pc:
            a += (uint64_t)((255 - u->opcode_base) / u->line_range) * u->min_inst;
            break;
        case DW_LNS_fixed_advance_pc: a += rd_fixed(&c, 2); break;
        default:
            /* set_column, negate_stmt, prologue/epilogue marks, isa, and opcodes of
             * later versions: skip their ULEB operands, as the header says */
            for (unsigned i = 0; i < u->std_lengths[op - 1]; i++)
                rd_uleb(&c);
            break;
        }
    }
    return false;
}

/* ------------------------------------------------------------ modules */

struct find_module {
    uintptr_t pc;
    uintptr_t bias, lo, hi;
    char path[LINEINFO_PATH];
    bool found;
};

static int find_module_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct find_module *fm = arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (fm->pc < lo || fm->pc >= hi)
            continue;
        fm->bias = info->dlpi_addr;
        fm->lo = lo;
        fm->hi = hi;
        const char *name = info->dlpi_name && *info->dlpi_name ? info->dlpi_name
                                                               : "/proc/self/exe";
        snprintf(fm->path, sizeof fm->path, "%s", name);
        fm->found = true;
        return 1;
    }
    return 0;
}

/* Maps the module's file and finds its line sections; m->line stays NULL without. */
static void module_load(lineinfo_module_t *m, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(ElfW(Ehdr)))
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    size_t size = (size_t)st.st_size;
    const uint8_t *base = map;
    const ElfW(Ehdr) *eh = map;
    bool keep = false;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
        eh->e_shentsize == sizeof(ElfW(Shdr)) && eh->e_shoff < size &&
        eh->e_shnum <= (size - eh->e_shoff) / sizeof(ElfW(Shdr)) && eh->e_shstrndx < eh->e_shnum) {
        const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(base + eh->e_shoff);
        const ElfW(Shdr) *names = &sh[eh->e_shstrndx];
        for (unsigned i = 0; i < eh->e_shnum && names->sh_offset < size; i++) {
            if (sh[i].sh_type == SHT_NOBITS || (sh[i].sh_flags & SHF_COMPRESSED) ||
                sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset)
                continue;
            const char *nm = sec_str(base + names->sh_offset,
                                     size - names->sh_offset < names->sh_size
                                         ? size - names->sh_offset
                                         : names->sh_size,
                                     sh[i].sh_name);
            const uint8_t *data = base + sh[i].sh_offset;
            if (strcmp(nm, ".debug_line") == 0) {
                m->line = data;
                m->line_len = sh[i].sh_size;
            } else if (strcmp(nm, ".debug_line_str") == 0) {
                m->line_str = data;
                m->line_str_len = sh[i].sh_size;
            } else if (strcmp(nm, ".debug_str") == 0) {
                m->str = data;
                m->str_len = sh[i].sh_size;
            }
        }
        keep = m->line != NULL;
    }
    if (!keep) {
        munmap(map, size);
        m->line = m->line_str = m->str = NULL;
    }
}

/* The module holding pc (learnt on first use), or NULL. */
static const lineinfo_module_t *module_of(uintptr_t pc)
{
    /* acquire: pairs with the release store below; published slots are immutable */
    size_t n = atomic_load_explicit(&modules_n, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (pc >= modules[i].lo && pc < modules[i].hi)
            return &modules[i];
    struct find_module fm = {.pc = pc};
    dl_iterate_phdr(find_module_cb, &fm);
    if (!fm.found)
        return NULL;
    while (atomic_flag_test_and_set_explicit(&lineinfo_lock, memory_order_acquire))
        arch_spin_pause();
    const lineinfo_module_t *res = NULL;
    n = atomic_load_explicit(&modules_n, memory_order_relaxed);
    for (size_t i = 0; i < n && !res; i++) /* another thread may have added it */
        if (pc >= modules[i].lo && pc < modules[i].hi)
            res = &modules[i];
    if (!res && n < LINEINFO_MODULES) {
        lineinfo_module_t *m = &modules[n];
        memset(m, 0, sizeof *m);
        m->bias = fm.bias;
        m->lo = fm.lo;
        m->hi = fm.hi;
        module_load(m, fm.path);
        /* release: the slot's contents before the count that publishes it */
        atomic_store_explicit(&modules_n, n + 1, memory_order_release);
        res = m;
    }
    atomic_flag_clear_explicit(&lineinfo_lock, memory_order_release);
    return res;
}

bool lineinfo_find(uintptr_t pc, char *out, size_t len)
{
    const lineinfo_module_t *m = module_of(pc);
    if (!m || !m->line || len == 0)
        return false;
    uint64_t addr = pc - m->bias;
    cursor_t c = {m->line, m->line + m->line_len, false};
    while (c.p < c.end && !c.bad) {
        line_unit_t u;
        if (!unit_parse(&c, &u))
            break;
        uint64_t file;
        unsigned line;
        if (unit_find(&u, addr, &file, &line))
            return unit_file_name(m, &u, file, line, out, len);
    }
    return false;
}
