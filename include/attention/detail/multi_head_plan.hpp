#pragma once
// SPDX-License-Identifier: MIT
//
// One call of a multi-head attention layer up to the heads' outputs, written once for the forward,
// the forward through a KVCache and head_weights (multi_head.hpp) and for the backward
// (multi_head_backward.hpp):
//   Q = query w_q + b_q,   K = key w_k + b_k,   V = value w_v + b_v        projected once
//   Q_h <- R(p_i) Q_h,     K_g <- R(p_j) K_g                                RoPE, if set
//   head_h = softmax(cap(Q_h K_g^T / sqrt(head_dim)) + mask + alibi_h) V_g,  g = h / group_size
// with X_h = X.middleCols(h * head_dim, head_dim), cap the soft-cap (if set) and alibi_h query
// head h's ALiBi bias (if set). Positions are lower-right aligned (multi_head_positions.hpp): p_i =
// i + (S - L), p_j = j; through a KVCache they are absolute (the cache's tokens_seen()).
//
// The projections live in the calling thread's scratch (scratch.hpp): a plan is valid until the
// thread's next call into a layer.
//
// Through a low-precision cache (KVCache<Eigen::bfloat16>, KVCache<Eigen::half>, Int8KVCache:
// Element is its stored type) the new keys and values are projected and rotated in float, then
// appended (rounded or quantised). Attention then reads the stored rows as attention over a cache
// does (detail/cache_rows.hpp): in place for a step of at most decode_max_queries new tokens,
// widened into float scratch once for a longer call (a prompt) or int8 rows in groups that
// int8_rows_in_place does not accept.

#include <Eigen/Core>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/cache_rows.hpp"
#include "attention/errors.hpp"
#include "attention/int8_kv_cache.hpp"
#include "attention/kernels/flash.hpp"
#include "attention/kv_cache.hpp"
#include "attention/multi_head_positions.hpp"
#include "attention/multi_head_weights.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

namespace attention::detail {

template <typename Scalar, typename Element = Scalar>
class MultiHeadPlan {
 public:
  /// Read-only rows of K or V: the plan's own projections, or a KVCache's rows.
  using KeysView = Eigen::Map<const Matrix<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;

  /// The check of every call: the weights' shapes, then the position features (both name `func`).
  static void check_parameters(const char* func, const MultiHeadWeights<Scalar>& weights,
                               const PositionFeatures& features) {
    weights.check(func);
    features.check_fits<Scalar>(func, weights.num_heads(), weights.head_dim());
  }

  /// Self- or cross-attention: query (L x d_model) attends to key and value (S x d_model each).
  /// Checks the parameters, the inputs and the mask (L x S), then projects and rotates.
  /// \throws ShapeError or std::invalid_argument naming `func`, as MultiHeadAttention::forward.
  template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
  static MultiHeadPlan project(const char* func, const MultiHeadWeights<Scalar>& weights,
                               const PositionFeatures& features,
                               const Eigen::MatrixBase<DerivedQ>& query,
                               const Eigen::MatrixBase<DerivedK>& key,
                               const Eigen::MatrixBase<DerivedV>& value, const Mask& mask) {
    static_assert(std::is_same_v<typename DerivedQ::Scalar, Scalar> &&
                      std::is_same_v<typename DerivedK::Scalar, Scalar> &&
                      std::is_same_v<typename DerivedV::Scalar, Scalar>,
                  "attention::MultiHeadAttention: inputs must have the layer's scalar type");
    check_parameters(func, weights, features);
    require_positive(func, "query.rows() (number of queries)", query.rows());
    require_positive(func, "key.rows() (number of keys)", key.rows());
    require_equal(func, "query.cols()", query.cols(), "d_model", weights.d_model());
    require_equal(func, "key.cols()", key.cols(), "d_model", weights.d_model());
    require_equal(func, "value.cols()", value.cols(), "d_model", weights.d_model());
    require_equal(func, "value.rows()", value.rows(), "key.rows()", key.rows());
    mask.check(func, query.rows(), key.rows());
    ScratchArena<Scalar>& scratch = thread_scratch<Scalar>();
    Eigen::Map<Matrix<Scalar>> q =
        scratch.matrix(ScratchSlot::projected_query, query.rows(), weights.d_model());
    Eigen::Map<Matrix<Scalar>> k =
        scratch.matrix(ScratchSlot::projected_key, key.rows(), weights.kv_dim());
    Eigen::Map<Matrix<Scalar>> v =
        scratch.matrix(ScratchSlot::projected_value, value.rows(), weights.kv_dim());
    weights.project(MultiHeadProjection::query, query, q);
    weights.project(MultiHeadProjection::key, key, k);
    weights.project(MultiHeadProjection::value, value, v);
    // The queries are the last L of the S positions: query row i at i + (S - L), key row j at j.
    const Index query_position = key.rows() - query.rows();
    features.rotate(q, query_position, k, 0);
    return MultiHeadPlan(func, weights, features, q, view(k), view(v), query_position, 0);
  }

