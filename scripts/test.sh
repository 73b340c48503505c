#!/usr/bin/env bash
# scripts/test.sh [all|normal|asan|tsan]... — build gort and run its tests.
#
#   normal  RelWithDebInfo (-O2 -g -fno-omit-frame-pointer) in build/: every Check suite
#           (each also as <name>_migrate, GORT_DEBUG=migrate=1, and as <name>_stackmove,
#           GORT_DEBUG=stackmove=1: the stack moves at every GORT_FRAME check and
#           runtime call), abi_exports, install_consumer, readme_example
#   asan    ASan + UBSan (GORT_LOCKRANK=ON, reserved: no checker yet), in build-asan/: every suite, once
#           (GORT_ASAN_MIGRATE=ON / GORT_ASAN_STACKMOVE=ON: also those twins)
#   tsan    TSan (GORT_LOCKRANK=ON, reserved), in build-tsan/: the suites marked ctest-tsan,
#           each also as <name>_migrate (no _stackmove twins: the normal build runs them)
#   all     the three, in that order (default)
# Each mode builds in its own directory and runs ctest --output-on-failure -j$JOBS; the
# script stops at the first mode that fails (unless KEEP_GOING=1) and exits non-zero.
# It runs scripts/deps.sh first (as root it installs what is missing). The last line
# is "test.sh: N passed, F failed" over all modes run.
#
# Environment:
#   GORT_BUILD_ROOT  build directory of the normal mode (default: build); the others
#                    add -asan / -tsan
#   JOBS             parallel build jobs and tests (default 2)
#   CI               when set (CI=true), warnings are errors (-DGORT_WERROR=ON)
#   GORT_WERROR      ON/OFF: overrides the CI default
#   CTEST_ARGS       extra ctest arguments, e.g. "-R core_chan"
#   KEEP_GOING=1     run the remaining modes after one failed (still exits non-zero)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"
root=${GORT_BUILD_ROOT:-build}
jobs=${JOBS:-2}
werror=${GORT_WERROR:-$([[ -n ${CI:-} ]] && echo ON || echo OFF)}
read -r -a ctest_extra <<<"${CTEST_ARGS:-}"

modes=("$@")
((${#modes[@]})) || modes=(all)
if [[ " ${modes[*]} " == *" all "* ]]; then
    modes=(normal asan tsan)
fi
for m in "${modes[@]}"; do
    case $m in
    normal | asan | tsan) ;;
    *) echo "usage: $0 [all|normal|asan|tsan]..." >&2; exit 2 ;;
    esac
done

"$src/scripts/deps.sh"

total_pass=0
total_fail=0
summary=()
t_all=$SECONDS

run_mode() {
    local mode=$1 dir flags=()
    case $mode in
    normal) dir=$root; flags=(-DGORT_SANITIZE= -DGORT_LOCKRANK=OFF -DGORT_BUILD_PERF=ON
        -DGORT_TEST_MIGRATE=ON -DGORT_TEST_STACKMOVE=ON) ;;
    # ASan: every suite once. The _migrate twins double the slowest mode (instrumented
    # suites run 3-8x longer) for little: migration bugs show in the normal build's
    # twins and in TSan's. GORT_ASAN_MIGRATE=ON puts them back.
    # Same for the _stackmove twins (GORT_ASAN_STACKMOVE=ON puts them back).
    asan) dir=$root-asan; flags=(-DGORT_SANITIZE=address -DGORT_LOCKRANK=ON -DGORT_BUILD_PERF=OFF
        -DGORT_TEST_MIGRATE="${GORT_ASAN_MIGRATE:-OFF}"
        -DGORT_TEST_STACKMOVE="${GORT_ASAN_STACKMOVE:-OFF}") ;;
    tsan) dir=$root-tsan; flags=(-DGORT_SANITIZE=thread -DGORT_LOCKRANK=ON -DGORT_BUILD_PERF=OFF
        -DGORT_TEST_MIGRATE=ON -DGORT_TEST_STACKMOVE=OFF) ;;
    esac
    local t0=$SECONDS
    echo "=== test.sh: $mode: configure + build in $dir/"
    cmake -S "$src" -B "$src/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DGORT_WERROR="$werror" "${flags[@]}" || return 1
    # (set -e does not apply inside a function called from `if`: check each step.)
    cmake --build "$src/$dir" -j"$jobs" || { summary+=("$mode: build failed"); return 1; }
    local t_build=$((SECONDS - t0))
    echo "=== test.sh: $mode: ctest (built in ${t_build}s)"
    local log="$src/$dir/test.sh.log" rc=0
    ctest --test-dir "$src/$dir" --output-on-failure --no-tests=error -j"$jobs" \
        "${ctest_extra[@]}" 2>&1 | tee "$log" || rc=$?
    # "N% tests passed, F tests failed out of T"
    local line pass=0 fail=0 total
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
    if [[ -n $line ]]; then
        fail=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
        total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
        pass=$((total - fail))
    elif ((rc == 0)); then
        rc=1 # ctest said nothing about tests: count it as a failure
    fi
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    summary+=("$mode: $pass passed, $fail failed (build ${t_build}s, total $((SECONDS - t0))s)")
    return "$rc"
}

status=0
for m in "${modes[@]}"; do
    if ! run_mode "$m"; then
        status=1
        if [[ ${KEEP_GOING:-} == 1 ]]; then
            echo "=== test.sh: $m FAILED; going on (KEEP_GOING=1)" >&2
            continue
        fi
        echo "=== test.sh: $m FAILED; stopping" >&2
        break
    fi
done
echo "=== test.sh summary ($((SECONDS - t_all))s)"
printf '  %s\n' "${summary[@]}"
echo "test.sh: $total_pass passed, $total_fail failed"
exit "$status"
