#pragma once
// SPDX-License-Identifier: MIT
//
// The online softmax of one query row, and the merge of partial results: the scalar rules, which
// do not depend on the instruction set. Every path that turns scores into an output goes through
// them -- the materialising softmax, the forward tiles, decode's chunks, the backward's
// recomputation (through the saved lse) and attention::merge -- with the vector half (the exp() of
// a row of scores, the rescale of an accumulator) in score_pipeline.hpp.
//
// Online softmax (Milakov & Gimelshein, 2018; Dao, 2023, FlashAttention-2, Alg. 1, lines 8-13),
// per query row, over tiles of scores s:
//   m_new = max(m, rowmax(s))                    running max; NaN-propagating
//   p     = exp(s - m_new)                       0 exactly where s = -inf (a masked score)
//   alpha = exp(m - m_new)                       1 when the max did not change
//   l     = alpha * l + rowsum(p)                running sum
//   o     = alpha * o + p v                      unnormalised output
//   out = o / l,  lse = m + log(l);  a row that saw no visible key has l = 0: out = 0, lse = -inf.
//
// Merge of partial results (Rabe & Staats, 2021; flash-decoding, Dao et al., 2023): parts c that
// cover disjoint sets of keys, each with its state (m_c, l_c) and normalised output
// out_c = o_c / l_c, combine into
//   M = max_c m_c,   w_c = exp(m_c - M) l_c,   l = sum_c w_c,   lse = M + log(l),
//   out = sum_c (w_c / l) out_c
// A part given by its output and lse (as PartialAttention holds it) is the state (lse, 1). The
// coefficients w_c / l sum to 1: the merged row is a convex combination of the parts' outputs, so
// it cannot overflow where the result is finite (a sum of unnormalised o_c would reach S max|v|).
// A part of weight w_c = 0 exactly (it sees no key, or its weight underflows) takes no part, so a
// NaN or inf in its output does not reach the row -- as a key of weight 0 adds nothing in one call.

#include <cmath>
#include <limits>

#include "attention/detail/row_math.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// The online softmax state of one query row (formulas at the top of this file).
template <typename Scalar>
struct OnlineSoftmax {
  static constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();

  Scalar m = minus_inf;  ///< running max of the scores seen; -inf while every one was masked
  Scalar l = Scalar(0);  ///< running sum of exp(s - m); 0 while every score was masked

  /// m_new = max(m, tile_max) (Alg. 1, line 9), the shift for the tile's exp(s - m_new).
  [[nodiscard]] Scalar max_with(Scalar tile_max) const { return max_propagate_nan(m, tile_max); }

  /// Moves the state to m_new, given tile_sum = rowsum(exp(s - m_new)) of the tile (line 9-10), and
  /// returns alpha = exp(m - m_new), the factor for the output accumulator. While nothing has been
  /// visible m and m_new are both -inf and exp(-inf - -inf) would be NaN: the state stays as it is
  /// and alpha is 1. The first visible scores (m = -inf, m_new finite or +inf) give alpha =
  /// exp(-inf) = 0 without a call of exp() (one per row of every query tile).
  Scalar absorb(Scalar m_new, Scalar tile_sum) {
    Scalar alpha(1);
    if (m_new != m) {
      // 0 when m was -inf, and then l and o are 0 anyway; a NaN m_new gives NaN either way.
      alpha = m == minus_inf && !std::isnan(m_new) ? Scalar(0) : std::exp(m - m_new);
      l *= alpha;
      m = m_new;
    }
    l += tile_sum;
    return alpha;
  }

  /// True if the row saw no visible key (l = 0): its output is 0 (line 12 would divide 0 by 0).
  [[nodiscard]] bool sees_no_key() const { return l == Scalar(0); }

  /// lse = m + log(l) (line 13); -inf for a row that saw no visible key.
  [[nodiscard]] Scalar lse() const { return sees_no_key() ? minus_inf : m + std::log(l); }

  /// The state of a normalised part, from its log-sum-exp (as PartialAttention holds it).
  [[nodiscard]] static OnlineSoftmax from_lse(Scalar lse) {
    return {lse, lse == minus_inf ? Scalar(0) : Scalar(1)};
  }
};

/// Merges `num_parts` partial states (formula at the top of this file): part(c) returns part c's
/// OnlineSoftmax; add(c, coefficient) is called, in part order, for each part of non-zero weight,
/// with the factor w_c / l of its normalised output in the merged one, out = sum_c coefficient_c
/// out_c (the caller zeroes `out` first). Returns the merged state: its lse() is the union's
/// log-sum-exp, and when no part sees a key (sees_no_key()) add is never called and out stays 0.
template <typename Scalar, typename PartAt, typename Add>
OnlineSoftmax<Scalar> merge_parts(Index num_parts, PartAt part, Add add) {
  OnlineSoftmax<Scalar> merged;
  for (Index c = 0; c < num_parts; ++c) merged.m = max_propagate_nan(merged.m, part(c).m);
  if (merged.m == OnlineSoftmax<Scalar>::minus_inf) return merged;
  // Weights relative to the largest part: the largest is exp(0) = 1, so none overflows.
  const auto weight = [&](const OnlineSoftmax<Scalar>& p) {
    return p.l == Scalar(0) ? Scalar(0) : std::exp(p.m - merged.m) * p.l;
  };
  for (Index c = 0; c < num_parts; ++c) merged.l += weight(part(c));
  for (Index c = 0; c < num_parts; ++c) {
    const Scalar w = weight(part(c));
    if (w != Scalar(0)) add(c, w / merged.l);
  }
  return merged;
}

}  // namespace attention::detail::kernels
