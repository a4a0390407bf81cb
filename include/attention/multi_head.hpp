#pragma once
// SPDX-License-Identifier: MIT

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "attention/errors.hpp"
#include "attention/kernels/flash.hpp"
#include "attention/kernels/projection.hpp"
#include "attention/mask.hpp"
#include "attention/projection.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention {

/// The sizes of a multi-head attention layer and the parameter counts that follow from them.
/// Constructing one validates the sizes, so a MultiHeadShape always describes a real layer.
class MultiHeadShape {
 public:
  /// \throws ShapeError unless d_model >= 1, num_heads >= 1 and num_heads divides d_model; the
  /// message names `caller` (MultiHeadAttention passes its own name).
  MultiHeadShape(Index d_model, Index num_heads, const char* caller = "MultiHeadShape")
      : d_model_(d_model), num_heads_(num_heads) {
    detail::require_positive(caller, "d_model", d_model);
    detail::require_divides(caller, "num_heads", num_heads, "d_model", d_model);
  }

  [[nodiscard]] Index d_model() const { return d_model_; }
  [[nodiscard]] Index num_heads() const { return num_heads_; }
  [[nodiscard]] Index head_dim() const { return d_model_ / num_heads_; }

  /// Weights owned by one head: its head_dim columns of W_Q, W_K and W_V and its head_dim rows of
  /// W_O, each d_model long: 4 * d_model * head_dim. (GPT-3: 4 * 12288 * 128 = 6,291,456, the
  /// "6.3 million parameters" of a head.)
  [[nodiscard]] std::int64_t weights_per_head() const {
    return 4 * std::int64_t{d_model_} * head_dim();
  }
  /// All weights of the layer: W_Q, W_K, W_V, W_O, each d_model x d_model.
  [[nodiscard]] std::int64_t weight_count() const { return weights_per_head() * num_heads_; }
  /// All biases of the layer: b_Q, b_K, b_V, b_O, each of length d_model.
  [[nodiscard]] std::int64_t bias_count() const { return 4 * std::int64_t{d_model_}; }
  /// Every trainable number: weight_count() + bias_count().
  [[nodiscard]] std::int64_t parameter_count() const { return weight_count() + bias_count(); }

 private:
  Index d_model_;
  Index num_heads_;
};

/// Multi-head attention (Vaswani et al., 2017, section 3.2.2), in the seeds' convention y = x W + b:
///   Q = query w_q + b_q,   K = key w_k + b_k,   V = value w_v + b_v            (seq x d_model)
///   head_h = softmax(Q_h K_h^T / sqrt(head_dim) + mask) V_h,  with X_h = X.middleCols(h * head_dim,
///            head_dim), the h-th block of head_dim columns
///   out = [head_0 ... head_{H-1}] w_o + b_o
/// Each head has its own slice of W_Q, W_K, W_V (the columns it reads) and of W_O (the rows it
/// writes). The weights are public members and start at zero (call reset_parameters() for a random
/// initialisation, or assign them); every call checks that they still have their shapes.
template <typename Scalar>
class MultiHeadAttention {
  static_assert(std::is_floating_point_v<Scalar>,
                "attention::MultiHeadAttention: Scalar must be float, double or long double");

 public:
  /// \throws ShapeError unless num_heads >= 1 divides d_model >= 1.
  MultiHeadAttention(Index d_model, Index num_heads)
      : shape_(d_model, num_heads, "MultiHeadAttention"),
        w_q(Matrix<Scalar>::Zero(d_model, d_model)),
        w_k(Matrix<Scalar>::Zero(d_model, d_model)),
        w_v(Matrix<Scalar>::Zero(d_model, d_model)),
        w_o(Matrix<Scalar>::Zero(d_model, d_model)),
        b_q(RowVector<Scalar>::Zero(d_model)),
        b_k(RowVector<Scalar>::Zero(d_model)),
        b_v(RowVector<Scalar>::Zero(d_model)),
        b_o(RowVector<Scalar>::Zero(d_model)) {}

 private:
  MultiHeadShape shape_;  // declared first: the weights are sized from it

