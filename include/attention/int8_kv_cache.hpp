#pragma once
// SPDX-License-Identifier: MIT
//
// Int8KVCache: a key/value cache (kv_cache.hpp) that stores every cached key and value as an 8-bit
// integer, in groups of group_size consecutive scalars of a token's row with one float scale per
// group: about a quarter of a float cache's bytes (width + 4 width / group_size bytes per token
// for keys and as many for values), and so a quarter of the memory a decoder's step reads.
//
//   Int8KVCache cache(num_kv_heads * head_dim, /*max_length=*/4096, /*group_size=*/head_dim);
//   cache.append(k_new, v_new);   // float rows, quantised here
//   layer.forward(x_new, cache);  // MultiHeadAttention<float> reads the int8 rows in place
//
// Quantisation (symmetric, round to nearest): for each group x_0 .. x_{n-1} of a row (n =
// group_size),
//   s = max_i |x_i| / 127,   q_i = round(x_i / s) in [-127, 127] (ties to even),   stored x_i ~ q_i
//   s,
// so |x_i - q_i s| <= s / 2 per entry (to float rounding): a relative error of at most 1/254 of
// the group's largest entry. The group's largest entries are stored as +-127 s, and -128 is never
// used, so that q and -q are both representable.
// - A group of zeros has s = 0 and q_i = 0: it reads back as zeros exactly.
// - NaN and infinities have no 8-bit form. A group that holds one is stored as NaN (s = NaN,
//   q_i = 0): every entry of that group reads back as NaN. Attention then follows the float policy
//   (scaled_dot_product.hpp) for the token as a whole: a non-finite key reaches every query that
//   can see that token, a non-finite value every query that gives it a non-zero weight; the
//   difference from a float cache is that an infinity becomes NaN and its neighbours in the group
//   become NaN with it.
//
// Capacity, drops and positions behave exactly as in KVCache (the buffers are KVCaches of the
// int8 rows and of the scales, extended and dropped together): append never allocates once the
// buffers are large enough, drop_oldest is O(1), tokens_seen() counts every appended token.
// There is no extend(): new rows are written only through append, which quantises them.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/kv_cache.hpp"
#include "attention/types.hpp"

namespace attention {
namespace detail {

/// The symmetric 8-bit quantisation of `width` floats x in groups of `group` (see the top of
/// int8_kv_cache.hpp): q[i] = round(x[i] / s_g), s_g = max |x| over group g / 127, written to q
/// and scales[g]; a group of zeros gets s = 0, a group with a NaN or infinity s = NaN (q = 0).
inline void quantize_int8_groups(const float* x, Index width, Index group, std::int8_t* q,
                                 float* scales) {
  for (Index g0 = 0, g = 0; g0 < width; g0 += group, ++g) {
    float absmax = 0.0f;
    bool finite = true;
    for (Index i = g0; i < g0 + group; ++i) {
      finite = finite && std::isfinite(x[i]);
      absmax = std::max(absmax, std::fabs(x[i]));
    }
    const float s = finite ? absmax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    scales[g] = s;
    for (Index i = g0; i < g0 + group; ++i) {
      // x / s lies in [-127, 127] up to the rounding of s; the clamp keeps it there.
      const float r = s > 0.0f ? std::nearbyint(x[i] / s) : 0.0f;
      q[i] = static_cast<std::int8_t>(std::clamp(r, -127.0f, 127.0f));
    }
  }
}

}  // namespace detail

/// Keys and values of the tokens seen so far by one attention layer, stored as int8 with one float
/// scale per group of group_size scalars (see the top of this header). `width` is num_kv_heads *
/// head_dim, as for KVCache; group_size is typically head_dim.
class Int8KVCache {
 public:
  /// Read-only row-major view of the stored int8 rows (size() rows, oldest first).
  using QuantizedView = KVCache<std::int8_t>::ConstView;
  /// Read-only row-major view of the rows' scales (size() rows, oldest first).
  using ScaleView = KVCache<float>::ConstView;

