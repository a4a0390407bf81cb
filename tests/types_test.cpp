// SPDX-License-Identifier: MIT
// Tests for attention/types.hpp: the matrix aliases and what binds to the Ref views.

#include <gtest/gtest.h>

#include <attention/types.hpp>
#include <type_traits>

namespace types_test {
namespace {

using attention::ConstMatrixRef;
using attention::Matrix;
using attention::MatrixRef;

static_assert(std::is_same_v<Matrix<float>, attention::RowMatrixXf>);
static_assert(std::is_same_v<Matrix<double>, attention::RowMatrixXd>);
static_assert(std::is_same_v<Matrix<long double>, attention::RowMatrixXld>);
static_assert(std::is_same_v<attention::RowMatrix<double>, Matrix<double>>);
static_assert(Matrix<double>::IsRowMajor, "one token per row, stored row-major");
static_assert(attention::RowVector<float>::RowsAtCompileTime == 1);
static_assert(std::is_same_v<attention::Index, Eigen::Index>);
static_assert(std::is_signed_v<attention::Index>);

/// Whether a MatrixRef parameter points at `data`, i.e. viewed the argument without a copy.
bool views(MatrixRef<double> m, const double* data) { return m.data() == data; }
bool views_const(const ConstMatrixRef<double>& m, const double* data) { return m.data() == data; }

TEST(MatrixRef, BindsToBlocksWithoutCopying) {
  const attention::Index stride = 8;
  Matrix<double> m = Matrix<double>::Zero(6, stride);
  EXPECT_TRUE(views(m, m.data()));
  EXPECT_TRUE(views(m.middleRows(2, 3), m.data() + 2 * stride));
  // A head's columns: a view with row stride 8.
  EXPECT_TRUE(views(m.middleCols(4, 2), m.data() + 4));
  EXPECT_TRUE(views(m.block(1, 2, 3, 4), m.data() + stride + 2));
}

TEST(MatrixRef, WritesThroughToTheBlock) {
  Matrix<double> m = Matrix<double>::Zero(3, 4);
  MatrixRef<double> view = m.middleCols(1, 2);
  view.setConstant(7);
  EXPECT_EQ(m(0, 0), 0.0);
  EXPECT_EQ(m(2, 1), 7.0);
  EXPECT_EQ(m(2, 2), 7.0);
  EXPECT_EQ(m(2, 3), 0.0);
}

TEST(ConstMatrixRef, ViewsRowMajorDataAndCopiesColumnMajorData) {
  const Matrix<double> row_major = Matrix<double>::Ones(3, 4);
  const Eigen::MatrixXd column_major = Eigen::MatrixXd::Ones(3, 4);
  EXPECT_TRUE(views_const(row_major, row_major.data()));
  EXPECT_TRUE(views_const(row_major.middleCols(1, 2), row_major.data() + 1));
  EXPECT_FALSE(views_const(column_major, column_major.data()));  // evaluated into a temporary
}

}  // namespace
}  // namespace types_test
