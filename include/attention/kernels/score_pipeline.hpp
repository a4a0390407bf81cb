#pragma once
// SPDX-License-Identifier: MIT
//
// The score pipeline: what happens to a tile of scores between the product q k^T and the output,
// the same on every path (the materialising path, the forward tiles, decode, both backwards):
//
//   s = q' k^T               q' = scale * q when |scale| <= 1            ScoreRules::query_factor
//   s = scale * s            only when q was not scaled first            ScoreRules::apply
//   s = c tanh(s / c)        soft-cap (Options::softcap), before the mask
//   s = s + mask             -inf where masked, + bias (the mask protocol, masks/protocol.hpp)
//   p = exp(s - shift)       shift = the running max (forward), the saved lse (backward);
//                            0 exactly where s = -inf, and 0 for a row that sees no key exp_weights
//   online softmax           m, l, alpha, out = o / l, lse               update_row, finish_row
//
// Each rule is stated once, here or in online_softmax.hpp (its scalar half), and the kernels call
// these functions rather than restate them. This file depends on the instruction set (its row loops
// are written against Simd<Scalar>, see simd.hpp).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

template <typename Scalar>
struct ScoreRules;

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/score_pipeline.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::kernels {

/// How raw scores q k^T become the scores the softmax sees: the scale and the soft-cap of one call
/// (Options::scale, Options::softcap, resolved), and the order of the steps (top of this file).
template <typename Scalar>
struct ScoreRules {
  Scalar scale;                ///< multiplies q k^T
  Scalar softcap = Scalar(0);  ///< > 0: s = softcap * tanh(s / softcap) before the mask

  /// Scale q first: a scale of magnitude <= 1 (the default 1 / sqrt(d_k) always is) multiplies q
  /// before the product rather than the product after it. The raw dot product could overflow where
  /// the scaled score does not, and a scale of 0 would then give 0 * inf = NaN. A larger scale
  /// multiplies the scores, where multiplying q could overflow instead.
  [[nodiscard]] bool scales_queries() const { return std::abs(scale) <= Scalar(1); }
  /// The factor q is multiplied by before q k^T.
  [[nodiscard]] Scalar query_factor() const { return scales_queries() ? scale : Scalar(1); }
  /// The factor q' k^T is multiplied by afterwards; scale = query_factor() * score_factor().
  [[nodiscard]] Scalar score_factor() const { return scales_queries() ? Scalar(1) : scale; }
  [[nodiscard]] bool capped() const { return softcap > Scalar(0); }

  /// dst[0 .. d) = query_factor() * q[0 .. d) (kernels::load_query of the baseline path).
  void load_query(const Scalar* q, Index d, Scalar* dst) const {
    baseline::load_query(*this, q, d, dst);
  }

  /// True when apply() has anything to do on a tile of this visibility.
  [[nodiscard]] bool changes(TileVisibility visibility) const {
    return visibility == TileVisibility::mixed || capped() || score_factor() != Scalar(1);
  }

  /// apply_rules (score_pipeline.inc) on the baseline path: the scores the softmax sees.
  template <typename BoundMask>
  void apply(Scalar* s, Index lds, Index rows, Index cols, const BoundMask& mask, Index row0,
             Index col0, TileVisibility visibility, Scalar* cap_derivative = nullptr) const {
    baseline::apply_rules(*this, s, lds, rows, cols, mask, row0, col0, visibility, cap_derivative);
  }
};

}  // namespace attention::detail::kernels
