// SPDX-License-Identifier: MIT
// Tests for scaled_dot_product_attention_backward (attention/scaled_dot_product.hpp): a worked
// example, central finite differences in double and long double for every mask kind and the scale
// option (fully masked rows, causal with L != S, bias gradients), float against double, both forms,
// input layouts, and every shape check.
//
// The gradient checks differentiate loss = sum(d_out ∘ scaled_dot_product_attention(q, k, v, ...))
// for a fixed random d_out, evaluated with the library's own forward, so dloss/dq, dk, dv and, with
// attention::bias(b), dloss/db are exactly the gradients the backward returns. Relative error
// bound: support::gradient_bound<T>() (1e-8 in double, 1e-11 in long double; see
// support/gradient_check.hpp).

#include <gtest/gtest.h>

#include <attention/partial.hpp>
#include <attention/scaled_dot_product_backward.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"

namespace scaled_dot_product_backward_test {
namespace {

using attention::Index;
using attention::Matrix;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
class ScaledDotProductBackwardGradient : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(ScaledDotProductBackwardGradient, CheckScalars, support::ScalarNames);

template <typename T>
class ScaledDotProductBackward : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(ScaledDotProductBackward, Scalars, support::ScalarNames);

struct Sizes {
  Index num_queries, num_keys, d_k, d_v;
};

// Random q, k, v, d_out of the given sizes; checks dq, dk, dv (and db when `bias` is given, the
// matrix the mask reads) against finite differences of the library's forward.
template <typename T, typename MakeMask>
void expect_gradients_match(const Sizes& n, unsigned seed, const MakeMask& make_mask,
                            const attention::Options& options = {}, Matrix<T>* bias = nullptr) {
  SCOPED_TRACE(::testing::Message() << "L = " << n.num_queries << ", S = " << n.num_keys
                                    << ", d_k = " << n.d_k << ", d_v = " << n.d_v);
  Matrix<T> q = support::random_matrix<T>(n.num_queries, n.d_k, seed);
  Matrix<T> k = support::random_matrix<T>(n.num_keys, n.d_k, seed + 1);
  Matrix<T> v = support::random_matrix<T>(n.num_keys, n.d_v, seed + 2);
  const Matrix<T> d_out = support::random_matrix<T>(n.num_queries, n.d_v, seed + 3);
  const attention::AttentionGradients<T> grads =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, make_mask(), options);
  const auto loss = [&] {
    return support::weighted_sum(
        d_out, attention::scaled_dot_product_attention(q, k, v, make_mask(), options));
  };
  constexpr long double bound = support::gradient_bound<T>();
  EXPECT_FALSE(grads.dq.array().isNaN().any() || grads.dk.array().isNaN().any() ||
               grads.dv.array().isNaN().any());
  EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, bound)) << "dq";
  EXPECT_TRUE(support::gradient_matches(loss, k, grads.dk, bound)) << "dk";
  EXPECT_TRUE(support::gradient_matches(loss, v, grads.dv, bound)) << "dv";
  if (bias != nullptr) {
    EXPECT_TRUE(support::gradient_matches(loss, *bias, grads.dbias, bound)) << "dbias";
  } else {
    EXPECT_EQ(grads.dbias.size(), 0);
  }
}

const Sizes shapes[] = {{1, 1, 1, 1}, {3, 5, 4, 2}, {6, 4, 3, 5}, {7, 7, 4, 4}, {2, 9, 5, 3}};

TYPED_TEST(ScaledDotProductBackwardGradient, NoMask) {
  for (const Sizes& n : shapes) {
    expect_gradients_match<TypeParam>(n, 100, [] { return attention::NoMask{}; });
  }
}

// Causal, top-left aligned, with L < S (the last keys seen by nobody: dk = dv = 0 there), L == S
// and L > S (the last queries see every key).
TYPED_TEST(ScaledDotProductBackwardGradient, Causal) {
  for (const Sizes& n : shapes) {
    expect_gradients_match<TypeParam>(n, 200, [] { return attention::causal; });
  }
}

// A random keep mask with one fully masked query row (dq = 0 there, from both sides).
TYPED_TEST(ScaledDotProductBackwardGradient, KeepWithFullyMaskedRow) {
  for (const Sizes& n : shapes) {
    BoolMatrix visible = support::random_keep(n.num_queries, n.num_keys, 300, 0.6);
    visible.row(n.num_queries / 2).setConstant(false);
    expect_gradients_match<TypeParam>(n, 310, [&] { return attention::keep(visible); });
  }
}

