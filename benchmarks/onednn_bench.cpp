// SPDX-License-Identifier: MIT
//
// oneDNN (API 2.x; Debian 12: libdnnl-dev 2.6) as a peer of attention_bench's BM_Sdpa, at the same
// shapes and with the same inputs (seeds 1, 2, 3). Single-head attention written as a oneDNN user
// would write it, from three primitives with the N x N scores in memory:
//   s   = matmul(q, k^T) * 1/sqrt(d) [+ mask]   the scale is the GEMM's output scale; k^T is k's
//                                              row-major storage described as a (d x N) "ba" tensor
//   p   = softmax(s) along each row            softmax_v2, softmax_accurate (max-subtracted)
//   out = matmul(p, v)
// Causal attention adds an N x N mask (0 on and below the diagonal, -inf above) to s with a
// binary_add post-op of the first matmul: oneDNN has no causal matmul, so it computes the masked
// half of both products too. The FLOP count still credits only the useful half (4 N^2 d, half of
// that causal: the FlashAttention convention, as everywhere in benchmarks/).
//   BM_OneDnn             float32 throughout
//   BM_OneDnnBf16         q, k, v and p in bfloat16 (rounded to nearest even), s and out float32:
//                         oneDNN accumulates bf16 products in float32
//   BM_OneDnnMatmuls      the two matmuls alone (non-causal): the GEMM ceiling a fused kernel can
//   BM_OneDnnMatmulsBf16  aim at, float32 and bf16
// Counters: GFLOP/s and peak_fraction (against threads x one core's FP32 FMA peak, for bf16 too).
// The label names the implementations oneDNN chose (e.g. "gemm:jit | jit:avx2 | gemm:jit"); the
// JSON context records oneDNN's version and the instruction set it runs (onednn_isa).
//
// oneDNN 2.6 implements bf16 matmul and softmax only where the CPU has AVX-512 (avx512_core,
// with native AVX512_BF16 instructions from avx512_core_bf16 on); elsewhere it reports
// "unimplemented". Such a row is skipped with that reason (SkipWithError) instead of aborting the
// run. Before timing, each benchmark checks three rows of the output against a double reference on
// the same (rounded) inputs, so that a wrong layout, scale or mask cannot pass as fast.

#include <oneapi/dnnl/dnnl.hpp>

#if DNNL_VERSION_MAJOR != 2
#error "onednn_bench uses oneDNN's 2.x API (operation descriptors, removed in 3.0)"
#endif

#include <algorithm>
#include <attention/types.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "bench_support.hpp"

namespace {

using attention::Index;
using attention::Matrix;
using Bf16 = Eigen::bfloat16;
using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

/// oneDNN's name for the element type of q, k, v and p.
template <typename Input>
constexpr Type input_type() {
  static_assert(std::is_same_v<Input, float> || std::is_same_v<Input, Bf16>,
                "onednn_bench: inputs are float or Eigen::bfloat16");
  return std::is_same_v<Input, float> ? Type::f32 : Type::bf16;
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41:
      return "sse41";
    case dnnl::cpu_isa::avx:
      return "avx";
    case dnnl::cpu_isa::avx2:
      return "avx2";
    case dnnl::cpu_isa::avx2_vnni:
      return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core:
      return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other";
  }
}

/// Builds a primitive descriptor, turning oneDNN's terse failure ("could not create a primitive
/// descriptor iterator") into one that says which step, which types and which CPU.
template <typename PrimitiveDesc, typename... Args>
PrimitiveDesc make_primitive_desc(const char* step, Type type, Args&&... args) {
  try {
    return PrimitiveDesc(std::forward<Args>(args)...);
  } catch (const dnnl::error& e) {
    const bool unimplemented = e.status == dnnl_unimplemented;
    throw std::runtime_error(
        std::string("oneDNN ") + std::to_string(DNNL_VERSION_MAJOR) + "." +
        std::to_string(DNNL_VERSION_MINOR) + " " + (unimplemented ? "has no " : "failed on the ") +
        step + (type == Type::bf16 ? " with bf16 inputs" : " in float32") + " on this CPU (ISA " +
        isa_name(dnnl::get_effective_cpu_isa()) + ")" +
        (unimplemented && type == Type::bf16 ? "; its bf16 kernels need AVX-512 (avx512_core)"
                                             : "") +
        ": " + e.what());
  }
}

