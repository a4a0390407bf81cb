// SPDX-License-Identifier: MIT
//
// The per-ISA SIMD classes (kernels/simd_{sse2,avx2,avx512}.hpp) and the CPU detection and
// ATTENTION_ISA parsing (detail/cpu_features.hpp) of issue 18's run-time dispatch, ahead of their
// wiring into the kernels. Every class the CPU can run is checked member by member against scalar
// loops: exp and tanh against long double std::exp / std::tanh on dense sweeps with a stated ulp
// bound and exact special values; the rest exactly. A class the CPU cannot run is reported as
// skipped. Built with -O2 and no -march (tests/CMakeLists.txt): the build issue 18 is about.
// simd_isa_no_dispatch_test.cpp (same executable) compiles the headers under ATTENTION_NO_DISPATCH.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/detail/cpu_features.hpp>
#include <attention/kernels/simd_avx512.hpp>
#include <attention/kernels/target_regions.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/random.hpp"

namespace {

using attention::Index;
using attention::detail::can_run;
using attention::detail::cpu_features;
using attention::detail::CpuFeatures;
using attention::detail::Isa;

// --- ATTENTION_ISA parsing and the choice of path (any platform) ---------------------------------

TEST(ParseIsa, AcceptsEachPathNameIgnoringCase) {
  EXPECT_EQ(attention::detail::parse_isa("baseline"), Isa::baseline);
  EXPECT_EQ(attention::detail::parse_isa("avx2"), Isa::avx2);
  EXPECT_EQ(attention::detail::parse_isa("avx512"), Isa::avx512);
  EXPECT_EQ(attention::detail::parse_isa("AVX512"), Isa::avx512);
  EXPECT_EQ(attention::detail::parse_isa("Avx2"), Isa::avx2);
}

TEST(ParseIsa, NativeAndEmptyMeanTheBest) {
  EXPECT_EQ(attention::detail::parse_isa("native"), std::nullopt);
  EXPECT_EQ(attention::detail::parse_isa(""), std::nullopt);
}

TEST(ParseIsa, UnknownValueNamesItAndTheAcceptedOnes) {
  for (const char* bad : {"sse4", "avx", "avx2 ", "avx-512", "x86-64-v3"}) {
    try {
      (void)attention::detail::parse_isa(bad);
      ADD_FAILURE() << "no exception for \"" << bad << "\"";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::string("ATTENTION_ISA=\"") + bad + "\""), std::string::npos)
          << message;
      EXPECT_NE(message.find("baseline, avx2, avx512, native (or empty)"), std::string::npos)
          << message;
    }
  }
}

CpuFeatures avx2_cpu() {
  CpuFeatures f;
  f.avx = f.avx2 = f.fma = f.f16c = true;
  return f;
}
CpuFeatures avx512_cpu() {
  CpuFeatures f = avx2_cpu();
  f.avx512f = f.avx512cd = f.avx512bw = f.avx512dq = f.avx512vl = true;
  return f;
}

TEST(ChooseIsa, BestPathForEachFeatureSet) {
  EXPECT_EQ(attention::detail::best_isa(CpuFeatures{}), Isa::baseline);
  EXPECT_EQ(attention::detail::best_isa(avx2_cpu()), Isa::avx2);
  EXPECT_EQ(attention::detail::best_isa(avx512_cpu()), Isa::avx512);
  CpuFeatures no_fma = avx2_cpu();
  no_fma.fma = false;  // AVX2 without FMA (no such CPU is known, but the region uses FMA)
  EXPECT_EQ(attention::detail::best_isa(no_fma), Isa::baseline);
  CpuFeatures no_bw = avx512_cpu();
  no_bw.avx512bw = false;  // AVX-512F without BW (Xeon Phi): the region enables BW
  EXPECT_EQ(attention::detail::best_isa(no_bw), Isa::avx2);
}

TEST(ChooseIsa, HonoursARequestTheCpuCanRun) {
  const CpuFeatures cpu = avx512_cpu();
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    const auto choice = attention::detail::choose_isa(attention::detail::isa_name(isa), cpu);
    EXPECT_EQ(choice.isa, isa);
    EXPECT_TRUE(choice.note.empty()) << choice.note;
    EXPECT_TRUE(choice.error.empty()) << choice.error;
  }
  EXPECT_EQ(attention::detail::choose_isa(nullptr, cpu).isa, Isa::avx512);
  EXPECT_EQ(attention::detail::choose_isa("", cpu).isa, Isa::avx512);
  EXPECT_EQ(attention::detail::choose_isa("native", avx2_cpu()).isa, Isa::avx2);
}

TEST(ChooseIsa, FallsBackToTheBestWhenTheCpuLacksTheRequest) {
  const auto on_avx2 = attention::detail::choose_isa("avx512", avx2_cpu());
  EXPECT_EQ(on_avx2.isa, Isa::avx2);
  EXPECT_EQ(on_avx2.note,
            "attention: ATTENTION_ISA=avx512: this CPU cannot run avx512; using avx2");
  EXPECT_TRUE(on_avx2.error.empty());
  const auto on_sse2 = attention::detail::choose_isa("avx2", CpuFeatures{});
  EXPECT_EQ(on_sse2.isa, Isa::baseline);
  EXPECT_NE(on_sse2.note.find("cannot run avx2; using baseline"), std::string::npos);
}

