#pragma once
// SPDX-License-Identifier: MIT
//
// Masks say which keys each query may attend to. They are types, not bare matrices or bools, so a
// call reads unambiguously and a mask cannot be mistaken for an output argument:
//
//   scaled_dot_product_attention(q, k, v)                       every key visible
//   scaled_dot_product_attention(q, k, v, attention::causal)    key j visible to query i iff j <= i
//   scaled_dot_product_attention(q, k, v, attention::causal_lower_right)
//                                                               ... iff j <= i + (S - L)
//   scaled_dot_product_attention(q, k, v, attention::window(left, right))
//                                       ... iff i + (S - L) - left <= j <= i + (S - L) + right
//   scaled_dot_product_attention(q, k, v, attention::keep(b))   b(i, j) == true: query i sees key j
//   scaled_dot_product_attention(q, k, v, attention::bias(m))   m(i, j) added to the scaled score
//   scaled_dot_product_attention(q, k, v, mask_a & mask_b)      visible only where both masks
//                                                               are; biases add
//   scaled_dot_product_attention(q, k, v, attention::alibi(m))  -m * ((i + S - L) - j) added to
//                                                               the scaled score (ALiBi, alibi.hpp)
//
// L is the number of queries (q.rows()) and S the number of keys (k.rows()).
//
// The two causal alignments. attention::causal is top-left aligned (PyTorch's is_causal): query i
// sees keys j <= i, whatever L and S. attention::causal_lower_right is aligned at the bottom-right
// corner: query i sees keys j <= i + (S - L), so the last query sees every key. This is what an
// incremental decoder needs: its L new queries are the last L of S positions, the first S - L keys
// being the cached past. The two agree when L == S.
//
//   L = 2, S = 5       key 0 1 2 3 4          L = 5, S = 2       key 0 1
//   causal     query 0     x . . . .          causal     query 0     x .
//              query 1     x x . . .                     query 1     x x
//                                                        query 2     x x
//   causal_lower_right                                   query 3     x x
//              query 0     x x x x .                     query 4     x x
//              query 1     x x x x x          causal_lower_right
//                                                        query 0     . .   <- no key: output 0
//   x visible, . masked: weight exactly 0                query 1     . .
//                                                        query 2     . .
//                                                        query 3     x .
//                                                        query 4     x x
//
// Sliding windows, attention::window(left, right), are lower-right aligned as sliding-window
// models (Mistral, Longformer's local attention; Beltagy et al., 2020) use them: query i sees the
// keys from left positions before its own, i + (S - L), to right positions after it. window(w, 0)
// is causal sliding-window attention over the last w + 1 keys; window(attention::unbounded, 0) is
// causal_lower_right, and attention::unbounded leaves either side open. Sizes must be >= 0.
//
//   window(2, 0), L = S = 5   key 0 1 2 3 4
//              query 0            x . . . .
//              query 1            x x . . .
//              query 2            x x x . .
//              query 3            . x x x .
//              query 4            . . x x x
//
// A query row with no visible key (every entry of its keep row false, or every bias -inf) gets all
// weights 0 and output 0, never NaN. A masked weight is exactly 0.0.
//
// The mask protocol (enough to write a new mask type). A mask is a copyable type with
//   void check(const char* func, Index L, Index S) const;
//     throws ShapeError (detail::require_*) if it cannot mask an L x S score matrix; every entry
//     point calls it before any work. `func` names the caller for the message.
// and, optionally,
//   Bound bind(Index L, Index S) const;
//     for a mask whose answers depend on L and S (lower-right alignment needs S - L). The kernels
//     call it once per call, after check(), and use the returned object (cheap to copy; it may
//     refer to the mask, which outlives it) for every tile. A mask without bind() is used as is.
// The bound object (or the mask itself) answers two questions for a tile of the L x S score matrix,
// rows [row0, row0 + rows) (queries) and columns [col0, col0 + cols) (keys), in absolute indices:
//   TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const;
//     hidden: every score of the tile is masked (the kernel skips the tile); visible: nothing to
//     mask and nothing to add (the kernel skips apply()); mixed otherwise. When unsure, answer
//     mixed: hidden and visible must be exact claims. A single entry is never "partly" hidden, so
//     a 1 x 1 tile must be answered hidden exactly when its score is masked.
//   template <typename Scalar>
//   void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const;
//     scores points at the tile's (row0, col0) entry, rows `stride` apart: set masked scores to
//     -inf, add biases, and leave a score that is already -inf at -inf (another mask of a
//     combination hid it). Called on mixed tiles, and on the whole L x S matrix by the
//     materialising path. Must not allocate.
// Tiled kernels skip hidden tiles and call apply() only on mixed ones. Finally specialise
// detail::is_mask<YourMask> as std::true_type so the attention functions accept it (and `&`
// combines it with the others).

