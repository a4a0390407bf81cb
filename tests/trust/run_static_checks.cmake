# SPDX-License-Identifier: MIT
# The static-check tests. ACTION selects the step:
#   configure    configure SOURCE_DIR into BINARY_DIR with clang (CXX_COMPILER), tests and examples
#                on, benchmarks off, CMAKE_EXPORT_COMPILE_COMMANDS=ON. Nothing is built: the
#                compile_commands.json that configuring writes is all the tools need.
#   clang-tidy   run-clang-tidy (RUN_CLANG_TIDY, CLANG_TIDY) with SOURCE_DIR/.clang-tidy over
#                  - one generated file that includes every public header (the headers that the
#                    header self-containment check lists, with its flags),
#                  - one generated file that includes every test helper header (tests/support/,
#                    tests/trust/), with a test's flags, and one with the MPI helpers (those that
#                    include <mpi.h>), with tests/mpi_test.cpp's flags when MPI is configured,
#                  - every source under examples/: those compiled alike in one generated file
#                    (each in a namespace of its own), the others (MPI) on their own,
#                  - and, with TIDY_SCOPE=all, every source under tests/ too;
#                diagnostics in those files and in include/attention/, tests/ and examples/
#                headers fail the test (WarningsAsErrors).
#   cppcheck     cppcheck (CPPCHECK) over every source under tests/ and examples/ in the
#                database, warnings as errors.
# Prints "attention-static: skipped" (a skipped test) when a tool is missing.
#   cmake -DACTION=<step> -DSOURCE_DIR=<tree> -DBINARY_DIR=<dir> [-DTIDY_SCOPE=headers|all] ...
#         -P run_static_checks.cmake
#
# Why clang-tidy sees the headers once rather than through each test: its checks walk the whole
# syntax tree of a translation unit, Eigen's and GoogleTest's instantiations included, so a test
# costs 10-25 s of CPU and the ~40 tests took ~5 minutes of CI on two cores, nearly all of it
# re-checking the same headers. A file of every header checks each header's own code once, in
# ~10 s; the examples check the public API as users call it, instantiated, and for the same reason
# they are checked together: 8 examples took 102 CPU-s one by one, 32 in one file. `TIDY_SCOPE=all`
# (ATTENTION_TIDY_SCOPE in the build) adds the tests' own sources, for a local run.

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
    -DATTENTION_INSTALL=OFF -DATTENTION_TRUST_SUBBUILDS=OFF
    # Each test file in the database, not the unity files that would stand for them.
    -DATTENTION_TEST_UNITY_BUILD=OFF)
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

# Cppcheck's sources: the project's own under tests/ and examples/ (the headers through them),
# each once (a source built for several targets, e.g. with several -march, is listed once per
# target). They go into a database of their own.
# clang-tidy's: see the top of this file; its database is built alongside.
file(READ ${database} commands)
string(JSON entry_count LENGTH "${commands}")
math(EXPR last "${entry_count} - 1")
set(sources "")
set(kept "")
set(tidy_kept "")
set(header_check_dir ${BINARY_DIR}/tests/header_check)
set(public_headers "")
set(header_entry "")
set(example_entries "")
set(test_entry "")
set(mpi_test_entry "")
foreach(i RANGE ${last})
  string(JSON file GET "${commands}" ${i} file)
  string(JSON entry GET "${commands}" ${i})
  if(file MATCHES "^${header_check_dir}/(attention/.+)\\.cpp$")
    list(APPEND public_headers ${CMAKE_MATCH_1})
    set(header_entry "${entry}")
    set(header_entry_file "${file}")
  endif()
  if(NOT file MATCHES "^${SOURCE_DIR}/(tests|examples)/" OR file IN_LIST sources)
    continue()
  endif()
  list(APPEND sources ${file})
  list(APPEND kept "${entry}")
  if(file MATCHES "^${SOURCE_DIR}/examples/")
    list(APPEND example_entries "${entry}")
  elseif(TIDY_SCOPE STREQUAL "all")
    list(APPEND tidy_kept "${entry}")
  endif()
  # The helpers' file takes the flags of a plain test (no -march, no EIGEN_RUNTIME_NO_MALLOC);
  # the helpers that need <mpi.h> take those of the MPI tests (built only when MPI is found).
  string(JSON command GET "${entry}" command)
  if(file STREQUAL "${SOURCE_DIR}/tests/mpi_test.cpp")
    set(mpi_test_entry "${entry}")
    set(mpi_test_entry_file "${file}")
  endif()
  if(NOT test_entry AND file MATCHES "^${SOURCE_DIR}/tests/[^/]+_test\\.cpp$"
     AND NOT command MATCHES "-march=|EIGEN_RUNTIME_NO_MALLOC")
    set(test_entry "${entry}")
    set(test_entry_file "${file}")
  endif()
endforeach()
list(LENGTH sources count)
if(count EQUAL 0)
  message(FATAL_ERROR "static: no source of tests/ or examples/ in ${database}")
endif()
# Each action writes only its own files: ClangTidy and Cppcheck may run at the same time.
set(checked_dir ${BINARY_DIR}/checked)
if(ACTION STREQUAL "cppcheck")
  list(JOIN kept ",\n" kept_json)
  file(WRITE ${checked_dir}/compile_commands.json "[\n${kept_json}\n]\n")
endif()
if(NOT JOBS)
  set(JOBS 2)
endif()

