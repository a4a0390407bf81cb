#pragma once
// SPDX-License-Identifier: MIT
//
// kernels::avx2::Simd<Scalar>: the vector interface of kernels/simd.hpp on AVX2 + FMA (8 floats or
// 4 doubles per vector, 16 registers), compiled inside the AVX2 target region whatever the
// compiler's flags: the Simd of the kernels' avx2 path (for_each_isa.inc, dispatch.hpp). Defines
// nothing under ATTENTION_NO_DISPATCH or off x86-64 (kernels/target_regions.hpp). Run only where
// detail::can_run(Isa::avx2, ...) holds.

#include <Eigen/Core>
#include <cstdint>

// Also brings what simd_members.inc needs (target_regions.hpp, vector_math.hpp, types.hpp).
#include "attention/kernels/simd_sse2.hpp"

#if ATTENTION_HAS_DISPATCH

ATTENTION_TARGET_AVX2_BEGIN

namespace attention::detail::kernels::avx2 {

/// AVX2 + FMA intrinsics, overloaded for float (__m256) and double (__m256d); see
/// simd_members.inc. Horizontal reductions finish on the SSE2 class.
struct Ops {
  static constexpr int registers = 16;
  static constexpr bool has_scalef = false;
  template <typename Scalar>
  using Half = sse2::Simd<Scalar>;

  ATTENTION_SIMD_COMMON_OPS(_mm256_, __m256, float, ps)
  ATTENTION_SIMD_COMMON_OPS(_mm256_, __m256d, double, pd)
  ATTENTION_SIMD_AVX_OPS(_mm256_, __m256, __m256, ps, )
  ATTENTION_SIMD_AVX_OPS(_mm256_, __m256d, __m256d, pd, )

  static ATTENTION_SIMD_INLINE __m256 select(__m256 m, __m256 a, __m256 b) {
    return _mm256_blendv_ps(b, a, m);
  }
  static ATTENTION_SIMD_INLINE __m256d select(__m256d m, __m256d a, __m256d b) {
    return _mm256_blendv_pd(b, a, m);
  }
  static ATTENTION_SIMD_INLINE __m256 exponent_bits(__m256 v) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(v), 23));
  }
  static ATTENTION_SIMD_INLINE __m256d exponent_bits(__m256d v) {
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(v), 52));
  }
  // 8 entries of a 16- or 8-bit row widened to float (the decode kernels' in-place reads):
  // F16C's conversion for half; bfloat16 is the upper half of a float's bits; int8 sign-extended.
  static ATTENTION_SIMD_INLINE __m256 widen(const Eigen::half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ATTENTION_SIMD_INLINE __m256 widen(const Eigen::bfloat16* p) {
    const __m256i bits =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  }
  static ATTENTION_SIMD_INLINE __m256 widen(const std::int8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  // 8 floats rounded to half or bfloat16 (to nearest, ties to even; NaN stays NaN, beyond the
  // range is +-inf), as Eigen's conversions round: F16C's for half; for bfloat16 the upper 16
  // bits after adding 0x7fff plus the lowest kept bit, a NaN as the quiet NaN 0x7fc0 with its sign.
  static ATTENTION_SIMD_INLINE void narrow(Eigen::half* p, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static ATTENTION_SIMD_INLINE void narrow(Eigen::bfloat16* p, __m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i upper = _mm256_srli_epi32(bits, 16);
    const __m256i bias =
        _mm256_add_epi32(_mm256_and_si256(upper, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7fff));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    const __m256i nan = _mm256_or_si256(_mm256_and_si256(upper, _mm256_set1_epi32(0x8000)),
                                        _mm256_set1_epi32(0x7fc0));
    const __m256i r =
        _mm256_blendv_epi8(rounded, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    // packus works within 128-bit lanes: 64-bit quarters (r0-3, r0-3, r4-7, r4-7) -> (0, 2).
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  // The transposing tree of Simd::sum_each and max_each for 8 floats (simd_members.inc): each
  // level combines two shuffles of a pair of vectors, 256 -> 128 -> 64 -> 32 bits of each
  // input's partial result. Lanes i and i + 4, then i and i + 2, then i and i + 1 are combined,
  // as Simd::sum adds them (halves down to 4 lanes, then (0 + 2) + (1 + 3)).
  template <typename Scalar>
  static constexpr bool has_lane_tree = std::is_same_v<Scalar, float>;
  template <typename Combine>
  static ATTENTION_SIMD_INLINE __m256 lane_tree(const __m256 (&x)[8], Combine combine) {
    // The tree leaves input p's result in lane input_of[p] (the shuffles' order), so taking
    // x[input_of[p]] as input p puts x[i]'s result in lane i.
    constexpr int input_of[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    __m256 b[4], c[2];
    ATTENTION_UNROLL
    for (int i = 0; i < 4; ++i) {  // 128-bit halves: [x_i.lo (+) x_i.hi, x_{i+4}.lo (+) .hi]
      const __m256 p = x[input_of[i]], q = x[input_of[i + 4]];
      b[i] = combine(_mm256_permute2f128_ps(p, q, 0x20), _mm256_permute2f128_ps(p, q, 0x31));
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 2; ++i) {  // lanes i and i + 2
      c[i] = combine(_mm256_shuffle_ps(b[i], b[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                     _mm256_shuffle_ps(b[i], b[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return combine(_mm256_shuffle_ps(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                   _mm256_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }

  // x[0 .. 8) transposed in place (Simd::transpose): rows interleaved in pairs, then 64-bit
  // pairs, then 128-bit halves, 24 shuffles for 64 entries.
  static ATTENTION_SIMD_INLINE void transpose(__m256 (&x)[8]) {
    __m256 t[8], u[8];
    ATTENTION_UNROLL
    for (int i = 0; i < 8; i += 2) {  // t[i] = a0 b0 a1 b1 | a4 b4 a5 b5, t[i + 1]: 2, 3 | 6, 7
      t[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 8; i += 4) {  // u[i + c] = column c, c + 4 of 4 rows
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    ATTENTION_UNROLL
    for (int k = 0; k < 4; ++k) {
      x[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
      x[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
    }
  }

  static ATTENTION_SIMD_INLINE __m128 lower(__m256 v) { return _mm256_castps256_ps128(v); }
  static ATTENTION_SIMD_INLINE __m128d lower(__m256d v) { return _mm256_castpd256_pd128(v); }
  static ATTENTION_SIMD_INLINE __m128 upper(__m256 v) { return _mm256_extractf128_ps(v, 1); }
  static ATTENTION_SIMD_INLINE __m128d upper(__m256d v) { return _mm256_extractf128_pd(v, 1); }
};

#include "attention/kernels/simd_members.inc"

}  // namespace attention::detail::kernels::avx2

ATTENTION_TARGET_END

#endif  // ATTENTION_HAS_DISPATCH