 public:
  Matrix<Scalar> w_q, w_k, w_v, w_o;     ///< d_model x d_model, applied as x W
  RowVector<Scalar> b_q, b_k, b_v, b_o;  ///< 1 x d_model

  [[nodiscard]] const MultiHeadShape& shape() const { return shape_; }
  [[nodiscard]] Index d_model() const { return shape_.d_model(); }
  [[nodiscard]] Index num_heads() const { return shape_.num_heads(); }
  [[nodiscard]] Index head_dim() const { return shape_.head_dim(); }
  /// Weights and biases: 4 d_model^2 + 4 d_model.
  [[nodiscard]] std::int64_t parameter_count() const { return shape_.parameter_count(); }

  /// Head h's slices of the weights, as read-only views into w_q, w_k, w_v (d_model x head_dim) and
  /// w_o (head_dim x d_model). \throws ShapeError unless 0 <= h < num_heads().
  [[nodiscard]] auto w_q_head(Index h) const { return w_q.middleCols(head_offset(h), head_dim()); }
  [[nodiscard]] auto w_k_head(Index h) const { return w_k.middleCols(head_offset(h), head_dim()); }
  [[nodiscard]] auto w_v_head(Index h) const { return w_v.middleCols(head_offset(h), head_dim()); }
  [[nodiscard]] auto w_o_head(Index h) const { return w_o.middleRows(head_offset(h), head_dim()); }

