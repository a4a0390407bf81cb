#pragma once
// SPDX-License-Identifier: MIT
//
// Rotary position embeddings, RoPE (Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary
// Position Embedding", eq. 34). The row of a query or key at position m is split into pairs of
// columns, and pair i is rotated by the angle m * theta_i:
//
//   theta_i = base^(-2i / rotary_dim),  i = 0 .. rotary_dim / 2 - 1   (base = 10000 by default)
//   [y_a]   [cos(m theta_i)  -sin(m theta_i)] [x_a]
//   [y_b] = [sin(m theta_i)   cos(m theta_i)] [x_b]
//
// Because a rotation by m theta followed by the transpose of one by n theta is a rotation by
// (m - n) theta, the score (R_m q) . (R_n k) = q . R_{n-m} k depends on the positions only through
// m - n: the attention scores see relative positions although each row is rotated on its own.
//
// Which columns form pair i is the one thing implementations disagree on:
//
//   RopeLayout::interleaved   pair i = columns (2i, 2i + 1): the paper, GPT-J, Meta's Llama code
//   RopeLayout::half_split    pair i = columns (i, i + rotary_dim / 2): GPT-NeoX and Hugging Face's
//                             Llama ("rotate_half"); weights converted between the two carry a
//                             column permutation of W_q and W_k
//
//   head_dim = 8, rotary_dim = 8:
//     interleaved   (0 1) (2 3) (4 5) (6 7)        theta_0 theta_1 theta_2 theta_3
//     half_split    (0 4) (1 5) (2 6) (3 7)        theta_0 theta_1 theta_2 theta_3
//
// Partial rotary (GPT-NeoX's rotary_pct, GPT-J's rotary_dim): only the first rotary_dim <= head_dim
// columns rotate, with theta_i computed from rotary_dim as above (as those models do); the
// remaining head_dim - rotary_dim columns pass through unchanged.
//
// Precision: theta_i is computed once, in long double. Each angle m * theta_i, its cosine and its
// sine are computed in double for float data and in long double otherwise, and only then rounded
// to the data's type, so a large position (m = 10^6, say) is as accurate as a small one up to the
// rounding of m theta_i in that wider type (relative 1e-16 or 1e-19) -- unlike a table of float
// angles, whose error grows with m.

#include <Eigen/Core>
#include <cmath>
#include <optional>
#include <sstream>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/errors.hpp"
#include "attention/types.hpp"

namespace attention {

namespace detail {
template <typename Derived>
std::true_type is_matrix_base_test(const Eigen::MatrixBase<Derived>*);
std::false_type is_matrix_base_test(...);

/// True for an Eigen matrix, block or view that may be written through: a non-const lvalue or a
/// temporary view such as x.middleCols(...) (Rope's in-place rotations take either).
template <typename X>
inline constexpr bool is_writable_matrix =
    decltype(is_matrix_base_test(std::declval<std::decay_t<X>*>()))::value &&
    !std::is_const_v<std::remove_reference_t<X>>;
}  // namespace detail

/// Which columns of a head RoPE rotates together; see the top of rope.hpp.
enum class RopeLayout {
  interleaved,  ///< pairs (2i, 2i + 1): RoFormer, GPT-J, Meta's Llama
  half_split,   ///< pairs (i, i + rotary_dim / 2): GPT-NeoX, Hugging Face Llama
};

/// Rotary position embedding of one head width (Su et al., 2021; formula at the top of rope.hpp).
/// Construct once per model, e.g. `attention::Rope rope{128, attention::RopeLayout::half_split}`,
/// then rotate the queries and keys of each head before attention:
///
///   rope.apply(q, position_of_first_row);            q: L x head_dim, rows at positions p, p + 1,
///   ... rope.apply(qkv.middleCols(h * 128, 128), p);     one head's columns of a wider matrix
///   rope.apply_each_head(q_all, p);                  every head of an L x (num_heads * head_dim)
///   matrix
///
/// apply_transpose() rotates by the opposite angles: it undoes apply() and is its backward
/// (y = R x gives dx = R^T dy).
class Rope {
 public:
  /// head_dim: the width of one head. layout: which columns pair up (no default: checkpoints
  /// differ, and the wrong choice still runs, silently). base: theta_i =
  /// base^(-2i / rotary_dim) (10000 in RoFormer, GPT-NeoX and Llama 2; Llama 3 uses 500000).
  /// rotary_dim: how many leading columns rotate (even, 2 .. head_dim; unset: all of them).
  /// \throws ShapeError if head_dim < 1, or rotary_dim is odd, < 2 or > head_dim;
  /// std::invalid_argument if base is not finite and positive.
  Rope(Index head_dim, RopeLayout layout, double base = 10000.0,
       std::optional<Index> rotary_dim = std::nullopt)
      : head_dim_(head_dim),
        rotary_dim_(rotary_dim.value_or(head_dim)),
        layout_(layout),
        base_(base) {
    constexpr const char* func = "Rope";
    detail::require_positive(func, "head_dim", head_dim_);
    if (rotary_dim_ < 2 || rotary_dim_ % 2 != 0) {
      std::ostringstream what;
      what << "attention::Rope: rotary_dim (= " << rotary_dim_
           << ") must be even and at least 2 (columns rotate in pairs)";
      throw ShapeError(what.str());
    }
    if (rotary_dim_ > head_dim_) {
      detail::throw_shape_error(func, "rotary_dim", rotary_dim_, "must be at most", "head_dim",
                                head_dim_);
    }
    if (!std::isfinite(base) || !(base > 0.0)) {
      std::ostringstream what;
      what << "base (= " << base << ") must be finite and positive";
      detail::throw_invalid_value(func, what.str());
    }
    const Index pairs = rotary_dim_ / 2;
    inverse_frequency_.resize(static_cast<std::size_t>(pairs));
    for (Index i = 0; i < pairs; ++i) {
      // theta_i = base^(-2i / rotary_dim), in long double.
      inverse_frequency_[static_cast<std::size_t>(i)] =
          std::pow(static_cast<long double>(base),
                   -static_cast<long double>(2 * i) / static_cast<long double>(rotary_dim_));
    }
  }

