#pragma once
// SPDX-License-Identifier: MIT
//
// Vectorised loops over one row of scores, shared by the softmax and the attention kernels. They
// use Eigen's packet primitives (Eigen::internal::pexp and friends), so they follow whatever SIMD
// level the user compiles for (SSE2, AVX2, AVX-512, NEON) and fall back to scalar code for long
// double.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/types.hpp"

// Eigen's packet types are raw compiler vector types (__m256, __m512d, ...) whose alignment
// attributes GCC reports as ignored when they appear as template arguments, which is how Eigen's
// packet functions are called; Eigen silences the same warning inside its own headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace attention::detail {

/// True if every entry of x is finite (true for an empty x). Computed as sum(x * 0) == 0: x * 0 is
/// ±0 for a finite entry and NaN for an infinite or NaN one, and the sum is a vectorised reduction
/// with no branch per entry. Eigen's allFinite() tests entry by entry with an early exit that does
/// not vectorise: 0.53 ms against 0.02 ms for 4096 x 128 floats, and the tiled backward checks five
/// such inputs per call.
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

/// Largest entry of x[0 .. n), NaN if any entry is NaN, -inf if n == 0.
template <typename Scalar>
Scalar row_max(const Scalar* x, Index n) {
  if (n == 0) return -std::numeric_limits<Scalar>::infinity();
  return Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(x, n)
      .template maxCoeff<Eigen::PropagateNaN>();
}

/// out[j] = exp(in[j] - shift), except out[j] = 0 exactly where in[j] == -inf; returns the sum of
/// out. `in` and `out` may be the same array. `shift` must not be -inf.
///
/// The explicit zero matters: a vectorised exp clamps its argument to the smallest finite exponent,
/// so exp(-inf) comes back as a tiny positive number rather than 0, and a masked key would receive
/// a (denormal) weight instead of none.
template <typename Scalar>
Scalar exp_shifted_sum(const Scalar* in, Scalar* out, Index n, Scalar shift) {
  using namespace Eigen::internal;
  using Packet = typename packet_traits<Scalar>::type;
  constexpr Index width = packet_traits<Scalar>::size;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  Index j = 0;
  Scalar sum = Scalar(0);
  if constexpr (width > 1 && packet_traits<Scalar>::HasExp) {
    const Packet shift_p = pset1<Packet>(shift);
    const Packet minus_inf_p = pset1<Packet>(minus_inf);
    Packet sum_p = pset1<Packet>(Scalar(0));
    for (; j + width <= n; j += width) {
      const Packet x = ploadu<Packet>(in + j);
      const Packet e = pandnot(pexp(psub(x, shift_p)), pcmp_eq(x, minus_inf_p));
      pstoreu(out + j, e);
      sum_p = padd(sum_p, e);
    }
    sum = predux(sum_p);
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
  using namespace Eigen::internal;
  using Packet = typename packet_traits<Scalar>::type;
  constexpr Index width = packet_traits<Scalar>::size;
  const Scalar inv_cap = Scalar(1) / cap;
  Index j = 0;
  if constexpr (width > 1 && packet_traits<Scalar>::HasTanh) {
    const Packet cap_p = pset1<Packet>(cap), inv_cap_p = pset1<Packet>(inv_cap);
    const Packet one = pset1<Packet>(Scalar(1));
    for (; j + width <= n; j += width) {
      const Packet v = ploadu<Packet>(x + j);
      // ptanh's clamping need not keep a NaN (it does with AVX-512, not on every ISA): put it back.
      const Packet t = pselect(pcmp_eq(v, v), ptanh(pmul(v, inv_cap_p)), v);
      pstoreu(x + j, pmul(cap_p, t));
      if (derivative != nullptr) pstoreu(derivative + j, psub(one, pmul(t, t)));
    }
  }
  for (; j < n; ++j) {
    const Scalar t = std::tanh(x[j] * inv_cap);
    x[j] = cap * t;
    if (derivative != nullptr) derivative[j] = Scalar(1) - t * t;
  }
}

/// Softmax of one row in place (Bridle, 1990), numerically stable:
///   p_j = exp(x_j - m) / sum_k exp(x_k - m),  m = max_k x_k.
/// Subtracting the row max makes every exponent <= 0, so exp() cannot overflow, and the shift
/// cancels in the ratio. A row of all -inf (every key masked) becomes all zeros, not 0/0 = NaN.
/// A NaN anywhere in the row makes the whole row NaN; +inf makes it NaN as well (inf - inf).
/// Returns the row's log-sum-exp, log sum_k exp(x_k) = m + log(sum_k exp(x_k - m)), which is -inf
/// for an all -inf row.
template <typename Scalar>
Scalar softmax_row_in_place(Scalar* x, Index n) {
  const Scalar m = row_max(x, n);
  if (m == -std::numeric_limits<Scalar>::infinity()) {
    std::fill(x, x + n, Scalar(0));
    return m;
  }
  const Scalar sum = exp_shifted_sum(x, x, n, m);
  // sum >= 1: the max entry contributes exp(0) = 1. Dividing (rather than multiplying by 1 / sum)
  // rounds once per weight.
  Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(x, n) /= sum;
  return m + std::log(sum);
}

}  // namespace attention::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
