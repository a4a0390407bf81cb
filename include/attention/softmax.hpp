#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/row_math.hpp"
#include "attention/errors.hpp"
#include "attention/types.hpp"

namespace attention {

/// Row-wise softmax, numerically stable (the row max is subtracted before exp()):
///   out(i, j) = exp(x(i, j) - max_k x(i, k)) / sum_k exp(x(i, k) - max_k x(i, k))
/// Each row of `out` sums to 1. A row whose entries are all -inf (every key masked) becomes a row of
/// zeros, never NaN; entries equal to -inf get weight exactly 0. A row containing NaN or +inf
/// becomes NaN (IEEE arithmetic), without affecting other rows.
///
/// `out` must have x's shape; it may be x itself (in place) but must not partially overlap it.
/// Allocates nothing when x is a row-major matrix or view (an expression is evaluated first). \throws ShapeError if the shapes differ.
template <typename Derived>
void softmax_rows(const Eigen::MatrixBase<Derived>& x, MatrixRef<typename Derived::Scalar> out) {
  using Scalar = typename Derived::Scalar;
  detail::require_equal("softmax_rows", "out.rows()", out.rows(), "x.rows()", x.rows());
  detail::require_equal("softmax_rows", "out.cols()", out.cols(), "x.cols()", x.cols());
  detail::copy_unless_same(x, out);
  for (Index i = 0; i < out.rows(); ++i) {
    detail::softmax_row_in_place<Scalar>(out.data() + i * out.outerStride(), out.cols());
  }
}

/// Row-wise softmax returning a new row-major matrix; see the overload above.
template <typename Derived>
[[nodiscard]] Matrix<typename Derived::Scalar> softmax_rows(const Eigen::MatrixBase<Derived>& x) {
  Matrix<typename Derived::Scalar> out = x;
  for (Index i = 0; i < out.rows(); ++i) {
    detail::softmax_row_in_place(out.data() + i * out.cols(), out.cols());
  }
  return out;
}

}  // namespace attention
