#pragma once
// SPDX-License-Identifier: MIT
//
// The kernels' scratch buffers: what one call of the forward, decode or backward needs beyond its
// inputs and outputs, sized by the caller (which knows the tile geometry) and kept between calls.
// Buffers only grow, so a workspace reused for calls of the same or smaller sizes (and no more
// threads) allocates nothing after the first. Nothing here depends on the instruction set; the
// public owner of a CallWorkspace is AttentionWorkspace (attention/workspace.hpp).

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/detail/huge_pages.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Alignment of every scratch buffer, in bytes: a cache line, and the widest vector of any path.
/// The dispatched kernels use aligned loads and stores of 32 (AVX2) or 64 (AVX-512) bytes whatever
/// the compiler's flags, whereas an Eigen::Matrix is aligned for the packets of the flags only
/// (16 bytes under plain -O2 on x86-64).
inline constexpr std::size_t buffer_alignment = 64;

// Scratch buffers of huge_page_bytes or more are aligned to it, their size rounded up to a
// multiple of it, and offered to Linux as transparent huge pages (detail/huge_pages.hpp, as the KV
// caches' rows are). Why: a buffer's first call touches every one of its pages, and a 4 KiB page
// costs a fault each: the backward at N = 4096, d = 128 takes ~27 MiB of scratch (16 MiB of it the
// partial dq), ~6,900 pages, against ~15 in 2 MiB pages. Where a fault costs ~10 us (virtual
// machines), that is most of a first call's extra time (docs/performance.md).
using detail::huge_page_bytes;

/// A scratch buffer of n Scalars (trivial types: float, double, long double), aligned to
/// buffer_alignment (to huge_page_bytes from that size on). Only what the kernels and their tests
/// need of an Eigen vector: size, data, resize (contents then unspecified), element access, Zero
/// and Constant.
template <typename Scalar>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Index n) { resize(n); }
  Buffer(const Buffer& other) : Buffer(other.size_) { std::copy_n(other.data(), size_, data()); }
  Buffer(Buffer&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}
  Buffer& operator=(Buffer other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~Buffer() = default;

  [[nodiscard]] static Buffer Zero(Index n) { return Constant(n, Scalar(0)); }
  [[nodiscard]] static Buffer Constant(Index n, Scalar value) {
    Buffer b(n);
    std::fill_n(b.data(), n, value);
    return b;
  }

  [[nodiscard]] Index size() const { return size_; }
  [[nodiscard]] Scalar* data() { return data_.get(); }
  [[nodiscard]] const Scalar* data() const { return data_.get(); }
  Scalar& operator()(Index i) { return data_[static_cast<std::size_t>(i)]; }
  const Scalar& operator()(Index i) const { return data_[static_cast<std::size_t>(i)]; }

  /// Makes the buffer n entries long; its contents are then unspecified unless n == size().
  /// Buffers of huge_page_bytes or more are allocated in whole huge pages (see there).
  void resize(Index n) {
    if (n == size_) return;
    data_.reset();  // the old contents go first: the peak is the new buffer, not both
    size_ = 0;
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(Scalar);
    const bool huge = bytes >= huge_page_bytes;
    const std::size_t alignment = huge ? huge_page_bytes : buffer_alignment;
    const std::size_t capacity =
        huge ? (bytes + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes : bytes;
    Scalar* const p =
        n > 0 ? static_cast<Scalar*>(::operator new(capacity, std::align_val_t(alignment)))
              : nullptr;
    if (huge) detail::advise_huge_pages(p, capacity);
    data_ = std::unique_ptr<Scalar[], Free>(p, Free{alignment});
    size_ = n;
  }

 private:
  struct Free {
    std::size_t alignment = buffer_alignment;  // the one the buffer was allocated with
    void operator()(Scalar* p) const { ::operator delete(p, std::align_val_t(alignment)); }
  };
  std::unique_ptr<Scalar[], Free> data_;
  Index size_ = 0;
};

/// Resizes b to at least n entries (its contents are then unspecified); never shrinks it.
template <typename Scalar>
void grow(Buffer<Scalar>& b, Index n) {
  if (b.size() < n) b.resize(n);
}

/// One head's operands for the forward and decode: row pointers and row strides (entries within a
/// row are contiguous). Scalar is the type computed in; the forward's tiles (forward.hpp) also read
/// q (and write out) as QElement and k and v as KVElement, Eigen::half or Eigen::bfloat16 for a
/// Scalar of float, widened in registers.
template <typename Scalar, typename QElement = Scalar, typename KVElement = Scalar>
struct HeadOperands {
  const QElement* q;
  Index ldq;
  const KVElement* k;
  Index ldk;
  const KVElement* v;
  Index ldv;
  QElement* out;
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
  // The query rows rounded to 16-bit integers and their scales, for integer scores over int8 rows
  // (decode_kernels.hpp, "Integer scores"); grown by the decode path when it takes them.
  kernels::Buffer<std::int16_t> q_int16;
  Buffer q_int16_scales;

  void reserve(Index num_groups, Index num_chunks, Index groups_per_job, Index rows_padded,
               Index d_padded, Index d_v_padded, Index chunk, int threads) {
    const Index parts = num_groups * num_chunks;
    grow(q_rows, num_groups * rows_padded * d_padded);
    grow(partial_o, parts * rows_padded * d_v_padded);
    if (static_cast<Index>(partial_state.size()) < parts * rows_padded) {
      partial_state.resize(static_cast<std::size_t>(parts * rows_padded));
    }
    if (static_cast<int>(scores.size()) < threads) scores.resize(static_cast<std::size_t>(threads));
    // A thread's job: its scores, then its unnormalised outputs (decode.inc).
    for (auto& b : scores) grow(b, groups_per_job * rows_padded * (chunk + d_v_padded));
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
  // The same for all-bfloat16 heads on the vdpbf16ps kernel (kernels/bf16_forward.hpp).
  std::vector<HeadOperands<Scalar, Eigen::bfloat16, Eigen::bfloat16>> bf16_heads;

  /// heads or bf16_heads, by the operands' element types.
  template <typename QElement, typename KVElement>
  std::vector<HeadOperands<Scalar, QElement, KVElement>>& heads_of() {
    if constexpr (std::is_same_v<QElement, Scalar> && std::is_same_v<KVElement, Scalar>) {
      return heads;
    } else {
      return bf16_heads;
    }
  }

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

  /// Row stride of the p and ds tiles of a span of span_cols keys: 64 bytes more than a row, so
  /// that a stride is an odd number of cache lines (span_cols x sizeof(Scalar) is a multiple of
  /// 64 bytes). The products that read a tile transposed (pᵀ dO, dsᵀ q) take one entry of every
  /// row per step; with 2 KiB rows (512 floats) those rows' lines all fall into 2 of the L1's 64
  /// sets and evict each other before the next row group reads them again.
  static constexpr Index tile_stride(Index span_cols) {
    return span_cols + Index{64} / Index{sizeof(Scalar)};
  }

  void reserve(Index block_rows, Index span_cols, Index d_k_padded, Index d_v_padded,
               bool softcap) {
    const Index tile = block_rows * tile_stride(span_cols);
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
