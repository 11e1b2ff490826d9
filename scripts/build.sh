#!/usr/bin/env bash
# Configures and builds HSP Gateway into ${HSP_BUILD_DIR:-build} (Ninja, RelWithDebInfo).
# Extra arguments go to CMake, e.g. scripts/build.sh -DHSP_BUILD_BENCH=OFF; HSP_TARGETS names the
# targets to build (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${HSP_BUILD_DIR:-build}
jobs=${HSP_JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${HSP_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
# shellcheck disable=SC2086 # HSP_TARGETS is a list
ninja -C "$build_dir" -j "$jobs" ${HSP_TARGETS:-}
