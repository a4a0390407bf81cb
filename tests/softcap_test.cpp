// SPDX-License-Identifier: MIT
// Tests for Options::softcap (options.hpp), logit soft-capping as in Gemma 2: each scaled score s
// becomes softcap * tanh(s / softcap) before the mask. The forward (tiled kernel for float and
// double, materialising path for long double and attention_weights) against the long-double
// reference with the cap written out; properties (scores bounded by the cap, masked weights
// exactly 0, log-sum-exp and merge consistent); the backward passes (materialising and tiled)
// against central finite differences; and the validation of the value.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/shapes.hpp"
#include "support/threads.hpp"

namespace softcap_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::Options;

template <typename T>
class Softcap : public ::testing::Test {};
using AllScalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(Softcap, AllScalars, support::ScalarNames);

template <typename T>
class SoftcapFast : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SoftcapFast, FastScalars, support::ScalarNames);

/// Bound on |library - reference| for an output entry: tolerance<T>() for the uncapped attention,
/// plus the cap's own error. tanh is computed within 3 ulp (float, Eigen's ptanh; measured 2.5) or
/// 1 ulp (std::tanh), and s / c and c * t add one rounding each, so a capped score is off by at
/// most 5 eps * c; a shift of every score by at most delta changes each weight by a factor within
/// exp(+-2 delta), so each output entry by at most 2 delta * 2 max|v| (to first order).
template <typename T>
long double capped_tolerance(double cap, long double max_abs_v) {
  const long double eps = std::numeric_limits<T>::epsilon();
  return support::tolerance<T>() + 4.0L * (5.0L * eps * cap) * max_abs_v;
}

using support::Shape;
using support::tile_straddling_shapes;

TYPED_TEST(Softcap, MatchesTheReferenceWithEveryMaskKind) {
  using T = TypeParam;
  std::uint32_t seed = 100;
  for (const Shape& sh : tile_straddling_shapes) {
    const Matrix<T> q = support::random_matrix<T>(sh.queries, sh.d_k, seed++);
    const Matrix<T> k = support::random_matrix<T>(sh.keys, sh.d_k, seed++);
    const Matrix<T> v = support::random_matrix<T>(sh.keys, sh.d_v, seed++);
    const auto keep = support::random_keep(sh.queries, sh.keys, seed++, 0.7);
    Matrix<T> bias = support::random_matrix<T>(sh.queries, sh.keys, seed++);
    bias(0, 0) = -std::numeric_limits<T>::infinity();
    // A scale of 3 makes scores of order 10, so a cap of 4 changes them a lot.
    for (const double cap : {4.0, 50.0}) {
      const Options options{3.0, cap};
      const long double tol = capped_tolerance<T>(cap, ref::to_real(v).cwiseAbs().maxCoeff());
      const ref::Matrix qr = ref::to_real(q), kr = ref::to_real(k), vr = ref::to_real(v);
      const auto check = [&](const auto& mask, const ref::Mask& ref_mask, const char* name) {
        EXPECT_TRUE(support::is_near(
            attention::scaled_dot_product_attention(q, k, v, mask, options),
            ref::attention(qr, kr, vr, ref_mask, 3.0L, static_cast<ref::Real>(cap)), tol))
            << name << ", cap " << cap << ", " << sh.queries << " x " << sh.keys;
        EXPECT_TRUE(support::is_near(
            attention::attention_weights(q, k, mask, options),
            ref::weights(qr, kr, ref_mask, 3.0L, static_cast<ref::Real>(cap)), tol))
            << name << ", cap " << cap << ", " << sh.queries << " x " << sh.keys;
      };
      check(attention::NoMask{}, ref::Mask::none(), "no mask");
      check(attention::causal, ref::Mask::causal(), "causal");
      check(attention::keep(keep), ref::Mask::keep(keep), "keep");
      check(attention::bias(bias), ref::Mask::bias(bias), "bias");
    }
  }
}

