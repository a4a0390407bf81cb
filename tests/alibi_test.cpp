// SPDX-License-Identifier: MIT
// Tests for attention/alibi.hpp: the ALiBi slopes (Press et al., 2022) written out from the formula
// for powers of two and for the interpolated head counts, and the shape check; the bias mask
// attention::alibi(m): its values from the written-out formula -m * ((i + S - L) - j), worked
// examples, every attention path (tiled kernel, split-key decode path, materialising path, weights,
// log-sum-exp) against the long-double reference alone and combined with causal, windowed, keep and
// bias masks and with soft-capping, and both backward passes against finite differences.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/alibi.hpp>
#include <attention/attention.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/shapes.hpp"
#include "support/threads.hpp"

namespace alibi_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::Options;

// n = 8: m_k = 2^(-8k/8) = 2^-k, exactly representable.
TEST(AlibiSlopes, EightHeadsArePowersOfOneHalf) {
  const std::vector<double> expected{0.5,     0.25,     0.125,     0.0625,
                                     0.03125, 0.015625, 0.0078125, 0.00390625};
  EXPECT_EQ(attention::alibi_slopes(8), expected);
}

// n = 1: 2^-8; n = 2: 2^-4, 2^-8; n = 16: 2^(-k/2), every other one an exact power of two.
TEST(AlibiSlopes, OtherPowersOfTwo) {
  EXPECT_EQ(attention::alibi_slopes(1), std::vector<double>{0.00390625});
  EXPECT_EQ(attention::alibi_slopes(2), (std::vector<double>{0.0625, 0.00390625}));
  const std::vector<double> sixteen = attention::alibi_slopes(16);
  ASSERT_EQ(sixteen.size(), 16U);
  EXPECT_DOUBLE_EQ(sixteen[0], 0.70710678118654752);  // 2^-0.5
  EXPECT_EQ(sixteen[1], 0.5);
  EXPECT_DOUBLE_EQ(sixteen[2], 0.35355339059327376);  // 2^-1.5
  EXPECT_EQ(sixteen[15], 0.00390625);
  for (std::size_t k = 1; k < 16; ++k) EXPECT_DOUBLE_EQ(sixteen[k] / sixteen[k - 1], sixteen[0]);
}

// n = 12: c = 8 gives 2^-1 ... 2^-8, then the 16-head slopes between them, 2^-(2k-1)/2:
// 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (the reference code's get_slopes(16)[0::2][:4]).
TEST(AlibiSlopes, TwelveHeadsInterpolate) {
  const std::vector<double> expected{0.5,
                                     0.25,
                                     0.125,
                                     0.0625,
                                     0.03125,
                                     0.015625,
                                     0.0078125,
                                     0.00390625,
                                     0.70710678118654752,
                                     0.35355339059327376,
                                     0.17677669529663688,
                                     0.088388347648318441};
  const std::vector<double> slopes = attention::alibi_slopes(12);
  ASSERT_EQ(slopes.size(), expected.size());
  for (std::size_t h = 0; h < expected.size(); ++h) EXPECT_DOUBLE_EQ(slopes[h], expected[h]) << h;
}

// n = 3: c = 2 gives 2^-4, 2^-8, then 2^-2 (from the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8);
// n = 5: c = 4 gives 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1.
TEST(AlibiSlopes, SmallNonPowersOfTwo) {
  EXPECT_EQ(attention::alibi_slopes(3), (std::vector<double>{0.0625, 0.00390625, 0.25}));
  EXPECT_EQ(attention::alibi_slopes(5),
            (std::vector<double>{0.25, 0.0625, 0.015625, 0.00390625, 0.5}));
}