  /// Self-attention: query, key and value are all x (L x d_model). Returns L x d_model.
  /// \throws ShapeError if x.cols() != d_model, the mask is not L x L, or a weight lost its shape.
  template <typename DerivedX, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedX>& x,
                                       const Mask& mask = {}) const {
    return forward(x, x, x, mask);
  }

  /// Cross-attention: query (L x d_model) attends to key and value (S x d_model each). Returns
  /// L x d_model. \throws ShapeError on a width other than d_model, key and value of different
  /// lengths, a mask that is not L x S, or a weight that lost its shape.
  template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
            std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedQ>& query,
                                       const Eigen::MatrixBase<DerivedK>& key,
                                       const Eigen::MatrixBase<DerivedV>& value,
                                       const Mask& mask = {}) const {
    const Projected p = project_inputs("MultiHeadAttention::forward", query, key, value, mask);
    Matrix<Scalar> heads(query.rows(), d_model());
    if constexpr (detail::flash::supported<Scalar>) {
      // Every head reads its columns of the projected Q, K, V in place (row stride d_model) and
      // writes its columns of `heads`; the kernel runs all heads in one parallel region.
      std::vector<detail::flash::HeadOperands<Scalar>> operands;
      operands.reserve(static_cast<std::size_t>(num_heads()));
      for (Index h = 0; h < num_heads(); ++h) {
        const Index c = head_offset(h);
        operands.push_back({p.q.data() + c, p.q.outerStride(), p.k.data() + c, p.k.outerStride(),
                            p.v.data() + c, p.v.outerStride(), heads.data() + c,
                            heads.outerStride(), nullptr});
      }
      const Scalar scale = detail::resolve_scale<Scalar>("MultiHeadAttention::forward", {}, head_dim());
      detail::flash::CallWorkspace<Scalar> workspace;
      detail::flash::multi_head_attention(operands.data(), num_heads(), query.rows(), key.rows(),
                                          head_dim(), head_dim(), scale, mask, workspace);
    } else {
      for (Index h = 0; h < num_heads(); ++h) {
        const Index c = head_offset(h);
        scaled_dot_product_attention(p.q.middleCols(c, head_dim()), p.k.middleCols(c, head_dim()),
                                     p.v.middleCols(c, head_dim()),
                                     heads.middleCols(c, head_dim()), mask);
      }
    }
    return project_rows(heads, w_o, b_o);
  }

  /// The attention pattern of every head for self-attention over x: num_heads() matrices, L x L.
  template <typename DerivedX, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedX>& x,
                                                         const Mask& mask = {}) const {
    return head_weights(x, x, mask);
  }

  /// The attention pattern of every head for query attending to key: num_heads() matrices, L x S.
  template <typename DerivedQ, typename DerivedK, typename Mask = NoMask,
            std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedQ>& query,
                                                         const Eigen::MatrixBase<DerivedK>& key,
                                                         const Mask& mask = {}) const {
    // Values are not needed for weights; key stands in for value so the checks stay in one place.
    const Projected p = project_inputs("MultiHeadAttention::head_weights", query, key, key, mask);
    std::vector<Matrix<Scalar>> weights;
    weights.reserve(static_cast<std::size_t>(num_heads()));
    for (Index h = 0; h < num_heads(); ++h) {
      const Index c = head_offset(h);
      weights.push_back(
          attention_weights(p.q.middleCols(c, head_dim()), p.k.middleCols(c, head_dim()), mask));
    }
    return weights;
  }

  /// Random initialisation with a fixed seed: every weight uniform in [-a, a] with
  /// a = sqrt(6 / (fan_in + fan_out)) = sqrt(3 / d_model) (Glorot & Bengio, 2010), biases zero.
  /// Reproducible across platforms: uniforms are made from std::mt19937's raw 32-bit output.
  void reset_parameters(std::uint32_t seed) {
    std::mt19937 engine(seed);
    const double bound = std::sqrt(6.0 / static_cast<double>(2 * d_model()));
    for (Matrix<Scalar>* w : {&w_q, &w_k, &w_v, &w_o}) {
      w->resize(d_model(), d_model());
      for (Index i = 0; i < w->size(); ++i) {
        const double unit = (static_cast<double>(engine()) + 0.5) / 4294967296.0;  // (0, 1)
        w->data()[i] = static_cast<Scalar>((2.0 * unit - 1.0) * bound);
      }
    }
    for (RowVector<Scalar>* b : {&b_q, &b_k, &b_v, &b_o}) *b = RowVector<Scalar>::Zero(d_model());
  }

  /// Builds a layer from torch.nn.MultiheadAttention's parameters, which use y = x W^T + b:
  ///   in_proj_weight (3E x E) = [W_q^T; W_k^T; W_v^T] stacked by rows, in_proj_bias (3E),
  ///   out_proj.weight (E x E) = W_o^T, out_proj.bias (E); E = d_model.
  /// The biases may be row or column vectors. \throws ShapeError on any other size.
  template <typename DerivedW, typename DerivedB, typename DerivedOW, typename DerivedOB>
  [[nodiscard]] static MultiHeadAttention from_pytorch(
      const Eigen::MatrixBase<DerivedW>& in_proj_weight,
      const Eigen::MatrixBase<DerivedB>& in_proj_bias,
      const Eigen::MatrixBase<DerivedOW>& out_proj_weight,
      const Eigen::MatrixBase<DerivedOB>& out_proj_bias, Index num_heads) {
    constexpr const char* func = "MultiHeadAttention::from_pytorch";
    const Index e = in_proj_weight.cols();
    detail::require_positive(func, "in_proj_weight.cols() (embed_dim)", e);
    detail::require_equal(func, "in_proj_weight.rows()", in_proj_weight.rows(),
                          "3 * in_proj_weight.cols()", 3 * e);
    require_vector(func, "in_proj_bias", in_proj_bias.rows(), in_proj_bias.cols(),
                   "3 * embed_dim", 3 * e);
    detail::require_equal(func, "out_proj_weight.rows()", out_proj_weight.rows(), "embed_dim", e);
    detail::require_equal(func, "out_proj_weight.cols()", out_proj_weight.cols(), "embed_dim", e);
    require_vector(func, "out_proj_bias", out_proj_bias.rows(), out_proj_bias.cols(), "embed_dim",
                   e);

    MultiHeadAttention layer(e, num_heads);
    layer.w_q = in_proj_weight.topRows(e).transpose();
    layer.w_k = in_proj_weight.middleRows(e, e).transpose();
    layer.w_v = in_proj_weight.bottomRows(e).transpose();
    layer.w_o = out_proj_weight.transpose();
    const auto in_bias = in_proj_bias.reshaped();  // column order = element order for a vector
    layer.b_q = in_bias.segment(0, e).transpose();
    layer.b_k = in_bias.segment(e, e).transpose();
    layer.b_v = in_bias.segment(2 * e, e).transpose();
    layer.b_o = out_proj_bias.reshaped().transpose();
    return layer;
  }

 private:
  struct Projected {
    Matrix<Scalar> q, k, v;
  };

  Index head_offset(Index h) const {
    if (h < 0 || h >= num_heads()) {
      detail::throw_shape_error("MultiHeadAttention::head", "head index", h,
                                "must be at least 0 and less than", "num_heads()", num_heads());
    }
    return h * head_dim();
  }

  static void require_vector(const char* func, const char* name, Index rows, Index cols,
                             const char* length_name, Index length) {
    if (rows != 1 && cols != 1) {
      detail::throw_shape_error(func, (std::string(name) + ".rows()").c_str(), rows,
                                "or .cols() must be 1, and the other", length_name, length);
    }
    detail::require_equal(func, (std::string(name) + ".size()").c_str(), rows * cols, length_name,
                          length);
  }

  /// Every public weight must still be d_model x d_model and every bias 1 x d_model: they are public
  /// members, so a caller may have resized one.
  void check_parameters(const char* func) const {
    const Index d = d_model();
    const std::pair<const char*, const Matrix<Scalar>*> weights[] = {
        {"w_q", &w_q}, {"w_k", &w_k}, {"w_v", &w_v}, {"w_o", &w_o}};
    for (const auto& [name, w] : weights) {
      detail::require_equal(func, (std::string(name) + ".rows()").c_str(), w->rows(), "d_model", d);
      detail::require_equal(func, (std::string(name) + ".cols()").c_str(), w->cols(), "d_model", d);
    }
    const std::pair<const char*, const RowVector<Scalar>*> biases[] = {
        {"b_q", &b_q}, {"b_k", &b_k}, {"b_v", &b_v}, {"b_o", &b_o}};
    for (const auto& [name, b] : biases) {
      detail::require_equal(func, (std::string(name) + ".cols()").c_str(), b->cols(), "d_model", d);
    }
  }

  template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
  Projected project_inputs(const char* func, const Eigen::MatrixBase<DerivedQ>& query,
                           const Eigen::MatrixBase<DerivedK>& key,
                           const Eigen::MatrixBase<DerivedV>& value, const Mask& mask) const {
    static_assert(std::is_same_v<typename DerivedQ::Scalar, Scalar> &&
                      std::is_same_v<typename DerivedK::Scalar, Scalar> &&
                      std::is_same_v<typename DerivedV::Scalar, Scalar>,
                  "attention::MultiHeadAttention: inputs must have the layer's scalar type");
    check_parameters(func);
    detail::require_positive(func, "query.rows() (number of queries)", query.rows());
    detail::require_positive(func, "key.rows() (number of keys)", key.rows());
    detail::require_equal(func, "query.cols()", query.cols(), "d_model", d_model());
    detail::require_equal(func, "key.cols()", key.cols(), "d_model", d_model());
    detail::require_equal(func, "value.cols()", value.cols(), "d_model", d_model());
    detail::require_equal(func, "value.rows()", value.rows(), "key.rows()", key.rows());
    mask.check(func, query.rows(), key.rows());
    return Projected{project_rows(query, w_q, b_q), project_rows(key, w_k, b_k),
                     project_rows(value, w_v, b_v)};
  }

  /// x w + b. For float and double each output row is computed on its own, in a fixed order
  /// (kernels/projection.hpp), so a layer's output does not change bitwise with the thread count
  /// or with how a batch of tokens is split into calls; long double uses Eigen's product.
  template <typename DerivedX>
  static Matrix<Scalar> project_rows(const Eigen::MatrixBase<DerivedX>& x, const Matrix<Scalar>& w,
                                     const RowVector<Scalar>& b) {
    if constexpr (detail::flash::supported<Scalar>) {
      Matrix<Scalar> y(x.rows(), w.cols());
      detail::projection::project<Scalar>(x, w, b, y);
      return y;
    } else {
      return project(x, w, b);
    }
  }
};

}  // namespace attention
