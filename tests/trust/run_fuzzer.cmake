# SPDX-License-Identifier: MIT
# The FuzzAttention test: builds tests/fuzz with clang++ (libFuzzer + ASan + UBSan) in BINARY_DIR,
# then runs the fuzzer for RUNS inputs from libFuzzer seed SEED (and at most SECONDS, if given and
# not 0) on a scratch copy of the committed seed corpus. Prints
# "attention-fuzz: skipped" (ctest then reports the test as skipped) when there is no clang++ with
# libFuzzer.
#   cmake -DSOURCE_DIR=<tests/fuzz> -DBINARY_DIR=<dir> -DCXX_COMPILER=<clang++> -DGENERATOR=<gen>
#         [-DMAKE_PROGRAM=<ninja>] [-DPREFIX_PATH=<paths>] [-DRUNS=3000] [-DSEED=1] [-DSECONDS=0]
#         -P run_fuzzer.cmake
# The harness is built at -O0 with line tables only (-g1): a report still names file and line, at a
# fraction of full debug information's compile time. clang's sanitizer instrumentation makes -O1
# and -O2 cost the same (144 and 133 CPU-s on this harness); -O0 takes 42, and its 3000 inputs run
# in 75 s instead of 23: 117 CPU-s in all against 156.

cmake_minimum_required(VERSION 3.18)  # script mode: policies of this version (IN_LIST, ...)

if(NOT CXX_COMPILER OR NOT EXISTS "${CXX_COMPILER}")
  message("attention-fuzz: skipped: no clang++ found (install clang-14 and libclang-rt-14-dev)")
  return()
endif()
if(NOT DEFINED RUNS OR RUNS STREQUAL "")
  set(RUNS 3000)
endif()
if(NOT SEED)
  set(SEED 1)
endif()
if(NOT SECONDS)
  set(SECONDS 0)
endif()
if(RUNS EQUAL 0 AND SECONDS EQUAL 0)
  message(FATAL_ERROR "attention-fuzz: RUNS and SECONDS are both 0: the fuzzer would never stop")
endif()
set(limits -seed=${SEED})
if(NOT RUNS EQUAL 0)
  list(APPEND limits -runs=${RUNS})
endif()
if(NOT SECONDS EQUAL 0)
  list(APPEND limits -max_total_time=${SECONDS})
endif()

set(configure_args -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=RelWithDebInfo
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O0 -g1 -DNDEBUG")
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(PREFIX_PATH)
  list(APPEND configure_args "-DCMAKE_PREFIX_PATH=${PREFIX_PATH}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} ${configure_args}
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "attention-fuzz: configuring ${BINARY_DIR} failed:\n${out}\n${err}")
endif()
if(err MATCHES "attention-fuzz: skipped")
  message("attention-fuzz: skipped: ${CXX_COMPILER} cannot link a libFuzzer target\n${err}")
  return()
endif()

string(TIMESTAMP start "%s")
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "attention-fuzz: building the harness failed")
endif()
string(TIMESTAMP built "%s")
math(EXPR build_seconds "${built} - ${start}")
message(STATUS "attention-fuzz: harness built in ${build_seconds} s")

# libFuzzer adds what it finds to the first corpus directory: a scratch one, so the committed seeds
# (read-only here) stay as they are. Crash reproducers go to BINARY_DIR/artifacts.
set(corpus ${BINARY_DIR}/corpus)
set(artifacts ${BINARY_DIR}/artifacts/)
file(MAKE_DIRECTORY ${corpus} ${artifacts})
set(ENV{ASAN_OPTIONS} "detect_leaks=1:abort_on_error=0")
set(ENV{UBSAN_OPTIONS} "print_stacktrace=1:halt_on_error=1")
execute_process(COMMAND ${BINARY_DIR}/attention_fuzz
    ${limits} -timeout=20 -rss_limit_mb=2048 -max_len=4096
    -print_final_stats=1 -print_funcs=0 -artifact_prefix=${artifacts}
    ${corpus} ${SOURCE_DIR}/corpus
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  file(GLOB found ${artifacts}/*)
  message(FATAL_ERROR "attention-fuzz: the fuzzer found a failure (exit ${result}); reproduce with\n"
    "  ${BINARY_DIR}/attention_fuzz <file>\nfor each of: ${found}")
endif()
string(TIMESTAMP done "%s")
math(EXPR run_seconds "${done} - ${built}")
message(STATUS "attention-fuzz: no failure (${limits}; ${run_seconds} s)")
