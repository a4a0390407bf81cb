#pragma once
// SPDX-License-Identifier: MIT
//
// Checking a backward pass against central finite differences. A test writes the loss as a function
// of the parameters, e.g. for attention with a fixed random d_out
//   loss = sum(d_out ∘ scaled_dot_product_attention(q, k, v))   so that  dloss/dq =
//   backward(...).dq,
// and compares the analytic gradient with the numerical one, entry by entry:
//
//   const auto loss = [&] { return support::weighted_sum(d_out,
//   attention::scaled_dot_product_attention(q, k, v)); };
//   EXPECT_TRUE(support::gradient_matches(loss, q, grads.dq, support::gradient_bound<double>()));
//
// The loss is a nullary callable that reads the parameters by reference; the checker perturbs one
// entry of `param` at a time, in place, and restores it exactly. Any Eigen matrix or row vector
// with writable coefficients (a Matrix, a RowVector, a block of either) works as `param`.
//
// The numerical derivative is the fourth-order central difference (the five-point stencil):
//   f'(x) ≈ (f(x − 2h) − 8 f(x − h) + 8 f(x + h) − f(x + 2h)) / (12 h),
// whose truncation error is h⁴ f⁽⁵⁾(ξ) / 30, against rounding error of about 1.5 eps |f| / h. (The
// second-order stencil (f(x + h) − f(x − h)) / (2h), error h² f‴(ξ) / 6, is available too.)
// The error reported is relative to the gradient's size:
//   error = max_ij |analytic_ij − numeric_ij| / max(1, max_ij |numeric_ij|),
// so an O(1) gradient is checked to a relative accuracy and a tiny one to an absolute one. A wrong
// formula, a missing scale or a transposed index gives an error of order 1; the bounds below are
// about a hundred times the largest errors measured on the suite's cases (inputs of order 1, sizes
// up to a few dozen), and still catch a single entry that is off by a relative 1e-6.
//
// An entry of `param` that is not finite (a -inf bias hiding a key) cannot be perturbed: its
// numerical derivative is taken as 0, the exact derivative of a masked score, so the analytic
// gradient must be (near) 0 there.

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

namespace support {

/// Step h of the finite differences and the bound on the relative error, per scalar type. The loss
/// is evaluated in that type, so its rounding error eps |f| decides the best h.
template <typename Scalar>
struct GradientCheckDefaults;

/// double, eps = 2.2e-16: with h = 1e-3 the five-point stencil's truncation (~h⁴ = 1e-12) and
/// rounding (~eps / h = 2e-13) errors balance. Errors measured: 1e-12 typically; at most 3e-11 for
/// attention with scale 3 (a nearly one-hot softmax) and 1e-10 for multi-head attention.
template <>
struct GradientCheckDefaults<double> {
  static constexpr long double step = 1e-3L;
  static constexpr long double bound = 1e-8L;
};

/// long double (x87, eps = 1.1e-19): h = 2e-4 balances h⁴ = 1.6e-15 against eps / h = 5e-16.
/// Errors measured: 5e-15 typically, 2e-13 at most (multi-head attention).
template <>
struct GradientCheckDefaults<long double> {
  static constexpr long double step = 2e-4L;
  static constexpr long double bound = 1e-11L;
};

/// The default relative error bound for gradients computed in Scalar.
template <typename Scalar>
constexpr long double gradient_bound() {
  return GradientCheckDefaults<Scalar>::bound;
}

enum class Stencil {
  three_point,  ///< (f(x + h) − f(x − h)) / (2h), error O(h²)
  five_point,  ///< (f(x − 2h) − 8 f(x − h) + 8 f(x + h) − f(x + 2h)) / (12h), error O(h⁴)
};

/// sum_ij a(i, j) b(i, j), accumulated in long double: the loss whose gradient with respect to b is
/// a, used to turn a matrix-valued function into a scalar one with a fixed random "upstream" a.
template <typename DerivedA, typename DerivedB>
long double weighted_sum(const Eigen::MatrixBase<DerivedA>& a,
                         const Eigen::MatrixBase<DerivedB>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    ADD_FAILURE() << "support::weighted_sum: shapes differ (" << a.rows() << " x " << a.cols()
                  << " and " << b.rows() << " x " << b.cols() << ")";
    return std::numeric_limits<long double>::quiet_NaN();
  }
  long double sum = 0;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      sum += static_cast<long double>(a(i, j)) * static_cast<long double>(b(i, j));
    }
  }
  return sum;
}

/// The numerical gradient of loss() with respect to every entry of `param`, in long double. `param`
/// is perturbed in place and restored exactly; h is in units of the entry (absolute).
template <typename Loss, typename Derived>
Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> numerical_gradient(
    Loss&& loss, Eigen::MatrixBase<Derived>& param, long double h,
    Stencil stencil = Stencil::five_point) {
  using Scalar = typename Derived::Scalar;
  const auto at = [&](Eigen::Index i, Eigen::Index j, Scalar x, long double offset) {
    param(i, j) = static_cast<Scalar>(static_cast<long double>(x) + offset);
    return static_cast<long double>(loss());
  };
  Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> gradient(param.rows(), param.cols());
  for (Eigen::Index i = 0; i < param.rows(); ++i) {
    for (Eigen::Index j = 0; j < param.cols(); ++j) {
      const Scalar x = param(i, j);
      if (!std::isfinite(static_cast<long double>(x))) {
        gradient(i, j) = 0;
        continue;
      }
      // The step actually taken, (x + h) - x in Scalar, can differ from h by a rounding; dividing
      // by it (rather than by h) removes that error (Press et al., Numerical Recipes, 5.7).
      const long double step =
          static_cast<long double>(static_cast<Scalar>(static_cast<long double>(x) + h)) -
          static_cast<long double>(x);
      if (stencil == Stencil::three_point) {
        const long double plus = at(i, j, x, step), minus = at(i, j, x, -step);
        gradient(i, j) = (plus - minus) / (2 * step);
      } else {
        const long double plus2 = at(i, j, x, 2 * step), plus = at(i, j, x, step);
        const long double minus = at(i, j, x, -step), minus2 = at(i, j, x, -2 * step);
        gradient(i, j) = (minus2 - 8 * minus + 8 * plus - plus2) / (12 * step);
      }
      param(i, j) = x;
    }
  }
  return gradient;
}

