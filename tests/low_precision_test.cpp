// SPDX-License-Identifier: MIT
// Tests for attention/low_precision.hpp: Eigen::bfloat16 and Eigen::half inputs to
// scaled_dot_product_attention (every overload) and scaled_dot_product_attention_lse, computed in
// float and rounded once. Expected values come from a long-double reference on the same rounded
// inputs (tests/support/reference.hpp), from bounds written out below, or from values worked out
// by hand.
//
// The bound. Inputs are rounded to the input type T before the call and the reference takes those
// rounded values exactly, so the only errors are the float computation's and the output's
// rounding. With u_f = 2^-24 (float), u_out the output type's unit roundoff (bfloat16 2^-8, half
// 2^-11, 0 for a float output), scale = 1 / sqrt(d), gamma_n = n u_f / (1 - n u_f), and for
// output entry (i, c) of a row that sees S_i keys:
//   delta_i = scale * gamma_{d+1} * max_j sum_c |q_ic| |k_jc|   (a score's rounding error, j seen)
//   |out_ic - ref_ic| <= u_out |ref_ic| + (1 + u_out) (2 delta_i + (2 S_i + 16) u_f) max_j |v_jc|
// Why: an error of at most delta in every score moves each softmax weight by a factor within
// exp(+-2 delta); the denominator and the sum over keys add gamma_{S_i} each (2 S_i u_f), the
// exponentials, the rescalings of the online softmax and the division a few u_f (16 u_f covers
// them); then the float result is rounded once to the output type (u_out relative). For bfloat16
// and half the u_out term dominates: an output off by one more u_out (a second rounding, or
// truncation instead of rounding to nearest) fails it.
//
// The bfloat16 kernel. All-bfloat16 calls on a CPU with AVX512_BF16 (kernels/bf16_forward.hpp,
// run where kernels::bf16_path_available()) also round each softmax weight to bfloat16 before
// p v: p_j (1 + e_j) with |e_j| <= u_w = 2^-8, while l sums the unrounded p_j. That moves the
// unrounded output by
//   |sum_j p_j e_j v_jc| / l <= u_w sum_j (p_j / l) |v_jc| <= u_w (1 + (2 S_i + 16) u_f) max_j
//   |v_jc|
// (the p_j / l sum to 1 within the denominator's error, the second term above), so the bound
// gains (1 + u_out) u_w (1 + (2 S_i + 16) u_f) max_j |v_jc|, with u_w = 0 on every other path.
// Products of bfloat16 pairs are exact in float and each of the d additions of a score rounds once
// (vdpbf16ps), as the float path's FMAs do. Either path adds one rounding to a score for the
// scale: the float path rounds q * scale, the bfloat16 kernel multiplies q by the scale's power of
// two (exact) and the sum by the rest. Hence gamma_{d+1} rather than gamma_d in delta_i.

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <typeinfo>

#include "support/random.hpp"
#include "support/reference.hpp"

