# SPDX-License-Identifier: MIT
# The static-check tests. ACTION selects the step:
#   configure    configure SOURCE_DIR into BINARY_DIR with clang (CXX_COMPILER), tests and examples
#                on, benchmarks off, CMAKE_EXPORT_COMPILE_COMMANDS=ON. Nothing is built: the
#                compile_commands.json that configuring writes is all the tools need.
#   clang-tidy   run-clang-tidy (RUN_CLANG_TIDY, CLANG_TIDY) with SOURCE_DIR/.clang-tidy over every
#                source under tests/ and examples/ in the database; diagnostics in those files and
#                in include/attention/ headers fail the test (WarningsAsErrors).
#   cppcheck     cppcheck (CPPCHECK) over the same files, warnings as errors.
# Prints "attention-static: skipped" (a skipped test) when a tool is missing.
#   cmake -DACTION=<step> -DSOURCE_DIR=<tree> -DBINARY_DIR=<dir> ... -P run_static_checks.cmake

cmake_minimum_required(VERSION 3.18)  # script mode: policies of this version (IN_LIST, ...)

set(database ${BINARY_DIR}/compile_commands.json)

# A macro, so that return() ends the script: a skip, not a failure (the test's
# SKIP_REGULAR_EXPRESSION matches the message).
macro(require_tool var what)
  if(NOT ${var} OR NOT EXISTS "${${var}}")
    message("attention-static: skipped: ${what} not found (Debian: clang-14, clang-tidy-14, cppcheck)")
    return()
  endif()
endmacro()

function(timed step)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  string(TIMESTAMP end "%s")
  math(EXPR seconds "${end} - ${start}")
  message(STATUS "static: ${step} took ${seconds} s")
  set(step_result ${result} PARENT_SCOPE)
endfunction()

if(ACTION STREQUAL "configure")
  require_tool(CXX_COMPILER "clang++")
  set(args -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
    -DATTENTION_BUILD_TESTS=ON -DATTENTION_BUILD_EXAMPLES=ON -DATTENTION_BUILD_BENCHMARKS=OFF
    -DATTENTION_INSTALL=OFF -DATTENTION_TRUST_SUBBUILDS=OFF)
  if(MAKE_PROGRAM)
    list(APPEND args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
  endif()
  if(PREFIX_PATH)
    list(APPEND args "-DCMAKE_PREFIX_PATH=${PREFIX_PATH}")
  endif()
  timed(configure ${CMAKE_COMMAND} ${args})
  if(NOT step_result EQUAL 0 OR NOT EXISTS ${database})
    message(FATAL_ERROR "static: configuring ${BINARY_DIR} failed (${step_result})")
  endif()
  return()
endif()

if(NOT EXISTS ${database})
  message(FATAL_ERROR "static: ${database} is missing: StaticChecksConfigure did not run or failed")
endif()

# The sources checked: the project's own under tests/ and examples/ (the headers through them),
# each once (a source built for several targets, e.g. with several -march, is listed once per
# target). They go into a database of their own, which both tools read.
file(READ ${database} commands)
string(JSON entry_count LENGTH "${commands}")
math(EXPR last "${entry_count} - 1")
set(sources "")
set(kept "")
foreach(i RANGE ${last})
  string(JSON file GET "${commands}" ${i} file)
  if(file MATCHES "^${SOURCE_DIR}/(tests|examples)/" AND NOT file IN_LIST sources)
    list(APPEND sources ${file})
    string(JSON entry GET "${commands}" ${i})
    list(APPEND kept "${entry}")
  endif()
endforeach()
list(LENGTH sources count)
if(count EQUAL 0)
  message(FATAL_ERROR "static: no source of tests/ or examples/ in ${database}")
endif()
list(JOIN kept ",\n" kept_json)
set(checked_dir ${BINARY_DIR}/checked)
file(WRITE ${checked_dir}/compile_commands.json "[\n${kept_json}\n]\n")
if(NOT JOBS)
  set(JOBS 2)
endif()

if(ACTION STREQUAL "clang-tidy")
  require_tool(RUN_CLANG_TIDY "run-clang-tidy")
  require_tool(CLANG_TIDY "clang-tidy")
  message(STATUS "static: clang-tidy on ${count} files, ${JOBS} at a time")
  timed(clang-tidy ${RUN_CLANG_TIDY} -clang-tidy-binary ${CLANG_TIDY} -p ${checked_dir} -j ${JOBS}
    -quiet "-header-filter=^${SOURCE_DIR}/(include/attention|tests|examples)/")
  if(NOT step_result EQUAL 0)
    message(FATAL_ERROR "static: clang-tidy reported problems (see above)")
  endif()
  message(STATUS "static: clang-tidy clean")
elseif(ACTION STREQUAL "cppcheck")
  require_tool(CPPCHECK "cppcheck")
  message(STATUS "static: cppcheck on ${count} files")
  # cppcheck does not read the -isystem headers (Eigen, GoogleTest): it models std and gtest with
  # its libraries (googletest.cfg, plus cppcheck-gtest.cfg for the typed-test macros it lacks).
  # A false positive is silenced where it occurs: // cppcheck-suppress <id>, with the reason.
  timed(cppcheck ${CPPCHECK} --project=${checked_dir}/compile_commands.json -j ${JOBS}
    --std=c++17 --enable=warning,performance,portability --inline-suppr --error-exitcode=1
    --library=googletest --library=${SOURCE_DIR}/tests/trust/cppcheck-gtest.cfg
    -i${BINARY_DIR} --quiet)
  if(NOT step_result EQUAL 0)
    message(FATAL_ERROR "static: cppcheck reported problems (see above)")
  endif()
  message(STATUS "static: cppcheck clean")
else()
  message(FATAL_ERROR "run_static_checks.cmake: unknown ACTION '${ACTION}'")
endif()
