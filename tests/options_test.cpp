// SPDX-License-Identifier: MIT
// Tests for attention/options.hpp: Options::scale, its default 1 / sqrt(d_k) and its validation,
// through the functions that take Options.

#include <gtest/gtest.h>

#include <attention/options.hpp>
#include <attention/scaled_dot_product.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace options_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::Options;

template <typename T>
class OptionsScale : public ::testing::Test {};
using FloatAndDouble = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptionsScale, FloatAndDouble, support::ScalarNames);

TYPED_TEST(OptionsScale, DefaultIsOneOverSquareRootOfKeyWidth) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(6, 9, 1), k = support::random_matrix<T>(8, 9, 2);
  const Options explicit_scale{1.0 / 3.0};  // d_k = 9
  EXPECT_TRUE(
      support::is_near(attention::attention_weights(q, k),
                       attention::attention_weights(q, k, attention::NoMask{}, explicit_scale),
                       support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(
      attention::attention_weights(q, k),
      ref::weights(ref::to_real(q), ref::to_real(k), ref::Mask::none(), 1.0L / 3.0L),
      support::tolerance<T>()));
}

TYPED_TEST(OptionsScale, ZeroGivesUniformWeightsOverVisibleKeys) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(5, 4, 3), k = support::random_matrix<T>(7, 4, 4);
  const Matrix<T> w = attention::attention_weights(q, k, attention::causal, Options{0.0});
  for (Index i = 0; i < 5; ++i) {
    for (Index j = 0; j < 7; ++j) {
      EXPECT_NEAR(double(w(i, j)), j <= i ? 1.0 / double(i + 1) : 0.0,
                  double(support::tolerance<T>()))
          << i << ", " << j;
    }
  }
}

TYPED_TEST(OptionsScale, NegativeScaleReversesPreferences) {
  // scale -c: softmax(-c s), so the key with the lowest score gets the largest weight.
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(6, 5, 5), k = support::random_matrix<T>(9, 5, 6);
  const Options negative{-0.7};
  const Matrix<T> w = attention::attention_weights(q, k, attention::NoMask{}, negative);
  EXPECT_TRUE(support::is_near(
      w, ref::weights(ref::to_real(q), ref::to_real(k), ref::Mask::none(), static_cast<T>(-0.7)),
      support::tolerance<T>()));
  const Matrix<T> scores = q * k.transpose();
  for (Index i = 0; i < 6; ++i) {
    Index lowest = 0, heaviest = 0;
    scores.row(i).minCoeff(&lowest);
    w.row(i).maxCoeff(&heaviest);
    EXPECT_EQ(heaviest, lowest) << "row " << i;
  }
}

TYPED_TEST(OptionsScale, LargeScaleGivesFiniteNearlyOneHotWeights) {
  using T = TypeParam;
  const Matrix<T> q = support::random_matrix<T>(4, 6, 7), k = support::random_matrix<T>(5, 6, 8);
  const Options huge{1e6};
  const Matrix<T> w = attention::attention_weights(q, k, attention::NoMask{}, huge);
  EXPECT_TRUE(w.allFinite());
  EXPECT_TRUE(support::is_near(
      w, ref::weights(ref::to_real(q), ref::to_real(k), ref::Mask::none(), static_cast<T>(1e6)),
      support::tolerance<T>()));
  const Matrix<T> v = support::random_matrix<T>(5, 3, 9);
  EXPECT_TRUE(
      attention::scaled_dot_product_attention(q, k, v, attention::NoMask{}, huge).allFinite());
}

/// The message of the std::invalid_argument `f` throws, "" if none; `shape_error` tells whether
/// it was a ShapeError.
template <typename F>
std::string invalid_argument_message(F&& f, bool* shape_error) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    *shape_error = dynamic_cast<const attention::ShapeError*>(&e) != nullptr;
    return e.what();
  }
  return "";
}

TEST(OptionsScale, NonFiniteScaleIsRejected) {
  const Matrix<double> q = Matrix<double>::Ones(2, 3), k = Matrix<double>::Ones(4, 3),
                       v = Matrix<double>::Ones(4, 2);
  for (const double scale :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(::testing::Message() << "scale " << scale);
    const Options options{scale};
    EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v, attention::causal, options),
                 std::invalid_argument);
    EXPECT_THROW((void)attention::attention_weights(q, k, attention::NoMask{}, options),
                 std::invalid_argument);
    bool shape_error = true;
    const std::string message = invalid_argument_message(
        [&] {
          (void)attention::scaled_dot_product_attention(q, k, v, attention::NoMask{}, options);
        },
        &shape_error);
    EXPECT_FALSE(shape_error) << "a bad value is not a shape error";
    EXPECT_EQ(message.rfind("attention::scaled_dot_product_attention: options.scale (= ", 0), 0u)
        << message;
    EXPECT_NE(message.find("must be finite"), std::string::npos) << message;
  }
}

TEST(OptionsScale, FloatScaleIsTheDoubleRoundedOnce) {
  // Options holds a double; for float it is rounded once: Options{0.1} scales by float(0.1).
  const Matrix<float> q = support::random_matrix<float>(3, 4, 10),
                      k = support::random_matrix<float>(5, 4, 11);
  EXPECT_TRUE(support::is_near(
      attention::attention_weights(q, k, attention::NoMask{}, Options{0.1}),
      ref::weights(ref::to_real(q), ref::to_real(k), ref::Mask::none(), static_cast<float>(0.1)),
      support::tolerance<float>()));
}

}  // namespace
}  // namespace options_test
