// SPDX-License-Identifier: MIT
//
// Int8KVCache (int8_kv_cache.hpp): the stored int8 rows and scales against the written-out
// quantisation formula (s = max |x| / 127 per group; the error of a symmetric 8-bit quantiser,
// |x - q s| <= s / 2 per entry), zero and non-finite groups, the KVCache interface (sizes,
// positions and capacity follow a float KVCache fed the same calls), and every error.

#include <gtest/gtest.h>

#include <attention/int8_kv_cache.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "support/messages.hpp"
#include "support/random.hpp"

namespace int8_kv_cache_test {
namespace {

using attention::Index;
using attention::Int8KVCache;
using attention::KVCache;
using Matrix = attention::Matrix<float>;
using support::message_of;

/// Checks the rows of `cache` (quantised, scales) against x, which were appended as those rows:
/// for each group, s = max |x| / 127 (computed here in double and compared to float rounding),
/// |q| <= 127 with 127 at the largest entry, and |x - q s| <= s / 2 (plus float rounding of q s).
::testing::AssertionResult stores_within_bound(const Int8KVCache::QuantizedView& q,
                                               const Int8KVCache::ScaleView& scales,
                                               const Matrix& x, Index group) {
  if (q.rows() != x.rows() || q.cols() != x.cols() || scales.cols() != x.cols() / group) {
    return ::testing::AssertionFailure() << "shapes differ";
  }
  const double u = std::ldexp(1.0, -24);  // float's unit roundoff
  for (Index j = 0; j < x.rows(); ++j) {
    for (Index g = 0; g < scales.cols(); ++g) {
      double absmax = 0;
      for (Index c = g * group; c < (g + 1) * group; ++c) {
        absmax = std::max(absmax, std::fabs(double(x(j, c))));
      }
      const double s_expected = absmax / 127, s = scales(j, g);
      if (std::fabs(s - s_expected) > u * s_expected) {
        return ::testing::AssertionFailure()
               << "row " << j << " group " << g << ": scale " << s << ", expected " << s_expected;
      }
      bool reaches_127 = absmax == 0;
      for (Index c = g * group; c < (g + 1) * group; ++c) {
        const int qc = q(j, c);
        const double error = std::fabs(double(x(j, c)) - double(float(qc) * float(s)));
        reaches_127 = reaches_127 || std::abs(qc) == 127;
        if (std::abs(qc) > 127 || error > s / 2 * (1 + 4 * u) + u * std::fabs(double(x(j, c)))) {
          return ::testing::AssertionFailure()
                 << "row " << j << " column " << c << ": x = " << x(j, c) << ", q = " << qc
                 << ", s = " << s;
        }
      }
      if (!reaches_127) {
        return ::testing::AssertionFailure() << "row " << j << " group " << g << ": no |q| = 127";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Rows of random values over several magnitudes (one group per 8 scalars) quantise within the
// quantiser's bound, keys and values alike, appended as a prompt and then token by token.
TEST(Int8KVCache, StoresEveryGroupWithinHalfItsScale) {
  const Index width = 32, group = 8;
  Matrix k = support::random_matrix<float>(20, width, 1);
  Matrix v = support::random_matrix<float>(20, width, 2);
  for (Index c = 0; c < width; ++c) k.col(c) *= std::ldexp(1.0f, int(c % 7) * 3 - 9);
  v.row(3) *= 1e-30f;  // tiny (but normal) scales
  Int8KVCache cache(width, 64, group);
  cache.append(k.topRows(5), v.topRows(5));
  for (Index t = 5; t < 20; ++t) cache.append(k.row(t), v.row(t));
  ASSERT_EQ(cache.size(), 20);
  EXPECT_EQ(cache.groups(), 4);
  EXPECT_TRUE(stores_within_bound(cache.quantized_keys(), cache.key_scales(), k, group));
  EXPECT_TRUE(stores_within_bound(cache.quantized_values(), cache.value_scales(), v, group));
}

// A worked group: x = [1, -0.5, 0.25, 0] -> s = 1 / 127, q = [127, -64 (63.5 to even), 32, 0].
TEST(Int8KVCache, WorkedGroupRoundsToNearestEven) {
  Int8KVCache cache(4, 2, 4);
  Matrix x(1, 4);
  x << 1.0f, -0.5f, 0.25f, 0.0f;
  cache.append(x, -x);
  EXPECT_FLOAT_EQ(cache.key_scales()(0, 0), 1.0f / 127);
  EXPECT_EQ(int(cache.quantized_keys()(0, 0)), 127);
  EXPECT_EQ(int(cache.quantized_keys()(0, 1)), -64);
  EXPECT_EQ(int(cache.quantized_keys()(0, 2)), 32);
  EXPECT_EQ(int(cache.quantized_keys()(0, 3)), 0);
  EXPECT_EQ(int(cache.quantized_values()(0, 1)), 64);
  const Matrix dequantized = cache.dequantized_keys();
  EXPECT_FLOAT_EQ(dequantized(0, 1), -64.0f / 127);
}

// A group of zeros has scale 0 and reads back as exact zeros; its neighbours are unaffected.
TEST(Int8KVCache, ZeroGroupReadsBackAsZeros) {
  Int8KVCache cache(8, 4, 4);
  Matrix k(1, 8);
  k << 0, 0, 0, 0, 3, -6, 1.5f, 0;
  cache.append(k, k);
  EXPECT_EQ(cache.key_scales()(0, 0), 0.0f);
  EXPECT_FLOAT_EQ(cache.key_scales()(0, 1), 6.0f / 127);
  const Matrix back = cache.dequantized_keys();
  for (Index c = 0; c < 4; ++c) EXPECT_EQ(back(0, c), 0.0f);
  EXPECT_FLOAT_EQ(back(0, 5), -6.0f);
}

// NaN or an infinity makes its group NaN (scale NaN, every entry reads back NaN); the row's other
// groups are quantised as usual.
TEST(Int8KVCache, NonFiniteGroupReadsBackAsNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  Int8KVCache cache(12, 4, 4);
  Matrix k(1, 12);
  k << 1, std::nanf(""), 2, 3, 4, 5, 6, 7, -inf, 0, 0, 1;
  cache.append(k, k);
  EXPECT_TRUE(std::isnan(cache.key_scales()(0, 0)));
  EXPECT_FLOAT_EQ(cache.key_scales()(0, 1), 7.0f / 127);
  EXPECT_TRUE(std::isnan(cache.value_scales()(0, 2)));
  const Matrix back = cache.dequantized_values();
  for (Index c : {0, 1, 2, 3, 8, 9, 10, 11}) EXPECT_TRUE(std::isnan(back(0, c))) << c;
  EXPECT_FLOAT_EQ(back(0, 7), 7.0f);
}

// The same appends, drops, clears and reserves on a float KVCache and an Int8KVCache leave the
// same sizes, positions and capacities, and the int8 rows are the float rows quantised.
TEST(Int8KVCache, FollowsKVCacheThroughAppendsDropsAndClear) {
  const Index width = 16, group = 16;
  const Matrix k = support::random_matrix<float>(90, width, 3);
  const Matrix v = support::random_matrix<float>(90, width, 4);
  KVCache<float> reference(width, 40);
  Int8KVCache cache(width, 40, group);
  const auto agree = [&] {
    EXPECT_EQ(cache.size(), reference.size());
    EXPECT_EQ(cache.empty(), reference.empty());
    EXPECT_EQ(cache.tokens_seen(), reference.tokens_seen());
    EXPECT_EQ(cache.first_position(), reference.first_position());
    EXPECT_EQ(cache.capacity(), reference.capacity());
    EXPECT_TRUE(
        stores_within_bound(cache.quantized_keys(), cache.key_scales(), reference.keys(), group));
    EXPECT_TRUE(stores_within_bound(cache.quantized_values(), cache.value_scales(),
                                    reference.values(), group));
  };
  for (Index t = 0; t < 90; t += 3) {
    if (reference.size() + 3 > reference.max_length()) {
      reference.drop_oldest(7);
      cache.drop_oldest(7);
    }
    reference.append(k.middleRows(t, 3), v.middleRows(t, 3));
    cache.append(k.middleRows(t, 3), v.middleRows(t, 3));
    agree();
  }
  reference.clear();
  cache.clear();
  agree();
  reference.reserve(33);
  cache.reserve(33);
  agree();
  EXPECT_EQ(cache.memory_bytes(), cache.capacity() * 2 * (width + 4 * (width / group)));
}

// With group_size 1 the scales are as wide as the rows: appending them to the cache itself works.
TEST(Int8KVCache, AppendsViewsOfItsOwnScales) {
  Int8KVCache cache(3, 100, 1);
  Matrix x(1, 3);
  x << 1, -2, 4;
  cache.append(x, x);
  for (int i = 0; i < 6; ++i) {
    cache.append(cache.key_scales().bottomRows(1), cache.value_scales().bottomRows(1));
  }
  EXPECT_EQ(cache.size(), 7);
  EXPECT_FLOAT_EQ(cache.key_scales()(6, 1), 2.0f / 127 / 127 / 127 / 127 / 127 / 127 / 127);
}

TEST(Int8KVCache, RejectsBadSizesNamingThem) {
  EXPECT_EQ(message_of<attention::ShapeError>([] { Int8KVCache(24, 10, 5); }),
            "attention::Int8KVCache: group_size (= 5) must divide width (= 24)");
  EXPECT_THROW(Int8KVCache(24, 10, 0), attention::ShapeError);
  EXPECT_THROW(Int8KVCache(0, 10, 1), attention::ShapeError);
  EXPECT_THROW(Int8KVCache(8, 0, 8), attention::ShapeError);
  EXPECT_THROW(Int8KVCache(8, 10, 8, 11), std::invalid_argument);

  Int8KVCache cache(8, 4, 4);
  const Matrix rows = Matrix::Ones(3, 8);
  cache.append(rows, rows);
  EXPECT_EQ(message_of<std::length_error>([&] { cache.append(rows, rows); }),
            "attention::Int8KVCache::append: size() (= 3) + rows (= 3) exceeds max_length() (= 4)");
  EXPECT_EQ(cache.size(), 3);
  EXPECT_THROW(cache.append(Matrix::Ones(1, 7), Matrix::Ones(1, 7)), attention::ShapeError);
  EXPECT_THROW(cache.append(Matrix::Ones(1, 8), Matrix::Ones(2, 8)), attention::ShapeError);
  EXPECT_EQ(message_of<std::invalid_argument>([&] { cache.drop_oldest(4); }),
            "attention::Int8KVCache::drop_oldest: n (= 4) must be between 0 and size() (= 3)");
  EXPECT_THROW(cache.reserve(5), std::invalid_argument);
  EXPECT_EQ(cache.size(), 3);
  EXPECT_EQ(cache.tokens_seen(), 3);
}

}  // namespace
}  // namespace int8_kv_cache_test
