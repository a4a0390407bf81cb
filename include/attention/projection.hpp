#pragma once
// SPDX-License-Identifier: MIT
//
// Linear projections, in the seeds' convention: one token per row, weights on the right,
//   y = x W + b,   x: (seq_len x d_in),  W: (d_in x d_out),  b: (1 x d_out),  y: (seq_len x d_out).
// (PyTorch's nn.Linear stores W transposed, as (d_out x d_in), and computes x W^T + b;
// MultiHeadAttention::from_pytorch converts.)

#include <Eigen/Core>
#include <string>
#include <type_traits>

#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/types.hpp"

namespace attention {

namespace detail {

/// The shape checks of project(): w is x.cols() x d_out, b is 1 x d_out, out is x.rows() x d_out.
template <typename DerivedX, typename DerivedW, typename DerivedB>
void check_projection(const Eigen::MatrixBase<DerivedX>& x, const Eigen::MatrixBase<DerivedW>& w,
                      const Eigen::MatrixBase<DerivedB>& b, Index out_rows, Index out_cols) {
  static_assert(std::is_same_v<typename DerivedX::Scalar, typename DerivedW::Scalar> &&
                    std::is_same_v<typename DerivedX::Scalar, typename DerivedB::Scalar>,
                "attention::project: x, w and b must have the same scalar type");
  constexpr const char* func = "project";
  require_equal(func, "w.rows()", w.rows(), "x.cols()", x.cols());
  if (b.rows() != 1) {
    throw_matrix_shape_error(
        func, "b", b.rows(), b.cols(),
        "must be a row vector, 1 x w.cols() (= 1 x " + std::to_string(w.cols()) + ")");
  }
  require_equal(func, "b.cols()", b.cols(), "w.cols()", w.cols());
  require_equal(func, "out.rows()", out_rows, "x.rows()", x.rows());
  require_equal(func, "out.cols()", out_cols, "w.cols()", w.cols());
}

}  // namespace detail

/// y = x w + b, written into `out` (seq_len x d_out). `out` may share memory with x, w or b (as in
/// `project(x, w, b, x)` with a square w): the result is then computed into a temporary and
/// copied. An expression argument counts as sharing memory, since it may read `out`.
/// \throws ShapeError if w.rows() != x.cols(), b is not 1 x w.cols(), or out has the wrong shape.
template <typename DerivedX, typename DerivedW, typename DerivedB>
void project(const Eigen::MatrixBase<DerivedX>& x, const Eigen::MatrixBase<DerivedW>& w,
             const Eigen::MatrixBase<DerivedB>& b, MatrixRef<typename DerivedX::Scalar> out) {
  detail::check_projection(x, w, b, out.rows(), out.cols());
  if (detail::may_overlap_any(out, x, w, b)) {
    // The product would overwrite its own operands: y = x w + b into a temporary first.
    Matrix<typename DerivedX::Scalar> y = x * w;
    y.rowwise() += b.row(0);
    out = y;
    return;
  }
  out.noalias() = x * w;
  out.rowwise() += b.row(0);
}

/// y = x w + b returned as a new row-major matrix; see the overload above.
template <typename DerivedX, typename DerivedW, typename DerivedB>
[[nodiscard]] Matrix<typename DerivedX::Scalar> project(const Eigen::MatrixBase<DerivedX>& x,
                                                        const Eigen::MatrixBase<DerivedW>& w,
                                                        const Eigen::MatrixBase<DerivedB>& b) {
  detail::check_projection(x, w, b, x.rows(), w.cols());
  Matrix<typename DerivedX::Scalar> out(x.rows(), w.cols());
  out.noalias() = x * w;  // a new matrix, which no argument can refer to
  out.rowwise() += b.row(0);
  return out;
}

}  // namespace attention
