// SPDX-License-Identifier: MIT
// Tests for incremental decoding with MultiHeadAttention::forward(x_new, cache, mask)
// (attention/multi_head.hpp) and attention::KVCache (attention/kv_cache.hpp): feeding a sequence
// one token at a time, or in chunks of 3, gives the rows of one causal forward over the whole
// sequence, and of the long-double reference, to rounding -- with and without grouped-query
// heads, a sliding window (dropping the oldest tokens) and the position features (RoPE in both
// layouts, ALiBi, soft-capping, written out independently in the reference); the cache holds
// exactly the projected keys (rotated at their absolute positions under RoPE) and values; and
// every check (cache width, input width, mask shape, cache length, position features) throws
// before the cache changes.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/kv_cache.hpp>
#include <attention/multi_head.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/scalars.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::KVCache;
using attention::Matrix;
using attention::MultiHeadAttention;
using RealMatrix = ref::Matrix;
using support::parameters_of;

template <typename T>
MultiHeadAttention<T> random_layer(Index d_model, Index num_heads, Index num_kv_heads,
                                   unsigned seed) {
  return support::glorot_layer<T>(d_model, num_heads, num_kv_heads, seed);
}

/// The reference's sliding-window mask over a whole sequence of n tokens: token i sees tokens
/// i - left .. i (written out, independently of attention::window).
support::BoolMatrix window_keep(Index n, Index left) {
  support::BoolMatrix visible(n, n);
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < n; ++j) visible(i, j) = j <= i && j >= i - left;
  }
  return visible;
}

template <typename T>
class MultiHeadCache : public ::testing::Test {};
TYPED_TEST_SUITE(MultiHeadCache, support::AllScalars, support::ScalarNames);

// (num_heads, num_kv_heads): plain multi-head, grouped-query, multi-query.
const std::pair<Index, Index> head_counts[] = {{4, 4}, {4, 2}, {4, 1}};

TYPED_TEST(MultiHeadCache, TokenByTokenAndChunksEqualOneCausalForward) {
  using T = TypeParam;
  const Index d_model = 16, n = 41;  // n crosses the kernel's 32-key tiles
  for (const auto& [num_heads, num_kv_heads] : head_counts) {
    for (const Index chunk : {1, 3, 41}) {
      SCOPED_TRACE(::testing::Message()
                   << "heads " << num_heads << " kv heads " << num_kv_heads << " chunk " << chunk);
      const MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, num_kv_heads, 50);
      const Matrix<T> x = support::random_matrix<T>(n, d_model, 51);
      const Matrix<T> whole = layer.forward(x, attention::causal);
      const RealMatrix rx = ref::to_real(x);
      const RealMatrix expected =
          ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal());

      KVCache<T> cache(layer.kv_dim(), n);
      Matrix<T> incremental(n, d_model);
      for (Index t = 0; t < n; t += chunk) {
        const Index rows = std::min(chunk, n - t);
        incremental.middleRows(t, rows) = layer.forward(x.middleRows(t, rows), cache);
        ASSERT_EQ(cache.size(), t + rows);
        ASSERT_EQ(cache.tokens_seen(), t + rows);
      }
      EXPECT_TRUE(support::is_near(incremental, expected, support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(incremental, whole, 2 * support::tolerance<T>()));
      // The cache holds the projected keys and values of every token, in order.
      EXPECT_TRUE(support::is_near(
          cache.keys(), ref::project(rx, ref::to_real(layer.w_k), ref::to_real(layer.b_k)),
          support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(
          cache.values(), ref::project(rx, ref::to_real(layer.w_v), ref::to_real(layer.b_v)),
          support::tolerance<T>()));
    }
  }
}

