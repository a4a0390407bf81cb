// SPDX-License-Identifier: MIT
//
// The tiled backward kernel (kernels/backward.hpp), reached through
// scaled_dot_product_attention_backward(q, k, v, out, lse, d_out, ...) for float and double:
// against the materialising backward at sizes around the tile and vector widths, L != S, every mask
// kind (with fully masked rows and tiles the mask empties), the scale option and bias gradients;
// against central finite differences in double; the fallbacks (non-finite inputs, long double);
// shape checks; and bitwise determinism across thread counts (built with OpenMP when available).

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename Scalar>
class Backward : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Backward, FastScalars, support::ScalarNames);

/// Bound on |tiled − materialising| relative to the gradient's size, max(1, max |expected|), at
/// these sizes (L and S up to 200, d up to 80): both compute the same sums in another order, the
/// tiled one from exp(s − lse) and rowsum(dO ∘ O) instead of a normalised softmax and
/// rowsum(dP ∘ P). The latter cancels less exactly: with one key, where dq = dk = 0, the tiled
/// float kernel leaves residues up to 2.3e-5 (200 queries, d_v = 80) against exact zeros. Worst
/// seen over L, S in {1 .. 200}, d_k in {1 .. 64}, d_v in {3 .. 80}: 2.3e-5 (float) and 7.9e-14
/// (double).
template <typename Scalar>
long double backward_tolerance() {
  return std::is_same_v<Scalar, float> ? 5e-5L : 2e-13L;
}

/// is_near with backward_tolerance scaled by the size of `expected`.
template <typename DerivedA, typename DerivedE>
::testing::AssertionResult is_near_relative(const Eigen::MatrixBase<DerivedA>& actual,
                                            const Eigen::MatrixBase<DerivedE>& expected,
                                            long double tol) {
  long double size = 1;
  for (Index i = 0; i < expected.size(); ++i) {
    size = std::max(size, std::fabs(static_cast<long double>(expected.reshaped()(i))));
  }
  return support::is_near(actual, expected, tol * size);
}

template <typename Scalar>
struct Inputs {
  Matrix<Scalar> q, k, v, d_out;
};

template <typename Scalar>
Inputs<Scalar> random_inputs(Index num_queries, Index num_keys, Index d_k, Index d_v,
                             unsigned seed) {
  return {support::random_matrix<Scalar>(num_queries, d_k, seed),
          support::random_matrix<Scalar>(num_keys, d_k, seed + 1),
          support::random_matrix<Scalar>(num_keys, d_v, seed + 2),
          support::random_matrix<Scalar>(num_queries, d_v, seed + 3)};
}

/// The tiled backward (via the forward's saved output and lse) against the materialising one.
template <typename Scalar, typename Mask>
void expect_matches_materialising(const Inputs<Scalar>& in, const Mask& mask,
                                  const attention::Options& options = {}) {
  const auto forward = attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, mask, options);
  const auto tiled = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, forward.output, forward.lse, in.d_out, mask, options);
  const auto expected =
      attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, in.d_out, mask, options);
  const long double tol = backward_tolerance<Scalar>();
  EXPECT_TRUE(is_near_relative(tiled.dq, expected.dq, tol)) << "dq";
  EXPECT_TRUE(is_near_relative(tiled.dk, expected.dk, tol)) << "dk";
  EXPECT_TRUE(is_near_relative(tiled.dv, expected.dv, tol)) << "dv";
  EXPECT_TRUE(is_near_relative(tiled.dbias, expected.dbias, tol)) << "dbias";
}

// (L, S, d_k, d_v): one token; sizes just under, at and over the tiles (block_rows 32 or 64
// queries, block_cols 8 to 64 keys) and widths that are not a whole number of SIMD vectors.
const std::tuple<Index, Index, Index, Index> shapes[] = {
    {1, 1, 1, 1},    {1, 9, 3, 5},      {7, 1, 4, 4},      {33, 17, 8, 3},  {64, 64, 16, 16},
    {65, 63, 17, 9}, {130, 70, 32, 40}, {40, 200, 64, 80}, {200, 40, 5, 64}};

TYPED_TEST(Backward, NoMaskMatchesMaterialising) {
  unsigned seed = 100;
  for (const auto& [num_queries, num_keys, d_k, d_v] : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << num_queries << " x " << num_keys << ", d_k " << d_k << ", d_v " << d_v);
    expect_matches_materialising(
        random_inputs<TypeParam>(num_queries, num_keys, d_k, d_v, seed += 10), attention::NoMask{});
  }
}

// Causal with L < S (whole key tiles seen by nobody), L == S and L > S.
TYPED_TEST(Backward, CausalMatchesMaterialising) {
  unsigned seed = 200;
  for (const auto& [num_queries, num_keys, d_k, d_v] : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << num_queries << " x " << num_keys << ", d_k " << d_k << ", d_v " << d_v);
    expect_matches_materialising(
        random_inputs<TypeParam>(num_queries, num_keys, d_k, d_v, seed += 10), attention::causal);
  }
}