#include <Eigen/Core>
#include <algorithm>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/detail/matrix_handle.hpp"
#include "attention/errors.hpp"
#include "attention/types.hpp"

namespace attention {

/// What a mask does to one tile of the score matrix.
enum class TileVisibility {
  hidden,   ///< every score masked: the tile contributes nothing and can be skipped
  visible,  ///< every score visible and nothing added: no mask work needed
  mixed,    ///< apply() must run on the tile (some scores masked, or biases to add)
};

namespace detail {

/// bind_mask(mask, L, S): mask.bind(L, S) for a mask that has bind(), else the mask itself (by
/// reference). What the kernels ask visibility() and apply() of (see the protocol at the top).
template <typename Mask, typename = void>
struct has_bind : std::false_type {};
template <typename Mask>
struct has_bind<Mask, std::void_t<decltype(std::declval<const Mask&>().bind(Index{}, Index{}))>>
    : std::true_type {};

template <typename Mask>
[[nodiscard]] decltype(auto) bind_mask(const Mask& mask, Index num_queries, Index num_keys) {
  if constexpr (has_bind<Mask>::value) {
    return mask.bind(num_queries, num_keys);
  } else {
    return (mask);  // const Mask&
  }
}

}  // namespace detail

/// No mask: every key is visible to every query. The default of every `mask` argument.
struct NoMask {
  void check(const char*, Index, Index) const {}
  [[nodiscard]] TileVisibility visibility(Index, Index, Index, Index) const {
    return TileVisibility::visible;
  }
  template <typename Scalar>
  void apply(Scalar*, Index, Index, Index, Index, Index) const {}
};

/// Causal mask, top-left aligned: query i sees key j iff j <= i, for any numbers of queries L and
/// keys S (PyTorch's is_causal convention). When L > S the last queries see every key; when L < S
/// the last S - L keys are seen by nobody.
struct CausalMask {
  void check(const char*, Index, Index) const {}

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    if (col0 > row0 + rows - 1) return TileVisibility::hidden;    // even the last row sees < col0
    if (col0 + cols - 1 <= row0) return TileVisibility::visible;  // the first row sees the last col
    return TileVisibility::mixed;
  }

  /// scores points at the tile's (row0, col0) entry; rows are `stride` apart.
  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      Scalar* row = scores + r * stride;
      // Row row0 + r sees columns j <= row0 + r, i.e. tile columns c <= row0 + r - col0.
      for (Index c = std::max<Index>(0, row0 + r - col0 + 1); c < cols; ++c) row[c] = minus_inf;
    }
  }
};

/// The causal mask: `attention::scaled_dot_product_attention(q, k, v, attention::causal)`.
inline constexpr CausalMask causal{};

/// A side of attention::window() without a limit: window(attention::unbounded, 0) sees every
/// earlier key.
inline constexpr Index unbounded = std::numeric_limits<Index>::max();

