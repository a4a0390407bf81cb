#pragma once
// SPDX-License-Identifier: MIT
//
// Scaled dot-product attention of several heads in one call, the heads packed side by side in the
// columns (the layout of a projected layer or of a KVCache): query head h is the block of head_dim
// columns q.middleCols(h * head_dim, head_dim), its output out.middleCols(h * d_v, d_v), and it
// reads key/value head g = h / (num_heads / num_kv_heads) of k and v (grouped-query attention,
// Ainslie et al., 2023; num_kv_heads = 1 is multi-query attention, Shazeer, 2019):
//
//   RowMatrixXf out = attention::scaled_dot_product_attention(q, k, v, attention::Heads{32, 8});
//   attention::scaled_dot_product_attention(q, k, v, attention::Heads{32, 8}, out, workspace);
//
// The Heads argument always follows v: it says how q, k and v are laid out.
//
// One call runs every head in one parallel region, packs each K/V head once for all the query
// heads that share it (not once per query head), and for a decoder's step (a few queries against
// many cached keys) reads the cache once in address order.

#include <Eigen/Core>
#include <type_traits>
#include <vector>

#include "attention/detail/aliasing.hpp"
#include "attention/errors.hpp"
#include "attention/kernels/bf16_forward.hpp"
#include "attention/low_precision.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"
#include "attention/workspace.hpp"

namespace attention {

/// How many heads are packed in the columns of q (num_heads) and of k and v (num_kv_heads). Query
/// heads per K/V head: num_heads / num_kv_heads, which must be a whole number.
struct Heads {
  Index num_heads;     ///< query heads, packed side by side in q's (and out's) columns
  Index num_kv_heads;  ///< key/value heads, packed side by side in k's and v's columns

