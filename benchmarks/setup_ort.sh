#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs ONNX Runtime for Node (npm's onnxruntime-node, CPU build included in the package) and
# onnx-proto (to write the one-node ONNX model in memory) into a directory of its own, for the ORT
# column of benchmarks/compare.py. Needs node and npm (Debian: nodejs, npm) and npm's registry.
#   benchmarks/setup_ort.sh            # into build-bench/ort, where compare.py looks by default
#   benchmarks/setup_ort.sh DIR        # elsewhere; then compare.py --ort-dir DIR
# Only run by hand: nothing in the build or in CI downloads anything.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${ATTENTION_BENCH_BUILD_DIR:-$repo/build-bench}/ort}
for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup_ort.sh: $tool not found (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
done
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"private": true}' >package.json
# --ignore-scripts: onnxruntime-node's postinstall fetches the CUDA provider from api.nuget.org,
# which the CPU runs do not use; the CPU library ships inside the npm package.
npm install --no-audit --no-fund --ignore-scripts onnxruntime-node@1.23.2 onnx-proto@8.0.1
node "$repo/benchmarks/ort/ort_attention.mjs" --ort-dir "$dir" --check
echo "ONNX Runtime for compare.py is in $dir"
