// SPDX-License-Identifier: MIT
// Tests for attention/masks/positional.hpp: causal, causal_lower_right, window() and key_padding():
// tile classification (exact, on every tile of a grid), the forward against the long-double
// reference, and both backward passes (support/mask_checks.hpp).

#include <gtest/gtest.h>

#include <attention/masks/positional.hpp>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "support/eigen_matchers.hpp"
#include "support/mask_checks.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;

using support::inf;

// --- causal -------------------------------------------------------------------------------------

TEST(CausalMask, ClassifiesTiles) {
  // visibility(row0, rows, col0, cols). Query i sees key j iff j <= i.
  const attention::CausalMask causal;
  EXPECT_EQ(causal.visibility(0, 4, 4, 4), TileVisibility::hidden);   // keys 4..7 vs queries 0..3
  EXPECT_EQ(causal.visibility(0, 4, 3, 4), TileVisibility::mixed);    // query 3 sees key 3
  EXPECT_EQ(causal.visibility(4, 4, 0, 4), TileVisibility::visible);  // keys 0..3 vs queries 4..7
  EXPECT_EQ(causal.visibility(4, 4, 0, 5), TileVisibility::visible);  // key 4 seen by query 4..
  EXPECT_EQ(causal.visibility(4, 4, 0, 6), TileVisibility::mixed);    // key 5 hidden from query 4
  EXPECT_EQ(causal.visibility(2, 4, 2, 4), TileVisibility::mixed);    // a diagonal tile
  EXPECT_EQ(causal.visibility(3, 1, 3, 1), TileVisibility::visible);
  EXPECT_EQ(causal.visibility(3, 1, 4, 1), TileVisibility::hidden);
}

TEST(CausalMask, ApplySetsMinusInfinityAboveTheDiagonalOfAnyTile) {
  // A 4 x 6 tile at (row0, col0) = (2, 1) of a larger score matrix, stored with row stride 9:
  // entry (r, c) is query 2 + r and key 1 + c, masked iff 1 + c > 2 + r.
  Matrix<double> storage = support::random_matrix<double>(4, 9, 1);
  const Matrix<double> before = storage;
  attention::causal.apply(storage.data(), storage.outerStride(), 2, 4, 1, 6);
  for (Index r = 0; r < 4; ++r) {
    for (Index c = 0; c < 9; ++c) {
      if (c < 6 && 1 + c > 2 + r) {
        EXPECT_EQ(storage(r, c), -inf<double>) << r << ", " << c;
      } else {
        EXPECT_EQ(storage(r, c), before(r, c)) << r << ", " << c;
      }
    }
  }
}

// causal's band has no lower side (-unbounded <= j - i): tiles far below and far above the
// diagonal, at indices near 2^40, are kept whole and masked whole, with no overflow.
TEST(CausalMask, ApplyFarFromTheDiagonal) {
  const Index far = Index{1} << 40;
  Matrix<double> tile = support::random_matrix<double>(3, 5, 2);
  const Matrix<double> before = tile;
  attention::causal.apply(tile.data(), tile.outerStride(), far, 3, 7, 5);  // keys << queries
  EXPECT_TRUE((tile.array() == before.array()).all());
  attention::causal.apply(tile.data(), tile.outerStride(), 7, 3, far, 5);  // keys >> queries
  EXPECT_TRUE((tile.array() == -inf<double>).all());
}

TEST(MaskShapes, CausalAndNoMaskFitAnyShape) {
  EXPECT_NO_THROW(attention::causal.check("f", 3, 100));
  EXPECT_NO_THROW(attention::NoMask{}.check("f", 100, 3));
  EXPECT_NO_THROW(attention::causal_lower_right.check("f", 100, 3));
  EXPECT_NO_THROW(attention::window(2, 0).check("f", 3, 100));
}

// --- window() -----------------------------------------------------------------------------------

TEST(Window, UnboundedSides) {
  EXPECT_EQ(support::pattern_of<double>(attention::window(attention::unbounded, 0), 3, 5),
            support::pattern_of<double>(attention::causal_lower_right, 3, 5));
  EXPECT_EQ(support::pattern_of<double>(
                attention::window(attention::unbounded, attention::unbounded), 3, 5),
            "xxxxx\nxxxxx\nxxxxx\n");
  EXPECT_EQ(support::pattern_of<double>(attention::window(0, attention::unbounded), 3, 5),
            "..xxx\n...xx\n....x\n");
}

TEST(Window, NegativeSizesAreRejected) {
  EXPECT_THROW((void)attention::window(-1, 0), std::invalid_argument);
  EXPECT_THROW((void)attention::window(0, -3), std::invalid_argument);
  EXPECT_NO_THROW((void)attention::window(0, 0));
  try {
    (void)attention::window(-1, 4);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::window: left (= -1) and right (= 4) must be >= 0 (attention::unbounded "
              "for no limit)");
  }
}

// --- Tile classification ----------------------------------------------------------------------

TEST(CausalLowerRight, ClassifiesEveryTileExactly) {
  for (const auto& [num_queries, num_keys] :
       {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 129}, {5, 2}, {2, 5}}) {
    for (const Index tile : {1, 3, 16, 64}) {
      support::expect_exact_classification(attention::causal_lower_right, num_queries, num_keys,
                                           tile, tile);
    }
  }
  // With 16 x 16 tiles on 70 x 200, all three kinds occur.
  const auto counts =
      support::expect_exact_classification(attention::causal_lower_right, 70, 200, 16, 16);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