TEST(ChooseIsa, RecordsAnUnknownValueAsAnError) {
  const auto choice = attention::detail::choose_isa("neon", avx2_cpu());
  EXPECT_EQ(choice.error,
            "attention: ATTENTION_ISA=\"neon\" is not one of baseline, avx2, avx512, native (or "
            "empty)");
}

TEST(ChooseIsa, EnvironmentIsReadOnce) {
  const char* original = std::getenv("ATTENTION_ISA");
  const std::optional<std::string> saved =
      original ? std::optional<std::string>(original) : std::nullopt;
  const attention::detail::IsaChoice& first = attention::detail::isa_choice();
  const std::string setting = first.setting;
  ::setenv("ATTENTION_ISA", "not-an-isa", 1);
  const attention::detail::IsaChoice& second = attention::detail::isa_choice();
  EXPECT_EQ(second.setting, setting);
  EXPECT_NE(second.setting, "not-an-isa");
  if (first.error.empty()) {
    EXPECT_EQ(attention::detail::selected_isa(), first.isa);
    EXPECT_TRUE(can_run(first.isa, cpu_features()));
  } else {  // the test was started with an invalid ATTENTION_ISA: every call reports it
    EXPECT_THROW((void)attention::detail::selected_isa(), std::invalid_argument);
    EXPECT_THROW((void)attention::detail::selected_isa(), std::invalid_argument);
  }
  if (saved) {
    ::setenv("ATTENTION_ISA", saved->c_str(), 1);
  } else {
    ::unsetenv("ATTENTION_ISA");
  }
}

// --- Detection, against the compiler's __builtin_cpu_supports and Linux's /proc/cpuinfo ----------

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

/// The "flags" line of /proc/cpuinfo (Linux hides what the OS does not enable), or "".
std::string cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) return line.substr(line.find(':') + 1) + " ";
  }
  return "";
}

TEST(CpuFeatures, AgreeWithTheCompilersBuiltins) {
  const CpuFeatures& f = cpu_features();
  EXPECT_EQ(f.avx, __builtin_cpu_supports("avx") != 0);
  EXPECT_EQ(f.avx2, __builtin_cpu_supports("avx2") != 0);
  EXPECT_EQ(f.fma, __builtin_cpu_supports("fma") != 0);
  EXPECT_EQ(f.avx512f, __builtin_cpu_supports("avx512f") != 0);
  EXPECT_EQ(f.avx512cd, __builtin_cpu_supports("avx512cd") != 0);
  EXPECT_EQ(f.avx512bw, __builtin_cpu_supports("avx512bw") != 0);
  EXPECT_EQ(f.avx512dq, __builtin_cpu_supports("avx512dq") != 0);
  EXPECT_EQ(f.avx512vl, __builtin_cpu_supports("avx512vl") != 0);
  EXPECT_EQ(f.avx512_bf16, __builtin_cpu_supports("avx512bf16") != 0);
#if !defined(__clang__)  // clang 14 does not know "f16c"
  EXPECT_EQ(f.f16c, __builtin_cpu_supports("f16c") != 0);
#endif
}

TEST(CpuFeatures, AgreeWithProcCpuinfo) {
  const std::string flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo";
  const auto has = [&](const char* name) {
    return flags.find(std::string(" ") + name + " ") != std::string::npos;
  };
  const CpuFeatures& f = cpu_features();
  EXPECT_EQ(f.avx, has("avx"));
  EXPECT_EQ(f.avx2, has("avx2"));
  EXPECT_EQ(f.fma, has("fma"));
  EXPECT_EQ(f.f16c, has("f16c"));
  EXPECT_EQ(f.avx512f, has("avx512f"));
  EXPECT_EQ(f.avx512cd, has("avx512cd"));
  EXPECT_EQ(f.avx512bw, has("avx512bw"));
  EXPECT_EQ(f.avx512dq, has("avx512dq"));
  EXPECT_EQ(f.avx512vl, has("avx512vl"));
  EXPECT_EQ(f.avx512_bf16, has("avx512_bf16"));
  std::cout << "CPU: best path " << attention::detail::isa_name(attention::detail::best_isa(f))
            << (f.avx512_bf16 ? ", AVX512_BF16" : "") << "\n";
}

#endif

// --- The SIMD classes --------------------------------------------------------------------------

#if ATTENTION_HAS_DISPATCH

/// The members of one ISA's Simd<Scalar>, reached through plain pointers (simd_isa_probes.inc).
template <typename Scalar>
struct ProbeTable {
  Index width;
  int registers;
  std::size_t vector_bytes;
  void (*exp)(const Scalar*, Scalar*, Index);
  void (*tanh)(const Scalar*, Scalar*, Index);
  void (*add)(const Scalar*, const Scalar*, Scalar*, Index);
  void (*sub)(const Scalar*, const Scalar*, Scalar*, Index);
  void (*mul)(const Scalar*, const Scalar*, Scalar*, Index);
  void (*max)(const Scalar*, const Scalar*, Scalar*, Index);
  void (*nan_or)(const Scalar*, const Scalar*, Scalar*, Index);
  void (*fma)(const Scalar*, const Scalar*, const Scalar*, Scalar*, Index);
  void (*zero_where_equal)(const Scalar*, const Scalar*, Scalar, Scalar*, Index);
  void (*sum)(const Scalar*, Scalar*, Index);
  void (*max_of)(const Scalar*, Scalar*, Index);
  void (*load_store)(const Scalar*, Scalar*);
  void (*loadu_storeu)(const Scalar*, Scalar*);
  void (*broadcast)(Scalar, Scalar*);
  void (*zero)(Scalar*);
  void (*sum_each)(const Scalar*, Scalar*);
  void (*max_each)(const Scalar*, Scalar*);
  void (*transpose)(const Scalar*, Scalar*);  // null where the class has none
  void (*exp_weight)(const Scalar*, Scalar*, Index);
};

}  // namespace

