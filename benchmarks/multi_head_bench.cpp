// SPDX-License-Identifier: MIT
//
// MultiHeadAttention<float>::forward, self-attention over N tokens of width d_model, at the shapes
// of PyTorch's reference (../shared/bench/bench_torch.py): d_model 512 / 8 heads and 1024 / 16
// heads, N in {512, 2048}. FLOPs per call: the four projections, 2 N D^2 each, plus attention,
// 4 N^2 D summed over the heads (half of that causal):
//   8 N D^2 + 4 N^2 D.
// Arg `threads` sets OpenMP's and Eigen's thread count; see attention_bench.cpp for the counters.

#include <attention/attention.hpp>

#include "bench_support.hpp"

namespace {

using attention::Index;

void BM_MultiHead(benchmark::State& state) {
  const Index seq_len = state.range(0), d_model = state.range(1), num_heads = state.range(2);
  const bool causal = state.range(3) != 0;
  const int threads = static_cast<int>(state.range(4));
  support::set_threads(threads);
  attention::MultiHeadAttention<float> mha(d_model, num_heads);
  mha.reset_parameters(7);
  const attention::RowMatrixXf x = support::random_matrix<float>(seq_len, d_model, 1);
  const support::LoopClock clock;
  for (auto _ : state) {
    attention::RowMatrixXf out = causal ? mha.forward(x, attention::causal) : mha.forward(x);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double n = static_cast<double>(seq_len), d = static_cast<double>(d_model);
  const double projections = 8.0 * n * d * d;
  const double attention = causal ? 2.0 * n * n * d : 4.0 * n * n * d;
  support::set_flop_counters<float>(state, projections + attention, threads, clock);
}

BENCHMARK(BM_MultiHead)
    ->ArgNames({"seq", "d_model", "heads", "causal", "threads"})
    ->ArgsProduct({{512, 2048}, {512}, {8}, {0, 1}, support::thread_counts()})
    ->ArgsProduct({{512, 2048}, {1024}, {16}, {0, 1}, support::thread_counts()})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