  /// num_heads query heads sharing num_kv_heads key/value heads (grouped-query attention).
  Heads(Index num_heads, Index num_kv_heads) : num_heads(num_heads), num_kv_heads(num_kv_heads) {}
  /// Multi-head attention: as many key/value heads as query heads.
  explicit Heads(Index num_heads) : Heads(num_heads, num_heads) {}
};

namespace detail {

/// Checks the heads against q's q_cols columns for `func`'s messages: num_heads >= 1, num_kv_heads
/// divides num_heads, num_heads divides q_cols >= 1. Returns head_dim = q_cols / num_heads.
/// \throws ShapeError naming the numbers otherwise.
inline Index checked_head_dim(const char* func, const Heads& heads, Index q_cols) {
  require_positive(func, "heads.num_heads", heads.num_heads);
  require_divides(func, "heads.num_kv_heads", heads.num_kv_heads, "heads.num_heads",
                  heads.num_heads);
  require_divides(func, "heads.num_heads", heads.num_heads, "q.cols()", q_cols);
  require_positive(func, "q.cols() (num_heads * head_dim)", q_cols);
  return q_cols / heads.num_heads;
}

/// The packed heads in one scalar type (float, double, long double): checks, then one kernel call
/// for all the heads (float, double), or one materialising call per head (long double). buffers
/// may be null.
/// q and out may be of QElement and k and v of KVElement: Eigen::bfloat16 for all three with a
/// Scalar of float, for the vdpbf16ps kernel (kernels/bf16_forward.hpp). (They are named, never
/// deduced: std::remove_cv_t<T> is a non-deduced context, so that callers may pass maps and views
/// that convert to the Refs.)
template <typename Scalar, typename Mask, typename QElement = Scalar, typename KVElement = Scalar>
void packed_heads_in(const ConstMatrixRef<std::remove_cv_t<QElement>>& q,
                     const ConstMatrixRef<std::remove_cv_t<KVElement>>& k,
                     const ConstMatrixRef<std::remove_cv_t<KVElement>>& v,
                     MatrixRef<std::remove_cv_t<QElement>> out, const Heads& heads,
                     const Mask& mask_arg, const Options& options,
                     kernels::CallWorkspace<Scalar>* workspace_buffers) {
  const auto& mask = checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  constexpr const char* func = "scaled_dot_product_attention";
  const Index head_dim = checked_head_dim(func, heads, q.cols());
  require_equal(func, "k.cols()", k.cols(), "heads.num_kv_heads * head_dim",
                heads.num_kv_heads * head_dim);
  require_positive(func, "q.rows() (number of queries)", q.rows());
  require_positive(func, "k.rows() (number of keys)", k.rows());
  require_equal(func, "v.rows()", v.rows(), "k.rows()", k.rows());
  require_divides(func, "heads.num_kv_heads", heads.num_kv_heads, "v.cols()", v.cols());
  require_positive(func, "v.cols() (num_kv_heads * d_v)", v.cols());
  const Index d_v = v.cols() / heads.num_kv_heads;
  require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
  require_equal(func, "out.cols()", out.cols(), "heads.num_heads * d_v", heads.num_heads * d_v);
  mask.check(func, q.rows(), k.rows());
  const auto rules = resolve_rules<Scalar>(func, options, head_dim);
  const Index group = heads.num_heads / heads.num_kv_heads;
  if (may_overlap_any(out, q, k, v)) {
    // `out` shares memory with an input (in-place self-attention): compute into a temporary, as
    // scaled_dot_product_attention does.
    Matrix<QElement> result(out.rows(), out.cols());
    packed_heads_in<Scalar, Mask, QElement, KVElement>(q, k, v, result, heads, mask, options,
                                                       workspace_buffers);
    out = result;
    return;
  }
  if constexpr (kernels::supported<Scalar>) {
    with_call_workspace(workspace_buffers, [&](kernels::CallWorkspace<Scalar>& buffers) {
      auto& operands = buffers.template heads_of<QElement, KVElement>();
      operands.clear();
      for (Index h = 0; h < heads.num_heads; ++h) {
        const Index g = h / group;
        operands.push_back({q.data() + h * head_dim, q.outerStride(), k.data() + g * head_dim,
                            k.outerStride(), v.data() + g * d_v, v.outerStride(),
                            out.data() + h * d_v, out.outerStride(), nullptr});
      }
      kernels::multi_head_attention(operands.data(), heads.num_heads, q.rows(), k.rows(), head_dim,
                                    d_v, rules, mask, buffers, group);
    });
  } else {
    for (Index h = 0; h < heads.num_heads; ++h) {
      const Index g = h / group;
      materialized_attention<Scalar>(
          q.middleCols(h * head_dim, head_dim), k.middleCols(g * head_dim, head_dim),
          v.middleCols(g * d_v, d_v), out.middleCols(h * d_v, d_v), mask, rules);
    }
  }
}

/// The body of the packed-heads entry points: packed_heads_in in the inputs' type, or in float for
/// bfloat16 and half inputs (low_precision.hpp). Inputs are bound once: a column-major or
/// expression argument is copied here, not once per head. workspace may be null.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
void packed_heads_attention(const Eigen::MatrixBase<DerivedQ>& q,
                            const Eigen::MatrixBase<DerivedK>& k,
                            const Eigen::MatrixBase<DerivedV>& v,
                            MatrixRef<typename DerivedQ::Scalar> out, const Heads& heads,
                            const Mask& mask, const Options& options,
                            AttentionWorkspace<typename DerivedQ::Scalar>* workspace) {
  if constexpr (static_check_forward_scalars<DerivedQ, DerivedK, DerivedV>()) {
    using Compute = compute_type_t<typename DerivedK::Scalar>;
    kernels::CallWorkspace<Compute>* buffers =
        workspace != nullptr ? &workspace->buffers() : nullptr;
    using QScalar = typename DerivedQ::Scalar;
    if constexpr (std::is_same_v<QScalar, Eigen::bfloat16> &&
                  std::is_same_v<typename DerivedK::Scalar, Eigen::bfloat16>) {
      // All-bfloat16 heads go to the vdpbf16ps kernel in place where it runs, as single heads
      // do (scaled_dot_product.hpp), so that each head's result is the per-head call's.
      if (kernels::bf16_path_available() && !kernels::use_decode_path(q.rows(), k.rows())) {
        const ConstMatrixRef<QScalar> q_ref(q), k_ref(k), v_ref(v);
        packed_heads_in<Compute, Mask, QScalar, QScalar>(q_ref, k_ref, v_ref, out, heads, mask,
                                                         options, buffers);
        return;
      }
    }
    in_compute_type(q, k, v, out, workspace != nullptr ? &workspace->staging() : nullptr,
                    [&](const auto& q_c, const auto& k_c, const auto& v_c, auto out_c) {
                      packed_heads_in<Compute>(q_c, k_c, v_c, out_c, heads, mask, options, buffers);
                    });
  }
}

}  // namespace detail

/// Scaled dot-product attention of heads.num_heads query heads packed side by side (top of this
/// header), each as scaled_dot_product_attention(q_h, k_g, v_g, mask, options) would compute it:
///   out_h = softmax(scale * q_h k_g^T + mask) v_g,   g = h / (num_heads / num_kv_heads),
///   scale = 1 / sqrt(head_dim) unless options.scale is set,
/// with q: L x (num_heads * head_dim), k: S x (num_kv_heads * head_dim), v: S x (num_kv_heads *
/// d_v), out: L x (num_heads * d_v). The mask (L x S) applies to every head. Each head's result is
/// the per-head call's, bitwise for float and double, which are also bitwise identical for any
/// number of threads. Inputs may be views (a KVCache's keys() and values()) or column-major
/// (copied once). `out` may share memory with q, k or v (in-place self-attention): the result is
/// then computed into a temporary and copied.
/// \throws ShapeError unless num_heads >= 1, num_kv_heads divides num_heads, num_heads divides
/// q.cols(), k.cols() = num_kv_heads * head_dim, num_kv_heads divides v.cols(), v has one row per
/// key, out is L x (num_heads * d_v), and the mask fits (messages name the numbers);
/// std::invalid_argument for a non-finite scale or a softcap that is not positive and finite.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention(const Eigen::MatrixBase<DerivedQ>& q,
                                  const Eigen::MatrixBase<DerivedK>& k,
                                  const Eigen::MatrixBase<DerivedV>& v, const Heads& heads,
                                  MatrixRef<typename DerivedQ::Scalar> out, const Mask& mask = {},
                                  const Options& options = {}) {
  detail::packed_heads_attention(q, k, v, out, heads, mask, options, nullptr);
}