namespace low_precision_test {
namespace {

using attention::Index;
using attention::Matrix;
using Real = long double;
namespace ref = support::reference;
using bf16 = Eigen::bfloat16;
using half = Eigen::half;

// The scalar types of the public API.
static_assert(std::is_same_v<decltype(attention::PartialAttention<bf16>{}.lse),
                             Eigen::Matrix<float, Eigen::Dynamic, 1>>);
static_assert(std::is_same_v<decltype(attention::PartialAttention<half>{}.lse),
                             Eigen::Matrix<float, Eigen::Dynamic, 1>>);
static_assert(std::is_same_v<decltype(attention::scaled_dot_product_attention(
                                 Matrix<bf16>(), Matrix<bf16>(), Matrix<bf16>())),
                             Matrix<bf16>>);
static_assert(std::is_same_v<decltype(attention::scaled_dot_product_attention(
                                 Matrix<float>(), Matrix<half>(), Matrix<half>())),
                             Matrix<float>>);
static_assert(std::is_same_v<attention::compute_type_t<bf16>, float>);
static_assert(std::is_same_v<attention::compute_type_t<double>, double>);

template <typename T>
constexpr Real unit_roundoff() {
  if constexpr (std::is_same_v<T, bf16>) return std::ldexp(1.0L, -8);
  if constexpr (std::is_same_v<T, half>) return std::ldexp(1.0L, -11);
  return 0;  // a float output is not rounded again
}

constexpr Real u_float = 1.0L / 16777216.0L;  // 2^-24

/// Whether all-bfloat16 calls take the vdpbf16ps kernel on this CPU (and ATTENTION_ISA).
bool bf16_kernel_runs() { return attention::detail::kernels::bf16_path_available(); }

/// u_w of the bound: the rounding of the softmax weights, on the bfloat16 kernel only. An output of
/// TOut = bfloat16 comes from an all-bfloat16 call (a bfloat16 q needs bfloat16 k and v).
template <typename TOut>
Real weights_roundoff() {
  return std::is_same_v<TOut, bf16> && bf16_kernel_runs() ? std::ldexp(1.0L, -8) : 0;
}

/// gamma_{d+1} of the bound (a score's rounding error relative to sum_c |q_ic| |k_jc|).
Real score_gamma(Index d) { return (d + 1) * u_float / (1 - (d + 1) * u_float); }

/// The inputs rounded to T (random_matrix rounds once from double to T), and the same values in
/// long double for the reference.
template <typename T>
struct Rounded {
  Matrix<T> x;
  ref::Matrix real;
};

template <typename T>
Rounded<T> rounded(Index rows, Index cols, std::uint32_t seed) {
  Rounded<T> r{support::random_matrix<T>(rows, cols, seed), {}};
  r.real = ref::to_real(r.x);
  return r;
}

/// Of query row i's visible keys j: the largest sum_c |q(i, c)| |k(j, c)| (what a score's rounding
/// error is proportional to) and how many there are.
struct VisibleProducts {
  Real largest;
  Index seen;
};
VisibleProducts visible_products(const ref::Matrix& q, const ref::Matrix& k, const ref::Mask& mask,
                                 Index i) {
  const Index L = q.rows(), S = k.rows(), d = q.cols();
  VisibleProducts r{0, 0};
  for (Index j = 0; j < S; ++j) {
    if (ref::hides(mask, L, S, i, j)) continue;
    ++r.seen;
    Real sum = 0;
    for (Index c = 0; c < d; ++c) sum += std::fabs(q(i, c)) * std::fabs(k(j, c));
    r.largest = std::max(r.largest, sum);
  }
  return r;
}

/// Counts the entries of `out` outside the bound at the top of this file for the reference
/// attention(q, k, v, mask); a NaN on either side counts unless both are NaN.
/// With a scale (default 1 / sqrt(d)) and a soft-cap c: c tanh(s / c) moves no score further than
/// s moved, plus its own evaluation (tanh within 2 ulp, a product and a quotient: 4 u_f c).
template <typename TOut>
Index entries_outside_bound(const Matrix<TOut>& out, const ref::Matrix& q, const ref::Matrix& k,
                            const ref::Matrix& v, const ref::Mask& mask,
                            std::optional<Real> given_scale = std::nullopt,
                            std::optional<Real> softcap = std::nullopt) {
  const Index L = q.rows(), S = k.rows(), d = q.cols();
  const ref::Matrix expected = ref::attention(q, k, v, mask, given_scale, softcap);
  const Real gamma_d = score_gamma(d);
  const Real scale = std::fabs(given_scale.value_or(ref::default_scale(d)));
  const Real cap_error = softcap ? 4 * u_float * *softcap : 0;
  const Real u_out = unit_roundoff<TOut>();
  const Real u_w = weights_roundoff<TOut>();
  Index outside = 0;
  for (Index i = 0; i < L; ++i) {
    const auto [largest_product, seen] = visible_products(q, k, mask, i);
    const Real delta = scale * gamma_d * largest_product + cap_error;
    for (Index c = 0; c < v.cols(); ++c) {
      Real largest_v = 0;
      for (Index j = 0; j < S; ++j) largest_v = std::max(largest_v, std::fabs(v(j, c)));
      const Real float_terms = (2 * seen + 16) * u_float;
      const Real bound =
          u_out * std::fabs(expected(i, c)) +
          (1 + u_out) * (2 * delta + float_terms + u_w * (1 + float_terms)) * largest_v;
      const Real got = static_cast<Real>(static_cast<float>(out(i, c)));
      if (std::isnan(got) && std::isnan(expected(i, c))) continue;
      if (!(std::fabs(got - expected(i, c)) <= bound)) ++outside;
    }
  }
  return outside;
}

constexpr Index L = 96, S = 160, d = 64;

template <typename T>
void expect_all_types_within_bound() {
  const auto q = rounded<T>(L, d, 11), k = rounded<T>(S, d, 12), v = rounded<T>(S, d, 13);
  const Matrix<T> out = attention::scaled_dot_product_attention(q.x, k.x, v.x);
  EXPECT_EQ(entries_outside_bound(out, q.real, k.real, v.real, ref::Mask::none()), 0);
  const Matrix<T> causal =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::causal);
  EXPECT_EQ(entries_outside_bound(causal, q.real, k.real, v.real, ref::Mask::causal()), 0);
}

TEST(LowPrecision, BFloat16WithinTheRoundoffBound) { expect_all_types_within_bound<bf16>(); }

TEST(LowPrecision, HalfWithinTheRoundoffBound) { expect_all_types_within_bound<half>(); }

// Float q with bfloat16 k and v: the output is float (u_out = 0 in the bound).
TEST(LowPrecision, FloatQueriesWithBFloat16KeysAndValues) {
  const auto q = rounded<float>(L, d, 21);
  const auto k = rounded<bf16>(S, d, 22), v = rounded<bf16>(S, d, 23);
  const Matrix<float> out = attention::scaled_dot_product_attention(q.x, k.x, v.x);
  EXPECT_EQ(entries_outside_bound(out, q.real, k.real, v.real, ref::Mask::none()), 0);
  // The same numbers as the float call on the float values of k and v: only k and v are converted.
  const Matrix<float> k_float = k.x.cast<float>(), v_float = v.x.cast<float>();
  const Matrix<float> all_float = attention::scaled_dot_product_attention(q.x, k_float, v_float);
  EXPECT_TRUE(out == all_float);
}

// The documented route: float attention of the converted inputs, rounded once to nearest.
TEST(LowPrecision, IsTheFloatResultOfTheConvertedInputsRoundedOnce) {
  const auto q = rounded<half>(L, d, 31), k = rounded<half>(S, d, 32), v = rounded<half>(S, d, 33);
  const Matrix<float> in_float = attention::scaled_dot_product_attention(
      q.x.cast<float>(), k.x.cast<float>(), v.x.cast<float>(), attention::causal);
  const Matrix<half> out =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::causal);
  for (Index i = 0; i < L; ++i) {
    for (Index c = 0; c < d; ++c) {
      // Round to nearest: no other half lies closer to the float result.
      const float exact = in_float(i, c);
      const float got = static_cast<float>(out(i, c));
      const float below = static_cast<float>(Eigen::numext::bit_cast<half>(
          static_cast<std::uint16_t>(Eigen::numext::bit_cast<std::uint16_t>(out(i, c)) - 1)));
      const float above = static_cast<float>(Eigen::numext::bit_cast<half>(
          static_cast<std::uint16_t>(Eigen::numext::bit_cast<std::uint16_t>(out(i, c)) + 1)));
      ASSERT_LE(std::fabs(got - exact), std::fabs(below - exact)) << i << ", " << c;
      ASSERT_LE(std::fabs(got - exact), std::fabs(above - exact)) << i << ", " << c;
    }
  }
}

