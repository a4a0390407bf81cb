// SPDX-License-Identifier: MIT
//
// kernels/simd.hpp: every member of the vector interface against the scalar operation it stands
// for, lane by lane, including the NaN rules (max propagates NaN from either side; nan_or keeps a
// NaN lane). Also compiled for the build machine (tests/CMakeLists.txt), so both the baseline and
// the native vector widths are checked.

#include <gtest/gtest.h>

#include <attention/kernels/simd.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "support/eigen_matchers.hpp"

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
class SimdTest : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SimdTest, FastScalars, support::ScalarNames);

using support::inf;
using support::nan;

/// Aligned storage for one vector.
template <typename Scalar>
using Lanes = Eigen::Matrix<Scalar, kernels::Simd<Scalar>::width, 1>;

template <typename Scalar>
Lanes<Scalar> lanes(Scalar first, Scalar step) {
  Lanes<Scalar> x;
  for (Index i = 0; i < x.size(); ++i) x(i) = first + step * Scalar(i);
  return x;
}

template <typename Scalar, typename Vec>
Lanes<Scalar> stored(Vec v) {
  Lanes<Scalar> out;
  kernels::Simd<Scalar>::store(out.data(), v);
  return out;
}

TYPED_TEST(SimdTest, WidthIsEigensPacketSize) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  EXPECT_EQ(V::width, (Eigen::internal::packet_traits<Scalar>::size));
  EXPECT_TRUE(V::vectorized);
  EXPECT_TRUE(V::has_exp);
  EXPECT_GE(V::registers, 16);
}

TYPED_TEST(SimdTest, LoadsStoresAndBroadcastKeepEveryLane) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  const Lanes<Scalar> x = lanes(Scalar(-3), Scalar(0.5));
  EXPECT_EQ(stored<Scalar>(V::load(x.data())), x);
  std::vector<Scalar> unaligned(static_cast<std::size_t>(V::width + 1));
  for (Index i = 0; i < V::width; ++i) unaligned[static_cast<std::size_t>(i + 1)] = x(i);
  EXPECT_EQ(stored<Scalar>(V::loadu(unaligned.data() + 1)), x);
  std::vector<Scalar> out(static_cast<std::size_t>(V::width + 1), Scalar(7));
  V::storeu(out.data() + 1, V::load(x.data()));
  EXPECT_EQ(out[0], Scalar(7));
  for (Index i = 0; i < V::width; ++i) EXPECT_EQ(out[static_cast<std::size_t>(i + 1)], x(i));
  EXPECT_EQ(stored<Scalar>(V::broadcast(Scalar(2.5))), Lanes<Scalar>::Constant(Scalar(2.5)));
  EXPECT_EQ(stored<Scalar>(V::zero()), Lanes<Scalar>::Zero());
}

TYPED_TEST(SimdTest, ArithmeticIsLaneByLane) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  const Lanes<Scalar> a = lanes(Scalar(-2), Scalar(0.75)), b = lanes(Scalar(5), Scalar(-1.25));
  const Lanes<Scalar> c = lanes(Scalar(0.1), Scalar(0.2));
  const auto va = V::load(a.data()), vb = V::load(b.data()), vc = V::load(c.data());
  const Lanes<Scalar> sum = stored<Scalar>(V::add(va, vb)), diff = stored<Scalar>(V::sub(va, vb));
  const Lanes<Scalar> prod = stored<Scalar>(V::mul(va, vb)),
                      fma = stored<Scalar>(V::fma(va, vb, vc));
  const Lanes<Scalar> mx = stored<Scalar>(V::max(va, vb));
  for (Index i = 0; i < V::width; ++i) {
    EXPECT_EQ(sum(i), a(i) + b(i));
    EXPECT_EQ(diff(i), a(i) - b(i));
    EXPECT_EQ(prod(i), a(i) * b(i));
    // Fused or not, within one rounding of the exact a b + c.
    const long double exact = static_cast<long double>(a(i)) * b(i) + c(i);
    EXPECT_NEAR(fma(i), exact, std::abs(exact) * std::numeric_limits<Scalar>::epsilon());
    EXPECT_EQ(mx(i), std::max(a(i), b(i)));
  }
  EXPECT_EQ(V::sum(va), a.sum());
  EXPECT_EQ(V::max_of(va), a.maxCoeff());
}

