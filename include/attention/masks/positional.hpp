#pragma once
// SPDX-License-Identifier: MIT
//
// Positional masks: whether query i sees key j follows from i, j and the sizes L (queries) and S
// (keys) alone, so they hold no data and fit any L x S.
//
//   attention::causal               j <= i                                   (top-left aligned)
//   attention::causal_lower_right   j <= i + (S - L)                         (lower-right aligned)
//   attention::window(left, right)  i + (S - L) - left <= j <= i + (S - L) + right
//   attention::key_padding(n)       j < n
//
// The first three are bands around a diagonal of the score matrix, lo <= j - i <= hi, and one type,
// detail::DiagonalBand, classifies and masks tiles for all of them (and, per sequence, for
// masks/sequences.hpp). The diagrams of the two alignments and of a window are in mask.hpp.

#include <algorithm>
#include <limits>
#include <string>

#include "attention/errors.hpp"
#include "attention/masks/protocol.hpp"
#include "attention/types.hpp"

namespace attention {

/// A side of attention::window() without a limit: window(attention::unbounded, 0) sees every
/// earlier key.
inline constexpr Index unbounded = std::numeric_limits<Index>::max();

namespace detail {

/// The tile columns [first, last) that one row of a tile keeps; the others are masked.
struct ColumnRange {
  Index first;
  Index last;
};

/// Masks the scores of one tile row (`cols` of them) outside `keep`; an empty range masks them all.
template <typename Scalar>
void mask_outside(Scalar* row, Index cols, ColumnRange keep) {
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  std::fill(row, row + keep.first, minus_inf);
  std::fill(row + std::max(keep.first, keep.last), row + cols, minus_inf);
}

/// clamp(d - shift, 0, cols) for any d, +-attention::unbounded included, without overflow: the
/// first tile column whose j - i is at least d, when the tile's column 0 has j - i = shift.
[[nodiscard]] inline Index column_where(Index d, Index shift, Index cols) {
  if (d <= shift) return 0;
  if (d - cols >= shift) return cols;
  return d - shift;
}

/// Key j visible to query i iff lo <= j - i <= hi: a band around a diagonal of the score matrix.
/// Either side may be -attention::unbounded / attention::unbounded. causal is the band
/// (-unbounded, 0); causal_lower_right and window() bind to one.
struct DiagonalBand {
  Index lo;
  Index hi;

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    // Over the tile, j - i takes every value from d_min (bottom-left) to d_max (top-right).
    const Index d_min = col0 - (row0 + rows - 1);
    const Index d_max = col0 + cols - 1 - row0;
    if (d_max < lo || d_min > hi) return TileVisibility::hidden;
    if (d_min >= lo && d_max <= hi) return TileVisibility::visible;
    return TileVisibility::mixed;
  }

  /// The tile columns that query i sees: keys j with i + lo <= j <= i + hi.
  [[nodiscard]] ColumnRange columns(Index i, Index col0, Index cols) const {
    const Index shift = col0 - i;  // j - i at the tile's column 0
    return {column_where(lo, shift, cols), column_where(hi, shift - 1, cols)};
  }

  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    for (Index r = 0; r < rows; ++r) {
      mask_outside(scores + r * stride, cols, columns(row0 + r, col0, cols));
    }
  }
};

/// The band i + (S - L) - left <= j <= i + (S - L) + right of an L x S score matrix. Sides are
/// clamped to L + S (|j - i| < L + S for every entry), so attention::unbounded cannot overflow.
[[nodiscard]] inline DiagonalBand lower_right_band(Index num_queries, Index num_keys, Index left,
                                                   Index right) {
  const Index reach = num_queries + num_keys;
  const Index offset = num_keys - num_queries;
  return {offset - std::min(left, reach), offset + std::min(right, reach)};
}

}  // namespace detail

/// Causal mask, top-left aligned: query i sees key j iff j <= i, for any numbers of queries L and
/// keys S (PyTorch's is_causal convention). When L > S the last queries see every key; when L < S
/// the last S - L keys are seen by nobody.
struct CausalMask {
  /// Fits any L x S.
  void check(const char*, Index, Index) const {}

  /// hidden above the diagonal (col0 > last row), visible on or below it (last col <= row0),
  /// mixed across it.
  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    return band.visibility(row0, rows, col0, cols);
  }

  /// -inf where key j > query i. scores points at the tile's (row0, col0) entry; rows are
  /// `stride` apart.
  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    band.apply(scores, stride, row0, rows, col0, cols);
  }

 private:
  static constexpr detail::DiagonalBand band{-unbounded, 0};  // j - i <= 0
};

/// The causal mask: `attention::scaled_dot_product_attention(q, k, v, attention::causal)`.
inline constexpr CausalMask causal{};

