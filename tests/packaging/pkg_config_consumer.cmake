# SPDX-License-Identifier: MIT
cmake_minimum_required(VERSION 3.18)
# A user's build without CMake: compiles tests/packaging/main.cpp with the flags of
# `pkg-config --cflags attention` and runs it. Run by tests/cmake_checks.cmake as a script:
#   cmake -DPKG_CONFIG_PATH=<dir of attention.pc> -DPREFIX=<expected install prefix>
#         -DCXX=<compiler> -DSOURCE=<main.cpp> -DBINARY=<executable to write> -P pkg_config_consumer.cmake
# The .pc must be found in PKG_CONFIG_PATH (not some other install), point at PREFIX's headers,
# bring Eigen's, and carry the version of the headers (main.cpp's static_assert checks it).

find_program(PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_PATH}")

function(pkg_config out)
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} ${ARGN} attention
    OUTPUT_VARIABLE output ERROR_VARIABLE error RESULT_VARIABLE status
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "pkg-config ${ARGN} attention failed:\n${error}")
  endif()
  set(${out} "${output}" PARENT_SCOPE)
endfunction()

pkg_config(pc_dir --variable=pcfiledir)
file(REAL_PATH "${pc_dir}" pc_dir)
file(REAL_PATH "${PKG_CONFIG_PATH}" expected_pc_dir)
if(NOT pc_dir STREQUAL expected_pc_dir)
  message(FATAL_ERROR "pkg-config found attention.pc in ${pc_dir}, not in ${expected_pc_dir}")
endif()

pkg_config(cflags --cflags)
separate_arguments(cflags UNIX_COMMAND "${cflags}")
set(include_dirs "")
foreach(flag IN LISTS cflags)
  if(flag MATCHES "^-I(.+)$")
    file(REAL_PATH "${CMAKE_MATCH_1}" dir)
    list(APPEND include_dirs "${dir}")
  endif()
endforeach()
file(REAL_PATH "${PREFIX}/include" expected_include)
if(NOT expected_include IN_LIST include_dirs)
  message(FATAL_ERROR "pkg-config --cflags attention (${cflags}) lacks -I${expected_include}")
endif()
set(eigen_found FALSE)
foreach(dir IN LISTS include_dirs)
  if(EXISTS "${dir}/Eigen/Core")
    set(eigen_found TRUE)
  endif()
endforeach()
if(NOT eigen_found)
  message(FATAL_ERROR "pkg-config --cflags attention (${cflags}) does not lead to Eigen/Core")
endif()

pkg_config(version --modversion)
if(NOT version MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)$")
  message(FATAL_ERROR "pkg-config --modversion attention: '${version}' is not MAJOR.MINOR.PATCH")
endif()

get_filename_component(binary_dir "${BINARY}" DIRECTORY)
file(MAKE_DIRECTORY "${binary_dir}")  # PackagingClean removed it; no other test need run first
execute_process(
  COMMAND ${CXX} -std=c++17 ${cflags}
    -DCONSUMER_PACKAGE_VERSION_MAJOR=${CMAKE_MATCH_1}
    -DCONSUMER_PACKAGE_VERSION_MINOR=${CMAKE_MATCH_2}
    -DCONSUMER_PACKAGE_VERSION_PATCH=${CMAKE_MATCH_3}
    -Wall -Wextra -Wpedantic -Werror ${SOURCE} -o ${BINARY}
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "compiling ${SOURCE} with pkg-config's flags failed")
endif()
execute_process(COMMAND ${BINARY} RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${BINARY} failed (${status})")
endif()
message(STATUS "pkg-config attention ${version}: ${cflags}: built and ran ${BINARY}")
