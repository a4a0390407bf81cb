#pragma once
// SPDX-License-Identifier: MIT
//
// attention.scaled_dot_product_attention, scaled_dot_product_attention_lse and attention_weights:
// torch.nn.functional's names and keywords over batches of the library's 2-D calls.
//
// q (..., L, E), k (..., S, E), v (..., S, Ev) and attn_mask (..., L, S) are batches of matrices
// whose leading dimensions broadcast as in NumPy and PyTorch; each matrix of the broadcast batch
// is one call of the library, writing straight into its slice of the NumPy result.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <attention/options.hpp>
#include <attention/partial.hpp>
#include <attention/scaled_dot_product.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "arguments.hpp"
#include "batched_array.hpp"
#include "masks.hpp"
#include "parallel.hpp"

namespace attention_python {
namespace functional_detail {

/// q, k, (v,) attn_mask of one call, checked and broadcast.
template <typename T>
struct AttentionCall {
  BatchedArray<T> q;
  BatchedArray<T> k;
  std::optional<BatchedArray<T>> v;
  MaskArgument<T> mask;
  BatchIndexer batch;
  attention::Options options;

  AttentionCall(const char* func, const py::array& q_array, const py::array& k_array,
                const py::array* v_array, const py::object& attn_mask, bool is_causal,
                std::optional<double> scale)
      : q(q_array, func, "q"),
        k(k_array, func, "k"),
        v(v_array ? std::optional<BatchedArray<T>>(std::in_place, *v_array, func, "v")
                  : std::nullopt),
        mask(mask_argument<T>(func, attn_mask, is_causal, q.rows(), k.rows())),
        batch(func, names(), shapes(), strides()) {
    options.scale = scale;
  }

  /// Operand numbers in BatchIndexer.
  static constexpr std::size_t q_op = 0, k_op = 1, v_op = 2, mask_op = 3;

