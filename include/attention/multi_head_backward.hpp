#pragma once
// SPDX-License-Identifier: MIT
//
// Backward of MultiHeadAttention::forward (multi_head.hpp): the gradients of a loss with respect to
// the layer's inputs and to every weight and bias, given the gradient d_out of its output. The
// forward is recomputed from the inputs; nothing needs to be saved between the two calls.
//
//   auto grads = attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
//   layer.w_q -= learning_rate * grads.dw_q;   // ...

#include <Eigen/Core>
#include <type_traits>
#include <utility>

#include "attention/alibi.hpp"
#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/mask.hpp"
#include "attention/multi_head.hpp"
#include "attention/options.hpp"
#include "attention/projection.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention {

/// Gradients of a loss with respect to a MultiHeadAttention layer's inputs and parameters, as
/// returned by multi_head_attention_backward. Each has the shape of what it is the gradient of.
template <typename Scalar>
struct MultiHeadGradients {
  Matrix<Scalar> dx;  ///< self-attention only: L x d_model, d_query + d_key + d_value; else empty
  Matrix<Scalar> d_query;        ///< L x d_model, through the queries alone
  Matrix<Scalar> d_key;          ///< S x d_model, through the keys alone
  Matrix<Scalar> d_value;        ///< S x d_model, through the values alone
  Matrix<Scalar> dw_q, dw_o;     ///< d_model x d_model
  Matrix<Scalar> dw_k, dw_v;     ///< d_model x kv_dim (d_model without GQA)
  RowVector<Scalar> db_q, db_o;  ///< 1 x d_model
  RowVector<Scalar> db_k, db_v;  ///< 1 x kv_dim
};

