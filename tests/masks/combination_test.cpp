// SPDX-License-Identifier: MIT
// Tests for attention/masks/combination.hpp: `a & b` (BothMasks): exact tile classification, also
// for tiles that neither part hides but the combination does, the forward against the long-double
// reference, hidden keys staying hidden under +inf and NaN biases, and both backward passes.

#include <gtest/gtest.h>

#include <attention/masks/combination.hpp>
#include <attention/masks/matrix.hpp>
#include <attention/masks/positional.hpp>
#include <limits>
#include <utility>

#include "support/mask_checks.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;
using support::BoolMatrix;

static_assert(attention::is_mask_v<decltype(attention::causal & attention::window(2, 0))>);
static_assert(attention::is_mask_v<decltype(attention::causal_lower_right &
                                            attention::bias(Matrix<float>::Zero(2, 2)) &
                                            attention::window(1, 1))>);

/// A random bias with no zero entry (so that the brute-force classification sees it), -inf on a
/// random 30% and on a whole block.
Matrix<double> random_bias(Index rows, Index cols, unsigned seed) {
  Matrix<double> b = support::random_matrix<double>(rows, cols, seed).array() + 3.0;
  const BoolMatrix hidden = support::random_keep(rows, cols, seed + 1, 0.3);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      if (hidden(i, j) || (i < rows / 2 && j < cols / 3)) {
        b(i, j) = -std::numeric_limits<double>::infinity();
      }
    }
  }
  return b;
}

TEST(MaskCombination, ClassifiesEveryTileExactly) {
  const Index l = 150, s = 170;
  const BoolMatrix visible = support::random_keep(l, s, 50, 0.5);
  const Matrix<double> b = random_bias(l, s, 51);
  for (const Index tile : {1, 5, 16, 64}) {
    support::expect_exact_classification(attention::causal & attention::window(10, 0), l, s, tile,
                                         tile);
    support::expect_exact_classification(attention::window(20, 0) & attention::window(0, 20), l, s,
                                         tile, tile + 3);
    support::expect_exact_classification(attention::keep(visible) & attention::causal_lower_right,
                                         l, s, tile, tile);
    support::expect_exact_classification(attention::bias(b) & attention::window(30, 5), l, s, tile,
                                         tile);
    support::expect_exact_classification(
        attention::causal & attention::keep(visible) & attention::bias(b), l, s, tile, tile);
  }
}

// Two masks that each leave a tile partly visible can share no visible entry: the combination must
// call the tile hidden so the kernel skips it.
TEST(MaskCombination, TileThatNeitherPartEmptiesButTheCombinationDoes) {
  // keep() shows only keys above the diagonal; causal only keys on or below it.
  BoolMatrix above = BoolMatrix::Constant(16, 16, false);
  for (Index i = 0; i < 16; ++i) {
    for (Index j = i + 1; j < 16; ++j) above(i, j) = true;
  }
  const auto keep_above = attention::keep(above);
  EXPECT_EQ(keep_above.visibility(0, 16, 0, 16), TileVisibility::mixed);
  EXPECT_EQ(attention::causal.visibility(0, 16, 0, 16), TileVisibility::mixed);
  const auto both = keep_above & attention::causal;
  EXPECT_EQ(attention::bind_mask(both, 16, 16).visibility(0, 16, 0, 16), TileVisibility::hidden);
  // Two windows that meet only on the diagonal, and keep() off it: each part mixed, nothing shared.
  const auto disjoint = attention::window(8, 0) & attention::window(0, 8);
  const auto narrow = attention::window(8, 0) & attention::window(attention::unbounded, 0);
  EXPECT_EQ(
      attention::bind_mask(disjoint & attention::keep(above), 16, 16).visibility(0, 16, 0, 16),
      TileVisibility::hidden);
  EXPECT_EQ(attention::bind_mask(narrow, 16, 16).visibility(0, 16, 0, 16), TileVisibility::mixed);
}

