# SPDX-License-Identifier: MIT
cmake_minimum_required(VERSION 3.18)
# The DoxygenNoWarnings test (docs/CMakeLists.txt):
#   cmake -DDOXYGEN=<doxygen> -DCONFIG=<Doxyfile> -DOUTPUT=<directory> -P doxygen_check.cmake
# Builds the API reference into OUTPUT and fails if Doxygen wrote any warning, printing them all
# and their number.

file(REMOVE_RECURSE ${OUTPUT})
file(MAKE_DIRECTORY ${OUTPUT})
execute_process(COMMAND ${DOXYGEN} ${CONFIG} RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "doxygen ${CONFIG} failed (${status})")
endif()
if(NOT EXISTS ${OUTPUT}/html/index.html)
  message(FATAL_ERROR "doxygen wrote no ${OUTPUT}/html/index.html")
endif()
file(STRINGS ${OUTPUT}/warnings.txt warnings REGEX "(warning|error):")
list(LENGTH warnings count)
if(count GREATER 0)
  file(READ ${OUTPUT}/warnings.txt text)
  message(FATAL_ERROR "${text}\nDoxygen: ${count} warning(s) in the public headers (above)")
endif()
message(STATUS "Doxygen: no warnings; reference in ${OUTPUT}/html/index.html")
