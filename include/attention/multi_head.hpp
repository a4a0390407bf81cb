#pragma once
// SPDX-License-Identifier: MIT
//
// MultiHeadAttention<Scalar>: a layer made of its parts, the weights (MultiHeadWeights,
// multi_head_weights.hpp, for a MultiHeadShape) and the position features (PositionFeatures,
// multi_head_positions.hpp), with the calls that run them. Each call builds one plan
// (detail/multi_head_plan.hpp), which projects the inputs, splits the heads and applies the
// position features, then attends and projects the heads' outputs.

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/detail/multi_head_plan.hpp"
#include "attention/errors.hpp"
#include "attention/kv_cache.hpp"
#include "attention/mask.hpp"
#include "attention/multi_head_positions.hpp"
#include "attention/multi_head_shape.hpp"
#include "attention/multi_head_weights.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

namespace attention {

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
/// The layer is its weights (a MultiHeadWeights: public members w_q, ..., b_o, starting at zero;
/// call reset_parameters() for a random initialisation, or assign them) and its position features
/// (a PositionFeatures: public members rope, alibi_slopes and softcap, all off by default); every
/// call (forward, head_weights, forward through a KVCache and multi_head_attention_backward)
/// applies the features and first checks that the weights still have their shapes and that the
/// features fit (check_parameters).
///
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
class MultiHeadAttention : public MultiHeadWeights<Scalar>, public PositionFeatures {
  static_assert(std::is_floating_point_v<Scalar>,
                "attention::MultiHeadAttention: Scalar must be float, double or long double");
  using Plan = detail::MultiHeadPlan<Scalar>;

 public:
  /// Multi-head attention, num_kv_heads = num_heads. \throws ShapeError unless num_heads >= 1
  /// divides d_model >= 1.
  MultiHeadAttention(Index d_model, Index num_heads)
      : MultiHeadAttention(d_model, num_heads, num_heads) {}

  /// Grouped-query attention with num_kv_heads key/value heads (1: multi-query attention).
  /// \throws ShapeError unless num_heads >= 1 divides d_model >= 1 and num_kv_heads >= 1 divides
  /// num_heads.
  MultiHeadAttention(Index d_model, Index num_heads, Index num_kv_heads)
      : MultiHeadWeights<Scalar>(
            MultiHeadShape(d_model, num_heads, num_kv_heads, "MultiHeadAttention")) {}

  /// A layer with these weights (their shape is the layer's) and position features.
  explicit MultiHeadAttention(MultiHeadWeights<Scalar> weights, PositionFeatures features = {})
      : MultiHeadWeights<Scalar>(std::move(weights)), PositionFeatures(std::move(features)) {}

  /// The layer's weights and biases (the MultiHeadWeights part), read-only.
  [[nodiscard]] const MultiHeadWeights<Scalar>& weights() const { return *this; }
  /// The layer's weights and biases, to assign or load (their shapes are checked at the next call).
  [[nodiscard]] MultiHeadWeights<Scalar>& weights() { return *this; }
  /// The layer's position features (rope, alibi_slopes, softcap), read-only.
  [[nodiscard]] const PositionFeatures& position_features() const { return *this; }
  /// The layer's position features, to set (they are checked at the next call).
  [[nodiscard]] PositionFeatures& position_features() { return *this; }

  /// The key/value head that query head h reads: h / (num_heads() / num_kv_heads()).
  /// \throws ShapeError unless 0 <= h < num_heads().
  [[nodiscard]] Index kv_head_of(Index h) const {
    return head_offset(h) / this->head_dim() / this->shape().group_size();
  }

