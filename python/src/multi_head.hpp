#pragma once
// SPDX-License-Identifier: MIT
//
// attention.MultiHeadAttention: self-attention over batches of sequences with the weights of a
// torch.nn.MultiheadAttention, on the library's MultiHeadAttention<float> or <double>.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <attention/multi_head.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <variant>

#include "arguments.hpp"
#include "batched_array.hpp"
#include "masks.hpp"
#include "parallel.hpp"

namespace attention_python {
namespace multi_head_detail {

/// The scalar type of a MultiHeadAttention<T>.
template <typename Layer>
struct layer_scalar;
template <typename T>
struct layer_scalar<attention::MultiHeadAttention<T>> {
  using type = T;
};
template <typename Layer>
using layer_scalar_t = typename layer_scalar<std::decay_t<Layer>>::type;

/// The layer holds its weights in one dtype: float32 until load_pytorch gives it arrays of
/// another.
class MultiHeadAttention {
  // Calls f(layer) with the MultiHeadAttention<float> or <double> the layer holds.
  template <typename F>
  decltype(auto) visit(const F& f) const {
    return std::visit(f, layer_);
  }

 public:
  MultiHeadAttention(Index embed_dim, Index num_heads, std::optional<Index> num_kv_heads)
      : layer_(attention::MultiHeadAttention<float>(embed_dim, num_heads,
                                                    num_kv_heads.value_or(num_heads))) {}

  [[nodiscard]] Index embed_dim() const {
    return visit([](const auto& l) { return l.d_model(); });
  }
  [[nodiscard]] Index num_heads() const {
    return visit([](const auto& l) { return l.num_heads(); });
  }
  [[nodiscard]] Index num_kv_heads() const {
    return visit([](const auto& l) { return l.num_kv_heads(); });
  }
  [[nodiscard]] Index head_dim() const {
    return visit([](const auto& l) { return l.head_dim(); });
  }
  [[nodiscard]] py::dtype dtype() const {
    return visit([](const auto& l) { return py::dtype::of<layer_scalar_t<decltype(l)>>(); });
  }

  /// nn.MultiheadAttention's tensors (y = x W^T + b): in_proj_weight (E + 2 kv_dim, E) stacks the
  /// query, key and value weights by rows (kv_dim = E without grouped-query attention),
  /// in_proj_bias (E + 2 kv_dim) or None, out_proj_weight (E, E), out_proj_bias (E) or None. The
  /// layer takes their dtype (float32 or float64).
  void load_pytorch(const py::object& in_proj_weight, const py::object& in_proj_bias,
                    const py::object& out_proj_weight, const py::object& out_proj_bias) {
    constexpr const char* func = "attention.MultiHeadAttention.load_pytorch";
    const py::array w_in = as_array(in_proj_weight), w_out = as_array(out_proj_weight);
    std::vector<std::pair<const char*, py::array>> args{{"in_proj_weight", w_in},
                                                        {"out_proj_weight", w_out}};
    if (!in_proj_bias.is_none()) args.emplace_back("in_proj_bias", as_array(in_proj_bias));
    if (!out_proj_bias.is_none()) args.emplace_back("out_proj_bias", as_array(out_proj_bias));
    dispatch_dtype(func, args, [&](auto scalar) {
      using T = decltype(scalar);
      const Index e = embed_dim(), kv = num_kv_heads() * head_dim();
      attention::MultiHeadAttention<T> layer(e, num_heads(), num_kv_heads());
      require_shape(func, "in_proj_weight", w_in, {e + 2 * kv, e}, "(E + 2 * kv_dim, E)");
      require_shape(func, "out_proj_weight", w_out, {e, e}, "(E, E)");
      const BatchedArray<T> w_in_matrix(w_in, func, "in_proj_weight");
      const BatchedArray<T> w_out_matrix(w_out, func, "out_proj_weight");
      const auto w = w_in_matrix.matrix(0);
      layer.w_q = w.topRows(e).transpose();
      layer.w_k = w.middleRows(e, kv).transpose();
      layer.w_v = w.bottomRows(kv).transpose();
      layer.w_o = w_out_matrix.matrix(0).transpose();
      if (!in_proj_bias.is_none()) {
        const py::array b = as_array(in_proj_bias);
        require_shape(func, "in_proj_bias", b, {e + 2 * kv}, "(E + 2 * kv_dim,)");
        const auto bias = vector<T>(b);
        layer.b_q = bias.head(e);
        layer.b_k = bias.segment(e, kv);
        layer.b_v = bias.tail(kv);
      }
      if (!out_proj_bias.is_none()) {
        const py::array b = as_array(out_proj_bias);
        require_shape(func, "out_proj_bias", b, {e}, "(E,)");
        layer.b_o = vector<T>(b);
      }
      layer_ = std::move(layer);
    });
  }