/// As above, with caller-owned scratch memory (as scaled_dot_product_attention(q, k, v, out,
/// workspace, mask, options)): once `workspace` has served a call of these sizes, further calls
/// allocate nothing on the heap for float and double (given row-major inputs with contiguous rows,
/// which need no copy), so a decoder's step can reuse it token after token.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
void scaled_dot_product_attention(const Eigen::MatrixBase<DerivedQ>& q,
                                  const Eigen::MatrixBase<DerivedK>& k,
                                  const Eigen::MatrixBase<DerivedV>& v, const Heads& heads,
                                  MatrixRef<typename DerivedQ::Scalar> out,
                                  AttentionWorkspace<typename DerivedQ::Scalar>& workspace,
                                  const Mask& mask = {}, const Options& options = {}) {
  detail::packed_heads_attention(q, k, v, out, heads, mask, options, &workspace);
}

/// Packed heads returned as a new L x (num_heads * d_v) row-major matrix; see the overload above.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<detail::is_mask_argument_v<Mask>, int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> scaled_dot_product_attention(
    const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
    const Eigen::MatrixBase<DerivedV>& v, const Heads& heads, const Mask& mask = {},
    const Options& options = {}) {
  Matrix<typename DerivedQ::Scalar> out(q.rows(),
                                        heads.num_heads > 0 && heads.num_kv_heads > 0
                                            ? heads.num_heads * (v.cols() / heads.num_kv_heads)
                                            : 0);
  scaled_dot_product_attention(q, k, v, heads, out, mask, options);
  return out;
}

}  // namespace attention
