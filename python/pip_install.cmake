# SPDX-License-Identifier: MIT
cmake_minimum_required(VERSION 3.18)
# The PythonPipInstall test (python/CMakeLists.txt), run with cmake -P:
#   -DPYTHON=<interpreter> -DVENV=<directory> -DSOURCE=<python/> -DBUILD_DIR=<setuptools' files>
# Makes a fresh virtual environment that sees the system's packages (numpy, pybind11, setuptools
# and pip from Debian; --without-pip, so python3-venv's ensurepip is not needed) and runs
# python/README.md's command in it, offline: PIP_NO_INDEX makes any download attempt an error.

file(REMOVE_RECURSE ${VENV} ${BUILD_DIR})
execute_process(COMMAND ${PYTHON} -m venv --system-site-packages --without-pip ${VENV}
  COMMAND_ERROR_IS_FATAL ANY)
# CFLAGS=-O1: this test checks the pip route, not the module's speed (no Python test times anything;
# PythonTests run the CMake build's -O3 module); setup.py then leaves out its -O3. The install took
# 29 CPU-s, its compile at -O3 alone ~50.
execute_process(
  COMMAND ${CMAKE_COMMAND} -E env PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
    ATTENTION_PYTHON_BUILD_DIR=${BUILD_DIR} "CFLAGS=-O1"
    ${VENV}/bin/python3 -m pip install --no-build-isolation ${SOURCE}
  COMMAND_ERROR_IS_FATAL ANY)
