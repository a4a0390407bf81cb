// SPDX-License-Identifier: MIT
//
// kernels/online_softmax.hpp: the scalar rules of the online softmax and of the merge of partial
// results, against the formulas written out in long double, and the rules for NaN, +inf and -inf.

#include <gtest/gtest.h>

#include <attention/kernels/online_softmax.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
using attention::detail::max_propagate_nan;
using attention::detail::kernels::merge_parts;
using attention::detail::kernels::OnlineSoftmax;

template <typename Scalar>
class OnlineSoftmaxTest : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OnlineSoftmaxTest, FastScalars, support::ScalarNames);

using support::inf;
using support::nan;

TYPED_TEST(OnlineSoftmaxTest, MaxPropagatesNaNFromEitherSide) {
  using Scalar = TypeParam;
  EXPECT_TRUE(std::isnan(max_propagate_nan(nan<Scalar>, Scalar(1))));
  EXPECT_TRUE(std::isnan(max_propagate_nan(Scalar(1), nan<Scalar>)));
  EXPECT_TRUE(std::isnan(max_propagate_nan(-inf<Scalar>, nan<Scalar>)));
  EXPECT_EQ(max_propagate_nan(Scalar(-2), Scalar(3)), Scalar(3));
  EXPECT_EQ(max_propagate_nan(Scalar(3), Scalar(-2)), Scalar(3));
  EXPECT_EQ(max_propagate_nan(-inf<Scalar>, Scalar(-1e30)), Scalar(-1e30));
  EXPECT_EQ(max_propagate_nan(-inf<Scalar>, -inf<Scalar>), -inf<Scalar>);
}

TYPED_TEST(OnlineSoftmaxTest, AFreshRowSeesNoKey) {
  using Scalar = TypeParam;
  const OnlineSoftmax<Scalar> state;
  EXPECT_EQ(state.m, -inf<Scalar>);
  EXPECT_EQ(state.l, Scalar(0));
  EXPECT_TRUE(state.sees_no_key());
  EXPECT_EQ(state.lse(), -inf<Scalar>);
}

// Scores fed tile by tile, as the forward does: after each tile the state must equal the
// written-out m = max of every score so far and l = sum exp(s - m), and alpha = exp(m_old - m_new);
// at the end lse = log sum_j exp(s_j), all in long double.
TYPED_TEST(OnlineSoftmaxTest, TileByTileMatchesTheWrittenOutFormula) {
  using Scalar = TypeParam;
  const support::RowMatrix<Scalar> scores = support::random_matrix<Scalar>(1, 40, 3) * Scalar(4);
  const Index tiles[] = {5, 1, 12, 7, 15};  // 40 scores in uneven tiles
  OnlineSoftmax<Scalar> state;
  Index first = 0;
  for (const Index n : tiles) {
    Scalar tile_max = -inf<Scalar>;
    for (Index j = first; j < first + n; ++j) tile_max = std::max(tile_max, scores(0, j));
    const Scalar m_new = state.max_with(tile_max);
    Scalar tile_sum = 0;
    for (Index j = first; j < first + n; ++j) tile_sum += std::exp(scores(0, j) - m_new);
    const Scalar m_old = state.m;
    const Scalar alpha = state.absorb(m_new, tile_sum);
    first += n;

    long double m_expected = -inf<long double>, l_expected = 0;
    for (Index j = 0; j < first; ++j) m_expected = std::max<long double>(m_expected, scores(0, j));
    for (Index j = 0; j < first; ++j) l_expected += std::exp(scores(0, j) - m_expected);
    EXPECT_EQ(state.m, static_cast<Scalar>(m_expected));
    EXPECT_NEAR(state.l, l_expected, 8 * first * std::numeric_limits<Scalar>::epsilon());
    if (m_new == m_old) {
      EXPECT_EQ(alpha, Scalar(1));
    } else {
      EXPECT_NEAR(alpha, std::exp(static_cast<long double>(m_old) - m_expected),
                  4 * std::numeric_limits<Scalar>::epsilon());
    }
  }
  long double sum = 0;
  for (Index j = 0; j < 40; ++j) sum += std::exp(static_cast<long double>(scores(0, j)));
  EXPECT_NEAR(state.lse(), std::log(sum), 16 * std::numeric_limits<Scalar>::epsilon());
}

