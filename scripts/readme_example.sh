#!/usr/bin/env bash
# scripts/readme_example.sh SOURCE_DIR LIBGORT_A — the `readme_example` ctest.
#
# The README's API tour is a complete program: extract it (the ```c block between the
# readme-example markers), build it against this build's libgort.a, run it, and check
# that it prints the line the README says it prints. A README whose example stopped
# compiling or working fails the tests.
set -euo pipefail

src=${1:?usage: readme_example.sh SOURCE_DIR LIBGORT_A}
lib=${2:?usage: readme_example.sh SOURCE_DIR LIBGORT_A}
cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gort-readme.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

awk '/<!-- readme-example:begin -->/ { on = 1; next }
     /<!-- readme-example:end -->/   { on = 0 }
     on && /^```c$/ { code = 1; next }
     on && /^```$/  { code = 0; next }
     code' "$src/README.md" >"$tmp/example.c"
want=$(sed -n 's/^<!-- readme-example:output \(.*\) -->$/\1/p' "$src/README.md")
[[ -s $tmp/example.c && -n $want ]] || {
    echo "readme_example: no example (or no expected output) in README.md" >&2; exit 1; }

# shellcheck disable=SC2046
$cc -std=gnu11 -O2 -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -Werror -o "$tmp/example" "$tmp/example.c" \
    -I"$src/include" "$lib" $(pkg-config --libs jemalloc libunwind) -lpthread -Wl,-z,now
out=$(timeout 60 "$tmp/example")
echo "$out"
grep -qxF "$want" <<<"$out" || {
    echo "readme_example: expected the line: $want" >&2; exit 1; }
echo "readme_example: README example builds, runs and prints what the README says"
