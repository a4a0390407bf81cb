#pragma once
// SPDX-License-Identifier: MIT
//
// Backward of MultiHeadAttention::forward (multi_head.hpp): the gradients of a loss with respect to
// the layer's inputs and to every weight and bias, given the gradient d_out of its output. The
// forward is recomputed from the inputs by the forward's own plan (detail/multi_head_plan.hpp);
// nothing needs to be saved between the two calls.
//
//   auto grads = attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
//   layer.w_q -= learning_rate * grads.dw_q;   // ...

#include <Eigen/Core>
#include <type_traits>
#include <utility>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/multi_head_plan.hpp"
#include "attention/errors.hpp"
#include "attention/mask.hpp"
#include "attention/multi_head.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention {

/// Gradients of a loss with respect to a MultiHeadAttention layer's inputs and parameters, as
/// returned by multi_head_attention_backward. Each has the shape of what it is the gradient of.
template <typename Scalar>
struct MultiHeadGradients {
  Matrix<Scalar> dx;  ///< self-attention only: L x d_model, d_query + d_key + d_value; else empty
  Matrix<Scalar> d_query;  ///< L x d_model, through the queries alone
  Matrix<Scalar> d_key;    ///< S x d_model, through the keys alone
  Matrix<Scalar> d_value;  ///< S x d_model, through the values alone
  Matrix<Scalar> dw_q;     ///< d_model x d_model
  Matrix<Scalar> dw_o;     ///< d_model x d_model
  Matrix<Scalar> dw_k;     ///< d_model x kv_dim (d_model without GQA)
  Matrix<Scalar> dw_v;     ///< d_model x kv_dim (d_model without GQA)
  RowVector<Scalar> db_q;  ///< 1 x d_model
  RowVector<Scalar> db_o;  ///< 1 x d_model
  RowVector<Scalar> db_k;  ///< 1 x kv_dim
  RowVector<Scalar> db_v;  ///< 1 x kv_dim
};

