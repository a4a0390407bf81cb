#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <type_traits>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/materializing.hpp"
#include "attention/detail/row_math.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/backward.hpp"
#include "attention/kernels/forward.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scratch.hpp"
#include "attention/softmax.hpp"
#include "attention/types.hpp"
#include "attention/workspace.hpp"

namespace attention {
namespace detail {

/// The checks every attention entry point makes: L = q.rows() queries and S = k.rows() keys, both
/// at least 1, of one width d_k = q.cols() = k.cols() >= 1; v has one row per key; the mask is L x
/// S.
template <typename Mask>
void check_attention_shapes(const char* func, Index q_rows, Index q_cols, Index k_rows,
                            Index k_cols, const Mask& mask) {
  require_positive(func, "q.rows() (number of queries)", q_rows);
  require_positive(func, "k.rows() (number of keys)", k_rows);
  require_positive(func, "q.cols() (d_k)", q_cols);
  require_equal(func, "k.cols()", k_cols, "q.cols()", q_cols);
  mask.check(func, q_rows, k_rows);
}

template <typename Mask>
void check_value_shapes(const char* func, Index k_rows, Index v_rows, Index v_cols) {
  require_equal(func, "v.rows()", v_rows, "k.rows()", k_rows);
  require_positive(func, "v.cols() (d_v)", v_cols);
}

/// The score pipeline's rules for a call (kernels/score_pipeline.hpp): options.scale (or
/// 1 / sqrt(d_k)) and options.softcap, checked and rounded to Scalar; messages name `func`.
template <typename Scalar>
kernels::ScoreRules<Scalar> resolve_rules(const char* func, const Options& options, Index d_k) {
  return {resolve_scale<Scalar>(func, options, d_k), resolve_softcap<Scalar>(func, options)};
}

template <typename DerivedQ, typename DerivedK, typename DerivedV>
constexpr void static_check_scalars() {
  static_assert(std::is_same_v<typename DerivedQ::Scalar, typename DerivedK::Scalar> &&
                    std::is_same_v<typename DerivedQ::Scalar, typename DerivedV::Scalar>,
                "attention: q, k and v must have the same scalar type (use .cast<T>() on one)");
  static_assert(std::is_floating_point_v<typename DerivedQ::Scalar>,
                "attention: the scalar type must be float, double or long double");
}

/// The body of every scaled_dot_product_attention* entry point: checks, then the tiled kernel for
/// float and double, the materialising path otherwise. lse and workspace may be null.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
void attention_with_lse(const char* func, const Eigen::MatrixBase<DerivedQ>& q,
                        const Eigen::MatrixBase<DerivedK>& k, const Eigen::MatrixBase<DerivedV>& v,
                        MatrixRef<typename DerivedQ::Scalar> out, typename DerivedQ::Scalar* lse,
                        const Mask& mask_arg, const Options& options,
                        AttentionWorkspace<typename DerivedQ::Scalar>* workspace = nullptr) {
  using Scalar = typename DerivedQ::Scalar;
  const auto& mask = checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  static_check_scalars<DerivedQ, DerivedK, DerivedV>();
  check_attention_shapes(func, q.rows(), q.cols(), k.rows(), k.cols(), mask);
  check_value_shapes<Mask>(func, k.rows(), v.rows(), v.cols());
  require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
  require_equal(func, "out.cols()", out.cols(), "v.cols()", v.cols());
  const auto rules = resolve_rules<Scalar>(func, options, q.cols());
  // Binding to ConstMatrixRef copies only inputs that are not row-major with contiguous rows (and
  // evaluates expressions), once; what remains in place may share memory with `out`.
  const ConstMatrixRef<Scalar> q_ref(q), k_ref(k), v_ref(v);
  if (may_overlap_any(out, q_ref, k_ref, v_ref)) {
    // `out` is (part of) an input, as in in-place self-attention x = attention(x, x, x): the
    // kernels write rows of out while later rows still read the inputs, so compute into a
    // temporary and copy.
    Matrix<Scalar> result(out.rows(), out.cols());
    attention_with_lse(func, q_ref, k_ref, v_ref, result, lse, mask, options, workspace);
    out = result;
    return;
  }
  if constexpr (kernels::supported<Scalar>) {
    // The tiled streaming kernel (kernels/forward.hpp): O(L + S) memory, never the L x S scores.
    if (workspace != nullptr) {
      kernels::attention<Scalar>(q_ref, k_ref, v_ref, out, lse, mask, rules, workspace->buffers());
    } else {
      kernels::CallWorkspace<Scalar> local;
      kernels::attention<Scalar>(q_ref, k_ref, v_ref, out, lse, mask, rules, local);
    }
  } else {
    materialized_attention<Scalar>(q_ref, k_ref, v_ref, out, mask, rules, lse);
  }
}

}  // namespace detail

/// Attention weights (the "attention pattern"), L x S:
///   A = softmax(scale * q k^T + mask),  scale = 1 / sqrt(d_k) unless options.scale is set
/// (with options.softcap, the scaled scores s become softcap * tanh(s / softcap) before the mask).
/// q: (L x d_k), k: (S x d_k), one token per row. Each row of A sums to 1, or is all 0 when the
/// mask hides every key from that query. Masked weights are exactly 0. Materialises all L x S
/// scores. `out` must be L x S; it may share memory with q or k (the weights are then computed
/// into a temporary and copied). \throws ShapeError on inconsistent or
/// zero sizes; std::invalid_argument for a non-finite scale or a softcap that is not positive and
/// finite.
template <typename DerivedQ, typename DerivedK, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void attention_weights(const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
                       MatrixRef<typename DerivedQ::Scalar> out, const Mask& mask_arg = {},
                       const Options& options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  const auto& mask = detail::checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  detail::static_check_scalars<DerivedQ, DerivedK, DerivedK>();
  constexpr const char* func = "attention_weights";
  detail::check_attention_shapes(func, q.rows(), q.cols(), k.rows(), k.cols(), mask);
  detail::require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
  detail::require_equal(func, "out.cols()", out.cols(), "k.rows()", k.rows());
  const auto rules = detail::resolve_rules<Scalar>(func, options, q.cols());
  const ConstMatrixRef<Scalar> q_ref(q), k_ref(k);  // expressions evaluated once
  if (detail::may_overlap_any(out, q_ref, k_ref)) {
    // out is (part of) q or k: the product would overwrite its own operands.
    Matrix<Scalar> weights(out.rows(), out.cols());
    detail::query_key_scores<Scalar>(q_ref, k_ref, weights, rules);
    detail::scores_to_weights<Scalar>(weights, rules, mask);
    out = weights;
    return;
  }
  detail::query_key_scores<Scalar>(q_ref, k_ref, out, rules);
  detail::scores_to_weights<Scalar>(out, rules, mask);
}

/// Attention weights returned as a new L x S row-major matrix; see the overload above.
template <typename DerivedQ, typename DerivedK, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> attention_weights(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Mask& mask = {}, const Options& options = {}) {
  Matrix<typename DerivedQ::Scalar> out(q.rows(), k.rows());
  attention_weights(q, k, out, mask, options);
  return out;
}

/// Scaled dot-product attention (Vaswani et al., 2017, eq. 1):
///   out = softmax(scale * q k^T + mask) v,  scale = 1 / sqrt(d_k) unless options.scale is set.
/// With options.softcap (Gemma 2), each scaled score s becomes softcap * tanh(s / softcap) before
/// the mask: out = softmax(softcap * tanh(scale * q k^T / softcap) + mask) v.
/// q: (L x d_k), k: (S x d_k), v: (S x d_v), out: (L x d_v), one token per row; any Eigen dense
/// expression, row- or column-major. Query i attends to the keys the mask leaves visible; a query
/// with no visible key gets an output row of zeros.
///
/// Non-finite inputs follow IEEE arithmetic, but masked keys stay out of it: a NaN or inf in row i
/// of q affects only row i of the output (NaN, or 0 when it sends every score of the row to -inf);
/// a NaN or inf in row j of k reaches every query that can see key j (and no other); one in row j
/// of v reaches every query that gives key j a non-zero weight (and no other: a weight of exactly
/// 0 contributes nothing, not 0 * NaN).
/// `out` may share memory with q, k or v: in-place self-attention
/// `scaled_dot_product_attention(x, x, x, x)` works, computing into a temporary L x d_v matrix
/// that is then copied (found by comparing address ranges, O(1); calls without overlap pay
/// nothing).
/// \throws ShapeError on inconsistent or zero sizes; std::invalid_argument for a non-finite scale
/// or a softcap that is not positive and finite.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention(const Eigen::MatrixBase<DerivedQ>& q,
                                  const Eigen::MatrixBase<DerivedK>& k,
                                  const Eigen::MatrixBase<DerivedV>& v,
                                  MatrixRef<typename DerivedQ::Scalar> out, const Mask& mask = {},
                                  const Options& options = {}) {
  detail::attention_with_lse("scaled_dot_product_attention", q, k, v, out, nullptr, mask, options);
}