// A finite bias of order 1 (ALiBi-like): its gradient is dS.
TYPED_TEST(ScaledDotProductBackwardGradient, FiniteBias) {
  using T = TypeParam;
  for (const Sizes& n : shapes) {
    Matrix<T> b = support::random_matrix<T>(n.num_queries, n.num_keys, 400);
    expect_gradients_match<T>(
        n, 410, [&] { return attention::bias(b); }, {}, &b);
  }
}

// A bias mixing finite values and -inf, with one row all -inf: db is 0 where b is -inf (checked by
// the checker, which takes the derivative there as 0) and the fully masked row gets zeros.
TYPED_TEST(ScaledDotProductBackwardGradient, BiasWithMinusInfinityAndFullyMaskedRow) {
  using T = TypeParam;
  constexpr T minus_inf = -std::numeric_limits<T>::infinity();
  for (const Sizes& n : shapes) {
    Matrix<T> b = support::random_matrix<T>(n.num_queries, n.num_keys, 500);
    const BoolMatrix visible = support::random_keep(n.num_queries, n.num_keys, 501, 0.7);
    for (Index i = 0; i < b.rows(); ++i) {
      for (Index j = 0; j < b.cols(); ++j) {
        if (!visible(i, j)) b(i, j) = minus_inf;
      }
    }
    b.row(n.num_queries - 1).setConstant(minus_inf);
    expect_gradients_match<T>(
        n, 510, [&] { return attention::bias(b); }, {}, &b);
  }
}

// options.scale replaces 1 / sqrt(d_k): larger, smaller, zero (uniform weights: dq = dk = 0) and
// negative, with and without a mask.
TYPED_TEST(ScaledDotProductBackwardGradient, ScaleOption) {
  for (const double scale : {2.0, 0.37, 0.0, -1.3}) {
    SCOPED_TRACE(::testing::Message() << "scale = " << scale);
    attention::Options options;
    options.scale = scale;
    expect_gradients_match<TypeParam>(
        {4, 6, 3, 2}, 600, [] { return attention::NoMask{}; }, options);
    expect_gradients_match<TypeParam>(
        {6, 4, 3, 2}, 610, [] { return attention::causal; }, options);
  }
}

// Larger inputs (scores of order 10): the softmax saturates, and the gradients must still match.
TYPED_TEST(ScaledDotProductBackwardGradient, PeakedWeights) {
  using T = TypeParam;
  attention::Options options;
  options.scale = 3.0;
  expect_gradients_match<T>(
      {5, 6, 4, 3}, 700, [] { return attention::causal; }, options);
}

// q = [1 0]; k = [[1 0], [0 1]]; v = [[1 2], [3 4]]; d_out = [1 0]; scale = 1 / sqrt(2)
// P = softmax([0.70711, 0]) = [0.66976, 0.33024]
// dV = Pᵀ dO = [[0.66976, 0], [0.33024, 0]];  dP = dO Vᵀ = [1, 3];  rowsum(dP ∘ P) = 1.66048
// dS = P ∘ (dP − 1.66048) = [−0.44236, 0.44236]
// dQ = scale · dS K = [−0.31280, 0.31280];  dK = scale · dSᵀ Q = [[−0.31280, 0], [0.31280, 0]]
TEST(ScaledDotProductBackward, WorkedExampleOneQueryTwoKeys) {
  Matrix<double> q(1, 2), k(2, 2), v(2, 2), d_out(1, 2);
  q << 1, 0;
  k << 1, 0, 0, 1;
  v << 1, 2, 3, 4;
  d_out << 1, 0;
  const auto g = attention::scaled_dot_product_attention_backward(q, k, v, d_out);
  constexpr double tol = 1e-12, p0 = 0.6697615493266569, p1 = 0.3302384506733431;
  constexpr double d = 0.3127971930902208;
  EXPECT_TRUE(support::is_near(g.dv, Matrix<double>{{p0, 0}, {p1, 0}}, tol));
  EXPECT_TRUE(support::is_near(g.dq, Matrix<double>{{-d, d}}, tol));
  EXPECT_TRUE(support::is_near(g.dk, Matrix<double>{{-d, 0}, {d, 0}}, tol));
  EXPECT_EQ(g.dbias.size(), 0);
}

