// SPDX-License-Identifier: MIT
//
// KVCache (kv_cache.hpp): contents after appends and drops, positions, the capacity policy
// (geometric growth capped at max_length, at most 2 x max_length for a cache that drops, the
// dropped rows reclaimed once per max_length tokens of a full sliding window), and every error.
// Expected contents are the appended rows themselves, kept in a plain std::vector of rows.

#include <gtest/gtest.h>

#include <attention/kv_cache.hpp>
#include <attention/mask.hpp>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/scalars.hpp"

namespace kv_cache_test {
namespace {

using support::message_of;

using attention::Index;
using attention::KVCache;
template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;

template <typename Scalar>
class KVCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(KVCacheTest, support::AllScalars, support::ScalarNames);

/// Rows [first, first + count) of the tokens appended so far, from the test's own record.
template <typename Scalar>
Matrix<Scalar> rows_of(const std::vector<Matrix<Scalar>>& tokens, Index first, Index count) {
  const Index width = tokens.empty() ? 0 : tokens.front().cols();
  Matrix<Scalar> m(count, width);
  for (Index i = 0; i < count; ++i) m.row(i) = tokens[static_cast<std::size_t>(first + i)];
  return m;
}

TYPED_TEST(KVCacheTest, StartsEmpty) {
  const KVCache<TypeParam> cache(24, 100);
  EXPECT_EQ(cache.size(), 0);
  EXPECT_TRUE(cache.empty());
  EXPECT_EQ(cache.width(), 24);
  EXPECT_EQ(cache.max_length(), 100);
  EXPECT_EQ(cache.capacity(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
  EXPECT_EQ(cache.keys().rows(), 0);
  EXPECT_EQ(cache.keys().cols(), 24);
  EXPECT_EQ(cache.values().rows(), 0);
}

TYPED_TEST(KVCacheTest, InitialCapacityIsAllocatedUpFront) {
  const KVCache<TypeParam> cache(8, 100, 40);
  EXPECT_EQ(cache.capacity(), 40);
  EXPECT_EQ(cache.size(), 0);
}

// Appending a prompt and then tokens one at a time keeps every row, in order, in keys() and
// values(), bit for bit.
TYPED_TEST(KVCacheTest, AppendKeepsEveryRowInOrder) {
  using Scalar = TypeParam;
  const Index width = 12;
  KVCache<Scalar> cache(width, 64);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(40, width, 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(40, width, 2);
  cache.append(k.topRows(7), v.topRows(7));  // a prompt
  for (Index t = 7; t < 40; ++t) cache.append(k.row(t), v.row(t));
  EXPECT_EQ(cache.size(), 40);
  EXPECT_EQ(cache.tokens_seen(), 40);
  EXPECT_TRUE(support::is_near(cache.keys(), k, 0));
  EXPECT_TRUE(support::is_near(cache.values(), v, 0));
}

// Buffers of 4 MiB and more are advised to use huge pages (Linux): advice that must not change a
// row. A cache of 1024-wide rows grows through 16, 32, ... 1100 rows (past 4 MiB for every scalar
// type), drops and moves its rows, and keeps every row exactly.
TYPED_TEST(KVCacheTest, LargeBuffersKeepEveryRowThroughGrowthAndDrops) {
  using Scalar = TypeParam;
  const Index width = 1024, total = 1100;
  KVCache<Scalar> cache(width, 600);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(total, width, 3);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(total, width, 4);
  Index first = 0;
  for (Index t = 0; t < total; t += 50) {
    if (cache.size() + 50 > cache.max_length()) {
      cache.drop_oldest(300);
      first += 300;
    }
    cache.append(k.middleRows(t, 50), v.middleRows(t, 50));
  }
  ASSERT_EQ(cache.size(), total - first);
  EXPECT_TRUE(support::is_near(cache.keys(), k.bottomRows(total - first), 0));
  EXPECT_TRUE(support::is_near(cache.values(), v.bottomRows(total - first), 0));
}

// Any Eigen expression of the right shape is accepted: a column-major matrix, a scaled block.
TYPED_TEST(KVCacheTest, AppendAcceptsExpressions) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(3, 10);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> col_major(2, 3);
  col_major << 1, 2, 3, 4, 5, 6;
  cache.append(col_major, Scalar(2) * col_major);
  Matrix<Scalar> expected(2, 3);
  expected << 1, 2, 3, 4, 5, 6;
  EXPECT_TRUE(support::is_near(cache.keys(), expected, 0));
  EXPECT_TRUE(support::is_near(cache.values(), Scalar(2) * expected, 0));
}

TYPED_TEST(KVCacheTest, AppendOfNoRowsChangesNothing) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(4, 10);
  cache.append(Matrix<Scalar>(0, 4), Matrix<Scalar>(0, 4));
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
}

TYPED_TEST(KVCacheTest, ExtendGivesWritableRowsAtTheEnd) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(5, 20);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(6, 5, 3);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(6, 5, 4);
  cache.append(k.topRows(2), v.topRows(2));
  auto rows = cache.extend(4);
  EXPECT_EQ(rows.keys.rows(), 4);
  EXPECT_EQ(rows.values.cols(), 5);
  rows.keys = k.bottomRows(4);
  rows.values = v.bottomRows(4);
  EXPECT_EQ(cache.size(), 6);
  EXPECT_EQ(cache.tokens_seen(), 6);
  EXPECT_TRUE(support::is_near(cache.keys(), k, 0));
  EXPECT_TRUE(support::is_near(cache.values(), v, 0));
}

// tokens_seen() counts dropped tokens too (the next token's absolute position); first_position()
// is the absolute position of keys().row(0).
TYPED_TEST(KVCacheTest, DropOldestForgetsTheFirstRowsButNotTheirPositions) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(6, 30);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(20, 6, 5);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(20, 6, 6);
  cache.append(k.topRows(12), v.topRows(12));
  cache.drop_oldest(5);
  EXPECT_EQ(cache.size(), 7);
  EXPECT_EQ(cache.tokens_seen(), 12);
  EXPECT_EQ(cache.first_position(), 5);
  EXPECT_TRUE(support::is_near(cache.keys(), k.middleRows(5, 7), 0));
  EXPECT_TRUE(support::is_near(cache.values(), v.middleRows(5, 7), 0));
  cache.append(k.bottomRows(8), v.bottomRows(8));
  EXPECT_EQ(cache.tokens_seen(), 20);
  EXPECT_TRUE(support::is_near(cache.keys(), k.bottomRows(15), 0));
  EXPECT_TRUE(support::is_near(cache.values(), v.bottomRows(15), 0));
  cache.drop_oldest(0);
  EXPECT_EQ(cache.size(), 15);
  cache.drop_oldest(15);
  EXPECT_TRUE(cache.empty());
  EXPECT_EQ(cache.tokens_seen(), 20);
  EXPECT_EQ(cache.first_position(), 20);
}

TYPED_TEST(KVCacheTest, ClearRestartsPositionsAndKeepsTheBuffers) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(4, 50);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(20, 4, 7);
  cache.append(k, k);
  const Index capacity = cache.capacity();
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
  EXPECT_EQ(cache.capacity(), capacity);
  cache.append(k.topRows(3), k.topRows(3));
  EXPECT_TRUE(support::is_near(cache.keys(), k.topRows(3), 0));
  EXPECT_EQ(cache.tokens_seen(), 3);
}

