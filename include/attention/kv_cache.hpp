#pragma once
// SPDX-License-Identifier: MIT
//
// The key/value cache of one attention layer for incremental decoding: the projected keys and
// values of the tokens seen so far (num_kv_heads * head_dim columns each, one token per row), so
// that a decoder computes each new token's K and V once and attends over all of them (the
// "KV cache" of every autoregressive Transformer implementation; Pope et al., 2022, "Efficiently
// Scaling Transformer Inference", describe its memory cost).
//
//   KVCache<float> cache(num_kv_heads * head_dim, /*max_length=*/4096);
//   cache.append(k_new, v_new);         // the new tokens' keys and values, rows x width each
//   ... attend with cache.keys().middleCols(g * head_dim, head_dim) and cache.values() likewise
//   cache.drop_oldest(n);               // sliding-window models forget the oldest tokens
//
// Capacity policy. The cached rows live in one buffer per K and V, `capacity()` rows each, and
// are always contiguous from keys().row(0), so keys() and values() are plain row-major views:
// - Appending into free rows at the end costs the copy of the new rows and nothing else.
// - When the end is reached, the buffers grow geometrically: to max(needed, 2 x capacity(), 16)
//   rows, capped at max_length(), so appending N tokens one by one reallocates O(log N) times and
//   copies O(N) rows in all. `initial_capacity` (or reserve()) sizes the buffers up front.
// - drop_oldest(n) is O(1): it moves the start of the live rows forward. The dropped rows are
//   reclaimed when an append reaches the end of the buffer and they outnumber the live rows: the
//   live rows are then moved to the front (paid for by the drops since the last such move, so
//   O(1) amortised per dropped token). So that a sliding window at full length does not move its
//   rows on every token, a cache that has dropped rows may grow to 2 x max_length() rows: a window
//   of W = max_length() tokens then moves its W rows once every W tokens.
// - Once the buffers are large enough (max_length() rows, or 2 x max_length() for a cache that
//   drops), append, extend and drop_oldest never allocate.
// clear() keeps the buffers. Rows beyond size() are unspecified. Not thread-safe.
//
// Low precision. KVCache<Eigen::bfloat16> and KVCache<Eigen::half> store keys and values in that
// type (half the bytes of float): append takes rows of the cache's type or of float (rounded to
// nearest even; a finite float beyond half's range, |x| > 65504, throws naming the row), and
// keys() / values() are views of the stored type that scaled_dot_product_attention accepts, with
// float or same-type queries (low_precision.hpp: computed in float).
//
// Huge pages. On Linux, buffers of 4 MiB or more are advised (madvise MADV_HUGEPAGE) to be backed
// by transparent huge pages where the system allows it (the "madvise" setting of
// /sys/kernel/mm/transparent_hugepage/enabled, common on distributions; "always" needs no advice,
// "never" ignores it). A decoder step reads every cached row once, and with 4 KiB pages one core's
// reads stall on page walks and on how few misses it keeps in flight: one GQA step over 32768
// cached tokens (8 K/V heads of 128) on two threads read 24.6-28.0 GB/s from 4 KiB pages and
// 28.1-36.6 GB/s from huge pages (benchmarks/decode_bench.cpp). Advice only: the contents and every
// result are the same either way.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/huge_pages.hpp"
#include "attention/errors.hpp"
#include "attention/low_precision.hpp"
#include "attention/types.hpp"

namespace attention {
namespace detail {

/// \throws std::length_error unless size + rows <= max_length, e.g.
///   attention::KVCache::append: size() (= 4) + rows (= 3) exceeds max_length() (= 6)
/// `owner` prefixes the cache's accessors ("cache." when the caller is not the cache itself).
inline void require_cache_room(const char* func, const char* owner, Index size,
                               const char* rows_name, Index rows, Index max_length) {
  if (rows > max_length - size) {
    std::ostringstream message;
    message << "attention::" << func << ": " << owner << "size() (= " << size << ") + " << rows_name
            << " (= " << rows << ") exceeds " << owner << "max_length() (= " << max_length << ')';
    throw std::length_error(message.str());
  }
}

/// \throws std::invalid_argument naming `func` unless 0 <= value <= bound, e.g.
///   attention::KVCache::drop_oldest: n (= 5) must be between 0 and size() (= 4)
inline void require_count_within(const char* func, const char* what, Index value,
                                 const char* bound_name, Index bound) {
  if (value < 0 || value > bound) {
    std::ostringstream message;
    message << what << " (= " << value << ") must be between 0 and " << bound_name
            << " (= " << bound << ')';
    throw_invalid_value(func, message.str());
  }
}

}  // namespace detail

/// Keys and values of the tokens seen so far by one attention layer (see the top of this header
/// for the capacity policy). `width` is num_kv_heads * head_dim: head g's keys are
/// keys().middleCols(g * head_dim, head_dim).
template <typename Scalar>
class KVCache {
 public:
  /// Row-major views of the cached rows (size() x width()); rows are contiguous, the row stride
  /// (outerStride()) may exceed width().
  using View = Eigen::Map<Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;
  /// The read-only form of View.
  using ConstView = Eigen::Map<const Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;