// The tiles read bfloat16 and half operands in place, widened in registers (K as it is packed, V
// into its packed rows, q as its tile is loaded) and round the output from the finished float
// rows: the same numbers as the documented route, the float call on the converted inputs rounded
// once, to the bit. Widths that are not whole vectors (the scalar tails of every widening and
// rounding loop), tiles crossed both ways (48 or 64 queries, 24 to 96 keys), and bfloat16 values
// so large that S max|v| overflows float (the values are then packed rescaled by a power of two).
TEST(LowPrecision, TilesWidenInRegistersAsTheConvertedFloatCall) {
  const Index queries = 70, keys = 200, d_k = 20, d_v = 12;
  const auto check = [&](auto q_type, auto kv_type, float value_magnitude) {
    using Q = decltype(q_type);
    using KV = decltype(kv_type);
    const Matrix<Q> q = support::random_matrix<Q>(queries, d_k, 101);
    const Matrix<KV> k = support::random_matrix<KV>(keys, d_k, 102);
    const Matrix<KV> v =
        (support::random_matrix<float>(keys, d_v, 103) * value_magnitude).template cast<KV>();
    const Matrix<float> in_float = attention::scaled_dot_product_attention(
        q.template cast<float>(), k.template cast<float>(), v.template cast<float>());
    const Matrix<Q> out = attention::scaled_dot_product_attention(q, k, v);
    EXPECT_TRUE(out == in_float.template cast<Q>()) << typeid(Q).name() << typeid(KV).name();
  };
  check(half(), half(), 1.0f);
  check(float(), half(), 1.0f);
  check(float(), bf16(), 1.0f);
  // All-bfloat16 calls take the vdpbf16ps kernel where it runs, which rounds the weights: the
  // BFloat16Kernel tests below check it against the reference.
  if (!bf16_kernel_runs()) {
    check(bf16(), bf16(), 1.0f);
    check(bf16(), bf16(), 1e36f);  // S max|v| ~ 1e38 and beyond: the rescaled packing
  }
}

