// SPDX-License-Identifier: MIT
//
// Single-head attention, one query/key/value set of N tokens of width d, three ways at the same
// shapes, so one run compares them:
//   BM_Sdpa           attention::scaled_dot_product_attention into a preallocated output: the
//                     public entry point, whatever kernel it dispatches to
//   BM_Materialising  attention::attention_weights into a preallocated N x N buffer, then
//                     weights * v: the library's exact materialising path
//   BM_Naive          the seeds' NumPy code transcribed by hand into Eigen, as a C++ user would
//                     write it (default column-major matrices, temporaries allocated in the loop)
// plus BM_SdpaDouble (double, N = 1024 and 4096, d = 128); BM_SdpaBFloat16, BM_SdpaHalf (all
// inputs Eigen::bfloat16 / Eigen::half), BM_SdpaFloatQBFloat16KV and BM_SdpaFloatQHalfKV (float
// q, low-precision k and v), N = 1024 and 4096, each registered right after BM_Sdpa's float call
// of the same shape, so that neighbours in the output (and in time) compare like with like;
// BM_ToFloat<type> (the conversion of one 4096 x 128 operand to float, as a separate pass),
// BM_SdpaShort (N = 32 to 192: where a second thread starts to pay), the
// *Long set at N = 8192 and 16384 (slow: leave it out with --benchmark_filter=-Long), and
// BM_FmaPeak (see bench_support.hpp).
//
// Counters: GFLOP/s (4 N^2 d FLOPs, half of that causal) and peak_fraction (against threads x one
// core's FMA peak, measured at start). Arg `threads` sets OpenMP's and Eigen's thread count.

#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <utility>

#include "bench_support.hpp"

