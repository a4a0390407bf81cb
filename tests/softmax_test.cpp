// SPDX-License-Identifier: MIT
// Tests for attention/softmax.hpp: softmax_rows, both forms, against the long-double reference.

// The no-allocation test needs Eigen's run-time malloc check, which reports through eigen_assert.
// Making eigen_assert throw (as Eigen's own test/main.h does) turns a violation into one failed
// test, also in Release builds, where the default eigen_assert is compiled out.
#include <stdexcept>
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x)                                             \
  do {                                                              \
    if (!(x)) throw std::runtime_error("eigen_assert failed: " #x); \
  } while (false)

#include <gtest/gtest.h>

#include <attention/softmax.hpp>
#include <cmath>
#include <limits>
#include <tuple>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/scalars.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;

template <typename Scalar>
using ColMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

template <typename Scalar>
class SoftmaxRows : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxRows, support::AllScalars, support::ScalarNames);

// Logits of order 3 (random_matrix * 3), so weights range over several orders of magnitude.
template <typename T>
Matrix<T> logits(Index rows, Index cols, unsigned seed) {
  return support::random_matrix<T>(rows, cols, seed) * T(3);
}

TYPED_TEST(SoftmaxRows, MatchesReference) {
  using T = TypeParam;
  // One entry, one row, one column, and widths around the SIMD width (4 floats, 2 doubles with
  // SSE2; 8 / 4 with AVX; 16 / 8 with AVX-512) so both the vector loop and its tail run.
  const std::tuple<Index, Index, unsigned> shapes[] = {
      {1, 1, 1}, {1, 13, 2}, {13, 1, 3}, {7, 9, 4}, {16, 33, 5}, {3, 8, 6}, {2, 17, 7}};
  for (const auto& [rows, cols, seed] : shapes) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols);
    const Matrix<T> x = logits<T>(rows, cols, seed);
    EXPECT_TRUE(support::is_near(attention::softmax_rows(x), ref::softmax_rows(ref::to_real(x)),
                                 support::tolerance<T>()));
  }
}