// Enough keys (64 key blocks and more, at any SIMD width up to AVX-512 for double) that the
// kernel takes spans of 8 key blocks rather than 4 (kernels/backward.hpp, key_span_for),
// without and with a causal mask, against the materialising path.
TYPED_TEST(Backward, LongKeySpansMatchMaterialising) {
  using T = TypeParam;
  const Index num_keys = std::is_same_v<T, float> ? 4100 : 2100;
  const Inputs<T> in = random_inputs<T>(70, num_keys, 8, 8, 4100);
  expect_matches_materialising(in, attention::NoMask{});
  expect_matches_materialising(in, attention::causal_lower_right);
}

// keep() with fully masked rows and a fully hidden block of keys.
TYPED_TEST(Backward, KeepMatchesMaterialising) {
  const Index num_queries = 90, num_keys = 150;
  BoolMatrix visible = support::random_keep(num_queries, num_keys, 300, 0.5);
  visible.row(3).setConstant(false);
  visible.row(70).setConstant(false);
  visible.block(0, 64, num_queries, 64).setConstant(false);
  expect_matches_materialising(random_inputs<TypeParam>(num_queries, num_keys, 24, 20, 301),
                               attention::keep(visible));
}

// A bias with finite values and -inf entries (a fully masked row, a hidden block): dbias as well.
TYPED_TEST(Backward, BiasMatchesMaterialisingIncludingBiasGradient) {
  using T = TypeParam;
  const Index num_queries = 75, num_keys = 110;
  Matrix<T> b = support::random_matrix<T>(num_queries, num_keys, 400);
  b.row(10).setConstant(-std::numeric_limits<T>::infinity());
  b.block(40, 0, 35, 64).setConstant(-std::numeric_limits<T>::infinity());
  b(0, 5) = -std::numeric_limits<T>::infinity();
  expect_matches_materialising(random_inputs<T>(num_queries, num_keys, 16, 12, 401),
                               attention::bias(b));
}

TYPED_TEST(Backward, ScaleOptionMatchesMaterialising) {
  for (const double scale : {0.0, 0.05, -0.7, 1.5}) {
    SCOPED_TRACE(::testing::Message() << "scale = " << scale);
    attention::Options options;
    options.scale = scale;
    expect_matches_materialising(random_inputs<TypeParam>(70, 50, 12, 7, 500), attention::causal,
                                 options);
  }
}

TYPED_TEST(Backward, FullyMaskedRowsAndUnseenKeysGetExactlyZero) {
  using T = TypeParam;
  const Inputs<T> in = random_inputs<T>(40, 100, 8, 8, 600);
  BoolMatrix visible = support::random_keep(40, 100, 601, 0.7);
  visible.row(5).setConstant(false);
  visible.col(77).setConstant(false);
  const auto forward =
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::keep(visible));
  const auto g = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, forward.output, forward.lse, in.d_out, attention::keep(visible));
  EXPECT_TRUE((g.dq.row(5).array() == T(0)).all());
  EXPECT_TRUE((g.dk.row(77).array() == T(0)).all());
  EXPECT_TRUE((g.dv.row(77).array() == T(0)).all());
  EXPECT_TRUE(g.dq.allFinite() && g.dk.allFinite() && g.dv.allFinite());
  // Causal with L < S: keys L .. S-1, whole tiles of them, are seen by nobody.
  const auto causal_forward =
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal);
  const auto c = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, causal_forward.output, causal_forward.lse, in.d_out, attention::causal);
  EXPECT_TRUE((c.dk.bottomRows(60).array() == T(0)).all());
  EXPECT_TRUE((c.dv.bottomRows(60).array() == T(0)).all());
}

// loss = sum(d_out ∘ forward(q, k, v)) differentiated by central differences, in double, with the
// tiled kernel supplying the gradients. Relative error bound 1e-8 (support/gradient_check.hpp).
// One thread: the check runs the forward thousands of times on tiny inputs, where starting
// threads would cost more than the work (and a lot more on a busy machine).
TEST(BackwardGradient, MatchesFiniteDifferences) {
#if defined(_OPENMP)
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
#endif
  for (const auto& [num_queries, num_keys, d_k, d_v] :
       {std::tuple<Index, Index, Index, Index>{5, 70, 3, 2}, {70, 6, 2, 3}}) {
    SCOPED_TRACE(::testing::Message() << num_queries << " x " << num_keys);
    Inputs<double> in = random_inputs<double>(num_queries, num_keys, d_k, d_v, 700);
    Matrix<double> b = support::random_matrix<double>(num_queries, num_keys, 701);
    b(0, 1) = -std::numeric_limits<double>::infinity();
    const auto forward =
        attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::bias(b));
    const auto g = attention::scaled_dot_product_attention_backward(
        in.q, in.k, in.v, forward.output, forward.lse, in.d_out, attention::bias(b));
    const auto loss = [&] {
      return support::weighted_sum(
          in.d_out, attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(b)));
    };
    constexpr long double bound = support::gradient_bound<double>();
    EXPECT_TRUE(support::gradient_matches(loss, in.q, g.dq, bound)) << "dq";
    EXPECT_TRUE(support::gradient_matches(loss, in.k, g.dk, bound)) << "dk";
    EXPECT_TRUE(support::gradient_matches(loss, in.v, g.dv, bound)) << "dv";
    EXPECT_TRUE(support::gradient_matches(loss, b, g.dbias, bound)) << "dbias";
  }