TEST(Window, ClassifiesEveryTileExactly) {
  const attention::WindowMask windows[] = {
      attention::window(0, 0),
      attention::window(5, 0),
      attention::window(40, 3),
      attention::window(attention::unbounded, 0),
      attention::window(0, attention::unbounded),
      attention::window(attention::unbounded, attention::unbounded)};
  for (const auto& mask : windows) {
    for (const auto& [num_queries, num_keys] :
         {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 129}}) {
      for (const Index tile : {1, 7, 32}) {
        support::expect_exact_classification(mask, num_queries, num_keys, tile, tile + 9);
      }
    }
  }
  const auto counts =
      support::expect_exact_classification(attention::window(40, 3), 200, 200, 32, 32);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

// --- Forward against the reference -----------------------------------------------------------

TYPED_TEST(MaskForward, CausalLowerRightMatchesReference) {
  support::expect_matches_reference<TypeParam>(attention::causal_lower_right,
                                               ref::Mask::causal_lower_right(), 10);
}

TYPED_TEST(MaskForward, WindowMatchesReference) {
  const std::optional<Index> none;
  const std::pair<std::optional<Index>, std::optional<Index>> sides[] = {
      {0, 0}, {4, 0}, {50, 0}, {7, 9}, {none, 0}, {0, none}, {3, none}, {none, none}};
  unsigned seed = 20;
  for (const auto& [left, right] : sides) {
    SCOPED_TRACE(::testing::Message()
                 << "window(" << (left ? std::to_string(*left) : "unbounded") << ", "
                 << (right ? std::to_string(*right) : "unbounded") << ")");
    const auto mask = attention::window(left.value_or(attention::unbounded),
                                        right.value_or(attention::unbounded));
    support::expect_matches_reference<TypeParam>(mask, ref::Mask::window(left, right), seed += 3);
  }
}

// Sliding windows narrower than a tile, over a sequence many tiles long: most tiles are hidden
// and every row still sees its own window (the kernel must not skip a tile it needs).
TYPED_TEST(MaskForward, NarrowWindowOverLongSequence) {
  using Scalar = TypeParam;
  const Index n = 333;
  const Matrix<Scalar> q = support::random_matrix<Scalar>(n, 8, 40);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(n, 8, 41);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(n, 8, 42);
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(q, k, v, attention::window(3, 0));
  EXPECT_TRUE(support::is_near(
      out,
      ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v), ref::Mask::window(3, 0)),
      support::mask_tolerance<Scalar>()));
}

// --- Backward -----------------------------------------------------------------------------------

TYPED_TEST(MaskGradient, CausalLowerRight) {
  // L < S (every key seen), L > S (the first L - S queries see nothing: dq = 0), L == S.
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}, {5, 5}, {1, 6}}) {
    support::expect_gradients_match<TypeParam>(l, s, 100, attention::causal_lower_right);
  }
}

TYPED_TEST(MaskGradient, Window) {
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}, {6, 6}}) {
    support::expect_gradients_match<TypeParam>(l, s, 200, attention::window(2, 0));
    support::expect_gradients_match<TypeParam>(l, s, 210, attention::window(1, 2));
  }
}

TYPED_TEST(MaskTiledBackward, CausalLowerRight) {
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}}) {
    support::expect_tiled_backward_matches<TypeParam>(attention::causal_lower_right,
                                                      ref::Mask::causal_lower_right(), l, s, 300);
  }
}

TYPED_TEST(MaskTiledBackward, Window) {
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}}) {
    // Keys outside every window exist when L < S: the first S - L - 5 are seen by nobody.
    support::expect_tiled_backward_matches<TypeParam>(attention::window(5, 0),
                                                      ref::Mask::window(5, 0), l, s, 310);
    support::expect_tiled_backward_matches<TypeParam>(attention::window(20, 30),
                                                      ref::Mask::window(20, 30), l, s, 320);
  }
}

// --- key_padding() ------------------------------------------------------------------------------

TEST(KeyPadding, ClassifiesTilesAndMatchesReference) {
  for (const Index valid : {0, 1, 63, 64, 65, 199, 200}) {
    support::expect_exact_classification(attention::key_padding(valid), 70, 200, 16, 16);
    support::expect_forward_matches<double>(attention::key_padding(valid),
                                            ref::Mask::key_padding(valid), 70, 200, 90);
  }
}

TEST(KeyPadding, Errors) {
  EXPECT_THROW((void)attention::key_padding(-1), std::invalid_argument);
  const Matrix<double> q = support::random_matrix<double>(3, 4, 1);
  const Matrix<double> k = support::random_matrix<double>(3, 4, 2);
  const Matrix<double> v = support::random_matrix<double>(3, 4, 3);
  EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v, attention::key_padding(4)),
               attention::ShapeError);
  try {
    (void)attention::scaled_dot_product_attention(q, k, v, attention::key_padding(4));
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::scaled_dot_product_attention: key_padding valid_keys (= 4) must be at "
              "most number of keys (= 3)");
  }
  try {
    (void)attention::key_padding(-2);
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "attention::key_padding: valid_keys (= -2) must be >= 0");
  }
}

}  // namespace
