// SPDX-License-Identifier: MIT
// Tests for the serving masks of attention/mask.hpp (issue 4): lower-right causal, sliding windows,
// the mask protocol's bind(L, S). Each mask is checked three ways:
//   - its tile classification against a brute-force one (apply() on a tile of zeros: hidden iff
//     every entry became -inf, visible iff none did and nothing was added), on every tile of a
//     grid, since that is what lets the kernels skip tiles;
//   - the tiled kernel (float, double) and the materialising path (long double) against the
//     long-double loop reference (tests/support/reference.hpp), which writes each mask out as a
//     plain condition on (i, j), at sizes that give hidden, visible and mixed tiles, L != S both
//     ways, sizes that are not tile multiples, and L = 1 with a long S (decoding);
//   - both backward passes: central finite differences (double, long double), and the tiled
//     backward against the materialising one, with gradients of hidden entries exactly 0.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using support::message_of;

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

static_assert(attention::is_mask_v<attention::CausalLowerRightMask>);
static_assert(attention::is_mask_v<attention::WindowMask>);

template <typename Scalar>
class ServingMask : public ::testing::Test {};
using AllScalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(ServingMask, AllScalars, support::ScalarNames);

/// Error bound for outputs of order 1 at these sizes (S up to ~300, d up to 40): the tiled
/// kernel's worst observed errors are ~1e-6 (float) and ~1e-15 (double); a wrong mask boundary
/// moves an output by a weight of order 1 / S >= 1e-3.
template <typename Scalar>
long double tolerance() {
  if constexpr (std::is_same_v<Scalar, float>) return 4e-6L;
  if constexpr (std::is_same_v<Scalar, double>) return 1e-14L;
  return 1e-17L;
}

/// The brute-force classification of a tile: apply() on zeros.
template <typename Bound>
TileVisibility brute_force_visibility(const Bound& bound, Index row0, Index rows, Index col0,
                                      Index cols) {
  Matrix<double> tile = Matrix<double>::Zero(rows, cols);
  bound.apply(tile.data(), tile.outerStride(), row0, rows, col0, cols);
  const Index hidden = (tile.array() == -std::numeric_limits<double>::infinity()).count();
  if (hidden == tile.size()) return TileVisibility::hidden;
  if ((tile.array() == 0.0).all()) return TileVisibility::visible;
  return TileVisibility::mixed;
}

/// Every tile of an L x S grid of tile_rows x tile_cols tiles (the last ones cut short) is
/// classified exactly: hidden and visible must be exact; the tests' masks are also never
/// conservative, so mixed must be exact too. Returns how many tiles of each kind there were.
template <typename Mask>
std::array<int, 3> expect_exact_classification(const Mask& mask, Index num_queries, Index num_keys,
                                               Index tile_rows, Index tile_cols) {
  const auto& bound = attention::detail::bind_mask(mask, num_queries, num_keys);
  std::array<int, 3> counts{};
  for (Index row0 = 0; row0 < num_queries; row0 += tile_rows) {
    for (Index col0 = 0; col0 < num_keys; col0 += tile_cols) {
      const Index rows = std::min(tile_rows, num_queries - row0);
      const Index cols = std::min(tile_cols, num_keys - col0);
      const TileVisibility got = bound.visibility(row0, rows, col0, cols);
      EXPECT_EQ(got, brute_force_visibility(bound, row0, rows, col0, cols))
          << "L=" << num_queries << " S=" << num_keys << " tile (" << row0 << ", " << col0 << ") "
          << rows << " x " << cols;
      ++counts[static_cast<std::size_t>(got)];
    }
  }
  return counts;
}

/// A weight matrix's pattern as text, one row per line: x visible, . weight exactly 0.
template <typename Derived>
std::string pattern(const Eigen::MatrixBase<Derived>& w) {
  std::string text;
  for (Index i = 0; i < w.rows(); ++i) {
    for (Index j = 0; j < w.cols(); ++j) text += w(i, j) == 0 ? '.' : 'x';
    text += '\n';
  }
  return text;
}

template <typename Scalar, typename Mask>
std::string pattern_of(const Mask& mask, Index num_queries, Index num_keys) {
  const Matrix<Scalar> q = support::random_matrix<Scalar>(num_queries, 3, 1);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(num_keys, 3, 2);
  return pattern(attention::attention_weights(q, k, mask));
}

// --- The diagrams of mask.hpp and README.md -------------------------------------------------

TEST(CausalLowerRight, DiagramTwoQueriesFiveKeys) {
  EXPECT_EQ(pattern_of<double>(attention::causal, 2, 5), "x....\nxx...\n");
  EXPECT_EQ(pattern_of<double>(attention::causal_lower_right, 2, 5), "xxxx.\nxxxxx\n");
}

