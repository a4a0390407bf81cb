// SPDX-License-Identifier: MIT
// Tests for attention/rope.hpp: rotary position embeddings against the long-double formula
// (support::reference::rope), and the properties that make RoPE what it is: scores depend on
// relative positions only, an offset is a shift of positions, the two layouts differ by a column
// permutation, apply_transpose is the inverse and the backward.

#include <gtest/gtest.h>

#include <attention/rope.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace rope_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::Rope;
using attention::RopeLayout;

template <typename T>
class RopeTyped : public ::testing::Test {};
using AllScalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(RopeTyped, AllScalars, support::ScalarNames);

/// Error bound of one rotated entry y = xa c - xb s (or xa s + xb c): c and s are rounded to T
/// (relative eps / 2 each), and the two products and the sum are rounded once each, so
/// |y - y_exact| <= 2 eps (|xa| + |xb|) <= 4 eps max|x| (the angle itself, computed in a wider
/// type, adds |m theta| * eps_wide, below 1e-9 for the positions used here).
template <typename T, typename Derived>
long double rotation_tolerance(const Eigen::MatrixBase<Derived>& x) {
  return 4.0L * static_cast<long double>(std::numeric_limits<T>::epsilon()) *
         static_cast<long double>(x.cwiseAbs().maxCoeff());
}

TYPED_TEST(RopeTyped, MatchesTheFormulaForBothLayoutsPartialRotaryAndOffsets) {
  using T = TypeParam;
  struct Case {
    Index rows, head_dim, rotary_dim;
    Index offset;
    double base;
  };
  const Case cases[] = {{1, 2, 2, 0, 10000.0},      {5, 8, 8, 3, 10000.0},
                        {7, 64, 64, 1000, 10000.0}, {4, 64, 32, 17, 10000.0},
                        {3, 10, 6, 0, 500000.0},    {6, 128, 128, 1000000, 500000.0},
                        {2, 16, 16, -5, 10000.0},   {3, 6, 4, (Index(1) << 24) + 3, 10000.0}};
  std::uint32_t seed = 1;
  for (const Case& c : cases) {
    for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
      const Matrix<T> x = support::random_matrix<T>(c.rows, c.head_dim, seed++);
      Matrix<T> y = x;
      Rope(c.head_dim, layout, c.base, c.rotary_dim).apply(y, c.offset);
      const ref::Matrix expected =
          ref::rope(ref::to_real(x), layout == RopeLayout::interleaved,
                    static_cast<ref::Real>(c.base), c.rotary_dim, c.offset);
      EXPECT_TRUE(support::is_near(y, expected, rotation_tolerance<T>(x)))
          << "rows " << c.rows << ", head_dim " << c.head_dim << ", rotary_dim " << c.rotary_dim
          << ", offset " << c.offset << ", layout " << static_cast<int>(layout);
    }
  }
}

// theta_0 = 1 and theta_1 = 10000^(-2/4) = 0.01; at position 1 the pairs turn by 1 and 0.01 rad.
//   interleaved, pairs (0 1) (2 3):  [1 0 | 0 1] -> [cos 1, sin 1 | -sin 0.01, cos 0.01]
//   half-split,  pairs (0 2) (1 3):  x0 = 1, x2 = 0 -> y0 = cos 1, y2 = sin 1;
//                                    x1 = 0, x3 = 1 -> y1 = -sin 0.01, y3 = cos 0.01
TEST(Rope, WorkedExampleHeadDimFourPositionOne) {
  attention::RowMatrixXd x(1, 4);
  x << 1, 0, 0, 1;
  const double c1 = 0.54030230586813972, s1 = 0.84147098480789651;
  const double c2 = 0.99995000041666528, s2 = 0.0099998333341666645;
  attention::RowMatrixXd interleaved = x, half_split = x;
  Rope(4, RopeLayout::interleaved).apply(interleaved, 1);
  Rope(4, RopeLayout::half_split).apply(half_split, 1);
  EXPECT_TRUE(support::is_near(interleaved, attention::RowMatrixXd{{c1, s1, -s2, c2}}, 1e-15));
  EXPECT_TRUE(support::is_near(half_split, attention::RowMatrixXd{{c1, -s2, s1, c2}}, 1e-15));
}

TYPED_TEST(RopeTyped, PositionZeroIsTheIdentity) {
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(1, 12, 5);
  Matrix<T> y = x;
  Rope(12, RopeLayout::half_split).apply(y, 0);
  EXPECT_TRUE(support::is_near(y, x, 0));  // cos 0 = 1 and sin 0 = 0 exactly
}