TYPED_TEST(MultiHeadCache, SlidingWindowWithDroppedTokensEqualsWindowedForward) {
  // Window of 5 tokens (each sees itself and the 4 before it). The cache keeps at most the last
  // 4 tokens before each chunk is appended (the oldest are dropped), so it never holds more than
  // 4 + chunk rows; lower-right alignment makes the window mask over the cache the same as over
  // the whole sequence.
  using T = TypeParam;
  const Index d_model = 16, n = 23, left = 4;
  for (const auto& [num_heads, num_kv_heads] : head_counts) {
    for (const Index chunk : {1, 3}) {
      SCOPED_TRACE(::testing::Message()
                   << "heads " << num_heads << " kv heads " << num_kv_heads << " chunk " << chunk);
      const MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, num_kv_heads, 60);
      const Matrix<T> x = support::random_matrix<T>(n, d_model, 61);
      const support::BoolMatrix whole_mask = window_keep(n, left);
      const RealMatrix rx = ref::to_real(x);
      const RealMatrix expected =
          ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::keep(whole_mask));
      const Matrix<T> whole = layer.forward(x, attention::keep(whole_mask));

      KVCache<T> cache(layer.kv_dim(), left + chunk), twin(layer.kv_dim(), left + chunk);
      Matrix<T> incremental(n, d_model);
      for (Index t = 0; t < n; t += chunk) {
        const Index rows = std::min(chunk, n - t);
        cache.drop_oldest(std::max<Index>(0, cache.size() - left));
        // Over the cache: query r (absolute position t + r) sees cache rows j with absolute
        // position first + j in [t + r - left, t + r].
        const Index first = cache.first_position(), s = cache.size() + rows;
        support::BoolMatrix visible(rows, s);
        for (Index r = 0; r < rows; ++r) {
          for (Index j = 0; j < s; ++j) {
            visible(r, j) = first + j <= t + r && first + j >= t + r - left;
          }
        }
        incremental.middleRows(t, rows) =
            layer.forward(x.middleRows(t, rows), cache, attention::window(left, 0));
        // The same step with the window written out as a keep mask, over a twin cache.
        twin.drop_oldest(std::max<Index>(0, twin.size() - left));
        EXPECT_TRUE(
            support::is_near(layer.forward(x.middleRows(t, rows), twin, attention::keep(visible)),
                             incremental.middleRows(t, rows), 0));
        ASSERT_LE(cache.size(), left + chunk);
      }
      EXPECT_TRUE(support::is_near(incremental, expected, support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(incremental, whole, 2 * support::tolerance<T>()));
    }
  }
}

TYPED_TEST(MultiHeadCache, LongCacheTakesTheDecodePathAndStillMatches) {
  // 600 cached tokens and then single tokens: few queries against many keys, where the kernel
  // splits the keys among threads (kernels/flash.hpp, decode path), with grouped K/V heads.
  using T = TypeParam;
  const Index d_model = 16, n = 603, prompt = 600;
  const MultiHeadAttention<T> layer = random_layer<T>(d_model, 4, 2, 80);
  const Matrix<T> x = support::random_matrix<T>(n, d_model, 81);
  const Matrix<T> whole = layer.forward(x, attention::causal);
  KVCache<T> cache(layer.kv_dim(), n);
  Matrix<T> incremental(n, d_model);
  incremental.topRows(prompt) = layer.forward(x.topRows(prompt), cache);
  for (Index t = prompt; t < n; ++t) incremental.row(t) = layer.forward(x.row(t), cache);
  const RealMatrix rx = ref::to_real(x);
  const RealMatrix expected =
      ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal());
  EXPECT_TRUE(support::is_near(incremental.bottomRows(n - prompt), expected.bottomRows(n - prompt),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(incremental, whole, 2 * support::tolerance<T>()));
}

// --- Position features through the cache: RoPE, ALiBi, soft-cap ---------------------------------