// Geometric growth: one token at a time up to max_length, the capacity takes O(log) distinct
// values (16, 32, 64, ..., then max_length), never exceeds max_length, and ends at max_length.
TYPED_TEST(KVCacheTest, GrowsGeometricallyUpToMaxLength) {
  using Scalar = TypeParam;
  const Index max_length = 1000;
  KVCache<Scalar> cache(2, max_length);
  std::set<Index> capacities;
  const Matrix<Scalar> row = Matrix<Scalar>::Constant(1, 2, Scalar(1));
  for (Index t = 0; t < max_length; ++t) {
    cache.append(row, row);
    EXPECT_GE(cache.capacity(), cache.size());
    EXPECT_LE(cache.capacity(), max_length);
    capacities.insert(cache.capacity());
  }
  EXPECT_EQ(capacities, (std::set<Index>{16, 32, 64, 128, 256, 512, max_length}));
}

// max_length = attention::unbounded (the largest Index) or 2^62: doubling the capacity, or the
// 2 x max_length allowed to a cache that drops, must saturate rather than overflow. The buffers
// grow only as the tokens need (16, then 32 rows), and the contents are the appended rows.
TYPED_TEST(KVCacheTest, HugeMaxLengthGrowsOnlyAsNeeded) {
  using Scalar = TypeParam;
  for (const Index max_length : {attention::unbounded, Index(1) << 62}) {
    KVCache<Scalar> cache(2, max_length);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(40, 2, 11);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(40, 2, 12);
    cache.append(k.topRows(20), v.topRows(20));
    cache.drop_oldest(5);
    cache.append(k.middleRows(20, 20), v.middleRows(20, 20));
    ASSERT_EQ(cache.size(), 35) << max_length;
    EXPECT_EQ(cache.max_length(), max_length);
    EXPECT_GE(cache.capacity(), 35);
    EXPECT_LE(cache.capacity(), 64);
    EXPECT_TRUE(support::is_near(cache.keys(), k.bottomRows(35), 0));
    EXPECT_TRUE(support::is_near(cache.values(), v.bottomRows(35), 0));
    EXPECT_EQ(cache.tokens_seen(), 40);
  }
}