TYPED_TEST(SimdTest, MaxPropagatesNaNFromEitherOperandAndAcrossLanes) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  Lanes<Scalar> a = lanes(Scalar(1), Scalar(1));
  const Lanes<Scalar> b = lanes(Scalar(0), Scalar(2));
  a(0) = nan<Scalar>;
  const Lanes<Scalar> ab = stored<Scalar>(V::max(V::load(a.data()), V::load(b.data())));
  const Lanes<Scalar> ba = stored<Scalar>(V::max(V::load(b.data()), V::load(a.data())));
  EXPECT_TRUE(std::isnan(ab(0)));
  EXPECT_TRUE(std::isnan(ba(0)));
  EXPECT_TRUE(std::isnan(V::max_of(V::load(a.data()))));
  Lanes<Scalar> last = b;
  last(V::width - 1) = nan<Scalar>;
  EXPECT_TRUE(std::isnan(V::max_of(V::load(last.data()))));
}

TYPED_TEST(SimdTest, ExpAndTanhFollowTheStandardLibrary) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  for (const Scalar first : {Scalar(-30), Scalar(-3), Scalar(0), Scalar(2)}) {
    const Lanes<Scalar> x = lanes(first, Scalar(0.37));
    const Lanes<Scalar> e = stored<Scalar>(V::exp(V::load(x.data())));
    for (Index i = 0; i < V::width; ++i) {
      const long double expected = std::exp(static_cast<long double>(x(i)));
      EXPECT_NEAR(e(i), expected, 4 * std::numeric_limits<Scalar>::epsilon() * expected) << x(i);
    }
    if constexpr (V::has_tanh) {
      const Lanes<Scalar> t = stored<Scalar>(V::tanh(V::load(x.data())));
      for (Index i = 0; i < V::width; ++i) {
        EXPECT_NEAR(t(i), std::tanh(static_cast<long double>(x(i))),
                    8 * std::numeric_limits<Scalar>::epsilon())
            << x(i);
      }
    }
  }
}

// zero_where_equal(y, x, key): y, but 0 exactly where x == key (exp(-inf) as 0, not a denormal);
// nan_or(x, y): x where x is NaN, y elsewhere.
TYPED_TEST(SimdTest, SelectionsKeepTheRightLanes) {
  using Scalar = TypeParam;
  using V = kernels::Simd<Scalar>;
  Lanes<Scalar> x = lanes(Scalar(1), Scalar(1));
  const Lanes<Scalar> y = lanes(Scalar(10), Scalar(10));
  x(0) = -inf<Scalar>;
  x(V::width - 1) = nan<Scalar>;
  const auto vx = V::load(x.data()), vy = V::load(y.data());
  const Lanes<Scalar> zeroed =
      stored<Scalar>(V::zero_where_equal(vy, vx, V::broadcast(-inf<Scalar>)));
  const Lanes<Scalar> kept = stored<Scalar>(V::nan_or(vx, vy));
  for (Index i = 0; i < V::width; ++i) {
    EXPECT_EQ(zeroed(i), i == 0 ? Scalar(0) : y(i)) << i;
    if (i == V::width - 1) {
      EXPECT_TRUE(std::isnan(kept(i)));
    } else {
      EXPECT_EQ(kept(i), y(i)) << i;
    }
  }
}

TEST(SimdSupport, FloatAndDoubleOnly) {
  EXPECT_TRUE(kernels::supported<float>);
  EXPECT_TRUE(kernels::supported<double>);
  EXPECT_FALSE(kernels::supported<long double>);
  EXPECT_FALSE(kernels::Simd<long double>::vectorized);
  EXPECT_EQ(kernels::round_up(0, 8), 0);
  EXPECT_EQ(kernels::round_up(9, 8), 16);
  EXPECT_EQ(kernels::round_up(16, 8), 16);
}

}  // namespace
