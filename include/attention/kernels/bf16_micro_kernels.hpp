#pragma once
// SPDX-License-Identifier: MIT
//
// The register-blocked products of the bfloat16 forward (bf16_forward.hpp) on AVX512_BF16's
// vdpbf16ps (_mm512_dpbf16_ps), and the packing that feeds them. vdpbf16ps takes two vectors of
// 32 bfloat16 and adds to each of 16 float lanes the products of one pair of adjacent entries:
//
//   acc[i] += a[2i] b[2i] + a[2i+1] b[2i+1]                            (i = 0 .. 15)
//
// 32 multiply-adds per instruction against 16 for a float FMA, at the same issue rate. So each
// 32-bit lane of an operand holds a *pair* of bfloat16 (the lower half first in memory, element 2i
// of the vector), and both products are written over pairs:
//
//   s = q k^T   pairs along d:    lane j of a key vector holds (k[j][2t], k[j][2t+1]) for 16 keys
//                                 j, and the query's pair (q[r][2t], q[r][2t+1]) is broadcast
//   o += p v    pairs along keys: lane c of a value vector holds (v[2u][c], v[2u+1][c]) for 16
//                                 columns c, and the weights' pair (p[r][2u], p[r][2u+1]) is
//                                 broadcast
//
// An odd d, or an odd number of keys, has its last pair completed with a zero. Products and sums
// are exact in float before each lane's addition rounds (vdpbf16ps rounds to nearest even,
// whatever MXCSR says); bfloat16 subnormals in its inputs count as zero and subnormal results are
// flushed to zero (Intel SDM, VDPBF16PS).
//
// Otherwise as micro_kernels.hpp: an MR x (2 vectors) block of float accumulators stays in
// registers while the pairs stream through, one broadcast and two vdpbf16ps per row and step.
// Defined only where ATTENTION_HAS_DISPATCH, inside the AVX-512 + AVX512_BF16 target region
// (target_regions.hpp); run only where kernels::bf16_path_available() (bf16_forward.hpp).

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "attention/kernels/simd_avx512.hpp"
#include "attention/kernels/target_regions.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Tile geometry of the bfloat16 forward, in keys and queries (not pairs). 32 vector registers:
/// mr = 8 rows x 2 vectors = 16 accumulators, 2 panel vectors and a broadcast. vdpbf16ps issues
/// twice per cycle on Zen 5 (issue 13: 426 GFLOP/s per core, twice the FP32 FMA peak), so 16
/// independent accumulators cover a latency of up to 8 cycles. Per step a micro-tile loads 2
/// vectors and 8 broadcasts for 16 vdpbf16ps. block_cols = 128 keys: a pv micro-tile's fixed cost
/// (zeroing, then adding its 16 accumulators into o) comes once per 64 pairs of keys; a key tile's
/// panel, 128 keys x d / 2 pairs (32 KiB at d = 128) is walked one 32-key column (8 KiB) at a time
/// down the query tile, as the float kernel does.
struct Bf16Geometry {
  static constexpr Index mr = 8;             // query rows per micro-tile
  static constexpr Index lanes = 16;         // float lanes per vector
  static constexpr Index nr = 2 * lanes;     // keys per qk micro-tile
  static constexpr Index chunk = 2 * lanes;  // value columns per pv micro-tile
  static constexpr Index block_rows = 64;    // queries per tile
  static constexpr Index block_cols = 128;   // keys per tile (even: whole pairs)
};

/// The 16 bits of a bfloat16.
inline std::uint16_t bf16_bits(Eigen::bfloat16 x) {
  return Eigen::numext::bit_cast<std::uint16_t>(x);
}

/// A pair of bfloat16 as one 32-bit lane: `low` first in memory (vdpbf16ps's element 2i).
inline std::uint32_t bf16_pair(std::uint16_t low, std::uint16_t high) {
  return static_cast<std::uint32_t>(low) | (static_cast<std::uint32_t>(high) << 16);
}

}  // namespace attention::detail::kernels

#if ATTENTION_HAS_DISPATCH

ATTENTION_TARGET_AVX512_BF16_BEGIN

