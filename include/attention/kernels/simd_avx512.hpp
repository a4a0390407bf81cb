#pragma once
// SPDX-License-Identifier: MIT
//
// kernels::avx512::Simd<Scalar>: the vector interface of kernels/simd.hpp on AVX-512 (16 floats or
// 8 doubles per vector, 32 registers), compiled inside the AVX-512 target region (F, CD, BW, DQ, VL
// + the AVX2 set) whatever the compiler's flags: the Simd of the kernels' avx512 path
// (for_each_isa.inc, dispatch.hpp). Defines nothing under ATTENTION_NO_DISPATCH or off x86-64
// (kernels/target_regions.hpp). Run only where detail::can_run(Isa::avx512, ...) holds.
//
// 2^n uses vscalefps, which rounds e^r * 2^n once, as the two products of the other paths do:
// exp() gives the same bits here as on AVX2 wherever e^x is a normal float (checked on every 7th
// float in [-110, 89] on a Zen 5); subnormal results may differ in their last bits. exp_weight
// (softmax weights) is computed in base 2 here, with vrndscaleps/pd and vreduceps/pd (and a table
// of 2^(j/8) for doubles), within the bounds derived in vector_math.hpp, and keeps subnormal
// weights where AVX2's flushes them to +0. Doubles have the lane tree and transpose too.

#include <Eigen/Core>
#include <cstdint>

// Also brings what simd_members.inc needs (target_regions.hpp, vector_math.hpp, types.hpp).
#include "attention/kernels/simd_avx2.hpp"

#if ATTENTION_HAS_DISPATCH

ATTENTION_TARGET_AVX512_BEGIN

namespace attention::detail::kernels::avx512 {

/// AVX-512 intrinsics, overloaded for float (__m512) and double (__m512d); see simd_members.inc.
struct Ops {
  // Comparisons give mask registers (one bit per lane), and mask_blend(m, b, a) takes a where m is
  // set.
  static ATTENTION_SIMD_INLINE __m512 select(__mmask16 m, __m512 a, __m512 b) {
    return _mm512_mask_blend_ps(m, b, a);
  }
  static ATTENTION_SIMD_INLINE __m512d select(__mmask8 m, __m512d a, __m512d b) {
    return _mm512_mask_blend_pd(m, b, a);
  }
  ATTENTION_SIMD_AVX_OPS(_mm512_, __m512, __mmask16, ps, _mask)
  ATTENTION_SIMD_AVX_OPS(_mm512_, __m512d, __mmask8, pd, _mask)
  ATTENTION_SIMD_COMMON_OPS(_mm512_, __m512, float, ps)
  ATTENTION_SIMD_COMMON_OPS(_mm512_, __m512d, double, pd)

