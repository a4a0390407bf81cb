// SPDX-License-Identifier: MIT
// Tests for attention/masks/matrix.hpp: keep() and bias(): their tile classification and score
// updates, how they hold their matrix (viewed or owned), and their shape checks.

#include <gtest/gtest.h>

#include <attention/masks/matrix.hpp>
#include <attention/masks/positional.hpp>
#include <attention/scaled_dot_product.hpp>
#include <cmath>
#include <limits>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;
using support::message_of;

using support::inf;

TEST(KeepMask, ClassifiesTilesAndApplies) {
  support::BoolMatrix visible = support::BoolMatrix::Constant(4, 6, true);
  visible.block(0, 3, 2, 3).setConstant(false);
  visible(3, 0) = false;
  const attention::KeepMask mask = attention::keep(visible);
  EXPECT_EQ(mask.visibility(0, 2, 3, 3), TileVisibility::hidden);
  EXPECT_EQ(mask.visibility(0, 2, 0, 3), TileVisibility::visible);
  EXPECT_EQ(mask.visibility(2, 2, 0, 2), TileVisibility::mixed);
  Matrix<double> s = support::random_matrix<double>(4, 6, 2);
  const Matrix<double> before = s;
  mask.apply(s.data(), s.outerStride(), 0, 4, 0, 6);
  for (Index i = 0; i < 4; ++i) {
    for (Index j = 0; j < 6; ++j) EXPECT_EQ(s(i, j), visible(i, j) ? before(i, j) : -inf<double>);
  }
}

TEST(BiasMask, ClassifiesTilesAndAddsTheBias) {
  Matrix<double> b = support::random_matrix<double>(3, 5, 3);
  b.rightCols(2).setConstant(-inf<double>);
  const auto mask = attention::bias(b);
  EXPECT_EQ(mask.visibility(0, 3, 3, 2), TileVisibility::hidden);
  EXPECT_EQ(mask.visibility(0, 3, 0, 3), TileVisibility::mixed);  // finite biases must be added
  Matrix<double> s = support::random_matrix<double>(3, 5, 4);
  const Matrix<double> before = s;
  mask.apply(s.data(), s.outerStride(), 0, 3, 0, 5);
  EXPECT_TRUE(support::is_near(s, before + b, 0));
}

// --- How keep() and bias() hold their matrix ----------------------------------------------------

TEST(Keep, ViewsARowMajorMatrixAndCopiesOtherLayouts) {
  support::BoolMatrix row_major = support::random_keep(3, 4, 5, 0.5);
  EXPECT_EQ(attention::keep(row_major).matrix().row(0), row_major.data());
  const Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic> column_major = row_major;
  const attention::KeepMask copied = attention::keep(column_major);
  EXPECT_NE(copied.matrix().row(0), column_major.data());
  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 4; ++j) EXPECT_EQ(copied.matrix()(i, j), row_major(i, j));
  }
}

TEST(Keep, ViewsABlockWithItsRowStride) {
  const support::BoolMatrix storage = support::random_keep(6, 9, 6, 0.5);
  const auto block = storage.block(1, 2, 4, 5);
  const attention::KeepMask mask = attention::keep(block);
  EXPECT_EQ(mask.matrix().rows(), 4);
  EXPECT_EQ(mask.matrix().cols(), 5);
  for (Index i = 0; i < 4; ++i) {
    for (Index j = 0; j < 5; ++j) EXPECT_EQ(mask.matrix()(i, j), storage(1 + i, 2 + j));
  }
}

// A matrix passed on as Eigen::DenseBase<Derived>& (as a generic function of the user's receives
// it) is still viewed.
TEST(Keep, ViewsAMatrixSeenThroughDenseBase) {
  const support::BoolMatrix visible = support::random_keep(3, 4, 7, 0.5);
  const Eigen::DenseBase<support::BoolMatrix>& base = visible;
  EXPECT_EQ(attention::keep(base).matrix().row(0), visible.data());
  const Matrix<float> b = support::random_matrix<float>(2, 3, 8);
  const Eigen::DenseBase<Matrix<float>>& bias_base = b;
  EXPECT_EQ(attention::bias(bias_base).matrix().row(0), b.data());
}

support::BoolMatrix band(Index n, Index width) {
  support::BoolMatrix m(n, n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) m(i, j) = std::abs(i - j) < width;
  }
  return m;
}