/// How far an analytic gradient is from a numerical one (see the top of this header).
struct GradientError {
  long double relative = 0;       ///< max |analytic − numeric| / max(1, max |numeric|)
  long double absolute = 0;       ///< max |analytic − numeric|
  long double scale = 0;          ///< max |numeric|
  Eigen::Index row = 0, col = 0;  ///< where the largest difference is
};

template <typename DerivedA, typename DerivedN>
GradientError gradient_error(const Eigen::MatrixBase<DerivedA>& analytic,
                             const Eigen::MatrixBase<DerivedN>& numeric) {
  GradientError e;
  for (Eigen::Index i = 0; i < numeric.rows(); ++i) {
    for (Eigen::Index j = 0; j < numeric.cols(); ++j) {
      const long double n = static_cast<long double>(numeric(i, j));
      const long double a = static_cast<long double>(analytic(i, j));
      e.scale = std::max(e.scale, std::fabs(n));
      // A NaN in the analytic gradient must fail: !(d <= worst) catches it.
      const long double d =
          std::isnan(a) ? std::numeric_limits<long double>::infinity() : std::fabs(a - n);
      if (d > e.absolute) {
        e.absolute = d;
        e.row = i;
        e.col = j;
      }
    }
  }
  e.relative = e.absolute / std::max(1.0L, e.scale);
  return e;
}

/// Records the largest relative error seen in the running test as the test property
/// "max_relative_gradient_error" (in --gtest_output=xml / json reports and in ctest's log).
inline void record_gradient_error(long double relative) {
  static const ::testing::TestInfo* test = nullptr;
  static long double largest = 0;
  const ::testing::TestInfo* current = ::testing::UnitTest::GetInstance()->current_test_info();
  if (current == nullptr) return;
  if (current != test) {
    test = current;
    largest = 0;
  }
  if (!(relative <= largest)) {
    largest = relative;
    std::ostringstream value;
    value << std::setprecision(3) << static_cast<double>(largest);
    ::testing::Test::RecordProperty("max_relative_gradient_error", value.str());
  }
}

/// Passes when `analytic` has param's shape and is within `bound` (relative error, see above) of
/// the numerical gradient of loss() with respect to param. On failure prints both gradients.
/// `largest_error`, if given, receives the error found, so a test can report it.
template <typename Loss, typename Derived, typename DerivedA>
::testing::AssertionResult gradient_matches(Loss&& loss, Eigen::MatrixBase<Derived>& param,
                                            const Eigen::MatrixBase<DerivedA>& analytic,
                                            long double bound,
                                            GradientError* largest_error = nullptr,
                                            Stencil stencil = Stencil::five_point) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "support::gradient_matches: real scalars only");
  if (analytic.rows() != param.rows() || analytic.cols() != param.cols()) {
    return ::testing::AssertionFailure()
           << "gradient shape " << analytic.rows() << " x " << analytic.cols()
           << " differs from the parameter's " << param.rows() << " x " << param.cols();
  }
  const long double h = GradientCheckDefaults<Scalar>::step;
  const auto numeric = numerical_gradient(loss, param, h, stencil);
  const GradientError e = gradient_error(analytic, numeric);
  if (largest_error != nullptr) *largest_error = e;
  record_gradient_error(e.relative);
  if (e.relative <= bound) return ::testing::AssertionSuccess() << "relative error " << e.relative;
  std::ostringstream os;
  os << "relative gradient error " << std::setprecision(3) << static_cast<double>(e.relative)
     << " > bound " << static_cast<double>(bound) << " (absolute "
     << static_cast<double>(e.absolute) << ", gradient scale " << static_cast<double>(e.scale)
     << ") at (" << e.row << ", " << e.col << ")" << std::setprecision(12) << "\nanalytic:\n";
  for (Eigen::Index i = 0; i < analytic.rows(); ++i) {
    os << "  [";
    for (Eigen::Index j = 0; j < analytic.cols(); ++j) {
      os << (j == 0 ? "" : ", ") << static_cast<long double>(analytic(i, j));
    }
    os << "]\n";
  }
  os << "numerical:\n";
  for (Eigen::Index i = 0; i < numeric.rows(); ++i) {
    os << "  [";
    for (Eigen::Index j = 0; j < numeric.cols(); ++j) os << (j == 0 ? "" : ", ") << numeric(i, j);
    os << "]\n";
  }
  return ::testing::AssertionFailure() << os.str();
}

/// The same for an rvalue parameter view, such as `w.middleCols(...)` or a block.
template <typename Loss, typename Derived, typename DerivedA>
::testing::AssertionResult gradient_matches(Loss&& loss, Eigen::MatrixBase<Derived>&& param,
                                            const Eigen::MatrixBase<DerivedA>& analytic,
                                            long double bound,
                                            GradientError* largest_error = nullptr,
                                            Stencil stencil = Stencil::five_point) {
  return gradient_matches(loss, param, analytic, bound, largest_error, stencil);
}

}  // namespace support