namespace probes_sse2 {
using attention::Index;
template <typename Scalar>
using Simd = attention::detail::kernels::sse2::Simd<Scalar>;
#include "kernels/simd_isa_probes.inc"
}  // namespace probes_sse2

ATTENTION_TARGET_AVX2_BEGIN
namespace probes_avx2 {
using attention::Index;
template <typename Scalar>
using Simd = attention::detail::kernels::avx2::Simd<Scalar>;
#include "kernels/simd_isa_probes.inc"
}  // namespace probes_avx2
ATTENTION_TARGET_END

ATTENTION_TARGET_AVX512_BEGIN
namespace probes_avx512 {
using attention::Index;
template <typename Scalar>
using Simd = attention::detail::kernels::avx512::Simd<Scalar>;
#include "kernels/simd_isa_probes.inc"
}  // namespace probes_avx512
ATTENTION_TARGET_END

namespace {

template <Isa I, typename S>
struct Path {
  static constexpr Isa isa = I;
  using Scalar = S;
  /// The probes; call only where can_run(isa, cpu_features()) (they are compiled for the ISA).
  static ProbeTable<S> probes() {
    if constexpr (I == Isa::avx512) {
      return probes_avx512::Probes<S>::table();
    } else if constexpr (I == Isa::avx2) {
      return probes_avx2::Probes<S>::table();
    } else {
      return probes_sse2::Probes<S>::table();
    }
  }
};

struct PathNames {
  template <typename P>
  static std::string GetName(int) {
    return std::string(attention::detail::isa_name(P::isa)) +
           (std::is_same_v<typename P::Scalar, float> ? "_float" : "_double");
  }
};

template <typename P>
class SimdIsa : public ::testing::Test {
 protected:
  using Scalar = typename P::Scalar;
  using Limits = std::numeric_limits<Scalar>;
  static constexpr bool is_float = std::is_same_v<Scalar, float>;
  static constexpr bool has_fma = P::isa != Isa::baseline;

  void SetUp() override {
    if (!can_run(P::isa, cpu_features())) {
      GTEST_SKIP() << "this CPU cannot run the " << attention::detail::isa_name(P::isa) << " path";
    }
    simd = P::probes();
  }

  /// n rounded up to whole vectors, the rest padded with `fill`.
  std::vector<Scalar> padded(std::vector<Scalar> x, Scalar fill = Scalar(0)) const {
    x.resize(static_cast<std::size_t>((static_cast<Index>(x.size()) + simd.width - 1) / simd.width *
                                      simd.width),
             fill);
    return x;
  }

  /// Normal-ish values in (-3.5, 3.5) from a fixed seed, padded to whole vectors with 0.
  std::vector<Scalar> random_values(std::size_t n, std::uint32_t seed) const {
    std::mt19937 engine(seed);
    std::vector<Scalar> x(n);
    for (auto& v : x) v = static_cast<Scalar>(support::normalish(engine));
    return padded(x);
  }

  /// e.g. "avx2 exp<float>"
  static std::string name(const char* function) {
    return std::string(attention::detail::isa_name(P::isa)) + " " + function +
           (is_float ? "<float>" : "<double>");
  }

