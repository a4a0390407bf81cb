// SPDX-License-Identifier: MIT
// Tests for softmax_rows_backward (attention/softmax.hpp): worked example, finite differences in
// double and long double, masked entries and rows, both forms, in place, no allocation, shapes.

// The no-allocation test needs Eigen's run-time malloc check, which reports through eigen_assert;
// a throwing eigen_assert makes a violation one failed test, also in Release builds.
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
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
using attention::Matrix;

template <typename Scalar>
class SoftmaxRowsBackward : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(SoftmaxRowsBackward, Scalars, support::ScalarNames);

// The types the finite-difference checks run in (float's eps is too coarse for them).
template <typename Scalar>
class SoftmaxRowsBackwardGradient : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(SoftmaxRowsBackwardGradient, CheckScalars, support::ScalarNames);

// dX = Y ∘ (dY − rowsum(dY ∘ Y)) written out with loops, in long double.
template <typename Scalar>
Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> plain_backward(
    const Matrix<Scalar>& y, const Matrix<Scalar>& dy) {
  Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> dx(y.rows(), y.cols());
  for (Index i = 0; i < y.rows(); ++i) {
    long double dot = 0;
    for (Index j = 0; j < y.cols(); ++j) dot += static_cast<long double>(y(i, j)) * dy(i, j);
    for (Index j = 0; j < y.cols(); ++j) dx(i, j) = y(i, j) * (dy(i, j) - dot);
  }
  return dx;
}

// x = [0, ln 2]: y = softmax(x) = [1/3, 2/3]. dy = [1, 0]: rowsum(dy ∘ y) = 1/3, so
// dx = [1/3 (1 − 1/3), 2/3 (0 − 1/3)] = [2/9, −2/9].
TEST(SoftmaxRowsBackward, WorkedExampleTwoEntries) {
  Matrix<double> x(1, 2), dy(1, 2);
  x << 0, std::log(2.0);
  dy << 1, 0;
  const Matrix<double> y = attention::softmax_rows(x);
  EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y, dy),
                               Matrix<double>{{2.0 / 9.0, -2.0 / 9.0}}, 1e-15));
}

TYPED_TEST(SoftmaxRowsBackward, MatchesFormulaWrittenAsLoops) {
  using T = TypeParam;
  for (const auto& [rows, cols] : {std::pair<Index, Index>{1, 1}, {1, 13}, {7, 9}, {16, 33}}) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols);
    const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(rows, cols, 11) * T(3));
    const Matrix<T> dy = support::random_matrix<T>(rows, cols, 12);
    EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y, dy), plain_backward(y, dy),
                                 support::tolerance<T>()));
  }
}

// softmax is invariant to adding c to a row, so dx is orthogonal to (1, ..., 1): rows sum to 0.
TYPED_TEST(SoftmaxRowsBackward, RowsOfGradientSumToZero) {
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(6, 10, 13) * T(2));
  const Matrix<T> dx = attention::softmax_rows_backward(y, support::random_matrix<T>(6, 10, 14));
  const auto sums = support::row_sums(dx);
  for (Index i = 0; i < sums.size(); ++i)
    EXPECT_NEAR(double(sums(i)), 0.0, 4 * double(support::tolerance<T>()));
}

// A one-column softmax is the constant 1, whatever x: its gradient is exactly 0.
TYPED_TEST(SoftmaxRowsBackward, SingleColumnHasZeroGradient) {
  using T = TypeParam;
  const Matrix<T> y = Matrix<T>::Ones(5, 1);
  const Matrix<T> dx = attention::softmax_rows_backward(y, support::random_matrix<T>(5, 1, 15));
  EXPECT_TRUE((dx.array() == T(0)).all()) << dx;
}

