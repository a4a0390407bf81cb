#pragma once
// SPDX-License-Identifier: MIT
//
// The exact, materialising path: all L x S scores at once, through Eigen's products and the same
// score pipeline as the tiled kernels (kernels/score_pipeline.hpp: ScoreRules, the row softmax).
// Used for scalar types the tiled kernels do not cover (long double), for the backward of inputs
// that are not all finite, for attention_weights, and as the kernels' exact reference.

#include <Eigen/Core>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/mask.hpp"
#include "attention/softmax.hpp"
#include "attention/types.hpp"

namespace attention::detail {

/// scores = q' k^T (L x S), q' = rules.query_factor() * q: the start of the score pipeline on the
/// whole matrix (a scale of magnitude <= 1 multiplies q first, ScoreRules::scales_queries).
template <typename Scalar, typename DerivedQ, typename DerivedK>
void query_key_scores(const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
                      MatrixRef<Scalar> scores, const kernels::ScoreRules<Scalar>& rules) {
  if (rules.query_factor() != Scalar(1)) {
    // Evaluated first: given (q * scale) * k^T, Eigen's product pulls the scalar out and applies it
    // to the finished product (as BLAS's alpha), which is exactly what must not happen here.
    const Matrix<Scalar> scaled_q = q * rules.query_factor();
    scores.noalias() = scaled_q * k.transpose();
  } else {
    scores.noalias() = q * k.transpose();
  }
}

/// Turns the scores q' k^T of query_key_scores (L x S, in place) into attention weights: the rest
/// of the score pipeline (scale, soft-cap, mask: ScoreRules::apply on the whole matrix) and the
/// row softmax. If `lse` is not null it receives each row's log-sum-exp of the scaled, capped,
/// masked scores. If `softcap_derivative` is not null (with a soft-cap), it is resized to L x S and
/// receives 1 - tanh^2(s / softcap).
template <typename Scalar, typename Mask>
void scores_to_weights(MatrixRef<Scalar> scores, const kernels::ScoreRules<Scalar>& rules,
                       const Mask& mask, Scalar* lse = nullptr,
                       Matrix<Scalar>* softcap_derivative = nullptr) {
  const auto& bound_mask = bind_mask(mask, scores.rows(), scores.cols());
  if (rules.capped() && softcap_derivative != nullptr) {
    // Row by row: the derivative's rows are cols() apart, the scores' outerStride() apart.
    softcap_derivative->resize(scores.rows(), scores.cols());
    for (Index i = 0; i < scores.rows(); ++i) {
      rules.apply(scores.data() + i * scores.outerStride(), scores.outerStride(), 1, scores.cols(),
                  bound_mask, i, Index(0), TileVisibility::mixed,
                  softcap_derivative->data() + i * softcap_derivative->outerStride());
    }
  } else {
    rules.apply(scores.data(), scores.outerStride(), scores.rows(), scores.cols(), bound_mask,
                Index(0), Index(0), TileVisibility::mixed);
  }
  for (Index i = 0; i < scores.rows(); ++i) {
    const Scalar row_lse =
        kernels::softmax_row_in_place(scores.data() + i * scores.outerStride(), scores.cols());
    if (lse != nullptr) lse[i] = row_lse;
  }
}

/// out = softmax(scores) v with all L x S weights held (lse per row if not null). out must not
/// share memory with q, k or v.
template <typename Scalar, typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask>
void materialized_attention(const Eigen::MatrixBase<DerivedQ>& q,
                            const Eigen::MatrixBase<DerivedK>& k,
                            const Eigen::MatrixBase<DerivedV>& v, MatrixRef<Scalar> out,
                            const Mask& mask, const kernels::ScoreRules<Scalar>& rules,
                            Scalar* lse = nullptr) {
  Matrix<Scalar> weights(q.rows(), k.rows());
  query_key_scores<Scalar>(q, k, weights, rules);
  scores_to_weights<Scalar>(weights, rules, mask, lse);
  if (all_finite(v)) {
    out.noalias() = weights * v;
    return;
  }
  // A NaN or inf in v must reach only the queries that give its key a non-zero weight; in a
  // product, 0 * NaN = NaN would reach every query.
  out.setZero();
  for (Index i = 0; i < weights.rows(); ++i) {
    for (Index j = 0; j < weights.cols(); ++j) {
      if (weights(i, j) != Scalar(0)) out.row(i) += weights(i, j) * v.row(j);
    }
  }
}

/// The materialising backward of one attention call, for shapes already checked. Recomputes the
/// weights P (L x S) into `p` and leaves dS (L x S) in `ds`; dq, dk and dv are overwritten and must
/// not alias the inputs. `p` and `ds` are resized if needed, so a caller that keeps them across
/// calls allocates only once.
template <typename Scalar, typename Mask>
void attention_backward_materialized(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                                     ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> d_out,
                                     const Mask& mask, const kernels::ScoreRules<Scalar>& rules,
                                     MatrixRef<Scalar> dq, MatrixRef<Scalar> dk,
                                     MatrixRef<Scalar> dv, Matrix<Scalar>& p, Matrix<Scalar>& ds) {
  // dP = dO V^T and rowsum(dP ∘ P) reach d_v max|dO| max|v| and can overflow although their
  // difference, in dS, is finite: V is then scaled by a power of two, exactly, and what depends
  // on it linearly (dS, so dbias, dQ and dK) scaled back. dV = P^T dO does not involve V.
  const Scalar value_scale =
      overflow_rescale(max_abs_of(d_out), max_abs_of(v), Index{2} * v.cols());
  if (value_scale != Scalar(1)) {
    const Matrix<Scalar> v_scaled = v * value_scale;
    attention_backward_materialized<Scalar>(q, k, v_scaled, d_out, mask, rules, dq, dk, dv, p, ds);
    const Scalar back = Scalar(1) / value_scale;
    dq *= back;
    dk *= back;
    ds *= back;
    return;
  }
  // Forward, recomputed through the score pipeline: P = softmax(scale * q k^T + mask), or with a
  // soft-cap P = softmax(softcap * tanh(scale * q k^T / softcap) + mask); `capped` keeps
  // 1 - tanh^2.
  p.resize(q.rows(), k.rows());
  query_key_scores<Scalar>(q, k, p, rules);
  Matrix<Scalar> capped;
  scores_to_weights<Scalar>(p, rules, mask, nullptr, rules.capped() ? &capped : nullptr);
  ds.resize(q.rows(), k.rows());
  const bool finite = all_finite(q) && all_finite(k) && all_finite(v) && all_finite(d_out);
  // out = P v, so dV = Pᵀ dO and dP = dO Vᵀ.
  if (finite) {
    dv.noalias() = p.transpose() * d_out;
    ds.noalias() = d_out * v.transpose();
  } else {
    // As in the forward, a pair (i, j) with weight exactly 0 takes no part, so a NaN or inf in a
    // masked key's row reaches no gradient (in a product, 0 * NaN = NaN would reach them all).
    dv.setZero();
    for (Index i = 0; i < p.rows(); ++i) {
      for (Index j = 0; j < p.cols(); ++j) {
        const Scalar p_ij = p(i, j);
        ds(i, j) = p_ij != Scalar(0) ? d_out.row(i).dot(v.row(j)) : Scalar(0);
        if (p_ij != Scalar(0)) dv.row(j) += p_ij * d_out.row(i);
      }
    }
  }
  // P = softmax(S) row by row, S = scale * q k^T + mask: dS = P ∘ (dP − rowsum(dP ∘ P)), in place.
  // A masked weight is exactly 0, so its dS is 0, and a fully masked row gets dS = 0, not NaN.
  for (Index i = 0; i < ds.rows(); ++i) {
    Scalar* ds_row = ds.data() + i * ds.outerStride();
    softmax_row_backward<Scalar>(p.data() + i * p.outerStride(), ds_row, ds_row, ds.cols());
  }
  // S = s' + mask with s' = softcap * tanh(s / softcap), s = scale * q k^T: dBias = dS,
  // ds = dS ∘ (1 − tanh²(s / softcap)) (ds = dS without a cap), dQ = scale · ds K,
  // dK = scale · dsᵀ Q. A masked entry has dS = 0, so its ds is 0 too.
  if (rules.capped()) capped.array() *= ds.array();
  const Matrix<Scalar>& d_scores = rules.capped() ? capped : ds;
  if (finite) {
    dq.noalias() = d_scores * k;
    dk.noalias() = d_scores.transpose() * q;
  } else {
    dq.setZero();
    dk.setZero();
    for (Index i = 0; i < p.rows(); ++i) {
      for (Index j = 0; j < p.cols(); ++j) {
        if (p(i, j) == Scalar(0)) continue;
        dq.row(i) += d_scores(i, j) * k.row(j);
        dk.row(j) += d_scores(i, j) * q.row(i);
      }
    }
  }
  dq *= rules.scale;
  dk *= rules.scale;
}

/// The former signature (multi_head_backward.hpp): the scale and the soft-cap as trailing
/// arguments.
template <typename Scalar, typename Mask>
void attention_backward_materialized(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                                     ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> d_out,
                                     const Mask& mask, Scalar scale, MatrixRef<Scalar> dq,
                                     MatrixRef<Scalar> dk, MatrixRef<Scalar> dv, Matrix<Scalar>& p,
                                     Matrix<Scalar>& ds, Scalar softcap = Scalar(0)) {
  attention_backward_materialized<Scalar>(
      q, k, v, d_out, mask, kernels::ScoreRules<Scalar>{scale, softcap}, dq, dk, dv, p, ds);
}

}  // namespace attention::detail
