#pragma once
// SPDX-License-Identifier: MIT
//
// Helpers shared by the trust tests: bitwise comparison of matrices and NaN checks.

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

namespace trust {

/// True when a and b are the same number bit for bit, as far as values go: equal with the same sign
/// (so 0.0 and -0.0 differ), or both NaN (payloads are not compared). Compared by value rather than
/// with memcmp because a long double's storage holds padding bytes that carry no value.
template <typename Scalar>
bool same_bits(Scalar a, Scalar b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

/// Same shape and every entry same_bits(); on failure, the first entry that differs.
template <typename DerivedA, typename DerivedB>
::testing::AssertionResult identical(const Eigen::MatrixBase<DerivedA>& a,
                                     const Eigen::MatrixBase<DerivedB>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shapes differ: " << a.rows() << " x " << a.cols()
                                         << " and " << b.rows() << " x " << b.cols();
  }
  Eigen::Index differing = 0;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) differing += same_bits(a(i, j), b(i, j)) ? 0 : 1;
  }
  if (differing == 0) return ::testing::AssertionSuccess();
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      if (!same_bits(a(i, j), b(i, j))) {
        std::ostringstream os;
        os << std::setprecision(std::numeric_limits<long double>::max_digits10) << differing
           << " of " << a.size() << " entries differ; first at (" << i << ", " << j
           << "): " << static_cast<long double>(a(i, j)) << " vs "
           << static_cast<long double>(b(i, j));
        return ::testing::AssertionFailure() << os.str();
      }
    }
  }
  return ::testing::AssertionFailure();  // unreachable
}

/// Number of NaN entries in row i.
template <typename Derived>
Eigen::Index nan_count(const Eigen::MatrixBase<Derived>& m, Eigen::Index i) {
  Eigen::Index count = 0;
  for (Eigen::Index j = 0; j < m.cols(); ++j) count += std::isnan(m(i, j)) ? 1 : 0;
  return count;
}

/// True when every entry of row i is NaN.
template <typename Derived>
bool row_all_nan(const Eigen::MatrixBase<Derived>& m, Eigen::Index i) {
  return nan_count(m, i) == m.cols();
}

/// True when every entry of row i is finite.
template <typename Derived>
bool row_all_finite(const Eigen::MatrixBase<Derived>& m, Eigen::Index i) {
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    if (!std::isfinite(m(i, j))) return false;
  }
  return true;
}

}  // namespace trust
