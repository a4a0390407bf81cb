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
// computes a step it asks for the next step's rows, into L2 (prefetcht1: a step of 16 rows is
// 64 KiB, twice the L1; on Zen 4 this loop ran at about half the speed with prefetcht0 or with no
// prefetch at all). A query row's scores are dot products along d (vectorised along d, not across
// keys as in the tiles), so these rows round differently from the same rows computed by the
// query tiles (a call with more queries): both are within the same bound. A part's arithmetic does
// not depend on which job, step or thread computes it.

#include <Eigen/Core>
#include <algorithm>

#include "attention/kernels/decode_kernels.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Attention for num_heads heads (as multi_head_attention, forward.hpp) by the split-key decode
/// path above. heads_per_kv consecutive query heads share one K/V head (the same k, ldk, v, ldv).
template <typename Scalar, typename Mask>
void decode_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                      Index num_keys, Index d, Index d_v, const ScoreRules<Scalar>& rules,
                      const Mask& mask, CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1) {
  using Row = Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  using ConstRow = Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  constexpr Index w = Simd<Scalar>::width, chunk = decode_chunk, step = decode_step;
  eigen_assert(heads_per_kv >= 1 && num_heads % heads_per_kv == 0);
  const Index num_groups = num_heads / heads_per_kv;
  const Index rows = heads_per_kv * num_queries;  // stacked: row hg * L + l is query l of head hg
  // The mask bound to this call's L and S once (mask.hpp); every chunk asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);
  const Index rows_padded = round_up(rows, 4);
  const Index d_padded = round_up(d, w), d_v_padded = round_up(d_v, w);
  const DecodeJobs jobs(num_keys, num_groups);
  const Index num_chunks = jobs.num_chunks;
  DecodeBuffers<Scalar>& buffers = workspace.decode;
  buffers.reserve(num_groups, num_chunks, jobs.groups_per_job, rows_padded, d_padded, d_v_padded,
                  chunk, jobs.threads);
  Scalar* const partial_o = buffers.partial_o.data();
  OnlineSoftmax<Scalar>* const partial_state = buffers.partial_state.data();
  Scalar* const q_rows = buffers.q_rows.data();

  // Every group's query rows, times the score pipeline's query factor, zero-padded to d_padded
  // columns and rows_padded rows.
  for (Index g = 0; g < num_groups; ++g) {
    for (Index r = 0; r < rows_padded; ++r) {
      Row dst(q_rows + (g * rows_padded + r) * d_padded, d_padded);
      dst.setZero();
      if (r >= rows) continue;
      const HeadOperands<Scalar>& h = heads[g * heads_per_kv + r / num_queries];
      rules.load_query(h.q + (r % num_queries) * h.ldq, d, dst.data());
    }
  }

  run_parallel(jobs.threads, [&] {
    Scalar* const s_thread = buffers.scores[static_cast<std::size_t>(thread_index())].data();
    share_dynamic(jobs.jobs, [&](Index job) {
      const Index c = job / jobs.jobs_per_chunk;
      const Index g_begin = job % jobs.jobs_per_chunk * jobs.groups_per_job;
      const Index g_end = std::min(num_groups, g_begin + jobs.groups_per_job);
      const Index col0 = c * chunk, cols = std::min(chunk, num_keys - col0);
      const auto part = [&](Index g) { return (g * num_chunks + c) * rows_padded; };
      const auto scores = [&](Index g) { return s_thread + (g - g_begin) * rows_padded * chunk; };
      const TileVisibility visibility = bound_mask.visibility(0, num_queries, col0, cols);
      if (visibility == TileVisibility::hidden) {
        for (Index g = g_begin; g < g_end; ++g) {
          std::fill(partial_state + part(g), partial_state + part(g) + rows,
                    OnlineSoftmax<Scalar>{});
        }
        return;
      }
      // s = q' k^T, a step of keys at a time across the K/V heads.
      for (Index j0 = 0; j0 < cols; j0 += step) {
        const Index n = std::min(step, cols - j0);
        for (Index g = g_begin; g < g_end; ++g) {
          const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
          // The next step's keys; after the last, the chunk's first values.
          const RowsAhead<Scalar> ahead =
              j0 + n < cols
                  ? RowsAhead<Scalar>{kv.k + (col0 + j0 + n) * kv.ldk, kv.ldk, d,
                                      std::min(step, cols - j0 - n)}
                  : RowsAhead<Scalar>{kv.v + col0 * kv.ldv, kv.ldv, d_v, std::min(step, cols)};
          decode_scores(q_rows + g * rows_padded * d_padded, rows_padded, d_padded, d,
                        kv.k + (col0 + j0) * kv.ldk, kv.ldk, n, scores(g) + j0, chunk, ahead);
        }
      }
      // The score pipeline on each query head's rows, then the chunk's online softmax state per
      // row, from scratch: p = exp(s - m_c) in place (0 exactly where s = -inf).
      for (Index g = g_begin; g < g_end; ++g) {
        Scalar* const s = scores(g);
        if (rules.changes(visibility)) {
          for (Index hg = 0; hg < heads_per_kv; ++hg) {
            rules.apply(s + hg * num_queries * chunk, chunk, num_queries, cols, bound_mask, 0, col0,
                        visibility);
          }
        }
        for (Index r = 0; r < rows_padded; ++r) {
          Scalar* sr = s + r * chunk;
          OnlineSoftmax<Scalar> state;
          if (r < rows) {
            update_row<Scalar>(state, sr, cols, nullptr, 0);
            partial_state[part(g) + r] = state;
          } else {
            std::fill(sr, sr + cols, Scalar(0));  // padding rows weigh nothing
          }
        }
        std::fill(partial_o + part(g) * d_v_padded,
                  partial_o + (part(g) + rows_padded) * d_v_padded, Scalar(0));
      }
      // o_c = p v_chunk, a step of keys at a time across the K/V heads.
      for (Index j0 = 0; j0 < cols; j0 += step) {
        const Index n = std::min(step, cols - j0);
        for (Index g = g_begin; g < g_end; ++g) {
          const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
          const RowsAhead<Scalar> ahead =
              j0 + n < cols ? RowsAhead<Scalar>{kv.v + (col0 + j0 + n) * kv.ldv, kv.ldv, d_v,
                                                std::min(step, cols - j0 - n)}
                            : RowsAhead<Scalar>{};
          decode_values(scores(g) + j0, chunk, rows_padded, kv.v + (col0 + j0) * kv.ldv, kv.ldv, n,
                        d_v, partial_o + part(g) * d_v_padded, d_v_padded, ahead);
        }
      }
      // Each part is normalised, o_c / l_c (PartialAttention's output): a convex combination of
      // the chunk's values, so the merge below cannot overflow where the result does not (the
      // unnormalised o_c reaches decode_chunk max|v|, and their merged sum S max|v|). A
      // non-finite o_c is recomputed, normalised, skipping zero weights: a weight of exactly 0
      // must add nothing even against a NaN or inf value (0 * NaN = NaN), and finite values
      // whose o_c overflowed give their finite result. (V is not scanned beforehand, which would
      // read it a second time.)
      for (Index g = g_begin; g < g_end; ++g) {
        const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
        const Scalar* const vt = kv.v + col0 * kv.ldv;
        for (Index r = 0; r < rows; ++r) {
          const Scalar lc = partial_state[part(g) + r].l;
          if (lc == Scalar(0)) continue;  // no visible key: o_c is 0
          Row o_row(partial_o + (part(g) + r) * d_v_padded, d_v);
          if (o_row.allFinite()) {
            o_row /= lc;
            continue;
          }
          const Scalar* p = scores(g) + r * chunk;
          o_row.setZero();
          for (Index j = 0; j < cols; ++j) {
            if (p[j] != Scalar(0)) o_row += (p[j] / lc) * ConstRow(vt + j * kv.ldv, d_v);
          }
        }
      }
    });

    // Merge the chunks of each row in chunk order (merge_parts, online_softmax.hpp).
    share_static(num_heads * num_queries, [&](Index row) {
      const Index head = row / num_queries, query = row % num_queries;
      const Index g = head / heads_per_kv;
      const Index r = (head % heads_per_kv) * num_queries + query;  // stacked row in the group
      const auto at = [&](Index c) { return (g * num_chunks + c) * rows_padded + r; };
      const HeadOperands<Scalar>& h = heads[head];
      Row out(h.out + query * h.ldo, d_v);
      out.setZero();
      const OnlineSoftmax<Scalar> merged = merge_parts<Scalar>(
          num_chunks, [&](Index c) { return partial_state[at(c)]; },
          [&](Index c, Scalar coefficient) {
            out += coefficient * ConstRow(partial_o + at(c) * d_v_padded, d_v);
          });
      if (h.lse != nullptr) h.lse[query] = merged.lse();
    });
  });
}

}  // namespace attention::detail::kernels
