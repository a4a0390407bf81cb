# SPDX-License-Identifier: MIT
# Smoke test of one example, run by ctest as
#   cmake -DEXAMPLE=<program> -DEXPECT_FILE=<file>
#         [-DOUTPUT_FILE=<path> -DFILE_EXPECT_FILE=<file> [-DFILE_REJECT_FILE=<file>]
#          [-DMIN_RECTS=<n>]] -P check_example.cmake
# Runs the program (with OUTPUT_FILE as its argument, if given) and fails unless it exits with 0,
# writes nothing to stderr, prints every line of EXPECT_FILE and, with OUTPUT_FILE, writes that file
# containing every line of FILE_EXPECT_FILE, none of FILE_REJECT_FILE, and at least MIN_RECTS
# "<rect" elements. Runs of blanks compare as one space, so the expectations do not depend on
# column widths.

cmake_minimum_required(VERSION 3.18)

function(squeeze_blanks out text)
  string(REGEX REPLACE "[ \t]+" " " text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# Fails, listing every expected line of `expect_file` that `text` lacks.
function(require_lines what text expect_file)
  squeeze_blanks(text "${text}")
  file(STRINGS ${expect_file} expected_lines ENCODING UTF-8)
  set(missing "")
  foreach(line IN LISTS expected_lines)
    squeeze_blanks(line "${line}")
    string(FIND "${text}" "${line}" position)
    if(position EQUAL -1)
      string(APPEND missing "\n  ${line}")
    endif()
  endforeach()
  if(missing)
    message(FATAL_ERROR "${what} lacks:${missing}")
  endif()
  list(LENGTH expected_lines count)
  message(STATUS "${what}: all ${count} expected lines found")
endfunction()

foreach(variable EXAMPLE EXPECT_FILE)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "check_example.cmake: -D${variable}=... is required")
  endif()
endforeach()

set(program_args "")
if(DEFINED OUTPUT_FILE)
  file(REMOVE ${OUTPUT_FILE})  # so a stale file from an earlier run cannot pass the test
  set(program_args ${OUTPUT_FILE})
endif()

execute_process(COMMAND ${EXAMPLE} ${program_args}
                RESULT_VARIABLE exit_code OUTPUT_VARIABLE output ERROR_VARIABLE errors)
message("${output}")
if(NOT exit_code STREQUAL "0")
  message(FATAL_ERROR "${EXAMPLE} exited with ${exit_code}:\n${errors}")
endif()
if(NOT errors STREQUAL "")
  message(FATAL_ERROR "${EXAMPLE} wrote to stderr:\n${errors}")
endif()
require_lines("the output of ${EXAMPLE}" "${output}" ${EXPECT_FILE})

if(DEFINED OUTPUT_FILE)
  if(NOT EXISTS ${OUTPUT_FILE})
    message(FATAL_ERROR "${EXAMPLE} did not write ${OUTPUT_FILE}")
  endif()
  file(READ ${OUTPUT_FILE} contents)
  require_lines("${OUTPUT_FILE}" "${contents}" ${FILE_EXPECT_FILE})
  if(DEFINED FILE_REJECT_FILE)
    file(STRINGS ${FILE_REJECT_FILE} rejected_lines ENCODING UTF-8)
    foreach(line IN LISTS rejected_lines)
      string(FIND "${contents}" "${line}" position)
      if(NOT position EQUAL -1)
        message(FATAL_ERROR "${OUTPUT_FILE} contains \"${line}\", which it must not")
      endif()
    endforeach()
  endif()
  if(DEFINED MIN_RECTS)
    string(REGEX MATCHALL "<rect[ />]" rects "${contents}")
    list(LENGTH rects rect_count)
    if(rect_count LESS MIN_RECTS)
      message(FATAL_ERROR
              "${OUTPUT_FILE} has ${rect_count} <rect elements, expected at least ${MIN_RECTS}")
    endif()
    message(STATUS "${OUTPUT_FILE}: ${rect_count} <rect elements (at least ${MIN_RECTS})")
  endif()
endif()
