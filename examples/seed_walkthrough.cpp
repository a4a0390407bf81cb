// SPDX-License-Identifier: MIT
//
// seed_walkthrough: the worked examples of the seeds' notebooks, step by step, with the library.
//
//   seed 000  Q, K, V of three tokens t1 t2 t3 (d_k = 2): S = Q K^T / sqrt(d_k), A = softmax(S) row
//             by row, the row sums, O = A V. Printed to 3 decimals, as the notebook does.
//   seed 004  "The cat sat": embeddings X, weights W_Q, W_K, W_V, the projections, the scores, the
//             scaled scores, the weights and the output (8 decimals); then X with identity
//             projections and a causal mask.
//   seed 002  four random tokens (d_k = 8) with a causal mask built as 0 / -inf: QK^T, the scaled
//             and the masked scores, the weights (8 decimals).
//
// Every matrix is printed as the notebooks print their pandas tables: queries (rows) and keys
// (columns) labelled with their tokens. S is computed here only to be shown; the weights and the
// outputs always come from the library.

#include <attention/attention.hpp>
#include <cmath>
#include <exception>
#include <iostream>
#include <limits>

#include "print.hpp"

namespace {

using attention::RowMatrixXd;
using examples::Labels;
using examples::print_step;
using examples::print_table;

constexpr double minus_inf = -std::numeric_limits<double>::infinity();

// Seed 000 (French notebook): hand-written Q, K, V for three tokens, d_k = 2.
void walk_seed_000() {
  std::cout << "\n=== Seed 000: three tokens t1 t2 t3, hand-written Q, K, V (d_k = 2) ===\n";
  const Labels tokens = {"t1", "t2", "t3"};
  const Labels dims = {"d0", "d1"};
  RowMatrixXd q(3, 2), k(3, 2), v(3, 2);
  q << 1, 0,  // query of t1
      0, 1,   // query of t2
      1, 1;   // query of t3
  k << 1, 0,  // key of t1
      1, 1,   // key of t2
      0, 1;   // key of t3
  v << 1, 0,  // value of t1
      0, 1,   // value of t2
      1, 1;   // value of t3

  print_step("Step 1. Q, K, V",
             "One token per row: what each token looks for (Q), offers (K) and passes on (V).");
  print_table("Q", q, tokens, dims, 3);
  print_table("K", k, tokens, dims, 3);
  print_table("V", v, tokens, dims, 3);

  // S(i, j) = q_i . k_j / sqrt(d_k): computed here for display only.
  const double d_k = static_cast<double>(q.cols());
  const RowMatrixXd s = q * k.transpose() / std::sqrt(d_k);
  print_step("Step 2. Scores S = Q K^T / sqrt(d_k)",
             "Row i, column j: how well query i matches key j, divided by sqrt(2).");
  print_table("S = Q K^T / sqrt(d_k)", s, tokens, tokens, 3);

  // A = softmax(S), row by row (the row max is subtracted first, as in the notebook).
  const RowMatrixXd a = attention::softmax_rows(s);
  print_step("Step 3. Weights A = softmax(S), row by row",
             "Each row becomes a probability distribution: how much query i listens to key j.");
  print_table("A = softmax_rows(S)", a, tokens, tokens, 3);
  print_table("Check: row sums of A", a.rowwise().sum(), tokens, {"sum"}, 3);

  // The library's attention_weights does steps 2 and 3 in one call.
  const RowMatrixXd weights = attention::attention_weights(q, k);
  std::cout << "\nattention_weights(Q, K) equals softmax_rows(S): max |difference| = "
            << (weights - a).cwiseAbs().maxCoeff() << '\n';

  // O = A V: each output row is a weighted average of the value rows.
  const RowMatrixXd o = attention::scaled_dot_product_attention(q, k, v);
  print_step("Step 4. Output O = A V = scaled_dot_product_attention(Q, K, V)",
             "Each token's new representation: the values averaged with its weights.");
  print_table("O = A V", o, tokens, dims, 3);
}

// Seed 004, first example: "The cat sat" with given embeddings and projection weights.
void walk_seed_004_the_cat_sat() {
  std::cout << "\n=== Seed 004: \"The cat sat\" with learnable weights W_Q, W_K, W_V (d = 3) ===\n";
  const Labels tokens = {"The", "cat", "sat"};
  const Labels dims = {"d0", "d1", "d2"};
  RowMatrixXd x(3, 3);
  x << 1.0, 0.0, 0.5,  // "The"
      0.0, 1.0, 0.3,   // "cat"
      1.0, 1.0, 0.2;   // "sat"
  RowMatrixXd w_q(3, 3), w_k(3, 3), w_v(3, 3);
  w_q << 1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 1.0, 0.5;
  w_k << 1.0, 0.0, 0.5, 0.0, 1.0, 0.5, 0.0, 1.0, 0.5;
  w_v << 0.5, 1.0, 0.2, 1.0, 0.5, 0.3, 1.0, 0.5, 0.1;

  print_step("Step 1. Word embeddings X", "One row per token: X is (3 tokens x 3 features).");
  print_table("X", x, tokens, dims, 2);

  // Q = X W_Q, K = X W_K, V = X W_V (y = x W + b with b = 0: the notebook has no biases).
  const attention::RowVector<double> no_bias = attention::RowVector<double>::Zero(3);
  const RowMatrixXd q = attention::project(x, w_q, no_bias);
  const RowMatrixXd k = attention::project(x, w_k, no_bias);
  const RowMatrixXd v = attention::project(x, w_v, no_bias);
  print_step("Step 2. Projections Q = X W_Q, K = X W_K, V = X W_V",
             "attention::project(x, w, b) computes x W + b, one token per row.");
  print_table("W_Q", w_q, dims, dims, 2);
  print_table("W_K", w_k, dims, dims, 2);
  print_table("W_V", w_v, dims, dims, 2);
  print_table("Q", q, tokens, dims, 2);
  print_table("K", k, tokens, dims, 2);
  print_table("V", v, tokens, dims, 2);

  // scores = Q K^T and scaled = scores / sqrt(d_k): for display only.
  const RowMatrixXd scores = q * k.transpose();
  const RowMatrixXd scaled = scores / std::sqrt(static_cast<double>(q.cols()));
  print_step("Step 3. Dot products Q K^T",
             "Query i against key j; Q = K here, so the table is symmetric.");
  print_table("Dot product scores", scores, tokens, tokens, 4);
  print_step("Step 4. Scale by sqrt(d_k)",
             "Divide by sqrt(3) so the scores' spread does not grow with the dimension.");
  print_table("Scaled scores", scaled, tokens, tokens, 8);

  // Steps 5 and 6 are the library's two calls.
  const RowMatrixXd weights = attention::attention_weights(q, k);
  const RowMatrixXd output = attention::scaled_dot_product_attention(q, k, v);
  print_step("Step 5. Softmax: attention_weights(Q, K)",
             "Each row sums to 1; \"sat\" listens most to itself (0.514).");
  print_table("Attention weights", weights, tokens, tokens, 8);
  print_step("Step 6. Output: scaled_dot_product_attention(Q, K, V)",
             "Row i = sum_j weight(i, j) * V row j.");
  print_table("Final output", output, tokens, dims, 8);
}

// Seed 004, second example: identity projections and a causal mask triu(-inf, k = 1).
void walk_seed_004_causal() {
  std::cout << "\n=== Seed 004: causal self-attention with identity projections (d = 3) ===\n";
  const Labels tokens = {"The", "cat", "sat"};
  const Labels dims = {"d0", "d1", "d2"};
  RowMatrixXd x(3, 3);
  x << 1, 0, 1,  // "The"
      0, 1, 1,   // "cat"
      1, 1, 0;   // "sat"
  // W_Q = W_K = W_V = I, so Q = K = V = X.
  print_step("Step 1. X, with Q = K = V = X (identity projections)",
             "The projections are left out to show the mask alone.");
  print_table("X", x, tokens, dims, 1);

  // The notebook's mask: -inf strictly above the diagonal (the future), 0 elsewhere.
  RowMatrixXd mask = RowMatrixXd::Zero(3, 3);
  mask.triangularView<Eigen::StrictlyUpper>().setConstant(minus_inf);
  const RowMatrixXd masked = x * x.transpose() / std::sqrt(3.0) + mask;
  print_step("Step 2. Causal mask and masked scores",
             "Token i may look at tokens j <= i only: the future gets -inf before the softmax.");
  print_table("mask = triu(-inf, k=1)", mask, tokens, tokens, 0);
  print_table("Masked scores = Q K^T / sqrt(d_k) + mask", masked, tokens, tokens, 8);

  // attention::causal is that mask; attention::bias(mask) adds the notebook's matrix as it is.
  const RowMatrixXd weights = attention::attention_weights(x, x, attention::causal);
  const RowMatrixXd from_bias = attention::attention_weights(x, x, attention::bias(mask));
  print_step("Step 3. Softmax over the masked scores: attention_weights(X, X, attention::causal)",
             "exp(-inf) = 0: the future gets weight exactly 0, and \"The\" can only see itself.");
  print_table("Masked attention weights", weights, tokens, tokens, 8);
  std::cout << "\nattention::bias(mask) gives the same weights: max |difference| = "
            << (weights - from_bias).cwiseAbs().maxCoeff() << '\n';

  const RowMatrixXd output = attention::scaled_dot_product_attention(x, x, x, attention::causal);
  print_step("Step 4. Output: scaled_dot_product_attention(X, X, X, attention::causal)",
             "Row i mixes only the values of tokens up to i.");
  print_table("Masked self-attention output", output, tokens, dims, 8);
}

// Seed 002: random q, k (L = 4, d_k = 8) printed by the notebook; causal mask as 0 / -inf.
void walk_seed_002() {
  std::cout << "\n=== Seed 002: four random tokens (d_k = 8), causal mask as 0 / -inf ===\n";
  const Labels tokens = examples::numbered("t", 4);
  RowMatrixXd q(4, 8), k(4, 8);
  q << 1.81007476e+00, 5.79714443e-01, 1.76340488e+00, -1.36508567e+00, -6.16563287e-01,
      2.25550782e-01, 6.97932570e-01, 4.53068254e-01,  //
      4.40413862e-01, 1.41182465e+00, 1.12179795e+00, 2.55940040e+00, -6.11930195e-01,
      -1.29197911e+00, 4.35326619e-01, 5.87760655e-01,  //
      1.37479398e-01, 4.75943855e-01, 1.70270553e-01, -2.99509648e-01, -9.17416007e-01,
      3.41058826e-02, 1.35763200e-01, 7.02759309e-04,  //
      -1.02789839e+00, -1.25648099e+00, -2.10596641e+00, 8.53510939e-03, -1.08815736e+00,
      2.73482192e-01, -2.95768431e-01, -1.63643952e+00;
  k << 0.23806166, 0.81478651, 0.1867359, -0.23954279, -0.43809154, 0.71938587, 0.32942035,
      -0.7737555,  //
      1.30796644, 0.28949965, 0.46690281, -0.79771644, -0.23239687, 1.46718916, 0.96671762,
      1.31305307,  //
      -1.02961989, 0.32733656, 1.25499661, -1.8275007, 0.46145633, 0.21470431, 1.32039387,
      0.97140891,  //
      0.02289806, 0.28978226, 0.05236321, 0.60885248, 0.7258343, 1.19419763, -0.34371495,
      -1.39029048;

  const RowMatrixXd scores = q * k.transpose();
  const RowMatrixXd scaled = scores / std::sqrt(8.0);
  // The notebook prints q and k rounded to 8 decimals, so products of the printed values can
  // differ from its QK^T by a few 1e-8: the scores are shown to 7 decimals. The weights, which
  // depend on them smoothly, match the notebook's to all 8 printed decimals.
  print_step("Step 1. Q K^T and scaled = Q K^T / sqrt(d_k)",
             "Q and K are the notebook's random 4 x 8 matrices (see the source).");
  print_table("Q K^T", scores, tokens, tokens, 7);
  print_table("Scaled", scaled, tokens, tokens, 7);

  // mask = tril(ones): 1 -> 0 (visible), 0 -> -inf (the future).
  RowMatrixXd mask = RowMatrixXd::Zero(4, 4);
  mask.triangularView<Eigen::StrictlyUpper>().setConstant(minus_inf);
  print_step("Step 2. Mask from tril(ones): 1 -> 0, 0 -> -inf, added to the scaled scores",
             "Adding -inf hides a key; adding 0 changes nothing.");
  print_table("Mask", mask, tokens, tokens, 0);
  print_table("Scaled + mask", scaled + mask, tokens, tokens, 7);

  const RowMatrixXd weights = attention::attention_weights(q, k, attention::bias(mask));
  print_step("Step 3. Attention = softmax(scaled + mask): attention_weights(Q, K, bias(mask))",
             "Lower triangular; the last token sees all four.");
  print_table("Attention", weights, tokens, tokens, 8);
  std::cout << "\n(The notebook's V printout is cut after one row; its output O = A V is checked "
               "by the tests.)\n";
}

}  // namespace

int main() try {
  std::cout << "Scaled dot-product attention, the seeds' worked examples step by step:\n"
               "  Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V\n"
               "  (Vaswani et al., 2017, eq. 1). Rows are queries, columns are keys.\n";
  walk_seed_000();
  walk_seed_004_the_cat_sat();
  walk_seed_004_causal();
  walk_seed_002();
  return 0;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "seed_walkthrough: " << error.what() << '\n';
  return 1;
}
