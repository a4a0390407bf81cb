// SPDX-License-Identifier: MIT
//
// Backward of single-head attention, N tokens of width d, two ways at the same shapes, so one run
// compares them:
//   BM_BackwardTiled         scaled_dot_product_attention_backward(q, k, v, out, lse, d_out, ...):
//                            the tiled kernel (kernels/flash_backward.hpp), from the forward's
//                            saved output and log-sum-exp (computed once, outside the timed loop)
//   BM_BackwardMaterialising scaled_dot_product_attention_backward(q, k, v, d_out, ...): the exact
//                            materialising path (P and dS held as N x N matrices)
// into preallocated gradients, plus BM_FmaPeak (see bench_support.hpp). Each benchmark calls the
// backward once before its timed loop: a process's first call touches its scratch memory and the
// gradients for the first time (page faults), and at 110 ms a call Google Benchmark's first
// repetition is often that one call alone. docs/performance.md gives the first call's time.
//
// Counters: GFLOP/s and peak_fraction for 2.5x the forward's FLOPs, 10 N^2 d (q k^T, dO v^T,
// P^T dO, dS k, dS^T q: five N x N x d products; half of that causal), the convention of
// FlashAttention-2's paper. Arg `threads` sets OpenMP's and Eigen's thread count.

#include <attention/attention.hpp>

#include "bench_support.hpp"

namespace {

using attention::Index;
using attention::Matrix;

struct Inputs {
  Matrix<float> q, k, v, d_out;
};

Inputs make_inputs(Index seq_len, Index head_dim) {
  return {support::random_matrix<float>(seq_len, head_dim, 1),
          support::random_matrix<float>(seq_len, head_dim, 2),
          support::random_matrix<float>(seq_len, head_dim, 3),
          support::random_matrix<float>(seq_len, head_dim, 4)};
}

double backward_flops(Index seq_len, Index head_dim, bool causal) {
  return 2.5 * support::attention_flops(seq_len, head_dim, causal);
}

void BM_BackwardTiled(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const Inputs in = make_inputs(seq_len, head_dim);
  const auto forward =
      causal ? attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal)
             : attention::scaled_dot_product_attention_lse(in.q, in.k, in.v);
  attention::AttentionGradients<float> grads;
  const auto backward = [&] {
    if (causal) {
      attention::scaled_dot_product_attention_backward(
          in.q, in.k, in.v, forward.output, forward.lse, in.d_out, grads, attention::causal);
    } else {
      attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, forward.output,
                                                       forward.lse, in.d_out, grads);
    }
  };
  backward();  // untimed: the first call's page faults (see the top of this file)
  const support::LoopClock clock;
  for (auto _ : state) {
    backward();
    benchmark::DoNotOptimize(grads.dq.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, backward_flops(seq_len, head_dim, causal), threads,
                                    clock);
}

void BM_BackwardMaterialising(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const Inputs in = make_inputs(seq_len, head_dim);
  attention::AttentionGradients<float> grads;
  const auto backward = [&] {
    if (causal) {
      attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, in.d_out, grads,
                                                       attention::causal);
    } else {
      attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, in.d_out, grads);
    }
  };
  backward();  // untimed, as in BM_BackwardTiled
  const support::LoopClock clock;
  for (auto _ : state) {
    backward();
    benchmark::DoNotOptimize(grads.dq.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, backward_flops(seq_len, head_dim, causal), threads,
                                    clock);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"seq", "dim", "causal", "threads"})
      ->ArgsProduct({{1024, 4096}, {64, 128}, {0, 1}, support::thread_counts()})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// e.g. BM_BackwardTiled/seq:4096/dim:128/causal:0/threads:1/real_time
const bool registered = [] {
  shapes(benchmark::RegisterBenchmark("BM_BackwardTiled", BM_BackwardTiled));
  shapes(benchmark::RegisterBenchmark("BM_BackwardMaterialising", BM_BackwardMaterialising));
  return true;
}();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
