#pragma once
// SPDX-License-Identifier: MIT
//
// One unit of the tiled backward (backward.hpp): a key span against every query block, depending on
// the instruction set (the products run on micro_kernels.hpp). From q, k and the forward's saved
// log-sum-exp it recomputes one block_rows x span tile of weights at a time through the score
// pipeline (score_pipeline.hpp) and turns it into gradients (FlashAttention-2 backward, Dao 2023,
// Alg. 2):
//
//   s  = q'_i k_j^T, then ScoreRules::apply: scaled, capped, masked        (Alg. 2, line 11)
//   p  = exp(s - lse_i)                       exactly the forward's weights (line 13)
//   dv_j += pᵀ do_i                                                          (line 16)
//   dp = do_i v_jᵀ                                                           (line 17)
//   ds = p ∘ (dp − delta_i),   delta_i = rowsum(do_i ∘ o_i) = rowsum(dp ∘ p)  (lines 4, 19)
//   dq_i += scale · ds k_j,   dk_j += scale · dsᵀ q_i                      (lines 20-21)
//        (soft-capped: ds ∘ (1 − tanh²) in place of ds there; dbias stays ds)

#include <algorithm>
#include <cstring>
#include <limits>

#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// accumulate_product and multiply_by_panel (micro_kernels.hpp), kept out of line here: inlined,
/// the five product loops of process_key_span share one huge function body whose register
/// allocation costs the micro-kernels speed (N = 4096, d = 128, one thread: 210-215 -> 209-210 ms;
/// the five products then take ~93% of the time, in their own functions at ~93% of the FMA peak).
template <bool TransposedP = false, typename Scalar>
EIGEN_DONT_INLINE void backward_product(const Scalar* p, Index ldp, Index rows, const Scalar* v,
                                        Index ldv, Index n, Scalar* o, Index ldo, Index width) {
  accumulate_product<TransposedP>(p, ldp, rows, v, ldv, n, o, ldo, width);
}
template <typename Scalar>
EIGEN_DONT_INLINE void backward_scores(const Scalar* a, Index lda, Index rows, const Scalar* panel,
                                       Index d, Scalar* s, Index lds) {
  multiply_by_panel(a, lda, rows, panel, d, s, lds);
}

/// The inputs of the backward after padding and packing, shared by every thread.
template <typename Scalar>
struct BackwardProblem {
  Index num_queries, num_keys, d_k, d_v, d_k_padded, d_v_padded;
  ScoreRules<Scalar> rules;  // q below is already multiplied by rules.query_factor()
  const Scalar* q;           // rows_padded x d_k_padded, zero past the real entries
  const Scalar* k;           // keys_padded x d_k_padded, zero past the real entries
  const Scalar* k_panels;    // one d_k x block_cols panel per key block (pack_key_block)
  const Scalar* v_panels;    // one d_v x block_cols panel per key block
  const Scalar* d_out;       // rows_padded x d_v_padded, zero past the real entries
  const Scalar* lse;         // rows_padded; -inf for a query that sees no key, and past the last
  const Scalar* delta;       // rows_padded: rowsum(d_out ∘ out)
  Scalar* dk;                // outputs, caller's layout
  Index lddk;
  Scalar* dv;
  Index lddv;
  Scalar* dbias;  // L x S, or null
  Index lddbias;
};