/// Scaled dot-product attention using caller-owned scratch memory: for float and double, once
/// `workspace` has served a call of these sizes, further calls allocate nothing on the heap (given
/// row-major inputs with contiguous rows, which need no copy, and an `out` that shares no memory
/// with them). long double takes the materialising path, which allocates its L x S weights on
/// every call. Otherwise as the overload above.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention(const Eigen::MatrixBase<DerivedQ>& q,
                                  const Eigen::MatrixBase<DerivedK>& k,
                                  const Eigen::MatrixBase<DerivedV>& v,
                                  MatrixRef<typename DerivedQ::Scalar> out,
                                  AttentionWorkspace<typename DerivedQ::Scalar>& workspace,
                                  const Mask& mask = {}, const Options& options = {}) {
  detail::attention_with_lse("scaled_dot_product_attention", q, k, v, out, nullptr, mask, options,
                             &workspace);
}

/// Scaled dot-product attention returned as a new L x d_v row-major matrix; see the overload above.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> scaled_dot_product_attention(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Mask& mask = {}, const Options& options = {}) {
  Matrix<typename DerivedQ::Scalar> out(q.rows(), v.cols());
  scaled_dot_product_attention(q, k, v, out, mask, options);
  return out;
}

// --- Backward ---------------------------------------------------------------------------------

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
    if (lse_valid && detail::all_finite(q_ref) && detail::all_finite(k_ref) &&
        detail::all_finite(v_ref) && detail::all_finite(out_ref) && detail::all_finite(d_out_ref)) {
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
      const Scalar value_scale = detail::overflow_rescale(
          detail::max_abs_of(d_out_ref),
          std::max(detail::max_abs_of(v_ref), detail::max_abs_of(out_ref)), Index{2} * v.cols());
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