TYPED_TEST(RopeTyped, ColumnsPastTheRotaryDimensionAreUntouched) {
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(9, 20, 6);
  for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
    Matrix<T> y = x;
    Rope(20, layout, 10000.0, 8).apply(y, 4);
    EXPECT_TRUE(support::is_near(y.rightCols(12), x.rightCols(12), 0));
    EXPECT_FALSE(support::is_near(y.leftCols(8), x.leftCols(8), 1e-3));
  }
}

// The key property (Su et al., 2021, eq. 16): (R_m q) . (R_n k) = q . R_{n-m} k, a function of
// m - n only. Shifting both positions by t leaves the score unchanged, and it equals q . (k rotated
// by n - m) from the long-double formula; a different m - n gives a different score.
TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  const Index d = 64;
  const Matrix<double> q = support::random_matrix<double>(1, d, 7);
  const Matrix<double> k = support::random_matrix<double>(1, d, 8);
  for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
    const Rope rope(d, layout);
    const auto score = [&](Index m, Index n) {
      Matrix<double> qm = q, kn = k;
      rope.apply(qm, m);
      rope.apply(kn, n);
      return qm.row(0).dot(kn.row(0));
    };
    for (const Index m : {0, 3, 40}) {
      for (const Index n : {0, 5, 40}) {
        const ref::Matrix k_rel =
            ref::rope(ref::to_real(k), layout == RopeLayout::interleaved, 10000.0L, d, n - m);
        long double expected = 0;
        for (Index c = 0; c < d; ++c) expected += static_cast<long double>(q(0, c)) * k_rel(0, c);
        // |q| |k| <= 64 * 3.5^2 bounds the sum; its rounding in double stays below 1e-12.
        EXPECT_NEAR(score(m, n), static_cast<double>(expected), 1e-12) << m << ", " << n;
        EXPECT_NEAR(score(m + 100000, n + 100000), score(m, n), 1e-11) << m << ", " << n;
      }
    }
    EXPECT_GT(std::abs(score(3, 0) - score(4, 0)), 1e-3);  // positions do matter
  }
}

TYPED_TEST(RopeTyped, OffsetShiftsPositionsExactly) {
  using T = TypeParam;
  const Index offset = 37, rows = 6, d = 16;
  Matrix<T> whole = support::random_matrix<T>(offset + rows, d, 9);
  Matrix<T> tail = whole.bottomRows(rows);
  for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
    const Rope rope(d, layout);
    Matrix<T> a = whole, b = tail;
    rope.apply(a, 0);
    rope.apply(b, offset);
    EXPECT_TRUE(support::is_near(b, a.bottomRows(rows), 0));
    // Row by row, as a decoder sees its tokens one at a time.
    Matrix<T> c = tail;
    for (Index r = 0; r < rows; ++r) rope.apply(c.row(r), offset + r);
    EXPECT_TRUE(support::is_near(c, a.bottomRows(rows), 0));
  }
}

// Half-split column i is interleaved column 2i, and column i + d/2 is column 2i + 1. Reordering the
// columns that way, rotating half-split, and ordering them back equals rotating interleaved,
// bit for bit (the same products and sums).
TYPED_TEST(RopeTyped, LayoutsDifferByAColumnPermutation) {
  using T = TypeParam;
  const Index d = 12, rotary = 8;
  const Matrix<T> x = support::random_matrix<T>(5, d, 10);
  Matrix<T> permuted = x;
  for (Index i = 0; i < rotary / 2; ++i) {
    permuted.col(i) = x.col(2 * i);
    permuted.col(i + rotary / 2) = x.col(2 * i + 1);
  }
  Matrix<T> interleaved = x;
  Rope(d, RopeLayout::interleaved, 10000.0, rotary).apply(interleaved, 11);
  Rope(d, RopeLayout::half_split, 10000.0, rotary).apply(permuted, 11);
  Matrix<T> back = permuted;
  for (Index i = 0; i < rotary / 2; ++i) {
    back.col(2 * i) = permuted.col(i);
    back.col(2 * i + 1) = permuted.col(i + rotary / 2);
  }
  EXPECT_TRUE(support::is_near(back, interleaved, 0));
}

TYPED_TEST(RopeTyped, RotationPreservesEachPairsNorm) {
  using T = TypeParam;
  const Index d = 32;
  const Matrix<T> x = support::random_matrix<T>(4, d, 11);
  Matrix<T> y = x;
  const Rope rope(d, RopeLayout::half_split);
  rope.apply(y, 123);
  for (Index r = 0; r < x.rows(); ++r) {
    for (Index i = 0; i < d / 2; ++i) {
      const auto [a, b] = rope.pair_columns(i);
      const long double before =
          std::hypot(static_cast<long double>(x(r, a)), static_cast<long double>(x(r, b)));
      const long double after =
          std::hypot(static_cast<long double>(y(r, a)), static_cast<long double>(y(r, b)));
      EXPECT_NEAR(static_cast<double>(after), static_cast<double>(before),
                  static_cast<double>(rotation_tolerance<T>(x)));
    }
  }
}