// Rows of the cache appended to itself when the buffers grow (the views would point into freed
// memory), as views and as an expression: the appended rows are the rows as they were. (When the
// live rows move to the front of the buffer instead, the rows they leave behind are unchanged.)
TYPED_TEST(KVCacheTest, AppendOfItsOwnRows) {
  using Scalar = TypeParam;
  const Index width = 3;
  KVCache<Scalar> cache(width, 40);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(16, width, 13);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(16, width, 14);
  cache.append(k, v);
  ASSERT_EQ(cache.capacity(), 16);  // full: the next append grows the buffers
  cache.append(cache.keys().topRows(3), cache.values().bottomRows(3));
  ASSERT_GT(cache.capacity(), 16);
  ASSERT_EQ(cache.size(), 19);
  EXPECT_TRUE(support::is_near(cache.keys().bottomRows(3), k.topRows(3), 0));
  EXPECT_TRUE(support::is_near(cache.values().bottomRows(3), v.bottomRows(3), 0));
  EXPECT_TRUE(support::is_near(cache.keys().topRows(16), k, 0));

  // An expression over the cache's rows, on the next growth.
  cache.append(k.topRows(13), v.topRows(13));  // 32 rows: full again
  ASSERT_EQ(cache.size(), cache.capacity());
  const Matrix<Scalar> doubled = Scalar(2) * cache.keys().topRows(2);
  cache.append(Scalar(2) * cache.keys().topRows(2), cache.values().topRows(2));
  EXPECT_TRUE(support::is_near(cache.keys().bottomRows(2), doubled, 0));
  EXPECT_TRUE(support::is_near(cache.values().bottomRows(2), v.topRows(2), 0));
}

TYPED_TEST(KVCacheTest, ReserveAllocatesOnceForThatManyTokens) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(3, 300);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(200, 3, 8);
  cache.append(k.topRows(5), k.topRows(5));
  cache.reserve(200);
  EXPECT_EQ(cache.capacity(), 200);
  const TypeParam* data = cache.keys().data();
  for (Index t = 5; t < 200; ++t) cache.append(k.row(t), k.row(t));
  EXPECT_EQ(cache.capacity(), 200);
  EXPECT_EQ(cache.keys().data(), data);  // never moved
  EXPECT_TRUE(support::is_near(cache.keys(), k, 0));
  cache.reserve(10);  // smaller: nothing happens
  EXPECT_EQ(cache.capacity(), 200);
}

