# SPDX-License-Identifier: MIT
# The SanitizedUnitTests test: configures SOURCE_DIR into BINARY_DIR with ATTENTION_SANITIZE=ON,
# builds it and runs its unit tests, then fails if any sanitizer wrote a report, even from a process
# whose exit status nobody checked.
#   cmake -DSOURCE_DIR=<tree> -DBINARY_DIR=<dir> -DCXX_COMPILER=<c++> -DGENERATOR=<generator>
#         [-DMAKE_PROGRAM=<ninja>] [-DPREFIX_PATH=<paths>] [-DEXCLUDE_REGEX=<ctest -E>] [-DJOBS=2]
#         [-DTARGETS=<exe>;<exe>...] [-DGTEST_EXCLUDE=<gtest pattern>] -P run_sanitized_tests.cmake
# With TARGETS, only those test executables are built, and only their tests (labelled exe:<name>,
# or trust:exe:<name>) run. Each executable runs as one ctest test (ATTENTION_TEST_DISCOVERY=OFF:
# under ASan, a process per GoogleTest test cost more than the tests), without the GoogleTest tests
# that GTEST_EXCLUDE matches (GoogleTest's filter syntax, ':'-separated).

cmake_minimum_required(VERSION 3.18)  # script mode: policies of this version (IN_LIST, ...)

foreach(var IN ITEMS SOURCE_DIR BINARY_DIR CXX_COMPILER GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_sanitized_tests.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT JOBS)
  set(JOBS 2)
endif()

# Reports go to files as well as aborting the process; the files are checked at the end.
set(report_dir ${BINARY_DIR}/sanitizer-reports)
file(REMOVE_RECURSE ${report_dir})
file(MAKE_DIRECTORY ${report_dir})
set(ENV{ASAN_OPTIONS}
  "detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1:log_path=${report_dir}/asan")
set(ENV{UBSAN_OPTIONS} "print_stacktrace=1:halt_on_error=1:log_path=${report_dir}/ubsan")
if(GTEST_EXCLUDE)
  set(ENV{GTEST_FILTER} "-${GTEST_EXCLUDE}")  # the tests inherit ctest's environment
endif()

function(run step)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  string(TIMESTAMP end "%s")
  math(EXPR seconds "${end} - ${start}")
  message(STATUS "sanitize: ${step} took ${seconds} s")
  set(step_result ${result} PARENT_SCOPE)
endfunction()

function(print_reports)
  file(GLOB reports ${report_dir}/*)
  foreach(report IN LISTS reports)
    file(READ ${report} text)
    message("---- ${report}\n${text}")
  endforeach()
  list(LENGTH reports count)
  set(report_count ${count} PARENT_SCOPE)
endfunction()

set(configure_args -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  # Assertions stay on (Eigen's bounds checks, the kernel's tile invariants). -O0 compiles in half
  # the CPU time of -O1 (56 vs 111 CPU-s for scaled_dot_product_test); the three test files whose
  # tests run large sizes stay at -O1 (tests/CMakeLists.txt). -g1 (line tables): reports still
  # name file and line; full -g made each object ~3x larger and the build ~40% slower.
  -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -g1"
  # Typed tests in float and double only (tests/support/scalars.hpp): long double takes the
  # materialising path through Eigen, never the kernels' pointer code; the main build runs it.
  -DATTENTION_TEST_LONG_DOUBLE=OFF
  -DATTENTION_TEST_DISCOVERY=OFF
  -DATTENTION_SANITIZE=ON
  -DATTENTION_BUILD_TESTS=ON -DATTENTION_BUILD_EXAMPLES=OFF -DATTENTION_BUILD_BENCHMARKS=OFF
  -DATTENTION_INSTALL=OFF -DATTENTION_TRUST_SUBBUILDS=OFF)
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(PREFIX_PATH)
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${PREFIX_PATH}")
endif()

# A sub-build configured earlier with another compiler: CMake would drop its cache, and the -D
# options above with it, when the compiler changes; start that directory afresh instead.
if(EXISTS ${BINARY_DIR}/CMakeCache.txt)
  file(STRINGS ${BINARY_DIR}/CMakeCache.txt cached_compiler REGEX "^CMAKE_CXX_COMPILER:")
  string(REGEX REPLACE "^[^=]*=" "" cached_compiler "${cached_compiler}")
  if(NOT cached_compiler STREQUAL CXX_COMPILER)
    message(STATUS "sanitize: ${BINARY_DIR} was configured with ${cached_compiler}: cleared")
    file(REMOVE_RECURSE ${BINARY_DIR}/CMakeCache.txt ${BINARY_DIR}/CMakeFiles)
  endif()
endif()
run(configure ${CMAKE_COMMAND} ${configure_args})
if(NOT step_result EQUAL 0)
  message(FATAL_ERROR "sanitize: configuring ${BINARY_DIR} failed (${step_result})")
endif()
set(build_args --build ${BINARY_DIR} -j ${JOBS})
if(TARGETS)
  list(APPEND build_args --target ${TARGETS})
endif()
run(build ${CMAKE_COMMAND} ${build_args})
if(NOT step_result EQUAL 0)
  print_reports()
  message(FATAL_ERROR "sanitize: building ${BINARY_DIR} failed (${step_result})")
endif()
set(ctest_args --test-dir ${BINARY_DIR} --output-on-failure --no-tests=error -j ${JOBS} --timeout 600)
if(EXCLUDE_REGEX)
  list(APPEND ctest_args -E "${EXCLUDE_REGEX}")
endif()
if(TARGETS)
  list(JOIN TARGETS "|" target_alternatives)
  list(APPEND ctest_args -L "exe:(${target_alternatives})$")  # exe:<name> or trust:exe:<name>
endif()
run(ctest ${CMAKE_CTEST_COMMAND} ${ctest_args})
set(ctest_result ${step_result})
print_reports()
if(NOT ctest_result EQUAL 0)
  message(FATAL_ERROR "sanitize: unit tests failed under ASan + UBSan (ctest: ${ctest_result})")
endif()
if(report_count GREATER 0)
  message(FATAL_ERROR "sanitize: ${report_count} sanitizer report(s) above")
endif()
message(STATUS "sanitize: unit tests pass under ASan + UBSan, no report")
