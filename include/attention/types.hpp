#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>

namespace attention {

/// Sequence data is one token per row, (seq_len x features), stored row-major: a token's features
/// are contiguous, a row softmax walks memory in order, and a head's columns `x.middleCols(h *
/// head_dim, head_dim)` are a view rather than a copy.
template <typename Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The same type under Eigen's naming (RowMatrixXf beside Eigen's MatrixXf).
template <typename Scalar>
using RowMatrix = Matrix<Scalar>;
using RowMatrixXf = Matrix<float>;         ///< Matrix<float>
using RowMatrixXd = Matrix<double>;        ///< Matrix<double>
using RowMatrixXld = Matrix<long double>;  ///< Matrix<long double>

/// A row vector, e.g. a bias added to every token: 1 x features.
template <typename Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// Writable row-major view (binds to a Matrix, a block of rows, or a block of columns), passed by
/// value.
template <typename Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;

/// Read-only row-major view. A column-major argument or an expression is evaluated into a
/// temporary.
template <typename Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;

/// Signed index type used for every size and loop counter, as in Eigen.
using Index = Eigen::Index;

}  // namespace attention
