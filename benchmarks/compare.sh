#!/bin/sh
# SPDX-License-Identifier: MIT
# Configures and builds the benchmarks in build-bench (Release, -march=native, OpenMP), then runs
# benchmarks/compare.py with the given arguments, e.g.
#   benchmarks/compare.sh                    # 1 thread, N = 1024 and 4096, d = 128, causal 0/1
#   benchmarks/compare.sh --threads 2 --mha --cpus 0,1
# The NumPy/PyTorch references are read from ../shared/bench (relative to the repository) unless
# --shared-bench DIR is given; see benchmarks/compare.py --help.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${ATTENTION_BENCH_BUILD_DIR:-$repo/build-bench}
generator=
command -v ninja >/dev/null 2>&1 && generator="-G Ninja"
[ -f "$build/CMakeCache.txt" ] || cmake -S "$repo" -B "$build" $generator \
  -DCMAKE_BUILD_TYPE=Release -DATTENTION_BUILD_BENCHMARKS=ON \
  -DATTENTION_BUILD_TESTS=OFF -DATTENTION_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target attention_bench multi_head_bench
exec /usr/bin/python3 "$repo/benchmarks/compare.py" --build-dir "$build" "$@"