  /// The checks of a call through a cache, before anything changes: the parameters, x_new (L x
  /// d_model, L >= 1), the cache's width (kv_dim) and the mask (L x (cache.size() + L)).
  template <typename DerivedX, typename Cache, typename Mask>
  static void check_cache_call(const char* func, const MultiHeadWeights<Scalar>& weights,
                               const PositionFeatures& features,
                               const Eigen::MatrixBase<DerivedX>& x_new, const Cache& cache,
                               const Mask& mask) {
    static_assert(std::is_same_v<typename DerivedX::Scalar, Scalar>,
                  "attention::MultiHeadAttention: inputs must have the layer's scalar type");
    check_parameters(func, weights, features);
    require_positive(func, "x_new.rows() (number of new tokens)", x_new.rows());
    require_equal(func, "x_new.cols()", x_new.cols(), "d_model", weights.d_model());
    require_equal(func, "cache.width()", cache.width(), "kv_dim", weights.kv_dim());
    mask.check(func, x_new.rows(), cache.size() + x_new.rows());
  }

  /// Incremental decoding: projects the new tokens x_new (L x d_model), appends their keys and
  /// values to `cache` (projected straight into its new rows) and plans attention over the whole
  /// cache, S = cache.size() after the append. New token r is at the absolute position
  /// cache.tokens_seen() + r (counted before the append): its query and its key are rotated there,
  /// the key before it is stored, so a cached key keeps its position when older ones are dropped.
  /// x_new may be rows of the cache itself (it is then copied before the cache grows).
  /// \throws as MultiHeadAttention::forward(x_new, cache, mask); the cache is unchanged then.
  template <typename DerivedX, typename Mask>
  static MultiHeadPlan extend_cache(const char* func, const MultiHeadWeights<Scalar>& weights,
                                    const PositionFeatures& features,
                                    const Eigen::MatrixBase<DerivedX>& x_new,
                                    KVCache<Scalar>& cache, const Mask& mask) {
    check_cache_call(func, weights, features, x_new, cache, mask);
    const Index num_new = x_new.rows();
    const ConstMatrixRef<Scalar> x_bound(x_new);  // evaluated once if x_new is an expression
    // x_new may be rows of the cache itself (kv_dim = d_model), which extend() may move or free.
    Matrix<Scalar> x_copy;
    const bool x_in_cache =
        may_overlap(cache.keys(), x_bound) || may_overlap(cache.values(), x_bound);
    if (x_in_cache) x_copy = x_bound;
    const ConstMatrixRef<Scalar> x = x_in_cache ? ConstMatrixRef<Scalar>(x_copy) : x_bound;
    const Index position = cache.tokens_seen();  // absolute position of the first new token
    Eigen::Map<Matrix<Scalar>> q =
        thread_scratch<Scalar>().matrix(ScratchSlot::projected_query, num_new, weights.d_model());
    weights.project(MultiHeadProjection::query, x, q);
    // Checked before the cache changes, in the caller's name (extend() would check too); the keys
    // and values are then projected straight into the new rows.
    require_cache_room(func, "cache.", cache.size(), "x_new.rows()", num_new, cache.max_length());
    typename KVCache<Scalar>::NewRows added = cache.extend(num_new);
    weights.project(MultiHeadProjection::key, x, added.keys);
    weights.project(MultiHeadProjection::value, x, added.values);
    // check_fits() checked RoPE's width, so this cannot throw now that the cache has grown.
    features.rotate(q, position, added.keys, position);
    return MultiHeadPlan(func, weights, features, q, cache.keys(), cache.values(), position,
                         cache.first_position());
  }