// Ties go to the even neighbour. One query of score 0 against two keys: weights exactly 1/2, so
// the output is the mean of the two values, computed exactly in float.
TEST(LowPrecision, OutputRoundsTiesToEven) {
  const Matrix<bf16> q = Matrix<bf16>::Zero(1, 1), k = Matrix<bf16>::Ones(2, 1);
  Matrix<bf16> v(2, 2);
  // bfloat16 has 8 significant bits: next to 1 are 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  v << bf16(1.0f), bf16(1.0f + 0x1p-7f),  //
      bf16(1.0f + 0x1p-7f), bf16(1.0f + 0x1p-6f);
  const Matrix<bf16> out = attention::scaled_dot_product_attention(q, k, v);
  EXPECT_EQ(static_cast<float>(out(0, 0)), 1.0f);            // mean 1 + 2^-8: tie, even is 1
  EXPECT_EQ(static_cast<float>(out(0, 1)), 1.0f + 0x1p-6f);  // mean 1 + 3 2^-8: tie, even above
  const Matrix<half> qh = Matrix<half>::Zero(1, 1), kh = Matrix<half>::Ones(2, 1);
  Matrix<half> vh(2, 1);
  vh << half(2048.0f), half(2050.0f);  // half's spacing is 2 in [2048, 4096): mean 2049 is a tie
  EXPECT_EQ(static_cast<float>(attention::scaled_dot_product_attention(qh, kh, vh)(0, 0)), 2048.0f);
}

// keep() and a float bias(): the masks apply to the float scores.
TEST(LowPrecision, KeepAndFloatBiasMasks) {
  const auto q = rounded<bf16>(L, d, 41), k = rounded<bf16>(S, d, 42), v = rounded<bf16>(S, d, 43);
  support::BoolMatrix visible = support::random_keep(L, S, 44, 0.3);
  visible.row(5).setConstant(false);  // a query that sees no key
  const Matrix<bf16> kept =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::keep(visible));
  EXPECT_EQ(entries_outside_bound(kept, q.real, k.real, v.real, ref::Mask::keep(visible)), 0);
  EXPECT_TRUE((kept.row(5).cast<float>().array() == 0.0f).all());

  Matrix<float> added = support::random_matrix<float>(L, S, 45);
  added.row(7).setConstant(-std::numeric_limits<float>::infinity());
  const Matrix<bf16> biased =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::bias(added));
  EXPECT_EQ(entries_outside_bound(biased, q.real, k.real, v.real, ref::Mask::bias(added)), 0);
  EXPECT_TRUE((biased.row(7).cast<float>().array() == 0.0f).all());
}

// NaN and infinities follow the float policy: a NaN key reaches only the queries that see it, an
// infinite value only those that give it weight; fully masked rows are 0 with lse -inf.
TEST(LowPrecision, NonFiniteInputsAndFullyMaskedRowsAsForFloat) {
  const Index n = 8, width = 4;
  Matrix<half> q = support::random_matrix<half>(n, width, 51);
  Matrix<half> k = support::random_matrix<half>(n, width, 52);
  Matrix<half> v = support::random_matrix<half>(n, width, 53);
  k(3, 1) = half(std::numeric_limits<float>::quiet_NaN());
  v(5, 2) = half(std::numeric_limits<float>::infinity());
  const attention::PartialAttention<half> result =
      attention::scaled_dot_product_attention_lse(q, k, v, attention::causal);
  for (Index i = 0; i < n; ++i) {
    const bool sees_nan_key = i >= 3;  // causal: query i sees keys 0..i
    for (Index c = 0; c < width; ++c) {
      EXPECT_EQ(Eigen::numext::isnan(result.output(i, c)), sees_nan_key) << i << ", " << c;
    }
    EXPECT_EQ(std::isnan(result.lse(i)), sees_nan_key) << i;
  }
  // Without the NaN key, the infinite value reaches column 2 of the rows that see key 5 only.
  k(3, 1) = half(0.5f);
  const Matrix<half> out = attention::scaled_dot_product_attention(q, k, v, attention::causal);
  for (Index i = 0; i < n; ++i) {
    EXPECT_EQ(Eigen::numext::isinf(out(i, 2)), i >= 5) << i;
    EXPECT_TRUE(Eigen::numext::isfinite(out(i, 0))) << i;
  }
  // A query that sees no key (causal with more queries than keys... here keep() all false).
  const support::BoolMatrix none = support::BoolMatrix::Constant(n, n, false);
  const auto hidden = attention::scaled_dot_product_attention_lse(q, k, v, attention::keep(none));
  EXPECT_TRUE((hidden.output.cast<float>().array() == 0.0f).all());
  EXPECT_TRUE((hidden.lse.array() == -std::numeric_limits<float>::infinity()).all());
}

