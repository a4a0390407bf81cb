#pragma once
// SPDX-License-Identifier: MIT
//
// Masks given entry by entry, as an L x S matrix (L queries, S keys):
//
//   attention::keep(b)   b(i, j) == true: query i may attend to key j (PyTorch SDPA's boolean
//   masks) attention::bias(m)   m(i, j) added to the scaled score; -inf hides the key (0 / -inf
//   masks)
//
// Both hold their matrix through detail::MatrixHandle: a row-major lvalue is viewed, not copied,
// and must outlive the mask; a temporary, an expression or another layout is evaluated once into
// storage that every copy of the mask shares.

#include <Eigen/Core>
#include <limits>
#include <type_traits>
#include <utility>

#include "attention/detail/matrix_handle.hpp"
#include "attention/errors.hpp"
#include "attention/masks/protocol.hpp"
#include "attention/types.hpp"

namespace attention {
namespace detail {

/// What keep() and bias() masks share: their L x S matrix and the check that it is L x S.
template <typename T>
class MatrixMask {
 public:
  /// The L x S matrix (of flags for keep(), of biases for bias()).
  [[nodiscard]] const MatrixHandle<T>& matrix() const { return matrix_; }

 protected:
  explicit MatrixMask(MatrixHandle<T> matrix) : matrix_(std::move(matrix)) {}

  /// \throws ShapeError naming `rows_name` or `cols_name` unless the matrix is L x S.
  void check_shape(const char* func, const char* rows_name, const char* cols_name,
                   Index num_queries, Index num_keys) const {
    require_equal(func, rows_name, matrix_.rows(), "number of queries", num_queries);
    require_equal(func, cols_name, matrix_.cols(), "number of keys", num_keys);
  }

  MatrixHandle<T> matrix_;
};

}  // namespace detail

/// Boolean mask: query i may attend to key j iff visible(i, j) is true (PyTorch SDPA's convention
/// for boolean masks). Made by attention::keep().
class KeepMask : public detail::MatrixMask<bool> {
 public:
  /// Made by attention::keep(), which decides whether `visible` is viewed or owned.
  explicit KeepMask(detail::MatrixHandle<bool> visible) : MatrixMask(std::move(visible)) {}

  /// \throws ShapeError unless the matrix is L x S.
  void check(const char* func, Index num_queries, Index num_keys) const {
    check_shape(func, "keep mask rows()", "keep mask cols()", num_queries, num_keys);
  }

  /// hidden if no flag of the tile is true, visible if all are, mixed otherwise.
  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    Index num_visible = 0;
    for (Index r = row0; r < row0 + rows; ++r) {
      const bool* flags = matrix_.row(r) + col0;
      for (Index c = 0; c < cols; ++c) num_visible += flags[c] ? 1 : 0;
    }
    if (num_visible == 0) return TileVisibility::hidden;
    return num_visible == rows * cols ? TileVisibility::visible : TileVisibility::mixed;
  }

  /// -inf where the flag is false.
  template <typename Scalar>
  void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      const bool* flags = matrix_.row(row0 + r) + col0;
      Scalar* row = scores + r * stride;
      for (Index c = 0; c < cols; ++c) {
        if (!flags[c]) row[c] = minus_inf;
      }
    }
  }
};

/// Additive mask: bias(i, j) is added to the scaled score of query i and key j before the softmax.
/// -inf hides the key (the seeds' 0 / -inf masks) exactly as keep() would, whatever the score; any
/// finite value shifts the score (ALiBi, relative position biases). A +inf or NaN bias makes that
/// query's row NaN, as IEEE arithmetic would.
/// Made by attention::bias().
template <typename Scalar>
class BiasMask : public detail::MatrixMask<Scalar> {
 public:
  /// the biases' type, which must be that of the scores: of q, k and v, or float for
  /// Eigen::bfloat16 and Eigen::half inputs (low_precision.hpp)
  using scalar_type = Scalar;

  /// Made by attention::bias(), which decides whether `bias` is viewed or owned.
  explicit BiasMask(detail::MatrixHandle<Scalar> bias)
      : detail::MatrixMask<Scalar>(std::move(bias)) {}

  /// \throws ShapeError unless the matrix is L x S.
  void check(const char* func, Index num_queries, Index num_keys) const {
    this->check_shape(func, "bias mask rows()", "bias mask cols()", num_queries, num_keys);
  }

  /// hidden if every bias of the tile is -inf, else mixed (biases to add).
  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = row0; r < row0 + rows; ++r) {
      const Scalar* values = this->matrix_.row(r) + col0;
      for (Index c = 0; c < cols; ++c) {
        if (!(values[c] == minus_inf)) return TileVisibility::mixed;
      }
    }
    return TileVisibility::hidden;
  }

  /// Adds the biases; -inf where the bias is -inf or the score already is.
  template <typename S>
  void apply(S* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
    static_assert(std::is_same_v<S, Scalar>,
                  "attention::bias: the bias matrix must have the scalar type of the scores: that "
                  "of q, k and v, or float for Eigen::bfloat16 and Eigen::half inputs");
    constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
    for (Index r = 0; r < rows; ++r) {
      const Scalar* values = this->matrix_.row(row0 + r) + col0;
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
};

/// keep(b): a boolean mask, true = query i may attend to key j. `b` is any L x S Eigen matrix or
/// array of bool, e.g. `attention::keep(distance.array() < 3)`. A row-major lvalue is referred to,
/// not copied, and must outlive the mask; a temporary or an expression is evaluated and owned.
template <typename Derived, std::enable_if_t<detail::is_eigen_dense_v<Derived>, int> = 0>
[[nodiscard]] KeepMask keep(Derived&& visible) {
  static_assert(std::is_same_v<typename std::decay_t<Derived>::Scalar, bool>,
                "attention::keep needs a matrix of bool (true = may attend); for 0 / -inf or other "
                "additive masks use attention::bias");
  return KeepMask(detail::MatrixHandle<bool>::hold(std::forward<Derived>(visible)));
}

/// bias(m): an additive mask, m(i, j) added to the scaled score (0 / -inf masks, or any bias). `m`
/// is an L x S Eigen matrix of the scores' scalar type: that of q, k and v (float for bfloat16 and
/// half inputs). A row-major lvalue is referred to, not copied, and must outlive the mask; a
/// temporary or an expression is evaluated and owned.
template <typename Derived, std::enable_if_t<detail::is_eigen_dense_v<Derived>, int> = 0>
[[nodiscard]] BiasMask<typename std::decay_t<Derived>::Scalar> bias(Derived&& m) {
  using Scalar = typename std::decay_t<Derived>::Scalar;
  return BiasMask<Scalar>(detail::MatrixHandle<Scalar>::hold(std::forward<Derived>(m)));
}

}  // namespace attention