  /// An empty cache of rows of `width` scalars in groups of `group_size`, holding at most
  /// `max_length` tokens at a time, with buffers for `initial_capacity` tokens allocated now.
  /// \throws ShapeError if width, max_length or group_size is below 1 or group_size does not
  /// divide width; std::invalid_argument unless 0 <= initial_capacity <= max_length.
  Int8KVCache(Index width, Index max_length, Index group_size, Index initial_capacity = 0)
      : group_size_(checked_group(width, max_length, group_size, initial_capacity)),
        quantized_(width, max_length, initial_capacity),
        scales_(width / group_size, max_length, initial_capacity) {}

  /// Tokens currently cached.
  [[nodiscard]] Index size() const { return quantized_.size(); }
  /// True when no token is cached.
  [[nodiscard]] bool empty() const { return quantized_.empty(); }
  /// Scalars per token in the keys and in the values (num_kv_heads * head_dim).
  [[nodiscard]] Index width() const { return quantized_.width(); }
  /// Scalars per scale.
  [[nodiscard]] Index group_size() const { return group_size_; }
  /// Scales per token in the keys and in the values: width() / group_size().
  [[nodiscard]] Index groups() const { return scales_.width(); }
  /// The most tokens the cache holds at a time; append beyond it throws.
  [[nodiscard]] Index max_length() const { return quantized_.max_length(); }
  /// Rows allocated (KVCache's capacity policy).
  [[nodiscard]] Index capacity() const { return quantized_.capacity(); }
  /// Tokens ever appended since construction or clear(), dropped ones included.
  [[nodiscard]] Index tokens_seen() const { return quantized_.tokens_seen(); }
  /// Absolute position of the oldest cached token: tokens_seen() - size().
  [[nodiscard]] Index first_position() const { return quantized_.first_position(); }
  /// Bytes of the buffers: 2 x capacity() x (width() + 4 groups()).
  [[nodiscard]] Index memory_bytes() const {
    return quantized_.memory_bytes() + scales_.memory_bytes();
  }

  /// The stored int8 keys and values, size() x width(); entry (j, c) reads back as
  /// q(j, c) * scale(j, c / group_size()). Valid until the next change of the cache.
  [[nodiscard]] QuantizedView quantized_keys() const { return quantized_.keys(); }
  /// The stored int8 values, as quantized_keys() for the keys.
  [[nodiscard]] QuantizedView quantized_values() const { return quantized_.values(); }
  /// The scales of the keys and values, size() x groups().
  [[nodiscard]] ScaleView key_scales() const { return scales_.keys(); }
  /// The scales of the values, as key_scales() for the keys.
  [[nodiscard]] ScaleView value_scales() const { return scales_.values(); }
  /// The keys and values as stored, in float: q * scale (size() x width()).
  [[nodiscard]] Matrix<float> dequantized_keys() const {
    Matrix<float> k(size(), width());
    dequantized_keys(k);
    return k;
  }
  /// The values as stored, in float, as dequantized_keys() for the keys.
  [[nodiscard]] Matrix<float> dequantized_values() const {
    Matrix<float> v(size(), width());
    dequantized_values(v);
    return v;
  }
  /// The same, written into `out` (size() x width()). \throws ShapeError on another shape.
  void dequantized_keys(MatrixRef<float> out) const {
    dequantize("Int8KVCache::dequantized_keys", quantized_keys(), key_scales(), out);
  }
  /// The values as stored, written into `out`, as dequantized_keys(out) for the keys.
  void dequantized_values(MatrixRef<float> out) const {
    dequantize("Int8KVCache::dequantized_values", quantized_values(), value_scales(), out);
  }

