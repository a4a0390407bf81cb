#pragma once
// SPDX-License-Identifier: MIT
//
// The tiled forward (forward.hpp) for calls whose q, k and v are all Eigen::bfloat16, on
// AVX512_BF16's vdpbf16ps (issue 13, item 2): both products run on bfloat16 pairs
// (bf16_micro_kernels.hpp), twice the multiply-adds per instruction of the float kernel's FMAs.
// The same tiles, scheduling and score pipeline as the float kernel, per tile:
//
//   s = f (q' k_tile^T)    q' = 2^e q, exact in bfloat16; f = scale / 2^e, |f| in [1, 2)
//                          (Alg. 1, line 8; products exact, sums in float)
//   s -> capped, masked; p = exp(s - m_new), o rescaled by alpha    score_pipeline.hpp, in float
//   p -> bfloat16, rounded to nearest even                          the one rounding this adds
//   o += p v_tile          (line 10; products exact, sums in float)
//   out = o / l rounded once to bfloat16, lse = m + log(l) in float (lines 12-13)
//
// So scores, the softmax state (m, l) and the accumulator are float as on the float path; what
// differs is that each weight p enters the second product rounded to bfloat16, a relative error
// of at most 2^-8 per weight, while l sums the unrounded weights. The output then carries, beyond
// the float path's error, at most 2^-8 sum_j p_j |v_jc| / l <= 2^-8 max_j |v_jc| (README,
// "Low precision"; tests/low_precision_test.cpp derives its bound from this).
//
// The scale: scaling q in float and rounding it to bfloat16 would add a rounding to every query
// entry, so q is multiplied by the power of two 2^e of the scale only (exact), and the rest f,
// |f| in [1, 2), multiplies the scores as they leave the product; the raw product q' k^T is then
// at most twice the scaled score, so it cannot overflow where the scaled score does not (the
// reason the float path scales q first, score_pipeline.hpp). A scale of magnitude above 1 (q not
// scaled, as on the float path) is all f.
//
// Run only where bf16_path_available(): the avx512 path is the one dispatched and the CPU has
// AVX512_BF16. Elsewhere (and for mixed calls, half, and the decode path's sizes) the float
// kernel widens the bfloat16 operands as it packs them, and the weights are not rounded.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention/detail/cpu_features.hpp"
#include "attention/detail/row_math.hpp"
#include "attention/kernels/bf16_micro_kernels.hpp"
#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/forward_tiles.hpp"
#include "attention/kernels/mask_ref.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/target_regions.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// True where all-bfloat16 calls of the forward's tile sizes take the vdpbf16ps kernel: the
/// dispatched path is avx512 (so ATTENTION_ISA=avx2 or baseline turns it off) and the CPU has
/// AVX512_BF16.
[[nodiscard]] inline bool bf16_path_available() {
#if ATTENTION_HAS_DISPATCH
  return active_path() == Isa::avx512 && cpu_features().avx512_bf16;
#else
  return false;
#endif
}

/// The factors of a call's scale on the bfloat16 path (top of this file): scale = query_factor *
/// score_factor, query_factor a power of two (or 0 for a scale of 0) that multiplies q exactly,
/// score_factor of magnitude in [1, 2) (or the whole scale when it exceeds 1 in magnitude).
struct Bf16ScaleSplit {
  float query_factor, score_factor;
};

/// The split of rules.scale (see Bf16ScaleSplit and the top of this file).
inline Bf16ScaleSplit split_scale(const ScoreRules<float>& rules) {
  if (!rules.scales_queries()) return {1.0f, rules.scale};
  if (rules.scale == 0.0f) return {0.0f, 1.0f};
  int exponent = 0;
  (void)std::frexp(rules.scale, &exponent);  // |scale| = m 2^exponent, m in [0.5, 1)
  const float power = std::ldexp(1.0f, exponent - 1);
  return {power, rules.scale / power};  // division by a power of two: exact
}

}  // namespace attention::detail::kernels

#if ATTENTION_HAS_DISPATCH

ATTENTION_TARGET_AVX512_BF16_BEGIN

