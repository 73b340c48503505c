/* core/bindnow.c — warns once when the program uses lazy binding.
 *
 * With lazy binding, the first call of each library function through the PLT enters
 * the dynamic linker's resolver, which saves the whole vector state (xsave: ~3 KiB with
 * AVX-512 here) on the current stack. From a 2 KiB task stack that overruns the stack
 * into its neighbour's — measured here: a task's first nanosleep() wrote over the
 * parked task below it. The fix is at link time (-Wl,-z,now, which gort.pc and the
 * CMake package add) or LD_BIND_NOW=1; the runtime can only say so, clearly, once.
 */
#include <elf.h>
#include <link.h>
#include <stdlib.h>

#include "rt.h"
#include "sched_impl.h"

static bool bindnow_warned;

static int check_main_object(struct dl_phdr_info *info, size_t size, void *data)
{
    bool *lazy = data;
    const ElfW(Dyn) *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn)
        return 1; /* static executable: no PLT resolver */
    bool has_plt = false, now = false;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        if (dyn->d_tag == DT_JMPREL)
            has_plt = true;
        if (dyn->d_tag == DT_BIND_NOW || (dyn->d_tag == DT_FLAGS && (dyn->d_un.d_val & DF_BIND_NOW)) ||
            (dyn->d_tag == DT_FLAGS_1 && (dyn->d_un.d_val & DF_1_NOW)))
            now = true;
    }
    *lazy = has_plt && !now;
    return 1; /* the first object is the main program: stop */
}

void bindnow_check(void)
{
    if (bindnow_warned)
        return;
    bindnow_warned = true;
    const char *env = getenv("LD_BIND_NOW");
    if (env && *env)
        return;
    bool lazy = false;
    dl_iterate_phdr(check_main_object, &lazy);
    if (lazy)
        dbg_print("gort: warning: this program uses lazy binding: the first call of a "
                  "library function from a task can need ~3 KiB of stack in the dynamic "
                  "linker and overrun a 2 KiB task stack. Link with -Wl,-z,now (pkg-config "
                  "--libs gort and the CMake target add it) or set LD_BIND_NOW=1.\n");
}
