// SPDX-License-Identifier: MIT
//
// multi_head_attention: a small attention::MultiHeadAttention (d_model = 8, 2 heads of 4) over
// "The cat sat on the mat", GPT-style (causal). Vaswani et al., 2017, section 3.2.2:
//   Q = X W_Q + b_Q,  K = X W_K + b_K,  V = X W_V + b_V                      (seq_len x d_model)
//   head_h = softmax(Q_h K_h^T / sqrt(head_dim) + mask) V_h,  Q_h = columns [4h, 4h + 4) of Q
//   out = [head_0 head_1] W_O + b_O
// Each head has its own slices of W_Q, W_K and W_V, so each can look for something else (seed
// 003: "one head for grammar, one for sentiment, ..."). The weights are set by hand so that the two
// heads do two readable jobs:
//   head 0, grammar:        a noun looks for an article, a verb for a noun, a preposition for
//                           a verb
//   head 1, previous token: every token looks at the token just before it (by position)
// The example prints both patterns, the output, the parameter count, rebuilds the output from the
// formula above, and compares with a randomly initialised layer (reset_parameters), which has no
// such structure yet: training is what puts it there.

#include <attention/attention.hpp>
#include <cmath>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "print.hpp"

int main() try {
  using attention::Index;
  using attention::RowMatrixXf;
  using examples::print_step;
  using examples::print_table;

  // The layer: d_model = 8, 2 heads, head_dim = 4. Weights W_Q, W_K, W_V, W_O (8 x 8) and biases
  // b_Q, b_K, b_V, b_O (1 x 8) start at zero.
  attention::MultiHeadAttention<float> mha(8, 2);
  std::cout << "MultiHeadAttention<float> mha(8, 2): d_model = " << mha.d_model()
            << ", num_heads = " << mha.num_heads() << ", head_dim = " << mha.head_dim() << '\n'
            << "parameter count: " << mha.parameter_count()
            << " = 4 * 8 * 8 weights (W_Q, W_K, W_V, W_O) + 4 * 8 biases\n"
            << "weights per head: " << mha.shape().weights_per_head()
            << " = 4 * d_model * head_dim (its columns of W_Q, W_K, W_V and its rows of W_O)\n";

  // The input X: 4 grammatical features, the position i as an angle (cos, sin of i * 60 degrees,
  // a two-dimensional sinusoidal position encoding) and 2 features no head reads.
  const examples::Labels tokens = {"The", "cat", "sat", "on", "the", "mat"};
  const examples::Labels features = {"article", "noun",    "verb",    "prep",
                                     "pos_cos", "pos_sin", "animate", "place"};
  enum Feature { article, noun, verb, prep, pos_cos, pos_sin, animate, place };
  const float pi = 3.14159265358979f;
  const float theta = pi / 3;
  RowMatrixXf x = RowMatrixXf::Zero(6, 8);
  x(0, article) = x(4, article) = 1;  // The, the
  x(1, noun) = x(5, noun) = 1;        // cat, mat
  x(2, verb) = 1;                     // sat
  x(3, prep) = 1;                     // on
  x(1, animate) = x(5, place) = 1;
  for (Index i = 0; i < 6; ++i) {
    x(i, pos_cos) = std::cos(theta * static_cast<float>(i));
    x(i, pos_sin) = std::sin(theta * static_cast<float>(i));
  }
  print_table("X (6 tokens x d_model = 8)", x, tokens, features, 2);

  // Head 0 reads and writes columns 0..3 of Q, K, V. Query: "which word type do I need?", key:
  // "which word type am I?". A match scores 3 * 3 / sqrt(head_dim) = 4.5, a mismatch 0.
  mha.w_q(noun, 0) = 3;  // a noun asks for an article ...
  mha.w_k(article, 0) = 3;
  mha.w_q(verb, 1) = 3;  // ... a verb for a noun (its subject) ...
  mha.w_k(noun, 1) = 3;
  mha.w_q(prep, 2) = 3;  // ... a preposition for a verb.
  mha.w_k(verb, 2) = 3;
  // Head 1 reads and writes columns 4..7. Its key is the position (4 cos, 4 sin of i * theta); its
  // query is the position turned back by theta, i.e. position i - 1, so q_i . k_j = 16 cos((i - 1 -
  // j) * theta) is largest for j = i - 1. With y = x W, [[c, -s], [s, c]] rotates by -theta.
  const float c = 4 * std::cos(theta), s = 4 * std::sin(theta);
  mha.w_q(pos_cos, 4) = c;
  mha.w_q(pos_cos, 5) = -s;
  mha.w_q(pos_sin, 4) = s;
  mha.w_q(pos_sin, 5) = c;
  mha.w_k(pos_cos, 4) = mha.w_k(pos_sin, 5) = 4;
  // Values: both heads pass on the word type of the token they attend to; W_O = I keeps the heads'
  // outputs side by side, so the output reads "word type found by head 0 | by head 1".
  for (Index f = 0; f < 4; ++f) mha.w_v(f, f) = mha.w_v(f, 4 + f) = 1;
  mha.w_o.setIdentity();

  // Step 1. Each head's pattern, softmax(Q_h K_h^T / sqrt(head_dim) + causal mask), 6 x 6. In
  // head 0 the articles ask for nothing (zero query), so "the" spreads its attention evenly.
  const std::vector<RowMatrixXf> patterns = mha.head_weights(x, attention::causal);
  print_step("Head 0 (grammar): head_weights(x, attention::causal)[0]",
             "cat -> The, sat -> cat, on -> sat; mat cannot tell The from the: same word type.");
  print_table("pattern of head 0 (rows: queries, columns: keys)", patterns[0], tokens, tokens, 4);
  print_step("Head 1 (previous token): head_weights(x, attention::causal)[1]",
             "Each token looks at the one before it: mat -> the. The first can only see itself.");
  print_table("pattern of head 1 (rows: queries, columns: keys)", patterns[1], tokens, tokens, 4);

  // Step 2. The layer's output, one row per token, back in width d_model = 8.
  const RowMatrixXf out = mha.forward(x, attention::causal);
  print_step("Output: forward(x, attention::causal) = [head_0 head_1] W_O + b_O",
             "Head 0's columns: the word type it found; head 1's: the previous word's type.");
  const examples::Labels out_columns = {"h0:art", "h0:noun", "h0:verb", "h0:prep",
                                        "h1:art", "h1:noun", "h1:verb", "h1:prep"};
  print_table("forward(x, causal)", out, tokens, out_columns, 4);

  // Step 3. The same output by hand, head by head, from the per-head slices of the weights:
  //   head_h = scaled_dot_product_attention(X W_Q,h + b_Q,h, X W_K,h + b_K,h, X W_V,h + b_V,h)
  const Index head_dim = mha.head_dim();
  RowMatrixXf heads(x.rows(), mha.d_model());
  for (Index h = 0; h < mha.num_heads(); ++h) {
    const Index col = h * head_dim;
    const RowMatrixXf q = attention::project(x, mha.w_q_head(h), mha.b_q.segment(col, head_dim));
    const RowMatrixXf k = attention::project(x, mha.w_k_head(h), mha.b_k.segment(col, head_dim));
    const RowMatrixXf v = attention::project(x, mha.w_v_head(h), mha.b_v.segment(col, head_dim));
    heads.middleCols(col, head_dim) =
        attention::scaled_dot_product_attention(q, k, v, attention::causal);
  }
  const RowMatrixXf by_hand = attention::project(heads, mha.w_o, mha.b_o);
  const float difference = (out - by_hand).cwiseAbs().maxCoeff();
  std::cout << "\nforward(x) equals the per-head formula: " << (difference <= 1e-5f ? "yes" : "NO")
            << " (max |difference| = " << difference << ")\n";

  // Step 4. A freshly initialised layer: reset_parameters(seed) draws every weight uniformly in
  // [-sqrt(3 / d_model), sqrt(3 / d_model)] (Glorot) from std::mt19937, the same on every platform.
  attention::MultiHeadAttention<float> untrained(8, 2);
  untrained.reset_parameters(2017);
  print_step("For comparison: MultiHeadAttention<float>(8, 2) after reset_parameters(2017)",
             "Small random weights give flat patterns: nothing has been learned yet.");
  print_table("pattern of head 0, untrained", untrained.head_weights(x, attention::causal)[0],
              tokens, tokens, 4);
  return 0;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "multi_head_attention: " << error.what() << '\n';
  return 1;
}