namespace attention::detail::kernels::avx512_bf16 {

using Pair = std::uint32_t;  // two bfloat16, see the top of this file

/// The same 512 bits seen as 32 bfloat16 (GCC and clang define __m512bh as a vector type of that
/// size, so the cast reinterprets the bits).
ATTENTION_SIMD_INLINE __m512bh as_bf16(__m512i x) { return (__m512bh)x; }  // NOLINT

/// A pair broadcast to all 16 lanes.
ATTENTION_SIMD_INLINE __m512bh broadcast_pair(const Pair* p) {
  return as_bf16(_mm512_set1_epi32(static_cast<int>(*p)));
}

/// s (MR x 32 keys, row stride lds, aligned) = factor * (q kp^T): q is MR rows of `pairs` pairs
/// (row stride ldq pairs), kp a panel column of `pairs` rows of 32 keys' pairs (row stride ldk,
/// aligned): kp[t * ldk + j] = (k[j][2t], k[j][2t+1]). `factor` is the scale left after the
/// query's power of two (bf16_forward.hpp), applied as the scores are stored.
/// If row_max is not null, row_max[r] (MR vectors) also takes the lane-wise NaN-propagating max
/// (Simd::max) of row r's two stored vectors, in order: row_max[r] = max(s_0, s_1) for the first
/// 32 keys of a row (`first_columns`), else max(max(row_max[r], s_0), s_1). Over a row's panel
/// columns in order that is vector_max (score_pipeline.inc) of the row: the same vectors, the
/// same order.
template <int MR>
inline void qk_bf16_micro_kernel(const Pair* q, Index ldq, const Pair* kp, Index ldk, Index pairs,
                                 float factor, float* s, Index lds, __m512* row_max = nullptr,
                                 bool first_columns = true) {
  __m512 c[MR][2];
  for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (Index t = 0; t < pairs; ++t) {
    const __m512bh b0 = as_bf16(_mm512_load_si512(kp + t * ldk));
    const __m512bh b1 = as_bf16(_mm512_load_si512(kp + t * ldk + 16));
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = broadcast_pair(q + r * ldq + t);
      c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
      c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
    }
  }
  const __m512 f = _mm512_set1_ps(factor);
  for (int r = 0; r < MR; ++r) {
    c[r][0] = _mm512_mul_ps(c[r][0], f);
    c[r][1] = _mm512_mul_ps(c[r][1], f);
    _mm512_store_ps(s + r * lds, c[r][0]);
    _mm512_store_ps(s + r * lds + 16, c[r][1]);
  }
  if (row_max != nullptr) {
    using V = avx512::Simd<float>;
    for (int r = 0; r < MR; ++r) {
      const __m512 m = first_columns ? c[r][0] : V::max(row_max[r], c[r][0]);
      row_max[r] = V::max(m, c[r][1]);
    }
  }
}

/// o (MR x 32 columns, row stride ldo, aligned) += p vp: p is MR rows of `pairs` pairs of weights
/// (row stride ldp), vp a value chunk of `pairs` rows of 32 columns' pairs (aligned):
/// vp[u * 32 + c] = (v[2u][c], v[2u+1][c]). The tile's products are summed from zero and then
/// added to o, as the float kernel's pv_micro_kernel does (its comment says why).
template <int MR>
inline void pv_bf16_micro_kernel(const Pair* p, Index ldp, const Pair* vp, Index pairs, float* o,
                                 Index ldo) {
  __m512 c[MR][2];
  for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (Index u = 0; u < pairs; ++u) {
    const __m512bh b0 = as_bf16(_mm512_load_si512(vp + u * Bf16Geometry::chunk));
    const __m512bh b1 = as_bf16(_mm512_load_si512(vp + u * Bf16Geometry::chunk + 16));
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = broadcast_pair(p + r * ldp + u);
      c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
      c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* row = o + r * ldo;
    _mm512_store_ps(row, _mm512_add_ps(_mm512_load_ps(row), c[r][0]));
    _mm512_store_ps(row + 16, _mm512_add_ps(_mm512_load_ps(row + 16), c[r][1]));
  }
}

/// Packs key block kb of k (num_keys x d bfloat16, row stride ldk) as a panel of (d + 1) / 2 rows
/// of block_cols keys' pairs: panel[t * block_cols + j] = (k[j][2t], k[j][2t+1]) of key
/// kb * block_cols + j, the pair past an odd d completed with 0, keys past the last one 0. A key's
/// pairs are its row's bits read 32 at a time, so each row is read a vector at a time in address
/// order and its lanes stored down the panel's column.
inline void pack_key_pairs(const Eigen::bfloat16* k, Index ldk, Index num_keys, Index d, Index kb,
                           Pair* panel) {
  constexpr Index bc = Bf16Geometry::block_cols;
  const Index col0 = kb * bc;
  const Index cols = std::min(bc, num_keys - col0);
  const Index pairs = (d + 1) / 2, whole_pairs = d / 2;
  alignas(64) Pair lane[16];
  for (Index j = 0; j < cols; ++j) {
    const Eigen::bfloat16* row = k + (col0 + j) * ldk;
    Index t = 0;
    for (; t + 16 <= whole_pairs; t += 16) {
      _mm512_store_si512(lane, _mm512_loadu_si512(row + 2 * t));
      for (Index x = 0; x < 16; ++x) panel[(t + x) * bc + j] = lane[x];
    }
    for (; t < whole_pairs; ++t) {
      panel[t * bc + j] = bf16_pair(bf16_bits(row[2 * t]), bf16_bits(row[2 * t + 1]));
    }
    if (pairs > whole_pairs) panel[t * bc + j] = bf16_pair(bf16_bits(row[2 * t]), 0);
  }
  for (Index t = 0; t < pairs; ++t) std::fill(panel + t * bc + cols, panel + (t + 1) * bc, Pair(0));
}