// lse is float and within the score error of the reference's log-sum-exp:
//   |lse_i - ref_i| <= delta_i + (2 S_i + 16) u_f (1 + |ref_i|)
// (delta_i as at the top; the sum of exponentials and the log add the second term).
TEST(LowPrecision, LogSumExpIsFloatAndAccurate) {
  const auto q = rounded<bf16>(L, d, 61), k = rounded<bf16>(S, d, 62), v = rounded<bf16>(S, d, 63);
  const attention::PartialAttention<bf16> result =
      attention::scaled_dot_product_attention_lse(q.x, k.x, v.x, attention::causal);
  EXPECT_EQ(entries_outside_bound(result.output, q.real, k.real, v.real, ref::Mask::causal()), 0);
  const ref::Matrix expected =
      ref::row_logsumexp(ref::masked_scores(q.real, k.real, ref::Mask::causal()));
  const Real scale = ref::default_scale(d), gamma_d = score_gamma(d);
  for (Index i = 0; i < L; ++i) {
    Real largest_product = 0;
    for (Index j = 0; j <= i; ++j) {
      Real sum = 0;
      for (Index c = 0; c < d; ++c) sum += std::fabs(q.real(i, c)) * std::fabs(k.real(j, c));
      largest_product = std::max(largest_product, sum);
    }
    const Real bound = scale * gamma_d * largest_product +
                       (2 * (i + 1) + 16) * u_float * (1 + std::fabs(expected(i, 0)));
    EXPECT_LE(std::fabs(static_cast<Real>(result.lse(i)) - expected(i, 0)), bound) << i;
  }
}

// Two halves of the keys merged: within the bound of one call over all of them.
TEST(LowPrecision, MergeOfPartsWithinTheBound) {
  const auto q = rounded<bf16>(L, d, 71), k = rounded<bf16>(S, d, 72), v = rounded<bf16>(S, d, 73);
  const Index first = S / 2;
  const auto a =
      attention::scaled_dot_product_attention_lse(q.x, k.x.topRows(first), v.x.topRows(first));
  const auto b = attention::scaled_dot_product_attention_lse(q.x, k.x.bottomRows(S - first),
                                                             v.x.bottomRows(S - first));
  const attention::PartialAttention<bf16> merged = attention::merge(a, b);
  // Each part's output was rounded to bfloat16 before the merge: u_out of those roundings, at
  // most max |v| each, adds to the bound of one call; checked against twice the u_out term. On
  // the bfloat16 kernel the weights' rounding (u_w max |v|) is in both sides, hence 2 u_w more.
  const Matrix<bf16> whole = attention::scaled_dot_product_attention(q.x, k.x, v.x);
  for (Index i = 0; i < L; ++i) {
    EXPECT_NEAR(merged.lse(i),
                static_cast<float>(ref::row_logsumexp(
                    ref::masked_scores(q.real.row(i), k.real, ref::Mask::none()))(0, 0)),
                1e-4f);
  }
  const float largest_v = v.x.cast<float>().cwiseAbs().maxCoeff();
  EXPECT_LE(
      (merged.output.cast<float>() - whole.cast<float>()).cwiseAbs().maxCoeff(),
      static_cast<float>(3 * std::ldexp(1.0L, -8) + 2 * weights_roundoff<bf16>()) * largest_v);
}

