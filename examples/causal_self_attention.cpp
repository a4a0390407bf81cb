// SPDX-License-Identifier: MIT
//
// causal_self_attention: masks, in the style of seeds 002 and 004.
//   1. "The cat sat on the mat" with a causal mask: token i may attend to tokens j <= i only, so a
//      model predicting the next word cannot look ahead. The notebooks' 0 / -inf matrix passed as
//      attention::bias(mask) gives the same weights as attention::causal; masked weights are
//      exactly 0 and the last token sees every token.
//   2. Padding with attention::keep: "The cat sat" padded to 6 tokens. Keys that are padding are
//      hidden from everyone; a padding query sees nothing at all, and a fully masked row comes out
//      as weights 0 and output 0, not NaN.
// As in seed 004's second example, the projections are identities (Q = K = V = X) so the masks
// are all there is to see.

#include <attention/attention.hpp>
#include <exception>
#include <iostream>
#include <limits>

#include "print.hpp"

int main() try {
  using attention::RowMatrixXd;
  using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using examples::print_step;
  using examples::print_table;
  const auto yes_no = [](bool b) { return b ? "yes" : "NO"; };

  // ---- 1. Causal self-attention ----------------------------------------------------------------
  std::cout << "=== Causal self-attention: \"The cat sat on the mat\" ===\n";
  const examples::Labels tokens = {"The", "cat", "sat", "on", "the", "mat"};
  const examples::Labels dims = examples::numbered("d", 4);
  const Eigen::Index seq_len = 6;
  RowMatrixXd x(seq_len, 4);
  x << 1.0, 0.0, 1.0, 0.0,  // The
      0.0, 1.0, 1.0, 0.5,   // cat
      1.0, 1.0, 0.0, 0.0,   // sat
      0.0, 0.5, 0.0, 1.0,   // on
      1.0, 0.0, 1.0, 0.0,   // the (same word, same embedding as "The")
      0.0, 1.0, 0.5, 0.5;   // mat
  print_step("Step 1. Embeddings X, with Q = K = V = X", "One token per row, d_k = 4.");
  print_table("X", x, tokens, dims, 2);

  // The notebooks' mask: tril(ones) marks the visible pairs (j <= i); 1 -> 0 and 0 -> -inf.
  const RowMatrixXd visible = RowMatrixXd::Ones(seq_len, seq_len).triangularView<Eigen::Lower>();
  const RowMatrixXd mask =
      (visible.array() == 0.0)
          .select(-std::numeric_limits<double>::infinity(), RowMatrixXd::Zero(seq_len, seq_len));
  print_step("Step 2. The mask: 0 where j <= i, -inf above the diagonal (the future)",
             "Added to the scaled scores, -inf sends exp() to 0: the future gets no weight.");
  print_table("mask", mask, tokens, tokens, 0);

  // A = softmax(Q K^T / sqrt(d_k) + mask), once with the notebooks' matrix and once with the
  // library's attention::causal, which needs no matrix at all.
  const RowMatrixXd weights = attention::attention_weights(x, x, attention::causal);
  const RowMatrixXd weights_from_bias = attention::attention_weights(x, x, attention::bias(mask));
  print_step("Step 3. Weights A = attention_weights(X, X, attention::causal)",
             "Lower triangular: each row spreads 1 over the tokens up to itself.");
  print_table("A (rows: queries, columns: keys)", weights, tokens, tokens, 4);
  std::cout << "\nattention::bias(mask) gives the same weights: max |difference| = "
            << (weights - weights_from_bias).cwiseAbs().maxCoeff() << '\n';

  // What the mask promises, checked on the numbers: above the diagonal every weight is 0.0 exactly
  // (not a tiny denormal from exp(-inf)), and the last token sees every token.
  int masked = 0, exactly_zero = 0;
  for (Eigen::Index i = 0; i < seq_len; ++i) {
    for (Eigen::Index j = i + 1; j < seq_len; ++j) {
      ++masked;
      exactly_zero += weights(i, j) == 0.0 ? 1 : 0;
    }
  }
  std::cout << "masked weights (key after query) exactly 0.0: " << exactly_zero << " of " << masked
            << '\n'
            << "last token \"mat\" sees all " << seq_len << " tokens (every weight > 0): "
            << yes_no((weights.row(seq_len - 1).array() > 0.0).all()) << '\n'
            << "first token \"The\" sees only itself (weight 1): " << yes_no(weights(0, 0) == 1.0)
            << '\n';
  print_table("Check: row sums of A", weights.rowwise().sum(), tokens, {"sum"}, 4);

  // O = A V: the first output row is V's first row, the last one mixes the whole sentence.
  const RowMatrixXd output = attention::scaled_dot_product_attention(x, x, x, attention::causal);
  print_step("Step 4. Output O = scaled_dot_product_attention(X, X, X, attention::causal)",
             "Row i mixes the values of tokens 0..i only.");
  print_table("O", output, tokens, dims, 4);

  // ---- 2. Padding with attention::keep ---------------------------------------------------------
  std::cout << "\n=== Padding with attention::keep: \"The cat sat\" padded to 6 tokens ===\n";
  const examples::Labels padded = {"The", "cat", "sat", "<pad>", "<pad>", "<pad>"};
  const Eigen::Index real_len = 3;
  RowMatrixXd xp = RowMatrixXd::Zero(seq_len, 4);  // padding rows are zeros
  xp.topRows(real_len) = x.topRows(real_len);

  // keep(i, j) == true: query i may attend to key j. Causal, no padding key, and a padding query
  // attends to nothing (its row is all false).
  BoolMatrix may_attend(seq_len, seq_len);
  for (Eigen::Index i = 0; i < seq_len; ++i) {
    for (Eigen::Index j = 0; j < seq_len; ++j)
      may_attend(i, j) = j <= i && i < real_len && j < real_len;
  }
  print_step("Step 5. may_attend(i, j): causal, padding keys hidden, padding queries see nothing",
             "1 = may attend (PyTorch's convention for boolean masks), 0 = hidden.");
  print_table("may_attend", may_attend.cast<double>(), padded, padded, 0);

  const RowMatrixXd weights_p = attention::attention_weights(xp, xp, attention::keep(may_attend));
  const RowMatrixXd output_p =
      attention::scaled_dot_product_attention(xp, xp, xp, attention::keep(may_attend));
  print_step(
      "Step 6. attention_weights(X, X, attention::keep(may_attend)) and the output",
      "A row with no visible key gets weights 0 and output 0: softmax of all -inf, not 0/0.");
  print_table("A", weights_p, padded, padded, 4);
  print_table("O", output_p, padded, dims, 4);

  const auto pad_weights = weights_p.bottomRows(seq_len - real_len);
  const auto pad_output = output_p.bottomRows(seq_len - real_len);
  std::cout << "\nfully masked rows (<pad> queries): weights all 0: "
            << yes_no((pad_weights.array() == 0.0).all())
            << ", output all 0: " << yes_no((pad_output.array() == 0.0).all())
            << ", NaN anywhere: " << (weights_p.hasNaN() || output_p.hasNaN() ? "yes" : "no")
            << '\n'
            << "real tokens unchanged by the padding: max |difference| = "
            << (output_p.topRows(real_len) - output.topRows(real_len)).cwiseAbs().maxCoeff()
            << '\n';
  return 0;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "causal_self_attention: " << error.what() << '\n';
  return 1;
}
