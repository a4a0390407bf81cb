#pragma once
// SPDX-License-Identifier: MIT
//
// Comparing matrices in GoogleTest (after manif's gtest_eigen_utils.h and llm.c's maxdiff):
//   EXPECT_TRUE(support::is_near(actual, expected, tol));
// passes when both have the same shape and every entry satisfies |actual - expected| <= tol (an
// absolute tolerance; the tests keep their values of order 1). NaN matches only NaN and an infinity
// only the same infinity, so -inf where a score is masked is checked exactly. On failure the
// message prints both matrices in full precision and the largest difference with its position.

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

namespace support {

/// Absolute tolerance for comparing the library's result with the long-double reference, for inputs
/// of order 1 (support::random_matrix) and sizes up to a few dozen (d_k <= 64, d_model <= 32).
/// Measured worst errors, over 100 attention shapes (L, S in 1..33, d_k in 1..64, with and without
/// the causal mask) and 45 multi-head layers: see each specialisation. Each tolerance is 2 to 8
/// times the largest error seen, and far below any error a wrong formula, mask or index makes
/// (1e-3 and up).
template <typename Scalar>
constexpr long double tolerance();

/// float: eps = 1.2e-7. Worst errors measured: 1.1e-6 for a multi-head output (four chained
/// products of length up to 32), 6.0e-7 for attention (d_k = 64), 1.7e-7 for softmax and weights.
template <>
constexpr long double tolerance<float>() {
  return 2e-6L;
}

/// double: eps = 2.2e-16. Worst errors measured: 1.9e-15 multi-head, 1.3e-15 attention, 5e-16
/// weights.
template <>
constexpr long double tolerance<double>() {
  return 5e-15L;
}

/// long double (x87, 64-bit mantissa): eps = 1.1e-19. The reference works in the same type, so
/// this covers a different order of operations: worst error measured 1.3e-18 (multi-head).
template <>
constexpr long double tolerance<long double>() {
  return 1e-17L;
}

/// Error bound for a sum of n products of numbers of order 1 accumulated in `Scalar`: 4 n eps, a
/// few times the textbook n eps, for the kernels' reassociated sums.
template <typename Scalar>
long double product_tolerance(Eigen::Index n) {
  return 4.0L * static_cast<long double>(n) * std::numeric_limits<Scalar>::epsilon();
}

/// Infinity and a quiet NaN of `Scalar`, for the tests of special values.
template <typename Scalar>
inline constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
template <typename Scalar>
inline const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();

/// Success when a and b have the same shape and the same bits in every entry (memcmp: a NaN
/// equals the same NaN, and -0 differs from +0), for the promises "identical for any thread
/// count" and "each head as its own call".
template <typename Scalar, int Rows, int Cols, int Options, int MaxRows, int MaxCols>
::testing::AssertionResult bitwise_equal(
    const Eigen::Matrix<Scalar, Rows, Cols, Options, MaxRows, MaxCols>& a,
    const Eigen::Matrix<Scalar, Rows, Cols, Options, MaxRows, MaxCols>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.rows() << " x " << a.cols()
                                         << " and " << b.rows() << " x " << b.cols();
  }
  if (std::memcmp(a.data(), b.data(), sizeof(Scalar) * static_cast<std::size_t>(a.size())) != 0) {
    return ::testing::AssertionFailure() << "results differ in their bits";
  }
  return ::testing::AssertionSuccess();
}

namespace detail {

template <typename Derived>
void print_matrix(std::ostream& os, const Eigen::MatrixBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  os << std::setprecision(std::numeric_limits<Scalar>::max_digits10);
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    os << "  [";
    for (Eigen::Index j = 0; j < m.cols(); ++j) os << (j == 0 ? "" : ", ") << m(i, j);
    os << "]\n";
  }
}

/// |a - e| with the non-finite rules above: 0 when both are NaN or the same infinity, +inf when
/// only one of them is NaN or infinite.
inline long double difference(long double a, long double e) {
  constexpr long double inf = std::numeric_limits<long double>::infinity();
  if (std::isnan(a) || std::isnan(e)) return std::isnan(a) && std::isnan(e) ? 0.0L : inf;
  if (std::isinf(a) || std::isinf(e)) return a == e ? 0.0L : inf;
  return std::fabs(a - e);
}