TYPED_TEST(RopeTyped, ApplyTransposeUndoesApply) {
  using T = TypeParam;
  const Index d = 24;
  const Matrix<T> x = support::random_matrix<T>(5, d, 12);
  for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
    const Rope rope(d, layout, 10000.0, 16);
    Matrix<T> y = x;
    rope.apply(y, 1000);
    rope.apply_transpose(y, 1000);
    // Two rotations, each within 4 eps max|x|, and c^2 + s^2 = 1 to a few eps.
    EXPECT_TRUE(support::is_near(y, x, 2 * rotation_tolerance<T>(x)));
    // apply_transpose rotates by -(m theta): the formula at position offset -1000 ... -996.
    Matrix<T> z = x;
    rope.apply_transpose(z, 1000);
    for (Index r = 0; r < x.rows(); ++r) {
      const ref::Matrix row = ref::rope(ref::to_real(x.row(r)), layout == RopeLayout::interleaved,
                                        10000.0L, 16, -(1000 + r));
      EXPECT_TRUE(support::is_near(z.row(r), row, rotation_tolerance<T>(x)));
    }
  }
}

// y = R x is linear, so dL/dx = R^T dL/dy: apply_transpose(g) must be the gradient of
// sum(g o apply(x)) with respect to x.
TEST(Rope, ApplyTransposeIsTheBackward) {
  const Index d = 10;
  Matrix<double> x = support::random_matrix<double>(4, d, 13);
  const Matrix<double> g = support::random_matrix<double>(4, d, 14);
  for (const RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half_split}) {
    const Rope rope(d, layout, 10000.0, 8);
    const auto loss = [&] {
      Matrix<double> y = x;
      rope.apply(y, 7);
      return support::weighted_sum(g, y);
    };
    Matrix<double> dx = g;
    rope.apply_transpose(dx, 7);
    EXPECT_TRUE(support::gradient_matches(loss, x, dx, support::gradient_bound<double>()));
  }
}

TEST(Rope, OneHeadOfAWiderMatrixAndEveryHead) {
  const Index d = 8, heads = 3;
  const Matrix<float> x = support::random_matrix<float>(5, d * heads, 15);
  const Rope rope(d, RopeLayout::half_split);
  Matrix<float> one = x;
  rope.apply(one.middleCols(d, d), 2);
  EXPECT_TRUE(support::is_near(one.leftCols(d), x.leftCols(d), 0));
  EXPECT_TRUE(support::is_near(one.rightCols(d), x.rightCols(d), 0));
  Matrix<float> head = x.middleCols(d, d);
  rope.apply(head, 2);
  EXPECT_TRUE(support::is_near(one.middleCols(d, d), head, 0));

  Matrix<float> all = x;
  rope.apply_each_head(all, 2);
  for (Index h = 0; h < heads; ++h) {
    Matrix<float> expected = x.middleCols(h * d, d);
    rope.apply(expected, 2);
    EXPECT_TRUE(support::is_near(all.middleCols(h * d, d), expected, 0)) << "head " << h;
  }
  rope.apply_transpose_each_head(all, 2);
  EXPECT_TRUE(support::is_near(all, x, 2 * rotation_tolerance<float>(x)));
}

TEST(Rope, ColumnMajorMatchesRowMajor) {
  const Matrix<double> x = support::random_matrix<double>(6, 14, 16);
  Eigen::MatrixXd column_major = x;
  Matrix<double> row_major = x;
  const Rope rope(14, RopeLayout::interleaved, 10000.0, 10);
  rope.apply(column_major, 9);
  rope.apply(row_major, 9);
  EXPECT_TRUE(support::is_near(column_major, row_major, 0));
}

TEST(Rope, FrequenciesArePowersOfTheBase) {
  const Rope rope(8, RopeLayout::half_split, 10000.0, 8);
  // theta_i = 10000^(-2i/8) = 10^(-i): 1, 0.1, 0.01, 0.001.
  for (Index i = 0; i < 4; ++i) {
    EXPECT_NEAR(static_cast<double>(rope.frequency(i)), std::pow(10.0, -static_cast<double>(i)),
                1e-18);
  }
  EXPECT_EQ(rope.pair_columns(1), (std::pair<Index, Index>{1, 5}));
  EXPECT_EQ(Rope(8, RopeLayout::interleaved).pair_columns(1), (std::pair<Index, Index>{2, 3}));
}