namespace detail {

/// The backward of the cross-attention forward, shapes checked by the caller; grads.dx untouched.
template <typename Scalar, typename Mask>
void multi_head_backward(const MultiHeadAttention<Scalar>& layer, ConstMatrixRef<Scalar> query,
                         ConstMatrixRef<Scalar> key, ConstMatrixRef<Scalar> value,
                         ConstMatrixRef<Scalar> d_out, const Mask& mask,
                         MultiHeadGradients<Scalar>& grads) {
  const Index num_queries = query.rows(), num_keys = key.rows();
  const Index d_model = layer.d_model(), head_dim = layer.head_dim(), kv_dim = layer.kv_dim();
  // Forward, recomputed: Q = query w_q + b_q, K = key w_k + b_k, V = value w_v + b_v.
  // With RoPE, Q and K are then rotated (Q <- R Q at positions i + (S - L), K <- R K at j).
  Matrix<Scalar> q = project(query, layer.w_q, layer.b_q);
  Matrix<Scalar> k = project(key, layer.w_k, layer.b_k);
  const Matrix<Scalar> v = project(value, layer.w_v, layer.b_v);
  const Index query_position = num_keys - num_queries;  // lower-right aligned (multi_head.hpp)
  if (layer.rope) {
    layer.rope->apply_each_head(q, query_position);
    layer.rope->apply_each_head(k, 0);
  }
  // out = heads w_o + b_o: dW_o = headsᵀ dOut (below, once heads is known), db_o = colsum(dOut),
  // dHeads = dOut w_oᵀ.
  Matrix<Scalar> d_heads(num_queries, d_model);
  d_heads.noalias() = d_out * layer.w_o.transpose();
  grads.db_o = d_out.colwise().sum();

  // head_h = softmax(Q_h K_g^T / sqrt(head_dim) + mask) V_g, Q_h the columns [h * head_dim, (h + 1)
  // * head_dim) of Q and K_g, V_g those of K/V head g = kv_head_of(h): each head's backward
  // (scaled_dot_product.hpp) writes its columns of dQ, and adds its dK_h, dV_h to the columns of
  // its K/V head, since K_g and V_g feed every query head of the group: dK_g = sum_{h in g} dK_h.
  // With ALiBi head h's mask is `mask & alibi(m_h)`, a constant bias; with a soft-cap the sdpa
  // backward differentiates it (ds = dS (1 - tanh^2)).
  const Scalar scale = resolve_scale<Scalar>("multi_head_attention_backward", {}, head_dim);
  const Scalar softcap = layer.resolved_softcap("multi_head_attention_backward");
  Matrix<Scalar> heads(num_queries, d_model), dq(num_queries, d_model);
  Matrix<Scalar> dk = Matrix<Scalar>::Zero(num_keys, kv_dim);
  Matrix<Scalar> dv = Matrix<Scalar>::Zero(num_keys, kv_dim);
  Matrix<Scalar> dk_h(num_keys, head_dim), dv_h(num_keys, head_dim);
  Matrix<Scalar> p, ds;  // L x S, reused by every head
  for (Index h = 0; h < layer.num_heads(); ++h) {
    const Index c = h * head_dim, g = layer.kv_head_of(h) * head_dim;
    const auto head_backward = [&](const auto& head_mask) {
      attention_backward_materialized<Scalar>(
          q.middleCols(c, head_dim), k.middleCols(g, head_dim), v.middleCols(g, head_dim),
          d_heads.middleCols(c, head_dim), head_mask, scale, dq.middleCols(c, head_dim), dk_h, dv_h,
          p, ds, softcap);
    };
    if (layer.alibi_slopes.empty()) {
      head_backward(mask);
    } else {
      head_backward(mask & alibi(layer.alibi_slopes[static_cast<std::size_t>(h)]));
    }
    dk.middleCols(g, head_dim) += dk_h;
    dv.middleCols(g, head_dim) += dv_h;
    heads.middleCols(c, head_dim).noalias() = p * v.middleCols(g, head_dim);
  }
  grads.dw_o.noalias() = heads.transpose() * d_out;
  // RoPE: Q = R Q' with R orthogonal, so dQ' = R^T dQ (Rope::apply_transpose); K likewise.
  if (layer.rope) {
    layer.rope->apply_transpose_each_head(dq, query_position);
    layer.rope->apply_transpose_each_head(dk, 0);
  }

  // Q = query w_q + b_q: dW_q = queryᵀ dQ, db_q = colsum(dQ), dQuery = dQ w_qᵀ; K and V alike.
  grads.dw_q.noalias() = query.transpose() * dq;
  grads.dw_k.noalias() = key.transpose() * dk;
  grads.dw_v.noalias() = value.transpose() * dv;
  grads.db_q = dq.colwise().sum();
  grads.db_k = dk.colwise().sum();
  grads.db_v = dv.colwise().sum();
  grads.d_query.noalias() = dq * layer.w_q.transpose();
  grads.d_key.noalias() = dk * layer.w_k.transpose();
  grads.d_value.noalias() = dv * layer.w_v.transpose();
}

/// True if an input (bound to storage) shares memory with any gradient in `grads`, which the
/// backward overwrites while it still reads the inputs (say grads.dx of the layer above passed
/// back as d_out).
template <typename Scalar, typename... In>
bool overlaps_gradients(const MultiHeadGradients<Scalar>& grads, const In&... inputs) {
  return may_overlap_any(grads.dx, inputs...) || may_overlap_any(grads.d_query, inputs...) ||
         may_overlap_any(grads.d_key, inputs...) || may_overlap_any(grads.d_value, inputs...) ||
         may_overlap_any(grads.dw_q, inputs...) || may_overlap_any(grads.dw_k, inputs...) ||
         may_overlap_any(grads.dw_v, inputs...) || may_overlap_any(grads.dw_o, inputs...) ||
         may_overlap_any(grads.db_q, inputs...) || may_overlap_any(grads.db_k, inputs...) ||
         may_overlap_any(grads.db_v, inputs...) || may_overlap_any(grads.db_o, inputs...);
}

template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV,
          typename DerivedDO, typename Mask>
void check_multi_head_backward(const char* func, const MultiHeadAttention<Scalar>& layer,
                               const Eigen::MatrixBase<DerivedQ>& query,
                               const Eigen::MatrixBase<DerivedK>& key,
                               const Eigen::MatrixBase<DerivedV>& value,
                               const Eigen::MatrixBase<DerivedDO>& d_out, const Mask& mask) {
  static_assert(std::is_same_v<typename DerivedQ::Scalar, Scalar> &&
                    std::is_same_v<typename DerivedK::Scalar, Scalar> &&
                    std::is_same_v<typename DerivedV::Scalar, Scalar> &&
                    std::is_same_v<typename DerivedDO::Scalar, Scalar>,
                "attention::multi_head_attention_backward: inputs and d_out must have the layer's "
                "scalar type");
  layer.check_parameters(func);
  require_positive(func, "query.rows() (number of queries)", query.rows());
  require_positive(func, "key.rows() (number of keys)", key.rows());
  require_equal(func, "query.cols()", query.cols(), "d_model", layer.d_model());
  require_equal(func, "key.cols()", key.cols(), "d_model", layer.d_model());
  require_equal(func, "value.cols()", value.cols(), "d_model", layer.d_model());
  require_equal(func, "value.rows()", value.rows(), "key.rows()", key.rows());
  require_equal(func, "d_out.rows()", d_out.rows(), "query.rows()", query.rows());
  require_equal(func, "d_out.cols()", d_out.cols(), "d_model", layer.d_model());
  mask.check(func, query.rows(), key.rows());
}

}  // namespace detail

