#pragma once
// SPDX-License-Identifier: MIT
//
// Checks shared by the mask tests (tests/mask_test.cpp, tests/masks/*_test.cpp). A mask is checked
// three ways:
//   - its tile classification against a brute-force one (apply() on a tile of zeros: hidden iff
//     every entry became -inf, visible iff none did and nothing was added), on every tile of a
//     grid, since that is what lets the kernels skip tiles;
//   - the tiled kernel (float, double) and the materialising path (long double) against the
//     long-double loop reference (support/reference.hpp), which writes each mask out as a plain
//     condition on (i, j), at sizes that give hidden, visible and mixed tiles, L != S both ways,
//     sizes that are not tile multiples, and L = 1 with a long S (decoding);
//   - both backward passes: central finite differences (double, long double), and the tiled
//     backward against the materialising one, with gradients of hidden entries exactly 0.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <attention/mask.hpp>
#include <attention/partial.hpp>
#include <attention/scaled_dot_product.hpp>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace support {

/// Error bound for outputs of order 1 at these sizes (S up to ~300, d up to 40): the tiled
/// kernel's worst observed errors are ~1e-6 (float) and ~1e-15 (double); a wrong mask boundary
/// moves an output by a weight of order 1 / S >= 1e-3.
template <typename Scalar>
long double mask_tolerance() {
  if constexpr (std::is_same_v<Scalar, float>) return 4e-6L;
  if constexpr (std::is_same_v<Scalar, double>) return 1e-14L;
  return 1e-17L;
}

/// The brute-force classification of a tile: apply() on zeros.
template <typename Bound>
attention::TileVisibility brute_force_visibility(const Bound& bound, Eigen::Index row0,
                                                 Eigen::Index rows, Eigen::Index col0,
                                                 Eigen::Index cols) {
  attention::Matrix<double> tile = attention::Matrix<double>::Zero(rows, cols);
  bound.apply(tile.data(), tile.outerStride(), row0, rows, col0, cols);
  const Eigen::Index hidden = (tile.array() == -std::numeric_limits<double>::infinity()).count();
  if (hidden == tile.size()) return attention::TileVisibility::hidden;
  if ((tile.array() == 0.0).all()) return attention::TileVisibility::visible;
  return attention::TileVisibility::mixed;
}