// A sliding window of W = max_length tokens, one token in and one out per step, for many steps:
// the contents are always the last W tokens; the buffers stop growing at 2 W rows; and the rows
// are moved back to the front of the buffer at most once every W tokens (O(1) amortised), which
// shows as keys().data() jumping backwards.
TYPED_TEST(KVCacheTest, SlidingWindowReclaimsDroppedRowsOncePerWindow) {
  using Scalar = TypeParam;
  const Index window = 37, steps = 20 * window, width = 3;
  KVCache<Scalar> cache(width, window);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(window + steps, width, 9);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(window + steps, width, 10);
  cache.append(k.topRows(window), v.topRows(window));
  Index moves_back = 0, reallocations = 0;
  const Scalar* previous = cache.keys().data();
  Index previous_capacity = cache.capacity();
  for (Index t = window; t < window + steps; ++t) {
    cache.drop_oldest(1);
    cache.append(k.row(t), v.row(t));
    ASSERT_EQ(cache.size(), window);
    ASSERT_TRUE(support::is_near(cache.keys(), k.middleRows(t + 1 - window, window), 0))
        << "after token " << t;
    ASSERT_TRUE(support::is_near(cache.values(), v.middleRows(t + 1 - window, window), 0))
        << "after token " << t;
    EXPECT_LE(cache.capacity(), 2 * window);
    if (cache.capacity() != previous_capacity) {
      ++reallocations;
    } else if (cache.keys().data() < previous) {
      ++moves_back;
    }
    previous = cache.keys().data();
    previous_capacity = cache.capacity();
  }
  EXPECT_EQ(cache.capacity(), 2 * window);
  EXPECT_LE(reallocations, 1);
  // One move per window of tokens once at 2 W rows (the first window may grow instead).
  EXPECT_GE(moves_back, steps / window - 2);
  EXPECT_LE(moves_back, steps / window);
  EXPECT_EQ(cache.tokens_seen(), window + steps);
  EXPECT_EQ(cache.first_position(), steps);
}

// Chunks of several tokens with drops of other sizes, against the record of every token.
TYPED_TEST(KVCacheTest, MixedAppendsAndDropsMatchTheRecord) {
  using Scalar = TypeParam;
  const Index width = 4, max_length = 50;
  KVCache<Scalar> cache(width, max_length);
  std::vector<Matrix<Scalar>> record;
  Index first = 0, next_seed = 100;
  for (int step = 0; step < 200; ++step) {
    const Index rows = 1 + step % 5;
    const Index drop = (step * 7) % 6;
    cache.drop_oldest(std::min(drop, cache.size()));
    first += std::min<Index>(drop, static_cast<Index>(record.size()) - first);
    if (cache.size() + rows > max_length) {
      cache.drop_oldest(rows);
      first += rows;
    }
    const Matrix<Scalar> k =
        support::random_matrix<Scalar>(rows, width, static_cast<unsigned>(next_seed++));
    cache.append(k, Scalar(-1) * k);
    for (Index r = 0; r < rows; ++r) record.push_back(k.row(r));
    const Index count = static_cast<Index>(record.size()) - first;
    ASSERT_EQ(cache.size(), count);
    ASSERT_EQ(cache.first_position(), first);
    ASSERT_TRUE(support::is_near(cache.keys(), rows_of(record, first, count), 0))
        << "step " << step;
    ASSERT_TRUE(support::is_near(cache.values(), Scalar(-1) * rows_of(record, first, count), 0))
        << "step " << step;
    ASSERT_LE(cache.capacity(), 2 * max_length);
  }
}

// ---- Errors
// ----------------------------------------------------------------------------------------