// The other overloads: into `out`, with a workspace (reused), packed heads, and in place.
TEST(LowPrecision, EveryOverloadGivesTheSameNumbers) {
  const auto q = rounded<bf16>(L, 2 * d, 81), k = rounded<bf16>(S, d, 82),
             v = rounded<bf16>(S, d, 83);
  const Matrix<bf16> q0 = q.x.leftCols(d), q1 = q.x.rightCols(d);
  const Matrix<bf16> head0 = attention::scaled_dot_product_attention(q0, k.x, v.x);
  const Matrix<bf16> head1 = attention::scaled_dot_product_attention(q1, k.x, v.x);
  Matrix<bf16> out(L, d);
  attention::scaled_dot_product_attention(q0, k.x, v.x, out);
  EXPECT_TRUE(out == head0);
  attention::AttentionWorkspace<bf16> workspace;
  for (int call = 0; call < 2; ++call) {
    attention::scaled_dot_product_attention(q1, k.x, v.x, out, workspace);
    EXPECT_TRUE(out == head1);
  }
  // Two query heads sharing one key/value head (Heads{2, 1}): each head as its own call.
  const Matrix<bf16> packed =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::Heads{2, 1});
  EXPECT_TRUE(packed.leftCols(d) == head0);
  EXPECT_TRUE(packed.rightCols(d) == head1);
  Matrix<bf16> packed_out(L, 2 * d);
  attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::Heads{2, 1}, packed_out,
                                          workspace);
  EXPECT_TRUE(packed_out == packed);
  // In place: x = attention(x, x, x).
  Matrix<bf16> x = k.x;
  const Matrix<bf16> expected = attention::scaled_dot_product_attention(x, x, x);
  attention::scaled_dot_product_attention(x, x, x, x);
  EXPECT_TRUE(x == expected);
}

// A KVCache<Eigen::bfloat16>'s views go straight into attention: with float queries, the float
// attention of the rounded keys and values, here after a drop that moves the live rows.
TEST(LowPrecision, AttentionReadsABFloat16CachesViews) {
  const Index width = 16, tokens = 40, dropped = 3;
  const Matrix<float> k = support::random_matrix<float>(tokens, width, 91);
  const Matrix<float> v = support::random_matrix<float>(tokens, width, 92);
  const Matrix<float> q = support::random_matrix<float>(4, width, 93);
  attention::KVCache<bf16> cache(width, 64);
  cache.append(k.topRows(25), v.topRows(25));
  cache.drop_oldest(dropped);
  cache.append(k.bottomRows(tokens - 25), v.bottomRows(tokens - 25));
  const Matrix<float> out =
      attention::scaled_dot_product_attention(q, cache.keys(), cache.values());
  const Index live = tokens - dropped;
  const Matrix<float> k_rounded = k.bottomRows(live).cast<bf16>().cast<float>();
  const Matrix<float> v_rounded = v.bottomRows(live).cast<bf16>().cast<float>();
  EXPECT_TRUE(out == attention::scaled_dot_product_attention(q, k_rounded, v_rounded));
}

/// Counts the rows whose lse is outside the bound of LogSumExpIsFloatAndAccurate (a row that sees
/// no key must give -inf, as the reference does).
Index lse_outside_bound(const Eigen::VectorXf& lse, const ref::Matrix& q, const ref::Matrix& k,
                        const ref::Mask& mask) {
  const Index L = q.rows(), d = q.cols();
  const ref::Matrix expected = ref::row_logsumexp(ref::masked_scores(q, k, mask));
  const Real scale = ref::default_scale(d), gamma_d = score_gamma(d);
  Index outside = 0;
  for (Index i = 0; i < L; ++i) {
    const auto [largest_product, seen] = visible_products(q, k, mask, i);
    const Real got = lse(i);
    if (seen == 0) {
      if (!(std::isinf(got) && got < 0)) ++outside;
      continue;
    }
    const Real bound = scale * gamma_d * largest_product +
                       (2 * seen + 16) * u_float * (1 + std::fabs(expected(i, 0)));
    if (!(std::fabs(got - expected(i, 0)) <= bound)) ++outside;
  }
  return outside;
}

/// Skips a test of the bfloat16 kernel where it does not run, saying why.
#define SKIP_UNLESS_BF16_KERNEL_RUNS()                                                       \
  if (!bf16_kernel_runs()) {                                                                 \
    GTEST_SKIP() << "the vdpbf16ps kernel does not run here: the CPU lacks AVX512_BF16, or " \
                    "ATTENTION_ISA selects another path than avx512";                        \
  }

