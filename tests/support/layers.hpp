#pragma once
// SPDX-License-Identifier: MIT
//
// MultiHeadAttention layers for tests: random layers made two ways, their parameters in long
// double for support/reference.hpp, and the finite-difference check of all eight parameter
// gradients. Shared by the multi-head, grouped-query, incremental-decoding and backward tests.

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <attention/multi_head_backward.hpp>
#include <cmath>

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
  return {reference::to_real(layer.w_q), reference::to_real(layer.w_k),
          reference::to_real(layer.w_v), reference::to_real(layer.w_o),
          reference::to_real(layer.b_q), reference::to_real(layer.b_k),
          reference::to_real(layer.b_v), reference::to_real(layer.b_o),
          layer.num_heads(),             layer.num_kv_heads()};
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

}  // namespace support
