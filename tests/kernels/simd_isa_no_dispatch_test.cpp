// SPDX-License-Identifier: MIT
//
// Part of simd_isa_test: the per-ISA SIMD headers under ATTENTION_NO_DISPATCH, the setting for
// compilers without target attributes and for users who want only what their flags enable. They
// must compile (with -Werror), emit no target region and define no ISA class; only the Eigen path
// (kernels/simd.hpp) is then left. detail/cpu_features.hpp does not depend on the macro, so this
// translation unit and simd_isa_test.cpp share its inline functions without an ODR conflict.

#define ATTENTION_NO_DISPATCH
#include <gtest/gtest.h>

#include <attention/kernels/simd_avx512.hpp>
#include <attention/kernels/simd_sse2.hpp>
#include <attention/kernels/target_regions.hpp>
#include <string>

static_assert(ATTENTION_HAS_DISPATCH == 0, "ATTENTION_NO_DISPATCH must turn the dispatch off");

namespace {

#define ATTENTION_TEST_SPELLING(...) #__VA_ARGS__
#define ATTENTION_TEST_EXPANSION(macro) ATTENTION_TEST_SPELLING(macro)

TEST(NoDispatch, EmitsNoTargetRegion) {
  EXPECT_EQ(std::string(ATTENTION_TEST_EXPANSION(ATTENTION_TARGET_AVX2_BEGIN)), "");
  EXPECT_EQ(std::string(ATTENTION_TEST_EXPANSION(ATTENTION_TARGET_AVX512_BEGIN)), "");
  EXPECT_EQ(std::string(ATTENTION_TEST_EXPANSION(ATTENTION_TARGET_END)), "");
#if defined(ATTENTION_SIMD_INLINE)
  ADD_FAILURE() << "ATTENTION_SIMD_INLINE is defined: the SIMD classes were compiled";
#endif
}

}  // namespace
