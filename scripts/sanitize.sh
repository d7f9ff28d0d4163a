#!/usr/bin/env bash
# The compiled core and data plane built with AddressSanitizer and UBSan, and their tests run on that build.
#
# The build goes to var/sanitize/ (a copy of the package with the instrumented
# extensions), never over the normal build in src/. PYTHONPATH puts that copy
# first, and the run checks that the instrumented modules are the ones imported.
# Any sanitizer report stops the run with a non-zero exit (halt_on_error).
# Usage: scripts/sanitize.sh PYTHON [pytest arguments...]
set -euo pipefail

PY=${1:?usage: scripts/sanitize.sh PYTHON [pytest arguments]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/var/sanitize
cd "$ROOT"

asan=$(gcc -print-file-name=libasan.so)
if [ "$asan" = libasan.so ]; then
    echo "sanitize: gcc has no libasan (Debian: apt-get install libasan8 libubsan1)" >&2
    exit 1
fi

echo "sanitize: building the compiled core with -fsanitize=address,undefined into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
(cd src && tar --exclude='*.so' --exclude='__pycache__' -cf - pinkrelay) | tar -xf - -C "$OUT"
PINKRELAY_SANITIZE=1 "$PY" setup.py -q build_ext --build-lib "$OUT" --build-temp "$OUT/build" >"$OUT/build.log" 2>&1 || {
    tail -30 "$OUT/build.log" >&2
    exit 1
}

export LD_PRELOAD=$asan
# Leaks: CPython keeps its own allocations until exit; only memory errors and undefined behaviour count.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH=$OUT
"$PY" -c 'import pinkrelay._core._dataplane as d, pinkrelay._core._cpinkrelay as c, sys
for m in (d, c):
    assert m.__file__.startswith(sys.argv[1]), f"{m.__name__} came from {m.__file__}, not the sanitized build"
print("sanitize: running the tests on", d.__file__.rsplit("/", 3)[0])' "$OUT"
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
