#pragma once
// SPDX-License-Identifier: MIT
//
// The parameters of a multi-head attention layer, MultiHeadWeights: its weights and biases for a
// MultiHeadShape (multi_head_shape.hpp), the one check that they still have that shape, the
// layer's projections, Glorot initialisation and loading from PyTorch's nn.MultiheadAttention
// layout. MultiHeadAttention (multi_head.hpp) is a MultiHeadWeights with position features
// (multi_head_positions.hpp) and the forward pass.

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/projection.hpp"
#include "attention/multi_head_shape.hpp"
#include "attention/projection.hpp"
#include "attention/types.hpp"

namespace attention {

/// The four projections of a multi-head attention layer, in the order of its weights (w_q, w_k,
/// w_v, w_o): MultiHeadWeights::project(MultiHeadProjection::key, memory) projects keys as the
/// layer does, e.g. to project an encoder's output once for many calls.
enum class MultiHeadProjection { query, key, value, output };

/// The weights and biases of a multi-head attention layer of a given MultiHeadShape, applied in the
/// seeds' convention y = x W + b (projection.hpp):
///   Q = query w_q + b_q,  K = key w_k + b_k,  V = value w_v + b_v,  out = heads w_o + b_o
/// w_q, w_o: d_model x d_model; w_k, w_v: d_model x kv_dim (d_model without GQA); b_q, b_o:
/// 1 x d_model; b_k, b_v: 1 x kv_dim. They are public members, to be assigned or trained in place,
/// and start at zero; check() (which every user of the weights calls before any work) makes sure
/// they still have those shapes. The shape itself is fixed at construction.
///
///   attention::MultiHeadWeights<float> weights(attention::MultiHeadShape(512, 8, 2));
///   weights.w_q = ...;                       // or weights.reset_parameters(seed)
///   attention::MultiHeadAttention<float> layer(std::move(weights));
template <typename Scalar>
class MultiHeadWeights {
  static_assert(std::is_floating_point_v<Scalar>,
                "attention::MultiHeadWeights: Scalar must be float, double or long double");

 public:
  /// Zero weights and biases of the given shape.
  explicit MultiHeadWeights(const MultiHeadShape& shape)
      : shape_(shape),
        w_q(Matrix<Scalar>::Zero(shape.d_model(), shape.d_model())),
        w_k(Matrix<Scalar>::Zero(shape.d_model(), shape.kv_dim())),
        w_v(Matrix<Scalar>::Zero(shape.d_model(), shape.kv_dim())),
        w_o(Matrix<Scalar>::Zero(shape.d_model(), shape.d_model())),
        b_q(RowVector<Scalar>::Zero(shape.d_model())),
        b_k(RowVector<Scalar>::Zero(shape.kv_dim())),
        b_v(RowVector<Scalar>::Zero(shape.kv_dim())),
        b_o(RowVector<Scalar>::Zero(shape.d_model())) {}

 private:
  MultiHeadShape shape_;  // declared first: the weights are sized from it

 public:
  Matrix<Scalar> w_q;     ///< d_model x d_model
  Matrix<Scalar> w_k;     ///< d_model x kv_dim()
  Matrix<Scalar> w_v;     ///< d_model x kv_dim()
  Matrix<Scalar> w_o;     ///< d_model x d_model
  RowVector<Scalar> b_q;  ///< 1 x d_model
  RowVector<Scalar> b_k;  ///< 1 x kv_dim()
  RowVector<Scalar> b_v;  ///< 1 x kv_dim()
  RowVector<Scalar> b_o;  ///< 1 x d_model

  /// The sizes these weights were made for.
  [[nodiscard]] const MultiHeadShape& shape() const { return shape_; }
  /// Width of the inputs and of the output.
  [[nodiscard]] Index d_model() const { return shape_.d_model(); }
  /// Query heads.
  [[nodiscard]] Index num_heads() const { return shape_.num_heads(); }
  /// Key/value heads (num_heads() unless made with fewer).
  [[nodiscard]] Index num_kv_heads() const { return shape_.num_kv_heads(); }
  /// Width of one head, d_model() / num_heads().
  [[nodiscard]] Index head_dim() const { return shape_.head_dim(); }
  /// Width of the projected keys and values, num_kv_heads() * head_dim().
  [[nodiscard]] Index kv_dim() const { return shape_.kv_dim(); }
  /// Weights and biases: 2 d_model^2 + 2 d_model kv_dim + 2 d_model + 2 kv_dim (4 d_model^2 +
  /// 4 d_model without GQA).
  [[nodiscard]] std::int64_t parameter_count() const { return shape_.parameter_count(); }

