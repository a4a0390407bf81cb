#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <memory>
#include <type_traits>
#include <utility>

#include "attention/types.hpp"

namespace attention::detail {

/// A read-only, row-major view of a matrix that may own its storage. Masks hold their matrix
/// through one of these: an lvalue that is already row-major with contiguous rows is viewed without
/// a copy (like Eigen::Ref or std::string_view, it must outlive the view); anything else -- a
/// temporary, a column-major matrix, an expression -- is evaluated once into storage that every
/// copy of the handle shares, so no copy of a mask can dangle.
template <typename T>
class MatrixHandle {
 public:
  MatrixHandle() = default;

  /// Views `m` if its layout allows, else evaluates it into owned storage.
  template <typename Derived>
  static MatrixHandle view_or_copy(const Eigen::DenseBase<Derived>& m) {
    if constexpr (can_view<Derived>()) {
      if (m.derived().innerStride() == 1) {
        return MatrixHandle(m.derived().data(), m.rows(), m.cols(), row_stride(m.derived()));
      }
    }
    return copy(m);
  }

  /// Evaluates `m` into owned storage (used for temporaries, whose storage would not outlive us).
  template <typename Derived>
  static MatrixHandle copy(const Eigen::DenseBase<Derived>& m) {
    auto owned = std::make_shared<Matrix<T>>(m.template cast<T>());
    MatrixHandle handle(owned->data(), owned->rows(), owned->cols(), owned->cols());
    handle.owned_ = std::move(owned);
    return handle;
  }

  /// view_or_copy for an lvalue, copy for a temporary (an rvalue's storage would not outlive us).
  template <typename Derived>
  static MatrixHandle hold(Derived&& m) {
    if constexpr (std::is_lvalue_reference_v<Derived>) {
      return view_or_copy(m);
    } else {
      return copy(m);
    }
  }

  [[nodiscard]] Index rows() const { return rows_; }
  [[nodiscard]] Index cols() const { return cols_; }
  /// Pointer to the first entry of row i; entries of a row are contiguous.
  [[nodiscard]] const T* row(Index i) const { return data_ + i * stride_; }
  [[nodiscard]] const T& operator()(Index i, Index j) const { return data_[i * stride_ + j]; }

 private:
  MatrixHandle(const T* data, Index rows, Index cols, Index stride)
      : data_(data), rows_(rows), cols_(cols), stride_(stride) {}

  template <typename Derived>
  static constexpr bool can_view() {
    return std::is_same_v<typename Derived::Scalar, T> &&
           (Derived::Flags & Eigen::DirectAccessBit) != 0 &&
           ((Derived::Flags & Eigen::RowMajorBit) != 0 || Derived::ColsAtCompileTime == 1 ||
            Derived::RowsAtCompileTime == 1);
  }

  template <typename Derived>
  static Index row_stride(const Derived& m) {
    // A row-major outer stride is the distance between rows. A single row or column has no outer
    // stride that matters for us except in the column case, where consecutive rows are one inner
    // stride apart (and innerStride() == 1 was checked).
    if constexpr ((Derived::Flags & Eigen::RowMajorBit) != 0) return m.outerStride();
    return m.cols() == 1 ? 1 : m.outerStride();
  }

  std::shared_ptr<const Matrix<T>> owned_;
  const T* data_ = nullptr;
  Index rows_ = 0;
  Index cols_ = 0;
  Index stride_ = 0;
};

}  // namespace attention::detail
