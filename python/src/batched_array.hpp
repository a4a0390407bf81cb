#pragma once
// SPDX-License-Identifier: MIT
//
// NumPy arrays seen as batches of row-major Eigen matrices, without copying what need not be
// copied, and the NumPy broadcasting of their leading ("batch") dimensions.
//
// An array of shape (..., rows, cols) is a batch of rows x cols matrices. When its last axis is
// contiguous (stride = itemsize) and its other strides are whole, non-negative multiples of the
// itemsize, every matrix of the batch is an Eigen::Map with an outer stride over the array's own
// memory, which the library reads in place (a C-contiguous array always qualifies, and so do
// slices such as x[..., :64] or x[::2]). Anything else (a transposed or Fortran-ordered array,
// negative strides, a misaligned or byte-swapped buffer) is copied once into a C-contiguous array.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <attention/types.hpp>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace attention_python {

namespace py = pybind11;
using attention::Index;

/// "(2, 3, 4)": a shape as Python prints it.
inline std::string shape_text(const std::vector<Index>& shape) {
  std::ostringstream text;
  text << '(';
  for (std::size_t i = 0; i < shape.size(); ++i) text << (i ? ", " : "") << shape[i];
  text << (shape.size() == 1 ? ",)" : ")");
  return text.str();
}

inline std::vector<Index> shape_of(const py::array& a) {
  return std::vector<Index>(a.shape(), a.shape() + a.ndim());
}

/// The dtype's name as NumPy prints it ("float32", "int64", "bool").
inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

/// Any object NumPy can turn into an array (ndarray, buffer protocol, __array__, nested lists),
/// without a copy when it already is one. \throws py::error_already_set if NumPy cannot.
inline py::array as_array(const py::handle& object) {
  py::array array = py::array::ensure(object);
  if (!array) throw py::error_already_set();
  return array;
}

/// An array argument as a batch of matrices of T. `T` must be the array's dtype (the caller checks
/// and raises TypeError otherwise).
template <typename T>
class BatchedArray {
 public:
  using MatrixMap = Eigen::Map<const attention::Matrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

  /// `name` is used in messages ("q", "attn_mask"). \throws py::value_error if the array has fewer
  /// than two dimensions.
  BatchedArray(py::array array, const char* func, const char* name) : array_(std::move(array)) {
    if (array_.ndim() < 2) {
      std::ostringstream what;
      what << func << ": " << name << " must have at least 2 dimensions (..., rows, columns), got "
           << "shape " << shape_text(shape_of(array_));
      throw py::value_error(what.str());
    }
    if (!readable_in_place()) {
      // The one copy: C-contiguous and aligned.
      array_ =
          py::array::ensure(array_, py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_);
      if (!array_) throw py::error_already_set();
    }
    const auto ndim = static_cast<std::size_t>(array_.ndim());
    for (std::size_t axis = 0; axis + 2 < ndim; ++axis) {
      batch_shape_.push_back(array_.shape(axis));
      batch_strides_.push_back(array_.strides(axis) / static_cast<Index>(sizeof(T)));
    }
    rows_ = array_.shape(ndim - 2);
    cols_ = array_.shape(ndim - 1);
    // With one row the row stride is never used (and may be anything, 0 for a broadcast view).
    row_stride_ = rows_ > 1 ? array_.strides(ndim - 2) / static_cast<Index>(sizeof(T)) : cols_;
    data_ = static_cast<const T*>(array_.data());
  }

  [[nodiscard]] const std::vector<Index>& batch_shape() const { return batch_shape_; }
  [[nodiscard]] const std::vector<Index>& batch_strides() const { return batch_strides_; }
  [[nodiscard]] Index rows() const { return rows_; }
  [[nodiscard]] Index cols() const { return cols_; }
  /// True if the array was read in place, false if it was copied.
  [[nodiscard]] bool in_place() const { return in_place_; }

  /// The matrix that starts `offset` elements into the data (an offset from BatchIndexer).
  [[nodiscard]] MatrixMap matrix(Index offset) const {
    return MatrixMap(data_ + offset, rows_, cols_, Eigen::OuterStride<>(row_stride_));
  }

