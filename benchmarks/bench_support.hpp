#pragma once
// SPDX-License-Identifier: MIT
//
// Shared by the benchmark executables: random inputs, thread control, FLOP counters, and the
// machine's measured FMA peak, so that every result can also be read as a fraction of the peak.
// The peak is that of the instruction-set path the library's kernels run in this process
// (attention::active_isa(): AVX2 + FMA on a default-flags build for an AVX2 machine, whatever the
// benchmark's own -march), timed on that path's vectors; the output's context names it.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <attention/isa.hpp>
#include <attention/types.hpp>

// Eigen's packet types are raw compiler vector types whose alignment attributes GCC reports as
// ignored when they are template arguments (Eigen silences the same warning in its own headers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace support::fma_timing {
/// Independent FMA chains per timing loop (see fma_chains).
inline constexpr int chains = 12;
}  // namespace support::fma_timing

// The dispatched paths' FMA chains, written here with the intrinsics of each instruction set in
// functions compiled for it (target attributes: the benchmark's own flags may enable less), so that
// the benchmarks use attention's public names only. Called only on the path active_isa() names,
// which the CPU runs.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_MSC_VER)
#include <immintrin.h>
#define ATTENTION_BENCH_X86_PATHS 1

// fma_chains (below) on one instruction set's vectors of one scalar type.
#define ATTENTION_BENCH_FMA_CHAINS(path, target_set, Scalar, Vec, set1, fmadd, add, storeu)     \
  namespace support::fma_timing::path {                                                         \
  [[gnu::noinline, gnu::target(target_set)]] inline Scalar fma_chains(attention::Index repeats, \
                                                                      Scalar seed) {            \
    const Vec a = set1(Scalar(0.9999));                                                         \
    const Vec b = set1(Scalar(1e-4));                                                           \
    Vec acc[chains];                                                                            \
    for (int c = 0; c < chains; ++c) acc[c] = set1(seed + Scalar(c));                           \
    for (attention::Index r = 0; r < repeats; ++r) {                                            \
      _Pragma("GCC unroll 12") for (int c = 0; c < chains; ++c) acc[c] = fmadd(acc[c], a, b);   \
    }                                                                                           \
    for (int c = 1; c < chains; ++c) acc[0] = add(acc[0], acc[c]);                              \
    Scalar lanes[sizeof(Vec) / sizeof(Scalar)];                                                 \
    storeu(lanes, acc[0]);                                                                      \
    Scalar sum = 0;                                                                             \
    for (const Scalar x : lanes) sum += x;                                                      \
    return sum;                                                                                 \
  }                                                                                             \
  }

ATTENTION_BENCH_FMA_CHAINS(avx2, "avx2,fma", float, __m256, _mm256_set1_ps, _mm256_fmadd_ps,
                           _mm256_add_ps, _mm256_storeu_ps)
ATTENTION_BENCH_FMA_CHAINS(avx2, "avx2,fma", double, __m256d, _mm256_set1_pd, _mm256_fmadd_pd,
                           _mm256_add_pd, _mm256_storeu_pd)
ATTENTION_BENCH_FMA_CHAINS(avx512, "avx512f", float, __m512, _mm512_set1_ps, _mm512_fmadd_ps,
                           _mm512_add_ps, _mm512_storeu_ps)
ATTENTION_BENCH_FMA_CHAINS(avx512, "avx512f", double, __m512d, _mm512_set1_pd, _mm512_fmadd_pd,
                           _mm512_add_pd, _mm512_storeu_pd)
#undef ATTENTION_BENCH_FMA_CHAINS
namespace support::fma_timing {
namespace avx2 {
template <typename Scalar>
constexpr int lanes = static_cast<int>(32 / sizeof(Scalar));  // 256-bit vectors
}  // namespace avx2
namespace avx512 {
template <typename Scalar>
constexpr int lanes = static_cast<int>(64 / sizeof(Scalar));  // 512-bit vectors
}  // namespace avx512
}  // namespace support::fma_timing
#else
#define ATTENTION_BENCH_X86_PATHS 0
#endif

namespace support {

using attention::Index;

/// rows x cols matrix of standard normal entries (as the seeds' rng.standard_normal), reproducible
/// across platforms: std::mt19937 rather than Matrix::Random's std::rand.
template <typename Scalar, int Options = Eigen::RowMajor>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Options> random_matrix(Index rows, Index cols,
                                                                             unsigned seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<Scalar> normal;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Options> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(engine);
  return m;
}

/// True when the benchmarks were compiled with OpenMP, i.e. Eigen's products and any OpenMP kernel
/// in the library may use several threads.
inline constexpr bool has_openmp =
#ifdef _OPENMP
    true;
#else
    false;
#endif

/// Thread counts for the `threads` argument: 1 and 2 with OpenMP (this project's reference machine
/// has 2 cores), 1 without.
inline std::vector<int64_t> thread_counts() {
  if (has_openmp) return {1, 2};
  return {1};
}

/// Sets the threads used by OpenMP regions and by Eigen's products. Eigen reads its own setting
/// first and falls back to omp_get_max_threads(), so both are set.
inline void set_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
}