  ProbeTable<Scalar> simd{};
};

using Paths = ::testing::Types<Path<Isa::baseline, float>, Path<Isa::baseline, double>,
                               Path<Isa::avx2, float>, Path<Isa::avx2, double>,
                               Path<Isa::avx512, float>, Path<Isa::avx512, double>>;
TYPED_TEST_SUITE(SimdIsa, Paths, PathNames);

TYPED_TEST(SimdIsa, WidthAndRegistersFitTheInstructionSet) {
  const std::size_t bytes = TypeParam::isa == Isa::avx512 ? 64
                            : TypeParam::isa == Isa::avx2 ? 32
                                                          : 16;
  EXPECT_EQ(this->simd.vector_bytes, bytes);
  EXPECT_EQ(this->simd.width, static_cast<Index>(bytes / sizeof(typename TestFixture::Scalar)));
  EXPECT_EQ(this->simd.registers, TypeParam::isa == Isa::avx512 ? 32 : 16);
}

TYPED_TEST(SimdIsa, LoadAndStoreMoveExactlyOneVector) {
  using Scalar = typename TestFixture::Scalar;
  const Index w = this->simd.width;
  const Scalar guard = Scalar(-7.25);
  alignas(64) Scalar in[64], out[64];
  for (Index i = 0; i < 64; ++i) in[i] = Scalar(i) + Scalar(0.5);
  // Aligned, at 0 and at the next vector boundary.
  for (Index at : {Index(0), w}) {
    std::fill(out, out + 64, guard);
    this->simd.load_store(in + at, out + at);
    for (Index i = 0; i < 64; ++i) {
      EXPECT_EQ(out[i], i >= at && i < at + w ? in[i] : guard) << "aligned at " << at << ", " << i;
    }
  }
  // Unaligned, at every offset inside a vector (reads and writes at the same offset).
  for (Index at = 1; at < w + 1; ++at) {
    std::fill(out, out + 64, guard);
    this->simd.loadu_storeu(in + at, out + at);
    for (Index i = 0; i < 64; ++i) {
      EXPECT_EQ(out[i], i >= at && i < at + w ? in[i] : guard)
          << "unaligned at " << at << ", " << i;
    }
  }
  this->simd.broadcast(Scalar(3.5), out);
  this->simd.zero(out + w);
  for (Index i = 0; i < w; ++i) {
    EXPECT_EQ(out[i], Scalar(3.5));
    EXPECT_EQ(out[w + i], Scalar(0));
    EXPECT_FALSE(std::signbit(out[w + i]));
  }
}

TYPED_TEST(SimdIsa, ArithmeticIsIeeeLaneByLane) {
  using Scalar = typename TestFixture::Scalar;
  const auto a = this->random_values(256, 1), b = this->random_values(256, 2),
             c = this->random_values(256, 3);
  const Index n = static_cast<Index>(a.size());
  std::vector<Scalar> y(a.size());
  this->simd.add(a.data(), b.data(), y.data(), n);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(y[i], a[i] + b[i]) << i;
  this->simd.sub(a.data(), b.data(), y.data(), n);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(y[i], a[i] - b[i]) << i;
  this->simd.mul(a.data(), b.data(), y.data(), n);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(y[i], a[i] * b[i]) << i;
  // fma: one rounding with FMA (std::fma), two without (SSE2). The inputs must tell them apart.
  this->simd.fma(a.data(), b.data(), c.data(), y.data(), n);
  int fused_differs = 0;
  for (Index i = 0; i < n; ++i) {
    const Scalar product = a[i] * b[i];  // this file is compiled without FMA: not contracted
    const Scalar fused = std::fma(a[i], b[i], c[i]), unfused = product + c[i];
    fused_differs += fused != unfused;
    EXPECT_EQ(y[i], TestFixture::has_fma ? fused : unfused) << i;
  }
  EXPECT_GT(fused_differs, 0);
}

TYPED_TEST(SimdIsa, MaxPropagatesNanFromEitherSide) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Scalar nan = Limits::quiet_NaN(), inf = Limits::infinity();
  const std::vector<Scalar> values = {Scalar(1), Scalar(-2), Scalar(0.5), inf,
                                      -inf,      nan,        Scalar(0)};
  std::vector<Scalar> a, b;
  for (Scalar x : values) {
    for (Scalar y : values) {
      a.push_back(x);
      b.push_back(y);
    }
  }
  a = this->padded(a);
  b = this->padded(b);
  std::vector<Scalar> y(a.size());
  this->simd.max(a.data(), b.data(), y.data(), static_cast<Index>(a.size()));
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      EXPECT_TRUE(std::isnan(y[i])) << "max(" << a[i] << ", " << b[i] << ") = " << y[i];
    } else if (a[i] != b[i]) {
      EXPECT_EQ(y[i], std::max(a[i], b[i])) << "max(" << a[i] << ", " << b[i] << ")";
    }
  }
}

TYPED_TEST(SimdIsa, MaxOfIsNanWhenAnyLaneIs) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Index w = this->simd.width;
  Scalar out = 0;
  for (Index nan_at = -1; nan_at < w; ++nan_at) {  // -1: no NaN
    for (Index max_at = 0; max_at < w; ++max_at) {
      std::vector<Scalar> x(static_cast<std::size_t>(w), -Limits::infinity());
      for (Index i = 0; i < w; ++i) x[i] = Scalar(-100 + 3 * ((i * 7) % w));
      x[max_at] = Scalar(1000);
      if (nan_at >= 0) x[nan_at] = Limits::quiet_NaN();
      this->simd.max_of(x.data(), &out, w);
      if (nan_at >= 0) {
        EXPECT_TRUE(std::isnan(out)) << "NaN in lane " << nan_at << ", max in lane " << max_at;
      } else {
        EXPECT_EQ(out, Scalar(1000)) << "max in lane " << max_at;
      }
    }
  }
  std::vector<Scalar> all_minus_inf(static_cast<std::size_t>(w), -Limits::infinity());
  this->simd.max_of(all_minus_inf.data(), &out, w);
  EXPECT_EQ(out, -Limits::infinity());
}

TYPED_TEST(SimdIsa, SumAddsEveryLane) {
  using Scalar = typename TestFixture::Scalar;
  const Index w = this->simd.width;
  // Integers: every order of addition gives the exact sum.
  std::vector<Scalar> x(static_cast<std::size_t>(4 * w));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = Scalar((i * 37) % 101) - Scalar(50);
  std::vector<Scalar> y(4);
  this->simd.sum(x.data(), y.data(), static_cast<Index>(x.size()));
  for (Index v = 0; v < 4; ++v) {
    Scalar exact = 0;
    for (Index i = 0; i < w; ++i) exact += x[v * w + i];
    EXPECT_EQ(y[v], exact) << "vector " << v;
  }
  // Any values: within the bound of recursive summation, (w - 1) eps sum |x| (Higham, 2002, 4.2).
  const auto r = this->random_values(static_cast<std::size_t>(64 * w), 4);
  std::vector<Scalar> s(64);
  this->simd.sum(r.data(), s.data(), static_cast<Index>(r.size()));
  for (Index v = 0; v < 64; ++v) {
    long double exact = 0, magnitude = 0;
    for (Index i = 0; i < w; ++i) {
      exact += r[v * w + i];
      magnitude += std::fabs(static_cast<long double>(r[v * w + i]));
    }
    EXPECT_LE(std::fabs(s[v] - exact), (w - 1) * std::numeric_limits<Scalar>::epsilon() * magnitude)
        << "vector " << v;
  }
}

