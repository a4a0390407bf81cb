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

#include <cmath>
#include <vector>

#include "attention/errors.hpp"
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

}  // namespace attention