namespace attention::detail::kernels::avx512_bf16 {

/// The float value of a bfloat16's bits (exact).
inline float widen_bits(std::uint16_t bits) {
  const std::uint32_t word = static_cast<std::uint32_t>(bits) << 16;
  float x = 0;
  std::memcpy(&x, &word, sizeof x);
  return x;
}

/// A query row, times query_factor (a power of two or 0: exact), as (d + 1) / 2 pairs, the pair
/// past an odd d completed with 0.
inline void load_query_pairs(const Eigen::bfloat16* q, Index d, float query_factor, Pair* out) {
  const auto bits = [&](Index c) {
    return bf16_bits(
        query_factor == 1.0f ? q[c] : Eigen::bfloat16(static_cast<float>(q[c]) * query_factor));
  };
  Index t = 0;
  for (; 2 * t + 1 < d; ++t) out[t] = bf16_pair(bits(2 * t), bits(2 * t + 1));
  if (2 * t < d) out[t] = bf16_pair(bits(2 * t), 0);
}

/// o (rows x d_v, row stride dvp) += p v_tile one weight at a time, skipping weights of 0: for
/// calls whose values hold a NaN or an infinity, where 0 * inf in a pair's product would be NaN.
/// p is the tile's rows of bfloat16 weights (row stride lds floats, round_weights_to_pairs).
inline void accumulate_skipping_zero_weights(const float* p, Index lds, Index rows, Index cols,
                                             const Pair* v_panel, Index d_v, float* o, Index dvp) {
  constexpr Index chunk = Bf16Geometry::chunk, bc = Bf16Geometry::block_cols;
  for (Index r = 0; r < rows; ++r) {
    for (Index j = 0; j < cols; ++j) {
      std::uint16_t weight_bits = 0;
      std::memcpy(&weight_bits, reinterpret_cast<const char*>(p + r * lds) + 2 * j, 2);
      if ((weight_bits & 0x7fffu) == 0) continue;  // +-0 adds nothing, even to an inf value
      const float weight = widen_bits(weight_bits);
      for (Index c = 0; c < d_v; ++c) {
        const Pair pair = v_panel[c / chunk * (bc / 2 * chunk) + j / 2 * chunk + c % chunk];
        const auto value_bits = static_cast<std::uint16_t>(j % 2 == 0 ? pair : pair >> 16);
        o[r * dvp + c] += weight * widen_bits(value_bits);
      }
    }
  }
}

/// One query tile [row0, row0 + rows) against every key tile the mask does not hide
/// (walk_key_tiles, with the products on pairs; the steps are at the top of this file). pb's
/// rules hold the soft-cap only: the scale is `scale`, split between q and the scores.
inline void process_query_tile(const Problem<float, Eigen::bfloat16, Pair>& pb,
                               const Bf16ScaleSplit& scale, const MaskRef<float>& mask, Index row0,
                               Index rows, ThreadWorkspace<float>& ws) {
  using G = Bf16Geometry;
  constexpr Index mr = G::mr, bc = G::block_cols, chunk = G::chunk;
  const Index pairs = (pb.d_k + 1) / 2, dvp = pb.d_v_padded;
  const Index rows_padded = round_up(rows, mr);

  // The query tile as pairs, zero-padded to a multiple of mr rows.
  Pair* const qt = reinterpret_cast<Pair*>(ws.q_tile.data());
  for (Index r = 0; r < rows; ++r) {
    load_query_pairs(pb.q + (row0 + r) * pb.ldq, pb.d_k, scale.query_factor, qt + r * pairs);
  }
  std::fill(qt + rows * pairs, qt + rows_padded * pairs, Pair(0));

  // s = f (q' k_tile^T) (Alg. 1, line 8) on rows [r_begin, r_end), panel column by panel column
  // (each stays in L1 while every row group reads it); columns past round_up(cols, nr) are not
  // computed.
  const auto scores = [&](Index kb, Index cols, float* s, Index r_begin, Index r_end) {
    const Pair* const k_panel = pb.k_packed + kb * pairs * bc;
    const Index live = std::min(bc, round_up(cols, G::nr));
    for (Index c = 0; c < live; c += G::nr) {
      for (Index r = r_begin; r < r_end; r += mr) {
        qk_bf16_micro_kernel<mr>(qt + r * pairs, pairs, k_panel + c, bc, pairs, scale.score_factor,
                                 s + r * bc + c, bc);
      }
    }
  };
  // o += p v_tile (line 10) on rows [r_begin, r_end), the rows' weights first rounded to bfloat16
  // pairs in place (the padding rows' zeros are pairs of zeros). To assign, o's rows are cleared
  // first (the micro-kernel adds).
  const auto accumulate = [&](Index kb, Index cols, float* p, float* o, Index r_begin, Index r_end,
                              bool assign) {
    if (assign) std::fill(o + r_begin * dvp, o + r_end * dvp, 0.0f);
    const Index live_end = std::min(r_end, rows);
    for (Index r = r_begin; r < live_end; ++r) round_weights_to_pairs(p + r * bc, cols);
    const Pair* const v_panel = pb.v_packed + kb * (bc / 2) * dvp;
    if (!pb.values_finite) {
      accumulate_skipping_zero_weights(p + r_begin * bc, bc, live_end - r_begin, cols, v_panel,
                                       pb.d_v, o + r_begin * dvp, dvp);
      return;
    }
    const Index key_pairs = (cols + 1) / 2;
    const Pair* const weights = reinterpret_cast<const Pair*>(p);  // row r at weights + r * bc
    for (Index r = r_begin; r < r_end; r += mr) {
      for (Index c = 0; c < dvp; c += chunk) {
        pv_bf16_micro_kernel<mr>(weights + r * bc, bc, v_panel + c / chunk * (bc / 2 * chunk),
                                 key_pairs, o + r * dvp + c, dvp);
      }
    }
  };
  avx512::walk_key_tiles<G>(pb, mask, row0, rows, ws, scores, accumulate);
}

/// multi_head_attention (forward.hpp) for all-bfloat16 heads, on pairs: as forward.inc's
/// forward_heads (the same ForwardJobs: packing steps, threads and order of tiles), with K and V
/// packed as bfloat16 pairs instead of widened. Not for the decode path's sizes (the caller
/// checks).
inline void forward_heads(const HeadOperands<float, Eigen::bfloat16, Eigen::bfloat16>* heads,
                          Index num_heads, Index num_queries, Index num_keys, Index d, Index d_v,
                          const ScoreRules<float>& rules, const MaskRef<float>& mask,
                          CallWorkspace<float>& workspace, Index heads_per_kv) {
  using G = Bf16Geometry;
  constexpr Index bc = G::block_cols;
  const ForwardJobs jobs(num_heads, heads_per_kv, num_queries, num_keys, d, d_v, G::block_rows, bc,
                         sizeof(Eigen::bfloat16));
  const Index pairs = (d + 1) / 2;
  const Index d_v_padded = round_up(d_v, G::chunk);
  // max |v| as on the float path: whether p v must skip zero weights, and the power of two that
  // keeps the unnormalised accumulator (up to S max|v|) finite.
  const ValueRange<float> range =
      avx512::value_range(heads, jobs.num_kv_heads, heads_per_kv, num_keys, d_v);
  const float value_scale = overflow_rescale(range.max_finite, 1.0f, num_keys);
  // Panels in pairs, held in the float workspace's buffers (a pair is 4 bytes, as a float).
  const Index k_panel_size = jobs.num_key_blocks * pairs * bc;
  const Index v_panel_size = jobs.num_key_blocks * (bc / 2) * d_v_padded;
  workspace.reserve(jobs.panel_slots() * k_panel_size, jobs.panel_slots() * v_panel_size,
                    jobs.threads, G::block_rows, bc, d, d_v_padded);
  Pair* const k_packed = reinterpret_cast<Pair*>(workspace.k_packed.data());
  Pair* const v_packed = reinterpret_cast<Pair*>(workspace.v_packed.data());
  const ScoreRules<float> tile_rules{1.0f, rules.softcap};
  const Bf16ScaleSplit scale = split_scale(rules);
  jobs.run(
      [&](Index kv_head, Index slot, Index kb) {
        const auto& h = heads[kv_head * heads_per_kv];
        pack_key_pairs(h.k, h.ldk, num_keys, d, kb,
                       k_packed + slot * k_panel_size + kb * pairs * bc);
        pack_value_pairs(h.v, h.ldv, num_keys, d_v, kb, value_scale,
                         v_packed + slot * v_panel_size + kb * (bc / 2) * d_v_padded);
      },
      [&](Index head, Index slot, Index row0, Index rows, int thread) {
        const auto& h = heads[head];
        const Problem<float, Eigen::bfloat16, Pair> pb{h.q,
                                                       h.ldq,
                                                       num_queries,
                                                       num_keys,
                                                       d,
                                                       d_v,
                                                       k_packed + slot * k_panel_size,
                                                       v_packed + slot * v_panel_size,
                                                       d_v_padded,
                                                       bc,
                                                       tile_rules,
                                                       h.out,
                                                       h.ldo,
                                                       h.lse,
                                                       range.finite,
                                                       1.0f / value_scale};
        process_query_tile(pb, scale, mask, row0, rows,
                           workspace.per_thread[static_cast<std::size_t>(thread)]);
      });
}

}  // namespace attention::detail::kernels::avx512_bf16

ATTENTION_TARGET_END

#endif  // ATTENTION_HAS_DISPATCH
