# SPDX-License-Identifier: MIT
cmake_minimum_required(VERSION 3.18)
# The PackagingCPack test (tests/cmake_checks.cmake), run as a script:
#   cmake -DSOURCE=<attention's source tree> -DBINARY=<scratch directory> -DGENERATOR=<generator>
#         -DMAKE_PROGRAM=<make program> -DCPACK=<cpack> -DDPKG_DEB=<dpkg-deb>
#         -DEXPECT_MPI=<ON if attention::mpi is installed> -P cpack_packages.cmake
# Configures attention on its own (nothing to build: tests, examples and the Python module off),
# makes the TGZ and DEB packages with `cpack` (both by default) as docs/cmake.md says, checks their
# contents and the .deb's control fields, and unpacks the .deb with `dpkg -x` into
# <BINARY>/deb-root, where PackagingDebFindPackage builds a consumer (no root, nothing installed).

file(REMOVE_RECURSE ${BINARY})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE output
    ERROR_VARIABLE output WORKING_DIRECTORY ${BINARY}/build)
  if(NOT status EQUAL 0)
    string(JOIN " " command ${ARGN})
    message(FATAL_ERROR "${command} failed:\n${output}")
  endif()
  set(output "${output}" PARENT_SCOPE)
endfunction()
file(MAKE_DIRECTORY ${BINARY}/build)
run(${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY}/build -G ${GENERATOR}
  "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}" -DATTENTION_BUILD_TESTS=OFF
  -DATTENTION_BUILD_EXAMPLES=OFF -DATTENTION_BUILD_PYTHON=OFF)
run(${CPACK})  # CPACK_GENERATOR: TGZ and DEB

# What both packages must hold: every public header, the CMake package files, attention.pc.
file(GLOB_RECURSE headers RELATIVE ${SOURCE} ${SOURCE}/include/attention/*.hpp)
set(expected_files ${headers} share/cmake/attention/attentionConfig.cmake
  share/cmake/attention/attentionConfigVersion.cmake share/cmake/attention/attentionTargets.cmake
  share/pkgconfig/attention.pc)
function(expect_files root)
  foreach(file IN LISTS expected_files)
    if(NOT EXISTS "${root}/${file}")
      message(FATAL_ERROR "package lacks ${file} (looked in ${root})")
    endif()
  endforeach()
  list(LENGTH expected_files count)
  message(STATUS "${root}: all ${count} expected files")
endfunction()

# TGZ: a tarball of the install tree under attention-<version>-<system>/.
file(GLOB tgz ${BINARY}/build/attention-*.tar.gz)
list(LENGTH tgz count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "expected one attention-*.tar.gz, found [${tgz}]")
endif()
file(MAKE_DIRECTORY ${BINARY}/tgz)
file(ARCHIVE_EXTRACT INPUT ${tgz} DESTINATION ${BINARY}/tgz)
file(GLOB tgz_root ${BINARY}/tgz/attention-*)
expect_files(${tgz_root})

# DEB: libattention-dev_<version>_all.deb, depending on Eigen's -dev package, files under /usr.
file(GLOB deb ${BINARY}/build/libattention-dev_*_all.deb)
list(LENGTH deb count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "expected one libattention-dev_*_all.deb, found [${deb}]")
endif()
file(STRINGS ${SOURCE}/include/attention/version.hpp version_lines REGEX "ATTENTION_VERSION_")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" version
  "${version_lines}")
# With attention::mpi (EXPECT_MPI: the main build found MPI, and so does this configure on the
# same machine) the package also needs Debian's MPI.
set(depends "libeigen3-dev (>= 3.4)")
if(EXPECT_MPI)
  string(APPEND depends ", mpi-default-dev")
endif()
foreach(field_value "Package: libattention-dev" "Version: ${version}" "Architecture: all"
                    "Depends: ${depends}")
  string(REGEX MATCH "^[^:]+" field "${field_value}")
  run(${DPKG_DEB} --field ${deb} ${field})
  string(STRIP "${output}" output)
  if(NOT "${field}: ${output}" STREQUAL "${field_value}")
    message(FATAL_ERROR "${deb}: ${field} is '${output}', expected '${field_value}'")
  endif()
endforeach()
run(${DPKG_DEB} -x ${deb} ${BINARY}/deb-root)
expect_files(${BINARY}/deb-root/usr)
message(STATUS "${deb}: control fields and files as expected, unpacked in ${BINARY}/deb-root")
