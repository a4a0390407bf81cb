#pragma once
// SPDX-License-Identifier: MIT
//
// What every binding does with its arguments and results: pick the scalar type from the dtypes,
// allocate NumPy results, and view one matrix of a result.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <Eigen/Core>
#include <attention/types.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "batched_array.hpp"

namespace attention_python {

/// The scalar type of a call: float for float32, double for float64. \throws py::type_error
/// naming the argument for any other dtype, or if `others` do not share the first one's dtype.
template <typename F>
auto dispatch_dtype(const char* func, const std::vector<std::pair<const char*, py::array>>& args,
                    const F& f) {
  const auto& [first_name, first] = args.front();
  const bool is_float = first.dtype().is(py::dtype::of<float>());
  if (!is_float && !first.dtype().is(py::dtype::of<double>())) {
    std::ostringstream what;
    what << func << ": " << first_name << " has dtype " << dtype_name(first)
         << "; expected float32 or float64";
    throw py::type_error(what.str());
  }
  for (const auto& [name, array] : args) {
    if (!array.dtype().is(first.dtype())) {
      std::ostringstream what;
      what << func << ": " << name << " has dtype " << dtype_name(array) << " but " << first_name
           << " has " << dtype_name(first) << "; they need one dtype (convert one with .astype)";
      throw py::type_error(what.str());
    }
  }
  return is_float ? f(float{}) : f(double{});
}

/// A new C-contiguous array of `batch` + `tail` elements of T.
template <typename T>
py::array_t<T, py::array::c_style> new_array(std::vector<Index> batch,
                                             const std::vector<Index>& tail) {
  batch.insert(batch.end(), tail.begin(), tail.end());
  return py::array_t<T, py::array::c_style>(std::vector<py::ssize_t>(batch.begin(), batch.end()));
}

/// The row-major matrix at flat batch index b of C-contiguous results of rows x cols matrices
/// starting at `data` (taken while the GIL is held).
template <typename T>
Eigen::Map<attention::Matrix<T>> result_matrix(T* data, Index b, Index rows, Index cols) {
  return Eigen::Map<attention::Matrix<T>>(data + b * rows * cols, rows, cols);
}

}  // namespace attention_python
