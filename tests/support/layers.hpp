#pragma once
// SPDX-License-Identifier: MIT
//
// MultiHeadAttention layers for tests: random layers made two ways, their parameters in long
// double for support/reference.hpp, the finite-difference check of all eight parameter
// gradients, position features (RoPE, ALiBi, soft-cap) written out once for both the layer and
// the reference, and the layer's backward written out in long double (reference_backward). Shared
// by the multi-head, grouped-query, incremental-decoding, position and backward tests.

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <attention/multi_head_backward.hpp>
#include <cmath>
#include <optional>
#include <vector>

#include "support/gradient_check.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace support {

/// A layer with random weights of variance 1 / d_model (so activations stay of order 1) and
/// non-zero random biases. num_kv_heads = num_heads is plain multi-head attention.
template <typename T>
attention::MultiHeadAttention<T> random_layer(attention::Index d_model, attention::Index num_heads,
                                              attention::Index num_kv_heads, unsigned seed) {
  attention::MultiHeadAttention<T> layer(d_model, num_heads, num_kv_heads);
  const attention::Index kv_dim = layer.kv_dim();
  const T gain = T(1) / std::sqrt(T(d_model));
  layer.w_q = random_matrix<T>(d_model, d_model, seed) * gain;
  layer.w_k = random_matrix<T>(d_model, kv_dim, seed + 1) * gain;
  layer.w_v = random_matrix<T>(d_model, kv_dim, seed + 2) * gain;
  layer.w_o = random_matrix<T>(d_model, d_model, seed + 3) * gain;
  layer.b_q = random_matrix<T>(1, d_model, seed + 4) * T(0.5);
  layer.b_k = random_matrix<T>(1, kv_dim, seed + 5) * T(0.5);
  layer.b_v = random_matrix<T>(1, kv_dim, seed + 6) * T(0.5);
  layer.b_o = random_matrix<T>(1, d_model, seed + 7) * T(0.5);
  return layer;
}

/// A layer initialised as reset_parameters(seed) does (Glorot), with random, non-zero biases.
template <typename T>
attention::MultiHeadAttention<T> glorot_layer(attention::Index d_model, attention::Index num_heads,
                                              attention::Index num_kv_heads, unsigned seed) {
  attention::MultiHeadAttention<T> layer(d_model, num_heads, num_kv_heads);
  layer.reset_parameters(seed);
  layer.b_q = random_matrix<T>(1, d_model, seed + 1) * T(0.5);
  layer.b_k = random_matrix<T>(1, layer.kv_dim(), seed + 2) * T(0.5);
  layer.b_v = random_matrix<T>(1, layer.kv_dim(), seed + 3) * T(0.5);
  layer.b_o = random_matrix<T>(1, d_model, seed + 4) * T(0.5);
  return layer;
}

/// The layer's weights for the long-double reference.
template <typename T>
reference::MultiHeadParameters parameters_of(const attention::MultiHeadAttention<T>& layer) {
  return {
      reference::to_real(layer.w_q), reference::to_real(layer.w_k), reference::to_real(layer.w_v),
      reference::to_real(layer.w_o), reference::to_real(layer.b_q), reference::to_real(layer.b_k),
      reference::to_real(layer.b_v), reference::to_real(layer.b_o), layer.num_heads(),
      layer.num_kv_heads()};
}

/// Checks the eight parameter gradients of `grads` against central finite differences of `loss`,
/// which reads `layer` by reference.
template <typename T, typename Loss>
void expect_parameter_gradients_match(const Loss& loss, attention::MultiHeadAttention<T>& layer,
                                      const attention::MultiHeadGradients<T>& grads) {
  constexpr long double bound = gradient_bound<T>();
  EXPECT_TRUE(gradient_matches(loss, layer.w_q, grads.dw_q, bound)) << "dw_q";
  EXPECT_TRUE(gradient_matches(loss, layer.w_k, grads.dw_k, bound)) << "dw_k";
  EXPECT_TRUE(gradient_matches(loss, layer.w_v, grads.dw_v, bound)) << "dw_v";
  EXPECT_TRUE(gradient_matches(loss, layer.w_o, grads.dw_o, bound)) << "dw_o";
  EXPECT_TRUE(gradient_matches(loss, layer.b_q, grads.db_q, bound)) << "db_q";
  EXPECT_TRUE(gradient_matches(loss, layer.b_k, grads.db_k, bound)) << "db_k";
  EXPECT_TRUE(gradient_matches(loss, layer.b_v, grads.db_v, bound)) << "db_v";
  EXPECT_TRUE(gradient_matches(loss, layer.b_o, grads.db_o, bound)) << "db_o";
}