TEST(CausalLowerRight, DiagramFiveQueriesTwoKeys) {
  EXPECT_EQ(pattern_of<double>(attention::causal, 5, 2), "x.\nxx\nxx\nxx\nxx\n");
  EXPECT_EQ(pattern_of<double>(attention::causal_lower_right, 5, 2), "..\n..\n..\nx.\nxx\n");
}

TEST(Window, DiagramCausalSlidingWindow) {
  EXPECT_EQ(pattern_of<double>(attention::window(2, 0), 5, 5),
            "x....\nxx...\nxxx..\n.xxx.\n..xxx\n");
  // Lower-right aligned: with L = 2 of S = 6, query 1 is at position 5.
  EXPECT_EQ(pattern_of<double>(attention::window(2, 0), 2, 6), "..xxx.\n...xxx\n");
  EXPECT_EQ(pattern_of<double>(attention::window(1, 1), 4, 4), "xx..\nxxx.\n.xxx\n..xx\n");
}

TEST(Window, UnboundedSides) {
  EXPECT_EQ(pattern_of<double>(attention::window(attention::unbounded, 0), 3, 5),
            pattern_of<double>(attention::causal_lower_right, 3, 5));
  EXPECT_EQ(pattern_of<double>(attention::window(attention::unbounded, attention::unbounded), 3, 5),
            "xxxxx\nxxxxx\nxxxxx\n");
  EXPECT_EQ(pattern_of<double>(attention::window(0, attention::unbounded), 3, 5),
            "..xxx\n...xx\n....x\n");
}

TEST(Window, NegativeSizesAreRejected) {
  EXPECT_THROW((void)attention::window(-1, 0), std::invalid_argument);
  EXPECT_THROW((void)attention::window(0, -3), std::invalid_argument);
  EXPECT_NO_THROW((void)attention::window(0, 0));
  try {
    (void)attention::window(-1, 4);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::window: left (= -1) and right (= 4) must be >= 0 (attention::unbounded "
              "for no limit)");
  }
}

// --- Tile classification ----------------------------------------------------------------------

TEST(CausalLowerRight, ClassifiesEveryTileExactly) {
  for (const auto& [num_queries, num_keys] :
       {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 129}, {5, 2}, {2, 5}}) {
    for (const Index tile : {1, 3, 16, 64}) {
      expect_exact_classification(attention::causal_lower_right, num_queries, num_keys, tile, tile);
    }
  }
  // With 16 x 16 tiles on 70 x 200, all three kinds occur.
  const auto counts = expect_exact_classification(attention::causal_lower_right, 70, 200, 16, 16);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

TEST(Window, ClassifiesEveryTileExactly) {
  const attention::WindowMask windows[] = {
      attention::window(0, 0),
      attention::window(5, 0),
      attention::window(40, 3),
      attention::window(attention::unbounded, 0),
      attention::window(0, attention::unbounded),
      attention::window(attention::unbounded, attention::unbounded)};
  for (const auto& mask : windows) {
    for (const auto& [num_queries, num_keys] :
         {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 129}}) {
      for (const Index tile : {1, 7, 32}) {
        expect_exact_classification(mask, num_queries, num_keys, tile, tile + 9);
      }
    }
  }
  const auto counts = expect_exact_classification(attention::window(40, 3), 200, 200, 32, 32);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

// --- Forward against the reference -----------------------------------------------------------

// Sizes around the kernel's tiles (32 or 64 queries, 16 to 64 keys per tile): L = 1 with a long
// S (decoding), L < S and L > S with whole tiles hidden, not multiples of any tile. Up to 16
// queries against 512 keys or more take the split-key decode path (chunks of 256 keys).
const std::pair<Index, Index> forward_sizes[] = {{1, 1},    {1, 300},  {3, 257}, {70, 200},
                                                 {200, 70}, {129, 97}, {65, 65}, {1, 700},
                                                 {7, 1030}, {16, 513}};

template <typename Scalar, typename Mask>
void expect_matches_reference(const Mask& mask, const ref::Mask& expected_mask, unsigned seed) {
  for (const auto& [num_queries, num_keys] : forward_sizes) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(num_queries, 24, seed);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(num_keys, 24, seed + 1);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(num_keys, 40, seed + 2);
    const auto result = attention::scaled_dot_product_attention_lse(q, k, v, mask);
    const ref::Matrix rq = ref::to_real(q), rk = ref::to_real(k), rv = ref::to_real(v);
    EXPECT_TRUE(support::is_near(result.output, ref::attention(rq, rk, rv, expected_mask),
                                 tolerance<Scalar>()))
        << "L=" << num_queries << " S=" << num_keys;
    // A row that sees no key: output exactly 0 and log-sum-exp -inf.
    const ref::Matrix scores = ref::masked_scores(rq, rk, expected_mask);
    for (Index i = 0; i < num_queries; ++i) {
      bool any_visible = false;
      for (Index j = 0; j < num_keys; ++j)
        any_visible = any_visible || scores(i, j) != ref::minus_inf;
      if (!any_visible) {
        EXPECT_TRUE((result.output.row(i).array() == Scalar(0)).all()) << "row " << i;
        EXPECT_EQ(result.lse(i), -std::numeric_limits<Scalar>::infinity()) << "row " << i;
      }
    }
  }
}