  /// Writable views of rows just added by extend().
  struct NewRows {
    View keys;    ///< the new rows of keys(), rows x width()
    View values;  ///< the new rows of values(), rows x width()
  };

  /// An empty cache of rows of `width` (= num_kv_heads * head_dim) scalars that holds at most
  /// `max_length` tokens at a time, with buffers for `initial_capacity` tokens allocated now.
  /// \throws ShapeError if width or max_length is below 1; std::invalid_argument unless
  /// 0 <= initial_capacity <= max_length.
  KVCache(Index width, Index max_length, Index initial_capacity = 0)
      : width_(width), max_length_(max_length) {
    detail::require_positive("KVCache", "width", width);
    detail::require_positive("KVCache", "max_length", max_length);
    detail::require_count_within("KVCache", "initial_capacity", initial_capacity, "max_length",
                                 max_length);
    if (initial_capacity > 0) reallocate(initial_capacity);
  }

  /// Tokens currently cached.
  [[nodiscard]] Index size() const { return size_; }
  /// True when no token is cached (size() == 0).
  [[nodiscard]] bool empty() const { return size_ == 0; }
  /// Scalars per token in keys() and in values() (num_kv_heads * head_dim).
  [[nodiscard]] Index width() const { return width_; }
  /// The most tokens the cache holds at a time; append beyond it throws.
  [[nodiscard]] Index max_length() const { return max_length_; }
  /// Rows allocated in each buffer (see the capacity policy at the top of this header).
  [[nodiscard]] Index capacity() const { return keys_.rows(); }
  /// Bytes of the two buffers: 2 x capacity() x width() x sizeof(Scalar).
  [[nodiscard]] Index memory_bytes() const {
    return 2 * capacity() * width_ * static_cast<Index>(sizeof(Scalar));
  }
  /// Tokens ever appended since construction or clear(), dropped ones included: the absolute
  /// position of the next token (e.g. its RoPE position).
  [[nodiscard]] Index tokens_seen() const { return tokens_seen_; }
  /// Absolute position of keys().row(0): tokens_seen() - size().
  [[nodiscard]] Index first_position() const { return tokens_seen_ - size_; }

  /// The cached keys and values, size() x width(), oldest first. Valid until the next append,
  /// extend, reserve, drop_oldest or clear.
  [[nodiscard]] ConstView keys() const { return live(keys_); }
  /// The cached values; as keys().
  [[nodiscard]] ConstView values() const { return live(values_); }