// BLOOM-176B has 112 heads: c = 64, slopes 2^(-k/8) for k = 1 .. 64, then 2^(-(2k-1)/16) for
// k = 1 .. 48. Every slope lies in (0, 1) and all are distinct.
TEST(AlibiSlopes, OneHundredTwelveHeads) {
  const std::vector<double> slopes = attention::alibi_slopes(112);
  ASSERT_EQ(slopes.size(), 112U);
  for (Index k = 1; k <= 64; ++k) {
    EXPECT_DOUBLE_EQ(slopes[static_cast<std::size_t>(k - 1)],
                     std::exp2(-static_cast<double>(k) / 8));
  }
  for (Index k = 1; k <= 48; ++k) {
    EXPECT_DOUBLE_EQ(slopes[static_cast<std::size_t>(63 + k)],
                     std::exp2(-static_cast<double>(2 * k - 1) / 16));
  }
  std::vector<double> sorted = slopes;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_TRUE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
}

TEST(AlibiSlopes, RejectsZeroHeads) {
  try {
    (void)attention::alibi_slopes(0);
    ADD_FAILURE() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_STREQ(e.what(), "attention::alibi_slopes: num_heads (= 0) must be at least 1");
  }
  EXPECT_THROW((void)attention::alibi_slopes(-3), attention::ShapeError);
}

// --- The bias mask, attention::alibi(m) ---------------------------------------------------------

static_assert(attention::is_mask_v<attention::AlibiMask>);
static_assert(
    attention::is_mask_v<decltype(attention::causal_lower_right & attention::alibi(1.0))>);

/// The mask's bias over a whole L x S matrix of zero scores, through the protocol (bind, apply).
Matrix<double> applied_bias(const attention::AlibiMask& mask, Index num_queries, Index num_keys) {
  Matrix<double> scores = Matrix<double>::Zero(num_queries, num_keys);
  mask.bind(num_queries, num_keys)
      .apply(scores.data(), scores.outerStride(), 0, num_queries, 0, num_keys);
  return scores;
}

// L = 2, S = 4, m = 1/2 (the diagram at the top of alibi.hpp): query i is at position i + 2, so
// bias(i, j) = -(i + 2 - j) / 2:  row 0: -1, -0.5, 0, +0.5   row 1: -1.5, -1, -0.5, 0.
TEST(AlibiMask, AddsTheWrittenOutBias) {
  Matrix<double> expected(2, 4);
  expected << -1, -0.5, 0, 0.5, -1.5, -1, -0.5, 0;
  EXPECT_TRUE(support::is_near(applied_bias(attention::alibi(0.5), 2, 4), expected, 0));
  // L = 4, S = 2: query i is at position i - 2; bias(i, j) = -(i - 2 - j) / 4.
  Matrix<double> tall(4, 2);
  tall << 0.5, 0.75, 0.25, 0.5, 0, 0.25, -0.25, 0;
  EXPECT_TRUE(support::is_near(applied_bias(attention::alibi(0.25), 4, 2), tall, 0));
  // A tile: rows [1, 3) and columns [3, 5) of L = 3, S = 6 (offset 3), slope 2: bias(i, j) =
  // -2 (i + 3 - j): (1, 3) -2, (1, 4) 0, (2, 3) -4, (2, 4) -2. The tile's other entries are
  // untouched, and a score that is -inf stays -inf.
  Matrix<double> scores = Matrix<double>::Zero(3, 6);
  scores(2, 3) = -std::numeric_limits<double>::infinity();
  attention::alibi(2.0).bind(3, 6).apply(scores.data() + 1 * scores.outerStride() + 3,
                                         scores.outerStride(), 1, 2, 3, 2);
  Matrix<double> tile = Matrix<double>::Zero(3, 6);
  tile(1, 3) = -2;
  tile(1, 4) = 0;
  tile(2, 3) = -std::numeric_limits<double>::infinity();
  tile(2, 4) = -2;
  EXPECT_TRUE(support::is_near(scores, tile, 0));
}