TYPED_TEST(SoftmaxRowsBackward, MaskedEntriesAndFullyMaskedRowsGetExactlyZero) {
  using T = TypeParam;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  Matrix<T> x = support::random_matrix<T>(3, 5, 16);
  x(0, 1) = x(0, 4) = minus_inf;    // two masked keys
  x.row(2).setConstant(minus_inf);  // every key masked
  const Matrix<T> y = attention::softmax_rows(x);
  const Matrix<T> dx = attention::softmax_rows_backward(y, support::random_matrix<T>(3, 5, 17));
  EXPECT_FALSE(dx.array().isNaN().any()) << dx;
  EXPECT_EQ(dx(0, 1), T(0));
  EXPECT_EQ(dx(0, 4), T(0));
  EXPECT_TRUE((dx.row(2).array() == T(0)).all()) << dx;
}

// A NaN or inf in dy where y = 0 (a masked key) takes no part: it is not 0 * NaN = NaN.
TYPED_TEST(SoftmaxRowsBackward, NonFiniteDyAtZeroWeightTakesNoPart) {
  using T = TypeParam;
  Matrix<T> x = support::random_matrix<T>(2, 4, 18);
  x(0, 1) = -std::numeric_limits<T>::infinity();
  const Matrix<T> y = attention::softmax_rows(x);
  const Matrix<T> dy = support::random_matrix<T>(2, 4, 19);
  Matrix<T> poisoned = dy;
  poisoned(0, 1) = std::numeric_limits<T>::quiet_NaN();
  EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y, poisoned),
                               attention::softmax_rows_backward(y, dy), 0));
  poisoned(0, 1) = std::numeric_limits<T>::infinity();
  EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y, poisoned),
                               attention::softmax_rows_backward(y, dy), 0));
}

// loss(x) = sum(dy ∘ softmax_rows(x)): dloss/dx = softmax_rows_backward(softmax_rows(x), dy).
// Logits of order 3, a masked entry and a fully masked row (whose numerical derivative is 0 too).
TYPED_TEST(SoftmaxRowsBackwardGradient, MatchesFiniteDifferences) {
  using T = TypeParam;
  for (const auto& [rows, cols] : {std::pair<Index, Index>{1, 1}, {1, 7}, {4, 9}, {9, 4}}) {
    SCOPED_TRACE(::testing::Message() << rows << " x " << cols);
    Matrix<T> x = support::random_matrix<T>(rows, cols, 21) * T(3);
    if (cols > 2) x(0, 2) = -std::numeric_limits<T>::infinity();
    if (rows > 2) x.row(rows - 1).setConstant(-std::numeric_limits<T>::infinity());
    const Matrix<T> dy = support::random_matrix<T>(rows, cols, 22);
    const Matrix<T> dx = attention::softmax_rows_backward(attention::softmax_rows(x), dy);
    const auto loss = [&] { return support::weighted_sum(dy, attention::softmax_rows(x)); };
    EXPECT_TRUE(support::gradient_matches(loss, x, dx, support::gradient_bound<T>()));
  }
}

TYPED_TEST(SoftmaxRowsBackward, OutputOverloadMatchesAllocatingOverload) {
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(4, 6, 31));
  const Matrix<T> dy = support::random_matrix<T>(4, 6, 32);
  Matrix<T> dx(4, 6);
  attention::softmax_rows_backward(y, dy, dx);
  EXPECT_TRUE(support::is_near(dx, attention::softmax_rows_backward(y, dy), 0));
}

TYPED_TEST(SoftmaxRowsBackward, OutputOverlappingDyByAllButOneRow) {
  // dy = rows 1..4 of a buffer, dx = rows 0..3: a row of dx would overwrite dy's next row before
  // it is read (and with dx one row below, the row just written), unless dX goes to a temporary.
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(4, 6, 35));
  Matrix<T> buffer = support::random_matrix<T>(5, 6, 36);
  const Matrix<T> dy = buffer.bottomRows(4);
  attention::softmax_rows_backward(y, buffer.bottomRows(4), buffer.topRows(4));
  EXPECT_TRUE(support::is_near(buffer.topRows(4), plain_backward(y, dy), support::tolerance<T>()));
  buffer = support::random_matrix<T>(5, 6, 37);
  const Matrix<T> dy_top = buffer.topRows(4);
  attention::softmax_rows_backward(y, buffer.topRows(4), buffer.bottomRows(4));
  EXPECT_TRUE(
      support::is_near(buffer.bottomRows(4), plain_backward(y, dy_top), support::tolerance<T>()));
}

