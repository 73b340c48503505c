#!/usr/bin/env bash
# scripts/install_consumer.sh BUILD_DIR — the `install_consumer` ctest.
#
# Installs BUILD_DIR into a fresh temporary prefix with `cmake --install`, then builds
# scripts/consumer/consumer.c against what was installed, seven ways, and runs each:
#   pkg-config, shared:   cc consumer.c $(pkg-config --cflags --libs gort)
#   pkg-config, static:   the same with --static and libgort.a named explicitly
#   pkg-config gort_trackheap, shared and static: the tracked-heap layer as the malloc
#   find_package(gort):   gort::gort (static), gort::gort_shared, and
#                         gort::trackheap + gort::gort (component trackheap)
# Nothing from the source or build tree may leak in: the include path, the libraries and
# the package files all come from the prefix.
set -euo pipefail

build=$(cd "${1:?usage: install_consumer.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gort-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "--- install_consumer: $*"; }
# gort's link flags must make the program bind at load time (see CMakeLists.txt: lazy
# binding resolves on a 2 KiB task stack, and overflows it).
bind_now() {
    readelf -d "$1" | grep -Eq '\((FLAGS|FLAGS_1)\).*\bNOW\b|BIND_NOW' || {
        echo "install_consumer: $1 is not linked with -z now" >&2; exit 1; }
}
run_consumer() {
    bind_now "$1"
    local out
    # A hung runtime must fail the test, not stall it until ctest's timeout.
    out=$(timeout 60 "$@") || { echo "install_consumer: $1 failed (rc $?)" >&2; exit 1; }
    echo "$out"
    [[ $out == "consumer ok 5050" ]] || { echo "install_consumer: $1 printed '$out'" >&2; exit 1; }
}

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || {
    cat "$tmp/install.log" >&2; exit 1; }
libdir=$(dirname "$(find "$prefix" -name 'libgort.a' -print -quit)")
for f in include/gort.h; do [[ -f $prefix/$f ]] || { echo "missing $f" >&2; exit 1; }; done
for f in libgort.a libgort.so libgort.so.0 pkgconfig/gort.pc libgort_trackheap.a \
         libgort_trackheap.so libgort_trackheap.so.0 pkgconfig/gort_trackheap.pc \
         cmake/gort/gortConfig.cmake \
         cmake/gort/gortConfigVersion.cmake cmake/gort/gortTargets.cmake; do
    [[ -e $libdir/$f ]] || { echo "install_consumer: missing $libdir/$f" >&2; exit 1; }
done
grep -q "prefix=$prefix\$" "$libdir/pkgconfig/gort.pc" || {
    echo "install_consumer: gort.pc does not name the install prefix:" >&2
    cat "$libdir/pkgconfig/gort.pc" >&2; exit 1; }

export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
# Task code must keep frame pointers (gort.h): the flags must say so.
grep -q -- -fno-omit-frame-pointer <<<"$(pkg-config --cflags gort)" || {
    echo "install_consumer: pkg-config --cflags gort lacks -fno-omit-frame-pointer" >&2; exit 1; }
grep -q -- -fno-omit-frame-pointer "$libdir/cmake/gort/gortTargets.cmake" || {
    echo "install_consumer: gort::gort does not ask for -fno-omit-frame-pointer" >&2; exit 1; }
bind_now "$libdir/libgort.so"
step "pkg-config --cflags --libs gort: $(pkg-config --cflags --libs gort)"
# shellcheck disable=SC2046 # word splitting of pkg-config output is intended
$cc -o "$tmp/pc_shared" "$here/consumer/consumer.c" $(pkg-config --cflags --libs gort)
LD_LIBRARY_PATH=$libdir run_consumer "$tmp/pc_shared"
# The shared binary must really use the installed libgort.so.0.
# (ldd's output is captured first: `ldd | grep -q` under pipefail fails whenever grep
# exits before ldd has written everything and ldd dies of SIGPIPE.)
deps=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/pc_shared")
grep -q "$libdir/libgort.so.0" <<<"$deps" || {
    echo "install_consumer: pc_shared does not load $libdir/libgort.so.0" >&2; exit 1; }

static_libs=$(pkg-config --static --libs gort | sed 's/-lgort\b/-l:libgort.a/')
step "pkg-config --static: $static_libs"
# shellcheck disable=SC2046
$cc -o "$tmp/pc_static" "$here/consumer/consumer.c" $(pkg-config --cflags gort) $static_libs
deps=$(ldd "$tmp/pc_static")
if grep -q libgort <<<"$deps"; then
    echo "install_consumer: pc_static links libgort.so" >&2; exit 1
fi
run_consumer "$tmp/pc_static"

# The tracked-heap layer (trackheap/README.md): it must end up as the program's malloc,
# shared and static. GORT_DEBUG=trackheap=1 makes a run without it say so on stderr.
run_trackheap() {
    local err
    err=$(GORT_DEBUG=trackheap=1 run_consumer "$@" 2>&1 >/dev/null) || {
        echo "$err" >&2; exit 1; }
    if grep -q "needs libgort_trackheap" <<<"$err"; then
        echo "install_consumer: $1 runs without the tracked-heap layer:" >&2
        echo "$err" >&2; exit 1
    fi
    # Outputs captured first, as above: `cmd | grep -q` fails under pipefail when grep
    # exits early and cmd dies of SIGPIPE (seen in CI on this very check).
    local syms deps
    syms=$(nm -D --defined-only "$1" 2>/dev/null || true)
    deps=$(ldd "$1")
    grep -qw malloc <<<"$syms" || grep -q libgort_trackheap <<<"$deps" || {
        echo "install_consumer: $1 does not get malloc from libgort_trackheap" >&2; exit 1; }
}
step "pkg-config --libs gort_trackheap: $(pkg-config --libs gort_trackheap)"
# shellcheck disable=SC2046
$cc -o "$tmp/pc_trackheap" "$here/consumer/consumer.c" $(pkg-config --cflags --libs gort_trackheap)
LD_LIBRARY_PATH=$libdir run_trackheap "$tmp/pc_trackheap"
th_static=$(pkg-config --static --libs gort_trackheap |
    sed 's/-lgort_trackheap\b/-l:libgort_trackheap.a/; s/-lgort\b/-l:libgort.a/')
step "pkg-config --static gort_trackheap: $th_static"
# shellcheck disable=SC2046
# shellcheck disable=SC2086 # word splitting of the flags is intended
$cc -o "$tmp/pc_trackheap_static" "$here/consumer/consumer.c" $(pkg-config --cflags gort_trackheap) $th_static
run_trackheap "$tmp/pc_trackheap_static"

step "find_package(gort)"
cmake -S "$here/consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$tmp/cmake.log" || {
    cat "$tmp/cmake.log" >&2; exit 1; }
cmake --build "$tmp/cmake-build" -j2 >"$tmp/build.log" || { cat "$tmp/build.log" >&2; exit 1; }
run_consumer "$tmp/cmake-build/consumer_static"
# The CMake consumer gets the install's RUNPATH from CMake's build-tree rpath handling.
run_consumer "$tmp/cmake-build/consumer_shared"
deps=$(ldd "$tmp/cmake-build/consumer_shared")
grep -q "$libdir/libgort.so.0" <<<"$deps" || {
    echo "install_consumer: consumer_shared does not load $libdir/libgort.so.0" >&2; exit 1; }
run_trackheap "$tmp/cmake-build/consumer_trackheap"
echo "install_consumer: 7 consumers built and ran (3 with the tracked-heap layer)"
