#pragma once
// SPDX-License-Identifier: MIT
//
// Tiled, streaming scaled dot-product attention (FlashAttention-2 forward, Dao 2023, Alg. 1) on the
// CPU. It never holds the L x S score matrix: each thread takes a tile of block_rows queries and
// walks the key tiles, keeping per query row the online softmax state (m, l) and an unnormalised
// output accumulator o; per tile,
//
//   s = q' k_tile^T           micro_kernels.hpp                             (Alg. 1, line 8)
//   s -> scaled, capped, masked; p = exp(s - m_new), rescale o by alpha     score_pipeline.hpp
//   o += p v_tile             micro_kernels.hpp                             (line 10)
//   finally out = o / l, lse = m + log(l)                                  (lines 12-13)
//
// Extra memory: K packed once per call (S x d_k, transposed into panels so the micro-kernel reads
// contiguous vectors of keys), V packed only when d_v is not a whole number of SIMD vectors or its
// rows are not contiguous, and per thread O(block_rows x (block_cols + d_k + d_v)) scalars.
// Nothing grows with L x S. Calls of a few queries against many keys go to decode.hpp instead.
//
// Threads: query tiles are shared out among the threads (scheduling.hpp); every tile is computed
// by one thread with the same instruction sequence whatever the thread count, so results are
// bitwise identical for any number of threads.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/decode.hpp"
#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Everything the tiles of one head share: its operands after packing, and the sizes.
template <typename Scalar>
struct Problem {
  const Scalar* q;
  Index ldq;
  Index num_queries, num_keys, d_k, d_v;
  const Scalar* k_packed;  // num_key_blocks panels of d_k x block_cols
  const Scalar* v;         // packed or the caller's rows
  Index ldv;
  Index d_v_padded;
  ScoreRules<Scalar> rules;
  Scalar* out;
  Index ldo;
  Scalar* lse;                      // may be null
  bool values_finite;               // false: some value is NaN or inf, p v skips zero weights
  Scalar output_scale = Scalar(1);  // a power of two undoing the packed values' rescale, else 1
};

/// One query tile [row0, row0 + rows) against every key tile the mask does not hide.
template <typename Scalar, typename Mask>
void process_query_tile(const Problem<Scalar>& pb, const Mask& mask, Index row0, Index rows,
                        ThreadWorkspace<Scalar>& ws) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, br = G::block_rows, bc = G::block_cols;
  const Index d = pb.d_k, dvp = pb.d_v_padded;
  const Index rows_padded = round_up(rows, mr);

  // The query tile in contiguous rows, multiplied by the score pipeline's query factor and
  // zero-padded to a multiple of mr rows, so the micro-kernel never reads past the caller's last
  // query.
  Scalar* qt = ws.q_tile.data();
  for (Index r = 0; r < rows; ++r) pb.rules.load_query(pb.q + (row0 + r) * pb.ldq, d, qt + r * d);
  std::fill(qt + rows * d, qt + rows_padded * d, Scalar(0));

  Scalar* o = ws.o_acc.data();
  std::fill(o, o + rows_padded * dvp, Scalar(0));
  OnlineSoftmax<Scalar> state[br];
  Scalar* s = ws.scores.data();

  const Index num_key_blocks = (pb.num_keys + bc - 1) / bc;
  for (Index kb = 0; kb < num_key_blocks; ++kb) {
    const Index col0 = kb * bc;
    const Index cols = std::min(bc, pb.num_keys - col0);
    const TileVisibility visibility = mask.visibility(row0, rows, col0, cols);
    if (visibility == TileVisibility::hidden) continue;  // contributes exp(-inf) = 0 to every row

    // s = q' k_tile^T (Alg. 1, line 8), then the score pipeline and the online softmax step
    // (lines 9-10), one row at a time.
    multiply_by_panel(qt, d, rows_padded, pb.k_packed + kb * d * bc, d, s, bc);
    if (pb.rules.changes(visibility)) {
      pb.rules.apply(s, bc, rows, cols, mask, row0, col0, visibility);
    }
    for (Index r = 0; r < rows; ++r) update_row(state[r], s + r * bc, cols, o + r * dvp, dvp);
    // Padding rows and columns must contribute nothing to p v.
    for (Index r = rows; r < rows_padded; ++r) std::fill(s + r * bc, s + r * bc + cols, Scalar(0));

    // o += p v_tile (Alg. 1, line 10).
    const Scalar* vt = pb.v + col0 * pb.ldv;
    if (!pb.values_finite) {
      // A weight of exactly 0 (a masked key, or one whose exp() underflowed) must add nothing,
      // even when its value row holds a NaN or inf, where 0 * NaN would be NaN.
      for (Index r = 0; r < rows; ++r) {
        Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> o_row(o + r * dvp, pb.d_v);
        for (Index j = 0; j < cols; ++j) {
          const Scalar p = s[r * bc + j];
          if (p != Scalar(0)) {
            o_row += p * Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(vt + j * pb.ldv,
                                                                                   pb.d_v);
          }
        }
      }
      continue;
    }
    accumulate_product(s, bc, rows_padded, vt, pb.ldv, cols, o, dvp, dvp);
  }

  // out = o / l (Alg. 1, line 12), lse = m + log(l) (line 13).
  for (Index r = 0; r < rows; ++r) {
    finish_row(state[r], o + r * dvp, pb.d_v, pb.out + (row0 + r) * pb.ldo,
               pb.lse != nullptr ? pb.lse + row0 + r : nullptr, pb.output_scale);
  }
}

