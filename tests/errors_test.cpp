// SPDX-License-Identifier: MIT
// Tests for attention/errors.hpp: ShapeError and the message format of the shape checks.

#include <gtest/gtest.h>

#include <attention/errors.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "support/messages.hpp"

namespace errors_test {
namespace {

using support::message_of;

namespace detail = attention::detail;

static_assert(std::is_base_of_v<std::invalid_argument, attention::ShapeError>,
              "ShapeError derives from std::invalid_argument");

TEST(ShapeError, IsAnInvalidArgumentWithItsMessage) {
  try {
    throw attention::ShapeError("attention::f: a (= 1) must equal b (= 2)");
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "attention::f: a (= 1) must equal b (= 2)");
    EXPECT_NE(dynamic_cast<const attention::ShapeError*>(&e), nullptr);
  }
}

TEST(ShapeError, RequireEqualPassesEqualSizes) {
  EXPECT_NO_THROW(detail::require_equal("f", "a", 3, "b", 3));
}

TEST(ShapeError, RequireEqualNamesFunctionArgumentsAndBothSizes) {
  EXPECT_THROW(detail::require_equal("f", "a", 3, "b", 4), attention::ShapeError);
  // The format of the style guide's example.
  EXPECT_EQ(message_of<attention::ShapeError>([] {
              detail::require_equal("scaled_dot_product_attention", "k.cols()", 32, "q.cols()", 64);
            }),
            "attention::scaled_dot_product_attention: k.cols() (= 32) must equal q.cols() (= 64)");
}

TEST(ShapeError, RequirePositiveRejectsZeroAndNegativeSizes) {
  EXPECT_NO_THROW(detail::require_positive("f", "n", 1));
  EXPECT_THROW(detail::require_positive("f", "n", 0), attention::ShapeError);
  EXPECT_THROW(detail::require_positive("f", "n", -3), attention::ShapeError);
  EXPECT_EQ(message_of<attention::ShapeError>([] { detail::require_positive("f", "seq_len", 0); }),
            "attention::f: seq_len (= 0) must be at least 1");
}

TEST(ShapeError, RequireDividesChecksDivisorThenDivisibility) {
  EXPECT_NO_THROW(detail::require_divides("f", "num_heads", 4, "d_model", 12));
  EXPECT_EQ(message_of<attention::ShapeError>(
                [] { detail::require_divides("f", "num_heads", 5, "d_model", 12); }),
            "attention::f: num_heads (= 5) must divide d_model (= 12)");
  EXPECT_EQ(message_of<attention::ShapeError>(
                [] { detail::require_divides("f", "num_heads", 0, "d_model", 12); }),
            "attention::f: num_heads (= 0) must be at least 1");
}

TEST(ShapeError, RequireIndexThrowsOutOfRangeNamingIndexAndBound) {
  EXPECT_NO_THROW(detail::require_index("f", "i", 0, "n", 3));
  EXPECT_NO_THROW(detail::require_index("f", "i", 2, "n", 3));
  EXPECT_THROW(detail::require_index("f", "i", 3, "n", 3), std::out_of_range);
  EXPECT_EQ(message_of<std::out_of_range>([] { detail::require_index("f", "i", -1, "n", 3); }),
            "attention::f: i (= -1) must be at least 0 and below n (= 3)");
}

TEST(ShapeError, InvalidValueIsNotAShapeError) {
  bool caught = false;
  try {
    detail::throw_invalid_value("f", "options.scale (= nan) must be finite");
  } catch (const attention::ShapeError&) {
    ADD_FAILURE() << "a bad value is not a shape error";
  } catch (const std::invalid_argument& e) {
    caught = true;
    EXPECT_STREQ(e.what(), "attention::f: options.scale (= nan) must be finite");
  }
  EXPECT_TRUE(caught);
}

}  // namespace
}  // namespace errors_test