/// Position features of a test layer, written out once and given both to the layer (set_positions)
/// and to the long-double reference (reference_positions), which computes them independently.
struct PositionFeatures {
  const char* name = "none";
  bool rope = false;
  attention::RopeLayout layout = attention::RopeLayout::interleaved;
  double base = 10000;
  attention::Index rotary_dim = 0;     // 0: the whole head
  std::vector<double> alibi_slopes{};  // one per query head, or empty
  std::optional<double> softcap{};
};

/// Gives `layer` the features of f: layer.rope, layer.alibi_slopes, layer.softcap.
template <typename T>
void set_positions(attention::MultiHeadAttention<T>& layer, const PositionFeatures& f) {
  layer.rope.reset();
  if (f.rope) {
    layer.rope.emplace(
        layer.head_dim(), f.layout, f.base,
        f.rotary_dim == 0 ? std::nullopt : std::optional<attention::Index>(f.rotary_dim));
  }
  layer.alibi_slopes = f.alibi_slopes;
  layer.softcap = f.softcap;
}

/// The reference's description of f, with query row i at position query_offset + i and key row j
/// at key_offset + j.
inline reference::Positions reference_positions(const PositionFeatures& f,
                                                attention::Index query_offset,
                                                attention::Index key_offset) {
  reference::Positions p;
  p.rope = f.rope;
  p.interleaved = f.layout == attention::RopeLayout::interleaved;
  p.base = static_cast<reference::Real>(f.base);
  p.rotary_dim = f.rotary_dim;
  p.query_offset = query_offset;
  p.key_offset = key_offset;
  for (const double m : f.alibi_slopes) p.alibi_slopes.push_back(static_cast<reference::Real>(m));
  if (f.softcap) p.softcap = static_cast<reference::Real>(*f.softcap);
  return p;
}

/// The features the position tests run through, for 4 query heads of head_dim 8: each layout of
/// RoPE (one partial, with Llama 3's base), the standard ALiBi slopes of 4 heads (2^(-8k/4), Press
/// et al., 2022), and everything at once with larger slopes and a soft-cap of 1 (scores of order 1,
/// so the cap changes them).
inline std::vector<PositionFeatures> position_features_for_four_heads() {
  using attention::RopeLayout;
  PositionFeatures interleaved{"rope interleaved", true, RopeLayout::interleaved};
  PositionFeatures partial{"rope half-split, rotary_dim 4, base 500000", true,
                           RopeLayout::half_split, 500000, 4};
  PositionFeatures alibi{"alibi"};
  alibi.alibi_slopes = {0.25, 0.0625, 0.015625, 0.00390625};
  PositionFeatures everything{"rope half-split + alibi + softcap", true, RopeLayout::half_split};
  everything.alibi_slopes = {1.0, 0.5, 0.25, 0.125};
  everything.softcap = 1.0;
  return {interleaved, partial, alibi, everything};
}

/// The gradients of multi-head attention, in long double (reference_backward).
struct ReferenceGradients {
  reference::Matrix d_query, d_key, d_value, dw_q, dw_k, dw_v, dw_o, db_q, db_k, db_v, db_o;
};