// Fully masked rows and unseen keys: exact zeros, never NaN, for every scalar type.
TYPED_TEST(ScaledDotProductBackward, MaskedRowsAndUnseenKeysGetExactlyZero) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(3, 4, 800),
                  k = support::random_matrix<T>(6, 4, 801);
  const Matrix<T> v = support::random_matrix<T>(6, 2, 802),
                  d_out = support::random_matrix<T>(3, 2, 803);
  // Causal with L = 3 < S = 6: keys 3, 4, 5 are seen by nobody.
  const auto causal =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::causal);
  EXPECT_TRUE((causal.dk.bottomRows(3).array() == T(0)).all()) << causal.dk;
  EXPECT_TRUE((causal.dv.bottomRows(3).array() == T(0)).all()) << causal.dv;
  // keep: query 1 sees nothing.
  BoolMatrix visible = BoolMatrix::Constant(3, 6, true);
  visible.row(1).setConstant(false);
  const auto kept =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::keep(visible));
  EXPECT_TRUE((kept.dq.row(1).array() == T(0)).all()) << kept.dq;
  EXPECT_FALSE(kept.dk.array().isNaN().any() || kept.dv.array().isNaN().any());
  // bias: row 2 all -inf, and one -inf entry in row 0.
  Matrix<T> b = Matrix<T>::Zero(3, 6);
  b.row(2).setConstant(-std::numeric_limits<T>::infinity());
  b(0, 4) = -std::numeric_limits<T>::infinity();
  const auto biased =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::bias(b));
  EXPECT_TRUE((biased.dq.row(2).array() == T(0)).all()) << biased.dq;
  EXPECT_TRUE((biased.dbias.row(2).array() == T(0)).all()) << biased.dbias;
  EXPECT_EQ(biased.dbias(0, 4), T(0));
  EXPECT_FALSE(biased.dq.array().isNaN().any() || biased.dk.array().isNaN().any() ||
               biased.dv.array().isNaN().any() || biased.dbias.array().isNaN().any());
}

// Non-finite inputs follow the forward's rule: a pair with weight exactly 0 takes no part. A NaN in
// the key and value rows of a key that no query sees changes nothing; one in a key seen by query 0
// alone reaches query 0's gradient and that key's, and nothing else.
TYPED_TEST(ScaledDotProductBackward, NaNInMaskedKeyReachesNoOtherGradient) {
  using T = TypeParam;
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  const Matrix<T> q = support::random_matrix<T>(3, 4, 860),
                  d_out = support::random_matrix<T>(3, 2, 861);
  Matrix<T> k = support::random_matrix<T>(5, 4, 862), v = support::random_matrix<T>(5, 2, 863);
  BoolMatrix visible = BoolMatrix::Constant(3, 5, true);
  visible.col(4).setConstant(false);  // key 4: seen by nobody
  visible.col(3).setConstant(false);
  visible(0, 3) = true;  // key 3: seen by query 0 alone
  const auto clean =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::keep(visible));
  k.row(4).setConstant(nan);
  v.row(4).setConstant(nan);
  const auto hidden =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::keep(visible));
  EXPECT_TRUE(support::is_near(hidden.dq, clean.dq, 0));
  EXPECT_TRUE(support::is_near(hidden.dk, clean.dk, 0));
  EXPECT_TRUE(support::is_near(hidden.dv, clean.dv, 0));
  v.row(3).setConstant(nan);
  const auto seen =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::keep(visible));
  EXPECT_TRUE(seen.dq.row(0).array().isNaN().all()) << seen.dq;
  EXPECT_TRUE(support::is_near(seen.dq.bottomRows(2), clean.dq.bottomRows(2), 0));
  EXPECT_TRUE(support::is_near(seen.dv.topRows(3), clean.dv.topRows(3), 0)) << "dv = P^T dO";
  EXPECT_TRUE((seen.dv.row(4).array() == T(0)).all());
  EXPECT_TRUE((seen.dk.row(4).array() == T(0)).all());
}

