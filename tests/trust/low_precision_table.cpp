// SPDX-License-Identifier: MIT
//
// Prints, as Markdown, the README's low-precision accuracy table: the max and RMS absolute error of
// scaled_dot_product_attention's output against a long-double reference computed on the same
// rounded inputs, for float, Eigen::bfloat16, Eigen::half, float q with bfloat16 k and v, and
// float q with k and v stored in an Int8KVCache (the reference on the stored values), read as
// dequantised matrices and in place by the decode path, one query (causal: over the tokens
// appended so far) or 16 at a time; N in
// {512, 4096} (L = S = N), d in {64, 128}, with and without the causal mask. Inputs: q, k, v
// entries roughly N(0, 1) (support::normalish, seeds 1, 2, 3), rounded to the type under test; the
// reference (trust/accuracy.hpp) takes the rounded values exactly. At N = 4096 every 8th row is
// measured (a row depends on no other query). Not run by ctest: built on request,
//   cmake --build build --target low_precision_table && build/tests/trust/low_precision_table

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "trust/accuracy.hpp"

namespace {

using attention::Index;
using trust::accuracy::Mat;
using trust::accuracy::Real;

struct Errors {
  double max = 0, rms = 0;
  double output_rms = 0;  // of the reference, for scale
};

/// Max and RMS of |out - ref| over the rows the reference computed (the others are NaN).
template <typename Scalar>
Errors absolute_errors(const Mat<Scalar>& out, const Mat<Real>& ref) {
  Errors e;
  Real sum_squares = 0, output_squares = 0;
  Index count = 0;
  for (Index i = 0; i < ref.rows(); ++i) {
    if (std::isnan(ref(i, 0))) continue;
    for (Index c = 0; c < ref.cols(); ++c) {
      const Real diff = std::fabs(static_cast<Real>(static_cast<float>(out(i, c))) - ref(i, c));
      e.max = std::max(e.max, static_cast<double>(diff));
      sum_squares += diff * diff;
      output_squares += ref(i, c) * ref(i, c);
      ++count;
    }
  }
  e.rms = static_cast<double>(std::sqrt(sum_squares / static_cast<Real>(count)));
  e.output_rms = static_cast<double>(std::sqrt(output_squares / static_cast<Real>(count)));
  return e;
}

/// The error of one (q type, k/v type) on inputs `in` rounded to those types.
template <typename Q, typename KV>
Errors measure(const trust::accuracy::Inputs& in, bool causal, Index row_step) {
  const Mat<Q> q = in.q.cast<float>().cast<Q>();
  const Mat<KV> k = in.k.cast<float>().cast<KV>(), v = in.v.cast<float>().cast<KV>();
  const trust::accuracy::Inputs rounded{q.template cast<float>().template cast<Real>(),
                                        k.template cast<float>().template cast<Real>(),
                                        v.template cast<float>().template cast<Real>()};
  const Mat<Real> ref = trust::accuracy::reference(rounded, causal, row_step);
  const Mat<Q> out = causal ? attention::scaled_dot_product_attention(q, k, v, attention::causal)
                            : attention::scaled_dot_product_attention(q, k, v);
  return absolute_errors(out, ref);
}

/// Float q with k and v stored in an Int8KVCache (groups of d: one scale per token and head): the
/// reference takes the stored values q * s exactly, and the attention reads them as the layer's
/// decode does (dequantised to float: the same values the in-place kernel widens).
Errors measure_int8(const trust::accuracy::Inputs& in, bool causal, Index row_step) {
  const Mat<float> q = in.q.cast<float>();
  attention::Int8KVCache cache(in.k.cols(), in.k.rows(), in.k.cols());
  cache.append(in.k.cast<float>(), in.v.cast<float>());
  const Mat<float> k = cache.dequantized_keys(), v = cache.dequantized_values();
  const trust::accuracy::Inputs stored{in.q.cast<float>().cast<Real>(), k.cast<Real>(),
                                       v.cast<Real>()};
  const Mat<Real> ref = trust::accuracy::reference(stored, causal, row_step);
  const Mat<float> out = causal
                             ? attention::scaled_dot_product_attention(q, k, v, attention::causal)
                             : attention::scaled_dot_product_attention(q, k, v);
  return absolute_errors(out, ref);
}

/// As measure_int8, but each measured query row read against the cache in place, as a decoder's
/// step reads it (scaled_dot_product_attention over the cache: the decode path's integer scores
/// from 512 keys on, decode_kernels.hpp): without a mask, the measured rows 16 at a time over all
/// N tokens; causal, query i alone once the cache holds tokens 0 .. i.
Errors measure_int8_in_place(const trust::accuracy::Inputs& in, bool causal, Index row_step) {
  const Index n = in.q.rows(), d = in.q.cols();
  const Mat<float> q = in.q.cast<float>();
  attention::Int8KVCache cache(d, n, d);
  const attention::Heads heads(1, 1);
  Mat<float> out = Mat<float>::Zero(n, d);
  if (causal) {
    for (Index i = 0; i < n; ++i) {
      cache.append(in.k.row(i).cast<float>(), in.v.row(i).cast<float>());
      if (i % row_step == 0)
        out.row(i) = attention::scaled_dot_product_attention(q.row(i), cache, heads);
    }
  } else {
    cache.append(in.k.cast<float>(), in.v.cast<float>());
    std::vector<Index> rows;
    for (Index i = 0; i < n; i += row_step) rows.push_back(i);
    for (std::size_t b = 0; b < rows.size(); b += 16) {
      const std::size_t count = std::min<std::size_t>(16, rows.size() - b);
      Mat<float> block(static_cast<Index>(count), d);
      for (std::size_t r = 0; r < count; ++r) block.row(Index(r)) = q.row(rows[b + r]);
      const Mat<float> o =
          attention::scaled_dot_product_attention(block, cache, heads, attention::NoMask{});
      for (std::size_t r = 0; r < count; ++r) out.row(rows[b + r]) = o.row(Index(r));
    }
  }
  const Mat<float> k = cache.dequantized_keys(), v = cache.dequantized_values();
  const trust::accuracy::Inputs stored{q.cast<Real>(), k.cast<Real>(), v.cast<Real>()};
  return absolute_errors(out, trust::accuracy::reference(stored, causal, row_step));
}

std::string cell(const Errors& e) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1e / %.1e", e.max, e.rms);
  return text;
}

}  // namespace

