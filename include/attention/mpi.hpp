#pragma once
// SPDX-License-Identifier: MIT
//
// Ring attention over MPI (context parallelism): one sequence whose tokens are spread over the P
// ranks of a communicator, each rank holding a shard of the rows of q, k and v. The key/value
// shards travel around the ring (rank r sends to r + 1 and receives from r - 1), and each rank
// combines its queries' attention over every block with the log-sum-exp rule of partial.hpp:
//   lse = log(exp(lse_a) + exp(lse_b)),  out = (exp(lse_a) out_a + exp(lse_b) out_b) / exp(lse)
// (Liu, Zaharia & Abbeel, 2023, "Ring Attention with Blockwise Transformers for Near-Infinite
// Context"; the zigzag layout is the load balancing of Llama 3's context parallelism, Dubey et
// al., 2024, sec. 3.3.2). The backward sends each block's dK and dV accumulators along with it, so
// after P steps they arrive back at the block's owner.
//
//   MPI_Init(&argc, &argv);                                          // once, by the program
//   auto out = attention::mpi::ring_attention(MPI_COMM_WORLD, q_local, k_local, v_local,
//                                             attention::causal, {},
//                                             {attention::mpi::Layout::zigzag});
//
// Needs an MPI implementation: link the CMake target attention::mpi (which brings MPI::MPI_CXX) and
// run under mpirun. <attention/attention.hpp> does not include this header.
//
// Memory per rank is O((N / P) d): a rank holds its own rows of q, the result and two key/value
// blocks (the one it computes with and the one arriving), never the whole of K or V.
//
// Every rank must call the same function with the same mask, options and layout. Shapes are
// checked collectively before any data moves: if any rank's arguments are wrong, every rank throws
// the same exception (a ShapeError naming the rank and the sizes), so none waits forever. Once the
// blocks are moving, a failure on one rank (out of memory) cannot be reported to the others without
// leaving them waiting: the rank prints the error and calls MPI_Abort on the communicator.

#include <Eigen/Core>
#include <type_traits>
#include <utility>

#include "attention/mask.hpp"
#include "attention/mpi/ring_backward.hpp"
#include "attention/mpi/ring_forward.hpp"
#include "attention/mpi/ring_options.hpp"
#include "attention/mpi/ring_schedule.hpp"
#include "attention/options.hpp"
#include "attention/partial.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention::mpi {

/// Ring attention, returning each row's log-sum-exp too (see PartialAttention, partial.hpp): every
/// rank passes its own rows of q, k and v and gets its own rows of
///   out = softmax(scale * Q K^T + mask) V
/// over the whole sequence (Q, K, V: every rank's rows, in the order ring_options.layout gives),
/// with the lse the single-process scaled_dot_product_attention_lse would return for those rows;
/// equal to it up to the kernel's rounding and that of the merges. Collective over `comm`: every
/// rank calls it, with the same mask, options and layout.
///
/// Masks: NoMask (q and k/v shards may differ in length: cross-attention), or attention::causal
/// over global positions (self-attention: each rank's q and k/v shards are the same tokens, so
/// q_local.rows() == k_local.rows()); any other mask fails to compile. Query position i sees key
/// position j iff j <= i, whatever the layout; a rank skips the blocks its queries cannot see.
/// Layouts: Layout::contiguous (rank r holds consecutive rows in rank order; shard sizes may
/// differ) or Layout::zigzag (2P equal chunks, rank r holding chunks r and 2P - 1 - r in that
/// order; N must be a multiple of 2P).
///
/// Non-finite inputs follow the single-process rule (a NaN or infinity reaches the rows that see
/// it, and no other). Any Eigen expression is accepted; column-major inputs are copied once.
/// \throws ShapeError on every rank if any rank's sizes are inconsistent (zero rows, d_k or d_v
/// differing between its own matrices or from rank 0's, causal shards with q and k of different
/// lengths, zigzag with N not a multiple of 2P or unequal shards), naming the rank and the sizes;
/// std::invalid_argument on every rank if the ranks disagree on the function, scalar type, mask,
/// layout or options, or if the options are invalid; std::logic_error if MPI is not initialised.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] PartialAttention<typename DerivedQ::Scalar> ring_attention_lse(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Mask& /*mask*/ = {}, const Options& options = {}, const RingOptions& ring_options = {}) {
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV>();
  return detail::ring_forward<typename DerivedQ::Scalar, Mask>(
      "ring_attention_lse", comm, q_local, k_local, v_local, options, ring_options);
}

/// Ring attention: this rank's rows of softmax(scale * Q K^T + mask) V over the whole sequence.
/// Same arguments, rules and exceptions as ring_attention_lse.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> ring_attention(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Mask& /*mask*/ = {}, const Options& options = {}, const RingOptions& ring_options = {}) {
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV>();
  return std::move(detail::ring_forward<typename DerivedQ::Scalar, Mask>(
                       "ring_attention", comm, q_local, k_local, v_local, options, ring_options)
                       .output);
}

/// Backward of ring attention: given this rank's rows of the forward's inputs, of its result
/// (out_local, lse_local: as ring_attention_lse returned them) and of the loss gradient
/// d_out_local, returns this rank's rows of dQ, dK and dV for the whole sequence (grads.dbias stays
/// empty):
///   dV = Pᵀ dO,  dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)),  dQ = scale · dS K,  dK = scale · dSᵀ Q
/// equal, up to rounding, to the single-process scaled_dot_product_attention_backward(q, k, v, out,
/// lse, d_out, mask, options) on the gathered matrices. Each key/value block travels the ring with
/// its dK and dV sums, each rank adding its queries' share, so that they arrive back at the block's
/// owner; memory stays O((N / P) d). Same masks, layouts and collective rules as the forward.
///
/// Inputs must be finite: the per-block backward recomputes the weights as exp(s − lse) from the
/// global lse, which is exact only for finite scores, and the single-process rule for NaN and
/// infinities (only pairs of non-zero weight take part) needs each row's weights over all keys at
/// once. A NaN or infinity in any rank's input therefore makes every rank throw
/// std::invalid_argument naming the rank and the input, rather than return gradients that
/// differ from the single-process ones.
/// \throws ShapeError as ring_attention_lse, or if out_local is not q rows x d_v, lse_local does
/// not have one entry per query or d_out_local is not q rows x d_v, on any rank;
/// std::invalid_argument as ring_attention_lse, or for a non-finite input.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedO,
          typename DerivedLse, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] AttentionGradients<typename DerivedQ::Scalar> ring_attention_backward(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Eigen::MatrixBase<DerivedO>& out_local, const Eigen::MatrixBase<DerivedLse>& lse_local,
    const Eigen::MatrixBase<DerivedDO>& d_out_local, const Mask& /*mask*/ = {},
    const Options& options = {}, const RingOptions& ring_options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV, DerivedO, DerivedLse, DerivedDO>();
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> lse = lse_local.reshaped();
  return detail::ring_backward<Scalar, Mask>("ring_attention_backward", comm, q_local, k_local,
                                             v_local, out_local, lse, d_out_local, options,
                                             ring_options);
}

}  // namespace attention::mpi
