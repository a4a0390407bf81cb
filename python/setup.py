# SPDX-License-Identifier: MIT
"""Builds the Python module `attention` with setuptools and pybind11, offline:

    python3 -m pip install --no-build-isolation ./python

from a checkout of the repository: the library's headers are ../include, Eigen 3.4 is found with
pkg-config (Debian: libeigen3-dev) or in /usr/include/eigen3. CMake builds the same module
(python/CMakeLists.txt, ATTENTION_BUILD_PYTHON).

ATTENTION_PYTHON_BUILD_DIR, if set, is where setuptools puts its intermediate files (default:
python/build).
"""
import os
import re
import subprocess
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(os.path.dirname(HERE), "include")


def library_version():
    """0.1.0 from include/attention/version.hpp, so the two cannot drift apart."""
    with open(os.path.join(INCLUDE, "attention", "version.hpp")) as header:
        parts = dict(re.findall(r"#define ATTENTION_VERSION_(MAJOR|MINOR|PATCH) (\d+)", header.read()))
    return "{MAJOR}.{MINOR}.{PATCH}".format(**parts)


def eigen_include_dirs():
    try:
        flags = subprocess.run(["pkg-config", "--cflags-only-I", "eigen3"], check=True,
                               capture_output=True, text=True).stdout.split()
        return [flag[2:] for flag in flags if flag.startswith("-I")]
    except (OSError, subprocess.CalledProcessError):
        for candidate in ("/usr/include/eigen3", "/usr/local/include/eigen3"):
            if os.path.isfile(os.path.join(candidate, "Eigen", "Core")):
                return [candidate]
    sys.exit("attention: Eigen 3.4 not found (Debian: libeigen3-dev; or install eigen3.pc)")


if not os.path.isfile(os.path.join(INCLUDE, "attention", "attention.hpp")):
    sys.exit(f"attention: the library's headers are not in {INCLUDE}: build python/ from a "
             "checkout of the whole repository")

# OpenMP: batches and heads in parallel, and the library's own threads (GCC and Clang on Linux).
openmp = [] if sys.platform == "darwin" or os.name == "nt" else ["-fopenmp"]
# -O3, unless CFLAGS names an optimisation level (the PythonPipInstall test builds at -O1: it checks
# the pip route, and the module's speed is the CMake build's; extra_compile_args come after CFLAGS).
optimisation = [] if re.search(r"(^|\s)-O", os.environ.get("CFLAGS", "")) else ["-O3"]

module = Pybind11Extension(
    "attention",
    sources=["src/module.cpp"],  # includes the rest: one translation unit
    include_dirs=[INCLUDE] + eigen_include_dirs(),
    cxx_std=17,
    extra_compile_args=optimisation + openmp,
    extra_link_args=openmp,
)

build_dir = os.environ.get("ATTENTION_PYTHON_BUILD_DIR")
options = {"build": {"build_base": build_dir}, "egg_info": {"egg_base": build_dir}} if build_dir else {}

setup(
    version=library_version(),
    ext_modules=[module],
    cmdclass={"build_ext": build_ext},
    options=options,
    zip_safe=False,
)