  /// Checks that every weight and bias still has its shape (they are public members, so a caller
  /// may have resized one): w_q and w_o d_model x d_model, w_k and w_v d_model x kv_dim(), b_q and
  /// b_o 1 x d_model, b_k and b_v 1 x kv_dim(); the weights first, then the biases. \throws
  /// ShapeError naming `func`, the parameter and both sizes, e.g. "attention::<func>: w_v.cols()
  /// (= 6) must equal kv_dim (= 8)".
  void check(const char* func) const {
    const auto all = parts(*this);
    for (const auto& part : all) part.check_weight(func);
    for (const auto& part : all) part.check_bias(func);
  }

  /// One of the layer's projections of x (rows x d_model), as the layer computes it: query
  /// x w_q + b_q (rows x d_model), key x w_k + b_k and value x w_v + b_v (rows x kv_dim), output
  /// x w_o + b_o of the heads side by side (rows x d_model). Written into `out`, which may share
  /// memory with x or the weights (it is then computed into a temporary and copied). For float and
  /// double each output row is one fixed chain of fused multiply-adds (kernels/projection.hpp), so
  /// it does not change bitwise with the thread count or with how the rows are split into calls;
  /// long double uses Eigen's product. Column-major inputs are copied once. \throws ShapeError if x
  /// is not d_model wide, `out` has the wrong shape, or the weight or bias used lost its shape.
  template <typename DerivedX>
  void project(MultiHeadProjection which, const Eigen::MatrixBase<DerivedX>& x,
               MatrixRef<Scalar> out) const {
    static_assert(std::is_same_v<typename DerivedX::Scalar, Scalar>,
                  "attention::MultiHeadWeights: inputs must have the weights' scalar type");
    constexpr const char* func = "MultiHeadWeights::project";
    const auto part = parts(*this)[static_cast<std::size_t>(which)];
    part.check_weight(func);
    part.check_bias(func);
    detail::require_equal(func, "x.cols()", x.cols(), "d_model", d_model());
    detail::require_equal(func, "out.rows()", out.rows(), "x.rows()", x.rows());
    detail::require_equal(func, "out.cols()", out.cols(), part.cols_name, part.cols);
    const ConstMatrixRef<Scalar> x_ref(x);  // evaluated once if x is an expression
    if (detail::may_overlap_any(out, x_ref, *part.w, *part.b)) {
      // `out` is (part of) an operand, as in project(query, x, x): through a temporary.
      Matrix<Scalar> y(out.rows(), out.cols());
      project(which, x_ref, y);
      out = y;
      return;
    }
    if constexpr (detail::flash::supported<Scalar>) {
      detail::projection::project<Scalar>(x_ref, *part.w, *part.b, out);
    } else {
      attention::project(x_ref, *part.w, *part.b, out);
    }
  }

  /// The projection above, returned as a new matrix.
  template <typename DerivedX>
  [[nodiscard]] Matrix<Scalar> project(MultiHeadProjection which,
                                       const Eigen::MatrixBase<DerivedX>& x) const {
    Matrix<Scalar> out(x.rows(), parts(*this)[static_cast<std::size_t>(which)].cols);
    project(which, x, out);
    return out;
  }

  /// Random initialisation with a fixed seed: every weight matrix uniform in [-a, a] with its own
  /// a = sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (rows + cols)) (Glorot & Bengio, 2010): sqrt(3 /
  /// d_model) for w_q and w_o, sqrt(6 / (d_model + kv_dim)) for w_k and w_v; biases zero. The
  /// matrices are filled in the order w_q, w_k, w_v, w_o, in storage order. Reproducible across
  /// platforms: uniforms are made from std::mt19937's raw 32-bit output.
  void reset_parameters(std::uint32_t seed) {
    std::mt19937 engine(seed);
    for (const auto& part : parts(*this)) {
      part.w->resize(part.rows, part.cols);
      const double bound = std::sqrt(6.0 / static_cast<double>(part.rows + part.cols));
      for (Index i = 0; i < part.w->size(); ++i) {
        const double unit = (static_cast<double>(engine()) + 0.5) / 4294967296.0;  // (0, 1)
        part.w->data()[i] = static_cast<Scalar>((2.0 * unit - 1.0) * bound);
      }
      *part.b = RowVector<Scalar>::Zero(part.cols);
    }
  }

