#!/usr/bin/env bash
# scripts/demo.sh [demo args...] — install the dependencies (scripts/deps.sh), build gort
# in build/ (RelWithDebInfo) and run the demo, build/perf/gort_demo.
#
# Environment: GORT_BUILD_ROOT (default build), JOBS (default 2); GORT_PROCS and
# GORT_DEBUG reach the demo as they do any gort program.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
dir=$src/${GORT_BUILD_ROOT:-build}
"$src/scripts/deps.sh"
cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$dir" -j"${JOBS:-2}" --target gort_demo
exec "$dir/perf/gort_demo" "$@"
