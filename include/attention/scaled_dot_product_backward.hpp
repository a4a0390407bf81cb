#pragma once
// SPDX-License-Identifier: MIT
// Backward of scaled dot-product attention: the gradients of a loss with respect to q, k, v (and a
// bias mask's matrix), from the inputs alone (materialising) or from the forward's saved output and
// log-sum-exp (tiled, O(L + S) memory). The forward and the checks both share are in
// scaled_dot_product.hpp, which includes this header at its end.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/materializing.hpp"
#include "attention/detail/row_math.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/backward.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

namespace attention {

/// Gradients of a loss with respect to the inputs of scaled_dot_product_attention, as returned by
/// scaled_dot_product_attention_backward.
template <typename Scalar>
struct AttentionGradients {
  Matrix<Scalar> dq;     ///< L x d_k
  Matrix<Scalar> dk;     ///< S x d_k
  Matrix<Scalar> dv;     ///< S x d_v
  Matrix<Scalar> dbias;  ///< L x S with an attention::bias mask (its matrix's gradient), else empty
};

namespace detail {

template <typename Mask>
struct is_bias_mask : std::false_type {};
template <typename Scalar>
struct is_bias_mask<BiasMask<Scalar>> : std::true_type {};
/// A combination holds a bias if either part does; biases add, so dS is each one's gradient.
template <typename A, typename B>
struct is_bias_mask<BothMasks<A, B>>
    : std::bool_constant<is_bias_mask<A>::value || is_bias_mask<B>::value> {};

/// True if an input (bound to storage) shares memory with any gradient in `grads`, which the
/// backward resizes and overwrites while it still reads the inputs.
template <typename Scalar, typename... In>
bool overlaps_gradients(const AttentionGradients<Scalar>& grads, const In&... inputs) {
  return may_overlap_any(grads.dq, inputs...) || may_overlap_any(grads.dk, inputs...) ||
         may_overlap_any(grads.dv, inputs...) || may_overlap_any(grads.dbias, inputs...);
}

/// The checks both backward entry points start with: q, k, v as the forward's (scalar types,
/// shapes, mask), then d_out is L x d_v.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedDO,
          typename Mask>
void check_backward_inputs(const char* func, const Eigen::MatrixBase<DerivedQ>& q,
                           const Eigen::MatrixBase<DerivedK>& k,
                           const Eigen::MatrixBase<DerivedV>& v,
                           const Eigen::MatrixBase<DerivedDO>& d_out, const Mask& mask) {
  static_check_scalars<DerivedQ, DerivedK, DerivedV>();
  static_assert(std::is_same_v<typename DerivedQ::Scalar, typename DerivedDO::Scalar>,
                "attention: d_out must have the scalar type of q, k and v");
  check_attention_shapes(func, q.rows(), q.cols(), k.rows(), k.cols(), mask);
  check_value_shapes<Mask>(func, k.rows(), v.rows(), v.cols());
  require_equal(func, "d_out.rows()", d_out.rows(), "q.rows()", q.rows());
  require_equal(func, "d_out.cols()", d_out.cols(), "v.cols()", v.cols());
}

}  // namespace detail

/// Backward of scaled_dot_product_attention (materialising: holds the L x S weights and their
/// gradient). Given the inputs of the forward call
///   out = softmax(scale * q k^T + mask) v        (P = softmax(S), S = scale * q k^T + mask)
/// and the gradient d_out = dL/d(out) of a loss L, overwrites `grads` with
///   dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ (dP − rowsum(dP ∘ P)),
///   dQ = scale · dS K,   dK = scale · dSᵀ Q,   dBias = dS   (attention::bias masks only; in a
///   combination `a & bias(m)` or `bias(m1) & bias(m2)` the biases add, so dS is each one's
///   gradient)
/// With options.softcap (S = softcap * tanh(s / softcap) + mask, s = scale * q k^T), dQ and dK use
/// dS ∘ (1 − tanh²(s / softcap)) in place of dS; dBias stays dS.
/// (as llm.c's attention_backward; P is recomputed from q and k, nothing is saved by the forward).
/// This path holds two L x S matrices; for long sequences, save the forward's output and
/// log-sum-exp (scaled_dot_product_attention_lse) and use the tiled overload further down.
/// q: (L x d_k), k: (S x d_k), v: (S x d_v), d_out: (L x d_v); grads.dq, dk, dv get the shapes of
/// q, k, v, and grads.dbias is L x S with a bias mask, 0 x 0 otherwise. Storage already of the
/// right size is reused. Masked weights get zero gradient: a query that sees no key gets dq = 0
/// (not NaN), and a key seen by no query gets dk = dv = 0; dbias is 0 wherever the bias is -inf.
/// Same masks, options and scale as the forward, and the same rule for non-finite inputs: only
/// pairs (i, j) with a non-zero weight take part, so a NaN or inf in a key or value row reaches
/// only the gradients of queries that give that key a non-zero weight (and that key's own).
/// Column-major inputs are copied once.
/// \throws ShapeError on the forward's shape errors or if d_out is not L x d_v;
/// std::invalid_argument for a non-finite scale.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedDO,
          typename Mask = NoMask, std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention_backward(const Eigen::MatrixBase<DerivedQ>& q,
                                           const Eigen::MatrixBase<DerivedK>& k,
                                           const Eigen::MatrixBase<DerivedV>& v,
                                           const Eigen::MatrixBase<DerivedDO>& d_out,
                                           AttentionGradients<typename DerivedQ::Scalar>& grads,
                                           const Mask& mask_arg = {}, const Options& options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  constexpr const char* func = "scaled_dot_product_attention_backward";
  detail::check_backward_inputs(func, q, k, v, d_out, mask);
  const auto rules = detail::resolve_rules<Scalar>(func, options, q.cols());
  const ConstMatrixRef<Scalar> q_ref(q), k_ref(k), v_ref(v), d_out_ref(d_out);
  if (detail::overlaps_gradients(grads, q_ref, k_ref, v_ref, d_out_ref)) {
    // An input lives in grads (say grads.dq from an earlier call passed as q): compute into new
    // gradients, then hand them over.
    AttentionGradients<Scalar> fresh;
    scaled_dot_product_attention_backward(q_ref, k_ref, v_ref, d_out_ref, fresh, mask, options);
    grads = std::move(fresh);
    return;
  }
  grads.dq.resize(q.rows(), q.cols());
  grads.dk.resize(k.rows(), k.cols());
  grads.dv.resize(v.rows(), v.cols());
  Matrix<Scalar> p;
  if constexpr (detail::is_bias_mask<Mask>::value) {
    // dS is the bias gradient: the mask's matrix is added to S as it is.
    detail::attention_backward_materialized<Scalar>(q_ref, k_ref, v_ref, d_out_ref, mask, rules,
                                                    grads.dq, grads.dk, grads.dv, p, grads.dbias);
  } else {
    Matrix<Scalar> ds;
    detail::attention_backward_materialized<Scalar>(q_ref, k_ref, v_ref, d_out_ref, mask, rules,
                                                    grads.dq, grads.dk, grads.dv, p, ds);
    grads.dbias.resize(0, 0);
  }
}

/// Backward of scaled_dot_product_attention returning new gradients; see the overload above.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedDO,
          typename Mask = NoMask, std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] AttentionGradients<typename DerivedQ::Scalar> scaled_dot_product_attention_backward(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Eigen::MatrixBase<DerivedDO>& d_out,
    const Mask& mask = {}, const Options& options = {}) {
  AttentionGradients<typename DerivedQ::Scalar> grads;
  scaled_dot_product_attention_backward(q, k, v, d_out, grads, mask, options);
  return grads;
}