/// Every tile of an L x S grid of tile_rows x tile_cols tiles (the last ones cut short) is
/// classified exactly: hidden and visible must be exact; the tests' masks are also never
/// conservative, so mixed must be exact too. Returns how many tiles of each kind there were.
template <typename Mask>
std::array<int, 3> expect_exact_classification(const Mask& mask, Eigen::Index num_queries,
                                               Eigen::Index num_keys, Eigen::Index tile_rows,
                                               Eigen::Index tile_cols) {
  const auto& bound = attention::bind_mask(mask, num_queries, num_keys);
  std::array<int, 3> counts{};
  for (Eigen::Index row0 = 0; row0 < num_queries; row0 += tile_rows) {
    for (Eigen::Index col0 = 0; col0 < num_keys; col0 += tile_cols) {
      const Eigen::Index rows = std::min(tile_rows, num_queries - row0);
      const Eigen::Index cols = std::min(tile_cols, num_keys - col0);
      const attention::TileVisibility got = bound.visibility(row0, rows, col0, cols);
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
  for (Eigen::Index i = 0; i < w.rows(); ++i) {
    for (Eigen::Index j = 0; j < w.cols(); ++j) text += w(i, j) == 0 ? '.' : 'x';
    text += '\n';
  }
  return text;
}

/// The pattern of attention_weights with `mask` for random L x 3 queries and S x 3 keys.
template <typename Scalar, typename Mask>
std::string pattern_of(const Mask& mask, Eigen::Index num_queries, Eigen::Index num_keys) {
  const attention::Matrix<Scalar> q = random_matrix<Scalar>(num_queries, 3, 1);
  const attention::Matrix<Scalar> k = random_matrix<Scalar>(num_keys, 3, 2);
  return pattern(attention::attention_weights(q, k, mask));
}

/// scaled_dot_product_attention_lse with `mask` against the reference with `expected_mask`, at
/// sizes around the kernel's tiles (48 or 64 queries, 24 to 96 keys per tile): L = 1 with a long
/// S (decoding), L < S and L > S with whole tiles hidden, not multiples of any tile. Up to 16
/// queries against 512 keys or more take the split-key decode path (chunks of 256 keys). A row
/// that sees no key must give output exactly 0 and log-sum-exp -inf.
template <typename Scalar, typename Mask>
void expect_matches_reference(const Mask& mask, const reference::Mask& expected_mask,
                              unsigned seed) {
  namespace ref = reference;
  const std::pair<Eigen::Index, Eigen::Index> sizes[] = {{1, 1},    {1, 300},  {3, 257}, {70, 200},
                                                         {200, 70}, {129, 97}, {65, 65}, {1, 700},
                                                         {7, 1030}, {16, 513}};
  for (const auto& [num_queries, num_keys] : sizes) {
    const attention::Matrix<Scalar> q = random_matrix<Scalar>(num_queries, 24, seed);
    const attention::Matrix<Scalar> k = random_matrix<Scalar>(num_keys, 24, seed + 1);
    const attention::Matrix<Scalar> v = random_matrix<Scalar>(num_keys, 40, seed + 2);
    const auto result = attention::scaled_dot_product_attention_lse(q, k, v, mask);
    const ref::Matrix rq = ref::to_real(q), rk = ref::to_real(k), rv = ref::to_real(v);
    EXPECT_TRUE(
        is_near(result.output, ref::attention(rq, rk, rv, expected_mask), mask_tolerance<Scalar>()))
        << "L=" << num_queries << " S=" << num_keys;
    const ref::Matrix scores = ref::masked_scores(rq, rk, expected_mask);
    for (Eigen::Index i = 0; i < num_queries; ++i) {
      bool any_visible = false;
      for (Eigen::Index j = 0; j < num_keys; ++j)
        any_visible = any_visible || scores(i, j) != ref::minus_inf;
      if (!any_visible) {
        EXPECT_TRUE((result.output.row(i).array() == Scalar(0)).all()) << "row " << i;
        EXPECT_EQ(result.lse(i), -std::numeric_limits<Scalar>::infinity()) << "row " << i;
      }
    }
  }
}

/// scaled_dot_product_attention with `mask` against the reference with `expected_mask`, L x S.
template <typename Scalar, typename Mask>
void expect_forward_matches(const Mask& mask, const reference::Mask& expected_mask,
                            Eigen::Index num_queries, Eigen::Index num_keys, unsigned seed) {
  namespace ref = reference;
  const attention::Matrix<Scalar> q = random_matrix<Scalar>(num_queries, 16, seed);
  const attention::Matrix<Scalar> k = random_matrix<Scalar>(num_keys, 16, seed + 1);
  const attention::Matrix<Scalar> v = random_matrix<Scalar>(num_keys, 20, seed + 2);
  EXPECT_TRUE(
      is_near(attention::scaled_dot_product_attention(q, k, v, mask),
              ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v), expected_mask),
              mask_tolerance<Scalar>()))
      << "L=" << num_queries << " S=" << num_keys;
}

