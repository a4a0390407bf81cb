// SPDX-License-Identifier: MIT
//
// gpt3_scale: the GPT-3 arithmetic of seed 003's slides ("L'Échelle de GPT-3"), from the library's
// parameter count. GPT-3 (Brown et al., 2020, table 2.1): d_model = 12288, 96 heads of 128, 96
// layers, context 2048. The slides: 6.3 million parameters per head, 96 heads per block, 96 blocks,
// 58 billion parameters for attention alone, and a cost that grows as N^2 with the context N.
// attention::MultiHeadShape does the counting without allocating a 12288-wide layer (which would
// hold 604 million weights, 2.4 GB in float).

#include <attention/attention.hpp>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iomanip>
#include <iostream>
#include <string>

#include "print.hpp"

namespace {

/// 6291456 -> "6.3 million", 57982058496 -> "58.0 billion".
std::string in_words(double value) {
  const char* units[] = {"", " thousand", " million", " billion", " trillion"};
  int unit = 0;
  while (value >= 1000.0 && unit < 4) {
    value /= 1000.0;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.1f%s", value, units[unit]);
  return text;
}

/// One line of a count: label, exact value with separators, value in words.
void print_count(const std::string& label, std::int64_t value, const std::string& note = "") {
  std::cout << "  " << std::left << std::setw(44) << label << std::right << std::setw(18)
            << examples::group_digits(value) << "  (" << in_words(static_cast<double>(value)) << ")"
            << note << '\n';
}

}  // namespace

int main() try {
  const std::int64_t num_layers = 96;
  const attention::MultiHeadShape gpt3(12288, 96);  // d_model, num_heads
  const std::int64_t d_model = gpt3.d_model();
  const std::int64_t num_heads = gpt3.num_heads();
  const std::int64_t head_dim = gpt3.head_dim();
  std::cout << "GPT-3: attention::MultiHeadShape gpt3(12288, 96): d_model = " << d_model
            << ", num_heads = " << num_heads << ", head_dim = d_model / num_heads = " << head_dim
            << ", " << num_layers << " layers\n";

  // One head owns head_dim columns of W_Q, W_K, W_V ("query", "key", "value down" in 3Blue1Brown's
  // words) and head_dim rows of W_O ("value up"): 4 matrices of d_model x head_dim.
  std::cout << "\nOne head: 4 matrices of d_model x head_dim = " << d_model << " x " << head_dim
            << '\n';
  print_count("W_Q, W_K, W_V, W_O slice (each)", d_model * head_dim);
  print_count("weights per head", gpt3.weights_per_head(), "   <- slides: 6.3 million");

  // One layer: 96 heads side by side, i.e. four full d_model x d_model matrices, plus 4 biases.
  std::cout << "\nOne layer (block): " << num_heads << " heads\n";
  print_count("weights (4 x d_model^2)", gpt3.weight_count());
  print_count("biases (4 x d_model)", gpt3.bias_count());
  print_count("parameter_count()", gpt3.parameter_count());

  // The whole model: 96 layers.
  std::cout << "\nAll " << num_layers << " layers\n";
  print_count("attention weights (96 layers)", num_layers * gpt3.weight_count(),
              "   <- slides: 58 billion");
  print_count("with biases", num_layers * gpt3.parameter_count());
  std::cout << "  = " << examples::group_digits(gpt3.weights_per_head()) << " per head x "
            << num_heads << " heads x " << num_layers << " layers, about a third of GPT-3's 175 "
            << "billion parameters\n";

  // The N^2 cost ("Coût computationnel : N^2"). For a context of N tokens each head of each layer
  // builds an N x N score matrix Q_h K_h^T. FLOPs per layer, counting a multiply-add as 2:
  //   scores, weighted sum:  (2 N^2 head_dim for Q K^T + 2 N^2 head_dim for A V) x 96 heads
  //                          = 4 N^2 d_model
  //   projections:           2 N d_model^2 for each of W_Q, W_K, W_V, W_O = 8 N d_model^2
  // The N^2 part overtakes the projections once 4 N^2 d_model > 8 N d_model^2, i.e. N > 2 d_model.
  // (A causal mask lets a kernel skip about half of the N^2 part.)
  std::cout << "\nThe N^2 cost: one N x N score matrix per head, per layer, per forward pass\n"
            << "  " << std::setw(6) << "N" << std::setw(18) << "scores/head" << std::setw(20)
            << "scores/layer" << std::setw(12) << "MB/layer" << std::setw(16) << "N^2 GFLOP"
            << std::setw(16) << "proj GFLOP" << std::setw(10) << "ratio" << '\n';
  for (const std::int64_t n : {512, 1024, 2048, 4096, 8192, 32768}) {
    const std::int64_t per_head = n * n;
    const std::int64_t per_layer = num_heads * per_head;
    const double megabytes = static_cast<double>(per_layer) * 2.0 / 1e6;  // fp16 scores
    const double quadratic_flops = 4.0 * static_cast<double>(n * n * d_model);
    const double projection_flops = 8.0 * static_cast<double>(n * d_model * d_model);
    std::cout << "  " << std::setw(6) << n << std::setw(18) << examples::group_digits(per_head)
              << std::setw(20) << examples::group_digits(per_layer) << std::setw(12) << std::fixed
              << std::setprecision(0) << megabytes << std::setw(16) << std::setprecision(1)
              << quadratic_flops / 1e9 << std::setw(16) << projection_flops / 1e9 << std::setw(10)
              << std::setprecision(3) << quadratic_flops / projection_flops << '\n';
  }
  std::cout << "  (MB/layer: one layer's scores in 16-bit floats. ratio: N^2 part / projections "
               "= N / (2 d_model).)\n";

  // GPT-3's own context, N = 2048, spelled out.
  const std::int64_t n = 2048;
  std::cout << "\nAt GPT-3's context of N = " << n << " tokens\n";
  print_count("scores per head per layer (N^2)", n * n);
  print_count("scores per layer (x 96 heads)", num_heads * n * n);
  print_count("scores per forward pass (x 96 layers)", num_layers * num_heads * n * n);
  print_count("FLOPs per layer, N^2 part (4 N^2 d_model)", 4 * n * n * d_model);
  print_count("FLOPs per layer, projections (8 N d^2)", 8 * n * d_model * d_model);
  print_count("FLOPs per forward pass, N^2 part", num_layers * 4 * n * n * d_model);
  std::cout << "  Doubling N quadruples the N^2 part; it equals the projections' cost at N = 2 "
               "d_model = "
            << examples::group_digits(2 * d_model) << " tokens.\n";

  // MultiHeadShape checks what it is given: 100 heads do not divide 12288.
  try {
    const attention::MultiHeadShape bad(12288, 100);
    std::cout << "\nunexpected: 100 heads accepted, head_dim " << bad.head_dim() << '\n';
    return 1;
  } catch (const attention::ShapeError& error) {
    std::cout << "\nMultiHeadShape(12288, 100) throws attention::ShapeError: " << error.what()
              << '\n';
  }
  return 0;
} catch (const std::exception& error) {  // std::bad_alloc, or an unexpected ShapeError
  std::cerr << "gpt3_scale: " << error.what() << '\n';
  return 1;
}