// A tile whose every score is masked: m_new stays -inf, the state does not change and alpha is 1
// (not exp(-inf - -inf) = NaN). A later visible tile then starts the row as a fresh one would.
TYPED_TEST(OnlineSoftmaxTest, MaskedTilesLeaveTheStateAlone) {
  using Scalar = TypeParam;
  OnlineSoftmax<Scalar> state;
  const Scalar m_new = state.max_with(-inf<Scalar>);
  EXPECT_EQ(m_new, -inf<Scalar>);
  EXPECT_EQ(state.absorb(m_new, Scalar(0)), Scalar(1));
  EXPECT_TRUE(state.sees_no_key());
  EXPECT_EQ(state.lse(), -inf<Scalar>);
  // Then a visible tile of two scores 1 and 0: m = 1, l = 1 + e^-1, alpha = exp(-inf - 1) = 0.
  const Scalar sum = Scalar(1) + std::exp(Scalar(-1));
  EXPECT_EQ(state.absorb(state.max_with(Scalar(1)), sum), Scalar(0));
  EXPECT_EQ(state.m, Scalar(1));
  EXPECT_EQ(state.l, sum);
  EXPECT_FALSE(state.sees_no_key());
  EXPECT_EQ(state.lse(), Scalar(1) + std::log(sum));
  // A masked tile after it changes nothing either.
  EXPECT_EQ(state.absorb(state.max_with(-inf<Scalar>), Scalar(0)), Scalar(1));
  EXPECT_EQ(state.l, sum);
}

// A NaN score (a NaN key the row sees) makes m, l and lse NaN, whichever tile it comes in, and
// the row never reads as "sees no key".
TYPED_TEST(OnlineSoftmaxTest, ANaNScoreMakesTheRowNaN) {
  using Scalar = TypeParam;
  for (const bool nan_first : {true, false}) {
    OnlineSoftmax<Scalar> state;
    if (!nan_first) state.absorb(state.max_with(Scalar(2)), Scalar(1));
    const Scalar m_new = state.max_with(nan<Scalar>);
    EXPECT_TRUE(std::isnan(m_new));
    const Scalar alpha = state.absorb(m_new, nan<Scalar>);  // exp(s - NaN) is NaN
    EXPECT_TRUE(std::isnan(alpha));
    EXPECT_TRUE(std::isnan(state.l));
    EXPECT_FALSE(state.sees_no_key());
    EXPECT_TRUE(std::isnan(state.lse()));
    // A later finite tile keeps it NaN.
    state.absorb(state.max_with(Scalar(5)), Scalar(1));
    EXPECT_TRUE(std::isnan(state.lse()));
  }
}

// +inf scores: the max is +inf and exp(inf - inf) is NaN, so the row is NaN (IEEE arithmetic, as
// the materialising softmax of a row holding +inf).
TYPED_TEST(OnlineSoftmaxTest, PlusInfinityMakesTheRowNaN) {
  using Scalar = TypeParam;
  OnlineSoftmax<Scalar> state;
  state.absorb(state.max_with(Scalar(0)), Scalar(1));
  const Scalar m_new = state.max_with(inf<Scalar>);
  EXPECT_EQ(m_new, inf<Scalar>);
  state.absorb(m_new, std::exp(inf<Scalar> - m_new));
  EXPECT_TRUE(std::isnan(state.lse()));
}

TYPED_TEST(OnlineSoftmaxTest, StateOfANormalisedPart) {
  using Scalar = TypeParam;
  const auto a = OnlineSoftmax<Scalar>::from_lse(Scalar(0.75));
  EXPECT_EQ(a.m, Scalar(0.75));
  EXPECT_EQ(a.l, Scalar(1));
  EXPECT_EQ(a.lse(), Scalar(0.75));
  const auto none = OnlineSoftmax<Scalar>::from_lse(-inf<Scalar>);
  EXPECT_TRUE(none.sees_no_key());
  EXPECT_EQ(none.lse(), -inf<Scalar>);
  EXPECT_TRUE(std::isnan(OnlineSoftmax<Scalar>::from_lse(nan<Scalar>).lse()));
}