  /// Incremental decoding through a low-precision cache (Element its stored type, Scalar float):
  /// as extend_cache, the new keys and values projected and rotated in float, then appended
  /// (rounded or quantised by the cache). \throws as extend_cache, and std::invalid_argument from
  /// a half cache's append (a key or value beyond half's range); the cache is unchanged then.
  template <typename DerivedX, typename Cache, typename Mask>
  static MultiHeadPlan extend_low_precision_cache(const char* func,
                                                  const MultiHeadWeights<Scalar>& weights,
                                                  const PositionFeatures& features,
                                                  const Eigen::MatrixBase<DerivedX>& x_new,
                                                  Cache& cache, const Mask& mask) {
    static_assert(
        std::is_same_v<Scalar, float> && std::is_same_v<low_precision_cache_t<Cache>, Element>,
        "attention::MultiHeadAttention: a low-precision cache serves a float layer");
    check_cache_call(func, weights, features, x_new, cache, mask);
    const Index num_new = x_new.rows();
    require_cache_room(func, "cache.", cache.size(), "x_new.rows()", num_new, cache.max_length());
    // x_new is float and the cache holds another type: they cannot share memory, and everything
    // is projected before the cache changes.
    const ConstMatrixRef<Scalar> x(x_new);
    const Index position = cache.tokens_seen();  // absolute position of the first new token
    ScratchArena<Scalar>& scratch = thread_scratch<Scalar>();
    Eigen::Map<Matrix<Scalar>> q =
        scratch.matrix(ScratchSlot::projected_query, num_new, weights.d_model());
    Eigen::Map<Matrix<Scalar>> k_new =
        scratch.matrix(ScratchSlot::projected_key, num_new, weights.kv_dim());
    Eigen::Map<Matrix<Scalar>> v_new =
        scratch.matrix(ScratchSlot::projected_value, num_new, weights.kv_dim());
    weights.project(MultiHeadProjection::query, x, q);
    weights.project(MultiHeadProjection::key, x, k_new);
    weights.project(MultiHeadProjection::value, x, v_new);
    features.rotate(q, position, k_new, position);
    cache.append(k_new, v_new);
    const Index num_keys = cache.size();
    if (attends_in_place(cache, num_new, weights.head_dim())) {
      MultiHeadPlan plan(func, weights, features, q, view(k_new.topRows(0)), view(v_new.topRows(0)),
                         position, cache.first_position());
      plan.num_keys_ = num_keys;
      plan.stored_ = stored_rows(cache);
      return plan;
    }
    Eigen::Map<Matrix<Scalar>> k =
        scratch.matrix(ScratchSlot::projected_key, num_keys, weights.kv_dim());
    Eigen::Map<Matrix<Scalar>> v =
        scratch.matrix(ScratchSlot::projected_value, num_keys, weights.kv_dim());
    widen_rows(cache, k, v);
    return MultiHeadPlan(func, weights, features, q, view(k), view(v), position,
                         cache.first_position());
  }

  [[nodiscard]] Index num_queries() const { return q_.rows(); }
  [[nodiscard]] Index num_keys() const { return num_keys_; }

  /// Query head h's columns of Q, and those of its K/V head in K and V (read-only views).
  [[nodiscard]] auto q_head(Index h) const { return q_.middleCols(h * head_dim(), head_dim()); }
  [[nodiscard]] auto k_head(Index h) const { return k_.middleCols(kv_column(h), head_dim()); }
  [[nodiscard]] auto v_head(Index h) const { return v_.middleCols(kv_column(h), head_dim()); }
  /// The first column in K and V of query head h's K/V head, g = h / group_size.
  [[nodiscard]] Index kv_column(Index h) const {
    return h / weights_.shape().group_size() * head_dim();
  }

  /// What a single head's scaled_dot_product_attention* call takes: the soft-cap, default scale.
  [[nodiscard]] Options options() const { return Options{std::nullopt, features_.softcap}; }

  /// Calls f(h, head_mask) for every query head h in order, head_mask being `mask` with head h's
  /// ALiBi bias (PositionFeatures::with_head_mask).
  template <typename Mask, typename F>
  void for_each_head(const Mask& mask, F&& f) const {
    for (Index h = 0; h < weights_.num_heads(); ++h) {
      features_.with_head_mask(h, mask, [&](const auto& head_mask) { f(h, head_mask); });
    }
  }