// The cap matters: the same inputs without it give other outputs (so the test above can fail).
TYPED_TEST(Softcap, ChangesTheResultWhenScoresExceedTheCap) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(6, 8, 1), k = support::random_matrix<T>(7, 8, 2);
  const Matrix<T> v = support::random_matrix<T>(7, 4, 3);
  const Options capped{3.0, 2.0}, uncapped{3.0, std::nullopt};
  EXPECT_FALSE(support::is_near(attention::scaled_dot_product_attention(q, k, v, {}, capped),
                                attention::scaled_dot_product_attention(q, k, v, {}, uncapped),
                                1e-2));
}

// Every capped score lies in (-c, c), so no weight can exceed another by more than exp(2c), however
// large the logits: here one key's score is about 1e4 before capping.
TYPED_TEST(Softcap, BoundsTheRatioOfWeights) {
  using T = TypeParam;
  Matrix<T> q(1, 2), k(3, 2);
  q << 100, 0;
  k << 100, 0, 0, 1, -1, 0;
  const double cap = 1.0;
  const Matrix<T> w = attention::attention_weights(q, k, attention::NoMask{}, Options{1.0, cap});
  // Scores: c tanh(1e4) = 1 (to rounding), c tanh(0) = 0, c tanh(-100) = -1.
  const long double e = std::exp(1.0L), total = e + 1 + 1 / e;
  const ref::Matrix expected{{e / total, 1 / total, 1 / e / total}};
  EXPECT_TRUE(support::is_near(w, expected, 4 * support::tolerance<T>()));
  EXPECT_LE(static_cast<double>(w(0, 0) / w(0, 2)), std::exp(2 * cap) * (1 + 1e-5));
}

TYPED_TEST(Softcap, MaskedWeightsStayExactlyZeroAndEmptyRowsGiveZero) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(5, 4, 4), k = support::random_matrix<T>(6, 4, 5);
  const Matrix<T> v = support::random_matrix<T>(6, 3, 6);
  support::BoolMatrix keep = support::random_keep(5, 6, 7, 0.5);
  keep.row(2).setConstant(false);
  const Options options{2.0, 1.5};
  const Matrix<T> w = attention::attention_weights(q, k, attention::keep(keep), options);
  for (Index i = 0; i < 5; ++i) {
    for (Index j = 0; j < 6; ++j) {
      if (!keep(i, j)) {
        EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
      }
    }
  }
  const auto partial =
      attention::scaled_dot_product_attention_lse(q, k, v, attention::keep(keep), options);
  EXPECT_TRUE(partial.output.row(2).isZero(0));
  EXPECT_EQ(partial.lse(2), -std::numeric_limits<T>::infinity());
}

// lse is the log-sum-exp of the capped, masked scores, and partial results over disjoint key sets
// still merge into the whole.
TYPED_TEST(Softcap, LogSumExpAndMergeUseTheCappedScores) {
  using T = TypeParam;
  const Index n_q = 40, n_k = 75;
  const Matrix<T> q = support::random_matrix<T>(n_q, 16, 8),
                  k = support::random_matrix<T>(n_k, 16, 9);
  const Matrix<T> v = support::random_matrix<T>(n_k, 8, 10);
  const Options options{2.0, 3.0};
  const auto whole =
      attention::scaled_dot_product_attention_lse(q, k, v, attention::NoMask{}, options);
  const ref::Matrix expected_lse = ref::row_logsumexp(
      ref::masked_scores(ref::to_real(q), ref::to_real(k), ref::Mask::none(), 2.0L, 3.0L));
  const long double tol = capped_tolerance<T>(3.0, ref::to_real(v).cwiseAbs().maxCoeff());
  EXPECT_TRUE(support::is_near(whole.lse, expected_lse, tol));
  const Index split = 33;
  const auto first = attention::scaled_dot_product_attention_lse(
      q, k.topRows(split), v.topRows(split), attention::NoMask{}, options);
  const auto second = attention::scaled_dot_product_attention_lse(
      q, k.bottomRows(n_k - split), v.bottomRows(n_k - split), attention::NoMask{}, options);
  const auto merged = attention::merge(first, second);
  EXPECT_TRUE(support::is_near(merged.output, whole.output, 2 * tol));
  EXPECT_TRUE(support::is_near(merged.lse, whole.lse, 2 * tol));
}

