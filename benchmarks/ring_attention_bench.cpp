// SPDX-License-Identifier: MIT
//
// Ring attention over MPI (<attention/mpi.hpp>) against the single-process call, in one run:
//   mpiexec -n 2 build-bench/benchmarks/ring_attention_bench
// (Open MPI as root: add --allow-run-as-root; see docs/ring_attention.md for the environment).
//   BM_SingleProcess   scaled_dot_product_attention_lse on the whole sequence, on rank 0 alone, one
//                      thread; the other ranks sleep meanwhile (they do not spin on a core)
//   BM_Ring            ring_attention_lse on P ranks of one thread each, the sequence in the
//                      layout of `layout` (0 contiguous, 1 zigzag)
// Args: seq (N), dim (d = d_k = d_v), layout, causal, backward (1: ring_attention_backward and
// the single-process backward from the saved out and lse). Every rank runs every benchmark for
// the same fixed number of iterations (the ring calls are collective, so Google Benchmark's
// adaptive iteration count, which would differ between ranks, cannot be used); rank 0 reports.
//
// Counters of BM_Ring (each a maximum over the ranks):
//   GFLOP/s            useful FLOPs of the whole problem (4 N^2 d forward, half of it causal;
//                      2.5 times that backward) over the ring's time
//   vs_single          the ring's time / BM_SingleProcess's at the same N, d and mask (same run):
//                      the target is <= 0.6 for N = 8192, d = 128, causal zigzag, 2 ranks
//   sent_MiB           bytes each rank sends per call (K/V blocks; backward also dK/dV sums)
//   wait_ms            time a rank was blocked on transfers (communication not hidden)
//   alone_ms           the same transfers without computation, measured here before the loop
//   hidden             1 - wait_ms / alone_ms, clamped to [0, 1]: the fraction of the
//                      communication the computation hid
//   compute_ms         time in the kernels and merges

#include <benchmark/benchmark.h>
#include <mpi.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <attention/mpi.hpp>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench_support.hpp"