namespace {

using attention::Index;
using attention::Matrix;

template <typename Scalar>
struct Inputs {
  Matrix<Scalar> q, k, v;
};

/// Random rows x cols; bfloat16 and half ones are float ones rounded.
template <typename Scalar>
Matrix<Scalar> random_input(Index rows, Index cols, unsigned seed) {
  if constexpr (attention::is_low_precision_v<Scalar>) {
    return support::random_matrix<float>(rows, cols, seed).template cast<Scalar>();
  } else {
    return support::random_matrix<Scalar>(rows, cols, seed);
  }
}

template <typename Scalar>
Inputs<Scalar> make_inputs(Index seq_len, Index head_dim) {
  return {random_input<Scalar>(seq_len, head_dim, 1), random_input<Scalar>(seq_len, head_dim, 2),
          random_input<Scalar>(seq_len, head_dim, 3)};
}

/// q of type Scalar, k and v of type KeyValue (bfloat16 and half are computed in float).
template <typename Scalar, typename KeyValue = Scalar>
void BM_Sdpa(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const Inputs<KeyValue> in = make_inputs<KeyValue>(seq_len, head_dim);
  const Matrix<Scalar> q = random_input<Scalar>(seq_len, head_dim, 1);
  Matrix<Scalar> out(seq_len, head_dim);
  const support::LoopClock clock;
  for (auto _ : state) {
    if (causal) {
      attention::scaled_dot_product_attention(q, in.k, in.v, out, attention::causal);
    } else {
      attention::scaled_dot_product_attention(q, in.k, in.v, out);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<attention::compute_type_t<Scalar>>(
      state, support::attention_flops(seq_len, head_dim, causal), threads, clock);
}

/// One seq x dim operand converted to float, as a bfloat16 or half call does for q, k and v.
template <typename Scalar>
void BM_ToFloat(benchmark::State& state) {
  const Matrix<Scalar> x = random_input<Scalar>(state.range(0), state.range(1), 1);
  Matrix<float> y(x.rows(), x.cols());
  for (auto _ : state) {
    y = x.template cast<float>();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["Gconversions/s"] = benchmark::Counter(
      static_cast<double>(x.size()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

template <typename Scalar>
void BM_Materialising(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const Inputs<Scalar> in = make_inputs<Scalar>(seq_len, head_dim);
  Matrix<Scalar> weights(seq_len, seq_len), out(seq_len, head_dim);
  const support::LoopClock clock;
  for (auto _ : state) {
    if (causal) {
      attention::attention_weights(in.q, in.k, weights, attention::causal);
    } else {
      attention::attention_weights(in.q, in.k, weights);
    }
    out.noalias() = weights * in.v;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<Scalar>(state, support::attention_flops(seq_len, head_dim, causal),
                                     threads, clock);
}

// The seeds' attention, written by hand the way a C++ user would transcribe the NumPy:
//   scores = Q @ K.T / np.sqrt(d)
//   scores = scores + mask                      (mask = np.triu(np.full((N, N), -np.inf), k=1))
//   scores = scores - scores.max(axis=-1, keepdims=True)
//   e = np.exp(scores);  A = e / e.sum(axis=-1, keepdims=True)
//   return A @ V
// with Eigen's default (column-major) matrices, a 0 / -inf mask matrix built once outside the loop,
// and a fresh matrix for each step.
void BM_Naive(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  support::set_threads(threads);
  const Eigen::MatrixXf q = support::random_matrix<float, Eigen::ColMajor>(seq_len, head_dim, 1);
  const Eigen::MatrixXf k = support::random_matrix<float, Eigen::ColMajor>(seq_len, head_dim, 2);
  const Eigen::MatrixXf v = support::random_matrix<float, Eigen::ColMajor>(seq_len, head_dim, 3);
  Eigen::MatrixXf mask;
  if (causal) {
    mask = Eigen::MatrixXf::Zero(seq_len, seq_len);
    mask.triangularView<Eigen::StrictlyUpper>().setConstant(
        -std::numeric_limits<float>::infinity());
  }
  const support::LoopClock clock;
  for (auto _ : state) {
    Eigen::MatrixXf scores = q * k.transpose() / std::sqrt(static_cast<float>(head_dim));
    if (causal) scores += mask;
    const Eigen::VectorXf row_max = scores.rowwise().maxCoeff();
    const Eigen::MatrixXf e = (scores.colwise() - row_max).array().exp().matrix();
    const Eigen::VectorXf row_sum = e.rowwise().sum();
    const Eigen::MatrixXf a = (e.array().colwise() / row_sum.array()).matrix();
    const Eigen::MatrixXf out = a * v;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, support::attention_flops(seq_len, head_dim, causal),
                                    threads, clock);
}

const std::vector<std::string> arg_names = {"seq", "dim", "causal", "threads"};

void shapes(benchmark::internal::Benchmark* b, std::vector<int64_t> seq_lens,
            std::vector<int64_t> head_dims, std::vector<int64_t> threads) {
  b->ArgNames(arg_names)
      ->ArgsProduct({std::move(seq_lens), std::move(head_dims), {0, 1}, std::move(threads)})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

const std::vector<int64_t> seq_lens = {256, 1024, 4096};
const std::vector<int64_t> head_dims = {64, 128};

/// BM_Sdpa's float call and the low-precision calls at one shape, registered one after another.
void float_and_low_precision(int64_t seq_len, int64_t head_dim, int64_t causal, int64_t threads) {
  const std::pair<const char*, void (*)(benchmark::State&)> kinds[] = {
      {"BM_Sdpa", BM_Sdpa<float>},
      {"BM_SdpaHalf", BM_Sdpa<Eigen::half>},
      {"BM_SdpaBFloat16", BM_Sdpa<Eigen::bfloat16>},
      {"BM_SdpaFloatQHalfKV", BM_Sdpa<float, Eigen::half>},
      {"BM_SdpaFloatQBFloat16KV", BM_Sdpa<float, Eigen::bfloat16>}};
  for (const auto& [name, function] : kinds) {
    benchmark::RegisterBenchmark(name, function)
        ->ArgNames(arg_names)
        ->Args({seq_len, head_dim, causal, threads})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

// Registered once, statically; the names carry the shapes via ArgNames, e.g.
//   BM_Sdpa/seq:4096/dim:128/causal:1/threads:1/real_time
const bool registered = [] {
  shapes(benchmark::RegisterBenchmark("BM_Sdpa", BM_Sdpa<float>), {256}, head_dims,
         support::thread_counts());
  for (const int64_t seq_len : {1024, 4096}) {
    for (const int64_t head_dim : head_dims) {
      for (const int64_t causal : {0, 1}) {
        for (const int64_t threads : support::thread_counts()) {
          float_and_low_precision(seq_len, head_dim, causal, threads);
        }
      }
    }
  }
  shapes(benchmark::RegisterBenchmark("BM_Materialising", BM_Materialising<float>), seq_lens,
         head_dims, support::thread_counts());
  shapes(benchmark::RegisterBenchmark("BM_Naive", BM_Naive), seq_lens, head_dims,
         support::thread_counts());
  shapes(benchmark::RegisterBenchmark("BM_SdpaDouble", BM_Sdpa<double>), {1024, 4096}, {128},
         support::thread_counts());
  for (auto* b : {benchmark::RegisterBenchmark("BM_ToFloat<bfloat16>", BM_ToFloat<Eigen::bfloat16>),
                  benchmark::RegisterBenchmark("BM_ToFloat<half>", BM_ToFloat<Eigen::half>)}) {
    b->ArgNames({"seq", "dim"})->Args({4096, 128})->Unit(benchmark::kMicrosecond);
  }
  // Calls too small to share between two threads, and the sizes around the switch (scheduling.hpp,
  // min_multiply_adds_per_thread): 2 threads must never be slower than one.
  shapes(benchmark::RegisterBenchmark("BM_SdpaShort", BM_Sdpa<float>), {32, 64, 128, 192},
         head_dims, support::thread_counts());
  // N = 8192 (compare.py's longest row) and 16384: 1 GiB of float scores per materialised
  // 16384 x 16384 matrix, seconds per call for the materialising and naive paths (the naive one
  // holds about four such matrices), so those two run at 16384 only and on one thread.
  shapes(benchmark::RegisterBenchmark("BM_SdpaLong", BM_Sdpa<float>), {8192, 16384}, head_dims,
         support::thread_counts());
  shapes(benchmark::RegisterBenchmark("BM_MaterialisingLong", BM_Materialising<float>), {16384},
         head_dims, {1});
  shapes(benchmark::RegisterBenchmark("BM_NaiveLong", BM_Naive), {16384}, {128}, {1});
  return true;
}();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
