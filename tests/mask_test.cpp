// SPDX-License-Identifier: MIT
// Tests for attention/mask.hpp, the umbrella of the mask headers: every library mask is a mask
// (attention::is_mask_v) and a matrix or a bool is not, and the diagrams of the overview comment
// hold. Each mask header's own tests are in tests/masks/<header>_test.cpp.

#include <gtest/gtest.h>

#include <attention/alibi.hpp>
#include <attention/mask.hpp>

#include "support/mask_checks.hpp"

namespace {

using attention::Matrix;
using support::pattern_of;

static_assert(attention::is_mask_v<attention::NoMask>);
static_assert(attention::is_mask_v<attention::CausalMask>);
static_assert(attention::is_mask_v<attention::KeepMask>);
static_assert(attention::is_mask_v<attention::BiasMask<float>>);
static_assert(attention::is_mask_v<attention::CausalLowerRightMask>);
static_assert(attention::is_mask_v<attention::WindowMask>);
static_assert(attention::is_mask_v<attention::KeyPaddingMask>);
static_assert(attention::is_mask_v<attention::SequenceMask>);
static_assert(attention::is_mask_v<attention::AlibiMask>);
static_assert(attention::is_mask_v<const attention::CausalMask&>);
static_assert(!attention::is_mask_v<Matrix<double>>,
              "a matrix is not a mask: use keep() or bias()");
static_assert(!attention::is_mask_v<bool>);

// --- The diagrams of mask.hpp and README.md -------------------------------------------------

TEST(CausalLowerRight, DiagramTwoQueriesFiveKeys) {
  EXPECT_EQ(pattern_of<double>(attention::causal, 2, 5), "x....\nxx...\n");
  EXPECT_EQ(pattern_of<double>(attention::causal_lower_right, 2, 5), "xxxx.\nxxxxx\n");
}

TEST(CausalLowerRight, DiagramFiveQueriesTwoKeys) {
  EXPECT_EQ(pattern_of<double>(attention::causal, 5, 2), "x.\nxx\nxx\nxx\nxx\n");
  EXPECT_EQ(pattern_of<double>(attention::causal_lower_right, 5, 2), "..\n..\n..\nx.\nxx\n");
}

TEST(Window, DiagramCausalSlidingWindow) {
  EXPECT_EQ(pattern_of<double>(attention::window(2, 0), 5, 5),
            "x....\nxx...\nxxx..\n.xxx.\n..xxx\n");
  // Lower-right aligned: with L = 2 of S = 6, query 1 is at position 5.
  EXPECT_EQ(pattern_of<double>(attention::window(2, 0), 2, 6), "..xxx.\n...xxx\n");
  EXPECT_EQ(pattern_of<double>(attention::window(1, 1), 4, 4), "xx..\nxxx.\n.xxx\n..xx\n");
}

}  // namespace
