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
#include <limits>
#include <numeric>

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

/// exp(x[j] - shift) (Simd::exp_weight) for the block_cols scores of a row, stored over the row
/// as bfloat16 pairs (round_weights_to_pairs' layout and rounding, in place as there: the words a
/// step writes lie below the floats it has read); returns the lane-wise sum of the float weights
/// in order, exp_weight_vectors' sum (score_pipeline.inc). shift > -inf.
inline __m512 exp_weights_to_pairs(float* x, float shift) {
  using V = avx512::Simd<float>;
  const __m512 shift_v = V::broadcast(shift);
  __m512 sum = V::zero();
  Pair* const out = reinterpret_cast<Pair*>(x);
  for (Index j = 0; j < Bf16Geometry::block_cols; j += 32) {
    const __m512 low = V::exp_weight(V::sub(V::loadu(x + j), shift_v));
    sum = V::add(sum, low);
    const __m512 high = V::exp_weight(V::sub(V::loadu(x + j + 16), shift_v));
    sum = V::add(sum, high);
    _mm512_storeu_si512(out + j / 2, (__m512i)_mm512_cvtne2ps_pbh(high, low));  // NOLINT
  }
  return sum;
}

/// The online softmax step of a whole key tile (block_cols keys, every one visible, no score rule
/// to apply) for rows [0, rows) of s (row stride block_cols), fused with the passes around it on
/// this kernel: update_rows (score_pipeline.inc) takes each row's max from a pass over its scores,
/// stores the weights exp(s - m_new) as floats, and round_weights_to_pairs reads them back to
/// round them. Here row r's lane-wise max is row_max[r], kept by the q k^T micro-kernels as the
/// scores left them (the vectors and order of vector_max), and the weights go to bfloat16 pairs
/// as they are computed. Otherwise update_rows' steps, in groups of 16 rows: the rows' maxima and
/// sums reduced across lanes by max_each and sum_each, m_new = max(m, tile max), l and o moved on
/// by absorb's alpha (o rescaled unless null, the first key tile). The same operations on the same
/// values as update_rows and round_weights_to_pairs, so the same bits. Rows [rows, rows_padded)
/// (padding) get zero weights.
inline void update_rows_to_pairs(OnlineSoftmax<float>* state, float* s, const __m512* row_max,
                                 Index rows, Index rows_padded, float* o, Index ldo) {
  using V = avx512::Simd<float>;
  constexpr Index w = V::width, bc = Bf16Geometry::block_cols;
  constexpr float minus_inf = -std::numeric_limits<float>::infinity();
  for (Index r0 = 0; r0 < rows; r0 += w) {
    const Index group = std::min(w, rows - r0);
    alignas(64) float m_new[w], sum[w];
    __m512 part[w];
    for (Index i = 0; i < w; ++i) part[i] = i < group ? row_max[r0 + i] : V::broadcast(minus_inf);
    V::store(m_new, V::max_each(part));
    for (Index i = 0; i < group; ++i) m_new[i] = state[r0 + i].max_with(m_new[i]);
    for (Index i = 0; i < w; ++i) {
      part[i] = V::zero();
      if (i < group && m_new[i] != minus_inf) {
        part[i] = exp_weights_to_pairs(s + (r0 + i) * bc, m_new[i]);
      }
    }
    V::store(sum, V::sum_each(part));
    for (Index i = 0; i < group; ++i) {
      if (m_new[i] == minus_inf) {  // no visible entry yet: weights 0, not exp(-inf - -inf)
        std::fill(s + (r0 + i) * bc, s + (r0 + i + 1) * bc, 0.0f);
        sum[i] = 0.0f;
      }
      const float alpha = state[r0 + i].absorb(m_new[i], sum[i]);
      if (o != nullptr && alpha != 1.0f) {
        float* const o_row = o + (r0 + i) * ldo;
        for (Index c = 0; c < ldo; ++c) o_row[c] *= alpha;
      }
    }
  }
  for (Index r = rows; r < rows_padded; ++r) std::fill(s + r * bc, s + (r + 1) * bc, 0.0f);
}

