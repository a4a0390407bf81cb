#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/alibi.hpp"
#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/flash.hpp"
#include "attention/kernels/projection.hpp"
#include "attention/kv_cache.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/projection.hpp"
#include "attention/rope.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

namespace attention {

/// The sizes of a multi-head attention layer and the parameter counts that follow from them.
/// Constructing one validates the sizes, so a MultiHeadShape always describes a real layer.
///
/// Grouped-query attention (GQA, Ainslie et al., 2023): num_kv_heads <= num_heads key/value heads,
/// each shared by num_heads / num_kv_heads consecutive query heads; num_kv_heads = 1 is multi-query
/// attention (MQA, Shazeer, 2019) and num_kv_heads = num_heads ordinary multi-head attention. W_Q
/// and W_O stay d_model x d_model; W_K and W_V are d_model x kv_dim(), kv_dim() = num_kv_heads *
/// head_dim.
class MultiHeadShape {
 public:
  /// Multi-head attention: num_kv_heads = num_heads.
  /// \throws ShapeError unless d_model >= 1, num_heads >= 1 and num_heads divides d_model; the
  /// message names `caller` (MultiHeadAttention passes its own name).
  MultiHeadShape(Index d_model, Index num_heads, const char* caller = "MultiHeadShape")
      : MultiHeadShape(d_model, num_heads, num_heads, caller) {}

  /// Grouped-query attention. \throws ShapeError as above, or unless num_kv_heads >= 1 divides
  /// num_heads (the message names both).
  template <typename Int, std::enable_if_t<std::is_integral_v<Int>, int> = 0>
  MultiHeadShape(Index d_model, Index num_heads, Int num_kv_heads)
      : MultiHeadShape(d_model, num_heads, static_cast<Index>(num_kv_heads), "MultiHeadShape") {}

  /// As above, with `caller` named in the messages.
  MultiHeadShape(Index d_model, Index num_heads, Index num_kv_heads, const char* caller)
      : d_model_(d_model), num_heads_(num_heads), num_kv_heads_(num_kv_heads) {
    detail::require_positive(caller, "d_model", d_model);
    detail::require_divides(caller, "num_heads", num_heads, "d_model", d_model);
    detail::require_divides(caller, "num_kv_heads", num_kv_heads, "num_heads", num_heads);
  }

  [[nodiscard]] Index d_model() const { return d_model_; }
  [[nodiscard]] Index num_heads() const { return num_heads_; }
  /// Key/value heads: num_heads() unless the layer was made with fewer (grouped-query attention).
  [[nodiscard]] Index num_kv_heads() const { return num_kv_heads_; }
  [[nodiscard]] Index head_dim() const { return d_model_ / num_heads_; }
  /// Query heads per key/value head: num_heads() / num_kv_heads().
  [[nodiscard]] Index group_size() const { return num_heads_ / num_kv_heads_; }
  /// Width of the projected keys and values: num_kv_heads() * head_dim() (d_model without GQA).
  [[nodiscard]] Index kv_dim() const { return num_kv_heads_ * head_dim(); }

  /// Weights per query head: weight_count() / num_heads(). Without GQA a head owns its head_dim
  /// columns of W_Q, W_K and W_V and its head_dim rows of W_O, each d_model long: 4 * d_model *
  /// head_dim (GPT-3: 4 * 12288 * 128 = 6,291,456, the "6.3 million parameters" of a head). With
  /// GQA it owns its slices of W_Q and W_O and a 1 / group_size() share of its K/V head's slices.
  [[nodiscard]] std::int64_t weights_per_head() const { return weight_count() / num_heads_; }
  /// All weights of the layer: W_Q and W_O (d_model x d_model) and W_K and W_V (d_model x kv_dim).
  [[nodiscard]] std::int64_t weight_count() const {
    return 2 * std::int64_t{d_model_} * d_model_ + 2 * std::int64_t{d_model_} * kv_dim();
  }
  /// All biases of the layer: b_Q and b_O of length d_model, b_K and b_V of length kv_dim.
  [[nodiscard]] std::int64_t bias_count() const {
    return 2 * std::int64_t{d_model_} + 2 * std::int64_t{kv_dim()};
  }
  /// Every trainable number: weight_count() + bias_count().
  [[nodiscard]] std::int64_t parameter_count() const { return weight_count() + bias_count(); }