namespace detail {

/// Key j visible to query i iff lo <= j - i <= hi: a band around a diagonal of the score matrix.
/// The bound form of causal_lower_right and window().
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

  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      Scalar* row = scores + r * stride;
      // Row i = row0 + r sees keys [i + lo, i + hi], i.e. tile columns [first, last).
      const Index i = row0 + r;
      const Index first = std::clamp<Index>(i + lo - col0, 0, cols);
      const Index last = std::clamp<Index>(i + hi - col0 + 1, first, cols);
      std::fill(row, row + first, minus_inf);
      std::fill(row + last, row + cols, minus_inf);
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

/// Causal mask, lower-right aligned: query i sees key j iff j <= i + (S - L), so the L queries are
/// the last L of S positions (an incremental decoder's new tokens after S - L cached ones). When
/// L > S the first L - S queries see no key and give 0. Equal to attention::causal when L == S.
struct CausalLowerRightMask {
  void check(const char*, Index, Index) const {}
  [[nodiscard]] detail::DiagonalBand bind(Index num_queries, Index num_keys) const {
    return detail::lower_right_band(num_queries, num_keys, unbounded, 0);
  }
};

/// The lower-right aligned causal mask (see the diagrams at the top of this header).
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

  [[nodiscard]] Index left() const { return left_; }
  [[nodiscard]] Index right() const { return right_; }

  void check(const char*, Index, Index) const {}
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

/// Boolean mask: query i may attend to key j iff visible(i, j) is true (PyTorch SDPA's convention
/// for boolean masks). Made by attention::keep().
class KeepMask {
 public:
  explicit KeepMask(detail::MatrixHandle<bool> visible) : visible_(std::move(visible)) {}

  /// The L x S matrix of flags.
  [[nodiscard]] const detail::MatrixHandle<bool>& matrix() const { return visible_; }

  void check(const char* func, Index num_queries, Index num_keys) const {
    detail::require_equal(func, "keep mask rows()", visible_.rows(), "number of queries",
                          num_queries);
    detail::require_equal(func, "keep mask cols()", visible_.cols(), "number of keys", num_keys);
  }

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    Index num_visible = 0;
    for (Index r = row0; r < row0 + rows; ++r) {
      const bool* flags = visible_.row(r) + col0;
      for (Index c = 0; c < cols; ++c) num_visible += flags[c] ? 1 : 0;
    }
    if (num_visible == 0) return TileVisibility::hidden;
    return num_visible == rows * cols ? TileVisibility::visible : TileVisibility::mixed;
  }

  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      const bool* flags = visible_.row(row0 + r) + col0;
      Scalar* row = scores + r * stride;
      for (Index c = 0; c < cols; ++c) {
        if (!flags[c]) row[c] = minus_inf;
      }
    }
  }

 private:
  detail::MatrixHandle<bool> visible_;
};

/// Additive mask: bias(i, j) is added to the scaled score of query i and key j before the softmax.
/// -inf hides the key (the seeds' 0 / -inf masks) exactly as keep() would, whatever the score; any
/// finite value shifts the score (ALiBi, relative position biases). A +inf or NaN bias makes that
/// query's row NaN, as IEEE arithmetic would.
/// Made by attention::bias().
template <typename Scalar>
class BiasMask {
 public:
  using scalar_type = Scalar;

  explicit BiasMask(detail::MatrixHandle<Scalar> bias) : bias_(std::move(bias)) {}

  /// The L x S matrix of biases.
  [[nodiscard]] const detail::MatrixHandle<Scalar>& matrix() const { return bias_; }

  void check(const char* func, Index num_queries, Index num_keys) const {
    detail::require_equal(func, "bias mask rows()", bias_.rows(), "number of queries", num_queries);
    detail::require_equal(func, "bias mask cols()", bias_.cols(), "number of keys", num_keys);
  }

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = row0; r < row0 + rows; ++r) {
      const Scalar* values = bias_.row(r) + col0;
      for (Index c = 0; c < cols; ++c) {
        if (!(values[c] == minus_inf)) return TileVisibility::mixed;
      }
    }
    return TileVisibility::hidden;
  }

  template <typename S>
  void apply(S* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    static_assert(std::is_same_v<S, Scalar>,
                  "attention::bias: the bias matrix must have the same scalar type as q, k and v");
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      const Scalar* values = bias_.row(row0 + r) + col0;
      S* row = scores + r * stride;
      // A -inf bias hides the key outright, as causal and keep() do: the score is replaced, not
      // added to, so a NaN score of a hidden key (NaN + -inf = NaN) cannot reach the query. A
      // score that is already -inf stays hidden (in a combination, another mask hid it), even
      // under a +inf or NaN bias.
      for (Index c = 0; c < cols; ++c) {
        row[c] = values[c] == minus_inf || row[c] == minus_inf ? minus_inf : row[c] + values[c];
      }
    }
  }

 private:
  detail::MatrixHandle<Scalar> bias_;
};