# write_tidy_source(<entry> <its file> <new file> <text>): writes <text> to <new file> and appends
# to tidy_kept a database entry for it, compiled like <entry>.
function(write_tidy_source entry entry_file new_file text)
  file(WRITE ${new_file} "// Generated by tests/trust/run_static_checks.cmake for clang-tidy.\n${text}")
  string(JSON command GET "${entry}" command)
  string(REPLACE "${entry_file}" "${new_file}" command "${command}")
  string(REPLACE "\\" "\\\\" command "${command}")  # as a JSON string
  string(REPLACE "\"" "\\\"" command "${command}")
  string(JSON entry SET "${entry}" command "\"${command}\"")
  string(JSON entry SET "${entry}" file "\"${new_file}\"")
  set(tidy_kept ${tidy_kept} "${entry}" PARENT_SCOPE)
endfunction()

# include_lines(<variable> <header...>): "#include "<header>"" lines, one per header.
function(include_lines variable)
  set(text "")
  foreach(header IN LISTS ARGN)
    string(APPEND text "#include \"${header}\"\n")
  endforeach()
  set(${variable} "${text}" PARENT_SCOPE)
endfunction()

set(tidy_dir ${BINARY_DIR}/tidy)
if(ACTION STREQUAL "clang-tidy")
  if(NOT public_headers)
    message(FATAL_ERROR "static: no header self-containment file in ${database}")
  endif()
  if(NOT test_entry)
    message(FATAL_ERROR "static: no plain test source (tests/<name>_test.cpp) in ${database}")
  endif()
  include_lines(text ${public_headers})
  write_tidy_source("${header_entry}" "${header_entry_file}" ${tidy_dir}/public_headers.cpp
    "${text}")
  file(GLOB helper_headers ${SOURCE_DIR}/tests/support/*.hpp ${SOURCE_DIR}/tests/trust/*.hpp)
  list(SORT helper_headers)
  set(mpi_helper_headers "")
  foreach(header IN LISTS helper_headers)
    file(STRINGS ${header} mpi_include REGEX "^#include [<\"](mpi\\.h|attention/mpi)")
    if(mpi_include)
      list(APPEND mpi_helper_headers ${header})
    endif()
  endforeach()
  if(mpi_helper_headers)
    list(REMOVE_ITEM helper_headers ${mpi_helper_headers})
  endif()
  include_lines(text ${helper_headers})
  write_tidy_source("${test_entry}" "${test_entry_file}" ${tidy_dir}/test_helpers.cpp "${text}")
  if(mpi_helper_headers AND mpi_test_entry)
    include_lines(text ${mpi_helper_headers})
    write_tidy_source("${mpi_test_entry}" "${mpi_test_entry_file}" ${tidy_dir}/test_helpers_mpi.cpp
      "${text}")
    list(APPEND helper_headers ${mpi_helper_headers})
  elseif(mpi_helper_headers)
    message(STATUS "static: MPI tests not configured; not checking ${mpi_helper_headers}")
  endif()
  # The examples: those compiled alike (all but the MPI one) in one generated file, each inside a
  # namespace of its own after every header they include (so their own includes are no-ops and
  # their mains do not collide); the rest on their own.
  set(merged_examples "")
  set(merged_includes "")
  foreach(entry IN LISTS example_entries)
    string(JSON file GET "${entry}" file)
    string(JSON command GET "${entry}" command)
    string(REGEX REPLACE " -o [^ ]+" "" flags "${command}")
    string(REPLACE "${file}" "" flags "${flags}")
    if(NOT merged_examples)
      set(merged_flags "${flags}")
      set(merged_entry "${entry}")
      set(merged_entry_file "${file}")
    endif()
    if(flags STREQUAL merged_flags)
      list(APPEND merged_examples ${file})
      file(STRINGS ${file} includes REGEX "^#include ")
      list(APPEND merged_includes ${includes})
    else()
      list(APPEND tidy_kept "${entry}")
    endif()
  endforeach()
  if(merged_examples)
    list(REMOVE_DUPLICATES merged_includes)
    list(SORT merged_includes)
    # Quoted includes name the examples' own headers (#pragma once): by their full path here.
    list(TRANSFORM merged_includes REPLACE "^#include \"" "#include \"${SOURCE_DIR}/examples/")
    list(JOIN merged_includes "\n" text)
    string(APPEND text "\n")
    foreach(example IN LISTS merged_examples)
      get_filename_component(name ${example} NAME_WE)
      string(APPEND text "namespace attention_example_${name} {\n"
        "#include \"${example}\"  // NOLINT(bugprone-suspicious-include): on purpose\n}\n")
    endforeach()
    write_tidy_source("${merged_entry}" "${merged_entry_file}" ${tidy_dir}/examples.cpp "${text}")
  endif()
  list(LENGTH merged_examples merged_count)
  list(LENGTH public_headers header_count)
  list(LENGTH helper_headers helper_count)
  list(LENGTH tidy_kept tidy_count)
  list(JOIN tidy_kept ",\n" tidy_json)
  file(WRITE ${tidy_dir}/compile_commands.json "[\n${tidy_json}\n]\n")
endif()

if(ACTION STREQUAL "clang-tidy")
  require_tool(RUN_CLANG_TIDY "run-clang-tidy")
  require_tool(CLANG_TIDY "clang-tidy")
  message(STATUS "static: clang-tidy on ${tidy_count} files (${header_count} public headers, "
    "${helper_count} test helpers, ${merged_count} examples in one file, TIDY_SCOPE=${TIDY_SCOPE}), "
    "${JOBS} at a time")
  timed(clang-tidy ${RUN_CLANG_TIDY} -clang-tidy-binary ${CLANG_TIDY} -p ${tidy_dir} -j ${JOBS}
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
