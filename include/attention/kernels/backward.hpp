#pragma once
// SPDX-License-Identifier: MIT
//
// The tiled backward of scaled dot-product attention (FlashAttention-2 backward, Dao 2023, Alg. 2)
// on the CPU: pads and packs the inputs, computes delta_i = rowsum(do_i ∘ o_i), runs the key spans
// (backward_tiles.hpp, where the formulas are) and sums the partial dq. It never holds the L x S
// weights.
//
// delta uses the identity rowsum(dP ∘ P) = rowsum(dO Vᵀ ∘ P) = rowsum(dO ∘ P V) = rowsum(dO ∘ O),
// so one dot product per query replaces a pass over the L x S matrix.
//
// Work is split by key spans (key_span_for() consecutive key blocks): a span's dk_j and dv_j are
// accumulated by one thread over all query blocks, so they need no synchronisation. dq_i receives a
// contribution from every span; to keep the result independent of the thread count
// (scheduling.hpp), the spans are dealt round-robin into a fixed number of groups (key_groups,
// which depends on the sizes only), each group accumulates its own partial dq, and the partials are
// summed in group order at the end. Extra memory: padded copies of q, k, d_out, packed k and v
// panels, key_groups partial dq matrices (L x d_k each) and per thread
// O(block_rows x span + span x (d_k + d_v)) scalars -- O(L + S), nothing grows with L x S.

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <limits>

