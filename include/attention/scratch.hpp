#pragma once
// SPDX-License-Identifier: MIT
//
// Scratch memory that a thread keeps from one call to the next.
//
// Some calls need large temporaries: MultiHeadAttention::forward its projected Q, K, V and the
// heads' outputs (about 4 L d_model scalars), the projection kernel its packed weights (d_in x
// d_out). Allocated afresh on every call, blocks that large come straight from the operating
// system and go back to it when freed (glibc's malloc maps and unmaps them, or trims the heap), so
// each call faults in every 4 KiB page again: for MultiHeadAttention<float>(1024, 16) over 2048
// tokens that was some 30 ms of a 400 ms forward. Instead each thread keeps one buffer per use,
// grown to the largest size it has needed, and its next call reuses it.
//
// What stays allocated: per thread and scalar type, the largest temporaries of any call so far.
// attention::release_scratch() frees the calling thread's; a thread's are freed when it ends.

#include <array>
#include <cstddef>

#include <Eigen/Core>

#include "attention/types.hpp"

namespace attention {
namespace detail {

/// One reusable buffer per use; a call takes each slot at most once, and never calls another
/// function that takes the same slot while it holds one.
enum class ScratchSlot : int {
  projected_query,   // MultiHeadAttention: Q, L x d_model
  projected_key,     // MultiHeadAttention: K, S x kv_dim
  projected_value,   // MultiHeadAttention: V, S x kv_dim
  head_outputs,      // MultiHeadAttention: the heads side by side, L x d_model
  packed_weights,    // kernels/projection.hpp: W in panels
  count
};

template <typename Scalar>
class ScratchArena {
 public:
  /// The slot's buffer, at least `size` scalars, aligned to the packet size. Its contents are
  /// unspecified. Grows by at least half its size at a time, so that calls of slowly growing size
  /// do not reallocate every time.
  Scalar* get(ScratchSlot slot, Index size) {
    Buffer& buffer = buffers_[static_cast<std::size_t>(slot)];
    if (buffer.size() < size) {
      const Index grown = buffer.size() + buffer.size() / 2;
      buffer.resize(0);  // free first: old and new never both held
      buffer.resize(size > grown ? size : grown);
    }
    return buffer.data();
  }

  /// A rows x cols row-major matrix on the slot's buffer.
  Eigen::Map<Matrix<Scalar>> matrix(ScratchSlot slot, Index rows, Index cols) {
    return Eigen::Map<Matrix<Scalar>>(get(slot, rows * cols), rows, cols);
  }

  void release() {
    for (Buffer& buffer : buffers_) buffer.resize(0);
  }

 private:
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned to the packet size
  std::array<Buffer, static_cast<std::size_t>(ScratchSlot::count)> buffers_;
};

/// The calling thread's arena for Scalar.
template <typename Scalar>
ScratchArena<Scalar>& thread_scratch() {
  thread_local ScratchArena<Scalar> arena;
  return arena;
}

}  // namespace detail

/// Frees the scratch memory the calling thread keeps between calls (see the top of
/// attention/scratch.hpp): the temporaries of MultiHeadAttention and of its projections. Later
/// calls allocate it again as they need it.
inline void release_scratch() {
  detail::thread_scratch<float>().release();
  detail::thread_scratch<double>().release();
  detail::thread_scratch<long double>().release();
}

}  // namespace attention
