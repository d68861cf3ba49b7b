#!/usr/bin/env bash
# Build the compiled kernels with AddressSanitizer and UndefinedBehaviorSanitizer and run the
# kernel and fuzz tests under them. Works on a copy of the tracked files, so the work tree's
# own build is left alone. Any sanitizer report aborts the run (exit status non-zero).
#
#   bash scripts/sanitize.sh [extra pytest arguments]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && git ls-files -z | xargs -0 tar -cf - ) | tar -xf - -C "$work"
cd "$work"
echo "== building with FASTGRAD_SANITIZE=address,undefined in $work"
FASTGRAD_SANITIZE=address,undefined FASTGRAD_NO_SIMD_VARIANT=1 python setup.py -q build_ext --inplace
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Python itself is not built with ASan: preload the runtimes, and leave leak checking to
# tests/reliability (CPython keeps interned objects alive until exit by design).
export LD_PRELOAD="$asan:$ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export FASTGRAD_SANITIZED=1
echo "== kernel and fuzz tests under ASan + UBSan"
python -m pytest -q -p no:cacheprovider tests/kernels tests/fuzz "$@" 2>&1 | tee "$work/sanitize.log"
reports=$(grep -c -E "ERROR: AddressSanitizer|runtime error:" "$work/sanitize.log" || true)
echo "sanitizer reports: $reports"
[ "$reports" -eq 0 ]
