#pragma once
// SPDX-License-Identifier: MIT
//
// Scratch memory that a thread keeps from one call to the next.
//
// Some calls need large temporaries: MultiHeadAttention::forward its projected Q, K, V and the
// heads' outputs (about 4 L d_model scalars), the projection kernel its packed weights (d_in x
// d_out), the tiled backward its padded copies and partial dq sums (about 12 (L + S) d scalars).
// Allocated afresh on every call, blocks that large come straight from the operating system and
// go back to it when freed (glibc's malloc maps and unmaps them, or trims the heap), so each call
// faults in every 4 KiB page again, a cost of the memory touched rather than of the arithmetic
// done. Instead each thread keeps one buffer (or workspace) per
// use, grown to the largest size it has needed, and its next call reuses it.
//
// What stays allocated: per thread and scalar type, the largest temporaries of any call so far
// (calls given a caller-owned workspace, such as AttentionWorkspace, use that instead).
// attention::release_scratch() frees the calling thread's; a thread's are freed when it ends.

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <vector>

#include "attention/types.hpp"

namespace attention {
namespace detail {

/// One reusable buffer per use; a call takes each slot at most once, and never calls another
/// function that takes the same slot while it holds one.
enum class ScratchSlot : int {
  projected_query,  // MultiHeadAttention: Q, L x d_model
  projected_key,    // MultiHeadAttention: K, S x kv_dim
  projected_value,  // MultiHeadAttention: V, S x kv_dim
  head_outputs,     // MultiHeadAttention: the heads side by side, L x d_model
  packed_weights,   // kernels/projection.hpp: W in panels
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

 private:
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned to the packet size
  std::array<Buffer, static_cast<std::size_t>(ScratchSlot::count)> buffers_;
};

/// What release_scratch() calls: one function per kind of scratch object this thread has made.
inline std::vector<void (*)()>& scratch_releasers() {
  thread_local std::vector<void (*)()> releasers;
  return releasers;
}

/// The calling thread's scratch object of type T (default-constructed on first use; a workspace
/// whose buffers only grow). release_scratch() resets it to T{}, freeing what it holds.
template <typename T>
T& thread_scratch_object() {
  thread_local T object = [] {
    scratch_releasers().push_back([] { thread_scratch_object<T>() = T{}; });
    return T{};
  }();
  return object;
}

/// The calling thread's arena for Scalar.
template <typename Scalar>
ScratchArena<Scalar>& thread_scratch() {
  return thread_scratch_object<ScratchArena<Scalar>>();
}

}  // namespace detail

/// Frees the scratch memory the calling thread keeps between calls (see the top of
/// attention/scratch.hpp): the temporaries of MultiHeadAttention, of its projections and of the
/// kernels' workspaces when the caller passes none. Later calls allocate again as they need to.
inline void release_scratch() {
  for (void (*release)() : detail::scratch_releasers()) release();
}

}  // namespace attention
