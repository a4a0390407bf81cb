#pragma once
// SPDX-License-Identifier: MIT
//
// kernels::sse2::Simd<Scalar>: the vector interface of kernels/simd.hpp on x86-64's baseline, SSE2
// (4 floats or 2 doubles per vector, 16 registers), for the baseline path of the run-time dispatch
// (issue 18): the half-width reductions of the AVX2 class; no kernel path runs on it (the
// baseline path is Eigen's, for the compiler's flags). It needs no target region (every x86-64 CPU
// has SSE2) and defines nothing under ATTENTION_NO_DISPATCH or off x86-64
// (kernels/target_regions.hpp).
//
// SSE2 has no FMA: fma(a, b, c) is a multiply then an add, two roundings, so results differ from
// the AVX2 and AVX-512 paths' in the last bits (within the documented rounding).

#include <cstddef>
#include <type_traits>
#include <utility>

#include "attention/kernels/target_regions.hpp"
#include "attention/kernels/vector_math.hpp"
#include "attention/types.hpp"

#if ATTENTION_HAS_DISPATCH

namespace attention::detail::kernels::sse2 {

/// SSE2 intrinsics, overloaded for float (__m128) and double (__m128d); see simd_members.inc.
struct Ops {
  static constexpr int registers = 16;
  static constexpr bool has_scalef = false;
  template <typename Scalar>
  using Half = void;
  template <typename Scalar>
  static constexpr bool has_lane_tree = false;

  ATTENTION_SIMD_COMMON_OPS(_mm_, __m128, float, ps)
  ATTENTION_SIMD_COMMON_OPS(_mm_, __m128d, double, pd)

  // No FMA on the baseline: two roundings.
  static ATTENTION_SIMD_INLINE __m128 fma(__m128 a, __m128 b, __m128 c) {
    return add(mul(a, b), c);
  }
  static ATTENTION_SIMD_INLINE __m128d fma(__m128d a, __m128d b, __m128d c) {
    return add(mul(a, b), c);
  }

  static ATTENTION_SIMD_INLINE __m128 is_nan(__m128 x) { return _mm_cmpunord_ps(x, x); }
  static ATTENTION_SIMD_INLINE __m128d is_nan(__m128d x) { return _mm_cmpunord_pd(x, x); }
  static ATTENTION_SIMD_INLINE __m128 equal(__m128 a, __m128 b) { return _mm_cmpeq_ps(a, b); }
  static ATTENTION_SIMD_INLINE __m128d equal(__m128d a, __m128d b) { return _mm_cmpeq_pd(a, b); }
  static ATTENTION_SIMD_INLINE __m128 less(__m128 a, __m128 b) { return _mm_cmplt_ps(a, b); }
  static ATTENTION_SIMD_INLINE __m128d less(__m128d a, __m128d b) { return _mm_cmplt_pd(a, b); }
  // No blend instruction before SSE4.1: (m & a) | (~m & b).
  static ATTENTION_SIMD_INLINE __m128 select(__m128 m, __m128 a, __m128 b) {
    return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b));
  }
  static ATTENTION_SIMD_INLINE __m128d select(__m128d m, __m128d a, __m128d b) {
    return _mm_or_pd(_mm_and_pd(m, a), _mm_andnot_pd(m, b));
  }
  static ATTENTION_SIMD_INLINE __m128 exponent_bits(__m128 v) {
    return _mm_castsi128_ps(_mm_slli_epi32(_mm_castps_si128(v), 23));
  }
  static ATTENTION_SIMD_INLINE __m128d exponent_bits(__m128d v) {
    return _mm_castsi128_pd(_mm_slli_epi64(_mm_castpd_si128(v), 52));
  }
};

#include "attention/kernels/simd_members.inc"

}  // namespace attention::detail::kernels::sse2

#endif  // ATTENTION_HAS_DISPATCH
