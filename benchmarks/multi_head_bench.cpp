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
// BM_Projection: one of the layer's four projections, y = x W + b (2 rows d_in d_out FLOPs), as the
// layer runs it (MultiHeadWeights::project: kernels/projection.hpp, each row one fixed chain
// of multiply-adds) beside Eigen's GEMM of the same size. Arg `path`: 0 the layer's projection,
// 1 Eigen (y = x W, then + b). The few-row runs (decoding) show where the kernel leaves its direct
// path for its packed one. Besides GFLOP/s, W_bytes/s: the bytes of W read per second (d_model^2
// floats per call), the figure that bounds decoding. At d_model 4096 W is 64 MiB, twice the L3, so
// every call reads it from memory: compare with decode_bench's BM_MemoryRead. The runs of 64 and
// 128 rows at d_model 128 and 192 (2^21 to 2^22 multiply-adds) on 1 and 2 threads test the
// threshold at which the packed path takes a second thread; 1 and 8 rows at d_model 256 and 512
// (W in L2), the direct path's.

#include <attention/attention.hpp>
#include <cmath>

#include "bench_support.hpp"

namespace {

using attention::Index;

/// One layer call's setting: the arguments (seq, d_model, heads, causal, threads), the layer
/// (reset_parameters(7)) and its input x.
struct LayerRun {
  explicit LayerRun(const benchmark::State& state)
      : seq_len(state.range(0)),
        d_model(state.range(1)),
        causal(state.range(3) != 0),
        threads(static_cast<int>(state.range(4))),
        layer(d_model, state.range(2)),
        x(support::random_matrix<float>(seq_len, d_model, 1)) {
    support::set_threads(threads);
    layer.reset_parameters(7);
  }

  /// FLOP counters for projection_flops N D^2 + attention_flops N^2 D (half of the latter causal).
  void set_counters(benchmark::State& state, double projection_flops, double attention_flops,
                    const support::LoopClock& clock) const {
    const double n = static_cast<double>(seq_len), d = static_cast<double>(d_model);
    const double attention = (causal ? 0.5 : 1.0) * attention_flops * n * n * d;
    support::set_flop_counters<float>(state, projection_flops * n * d * d + attention, threads,
                                      clock);
  }

  Index seq_len, d_model;
  bool causal;
  int threads;
  attention::MultiHeadAttention<float> layer;
  attention::RowMatrixXf x;
};

void layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"seq", "d_model", "heads", "causal", "threads"})
      ->ArgsProduct({{512, 2048}, {512}, {8}, {0, 1}, support::thread_counts()})
      ->ArgsProduct({{512, 2048}, {1024}, {16}, {0, 1}, support::thread_counts()})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

void BM_MultiHead(benchmark::State& state) {
  const LayerRun run(state);
  const support::LoopClock clock;
  for (auto _ : state) {
    attention::RowMatrixXf out =
        run.causal ? run.layer.forward(run.x, attention::causal) : run.layer.forward(run.x);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  run.set_counters(state, 8.0, 4.0, clock);
}
BENCHMARK(BM_MultiHead)->Apply(layer_shapes);

void BM_MultiHeadBackward(benchmark::State& state) {
  const LayerRun run(state);
  const attention::RowMatrixXf d_out = support::random_matrix<float>(run.seq_len, run.d_model, 2);
  attention::MultiHeadGradients<float> grads;
  const support::LoopClock clock;
  for (auto _ : state) {
    if (run.causal) {
      attention::multi_head_attention_backward(run.layer, run.x, d_out, grads, attention::causal);
    } else {
      attention::multi_head_attention_backward(run.layer, run.x, d_out, grads);
    }
    benchmark::DoNotOptimize(grads.dx.data());
    benchmark::ClobberMemory();
  }
  run.set_counters(state, 16.0, 10.0, clock);
}
BENCHMARK(BM_MultiHeadBackward)->Apply(layer_shapes);

enum class ProjectionPath { layer, eigen };

void BM_Projection(benchmark::State& state) {
  const Index rows = state.range(0), d_model = state.range(1);
  const auto path = static_cast<ProjectionPath>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const attention::RowMatrixXf x = support::random_matrix<float>(rows, d_model, 1);
  attention::MultiHeadWeights<float> weights(attention::MultiHeadShape(d_model, 16));
  weights.w_q =
      support::random_matrix<float>(d_model, d_model, 2) / std::sqrt(static_cast<float>(d_model));
  weights.b_q = support::random_matrix<float>(1, d_model, 3);
  attention::RowMatrixXf y(rows, d_model);
  const support::LoopClock clock;
  for (auto _ : state) {
    if (path == ProjectionPath::layer) {
      weights.project(attention::MultiHeadProjection::query, x, y);
    } else {
      y.noalias() = x * weights.w_q;
      y.rowwise() += weights.b_q;
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double entries = static_cast<double>(d_model) * static_cast<double>(d_model);
  support::set_flop_counters<float>(state, 2.0 * static_cast<double>(rows) * entries, threads,
                                    clock);
  state.counters["W_bytes/s"] =
      benchmark::Counter(entries * sizeof(float), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_Projection)
    ->ArgNames({"rows", "d_model", "path", "threads"})
    ->ArgsProduct({{2048}, {1024}, {0, 1}, support::thread_counts()})
    ->ArgsProduct({{1, 4, 8, 9, 16, 32, 64, 65, 128}, {1024}, {0, 1}, {1}})
    ->ArgsProduct({{1, 2, 6, 16}, {4096}, {0, 1}, support::thread_counts()})
    ->ArgsProduct({{64, 128}, {128, 192}, {0}, support::thread_counts()})
    ->ArgsProduct({{1, 8}, {256, 512}, {0}, support::thread_counts()})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
