#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <sstream>
#include <stdexcept>
#include <string>

namespace attention {

/// Thrown by every public entry point whose arguments have inconsistent or unusable dimensions. The
/// message names the function, the arguments and their sizes, e.g.
///   attention::scaled_dot_product_attention: k.cols() (= 32) must equal q.cols() (= 64)
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {

// Shapes come from run-time configuration (head counts, model widths, sequence lengths), so they
// are checked in every build, not with eigen_assert, which NDEBUG removes. The throwing helpers are
// cold and [[noreturn]], so the checks cost a compare and a branch in the callers.

[[noreturn]] inline void throw_shape_error(const char* func, const char* lhs,
                                           Eigen::Index lhs_value, const char* relation,
                                           const char* rhs, Eigen::Index rhs_value) {
  std::ostringstream message;
  message << "attention::" << func << ": " << lhs << " (= " << lhs_value << ") " << relation << ' '
          << rhs << " (= " << rhs_value << ')';
  throw ShapeError(message.str());
}

/// For a matrix whose shape as a whole is wrong, e.g.
///   attention::project: b (2 x 3) must be a row vector, 1 x w.cols() (= 1 x 3)
[[noreturn]] inline void throw_matrix_shape_error(const char* func, const char* name,
                                                  Eigen::Index rows, Eigen::Index cols,
                                                  const std::string& requirement) {
  std::ostringstream message;
  message << "attention::" << func << ": " << name << " (" << rows << " x " << cols << ") "
          << requirement;
  throw ShapeError(message.str());
}

/// Throws unless lhs_value == rhs_value.
inline void require_equal(const char* func, const char* lhs, Eigen::Index lhs_value,
                          const char* rhs, Eigen::Index rhs_value) {
  if (lhs_value != rhs_value) throw_shape_error(func, lhs, lhs_value, "must equal", rhs, rhs_value);
}

/// Throws unless value >= 1: sequences, feature widths and head counts are never empty.
inline void require_positive(const char* func, const char* what, Eigen::Index value) {
  if (value < 1) {
    std::ostringstream message;
    message << "attention::" << func << ": " << what << " (= " << value << ") must be at least 1";
    throw ShapeError(message.str());
  }
}

/// Throws unless `divisor` divides `dividend` exactly (e.g. num_heads must divide d_model).
inline void require_divides(const char* func, const char* divisor, Eigen::Index divisor_value,
                            const char* dividend, Eigen::Index dividend_value) {
  require_positive(func, divisor, divisor_value);
  if (dividend_value % divisor_value != 0)
    throw_shape_error(func, divisor, divisor_value, "must divide", dividend, dividend_value);
}

/// Throws std::out_of_range (as std::vector::at does) unless 0 <= index < bound, e.g.
///   attention::Rope::frequency: i (= 9) must be at least 0 and below rotary_dim() / 2 (= 4)
inline void require_index(const char* func, const char* what, Eigen::Index index,
                          const char* bound_name, Eigen::Index bound) {
  if (index < 0 || index >= bound) {
    std::ostringstream message;
    message << "attention::" << func << ": " << what << " (= " << index
            << ") must be at least 0 and below " << bound_name << " (= " << bound << ')';
    throw std::out_of_range(message.str());
  }
}

/// Thrown for a bad value that is not a shape (a NaN scale, say), as std::invalid_argument.
[[noreturn]] inline void throw_invalid_value(const char* func, const std::string& what) {
  throw std::invalid_argument(std::string("attention::") + func + ": " + what);
}

}  // namespace detail
}  // namespace attention
