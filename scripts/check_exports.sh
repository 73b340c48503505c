#!/usr/bin/env bash
# scripts/check_exports.sh LIBGORT_SO — the `abi_exports` ctest.
#
# libgort.so must export only the public API: every defined dynamic symbol starts with
# gort_ (the library builds with -fvisibility=hidden, and gort.h marks each public name
# GORT_API). Internals that leak out become API by accident and can clash with the
# program's own names (runq_put, chan_send, ...). The linker's own markers (_init,
# _fini, __bss_start, _edata, _end) are allowed. Also fails if nothing is exported, so a
# broken nm or an empty library cannot pass.
set -euo pipefail

lib=${1:?usage: check_exports.sh path/to/libgort.so}
[[ -f $lib ]] || { echo "check_exports: no such file: $lib" >&2; exit 2; }

syms=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u)
bad=$(grep -Ev '^(gort_.*|_init|_fini|__bss_start|_edata|_end)$' <<<"$syms" || true)
n=$(grep -c '^gort_' <<<"$syms" || true)

if [[ -n $bad ]]; then
    echo "check_exports: $lib exports symbols outside the gort_ namespace:" >&2
    sed 's/^/  /' <<<"$bad" >&2
    echo "make them static, or give them hidden visibility (RT_HIDDEN / no GORT_API)" >&2
    exit 1
fi
if (( n < 10 )); then
    echo "check_exports: only $n gort_* symbols exported by $lib: is the build broken?" >&2
    exit 1
fi
echo "check_exports: $n exported symbols, all gort_*"
