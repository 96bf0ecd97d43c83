#!/usr/bin/env bash
# Installs dependencies, builds Mayfly and runs the whole test suite (unit and
# integration) through CTest; exits non-zero on any failure.
#
# The suite runs twice: on the normal build (build/), then on an
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/), which
# also checks the daemons for leaks at exit. MAYFLY_SKIP_SANITIZE=1 skips
# the second run. Extra arguments go to ctest (e.g. -L unit, -R test_cli).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=build scripts/build.sh
(cd build && ctest --output-on-failure --timeout 300 "$@")

if [ "${MAYFLY_SKIP_SANITIZE:-0}" != "1" ]; then
  echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer =="
  BUILD_DIR=build-asan MAYFLY_SANITIZE=address,undefined scripts/build.sh
  export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  (cd build-asan && ctest --output-on-failure --timeout 600 "$@")
fi