  /// Appends rows of keys and values (rows x width() each; 0 rows is a no-op) of the cache's scalar
  /// type; a cache of Eigen::bfloat16 or Eigen::half (low_precision.hpp) also takes rows of float,
  /// rounded to nearest even (NaN and infinities kept, as float attention treats them). They may
  /// be this cache's own rows (`cache.append(cache.keys().bottomRows(1), ...)`): when the buffers
  /// are about to grow or move, rows that share memory with them (or expressions, which might read
  /// them) are copied out first.
  /// \throws ShapeError if k_new or v_new is not width() wide or they differ in rows;
  /// std::length_error if size() + rows would exceed max_length(); std::invalid_argument, for
  /// float rows into a bfloat16 or half cache, if a finite value lies beyond the cache type's
  /// range (|x| > 65504 for half), naming the row (the cache is then unchanged).
  template <typename DerivedK, typename DerivedV>
  void append(const Eigen::MatrixBase<DerivedK>& k_new, const Eigen::MatrixBase<DerivedV>& v_new) {
    static_assert(appendable<typename DerivedK::Scalar> && appendable<typename DerivedV::Scalar>,
                  "attention::KVCache::append: k_new and v_new must have the cache's scalar type, "
                  "or float for a cache of Eigen::bfloat16 or Eigen::half");
    constexpr const char* func = "KVCache::append";
    detail::require_equal(func, "k_new.cols()", k_new.cols(), "width()", width_);
    detail::require_equal(func, "v_new.cols()", v_new.cols(), "width()", width_);
    detail::require_equal(func, "v_new.rows()", v_new.rows(), "k_new.rows()", k_new.rows());
    require_in_range(func, "k_new", k_new);
    require_in_range(func, "v_new", v_new);
    if (relocates(k_new.rows()) && (refers_to_buffers(k_new) || refers_to_buffers(v_new))) {
      // Growing or moving the buffers would free or overwrite the rows still to be copied.
      const Matrix<Scalar> k_copy = k_new.template cast<Scalar>();
      const Matrix<Scalar> v_copy = v_new.template cast<Scalar>();
      NewRows rows = extend_checked(func, k_copy.rows());
      rows.keys = k_copy;
      rows.values = v_copy;
      return;
    }
    NewRows rows = extend_checked(func, k_new.rows());
    rows.keys = k_new.template cast<Scalar>();  // rounds to nearest even for float rows
    rows.values = v_new.template cast<Scalar>();
  }

  /// Adds `rows` tokens at the end and returns writable views of their keys and values (rows x
  /// width() each, contents unspecified until written), so that a layer can project straight
  /// into the cache. The views are valid until the next call that changes the cache.
  /// \throws std::invalid_argument if rows < 0; std::length_error as append.
  NewRows extend(Index rows) {
    if (rows < 0) detail::throw_invalid_value("KVCache::extend", count_message("rows", rows));
    return extend_checked("KVCache::extend", rows);
  }

  /// Forgets the `n` oldest tokens (0 <= n <= size()); tokens_seen() is unchanged. O(1).
  /// \throws std::invalid_argument unless 0 <= n <= size().
  void drop_oldest(Index n) {
    detail::require_count_within("KVCache::drop_oldest", "n", n, "size()", size_);
    begin_ += n;
    size_ -= n;
    if (size_ == 0) begin_ = 0;
    if (n > 0) has_dropped_ = true;
  }

  /// Empties the cache and restarts positions at 0 (tokens_seen() = 0) for a new sequence; keeps
  /// the buffers.
  void clear() {
    begin_ = 0;
    size_ = 0;
    tokens_seen_ = 0;
  }

  /// Makes the buffers at least `rows` tokens long now (moving the cached rows to the front).
  /// \throws std::invalid_argument unless 0 <= rows <= max_length().
  void reserve(Index rows) {
    detail::require_count_within("KVCache::reserve", "rows", rows, "max_length()", max_length_);
    if (rows > capacity()) reallocate(rows);
  }

 private:
  /// The scalar types append takes: the cache's, and float for a bfloat16 or half cache.
  template <typename Source>
  static constexpr bool appendable = std::is_same_v<Source, Scalar> ||
                                     (is_low_precision_v<Scalar> && std::is_same_v<Source, float>);

  /// \throws std::invalid_argument naming the first row of x (float, for a bfloat16 or half
  /// cache) that holds a finite value beyond the largest finite Scalar; NaN and infinities pass.
  template <typename Derived>
  static void require_in_range(const char* func, const char* name,
                               const Eigen::MatrixBase<Derived>& x) {
    if constexpr (!std::is_same_v<typename Derived::Scalar, Scalar>) {
      const float largest = static_cast<float>(Eigen::NumTraits<Scalar>::highest());
      for (Index i = 0; i < x.rows(); ++i) {
        for (Index j = 0; j < x.cols(); ++j) {
          const float value = x(i, j);
          if (std::isfinite(value) && std::fabs(value) > largest) {
            std::ostringstream message;
            message << name << " row " << i << " holds " << value << " (column " << j
                    << "), beyond the range of the cache's "
                    << (std::is_same_v<Scalar, Eigen::half> ? "Eigen::half" : "Eigen::bfloat16")
                    << " (|x| <= " << largest << ")";
            detail::throw_invalid_value(func, message.str());
          }
        }
      }
    }
  }

