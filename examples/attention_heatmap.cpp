// SPDX-License-Identifier: MIT
//
// attention_heatmap: writes an attention pattern as an SVG heat map, so it can be looked at rather
// than read. Queries are rows, keys are columns; each square is coloured by its weight and shows
// its value.
//   ./attention_heatmap                  writes attention_heatmap.svg in the current directory
//   ./attention_heatmap out/pattern.svg  writes there
// The sentence is "<s> The cat sat on the mat", read by a decoder (GPT-style):
//   A = softmax(Q K^T / sqrt(d_k) + B),  B(i, j) = -slope * (i - j) for j <= i, -inf for j > i
// B is a causal mask with a recency bias (ALiBi, Press et al., 2022), passed as attention::bias.
// Q and K come from hand-made word-type embeddings: a noun looks for its article, a verb for its
// subject, a preposition for its verb, and an article, with nothing to look for, rests on the
// start token <s> (the "attention sink" of trained models).

#include <attention/attention.hpp>
#include <exception>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>

#include "print.hpp"
#include "svg_heatmap.hpp"

int main(int argc, char** argv) try {
  using attention::RowMatrixXd;
  const std::string path = argc > 1 ? argv[1] : "attention_heatmap.svg";

  // Embeddings E: one word type per token (the types are also the query/key dimensions, d_k = 5).
  const examples::Labels tokens = {"<s>", "The", "cat", "sat", "on", "the", "mat"};
  enum WordType { start, article, noun, verb, preposition };
  const WordType types[] = {start, article, noun, verb, preposition, article, noun};
  const attention::Index seq_len = 7, d_k = 5;
  RowMatrixXd e = RowMatrixXd::Zero(seq_len, d_k);
  for (attention::Index i = 0; i < seq_len; ++i) e(i, types[i]) = 1;

  // W_K: "I am a <type>" (scaled by 3). W_Q: the type each type looks for (scaled by 3), so a
  // match scores 3 * 3 / sqrt(5) = 4.02 and anything else 0.
  RowMatrixXd w_k = 3 * RowMatrixXd::Identity(d_k, d_k);
  RowMatrixXd w_q = RowMatrixXd::Zero(d_k, d_k);
  w_q(start, start) = 3;
  w_q(article, start) = 3;     // an article rests on <s>
  w_q(noun, article) = 3;      // a noun looks for its article
  w_q(verb, noun) = 3;         // a verb for its subject
  w_q(preposition, verb) = 3;  // a preposition for its verb
  const attention::RowVector<double> no_bias = attention::RowVector<double>::Zero(d_k);
  const RowMatrixXd q = attention::project(e, w_q, no_bias);
  const RowMatrixXd k = attention::project(e, w_k, no_bias);

  // B: causal (-inf above the diagonal) plus a recency bias, so "mat" prefers the nearer "the".
  const double slope = 0.5;
  RowMatrixXd b(seq_len, seq_len);
  for (attention::Index i = 0; i < seq_len; ++i) {
    for (attention::Index j = 0; j < seq_len; ++j) {
      b(i, j) =
          j <= i ? -slope * static_cast<double>(i - j) : -std::numeric_limits<double>::infinity();
    }
  }
  const RowMatrixXd weights = attention::attention_weights(q, k, attention::bias(b));
  examples::print_table("A = softmax(Q K^T / sqrt(d_k) + B)  (rows: queries, columns: keys)",
                        weights, tokens, tokens, 3);

  // The picture.
  std::ofstream file(path);
  const examples::HeatmapText text = {
      "Attention pattern: \"<s> The cat sat on the mat\"",
      "softmax(QK\u1d40/\u221ad\u2096 + B), B = causal mask + recency bias "
      "\u22120.5\u00b7(i\u2212j); each row sums to 1"};
  if (!file || !examples::write_svg_heatmap(file, weights, tokens, tokens, text)) {
    std::cerr << "attention_heatmap: cannot write " << path << '\n';
    return 1;
  }
  file.close();
  std::cout << "\nwrote " << path << ": " << seq_len << " x " << seq_len
            << " heat map, queries as rows, keys as columns\n";
  return file ? 0 : 1;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "attention_heatmap: " << error.what() << '\n';
  return 1;
}