 private:
  Index d_model_;
  Index num_heads_;
  Index num_kv_heads_;
};

/// Multi-head attention (Vaswani et al., 2017, section 3.2.2), in the seeds' convention y = x W +
/// b:
///   Q = query w_q + b_q   (L x d_model),   K = key w_k + b_k,   V = value w_v + b_v   (S x kv_dim)
///   head_h = softmax(Q_h K_g^T / sqrt(head_dim) + mask) V_g,   g = h / (num_heads / num_kv_heads)
///   out = [head_0 ... head_{H-1}] w_o + b_o
/// with X_h = X.middleCols(h * head_dim, head_dim), the h-th block of head_dim columns. Each query
/// head has its own slice of W_Q (the columns it reads) and of W_O (the rows it writes).
///
/// Grouped-query attention (Ainslie et al., 2023, GQA; num_kv_heads = 1 is Shazeer's 2019
/// multi-query attention): with num_kv_heads < num_heads, W_K and W_V have kv_dim = num_kv_heads *
/// head_dim columns, and query head h reads key/value head g = h / (num_heads / num_kv_heads), i.e.
/// consecutive query heads share a K/V head (the order of PyTorch's repeat_interleave and of
/// scaled_dot_product_attention(..., enable_gqa=True)). The heads of a group read the same columns
/// of K and V in place; nothing is copied per query head. Without num_kv_heads the layer is plain
/// multi-head attention (num_kv_heads = num_heads, kv_dim = d_model).
///
/// The weights are public members and start at zero (call reset_parameters() for a random
/// initialisation, or assign them); every call checks that they still have their shapes.
///
/// Position features, also public members, all off by default and applied by every call (forward,
/// head_weights, forward through a KVCache and multi_head_attention_backward):
///   rope           rotary embeddings (rope.hpp): each head of Q and of K is rotated after the
///                  projection, Q_h <- R(p) Q_h, K_g <- R(p) K_g, row by row at its position p
///   alibi_slopes   ALiBi (alibi.hpp): query head h adds attention::alibi(alibi_slopes[h]), i.e.
///                  -m_h * (position distance), to its scores, on top of the call's mask
///   softcap        logit soft-capping (Options::softcap): s <- softcap * tanh(s / softcap) before
///                  the mask and the ALiBi bias
/// Positions are lower-right aligned, as attention::causal_lower_right and attention::alibi: of L
/// queries and S keys, key row j is at position j and query row i at i + (S - L) (the queries are
/// the last L of S positions; in self-attention row r is at r). Through a KVCache they are
/// absolute: new token r is at cache.tokens_seen() + r, counted before the append, and its key is
/// rotated before it is stored, so a cached key keeps its position when older tokens are dropped.
///
///   MultiHeadAttention<float> layer(512, 8, 2);
///   layer.rope = attention::Rope(layer.head_dim(), attention::RopeLayout::half_split);   // Llama
///   layer.alibi_slopes = attention::alibi_slopes(layer.num_heads());                    // BLOOM
///   layer.softcap = 50.0;                                                               // Gemma 2
template <typename Scalar>
class MultiHeadAttention {
  static_assert(std::is_floating_point_v<Scalar>,
                "attention::MultiHeadAttention: Scalar must be float, double or long double");

 public:
  /// Multi-head attention, num_kv_heads = num_heads. \throws ShapeError unless num_heads >= 1
  /// divides d_model >= 1.
  MultiHeadAttention(Index d_model, Index num_heads)
      : MultiHeadAttention(d_model, num_heads, num_heads) {}

  /// Grouped-query attention with num_kv_heads key/value heads (1: multi-query attention).
  /// \throws ShapeError unless num_heads >= 1 divides d_model >= 1 and num_kv_heads >= 1 divides
  /// num_heads.
  MultiHeadAttention(Index d_model, Index num_heads, Index num_kv_heads)
      : shape_(d_model, num_heads, num_kv_heads, "MultiHeadAttention"),
        w_q(Matrix<Scalar>::Zero(d_model, d_model)),
        w_k(Matrix<Scalar>::Zero(d_model, shape_.kv_dim())),
        w_v(Matrix<Scalar>::Zero(d_model, shape_.kv_dim())),
        w_o(Matrix<Scalar>::Zero(d_model, d_model)),
        b_q(RowVector<Scalar>::Zero(d_model)),
        b_k(RowVector<Scalar>::Zero(shape_.kv_dim())),
        b_v(RowVector<Scalar>::Zero(shape_.kv_dim())),
        b_o(RowVector<Scalar>::Zero(d_model)) {}