// sum_each: lane i is vector i's sum with sum()'s bits (the contract the forward's grouped
// softmax step relies on for results identical to a row-by-row one), and within the bound of
// recursive summation of the exact sum.
TYPED_TEST(SimdIsa, SumEachIsEachVectorsSum) {
  using Scalar = typename TestFixture::Scalar;
  const Index w = this->simd.width;
  const auto x = this->random_values(static_cast<std::size_t>(w * w), 5);
  std::vector<Scalar> each(static_cast<std::size_t>(w)), one_by_one(static_cast<std::size_t>(w));
  this->simd.sum_each(x.data(), each.data());
  this->simd.sum(x.data(), one_by_one.data(), w * w);
  for (Index i = 0; i < w; ++i) {
    EXPECT_EQ(each[i], one_by_one[i]) << "vector " << i;
    long double exact = 0, magnitude = 0;
    for (Index c = 0; c < w; ++c) {
      exact += x[i * w + c];
      magnitude += std::fabs(static_cast<long double>(x[i * w + c]));
    }
    EXPECT_LE(std::fabs(each[i] - exact),
              (w - 1) * std::numeric_limits<Scalar>::epsilon() * magnitude)
        << "vector " << i;
  }
}

// max_each: lane i is vector i's largest entry, NaN where vector i holds one (in any lane).
TYPED_TEST(SimdIsa, MaxEachIsEachVectorsMaxNanIncluded) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Index w = this->simd.width;
  std::vector<Scalar> x(static_cast<std::size_t>(w * w));
  for (Index i = 0; i < w; ++i) {
    for (Index c = 0; c < w; ++c) x[i * w + c] = Scalar(-100 + 3 * ((i * 5 + c * 7) % w));
    x[i * w + (i * 3) % w] = Scalar(1000 + i);  // vector i's max, in a lane of its own
    if (i % 3 == 1) x[i * w + (i * 7 + 1) % w] = Limits::quiet_NaN();
  }
  x[static_cast<std::size_t>(w - 1)] = -Limits::infinity();  // in vector 0, beside its max
  std::vector<Scalar> each(static_cast<std::size_t>(w));
  this->simd.max_each(x.data(), each.data());
  for (Index i = 0; i < w; ++i) {
    if (i % 3 == 1) {
      EXPECT_TRUE(std::isnan(each[i])) << "vector " << i;
    } else {
      EXPECT_EQ(each[i], Scalar(1000 + i)) << "vector " << i;
    }
  }
}

// transpose (AVX2 floats, AVX-512 floats and doubles): entry (i, c) of the block moves to (c, i),
// every one.
TYPED_TEST(SimdIsa, TransposeMovesEveryEntry) {
  using Scalar = typename TestFixture::Scalar;
  const Index w = this->simd.width;
  const bool expected =
      TypeParam::isa == Isa::avx512 || (TestFixture::is_float && TypeParam::isa != Isa::baseline);
  ASSERT_EQ(this->simd.transpose != nullptr, expected);
  if (!expected) return;
  std::vector<Scalar> x(static_cast<std::size_t>(w * w)), y(x.size());
  for (Index i = 0; i < w; ++i) {
    for (Index c = 0; c < w; ++c) x[i * w + c] = Scalar(100 * i + c);
  }
  this->simd.transpose(x.data(), y.data());
  for (Index i = 0; i < w; ++i) {
    for (Index c = 0; c < w; ++c) EXPECT_EQ(y[c * w + i], Scalar(100 * i + c)) << i << ", " << c;
  }
}

TYPED_TEST(SimdIsa, ZeroWhereEqualAndNanOr) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Scalar nan = Limits::quiet_NaN(), minus_inf = -Limits::infinity();
  const auto y = this->random_values(64, 5);
  std::vector<Scalar> x = this->random_values(64, 6);
  for (std::size_t i = 0; i < x.size(); i += 3) x[i] = minus_inf;
  for (std::size_t i = 1; i < x.size(); i += 5) x[i] = nan;
  const Index n = static_cast<Index>(x.size());
  std::vector<Scalar> out(x.size());
  this->simd.zero_where_equal(y.data(), x.data(), minus_inf, out.data(), n);
  for (Index i = 0; i < n; ++i) {
    if (x[i] == minus_inf) {
      EXPECT_EQ(out[i], Scalar(0)) << i;
      EXPECT_FALSE(std::signbit(out[i])) << i;
    } else {
      EXPECT_EQ(out[i], y[i]) << i;
    }
  }
  // A NaN key equals nothing, NaN lanes of x included.
  this->simd.zero_where_equal(y.data(), x.data(), nan, out.data(), n);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(out[i], y[i]) << i;
  this->simd.nan_or(x.data(), y.data(), out.data(), n);
  for (Index i = 0; i < n; ++i) {
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(out[i])) << i;
    } else {
      EXPECT_EQ(out[i], y[i]) << i;
    }
  }
}

