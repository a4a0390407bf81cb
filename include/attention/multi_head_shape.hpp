#pragma once
// SPDX-License-Identifier: MIT
//
// MultiHeadShape: the sizes of a multi-head attention layer (d_model, query and key/value heads)
// and the parameter counts that follow from them, with no weights allocated.

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>

#include "attention/errors.hpp"
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

  /// Width of the layer's inputs and output.
  [[nodiscard]] Index d_model() const { return d_model_; }
  /// Query heads.
  [[nodiscard]] Index num_heads() const { return num_heads_; }
  /// Key/value heads: num_heads() unless the layer was made with fewer (grouped-query attention).
  [[nodiscard]] Index num_kv_heads() const { return num_kv_heads_; }
  /// Width of one head: d_model() / num_heads().
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

}  // namespace attention
