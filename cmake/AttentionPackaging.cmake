# SPDX-License-Identifier: MIT
# Packaging beyond CMake's own package files, included by CMakeLists.txt with ATTENTION_INSTALL:
#   attention.pc    pkg-config file, installed to <prefix>/share/pkgconfig (header-only:
#                   arch-independent, on pkg-config's default path under /usr and /usr/local)
#   CPack           `cpack -G TGZ` (a tarball of the install tree) and `cpack -G DEB` (Debian
#                   package libattention-dev, Architecture: all, installing under /usr)

# --- pkg-config ----------------------------------------------------------------------------------
set(ATTENTION_PC_DIR ${CMAKE_INSTALL_DATADIR}/pkgconfig)
# ${pcfiledir} is where pkg-config found the file, so the prefix is a relative step up from it
# and the install can be moved (cmake --install --prefix, cpack, dpkg -x) without editing it.
file(RELATIVE_PATH ATTENTION_PC_PREFIX_FROM_PC_DIR
  /prefix/${ATTENTION_PC_DIR} /prefix)
string(REGEX REPLACE "/$" "" ATTENTION_PC_PREFIX_FROM_PC_DIR "${ATTENTION_PC_PREFIX_FROM_PC_DIR}")
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(ATTENTION_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(ATTENTION_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/attention.pc.in ${PROJECT_BINARY_DIR}/attention.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/attention.pc DESTINATION ${ATTENTION_PC_DIR})

# --- CPack ---------------------------------------------------------------------------------------
set(CPACK_PACKAGE_NAME attention)
set(CPACK_PACKAGE_VENDOR "attention")
set(CPACK_PACKAGE_CONTACT "attention developers")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "Exact, fast scaled dot-product and multi-head attention for Eigen (header-only, C++17)")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR "TGZ;DEB")
set(CPACK_SOURCE_GENERATOR "TGZ")
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/\\\\.venv/" "__pycache__")
# Debian: headers and CMake/pkg-config files only, so a -dev package for every architecture,
# named and versioned as Debian names its own (libeigen3-dev, libattention-dev_0.1.0_all.deb).
set(CPACK_DEBIAN_PACKAGE_NAME libattention-dev)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libeigen3-dev (>= 3.4)")
if(ATTENTION_EXPORT_MPI)
  # The installed package config then finds MPI for attention::mpi (find_dependency), so the
  # package needs Debian's default MPI. Configure with -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON for a
  # package without attention::mpi and without this dependency (mpi.hpp is installed either way).
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", mpi-default-dev")
endif()
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "pkg-config, cmake (>= 3.18)")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
include(CPack)