TYPED_TEST(ServingMask, CausalLowerRightMatchesReference) {
  expect_matches_reference<TypeParam>(attention::causal_lower_right,
                                      ref::Mask::causal_lower_right(), 10);
}

TYPED_TEST(ServingMask, WindowMatchesReference) {
  const std::optional<Index> none;
  const std::pair<std::optional<Index>, std::optional<Index>> sides[] = {
      {0, 0}, {4, 0}, {50, 0}, {7, 9}, {none, 0}, {0, none}, {3, none}, {none, none}};
  unsigned seed = 20;
  for (const auto& [left, right] : sides) {
    SCOPED_TRACE(::testing::Message()
                 << "window(" << (left ? std::to_string(*left) : "unbounded") << ", "
                 << (right ? std::to_string(*right) : "unbounded") << ")");
    const auto mask = attention::window(left.value_or(attention::unbounded),
                                        right.value_or(attention::unbounded));
    expect_matches_reference<TypeParam>(mask, ref::Mask::window(left, right), seed += 3);
  }
}

// Sliding windows narrower than a tile, over a sequence many tiles long: most tiles are hidden
// and every row still sees its own window (the kernel must not skip a tile it needs).
TYPED_TEST(ServingMask, NarrowWindowOverLongSequence) {
  using Scalar = TypeParam;
  const Index n = 333;
  const Matrix<Scalar> q = support::random_matrix<Scalar>(n, 8, 40);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(n, 8, 41);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(n, 8, 42);
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(q, k, v, attention::window(3, 0));
  EXPECT_TRUE(support::is_near(
      out,
      ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v), ref::Mask::window(3, 0)),
      tolerance<Scalar>()));
}

// --- Backward -----------------------------------------------------------------------------------

template <typename T>
class ServingMaskGradient : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(ServingMaskGradient, CheckScalars, support::ScalarNames);

template <typename T, typename Mask>
void expect_gradients_match(Index num_queries, Index num_keys, unsigned seed, const Mask& mask) {
  SCOPED_TRACE(::testing::Message() << "L = " << num_queries << ", S = " << num_keys);
  Matrix<T> q = support::random_matrix<T>(num_queries, 3, seed);
  Matrix<T> k = support::random_matrix<T>(num_keys, 3, seed + 1);
  Matrix<T> v = support::random_matrix<T>(num_keys, 2, seed + 2);
  const Matrix<T> d_out = support::random_matrix<T>(num_queries, 2, seed + 3);
  const auto grads = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  const auto loss = [&] {
    return support::weighted_sum(d_out, attention::scaled_dot_product_attention(q, k, v, mask));
  };
  constexpr long double bound = support::gradient_bound<T>();
  EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, bound)) << "dq";
  EXPECT_TRUE(support::gradient_matches(loss, k, grads.dk, bound)) << "dk";
  EXPECT_TRUE(support::gradient_matches(loss, v, grads.dv, bound)) << "dv";
  EXPECT_EQ(grads.dbias.size(), 0);
}

TYPED_TEST(ServingMaskGradient, CausalLowerRight) {
  // L < S (every key seen), L > S (the first L - S queries see nothing: dq = 0), L == S.
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}, {5, 5}, {1, 6}}) {
    expect_gradients_match<TypeParam>(l, s, 100, attention::causal_lower_right);
  }
}

TYPED_TEST(ServingMaskGradient, Window) {
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}, {6, 6}}) {
    expect_gradients_match<TypeParam>(l, s, 200, attention::window(2, 0));
    expect_gradients_match<TypeParam>(l, s, 210, attention::window(1, 2));
  }
}