  /// Slices of the weights, as read-only views: query head h's columns of w_q (d_model x head_dim)
  /// and rows of w_o (head_dim x d_model); key/value head g's columns of w_k and w_v (d_model x
  /// head_dim). w_k_head and w_v_head take a key/value head index, 0 <= g < num_kv_heads() (query
  /// head h reads g = kv_head_of(h)); without GQA the two numberings coincide.
  /// \throws ShapeError on an index out of range.
  [[nodiscard]] auto w_q_head(Index h) const {
    return this->w_q.middleCols(head_offset(h), this->head_dim());
  }
  /// Key/value head g's columns of w_k (d_model x head_dim); see w_q_head.
  [[nodiscard]] auto w_k_head(Index g) const {
    return this->w_k.middleCols(kv_offset(g), this->head_dim());
  }
  /// Key/value head g's columns of w_v (d_model x head_dim); see w_q_head.
  [[nodiscard]] auto w_v_head(Index g) const {
    return this->w_v.middleCols(kv_offset(g), this->head_dim());
  }
  /// Query head h's rows of w_o (head_dim x d_model); see w_q_head.
  [[nodiscard]] auto w_o_head(Index h) const {
    return this->w_o.middleRows(head_offset(h), this->head_dim());
  }

  /// Self-attention: query, key and value are all x (L x d_model). Returns L x d_model.
  /// \throws ShapeError if x.cols() != d_model, the mask is not L x L, or a weight lost its shape.
  template <typename DerivedX, typename Mask = NoMask,
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
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
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedQ>& query,
                                       const Eigen::MatrixBase<DerivedK>& key,
                                       const Eigen::MatrixBase<DerivedV>& value,
                                       const Mask& mask_arg = {}) const {
    const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
    return attend_and_project(
        Plan::project("MultiHeadAttention::forward", *this, *this, query, key, value, mask), mask);
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
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedX>& x_new,
                                       KVCache<Scalar>& cache, const Mask& mask_arg = {}) const {
    const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
    return attend_and_project(
        Plan::extend_cache("MultiHeadAttention::forward (cache)", *this, *this, x_new, cache, mask),
        mask);
  }

  /// Incremental decoding through a low-precision cache, for MultiHeadAttention<float>: a
  /// KVCache<Eigen::bfloat16>, KVCache<Eigen::half> or Int8KVCache (width kv_dim()). As the call
  /// above (positions, RoPE, ALiBi, GQA, masks and windows alike), except that the new tokens'
  /// keys and values are projected and rotated in float and then stored rounded to nearest even
  /// (bfloat16, half) or quantised (int8, int8_kv_cache.hpp); attention then reads the stored
  /// values, widened to float. A step of at most 16 new tokens reads the stored rows in place
  /// (int8 in groups of a multiple of 16 scalars that divides head_dim(); other groups, and longer
  /// calls, widen the cache to float once first). The result is the float attention of the stored
  /// keys and values. \throws as the call above, and std::invalid_argument when a new key or value
  /// lies beyond Eigen::half's range (a half cache); the cache is unchanged when anything throws.
  template <typename DerivedX, typename Cache, typename Mask = CausalLowerRightMask,
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0,
            typename Element = detail::low_precision_cache_t<Cache>>
  [[nodiscard]] Matrix<Scalar> forward(const Eigen::MatrixBase<DerivedX>& x_new, Cache& cache,
                                       const Mask& mask_arg = {}) const {
    static_assert(std::is_same_v<Scalar, float>,
                  "attention::MultiHeadAttention::forward: a KVCache<Eigen::bfloat16>, "
                  "KVCache<Eigen::half> or Int8KVCache serves MultiHeadAttention<float>");
    const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
    return attend_and_project(
        detail::MultiHeadPlan<Scalar, Element>::extend_low_precision_cache(
            "MultiHeadAttention::forward (cache)", *this, *this, x_new, cache, mask),
        mask);
  }