// The overload from the forward's output and lse runs the tiled kernel on finite inputs only: a
// NaN in a value row no query sees, or in `out` (which the materialising path does not read), sends
// the call to the materialising path, whose gradients it then returns bit for bit (the tiled kernel
// would spread either NaN to every gradient, through dO vᵀ or delta = rowsum(dO ∘ O)).
TYPED_TEST(ScaledDotProductBackward, SavedForwardWithNonFiniteValuesOrOutputMaterialises) {
  using T = TypeParam;
  constexpr T nan = std::numeric_limits<T>::quiet_NaN();
  const Matrix<T> q = support::random_matrix<T>(3, 4, 870),
                  k = support::random_matrix<T>(5, 4, 871),
                  d_out = support::random_matrix<T>(3, 2, 872);
  Matrix<T> v = support::random_matrix<T>(5, 2, 873);
  BoolMatrix visible = BoolMatrix::Constant(3, 5, true);
  visible.col(4).setConstant(false);  // key 4: seen by nobody
  const auto mask = attention::keep(visible);
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  Matrix<T> out = forward.output;
  out(1, 0) = nan;
  const auto from_nan_out =
      attention::scaled_dot_product_attention_backward(q, k, v, out, forward.lse, d_out, mask);
  const auto materialised = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  EXPECT_TRUE(support::is_near(from_nan_out.dq, materialised.dq, 0)) << from_nan_out.dq;
  EXPECT_TRUE(support::is_near(from_nan_out.dk, materialised.dk, 0)) << from_nan_out.dk;
  EXPECT_TRUE(support::is_near(from_nan_out.dv, materialised.dv, 0)) << from_nan_out.dv;
  v.row(4).setConstant(nan);
  const auto from_nan_v = attention::scaled_dot_product_attention_backward(
      q, k, v, forward.output, forward.lse, d_out, mask);
  const auto materialised_nan_v =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  EXPECT_TRUE(from_nan_v.dq.allFinite()) << from_nan_v.dq;
  EXPECT_TRUE(support::is_near(from_nan_v.dq, materialised_nan_v.dq, 0)) << from_nan_v.dq;
  EXPECT_TRUE(support::is_near(from_nan_v.dk, materialised_nan_v.dk, 0)) << from_nan_v.dk;
  EXPECT_TRUE(support::is_near(from_nan_v.dv, materialised_nan_v.dv, 0)) << from_nan_v.dv;
}

// A 0 / -inf bias is the causal mask: the same gradients, bit for bit (adding 0 changes nothing).
TYPED_TEST(ScaledDotProductBackward, ZeroMinusInfinityBiasEqualsCausal) {
  using T = TypeParam;
  const Index L = 5, S = 7;
  const Matrix<T> q = support::random_matrix<T>(L, 3, 810),
                  k = support::random_matrix<T>(S, 3, 811);
  const Matrix<T> v = support::random_matrix<T>(S, 4, 812),
                  d_out = support::random_matrix<T>(L, 4, 813);
  Matrix<T> b(L, S);
  for (Index i = 0; i < L; ++i) {
    for (Index j = 0; j < S; ++j) b(i, j) = j <= i ? T(0) : -std::numeric_limits<T>::infinity();
  }
  const auto causal =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::causal);
  const auto biased =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::bias(b));
  EXPECT_TRUE(support::is_near(biased.dq, causal.dq, 0));
  EXPECT_TRUE(support::is_near(biased.dk, causal.dk, 0));
  EXPECT_TRUE(support::is_near(biased.dv, causal.dv, 0));
  EXPECT_EQ(causal.dbias.size(), 0);
  EXPECT_EQ(biased.dbias.rows(), L);
  EXPECT_EQ(biased.dbias.cols(), S);
}

// softmax is shift invariant, so each row of dS (= dbias) sums to 0.
TYPED_TEST(ScaledDotProductBackward, BiasGradientRowsSumToZero) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(4, 3, 820),
                  k = support::random_matrix<T>(5, 3, 821);
  const Matrix<T> v = support::random_matrix<T>(5, 2, 822),
                  d_out = support::random_matrix<T>(4, 2, 823);
  const auto g = attention::scaled_dot_product_attention_backward(
      q, k, v, d_out, attention::bias(support::random_matrix<T>(4, 5, 824)));
  const auto sums = support::row_sums(g.dbias);
  for (Index i = 0; i < sums.size(); ++i)
    EXPECT_NEAR(double(sums(i)), 0.0, 8 * double(support::tolerance<T>()));
}