/// The tiled backward (from the forward's output and log-sum-exp) against the materialising one,
/// and hidden entries' gradients exactly 0: queries that see no key get dq = 0, keys that no query
/// sees get dk = dv = 0.
template <typename T, typename Mask>
void expect_tiled_backward_matches(const Mask& mask, const ref::Mask& expected_mask,
                                   Index num_queries, Index num_keys, unsigned seed) {
  SCOPED_TRACE(::testing::Message() << "L = " << num_queries << ", S = " << num_keys);
  const Matrix<T> q = support::random_matrix<T>(num_queries, 12, seed);
  const Matrix<T> k = support::random_matrix<T>(num_keys, 12, seed + 1);
  const Matrix<T> v = support::random_matrix<T>(num_keys, 9, seed + 2);
  const Matrix<T> d_out = support::random_matrix<T>(num_queries, 9, seed + 3);
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  const auto tiled = attention::scaled_dot_product_attention_backward(q, k, v, forward.output,
                                                                      forward.lse, d_out, mask);
  const auto exact = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  const long double tol = std::is_same_v<T, float> ? 2e-5L : 1e-13L;
  EXPECT_TRUE(support::is_near(tiled.dq, exact.dq, tol)) << "dq";
  EXPECT_TRUE(support::is_near(tiled.dk, exact.dk, tol)) << "dk";
  EXPECT_TRUE(support::is_near(tiled.dv, exact.dv, tol)) << "dv";
  const ref::Matrix scores = ref::masked_scores(ref::to_real(q), ref::to_real(k), expected_mask);
  for (Index i = 0; i < num_queries; ++i) {
    bool seen = false;
    for (Index j = 0; j < num_keys; ++j) seen = seen || scores(i, j) != ref::minus_inf;
    if (!seen) {
      EXPECT_TRUE((tiled.dq.row(i).array() == T(0)).all()) << "dq row " << i;
      EXPECT_TRUE((exact.dq.row(i).array() == T(0)).all()) << "dq row " << i;
    }
  }
  for (Index j = 0; j < num_keys; ++j) {
    bool seen = false;
    for (Index i = 0; i < num_queries; ++i) seen = seen || scores(i, j) != ref::minus_inf;
    if (!seen) {
      EXPECT_TRUE((tiled.dk.row(j).array() == T(0)).all() &&
                  (tiled.dv.row(j).array() == T(0)).all())
          << "key " << j;
      EXPECT_TRUE((exact.dk.row(j).array() == T(0)).all() &&
                  (exact.dv.row(j).array() == T(0)).all())
          << "key " << j;
    }
  }
}

template <typename T>
class ServingMaskTiledBackward : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ServingMaskTiledBackward, FastScalars, support::ScalarNames);

TYPED_TEST(ServingMaskTiledBackward, CausalLowerRight) {
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}}) {
    expect_tiled_backward_matches<TypeParam>(attention::causal_lower_right,
                                             ref::Mask::causal_lower_right(), l, s, 300);
  }
}

TYPED_TEST(ServingMaskTiledBackward, Window) {
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}}) {
    // Keys outside every window exist when L < S: the first S - L - 5 are seen by nobody.
    expect_tiled_backward_matches<TypeParam>(attention::window(5, 0), ref::Mask::window(5, 0), l, s,
                                             310);
    expect_tiled_backward_matches<TypeParam>(attention::window(20, 30), ref::Mask::window(20, 30),
                                             l, s, 320);
  }
}

// --- Combinations: a & b ------------------------------------------------------------------------

static_assert(attention::is_mask_v<decltype(attention::causal & attention::window(2, 0))>);
static_assert(attention::is_mask_v<decltype(attention::causal_lower_right &
                                            attention::bias(Matrix<float>::Zero(2, 2)) &
                                            attention::window(1, 1))>);

/// A random bias with no zero entry (so that the brute-force classification sees it), -inf on a
/// random 30% and on a whole block.
Matrix<double> random_bias(Index rows, Index cols, unsigned seed) {
  Matrix<double> b = support::random_matrix<double>(rows, cols, seed).array() + 3.0;
  const BoolMatrix hidden = support::random_keep(rows, cols, seed + 1, 0.3);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      if (hidden(i, j) || (i < rows / 2 && j < cols / 3)) {
        b(i, j) = -std::numeric_limits<double>::infinity();
      }
    }
  }
  return b;
}

TEST(MaskCombination, ClassifiesEveryTileExactly) {
  const Index l = 150, s = 170;
  const BoolMatrix visible = support::random_keep(l, s, 50, 0.5);
  const Matrix<double> b = random_bias(l, s, 51);
  for (const Index tile : {1, 5, 16, 64}) {
    expect_exact_classification(attention::causal & attention::window(10, 0), l, s, tile, tile);
    expect_exact_classification(attention::window(20, 0) & attention::window(0, 20), l, s, tile,
                                tile + 3);
    expect_exact_classification(attention::keep(visible) & attention::causal_lower_right, l, s,
                                tile, tile);
    expect_exact_classification(attention::bias(b) & attention::window(30, 5), l, s, tile, tile);
    expect_exact_classification(attention::causal & attention::keep(visible) & attention::bias(b),
                                l, s, tile, tile);
  }
}