// --- exp and tanh against long double
// --------------------------------------------------------------

/// The distance from y to the exact value e in units of Scalar's last place at e (subnormal ulps
/// below the normal range); y = +-inf counts as +-2^max_exponent, the next step after the largest
/// finite value, and is exact where e rounds to it. 0 when both are NaN; infinite when one is.
template <typename Scalar>
long double ulp_error(Scalar y, long double e) {
  using Limits = std::numeric_limits<Scalar>;
  if (std::isnan(e) || std::isnan(y)) {
    return std::isnan(e) && std::isnan(y) ? 0 : std::numeric_limits<long double>::infinity();
  }
  if (std::isinf(e)) return y == e ? 0 : std::numeric_limits<long double>::infinity();
  // |e| at or above FLT_MAX (DBL_MAX) + half an ulp rounds to inf.
  const long double top_ulp = std::ldexp(1.0L, Limits::max_exponent - Limits::digits);
  const long double overflow = std::ldexp(1.0L, Limits::max_exponent) - top_ulp / 2;
  if (std::fabs(e) >= overflow && std::isinf(y) && std::signbit(y) == std::signbit(e)) return 0;
  const long double y_value = std::isinf(y) ? std::copysign(std::ldexp(1.0L, Limits::max_exponent),
                                                            static_cast<long double>(y))
                                            : static_cast<long double>(y);
  int exponent = 0;
  (void)std::frexp(e, &exponent);  // |e| = m 2^exponent, m in [0.5, 1)
  exponent = std::min(std::max(exponent, Limits::min_exponent), Limits::max_exponent);
  const long double ulp = std::ldexp(1.0L, exponent - Limits::digits);
  return std::fabs(y_value - e) / ulp;
}

/// Points for a sweep of [lo, hi]: `count` evenly spaced, every 2^k-th bit pattern of the finite
/// values (all magnitudes, tiny and huge), and +-64 ulps around each edge.
template <typename Scalar>
std::vector<Scalar> sweep(long double lo, long double hi, std::size_t count,
                          const std::vector<long double>& edges) {
  using Limits = std::numeric_limits<Scalar>;
  using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
  std::vector<Scalar> x;
  for (std::size_t i = 0; i <= count; ++i) {
    x.push_back(static_cast<Scalar>(lo + (hi - lo) * static_cast<long double>(i) / count));
  }
  const Bits top = sizeof(Scalar) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000u);
  const Bits stride = top / Bits(1u << 18) + 1;
  for (Bits b = 0; b < top; b += stride) {
    for (Bits sign : {Bits(0), Bits(Bits(1) << (8 * sizeof(Scalar) - 1))}) {
      Scalar v;
      const Bits bits = b | sign;
      std::memcpy(&v, &bits, sizeof v);
      x.push_back(v);
    }
  }
  for (long double edge : edges) {
    Scalar v = static_cast<Scalar>(edge), up = v, down = v;
    x.push_back(v);
    for (int i = 0; i < 64; ++i) {
      up = std::nextafter(up, Limits::infinity());
      down = std::nextafter(down, -Limits::infinity());
      x.push_back(up);
      x.push_back(down);
    }
  }
  for (Scalar v : {Scalar(0), -Scalar(0), Limits::denorm_min(), -Limits::denorm_min(),
                   Limits::min(), -Limits::min(), Limits::max(), Limits::lowest(),
                   Limits::infinity(), -Limits::infinity(), Limits::quiet_NaN()}) {
    x.push_back(v);
  }
  return x;
}

struct UlpReport {
  long double max_ulps = 0;
  long double worst_x = 0;
  std::size_t count = 0;
};

/// Runs f (a probe) on x and measures it against `exact` (long double) point by point.
template <typename Scalar, typename Probe, typename Exact>
UlpReport measure(Probe f, std::vector<Scalar> x, Index width, Exact exact) {
  while (static_cast<Index>(x.size()) % width != 0) x.push_back(Scalar(0));
  std::vector<Scalar> y(x.size());
  f(x.data(), y.data(), static_cast<Index>(x.size()));
  UlpReport report;
  report.count = x.size();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const long double err = ulp_error(y[i], exact(static_cast<long double>(x[i])));
    if (!(err <= report.max_ulps)) {  // also catches an infinite error
      report.max_ulps = err;
      report.worst_x = x[i];
    }
  }
  return report;
}

/// measure() over sweep(lo, hi, ...) with 400k (float) or 800k (double) evenly spaced points.
template <typename Scalar, typename Exact>
UlpReport measure_sweep(void (*f)(const Scalar*, Scalar*, Index), Index width, Exact exact,
                        long double lo, long double hi, const std::vector<long double>& edges) {
  const std::size_t count = std::is_same_v<Scalar, float> ? 400000 : 800000;
  return measure(f, sweep<Scalar>(lo, hi, count, edges), width, exact);
}