TYPED_TEST(SoftmaxRows, RowsAreProbabilities) {
  using T = TypeParam;
  const Matrix<T> p = attention::softmax_rows(logits<T>(12, 21, 11));
  EXPECT_TRUE((p.array() >= T(0)).all() && (p.array() <= T(1)).all());
  EXPECT_TRUE(support::is_near(support::row_sums(p), Eigen::VectorXd::Ones(12).cast<long double>(),
                               support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, SingleColumnGivesWeightExactlyOne) {
  using T = TypeParam;
  const Matrix<T> p = attention::softmax_rows(logits<T>(5, 1, 12));
  for (Index i = 0; i < p.rows(); ++i) EXPECT_EQ(p(i, 0), T(1));
}

TYPED_TEST(SoftmaxRows, ShiftInvariant) {
  // softmax(x + c) = softmax(x) for a constant c per row: exp(c) cancels in the ratio.
  using T = TypeParam;
  const Matrix<T> x = logits<T>(4, 10, 13);
  Matrix<T> shifted = x;
  for (Index i = 0; i < x.rows(); ++i) shifted.row(i).array() += T(10 * (i + 1));
  EXPECT_TRUE(support::is_near(attention::softmax_rows(shifted), attention::softmax_rows(x),
                               support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, OutputOverloadMatchesAllocatingOverload) {
  using T = TypeParam;
  const Matrix<T> x = logits<T>(6, 11, 14);
  Matrix<T> out(6, 11);
  attention::softmax_rows(x, out);
  EXPECT_TRUE(support::is_near(out, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, InPlace) {
  using T = TypeParam;
  const Matrix<T> x = logits<T>(6, 11, 15);
  Matrix<T> s = x;
  attention::softmax_rows(s, s);
  EXPECT_TRUE(support::is_near(s, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, WritesIntoBlockAndNothingElse) {
  using T = TypeParam;
  const Matrix<T> x = logits<T>(4, 5, 16);
  Matrix<T> buffer = Matrix<T>::Constant(7, 9, T(42));
  attention::softmax_rows(x, buffer.block(2, 3, 4, 5));
  EXPECT_TRUE(support::is_near(buffer.block(2, 3, 4, 5), ref::softmax_rows(ref::to_real(x)),
                               support::tolerance<T>()));
  // 63 entries, 20 written: the other 43 still hold the sentinel.
  EXPECT_EQ((buffer.array() == T(42)).count(), 43);
}

TYPED_TEST(SoftmaxRows, InPlaceOnBlock) {
  using T = TypeParam;
  const Matrix<T> x = logits<T>(4, 5, 17);
  Matrix<T> buffer = Matrix<T>::Constant(7, 9, T(42));
  buffer.block(1, 2, 4, 5) = x;
  attention::softmax_rows(buffer.block(1, 2, 4, 5), buffer.block(1, 2, 4, 5));
  EXPECT_TRUE(support::is_near(buffer.block(1, 2, 4, 5), ref::softmax_rows(ref::to_real(x)),
                               support::tolerance<T>()));
  EXPECT_EQ((buffer.array() == T(42)).count(), 43);
}

TYPED_TEST(SoftmaxRows, OutputOverlappingTheInputByAllButOneRow) {
  // x = rows 0..4 of a buffer, out = rows 1..5: writing out's row i overwrites x's row i + 1
  // before it is read, unless x is copied first.
  using T = TypeParam;
  Matrix<T> buffer = logits<T>(6, 7, 22);
  const Matrix<T> x = buffer.topRows(5);
  attention::softmax_rows(buffer.topRows(5), buffer.bottomRows(5));
  EXPECT_TRUE(support::is_near(buffer.bottomRows(5), ref::softmax_rows(ref::to_real(x)),
                               support::tolerance<T>()));
  buffer = logits<T>(6, 7, 23);
  const Matrix<T> x_low = buffer.bottomRows(5);
  attention::softmax_rows(buffer.bottomRows(5), buffer.topRows(5));
  EXPECT_TRUE(support::is_near(buffer.topRows(5), ref::softmax_rows(ref::to_real(x_low)),
                               support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, ColumnMajorInput) {
  using T = TypeParam;
  const Matrix<T> x = logits<T>(5, 9, 18);
  const ColMatrix<T> column_major = x;
  const auto expected = ref::softmax_rows(ref::to_real(x));
  EXPECT_TRUE(
      support::is_near(attention::softmax_rows(column_major), expected, support::tolerance<T>()));
  Matrix<T> out(5, 9);
  attention::softmax_rows(column_major, out);
  EXPECT_TRUE(support::is_near(out, expected, support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, StridedMapInput) {
  using T = TypeParam;
  // Every other entry of every other row of a 10 x 20 buffer: a 5 x 9 view with inner stride 2.
  const Matrix<T> buffer = logits<T>(10, 20, 19);
  using Strided = Eigen::Map<const Matrix<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const Strided x(buffer.data(), 5, 9, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(40, 2));
  ASSERT_EQ(x(1, 2), buffer(2, 4));
  EXPECT_TRUE(support::is_near(attention::softmax_rows(x), ref::softmax_rows(ref::to_real(x)),
                               support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, ExpressionThatReadsTheOutput) {
  // out = softmax(2 s) written into s itself: the expression must be evaluated before s changes.
  using T = TypeParam;
  const Matrix<T> x = logits<T>(4, 7, 20);
  Matrix<T> s = x;
  attention::softmax_rows(T(2) * s, s);
  const Matrix<T> doubled = T(2) * x;
  EXPECT_TRUE(
      support::is_near(s, ref::softmax_rows(ref::to_real(doubled)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, TransposeOfTheOutputAsInput) {
  // Same storage, other layout: softmax_rows(s^T, s) must not work in place on s.
  using T = TypeParam;
  const Matrix<T> x = logits<T>(6, 6, 21);
  Matrix<T> s = x;
  attention::softmax_rows(s.transpose(), s);
  const Matrix<T> transposed = x.transpose();
  EXPECT_TRUE(
      support::is_near(s, ref::softmax_rows(ref::to_real(transposed)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, LargeLogitsDoNotOverflow) {
  // Logits 1.5x the largest argument exp() accepts in T (88.7 float, 709.8 double, 11356 x87 long
  // double): a naive exp(x) / sum exp(x) overflows to inf / inf = NaN, the stable softmax does not.
  using T = TypeParam;
  const T big = T(1.5) * std::log(std::numeric_limits<T>::max());
  Matrix<T> x(3, 6);
  x << big, big - 1, big - 2, big - 3, 0, -big,  // weights e^{-j} / sum: 0.6364, 0.2341, ...
      -big, -big + 1, -big, -big, -big, -big,    // all tiny: naive gives 0 / 0
      big, big, big, big, big, big;              // uniform 1/6
  Matrix<T> naive = x.array().exp().matrix();
  for (Index i = 0; i < x.rows(); ++i) naive.row(i) /= naive.row(i).sum();
  ASSERT_FALSE(naive.allFinite()) << "the inputs should be large enough to break a naive softmax";

  const Matrix<T> p = attention::softmax_rows(x);
  EXPECT_TRUE(p.allFinite());
  EXPECT_TRUE(support::is_near(p, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
  // Row 0 by hand: e^{-j} / (1 + e^{-1} + e^{-2} + e^{-3}) = 0.64391426, 0.23688282, 0.08714432,
  // 0.03205860 for j = 0..3 (mpmath, 16 digits below), and 0 for the last two: exp(-big) and
  // exp(-2 big) underflow in every type.
  const Eigen::Matrix<long double, 1, 6> row0{
      0.6439142598879723L, 0.2368828180899101L, 0.08714431874203257L, 0.03205860328008499L, 0, 0};
  EXPECT_TRUE(support::is_near(p.row(0), row0, 1e-6L));
  for (Index j = 0; j < 6; ++j) EXPECT_NEAR(static_cast<double>(p(2, j)), 1.0 / 6.0, 1e-6);
}

TYPED_TEST(SoftmaxRows, AllMinusInfinityRowBecomesZeros) {
  using T = TypeParam;
  Matrix<T> x = logits<T>(3, 11, 22);
  x.row(1).setConstant(-std::numeric_limits<T>::infinity());
  const Matrix<T> p = attention::softmax_rows(x);
  for (Index j = 0; j < x.cols(); ++j) EXPECT_EQ(p(1, j), T(0)) << "column " << j;
  EXPECT_TRUE(support::is_near(p, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, MinusInfinityEntriesGetWeightExactlyZero) {
  // -inf at positions that land in SIMD packets and in the scalar tail alike. A vectorised exp()
  // clamps its argument and would return a tiny denormal for exp(-inf); the weight must be 0.0.
  using T = TypeParam;
  Matrix<T> x = logits<T>(2, 19, 23);
  const Index masked[] = {0, 3, 4, 7, 8, 9, 10, 11, 15, 17, 18};
  for (const Index j : masked) x(0, j) = x(1, 18 - j) = -std::numeric_limits<T>::infinity();
  const Matrix<T> p = attention::softmax_rows(x);
  for (const Index j : masked) {
    EXPECT_EQ(p(0, j), T(0)) << "column " << j;
    EXPECT_EQ(p(1, 18 - j), T(0)) << "column " << 18 - j;
    EXPECT_EQ(std::fpclassify(p(0, j)), FP_ZERO);
  }
  EXPECT_TRUE(support::is_near(p, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(support::row_sums(p), Eigen::VectorXd::Ones(2).cast<long double>(),
                               support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, NaNMakesOnlyItsRowNaN) {
  using T = TypeParam;
  Matrix<T> x = logits<T>(4, 9, 24);
  x(1, 5) = std::numeric_limits<T>::quiet_NaN();
  x(2, 0) = -std::numeric_limits<T>::infinity();  // -inf elsewhere is not NaN
  const Matrix<T> p = attention::softmax_rows(x);
  EXPECT_TRUE(p.row(1).array().isNaN().all()) << p;
  EXPECT_TRUE(p.row(0).allFinite() && p.row(2).allFinite() && p.row(3).allFinite()) << p;
  EXPECT_TRUE(support::is_near(p, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRows, PlusInfinityMakesOnlyItsRowNaN) {
  // +inf - max = inf - inf = NaN: the row has no meaningful distribution.
  using T = TypeParam;
  Matrix<T> x = logits<T>(3, 9, 25);
  x(2, 3) = std::numeric_limits<T>::infinity();
  const Matrix<T> p = attention::softmax_rows(x);
  EXPECT_TRUE(p.row(2).array().isNaN().all()) << p;
  EXPECT_TRUE(p.topRows(2).allFinite()) << p;
  EXPECT_TRUE(support::is_near(p, ref::softmax_rows(ref::to_real(x)), support::tolerance<T>()));
}

TEST(SoftmaxRows, OutputOverloadAllocatesNothing) {
  // Documented: no allocation when x is a row-major matrix or view (here also in place and into a
  // block). Eigen's EIGEN_RUNTIME_NO_MALLOC check throws (see the top of this file) if one happens.
  const Matrix<double> x = logits<double>(6, 13, 26);
  Matrix<double> out(6, 13), s = x, buffer = Matrix<double>::Zero(8, 20), part(3, 13);
  Eigen::internal::set_is_malloc_allowed(false);
  EXPECT_NO_THROW(attention::softmax_rows(x, out));
  EXPECT_NO_THROW(attention::softmax_rows(s, s));
  EXPECT_NO_THROW(attention::softmax_rows(x, buffer.block(1, 2, 6, 13)));
  EXPECT_NO_THROW(attention::softmax_rows(x.middleRows(1, 3), part));
  Eigen::internal::set_is_malloc_allowed(true);
  const auto expected = ref::softmax_rows(ref::to_real(x));
  EXPECT_TRUE(support::is_near(out, expected, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(s, expected, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(buffer.block(1, 2, 6, 13), expected, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(part, ref::rows(expected, 1, 3), support::tolerance<double>()));
}

TEST(SoftmaxRows, MallocCheckIsActive) {
  // Guards the test above: a forbidden allocation must be detected, or that test proves nothing.
  Eigen::internal::set_is_malloc_allowed(false);
  EXPECT_THROW((void)Matrix<double>(4, 4), std::runtime_error);
  Eigen::internal::set_is_malloc_allowed(true);
}

TEST(SoftmaxRows, ThrowsWhenOutHasOtherRowCount) {
  const Matrix<double> x = Matrix<double>::Zero(3, 4);
  Matrix<double> out(2, 4);
  EXPECT_THROW(attention::softmax_rows(x, out), attention::ShapeError);
}

TEST(SoftmaxRows, ThrowsWhenOutHasOtherColumnCount) {
  const Matrix<double> x = Matrix<double>::Zero(3, 4);
  Matrix<double> out(3, 5);
  EXPECT_THROW(attention::softmax_rows(x, out), attention::ShapeError);
}

TEST(SoftmaxRows, ShapeErrorNamesFunctionArgumentsAndSizes) {
  const Matrix<double> x = Matrix<double>::Zero(3, 4);
  Matrix<double> out(3, 5);
  try {
    attention::softmax_rows(x, out);
    FAIL() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_STREQ(e.what(), "attention::softmax_rows: out.cols() (= 5) must equal x.cols() (= 4)");
  }
}

}  // namespace