/// Rows [first, first + rows) of the projected keys x w_k + b_k of the whole sequence, each K/V
/// head rotated by the reference's RoPE at absolute positions first, first + 1, ... (unrotated
/// without RoPE): what the cache must hold after a sliding window kept those rows.
RealMatrix expected_cached_keys(const RealMatrix& rx, const ref::MultiHeadParameters& p,
                                const support::PositionFeatures& features, Index head_dim,
                                Index first, Index rows) {
  const RealMatrix k = ref::rows(ref::project(rx, p.w_k, p.b_k), first, rows);
  const ref::Positions positions = support::reference_positions(features, 0, 0);
  RealMatrix out(rows, k.cols());
  for (Index g = 0; g < k.cols() / head_dim; ++g) {
    const RealMatrix block = ref::head_block(k, g, head_dim, positions, first);
    for (Index i = 0; i < rows; ++i) {
      for (Index c = 0; c < head_dim; ++c) out(i, g * head_dim + c) = block(i, c);
    }
  }
  return out;
}

// The position features add roundings (cos, sin and two products per rotated entry; a rounded
// ALiBi bias per score) but stay within support::tolerance<T>(): the largest errors measured by
// the three tests below are 4.1e-7 (float), 1.2e-15 (double) and 3.3e-19 (long double).

TYPED_TEST(MultiHeadCache, PositionFeaturesTokenByTokenAndChunksEqualOneCausalForward) {
  using T = TypeParam;
  const Index d_model = 32, n = 41;  // head_dim 8; n crosses the kernel's 32-key tiles
  for (const support::PositionFeatures& features : support::position_features_for_four_heads()) {
    for (const auto& [num_heads, num_kv_heads] : head_counts) {
      for (const Index chunk : {1, 3, 41}) {
        SCOPED_TRACE(::testing::Message() << features.name << ", heads " << num_heads
                                          << " kv heads " << num_kv_heads << " chunk " << chunk);
        MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, num_kv_heads, 90);
        support::set_positions(layer, features);
        const Matrix<T> x = support::random_matrix<T>(n, d_model, 91);
        const Matrix<T> whole = layer.forward(x, attention::causal);
        const RealMatrix rx = ref::to_real(x);
        const RealMatrix expected =
            ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal(),
                            support::reference_positions(features, 0, 0));

        KVCache<T> cache(layer.kv_dim(), n);
        Matrix<T> incremental(n, d_model);
        for (Index t = 0; t < n; t += chunk) {
          const Index rows = std::min(chunk, n - t);
          incremental.middleRows(t, rows) = layer.forward(x.middleRows(t, rows), cache);
        }
        EXPECT_TRUE(support::is_near(incremental, expected, support::tolerance<T>()));
        EXPECT_TRUE(support::is_near(incremental, whole, 2 * support::tolerance<T>()));
        // The cache holds every key rotated at its absolute position, and the values as they are.
        EXPECT_TRUE(support::is_near(
            cache.keys(),
            expected_cached_keys(rx, parameters_of(layer), features, layer.head_dim(), 0, n),
            support::tolerance<T>()));
        EXPECT_TRUE(support::is_near(
            cache.values(), ref::project(rx, ref::to_real(layer.w_v), ref::to_real(layer.b_v)),
            support::tolerance<T>()));
      }
    }
  }
}

// A window of 5 tokens over a cache that drops its oldest tokens: the kept keys were rotated at
// their absolute positions when they were appended, and ALiBi's bias sees only distances, so the
// rows equal those of one windowed forward over the whole sequence.
TYPED_TEST(MultiHeadCache, PositionFeaturesWithSlidingWindowAndDroppedTokens) {
  using T = TypeParam;
  const Index d_model = 32, n = 23, left = 4;
  for (const support::PositionFeatures& features : support::position_features_for_four_heads()) {
    for (const auto& [num_heads, num_kv_heads] : head_counts) {
      for (const Index chunk : {1, 3}) {
        SCOPED_TRACE(::testing::Message() << features.name << ", heads " << num_heads
                                          << " kv heads " << num_kv_heads << " chunk " << chunk);
        MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, num_kv_heads, 95);
        support::set_positions(layer, features);
        const Matrix<T> x = support::random_matrix<T>(n, d_model, 96);
        const RealMatrix rx = ref::to_real(x);
        const RealMatrix expected =
            ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::keep(window_keep(n, left)),
                            support::reference_positions(features, 0, 0));
        KVCache<T> cache(layer.kv_dim(), left + chunk);
        Matrix<T> incremental(n, d_model);
        for (Index t = 0; t < n; t += chunk) {
          const Index rows = std::min(chunk, n - t);
          cache.drop_oldest(std::max<Index>(0, cache.size() - left));
          incremental.middleRows(t, rows) =
              layer.forward(x.middleRows(t, rows), cache, attention::window(left, 0));
          ASSERT_LE(cache.size(), left + chunk);
          ASSERT_EQ(cache.tokens_seen(), t + rows);
        }
        EXPECT_TRUE(support::is_near(incremental, expected, support::tolerance<T>()));
        EXPECT_TRUE(support::is_near(
            cache.keys(),
            expected_cached_keys(rx, parameters_of(layer), features, layer.head_dim(),
                                 cache.first_position(), cache.size()),
            support::tolerance<T>()));
      }
    }
  }
}

