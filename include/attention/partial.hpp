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
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention {

/// Attention over some of the keys: `output` (L x d_v) is normalised over those keys alone, and
/// `lse` (L) is each row's log-sum-exp of the scaled, masked scores over them; -inf for a row that
/// sees none of them, whose output row is 0.
template <typename Scalar>
struct PartialAttention {
  Matrix<Scalar> output;
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> lse;
};

/// scaled_dot_product_attention that also returns each row's log-sum-exp (see PartialAttention).
/// Same arguments, shapes and exceptions as scaled_dot_product_attention.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] PartialAttention<typename DerivedQ::Scalar> scaled_dot_product_attention_lse(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Mask& mask = {}, const Options& options = {}) {
  PartialAttention<typename DerivedQ::Scalar> result{
      Matrix<typename DerivedQ::Scalar>(q.rows(), v.cols()),
      Eigen::Matrix<typename DerivedQ::Scalar, Eigen::Dynamic, 1>(q.rows())};
  detail::attention_with_lse("scaled_dot_product_attention_lse", q, k, v, result.output,
                             result.lse.data(), mask, options);
  return result;
}

/// Combines attention over two disjoint sets of keys into attention over their union (formula at
/// the top of this header). A part in which a row sees no key (lse = -inf) contributes nothing to
/// that row; a row that sees no key in either part stays 0 with lse -inf.
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
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  PartialAttention<Scalar> merged{Matrix<Scalar>(a.output.rows(), a.output.cols()),
                                  Eigen::Matrix<Scalar, Eigen::Dynamic, 1>(a.lse.size())};
  for (Index i = 0; i < a.output.rows(); ++i) {
    const Scalar m = std::max(a.lse(i), b.lse(i));
    if (m == minus_inf) {
      merged.output.row(i).setZero();
      merged.lse(i) = minus_inf;
      continue;
    }
    // Weights relative to the larger part: one of them is exp(0) = 1, so nothing overflows, and a
    // part with lse = -inf gets weight exactly 0.
    const Scalar wa = std::exp(a.lse(i) - m), wb = std::exp(b.lse(i) - m);
    const Scalar total = wa + wb;
    merged.output.row(i) = (wa / total) * a.output.row(i) + (wb / total) * b.output.row(i);
    merged.lse(i) = m + std::log(total);
  }
  return merged;
}

}  // namespace attention