TEST(AlibiMask, TilesAreMixedUnlessTheSlopeIsZero) {
  const auto bound = attention::alibi(0.5).bind(64, 64);
  EXPECT_EQ(bound.visibility(0, 32, 32, 32), attention::TileVisibility::mixed);  // future keys
  EXPECT_EQ(bound.visibility(32, 32, 0, 32), attention::TileVisibility::mixed);
  EXPECT_EQ(attention::alibi(0.0).bind(64, 64).visibility(0, 64, 0, 64),
            attention::TileVisibility::visible);
}

// q = 0, so every score is 0 and the weights are the softmax of the biases alone (L = 2, S = 4,
// m = 1/2, biases as in AddsTheWrittenOutBias); v = I makes the output the weights themselves.
//   alibi alone, both rows (they differ by a constant, -0.5, which the softmax ignores):
//     softmax(-1, -0.5, 0, 0.5) = (0.101536324092, 0.167405097278, 0.276004344707, 0.455054233923)
//   causal_lower_right & alibi: row 0 sees keys 0..2: softmax(-1, -0.5, 0) = (0.186323723226,
//     0.307195885718, 0.506480391056, 0); row 1 sees every key: as above.
//   causal (top-left) & alibi: row 0 sees key 0: (1, 0, 0, 0); row 1 keys 0, 1:
//     softmax(-1.5, -1) = (0.377540668798, 0.622459331202, 0, 0).
TEST(AlibiMask, WorkedExampleTwoQueriesFourKeys) {
  const Matrix<double> q = Matrix<double>::Zero(2, 3);
  const Matrix<double> k = support::random_matrix<double>(4, 3, 5);
  const Matrix<double> v = Matrix<double>::Identity(4, 4);
  Matrix<double> alone(2, 4), lower_right(2, 4), top_left(2, 4);
  alone << 0.101536324092, 0.167405097278, 0.276004344707, 0.455054233923,  //
      0.101536324092, 0.167405097278, 0.276004344707, 0.455054233923;
  lower_right << 0.186323723226, 0.307195885718, 0.506480391056, 0,  //
      0.101536324092, 0.167405097278, 0.276004344707, 0.455054233923;
  top_left << 1, 0, 0, 0, 0.377540668798, 0.622459331202, 0, 0;
  const auto check = [&](const auto& mask, const Matrix<double>& expected, const char* name) {
    EXPECT_TRUE(support::is_near(attention::attention_weights(q, k, mask), expected, 1e-12))
        << name;
    EXPECT_TRUE(
        support::is_near(attention::scaled_dot_product_attention(q, k, v, mask), expected, 1e-12))
        << name;
  };
  check(attention::alibi(0.5), alone, "alibi");
  check(attention::causal_lower_right & attention::alibi(0.5), lower_right, "lower right");
  check(attention::alibi(0.5) & attention::causal_lower_right, lower_right, "lower right, swapped");
  check(attention::causal & attention::alibi(0.5), top_left, "top left");
}

template <typename T>
class AlibiAttention : public ::testing::Test {};
using AllScalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(AlibiAttention, AllScalars, support::ScalarNames);

using support::Shape;
using support::tile_straddling_shapes;

/// Bound on |library - reference| for an output entry with ALiBi: tolerance<T>() without a bias,
/// plus the bias's own rounding. A bias b is rounded once to T and added to the score with one more
/// rounding: each score is off by at most 2 eps |b| <= delta = 2 eps max|b|, and a shift of every
/// score by at most delta changes each weight by a factor within exp(+-2 delta), so each output
/// entry by at most 2 delta * 2 max|v| (to first order).
template <typename T>
long double biased_tolerance(long double max_abs_bias, long double max_abs_v) {
  const long double eps = std::numeric_limits<T>::epsilon();
  return support::tolerance<T>() + 4.0L * (2.0L * eps * max_abs_bias) * max_abs_v;
}

