#!/usr/bin/env bash
# Build the compiled kernels with AddressSanitizer and UndefinedBehaviorSanitizer and run the
# kernel and fuzz tests under them. Works on a copy of the source files, so the work tree's
# own build is left alone. Any sanitizer report aborts the run (exit status non-zero).
#
#   bash scripts/sanitize.sh [extra pytest arguments]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the work tree as it is: tracked files and new ones not ignored (no build outputs)
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - ) \
    | tar -xf - -C "$work"
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
# pipefail makes the pipeline's status pytest's (tee succeeds); "|| status=$?" keeps set -e
# from ending the script before the summary below is printed.
started=$SECONDS
status=0
python -m pytest -p no:cacheprovider tests/kernels tests/fuzz "$@" 2>&1 | tee "$work/sanitize.log" \
    || status=$?
reports=$(grep -c -E "ERROR: AddressSanitizer|runtime error:" "$work/sanitize.log" || true)
echo "pytest exit status: $status"
echo "tests: $(grep -E '^[0-9]+ [a-z]+.* in [0-9.]+s' "$work/sanitize.log" | tail -n 1 || true)"
echo "time: $((SECONDS - started)) s"
echo "sanitizer reports: $reports"
[ "$status" -eq 0 ] && [ "$reports" -eq 0 ]