/// One query tile [row0, row0 + rows) against every key tile the mask does not hide, on pairs
/// (the steps are at the top of this file): forward_tiles.inc's walk_key_tiles, whose steps this
/// follows, with one addition. A key tile of block_cols keys that the mask shows whole to the
/// tile, with no score rule to apply (no soft-cap), takes update_rows_to_pairs: the rows' maxima
/// come from the q k^T micro-kernels and the weights go straight to bfloat16 pairs, one pass over
/// the scores where walk_key_tiles' update_rows and the rounding make three (at d = 64 the
/// softmax step was about a fifth of a call, the products running at twice the float kernel's
/// rate). Other key tiles (the last, shorter one; mixed ones, in bands; soft-capped scores) go
/// through walk_key_tiles' steps. Either way the same bits. pb's rules hold the soft-cap only:
/// the scale is `scale`, split between q and the scores.
inline void process_query_tile(const Problem<float, Eigen::bfloat16, Pair>& pb,
                               const Bf16ScaleSplit& scale, const MaskRef<float>& mask, Index row0,
                               Index rows, ThreadWorkspace<float>& ws) {
  using G = Bf16Geometry;
  constexpr Index mr = G::mr, bc = G::block_cols, chunk = G::chunk, w = 16;
  constexpr Index band_rows = mr * w / std::gcd(mr, w);  // as walk_key_tiles
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
  // computed. With row_max (whole tiles), each row's lane-wise max as well.
  float* const s = ws.scores.data();
  alignas(64) __m512 row_max[G::block_rows];
  const auto scores = [&](Index kb, Index cols, Index r_begin, Index r_end, bool track_max) {
    const Pair* const k_panel = pb.k_packed + kb * pairs * bc;
    const Index live = std::min(bc, round_up(cols, G::nr));
    for (Index c = 0; c < live; c += G::nr) {
      for (Index r = r_begin; r < r_end; r += mr) {
        qk_bf16_micro_kernel<mr>(qt + r * pairs, pairs, k_panel + c, bc, pairs, scale.score_factor,
                                 s + r * bc + c, bc, track_max ? row_max + r : nullptr, c == 0);
      }
    }
  };
  // o += p v_tile (line 10) on rows [r_begin, r_end), p already bfloat16 pairs (row r at
  // s + r * bc; zeros in the padding rows). To assign, o's rows are cleared first (the
  // micro-kernel adds).
  float* const o = ws.o_acc.data();
  const auto accumulate = [&](Index kb, Index cols, Index r_begin, Index r_end, bool assign) {
    if (assign) std::fill(o + r_begin * dvp, o + r_end * dvp, 0.0f);
    const Pair* const v_panel = pb.v_packed + kb * (bc / 2) * dvp;
    if (!pb.values_finite) {
      accumulate_skipping_zero_weights(s + r_begin * bc, bc, std::min(r_end, rows) - r_begin, cols,
                                       v_panel, pb.d_v, o + r_begin * dvp, dvp);
      return;
    }
    const Index key_pairs = (cols + 1) / 2;
    const Pair* const weights = reinterpret_cast<const Pair*>(s);  // row r at weights + r * bc
    for (Index r = r_begin; r < r_end; r += mr) {
      for (Index c = 0; c < dvp; c += chunk) {
        pv_bf16_micro_kernel<mr>(weights + r * bc, bc, v_panel + c / chunk * (bc / 2 * chunk),
                                 key_pairs, o + r * dvp + c, dvp);
      }
    }
  };

  // With a NaN or inf among the values p v skips zero weights one by one, adding into o: cleared.
  bool first = pb.values_finite;
  if (!first) std::fill(o, o + rows_padded * dvp, 0.0f);
  OnlineSoftmax<float> state[G::block_rows];

  // walk_key_tiles' band: rows [r_begin, r_end) against `cols` keys of key block kb.
  const auto band = [&](Index kb, Index col0, Index cols, TileVisibility visibility, Index r_begin,
                        Index r_end) {
    const Index live_end = std::min(r_end, rows);
    scores(kb, cols, r_begin, r_end, false);
    float* const sb = s + r_begin * bc;
    if (pb.rules.changes(visibility)) {
      avx512::apply_rules(pb.rules, sb, bc, live_end - r_begin, cols, mask, row0 + r_begin, col0,
                          visibility);
    }
    avx512::update_rows(state + r_begin, sb, bc, live_end - r_begin, cols,
                        first ? nullptr : o + r_begin * dvp, dvp, dvp);
    for (Index r = live_end; r < r_end; ++r) std::fill(s + r * bc, s + r * bc + cols, 0.0f);
    for (Index r = r_begin; r < live_end; ++r) round_weights_to_pairs(s + r * bc, cols);
    accumulate(kb, cols, r_begin, r_end, first);
  };

  const Index num_key_blocks = (pb.num_keys + bc - 1) / bc;
  for (Index kb = 0; kb < num_key_blocks; ++kb) {
    const Index col0 = kb * bc;
    const Index cols = std::min(bc, pb.num_keys - col0);
    const TileVisibility visibility = mask.visibility(row0, rows, col0, cols);
    if (visibility == TileVisibility::hidden) continue;  // contributes exp(-inf) = 0 to every row
    if (visibility == TileVisibility::visible && cols == bc && !pb.rules.changes(visibility)) {
      scores(kb, cols, 0, rows_padded, true);
      update_rows_to_pairs(state, s, row_max, rows, rows_padded, first ? nullptr : o, dvp);
      accumulate(kb, cols, 0, rows_padded, first);
    } else if (visibility == TileVisibility::visible) {
      band(kb, col0, cols, visibility, 0, rows_padded);
    } else {
      for (Index r = 0; r < rows_padded; r += band_rows) {
        const Index r_end = std::min(rows_padded, r + band_rows);
        const Index seen =
            avx512::seen_columns(mask, row0 + r, std::min(r_end, rows) - r, col0, cols, w);
        band(kb, col0, seen, visibility, r, r_end);
      }
    }
    first = false;
  }

  // out = o / l (Alg. 1, line 12), lse = m + log(l) (line 13).
  for (Index r = 0; r < rows; ++r) {
    avx512::finish_row(state[r], o + r * dvp, pb.d_v, pb.out + (row0 + r) * pb.ldo,
                       pb.lse != nullptr ? pb.lse + row0 + r : nullptr, pb.output_scale);
  }
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
