#pragma once
// SPDX-License-Identifier: MIT
//
// Packed variable-length sequences: a batch of B sequences stacked row-wise in one call, without a
// batch dimension (as FlashAttention's varlen interface takes them, with cu_seqlens). The score
// matrix is block-diagonal, each sequence's queries seeing only its own keys, and the kernels skip
// every tile off the diagonal blocks.
//
//   attention::sequences({0, 2, 5}, {0, 3, 5})            .causal()
//              key 0 1 2 3 4                     key 0 1 2 3 4
//   query 0        x x x . .          query 0        x x . . .
//   query 1        x x x . .          query 1        x x x . .
//   query 2        . . . x x          query 2        . . . . .   <- sequence 1: 3 queries,
//   query 3        . . . x x          query 3        . . . x .      2 keys, lower-right aligned
//   query 4        . . . x x          query 4        . . . x x

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "attention/errors.hpp"
#include "attention/masks/positional.hpp"
#include "attention/masks/protocol.hpp"
#include "attention/types.hpp"

namespace attention {

/// Packed variable-length sequences: B sequences stacked row-wise in one call (see the top of
/// masks/sequences.hpp). Query rows [query_offsets[b], query_offsets[b + 1]) attend only to key
/// rows [key_offsets[b], key_offsets[b + 1]). Within each sequence, optionally:
///   .causal()               lower-right aligned causal, sequence by sequence (local positions);
///   .window(left, right)    a lower-right aligned sliding window, sequence by sequence;
///   .key_padding(valid)     only the first valid[b] keys of sequence b are real (the rest is
///                           padding, hidden); causal and window align to the last real key.
/// Sequence b thus behaves exactly as a separate call on its own rows with causal_lower_right or
/// window(left, right). A sequence may be empty; its queries (if it has no keys) give 0.
/// Made by attention::sequences().
class SequenceMask {
 public:
  /// \throws ShapeError if the offset lists differ in length or hold fewer than 2 entries;
  /// std::invalid_argument unless each starts at 0 and never decreases.
  SequenceMask(std::vector<Index> query_offsets, std::vector<Index> key_offsets)
      : query_offsets_(std::move(query_offsets)), key_offsets_(std::move(key_offsets)) {
    constexpr const char* func = "sequences";
    detail::require_positive(func, "number of sequences (query_offsets.size() - 1)",
                             static_cast<Index>(query_offsets_.size()) - 1);
    detail::require_equal(func, "key_offsets.size()", static_cast<Index>(key_offsets_.size()),
                          "query_offsets.size()", static_cast<Index>(query_offsets_.size()));
    check_offsets("query_offsets", query_offsets_);
    check_offsets("key_offsets", key_offsets_);
    key_ends_.assign(key_offsets_.begin() + 1, key_offsets_.end());
  }

  /// B, the number of sequences.
  [[nodiscard]] Index num_sequences() const {
    return static_cast<Index>(query_offsets_.size()) - 1;
  }
  /// B + 1 offsets: sequence b's queries are rows [query_offsets()[b], query_offsets()[b + 1]).
  [[nodiscard]] const std::vector<Index>& query_offsets() const { return query_offsets_; }
  /// B + 1 offsets: sequence b's keys are rows [key_offsets()[b], key_offsets()[b + 1]).
  [[nodiscard]] const std::vector<Index>& key_offsets() const { return key_offsets_; }

  /// Causal within each sequence, lower-right aligned: window(attention::unbounded, 0).
  [[nodiscard]] SequenceMask causal() const { return window(unbounded, 0); }

  /// A lower-right aligned sliding window within each sequence (see attention::window()).
  /// \throws std::invalid_argument if left or right is negative.
  [[nodiscard]] SequenceMask window(Index left, Index right) const {
    const WindowMask checked(left, right);  // validates
    SequenceMask m = *this;
    m.left_ = checked.left();
    m.right_ = checked.right();
    return m;
  }

  /// Only the first valid_keys[b] keys of sequence b are visible (one entry per sequence).
  /// \throws ShapeError if valid_keys does not have one entry per sequence; std::invalid_argument
  /// if an entry is negative or exceeds its sequence's number of keys.
  [[nodiscard]] SequenceMask key_padding(const std::vector<Index>& valid_keys) const {
    constexpr const char* func = "sequences(...).key_padding";
    detail::require_equal(func, "valid_keys.size()", static_cast<Index>(valid_keys.size()),
                          "number of sequences", num_sequences());
    SequenceMask m = *this;
    for (Index b = 0; b < num_sequences(); ++b) {
      const Index length = key_offsets_[b + 1] - key_offsets_[b];
      const Index valid = valid_keys[static_cast<std::size_t>(b)];
      if (valid < 0 || valid > length) {
        detail::throw_invalid_value(
            func, "valid_keys[" + std::to_string(b) + "] (= " + std::to_string(valid) +
                      ") must be between 0 and " +
                      "the sequence's number of keys (= " + std::to_string(length) + ")");
      }
      m.key_ends_[static_cast<std::size_t>(b)] = key_offsets_[b] + valid;
    }
    return m;
  }

