#!/bin/sh
# SPDX-License-Identifier: MIT
# Configures and builds the benchmarks in build-bench (Release, -march=native, OpenMP), with
# onednn_bench when oneDNN is installed, then runs benchmarks/compare.py with the given arguments:
#   benchmarks/compare.sh                    # every peer, N 256..8192, d 64/128, causal 0/1,
#                                            # 1 and 2 threads (long: see compare.py --help)
#   benchmarks/compare.sh --threads 1 --seq 1024,4096 --dim 128 --markdown perf.md
#   benchmarks/compare.sh --threads 1 --mha --cpus 1
# ONNX Runtime is not downloaded here: benchmarks/setup_ort.sh installs it once (npm). The
# NumPy/PyTorch references are read from ../shared/bench (relative to the repository) unless
# --shared-bench DIR is given.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${ATTENTION_BENCH_BUILD_DIR:-$repo/build-bench}
generator=
command -v ninja >/dev/null 2>&1 && generator="-G Ninja"
# shellcheck disable=SC2086 # $generator is empty or two words
[ -f "$build/CMakeCache.txt" ] || cmake -S "$repo" -B "$build" $generator \
  -DCMAKE_BUILD_TYPE=Release -DATTENTION_BUILD_BENCHMARKS=ON \
  -DATTENTION_BUILD_TESTS=OFF -DATTENTION_BUILD_EXAMPLES=OFF >/dev/null
targets="attention_bench multi_head_bench"
# onednn_bench exists only when CMake found oneDNN.
cmake --build "$build" --target help | grep -qw onednn_bench && targets="$targets onednn_bench"
# shellcheck disable=SC2086 # one word per target
cmake --build "$build" --target $targets
exec /usr/bin/python3 "$repo/benchmarks/compare.py" --build-dir "$build" "$@"