#include "attention/kernels/backward_tiles.hpp"
#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// The tiled backward: given q (L x d_k), k (S x d_k), v (S x d_v), the forward's output `out`
/// (L x d_v) and log-sum-exp `lse` (L), and d_out (L x d_v), writes dq, dk, dv and, if dbias is not
/// null, dbias (L x S, row stride lddbias); `rules` are the forward's scale and soft-cap. Shapes
/// were checked by the caller; the inputs must be finite (the caller takes the materialising path
/// otherwise); outputs must not alias inputs.
template <typename Scalar, typename Mask>
void attention_backward(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                        ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> out, const Scalar* lse,
                        ConstMatrixRef<Scalar> d_out, const Mask& mask,
                        const ScoreRules<Scalar>& rules, MatrixRef<Scalar> dq, MatrixRef<Scalar> dk,
                        MatrixRef<Scalar> dv, Scalar* dbias, Index lddbias,
                        BackwardWorkspace<Scalar>& ws) {
  using G = Geometry<Scalar>;
  constexpr Index br = G::block_rows, bc = G::block_cols;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  const Index num_queries = q.rows(), num_keys = k.rows(), d_k = q.cols(), d_v = v.cols();
  const Index d_k_padded = round_up(d_k, G::width), d_v_padded = round_up(d_v, G::width);
  const Index key_span = key_span_for((num_keys + bc - 1) / bc);
  const Index span_cols = key_span * bc;
  const Index rows_padded = round_up(num_queries, br), keys_padded = round_up(num_keys, span_cols);
  const Index num_key_blocks = (num_keys + bc - 1) / bc, num_spans = keys_padded / span_cols;
  const Index groups = key_groups(num_spans);
  grow(ws.q, rows_padded * d_k_padded);
  grow(ws.k, keys_padded * d_k_padded);
  grow(ws.k_panels, num_key_blocks * d_k * bc);
  grow(ws.v_panels, num_key_blocks * d_v * bc);
  grow(ws.d_out, rows_padded * d_v_padded);
  grow(ws.lse, rows_padded);
  grow(ws.delta, rows_padded);
  grow(ws.dq_partials, groups * rows_padded * d_k_padded);
  const Index num_query_blocks = rows_padded / br;
  ws.dq_block_started.assign(static_cast<std::size_t>(groups * num_query_blocks), 0);
  const int threads = thread_count(std::max(groups, rows_padded / br));
  if (static_cast<int>(ws.per_thread.size()) < threads) ws.per_thread.resize(threads);
  for (auto& t : ws.per_thread) {
    t.reserve(br, max_key_span * bc, d_k_padded, d_v_padded, rules.capped());
  }

  const BackwardProblem<Scalar> pb{num_queries,
                                   num_keys,
                                   d_k,
                                   d_v,
                                   d_k_padded,
                                   d_v_padded,
                                   rules,
                                   ws.q.data(),
                                   ws.k.data(),
                                   ws.k_panels.data(),
                                   ws.v_panels.data(),
                                   ws.d_out.data(),
                                   ws.lse.data(),
                                   ws.delta.data(),
                                   dk.data(),
                                   dk.outerStride(),
                                   dv.data(),
                                   dv.outerStride(),
                                   dbias,
                                   lddbias};
  Scalar* const q_pad = ws.q.data();
  Scalar* const k_pad = ws.k.data();
  Scalar* const d_out_pad = ws.d_out.data();
  Scalar* const lse_pad = ws.lse.data();
  Scalar* const delta = ws.delta.data();
  Scalar* const partials = ws.dq_partials.data();
  unsigned char* const started = ws.dq_block_started.data();
  const Index partial_size = rows_padded * d_k_padded;
  // The mask bound to this call's L and S once (mask.hpp); every tile asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);

  run_parallel(threads, [&] {
    // Padded copies (zero past the real rows and columns), q scaled as the score pipeline asks,
    // delta = rowsum(d_out ∘ out) (Alg. 2, line 4), the packed panels.
    share_static_nowait(rows_padded, [&](Index i) {
      Scalar* qi = q_pad + i * d_k_padded;
      Scalar* doi = d_out_pad + i * d_v_padded;
      std::fill(qi, qi + d_k_padded, Scalar(0));
      std::fill(doi, doi + d_v_padded, Scalar(0));
      if (i < num_queries) {
        rules.load_query(q.data() + i * q.outerStride(), d_k, qi);
        std::memcpy(doi, d_out.data() + i * d_out.outerStride(), sizeof(Scalar) * d_v);
        delta[i] = (d_out.row(i).array() * out.row(i).array()).sum();
        lse_pad[i] = lse[i];
      } else {
        delta[i] = 0;
        lse_pad[i] = minus_inf;
      }
    });
    share_static_nowait(keys_padded, [&](Index j) {
      Scalar* kj = k_pad + j * d_k_padded;
      std::fill(kj, kj + d_k_padded, Scalar(0));
      if (j < num_keys) std::memcpy(kj, k.data() + j * k.outerStride(), sizeof(Scalar) * d_k);
    });
    share_static_nowait(num_key_blocks, [&](Index kb) {
      pack_key_block(k.data(), k.outerStride(), num_keys, d_k, kb,
                     ws.k_panels.data() + kb * d_k * bc);
      pack_key_block(v.data(), v.outerStride(), num_keys, d_v, kb,
                     ws.v_panels.data() + kb * d_v * bc);
    });
    barrier();

    BackwardThreadWorkspace<Scalar>& tws = ws.per_thread[static_cast<std::size_t>(thread_index())];
    // Group g takes key spans g, g + groups, g + 2 groups, ...: under a causal mask the late
    // (cheap) and early (expensive) spans mix, so the groups carry similar work.
    share_dynamic(groups, [&](Index g) {
      for (Index span = g; span < num_spans; span += groups) {
        Scalar* const dq_partial = partials + g * partial_size;
        unsigned char* const dq_started = started + g * num_query_blocks;
        if (key_span == max_key_span) {
          process_key_span<max_key_span>(pb, bound_mask, span, dq_partial, dq_started, tws);
        } else {
          process_key_span<max_key_span / 2>(pb, bound_mask, span, dq_partial, dq_started, tws);
        }
      }
    });

    // dq = scale · sum over groups of the partials, in group order (deterministic); a group that
    // never reached a query block contributes nothing there (its rows were never written).
    share_static(num_queries, [&](Index i) {
      Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> dq_row(dq.data() + i * dq.outerStride(),
                                                                 d_k);
      dq_row.setZero();
      for (Index g = 0; g < groups; ++g) {
        if (started[g * num_query_blocks + i / br] == 0) continue;
        dq_row += Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(
            partials + g * partial_size + i * d_k_padded, d_k);
      }
      dq_row *= rules.scale;
    });
  });
}

/// The former signature: the scale and the soft-cap as trailing arguments.
template <typename Scalar, typename Mask>
void attention_backward(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                        ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> out, const Scalar* lse,
                        ConstMatrixRef<Scalar> d_out, const Mask& mask, Scalar scale,
                        MatrixRef<Scalar> dq, MatrixRef<Scalar> dk, MatrixRef<Scalar> dv,
                        Scalar* dbias, Index lddbias, BackwardWorkspace<Scalar>& ws,
                        Scalar softcap = Scalar(0)) {
  attention_backward<Scalar>(q, k, v, out, lse, d_out, mask, ScoreRules<Scalar>{scale, softcap}, dq,
                             dk, dv, dbias, lddbias, ws);
}

}  // namespace attention::detail::kernels
