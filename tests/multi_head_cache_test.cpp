// SPDX-License-Identifier: MIT
// Tests for incremental decoding with MultiHeadAttention::forward(x_new, cache, mask)
// (attention/multi_head.hpp) and attention::KVCache (attention/kv_cache.hpp): feeding a sequence
// one token at a time, or in chunks of 3, gives the rows of one causal forward over the whole
// sequence, and of the long-double reference, to rounding -- with and without grouped-query
// heads and a sliding window; the cache holds exactly the projected keys and values; and every
// check (cache width, input width, mask shape, cache length) throws before the cache changes.

#include <gtest/gtest.h>

#include <attention/kv_cache.hpp>
#include <attention/multi_head.hpp>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

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
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadCache, Scalars, support::ScalarNames);

// (num_heads, num_kv_heads): plain multi-head, grouped-query, multi-query.
const std::pair<Index, Index> head_counts[] = {{4, 4}, {4, 2}, {4, 1}};

TYPED_TEST(MultiHeadCache, TokenByTokenAndChunksEqualOneCausalForward) {
  using T = TypeParam;
  const Index d_model = 16, n = 41;  // n crosses the kernel's 32-key tiles
  for (const auto& [num_heads, num_kv_heads] : head_counts) {
    for (const Index chunk : {1, 3, 41}) {
      SCOPED_TRACE(::testing::Message() << "heads " << num_heads << " kv heads " << num_kv_heads
                                        << " chunk " << chunk);
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
      EXPECT_TRUE(support::is_near(cache.keys(),
                                   ref::project(rx, ref::to_real(layer.w_k), ref::to_real(layer.b_k)),
                                   support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(cache.values(),
                                   ref::project(rx, ref::to_real(layer.w_v), ref::to_real(layer.b_v)),
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
      SCOPED_TRACE(::testing::Message() << "heads " << num_heads << " kv heads " << num_kv_heads
                                        << " chunk " << chunk);
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
        EXPECT_TRUE(support::is_near(
            layer.forward(x.middleRows(t, rows), twin, attention::keep(visible)),
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
  const RealMatrix expected = ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal());
  EXPECT_TRUE(support::is_near(incremental.bottomRows(n - prompt), expected.bottomRows(n - prompt),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(incremental, whole, 2 * support::tolerance<T>()));
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
}

TEST_F(MultiHeadCacheChecks, ThrowsWhenAWeightLostItsShape) {
  layer.w_k = Matrix<double>::Zero(8, 8);
  EXPECT_THROW((void)layer.forward(x, cache), attention::ShapeError);
  expect_cache_unchanged();
}

}  // namespace