TYPED_TEST(KVCacheTest, ConstructorRejectsBadSizes) {
  using Cache = KVCache<TypeParam>;
  EXPECT_THROW((void)Cache(0, 10), attention::ShapeError);
  EXPECT_THROW((void)Cache(-3, 10), attention::ShapeError);
  EXPECT_THROW((void)Cache(4, 0), attention::ShapeError);
  EXPECT_THROW((void)Cache(4, 10, -1), std::invalid_argument);
  EXPECT_THROW((void)Cache(4, 10, 11), std::invalid_argument);
  EXPECT_NO_THROW((void)Cache(4, 10, 10));
}

TYPED_TEST(KVCacheTest, AppendRejectsWrongWidthsAndRowCounts) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(4, 10);
  EXPECT_THROW(cache.append(Matrix<Scalar>(1, 3), Matrix<Scalar>(1, 4)), attention::ShapeError);
  EXPECT_THROW(cache.append(Matrix<Scalar>(1, 4), Matrix<Scalar>(1, 5)), attention::ShapeError);
  EXPECT_THROW(cache.append(Matrix<Scalar>(2, 4), Matrix<Scalar>(1, 4)), attention::ShapeError);
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
}

// Past max_length: std::length_error, and the cache is unchanged.
TYPED_TEST(KVCacheTest, AppendBeyondMaxLengthThrowsAndChangesNothing) {
  using Scalar = TypeParam;
  KVCache<Scalar> cache(2, 5);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(6, 2, 11);
  cache.append(k.topRows(4), k.topRows(4));
  EXPECT_THROW(cache.append(k.bottomRows(2), k.bottomRows(2)), std::length_error);
  EXPECT_THROW(cache.extend(2), std::length_error);
  EXPECT_EQ(cache.size(), 4);
  EXPECT_EQ(cache.tokens_seen(), 4);
  EXPECT_TRUE(support::is_near(cache.keys(), k.topRows(4), 0));
  cache.append(k.row(4), k.row(4));  // exactly max_length is fine
  EXPECT_EQ(cache.size(), 5);
  EXPECT_THROW(cache.append(k.row(5), k.row(5)), std::length_error);
  cache.drop_oldest(1);  // room again
  cache.append(k.row(5), k.row(5));
  EXPECT_TRUE(support::is_near(cache.keys(), k.bottomRows(5), 0));
}

TYPED_TEST(KVCacheTest, DropOldestRejectsCountsOutsideZeroToSize) {
  KVCache<TypeParam> cache(2, 5);
  cache.extend(3);
  EXPECT_THROW(cache.drop_oldest(4), std::invalid_argument);
  EXPECT_THROW(cache.drop_oldest(-1), std::invalid_argument);
  EXPECT_EQ(cache.size(), 3);
}

TYPED_TEST(KVCacheTest, ExtendAndReserveRejectBadCounts) {
  KVCache<TypeParam> cache(2, 5);
  EXPECT_THROW(cache.extend(-1), std::invalid_argument);
  EXPECT_THROW(cache.reserve(-1), std::invalid_argument);
  EXPECT_THROW(cache.reserve(6), std::invalid_argument);
  EXPECT_EQ(cache.size(), 0);
}

// The messages name the function and the numbers involved.
TEST(KVCache, ErrorMessagesNameTheSizes) {
  KVCache<float> cache(8, 6);
  cache.extend(4);
  EXPECT_EQ(message_of<std::length_error>([&] { cache.extend(3); }),
            "attention::KVCache::extend: size() (= 4) + rows (= 3) exceeds max_length() (= 6)");
  EXPECT_EQ(message_of<std::length_error>(
                [&] { cache.append(attention::RowMatrixXf(3, 8), attention::RowMatrixXf(3, 8)); }),
            "attention::KVCache::append: size() (= 4) + rows (= 3) exceeds max_length() (= 6)");
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { cache.append(attention::RowMatrixXf(1, 7), attention::RowMatrixXf(1, 8)); }),
            "attention::KVCache::append: k_new.cols() (= 7) must equal width() (= 8)");
  EXPECT_EQ(message_of<attention::ShapeError>([] { (void)KVCache<float>(8, 0); }),
            "attention::KVCache: max_length (= 0) must be at least 1");
  EXPECT_EQ(message_of<std::invalid_argument>([] { (void)KVCache<float>(8, 4, 5); }),
            "attention::KVCache: initial_capacity (= 5) must be between 0 and max_length (= 4)");
  EXPECT_EQ(message_of<std::invalid_argument>([&] { cache.drop_oldest(5); }),
            "attention::KVCache::drop_oldest: n (= 5) must be between 0 and size() (= 4)");
}

