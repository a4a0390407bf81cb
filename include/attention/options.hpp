#pragma once
// SPDX-License-Identifier: MIT

#include <cmath>
#include <optional>
#include <sstream>

#include <Eigen/Core>

#include "attention/errors.hpp"

namespace attention {

/// Settings shared by every attention call.
struct Options {
  /// Multiplies Q K^T before the mask and the softmax. Unset: 1 / sqrt(d_k) (Vaswani et al., 2017,
  /// eq. 1), which keeps the scores' variance near 1 for unit-variance q and k. Zero gives uniform
  /// weights over the visible keys and a negative scale reverses preferences; both are accepted.
  /// NaN or infinity (also a value too large for the scalar type, 1e39 for float) is rejected with
  /// std::invalid_argument.
  std::optional<double> scale;
};

namespace detail {

/// The scale actually used: options.scale, or 1 / sqrt(d_k). Computed in double and rounded once to
/// Scalar, so float and double agree on what "1 / sqrt(d_k)" means up to one rounding.
template <typename Scalar>
Scalar resolve_scale(const char* func, const Options& options, Eigen::Index d_k) {
  if (!options.scale) return static_cast<Scalar>(1.0L / std::sqrt(static_cast<long double>(d_k)));
  const double scale = *options.scale;
  // Checked after the conversion too: 1e39 is a finite double but an infinite float.
  if (!std::isfinite(scale) || !std::isfinite(static_cast<Scalar>(scale))) {
    std::ostringstream what;
    what << "options.scale (= " << scale << ") must be finite in the scalar type";
    throw_invalid_value(func, what.str());
  }
  return static_cast<Scalar>(scale);
}

}  // namespace detail
}  // namespace attention
