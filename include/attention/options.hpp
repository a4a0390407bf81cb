#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>

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

  /// Logit soft-capping, as in Gemma 2 (Gemma Team, 2024, "Gemma 2: Improving Open Language Models
  /// at a Practical Size", sec. 2; attn_logit_softcapping = 50 there): each scaled score s becomes
  ///   s' = softcap * tanh(s / softcap)
  /// before the mask or bias is applied, so every score lies in (-softcap, softcap) and a few huge
  /// logits cannot saturate the softmax. Unset: no capping. Must be positive and finite (and at
  /// least the smallest normal number of the scalar type); otherwise std::invalid_argument. The
  /// backward passes differentiate it: ds = ds' * (1 - tanh^2(s / softcap)).
  /// (The default member initializer keeps `Options{scale}` free of -Wmissing-field-initializers.)
  std::optional<double> softcap{};
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

/// The soft-cap actually used: options.softcap rounded to Scalar, or 0 for none.
template <typename Scalar>
Scalar resolve_softcap(const char* func, const Options& options) {
  if (!options.softcap) return Scalar(0);
  const double cap = *options.softcap;
  // A cap below the smallest normal number would make 1 / cap overflow.
  if (!std::isfinite(cap) || !(cap > 0.0) || !std::isfinite(static_cast<Scalar>(cap)) ||
      !(static_cast<Scalar>(cap) >= std::numeric_limits<Scalar>::min())) {
    std::ostringstream what;
    what << "options.softcap (= " << cap << ") must be positive and finite in the scalar type";
    throw_invalid_value(func, what.str());
  }
  return static_cast<Scalar>(cap);
}

}  // namespace detail
}  // namespace attention
