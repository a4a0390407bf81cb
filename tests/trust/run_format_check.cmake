# SPDX-License-Identifier: MIT
# The FormatCheck test: every tracked C++ file (*.hpp, *.cpp, *.h, and the *.inc bodies that
# for_each_isa.inc compiles once per instruction set) is as .clang-format would write it. Runs
# clang-format --dry-run --Werror over them and fails naming each file that would change, with the
# command that fixes it. The files are `git ls-files` when SOURCE_DIR is a git checkout, else a glob
# of include/, tests/, examples/ and benchmarks/.
# Prints "attention-format: skipped" (a skipped test) without clang-format 14: other versions lay
# out some constructs differently, and the tree is formatted with Debian's clang-format 14.
#   cmake -DSOURCE_DIR=<tree> -DCLANG_FORMAT=<clang-format> [-DGIT=<git>] -P run_format_check.cmake

cmake_minimum_required(VERSION 3.18)  # script mode: policies of this version (IN_LIST, ...)

if(NOT CLANG_FORMAT OR NOT EXISTS "${CLANG_FORMAT}")
  message("attention-format: skipped: clang-format not found (Debian: clang-format-14)")
  return()
endif()
execute_process(COMMAND ${CLANG_FORMAT} --version OUTPUT_VARIABLE version_text
  RESULT_VARIABLE result)
if(NOT result EQUAL 0 OR NOT version_text MATCHES "clang-format version 14\\.")
  string(STRIP "${version_text}" version_text)
  message("attention-format: skipped: ${CLANG_FORMAT} is not clang-format 14 (${version_text})")
  return()
endif()

set(files "")
if(GIT AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND ${GIT} -C ${SOURCE_DIR} ls-files -- "*.hpp" "*.cpp" "*.h" "*.inc"
    OUTPUT_VARIABLE listed RESULT_VARIABLE result)
  if(result EQUAL 0)
    string(REPLACE "\n" ";" listed "${listed}")
    foreach(file IN LISTS listed)
      if(NOT file STREQUAL "")
        list(APPEND files ${SOURCE_DIR}/${file})
      endif()
    endforeach()
  endif()
endif()
if(NOT files)
  set(patterns "")
  foreach(dir IN ITEMS include tests examples benchmarks)
    foreach(ext IN ITEMS hpp cpp h inc)
      list(APPEND patterns ${SOURCE_DIR}/${dir}/*.${ext})
    endforeach()
  endforeach()
  file(GLOB_RECURSE files ${patterns})
endif()
list(LENGTH files count)
if(count EQUAL 0)
  message(FATAL_ERROR "attention-format: no C++ file found under ${SOURCE_DIR}")
endif()

# One clang-format for all files; with --Werror each file that would change prints
# "<file>:<line>:<col>: error: code should be clang-formatted".
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror --style=file ${files}
  WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE result ERROR_VARIABLE diagnostics)
if(result EQUAL 0)
  message(STATUS "attention-format: ${count} files formatted as .clang-format says")
  return()
endif()
string(REGEX MATCHALL "[^\n]+:[0-9]+:[0-9]+: (error|warning): code should be clang-formatted"
  lines "${diagnostics}")
set(unformatted "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE ":[0-9]+:[0-9]+: (error|warning): code should be clang-formatted$" ""
    file "${line}")
  file(RELATIVE_PATH file ${SOURCE_DIR} ${file})
  if(NOT file IN_LIST unformatted)
    list(APPEND unformatted ${file})
  endif()
endforeach()
if(NOT unformatted)
  message(FATAL_ERROR "attention-format: ${CLANG_FORMAT} failed (${result}):\n${diagnostics}")
endif()
list(LENGTH unformatted bad_count)
list(JOIN unformatted "\n  " listing)
list(JOIN unformatted " " arguments)
message(FATAL_ERROR "attention-format: ${bad_count} of ${count} files are not formatted:\n"
  "  ${listing}\nFix with: ${CLANG_FORMAT} -i ${arguments}")