/// Key span `span` (KeySpan key blocks) against every query block the mask does not hide: writes
/// dk and dv for its keys (and its columns of dbias), and adds its contributions to dq into
/// dq_partial (rows_padded x d_k_padded, unscaled).
template <Index KeySpan, typename Scalar, typename Mask>
void process_key_span(const BackwardProblem<Scalar>& pb, const Mask& mask, Index span,
                      Scalar* dq_partial, unsigned char* dq_block_started,
                      BackwardThreadWorkspace<Scalar>& ws) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, br = G::block_rows, bc = G::block_cols;
  constexpr Index span_cols = KeySpan * bc;  // row stride of the p and ds tiles
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  using Row = Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  const Index dkp = pb.d_k_padded, dvp = pb.d_v_padded;
  const Index col0 = span * span_cols;
  const Index cols = std::min(span_cols, pb.num_keys - col0);
  const Index blocks = (cols + bc - 1) / bc;  // key blocks in this span
  Scalar* const p = ws.p.data();
  Scalar* const ds = ws.ds.data();
  Scalar* const dk_acc = ws.dk_acc.data();
  Scalar* const dv_acc = ws.dv_acc.data();
  const bool capped = pb.rules.capped();
  Scalar* const cap_derivative = capped ? ws.softcap_derivative.data() : nullptr;
  std::fill(dk_acc, dk_acc + span_cols * dkp, Scalar(0));
  std::fill(dv_acc, dv_acc + span_cols * dvp, Scalar(0));
  TileVisibility visibility[KeySpan];

  const Index num_query_blocks = (pb.num_queries + br - 1) / br;
  for (Index qb = 0; qb < num_query_blocks; ++qb) {
    const Index row0 = qb * br;
    const Index rows = std::min(br, pb.num_queries - row0);
    const Index rows_padded = round_up(rows, mr);
    bool any_visible = false;
    for (Index b = 0; b < blocks; ++b) {
      const Index block_cols = std::min(bc, cols - b * bc);
      visibility[b] = mask.visibility(row0, rows, col0 + b * bc, block_cols);
      any_visible = any_visible || visibility[b] != TileVisibility::hidden;
    }
    if (!any_visible) continue;  // p = 0: no gradient flows through this tile

    // s = q'_i k_j^T through the score pipeline (Alg. 2, line 11), one key block at a time; a
    // hidden block is all -inf. Then p = exp(s - lse) (line 13), 0 past the last key and in the
    // padding rows.
    for (Index b = 0; b < blocks; ++b) {
      Scalar* sb = p + b * bc;
      const Index c0 = col0 + b * bc, block_cols = std::min(bc, cols - b * bc);
      if (visibility[b] == TileVisibility::hidden) {
        for (Index r = 0; r < rows; ++r) {
          std::fill(sb + r * span_cols, sb + r * span_cols + bc, minus_inf);
        }
        continue;
      }
      backward_scores(pb.q + row0 * dkp, dkp, rows_padded, pb.k_panels + (c0 / bc) * pb.d_k * bc,
                      pb.d_k, sb, span_cols);
      pb.rules.apply(sb, span_cols, rows, block_cols, mask, row0, c0, visibility[b],
                     capped ? cap_derivative + b * bc : nullptr);
    }
    for (Index r = 0; r < rows_padded; ++r) {
      Scalar* pr = p + r * span_cols;
      exp_weights(pr, pr, cols, r < rows ? pb.lse[row0 + r] : minus_inf);
      std::fill(pr + cols, pr + span_cols, Scalar(0));
    }

    // dv_j += pᵀ do_i (line 16).
    backward_product<true>(p, span_cols, span_cols, pb.d_out + row0 * dvp, dvp, rows_padded, dv_acc,
                           dvp, dvp);

    // dp = do_i v_jᵀ (line 17), 0 in hidden blocks; ds = p ∘ (dp − delta) (line 19), in place.
    for (Index b = 0; b < KeySpan; ++b) {
      Scalar* dsb = ds + b * bc;
      if (b >= blocks || visibility[b] == TileVisibility::hidden) {
        for (Index r = 0; r < rows_padded; ++r) {
          std::fill(dsb + r * span_cols, dsb + r * span_cols + bc, Scalar(0));
        }
        continue;
      }
      backward_scores(pb.d_out + row0 * dvp, dvp, rows_padded,
                      pb.v_panels + (col0 / bc + b) * pb.d_v * bc, pb.d_v, dsb, span_cols);
    }
    for (Index r = 0; r < rows_padded; ++r) {
      Row dsr(ds + r * span_cols, span_cols);
      dsr = Row(p + r * span_cols, span_cols) * (dsr - pb.delta[row0 + r]);
    }
    if (pb.dbias != nullptr) {
      for (Index r = 0; r < rows; ++r) {
        std::memcpy(pb.dbias + (row0 + r) * pb.lddbias + col0, ds + r * span_cols,
                    sizeof(Scalar) * cols);
      }
    }
    if (capped) {
      // s' = c tanh(s / c): ds = ds' ∘ (1 − tanh²), on the entries that were computed (elsewhere
      // ds is 0 already, and the derivative buffer holds nothing).
      for (Index b = 0; b < blocks; ++b) {
        if (visibility[b] == TileVisibility::hidden) continue;
        const Index block_cols = std::min(bc, cols - b * bc);
        for (Index r = 0; r < rows; ++r) {
          Row(ds + b * bc + r * span_cols, block_cols) *=
              Row(cap_derivative + b * bc + r * span_cols, block_cols);
        }
      }
    }

    // dq_i += ds k_j and dk_j += dsᵀ q'_i (lines 20-21), unscaled until the end: dq is multiplied
    // by the whole scale, dk by rules.score_factor() (scale · dsᵀ q = score_factor · dsᵀ q', q'
    // the prescaled q). The group's partial dq rows of this query block start at 0 the first time
    // it reaches them (rather than all partials being cleared up front: 16 MiB at N = 4096,
    // d = 128, written once more than needed).
    if (dq_block_started[qb] == 0) {
      std::fill(dq_partial + row0 * dkp, dq_partial + (row0 + rows_padded) * dkp, Scalar(0));
      dq_block_started[qb] = 1;
    }
    backward_product(ds, span_cols, rows_padded, pb.k + col0 * dkp, dkp, span_cols,
                     dq_partial + row0 * dkp, dkp, dkp);
    backward_product<true>(ds, span_cols, span_cols, pb.q + row0 * dkp, dkp, rows_padded, dk_acc,
                           dkp, dkp);
  }

  const Scalar dk_scale = pb.rules.score_factor();
  for (Index c = 0; c < cols; ++c) {
    Scalar* dk_row = pb.dk + (col0 + c) * pb.lddk;
    Scalar* dv_row = pb.dv + (col0 + c) * pb.lddv;
    for (Index x = 0; x < pb.d_k; ++x) dk_row[x] = dk_scale * dk_acc[c * dkp + x];
    std::memcpy(dv_row, dv_acc + c * dvp, sizeof(Scalar) * pb.d_v);
  }
}

}  // namespace attention::detail::kernels