TYPED_TEST(AlibiAttention, MatchesTheReferenceAloneAndCombined) {
  using T = TypeParam;
  std::uint32_t seed = 300;
  for (const Shape& sh : tile_straddling_shapes) {
    const Matrix<T> q = support::random_matrix<T>(sh.queries, sh.d_k, seed++);
    const Matrix<T> k = support::random_matrix<T>(sh.keys, sh.d_k, seed++);
    const Matrix<T> v = support::random_matrix<T>(sh.keys, sh.d_v, seed++);
    const auto keep = support::random_keep(sh.queries, sh.keys, seed++, 0.7);
    const Matrix<T> bias = support::random_matrix<T>(sh.queries, sh.keys, seed++);
    const ref::Matrix qr = ref::to_real(q), kr = ref::to_real(k), vr = ref::to_real(v);
    const long double max_v = vr.cwiseAbs().maxCoeff();
    // 2^-1, 2^-0.5 (not a power of two), 2^-8 (BLOOM's smallest), and a slope 0 (no bias).
    for (const double slope : {0.5, 0.70710678118654752, 0.00390625, 0.0}) {
      const ref::Mask ref_alibi = ref::Mask::alibi(static_cast<ref::Real>(slope));
      // Future keys get up to +slope * (L - 1) and past ones down to -slope * (S - 1) (L > S:
      // -slope * (L - 1) + ... ): |bias| < slope * (L + S).
      const long double tol =
          biased_tolerance<T>(slope * static_cast<double>(sh.queries + sh.keys), max_v);
      const auto check = [&](const auto& mask, const ref::Mask& ref_mask, const char* name) {
        SCOPED_TRACE(::testing::Message()
                     << name << ", slope " << slope << ", " << sh.queries << " x " << sh.keys);
        const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
        EXPECT_TRUE(support::is_near(forward.output, ref::attention(qr, kr, vr, ref_mask), tol));
        EXPECT_TRUE(support::is_near(attention::attention_weights(q, k, mask),
                                     ref::weights(qr, kr, ref_mask), tol));
        // The log-sum-exp sees the bias itself, not only its differences along a row, so it checks
        // the alignment (the per-row constant) too. It is of order max|bias|: relative tolerance.
        EXPECT_TRUE(support::is_near(forward.lse,
                                     ref::row_logsumexp(ref::masked_scores(qr, kr, ref_mask)),
                                     tol * (1 + slope * static_cast<double>(sh.keys))));
      };
      check(attention::alibi(slope), ref_alibi, "alibi");
      check(attention::causal_lower_right & attention::alibi(slope),
            ref::Mask::both({ref::Mask::causal_lower_right(), ref_alibi}), "causal_lower_right");
      check(attention::window(6, 0) & attention::alibi(slope),
            ref::Mask::both({ref::Mask::window(6, 0), ref_alibi}), "window(6, 0)");
      check(attention::causal & attention::alibi(slope),
            ref::Mask::both({ref::Mask::causal(), ref_alibi}), "causal (top-left)");
      check(attention::keep(keep) & attention::alibi(slope),
            ref::Mask::both({ref::Mask::keep(keep), ref_alibi}), "keep");
      check(attention::alibi(slope) & attention::bias(bias),
            ref::Mask::both({ref_alibi, ref::Mask::bias(bias)}), "bias");
    }
  }
}

