#!/usr/bin/env bash
# The README's "test" command, and exactly what CI runs (.ci/run): installs build and test
# dependencies (Debian 12, apt-get), builds everything, runs the whole CTest suite (unit, golden,
# ThreadSanitizer, integration and differential tests), then builds the micro-benchmarks (they
# print figures; they are not run as tests).
set -euo pipefail
cd "$(dirname "$0")/.."
HSP_WITH_TESTS=1 ./scripts/install-deps.sh
build_dir=${HSP_BUILD_DIR:-build}
HSP_BUILD_DIR=$build_dir ./scripts/build.sh -DHSP_BUILD_TESTS=ON -DHSP_BUILD_BENCH=ON
cd "$build_dir"
ctest --output-on-failure --timeout 600 -j "${HSP_TEST_JOBS:-2}"