/// The materialising backward with `mask` against central finite differences of the forward;
/// no bias, so no dbias.
template <typename T, typename Mask>
void expect_gradients_match(Eigen::Index num_queries, Eigen::Index num_keys, unsigned seed,
                            const Mask& mask) {
  SCOPED_TRACE(::testing::Message() << "L = " << num_queries << ", S = " << num_keys);
  attention::Matrix<T> q = random_matrix<T>(num_queries, 3, seed);
  attention::Matrix<T> k = random_matrix<T>(num_keys, 3, seed + 1);
  attention::Matrix<T> v = random_matrix<T>(num_keys, 2, seed + 2);
  const attention::Matrix<T> d_out = random_matrix<T>(num_queries, 2, seed + 3);
  const auto grads = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  const auto loss = [&] {
    return weighted_sum(d_out, attention::scaled_dot_product_attention(q, k, v, mask));
  };
  constexpr long double bound = gradient_bound<T>();
  EXPECT_TRUE(gradient_matches(loss, q, grads.dq, bound)) << "dq";
  EXPECT_TRUE(gradient_matches(loss, k, grads.dk, bound)) << "dk";
  EXPECT_TRUE(gradient_matches(loss, v, grads.dv, bound)) << "dv";
  EXPECT_EQ(grads.dbias.size(), 0);
}

/// The tiled backward (from the forward's output and log-sum-exp) against the materialising one,
/// and hidden entries' gradients exactly 0: queries that see no key get dq = 0, keys that no query
/// sees get dk = dv = 0.
template <typename T, typename Mask>
void expect_tiled_backward_matches(const Mask& mask, const reference::Mask& expected_mask,
                                   Eigen::Index num_queries, Eigen::Index num_keys, unsigned seed) {
  namespace ref = reference;
  SCOPED_TRACE(::testing::Message() << "L = " << num_queries << ", S = " << num_keys);
  const attention::Matrix<T> q = random_matrix<T>(num_queries, 12, seed);
  const attention::Matrix<T> k = random_matrix<T>(num_keys, 12, seed + 1);
  const attention::Matrix<T> v = random_matrix<T>(num_keys, 9, seed + 2);
  const attention::Matrix<T> d_out = random_matrix<T>(num_queries, 9, seed + 3);
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  const auto tiled = attention::scaled_dot_product_attention_backward(q, k, v, forward.output,
                                                                      forward.lse, d_out, mask);
  const auto exact = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
  const long double tol = std::is_same_v<T, float> ? 2e-5L : 1e-13L;
  EXPECT_TRUE(is_near(tiled.dq, exact.dq, tol)) << "dq";
  EXPECT_TRUE(is_near(tiled.dk, exact.dk, tol)) << "dk";
  EXPECT_TRUE(is_near(tiled.dv, exact.dv, tol)) << "dv";
  const ref::Matrix scores = ref::masked_scores(ref::to_real(q), ref::to_real(k), expected_mask);
  for (Eigen::Index i = 0; i < num_queries; ++i) {
    bool seen = false;
    for (Eigen::Index j = 0; j < num_keys; ++j) seen = seen || scores(i, j) != ref::minus_inf;
    if (!seen) {
      EXPECT_TRUE((tiled.dq.row(i).array() == T(0)).all()) << "dq row " << i;
      EXPECT_TRUE((exact.dq.row(i).array() == T(0)).all()) << "dq row " << i;
    }
  }
  for (Eigen::Index j = 0; j < num_keys; ++j) {
    bool seen = false;
    for (Eigen::Index i = 0; i < num_queries; ++i) seen = seen || scores(i, j) != ref::minus_inf;
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

}  // namespace support

// The typed suites of the mask tests: the forward in every scalar type, finite differences in
// double and long double, the tiled backward in the types it covers (float, double). At global
// scope, where TYPED_TEST(MaskForward, ...) finds them in every test file.
using MaskForwardScalars = ::testing::Types<float, double, long double>;
using MaskGradientScalars = ::testing::Types<double, long double>;
using MaskTiledBackwardScalars = ::testing::Types<float, double>;
template <typename T>
class MaskForward : public ::testing::Test {};
TYPED_TEST_SUITE(MaskForward, MaskForwardScalars, support::ScalarNames);
template <typename T>
class MaskGradient : public ::testing::Test {};
TYPED_TEST_SUITE(MaskGradient, MaskGradientScalars, support::ScalarNames);
template <typename T>
class MaskTiledBackward : public ::testing::Test {};
TYPED_TEST_SUITE(MaskTiledBackward, MaskTiledBackwardScalars, support::ScalarNames);
