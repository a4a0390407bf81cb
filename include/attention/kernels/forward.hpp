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
// The walk over the key tiles is forward_tiles.hpp's, shared with the bfloat16 kernel
// (bf16_forward.hpp); this file brings the products and the packing.
//
// Extra memory: K and V packed once per call (S x d_k and S x d_v, K transposed into panels so the
// micro-kernel reads contiguous vectors of keys, V into panels of 2-vector column chunks so that a
// micro-tile reads its values as one contiguous run; a copy per thread when all copies take at
// most 4 MiB, ForwardJobs in scheduling.hpp), and per thread
// O(block_rows x (block_cols + d_k + d_v)) scalars. Nothing grows with L x S. Calls of a few
// queries against many keys go to decode.hpp instead.
//
// Threads: query tiles are shared out among the threads (ForwardJobs, scheduling.hpp), a step's
// last ones in halves; every query row is computed by one thread with the same instruction
// sequence whatever the thread count, so results are bitwise identical for any number of threads.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/bf16_forward.hpp"
#include "attention/kernels/decode.hpp"
#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/forward_tiles.hpp"
#include "attention/kernels/mask_ref.hpp"
#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

#define ATTENTION_KERNEL_BODY "attention/kernels/forward.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::kernels {

/// Attention for `num_heads` heads that share sizes and mask: every head has num_queries queries,
/// num_keys keys, widths d_k and d_v. Shapes were checked by the caller; outputs must not alias
/// inputs. All heads run in one parallel region, over (head, query tile) pairs; calls of a few
/// queries against many keys (use_decode_path) take the split-key decode path instead.
/// Grouped-query attention: heads_per_kv consecutive query heads share one key/value head, i.e.
/// heads [g * heads_per_kv, (g + 1) * heads_per_kv) have the same k, ldk, v and ldv (the caller
/// points them at the same columns; nothing is copied per query head). K (and V, when it is packed)
/// is then packed once per KV head, from the group's first head. heads_per_kv must divide
/// num_heads.
/// q and out may be of QElement and k and v of KVElement, Eigen::half or Eigen::bfloat16 for a
/// Scalar of float (but not on the decode path's sizes), widened in registers while the tiles are
/// loaded and packed (forward.inc, forward_heads).
/// Runs on the instruction set of active_path() (dispatch.hpp). Calls whose q, k and v are all
/// Eigen::bfloat16 take the vdpbf16ps kernel of bf16_forward.hpp instead where
/// bf16_path_available() (avx512 path, a CPU with AVX512_BF16), except at the decode path's sizes:
/// it rounds the softmax weights to bfloat16 for the product with v (bf16_forward.hpp says why
/// that is the one extra rounding).
template <typename Scalar, typename QElement, typename KVElement, typename Mask>
void multi_head_attention(const HeadOperands<Scalar, QElement, KVElement>* heads, Index num_heads,
                          Index num_queries, Index num_keys, Index d, Index d_v,
                          const ScoreRules<Scalar>& rules, const Mask& mask,
                          CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1) {
  const BoundMaskRef<Scalar, Mask> bound(mask, num_queries, num_keys);
#if ATTENTION_HAS_DISPATCH
  if constexpr (std::is_same_v<Scalar, float> && std::is_same_v<QElement, Eigen::bfloat16> &&
                std::is_same_v<KVElement, Eigen::bfloat16>) {
    if (bf16_path_available() && !use_decode_path(num_queries, num_keys)) {
      avx512_bf16::forward_heads(heads, num_heads, num_queries, num_keys, d, d_v, rules, bound.ref,
                                 workspace, heads_per_kv);
      return;
    }
  }
#endif
  ATTENTION_DISPATCH(Scalar, forward_heads, heads, num_heads, num_queries, num_keys, d, d_v, rules,
                     bound.ref, workspace, heads_per_kv);
}

/// Single-head attention: out = softmax(scores) v through the score pipeline of `rules`, and lse
/// (if not null) per row. q and out may be of QElement and k and v of KVElement (as
/// multi_head_attention).
template <typename Scalar, typename QElement = Scalar, typename KVElement = Scalar, typename Mask>
void attention(ConstMatrixRef<QElement> q, ConstMatrixRef<KVElement> k, ConstMatrixRef<KVElement> v,
               MatrixRef<QElement> out, Scalar* lse, const Mask& mask,
               const ScoreRules<Scalar>& rules, CallWorkspace<Scalar>& workspace) {
  const HeadOperands<Scalar, QElement, KVElement> head{
      q.data(),   q.outerStride(),   k.data(), k.outerStride(), v.data(), v.outerStride(),
      out.data(), out.outerStride(), lse};
  multi_head_attention(&head, 1, q.rows(), k.rows(), q.cols(), v.cols(), rules, mask, workspace);
}

}  // namespace attention::detail::kernels