/// Causal mask, lower-right aligned: query i sees key j iff j <= i + (S - L), so the L queries are
/// the last L of S positions (an incremental decoder's new tokens after S - L cached ones). When
/// L > S the first L - S queries see no key and give 0. Equal to attention::causal when L == S.
struct CausalLowerRightMask {
  /// Fits any L x S.
  void check(const char*, Index, Index) const {}
  /// The band j - i <= S - L of an L x S score matrix.
  [[nodiscard]] detail::DiagonalBand bind(Index num_queries, Index num_keys) const {
    return detail::lower_right_band(num_queries, num_keys, unbounded, 0);
  }
};

/// The lower-right aligned causal mask (see the diagrams in mask.hpp).
inline constexpr CausalLowerRightMask causal_lower_right{};

/// Sliding-window mask, lower-right aligned: query i sees key j iff
///   i + (S - L) - left <= j <= i + (S - L) + right.
/// Made by attention::window().
class WindowMask {
 public:
  /// \throws std::invalid_argument if left or right is negative.
  WindowMask(Index left, Index right) : left_(left), right_(right) {
    if (left < 0 || right < 0) {
      detail::throw_invalid_value(
          "window", "left (= " + std::to_string(left) + ") and right (= " + std::to_string(right) +
                        ") must be >= 0 (attention::unbounded for no limit)");
    }
  }

  /// How many positions before its own a query sees (attention::unbounded: all).
  [[nodiscard]] Index left() const { return left_; }
  /// How many positions after its own a query sees (attention::unbounded: all).
  [[nodiscard]] Index right() const { return right_; }

  /// Fits any L x S.
  void check(const char*, Index, Index) const {}
  /// The band S - L - left <= j - i <= S - L + right of an L x S score matrix.
  [[nodiscard]] detail::DiagonalBand bind(Index num_queries, Index num_keys) const {
    return detail::lower_right_band(num_queries, num_keys, left_, right_);
  }

 private:
  Index left_;
  Index right_;
};

/// window(left, right): query i sees the keys from `left` positions before its own position
/// i + (S - L) to `right` positions after it. window(w, 0) is causal sliding-window attention of
/// width w + 1 (Mistral's sliding window W is window(W - 1, 0)); attention::unbounded leaves a side
/// open. \throws std::invalid_argument if left or right is negative.
[[nodiscard]] inline WindowMask window(Index left, Index right) { return WindowMask(left, right); }

/// Key padding: keys j >= valid_keys are hidden from every query (the padding at the end of a
/// key sequence, PyTorch's key_padding_mask for one sequence). For several sequences stacked in
/// one call, each with its own padding, use sequences(...).key_padding(valid_keys)
/// (masks/sequences.hpp). Made by attention::key_padding().
class KeyPaddingMask {
 public:
  /// \throws std::invalid_argument if valid_keys is negative.
  explicit KeyPaddingMask(Index valid_keys) : valid_keys_(valid_keys) {
    if (valid_keys < 0) {
      detail::throw_invalid_value("key_padding",
                                  "valid_keys (= " + std::to_string(valid_keys) + ") must be >= 0");
    }
  }

  /// The number of visible keys, n of key_padding(n).
  [[nodiscard]] Index valid_keys() const { return valid_keys_; }

  /// \throws ShapeError if valid_keys() exceeds S.
  void check(const char* func, Index, Index num_keys) const {
    if (valid_keys_ > num_keys) {
      detail::throw_shape_error(func, "key_padding valid_keys", valid_keys_, "must be at most",
                                "number of keys", num_keys);
    }
  }

  /// hidden past the valid keys, visible before them, mixed across their end.
  [[nodiscard]] TileVisibility visibility(Index, Index, Index col0, Index cols) const {
    if (col0 >= valid_keys_) return TileVisibility::hidden;
    if (col0 + cols <= valid_keys_) return TileVisibility::visible;
    return TileVisibility::mixed;
  }

  /// -inf for keys j >= valid_keys().
  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index, Index rows, Index col0, Index cols) const {
    const detail::ColumnRange keys{0, std::clamp<Index>(valid_keys_ - col0, 0, cols)};
    for (Index r = 0; r < rows; ++r) detail::mask_outside(scores + r * stride, cols, keys);
  }

 private:
  Index valid_keys_;
};

/// key_padding(n): only the first n keys are visible. \throws std::invalid_argument if n < 0;
/// the attention call throws ShapeError if n exceeds its number of keys.
[[nodiscard]] inline KeyPaddingMask key_padding(Index valid_keys) {
  return KeyPaddingMask(valid_keys);
}

}  // namespace attention
