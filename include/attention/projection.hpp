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

#include "attention/errors.hpp"
#include "attention/types.hpp"

namespace attention {

/// y = x w + b, written into `out` (seq_len x d_out), which must not alias x, w or b.
/// \throws ShapeError if w.rows() != x.cols(), b is not 1 x w.cols(), or out has the wrong shape.
template <typename DerivedX, typename DerivedW, typename DerivedB>
void project(const Eigen::MatrixBase<DerivedX>& x, const Eigen::MatrixBase<DerivedW>& w,
             const Eigen::MatrixBase<DerivedB>& b, MatrixRef<typename DerivedX::Scalar> out) {
  static_assert(std::is_same_v<typename DerivedX::Scalar, typename DerivedW::Scalar> &&
                    std::is_same_v<typename DerivedX::Scalar, typename DerivedB::Scalar>,
                "attention::project: x, w and b must have the same scalar type");
  constexpr const char* func = "project";
  detail::require_equal(func, "w.rows()", w.rows(), "x.cols()", x.cols());
  if (b.rows() != 1) {
    detail::throw_matrix_shape_error(
        func, "b", b.rows(), b.cols(),
        "must be a row vector, 1 x w.cols() (= 1 x " + std::to_string(w.cols()) + ")");
  }
  detail::require_equal(func, "b.cols()", b.cols(), "w.cols()", w.cols());
  detail::require_equal(func, "out.rows()", out.rows(), "x.rows()", x.rows());
  detail::require_equal(func, "out.cols()", out.cols(), "w.cols()", w.cols());
  out.noalias() = x * w;
  out.rowwise() += b.row(0);
}

/// y = x w + b returned as a new row-major matrix; see the overload above.
template <typename DerivedX, typename DerivedW, typename DerivedB>
[[nodiscard]] Matrix<typename DerivedX::Scalar> project(const Eigen::MatrixBase<DerivedX>& x,
                                                        const Eigen::MatrixBase<DerivedW>& w,
                                                        const Eigen::MatrixBase<DerivedB>& b) {
  Matrix<typename DerivedX::Scalar> out(x.rows(), w.cols());
  project(x, w, b, out);
  return out;
}

}  // namespace attention
