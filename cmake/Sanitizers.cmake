# SPDX-License-Identifier: MIT
# ATTENTION_SANITIZE: AddressSanitizer + UndefinedBehaviorSanitizer on the project's own targets
# (tests, examples, benchmarks: everything that links attention_warnings), never on the INTERFACE
# target users link. Any report aborts the program (-fno-sanitize-recover=all), so a test with a
# report fails. One command for a developer: `cmake --workflow --preset sanitize` (CMake >= 3.25),
# or `cmake --preset sanitize && cmake --build --preset sanitize && ctest --preset sanitize`.
#
# Included from tests/trust/CMakeLists.txt (and, if the lead wants it, from the top level after
# attention_warnings is defined); include_guard makes a second include a no-op.
include_guard(GLOBAL)

option(ATTENTION_SANITIZE "Build tests, examples and benchmarks with ASan + UBSan" OFF)

if(ATTENTION_SANITIZE)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang)$")
    message(FATAL_ERROR "ATTENTION_SANITIZE needs GCC or Clang, not ${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(NOT TARGET attention_warnings)
    message(FATAL_ERROR "cmake/Sanitizers.cmake: include it after attention_warnings is defined")
  endif()
  set(ATTENTION_SANITIZE_FLAGS
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_compile_options(attention_warnings INTERFACE ${ATTENTION_SANITIZE_FLAGS})
  target_link_options(attention_warnings INTERFACE -fsanitize=address,undefined)
  message(STATUS "attention: ASan + UBSan on (${ATTENTION_SANITIZE_FLAGS})")
endif()