/// Prints the largest error (for the record of the measured figures) and checks it against bound.
::testing::AssertionResult within_ulps(const std::string& what, const UlpReport& r,
                                       long double bound) {
  std::cout << what << ": max " << double(r.max_ulps) << " ulp at x = " << double(r.worst_x)
            << " over " << r.count << " points\n";
  if (r.max_ulps <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << double(r.max_ulps) << " ulp at x = " << double(r.worst_x)
         << ", above the bound " << double(bound);
}

// Bounds asserted: exp <= 1.5 ulp, tanh <= 2 ulp, on every path. Measured maxima (these sweeps,
// and 67M random floats on SSE2 and AVX2): exp 1.01 ulp, tanh 1.39 ulp (floats); doubles 0.99
// and 1.34 on these sweeps. The margin covers points no sweep reached.
TYPED_TEST(SimdIsa, ExpIsWithinAFewUlpsEverywhere) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const long double log_max = std::log(static_cast<long double>(Limits::max()));
  const long double log_min = std::log(static_cast<long double>(Limits::min()));
  const long double log_denorm_min = std::log(static_cast<long double>(Limits::denorm_min()));
  const long double ln2 = std::log(2.0L);
  // The edges: overflow, the normal/subnormal boundary, total underflow, where n = round(x/ln2)
  // changes near 0, and tiny arguments.
  std::vector<long double> edges = {log_max, log_min,  log_denorm_min, log_denorm_min - ln2 / 2,
                                    ln2 / 2, -ln2 / 2, 3 * ln2 / 2,    -3 * ln2 / 2,
                                    0,       1e-30L,   -1e-30L,        1,
                                    -1};
  const auto exact = [](long double v) { return std::exp(v); };
  EXPECT_TRUE(within_ulps(this->name("exp"),
                          measure_sweep<Scalar>(this->simd.exp, this->simd.width, exact,
                                                log_denorm_min - 2, log_max + 2, edges),
                          1.5));
}

TYPED_TEST(SimdIsa, ExpSpecialValuesAreExact) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Scalar inf = Limits::infinity();
  const Scalar far_below = std::log(Limits::denorm_min()) - Scalar(1);
  const Scalar far_above = std::log(Limits::max()) + Scalar(1);
  auto x = this->padded({-inf, inf, Limits::quiet_NaN(), -Limits::quiet_NaN(), Scalar(0),
                         -Scalar(0), far_below, far_above, Limits::lowest(), Limits::max()},
                        Scalar(0));
  std::vector<Scalar> y(x.size());
  this->simd.exp(x.data(), y.data(), static_cast<Index>(x.size()));
  EXPECT_EQ(y[0], Scalar(0));
  EXPECT_FALSE(std::signbit(y[0]));  // exp(-inf) = +0
  EXPECT_EQ(y[1], inf);
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_TRUE(std::isnan(y[3]));
  EXPECT_EQ(y[4], Scalar(1));
  EXPECT_EQ(y[5], Scalar(1));
  EXPECT_EQ(y[6], Scalar(0));
  EXPECT_EQ(y[7], inf);
  EXPECT_EQ(y[8], Scalar(0));
  EXPECT_EQ(y[9], inf);
}

// exp_weight, a softmax weight e^x for x <= 0, against long double std::exp where e^x is a normal
// number: within exp's bound (1.5 ulp), or on the base-2 path (AVX-512) within the bound derived
// in kernels/vector_math.hpp, |w - e^x| <= (exp2_error + exp2_error_per_x |x|) u e^x, u = 2^-24
// (float) or 2^-53 (double). Below the normal range a weight is between 0 and the least normal
// number (the avx2 path flushes it to +0). Specials: +0 for -inf, NaN for NaN, exactly 1 for 0 and
// -0. Measured on a Zen 5: avx512 floats 0.94 of their bound (at x = -44.4, where the rounding of
// x log2e, 1.225 |x| u to first order, is most of it), avx512 doubles 0.97 (at x = -355, the same
// term, 1.127 |x| u), the other paths 0.63-0.65 of 1.5 ulp.
TYPED_TEST(SimdIsa, ExpWeightIsWithinItsDocumentedBound) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  // exp2_error, exp2_error_per_x
  using Base2 = attention::detail::kernels::ExpConstants<Scalar>;
  const bool base2 = TypeParam::isa == Isa::avx512;
  const long double log_min = std::log(static_cast<long double>(Limits::min()));
  const long double log_denorm_min = std::log(static_cast<long double>(Limits::denorm_min()));
  // Edges: the normal/subnormal boundary, total underflow, where round(x log2e) changes near 0.
  const long double ln2 = std::log(2.0L);
  const std::vector<long double> edges = {
      log_min, log_denorm_min, -ln2 / 2, -3 * ln2 / 2, -1e-30L, -1, -20};
  std::vector<Scalar> x;
  for (const Scalar v : sweep<Scalar>(log_denorm_min - 2, 0, 400000, edges)) {
    if (!(v > 0)) x.push_back(v);  // x <= 0, -inf and NaN
  }
  while (static_cast<Index>(x.size()) % this->simd.width != 0) x.push_back(Scalar(0));
  std::vector<Scalar> y(x.size());
  this->simd.exp_weight(x.data(), y.data(), static_cast<Index>(x.size()));
  const long double u = std::ldexp(1.0L, -Limits::digits);
  long double worst = 0, worst_x = 0;  // the largest error as a fraction of the bound
  for (std::size_t i = 0; i < x.size(); ++i) {
    const long double e = std::exp(static_cast<long double>(x[i]));
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(y[i]));
    } else if (e < Limits::min()) {
      EXPECT_TRUE(y[i] >= 0 && y[i] <= Limits::min()) << "x = " << x[i] << ": " << y[i];
      if (x[i] == -Limits::infinity()) {
        EXPECT_TRUE(y[i] == 0 && !std::signbit(y[i]));
      }
    } else {
      long double fraction = ulp_error(y[i], e) / 1.5L;
      if (base2) {
        const long double bound =
            (Base2::exp2_error +
             Base2::exp2_error_per_x * std::fabs(static_cast<long double>(x[i]))) *
            u;
        fraction = std::fabs(y[i] - e) / e / bound;
      }
      if (!(fraction <= worst)) {
        worst = fraction;
        worst_x = x[i];
      }
    }
    if (x[i] == 0) {
      EXPECT_EQ(y[i], Scalar(1));
    }
  }
  std::cout << this->name("exp_weight") << ": largest error " << double(worst)
            << " of the bound, at x = " << double(worst_x) << " over " << x.size() << " points\n";
  EXPECT_LE(worst, 1.0L) << "at x = " << double(worst_x);
}