 private:
  MultiHeadShape shape_;  // declared first: the weights are sized from it

 public:
  // Applied as x W + b. w_q, w_o: d_model x d_model; w_k, w_v: d_model x kv_dim() (d_model x
  // d_model without GQA). b_q, b_o: 1 x d_model; b_k, b_v: 1 x kv_dim().
  Matrix<Scalar> w_q;     ///< d_model x d_model
  Matrix<Scalar> w_k;     ///< d_model x kv_dim()
  Matrix<Scalar> w_v;     ///< d_model x kv_dim()
  Matrix<Scalar> w_o;     ///< d_model x d_model
  RowVector<Scalar> b_q;  ///< 1 x d_model
  RowVector<Scalar> b_k;  ///< 1 x kv_dim()
  RowVector<Scalar> b_v;  ///< 1 x kv_dim()
  RowVector<Scalar> b_o;  ///< 1 x d_model

  /// Rotary position embeddings of Q and K, if set (see the class comment for the positions).
  /// rope->head_dim() must equal head_dim(); the layout, base and rotary_dim are the model's.
  std::optional<Rope> rope;
  /// ALiBi slopes, one per query head (attention::alibi_slopes(num_heads()) for the standard
  /// ones), or empty for no ALiBi. Query head h adds -alibi_slopes[h] * ((i + S - L) - j) to
  /// score (i, j), combined with the call's mask by `&` (pass a causal mask, as ALiBi models do:
  /// alone, ALiBi hides nothing and favours later keys).
  std::vector<double> alibi_slopes;
  /// Logit soft-capping, as Options::softcap (Gemma 2): unset for none, else positive and finite.
  std::optional<double> softcap;

  [[nodiscard]] const MultiHeadShape& shape() const { return shape_; }
  [[nodiscard]] Index d_model() const { return shape_.d_model(); }
  [[nodiscard]] Index num_heads() const { return shape_.num_heads(); }
  /// Key/value heads (num_heads() unless made with fewer).
  [[nodiscard]] Index num_kv_heads() const { return shape_.num_kv_heads(); }
  [[nodiscard]] Index head_dim() const { return shape_.head_dim(); }
  /// Width of the projected keys and values, num_kv_heads() * head_dim().
  [[nodiscard]] Index kv_dim() const { return shape_.kv_dim(); }
  /// The key/value head that query head h reads: h / (num_heads() / num_kv_heads()).
  /// \throws ShapeError unless 0 <= h < num_heads().
  [[nodiscard]] Index kv_head_of(Index h) const {
    return head_offset(h) / head_dim() / shape_.group_size();
  }
  /// Weights and biases: 2 d_model^2 + 2 d_model kv_dim + 2 d_model + 2 kv_dim (4 d_model^2 +
  /// 4 d_model without GQA).
  [[nodiscard]] std::int64_t parameter_count() const { return shape_.parameter_count(); }

  /// Slices of the weights, as read-only views: query head h's columns of w_q (d_model x head_dim)
  /// and rows of w_o (head_dim x d_model); key/value head g's columns of w_k and w_v (d_model x
  /// head_dim). w_k_head and w_v_head take a key/value head index, 0 <= g < num_kv_heads() (query
  /// head h reads g = kv_head_of(h)); without GQA the two numberings coincide.
  /// \throws ShapeError on an index out of range.
  [[nodiscard]] auto w_q_head(Index h) const { return w_q.middleCols(head_offset(h), head_dim()); }
  [[nodiscard]] auto w_k_head(Index g) const { return w_k.middleCols(kv_offset(g), head_dim()); }
  [[nodiscard]] auto w_v_head(Index g) const { return w_v.middleCols(kv_offset(g), head_dim()); }
  [[nodiscard]] auto w_o_head(Index h) const { return w_o.middleRows(head_offset(h), head_dim()); }

  /// Self-attention: query, key and value are all x (L x d_model). Returns L x d_model.
  /// \throws ShapeError if x.cols() != d_model, the mask is not L x L, or a weight lost its shape.
  template <typename DerivedX, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedX>& x,
                                       const Mask& mask = {}) const {
    return forward(x, x, x, mask);
  }