// Two masks that each leave a tile partly visible can share no visible entry: the combination must
// call the tile hidden so the kernel skips it.
TEST(MaskCombination, TileThatNeitherPartEmptiesButTheCombinationDoes) {
  // keep() shows only keys above the diagonal; causal only keys on or below it.
  BoolMatrix above = BoolMatrix::Constant(16, 16, false);
  for (Index i = 0; i < 16; ++i) {
    for (Index j = i + 1; j < 16; ++j) above(i, j) = true;
  }
  const auto keep_above = attention::keep(above);
  EXPECT_EQ(keep_above.visibility(0, 16, 0, 16), TileVisibility::mixed);
  EXPECT_EQ(attention::causal.visibility(0, 16, 0, 16), TileVisibility::mixed);
  const auto both = keep_above & attention::causal;
  EXPECT_EQ(attention::detail::bind_mask(both, 16, 16).visibility(0, 16, 0, 16),
            TileVisibility::hidden);
  // Two windows that meet only on the diagonal, and keep() off it: each part mixed, nothing shared.
  const auto disjoint = attention::window(8, 0) & attention::window(0, 8);
  const auto narrow = attention::window(8, 0) & attention::window(attention::unbounded, 0);
  EXPECT_EQ(attention::detail::bind_mask(disjoint & attention::keep(above), 16, 16)
                .visibility(0, 16, 0, 16),
            TileVisibility::hidden);
  EXPECT_EQ(attention::detail::bind_mask(narrow, 16, 16).visibility(0, 16, 0, 16),
            TileVisibility::mixed);
}

template <typename Scalar, typename Mask>
void expect_forward_matches(const Mask& mask, const ref::Mask& expected_mask, Index num_queries,
                            Index num_keys, unsigned seed) {
  const Matrix<Scalar> q = support::random_matrix<Scalar>(num_queries, 16, seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(num_keys, 16, seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(num_keys, 20, seed + 2);
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(q, k, v, mask),
      ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v), expected_mask),
      tolerance<Scalar>()))
      << "L=" << num_queries << " S=" << num_keys;
}

TYPED_TEST(ServingMask, CombinationsMatchReference) {
  using Scalar = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{1, 300}, {70, 200}, {200, 70}, {129, 97}}) {
    const BoolMatrix visible = support::random_keep(l, s, 60, 0.6);
    const Matrix<Scalar> b1 = support::random_matrix<Scalar>(l, s, 61);
    Matrix<Scalar> b2 = support::random_matrix<Scalar>(l, s, 62);
    b2.leftCols(s / 2).setConstant(-std::numeric_limits<Scalar>::infinity());
    expect_forward_matches<Scalar>(
        attention::causal_lower_right & attention::window(9, 0),
        ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::window(9, 0)}), l, s, 63);
    expect_forward_matches<Scalar>(
        attention::causal_lower_right & attention::bias(b1),
        ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::bias(b1)}), l, s, 64);
    // Two biases add; a -inf in either hides the key.
    expect_forward_matches<Scalar>(attention::bias(b1) & attention::bias(b2),
                                   ref::Mask::both({ref::Mask::bias(b1), ref::Mask::bias(b2)}), l,
                                   s, 65);
    expect_forward_matches<Scalar>(
        attention::window(30, 2) & attention::keep(visible) & attention::bias(b1),
        ref::Mask::both({ref::Mask::window(30, 2), ref::Mask::keep(visible), ref::Mask::bias(b1)}),
        l, s, 66);
  }
}

// A key hidden by one part stays hidden whatever the other part adds there, +inf and NaN biases
// included (mask.hpp's protocol): the row does not become NaN.
TYPED_TEST(ServingMask, HiddenKeyStaysHiddenUnderInfiniteOrNanBias) {
  using Scalar = TypeParam;
  const Index n = 70;
  const Matrix<Scalar> q = support::random_matrix<Scalar>(n, 8, 70);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(n, 8, 71);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(n, 8, 72);
  Matrix<Scalar> b = Matrix<Scalar>::Zero(n, n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = i + 1; j < n; ++j) {
      b(i, j) = (i + j) % 2 == 0 ? std::numeric_limits<Scalar>::infinity()
                                 : std::numeric_limits<Scalar>::quiet_NaN();
    }
  }
  const Matrix<Scalar> expected =
      attention::scaled_dot_product_attention(q, k, v, attention::causal);
  for (const auto& out :
       {attention::scaled_dot_product_attention(q, k, v, attention::causal & attention::bias(b)),
        attention::scaled_dot_product_attention(q, k, v, attention::bias(b) & attention::causal)}) {
    EXPECT_TRUE(out.allFinite());
    EXPECT_TRUE(support::is_near(out, expected, tolerance<Scalar>()));
  }
}