int main() {
  using Bf16 = Eigen::bfloat16;
  std::printf(
      "| N | d | mask | output RMS | float | bfloat16 | half | float q, bfloat16 k, v | float q, "
      "int8 k, v | float q, int8 k, v in place |\n");
  std::printf("|---:|---:|---|---:|---|---|---|---|---|---|\n");
  for (const Index n : {512, 4096}) {
    const Index row_step = n > 512 ? 8 : 1;
    for (const Index d : {64, 128}) {
      const trust::accuracy::Inputs in = trust::accuracy::make_inputs(n, d, 1.0);
      for (const bool causal : {false, true}) {
        const Errors in_float = measure<float, float>(in, causal, row_step);
        std::printf("| %ld | %ld | %s | %.2f | %s | %s | %s | %s | %s | %s |\n",
                    static_cast<long>(n), static_cast<long>(d), causal ? "causal" : "none",
                    in_float.output_rms, cell(in_float).c_str(),
                    cell(measure<Bf16, Bf16>(in, causal, row_step)).c_str(),
                    cell(measure<Eigen::half, Eigen::half>(in, causal, row_step)).c_str(),
                    cell(measure<float, Bf16>(in, causal, row_step)).c_str(),
                    cell(measure_int8(in, causal, row_step)).c_str(),
                    cell(measure_int8_in_place(in, causal, row_step)).c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