  /// Cross-attention: query (L x d_model) attends to key and value (S x d_model each). Returns
  /// L x d_model. With rope set, query row i is at position i + (S - L) and key row j at j (see the
  /// class comment). \throws ShapeError on a width other than d_model, key and value of different
  /// lengths, a mask that is not L x S, or a weight or position feature that does not fit
  /// (check_parameters); std::invalid_argument for a bad softcap or ALiBi slope.
  template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
            std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedQ>& query,
                                       const Eigen::MatrixBase<DerivedK>& key,
                                       const Eigen::MatrixBase<DerivedV>& value,
                                       const Mask& mask = {}) const {
    const Projected p = project_inputs("MultiHeadAttention::forward", query, key, value, mask);
    // The heads' outputs, like the projections, live in this thread's scratch (scratch.hpp).
    Eigen::Map<Matrix<Scalar>> heads = detail::thread_scratch<Scalar>().matrix(
        detail::ScratchSlot::head_outputs, query.rows(), d_model());
    attend(p.q, p.k, p.v, heads, mask);
    return project_rows(heads, w_o, b_o);
  }

  /// Incremental decoding: projects the new tokens x_new (L x d_model), appends their keys and
  /// values to `cache` (a KVCache of width kv_dim(), one per layer), and lets the new tokens
  /// attend over everything in the cache, S = cache.size() after the append: the new queries are
  /// the last L of S positions. Returns L x d_model. The mask is L x S; the default,
  /// attention::causal_lower_right, lets new token r see the cached tokens and the new tokens up
  /// to itself, so feeding a sequence in pieces (one token at a time, or chunks) gives the rows of
  /// one causal forward() over the whole sequence, to rounding. For a sliding window, drop the
  /// oldest tokens (cache.drop_oldest) and pass attention::window(w, 0); lower-right alignment
  /// keeps it right as the cache slides.
  /// With rope set, new token r is rotated to its absolute position cache.tokens_seen() + r
  /// (counted before the append), its query here and its key before it is stored, so the cached
  /// keys are already rotated and keep their positions when the oldest are dropped. ALiBi's bias
  /// depends only on the distance (i + S - L) - j, which lower-right alignment makes the distance
  /// between the tokens' absolute positions. x_new may be rows of the cache itself (it is then
  /// copied before the cache grows).
  /// \throws ShapeError if x_new is empty or not d_model wide, cache.width() != kv_dim(), the
  /// mask is not L x S, or a weight or position feature does not fit (check_parameters);
  /// std::invalid_argument for a bad softcap or ALiBi slope; std::length_error if
  /// cache.size() + L > cache.max_length(). The cache is unchanged when anything throws.
  template <typename DerivedX, typename Mask = CausalLowerRightMask,
            std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedX>& x_new,
                                       KVCache<Scalar>& cache, const Mask& mask = {}) const {
    static_assert(std::is_same_v<typename DerivedX::Scalar, Scalar>,
                  "attention::MultiHeadAttention: inputs must have the layer's scalar type");
    constexpr const char* func = "MultiHeadAttention::forward (cache)";
    check_parameters(func);
    detail::require_positive(func, "x_new.rows() (number of new tokens)", x_new.rows());
    detail::require_equal(func, "x_new.cols()", x_new.cols(), "d_model", d_model());
    detail::require_equal(func, "cache.width()", cache.width(), "kv_dim", kv_dim());
    const Index num_new = x_new.rows();
    mask.check(func, num_new, cache.size() + num_new);
    const ConstMatrixRef<Scalar> x_bound(x_new);  // evaluated once if x_new is an expression
    // x_new may be rows of the cache itself (kv_dim = d_model), which extend() may move or free.
    Matrix<Scalar> x_copy;
    const bool x_in_cache =
        detail::may_overlap(cache.keys(), x_bound) || detail::may_overlap(cache.values(), x_bound);
    if (x_in_cache) x_copy = x_bound;
    const ConstMatrixRef<Scalar> x = x_in_cache ? ConstMatrixRef<Scalar>(x_copy) : x_bound;
    const Index position = cache.tokens_seen();  // absolute position of the first new token
    detail::ScratchArena<Scalar>& scratch = detail::thread_scratch<Scalar>();
    Eigen::Map<Matrix<Scalar>> q =
        scratch.matrix(detail::ScratchSlot::projected_query, num_new, d_model());
    project_rows_into(x, w_q, b_q, q);
    // Checked before the cache changes, in this function's name (extend() would check too); the
    // keys and values are then projected straight into the new rows.
    detail::require_cache_room(func, "cache.", cache.size(), "x_new.rows()", num_new,
                               cache.max_length());
    typename KVCache<Scalar>::NewRows added = cache.extend(num_new);
    project_rows_into(x, w_k, b_k, added.keys);
    project_rows_into(x, w_v, b_v, added.values);
    if (rope) {
      // RoPE at absolute positions, keys before they join the cache (check_parameters checked the
      // width, so this cannot throw now that the cache has grown).
      rope->apply_each_head(q, position);
      rope->apply_each_head(added.keys, position);
    }
    Eigen::Map<Matrix<Scalar>> heads =
        scratch.matrix(detail::ScratchSlot::head_outputs, num_new, d_model());
    attend(q, cache.keys(), cache.values(), heads, mask);
    return project_rows(heads, w_o, b_o);
  }

  /// The attention pattern of every head for self-attention over x: num_heads() matrices, L x L.
  template <typename DerivedX, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedX>& x,
                                                         const Mask& mask = {}) const {
    return head_weights(x, x, mask);
  }

  /// The attention pattern of every query head for query attending to key: num_heads() matrices,
  /// L x S (the heads of a GQA group see the same keys through their own queries), with the
  /// layer's position features (RoPE, ALiBi, soft-cap) as in forward().
  template <typename DerivedQ, typename DerivedK, typename Mask = NoMask,
            std::enable_if_t<is_mask_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedQ>& query,
                                                         const Eigen::MatrixBase<DerivedK>& key,
                                                         const Mask& mask = {}) const {
    // Values are not needed for weights; key stands in for value so the checks stay in one place.
    const Projected p = project_inputs("MultiHeadAttention::head_weights", query, key, key, mask);
    std::vector<Matrix<Scalar>> weights;
    weights.reserve(static_cast<std::size_t>(num_heads()));
    const Options options{std::nullopt, softcap};
    for (Index h = 0; h < num_heads(); ++h) {
      const Index c = head_offset(h);
      const auto weights_of = [&](const auto& head_mask) {
        weights.push_back(attention_weights(p.q.middleCols(c, head_dim()),
                                            p.k.middleCols(kv_offset(kv_head_of(h)), head_dim()),
                                            head_mask, options));
      };
      with_head_mask(h, mask, weights_of);
    }
    return weights;
  }

  /// Random initialisation with a fixed seed: every weight matrix uniform in [-a, a] with its own
  /// a = sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (rows + cols)) (Glorot & Bengio, 2010): sqrt(3 /
  /// d_model) for w_q and w_o, sqrt(6 / (d_model + kv_dim)) for w_k and w_v; biases zero. The
  /// matrices are filled in the order w_q, w_k, w_v, w_o, in storage order. Reproducible across
  /// platforms: uniforms are made from std::mt19937's raw 32-bit output.
  void reset_parameters(std::uint32_t seed) {
    std::mt19937 engine(seed);
    const std::pair<Matrix<Scalar>*, Index> weights[] = {
        {&w_q, d_model()}, {&w_k, kv_dim()}, {&w_v, kv_dim()}, {&w_o, d_model()}};
    for (const auto& [w, cols] : weights) {
      w->resize(d_model(), cols);
      const double bound = std::sqrt(6.0 / static_cast<double>(d_model() + cols));
      for (Index i = 0; i < w->size(); ++i) {
        const double unit = (static_cast<double>(engine()) + 0.5) / 4294967296.0;  // (0, 1)
        w->data()[i] = static_cast<Scalar>((2.0 * unit - 1.0) * bound);
      }
    }
    b_q = RowVector<Scalar>::Zero(d_model());
    b_k = RowVector<Scalar>::Zero(kv_dim());
    b_v = RowVector<Scalar>::Zero(kv_dim());
    b_o = RowVector<Scalar>::Zero(d_model());
  }

  /// Builds a (non-grouped) layer from torch.nn.MultiheadAttention's parameters, which use
  /// y = x W^T + b:
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
    require_vector(func, "in_proj_bias", in_proj_bias.rows(), in_proj_bias.cols(), "3 * embed_dim",
                   3 * e);
    detail::require_equal(func, "out_proj_weight.rows()", out_proj_weight.rows(), "embed_dim", e);
    detail::require_equal(func, "out_proj_weight.cols()", out_proj_weight.cols(), "embed_dim", e);
    require_vector(func, "out_proj_bias", out_proj_bias.rows(), out_proj_bias.cols(), "embed_dim",
                   e);
    // Checked here too, so that the message names from_pytorch rather than the constructor.
    detail::require_divides(func, "num_heads", num_heads, "embed_dim", e);

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

  /// Checks that every public weight and bias still has its shape (they are public members, so a
  /// caller may have resized one): w_q and w_o d_model x d_model, w_k and w_v d_model x kv_dim(),
  /// b_q and b_o 1 x d_model, b_k and b_v 1 x kv_dim(); and that the position features fit:
  /// rope->head_dim() == head_dim(), alibi_slopes empty or num_heads() finite slopes, softcap
  /// unset or positive and finite in Scalar. Every call of the layer (and
  /// multi_head_attention_backward) makes this check before any work. \throws ShapeError naming
  /// `func`, the parameter and both sizes; std::invalid_argument for a bad slope or softcap.
  void check_parameters(const char* func) const {
    const Index d = d_model(), kv = kv_dim();
    const std::tuple<const char*, const Matrix<Scalar>*, const char*, Index> weights[] = {
        {"w_q", &w_q, "d_model", d},
        {"w_k", &w_k, "kv_dim", kv},
        {"w_v", &w_v, "kv_dim", kv},
        {"w_o", &w_o, "d_model", d}};
    for (const auto& [name, w, cols_name, cols] : weights) {
      detail::require_equal(func, (std::string(name) + ".rows()").c_str(), w->rows(), "d_model", d);
      detail::require_equal(func, (std::string(name) + ".cols()").c_str(), w->cols(), cols_name,
                            cols);
    }
    const std::tuple<const char*, const RowVector<Scalar>*, const char*, Index> biases[] = {
        {"b_q", &b_q, "d_model", d},
        {"b_k", &b_k, "kv_dim", kv},
        {"b_v", &b_v, "kv_dim", kv},
        {"b_o", &b_o, "d_model", d}};
    for (const auto& [name, b, cols_name, cols] : biases) {
      detail::require_equal(func, (std::string(name) + ".cols()").c_str(), b->cols(), cols_name,
                            cols);
    }
    if (rope) {
      detail::require_equal(func, "rope->head_dim()", rope->head_dim(), "head_dim", head_dim());
    }
    if (!alibi_slopes.empty()) {
      detail::require_equal(func, "alibi_slopes.size()", static_cast<Index>(alibi_slopes.size()),
                            "num_heads", num_heads());
      for (std::size_t h = 0; h < alibi_slopes.size(); ++h) {
        if (!std::isfinite(alibi_slopes[h])) {
          std::ostringstream what;
          what << "alibi_slopes[" << h << "] (= " << alibi_slopes[h] << ") must be finite";
          detail::throw_invalid_value(func, what.str());
        }
      }
    }
    (void)resolved_softcap(func);
  }

  /// softcap rounded to Scalar, or 0 when unset. \throws std::invalid_argument naming `func` unless
  /// it is positive and finite in Scalar (at least its smallest normal number, so that 1 / softcap
  /// is finite).
  [[nodiscard]] Scalar resolved_softcap(const char* func) const {
    if (!softcap) return Scalar(0);
    const double cap = *softcap;
    if (!(cap > 0.0) || !std::isfinite(static_cast<Scalar>(cap)) ||
        !(static_cast<Scalar>(cap) >= std::numeric_limits<Scalar>::min())) {
      std::ostringstream what;
      what << "softcap (= " << cap << ") must be positive and finite in the scalar type";
      detail::throw_invalid_value(func, what.str());
    }
    return static_cast<Scalar>(cap);
  }

 private:
  /// The projected inputs, in the calling thread's scratch (scratch.hpp): valid until its next
  /// call into the layer.
  struct Projected {
    Eigen::Map<Matrix<Scalar>> q, k, v;
  };

  Index head_offset(Index h) const {
    if (h < 0 || h >= num_heads()) {
      detail::throw_shape_error("MultiHeadAttention::head", "head index", h,
                                "must be at least 0 and less than", "num_heads()", num_heads());
    }
    return h * head_dim();
  }

  Index kv_offset(Index g) const {
    if (g < 0 || g >= num_kv_heads()) {
      detail::throw_shape_error("MultiHeadAttention::head", "key/value head index", g,
                                "must be at least 0 and less than", "num_kv_heads()",
                                num_kv_heads());
    }
    return g * head_dim();
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

  /// Calls f(mask) for query head h, or f(mask & alibi(alibi_slopes[h])) with ALiBi.
  template <typename Mask, typename F>
  void with_head_mask(Index h, const Mask& mask, F& f) const {
    if (alibi_slopes.empty()) {
      f(mask);
    } else {
      f(mask & attention::alibi(alibi_slopes[static_cast<std::size_t>(h)]));
    }
  }

  /// heads (L x d_model) = every query head's attention over the projected q (L x d_model, row
  /// stride may exceed it), k and v (S x kv_dim each), query head h reading K/V head kv_head_of(h).
  template <typename Mask>
  void attend(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k, ConstMatrixRef<Scalar> v,
              MatrixRef<Scalar> heads, const Mask& mask) const {
    const Scalar cap = resolved_softcap("MultiHeadAttention::forward");
    if constexpr (detail::flash::supported<Scalar>) {
      // Every head reads its columns of the projected Q, K, V in place and writes its columns of
      // `heads`; the heads of a GQA group point at the same K/V columns, which the kernel packs
      // once per K/V head. The kernel runs all heads in one parallel region.
      std::vector<detail::flash::HeadOperands<Scalar>> operands;
      operands.reserve(static_cast<std::size_t>(num_heads()));
      for (Index h = 0; h < num_heads(); ++h) {
        const Index c = head_offset(h), g = kv_offset(kv_head_of(h));
        operands.push_back({q.data() + c, q.outerStride(), k.data() + g, k.outerStride(),
                            v.data() + g, v.outerStride(), heads.data() + c, heads.outerStride(),
                            nullptr});
      }
      const Scalar scale =
          detail::resolve_scale<Scalar>("MultiHeadAttention::forward", {}, head_dim());
      auto& workspace = detail::thread_scratch_object<detail::flash::CallWorkspace<Scalar>>();
      if (alibi_slopes.empty()) {
        detail::flash::multi_head_attention(operands.data(), num_heads(), q.rows(), k.rows(),
                                            head_dim(), head_dim(), scale, mask, workspace,
                                            shape_.group_size(), cap);
      } else {
        // ALiBi gives every query head its own bias, and the kernel applies one mask to all the
        // heads of a call: one call per query head (the heads of a GQA group then read their
        // shared K/V once each, not once per group).
        for (Index h = 0; h < num_heads(); ++h) {
          const auto run = [&](const auto& head_mask) {
            detail::flash::multi_head_attention(operands.data() + h, 1, q.rows(), k.rows(),
                                                head_dim(), head_dim(), scale, head_mask, workspace,
                                                1, cap);
          };
          with_head_mask(h, mask, run);
        }
      }
    } else {
      const Options options{std::nullopt, softcap};
      for (Index h = 0; h < num_heads(); ++h) {
        const Index c = head_offset(h), g = kv_offset(kv_head_of(h));
        const auto run = [&](const auto& head_mask) {
          scaled_dot_product_attention(q.middleCols(c, head_dim()), k.middleCols(g, head_dim()),
                                       v.middleCols(g, head_dim()), heads.middleCols(c, head_dim()),
                                       head_mask, options);
        };
        with_head_mask(h, mask, run);
      }
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
    detail::ScratchArena<Scalar>& scratch = detail::thread_scratch<Scalar>();
    Projected p{scratch.matrix(detail::ScratchSlot::projected_query, query.rows(), d_model()),
                scratch.matrix(detail::ScratchSlot::projected_key, key.rows(), kv_dim()),
                scratch.matrix(detail::ScratchSlot::projected_value, value.rows(), kv_dim())};
    project_rows_into(query, w_q, b_q, p.q);
    project_rows_into(key, w_k, b_k, p.k);
    project_rows_into(value, w_v, b_v, p.v);
    if (rope) {
      // Lower-right aligned positions (the class comment): query row i at i + (S - L), key row j
      // at j.
      rope->apply_each_head(p.q, key.rows() - query.rows());
      rope->apply_each_head(p.k, 0);
    }
    return p;
  }

  /// y = x w + b into the caller's rows (y: x.rows() x w.cols()), computed as project_rows.
  template <typename DerivedY>
  static void project_rows_into(ConstMatrixRef<Scalar> x, const Matrix<Scalar>& w,
                                const RowVector<Scalar>& b, DerivedY& y) {
    if constexpr (detail::flash::supported<Scalar>) {
      detail::projection::project<Scalar>(x, w, b, y);
    } else {
      y = project(x, w, b);
    }
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