/// Timing of the FMA peak: the benchmarks' own helpers, on the vectors of the library's active
/// path (attention::active_isa()): the dispatched paths' Simd classes, or Eigen's packets for the
/// baseline path (the kernels' own vectors there).
namespace fma_timing {

/// `repeats` rounds of `chains` independent vector FMA chains, acc = acc * a + b; returns the sum
/// of the accumulators so that no chain is dead code. With a just below 1 the accumulators converge
/// to b / (1 - a) instead of overflowing. The chains outnumber latency x throughput (Zen 4: 4
/// cycles x one 512-bit or two 256-bit FMAs per cycle = 4 to 8 chains), so the FMA units, not the
/// dependencies, limit the rate. Eigen's pmadd is one fused instruction when the target has FMA,
/// and a multiply plus an add otherwise (still counted as 2 FLOPs: that is that target's peak).
template <typename Scalar>
[[gnu::noinline]] Scalar eigen_fma_chains(Index repeats, Scalar seed) {
  using namespace Eigen::internal;
  using Packet = typename packet_traits<Scalar>::type;
  const Packet a = pset1<Packet>(Scalar(0.9999));
  const Packet b = pset1<Packet>(Scalar(1e-4));
  Packet acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = pset1<Packet>(seed + Scalar(c));
  for (Index r = 0; r < repeats; ++r) {
#pragma GCC unroll 12
    for (int c = 0; c < chains; ++c) acc[c] = pmadd(acc[c], a, b);
  }
  Packet sum = acc[0];
  for (int c = 1; c < chains; ++c) sum = padd(sum, acc[c]);
  return predux(sum);
}

/// fma_chains on the vectors of the path the library's kernels run (attention::active_isa()).
template <typename Scalar>
Scalar fma_chains(Index repeats, Scalar seed) {
#if ATTENTION_BENCH_X86_PATHS
  switch (attention::active_isa()) {
    case attention::Isa::avx512:
      return avx512::fma_chains(repeats, seed);
    case attention::Isa::avx2:
      return avx2::fma_chains(repeats, seed);
    case attention::Isa::baseline:
      break;
  }
#endif
  return eigen_fma_chains(repeats, seed);
}

/// Lanes of one vector of fma_chains.
template <typename Scalar>
int fma_chain_lanes() {
#if ATTENTION_BENCH_X86_PATHS
  switch (attention::active_isa()) {
    case attention::Isa::avx512:
      return avx512::lanes<Scalar>;
    case attention::Isa::avx2:
      return avx2::lanes<Scalar>;
    case attention::Isa::baseline:
      break;
  }
#endif
  return Eigen::internal::packet_traits<Scalar>::size;
}

/// FLOPs of one fma_chains call per repeat: chains x lanes x (multiply + add).
template <typename Scalar>
double fma_chain_flops_per_repeat() {
  return chains * fma_chain_lanes<Scalar>() * 2.0;
}

/// Runs fma_chains on `threads` threads at once and returns the wall time in seconds.
template <typename Scalar>
double time_fma_chains(Index repeats, int threads, Scalar* sink) {
  const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const Scalar r = fma_chains<Scalar>(repeats, Scalar(omp_get_thread_num()));
#pragma omp critical
    *sink += r;
  }
#else
  (void)threads;
  *sink += fma_chains<Scalar>(repeats, Scalar(0));
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace fma_timing

/// FMA throughput of `threads` cores, in FLOP/s: the best of many ~2 ms trials, so that a trial the
/// scheduler interrupted (other processes on a shared machine) does not lower the figure.
template <typename Scalar>
double measure_fma_peak(int threads, double total_seconds = 0.15) {
  Scalar sink = 0;
  // Calibrate the repeats so one trial takes about 2 ms.
  Index repeats = 1024;
  while (fma_timing::time_fma_chains<Scalar>(repeats, threads, &sink) < 2e-3) repeats *= 2;
  const double flops = fma_timing::fma_chain_flops_per_repeat<Scalar>() * repeats * threads;
  double best = 0, spent = 0;
  for (int trial = 0; trial < 1000 && spent < total_seconds; ++trial) {
    const double seconds = fma_timing::time_fma_chains<Scalar>(repeats, threads, &sink);
    spent += seconds;
    best = std::max(best, flops / seconds);
  }
  benchmark::DoNotOptimize(sink);
  return best;
}

/// One core's FMA peak in FLOP/s, measured once (at program start, by run_benchmarks) and cached.
template <typename Scalar>
double fma_peak_one_core() {
  static const double peak = measure_fma_peak<Scalar>(1);
  return peak;
}

/// Wall-clock time of a benchmark's timed loop: start one just before `for (auto _ : state)`.
/// Google Benchmark 1.7 does not expose the loop's time to the benchmark, and peak_fraction, a
/// plain ratio, needs it (a rate counter would print as "0.74/s").
class LoopClock {
 public:
  [[nodiscard]] double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// Sets the counters every benchmark reports, for `flops` floating-point operations per iteration
/// on `threads` threads, after a loop timed by `clock`:
///   GFLOP/s        achieved rate over real time
///   peak_fraction  achieved / (threads x one core's FMA peak for this Scalar on the active path,
///                  measured at start)
template <typename Scalar>
void set_flop_counters(benchmark::State& state, double flops, int threads, const LoopClock& clock) {
  using benchmark::Counter;
  const double seconds = clock.seconds();
  state.counters["GFLOP/s"] = Counter(flops * 1e-9, Counter::kIsIterationInvariantRate);
  state.counters["peak_fraction"] = flops * static_cast<double>(state.iterations()) /
                                    (seconds * threads * fma_peak_one_core<Scalar>());
}

/// FLOPs of single-head attention: q k^T and p v, 2 N^2 d each; a causal mask halves the useful
/// work, and the comparisons (issue #2) count only that half.
inline double attention_flops(Index seq_len, Index head_dim, bool causal) {
  const double full = 4.0 * static_cast<double>(seq_len) * seq_len * head_dim;
  return causal ? full / 2 : full;
}

/// FMA-throughput benchmark: Args {bits (32 or 64), threads}. Reports GFLOP/s and peak_fraction
/// against threads x the one-core peak measured at start, so 2 threads show the scaling.
inline void BM_FmaPeak(benchmark::State& state) {
  const bool fp64 = state.range(0) == 64;
  const int threads = static_cast<int>(state.range(1));
  set_threads(threads);
  double sink = 0;
  const Index repeats = 1 << 16;
  const LoopClock clock;
  for (auto _ : state) {
    if (fp64) {
      fma_timing::time_fma_chains<double>(repeats, threads, &sink);
    } else {
      float s = 0;
      fma_timing::time_fma_chains<float>(repeats, threads, &s);
      sink += s;
    }
  }
  benchmark::DoNotOptimize(sink);
  const double flops = (fp64 ? fma_timing::fma_chain_flops_per_repeat<double>()
                             : fma_timing::fma_chain_flops_per_repeat<float>()) *
                       repeats * threads;
  if (fp64) {
    set_flop_counters<double>(state, flops, threads, clock);
  } else {
    set_flop_counters<float>(state, flops, threads, clock);
  }
}

/// main() of every benchmark executable: measures the FMA peaks once (recorded in the JSON context
/// as fma_peak_fp32_gflops / fma_peak_fp64_gflops), registers BM_FmaPeak, and runs. Unless the
/// command line sets --benchmark_min_time, each benchmark runs for at least 0.2 s (a flag, not
/// Benchmark::MinTime, which would override the command line).
inline int run_benchmarks(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string default_min_time = "--benchmark_min_time=0.2";
  const bool has_min_time = std::any_of(args.begin() + 1, args.end(), [](const char* a) {
    return std::strncmp(a, "--benchmark_min_time", 20) == 0;
  });
  if (!has_min_time) args.insert(args.begin() + 1, default_min_time.data());
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;

  benchmark::RegisterBenchmark("BM_FmaPeak", BM_FmaPeak)
      ->ArgNames({"bits", "threads"})
      ->ArgsProduct({{32, 64}, thread_counts()})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();

  set_threads(1);
  const double fp32 = fma_peak_one_core<float>() * 1e-9;
  const double fp64 = fma_peak_one_core<double>() * 1e-9;
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f", fp32);
  benchmark::AddCustomContext("fma_peak_fp32_gflops", buffer);
  std::snprintf(buffer, sizeof buffer, "%.1f", fp64);
  benchmark::AddCustomContext("fma_peak_fp64_gflops", buffer);
  const char* path = attention::isa_name(attention::active_isa());
  benchmark::AddCustomContext("fma_peak_path", path);
  char peak[160];
  std::snprintf(peak, sizeof peak,
                "threads x one core's FMA peak on the %s path: FP32 %.1f, FP64 %.1f GFLOP/s "
                "(%d-lane FP32 vectors)",
                path, fp32, fp64, fma_timing::fma_chain_lanes<float>());
  benchmark::AddCustomContext("peak_fraction_of", peak);
  benchmark::AddCustomContext("openmp", has_openmp ? "on" : "off");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace support

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
