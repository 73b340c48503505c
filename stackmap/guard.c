/* stackmap/guard.c — fault reports: GORT_DEBUG=stackguard=1 guard pages, and the
 * SIGSEGV handler that names the task and the moved stack (stackguard=1, stackmove=1).
 * (Guard pages: not built yet; see README.md.)
 */
#include "rt.h"
#include "stackmap.h"

void guard_install(void) {}