/// The backward of reference::multi_head(query, key, value, p, mask, positions), the materialising
/// formulas written out in long double with reference.hpp's loops, head by head (g = h / (H / G)):
///   Q = query W_q + b_q, K = key W_k + b_k, V = value W_v + b_v; q_h = R Q_h, k_g = R K_g (RoPE)
///   t = scale q_h k_g^T,  s = c tanh(t / c) (soft-cap c) or t,  P = softmax(s + mask_h)
///   out = [P_0 v_0 ... ] W_o + b_o:  dW_o = heads^T dOut, db_o = colsum(dOut), dHeads = dOut W_o^T
///   dV_g += P^T dO_h,  dP = dO_h v_g^T,  dS = P o (dP - rowsum(dP o P)),  ds = dS o (1 - tanh^2)
///   dq_h = scale ds k_g,  dk_g += scale ds^T q_h,  then R^T on both (RoPE)
///   dW_q = query^T dQ, db_q = colsum(dQ), d_query = dQ W_q^T (K, V alike)
/// A weight of exactly 0 takes no part (the library's rule for non-finite inputs).
inline ReferenceGradients reference_backward(
    const reference::Matrix& query, const reference::Matrix& key, const reference::Matrix& value,
    const reference::Matrix& d_out, const reference::MultiHeadParameters& p,
    const reference::Mask& mask, const reference::Positions& positions = {}) {
  namespace ref = reference;
  using ref::Index;
  using ref::Matrix;
  using ref::Real;
  const Index num_heads = p.num_heads, num_kv = p.num_kv_heads == 0 ? num_heads : p.num_kv_heads;
  const Index d_model = p.w_q.cols(), head_dim = d_model / num_heads, kv_dim = num_kv * head_dim;
  const Index num_queries = query.rows(), num_keys = key.rows();
  const Matrix q_all = ref::project(query, p.w_q, p.b_q), k_all = ref::project(key, p.w_k, p.b_k),
               v_all = ref::project(value, p.w_v, p.b_v);
  const Real scale = ref::default_scale(head_dim);
  const Index rotary_dim = positions.rotary_dim == 0 ? head_dim : positions.rotary_dim;
  // R^T of row r at position p0 + r is R at position -(p0 + r): one row at a time.
  const auto rotate_back = [&](const Matrix& x, Index first_position) {
    if (!positions.rope) return x;
    Matrix y(x.rows(), x.cols());
    for (Index r = 0; r < x.rows(); ++r) {
      y.row(r) = ref::rope(ref::rows(x, r, 1), positions.interleaved, positions.base, rotary_dim,
                           -(first_position + r));
    }
    return y;
  };
  const Matrix d_heads = ref::matmul(d_out, ref::transpose(p.w_o));
  Matrix heads(num_queries, d_model), dq(num_queries, d_model);
  Matrix dk = Matrix::Zero(num_keys, kv_dim), dv = Matrix::Zero(num_keys, kv_dim);
  for (Index h = 0; h < num_heads; ++h) {
    const Index g = h / (num_heads / num_kv);
    const Matrix q = ref::head_block(q_all, h, head_dim, positions, positions.query_offset);
    const Matrix k = ref::head_block(k_all, g, head_dim, positions, positions.key_offset);
    const Matrix v = ref::columns(v_all, g * head_dim, head_dim);
    const Matrix t = ref::masked_scores(q, k, ref::Mask::none());  // scale q k^T, before any cap
    const Matrix pw =
        ref::weights(q, k, ref::head_mask(mask, h, positions), std::nullopt, positions.softcap);
    const Matrix d_o = ref::columns(d_heads, h * head_dim, head_dim);
    Matrix dq_h = Matrix::Zero(num_queries, head_dim), dk_h = Matrix::Zero(num_keys, head_dim);
    for (Index i = 0; i < num_queries; ++i) {
      Real delta = 0;  // rowsum(dP o P)
      for (Index j = 0; j < num_keys; ++j) {
        if (pw(i, j) == 0) continue;
        Real dp = 0;
        for (Index c = 0; c < head_dim; ++c) dp += d_o(i, c) * v(j, c);
        delta += dp * pw(i, j);
      }
      for (Index c = 0; c < head_dim; ++c) {
        Real sum = 0;
        for (Index j = 0; j < num_keys; ++j) {
          if (pw(i, j) != 0) sum += pw(i, j) * v(j, c);
        }
        heads(i, h * head_dim + c) = sum;
      }
      for (Index j = 0; j < num_keys; ++j) {
        if (pw(i, j) == 0) continue;
        Real dp = 0;
        for (Index c = 0; c < head_dim; ++c) dp += d_o(i, c) * v(j, c);
        Real ds = pw(i, j) * (dp - delta);
        if (positions.softcap) {
          const Real th = std::tanh(t(i, j) / *positions.softcap);
          ds *= 1 - th * th;
        }
        for (Index c = 0; c < head_dim; ++c) {
          dv(j, g * head_dim + c) += pw(i, j) * d_o(i, c);
          dq_h(i, c) += scale * ds * k(j, c);
          dk_h(j, c) += scale * ds * q(i, c);
        }
      }
    }
    const Matrix dq_back = rotate_back(dq_h, positions.query_offset);
    const Matrix dk_back = rotate_back(dk_h, positions.key_offset);
    for (Index c = 0; c < head_dim; ++c) {
      for (Index i = 0; i < num_queries; ++i) dq(i, h * head_dim + c) = dq_back(i, c);
      for (Index j = 0; j < num_keys; ++j) dk(j, g * head_dim + c) += dk_back(j, c);
    }
  }
  const auto column_sums = [](const Matrix& x) {
    Matrix sums = Matrix::Zero(1, x.cols());
    for (Index i = 0; i < x.rows(); ++i) {
      for (Index c = 0; c < x.cols(); ++c) sums(0, c) += x(i, c);
    }
    return sums;
  };
  ReferenceGradients out;
  out.dw_o = ref::matmul(ref::transpose(heads), d_out);
  out.db_o = column_sums(d_out);
  out.dw_q = ref::matmul(ref::transpose(query), dq);
  out.dw_k = ref::matmul(ref::transpose(key), dk);
  out.dw_v = ref::matmul(ref::transpose(value), dv);
  out.db_q = column_sums(dq);
  out.db_k = column_sums(dk);
  out.db_v = column_sums(dv);
  out.d_query = ref::matmul(dq, ref::transpose(p.w_q));
  out.d_key = ref::matmul(dk, ref::transpose(p.w_k));
  out.d_value = ref::matmul(dv, ref::transpose(p.w_v));
  return out;
}

}  // namespace support
