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
#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/mask_ref.hpp"
#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

#define ATTENTION_KERNEL_BODY "attention/kernels/backward.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::kernels {

/// The tiled backward: given q (L x d_k), k (S x d_k), v (S x d_v), the forward's output `out`
/// (L x d_v) and log-sum-exp `lse` (L), and d_out (L x d_v), writes dq, dk, dv and, if dbias is not
/// null, dbias (L x S, row stride lddbias); `rules` are the forward's scale and soft-cap. Shapes
/// were checked by the caller; the inputs must be finite (the caller takes the materialising path
/// otherwise); outputs must not alias inputs.
/// Runs on the instruction set of active_path() (dispatch.hpp).
template <typename Scalar, typename Mask>
void attention_backward(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                        ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> out, const Scalar* lse,
                        ConstMatrixRef<Scalar> d_out, const Mask& mask,
                        const ScoreRules<Scalar>& rules, MatrixRef<Scalar> dq, MatrixRef<Scalar> dk,
                        MatrixRef<Scalar> dv, Scalar* dbias, Index lddbias,
                        BackwardWorkspace<Scalar>& ws) {
  const BoundMaskRef<Scalar, Mask> bound(mask, q.rows(), k.rows());
  ATTENTION_DISPATCH(Scalar, backward_tiles, q, k, v, out, lse, d_out, bound.ref, rules, dq, dk, dv,
                     dbias, lddbias, ws);
}

}  // namespace attention::detail::kernels
