#pragma once
// SPDX-License-Identifier: MIT
//
// The kernels' scratch buffers: what one call of the forward, decode or backward needs beyond its
// inputs and outputs, sized by the caller (which knows the tile geometry) and kept between calls.
// Buffers only grow, so a workspace reused for calls of the same or smaller sizes (and no more
// threads) allocates nothing after the first. Nothing here depends on the instruction set; the
// public owner of a CallWorkspace is AttentionWorkspace (attention/workspace.hpp).

#include <Eigen/Core>
#include <cstddef>
#include <vector>

#include "attention/kernels/online_softmax.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// A scratch buffer, aligned to the packet size.
template <typename Scalar>
using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Resizes b to at least n entries (its contents are then unspecified); never shrinks it.
template <typename Scalar>
void grow(Buffer<Scalar>& b, Index n) {
  if (b.size() < n) b.resize(n);
}

/// One head's operands for the forward and decode: row pointers and row strides (entries within a
/// row are contiguous).
template <typename Scalar>
struct HeadOperands {
  const Scalar* q;
  Index ldq;
  const Scalar* k;
  Index ldk;
  const Scalar* v;
  Index ldv;
  Scalar* out;
  Index ldo;
  Scalar* lse;  // num_queries log-sum-exps, or null
};

/// One forward thread's buffers for a query tile of block_rows rows against key tiles of
/// block_cols keys: the scaled query rows, the tile's scores and the output accumulator o
/// (forward.hpp).
template <typename Scalar>
struct ThreadWorkspace {
  using Buffer = kernels::Buffer<Scalar>;
  Buffer q_tile, scores, o_acc;

  void reserve(Index block_rows, Index block_cols, Index d_k, Index d_v_padded) {
    grow(q_tile, block_rows * d_k);
    grow(scores, block_rows * block_cols);
    grow(o_acc, block_rows * d_v_padded);
  }
};

/// Buffers of the decode path (decode.hpp): every group's query rows, the partial results of every
/// (K/V head, chunk) pair, and per-thread scores.
template <typename Scalar>
struct DecodeBuffers {
  using Buffer = kernels::Buffer<Scalar>;
  Buffer q_rows, partial_o;
  std::vector<OnlineSoftmax<Scalar>> partial_state;  // (m, l) of every row of every part
  std::vector<Buffer> scores;

  void reserve(Index num_groups, Index num_chunks, Index groups_per_job, Index rows_padded,
               Index d_padded, Index d_v_padded, Index chunk, int threads) {
    const Index parts = num_groups * num_chunks;
    grow(q_rows, num_groups * rows_padded * d_padded);
    grow(partial_o, parts * rows_padded * d_v_padded);
    if (static_cast<Index>(partial_state.size()) < parts * rows_padded) {
      partial_state.resize(static_cast<std::size_t>(parts * rows_padded));
    }
    if (static_cast<int>(scores.size()) < threads) scores.resize(static_cast<std::size_t>(threads));
    for (auto& b : scores) grow(b, groups_per_job * rows_padded * chunk);
  }
};

/// Scratch memory of one forward call: packed keys and values, one ThreadWorkspace per thread, the
/// decode path's buffers, and room for the operands of a call's heads.
template <typename Scalar>
struct CallWorkspace {
  using Buffer = kernels::Buffer<Scalar>;
  Buffer k_packed, v_packed;
  std::vector<ThreadWorkspace<Scalar>> per_thread;
  DecodeBuffers<Scalar> decode;             // the split-key decode path's (decode_attention)
  std::vector<HeadOperands<Scalar>> heads;  // filled by callers that describe heads (heads.hpp)

  void reserve(Index k_size, Index v_size, int threads, Index block_rows, Index block_cols,
               Index d_k, Index d_v_padded) {
    grow(k_packed, k_size);
    grow(v_packed, v_size);
    if (static_cast<int>(per_thread.size()) < threads) per_thread.resize(threads);
    for (auto& ws : per_thread) ws.reserve(block_rows, block_cols, d_k, d_v_padded);
  }
};

/// One backward thread's buffers: the weights and dS of one (query block, key span) tile of
/// block_rows x span_cols, and the accumulators of one key span's dk and dv (backward_tiles.hpp).
template <typename Scalar>
struct BackwardThreadWorkspace {
  using Buffer = kernels::Buffer<Scalar>;
  Buffer p, ds, dk_acc, dv_acc;
  Buffer softcap_derivative;  // 1 - tanh^2 of a tile's capped scores; used only with a soft-cap

  void reserve(Index block_rows, Index span_cols, Index d_k_padded, Index d_v_padded,
               bool softcap) {
    const Index tile = block_rows * span_cols;
    grow(p, tile);
    grow(ds, tile);
    if (softcap) grow(softcap_derivative, tile);
    grow(dk_acc, span_cols * d_k_padded);
    grow(dv_acc, span_cols * d_v_padded);
  }
};

/// Scratch memory of one backward call (backward.hpp): padded copies of the inputs, packed K and V
/// panels, the partial dq sums, and one BackwardThreadWorkspace per thread.
template <typename Scalar>
struct BackwardWorkspace {
  using Buffer = kernels::Buffer<Scalar>;
  Buffer q, k, k_panels, v_panels, d_out, lse, delta, dq_partials;
  // Per (group, query block): whether the group's partial dq rows of that block hold a sum yet.
  std::vector<unsigned char> dq_block_started;
  std::vector<BackwardThreadWorkspace<Scalar>> per_thread;
};

}  // namespace attention::detail::kernels