// --- Backward ----------------------------------------------------------------------------------

template <typename T>
struct Problem {
  Matrix<T> q, k, v, d_out, bias;
};

template <typename T>
Problem<T> random_problem(Index n_q, Index n_k, Index d_k, Index d_v, std::uint32_t seed) {
  return {support::random_matrix<T>(n_q, d_k, seed), support::random_matrix<T>(n_k, d_k, seed + 1),
          support::random_matrix<T>(n_k, d_v, seed + 2),
          support::random_matrix<T>(n_q, d_v, seed + 3),
          support::random_matrix<T>(n_q, n_k, seed + 4)};
}

/// Checks grads (the backward's result for loss = sum(d_out o attention(q, k, v, mask))) against
/// finite differences of that loss, with respect to q, k, v and (for a bias mask) the bias.
template <typename T, typename MakeMask>
void expect_gradients_match(Problem<T>& pb, const MakeMask& make_mask,
                            const attention::AttentionGradients<T>& grads, const Options& options,
                            bool has_bias) {
  const auto loss = [&] {
    return support::weighted_sum(
        pb.d_out, attention::scaled_dot_product_attention(pb.q, pb.k, pb.v, make_mask(), options));
  };
  const long double bound = support::gradient_bound<T>();
  EXPECT_TRUE(support::gradient_matches(loss, pb.q, grads.dq, bound)) << "dq";
  EXPECT_TRUE(support::gradient_matches(loss, pb.k, grads.dk, bound)) << "dk";
  EXPECT_TRUE(support::gradient_matches(loss, pb.v, grads.dv, bound)) << "dv";
  if (has_bias) {
    EXPECT_TRUE(support::gradient_matches(loss, pb.bias, grads.dbias, bound)) << "dbias";
  }
}

using support::SingleThread;

/// check_bias: also finite differences for the bias (L x S entries: the slow part at large sizes).
template <typename T>
void check_backward(Index n_q, Index n_k, Index d_k, Index d_v, std::uint32_t seed, bool tiled,
                    bool check_bias = true) {
  [[maybe_unused]] const SingleThread single;
  Problem<T> pb = random_problem<T>(n_q, n_k, d_k, d_v, seed);
  pb.bias(0, n_k - 1) = -std::numeric_limits<T>::infinity();
  const Options options{2.5, 3.0};  // scores of order 5-10 against a cap of 3: tanh' far from 1
  const auto grads_for = [&](const auto& mask) {
    if (!tiled)
      return attention::scaled_dot_product_attention_backward(pb.q, pb.k, pb.v, pb.d_out, mask,
                                                              options);
    const auto forward =
        attention::scaled_dot_product_attention_lse(pb.q, pb.k, pb.v, mask, options);
    return attention::scaled_dot_product_attention_backward(pb.q, pb.k, pb.v, forward.output,
                                                            forward.lse, pb.d_out, mask, options);
  };
  {
    SCOPED_TRACE("no mask");
    expect_gradients_match(
        pb, [] { return attention::NoMask{}; }, grads_for(attention::NoMask{}), options, false);
  }
  {
    SCOPED_TRACE("causal");
    expect_gradients_match(
        pb, [] { return attention::causal; }, grads_for(attention::causal), options, false);
  }
  {
    SCOPED_TRACE("bias");
    const auto grads = grads_for(attention::bias(pb.bias));
    expect_gradients_match(
        pb, [&] { return attention::bias(pb.bias); }, grads, options, check_bias);
  }
}

