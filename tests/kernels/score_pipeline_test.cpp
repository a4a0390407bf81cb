// SPDX-License-Identifier: MIT
//
// kernels/score_pipeline.hpp: the row loops (row_max, exp_weights, softcap_row), ScoreRules (scale
// q first, then scale, soft-cap, mask, in that order) and the online softmax step (update_row,
// finish_row, softmax_row_in_place), against scalar loops and long double. Lengths straddle every
// SIMD width (tails of 1 to 15 entries). Also compiled for the build machine
// (tests/CMakeLists.txt).

#include <gtest/gtest.h>

#include <attention/kernels/score_pipeline.hpp>
#include <attention/mask.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
using attention::TileVisibility;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
class ScorePipeline : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ScorePipeline, FastScalars, support::ScalarNames);

using support::inf;
using support::nan;

constexpr Index lengths[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};

/// n, hidden from the optimiser: with a length it can see, GCC 12 at -O3 warns about the vector
/// loops' paths that length never takes (-Warray-bounds, -Waggressive-loop-optimizations).
Index opaque(Index n) {
  volatile Index hidden = n;
  return hidden;
}

template <typename Scalar>
std::vector<Scalar> random_row(Index n, unsigned seed, double spread = 3.0) {
  const support::RowMatrix<Scalar> r =
      support::random_matrix<Scalar>(1, std::max<Index>(n, 1), seed);
  std::vector<Scalar> x(static_cast<std::size_t>(n));
  for (Index j = 0; j < n; ++j) x[static_cast<std::size_t>(j)] = r(0, j) * Scalar(spread);
  return x;
}

TYPED_TEST(ScorePipeline, RowMaxIsTheLargestEntryAndPropagatesNaN) {
  using Scalar = TypeParam;
  for (const Index length : lengths) {
    const Index n = opaque(length);
    std::vector<Scalar> x = random_row<Scalar>(n, 5 + static_cast<unsigned>(n));
    Scalar expected = -inf<Scalar>;
    for (const Scalar v : x) expected = std::max(expected, v);
    EXPECT_EQ(kernels::row_max(x.data(), n), expected) << "n = " << n;
    for (Index at = 0; at < n; at += 5) {  // a NaN anywhere, vector body or tail
      std::vector<Scalar> y = x;
      y[static_cast<std::size_t>(at)] = nan<Scalar>;
      EXPECT_TRUE(std::isnan(kernels::row_max(y.data(), n))) << "n = " << n << ", at " << at;
    }
  }
}

// p_j = exp(s_j - shift) against long double, exactly 0 where s_j = -inf (a vectorised exp would
// give a denormal there), in place or not; a shift of -inf (a row that sees no key) gives zeros.
TYPED_TEST(ScorePipeline, ExpWeightsAreExpOfTheShiftedScoresAndZeroWhereMasked) {
  using Scalar = TypeParam;
  for (const Index length : lengths) {
    const Index n = opaque(length);
    std::vector<Scalar> s = random_row<Scalar>(n, 20 + static_cast<unsigned>(n));
    for (Index j = 2; j < n; j += 3) s[static_cast<std::size_t>(j)] = -inf<Scalar>;
    const Scalar shift = Scalar(1.25);
    std::vector<Scalar> p(static_cast<std::size_t>(n), Scalar(7));
    const Scalar sum = kernels::exp_weights(s.data(), p.data(), n, shift);
    long double expected_sum = 0;
    for (Index j = 0; j < n; ++j) {
      const auto i = static_cast<std::size_t>(j);
      if (s[i] == -inf<Scalar>) {
        EXPECT_EQ(p[i], Scalar(0)) << "n = " << n << ", j = " << j;
        continue;
      }
      const long double e = std::exp(static_cast<long double>(s[i]) - shift);
      EXPECT_NEAR(p[i], e, 4 * std::numeric_limits<Scalar>::epsilon() * e) << "j = " << j;
      expected_sum += e;
    }
    EXPECT_NEAR(sum, expected_sum, 4 * n * std::numeric_limits<Scalar>::epsilon() * expected_sum);
    std::vector<Scalar> in_place = s;
    EXPECT_EQ(kernels::exp_weights(in_place.data(), in_place.data(), n, shift), sum);
    EXPECT_EQ(in_place, p);
    EXPECT_EQ(kernels::exp_weights(s.data(), p.data(), n, -inf<Scalar>), Scalar(0));
    for (const Scalar x : p) EXPECT_EQ(x, Scalar(0));
  }
}