// A combination with a bias: dbias is dS, the gradient of the bias matrix (biases add), 0 where
// another part hides the key.
TYPED_TEST(ServingMaskGradient, CombinationWithBias) {
  using T = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{3, 7}, {7, 3}}) {
    SCOPED_TRACE(::testing::Message() << "L = " << l << ", S = " << s);
    Matrix<T> q = support::random_matrix<T>(l, 3, 400);
    Matrix<T> k = support::random_matrix<T>(s, 3, 401);
    Matrix<T> v = support::random_matrix<T>(s, 2, 402);
    Matrix<T> b = support::random_matrix<T>(l, s, 403);
    const Matrix<T> d_out = support::random_matrix<T>(l, 2, 404);
    const auto mask = [&] { return attention::window(2, 0) & attention::bias(b); };
    const auto grads = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask());
    const auto loss = [&] {
      return support::weighted_sum(d_out, attention::scaled_dot_product_attention(q, k, v, mask()));
    };
    constexpr long double bound = support::gradient_bound<T>();
    EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, bound)) << "dq";
    EXPECT_TRUE(support::gradient_matches(loss, k, grads.dk, bound)) << "dk";
    EXPECT_TRUE(support::gradient_matches(loss, v, grads.dv, bound)) << "dv";
    EXPECT_TRUE(support::gradient_matches(loss, b, grads.dbias, bound)) << "dbias";
    for (Index i = 0; i < l; ++i) {
      for (Index j = 0; j < s; ++j) {
        if (ref::hides(ref::Mask::window(2, 0), l, s, i, j)) {
          EXPECT_EQ(grads.dbias(i, j), T(0));
        }
      }
    }
  }
}

TYPED_TEST(ServingMaskTiledBackward, Combinations) {
  using T = TypeParam;
  const BoolMatrix visible = support::random_keep(200, 70, 80, 0.6);
  expect_tiled_backward_matches<T>(
      attention::window(9, 0) & attention::keep(visible),
      ref::Mask::both({ref::Mask::window(9, 0), ref::Mask::keep(visible)}), 200, 70, 81);
  expect_tiled_backward_matches<T>(
      attention::causal_lower_right & attention::window(0, 3),
      ref::Mask::both({ref::Mask::causal_lower_right(), ref::Mask::window(0, 3)}), 70, 200, 82);
}

// --- Batches: key padding and packed sequences --------------------------------------------------

static_assert(attention::is_mask_v<attention::KeyPaddingMask>);
static_assert(attention::is_mask_v<attention::SequenceMask>);

TEST(KeyPadding, ClassifiesTilesAndMatchesReference) {
  for (const Index valid : {0, 1, 63, 64, 65, 199, 200}) {
    expect_exact_classification(attention::key_padding(valid), 70, 200, 16, 16);
    expect_forward_matches<double>(attention::key_padding(valid), ref::Mask::key_padding(valid), 70,
                                   200, 90);
  }
}

TEST(KeyPadding, Errors) {
  EXPECT_THROW((void)attention::key_padding(-1), std::invalid_argument);
  const Matrix<double> q = support::random_matrix<double>(3, 4, 1);
  const Matrix<double> k = support::random_matrix<double>(3, 4, 2);
  const Matrix<double> v = support::random_matrix<double>(3, 4, 3);
  EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v, attention::key_padding(4)),
               attention::ShapeError);
  try {
    (void)attention::scaled_dot_product_attention(q, k, v, attention::key_padding(4));
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(std::string(e.what()),
              "attention::scaled_dot_product_attention: key_padding valid_keys (= 4) must be at "
              "most number of keys (= 3)");
  }
  try {
    (void)attention::key_padding(-2);
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "attention::key_padding: valid_keys (= -2) must be >= 0");
  }
}

/// A packed batch: sequences of these query and key lengths (some empty, some longer than a tile,
/// L_b != S_b both ways), with offsets and the expected pieces.
struct Batch {
  std::vector<Index> query_lengths, key_lengths;

  [[nodiscard]] std::vector<Index> query_offsets() const { return offsets(query_lengths); }
  [[nodiscard]] std::vector<Index> key_offsets() const { return offsets(key_lengths); }
  static std::vector<Index> offsets(const std::vector<Index>& lengths) {
    std::vector<Index> o{0};
    Index total = 0;
    for (const Index n : lengths) o.push_back(total += n);
    return o;
  }
};

