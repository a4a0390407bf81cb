#pragma once
// SPDX-License-Identifier: MIT
//
// Split-key decode: few queries, many keys. A decoder's step has L = 1 query (or a few) per head
// against S cached keys: forward.hpp's query tiles would give one tile per head, and with them one
// thread to a head and a K panel packed per call (one more pass over K than the attention itself
// needs). Instead, as in flash-decoding (Dao, Haziza, Massa & Sizov, 2023), the keys are cut into
// chunks of decode_chunk keys (scheduling.hpp), and each (K/V head, chunk) part computes attention
// over its chunk alone as a partial result -- per row the online softmax state (m_c, l_c) and the
// normalised out_c = sum_j exp(s_j - m_c) v_j / l_c (partial.hpp's PartialAttention, with
// lse_c = m_c + log l_c). The parts are then merged per row in chunk order (merge_parts,
// online_softmax.hpp): a convex combination of convex combinations of v's rows, which cannot
// overflow where the result is finite. Chunks are fixed by S alone and merged in a fixed order, so
// the result is bitwise identical for any thread count. The query heads that share a K/V head
// (grouped-query attention) are stacked as rows of its parts, so K and V are read once per call,
// in place.
//
// The step is memory-bound: ~4 FLOPs per (8-byte) pair of K and V entries read, well below what a
// core computes in the time memory delivers them. So the order of the reads is what counts. In a
// KV cache a token's K/V heads sit side by side in one row (8 heads x 128 floats = 4 KiB), so one
// head's keys are a page apart, where the hardware prefetcher does not follow; a job per (K/V
// head, chunk) reads 512 bytes of every 4 KiB, and a plain sum over that pattern reached half the
// bandwidth of a sum over the same bytes in address order (8-10 against 18-21 GB/s, one Zen 4
// core, 256 MiB). A job is therefore one chunk of every K/V head (or of a slice of them, when
// there are too few chunks to share among the threads): it walks the chunk's keys a step of
// decode_step keys at a time across all its K/V heads -- whole rows, in address order -- first
// computing the scores q k^T, then, after the chunk's softmax statistics, o = p v. While it
// computes a step it asks for the next step's rows, into L2 (prefetcht1: a step of 16 float rows
// is 64 KiB, twice the L1; on Zen 4 this loop ran at about half the speed with prefetcht0 or with
// no prefetch at all), or into L1 for int8 rows, whose step is 16 KiB (prefetch_lines in
// decode_kernels.inc). A query row's scores are dot products along d (vectorised along d, not
// across keys as in the tiles), so these rows round differently from the same rows computed by the
// query tiles (a call with more queries): both are within the same bound. A part's arithmetic does
// not depend on which job, step or thread computes it.
// K and V may also be rows of a low-precision cache (KVCache<Eigen::bfloat16>,
// KVCache<Eigen::half>, Int8KVCache), read in their stored type and widened in registers
// (decode_kernels.hpp): the step then reads 2 bytes (about 1 for int8) per entry instead of 4, and
// computes as on float rows (int8 with one scale per key and head applied to the dot product and
// to the softmax weight, where the head lies in one group).

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/decode_kernels.hpp"
#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/mask_ref.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

#define ATTENTION_KERNEL_BODY "attention/kernels/decode.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::kernels {

/// Attention for num_heads heads (as multi_head_attention, forward.hpp) by the split-key decode
/// path above, on the instruction set of active_path() (dispatch.hpp). heads_per_kv consecutive
/// query heads share one K/V head (the same k, ldk, v, ldv).
template <typename Scalar, typename Mask>
void decode_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                      Index num_keys, Index d, Index d_v, const ScoreRules<Scalar>& rules,
                      const Mask& mask, CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1) {
  const BoundMaskRef<Scalar, Mask> bound(mask, num_queries, num_keys);
  ATTENTION_DISPATCH(Scalar, decode_heads, heads, num_heads, num_queries, num_keys, d, d_v, rules,
                     bound.ref, workspace, heads_per_kv);
}

/// decode_attention with K and V read from `kv` instead of the heads' k and v: the call's K/V
/// head g (num_heads / heads_per_kv of them) has its keys in kv.k's columns from g * d and its
/// values in kv.v's from g * d_v (the rows of a cache, from its first K/V head of the call). Rows
/// of Eigen::bfloat16, Eigen::half or int8 (Int8KVCache's, in groups that int8_rows_in_place
/// accepts) are widened in registers and then computed as float rows are (int8 scaled as
/// decode_kernels.hpp says). Scalar is float for those types.
template <typename Scalar, typename Element, typename Mask>
void decode_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                      Index num_keys, Index d, Index d_v, const ScoreRules<Scalar>& rules,
                      const Mask& mask, CallWorkspace<Scalar>& workspace,
                      const StoredKV<Element>& kv, Index heads_per_kv) {
  static_assert(std::is_same_v<Element, Scalar> ||
                (std::is_same_v<Scalar, float> && is_widened_v<Element>));
  const BoundMaskRef<Scalar, Mask> bound(mask, num_queries, num_keys);
  ATTENTION_DISPATCH(Scalar, decode_stored_heads, heads, num_heads, num_queries, num_keys, d, d_v,
                     rules, bound.ref, workspace, kv, heads_per_kv);
}

}  // namespace attention::detail::kernels