/// The inputs, buffers and primitives of one shape; every buffer is an Eigen matrix that oneDNN
/// reads or writes through a memory object wrapping its data, row-major as the library's.
template <typename Input>
class OneDnnAttention {
 public:
  OneDnnAttention(const dnnl::engine& engine, Index seq_len, Index head_dim, bool causal)
      : q_(support::random_matrix<float>(seq_len, head_dim, 1).cast<Input>()),
        k_(support::random_matrix<float>(seq_len, head_dim, 2).cast<Input>()),
        v_(support::random_matrix<float>(seq_len, head_dim, 3).cast<Input>()),
        s_(seq_len, seq_len),
        out_(seq_len, head_dim),
        causal_(causal) {
    constexpr Type input = input_type<Input>();
    const memory::dim n = seq_len, d = head_dim;
    const memory::desc q_desc({n, d}, input, Tag::ab), k_t_desc({d, n}, input, Tag::ba),
        v_desc({n, d}, input, Tag::ab), s_desc({n, n}, Type::f32, Tag::ab),
        p_desc({n, n}, input, Tag::ab), out_desc({n, d}, Type::f32, Tag::ab);

    dnnl::primitive_attr scores_attr;
    scores_attr.set_output_scales(0, {1.0f / std::sqrt(static_cast<float>(head_dim))});
    if (causal) {
      mask_ = Matrix<float>::Zero(seq_len, seq_len);
      mask_.triangularView<Eigen::StrictlyUpper>().setConstant(
          -std::numeric_limits<float>::infinity());
      dnnl::post_ops add_mask;
      add_mask.append_binary(dnnl::algorithm::binary_add, s_desc);
      scores_attr.set_post_ops(add_mask);
    }
    const auto scores_pd = make_primitive_desc<dnnl::matmul::primitive_desc>(
        "matmul q k^T", input, dnnl::matmul::desc(q_desc, k_t_desc, s_desc), scores_attr, engine);
    // softmax_v2 writes p in the input type; float32 runs in place (p is s), as a user would.
    const auto softmax_pd = make_primitive_desc<dnnl::softmax_v2_forward::primitive_desc>(
        "softmax", input,
        dnnl::softmax_v2_forward::desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::softmax_accurate, s_desc, p_desc, 1),
        engine);
    const auto output_pd = make_primitive_desc<dnnl::matmul::primitive_desc>(
        "matmul p v", input, dnnl::matmul::desc(p_desc, v_desc, out_desc), engine);
    scores_ = dnnl::matmul(scores_pd);
    softmax_ = dnnl::softmax_v2_forward(softmax_pd);
    output_ = dnnl::matmul(output_pd);
    implementations_ = std::string(scores_pd.impl_info_str()) + " | " + softmax_pd.impl_info_str() +
                       " | " + output_pd.impl_info_str();

    const memory s_mem(s_desc, engine, s_.data());
    memory p_mem = s_mem;
    if constexpr (!std::is_same_v<Input, float>) {
      p_.resize(seq_len, seq_len);
      p_mem = memory(p_desc, engine, p_.data());
    }
    scores_args_ = {{DNNL_ARG_SRC, memory(q_desc, engine, q_.data())},
                    {DNNL_ARG_WEIGHTS, memory(k_t_desc, engine, k_.data())},
                    {DNNL_ARG_DST, s_mem}};
    if (causal) {
      scores_args_.insert({DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                           memory(s_desc, engine, mask_.data())});
    }
    softmax_args_ = {{DNNL_ARG_SRC, s_mem}, {DNNL_ARG_DST, p_mem}};
    output_args_ = {{DNNL_ARG_SRC, p_mem},
                    {DNNL_ARG_WEIGHTS, memory(v_desc, engine, v_.data())},
                    {DNNL_ARG_DST, memory(out_desc, engine, out_.data())}};
  }

  void run(dnnl::stream& stream) {
    scores_.execute(stream, scores_args_);
    softmax_.execute(stream, softmax_args_);
    output_.execute(stream, output_args_);
    stream.wait();
  }

  /// The two products alone; p is whatever the last run() left (values do not change the time).
  void run_matmuls(dnnl::stream& stream) {
    scores_.execute(stream, scores_args_);
    output_.execute(stream, output_args_);
    stream.wait();
  }

  [[nodiscard]] const Matrix<float>& out() const { return out_; }
  [[nodiscard]] const std::string& implementations() const { return implementations_; }

  /// Largest |out - reference| over rows 0, N/2 and N-1 after run(), with the reference
  ///   out_i = sum_j softmax_j(q_i . k_j / sqrt(d) over keys j <= i if causal) v_j
  /// in double on the same rounded inputs, and the bound it must stay within: bf16 rounds each
  /// weight p_ij with relative error <= 2^-8, which moves out_i by at most 2^-8 max|v| (the
  /// weights sum to 1); float32 rounding is far smaller, and 1e-3 max|v| still catches a wrong
  /// scale, mask or layout, whose errors are of order max|v| / 10.
  [[nodiscard]] std::pair<double, double> check() const {
    const Index n = q_.rows(), d = q_.cols();
    const Eigen::MatrixXd q = q_.template cast<double>(), k = k_.template cast<double>(),
                          v = v_.template cast<double>();
    double error = 0;
    for (const Index i : {Index(0), n / 2, n - 1}) {
      const Index keys = causal_ ? i + 1 : n;
      Eigen::VectorXd s = k.topRows(keys) * q.row(i).transpose() / std::sqrt(double(d));
      const double row_max = s.maxCoeff();
      s = (s.array() - row_max).exp();
      const double row_sum = s.sum();
      const Eigen::RowVectorXd expected = s.transpose() * v.topRows(keys) / row_sum;
      error = std::max(error, (out_.row(i).cast<double>() - expected).cwiseAbs().maxCoeff());
    }
    const double unit = std::is_same_v<Input, float> ? 1e-3 : std::ldexp(1.0, -8);
    return {error, unit * v.cwiseAbs().maxCoeff()};
  }

 private:
  Matrix<Input> q_, k_, v_, p_;
  Matrix<float> s_, out_, mask_;
  bool causal_;
  dnnl::matmul scores_, output_;
  dnnl::softmax_v2_forward softmax_;
  std::unordered_map<int, memory> scores_args_, softmax_args_, output_args_;
  std::string implementations_;
};

