// SPDX-License-Identifier: MIT
//
// Throughput of the vectorised exp() of each instruction-set path (kernels/simd_{sse2,avx2,avx512}
// .hpp, issue 18), beside Eigen's array exp() built with this target's flags, in one run: exps/s,
// over 4096 arguments in [-20, 0] (the range of s - rowmax in a softmax) that stay in L1. A path
// the CPU cannot run is not registered (a line on stderr says so). The classes are not used by the
// kernels yet; this measures what the dispatch will have to work with.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <attention/detail/cpu_features.hpp>
#include <attention/kernels/simd_avx512.hpp>
#include <iostream>

#include "bench_support.hpp"

using attention::Index;

#if ATTENTION_HAS_DISPATCH

// y[0 .. n) = exp(x[0 .. n)), n a multiple of the width, compiled in the ISA's region.
#define ATTENTION_BENCH_EXP_ARRAY(isa)                                                   \
  namespace bench_##isa {                                                                \
    template <typename Scalar>                                                           \
    void exp_array(const Scalar* x, Scalar* y, Index n) {                                \
      using V = attention::detail::kernels::isa::Simd<Scalar>;                           \
      for (Index i = 0; i < n; i += V::width) V::storeu(y + i, V::exp(V::loadu(x + i))); \
    }                                                                                    \
  }

ATTENTION_BENCH_EXP_ARRAY(sse2)
ATTENTION_TARGET_AVX2_BEGIN
ATTENTION_BENCH_EXP_ARRAY(avx2)
ATTENTION_TARGET_END
ATTENTION_TARGET_AVX512_BEGIN
ATTENTION_BENCH_EXP_ARRAY(avx512)
ATTENTION_TARGET_END

#endif

namespace {

constexpr Index n = 4096;

template <typename Scalar>
Eigen::Array<Scalar, Eigen::Dynamic, 1> arguments() {
  return Eigen::Array<Scalar, Eigen::Dynamic, 1>::LinSpaced(n, Scalar(-20), Scalar(0));
}

template <typename Scalar>
void set_rate(benchmark::State& state) {
  state.counters["exps/s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

template <typename Scalar>
void BM_ExpEigen(benchmark::State& state) {
  const auto x = arguments<Scalar>();
  Eigen::Array<Scalar, Eigen::Dynamic, 1> y(n);
  for (auto _ : state) {
    y = x.exp();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate<Scalar>(state);
}

template <typename Scalar>
void BM_ExpPath(benchmark::State& state, void (*exp_array)(const Scalar*, Scalar*, Index)) {
  const auto x = arguments<Scalar>();
  Eigen::Array<Scalar, Eigen::Dynamic, 1> y(n);
  for (auto _ : state) {
    exp_array(x.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate<Scalar>(state);
}

template <typename Scalar>
void register_paths(const char* scalar) {
  using attention::detail::Isa;
  const std::string suffix = std::string("<") + scalar + ">";
  benchmark::RegisterBenchmark(("BM_ExpEigen" + suffix).c_str(), BM_ExpEigen<Scalar>);
#if ATTENTION_HAS_DISPATCH
  const struct {
    Isa isa;
    void (*f)(const Scalar*, Scalar*, Index);
  } paths[] = {{Isa::baseline, &bench_sse2::exp_array<Scalar>},
               {Isa::avx2, &bench_avx2::exp_array<Scalar>},
               {Isa::avx512, &bench_avx512::exp_array<Scalar>}};
  for (const auto& path : paths) {
    const std::string name =
        std::string("BM_Exp_") + attention::detail::isa_name(path.isa) + suffix;
    if (attention::detail::can_run(path.isa, attention::detail::cpu_features())) {
      benchmark::RegisterBenchmark(name.c_str(), BM_ExpPath<Scalar>, path.f);
    } else {
      std::cerr << name << ": not run, this CPU cannot run the path\n";
    }
  }
#endif
}

}  // namespace

int main(int argc, char** argv) {
  register_paths<float>("float");
  register_paths<double>("double");
  return support::run_benchmarks(argc, argv);
}