// Caches of Eigen::bfloat16 and Eigen::half (low_precision.hpp): float rows are rounded to nearest
// even, rows of the cache's type stored as they are, NaN and infinities kept.
TEST(KVCacheLowPrecision, FloatRowsAreRoundedToNearestEven) {
  using Bf16 = Eigen::bfloat16;
  KVCache<Bf16> cache(2, 8);
  Matrix<float> k(1, 2), v(1, 2);
  // bfloat16 has 8 significant bits: next to 1 are 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  k << 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f;          // ties: to 1 and to 1 + 2^-6, the even ones
  v << 1.0f + 0x1p-8f + 0x1p-20f, -1.0f - 0x1p-9f;  // above the tie: 1 + 2^-7; below: -1
  cache.append(k, v);
  EXPECT_EQ(static_cast<float>(cache.keys()(0, 0)), 1.0f);
  EXPECT_EQ(static_cast<float>(cache.keys()(0, 1)), 1.0f + 0x1p-6f);
  EXPECT_EQ(static_cast<float>(cache.values()(0, 0)), 1.0f + 0x1p-7f);
  EXPECT_EQ(static_cast<float>(cache.values()(0, 1)), -1.0f);
  constexpr float inf = std::numeric_limits<float>::infinity();
  Matrix<Bf16> same_type(1, 2);
  same_type << Bf16(std::numeric_limits<float>::quiet_NaN()), Bf16(-inf);
  cache.append(same_type, same_type);
  k << std::numeric_limits<float>::quiet_NaN(), inf;
  cache.append(k, k);
  ASSERT_EQ(cache.size(), 3);
  EXPECT_TRUE(Eigen::numext::isnan(cache.keys()(1, 0)));
  EXPECT_EQ(static_cast<float>(cache.values()(1, 1)), -inf);
  EXPECT_TRUE(Eigen::numext::isnan(cache.keys()(2, 0)));
  EXPECT_EQ(static_cast<float>(cache.values()(2, 1)), inf);
}

TEST(KVCacheLowPrecision, HalfCacheRejectsFloatsBeyondItsRange) {
  KVCache<Eigen::half> cache(3, 8);
  const Matrix<float> largest = Matrix<float>::Constant(2, 3, 65504.0f);  // half's largest finite
  cache.append(largest, -largest);
  Matrix<float> k = Matrix<float>::Zero(3, 3);
  k(2, 1) = 70000.0f;
  EXPECT_EQ(message_of<std::invalid_argument>([&] { cache.append(k, Matrix<float>::Zero(3, 3)); }),
            "attention::KVCache::append: k_new row 2 holds 70000 (column 1), beyond the range of "
            "the cache's Eigen::half (|x| <= 65504)");
  EXPECT_NE(message_of<std::invalid_argument>([&] { cache.append(Matrix<float>::Zero(3, 3), -k); }),
            "");
  EXPECT_EQ(cache.size(), 2);                        // unchanged by the throws
  k(2, 1) = std::numeric_limits<float>::infinity();  // not beyond the range: kept, as in float
  cache.append(k, k);
  EXPECT_TRUE(Eigen::numext::isinf(cache.keys()(4, 1)));
  EXPECT_EQ(static_cast<float>(cache.keys()(0, 0)), 65504.0f);
}

}  // namespace
}  // namespace kv_cache_test