// The vdpbf16ps kernel (all-bfloat16 calls, kernels/bf16_forward.hpp) against the reference on
// the same rounded inputs, within the bound at the top of this file with u_w = 2^-8: sizes that
// are not multiples of its tiles (64 queries, 128 keys, 32-key micro-tiles, 32-column value
// chunks), odd d and d_v (the last pair completed with 0), an odd number of keys, d = 1, and
// scales that are (d = 64) and are not (d = 33, 128) a power of two; each with and without the
// causal mask, output and lse.
TEST(BFloat16Kernel, WithinTheBoundOnSizesThatAreNotTileMultiples) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  struct Shape {
    Index queries, keys, d_k, d_v;
  };
  for (const Shape shape : {Shape{130, 261, 33, 17}, Shape{64, 128, 64, 64},
                            Shape{40, 200, 128, 128}, Shape{20, 40, 1, 3}}) {
    const auto q = rounded<bf16>(shape.queries, shape.d_k, 111);
    const auto k = rounded<bf16>(shape.keys, shape.d_k, 112);
    const auto v = rounded<bf16>(shape.keys, shape.d_v, 113);
    const auto none = attention::scaled_dot_product_attention_lse(q.x, k.x, v.x);
    EXPECT_EQ(entries_outside_bound(none.output, q.real, k.real, v.real, ref::Mask::none()), 0)
        << shape.queries << " x " << shape.keys << ", d " << shape.d_k;
    EXPECT_EQ(lse_outside_bound(none.lse, q.real, k.real, ref::Mask::none()), 0);
    const auto causal =
        attention::scaled_dot_product_attention_lse(q.x, k.x, v.x, attention::causal);
    EXPECT_EQ(entries_outside_bound(causal.output, q.real, k.real, v.real, ref::Mask::causal()), 0)
        << shape.queries << " x " << shape.keys << ", d " << shape.d_k << ", causal";
    EXPECT_EQ(lse_outside_bound(causal.lse, q.real, k.real, ref::Mask::causal()), 0);
  }
}

// The kernel that ran is the one that rounds the weights: its output differs in some entries
// from the float kernel's (the converted inputs' float call rounded once, which the fallback
// returns to the bit), so a float kernel taking its place would fail here.
TEST(BFloat16Kernel, RoundsTheWeights) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  const Index n = 96, width = 64;
  const auto q = rounded<bf16>(n, width, 121), k = rounded<bf16>(n, width, 122);
  const auto v = rounded<bf16>(n, width, 123);
  // A float output (float q) would not round the weights; bfloat16 q rounds them.
  const Matrix<bf16> out = attention::scaled_dot_product_attention(q.x, k.x, v.x);
  const Matrix<float> widened = attention::scaled_dot_product_attention(
      q.x.cast<float>(), k.x.cast<float>(), v.x.cast<float>());
  EXPECT_FALSE(out == widened.cast<bf16>());
}

// A mask that hides every key of some rows: those rows are 0 and their lse -inf (the float
// policy), the others within the bound; tiles the mask hides entirely are skipped.
TEST(BFloat16Kernel, FullyMaskedRowsAreZero) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  const Index queries = 150, keys = 270, width = 48;
  const auto q = rounded<bf16>(queries, width, 131), k = rounded<bf16>(keys, width, 132);
  const auto v = rounded<bf16>(keys, width, 133);
  support::BoolMatrix visible = support::random_keep(queries, keys, 134, 0.5);
  for (const Index row : {0, 5, 64, 149}) visible.row(row).setConstant(false);
  visible.block(70, 0, 60, 256).setConstant(false);  // whole key tiles hidden from these rows
  const auto result =
      attention::scaled_dot_product_attention_lse(q.x, k.x, v.x, attention::keep(visible));
  for (const Index row : {0, 5, 64, 149}) {
    EXPECT_TRUE((result.output.row(row).cast<float>().array() == 0.0f).all()) << row;
    EXPECT_EQ(result.lse(row), -std::numeric_limits<float>::infinity()) << row;
  }
  EXPECT_EQ(entries_outside_bound(result.output, q.real, k.real, v.real, ref::Mask::keep(visible)),
            0);
  EXPECT_EQ(lse_outside_bound(result.lse, q.real, k.real, ref::Mask::keep(visible)), 0);
}

