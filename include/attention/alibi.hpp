#pragma once
// SPDX-License-Identifier: MIT
//
// ALiBi, attention with linear biases (Press, Smith & Lewis, 2022, "Train Short, Test Long:
// Attention with Linear Biases Enables Input Length Extrapolation", sec. 3): no position
// embeddings; instead head h adds -m_h * (distance from query to key) to each score, with a fixed
// head-specific slope m_h.
//
// The slopes. For a number of heads n that is a power of two, the slopes form the geometric
// sequence that starts at 2^(-8/n) and has that ratio (the paper, sec. 3):
//
//   m_k = 2^(-8k / n),  k = 1 .. n          (n = 8: 1/2, 1/4, ..., 1/256)
//
// For other n the paper's code (and BLOOM, MPT and every port since) takes the c = 2^floor(log2 n)
// slopes of the nearest smaller power of two, then fills the remaining n - c heads with the slopes
// that the sequence for 2c heads places between them: the 2c-head slopes are 2^(-8j / 2c) =
// 2^(-4j / c), whose even j are exactly the c-head slopes, so the new ones are the odd j:
//
//   m_k = 2^(-8k / c),             k = 1 .. c
//   m_{c+k} = 2^(-4(2k - 1) / c),  k = 1 .. n - c        (n = 12, c = 8: 2^-0.5, 2^-1.5, ...)
//
// In that order (head c + 1 gets 2^(-4 / c), larger than head 1's): the order of the heads in
// trained checkpoints.
//
// The bias. attention::alibi(m) is a mask (the protocol of masks/protocol.hpp) that adds,
// lower-right aligned like attention::causal_lower_right (query i is at position p_i = i + (S - L)
// among the S keys),
//
//   bias(i, j) = -m * (p_i - j) = -m * ((i + S - L) - j)
//
//   L = 2, S = 4, m = 1/2    key 0     1     2     3
//              query 0         -1    -0.5    0    +0.5   <- j > p_0 = 2: a future key
//              query 1         -1.5  -1    -0.5    0
//
// The key at the query's own position gets 0 and each earlier key m less per step back. A key
// after the query (j > p_i) gets the same straight line continued, +m * (j - p_i): nothing is
// hidden by alibi() alone. (The paper's code adds m * j to every row instead, which differs from
// this by -m * p_i, a constant per row, and the softmax does not see a constant added to a row.)
// ALiBi was made for causal decoders, so combine it with a causal mask or a causal window:
//
//   attention::causal_lower_right & attention::alibi(m)     what ALiBi models train with
//   attention::window(w, 0) & attention::alibi(m)           the same over a sliding window
//
// where the future keys are hidden (-inf) and their bias never counts. Because the bias depends
// only on p_i - j, an incremental decoder whose L new queries are the last L of S cached positions
// gets the same biases as one forward pass over the whole sequence, also after dropping the oldest
// tokens (KVCache::drop_oldest). The bias is a constant: the backward passes propagate through it
// unchanged and report no gradient for it (AttentionGradients::dbias stays empty).

#include <cmath>
#include <sstream>
#include <type_traits>
#include <vector>

#include "attention/errors.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention {

/// The ALiBi slope of each of num_heads heads, head 0 first (formula and order at the top of
/// alibi.hpp; Press et al., 2022). Each is 2^x for a rational x, computed in long double and
/// rounded once to double (exact when x is an integer, e.g. every slope of 8 or 16 heads).
/// \throws ShapeError if num_heads < 1.
[[nodiscard]] inline std::vector<double> alibi_slopes(Index num_heads) {
  detail::require_positive("alibi_slopes", "num_heads", num_heads);
  Index c = 1;  // the largest power of two <= num_heads
  while (c * 2 <= num_heads) c *= 2;
  std::vector<double> slopes;
  slopes.reserve(static_cast<std::size_t>(num_heads));
  const long double lc = static_cast<long double>(c);
  for (Index k = 1; k <= c; ++k) {
    slopes.push_back(static_cast<double>(std::exp2(-8.0L * static_cast<long double>(k) / lc)));
  }
  for (Index k = 1; k <= num_heads - c; ++k) {
    slopes.push_back(
        static_cast<double>(std::exp2(-4.0L * static_cast<long double>(2 * k - 1) / lc)));
  }
  return slopes;
}

/// ALiBi's linear bias for one head with slope m (Press et al., 2022), lower-right aligned:
///   bias(i, j) = -m * ((i + S - L) - j)
/// added to the scaled (and soft-capped) score of query i and key j; L queries, S keys. Nothing is
/// hidden: keys after the query get a positive bias (see the top of alibi.hpp), so combine it with
/// attention::causal_lower_right or attention::window(w, 0). Made by attention::alibi().
class AlibiMask {
 public:
  /// \throws std::invalid_argument if slope is not finite.
  explicit AlibiMask(double slope) : slope_(slope) {
    if (!std::isfinite(slope)) {
      std::ostringstream what;
      what << "slope (= " << slope << ") must be finite";
      detail::throw_invalid_value("alibi", what.str());
    }
  }

  /// m, the head's slope.
  [[nodiscard]] double slope() const { return slope_; }

  /// Fits any L x S.
  void check(const char*, Index, Index) const {}

  /// The bias bound to an L x S score matrix: query i is at key position i + offset, offset =
  /// S - L (the protocol of masks/protocol.hpp).
  struct Bound {
    double slope;  ///< m
    Index offset;  ///< S - L: query i is at key position i + offset

    /// Every score gets a bias and none is hidden: mixed, unless the slope is 0 (nothing to add).
    [[nodiscard]] TileVisibility visibility(Index, Index, Index, Index) const {
      return slope == 0.0 ? TileVisibility::visible : TileVisibility::mixed;
    }

    /// scores[r * stride + c] += -m * ((row0 + r + offset) - (col0 + c)). The bias is computed in
    /// double (long double for long double scores) and rounded once to Scalar, so float scores
    /// get the bias of a distance of 10^6 as accurately as that of a distance of 1. A -inf score
    /// (hidden by another mask of a combination) stays -inf.
    template <typename Scalar>
    void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
      using Wide = std::conditional_t<(sizeof(Scalar) > sizeof(double)), Scalar, double>;
      const Wide minus_slope = -static_cast<Wide>(slope);
      for (Index r = 0; r < rows; ++r) {
        Scalar* row = scores + r * stride;
        // Distance from the query's position to the tile's first key: p_i - col0.
        const Index distance0 = row0 + r + offset - col0;
        for (Index c = 0; c < cols; ++c) {
          row[c] += static_cast<Scalar>(minus_slope * static_cast<Wide>(distance0 - c));
        }
      }
    }
  };

  /// The bias for an L x S score matrix.
  [[nodiscard]] Bound bind(Index num_queries, Index num_keys) const {
    return {slope_, num_keys - num_queries};
  }

 private:
  double slope_;
};

/// alibi(m): ALiBi's bias for a head of slope m, -m * ((i + S - L) - j) added to score (i, j)
/// (lower-right aligned; see AlibiMask and the top of alibi.hpp). Use alibi_slopes(num_heads)[h]
/// for head h of a standard ALiBi model, and combine with a causal mask:
///   attention::scaled_dot_product_attention(q, k, v, attention::causal_lower_right &
///                                                    attention::alibi(slopes[h]))
/// \throws std::invalid_argument if m is not finite.
[[nodiscard]] inline AlibiMask alibi(double slope) { return AlibiMask(slope); }

}  // namespace attention