  /// Quantises and appends rows of keys and values (float, rows x width() each; 0 rows is a
  /// no-op). They may be views of this cache's scales (they are then copied first).
  /// \throws ShapeError if k_new or v_new is not width() wide or they differ in rows;
  /// std::length_error if size() + rows would exceed max_length(). The cache is then unchanged.
  template <typename DerivedK, typename DerivedV>
  void append(const Eigen::MatrixBase<DerivedK>& k_new, const Eigen::MatrixBase<DerivedV>& v_new) {
    static_assert(std::is_same_v<typename DerivedK::Scalar, float> &&
                      std::is_same_v<typename DerivedV::Scalar, float>,
                  "attention::Int8KVCache::append: k_new and v_new must be float rows");
    constexpr const char* func = "Int8KVCache::append";
    detail::require_equal(func, "k_new.cols()", k_new.cols(), "width()", width());
    detail::require_equal(func, "v_new.cols()", v_new.cols(), "width()", width());
    detail::require_equal(func, "v_new.rows()", v_new.rows(), "k_new.rows()", k_new.rows());
    detail::require_cache_room(func, "", size(), "rows", k_new.rows(), max_length());
    if (reads_scales(k_new) || reads_scales(v_new)) {
      append_rows(Matrix<float>(k_new), Matrix<float>(v_new));
    } else {
      append_rows(k_new, v_new);
    }
  }

  /// Forgets the `n` oldest tokens; tokens_seen() is unchanged. O(1).
  /// \throws std::invalid_argument unless 0 <= n <= size().
  void drop_oldest(Index n) {
    detail::require_count_within("Int8KVCache::drop_oldest", "n", n, "size()", size());
    quantized_.drop_oldest(n);
    scales_.drop_oldest(n);
  }

  /// Empties the cache and restarts positions at 0; keeps the buffers.
  void clear() {
    quantized_.clear();
    scales_.clear();
  }

  /// Makes the buffers at least `rows` tokens long now.
  /// \throws std::invalid_argument unless 0 <= rows <= max_length().
  void reserve(Index rows) {
    detail::require_count_within("Int8KVCache::reserve", "rows", rows, "max_length()",
                                 max_length());
    quantized_.reserve(rows);
    scales_.reserve(rows);
  }

 private:
  static Index checked_group(Index width, Index max_length, Index group_size,
                             Index initial_capacity) {
    detail::require_positive("Int8KVCache", "width", width);
    detail::require_positive("Int8KVCache", "max_length", max_length);
    detail::require_divides("Int8KVCache", "group_size", group_size, "width", width);
    detail::require_count_within("Int8KVCache", "initial_capacity", initial_capacity, "max_length",
                                 max_length);
    return group_size;
  }

  template <typename Derived>
  [[nodiscard]] bool reads_scales(const Eigen::MatrixBase<Derived>& x) const {
    return detail::may_overlap(key_scales(), x) || detail::may_overlap(value_scales(), x);
  }

  template <typename DerivedK, typename DerivedV>
  void append_rows(const Eigen::MatrixBase<DerivedK>& k_new,
                   const Eigen::MatrixBase<DerivedV>& v_new) {
    const ConstMatrixRef<float> k(k_new), v(v_new);  // row-major, contiguous rows
    const Index rows = k.rows();
    auto q = quantized_.extend(rows);
    auto s = scales_.extend(rows);
    for (Index i = 0; i < rows; ++i) {
      detail::quantize_int8_groups(k.row(i).data(), width(), group_size_, q.keys.row(i).data(),
                                   s.keys.row(i).data());
      detail::quantize_int8_groups(v.row(i).data(), width(), group_size_, q.values.row(i).data(),
                                   s.values.row(i).data());
    }
  }

  void dequantize(const char* func, const QuantizedView& q, const ScaleView& s,
                  MatrixRef<float>& out) const {
    detail::require_equal(func, "out.rows()", out.rows(), "size()", q.rows());
    detail::require_equal(func, "out.cols()", out.cols(), "width()", q.cols());
    for (Index j = 0; j < q.rows(); ++j) {
      for (Index c = 0; c < q.cols(); ++c) out(j, c) = float(q(j, c)) * s(j, c / group_size_);
    }
  }

  Index group_size_;
  KVCache<std::int8_t> quantized_;  // keys() and values(): the int8 rows
  KVCache<float> scales_;           // keys() and values(): their scales, one per group
};

}  // namespace attention