// Soft-capping comes before the mask (Options::softcap), so the ALiBi bias is added to the capped
// score and is not capped itself: scores can then leave (-cap, cap).
TYPED_TEST(AlibiAttention, IsAddedAfterTheSoftcap) {
  using T = TypeParam;
  std::uint32_t seed = 400;
  for (const Shape& sh : tile_straddling_shapes) {
    const Matrix<T> q = support::random_matrix<T>(sh.queries, sh.d_k, seed++);
    const Matrix<T> k = support::random_matrix<T>(sh.keys, sh.d_k, seed++);
    const Matrix<T> v = support::random_matrix<T>(sh.keys, sh.d_v, seed++);
    const ref::Matrix qr = ref::to_real(q), kr = ref::to_real(k), vr = ref::to_real(v);
    const double slope = 0.25, cap = 2.0;
    const Options options{3.0, cap};  // scores of order 10 against a cap of 2
    const ref::Mask ref_mask =
        ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::alibi(slope)});
    // The cap's error (5 eps cap per score, softcap_test.cpp) on top of the bias's.
    const long double eps = std::numeric_limits<T>::epsilon();
    const long double tol = biased_tolerance<T>(slope * static_cast<double>(sh.queries + sh.keys),
                                                vr.cwiseAbs().maxCoeff()) +
                            4.0L * (5.0L * eps * cap) * vr.cwiseAbs().maxCoeff();
    SCOPED_TRACE(::testing::Message() << sh.queries << " x " << sh.keys);
    EXPECT_TRUE(support::is_near(
        attention::scaled_dot_product_attention(
            q, k, v, attention::causal_lower_right & attention::alibi(slope), options),
        ref::attention(qr, kr, vr, ref_mask, 3.0L, static_cast<ref::Real>(cap)), tol));
    EXPECT_TRUE(support::is_near(
        attention::attention_weights(q, k, attention::causal_lower_right & attention::alibi(slope),
                                     options),
        ref::weights(qr, kr, ref_mask, 3.0L, static_cast<ref::Real>(cap)), tol));
  }
}

// The paper's code adds m * j to row i instead of -m (i + S - L - j): a per-row constant apart, so
// the outputs agree (to rounding) although the biases differ.
TYPED_TEST(AlibiAttention, EqualsThePapersBiasUpToARowConstant) {
  using T = TypeParam;
  const Index n_q = 7, n_k = 19;
  const double slope = 0.125;
  const Matrix<T> q = support::random_matrix<T>(n_q, 8, 1),
                  k = support::random_matrix<T>(n_k, 8, 2);
  const Matrix<T> v = support::random_matrix<T>(n_k, 5, 3);
  Matrix<T> papers(n_q, n_k);
  for (Index i = 0; i < n_q; ++i) {
    for (Index j = 0; j < n_k; ++j) papers(i, j) = static_cast<T>(slope * static_cast<double>(j));
  }
  EXPECT_TRUE(
      support::is_near(attention::scaled_dot_product_attention(
                           q, k, v, attention::causal_lower_right & attention::alibi(slope)),
                       attention::scaled_dot_product_attention(
                           q, k, v, attention::causal_lower_right & attention::bias(papers)),
                       2 * biased_tolerance<T>(slope * (n_q + n_k), 3)));
}

// Lower-right alignment: the last L queries over all S keys get the last L rows of the S x S call,
// as an incremental decoder needs (query positions and biases do not depend on L).
TYPED_TEST(AlibiAttention, LastQueriesAloneGiveTheLastRowsOfTheWholeCall) {
  using T = TypeParam;
  const Index n = 45, d = 8;
  const Matrix<T> q = support::random_matrix<T>(n, d, 7), k = support::random_matrix<T>(n, d, 8);
  const Matrix<T> v = support::random_matrix<T>(n, d, 9);
  const auto mask = attention::causal_lower_right & attention::alibi(0.5);
  const Matrix<T> whole = attention::scaled_dot_product_attention(q, k, v, mask);
  for (const Index last : {1, 3, 17}) {
    EXPECT_TRUE(
        support::is_near(attention::scaled_dot_product_attention(q.bottomRows(last), k, v, mask),
                         whole.bottomRows(last), 2 * biased_tolerance<T>(0.5 * 2 * n, 3)))
        << last;
  }
}

TEST(AlibiMask, RejectsANonFiniteSlope) {
  try {
    (void)attention::alibi(std::numeric_limits<double>::quiet_NaN());
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "attention::alibi: slope (= nan) must be finite");
  }
  EXPECT_THROW((void)attention::alibi(std::numeric_limits<double>::infinity()),
               std::invalid_argument);
  EXPECT_NO_THROW((void)attention::alibi(-0.5));  // a negative slope is a valid (if odd) bias
}

