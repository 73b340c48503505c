#!/usr/bin/env bash
# scripts/deps.sh — install what building and testing gort needs (Debian/Ubuntu).
#
# Checks each package with dpkg-query and, when something is missing, installs it with
# apt-get (running `apt-get update` once first) if run as root, or prints the command
# to run otherwise. Idempotent and quick when everything is present: no apt-get at all.
#
#   build-essential cmake pkg-config   compiler, build, dependency lookup
#   libjemalloc-dev libunwind-dev      gort's two runtime dependencies
#   check                              the unit-test framework (Check)
#   golang-go                          perf/: the Go side of the side-by-side benchmarks
#   valgrind                           callgrind instruction counts of hot paths (perf/)
# The sanitizer builds need nothing more: gcc's libasan, libubsan and libtsan come with
# build-essential's gcc.
#
# Usage: scripts/deps.sh [--check]   (--check: only report; exit 1 if something is missing)
set -euo pipefail

pkgs=(build-essential cmake pkg-config libjemalloc-dev libunwind-dev check golang-go valgrind)
# Runtime libraries of gcc's sanitizers, named by the gcc major version (12: libasan8,
# libubsan1, libtsan2). They are normally pulled in by gcc itself; list them so a
# trimmed image is caught here instead of at link time.
if command -v gcc >/dev/null 2>&1; then
    case "$(gcc -dumpversion | cut -d. -f1)" in
    12 | 13 | 14) pkgs+=(libasan8 libubsan1 libtsan2) ;;
    esac
fi

# One dpkg-query for all (it prints nothing for a package it has never heard of).
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${pkgs[@]}" 2>/dev/null |
    awk '$2 == "installed" { print $1 }' || true)
missing=()
for p in "${pkgs[@]}"; do
    grep -qx "$p" <<<"$installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "deps: all present (${pkgs[*]})"
    exit 0
fi
echo "deps: missing: ${missing[*]}"
if [[ ${1:-} == --check ]]; then
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "deps: not root; run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    echo "      (or: sudo $0)"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: installed ${missing[*]}"