// exp_weight far below the subnormals (e^x under half the least subnormal, down to the lowest
// finite number) and at -inf is exactly +0, a masked or negligible key weighing nothing; 0 and -0
// give exactly 1, the row's largest weight; NaN stays NaN.
TYPED_TEST(SimdIsa, ExpWeightIsExactlyZeroFarBelowAndOneAtZero) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  const Scalar below = std::log(Limits::denorm_min()) - Scalar(1);  // e^x < 2^-1 least subnormal
  auto x = this->padded({-Limits::infinity(), below, below * 2, Scalar(-1e6), -Limits::max() / 3,
                         Limits::lowest(), Scalar(0), -Scalar(0), Limits::quiet_NaN()},
                        Scalar(0));
  std::vector<Scalar> y(x.size());
  this->simd.exp_weight(x.data(), y.data(), static_cast<Index>(x.size()));
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(y[i] == 0 && !std::signbit(y[i])) << "x = " << x[i] << ": " << y[i];
  }
  EXPECT_EQ(y[6], Scalar(1));
  EXPECT_EQ(y[7], Scalar(1));
  EXPECT_TRUE(std::isnan(y[8]));
}

TYPED_TEST(SimdIsa, TanhIsWithinAFewUlpsEverywhere) {
  using Scalar = typename TestFixture::Scalar;
  using C = attention::detail::kernels::TanhConstants<Scalar>;
  // The edges: the switch between the two formulas, the clamp, where tanh rounds to 1.
  std::vector<long double> edges = {C::small_max,     -C::small_max, C::large_max, -C::large_max,
                                    std::atanh(0.5L), 1e-30L,        -1e-30L,      9.01L,
                                    -9.01L,           18.7L,         -18.7L};
  const long double reach = TestFixture::is_float ? 12 : 24;  // tanh is +-1 beyond 9 (19)
  const auto exact = [](long double v) { return std::tanh(v); };
  EXPECT_TRUE(within_ulps(
      this->name("tanh"),
      measure_sweep<Scalar>(this->simd.tanh, this->simd.width, exact, -reach, reach, edges), 2));
}

TYPED_TEST(SimdIsa, TanhIsOddWithExactLimits) {
  using Scalar = typename TestFixture::Scalar;
  using Limits = typename TestFixture::Limits;
  auto x = this->random_values(512, 7);
  for (std::size_t i = 0; i < x.size(); i += 4) x[i] *= Scalar(8);  // beyond the small range
  std::vector<Scalar> minus_x(x.size()), y(x.size()), y_minus(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) minus_x[i] = -x[i];
  const Index n = static_cast<Index>(x.size());
  this->simd.tanh(x.data(), y.data(), n);
  this->simd.tanh(minus_x.data(), y_minus.data(), n);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(y_minus[i], -y[i]) << "x = " << x[i];

  const Scalar inf = Limits::infinity(), tiny = Scalar(1e-30);
  auto s = this->padded({inf, -inf, Limits::quiet_NaN(), Scalar(0), -Scalar(0), tiny, -tiny,
                         Limits::denorm_min(), Limits::max(), Limits::lowest()});
  std::vector<Scalar> t(s.size());
  this->simd.tanh(s.data(), t.data(), static_cast<Index>(s.size()));
  EXPECT_EQ(t[0], Scalar(1));
  EXPECT_EQ(t[1], Scalar(-1));
  EXPECT_TRUE(std::isnan(t[2]));
  EXPECT_EQ(t[3], Scalar(0));
  EXPECT_FALSE(std::signbit(t[3]));
  EXPECT_EQ(t[4], Scalar(0));
  EXPECT_TRUE(std::signbit(t[4]));  // tanh(-0) = -0
  EXPECT_EQ(t[5], tiny);            // tanh x = x - x^3/3 + ...: x itself for tiny x
  EXPECT_EQ(t[6], -tiny);
  EXPECT_EQ(t[7], Limits::denorm_min());
  EXPECT_EQ(t[8], Scalar(1));
  EXPECT_EQ(t[9], Scalar(-1));
}

#endif  // ATTENTION_HAS_DISPATCH

}  // namespace
