# SPDX-License-Identifier: MIT
# PublicNamesOnly (cmake -P, -DSOURCE_DIR=<tree>): the benchmarks and examples use only public
# names (issue 17), so that they measure and show what a user can write. Fails naming every line
# of benchmarks/ or examples/ that reaches into attention's internals: a `detail::` name or an
# include of attention/detail/ or attention/kernels/.
file(GLOB_RECURSE sources ${SOURCE_DIR}/benchmarks/*.cpp ${SOURCE_DIR}/benchmarks/*.hpp
  ${SOURCE_DIR}/examples/*.cpp ${SOURCE_DIR}/examples/*.hpp)
list(LENGTH sources count)
if(count EQUAL 0)
  message(FATAL_ERROR "public names: no source under ${SOURCE_DIR}/benchmarks or examples")
endif()
set(found "")
foreach(source IN LISTS sources)
  file(STRINGS ${source} lines REGEX "detail::|attention/detail/|attention/kernels/")
  foreach(line IN LISTS lines)
    string(APPEND found "\n  ${source}: ${line}")
  endforeach()
endforeach()
if(found)
  message(FATAL_ERROR "public names: internal names in benchmarks or examples:${found}")
endif()
message(STATUS "public names: ${count} files of benchmarks/ and examples/ use public names only")
