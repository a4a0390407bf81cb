#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <type_traits>

#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/types.hpp"

namespace attention {

/// Row-wise softmax, numerically stable (the row max is subtracted before exp()):
///   out(i, j) = exp(x(i, j) - max_k x(i, k)) / sum_k exp(x(i, k) - max_k x(i, k))
/// Each row of `out` sums to 1. A row whose entries are all -inf (every key masked) becomes a row
/// of zeros, never NaN; entries equal to -inf get weight exactly 0. A row containing NaN or +inf
/// becomes NaN (IEEE arithmetic), without affecting other rows.
///
/// `out` must have x's shape; it may be x itself (in place, no copy). If it overlaps x in another
/// way (say out = buf.middleRows(1, n), x = buf.middleRows(0, n)), x is copied first, so the
/// result is always the softmax of x as it was. Allocates nothing when x is a row-major matrix or
/// view that is `out` itself or does not overlap it (an expression is evaluated first).
/// \throws ShapeError if the shapes differ.
template <typename Derived>
void softmax_rows(const Eigen::MatrixBase<Derived>& x, MatrixRef<typename Derived::Scalar> out) {
  using Scalar = typename Derived::Scalar;
  detail::require_equal("softmax_rows", "out.rows()", out.rows(), "x.rows()", x.rows());
  detail::require_equal("softmax_rows", "out.cols()", out.cols(), "x.cols()", x.cols());
  detail::copy_unless_same(x, out);
  for (Index i = 0; i < out.rows(); ++i) {
    detail::kernels::softmax_row_in_place<Scalar>(out.data() + i * out.outerStride(), out.cols());
  }
}

/// Row-wise softmax returning a new row-major matrix; see the overload above.
template <typename Derived>
[[nodiscard]] Matrix<typename Derived::Scalar> softmax_rows(const Eigen::MatrixBase<Derived>& x) {
  Matrix<typename Derived::Scalar> out = x;
  for (Index i = 0; i < out.rows(); ++i) {
    detail::kernels::softmax_row_in_place(out.data() + i * out.cols(), out.cols());
  }
  return out;
}

// --- Backward ---------------------------------------------------------------------------------

namespace detail {

/// One row of the softmax backward, dx = y ∘ (dy − (dy · y)); dx may be y or dy (every entry is
/// read before it is written, at the same index). Entries with y = 0 take no part: their dx is 0
/// and their dy is left out of the dot product, so a NaN or inf there (say from a masked key's
/// value) reaches nothing, as 0 * NaN = NaN would.
template <typename Scalar>
void softmax_row_backward(const Scalar* y, const Scalar* dy, Scalar* dx, Index n) {
  using ConstRow = Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  const ConstRow y_row(y, n), dy_row(dy, n);
  const auto weighted = y_row != Scalar(0);
  const Scalar dot = weighted.select(y_row * dy_row, Scalar(0)).sum();  // rowsum(dY ∘ Y)
  Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(dx, n) =
      weighted.select(y_row * (dy_row - dot), Scalar(0));
}

}  // namespace detail

/// Backward of softmax_rows: given its output y = softmax_rows(x) and the gradient dy of a loss
/// with respect to y, writes the gradient with respect to x,
///   dX = Y ∘ (dY − rowsum(dY ∘ Y)),  i.e.  dx(i, j) = y(i, j) (dy(i, j) − sum_k dy(i, k) y(i, k)),
/// from the Jacobian d y(i, j) / d x(i, k) = y(i, j) (δ_jk − y(i, k)) (Bridle, 1990).
/// Differentiates `out(i, j) = exp(x(i, j) - max_k x(i, k)) / sum_k exp(...)` of softmax_rows.
/// Only y is needed, not x. An entry with y = 0 (a masked score, x = -inf) gets dx = 0 exactly and
/// its dy takes no part (even a NaN there), so a row of all-zero y (every key masked) gets a zero
/// gradient, never NaN.
///
/// y, dy and dx have one shape. `dx` may be y or dy itself (in place); if it overlaps them in
/// another way, dX is computed into a temporary and then copied, so the result is always that of
/// y and dy as they were. Allocates nothing when y and dy are row-major and dx is one of them or
/// overlaps neither (an expression or column-major input is evaluated first).
/// \throws ShapeError if the shapes differ.
template <typename DerivedY, typename DerivedDY>
void softmax_rows_backward(const Eigen::MatrixBase<DerivedY>& y,
                           const Eigen::MatrixBase<DerivedDY>& dy,
                           MatrixRef<typename DerivedY::Scalar> dx) {
  using Scalar = typename DerivedY::Scalar;
  static_assert(std::is_same_v<Scalar, typename DerivedDY::Scalar>,
                "attention::softmax_rows_backward: y and dy must have the same scalar type");
  constexpr const char* func = "softmax_rows_backward";
  detail::require_equal(func, "dy.rows()", dy.rows(), "y.rows()", y.rows());
  detail::require_equal(func, "dy.cols()", dy.cols(), "y.cols()", y.cols());
  detail::require_equal(func, "dx.rows()", dx.rows(), "y.rows()", y.rows());
  detail::require_equal(func, "dx.cols()", dx.cols(), "y.cols()", y.cols());
  const ConstMatrixRef<Scalar> y_ref(y), dy_ref(dy);
  // A row is read before it is written at the same indices, so dx may be y or dy itself; any
  // other overlap would overwrite entries still to be read.
  if ((detail::may_overlap(dx, y_ref) && !detail::same_storage(dx, y_ref)) ||
      (detail::may_overlap(dx, dy_ref) && !detail::same_storage(dx, dy_ref))) {
    Matrix<Scalar> result(dx.rows(), dx.cols());
    softmax_rows_backward(y_ref, dy_ref, result);
    dx = result;
    return;
  }
  for (Index i = 0; i < dx.rows(); ++i) {
    detail::softmax_row_backward<Scalar>(y_ref.data() + i * y_ref.outerStride(),
                                         dy_ref.data() + i * dy_ref.outerStride(),
                                         dx.data() + i * dx.outerStride(), dx.cols());
  }
}

/// Backward of softmax_rows returning dX as a new row-major matrix; see the overload above.
template <typename DerivedY, typename DerivedDY>
[[nodiscard]] Matrix<typename DerivedY::Scalar> softmax_rows_backward(
    const Eigen::MatrixBase<DerivedY>& y, const Eigen::MatrixBase<DerivedDY>& dy) {
  Matrix<typename DerivedY::Scalar> dx(y.rows(), y.cols());
  softmax_rows_backward(y, dy, dx);
  return dx;
}

}  // namespace attention