TEST(SoftcapBackward, MaterialisingMatchesFiniteDifferences) {
  check_backward<double>(6, 9, 5, 4, 20, false);
}

TEST(SoftcapBackward, MaterialisingMatchesFiniteDifferencesInLongDouble) {
  check_backward<long double>(4, 5, 3, 2, 21, false);
}

// Sizes past one query tile (64) and one key span (4 x 32 keys in double) exercise the tiled
// kernel's hidden, mixed and visible tiles and its padding.
TEST(SoftcapBackward, TiledMatchesFiniteDifferences) {
  check_backward<double>(7, 10, 4, 3, 22, true);
  check_backward<double>(67, 131, 3, 2, 23, true, false);
}

// float: the tiled backward against the double materialising one (finite differences in float
// would measure float's rounding, not the formula). Bound: relative 1e-4 of the gradient's size,
// twice flash_backward_test's worst float residue plus the cap's 5 eps * c per score.
TEST(SoftcapBackward, TiledFloatMatchesDouble) {
  Problem<double> pd = random_problem<double>(70, 90, 16, 8, 24);
  const Options options{2.5, 3.0};
  const Matrix<float> q = pd.q.cast<float>(), k = pd.k.cast<float>(), v = pd.v.cast<float>();
  const Matrix<float> d_out = pd.d_out.cast<float>();
  const auto expected = attention::scaled_dot_product_attention_backward(
      pd.q, pd.k, pd.v, pd.d_out, attention::causal, options);
  const auto forward =
      attention::scaled_dot_product_attention_lse(q, k, v, attention::causal, options);
  const auto grads = attention::scaled_dot_product_attention_backward(
      q, k, v, forward.output, forward.lse, d_out, attention::causal, options);
  const auto close = [](const auto& actual, const Matrix<double>& want) {
    const long double size = std::max(1.0L, static_cast<long double>(want.cwiseAbs().maxCoeff()));
    return support::is_near(actual, want, 1e-4L * size);
  };
  EXPECT_TRUE(close(grads.dq, expected.dq));
  EXPECT_TRUE(close(grads.dk, expected.dk));
  EXPECT_TRUE(close(grads.dv, expected.dv));
}

// --- Validation --------------------------------------------------------------------------------

TYPED_TEST(SoftcapFast, RejectsNonPositiveOrNonFiniteCaps) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(2, 3, 1), k = support::random_matrix<T>(2, 3, 2);
  const Matrix<T> v = support::random_matrix<T>(2, 3, 3),
                  d_out = support::random_matrix<T>(2, 3, 4);
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v);
  const double bad[] = {0.0, -1.0, std::numeric_limits<double>::infinity(),
                        std::numeric_limits<double>::quiet_NaN(),
                        std::is_same_v<T, float> ? 1e39 : 1e-320};
  for (const double cap : bad) {
    const Options options{std::nullopt, cap};
    EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v, {}, options),
                 std::invalid_argument)
        << cap;
    EXPECT_THROW((void)attention::attention_weights(q, k, {}, options), std::invalid_argument);
    EXPECT_THROW((void)attention::scaled_dot_product_attention_lse(q, k, v, {}, options),
                 std::invalid_argument);
    EXPECT_THROW(
        (void)attention::scaled_dot_product_attention_backward(q, k, v, d_out, {}, options),
        std::invalid_argument);
    EXPECT_THROW((void)attention::scaled_dot_product_attention_backward(
                     q, k, v, forward.output, forward.lse, d_out, {}, options),
                 std::invalid_argument);
  }
  try {
    (void)attention::scaled_dot_product_attention(q, k, v, {}, Options{std::nullopt, -2.0});
    ADD_FAILURE() << "no exception";
  } catch (const attention::ShapeError&) {
    ADD_FAILURE() << "a bad softcap is a value error, not a shape error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "attention::scaled_dot_product_attention: options.softcap (= -2) must "
                 "be positive and finite in the scalar type");
  }
}

}  // namespace
}  // namespace softcap_test
