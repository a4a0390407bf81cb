// SPDX-License-Identifier: MIT
// Tests for attention/alibi.hpp: the ALiBi slopes (Press et al., 2022) written out from the formula
// for powers of two and for the interpolated head counts, and the shape check.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/alibi.hpp>
#include <cmath>
#include <string>
#include <vector>

namespace {

using attention::Index;

// n = 8: m_k = 2^(-8k/8) = 2^-k, exactly representable.
TEST(AlibiSlopes, EightHeadsArePowersOfOneHalf) {
  const std::vector<double> expected{0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125,
                                     0.00390625};
  EXPECT_EQ(attention::alibi_slopes(8), expected);
}

// n = 1: 2^-8; n = 2: 2^-4, 2^-8; n = 16: 2^(-k/2), every other one an exact power of two.
TEST(AlibiSlopes, OtherPowersOfTwo) {
  EXPECT_EQ(attention::alibi_slopes(1), std::vector<double>{0.00390625});
  EXPECT_EQ(attention::alibi_slopes(2), (std::vector<double>{0.0625, 0.00390625}));
  const std::vector<double> sixteen = attention::alibi_slopes(16);
  ASSERT_EQ(sixteen.size(), 16U);
  EXPECT_DOUBLE_EQ(sixteen[0], 0.70710678118654752);  // 2^-0.5
  EXPECT_EQ(sixteen[1], 0.5);
  EXPECT_DOUBLE_EQ(sixteen[2], 0.35355339059327376);  // 2^-1.5
  EXPECT_EQ(sixteen[15], 0.00390625);
  for (std::size_t k = 1; k < 16; ++k) EXPECT_DOUBLE_EQ(sixteen[k] / sixteen[k - 1], sixteen[0]);
}

// n = 12: c = 8 gives 2^-1 ... 2^-8, then the 16-head slopes between them, 2^-(2k-1)/2:
// 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (the reference code's get_slopes(16)[0::2][:4]).
TEST(AlibiSlopes, TwelveHeadsInterpolate) {
  const std::vector<double> expected{0.5,
                                     0.25,
                                     0.125,
                                     0.0625,
                                     0.03125,
                                     0.015625,
                                     0.0078125,
                                     0.00390625,
                                     0.70710678118654752,
                                     0.35355339059327376,
                                     0.17677669529663688,
                                     0.088388347648318441};
  const std::vector<double> slopes = attention::alibi_slopes(12);
  ASSERT_EQ(slopes.size(), expected.size());
  for (std::size_t h = 0; h < expected.size(); ++h) EXPECT_DOUBLE_EQ(slopes[h], expected[h]) << h;
}

// n = 3: c = 2 gives 2^-4, 2^-8, then 2^-2 (from the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8);
// n = 5: c = 4 gives 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1.
TEST(AlibiSlopes, SmallNonPowersOfTwo) {
  EXPECT_EQ(attention::alibi_slopes(3), (std::vector<double>{0.0625, 0.00390625, 0.25}));
  EXPECT_EQ(attention::alibi_slopes(5),
            (std::vector<double>{0.25, 0.0625, 0.015625, 0.00390625, 0.5}));
}

// BLOOM-176B has 112 heads: c = 64, slopes 2^(-k/8) for k = 1 .. 64, then 2^(-(2k-1)/16) for
// k = 1 .. 48. Every slope lies in (0, 1) and all are distinct.
TEST(AlibiSlopes, OneHundredTwelveHeads) {
  const std::vector<double> slopes = attention::alibi_slopes(112);
  ASSERT_EQ(slopes.size(), 112U);
  for (Index k = 1; k <= 64; ++k) {
    EXPECT_DOUBLE_EQ(slopes[static_cast<std::size_t>(k - 1)], std::exp2(-static_cast<double>(k) / 8));
  }
  for (Index k = 1; k <= 48; ++k) {
    EXPECT_DOUBLE_EQ(slopes[static_cast<std::size_t>(63 + k)],
                     std::exp2(-static_cast<double>(2 * k - 1) / 16));
  }
  std::vector<double> sorted = slopes;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_TRUE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
}

TEST(AlibiSlopes, RejectsZeroHeads) {
  try {
    (void)attention::alibi_slopes(0);
    ADD_FAILURE() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_STREQ(e.what(), "attention::alibi_slopes: num_heads (= 0) must be at least 1");
  }
  EXPECT_THROW((void)attention::alibi_slopes(-3), attention::ShapeError);
}

}  // namespace