  /// Self-attention over x (..., L, E): one forward() per sequence of the batch.
  [[nodiscard]] py::object call(const py::object& x_object, const py::object& attn_mask,
                                bool is_causal) const {
    constexpr const char* func = "attention.MultiHeadAttention.__call__";
    const py::array x_array = as_array(x_object);
    return visit([&](const auto& layer) -> py::object {
      using T = layer_scalar_t<decltype(layer)>;
      if (!x_array.dtype().is(py::dtype::of<T>())) {
        std::ostringstream what;
        what << func << ": x has dtype " << dtype_name(x_array) << " but the layer's weights are "
             << py::str(py::dtype::of<T>()).cast<std::string>()
             << " (load_pytorch sets them; convert x with .astype)";
        throw py::type_error(what.str());
      }
      const BatchedArray<T> x(x_array, func, "x");
      const MaskArgument<T> mask = mask_argument<T>(func, attn_mask, is_causal, x.rows(), x.rows());
      const BatchIndexer batch(func, {"x", "attn_mask"}, {x.batch_shape(), mask.batch_shape()},
                               {x.batch_strides(), mask.batch_strides()});
      const Index rows = x.rows(), cols = embed_dim();
      auto out = new_array<T>(batch.shape(), {rows, cols});
      T* const out_data = out.mutable_data();
      for_each_problem(batch.count(), [&](Index b) {
        mask.with_mask(batch.offset(1, b), [&](const auto& m) {
          result_matrix(out_data, b, rows, cols) = layer.forward(x.matrix(batch.offset(0, b)), m);
        });
      });
      return std::move(out);
    });
  }

 private:
  static void require_shape(const char* func, const char* name, const py::array& a,
                            const std::vector<Index>& expected, const char* formula) {
    if (shape_of(a) == expected) return;
    std::ostringstream what;
    what << func << ": " << name << " has shape " << shape_text(shape_of(a)) << "; expected "
         << formula << " = " << shape_text(expected);
    throw py::value_error(what.str());
  }

  template <typename T>
  static attention::RowVector<T> vector(const py::array& a) {
    const py::array_t<T, py::array::forcecast> contiguous =
        py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
    return Eigen::Map<const attention::RowVector<T>>(contiguous.data(), contiguous.size());
  }

  std::variant<attention::MultiHeadAttention<float>, attention::MultiHeadAttention<double>> layer_;
};

inline constexpr const char* mha_doc =
    R"(MultiHeadAttention(embed_dim, num_heads, num_kv_heads=None)

Multi-head self-attention with the parameters of torch.nn.MultiheadAttention (batch_first):
    y = softmax(Q_h K_g^T / sqrt(head_dim) + mask) V_g ... concatenated, then the output projection,
with Q = x W_q^T + b_q and so on. num_kv_heads < num_heads gives grouped-query attention (query
head h reads key/value head h // (num_heads // num_kv_heads)). The weights start at zero in
float32: load them with load_pytorch.)";

inline constexpr const char* load_doc =
    R"(load_pytorch(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)

Loads nn.MultiheadAttention's tensors, given as arrays (tensor.detach().numpy()):
in_proj_weight (E + 2 * kv_dim, E), the query, key and value weights stacked by rows (kv_dim = E
without grouped-query attention); in_proj_bias (E + 2 * kv_dim,) or None (zeros);
out_proj_weight (E, E); out_proj_bias (E,) or None. All float32 or all float64: the layer then
computes in that dtype.)";

inline constexpr const char* call_doc = R"(__call__(x, attn_mask=None, *, is_causal=False)

Self-attention over x (..., L, E) of the layer's dtype; returns (..., L, E). attn_mask as in
scaled_dot_product_attention, (L, L) or broadcastable to (..., L, L): bool True = may attend
(note: nn.MultiheadAttention's bool attn_mask means the opposite, True = masked; pass ~mask), or
float, added. is_causal: token i sees tokens j <= i.)";

}  // namespace multi_head_detail

/// Adds the MultiHeadAttention class to the module.
inline void add_multi_head(py::module_& m) {
  using namespace pybind11::literals;
  using multi_head_detail::MultiHeadAttention;
  py::class_<MultiHeadAttention>(m, "MultiHeadAttention", multi_head_detail::mha_doc)
      .def(py::init<attention::Index, attention::Index, std::optional<attention::Index>>(),
           "embed_dim"_a, "num_heads"_a, "num_kv_heads"_a = py::none())
      .def("load_pytorch", &MultiHeadAttention::load_pytorch, "in_proj_weight"_a, "in_proj_bias"_a,
           "out_proj_weight"_a, "out_proj_bias"_a, multi_head_detail::load_doc)
      .def("__call__", &MultiHeadAttention::call, "x"_a, "attn_mask"_a = py::none(), py::kw_only(),
           "is_causal"_a = false, multi_head_detail::call_doc)
      .def_property_readonly("embed_dim", &MultiHeadAttention::embed_dim)
      .def_property_readonly("num_heads", &MultiHeadAttention::num_heads)
      .def_property_readonly("num_kv_heads", &MultiHeadAttention::num_kv_heads)
      .def_property_readonly("head_dim", &MultiHeadAttention::head_dim)
      .def_property_readonly("dtype", &MultiHeadAttention::dtype)
      .def("__repr__", [](const MultiHeadAttention& layer) {
        return "attention.MultiHeadAttention(embed_dim=" + std::to_string(layer.embed_dim()) +
               ", num_heads=" + std::to_string(layer.num_heads()) +
               ", num_kv_heads=" + std::to_string(layer.num_kv_heads()) +
               ", dtype=" + py::str(layer.dtype()).cast<std::string>() + ")";
      });
}

}  // namespace attention_python
