#pragma once
// SPDX-License-Identifier: MIT
//
// MultiHeadAttention layers for tests: random layers made two ways, their parameters in long
// double for support/reference.hpp, the finite-difference check of all eight parameter
// gradients, and position features (RoPE, ALiBi, soft-cap) written out once for both the layer and
// the reference. Shared by the multi-head, grouped-query, incremental-decoding, position and
// backward tests.

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

}  // namespace support