/// keep(b): a boolean mask, true = query i may attend to key j. `b` is any L x S Eigen matrix or
/// array of bool, e.g. `attention::keep(distance.array() < 3)`. A row-major lvalue is referred to,
/// not copied, and must outlive the mask; a temporary or an expression is evaluated and owned.
template <typename Derived>
[[nodiscard]] KeepMask keep(const Eigen::DenseBase<Derived>& visible) {
  static_assert(std::is_same_v<typename Derived::Scalar, bool>,
                "attention::keep needs a matrix of bool (true = may attend); for 0 / -inf or other "
                "additive masks use attention::bias");
  return KeepMask(detail::MatrixHandle<bool>::view_or_copy(visible));
}

/// keep() of a temporary: evaluated into storage the mask owns.
template <typename Derived,
          std::enable_if_t<
              detail::is_eigen_dense_v<Derived> && !std::is_lvalue_reference_v<Derived>, int> = 0>
[[nodiscard]] KeepMask keep(Derived&& visible) {
  static_assert(std::is_same_v<typename std::decay_t<Derived>::Scalar, bool>,
                "attention::keep needs a matrix of bool (true = may attend); for 0 / -inf or other "
                "additive masks use attention::bias");
  return KeepMask(detail::MatrixHandle<bool>::copy(visible));
}

/// bias(m): an additive mask, m(i, j) added to the scaled score (0 / -inf masks, or any bias). `m`
/// is an L x S Eigen matrix of the same scalar type as q, k and v. A row-major lvalue is referred
/// to, not copied, and must outlive the mask; a temporary or an expression is evaluated and owned.
template <typename Derived>
[[nodiscard]] BiasMask<typename Derived::Scalar> bias(const Eigen::DenseBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  return BiasMask<Scalar>(detail::MatrixHandle<Scalar>::view_or_copy(m));
}

/// bias() of a temporary: evaluated into storage the mask owns.
template <typename Derived,
          std::enable_if_t<
              detail::is_eigen_dense_v<Derived> && !std::is_lvalue_reference_v<Derived>, int> = 0>
[[nodiscard]] BiasMask<typename std::decay_t<Derived>::Scalar> bias(Derived&& m) {
  using Scalar = typename std::decay_t<Derived>::Scalar;
  return BiasMask<Scalar>(detail::MatrixHandle<Scalar>::copy(m));
}

/// Key padding: keys j >= valid_keys are hidden from every query (the padding at the end of a
/// key sequence, PyTorch's key_padding_mask for one sequence). For several sequences stacked in
/// one call, each with its own padding, use sequences(...).key_padding(valid_keys). Made by
/// attention::key_padding().
class KeyPaddingMask {
 public:
  /// \throws std::invalid_argument if valid_keys is negative.
  explicit KeyPaddingMask(Index valid_keys) : valid_keys_(valid_keys) {
    if (valid_keys < 0) {
      detail::throw_invalid_value("key_padding",
                                  "valid_keys (= " + std::to_string(valid_keys) + ") must be >= 0");
    }
  }

  [[nodiscard]] Index valid_keys() const { return valid_keys_; }

  void check(const char* func, Index, Index num_keys) const {
    if (valid_keys_ > num_keys) {
      detail::throw_shape_error(func, "key_padding valid_keys", valid_keys_, "must be at most",
                                "number of keys", num_keys);
    }
  }