  /// Weights of a (non-grouped) layer from torch.nn.MultiheadAttention's parameters, which use
  /// y = x W^T + b:
  ///   in_proj_weight (3E x E) = [W_q^T; W_k^T; W_v^T] stacked by rows, in_proj_bias (3E),
  ///   out_proj.weight (E x E) = W_o^T, out_proj.bias (E); E = d_model.
  /// The biases may be row or column vectors. \throws ShapeError on any other size, or unless
  /// num_heads >= 1 divides E.
  template <typename DerivedW, typename DerivedB, typename DerivedOW, typename DerivedOB>
  [[nodiscard]] static MultiHeadWeights from_pytorch(
      const Eigen::MatrixBase<DerivedW>& in_proj_weight,
      const Eigen::MatrixBase<DerivedB>& in_proj_bias,
      const Eigen::MatrixBase<DerivedOW>& out_proj_weight,
      const Eigen::MatrixBase<DerivedOB>& out_proj_bias, Index num_heads,
      const char* func = "MultiHeadWeights::from_pytorch") {
    const Index e = in_proj_weight.cols();
    detail::require_positive(func, "in_proj_weight.cols() (embed_dim)", e);
    detail::require_equal(func, "in_proj_weight.rows()", in_proj_weight.rows(),
                          "3 * in_proj_weight.cols()", 3 * e);
    require_vector(func, "in_proj_bias", in_proj_bias.rows(), in_proj_bias.cols(), "3 * embed_dim",
                   3 * e);
    detail::require_equal(func, "out_proj_weight.rows()", out_proj_weight.rows(), "embed_dim", e);
    detail::require_equal(func, "out_proj_weight.cols()", out_proj_weight.cols(), "embed_dim", e);
    require_vector(func, "out_proj_bias", out_proj_bias.rows(), out_proj_bias.cols(), "embed_dim",
                   e);
    // Checked here too, so that the message speaks of PyTorch's embed_dim.
    detail::require_divides(func, "num_heads", num_heads, "embed_dim", e);
    MultiHeadWeights weights(MultiHeadShape(e, num_heads, num_heads, func));
    weights.w_q = in_proj_weight.topRows(e).transpose();
    weights.w_k = in_proj_weight.middleRows(e, e).transpose();
    weights.w_v = in_proj_weight.bottomRows(e).transpose();
    weights.w_o = out_proj_weight.transpose();
    const auto in_bias = in_proj_bias.reshaped();  // column order = element order for a vector
    weights.b_q = in_bias.segment(0, e).transpose();
    weights.b_k = in_bias.segment(e, e).transpose();
    weights.b_v = in_bias.segment(2 * e, e).transpose();
    weights.b_o = out_proj_bias.reshaped().transpose();
    return weights;
  }

 private:
  /// One projection y = x w + b: its weight (d_model x cols) and bias (1 x cols), by name. W and B
  /// are const for a const layer.
  template <typename W, typename B>
  struct Part {
    const char* w_name;
    W* w;
    const char* b_name;
    B* b;
    Index rows;  // d_model
    const char* cols_name;
    Index cols;

    void check_weight(const char* func) const {
      const std::string name(w_name);
      detail::require_equal(func, (name + ".rows()").c_str(), w->rows(), "d_model", rows);
      detail::require_equal(func, (name + ".cols()").c_str(), w->cols(), cols_name, cols);
    }
    void check_bias(const char* func) const {
      detail::require_equal(func, (std::string(b_name) + ".cols()").c_str(), b->cols(), cols_name,
                            cols);
    }
  };

  /// The four projections of `self`, in the order of MultiHeadProjection.
  template <typename Self>
  static auto parts(Self& self) {
    constexpr bool read_only = std::is_const_v<Self>;
    using W = std::conditional_t<read_only, const Matrix<Scalar>, Matrix<Scalar>>;
    using B = std::conditional_t<read_only, const RowVector<Scalar>, RowVector<Scalar>>;
    const Index d = self.d_model(), kv = self.kv_dim();
    return std::array<Part<W, B>, 4>{{{"w_q", &self.w_q, "b_q", &self.b_q, d, "d_model", d},
                                      {"w_k", &self.w_k, "b_k", &self.b_k, d, "kv_dim", kv},
                                      {"w_v", &self.w_v, "b_v", &self.b_v, d, "kv_dim", kv},
                                      {"w_o", &self.w_o, "b_o", &self.b_o, d, "d_model", d}}};
  }

  static void require_vector(const char* func, const char* name, Index rows, Index cols,
                             const char* length_name, Index length) {
    if (rows != 1 && cols != 1) {
      detail::throw_matrix_shape_error(func, name, rows, cols,
                                       std::string("must be a vector of ") + length_name +
                                           " (= " + std::to_string(length) + ") entries");
    }
    detail::require_equal(func, (std::string(name) + ".size()").c_str(), rows * cols, length_name,
                          length);
  }
};

}  // namespace attention
