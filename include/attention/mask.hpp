#pragma once
// SPDX-License-Identifier: MIT
//
// Masks say which keys each query may attend to. They are types, not bare matrices or bools, so a
// call reads unambiguously and a mask cannot be mistaken for an output argument:
//
//   scaled_dot_product_attention(q, k, v)                       every key visible
//   scaled_dot_product_attention(q, k, v, attention::causal)    key j visible to query i iff j <= i
//   scaled_dot_product_attention(q, k, v, attention::keep(b))   b(i, j) == true: query i sees key j
//   scaled_dot_product_attention(q, k, v, attention::bias(m))   m(i, j) added to the scaled score
//
// Causal masking, L = 3 queries, S = 4 keys (top-left aligned, as PyTorch's is_causal):
//
//            key 0  1  2  3
//   query 0      x  .  .  .       x visible
//   query 1      x  x  .  .       . masked: weight exactly 0
//   query 2      x  x  x  .
//
// A query row with no visible key (every entry of its keep row false, or every bias -inf) gets all
// weights 0 and output 0, never NaN. A masked weight is exactly 0.0.
//
// Internally each mask answers two questions for a tile of the score matrix (rows [row0, row0 +
// rows), columns [col0, col0 + cols)): visibility(), whether the tile is hidden, fully visible with
// nothing to add, or mixed; and apply(), which sets masked scores to -inf and adds biases. Tiled
// kernels skip hidden tiles and call apply() only on mixed ones.

#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

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
/// keys S (PyTorch's is_causal convention). When L > S the last queries see every key; when L < S the
/// last S - L keys are seen by nobody.
struct CausalMask {
  void check(const char*, Index, Index) const {}

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    if (col0 > row0 + rows - 1) return TileVisibility::hidden;  // even the last row sees < col0
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
    detail::require_equal(func, "bias mask rows()", bias_.rows(), "number of queries",
                          num_queries);
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
      // added to, so a NaN score of a hidden key (NaN + -inf = NaN) cannot reach the query.
      for (Index c = 0; c < cols; ++c) row[c] = values[c] == minus_inf ? minus_inf : row[c] + values[c];
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
template <typename Derived, std::enable_if_t<detail::is_eigen_dense_v<Derived> &&
                                                 !std::is_lvalue_reference_v<Derived>,
                                             int> = 0>
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
template <typename Derived, std::enable_if_t<detail::is_eigen_dense_v<Derived> &&
                                                 !std::is_lvalue_reference_v<Derived>,
                                             int> = 0>
[[nodiscard]] BiasMask<typename std::decay_t<Derived>::Scalar> bias(Derived&& m) {
  using Scalar = typename std::decay_t<Derived>::Scalar;
  return BiasMask<Scalar>(detail::MatrixHandle<Scalar>::copy(m));
}

namespace detail {
template <typename T>
struct is_mask : std::false_type {};
template <>
struct is_mask<NoMask> : std::true_type {};
template <>
struct is_mask<CausalMask> : std::true_type {};
template <>
struct is_mask<KeepMask> : std::true_type {};
template <typename Scalar>
struct is_mask<BiasMask<Scalar>> : std::true_type {};
}  // namespace detail

/// True for the mask types above; used to keep mask overloads apart from output-argument overloads.
template <typename T>
inline constexpr bool is_mask_v = detail::is_mask<std::decay_t<T>>::value;

}  // namespace attention