namespace detail {

template <typename Scalar, typename... Derived>
constexpr void static_check_backward_scalars() {
  static_assert((std::is_same_v<typename Derived::Scalar, Scalar> && ...),
                "attention::multi_head_attention_backward: inputs and d_out must have the layer's "
                "scalar type");
}

/// The backward of the cross-attention forward; grads.dx untouched. Checks d_out (L x d_model),
/// then everything the forward checks.
template <typename Scalar, typename Mask>
void multi_head_backward(const MultiHeadAttention<Scalar>& layer, ConstMatrixRef<Scalar> query,
                         ConstMatrixRef<Scalar> key, ConstMatrixRef<Scalar> value,
                         ConstMatrixRef<Scalar> d_out, const Mask& mask,
                         MultiHeadGradients<Scalar>& grads) {
  constexpr const char* func = "multi_head_attention_backward";
  require_equal(func, "d_out.rows()", d_out.rows(), "query.rows()", query.rows());
  require_equal(func, "d_out.cols()", d_out.cols(), "d_model", layer.d_model());
  // The forward's projections, split into heads and rotated, exactly as the forward has them.
  const auto plan = MultiHeadPlan<Scalar>::project(func, layer, layer, query, key, value, mask);
  const Index num_queries = query.rows(), num_keys = key.rows();
  const Index d_model = layer.d_model(), head_dim = layer.head_dim(), kv_dim = layer.kv_dim();

  // The heads' outputs and each head's log-sum-exp per query, as the forward computes them: the
  // tiled backward recomputes the weights from lse rather than holding them.
  Matrix<Scalar> heads(num_queries, d_model), lse(layer.num_heads(), num_queries);
  plan.attend(heads, mask, lse.data());
  // out = heads w_o + b_o: dW_o = headsᵀ dOut, db_o = colsum(dOut), dHeads = dOut w_oᵀ.
  grads.dw_o.noalias() = heads.transpose() * d_out;
  grads.db_o = d_out.colwise().sum();
  Matrix<Scalar> d_heads(num_queries, d_model);
  d_heads.noalias() = d_out * layer.w_o.transpose();

  // Each head's backward (scaled_dot_product.hpp, the tiled overload: O(L + S) memory) writes its
  // columns of dQ and adds its dK_h, dV_h to the columns of its K/V head, since K_g and V_g feed
  // every query head of the group: dK_g = sum_{h in g} dK_h. With ALiBi head h's mask is
  // `mask & alibi(m_h)`, a constant bias; with a soft-cap the attention backward differentiates it
  // (plan.options()).
  Matrix<Scalar> dq(num_queries, d_model);
  Matrix<Scalar> dk = Matrix<Scalar>::Zero(num_keys, kv_dim);
  Matrix<Scalar> dv = Matrix<Scalar>::Zero(num_keys, kv_dim);
  AttentionGradients<Scalar> head;  // storage reused by every head
  plan.for_each_head(mask, [&](Index h, const auto& head_mask) {
    const Index c = h * head_dim, g = plan.kv_column(h);
    scaled_dot_product_attention_backward(
        plan.q_head(h), plan.k_head(h), plan.v_head(h), heads.middleCols(c, head_dim), lse.row(h),
        d_heads.middleCols(c, head_dim), head, head_mask, plan.options());
    dq.middleCols(c, head_dim) = head.dq;
    dk.middleCols(g, head_dim) += head.dk;
    dv.middleCols(g, head_dim) += head.dv;
  });
  // RoPE: Q = R Q' with R orthogonal, so dQ' = R^T dQ; K likewise.
  plan.rotate_back(dq, dk);

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

/// Calls backward(g) with g = grads, or, if an input shares memory with grads, with new gradients
/// that are then moved into grads (which frees such an input's old storage).
template <typename Scalar, typename Backward, typename... In>
void into_gradients(MultiHeadGradients<Scalar>& grads, const Backward& backward,
                    const In&... inputs) {
  if (!overlaps_gradients(grads, inputs...)) {
    backward(grads);
    return;
  }
  MultiHeadGradients<Scalar> fresh;
  backward(fresh);
  grads = std::move(fresh);
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
/// new storage and moved into grads, which leaves such an input's old storage freed.
/// Memory: O((L + S) d_model); never an L x S matrix (except dbias of an attention::bias mask,
/// which each head's attention backward computes and this function does not return). For float
/// and double each head runs the tiled backward (kernels/flash_backward.hpp) from the forward's
/// per-head output and log-sum-exp; long double, and heads whose inputs are not all finite, take
/// the materialising path, whose rule holds: only pairs (i, j) with a non-zero weight take part,
/// so a NaN or inf in a key or value reaches only the gradients of the queries that see it.
/// \throws ShapeError as the forward does, or if d_out is not L x d_model.
template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV,
          typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void multi_head_attention_backward(const MultiHeadAttention<Scalar>& layer,
                                   const Eigen::MatrixBase<DerivedQ>& query,
                                   const Eigen::MatrixBase<DerivedK>& key,
                                   const Eigen::MatrixBase<DerivedV>& value,
                                   const Eigen::MatrixBase<DerivedDO>& d_out,
                                   MultiHeadGradients<Scalar>& grads, const Mask& mask_arg = {}) {
  detail::static_check_backward_scalars<Scalar, DerivedQ, DerivedK, DerivedV, DerivedDO>();
  const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  const ConstMatrixRef<Scalar> query_ref(query), key_ref(key), value_ref(value), d_out_ref(d_out);
  const auto backward = [&](MultiHeadGradients<Scalar>& g) {
    detail::multi_head_backward<Scalar>(layer, query_ref, key_ref, value_ref, d_out_ref, mask, g);
    g.dx.resize(0, 0);
  };
  detail::into_gradients(grads, backward, query_ref, key_ref, value_ref, d_out_ref);
}

/// Backward of MultiHeadAttention::forward(x, mask) (self-attention: query = key = value = x). As
/// the cross-attention overload, and grads.dx = d_query + d_key + d_value, since x feeds all three.
template <typename Scalar, typename DerivedX, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void multi_head_attention_backward(const MultiHeadAttention<Scalar>& layer,
                                   const Eigen::MatrixBase<DerivedX>& x,
                                   const Eigen::MatrixBase<DerivedDO>& d_out,
                                   MultiHeadGradients<Scalar>& grads, const Mask& mask_arg = {}) {
  detail::static_check_backward_scalars<Scalar, DerivedX, DerivedDO>();
  const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  const ConstMatrixRef<Scalar> x_ref(x), d_out_ref(d_out);    // expressions evaluated once
  const auto backward = [&](MultiHeadGradients<Scalar>& g) {
    detail::multi_head_backward<Scalar>(layer, x_ref, x_ref, x_ref, d_out_ref, mask, g);
    g.dx = g.d_query + g.d_key + g.d_value;
  };
  detail::into_gradients(grads, backward, x_ref, d_out_ref);
}

/// Cross-attention backward returning new gradients; see the overload above.
template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV,
          typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
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
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] MultiHeadGradients<Scalar> multi_head_attention_backward(
    const MultiHeadAttention<Scalar>& layer, const Eigen::MatrixBase<DerivedX>& x,
    const Eigen::MatrixBase<DerivedDO>& d_out, const Mask& mask = {}) {
  MultiHeadGradients<Scalar> grads;
  multi_head_attention_backward(layer, x, d_out, grads, mask);
  return grads;
}

}  // namespace attention