/// Backward of scaled_dot_product_attention from the forward's saved results: `out` (L x d_v) and
/// `lse` (L, each row's log-sum-exp of the scaled, masked scores), as
/// scaled_dot_product_attention_lse (partial.hpp) returns them for the same q, k, v, mask and
/// options:
///   auto forward = attention::scaled_dot_product_attention_lse(q, k, v, attention::causal);
///   auto grads = attention::scaled_dot_product_attention_backward(q, k, v, forward.output,
///                                                                 forward.lse, d_out,
///                                                                 attention::causal);
/// Same formulas and results as the overloads above (up to rounding), but for float and double the
/// tiled kernel (kernels/backward.hpp) recomputes P = exp(scale * q k^T + mask − lse) one
/// tile at a time and uses rowsum(dP ∘ P) = rowsum(dO ∘ O): it never holds the L x S matrices,
/// needs O(L + S) memory (plus dbias with a bias mask), skips tiles the mask hides, and gives
/// bitwise identical results for any number of threads. long double, and inputs that are not all
/// finite, take the materialising path. `out` and `lse` must belong to these inputs; they are not
/// checked beyond their shapes.
/// \throws ShapeError as the overloads above, or if out is not L x d_v or lse does not have L
/// entries; std::invalid_argument for a non-finite scale.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedO,
          typename DerivedLse, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention_backward(const Eigen::MatrixBase<DerivedQ>& q,
                                           const Eigen::MatrixBase<DerivedK>& k,
                                           const Eigen::MatrixBase<DerivedV>& v,
                                           const Eigen::MatrixBase<DerivedO>& out,
                                           const Eigen::MatrixBase<DerivedLse>& lse,
                                           const Eigen::MatrixBase<DerivedDO>& d_out,
                                           AttentionGradients<typename DerivedQ::Scalar>& grads,
                                           const Mask& mask_arg = {}, const Options& options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  static_assert(std::is_same_v<Scalar, typename DerivedO::Scalar> &&
                    std::is_same_v<Scalar, typename DerivedLse::Scalar>,
                "attention: out, lse and d_out must have the scalar type of q, k and v");
  constexpr const char* func = "scaled_dot_product_attention_backward";
  detail::check_backward_inputs(func, q, k, v, d_out, mask);
  detail::require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
  detail::require_equal(func, "out.cols()", out.cols(), "v.cols()", v.cols());
  detail::require_equal(func, "lse.size()", lse.size(), "q.rows()", q.rows());
  const auto rules = detail::resolve_rules<Scalar>(func, options, q.cols());
  if constexpr (detail::kernels::supported<Scalar>) {
    const ConstMatrixRef<Scalar> q_ref(q), k_ref(k), v_ref(v), out_ref(out), d_out_ref(d_out);
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> lse_column = lse.reshaped();
    if (detail::overlaps_gradients(grads, q_ref, k_ref, v_ref, out_ref, d_out_ref)) {
      // As the overload above: an input lives in grads, so compute into new gradients.
      AttentionGradients<Scalar> fresh;
      scaled_dot_product_attention_backward(q_ref, k_ref, v_ref, out_ref, lse_column, d_out_ref,
                                            fresh, mask, options);
      grads = std::move(fresh);
      return;
    }
    const bool lse_valid = (lse_column.array() < std::numeric_limits<Scalar>::infinity()).all();
    // max |x| is NaN or inf exactly when x is not all finite (max_abs_of propagates NaN), so the
    // three maxima the overflow guard below needs also stand for three finiteness passes.
    const Scalar max_d_out = detail::max_abs_of(d_out_ref), max_v = detail::max_abs_of(v_ref),
                 max_out = detail::max_abs_of(out_ref);
    if (lse_valid && detail::all_finite(q_ref) && detail::all_finite(k_ref) &&
        std::isfinite(max_d_out) && std::isfinite(max_v) && std::isfinite(max_out)) {
      grads.dq.resize(q.rows(), q.cols());
      grads.dk.resize(k.rows(), k.cols());
      grads.dv.resize(v.rows(), v.cols());
      Scalar* dbias = nullptr;
      if constexpr (detail::is_bias_mask<Mask>::value) {
        grads.dbias.setZero(q.rows(), k.rows());  // tiles the mask hides are skipped
        dbias = grads.dbias.data();
      } else {
        grads.dbias.resize(0, 0);
      }
      // The padded copies and partial sums (some 26 MiB at N = 4096, d = 128) are kept for the
      // thread's next call (scratch.hpp).
      auto& workspace = detail::thread_scratch_object<detail::kernels::BackwardWorkspace<Scalar>>();
      // As in the materialising backward: dP = dO V^T and rowsum(dO ∘ O) may overflow where dS
      // does not; then V and O are scaled by a power of two and dS's products scaled back.
      const Scalar value_scale =
          detail::overflow_rescale(max_d_out, std::max(max_v, max_out), Index{2} * v.cols());
      const bool rescaled = value_scale != Scalar(1);
      const Matrix<Scalar> v_scaled =
          rescaled ? Matrix<Scalar>(v_ref * value_scale) : Matrix<Scalar>();
      const Matrix<Scalar> out_scaled =
          rescaled ? Matrix<Scalar>(out_ref * value_scale) : Matrix<Scalar>();
      detail::kernels::attention_backward<Scalar>(
          q_ref, k_ref, rescaled ? ConstMatrixRef<Scalar>(v_scaled) : v_ref,
          rescaled ? ConstMatrixRef<Scalar>(out_scaled) : out_ref, lse_column.data(), d_out_ref,
          mask, rules, grads.dq, grads.dk, grads.dv, dbias, grads.dbias.outerStride(), workspace);
      if (rescaled) {
        const Scalar back = Scalar(1) / value_scale;
        grads.dq *= back;
        grads.dk *= back;
        if (dbias != nullptr) grads.dbias *= back;
      }
      return;
    }
    scaled_dot_product_attention_backward(q_ref, k_ref, v_ref, d_out_ref, grads, mask, options);
    return;
  }
  scaled_dot_product_attention_backward(q, k, v, d_out, grads, mask, options);
}

/// Backward from the forward's saved results, returning new gradients; see the overload above.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedO,
          typename DerivedLse, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] AttentionGradients<typename DerivedQ::Scalar> scaled_dot_product_attention_backward(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Eigen::MatrixBase<DerivedO>& out,
    const Eigen::MatrixBase<DerivedLse>& lse, const Eigen::MatrixBase<DerivedDO>& d_out,
    const Mask& mask = {}, const Options& options = {}) {
  AttentionGradients<typename DerivedQ::Scalar> grads;
  scaled_dot_product_attention_backward(q, k, v, out, lse, d_out, grads, mask, options);
  return grads;
}

}  // namespace attention