const Batch batches[] = {
    {{5, 70, 1, 0, 33, 90},
     {5, 40, 300, 7, 33, 100}},        // mixed lengths, one sequence without queries
    {{1, 1, 1, 1}, {130, 1, 64, 65}},  // decoding: one query per sequence
    {{100, 3, 17}, {100, 0, 17}},      // a sequence without keys: its queries give 0
};

/// Each sequence b on its own, through the reference: rows [qo[b], qo[b+1]) of the packed output
/// must equal attention of those queries over keys [ko[b], ko[b] + valid[b]) with `local`.
template <typename Scalar, typename Mask>
void expect_sequence_by_sequence(const Batch& batch, const Mask& mask, const ref::Mask& local,
                                 const std::vector<Index>& valid, unsigned seed) {
  const std::vector<Index> qo = batch.query_offsets(), ko = batch.key_offsets();
  const Matrix<Scalar> q = support::random_matrix<Scalar>(qo.back(), 12, seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(ko.back(), 12, seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(ko.back(), 7, seed + 2);
  const auto result = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  for (std::size_t b = 0; b + 1 < qo.size(); ++b) {
    const Index rows = qo[b + 1] - qo[b];
    if (rows == 0) continue;
    SCOPED_TRACE(::testing::Message() << "sequence " << b);
    if (valid[b] == 0) {
      EXPECT_TRUE((result.output.middleRows(qo[b], rows).array() == Scalar(0)).all());
      EXPECT_TRUE(
          (result.lse.segment(qo[b], rows).array() == -std::numeric_limits<Scalar>::infinity())
              .all());
      continue;
    }
    const ref::Matrix expected = ref::attention(ref::to_real(q.middleRows(qo[b], rows)),
                                                ref::to_real(k.middleRows(ko[b], valid[b])),
                                                ref::to_real(v.middleRows(ko[b], valid[b])), local);
    EXPECT_TRUE(
        support::is_near(result.output.middleRows(qo[b], rows), expected, tolerance<Scalar>()));
  }
}

TYPED_TEST(ServingMask, SequencesMatchEachSequenceAlone) {
  using Scalar = TypeParam;
  unsigned seed = 100;
  for (const Batch& batch : batches) {
    const auto packed = attention::sequences(batch.query_offsets(), batch.key_offsets());
    const std::vector<Index>& all = batch.key_lengths;
    expect_sequence_by_sequence<Scalar>(batch, packed, ref::Mask::none(), all, seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.causal(), ref::Mask::causal_lower_right(),
                                        all, seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.window(6, 0), ref::Mask::window(6, 0), all,
                                        seed += 3);
    // Key padding: the last keys of each sequence are padding; causal aligns to the last real key.
    std::vector<Index> valid;
    for (const Index n : batch.key_lengths) valid.push_back(n - n / 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.key_padding(valid), ref::Mask::none(), valid,
                                        seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.key_padding(valid).causal(),
                                        ref::Mask::causal_lower_right(), valid, seed += 3);
  }
}

TYPED_TEST(ServingMask, SequencesWithSharedOffsetsAndCombination) {
  using Scalar = TypeParam;
  const std::vector<Index> offsets{0, 40, 41, 170, 200};
  const Matrix<Scalar> b = support::random_matrix<Scalar>(200, 200, 110);
  expect_forward_matches<Scalar>(attention::sequences(offsets).causal(),
                                 ref::Mask::sequences(offsets, offsets, std::nullopt, 0), 200, 200,
                                 111);
  expect_forward_matches<Scalar>(
      attention::sequences(offsets) & attention::bias(b) & attention::causal,
      ref::Mask::both(
          {ref::Mask::sequences(offsets, offsets), ref::Mask::bias(b), ref::Mask::causal()}),
      200, 200, 112);
}

TEST(Sequences, ClassifiesEveryTileExactly) {
  for (const Batch& batch : batches) {
    const auto packed = attention::sequences(batch.query_offsets(), batch.key_offsets());
    std::vector<Index> valid;
    for (const Index n : batch.key_lengths) valid.push_back(n / 2);
    const Index l = batch.query_offsets().back(), s = batch.key_offsets().back();
    for (const Index tile : {1, 4, 16, 64}) {
      expect_exact_classification(packed, l, s, tile, tile);
      expect_exact_classification(packed.causal(), l, s, tile, tile);
      expect_exact_classification(packed.window(3, 2), l, s, tile, tile + 5);
      expect_exact_classification(packed.key_padding(valid).causal(), l, s, tile, tile);
    }
  }
  // Off-diagonal tiles are hidden: four sequences of 64 in 64 x 64 tiles give 4 visible
  // (diagonal) and 12 hidden tiles; with causal, the diagonal ones are mixed.
  const std::vector<Index> offsets{0, 64, 128, 192, 256};
  const auto counts = expect_exact_classification(attention::sequences(offsets), 256, 256, 64, 64);
  EXPECT_EQ(counts[static_cast<std::size_t>(TileVisibility::hidden)], 12);
  EXPECT_EQ(counts[static_cast<std::size_t>(TileVisibility::visible)], 4);
  const auto causal_counts =
      expect_exact_classification(attention::sequences(offsets).causal(), 256, 256, 64, 64);
  EXPECT_EQ(causal_counts[static_cast<std::size_t>(TileVisibility::hidden)], 12);
  EXPECT_EQ(causal_counts[static_cast<std::size_t>(TileVisibility::mixed)], 4);
}

TEST(Sequences, Errors) {
  using attention::ShapeError;
  using V = std::vector<Index>;
  EXPECT_EQ(message_of<ShapeError>([] { (void)attention::sequences(V{0}); }),
            "attention::sequences: number of sequences (query_offsets.size() - 1) (= 0) must be "
            "at least 1");
  EXPECT_EQ(message_of<ShapeError>([] {
              (void)attention::sequences(V{0, 2, 4}, V{0, 4});
            }),
            "attention::sequences: key_offsets.size() (= 2) must equal query_offsets.size() (= 3)");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{1, 4});
            }),
            "attention::sequences: query_offsets[0] (= 1) must be 0");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{0, 4, 6}, V{0, 5, 3});
            }),
            "attention::sequences: key_offsets[2] (= 3) must be at least key_offsets[1] (= 5): "
            "offsets never decrease");
  EXPECT_THROW((void)attention::sequences(V{0, 4}).window(-1, 0), std::invalid_argument);
  EXPECT_EQ(message_of<ShapeError>([] {
              (void)attention::sequences(V{0, 4, 6}).key_padding({1});
            }),
            "attention::sequences(...).key_padding: valid_keys.size() (= 1) must equal number of "
            "sequences (= 2)");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{0, 4, 6}).key_padding({1, 3});
            }),
            "attention::sequences(...).key_padding: valid_keys[1] (= 3) must be between 0 and the "
            "sequence's number of keys (= 2)");
  // The offsets must end at L and S: checked by the call.
  const Matrix<double> q = support::random_matrix<double>(6, 4, 1);
  const Matrix<double> k = support::random_matrix<double>(6, 4, 2);
  const Matrix<double> v = support::random_matrix<double>(6, 4, 3);
  EXPECT_EQ(
      message_of<ShapeError>([&] {
        (void)attention::scaled_dot_product_attention(q, k, v, attention::sequences(V{0, 4, 5}));
      }),
      "attention::scaled_dot_product_attention: sequences: last query offset (= 5) must "
      "equal number of queries (= 6)");
  EXPECT_EQ(message_of<ShapeError>([&] {
              (void)attention::scaled_dot_product_attention(
                  q, k, v, attention::sequences(V{0, 4, 6}, V{0, 4, 7}));
            }),
            "attention::scaled_dot_product_attention: sequences: last key offset (= 7) must equal "
            "number of keys (= 6)");
}