  /// Width of the rows it rotates: one head's columns.
  [[nodiscard]] Index head_dim() const { return head_dim_; }
  /// Columns that rotate (the first rotary_dim() of each head; the rest pass through).
  [[nodiscard]] Index rotary_dim() const { return rotary_dim_; }
  /// Which columns make a pair: interleaved or half-split.
  [[nodiscard]] RopeLayout layout() const { return layout_; }
  /// The base of the frequencies theta_i = base^(-2i / rotary_dim).
  [[nodiscard]] double base() const { return base_; }

  /// theta_i = base^(-2i / rotary_dim) (long double).
  /// \throws std::out_of_range unless 0 <= i < rotary_dim() / 2.
  [[nodiscard]] long double frequency(Index i) const {
    detail::require_index("Rope::frequency", "i", i, "rotary_dim() / 2", rotary_dim_ / 2);
    return inverse_frequency_[static_cast<std::size_t>(i)];
  }

  /// The two columns of pair i: (2i, 2i + 1) interleaved, (i, i + rotary_dim / 2) half-split.
  /// \throws std::out_of_range unless 0 <= i < rotary_dim() / 2.
  [[nodiscard]] std::pair<Index, Index> pair_columns(Index i) const {
    detail::require_index("Rope::pair_columns", "i", i, "rotary_dim() / 2", rotary_dim_ / 2);
    return columns_of_pair(i);
  }

  /// Rotates x in place: row r is the token at position position_offset + r (an incremental
  /// decoder passes the number of tokens already cached). x: L x head_dim, any writable Eigen
  /// matrix, block or temporary view (x.middleCols(h * head_dim, head_dim) rotates one head of a
  /// wider matrix). Negative positions are allowed. \throws ShapeError if x.cols() != head_dim.
  template <typename X, std::enable_if_t<detail::is_writable_matrix<X>, int> = 0>
  void apply(X&& x, Index position_offset = 0) const {
    rotate_one_head("Rope::apply", x, position_offset, 1);
  }

  /// The inverse rotation, by -(m theta_i): undoes apply(), and is its backward: for y = R x,
  /// dL/dx = R^T dL/dy, so `apply_transpose(dy, p)` turns the gradient of the rotated rows into
  /// that of the rows before rotation. Same arguments and exceptions as apply().
  template <typename X, std::enable_if_t<detail::is_writable_matrix<X>, int> = 0>
  void apply_transpose(X&& x, Index position_offset = 0) const {
    rotate_one_head("Rope::apply_transpose", x, position_offset, -1);
  }

