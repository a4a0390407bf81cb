#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian/Ubuntu packages that building and testing attention needs, and only those
# that are missing: when everything is present it changes nothing and needs no root.
#   scripts/install-deps.sh                 the packages listed below
#   scripts/install-deps.sh clang-14 ...    those plus extra packages for this run
# Runs as root, or as a user who may sudo. Exits non-zero if anything could not be installed.
set -euo pipefail

# ---- Packages the project needs: add new ones here (one per line, with what needs them). ------
ATTENTION_APT_PACKAGES=(
  cmake            # build system (>= 3.18)
  ninja-build      # the README's generator
  g++              # compiler (C++17)
  libeigen3-dev    # Eigen 3.4, the library's only dependency
  libgtest-dev     # tests
  libbenchmark-dev # benchmarks
  clang-14           # tests/trust: libFuzzer harness (FuzzAttention) and the static checks' database
  libclang-rt-14-dev # tests/trust: clang's libFuzzer and sanitizer runtimes
  libomp-14-dev      # tests/trust: OpenMP for clang, which compiles the sanitizer sub-build
  clang-tidy-14      # tests/trust: ClangTidy (run-clang-tidy-14)
  cppcheck           # tests/trust: Cppcheck
  clang-format-14    # tests/trust: FormatCheck (the tree is formatted with clang-format 14)
  libopenmpi-dev     # attention::mpi (ring attention, <attention/mpi.hpp>): MPI headers, libraries
  openmpi-bin        # attention::mpi: mpiexec for its tests, example and benchmark
  python3-dev        # python/: Python's C headers for the module
  pybind11-dev       # python/: pybind11's CMake package
  python3-pybind11   # python/: pybind11 for setup.py (the pip route) and the headers
  python3-numpy      # python/: the module's arrays; its tests' reference formulas
  python3-pytest     # python/: PythonTests, PythonPipTests
  python3-setuptools # python/: PythonPipInstall (pip install --no-build-isolation ./python)
  python3-wheel      # python/: PythonPipInstall (setuptools' wheel for pip)
  python3-pip        # python/: PythonPipInstall
  python3-torch      # python/tests/test_pytorch.py: results against PyTorch 1.13 (else skipped)
  doxygen            # docs/: the API reference (target docs, test DoxygenNoWarnings)
)
# -------------------------------------------------------------------------------------------------

packages=("${ATTENTION_APT_PACKAGES[@]}" "$@")

say() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 ||
  die "needs dpkg-query and apt-get (Debian/Ubuntu). Elsewhere, install by hand: ${packages[*]}"

missing_packages() {
  local pkg
  for pkg in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || echo "$pkg"
  done
}

mapfile -t missing < <(missing_packages)
if [ ${#missing[@]} -eq 0 ]; then
  say "all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  die "missing ${missing[*]}, and not root and no sudo to install them"
fi

say "installing ${missing[*]}"
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q
  -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
"${apt[@]}" update -qq || die "apt-get update failed"
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
  die "apt-get install failed for: ${missing[*]}"

mapfile -t still_missing < <(missing_packages)
[ ${#still_missing[@]} -eq 0 ] || die "still missing after install: ${still_missing[*]}"
say "done"