  /// The attention pattern of every head for self-attention over x: num_heads() matrices, L x L.
  template <typename DerivedX, typename Mask = NoMask,
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedX>& x,
                                                         const Mask& mask = {}) const {
    return head_weights(x, x, mask);
  }

  /// The attention pattern of every query head for query attending to key: num_heads() matrices,
  /// L x S (the heads of a GQA group see the same keys through their own queries), with the
  /// layer's position features (RoPE, ALiBi, soft-cap) as in forward().
  template <typename DerivedQ, typename DerivedK, typename Mask = NoMask,
            std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
  [[nodiscard]] std::vector<Matrix<Scalar>> head_weights(const Eigen::MatrixBase<DerivedQ>& query,
                                                         const Eigen::MatrixBase<DerivedK>& key,
                                                         const Mask& mask_arg = {}) const {
    const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
    // Values are not needed for weights; key stands in for value so the checks stay in one place.
    const Plan plan =
        Plan::project("MultiHeadAttention::head_weights", *this, *this, query, key, key, mask);
    std::vector<Matrix<Scalar>> patterns;
    patterns.reserve(static_cast<std::size_t>(this->num_heads()));
    plan.for_each_head(mask, [&](Index h, const auto& head_mask) {
      patterns.push_back(
          attention_weights(plan.q_head(h), plan.k_head(h), head_mask, plan.options()));
    });
    return patterns;
  }

  /// Builds a (non-grouped) layer from torch.nn.MultiheadAttention's parameters (see
  /// MultiHeadWeights::from_pytorch for the layout). \throws ShapeError on any other size.
  template <typename DerivedW, typename DerivedB, typename DerivedOW, typename DerivedOB>
  [[nodiscard]] static MultiHeadAttention from_pytorch(
      const Eigen::MatrixBase<DerivedW>& in_proj_weight,
      const Eigen::MatrixBase<DerivedB>& in_proj_bias,
      const Eigen::MatrixBase<DerivedOW>& out_proj_weight,
      const Eigen::MatrixBase<DerivedOB>& out_proj_bias, Index num_heads) {
    return MultiHeadAttention(MultiHeadWeights<Scalar>::from_pytorch(
        in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads,
        "MultiHeadAttention::from_pytorch"));
  }

  /// Checks that every public weight and bias still has its shape (MultiHeadWeights::check) and
  /// that the position features fit (PositionFeatures::check_fits): rope->head_dim() ==
  /// head_dim(), alibi_slopes empty or num_heads() finite slopes, softcap unset or positive and
  /// finite in Scalar. Every call of the layer (and multi_head_attention_backward) makes this check
  /// before any work. \throws ShapeError naming `func`, the parameter and both sizes;
  /// std::invalid_argument for a bad slope or softcap.
  void check_parameters(const char* func) const { Plan::check_parameters(func, *this, *this); }

  /// softcap rounded to Scalar, or 0 when unset (PositionFeatures::resolved_softcap).
  [[nodiscard]] Scalar resolved_softcap(const char* func) const {
    return PositionFeatures::resolved_softcap<Scalar>(func);
  }

 private:
  /// out = heads w_o + b_o, the heads' outputs (in this thread's scratch, like the projections).
  template <typename AnyPlan, typename Mask>
  Matrix<Scalar> attend_and_project(const AnyPlan& plan, const Mask& mask) const {
    Eigen::Map<Matrix<Scalar>> heads = detail::thread_scratch<Scalar>().matrix(
        detail::ScratchSlot::head_outputs, plan.num_queries(), this->d_model());
    plan.attend(heads, mask);
    return this->project(MultiHeadProjection::output, heads);
  }

  /// The first column (of w_q, heads) of query head h, or (of w_k, w_v, K, V) of key/value head g.
  Index head_offset(Index h) const {
    return offset_of(h, "head index", "num_heads()", this->num_heads());
  }
  Index kv_offset(Index g) const {
    return offset_of(g, "key/value head index", "num_kv_heads()", this->num_kv_heads());
  }
  Index offset_of(Index index, const char* what, const char* count_name, Index count) const {
    if (index < 0 || index >= count) {
      detail::throw_shape_error("MultiHeadAttention::head", what, index,
                                "must be at least 0 and less than", count_name, count);
    }
    return index * this->head_dim();
  }
};

}  // namespace attention