// float and long double against double: the same formula in another precision.
TYPED_TEST(ScaledDotProductBackward, AgreesWithDouble) {
  using T = TypeParam;
  const Matrix<double> q = support::random_matrix<double>(9, 8, 830);
  const Matrix<double> k = support::random_matrix<double>(11, 8, 831);
  const Matrix<double> v = support::random_matrix<double>(11, 5, 832);
  const Matrix<double> d_out = support::random_matrix<double>(9, 5, 833);
  const auto expected =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::causal);
  const auto actual = attention::scaled_dot_product_attention_backward(
      Matrix<T>(q.cast<T>()), Matrix<T>(k.cast<T>()), Matrix<T>(v.cast<T>()),
      Matrix<T>(d_out.cast<T>()), attention::causal);
  const long double tol = std::is_same_v<T, float> ? 4e-6L : 1e-14L;
  EXPECT_TRUE(support::is_near(actual.dq, expected.dq, tol));
  EXPECT_TRUE(support::is_near(actual.dk, expected.dk, tol));
  EXPECT_TRUE(support::is_near(actual.dv, expected.dv, tol));
}

TYPED_TEST(ScaledDotProductBackward, OutputOverloadMatchesAndReusesStorage) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(4, 3, 840),
                  k = support::random_matrix<T>(5, 3, 841);
  const Matrix<T> v = support::random_matrix<T>(5, 2, 842),
                  d_out = support::random_matrix<T>(4, 2, 843);
  const Matrix<T> b = support::random_matrix<T>(4, 5, 844);
  const auto expected =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::bias(b));
  attention::AttentionGradients<T> grads;
  attention::scaled_dot_product_attention_backward(q, k, v, d_out, grads, attention::bias(b));
  const T* storage[] = {grads.dq.data(), grads.dk.data(), grads.dv.data(), grads.dbias.data()};
  attention::scaled_dot_product_attention_backward(q, k, v, d_out, grads, attention::bias(b));
  EXPECT_EQ(grads.dq.data(), storage[0]);
  EXPECT_EQ(grads.dk.data(), storage[1]);
  EXPECT_EQ(grads.dv.data(), storage[2]);
  EXPECT_EQ(grads.dbias.data(), storage[3]);
  EXPECT_TRUE(support::is_near(grads.dq, expected.dq, 0));
  EXPECT_TRUE(support::is_near(grads.dk, expected.dk, 0));
  EXPECT_TRUE(support::is_near(grads.dv, expected.dv, 0));
  EXPECT_TRUE(support::is_near(grads.dbias, expected.dbias, 0));
  // Reused with no bias mask: dbias is emptied, not left stale.
  attention::scaled_dot_product_attention_backward(q, k, v, d_out, grads);
  EXPECT_EQ(grads.dbias.size(), 0);
}

// The gradients of one call passed back as the inputs of the next, into the same grads (a loop
// that reuses its storage): the result is that of the inputs as they were, for the materialising
// overload and the one from the forward's saved output and lse (tiled for float and double).
TYPED_TEST(ScaledDotProductBackward, InputsThatAreTheGradientsThemselves) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(6, 4, 850),
                  k = support::random_matrix<T>(6, 4, 851);
  const Matrix<T> v = support::random_matrix<T>(6, 4, 852),
                  d_out = support::random_matrix<T>(6, 4, 853);
  attention::AttentionGradients<T> grads =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::causal);
  const Matrix<T> q2 = grads.dq, k2 = grads.dk, v2 = grads.dv;  // copies, for the expected values
  const auto expected =
      attention::scaled_dot_product_attention_backward(q2, k2, v2, d_out, attention::causal);
  attention::scaled_dot_product_attention_backward(grads.dq, grads.dk, grads.dv, d_out, grads,
                                                   attention::causal);
  EXPECT_TRUE(support::is_near(grads.dq, expected.dq, 0));
  EXPECT_TRUE(support::is_near(grads.dk, expected.dk, 0));
  EXPECT_TRUE(support::is_near(grads.dv, expected.dv, 0));

  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, attention::causal);
  attention::AttentionGradients<T> saved = attention::scaled_dot_product_attention_backward(
      q, k, v, forward.output, forward.lse, d_out, attention::causal);
  const Matrix<T> q3 = saved.dq, k3 = saved.dk, v3 = saved.dv;
  const auto forward3 = attention::scaled_dot_product_attention_lse(q3, k3, v3, attention::causal);
  const auto expected3 = attention::scaled_dot_product_attention_backward(
      q3, k3, v3, forward3.output, forward3.lse, d_out, attention::causal);
  attention::scaled_dot_product_attention_backward(saved.dq, saved.dk, saved.dv, forward3.output,
                                                   forward3.lse, d_out, saved, attention::causal);
  EXPECT_TRUE(support::is_near(saved.dq, expected3.dq, 0));
  EXPECT_TRUE(support::is_near(saved.dk, expected3.dk, 0));
  EXPECT_TRUE(support::is_near(saved.dv, expected3.dv, 0));
}

