// SPDX-License-Identifier: MIT
//
// tiny_decoder: the attention block of a small Llama-style decoder, run the way a language model
// generates text -- first the whole prompt at once (prefill), then one token at a time (decode),
// each new token attending over every earlier one through a KV cache.
//
//   layer   MultiHeadAttention<float>(d_model = 256, num_heads = 8, num_kv_heads = 2): grouped-
//           query attention (Ainslie et al., 2023), 4 query heads share each key/value head, so
//           the cache holds 2 heads of 32 columns per token instead of 8
//   rope    rotary position embeddings (Su et al., 2021) on every head of Q and K, in the
//           half-split layout of GPT-NeoX and Hugging Face's Llama: token t's query and key are
//           rotated by angles t * theta_i, so the scores see only relative positions
//   cache   KVCache<float>: the projected keys and values of every token seen so far; each step
//           projects only the new token and appends its K and V (Pope et al., 2022); keys enter
//           the cache already rotated at their absolute positions (cache.tokens_seen() counts them)
//   mask    forward(x_new, cache) attends lower-right causal over the cache: the new tokens are the
//           last rows of the sequence, so each sees every cached token and itself
//
// The "model" around the block is a stand-in: the prompt is 16 fixed random embeddings, and each
// decoded token's input is the previous step's output row, RMS-normalised (Zhang & Sennrich, 2019)
// so that its size stays that of an embedding. What the example checks is the cache itself: the
// rows produced step by step must equal, to rounding, those of ONE causal forward over the whole
// sequence (prompt + decoded inputs), which recomputes everything from scratch.
//
// Then the same inputs go through the block twice more, with smaller caches (issue 13): a
// KVCache<Eigen::bfloat16> (keys and values rounded to bfloat16, half the bytes) and an
// Int8KVCache (8-bit integers with one float scale per head's 32 values, about a quarter). The
// program prints each cache's memory and how far its outputs land from the float cache's.

#include <algorithm>
#include <attention/attention.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iomanip>
#include <iostream>
#include <random>
#include <vector>

