// SPDX-License-Identifier: MIT
// Tests for attention/projection.hpp: project(), y = x w + b, against the long-double reference.

#include <gtest/gtest.h>

#include <attention/projection.hpp>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::RowVector;

template <typename T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <typename T>
class Project : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(Project, Scalars, support::ScalarNames);

TYPED_TEST(Project, MatchesReference) {
  // x: 7 tokens x 5 features, w: 5 x 3 (d_in x d_out), b: 1 x 3. Weights of variance 1/5 keep y
  // of order 1.
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(7, 5, 1);
  const Matrix<T> w = support::random_matrix<T>(5, 3, 2) * T(0.45);
  const RowVector<T> b = support::random_matrix<T>(1, 3, 3);
  const Matrix<T> y = attention::project(x, w, b);
  ASSERT_EQ(y.rows(), 7);
  ASSERT_EQ(y.cols(), 3);
  EXPECT_TRUE(support::is_near(y, ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b)),
                               support::tolerance<T>()));
}

TYPED_TEST(Project, BiasIsAddedToEveryToken) {
  // x = 0 gives y = b in every row, exactly.
  using T = TypeParam;
  const Matrix<T> w = support::random_matrix<T>(4, 6, 10);
  const RowVector<T> b = support::random_matrix<T>(1, 6, 11);
  EXPECT_TRUE(
      support::is_near(attention::project(Matrix<T>::Zero(3, 4), w, b), b.replicate(3, 1), 0));
}

TYPED_TEST(Project, IdentityWeightsAndZeroBiasGiveTheInput) {
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(5, 4, 20);
  EXPECT_TRUE(support::is_near(
      attention::project(x, Matrix<T>::Identity(4, 4), RowVector<T>::Zero(4)), x, 0));
}

TYPED_TEST(Project, NonContiguousAndColumnMajorArguments) {
  using T = TypeParam;
  const Matrix<T> x_storage = support::random_matrix<T>(9, 12, 30);
  const Matrix<T> w_storage = support::random_matrix<T>(8, 10, 31);
  const ColMatrix<T> b_storage = support::random_matrix<T>(2, 10, 32);
  const auto x = x_storage.block(1, 2, 6, 7);                      // 6 x 7, row stride 12
  const auto w = w_storage.middleRows(1, 7).leftCols(4) * T(0.4);  // an expression, 7 x 4
  const auto b = b_storage.row(1).head(4);                         // a row of a column-major matrix
  const ref::Matrix expected = ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b));
  EXPECT_TRUE(support::is_near(attention::project(x, w, b), expected, support::tolerance<T>()));
  const ColMatrix<T> x_cm = x;
  EXPECT_TRUE(support::is_near(attention::project(x_cm, w, b), expected, support::tolerance<T>()));
  // Into a block of a bigger matrix; the rest stays untouched.
  Matrix<T> buffer = Matrix<T>::Constant(8, 9, T(42));
  attention::project(x, w, b, buffer.block(1, 3, 6, 4));
  EXPECT_TRUE(support::is_near(buffer.block(1, 3, 6, 4), expected, support::tolerance<T>()));
  EXPECT_EQ((buffer.array() == T(42)).count(), 72 - 24);
}

// --- Shape checks: one test per check ---------------------------------------------------------

class ProjectShapes : public ::testing::Test {
 protected:
  const Matrix<double> x = Matrix<double>::Ones(3, 4), w = Matrix<double>::Ones(4, 2);
  const RowVector<double> b = RowVector<double>::Ones(2);
  Matrix<double> out = Matrix<double>::Zero(3, 2);
};

/// The message of the ShapeError `f` throws ("" if none).
template <typename F>
std::string shape_error_message(F&& f) {
  try {
    f();
  } catch (const attention::ShapeError& e) {
    return e.what();
  }
  return "";
}

TEST_F(ProjectShapes, AcceptsConsistentShapes) {
  EXPECT_NO_THROW(attention::project(x, w, b, out));
}

TEST_F(ProjectShapes, ThrowsWhenWeightRowsDifferFromInputWidth) {
  EXPECT_THROW((void)attention::project(x, Matrix<double>::Ones(5, 2), b), attention::ShapeError);
  EXPECT_EQ(
      shape_error_message([&] { (void)attention::project(x, Matrix<double>::Ones(5, 2), b); }),
      "attention::project: w.rows() (= 5) must equal x.cols() (= 4)");
}

TEST_F(ProjectShapes, ThrowsWhenBiasHasMoreThanOneRow) {
  EXPECT_THROW((void)attention::project(x, w, Matrix<double>::Ones(2, 2)), attention::ShapeError);
}

TEST_F(ProjectShapes, ThrowsWhenBiasLengthDiffersFromOutputWidth) {
  EXPECT_THROW((void)attention::project(x, w, RowVector<double>::Ones(3)), attention::ShapeError);
  EXPECT_EQ(
      shape_error_message([&] { (void)attention::project(x, w, RowVector<double>::Ones(3)); }),
      "attention::project: b.cols() (= 3) must equal w.cols() (= 2)");
}

TEST_F(ProjectShapes, ThrowsWhenOutHasOtherRowCount) {
  Matrix<double> wrong(2, 2);
  EXPECT_THROW(attention::project(x, w, b, wrong), attention::ShapeError);
}

TEST_F(ProjectShapes, ThrowsWhenOutHasOtherColumnCount) {
  Matrix<double> wrong(3, 4);
  EXPECT_THROW(attention::project(x, w, b, wrong), attention::ShapeError);
  EXPECT_EQ(shape_error_message([&] { attention::project(x, w, b, wrong); }),
            "attention::project: out.cols() (= 4) must equal w.cols() (= 2)");
}

}  // namespace