TYPED_TEST(MaskForward, CombinationsMatchReference) {
  using Scalar = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 97}}) {
    const BoolMatrix visible = support::random_keep(l, s, 60, 0.6);
    const Matrix<Scalar> b1 = support::random_matrix<Scalar>(l, s, 61);
    Matrix<Scalar> b2 = support::random_matrix<Scalar>(l, s, 62);
    b2.leftCols(s / 2).setConstant(-std::numeric_limits<Scalar>::infinity());
    support::expect_forward_matches<Scalar>(
        attention::causal_lower_right & attention::window(9, 0),
        ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::window(9, 0)}), l, s, 63);
    support::expect_forward_matches<Scalar>(
        attention::causal_lower_right & attention::bias(b1),
        ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::bias(b1)}), l, s, 64);
    // Two biases add; a -inf in either hides the key.
    support::expect_forward_matches<Scalar>(
        attention::bias(b1) & attention::bias(b2),
        ref::Mask::both({ref::Mask::bias(b1), ref::Mask::bias(b2)}), l, s, 65);
    support::expect_forward_matches<Scalar>(
        attention::window(30, 2) & attention::keep(visible) & attention::bias(b1),
        ref::Mask::both({ref::Mask::window(30, 2), ref::Mask::keep(visible), ref::Mask::bias(b1)}),
        l, s, 66);
  }
}

// A key hidden by one part stays hidden whatever the other part adds there, +inf and NaN biases
// included (the mask protocol): the row does not become NaN.
TYPED_TEST(MaskForward, HiddenKeyStaysHiddenUnderInfiniteOrNanBias) {
  using Scalar = TypeParam;
  const Index n = 70;
  const Matrix<Scalar> q = support::random_matrix<Scalar>(n, 8, 70);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(n, 8, 71);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(n, 8, 72);
  Matrix<Scalar> b = Matrix<Scalar>::Zero(n, n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = i + 1; j < n; ++j) {
      b(i, j) = (i + j) % 2 == 0 ? std::numeric_limits<Scalar>::infinity()
                                 : std::numeric_limits<Scalar>::quiet_NaN();
    }
  }
  const Matrix<Scalar> expected =
      attention::scaled_dot_product_attention(q, k, v, attention::causal);
  for (const auto& out :
       {attention::scaled_dot_product_attention(q, k, v, attention::causal & attention::bias(b)),
        attention::scaled_dot_product_attention(q, k, v, attention::bias(b) & attention::causal)}) {
    EXPECT_TRUE(out.allFinite());
    EXPECT_TRUE(support::is_near(out, expected, support::mask_tolerance<Scalar>()));
  }
}

// A combination with a bias: dbias is dS, the gradient of the bias matrix (biases add), 0 where
// another part hides the key.
TYPED_TEST(MaskGradient, CombinationWithBias) {
  using T = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}}) {
    SCOPED_TRACE(::testing::Message() << "L = " << l << ", S = " << s);
    Matrix<T> q = support::random_matrix<T>(l, 3, 400);
    Matrix<T> k = support::random_matrix<T>(s, 3, 401);
    Matrix<T> v = support::random_matrix<T>(s, 2, 402);
    Matrix<T> b = support::random_matrix<T>(l, s, 403);
    const Matrix<T> d_out = support::random_matrix<T>(l, 2, 404);
    const auto mask = [&] { return attention::window(2, 0) & attention::bias(b); };
    const auto grads = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask());
    const auto loss = [&] {
      return support::weighted_sum(d_out, attention::scaled_dot_product_attention(q, k, v, mask()));
    };
    constexpr long double bound = support::gradient_bound<T>();
    EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, bound)) << "dq";
    EXPECT_TRUE(support::gradient_matches(loss, k, grads.dk, bound)) << "dk";
    EXPECT_TRUE(support::gradient_matches(loss, v, grads.dv, bound)) << "dv";
    EXPECT_TRUE(support::gradient_matches(loss, b, grads.dbias, bound)) << "dbias";
    for (Index i = 0; i < l; ++i) {
      for (Index j = 0; j < s; ++j) {
        if (ref::hides(ref::Mask::window(2, 0), l, s, i, j)) {
          EXPECT_EQ(grads.dbias(i, j), T(0));
        }
      }
    }
  }
}

TYPED_TEST(MaskTiledBackward, Combinations) {
  using T = TypeParam;
  const BoolMatrix visible = support::random_keep(200, 70, 80, 0.6);
  support::expect_tiled_backward_matches<T>(
      attention::window(9, 0) & attention::keep(visible),
      ref::Mask::both({ref::Mask::window(9, 0), ref::Mask::keep(visible)}), 200, 70, 81);
  support::expect_tiled_backward_matches<T>(
      attention::causal_lower_right & attention::window(0, 3),
      ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::window(0, 3)}), 70, 200, 82);
}

}  // namespace
