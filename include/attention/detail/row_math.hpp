#pragma once
// SPDX-License-Identifier: MIT
//
// Scalar rules and whole-matrix scans shared by the entry points and the kernels, independent of
// the instruction set (Eigen expressions). The vectorised loops over a row of scores (max, exp,
// soft-cap, softmax) are the score pipeline's: kernels/score_pipeline.hpp.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/types.hpp"

namespace attention::detail {

/// max(a, b), but NaN if either is NaN (std::max(x, NaN) is x, which would drop a NaN score in one
/// argument order): once a row has seen a NaN score it stays NaN, and so does its output.
template <typename Scalar>
[[nodiscard]] inline Scalar max_propagate_nan(Scalar a, Scalar b) {
  if (a != a) return a;
  if (b != b) return b;
  return a < b ? b : a;
}

/// True if every entry of x is finite (true for an empty x). Computed as sum(x * 0) == 0: x * 0 is
/// ±0 for a finite entry and NaN for an infinite or NaN one, and the sum is a vectorised reduction
/// with no branch per entry. Eigen's allFinite() tests entry by entry with an early exit that does
/// not vectorise, and the tiled backward checks five such inputs per call.
template <typename Derived>
bool all_finite(const Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  return (x.derived().array() * Scalar(0)).sum() == Scalar(0);
}

/// max |x| over the entries of x (0 if x is empty); NaN if some entry is NaN.
template <typename Derived>
typename Derived::Scalar max_abs_of(const Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  if (x.size() == 0) return Scalar(0);
  return x.derived().cwiseAbs().template maxCoeff<Eigen::PropagateNaN>();
}

/// 1, or a power of two 2^-e (e >= 1) such that a * b * n * 2^-e < max() / 4, for a, b >= 0.
/// A sum of n products of entries of magnitude at most a and b can overflow although the exact
/// result it leads to (a convex combination, a difference of two such sums) is finite: attention's
/// unnormalised accumulator o = sum_j exp(s_j - m) v_j reaches S max|v| before it is divided by
/// l = sum_j exp(s_j - m) >= 1. Scaling an operand by the returned power of two is exact (outside
/// the subnormal range) and is undone on the result, also exactly. The bound is computed from the
/// exponents (ilogb), since a * b * n itself may overflow. Non-finite a or b give 1: the
/// non-finite policy applies to them instead.
template <typename Scalar>
Scalar overflow_rescale(Scalar a, Scalar b, Index n) {
  if (!(a > Scalar(0)) || !(b > Scalar(0)) || !std::isfinite(a) || !std::isfinite(b) || n < 1) {
    return Scalar(1);
  }
  // a < 2^(ilogb(a) + 1), likewise b and n, so a b n < 2^bound_exponent.
  const int bound_exponent = std::ilogb(a) + std::ilogb(b) + std::ilogb(static_cast<Scalar>(n)) + 3;
  const int room = std::numeric_limits<Scalar>::max_exponent - 3;  // 2^room <= max() / 4
  return bound_exponent <= room ? Scalar(1) : std::ldexp(Scalar(1), room - bound_exponent);
}

}  // namespace attention::detail