// Values near the type's largest: dP = dO V^T and rowsum(dP ∘ P) overflow although dS, their
// difference times P, and so dq, dk and dv are finite. q = 0 and equal values: dS = 0, so dq = dk
// = 0 up to rounding relative to |dO| |v|, and dv = P^T dO = 3/8 (L = 3, S = 8, dO = 1). Random
// signs against the same backward in long double, where nothing overflows, relative to |v|. Both
// the materialising overload and the one from the forward's output and lse (the tiled kernel for
// float and double).
TYPED_TEST(ScaledDotProductBackward, HugeValuesDoNotOverflow) {
  using T = TypeParam;
  if constexpr (!std::is_same_v<T, long double>) {
    const T huge = std::is_same_v<T, float> ? T(1e38) : T(1e308);
    const long double unit = static_cast<long double>(huge);
    const long double tol = std::is_same_v<T, float> ? 4e-6L : 1e-14L;
    const Matrix<T> q = Matrix<T>::Zero(3, 4), k = support::random_matrix<T>(8, 4, 860);
    const Matrix<T> v = Matrix<T>::Constant(8, 5, huge), d_out = Matrix<T>::Ones(3, 5);
    const auto forward = attention::scaled_dot_product_attention_lse(q, k, v);
    for (const auto& grads : {attention::scaled_dot_product_attention_backward(q, k, v, d_out),
                              attention::scaled_dot_product_attention_backward(
                                  q, k, v, forward.output, forward.lse, d_out)}) {
      ASSERT_TRUE(grads.dq.allFinite() && grads.dk.allFinite() && grads.dv.allFinite());
      EXPECT_TRUE(support::is_near(Matrix<T>(grads.dq / huge), Matrix<T>::Zero(3, 4), tol));
      EXPECT_TRUE(support::is_near(Matrix<T>(grads.dk / huge), Matrix<T>::Zero(8, 4), tol));
      EXPECT_TRUE(support::is_near(grads.dv, Matrix<T>::Constant(8, 5, T(0.375)), tol));
    }

    const Matrix<T> q2 = support::random_matrix<T>(9, 6, 861);
    const Matrix<T> k2 = support::random_matrix<T>(11, 6, 862);
    const Matrix<T> v_unit = support::random_matrix<T>(11, 5, 863);
    const Matrix<T> v2 = v_unit / v_unit.cwiseAbs().maxCoeff() * huge;
    const Matrix<T> d_out2 = support::random_matrix<T>(9, 5, 864);
    using Wide = Matrix<long double>;
    const auto expected = attention::scaled_dot_product_attention_backward(
        Wide(q2.template cast<long double>()), Wide(k2.template cast<long double>()),
        Wide(v2.template cast<long double>()), Wide(d_out2.template cast<long double>()),
        attention::causal);
    const auto forward2 =
        attention::scaled_dot_product_attention_lse(q2, k2, v2, attention::causal);
    for (const auto& grads :
         {attention::scaled_dot_product_attention_backward(q2, k2, v2, d_out2, attention::causal),
          attention::scaled_dot_product_attention_backward(
              q2, k2, v2, forward2.output, forward2.lse, d_out2, attention::causal)}) {
      ASSERT_TRUE(grads.dq.allFinite() && grads.dk.allFinite() && grads.dv.allFinite());
      EXPECT_TRUE(support::is_near(Wide(grads.dq.template cast<long double>() / unit),
                                   Wide(expected.dq / unit), 10 * tol));
      EXPECT_TRUE(support::is_near(Wide(grads.dk.template cast<long double>() / unit),
                                   Wide(expected.dk / unit), 10 * tol));
      EXPECT_TRUE(support::is_near(grads.dv, expected.dv, tol));
    }
  }
}