// 600 cached tokens, then single tokens (the kernel's split-key decode path), with grouped K/V
// heads and every feature at once.
TYPED_TEST(MultiHeadCache, PositionFeaturesOnTheDecodePath) {
  using T = TypeParam;
  const Index d_model = 32, n = 603, prompt = 600;
  const support::PositionFeatures features = support::position_features_for_four_heads().back();
  MultiHeadAttention<T> layer = random_layer<T>(d_model, 4, 2, 85);
  support::set_positions(layer, features);
  const Matrix<T> x = support::random_matrix<T>(n, d_model, 86);
  KVCache<T> cache(layer.kv_dim(), n);
  Matrix<T> incremental(n, d_model);
  incremental.topRows(prompt) = layer.forward(x.topRows(prompt), cache);
  for (Index t = prompt; t < n; ++t) incremental.row(t) = layer.forward(x.row(t), cache);
  const RealMatrix rx = ref::to_real(x);
  const RealMatrix expected = ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal(),
                                              support::reference_positions(features, 0, 0));
  EXPECT_TRUE(support::is_near(incremental.bottomRows(n - prompt), expected.bottomRows(n - prompt),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(incremental, layer.forward(x, attention::causal),
                               2 * support::tolerance<T>()));
}

// --- Checks: each throws, and leaves the cache as it was ----------------------------------------

template <typename F>
std::string shape_error_message(F&& f) {
  try {
    f();
  } catch (const attention::ShapeError& e) {
    return e.what();
  }
  return "";
}

// x_new taken from the cache's own rows (kv_dim = d_model) when the append grows the buffers, which
// frees the rows x_new points at: the same result as a copy of those rows on a copy of the cache.
TEST(MultiHeadCache, NewTokensThatAreRowsOfTheCache) {
  const MultiHeadAttention<double> layer = random_layer<double>(8, 2, 2, 75);  // kv_dim 8
  KVCache<double> cache(8, 64);
  (void)layer.forward(support::random_matrix<double>(16, 8, 76), cache);
  ASSERT_EQ(cache.size(), cache.capacity());  // the next token grows the buffers
  KVCache<double> copy = cache;
  const Matrix<double> x = cache.keys().bottomRows(2);
  const Matrix<double> expected = layer.forward(x, copy);
  const Matrix<double> actual = layer.forward(cache.keys().bottomRows(2), cache);
  EXPECT_TRUE(support::is_near(actual, expected, 0));
  EXPECT_TRUE(support::is_near(cache.keys(), copy.keys(), 0));
  EXPECT_TRUE(support::is_near(cache.values(), copy.values(), 0));
}

class MultiHeadCacheChecks : public ::testing::Test {
 protected:
  MultiHeadAttention<double> layer = random_layer<double>(8, 4, 2, 70);  // kv_dim 4
  KVCache<double> cache{4, 6};
  Matrix<double> x = support::random_matrix<double>(2, 8, 71);

  void SetUp() override { (void)layer.forward(x, cache); }  // 2 tokens cached
  void expect_cache_unchanged() const {
    EXPECT_EQ(cache.size(), 2);
    EXPECT_EQ(cache.tokens_seen(), 2);
  }
};