#if defined(_OPENMP)
  omp_set_num_threads(saved_threads);
#endif
}

// A NaN in a masked key's value row: the tiled path hands over to the materialising one, which
// keeps it away from every gradient.
TEST(Backward, NonFiniteInputsTakeTheMaterialisingPath) {
  Inputs<double> in = random_inputs<double>(20, 30, 4, 4, 800);
  BoolMatrix visible = BoolMatrix::Constant(20, 30, true);
  visible.col(12).setConstant(false);
  const auto forward =
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::keep(visible));
  const auto clean = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, forward.output, forward.lse, in.d_out, attention::keep(visible));
  in.v.row(12).setConstant(std::numeric_limits<double>::quiet_NaN());
  const auto poisoned = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, forward.output, forward.lse, in.d_out, attention::keep(visible));
  EXPECT_TRUE(support::is_near(poisoned.dq, clean.dq, 1e-14));
  EXPECT_TRUE(support::is_near(poisoned.dk, clean.dk, 1e-14));
  EXPECT_TRUE(support::is_near(poisoned.dv, clean.dv, 1e-14));
}

TEST(Backward, LongDoubleTakesTheMaterialisingPath) {
  const Inputs<long double> in = random_inputs<long double>(9, 11, 3, 2, 900);
  const auto forward =
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal);
  const auto g = attention::scaled_dot_product_attention_backward(
      in.q, in.k, in.v, forward.output, forward.lse, in.d_out, attention::causal);
  const auto expected = attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, in.d_out,
                                                                         attention::causal);
  EXPECT_TRUE(support::is_near(g.dq, expected.dq, 0));
  EXPECT_TRUE(support::is_near(g.dk, expected.dk, 0));
  EXPECT_TRUE(support::is_near(g.dv, expected.dv, 0));
}

TEST(Backward, ThrowsWhenSavedResultsHaveWrongShape) {
  const Inputs<double> in = random_inputs<double>(4, 6, 3, 2, 1000);
  const auto forward = attention::scaled_dot_product_attention_lse(in.q, in.k, in.v);
  const Eigen::VectorXd short_lse = forward.lse.head(3);
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   in.q, in.k, in.v, forward.output, short_lse, in.d_out),
               attention::ShapeError);
  EXPECT_THROW(
      (void)attention::scaled_dot_product_attention_backward(
          in.q, in.k, in.v, Matrix<double>(forward.output.leftCols(1)), forward.lse, in.d_out),
      attention::ShapeError);
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   in.q, in.k, in.v, forward.output, forward.lse, Matrix<double>::Ones(4, 3)),
               attention::ShapeError);
  try {
    (void)attention::scaled_dot_product_attention_backward(in.q, in.k, in.v, forward.output,
                                                           short_lse, in.d_out);
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::scaled_dot_product_attention_backward: lse.size() (= 3) must equal "
              "q.rows() (= 4)");
  }
}

#if defined(_OPENMP)
// dk and dv of a key block come from one thread; dq is summed over a fixed number of groups in a
// fixed order: the gradients agree to the bit for any thread count.
TYPED_TEST(Backward, BitwiseIdenticalForAnyThreadCount) {
  using T = TypeParam;
  const Inputs<T> in = random_inputs<T>(300, 280, 32, 24, 1100);
  const int saved = omp_get_max_threads();
  std::vector<attention::AttentionGradients<T>> plain, causal;
  const auto forward = attention::scaled_dot_product_attention_lse(in.q, in.k, in.v);
  const auto causal_forward =
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal);
  for (const int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    plain.push_back(attention::scaled_dot_product_attention_backward(
        in.q, in.k, in.v, forward.output, forward.lse, in.d_out));
    causal.push_back(attention::scaled_dot_product_attention_backward(
        in.q, in.k, in.v, causal_forward.output, causal_forward.lse, in.d_out, attention::causal));
  }
  omp_set_num_threads(saved);
  for (std::size_t t = 1; t < plain.size(); ++t) {
    EXPECT_TRUE(plain[t].dq == plain[0].dq && plain[t].dk == plain[0].dk &&
                plain[t].dv == plain[0].dv)
        << t + 1 << " threads";
    EXPECT_TRUE(causal[t].dq == causal[0].dq && causal[t].dk == causal[0].dk &&
                causal[t].dv == causal[0].dv)
        << t + 1 << " threads";
  }
}
#endif

}  // namespace