// Weights far below the row's largest: exp(x) within 4 eps while it is a normal number; below the
// least normal number (x < ln(min()) = -87.3 for float, -708.4 for double) a weight is between 0
// and min() (the avx2 path flushes it to +0; Eigen's pexp on the baseline path clamps x to about
// -88.4 / -709.4, a little above the true value). Every x is placed in the vector body and in the
// scalar tail.
TYPED_TEST(ScorePipeline, ExpWeightsOfTinyWeightsAreExactOrBelowTheLeastNormal) {
  using Scalar = TypeParam;
  const Scalar ln_min = std::log(std::numeric_limits<Scalar>::min());
  const std::vector<Scalar> xs = {Scalar(0),
                                  Scalar(-1),
                                  Scalar(-50),
                                  ln_min + Scalar(1),
                                  ln_min + Scalar(0.01),
                                  ln_min - Scalar(0.01),
                                  ln_min - Scalar(5),
                                  Scalar(-745),
                                  -inf<Scalar>};
  const Index n = opaque(static_cast<Index>(xs.size()) * 3 + 1);  // a tail on every path
  std::vector<Scalar> s(static_cast<std::size_t>(n));
  for (Index j = 0; j < n; ++j) {
    s[static_cast<std::size_t>(j)] = xs[static_cast<std::size_t>(j) % xs.size()];
  }
  std::vector<Scalar> p(s.size());
  kernels::exp_weights(s.data(), p.data(), n, Scalar(0));
  for (Index j = 0; j < n; ++j) {
    const auto i = static_cast<std::size_t>(j);
    const long double e = std::exp(static_cast<long double>(s[i]));
    if (e >= std::numeric_limits<Scalar>::min()) {
      EXPECT_NEAR(p[i], e, 4 * std::numeric_limits<Scalar>::epsilon() * e) << "x = " << s[i];
    } else {
      EXPECT_GE(p[i], Scalar(0)) << "x = " << s[i];
      EXPECT_LE(p[i], std::numeric_limits<Scalar>::min()) << "x = " << s[i];
    }
  }
}

// cap * tanh(x / cap) and 1 - tanh^2 against long double; +-inf becomes +-cap, NaN stays NaN.
TYPED_TEST(ScorePipeline, SoftcapRowIsCapTimesTanhWithItsDerivative) {
  using Scalar = TypeParam;
  const Scalar cap = Scalar(5);
  for (const Index length : lengths) {
    const Index n = opaque(length);
    std::vector<Scalar> x = random_row<Scalar>(n, 40 + static_cast<unsigned>(n), 8.0);
    if (n > 3) {
      x[0] = inf<Scalar>;
      x[1] = -inf<Scalar>;
      x[2] = nan<Scalar>;
    }
    std::vector<Scalar> y = x, derivative(static_cast<std::size_t>(n));
    kernels::softcap_row(y.data(), n, cap, derivative.data());
    for (Index j = 0; j < n; ++j) {
      const auto i = static_cast<std::size_t>(j);
      if (std::isnan(x[i])) {
        EXPECT_TRUE(std::isnan(y[i]));
        continue;
      }
      const long double t = std::tanh(static_cast<long double>(x[i]) / cap);
      // float's vectorised tanh is within a few ulp (score_pipeline.hpp).
      EXPECT_NEAR(y[i], cap * t, 16 * cap * std::numeric_limits<Scalar>::epsilon()) << j;
      EXPECT_NEAR(derivative[i], 1 - t * t, 16 * std::numeric_limits<Scalar>::epsilon()) << j;
    }
    if (n > 3) {
      EXPECT_EQ(y[0], cap);
      EXPECT_EQ(y[1], -cap);
    }
  }
}