TEST_F(MultiHeadCacheChecks, ThrowsWhenCacheWidthIsNotKvDim) {
  KVCache<double> wide(8, 6);
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(x, wide); }),
            "attention::MultiHeadAttention::forward (cache): cache.width() (= 8) must equal kv_dim "
            "(= 4)");
  EXPECT_EQ(wide.size(), 0);
}

TEST_F(MultiHeadCacheChecks, ThrowsOnInputWidth) {
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(Matrix<double>::Zero(1, 7), cache); }),
            "attention::MultiHeadAttention::forward (cache): x_new.cols() (= 7) must equal d_model "
            "(= 8)");
  expect_cache_unchanged();
}

TEST_F(MultiHeadCacheChecks, ThrowsOnNoNewTokens) {
  EXPECT_THROW((void)layer.forward(Matrix<double>(0, 8), cache), attention::ShapeError);
  expect_cache_unchanged();
}

TEST_F(MultiHeadCacheChecks, ThrowsWhenMaskIsNotNewTokensByCachedTokens) {
  // 2 new tokens after 2 cached: the mask must be 2 x 4.
  const support::BoolMatrix wrong = support::BoolMatrix::Constant(2, 2, true);
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(x, cache, attention::keep(wrong)); }),
            "attention::MultiHeadAttention::forward (cache): keep mask cols() (= 2) must equal "
            "number of keys (= 4)");
  expect_cache_unchanged();
  const support::BoolMatrix right = support::BoolMatrix::Constant(2, 4, true);
  EXPECT_NO_THROW((void)layer.forward(x, cache, attention::keep(right)));
  EXPECT_EQ(cache.size(), 4);
}

TEST_F(MultiHeadCacheChecks, ThrowsLengthErrorWhenCacheIsFull) {
  const Matrix<double> five = support::random_matrix<double>(5, 8, 72);
  EXPECT_THROW((void)layer.forward(five, cache), std::length_error);
  expect_cache_unchanged();
  // The message names the call the user made, not the cache's internal extend().
  EXPECT_EQ(support::message_of<std::length_error>([&] { (void)layer.forward(five, cache); }),
            "attention::MultiHeadAttention::forward (cache): cache.size() (= 2) + x_new.rows() "
            "(= 5) exceeds cache.max_length() (= 6)");
  expect_cache_unchanged();
}

TEST_F(MultiHeadCacheChecks, ThrowsWhenAWeightLostItsShape) {
  layer.w_k = Matrix<double>::Zero(8, 8);
  EXPECT_THROW((void)layer.forward(x, cache), attention::ShapeError);
  expect_cache_unchanged();
}

TEST_F(MultiHeadCacheChecks, ThrowsWhenPositionFeaturesDoNotFit) {
  // head_dim is 2 (d_model 8, 4 heads).
  layer.rope = attention::Rope(4, attention::RopeLayout::interleaved);
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(x, cache); }),
            "attention::MultiHeadAttention::forward (cache): rope->head_dim() (= 4) must equal "
            "head_dim (= 2)");
  expect_cache_unchanged();
  layer.rope.reset();
  layer.alibi_slopes = {0.5, 0.25};
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(x, cache); }),
            "attention::MultiHeadAttention::forward (cache): alibi_slopes.size() (= 2) must equal "
            "num_heads (= 4)");
  expect_cache_unchanged();
  layer.alibi_slopes = {0.5, std::numeric_limits<double>::quiet_NaN(), 0.125, 0.0625};
  try {
    (void)layer.forward(x, cache);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "attention::MultiHeadAttention::forward (cache): alibi_slopes[1] (= nan) must be "
                 "finite");
  }
  expect_cache_unchanged();
  layer.alibi_slopes.clear();
  for (const double cap : {0.0, -1.0, std::numeric_limits<double>::infinity()}) {
    layer.softcap = cap;
    EXPECT_THROW((void)layer.forward(x, cache), std::invalid_argument) << cap;
    expect_cache_unchanged();
  }
}

}  // namespace