// Column-major matrices, blocks and expressions give the same gradients as row-major matrices.
TYPED_TEST(ScaledDotProductBackward, AnyInputLayout) {
  using T = TypeParam;
  using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const Matrix<T> big = support::random_matrix<T>(12, 10, 850);
  const Matrix<T> q = big.block(0, 0, 4, 3), k = big.block(4, 2, 6, 3), v = big.block(4, 6, 6, 2);
  const Matrix<T> d_out = support::random_matrix<T>(4, 2, 851);
  const auto expected =
      attention::scaled_dot_product_attention_backward(q, k, v, d_out, attention::causal);
  const auto from_blocks = attention::scaled_dot_product_attention_backward(
      big.block(0, 0, 4, 3), big.block(4, 2, 6, 3), big.block(4, 6, 6, 2), d_out,
      attention::causal);
  const auto from_col_major = attention::scaled_dot_product_attention_backward(
      ColMatrix(q), ColMatrix(k), ColMatrix(v), ColMatrix(d_out), attention::causal);
  const auto from_expressions = attention::scaled_dot_product_attention_backward(
      q * T(1), k.array().matrix(), v + Matrix<T>::Zero(6, 2), d_out, attention::causal);
  for (const auto* g : {&from_blocks, &from_col_major, &from_expressions}) {
    EXPECT_TRUE(support::is_near(g->dq, expected.dq, 0));
    EXPECT_TRUE(support::is_near(g->dk, expected.dk, 0));
    EXPECT_TRUE(support::is_near(g->dv, expected.dv, 0));
  }
}

// --- Shape checks: the forward's, plus d_out --------------------------------------------------

class ScaledDotProductBackwardShapes : public ::testing::Test {
 protected:
  Matrix<double> q = Matrix<double>::Ones(3, 4), k = Matrix<double>::Ones(5, 4);
  Matrix<double> v = Matrix<double>::Ones(5, 2), d_out = Matrix<double>::Ones(3, 2);
};

TEST_F(ScaledDotProductBackwardShapes, ValidShapesDoNotThrow) {
  EXPECT_NO_THROW((void)attention::scaled_dot_product_attention_backward(q, k, v, d_out));
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsOnEmptyQueries) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(Matrix<double>(0, 4), k, v,
                                                                      Matrix<double>(0, 2)),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsOnEmptyKeys) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(q, Matrix<double>(0, 4),
                                                                      Matrix<double>(0, 2), d_out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsOnZeroWidth) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   Matrix<double>(3, 0), Matrix<double>(5, 0), v, d_out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenKeyWidthDiffers) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(q, Matrix<double>::Ones(5, 3),
                                                                      v, d_out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenValueCountDiffers) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   q, k, Matrix<double>::Ones(4, 2), d_out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsOnZeroValueWidth) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(q, k, Matrix<double>(5, 0),
                                                                      Matrix<double>(3, 0)),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenDOutRowsDiffer) {
  EXPECT_THROW(
      (void)attention::scaled_dot_product_attention_backward(q, k, v, Matrix<double>::Ones(2, 2)),
      attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenDOutColsDiffer) {
  EXPECT_THROW(
      (void)attention::scaled_dot_product_attention_backward(q, k, v, Matrix<double>::Ones(3, 4)),
      attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenKeepMaskHasWrongShape) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   q, k, v, d_out, attention::keep(BoolMatrix::Constant(4, 5, true))),
               attention::ShapeError);
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   q, k, v, d_out, attention::keep(BoolMatrix::Constant(3, 4, true))),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsWhenBiasMaskHasWrongShape) {
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                   q, k, v, d_out, attention::bias(Matrix<double>::Zero(3, 6))),
               attention::ShapeError);
}

TEST_F(ScaledDotProductBackwardShapes, ThrowsOnNonFiniteScale) {
  attention::Options options;
  options.scale = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(q, k, v, d_out,
                                                                      attention::NoMask{}, options),
               std::invalid_argument);
}

TEST_F(ScaledDotProductBackwardShapes, ShapeErrorNamesFunctionArgumentsAndSizes) {
  try {
    (void)attention::scaled_dot_product_attention_backward(q, k, v, Matrix<double>::Ones(3, 7));
    FAIL() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::scaled_dot_product_attention_backward: d_out.cols() (= 7) must equal "
              "v.cols() (= 2)");
  }
}

}  // namespace
}  // namespace scaled_dot_product_backward_test