  static std::string count_message(const char* what, Index value) {
    std::ostringstream message;
    message << what << " (= " << value << ") must not be negative";
    return message.str();
  }

  /// True if adding `rows` rows reallocates the buffers or moves the live rows (make_room).
  [[nodiscard]] bool relocates(Index rows) const { return begin_ + size_ + rows > capacity(); }

  /// True if x may read this cache's buffers: x shares memory with them, or is an expression.
  template <typename Derived>
  [[nodiscard]] bool refers_to_buffers(const Eigen::MatrixBase<Derived>& x) const {
    return detail::may_overlap(keys_, x) || detail::may_overlap(values_, x);
  }

  ConstView live(const Matrix<Scalar>& buffer) const {
    return ConstView(size_ == 0 ? buffer.data() : buffer.data() + begin_ * width_, size_, width_,
                     Eigen::OuterStride<>(width_));
  }

  NewRows extend_checked(const char* func, Index rows) {
    detail::require_cache_room(func, "", size_, "rows", rows, max_length_);
    make_room(rows);
    const Index first = begin_ + size_;
    size_ += rows;
    tokens_seen_ += rows;
    return {View(keys_.data() + first * width_, rows, width_, Eigen::OuterStride<>(width_)),
            View(values_.data() + first * width_, rows, width_, Eigen::OuterStride<>(width_))};
  }

  /// Ensures rows [begin_ + size_, begin_ + size_ + rows) exist (size_ + rows <= max_length_).
  void make_room(Index rows) {
    const Index needed = size_ + rows;
    const Index cap = capacity();
    if (begin_ + needed <= cap) return;
    if (needed <= cap && begin_ >= size_) {
      // Reclaim the dropped rows: move the size_ <= begin_ live rows to the front. The begin_
      // drops since the last move pay for it.
      move_rows(keys_);
      move_rows(values_);
      begin_ = 0;
      return;
    }
    // Grow geometrically. A cache that drops may use up to 2 x max_length rows, so that at full
    // length the move above happens once every max_length tokens rather than on every token.
    // (Each growth strictly increases the capacity: with begin_ = 0, needed > cap; with begin_ >
    // 0 and cap = 2 x max_length, begin_ + needed > cap implies begin_ >= size_, handled above.)
    const Index limit = has_dropped_ ? saturating_double(max_length_) : max_length_;
    reallocate(std::min(limit, std::max({needed, saturating_double(cap), Index(16)})));
  }

  /// 2 x n, or the largest Index when that overflows: max_length may be attention::unbounded
  /// (the largest Index), and growth then saturates rather than wrapping to a negative size.
  static Index saturating_double(Index n) {
    return n > std::numeric_limits<Index>::max() / 2 ? std::numeric_limits<Index>::max() : 2 * n;
  }

  void move_rows(Matrix<Scalar>& buffer) const {
    if (size_ == 0) return;
    Scalar* data = buffer.data();
    std::memmove(static_cast<void*>(data), static_cast<const void*>(data + begin_ * width_),
                 sizeof(Scalar) * static_cast<std::size_t>(size_ * width_));
  }

  /// New buffers of `rows` rows holding the live rows at the front.
  void reallocate(Index rows) {
    Matrix<Scalar> keys(rows, width_), values(rows, width_);
    advise_huge_pages(keys.data(), keys.size());  // before the copy below first touches the pages
    advise_huge_pages(values.data(), values.size());
    keys.topRows(size_) = live(keys_);
    values.topRows(size_) = live(values_);
    keys_.swap(keys);
    values_.swap(values);
    begin_ = 0;
  }

  /// See "Huge pages" at the top: the whole 2 MiB pages inside a buffer of at least 4 MiB.
  static void advise_huge_pages(Scalar* data, Index size) {
    const std::size_t bytes = sizeof(Scalar) * static_cast<std::size_t>(size);
    if (bytes >= 2 * detail::huge_page_bytes) detail::advise_huge_pages(data, bytes);
  }

  Index width_;
  Index max_length_;
  Index begin_ = 0;        // first live row in the buffers
  Index size_ = 0;         // live rows
  Index tokens_seen_ = 0;  // tokens appended since construction or clear()
  bool has_dropped_ = false;
  Matrix<Scalar> keys_, values_;
};

}  // namespace attention