// Scale q first exactly when |scale| <= 1; the two factors multiply to the scale.
TYPED_TEST(ScorePipeline, ScoreRulesScaleQueriesWhenTheScaleIsAtMostOne) {
  using Scalar = TypeParam;
  for (const Scalar scale :
       {Scalar(0.125), Scalar(-1), Scalar(1), Scalar(0), Scalar(1.5), Scalar(-40)}) {
    const kernels::ScoreRules<Scalar> rules{scale};
    EXPECT_EQ(rules.scales_queries(), std::abs(scale) <= Scalar(1)) << scale;
    EXPECT_EQ(rules.query_factor() * rules.score_factor(), scale);
    EXPECT_EQ(rules.scales_queries() ? rules.score_factor() : rules.query_factor(), Scalar(1));
    EXPECT_FALSE(rules.capped());
    const std::vector<Scalar> q = random_row<Scalar>(19, 50);
    std::vector<Scalar> dst(19);
    rules.load_query(q.data(), 19, dst.data());
    for (std::size_t x = 0; x < 19; ++x) EXPECT_EQ(dst[x], rules.query_factor() * q[x]);
  }
  EXPECT_TRUE((kernels::ScoreRules<Scalar>{Scalar(1), Scalar(30)}.capped()));
}

// Raw tile t (2 x 5) with scale 2 (> 1: applied to the scores), cap 3 and a bias mask b:
// s = 3 tanh(2 t / 3) + b, and -inf where b is -inf whatever the cap.
TYPED_TEST(ScorePipeline, ApplyScalesThenCapsThenMasks) {
  using Scalar = TypeParam;
  const support::RowMatrix<Scalar> t = support::random_matrix<Scalar>(2, 5, 60);
  support::RowMatrix<Scalar> b = support::random_matrix<Scalar>(4, 9, 61);
  b(2, 5) = -inf<Scalar>;
  const kernels::ScoreRules<Scalar> rules{Scalar(2), Scalar(3)};
  const auto mask = attention::bias(b);
  support::RowMatrix<Scalar> s = t, derivative(2, 5);
  // The tile is rows [2, 4) and columns [4, 9) of a 4 x 9 score matrix.
  rules.apply(s.data(), 5, 2, 5, mask, 2, 4, TileVisibility::mixed, derivative.data());
  for (Index r = 0; r < 2; ++r) {
    for (Index c = 0; c < 5; ++c) {
      const long double u = std::tanh(2.0L * t(r, c) / 3.0L);
      if (b(2 + r, 4 + c) == -inf<Scalar>) {
        EXPECT_EQ(s(r, c), -inf<Scalar>);
      } else {
        EXPECT_NEAR(s(r, c), 3 * u + b(2 + r, 4 + c), 64 * std::numeric_limits<Scalar>::epsilon());
      }
      EXPECT_NEAR(derivative(r, c), 1 - u * u, 64 * std::numeric_limits<Scalar>::epsilon());
    }
  }
  // A visible tile is not masked: a causal tile below the diagonal keeps its scores (scale 1/2 is
  // on q, so the scores stay as they are).
  support::RowMatrix<Scalar> unchanged = t;
  const kernels::ScoreRules<Scalar> plain{Scalar(0.5)};
  EXPECT_FALSE(plain.changes(TileVisibility::visible));
  EXPECT_TRUE(plain.changes(TileVisibility::mixed));
  plain.apply(unchanged.data(), 5, 2, 5, attention::causal, 10, 0, TileVisibility::visible);
  EXPECT_EQ(unchanged, t);
}

// update_row over the tiles of a row, with an accumulator o += p v, then finish_row, equals the
// softmax of the whole row times v, and its lse (long double).
TYPED_TEST(ScorePipeline, UpdateRowTileByTileEqualsTheWholeSoftmax) {
  using Scalar = TypeParam;
  const Index n = 70, d_v = 5;
  const std::vector<Scalar> s = random_row<Scalar>(n, 70, 4.0);
  const support::RowMatrix<Scalar> v = support::random_matrix<Scalar>(n, d_v, 71);
  kernels::OnlineSoftmax<Scalar> state;
  std::vector<Scalar> o(d_v, Scalar(0)), tile;
  for (Index first = 0; first < n; first += 16) {
    const Index cols = std::min<Index>(16, n - first);
    tile.assign(s.begin() + first, s.begin() + first + cols);
    kernels::update_row(state, tile.data(), cols, o.data(), d_v);
    for (Index j = 0; j < cols; ++j) {
      for (Index x = 0; x < d_v; ++x) o[static_cast<std::size_t>(x)] += tile[j] * v(first + j, x);
    }
  }
  std::vector<Scalar> out(d_v);
  Scalar lse;
  kernels::finish_row(state, o.data(), d_v, out.data(), &lse);

  long double m = -inf<long double>, l = 0;
  for (const Scalar x : s) m = std::max<long double>(m, x);
  for (const Scalar x : s) l += std::exp(x - m);
  const long double tol = 32 * std::numeric_limits<Scalar>::epsilon();
  EXPECT_NEAR(lse, m + std::log(l), tol);
  for (Index x = 0; x < d_v; ++x) {
    long double expected = 0;
    for (Index j = 0; j < n; ++j) expected += std::exp(s[j] - m) / l * v(j, x);
    EXPECT_NEAR(out[static_cast<std::size_t>(x)], expected, tol) << "column " << x;
  }
}

