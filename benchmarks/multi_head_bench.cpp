// SPDX-License-Identifier: MIT
//
// MultiHeadAttention<float>::forward, self-attention over N tokens of width d_model, at the shapes
// of PyTorch's reference (../shared/bench/bench_torch.py): d_model 512 / 8 heads and 1024 / 16
// heads, N in {512, 2048}. FLOPs per call: the four projections, 2 N D^2 each, plus attention,
// 4 N^2 D summed over the heads (half of that causal):
//   8 N D^2 + 4 N^2 D.
// Arg `threads` sets OpenMP's and Eigen's thread count; see attention_bench.cpp for the counters.
//
// BM_MultiHeadBackward: multi_head_attention_backward for the same layer and loss gradient. FLOPs
// per call, the convention of attention_backward_bench.cpp (the recomputed forward not counted):
// each of the four projections' dW = x^T dY and dX = dY W^T, 4 N D^2 each, plus 2.5x attention's
// forward, 10 N^2 D (half of that causal):
//   16 N D^2 + 10 N^2 D.
//
// BM_Projection: one of the layer's four projections, y = x W + b (2 rows d_in d_out FLOPs), by the
// library's kernel (kernels/projection.hpp) beside Eigen's GEMM of the same size. Arg `path`:
// 0 the kernel as the layer calls it, 1 its packed path forced, 2 its direct path forced, 3 Eigen
// (y = x W, then + b). The few-row runs show where the kernel switches paths (Blocking::mc).

#include <attention/attention.hpp>
#include <attention/kernels/projection.hpp>
#include <cmath>

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

void BM_MultiHeadBackward(benchmark::State& state) {
  const Index seq_len = state.range(0), d_model = state.range(1), num_heads = state.range(2);
  const bool causal = state.range(3) != 0;
  const int threads = static_cast<int>(state.range(4));
  support::set_threads(threads);
  attention::MultiHeadAttention<float> mha(d_model, num_heads);
  mha.reset_parameters(7);
  const attention::RowMatrixXf x = support::random_matrix<float>(seq_len, d_model, 1);
  const attention::RowMatrixXf d_out = support::random_matrix<float>(seq_len, d_model, 2);
  attention::MultiHeadGradients<float> grads;
  const support::LoopClock clock;
  for (auto _ : state) {
    if (causal) {
      attention::multi_head_attention_backward(mha, x, d_out, grads, attention::causal);
    } else {
      attention::multi_head_attention_backward(mha, x, d_out, grads);
    }
    benchmark::DoNotOptimize(grads.dx.data());
    benchmark::ClobberMemory();
  }
  const double n = static_cast<double>(seq_len), d = static_cast<double>(d_model);
  const double projections = 16.0 * n * d * d;
  const double attention = causal ? 5.0 * n * n * d : 10.0 * n * n * d;
  support::set_flop_counters<float>(state, projections + attention, threads, clock);
}

BENCHMARK(BM_MultiHeadBackward)
    ->ArgNames({"seq", "d_model", "heads", "causal", "threads"})
    ->ArgsProduct({{512, 2048}, {512}, {8}, {0, 1}, support::thread_counts()})
    ->ArgsProduct({{512, 2048}, {1024}, {16}, {0, 1}, support::thread_counts()})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

enum class ProjectionPath { dispatch, packed, direct, eigen };

void BM_Projection(benchmark::State& state) {
  const Index rows = state.range(0), d_in = state.range(1), d_out = state.range(2);
  const auto path = static_cast<ProjectionPath>(state.range(3));
  const int threads = static_cast<int>(state.range(4));
  support::set_threads(threads);
  const attention::RowMatrixXf x = support::random_matrix<float>(rows, d_in, 1);
  const attention::RowMatrixXf w =
      support::random_matrix<float>(d_in, d_out, 2) / std::sqrt(static_cast<float>(d_in));
  const attention::RowVector<float> b = support::random_matrix<float>(1, d_out, 3);
  attention::RowMatrixXf y(rows, d_out);
  namespace kernel = attention::detail::projection;
  const support::LoopClock clock;
  for (auto _ : state) {
    switch (path) {
      case ProjectionPath::dispatch:
        kernel::project<float>(x, w, b, y);
        break;
      case ProjectionPath::packed:
        kernel::project_packed<float>(x, w, b, y);
        break;
      case ProjectionPath::direct:
        kernel::project_direct<float>(x, w, b, y);
        break;
      case ProjectionPath::eigen:
        y.noalias() = x * w;
        y.rowwise() += b;
        break;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double flops =
      2.0 * static_cast<double>(rows) * static_cast<double>(d_in) * static_cast<double>(d_out);
  support::set_flop_counters<float>(state, flops, threads, clock);
}

BENCHMARK(BM_Projection)
    ->ArgNames({"rows", "d_in", "d_out", "path", "threads"})
    ->ArgsProduct({{2048}, {1024}, {1024}, {0, 1, 2, 3}, support::thread_counts()})
    ->ArgsProduct({{1, 4, 8, 9, 16, 32, 64, 128}, {1024}, {1024}, {1, 2, 3}, {1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