TEST(Rope, RejectsPairIndicesOutOfRangeWithTheLibrarysMessage) {
  const Rope rope(8, RopeLayout::half_split);                  // pairs 0 .. 3
  const Rope partial(8, RopeLayout::interleaved, 10000.0, 4);  // pairs 0 .. 1
  for (const Index i : {Index(4), Index(9), Index(-1)}) {
    EXPECT_THROW((void)rope.frequency(i), std::out_of_range) << i;
    EXPECT_THROW((void)rope.pair_columns(i), std::out_of_range) << i;
  }
  EXPECT_THROW((void)partial.pair_columns(2), std::out_of_range);
  EXPECT_NO_THROW((void)partial.pair_columns(1));
  EXPECT_EQ(support::message_of<std::out_of_range>([&] { (void)rope.frequency(9); }),
            "attention::Rope::frequency: i (= 9) must be at least 0 and below rotary_dim() / 2 "
            "(= 4)");
  EXPECT_EQ(support::message_of<std::out_of_range>([&] { (void)rope.pair_columns(-1); }),
            "attention::Rope::pair_columns: i (= -1) must be at least 0 and below "
            "rotary_dim() / 2 (= 4)");
  EXPECT_EQ(support::message_of<std::out_of_range>([&] { (void)partial.frequency(2); }),
            "attention::Rope::frequency: i (= 2) must be at least 0 and below rotary_dim() / 2 "
            "(= 2)");
}

TEST(Rope, RejectsBadConfigurations) {
  EXPECT_THROW(Rope(0, RopeLayout::interleaved), attention::ShapeError);
  EXPECT_THROW(Rope(7, RopeLayout::interleaved), attention::ShapeError);  // odd, rotary = all
  EXPECT_THROW(Rope(8, RopeLayout::interleaved, 10000.0, 3), attention::ShapeError);
  EXPECT_THROW(Rope(8, RopeLayout::interleaved, 10000.0, 0), attention::ShapeError);
  EXPECT_THROW(Rope(8, RopeLayout::interleaved, 10000.0, 10), attention::ShapeError);
  EXPECT_NO_THROW(Rope(7, RopeLayout::interleaved, 10000.0, 6));  // partial rotary of an odd head
  for (const double base : {0.0, -2.0, std::numeric_limits<double>::infinity(),
                            std::numeric_limits<double>::quiet_NaN()}) {
    try {
      const Rope rope(8, RopeLayout::interleaved, base);
      ADD_FAILURE() << "base " << rope.base() << " accepted";
    } catch (const attention::ShapeError&) {
      ADD_FAILURE() << "a bad base is a value error, not a shape error";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("base (= "), std::string::npos) << e.what();
    }
  }
}

TEST(Rope, RejectsWidthMismatchWithAClearMessage) {
  const Rope rope(8, RopeLayout::half_split);
  Matrix<float> x(3, 7);
  x.setZero();
  try {
    rope.apply(x, 0);
    ADD_FAILURE() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_STREQ(e.what(), "attention::Rope::apply: x.cols() (= 7) must equal head_dim (= 8)");
  }
  EXPECT_THROW(rope.apply_transpose(x, 0), attention::ShapeError);
  Matrix<float> wide(3, 12);
  wide.setZero();
  try {
    rope.apply_each_head(wide, 0);
    ADD_FAILURE() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_STREQ(e.what(),
                 "attention::Rope::apply_each_head: head_dim (= 8) must divide x.cols() (= 12)");
  }
  Matrix<float> empty(3, 0);
  EXPECT_THROW(rope.apply_each_head(empty, 0), attention::ShapeError);
  EXPECT_THROW(rope.apply_transpose_each_head(wide, 0), attention::ShapeError);
}

TYPED_TEST(RopeTyped, LargePositionsStayAccurate) {
  using T = TypeParam;
  // At m = 10^6 the angles reach 10^6 rad; a float angle would be off by up to 0.03 rad there.
  const Matrix<T> x = support::random_matrix<T>(3, 32, 17);
  Matrix<T> y = x;
  Rope(32, RopeLayout::half_split).apply(y, 1000000);
  const ref::Matrix expected = ref::rope(ref::to_real(x), false, 10000.0L, 32, 1000000);
  EXPECT_TRUE(support::is_near(y, expected, rotation_tolerance<T>(x)));
}

}  // namespace
}  // namespace rope_test