namespace {

using attention::Index;
using attention::RowMatrixXf;

/// rows x cols standard normal entries from std::mt19937 (reproducible on every platform).
RowMatrixXf random_embeddings(Index rows, Index cols, std::uint32_t seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal;
  RowMatrixXf m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(engine);
  return m;
}

/// Microseconds elapsed since `start`.
double microseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main() try {
  constexpr Index d_model = 256, num_heads = 8, num_kv_heads = 2;
  constexpr Index prompt_length = 16, decode_steps = 32;
  constexpr Index total = prompt_length + decode_steps;

  // ---- The block ------------------------------------------------------------------------------
  // W_Q, W_O: 256 x 256; W_K, W_V: 256 x 64 (2 K/V heads of head_dim 32). Glorot-uniform weights
  // from a fixed seed, so every run prints the same numbers.
  attention::MultiHeadAttention<float> layer(d_model, num_heads, num_kv_heads);
  layer.reset_parameters(2024);
  // RoPE over each head's 32 columns, base 10000, rotating (i, i + 16) column pairs. The layer
  // rotates Q and K right after projecting them, in every forward: the prefill's prompt at
  // positions 0..15, each decoded token at the position the cache has reached.
  layer.rope = attention::Rope(layer.head_dim(), attention::RopeLayout::half_split);
  std::cout << "MultiHeadAttention<float>(d_model " << d_model << ", " << num_heads
            << " query heads, " << num_kv_heads << " key/value heads): head_dim "
            << layer.head_dim() << ", " << layer.num_heads() / layer.num_kv_heads()
            << " query heads per K/V head, " << layer.parameter_count() << " parameters\n"
            << "RoPE: half-split layout, base " << layer.rope->base() << ", "
            << layer.rope->rotary_dim() << " rotated columns per head\n";

  // The cache stores kv_dim() = 64 scalars of K and 64 of V per token (a full multi-head layer
  // would store 256 of each). Room for the whole sequence is reserved up front, so no step
  // reallocates.
  attention::KVCache<float> cache(layer.kv_dim(), /*max_length=*/total, /*initial_capacity=*/total);
  std::cout << "KVCache: " << cache.width() << " key and " << cache.width()
            << " value scalars per token, room for " << cache.max_length() << " tokens\n\n";

  // Every input row the block sees, kept to check against one causal forward at the end, and
  // every output row it produces.
  RowMatrixXf inputs(total, d_model), outputs(total, d_model);

  // ---- Prefill: the whole prompt in one call --------------------------------------------------
  // forward(x_new, cache) projects the 16 prompt tokens, appends their K and V to the (empty)
  // cache and attends causally among them: one matrix product per projection, the tiled kernel
  // for attention.
  inputs.topRows(prompt_length) = random_embeddings(prompt_length, d_model, 7);
  auto start = std::chrono::steady_clock::now();
  outputs.topRows(prompt_length) = layer.forward(inputs.topRows(prompt_length), cache);
  const double prefill_us = microseconds_since(start);
  std::cout << "prefill: " << prompt_length << " prompt tokens in one call, " << std::fixed
            << std::setprecision(0) << prefill_us << " us (" << prefill_us / prompt_length
            << " us per token); cache now holds " << cache.size() << " tokens\n\n";

  // ---- Decode: one token per call --------------------------------------------------------------
  // Each step feeds the previous output row back in (RMS-normalised to unit root-mean-square),
  // projects only that one row, rotates its query and key to position cache.tokens_seen(), appends
  // its K and V, and attends over the whole cache. The cost of a step grows with the cache (it
  // reads all of K and V), not with the square of it.
  std::vector<double> step_us;
  std::cout << "decode: one token per forward(x_new, cache)\n"
            << "  token  position  cached keys  latency (us)\n";
  for (Index step = 0; step < decode_steps; ++step) {
    const Index position = prompt_length + step;
    const auto previous = outputs.row(position - 1);
    const float rms = std::sqrt(previous.squaredNorm() / static_cast<float>(d_model));
    inputs.row(position) = previous / rms;

    start = std::chrono::steady_clock::now();
    outputs.row(position) = layer.forward(inputs.row(position), cache);
    step_us.push_back(microseconds_since(start));

    std::cout << "  " << std::setw(5) << step + 1 << "  " << std::setw(8) << position << "  "
              << std::setw(11) << cache.size() << "  " << std::setw(12) << std::setprecision(1)
              << step_us.back() << '\n';
  }
  std::vector<double> sorted = step_us;
  std::sort(sorted.begin(), sorted.end());
  std::cout << "decoded " << decode_steps << " tokens after a prompt of " << prompt_length
            << ": median " << sorted[sorted.size() / 2] << " us per token, fastest "
            << sorted.front() << " us, slowest " << sorted.back()
            << " us (the slowest includes warm-up and, on a busy machine, time the thread was not "
               "running)\n\n";

  // ---- Check: incremental = one causal forward over everything --------------------------------
  // Without a cache, the same rows come from one self-attention call over all 48 inputs with the
  // ordinary causal mask (token i sees tokens 0..i), RoPE placing row i at position i. The two
  // computations add in different orders
  // (chunked projections, split-key decode), so they agree to float rounding, not bitwise. Bound:
  // each output is a sum of ~d_model + S products of O(1) numbers through three stages (project,
  // attend, project), so |difference| ~ a few x sqrt(256) x 2^-24 x |output| ~ 1e-6 |output|;
  // 1e-5 x max |output| leaves a margin of ~10 and still fails on any real error (a wrong position
  // or a missing key moves outputs by ~0.1).
  const RowMatrixXf whole = layer.forward(inputs, attention::causal);
  const float max_difference = (whole - outputs).cwiseAbs().maxCoeff();
  const float largest = outputs.cwiseAbs().maxCoeff();
  const float bound = 1e-5F * largest;
  std::cout << std::scientific << std::setprecision(2) << "one causal forward over all " << total
            << " tokens vs the " << total
            << " incremental rows: max |difference| = " << max_difference << " (largest |output| "
            << largest << ")\n"
            << "incremental decoding matches one causal forward (max |difference| <= 1e-5 x largest"
               " |output|): "
            << (max_difference <= bound ? "yes" : "NO") << '\n'
            << "cache holds " << cache.size() << " tokens, next position " << cache.tokens_seen()
            << "\n\n";

  // ---- Smaller caches: bfloat16 and int8
  // --------------------------------------------------------- The same 48 inputs (prompt, then one
  // token per call), through a cache that stores keys and values in fewer bits; the layer computes
  // in float as before, reading the stored values widened to float. The outputs move by the
  // rounding of K and V: bfloat16 keeps 8 significant bits (relative error <= 2^-9), int8 one of
  // 255 levels per group of 32 (error <= half a level).
  const auto replay = [&](auto& small_cache) {
    RowMatrixXf small_outputs(total, d_model);
    small_outputs.topRows(prompt_length) =
        layer.forward(inputs.topRows(prompt_length), small_cache);
    for (Index t = prompt_length; t < total; ++t) {
      small_outputs.row(t) = layer.forward(inputs.row(t), small_cache);
    }
    return (small_outputs - outputs).cwiseAbs().maxCoeff();
  };
  attention::KVCache<Eigen::bfloat16> bf16_cache(layer.kv_dim(), total, total);
  attention::Int8KVCache int8_cache(layer.kv_dim(), total, /*group_size=*/layer.head_dim(), total);
  const float bf16_difference = replay(bf16_cache);
  const float int8_difference = replay(int8_cache);
  std::cout << "the same " << total << " tokens through smaller caches (largest |output| "
            << largest << "):\n"
            << "  KVCache<float>            " << std::setw(6) << cache.memory_bytes() << " bytes\n"
            << "  KVCache<Eigen::bfloat16>  " << std::setw(6) << bf16_cache.memory_bytes()
            << " bytes, largest difference from the float cache's outputs " << bf16_difference
            << '\n'
            << "  Int8KVCache (groups of " << int8_cache.group_size() << ")  " << std::setw(6)
            << int8_cache.memory_bytes()
            << " bytes, largest difference from the float cache's outputs " << int8_difference
            << '\n';
  return max_difference <= bound ? 0 : 1;
} catch (const std::exception& error) {  // a ShapeError, or std::bad_alloc
  std::cerr << "tiny_decoder: " << error.what() << '\n';
  return 1;
}