// --- Backward ------------------------------------------------------------------------------------

using support::SingleThread;

/// The gradients of loss = sum(d_out o attention(q, k, v, mask)) from the materialising backward,
/// or from the tiled one given the forward's output and log-sum-exp, checked against central
/// finite differences of the loss with respect to q, k and v (and the bias of a bias(b) part).
/// ALiBi itself is a constant: no dbias unless the mask has a bias(b) part.
template <typename T>
void check_backward(Index n_q, Index n_k, Index d_k, Index d_v, std::uint32_t seed, bool tiled,
                    const Options& options) {
  [[maybe_unused]] const SingleThread single;
  Matrix<T> q = support::random_matrix<T>(n_q, d_k, seed);
  Matrix<T> k = support::random_matrix<T>(n_k, d_k, seed + 1);
  Matrix<T> v = support::random_matrix<T>(n_k, d_v, seed + 2);
  Matrix<T> bias = support::random_matrix<T>(n_q, n_k, seed + 3);
  const Matrix<T> d_out = support::random_matrix<T>(n_q, d_v, seed + 4);
  const auto grads_for = [&](const auto& mask) {
    if (!tiled) {
      return attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask, options);
    }
    const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask, options);
    return attention::scaled_dot_product_attention_backward(q, k, v, forward.output, forward.lse,
                                                            d_out, mask, options);
  };
  const long double bound = support::gradient_bound<T>();
  const auto check = [&](const auto& make_mask, bool has_bias, const char* name) {
    SCOPED_TRACE(name);
    const auto grads = grads_for(make_mask());
    const auto loss = [&] {
      return support::weighted_sum(
          d_out, attention::scaled_dot_product_attention(q, k, v, make_mask(), options));
    };
    EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, bound)) << "dq";
    EXPECT_TRUE(support::gradient_matches(loss, k, grads.dk, bound)) << "dk";
    EXPECT_TRUE(support::gradient_matches(loss, v, grads.dv, bound)) << "dv";
    if (has_bias) {
      EXPECT_TRUE(support::gradient_matches(loss, bias, grads.dbias, bound)) << "dbias";
    } else {
      EXPECT_EQ(grads.dbias.size(), 0) << "ALiBi is a constant: no dbias";
    }
  };
  check([] { return attention::alibi(0.75); }, false, "alibi");
  check([] { return attention::causal_lower_right & attention::alibi(0.375); }, false,
        "causal_lower_right & alibi");
  check([] { return attention::window(3, 0) & attention::alibi(0.5); }, false,
        "window(3, 0) & alibi");
  check(
      [&] { return attention::causal_lower_right & attention::alibi(0.5) & attention::bias(bias); },
      true, "causal_lower_right & alibi & bias");
}

TEST(AlibiBackward, MaterialisingMatchesFiniteDifferences) {
  check_backward<double>(6, 9, 5, 4, 20, false, {});
  check_backward<double>(9, 4, 3, 3, 25, false, {});  // L > S: the first queries see no key
  check_backward<double>(5, 8, 4, 3, 26, false, Options{2.5, 3.0});  // with a soft-cap
}

TEST(AlibiBackward, MaterialisingMatchesFiniteDifferencesInLongDouble) {
  check_backward<long double>(4, 5, 3, 2, 21, false, {});
  check_backward<long double>(3, 6, 3, 2, 27, false, Options{2.5, 3.0});
}

// Sizes beyond one tile (64 queries, 32 / 64 keys) so that the tiled backward meets mixed and
// hidden tiles.
TEST(AlibiBackward, TiledMatchesFiniteDifferences) {
  check_backward<double>(7, 10, 4, 3, 22, true, {});
  check_backward<double>(67, 70, 2, 2, 23, true, {});
  check_backward<double>(5, 8, 4, 3, 28, true, Options{2.5, 3.0});
}

}  // namespace
}  // namespace alibi_test