  /// \throws ShapeError unless the offsets end at L and S.
  void check(const char* func, Index num_queries, Index num_keys) const {
    detail::require_equal(func, "sequences: last query offset", query_offsets_.back(),
                          "number of queries", num_queries);
    detail::require_equal(func, "sequences: last key offset", key_offsets_.back(), "number of keys",
                          num_keys);
  }

  /// Each sequence's part of the tile, classified as its band and padding make it: hidden off the
  /// diagonal blocks, visible where every part is, mixed otherwise.
  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    bool any_visible = false;
    bool all_visible = true;
    for (Index b = sequence_of(row0); b < num_sequences() && query_offsets_[b] < row0 + rows; ++b) {
      // The tile's rows of sequence b see its keys [key_offsets_[b], key_ends_[b]) within a band.
      const Index r0 = std::max(row0, query_offsets_[b]);
      const Index r1 = std::min(row0 + rows, query_offsets_[b + 1]);
      if (r0 >= r1) continue;  // an empty sequence
      const Index c0 = std::max(col0, key_offsets_[b]);
      const Index c1 = std::min(col0 + cols, key_ends_[b]);
      if (c0 >= c1) {
        all_visible = false;
        continue;
      }
      if (c0 != col0 || c1 != col0 + cols) all_visible = false;
      const TileVisibility v = band(b).visibility(r0, r1 - r0, c0, c1 - c0);
      if (v != TileVisibility::hidden) any_visible = true;
      if (v != TileVisibility::visible) all_visible = false;
    }
    if (!any_visible) return TileVisibility::hidden;
    return all_visible ? TileVisibility::visible : TileVisibility::mixed;
  }

  /// -inf outside each query's own sequence, padding and window.
  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    Index b = sequence_of(row0);
    for (Index r = 0; r < rows; ++r) {
      const Index i = row0 + r;
      while (query_offsets_[b + 1] <= i) ++b;
      // Row i sees its band's keys that are also sequence b's real keys,
      // [max(key_offsets_[b], i + lo), min(key_ends_[b], i + hi + 1)).
      detail::ColumnRange keys = band(b).columns(i, col0, cols);
      keys.first = std::max(keys.first, std::clamp<Index>(key_offsets_[b] - col0, 0, cols));
      keys.last = std::min(keys.last, std::clamp<Index>(key_ends_[b] - col0, 0, cols));
      detail::mask_outside(scores + r * stride, cols, keys);
    }
  }

 private:
  static void check_offsets(const char* name, const std::vector<Index>& offsets) {
    if (offsets.front() != 0) {
      detail::throw_invalid_value("sequences", std::string(name) + "[0] (= " +
                                                   std::to_string(offsets.front()) + ") must be 0");
    }
    for (std::size_t b = 1; b < offsets.size(); ++b) {
      if (offsets[b] < offsets[b - 1]) {
        detail::throw_invalid_value(
            "sequences",
            std::string(name) + "[" + std::to_string(b) + "] (= " + std::to_string(offsets[b]) +
                ") must be at least " + name + "[" + std::to_string(b - 1) +
                "] (= " + std::to_string(offsets[b - 1]) + "): offsets never decrease");
      }
    }
  }

  /// The sequence that query row i belongs to: query_offsets_[b] <= i < query_offsets_[b + 1].
  [[nodiscard]] Index sequence_of(Index i) const {
    return static_cast<Index>(std::upper_bound(query_offsets_.begin(), query_offsets_.end(), i) -
                              query_offsets_.begin()) -
           1;
  }

  /// Sequence b's window in absolute indices: its last query, query_offsets_[b + 1] - 1, is at the
  /// position of its last real key, key_ends_[b] - 1 (lower-right alignment within the sequence).
  [[nodiscard]] detail::DiagonalBand band(Index b) const {
    const Index reach = query_offsets_.back() + key_offsets_.back() + 1;
    const Index offset = key_ends_[static_cast<std::size_t>(b)] - query_offsets_[b + 1];
    return {offset - std::min(left_, reach), offset + std::min(right_, reach)};
  }

  std::vector<Index> query_offsets_;
  std::vector<Index> key_offsets_;
  std::vector<Index> key_ends_;  // one past sequence b's last visible key
  Index left_ = unbounded;
  Index right_ = unbounded;
};

/// sequences(query_offsets, key_offsets): packed sequences, query rows [query_offsets[b],
/// query_offsets[b + 1]) seeing key rows [key_offsets[b], key_offsets[b + 1]) (see SequenceMask).
/// Offsets are cumulative lengths, starting at 0 and ending at L and S. \throws as SequenceMask.
[[nodiscard]] inline SequenceMask sequences(std::vector<Index> query_offsets,
                                            std::vector<Index> key_offsets) {
  return SequenceMask(std::move(query_offsets), std::move(key_offsets));
}

/// sequences(offsets): packed self-attention, queries and keys split alike.
[[nodiscard]] inline SequenceMask sequences(const std::vector<Index>& offsets) {
  return SequenceMask(offsets, offsets);
}

}  // namespace attention