 private:
  std::vector<const char*> names() const { return {"q", "k", "v", "attn_mask"}; }
  std::vector<std::vector<Index>> shapes() const {
    return {q.batch_shape(), k.batch_shape(), v ? v->batch_shape() : std::vector<Index>{},
            mask.batch_shape()};
  }
  std::vector<std::vector<Index>> strides() const {
    return {q.batch_strides(), k.batch_strides(), v ? v->batch_strides() : std::vector<Index>{},
            mask.batch_strides()};
  }
};

inline py::object scaled_dot_product_attention(const py::object& q_object,
                                               const py::object& k_object,
                                               const py::object& v_object,
                                               const py::object& attn_mask, bool is_causal,
                                               std::optional<double> scale) {
  constexpr const char* func = "attention.scaled_dot_product_attention";
  const py::array q = as_array(q_object), k = as_array(k_object), v = as_array(v_object);
  return dispatch_dtype(func, {{"q", q}, {"k", k}, {"v", v}}, [&](auto scalar) -> py::object {
    using T = decltype(scalar);
    const AttentionCall<T> call(func, q, k, &v, attn_mask, is_causal, scale);
    const Index rows = call.q.rows(), cols = call.v->cols();
    auto out = new_array<T>(call.batch.shape(), {rows, cols});
    T* const out_data = out.mutable_data();
    for_each_problem(call.batch.count(), [&](Index b) {
      const auto& batch = call.batch;
      call.mask.with_mask(batch.offset(call.mask_op, b), [&](const auto& mask) {
        attention::scaled_dot_product_attention(
            call.q.matrix(batch.offset(call.q_op, b)), call.k.matrix(batch.offset(call.k_op, b)),
            call.v->matrix(batch.offset(call.v_op, b)), result_matrix(out_data, b, rows, cols),
            mask, call.options);
      });
    });
    return std::move(out);
  });
}

inline py::tuple scaled_dot_product_attention_lse(const py::object& q_object,
                                                  const py::object& k_object,
                                                  const py::object& v_object,
                                                  const py::object& attn_mask, bool is_causal,
                                                  std::optional<double> scale) {
  constexpr const char* func = "attention.scaled_dot_product_attention_lse";
  const py::array q = as_array(q_object), k = as_array(k_object), v = as_array(v_object);
  return dispatch_dtype(func, {{"q", q}, {"k", k}, {"v", v}}, [&](auto scalar) -> py::tuple {
    using T = decltype(scalar);
    const AttentionCall<T> call(func, q, k, &v, attn_mask, is_causal, scale);
    const Index rows = call.q.rows(), cols = call.v->cols();
    auto out = new_array<T>(call.batch.shape(), {rows, cols});
    auto lse = new_array<T>(call.batch.shape(), {rows});
    T* const out_data = out.mutable_data();
    T* const lse_data = lse.mutable_data();
    for_each_problem(call.batch.count(), [&](Index b) {
      const auto& batch = call.batch;
      call.mask.with_mask(batch.offset(call.mask_op, b), [&](const auto& mask) {
        // The library returns this form as a new PartialAttention: copied into the results
        // (O(L d) against the call's O(L S d)).
        const auto part = attention::scaled_dot_product_attention_lse(
            call.q.matrix(batch.offset(call.q_op, b)), call.k.matrix(batch.offset(call.k_op, b)),
            call.v->matrix(batch.offset(call.v_op, b)), mask, call.options);
        result_matrix(out_data, b, rows, cols) = part.output;
        result_matrix(lse_data, b, 1, rows) = part.lse.transpose();
      });
    });
    return py::make_tuple(std::move(out), std::move(lse));
  });
}

inline py::object attention_weights(const py::object& q_object, const py::object& k_object,
                                    const py::object& attn_mask, bool is_causal,
                                    std::optional<double> scale) {
  constexpr const char* func = "attention.attention_weights";
  const py::array q = as_array(q_object), k = as_array(k_object);
  return dispatch_dtype(func, {{"q", q}, {"k", k}}, [&](auto scalar) -> py::object {
    using T = decltype(scalar);
    const AttentionCall<T> call(func, q, k, nullptr, attn_mask, is_causal, scale);
    const Index rows = call.q.rows(), cols = call.k.rows();
    auto out = new_array<T>(call.batch.shape(), {rows, cols});
    T* const out_data = out.mutable_data();
    for_each_problem(call.batch.count(), [&](Index b) {
      const auto& batch = call.batch;
      call.mask.with_mask(batch.offset(call.mask_op, b), [&](const auto& mask) {
        attention::attention_weights(call.q.matrix(batch.offset(call.q_op, b)),
                                     call.k.matrix(batch.offset(call.k_op, b)),
                                     result_matrix(out_data, b, rows, cols), mask, call.options);
      });
    });
    return std::move(out);
  });
}

inline constexpr const char* sdpa_doc =
    R"(scaled_dot_product_attention(q, k, v, attn_mask=None, *, is_causal=False, scale=None)

Scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention:
    out = softmax(q @ k.T * scale + mask) @ v,   scale = 1 / sqrt(E) by default.

q: (..., L, E), k: (..., S, E), v: (..., S, Ev), all float32 or all float64 (NumPy arrays, or
anything with the buffer protocol or __array__, e.g. torch CPU tensors). The leading dimensions
broadcast as in NumPy. Returns (..., L, Ev) of the same dtype.

attn_mask: bool, True = may attend (PyTorch SDPA's polarity), or float of q's dtype, added to the
    scaled scores (-inf hides a key); (L, S) or broadcastable to (..., L, S).
is_causal: query i attends to keys j <= i (top-left aligned, as PyTorch), also when L != S. With
    attn_mask too, a key must pass both.
scale: the factor of q @ k.T (keyword only, as in PyTorch).

A query that may attend to no key gets an output row of zeros (PyTorch gives NaN).
Raises ValueError (with the library's message) on mismatched shapes, TypeError on other dtypes.)";

inline constexpr const char* lse_doc =
    R"(scaled_dot_product_attention_lse(q, k, v, attn_mask=None, *, is_causal=False, scale=None)

As scaled_dot_product_attention, and also returns each query's log-sum-exp of its scaled, masked
scores: (out, lse) with lse of shape (..., L); -inf for a query that sees no key. Two results over
disjoint key sets A and B combine into the result over A and B:
    lse = logaddexp(lse_a, lse_b),  out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b.)";

inline constexpr const char* weights_doc =
    R"(attention_weights(q, k, attn_mask=None, *, is_causal=False, scale=None)

The attention weights softmax(q @ k.T * scale + mask), shape (..., L, S): each row sums to 1, or is
all 0 for a query that sees no key; masked weights are exactly 0. Arguments as in
scaled_dot_product_attention.)";

}  // namespace functional_detail

/// Adds scaled_dot_product_attention, scaled_dot_product_attention_lse and attention_weights to the
/// module.
inline void add_functional(py::module_& m) {
  using namespace pybind11::literals;
  m.def("scaled_dot_product_attention", &functional_detail::scaled_dot_product_attention, "q"_a,
        "k"_a, "v"_a, "attn_mask"_a = py::none(), py::kw_only(), "is_causal"_a = false,
        "scale"_a = py::none(), functional_detail::sdpa_doc);
  m.def("scaled_dot_product_attention_lse", &functional_detail::scaled_dot_product_attention_lse,
        "q"_a, "k"_a, "v"_a, "attn_mask"_a = py::none(), py::kw_only(), "is_causal"_a = false,
        "scale"_a = py::none(), functional_detail::lse_doc);
  m.def("attention_weights", &functional_detail::attention_weights, "q"_a, "k"_a,
        "attn_mask"_a = py::none(), py::kw_only(), "is_causal"_a = false, "scale"_a = py::none(),
        functional_detail::weights_doc);
}

}  // namespace attention_python
