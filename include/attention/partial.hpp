#pragma once
// SPDX-License-Identifier: MIT
//
// Attention over a part of the keys, and how to combine parts. For keys split into disjoint sets
// A and B, with lse the log-sum-exp of a row's scaled, masked scores over a set:
//   lse_{A u B} = log(exp(lse_A) + exp(lse_B))
//   out_{A u B} = (exp(lse_A) out_A + exp(lse_B) out_B) / exp(lse_{A u B})
// (computed with the larger lse subtracted first, as in a stable softmax). This is how a long key
// sequence is split across threads or devices and how a decoder combines a cached prefix with new
// tokens (Dao et al., FlashAttention / "flash-decoding"; Rabe & Staats, 2021).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/errors.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/low_precision.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention {

/// Attention over some of the keys: `output` (L x d_v) is normalised over those keys alone, and
/// `lse` (L) is each row's log-sum-exp of the scaled, masked scores over them; -inf for a row that
/// sees none of them, whose output row is 0. Scalar is q's type; lse is in compute_type_t<Scalar>:
/// float for Eigen::bfloat16 and Eigen::half (low_precision.hpp), Scalar otherwise.
template <typename Scalar>
struct PartialAttention {
  Matrix<Scalar> output;  ///< L x d_v, normalised over these keys
  /// L: log-sum-exp per row, -inf if it sees none
  Eigen::Matrix<compute_type_t<Scalar>, Eigen::Dynamic, 1> lse;
};

/// scaled_dot_product_attention that also returns each row's log-sum-exp (see PartialAttention).
/// Same arguments, shapes and exceptions as scaled_dot_product_attention.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] PartialAttention<typename DerivedQ::Scalar> scaled_dot_product_attention_lse(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Mask& mask = {}, const Options& options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  PartialAttention<Scalar> result{
      Matrix<Scalar>(q.rows(), v.cols()),
      Eigen::Matrix<compute_type_t<Scalar>, Eigen::Dynamic, 1>(q.rows())};
  detail::attention_with_lse("scaled_dot_product_attention_lse", q, k, v, result.output,
                             result.lse.data(), mask, options);
  return result;
}

/// Combines attention over two disjoint sets of keys into attention over their union (formula at
/// the top of this header); merge(a, b) and merge(b, a) give the same result. A part in which a
/// row sees no key (lse = -inf) contributes nothing to that row, and neither does a part whose
/// weight exp(lse_part - lse_union) is exactly 0 (an underflow): as in one call, a NaN or inf in
/// its output does not reach the row. A row that sees no key in either part stays 0 with lse
/// -inf. A NaN lse (a NaN key the row sees) makes the row's output and lse NaN, as one call over
/// all the keys does. For Eigen::bfloat16 and Eigen::half outputs the combination is computed in
/// float and rounded once.
/// \throws ShapeError unless a and b have the same numbers of rows and columns.
template <typename Scalar>
[[nodiscard]] PartialAttention<Scalar> merge(const PartialAttention<Scalar>& a,
                                             const PartialAttention<Scalar>& b) {
  constexpr const char* func = "merge";
  detail::require_equal(func, "b.output.rows()", b.output.rows(), "a.output.rows()",
                        a.output.rows());
  detail::require_equal(func, "b.output.cols()", b.output.cols(), "a.output.cols()",
                        a.output.cols());
  detail::require_equal(func, "a.lse.size()", a.lse.size(), "a.output.rows()", a.output.rows());
  detail::require_equal(func, "b.lse.size()", b.lse.size(), "b.output.rows()", b.output.rows());
  using Compute = compute_type_t<Scalar>;  // float for bfloat16 and half outputs
  PartialAttention<Scalar> merged{Matrix<Scalar>(a.output.rows(), a.output.cols()),
                                  Eigen::Matrix<Compute, Eigen::Dynamic, 1>(a.lse.size())};
  RowVector<Compute> row(a.output.cols());
  for (Index i = 0; i < a.output.rows(); ++i) {
    // The merge rule of kernels/online_softmax.hpp on two normalised parts, states (lse, 1):
    // coefficients exp(lse_c - M) / (exp(lse_a - M) + exp(lse_b - M)), M the larger lse.
    using State = detail::kernels::OnlineSoftmax<Compute>;
    const State parts[2] = {State::from_lse(a.lse(i)), State::from_lse(b.lse(i))};
    const Matrix<Scalar>* outputs[2] = {&a.output, &b.output};
    row.setZero();
    merged.lse(i) = detail::kernels::merge_parts<Compute>(
                        2, [&](Index c) { return parts[c]; },
                        [&](Index c, Compute coefficient) {
                          row += coefficient * outputs[c]->row(i).template cast<Compute>();
                        })
                        .lse();
    merged.output.row(i) = row.template cast<Scalar>();
  }
  return merged;
}

}  // namespace attention