/// Packs key block kb of v (num_keys x d_v bfloat16, row stride ldv), times `scale` (1, or a
/// power of two: exact), as value chunks of 32 columns: chunk x at panel + x * (block_cols / 2 *
/// 32), its row u holding the pairs (v[2u][c], v[2u+1][c]) of keys 2u and 2u + 1 of the block for
/// 32 columns c; columns past d_v and the key past an odd count are 0. A pv micro-tile then reads
/// its block_cols / 2 x 32 pairs as one contiguous run.
inline void pack_value_pairs(const Eigen::bfloat16* v, Index ldv, Index num_keys, Index d_v,
                             Index kb, float scale, Pair* panel) {
  constexpr Index bc = Bf16Geometry::block_cols, chunk = Bf16Geometry::chunk;
  const Index col0 = kb * bc;
  const Index cols = std::min(bc, num_keys - col0);
  const Index d_v_panel = (d_v + chunk - 1) / chunk * chunk;
  const auto bits = [&](Index j, Index c) -> std::uint16_t {
    if (j >= cols || c >= d_v) return 0;
    const Eigen::bfloat16 x = v[(col0 + j) * ldv + c];
    return bf16_bits(scale == 1.0f ? x : Eigen::bfloat16(static_cast<float>(x) * scale));
  };
  for (Index u = 0; u < bc / 2; ++u) {
    const Index j = 2 * u;
    Pair* const row = panel + u * chunk;
    Index c = 0;
    if (scale == 1.0f && j + 1 < cols) {
      // Two key rows' 16 entries interleaved: lane c = v[j][c] | v[j + 1][c] << 16.
      const Eigen::bfloat16* first = v + (col0 + j) * ldv;
      const Eigen::bfloat16* second = first + ldv;
      for (; c + 16 <= d_v; c += 16) {
        const __m512i low =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(first + c)));
        const __m512i high =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(second + c)));
        _mm512_store_si512(row + c / chunk * (bc / 2 * chunk) + c % chunk,
                           _mm512_or_si512(low, _mm512_slli_epi32(high, 16)));
      }
    }
    for (; c < d_v_panel; ++c) {
      row[c / chunk * (bc / 2 * chunk) + c % chunk] = bf16_pair(bits(j, c), bits(j + 1, c));
    }
  }
}

/// Rounds the weights of a tile row, p[0 .. n) (float, after the online softmax step), to
/// bfloat16 pairs in place: pair u = (p[2u], p[2u+1]) lands at the row's 32-bit word u, with
/// p[n .. round_up(n, 32)) taken as 0. Rounding is to nearest even (vcvtne2ps2bf16). In place
/// because word u is written after floats 2u and 2u + 1 were read: each step reads floats
/// [j, j + 32) into registers, then writes words [j / 2, j / 2 + 16), all at or below j + 16.
inline void round_weights_to_pairs(float* p, Index n) {
  Pair* const out = reinterpret_cast<Pair*>(p);  // the same bytes, reused (see above)
  for (Index j = 0; j < n; j += 32) {
    const Index left = n - j;
    const __mmask16 low_mask = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __mmask16 high_mask =
        left >= 32 ? __mmask16(0xffff)
                   : (left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1));
    const __m512 low = _mm512_maskz_loadu_ps(low_mask, p + j);
    const __m512 high = _mm512_maskz_loadu_ps(high_mask, p + j + 16);
    // _mm512_cvtne2ps_pbh(a, b): b's 16 values in the lower half, a's in the upper.
    _mm512_storeu_si512(out + j / 2, (__m512i)_mm512_cvtne2ps_pbh(high, low));  // NOLINT
  }
}

}  // namespace attention::detail::kernels::avx512_bf16

ATTENTION_TARGET_END

#endif  // ATTENTION_HAS_DISPATCH