namespace {

using attention::Index;
using attention::Matrix;
using attention::mpi::Layout;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

/// A barrier that sleeps rather than spins while it waits, so that a waiting rank leaves its core
/// to the ranks still working.
void sleeping_barrier() {
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  int done = 0;
  while (true) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

double max_over_ranks(double x) {
  double result = 0;
  MPI_Allreduce(&x, &result, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return result;
}

/// This rank's global rows of an N-token sequence in `layout` (equal shards).
std::vector<Index> my_rows(Index seq_len, Layout layout) {
  const Index ranks = world_size(), rank = world_rank(), shard = seq_len / ranks;
  std::vector<Index> rows;
  rows.reserve(static_cast<std::size_t>(shard));
  if (layout == Layout::contiguous) {
    for (Index i = 0; i < shard; ++i) rows.push_back(rank * shard + i);
  } else {
    const Index chunk = shard / 2;
    for (Index c : {rank, 2 * ranks - 1 - rank}) {
      for (Index i = 0; i < chunk; ++i) rows.push_back(c * chunk + i);
    }
  }
  return rows;
}

Matrix<float> take_rows(const Matrix<float>& m, const std::vector<Index>& rows) {
  Matrix<float> out(static_cast<Index>(rows.size()), m.cols());
  for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Index>(i)) = m.row(rows[i]);
  return out;
}

/// The whole problem, the same on every rank (seeded), and this rank's rows of it.
struct Problem {
  Matrix<float> q, k, v, d_out;
  std::vector<Index> rows;
  Problem(Index seq_len, Index dim, Layout layout)
      : q(support::random_matrix<float>(seq_len, dim, 1)),
        k(support::random_matrix<float>(seq_len, dim, 2)),
        v(support::random_matrix<float>(seq_len, dim, 3)),
        d_out(support::random_matrix<float>(seq_len, dim, 4)),
        rows(my_rows(seq_len, layout)) {}
};

/// Seconds of one BM_SingleProcess iteration, by (N, d, causal, backward), for vs_single.
std::map<std::tuple<Index, Index, bool, bool>, double>& single_process_seconds() {
  static std::map<std::tuple<Index, Index, bool, bool>, double> seconds;
  return seconds;
}

/// The ring's K/V transfers alone (P - 1 steps of one block each way, as the ring sends them,
/// plus the backward's P steps of dK/dV sums), without computation: the best of 5 runs, as a
/// maximum over the ranks.
double transfers_alone_seconds(Index shard, Index dim, bool backward) {
  const int ranks = world_size(), rank = world_rank();
  if (ranks == 1) return 0;
  const int next = (rank + 1) % ranks, previous = (rank + ranks - 1) % ranks;
  const int count = static_cast<int>(shard * dim);
  std::vector<float> send_k(static_cast<std::size_t>(count), 1.0f), send_v(send_k);
  std::vector<float> recv_k(send_k.size()), recv_v(send_k.size());
  const int steps = backward ? 2 * ranks - 1 : ranks - 1;
  double best = 1e30;
  for (int trial = 0; trial < 5; ++trial) {
    sleeping_barrier();
    const double start = MPI_Wtime();
    for (int s = 0; s < steps; ++s) {
      MPI_Request requests[4];
      MPI_Irecv(recv_k.data(), count, MPI_FLOAT, previous, 0, MPI_COMM_WORLD, &requests[0]);
      MPI_Irecv(recv_v.data(), count, MPI_FLOAT, previous, 1, MPI_COMM_WORLD, &requests[1]);
      MPI_Isend(send_k.data(), count, MPI_FLOAT, next, 0, MPI_COMM_WORLD, &requests[2]);
      MPI_Isend(send_v.data(), count, MPI_FLOAT, next, 1, MPI_COMM_WORLD, &requests[3]);
      MPI_Waitall(4, requests, MPI_STATUSES_IGNORE);
    }
    best = std::min(best, max_over_ranks(MPI_Wtime() - start));
  }
  return best;
}

void BM_SingleProcess(benchmark::State& state) {
  const Index seq_len = state.range(0), dim = state.range(1);
  const bool causal = state.range(3) != 0, backward = state.range(4) != 0;
  support::set_threads(1);
  const Problem p(seq_len, dim, Layout::contiguous);
  attention::PartialAttention<float> forward;
  attention::AttentionGradients<float> grads;
  const auto run_forward = [&] {
    forward = causal ? attention::scaled_dot_product_attention_lse(p.q, p.k, p.v, attention::causal)
                     : attention::scaled_dot_product_attention_lse(p.q, p.k, p.v);
  };
  if (world_rank() == 0 && backward) run_forward();
  double total = 0;
  for (auto _ : state) {
    sleeping_barrier();
    double seconds = 0;
    if (world_rank() == 0) {
      const double start = MPI_Wtime();
      if (!backward) {
        run_forward();
      } else if (causal) {
        attention::scaled_dot_product_attention_backward(p.q, p.k, p.v, forward.output, forward.lse,
                                                         p.d_out, grads, attention::causal);
      } else {
        attention::scaled_dot_product_attention_backward(p.q, p.k, p.v, forward.output, forward.lse,
                                                         p.d_out, grads);
      }
      seconds = MPI_Wtime() - start;
    }
    benchmark::DoNotOptimize(forward.output.data());
    benchmark::DoNotOptimize(grads.dq.data());
    seconds = max_over_ranks(seconds);
    total += seconds;
    state.SetIterationTime(seconds);
  }
  single_process_seconds()[{seq_len, dim, causal, backward}] =
      total / static_cast<double>(state.iterations());
  const double flops = support::attention_flops(seq_len, dim, causal) * (backward ? 2.5 : 1.0);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Ring(benchmark::State& state) {
  const Index seq_len = state.range(0), dim = state.range(1);
  const Layout layout = state.range(2) != 0 ? Layout::zigzag : Layout::contiguous;
  const bool causal = state.range(3) != 0, backward = state.range(4) != 0;
  support::set_threads(1);
  const Problem p(seq_len, dim, layout);
  const Matrix<float> q = take_rows(p.q, p.rows), k = take_rows(p.k, p.rows),
                      v = take_rows(p.v, p.rows), d_out = take_rows(p.d_out, p.rows);
  attention::mpi::RingStats stats;
  const attention::mpi::RingOptions options{layout, &stats};
  const auto run_forward = [&] {
    return causal ? attention::mpi::ring_attention_lse(MPI_COMM_WORLD, q, k, v, attention::causal,
                                                       {}, options)
                  : attention::mpi::ring_attention_lse(MPI_COMM_WORLD, q, k, v, {}, {}, options);
  };
  const attention::PartialAttention<float> saved = run_forward();  // also a warm-up
  const double alone = transfers_alone_seconds(q.rows(), dim, backward);
  double total = 0, waiting = 0, computing = 0;
  for (auto _ : state) {
    sleeping_barrier();
    const double start = MPI_Wtime();
    if (!backward) {
      benchmark::DoNotOptimize(run_forward().output.data());
    } else if (causal) {
      benchmark::DoNotOptimize(
          attention::mpi::ring_attention_backward(MPI_COMM_WORLD, q, k, v, saved.output, saved.lse,
                                                  d_out, attention::causal, {}, options)
              .dq.data());
    } else {
      benchmark::DoNotOptimize(attention::mpi::ring_attention_backward(MPI_COMM_WORLD, q, k, v,
                                                                       saved.output, saved.lse,
                                                                       d_out, {}, {}, options)
                                   .dq.data());
    }
    const double seconds = max_over_ranks(MPI_Wtime() - start);
    total += seconds;
    waiting += max_over_ranks(stats.seconds_waiting);
    computing += max_over_ranks(stats.seconds_computing);
    state.SetIterationTime(seconds);
  }
  const double iterations = static_cast<double>(state.iterations());
  const double flops = support::attention_flops(seq_len, dim, causal) * (backward ? 2.5 : 1.0);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const auto& single = single_process_seconds();
  const auto found = single.find({seq_len, dim, causal, backward});
  if (found != single.end()) state.counters["vs_single"] = total / iterations / found->second;
  state.counters["sent_MiB"] =
      max_over_ranks(static_cast<double>(stats.bytes_sent)) / (1024.0 * 1024.0);
  state.counters["wait_ms"] = 1e3 * waiting / iterations;
  state.counters["alone_ms"] = 1e3 * alone;
  state.counters["compute_ms"] = 1e3 * computing / iterations;
  if (alone > 0) {
    state.counters["hidden"] = std::clamp(1.0 - waiting / iterations / alone, 0.0, 1.0);
  }
}

/// Prints nothing: the reporter of every rank but 0.
class SilentReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // Rank 0 alone writes --benchmark_out: the other ranks drop the flag.
  std::vector<char*> args(argv, argv + argc);
  if (world_rank() != 0) {
    args.erase(std::remove_if(
                   args.begin() + 1, args.end(),
                   [](const char* a) { return std::string(a).rfind("--benchmark_out", 0) == 0; }),
               args.end());
  }
  argc = static_cast<int>(args.size());
  argv = args.data();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    MPI_Finalize();
    return 1;
  }
  // N, d, layout, causal, backward. The single-process baselines first: BM_Ring's vs_single
  // reads them.
  const std::vector<std::vector<int64_t>> shapes = {{2048, 8192}, {128}};
  for (int64_t backward : {0, 1}) {
    benchmark::RegisterBenchmark("BM_SingleProcess", BM_SingleProcess)
        ->ArgNames({"seq", "dim", "layout", "causal", "backward"})
        ->ArgsProduct({shapes[0], shapes[1], {0}, {1}, {backward}})
        ->Iterations(3)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_Ring", BM_Ring)
        ->ArgNames({"seq", "dim", "layout", "causal", "backward"})
        ->ArgsProduct({shapes[0], shapes[1], {0, 1}, {1}, {backward}})
        ->Iterations(3)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::AddCustomContext("ranks", std::to_string(world_size()));
  if (world_rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    SilentReporter silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