TYPED_TEST(SoftmaxRowsBackward, InPlaceOverDyAndOverY) {
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(4, 6, 33));
  const Matrix<T> dy = support::random_matrix<T>(4, 6, 34);
  const Matrix<T> expected = attention::softmax_rows_backward(y, dy);
  Matrix<T> buffer = dy;
  attention::softmax_rows_backward(y, buffer, buffer);
  EXPECT_TRUE(support::is_near(buffer, expected, 0));
  buffer = y;
  attention::softmax_rows_backward(buffer, dy, buffer);
  EXPECT_TRUE(support::is_near(buffer, expected, 0));
}

TYPED_TEST(SoftmaxRowsBackward, WritesIntoBlockAndNothingElse) {
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(3, 5, 35));
  const Matrix<T> dy = support::random_matrix<T>(3, 5, 36);
  Matrix<T> big = Matrix<T>::Constant(7, 9, T(42));
  attention::softmax_rows_backward(y, dy, big.block(2, 3, 3, 5));
  EXPECT_TRUE(support::is_near(big.block(2, 3, 3, 5), attention::softmax_rows_backward(y, dy), 0));
  big.block(2, 3, 3, 5).setConstant(T(42));
  EXPECT_TRUE((big.array() == T(42)).all());
}

TYPED_TEST(SoftmaxRowsBackward, ColumnMajorAndExpressionInputs) {
  using T = TypeParam;
  const Matrix<T> y = attention::softmax_rows(support::random_matrix<T>(5, 4, 37));
  const Matrix<T> dy = support::random_matrix<T>(5, 4, 38);
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> y_col = y, dy_col = dy;
  const Matrix<T> expected = attention::softmax_rows_backward(y, dy);
  EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y_col, dy_col), expected, 0));
  EXPECT_TRUE(support::is_near(attention::softmax_rows_backward(y, dy * T(1)), expected, 0));
}

TEST(SoftmaxRowsBackward, OutputOverloadAllocatesNothing) {
  const Matrix<double> y = attention::softmax_rows(support::random_matrix<double>(4, 8, 39));
  const Matrix<double> dy = support::random_matrix<double>(4, 8, 40);
  Matrix<double> dx(4, 8);
  Eigen::internal::set_is_malloc_allowed(false);
  attention::softmax_rows_backward(y, dy, dx);
  attention::softmax_rows_backward(y, dx, dx);  // in place
  Eigen::internal::set_is_malloc_allowed(true);
  EXPECT_FALSE(dx.array().isNaN().any());
}

TEST(SoftmaxRowsBackward, ThrowsWhenDyHasOtherShape) {
  const Matrix<double> y = Matrix<double>::Constant(2, 3, 1.0 / 3);
  EXPECT_THROW((void)attention::softmax_rows_backward(y, Matrix<double>::Zero(3, 3)),
               attention::ShapeError);
  EXPECT_THROW((void)attention::softmax_rows_backward(y, Matrix<double>::Zero(2, 4)),
               attention::ShapeError);
}

TEST(SoftmaxRowsBackward, ThrowsWhenDxHasOtherShape) {
  const Matrix<double> y = Matrix<double>::Constant(2, 3, 1.0 / 3);
  Matrix<double> wrong_rows(3, 3), wrong_cols(2, 2);
  EXPECT_THROW(attention::softmax_rows_backward(y, y, wrong_rows), attention::ShapeError);
  EXPECT_THROW(attention::softmax_rows_backward(y, y, wrong_cols), attention::ShapeError);
}

TEST(SoftmaxRowsBackward, ShapeErrorNamesFunctionArgumentsAndSizes) {
  try {
    (void)attention::softmax_rows_backward(Matrix<double>::Zero(2, 3), Matrix<double>::Zero(2, 5));
    FAIL() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::softmax_rows_backward: dy.cols() (= 5) must equal y.cols() (= 3)");
  }
}

}  // namespace