template <typename DerivedA, typename DerivedE, typename Tolerance>
::testing::AssertionResult compare(const Eigen::MatrixBase<DerivedA>& actual,
                                   const Eigen::MatrixBase<DerivedE>& expected,
                                   const Tolerance& tol_at) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure()
           << "shapes differ: actual is " << actual.rows() << " x " << actual.cols()
           << ", expected " << expected.rows() << " x " << expected.cols();
  }
  // The worst entry is the one that exceeds its tolerance by the largest factor.
  long double worst_ratio = -1, worst = 0, worst_tol = 0;
  Eigen::Index worst_i = 0, worst_j = 0;
  for (Eigen::Index i = 0; i < actual.rows(); ++i) {
    for (Eigen::Index j = 0; j < actual.cols(); ++j) {
      const long double d = difference(static_cast<long double>(actual(i, j)),
                                       static_cast<long double>(expected(i, j)));
      const long double tol = tol_at(i, j);
      long double ratio = 0;  // d / tol, infinite when a difference meets a zero tolerance
      if (d > 0) ratio = tol > 0 ? d / tol : std::numeric_limits<long double>::infinity();
      if (ratio > worst_ratio) {
        worst_ratio = ratio;
        worst = d;
        worst_tol = tol;
        worst_i = i;
        worst_j = j;
      }
    }
  }
  if (worst_ratio <= 1) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << "largest difference " << std::setprecision(3) << static_cast<double>(worst) << " > tol "
     << static_cast<double>(worst_tol) << " at (" << worst_i << ", " << worst_j << "): actual "
     << std::setprecision(std::numeric_limits<long double>::max_digits10)
     << static_cast<long double>(actual(worst_i, worst_j)) << ", expected "
     << static_cast<long double>(expected(worst_i, worst_j)) << "\nactual (" << actual.rows()
     << " x " << actual.cols() << "):\n";
  print_matrix(os, actual);
  os << "expected:\n";
  print_matrix(os, expected);
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace detail

/// True when actual and expected have one shape and differ by at most tol in every entry.
template <typename DerivedA, typename DerivedE>
::testing::AssertionResult is_near(const Eigen::MatrixBase<DerivedA>& actual,
                                   const Eigen::MatrixBase<DerivedE>& expected, long double tol) {
  return detail::compare(actual, expected, [tol](Eigen::Index, Eigen::Index) { return tol; });
}

/// As is_near, with a tolerance per entry: |actual(i, j) - expected(i, j)| <= tol(i, j), for error
/// bounds derived entry by entry (e.g. from the rounding of printed inputs).
template <typename DerivedA, typename DerivedE, typename DerivedT>
::testing::AssertionResult is_near_entrywise(const Eigen::MatrixBase<DerivedA>& actual,
                                             const Eigen::MatrixBase<DerivedE>& expected,
                                             const Eigen::MatrixBase<DerivedT>& tol) {
  if (tol.rows() != expected.rows() || tol.cols() != expected.cols()) {
    return ::testing::AssertionFailure() << "tolerance matrix has the wrong shape";
  }
  return detail::compare(actual, expected, [&tol](Eigen::Index i, Eigen::Index j) {
    return static_cast<long double>(tol(i, j));
  });
}

/// Sum of each row, in long double (for "rows sum to 1" properties).
template <typename Derived>
Eigen::Matrix<long double, Eigen::Dynamic, 1> row_sums(const Eigen::MatrixBase<Derived>& m) {
  Eigen::Matrix<long double, Eigen::Dynamic, 1> sums(m.rows());
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    long double sum = 0;
    for (Eigen::Index j = 0; j < m.cols(); ++j) sum += static_cast<long double>(m(i, j));
    sums(i) = sum;
  }
  return sums;
}

/// Names typed tests by their scalar type ("float", "double", "long_double") instead of 0, 1, 2.
struct ScalarNames {
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, float>) return "float";
    if (std::is_same_v<T, double>) return "double";
    if (std::is_same_v<T, long double>) return "long_double";
    return "other";
  }
};

}  // namespace support
