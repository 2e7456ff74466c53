#!/usr/bin/env bash
# connpool - the demo: build the quickstart example in Release and run it.
#
#   ./scripts/demo.sh [quickstart arguments...]
#
# Needs only cmake, g++ and make (installed when run as root). Uses the `release` preset with
# tests and benchmarks off (so neither Catch2 nor Google Benchmark is needed), in build/demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-packages.sh cmake g++ make

cmake --preset release -B build/demo \
  -DCONNPOOL_BUILD_TESTS=OFF -DCONNPOOL_BUILD_BENCHMARKS=OFF -DCONNPOOL_BUILD_EXAMPLES=ON
cmake --build build/demo --target quickstart -j 2
echo
echo "==> build/demo/examples/quickstart $*"
exec ./build/demo/examples/quickstart "$@"
