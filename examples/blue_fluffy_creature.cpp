// SPDX-License-Identifier: MIT
//
// blue_fluffy_creature: "Une créature bleue et duveteuse", the sentence of seed 003 (after
// 3Blue1Brown's "Attention in transformers", chapter 6). The adjectives "bleue" and "duveteuse"
// should update the meaning of the noun "créature": the noun asks "are there adjectives around
// me?" (its query), the adjectives answer "I am an adjective" (their keys), and what they pass on
// (their values) is their colour and texture, which is added to the noun's embedding:
//   E' = E + Delta E,   Delta E = softmax(Q K^T / sqrt(d_k)) V,   Q = E W_Q, K = E W_K, V = E W_V.
// Real models learn E, W_Q, W_K and W_V; here they are written by hand, with one named feature per
// embedding dimension, so every number can be read.
//
// There is no causal mask: in French the adjectives follow the noun, so a GPT-style mask (each
// token sees only the tokens before it) would hide them from "créature". In 3Blue1Brown's English,
// "a fluffy blue creature", they come first and the mask changes nothing for the noun.

#include <algorithm>
#include <attention/attention.hpp>
#include <exception>
#include <iostream>
#include <numeric>
#include <vector>

#include "print.hpp"

int main() try {
  using attention::RowMatrixXd;
  using examples::print_step;
  using examples::print_table;

  const examples::Labels tokens = {"Une", "créature", "bleue", "et", "duveteuse"};
  // d_model = 8 features; "feminine" because French adjectives agree with their noun.
  const examples::Labels features = {"noun",     "adjective", "article", "conjunction",
                                     "feminine", "animate",   "blue",    "fluffy"};
  enum Feature { noun, adjective, article, conjunction, feminine, animate, blue, fluffy };
  const examples::Labels qk_dims = {"adjective?", "noun?"};  // the query/key space, d_k = 2
  enum QueryKeyDim { seeks_adjective, seeks_noun };

  // Step 1. Embeddings E (5 tokens x 8 features): what each word means on its own.
  RowMatrixXd e = RowMatrixXd::Zero(5, 8);
  e(0, article) = e(0, feminine) = 1;                   // Une
  e(1, noun) = e(1, feminine) = e(1, animate) = 1;      // créature
  e(2, adjective) = e(2, feminine) = e(2, blue) = 1;    // bleue
  e(3, conjunction) = 1;                                // et
  e(4, adjective) = e(4, feminine) = e(4, fluffy) = 1;  // duveteuse
  print_step("Step 1. Embeddings E",
             "One row per token, one named feature per column: the words on their own.");
  print_table("E", e, tokens, features, 0);

  // Step 2. Queries Q = E W_Q: a noun asks "is there an adjective?", adjectives and articles ask
  // "where is my noun?" (they agree with it in gender). Keys K = E W_K: an adjective answers "I am
  // an adjective", a noun "I am a noun". The 2.5 sets how sharp the pattern is: a match scores
  // 2.5 * 2.5 / sqrt(d_k) = 4.42, every other pair 0.
  RowMatrixXd w_q = RowMatrixXd::Zero(8, 2), w_k = RowMatrixXd::Zero(8, 2);
  w_q(noun, seeks_adjective) = 2.5;
  w_q(adjective, seeks_noun) = 2.5;
  w_q(article, seeks_noun) = 2.5;
  w_k(adjective, seeks_adjective) = 2.5;
  w_k(noun, seeks_noun) = 2.5;
  const attention::RowVector<double> no_bias2 = attention::RowVector<double>::Zero(2);
  const RowMatrixXd q = attention::project(e, w_q, no_bias2);
  const RowMatrixXd k = attention::project(e, w_k, no_bias2);
  print_step("Step 2. Queries Q = E W_Q and keys K = E W_K (d_k = 2)",
             "Q: what a token looks for. K: what it offers. \"et\" asks nothing.");
  print_table("Q (what am I looking for?)", q, tokens, qk_dims, 2);
  print_table("K (what do I offer?)", k, tokens, qk_dims, 2);

  // Step 3. The attention pattern A = softmax(Q K^T / sqrt(d_k)), queries as rows. "et" has a
  // zero query: it scores 0 against every key, and since a softmax row must sum to 1 it spreads
  // its attention evenly (0.2 each) rather than attending to nothing.
  const RowMatrixXd a = attention::attention_weights(q, k);
  print_step("Step 3. Attention pattern A = softmax(Q K^T / sqrt(d_k))",
             "Row i: how much token i listens to each token j. Every row sums to 1.");
  print_table("A (rows: queries, columns: keys)", a, tokens, tokens, 3);

  // The two keys créature listens to most: sort its row's key indices by weight.
  const Eigen::Index creature = 1;
  std::vector<Eigen::Index> order(static_cast<std::size_t>(a.cols()));
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](Eigen::Index i, Eigen::Index j) { return a(creature, i) > a(creature, j); });
  const auto token = [&](Eigen::Index i) { return tokens[static_cast<std::size_t>(i)]; };
  std::cout << "\ncréature attends most to: " << token(order[0]) << ", " << token(order[1]) << " ("
            << examples::format_number(a(creature, order[0]), 3) << " and "
            << examples::format_number(a(creature, order[1]), 3) << ")\n";

  // Step 4. Values V = E W_V live in the embedding space: an adjective passes on its colour or
  // texture, nothing else (W_V copies "blue" and "fluffy" and drops every other feature).
  RowMatrixXd w_v = RowMatrixXd::Zero(8, 8);
  w_v(blue, blue) = 1;
  w_v(fluffy, fluffy) = 1;
  const RowMatrixXd v = attention::project(e, w_v, attention::RowVector<double>::Zero(8));
  print_step("Step 4. Values V = E W_V",
             "What each token passes on to those who listen: bleue its colour, duveteuse its "
             "texture.");
  print_table("V", v, tokens, features, 0);

  // Step 5. Delta E = A V = softmax(Q K^T / sqrt(d_k)) V, and the update E' = E + Delta E.
  const RowMatrixXd delta_e = attention::scaled_dot_product_attention(q, k, v);
  const RowMatrixXd enriched = e + delta_e;
  print_step(
      "Step 5. Update E' = E + Delta E, Delta E = A V = scaled_dot_product_attention(Q, K, V)",
      "créature absorbs a share of its adjectives' values: a blue, fluffy creature.");
  RowMatrixXd noun_rows(3, 8);
  noun_rows << e.row(creature), delta_e.row(creature), enriched.row(creature);
  print_table("créature", noun_rows, {"E", "Delta E", "E'"}, features, 3);
  print_table("E' for every token", enriched, tokens, features, 3);
  return 0;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "blue_fluffy_creature: " << error.what() << '\n';
  return 1;
}