/// A part for merge_parts: its state and its 3-wide normalised output.
template <typename Scalar>
struct Part {
  OnlineSoftmax<Scalar> state;
  Scalar out[3];
};

/// merge_parts over `parts`; returns the merged state and writes out = sum coefficient_c out_c.
template <typename Scalar>
OnlineSoftmax<Scalar> merge(const std::vector<Part<Scalar>>& parts, Scalar (&out)[3],
                            std::vector<Index>* added = nullptr) {
  for (Scalar& x : out) x = Scalar(0);
  return merge_parts<Scalar>(
      static_cast<Index>(parts.size()), [&](Index c) { return parts[c].state; },
      [&](Index c, Scalar coefficient) {
        if (added != nullptr) added->push_back(c);
        for (int x = 0; x < 3; ++x) out[x] += coefficient * parts[c].out[x];
      });
}

// Three parts of one row of scores, each summarised as a forward tile loop would (m_c, l_c and
// out_c = sum_j exp(s_j - m_c) v_j / l_c): the merge equals softmax over all the scores, in long
// double.
TYPED_TEST(OnlineSoftmaxTest, MergedPartsEqualTheWholeRow) {
  using Scalar = TypeParam;
  const support::RowMatrix<Scalar> s = support::random_matrix<Scalar>(1, 30, 11) * Scalar(3);
  const auto v = support::random_matrix<Scalar>(30, 3, 12);
  const Index bounds[] = {0, 4, 21, 30};
  std::vector<Part<Scalar>> parts(3);
  for (int c = 0; c < 3; ++c) {
    Scalar m = -inf<Scalar>;
    for (Index j = bounds[c]; j < bounds[c + 1]; ++j) m = std::max(m, s(0, j));
    Part<Scalar>& p = parts[static_cast<std::size_t>(c)];
    p.state.m = m;
    p.state.l = 0;
    for (Scalar& x : p.out) x = 0;
    for (Index j = bounds[c]; j < bounds[c + 1]; ++j) {
      const Scalar e = std::exp(s(0, j) - m);
      p.state.l += e;
      for (int x = 0; x < 3; ++x) p.out[x] += e * v(j, x);
    }
    for (Scalar& x : p.out) x /= p.state.l;
  }
  Scalar out[3];
  const OnlineSoftmax<Scalar> merged = merge(parts, out);

  long double m = -inf<long double>, l = 0, o[3] = {0, 0, 0};
  for (Index j = 0; j < 30; ++j) m = std::max<long double>(m, s(0, j));
  for (Index j = 0; j < 30; ++j) {
    const long double e = std::exp(static_cast<long double>(s(0, j)) - m);
    l += e;
    for (int x = 0; x < 3; ++x) o[x] += e * static_cast<long double>(v(j, x));
  }
  const long double tol = 64 * std::numeric_limits<Scalar>::epsilon();
  EXPECT_NEAR(merged.lse(), m + std::log(l), tol);
  for (int x = 0; x < 3; ++x) EXPECT_NEAR(out[x], o[x] / l, tol) << "column " << x;
}

