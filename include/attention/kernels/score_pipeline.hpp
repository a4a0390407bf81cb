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

#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Largest entry of x[0 .. n), NaN if any entry is NaN, -inf if n == 0.
template <typename Scalar>
Scalar row_max(const Scalar* x, Index n) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  Scalar m = -std::numeric_limits<Scalar>::infinity();
  Index j = 0;
  if constexpr (V::vectorized) {
    if (n >= w) {
      auto m_v = V::loadu(x);
      for (j = w; j + w <= n; j += w) m_v = V::max(m_v, V::loadu(x + j));
      m = V::max_of(m_v);
    }
  }
  for (; j < n; ++j) m = max_propagate_nan(m, x[j]);
  return m;
}

/// out[j] = exp(in[j] - shift), except out[j] = 0 exactly where in[j] == -inf; returns the sum of
/// out. A shift of -inf -- the max of a row whose every score is masked, or the lse of a query that
/// sees no key -- gives a row of zeros and 0: such a row weighs nothing, rather than
/// exp(-inf - -inf) = NaN. `in` and `out` may be the same array.
///
/// The explicit zero matters: a vectorised exp clamps its argument to the smallest finite exponent,
/// so exp(-inf) comes back as a tiny positive number rather than 0, and a masked key would receive
/// a (denormal) weight instead of none.
template <typename Scalar>
Scalar exp_weights(const Scalar* in, Scalar* out, Index n, Scalar shift) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  if (shift == minus_inf) {
    std::fill(out, out + n, Scalar(0));
    return Scalar(0);
  }
  Index j = 0;
  Scalar sum = Scalar(0);
  if constexpr (V::has_exp) {
    const auto shift_v = V::broadcast(shift);
    const auto minus_inf_v = V::broadcast(minus_inf);
    auto sum_v = V::zero();
    for (; j + w <= n; j += w) {
      const auto x = V::loadu(in + j);
      const auto e = V::zero_where_equal(V::exp(V::sub(x, shift_v)), x, minus_inf_v);
      V::storeu(out + j, e);
      sum_v = V::add(sum_v, e);
    }
    sum = V::sum(sum_v);
  }
  for (; j < n; ++j) {
    const Scalar e = in[j] == minus_inf ? Scalar(0) : std::exp(in[j] - shift);
    out[j] = e;
    sum += e;
  }
  return sum;
}

/// Logit soft-capping (Gemma 2): x[j] = cap * tanh(x[j] / cap), in place, for cap > 0 (and 1 / cap
/// finite). If `derivative` is not null it receives d(cap tanh(x / cap)) / dx = 1 - tanh^2(x / cap)
/// per entry, for the backward. NaN stays NaN; +-inf becomes +-cap (tanh(+-inf) = +-1).
///
/// float uses Eigen's vectorised ptanh (a rational approximation, within 3 ulp of tanh measured
/// over [-12, 12] with AVX-512; exactly +-1 beyond |x| ~ 7.9, where tanh rounds to +-1 in float
/// anyway); double and long double, for which Eigen 3.4 has no packet tanh, call std::tanh.
template <typename Scalar>
void softcap_row(Scalar* x, Index n, Scalar cap, Scalar* derivative = nullptr) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  const Scalar inv_cap = Scalar(1) / cap;
  Index j = 0;
  if constexpr (V::has_tanh) {
    const auto cap_v = V::broadcast(cap), inv_cap_v = V::broadcast(inv_cap);
    const auto one = V::broadcast(Scalar(1));
    for (; j + w <= n; j += w) {
      const auto v = V::loadu(x + j);
      // ptanh's clamping need not keep a NaN (it does with AVX-512, not on every ISA): put it back.
      const auto t = V::nan_or(v, V::tanh(V::mul(v, inv_cap_v)));
      V::storeu(x + j, V::mul(cap_v, t));
      if (derivative != nullptr) V::storeu(derivative + j, V::sub(one, V::mul(t, t)));
    }
  }
  for (; j < n; ++j) {
    const Scalar t = std::tanh(x[j] * inv_cap);
    x[j] = cap * t;
    if (derivative != nullptr) derivative[j] = Scalar(1) - t * t;
  }
}

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

  /// dst[0 .. d) = query_factor() * q[0 .. d).
  void load_query(const Scalar* q, Index d, Scalar* dst) const {
    using Row = Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
    using ConstRow = Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
    if (scales_queries()) {
      Row(dst, d) = ConstRow(q, d) * scale;
    } else {
      Row(dst, d) = ConstRow(q, d);
    }
  }

  /// True when apply() has anything to do on a tile of this visibility.
  [[nodiscard]] bool changes(TileVisibility visibility) const {
    return visibility == TileVisibility::mixed || capped() || score_factor() != Scalar(1);
  }

  /// Turns a tile of q' k^T (rows x cols, row stride lds; rows [row0, row0 + rows) and columns
  /// [col0, col0 + cols) of the L x S scores) into the scores the softmax sees: scaled (if q was
  /// not), soft-capped, then masked -- a bias is added to the capped score, and a masked score is
  /// -inf whatever the cap. `mask` is the bound mask (bind_mask) and `visibility` its answer for
  /// this tile (not hidden). With a soft-cap and `cap_derivative` not null, cap_derivative
  /// (row stride lds) receives 1 - tanh^2 for the backward.
  template <typename BoundMask>
  void apply(Scalar* s, Index lds, Index rows, Index cols, const BoundMask& mask, Index row0,
             Index col0, TileVisibility visibility, Scalar* cap_derivative = nullptr) const {
    if (score_factor() != Scalar(1)) {
      for (Index r = 0; r < rows; ++r) {
        Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(s + r * lds, cols) *= score_factor();
      }
    }
    if (capped()) {
      for (Index r = 0; r < rows; ++r) {
        softcap_row(s + r * lds, cols, softcap,
                    cap_derivative != nullptr ? cap_derivative + r * lds : nullptr);
      }
    }
    if (visibility == TileVisibility::mixed) mask.apply(s, lds, row0, rows, col0, cols);
  }
};

