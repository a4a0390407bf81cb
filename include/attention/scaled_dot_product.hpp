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
#include "attention/kernels/forward.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/low_precision.hpp"
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

/// True for the scalar types the forward entry points accept (low_precision.hpp): one of float,
/// double and long double for q, k and v; or k and v one of float, Eigen::bfloat16 and
/// Eigen::half, with q float or that same type. Otherwise a static_assert says so.
template <typename DerivedQ, typename DerivedK, typename DerivedV>
constexpr bool static_check_forward_scalars() {
  using Q = typename DerivedQ::Scalar;
  using K = typename DerivedK::Scalar;
  using V = typename DerivedV::Scalar;
  constexpr bool one_type = std::is_same_v<Q, K> && std::is_same_v<Q, V>;
  constexpr bool allowed =
      (one_type && std::is_floating_point_v<Q>) ||
      (std::is_same_v<K, V> && is_low_precision_v<K> && (std::is_same_v<Q, float> || one_type));
  static_assert(allowed,
                "attention: q, k and v must have one scalar type among float, double and long "
                "double; or k and v one of float, Eigen::bfloat16 and Eigen::half, with q float or "
                "that same type (computed in float). Convert the others with .cast<T>()");
  return allowed;
}

/// body(buffers) with the caller's workspace buffers, or, for a call given none, with the calling
/// thread's kept CallWorkspace (scratch.hpp: reused from call to call, freed by
/// attention::release_scratch()). A local workspace made afresh cost each call the first touch of
/// every page of its packed panels (glibc hands the freed heap back and takes it again): 20 % of a
/// call at N = 256, d = 128.
template <typename Scalar, typename Body>
void with_call_workspace(kernels::CallWorkspace<Scalar>* buffers, Body&& body) {
  body(buffers != nullptr ? *buffers : thread_scratch_object<kernels::CallWorkspace<Scalar>>());
}

/// The tiled kernel for float and double, the materialising path otherwise, after the checks;
/// lse and buffers may be null.
template <typename Scalar, typename Mask>
void attention_in(const ConstMatrixRef<Scalar>& q, const ConstMatrixRef<Scalar>& k,
                  const ConstMatrixRef<Scalar>& v, MatrixRef<Scalar> out, Scalar* lse,
                  const Mask& mask, const kernels::ScoreRules<Scalar>& rules,
                  kernels::CallWorkspace<Scalar>* buffers) {
  if (may_overlap_any(out, q, k, v)) {
    // `out` is (part of) an input, as in in-place self-attention x = attention(x, x, x): the
    // kernels write rows of out while later rows still read the inputs, so compute into a
    // temporary and copy.
    Matrix<Scalar> result(out.rows(), out.cols());
    attention_in<Scalar>(q, k, v, result, lse, mask, rules, buffers);
    out = result;
    return;
  }
  if constexpr (kernels::supported<Scalar>) {
    // The tiled streaming kernel (kernels/forward.hpp): O(L + S) memory, never the L x S scores.
    with_call_workspace(buffers, [&](kernels::CallWorkspace<Scalar>& scratch) {
      kernels::attention<Scalar>(q, k, v, out, lse, mask, rules, scratch);
    });
  } else {
    materialized_attention<Scalar>(q, k, v, out, mask, rules, lse);
  }
}

/// The body of every scaled_dot_product_attention* entry point: checks, then attention_in in the
/// inputs' type, or in float for bfloat16 and half inputs (converted once, the result rounded
/// once: low_precision.hpp). lse and workspace may be null.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
void attention_with_lse(const char* func, const Eigen::MatrixBase<DerivedQ>& q,
                        const Eigen::MatrixBase<DerivedK>& k, const Eigen::MatrixBase<DerivedV>& v,
                        MatrixRef<typename DerivedQ::Scalar> out,
                        compute_type_t<typename DerivedQ::Scalar>* lse, const Mask& mask_arg,
                        const Options& options,
                        AttentionWorkspace<typename DerivedQ::Scalar>* workspace = nullptr) {
  if constexpr (static_check_forward_scalars<DerivedQ, DerivedK, DerivedV>()) {
    using Compute = compute_type_t<typename DerivedK::Scalar>;  // float for low-precision k, v
    const auto& mask = checked_mask<Compute>(mask_arg);         // static_asserts the mask protocol
    check_attention_shapes(func, q.rows(), q.cols(), k.rows(), k.cols(), mask);
    check_value_shapes<Mask>(func, k.rows(), v.rows(), v.cols());
    require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
    require_equal(func, "out.cols()", out.cols(), "v.cols()", v.cols());
    const auto rules = resolve_rules<Compute>(func, options, q.cols());
    kernels::CallWorkspace<Compute>* buffers =
        workspace != nullptr ? &workspace->buffers() : nullptr;
    if constexpr (is_low_precision_v<typename DerivedK::Scalar>) {
      // bfloat16 or half k and v straight into the tiles, widened in registers as they are packed
      // (low_precision.hpp), or all-bfloat16 calls into the vdpbf16ps kernel
      // (kernels/bf16_forward.hpp); the decode path's sizes take the float copies below.
      if (!kernels::use_decode_path(q.rows(), k.rows())) {
        using QScalar = typename DerivedQ::Scalar;
        const ConstMatrixRef<QScalar> q_ref(q);
        const ConstMatrixRef<typename DerivedK::Scalar> k_ref(k), v_ref(v);
        const auto run = [&](MatrixRef<QScalar> target) {
          with_call_workspace(buffers, [&](kernels::CallWorkspace<Compute>& scratch) {
            kernels::attention<Compute>(q_ref, k_ref, v_ref, target, lse, mask, rules, scratch);
          });
        };
        if (may_overlap_any(out, q_ref, k_ref, v_ref)) {
          // In-place self-attention: the kernels write rows of out while later rows still read
          // the inputs, so compute into a temporary (the same kernel, the same numbers) and copy.
          Matrix<QScalar> result(out.rows(), out.cols());
          run(result);
          out = result;
        } else {
          run(out);
        }
        return;
      }
    }
    // Binding to ConstMatrixRef copies only inputs that are not row-major with contiguous rows (and
    // evaluates expressions), once; what remains in place may share memory with `out`.
    in_compute_type(q, k, v, out, workspace != nullptr ? &workspace->staging() : nullptr,
                    [&](const auto& q_c, const auto& k_c, const auto& v_c, auto out_c) {
                      attention_in<Compute>(q_c, k_c, v_c, out_c, lse, mask, rules, buffers);
                    });
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

}  // namespace attention

// The backward entry points (scaled_dot_product_backward.hpp) come with the forward, so code that
// includes this header for both keeps compiling.
#include "attention/scaled_dot_product_backward.hpp"