// An infinite and a NaN value: they reach the output entries of the queries that give their key
// weight, and nothing else. A weight of 0 (a masked key) adds nothing, where 0 * inf in a pair's
// product would be NaN; the other entries are within the bound of the reference on the values
// with those two set to 0 (which weigh 0 there).
TEST(BFloat16Kernel, NonFiniteValuesReachOnlyTheQueriesThatWeighThem) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  const Index n = 140, width = 40;
  const auto q = rounded<bf16>(n, width, 141), k = rounded<bf16>(n, width, 142);
  auto v = rounded<bf16>(n, width, 143);
  const Index inf_key = 5, nan_key = 100;
  v.x(inf_key, 2) = bf16(std::numeric_limits<float>::infinity());
  v.x(nan_key, 7) = bf16(std::numeric_limits<float>::quiet_NaN());
  const Matrix<bf16> out =
      attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::causal);
  ref::Matrix v_zeroed = v.real;
  v_zeroed(inf_key, 2) = 0;
  v_zeroed(nan_key, 7) = 0;
  const ref::Matrix expected = ref::attention(q.real, k.real, v_zeroed, ref::Mask::causal());
  Matrix<bf16> compared = out;
  for (Index i = 0; i < n; ++i) {
    // Causal: query i gives weight to keys 0 .. i (random N(0, 1) scores: no weight underflows).
    EXPECT_EQ(Eigen::numext::isinf(out(i, 2)), i >= inf_key) << i;
    EXPECT_EQ(Eigen::numext::isnan(out(i, 7)), i >= nan_key) << i;
    // The non-finite entries, checked above, take the reference's value rounded once (inside the
    // bound) so that the comparison below covers every other entry.
    if (i >= inf_key) compared(i, 2) = bf16(static_cast<float>(expected(i, 2)));
    if (i >= nan_key) compared(i, 7) = bf16(static_cast<float>(expected(i, 7)));
  }
  EXPECT_EQ(entries_outside_bound(compared, q.real, k.real, v_zeroed, ref::Mask::causal()), 0);
}

// Options: scales that are not a power of two, above 1 (q then not scaled), 0 (uniform weights),
// negative; with and without a soft-cap (applied to the scaled scores, before the mask).
TEST(BFloat16Kernel, ScaleAndSoftcapOptions) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  const Index queries = 70, keys = 150, width = 40;
  const auto q = rounded<bf16>(queries, width, 161), k = rounded<bf16>(keys, width, 162);
  const auto v = rounded<bf16>(keys, width, 163);
  for (const double scale : {0.3, 1.5, 0.0, -0.7}) {
    for (const std::optional<double> cap : {std::optional<double>(), std::optional<double>(2.0)}) {
      const attention::Options options{scale, cap};
      const Matrix<bf16> out =
          attention::scaled_dot_product_attention(q.x, k.x, v.x, attention::causal, options);
      const std::optional<Real> cap_real =
          cap ? std::optional<Real>(static_cast<Real>(*cap)) : std::nullopt;
      EXPECT_EQ(entries_outside_bound(out, q.real, k.real, v.real, ref::Mask::causal(),
                                      static_cast<Real>(scale), cap_real),
                0)
          << "scale " << scale << (cap ? ", soft-cap 2" : "");
    }
  }
}

// Values so large that S max|v| overflows float: V is packed scaled by a power of two and the
// output scaled back, as on the float path; the bound scales with max|v|.
TEST(BFloat16Kernel, HugeValuesArePackedRescaled) {
  SKIP_UNLESS_BF16_KERNEL_RUNS();
  const Index queries = 70, keys = 300, width = 24;
  const auto q = rounded<bf16>(queries, width, 151), k = rounded<bf16>(keys, width, 152);
  Rounded<bf16> v{(support::random_matrix<float>(keys, width, 153) * 1e36f).cast<bf16>(), {}};
  v.real = ref::to_real(v.x);
  const Matrix<bf16> out = attention::scaled_dot_product_attention(q.x, k.x, v.x);
  EXPECT_TRUE(out.cast<float>().allFinite());
  EXPECT_EQ(entries_outside_bound(out, q.real, k.real, v.real, ref::Mask::none()), 0);
}

TEST(LowPrecision, ShapeErrorsNameTheShapes) {
  const Matrix<bf16> q = Matrix<bf16>::Zero(4, 8), k = Matrix<bf16>::Zero(5, 7);
  try {
    (void)attention::scaled_dot_product_attention(q, k, k);
    FAIL() << "no ShapeError";
  } catch (const attention::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("k.cols() (= 7)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace low_precision_test