 private:
  bool readable_in_place() {
    const auto itemsize = static_cast<py::ssize_t>(sizeof(T));
    const auto ndim = array_.ndim();
    bool ok = array_.dtype().attr("isnative").cast<bool>() &&
              reinterpret_cast<std::uintptr_t>(array_.data()) % alignof(T) == 0 &&
              (array_.shape(ndim - 1) <= 1 || array_.strides(ndim - 1) == itemsize);
    for (py::ssize_t axis = 0; ok && axis + 1 < ndim; ++axis) {
      const auto stride = array_.strides(axis);
      ok = stride >= 0 && stride % itemsize == 0;
    }
    // Rows closer than a row's length would make the map's rows overlap: legal to read, but
    // Eigen's Ref (which the library binds) expects them apart, so copy.
    ok = ok && (array_.shape(ndim - 2) <= 1 ||
                array_.strides(ndim - 2) >= itemsize * array_.shape(ndim - 1));
    in_place_ = ok;
    return ok;
  }

  py::array array_;
  std::vector<Index> batch_shape_;
  std::vector<Index> batch_strides_;  // in elements; 0 along broadcast axes of a view
  Index rows_ = 0;
  Index cols_ = 0;
  Index row_stride_ = 0;
  const T* data_ = nullptr;
  bool in_place_ = true;
};

/// NumPy broadcasting of several batch shapes (the dimensions before the last two): shapes are
/// aligned at their ends, and along each axis the sizes must be equal or 1. Then maps a flat batch
/// index of the result (C order) to each operand's element offset.
class BatchIndexer {
 public:
  /// \throws py::value_error naming the operands if the shapes do not broadcast.
  BatchIndexer(const char* func, const std::vector<const char*>& names,
               const std::vector<std::vector<Index>>& shapes,
               const std::vector<std::vector<Index>>& strides)
      : strides_(shapes.size()) {
    std::size_t ndim = 0;
    for (const auto& shape : shapes) ndim = std::max(ndim, shape.size());
    shape_.assign(ndim, 1);
    for (std::size_t op = 0; op < shapes.size(); ++op) {
      const std::size_t pad = ndim - shapes[op].size();
      for (std::size_t axis = 0; axis < shapes[op].size(); ++axis) {
        Index& size = shape_[pad + axis];
        const Index own = shapes[op][axis];
        if (own != 1 && size != 1 && own != size) throw_mismatch(func, names, shapes);
        if (own != 1) size = own;
      }
    }
    for (std::size_t op = 0; op < shapes.size(); ++op) {
      // A stride of 0 along an axis the operand lacks or has size 1: broadcast.
      strides_[op].assign(ndim, 0);
      const std::size_t pad = ndim - shapes[op].size();
      for (std::size_t axis = 0; axis < shapes[op].size(); ++axis) {
        if (shapes[op][axis] != 1) strides_[op][pad + axis] = strides[op][axis];
      }
    }
    count_ = 1;
    for (const Index size : shape_) count_ *= size;
  }

  /// The broadcast batch shape.
  [[nodiscard]] const std::vector<Index>& shape() const { return shape_; }
  /// Number of matrices in the broadcast batch (1 for no batch dimensions, 0 if one is 0).
  [[nodiscard]] Index count() const { return count_; }

  /// Element offset, in operand `op`, of the matrix at flat batch index `flat`.
  [[nodiscard]] Index offset(std::size_t op, Index flat) const {
    Index offset = 0;
    for (std::size_t axis = shape_.size(); axis-- > 0;) {
      offset += (flat % shape_[axis]) * strides_[op][axis];
      flat /= shape_[axis];
    }
    return offset;
  }

 private:
  [[noreturn]] static void throw_mismatch(const char* func, const std::vector<const char*>& names,
                                          const std::vector<std::vector<Index>>& shapes) {
    std::ostringstream what;
    what << func << ": the batch dimensions (all but the last two) do not broadcast:";
    for (std::size_t op = 0; op < shapes.size(); ++op) {
      what << (op ? "," : "") << ' ' << names[op] << ' ' << shape_text(shapes[op]);
    }
    what << " (each size must match or be 1)";
    throw py::value_error(what.str());
  }

  std::vector<Index> shape_;
  std::vector<std::vector<Index>> strides_;
  Index count_ = 1;
};

}  // namespace attention_python
