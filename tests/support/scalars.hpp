#pragma once
// SPDX-License-Identifier: MIT
//
// The scalar types of the typed tests:
//   TYPED_TEST_SUITE(MyTest, support::AllScalars, support::ScalarNames);
//
//   AllScalars   float, double, long double: every type the library takes. long double takes the
//                materialising path (detail/materializing.hpp, Eigen's products); float and double
//                the tiled kernels.
//   FastScalars  float, double: the types the tiled kernels cover.
//
// ATTENTION_TEST_WITHOUT_LONG_DOUBLE (CMake: -DATTENTION_TEST_LONG_DOUBLE=OFF; the sanitizer
// sub-build sets it) drops long double from AllScalars. The sanitizers are there for the kernels'
// pointer arithmetic, which long double never reaches, and the main build runs the long double
// tests; tests written in long double (TEST, not TYPED_TEST) stay.

#include <gtest/gtest.h>

namespace support {

using FastScalars = ::testing::Types<float, double>;

#ifdef ATTENTION_TEST_WITHOUT_LONG_DOUBLE
using AllScalars = ::testing::Types<float, double>;
#else
using AllScalars = ::testing::Types<float, double, long double>;
#endif

}  // namespace support
