# SPDX-License-Identifier: MIT
# cmake -DCXX=<C++ compiler> -DINCLUDES=<dir>|<dir>... -DSOURCE=<file.cpp> -P this
# Compiles SOURCE (C++17, syntax only: templates are instantiated, nothing is generated), which
# must not compile: the compiler must fail, its output must contain the text of each
# "// expect-error: <text>" line of SOURCE, and it must report exactly as many errors as there are
# such lines (so a message that names the missing member cannot hide a wall of other errors).
file(STRINGS "${SOURCE}" expected REGEX "^// expect-error: ")
list(LENGTH expected expected_count)
if(expected_count EQUAL 0)
  message(FATAL_ERROR "${SOURCE} has no '// expect-error: ' line")
endif()
string(REPLACE "|" ";" include_dirs "${INCLUDES}")
set(include_flags "")
foreach(dir IN LISTS include_dirs)
  list(APPEND include_flags "-I${dir}")
endforeach()
execute_process(COMMAND ${CXX} -std=c++17 -fsyntax-only ${include_flags} ${SOURCE}
  RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
foreach(line IN LISTS expected)
  string(REGEX REPLACE "^// expect-error: " "" text "${line}")
  string(FIND "${output}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the compiler's output lacks \"${text}\":\n${output}")
  endif()
endforeach()
string(REGEX MATCHALL ": error: " errors "${output}")
list(LENGTH errors error_count)
if(NOT error_count EQUAL expected_count)
  message(FATAL_ERROR
    "expected ${expected_count} errors, the compiler reported ${error_count}:\n${output}")
endif()
message(STATUS "${SOURCE}: ${error_count} errors, each naming the missing member")