/// Attention for `num_heads` heads that share sizes and mask: every head has num_queries queries,
/// num_keys keys, widths d_k and d_v. Shapes were checked by the caller; outputs must not alias
/// inputs. All heads run in one parallel region, over (head, query tile) pairs; calls of a few
/// queries against many keys (use_decode_path) take the split-key decode path instead.
/// Grouped-query attention: heads_per_kv consecutive query heads share one key/value head, i.e.
/// heads [g * heads_per_kv, (g + 1) * heads_per_kv) have the same k, ldk, v and ldv (the caller
/// points them at the same columns; nothing is copied per query head). K (and V, when it is packed)
/// is then packed once per KV head, from the group's first head. heads_per_kv must divide
/// num_heads.
template <typename Scalar, typename Mask>
void multi_head_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                          Index num_keys, Index d, Index d_v, const ScoreRules<Scalar>& rules,
                          const Mask& mask, CallWorkspace<Scalar>& workspace,
                          Index heads_per_kv = 1) {
  if (use_decode_path(num_queries, num_keys)) {
    decode_attention(heads, num_heads, num_queries, num_keys, d, d_v, rules, mask, workspace,
                     heads_per_kv);
    return;
  }
  using G = Geometry<Scalar>;
  eigen_assert(heads_per_kv >= 1 && num_heads % heads_per_kv == 0);
  const Index num_kv_heads = num_heads / heads_per_kv;
  const Index num_key_blocks = (num_keys + G::block_cols - 1) / G::block_cols;
  const Index num_query_blocks = (num_queries + G::block_rows - 1) / G::block_rows;
  const Index d_v_padded = round_up(d_v, G::width);
  // One pass over V (S x d_v, against L x S x d_v for the product) finds max |v|: whether some
  // value is NaN or inf (then the slower p v that skips zero weights runs), and whether the
  // unnormalised accumulator o, up to S max|v|, could overflow although out = o / l is finite.
  // Then V is packed scaled by a power of two, exactly, and the output scaled back.
  Scalar value_max(0);
  for (Index g = 0; g < num_kv_heads; ++g) {
    const HeadOperands<Scalar>& h = heads[g * heads_per_kv];
    value_max = max_propagate_nan(value_max, max_abs(h.v, h.ldv, num_keys, d_v));
  }
  const bool values_finite = std::isfinite(value_max);
  if (!values_finite) {
    value_max = Scalar(0);
    for (Index g = 0; g < num_kv_heads; ++g) {
      const HeadOperands<Scalar>& h = heads[g * heads_per_kv];
      value_max = std::max(value_max, max_abs_finite(h.v, h.ldv, num_keys, d_v));
    }
  }
  const Scalar value_scale = overflow_rescale(value_max, Scalar(1), num_keys);
  // V is read in place only when its rows are contiguous whole vectors (and not rescaled). Rows
  // further apart (the column views of MultiHeadAttention: d_model apart, 4 KiB for d_model 1024)
  // map a key block's rows onto a few cache sets, which evicts them before the next query row
  // reuses them; packing costs one pass over S x d_v against L x S x d_v for the product.
  const bool pack_values = d_v_padded != d_v || heads[0].ldv != d_v || value_scale != Scalar(1);
  const Index k_panel_size = num_key_blocks * d * G::block_cols;
  const Index v_panel_size = pack_values ? num_keys * d_v_padded : 0;
  const int threads = thread_count(num_heads * std::max(num_query_blocks, num_key_blocks));
  // The KV heads are taken a few at a time (kv_heads_per_step): their K (and V) are packed, then
  // their query tiles run, and only then the next few are packed. Packing every head up front and
  // then running the tiles would stream each head's packed panels back from memory (16 heads of
  // 2048 keys at d = 64 are 16 MiB, against a 1 MiB L2), and taking tiles across heads would swap
  // the cached K/V on every tile; a step of one KV head keeps its 0.5 + 0.5 MiB in L2 while its
  // query tiles reuse them (MHA 1024/16, N = 2048: the attention part ran 15 % slower than one
  // head at a time before).
  const Index tiles_per_kv_head = heads_per_kv * num_query_blocks;
  const Index step_heads = kv_heads_per_step(num_kv_heads, tiles_per_kv_head, threads);
  workspace.reserve(step_heads * k_panel_size, step_heads * v_panel_size, threads, G::block_rows,
                    G::block_cols, d, d_v_padded);
  Scalar* const k_packed = workspace.k_packed.data();
  Scalar* const v_packed = workspace.v_packed.data();
  // The mask bound to this call's L and S once (mask.hpp); every tile asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);
  run_parallel(threads, [&] {
    ThreadWorkspace<Scalar>& ws = workspace.per_thread[static_cast<std::size_t>(thread_index())];
    // Every thread walks the same steps; the work-sharing loops end in barriers, so a step's
    // panels are complete before its tiles start and in use until they end.
    for (Index first_kv = 0; first_kv < num_kv_heads; first_kv += step_heads) {
      const Index step_kv_heads = std::min(step_heads, num_kv_heads - first_kv);
      share_static(step_kv_heads * num_key_blocks, [&](Index job) {
        const Index slot = job / num_key_blocks, kb = job % num_key_blocks;
        const HeadOperands<Scalar>& h = heads[(first_kv + slot) * heads_per_kv];
        pack_key_block(h.k, h.ldk, num_keys, d, kb,
                       k_packed + slot * k_panel_size + kb * d * G::block_cols);
      });
      if (pack_values) {
        share_static(step_kv_heads * num_keys, [&](Index job) {
          const Index slot = job / num_keys, j = job % num_keys;
          const HeadOperands<Scalar>& h = heads[(first_kv + slot) * heads_per_kv];
          Scalar* dst = v_packed + slot * v_panel_size + j * d_v_padded;
          if (value_scale == Scalar(1)) {
            std::memcpy(dst, h.v + j * h.ldv, sizeof(Scalar) * d_v);
          } else {
            Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(dst, d_v) =
                Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(h.v + j * h.ldv, d_v) *
                value_scale;
          }
          std::fill(dst + d_v, dst + d_v_padded, Scalar(0));
        });
      }
      // Tiles are handed out one at a time, head by head, each head's last (under a causal mask,
      // most expensive) first; which thread computes a tile does not change its result.
      share_dynamic(step_kv_heads * tiles_per_kv_head, [&](Index t) {
        const Index head = first_kv * heads_per_kv + t / num_query_blocks;
        const Index row0 = (num_query_blocks - 1 - t % num_query_blocks) * G::block_rows;
        const HeadOperands<Scalar>& h = heads[head];
        const Index slot = head / heads_per_kv - first_kv;
        const Problem<Scalar> pb{h.q,
                                 h.ldq,
                                 num_queries,
                                 num_keys,
                                 d,
                                 d_v,
                                 k_packed + slot * k_panel_size,
                                 pack_values ? v_packed + slot * v_panel_size : h.v,
                                 pack_values ? d_v_padded : h.ldv,
                                 d_v_padded,
                                 rules,
                                 h.out,
                                 h.ldo,
                                 h.lse,
                                 values_finite,
                                 Scalar(1) / value_scale};
        process_query_tile(pb, bound_mask, row0, std::min(G::block_rows, num_queries - row0), ws);
      });
    }
  });
}

/// The former signature: the scale and the soft-cap as trailing arguments.
template <typename Scalar, typename Mask>
void multi_head_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                          Index num_keys, Index d, Index d_v, Scalar scale, const Mask& mask,
                          CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1,
                          Scalar softcap = Scalar(0)) {
  multi_head_attention(heads, num_heads, num_queries, num_keys, d, d_v,
                       ScoreRules<Scalar>{scale, softcap}, mask, workspace, heads_per_kv);
}

/// Single-head attention: out = softmax(scores) v through the score pipeline of `rules`, and lse
/// (if not null) per row.
template <typename Scalar, typename Mask>
void attention(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k, ConstMatrixRef<Scalar> v,
               MatrixRef<Scalar> out, Scalar* lse, const Mask& mask,
               const ScoreRules<Scalar>& rules, CallWorkspace<Scalar>& workspace) {
  const HeadOperands<Scalar> head{q.data(),        q.outerStride(),   k.data(),
                                  k.outerStride(), v.data(),          v.outerStride(),
                                  out.data(),      out.outerStride(), lse};
  multi_head_attention(&head, 1, q.rows(), k.rows(), q.cols(), v.cols(), rules, mask, workspace);
}

}  // namespace attention::detail::kernels