/// One online softmax step of a query row (online_softmax.hpp, Alg. 1, lines 9-10): s[0 .. n) are
/// the row's scores of a tile (after ScoreRules::apply) and become its weights p = exp(s - m_new);
/// the state moves on, and the accumulator o[0 .. d_o) (if not null) is rescaled by alpha.
template <typename Scalar>
void update_row(OnlineSoftmax<Scalar>& state, Scalar* s, Index n, Scalar* o, Index d_o) {
  const Scalar m_new = state.max_with(row_max(s, n));
  const Scalar alpha = state.absorb(m_new, exp_weights(s, s, n, m_new));
  if (o != nullptr && alpha != Scalar(1)) {
    Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(o, d_o) *= alpha;
  }
}

/// out = o / l (Alg. 1, line 12), or 0 for a row that saw no visible key; writes lse (line 13) if
/// not null. output_scale, a power of two, undoes a rescale of the values (overflow_rescale,
/// detail/row_math.hpp): out = o / l * output_scale, exact.
template <typename Scalar>
void finish_row(const OnlineSoftmax<Scalar>& state, const Scalar* o, Index d_v, Scalar* out,
                Scalar* lse, Scalar output_scale = Scalar(1)) {
  if (state.sees_no_key()) {
    std::fill(out, out + d_v, Scalar(0));
  } else if (output_scale == Scalar(1)) {
    for (Index c = 0; c < d_v; ++c) out[c] = o[c] / state.l;
  } else {
    for (Index c = 0; c < d_v; ++c) out[c] = o[c] / state.l * output_scale;
  }
  if (lse != nullptr) *lse = state.lse();
}

/// Softmax of one row in place (Bridle, 1990), numerically stable: one online softmax step over
/// the whole row, then p_j / l,
///   p_j = exp(x_j - m) / sum_k exp(x_k - m),  m = max_k x_k.
/// Subtracting the row max makes every exponent <= 0, so exp() cannot overflow, and the shift
/// cancels in the ratio. A row of all -inf (every key masked) becomes all zeros, not 0/0 = NaN.
/// A NaN anywhere in the row makes the whole row NaN; +inf makes it NaN as well (inf - inf).
/// Returns the row's log-sum-exp, -inf for an all -inf row.
template <typename Scalar>
Scalar softmax_row_in_place(Scalar* x, Index n) {
  OnlineSoftmax<Scalar> state;
  update_row<Scalar>(state, x, n, nullptr, 0);
  // l >= 1 unless the row is all -inf: the max entry contributes exp(0) = 1. Dividing (rather than
  // multiplying by 1 / l) rounds once per weight.
  if (!state.sees_no_key()) Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(x, n) /= state.l;
  return state.lse();
}

}  // namespace attention::detail::kernels