  [[nodiscard]] TileVisibility visibility(Index, Index, Index col0, Index cols) const {
    if (col0 >= valid_keys_) return TileVisibility::hidden;
    if (col0 + cols <= valid_keys_) return TileVisibility::visible;
    return TileVisibility::mixed;
  }

  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    const Index first_hidden = std::clamp<Index>(valid_keys_ - col0, 0, cols);
    for (Index r = 0; r < rows; ++r)
      std::fill(scores + r * stride + first_hidden, scores + r * stride + cols, minus_inf);
  }

 private:
  Index valid_keys_;
};

/// key_padding(n): only the first n keys are visible. \throws std::invalid_argument if n < 0;
/// the attention call throws ShapeError if n exceeds its number of keys.
[[nodiscard]] inline KeyPaddingMask key_padding(Index valid_keys) {
  return KeyPaddingMask(valid_keys);
}

/// Packed variable-length sequences: B sequences stacked row-wise in one call (a batch without a
/// batch dimension, as FlashAttention's varlen interface takes them with cu_seqlens). Query rows
/// [query_offsets[b], query_offsets[b + 1]) attend only to key rows [key_offsets[b],
/// key_offsets[b + 1]): the score matrix is block-diagonal, and the kernels skip every tile off
/// the diagonal blocks. Within each sequence, optionally:
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

  [[nodiscard]] Index num_sequences() const {
    return static_cast<Index>(query_offsets_.size()) - 1;
  }
  [[nodiscard]] const std::vector<Index>& query_offsets() const { return query_offsets_; }
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

  void check(const char* func, Index num_queries, Index num_keys) const {
    detail::require_equal(func, "sequences: last query offset", query_offsets_.back(),
                          "number of queries", num_queries);
    detail::require_equal(func, "sequences: last key offset", key_offsets_.back(), "number of keys",
                          num_keys);
  }

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

  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    Index b = sequence_of(row0);
    for (Index r = 0; r < rows; ++r) {
      const Index i = row0 + r;
      while (query_offsets_[b + 1] <= i) ++b;
      // Row i sees keys [max(key_offsets_[b], i + lo), min(key_ends_[b], i + hi + 1)).
      const detail::DiagonalBand keys = band(b);
      Scalar* row = scores + r * stride;
      const Index first = std::clamp<Index>(std::max(key_offsets_[b], i + keys.lo) - col0, 0, cols);
      const Index last =
          std::clamp<Index>(std::min(key_ends_[b], i + keys.hi + 1) - col0, first, cols);
      std::fill(row, row + first, minus_inf);
      std::fill(row + last, row + cols, minus_inf);
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

namespace detail {
template <typename T>
struct is_mask : std::false_type {};
template <>
struct is_mask<NoMask> : std::true_type {};
template <>
struct is_mask<CausalMask> : std::true_type {};
template <>
struct is_mask<CausalLowerRightMask> : std::true_type {};
template <>
struct is_mask<WindowMask> : std::true_type {};
template <>
struct is_mask<KeepMask> : std::true_type {};
template <>
struct is_mask<KeyPaddingMask> : std::true_type {};
template <>
struct is_mask<SequenceMask> : std::true_type {};
template <typename Scalar>
struct is_mask<BiasMask<Scalar>> : std::true_type {};

}  // namespace detail

/// True for the mask types above; used to keep mask overloads apart from output-argument overloads.
template <typename T>
inline constexpr bool is_mask_v = detail::is_mask<std::decay_t<T>>::value;

/// Two masks at once, made by `a & b`: key j is visible to query i only where both masks let it
/// through, and the biases of both are added (a bias combines by addition). Combinations nest:
/// `a & b & c`. The combination holds copies of a and b (keep() and bias() masks share their
/// matrix, they do not copy it).
template <typename A, typename B>
class BothMasks {
 public:
  BothMasks(A a, B b) : a_(std::move(a)), b_(std::move(b)) {}

  [[nodiscard]] const A& first() const { return a_; }
  [[nodiscard]] const B& second() const { return b_; }

  void check(const char* func, Index num_queries, Index num_keys) const {
    a_.check(func, num_queries, num_keys);
    b_.check(func, num_queries, num_keys);
  }

  /// The bound form: both parts bound to (L, S) (see the protocol at the top of this header).
  template <typename BoundA, typename BoundB>
  struct Bound {
    BoundA a;  // a bound mask, or a reference to a mask that is its own bound form
    BoundB b;

    /// Hidden if either part hides the tile or if no entry passes both (found by halving the
    /// tile where both parts are mixed); visible if both are; mixed otherwise.
    [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
      const TileVisibility va = a.visibility(row0, rows, col0, cols);
      if (va == TileVisibility::hidden) return TileVisibility::hidden;
      const TileVisibility vb = b.visibility(row0, rows, col0, cols);
      if (vb == TileVisibility::hidden) return TileVisibility::hidden;
      if (va == TileVisibility::visible && vb == TileVisibility::visible) {
        return TileVisibility::visible;
      }
      if (va == TileVisibility::visible || vb == TileVisibility::visible) {
        return TileVisibility::mixed;  // the other part shows some entry, all of which pass this
                                       // one
      }
      return visible_under_both(row0, rows, col0, cols) ? TileVisibility::mixed
                                                        : TileVisibility::hidden;
    }

    /// a's masking and biases, then b's. A score hidden by a stays -inf under b (protocol).
    template <typename Scalar>
    void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
      a.apply(scores, stride, row0, rows, col0, cols);
      b.apply(scores, stride, row0, rows, col0, cols);
    }

   private:
    /// Whether some entry of the tile passes both parts, given that neither hides the tile.
    /// Two parts can each leave a tile partly visible and still share no visible entry (a band
    /// and a keep() pattern that lies outside it): the tile is halved, and a half that either
    /// part hides is dropped, until one part sees a half whole (the other shows something in it)
    /// or a single entry remains (the protocol makes 1 x 1 answers exact). Halving stops at the
    /// first shared entry, so a tile that is not empty costs a few calls along one path.
    [[nodiscard]] bool visible_under_both(Index row0, Index rows, Index col0, Index cols) const {
      if (rows == 1 && cols == 1) return true;
      const auto part = [&](Index r0, Index nr, Index c0, Index nc) {
        const TileVisibility va = a.visibility(r0, nr, c0, nc);
        if (va == TileVisibility::hidden) return false;
        const TileVisibility vb = b.visibility(r0, nr, c0, nc);
        if (vb == TileVisibility::hidden) return false;
        if (va == TileVisibility::visible || vb == TileVisibility::visible) return true;
        return visible_under_both(r0, nr, c0, nc);
      };
      if (rows >= cols) {
        const Index half = rows / 2;
        return part(row0, half, col0, cols) || part(row0 + half, rows - half, col0, cols);
      }
      const Index half = cols / 2;
      return part(row0, rows, col0, half) || part(row0, rows, col0 + half, cols - half);
    }
  };

  [[nodiscard]] auto bind(Index num_queries, Index num_keys) const {
    using BoundA = decltype(detail::bind_mask(a_, num_queries, num_keys));
    using BoundB = decltype(detail::bind_mask(b_, num_queries, num_keys));
    return Bound<BoundA, BoundB>{detail::bind_mask(a_, num_queries, num_keys),
                                 detail::bind_mask(b_, num_queries, num_keys)};
  }

 private:
  A a_;
  B b_;
};

namespace detail {
template <typename A, typename B>
struct is_mask<BothMasks<A, B>> : std::true_type {};
}  // namespace detail

/// a & b: visible only where both masks are, biases added (see BothMasks), e.g.
///   attention::causal_lower_right & attention::bias(alibi)
///   attention::window(4095, 0) & attention::keep(allowed)
template <typename A, typename B, std::enable_if_t<is_mask_v<A> && is_mask_v<B>, int> = 0>
[[nodiscard]] BothMasks<std::decay_t<A>, std::decay_t<B>> operator&(A&& a, B&& b) {
  return {std::forward<A>(a), std::forward<B>(b)};
}

}  // namespace attention
