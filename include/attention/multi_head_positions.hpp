#pragma once
// SPDX-License-Identifier: MIT
//
// The position features of a multi-head attention layer (PositionFeatures): rotary embeddings,
// ALiBi slopes and logit soft-capping, each off by default, with their check and the three things
// a layer does with them: rotate Q and K (and rotate their gradients back), give each query head
// its ALiBi bias, and resolve the soft-cap. MultiHeadAttention (multi_head.hpp) has these as public
// members, applied by every call; positions are lower-right aligned, as attention::alibi and
// attention::causal_lower_right: of L queries and S keys, key row j is at position j and query row
// i at i + (S - L).

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

#include "attention/alibi.hpp"
#include "attention/errors.hpp"
#include "attention/mask.hpp"
#include "attention/rope.hpp"
#include "attention/types.hpp"

namespace attention {

/// Position features of a multi-head layer, all off by default:
///   rope           rotary embeddings (rope.hpp): each head of Q and of K is rotated after the
///                  projection, Q_h <- R(p) Q_h, K_g <- R(p) K_g, row by row at its position p
///   alibi_slopes   ALiBi (alibi.hpp): query head h adds attention::alibi(alibi_slopes[h]), i.e.
///                  -m_h * (position distance), to its scores, on top of the call's mask
///   softcap        logit soft-capping (Options::softcap): s <- softcap * tanh(s / softcap) before
///                  the mask and the ALiBi bias
struct PositionFeatures {
  /// Rotary position embeddings of Q and K, if set. rope->head_dim() must equal the layer's
  /// head_dim; the layout, base and rotary_dim are the model's.
  std::optional<Rope> rope{};
  /// ALiBi slopes, one per query head (attention::alibi_slopes(num_heads) for the standard ones),
  /// or empty for no ALiBi. Query head h adds -alibi_slopes[h] * ((i + S - L) - j) to score (i, j),
  /// combined with the call's mask by `&` (pass a causal mask, as ALiBi models do: alone, ALiBi
  /// hides nothing and favours later keys).
  std::vector<double> alibi_slopes{};
  /// Logit soft-capping, as Options::softcap (Gemma 2): unset for none, else positive and finite.
  std::optional<double> softcap{};

  /// Checks that the features fit a layer of num_heads query heads of width head_dim, in Scalar:
  /// rope->head_dim() == head_dim, alibi_slopes empty or num_heads finite slopes, softcap unset or
  /// positive and finite in Scalar. \throws ShapeError naming `func` and both sizes;
  /// std::invalid_argument for a bad slope or softcap.
  template <typename Scalar>
  void check_fits(const char* func, Index num_heads, Index head_dim) const {
    if (rope)
      detail::require_equal(func, "rope->head_dim()", rope->head_dim(), "head_dim", head_dim);
    if (!alibi_slopes.empty()) {
      detail::require_equal(func, "alibi_slopes.size()", static_cast<Index>(alibi_slopes.size()),
                            "num_heads", num_heads);
      for (std::size_t h = 0; h < alibi_slopes.size(); ++h) {
        if (!std::isfinite(alibi_slopes[h])) {
          std::ostringstream what;
          what << "alibi_slopes[" << h << "] (= " << alibi_slopes[h] << ") must be finite";
          detail::throw_invalid_value(func, what.str());
        }
      }
    }
    (void)resolved_softcap<Scalar>(func);
  }

  /// softcap rounded to Scalar, or 0 when unset. \throws std::invalid_argument naming `func` unless
  /// it is positive and finite in Scalar (at least its smallest normal number, so that 1 / softcap
  /// is finite).
  template <typename Scalar>
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

  /// With rope set, rotates every head of q (its rows at positions query_position, +1, ...) and of
  /// k (rows from key_position); else does nothing. Widths were checked (check_fits()).
  template <typename DerivedQ, typename DerivedK>
  void rotate(Eigen::MatrixBase<DerivedQ>& q, Index query_position, Eigen::MatrixBase<DerivedK>& k,
              Index key_position) const {
    if (!rope) return;
    rope->apply_each_head(q, query_position);
    rope->apply_each_head(k, key_position);
  }

  /// The backward of rotate(): Q = R Q' with R orthogonal, so dQ' = R^T dQ (Rope::apply_transpose);
  /// K likewise. Rotates dq and dk back in place.
  template <typename DerivedQ, typename DerivedK>
  void rotate_back(Eigen::MatrixBase<DerivedQ>& dq, Index query_position,
                   Eigen::MatrixBase<DerivedK>& dk, Index key_position) const {
    if (!rope) return;
    rope->apply_transpose_each_head(dq, query_position);
    rope->apply_transpose_each_head(dk, key_position);
  }

  /// Calls f(mask) for query head h, or f(mask & alibi(alibi_slopes[h])) with ALiBi: a mask type
  /// of its own, since the bias differs per head.
  template <typename Mask, typename F>
  void with_head_mask(Index h, const Mask& mask, F&& f) const {
    if (alibi_slopes.empty()) {
      f(mask);
    } else {
      f(mask & attention::alibi(alibi_slopes[static_cast<std::size_t>(h)]));
    }
  }
};

}  // namespace attention