enum class Part { attention, matmuls };

template <typename Input, Part part>
void BM_OneDnn(benchmark::State& state) {
  const Index seq_len = state.range(0), head_dim = state.range(1);
  const bool causal = state.range(2) != 0;
  const int threads = static_cast<int>(state.range(3));
  // oneDNN (OpenMP build) sizes its work split from omp_get_max_threads() when a primitive is
  // created and runs on that many threads: set it first.
  support::set_threads(threads);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  std::optional<OneDnnAttention<Input>> attn;
  try {
    attn.emplace(engine, seq_len, head_dim, causal);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  attn->run(stream);  // also the warm-up: first touch of the N x N buffers
  const auto [error, bound] = attn->check();
  if (!(error <= bound)) {
    state.SkipWithError(("oneDNN's output is off by " + std::to_string(error) + " > " +
                         std::to_string(bound) + " from the double reference")
                            .c_str());
    return;
  }
  state.SetLabel(attn->implementations());

  const support::LoopClock clock;
  for (auto _ : state) {
    if constexpr (part == Part::attention) {
      attn->run(stream);
    } else {
      attn->run_matmuls(stream);
    }
    benchmark::DoNotOptimize(attn->out().data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, support::attention_flops(seq_len, head_dim, causal),
                                    threads, clock);
}

void shapes(benchmark::internal::Benchmark* b, std::vector<int64_t> causal) {
  b->ArgNames({"seq", "dim", "causal", "threads"})
      ->ArgsProduct(
          {{256, 1024, 4096, 8192}, {64, 128}, std::move(causal), support::thread_counts()})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

// Names carry the shapes as attention_bench's do, e.g. BM_OneDnnBf16/seq:4096/dim:128/causal:0/
// threads:1/real_time, so compare.py pairs the rows by name.
const bool registered = [] {
  shapes(benchmark::RegisterBenchmark("BM_OneDnn", BM_OneDnn<float, Part::attention>), {0, 1});
  shapes(benchmark::RegisterBenchmark("BM_OneDnnBf16", BM_OneDnn<Bf16, Part::attention>), {0, 1});
  shapes(benchmark::RegisterBenchmark("BM_OneDnnMatmuls", BM_OneDnn<float, Part::matmuls>), {0});
  shapes(benchmark::RegisterBenchmark("BM_OneDnnMatmulsBf16", BM_OneDnn<Bf16, Part::matmuls>), {0});
  return true;
}();

}  // namespace

int main(int argc, char** argv) {
  const dnnl::version_t* version = dnnl::version();
  benchmark::AddCustomContext("onednn_version", std::to_string(version->major) + "." +
                                                    std::to_string(version->minor) + "." +
                                                    std::to_string(version->patch));
  benchmark::AddCustomContext("onednn_isa", isa_name(dnnl::get_effective_cpu_isa()));
  return support::run_benchmarks(argc, argv);
}