  // p * 2^n in one instruction, rounded once (step 5 of exp in vector_math.hpp).
  static constexpr bool has_scalef = true;
  static ATTENTION_SIMD_INLINE __m512 scalef(__m512 p, __m512 n) { return _mm512_scalef_ps(p, n); }
  static ATTENTION_SIMD_INLINE __m512d scalef(__m512d p, __m512d n) {
    return _mm512_scalef_pd(p, n);
  }
  // n = round(t) to the nearest multiple of 2^-FractionBits (vrndscaleps/pd), and t - n, exact
  // (vreduceps/pd, AVX512DQ): two independent instructions, where the subtraction would wait for
  // the rounding. The reduction of +-inf is +0 and of NaN NaN (exp_weight's base-2 steps,
  // vector_math.hpp).
  template <int FractionBits>
  static ATTENTION_SIMD_INLINE __m512 round_nearest(__m512 t) {
    return _mm512_roundscale_ps(
        t, (FractionBits << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  template <int FractionBits>
  static ATTENTION_SIMD_INLINE __m512 minus_nearest(__m512 t) {
    return _mm512_reduce_ps(t, (FractionBits << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  template <int FractionBits>
  static ATTENTION_SIMD_INLINE __m512d round_nearest(__m512d t) {
    return _mm512_roundscale_pd(
        t, (FractionBits << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  template <int FractionBits>
  static ATTENTION_SIMD_INLINE __m512d minus_nearest(__m512d t) {
    return _mm512_reduce_pd(t, (FractionBits << 4) | _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // table[i mod 8] in each lane, i the lane's low 3 bits read as an integer (vpermpd): 2^(j/8) of
  // the double exp_weight.
  static ATTENTION_SIMD_INLINE __m512d lookup(__m512d table, __m512d i) {
    return _mm512_permutexvar_pd(_mm512_castpd_si512(i), table);
  }

  // 16 entries of a 16- or 8-bit row widened to float (as the AVX2 class's widen).
  static ATTENTION_SIMD_INLINE __m512 widen(const Eigen::half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static ATTENTION_SIMD_INLINE __m512 widen(const Eigen::bfloat16* p) {
    const __m512i bits =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  }
  static ATTENTION_SIMD_INLINE __m512 widen(const std::int8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }

  // 16 floats rounded to half or bfloat16, as the AVX2 class's narrow.
  static ATTENTION_SIMD_INLINE void narrow(Eigen::half* p, __m512 v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static ATTENTION_SIMD_INLINE void narrow(Eigen::bfloat16* p, __m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i upper = _mm512_srli_epi32(bits, 16);
    const __m512i bias =
        _mm512_add_epi32(_mm512_and_si512(upper, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16);
    const __m512i nan = _mm512_or_si512(_mm512_and_si512(upper, _mm512_set1_epi32(0x8000)),
                                        _mm512_set1_epi32(0x7fc0));
    const __m512i r = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }

  // Horizontal reductions finish on the AVX2 class.
  template <typename Scalar>
  using Half = avx2::Simd<Scalar>;
  static ATTENTION_SIMD_INLINE __m256 lower(__m512 v) { return _mm512_castps512_ps256(v); }
  static ATTENTION_SIMD_INLINE __m256d lower(__m512d v) { return _mm512_castpd512_pd256(v); }
  static ATTENTION_SIMD_INLINE __m256 upper(__m512 v) { return _mm512_extractf32x8_ps(v, 1); }
  static ATTENTION_SIMD_INLINE __m256d upper(__m512d v) { return _mm512_extractf64x4_pd(v, 1); }

  // The transposing tree of Simd::sum_each and max_each for 16 floats (simd_members.inc): as
  // the AVX2 class's, with a first level of 256-bit halves (lanes i and i + 8).
  template <typename Scalar>
  static constexpr bool has_lane_tree = true;
  template <typename Combine>
  static ATTENTION_SIMD_INLINE __m512 lane_tree(const __m512 (&x)[16], Combine combine) {
    constexpr int input_of[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};
    __m512 b[8], c[4], e[2];
    ATTENTION_UNROLL
    for (int i = 0; i < 8; ++i) {  // 256-bit halves: [x_i.lo (+) x_i.hi, x_{i+8}.lo (+) .hi]
      const __m512 p = x[input_of[i]], q = x[input_of[i + 8]];
      b[i] = combine(_mm512_shuffle_f32x4(p, q, 0x44), _mm512_shuffle_f32x4(p, q, 0xEE));
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 4; ++i) {  // 128-bit quarters
      c[i] = combine(_mm512_shuffle_f32x4(b[i], b[i + 4], 0x88),
                     _mm512_shuffle_f32x4(b[i], b[i + 4], 0xDD));
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 2; ++i) {  // lanes i and i + 2
      e[i] = combine(_mm512_shuffle_ps(c[i], c[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                     _mm512_shuffle_ps(c[i], c[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return combine(_mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)),
                   _mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }

  // x[0 .. 16) transposed in place (Simd::transpose): rows interleaved in pairs, then 64-bit
  // pairs, then 128-bit quarters twice, 64 shuffles for 256 entries.
  static ATTENTION_SIMD_INLINE void transpose(__m512 (&x)[16]) {
    __m512 t[16], u[16];
    ATTENTION_UNROLL
    for (int i = 0; i < 16; i += 2) {  // t[i] = a0 b0 a1 b1 | a4 b4 a5 b5 | ..., t[i + 1]: 2, 3
      t[i] = _mm512_unpacklo_ps(x[i], x[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(x[i], x[i + 1]);
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 16; i += 4) {  // u[i + c] = column c, c + 4, c + 8, c + 12 of 4 rows
      u[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    ATTENTION_UNROLL
    for (int k = 0; k < 4; ++k) {  // t[k]: columns k, k + 8 of rows 0-7; t[k + 4]: k + 4, k + 12
      t[k] = _mm512_shuffle_f32x4(u[k], u[k + 4], 0x88);
      t[k + 4] = _mm512_shuffle_f32x4(u[k], u[k + 4], 0xDD);
      t[k + 8] = _mm512_shuffle_f32x4(u[k + 8], u[k + 12], 0x88);
      t[k + 12] = _mm512_shuffle_f32x4(u[k + 8], u[k + 12], 0xDD);
    }
    ATTENTION_UNROLL
    for (int k = 0; k < 8; ++k) {
      x[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
      x[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
    }
  }

  // The same tree for 8 doubles, in Simd::sum's order for them (lanes i and i + 4, then i and
  // i + 2, then i and i + 1): 256-bit halves, 128-bit quarters, then lanes; 21 instructions for
  // 8 vectors. The tree leaves input p's result in lane input_of[p].
  template <typename Combine>
  static ATTENTION_SIMD_INLINE __m512d lane_tree(const __m512d (&x)[8], Combine combine) {
    constexpr int input_of[8] = {0, 1, 4, 5, 2, 3, 6, 7};
    __m512d b[4], c[2];
    ATTENTION_UNROLL
    for (int i = 0; i < 4; ++i) {  // [x_p.lo (+) x_p.hi, x_q.lo (+) x_q.hi]
      const __m512d p = x[input_of[i]], q = x[input_of[i + 4]];
      b[i] = combine(_mm512_shuffle_f64x2(p, q, 0x44), _mm512_shuffle_f64x2(p, q, 0xEE));
    }
    ATTENTION_UNROLL
    for (int i = 0; i < 2; ++i) {  // quarters 0 (+) 1 of b[i] and of b[i + 2]
      c[i] = combine(_mm512_shuffle_f64x2(b[i], b[i + 2], 0x88),
                     _mm512_shuffle_f64x2(b[i], b[i + 2], 0xDD));
    }
    return combine(_mm512_unpacklo_pd(c[0], c[1]), _mm512_unpackhi_pd(c[0], c[1]));
  }

  // x[0 .. 8) of doubles transposed in place: rows interleaved in pairs, then 128-bit quarters
  // twice, 24 shuffles for 64 entries.
  static ATTENTION_SIMD_INLINE void transpose(__m512d (&x)[8]) {
    __m512d t[8], u[2][4];
    ATTENTION_UNROLL
    for (int i = 0; i < 8; i += 2) {  // t[i]: columns 0, 2, 4, 6 of rows i, i + 1; t[i + 1]: odd
      t[i] = _mm512_unpacklo_pd(x[i], x[i + 1]);
      t[i + 1] = _mm512_unpackhi_pd(x[i], x[i + 1]);
    }
    // u[p][0], u[p][1]: columns p, p + 4 of rows 0-3 and 4-7; u[p][2], u[p][3]: p + 2, p + 6.
    ATTENTION_UNROLL
    for (int p = 0; p < 2; ++p) {
      u[p][0] = _mm512_shuffle_f64x2(t[p], t[p + 2], 0x88);
      u[p][1] = _mm512_shuffle_f64x2(t[p + 4], t[p + 6], 0x88);
      u[p][2] = _mm512_shuffle_f64x2(t[p], t[p + 2], 0xDD);
      u[p][3] = _mm512_shuffle_f64x2(t[p + 4], t[p + 6], 0xDD);
    }
    ATTENTION_UNROLL
    for (int p = 0; p < 2; ++p) {
      x[p] = _mm512_shuffle_f64x2(u[p][0], u[p][1], 0x88);
      x[p + 4] = _mm512_shuffle_f64x2(u[p][0], u[p][1], 0xDD);
      x[p + 2] = _mm512_shuffle_f64x2(u[p][2], u[p][3], 0x88);
      x[p + 6] = _mm512_shuffle_f64x2(u[p][2], u[p][3], 0xDD);
    }
  }

  static constexpr int registers = 32;  // zmm0-31
};

#include "attention/kernels/simd_members.inc"

}  // namespace attention::detail::kernels::avx512

ATTENTION_TARGET_END

#endif  // ATTENTION_HAS_DISPATCH
