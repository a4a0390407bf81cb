// SPDX-License-Identifier: MIT
// Tests for the test support's finite-difference checker (support/gradient_check.hpp): it accepts
// exact gradients of known functions, rejects gradients that are wrong by far less than any real
// mistake would make them, leaves the parameters as it found them, and skips non-finite entries.

#include "support/gradient_check.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace gradient_check_test {
namespace {

template <typename T>
using RowMatrix = support::RowMatrix<T>;

template <typename T>
class GradientCheck : public ::testing::Test {};
using Scalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(GradientCheck, Scalars, support::ScalarNames);

// f(x) = sum(a ∘ exp(x) ∘ sin(x)), df/dx = a ∘ exp(x) ∘ (sin(x) + cos(x)): smooth, with derivatives
// of every order of the size a realistic loss has.
template <typename T>
struct ExpSin {
  RowMatrix<T> a = support::random_matrix<T>(3, 4, 1);
  RowMatrix<T> x = support::random_matrix<T>(3, 4, 2);

  long double loss() const {
    long double sum = 0;
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      for (Eigen::Index j = 0; j < x.cols(); ++j)
        sum += a(i, j) * std::exp(x(i, j)) * std::sin(x(i, j));
    }
    return sum;
  }
  RowMatrix<T> gradient() const {
    return (a.array() * x.array().exp() * (x.array().sin() + x.array().cos())).matrix();
  }
};

TYPED_TEST(GradientCheck, AcceptsExactGradient) {
  ExpSin<TypeParam> f;
  support::GradientError error;
  EXPECT_TRUE(support::gradient_matches([&] { return f.loss(); }, f.x, f.gradient(),
                                        support::gradient_bound<TypeParam>(), &error));
  EXPECT_LT(error.relative, support::gradient_bound<TypeParam>() / 100);
}

// A relative error of 1e-6 in one entry, far smaller than a wrong formula gives, is caught.
TYPED_TEST(GradientCheck, RejectsSlightlyWrongGradient) {
  ExpSin<TypeParam> f;
  RowMatrix<TypeParam> wrong = f.gradient();
  wrong(1, 2) *= TypeParam(1 + 1e-6);
  EXPECT_FALSE(support::gradient_matches([&] { return f.loss(); }, f.x, wrong,
                                         support::gradient_bound<TypeParam>()));
}

TYPED_TEST(GradientCheck, RejectsNaNAndWrongShape) {
  ExpSin<TypeParam> f;
  RowMatrix<TypeParam> with_nan = f.gradient();
  with_nan(0, 0) = std::numeric_limits<TypeParam>::quiet_NaN();
  const auto loss = [&] { return f.loss(); };
  EXPECT_FALSE(support::gradient_matches(loss, f.x, with_nan, 1.0L));
  EXPECT_FALSE(
      support::gradient_matches(loss, f.x, RowMatrix<TypeParam>(f.gradient().transpose()), 1.0L));
}

TYPED_TEST(GradientCheck, RestoresParametersExactly) {
  ExpSin<TypeParam> f;
  const RowMatrix<TypeParam> before = f.x;
  (void)support::gradient_matches([&] { return f.loss(); }, f.x, f.gradient(), 1.0L);
  EXPECT_TRUE((f.x.array() == before.array()).all());
}

// A non-finite entry is not perturbed; its numerical derivative is taken as 0.
TYPED_TEST(GradientCheck, SkipsNonFiniteEntries) {
  using T = TypeParam;
  RowMatrix<T> x = support::random_matrix<T>(2, 3, 3);
  x(1, 1) = -std::numeric_limits<T>::infinity();
  const auto loss = [&] {
    long double sum = 0;
    for (Eigen::Index i = 0; i < x.size(); ++i) {
      if (std::isfinite(x.data()[i])) sum += x.data()[i] * x.data()[i];
    }
    return sum;
  };
  RowMatrix<T> gradient = 2 * x;
  gradient(1, 1) = 0;
  EXPECT_TRUE(support::gradient_matches(loss, x, gradient, support::gradient_bound<T>()));
  EXPECT_EQ(x(1, 1), -std::numeric_limits<T>::infinity());
}

// Blocks of a larger matrix and row vectors are parameters too.
TYPED_TEST(GradientCheck, BlocksAndRowVectors) {
  using T = TypeParam;
  RowMatrix<T> w = support::random_matrix<T>(4, 4, 4);
  Eigen::Matrix<T, 1, Eigen::Dynamic> b = support::random_matrix<T>(1, 4, 5);
  const auto loss = [&] {
    return static_cast<long double>((w.array().square().sum() + b.array().cube().sum()));
  };
  EXPECT_TRUE(support::gradient_matches(loss, w.middleCols(1, 2),
                                        RowMatrix<T>(2 * w.middleCols(1, 2)),
                                        support::gradient_bound<T>()));
  EXPECT_TRUE(support::gradient_matches(loss, b, RowMatrix<T>(3 * b.array().square().matrix()),
                                        support::gradient_bound<T>()));
}

// The three-point stencil works as well, to the accuracy its O(h²) error allows.
TEST(GradientCheck, ThreePointStencil) {
  ExpSin<double> f;
  support::GradientError error;
  EXPECT_TRUE(support::gradient_matches([&] { return f.loss(); }, f.x, f.gradient(), 1e-5L, &error,
                                        support::Stencil::three_point));
  EXPECT_GT(error.relative, 1e-12L);  // visibly worse than the five-point stencil
}

TEST(GradientCheck, WeightedSumIsTheFrobeniusInnerProduct) {
  RowMatrix<double> a(2, 2), b(2, 2);
  a << 1, 2, 3, 4;
  b << 5, 6, 7, 8;
  EXPECT_EQ(support::weighted_sum(a, b), 1 * 5 + 2 * 6 + 3 * 7 + 4 * 8);
}

}  // namespace
}  // namespace gradient_check_test
