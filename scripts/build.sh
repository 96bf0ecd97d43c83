#!/usr/bin/env bash
# Builds Mayfly. Installs missing dependencies first.
#   BUILD_DIR        build tree (default: build)
#   MAYFLY_SANITIZE  e.g. address,undefined for a sanitizer build
#   BUILD_TYPE       CMake build type (default: RelWithDebInfo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DMAYFLY_SANITIZE="${MAYFLY_SANITIZE:-}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