  /// heads (L x d_model) = every query head's output side by side, and, if lse is not null, each
  /// head's log-sum-exp per query row: lse[h * L + i] (num_heads x L, row-major), as
  /// scaled_dot_product_attention_lse (partial.hpp) gives them. `heads` must not alias the plan.
  template <typename Mask>
  void attend(MatrixRef<Scalar> heads, const Mask& mask, Scalar* lse = nullptr) const {
    const Index num_heads = weights_.num_heads(), d = head_dim(), rows = num_queries();
    const auto lse_of = [&](Index h) { return lse == nullptr ? nullptr : lse + h * rows; };
    if constexpr (flash::supported<Scalar>) {
      // Every head reads its columns of Q, K, V in place and writes its columns of `heads`; the
      // heads of a GQA group point at the same K/V columns, which the kernel packs once per K/V
      // head. The kernel runs all heads in one parallel region.
      // Rows in a cache's stored type (reads_stored()) are read from the cache's rows in place.
      const bool stored = reads_stored();
      std::vector<flash::HeadOperands<Scalar>> operands;
      operands.reserve(static_cast<std::size_t>(num_heads));
      for (Index h = 0; h < num_heads; ++h) {
        const Index c = h * d, g = kv_column(h);
        operands.push_back({q_.data() + c, q_.outerStride(), stored ? nullptr : k_.data() + g,
                            k_.outerStride(), stored ? nullptr : v_.data() + g, v_.outerStride(),
                            heads.data() + c, heads.outerStride(), lse_of(h)});
      }
      const flash::ScoreRules<Scalar> rules{resolve_scale<Scalar>(func_, {}, d),
                                            features_.resolved_softcap<Scalar>(func_)};
      auto& workspace = thread_scratch_object<flash::CallWorkspace<Scalar>>();
      // Heads [h, h + count) under `head_mask`, their first K/V head being that of head h.
      const auto run = [&](Index h, Index count, const auto& head_mask, Index heads_per_kv) {
        if constexpr (!std::is_same_v<Element, Scalar>) {
          if (stored) {
            flash::decode_attention(operands.data() + h, count, rows, num_keys(), d, d, rules,
                                    head_mask, workspace, stored_head(kv_column(h)), heads_per_kv);
            return;
          }
        }
        flash::multi_head_attention(operands.data() + h, count, rows, num_keys(), d, d, rules,
                                    head_mask, workspace, heads_per_kv);
      };
      if (features_.alibi_slopes.empty()) {
        run(0, num_heads, mask, weights_.shape().group_size());
      } else {
        // ALiBi gives every query head its own bias, and the kernel applies one mask to all the
        // heads of a call: one call per query head (the heads of a GQA group then read their
        // shared K/V once each, not once per group).
        for_each_head(mask, [&](Index h, const auto& head_mask) { run(h, 1, head_mask, 1); });
      }
    } else {
      for_each_head(mask, [&](Index h, const auto& head_mask) {
        attention_with_lse(func_, q_head(h), k_head(h), v_head(h), heads.middleCols(h * d, d),
                           lse_of(h), head_mask, options());
      });
    }
  }

  /// The backward of the rotation: dq (L x d_model) and dk (S x kv_dim), gradients with respect to
  /// the rotated Q and K, become those of Q and K before RoPE (PositionFeatures::rotate_back).
  template <typename DerivedQ, typename DerivedK>
  void rotate_back(Eigen::MatrixBase<DerivedQ>& dq, Eigen::MatrixBase<DerivedK>& dk) const {
    features_.rotate_back(dq, query_position_, dk, key_position_);
  }

 private:
  MultiHeadPlan(const char* func, const MultiHeadWeights<Scalar>& weights,
                const PositionFeatures& features, Eigen::Map<Matrix<Scalar>> q, KeysView k,
                KeysView v, Index query_position, Index key_position)
      : func_(func),
        weights_(weights),
        features_(features),
        q_(q),
        k_(k),
        v_(v),
        query_position_(query_position),
        key_position_(key_position),
        num_keys_(k.rows()) {}

  template <typename Derived>
  static KeysView view(const Eigen::MapBase<Derived>& m) {
    return KeysView(m.data(), m.rows(), m.cols(), Eigen::OuterStride<>(m.outerStride()));
  }

  /// True when attend reads the cache's stored rows in place (extend_low_precision_cache).
  [[nodiscard]] bool reads_stored() const { return stored_.k.data != nullptr; }

  /// The stored rows of the K/V head whose first column is `column`.
  [[nodiscard]] flash::StoredKV<Element> stored_head(Index column) const {
    return {stored_.k.at(0, column), stored_.v.at(0, column)};
  }

  [[nodiscard]] Index head_dim() const { return weights_.head_dim(); }

  const char* func_;
  const MultiHeadWeights<Scalar>& weights_;
  const PositionFeatures& features_;
  Eigen::Map<Matrix<Scalar>> q_;  // L x d_model, rotated
  KeysView k_;                    // S x kv_dim, rotated
  KeysView v_;                    // S x kv_dim
  Index query_position_;          // of query row 0
  Index key_position_;            // of key row 0
  Index num_keys_;                // S
  // A low-precision cache's whole rows when attend reads them in place (k_ and v_ are then empty).
  flash::StoredKV<Element> stored_{};
};

}  // namespace attention::detail
