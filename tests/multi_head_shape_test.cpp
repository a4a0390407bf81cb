// SPDX-License-Identifier: MIT
// Tests for attention/multi_head_shape.hpp: MultiHeadShape's counts and checks (grouped-query
// shapes are tested in multi_head_gqa_test.cpp).

#include <gtest/gtest.h>

#include <attention/multi_head_shape.hpp>
#include <cstdint>

#include "support/messages.hpp"

namespace {

TEST(MultiHeadShape, CountsPerHeadAndInAll) {
  // d_model 8, 2 heads of 4: a head owns 8 x 4 of W_Q, W_K, W_V and 4 x 8 of W_O = 128 weights.
  const attention::MultiHeadShape shape(8, 2);
  EXPECT_EQ(shape.head_dim(), 4);
  EXPECT_EQ(shape.weights_per_head(), std::int64_t{128});
  EXPECT_EQ(shape.weight_count(), std::int64_t{256});  // 4 * 8 * 8
  EXPECT_EQ(shape.bias_count(), std::int64_t{32});
  EXPECT_EQ(shape.parameter_count(), std::int64_t{288});
}

TEST(MultiHeadShape, CountsDoNotOverflowThirtyTwoBits) {
  // d_model = 65536, one head: 4 * 2^32 weights, past any 32-bit integer.
  const attention::MultiHeadShape shape(65536, 1);
  EXPECT_EQ(shape.weight_count(), std::int64_t{4} * 65536 * 65536);
}

TEST(MultiHeadAttentionShapes, MultiHeadShapeNamesItselfInErrors) {
  EXPECT_EQ(support::message_of<attention::ShapeError>([] { attention::MultiHeadShape(10, 4); }),
            "attention::MultiHeadShape: num_heads (= 4) must divide d_model (= 10)");
  EXPECT_EQ(support::message_of<attention::ShapeError>([] { attention::MultiHeadShape(0, 1); }),
            "attention::MultiHeadShape: d_model (= 0) must be at least 1");
}

TEST(MultiHeadShape, NamesTheCallerInErrors) {
  EXPECT_EQ(support::message_of<attention::ShapeError>(
                [] { attention::MultiHeadShape(8, 2, 3, "MyLayer"); }),
            "attention::MyLayer: num_kv_heads (= 3) must divide num_heads (= 2)");
}

// 12 = 3 heads of 4 with one K/V head (any integer type for the count): kv_dim 4, groups of 3.
TEST(MultiHeadShape, GroupedSizes) {
  const attention::MultiHeadShape shape(12, 3, 1);
  EXPECT_EQ(shape.num_kv_heads(), 1);
  EXPECT_EQ(shape.group_size(), 3);
  EXPECT_EQ(shape.kv_dim(), 4);
  EXPECT_EQ(shape.head_dim(), 4);
  // 2 * 144 + 2 * 48 weights, 2 * 12 + 2 * 4 biases.
  EXPECT_EQ(shape.weight_count(), std::int64_t{384});
  EXPECT_EQ(shape.bias_count(), std::int64_t{32});
}

}  // namespace