TYPED_TEST(ServingMaskGradient, SequencesCausal) {
  const std::vector<Index> qo{0, 2, 5}, ko{0, 4, 6};
  expect_gradients_match<TypeParam>(5, 6, 500, attention::sequences(qo, ko).causal());
  expect_gradients_match<TypeParam>(5, 6, 510, attention::sequences(qo, ko).key_padding({3, 1}));
}

TYPED_TEST(ServingMaskTiledBackward, Sequences) {
  const std::vector<Index> qo{0, 70, 71, 71, 200}, ko{0, 30, 150, 160, 230};
  expect_tiled_backward_matches<TypeParam>(attention::sequences(qo, ko).causal(),
                                           ref::Mask::sequences(qo, ko, std::nullopt, 0), 200, 230,
                                           600);
  expect_tiled_backward_matches<TypeParam>(
      attention::sequences(qo, ko).key_padding({20, 100, 5, 70}).window(10, 0),
      ref::Mask::sequences(qo, ko, 10, 0, {20, 100, 5, 70}), 200, 230, 610);
}

TEST(Sequences, DiagramOfTheReadme) {
  EXPECT_EQ(pattern_of<double>(attention::sequences({0, 2, 5}, {0, 3, 5}).causal(), 5, 5),
            "xx...\nxxx..\n.....\n...x.\n...xx\n");
  EXPECT_EQ(pattern_of<double>(attention::sequences({0, 2, 5}, {0, 3, 5}), 5, 5),
            "xxx..\nxxx..\n...xx\n...xx\n...xx\n");
}

}  // namespace
