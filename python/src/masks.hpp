#pragma once
// SPDX-License-Identifier: MIT
//
// PyTorch's attn_mask / is_causal arguments as the library's mask types:
//   attn_mask=None, is_causal=False   attention::NoMask
//   attn_mask=None, is_causal=True    attention::causal (top-left aligned, as PyTorch's)
//   attn_mask bool                    attention::keep(m): True = may attend (SDPA's polarity)
//   attn_mask float (q's dtype)       attention::bias(m): added to the scaled scores
// A mask is (L, S) or anything that broadcasts to (..., L, S) with the batch. Given both a mask
// and is_causal (PyTorch 2 refuses the pair), a key must pass both: the causal triangle is folded
// into a copy of the mask (False, or -inf, above the diagonal), so that four mask types cover
// every call.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <attention/mask.hpp>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "batched_array.hpp"

namespace attention_python {

/// The attn_mask argument once checked: absent, boolean or additive.
template <typename T>
struct MaskArgument {
  bool causal = false;                     // only when there is no array
  std::optional<BatchedArray<bool>> keep;  // True = attend
  std::optional<BatchedArray<T>> bias;     // added to the scores

  [[nodiscard]] bool has_array() const { return keep.has_value() || bias.has_value(); }
  [[nodiscard]] std::vector<Index> batch_shape() const {
    return keep ? keep->batch_shape() : bias ? bias->batch_shape() : std::vector<Index>{};
  }
  [[nodiscard]] std::vector<Index> batch_strides() const {
    return keep ? keep->batch_strides() : bias ? bias->batch_strides() : std::vector<Index>{};
  }

  /// Calls f(mask) with the library's mask for the matrix at element offset `offset` of the
  /// mask's own batch (from BatchIndexer). keep() and bias() view the array; no copy.
  template <typename F>
  void with_mask(Index offset, const F& f) const {
    // Named maps: keep() and bias() view an lvalue but would copy a temporary.
    if (keep) {
      const auto visible = keep->matrix(offset);
      f(attention::keep(visible));
    } else if (bias) {
      const auto added = bias->matrix(offset);
      f(attention::bias(added));
    } else if (causal) {
      f(attention::causal);
    } else {
      f(attention::NoMask{});
    }
  }
};

namespace detail {

/// `mask` with its last two dimensions broadcast to (L, S) and, with is_causal, every entry above
/// the diagonal (j > i) set to `hidden`: a new C-contiguous array of the mask's own batch shape.
template <typename E>
py::array expanded_mask(const py::array& mask, Index num_queries, Index num_keys, bool causal,
                        E hidden) {
  std::vector<py::ssize_t> shape(mask.shape(), mask.shape() + mask.ndim());
  shape[shape.size() - 2] = num_queries;
  shape[shape.size() - 1] = num_keys;
  const py::module_ numpy = py::module_::import("numpy");
  py::array_t<E, py::array::c_style> out =
      numpy.attr("array")(numpy.attr("broadcast_to")(mask, py::tuple(py::cast(shape))),
                          py::arg("dtype") = py::dtype::of<E>(), py::arg("order") = "C");
  if (causal) {
    E* data = out.mutable_data();
    const Index matrices = static_cast<Index>(out.size()) / (num_queries * num_keys);
    for (Index b = 0; b < matrices; ++b) {
      for (Index i = 0; i < num_queries; ++i) {
        E* row = data + (b * num_queries + i) * num_keys;
        for (Index j = i + 1; j < num_keys; ++j) row[j] = hidden;
      }
    }
  }
  return std::move(out);
}

}  // namespace detail

/// Checks attn_mask against L queries and S keys and the dtype T of q, k, v. \throws py::type_error
/// for a dtype other than bool or T; py::value_error for a shape that cannot broadcast to (L, S).
template <typename T>
MaskArgument<T> mask_argument(const char* func, const py::object& attn_mask, bool is_causal,
                              Index num_queries, Index num_keys) {
  MaskArgument<T> result;
  if (attn_mask.is_none()) {
    result.causal = is_causal;
    return result;
  }
  py::array mask = as_array(attn_mask);
  const bool is_bool = mask.dtype().is(py::dtype::of<bool>());
  if (!is_bool && !mask.dtype().is(py::dtype::of<T>())) {
    std::ostringstream what;
    what << func << ": attn_mask has dtype " << dtype_name(mask) << "; expected bool (True = "
         << "attend) or " << py::str(py::dtype::of<T>()).cast<std::string>()
         << ", the dtype of q, k and v (added to the scores)";
    throw py::type_error(what.str());
  }
  if (mask.ndim() == 0) {
    throw py::value_error(std::string(func) + ": attn_mask must have at least 1 dimension");
  }
  if (mask.ndim() == 1) mask = mask.reshape({py::ssize_t{1}, mask.shape(0)});
  const Index rows = mask.shape(mask.ndim() - 2), cols = mask.shape(mask.ndim() - 1);
  if ((rows != num_queries && rows != 1) || (cols != num_keys && cols != 1)) {
    std::ostringstream what;
    what << func << ": attn_mask has shape " << shape_text(shape_of(mask))
         << "; its last two dimensions must be (L, S) = (" << num_queries << ", " << num_keys
         << ") or broadcast to it";
    throw py::value_error(what.str());
  }
  if (rows != num_queries || cols != num_keys || is_causal) {
    if (is_bool) {
      mask = detail::expanded_mask<bool>(mask, num_queries, num_keys, is_causal, false);
    } else {
      mask = detail::expanded_mask<T>(mask, num_queries, num_keys, is_causal,
                                      -std::numeric_limits<T>::infinity());
    }
  }
  if (is_bool) {
    result.keep.emplace(mask, func, "attn_mask");
  } else {
    result.bias.emplace(mask, func, "attn_mask");
  }
  return result;
}

}  // namespace attention_python