// Two normalised parts (PartialAttention's output and lse): the coefficients are
// exp(lse_c - M) / (exp(lse_a - M) + exp(lse_b - M)), which sum to 1, in either order.
TYPED_TEST(OnlineSoftmaxTest, NormalisedPartsMergeByTheirLogSumExps) {
  using Scalar = TypeParam;
  const Scalar lse_a = Scalar(1.5), lse_b = Scalar(-0.25);
  const std::vector<Part<Scalar>> ab{{OnlineSoftmax<Scalar>::from_lse(lse_a), {1, 2, 3}},
                                     {OnlineSoftmax<Scalar>::from_lse(lse_b), {-4, 5, 0}}};
  const std::vector<Part<Scalar>> ba{ab[1], ab[0]};
  Scalar out_ab[3], out_ba[3];
  const auto merged_ab = merge(ab, out_ab);
  const auto merged_ba = merge(ba, out_ba);
  const long double wa = 1, wb = std::exp(static_cast<long double>(lse_b) - lse_a);
  const long double tol = 8 * std::numeric_limits<Scalar>::epsilon();
  EXPECT_NEAR(merged_ab.lse(), lse_a + std::log(wa + wb), tol);
  EXPECT_EQ(merged_ab.lse(), merged_ba.lse());
  for (int x = 0; x < 3; ++x) {
    const long double expected = (wa * ab[0].out[x] + wb * ab[1].out[x]) / (wa + wb);
    EXPECT_NEAR(out_ab[x], expected, tol);
    EXPECT_EQ(out_ab[x], out_ba[x]);
  }
}

// A part that sees no key (m = -inf, l = 0), or whose weight underflows to 0, takes no part: a NaN
// or inf in its output does not reach the row. When no part sees a key, nothing is added and
// the merged row sees no key.
TYPED_TEST(OnlineSoftmaxTest, PartsOfZeroWeightTakeNoPart) {
  using Scalar = TypeParam;
  const Scalar far_below = -std::numeric_limits<Scalar>::max() / 2;  // exp(far_below - 0) = 0
  const std::vector<Part<Scalar>> parts{{{-inf<Scalar>, 0}, {nan<Scalar>, inf<Scalar>, 1}},
                                        {{Scalar(0), 2}, {2, 4, 6}},
                                        {{far_below, 1}, {nan<Scalar>, 1, 1}}};
  Scalar out[3];
  std::vector<Index> added;
  const auto merged = merge(parts, out, &added);
  EXPECT_EQ(added, std::vector<Index>{1});
  EXPECT_EQ(merged.m, Scalar(0));
  EXPECT_EQ(merged.l, Scalar(2));
  EXPECT_EQ(out[0], Scalar(2));  // coefficient exp(0) 2 / 2 = 1 on out = (2, 4, 6)
  EXPECT_EQ(out[1], Scalar(4));
  EXPECT_EQ(out[2], Scalar(6));

  const std::vector<Part<Scalar>> none{{{-inf<Scalar>, 0}, {nan<Scalar>, 0, 0}},
                                       {{-inf<Scalar>, 0}, {1, 1, 1}}};
  added.clear();
  const auto empty = merge(none, out, &added);
  EXPECT_TRUE(added.empty());
  EXPECT_TRUE(empty.sees_no_key());
  EXPECT_EQ(empty.lse(), -inf<Scalar>);
  EXPECT_EQ(out[0], Scalar(0));
}

// A part whose lse is NaN (a NaN key it sees) makes the merged row and lse NaN in either order,
// even when the other part sees no key: no branch may drop it.
TYPED_TEST(OnlineSoftmaxTest, ANaNPartReachesTheRowInEitherOrder) {
  using Scalar = TypeParam;
  const Part<Scalar> nan_part{OnlineSoftmax<Scalar>::from_lse(nan<Scalar>), {1, 1, 1}};
  for (const Part<Scalar>& other :
       {Part<Scalar>{OnlineSoftmax<Scalar>::from_lse(-inf<Scalar>), {0, 0, 0}},
        Part<Scalar>{OnlineSoftmax<Scalar>::from_lse(Scalar(3)), {1, 2, 3}}}) {
    for (const bool nan_first : {true, false}) {
      const std::vector<Part<Scalar>> parts = nan_first
                                                  ? std::vector<Part<Scalar>>{nan_part, other}
                                                  : std::vector<Part<Scalar>>{other, nan_part};
      Scalar out[3];
      const auto merged = merge(parts, out);
      EXPECT_TRUE(std::isnan(merged.lse())) << "NaN part first: " << nan_first;
      for (const Scalar x : out) EXPECT_TRUE(std::isnan(x)) << "NaN part first: " << nan_first;
    }
  }
}

}  // namespace