  /// Rotates every head of x in place: x is L x (num_heads * head_dim), head h in columns
  /// [h * head_dim, (h + 1) * head_dim) (the layout of MultiHeadAttention's projections), row r at
  /// position position_offset + r; x may be a temporary view such as x.topRows(...). Each angle's
  /// cosine and sine are computed once per row and shared by the heads. \throws ShapeError unless
  /// head_dim divides x.cols().
  template <typename X, std::enable_if_t<detail::is_writable_matrix<X>, int> = 0>
  void apply_each_head(X&& x, Index position_offset = 0) const {
    rotate_each_head("Rope::apply_each_head", x, position_offset, 1);
  }

  /// The backward (inverse) of apply_each_head().
  template <typename X, std::enable_if_t<detail::is_writable_matrix<X>, int> = 0>
  void apply_transpose_each_head(X&& x, Index position_offset = 0) const {
    rotate_each_head("Rope::apply_transpose_each_head", x, position_offset, -1);
  }

 private:
  /// pair_columns() for an index known to be in range (the rotation's inner loop).
  [[nodiscard]] std::pair<Index, Index> columns_of_pair(Index i) const {
    return layout_ == RopeLayout::interleaved ? std::pair<Index, Index>{2 * i, 2 * i + 1}
                                              : std::pair<Index, Index>{i, i + rotary_dim_ / 2};
  }

  /// The type angles, cosines and sines are computed in before rounding to Scalar.
  template <typename Scalar>
  using Wide = std::conditional_t<std::is_same_v<Scalar, float>, double, long double>;

  template <typename Derived>
  void rotate_one_head(const char* func, Eigen::MatrixBase<Derived>& x, Index position_offset,
                       int sign) const {
    detail::require_equal(func, "x.cols()", x.cols(), "head_dim", head_dim_);
    rotate(x, position_offset, 1, sign);
  }

  template <typename Derived>
  void rotate_each_head(const char* func, Eigen::MatrixBase<Derived>& x, Index position_offset,
                        int sign) const {
    detail::require_positive(func, "x.cols()", x.cols());
    detail::require_divides(func, "head_dim", head_dim_, "x.cols()", x.cols());
    rotate(x, position_offset, x.cols() / head_dim_, sign);
  }

  /// Rotates the heads of x (num_heads blocks of head_dim columns, checked by the caller) by
  /// sign * (m theta_i).
  template <typename Derived>
  void rotate(Eigen::MatrixBase<Derived>& x, Index position_offset, Index num_heads,
              int sign) const {
    using Scalar = typename Derived::Scalar;
    static_assert(std::is_floating_point_v<Scalar>,
                  "attention::Rope: the scalar type must be float, double or long double");
    eigen_assert(x.cols() == head_dim_ * num_heads);  // the callers checked the width
    using W = Wide<Scalar>;
    const Index pairs = rotary_dim_ / 2;
    std::vector<Scalar> cosines(static_cast<std::size_t>(pairs)),
        sines(static_cast<std::size_t>(pairs));
    for (Index r = 0; r < x.rows(); ++r) {
      const W position = static_cast<W>(position_offset + r);
      for (Index i = 0; i < pairs; ++i) {
        const W angle = position * static_cast<W>(inverse_frequency_[static_cast<std::size_t>(i)]);
        cosines[static_cast<std::size_t>(i)] = static_cast<Scalar>(std::cos(angle));
        sines[static_cast<std::size_t>(i)] = static_cast<Scalar>(sign * std::sin(angle));
      }
      for (Index h = 0; h < num_heads; ++h) {
        const Index c0 = h * head_dim_;
        for (Index i = 0; i < pairs; ++i) {
          const auto [a, b] = columns_of_pair(i);
          const Scalar c = cosines[static_cast<std::size_t>(i)];
          const Scalar s = sines[static_cast<std::size_t>(i)];
          const Scalar xa = x(r, c0 + a), xb = x(r, c0 + b);
          x(r, c0 + a) = xa * c - xb * s;
          x(r, c0 + b) = xa * s + xb * c;
        }
      }
    }
  }

  Index head_dim_;
  Index rotary_dim_;
  RopeLayout layout_;
  double base_;
  std::vector<long double> inverse_frequency_;
};

}  // namespace attention