/// Backward of MultiHeadAttention::forward(query, key, value, mask) (cross-attention). With the
/// forward (multi_head.hpp)
///   Q = query w_q + b_q,  K = key w_k + b_k,  V = value w_v + b_v
///   head_h = softmax(Q_h K_g^T / sqrt(head_dim) + mask) V_g,  g = layer.kv_head_of(h),
///   out = [head_0 ... head_{H-1}] w_o + b_o
/// and d_out = dL/d(out) (L x d_model), overwrites `grads` with
///   dW_o = headsᵀ dOut,   db_o = colsum(dOut),   dHeads = dOut w_oᵀ
///   dQ_h, dK_h, dV_h = scaled_dot_product_attention_backward(Q_h, K_g, V_g, dHeads_h, mask)
///   dK_g = sum of dK_h over the query heads h of K/V head g (likewise dV_g); without GQA, dK_h
///   dW_q = queryᵀ dQ,  db_q = colsum(dQ),  d_query = dQ w_qᵀ   (and likewise for K with key, V
///   with value)
/// The layer's position features are differentiated too: with layer.rope, Q and K are rotated
/// after the projection (Q <- R Q, K <- R K, positions as in the forward) and dQ, dK above are
/// rotated back, dQ <- R^T dQ (Rope::apply_transpose) before the projections' gradients; with
/// layer.alibi_slopes, head h's mask is `mask & alibi(slope_h)`, a constant bias (no gradient);
/// with layer.softcap, the attention backward differentiates the cap.
/// With grouped-query heads dw_k, dw_v are d_model x kv_dim and db_k, db_v 1 x kv_dim, the shapes
/// of w_k, w_v, b_k, b_v.
/// grads.dx is left empty. Storage of the right size is reused; an input may share memory with
/// grads (grads.dx of the layer above passed as d_out, say): the gradients are then computed into
/// new storage and moved into grads, which leaves such an input's old storage freed. Materialises
/// one head's L x S weights at a time. \throws ShapeError as the forward does, or if d_out is not L
/// x d_model.
template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV,
          typename DerivedDO, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
void multi_head_attention_backward(const MultiHeadAttention<Scalar>& layer,
                                   const Eigen::MatrixBase<DerivedQ>& query,
                                   const Eigen::MatrixBase<DerivedK>& key,
                                   const Eigen::MatrixBase<DerivedV>& value,
                                   const Eigen::MatrixBase<DerivedDO>& d_out,
                                   MultiHeadGradients<Scalar>& grads, const Mask& mask = {}) {
  detail::check_multi_head_backward("multi_head_attention_backward", layer, query, key, value,
                                    d_out, mask);
  const ConstMatrixRef<Scalar> query_ref(query), key_ref(key), value_ref(value), d_out_ref(d_out);
  if (detail::overlaps_gradients(grads, query_ref, key_ref, value_ref, d_out_ref)) {
    // An input lives in grads: compute into new gradients, then hand them over.
    MultiHeadGradients<Scalar> fresh;
    detail::multi_head_backward<Scalar>(layer, query_ref, key_ref, value_ref, d_out_ref, mask,
                                        fresh);
    grads = std::move(fresh);
    return;  // fresh.dx is empty
  }
  detail::multi_head_backward<Scalar>(layer, query_ref, key_ref, value_ref, d_out_ref, mask, grads);
  grads.dx.resize(0, 0);
}

/// Backward of MultiHeadAttention::forward(x, mask) (self-attention: query = key = value = x). As
/// the cross-attention overload, and grads.dx = d_query + d_key + d_value, since x feeds all three.
template <typename Scalar, typename DerivedX, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
void multi_head_attention_backward(const MultiHeadAttention<Scalar>& layer,
                                   const Eigen::MatrixBase<DerivedX>& x,
                                   const Eigen::MatrixBase<DerivedDO>& d_out,
                                   MultiHeadGradients<Scalar>& grads, const Mask& mask = {}) {
  detail::check_multi_head_backward("multi_head_attention_backward", layer, x, x, x, d_out, mask);
  const ConstMatrixRef<Scalar> x_ref(x), d_out_ref(d_out);  // expressions evaluated once
  if (detail::overlaps_gradients(grads, x_ref, d_out_ref)) {
    // An input lives in grads (grads.dx of the layer above as d_out): compute into new gradients.
    MultiHeadGradients<Scalar> fresh;
    multi_head_attention_backward(layer, x_ref, d_out_ref, fresh, mask);
    grads = std::move(fresh);
    return;
  }
  detail::multi_head_backward<Scalar>(layer, x_ref, x_ref, x_ref, d_out_ref, mask, grads);
  grads.dx = grads.d_query + grads.d_key + grads.d_value;
}

/// Cross-attention backward returning new gradients; see the overload above.
template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV,
          typename DerivedDO, typename Mask = NoMask, std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] MultiHeadGradients<Scalar> multi_head_attention_backward(
    const MultiHeadAttention<Scalar>& layer, const Eigen::MatrixBase<DerivedQ>& query,
    const Eigen::MatrixBase<DerivedK>& key, const Eigen::MatrixBase<DerivedV>& value,
    const Eigen::MatrixBase<DerivedDO>& d_out, const Mask& mask = {}) {
  MultiHeadGradients<Scalar> grads;
  multi_head_attention_backward(layer, query, key, value, d_out, grads, mask);
  return grads;
}

/// Self-attention backward returning new gradients; see the overload above.
template <typename Scalar, typename DerivedX, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] MultiHeadGradients<Scalar> multi_head_attention_backward(
    const MultiHeadAttention<Scalar>& layer, const Eigen::MatrixBase<DerivedX>& x,
    const Eigen::MatrixBase<DerivedDO>& d_out, const Mask& mask = {}) {
  MultiHeadGradients<Scalar> grads;
  multi_head_attention_backward(layer, x, d_out, grads, mask);
  return grads;
}

}  // namespace attention