// A row whose tiles are all masked: weights 0, never NaN; finish_row writes zeros and lse -inf.
TYPED_TEST(ScorePipeline, ARowThatSeesNoKeyFinishesAsZero) {
  using Scalar = TypeParam;
  kernels::OnlineSoftmax<Scalar> state;
  std::vector<Scalar> tile(9, -inf<Scalar>), o(3, Scalar(0));
  kernels::update_row(state, tile.data(), opaque(9), o.data(), opaque(3));
  for (const Scalar p : tile) EXPECT_EQ(p, Scalar(0));
  std::vector<Scalar> out(3, Scalar(5));
  Scalar lse = 0;
  kernels::finish_row(state, o.data(), opaque(3), out.data(), &lse);
  EXPECT_EQ(out, std::vector<Scalar>(3, Scalar(0)));
  EXPECT_EQ(lse, -inf<Scalar>);
}

TYPED_TEST(ScorePipeline, SoftmaxRowInPlace) {
  using Scalar = TypeParam;
  for (const Index length : lengths) {
    const Index n = opaque(length);
    std::vector<Scalar> x = random_row<Scalar>(n, 80 + static_cast<unsigned>(n));
    if (n > 2) x[1] = -inf<Scalar>;
    const std::vector<Scalar> s = x;
    const Scalar lse = kernels::softmax_row_in_place(x.data(), n);
    if (n == 0) {
      EXPECT_EQ(lse, -inf<Scalar>);
      continue;
    }
    // A named test, not `v == -inf<Scalar> ? ...` inline: cppcheck 2.10 cannot parse that.
    const auto is_masked = [](Scalar v) { return v == -inf<Scalar>; };
    long double m = -inf<long double>, l = 0;
    for (const Scalar v : s) m = std::max<long double>(m, v);
    for (const Scalar v : s) {
      if (!is_masked(v)) l += std::exp(v - m);
    }
    EXPECT_NEAR(lse, m + std::log(l), 16 * std::numeric_limits<Scalar>::epsilon());
    for (Index j = 0; j < n; ++j) {
      const long double expected = is_masked(s[j]) ? 0.0L : std::exp(s[j] - m) / l;
      EXPECT_NEAR(x[static_cast<std::size_t>(j)], expected,
                  8 * std::numeric_limits<Scalar>::epsilon());
    }
    if (n > 2) {
      EXPECT_EQ(x[1], Scalar(0));
    }
  }
  std::vector<Scalar> masked(20, -inf<Scalar>);
  EXPECT_EQ(kernels::softmax_row_in_place(masked.data(), opaque(20)), -inf<Scalar>);
  for (const Scalar p : masked) EXPECT_EQ(p, Scalar(0));
  std::vector<Scalar> with_nan(20, Scalar(1));
  with_nan[13] = nan<Scalar>;
  EXPECT_TRUE(std::isnan(kernels::softmax_row_in_place(with_nan.data(), opaque(20))));
  for (const Scalar p : with_nan) EXPECT_TRUE(std::isnan(p));
}

// long double, which Eigen does not vectorise, takes the scalar loops of the same functions.
TEST(ScorePipelineLongDouble, ScalarLoopsGiveTheSameRules) {
  std::vector<long double> x{0.5L, -std::numeric_limits<long double>::infinity(), 2.0L};
  const long double lse = kernels::softmax_row_in_place(x.data(), opaque(3));
  const long double l = std::exp(0.5L - 2.0L) + 1.0L;
  EXPECT_NEAR(lse, 2.0L + std::log(l), 1e-18L);
  EXPECT_EQ(x[1], 0.0L);
  EXPECT_NEAR(x[2], 1.0L / l, 1e-18L);
}

}  // namespace