TEST(Keep, OwnsTemporariesAndExpressions) {
  // The temporary and the expression's result are gone by the time the masks are used.
  const Matrix<double> q = support::random_matrix<double>(7, 3, 7),
                       k = support::random_matrix<double>(7, 3, 8),
                       v = support::random_matrix<double>(7, 2, 9);
  Eigen::ArrayXXi distance(7, 7);
  for (Index i = 0; i < 7; ++i) {
    for (Index j = 0; j < 7; ++j) distance(i, j) = int(std::abs(i - j));
  }
  const attention::KeepMask from_temporary = attention::keep(band(7, 2));
  const attention::KeepMask from_expression = attention::keep(distance < 2);
  const ref::Matrix expected = ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v),
                                              ref::Mask::keep(band(7, 2)));
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v, from_temporary),
                               expected, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v, from_expression),
                               expected, support::tolerance<double>()));
}

TEST(Bias, ViewsARowMajorMatrixAndOwnsTemporaries) {
  const Matrix<double> b = support::random_matrix<double>(4, 5, 10);
  EXPECT_EQ(attention::bias(b).matrix().row(0), b.data());
  const Eigen::MatrixXd column_major = b;
  const auto copied = attention::bias(column_major);
  EXPECT_NE(copied.matrix().row(0), column_major.data());
  const auto from_expression = attention::bias(b * 2.0);
  for (Index i = 0; i < 4; ++i) {
    for (Index j = 0; j < 5; ++j) {
      EXPECT_EQ(copied.matrix()(i, j), b(i, j));
      EXPECT_EQ(from_expression.matrix()(i, j), 2.0 * b(i, j));
    }
  }
}

TEST(Bias, ZeroMinusInfinityMatrixEqualsCausal) {
  // The seeds' way of masking (tril -> 0 / -inf, added) is the causal mask.
  const Matrix<double> q = support::random_matrix<double>(6, 4, 11),
                       k = support::random_matrix<double>(6, 4, 12),
                       v = support::random_matrix<double>(6, 3, 13);
  Matrix<double> m = Matrix<double>::Zero(6, 6);
  for (Index i = 0; i < 6; ++i) {
    for (Index j = i + 1; j < 6; ++j) m(i, j) = -inf<double>;
  }
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v, attention::bias(m)),
                               attention::scaled_dot_product_attention(q, k, v, attention::causal),
                               support::tolerance<double>()));
  const support::BoolMatrix lower = (m.array() == 0.0);
  EXPECT_TRUE(
      support::is_near(attention::scaled_dot_product_attention(q, k, v, attention::keep(lower)),
                       attention::scaled_dot_product_attention(q, k, v, attention::causal),
                       support::tolerance<double>()));
}

// --- The masks' shape checks: one test per check --------------------------------------------

TEST(MaskShapes, KeepMaskRowsMustEqualNumberOfQueries) {
  const attention::KeepMask mask = attention::keep(support::BoolMatrix::Constant(4, 5, true));
  EXPECT_THROW(mask.check("f", 3, 5), attention::ShapeError);
  EXPECT_NO_THROW(mask.check("f", 4, 5));
  EXPECT_EQ(
      message_of<attention::ShapeError>([&] { mask.check("scaled_dot_product_attention", 3, 5); }),
      "attention::scaled_dot_product_attention: keep mask rows() (= 4) must equal number of "
      "queries (= 3)");
}

TEST(MaskShapes, KeepMaskColsMustEqualNumberOfKeys) {
  const attention::KeepMask mask = attention::keep(support::BoolMatrix::Constant(4, 5, true));
  EXPECT_THROW(mask.check("f", 4, 6), attention::ShapeError);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { mask.check("attention_weights", 4, 6); }),
            "attention::attention_weights: keep mask cols() (= 5) must equal number of keys (= 6)");
}

TEST(MaskShapes, BiasMaskRowsMustEqualNumberOfQueries) {
  const auto mask = attention::bias(Matrix<float>::Zero(2, 3));
  EXPECT_THROW(mask.check("f", 3, 3), attention::ShapeError);
  EXPECT_NO_THROW(mask.check("f", 2, 3));
  EXPECT_EQ(message_of<attention::ShapeError>([&] { mask.check("f", 3, 3); }),
            "attention::f: bias mask rows() (= 2) must equal number of queries (= 3)");
}

TEST(MaskShapes, BiasMaskColsMustEqualNumberOfKeys) {
  const auto mask = attention::bias(Matrix<float>::Zero(2, 3));
  EXPECT_THROW(mask.check("f", 2, 4), attention::ShapeError);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { mask.check("f", 2, 4); }),
            "attention::f: bias mask cols() (= 3) must equal number of keys (= 4)");
}

}  // namespace
